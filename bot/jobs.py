"""Every job kind the workers know, gathered from the features that define them."""

from __future__ import annotations

import functools
from typing import Any

from bot.queue import Job, Permanent
from bot.runtime import Runtime
from bot.slack_client import SlackError


def job_handlers(rt: Runtime) -> dict[str, Any]:
    from bot import diagnosis

    handlers: dict[str, Any] = {}
    handlers.update(diagnosis.job_handlers(rt))
    for extra in rt.extras.get("job_handler_factories", []):
        handlers.update(extra(rt))
    return {kind: _permanent_slack_errors(handler) for kind, handler in handlers.items()}


def _permanent_slack_errors(handler: Any) -> Any:
    """A Slack answer no retry can change (channel_not_found, invalid_auth...) dead-letters the job at once, with
    the error, instead of retrying it for minutes."""

    @functools.wraps(handler)
    async def handle(job: Job) -> None:
        try:
            await handler(job)
        except SlackError as exc:
            if exc.permanent:
                raise Permanent(str(exc)) from exc
            raise

    return handle
