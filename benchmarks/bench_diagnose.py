"""`/diagnose` figures: slash-command ack latency under 200 concurrent signed requests (HTTP mode, loopback), and
the overhead of a diagnosis — wall time of 10 checks that each take 300 ms, divided by 300 ms.

    .venv/bin/python -m benchmarks.bench_diagnose

Targets (issue #2): ack p99 < 100 ms (Slack allows 3,000); overhead ratio ≤ 1.2. Prints figures; not a test.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import yaml

from bot.localslack import LocalSlack
from bot.redis_server import RedisServer
from checks.runner import run_service
from bot.services import parse_services
from tests.app_harness import BOT_TOKEN, free_port, running_bot
from tests.fixtures.slack import SLACK_TEST_SIGNING_SECRET, signed_headers
from tests.servers import Reply, local_http_server

CHECK_S = 0.3


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def ack_latency(local: LocalSlack, redis_url: str, tmp: Path, n: int = 200) -> list[float]:
    """200 signed /diagnose commands at once against `chatops run --no-worker` in HTTP mode (its own process, so
    the client does not share the server's event loop), each in its own channel so each really queues a run."""
    services = tmp / "bench-services.yml"
    services.write_text(yaml.safe_dump({"services": {"api": {"http": [{"url": "http://127.0.0.1:9/"}]}}}))
    port = free_port()
    env = {**os.environ, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SLACK_TEST_SIGNING_SECRET,
           "SLACK_API_URL": local.url, "REDIS_URL": redis_url, "SERVICES_FILE": str(services), "PORT": str(port),
           "LOG_LEVEL": "WARNING"}
    env.pop("SLACK_APP_TOKEN", None)
    server = subprocess.Popen([sys.executable, "-m", "bot", "run", "--no-worker"], env=env)
    try:
        async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=n)) as http:
            await _wait_healthy(http, port)

            async def one(i: int, channel: str) -> float:
                body = urlencode({"command": "/diagnose", "text": "api", "channel_id": channel, "user_id": "U1",
                                  "team_id": "T0LOCAL", "user_name": "u", "channel_name": "c",
                                  "response_url": local.response_url(), "trigger_id": f"t{i}"})
                headers = signed_headers(body, SLACK_TEST_SIGNING_SECRET)
                started = time.perf_counter()
                response = await http.post(f"http://127.0.0.1:{port}/slack/events", content=body, headers=headers)
                elapsed = (time.perf_counter() - started) * 1000
                assert response.status_code == 200 and "Queued" in response.text, response.text
                return elapsed

            await asyncio.gather(*(one(i, f"CWARM{i}") for i in range(20)))  # connections, Bolt's auth.test
            return list(await asyncio.gather(*(one(i, f"CBENCH{i}") for i in range(n))))
    finally:
        server.terminate()
        server.wait(timeout=20)


async def _wait_healthy(http: httpx.AsyncClient, port: int) -> None:
    for _ in range(200):
        try:
            if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("the bot did not become healthy")


async def diagnosis_overhead(local: LocalSlack, redis_url: str, tmp: Path, runs: int = 5) -> tuple[list, list]:
    routes = {f"/c{i}": Reply(200, delay_s=CHECK_S) for i in range(10)}
    with local_http_server(routes) as server:
        spec = {"http": [{"url": server.url(f"/c{i}"), "samples": 1, "timeout_s": 5} for i in range(10)]}
        in_process = []
        service = parse_services({"services": {"api": spec}}).services["api"]
        for _ in range(runs):
            started = time.perf_counter()
            results = await run_service("api", service)
            assert all(r.status.value == "ok" for r in results), [r.summary for r in results]
            in_process.append((time.perf_counter() - started) / CHECK_S)
        through_queue = []
        async with running_bot(local, redis_url, tmp, services={"api": spec}, slack_channel_burst=5) as bot:
            for _ in range(runs):
                before = len(local.calls_to("chat.update"))
                started = time.perf_counter()
                await bot.command("/diagnose", "api")
                while not any("looks healthy" in c.params.get("text", "")
                              for c in local.calls_to("chat.update")[before:]):
                    await asyncio.sleep(0.005)
                through_queue.append((time.perf_counter() - started) / CHECK_S)
                await bot.settle()
        return in_process, through_queue


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis", aof=True) as redis, \
            LocalSlack(bot_token="xoxb-test-token") as local:
        latencies = await ack_latency(local, redis.url, Path(tmp))
        print(f"/diagnose ack latency, {len(latencies)} concurrent signed requests (HTTP mode, loopback): "
              f"p50 {pct(latencies, 50):.1f} ms, p99 {pct(latencies, 99):.1f} ms, max {max(latencies):.1f} ms "
              f"(target p99 < 100 ms)")
        in_process, through_queue = await diagnosis_overhead(local, redis.url, Path(tmp))
        print(f"diagnosis overhead, 10 checks x {CHECK_S * 1000:.0f} ms: in-process runner ratio "
              f"{statistics.median(in_process):.2f}; command → verdict through queue, worker and Slack ratio "
              f"{statistics.median(through_queue):.2f} (median of {len(through_queue)}; target ≤ 1.2)")


if __name__ == "__main__":
    asyncio.run(main())
