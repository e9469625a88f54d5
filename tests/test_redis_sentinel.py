"""The queue on a Sentinel-managed Redis: a worker and a producer built by `connect()` from the Sentinel settings
follow a promoted replica by themselves, nothing queued before the kill is lost or run twice, timers fire, and a
READONLY reply from a demoted primary is retried, never dead-lettered."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

import pytest
import redis.asyncio as aioredis

from bot.app.http_server import health
from bot.queue import Job, Queue, Worker
from bot.queue.connection import DURABILITY, connect
from bot.runtime import create_runtime
from bot.settings import Settings
from tests.redis_topologies import SentinelTopology

pytestmark = pytest.mark.slow


def sentinel_settings(topology: SentinelTopology, **extra: object) -> Settings:
    env = {k.lower(): v for k, v in topology.env().items()}
    return Settings(**env, **extra)  # type: ignore[arg-type]


async def wait_for(check, timeout_s: float, poll_s: float = 0.05) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError
        await asyncio.sleep(poll_s)
    return time.monotonic() - started


async def test_worker_follows_the_promoted_replica_and_loses_nothing(sentinel_topology: SentinelTopology,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    settings = sentinel_settings(sentinel_topology)
    assert settings.wait_replicas == 1  # WAIT is on by default under Sentinel
    rt = create_runtime(settings, queue_name="ha")
    ran: Counter[str] = Counter()

    async def work(job: Job) -> None:
        await asyncio.sleep(0.01)
        ran[job.payload["n"]] += 1

    worker = Worker(rt.queue, {"work": work}, concurrency=4, reclaim_interval_s=0.5, mover_interval_s=0.1)
    rt.worker = worker
    waits_before = DURABILITY.waits
    for n in range(30):
        await rt.queue.enqueue("work", {"n": f"now-{n}"})
    for n in range(5):  # timers due after the failover
        await rt.queue.enqueue("work", {"n": f"timer-{n}"}, delay_s=4.0)
    assert DURABILITY.waits - waits_before == 5  # each timer waited for the replica
    assert (await health(rt))[0] == 200

    running = asyncio.create_task(worker.run())
    try:
        await wait_for(lambda: sum(ran.values()) >= 5, 10)
        old = sentinel_topology.kill_primary()  # mid-work: most of the 30 jobs are still queued
        killed_at = time.monotonic()
        assert (await health(rt))[0] == 503  # no primary reachable
        sentinel_topology.wait_promoted(old)
        promoted_at = time.monotonic()
        await rt.queue.enqueue("work", {"n": "after"})
        await wait_for(lambda: ran["after"] == 1, 15)
        assert time.monotonic() - promoted_at < 15
        await wait_for(lambda: all(ran[f"timer-{n}"] for n in range(5)), 15)
        await wait_for(lambda: all(ran[f"now-{n}"] for n in range(30)), 15)
        assert (await health(rt))[0] == 200
    finally:
        worker.stop()
        await running
        await rt.aclose()
    assert max(ran.values()) == 1, f"ran twice: {[k for k, v in ran.items() if v > 1]}"
    assert len(ran) == 36
    assert worker.stats["jobs_dead_lettered"] == 0
    outage = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "bot.queue"]
    assert len(outage) <= 8, [r.getMessage() for r in outage]  # once per loop per outage, not per round
    print(f"killed→promoted {promoted_at - killed_at:.1f} s")


async def test_readonly_from_a_demoted_primary_is_retried_not_dead_lettered(
        sentinel_topology: SentinelTopology) -> None:
    """A handler writing through a plain client pointed at a node that turned replica gets READONLY; the job is
    run again (here against the primary once the 'demotion' ends) and never lands in the dead letters."""
    settings = sentinel_settings(sentinel_topology)
    queue_redis = connect(settings)
    stale = aioredis.Redis(port=sentinel_topology.replica)  # a replica answers writes with READONLY
    primary = aioredis.Redis(port=sentinel_topology.primary)
    queue = Queue(queue_redis, "ro", max_deliveries=1)
    tries: list[str] = []

    async def write(job: Job) -> None:
        target = stale if len(tries) < 2 else primary
        tries.append("stale" if target is stale else "primary")
        await target.set("ro:done", job.id)

    worker = Worker(queue, {"write": write}, concurrency=1)
    job_id = await queue.enqueue("write", {})
    try:
        await worker.run_until_idle(timeout_s=15)
    finally:
        await stale.aclose()
    assert tries == ["stale", "stale", "primary"]
    assert (await primary.get("ro:done")).decode() == job_id
    assert await queue.dead_letters() == [] and worker.stats["jobs_dead_lettered"] == 0
    await primary.aclose()
    await queue_redis.aclose()
