"""The job queue: Redis Streams with a consumer group, a delayed set, and a dead-letter stream.

Delivery is at-least-once. A job is acknowledged only after its handler returns; a worker that dies mid-job has
its jobs handed to a live worker; so **a job may run more than once**, and an effect that must happen once (a
page, a Slack message) is guarded by `once()` or an idempotency key of its own.

Life of a job::

    enqueue ──(due now)──> stream ──XREADGROUP──> handler ──ok──> XACK + XDEL      (stream: its kind's lane)
       │                    ▲  ▲                    │
       └─(later)─> delayed ─┘  │                    ├─ error / Retry ──> delayed (attempt + 1, backoff)
                  (mover)      │                    ├─ Permanent, unknown kind, or out of deliveries ──> dead
                               └── reclaimer: entries of a dead worker, or idle past the visibility timeout,
                                   go back to the stream (attempt + 1), or to `dead` when out of deliveries

Redis keys for a queue named N. They share the hash tag {N} (bot/queue/keys.py), so on Redis Cluster a queue
lives in one slot and every script below runs there; each script names every key it touches in KEYS.

    {N}:stream           stream of due jobs; fields j (job id), t (token), k (kind), p (JSON payload),
                         a (attempt: this delivery's number, from 1), e (first enqueue, epoch seconds)
    {N}:urgent           the same, for the kinds put first (`Queue.put_first`: pages, escalation timers)
    {N}:stream, {N}:urgent group "workers"
    {N}:delayed          zset: token -> due time (ms, Redis clock)
    {N}:delayed:jobs     hash: token -> the job's stream fields (JSON array), until it is due
    {N}:id:<job id>      string: token of the waiting job that holds this id (idempotent enqueue only)
    {N}:dead             stream of dead letters: job_id, kind, payload, attempts, error, enqueued_at, failed_at
    {N}:alive:<consumer> a live worker's heartbeat (PX)
    {N}:<anything>       `Queue.key(...)`: a claim key that an enqueue sets atomically (enqueue_claimed)

The token names one enqueue: retries of it keep the token; a later enqueue under the same job id gets a new one.

Two lanes: a job of a kind put first goes to `{N}:urgent`, everything else to `{N}:stream`, and a worker takes
urgent entries before any other and keeps slots for them (bot/queue/worker.py). A page queued behind a thousand
diagnosis checks waited for them all (28 s in the incidents benchmark). A job takes its kind's lane when it is
queued, moved in from the delayed set (timers, retries) or replayed from the dead letters; a job handed back
(reclaimed, released at a stop) returns to the lane it was read from. The lanes share every other key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from bot.queue.batch import Batcher
from bot.queue.connection import durable
from bot.queue.keys import tagged
from bot.queue.replies import as_text
from bot.retry import RetryPolicy

if TYPE_CHECKING:
    pass

log = logging.getLogger("bot.queue")

GROUP = "workers"
JOB_RETRY = RetryPolicy(base_s=1, max_s=60)  # attempts are bounded by Queue.max_deliveries, not by the policy
ERROR_TEXT_MAX = 1000

__all__ = ["Job", "Permanent", "Queue", "QueueStats", "Retry", "error_text", "job_from_entry", "once"]


class Job(msgspec.Struct):
    id: str
    kind: str
    payload: dict[str, Any]
    attempt: int  # delivery count, 1 on first delivery
    enqueued_at: float  # epoch seconds of the first enqueue; retries keep it
    entry_id: str = ""  # the stream entry being processed
    token: str = ""
    stream: str = ""  # the lane's stream it was read from ('' when not from one)

    def __repr__(self) -> str:
        # The job as a reader knows it: where it sits in Redis (entry, lease token, lane) stays out of reprs.
        return (f"Job(id={self.id!r}, kind={self.kind!r}, payload={self.payload!r}, attempt={self.attempt!r}, "
                f"enqueued_at={self.enqueued_at!r})")


class QueueStats(msgspec.Struct, frozen=True):
    depth: int  # due jobs not yet picked up by a worker
    pending: int  # picked up, not yet acknowledged (running, or held by a dead worker until reclaimed)
    oldest_pending_age_s: float  # since the oldest pending job entered the stream; 0 when none
    delayed: int  # scheduled for later, retries included
    dead_letters: int
    urgent_depth: int = 0  # of `depth`, the urgent lane's (pages, timers): a worker should take them at once


class Retry(Exception):
    """Raised by a handler to run the job again later: after `delay_s`, or the queue's backoff when None.

    It counts as a delivery: a job that keeps asking for retries ends in the dead letters after `max_deliveries`.
    """

    def __init__(self, reason: str = "retry requested", *, delay_s: float | None = None) -> None:
        super().__init__(reason)
        self.delay_s = delay_s


class Permanent(Exception):
    """Raised by a handler when retrying cannot help: the job goes straight to the dead letters with this text."""


async def once(redis: aioredis.Redis, key: str, ttl_s: int = 7 * 86400) -> bool:
    """True the first time `key` is claimed (SET NX EX): the guard for effects that must happen once.

    Claim it right before the effect. If the process dies between the claim and the effect, the effect is skipped
    on the re-run: for a page that is the wrong way round, so pair it with the provider's own dedup key.
    """
    return bool(await redis.set(key, "1", nx=True, ex=ttl_s))


def error_text(exc: BaseException) -> str:
    """"Type: message", short enough for a dead-letter entry and a Slack message."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= ERROR_TEXT_MAX else text[: ERROR_TEXT_MAX - 1] + "…"


