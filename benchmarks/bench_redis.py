"""Redis topology figures, on real servers on loopback (redis-server, redis-sentinel):

    .venv/bin/python -m benchmarks.bench_redis                    # every section
    .venv/bin/python -m benchmarks.bench_redis failover           # some, by name

Sections (SECTIONS; a topology adds its own entry):
  failover         a primary, a replica and three sentinels; a worker built by `connect()` from the Sentinel
                   settings handles a steady stream of jobs; the primary is SIGKILLed. Seconds from the kill to the
                   first job enqueued after it and handled (so it can only be on the promoted replica), p50/max
                   over 5 runs. Target <= 15 s.
  lagging replica  the replica replicates through a TCP proxy that holds every byte 300 ms, then 1,200 ms (LAGS_MS),
                   so it trails the primary as a loaded or distant replica does (pausing a replica with SIGSTOP loses
                   nothing: the primary keeps its backlog). 1,000 jobs and 1,000 timers are enqueued while a worker runs; once
                   the last enqueue is acknowledged the primary is SIGKILLed, Sentinel promotes the replica, and
                   the worker carries on there. Counted: jobs and timers acknowledged before the kill that never
                   run (lost) or run twice, with WAIT (REDIS_WAIT_REPLICAS=1) and without. Target 0 / 0 with WAIT.
  cluster          queue throughput on a three-primary Redis Cluster (tests/redis_cluster.py) and on a single
                   redis-server, in the same run, both without persistence: CLUSTER_JOBS no-op jobs enqueued by
                   PRODUCERS tasks per queue while CONSUMERS Workers per queue claim, run and ack them, all through
                   the client `connect()` builds. Jobs/s (median of CLUSTER_RUNS) for one queue on each, and for
                   three namespaces on the cluster (their slots spread over the shards). Target: one queue on the
                   cluster >= 0.8x the single node. One process drives it all, as one bot process would: its CPU,
                   not Redis, sets the pace, so the figures compare the two clients' cost per job, and three
                   namespaces spread Redis's load without adding throughput. Redis errors met on the way are
                   counted and printed (before the client was initialized ahead of the workers, about one run in
                   three met a few `Connection closed by server`: see `initialized` in bot/queue/connection.py).

Prints figures; it is not a test.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from redis.exceptions import RedisError

from bot.app.redis_server import RedisServer, find_redis_server, free_port
from bot.queue import Job, Queue, Worker
from bot.queue.connection import connect, initialized
from bot.settings import Settings
from checks.schema import replace
from tests.redis_cluster import start_cluster
from tests.redis_topologies import SentinelTopology

FAILOVER_RUNS = 5
JOBS = TIMERS = 1_000
# Each way through the proxy (the replica trails by about this, its acknowledgements by twice it), and the
# REDIS_WAIT_TIMEOUT_MS that lag needs: above that round trip, else every WAIT times out unacknowledged. 1.2 s is
# the lag the issue measured losses with; 300 ms a loaded replica nearby.
LAGS_MS = ((300, 1000), (1200, 3000))
TIMER_DELAY_S = 8.0  # due after the promotion
ENQUEUE_CONCURRENCY = 50
SETTLE_S = 25.0  # after the promotion, how long the worker gets to run what survived


@dataclass(frozen=True)
class Section:
    name: str
    run: Callable[[], Awaitable[None]]


def topology(directory: Path, *, upstream: int | None = None) -> SentinelTopology:
    top = SentinelTopology(directory, free_port(), free_port(), [free_port() for _ in range(3)], upstream=upstream)
    top.start(find_redis_server())
    return top


def settings_for(top: SentinelTopology, wait_replicas: int) -> Settings:
    env = {k.lower(): v for k, v in top.env().items()}
    return Settings.from_env(**env, redis_wait_replicas=wait_replicas)  # type: ignore[arg-type]


def bench_worker(queue: Queue, handler: Callable[[Job], Awaitable[None]]) -> Worker:
    return Worker(queue, {"work": handler}, concurrency=16, reclaim_interval_s=0.5, mover_interval_s=0.1)


# -- failover -------------------------------------------------------------------------------------------------


async def one_failover(directory: Path) -> tuple[float, float]:
    """(kill → promoted, kill → first job enqueued after the kill handled), in seconds."""
    top = topology(directory)
    rt_redis = connect(settings_for(top, 1))
    queue = Queue(rt_redis, "failover")
    handled: dict[int, float] = {}

    async def work(job: Job) -> None:
        handled[job.payload["n"]] = time.monotonic()

    worker = bench_worker(queue, work)
    running = asyncio.create_task(worker.run())
    first_after: list[int] = []
    killed_at = 0.0

    async def produce() -> None:
        n = 0
        while True:
            await queue.enqueue("work", {"n": n})  # retried through the failover by the client
            if killed_at and not first_after:
                first_after.append(n + 1)  # this one may have been sent before the kill; the next may not
            n += 1
            await asyncio.sleep(0.02)

    producer = asyncio.create_task(produce())
    try:
        await asyncio.sleep(1.0)
        killed_at = time.monotonic()
        old = await asyncio.to_thread(top.kill_primary)
        await asyncio.to_thread(top.wait_promoted, old, 30)
        promoted_s = time.monotonic() - killed_at
        deadline = time.monotonic() + 30
        while not (first_after and any(n >= first_after[0] for n in handled)):
            if time.monotonic() > deadline:
                raise TimeoutError("no job handled on the new primary within 30 s of the promotion")
            await asyncio.sleep(0.01)
        first = min(t for n, t in handled.items() if n >= first_after[0])
        return promoted_s, first - killed_at
    finally:
        producer.cancel()
        worker.stop()
        await asyncio.gather(producer, running, return_exceptions=True)
        await rt_redis.aclose()
        top.stop()


async def failover() -> None:
    promoted, handled = [], []
    for run in range(FAILOVER_RUNS):
        with tempfile.TemporaryDirectory(prefix="bench-failover-") as d:
            p, h = await one_failover(Path(d))
        promoted.append(p)
        handled.append(h)
        print(f"   run {run + 1}: SIGKILL → promoted {p:.1f} s, → first new job handled {h:.1f} s", flush=True)
    print(f"   SIGKILL → first job handled on the new primary: p50 {statistics.median(handled):.1f} s, "
          f"max {max(handled):.1f} s (target ≤ 15 s); promotion alone p50 {statistics.median(promoted):.1f} s")


# -- lagging replica ------------------------------------------------------------------------------------------


class DelayProxy:
    """A TCP proxy on its own thread and loop that holds every chunk `delay_ms` before passing it on, both ways,
    in order: a replica behind it trails its primary by that much, as over a slow or distant link."""

    def __init__(self, target_port: int, delay_ms: int) -> None:
        self.port, self.target, self.delay_s = free_port(), target_port, delay_ms / 1000
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> DelayProxy:
        self.thread.start()
        self.ready.wait(5)
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(asyncio.start_server(self._connection, "127.0.0.1", self.port))
        self.ready.set()
        self.loop.run_forever()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Bytes still held when their sender goes away are dropped, not delivered: what a primary that died
        with its host or behind a partition had sent but the replica had not received is gone with it."""
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send_when_due(held, writer))
        try:
            while chunk := await reader.read(65536):
                held.put_nowait((time.monotonic() + self.delay_s, chunk))
        except OSError:
            pass
        finally:
            sender.cancel()
            writer.close()

    @staticmethod
    async def _send_when_due(held: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter) -> None:
        while True:
            due, chunk = await held.get()
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            writer.write(chunk)
            await writer.drain()


