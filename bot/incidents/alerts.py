"""`POST /hooks/alertmanager`: Alertmanager (webhook v4) opens, annotates and resolves incidents.

One incident per `groupKey` while it is open (`inc:alert:<hash>`): the first `firing` delivery declares it —
severity from the `severity` label through ALERT_SEVERITY_MAP, service from the `service` label when the
services file knows it (its diagnosis starts with the declaration) — and later deliveries only add alerts
whose `fingerprint` is new to the timeline and the channel. `resolved` resolves the incident (or, with
ALERT_ON_RESOLVED=annotate, says so in the channel). Alertmanager retries on 5xx, so every step is idempotent.

Auth: ALERTMANAGER_TOKEN as `Authorization: Bearer <token>` (Alertmanager's `http_config.authorization`) or in
the ALERTMANAGER_SECRET_HEADER header; compared in constant time. Without a token the route answers 404.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.errors import UserError
from bot.incidents import lifecycle, messages
from bot.incidents.model import group_hash
from bot.incidents.service import Incidents
from bot.incidents.timeline import EntryKind
from bot.slack.mrkdwn import inert, one_line

log = logging.getLogger("bot.incidents")

Response = tuple[int, dict[str, str], bytes]
TITLE_MAX = 200


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


async def handle_webhook(ctx: Incidents, hook: AlertmanagerWebhook) -> dict[str, Any]:
    gh = group_hash(hook.groupKey)
    async with ctx.store.lock(f"alert-{gh}"):  # concurrent deliveries of one group must not open two incidents
        existing_id = await ctx.store.alert_incident(gh)
        existing = await ctx.store.get(existing_id) if existing_id else None
        if existing is not None and not existing.is_open:
            await ctx.store.release_alert(gh, existing.id)
            existing = None
        if hook.status == "firing" and existing is None:
            incident = await _open(ctx, hook, gh)
            await _note_new_alerts(ctx, incident.id, hook, announce=False)
            return {"incident": incident.id, "action": "opened"}
    if existing is None:
        return {"incident": None, "action": "ignored", "reason": "no open incident for this group"}
    new = await _note_new_alerts(ctx, existing.id, hook, announce=True)
    if hook.status == "resolved":
        key = f"alert-resolved:{gh}"
        if ctx.settings.alert_on_resolved == "resolve":
            await lifecycle.resolve(ctx, existing.id, "alertmanager",
                                    "Alertmanager: every alert of the group resolved.", key=key)
            return {"incident": existing.id, "action": "resolved"}
        await ctx.timeline.record(existing.id, EntryKind.ALERT, entry_id=key, actor="alertmanager",
                                  text="Alertmanager reports every alert of the group resolved.")
        await ctx.say(existing.id, key, *messages.line(
            ":large_green_circle: Alertmanager reports every alert of the group resolved. The incident stays "
            "open until someone resolves it: `/incident resolve <what fixed it>`."))
        return {"incident": existing.id, "action": "annotated"}
    return {"incident": existing.id, "action": "annotated" if new else "unchanged", "new_alerts": new}


async def _open(ctx: Incidents, hook: AlertmanagerWebhook, gh: str) -> Any:
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
    incident, _created = await lifecycle.declare(
        ctx, title=title, severity=severity, reporter="alertmanager", origin_channel=origin or "",  # type: ignore
        service=service, source="alertmanager", alert_group_key=hook.groupKey)
    await ctx.store.claim_alert(gh, incident.id)
    return incident


async def _note_new_alerts(ctx: Incidents, incident_id: str, hook: AlertmanagerWebhook, *, announce: bool) -> int:
    """Timeline entries for alerts (by fingerprint and status) not seen before; one channel line for them."""
    seen_key = ctx.store.key(incident_id, "alerts")
    fresh = []
    for alert in hook.alerts:
        fingerprint = alert.fingerprint or hashlib.sha256(json.dumps(alert.labels, sort_keys=True).encode()
                                                          ).hexdigest()[:16]
        if await ctx.rt.redis.sadd(seen_key, f"{fingerprint}:{alert.status}:{alert.startsAt}"):
            fresh.append((fingerprint, alert))
    for fingerprint, alert in fresh:
        summary = alert.annotations.get("summary") or alert.labels.get("alertname") or fingerprint
        await ctx.timeline.record(incident_id, EntryKind.ALERT, entry_id=f"alert:{fingerprint}:{alert.status}:{alert.startsAt}",
                                  actor="alertmanager", text=summary,
                                  data={"status": alert.status, "labels": alert.labels, "fingerprint": fingerprint,
                                        "starts_at": alert.startsAt, "ends_at": alert.endsAt,
                                        "generator_url": alert.generatorURL})
    if fresh and announce:
        lines = [f"• {a.status}: {inert(one_line(a.annotations.get('summary') or a.labels.get('alertname') or f, 200))}"
                 for f, a in fresh[:10]]
        more = f"\n…and {len(fresh) - 10} more" if len(fresh) > 10 else ""
        await ctx.say(incident_id, f"alerts:{uuid.uuid4().hex[:12]}", *messages.line(
            ":bell: Alertmanager update:\n" + "\n".join(lines) + more))
    return len(fresh)
