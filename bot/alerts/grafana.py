"""`POST /hooks/grafana`: Grafana Alerting's webhook contact point (payload version "1").

One incident per `groupKey` while it is open; each alert is `(fingerprint, startsAt)`. Severity from the
ALERT_SEVERITY_LABEL label, service from the ALERT_SERVICE_LABEL label (ALERT_RULES first).

Auth, either: the contact point's HTTP basic auth (GRAFANA_WEBHOOK_USER / GRAFANA_WEBHOOK_PASSWORD), or its
HMAC signature (hmacConfig): lower-case hex HMAC-SHA256 of the body — of "<timestamp>:<body>" when a timestamp
header is configured, which must then be within ALERT_WINDOW_S — in GRAFANA_WEBHOOK_HMAC_HEADER.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from bot.alerts import auth
from bot.alerts.alertmanager import Alert, group_notice
from bot.alerts.http import Refused, Request
from bot.incidents.notice import AlertNotice, AlertSource
from checks.schema import Meta, Record, field

if TYPE_CHECKING:
    from bot.alerts.service import Alerts

class GrafanaAlert(Alert):
    """Alertmanager's alert, as Grafana sends it: always with a fingerprint."""

    fingerprint: Annotated[str, Meta(min_length=1)]


class GrafanaWebhook(Record):
    version: Literal["1"]
    groupKey: Annotated[str, Meta(min_length=1)]
    status: Literal["firing", "resolved"]
    commonLabels: dict[str, str] = field(default_factory=dict)
    commonAnnotations: dict[str, str] = field(default_factory=dict)
    groupLabels: dict[str, str] = field(default_factory=dict)
    title: str = ""
    alerts: list[GrafanaAlert] = field(default_factory=list)


def configured(ax: Alerts) -> bool:
    s = ax.settings
    return s.grafana_webhook_hmac_secret is not None or s.grafana_webhook_password is not None


async def authenticate(ax: Alerts, request: Request) -> None:
    s = ax.settings
    if s.grafana_webhook_hmac_secret is not None and request.header(s.grafana_webhook_hmac_header):
        return _check_hmac(ax, request)
    user, password = auth.basic_credentials(request)
    wanted = s.grafana_webhook_password.get_secret_value() if s.grafana_webhook_password else ""
    user_ok = auth.same(user, s.grafana_webhook_user) if s.grafana_webhook_user else True
    if not (auth.same(password, wanted) and user_ok):
        raise Refused(401, f"missing or wrong basic auth / {s.grafana_webhook_hmac_header}")


def _check_hmac(ax: Alerts, request: Request) -> None:
    s = ax.settings
    signed = request.body
    if s.grafana_webhook_timestamp_header:
        timestamp = auth.fresh_timestamp(request, s.grafana_webhook_timestamp_header, s.alert_window_s)
        signed = timestamp.encode() + b":" + request.body
    expected = auth.hmac_hex(s.grafana_webhook_hmac_secret.get_secret_value(), signed)  # type: ignore[union-attr]
    if not auth.same(request.header(s.grafana_webhook_hmac_header).lower(), expected):
        raise Refused(401, f"wrong {s.grafana_webhook_hmac_header}")


async def parse(ax: Alerts, request: Request) -> list[AlertNotice]:
    hook = request.model(GrafanaWebhook, "not a Grafana webhook (version 1): ")
    labels = {**hook.groupLabels, **hook.commonLabels}
    title = (hook.commonAnnotations.get("summary") or labels.get("alertname") or hook.title or "Grafana alert")
    return [group_notice(ax, AlertSource.GRAFANA, hook, labels, title)]
