"""Prometheus metrics for one runtime, and the dead-man check that fails /healthz when the queue's loops stall.

`await install(rt)` (called by bot.app.features) provides, on the runtime:
    metrics        this runtime's `Metrics`, on its own CollectorRegistry, made (and prometheus_client imported)
                   at the first scrape or count: nothing is registered at import time, several runtimes in one
                   process (tests) never clash, and a process that only answers Slack does not load it
    http_routes    + GET /metrics (Prometheus text format)
    health_checks  + `DeadManCheck`: the in-process worker's mover or reclaimer made no progress for too long
    diagnosis_finished  + recording each finished run's check durations
    page_outcomes  + counting each page by provider and outcome

What /metrics shows and where each figure comes from:
    chatops_queue_depth, _urgent_depth, _pending, _oldest_pending_age_seconds, _delayed, _dead_letters
                                              `queue.stats()` read on each scrape: the queue all workers share
    chatops_jobs_total{kind,outcome}          jobs the worker in this process finished: ok, or failed (retried,
                                              dead-lettered or lost); from `worker.stats`
    chatops_job_duration_seconds{kind}        summary (count, sum) of handler time, from the same stats
    chatops_worker_loop_progress_age_seconds{loop}   seconds since each worker loop's last completed round
    chatops_check_duration_seconds{check,status}     histogram, observed when a diagnosis run finishes here
    chatops_pages_total{provider,outcome}     incremented by the paging code: `rt.feature(Metrics).count_page(..)`
    chatops_slack_api_errors_total{method}    `rt.slack.errors`

Figures about jobs and checks are per process: a worker-only process has no HTTP server, so it shows none.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from bot.queue import QueueStats, once
from bot.queue.connection import DURABILITY
from bot.runtime import Runtime

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

log = logging.getLogger(__name__)

CHECK_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 90)
QUEUE_STATS_TIMEOUT_S = 2.0
# A loop is stalled when its last round is this many intervals old (and at least MIN_STALE_S): generous enough
# for a busy event loop and a short Redis blip (the loops back off up to 5 s), short enough to page someone.
STALE_AFTER_INTERVALS = 20
MIN_STALE_S = 1.0
WATCHED_LOOPS = (  # Worker.last_progress key, the Worker attribute with its interval, what it does for people
    ("mover", "mover_interval_s", "delayed-job mover (timers and retries wait until it moves them)"),
    ("reclaimer", "reclaim_interval_s", "reclaimer (jobs of dead workers stay stuck until it releases them)"),
)


class Metrics:
    """The figures of one runtime. Counters the bot increments live here; the rest is read at scrape time."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._queue = _QueueCollector()

    @functools.cached_property
    def prometheus(self) -> _Registry:
        return _Registry(self.rt, self._queue)

    @property
    def registry(self) -> CollectorRegistry:
        return self.prometheus.registry

    def count_page(self, provider: str, ok: bool) -> None:
        """For the paging code: one page handed to `provider`, accepted (`ok`) or not."""
        self.prometheus.pages.labels(provider=provider, outcome="sent" if ok else "failed").inc()

    def observe_check(self, check: str, status: str, seconds: float) -> None:
        self.prometheus.check_duration.labels(check=check, status=status).observe(seconds)

    async def on_diagnosis_finished(self, rt: Runtime, run_id: str, state: dict[str, str], verdict: Any) -> None:
        from bot.diagnosis.run import run_results

        # Two finish jobs of one run can both get this far (they race past the `finished` flag): count it once.
        if not await once(rt.redis, rt.key("metrics", "checks-observed", run_id), ttl_s=86400):
            return
        for result in (await run_results(rt, run_id)).values():
            self.observe_check(result.check, result.status.value, result.duration_ms / 1000)

    async def scrape(self) -> bytes:
        """The Prometheus text exposition, with the queue read now (the registry itself cannot await)."""
        try:
            stats = await asyncio.wait_for(self.rt.queue.stats(), timeout=QUEUE_STATS_TIMEOUT_S)
        except (RedisError, OSError, TimeoutError) as exc:  # Redis down must not take the other figures too
            log.warning("metrics: queue stats unavailable (%s)", type(exc).__name__)
            stats = None
        self._queue.stats = stats
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    async def route(self, scope: dict, body: bytes) -> tuple[int, dict[str, str], bytes]:
        from prometheus_client import CONTENT_TYPE_LATEST

        return 200, {"content-type": CONTENT_TYPE_LATEST}, await self.scrape()


class _Registry:
    """The runtime's CollectorRegistry and the counters the bot increments, made with the first scrape or count."""

    def __init__(self, rt: Runtime, queue: _QueueCollector) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.check_duration = Histogram(
            "chatops_check_duration_seconds", "Time one diagnosis check took, by check id and result status.",
            ["check", "status"], buckets=CHECK_BUCKETS_S, registry=self.registry)
        self.pages = Counter("chatops_pages", "Pages sent to a provider, by provider and outcome (sent/failed).",
                             ["provider", "outcome"], registry=self.registry)
        self.registry.register(queue)
        self.registry.register(_RuntimeCollector(rt))


