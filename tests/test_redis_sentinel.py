"""The queue on a Sentinel-managed Redis: a worker and a producer built by `connect()` from the Sentinel settings
follow a promoted replica by themselves, nothing queued before the kill is lost or run twice, timers fire, and a
READONLY reply from a demoted primary is retried, never dead-lettered. Then the real processes (`chatops run`,
`chatops worker`, `chatops postmortem`) given only the Sentinel settings, through a failover."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import redis.asyncio as aioredis
from redis._parsers.encoders import Encoder
import yaml
from redis.exceptions import ReadOnlyError, ResponseError

from bot.app.http_server import health
from bot.queue import Job, Queue, Worker
from bot.app.redis_server import find_redis_server
from bot.queue.batch import Batcher
from bot.queue.connection import DURABILITY, PARSER, SINGLE_RETRIES, NoReplicasError, _Parser, connect
from bot.runtime import create_runtime
from bot.settings import Settings
from bot.slack.local.payloads import signed_headers, slash_command_body
from tests.app_harness import BOT_TOKEN, free_port
from tests.fixtures.slack import SLACK_TEST_SIGNING_SECRET
from tests.redis_topologies import SentinelTopology
from tests.servers import Reply, local_http_server
from tests.test_http_workers import ROOT, http_server_processes

pytestmark = pytest.mark.slow


def sentinel_settings(topology: SentinelTopology, **extra: object) -> Settings:
    env = {k.lower(): v for k, v in topology.env().items()}
    return Settings.from_env(**env, **extra)  # type: ignore[arg-type]


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


async def test_noreplicas_from_an_isolated_primary_is_retried_not_dead_lettered(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A primary with min-replicas-to-write 1 and no replica (what a primary cut off from its replicas is) refuses
    every write with NOREPLICAS. Jobs running when that starts are run again, not failed, with one warning for
    the whole outage; once a replica follows the primary they finish, each once, and nothing is dead-lettered."""
    topology = SentinelTopology(tmp_path, free_port(), free_port(), [])
    binary = find_redis_server()
    topology.start_primary(binary)
    redis = connect(Settings.from_env(redis_url=f"redis://127.0.0.1:{topology.primary}"))
    queue = Queue(redis, "nr", max_deliveries=1)
    refusing, tries = asyncio.Event(), Counter[str]()

    async def write(job: Job) -> None:
        if not refusing.is_set():  # the replicas are gone from here on: every write is refused
            await redis.config_set("min-replicas-to-write", 1)
            refusing.set()
        tries[job.id] += 1
        await redis.rpush("nr:done", job.id)

    ids = [await queue.enqueue("write", {"n": n}) for n in range(6)]
    worker = Worker(queue, {"write": write}, concurrency=3)
    try:
        running = asyncio.create_task(worker.run_until_idle(timeout_s=30))
        await refusing.wait()
        with pytest.raises(NoReplicasError):
            await redis.set("nr:probe", "1")  # named, not a bare ResponseError: retried, then raised as NOREPLICAS
        await wait_for(lambda: max(tries.values()) > 1, 10)  # the refusal outlasted the client's own retries
        await asyncio.to_thread(topology.start_replica, binary)
        await running
        done = [d.decode() for d in await redis.lrange("nr:done", 0, -1)]
        dead = await queue.dead_letters()
    finally:
        await redis.aclose()
        topology.stop()
    assert sorted(done) == sorted(ids)  # each once: a refused write did nothing
    assert dead == [] and worker.stats["jobs_dead_lettered"] == 0
    warned = [r for r in caplog.records if "too few replicas" in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in warned]


def primary_and_replica(tmp_path: Path) -> SentinelTopology:
    """A primary and its replica in sync, no sentinels: nothing but the test promotes the replica."""
    topology = SentinelTopology(tmp_path, free_port(), free_port(), [])
    binary = find_redis_server()
    topology.start_primary(binary)
    topology.start_replica(binary)
    return topology


async def refusals(node: aioredis.Redis) -> int:
    """READONLY replies the node has sent so far."""
    return (await node.info("errorstats")).get("errorstat_READONLY", {}).get("count", 0)


