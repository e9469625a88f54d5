"""`/diagnose` figures: slash-command ack latency under 200 concurrent signed requests (HTTP mode, loopback), and
the overhead of a diagnosis — wall time of 10 checks whose service answers after 300 ms, divided by one such
check's own duration measured alone (the 300 ms plus its round trip; the ratio to the nominal 300 ms is printed too).

Ack latency is measured over several bursts per configuration (one burst's p99 is its 2nd-slowest answer, which
on a shared 2-core machine moves by tens of ms from burst to burst), next to baselines measured in the same run:
the minimal Bolt app (benchmarks/minimal_bolt.py) and that app writing each command to a Redis stream before it
acks (one XADD through redis-py per command: the straightforward way to make every command durable, as the bot's
ack queues a durable job; the bot pipelines a burst's Redis work, so this is a reference, not a floor), up beside
the bot's one HTTP process and sent their bursts in turn with it, and the same HTTP stack answering a fixed ack
(what the machine and server cost before Bolt or the bot do anything). Beside latency, the server's CPU time per
ack: steadier than latency when other work shares the machine.

    .venv/bin/python -m benchmarks.bench_diagnose            # every figure
    .venv/bin/python -m benchmarks.bench_diagnose acks       # the bot's one process against the minimal Bolt app
    .venv/bin/python -m benchmarks.bench_diagnose profile    # the same under cProfile, with where the CPU goes

Targets: ack p99 < 100 ms (Slack allows 3,000) and ≤ 1.2 × the minimal Bolt app's (issue #20); overhead ratio
≤ 1.2. Prints figures; not a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import redis.asyncio as aioredis
import yaml

from benchmarks import pct, summarize, summarize_ratio
from bot.app.http_workers import default_process_count
from bot.app.redis_server import RedisServer
from bot.queue import Queue, QueueStats
from bot.settings import parse_services
from bot.slack.local import LocalSlack
from checks.runner import run_service
from tests.app_harness import BOT_TOKEN, free_port
from tests.fixtures.slack import SLACK_TEST_SIGNING_SECRET, signed_headers
from tests.servers import Reply, local_http_server

CHECK_S = 0.3
BURSTS = 9  # a burst's p99 moves by tens of ms with the machine's load: the median burst is steadier



@dataclass
class AckFigures:
    bursts: list[list[float]]  # latencies (ms) of each burst of concurrent commands
    queue_before: QueueStats | None = None  # with a busy worker: the backlog when the first burst was sent
    queue_after: QueueStats | None = None
    cpu_s: float = 0.0  # the server's CPU time (user + system) while its bursts were answered, when measured

    @contextlib.contextmanager
    def cpu_of(self, pid: int) -> Iterator[None]:
        before = _cpu_s(pid)
        yield
        self.cpu_s += _cpu_s(pid) - before

    @property
    def median_burst_p99(self) -> float:
        return statistics.median(pct(burst, 99) for burst in self.bursts)

    @property
    def all(self) -> list[float]:
        return [latency for burst in self.bursts for latency in burst]

    def line(self) -> str:
        per_burst = ", ".join(f"{pct(b, 99):.0f}" for b in self.bursts)
        cpu = f", {self.cpu_s / len(self.all) * 1000:.2f} ms of server CPU an ack" if self.cpu_s else ""
        return (f"p50 {pct(self.all, 50):.1f} ms, p99 {pct(self.all, 99):.1f} ms over {len(self.all)} acks "
                f"(p99 of each burst: {per_burst} ms){cpu}")


def _cpu_s(pid: int) -> float:
    """A process's user + system CPU seconds so far (Linux: /proc/PID/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def bot_process(local: LocalSlack, redis_url: str, tmp: Path, catalog: dict, *, http_workers: int | None,
                      worker: bool, profile: Path | None = None) -> AsyncIterator[tuple[int, str, int]]:
    """`chatops run` in HTTP mode as operators run it, in its own process (so the client does not share its
    event loop), on its own Redis namespace; yields (port, namespace, pid) once /healthz says every process serves.
    With `profile`, the process runs under cProfile and writes its figures there when it stops."""
    local.add_user("U1", "u1")
    services = tmp / f"bench-services-{uuid.uuid4().hex[:6]}.yml"
    services.write_text(yaml.safe_dump({"services": catalog}))
    port = free_port()
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SLACK_TEST_SIGNING_SECRET,
           "SLACK_API_URL": local.url, "REDIS_URL": redis_url, "SERVICES_FILE": str(services), "PORT": str(port),
           "LOG_LEVEL": "WARNING", "REDIS_NAMESPACE": namespace}
    env.pop("SLACK_APP_TOKEN", None)
    env.pop("HTTP_WORKERS", None)  # unset: the default, one process per usable core
    if http_workers is not None:
        env["HTTP_WORKERS"] = str(http_workers)
    profiler = ["-m", "cProfile", "-o", str(profile)] if profile else []
    server = subprocess.Popen([sys.executable, *profiler, "-m", "bot", "run", *([] if worker else ["--no-worker"])],
                              env=env)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            await _wait_healthy(http, port)
        yield port, namespace, server.pid
    finally:
        server.terminate()
        server.wait(timeout=30)


