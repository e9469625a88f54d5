"""When each firing of an alert began, for sources that do not say it in every message.

An alert instance is `(fingerprint, starts_at)`. CloudWatch's OK message carries only its own time, and the
generic webhook carries none: this remembers the firings' start times per alert (a sorted set, score = epoch
seconds) and when each ended, so a resolution is matched with the firing it follows — and an old, replayed one
with an old firing, which changes nothing in a newer incident. It also remembers resolutions on their own
(`cleared`), for a source whose resolution may arrive before the firing it ends (CloudWatch through SNS).
"""

from __future__ import annotations

from typing import Any

from bot.queue.replies import as_text

TTL_S = 90 * 86_400  # as long as the incident store remembers which incident an instance belonged to
KEPT_CLEARED = 50  # resolutions remembered per alert: a flapping alarm must not grow its set without bound


class Episodes:
    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis, self.prefix = redis, prefix

    async def began(self, alert: str, start: str, at: float) -> None:
        """Record that a firing of `alert` began at `at` (its start named `start`). Idempotent."""
        key = self._key(alert)
        await self.redis.zadd(key, {start: at})
        await self.redis.expire(key, TTL_S)

    async def latest(self, alert: str, at: float) -> tuple[str, bool] | None:
        """The firing that was the latest at `at`: (its start, whether it had ended by then); None if none."""
        found = await self.redis.zrevrangebyscore(self._key(alert), at, "-inf", start=0, num=1)
        if not found:
            return None
        start = as_text(found[0])
        ended = await self.redis.hget(self._key(alert, "ended"), start)
        return start, ended is not None and float(ended) <= at

    async def fire(self, alert: str, at: float) -> str:
        """The start of the firing that `at` belongs to: the open one, or a new one beginning at `at`. Callers
        hold the alert's lock, so two deliveries of one firing cannot both begin one."""
        current = await self.latest(alert, at)
        if current and not current[1]:
            return current[0]
        start = f"{at:.0f}"
        await self.began(alert, start, at)
        return start

    async def end(self, alert: str, at: float) -> str | None:
        """The start of the firing a resolution at `at` ends (None: nothing fired before it)."""
        current = await self.latest(alert, at)
        if current is None:
            return None
        key = self._key(alert, "ended")
        await self.redis.hsetnx(key, current[0], f"{at}")
        await self.redis.expire(key, TTL_S)
        return current[0]

    async def cleared(self, alert: str, name: str, at: float, ttl_s: float) -> None:
        """Remember a resolution at `at` whatever firing it ends: SNS keeps no order, so the firing it ends may
        arrive after it, and `cleared_after` finds it then. The newest KEPT_CLEARED per alert are kept."""
        key = self._key(alert, "cleared")
        await self.redis.zadd(key, {name: at})
        await self.redis.zremrangebyrank(key, 0, -KEPT_CLEARED - 1)
        await self.redis.expire(key, max(1, int(ttl_s)))

    async def cleared_after(self, alert: str, at: float) -> str | None:
        """The first remembered resolution after a firing that began at `at`; None when there is none, or when
        another firing began in between (the resolution ends that one)."""
        found = await self.redis.zrangebyscore(self._key(alert, "cleared"), f"({at}", "+inf", start=0, num=1,
                                               withscores=True)
        if not found:
            return None
        name, ended = found[0]
        between = await self.redis.zcount(self._key(alert), f"({at}", f"({ended}")
        return None if between else as_text(name)

    def _key(self, alert: str, *more: str) -> str:
        return ":".join([self.prefix, alert, *more])

