"""The parts of the draft that the timeline knows but nobody wrote down: when the impact started, which findings
are root-cause candidates, which thread messages carried the decisions, what the bot said on its own, and what
was done to remediate. Pure functions over timeline entries (facts.py calls them); nothing here reads Redis.

Time to detect — the earliest of, before the declaration:
    an alert instance's `startsAt` (Alertmanager, Grafana, Datadog; for CloudWatch the alarm's state change),
    recorded as EntryKind.ALERT data.starts_at;
    the first error signature a diagnosis found in the service's logs (a finding whose evidence carries a
    `first_seen`/`first_error_at` time: aws.log_errors, gcp.log_errors, the Beanstalk check); an error within
    a minute of the scan's `window_start` is said to be possibly later than the real start.
  Without either, "unknown" with the reason.

Root-cause candidates — each distinct finding (check + target) once, however many runs reported it: when it
first failed and when it passed again (the first later run of the same service that no longer reports it).

Discussion — the heuristic, applied to people's messages and replies that are not key events (those are in the
timeline already), not action items (those are listed) and have at least DISCUSSION_MIN_WORDS words:
    +2  a reply in the thread of a key event (📌 / pinned) or of one of the bot's incident posts
    +2  a link to a deploy, a pipeline run or a dashboard (DEPLOY_OR_DASHBOARD)
    +1  written by the commander or a role holder
  Any message scoring ≥ 1 qualifies; the DISCUSSION_MAX highest (earlier first among equals) are quoted in time
  order, with author and time.

Bot chatter — reminders, catch-up summaries and alert updates are counted, not listed.

Remediation — entries of kind `remediation` (when the running version records them): what was done, by whom,
and the result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.incidents.timeline import Entry, EntryKind

DISCUSSION_MAX = 10
DISCUSSION_MIN_WORDS = 3
DEPLOY_OR_DASHBOARD = re.compile(
    r"https?://\S*(deploy|release|pipeline|actions/runs|/builds?/|/jobs?/|argo|spinnaker|jenkins|circleci|"
    r"grafana|dashboard|/d/|cloudwatch|datadog|kibana|newrelic|honeycomb|console\.aws)", re.IGNORECASE)
FIRST_ERROR_KEYS = ("first_error_at", "first_seen", "first_error")
SCAN_EDGE_S = 60.0
SCAN_EDGE_NOTE = "; errors from the start of the logs read, so they may have begun earlier"
REMEDIATION_KIND = "remediation"  # a timeline kind another part of the bot may record


@dataclass
class Detection:
    impact_start: float | None
    detected_at: float  # the declaration
    source: str  # what the impact start was read from
    reason: str = ""  # why it is unknown

    @property
    def seconds(self) -> float | None:
        return None if self.impact_start is None else max(self.detected_at - self.impact_start, 0.0)


@dataclass
class Candidate:
    check: str
    target: str
    status: str
    summary: str
    severity: str | None
    first_failed: float
    passed_again: float | None
    runs: int  # how many runs reported it
    evidence: list[tuple[str, str]] = field(default_factory=list)
    hint: str | None = None


@dataclass
class Quote:
    at: float
    actor: str | None
    text: str
    link: str | None
    why: list[str]


@dataclass
class Remediation:
    at: float
    actor: str | None
    what: str
    result: str


def parse_time(value: Any) -> float | None:
    """An ISO 8601 time (`2026-09-21T14:02:00Z`, with offset or fraction) or epoch seconds; None otherwise."""
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return None


def detection(entries: list[Entry], declared_at: float) -> Detection:
    """The earliest impact start recorded before the declaration (alert startsAt, or a first error in logs)."""
    starts: list[tuple[float, str]] = []
    for e in entries:
        if e.kind == EntryKind.ALERT and e.data.get("status", "firing") == "firing":
            at = parse_time(e.data.get("starts_at"))
            if at is not None:
                starts.append((at, f"alert startsAt ({e.data.get('source') or e.actor}: {e.text[:80]})".strip()))
        elif e.kind == EntryKind.DIAGNOSIS_FINDINGS:
            starts.extend(_first_errors(e))
    before = sorted(s for s in starts if s[0] <= declared_at)
    if before:
        return Detection(before[0][0], declared_at, before[0][1])
    return Detection(None, declared_at, "", "no alert start time and no first error in the service's logs was "
                                            "recorded before the declaration")


def _first_errors(e: Entry) -> list[tuple[float, str]]:
    out = []
    for f in e.data.get("findings") or []:
        evidence = f.get("evidence") or {}
        for key in FIRST_ERROR_KEYS:
            at = parse_time(evidence.get(key)) if isinstance(evidence, dict) else None
            if at is not None:
                source = f"first error in the logs ({f.get('check')} on {f.get('target') or '?'})"
                out.append((at, source + (SCAN_EDGE_NOTE if _at_scan_start(evidence, at) else "")))
    return out


def _at_scan_start(evidence: dict[str, Any], at: float) -> bool:
    """An error in the scan's first minute may only be the first one the scan read, not the first one logged."""
    start = parse_time(evidence.get("window_start"))
    return start is not None and at - start < SCAN_EDGE_S


