"""The alert intake: any source's `AlertNotice` (bot/incidents/notice.py) opens, annotates and resolves incidents.

The sources (Alertmanager, CloudWatch through SNS, Grafana, Datadog, the generic webhook) live in bot/alerts/;
each turns its payload into a notice. One incident per notice group (`inc:alert:<hash>`) while it is open: a
`firing` notice with a new alert declares it — with the notice's severity and service (its diagnosis starts
with the declaration) — and later notices add their new alerts to its timeline and channel.

What an alert is: an instance, `(fingerprint, starts_at)`. A source gives an alert a new `starts_at` each time
it fires again, so a notice's instances are matched against the instances each incident recorded firing (the
group remembers which incident recorded which instance):

- a firing instance the group never saw joins the open incident, or opens a new one when none is open;
- a resolved instance counts only for the incident that recorded it firing; the incident is resolved (or, with
  ALERT_ON_RESOLVED=annotate, told so in the channel) when every instance it recorded has been seen resolved —
  not because some payload of the group says "resolved";
- for one instance, resolved is final: a `firing` notice of it that arrives later is an older delivery
  arriving late, and changes nothing;
- a replayed or late payload — instances of an earlier incident of the group (now closed), or resolved ones
  never seen firing — changes nothing: no incident, no timeline entry, no message, and a 200 with `"action":
  "ignored"` and a reason, since the sources would retry anything else.
- a notice with a `note` and no instances (CloudWatch INSUFFICIENT_DATA, Datadog "No Data") is said in the
  group's open incident, once, and changes nothing else.

Every notice of a group is handled under that group's lock, and every step is idempotent (timeline entries
and messages are keyed by what they say), because the sources retry on 5xx and send in parallel.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from bot.errors import UserError
from bot.incidents import lifecycle, messages
from bot.incidents.model import Incident, group_hash
from bot.incidents.notice import AlertInstance, AlertNotice
from bot.incidents.service import Incidents
from bot.incidents.timeline import EntryKind
from bot.slack.mrkdwn import inert, one_line

TITLE_MAX = 200
SHOWN_ALERTS = 10  # alerts listed in one channel update; the rest are counted


class Ignored:
    """Why a delivery changed nothing (the `reason` of an `"action": "ignored"` answer)."""

    NO_INCIDENT = "no open incident for this group, and no alert in the delivery is new"
    NOT_OURS = ("no alert in the delivery is new or firing in the group's open incident (a replayed or late "
                "delivery, or alerts resolved before they were seen firing)")


def header(scope: dict, name: str) -> str | None:
    wanted = name.lower().encode()
    for key, value in scope.get("headers") or []:
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None


class Plan(msgspec.Struct):
    """What a notice does to the group's open incident (or to a new one, when it has fired alerts)."""

    fired: list[AlertInstance] = msgspec.field(default_factory=list)
    resolved: list[AlertInstance] = msgspec.field(default_factory=list)
    ignored: int = 0

    @property
    def changes(self) -> list[AlertInstance]:
        return self.fired + self.resolved


async def take(ctx: Incidents, notice: AlertNotice) -> dict[str, Any]:
    """Apply one notice; the answer says what it did (`opened`, `annotated`, `resolved`, `unchanged`,
    `ignored` with a reason)."""
    gh = group_hash(notice.group_key)
    async with ctx.store.lock(f"alert-{gh}"):  # concurrent deliveries of one group must not open two incidents
        current = await _open_incident(ctx, gh)
        if notice.note and not notice.instances:
            return await _note(ctx, notice, current)
        plan = await _plan(ctx, gh, current, notice.instances)
        opened = current is None and bool(plan.fired)
        if opened:
            current = await _open(ctx, notice, gh, plan)
        if current is None:
            return {"incident": None, "action": "ignored", "reason": Ignored.NO_INCIDENT}
        await _record(ctx, notice, gh, current.id, plan, announce=not opened)
        outcome = await _all_resolved(ctx, notice, gh, current, plan)
    return _answer(current.id, plan, "opened" if opened else outcome)


async def _open_incident(ctx: Incidents, gh: str) -> Incident | None:
    """The group's open incident; a pointer to one that was resolved (by a person, say) is dropped."""
    existing_id = await ctx.store.alert_incident(gh)
    existing = await ctx.store.get(existing_id) if existing_id else None
    if existing is not None and not existing.is_open:
        await ctx.store.release_alert(gh, existing.id)
        return None
    return existing


async def _note(ctx: Incidents, notice: AlertNotice, current: Incident | None) -> dict[str, Any]:
    if current is None:
        return {"incident": None, "action": "ignored", "reason": "no open incident for this group to tell"}
    key = f"alert-note:{_digest([notice.note_key or notice.note])}"
    await ctx.timeline.record(current.id, EntryKind.ALERT, entry_id=key, actor=notice.source.value,
                              text=notice.note)
    await ctx.say(current.id, key, *messages.line(f":grey_question: {inert(one_line(notice.note, 500))}"))
    return {"incident": current.id, "action": "annotated"}


async def _plan(ctx: Incidents, gh: str, current: Incident | None, items: list[AlertInstance]) -> Plan:
    items = _once(items)
    keys = [item.key for item in items]
    owners = await ctx.store.alert_owners(gh, keys)
    states = await ctx.store.alert_states(gh, current.id, keys) if current else [None] * len(keys)
    plan = Plan()
    for item, owner, state in zip(items, owners, states, strict=True):
        verdict = _verdict(item.status, owner, state, current.id if current else None)
        if verdict == "fired":
            plan.fired.append(item)
        elif verdict == "resolved":
            plan.resolved.append(item)
        plan.ignored += verdict == "ignored"
    return plan


