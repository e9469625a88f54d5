"""Moments a metric's chart borrows from the rest of its run: the last deploy and the first error signature.

A metric check (5xx ratio, Lambda errors) sees only its metric; the change check of the same run names the suspect
deploy and the log checks the first error. Their evidence already holds both, so the chart marks them without a
second API call: the diagnosis reads them from the run's results once they are all in.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from checks.correlation import SUSPECT_WINDOW
from checks.model import CheckResult, Marker, Series
from checks.schema import replace

# A moment further than this outside the series' minutes is left off: it would squash the metric into a sliver.
MARK_WITHIN = SUSPECT_WINDOW


def with_run_markers(series: Series, results: Iterable[CheckResult]) -> Series:
    """`series` with the run's deploy and first error added to its own markers, in time order."""
    found = list(results)
    borrowed = [m for m in (_deploy(found), _first_error(found)) if m is not None and _near(m, series)]
    markers = [*series.markers, *(m for m in borrowed if m not in series.markers)]
    return replace(series, markers=sorted(markers, key=lambda m: m.at))


def _deploy(results: list[CheckResult]) -> Marker | None:
    """The suspect deploy a change check named; without one, the latest change any change check listed."""
    suspects = [r.evidence["suspect"] for r in results if isinstance(r.evidence.get("suspect"), dict)]
    changes = suspects or [c for r in results for c in _dicts(r.evidence.get("changes"))]
    dated = [(at, c) for c in changes if (at := _when(c.get("at"))) is not None]
    if not dated:
        return None
    at, change = max(dated, key=lambda pair: pair[0])
    return Marker(at=at, label=f"deploy {change.get('name') or 'of the service'}", kind="deploy")


def _first_error(results: list[CheckResult]) -> Marker | None:
    """The earliest `first_error_at` of the run, labelled with the signature first seen then (when one is)."""
    firsts = [at for r in results if (at := _when(r.evidence.get("first_error_at"))) is not None]
    if not firsts:
        return None
    at = min(firsts)
    signatures = [s for r in results for s in _dicts(r.evidence.get("signatures"))]
    named = [s["signature"] for s in signatures if _when(s.get("first_seen")) == at and s.get("signature")]
    return Marker(at=at, label=str(named[0]) if named else "first error", kind="first_error")


def _near(marker: Marker, series: Series) -> bool:
    times = [_utc(t) for t, _ in series.points]
    return bool(times) and min(times) - MARK_WITHIN <= _utc(marker.at) <= max(times) + MARK_WITHIN


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _when(value: Any) -> datetime | None:
    """An evidence timestamp (ISO 8601, UTC) as a datetime; None when absent or not one."""
    try:
        return _utc(datetime.fromisoformat(value)) if isinstance(value, str) else None
    except ValueError:
        return None
