"""A worker process SIGKILLed in the middle of a diagnosis: another worker finishes it, every result is posted
once, and the parent ends on its verdict. /healthz reports Redis going away."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bot.app.redis_server import free_port
from tests.app_harness import running_bot
from tests.servers import Reply, local_http_server

ROOT = Path(__file__).resolve().parent.parent


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bot", "worker", "--concurrency", "4"], env=env, cwd=ROOT,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


@pytest.mark.slow
async def test_worker_killed_mid_check_another_finishes_and_nothing_is_posted_twice(local_slack, redis_url,
                                                                                      tmp_path):
    routes = {"/fast": Reply(200), "/slow": Reply(200, delay_s=2.5)}
    with local_http_server(routes) as server:
        services = {"api": {"http": [{"url": server.url("/fast"), "samples": 1},
                                     {"url": server.url("/slow"), "samples": 1, "timeout_s": 5}]}}
        async with running_bot(local_slack, redis_url, tmp_path, services=services, workers=0,
                               job_visibility_timeout_s=2) as bot:
            first = start_worker(bot.worker_env(), tmp_path / "worker-1.log")
            try:
                assert "Queued 2 checks" in (await bot.command("/diagnose", "api")).json()["text"]
                deadline = time.monotonic() + 20
                while "/slow" not in server.hits:  # the slow check is running in the first worker
                    assert time.monotonic() < deadline, (tmp_path / "worker-1.log").read_text()[-2000:]
                    await asyncio.sleep(0.05)
                first.send_signal(signal.SIGKILL)
                first.wait(timeout=10)
            finally:
                if first.poll() is None:
                    first.kill()
            second = start_worker(bot.worker_env(), tmp_path / "worker-2.log")
            try:
                deadline = time.monotonic() + 30
                while not any(c.params.get("text", "").startswith("api:")
                              for c in local_slack.calls_to("chat.update")):
                    assert time.monotonic() < deadline, (tmp_path / "worker-2.log").read_text()[-3000:]
                    await asyncio.sleep(0.1)
                await bot.settle(timeout_s=20)
            finally:
                second.send_signal(signal.SIGTERM)
                second.wait(timeout=30)

            [parent] = bot.parents()
            replies = [r for r in local_slack.replies(bot.channel, parent.ts) if r.ts != parent.ts]
            assert sorted("/slow" in r.text for r in replies) == [False, True], [r.text for r in replies]
            assert local_slack.messages(bot.channel)[0].text.startswith("api:")
            assert server.hits.count("/slow") == 2  # probed again by the second worker: the first never finished
            assert (await bot.rt.queue.stats()).dead_letters == 0


async def test_healthz_fails_while_redis_is_down_and_recovers(local_slack, redis_server_factory, tmp_path):
    redis = redis_server_factory(aof=True)
    async with running_bot(local_slack, redis.url, tmp_path, services={"api": {}}, workers=0) as bot:
        assert (await bot.http.get(bot.base_url + "/healthz")).status_code == 200
        redis.stop()
        down = await bot.http.get(bot.base_url + "/healthz")
        assert down.status_code == 503 and "redis" in down.text
        redis.start()
        for _ in range(50):
            if (await bot.http.get(bot.base_url + "/healthz")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("/healthz did not recover after Redis came back")


async def test_healthz_fails_while_redis_url_names_a_demoted_primary(local_slack, redis_server_factory, tmp_path):
    """A plain REDIS_URL at a node that turned replica answers PING but refuses writes: not ready."""
    redis = redis_server_factory(aof=False)
    admin = aioredis.Redis.from_url(redis.url)
    async with running_bot(local_slack, redis.url, tmp_path, services={"api": {}}, workers=0) as bot:
        assert (await bot.http.get(bot.base_url + "/healthz")).status_code == 200
        await admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))  # demoted; its primary is gone
        demoted = await bot.http.get(bot.base_url + "/healthz")
        assert demoted.status_code == 503 and "not the primary" in demoted.json()["redis"]
        await admin.execute_command("REPLICAOF", "NO", "ONE")
        assert (await bot.http.get(bot.base_url + "/healthz")).status_code == 200
    await admin.aclose()
