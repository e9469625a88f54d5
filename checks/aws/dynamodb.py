"""DynamoDB: throttled requests, and provisioned capacity used up, over the last 15 minutes.

Capacity is compared per minute (CloudWatch publishes DynamoDB consumption per minute): the busiest minute's
consumed units / 60 against the provisioned units per second. A 15-minute average would hide the burst that
throttles. `ThrottledRequests` is only published per `Operation`, so each data-plane operation is asked for.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from checks.aws.common import aws_check, region
from checks.model import CheckResult, Status
from checks.registry import CheckContext, check

WINDOW = timedelta(minutes=15)
PERIOD_S = 60
CAPACITY_WARN_RATIO = 0.8
OPERATIONS = (
    "GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan",
    "BatchGetItem", "BatchWriteItem", "TransactGetItems", "TransactWriteItems",
)


@check("aws.dynamodb", timeout_s=20)
@aws_check
async def dynamodb(table_name: str, ctx: CheckContext) -> CheckResult:
    """DynamoDB throttling and provisioned capacity headroom over the last 15 minutes"""
    table = (await ctx.aws.call("dynamodb", region(ctx), "describe_table", TableName=table_name))["Table"]
    series = await _minute_sums(ctx, table_name)
    throttles = _throttles(series)
    billing = table.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED")
    capacity = {
        kind: _capacity(series[f"consumed_{kind}"], table.get("ProvisionedThroughput", {}).get(units, 0))
        for kind, units in (("read", "ReadCapacityUnits"), ("write", "WriteCapacityUnits"))
    }
    evidence: dict[str, Any] = {
        "table": table.get("TableArn", table_name),
        "status": table.get("TableStatus"),
        "billing_mode": billing,
        **{f"{kind}_capacity": c for kind, c in capacity.items()},
        "throttles": throttles,
        "window_min": int(WINDOW.total_seconds() // 60),
    }
    resource = table.get("TableArn", table_name)
    if throttles:
        return CheckResult(
            status=Status.fail,
            severity="P1",
            summary=f"{table_name} was throttled in the last 15 min: {_describe_throttles(throttles)}.",
            resource=resource,
            evidence=evidence,
            hint="Throttled requests fail or retry slowly in the app. Raise provisioned capacity (or its "
            "autoscaling maximum), switch to on-demand, or look for a hot partition key or a new Scan.",
        )
    tight = [f"{kind} {c['peak_per_s']:g} of {c['provisioned']:g} units/s ({c['pct']:.0f} %)"
             for kind, c in capacity.items() if c["pct"] is not None and c["pct"] >= 100 * CAPACITY_WARN_RATIO]
    if tight:
        return CheckResult(
            status=Status.warn,
            severity="P2",
            summary=f"{table_name} is near its provisioned capacity at its busiest minute: {'; '.join(tight)}.",
            resource=resource,
            evidence=evidence,
            hint="Throttling starts once burst capacity is spent: raise the provisioned units or the autoscaling "
            "maximum before the next peak.",
        )
    usage = "on-demand" if billing == "PAY_PER_REQUEST" else ", ".join(
        f"{kind} peak {c['peak_per_s']:g}/{c['provisioned']:g} units/s" for kind, c in capacity.items()
    )
    return CheckResult(
        status=Status.ok,
        summary=f"No throttling on {table_name} in the last 15 min ({usage}).",
        resource=resource,
        evidence=evidence,
    )


def _metric(query_id: str, name: str, table_name: str, **dimensions: str) -> dict[str, Any]:
    dims = [{"Name": "TableName", "Value": table_name}] + [{"Name": k, "Value": v} for k, v in dimensions.items()]
    return {
        "Id": query_id,
        "MetricStat": {
            "Metric": {"Namespace": "AWS/DynamoDB", "MetricName": name, "Dimensions": dims},
            "Period": PERIOD_S,
            "Stat": "Sum",
        },
    }


async def _minute_sums(ctx: CheckContext, table_name: str) -> dict[str, list[float]]:
    """Per-minute sums of the throttle and consumption metrics, by query id (`cloudwatch:GetMetricData`)."""
    queries = [
        _metric("read_throttles", "ReadThrottleEvents", table_name),
        _metric("write_throttles", "WriteThrottleEvents", table_name),
        _metric("consumed_read", "ConsumedReadCapacityUnits", table_name),
        _metric("consumed_write", "ConsumedWriteCapacityUnits", table_name),
        *(_metric(f"throttled_{op}", "ThrottledRequests", table_name, Operation=op) for op in OPERATIONS),
    ]
    results = await ctx.aws.paginate(
        "cloudwatch", region(ctx), "get_metric_data", "MetricDataResults",
        MetricDataQueries=queries, StartTime=ctx.now - WINDOW, EndTime=ctx.now,
    )
    series: dict[str, list[float]] = {q["Id"]: [] for q in queries}
    for result in results:  # a long result can arrive over several pages
        series[result["Id"]].extend(result.get("Values", []))
    return series


def _throttles(series: dict[str, list[float]]) -> dict[str, int]:
    """Non-zero throttle totals: `read_throttle_events`, `write_throttle_events`, `throttled_PutItem`, …"""
    totals = {
        "read_throttle_events": sum(series["read_throttles"]),
        "write_throttle_events": sum(series["write_throttles"]),
        **{f"throttled_{op}": sum(series[f"throttled_{op}"]) for op in OPERATIONS},
    }
    return {name: int(total) for name, total in totals.items() if total > 0}


def _describe_throttles(throttles: dict[str, int]) -> str:
    """`{"read_throttle_events": 12, "throttled_Query": 3}` → `12 read throttle events, 3 throttled Query requests`."""
    return ", ".join(
        f"{count} throttled {name.removeprefix('throttled_')} requests" if name.startswith("throttled_")
        else f"{count} {name.replace('_', ' ')}"
        for name, count in throttles.items()
    )


def _capacity(minute_sums: list[float], provisioned: float) -> dict[str, Any]:
    peak = round(max(minute_sums, default=0.0) / PERIOD_S, 2)
    pct = round(100 * peak / provisioned, 1) if provisioned else None  # on-demand tables report 0 provisioned
    return {"peak_per_s": peak, "provisioned": provisioned, "pct": pct}
