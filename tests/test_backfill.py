"""Back-fill: when the bot missed events, reading the channel's history fills the timeline so that the postmortem is
the same as with live capture — paced, page by page, and a 429 only delays it."""

from __future__ import annotations

import itertools
import time

from bot.incidents.timeline import message_entry_id
from bot.slack.local import http_error
from bot.writeup.backfill import backfill_incident
from bot.writeup.postmortem.assemble import gather_facts, render_markdown
from tests.servers import Reply, local_http_server
from tests.test_postmortem import probe, run_scripted_incident
from tests.writeup_harness import declare, deliver, react, say, writeup_bot

MESSAGE_KINDS = ("message", "reply", "reaction", "pin")


async def forget_what_slack_told_us(bot, incident_id: str) -> int:
    """As if every message, reaction and pin event had been missed (the bot's own entries stay: it wrote them)."""
    entries = await bot.ctx.timeline.entries(incident_id)
    return await bot.ctx.timeline.forget(incident_id, [e.id for e in entries if e.kind in MESSAGE_KINDS])


async def markdown_of(bot, incident_id: str, now: float) -> str:
    return render_markdown(await gather_facts(bot.rt, incident_id, now=now))


async def test_backfill_after_missed_events_gives_the_same_postmortem_as_live_capture(
        local_slack, redis_url, tmp_path, monkeypatch, pd):
    with local_http_server({"/pay": Reply(500)}) as server:
        async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, pagerduty=pd,
                               services={"api": {"http": [probe(server.url("/pay"))]}}) as bot:
            await run_scripted_incident(bot)
            incident = await bot.incident("INC-1")
            live = await markdown_of(bot, "INC-1", incident.resolved_at)
            assert "**Key event**" in live and "alert on pool saturation" in live

            assert await forget_what_slack_told_us(bot, "INC-1") > 5
            gap = await markdown_of(bot, "INC-1", incident.resolved_at)
            assert "**Key event**" not in gap  # the missed events really are missing

            report = await backfill_incident(bot.rt, "INC-1")
            assert report.complete and report.added == 5 and report.threads == 3  # ours, the declaration's diagnosis, monitoring's re-check
            assert await markdown_of(bot, "INC-1", incident.resolved_at) == live

            again = await backfill_incident(bot.rt, "INC-1")  # idempotent: nothing new the second time
            assert (again.added, again.updated, again.removed) == (0, 0, 0)


async def test_edits_reactions_pins_and_deletions_missed_while_away_are_merged(
        local_slack, redis_url, tmp_path, monkeypatch):
    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch) as bot:
        incident = await declare(bot, "Queue stuck P3")
        channel = incident.channel
        ts = await say(bot, channel, "U2", "consumers at 0")
        gone = await say(bot, channel, "U2", "restarting everything")
        todo = await say(bot, channel, "U1", "we need a lag alert")
        missed = await say(bot, channel, "U1", "TODO: <@U2> document the restart", deliver_event=False)
        # What happened while the bot was away: an edit, a 📌, a pin, an action reaction, a deletion.
        ws = local_slack._ws
        with ws.lock:
            message = ws.lookup(channel, ts)
            message.text, message.edited, message.edited_ts = "consumers at 0 since 09:10", True, ws.clock.next()
            ws.lookup(channel, gone).deleted = True
        await react(bot, channel, ts, "U1", "pushpin", deliver_event=False)
        await react(bot, channel, todo, "U1", "ballot_box_with_check", deliver_event=False)

        report = await backfill_incident(bot.rt, incident.id)
        assert (report.added, report.updated, report.removed) == (1, 2, 1)
        tl = bot.ctx.timeline
        first = await tl.get(incident.id, message_entry_id(channel, ts))
        assert first.text == "consumers at 0 since 09:10" and first.edited and first.key_event
        assert first.data["original"] == "consumers at 0"
        assert (await tl.get(incident.id, message_entry_id(channel, gone))).removed
        assert (await tl.get(incident.id, message_entry_id(channel, todo))).data["action"]["source"] == "reaction"
        assert (await tl.get(incident.id, message_entry_id(channel, missed))).data["action"]["owner"] == "U2"


