"""Assembles a runtime with every feature wired in (on-call schedules, incidents, paging, timeline and write-up,
metrics) — the one place that knows which features exist, so the CLI, the terminal chat and the tests build the
same bot."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from bot.app.key_layout import Names, ensure_layout
from bot.incidents.service import Incidents
from bot.logs import redact_also
from bot.queue.connection import initialized
from bot.runtime import Runtime, create_runtime
from bot.settings import Settings


async def create_full_runtime(settings: Settings, *, redis_url: str | None, queue_name: str | None = None) -> Runtime:
    rt = create_runtime(settings, redis_url=redis_url, queue_name=queue_name)
    try:  # before anything reads Redis: a deployment's old keys are renamed first (bot/app/key_layout.py)
        await ensure_layout(await initialized(rt.redis), Names(rt.namespace, rt.queue.key))
        for install in _feature_installers():  # a feature's settings may stop the start: close what was opened
            await install(rt)
    except BaseException:
        await rt.aclose()
        raise
    redact_also(runtime_secrets(rt))
    return rt


def runtime_secrets(rt: Runtime) -> list[str]:
    """Every secret this process holds: Slack's, what features registered, paging keys and database DSNs (the
    DSN variables named in the services file), so the log redaction covers them all."""
    secrets = [*rt.settings.secrets(), *rt.hooks.secrets]
    incidents = rt.feature(Incidents)
    if incidents is not None:
        secrets += incidents.policy.paging.secrets()
    try:
        services = rt.services().services.values()
    except Exception:  # a broken services file is reported where it is loaded, not here
        services = []
    secrets += [os.environ[s.database.dsn_env] for s in services if s.database and s.database.dsn_env in os.environ]
    return [s for s in secrets if s]


def _feature_installers() -> list[Callable[[Runtime], Awaitable[Any]]]:
    from bot.alerts import install as alerts
    from bot.app import metrics
    from bot.incidents import install as incidents
    from bot.oncall import install as oncall
    from bot.remediation import service as remediation
    from bot.writeup import install as writeup

    # alerts after incidents: the alert sources need the incidents feature
    # remediation after incidents: it needs their policy, permissions and timeline
    return [metrics.install, oncall.install, incidents.install, alerts.install, writeup.install,
            remediation.install]
