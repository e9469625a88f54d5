"""Every job kind the workers know, gathered from the features that define them."""

from __future__ import annotations

from typing import Any

from bot.runtime import Runtime


def job_handlers(rt: Runtime) -> dict[str, Any]:
    from bot import diagnosis

    handlers: dict[str, Any] = {}
    handlers.update(diagnosis.job_handlers(rt))
    for extra in rt.extras.get("job_handler_factories", []):
        handlers.update(extra(rt))
    return handlers
