"""Wires incidents into a runtime: `await install(rt)` (called by bot.features.create_full_runtime).

Puts into `rt.extras`:
    incidents               the `Incidents` context (settings, policy, providers, store, timeline)
    job_handler_factories   + incidents' job kinds (bot/incidents/jobs.py)
    http_routes             + POST /hooks/pagerduty, POST /hooks/alertmanager
    action_registrars       + handlers.incident_actions.register (buttons incident_ack/diagnose/escalate/resolve)
    on_diagnosis_finished   + the hook that writes a verdict into the incident's timeline and header
    closers                 + closing the providers' HTTP clients (call each with the runtime on shutdown)
    secrets                 + webhook secrets, for log redaction

Reading the settings and the policy file happens here, at start-up: a bad PAGING_POLICY_FILE or ALERT_* value
stops the process with one ConfigError line.
"""

from __future__ import annotations

from typing import Any

from bot.incidents.config import IncidentSettings, load_incident_settings
from bot.incidents.service import Incidents
from bot.incidents.store import IncidentStore
from bot.paging import build_providers, close_providers, load_policy
from bot.paging.policy import PagingPolicy
from bot.paging.providers import Provider
from bot.runtime import Runtime
from bot.timeline import Timeline


async def install(rt: Runtime, *, settings: IncidentSettings | None = None, policy: PagingPolicy | None = None,
                  providers: dict[str, Provider] | None = None) -> Incidents:
    """Idempotent: a second call returns the context already installed."""
    if "incidents" in rt.extras:
        return rt.extras["incidents"]
    settings = settings or load_incident_settings()
    policy = policy or load_policy(settings.paging_policy_file)
    if providers is None:
        providers = build_providers(policy.paging, rt.slack, rt.redis, key_prefix=rt.key("paging", "dm"))
    ctx = Incidents(rt=rt, settings=settings, policy=policy, providers=providers,
                    store=IncidentStore(rt.redis, rt.namespace), timeline=Timeline(rt.redis, rt.namespace))
    rt.extras["incidents"] = ctx
    _wire(rt, ctx)
    return ctx


def _wire(rt: Runtime, ctx: Incidents) -> None:
    from bot.incidents import alerts, jobs, lifecycle, webhooks
    from handlers import incident_actions

    rt.extras.setdefault("job_handler_factories", []).append(jobs.job_handlers)
    routes = rt.extras.setdefault("http_routes", {})
    routes[("POST", "/hooks/pagerduty")] = webhooks.make_route(ctx)
    routes[("POST", "/hooks/alertmanager")] = alerts.make_route(ctx)
    rt.extras.setdefault("action_registrars", []).append(incident_actions.register)
    rt.extras.setdefault("on_diagnosis_finished", []).append(lifecycle.on_diagnosis_finished)
    rt.extras.setdefault("closers", []).append(_close)
    rt.extras.setdefault("secrets", []).extend(ctx.settings.secrets())


async def _close(rt: Runtime) -> None:
    ctx: Any = rt.extras.get("incidents")
    if ctx is not None:
        await close_providers(ctx.providers)
