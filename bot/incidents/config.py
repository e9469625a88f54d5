"""Incident settings, read from the environment when asked (never at import time). Names carry no prefix.

    INCIDENT_CHANNEL_PREFIX     inc           channels are named <prefix>-<yyyymmdd>-<n>-<slug>
    INCIDENT_CREATE_CHANNELS    true          false: the incident lives in a thread of the channel it was declared in
    INCIDENTS_CHANNEL           (none)        channel id where every declaration is announced (and where alerts
                                              open their thread when channel creation is off)
    INCIDENT_RESPONDERS         (none)        comma-separated Slack user ids invited to every incident channel
    INCIDENT_AUDIT_INTERVAL_S   30            how often the auditor re-arms stalled declarations and timers
    INCIDENT_ADMINS             (none)        comma-separated Slack user (U…) and user-group (S…) ids who may do
                                              anything to any incident, and are not rate-limited when declaring
    INCIDENT_ROLES              (none)        comma-separated extra role names (`security,customer_liaison`), on
                                              top of commander, scribe, comms and tech_lead
    INCIDENT_DECLARE_PER_USER   3             declarations one person may make per window (admins: no limit)
    INCIDENT_DECLARE_PER_WORKSPACE  20        declarations made from Slack per window, everyone together
    INCIDENT_DECLARE_WINDOW_S   600           the sliding window of both limits, in seconds
    PAGING_POLICY_FILE          (none)        YAML paging policy (bot/paging/policy.py): who is paged per severity,
                                              ack timeouts, repeats, status-update cadence, who may escalate and
                                              change severity; without it the runbook defaults apply (and
                                              PAGING_ONCALL, PAGING_MANAGERS, PAGERDUTY_ROUTING_KEY, OPSGENIE_API_KEY)
    PAGERDUTY_WEBHOOK_SECRET    (none)        comma-separated v3 webhook secrets; POST /hooks/pagerduty answers 404
                                              without one
    ALERTMANAGER_TOKEN                                    guards POST /hooks/alertmanager (off without it):
                                                          `Authorization: Bearer <token>` or the header below
    ALERTMANAGER_SECRET_HEADER  X-Alertmanager-Secret
    ALERT_SEVERITY_LABEL        severity      ALERT_SERVICE_LABEL  service
    ALERT_SEVERITY_MAP          {"critical":"P0","page":"P0","error":"P1","high":"P1","warning":"P2",
                                 "medium":"P2","info":"P3","low":"P3"}   label value → P0..P3 (JSON)
    ALERT_DEFAULT_SEVERITY      P2            when the label is missing or unmapped
    ALERT_ON_RESOLVED           resolve       resolve | annotate (leave the incident open, note it in the channel)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from bot.settings import EnvSettings, NoDecode, invalid
from checks.schema import Meta, Secret, field

SEVERITIES = ("P0", "P1", "P2", "P3")
DEFAULT_ALERT_SEVERITY_MAP = {"critical": "P0", "page": "P0", "error": "P1", "high": "P1", "warning": "P2",
                              "medium": "P2", "info": "P3", "low": "P3"}
_PREFIX = re.compile(r"^[a-z0-9][a-z0-9_-]{0,19}$")
_SLACK_ID = re.compile(r"^[UWS][A-Z0-9]+$")
_ROLE = re.compile(r"^[a-z][a-z0-9_]{1,29}$")


def _split_ids(text: str) -> list[str]:
    return [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]


class IncidentSettings(EnvSettings):
    incident_channel_prefix: str = "inc"
    incident_create_channels: bool = True
    incidents_channel: str | None = None
    incident_responders: Annotated[list[str], NoDecode(_split_ids)] = []
    incident_audit_interval_s: Annotated[float, Meta(gt=0)] = 30.0
    incident_admins: Annotated[list[str], NoDecode(_split_ids)] = []
    incident_roles: Annotated[list[str], NoDecode(_split_ids)] = []
    incident_declare_per_user: Annotated[int, Meta(ge=1)] = 3
    incident_declare_per_workspace: Annotated[int, Meta(ge=1)] = 20
    incident_declare_window_s: Annotated[float, Meta(gt=0)] = 600.0

    paging_policy_file: Path | None = None
    pagerduty_webhook_secret: Secret | None = None

    alertmanager_token: Secret | None = None
    alertmanager_secret_header: str = "X-Alertmanager-Secret"
    alert_severity_label: str = "severity"
    alert_service_label: str = "service"
    alert_severity_map: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ALERT_SEVERITY_MAP))
    alert_default_severity: Literal["P0", "P1", "P2", "P3"] = "P2"
    alert_on_resolved: Literal["resolve", "annotate"] = "resolve"

    def __post_init__(self) -> None:
        self.incident_channel_prefix = _channel_prefix(self.incident_channel_prefix)
        _check_slack_ids("incident_responders", self.incident_responders)
        _check_slack_ids("incident_admins", self.incident_admins)
        self.incident_roles = _role_names(self.incident_roles)
        self.alert_severity_map = _alert_map(self.alert_severity_map)

    def webhook_secrets(self) -> list[str]:
        raw = self.pagerduty_webhook_secret.get_secret_value() if self.pagerduty_webhook_secret else ""
        return [part.strip() for part in raw.split(",") if part.strip()]

    def secrets(self) -> list[str]:
        values = [self.pagerduty_webhook_secret, self.alertmanager_token]
        return [v.get_secret_value() for v in values if v and v.get_secret_value()]


def _channel_prefix(value: str) -> str:
    value = value.strip().lower()
    if not _PREFIX.match(value):
        raise invalid("incident_channel_prefix", "must be 1-20 lowercase letters, digits, '-' or '_' (a Slack "
                                                 "channel name prefix)")
    return value


def _role_names(value: list[str]) -> list[str]:
    names = [name.strip().lower().replace("-", "_") for name in value]
    for name in names:
        if not _ROLE.match(name):
            raise invalid("incident_roles", f"{name!r} is not a role name: use 2-30 letters, digits or '_'")
    return names


def _check_slack_ids(variable: str, value: list[str]) -> None:
    for item in value:
        if not _SLACK_ID.match(item):
            raise invalid(variable, f"{item!r} is not a Slack user (U…/W…) or user group (S…) id")


def _alert_map(value: dict[str, str]) -> dict[str, str]:
    for label, severity in value.items():
        if severity not in SEVERITIES:
            raise invalid("alert_severity_map", f"{label!r} maps to {severity!r}; use P0..P3")
    return {k.lower(): v for k, v in value.items()}


def load_incident_settings(**overrides: object) -> IncidentSettings:
    """Read the environment; a validation error becomes one ConfigError line naming the variable."""
    return IncidentSettings.from_env(**overrides)