async def test_a_429_during_backfill_delays_it_and_loses_nothing(local_slack, redis_url, tmp_path, monkeypatch):
    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, BACKFILL_PAGE_SIZE="10") as bot:
        incident = await declare(bot, "Disk full P3")
        channel = incident.channel
        parent = await say(bot, channel, "U2", "disk at 100%", deliver_event=False)
        for i in range(12):
            await say(bot, channel, "U1", f"reply {i}", thread_ts=parent, deliver_event=False)
        for i in range(25):
            await say(bot, channel, "U2", f"line {i}", deliver_event=False)
        # Three 429s in a row outlast slack_sdk's own two retries: the back-fill waits out Retry-After itself.
        local_slack.script("conversations.history", *[http_error(429, retry_after=1)] * 3)
        local_slack.script("conversations.replies", http_error(429, retry_after=1))
        started = time.monotonic()
        report = await backfill_incident(bot.rt, incident.id)
        elapsed = time.monotonic() - started

        assert report.complete and report.rate_limited == 1
        assert elapsed >= 3.0  # 1 s per 429 as Slack asked
        messages = [e for e in await bot.timeline(incident.id) if e.kind in ("message", "reply")]
        assert len(messages) == 38 == report.added
        assert sorted(e.text for e in messages if e.kind == "reply") == sorted(f"reply {i}" for i in range(12))
        statuses = [c.status for c in local_slack.calls_to("conversations.history")]
        assert statuses.count(429) == 3 and statuses.count(200) == 3  # 26 parents in pages of 10


async def test_page_size_and_pace_follow_the_settings(local_slack, redis_url, tmp_path, monkeypatch):
    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, BACKFILL_PAGE_SIZE="15",
                           BACKFILL_CALLS_PER_MIN="120") as bot:  # one call every 0.5 s
        incident = await declare(bot, "Cron late P3")
        for i in range(40):
            await say(bot, incident.channel, "U2", f"m{i}", deliver_event=False)
        report = await backfill_incident(bot.rt, incident.id)
        calls = local_slack.calls_to("conversations.history")
        assert [c.params["limit"] for c in calls] == ["15", "15", "15"]
        gaps = [b.at - a.at for a, b in itertools.pairwise(calls)]
        assert all(gap >= 0.45 for gap in gaps), gaps
        assert report.calls == 3 and report.added == 40 and report.waited_s >= 0.9


async def test_the_bot_joining_late_reads_what_it_missed(local_slack, redis_url, tmp_path, monkeypatch):
    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch) as bot:
        incident = await declare(bot, "VPN down P3")
        earlier = [await say(bot, incident.channel, "U2", f"before the bot saw it {i}", deliver_event=False)
                   for i in range(3)]
        await deliver(bot, {"type": "member_joined_channel", "user": "UBOT", "channel": incident.channel,
                            "event_ts": f"{time.time():.6f}"})
        await bot.settle()
        recorded = {e.ts for e in await bot.timeline(incident.id) if e.kind == "message"}
        assert set(earlier) <= recorded


async def test_backfill_on_resolve_republishes_when_it_found_gaps(local_slack, redis_url, tmp_path, monkeypatch):
    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, BACKFILL_ON_RESOLVE="true") as bot:
        incident = await declare(bot, "Billing export failed P3")
        ts = await say(bot, incident.channel, "U2", "the export job OOMed at 02:00")
        await react(bot, incident.channel, ts, "U1", "pushpin", deliver_event=False)  # missed
        await bot.command("/incident", "resolve raised the memory limit", user="U1", channel=incident.channel)
        await bot.settle()
        [canvas] = local_slack.canvases()
        assert "the export job OOMed at 02:00" in canvas["markdown"]  # the back-fill found the 📌 and re-published
        assert len(local_slack.calls_to("canvases.edit")) == 1
