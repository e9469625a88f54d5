"""The timeline records what happens in an incident channel as it happens: messages, replies, edits, deletions,
reactions, pins, joins — once each, whatever Slack retries — and marks key events and action items."""

from __future__ import annotations

import asyncio
import uuid

from msgspec.structs import replace

from bot.incidents.timeline import Entry, Timeline, message_entry_id
from tests.writeup_harness import (
    declare,
    delete,
    deliver,
    edit,
    pin,
    react,
    say,
    writeup_bot,
)


def ns() -> str:
    return f"ttl{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------------------------------ the store

async def test_record_is_idempotent_and_entries_come_back_in_time_order(redis):
    timeline = Timeline(redis, ns())
    await timeline.record("INC-1", "note", entry_id="note:b", at=20.0, actor="U1", text="second")
    first = await timeline.record("INC-1", "note", entry_id="note:a", at=10.0, actor="U1", text="first")
    again = await timeline.record("INC-1", "note", entry_id="note:a", at=99.0, actor="U2", text="a retry")
    assert again == first  # the original is kept
    assert [e.text for e in await timeline.entries("INC-1")] == ["first", "second"]
    assert [e.id for e in await timeline.entries_since("INC-1", 10.0)] == ["note:b"]
    assert await timeline.count("INC-1") == 2


async def test_concurrent_changes_to_one_entry_are_all_kept(redis):
    timeline = Timeline(redis, ns())
    await timeline.record("INC-1", "message", entry_id="msg:C1:1.0", at=1.0, data={"seen": []})

    def adder(user: str):
        def add(entry: Entry) -> Entry:
            entry.data["seen"] = [*entry.data["seen"], user]
            return entry
        return add

    await asyncio.gather(*(timeline.transform("INC-1", "msg:C1:1.0", adder(f"U{i}")) for i in range(25)))
    entry = await timeline.get("INC-1", "msg:C1:1.0")
    assert sorted(entry.data["seen"]) == sorted(f"U{i}" for i in range(25))


async def test_upsert_merges_and_reports_what_happened(redis):
    timeline = Timeline(redis, ns())
    entry = Entry(id="msg:C1:5.0", incident_id="INC-1", at=5.0, kind="message", text="v1", ts="5.0", channel="C1")
    assert (await timeline.upsert(entry, lambda old, new: None))[1] == "added"
    assert (await timeline.upsert(entry, lambda old, new: None))[1] == "unchanged"
    newer = replace(entry, text="v2")
    stored, outcome = await timeline.upsert(newer, lambda old, new: replace(old, text=new.text))
    assert outcome == "updated" and stored.text == "v2"


async def test_observers_see_each_new_entry_once(redis):
    seen: list[str] = []

    async def observer(entry: Entry) -> None:
        seen.append(entry.id)

    async def broken(entry: Entry) -> None:
        raise RuntimeError("an observer's bug must not break the recorder")

    timeline = Timeline(redis, ns(), observers=[broken, observer])
    for _ in range(3):
        await timeline.record("INC-1", "resolved", entry_id="resolved", text="fixed")
    assert seen == ["resolved"]


async def test_thread_replies_are_indexed_by_thread(redis):
    timeline = Timeline(redis, ns())
    for ts, thread in (("1.0", None), ("2.0", "1.0"), ("3.0", None), ("4.0", "1.0")):
        await timeline.record("INC-1", "reply" if thread else "message", entry_id=message_entry_id("C1", ts),
                              at=float(ts), ts=ts, thread_ts=thread, channel="C1")
    assert [e.ts for e in await timeline.thread("INC-1", "1.0")] == ["1.0", "2.0", "4.0"]


# ------------------------------------------------------------------------------------------------ live capture

