"""The job kinds incidents add to the workers (`rt.hooks.job_handlers`).

    incident.declare     the declaration steps (lifecycle.declare_job), resumable
    incident.page        carry out one page order, each delivery once (escalation.page_job)
    incident.escalate    an escalation timer (delayed; re-checks under the lock)
    incident.remind      a status-update reminder (delayed; re-arms itself)
    incident.providers   acknowledge / resolve the pages at their providers
    incident.post        one message into the incident, posted once under its key
    incident.refresh     redraw the header and the announcement (coalesced)
    incident.topic       update the channel topic       incident.invite   invite people to the channel
    incident.audit       periodic: re-queue committed decisions whose jobs were lost
    incident.recheck     while monitoring: diagnose the service again (delayed; re-arms itself)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bot.incidents import diagnoses, escalation, lifecycle
from bot.incidents.service import Incidents, incidents_of
from bot.queue import Job
from bot.runtime import Runtime

JOBS: dict[str, Callable[[Incidents, Job], Awaitable[None]]] = {
    "incident.declare": lifecycle.declare_job,
    "incident.page": escalation.page_job,
    "incident.escalate": escalation.escalate_timer_job,
    "incident.remind": lifecycle.remind_job,
    "incident.providers": escalation.providers_job,
    "incident.post": lifecycle.post_job,
    "incident.refresh": lifecycle.refresh_job,
    "incident.topic": lifecycle.topic_job,
    "incident.invite": lifecycle.invite_job,
    "incident.audit": lifecycle.audit_job,
    "incident.recheck": diagnoses.recheck_job,
}

# What someone waits on: these go in the queue's urgent lane, ahead of diagnoses and paperwork (bot/queue/stream.py).
# A page, the timer that pages the next level, and the acknowledgement or resolve that stops a provider paging on.
FIRST = ("incident.page", "incident.escalate", "incident.providers")


def job_handlers(rt: Runtime) -> dict[str, Any]:
    ctx = incidents_of(rt)

    def bind(fn: Callable[[Incidents, Job], Awaitable[None]]) -> Callable[[Job], Awaitable[None]]:
        async def handler(job: Job) -> None:
            await fn(ctx, job)

        handler.__name__ = fn.__name__
        return handler

    return {kind: bind(fn) for kind, fn in JOBS.items()}
