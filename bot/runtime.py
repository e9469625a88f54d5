"""What handlers and jobs share in one process: settings, Redis, the queue, the Slack client, probe clients, and
the hooks through which features plug in.

Built by `create_runtime(settings)` when a process starts (never at import), closed by `aclose()`. A feature's
`install(rt)` adds its context with `rt.provide(ctx)` (looked up by type: `rt.feature(Incidents)`) and its
job kinds, routes, recorders and closers to `rt.hooks`; nothing is looked up by a string key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aioredis

from bot.queue import Queue
from bot.queue.connection import connect
from bot.settings import Settings, load_services
from bot.slack.client import SlackClient
from checks.services import ServicesFile

log = logging.getLogger(__name__)

T = TypeVar("T")
JobHandler = Callable[[Any], Awaitable[None]]
# (scope, body) -> (status, headers, body): an extra HTTP route (webhooks, /metrics).
Route = Callable[[dict, bytes], Awaitable[tuple[int, dict[str, str], bytes]]]


@dataclass
class Hooks:
    """Where features plug into a process; each list is filled by the features' `install(rt)` at start-up."""

    job_handlers: list[Callable[[Runtime], dict[str, JobHandler]]] = field(default_factory=list)
    http_routes: dict[tuple[str, str], Route] = field(default_factory=dict)  # (method, path) -> route
    event_recorders: list[Callable[[Runtime, dict, dict], Awaitable[None]]] = field(default_factory=list)
    # (rt, run_id, run state, verdict): once per finished diagnosis run
    diagnosis_finished: list[Callable[[Runtime, str, dict[str, str], Any], Awaitable[None]]] = field(
        default_factory=list)
    page_outcomes: list[Callable[[str, bool], None]] = field(default_factory=list)  # (provider, sent) per page
    health_checks: list[Callable[[], str | None]] = field(default_factory=list)  # a problem sentence, or None
    closers: list[Callable[[Runtime], Awaitable[None]]] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)  # for log redaction


@dataclass
class Runtime:
    settings: Settings
    redis: aioredis.Redis
    queue: Queue
    slack: SlackClient
    services_path: Path
    _services: ServicesFile | None = None
    _services_mtime: float = -1.0
    _probe_http: Any = None
    _aws: Any = None
    namespace: str = "chatops"  # prefix of every Redis key, so several bots (or test runs) can share one Redis
    hooks: Hooks = field(default_factory=Hooks)
    worker: Any = None  # this process's queue Worker, when it runs one (metrics and the dead-man check watch it)
    health_problem: tuple[str, float] | None = None  # the failing health check last logged, and when
    _features: dict[type, Any] = field(default_factory=dict)
    _aws_runs: dict[str, tuple[Any, float]] = field(default_factory=dict)

    def provide(self, feature: T) -> T:
        """Install a feature's context, found again by its type: `rt.feature(Incidents)`."""
        self._features[type(feature)] = feature
        return feature

    def feature(self, kind: type[T]) -> T | None:
        return self._features.get(kind)

    def key(self, *parts: object) -> str:
        """A Redis key in this bot's namespace: `rt.key("diag", "run", run_id)` → `chatops:diag:run:<id>`."""
        return ":".join([self.namespace, *(str(p) for p in parts)])

    def services(self) -> ServicesFile:
        """The services file, re-read when it changes on disk so an edit needs no restart."""
        try:
            mtime = self.services_path.stat().st_mtime
        except FileNotFoundError:
            mtime = 0.0  # load_services names the missing file
        if self._services is None or mtime != self._services_mtime:
            self._services = load_services(self.services_path)
            self._services_mtime = mtime
        return self._services

    @property
    def probe_http(self) -> Any:
        if self._probe_http is None:
            from checks.runner import make_http_client

            self._probe_http = make_http_client()
        return self._probe_http

    @property
    def aws(self) -> Any:
        if self._aws is None:
            from checks.aws.clients import AwsClients

            self._aws = AwsClients()
        return self._aws

    def aws_for_run(self, run_id: str) -> Any:
        """The AWS view for one diagnosis run: shared clients, a memo of that run's read-only calls. Views of runs
        older than a few minutes are dropped (a run ends by its deadline)."""
        now = time.monotonic()
        views = self._aws_runs
        for stale in [k for k, (_, born) in views.items() if now - born > 600]:
            del views[stale]
        if run_id not in views:
            views[run_id] = (self.aws.scoped(), now)
        return views[run_id][0]

    async def aclose(self) -> None:
        for close in self.hooks.closers:  # features' own clients (paging providers, ...)
            try:
                await close(self)
            except Exception:
                log.warning("a feature failed to close cleanly", exc_info=True)
        if self._probe_http is not None:
            await self._probe_http.aclose()
        await self.slack.aclose()
        await self.redis.aclose()


def create_runtime(settings: Settings, *, redis_url: str | None = None, queue_name: str | None = None) -> Runtime:
    """`redis_url` overrides REDIS_URL (the private Redis of `chatops run`); Sentinel settings apply either way."""
    redis = connect(settings, redis_url)
    queue_name = queue_name or settings.redis_namespace
    queue = Queue(redis, queue_name, visibility_timeout_s=settings.job_visibility_timeout_s,
                  max_deliveries=settings.job_max_deliveries)
    return Runtime(settings=settings, redis=redis, queue=queue, slack=SlackClient.from_settings(settings),
                   services_path=settings.resolved_services_file(), namespace=queue_name)