# Shared by the scripts below. Times come from Redis (TIME) so that workers with skewed clocks agree on "due".
_LUA_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function fields_of(flat)
  local f = {}
  for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
  return f
end
local function job_fields(f, attempt)
  return {'j', f.j, 't', f.t, 'k', f.k, 'p', f.p, 'a', tostring(attempt), 'e', f.e}
end
-- A waiting job holds its id so that enqueueing the id again is a no-op; unguarded jobs have token == id.
local function hold_id(id_key, f, ttl_ms)
  if f.t ~= f.j then redis.call('SET', id_key, f.t, 'NX', 'PX', ttl_ms) end
end
-- The lane of a kind: ARGV from `first` on name the kinds put first.
local function lane_of(kind, first, urgent, other)
  for i = first, #ARGV do
    if ARGV[i] == kind then return urgent end
  end
  return other
end
local function dead_letter(dead, maxlen, f, err, failed_at)
  redis.call('XADD', dead, 'MAXLEN', '~', maxlen, '*', 'job_id', f.j, 'kind', f.k, 'payload', f.p,
             'attempts', f.a, 'error', err, 'enqueued_at', f.e, 'failed_at', failed_at)
end
"""

# KEYS: the kind's lane (stream or urgent), delayed, delayed:jobs, id key[, claim key]. ARGV: job id, token, kind,
# payload, enqueued_at, run_at ms or '', delay ms, guarded '1'/'0', id ttl ms[, claim value, claim ttl ms]. Returns
# the job id; nil when the id is held by a waiting job; {holder} when the claim key is held (nothing is queued then).
_ENQUEUE = _LUA_COMMON + """
local now = now_ms()
local due = now + tonumber(ARGV[7])
if ARGV[6] ~= '' then due = tonumber(ARGV[6]) end
if KEYS[5] then
  local holder = redis.call('GET', KEYS[5])
  if holder then return {holder} end
end
if ARGV[8] == '1' then
  local ttl = math.max(due - now, 0) + tonumber(ARGV[9])
  if not redis.call('SET', KEYS[4], ARGV[2], 'NX', 'PX', ttl) then return false end
end
if KEYS[5] then redis.call('SET', KEYS[5], ARGV[10], 'PX', ARGV[11]) end
local fields = {'j', ARGV[1], 't', ARGV[2], 'k', ARGV[3], 'p', ARGV[4], 'a', '1', 'e', ARGV[5]}
if due > now then
  redis.call('ZADD', KEYS[2], due, ARGV[2])
  redis.call('HSET', KEYS[3], ARGV[2], cjson.encode(fields))
else
  redis.call('XADD', KEYS[1], '*', unpack(fields))
end
return ARGV[1]
"""

# KEYS: delayed, delayed:jobs, urgent, stream. ARGV: limit, the kinds put first... Moves due jobs into their
# lane's stream; returns how many.
_MOVE_DUE = _LUA_COMMON + """
local tokens = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[1]))
for _, token in ipairs(tokens) do
  local record = redis.call('HGET', KEYS[2], token)
  redis.call('ZREM', KEYS[1], token)
  if record then
    redis.call('HDEL', KEYS[2], token)
    local fields = cjson.decode(record)
    redis.call('XADD', lane_of(fields_of(fields).k, 2, KEYS[3], KEYS[4]), '*', unpack(fields))
  end
