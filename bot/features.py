"""Assembles a runtime with every feature wired in (incidents, paging, timeline and write-up, metrics) — the one
place that knows which features exist, so the CLI, the terminal chat and the tests build the same bot."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bot.runtime import Runtime, create_runtime
from bot.settings import Settings


async def create_full_runtime(settings: Settings, *, redis_url: str, queue_name: str = "chatops") -> Runtime:
    rt = create_runtime(settings, redis_url=redis_url, queue_name=queue_name)
    for install in _feature_installers():
        await install(rt)
    return rt


def _feature_installers() -> list[Callable[[Runtime], Awaitable[Any]]]:
    from bot import metrics
    from bot.incidents import install as incidents
    from bot.writeup import install as writeup

    return [metrics.install, incidents.install, writeup.install]
