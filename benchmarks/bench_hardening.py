"""Log bytes per rejected request: what an attacker who can reach the port gets into the log.

A real `chatops run --no-worker` in HTTP mode (one process, LOG_LEVEL=INFO, its stderr to a file), then waves of
requests that must all be refused: unsigned 10 MB posts to Slack's route (413), 10 MB alert deliveries with a
wrong token (401), and a flood of unsigned 100 KB posts under the size limit (401, the signature check). For each
wave: the answers' status codes and the bytes the log grew by, per request and against the bytes sent. Before
issue #12, Bolt logged every failed request's whole body: five 10 MB posts grew the log by 52 MB.

    .venv/bin/python -m benchmarks hardening

Target (issue #12): a failed signature logs one short line, and a flood is bounded (a few KB in all, not a
multiple of what was sent). Prints figures; not a test.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from bot.app.redis_server import RedisServer
from bot.slack.local import LocalSlack
from tests.app_harness import BOT_TOKEN, free_port
from tests.fixtures.slack import SLACK_TEST_SIGNING_SECRET

MB = 1024 * 1024
TOKEN = "bench-alert-token"


@contextlib.asynccontextmanager
async def bot_logging_to(log: Path, local: LocalSlack, redis_url: str, tmp: Path) -> AsyncIterator[int]:
    port = free_port()
    (tmp / "services.yml").write_text("services: {}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    env.update(SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SLACK_TEST_SIGNING_SECRET, SLACK_API_URL=local.url,
               REDIS_URL=redis_url, PORT=str(port), HTTP_WORKERS="1", LOG_LEVEL="INFO", ALERTMANAGER_TOKEN=TOKEN,
               CHATOPS_DATA_DIR=str(tmp / "data"), SERVICES_FILE=str(tmp / "services.yml"))
    with log.open("wb") as sink:
        server = subprocess.Popen([sys.executable, "-m", "bot", "run", "--no-worker"], env=env, stdout=sink,
                                  stderr=subprocess.STDOUT)
        try:
            await _wait_healthy(port)
            yield port
        except RuntimeError:
            print(log.read_text(errors="replace")[-3000:])
            raise
        finally:
            server.terminate()
            server.wait(timeout=30)


async def _wait_healthy(port: int) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        for _ in range(300):
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError("chatops run did not become healthy")


async def wave(port: int, log: Path, path: str, body: bytes, n: int, headers: dict[str, str]) -> str:
    """`n` posts of `body` to `path`, one after another; the status codes seen and the log's growth."""
    await asyncio.sleep(0.3)  # the previous wave's last line is written
    before = log.stat().st_size
    codes: collections.Counter[int] = collections.Counter()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
        for _ in range(n):
            codes[(await http.post(path, content=body, headers=headers)).status_code] += 1
    await asyncio.sleep(0.3)
    grown = log.stat().st_size - before
    sent = len(body) * n
    answers = ", ".join(f"{count} × {code}" for code, count in sorted(codes.items()))
    return (f"{n:>4} × {len(body) / MB:5.1f} MB to {path:<20} → {answers:<10} log +{grown:,} bytes "
            f"({grown / n:,.0f} per request; {grown / sent:.2e} of the bytes sent)")


async def main() -> None:
    json_type = {"content-type": "application/json"}
    form = {"content-type": "application/x-www-form-urlencoded"}
    with tempfile.TemporaryDirectory() as tmp_dir, RedisServer(Path(tmp_dir) / "redis") as redis, \
            LocalSlack(bot_token=BOT_TOKEN) as local:
        tmp, log = Path(tmp_dir), Path(tmp_dir) / "chatops.log"
        async with bot_logging_to(log, local, redis.url, tmp) as port:
            print("   log bytes per rejected request, `chatops run` in HTTP mode, LOG_LEVEL=INFO:")
            print("  ", await wave(port, log, "/slack/events", b"x" * (10 * MB), 5, json_type))
            print("  ", await wave(port, log, "/hooks/alertmanager", b"[" * (10 * MB), 5,
                                   {**json_type, "authorization": "Bearer wrong"}))
            forged = b"text=%0A12:00:00 ERROR bot.incidents: INC-1 resolved by U1"
            print("  ", await wave(port, log, "/slack/events", forged, 50, form))
            print("  ", await wave(port, log, "/slack/events", b"text=" + b"y" * 100_000, 200, form))
        forged_lines = [line for line in log.read_text(errors="replace").splitlines()
                        if line.startswith("12:00:00 ERROR")]
        print(f"   forged log lines that became lines of their own: {len(forged_lines)}")


if __name__ == "__main__":
    asyncio.run(main())
