"""What an alert source tells the incident intake (bot/incidents/alerts.py), whatever the source.

Each source's parser (bot/alerts/) turns its payload into one `AlertNotice`: the group it concerns, whether the
group fires or has resolved, and its alert instances. An instance is identified by `(fingerprint, starts_at)`:
the same alert firing again later is a new instance, so a replayed "resolved" of an older firing resolves
nothing newer. Severity and service are already mapped by the source's rules when the notice is made.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

import msgspec

Status = Literal["firing", "resolved"]


class AlertSource(StrEnum):
    """Every source that may open an incident; the value is what `Incident.source` and timelines record."""

    ALERTMANAGER = "alertmanager"
    CLOUDWATCH = "cloudwatch"
    GRAFANA = "grafana"
    DATADOG = "datadog"
    GENERIC = "generic"

    @property
    def title(self) -> str:  # type: ignore[override]  # the name people read; str.title is not needed here
        return _TITLES[self]


_TITLES = {AlertSource.ALERTMANAGER: "Alertmanager", AlertSource.CLOUDWATCH: "CloudWatch",
           AlertSource.GRAFANA: "Grafana", AlertSource.DATADOG: "Datadog", AlertSource.GENERIC: "Webhook"}


class AlertInstance(msgspec.Struct, frozen=True):
    fingerprint: str  # stable for one alert (an alarm ARN, Alertmanager's fingerprint, a dedup key)
    starts_at: str  # when this firing of it began; "" when the source cannot tell
    status: Status
    summary: str
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    ends_at: str = ""
    url: str = ""

    @property
    def key(self) -> str:
        return f"{self.fingerprint}|{self.starts_at}"


class AlertNotice(msgspec.Struct, frozen=True):
    source: AlertSource
    group_key: str  # one incident per group while it is open
    status: Status  # the group's; an instance is resolved when it says so or the group does
    title: str
    severity: Literal["P0", "P1", "P2", "P3"]
    service: str | None  # a service of the services file, or None
    instances: list[AlertInstance] = msgspec.field(default_factory=list)
    note: str = ""  # said in the group's open incident without changing it (CloudWatch INSUFFICIENT_DATA)
    note_key: str = ""  # what makes the note unique, so a retried delivery says it once
