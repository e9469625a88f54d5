"""The bot on a three-primary Redis Cluster (tests/redis_cluster.py), with REDIS_URL naming one node.

The tests imported below are the queue, incident, escalation and end-to-end tests that matter, collected here a
second time with `redis_url` and `redis` pointing at the cluster; a cluster refuses any script, transaction or
multi-key command whose keys span slots, so passing here is the proof. The first test checks the same rule on a
single node, where nothing would refuse it: every Lua script call's keys hash to one slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from bot.queue import Queue, batch, lease
from bot.queue.connection import DURABILITY, NoReplicasError, connect, durable, initialized
from bot.settings import load_settings
from tests.test_diagnose_e2e import (  # noqa: F401
    test_failing_slow_and_dead_targets_are_told_apart_in_the_thread,
    test_healthy_service_gets_parent_thread_and_green_verdict,
    test_second_diagnose_of_same_target_joins_the_running_one,
)
from tests.test_escalation import test_an_unacknowledged_p0_reaches_the_managers_after_its_timeout  # noqa: F401
from tests.test_incidents import (  # noqa: F401
    test_declaring_opens_a_channel_with_pinned_header_topic_people_announcement_page_and_diagnosis,
    test_every_change_updates_the_header_and_the_timeline_with_who_and_when,
    test_without_channel_creation_the_incident_lives_in_a_thread_here,
)
from tests.test_queue import (  # noqa: F401
    queue,
    test_a_cancelled_delayed_job_never_runs_and_its_id_is_free_again,
    test_a_claimed_enqueue_queues_once_and_tells_later_callers_who_holds_the_claim,
    test_a_dead_letter_can_be_replayed_as_a_fresh_job,
    test_a_dead_workers_job_is_released_without_waiting_for_the_visibility_timeout,
    test_a_delayed_job_runs_at_its_time_not_before,
    test_a_failing_job_is_retried_with_backoff_and_then_succeeds,
    test_a_job_failing_every_time_ends_in_the_dead_letters_with_its_last_error,
    test_a_trigger_arriving_while_the_job_runs_schedules_one_more_run,
    test_an_enqueued_job_reaches_its_handler_once_with_kind_payload_and_attempt,
    test_finished_jobs_are_deleted_from_the_stream_so_it_does_not_grow,
    test_stats_tell_depth_pending_age_delayed_and_dead_letters,
    test_stop_releases_a_job_that_outlives_the_grace_and_another_worker_finishes_it,
)
from tests.test_queue import FAST_RETRY, eventually, recorder, running, worker_for

pytestmark = pytest.mark.cluster


@pytest.fixture
def redis_url(redis_cluster_url: str) -> str:
    return redis_cluster_url


@pytest.fixture
def engine_url(request: pytest.FixtureRequest, redis_cluster_url: str) -> str:
    """The cluster, for the queue tests parametrised by engine (ON_VALKEY); their Valkey run is a single node's."""
    if getattr(request, "param", "redis") == "valkey":
        pytest.skip("the Valkey run of this test is on a single node (tests/test_queue.py)")
    return redis_cluster_url


