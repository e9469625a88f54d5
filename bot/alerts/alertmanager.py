"""`POST /hooks/alertmanager`: Alertmanager's webhook (v4).

One incident per `groupKey` while it is open; each alert is `(fingerprint, startsAt)` — Alertmanager keeps
`startsAt` while one alert fires and gives it a new one when it fires again. An alert's status is `resolved`
when it says so or when the whole group does. Severity from the ALERT_SEVERITY_LABEL label through
ALERT_SEVERITY_MAP, service from the ALERT_SERVICE_LABEL label (ALERT_RULES first).

Auth: ALERTMANAGER_TOKEN as `Authorization: Bearer <token>` (Alertmanager's `http_config.authorization`) or in
the ALERTMANAGER_SECRET_HEADER header; compared in constant time. Without a token the route answers 404.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Literal, Protocol

from bot.alerts import auth
from bot.alerts.http import Refused, Request
from bot.incidents.notice import AlertInstance, AlertNotice, AlertSource
from checks.schema import Meta, Record, field

if TYPE_CHECKING:
    from bot.alerts.service import Alerts

TITLE_MAX = 200


class Alert(Record):
    status: Literal["firing", "resolved"]
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    startsAt: str = ""
    endsAt: str = ""
    generatorURL: str = ""
    fingerprint: str = ""


class AlertmanagerWebhook(Record):
    version: Literal["4"]
    groupKey: Annotated[str, Meta(min_length=1)]
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = field(default_factory=dict)
    commonLabels: dict[str, str] = field(default_factory=dict)
    commonAnnotations: dict[str, str] = field(default_factory=dict)
    externalURL: str = ""
    alerts: list[Alert] = field(default_factory=list)
    truncatedAlerts: int = 0


class AlertGroup(Protocol):
    """What Alertmanager's and Grafana's webhooks share: a group and its alerts."""

    groupKey: str  # noqa: N815 (the payload's name)
    status: str
    alerts: Sequence[Alert]


def configured(ax: Alerts) -> bool:
    return ax.incident_settings.alertmanager_token is not None


async def authenticate(ax: Alerts, request: Request) -> None:
    settings = ax.incident_settings
    bearer = request.header("authorization")
    offered = bearer[7:].strip() if bearer[:7].lower() == "bearer " else ""
    offered = offered or request.header(settings.alertmanager_secret_header)
    if not auth.same(offered, settings.alertmanager_token.get_secret_value()):
        raise Refused(401, "missing or wrong bearer token / secret header")


async def parse(ax: Alerts, request: Request) -> list[AlertNotice]:
    hook = request.model(AlertmanagerWebhook, "not an Alertmanager v4 webhook: ")
    labels = {**hook.groupLabels, **hook.commonLabels}
    title = (hook.commonAnnotations.get("summary") or hook.commonAnnotations.get("title")
             or labels.get("alertname") or "Alertmanager alert")
    return [group_notice(ax, AlertSource.ALERTMANAGER, hook, labels, title)]


def group_notice(ax: Alerts, source: AlertSource, hook: AlertGroup, labels: dict[str, str], title: str) -> AlertNotice:
    """An alert group in Alertmanager's shape (Alertmanager's webhook, and Grafana's, which copies it)."""
    names = ax.incident_settings
    return AlertNotice(
        source, hook.groupKey, hook.status, title[:TITLE_MAX],
        ax.mapping.severity(source, labels, labels.get(names.alert_severity_label)),  # type: ignore[arg-type]
        ax.mapping.service(source, labels, [labels.get(names.alert_service_label)]),
        [_instance(alert, hook.status) for alert in hook.alerts])


def _instance(alert: Alert, group_status: str) -> AlertInstance:
    fingerprint = alert.fingerprint or hashlib.sha256(json.dumps(alert.labels, sort_keys=True).encode()
                                                      ).hexdigest()[:16]
    status = "resolved" if group_status == "resolved" else alert.status
    summary = alert.annotations.get("summary") or alert.labels.get("alertname") or fingerprint
    return AlertInstance(fingerprint, alert.startsAt, status, summary, alert.labels,  # type: ignore[arg-type]
                         alert.endsAt, alert.generatorURL)
