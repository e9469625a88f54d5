"""Paging and escalation: page orders, exactly-once delivery, escalation timers, acknowledgements.

The rule everywhere: decide under the incident's lock and commit the decision (a `PageOrder`, the next timer's
due time and generation) before any effect; then queue the effects as jobs. A process that dies after the
commit leaves a decision the auditor (lifecycle.audit_job) finds and carries out; one that dies before it
leaves nothing to undo.

Exactly once, honestly: a page is recorded per (dedup key, delivery) — one delivery per provider, or per
Slack user — and a short lease keeps two workers from sending the same delivery at once. A worker killed
between the provider accepting the page and the record being written cannot know whether it was sent; the
job is retried when the lease expires and sends again with the SAME deterministic dedup key, which PagerDuty
and Opsgenie fold into the alert already open. So the provider holds exactly one alert per incident, level
and person; the raw request may have gone out twice. (A Slack DM has no dedup key: there the window can,
rarely, mean a second DM — the safe side of the trade.)

Timers are delayed jobs `incident.escalate {incident, gen}` due at `paging.next_escalation_at`. Each re-checks
under the lock that it is still the current timer (`gen`), the incident is open and nobody acknowledged; an
ack, a resolve, a severity change or a manual escalation bumps `gen` (and cancels the delayed job).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import msgspec

from bot.errors import UserError
from bot.incidents import messages
from bot.incidents.model import FrozenLevel, Incident, PageOrder, PageRecord, Severity
from bot.incidents.service import Incidents
from bot.incidents.timeline import EntryKind
from bot.oncall.schedule import BY_SERVICE
from bot.oncall.service import oncall_of
from bot.queue.pacing import pacer_for
from bot.paging.policy import SCHEDULE, Level
from bot.paging.providers import Page, PageResult, Provider, make_dedup_key
from bot.queue import Job, Retry, lease, slots
from bot.slack.client import urgent

log = logging.getLogger("bot.incidents")

PAGE_LEASE_WAIT_S = 10.0  # a live sender renews its lease; longer than this and the queue retries us later
SHORT_TURN_S = 1.0  # a page whose turn at a rate-limited provider is this close waits in its job; later, requeued
TURN_TRIES = 3
# A delivery refused for a rate limit with no budget of ours to wait on (Slack DMs past the client's retries) goes
# again later, but only this long after its order: then it is a failed page, said in the channel, and the next
# level's timer runs as usual instead of being held back by each retry.
UNBUDGETED_DEFER_LIMIT_S = 300.0


class PageDeferred(Exception):
    """The provider's rate budget has no room for this page yet: send it again in `wait_s` (never drop it)."""

    def __init__(self, provider: str, wait_s: float) -> None:
        super().__init__(f"{provider} is rate limited: the page waits {wait_s:.1f} s for its turn")
        self.provider, self.wait_s = provider, wait_s


def freeze(levels: list[Level]) -> list[FrozenLevel]:
    return [FrozenLevel(number=lvl.number, routes={p: list(ids) for p, ids in lvl.routes().items()},
                        ack_timeout_s=lvl.ack_timeout_s, urgency=lvl.urgency) for lvl in levels]  # type: ignore


async def _order(ctx: Incidents, incident: Incident, level: FrozenLevel | Level, severity: Severity, reason: str,
                 actor: str | None = None) -> PageOrder:
    routes = level.routes if isinstance(level, FrozenLevel) else {p: list(i) for p, i in level.routes().items()}
    routes, via, unpaged = await resolve_schedules(ctx, routes, incident.service)
    return PageOrder(dedup_key=make_dedup_key(incident.id, severity, level.number), severity=severity,
                     level=level.number, routes=routes, urgency=level.urgency, reason=reason,  # type: ignore
                     actor=actor, schedules=via, unpaged=unpaged)


async def resolve_schedules(ctx: Incidents, routes: dict[str, list[str]], service: str | None = None
                            ) -> tuple[dict[str, list[str]], dict[str, str], list[str]]:
    """A level's `{schedule: …}` targets → whoever is on call for each right now, overrides included (so an
    override made while a page is open redirects the next step); `by_service` is the schedule ONCALL_FILE gives
    `service` (or its default). Also returns target → schedule it came from, and why a target paged nobody."""
    out = {provider: list(ids) for provider, ids in routes.items() if provider != SCHEDULE}
    via: dict[str, str] = {}
    unpaged: list[str] = []
    oncall = oncall_of(ctx.rt)
    for named in routes.get(SCHEDULE, []):
        name = oncall.routing.schedule_for(service) if oncall and named == BY_SERVICE else named
        if name is None:
            unpaged.append(messages.no_service_schedule(service))
            continue
        found, _ = await oncall.page_routes(name) if oncall else ({}, None)
        for provider, ids in found.items():
            bucket = out.setdefault(provider, [])
            bucket.extend(i for i in ids if i not in bucket)
            via.update({target: name for target in ids or [provider]})
    return out, via, unpaged


