"""Per-minute values out of `get_metric_data` answers, so a metric check can keep the series it judged.

A check that sums a metric over its window already has every minute's value in the answer; keeping them (a few
dozen points) costs nothing and lets a renderer draw the chart without a second CloudWatch call.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from checks.model import Marker


def minutes_by_id(results: Iterable[dict[str, Any]]) -> dict[str, dict[datetime, float]]:
    """{query Id: {minute: value}} from MetricDataResults pages (a later page repeats an Id with more values)."""
    values: dict[str, dict[datetime, float]] = defaultdict(dict)
    for result in results:
        for at, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=False):
            values[result["Id"]][at] = values[result["Id"]].get(at, 0.0) + float(value)
    return values


def first_breach(points: list[tuple[datetime, float]], threshold: float, label: str) -> list[Marker]:
    """A marker at the first point above `threshold` (none when the series never crosses it)."""
    at = next((t for t, v in points if v > threshold), None)
    return [Marker(at=at, label=label, kind="first_breach")] if at is not None else []


def ratio_points(numerators: list[dict[datetime, float]], denominator: dict[datetime, float],
                 scale: Callable[[float], float] = lambda r: 100 * r) -> list[tuple[datetime, float]]:
    """Per-minute ratio (percent by default) of the summed numerators to the denominator, capped at 100 %."""
    minutes = sorted(set(denominator).union(*numerators))
    points = []
    for at in minutes:
        top = sum(n.get(at, 0.0) for n in numerators)
        bottom = max(denominator.get(at, 0.0), top)  # errors not counted in the denominator never exceed 100 %
        points.append((at, round(scale(top / bottom), 2) if bottom else 0.0))
    return points
