"""The consumer side of the queue: runs handlers, and keeps every job either finished, retrying, or reclaimable.

A worker runs five loops next to its jobs; each is safe to run in every worker at once:

    fetchers   one per lane (bot/queue/stream.py): XREADGROUP, up to `concurrency` jobs at a time, and
               `reserved` more slots that only urgent jobs take: a page never waits for a slot behind a
               backlog of checks, and urgent jobs take any free slot too (a burst of due timers); while
               urgent jobs wait for a slot beside others running, the other lane starts none (the CPU goes
               to them first)
    mover      moves due delayed jobs (timers, retries) into their lane
    reclaimer  releases jobs of dead workers (no heartbeat) at once, and jobs idle past the visibility timeout
    heartbeat  refreshes this worker's heartbeat and the lease (idle time) of its running jobs

`last_progress` holds the monotonic time of each loop's last successful round, for a dead-man /healthz check.
A loop that meets a Redis error logs it and backs off; it never exits while the worker runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.logs import Throttled
from bot.queue import slots
from bot.queue.connection import REFUSED_WRITES, NoReplicasError
from bot.queue.stream import (
    Job,
    Permanent,
    Queue,
    Retry,
    error_text,
    job_from_entry,
)
from bot.queue.replies import as_text
from bot.retry import RetryPolicy, retry_async

log = logging.getLogger("bot.queue")

Handler = Callable[[Job], Awaitable[None]]
Entry = tuple[str, str]  # (stream, entry id): ids are per stream, and two lanes may hand out the same one

# Redis unreachable: loops back off up to 5 s between tries and never give up while the worker runs.
LOOP_BACKOFF = RetryPolicy(base_s=0.1, max_s=5.0)
# Recording a job's outcome survives a short Redis blip; after that the job stays pending and is reclaimed.
SETTLE_RETRY = RetryPolicy(attempts=6, base_s=0.1, max_s=2.0)
# READONLY: we reached a demoted primary; NOREPLICAS: a primary that lost its replicas (isolated, about to be
# demoted). The write was refused, and the client's next connection (through Sentinel, or a DNS endpoint that
# moved) reaches the current one: a blip like a lost connection, never a failed job.
REDIS_BLIPS = (RedisConnectionError, RedisTimeoutError, *REFUSED_WRITES)
# A handler that met an unreachable or demoted primary is run again in the same delivery, this many times in all
# (within job_timeout_s), before its job is left pending for the reclaimer: a failover must not use up deliveries.
HANDLER_REDIS_TRIES = 5
DEFAULT_SOCKET_TIMEOUT_S = 5.0  # redis-py's default when the client sets none
RECLAIM_BATCH = 100
# Jobs parked on Slack's pace (bot/queue/slots.py), at most this many times `concurrency` a worker in each lane.
# Parked jobs must not stop the fetcher: in a storm of declarations each waits its turn for conversations.create
# (20 a minute) while the pages and timers queued behind them must run now. 50 x 16 is 40 minutes of that budget
# (past it the lane stops fetching; the urgent lane has a bound of its own); each parked job costs a coroutine and
# one id in the lease renewal.
MAX_PARKED_FACTOR = 50
# A wait for Slack's turn does not count toward job_timeout_s (it bounds the job's own work), but a job's waits
# push its deadline back by this much at most, in all: a turn an hour away is a budget gone wrong, not a busy
# minute, and such a job must still end in a failed delivery (and in the end the dead letters), not wait forever.
PARK_LIMIT_S = 3600.0


class Worker:
    def __init__(
        self,
        queue: Queue,
        handlers: dict[str, Handler],
        *,
        concurrency: int = 16,
        consumer: str | None = None,
        block_ms: int = 1000,
        reclaim_interval_s: float = 2.0,
        mover_interval_s: float = 0.2,
        job_timeout_s: float = 300.0,
        stop_grace_s: float = 10.0,
        dead_worker_after_s: float = 5.0,
        max_parked: int | None = None,
        reserved: int | None = None,
    ) -> None:
        """`dead_worker_after_s`: how long this worker's heartbeat lives; others release its jobs that long after
        it dies (the visibility timeout only catches a live worker that stopped making progress).
        `job_timeout_s` bounds one handler call, its waits for Slack's pace (`parked()`) left out: a hung handler
        is a failed attempt, not a lease held forever. `max_parked`: jobs that may wait parked at once
        (MAX_PARKED_FACTOR x `concurrency` by default). `reserved`: slots beyond `concurrency` that only urgent
        jobs take (an eighth of `concurrency` by default, at least one)."""
        _check_block_below_socket_timeout(queue, block_ms)
        self.queue = queue
        self.handlers = dict(handlers)
        self.concurrency = concurrency
        self.max_parked = concurrency * MAX_PARKED_FACTOR if max_parked is None else max_parked
        self.reserved = slots.reserved_for_urgent(concurrency) if reserved is None else reserved
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.block_ms = block_ms
        self.reclaim_interval_s = reclaim_interval_s
        self.mover_interval_s = mover_interval_s
        self.job_timeout_s = job_timeout_s
        self.stop_grace_s = stop_grace_s
        self.dead_worker_after_s = dead_worker_after_s
        self.heartbeat_interval_s = min(queue.visibility_timeout_s, dead_worker_after_s) / 3
        self.stats: dict[str, Any] = {
            "jobs_ok": 0, "jobs_failed": 0, "jobs_retried": 0, "jobs_dead_lettered": 0,
            "jobs_reclaimed": 0, "jobs_released": 0, "leases_lost": 0,
            "by_kind": {},  # kind -> {"ok", "failed", "seconds_sum", "seconds_max"}
        }
        self.last_progress: dict[str, float] = {}
        self._inflight: dict[Entry, tuple[Job, asyncio.Task[None]]] = {}
        self._parked: set[Entry] = set()  # in-flight jobs waiting on Slack's pace: their slots are free meanwhile
        self._resume_at: dict[Entry, float] = {}  # parked jobs: when their longest known wait ends (loop time)
        self._settling: set[Entry] = set()  # entries whose outcome is being recorded (acked, retried, dead-lettered)
        self._stopped_waiting: set[Entry] = set()  # parked when the worker stopped: handed back, no delivery counted
        self._booked = 0  # slots a fetcher's read may fill when it returns: the other fetcher leaves them
        # Whether the urgent lane's last read filled every free slot (so more may wait there); None until its first.
        self._urgent_behind: bool | None = None
        self._stopping = asyncio.Event()
        self._capacity = asyncio.Event()
        self._joined = asyncio.Event()
        # Every running job meets NOREPLICAS at once in such an outage: one line says so, not one per job and try.
        self._no_replicas_log = Throttled(log, per_minute=1)

    def stop(self) -> None:
        """Stop taking work. `run()` then waits up to `stop_grace_s` for running jobs (not for those whose known
        wait for Slack's pace outlasts it), releases the rest, and returns."""
        self._stopping.set()

    async def run(self) -> None:
        """Process jobs until `stop()`. Cancelling it instead skips the grace period but still releases jobs."""
        grace, self._urgent_behind = 0.0, None
        if not await self._join():
            return
        log.info("worker %s consuming %s (concurrency %d, and %d more for urgent jobs)", self.consumer,
                 " and ".join(self.queue.streams), self.concurrency, self.reserved, extra={"consumer": self.consumer})
        halt_loops, halt_heartbeat = asyncio.Event(), asyncio.Event()
        heartbeat = self._loop("heartbeat", self._heartbeat, self.heartbeat_interval_s, halt_heartbeat)
        loops = [
            self._loop("fetcher", functools.partial(self._fetch, self.queue.stream_key), 0.0, halt_loops),
            self._loop("urgent-fetcher", functools.partial(self._fetch, self.queue.urgent_key), 0.0, halt_loops),
            self._loop("mover", self._move, self.mover_interval_s, halt_loops),
            self._loop("reclaimer", self._reclaim, self.reclaim_interval_s, halt_loops),
        ]
        try:
            await self._stopping.wait()
            grace = self.stop_grace_s
        finally:
            self._stopping.set()  # also when run() itself was cancelled
            halt_loops.set()
            self._capacity.set()  # wakes a fetcher waiting for a free slot
            await self._end(loops, "loops")
            await self._drain(grace)
            halt_heartbeat.set()  # only now: draining jobs keep their lease
            await self._end([heartbeat], "heartbeat")
            await self._leave()

    async def run_until_idle(self, timeout_s: float = 10) -> None:
        """Burst mode for tests: run until nothing is ready, due, pending or running; TimeoutError after
        `timeout_s`. Delayed jobs that are not yet due do not keep it running. Can be called again."""
        self._stopping.clear()  # only here: run() must not forget a stop() that came before it started
        self._joined.clear()
        runner = asyncio.create_task(self.run())
        try:
            async with asyncio.timeout(timeout_s):
                while runner.done() is False:
                    if self._joined.is_set() and not self._inflight and await self.queue.is_idle():
                        break
                    await asyncio.sleep(0.02)
        finally:
            self.stop()
            await runner

    # -- loops --------------------------------------------------------------------------------------------------
    # Loops stop when their halt event is set, not by cancellation: redis-py's asyncio client can swallow a
    # cancellation that lands mid-command (redis/redis-py#2028, #2551) and leave the task running forever.

    def _loop(self, name: str, step: Callable[[], Awaitable[bool]], interval_s: float,
              halt: asyncio.Event) -> asyncio.Task[None]:
        return asyncio.create_task(self._forever(name, step, interval_s, halt), name=f"queue-{name}")

    async def _forever(self, name: str, step: Callable[[], Awaitable[bool]], interval_s: float,
                       halt: asyncio.Event) -> None:
        """Run `step` until `halt`; `step` returns True when it has more to do right away."""
        failures = 0
        while not halt.is_set():
            _raise_if_cancelled()
            try:
                more = await step()
            except (RedisError, OSError) as exc:
                _raise_if_cancelled()
                failures += 1
                delay = LOOP_BACKOFF.delay(failures)
                # Once per outage, not once per round: a failover is seconds of the same error in every loop.
                log.log(logging.WARNING if failures == 1 else logging.DEBUG,
                        "queue %s: %s; retrying until Redis answers", name, error_text(exc))
                await _pause(halt, delay)
                continue
            except Exception:  # a bug must not silently stop the loop: /healthz sees last_progress go stale
                failures += 1
                log.exception("queue %s failed", name)
                await _pause(halt, LOOP_BACKOFF.delay(failures))
                continue
            if failures:
                log.info("queue %s: Redis answers again after %d failed round(s)", name, failures)
            failures = 0
            self.last_progress[name] = time.monotonic()
            if not more:
                await _pause(halt, interval_s)

    async def _end(self, tasks: list[asyncio.Task[Any]], what: str) -> None:
        """Wait for halted loops to finish their current round (a blocked read returns within block_ms);
        cancel them only if that takes far longer."""
        _done, late = await asyncio.wait(tasks, timeout=self.block_ms / 1000 + DEFAULT_SOCKET_TIMEOUT_S)
        if late:
            log.warning("worker %s: %s did not stop in time; cancelling them", self.consumer, what)
            await _cancel_all(list(late))

    async def _join(self) -> bool:
        """Create the group and the first heartbeat before reading anything, retrying until Redis answers.
        (Without a heartbeat, other workers would take this consumer for dead and release its jobs.)"""
        failures = 0
        while not self._stopping.is_set():
            try:
                await self.queue.ensure_group()
                await self._beat()
                self._joined.set()
                return True
            except (RedisError, OSError) as exc:
                failures += 1
                delay = LOOP_BACKOFF.delay(failures)
                log.warning("worker cannot reach Redis (%s); retrying in %.1f s", error_text(exc), delay)
                await _pause(self._stopping, delay)
        return False

    async def _fetch(self, stream: str) -> bool:
        free = await self._free_slots(stream)
        if self._stopping.is_set():
            return False
        try:
            entries = await self._read(stream, free)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.queue.ensure_group()  # the stream was deleted (FLUSHALL, Redis lost its data)
            return True
        for entry_id, fields in entries:
            self._start(stream, entry_id, fields)
        return True

    async def _read(self, stream: str, free: int) -> list[tuple[str, dict[str, str]]]:
        """What is there, into the free slots, booked while the read is out; else wait for one entry, unbooked:
        a fetcher waiting on an empty lane must not hold slots the other lane's could fill. (So when both lanes
        fill at once, a worker may run one job of each above its slots, until one ends; and the other lane's
        wait may hand it one job after urgent ones came to wait.)"""
        urgent = stream == self.queue.urgent_key
        self._booked += free
        try:
            entries = await self.queue.read(self.consumer, free, None, stream=stream)
        except BaseException:
            if urgent:
                self._urgent_behind = False  # a lane it cannot read holds none back
            raise
        finally:
            self._booked -= free
            self._capacity.set()
        if urgent:  # set before this task next yields: the fetcher just woken reads it then
            self._urgent_behind = len(entries) >= free
        return entries or await self.queue.read(self.consumer, 1, self.block_ms, stream=stream)

    async def _move(self) -> bool:
        return await self.queue.move_due(limit=RECLAIM_BATCH) == RECLAIM_BATCH

    async def _reclaim(self) -> bool:
        await self._reclaim_idle()
        await self._reclaim_from_dead_workers()
        return False

    async def _heartbeat(self) -> bool:
        await self._beat()
        await self._extend_leases()
        return False

    # -- jobs ---------------------------------------------------------------------------------------------------

    async def _free_slots(self, stream: str) -> int:
        while self._slots_free(stream) <= 0 and not self._stopping.is_set():
            while self._slots_free(stream) <= 0 and not self._stopping.is_set():
                self._capacity.clear()
                await self._capacity.wait()
            # Jobs tend to finish together: one tick lets the others free their slots too, so one read fetches
            # a batch instead of one read per finished job. (A parked job may resume in that tick: look again.)
            await asyncio.sleep(0)
        return max(self._slots_free(stream), 1)  # stopping: the caller checks that before it reads

    def _slots_free(self, stream: str) -> int:
        working, held = self._load()
        urgent = self.queue.urgent_key
        free = self.concurrency + self.reserved - sum(working.values()) - self._booked
        # Parked jobs free their slot, but each lane's in-flight jobs stay bounded: each one's lease is kept alive.
        # Bounded per lane: declarations parked by the hundred on Slack's pace must not stop pages being fetched.
        urgent_free = min(free, self.concurrency + self.reserved + self.max_parked - held[urgent])
        if stream == urgent:
            return urgent_free
        # Slots are not all a burst needs: while urgent jobs wait for one, the CPU goes to the urgent lane first, as
        # the paperwork they queue would have waited behind them in one lane (1,000 due timers): the other lane
        # starts nothing while urgent jobs run or the urgent fetcher can take more. Only urgent jobs all parked
        # at their lane's bound (no CPU used, none to be taken) hold nothing back.
        if self._urgent_behind is None or self._urgent_behind and (working[urgent] or urgent_free > 0):
            return 0
        return min(free, self.concurrency - working[stream], self.concurrency + self.max_parked - held[stream])

    def _load(self) -> tuple[Counter[str], Counter[str]]:
        """Per lane, the jobs working and the jobs in flight (parked ones are in flight, not working)."""
        working: Counter[str] = Counter()
        held: Counter[str] = Counter()
        for key in self._inflight:
            held[key[0]] += 1
            working[key[0]] += key not in self._parked
        return working, held

    def _parking(self, key: Entry, clock: _JobClock) -> Callable[[float | None], AbstractAsyncContextManager[None]]:
        @contextlib.asynccontextmanager
        async def park(wait_s: float | None) -> AsyncIterator[None]:
            if key not in self._inflight:  # a task the job started outlived it: no slot, no timeout to move
                yield
                return
            resume_at = asyncio.get_running_loop().time() + (wait_s or 0.0)
            if resume_at > self._resume_at.get(key, 0.0):  # the latest the job is known to resume: a stopping
                self._resume_at[key] = resume_at  # worker hands it back at once if that is past its grace
                self._capacity.set()
            if clock.stop():  # the job's first part to wait (several may: DMs gathered, each on its pace)
                self._parked.add(key)
                self._capacity.set()
            try:
                yield
            finally:
                if clock.start():
                    self._parked.discard(key)
                    self._resume_at.pop(key, None)

        return park

    def _start(self, stream: str, entry_id: str, fields: dict[str, str]) -> None:
        try:
            job = job_from_entry(entry_id, fields)
        except (KeyError, ValueError) as exc:
            job = Job(id=fields.get("j", entry_id), kind=fields.get("k", ""), payload={}, attempt=1,
                      enqueued_at=0.0, entry_id=entry_id, stream=stream)
            task = asyncio.create_task(self._finish(job, self._reject(job, f"malformed entry: {exc}")))
        else:
            job.stream = stream
            task = asyncio.create_task(self._finish(job, self._handle(job)))
        self._inflight[(stream, entry_id)] = (job, task)

    async def _finish(self, job: Job, outcome_of: Awaitable[tuple[str, float]]) -> None:
        try:
            outcome, seconds = await outcome_of
        except (RedisError, OSError) as exc:
            outcome, seconds = "unsettled", 0.0
            log.error("job %s: could not record its outcome (%s); it will be reclaimed and may run again",
                      job.id, error_text(exc), extra=_extra(job))
        finally:
            key = _key(job)
            self._inflight.pop(key, None)
            self._parked.discard(key)
            self._resume_at.pop(key, None)
            self._settling.discard(key)
            self._capacity.set()
        self._count(job.kind, outcome, seconds)

    async def _reject(self, job: Job, error: str) -> tuple[str, float]:
        return await self._fail(job, error, permanent=True), 0.0

    async def _handle(self, job: Job) -> tuple[str, float]:
        """Run the handler and record its outcome; returns the outcome and the handler's duration."""
        handler = self.handlers.get(job.kind)
        if handler is None:
            return await self._reject(job, f"unknown job kind {job.kind!r}")
        await _settle(self.queue.started, job)
        started = time.monotonic()
        deadline = asyncio.timeout(self.job_timeout_s)
        slots.bind(self._parking(_key(job), _JobClock(deadline)))
        try:
            async with deadline:
                await _run_through_failover(handler, job, self._no_replicas_log)
        except REDIS_BLIPS as exc:
            # Not the job's fault: no delivery is used up and it is never dead-lettered. It stays pending here;
            # the reclaimer hands it on once the lease lapses (Redis is back by then, or this happens again).
            log.warning("job %s (%s): Redis unavailable (%s); left for the reclaimer", job.id, job.kind,
                        error_text(exc), extra=_extra(job))
            return "unsettled", time.monotonic() - started
        except Permanent as exc:
            return await self._fail(job, error_text(exc), permanent=True), time.monotonic() - started
        except Retry as exc:
            return await self._fail(job, error_text(exc), delay_s=exc.delay_s), time.monotonic() - started
        except Exception as exc:
            seconds = time.monotonic() - started
            timed_out = deadline.expired()
            error = error_text(TimeoutError(f"job exceeded its {self.job_timeout_s:g} s timeout") if timed_out else exc)
            log.warning("job %s (%s) attempt %d failed: %s", job.id, job.kind, job.attempt, error,
                        exc_info=not timed_out, extra=_extra(job))
            return await self._fail(job, error), seconds
        seconds = time.monotonic() - started
        self._settling.add(_key(job))
        if not await _settle(self.queue.ack, job):
            self.stats["leases_lost"] += 1
            log.warning("job %s finished after it had been reclaimed: it may run twice", job.id, extra=_extra(job))
        return "ok", seconds

    async def _fail(self, job: Job, error: str, *, delay_s: float | None = None, permanent: bool = False) -> str:
        delay = self.queue.retry.delay(job.attempt) if delay_s is None else delay_s
        self._settling.add(_key(job))
        outcome = await _settle(self.queue.fail, job.entry_id, error, job_id=job.id, delay_s=delay,
                                permanent=permanent, stream=job.stream)
        if outcome == "retry":
            log.info("job %s (%s) will retry in %.2f s", job.id, job.kind, delay, extra=_extra(job))
        elif outcome == "dead":
            log.error("job %s (%s) dead-lettered after %d deliveries: %s", job.id, job.kind, job.attempt, error,
                      extra=_extra(job))
        return outcome if outcome in ("retry", "dead") else "lost"

    def _count(self, kind: str, outcome: str, seconds: float) -> None:
        per_kind = self.stats["by_kind"].setdefault(kind, {"ok": 0, "failed": 0, "seconds_sum": 0.0,
                                                           "seconds_max": 0.0})
        ok = outcome == "ok"
        self.stats["jobs_ok" if ok else "jobs_failed"] += 1
        self.stats["jobs_retried"] += outcome == "retry"
        self.stats["jobs_dead_lettered"] += outcome == "dead"
        per_kind["ok" if ok else "failed"] += 1
        per_kind["seconds_sum"] += seconds
        per_kind["seconds_max"] = max(per_kind["seconds_max"], seconds)

    # -- leases, heartbeats, reclaiming -------------------------------------------------------------------------

    async def _beat(self) -> None:
        await self.queue.redis.set(self.queue.alive_key(self.consumer), "1",
                                   px=int(self.dead_worker_after_s * 1000))

    async def _extend_leases(self) -> None:
        """Re-claim our own running entries (JUSTID: no delivery counted) so their idle time restarts."""
        running = [key for key in self._inflight if key not in self._settling]
        for stream in self.queue.streams:
            ids = [entry_id for lane, entry_id in running if lane == stream]
            if ids:
                kept = {as_text(entry_id) for entry_id in await self.queue.redis.xclaim(
                    stream, self.queue.group, self.consumer, 0, ids, justid=True)}
                self._note_lost_leases([(stream, entry_id) for entry_id in ids if entry_id not in kept])

    def _note_lost_leases(self, missing: list[Entry]) -> None:
        for key in missing:
            # An entry acknowledged meanwhile is not a lost lease: only one still running here is.
            if key in self._inflight and key not in self._settling:
                job = self._inflight[key][0]
                self.stats["leases_lost"] += 1
                log.warning("job %s was reclaimed while still running here: it may run twice", job.id,
                            extra=_extra(job))

    async def _reclaim_idle(self) -> None:
        """Entries idle past the visibility timeout: their worker is alive but made no progress report."""
        for stream in self.queue.streams:
            with _lane_without_group():
                await self._reclaim_idle_in(stream)

    async def _reclaim_idle_in(self, stream: str) -> None:
        cursor = "0-0"
        for _ in range(10):  # bounded work per round; the next round carries on
            reply = await self.queue.redis.xautoclaim(
                stream, self.queue.group, self.consumer,
                int(self.queue.visibility_timeout_s * 1000), start_id=cursor, count=RECLAIM_BATCH)
            cursor, claimed = as_text(reply[0]), [as_text(entry_id) for entry_id, _ in reply[1] if entry_id is not None]
            reason = f"lease expired: no progress report for {self.queue.visibility_timeout_s:g} s"
            await self._release(claimed, reason, "jobs_reclaimed", stream=stream)
            if cursor == "0-0":
                return

    async def _reclaim_from_dead_workers(self) -> None:
        for stream in self.queue.streams:
            with _lane_without_group():
                await self._reclaim_from_dead_workers_in(stream)

    async def _reclaim_from_dead_workers_in(self, stream: str) -> None:
        consumers = [{as_text(k): v for k, v in c.items()} for c in
                     await self.queue.redis.xinfo_consumers(stream, self.queue.group)]
        others = [c for c in consumers if as_text(c["name"]) != self.consumer]
        if not others:
            return
        async with self.queue.redis.pipeline(transaction=False) as pipe:
            for consumer in others:
                pipe.exists(self.queue.alive_key(as_text(consumer["name"])))
            alive = await pipe.execute()
        for consumer, is_alive in zip(others, alive):
            if not is_alive:
                await self._release_consumer(stream, as_text(consumer["name"]), int(consumer["pending"]))

    async def _release_consumer(self, stream: str, name: str, pending: int) -> None:
        if pending:
            entries = await self.queue.redis.xpending_range(stream, self.queue.group, "-", "+",
                                                            RECLAIM_BATCH, consumername=name)
            reason = f"worker {name} died (no heartbeat)"
            await self._release([as_text(e["message_id"]) for e in entries], reason, "jobs_reclaimed", stream=stream)
        if await self.queue.forget_consumer(name):  # a no-op while it still holds entries in either lane
            log.info("forgot departed consumer %s", name, extra={"consumer": name})

    async def _release(self, entry_ids: list[str], reason: str, counter: str, *, counted: bool = True,
                       stream: str) -> None:
        for job_id, kind, outcome in await self.queue.release(entry_ids, reason, counted=counted, stream=stream):
            self.stats[counter] += 1
            self.stats["jobs_dead_lettered"] += outcome == "dead"
            # Jobs handed back uncounted were only waiting (hundreds in a storm): the count below says it once.
            log.log(logging.WARNING if counted else logging.DEBUG, "job %s (%s) %s: %s", job_id, kind,
                    "dead-lettered" if outcome == "dead" else "requeued", reason, extra={"job_id": job_id, "kind": kind})

    # -- shutdown -----------------------------------------------------------------------------------------------

    async def _drain(self, grace_s: float) -> None:
        self._stopped_waiting = set()  # run() may be called again (run_until_idle): only this stop's count
        tasks = [task for _job, task in self._inflight.values()]
        if not tasks:
            return
        log.info("worker %s stopping: waiting up to %g s for %d running job(s)", self.consumer, grace_s, len(tasks))
        unfinished = await self._until_only_long_waits(set(tasks), grace_s)
        if unfinished:
            # A job waiting its turn at Slack when we stop (a storm of declarations, a deploy) did nothing wrong:
            # however often that happens, it must not run out of deliveries and leave an incident half set up.
            self._stopped_waiting = {key for key, (_job, task) in self._inflight.items()
                                     if task in unfinished and key in self._parked}
            log.warning("worker %s: cutting %d job(s) short (%d of them waiting for Slack's pace); they go back "
                        "to the queue", self.consumer, len(unfinished), len(self._stopped_waiting))
            await _cancel_all(list(unfinished))

    async def _until_only_long_waits(self, tasks: set[asyncio.Task[None]], grace_s: float) -> set[asyncio.Task[None]]:
        """The tasks still unfinished once every one left waits parked past the grace, or after `grace_s`. A job
        whose turn at Slack is further off than the grace (in a storm, minutes) makes no use of it: a stop that
        waited held each worker of a rolling deploy for the full grace, and cut the job anyway. Handed back
        uncounted, it runs on elsewhere at once, its earlier posts recorded (post_once), none sent twice. A job
        whose wait ends within the grace, or is of unknown length, is waited for like a working one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while True:
            self._capacity.clear()  # set when a job parks or ends: clear before looking, so neither is missed
            if not tasks or self._all_waiting_past(tasks, deadline) or (left := deadline - loop.time()) <= 0:
                return tasks
            woken = asyncio.ensure_future(self._capacity.wait())
            try:
                _done, tasks = await asyncio.wait({*tasks, woken}, timeout=left,
                                                  return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()
            tasks.discard(woken)

    def _all_waiting_past(self, tasks: set[asyncio.Task[None]], deadline: float) -> bool:
        return all(key in self._parked and self._resume_at.get(key, 0.0) > deadline
                   for key, (_job, task) in self._inflight.items() if task in tasks)

    async def _leave(self) -> None:
        """Hand back whatever this consumer still holds (jobs cut short, entries a cancelled read had taken),
        drop the heartbeat, and leave the group. If Redis is unreachable now, other workers release the jobs
        once the heartbeat expires."""
        try:
            for stream in self.queue.streams:
                with _lane_without_group():
                    await self._hand_back(stream)
            await self.queue.redis.delete(self.queue.alive_key(self.consumer))
            await self.queue.forget_consumer(self.consumer)
        except (RedisError, OSError) as exc:
            log.warning("worker %s could not release its jobs on the way out (%s): others will after %g s",
                        self.consumer, error_text(exc), self.dead_worker_after_s)
        log.info("worker %s stopped", self.consumer, extra={"consumer": self.consumer})

    async def _hand_back(self, stream: str) -> None:
        held = await self.queue.redis.xpending_range(stream, self.queue.group, "-", "+", 10_000,
                                                     consumername=self.consumer)
        held_ids = [as_text(e["message_id"]) for e in held]
        await self._release([e for e in held_ids if (stream, e) not in self._stopped_waiting],
                            "worker stopped before the job finished", "jobs_released", stream=stream)
        await self._release([e for e in held_ids if (stream, e) in self._stopped_waiting],
                            "worker stopped while the job waited for Slack's pace (no delivery counted)",
                            "jobs_released", counted=False, stream=stream)


async def _run_through_failover(handler: Handler, job: Job, no_replicas_log: Throttled) -> None:
    """Run the handler; when it meets an unreachable, demoted or isolated primary, run it again after a pause
    (handlers are idempotent: jobs may run more than once anyway)."""
    for attempt in range(1, HANDLER_REDIS_TRIES + 1):
        try:
            return await handler(job)
        except REDIS_BLIPS as exc:
            if attempt == HANDLER_REDIS_TRIES:
                raise
            if isinstance(exc, NoReplicasError):
                no_replicas_log.warning("Redis primary refuses writes: too few replicas follow it "
                                        "(min-replicas-to-write). Reconnecting and running jobs again")
            log.info("job %s: Redis unavailable (%s); running it again", job.id, error_text(exc), extra=_extra(job))
            await asyncio.sleep(LOOP_BACKOFF.delay(attempt))


class _JobClock:
    """A job's timeout, stopped while any part of the job waits parked, and pushed back by PARK_LIMIT_S at most in
    all. (A part that works meanwhile is bounded by that limit alone: the wait and the work are one job.)"""

    def __init__(self, deadline: asyncio.Timeout) -> None:
        self.deadline = deadline
        self.parks = 0
        self._due = self._parked_at = 0.0
        self._latest: float | None = None

    def stop(self) -> bool:
        """A part of the job parks; True when it is the first one waiting."""
        self.parks += 1
        if self.parks > 1 or (due := self.deadline.when()) is None:
            return self.parks == 1
        self._due, self._parked_at = due, asyncio.get_running_loop().time()
        self._latest = due + PARK_LIMIT_S if self._latest is None else self._latest
        _reschedule(self.deadline, self._latest)
        return True

    def start(self) -> bool:
        """A part of the job resumes; True when none waits any more (the clock runs again, the wait left out)."""
        self.parks -= 1
        if self.parks == 0 and self._latest is not None:
            waited = asyncio.get_running_loop().time() - self._parked_at
            _reschedule(self.deadline, min(self._due + waited, self._latest))
        return self.parks == 0


def _reschedule(deadline: asyncio.Timeout, when: float | None) -> None:
    # Only a running job's timeout moves: one that fired, or a job that ended while a task it started waits, stays.
    with contextlib.suppress(RuntimeError):
        if not deadline.expired():
            deadline.reschedule(when)


async def _settle(fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    return await retry_async(lambda: fn(*args, **kwargs), SETTLE_RETRY, retry_on=REDIS_BLIPS)


async def _cancel_all(tasks: list[asyncio.Task[Any]], timeout_s: float = 5.0) -> None:
    """Cancel and wait, bounded: a task that swallows its cancellation must not hang the shutdown."""
    for task in tasks:
        task.cancel()
    if tasks:
        _done, stuck = await asyncio.wait(tasks, timeout=timeout_s)
        if stuck:
            log.error("%d task(s) ignored cancellation: %s", len(stuck), ", ".join(t.get_name() for t in stuck))


async def _pause(halt: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake at once when `halt` is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await halt.wait()


def _raise_if_cancelled() -> None:
    # A cancellation swallowed inside redis-py still shows in cancelling(): honour it at the next chance.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@contextlib.contextmanager
def _lane_without_group() -> Iterator[None]:
    """A lane whose group is gone (its stream deleted, Redis lost its data) has nothing to reclaim or hand back;
    the other lane's work goes on, and that lane's fetcher makes the group again."""
    try:
        yield
    except ResponseError as exc:
        if "NOGROUP" not in str(exc) and "no such key" not in str(exc):
            raise


def _key(job: Job) -> Entry:
    return job.stream, job.entry_id


def _extra(job: Job) -> dict[str, Any]:
    return {"job_id": job.id, "kind": job.kind, "attempt": job.attempt}


def _check_block_below_socket_timeout(queue: Queue, block_ms: int) -> None:
    # A BLOCK as long as the socket timeout makes every idle read end in TimeoutError instead of an empty reply.
    pool = getattr(queue.redis, "connection_pool", queue.redis)  # a cluster client keeps the options itself
    socket_timeout = pool.connection_kwargs.get("socket_timeout", DEFAULT_SOCKET_TIMEOUT_S)
    if socket_timeout is not None and block_ms / 1000 >= socket_timeout - 0.5:
        raise ValueError(
            f"block_ms={block_ms} must stay at least 0.5 s below the Redis client's socket_timeout ({socket_timeout} s)"
        )
