"""CloudWatch Logs: error signatures and Lambda REPORT lines.

Error signatures come from `checks.logsignatures` (shared with `gcp.logging`). The pure parsing here does no
I/O, so it is tested on plain strings:
- `parse_report_line(text)` reads the `REPORT RequestId: … Init Duration: … ms` line Lambda writes per invocation.

Then the one reader of log events (`read_events`: paginated, bounded in events and in time), the error scan that
`aws.log_errors` and `aws.recent_changes` share (`scan_errors`), and the `aws.log_errors` check.

moto's `filter_log_events` only understands single terms and quoted phrases (other patterns silently match
everything), so the matching that matters happens here, client-side.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from checks.aws import insights
from checks.aws.clients import AwsCheckError
from checks.aws.common import aws_check, aws_error_code, region
from checks.logsignatures import (  # re-exported: the Lambda checks and the tests import them from here
    CONTEXT_LINES,
    ErrorSignature,
    LogLine,
    SignatureTotals,
    error_blocks,
    from_millis,
    headline,
    is_error_line,
    iso,
    lines_by_stream,
    normalise,
    summarise_errors,
    to_millis,
)
from checks.model import CheckResult, Status
from checks.registry import CheckContext, check

WINDOW = timedelta(hours=1)
MAX_EVENTS = 20_000  # per scan: two pages of filter_log_events; a busier hour is reported as truncated
TOP_SIGNATURES = 5
# Volume rule for aws.log_errors: ten or more errors in an hour is a sustained failure (fail, P1); fewer is a
# handful that may be noise or one bad request (warn, P2). Logs carry no request count, so no rate is possible
# here; aws.lambda_metrics owns the error-rate rule.
FAIL_AT_ERRORS = 10
# Above this stored size a group's hour is usually more than FilterLogEvents pages can bring back in time (a page
# is at most 1 MB); Logs Insights scans it server-side and returns only the error lines.
INSIGHTS_ABOVE_BYTES = 5 * 1024**3

# --- pure parsing: Lambda REPORT lines -------------------------------------------------------------------------

_REPORT_FIELDS = {
    "request_id": re.compile(r"RequestId:\s*(\S+)"),
    "duration_ms": re.compile(r"(?<!Billed )(?<!Init )(?<!Restore )Duration:\s*([\d.]+)\s*ms"),
    "billed_ms": re.compile(r"Billed Duration:\s*([\d.]+)\s*ms"),
    "memory_size_mb": re.compile(r"Memory Size:\s*(\d+)\s*MB"),
    "max_memory_used_mb": re.compile(r"Max Memory Used:\s*(\d+)\s*MB"),
    "init_ms": re.compile(r"Init Duration:\s*([\d.]+)\s*ms"),
    "status": re.compile(r"Status:\s*(\w+)"),
}
_JSON_METRICS = {
    "duration_ms": "durationMs",
    "billed_ms": "billedDurationMs",
    "memory_size_mb": "memorySizeMB",
    "max_memory_used_mb": "maxMemoryUsedMB",
    "init_ms": "initDurationMs",
}


@dataclass(frozen=True)
class ReportLine:
    request_id: str
    duration_ms: float
    billed_ms: float | None = None
    memory_size_mb: int | None = None
    max_memory_used_mb: int | None = None
    init_ms: float | None = None  # present only on a cold start
    status: str | None = None  # e.g. "timeout"; newer runtimes only

    @property
    def cold(self) -> bool:
        return self.init_ms is not None


def parse_report_line(text: str) -> ReportLine | None:
    """A Lambda REPORT line, in the text or the JSON (`platform.report`) log format; None for any other line."""
    stripped = text.strip()
    if stripped.startswith("{"):
        return _parse_json_report(stripped)
    if not stripped.startswith("REPORT RequestId:"):
        return None
    values = {name: rx.search(stripped) for name, rx in _REPORT_FIELDS.items()}
    if values["request_id"] is None or values["duration_ms"] is None:
        return None
    raw = {name: m.group(1) for name, m in values.items() if m}
    return ReportLine(
        request_id=raw["request_id"],
        duration_ms=float(raw["duration_ms"]),
        billed_ms=_num(raw.get("billed_ms"), float),
        memory_size_mb=_num(raw.get("memory_size_mb"), int),
        max_memory_used_mb=_num(raw.get("max_memory_used_mb"), int),
        init_ms=_num(raw.get("init_ms"), float),
        status=raw.get("status"),
    )


def _parse_json_report(text: str) -> ReportLine | None:
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("type") != "platform.report":
        return None
    record = doc.get("record") or {}
    metrics = record.get("metrics") or {}
    if "durationMs" not in metrics:
        return None
    values = {name: metrics.get(key) for name, key in _JSON_METRICS.items()}
    return ReportLine(
        request_id=str(record.get("requestId", "")),
        duration_ms=float(values["duration_ms"]),
        billed_ms=_num(values["billed_ms"], float),
        memory_size_mb=_num(values["memory_size_mb"], int),
        max_memory_used_mb=_num(values["max_memory_used_mb"], int),
        init_ms=_num(values["init_ms"], float),
        status=record.get("status"),
    )


def _num(value: Any, kind: Callable[[Any], Any]) -> Any:
    return None if value is None else kind(value)


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * pct / 100)) - 1]


# --- reading logs ----------------------------------------------------------------------------------------------


@dataclass
class EventBatch:
    events: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False  # stopped at MAX_EVENTS or at the check's deadline, not at the end of the window


def is_not_found(exc: AwsCheckError) -> bool:
    return aws_error_code(exc) == "ResourceNotFoundException"


async def read_events(
    ctx: CheckContext,
    log_group: str,
    start: datetime,
    end: datetime,
    *,
    pattern: str | None = None,
    max_events: int = MAX_EVENTS,
) -> EventBatch:
    """filter_log_events over [start, end], following nextToken until the end, `max_events` or the deadline."""
    assert ctx.aws is not None
    params: dict[str, Any] = {"logGroupName": log_group, "startTime": to_millis(start), "endTime": to_millis(end)}
    if pattern:
        params["filterPattern"] = pattern
    batch = EventBatch()
    while True:
        page = await ctx.aws.call("logs", region(ctx), "filter_log_events", **params)
        batch.events.extend(page.get("events", []))
        token = page.get("nextToken")
        if not token:
            return batch
        if len(batch.events) >= max_events or ctx.remaining() < 2:
            batch.truncated = True
            return batch
        params["nextToken"] = token


@dataclass
class ErrorScan(SignatureTotals):
    log_group: str
    start: datetime
    end: datetime
    signatures: list[ErrorSignature]
    events_scanned: int
    truncated: bool
    via: str = "filter"  # "filter": FilterLogEvents pages; "insights": one Logs Insights query (error lines only)

    @property
    def last_error_at(self) -> datetime | None:
        return max((s.last_seen for s in self.signatures), default=None)


async def scan_errors(ctx: CheckContext, log_group: str, start: datetime, end: datetime) -> ErrorScan:
    """Summarise the errors of `log_group` in [start, end]: through a Logs Insights query when the group is large,
    else (or when Insights fails) by reading every event. Raises AwsCheckError."""
    if await stored_bytes(ctx, log_group) >= INSIGHTS_ABOVE_BYTES:
        found = await insights.error_events(ctx, log_group, start, end)
        if found is not None:
            return ErrorScan(log_group, start, end, summarise_errors(found.events), len(found.events),
                             found.truncated, via="insights")
    batch = await read_events(ctx, log_group, start, end)
    return ErrorScan(log_group, start, end, summarise_errors(batch.events), len(batch.events), batch.truncated)


async def stored_bytes(ctx: CheckContext, log_group: str) -> int:
    """The group's stored size (0 when it does not exist: the read that follows says so)."""
    assert ctx.aws is not None
    found = await ctx.aws.call("logs", region(ctx), "describe_log_groups", logGroupNamePrefix=log_group)
    return next((int(g.get("storedBytes") or 0) for g in found.get("logGroups", []) if g["logGroupName"] == log_group),
                0)


