"""Asking for write-up work: each request is one enqueue, coalesced per incident while one waits.

Kept apart from the jobs themselves so capture, back-fill and publication can ask for each other's work without
importing each other.
"""

from __future__ import annotations

from bot.runtime import Runtime


async def request_postmortem(rt: Runtime, incident_id: str, *, reason: str, delay_s: float = 0.0,
                             backfill: bool = False) -> None:
    """Queue a publication (coalesced per incident while one waits); `backfill`: then read the channel history
    and publish again if it found anything the live capture missed."""
    await rt.queue.enqueue("writeup.postmortem", {"incident": incident_id, "reason": reason, "backfill": backfill},
                           job_id=f"postmortem:{incident_id}", delay_s=delay_s)


async def request_backfill(rt: Runtime, incident_id: str, *, reason: str, republish: bool = False,
                           delay_s: float = 0.0) -> None:
    """Queue a back-fill (coalesced per incident while one is waiting)."""
    await rt.queue.enqueue("writeup.backfill", {"incident": incident_id, "reason": reason, "republish": republish},
                           job_id=f"backfill:{incident_id}", delay_s=delay_s)
