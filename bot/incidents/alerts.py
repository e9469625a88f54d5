"""`POST /hooks/alertmanager`: Alertmanager (webhook v4) opens, annotates and resolves incidents.

One incident per `groupKey` while it is open (`inc:alert:<hash>`): a `firing` delivery with a new alert declares
it — severity from the `severity` label through ALERT_SEVERITY_MAP, service from the `service` label when the
services file knows it (its diagnosis starts with the declaration) — and later deliveries add their new alerts
to its timeline and channel.

What an alert is: an instance, `(fingerprint, startsAt)`. Alertmanager keeps `startsAt` for as long as one alert
fires and gives it a new one when it fires again, so a delivery's alerts are matched against the instances
each incident recorded firing (the group remembers which incident recorded which instance, for 90 days; an
alert without a fingerprint gets one from its labels):

- a firing instance the group never saw joins the open incident, or opens a new one when none is open;
- a resolved instance counts only for the incident that recorded it firing; the incident is resolved (or, with
  ALERT_ON_RESOLVED=annotate, told so in the channel) when every instance it recorded has been seen resolved —
  not because some payload of the group says "resolved". An alert's status is `resolved` when it says so or
  when the whole group does;
- for one instance, resolved is final: a `firing` delivery of it that arrives later is an older delivery
  arriving late, and changes nothing;
- a replayed or late payload — instances of an earlier incident of the group (now closed, by Alertmanager or
  by a person), or resolved ones never seen firing — changes nothing: no incident, no timeline entry, no
  message, and a 200 with `"action": "ignored"` and a reason, since Alertmanager would retry anything else.

Every delivery of a group is handled under that group's lock, and every step is idempotent (timeline entries
and messages are keyed by what they say), because Alertmanager retries on 5xx and sends in parallel.

Auth: ALERTMANAGER_TOKEN as `Authorization: Bearer <token>` (Alertmanager's `http_config.authorization`) or in
the ALERTMANAGER_SECRET_HEADER header; compared in constant time. Without a token the route answers 404.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.errors import UserError
from bot.incidents import lifecycle, messages
from bot.incidents.model import Incident, group_hash
from bot.incidents.service import Incidents
from bot.incidents.timeline import EntryKind
from bot.slack.mrkdwn import inert, one_line

log = logging.getLogger("bot.incidents")

Response = tuple[int, dict[str, str], bytes]
TITLE_MAX = 200
SHOWN_ALERTS = 10  # alerts listed in one channel update; the rest are counted


class Ignored:
    """Why a delivery changed nothing (the `reason` of an `"action": "ignored"` answer)."""

    NO_INCIDENT = "no open incident for this group, and no alert in the delivery is new"
    NOT_OURS = ("no alert in the delivery is new or firing in the group's open incident (a replayed or late "
                "delivery, or alerts resolved before they were seen firing)")


class Alert(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str = ""
    endsAt: str = ""
    generatorURL: str = ""
    fingerprint: str = ""


class AlertmanagerWebhook(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: Literal["4"]
    groupKey: str = Field(min_length=1)
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[Alert] = Field(default_factory=list)
    truncatedAlerts: int = 0


def _json(status: int, data: dict[str, Any]) -> Response:
    return status, {"content-type": "application/json"}, json.dumps(data).encode()


def header(scope: dict, name: str) -> str | None:
    wanted = name.lower().encode()
    for key, value in scope.get("headers") or []:
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None


def authorized(ctx: Incidents, scope: dict) -> bool:
    token = ctx.settings.alertmanager_token.get_secret_value() if ctx.settings.alertmanager_token else ""
    bearer = header(scope, "authorization") or ""
    offered = bearer[7:].strip() if bearer[:7].lower() == "bearer " else ""
    offered = offered or (header(scope, ctx.settings.alertmanager_secret_header) or "").strip()
    return hmac.compare_digest(offered.encode(), token.encode()) and bool(token)


def make_route(ctx: Incidents) -> Any:
    async def alertmanager(scope: dict, body: bytes) -> Response:
        if not ctx.settings.alertmanager_token:
            return _json(404, {"error": "the Alertmanager webhook is off: set ALERTMANAGER_TOKEN"})
        if not authorized(ctx, scope):
            return _json(401, {"error": "missing or wrong bearer token / secret header"})
        try:
            hook = AlertmanagerWebhook.model_validate_json(body)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ())) or "body"
            return _json(400, {"error": f"not an Alertmanager v4 webhook: {where}: {err.get('msg')}"})
        try:
            return _json(200, await handle_webhook(ctx, hook))
        except UserError as exc:
            return _json(409, {"error": str(exc)})

    return alertmanager


class Instance(NamedTuple):
    """One alert instance of a delivery: `key` is `<fingerprint>|<startsAt>`."""

    key: str
    fingerprint: str
    status: str
    alert: Alert


@dataclass
class Plan:
    """What a delivery does to the group's open incident (or to a new one, when it has fired alerts)."""

    fired: list[Instance] = field(default_factory=list)
    resolved: list[Instance] = field(default_factory=list)
    ignored: int = 0

    @property
    def changes(self) -> list[Instance]:
        return self.fired + self.resolved


async def handle_webhook(ctx: Incidents, hook: AlertmanagerWebhook) -> dict[str, Any]:
    gh = group_hash(hook.groupKey)
    items = instances(hook)
    async with ctx.store.lock(f"alert-{gh}"):  # concurrent deliveries of one group must not open two incidents
        current = await _open_incident(ctx, gh)
        plan = await _plan(ctx, gh, current, items)
        opened = current is None and bool(plan.fired)
        if opened:
            current = await _open(ctx, hook, gh, plan)
        if current is None:
            return {"incident": None, "action": "ignored", "reason": Ignored.NO_INCIDENT}
        await _record(ctx, gh, current.id, plan, announce=not opened)
        outcome = await _all_resolved(ctx, gh, current.id, plan)
    return _answer(current.id, plan, "opened" if opened else outcome)