# --- the check -------------------------------------------------------------------------------------------------


@check("aws.log_errors", timeout_s=30)
@aws_check
async def log_errors(log_group: str, ctx: CheckContext) -> CheckResult:
    """Errors in a log group over the last hour, de-duplicated into signatures with counts and context."""
    try:
        scan = await scan_errors(ctx, log_group, ctx.now - WINDOW, ctx.now)
    except AwsCheckError as exc:
        if not is_not_found(exc):
            raise
        return CheckResult(
            status=Status.error,
            summary=f"Log group {log_group} does not exist.",
            resource=log_group,
            hint="Fix aws.log_groups in the services file (Lambda groups are /aws/lambda/<function>).",
        )
    return log_errors_result(scan)


def log_errors_result(scan: ErrorScan) -> CheckResult:
    evidence = {
        "log_group": scan.log_group,
        "window_start": iso(scan.start),
        "window_end": iso(scan.end),
        "events_scanned": scan.events_scanned,
        "truncated": scan.truncated,
        "read_with": scan.via,
        "errors": scan.total,
        "first_error_at": iso(scan.first_error_at),
        "last_error_at": iso(scan.last_error_at),
        "signatures": [s.as_evidence() for s in scan.signatures[:TOP_SIGNATURES]],
        "signature_count": len(scan.signatures),
    }
    partial = f" (read the first {scan.events_scanned} events only)" if scan.truncated else ""
    if not scan.signatures:
        return CheckResult(
            status=Status.ok,
            summary=f"No errors in {scan.log_group} in the last hour ({scan.events_scanned} events read){partial}.",
            resource=scan.log_group,
            evidence=evidence,
        )
    top = scan.signatures[0]
    sustained = scan.total >= FAIL_AT_ERRORS
    kinds = "1 kind" if len(scan.signatures) == 1 else f"{len(scan.signatures)} kinds"
    return CheckResult(
        status=Status.fail if sustained else Status.warn,
        severity="P1" if sustained else "P2",
        summary=(
            f"{scan.total} errors in {scan.log_group} in the last hour ({kinds}), first at "
            f"{scan.first_error_at:%H:%M} UTC; most frequent: “{top.signature}” ×{top.count}{partial}."
        ),
        resource=scan.log_group,
        evidence=evidence,
        hint=(
            "Read the sample with its context lines in the evidence; if the first error follows a deploy, "
            "aws.recent_changes names the rollback candidate."
        ),
    )
