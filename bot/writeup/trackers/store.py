"""Which tickets an incident's action items have: `wu:tickets:<incident>`, action item entry id → Ticket JSON.
Read by the postmortem and `/incident summary`; written only by the export (export.py)."""

from __future__ import annotations

from bot.queue.replies import as_text
from bot.runtime import Runtime
from bot.writeup.trackers.model import Ticket


def tickets_key(rt: Runtime, incident_id: str) -> str:
    return rt.key("wu", "tickets", incident_id)


async def stored_tickets(rt: Runtime, incident_id: str) -> dict[str, Ticket]:
    raw = await rt.redis.hgetall(tickets_key(rt, incident_id))
    return {as_text(k): Ticket.from_json(v) for k, v in raw.items()}


async def remember(rt: Runtime, incident_id: str, ticket: Ticket) -> None:
    await rt.redis.hset(tickets_key(rt, incident_id), ticket.item, ticket.to_json())

