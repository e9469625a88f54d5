"""Overrides in Redis: one hash per schedule, override id → JSON, kept until a day after they end.

Durable the same way incidents are (Redis persistence, Sentinel failover): a restart forgets nothing. The
timeline functions read them as plain values; nothing here knows about rotations.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from bot.oncall.timeline import Override
from checks.schema import dump_json, parse_json

KEEP_AFTER_END_S = 86400


class OverrideStore:
    def __init__(self, redis: Any, namespace: str) -> None:
        self.redis = redis
        self.namespace = namespace

    def _key(self, schedule: str) -> str:
        return f"{self.namespace}:oncall:overrides:{schedule}"

    async def add(self, schedule: str, user: str, start: float, end: float, made_by: str, *, kind: str = "override",
                  replaces: str | None = None) -> Override:
        override = Override(id=uuid.uuid4().hex[:10], schedule=schedule, user=user, start=start, end=end,
                            made_by=made_by, made_at=time.time(), kind=kind, replaces=replaces)
        await self.redis.hset(self._key(schedule), override.id, dump_json(override))
        return override

    async def list(self, schedule: str, *, now: float | None = None) -> list[Override]:
        """The schedule's overrides not long over, oldest made first; expired ones are dropped on the way."""
        now = time.time() if now is None else now
        raw = await self.redis.hgetall(self._key(schedule))
        kept, expired = [], []
        for field, value in raw.items():
            override = parse_json(Override, value)
            (expired if override.end < now - KEEP_AFTER_END_S else kept).append((override, field))
        if expired:
            await self.redis.hdel(self._key(schedule), *(field for _, field in expired))
        return sorted((o for o, _ in kept), key=lambda o: o.made_at)

    async def remove(self, schedule: str, override_id: str) -> bool:
        return bool(await self.redis.hdel(self._key(schedule), override_id))
