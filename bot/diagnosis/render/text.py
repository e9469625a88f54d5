"""Terminal text and JSON for `chatops diagnose`, a check's evidence as a table (Slack threads show it too), and
what changed since the last run in words every renderer shares."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from checks.compare import Change, RunDiff
from checks.model import CheckResult, Status, Verdict
from checks.schema import dump

MARKS = {Status.ok: "ok  ", Status.warn: "WARN", Status.fail: "FAIL", Status.error: "ERR ", Status.skipped: "skip"}


def diagnosis_text(verdict: Verdict, results: list[CheckResult], diff: RunDiff | None = None) -> str:
    lines = [f"{verdict.target}: {verdict.status.value.upper()} — {verdict.headline}"]
    if diff is not None:
        lines += [change_line(diff), *(f"  {line}" for line in change_lines(diff))]
    if verdict.severity:
        lines.append(f"suggested severity: {verdict.severity}")
    lines.append("")
    for result in results:
        lines.append(f"[{MARKS[result.status]}] {result.check} {result.target} ({result.duration_ms} ms)")
        lines.append(f"       {result.summary}")
        if result.status.is_problem and result.resource:
            lines.append(f"       resource: {result.resource}")
        if result.status.is_problem and result.hint:
            lines.append(f"       next: {result.hint}")
    if verdict.findings:
        lines += ["", "Findings, most likely cause first:"]
        for n, finding in enumerate(verdict.findings, 1):
            lines.append(f" {n}. [{finding.severity}] {finding.summary}")
            if finding.hint:
                lines.append(f"    next: {finding.hint}")
    return "\n".join(lines)


def evidence_table(evidence: dict[str, Any]) -> str:
    """A check's evidence as aligned `key  value` lines (nested mappings as `key.sub`, a list of mappings one row
    per item), easier to read in a thread or a terminal than a JSON dump."""
    rows = list(_evidence_rows(evidence, ""))
    width = max((len(key) for key, _ in rows), default=0)
    return "\n".join(f"{key.ljust(width)}  {value}" for key, value in rows)


def _evidence_rows(evidence: dict[str, Any], prefix: str) -> Iterator[tuple[str, str]]:
    for key, value in evidence.items():
        if isinstance(value, dict) and value:
            yield from _evidence_rows(value, f"{prefix}{key}.")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for n, item in enumerate(value, 1):  # samples, signatures: one row each
                yield f"{prefix}{key}[{n}]", " ".join(f"{k}={_evidence_value(v)}" for k, v in item.items())
        else:
            yield f"{prefix}{key}", _evidence_value(value)


def _evidence_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return ", ".join(str(v) for v in value) or "(none)"
    return json.dumps(value, default=str, ensure_ascii=False)


def diagnosis_json(verdict: Verdict, results: list[CheckResult], diff: RunDiff | None = None) -> str:
    document: dict[str, Any] = {
        "since_last_run": _diff_document(diff),
        "target": verdict.target,
        "status": _overall(verdict.status).value,
        "headline": verdict.headline,
        "severity": verdict.severity,
        "checks": [dump(r) for r in results],
        "findings": [dump(f) for f in verdict.findings],
    }
    return json.dumps(document, indent=2, default=str)


def _overall(status: Status) -> Status:
    """The JSON contract has ok|warn|fail|error; a run of only skipped checks is ok."""
    return Status.ok if status is Status.skipped else status


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").replace("\u200b", "")


# ------------------------------------------------------------------------------------------ since the last run

CHANGE_GROUPS = (("fixed", "fixed"), ("new", "new"), ("still_failing", "still failing"),
                 ("changed", "changed"))


def ago(seconds: float) -> str:
    """`40 s ago`, `4 min ago`, `2 h 5 min ago`."""
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min ago"


def change_line(diff: RunDiff) -> str:
    """"since the last run (4 min ago): 2 fixed, 0 new, 1 still failing" — the words every renderer uses."""
    return (f"since the last run ({ago(diff.elapsed_s)}): {len(diff.fixed)} fixed, {len(diff.new)} new, "
            f"{len(diff.still_failing)} still failing")


def change_lines(diff: RunDiff) -> list[str]:
    """One line per check and target that changed: `fixed: http.health http://… — All 5 samples returned 200`."""
    return [f"{label}: {change_text(c)}" for field, label in CHANGE_GROUPS for c in getattr(diff, field)]


def change_text(change: Change) -> str:
    notes = f" ({'; '.join(change.notes)})" if change.notes else ""
    return f"{change.check} {change.target} — {change.summary}{notes}"


def _diff_document(diff: RunDiff | None) -> dict[str, Any] | None:
    if diff is None:
        return None
    document: dict[str, Any] = {"previous_run": diff.previous_run, "seconds_ago": round(diff.elapsed_s, 1),
                                "line": change_line(diff)}
    for field, _label in CHANGE_GROUPS:
        document[field] = [{"check": c.check, "target": c.target, "before": c.before, "after": c.after,
                            "summary": c.summary, "notes": list(c.notes)} for c in getattr(diff, field)]
    return document


def diff_markdown(diff: RunDiff) -> str:
    """The change as Markdown (postmortems, exported write-ups)."""
    items = [f"- {label}: `{c.check}` `{c.target}` — {c.summary}" + (f" ({'; '.join(c.notes)})" if c.notes else "")
             for field, label in CHANGE_GROUPS for c in getattr(diff, field)]
    return "\n".join([f"**{change_line(diff).capitalize()}**", *items])