async def one_lagging_failover(directory: Path, lag_ms: int, wait_replicas: int, wait_timeout_ms: int
                               ) -> dict[str, int]:
    primary = free_port()
    proxy = DelayProxy(primary, lag_ms).start()
    top = SentinelTopology(directory, primary, free_port(), [free_port() for _ in range(3)], upstream=proxy.port)
    try:
        top.start(find_redis_server())
        settings = replace(settings_for(top, wait_replicas), redis_wait_timeout_ms=wait_timeout_ms)
        return await _enqueue_kill_count(top, settings)
    finally:
        top.stop()
        proxy.stop()


async def _enqueue_kill_count(top: SentinelTopology, settings: Settings) -> dict[str, int]:
    redis = connect(settings)
    queue = Queue(redis, "lag", max_deliveries=10)
    ran: Counter[str] = Counter()

    async def work(job: Job) -> None:
        ran[job.payload["id"]] += 1

    worker = bench_worker(queue, work)
    running = asyncio.create_task(worker.run())
    ids = [f"job-{n}" for n in range(JOBS)] + [f"timer-{n}" for n in range(TIMERS)]
    gate = asyncio.Semaphore(ENQUEUE_CONCURRENCY)

    async def enqueue(job_id: str) -> None:
        async with gate:
            delay = TIMER_DELAY_S if job_id.startswith("timer") else 0.0
            await queue.enqueue("work", {"id": job_id}, delay_s=delay)

    try:
        started = time.monotonic()
        await asyncio.gather(*(enqueue(i) for i in sorted(ids, key=lambda i: int(i.split("-")[1]))))
        enqueue_s = time.monotonic() - started
        old = await asyncio.to_thread(top.kill_primary)  # every enqueue above was acknowledged
        await asyncio.to_thread(top.wait_promoted, old, 30)
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline and not all(ran[i] for i in ids):
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # doubles arrive after the first run
    finally:
        worker.stop()
        await running
        await redis.aclose()
    return {"jobs lost": sum(not ran[i] for i in ids if i.startswith("job")),
            "timers lost": sum(not ran[i] for i in ids if i.startswith("timer")),
            "jobs run twice": sum(ran[i] > 1 for i in ids if i.startswith("job")),
            "timers run twice": sum(ran[i] > 1 for i in ids if i.startswith("timer")),
            "enqueue ms": round(enqueue_s * 1000)}


