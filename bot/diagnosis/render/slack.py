"""Slack Block Kit for diagnoses. All text that did not come from us is escaped; every message stays in limits."""

from __future__ import annotations

import json
from typing import Any

from bot.slack.mrkdwn import SECTION_TEXT_MAX, escape, inert, one_line, truncate
from checks.model import CheckResult, Status, Verdict

ICONS = {Status.ok: ":white_check_mark:", Status.warn: ":warning:", Status.fail: ":x:",
         Status.error: ":grey_question:", Status.skipped: ":fast_forward:"}
EVIDENCE_MAX = 1500


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, SECTION_TEXT_MAX)}}


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(text, SECTION_TEXT_MAX)}]}


def progress_message(service: str, done: int, total: int, counts: dict[str, int]) -> tuple[str, list[dict]]:
    tally = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "waiting for the first result"
    text = f"Diagnosing {service}: {done}/{total} checks done ({tally})"
    blocks = [section(f":mag: *Diagnosing `{escape(service)}`* — {done}/{total} checks done"), context(escape(tally))]
    return text, blocks


def verdict_message(verdict: Verdict, *, duration_s: float | None = None) -> tuple[str, list[dict]]:
    """The parent message once the run is over: the verdict in one or two lines, the top findings below."""
    icon = ICONS[verdict.status]
    sev = f" · suggested severity *{verdict.severity}*" if verdict.severity else ""
    took = f" · {duration_s:.1f}s" if duration_s is not None else ""
    tally = ", ".join(f"{n} {s}" for s, n in sorted(verdict.counts.items()))
    text = escape(f"{verdict.target}: {one_line(verdict.headline, 300)}")  # notifications parse mentions too
    blocks = [section(f"{icon} *`{escape(verdict.target)}`*: {inert(verdict.headline)}"),
              context(escape(f"{tally}{took}") + sev + " · details in the thread")]
    for finding in verdict.findings[:3]:
        lines = [f"{ICONS[finding.status]} *{inert(finding.summary)}*"]
        if finding.resource:
            lines.append(f"Resource: `{inert(finding.resource)}`")
        if finding.hint:
            lines.append(f"Next: {inert(finding.hint)}")
        blocks.append(section("\n".join(lines)))
    return truncate(text, 3000), blocks


def result_message(result: CheckResult) -> tuple[str, list[dict]]:
    """One threaded reply for one check result."""
    head = f"{ICONS[result.status]} *{escape(result.check)}* `{escape(result.target)}` — {inert(result.summary)}"
    blocks = [section(head)]
    details = []
    if result.resource:
        details.append(f"*Resource:* `{inert(result.resource)}`")
    if result.hint:
        details.append(f"*Next:* {inert(result.hint)}")
    if details:
        blocks.append(section("\n".join(details)))
    if result.evidence and result.status.is_problem:
        # inert(): a ``` inside evidence (log lines, server answers) must not close the code block early
        blocks.append(section("```" + inert(truncate(_evidence_text(result.evidence), EVIDENCE_MAX)) + "```"))
    blocks.append(context(f"{result.status.value} · {result.duration_ms} ms"))
    return escape(f"{result.status.value}: {result.check} {result.target} — {one_line(result.summary)}"), blocks


def grouped_message(results: list[CheckResult]) -> tuple[str, list[dict]]:
    """Many unremarkable results in one reply, so a 25-check run does not flood the thread."""
    lines = [f"{ICONS[r.status]} {escape(r.check)} `{escape(r.target)}` — {inert(one_line(r.summary, 120))}"
             for r in results]
    blocks, chunk = [], []
    for line in lines:  # pack lines into sections below the 3,000-character limit
        if sum(len(x) + 1 for x in chunk) + len(line) > SECTION_TEXT_MAX - 50:
            blocks.append(section("\n".join(chunk)))
            chunk = []
        chunk.append(line)
    if chunk:
        blocks.append(section("\n".join(chunk)))
    return f"{len(results)} checks with nothing to report", blocks[:45]


def _evidence_text(evidence: dict[str, Any]) -> str:
    return json.dumps(evidence, indent=1, default=str, ensure_ascii=False)
