"""Trends across incidents, from the records the bot already keeps: `/incident report [30d|90d] [service]` and
`chatops report --since 30d --format markdown|json`.

    incidents       declared in the window (and of the service, when one is named), by severity and by service;
                    a severity is the incident's severity now (after any raise)
    MTTA            first acknowledgement − first page (Paging.acked_at − first_paged_at), incidents paged and acked
    MTTR            resolution − declaration, resolved incidents
                    both per severity as the median and the p90 (nearest rank: the smallest value with at least
                    90 % of the values at or below it), with how many met the target: the acknowledgement target
                    is the policy's ack timeout of that severity (when the policy is installed; else the runbook's
                    "respond within"), the resolution target the runbook's "respond within" (P0 15 min …)
    pages           per target (a Slack user, or a provider and its target), from each incident's page orders
    escalations     page orders beyond the first level, or by the escalation timer, or by hand, per target
    recurring       the same check failing on the same resource in more than one incident of the window
                    (the findings index written by bot/writeup/install.record_findings)
    follow-ups      open action items of the window's incidents (bot/writeup/trackers/export.followups)
    by week         incidents per severity in each 7-day slice of the window from its start (the chart's bars)

Only the window's records are read (the store's index by declaration time), in pipelined batches, and parsed as
plain JSON (only the fields used): a 30-day report costs the same after years of incidents
(`python -m benchmarks lists`, `python -m benchmarks postmortem`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from bot.queue.replies import as_text
from bot.runtime import Runtime
from bot.writeup.postmortem.facts import RESPOND_WITHIN_S, fmt_duration

SINCE = re.compile(r"^(\d{1,4})([dhw])$", re.IGNORECASE)
UNIT_S = {"h": 3600, "d": 86400, "w": 7 * 86400}
WEEK_S = UNIT_S["w"]
SEVERITIES = ("P0", "P1", "P2", "P3")
TOP = 10  # people, services and recurring findings shown in text


def parse_since(text: str) -> float:
    """`30d` / `90d` / `12h` / `2w` → seconds; ValueError with what to type otherwise."""
    match = SINCE.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"`{text[:20]}` is not a period: use 30d, 90d, 12h or 2w")
    return int(match.group(1)) * UNIT_S[match.group(2).lower()]


@dataclass
class Stat:
    count: int
    median_s: float | None
    p90_s: float | None
    target_s: float | None
    within_target: int


@dataclass
class Report:
    since_s: float
    start: float
    end: float
    service: str | None
    incidents: int
    by_severity: dict[str, int]
    by_service: dict[str, int]
    mtta: dict[str, Stat]
    mttr: dict[str, Stat]
    pages: dict[str, int]
    escalations: dict[str, int]
    recurring: list[dict[str, Any]]
    open_incidents: int
    open_followups: int = 0
    followups: list[dict[str, Any]] = field(default_factory=list)
    by_week: list[dict[str, int]] = field(default_factory=list)  # oldest week first; the chart draws it

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def p90(values: list[float]) -> float | None:
    """Nearest rank: the smallest value with at least 90 % of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(0.9 * len(ordered)) - 1, 0)]


def stat(values: list[float], target: float | None) -> Stat:
    within = sum(1 for v in values if target is not None and v <= target)
    return Stat(len(values), statistics.median(values) if values else None, p90(values), target, within)


def compute(records: list[dict[str, Any]], *, since_s: float, now: float, service: str | None = None,
            ack_targets: dict[str, float] | None = None,
            findings: dict[str, set[str]] | None = None) -> Report:
    """The report over incident records (as stored: Incident JSON, parsed). Pure."""
    start = now - since_s
    chosen = select(records, start, service)
    ids = {str(r["id"]) for r in chosen}
    by_sev: dict[str, list[dict[str, Any]]] = {s: [] for s in SEVERITIES}
    for r in chosen:
        by_sev.setdefault(str(r.get("severity")), []).append(r)
    targets = {s: (ack_targets or {}).get(s, RESPOND_WITHIN_S.get(s)) for s in by_sev}
    pages, escalations = _paging(chosen)
    return Report(
        since_s=since_s, start=start, end=now, service=service, incidents=len(chosen),
        by_severity={s: len(rs) for s, rs in by_sev.items()},
        by_service=dict(Counter(str(r.get("service") or "(none)") for r in chosen).most_common()),
        mtta={s: stat([m for r in rs if (m := _mtta(r)) is not None], targets[s]) for s, rs in by_sev.items()},
        mttr={s: stat([m for r in rs if (m := _mttr(r)) is not None], RESPOND_WITHIN_S.get(s))
              for s, rs in by_sev.items()},
        pages=dict(pages.most_common()), escalations=dict(escalations.most_common()),
        recurring=_recurring(findings or {}, ids),
        open_incidents=sum(1 for r in chosen if r.get("status") != "resolved"),
        by_week=weekly(chosen, start, since_s))


