"""Wires on-call schedules into a runtime: `await install(rt)` (called by bot.app.features.create_full_runtime,
before incidents, which pages schedules and adds open incidents to the handoff DMs).

Adds to `rt.hooks`:
    job_handlers   oncall.handoff (a delayed job per schedule and handoff instant)
    http_routes    GET /oncall/<schedule>.ics?token=…  (404 without ONCALL_CALENDAR_TOKEN)
    secrets        the calendar token, for log redaction
and queues each schedule's next handoff (idempotently) so handoff DMs start without anyone asking.

A bad ONCALL_FILE stops the process at start-up with one ConfigError line naming the file and the path.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from bot.oncall.calendar import feed
from bot.oncall.config import OncallSettings, load_oncall_file, load_oncall_settings
from bot.oncall.overrides import OverrideStore
from bot.oncall.schedule import Schedule, ServiceSchedules
from bot.oncall.service import HANDOFF_JOB, Oncall, arm_handoffs, handoff_job
from bot.queue import Job
from bot.runtime import Runtime

Response = tuple[int, dict[str, str], bytes]
ARM_AT_START_TIMEOUT_S = 2.0
log = logging.getLogger("bot.oncall")


async def install(rt: Runtime, *, settings: OncallSettings | None = None,
                  schedules: dict[str, Schedule] | None = None, routing: ServiceSchedules | None = None) -> Oncall:
    """Idempotent: a second call returns the context already installed."""
    installed = rt.feature(Oncall)
    if installed is not None:
        return installed
    settings = settings or load_oncall_settings()
    if schedules is None:
        schedules, routing = load_oncall_file(settings.oncall_file)
    ctx = rt.provide(Oncall(rt=rt, settings=settings, schedules=schedules,
                            overrides=OverrideStore(rt.redis, rt.namespace), routing=routing or ServiceSchedules()))
    rt.hooks.job_handlers.append(lambda _rt: {HANDOFF_JOB: _bound(ctx)})
    for name in schedules:
        rt.hooks.http_routes[("GET", f"/oncall/{name}.ics")] = calendar_route(ctx, name)
    rt.hooks.secrets.extend(settings.secrets())
    await _arm_at_start(ctx)
    return ctx


async def _arm_at_start(ctx: Oncall) -> None:
    """Queue each schedule's next handoff when a process starts (idempotent, so every process may), so handoff
    DMs begin without anyone typing /oncall. Redis being slow or away must not stop the start: the next
    `/oncall`, override or handoff arms them too."""
    if not ctx.schedules:
        return
    try:
        await asyncio.wait_for(arm_handoffs(ctx), ARM_AT_START_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 — a start-up nicety, logged and retried by the paths above
        log.warning("could not arm the on-call handoffs at start-up: %s", type(exc).__name__)


def _bound(ctx: Oncall) -> Any:
    async def oncall_handoff(job: Job) -> None:
        await handoff_job(ctx, job)

    return oncall_handoff


def calendar_route(ctx: Oncall, name: str) -> Any:
    async def ics(scope: dict, body: bytes) -> Response:
        token = ctx.settings.oncall_calendar_token
        if token is None:
            return 404, {"content-type": "text/plain"}, b"calendar feeds are off: set ONCALL_CALENDAR_TOKEN\n"
        given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
        if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            return 401, {"content-type": "text/plain"}, b"bad or missing ?token=\n"
        now = time.time()
        weeks = ctx.settings.oncall_calendar_weeks
        text = feed(ctx.schedules[name], await ctx.shifts(name, now, now + weeks * 7 * 86400),
                    now=dt.datetime.fromtimestamp(now, dt.timezone.utc))
        return 200, {"content-type": "text/calendar; charset=utf-8",
                     "content-disposition": f'inline; filename="{name}.ics"'}, text.encode()

    return ics
