"""CloudWatch alarms, as SNS delivers them: a metric or composite alarm's own JSON, or an EventBridge
"CloudWatch Alarm State Change" event sent on to the topic.

ALARM fires, OK resolves, INSUFFICIENT_DATA is said in the alarm's open incident and changes nothing. One
incident per alarm (its ARN) while it is open; an alert instance is the alarm ARN plus the time of its ALARM
transition. An OK resolves the firing it follows: the one EventBridge names as the previous state, or else the
latest ALARM transition seen before the OK's own time — so an old OK, replayed, resolves nothing newer.

SNS keeps no order, so an OK can arrive before the ALARM it ends. Every OK's time is remembered (per alarm, for
SNS_MAX_AGE_S: an ALARM published longer ago is refused anyway). An ALARM with a remembered OK after it and no
other ALARM in between had already cleared when it arrived: it still opens its incident — the alarm did fire, and
the on-call engineer should see that it did and for how long — and the same delivery then resolves it, which
resolves the incident at once or, with ALERT_ON_RESOLVED=annotate, says so in its channel. An OK older than the
ALARM changes nothing.

Service (ALERT_RULES first; rules see `alarm_name`, `namespace`, `metric`, `account`, `region`, `state` and
`dimension.<Name>`): the services file's `aws.alarm_prefixes` against the alarm name, then its resources against
the alarm's dimension values (LoadBalancer, TargetGroup, FunctionName, TableName, QueueName,
DBInstanceIdentifier, DistributionId, BucketName), then an alarm tag `service` (EventBridge with tags).
Severity: ALERT_RULES, then an alarm tag `severity` (EventBridge), then `severity=<value>` in the alarm's
description (AlarmDescription: the only free text every message carries), else ALERT_DEFAULT_SEVERITY; a value
other than P0..P3 goes through ALERT_SEVERITY_MAP.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from msgspec.structs import replace

from bot.alerts.http import Refused, Reply
from bot.incidents.notice import AlertInstance, AlertNotice, AlertSource

if TYPE_CHECKING:
    from bot.alerts.service import Alerts

EVENT = "CloudWatch Alarm State Change"
# dimension name → the services file's `aws` list that names such resources
DIMENSION_RESOURCES = {"LoadBalancer": "load_balancers", "TargetGroup": "target_groups",
                       "FunctionName": "lambda_functions", "TableName": "dynamodb_tables", "QueueName": "queues",
                       "DBInstanceIdentifier": "db_instances", "DistributionId": "distributions",
                       "BucketName": "buckets"}
DESCRIBED_SEVERITY = re.compile(r"\bseverity\s*[=:]\s*([A-Za-z0-9_-]{1,20})", re.IGNORECASE)  # "severity=P1"


@dataclass
class Alarm:
    arn: str
    name: str
    state: str
    changed_at: str  # normalised ISO time of this transition
    reason: str = ""
    description: str = ""
    previous_state: str = ""
    previous_changed_at: str = ""  # EventBridge only
    namespace: str = ""
    metric: str = ""
    account: str = ""
    region: str = ""
    dimensions: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def labels(self) -> dict[str, str]:
        base = {"alarm_name": self.name, "alarm_arn": self.arn, "namespace": self.namespace, "metric": self.metric,
                "account": self.account, "region": self.region, "state": self.state}
        return base | {f"dimension.{k}": v for k, v in self.dimensions.items()} | {
            f"tag.{k}": v for k, v in self.tags.items()}


async def parse_message(ax: Alerts, message: str) -> list[AlertNotice] | Reply:
    try:
        data = json.loads(message)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return Reply(200, {"action": "ignored", "reason": "the message is not a CloudWatch alarm"})
    try:
        alarm = from_event(data) if data.get("detail-type") == EVENT else from_alarm(data)
    except (KeyError, TypeError, ValueError, AttributeError):
        return Reply(200, {"action": "ignored", "reason": "the message is not a CloudWatch alarm"})
    return await notices(ax, alarm)


def from_alarm(data: dict[str, Any]) -> Alarm:
    """A metric alarm's (Trigger with one metric or metric math) or a composite alarm's (AlarmRule) message."""
    trigger = data.get("Trigger") or {}
    arn = data["AlarmArn"]
    namespace, metric, dimensions = _trigger_metric(trigger)
    return Alarm(arn=arn, name=data["AlarmName"], state=data["NewStateValue"],
                 changed_at=_iso(data["StateChangeTime"]), reason=data.get("NewStateReason") or "",
                 description=data.get("AlarmDescription") or "", previous_state=data.get("OldStateValue") or "",
                 namespace=namespace, metric=metric, account=str(data.get("AWSAccountId") or ""),
                 region=arn.split(":")[3], dimensions=dimensions)


def _trigger_metric(trigger: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
    if trigger.get("MetricName"):
        return trigger.get("Namespace", ""), trigger["MetricName"], _dimension_list(trigger.get("Dimensions"))
    for query in trigger.get("Metrics") or []:  # metric math: the first metric the expression reads
        metric = (query.get("MetricStat") or {}).get("Metric")
        if metric:
            return metric.get("Namespace", ""), metric.get("MetricName", ""), _dimension_list(metric.get("Dimensions"))
    return "", "", {}


def _dimension_list(items: Any) -> dict[str, str]:
    return {str(d["name"]): str(d["value"]) for d in items or [] if isinstance(d, dict) and "name" in d}


def from_event(data: dict[str, Any]) -> Alarm:
    detail = data["detail"]
    state, previous = detail["state"], detail.get("previousState") or {}
    namespace, metric, dimensions = "", "", {}
    for query in (detail.get("configuration") or {}).get("metrics") or []:
        found = (query.get("metricStat") or {}).get("metric")
        if found:
            namespace, metric = found.get("namespace", ""), found.get("name", "")
            dimensions = {str(k): str(v) for k, v in (found.get("dimensions") or {}).items()}
            break
    return Alarm(arn=data["resources"][0], name=detail["alarmName"], state=state["value"],
                 changed_at=_iso(state["timestamp"]), reason=state.get("reason") or "",
                 description=(detail.get("configuration") or {}).get("description") or "",
                 previous_state=previous.get("value") or "",
                 previous_changed_at=_iso(previous["timestamp"]) if previous.get("timestamp") else "",
                 namespace=namespace, metric=metric, account=str(data.get("account") or ""),
                 region=str(data.get("region") or ""), dimensions=dimensions,
                 tags={str(k): str(v) for k, v in (detail.get("alarmTags") or {}).items()})


def _iso(raw: str) -> str:
    """CloudWatch writes `2015-06-03T17:43:27.123+0000`; one spelling per instant, so keys compare equal."""
    parsed = dt.datetime.strptime(raw.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z" if "." in raw
                                  else "%Y-%m-%dT%H:%M:%S%z")
    return parsed.astimezone(dt.UTC).isoformat(timespec="milliseconds")


async def notices(ax: Alerts, alarm: Alarm) -> list[AlertNotice]:
    """The alarm's notice; for an ALARM whose OK came first, that notice and then its resolution."""
    fired = await notice(ax, alarm)
    cleared = await _cleared(ax, alarm)
    return [fired, _resolution(alarm, fired, cleared)] if cleared else [fired]


