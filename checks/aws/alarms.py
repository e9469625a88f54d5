"""CloudWatch alarms in ALARM whose names start with one of the service's prefixes.

An alarm is a symptom: it says something crossed a line, not why. The verdict ranks it after config and platform
findings, so a firing 5xx alarm is shown as explained by, say, a broken route table found in the same run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from checks.aws.common import aws_check, region
from checks.model import CheckResult, Status
from checks.registry import CheckContext, check


@check("aws.alarms", timeout_s=15)
@aws_check
async def alarms(_region: str, ctx: CheckContext) -> CheckResult:
    """No CloudWatch alarm with one of the service's name prefixes is in ALARM."""
    assert ctx.service.aws is not None
    prefixes = ctx.service.aws.alarm_prefixes
    firing: dict[str, dict[str, Any]] = {}
    for prefix in prefixes:
        for alarm in await _alarms_in_alarm(ctx, prefix):
            firing.setdefault(alarm["AlarmArn"], alarm)  # overlapping prefixes find the same alarm twice
    rows = sorted((_alarm_row(alarm, ctx.now) for alarm in firing.values()), key=lambda row: row["since"] or "")
    evidence = {"prefixes": list(prefixes), "alarms": rows}
    if not rows:
        return CheckResult(status=Status.ok, evidence=evidence,
                           summary=f"No alarm starting with {', '.join(prefixes)} is in ALARM.")
    names = ", ".join(row["alarm"] for row in rows)
    first = rows[0]
    return CheckResult(
        status=Status.fail,
        severity="P1",
        resource=names,
        evidence=evidence,
        summary=(f"{len(rows)} alarm{'s' if len(rows) > 1 else ''} in ALARM: {names}. "
                 f"First: {first['alarm']} — {first['reason']}"),
        hint="Alarms are symptoms: fix the config/platform findings of this run first, then read the alarm's metric "
             f"(aws cloudwatch describe-alarms --alarm-names {first['alarm']}).",
    )


async def _alarms_in_alarm(ctx: CheckContext, prefix: str) -> list[dict[str, Any]]:
    """Metric and composite alarms in ALARM with this prefix, across pages (`cloudwatch:DescribeAlarms`)."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"StateValue": "ALARM", "AlarmNamePrefix": prefix,
                              "AlarmTypes": ["MetricAlarm", "CompositeAlarm"]}
    while True:
        page = await ctx.aws.call("cloudwatch", region(ctx), "describe_alarms", **params)
        # Filter the state again: moto ignores StateValue when AlarmNamePrefix is given.
        found += [a for a in page.get("MetricAlarms", []) + page.get("CompositeAlarms", [])
                  if a.get("StateValue") == "ALARM"]
        if not page.get("NextToken"):
            return found
        params["NextToken"] = page["NextToken"]


def _alarm_row(alarm: dict[str, Any], now: datetime) -> dict[str, Any]:
    since = alarm.get("StateUpdatedTimestamp")
    metric = f"{alarm['Namespace']}/{alarm['MetricName']}" if alarm.get("MetricName") else _metric_math(alarm)
    return {
        "alarm": alarm["AlarmName"],
        "metric": metric,
        "threshold": _threshold(alarm),
        "reason": alarm.get("StateReason", ""),
        "since": since.isoformat(timespec="seconds") if since else None,
        "minutes_in_alarm": int((now - since).total_seconds() // 60) if since else None,
    }


def _metric_math(alarm: dict[str, Any]) -> str:
    if alarm.get("AlarmRule"):
        return f"composite: {alarm['AlarmRule']}"
    names = [m["MetricStat"]["Metric"]["MetricName"] for m in alarm.get("Metrics", []) if m.get("MetricStat")]
    return "metric math: " + ", ".join(names) if names else "metric math"


def _threshold(alarm: dict[str, Any]) -> str | None:
    if "Threshold" not in alarm:
        return None
    operator = {
        "GreaterThanThreshold": ">", "GreaterThanOrEqualToThreshold": ">=",
        "LessThanThreshold": "<", "LessThanOrEqualToThreshold": "<=",
    }.get(alarm.get("ComparisonOperator", ""), alarm.get("ComparisonOperator", ""))
    return f"{alarm.get('Statistic') or alarm.get('ExtendedStatistic') or ''} {operator} {alarm['Threshold']:g}".strip()