def candidates(runs: list[Any]) -> list[Candidate]:
    """Distinct findings across diagnosis runs (CheckRun, time order), failing ones first, then by first failure."""
    seen: dict[tuple[str, str], Candidate] = {}
    for i, run in enumerate(runs):
        for f in run.findings:
            key = (f.check, f.target)
            if key not in seen:
                seen[key] = Candidate(f.check, f.target, f.status, f.summary, f.severity, run.at,
                                      _passed_again(runs[i + 1:], run.service, key), 0, f.evidence, f.hint)
            seen[key].runs += 1
    rank = {"fail": 0, "error": 1, "warn": 2}
    return sorted(seen.values(), key=lambda c: (rank.get(c.status, 3), c.first_failed))


def _passed_again(later: list[Any], service: str, key: tuple[str, str]) -> float | None:
    for run in later:
        if run.service == service and run.status not in ("error", "skipped", "") and \
                key not in {(f.check, f.target) for f in run.findings}:
            return float(run.at)
    return None


def discussion(entries: list[Entry], key_threads: set[str], responders: set[str],
               link: Any) -> list[Quote]:
    """The messages that carried decisions or answers, by the heuristic in this module's docstring."""
    scored: list[tuple[int, float, Quote]] = []
    for e in entries:
        if e.removed or e.key_event or e.kind not in (EntryKind.MESSAGE, EntryKind.REPLY) or e.data.get("action"):
            continue
        if len(e.text.split()) < DISCUSSION_MIN_WORDS:
            continue
        why = _reasons(e, key_threads, responders)
        if why:
            score = sum(weight for weight, _ in why)
            scored.append((score, e.at, Quote(e.at, e.actor, e.text, link(e), [w for _, w in why])))
    chosen = sorted(scored, key=lambda s: (-s[0], s[1]))[:DISCUSSION_MAX]
    return [q for _, _, q in sorted(chosen, key=lambda s: s[1])]


def _reasons(e: Entry, key_threads: set[str], responders: set[str]) -> list[tuple[int, str]]:
    why = []
    if e.is_reply and e.thread_ts in key_threads:
        why.append((2, "reply to a key event"))
    if DEPLOY_OR_DASHBOARD.search(e.text):
        why.append((2, "links a deploy or dashboard"))
    if e.actor in responders:
        why.append((1, "by the commander or a role holder"))
    return why


CHATTER = {EntryKind.REMINDER: "status-update reminder", EntryKind.SUMMARY: "catch-up summary",
           EntryKind.ALERT: "alert update"}


def chatter(entries: list[Entry]) -> dict[str, int]:
    """What the bot said on its own, as counts (label → n), in CHATTER's order; kinds it never said are left out."""
    counts = dict.fromkeys(CHATTER.values(), 0)
    for e in entries:
        if not e.removed and e.kind in CHATTER:
            counts[CHATTER[e.kind]] += 1  # type: ignore[index]
    return {label: n for label, n in counts.items() if n}


def remediations(entries: list[Entry]) -> list[Remediation]:
    return [Remediation(e.at, e.actor, str(e.data.get("action") or e.text or "?"),
                        str(e.data.get("result") or e.data.get("status") or ""))
            for e in entries if e.kind == REMEDIATION_KIND and not e.removed]


__all__ = ["CHATTER", "DISCUSSION_MAX", "Candidate", "Detection", "Quote", "Remediation", "candidates",
           "chatter", "detection", "discussion", "parse_time", "remediations"]