def _add_order(incident: Incident, order: PageOrder) -> PageOrder | None:
    """Append unless an order with that dedup key exists (the same page, decided again)."""
    if incident.paging.order(order.dedup_key) is not None:
        return None
    order.acks_before = incident.paging.acks
    incident.paging.orders.append(order)
    return order


def _arm_timer(ctx: Incidents, incident: Incident, now: float) -> tuple[str, float] | None:
    """Set the next escalation (if any) for the level just paged; returns (job id, due) to enqueue after saving."""
    paging = incident.paging
    paging.timer_gen += 1
    paging.next_escalation_at = None
    if not incident.is_open or paging.acknowledged or paging.level < 1 or paging.level >= len(paging.levels):
        return None
    due = now + paging.levels[paging.level - 1].ack_timeout_s
    paging.next_escalation_at = due
    return timer_job_id(incident.id, paging.timer_gen), due


def timer_job_id(incident_id: str, gen: int) -> str:
    return f"esc:{incident_id}:{gen}"


def cancel_timer(incident: Incident) -> str | None:
    """Forget the pending timer (its generation no longer matches); returns its job id for queue.cancel."""
    paging = incident.paging
    pending = timer_job_id(incident.id, paging.timer_gen) if paging.next_escalation_at else None
    paging.timer_gen += 1
    paging.next_escalation_at = None
    return pending


class Effects(msgspec.Struct):
    """What to queue once the decision is saved."""

    orders: list[PageOrder]
    timer: tuple[str, float] | None = None
    cancel: str | None = None

    async def run(self, ctx: Incidents, incident: Incident) -> None:
        if self.cancel:
            await ctx.rt.queue.cancel(self.cancel)
        # Together: the queue sends enqueues made in the same turn as one round trip (bot/queue/batch.py).
        await asyncio.gather(*(enqueue_page(ctx, incident.id, order.dedup_key) for order in self.orders),
                             *([self._arm(ctx, incident)] if self.timer else []))

    async def _arm(self, ctx: Incidents, incident: Incident) -> None:
        assert self.timer is not None
        job_id, due = self.timer
        await ctx.rt.queue.enqueue("incident.escalate", {"incident": incident.id, "gen": incident.paging.timer_gen},
                                   job_id=job_id, run_at=due)


async def enqueue_page(ctx: Incidents, incident_id: str, dedup_key: str) -> None:
    await ctx.rt.queue.enqueue("incident.page", {"incident": incident_id, "key": dedup_key},
                               job_id=f"page:{dedup_key}")


# ---------------------------------------------------------------------------------------------- decisions

async def order_first_page(ctx: Incidents, incident: Incident) -> Effects:
    """Freeze the policy of the incident's severity into it and decide its first level's page, once (an incident
    whose paging started is left as it is). The caller saves the incident, then runs the effects."""
    effects = Effects([])
    paging = incident.paging
    if paging.severity is None and incident.is_open:
        paging.severity = incident.severity
        paging.levels = freeze(ctx.policy.levels_for(incident.severity))
        if paging.levels:
            paging.level = 1
            order = _add_order(incident, await _order(ctx, incident, paging.levels[0], incident.severity, "policy"))
            effects.orders = [order] if order else []
            effects.timer = _arm_timer(ctx, incident, time.time())
    return effects


async def start_paging(ctx: Incidents, incident_id: str) -> Incident:
    """Page an incident recorded without its first page decided (`declare` decides it with the record)."""
    async with ctx.store.mutate(incident_id) as incident:
        effects = await order_first_page(ctx, incident)
    await effects.run(ctx, incident)
    return incident


class EscalationResult(msgspec.Struct):
    incident: Incident
    level: int
    targets: list[str]


