"""Events API listeners. Every event the manifest subscribes to has one: Bolt answers 404 to an event without a
listener and Slack then retries it. Events are de-duplicated on `event_id` (Slack retries deliveries) and handed
to the recorders features register (the incident timeline in particular)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

SUBSCRIBED_EVENTS = [
    "app_mention",
    "member_joined_channel",
    "message",  # message.channels and message.groups both arrive as `message`
    "pin_added",
    "pin_removed",
    "reaction_added",
    "reaction_removed",
]
EVENT_TTL_S = 3600

Recorder = Callable[[Any, dict, dict], Awaitable[None]]  # (runtime, event, envelope)


def register(app: Any, rt: Any) -> None:
    for name in SUBSCRIBED_EVENTS:
        app.event(name)(_listener(rt))


def _listener(rt: Any) -> Callable[..., Awaitable[None]]:
    async def on_event(body: dict, event: dict, **_: Any) -> None:
        event_id = body.get("event_id")
        seen_key = rt.key("event", "seen", event_id) if event_id else None
        if seen_key and not await rt.redis.set(seen_key, 1, nx=True, ex=EVENT_TTL_S):
            return  # a retry of a delivery we already handled
        failed = False
        for recorder in rt.hooks.event_recorders:
            try:
                await recorder(rt, event, body)
            except Exception:
                failed = True
                log.exception("recording %s event failed", event.get("type"))
        if failed and seen_key:
            # Forget the delivery so Slack's retry records it; recorders are idempotent on the event's identity.
            await rt.redis.delete(seen_key)

    return on_event