@pytest.fixture
async def redis(engine_url: str) -> AsyncIterator[RedisCluster]:
    client = RedisCluster.from_url(engine_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


async def test_concurrent_first_commands_of_an_initialized_client_reach_the_right_nodes(
        redis_cluster: list[Any], redis_cluster_url: str, unique_name: str) -> None:
    """Six workers start at once on a new client: each creates its queue's group. Initialized first, no command is
    redirected (a MOVED makes redis-py reload its slot map and drop connections other tasks are using)."""
    def redirected() -> int:
        return sum(n.client.info("commandstats").get("cmdstat_xgroup|create", {}).get("rejected_calls", 0)
                   for n in redis_cluster)

    before = redirected()
    client = await initialized(connect(load_settings(redis_url=redis_cluster_url)))
    try:
        queues = [Queue(client, f"{unique_name}:{n}") for n in range(12)]
        await asyncio.gather(*(q.ensure_group() for q in queues))
        assert len({client.get_node_from_key(q.stream_key).name for q in queues}) > 1
    finally:
        await client.aclose()
    assert redirected() == before


async def test_the_client_finds_the_cluster_from_one_node_by_itself(redis_cluster_url: str) -> None:
    client = connect(load_settings(redis_url=redis_cluster_url))
    try:
        assert isinstance(client, RedisCluster)
        assert await client.ping()
        assert len({(n.host, n.port) for n in client.get_primaries()}) == 3
    finally:
        await client.aclose()


async def test_a_burst_of_enqueues_on_several_queues_lands_on_several_shards(redis: RedisCluster,
                                                                              unique_name: str) -> None:
    """The batcher pipelines a burst across queues; each queue's keys sit in its own slot, spread over nodes."""
    queues = [Queue(redis, f"{unique_name}:{n}") for n in range(12)]
    ids = [await q.enqueue("k", {"n": n}) for n, q in enumerate(queues)]
    assert all(ids)
    shards = {redis.get_node_from_key(q.stream_key).name for q in queues}
    assert len(shards) >= 2
    assert [(await q.stats()).depth for q in queues] == [1] * 12


def wait_calls(nodes: list[Any]) -> dict[int, int]:
    """WAIT commands each node has served, by port."""
    return {n.port: n.client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0) for n in nodes}


async def test_a_durable_write_waits_for_the_replica_of_the_primary_owning_its_slot(
        redis_cluster_with_replicas: list[Any], unique_name: str) -> None:
    """REDIS_WAIT_REPLICAS=1 on a cluster with a replica per primary: a timer's enqueue sends WAIT to the primary
    holding the queue's slot (only there), and that primary's replica acknowledges it."""
    nodes = redis_cluster_with_replicas
    url = f"redis://127.0.0.1:{nodes[1].port}"
    client = await initialized(connect(load_settings(redis_url=url, redis_wait_replicas=1)))
    try:
        queues = [Queue(client, f"{unique_name}:{n}") for n in range(6)]
        owners = {client.get_node_from_key(q.stream_key).port for q in queues}
        assert len(owners) > 1  # the timers' slots are on several primaries
        for q in queues:
            before, waits, short = wait_calls(nodes), DURABILITY.waits, DURABILITY.short
            await q.enqueue("escalate", {}, delay_s=60)
            owner = client.get_node_from_key(q.stream_key).port
            sent = {port: n - before[port] for port, n in wait_calls(nodes).items() if n > before[port]}
            assert sent == {owner: 1}
            assert (DURABILITY.waits - waits, DURABILITY.short - short) == (1, 0)  # acknowledged, not short
            marker = f"{q.stream_key}:durable"  # what enqueue() waits on: in the timer's own slot
            assert key_slot(marker.encode()) == key_slot(q.delayed_key.encode())
            assert await durable(client, marker, "a timer") >= 1
    finally:
        await client.aclose()


async def test_without_replicas_asked_a_durable_write_sends_no_wait(redis_cluster: list[Any],
                                                                   redis_cluster_url: str, unique_name: str) -> None:
    """REDIS_WAIT_REPLICAS unset: a cluster's primaries may have no replicas, so durable() waits for none."""
    settings = load_settings(redis_url=redis_cluster_url)
    assert settings.wait_replicas == 0
    client = await initialized(connect(settings))
    try:
        before = wait_calls(redis_cluster)
        await Queue(client, unique_name).enqueue("escalate", {}, delay_s=60)
        assert await durable(client, f"{{{unique_name}}}:stream:durable", "a timer") is None
    finally:
        await client.aclose()
    assert wait_calls(redis_cluster) == before


# -- every script call's keys hash to one slot, checked on a single node ----------------------------------------


