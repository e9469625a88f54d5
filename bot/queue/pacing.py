"""Pacing calls to a rate-limited API: one budget per key, shared by every worker through Redis. Pages use it
per provider key (below); Slack's tier-limited methods use it per method (bot/slack/client.py), ranked as P1.

Why: PagerDuty's Events API v2 takes about 120 events a minute per integration (routing) key and answers 429
past it; a burst of escalation timers (1,000 due in one second) would otherwise spend its first two minutes of
budget in one second and lose the rest to 429s. Opsgenie limits per plan and per request domain (a token bucket;
see its "Rate Limiting" page) and says so with a 429 and `X-RateLimit-State: THROTTLED`.

The policy (README, "Incidents and paging"):
- A budget is `limit` sends in any `window_s` (a sliding window, so no window of the provider's own holds more),
  counted in Redis per provider key — two provider names with one routing key share one budget. The window is
  kept `MARGIN_S` longer than the provider's, so the time a request spends in transit never tips it over.
- Pages waiting for the budget take their turn by severity, then by when they started waiting: a P0 goes
  before every waiting P1–P3. P2/P3 pages (notices) may use only `LOW_SHARE` of a window: the rest stays free
  for a P0/P1 that arrives after a burst of notices.
- A page that cannot go now is told when its turn comes; the caller waits that long (briefly) or puts its job
  back in the queue for then (bot/incidents/escalation.py). Nothing is dropped; the waiting set records it.
- A 429 pauses the whole budget for its Retry-After (bounded by `MAX_PAUSE_S`), in every worker at once.
- A waiter that stops asking (its worker died and the job went elsewhere) is forgotten `FORGET_AFTER_S` after
  its turn was due, so it cannot hold the others back; one that asks again later still has its place by arrival
  (its first arrival is kept `ARRIVALS_KEPT` × `FORGET_AFTER_S` past that, then dropped, so waiters that never
  come back do not pile up on a busy key). A page withdrawn while it waits (its incident was acknowledged or
  resolved) leaves at once (`leave`). A budget nobody uses any more expires with its sets.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from bot.queue.keys import tagged
from bot.queue.replies import as_text

SEVERITY_RANK = {"P0": 0, "P1": 1, "P2": 2, "P3": 3}
LOW_SHARE = 0.75  # of a window's budget, the most P2/P3 pages may use
MARGIN_S = 1.0  # added to the provider's window: transit time must not put two windows' sends in one
# Added to each send's spacing in a shared token bucket (`spend`), for the same reason: the bucket runs on Redis's
# clock, Slack's on arrivals, and the first send of a burst (a new connection, a loaded machine) can arrive later
# than one a second after it: spaced exactly, that one was refused now and then (seen in the suite, under load).
SPEND_MARGIN_S = 0.05
MAX_PAUSE_S = 60.0  # a Retry-After longer than this is not believed (a proxy's default, a clock step)
DEFAULT_PAUSE_S = 2.0  # a 429 without Retry-After (PagerDuty's may have none)
FORGET_AFTER_S = 30.0
ARRIVALS_KEPT = 10  # × FORGET_AFTER_S: how long a forgotten waiter's first arrival is kept for its return
_RANK_SCALE = 10**13  # rank * scale + milliseconds: severity first, then who waited first

# KEYS: sent (zset send id -> ms), waiting (zset member -> rank score), forget (zset member -> ms), pause (string),
# arrived (hash member -> ms it first asked), drop (zset member -> ms its arrival is dropped).
# ARGV: window ms, limit, cap for this page (limit, or its low share), member, rank * _RANK_SCALE, forget after ms,
# arrival kept ms (after it is forgotten).
# Returns 0 when the page may go now (its send is counted), else milliseconds until its turn.
_TURN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, limit, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local member, rank, forget = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  redis.call('ZREM', KEYS[2], gone)
  redis.call('ZREM', KEYS[3], gone)
end
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now)) do
  redis.call('HDEL', KEYS[5], gone)
  redis.call('ZREM', KEYS[6], gone)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('HSETNX', KEYS[5], member, now)
local arrived = tonumber(redis.call('HGET', KEYS[5], member))
redis.call('ZADD', KEYS[2], 'NX', rank + arrived, member)
local ahead = redis.call('ZRANK', KEYS[2], member)
local used = redis.call('ZCARD', KEYS[1])
local paused = redis.call('PTTL', KEYS[4])
if paused <= 0 and ahead < cap - used then
  redis.call('ZREM', KEYS[2], member)
  redis.call('ZREM', KEYS[3], member)
  redis.call('HDEL', KEYS[5], member)
  redis.call('ZREM', KEYS[6], member)
  redis.call('ZADD', KEYS[1], now, member .. '@' .. now)
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local k = ahead - (cap - used)
local due = now + window * math.ceil((k + 1) / limit)
if k >= 0 and k < used then
  due = tonumber(redis.call('ZRANGE', KEYS[1], k, k, 'WITHSCORES')[2]) + window
end
if paused > 0 then due = math.max(due, now + paused) end
local wait = math.max(due - now, 10)
redis.call('ZADD', KEYS[3], now + wait + forget, member)
redis.call('ZADD', KEYS[6], now + wait + forget + tonumber(ARGV[7]), member)
local keep = wait + forget + tonumber(ARGV[7]) + window  -- never shortened: others here may wait longer
for _, key in ipairs({KEYS[2], KEYS[3], KEYS[5], KEYS[6]}) do
  if redis.call('PTTL', key) < keep then redis.call('PEXPIRE', key, keep) end
end
return wait
"""


