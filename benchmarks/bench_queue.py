"""Job queue figures against a private redis-server (AOF on, as deployed):

    .venv/bin/python -m benchmarks.bench_queue

1. Throughput of no-op jobs (10,000 queued, then drained by one worker) and pickup latency (one job at a time,
   enqueue call to handler start), for the project queue and for a bare XADD / XREADGROUP / XACK loop in the
   same process and Redis. Target: project/bare throughput ratio >= 0.5.
2. Recovery after SIGKILL, default settings: a worker process is killed 1 s into an 8 s job and a second one
   started at once; time from the kill until the job starts again. Target <= 15 s.
3. Worker process RSS after warm-up and after each further 10,000 jobs. Target: no growth after warm-up.

Prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis

from benchmarks import pct
from bot.app.redis_server import RedisServer
from bot.queue import Job, Queue, Worker

BURST_JOBS = 10_000
LATENCY_JOBS = 1_000
RSS_ROUNDS = 2
KILL_AFTER_S = 1.0
SLOW_JOB_S = 8.0



# -- 1. throughput and pickup latency ------------------------------------------------------------------------


async def project_burst(redis: aioredis.Redis, n: int) -> float:
    queue = Queue(redis, f"bench:{uuid.uuid4().hex[:8]}")
    await _in_chunks(n, lambda i: queue.enqueue("noop", {"i": i}))
    done = asyncio.Event()
    count = 0

    async def noop(job: Job) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    worker = Worker(queue, {"noop": noop})
    runner = asyncio.create_task(worker.run())
    started = time.perf_counter()
    await done.wait()
    elapsed = time.perf_counter() - started
    worker.stop()
    await runner
    return n / elapsed


async def bare_burst(redis: aioredis.Redis, n: int) -> float:
    stream, group = f"bench-bare:{uuid.uuid4().hex[:8]}", "g"
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    await _in_chunks(n, lambda i: redis.xadd(stream, {"k": "noop", "p": f'{{"i": {i}}}'}))
    started = time.perf_counter()
    done = 0
    while done < n:
        reply = await redis.xreadgroup(group, "c", {stream: ">"}, count=16, block=1000)
        for _stream, entries in reply:
            for entry_id, _fields in entries:
                await redis.xack(stream, group, entry_id)
                done += 1
    return n / (time.perf_counter() - started)


async def project_pickup(redis: aioredis.Redis, n: int) -> list[float]:
    queue = Queue(redis, f"bench:{uuid.uuid4().hex[:8]}")
    sent: dict[int, float] = {}
    latencies: list[float] = []
    handled = asyncio.Event()

    async def noop(job: Job) -> None:
        latencies.append(time.perf_counter() - sent[job.payload["i"]])
        handled.set()

    worker = Worker(queue, {"noop": noop})
    runner = asyncio.create_task(worker.run())
    await asyncio.sleep(0.2)  # let it join and block in XREADGROUP
    for i in range(n):
        handled.clear()
        sent[i] = time.perf_counter()
        await queue.enqueue("noop", {"i": i})
        await handled.wait()
    worker.stop()
    await runner
    return latencies


async def bare_pickup(redis: aioredis.Redis, n: int) -> list[float]:
    stream, group = f"bench-bare:{uuid.uuid4().hex[:8]}", "g"
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    sent: dict[int, float] = {}
    latencies: list[float] = []
    handled, stop = asyncio.Event(), asyncio.Event()

    async def consume() -> None:
        while not stop.is_set():  # not cancel(): redis-py can swallow a cancellation that lands mid-command
            reply = await redis.xreadgroup(group, "c", {stream: ">"}, count=16, block=200)
            for _stream, entries in reply:
                for entry_id, fields in entries:
                    latencies.append(time.perf_counter() - sent[int(fields[b"i"])])
                    handled.set()
                    await redis.xack(stream, group, entry_id)

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    for i in range(n):
        handled.clear()
        sent[i] = time.perf_counter()
        await redis.xadd(stream, {"k": "noop", "i": i})
        await handled.wait()
    stop.set()
    await consumer
    return latencies


async def _in_chunks(n: int, make: Callable[[int], Awaitable[object]], chunk: int = 50) -> None:
    for start in range(0, n, chunk):
        await asyncio.gather(*(make(i) for i in range(start, min(start + chunk, n))))


async def throughput_and_latency(url: str) -> None:
    redis = aioredis.Redis.from_url(url)
    try:
        await project_burst(redis, 1_000)  # warm-up: script loading, connection pool
        await bare_burst(redis, 1_000)
        ours = statistics.median([await project_burst(redis, BURST_JOBS) for _ in range(3)])
        bare = statistics.median([await bare_burst(redis, BURST_JOBS) for _ in range(3)])
        ours_lat = await project_pickup(redis, LATENCY_JOBS)
        bare_lat = await bare_pickup(redis, LATENCY_JOBS)
    finally:
        await redis.aclose()
    print(f"throughput, {BURST_JOBS:,} no-op jobs, median of 3 (jobs/s):")
    print(f"  project queue  {ours:8,.0f}")
    print(f"  bare streams   {bare:8,.0f}")
    print(f"  ratio          {ours / bare:8.2f}   (target >= 0.5)")
    print(f"pickup latency, {LATENCY_JOBS:,} jobs one at a time (ms):")
    for label, values in (("project queue", ours_lat), ("bare streams", bare_lat)):
        print(f"  {label:13}  p50 {pct(values, 50) * 1000:6.2f}   p99 {pct(values, 99) * 1000:6.2f}")


# -- 2 and 3: worker processes -------------------------------------------------------------------------------


def spawn_worker(url: str, queue: str, consumer: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "benchmarks.bench_queue", "--worker", url, queue, consumer],
                            cwd=Path(__file__).resolve().parent.parent)


async def wait_until(check: Callable[[], Awaitable[bool]], timeout_s: float) -> float:
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"not within {timeout_s} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def recovery_after_kill(url: str) -> None:
    redis = aioredis.Redis.from_url(url, decode_responses=True)
    name = f"bench:{uuid.uuid4().hex[:8]}"
    queue = Queue(redis, name)
    first = spawn_worker(url, name, "first")
    second = None
    try:
        await wait_until(lambda: redis.exists(queue.alive_key("first")), 10)
        await queue.enqueue("slow", {"seconds": SLOW_JOB_S})
        await wait_until(lambda: redis.llen(f"{name}:started"), 10)
        await asyncio.sleep(KILL_AFTER_S)
        first.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        second = spawn_worker(url, name, "second")
        await wait_until(lambda: _started_by(redis, name, "second"), 60)
        rerun_after = time.monotonic() - killed
        await wait_until(lambda: redis.llen(f"{name}:finished"), 60)
        finished_after = time.monotonic() - killed
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(30)
        await redis.aclose()
    print(f"recovery, worker SIGKILLed {KILL_AFTER_S:g} s into an {SLOW_JOB_S:g} s job, default settings:")
    print(f"  job started again after {rerun_after:5.1f} s   (target <= 15 s)")
    print(f"  job finished after      {finished_after:5.1f} s")


async def _started_by(redis: aioredis.Redis, name: str, consumer: str) -> bool:
    return consumer in await redis.lrange(f"{name}:started", 0, -1)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def worker_rss(url: str) -> None:
    redis = aioredis.Redis.from_url(url, decode_responses=True)
    name = f"bench:{uuid.uuid4().hex[:8]}"
    queue = Queue(redis, name)
    proc = spawn_worker(url, name, "rss")
    figures: list[tuple[str, int]] = []
    try:
        await wait_until(lambda: redis.exists(queue.alive_key("rss")), 10)
        figures.append(("started", rss_kib(proc.pid)))
        for label, n in [("after 2,000 warm-up jobs", 2_000)] + [
            (f"after {r + 1} x {BURST_JOBS:,} more", BURST_JOBS) for r in range(RSS_ROUNDS)
        ]:
            await _in_chunks(n, lambda i: queue.enqueue("noop", {"i": i, "pad": "x" * 200}))
            await wait_until(queue.is_idle, 120)
            await asyncio.sleep(0.5)
            figures.append((label, rss_kib(proc.pid)))
    finally:
        proc.terminate()
        proc.wait(30)
        await redis.aclose()
    print("worker process RSS:")
    for label, kib in figures:
        print(f"  {label:28} {kib / 1024:6.1f} MiB")
    print(f"  growth after warm-up      {(figures[-1][1] - figures[1][1]) / 1024:+6.1f} MiB   (target: ~0)")


async def run_worker(url: str, name: str, consumer: str) -> None:
    """The worker process of sections 2 and 3: default Worker and Queue settings."""
    redis = aioredis.Redis.from_url(url, decode_responses=True)

    async def slow(job: Job) -> None:
        await redis.rpush(f"{name}:started", consumer)
        await asyncio.sleep(float(job.payload["seconds"]))
        await redis.rpush(f"{name}:finished", consumer)

    async def noop(job: Job) -> None:
        return None

    worker = Worker(Queue(redis, name), {"slow": slow, "noop": noop}, consumer=consumer)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.stop)
    await worker.run()
    await redis.aclose()


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, RedisServer(tmp, aof=True, die_with_parent=True) as server:
        print(f"redis-server {server.executable}, AOF everysec", flush=True)
        await throughput_and_latency(server.url)
        await recovery_after_kill(server.url)
        await worker_rss(server.url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", nargs=3, metavar=("URL", "QUEUE", "CONSUMER"))
    args = parser.parse_args()
    asyncio.run(run_worker(*args.worker) if args.worker else main())