class SlotRecorder:
    """Every EVAL/EVALSHA a client sends, plain, pipelined or batched (bot/queue/batch.py), as the list of its keys'
    slots."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, set[int]]] = []

    def note(self, args: tuple[Any, ...]) -> None:
        if str(args[0]).upper() in ("EVAL", "EVALSHA"):
            keys = [str(k) for k in args[3:3 + int(args[2])]]
            self.calls.append((",".join(keys), {key_slot(k.encode()) for k in keys}))


def recording_client(url: str, seen: SlotRecorder, monkeypatch: pytest.MonkeyPatch) -> aioredis.Redis:
    pack = batch.packed

    def recorded(commands: Any) -> bytes:
        commands = list(commands)
        for command in commands:
            seen.note(tuple(command))
        return pack(commands)

    monkeypatch.setattr(batch, "packed", recorded)  # the batcher packs a batch itself on a single Redis

    class RecordingPipeline(Pipeline):
        def execute_command(self, *args: Any, **options: Any) -> Any:
            seen.note(args)
            return super().execute_command(*args, **options)

    class RecordingRedis(aioredis.Redis):
        async def execute_command(self, *args: Any, **options: Any) -> Any:
            seen.note(args)
            return await super().execute_command(*args, **options)

        def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
            return RecordingPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)

    return RecordingRedis.from_url(url, decode_responses=True)


async def test_every_script_call_touches_keys_of_one_slot(redis_server_factory: Any, unique_name: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    seen = SlotRecorder()
    client = recording_client(redis_server_factory(aof=False).url, seen, monkeypatch)
    try:
        q = Queue(client, unique_name, visibility_timeout_s=5, max_deliveries=2, retry=FAST_RETRY)
        done, handler = recorder()

        async def fails(job: Any) -> None:
            raise RuntimeError("boom")

        await q.enqueue("ok", {}, job_id="guarded")
        await q.enqueue("ok", {}, delay_s=0.01)
        await q.enqueue("later", {}, job_id="timer", delay_s=60)
        await q.cancel("timer")
        await q.enqueue_claimed(q.key("active", "C1"), "run", 30, "ok", {}, job_id="run:start")
        await q.enqueue("fails", {}, job_id="doomed")
        async with running(worker_for(q, {"ok": handler, "fails": fails})):
            await eventually(lambda: q.dead_letters())  # failed, retried, failed again
        dead = await q.dead_letters()
        assert await q.replay_dead_letter(dead[0]["id"]) == "doomed"
        await q.stats()
        async with lease.held(client, f"{unique_name}:lease", wait_s=1):
            pass
        assert len(done) == 3
    finally:
        await client.aclose()
    scripts = {keys for keys, _ in seen.calls}
    assert len(scripts) >= 8  # enqueue, move_due, started, ack, fail, cancel, snapshot, replay, lease release
    assert any(keys.endswith(":active:C1") for keys in scripts)  # the claim-and-enqueue, sent batched
    assert [(keys, slots) for keys, slots in seen.calls if len(slots) > 1] == []


async def test_a_primary_refusing_writes_for_want_of_replicas_is_named_on_a_cluster_too(
        redis_cluster: list[Any], redis_cluster_url: str, unique_name: str) -> None:
    """NOREPLICAS (a primary cut off from its replicas, `min-replicas-to-write`) is a NoReplicasError on a cluster
    as on a single Redis: the refusal the worker tells apart from a command's own error."""
    client = await initialized(connect(load_settings(redis_url=redis_cluster_url)))
    primary = next(n for n in redis_cluster if n.port == client.get_node_from_key(unique_name).port)
    try:
        primary.client.config_set("min-replicas-to-write", 1)  # these primaries have no replica
        with pytest.raises(NoReplicasError):
            await client.set(unique_name, "1")
    finally:
        primary.client.config_set("min-replicas-to-write", 0)
        await client.aclose()
