"""The whole bot in one test process, with real parts at every boundary.

- Slack: the local Slack Web API (a real HTTP server) via `SLACK_API_URL`; inbound requests signed like Slack's
  and sent to a real uvicorn server on a free port.
- Redis: the session's real server; every harness gets its own namespace, so tests never see each other's keys.
- Probed services: whatever the test serves locally and writes into the services file.

    async with running_bot(local_slack, redis_url, tmp_path, services={...}) as bot:
        response = await bot.command("/diagnose", "api")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import yaml

from bot.app.bolt import create_app
from bot.app.features import create_full_runtime
from bot.app.http_server import create_asgi, serve
from bot.app.jobs import job_handlers
from bot.queue import Worker
from bot.runtime import Runtime
from bot.settings import Settings
from bot.slack.local.rate_limits import POST_BURST
from checks.schema import Secret
from tests.fixtures.slack import SLACK_TEST_SIGNING_SECRET, signed_headers

BOT_TOKEN = "xoxb-test-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningBot:
    rt: Runtime
    local: Any
    base_url: str
    http: httpx.AsyncClient
    channel: str
    workers: list[Worker] = field(default_factory=list)

    async def post_signed(self, path: str, body: str, content_type: str, **headers: str) -> httpx.Response:
        signed = signed_headers(body, SLACK_TEST_SIGNING_SECRET, content_type=content_type)
        return await self.http.post(self.base_url + path, content=body.encode(), headers={**signed, **headers})

    async def command(self, command: str, text: str, *, user: str = "U1", channel: str | None = None,
                      trigger_id: str | None = None) -> httpx.Response:
        body = urlencode({
            "token": "x", "team_id": "T0LOCAL", "channel_id": channel or self.channel, "channel_name": "general",
            "user_id": user, "user_name": user.lower(), "command": command, "text": text,
            "response_url": self.local.response_url(), "trigger_id": trigger_id or uuid.uuid4().hex,
            "api_app_id": "ATEST",
        })
        response = await self.post_signed("/slack/events", body, "application/x-www-form-urlencoded")
        if response.headers.get("content-type", "").startswith("application/json"):
            refused = self.local.check_reply(response.json())  # the ack is a message too: Slack judges it alike
            assert refused is None, f"Slack would not show this answer to {command} {text}: {refused}"
        return response

    async def event(self, event: dict, *, event_id: str | None = None) -> httpx.Response:
        envelope = {"type": "event_callback", "team_id": "T0LOCAL", "api_app_id": "ATEST",
                    "event_id": event_id or f"Ev{uuid.uuid4().hex[:10]}", "event_time": int(time.time()),
                    "event": event}
        return await self.post_signed("/slack/events", json.dumps(envelope), "application/json")

    def worker_env(self) -> dict[str, str]:
        """Environment for a `chatops worker` subprocess that serves this bot: same Slack, Redis and namespace."""
        settings = self.rt.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "REDIS_"))}
        env.update(SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_API_URL=str(settings.slack_api_url),
                   REDIS_URL=settings.redis_url or "", REDIS_NAMESPACE=settings.redis_namespace,
                   SERVICES_FILE=str(settings.services_file), LOG_LEVEL="INFO",
                   JOB_VISIBILITY_TIMEOUT_S=str(settings.job_visibility_timeout_s),
                   DIAGNOSE_UPDATE_INTERVAL_S=str(settings.diagnose_update_interval_s),
                   SLACK_CHANNEL_BURST=str(settings.slack_channel_burst))
        return env

    async def settle(self, timeout_s: float = 20.0, quiet_s: float = 0.5) -> None:
        await settle_queue(self.rt, timeout_s=timeout_s, quiet_s=quiet_s, due_within_s=3.0)

    def parents(self) -> list[Any]:
        return [m for m in self.local.messages(self.channel) if not m.thread_ts or m.thread_ts == m.ts]


async def settle_queue(rt: Runtime, *, timeout_s: float, quiet_s: float, due_within_s: float) -> None:
    """Wait until no job is ready, running, or due within `due_within_s`, for `quiet_s` in a row (delayed jobs
    further away, like hour-long escalation timers, don't count)."""
    if not await rt.queue.wait_quiet(quiet_s=quiet_s, timeout_s=timeout_s, poll_s=0.03, due_within_s=due_within_s):
        raise TimeoutError(f"queue still busy after {timeout_s}s: {await rt.queue.stats()}")


def write_services(path: Path, services: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"services": services}))
    return path


@contextlib.asynccontextmanager
async def running_bot(local: Any, redis_url: str, tmp_path: Path, *, services: dict[str, Any],
                      workers: int = 1, **overrides: Any) -> AsyncIterator[RunningBot]:
    services_file = write_services(tmp_path / f"services-{uuid.uuid4().hex[:6]}.yml", services)
    settings = Settings.from_env(
        slack_bot_token=Secret(BOT_TOKEN), slack_signing_secret=Secret(SLACK_TEST_SIGNING_SECRET),
        slack_api_url=local.url, redis_url=redis_url, services_file=services_file,
        # Posts paced at Slack's own per-channel burst, which the local Slack enforces.
        **{"slack_channel_burst": POST_BURST, "redis_namespace": f"t{uuid.uuid4().hex[:10]}",
           "diagnose_update_interval_s": 0.2, "job_visibility_timeout_s": 5,
           **overrides},
    )
    rt = await create_full_runtime(settings, redis_url=redis_url)
    for user in ("U1", "U2"):
        local.add_user(user, user.lower())
    channel = local.add_channel(f"general-{uuid.uuid4().hex[:6]}", members=["U1", "U2"])
    port = free_port()
    stop = asyncio.Event()
    server = asyncio.create_task(serve(create_asgi(create_app(rt), rt), host="127.0.0.1", port=port, stop=stop))
    bot = RunningBot(rt, local, f"http://127.0.0.1:{port}", httpx.AsyncClient(timeout=10), channel)
    for _ in range(workers):
        bot.workers.append(Worker(rt.queue, job_handlers(rt), concurrency=settings.worker_concurrency))
    if bot.workers:
        rt.worker = bot.workers[0]  # what the dead-man /healthz check watches, as in `chatops run`
    tasks = [asyncio.create_task(w.run()) for w in bot.workers]
    await _wait_listening(port)
    try:
        yield bot
    finally:
        for worker in bot.workers:
            worker.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        stop.set()
        await server
        await bot.http.aclose()
        await rt.aclose()


async def _wait_listening(port: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"the app did not start listening on {port}")
