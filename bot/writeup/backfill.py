"""Back-fill: read an incident's channel (or thread) from Slack and merge what the live capture missed.

The timeline is built from events as they arrive; history is read only to fill gaps — when the bot joined late,
after an outage, and once after resolve. Reading is slow on purpose:

- cursor pagination over `conversations.history`, then `conversations.replies` for every thread, with
  BACKFILL_PAGE_SIZE messages per page (15 for apps Slack limits to 15 per page);
- paced at BACKFILL_CALLS_PER_MIN per method, shared by every worker through Redis (1/min for those apps);
- a 429 is retried by slack_sdk after Retry-After; should its retries run out, the back-fill waits out the
  Retry-After itself (the pace of that method moves back for every worker) and asks for the same page again,
  so a rate limit delays the back-fill and loses nothing.

Merging is by entry id (`msg:<channel>:<ts>`), so a message captured live and read again is one entry: the API's
text, reactions and pin win (they are the current state: an edit or a 📌 we missed arrives this way), and a
deletion seen live stays. A message the timeline holds but a complete read no longer finds was deleted while
the bot was away: it is marked removed. Runs as the `writeup.backfill` job; a job may run twice — merging is
idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError

from bot.incidents.timeline import MESSAGE_KINDS, Entry
from bot.queue import Job, as_text
from bot.retry import retry_after_s
from bot.runtime import Runtime
from bot.slack.client import SlackError
from bot.writeup.capture import is_own, is_spoken, merge_backfilled, message_entry
from bot.writeup.context import Writeup, bot_identity, writeup_of
from bot.writeup.requests import request_postmortem
from bot.writeup.view import IncidentView, load_incident

log = logging.getLogger("bot.backfill")

MAX_RATE_LIMIT_WAITS = 20  # give up on one page after this many 429s in a row (the job retries later)
MAX_PAGES = 100_000

# Redis clock pacing, one key per method: returns how long this caller must wait for its slot.
_PACE = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local nxt = tonumber(redis.call('GET', KEYS[1]) or '0')
local at = math.max(now, nxt)
redis.call('SET', KEYS[1], tostring(at + interval), 'PX', math.ceil((at + interval - now) * 1000) + 60000)
return tostring(at - now)
"""
_PUSH_BACK = """
local until_ = tonumber(ARGV[1])
local nxt = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ > nxt then redis.call('SET', KEYS[1], tostring(until_), 'PX', math.ceil(tonumber(ARGV[2]) * 1000) + 60000) end
return 1
"""


@dataclass
class BackfillReport:
    incident_id: str
    calls: int = 0
    pages: int = 0
    messages: int = 0  # messages read (parents and replies, the bot's own excluded)
    threads: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    rate_limited: int = 0  # 429s that reached us after slack_sdk's own retries
    waited_s: float = 0.0  # time spent waiting for the pace or a Retry-After
    elapsed_s: float = 0.0
    complete: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)


class Pacer:
    """At most `calls_per_min` calls per method across every process sharing the Redis."""

    def __init__(self, rt: Runtime, calls_per_min: float) -> None:
        self.rt = rt
        self.interval_s = 60.0 / calls_per_min
        self._pace = rt.redis.register_script(_PACE)
        self._push = rt.redis.register_script(_PUSH_BACK)

    async def wait(self, method: str) -> float:
        raw = await self._pace(keys=[self._key(method)], args=[f"{time.time():.6f}", f"{self.interval_s:.6f}"])
        delay = float(as_text(raw))
        if delay > 0:
            await asyncio.sleep(delay)
        return max(delay, 0.0)

    async def push_back(self, method: str, seconds: float) -> None:
        """Slack said "retry after `seconds`": nobody calls `method` before then."""
        await self._push(keys=[self._key(method)], args=[f"{time.time() + seconds:.6f}", f"{seconds:.3f}"])

    def _key(self, method: str) -> str:
        return self.rt.key("wu", "pace", method)


