"""Terminal text and JSON for `chatops diagnose` (and the terminal chat's view of block messages)."""

from __future__ import annotations

import json
from typing import Any

from checks.model import CheckResult, Status, Verdict

MARKS = {Status.ok: "ok  ", Status.warn: "WARN", Status.fail: "FAIL", Status.error: "ERR ", Status.skipped: "skip"}


def diagnosis_text(verdict: Verdict, results: list[CheckResult]) -> str:
    lines = [f"{verdict.target}: {verdict.status.value.upper()} — {verdict.headline}"]
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


def diagnosis_json(verdict: Verdict, results: list[CheckResult]) -> str:
    document: dict[str, Any] = {
        "target": verdict.target,
        "status": _overall(verdict.status).value,
        "headline": verdict.headline,
        "severity": verdict.severity,
        "checks": [r.model_dump(mode="json") for r in results],
        "findings": [f.model_dump(mode="json") for f in verdict.findings],
    }
    return json.dumps(document, indent=2, default=str)


def _overall(status: Status) -> Status:
    """The JSON contract has ok|warn|fail|error; a run of only skipped checks is ok."""
    return Status.ok if status is Status.skipped else status


def blocks_to_text(blocks: list[dict] | None, fallback: str) -> str:
    """Plain text of a Block Kit message, for the terminal chat."""
    if not blocks:
        return fallback
    parts: list[str] = []
    for block in blocks:
        if block.get("type") in ("section", "header") and block.get("text"):
            parts.append(block["text"].get("text", ""))
        elif block.get("type") == "context":
            parts.append("  " + " ".join(e.get("text", "") for e in block.get("elements", [])))
        elif block.get("type") == "actions":
            parts.append("  " + "  ".join(f"[{e.get('text', {}).get('text', '')}]" for e in block.get("elements", [])))
    return unescape("\n".join(parts))


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").replace("\u200b", "")