async def test_channel_activity_lands_in_the_timeline_once_with_key_events_and_action_items(
        local_slack, redis_url, tmp_path, monkeypatch):
    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch) as bot:
        incident = await declare(bot, "Checkout errors P2")
        channel = incident.channel
        first = await say(bot, channel, "U2", "seeing 500s on /pay since 14:02")
        event = bot.local.message_event(channel, first)
        await deliver(bot, event, event_id="EvRETRY1")
        await deliver(bot, event, event_id="EvRETRY1")  # Slack's retry of the same delivery
        reply = await say(bot, channel, "U1", "is the db ok?", thread_ts=first)
        todo = await say(bot, channel, "U1", "TODO: <@U2> add an alert on pool saturation")
        action = await say(bot, channel, "U2", "action: write the runbook step for failover")
        flagged = await say(bot, channel, "U2", "we should check the pool size")
        await react(bot, channel, first, "U1", "pushpin")
        await pin(bot, channel, reply, "U1")
        await react(bot, channel, flagged, "U1", "ballot_box_with_check")
        await react(bot, channel, action, "U1", "white_check_mark")
        await edit(bot, channel, first, "seeing 500s on /pay since 14:01")
        typo = await say(bot, channel, "U1", "wrong channel, sorry")
        await delete(bot, channel, typo)
        await deliver(bot, {"type": "member_joined_channel", "user": "UONCALL", "channel": channel,
                            "event_ts": "1700000000.000100"})

        entries = {e.id: e for e in await bot.timeline(incident.id)}
        messages = [e for e in entries.values() if e.kind in ("message", "reply")]
        assert len(messages) == 6  # the retry did not add a second entry
        first_entry = entries[message_entry_id(channel, first)]
        assert first_entry.text == "seeing 500s on /pay since 14:01" and first_entry.edited
        assert first_entry.data["original"] == "seeing 500s on /pay since 14:02"
        assert first_entry.key_event  # 📌
        reply_entry = entries[message_entry_id(channel, reply)]
        assert reply_entry.kind == "reply" and reply_entry.thread_ts == first and reply_entry.key_event  # pinned
        assert entries[message_entry_id(channel, typo)].removed
        assert entries[message_entry_id(channel, todo)].data["action"]["owner"] == "U2"  # the mentioned user
        assert entries[message_entry_id(channel, action)].data["action"] == {
            "text": "write the runbook step for failover", "owner": "U2", "source": "prefix", "done": True}
        assert entries[message_entry_id(channel, flagged)].data["action"]["source"] == "reaction"
        assert f"reaction:{channel}:{first}:pushpin:U1" in entries and f"pin:{channel}:{reply}" in entries
        assert entries[f"joined:{channel}:UONCALL"].kind == "member_joined"
        times = [e.at for e in await bot.timeline(incident.id)]
        assert times == sorted(times)


async def test_removing_the_reaction_or_pin_unmarks_the_key_event(local_slack, redis_url, tmp_path, monkeypatch):
    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, KEY_EVENT_REACTION="fire") as bot:
        incident = await declare(bot, "declare Latency P3")  # one word alone is previewed, not declared
        ts = await say(bot, incident.channel, "U2", "p99 at 4s")
        await react(bot, incident.channel, ts, "U1", "pushpin")  # not the configured reaction any more
        assert not (await bot.ctx.timeline.get(incident.id, message_entry_id(incident.channel, ts))).key_event
        await react(bot, incident.channel, ts, "U1", "fire")
        assert (await bot.ctx.timeline.get(incident.id, message_entry_id(incident.channel, ts))).key_event
        await deliver(bot, {"type": "reaction_removed", "user": "U1", "reaction": "fire",
                            "item": {"type": "message", "channel": incident.channel, "ts": ts}})
        entry = await bot.ctx.timeline.get(incident.id, message_entry_id(incident.channel, ts))
        assert not entry.key_event and "fire" not in entry.data["reactions"]
        assert (await bot.ctx.timeline.get(incident.id, f"reaction:{incident.channel}:{ts}:fire:U1")).removed


async def test_messages_outside_incident_channels_and_the_bots_own_posts_are_not_recorded(
        local_slack, redis_url, tmp_path, monkeypatch):
    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch) as bot:
        incident = await declare(bot, "Search down P3")
        await say(bot, "C1", "U1", "unrelated chatter in #general")
        await deliver(bot, {"type": "message", "channel": incident.channel, "user": "UBOT", "bot_id": "B0LOCAL0001",
                            "text": "a bot line", "ts": "1900000000.000001"})
        assert [e for e in await bot.timeline(incident.id) if e.kind in ("message", "reply")] == []


async def test_thread_mode_incidents_record_their_thread_only(local_slack, redis_url, tmp_path, monkeypatch):
    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch,
                           incident={"incident_create_channels": False}) as bot:
        incident = await declare(bot, "Queue backlog P3", channel="C1")
        assert incident.mode == "thread"
        inside = await say(bot, "C1", "U2", "consumer lag 40k", thread_ts=incident.thread_ts)
        await say(bot, "C1", "U2", "lunch?")  # the same channel, not the incident's thread
        await react(bot, "C1", inside, "U1", "pushpin")
        recorded = [e for e in await bot.timeline(incident.id) if e.kind in ("message", "reply")]
        assert [e.ts for e in recorded] == [inside] and recorded[0].key_event


async def test_events_arriving_out_of_order_end_in_the_same_state(local_slack, redis_url, tmp_path, monkeypatch):
    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch) as bot:
        incident = await declare(bot, "Out of order P3")
        channel = incident.channel
        ts = await say(bot, channel, "U2", "primary failed over", deliver_event=False)
        await react(bot, channel, ts, "U1", "pushpin")  # the reaction's event overtakes the message's
        edited = await say(bot, channel, "U2", "TODO: check replicas", deliver_event=False)
        await edit(bot, channel, edited, "TODO: check replicas and backups")  # the edit before the message
        await deliver(bot, local_slack.message_event(channel, ts))
        await deliver(bot, local_slack.message_event(channel, edited))

        first = await bot.ctx.timeline.get(incident.id, message_entry_id(channel, ts))
        assert first.key_event and first.data["reactions"] == {"pushpin": ["U1"]}
        second = await bot.ctx.timeline.get(incident.id, message_entry_id(channel, edited))
        assert second.text == "TODO: check replicas and backups" and second.edited
        assert second.data["action"]["text"] == "check replicas and backups"