class Reader:
    """Paced, rate-limit-proof pages of conversations.history / conversations.replies."""

    def __init__(self, w: Writeup, report: BackfillReport, *, page_size: int | None = None,
                 calls_per_min: float | None = None) -> None:
        self.w = w
        self.report = report
        self.page_size = page_size or w.settings.backfill_page_size
        self.pacer = Pacer(w.rt, calls_per_min or w.settings.backfill_calls_per_min)

    async def pages(self, method: str, **params: Any) -> AsyncIterator[list[dict]]:
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            answer = await self._call(method, limit=self.page_size, cursor=cursor, **params)
            self.report.pages += 1
            yield list(answer.get("messages") or [])
            cursor = (answer.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return

    async def _call(self, method: str, **params: Any) -> dict[str, Any]:
        sdk = getattr(self.w.rt.slack.web, method.replace(".", "_"))
        clean = {k: v for k, v in params.items() if v is not None}
        for _ in range(MAX_RATE_LIMIT_WAITS):
            self.report.waited_s += await self.pacer.wait(method)
            self.report.calls += 1
            try:
                response = await sdk(**clean)
                return dict(response.data) if isinstance(response.data, dict) else {}
            except SlackApiError as exc:
                retry_after = _retry_after(exc)
                if retry_after is None:
                    error = str(exc.response.get("error", "unknown_error")) if exc.response is not None else "?"
                    raise SlackError(method, error) from None
                self.report.rate_limited += 1
                log.info("%s rate limited: waiting %.0fs as Slack asks", method, retry_after)
                await self.pacer.push_back(method, retry_after)
        raise SlackError(method, "ratelimited")


def _retry_after(exc: SlackApiError) -> float | None:
    response = exc.response
    if response is None or getattr(response, "status_code", None) != 429:
        return None
    seconds = retry_after_s(getattr(response, "headers", None) or {})
    return 30.0 if seconds is None else max(seconds, 1.0)


# ------------------------------------------------------------------------------------------------ back-fill

async def backfill_incident(rt: Runtime, incident_id: str, *, page_size: int | None = None,
                            calls_per_min: float | None = None) -> BackfillReport:
    """Read the incident's channel (channel mode) or its thread (thread mode) and merge it into the timeline."""
    w = writeup_of(rt)
    incident = await load_incident(rt, incident_id)
    report = BackfillReport(incident_id)
    if incident is None or not incident.channel:
        report.complete = True
        return report
    started = time.monotonic()
    reader = Reader(w, report, page_size=page_size, calls_per_min=calls_per_min)
    cutoff = f"{time.time():.6f}"  # messages newer than this arrive as live events; the reconcile ignores them
    seen: set[str] = set()
    if incident.mode == "thread" and incident.thread_ts:
        await _read_thread(w, reader, incident, incident.channel, incident.thread_ts, cutoff, seen, parent=True)
    else:
        await _read_channel(w, reader, incident, cutoff, seen)
    report.removed = await _reconcile(w, incident, seen, float(cutoff))
    report.complete = True
    report.elapsed_s = time.monotonic() - started
    log.info("back-fill of %s: %d calls, %d messages, +%d ~%d -%d, %d rate limited, %.1fs waiting", incident_id,
             report.calls, report.messages, report.added, report.updated, report.removed, report.rate_limited,
             report.waited_s)
    return report


async def _read_channel(w: Writeup, reader: Reader, incident: IncidentView, cutoff: str, seen: set[str]) -> None:
    channel = str(incident.channel)
    threads: list[str] = []
    async for page in reader.pages("conversations.history", channel=channel, latest=cutoff, inclusive=True):
        for message in page:
            await _merge(w, reader.report, incident, channel, message, seen)
            if message.get("reply_count") and message.get("thread_ts") == message.get("ts"):
                threads.append(str(message["ts"]))
    for thread_ts in threads:
        await _read_thread(w, reader, incident, channel, thread_ts, cutoff, seen, parent=False)


async def _read_thread(w: Writeup, reader: Reader, incident: IncidentView, channel: str, thread_ts: str,
                       cutoff: str, seen: set[str], *, parent: bool) -> None:
    reader.report.threads += 1
    try:
        async for page in reader.pages("conversations.replies", channel=channel, ts=thread_ts, latest=cutoff,
                                       inclusive=True):
            for message in page:
                if str(message.get("ts")) == thread_ts and not parent:
                    continue  # every page leads with the parent, which history already gave us
                await _merge(w, reader.report, incident, channel, message, seen)
    except SlackError as exc:
        if exc.error != "thread_not_found":  # the parent and all replies were deleted meanwhile
            raise


async def _merge(w: Writeup, report: BackfillReport, incident: IncidentView, channel: str, message: dict,
                 seen: set[str]) -> None:
    if not message.get("ts"):
        return
    ts = str(message["ts"])
    if message.get("subtype") == "tombstone":  # a deleted parent that still has replies
        if await w.timeline.update(incident.id, f"msg:{channel}:{ts}", removed=True):
            report.removed += 1
        return
    if not is_spoken(message) or is_own(message, await bot_identity(w)):
        return
    seen.add(ts)
    report.messages += 1
    fresh = message_entry(incident.id, channel, message, w.rules)
    rules = w.rules
    _, outcome = await w.timeline.upsert(fresh, lambda old, new: merge_backfilled(old, new, rules))
    report.added += outcome == "added"
    report.updated += outcome == "updated"


async def _reconcile(w: Writeup, incident: IncidentView, seen: set[str], cutoff: float) -> int:
    """Messages the timeline holds that a complete read no longer lists were deleted while the bot was away."""
    vanished = [e for e in await w.timeline.entries(incident.id)
                if e.kind in MESSAGE_KINDS and not e.removed and e.channel == incident.channel and e.ts
                and e.ts not in seen and e.at <= cutoff and _in_scope(e, incident)]
    for entry in vanished:
        await w.timeline.update(incident.id, entry.id, removed=True, data={"removed_by": "backfill"})
    return len(vanished)


def _in_scope(entry: Entry, incident: IncidentView) -> bool:
    if incident.mode != "thread":
        return True
    return entry.thread_ts == incident.thread_ts


# ------------------------------------------------------------------------------------------------ jobs


async def backfill_job(rt: Runtime, job: Job) -> None:
    incident_id = job.payload["incident"]
    report = await backfill_incident(rt, incident_id)
    await rt.redis.hset(rt.key("wu", "backfill", incident_id), mapping={
        "at": time.time(), "calls": report.calls, "messages": report.messages, "added": report.added,
        "updated": report.updated, "removed": report.removed, "reason": job.payload.get("reason", "")})
    if report.changed and job.payload.get("republish"):
        await request_postmortem(rt, incident_id, reason="back-fill found missed messages")


__all__ = ["BackfillReport", "Pacer", "Reader", "backfill_incident", "backfill_job"]