async def escalate_next(ctx: Incidents, incident_id: str, actor: str, reason: str | None) -> EscalationResult:
    """`/escalate [reason]` and the Escalate button: page the next level of the policy now."""
    async with ctx.store.mutate(incident_id) as incident:
        _require_open(incident)
        paging = incident.paging
        if paging.severity is None:
            raise UserError(f"{incident.id} is still being declared; try again in a few seconds.")
        if paging.level >= len(paging.levels):
            raise UserError(_no_next_level(incident))
        cancel = cancel_timer(incident)
        paging.level += 1
        paging.acked_at = paging.acked_by = paging.ack_via = None  # the newly paged must acknowledge
        level = paging.levels[paging.level - 1]
        order = _add_order(incident, await _order(ctx, incident, level, paging.severity, "manual", actor))
        effects = Effects([order] if order else [], _arm_timer(ctx, incident, time.time()), cancel)
    await effects.run(ctx, incident)
    targets = _order_names(incident, paging.severity, level)
    await ctx.timeline.record(incident.id, EntryKind.ESCALATED, entry_id=f"escalated:{paging.severity}:L{level.number}",
                              actor=actor, text=reason or "", data={"level": level.number, "reason": "manual",
                                                                    "severity": paging.severity})
    await ctx.say(incident.id, f"escalated:{paging.severity}:L{level.number}",
                  *messages.line(messages.escalated_line(level.number, targets, "manual", actor)
                                 + (f"\nReason: {messages.inert(reason)}" if reason else "")))
    await ctx.refresh_header(incident.id)
    return EscalationResult(incident, level.number, targets)


def _no_next_level(incident: Incident) -> str:
    """Said when `/escalate` finds no level left: true whether the levels were paged, failed, or never existed."""
    raise_it = "" if incident.severity == "P0" else ", or raise the severity (`/escalate P0 <reason>`)"
    if reason := messages.nobody_paged_reason(incident):
        return (f"Nobody has been paged for {incident.id}: {reason}. Page someone by name (`/escalate @user` or "
                f"`@group`){raise_it}.")
    return (f"{incident.id} has paged every level of its {incident.paging.severity} policy already. Page someone "
            f"by name (`/escalate @user` or `@group`){raise_it}.")


async def page_people(ctx: Incidents, incident_id: str, actor: str, people: list[str], reason: str | None,
                      key: str) -> Incident:
    """`/escalate @user @group`: DM exactly those people (through the Slack provider)."""
    async with ctx.store.mutate(incident_id) as incident:
        _require_open(incident)
        severity = incident.severity
        order = _add_order(incident, PageOrder(
            dedup_key=f"{incident.id}:{severity}:people:{key}", severity=severity,
            level=max(incident.paging.level, 1), routes={"slack": people}, urgency="high", reason="people",
            actor=actor))
    if order:
        await enqueue_page(ctx, incident.id, order.dedup_key)
        names = _target_names({"slack": people})
        await ctx.timeline.record(incident.id, EntryKind.ESCALATED, entry_id=f"escalated:people:{key}", actor=actor,
                                  text=reason or "", data={"reason": "people", "people": people})
        await ctx.say(incident.id, f"people:{key}", *messages.line(messages.people_paged_line(actor, names, reason)))
    return incident


class SeverityChange(msgspec.Struct):
    incident: Incident
    old: str
    new: str
    paged: list[str]


async def change_severity(ctx: Incidents, incident_id: str, actor: str, new: Severity, *, key: str,
                          reason: str | None = None) -> SeverityChange:
    """Set the severity. Once paging has started, page only what the new severity adds over what the old one
    already reached (`PagingPolicy.added_levels`), and continue escalating on the new severity's levels."""
    async with ctx.store.mutate(incident_id) as incident:
        _require_open(incident)
        old = incident.severity
        if new == old:
            raise UserError(f"{incident.id} is already {new}.")
        incident.severity = new
        effects, paged = Effects([]), []
        paging = incident.paging
        if paging.severity is not None:
            reached = max(paging.level, 1)
            added = ctx.policy.added_levels(paging.severity, new, reached=reached)
            effects.cancel = cancel_timer(incident)
            paging.severity = new
            paging.levels = freeze(ctx.policy.levels_for(new))
            paging.level = min(reached, len(paging.levels))
            for level in added:
                order = _add_order(incident, await _order(ctx, incident, level, new, "severity", actor))
                if order:
                    effects.orders.append(order)
                    paged += _target_names(order.routes, order.schedules)
            if effects.orders:
                paging.acked_at = paging.acked_by = paging.ack_via = None
            effects.timer = _arm_timer(ctx, incident, time.time())
        reminder = _rearm_reminder(ctx, incident)
    await effects.run(ctx, incident)
    if reminder:
        await ctx.rt.queue.enqueue("incident.remind", {"incident": incident.id, "gen": incident.reminder_gen},
                                   job_id=reminder[0], run_at=reminder[1])
    await ctx.timeline.record(incident.id, EntryKind.SEVERITY, entry_id=f"severity:{key}", actor=actor, text=reason or "",
                              data={"from": old, "to": new, "paged": paged})
    await ctx.say(incident.id, f"severity:{key}", *messages.line(
        messages.severity_line(actor, old, incident, paged)
        + (f"\nReason: {messages.inert(reason)}" if reason else "")))
    await ctx.refresh_header(incident.id)
    return SeverityChange(incident, old, new, list(dict.fromkeys(paged)))