async def lagging_replica() -> None:
    for lag_ms, wait_timeout_ms in LAGS_MS:
        print(f"   replica behind a proxy holding bytes {lag_ms:,} ms each way; {JOBS:,} jobs + {TIMERS:,} timers "
              f"acknowledged, then the primary SIGKILLed", flush=True)
        for wait_replicas in (0, 1):
            with tempfile.TemporaryDirectory(prefix="bench-lag-") as d:
                counts = await one_lagging_failover(Path(d), lag_ms, wait_replicas, wait_timeout_ms)
            label = (f"WAIT on (REDIS_WAIT_REPLICAS=1, REDIS_WAIT_TIMEOUT_MS={wait_timeout_ms:,})" if wait_replicas
                     else "WAIT off (REDIS_WAIT_REPLICAS=0)")
            print(f"     {label}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()), flush=True)


# -- cluster --------------------------------------------------------------------------------------------------

CLUSTER_JOBS = 12_000
CLUSTER_RUNS = 3
PRODUCERS, CONSUMERS = 4, 2  # per queue: producer tasks, and Workers (concurrency 16 each)
ENQUEUE_TRIES = 5


@dataclass
class Throughput:
    jobs_per_s: float
    shards: int  # primaries holding the queues (1 on a single node)
    errors: int  # Redis errors met on the way: enqueues tried again, and worker loops' warnings


class ErrorCount(logging.Handler):
    """Warnings and errors the workers log (each is a loop that met a Redis error and carried on)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


async def queue_throughput(url: str, queues: int) -> Throughput:
    """CLUSTER_JOBS no-op jobs spread over `queues` namespaces, from the first enqueue until every job is
    acknowledged."""
    redis = await initialized(connect(Settings.from_env(redis_url=url)))
    run = uuid.uuid4().hex[:6]
    qs = [Queue(redis, f"bench{run}n{n}") for n in range(queues)]
    handled, done, errors = Counter[str](), asyncio.Event(), ErrorCount()

    async def noop(job: Job) -> None:
        handled["jobs"] += 1
        if handled["jobs"] == CLUSTER_JOBS:
            done.set()

    workers = [Worker(q, {"noop": noop}, block_ms=200) for q in qs for _ in range(CONSUMERS)]
    share = CLUSTER_JOBS // (queues * PRODUCERS)
    logging.getLogger().addHandler(errors)
    try:
        started = time.perf_counter()
        runners = [asyncio.create_task(w.run()) for w in workers]
        await asyncio.gather(*(_produce(q, share, handled) for q in qs for _ in range(PRODUCERS)))
        await asyncio.wait_for(done.wait(), 120)
        while sum([(await q.stats()).pending for q in qs]):  # the last handled jobs' acks
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - started
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*runners, return_exceptions=True)
        logging.getLogger().removeHandler(errors)
        shards = len({redis.get_node_from_key(q.stream_key).name for q in qs}) if _is_cluster(redis) else 1
        await redis.aclose()
    return Throughput(CLUSTER_JOBS / elapsed, shards, errors.count + handled["enqueue errors"])


async def _produce(queue: Queue, count: int, tally: Counter[str]) -> None:
    for i in range(count):
        for attempt in range(1, ENQUEUE_TRIES + 1):
            try:
                await queue.enqueue("noop", {"i": i})  # an enqueue tried again may run twice: counted as an error
                break
            except RedisError:
                tally["enqueue errors"] += 1
                if attempt == ENQUEUE_TRIES:
                    raise


def _is_cluster(redis: object) -> bool:
    return hasattr(redis, "get_node_from_key")


async def cluster() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as d, ExitStack() as stack:
        nodes = start_cluster(stack, Path(d))
        single = stack.enter_context(_single_node(Path(d) / "single"))
        cluster_url = f"redis://127.0.0.1:{nodes[1].port}"
        runs: dict[str, list[Throughput]] = {"single": [], "cluster": [], "cluster x3": []}
        for _ in range(CLUSTER_RUNS):  # interleaved, so a noisy moment on the machine hits all three
            runs["single"].append(await queue_throughput(single, 1))
            runs["cluster"].append(await queue_throughput(cluster_url, 1))
            runs["cluster x3"].append(await queue_throughput(cluster_url, 3))
    med = {k: statistics.median(r.jobs_per_s for r in v) for k, v in runs.items()}
    print(f"   {CLUSTER_JOBS:,} jobs, {PRODUCERS} producers and {CONSUMERS} workers per queue, one process, median "
          f"of {CLUSTER_RUNS} runs; per run jobs/s (Redis errors met and retried):")
    for name, rs in runs.items():
        print(f"     {name:<10} " + "  ".join(f"{r.jobs_per_s:,.0f} ({r.errors})" for r in rs))
    print(f"   single node, 1 queue:       {med['single']:,.0f} jobs/s")
    print(f"   3-primary cluster, 1 queue: {med['cluster']:,.0f} jobs/s = "
          f"{med['cluster'] / med['single']:.2f}x the single node (target >= 0.8x)")
    shards = sorted(r.shards for r in runs["cluster x3"])
    print(f"   3-primary cluster, 3 namespaces: {med['cluster x3']:,.0f} jobs/s = "
          f"{med['cluster x3'] / med['single']:.2f}x; their queues on {'/'.join(map(str, shards))} of 3 primaries",
          flush=True)


@contextmanager
def _single_node(directory: Path) -> Iterator[str]:
    server = RedisServer(directory, aof=False).start()  # as the cluster nodes: no persistence
    try:
        yield server.url
    finally:
        server.stop()


SECTIONS = [Section("failover", failover), Section("lagging replica", lagging_replica),
            Section("cluster", cluster)]


async def main(names: list[str]) -> int:
    logging.getLogger("bot").setLevel(logging.ERROR)  # a failover's reconnect and reclaim lines drown the figures
    chosen = [s for s in SECTIONS if not names or s.name in names or s.name.split()[0] in names]
    for section in chosen:
        print(f"-- {section.name}", flush=True)
        await section.run()
    return 0 if chosen else 2


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(sys.argv[1:])))
