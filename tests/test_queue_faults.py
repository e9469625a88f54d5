"""Faults the queue must survive without losing a job: worker processes killed or stopped mid-job, Redis restarts.

Workers here are real processes (tests/queue_worker_proc.py) and Redis is a real server; nothing is mocked. The
worker-death tests of a few seconds each also run on Valkey (`@ON_VALKEY`, marked `valkey`); the Redis restart tests
drive a redis-server of their own.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from bot.app.redis_server import RedisServer
from bot.queue import Job, Queue, Worker
from tests.test_queue import ON_VALKEY, engine_url, redis  # noqa: F401

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


class WorkerProcs:
    """Starts worker processes on one queue; kills whatever is left at teardown."""

    def __init__(self, redis: aioredis.Redis, url: str, queue: str, log_dir: Path) -> None:
        self.redis, self.url, self.queue, self.log_dir = redis, url, queue, log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    async def start(self, consumer: str, **options: float) -> subprocess.Popen[bytes]:
        """Start a worker process and wait until its heartbeat shows it is consuming."""
        proc = await asyncio.to_thread(self._spawn, consumer, options)
        self.procs.append(proc)
        alive = Queue(self.redis, self.queue).alive_key(consumer)
        await wait_for(lambda: self.redis.exists(alive), 10, f"{consumer} to start")
        return proc

    def _spawn(self, consumer: str, options: dict[str, float]) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "tests.queue_worker_proc", "--url", self.url, "--queue", self.queue,
                "--consumer", consumer]
        for option, value in options.items():
            args += [f"--{option.replace('_', '-')}", str(value)]
        with open(self.log_dir / f"{consumer}.log", "ab") as log:
            return subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

    def logs(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.log_dir.glob("*.log")))

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)


@pytest.fixture
def worker_procs(redis: aioredis.Redis, engine_url: str, unique_name: str, tmp_path: Path) -> Iterator[WorkerProcs]:
    procs = WorkerProcs(redis, engine_url, unique_name, tmp_path)
    try:
        yield procs
    except BaseException:
        print(procs.logs())
        raise
    finally:
        procs.kill_all()


async def wait_for(check: Callable, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


async def log_of(redis: aioredis.Redis, queue: str) -> list[str]:
    return await redis.lrange(f"{queue}:log", 0, -1)


# -- a worker dies --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("found_by", "options", "engine_url"),
    [
        ("its heartbeat stopping", {"visibility": 30, "dead_after": 1}, "redis"),
        ("the visibility timeout", {"visibility": 2, "dead_after": 30}, "redis"),
        pytest.param("its heartbeat stopping", {"visibility": 30, "dead_after": 1}, "valkey", marks=pytest.mark.valkey),
    ],
    indirect=["engine_url"],
)
async def test_a_job_whose_worker_is_killed_mid_job_is_completed_by_another_worker_exactly_once(
    redis: aioredis.Redis, unique_name: str, worker_procs: WorkerProcs, found_by: str, options: dict
) -> None:
    queue = Queue(redis, unique_name)
    first = await worker_procs.start("first", **options)
    job_id = await queue.enqueue("slow", {"seconds": 1.5})
    await wait_for(lambda: _started(redis, unique_name, "first"), 5, "the first worker to start the job")

    first.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    await worker_procs.start("second", **options)
    await wait_for(lambda: redis.llen(f"{unique_name}:completions"), 15, "the job to complete")
    # The handler records its completion, then its guarded effect: two more round trips the test must not race.
    await wait_for(lambda: redis.get(f"{unique_name}:effects"), 5, "the job's guarded effect")

    assert await redis.lrange(f"{unique_name}:completions", 0, -1) == [f"{job_id} second"]
    assert await redis.get(f"{unique_name}:effects") == "1"
    assert await log_of(redis, unique_name) == [f"start {job_id} 1 first", f"start {job_id} 2 second"]
    assert time.monotonic() - killed_at < 1.5 + 2 + 2  # job + detection + process start, with room for CI
    stats = await queue.stats()
    assert (stats.depth, stats.pending) == (0, 0)


@ON_VALKEY
async def test_a_job_that_kills_its_worker_every_time_ends_in_the_dead_letters(
    redis: aioredis.Redis, unique_name: str, worker_procs: WorkerProcs
) -> None:
    queue = Queue(redis, unique_name, max_deliveries=3)
    await queue.enqueue("crash", {"incident": 7})
    # A supervisor restarting each worker that dies, until the queue gives up on the job.
    for n in range(1, 6):
        proc = await worker_procs.start(f"worker-{n}", dead_after=0.5, max_deliveries=3)
        while proc.poll() is None and not (await queue.stats()).dead_letters:
            await asyncio.sleep(0.05)
        if (await queue.stats()).dead_letters:
            break

    [dead] = await queue.dead_letters()
    assert (dead["kind"], dead["attempts"]) == ("crash", 3)
    assert dead["error"].startswith("worker worker-3 died")
    assert len(await log_of(redis, unique_name)) == 3


@ON_VALKEY
async def test_a_job_failing_every_time_in_a_worker_process_ends_in_the_dead_letters_with_its_error(
    redis: aioredis.Redis, unique_name: str, worker_procs: WorkerProcs
) -> None:
    queue = Queue(redis, unique_name)
    await worker_procs.start("worker", max_deliveries=3, retry_base=0.05)
    job_id = await queue.enqueue("fail", {"to": "oncall@example.com"})
    await wait_for(lambda: redis.xlen(queue.dead_key), 10, "the dead letter")

    [dead] = await queue.dead_letters()
    assert (dead["job_id"], dead["payload"], dead["attempts"]) == (job_id, {"to": "oncall@example.com"}, 3)
    assert dead["error"] == "RuntimeError: SMTP relay refused the message (attempt 3)"
    assert len(await log_of(redis, unique_name)) == 3


@ON_VALKEY
async def test_a_delayed_job_survives_its_worker_being_killed_and_runs_on_time(
    redis: aioredis.Redis, unique_name: str, worker_procs: WorkerProcs
) -> None:
    queue = Queue(redis, unique_name)
    first = await worker_procs.start("first")
    due = time.time() + 1.5
    job_id = await queue.enqueue("slow", {"seconds": 0}, run_at=due)
    await asyncio.sleep(0.3)
    first.send_signal(signal.SIGKILL)
    first.wait(5)

    await worker_procs.start("second")
    await asyncio.sleep(max(due - 0.3 - time.time(), 0))
    assert await redis.llen(f"{unique_name}:completions") == 0  # not before its time
    await wait_for(lambda: redis.llen(f"{unique_name}:completions"), 10, "the delayed job")
    assert await redis.lrange(f"{unique_name}:completions", 0, -1) == [f"{job_id} second"]


# -- a worker is told to stop ---------------------------------------------------------------------------------


@ON_VALKEY
async def test_sigterm_lets_the_running_job_finish_before_the_worker_exits(
    redis: aioredis.Redis, unique_name: str, worker_procs: WorkerProcs
) -> None:
    queue = Queue(redis, unique_name)
    proc = await worker_procs.start("worker", grace=5)
    job_id = await queue.enqueue("slow", {"seconds": 1.0})
    await wait_for(lambda: _started(redis, unique_name, "worker"), 5, "the job to start")

    proc.send_signal(signal.SIGTERM)

    assert await asyncio.to_thread(proc.wait, 10) == 0
    assert await redis.lrange(f"{unique_name}:completions", 0, -1) == [f"{job_id} worker"]
    assert await queue.is_idle()
    assert not await redis.exists(queue.alive_key("worker"))


async def test_sigterm_releases_a_job_that_outlives_the_grace_and_another_worker_completes_it(
    redis: aioredis.Redis, unique_name: str, worker_procs: WorkerProcs
) -> None:
    queue = Queue(redis, unique_name)
    proc = await worker_procs.start("leaving", grace=0.3)
    job_id = await queue.enqueue("slow", {"seconds": 2.0})
    await wait_for(lambda: _started(redis, unique_name, "leaving"), 5, "the job to start")

    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 10) == 0
    stats = await queue.stats()
    assert (stats.depth, stats.pending) == (1, 0)  # handed back, not held by a departed worker

    await worker_procs.start("staying")
    await wait_for(lambda: redis.llen(f"{unique_name}:completions"), 10, "the job to complete")
    await wait_for(lambda: redis.get(f"{unique_name}:effects"), 5, "the job's guarded effect")
    assert await redis.lrange(f"{unique_name}:completions", 0, -1) == [f"{job_id} staying"]
    assert await redis.get(f"{unique_name}:effects") == "1"


# -- Redis restarts -------------------------------------------------------------------------------------------


async def test_a_redis_crash_after_the_aof_fsync_loses_no_queued_or_delayed_job(
    redis_server_factory: Callable[..., RedisServer], unique_name: str
) -> None:
    server = redis_server_factory(aof=True)
    client = reconnecting_client(server.url)
    try:
        queue = Queue(client, unique_name)
        queued = {await queue.enqueue("page", {"n": n}) for n in range(50)}
        delayed = await queue.enqueue("escalate", {"level": 2}, job_id="escalate:inc-7", delay_s=1.5)
        # appendfsync everysec: a write is on disk within about a second (up to two if the disk is slow).
        # Writes in the last second before a crash can be lost; that window is the price of everysec.
        await asyncio.sleep(1.2)
        await asyncio.to_thread(server.restart, crash=True)  # SIGKILL: no shutdown fsync to help us

        assert await queue.enqueue("escalate", {}, job_id="escalate:inc-7") is None  # its id survived too
        stats = await queue.stats()
        assert (stats.depth, stats.delayed) == (50, 1)
        ran: list[str] = []

        async def record(job: Job) -> None:
            ran.append(job.id)

        await asyncio.sleep(0.4)  # let the escalation fall due
        await Worker(queue, {"page": record, "escalate": record}, block_ms=200).run_until_idle()
        assert set(ran) == queued | {delayed}
    finally:
        await client.aclose()


async def test_a_worker_keeps_working_across_a_redis_restart(
    redis_server_factory: Callable[..., RedisServer], unique_name: str
) -> None:
    server = redis_server_factory(aof=True)
    client = reconnecting_client(server.url)
    ran: list[int] = []

    async def record(job: Job) -> None:
        ran.append(job.payload["n"])

    try:
        queue = Queue(client, unique_name)
        worker = Worker(queue, {"record": record}, block_ms=200, reclaim_interval_s=0.2, mover_interval_s=0.05)
        task = asyncio.create_task(worker.run())
        await queue.enqueue("record", {"n": 1})
        await wait_for(lambda: ran == [1], 5, "the first job")

        await asyncio.to_thread(server.restart)  # graceful: SIGTERM, Redis fsyncs the AOF on the way out
        await queue.enqueue("record", {"n": 2})
        await queue.enqueue("record", {"n": 3}, delay_s=0.2)
        await wait_for(lambda: sorted(ran) == [1, 2, 3], 15, "the jobs after the restart")

        worker.stop()
        await asyncio.wait_for(task, 10)
        assert await queue.is_idle()
    finally:
        await client.aclose()


def reconnecting_client(url: str) -> aioredis.Redis:
    """Like production should: `Redis.from_url` in redis-py 8 retries nothing by default, so the first command
    on each pooled connection after a Redis restart would fail with "Connection closed by server"."""
    return aioredis.Redis.from_url(url, decode_responses=True,
                                   retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), 3))


async def _started(redis: aioredis.Redis, queue: str, consumer: str) -> bool:
    return any(line.endswith(f" {consumer}") for line in await log_of(redis, queue))