def _rearm_reminder(ctx: Incidents, incident: Incident) -> tuple[str, float] | None:
    """A new severity has its own update cadence: replace the pending reminder."""
    if not incident.is_open or incident.reminder_due is None:
        return None
    every = ctx.policy.update_every_s(incident.severity)
    incident.reminder_gen += 1
    incident.reminder_due = (incident.last_update_at or incident.declared_at) + every
    return reminder_job_id(incident.id, incident.reminder_gen), incident.reminder_due


def reminder_job_id(incident_id: str, gen: int) -> str:
    return f"remind:{incident_id}:{gen}"


class AckResult(msgspec.Struct):
    incident: Incident
    already: bool
    after_s: float


async def acknowledge(ctx: Incidents, incident_id: str, actor: str, via: str) -> AckResult:
    """Stop the escalation: cancel the pending timer, tell the channel, acknowledge at the providers."""
    async with ctx.store.lock(incident_id):
        incident = await ctx.store.require(incident_id)
        _require_open(incident, "acknowledge")
        paging = incident.paging
        started = paging.first_paged_at or incident.declared_at
        if paging.acknowledged:
            return AckResult(incident, True, (paging.acked_at or started) - started)
        now = time.time()
        paging.acked_at, paging.acked_by, paging.ack_via = now, actor, via
        paging.acks += 1
        cancel = cancel_timer(incident)
        await ctx.store.save(incident)
    if cancel:
        await ctx.rt.queue.cancel(cancel)
    after = now - started
    gen = paging.timer_gen
    await ctx.timeline.record(incident.id, EntryKind.PAGE_ACKED, entry_id=f"page_acked:{gen}", actor=actor, at=now,
                              text=f"acknowledged after {messages.format_duration(after)}",
                              data={"via": via, "after_s": round(after, 3), "severity": paging.severity,
                                    "level": paging.level})
    nobody = messages.nobody_paged_reason(incident)
    await ctx.say(incident.id, f"ack:{gen}", *messages.line(messages.ack_line(actor, after, via, nobody)))
    await notify_providers(ctx, incident, "acknowledge", f"ack:{gen}")
    await ctx.refresh_header(incident.id)
    return AckResult(incident, False, after)


async def notify_providers(ctx: Incidents, incident: Incident, action: str, key: str) -> None:
    await ctx.rt.queue.enqueue("incident.providers", {"incident": incident.id, "action": action},
                               job_id=f"providers:{incident.id}:{key}")


def _require_open(incident: Incident, verb: str = "change") -> None:
    if not incident.is_open:
        raise UserError(f"{incident.id} is resolved; there is nothing to {verb}. "
                        f"Declare a new incident if it is back.")


def _target_names(routes: dict[str, list[str]], via: dict[str, str] | None = None) -> list[str]:
    """Names of who a page goes to; one paged from a schedule says which (`@alice (on call: payments)`)."""
    names: list[str] = []
    for provider, ids in routes.items():
        for target in ids or [None]:
            name = messages.targets_text([(provider, target)])[0]
            schedule = (via or {}).get(target or provider)
            names.append(f"{name} (on call: {messages.inert(schedule)})" if schedule else name)
    return list(dict.fromkeys(names))


def _order_names(incident: Incident, severity: Severity, level: FrozenLevel) -> list[str]:
    """Who a level's order paged (schedules resolved), or the level's own targets if no order was made."""
    order = incident.paging.order(make_dedup_key(incident.id, severity, level.number))
    return _target_names(order.routes, order.schedules) if order else _target_names(level.routes)


# ------------------------------------------------------------------------------------------------ jobs