# KEYS: pause. ARGV: milliseconds. A pause is only ever lengthened: a shorter Retry-After (another caller's, a
# later 429's) must not cut short a longer one. Returns the milliseconds the pause now lasts.
_PAUSE = """
local left = redis.call('PTTL', KEYS[1])
local wanted = tonumber(ARGV[1])
if left >= wanted then return left end
redis.call('SET', KEYS[1], '429', 'PX', wanted)
return wanted
"""

# KEYS: the bucket's theoretical arrival time (ms). ARGV: ms between sends, burst. A token bucket shared by every
# process (GCRA: one number per bucket). Returns 0 when a send may go now (and it is counted), else milliseconds
# until one may.
_SPEND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now)
local early = tat - now - (burst - 1) * interval
if early > 0 then return early end
redis.call('SET', KEYS[1], tat + interval, 'PX', tat + interval - now + 1000)
return 0
"""


class Pace(msgspec.Struct, frozen=True):
    """A provider key's documented budget: `limit` sends per `window_s`."""

    limit: int
    window_s: float = 60.0

    def cap(self, severity: str) -> int:
        """How much of a window a page of `severity` may use (P2/P3 leave room for P0/P1)."""
        low = SEVERITY_RANK.get(severity, 0) >= SEVERITY_RANK["P2"]
        return max(int(self.limit * LOW_SHARE), 1) if low else self.limit


def budget_id(kind: str, secret: str) -> str:
    """`pagerduty:<16 hex>`: names a key's budget without the key (Redis keys are visible to operators)."""
    return f"{kind}:{hashlib.sha256(secret.encode()).hexdigest()[:16]}"


class Pacer:
    """The shared budgets, under `<namespace>:pace:<budget>` (one Redis Cluster slot per budget)."""

    def __init__(self, redis: Any, namespace: str) -> None:
        self.redis = redis
        self.namespace = namespace
        self._turn = redis.register_script(_TURN)
        self._pause = redis.register_script(_PAUSE)
        self._spend = redis.register_script(_SPEND)

    def _keys(self, budget: str) -> list[str]:
        base = tagged(self.namespace, "pace", budget)
        return [f"{base}:sent", f"{base}:waiting", f"{base}:forget", f"{base}:pause", f"{base}:arrived",
                f"{base}:drop"]

    async def turn(self, budget: str, pace: Pace, member: str, severity: str) -> float:
        """0 when `member` (one delivery of a page) may send now — its send is counted then; otherwise seconds
        until its turn, and it keeps its place among the waiting until it asks again."""
        rank = SEVERITY_RANK.get(severity, 0) * _RANK_SCALE
        window_ms = int((pace.window_s + MARGIN_S) * 1000)
        wait_ms = await self._turn(keys=self._keys(budget), args=[
            window_ms, pace.limit, pace.cap(severity), member, rank, int(FORGET_AFTER_S * 1000),
            int(ARRIVALS_KEPT * FORGET_AFTER_S * 1000)])
        return int(wait_ms) / 1000

    async def spend(self, budget: str, *, burst: int, per_second: float) -> float:
        """A token of `budget`'s bucket (`burst` at once, then `per_second`), shared by every process: 0 when it
        was taken, else seconds until one is there. No queue: for a pace one process already keeps in order (a
        channel's posts), where only the count must be shared."""
        wait_ms = await self._spend(keys=[tagged(self.namespace, "pace", budget) + ":tat"],
                                    args=[max(int(1000 / per_second + SPEND_MARGIN_S * 1000), 1), max(burst, 1)])
        return int(wait_ms) / 1000

    async def leave(self, budget: str, member: str) -> None:
        """`member` will not ask again (its page was withdrawn): it no longer holds back those behind it."""
        _, waiting, forget, _, arrived, drop = self._keys(budget)
        async with self.redis.pipeline(transaction=False) as pipe:
            await pipe.zrem(waiting, member).zrem(forget, member).hdel(arrived, member).zrem(drop, member).execute()

    async def pause(self, budget: str, retry_after_s: float | None) -> float:
        """The provider answered 429: nobody sends on `budget` for its Retry-After (bounded), or longer if a pause
        already lasts longer; returns the pause in seconds."""
        seconds = min(max(retry_after_s or DEFAULT_PAUSE_S, 0.1), MAX_PAUSE_S)
        return int(await self._pause(keys=[self._keys(budget)[3]], args=[int(seconds * 1000)])) / 1000

    async def paused_for(self, budget: str) -> float:
        """Seconds left of a 429's pause on `budget` (0: none) — all an unpaced provider's page asks."""
        left_ms = await self.redis.pttl(self._keys(budget)[3])
        return max(int(left_ms), 0) / 1000

    async def waiting(self, budget: str) -> list[str]:
        """The deliveries waiting for `budget`, in the order they will go."""
        return [as_text(m) for m in await self.redis.zrange(self._keys(budget)[1], 0, -1)]


_pacers: dict[tuple[int, str], Pacer] = {}


def pacer_for(redis: Any, namespace: str) -> Pacer:
    """One Pacer per Redis client and namespace (its script is registered once)."""
    pacer = _pacers.get((id(redis), namespace))
    if pacer is None or pacer.redis is not redis:
        pacer = _pacers[(id(redis), namespace)] = Pacer(redis, namespace)
    return pacer
