"""A job waiting on someone else's pace gives its worker slot back while it waits.

A worker runs `concurrency` jobs at once. A diagnosis with many findings posts its replies at Slack's pace of
about one a second per channel, and each reply's job used to hold its slot while it waited: one busy channel
could fill every slot and hold up pages, timers and other runs' checks. Code that waits on such a pace wraps the
wait in `parked()`; inside a worker's job the worker may then start another job, and the waiting one counts
again once it resumes. Outside a job (the ack path, the CLI) `parked()` does nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from typing import AsyncContextManager

URGENT_SHARE = 8  # a worker keeps 1/8 of its concurrency (at least 1) more slots for urgent jobs (stream.py's lanes)

_slot: ContextVar[Callable[[float | None], AsyncContextManager[None]] | None] = ContextVar("worker_slot",
                                                                                          default=None)


@contextlib.asynccontextmanager
async def parked(wait_s: float | None = None) -> AsyncIterator[None]:
    """`wait_s`: how long the wait will last, when the pace says. A stopping worker hands back at once a job whose
    wait outlasts its grace; one it cannot tell about it waits for, as for a working one."""
    park = _slot.get()
    if park is None:
        yield
        return
    async with park(wait_s):
        yield


def reserved_for_urgent(concurrency: int) -> int:
    """Slots beyond `concurrency` that only the urgent lane's jobs take (pages, escalation timers)."""
    return max(concurrency // URGENT_SHARE, 1)


def in_job() -> bool:
    """True inside a worker's job; False on the ack path and in the CLI, where someone is waiting for an answer."""
    return _slot.get() is not None


def bind(park: Callable[[float | None], AsyncContextManager[None]]) -> None:
    """Called by the worker in a job's own task: `parked()` in that job (and tasks it starts) calls `park`."""
    _slot.set(park)