def instances(hook: AlertmanagerWebhook) -> list[Instance]:
    """The delivery's alert instances, once each (resolved wins when one is listed twice)."""
    found: dict[str, Instance] = {}
    for alert in hook.alerts:
        fingerprint = alert.fingerprint or hashlib.sha256(json.dumps(alert.labels, sort_keys=True).encode()
                                                          ).hexdigest()[:16]
        status = "resolved" if hook.status == "resolved" else alert.status
        key = f"{fingerprint}|{alert.startsAt}"
        if key not in found or status == "resolved":
            found[key] = Instance(key, fingerprint, status, alert)
    return list(found.values())


async def _open_incident(ctx: Incidents, gh: str) -> Incident | None:
    """The group's open incident; a pointer to one that was resolved (by a person, say) is dropped."""
    existing_id = await ctx.store.alert_incident(gh)
    existing = await ctx.store.get(existing_id) if existing_id else None
    if existing is not None and not existing.is_open:
        await ctx.store.release_alert(gh, existing.id)
        return None
    return existing


async def _plan(ctx: Incidents, gh: str, current: Incident | None, items: list[Instance]) -> Plan:
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


async def _open(ctx: Incidents, hook: AlertmanagerWebhook, gh: str, plan: Plan) -> Incident:
    settings = ctx.settings
    origin = settings.incidents_channel
    if not origin and not settings.incident_create_channels:
        raise UserError("alerts cannot open incidents: set INCIDENTS_CHANNEL (channel creation is off)")
    labels = {**hook.groupLabels, **hook.commonLabels}
    raw_severity = (labels.get(settings.alert_severity_label) or "").lower()
    severity = settings.alert_severity_map.get(raw_severity, settings.alert_default_severity)
    service = labels.get(settings.alert_service_label)
    known = ctx.rt.services().services
    service = service if service in known else None
    title = one_line(hook.commonAnnotations.get("summary") or hook.commonAnnotations.get("title")
                     or labels.get("alertname") or "Alertmanager alert", TITLE_MAX)
    incident, _created = await lifecycle.declare(  # a retry that died after declaring finds it by the trigger
        ctx, title=title, severity=severity, reporter="alertmanager", origin_channel=origin or "",  # type: ignore
        service=service, source="alertmanager", alert_group_key=hook.groupKey, trigger_id=_trigger(gh, plan))
    await ctx.store.claim_alert(gh, incident.id)
    return incident


def _trigger(gh: str, plan: Plan) -> str:
    return "alert-" + _digest([gh, *(item.key for item in plan.fired)])


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()[:20]


async def _record(ctx: Incidents, gh: str, incident_id: str, plan: Plan, *, announce: bool) -> None:
    """Timeline entries and one channel line for the plan's changes, then their new states. Each step is keyed,
    so a retry that died half-way repeats nothing it already did."""
    for item in plan.changes:
        await ctx.timeline.record(incident_id, EntryKind.ALERT, entry_id=_entry_id(item), actor="alertmanager",
                                  text=_summary(item),
                                  data={"status": item.status, "labels": item.alert.labels,
                                        "fingerprint": item.fingerprint, "starts_at": item.alert.startsAt,
                                        "ends_at": item.alert.endsAt, "generator_url": item.alert.generatorURL})
    if plan.changes and announce:
        await ctx.say(incident_id, "alerts:" + _digest([_entry_id(i) for i in plan.changes]),
                      *messages.line(_update_text(plan.changes)))
    await ctx.store.record_alerts(gh, incident_id, {item.key: item.status for item in plan.changes})


def _entry_id(item: Instance) -> str:
    return f"alert:{item.fingerprint}:{item.status}:{item.alert.startsAt}"


def _summary(item: Instance) -> str:
    return item.alert.annotations.get("summary") or item.alert.labels.get("alertname") or item.fingerprint


def _update_text(changes: list[Instance]) -> str:
    lines = [f"• {i.status}: {inert(one_line(_summary(i), 200))}" for i in changes[:SHOWN_ALERTS]]
    more = f"\n…and {len(changes) - SHOWN_ALERTS} more" if len(changes) > SHOWN_ALERTS else ""
    return ":bell: Alertmanager update:\n" + "\n".join(lines) + more


async def _all_resolved(ctx: Incidents, gh: str, incident_id: str, plan: Plan) -> str | None:
    """Resolve (or annotate) once every alert instance the incident recorded is resolved. A delivery that
    resolved nothing still resolves, in case a retry died before doing it; it never annotates twice."""
    resolving = ctx.settings.alert_on_resolved == "resolve"
    if not (plan.resolved or resolving):
        return None
    firing, recorded = await ctx.store.alert_tally(gh, incident_id)
    if firing or not recorded:
        return None
    if resolving:
        return await _resolve(ctx, incident_id)
    key = f"alert-resolved:{recorded}"
    await ctx.timeline.record(incident_id, EntryKind.ALERT, entry_id=key, actor="alertmanager",
                              text="Alertmanager reports every alert of the incident resolved.")
    await ctx.say(incident_id, key, *messages.line(
        ":large_green_circle: Alertmanager reports every alert of the incident resolved. The incident stays "
        "open until someone resolves it: `/incident resolve <what fixed it>`."))
    return "annotated"


async def _resolve(ctx: Incidents, incident_id: str) -> str | None:
    try:
        await lifecycle.resolve(ctx, incident_id, "alertmanager",
                                "Alertmanager: every alert of the incident resolved.", key="alert-resolved")
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