async def escalate_timer_job(ctx: Incidents, job: Job) -> None:
    """A timer is due: if it is still the current one and nobody acknowledged, page the next level."""
    incident_id, gen = job.payload["incident"], int(job.payload["gen"])
    async with ctx.store.lock(incident_id):
        incident = await ctx.store.get(incident_id)
        if incident is None:
            return
        paging = incident.paging
        due = paging.next_escalation_at
        if (not incident.is_open or paging.acknowledged or paging.timer_gen != gen or due is None
                or paging.level >= len(paging.levels)):
            return  # stale: acknowledged, resolved, re-planned, or nothing left to page
        now = time.time()
        if now < due - 0.05:  # armed early (a clock step, an auditor re-enqueue): come back on time
            await ctx.rt.queue.enqueue("incident.escalate", job.payload, job_id=job.id, run_at=due)
            return
        paging.level += 1
        level = paging.levels[paging.level - 1]
        assert paging.severity is not None
        order = _add_order(incident, await _order(ctx, incident, level, paging.severity, "timer"))
        effects = Effects([order] if order else [], _arm_timer(ctx, incident, now))
        await ctx.store.save(incident)
    await effects.run(ctx, incident)
    targets = _order_names(incident, paging.severity, level)
    await ctx.timeline.record(incident.id, EntryKind.ESCALATED, entry_id=f"escalated:{paging.severity}:L{level.number}",
                              actor="bot", at=now, data={"level": level.number, "reason": "timer", "due": due,
                                                         "lateness_s": round(now - due, 3),
                                                         "severity": paging.severity})
    # Queued before the sends: a job cut short during them (a crash, a stop) runs again as stale, after the level
    # was saved, and would never say it.
    await ctx.say(incident.id, f"escalated:{paging.severity}:L{level.number}",
                  *messages.line(messages.escalated_line(level.number, targets, "timer", None)))
    # Sent here, in the timer's own job: queued, a burst's pages waited behind every other timer and its lines
    # and header redraws. The queued page job stays the fallback (a crash here, or a provider's rate limit);
    # exactly-once holds either way. The record just saved under the lock is current: no need to read it again.
    for order in effects.orders:
        try:
            await deliver(ctx, incident.id, order.dedup_key, incident, book=False)
        except PageDeferred:
            pass  # its queued page job waits for the turn
    if not effects.orders:  # the queued page job redraws the header when its order is done
        await ctx.refresh_header(incident.id)


async def page_job(ctx: Incidents, job: Job) -> None:
    try:
        await deliver(ctx, job.payload["incident"], job.payload["key"])
    except PageDeferred as deferred:
        await _defer(ctx, job, deferred)


async def _defer(ctx: Incidents, job: Job, deferred: PageDeferred) -> None:
    """The same job again when the page's turn comes: queued durably like a timer, and not counted as a failed
    delivery (a long wait behind a burst must not dead-letter a page). The channel hears why, once."""
    incident_id, key = job.payload["incident"], job.payload["key"]
    await _hold_escalation(ctx, incident_id, key, deferred.wait_s)  # first: if it fails, the job is retried whole
    await ctx.rt.queue.enqueue("incident.page", job.payload, job_id=job.id, run_at=time.time() + deferred.wait_s)
    log.info("page %s deferred %.1f s: %s", key, deferred.wait_s, deferred)
    await ctx.say(incident_id, f"paced:{key}", *messages.line(
        f"The page to {deferred.provider} waits for the provider's rate limit: it goes out in about "
        f"{messages.format_duration(max(deferred.wait_s, 1))}."))


async def _hold_escalation(ctx: Incidents, incident_id: str, key: str, wait_s: float) -> None:
    """The next level's timeout counts from when this level's page can go, not from when it was decided: a page
    held back by a rate limit pushes the escalation back by its wait (saved, so every worker's timer job sees it;
    a timer job due earlier than this comes back at the new time)."""
    async with ctx.store.lock(incident_id):
        incident = await ctx.store.get(incident_id)
        if incident is None or incident.paging.next_escalation_at is None or incident.paging.level < 1:
            return
        paging = incident.paging
        level, order = paging.levels[paging.level - 1], paging.order(key)
        held_until = time.time() + wait_s + level.ack_timeout_s
        if order is not None and order.level == level.number and held_until > paging.next_escalation_at:
            paging.next_escalation_at = held_until
            await ctx.store.save(incident)


async def deliver(ctx: Incidents, incident_id: str, key: str, incident: Incident | None = None, *,
                  book: bool = True) -> None:
    """Carry out one PageOrder: every delivery once (see the module docstring for what "once" means).
    `incident`: the record as the caller has just saved it, if it has; otherwise it is read. `book=False` (a
    timer's own job) sends and records the provider pages but leaves their timeline entries, the order's `done`
    and the header to the queued page job, which finds them recorded: in a burst, each timer's page then waits
    for the timers before it to send, not to write up."""
    incident = incident or await ctx.store.get(incident_id)
    order = incident.paging.order(key) if incident else None
    if incident is None or order is None or order.done:
        return
    with urgent():  # a page never waits for Slack's per-method budgets (channel set-up does)
        outcomes = await _deliver_routes(ctx, incident, order, book)  # resolved: each unsent one is withheld, says so
    if incident.is_open:
        for i, why in enumerate(order.unpaged if book else []):  # never silently: why a level paged nobody
            await ctx.say(incident.id, f"unpaged:{order.dedup_key}:{i}", *messages.line(
                messages.unpaged_line(order.level, why)))
    if book:
        withheld = outcomes[0] if outcomes and all(outcomes) else ""  # every delivery held back: not a failure
        await _finish_order(ctx, incident_id, order, withheld)