async def test_a_batched_claim_and_enqueue_refused_by_a_replica_is_sent_again_and_runs_once(tmp_path: Path) -> None:
    """REDIS_URL names a node that is a replica when a burst's claim-and-enqueue and enqueue go out as one batch
    (a primary demoted a moment ago, about to be promoted again): the node answers READONLY, the batch is sent
    again on a fresh connection, as a plain call is, and once the node is promoted each call runs exactly once."""
    topology = primary_and_replica(tmp_path)
    redis = connect(Settings.from_env(redis_url=f"redis://127.0.0.1:{topology.replica}"))
    node = aioredis.Redis(port=topology.replica)
    queue = Queue(redis, "ro-batch")

    async def promote_at_the_first_refusal() -> None:
        while not await refusals(node):
            await asyncio.sleep(0.002)
        await node.execute_command("REPLICAOF", "NO", "ONE")

    promoting = asyncio.create_task(promote_at_the_first_refusal())
    try:
        claimed, queued = await asyncio.gather(  # one turn of the loop: one batch
            queue.enqueue_claimed(queue.key("claim", "C1"), "mine", 60, "diagnose", {"n": 1}),
            queue.enqueue("diagnose", {"n": 2}))
        await promoting
        entries = await node.xrange(queue.stream_key)
        held = await node.get(queue.key("claim", "C1"))
        refused = await refusals(node)
    finally:
        promoting.cancel()
        await node.aclose()
        await redis.aclose()
        topology.stop()
    assert refused >= 1  # the batch was refused at least once, and sent again
    assert claimed == "mine" and held == b"mine" and queued is not None
    assert sorted(json.loads(e[b"p"])["n"] for _, e in entries) == [1, 2]  # each once: the refused try wrote nothing


async def test_a_batch_a_replica_keeps_refusing_answers_each_call_with_its_own_reply(tmp_path: Path) -> None:
    """Once the client's bounded retry gives up, the refused write gets READONLY and the read sent with it its
    value, as each would alone; what the replica refused, it never wrote."""
    topology = primary_and_replica(tmp_path)
    await aioredis.Redis(port=topology.primary).set("ro:read", "v")
    redis = connect(Settings.from_env(redis_url=f"redis://127.0.0.1:{topology.replica}"))
    batcher = Batcher(redis)
    script = redis.register_script("redis.call('GET', KEYS[1]); redis.call('SET', KEYS[1], 'x'); return 1")
    try:
        await wait_for_replication(redis, "ro:read")
        write, read = await asyncio.gather(batcher.call(script, ["ro:write"], []), batcher.command("GET", "ro:read"),
                                           return_exceptions=True)
        written = await redis.exists("ro:write")
        refused = await refusals(redis)
    finally:
        await redis.aclose()
        topology.stop()
    assert isinstance(write, ReadOnlyError) and read == b"v"
    assert refused == SINGLE_RETRIES + 1 and written == 0  # every try was refused, and none wrote


async def wait_for_replication(redis: aioredis.Redis, key: str) -> None:
    deadline = time.monotonic() + 10
    while not await redis.exists(key):
        assert time.monotonic() < deadline, f"{key} not replicated within 10 s"
        await asyncio.sleep(0.02)


# -- the real processes ---------------------------------------------------------------------------------------


def slash(local_slack, port: int, command: str, text: str, channel: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    body = slash_command_body(command, text, channel_id=channel, trigger_id=uuid.uuid4().hex,
                              response_url=local_slack.response_url(channel=channel))
    return httpx.post(f"http://127.0.0.1:{port}/slack/events", content=body, timeout=10,
                      headers={**signed_headers(body, SLACK_TEST_SIGNING_SECRET), "Connection": "close",
                               "Content-Type": "application/x-www-form-urlencoded"})


def diagnosed(local_slack, channel: str) -> bool:  # type: ignore[no-untyped-def]
    """The diagnosis' message in `channel` carries its verdict (`api: ...`)."""
    return any(c.params.get("channel") == channel and c.params.get("text", "").startswith("api:")
               for c in local_slack.calls_to("chat.update"))


def incident_channel(local_slack, title_word: str) -> str | None:  # type: ignore[no-untyped-def]
    """The incident's own channel, once its header is posted there."""
    for channel in local_slack.channels():
        if title_word in channel["name"] and local_slack.messages(channel["id"]):
            return channel["id"]
    return None


def status(port: int, path: str = "/healthz") -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5, headers={"Connection": "close"}).status_code
    except httpx.TransportError:
        return None


def wait(check, timeout_s: float, what: str, logs: Path | None = None):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s\n" + (
            logs.read_text()[-3000:] if logs else "")
        time.sleep(0.1)
    return result


