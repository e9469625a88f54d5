"""An incident's timeline, recorded as things happen (not scraped at the end).

Entries live in Redis: a hash `<namespace>:inc:<id>:tl` of entry id → JSON and a sorted set `…:tl:order` by time.
Entry ids are deterministic where the source has an identity (`msg:<channel>:<ts>` for a Slack message), so a
live event, its Slack retry and a back-filled copy of the same message all land on one entry; an edit updates
it and a deletion marks it removed. Bot actions (declared, severity, pages...) get ids from their own keys.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis


@dataclass
class Entry:
    id: str
    incident_id: str
    at: float  # epoch seconds (UTC)
    kind: str  # message, reply, reaction, pin, member_joined, declared, severity, status, commander, note,
    #            page_sent, page_acked, escalated, diagnosis, resolved, action_item, summary, ...
    actor: str | None = None  # Slack user id, or "bot"
    text: str = ""
    ts: str | None = None  # Slack message ts, when the entry is (about) a message
    thread_ts: str | None = None
    channel: str | None = None
    permalink: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    removed: bool = False
    edited: bool = False
    key_event: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Entry:
        return cls(**json.loads(raw))


def message_entry_id(channel: str, ts: str) -> str:
    return f"msg:{channel}:{ts}"


class Timeline:
    def __init__(self, redis: aioredis.Redis, namespace: str = "chatops") -> None:
        self.redis = redis
        self.namespace = namespace

    def _keys(self, incident_id: str) -> tuple[str, str]:
        base = f"{self.namespace}:inc:{incident_id}:tl"
        return base, f"{base}:order"

    async def record(self, incident_id: str, kind: str, *, entry_id: str | None = None, at: float | None = None,
                     actor: str | None = None, text: str = "", **fields: Any) -> Entry:
        """Add an entry; with an `entry_id` that exists already, keep the original and return it (idempotent)."""
        entry = Entry(id=entry_id or f"{kind}:{uuid.uuid4().hex[:12]}", incident_id=incident_id,
                      at=time.time() if at is None else at, kind=kind, actor=actor, text=text, **fields)
        data_key, order_key = self._keys(incident_id)
        if not await self.redis.hsetnx(data_key, entry.id, entry.to_json()):
            existing = await self.redis.hget(data_key, entry.id)
            return Entry.from_json(existing)
        await self.redis.zadd(order_key, {entry.id: entry.at})
        return entry

    async def update(self, incident_id: str, entry_id: str, **changes: Any) -> Entry | None:
        """Change fields of an entry (an edit, a deletion, a reaction marking it key). None if it is unknown."""
        data_key, _ = self._keys(incident_id)
        raw = await self.redis.hget(data_key, entry_id)
        if raw is None:
            return None
        entry = Entry.from_json(raw)
        for name, value in changes.items():
            if name == "data":
                entry.data = {**entry.data, **value}
            else:
                setattr(entry, name, value)
        await self.redis.hset(data_key, entry_id, entry.to_json())
        return entry

    async def get(self, incident_id: str, entry_id: str) -> Entry | None:
        raw = await self.redis.hget(self._keys(incident_id)[0], entry_id)
        return Entry.from_json(raw) if raw is not None else None

    async def entries(self, incident_id: str, *, batch: int = 5000) -> list[Entry]:
        """All entries in time order (read in batches so a 50,000-entry timeline does not need one huge reply)."""
        data_key, order_key = self._keys(incident_id)
        out: list[Entry] = []
        start = 0
        while True:
            ids = await self.redis.zrange(order_key, start, start + batch - 1)
            if not ids:
                return out
            raws = await self.redis.hmget(data_key, ids)
            out.extend(Entry.from_json(raw) for raw in raws if raw is not None)
            start += batch

    async def count(self, incident_id: str) -> int:
        return int(await self.redis.zcard(self._keys(incident_id)[1]))