class _QueueCollector:
    """Queue gauges from the snapshot `Metrics.scrape` took; `chatops_queue_stats_up` says whether it could."""

    def __init__(self) -> None:
        self.stats: QueueStats | None = None

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily("chatops_queue_stats_up", "1 when the queue's figures could be read from Redis.",
                                value=0 if self.stats is None else 1)
        if self.stats is None:
            return
        for name, about, value in (
            ("depth", "Jobs due and waiting for a worker.", self.stats.depth),
            ("urgent_depth", "Of those, pages, escalation timers and provider acks (the urgent lane): above 0 for "
             "long, the workers are stuck or too few.", self.stats.urgent_depth),
            ("pending", "Jobs picked up and not yet acknowledged.", self.stats.pending),
            ("oldest_pending_age_seconds", "Age of the oldest pending job.", self.stats.oldest_pending_age_s),
            ("delayed", "Jobs scheduled for later (timers and retries).", self.stats.delayed),
            ("dead_letters", "Jobs in the dead-letter stream.", self.stats.dead_letters),
        ):
            yield GaugeMetricFamily(f"chatops_queue_{name}", about, value=value)


class _RuntimeCollector:
    """Figures the worker and the Slack client already keep, turned into metric families at scrape time."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        errors = CounterMetricFamily("chatops_slack_api_errors", "Slack Web API calls that failed after retries, "
                                     "by method.", labels=["method"])
        for method, count in sorted(self.rt.slack.errors.items()):
            errors.add_metric([method], count)
        yield errors
        yield CounterMetricFamily("chatops_redis_durable_writes", "Writes followed by WAIT for replicas "
                                  "(timers, pages, incidents).", value=DURABILITY.waits)
        yield CounterMetricFamily("chatops_redis_durable_writes_short", "Durable writes fewer replicas acknowledged "
                                  "than REDIS_WAIT_REPLICAS within REDIS_WAIT_TIMEOUT_MS.", value=DURABILITY.short)
        worker = self.rt.worker
        if worker is not None:
            yield from _worker_families(worker)


def _worker_families(worker: Any) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

    jobs = CounterMetricFamily("chatops_jobs", "Jobs this process's worker finished, by kind and outcome.",
                               labels=["kind", "outcome"])
    durations = SummaryMetricFamily("chatops_job_duration_seconds", "Handler time of finished jobs, by kind.",
                                    labels=["kind"])
    for kind, figures in sorted(worker.stats["by_kind"].items()):
        jobs.add_metric([kind, "ok"], figures["ok"])
        jobs.add_metric([kind, "failed"], figures["failed"])
        durations.add_metric([kind], count_value=figures["ok"] + figures["failed"], sum_value=figures["seconds_sum"])
    yield jobs
    yield durations
    for name in ("retried", "dead_lettered", "reclaimed", "released"):
        yield CounterMetricFamily(f"chatops_jobs_{name}", f"Jobs {name.replace('_', '-')} by this process's worker.",
                                  value=worker.stats[f"jobs_{name}"])
    ages = GaugeMetricFamily("chatops_worker_loop_progress_age_seconds",
                             "Seconds since each worker loop last completed a round.", labels=["loop"])
    now = time.monotonic()
    for loop, last in sorted(worker.last_progress.items()):
        ages.add_metric([loop], now - last)
    yield ages


class DeadManCheck:
    """A /healthz check: a problem sentence when the in-process worker's mover or reclaimer has stalled.

    A loop that never completed a round counts from the first time this check saw the worker, so a worker that
    cannot start (Redis refusing its group, a bug in its first round) is caught too. No worker: nothing to say.
    """

    def __init__(self, rt: Runtime, *, stale_after_intervals: float = STALE_AFTER_INTERVALS,
                 min_stale_s: float = MIN_STALE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.rt = rt
        self.stale_after_intervals = stale_after_intervals
        self.min_stale_s = min_stale_s
        self.clock = clock
        self._first_seen: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def __call__(self) -> str | None:
        worker = self.rt.worker
        if worker is None:
            return None
        now = self.clock()
        first_seen = self._first_seen.setdefault(worker, now)
        for loop, interval_attribute, role in WATCHED_LOOPS:
            interval = float(getattr(worker, interval_attribute))
            limit = max(self.stale_after_intervals * interval, self.min_stale_s)
            age = now - worker.last_progress.get(loop, first_seen)
            if age > limit:
                return (f"worker {worker.consumer}: the {role} has made no progress for {age:.1f} s "
                        f"(it runs every {interval:g} s; the limit is {limit:g} s)")
        return None


async def install(rt: Runtime) -> Metrics:
    """Idempotent: a second call returns the metrics already installed."""
    installed = rt.feature(Metrics)
    if installed is not None:
        return installed
    metrics = rt.provide(Metrics(rt))
    rt.hooks.http_routes[("GET", "/metrics")] = metrics.route
    rt.hooks.health_checks.append(DeadManCheck(rt))
    rt.hooks.diagnosis_finished.append(metrics.on_diagnosis_finished)
    rt.hooks.page_outcomes.append(metrics.count_page)
    return metrics