end
return #tokens
"""


# KEYS: id key. ARGV: token. A started job gives up its id: a trigger arriving while it runs is not lost.
_STARTED = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS: stream. ARGV: group, entry id. XACK returning 0 means the entry was reclaimed from us meanwhile.
_ACK = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""

# KEYS: stream, delayed, delayed:jobs, dead, the job's id key. ARGV: group, entry id, error, delay ms, deliveries
# allowed (0 for "dead now"), dead maxlen, failed_at, id ttl ms. Returns 'retry', 'dead', 'lost' or 'gone'.
_FAIL = _LUA_COMMON + """
local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 'lost' end
redis.call('XDEL', KEYS[1], ARGV[2])
if #entry == 0 then return 'gone' end
local f = fields_of(entry[1][2])
local attempt = tonumber(f.a)
if attempt >= tonumber(ARGV[5]) then
  dead_letter(KEYS[4], ARGV[6], f, ARGV[3], ARGV[7])
  return 'dead'
end
local delay = tonumber(ARGV[4])
redis.call('ZADD', KEYS[2], now_ms() + delay, f.t)
redis.call('HSET', KEYS[3], f.t, cjson.encode(job_fields(f, attempt + 1)))
hold_id(KEYS[5], f, delay + tonumber(ARGV[8]))
return 'retry'
"""

# KEYS: stream, dead, then per entry the id key of its job. ARGV: group, deliveries allowed, reason, dead maxlen,
# failed_at, id ttl ms, deliveries it counts (1, or 0 for jobs cut short through no fault of theirs), entry ids...
# Puts unfinished entries back in the stream (attempt + 1) or in `dead` when out of deliveries.
# Returns {job id, kind, 'requeued'|'dead'} per entry actually released (XACK guards against double release).
_RELEASE = _LUA_COMMON + """
local out = {}
local counts = tonumber(ARGV[7])
for i = 8, #ARGV do
  local id = ARGV[i]
  local entry = redis.call('XRANGE', KEYS[1], id, id)
  if redis.call('XACK', KEYS[1], ARGV[1], id) == 1 then
    redis.call('XDEL', KEYS[1], id)
    if #entry > 0 then
      local f = fields_of(entry[1][2])
      local attempt = tonumber(f.a)
      if counts > 0 and attempt >= tonumber(ARGV[2]) then
        dead_letter(KEYS[2], ARGV[4], f, ARGV[3], ARGV[5])
        table.insert(out, {f.j, f.k, 'dead'})
      else
        redis.call('XADD', KEYS[1], '*', unpack(job_fields(f, attempt + counts)))
        hold_id(KEYS[i - 5], f, tonumber(ARGV[6]))
        table.insert(out, {f.j, f.k, 'requeued'})
      end
    end
  end
end
return out
"""

# KEYS: delayed, delayed:jobs, id key. ARGV: job id. Returns 1 when a waiting delayed job was removed.
_CANCEL = """
local token = redis.call('GET', KEYS[3]) or ARGV[1]
if redis.call('ZREM', KEYS[1], token) == 0 then return 0 end
redis.call('HDEL', KEYS[2], token)
if redis.call('GET', KEYS[3]) == token then redis.call('DEL', KEYS[3]) end
return 1
"""

# KEYS: urgent, stream, delayed, dead. ARGV: group. One consistent snapshot of both lanes: {stream lengths,
# pending, oldest pending id or '', delayed, delayed and due, dead letters, now ms, urgent length, urgent pending}.
_SNAPSHOT = _LUA_COMMON + """
local lengths, pendings, oldest = {0, 0}, {0, 0}, ''
for lane = 1, 2 do
  lengths[lane] = redis.call('XLEN', KEYS[lane])
  local summary = redis.pcall('XPENDING', KEYS[lane], ARGV[1])
  if type(summary) == 'table' and not summary.err and summary[1] > 0 then
    pendings[lane] = summary[1]
    local ms = tonumber(string.match(summary[2], '^(%d+)'))
    if oldest == '' or ms < tonumber(string.match(oldest, '^(%d+)')) then oldest = summary[2] end
  end