async def _deliver_routes(ctx: Incidents, incident: Incident, order: PageOrder, book: bool) -> list[str | None]:
    """Every delivery that can go now goes: one held back by its provider's rate limit does not hold back the
    others (a P0's Slack DMs do not wait for PagerDuty's budget). Then PageDeferred for the nearest turn; the
    deliveries already made are skipped by their records when the job comes back. Returns, per delivery, why it
    was withheld (None: it went, or had gone)."""
    page = _page(incident, order)  # the channel's link when it is known: a page never waits for Slack
    withdrawn = _withdrawn(incident, order)
    held: list[PageDeferred] = []
    outcomes: list[str | None] = []
    for provider_name, ids in order.routes.items():
        for delivery, targets in await _deliveries(ctx, provider_name, ids):
            try:
                outcomes.append(await _deliver_once(ctx, incident, order, page, provider_name, delivery, targets,
                                                    book, withdrawn))
            except PageDeferred as deferred:
                held.append(deferred)
    if held:
        raise min(held, key=lambda deferred: deferred.wait_s)
    return outcomes


class PageWithdrawn(Exception):
    """Found just before the send: the incident was acknowledged or resolved while the page waited its turn."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _withdrawn(incident: Incident, order: PageOrder) -> str | None:
    """Why what `order` has not sent yet (held back by a rate limit, or its job by a busy queue) is no longer
    sent: "resolved", or "acknowledged" after the order was decided — the provider's alert would open after the
    providers were told. An order decided after the acknowledgement (`/escalate @user`) is a new request and goes."""
    if not incident.is_open:
        return "resolved"
    paging = incident.paging
    if not paging.acknowledged:
        return None
    if order.acks_before is not None:
        return "acknowledged" if paging.acks > order.acks_before else None
    return "acknowledged" if order.ordered_at <= (paging.acked_at or 0.0) else None  # stored before acks counted


async def _withdrawn_now(ctx: Incidents, incident_id: str, order: PageOrder) -> tuple[Incident | None, str | None]:
    """The incident as stored now, and why `order` is withdrawn (None: it goes): the record the job started
    with may be seconds old by the time a lease or a turn came."""
    incident = await ctx.store.get(incident_id)
    return incident, (_withdrawn(incident, order) if incident else "resolved")


async def _deliveries(ctx: Incidents, provider: str, ids: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """One delivery per provider — or, for Slack DMs, one per person (groups expanded), so each person's DM is
    recorded on its own and a retry never DMs someone who already got theirs."""
    if provider != "slack":
        return [(provider, tuple(ids))]
    users: list[str] = []
    for target in ids:
        users.extend(await ctx.group_members(target) if target.startswith("S") else [target])
    return [(f"slack:{user}", (user,)) for user in dict.fromkeys(users)] or [("slack", tuple(ids))]


async def _deliver_once(ctx: Incidents, incident: Incident, order: PageOrder, page: Page, provider_name: str,
                        delivery: str, targets: tuple[str, ...], book: bool = True,
                        withdrawn: str | None = None) -> str | None:
    """Send one delivery unless it went already; why it was withheld instead, or None."""
    field = f"{order.dedup_key}|{delivery}"
    record = await ctx.store.page_record(incident.id, field)
    if record is None and not withdrawn:
        try:
            record = await _send_under_lease(ctx, incident, order, page, provider_name, delivery, targets, field)
        except PageWithdrawn as late:
            withdrawn = late.why
    if record is None:
        await _withhold(ctx, incident, order, provider_name, delivery, field, withdrawn or "resolved")
        return withdrawn or "resolved"
    if incident.is_open and (book or delivery.startswith("slack")):  # a DM'd person may ack at once: note them now
        await _note_page(ctx, incident, order, record, field)
    return None


async def _withhold(ctx: Incidents, incident: Incident, order: PageOrder, provider_name: str, delivery: str,
                    field: str, why: str) -> None:
    """Not sent: acknowledged or resolved (`why`) before it went (it waited for a rate limit, or its job for a
    worker). The timeline says so, and it leaves its provider's waiting line at once."""
    provider = ctx.providers.get(provider_name)
    budget_of = getattr(provider, "budget", None)
    if budget_of is not None:
        await pacer_for(ctx.rt.redis, ctx.store.namespace).leave(budget_of()[0], field)
    # Its own entry id: should the page go after all (an /escalate cleared the acknowledgement before its job came
    # back), its page_sent entry is not taken for a retry of this one.
    await ctx.timeline.record(incident.id, EntryKind.PAGE_WITHHELD, entry_id=f"withheld:{field}", actor="bot",
                              text=f"Not sent: {incident.id} was {why} before this page's turn at "
                                   f"{provider_name}.",
                              data={"dedup_key": order.dedup_key, "delivery": delivery, "severity": order.severity,
                                    "level": order.level, "reason": order.reason, "urgency": order.urgency,
                                    "withheld": why})