def _once(items: list[AlertInstance]) -> list[AlertInstance]:
    """Each instance once; resolved wins when a notice lists one twice."""
    found: dict[str, AlertInstance] = {}
    for item in items:
        if item.key not in found or item.status == "resolved":
            found[item.key] = item
    return list(found.values())


def _verdict(status: str, owner: str | None, state: str | None, current: str | None) -> str:
    """What one delivered instance does: `fired` (new), `resolved`, `same` (a retry), or `ignored`: an earlier
    incident's, resolved before it was seen firing, or firing again after this incident saw it resolved."""
    if owner != current and owner is not None:
        return "ignored"
    if state is None:  # never seen, or a crash left its owner recorded but not its state
        return "fired" if status == "firing" else "ignored"
    if state == "firing":
        return "resolved" if status == "resolved" else "same"
    return "same" if status == "resolved" else "ignored"


async def _open(ctx: Incidents, notice: AlertNotice, gh: str, plan: Plan) -> Incident:
    origin = ctx.settings.incidents_channel
    if not origin and not ctx.settings.incident_create_channels:
        raise UserError("alerts cannot open incidents: set INCIDENTS_CHANNEL (channel creation is off)")
    incident, _created = await lifecycle.declare(  # a retry that died after declaring finds it by the trigger
        ctx, title=one_line(notice.title, TITLE_MAX), severity=notice.severity, reporter=notice.source.value,
        origin_channel=origin or "", service=notice.service, source=notice.source.value,
        alert_group_key=notice.group_key, trigger_id=_trigger(gh, plan))
    await ctx.store.claim_alert(gh, incident.id)
    return incident


def _trigger(gh: str, plan: Plan) -> str:
    return "alert-" + _digest([gh, *(item.key for item in plan.fired)])


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()[:20]


async def _record(ctx: Incidents, notice: AlertNotice, gh: str, incident_id: str, plan: Plan, *,
                  announce: bool) -> None:
    """Timeline entries and one channel line for the plan's changes, then their new states. Each step is keyed,
    so a retry that died half-way repeats nothing it already did."""
    for item in plan.changes:
        await ctx.timeline.record(incident_id, EntryKind.ALERT, entry_id=_entry_id(item), actor=notice.source.value,
                                  text=item.summary,
                                  data={"status": item.status, "labels": item.labels, "source": notice.source.value,
                                        "fingerprint": item.fingerprint, "starts_at": item.starts_at,
                                        "ends_at": item.ends_at, "generator_url": item.url})
    if plan.changes and announce:
        await ctx.say(incident_id, "alerts:" + _digest([_entry_id(i) for i in plan.changes]),
                      *messages.line(_update_text(notice, plan.changes)))
    await ctx.store.record_alerts(gh, incident_id, {item.key: item.status for item in plan.changes})


def _entry_id(item: AlertInstance) -> str:
    return f"alert:{item.fingerprint}:{item.status}:{item.starts_at}"


def _update_text(notice: AlertNotice, changes: list[AlertInstance]) -> str:
    lines = [f"• {i.status}: {inert(one_line(i.summary, 200))}" for i in changes[:SHOWN_ALERTS]]
    more = f"\n…and {len(changes) - SHOWN_ALERTS} more" if len(changes) > SHOWN_ALERTS else ""
    return f":bell: {notice.source.title} update:\n" + "\n".join(lines) + more


async def _all_resolved(ctx: Incidents, notice: AlertNotice, gh: str, incident: Incident,
                        plan: Plan) -> str | None:
    """Resolve (or annotate) once every alert instance the incident recorded is resolved. A notice that
    resolved nothing still resolves, in case a retry died before doing it; it never annotates twice."""
    resolving = ctx.settings.alert_on_resolved == "resolve"
    if not (plan.resolved or resolving):
        return None
    firing, recorded = await ctx.store.alert_tally(gh, incident.id)
    if firing or not recorded:
        return None
    if resolving:
        return await _resolve(ctx, notice, incident.id)
    key, who = f"alert-resolved:{recorded}", notice.source.title
    await ctx.timeline.record(incident.id, EntryKind.ALERT, entry_id=key, actor=notice.source.value,
                              text=f"{who} reports every alert of the incident resolved.")
    await ctx.say(incident.id, key, *messages.line(
        f":large_green_circle: {who} reports every alert of the incident resolved. The incident stays "
        "open until someone resolves it: `/incident resolve <what fixed it>`."))
    return "annotated"


async def _resolve(ctx: Incidents, notice: AlertNotice, incident_id: str) -> str | None:
    try:
        await lifecycle.resolve(ctx, incident_id, notice.source.value,
                                f"{notice.source.title}: every alert of the incident resolved.", key="alert-resolved")
    except UserError:  # resolved meanwhile by someone else: nothing left to do
        return None
    return "resolved"


def _answer(incident_id: str, plan: Plan, outcome: str | None) -> dict[str, Any]:
    if outcome in ("opened", "resolved"):
        return {"incident": incident_id, "action": outcome}
    if not plan.changes and plan.ignored:
        return {"incident": incident_id, "action": "ignored", "reason": Ignored.NOT_OURS}
    action = "annotated" if plan.changes or outcome else "unchanged"
    return {"incident": incident_id, "action": action, "new_alerts": len(plan.fired),
            "resolved_alerts": len(plan.resolved)}