end
local now = now_ms()
return {lengths[1] + lengths[2], pendings[1] + pendings[2], oldest, redis.call('ZCARD', KEYS[3]),
        redis.call('ZCOUNT', KEYS[3], '-inf', now), redis.call('XLEN', KEYS[4]), now, lengths[1], pendings[1]}
"""

# KEYS: urgent, stream, the consumer's heartbeat key. ARGV: group, consumer. Forgets a dead consumer with nothing
# pending in either lane (XGROUP DELCONSUMER drops its pending entries, hence the atomic check), so restarts do not
# pile up consumers. A lane without the group yet (written by a version before lanes) has nothing to forget.
_FORGET_CONSUMER = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
for lane = 1, 2 do
  local held = redis.pcall('XPENDING', KEYS[lane], ARGV[1], '-', '+', 1, ARGV[2])
  if type(held) == 'table' and not held.err and #held > 0 then return 0 end
end
for lane = 1, 2 do redis.pcall('XGROUP', 'DELCONSUMER', KEYS[lane], ARGV[1], ARGV[2]) end
return 1
"""

# KEYS: dead, urgent, stream. ARGV: dead-letter entry id, new token, the kinds put first... Puts a dead letter
# back as a fresh job (attempt 1), in its kind's lane.
_REPLAY = _LUA_COMMON + """
local entry = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #entry == 0 then return false end
local f = fields_of(entry[1][2])
redis.call('XADD', lane_of(f.kind, 3, KEYS[2], KEYS[3]), '*', 'j', f.job_id, 't', ARGV[2], 'k', f.kind,
           'p', f.payload, 'a', '1', 'e', f.enqueued_at)
redis.call('XDEL', KEYS[1], ARGV[1])
return f.job_id
"""


