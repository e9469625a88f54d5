"""`POST /hooks/generic`: a signed JSON webhook for any tool that can compute an HMAC.

    {"title": "...", "severity": "P0".."P3", "service": "api", "dedup_key": "...",
     "status": "firing" | "resolved", "description": "..."}
    X-Chatops-Timestamp: <unix seconds>
    X-Chatops-Signature: v1=<hex HMAC-SHA256("<timestamp>.<body>", GENERIC_WEBHOOK_SECRET)>

A timestamp more than ALERT_WINDOW_S (5 min) away from now, or a wrong signature, gets 401. One incident per
`dedup_key` while it is open; a firing after the resolution of the last one opens a new incident.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Annotated, Literal

from bot.alerts import auth
from bot.alerts.http import Refused, Request
from bot.incidents.notice import AlertInstance, AlertNotice, AlertSource
from checks.schema import Meta, Record

if TYPE_CHECKING:
    from bot.alerts.service import Alerts

TIMESTAMP, SIGNATURE = "X-Chatops-Timestamp", "X-Chatops-Signature"


class GenericAlert(Record):
    title: Annotated[str, Meta(min_length=1, max_length=500)]
    severity: Literal["P0", "P1", "P2", "P3"]
    service: str | None = None
    dedup_key: Annotated[str, Meta(min_length=1, max_length=500)]
    status: Literal["firing", "resolved"]
    description: Annotated[str, Meta(max_length=10_000)] = ""


def configured(ax: Alerts) -> bool:
    return ax.settings.generic_webhook_secret is not None


async def authenticate(ax: Alerts, request: Request) -> None:
    timestamp = auth.fresh_timestamp(request, TIMESTAMP, ax.settings.alert_window_s)
    secret = ax.settings.generic_webhook_secret.get_secret_value()
    expected = "v1=" + auth.hmac_hex(secret, timestamp.encode() + b"." + request.body)
    offered = [part.strip() for part in request.header(SIGNATURE).split(",")]  # several while a secret rotates
    if not any(auth.same(o, expected) for o in offered):
        raise Refused(401, f"missing or wrong {SIGNATURE}: v1=<hex HMAC-SHA256 of \"<timestamp>.<body>\">")


async def parse(ax: Alerts, request: Request) -> list[AlertNotice]:
    alert = request.model(GenericAlert, "")
    at = float(request.header(TIMESTAMP))
    key = hashlib.sha256(alert.dedup_key.encode()).hexdigest()[:24]
    async with ax.alert_lock(f"generic-{key}"):
        start = await (ax.episodes.fire(key, at) if alert.status == "firing" else ax.episodes.end(key, at))
    labels = {"dedup_key": alert.dedup_key, "severity": alert.severity, "service": alert.service or ""}
    instances = [AlertInstance(alert.dedup_key, start, alert.status, alert.description or alert.title, labels)]
    return [AlertNotice(
        AlertSource.GENERIC, f"generic:{alert.dedup_key}", alert.status, alert.title,
        ax.mapping.severity(AlertSource.GENERIC, labels, alert.severity),  # type: ignore[arg-type]
        ax.mapping.service(AlertSource.GENERIC, labels, [alert.service]),
        instances if start is not None else [])]
