"""The incident bot (tests/incident_harness.py) with the write-up features, and people acting in Slack.

A person's action is two things, as in Slack: the workspace changes (LocalSlack's state, which a back-fill reads
later) and an Events API delivery reaches the app (signed, through the real ASGI app) — unless the test says the
bot missed it (`deliver=False`).

    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, SUMMARY_THRESHOLD="5") as bot:
        incident = await declare(bot, "Checkout errors P2 api")
        ts = await say(bot, incident.channel, "U2", "seeing 500s on /pay")
        await react(bot, incident.channel, ts, "U1", "pushpin")
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bot.slack.local.payloads import event_body
from bot.writeup.install import install
from tests.incident_harness import IncidentBot, declare_incident, incident_bot

# Quick by default; a test that is about pacing sets its own.
FAST = {"BACKFILL_CALLS_PER_MIN": "60000", "SUMMARY_SETTLE_S": "0", "SUMMARY_MIN_INTERVAL_S": "0",
        "BACKFILL_ON_RESOLVE": "false"}


@contextlib.asynccontextmanager
async def writeup_bot(local: Any, redis_url: str, tmp_path: Any, monkeypatch: Any, *, pagerduty: Any = None,
                      services: dict | None = None, incident: dict | None = None, policy: dict | None = None,
                      oncall: dict | None = None, **env: str) -> AsyncIterator[IncidentBot]:
    for name, value in {**FAST, **env}.items():
        monkeypatch.setenv(name, value)
    async with incident_bot(local, redis_url, tmp_path, pagerduty=pagerduty, incident=incident,
                            policy=policy, oncall=oncall) as bot:
        if services is not None:
            import yaml

            Path(bot.config.services_file).write_text(yaml.safe_dump({"services": services}))
        await install(bot.rt)  # idempotent: a no-op once bot.app.features installs it
        await bot.stop_workers()  # workers read their job kinds when they start: restart them with ours
        bot.start_worker()
        yield bot


async def declare(bot: IncidentBot, text: str, *, user: str = "U1", channel: str | None = None) -> Any:
    """Like `declare_incident`, but the ready incident itself."""
    incident_id = await declare_incident(bot, text, user=user, channel=channel)
    return await bot.wait_incident(incident_id, lambda i: i.ready)


async def deliver(bot: IncidentBot, event: dict, *, event_id: str | None = None) -> str:
    """An Events API delivery; returns once the app's listener has finished with it (Bolt acks events at once
    and runs the listener in the background, so a test would otherwise race it)."""
    event_id = event_id or f"Ev{uuid.uuid4().hex[:10].upper()}"
    response = await bot.post_slack(event_body(event, event_id=event_id), "application/json")
    assert response.status_code == 200, response.text
    await listeners_done()
    return event_id


async def listeners_done(timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while any("run_ack_function_asynchronously" in repr(t.get_coro()) and not t.done() for t in asyncio.all_tasks()):
        if time.monotonic() > deadline:
            raise TimeoutError("Slack event listeners still running")
        await asyncio.sleep(0.005)


async def say(bot: IncidentBot, channel: str, user: str, text: str, *, thread_ts: str | None = None,
              deliver_event: bool = True) -> str:
    ts = bot.local.post_user_message(channel, user, text, thread_ts=thread_ts)
    if deliver_event:
        await deliver(bot, bot.local.message_event(channel, ts))
    return ts


async def react(bot: IncidentBot, channel: str, ts: str, user: str, name: str, *, deliver_event: bool = True) -> None:
    bot.local.add_reaction(channel, ts, user, name)
    if deliver_event:
        await deliver(bot, {"type": "reaction_added", "user": user, "reaction": name, "item_user": user,
                            "item": {"type": "message", "channel": channel, "ts": ts},
                            "event_ts": f"{time.time():.6f}"})


async def pin(bot: IncidentBot, channel: str, ts: str, user: str, *, deliver_event: bool = True) -> None:
    bot.local.pin_message(channel, ts, user)
    if deliver_event:
        message = bot.local.message_event(channel, ts)
        await deliver(bot, {"type": "pin_added", "user": user, "channel_id": channel,
                            "item": {"type": "message", "channel": channel, "message": message,
                                     "created": int(time.time()), "created_by": user},
                            "event_ts": f"{time.time():.6f}"})


# LocalSlack has no helper for a *person* editing or deleting their message (chat.update/delete are the bot's);
# these two change its state the way Slack would, then deliver the events Slack sends.

async def edit(bot: IncidentBot, channel: str, ts: str, text: str, *, deliver_event: bool = True) -> None:
    ws = bot.local._ws
    with ws.lock:
        message = ws.lookup(channel, ts)
        previous = ws.message_view(message)
        message.text, message.edited, message.edited_ts = text, True, ws.clock.next()
        current = ws.message_view(message)
    if deliver_event:
        await deliver(bot, {"type": "message", "subtype": "message_changed", "hidden": True, "channel": channel,
                            "message": current, "previous_message": previous, "ts": ws.clock.next(),
                            "event_ts": f"{time.time():.6f}"})


async def delete(bot: IncidentBot, channel: str, ts: str, *, deliver_event: bool = True) -> None:
    ws = bot.local._ws
    with ws.lock:
        message = ws.lookup(channel, ts)
        previous = ws.message_view(message)
        message.deleted = True
    if deliver_event:
        await deliver(bot, {"type": "message", "subtype": "message_deleted", "hidden": True, "channel": channel,
                            "deleted_ts": ts, "previous_message": previous, "ts": ws.clock.next(),
                            "event_ts": f"{time.time():.6f}"})