def test_chatops_run_and_worker_with_only_sentinel_settings_ride_out_a_failover(
        sentinel_topology: SentinelTopology, local_slack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`chatops run` (HTTP mode) and a `chatops worker` given REDIS_SENTINELS / REDIS_SENTINEL_MASTER and no
    REDIS_URL. The primary is SIGKILLed while a diagnosis and a P1 declaration are being handled: /healthz goes
    503, and after the promotion, without restarting anything, it is 200 again and a new /diagnose and a new
    /incident P1 are acked and handled end to end within 15 s; `chatops postmortem` finds the first incident."""
    ops = local_slack.add_channel("ops", members=["U1"])
    with local_http_server({"/health": Reply(200, delay_s=0.5)}) as target:
        services = tmp_path / "services.yml"
        services.write_text(yaml.safe_dump({"services": {"api": {"http": [{"url": target.url("/health"),
                                                                          "samples": 2}]}}}))
        settings = {**sentinel_topology.env(), "SERVICES_FILE": str(services)}
        with http_server_processes(local_slack, None, tmp_path, "--no-worker", **settings) as (server, port):
            wait(lambda: status(port) == 200, 30, "chatops run serves")
            env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "REDIS_URL"))}
            env.update(settings, SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_API_URL=local_slack.url, REDIS_NAMESPACE=f"hw{port}",
                       WORKER_METRICS_PORT=str(worker_port := free_port()), CHATOPS_DATA_DIR=str(tmp_path / "data"))
            log = tmp_path / "worker.log"
            worker = subprocess.Popen([sys.executable, "-m", "bot", "worker"], env=env, cwd=ROOT,
                                      stdout=log.open("w"), stderr=subprocess.STDOUT)
            try:
                wait(lambda: status(worker_port) == 200, 30, "chatops worker serves", log)
                assert "Queued 1 checks" in slash(local_slack, port, "/diagnose", "api", "C1").text
                assert "Declaring *INC-1* (P1)" in slash(local_slack, port, "/incident", "Checkout down P1", "C1").text
                wait(lambda: target.hits, 10, "the first diagnosis is probing", log)

                old = sentinel_topology.kill_primary()  # mid-work: the diagnosis and the declaration are running
                with ThreadPoolExecutor(2) as pool:  # both at once: each waits up to 2 s, promotion takes about 2 s
                    assert list(pool.map(status, [port, worker_port])) == [503, 503]  # no primary reachable
                sentinel_topology.wait_promoted(old)
                promoted_at = time.monotonic()

                assert "Queued 1 checks" in slash(local_slack, port, "/diagnose", "api", ops).text
                assert "Declaring *INC-2* (P1)" in slash(local_slack, port, "/incident", "Search gone P1", ops).text
                wait(lambda: diagnosed(local_slack, ops) and incident_channel(local_slack, "search"), 15,
                     "the new /diagnose and /incident handled", log)
                handled_s = time.monotonic() - promoted_at
                assert handled_s < 15
                wait(lambda: status(port) == 200 and status(worker_port) == 200, 10, "/healthz 200 again", log)
                wait(lambda: diagnosed(local_slack, "C1") and incident_channel(local_slack, "checkout"), 15,
                     "the work in flight at the kill finished", log)
                print(f"promotion → new commands handled end to end: {handled_s:.1f} s")
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.wait(30)
            assert worker.returncode == 0 and "Traceback" not in log.read_text(), log.read_text()[-3000:]

            postmortem = subprocess.run([sys.executable, "-m", "bot", "postmortem", "INC-1"], env=env, cwd=ROOT,
                                        capture_output=True, text=True, timeout=60)
            assert postmortem.returncode == 0, postmortem.stderr[-2000:]
            assert "Checkout down" in postmortem.stdout


@pytest.mark.parametrize("parser", sorted({_Parser, PARSER}, key=lambda p: p.__name__))
async def test_each_reply_parser_names_a_refused_write(parser: type) -> None:
    """With hiredis (a dependency) or without it, replies read off the wire give the same errors: NOREPLICAS a
    NoReplicasError the retry knows, READONLY a ReadOnlyError, a script's own error a plain ResponseError, and the
    replies around them their values."""
    wire = (b"-NOREPLICAS Not enough good replicas to write.\r\n"
            b"-READONLY You can't write against a read only replica.\r\n"
            b"-ERR Error running script (call to f_1): user_script:1: boom\r\n"
            b"$5\r\nINC-7\r\n"
            b"*2\r\n$4\r\nheld\r\n_\r\n")
    stream = asyncio.StreamReader()
    stream.feed_data(wire)
    reader = parser(socket_read_size=65536)
    reader.on_connect(SimpleNamespace(_reader=stream, encoder=Encoder("utf-8", "strict", decode_responses=False)))
    replies = [await reader.read_response() for _ in range(5)]
    assert [type(r) for r in replies[:3]] == [NoReplicasError, ReadOnlyError, ResponseError]
    assert replies[3:] == [b"INC-7", [b"held", None]]