async def _send_under_lease(ctx: Incidents, incident: Incident, order: PageOrder, page: Page, provider_name: str,
                            delivery: str, targets: tuple[str, ...], field: str) -> PageRecord:
    """Another worker sending the same delivery holds its lease alive; waiting for it (rather than asking the
    queue for a retry, which counts as a delivery) lets us read its record, or take over once a dead holder's
    short lease lapses."""
    key, token = ctx.store.incident_key(incident.id, "pagelease", field), uuid.uuid4().hex
    try:
        await lease.acquire(ctx.rt.redis, key, token, wait_s=PAGE_LEASE_WAIT_S, ttl_s=ctx.page_lease_s)
    except lease.LeaseBusy:
        raise Retry(f"{field} is being sent by another worker", delay_s=ctx.page_lease_s) from None
    async with lease.kept_alive(ctx.rt.redis, key, token, ctx.page_lease_s):
        record = await ctx.store.page_record(incident.id, field)
        if record is None:
            record = await _send(ctx, order, page, provider_name, delivery, targets)
            if not await ctx.store.record_page(incident.id, field, record):  # another sender's record stands
                record = await ctx.store.page_record(incident.id, field) or record
            elif record.ok:
                await _tell_if_withdrawn(ctx, incident.id, order, field)
    return record


async def _tell_if_withdrawn(ctx: Incidents, incident_id: str, order: PageOrder, field: str) -> None:
    """A send that raced an acknowledgement or a resolve: the providers were told before this page's record
    existed (they are told about recorded pages only), so they are told again — one job per page. Read after the
    record is written, so an ack saved later queues its own job, which finds this record."""
    current, why = await _withdrawn_now(ctx, incident_id, order)
    if current is not None and why is not None:
        action = "resolve" if why == "resolved" else "acknowledge"
        await notify_providers(ctx, current, action, f"{action}:{field}")


async def _send(ctx: Incidents, order: PageOrder, page: Page, provider_name: str, delivery: str,
                targets: tuple[str, ...]) -> PageRecord:
    provider = ctx.providers.get(provider_name)
    if provider is None:
        return PageRecord(dedup_key=order.dedup_key, delivery=delivery, severity=order.severity, level=order.level,
                          ok=False, error=f"The page to {provider_name} was not sent: no such provider is "
                                          f"configured (check PAGING_POLICY_FILE).")
    budget = await _wait_turn(ctx, provider, f"{order.dedup_key}|{delivery}", order.severity)
    _, why = await _withdrawn_now(ctx, page.incident_id, order)  # after the lease's and the turn's waits
    if why is not None:
        raise PageWithdrawn(why)
    answer = await provider.trigger(msgspec.structs.replace(page, targets=targets))
    result = await _unless_throttled(ctx, order, provider_name, answer, budget)
    for count in ctx.rt.hooks.page_outcomes:  # chatops_pages_total{provider,outcome}
        count(provider_name, result.ok)
    return PageRecord(dedup_key=order.dedup_key, delivery=delivery, severity=order.severity, level=order.level,
                      ok=result.ok, error=result.error, provider_ref=result.provider_ref)


async def _unless_throttled(ctx: Incidents, order: PageOrder, provider_name: str, result: PageResult,
                            budget: str | None) -> PageResult:
    """The provider's answer, unless it still refused the page for its rate limit after the bounded retries: then
    PageDeferred, not a failure. With a budget of ours, the whole key pauses; without one (Slack DMs), only this
    delivery waits, and past UNBUDGETED_DEFER_LIMIT_S after its order it is a failed page after all."""
    if result.throttled_for is not None and budget:
        pause = await pacer_for(ctx.rt.redis, ctx.store.namespace).pause(budget, result.throttled_for or None)
        raise PageDeferred(provider_name, pause)
    if not result.throttled_for:
        return result
    if time.time() < order.ordered_at + UNBUDGETED_DEFER_LIMIT_S:
        raise PageDeferred(provider_name, result.throttled_for)
    limit = messages.format_duration(UNBUDGETED_DEFER_LIMIT_S)
    return PageResult(result.provider, False, provider_ref=result.provider_ref,
                      error=f"{provider_name} still refused the page for its rate limit {limit} after it was decided.")


async def _wait_turn(ctx: Incidents, provider: Provider, member: str, severity: str) -> str | None:
    """Take this delivery's turn in its provider key's budget (bot/queue/pacing.py): wait a moment for it, or raise
    PageDeferred when it is further off. Returns the budget's name (None: the provider has no budget)."""
    budget_of = getattr(provider, "budget", None)
    if budget_of is None:
        return None
    budget, pace = budget_of()
    pacer = pacer_for(ctx.rt.redis, ctx.store.namespace)
    for _ in range(TURN_TRIES):
        wait = await pacer.turn(budget, pace, member, severity) if pace else await pacer.paused_for(budget)
        if wait == 0:
            return budget
        if wait > SHORT_TURN_S:
            break
        async with slots.parked(wait):  # waiting on the provider's pace: the worker may run another job meanwhile
            await asyncio.sleep(wait)
    raise PageDeferred(provider.name, wait)


