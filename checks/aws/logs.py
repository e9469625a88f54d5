"""CloudWatch Logs: error signatures and Lambda REPORT lines.

The pure parsing comes first and does no I/O, so it is tested on plain strings:
- `summarise_errors(events)` finds error lines (error / exception / traceback, any case), joins a traceback into
  one block, takes context lines from the same stream, normalises away what differs between occurrences (uuids,
  request ids, hex, numbers, timestamps, IPs) and counts each signature with its first and last sighting;
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from checks.aws.clients import AwsCheckError
from checks.aws.common import aws_check, aws_error_code, region
from checks.model import CheckResult, Status
from checks.registry import CheckContext, Layer, aws_items, check

WINDOW = timedelta(hours=1)
CONTEXT_LINES = 3  # lines of the same stream shown before and after an error
MAX_EVENTS = 20_000  # per scan: two pages of filter_log_events; a busier hour is reported as truncated
TOP_SIGNATURES = 5
# Volume rule for aws.log_errors: ten or more errors in an hour is a sustained failure (fail, P1); fewer is a
# handful that may be noise or one bad request (warn, P2). Logs carry no request count, so no rate is possible
# here; aws.lambda_metrics owns the error-rate rule.
FAIL_AT_ERRORS = 10

# --- pure parsing: errors ---------------------------------------------------------------------------------------

# Lambda's own timeout line names no error, yet it is one: the invocation was killed.
_ERROR_WORD = re.compile(r"error|exception|traceback|task timed out after", re.IGNORECASE)
# Lines that mention an error without being one ("errors=0", "no errors", `"error": null`).
_BENIGN = re.compile(
    r"\b(?:errors?|exceptions?)\"?\s*[=:]\s*(?:0|none|null|false|\[\]|\{\})(?![\w.])"
    r"|\bno\s+(?:errors?|exceptions?)\b|\b0\s+(?:errors?|exceptions?)\b|\bwithout\s+errors?\b",
    re.IGNORECASE,
)
_TRACEBACK_START = re.compile(r"^\s*(?:Traceback \(most recent call last\)|Exception in thread )")
_CHAIN = re.compile(
    r"^\s*(?:During handling of the above exception|The above exception was the direct cause|Caused by:)"
)
_EXCEPTION_NAME = re.compile(r"^[A-Za-z_][\w.]*(?::\s|:?$)")
_MAX_BLOCK_SPREAD_MS = 5_000  # lines of one traceback are written together; later indented lines are not its part

# A leading `[LEVEL] <timestamp> <request id>` (Lambda's Python/Node format) says nothing about the error itself.
_LOG_PREFIX = re.compile(
    r"^\s*(?:\[(?P<level>[A-Z]+)\]\s*)?"
    r"(?:\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?\s+)?"
    r"(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\s+)?"
)
_NORMALISERS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"), "<TS>"),
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<UUID>"),
    (re.compile(r"\b1-[0-9a-f]{8}-[0-9a-f]{24}\b"), "<TRACE>"),  # X-Ray trace id
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<IP>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<HEX>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"), "<HEX>"),  # shas, object ids
    (re.compile(r"(?<![A-Za-z_<])\d+(?:\.\d+)*"), "<N>"),
    (re.compile(r"\s+"), " "),
]
_MAX_SIGNATURE = 240
_MAX_SAMPLE_LINE = 300


@dataclass(frozen=True)
class LogLine:
    at: datetime
    stream: str
    text: str


@dataclass
class ErrorSignature:
    signature: str
    count: int
    first_seen: datetime
    last_seen: datetime
    stream: str
    sample: list[str]  # the first occurrence with its context lines

    def as_evidence(self) -> dict[str, Any]:
        return {
            "signature": self.signature,
            "count": self.count,
            "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen),
            "stream": self.stream,
            "sample": self.sample,
        }


def iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment else None


def from_millis(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def to_millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def is_error_line(text: str) -> bool:
    return bool(_ERROR_WORD.search(text)) and not _BENIGN.search(text)


def normalise(text: str) -> str:
    """What stays the same between two occurrences of one error: ids, numbers and timestamps become placeholders."""
    match = _LOG_PREFIX.match(text)
    level = match.group("level") if match else None
    rest = text[match.end() :] if match else text
    for pattern, placeholder in _NORMALISERS:
        rest = pattern.sub(placeholder, rest)
    rest = rest.strip()
    return (f"[{level}] {rest}" if level else rest)[:_MAX_SIGNATURE]


def lines_by_stream(events: Iterable[dict[str, Any]]) -> dict[str, list[LogLine]]:
    """Split filter_log_events events into lines, per stream, in time order (a Lambda event may hold a traceback)."""
    streams: dict[str, list[LogLine]] = {}
    for event in sorted(events, key=lambda e: e.get("timestamp", 0)):
        stream = event.get("logStreamName", "")
        at = from_millis(int(event.get("timestamp", 0)))
        for text in str(event.get("message", "")).rstrip("\n").split("\n"):
            if text.strip():
                streams.setdefault(stream, []).append(LogLine(at, stream, text.rstrip()))
    return streams


def _continues(line: LogLine, block: list[LogLine]) -> bool:
    """Whether `line` belongs to the traceback/stack trace that `block` has started."""
    if (line.at - block[0].at).total_seconds() * 1000 > _MAX_BLOCK_SPREAD_MS:
        return False
    text, previous = line.text, block[-1].text
    if _TRACEBACK_START.match(text) or _CHAIN.match(text) or text[:1].isspace():
        return True  # frames, source lines, `\tat …` of a Java stack, chained tracebacks
    # The exception line (`Name: message`, whatever the name) closes a Python traceback: it follows the frames.
    closes = previous[:1].isspace() and bool(_EXCEPTION_NAME.match(text))
    return closes and any(_TRACEBACK_START.match(b.text) for b in block)


def error_blocks(lines: list[LogLine]) -> list[tuple[int, int]]:
    """(start, end) line indexes of each error in one stream; a traceback and its frames form one block."""
    blocks: list[tuple[int, int]] = []
    index = 0
    while index < len(lines):
        if not is_error_line(lines[index].text):
            index += 1
            continue
        end = index
        while end + 1 < len(lines) and _continues(lines[end + 1], lines[index : end + 1]):
            end += 1
        blocks.append((index, end))
        index = end + 1
    return blocks


def headline(block: list[LogLine]) -> str:
    """The line that names the error: the exception line of a traceback, else the first error line."""
    if any(_TRACEBACK_START.match(line.text) for line in block):
        named = [line.text for line in block if not _is_trace_scaffolding(line.text)]
        if named:
            return named[-1]  # in a chained traceback the last exception is the one that escaped
    return next((line.text for line in block if is_error_line(line.text)), block[0].text)


def _is_trace_scaffolding(text: str) -> bool:
    return text[:1].isspace() or bool(_TRACEBACK_START.match(text) or _CHAIN.match(text))


def summarise_errors(events: Iterable[dict[str, Any]], *, context: int = CONTEXT_LINES) -> list[ErrorSignature]:
    """Error signatures in `events`, most frequent first (ties: earliest first)."""
    found: dict[str, ErrorSignature] = {}
    for stream, lines in lines_by_stream(events).items():
        for start, end in error_blocks(lines):
            block = lines[start : end + 1]
            signature = normalise(headline(block))
            at = block[0].at
            seen = found.get(signature)
            if seen is None:
                sample = [line.text[:_MAX_SAMPLE_LINE] for line in lines[max(0, start - context) : end + 1 + context]]
                found[signature] = ErrorSignature(signature, 1, at, at, stream, sample)
                continue
            seen.count += 1
            seen.first_seen, seen.last_seen = min(seen.first_seen, at), max(seen.last_seen, at)
    return sorted(found.values(), key=lambda s: (-s.count, s.first_seen))


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
class ErrorScan:
    log_group: str
    start: datetime
    end: datetime
    signatures: list[ErrorSignature]
    events_scanned: int
    truncated: bool

    @property
    def total(self) -> int:
        return sum(s.count for s in self.signatures)

    @property
    def first_error_at(self) -> datetime | None:
        return min((s.first_seen for s in self.signatures), default=None)

    @property
    def last_error_at(self) -> datetime | None:
        return max((s.last_seen for s in self.signatures), default=None)


async def scan_errors(ctx: CheckContext, log_group: str, start: datetime, end: datetime) -> ErrorScan:
    """Read every event of `log_group` in [start, end] and summarise its errors. Raises AwsCheckError."""
    batch = await read_events(ctx, log_group, start, end)
    return ErrorScan(log_group, start, end, summarise_errors(batch.events), len(batch.events), batch.truncated)


# --- the check -------------------------------------------------------------------------------------------------


@check("aws.log_errors", each=aws_items("log_groups"), layer=Layer.symptom, timeout_s=30)
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