def weekly(records: list[dict[str, Any]], start: float, since_s: float) -> list[dict[str, int]]:
    """Incidents per severity in each week of the window, counted from its start (the last week may be short)."""
    weeks = [dict.fromkeys(SEVERITIES, 0) for _ in range(max(math.ceil(since_s / WEEK_S), 1))]
    for r in records:
        week = min(int((float(r["declared_at"]) - start) // WEEK_S), len(weeks) - 1)
        severity = str(r.get("severity"))
        weeks[week][severity] = weeks[week].get(severity, 0) + 1
    return weeks


def select(records: list[dict[str, Any]], start: float, service: str | None) -> list[dict[str, Any]]:
    """The incidents declared since `start` (of `service`, when one is named)."""
    return [r for r in records if float(r.get("declared_at") or 0) >= start
            and (service is None or r.get("service") == service)]


def _mtta(r: dict[str, Any]) -> float | None:
    paging = r.get("paging") or {}
    acked, paged = paging.get("acked_at"), paging.get("first_paged_at")
    return max(float(acked) - float(paged), 0.0) if acked and paged else None


def _mttr(r: dict[str, Any]) -> float | None:
    resolved = r.get("resolved_at")
    return max(float(resolved) - float(r["declared_at"]), 0.0) if resolved else None


def _paging(records: list[dict[str, Any]]) -> tuple[Counter[str], Counter[str]]:
    pages: Counter[str] = Counter()
    escalations: Counter[str] = Counter()
    for r in records:
        for order in (r.get("paging") or {}).get("orders") or []:
            if order.get("withheld"):  # nobody was paged by it: acknowledged or resolved before its turn
                continue
            escalated = int(order.get("level") or 1) > 1 or order.get("reason") in ("timer", "manual")
            for target in _targets(order.get("routes") or {}):
                pages[target] += 1
                if escalated:
                    escalations[target] += 1
    return pages, escalations


def _targets(routes: dict[str, list[str]]) -> list[str]:
    """A Slack user by id; a provider's target as `provider:id` (the provider alone for its default target)."""
    out = []
    for provider, ids in routes.items():
        for target in ids or [""]:
            out.append(target if provider == "slack" and target else f"{provider}:{target}" if target else provider)
    return out


def _recurring(findings: dict[str, set[str]], ids: set[str]) -> list[dict[str, Any]]:
    out = []
    for key, incidents in findings.items():
        mine = sorted(incidents & ids, key=lambda i: int(i.split("-")[-1]) if i.split("-")[-1].isdigit() else 0)
        if len(mine) > 1:
            check, _, target = key.partition("\t")
            out.append({"check": check, "target": target, "incidents": mine})
    return sorted(out, key=lambda f: (-len(f["incidents"]), f["check"], f["target"]))


# ------------------------------------------------------------------------------------------------ from Redis

def _finding_key(rt: Runtime, finding: str) -> str:
    return rt.key("wu", "finding", hashlib.sha256(finding.encode()).hexdigest()[:24])


async def record_recurring(rt: Runtime, incident_id: str, findings: list[dict[str, Any]]) -> None:
    """Index `check<TAB>target` → the incidents it failed in, for failing and warning findings (a check that
    could not run is no finding), and the incident → its findings, which a report reads for its window's
    incidents only. Sets, so runs of two incidents racing both land; re-recording is a no-op.

        wu:findings              set of `check<TAB>target`
        wu:finding:<digest>      set of incident ids
        wu:findings:of:<id>      set of `check<TAB>target` failing in that incident
        wu:findings:of:built     set once the per-incident sets were filled from the others (older deployments)"""
    keys = {f"{f['check']}\t{f.get('target') or ''}" for f in findings if f.get("status") in ("fail", "warn")}
    if not keys:
        return
    pipe = rt.redis.pipeline(transaction=False)
    pipe.sadd(rt.key("wu", "findings"), *keys)
    pipe.sadd(rt.key("wu", "findings", "of", incident_id), *keys)
    for key in keys:
        pipe.sadd(_finding_key(rt, key), incident_id)
    await pipe.execute()


async def load_findings(rt: Runtime, ids: list[str]) -> dict[str, set[str]]:
    """`check<TAB>target` → which of the incidents `ids` it failed in: their own sets are read, not every finding
    recorded since the bot started."""
    await _ensure_findings_of(rt)
    async with rt.redis.pipeline(transaction=False) as pipe:
        for incident in ids:
            pipe.smembers(rt.key("wu", "findings", "of", incident))
        members = await pipe.execute() if ids else []
    found: dict[str, set[str]] = {}
    for incident, keys in zip(ids, members, strict=True):
        for key in keys:
            found.setdefault(as_text(key), set()).add(incident)
    return found


async def _ensure_findings_of(rt: Runtime) -> None:
    """Findings recorded before the per-incident sets existed are copied into them once."""
    built = rt.key("wu", "findings", "of", "built")
    if await rt.redis.exists(built):
        return
    keys = sorted(as_text(k) for k in await rt.redis.smembers(rt.key("wu", "findings")))
    async with rt.redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.smembers(_finding_key(rt, key))
        members = await pipe.execute() if keys else []
    pipe = rt.redis.pipeline(transaction=False)
    for key, incidents in zip(keys, members, strict=True):
        for incident in incidents:
            pipe.sadd(rt.key("wu", "findings", "of", as_text(incident)), key)
    pipe.set(built, 1)
    await pipe.execute()


async def load_records(rt: Runtime, start: float) -> list[dict[str, Any]]:
    """The incidents declared since `start`, through the store's index by declaration time, in batches."""
    from bot.writeup.view import store_of

    records: list[dict[str, Any]] = []
    async for raws in store_of(rt).declared_since(start):
        records.extend(json.loads(raw) for raw in raws)
    return records


async def build_report(rt: Runtime, *, since_s: float, service: str | None = None, now: float | None = None,
                       include_private: bool = True) -> Report:
    """`include_private=False` (Slack, for someone who is no incident admin): private incidents are left out."""
    now = time.time() if now is None else now
    records = [r for r in await load_records(rt, now - since_s) if include_private or not r.get("private")]
    report = compute(records, since_s=since_s, now=now, service=service, ack_targets=_ack_targets(rt),
                     findings=await load_findings(rt, [str(r["id"]) for r in records]))
    await _followups(rt, report, {str(r["id"]) for r in select(records, report.start, service)})
    return report


def _ack_targets(rt: Runtime) -> dict[str, float]:
    from bot.incidents.service import Incidents

    ctx = rt.feature(Incidents)
    if ctx is None:
        return {}
    return {s: ctx.policy.ack_timeout_s(s) for s in SEVERITIES}


async def _followups(rt: Runtime, report: Report, ids: set[str]) -> None:
    """The open action items of the report's incidents, oldest first."""
    from bot.writeup.trackers.export import followups

    report.followups = [{"incident": f.incident, "text": f.text, "owner": f.owner, "age_s": report.end - f.at,
                         "ticket": (f.ticket or {}).get("key")} for f in await followups(rt) if f.incident in ids]
    report.open_followups = len(report.followups)


# ------------------------------------------------------------------------------------------------ rendering

def period(seconds: float) -> str:
    """`30d`, `12h`: the period as it was asked for."""
    return f"{seconds / 86400:g}d" if seconds % 86400 == 0 else f"{seconds / 3600:g}h"


def _d(seconds: float | None) -> str:
    return fmt_duration(seconds) if seconds is not None else "—"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def markdown(report: Report) -> str:
    """The report as Markdown (the CLI's default; a file or a wiki page)."""
    span = f"last {period(report.since_s)}" + (f", service `{report.service}`" if report.service else "")
    lines = [f"# Incident report ({span})", "",
             f"{_n(report.incidents, 'incident')} ({report.open_incidents} still open), "
             f"{_n(report.open_followups, 'open follow-up')}.", "",
             "| Severity | Incidents | MTTA median | MTTA p90 | acked within target | MTTR median | MTTR p90 | "
             "resolved within target |", "|---|---|---|---|---|---|---|---|"]
    for sev in SEVERITIES:
        a, r = report.mtta[sev], report.mttr[sev]
        lines.append(f"| {sev} | {report.by_severity.get(sev, 0)} | {_d(a.median_s)} | {_d(a.p90_s)} | "
                     f"{a.within_target}/{a.count} (≤ {_d(a.target_s)}) | {_d(r.median_s)} | {_d(r.p90_s)} | "
                     f"{r.within_target}/{r.count} (≤ {_d(r.target_s)}) |")
    lines += ["", "## By service", "", *(f"- `{s}`: {n}" for s, n in list(report.by_service.items())[:TOP])]
    lines += ["", "## Pages and escalations per person", "", "| Target | Pages | Escalations |", "|---|---|---|",
              *(f"| {t} | {n} | {report.escalations.get(t, 0)} |" for t, n in list(report.pages.items())[:TOP])]
    lines += ["", "## Recurring findings", ""]
    lines += [f"- `{f['check']}` on `{f['target']}`: {', '.join(f['incidents'])}" for f in report.recurring[:TOP]] \
        or ["- none"]
    lines += ["", "## Open follow-ups", ""]
    lines += [f"- {f['incident']} ({_d(f['age_s'])} old): {f['text'][:120]}" + (f" — {f['ticket']}" if f['ticket']
                                                                                 else "")
              for f in report.followups[:TOP]] or ["- none"]
    return "\n".join(lines) + "\n"


def slack_text(report: Report, *, note: str = "") -> str:
    """The report as a Slack message (mrkdwn has no tables: one line per severity), within what an answer may
    carry: at most TOP of each list and FALLBACK_TEXT_MAX characters in all, "…and N more" for the rest."""
    from bot.slack.mrkdwn import FALLBACK_TEXT_MAX, escape, fit_lines

    span = f"last {period(report.since_s)}" + (f", `{escape(report.service)}`" if report.service else "")
    lines = [f"*Incident report* ({span}): {_n(report.incidents, 'incident')}, {report.open_incidents} open, "
             f"{_n(report.open_followups, 'open follow-up')}"]
    for sev in SEVERITIES:
        a, r = report.mtta[sev], report.mttr[sev]
        if report.by_severity.get(sev):
            lines.append(f"• *{sev}* × {report.by_severity[sev]}: MTTA {_d(a.median_s)} median, {_d(a.p90_s)} p90 "
                         f"({a.within_target}/{a.count} within {_d(a.target_s)}); MTTR {_d(r.median_s)} median, "
                         f"{_d(r.p90_s)} p90 ({r.within_target}/{r.count} within {_d(r.target_s)})")
    if report.by_service:
        lines.append("By service: " + _top([f"`{escape(s)}` {n}" for s, n in report.by_service.items()]))
    if report.pages:
        lines.append("Pages (escalations): " + _top(
            [f"{_who(t)} {n} ({report.escalations.get(t, 0)})" for t, n in report.pages.items()]))
    for f in report.recurring[:TOP]:
        lines.append(f"Recurring: `{escape(f['check'])}` on `{escape(f['target'])}` in {_top(f['incidents'])}")
    if len(report.recurring) > TOP:
        lines.append(f"…and {len(report.recurring) - TOP} more recurring findings (`chatops report` lists them)")
    room = FALLBACK_TEXT_MAX - (len(note) + 1 if note else 0)
    return fit_lines(lines, room) + (f"\n{note}" if note else "")


def _top(items: list[str]) -> str:
    """The first TOP items, comma-separated, and how many more there are."""
    shown = ", ".join(items[:TOP])
    return shown + (f" …and {len(items) - TOP} more" if len(items) > TOP else "")


def _who(target: str) -> str:
    return f"<@{target}>" if re.fullmatch(r"[UW][A-Z0-9]+", target) else f"`{target}`"


__all__ = ["Report", "build_report", "compute", "markdown", "p90", "parse_since", "record_recurring", "slack_text"]
