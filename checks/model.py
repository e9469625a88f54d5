"""The data a check produces and the verdict built from it.

Records: they go through Redis as JSON and are read back with `checks.schema.parse_json`. Built in code they are
not validated or converted, so a check passes a `Status` member, not its text, and floats where floats are meant.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Literal, get_args

import msgspec

from checks.fixes import FixOffer
from checks.schema import Record, field

Severity = Literal["P0", "P1", "P2", "P3"]


class Status(str, Enum):
    ok = "ok"
    warn = "warn"
    fail = "fail"
    error = "error"  # the check itself could not run (AccessDenied, unreachable endpoint, deadline)
    skipped = "skipped"

    @property
    def is_problem(self) -> bool:
        return self in (Status.warn, Status.fail, Status.error)


# Worst first; used to fold many statuses into one.
STATUS_ORDER = [Status.fail, Status.error, Status.warn, Status.ok, Status.skipped]


def worst(statuses: list[Status]) -> Status:
    present = set(statuses)
    for status in STATUS_ORDER:
        if status in present:
            return status
    return Status.ok


class Marker(Record):
    """A moment worth seeing on a chart: the first error signature, the last deploy, the first bad minute."""

    at: datetime
    label: str
    kind: Literal["first_error", "deploy", "first_breach", "milestone"] = "first_breach"  # milestone: an
    # incident's declared / acknowledged / escalated / mitigated / resolved, on the postmortem's timeline chart


class Series(Record):
    """The time series a check judged, kept so a renderer can draw it without asking AWS again."""

    metric: str  # what the y axis is, for people: "5xx ratio", "Lambda errors per minute"
    unit: str = ""  # "%", "ms", "count"
    points: list[tuple[datetime, float]] = field(default_factory=list)
    threshold: float | None = None  # the line the check compared against, in the points' unit
    markers: list[Marker] = field(default_factory=list)


class CheckResult(Record):
    """What one check found about one target. `check`, `target` and `duration_ms` are filled in by the runner."""

    check: str = ""
    target: str = ""
    status: Status
    summary: str
    resource: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    hint: str | None = None
    duration_ms: int = 0
    # Suggested severity when this result is a problem (runbook table); None lets the verdict decide by status.
    severity: Severity | None = None
    # Reversible fixes for the cause this result names (a button each); empty for most results.
    fixes: list[FixOffer] = field(default_factory=list)
    # The metric the check judged, when its evidence is a time series (a chart is drawn from it); else None.
    series: Series | None = None


class Problem(msgspec.Struct, frozen=True):
    """One thing a check found wrong: a check collects several and folds them into its single result."""

    status: Status
    severity: Severity
    sentence: str
    hint: str
    fixes: tuple[FixOffer, ...] = ()


def fold(problems: list[Problem], *, ok: str, resource: str, evidence: dict[str, Any]) -> CheckResult:
    """One result from a check's problems: the worst status, its most urgent severity, every sentence."""
    if not problems:
        return CheckResult(status=Status.ok, summary=ok, resource=resource, evidence=evidence)
    severities = get_args(Severity)
    ranked = sorted(problems, key=lambda p: (STATUS_ORDER.index(p.status), severities.index(p.severity)))
    return CheckResult(
        status=ranked[0].status,
        severity=ranked[0].severity,
        summary=" ".join(p.sentence for p in ranked),
        hint=" ".join(dict.fromkeys(p.hint for p in ranked)),
        resource=resource,
        evidence=evidence,
        fixes=[fix for p in ranked for fix in p.fixes],
    )


class Finding(Record):
    """A problem worth a responder's attention, ranked by how likely it is the cause rather than a symptom."""

    check: str
    target: str
    status: Status
    summary: str
    resource: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    hint: str | None = None
    severity: Severity
    explains: list[str] = field(default_factory=list)  # the failures it accounts for: "<check> <target>"
    fixes: list[FixOffer] = field(default_factory=list)


class Verdict(Record):
    target: str
    status: Status
    headline: str
    severity: Severity | None = None
    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
