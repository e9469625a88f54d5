"""Cloud Monitoring `timeSeries.list`: sums and maxima over a window, grouped by a label.

Metric names and labels used by the checks (Google's metrics list was not read, see
/work/shared/reference/gcp-checks.md §4.1): `run.googleapis.com/request_count` (label `response_code_class`),
`run.googleapis.com/request_latencies` (distribution, ms), `run.googleapis.com/container/startup_latencies`
(one point per instance start), `cloudsql.googleapis.com/database/network/connections` (MySQL) and
`.../database/postgresql/num_backends` (PostgreSQL), `loadbalancing.googleapis.com/https/request_count`
(label `cache_result`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from checks.gcp.api import call, spec
from checks.logsignatures import iso
from checks.registry import CheckContext

MAX_PAGES = 5


def metric_filter(metric: str, resource: str, **labels: str) -> str:
    parts = [f'metric.type="{metric}"', f'resource.type="{resource}"']
    parts += [f'{key.replace("__", ".")}="{value}"' for key, value in labels.items()]
    return " AND ".join(parts)


async def series(
    ctx: CheckContext, filter_: str, start: datetime, end: datetime, *, aligner: str, reducer: str,
    group_by: str | None = None,
) -> list[dict[str, Any]]:
    """The time series for `filter_` aligned over the whole window (one point per series), all pages."""
    seconds = max(60, int((end - start).total_seconds()))
    params: list[tuple[str, str]] = [
        ("filter", filter_), ("interval.startTime", iso(start) or ""), ("interval.endTime", iso(end) or ""),
        ("aggregation.alignmentPeriod", f"{seconds}s"), ("aggregation.perSeriesAligner", aligner),
        ("aggregation.crossSeriesReducer", reducer),
    ]
    if group_by:
        params.append(("aggregation.groupByFields", group_by))
    found: list[dict[str, Any]] = []
    for _ in range(MAX_PAGES):
        page = await call(ctx, "monitoring.timeSeries.list", params=params, project=spec(ctx).project)
        found += page.get("timeSeries", [])
        token = page.get("nextPageToken")
        if not token:
            break
        params = [p for p in params if p[0] != "pageToken"] + [("pageToken", token)]
    return found


def point_value(point: dict[str, Any]) -> float:
    value = point.get("value", {})
    if "distributionValue" in value:
        return float(value["distributionValue"].get("count", 0))
    return float(value.get("int64Value", value.get("doubleValue", 0)))


def totals_by(found: list[dict[str, Any]], label: str) -> dict[str, float]:
    """Sum of every point per value of metric label `label` ("" when a series lacks it)."""
    totals: dict[str, float] = {}
    for one in found:
        key = one.get("metric", {}).get("labels", {}).get(label, "")
        totals[key] = totals.get(key, 0.0) + sum(point_value(p) for p in one.get("points", []))
    return totals


def peak(found: list[dict[str, Any]]) -> float | None:
    values = [point_value(p) for one in found for p in one.get("points", [])]
    return max(values) if values else None
