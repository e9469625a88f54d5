"""What handlers and jobs share in one process: settings, Redis, the queue, the Slack client, probe clients, and
the hooks through which features plug in.

Built by `create_runtime(settings)` when a process starts (never at import), closed by `aclose()`. A feature's
`install(rt)` adds its context with `rt.provide(ctx)` (looked up by type: `rt.feature(Incidents)`) and its
job kinds, routes, recorders and closers to `rt.hooks`; nothing is looked up by a string key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import redis.asyncio as aioredis

from bot.queue import Queue
from bot.queue.connection import connect
from bot.queue.pacing import pacer_for
from bot.settings import ConfigError, Settings, load_services
from bot.slack.client import SlackClient
from checks.services import ServicesFile

log = logging.getLogger(__name__)

T = TypeVar("T")
SERVICES_CHECK_S = 1.0  # how often a request may stat the services file for an edit
JobHandler = Callable[[Any], Awaitable[None]]
# (scope, body) -> (status, headers, body): an extra HTTP route (webhooks, /metrics).
Route = Callable[[dict, bytes], Awaitable[tuple[int, dict[str, str], bytes]]]


class Hooks(msgspec.Struct):
    """Where features plug into a process; each list is filled by the features' `install(rt)` at start-up."""

    job_handlers: list[Callable[[Runtime], dict[str, JobHandler]]] = msgspec.field(default_factory=list)
    http_routes: dict[tuple[str, str], Route] = msgspec.field(default_factory=dict)  # (method, path) -> route
    event_recorders: list[Callable[[Runtime, dict, dict], Awaitable[None]]] = msgspec.field(default_factory=list)
    # (rt, run_id, run state): in a run's start job, before its state is first stored; a hook may fill the state's
    # `incident_id` of a run asked for in an incident's channel without naming one (`/diagnose` typed there), so
    # the ack that queued it made one round trip. A hook's failure other than Redis's is logged, not the run's.
    diagnosis_starting: list[Callable[[Runtime, str, dict[str, str]], Awaitable[None]]] = msgspec.field(
        default_factory=list)
    # (rt, run_id, run state, verdict): once per finished diagnosis run
    diagnosis_finished: list[Callable[[Runtime, str, dict[str, str], Any], Awaitable[None]]] = msgspec.field(
        default_factory=list)
    page_outcomes: list[Callable[[str, bool], None]] = msgspec.field(default_factory=list)  # (provider, sent) per page
    health_checks: list[Callable[[], str | None]] = msgspec.field(default_factory=list)  # a problem sentence, or None
    closers: list[Callable[[Runtime], Awaitable[None]]] = msgspec.field(default_factory=list)
    secrets: list[str] = msgspec.field(default_factory=list)  # for log redaction


class ServicesWatch(msgspec.Struct):
    """The services file, parsed off the request path. `current()` answers from memory and at most once a second
    stats the file; a changed file is parsed in a thread (the C YAML loader, then the schema) and swapped in whole
    once it is valid. A bad edit keeps the last good file: logged once, and `problem` says so (`/diagnose list`
    shows it). Only the first read, at start-up, is inline, so a broken file still stops the start."""

    path: Path
    problem: str | None = None
    _file: ServicesFile | None = None
    _version: tuple[int, int] | None = None  # (mtime ns, size) of the file last parsed, good or bad
    _good_at: float = 0.0
    _checked_at: float = 0.0
    _reloading: asyncio.Task | None = None

    def current(self) -> ServicesFile:
        if self._file is None:
            version = self._stat()
            self._file, self._version, self._good_at = load_services(self.path), version, time.time()
            return self._file
        if time.monotonic() - self._checked_at >= SERVICES_CHECK_S and self._reloading is None:
            self._checked_at = time.monotonic()
            version = self._stat()
            if version != self._version:
                self._reload(version)
        return self._file

    def _stat(self) -> tuple[int, int]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return (0, 0)  # load_services names the missing file
        return (stat.st_mtime_ns, stat.st_size)

    def _reload(self, version: tuple[int, int]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a CLI command): nothing to keep waiting
            self._swap(version, self._parse())
            return
        self._reloading = loop.create_task(self._reload_off_loop(version))

    async def _reload_off_loop(self, version: tuple[int, int]) -> None:
        try:
            self._swap(version, await asyncio.to_thread(self._parse))
        finally:
            self._reloading = None

    def _parse(self) -> ServicesFile | ConfigError:
        try:
            return load_services(self.path)
        except ConfigError as exc:
            return exc

    def _swap(self, version: tuple[int, int], parsed: ServicesFile | ConfigError) -> None:
        self._version = version
        if isinstance(parsed, ConfigError):
            since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self._good_at))
            self.problem = (f"The services file's last edit was not used ({parsed}); still using the version read "
                            f"at {since}.")
            log.error("%s", self.problem)
            return
        self._file, self.problem, self._good_at = parsed, None, time.time()
        log.info("services file reloaded: %d services", len(parsed.services))


class Runtime(msgspec.Struct):
    settings: Settings
    redis: aioredis.Redis
    queue: Queue
    slack: SlackClient
    services_path: Path
    _services: ServicesWatch | None = None
    _probe_http: Any = None
    _aws: Any = None
    namespace: str = "chatops"  # prefix of every Redis key, so several bots (or test runs) can share one Redis
    hooks: Hooks = msgspec.field(default_factory=Hooks)
    worker: Any = None  # this process's queue Worker, when it runs one (metrics and the dead-man check watch it)
    health_problem: tuple[str, float] | None = None  # the failing health check last logged, and when
    _features: dict[type, Any] = msgspec.field(default_factory=dict)
    _aws_runs: dict[str, tuple[Any, float]] = msgspec.field(default_factory=dict)

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
        """The services file as last read well; an edit needs no restart (ServicesWatch)."""
        if self._services is None:
            self._services = ServicesWatch(self.services_path)
        return self._services.current()

    @property
    def services_problem(self) -> str | None:
        """Why the services file in use is not the one on disk (a bad edit), or None."""
        return self._services.problem if self._services else None

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
    slack = SlackClient.from_settings(settings, budget=pacer_for(redis, queue_name))
    return Runtime(settings=settings, redis=redis, queue=queue, slack=slack,
                   services_path=settings.resolved_services_file(), namespace=queue_name)
