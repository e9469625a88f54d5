"""An incident's timeline, recorded as things happen (not scraped at the end).

Entries live in Redis: a hash `{<namespace>:inc:<id>}:tl` of entry id → JSON, a sorted set `…:tl:order` by time,
and per thread a sorted set `…:tl:thread:<thread_ts>` of its replies (all in the incident's hash slot, so the
transactions below run on Redis Cluster too) (so a thread summary does not read a
50,000-entry incident). Entry ids are deterministic where the source has an identity (`msg:<channel>:<ts>` for
a Slack message), so a live event, its Slack retry and a back-filled copy of the same message all land on one
entry; an edit updates it and a deletion marks it removed. Bot actions (declared, severity, pages...) get ids
from their own keys. One key spans incidents: `<namespace>:inc:tl:actions`, the set of incidents whose timeline holds
an action item, so the follow-ups list reads those timelines and not every open incident's.

Changes to an existing entry (`update`, `upsert`) are optimistic transactions (WATCH on the incident's hash):
a live edit and a back-filled copy of the same message racing in two workers both land, neither is lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from bot.incidents.store import incident_key
from bot.queue.replies import as_text

log = logging.getLogger("bot.timeline")

Observer = Callable[["Entry"], Awaitable[None]]


WATCH_ATTEMPTS = 50  # optimistic-lock retries of one entry change before giving up (bounded, like every retry)


class EntryKind(StrEnum):
    """Every kind of timeline entry. The values are what Redis holds, so never rename one. A new kind must also
    be classified by the catch-up (bot/writeup/summaries.py) and the postmortem (bot/writeup/postmortem/facts.py);
    tests/test_timeline_kinds.py checks that it is."""

    # what people said and did in the channel (bot/writeup/capture.py)
    MESSAGE = "message"
    REPLY = "reply"
    REACTION = "reaction"
    PIN = "pin"
    MEMBER_JOINED = "member_joined"
    # what the incident commands changed (bot/incidents/lifecycle.py, escalation.py, roles.py)
    DECLARED = "declared"
    SEVERITY = "severity"
    STATUS = "status"
    COMMANDER = "commander"
    ROLE = "role"
    NOTE = "note"
    RESOLVED = "resolved"
    REMINDER = "reminder"
    ACTION_ITEM = "action_item"
    # paging (bot/incidents/escalation.py, provider_acks.py) and alerts (alerts.py)
    PAGE_SENT = "page_sent"
    PAGE_FAILED = "page_failed"
    PAGE_WITHHELD = "page_withheld"  # not sent: acknowledged or resolved before its turn (not a failure)
    PAGE_ACKED = "page_acked"
    PAGE_RESOLVED = "page_resolved"
    ESCALATED = "escalated"
    ALERT = "alert"
    # diagnosis runs (bot/incidents/lifecycle.py, bot/writeup/install.py)
    DIAGNOSIS_REQUESTED = "diagnosis_requested"
    DIAGNOSIS = "diagnosis"
    DIAGNOSIS_FINDINGS = "diagnosis_findings"
    # fixes from Slack: requested, approved, denied, applied or failed (bot/remediation)
    REMEDIATION = "remediation"
    # what the bot wrote about the incident (bot/writeup)
    SUMMARY = "summary"
    POSTMORTEM = "postmortem"


MESSAGE_KINDS = frozenset({EntryKind.MESSAGE, EntryKind.REPLY})  # what people wrote in the channel or a thread


def entry_kind(kind: str) -> EntryKind:
    """`kind` as an EntryKind; a ValueError naming the known kinds for any other string (a typo would otherwise
    record entries that no summary or postmortem shows)."""
    try:
        return EntryKind(kind)
    except ValueError:
        known = ", ".join(k.value for k in EntryKind)
        raise ValueError(f"unknown timeline entry kind {kind!r}; expected one of {known}") from None


class Entry(msgspec.Struct):
    id: str
    incident_id: str
    at: float  # epoch seconds (UTC)
    kind: str  # an EntryKind; entries read back from Redis hold its plain string value (equal to the member)
    actor: str | None = None  # Slack user id, or "bot"
    text: str = ""
    ts: str | None = None  # Slack message ts, when the entry is (about) a message
    thread_ts: str | None = None
    channel: str | None = None
    permalink: str | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    removed: bool = False
    edited: bool = False
    key_event: bool = False

    def to_json(self) -> str:
        # shallow is enough: `data` holds JSON values, which json.dumps writes as they are
        return json.dumps(msgspec.structs.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Entry:
        data = json.loads(raw)
        if not _FIELDS.issuperset(data):  # written by a newer version: keep what this one knows
            data = {k: v for k, v in data.items() if k in _FIELDS}
        return cls(**data)

    @property
    def is_reply(self) -> bool:
        return bool(self.thread_ts) and self.thread_ts != self.ts


_FIELDS = frozenset(Entry.__struct_fields__)


def has_action_item(entry: Entry) -> bool:
    """An `/incident action` entry, or a message captured as one (`action:`, `TODO:`, the action reaction)."""
    return entry.kind == EntryKind.ACTION_ITEM or bool(entry.data.get("action"))


def message_entry_id(channel: str, ts: str) -> str:
    return f"msg:{channel}:{ts}"


class Timeline:
    """`observers` are awaited with every entry that is new (not a repeat of an id): features react to what the
    incident records (a `resolved` entry starts the postmortem) without the recorder knowing about them. An
    observer's failure is logged, never raised into the recorder."""

    def __init__(self, redis: aioredis.Redis, namespace: str = "chatops",
                 observers: list[Observer] | None = None) -> None:
        self.redis = redis
        self.namespace = namespace
        self.observers: list[Observer] = list(observers or [])

    def _keys(self, incident_id: str) -> tuple[str, str]:
        base = incident_key(self.namespace, incident_id, "tl")
        return base, f"{base}:order"

    def actions_key(self) -> str:
        """The set of incidents whose timeline holds an action item (the follow-ups list reads only those live)."""
        return f"{self.namespace}:inc:tl:actions"

    def _note_action(self, pipe: Any, entry: Entry) -> None:
        if has_action_item(entry):
            pipe.sadd(self.actions_key(), entry.incident_id)

    async def incidents_with_actions(self) -> list[str]:
        return sorted(as_text(i) for i in await self.redis.smembers(self.actions_key()))

    async def forget_actions(self, incident_ids: list[str]) -> None:
        if incident_ids:
            await self.redis.srem(self.actions_key(), *incident_ids)

    def _thread_key(self, incident_id: str, thread_ts: str) -> str:
        return incident_key(self.namespace, incident_id, "tl", "thread", thread_ts)

    async def record(self, incident_id: str, kind: EntryKind | str, *, entry_id: str | None = None, at: float | None = None,
                     actor: str | None = None, text: str = "", **fields: Any) -> Entry:
        """Add an entry; with an `entry_id` that exists already, keep the original and return it (idempotent).
        An unknown `kind` raises ValueError."""
        kind = entry_kind(kind)
        entry = Entry(id=entry_id or f"{kind}:{uuid.uuid4().hex[:12]}", incident_id=incident_id,
                      at=time.time() if at is None else at, kind=kind, actor=actor, text=text, **fields)
        return await self.add(entry) or await self._require(incident_id, entry.id)

    async def add(self, entry: Entry) -> Entry | None:
        """Store a complete entry unless its id exists; None when it did (nothing changed then)."""
        entry_kind(entry.kind)  # refuse an unknown kind here too: captured messages come in through `add`
        data_key, order_key = self._keys(entry.incident_id)
        if not await self.redis.hsetnx(data_key, entry.id, entry.to_json()):
            return None
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(order_key, {entry.id: entry.at})
        self._note_action(pipe, entry)
        if entry.is_reply:
            pipe.zadd(self._thread_key(entry.incident_id, str(entry.thread_ts)), {entry.id: entry.at})
        await pipe.execute()
        for observer in list(self.observers):
            try:
                await observer(entry)
            except Exception:
                log.exception("timeline observer failed on %s %s", entry.incident_id, entry.id)
        return entry

    async def upsert(self, entry: Entry, merge: Callable[[Entry, Entry], Entry | None]) -> tuple[Entry, str]:
        """Add `entry`, or when its id exists replace the stored one by `merge(stored, entry)` (None: keep it).
        Returns the entry as stored now and what happened: "added", "updated" or "unchanged"."""
        added = await self.add(entry)
        if added is not None:
            return added, "added"
        changed = False

        def apply(stored: Entry) -> Entry | None:
            nonlocal changed
            merged = merge(stored, entry)
            changed = merged is not None and merged != stored
            return merged if changed else None

        current = await self._transform(entry.incident_id, entry.id, apply)
        return (current or entry), "updated" if changed else "unchanged"

    async def update(self, incident_id: str, entry_id: str, **changes: Any) -> Entry | None:
        """Change fields of an entry (an edit, a deletion, a reaction marking it key). None if it is unknown."""
        def apply(entry: Entry) -> Entry:
            for name, value in changes.items():
                if name == "data":
                    entry.data = {**entry.data, **value}
                else:
                    setattr(entry, name, value)
            return entry

        return await self._transform(incident_id, entry_id, apply)

    async def transform(self, incident_id: str, entry_id: str, fn: Callable[[Entry], Entry | None]) -> Entry | None:
        """Read-modify-write one entry atomically: `fn(entry)` returns the new entry, or None to leave it.
        Returns the entry as stored afterwards; None if there is no such entry. `fn` may run more than once."""
        return await self._transform(incident_id, entry_id, fn)

    async def _transform(self, incident_id: str, entry_id: str, fn: Callable[[Entry], Entry | None]) -> Entry | None:
        data_key, _ = self._keys(incident_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            for attempt in range(WATCH_ATTEMPTS):
                if attempt >= 3:  # a busy incident: step aside briefly so the writers stop colliding
                    await asyncio.sleep(random.uniform(0, 0.01 * attempt))
                try:
                    await pipe.watch(data_key)
                    raw = await pipe.hget(data_key, entry_id)
                    if raw is None:
                        await pipe.reset()
                        return None
                    current = Entry.from_json(raw)
                    changed = fn(Entry.from_json(raw))
                    if changed is None:
                        await pipe.reset()
                        return current
                    pipe.multi()
                    pipe.hset(data_key, entry_id, changed.to_json())
                    await pipe.execute()
                    if has_action_item(changed):
                        await self.redis.sadd(self.actions_key(), incident_id)
                    return changed
                except WatchError:
                    continue
        raise RuntimeError(f"timeline entry {entry_id} of {incident_id} kept changing under us; gave up after "
                           f"{WATCH_ATTEMPTS} attempts")

    async def _require(self, incident_id: str, entry_id: str) -> Entry:
        found = await self.get(incident_id, entry_id)
        if found is None:  # only if someone deleted the timeline between two commands
            raise LookupError(f"timeline entry {entry_id} of {incident_id} vanished")
        return found

    async def get(self, incident_id: str, entry_id: str) -> Entry | None:
        raw = await self.redis.hget(self._keys(incident_id)[0], entry_id)
        return Entry.from_json(raw) if raw is not None else None

    async def entries(self, incident_id: str, *, batch: int = 5000) -> list[Entry]:
        """All entries in time order (read in batches so a 50,000-entry timeline does not need one huge reply)."""
        data_key, order_key = self._keys(incident_id)
        return await self._read_ordered(data_key, order_key, batch=batch)

    async def entries_since(self, incident_id: str, at: float, *, batch: int = 5000) -> list[Entry]:
        """Entries whose time is after `at` (a catch-up summary's "what changed since the last one")."""
        data_key, order_key = self._keys(incident_id)
        return await self._read_ordered(data_key, order_key, batch=batch, after=at)

    async def thread(self, incident_id: str, thread_ts: str) -> list[Entry]:
        """The parent of a thread (when recorded) and its replies, in time order."""
        data_key, _ = self._keys(incident_id)
        replies = await self._read_ordered(data_key, self._thread_key(incident_id, thread_ts))
        parent = await self.get_message(incident_id, replies[0].channel, thread_ts) if replies else None
        return ([parent] if parent else []) + replies

    async def get_message(self, incident_id: str, channel: str | None, ts: str) -> Entry | None:
        return await self.get(incident_id, message_entry_id(channel or "", ts)) if channel else None

    async def _read_ordered(self, data_key: str, order_key: str, *, batch: int = 5000,
                            after: float | None = None) -> list[Entry]:
        out: list[Entry] = []
        start = 0
        while True:
            if after is None:
                ids = await self.redis.zrange(order_key, start, start + batch - 1)
            else:
                ids = await self.redis.zrangebyscore(order_key, f"({after}", "+inf", start=start, num=batch)
            if not ids:
                return out
            raws = await self.redis.hmget(data_key, ids)
            out.extend(Entry.from_json(raw) for raw in raws if raw is not None)
            start += batch

    async def forget(self, incident_id: str, entry_ids: list[str]) -> int:
        """Remove entries for good (an operator purging a message; tests simulating events that never came)."""
        if not entry_ids:
            return 0
        data_key, order_key = self._keys(incident_id)
        found = [e for e in await self._read(incident_id, entry_ids) if e is not None]
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(data_key, *entry_ids)
        pipe.zrem(order_key, *entry_ids)
        for entry in found:
            if entry.is_reply:
                pipe.zrem(self._thread_key(incident_id, str(entry.thread_ts)), entry.id)
        await pipe.execute()
        return len(found)

    async def _read(self, incident_id: str, entry_ids: list[str]) -> list[Entry | None]:
        raws = await self.redis.hmget(self._keys(incident_id)[0], entry_ids)
        return [Entry.from_json(raw) if raw is not None else None for raw in raws]

    async def count(self, incident_id: str) -> int:
        return int(await self.redis.zcard(self._keys(incident_id)[1]))
