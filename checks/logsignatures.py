"""Error signatures in log lines, whichever cloud wrote them: the pure parsing behind `aws.log_errors` and
`gcp.logging`, with no I/O, tested on plain strings.

`summarise_errors(events)` finds error lines (error / exception / traceback, any case), joins a traceback into one
block, takes context lines from the same stream, normalises away what differs between occurrences (uuids, request
ids, hex, numbers, timestamps, IPs) and counts each signature with its first and last sighting. Events are dicts
in CloudWatch's shape (`timestamp` in ms, `logStreamName`, `message`); other sources convert to it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

CONTEXT_LINES = 3  # lines of the same stream shown before and after an error

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


class SignatureTotals:
    """What a scan of one log source adds up to; its dataclass holds `signatures`."""

    signatures: list[ErrorSignature]

    @property
    def total(self) -> int:
        return sum(s.count for s in self.signatures)

    @property
    def first_error_at(self) -> datetime | None:
        return min((s.first_seen for s in self.signatures), default=None)


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
