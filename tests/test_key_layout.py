"""Upgrading a running deployment: keys written by the code before the Cluster-ready layout (commit 7f64d10, its
recorded Redis commands replayed) are renamed at start-up, and this version's queue, worker, incident store and
timeline carry on with them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from bot.app.features import create_full_runtime
from bot.app.key_layout import Names, ensure_layout
from bot.incidents.store import IncidentStore
from bot.incidents.timeline import Timeline
from bot.queue import Queue
from bot.settings import ConfigError, load_settings
from tests import old_layout
from tests.test_queue import FAST_RETRY, eventually, recorder, running, worker_for


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A bytes client, as the runtime has."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def seed_old_deployment(redis: aioredis.Redis, ns: str) -> dict[str, float]:
    """What a running old deployment leaves in Redis: a dead letter, a job its (now dead) worker held, a queued
    job, an escalation timer, and an incident with declaration steps, a page record and a timeline. The commands
    the old code sent are replayed (tests/old_layout.py), so no git history is needed."""
    return {"timer_enqueued_at": await old_layout.replay(redis, ns)}


async def keys_under(redis: aioredis.Redis, ns: str) -> dict[str, str]:
    """Every key of the namespace, old or new layout, with its type."""
    found = {}
    for pattern in (f"{ns}:*", f"{{{ns}}}:*", f"{{{ns}:*"):
        async for key in redis.scan_iter(match=pattern, count=1000):
            found[key.decode()] = (await redis.type(key)).decode()
    return found


async def test_an_old_deployments_jobs_timers_dead_letters_and_incidents_carry_on_after_the_upgrade(
        redis: aioredis.Redis, raw_redis: aioredis.Redis, unique_name: str) -> None:
    seeded = await seed_old_deployment(redis, unique_name)
    queue = Queue(redis, unique_name, visibility_timeout_s=1, max_deliveries=3, retry=FAST_RETRY)

    report = await ensure_layout(raw_redis, Names(unique_name, queue.key))

    assert report is not None and not report.kept
    # stream, delayed, delayed:jobs, dead, the four jobs' id keys (the old worker read two without starting them);
    # the incident's record, steps, pages, timeline and its order
    assert report.renamed == {"queue": 8, "incident": 5}
    left = {k for k in await keys_under(raw_redis, unique_name) if k.startswith(f"{unique_name}:")}
    assert left == {f"{unique_name}:{k}" for k in ("inc:seq", "inc:open", "inc:all", "layout")}

    seen, handler = recorder()
    ran_at: dict[str, float] = {}

    async def work(job) -> None:  # type: ignore[no-untyped-def]
        ran_at[job.payload["n"]] = time.time()
        await handler(job)

    async with running(worker_for(queue, {"work": work})):
        await eventually(lambda: {"queued", "inflight", "timer"} <= set(ran_at), timeout_s=10)
    # the timer kept its due time, relative to when the replay enqueued it
    assert ran_at["timer"] >= seeded["timer_enqueued_at"] + old_layout.TIMER_DELAY_S - 0.1
    assert sorted(j.id for j in seen) == ["inflight", "queued", "timer"]
    [dead] = await queue.dead_letters()
    assert (dead["job_id"], dead["error"]) == ("doomed", "RuntimeError: boom")
    assert (await queue.stats()).pending == 0

    store, timeline = IncidentStore(redis, unique_name), Timeline(redis, unique_name)
    [incident] = await store.list_open()
    assert (incident.id, incident.title, incident.channel) == ("INC-1", "checkout 500s", "C9")
    assert await store.steps("INC-1") == {"channel": "C9"}
    assert (await store.page_record("INC-1", "pd|pagerduty")).ok
    assert [(e.kind, e.text) for e in await timeline.entries("INC-1")] == [("declared", "declared P2"),
                                                                            ("message", "rolling back")]


async def test_a_second_start_changes_nothing(redis: aioredis.Redis, raw_redis: aioredis.Redis,
                                             unique_name: str) -> None:
    await seed_old_deployment(redis, unique_name)
    names = Names(unique_name, Queue(raw_redis, unique_name).key)
    assert await ensure_layout(raw_redis, names) is not None
    after_first = await keys_under(raw_redis, unique_name)

    assert await ensure_layout(raw_redis, names) is None  # the marker says layout 2
    await raw_redis.delete(f"{unique_name}:layout")  # and a full second pass finds nothing to rename either
    again = await ensure_layout(raw_redis, names)

    assert again is not None and not again.renamed and not again.kept
    assert await keys_under(raw_redis, unique_name) == after_first


async def test_processes_starting_together_rename_each_key_once(redis_url: str, raw_redis: aioredis.Redis,
                                                                redis: aioredis.Redis, unique_name: str) -> None:
    await seed_old_deployment(redis, unique_name)
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(5)]
    try:
        reports = await asyncio.gather(*(ensure_layout(c, Names(unique_name, Queue(c, unique_name).key))
                                         for c in clients))
    finally:
        for c in clients:
            await c.aclose()
    done = [r for r in reports if r is not None]
    assert len(done) == 1 and sum(done[0].renamed.values()) == 13


async def test_a_new_key_is_never_overwritten_by_an_old_one(raw_redis: aioredis.Redis, unique_name: str) -> None:
    queue = Queue(raw_redis, unique_name)
    await raw_redis.set(f"{unique_name}:id:job-1", "old token")
    await raw_redis.set(queue.id_key("job-1"), "new token")

    report = await ensure_layout(raw_redis, Names(unique_name, queue.key))

    assert report.kept == [f"{unique_name}:id:job-1"]
    assert await raw_redis.get(queue.id_key("job-1")) == b"new token"
    assert "1 old key(s) kept" in report.summary()


def test_only_the_renamed_families_get_new_names() -> None:
    unused = aioredis.Redis()  # naming keys sends nothing
    names = Names("chatops", Queue(unused, "chatops").key)
    assert names.new_name("chatops:stream") == ("queue", "{chatops}:stream")
    assert names.new_name("chatops:delayed:jobs") == ("queue", "{chatops}:delayed:jobs")
    assert names.new_name("chatops:id:diag:C1:api") == ("queue", "{chatops}:id:diag:C1:api")
    assert names.new_name("chatops:diag:active:C1:api") == ("queue", "{chatops}:diag:active:C1:api")
    assert names.new_name("chatops:inc:INC-7") == ("incident", "{chatops:inc:INC-7}")
    assert names.new_name("chatops:inc:INC-7:tl:order") == ("incident", "{chatops:inc:INC-7}:tl:order")
    assert names.new_name("chatops:declare-limit:user:U1") == ("declaration limit", "{chatops:declare-limit}:user:U1")
    for kept in ("chatops:inc:seq", "chatops:inc:open", "chatops:inc:chan:C1", "chatops:diag:run:r1",
                 "chatops:wu:name:U1", "chatops:layout", "other:stream", "{chatops}:stream"):
        assert names.new_name(kept) is None, kept
    tagged = Names("{bot}", Queue(unused, "{bot}").key)
    assert tagged.new_name("{bot}:stream") is None  # a namespace with its own tag never changed its names


def namespace() -> str:
    """A REDIS_NAMESPACE no other test uses (letters and digits only, as the setting allows)."""
    return "t" + uuid.uuid4().hex[:12]


async def test_every_process_migrates_before_it_starts(redis_url: str, redis: aioredis.Redis) -> None:
    ns = namespace()
    await seed_old_deployment(redis, ns)
    rt = await create_full_runtime(load_settings(redis_url=redis_url, redis_namespace=ns), redis_url=redis_url)
    try:
        assert (await rt.queue.stats()).delayed == 1
        assert await rt.redis.get(f"{ns}:layout") == b"2"
    finally:
        await rt.aclose()


@pytest.mark.cluster
async def test_a_cluster_is_marked_when_clean_and_refused_with_old_keys(redis_cluster_url: str) -> None:
    clean, copied = namespace(), namespace()
    rt = await create_full_runtime(load_settings(redis_url=redis_cluster_url, redis_namespace=clean),
                                   redis_url=redis_cluster_url)
    try:
        assert await rt.redis.get(f"{clean}:layout") == b"2"
        await rt.redis.xadd(f"{copied}:stream", {"j": "x"})  # copied over from an old single Redis
    finally:
        await rt.aclose()

    with pytest.raises(ConfigError, match=f"Redis Cluster holding keys .*'{copied}:stream'.*single Redis"):
        await create_full_runtime(load_settings(redis_url=redis_cluster_url, redis_namespace=copied),
                                  redis_url=redis_cluster_url)
