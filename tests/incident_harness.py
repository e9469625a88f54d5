"""A whole incident bot for tests and benchmarks, with real parts at every boundary.

- Slack: LocalSlack (a real local HTTP server) for the Web API; inbound slash commands, button clicks and
  webhooks are built and SIGNED like Slack's and sent through the real ASGI app (`create_asgi(create_app(rt))`)
  over httpx's ASGI transport.
- Redis: a real server (the session's, or a private restartable one); each bot gets its own namespace/queue.
- Paging: the fake PagerDuty (tests/fixtures/paging.py) named in a real policy file; Slack DMs via LocalSlack.
- Workers: real `bot.queue.stream.Worker`s as tasks in this process (`start_worker`/`stop_workers`), or a separate
  process (`worker_process`) that a test can SIGKILL.

    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd) as bot:
        answer = await bot.command("/incident", "Checkout down P0", user="U1")
        incident = await bot.wait_incident("INC-1", lambda i: i.ready)
        await bot.click("incident_ack", incident.id, user="U1", channel=incident.channel)

Seeded people: U1 alice (reporter, in #general), U2 bob (responder, invited to every incident channel), UONCALL,
UMGR1, UMGR2 (managers), UOUT (an outsider, in no incident channel). `default_policy(events_url)` is the policy
file written for each bot (pass `policy=` for another); `incident={...}` / `settings={...}` override
IncidentSettings / Settings fields. Webhook secrets: PD_WEBHOOK_SECRET, ALERTMANAGER_TOKEN.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from bot.alerts.config import AlertSourceSettings
from bot.alerts.install import install as install_alerts
from bot.app.bolt import create_app
from bot.app.http_server import create_asgi
from bot.app.jobs import job_handlers
from bot.incidents.config import IncidentSettings
from bot.incidents.install import install
from bot.incidents.model import Incident
from bot.incidents.service import Incidents
from bot.incidents.timeline import Entry
from bot.oncall.config import OncallSettings
from bot.oncall.install import install as install_oncall
from bot.paging.policy import load_policy
from bot.queue import Worker
from bot.runtime import Runtime, create_runtime
from bot.settings import Settings
from bot.slack.local.rate_limits import POST_BURST, POSTS_PER_SECOND
from bot.slack.local.payloads import (
    block_action_body,
    signed_headers,
    slash_command_body,
)
from checks.schema import Secret, dump_json
from tests.app_harness import settle_queue

SIGNING_SECRET = "test-signing-secret-0123456789abcdef"
BOT_TOKEN = "xoxb-test-token"
PD_WEBHOOK_SECRET = "pd-webhook-secret"
ALERTMANAGER_TOKEN = "am-token-0123456789"
PEOPLE = {"U1": "alice", "U2": "bob", "UONCALL": "oncall", "UMGR1": "manager-one", "UMGR2": "manager-two",
          "UOUT": "outsider"}
SERVICES = {"api": {"description": "Public API"}, "checkout": {"description": "Checkout"}}


def default_policy(events_url: str | None, *, ack_timeout_s: float = 600, update_every_s: float = 3600,
                   managers: list[str] | None = None) -> dict[str, Any]:
    """on-call = PagerDuty (when `events_url`) else Slack DMs to UONCALL; managers = Slack DMs.

        P0  on-call + managers at once; unacked after `ack_timeout_s` → managers again (level 2)
        P1  on-call; unacked → managers        P2  on-call, low urgency        P3  nobody
    """
    oncall = "pagerduty" if events_url else "oncall"
    policy: dict[str, Any] = {
        "oncall": ["UONCALL"], "managers": managers or ["UMGR1", "UMGR2"],
        "severities": {
            "P0": {"first": [oncall, "managers"], "then": ["managers"], "repeat": 0, "ack_timeout": ack_timeout_s,
                   "update_every": update_every_s},
            "P1": {"first": oncall, "then": ["managers"], "repeat": 0, "ack_timeout": ack_timeout_s,
                   "update_every": update_every_s},
            "P2": {"first": oncall, "then": [], "ack_timeout": ack_timeout_s, "update_every": update_every_s},
            "P3": {"update_every": update_every_s},
        },
    }
    if events_url:
        policy["providers"] = {"pagerduty": {"events_url": events_url, "timeout_s": 2,
                                             "retry": {"attempts": 3, "base_s": 0.01, "max_s": 0.05}}}
    return policy


@dataclass
class BotConfig:
    """Everything needed to build the same bot in this process or in a worker process (JSON-serialisable)."""

    slack_url: str
    redis_url: str
    namespace: str
    services_file: str
    policy_file: str
    env: dict[str, str] = field(default_factory=dict)  # what the policy reads (PAGERDUTY_ROUTING_KEY)
    incident: dict[str, Any] = field(default_factory=dict)  # IncidentSettings overrides
    settings: dict[str, Any] = field(default_factory=dict)  # Settings overrides
    alerts: dict[str, Any] = field(default_factory=dict)  # AlertSourceSettings overrides
    page_lease_s: float = 20.0
    oncall: dict[str, Any] = field(default_factory=dict)  # OncallSettings fields (oncall_file, the calendar token)

    def dump(self, path: Path) -> Path:
        path.write_text(json.dumps(self.__dict__))
        return path

    @classmethod
    def load(cls, path: Path) -> BotConfig:
        return cls(**json.loads(Path(path).read_text()))


async def build_runtime(config: BotConfig) -> tuple[Runtime, Incidents]:
    settings = Settings.from_env(
        slack_bot_token=Secret(BOT_TOKEN), slack_signing_secret=Secret(SIGNING_SECRET),
        slack_api_url=config.slack_url, redis_url=config.redis_url, services_file=Path(config.services_file),
        # Posts paced at Slack's own per-channel limit, which the local Slack enforces (the default's burst of 5
        # would only slow the tests down; anything faster earns 429s).
        **{"slack_channel_burst": POST_BURST, "slack_channel_rate_per_s": POSTS_PER_SECOND,
           "job_visibility_timeout_s": 5, "slack_max_retries": 2, **config.settings})
    rt = create_runtime(settings, redis_url=config.redis_url, queue_name=config.namespace)
    incident_settings = IncidentSettings.from_env(**{
        "incident_responders": ["U2"], "pagerduty_webhook_secret": PD_WEBHOOK_SECRET,
        "alertmanager_token": ALERTMANAGER_TOKEN, "incident_audit_interval_s": 10.0, **config.incident})
    policy = load_policy(Path(config.policy_file), env=config.env)
    # Before incidents, which pages schedules.
    await install_oncall(rt, settings=OncallSettings.from_env(**config.oncall))
    ctx = await install(rt, settings=incident_settings, policy=policy)
    ctx.page_lease_s = config.page_lease_s
    await install_alerts(rt, settings=AlertSourceSettings.from_env(**config.alerts))
    from bot.app import features

    for other in getattr(features, "_feature_installers", list)():
        await other(rt)  # the other features; ours is installed already (install is idempotent)
    return rt, ctx


def make_worker(rt: Runtime, **options: Any) -> Worker:
    defaults = {"concurrency": 32, "mover_interval_s": 0.05, "reclaim_interval_s": 0.5, "dead_worker_after_s": 2.0}
    return Worker(rt.queue, job_handlers(rt), **{**defaults, **options})


@dataclass
class IncidentBot:
    rt: Runtime
    ctx: Incidents
    local: Any  # LocalSlack
    app: Any
    http: httpx.AsyncClient
    config: BotConfig
    pagerduty: Any = None
    channel: str = "C1"
    workers: list[tuple[Worker, asyncio.Task]] = field(default_factory=list)

    # -- driving the app, signed like Slack ------------------------------------------------------------------

    async def command(self, command: str, text: str, *, user: str = "U1", channel: str | None = None,
                      trigger_id: str | None = None, retry_num: int | None = None) -> str:
        """Send a slash command; returns the text of the (ephemeral) answer."""
        reply = await self.command_reply(command, text, user=user, channel=channel, trigger_id=trigger_id,
                                         retry_num=retry_num)
        return reply.get("text", "")

    async def command_reply(self, command: str, text: str, *, user: str = "U1", channel: str | None = None,
                            trigger_id: str | None = None, retry_num: int | None = None) -> dict:
        """Send a slash command; returns the whole answer (text, blocks, response_type)."""
        body = slash_command_body(command, text, user_id=user, user_name=PEOPLE.get(user, user.lower()),
                                  channel_id=channel or self.channel, response_url=self.local.response_url(),
                                  trigger_id=trigger_id or uuid.uuid4().hex)
        extra = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"} if retry_num else {}
        response = await self.post_slack(body, "application/x-www-form-urlencoded", **extra)
        assert response.status_code == 200, (response.status_code, response.text)
        return response.json() if response.content else {}

    async def click(self, action_id: str, value: str, *, user: str = "U1", channel: str | None = None,
                    message_ts: str = "1.000001") -> httpx.Response:
        """Press a button; its answer arrives through response_url (see `ephemerals_for`)."""
        url = self.local.response_url(channel=channel or self.channel, user=user, message_ts=message_ts)
        body = block_action_body(action_id, value, user_id=user, user_name=PEOPLE.get(user, user.lower()),
                                 channel_id=channel or self.channel, message_ts=message_ts, response_url=url,
                                 trigger_id=uuid.uuid4().hex)
        return await self.post_slack(body, "application/x-www-form-urlencoded")

    async def post_slack(self, body: str, content_type: str, **headers: str) -> httpx.Response:
        signed = signed_headers(body, SIGNING_SECRET, content_type=content_type)
        return await self.http.post("/slack/events", content=body.encode(), headers={**signed, **headers})

    async def hook(self, path: str, body: bytes | dict, headers: dict[str, str] | None = None) -> httpx.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.http.post(path, content=data, headers={"content-type": "application/json",
                                                                 **(headers or {})})

    def ephemerals_for(self, user: str) -> list[str]:
        return [e.get("text") or "" for e in self.local.ephemerals() if e.get("user") in (user, None)]

    # -- workers ----------------------------------------------------------------------------------------------

    def start_worker(self, **options: Any) -> Worker:
        worker = make_worker(self.rt, **options)
        self.workers.append((worker, asyncio.create_task(worker.run())))
        return worker

    async def stop_workers(self) -> None:
        for worker, _task in self.workers:
            worker.stop()
        await _until_done([task for _w, task in self.workers])
        self.workers.clear()

    async def settle(self, timeout_s: float = 15.0, quiet_s: float = 0.3) -> None:
        """Wait until nothing is queued, running, or due within a second, for `quiet_s` in a row."""
        await settle_queue(self.rt, timeout_s=timeout_s, quiet_s=quiet_s, due_within_s=1.0)

    # -- reading state ----------------------------------------------------------------------------------------

    async def incident(self, incident_id: str) -> Incident:
        return await self.ctx.store.require(incident_id)

    async def wait_incident(self, incident_id: str, predicate: Callable[[Incident], bool],
                            timeout_s: float = 10.0) -> Incident:
        deadline = time.monotonic() + timeout_s
        while True:
            found = await self.ctx.store.get(incident_id)
            if found is not None and predicate(found):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{incident_id} did not reach the expected state in {timeout_s}s: "
                                     f"{dump_json(found) if found else 'not found'}")
            await asyncio.sleep(0.03)

    async def wait_for(self, predicate: Callable[[], Any], timeout_s: float = 10.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s}s waiting for {what or 'the condition'}")
            await asyncio.sleep(0.03)

    async def timeline(self, incident_id: str, kind: str | None = None) -> list[Entry]:
        entries = await self.ctx.timeline.entries(incident_id)
        return [e for e in entries if kind is None or e.kind == kind]

    def dms_to(self, user: str) -> list[Any]:
        """Messages the bot sent `user` in their DM."""
        for channel in self.local.channels():
            if channel.get("is_im") and channel.get("user") == user:
                return self.local.messages(channel["id"])
        return []

    def channel_texts(self, incident: Incident) -> list[str]:
        """Every message text (and block text) in the incident's channel or thread."""
        assert incident.channel
        thread = incident.thread_ts if incident.mode == "thread" else None
        messages = self.local.messages(incident.channel, thread_ts=thread, include_replies=thread is None)
        return [m.text + " " + json.dumps(m.blocks or []) for m in messages]

    def pd_triggers(self, dedup_key: str | None = None) -> list[dict]:
        return [e for e in self.pagerduty.events if e["event_action"] == "trigger"
                and (dedup_key is None or e.get("dedup_key") == dedup_key)]

    # -- a worker in another process ---------------------------------------------------------------------------

    def worker_process(self, tmp_path: Path, *, kill_after_page: bool = False, kill_after_fix: Path | None = None,
                       fix_trail: Path | None = None, dead_worker_after_s: float = 1.0) -> subprocess.Popen:
        """`python -m tests.incident_harness worker`: the same bot in a child process, consuming this bot's
        queue. With `kill_after_page`, it SIGKILLs itself right after PagerDuty accepted the first page and
        before the page is recorded — the window the exactly-once guarantee is about. With `kill_after_fix`
        (a marker file it writes first), it does the same after a fix's AWS write, before its result is stored;
        `fix_trail` gets a line per reserved-concurrency write the process makes."""
        config_file = self.config.dump(tmp_path / f"bot-{uuid.uuid4().hex[:6]}.json")
        marker = tmp_path / f"killed-{uuid.uuid4().hex[:6]}"
        args = [sys.executable, "-m", "tests.incident_harness", "worker", str(config_file),
                "--dead-worker-after-s", str(dead_worker_after_s)]
        if kill_after_page:
            args += ["--kill-after-page", str(marker)]
        if kill_after_fix is not None:
            args += ["--kill-after-fix", str(kill_after_fix)]
        if fix_trail is not None:
            args += ["--fix-trail", str(fix_trail)]
        return subprocess.Popen(args, cwd=Path(__file__).resolve().parent.parent,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def buttons(reply: dict) -> dict[str, str]:
    """action_id → value of every button in a message or an answer."""
    return {e["action_id"]: e.get("value", "") for b in reply.get("blocks") or [] if b.get("type") == "actions"
            for e in b.get("elements", [])}


async def declare_incident(bot: IncidentBot, text: str, **kwargs: Any) -> str:
    """`/incident <text>`; the new incident's id once it is ready (channel, header, first page)."""
    answer = await bot.command("/incident", text, **kwargs)
    match = re.search(r"INC-\d+", answer)
    assert match, answer
    await bot.wait_incident(match.group(0), lambda i: i.ready)
    return match.group(0)


async def _until_done(tasks: list[asyncio.Task], timeout_s: float = 20.0) -> None:
    """Wait for stopped workers. redis-py 8.1 sometimes swallows a CancelledError that lands mid-command, so a
    worker loop cancelled once can keep running and `Worker.run` never returns; cancel such loops again.
    (Reported: bot/queue/worker.py `_cancel_all` should cancel until done. Remove this once it does.)"""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _done, pending = await asyncio.wait(tasks, timeout=0.5) if tasks else (set(), set())
        if not pending:
            return
        for task in asyncio.all_tasks():
            if task.get_coro().__qualname__ == "Worker._forever" and task.cancelling():
                task.cancel()
    raise TimeoutError(f"workers did not stop within {timeout_s}s")


def seed_workspace(local: Any) -> None:
    existing = {u["id"] for u in local.users()}
    for user_id, name in PEOPLE.items():
        if user_id not in existing:
            local.add_user(user_id, name)


@contextlib.asynccontextmanager
async def incident_bot(local: Any, redis_url: str, tmp_path: Path, *, pagerduty: Any = None,
                       policy: dict[str, Any] | None = None, workers: int = 1,
                       incident: dict[str, Any] | None = None, settings: dict[str, Any] | None = None,
                       page_lease_s: float = 20.0, services: dict[str, Any] | None = None,
                       alerts: dict[str, Any] | None = None,
                       oncall: dict[str, Any] | None = None) -> AsyncIterator[IncidentBot]:
    """A running bot (app + `workers` in-process workers) against `local` Slack, Redis at `redis_url` and the
    fake PagerDuty `pagerduty` (or Slack-DM-only paging without one)."""
    seed_workspace(local)
    tag = uuid.uuid4().hex[:8]
    services_file = tmp_path / f"services-{tag}.yml"
    services_file.write_text(yaml.safe_dump({"services": services or SERVICES}))
    policy_file = tmp_path / f"policy-{tag}.yml"
    policy_file.write_text(yaml.safe_dump(policy or default_policy(pagerduty.events_url if pagerduty else None)))
    env = {"PAGERDUTY_ROUTING_KEY": pagerduty.routing_key} if pagerduty else {}
    config = BotConfig(slack_url=local.url, redis_url=redis_url, namespace=f"tinc{tag}",
                       services_file=str(services_file), policy_file=str(policy_file), env=env,
                       incident=incident or {}, settings=settings or {}, page_lease_s=page_lease_s,
                       alerts=alerts or {}, oncall=_oncall_settings(oncall, tmp_path, tag))
    rt, ctx = await build_runtime(config)
    app = create_app(rt)  # handlers.actions registers the incident buttons
    asgi = create_asgi(app, rt)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://bot.test", timeout=15)
    bot = IncidentBot(rt, ctx, local, app, http, config, pagerduty)
    for _ in range(workers):
        bot.start_worker()
    try:
        yield bot
    finally:
        await bot.stop_workers()
        await http.aclose()
        for closer in rt.hooks.closers:
            await closer(rt)
        await rt.aclose()


def _oncall_settings(oncall: dict[str, Any] | None, tmp_path: Path, tag: str) -> dict[str, Any]:
    """`oncall={"schedules": {...}, "services": {...}, "oncall_calendar_token": ...}` → an ONCALL_FILE (schedules,
    services, default_schedule) and the other settings."""
    if not oncall:
        return {}
    in_file = {k: v for k, v in oncall.items() if k in ("schedules", "services", "default_schedule")}
    settings = {k: v for k, v in oncall.items() if k not in in_file}
    if "schedules" in oncall:
        path = tmp_path / f"oncall-{tag}.yml"
        path.write_text(yaml.safe_dump(in_file))
        settings["oncall_file"] = str(path)
    return settings


# ------------------------------------------------------------------------------------------- worker process

async def _run_worker_process(config_file: Path, kill_marker: Path | None, dead_worker_after_s: float,
                              fix_marker: Path | None = None, fix_trail: Path | None = None) -> None:
    config = BotConfig.load(config_file)
    rt, ctx = await build_runtime(config)
    if kill_marker is not None:
        _die_after_first_page(ctx, kill_marker)
    if fix_marker is not None:
        _die_after_fix_write(rt, fix_marker)
    if fix_trail is not None:
        _trail_fix_writes(fix_trail)
    worker = make_worker(rt, dead_worker_after_s=dead_worker_after_s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(worker.run())
    await stop.wait()
    worker.stop()
    await task
    await rt.aclose()


def _die_after_first_page(ctx: Incidents, marker: Path) -> None:
    provider = ctx.providers["pagerduty"]
    trigger = provider.trigger

    async def trigger_then_die(page: Any) -> Any:
        result = await trigger(page)
        if result.ok and not marker.exists():
            marker.write_text(page.dedup_key)
            os.kill(os.getpid(), signal.SIGKILL)  # sent and accepted, not yet recorded
        return result

    provider.trigger = trigger_then_die  # type: ignore[method-assign]


def _die_after_fix_write(rt: Runtime, marker: Path) -> None:
    from bot.remediation.service import remediation_of

    records = remediation_of(rt).records
    save = records.save

    async def save_or_die(request: Any) -> None:
        if request.result is not None and not marker.exists():
            marker.write_text(request.id)
            os.kill(os.getpid(), signal.SIGKILL)  # the fix is applied in AWS, its result not yet stored
        await save(request)

    records.save = save_or_die  # type: ignore[method-assign]


def _trail_fix_writes(trail: Path) -> None:
    from checks.aws.fixes import lambda_concurrency

    write = lambda_concurrency._write

    async def trailed(aws: Any, region: str, function: str, target: str) -> None:
        with trail.open("a") as out:
            out.write(f"{os.getpid()} {function} {target}\n")
        await write(aws, region, function, target)

    lambda_concurrency._write = trailed  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tests.incident_harness")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker")
    worker.add_argument("config", type=Path)
    worker.add_argument("--kill-after-page", type=Path, default=None)
    worker.add_argument("--dead-worker-after-s", type=float, default=1.0)
    worker.add_argument("--kill-after-fix", type=Path, default=None)
    worker.add_argument("--fix-trail", type=Path, default=None)
    args = parser.parse_args(argv)
    from bot.app.cli import run_async  # the event loop `chatops worker` runs on (uvloop)

    run_async(_run_worker_process(args.config, args.kill_after_page, args.dead_worker_after_s,
                                  args.kill_after_fix, args.fix_trail))


if __name__ == "__main__":
    main()
