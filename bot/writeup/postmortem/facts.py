"""The facts of a postmortem, taken from the incident record and its timeline — nothing invented, nothing judged.

`build_facts(incident, entries, ...)` is a pure function: the same incident and timeline give the same facts,
whether the timeline was captured live or back-filled. Everything here is plain text and numbers; the template
(bot/writeup/postmortem/templates/postmortem.md.j2) decides how it looks and escapes all of it.

Where each section comes from:

    summary        declared entry (title, first severity, service), severity entries, resolved entry
    milestones     detection = declaration; acknowledgement = first page_acked; mitigation = first status
                   `monitoring`; resolution = resolved
    timeline       key events (📌 or pinned messages) and the bot's actions, time order, each with a link
    metrics        time to acknowledge (from the first page), to mitigate and to resolve (from declaration)
    root cause     notes of `identified` status updates; each distinct diagnosis finding once, with when it first
                   failed and passed again (draft.candidates); remediation entries, if any
    detection      time to detect from an alert's startsAt or a first error in the logs (draft.detection)
    impact         the services' metrics, measured by assemble.py (impact.py) and passed in
    discussion     thread messages chosen by the heuristic in draft.py, quoted; bot chatter as counts
    action items   messages starting `action:`/`TODO:` or carrying the action reaction
    lessons        prompts seeded from what happened (acks within target, pages failed, severity raised...)
                   and from messages that say "luckily", "fortunately", "went well", "went wrong"...
    responders     roles (reporter, commanders, acknowledged, resolved) and everyone who wrote in the channel
    roles          the commander and each role's holder(s), with when they took it: commander entries (the
                   first names the commander from the declaration) and role entries
    supporting     diagnoses (checks run and results), pages sent/failed, acknowledgements, escalations
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from bot import durations
from bot.incidents.model import role_label
from bot.incidents.timeline import Entry, EntryKind
from bot.writeup.postmortem import draft
from bot.writeup.postmortem.draft import Candidate, Detection, Quote, Remediation
from bot.writeup.postmortem.impact import Impact
from bot.writeup.slacktext import plain
from bot.writeup.view import IncidentView

# How fast each severity must be answered (the runbook's table), for the "went well / went wrong" prompts.
RESPOND_WITHIN_S = {"P0": 15 * 60, "P1": 3600, "P2": 4 * 3600, "P3": 24 * 3600}


class InPostmortem(Enum):
    """What the postmortem makes of one kind of timeline entry."""

    TALK = "talk"  # people's words: counted, searched for key events, action items and lessons
    FINDINGS = "findings"  # a diagnosis run's findings, shown under that run
    EVENT = "event"  # a line of the timeline, in the bot's words (`_describe`)
    QUOTED = "quoted"  # ... followed by the text someone wrote with it
    LEFT_OUT = "left out"  # deliberately not in the postmortem


_E = EntryKind
# Every EntryKind, explicitly (tests/test_timeline_kinds.py checks that none is missing).
POSTMORTEM: dict[EntryKind, InPostmortem] = {
    _E.MESSAGE: InPostmortem.TALK, _E.REPLY: InPostmortem.TALK,
    _E.REACTION: InPostmortem.LEFT_OUT, _E.PIN: InPostmortem.LEFT_OUT,  # already folded into their message
    _E.MEMBER_JOINED: InPostmortem.LEFT_OUT, _E.ROLE: InPostmortem.EVENT,
    _E.DECLARED: InPostmortem.EVENT, _E.SEVERITY: InPostmortem.QUOTED, _E.STATUS: InPostmortem.QUOTED,
    _E.COMMANDER: InPostmortem.EVENT, _E.NOTE: InPostmortem.QUOTED, _E.RESOLVED: InPostmortem.QUOTED,
    _E.REMINDER: InPostmortem.EVENT, _E.ACTION_ITEM: InPostmortem.QUOTED,
    _E.PAGE_SENT: InPostmortem.EVENT, _E.PAGE_FAILED: InPostmortem.QUOTED,
    _E.PAGE_WITHHELD: InPostmortem.QUOTED, _E.PAGE_ACKED: InPostmortem.EVENT,
    _E.PAGE_RESOLVED: InPostmortem.LEFT_OUT,  # the PagerDuty alert closing is not the incident ending
    _E.ESCALATED: InPostmortem.QUOTED, _E.ALERT: InPostmortem.LEFT_OUT,
    _E.DIAGNOSIS_REQUESTED: InPostmortem.EVENT, _E.DIAGNOSIS: InPostmortem.EVENT,
    _E.DIAGNOSIS_FINDINGS: InPostmortem.FINDINGS, _E.REMEDIATION: InPostmortem.EVENT,
    _E.SUMMARY: InPostmortem.LEFT_OUT, _E.POSTMORTEM: InPostmortem.LEFT_OUT,  # the bot's own write-ups
}


def in_postmortem(kind: str) -> InPostmortem:
    """What the postmortem makes of `kind`; a kind this version does not know is left out."""
    return POSTMORTEM.get(kind, InPostmortem.LEFT_OUT)  # type: ignore[call-overload]
_LUCKY = re.compile(r"\b(lucky|luckily|fortunately|by chance|happened to|close call|near miss)\b", re.IGNORECASE)
_WELL = re.compile(r"\b(went well|worked well|helped a lot|good call|saved us)\b", re.IGNORECASE)
_WRONG = re.compile(r"\b(went wrong|didn'?t work|did not work|should have|took too long|confusing|"
                    r"no alert|wasn'?t alerted|missing (?:alert|runbook|dashboard))\b", re.IGNORECASE)
EVIDENCE_KEYS = 8


@dataclass
class Milestone:
    name: str
    at: float | None
    actor: str | None = None
    link: str | None = None
    note: str = ""  # plain text (user text allowed)


@dataclass
class Event:
    at: float
    kind: str
    what: str  # the bot's own words for what happened (may contain user-chosen values: always escaped)
    actor: str | None = None
    quote: str = ""  # user text, plain
    link: str | None = None
    edited: bool = False
    ref: str | None = None  # the diagnosis run, so its event links to the results thread


@dataclass
class SeveritySpan:
    severity: str
    start: float
    end: float

    @property
    def duration_s(self) -> float:
        return max(self.end - self.start, 0.0)


@dataclass
class Metric:
    name: str
    seconds: float | None
    start: str  # which start it counts from, said out loud
    end: str


@dataclass
class Finding:
    check: str
    target: str
    status: str
    summary: str
    severity: str | None = None
    evidence: list[tuple[str, str]] = field(default_factory=list)
    hint: str | None = None


@dataclass
class CheckRun:
    at: float
    service: str
    status: str
    headline: str
    counts: dict[str, int]
    findings: list[Finding]
    actor: str | None = None
    link: str | None = None


@dataclass
class ActionItem:
    at: float
    text: str
    owner: str | None
    done: bool
    source: str
    author: str | None = None
    link: str | None = None
    id: str = ""  # the timeline entry it came from: what a tracker ticket is keyed on
    due: str | None = None
    ticket: Any = None  # a trackers.Ticket once exported (assemble.py fills it in)
    owner_name: str | None = None  # what a ticket calls the owner


@dataclass
class PageEvent:
    at: float
    delivery: str
    severity: str
    level: int | None
    ok: bool
    error: str = ""
    reason: str = ""
    withheld: str = ""  # not sent on purpose: "acknowledged" or "resolved" before its turn (not a failure)


@dataclass
class Ack:
    at: float
    actor: str | None
    via: str
    after_s: float | None


@dataclass
class Responder:
    user: str
    roles: list[str]
    messages: int
    first_at: float


@dataclass
class RoleHolding:
    """One person holding one role from `at` (until the next holding of the same role, if any)."""

    role: str  # its label: "Commander", "Scribe", "Tech lead"
    user: str
    at: float
    by: str | None  # who assigned it; None for the commander at declaration


@dataclass
class Note:
    at: float
    actor: str | None
    text: str
    link: str | None = None


@dataclass
class Lessons:
    went_well: list[str] = field(default_factory=list)
    went_wrong: list[str] = field(default_factory=list)
    lucky: list[str] = field(default_factory=list)


@dataclass
class PostmortemFacts:
    incident_id: str
    title: str
    status: str
    severity: str
    declared_at: float
    generated_at: float
    resolved_at: float | None
    duration_s: float
    source: str
    channel: str | None
    link: str | None
    services: list[str]
    users_impacted: str | None
    severity_spans: list[SeveritySpan]
    milestones: list[Milestone]
    events: list[Event]
    metrics: list[Metric]
    root_cause_notes: list[Note]
    findings: list[Finding]
    resolution: Note | None
    action_items: list[ActionItem]
    lessons: Lessons
    responders: list[Responder]
    roles: list[RoleHolding]
    checks: list[CheckRun]
    pages: list[PageEvent]
    acks: list[Ack]
    escalations: list[Event]
    names: dict[str, str]
    message_count: int
    reply_count: int
    detection: Detection | None = None
    impact: Impact | None = None
    candidates: list[Candidate] = field(default_factory=list)
    discussion: list[Quote] = field(default_factory=list)
    chatter: dict[str, int] = field(default_factory=dict)
    remediations: list[Remediation] = field(default_factory=list)
    chart_link: str | None = None  # the timeline chart, once shared (publish.py)

    @property
    def owner(self) -> str | None:
        """Who owns the document: the commander at the end (the last holding of the role)."""
        return next((h.user for h in reversed(self.roles) if h.role == "Commander"), None)

    @property
    def is_resolved(self) -> bool:
        return self.resolved_at is not None

    def name(self, user: str | None) -> str:
        if not user:
            return "nobody"
        if user == "bot":
            return "the bot"
        return self.names.get(user, user)


class Permalinks:
    """Message links without a chat.getPermalink call each: Slack's links are `<base>/archives/<channel>/p<ts
    without the dot>` (plus `?thread_ts=…&cid=…` for a reply), so one real link (the header's) gives the base."""

    def __init__(self, example: str | None) -> None:
        self.base = example.split("/archives/", 1)[0] if example and "/archives/" in example else None

    def message(self, channel: str | None, ts: str | None, thread_ts: str | None = None) -> str | None:
        if not self.base or not channel or not ts:
            return None
        link = f"{self.base}/archives/{channel}/p{ts.replace('.', '')}"
        if thread_ts and thread_ts != ts:
            link += f"?thread_ts={thread_ts}&cid={channel}"
        return link


# ------------------------------------------------------------------------------------------------ building

def build_facts(incident: IncidentView, entries: Iterable[Entry], *, names: dict[str, str] | None = None,
                now: float | None = None, users_impacted: str | None = None,
                impact: Impact | None = None) -> PostmortemFacts:
    """The postmortem's facts. `entries` in time order (as Timeline.entries returns them)."""
    now = time.time() if now is None else now
    names = dict(names or {})
    links = Permalinks(incident.link)
    b = _Builder(incident, names, links, now)
    for entry in entries:
        b.take(entry)
    facts = b.facts(users_impacted)
    facts.impact = impact
    return facts


class _Builder:
    """One pass over the timeline, collecting each section; then `facts()` puts them together."""

    def __init__(self, incident: IncidentView, names: dict[str, str], links: Permalinks, now: float) -> None:
        self.incident, self.names, self.links, self.now = incident, names, links, now
        self.declared: Entry | None = None
        self.resolved: Entry | None = None
        self.severity_changes: list[Entry] = []
        self.first_ack: Entry | None = None
        self.first_page: Entry | None = None
        self.mitigated: Entry | None = None
        self.events: list[Event] = []
        self.notes: list[Note] = []
        self.findings_by_run: dict[str, tuple[Entry, list[Finding]]] = {}
        self.diagnoses: list[Entry] = []
        self.actions: list[ActionItem] = []
        self.pages: list[PageEvent] = []
        self.acks: list[Ack] = []
        self.escalations: list[Event] = []
        self.commanders: list[tuple[float, str, str]] = []  # (at, to, from)
        self.role_entries: list[Entry] = []
        self.posters: dict[str, list[float]] = {}  # user → [count, first at]
        self.lucky: list[str] = []
        self.well: list[str] = []
        self.wrong: list[str] = []
        self.reminders = 0
        self.fixes: list[Entry] = []  # fixes applied from Slack, for the Resolution
        self.all: list[Entry] = []
        self.messages = 0
        self.replies = 0

    # -- one entry --------------------------------------------------------------------------------------------

    def take(self, e: Entry) -> None:
        if e.removed:
            return
        self.all.append(e)
        use = in_postmortem(e.kind)
        if use is InPostmortem.TALK:
            self._message(e)
        elif use is InPostmortem.FINDINGS:
            run = str(e.data.get("run_id") or e.id)
            self.findings_by_run[run] = (e, [_finding(f) for f in e.data.get("findings") or []])
        elif use in (InPostmortem.EVENT, InPostmortem.QUOTED):
            self._action(e)

    def _message(self, e: Entry) -> None:
        if e.kind == EntryKind.REPLY:
            self.replies += 1
        else:
            self.messages += 1
        if e.actor:
            seen = self.posters.setdefault(e.actor, [0, e.at])
            seen[0] += 1
        text = plain(e.text, self.names)
        link = self.links.message(e.channel, e.ts, e.thread_ts)
        if e.key_event:
            self.events.append(Event(e.at, "key_event", "Key event", e.actor, text, link, e.edited))
        action = e.data.get("action")
        if action:
            self.actions.append(ActionItem(e.at, plain(action.get("text") or "", self.names), action.get("owner"),
                                           bool(action.get("done")), str(action.get("source") or ""),
                                           e.actor, link, e.id, action.get("due")))
        quote = _quote(text)
        if _LUCKY.search(text):
            self.lucky.append(quote)
        if _WELL.search(text):
            self.well.append(quote)
        if _WRONG.search(text):
            self.wrong.append(quote)

    def _action(self, e: Entry) -> None:
        d = e.data
        link = self._bot_link(e)
        text = plain(e.text, self.names) if e.text else ""
        what = _describe(e, self.names)
        if e.kind == EntryKind.DECLARED:
            self.declared = self.declared or e
        elif e.kind == EntryKind.RESOLVED:
            self.resolved = e
        elif e.kind == EntryKind.SEVERITY:
            self.severity_changes.append(e)
        elif e.kind == EntryKind.STATUS:
            if d.get("to") == "monitoring" and self.mitigated is None:
                self.mitigated = e
            if d.get("to") == "identified" and text:
                self.notes.append(Note(e.at, e.actor, text, link))
        elif e.kind == EntryKind.COMMANDER and d.get("to"):
            self.commanders.append((e.at, str(d["to"]), str(d.get("from") or "")))
            self.role_entries.append(e)
        elif e.kind == EntryKind.ROLE and d.get("to") and d.get("role"):
            self.role_entries.append(e)
        elif e.kind in (EntryKind.PAGE_SENT, EntryKind.PAGE_FAILED, EntryKind.PAGE_WITHHELD):
            ok = e.kind == EntryKind.PAGE_SENT
            if ok and self.first_page is None:
                self.first_page = e
            self.pages.append(PageEvent(e.at, str(d.get("delivery") or "?"), str(d.get("severity") or ""),
                                        d.get("level"), ok, text if not ok else "", str(d.get("reason") or ""),
                                        str(d.get("withheld") or "")))  # page_failed + withheld: older entries
        elif e.kind == EntryKind.PAGE_ACKED:
            self.first_ack = self.first_ack or e
            self.acks.append(Ack(e.at, e.actor, str(d.get("via") or ""), d.get("after_s")))
        elif e.kind == EntryKind.ESCALATED:
            self.escalations.append(Event(e.at, e.kind, what, e.actor, text, link))
        elif e.kind == EntryKind.DIAGNOSIS:
            self.diagnoses.append(e)
        elif e.kind == EntryKind.REMINDER:
            self.reminders += 1
        elif e.kind == EntryKind.REMEDIATION and d.get("stage") == "applied":
            self.fixes.append(e)
        elif e.kind == EntryKind.ACTION_ITEM:
            self.actions.append(ActionItem(e.at, text, d.get("owner") or e.actor, bool(d.get("done")),
                                           str(d.get("source") or "bot"), e.actor, link, e.id, d.get("due")))
        quote = text if in_postmortem(e.kind) is InPostmortem.QUOTED else ""
        self.events.append(Event(e.at, e.kind, what, e.actor, quote, link, ref=e.data.get("run_id")))

    def _bot_link(self, e: Entry) -> str | None:
        inc = self.incident
        if e.ts and e.channel:
            return self.links.message(e.channel, e.ts, e.thread_ts)
        if e.kind == EntryKind.DIAGNOSIS and e.data.get("parent_ts"):
            return self.links.message(inc.channel, str(e.data["parent_ts"]))
        key = {"declared": "header"}.get(e.id) or (f"ack:{e.id.split(':', 1)[1]}" if e.kind == EntryKind.PAGE_ACKED
                                                  and ":" in e.id else e.id)
        ts = inc.posted.get(key)
        if e.kind == EntryKind.DECLARED and inc.link:
            return inc.link
        if not ts:
            return None
        thread = inc.thread_ts if inc.mode == "thread" else None
        return self.links.message(inc.channel, ts, thread)

    # -- putting it together -----------------------------------------------------------------------------------

    def facts(self, users_impacted: str | None) -> PostmortemFacts:
        inc = self.incident
        declared_at = self.declared.at if self.declared else inc.declared_at
        resolved_at = self.resolved.at if self.resolved else inc.resolved_at
        end = resolved_at or self.now
        checks = self._checks()
        findings = [f for run in checks for f in run.findings]
        found = draft.detection(self.all, declared_at)
        return PostmortemFacts(
            incident_id=inc.id, title=inc.title, status=inc.status, severity=inc.severity,
            declared_at=declared_at, generated_at=self.now, resolved_at=resolved_at,
            duration_s=max(end - declared_at, 0.0),
            source=str((self.declared.data if self.declared else {}).get("source") or "slack"),
            channel=inc.channel, link=inc.link, services=self._services(checks),
            users_impacted=users_impacted, severity_spans=self._severity_spans(declared_at, end),
            milestones=self._milestones(declared_at), events=self._events(),
            metrics=[*self._detect_metric(found), *self._metrics(declared_at)],
            root_cause_notes=self.notes, findings=findings, resolution=self._resolution(),
            action_items=self.actions, lessons=self._lessons(declared_at, checks),
            responders=self._responders(), roles=self._roles(declared_at), checks=checks, pages=self.pages,
            acks=self.acks,
            escalations=self.escalations, names=self.names, message_count=self.messages,
            reply_count=self.replies, detection=found, candidates=draft.candidates(checks),
            discussion=self._discussion(), chatter=draft.chatter(self.all),
            remediations=draft.remediations(self.all),
        )

    def _detect_metric(self, found: Detection) -> list[Metric]:
        start = found.source if found.impact_start is not None else f"unknown: {found.reason}"
        return [Metric("Time to detect", found.seconds, start, "declaration")]

    def _discussion(self) -> list[Quote]:
        inc = self.incident
        key_threads = {str(e.ts) for e in self.all if e.key_event and e.ts}
        key_threads |= {ts for ts in (*inc.posted.values(), inc.header_ts, inc.thread_ts) if ts}
        responders = {inc.commander or ""} | {user for _, user, _ in self.commanders} | {
            str(e.data.get("to")) for e in self.role_entries}
        quotes = draft.discussion(self.all, key_threads, responders - {""},
                                  lambda e: self.links.message(e.channel, e.ts, e.thread_ts))
        for q in quotes:
            q.text = plain(q.text, self.names)
        return quotes

    def _services(self, checks: list[CheckRun]) -> list[str]:
        found = []
        if self.declared and self.declared.data.get("service"):
            found.append(str(self.declared.data["service"]))
        if self.incident.service:
            found.append(self.incident.service)
        found.extend(run.service for run in checks if run.service)
        return list(dict.fromkeys(found))

    def _severity_spans(self, declared_at: float, end: float) -> list[SeveritySpan]:
        first = str((self.declared.data if self.declared else {}).get("severity") or "")
        if not first:
            first = str(self.severity_changes[0].data.get("from")) if self.severity_changes else self.incident.severity
        spans = [SeveritySpan(first, declared_at, end)]
        for change in self.severity_changes:
            new = str(change.data.get("to") or "")
            if not new or new == spans[-1].severity:
                continue
            at = min(max(change.at, spans[-1].start), end)
            spans[-1].end = at
            spans.append(SeveritySpan(new, at, end))
        return [s for s in spans if s.duration_s > 0 or len(spans) == 1]

    def _milestones(self, declared_at: float) -> list[Milestone]:
        inc = self.incident
        declared = self.declared
        ack, mit, res = self.first_ack, self.mitigated, self.resolved
        return [
            Milestone("Detected (declared)", declared_at, declared.actor if declared else inc.reporter,
                      self._bot_link(declared) if declared else inc.link,
                      f"via {declared.data.get('source')}" if declared and declared.data.get("source") not in
                      (None, "slack") else ""),
            Milestone("Acknowledged", ack.at if ack else None, ack.actor if ack else None,
                      self._bot_link(ack) if ack else None, f"via {ack.data.get('via')}" if ack and ack.data.get("via") else ""),
            Milestone("Mitigated (status: monitoring)", mit.at if mit else None, mit.actor if mit else None,
                      self._bot_link(mit) if mit else None, plain(mit.text, self.names) if mit else ""),
            Milestone("Resolved", res.at if res else None, res.actor if res else None,
                      self._bot_link(res) if res else None, ""),
        ]

    def _events(self) -> list[Event]:
        for event in self.events:
            found = self.findings_by_run.get(str(event.ref)) if event.ref and not event.link else None
            if found and found[0].data.get("parent_ts"):
                event.link = self.links.message(self.incident.channel, str(found[0].data["parent_ts"]))
        return collapse_reminders(sorted(self.events, key=lambda e: e.at))  # stable: equal times keep the order

    def _metrics(self, declared_at: float) -> list[Metric]:
        ack, page, mit, res = self.first_ack, self.first_page, self.mitigated, self.resolved
        ack_start = page.at if page else declared_at
        return [
            Metric("Time to acknowledge", (ack.at - ack_start) if ack else None,
                   "first page sent" if page else "declaration (no page was sent)", "first acknowledgement"),
            Metric("Time to mitigate", (mit.at - declared_at) if mit else None, "declaration",
                   "first status monitoring"),
            Metric("Time to resolve", (res.at - declared_at) if res else None, "declaration", "resolved"),
        ]

    def _resolution(self) -> Note | None:
        res = self.resolved
        if res is None:
            return None
        text = plain(res.text, self.names) if res.text else ""
        if self.fixes:  # what the bot changed on request is part of how it was resolved
            applied = "; ".join(f"{plain(e.text, self.names)} ({e.data.get('message', '')})" for e in self.fixes)
            text = f"{text} Fixed from Slack: {applied}".strip()
        return Note(res.at, res.actor, text, self._bot_link(res))

    def _checks(self) -> list[CheckRun]:
        runs: list[CheckRun] = []
        used: set[str] = set()
        for e in self.diagnoses:
            run_id = str(e.data.get("run_id") or "")
            detail = self.findings_by_run.get(run_id)
            used.add(run_id)
            findings = detail[1] if detail else [Finding(check=s, target="", status="fail", summary="")
                                                 for s in e.data.get("failing_checks") or []]
            source = detail[0] if detail else e
            runs.append(CheckRun(e.at, str(e.data.get("service") or source.data.get("service") or ""),
                                 str(e.data.get("status") or source.data.get("status") or ""),
                                 plain(e.text or source.text, self.names),
                                 dict(source.data.get("counts") or e.data.get("counts") or {}), findings,
                                 e.actor, self._bot_link(e) if not source.data.get("parent_ts")
                                 else self.links.message(self.incident.channel, str(source.data["parent_ts"]))))
        for run_id, (e, findings) in self.findings_by_run.items():
            if run_id in used:
                continue
            runs.append(CheckRun(e.at, str(e.data.get("service") or ""), str(e.data.get("status") or ""),
                                 plain(e.text, self.names), dict(e.data.get("counts") or {}), findings, e.actor,
                                 self.links.message(self.incident.channel, str(e.data.get("parent_ts") or ""))))
        return sorted(runs, key=lambda r: r.at)

    def _responders(self) -> list[Responder]:
        inc = self.incident
        roles: dict[str, list[str]] = {}
        first: dict[str, float] = {}

        def add(user: str | None, role: str, at: float) -> None:
            if not user or user[:1] not in ("U", "W"):
                return  # the bot, an alert source, a PagerDuty name: not a Slack responder
            if role not in roles.setdefault(user, []):
                roles[user].append(role)
            first[user] = min(first.get(user, at), at)

        declared_at = self.declared.at if self.declared else inc.declared_at
        add(self.declared.actor if self.declared else inc.reporter, "declared", declared_at)
        if self.commanders:  # each hand-over names the one before, so the first commander is known too
            add(self.commanders[0][2] or None, "incident commander", declared_at)
            for at, user, _ in self.commanders:
                add(user, "incident commander", at)
        else:
            add(inc.commander, "incident commander", declared_at)
        for e in self.role_entries:
            if e.kind == EntryKind.ROLE:
                add(str(e.data["to"]), role_label(str(e.data["role"])).lower(), e.at)
        for ack in self.acks:
            add(ack.actor, "acknowledged the page", ack.at)
        if self.resolved:
            add(self.resolved.actor, "resolved", self.resolved.at)
        for user, (_, at) in self.posters.items():
            add(user, "in the channel", at)
        out = [Responder(u, r, int(self.posters.get(u, [0])[0]), first[u]) for u, r in roles.items()]
        return sorted(out, key=lambda r: (r.first_at, r.user))

    def _roles(self, declared_at: float) -> list[RoleHolding]:
        """The commander first (from the declaration: the first hand-over names them, else the record does),
        then every assignment in the order it was made."""
        first = self.commanders[0][2] if self.commanders else self.incident.commander
        held = [RoleHolding("Commander", first, declared_at, None)] if first else []
        for e in self.role_entries:
            role = "commander" if e.kind == EntryKind.COMMANDER else str(e.data["role"])
            held.append(RoleHolding(role_label(role), str(e.data["to"]), e.at, e.actor))
        return held

    def _lessons(self, declared_at: float, checks: list[CheckRun]) -> Lessons:
        lessons = Lessons()
        inc = self.incident
        spans_start = self._severity_spans(declared_at, self.resolved.at if self.resolved else self.now)
        target_sev = min((s.severity for s in spans_start), default=inc.severity)
        target = RESPOND_WITHIN_S.get(target_sev)
        ack, page = self.first_ack, self.first_page
        if ack is not None and target is not None:
            took = ack.at - (page.at if page else declared_at)
            phrase = f"The page was acknowledged after {fmt_duration(took)} ({target_sev} target: {fmt_duration(target)})."
            (lessons.went_well if took <= target else lessons.went_wrong).append(
                phrase + (" What made that possible?" if took <= target else " What slowed the response?"))
        elif page is not None and ack is None:
            lessons.went_wrong.append("No page was acknowledged. Did the pages reach the right people?")
        problems = [f for run in checks for f in run.findings]
        if checks and problems:
            first = next((run for run in checks if run.findings), checks[0])  # the first failing run
            lessons.went_well.append(
                f"The diagnosis of {first.service or 'the service'} reported {len(first.findings)} finding(s) "
                f"{fmt_duration(first.at - declared_at)} after declaration. Did it point at the cause?")
        elif checks:
            lessons.went_wrong.append("The diagnosis found nothing wrong. Which check would have caught this?")
        failed = [p for p in self.pages if not p.ok and not p.withheld]
        if failed:
            lessons.went_wrong.append(f"{len(failed)} page(s) could not be delivered ({', '.join(sorted({p.delivery for p in failed}))}).")
        timer = [e for e in self.escalations if "timer" in e.what]
        if timer:
            lessons.went_wrong.append(f"Escalation by timer happened {len(timer)} time(s): a level was not "
                                      f"acknowledged in time.")
        raised = [c for c in self.severity_changes if _rank(c.data.get("to")) < _rank(c.data.get("from"))]
        if raised:
            c = raised[0]
            lessons.went_wrong.append(
                f"Severity was raised from {c.data.get('from')} to {c.data.get('to')} "
                f"{fmt_duration(c.at - declared_at)} after declaration. What did we learn that we did not know at first?")
        if self.reminders:
            lessons.went_wrong.append(f"The bot reminded the channel {self.reminders} time(s) that a status update "
                                      f"was due. Was someone free to communicate?")
        if self.mitigated is None and self.resolved is not None:
            lessons.went_wrong.append("No mitigation step was recorded (no status 'monitoring') before resolving.")
        lessons.went_well.extend(f"Said in the channel: {q}" for q in self.well)
        lessons.went_wrong.extend(f"Said in the channel: {q}" for q in self.wrong)
        lessons.lucky.extend(f"Said in the channel: {q}" for q in self.lucky)
        return lessons


def collapse_reminders(events: list[Event]) -> list[Event]:
    """The bot's reminders as one line with a count, where the first one was: they are not the story."""
    reminders = [e for e in events if e.kind == EntryKind.REMINDER]
    if len(reminders) < 2:
        return events
    first, last = reminders[0], reminders[-1]
    first.what = (f"Reminder: a status update was due ({len(reminders)} reminders, the last at "
                  f"{time.strftime('%H:%M', time.gmtime(last.at))} UTC)")
    return [e for e in events if e.kind != EntryKind.REMINDER or e is first]


# ------------------------------------------------------------------------------------------------ wording

def _describe(e: Entry, names: dict[str, str]) -> str:
    """The bot's words for one of its actions: blameless, systems and steps rather than people's failings."""
    d = e.data
    kind = e.kind
    if kind == EntryKind.DECLARED:
        svc = f", service {d['service']}" if d.get("service") else ""
        return f"Incident declared as {d.get('severity', '?')}{svc}" + (
            f" (from {d['source']})" if d.get("source") not in (None, "slack") else "")
    if kind == EntryKind.SEVERITY:
        return f"Severity {d.get('from', '?')} → {d.get('to', '?')}" + (
            f"; paged {len(d['paged'])} more" if d.get("paged") else "")
    if kind == EntryKind.STATUS:
        return f"Status {d.get('from', '?')} → {d.get('to', '?')}"
    if kind == EntryKind.COMMANDER:
        return f"Commander role handed over to {_who(d.get('to'), names)}"
    if kind == EntryKind.ROLE:
        return f"{role_label(str(d.get('role') or '?'))} role assigned to {_who(d.get('to'), names)}"
    if kind == EntryKind.NOTE:
        return "Note added"
    if kind == EntryKind.PAGE_SENT:
        return f"Page sent to {d.get('delivery', '?')} ({d.get('severity', '?')}, level {d.get('level', '?')})"
    if d.get("withheld") and kind in (EntryKind.PAGE_FAILED, EntryKind.PAGE_WITHHELD):
        return f"Page to {d.get('delivery', '?')} not sent: the incident was {d['withheld']} first"
    if kind == EntryKind.PAGE_FAILED:
        return f"Page to {d.get('delivery', '?')} could not be delivered"
    if kind == EntryKind.PAGE_ACKED:
        after = d.get("after_s")
        return "Page acknowledged" + (f" after {fmt_duration(float(after))}" if after is not None else "") + (
            f" via {d['via']}" if d.get("via") else "")
    if kind == EntryKind.ESCALATED:
        if d.get("reason") == "people":
            return f"Paged {len(d.get('people') or [])} named responder(s)"
        return f"Escalated to level {d.get('level', '?')} ({d.get('reason', 'manual')})" + (
            " by timer: not acknowledged in time" if d.get("reason") == "timer" else "")
    if kind == EntryKind.DIAGNOSIS_REQUESTED:
        return f"Diagnosis of {d.get('service', '?')} started ({d.get('planned', '?')} checks)"
    if kind == EntryKind.DIAGNOSIS:
        counts = d.get("counts") or {}
        return f"Diagnosis of {d.get('service', '?')} finished: {d.get('status', '?')}" + (
            f" ({_counts(counts)})" if counts else "") + (f"; {d['since_last']}" if d.get("since_last") else "")
    if kind == EntryKind.RESOLVED:
        return "Resolved"
    if kind == EntryKind.REMINDER:
        return "Reminder: a status update was due"
    if kind == EntryKind.ACTION_ITEM:
        return "Action item recorded"
    if kind == EntryKind.REMEDIATION:
        return f"Fix {d.get('stage', '?')}: {e.text}" + (f" ({d['message']})" if d.get("message") else "")
    return kind.replace("_", " ").capitalize()


def _who(user: Any, names: dict[str, str]) -> str:
    if not user:
        return "nobody"
    return "@" + names.get(str(user), str(user))


def _counts(counts: dict[str, int]) -> str:
    order = ["fail", "error", "warn", "ok", "skipped"]
    keys = sorted(counts, key=lambda k: (order.index(k) if k in order else 9, k))
    return ", ".join(f"{counts[k]} {k}" for k in keys)


def _finding(raw: dict[str, Any]) -> Finding:
    evidence = raw.get("evidence") or {}
    pairs = [(str(k), _value(v)) for k, v in list(evidence.items())[:EVIDENCE_KEYS]] if isinstance(evidence, dict) else []
    return Finding(check=str(raw.get("check") or ""), target=str(raw.get("target") or ""),
                   status=str(raw.get("status") or ""), summary=str(raw.get("summary") or ""),
                   severity=raw.get("severity"), evidence=pairs, hint=raw.get("hint"))


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str, sort_keys=True)
    return text if len(text) <= 300 else text[:299] + "…"


def _quote(text: str, limit: int = 300) -> str:
    folded = " ".join(text.split())
    return f"“{folded[:limit - 1] + '…' if len(folded) > limit else folded}”"


def _rank(severity: Any) -> int:
    return {"P0": 0, "P1": 1, "P2": 2, "P3": 3}.get(str(severity), 9)


def fmt_duration(seconds: float | None) -> str:
    """`45s`, `4m 12s`, `1h 02m`, `2d 03h`."""
    return "—" if seconds is None else durations.format_duration(seconds, spaced=True)
