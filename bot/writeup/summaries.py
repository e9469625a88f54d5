"""Summaries: one self-updating summary reply in long threads, and catch-up summaries of incidents.

Thread summaries. A thread in an incident channel (and, with SUMMARY_ALL_CHANNELS, in any channel the bot is in)
that reaches SUMMARY_THRESHOLD replies gets ONE summary reply from the bot; as the thread grows the same reply is
edited (chat.update), at most every SUMMARY_MIN_INTERVAL_S, after SUMMARY_SETTLE_S of calm so a burst of
replies is one update. Replies are counted as a set of their ts, so Slack retries and back-fills count once.

Incident catch-ups. Every open incident gets a catch-up message on its severity's update cadence (P0 15 min …
P3 daily, from the paging policy) when something happened since the last one, and on demand with
`/incident summary` (ephemeral) or `/incident summary --post`.

Both are extractive and deterministic: the same thread gives the same summary, made of quotes and counts —

    participants       who wrote, most replies first
    key points         the thread's first message, 📌/pinned messages, messages most reacted to
    decisions          messages saying `decision:`/`decided`/`agreed`/`going with`…, and status/severity changes
    open questions     messages with a `?` that nobody has answered yet (not marked ✅; see `open_questions`
                       for what counts as an answer)
    action items       `action:`/`TODO:` messages or the action reaction, with owner; ✅ marks them done

Optional: with SUMMARIZER_URL set, a `Summarizer` (an OpenAI-compatible chat completions endpoint) adds a short
written overview on top. That SENDS THE THREAD'S TEXT TO THAT ENDPOINT; it is off by default, and when it fails
the extractive summary is posted alone.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from bot.incidents.timeline import MESSAGE_KINDS, Entry, EntryKind
from bot.queue import Job
from bot.queue.replies import as_text
from bot.runtime import Runtime
from bot.slack.client import SlackError
from bot.slack.mrkdwn import SECTION_TEXT_MAX, inert, truncate
from bot.writeup.context import (
    CaptureRules,
    Writeup,
    bot_identity,
    user_names,
    writeup_of,
)
from bot.writeup.slacktext import mentioned_users, plain
from bot.writeup.view import (
    IncidentView,
    incident_for,
    load_incident,
    update_every_s,
)

if TYPE_CHECKING:  # imported by a summariser when one is configured, not by every process
    import httpx

log = logging.getLogger("bot.summaries")

THREAD_STATE_TTL_S = 14 * 86400
ITEMS_PER_SECTION = 8
ITEM_CHARS = 220
_DECISION = re.compile(r"^\s*(decision|decided)\s*:|\b(we decided|we(?:'ll| will) go with|going with|agreed to|"
                       r"let'?s go with|decision is)\b", re.IGNORECASE)
_ANSWER_START = re.compile(r"^\s*(yes|yep|yeah|no|nope|nah|because|it'?s|it is|it was|answer|a:|done|fixed|"
                           r"confirmed|correct|right|that'?s|we did|i did|already)\b", re.IGNORECASE)
_SOLVED = re.compile(r"\b(never ?mind|nvm|found it|figured it out|answered|solved)\b", re.IGNORECASE)


@dataclass(frozen=True)
class InCatchUp:
    """How the catch-up treats one kind of timeline entry."""

    news: bool  # a new entry of this kind makes the periodic catch-up worth posting
    listed: bool = False  # listed under "what changed", in the bot's words (postmortem.facts._describe)
    quoted: bool = False  # ... followed by the text someone wrote with it


_QUIET = InCatchUp(news=False)  # the channel's own bookkeeping, and the bot's own summaries
_NEWS = InCatchUp(news=True)  # worth a catch-up; people's words are digested, the rest is not listed
_LISTED = InCatchUp(news=True, listed=True)
_QUOTED = InCatchUp(news=True, listed=True, quoted=True)

# Every EntryKind, explicitly (tests/test_timeline_kinds.py checks that none is missing).
CATCH_UP: dict[EntryKind, InCatchUp] = {
    EntryKind.MESSAGE: _NEWS, EntryKind.REPLY: _NEWS,
    EntryKind.REACTION: _QUIET, EntryKind.PIN: _QUIET, EntryKind.MEMBER_JOINED: _QUIET,
    EntryKind.DECLARED: _LISTED, EntryKind.SEVERITY: _QUOTED, EntryKind.STATUS: _QUOTED,
    EntryKind.COMMANDER: _LISTED, EntryKind.ROLE: _NEWS, EntryKind.NOTE: _QUOTED, EntryKind.RESOLVED: _QUOTED,
    EntryKind.REMINDER: _QUIET, EntryKind.ACTION_ITEM: _NEWS,  # the bot's own nagging is not news
    EntryKind.PAGE_SENT: _LISTED, EntryKind.PAGE_FAILED: _LISTED,
    EntryKind.PAGE_WITHHELD: _LISTED, EntryKind.PAGE_ACKED: _LISTED,
    EntryKind.PAGE_RESOLVED: _NEWS, EntryKind.ESCALATED: _LISTED, EntryKind.ALERT: _NEWS,
    EntryKind.DIAGNOSIS_REQUESTED: _NEWS, EntryKind.DIAGNOSIS: _LISTED, EntryKind.DIAGNOSIS_FINDINGS: _NEWS,
    EntryKind.SUMMARY: _QUIET, EntryKind.POSTMORTEM: _NEWS, EntryKind.REMEDIATION: _LISTED,
}
_DECIDED = frozenset({EntryKind.STATUS, EntryKind.SEVERITY})  # bot-recorded changes listed as decisions


def in_catch_up(kind: str) -> InCatchUp:
    """How the catch-up treats `kind`; an entry stored under a kind this version does not know is news."""
    return CATCH_UP.get(kind, _NEWS)  # type: ignore[call-overload]


# ------------------------------------------------------------------------------------------------ the digest

@dataclass
class Item:
    text: str  # plain text
    author: str | None = None
    at: float = 0.0
    link_ts: str | None = None
    owner: str | None = None
    done: bool = False


@dataclass
class Digest:
    replies: int
    participants: list[tuple[str, int]]
    key_points: list[Item] = field(default_factory=list)
    decisions: list[Item] = field(default_factory=list)
    questions: list[Item] = field(default_factory=list)
    actions: list[Item] = field(default_factory=list)
    since: float | None = None


def digest(entries: list[Entry], rules: CaptureRules, names: dict[str, str] | None = None) -> Digest:
    """The extractive summary of messages (a thread, or an incident since some time). Pure and deterministic."""
    names = names or {}
    messages = [e for e in entries if e.kind in MESSAGE_KINDS and not e.removed]
    replies = sum(1 for e in messages if e.is_reply)
    counts = Counter(e.actor for e in messages if e.actor)
    first_seen = {}
    for e in messages:
        first_seen.setdefault(e.actor, e.at)
    participants = sorted(counts.items(), key=lambda kv: (-kv[1], first_seen.get(kv[0], 0.0), kv[0]))
    d = Digest(replies=replies, participants=[(u, n) for u, n in participants])
    d.key_points = _key_points(messages, rules, names)
    d.decisions = [_item(e, names) for e in messages if _DECISION.search(plain(e.text, names))]
    d.decisions += [Item(_bot_change(e), e.actor, e.at) for e in entries if e.kind in _DECIDED
                    and not e.removed]
    d.decisions.sort(key=lambda i: i.at)
    d.questions = open_questions(messages, rules, names)
    d.actions = [Item(plain(e.data["action"].get("text") or "", names), e.actor, e.at, e.ts,
                      e.data["action"].get("owner"), bool(e.data["action"].get("done")))
                 for e in messages if e.data.get("action")]
    return d


def _item(e: Entry, names: dict[str, str]) -> Item:
    return Item(plain(e.text, names), e.actor, e.at, e.ts)


def _key_points(messages: list[Entry], rules: CaptureRules, names: dict[str, str]) -> list[Item]:
    chosen: dict[str, Entry] = {}
    starter = next((e for e in messages if not e.is_reply), None)
    if starter is not None:
        chosen[starter.id] = starter
    for e in messages:
        if e.key_event:
            chosen[e.id] = e

    def reacted(e: Entry) -> int:
        return sum(len(users) for name, users in (e.data.get("reactions") or {}).items()
                   if name not in (rules.key_reaction, rules.done_reaction, rules.action_reaction))

    popular = sorted((e for e in messages if reacted(e) >= 2), key=lambda e: (-reacted(e), e.at))[:3]
    for e in popular:
        chosen[e.id] = e
    return [_item(e, names) for e in sorted(chosen.values(), key=lambda e: e.at)]


def open_questions(messages: list[Entry], rules: CaptureRules, names: dict[str, str]) -> list[Item]:
    """Questions nobody has answered yet. Read like a chat: each later message may close one open question —

    - the asker saying "never mind", "found it", "solved"… closes their own latest open question;
    - someone else mentioning the asker closes one of the asker's questions;
    - someone else quoting (`>`) or starting like an answer ("yes", "no", "because"…) closes one question
      by another person;

    where "one" is the open question sharing the most words with the answer (the latest on a tie). A ✅ reaction
    closes a question too. Action items neither ask nor answer.
    """
    open_: list[tuple[Entry, set[str]]] = []
    for m in messages:
        text = plain(m.text, names)
        if m.data.get("action"):
            continue
        candidates = _answerable(m, text, open_)
        if candidates:
            words = _words(text)
            best = max(range(len(candidates)), key=lambda i: (len(words & candidates[i][1]), i))
            open_.remove(candidates[best])
        if "?" in text and not (m.data.get("reactions") or {}).get(rules.done_reaction):
            open_.append((m, _words(text)))
    return [_item(q, names) for q, _ in open_]


_STOP = {"the", "a", "an", "is", "are", "was", "it", "to", "of", "on", "in", "we", "i", "you", "and", "or", "do",
         "does", "did", "be", "can", "for", "at", "this", "that", "yes", "no", "who", "what", "why", "how", "any"}


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 1 and w not in _STOP}


def _answerable(m: Entry, text: str, open_: list[tuple[Entry, set[str]]]) -> list[tuple[Entry, set[str]]]:
    """The open questions message `m` can be an answer to (empty: it answers none)."""
    own = [q for q in open_ if q[0].actor == m.actor]
    others = [q for q in open_ if q[0].actor != m.actor]
    if _SOLVED.search(text):
        return own[-1:]
    mentioned = set(mentioned_users(m.text))
    if mentioned and (to_them := [q for q in others if q[0].actor in mentioned]):
        return to_them
    if text.lstrip().startswith(">") or _ANSWER_START.match(text):
        return others
    return []


def _bot_change(e: Entry) -> str:
    d = e.data
    what = "Status" if e.kind == EntryKind.STATUS else "Severity"
    note = f": {e.text}" if e.text else ""
    return f"{what} {d.get('from', '?')} → {d.get('to', '?')}{note}"


# ------------------------------------------------------------------------------------------------ rendering

def _who(user: str | None, names: dict[str, str]) -> str:
    if not user:
        return "someone"
    return inert(names.get(user, user))


def _line(item: Item, names: dict[str, str], *, owner: bool = False) -> str:
    text = inert(" ".join(item.text.split())[:ITEM_CHARS] + ("…" if len(item.text) > ITEM_CHARS else ""))
    if owner:
        box = ":white_check_mark:" if item.done else "☐"
        return f"• {box} {text} — owner: {_who(item.owner or item.author, names)}"
    return f"• “{text}” — {_who(item.author, names)}"


def _section(title: str, items: list[str], empty: str | None = None) -> str | None:
    if not items:
        return f"*{title}:* {empty}" if empty else None
    shown = items[:ITEMS_PER_SECTION]
    more = len(items) - len(shown)
    body = "\n".join(shown) + (f"\n…and {more} more" if more else "")
    return truncate(f"*{title}:*\n{body}", SECTION_TEXT_MAX)


def render_thread_summary(d: Digest, names: dict[str, str], *, overview: str | None = None,
                          model: str | None = None, now: float | None = None) -> tuple[str, list[dict]]:
    now = time.time() if now is None else now
    people = ", ".join(f"{_who(u, names)} ({n})" for u, n in d.participants[:12])
    if len(d.participants) > 12:
        people += f", and {len(d.participants) - 12} more"
    head = (f":memo: *Thread summary* — {d.replies} replies from {len(d.participants)} people · updated "
            f"{datetime.fromtimestamp(now, UTC).strftime('%H:%M UTC')}")
    parts = [head]
    if overview:
        parts.append(truncate(f"*Overview* (written by {inert(model or 'a language model')} from the thread's "
                              f"text):\n{inert(overview)}", SECTION_TEXT_MAX))
    parts.append(truncate(f"*Participants:* {people or 'nobody yet'}", SECTION_TEXT_MAX))
    return _message(parts, (
        ("Key points", [_line(i, names) for i in d.key_points], None),
        ("Decisions and status changes", [_line(i, names) for i in d.decisions], "none recorded"),
        ("Open questions", [_line(i, names) for i in d.questions], "none"),
        ("Action items", [_line(i, names, owner=True) for i in d.actions], "none"),
    ), "_Extractive summary: quotes and counts from the thread, nothing inferred. Updated as the thread grows._")


def _message(parts: list[str], sections: Iterable[tuple[str, list[str], str | None]],
             footnote: str) -> tuple[str, list[dict]]:
    """A summary message: the head `parts`, each non-empty section, a context footnote; text and blocks."""
    for title, items, empty in sections:
        section = _section(title, items, empty)
        if section:
            parts.append(section)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": p}} for p in parts]
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": footnote}]})
    return truncate("\n".join([*parts, footnote]), 4000), blocks


# ------------------------------------------------------------------------------------------------ summariser

class Summarizer(Protocol):
    """Writes a short overview of a conversation. Optional; its failure never blocks a summary."""

    model: str

    async def overview(self, title: str, lines: list[str]) -> str | None: ...


class OpenAICompatibleSummarizer:
    """POST {SUMMARIZER_URL}/chat/completions. Sends the conversation's text to that endpoint."""

    SYSTEM = ("You summarise an incident-response Slack thread for someone joining late. In at most 5 short "
              "sentences: what is happening, what was decided, what is still open. Blameless wording; only facts "
              "from the messages; no names of people as causes.")
    MAX_INPUT_CHARS = 24_000

    def __init__(self, url: str, *, api_key: str | None, model: str, timeout_s: float,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        import httpx

        self.url = url.rstrip("/") + "/chat/completions"
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.AsyncClient(timeout=timeout_s, headers=headers, transport=transport)

    async def overview(self, title: str, lines: list[str]) -> str | None:
        import httpx

        conversation = "\n".join(lines)[-self.MAX_INPUT_CHARS:]
        body = {"model": self.model, "temperature": 0, "max_tokens": 300,
                "messages": [{"role": "system", "content": self.SYSTEM},
                             {"role": "user", "content": f"{title}\n\n{conversation}"}]}
        try:
            answer = await self.http.post(self.url, json=body)
            answer.raise_for_status()
            text = answer.json()["choices"][0]["message"]["content"]
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            log.warning("summariser at %s failed (%s); posting the extractive summary alone", self.url,
                        type(exc).__name__)
            return None
        text = " ".join(str(text).split())
        return text[:1500] if text else None

    async def aclose(self) -> None:
        await self.http.aclose()


def make_summarizer(w: Writeup) -> Summarizer | None:
    s = w.settings
    if not s.summarizer_url:
        return None
    key = s.summarizer_api_key.get_secret_value() if s.summarizer_api_key else None
    return OpenAICompatibleSummarizer(str(s.summarizer_url), api_key=key, model=s.summarizer_model,
                                      timeout_s=s.summarizer_timeout_s)


async def _overview(w: Writeup, title: str, entries: list[Entry], names: dict[str, str]) -> str | None:
    if w.summarizer is None:
        return None
    lines = [f"{names.get(e.actor or '', e.actor or '?')}: {plain(e.text, names)}" for e in entries
             if e.kind in MESSAGE_KINDS and not e.removed]
    return await w.summarizer.overview(title, lines) if lines else None


# ------------------------------------------------------------------------------------------------ threads

def _thread_key(rt: Runtime, channel: str, thread_ts: str, part: str) -> str:
    return rt.key("wu", "thr", channel, thread_ts, part)


async def record_thread_event(rt: Runtime, event: dict, envelope: dict) -> None:
    """Event recorder: count thread replies and schedule the thread's summary once it is long enough."""
    w = rt.feature(Writeup)
    if w is None or event.get("type") != "message":
        return
    subtype = event.get("subtype")
    if subtype == "message_deleted":
        previous = event.get("previous_message") or {}
        thread_ts, ts = previous.get("thread_ts"), event.get("deleted_ts") or previous.get("ts")
        if thread_ts and ts and thread_ts != ts:
            await rt.redis.srem(_thread_key(rt, str(event.get("channel")), thread_ts, "replies"), ts)
            await _maybe_schedule(w, str(event.get("channel")), thread_ts)
        return
    message = event.get("message") if subtype == "message_changed" else event
    if not message or subtype not in (None, "", "message_changed", "thread_broadcast", "file_share", "me_message",
                                      "bot_message"):
        return
    thread_ts, ts, channel = message.get("thread_ts"), message.get("ts"), str(event.get("channel") or "")
    if not thread_ts or not ts or thread_ts == ts:
        return
    from bot.writeup.capture import is_own

    if is_own(message, await bot_identity(w)):
        return
    if not await _summarised_here(w, channel, thread_ts):
        return
    key = _thread_key(rt, channel, thread_ts, "replies")
    pipe = rt.redis.pipeline(transaction=False)
    pipe.sadd(key, ts)
    pipe.expire(key, THREAD_STATE_TTL_S)
    await pipe.execute()
    await _maybe_schedule(w, channel, thread_ts)


async def _summarised_here(w: Writeup, channel: str, thread_ts: str) -> bool:
    return w.settings.summary_all_channels or bool(await incident_for(w.rt, channel, thread_ts))


async def _maybe_schedule(w: Writeup, channel: str, thread_ts: str) -> None:
    rt = w.rt
    count = await rt.redis.scard(_thread_key(rt, channel, thread_ts, "replies"))
    if count < w.settings.summary_threshold:
        return
    last = await rt.redis.get(_thread_key(rt, channel, thread_ts, "at"))
    due = max(time.time() + w.settings.summary_settle_s,
              (float(last) + w.settings.summary_min_interval_s) if last else 0.0)
    await rt.queue.enqueue("summary.thread", {"channel": channel, "thread_ts": thread_ts},
                           job_id=f"sumthr:{channel}:{thread_ts}", run_at=due)


async def thread_entries(w: Writeup, channel: str, thread_ts: str) -> list[Entry]:
    """The thread as timeline entries: from the incident's timeline, else read from Slack (paced)."""
    incident_id = await incident_for(w.rt, channel, thread_ts)
    if incident_id:
        return await w.timeline.thread(incident_id, thread_ts)
    from bot.writeup.backfill import BackfillReport, Reader
    from bot.writeup.capture import is_own, is_spoken, message_entry

    reader = Reader(w, BackfillReport(""))
    identity = await bot_identity(w)
    out: dict[str, Entry] = {}  # by ts: every page leads with the parent again
    async for page in reader.pages("conversations.replies", channel=channel, ts=thread_ts):
        for message in page:
            ts = message.get("ts")
            if ts and ts not in out and is_spoken(message) and not is_own(message, identity):
                out[ts] = message_entry("", channel, message, w.rules)
    return sorted(out.values(), key=lambda e: e.at)


async def summarise_thread(rt: Runtime, channel: str, thread_ts: str, *, now: float | None = None) -> str | None:
    """Post or update the thread's one summary reply. Returns its ts (None when the thread is too short)."""
    w = writeup_of(rt)
    entries = await thread_entries(w, channel, thread_ts)
    names = await user_names(rt, _people(entries))
    d = digest(entries, w.rules, names)
    if d.replies < w.settings.summary_threshold:
        return None
    overview = await _overview(w, "Slack thread", entries, names)
    text, blocks = render_thread_summary(d, names, overview=overview,
                                         model=getattr(w.summarizer, "model", None), now=now)
    ts = await _post_or_update(rt, _thread_key(rt, channel, thread_ts, "summary"), channel, thread_ts, text, blocks)
    await rt.redis.set(_thread_key(rt, channel, thread_ts, "at"), time.time(), ex=THREAD_STATE_TTL_S)
    return ts


async def _post_or_update(rt: Runtime, key: str, channel: str, thread_ts: str | None, text: str,
                          blocks: list[dict]) -> str:
    """One message per `key`: posted the first time, edited afterwards."""
    existing = await rt.redis.get(key)
    if existing:
        ts = as_text(existing)
        try:
            await rt.slack.update_message(channel, ts, text, blocks=blocks)
            return ts
        except SlackError as exc:
            if exc.error not in ("message_not_found", "cant_update_message"):
                raise
            log.info("summary message %s is gone (%s); posting a new one", ts, exc.error)
    posted = await rt.slack.post_message(channel, text, blocks=blocks, thread_ts=thread_ts)
    await rt.redis.set(key, str(posted["ts"]), ex=THREAD_STATE_TTL_S)
    return str(posted["ts"])


async def thread_job(rt: Runtime, job: Job) -> None:
    w = writeup_of(rt)
    channel, thread_ts = job.payload["channel"], job.payload["thread_ts"]
    last = await rt.redis.get(_thread_key(rt, channel, thread_ts, "at"))
    wait = (float(last) + w.settings.summary_min_interval_s - time.time()) if last else 0.0
    if wait > 0.05:  # an update ran meanwhile (another worker, a retry): come back when it is allowed again
        await rt.queue.enqueue("summary.thread", job.payload, job_id=f"sumthr:{channel}:{thread_ts}", delay_s=wait)
        return
    await summarise_thread(rt, channel, thread_ts)


def _people(entries: list[Entry]) -> set[str]:
    found: set[str] = set()
    for e in entries:
        if e.actor:
            found.add(e.actor)
        found.update(mentioned_users(e.text))
        if e.data.get("action", {}).get("owner"):
            found.add(e.data["action"]["owner"])
    return found


# ------------------------------------------------------------------------------------------------ incidents

@dataclass
class CatchUp:
    incident: IncidentView
    since: float
    changes: list[Entry]
    digest: Digest
    open_actions: list[Item]
    on_it: list[str]
    key_events: list[Item] = field(default_factory=list)
    first_failing_run: Entry | None = None  # the incident's first diagnosis that found a failure
    latest_run: Entry | None = None  # its newest diagnosis (the header shows the same)


async def catch_up(rt: Runtime, incident_id: str, *, now: float | None = None) -> tuple[CatchUp, dict[str, str]]:
    w = writeup_of(rt)
    incident = await load_incident(rt, incident_id)
    if incident is None:
        raise LookupError(incident_id)
    raw = await rt.redis.get(rt.key("wu", "catchup", incident_id, "at"))
    since = float(raw) if raw else incident.declared_at - 1
    recent = await w.timeline.entries_since(incident_id, since)
    everything = await w.timeline.entries(incident_id)
    action_entries = _open_actions(everything)
    names = await user_names(rt, _people(recent) | _people(action_entries) | {incident.commander or ""})
    everything_actions = [Item(plain(e.data["action"].get("text") or "", names), e.actor, e.at, e.ts,
                               e.data["action"].get("owner")) for e in action_entries]
    d = digest(recent, w.rules, names)
    changes = [e for e in recent if in_catch_up(e.kind).listed and not e.removed]
    on_it = list(dict.fromkeys([u for u in [incident.commander] if u] + [u for u, _ in d.participants]))
    keys = [_item(e, names) for e in recent if e.kind in MESSAGE_KINDS and e.key_event and not e.removed]
    first_failing, latest = diagnosis_runs(everything)
    return CatchUp(incident, since, changes, d, everything_actions, on_it, keys, first_failing, latest), names


def _open_actions(entries: list[Entry]) -> list[Entry]:
    return [e for e in entries if e.kind in MESSAGE_KINDS and not e.removed
            and e.data.get("action") and not e.data["action"].get("done")]


FAILING_STATUSES = ("fail", "error")


def diagnosis_runs(entries: list[Entry]) -> tuple[Entry | None, Entry | None]:
    """(the first diagnosis run that found a failure, the latest run) among an incident's timeline entries."""
    runs = sorted((e for e in entries if e.kind == EntryKind.DIAGNOSIS and not e.removed), key=lambda e: e.at)
    first = next((e for e in runs if e.data.get("status") in FAILING_STATUSES), None)
    return first, (runs[-1] if runs else None)


def _run_line(label: str, e: Entry) -> str:
    since = f" ({e.data['since_last']})" if e.data.get("since_last") else ""
    return (f"• {label} {datetime.fromtimestamp(e.at, UTC).strftime('%H:%M')} `{inert(str(e.data.get('service')))}`: "
            f"{inert(' '.join(e.text.split())[:ITEM_CHARS])}{inert(since)}")


def run_lines(c: CatchUp) -> list[str]:
    lines = [_run_line("first failing run", c.first_failing_run)] if c.first_failing_run else []
    if c.latest_run and c.latest_run is not c.first_failing_run:
        lines.append(_run_line("latest run", c.latest_run))
    return lines


def render_catch_up(c: CatchUp, names: dict[str, str], *, now: float | None = None,
                    overview: str | None = None, model: str | None = None) -> tuple[str, list[dict]]:
    from bot.writeup.postmortem.facts import _describe, fmt_duration

    now = time.time() if now is None else now
    inc = c.incident
    state = "resolved" if not inc.is_open else inc.status
    head = (f":clipboard: *Catch-up on {inert(inc.id)}* — {inert(inc.title)}\n"
            f"*{inc.severity}* · {state} · {fmt_duration(inc.elapsed_s(now))} since declared · "
            f"commander {_who(inc.commander, names)}")
    parts = [head]
    if overview:
        parts.append(truncate(f"*Overview* (written by {inert(model or 'a language model')}):\n{inert(overview)}",
                              SECTION_TEXT_MAX))
    since = datetime.fromtimestamp(c.since, UTC).strftime("%H:%M UTC")
    changed = [f"• {datetime.fromtimestamp(e.at, UTC).strftime('%H:%M')} {inert(_describe(e, names))}"
               + (f": {inert(' '.join(plain(e.text, names).split())[:ITEM_CHARS])}" if e.text and in_catch_up(e.kind).quoted
                  else "") for e in c.changes]
    talk = sum(n for _, n in c.digest.participants)
    if talk:
        changed.append(f"• {talk} messages from {len(c.digest.participants)} people")
    return _message(parts, (
        (f"What changed since {since}", changed, "nothing: no status changes and no messages"),
        ("Diagnosis", run_lines(c), None),
        ("Failing checks", [f"• {inert(x)}" for x in inc.failing_checks], "none from the latest diagnosis"),
        ("Who is on it", [], ", ".join(_who(u, names) for u in c.on_it) or "nobody has written yet"),
        ("Key events", [_line(i, names) for i in c.key_events], None),
        ("Open questions", [_line(i, names) for i in c.digest.questions], None),
        ("Open action items", [_line(i, names, owner=True) for i in c.open_actions], "none"),
    ), "_Extractive: from the incident's timeline since the last catch-up. `/incident summary` shows it any time._")


async def catch_up_text(rt: Runtime, incident_id: str) -> tuple[str, list[dict]]:
    w = writeup_of(rt)
    c, names = await catch_up(rt, incident_id)
    overview = await _overview(w, f"Incident {c.incident.id}: {c.incident.title}",
                               await w.timeline.entries_since(incident_id, c.since), names)
    return render_catch_up(c, names, overview=overview, model=getattr(w.summarizer, "model", None))


async def post_catch_up(rt: Runtime, incident_id: str) -> str | None:
    incident = await load_incident(rt, incident_id)
    if incident is None or not incident.channel:
        return None
    text, blocks = await catch_up_text(rt, incident_id)
    thread = incident.thread_ts if incident.mode == "thread" else None
    posted = await rt.slack.post_message(incident.channel, text, blocks=blocks, thread_ts=thread)
    await rt.redis.set(rt.key("wu", "catchup", incident_id, "at"), time.time())
    await writeup_of(rt).timeline.record(incident_id, EntryKind.SUMMARY, entry_id=f"summary:{posted['ts']}", actor="bot",
                                         ts=str(posted["ts"]), channel=incident.channel,
                                         data={"thread_ts": thread} if thread else {})
    return str(posted["ts"])


def catchup_job_id(incident_id: str) -> str:
    return f"catchup:{incident_id}"


async def arm_catch_up(rt: Runtime, incident_id: str, severity: str, *, replace: bool = False) -> None:
    """Schedule the next cadence catch-up (`replace`: the severity changed, so the cadence did)."""
    w = writeup_of(rt)
    if not w.settings.catchup_summaries:
        return
    raw = await rt.redis.get(rt.key("wu", "catchup", incident_id, "at"))
    if raw:
        since = float(raw)
    else:  # no catch-up yet: the cadence counts from the declaration
        incident = await load_incident(rt, incident_id)
        since = incident.declared_at if incident else time.time()
    due = since + update_every_s(rt, severity)
    if replace:
        await rt.queue.cancel(catchup_job_id(incident_id))
    await rt.queue.enqueue("summary.incident", {"incident": incident_id}, job_id=catchup_job_id(incident_id),
                           run_at=max(due, time.time() + 1))


async def catch_up_job(rt: Runtime, job: Job) -> None:
    incident_id = job.payload["incident"]
    incident = await load_incident(rt, incident_id)
    if incident is None or not incident.is_open:
        return
    every = update_every_s(rt, incident.severity)
    raw = await rt.redis.get(rt.key("wu", "catchup", incident_id, "at"))
    since = float(raw) if raw else incident.declared_at
    if time.time() - since >= every - 1:
        news = [e for e in await writeup_of(rt).timeline.entries_since(incident_id, since)
                if in_catch_up(e.kind).news]
        if news:
            await post_catch_up(rt, incident_id)
        else:
            await rt.redis.set(rt.key("wu", "catchup", incident_id, "at"), time.time())
    await arm_catch_up(rt, incident_id, incident.severity)


def job_handlers(rt: Runtime) -> dict[str, Any]:
    def bind(fn: Any) -> Any:
        async def handler(job: Job) -> None:
            await fn(rt, job)

        return handler

    async def post_now(rt: Runtime, job: Job) -> None:
        await post_catch_up(rt, job.payload["incident"])

    return {"summary.thread": bind(thread_job), "summary.incident": bind(catch_up_job),
            "summary.post": bind(post_now)}


__all__ = ["CatchUp", "Digest", "OpenAICompatibleSummarizer", "Summarizer", "arm_catch_up", "catch_up",
           "catch_up_text", "digest", "job_handlers", "make_summarizer", "open_questions", "post_catch_up",
           "record_thread_event", "render_catch_up", "render_thread_summary", "summarise_thread"]