async def _cleared(ax: Alerts, alarm: Alarm) -> str | None:
    """An OK is remembered (None); for an ALARM, the time of a remembered OK that already ended it, if any."""
    key, at = _alert_key(alarm), _epoch(alarm.changed_at)
    if alarm.state == "OK":
        await ax.episodes.cleared(key, alarm.changed_at, at, ax.settings.sns_max_age_s)
    return await ax.episodes.cleared_after(key, at) if alarm.state == "ALARM" else None


def _resolution(alarm: Alarm, fired: AlertNotice, cleared: str) -> AlertNotice:
    said = f"{alarm.name} was OK again at {cleared} (its OK arrived before this ALARM)"
    return replace(fired, status="resolved", instances=[
        replace(item, status="resolved", ends_at=cleared, summary=said) for item in fired.instances])


async def notice(ax: Alerts, alarm: Alarm) -> AlertNotice:
    labels = alarm.labels()
    base = AlertNotice(
        AlertSource.CLOUDWATCH, f"cloudwatch:{alarm.arn}", "resolved" if alarm.state == "OK" else "firing",
        _title(alarm), ax.mapping.severity(AlertSource.CLOUDWATCH, labels, _severity(alarm)),  # type: ignore
        ax.mapping.service(AlertSource.CLOUDWATCH, labels, [*_services(ax, alarm), alarm.tags.get("service")]))
    if alarm.state == "INSUFFICIENT_DATA":
        return replace(base, note=f"CloudWatch: {alarm.name} has insufficient data. {alarm.reason}".strip(),
                        note_key=f"insufficient:{alarm.changed_at}")
    if alarm.state not in ("ALARM", "OK"):
        raise Refused(400, "NewStateValue must be ALARM, OK or INSUFFICIENT_DATA")
    start = await _firing_start(ax, alarm)
    if start is None:
        return base  # an OK for an ALARM not seen yet: nothing to resolve now (`_cleared` remembers it)
    instance = AlertInstance(alarm.arn, start, base.status, alarm.reason or alarm.name, labels)
    return replace(base, instances=[instance])


def _alert_key(alarm: Alarm) -> str:
    return hashlib.sha256(alarm.arn.encode()).hexdigest()[:24]


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


async def _firing_start(ax: Alerts, alarm: Alarm) -> str | None:
    key, at = _alert_key(alarm), _epoch(alarm.changed_at)
    if alarm.state == "ALARM":
        await ax.episodes.began(key, alarm.changed_at, at)
        return alarm.changed_at
    if alarm.previous_state == "ALARM" and alarm.previous_changed_at:
        return alarm.previous_changed_at
    latest = await ax.episodes.latest(key, at)
    return latest[0] if latest else None


def _severity(alarm: Alarm) -> str | None:
    found = DESCRIBED_SEVERITY.search(alarm.description)
    return alarm.tags.get("severity") or (found.group(1) if found else None)


def _title(alarm: Alarm) -> str:
    text = f"{alarm.name}: {alarm.description}" if alarm.description else alarm.name
    return text[:200]


def _services(ax: Alerts, alarm: Alarm) -> list[str]:
    """Services whose alarm prefix starts the alarm's name, then those owning one of its dimensions' resources."""
    services = ax.rt.services().services
    found = [name for name, spec in services.items()
             if spec.aws and any(alarm.name.startswith(p) for p in spec.aws.alarm_prefixes)]
    for dimension, value in alarm.dimensions.items():
        kind = DIMENSION_RESOURCES.get(dimension)
        found += [name for name, spec in services.items() if kind and spec.aws and _owns(spec.aws, kind, value)]
    return found


def _owns(aws: Any, kind: str, value: str) -> bool:
    wanted = _names(value)
    return any(_names(getattr(item, "name", item)) & wanted for item in getattr(aws, kind))


def _names(value: str) -> set[str]:
    """The ways one resource is written: an ARN, its final part (`app/<name>/<id>`), or the bare name."""
    tail = value.split(":")[-1]
    parts = tail.split("/")
    return {value, tail, parts[1] if len(parts) >= 3 else parts[-1]}
