"""The page first: a declaration's page is decided with the incident record and queued right after it, in the
queue's urgent lane, which workers take before the declaration's Slack set-up, so it reaches the provider while
Slack is still creating the channel (here conversations.create is rate-limited for 2 s); the channel, header and
pin still follow, in that order."""

from __future__ import annotations

from bot.slack.local.model import Scripted, http_error
from tests.incident_harness import incident_bot


async def test_the_page_is_queued_with_the_record_ahead_of_the_set_up(local_slack, redis_url, tmp_path, pd) -> None:
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, workers=0) as bot:
        await bot.command("/incident", "Payments down P1")
        recorded = await bot.incident("INC-1")
        assert [o.dedup_key for o in recorded.paging.orders] == ["INC-1:P1:L1"]
        await bot.rt.queue.ensure_group()
        queue = bot.rt.queue
        lanes = {stream: [fields["j"] for _, fields in await queue.read("peek", 10, None, stream=stream)]
                 for stream in queue.streams}
        assert lanes == {queue.urgent_key: ["page:INC-1:P1:L1"], queue.stream_key: ["declare:INC-1"]}, lanes


async def test_the_page_reaches_the_provider_before_the_channel_exists(local_slack, redis_url, tmp_path, pd) -> None:
    local_slack.script("conversations.create", http_error(429, retry_after=2))
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd) as bot:
        await bot.command("/incident", "Checkout down P1")
        await bot.wait_for(lambda: bot.pd_triggers("INC-1:P1:L1"), 1.5, "the page, before the channel exists")
        assert (await bot.incident("INC-1")).channel is None
        assert "links" not in pd.alert("INC-1:P1:L1").body  # it did not wait for the channel's link

        incident = await bot.wait_incident("INC-1", lambda i: i.ready, 15)
        header = next(m for m in local_slack.messages(incident.channel) if m.ts == incident.header_ts)
        assert header.pinned and incident.link
        created = [c for c in local_slack.calls_to("conversations.create") if c.status == 200]
        posted = [c for c in local_slack.calls_to("chat.postMessage") if c.params.get("channel") == incident.channel]
        order = local_slack.calls.index
        assert order(created[-1]) < order(posted[0]) < order(local_slack.calls_to("pins.add")[-1])
        assert len(bot.pd_triggers("INC-1:P1:L1")) == 1


async def test_a_notice_queued_before_the_channel_waits_for_it_however_long(local_slack, redis_url, tmp_path, pd,
                                                                            monkeypatch) -> None:
    """In a storm the channel waits minutes for conversations.create's turn. A notice queued meanwhile (an
    escalation's, a failed page's) used to retry on a schedule of ~15 s and end in the dead letters; it waits
    parked for the channel instead (the schedule is shortened here, so the channel's 2 s outlasts it)."""
    from bot.incidents import lifecycle
    from bot.incidents.service import Incidents
    from bot.retry import RetryPolicy

    monkeypatch.setattr(lifecycle, "INVITE_WAIT_S", 0.01)
    monkeypatch.setattr(lifecycle, "CHANNEL_POLL", RetryPolicy(base_s=0.1, max_s=0.2))
    local_slack.script("conversations.create", http_error(429, retry_after=2))
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd) as bot:
        await bot.command("/incident", "Checkout down P1")
        await bot.rt.feature(Incidents).say("INC-1", "note", "Escalated to level 2: nobody acknowledged")
        incident = await bot.wait_incident("INC-1", lambda i: i.ready, 15)
        await bot.wait_for(lambda: [m for m in local_slack.messages(incident.channel) if "level 2" in m.text], 5,
                           "the notice in the channel")

        assert await bot.rt.queue.dead_letters() == []
        assert len([m for m in local_slack.messages(incident.channel) if "level 2" in m.text]) == 1


async def test_notices_stop_waiting_when_the_declaration_gives_up_without_a_place(local_slack, redis_url, tmp_path,
                                                                                  pd, monkeypatch) -> None:
    """An alert's incident whose channel Slack refuses for good, with no INCIDENTS_CHANNEL to fall back to: its
    notices go the retries' way to the dead letters, not parked for an hour beside everyone's work."""
    from bot.incidents import lifecycle
    from bot.incidents.service import Incidents

    monkeypatch.setattr(lifecycle, "INVITE_WAIT_S", 0.01)
    local_slack.script("conversations.create", Scripted(status=200, body={"ok": False, "error": "restricted_action"}))
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd) as bot:
        ctx = bot.rt.feature(Incidents)
        incident, _created = await lifecycle.declare(ctx, title="Disk full", severity="P3", reporter="alertmanager",
                                                     origin_channel="", source="alertmanager")
        await ctx.say(incident.id, "note", "Alert still firing")

        async def both_dead() -> bool:
            kinds = sorted(d["kind"] for d in await bot.rt.queue.dead_letters())
            return kinds == ["incident.declare", "incident.post"]

        await bot.wait_for(both_dead, 15, "the declaration and the notice in the dead letters")
        assert (await bot.incident(incident.id)).place_note

        # the auditor's later try, once Slack allows the channel: the note that no place exists goes with it
        await bot.rt.queue.enqueue("incident.declare", {"incident": incident.id}, job_id=f"declare:{incident.id}")
        ready = await bot.wait_incident(incident.id, lambda i: i.ready, 15)
        assert ready.channel and ready.place_note is None
        assert not [m for m in local_slack.messages(ready.channel) if "INCIDENTS_CHANNEL" in m.text]