async def _note_page(ctx: Incidents, incident: Incident, order: PageOrder, record: PageRecord, field: str) -> None:
    """Timeline entry, incident bookkeeping, and (for a failure) one plain sentence in the channel. Idempotent."""
    kind = EntryKind.PAGE_SENT if record.ok else EntryKind.PAGE_FAILED
    await ctx.timeline.record(incident.id, kind, entry_id=f"page:{field}", actor="bot", at=record.at,
                              text=record.error or "",
                              data={"dedup_key": record.dedup_key, "delivery": record.delivery,
                                    "severity": record.severity, "level": record.level, "reason": order.reason,
                                    "urgency": order.urgency, "provider_ref": record.provider_ref,
                                    "schedule": order.schedules.get(record.delivery.removeprefix("slack:"))})
    user = record.delivery.removeprefix("slack:") if record.delivery.startswith("slack:") else None
    if user or (record.ok and incident.paging.first_paged_at is None):
        await _book_page(ctx, incident.id, record, user)
    if not record.ok and record.error:  # queued: the first page may fail before the channel exists
        await ctx.say(incident.id, f"pagefail:{field}", *messages.line(messages.page_failed_line(record.error)))


async def _book_page(ctx: Incidents, incident_id: str, record: PageRecord, user: str | None) -> None:
    """When paging first reached someone, and who was DM'd (they may then acknowledge). An escalation's page
    skips this write: its incident was first paged long before, and that never changes."""
    async with ctx.store.mutate(incident_id) as current:
        if record.ok and current.paging.first_paged_at is None:
            current.paging.first_paged_at = record.at
        if user and user not in current.paging.slack_paged:
            current.paging.slack_paged.append(user)
    if user and record.ok and current.private:  # nobody can join a private channel by themselves
        await ctx.invite(current, user, f"paged:{user}")


async def _finish_order(ctx: Incidents, incident_id: str, order: PageOrder, withheld: str = "") -> None:
    async with ctx.store.mutate(incident_id) as incident:
        current = incident.paging.order(order.dedup_key)
        if current:
            current.done, current.withheld = True, withheld
    await ctx.refresh_header(incident_id)


def _page(incident: Incident, order: PageOrder) -> Page:
    details: dict[str, Any] = {"status": incident.status, "elapsed_s": int(incident.elapsed_s()),
                               "last_update": incident.last_update, "failing_checks": incident.failing_checks[:10],
                               "service": incident.service, "commander": incident.commander,
                               "reason": order.reason}
    summary = f"{incident.title} — {incident.severity}, {incident.status}"
    if incident.service:
        summary += f", service {incident.service}"
    return Page(incident_id=incident.id, level=order.level, dedup_key=order.dedup_key, title=incident.title,
                severity=order.severity, summary=summary, link=incident.link, details=details,
                urgency=order.urgency)


async def providers_job(ctx: Incidents, job: Job) -> None:
    """Acknowledge or resolve every page that went out, at its provider (PagerDuty, Opsgenie, Slack DMs). These
    events draw on the same rate budget as the pages: past it, the job comes back at its turn (the provider takes
    the same action twice as once)."""
    try:
        with urgent():  # DMs marked acknowledged go before channel set-up, as their pages did
            await _tell_providers(ctx, job)
    except PageDeferred as deferred:
        await ctx.rt.queue.enqueue("incident.providers", job.payload, job_id=job.id,
                                   run_at=time.time() + deferred.wait_s)


async def _tell_providers(ctx: Incidents, job: Job) -> None:
    incident = await ctx.store.get(job.payload["incident"])
    if incident is None:
        return
    action = job.payload["action"]
    records = await ctx.store.page_records(incident.id)
    done: set[tuple[str, str]] = set()
    for record in records.values():
        provider_name = "slack" if record.delivery.startswith("slack") else record.delivery
        if not record.ok or (provider_name, record.dedup_key) in done:
            continue
        done.add((provider_name, record.dedup_key))
        provider = ctx.providers.get(provider_name)
        if provider is None:
            continue
        call = provider.acknowledge if action == "acknowledge" else provider.resolve
        await _wait_turn(ctx, provider, f"{action}:{record.dedup_key}", record.severity)
        result = await call(incident.id, record.level, record.dedup_key)
        if not result.ok:
            log.warning("could not %s %s at %s: %s", action, record.dedup_key, provider_name, result.error)
