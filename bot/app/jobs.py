"""Every job kind the workers know, gathered from the features that define them."""

from __future__ import annotations

import functools
from typing import Any

from bot.logs import log_context
from bot.queue import Job, Permanent
from bot.runtime import Runtime
from bot.slack.client import SlackError


def job_handlers(rt: Runtime) -> dict[str, Any]:
    from bot.diagnosis import run as diagnosis

    handlers: dict[str, Any] = {}
    handlers.update(diagnosis.job_handlers(rt))
    for extra in rt.hooks.job_handlers:
        handlers.update(extra(rt))
    return {kind: wrap_job_handler(handler) for kind, handler in handlers.items()}


def wrap_job_handler(handler: Any) -> Any:
    """Every job runs with its ids in the log context (JSON logs carry job, incident and run ids), and a Slack
    answer no retry can change (channel_not_found, invalid_auth...) dead-letters it at once instead of retrying
    it for minutes."""

    @functools.wraps(handler)
    async def handle(job: Job) -> None:
        payload = job.payload if isinstance(job.payload, dict) else {}
        incident = payload.get("incident") or payload.get("incident_id") or payload.get("state", {}).get("incident_id")
        with log_context(job_id=job.id, job_kind=job.kind, incident_id=incident, run_id=payload.get("run")):
            try:
                await handler(job)
            except SlackError as exc:
                if exc.permanent:
                    raise Permanent(str(exc)) from exc
                raise

    return handle