class Queue:
    """Producer side and shared plumbing of one named queue. Creating it does no I/O."""

    def __init__(
        self,
        redis: aioredis.Redis,
        name: str = "chatops",
        *,
        visibility_timeout_s: float = 30.0,
        max_deliveries: int = 5,
        retry: RetryPolicy = JOB_RETRY,
        maxlen_hint: int = 10_000,
        idempotency_ttl_s: float = 86_400.0,
    ) -> None:
        """`maxlen_hint` caps the dead-letter stream (approximately). The job stream is never trimmed by length:
        that would drop jobs nobody ran; finished entries are deleted one by one instead.
        `idempotency_ttl_s` bounds how long a waiting job holds its id past its due time, should it leak."""
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        self.redis = redis
        self.name = name
        self.visibility_timeout_s = visibility_timeout_s
        self.max_deliveries = max_deliveries
        self.retry = retry
        self.maxlen_hint = maxlen_hint
        self.idempotency_ttl_s = idempotency_ttl_s
        self._prefix = tagged(name)  # once: key() is on the ack path, and tagged() runs a regex
        self.stream_key = self.key("stream")
        self.urgent_key = self.key("urgent")
        self.streams = (self.urgent_key, self.stream_key)  # the lanes, in the order a worker takes them
        self._first: frozenset[str] = frozenset()
        self.delayed_key = self.key("delayed")
        self.delayed_jobs_key = self.key("delayed", "jobs")
        self.dead_key = self.key("dead")
        self.group = GROUP
        self._batcher = Batcher(redis)  # enqueues come in bursts (slash commands, fan-out of checks)
        self._scripts = {
            script_name: redis.register_script(source)
            for script_name, source in (
                ("enqueue", _ENQUEUE), ("move_due", _MOVE_DUE), ("started", _STARTED), ("ack", _ACK),
                ("fail", _FAIL), ("release", _RELEASE), ("cancel", _CANCEL), ("snapshot", _SNAPSHOT),
                ("forget_consumer", _FORGET_CONSUMER), ("replay", _REPLAY),
            )
        }

    def key(self, *parts: object) -> str:
        """A key in this queue's hash slot (`{N}:...`): the only keys a queue script may touch."""
        return ":".join([self._prefix, *(str(p) for p in parts)])

    def id_key(self, job_id: str) -> str:
        return self.key("id", job_id)

    def alive_key(self, consumer: str) -> str:
        return self.key("alive", consumer)

    def put_first(self, *kinds: str) -> None:
        """Jobs of these kinds go in the urgent lane, which workers take before anything else. For what a person
        waits on in an emergency (a page, an escalation timer): never for a kind that comes in floods, or the
        lane is as long as the other. Every process that enqueues or moves such jobs says so (a feature's install
        does); a job enqueued by one that did not still runs, in the other lane."""
        self._first = self._first | frozenset(kinds)

    def stream_for(self, kind: str) -> str:
        return self.urgent_key if kind in self._first else self.stream_key

    # -- producer API -------------------------------------------------------------------------------------------

    async def enqueue(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        job_id: str | None = None,
        delay_s: float = 0.0,
        run_at: float | None = None,
    ) -> str | None:
        """Queue a job now, after `delay_s`, or at `run_at` (epoch seconds; due times are kept on Redis's clock,
        so `run_at` assumes this host's clock agrees with Redis's, as NTP gives). Returns the job id.

        With `job_id` the enqueue is idempotent: it returns None while a job with that id is waiting to run
        (queued, delayed, or waiting for a retry). Once a worker has started it, the id is free again, so a
        trigger that arrives while the job runs (e.g. "refresh the progress message") schedules one more run
        instead of being lost. Never-twice effects therefore still need `once()`.
        """
        result = await self._enqueue(kind, payload, job_id, delay_s, run_at, claim=None)
        return result if isinstance(result, str) else None

    async def enqueue_claimed(self, claim_key: str, claim_value: str, claim_ttl_s: float, kind: str,
                              payload: dict[str, Any], *, job_id: str | None = None) -> str | None:
        """Set `claim_key` to `claim_value` and queue the job, atomically, unless the key is already held; then
        nothing is queued. Returns who holds the claim now: `claim_value` when this call took it, the earlier
        holder's value otherwise, None when nothing happened because `job_id` is already waiting. One round
        trip, for "start this unless one is already running" on the slash-command ack path."""
        result = await self._enqueue(kind, payload, job_id, 0.0, None,
                                     claim=(claim_key, claim_value, int(claim_ttl_s * 1000)))
        if isinstance(result, list):
            return as_text(result[0])
        return None if result is None else claim_value

    async def _enqueue(self, kind: str, payload: dict[str, Any], job_id: str | None, delay_s: float,
                       run_at: float | None, *, claim: tuple[str, str, int] | None) -> Any:
        if not kind:
            raise ValueError("a job needs a kind")
        guarded = job_id is not None
        job_id = job_id if guarded else _fresh_id()
        token = _fresh_id() if guarded else job_id
        run_at_ms = "" if run_at is None else str(int(run_at * 1000))
        keys = [self.stream_for(kind), self.delayed_key, self.delayed_jobs_key, self.id_key(job_id)]
        args: list[Any] = [job_id, token, kind, json.dumps(payload), repr(time.time()), run_at_ms,
                           max(int(delay_s * 1000), 0), "1" if guarded else "0", int(self.idempotency_ttl_s * 1000)]
        if claim is not None:
            keys.append(claim[0])
            args.extend(claim[1:])
        result = await self._batcher.call(self._scripts["enqueue"], keys, args)
        if isinstance(result, list):
            log.debug("%s is held by %s: job %s not enqueued", claim and claim[0], result[0], job_id)
        elif result is None:
            log.debug("job %s already waiting: not enqueued again", job_id, extra={"job_id": job_id, "kind": kind})
        else:
            log.debug("enqueued %s job %s", kind, job_id, extra={"job_id": job_id, "kind": kind})
            if delay_s > 0 or run_at is not None:  # a timer (an escalation) must survive a failover
                await durable(self.redis, f"{self.stream_key}:durable", f"{kind} timer {job_id}")
            return job_id
        return result

    async def cancel(self, job_id: str) -> bool:
        """Remove a delayed job (or a job waiting for its retry) that is not yet due. False if there is none:
        it already ran, is running, or sits in the stream (so handlers of timers re-check their condition)."""
        removed = await self._scripts["cancel"](
            keys=[self.delayed_key, self.delayed_jobs_key, self.id_key(job_id)], args=[job_id]
        )
        if removed:
            log.info("cancelled delayed job %s", job_id, extra={"job_id": job_id})
        return bool(removed)

    async def stats(self) -> QueueStats:
        now = await self._snapshot()
        oldest_age = max(now.now_ms - int(now.oldest.split("-")[0]), 0) / 1000 if now.oldest else 0.0
        # In Redis 6.2 a pending entry deleted from the stream still counts as pending, hence the floor at 0.
        return QueueStats(depth=max(now.length - now.pending, 0), pending=now.pending, oldest_pending_age_s=oldest_age,
                          delayed=now.delayed, dead_letters=now.dead,
                          urgent_depth=max(now.urgent_length - now.urgent_pending, 0))

    async def dead_letters(self, count: int = 100) -> list[dict[str, Any]]:
        """The newest dead letters first: id (of the dead-letter entry), job_id, kind, payload, attempts, error,
        enqueued_at, failed_at."""
        entries = await self.redis.xrevrange(self.dead_key, count=count)
        return [_dead_letter(entry_id, fields) for entry_id, fields in entries]

    async def replay_dead_letter(self, dead_letter_id: str) -> str | None:
        """Put a dead letter back in the queue as a fresh job (attempt 1); returns its job id, None if gone."""
        job_id = await self._scripts["replay"](keys=[self.dead_key, *self.streams],
                                               args=[dead_letter_id, uuid.uuid4().hex, *self._first])
        return None if job_id is None else as_text(job_id)

    # -- used by workers ----------------------------------------------------------------------------------------

    async def ensure_group(self) -> None:
        for stream in self.streams:
            try:
                # From id 0, so jobs enqueued before the first worker ever started are delivered too.
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read(self, consumer: str, count: int, block_ms: int | None, *,
                   stream: str = "") -> list[tuple[str, dict[str, str]]]:
        """Up to `count` new entries of `stream` (the other lane's by default), waiting up to `block_ms` for one
        when there is none (None: not at all)."""
        reply = await self.redis.xreadgroup(self.group, consumer, {stream or self.stream_key: ">"}, count=count,
                                            block=block_ms)
        return [
            (as_text(entry_id), {as_text(k): as_text(v) for k, v in fields.items()})
            for entry_id, fields in _entries_of(reply)
            if fields is not None
        ]

    async def started(self, job: Job) -> None:
        if job.token != job.id:  # only idempotent jobs hold their id
            await self._scripts["started"](keys=[self.id_key(job.id)], args=[job.token])

    async def ack(self, job: Job) -> bool:
        """Acknowledge and delete a finished job's entry. False if it had been reclaimed from this worker."""
        return bool(await self._scripts["ack"](keys=[job.stream or self.stream_key], args=[self.group, job.entry_id]))

    async def fail(self, entry_id: str, error: str, *, job_id: str, delay_s: float, permanent: bool = False,
                   stream: str = "") -> str:
        """Schedule the retry of a failed delivery of job `job_id` (its entry in `stream`, the other lane's by
        default), or dead-letter it. Returns 'retry', 'dead', 'lost' or 'gone'."""
        outcome = await self._scripts["fail"](
            keys=[stream or self.stream_key, self.delayed_key, self.delayed_jobs_key, self.dead_key,
                  self.id_key(job_id)],
            args=[self.group, entry_id, error, max(int(delay_s * 1000), 0), 0 if permanent else self.max_deliveries,
                  self.maxlen_hint, repr(time.time()), int(self.idempotency_ttl_s * 1000)],
        )
        return as_text(outcome)

    async def release(self, entry_ids: list[str], reason: str, *, counted: bool = True,
                      stream: str = "") -> list[tuple[str, str, str]]:
        """Hand unfinished entries of `stream` (the other lane's by default) back: to it with attempt + 1, or to
        the dead letters when out of deliveries; with `counted=False` (a job that was only waiting when its worker
        stopped) with the same attempt, never dead. Safe to race with other workers: each entry is released once."""
        if not entry_ids:
            return []
        stream = stream or self.stream_key
        id_keys = [self.id_key(job_id) for job_id in await self._job_ids(stream, entry_ids)]
        released = await self._scripts["release"](
            keys=[stream, self.dead_key, *id_keys],
            args=[self.group, self.max_deliveries, reason, self.maxlen_hint, repr(time.time()),
                  int(self.idempotency_ttl_s * 1000), int(counted), *entry_ids],
        )
        return [(as_text(job_id), as_text(kind), as_text(outcome)) for job_id, kind, outcome in released]

    async def _job_ids(self, stream: str, entry_ids: list[str]) -> list[str]:
        """The job id in each stream entry ('' for an entry already gone), so that the release script can name the
        id keys it may write in KEYS. Entries never change, so reading them first is safe."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in entry_ids:
                pipe.xrange(stream, entry_id, entry_id)
            found = await pipe.execute()
        return [as_text(_field(entries[0][1], "j")) if entries else "" for entries in found]

    async def move_due(self, limit: int = 100) -> int:
        return int(await self._scripts["move_due"](
            keys=[self.delayed_key, self.delayed_jobs_key, *self.streams], args=[limit, *self._first]
        ))

    async def wait_quiet(self, *, quiet_s: float, timeout_s: float, poll_s: float,
                         due_within_s: float | None = None) -> bool:
        """Wait until nothing is queued or running (nor, with `due_within_s`, delayed and due that soon) for
        `quiet_s` in a row: True then, False after `timeout_s`. Delayed jobs further away (an escalation timer
        hours off) never count. For a terminal session's piped input and for tests."""
        deadline, quiet_since = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            stats = await self.stats()
            busy = bool(stats.depth or stats.pending)
            if due_within_s is not None:
                busy = busy or bool(await self.redis.zcount(self.delayed_key, "-inf",
                                                            (time.time() + due_within_s) * 1000))
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_s:
                return True
            await asyncio.sleep(poll_s)
        return False

    async def is_idle(self) -> bool:
        """Nothing waiting in the stream, nothing pending, nothing delayed and already due."""
        now = await self._snapshot()
        return now.length == 0 and now.pending == 0 and now.due == 0

    async def forget_consumer(self, consumer: str) -> bool:
        return bool(await self._scripts["forget_consumer"](
            keys=[*self.streams, self.alive_key(consumer)], args=[self.group, consumer]
        ))

    async def _snapshot(self) -> _Snapshot:
        length, pending, oldest, *counts = await self._scripts["snapshot"](
            keys=[*self.streams, self.delayed_key, self.dead_key], args=[self.group]
        )
        return _Snapshot(int(length), int(pending), as_text(oldest), *(int(n) for n in counts))


