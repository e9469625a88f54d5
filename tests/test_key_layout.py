"""Upgrading a running deployment: keys written by the code before the Cluster-ready layout (commit 7f64d10, run here
from git) are renamed at start-up, and this version's queue, worker, incident store and timeline carry on with them."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest
import redis.asyncio as aioredis

from bot.app.features import create_full_runtime
from bot.app.key_layout import Names, ensure_layout
from bot.incidents.model import Incident, PageRecord
from bot.incidents.store import IncidentStore
from bot.incidents.timeline import Timeline
from bot.queue import Queue
from bot.settings import ConfigError, load_settings
from tests.test_queue import FAST_RETRY, eventually, recorder, running, worker_for

OLD_LAYOUT_COMMIT = "7f64d10"  # the last commit that wrote untagged keys
REPO = Path(__file__).resolve().parents[1]


def old_module(path: str, tmp_path: Path) -> ModuleType:
    """`path` as it was at OLD_LAYOUT_COMMIT, imported under a name of its own (its imports are today's modules)."""
    try:
        source = subprocess.run(["git", "show", f"{OLD_LAYOUT_COMMIT}:{path}"], cwd=REPO, capture_output=True,
                                text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip(f"the old layout's code needs git history with {OLD_LAYOUT_COMMIT}")
    name = "old_" + path.replace("/", "_").removesuffix(".py")
    file = tmp_path / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A bytes client, as the runtime has."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def seed_old_deployment(redis: aioredis.Redis, ns: str, tmp_path: Path) -> dict[str, float]:
    """What a running old deployment leaves in Redis: a dead letter, a job its (now dead) worker held, a queued
    job, an escalation timer, and an incident with declaration steps, a page record and a timeline."""
    stream = old_module("bot/queue/stream.py", tmp_path)
    store = old_module("bot/incidents/store.py", tmp_path).IncidentStore(redis, ns)
    timeline = old_module("bot/incidents/timeline.py", tmp_path).Timeline(redis, ns)
    queue = stream.Queue(redis, ns, max_deliveries=3)
    await queue.ensure_group()
    await queue.enqueue("work", {"n": "doomed"}, job_id="doomed")
    [(entry, _)] = await queue.read("old-worker", 1, 100)
    assert await queue.fail(entry, "RuntimeError: boom", delay_s=0, permanent=True) == "dead"
    await queue.enqueue("work", {"n": "inflight"}, job_id="inflight")
    assert len(await queue.read("old-worker", 1, 100)) == 1  # held by a worker that then died, never acked
    await queue.enqueue("work", {"n": "queued"}, job_id="queued")
    await queue.enqueue("work", {"n": "timer"}, job_id="timer", delay_s=2.0)
    enqueued = time.time()

    number = await store.next_number()
    incident = Incident(id=f"INC-{number}", number=number, title="checkout 500s", reporter="U1",
                        origin_channel="C1", channel="C9")
    assert await store.create(incident)
    await store.mark_step(incident.id, "channel", "C9")
    assert await store.record_page(incident.id, "pd|pagerduty", PageRecord(dedup_key="pd", delivery="pagerduty", severity="P2", level=1, ok=True))
    await timeline.record(incident.id, "declared", actor="U1", text="declared P2")
    await timeline.record(incident.id, "message", entry_id="msg:C9:1.0", actor="U2", text="rolling back")
    return {"timer_enqueued_at": enqueued}


async def keys_under(redis: aioredis.Redis, ns: str) -> dict[str, str]:
    """Every key of the namespace, old or new layout, with its type."""
    found = {}
    for pattern in (f"{ns}:*", f"{{{ns}}}:*", f"{{{ns}:*"):
        async for key in redis.scan_iter(match=pattern, count=1000):
            found[key.decode()] = (await redis.type(key)).decode()
    return found


async def test_an_old_deployments_jobs_timers_dead_letters_and_incidents_carry_on_after_the_upgrade(
        redis: aioredis.Redis, raw_redis: aioredis.Redis, unique_name: str, tmp_path: Path) -> None:
    seeded = await seed_old_deployment(redis, unique_name, tmp_path)
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
    assert ran_at["timer"] >= seeded["timer_enqueued_at"] + 1.9  # the timer kept its due time
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


async def test_a_second_start_changes_nothing(redis: aioredis.Redis, raw_redis: aioredis.Redis, unique_name: str,
                                             tmp_path: Path) -> None:
    await seed_old_deployment(redis, unique_name, tmp_path)
    names = Names(unique_name, Queue(raw_redis, unique_name).key)
    assert await ensure_layout(raw_redis, names) is not None
    after_first = await keys_under(raw_redis, unique_name)

    assert await ensure_layout(raw_redis, names) is None  # the marker says layout 2
    await raw_redis.delete(f"{unique_name}:layout")  # and a full second pass finds nothing to rename either
    again = await ensure_layout(raw_redis, names)

    assert again is not None and not again.renamed and not again.kept
    assert await keys_under(raw_redis, unique_name) == after_first


async def test_processes_starting_together_rename_each_key_once(redis_url: str, raw_redis: aioredis.Redis,
                                                                redis: aioredis.Redis, unique_name: str,
                                                                tmp_path: Path) -> None:
    await seed_old_deployment(redis, unique_name, tmp_path)
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


async def test_every_process_migrates_before_it_starts(redis_url: str, redis: aioredis.Redis, tmp_path: Path) -> None:
    ns = namespace()
    await seed_old_deployment(redis, ns, tmp_path)
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
