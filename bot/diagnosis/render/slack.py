"""Slack Block Kit for diagnoses. All text that did not come from us is escaped; every message stays in limits."""

from __future__ import annotations

import hashlib
import json

from bot.diagnosis.render.text import change_line, change_lines, evidence_table
from bot.slack.mrkdwn import (
    BLOCK_TEXT_BUDGET,
    and_more,
    context,
    escape,
    fit_blocks,
    fit_lines,
    inert,
    one_line,
    pack_lines,
    page_lines,
    section,
    truncate,
)
from checks.compare import RunDiff
from checks.fixes import FixOffer
from checks.model import CheckResult, Status, Verdict

ICONS = {Status.ok: ":white_check_mark:", Status.warn: ":warning:", Status.fail: ":x:",
         Status.error: ":grey_question:", Status.skipped: ":fast_forward:"}
EVIDENCE_MAX = 1500
TOP_FINDINGS = 3  # on the parent message; all of them are in the thread
FINDING_MAX = 2000  # each of the top findings, so three of them and the headline fit in one message
CHANGES_MAX = 1500  # the "since the last run" list on the parent; the thread has every check
CHANGES_SHOWN = 8
FIX_ACTION = "remediation_offer"  # a fix's button; its value is `offer_ref` (bot/remediation resolves it)
FIXES_SHOWN = 5


def offer_digest(offer: FixOffer) -> str:
    """Names one offer of a run: the button carries this, never the parameters themselves."""
    return hashlib.sha256(json.dumps([offer.action, offer.params], sort_keys=True).encode()).hexdigest()[:12]


def offer_ref(run_id: str, offer: FixOffer) -> str:
    return f"{run_id}:{offer_digest(offer)}"


def fix_buttons(run_id: str, fixes: list[FixOffer], block_id: str) -> dict:
    """An actions block with one button per offer (the first few): the preview opens on click."""
    elements = [{"type": "button", "action_id": f"{FIX_ACTION}:{i}", "value": offer_ref(run_id, offer),
                 "text": {"type": "plain_text", "text": one_line(offer.label, 75)}}
                for i, offer in enumerate(fixes[:FIXES_SHOWN])]
    return {"type": "actions", "block_id": block_id, "elements": elements}


def progress_message(service: str, done: int, total: int, counts: dict[str, int]) -> tuple[str, list[dict]]:
    tally = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "waiting for the first result"
    text = f"Diagnosing {service}: {done}/{total} checks done ({tally})"
    blocks = [section(f":mag: *Diagnosing `{escape(service)}`* — {done}/{total} checks done"), context(escape(tally))]
    return text, blocks


def verdict_message(verdict: Verdict, *, duration_s: float | None = None,
                    diff: RunDiff | None = None) -> tuple[str, list[dict]]:
    """The parent message once the run is over: the verdict in one or two lines, what changed since the last
    run, the top findings below."""
    icon = ICONS[verdict.status]
    sev = f" · suggested severity *{verdict.severity}*" if verdict.severity else ""
    took = f" · {duration_s:.1f}s" if duration_s is not None else ""
    tally = ", ".join(f"{n} {s}" for s, n in sorted(verdict.counts.items()))
    since = f" — {change_line(diff)}" if diff else ""
    text = escape(f"{verdict.target}: {one_line(verdict.headline, 300)}{since}")  # notifications parse mentions
    blocks = [section(f"{icon} *`{escape(verdict.target)}`*: {inert(verdict.headline)}"),
              context(escape(f"{tally}{took}") + sev + " · details in the thread")]
    if diff:
        blocks.append(changes_section(diff))
    for finding in verdict.findings[:TOP_FINDINGS]:
        lines = [f"{ICONS[finding.status]} *{inert(finding.summary)}*"]
        if finding.resource:
            lines.append(f"Resource: `{inert(finding.resource)}`")
        if finding.hint:
            lines.append(f"Next: {inert(finding.hint)}")
        blocks.append(section(truncate("\n".join(lines), FINDING_MAX)))
    if len(verdict.findings) > TOP_FINDINGS:
        blocks.append(context(and_more(len(verdict.findings) - TOP_FINDINGS, "see the thread")))
    return truncate(text, 3000), fit_blocks(blocks, hint="see the thread")


def changes_section(diff: RunDiff) -> dict:
    """What changed since the last run of this service here: the counts line, then each check and target."""
    lines = [f"• {inert(one_line(line, 300))}" for line in change_lines(diff)]
    shown = fit_lines(lines, CHANGES_MAX, max_lines=CHANGES_SHOWN) if lines else ""
    return section(truncate(f":arrows_counterclockwise: *{escape(change_line(diff))}*" +
                            (f"\n{shown}" if shown else ""), FINDING_MAX))


def result_message(result: CheckResult, run_id: str = "") -> tuple[str, list[dict]]:
    """One threaded reply for one check result, with a button for each fix it offers."""
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
        blocks.append(section("```" + inert(truncate(evidence_table(result.evidence), EVIDENCE_MAX)) + "```"))
    if result.fixes and run_id:
        blocks.append(fix_buttons(run_id, result.fixes, f"fix:{run_id}:{result.check}"[:255]))
    blocks.append(context(f"{result.status.value} · {result.duration_ms} ms"))
    return escape(f"{result.status.value}: {result.check} {result.target} — {one_line(result.summary)}"), blocks


def grouped_message(results: list[CheckResult]) -> tuple[str, list[dict]]:
    """Many unremarkable results in one reply, so a 25-check run does not flood the thread."""
    lines = [f"{ICONS[r.status]} {escape(r.check)} `{escape(r.target)}` — {inert(one_line(r.summary, 120))}"
             for r in results]
    shown = page_lines(lines, BLOCK_TEXT_BUDGET - 500)[0]  # one message's worth; the rest is counted, not lost
    blocks = [section(chunk) for chunk in pack_lines(shown)]
    if len(shown) < len(lines):
        blocks.append(context(and_more(len(lines) - len(shown))))
    return f"{len(results)} checks with nothing to report", blocks