class _Snapshot(NamedTuple):
    """What the snapshot script returns, in its order: both lanes' figures, then the urgent lane's own."""

    length: int
    pending: int
    oldest: str  # the oldest pending entry's id, '' when none
    delayed: int
    due: int  # of `delayed`, due now
    dead: int
    now_ms: int
    urgent_length: int
    urgent_pending: int


def _fresh_id() -> str:
    """A random id as uuid4().hex is (128 bits, 32 hex digits), at a fifth of its cost: every enqueue with a job id
    draws one for its token, the /diagnose ack's among them."""
    return os.urandom(16).hex()


def _entries_of(reply: Any) -> list[tuple[Any, dict[Any, Any]]]:
    """The entries of a one-stream XREADGROUP reply, in any of redis-py's shapes: RESP2 `[[stream, entries]]`,
    unified `{stream: entries}`, or RESP3 without legacy responses `{stream: [entries]}`."""
    if not reply:
        return []
    entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
    if entries and isinstance(entries[0], list) and entries[0] and isinstance(entries[0][0], (list, tuple)):
        entries = entries[0]
    return list(entries)


def _field(fields: dict[Any, Any], name: str) -> Any:
    """A field of a stream entry read by a bytes or a decoding client."""
    return fields.get(name, fields.get(name.encode(), ""))


def job_from_entry(entry_id: str, fields: dict[str, str]) -> Job:
    """Raises KeyError or ValueError on an entry this code did not write."""
    return Job(id=fields["j"], kind=fields["k"], payload=json.loads(fields["p"]), attempt=int(fields["a"]),
               enqueued_at=float(fields["e"]), entry_id=entry_id, token=fields["t"])


def _dead_letter(entry_id: Any, fields: dict[Any, Any]) -> dict[str, Any]:
    f = {as_text(k): as_text(v) for k, v in fields.items()}
    return {"id": as_text(entry_id), "job_id": f.get("job_id", ""), "kind": f.get("kind", ""),
            "payload": json.loads(f.get("payload") or "{}"), "attempts": int(f.get("attempts", 0)),
            "error": f.get("error", ""), "enqueued_at": float(f.get("enqueued_at", 0)),
            "failed_at": float(f.get("failed_at", 0))}
