"""Wires incidents into a runtime: `await install(rt)` (called by bot.app.features.create_full_runtime).

Provides the `Incidents` context (settings, policy, providers, store, timeline) on the runtime, and adds to
`rt.hooks`:
    job_handlers        incidents' job kinds (bot/incidents/jobs.py)
    http_routes         POST /hooks/pagerduty (the alert sources' routes: bot/alerts/install.py)
    diagnosis_starting  the hook that gives a run asked for in an incident's channel to that incident
    diagnosis_finished  the hook that writes a verdict into the incident's timeline and header
    closers             closing the providers' HTTP clients
    secrets             webhook secrets, for log redaction

The incident buttons are Slack listeners: handlers/ registers them when this feature is installed.

Reading the settings and the policy file happens here, at start-up: a bad PAGING_POLICY_FILE or ALERT_* value
stops the process with one ConfigError line.
"""

from __future__ import annotations

from bot.incidents.config import IncidentSettings, load_incident_settings
from bot.incidents.service import Incidents
from bot.incidents.store import IncidentStore
from bot.incidents.timeline import Timeline
from bot.oncall.schedule import BY_SERVICE
from bot.oncall.service import oncall_of
from bot.paging import build_providers, close_providers, load_policy
from bot.paging.policy import PagingPolicy
from bot.paging.providers import Provider
from bot.runtime import Runtime
from bot.settings import ConfigError


async def install(rt: Runtime, *, settings: IncidentSettings | None = None, policy: PagingPolicy | None = None,
                  providers: dict[str, Provider] | None = None) -> Incidents:
    """Idempotent: a second call returns the context already installed."""
    installed = rt.feature(Incidents)
    if installed is not None:
        return installed
    settings = settings or load_incident_settings()
    policy = policy or load_policy(settings.paging_policy_file)
    _check_schedules(rt, policy)
    if providers is None:
        providers = build_providers(policy.paging, rt.slack, rt.redis, key_prefix=rt.key("paging", "dm"))
    ctx = Incidents(rt=rt, settings=settings, policy=policy, providers=providers,
                    store=IncidentStore(rt.redis, rt.namespace), timeline=Timeline(rt.redis, rt.namespace))
    rt.provide(ctx)
    _wire(rt, ctx)
    return ctx


def _check_schedules(rt: Runtime, policy: PagingPolicy) -> None:
    """A policy level naming a schedule that ONCALL_FILE does not define would page nobody: refuse to start."""
    oncall = oncall_of(rt)
    known = set(oncall.schedules) if oncall else set()
    if missing := sorted(policy.schedules() - known):
        raise ConfigError(f"{policy.source}: names schedule {missing[0]!r}, which ONCALL_FILE does not define "
                          f"(defined: {', '.join(sorted(known)) or 'none'})")
    if policy.pages_by_service() and not (oncall and oncall.routing.configured):
        raise ConfigError(f"{policy.source}: a level pages {{schedule: {BY_SERVICE}}}, but ONCALL_FILE says no "
                          f"service's schedule: add `services: {{api: payments-primary}}` (and optionally "
                          f"`default_schedule:`) to it")
    for name, schedule in (oncall.schedules.items() if oncall else ()):
        if schedule.page_via and schedule.page_via not in policy.paging.providers:
            raise ConfigError(f"ONCALL_FILE: schedules.{name}.page_via: no provider {schedule.page_via!r} is "
                              f"configured in the paging policy ({policy.source})")


def _wire(rt: Runtime, ctx: Incidents) -> None:
    from bot.incidents import diagnoses, jobs, lifecycle, provider_acks
    if (oncall := oncall_of(rt)) is not None:
        oncall.handoff_notes.append(lambda user: _open_incidents(ctx, user))
    rt.hooks.job_handlers.append(jobs.job_handlers)
    rt.queue.put_first(*jobs.FIRST)
    rt.hooks.http_routes[("POST", "/hooks/pagerduty")] = provider_acks.make_route(ctx)
    rt.hooks.diagnosis_starting.append(diagnoses.on_diagnosis_starting)
    rt.hooks.diagnosis_finished.append(lifecycle.on_diagnosis_finished)
    rt.hooks.closers.append(_close)
    rt.hooks.secrets.extend(ctx.settings.secrets())


async def _open_incidents(ctx: Incidents, user: str) -> list[str]:
    """For the on-call handoff DM to `user`: the open incidents they may see, as `/incident list` shows them."""
    from bot.incidents import messages

    shown, total = await ctx.open_for(user, messages.LIST_SHOWN)
    return [messages.list_text(shown, total=total)]


async def _close(rt: Runtime) -> None:
    ctx = rt.feature(Incidents)
    if ctx is not None:
        await close_providers(ctx.providers)