async def ack_latency(local: LocalSlack, redis_url: str, tmp: Path, n: int = 200, bursts: int = BURSTS,
                      http_workers: int | None = None, busy_checks: int = 0) -> AckFigures:
    """Bursts of `n` signed /diagnose commands at once, each in its own channel so each really queues a run.
    With `busy_checks`, the server's own worker first gets that many slow checks to run."""
    catalog: dict = {"api": {"http": [{"url": "http://127.0.0.1:9/"}]}}
    async with contextlib.AsyncExitStack() as stack:
        if busy_checks:  # a service whose 50 checks each hold a worker slot for 2 s
            slow = stack.enter_context(local_http_server({"/slow": Reply(200, delay_s=2.0)}))
            catalog["slow"] = {"http": [{"url": slow.url(f"/slow?{i}"), "samples": 1, "timeout_s": 5}
                                        for i in range(50)]}
        port, namespace, _ = await stack.enter_async_context(
            bot_process(local, redis_url, tmp, catalog, http_workers=http_workers, worker=bool(busy_checks)))
        redis = aioredis.Redis.from_url(redis_url)
        stack.push_async_callback(redis.aclose)
        figures = AckFigures([])
        if busy_checks:  # queue the backlog: 10 runs x 50 checks, in channels the worker can post to
            channels = [local.add_channel(f"busy-{uuid.uuid4().hex[:8]}", members=["U1"])
                        for _ in range(busy_checks // 50)]
            await _fire(port, [_request(local, port, c, "slow") for c in channels])
            await asyncio.sleep(1.0)
        for _ in range(2):  # steady state, in every server process: Bolt's auth.test, pools, heap grown to a burst
            await _fire(port, [_request(local, port, f"CWARM{uuid.uuid4().hex[:8]}") for i in range(n)])
        if busy_checks:
            figures.queue_before = await Queue(redis, namespace).stats()
        for _ in range(bursts):
            # With a worker running, the runs these commands queue must have real channels to post to.
            channels = ([local.add_channel(f"ack-{uuid.uuid4().hex[:8]}", members=["U1"]) for _ in range(n)]
                        if busy_checks else [f"CBENCH{uuid.uuid4().hex[:8]}" for _ in range(n)])
            figures.bursts.append(await _fire(port, [_request(local, port, channel) for channel in channels]))
            await asyncio.sleep(0.2)
        if busy_checks:
            figures.queue_after = await Queue(redis, namespace).stats()
        return figures


async def bare_server_latency(local: LocalSlack, n: int = 200, bursts: int = BURSTS) -> AckFigures:
    """The baseline: the same requests against the bot's HTTP stack serving a fixed answer (benchmarks/bare_asgi)."""
    with bare_server() as port:
        for _ in range(2):
            await _fire(port, [_request(local, port, "CWARM") for _ in range(n)])
        figures = AckFigures([])
        for _ in range(bursts):
            figures.bursts.append(await _fire(port, [_request(local, port, "CBARE") for _ in range(n)]))
            await asyncio.sleep(0.2)
        return figures


@contextlib.contextmanager
def minimal_bolt(local: LocalSlack, profile: Path | None = None,
                 redis_url: str | None = None) -> Iterator[tuple[int, int]]:
    """benchmarks/minimal_bolt (Bolt with the bot's settings, a fixed ack) in its own process like the bot; yields
    (port, pid) once it answers. With `profile`, under cProfile like the bot's; with `redis_url`, each command is
    written to a Redis stream before the ack."""
    port = free_port()
    env = {**os.environ, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SLACK_TEST_SIGNING_SECRET,
           "SLACK_API_URL": local.url, **({"MINIMAL_BOLT_REDIS_URL": redis_url} if redis_url else {})}
    profiler = ["-m", "cProfile", "-o", str(profile)] if profile else []
    server = subprocess.Popen([sys.executable, *profiler, "-m", "benchmarks.minimal_bolt", str(port)], env=env)
    try:
        _wait_answers(f"http://127.0.0.1:{port}/healthz")
        yield port, server.pid
    finally:
        # uvicorn raises the signal again once it has stopped: SIGINT then unwinds through cProfile, which writes
        # its figures; SIGTERM would end the process first.
        server.send_signal(signal.SIGINT if profile else signal.SIGTERM)
        server.wait(timeout=30)


@dataclass
class Contenders:
    bolt: AckFigures  # the minimal Bolt app
    bolt_redis: AckFigures  # the same, writing each command to a Redis stream first
    bot: AckFigures


async def bot_against_bolt(local: LocalSlack, redis_url: str, tmp: Path, n: int = 200, bursts: int = BURSTS,
                           profiles: Path | None = None) -> Contenders:
    """The bot's one HTTP process (`chatops run --no-worker`, HTTP_WORKERS=1), the minimal Bolt app, and that app
    writing each command to Redis, all up at once and sent bursts in turn (Bolt, Bolt + Redis, bot, …), so a
    shift in the machine's load falls on all alike. With `profiles` (a folder), Bolt and the bot run under cProfile
    and write bolt.prof and bot.prof there."""
    catalog: dict = {"api": {"http": [{"url": "http://127.0.0.1:9/"}]}}
    with minimal_bolt(local, profiles and profiles / "bolt.prof") as (bolt_port, bolt_pid), \
            minimal_bolt(local, redis_url=redis_url) as (redis_port, redis_pid):
        async with bot_process(local, redis_url, tmp, catalog, http_workers=1, worker=False,
                               profile=profiles and profiles / "bot.prof") as (port, _, pid):
            servers = [(bolt_port, bolt_pid, "CBOLT"), (redis_port, redis_pid, "CREDIS"), (port, pid, "")]
            for _ in range(2):  # steady state in all: pools, caches, heap grown to a burst
                for server_port, _, channel in servers:
                    await _fire(server_port, [_request(local, server_port, channel or _fresh_channel())
                                              for _ in range(n)])
            figures = [AckFigures([]) for _ in servers]
            for _ in range(bursts):
                for (server_port, server_pid, channel), into in zip(servers, figures, strict=True):
                    requests = [_request(local, server_port, channel or _fresh_channel()) for _ in range(n)]
                    with into.cpu_of(server_pid):
                        into.bursts.append(await _fire(server_port, requests))
                    await asyncio.sleep(0.2)
    return Contenders(*figures)


def _fresh_channel() -> str:
    return f"CBENCH{uuid.uuid4().hex[:8]}"  # the bot's run per channel and service: a fresh one queues a run


def ratio_line(bot: AckFigures, bolt: AckFigures, name: str = "the minimal Bolt app", target: str = "1.2") -> str:
    """The bot's p99 over a baseline's: the typical burst's (the median of each one's burst p99s, the judged
    figure), over all acks, and each bot burst against the baseline's burst of the same round."""
    pairs = sorted(pct(b, 99) / pct(a, 99) for a, b in zip(bolt.bursts, bot.bursts, strict=True))
    goal = f" (target ≤ {target})" if target else ""
    return (f"median burst p99 {bot.median_burst_p99:.1f} ms against {bolt.median_burst_p99:.1f} ms: "
            f"{bot.median_burst_p99 / bolt.median_burst_p99:.2f} × {name}{goal}; over all acks "
            f"{pct(bot.all, 99):.1f} against {pct(bolt.all, 99):.1f} ms, {pct(bot.all, 99) / pct(bolt.all, 99):.2f} ×; "
            f"burst by burst {', '.join(f'{r:.2f}' for r in pairs)}")


@contextlib.contextmanager
def bare_server(delay_s: float = 0.0) -> Iterator[int]:
    """benchmarks/bare_asgi in its own process; yields its port once it answers."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.bare_asgi", str(port), str(delay_s)])
    try:
        _wait_answers(f"http://127.0.0.1:{port}/")
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


def _request(local: LocalSlack, port: int, channel: str, service: str = "api") -> bytes:
    """A complete signed HTTP request, built before the clock starts so the client costs next to nothing."""
    body = urlencode({"command": "/diagnose", "text": service, "channel_id": channel, "user_id": "U1",
                      "team_id": "T0LOCAL", "user_name": "u", "channel_name": "c",
                      "response_url": local.response_url(), "trigger_id": channel})
    headers = {**signed_headers(body, SLACK_TEST_SIGNING_SECRET), "Host": f"127.0.0.1:{port}",
               "Content-Length": str(len(body)), "Connection": "close"}
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"POST /slack/events HTTP/1.1\r\n{head}\r\n{body}".encode()


async def _fire(port: int, requests: list[bytes], settle_s: float = 0.5) -> list[float]:
    """Open every connection first, then send all requests at once; each latency is send → full response."""
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in requests]
    await asyncio.sleep(settle_s)  # let the server accept them all: the figure is about answering, not accepting

    async def one(connection: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes) -> float:
        reader, writer = connection
        started = time.perf_counter()
        writer.write(request)
        response = await reader.read()  # the server closes after answering (Connection: close)
        elapsed = (time.perf_counter() - started) * 1000
        writer.close()
        assert response.startswith(b"HTTP/1.1 200") and b"Queued" in response, response[:300]
        return elapsed

    return list(await asyncio.gather(*(one(c, r) for c, r in zip(connections, requests, strict=True))))


def _wait_answers(url: str) -> None:
    for _ in range(200):
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=5).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


async def _wait_healthy(http: httpx.AsyncClient, port: int) -> None:
    for _ in range(200):
        try:
            if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("the bot did not become healthy")


async def diagnosis_overhead(local: LocalSlack, redis_url: str, tmp: Path, runs: int = 9) -> tuple[list, list, list]:
    """Ratios (wall ÷ 300 ms) of in-process runs and of command → verdict runs through `chatops run`, and one
    check's own duration when it runs alone (its 300 ms answer plus the round trip), in ms."""
    with bare_server(CHECK_S) as service_port:
        spec = {"http": [{"url": f"http://127.0.0.1:{service_port}/c{i}", "samples": 1, "timeout_s": 5}
                         for i in range(10)]}
        service = parse_services({"services": {"api": spec}}).services["api"]
        alone = parse_services({"services": {"api": {"http": spec["http"][:1]}}}).services["api"]
        in_process, check_ms = [], []
        for run in range(runs + 1):  # run 0 warms imports and is not counted
            started = time.perf_counter()
            results = await run_service("api", service)
            assert all(r.status.value == "ok" for r in results), [r.summary for r in results]
            if run:
                in_process.append((time.perf_counter() - started) / CHECK_S)
                # Alone, so the denominator holds no contention from the other nine: that is overhead.
                check_ms.extend(r.duration_ms for r in await run_service("api", alone))
        through_queue = []
        async with bot_process(local, redis_url, tmp, {"api": spec}, http_workers=None, worker=True) as (port, *_):
            for run in range(runs + 1):  # run 0 warms connections and caches and is not counted
                # Each run in a fresh channel: Slack's per-channel pace (1 msg/s after a burst) would otherwise
                # charge one run for the previous run's replies, which is not what this figure is about.
                channel = local.add_channel(f"bench-{uuid.uuid4().hex[:8]}", members=["U1"])
                request = _request(local, port, channel)
                started = time.time()  # LocalSlack stamps each call it receives with time.time()
                await _fire(port, [request], settle_s=0)
                verdict = None
                while verdict is None:
                    await asyncio.sleep(0.02)
                    verdict = next((c for c in local.calls_to("chat.update") if c.params.get("channel") == channel
                                    and "looks healthy" in c.params.get("text", "")), None)
                if run:
                    through_queue.append((verdict.at - started) / CHECK_S)
                # Its ten replies, paced by Slack's per-channel limit (a burst, then 1/s), hold worker slots while
                # they wait: the next run starts once they are all out.
                while sum(c.params.get("channel") == channel and c.status == 200
                          for c in local.calls_to("chat.postMessage")) < 1 + len(spec["http"]):
                    await asyncio.sleep(0.1)
        return in_process, through_queue, check_ms


# What a request costs is spent in these modules; start-up (imports, the runtime) and the idle loop are not.
REQUEST_PATH = r"slack_bolt|slack_sdk|uvicorn|httptools|redis/|/handlers/|/bot/(?!app/cli)|minimal_bolt|parse\.py"


def print_profiles(folder: Path, requests: int) -> None:
    """Per process, the CPU its requests cost (cProfile's time in the ASGI app, which counts a coroutine only
    while it runs) and the functions that cost most, per request. cProfile slows the code it watches ~2×: read
    the shares, not the milliseconds."""
    for name in ("bolt", "bot"):
        stats = pstats.Stats(str(folder / f"{name}.prof"))
        in_app = max(cum for (path, _, func), (_, _, _, cum, _) in stats.stats.items()  # type: ignore[attr-defined]
                     if path.endswith("proxy_headers.py") and func == "__call__")
        print(f"  {name}: {in_app / requests * 1000:.2f} ms of CPU per request in the ASGI app "
              f"({requests} requests, warm-up included); costliest functions on the request path:")
        stats.sort_stats("cumulative").print_stats(REQUEST_PATH, 30)


def _backlog(stats: QueueStats | None) -> str:
    return f"{stats.depth} queued, {stats.pending} running" if stats else "?"


async def main(only: str = "") -> None:
    """Every figure; with `acks`, only the bot's one process against the minimal Bolt app; with `profile`, that
    comparison with the bot under cProfile, and its 25 costliest functions (which inflates the bot's figures)."""
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis", aof=True) as redis, \
            LocalSlack(bot_token="xoxb-test-token") as local:
        print("/diagnose ack latency: bursts of 200 concurrent signed requests, HTTP mode, loopback; "
              "target p99 < 100 ms")
        profiles = Path(tmp) if only == "profile" else None
        runs = await bot_against_bolt(local, redis.url, Path(tmp), profiles=profiles)
        bolt, bot = runs.bolt, runs.bot
        print(f"  baseline, the minimal Bolt app (benchmarks/minimal_bolt.py, one process): {bolt.line()}")
        print(f"  baseline, the same app writing each command to a Redis stream first (one XADD through redis-py): "
              f"{runs.bolt_redis.line()}")
        print(f"  chatops run --no-worker, HTTP_WORKERS=1, bursts taking turns with both: {bot.line()}")
        print(f"    {ratio_line(bot, bolt)}")
        # Judged on the typical burst: the p99 over all acks is the slowest burst's of either process, and one
        # slow burst (of the bot or of Bolt) moved that ratio between 1.06 and 1.61 × in three runs of one build.
        summarize_ratio("/diagnose ack p99, median burst of 200, one process", bot.median_burst_p99,
                        bolt.median_burst_p99, "ms", limit=1.2, baseline_name="minimal Bolt")
        summarize("/diagnose ack p99, all bursts, one process", pct(bot.all, 99), "ms",
                  baseline=pct(bolt.all, 99), baseline_name="minimal Bolt")
        if profiles is None:  # under cProfile the bot and Bolt are slowed; Bolt writing to Redis is not
            print(f"    {ratio_line(bot, runs.bolt_redis, 'Bolt writing to Redis', target='')}")
            summarize("/diagnose ack p99, median burst, vs Bolt + XADD",
                      bot.median_burst_p99, "ms", baseline=runs.bolt_redis.median_burst_p99,
                      baseline_name="Bolt + XADD")
        if profiles is not None:
            print_profiles(profiles, requests=len(bolt.all) + 2 * 200)
        if only:
            return
        bare = await bare_server_latency(local)
        print(f"  baseline, the same HTTP stack answering a fixed ack: {bare.line()}")
        figures = await ack_latency(local, redis.url, Path(tmp), http_workers=2)
        print(f"  chatops run --no-worker, HTTP_WORKERS=2: {figures.line()}")
        for workers in (1, None):
            busy = await ack_latency(local, redis.url, Path(tmp), http_workers=workers, busy_checks=500)
            print(f"  chatops run, HTTP_WORKERS={workers or f'unset (= {default_process_count()} here)'}, its worker "
                  f"busy on 500 queued checks (backlog {_backlog(busy.queue_before)} at the first burst, "
                  f"{_backlog(busy.queue_after)} after the last): {busy.line()}")
        in_process, through_queue, check_ms = await diagnosis_overhead(local, redis.url, Path(tmp))
        print_overhead(in_process, through_queue, check_ms)


def print_overhead(in_process: list[float], through_queue: list[float], check_ms: list[float]) -> None:
    """The issue's ratio is against the slowest check, which takes its 300 ms answer plus a round trip: divide by
    what one check measures alone, and show the ratio to the nominal 300 ms beside it."""
    slowest = statistics.median(check_ms) / 1000 / CHECK_S
    measured = [r / slowest for r in through_queue]
    print(f"diagnosis overhead, 10 checks x {CHECK_S * 1000:.0f} ms (one check alone measures "
          f"{statistics.median(check_ms):.0f} ms): in-process runner ÷ slowest check "
          f"{statistics.median(in_process) / slowest:.2f}; command → verdict through queue, worker and Slack "
          f"÷ slowest check {statistics.median(measured):.2f} (median of {len(measured)}: "
          f"{', '.join(f'{r:.2f}' for r in measured)}; target ≤ 1.2); ÷ the nominal 300 ms "
          f"{statistics.median(through_queue):.2f}")
    summarize_ratio("diagnosis: command → verdict, 10 checks", statistics.median(through_queue) * CHECK_S * 1000,
                    statistics.median(check_ms), "ms", limit=1.2, baseline_name="one check alone")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:2]))
