"""Wires the alert sources into a runtime: `await install(rt)` (called by bot.app.features.create_full_runtime,
after incidents).

Adds to `rt.hooks`: one HTTP route per source of bot/alerts/sources.py (each answers 404 until configured), the
SNS fetcher's closer, and the sources' secrets for log redaction. Without the incidents feature nothing is added.
"""

from __future__ import annotations

from bot.alerts.config import AlertSourceSettings, load_alert_settings
from bot.alerts.service import Alerts
from bot.alerts.sources import SOURCES, make_route
from bot.incidents.service import Incidents
from bot.runtime import Runtime


async def install(rt: Runtime, *, settings: AlertSourceSettings | None = None) -> Alerts | None:
    """Idempotent: a second call returns the context already installed."""
    installed = rt.feature(Alerts)
    if installed is not None:
        return installed
    incidents = rt.feature(Incidents)
    if incidents is None:
        return None
    ax = rt.provide(Alerts(rt, incidents, settings or load_alert_settings()))
    for source in SOURCES:
        rt.hooks.http_routes[("POST", source.path)] = make_route(ax, source)
    rt.hooks.closers.append(_close)
    rt.hooks.secrets.extend(ax.settings.secrets())
    return ax


async def _close(rt: Runtime) -> None:
    ax = rt.feature(Alerts)
    if ax is not None and "sns" in vars(ax):  # the fetcher is made with the first SNS message
        await ax.sns.close()
