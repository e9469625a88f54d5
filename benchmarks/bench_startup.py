"""Start-up and memory of an HTTP process, against the minimal Bolt app (benchmarks/minimal_bolt.py) started the
same way in the same run, and that app writing each command to a Redis stream (redis-py's share of the figures).

For each round, each server is started as its own process: the clock runs from `Popen` to the first 200 on
GET /healthz (polled every 10 ms), and the CPU time the process had used by then is read from /proc (user + system:
less swayed than the clock by other work on a shared machine); then it answers ten signed `/diagnose api` commands,
and its RSS is read from /proc (so what the first requests load is counted). The bot is `chatops run --no-worker`
with HTTP_WORKERS=1 — one process doing what each HTTP child does. Rounds alternate the two so load drift hits
both alike.

Both run with bytecode caching on (into a private PYTHONPYCACHEPREFIX) after one uncounted start, as in the
image, where `pip install` compiled every module: this checkout sets PYTHONDONTWRITEBYTECODE, which would charge
the bot, and not the installed Bolt, ~0.3 s a start for compiling its own source.

    .venv/bin/python -m benchmarks.bench_startup

Then the services file's growth: files of 10 / 100 / 500 services, each parsed as the bot does (libyaml's loader,
then validation) and listed by `/diagnose list` (its first page: render time, characters, pages), as a table with
each row's ratio to the 10-service row.

Targets (issue #20): start → /healthz ≤ 1.3 × and RSS ≤ 1.3 × the minimal Bolt app. Prints figures; not a test.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

import httpx
import yaml

from benchmarks import summarize_limit, summarize_startup
from benchmarks.bench_queue import rss_kib
from bot.app.redis_server import RedisServer
from bot.slack.local import LocalSlack
from tests.app_harness import BOT_TOKEN, free_port
from tests.fixtures.slack import SLACK_TEST_SIGNING_SECRET, signed_headers

ROUNDS = 5
ACKS = 10
SERVICE_COUNTS = (10, 100, 500)
REPEATS = 5  # of each parse and render; the median is shown


def minimal_bolt(port: int, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "benchmarks.minimal_bolt", str(port)], env=env)


def bolt_writing_to(redis_url: str) -> Callable[[int, dict[str, str]], subprocess.Popen]:
    """The minimal Bolt app writing each command to a Redis stream (redis-py imported at start, one XADD an ack):
    what Bolt plus a durable queue costs before any feature of the bot's."""
    def start(port: int, env: dict[str, str]) -> subprocess.Popen:
        return minimal_bolt(port, {**env, "MINIMAL_BOLT_REDIS_URL": redis_url})

    return start


def chatops_http(tmp: Path, redis_url: str) -> Callable[[int, dict[str, str]], subprocess.Popen]:
    services = tmp / "services.yml"
    services.write_text("services:\n  api:\n    http:\n      - url: http://127.0.0.1:9/\n")

    def start(port: int, env: dict[str, str]) -> subprocess.Popen:
        env = {**env, "REDIS_URL": redis_url, "SERVICES_FILE": str(services), "PORT": str(port), "HTTP_WORKERS": "1",
               "REDIS_NAMESPACE": f"boot{uuid.uuid4().hex[:8]}"}
        return subprocess.Popen([sys.executable, "-m", "bot", "run", "--no-worker"], env=env)

    return start


def one_start(start: Callable[[int, dict[str, str]], subprocess.Popen], env: dict[str, str],
              local: LocalSlack) -> tuple[float, float, float]:
    """(seconds from Popen to the first 200 on /healthz, CPU seconds used by then, RSS in MiB after ten acks)."""
    port = free_port()
    started = time.perf_counter()
    proc = start(port, env)
    try:
        with httpx.Client(timeout=5) as http:
            booted = _first_200(http, f"http://127.0.0.1:{port}/healthz", started)
            cpu = cpu_seconds(proc.pid)
            for i in range(ACKS):
                body = urlencode({"command": "/diagnose", "text": "api", "channel_id": f"CBOOT{i}",
                                  "user_id": "U1", "team_id": "T0LOCAL", "user_name": "u", "channel_name": "c",
                                  "response_url": local.response_url(), "trigger_id": f"t{i}"})
                answer = http.post(f"http://127.0.0.1:{port}/slack/events", content=body,
                                   headers=signed_headers(body, SLACK_TEST_SIGNING_SECRET))
                assert answer.status_code == 200 and "Queued" in answer.text, answer.text[:300]
            return booted, cpu, rss_kib(proc.pid) / 1024
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat fields 14 and 15, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _first_200(http: httpx.Client, url: str, started: float) -> float:
    deadline = started + 30
    while time.perf_counter() < deadline:
        try:
            if http.get(url).status_code == 200:
                return time.perf_counter() - started
        except httpx.TransportError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{url} did not answer 200 within 30 s")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as redis, \
            LocalSlack(bot_token=BOT_TOKEN) as local:
        local.add_user("U1", "u1")
        env = {**os.environ, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SLACK_TEST_SIGNING_SECRET,
               "SLACK_API_URL": local.url, "LOG_LEVEL": "WARNING"}
        env.pop("SLACK_APP_TOKEN", None)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        servers = {"minimal Bolt app": minimal_bolt, "Bolt writing to Redis": bolt_writing_to(redis.url),
                   "chatops run --no-worker": chatops_http(Path(tmp), redis.url)}
        for start in servers.values():  # writes the bytecode cache
            one_start(start, env, local)
        figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in servers}
        for _ in range(ROUNDS):
            for name, start in servers.items():
                figures[name].append(one_start(start, env, local))
        print(f"HTTP process start → first 200 on /healthz, and RSS after {ACKS} acks (median of {ROUNDS} starts; "
              f"targets ≤ 1.3 × the minimal Bolt app)")
        base_s, base_cpu, base_mib = (statistics.median(f[i] for f in figures["minimal Bolt app"]) for i in (0, 1, 2))
        for name, runs in figures.items():
            boot_s, cpu, mib = (statistics.median(f[i] for f in runs) for i in (0, 1, 2))
            print(f"  {name:<25} start {boot_s * 1000:5.0f} ms ({boot_s / base_s:.2f} ×)   CPU to /healthz "
                  f"{cpu * 1000:5.0f} ms ({cpu / base_cpu:.2f} ×)   RSS {mib:5.1f} MiB ({mib / base_mib:.2f} ×)")
        boot_s, mib = (statistics.median(f[i] for f in figures["chatops run --no-worker"]) for i in (0, 2))
        summarize_startup(boot_s * 1000, base_s * 1000, mib, base_mib)
        services_growth(Path(tmp))


class _Listed:
    """What `/diagnose list` reads from the runtime: the services in use, and whether the file on disk was bad."""

    services_problem = None

    def __init__(self, services: object) -> None:
        self._services = services

    def services(self) -> object:
        return self._services


def services_file(tmp: Path, count: int) -> Path:
    """`count` services of the example file's shape: probes, DNS, TLS, TCP and a database each."""
    services = {f"svc-{i:04d}": {
        "description": f"Service number {i}, owned by team {i % 17}",
        "http": [{"url": f"https://svc-{i}.example.com/health", "samples": 3, "latency_ms": 800}],
        "dns": [f"svc-{i}.example.com"], "tls": [f"svc-{i}.example.com:443"], "tcp": [f"db-{i}.internal:5432"],
        "database": {"dsn_env": f"SVC_{i}_DSN"}} for i in range(count)}
    path = tmp / f"services-{count}.yml"
    path.write_text(yaml.safe_dump({"services": services}))
    return path


def _parse_then_list(path: Path) -> tuple[float, float, tuple[object, tuple[str, list]]]:
    """Median seconds to parse the file and to render `/diagnose list` page 1 from what was just parsed (each
    listing plans its services afresh, as the first listing after an edit does), and the last of each."""
    from bot.settings import load_services
    from handlers.commands.diagnose import services_listing

    parse_times, list_times = [], []
    for _ in range(REPEATS):
        started = time.perf_counter()
        parsed = load_services(path)
        parsed_at = time.perf_counter()
        listing = services_listing(_Listed(parsed))
        list_times.append(time.perf_counter() - parsed_at)
        parse_times.append(parsed_at - started)
    return statistics.median(parse_times), statistics.median(list_times), (parsed, listing)


def services_growth(tmp: Path) -> None:
    from bot.settings import load_services
    from handlers.commands.diagnose import services_listing

    services_listing(_Listed(load_services(services_file(tmp, 1))))  # imports the checks planning asks: uncounted
    loader = "libyaml (CSafeLoader)" if hasattr(yaml, "CSafeLoader") else "pure-Python SafeLoader (no libyaml!)"
    print(f"services file growth (parse: {loader} + validation; `/diagnose list` page 1 of a freshly parsed file; "
          f"median of {REPEATS}; ratio to 10 services)")
    print(f"  {'services':>8}  {'file KiB':>8}  {'parse ms':>9} {'ratio':>6}  {'list ms':>8} {'ratio':>6}  "
          f"{'page 1 chars':>12} {'ratio':>6}  {'pages':>5}")
    base, last = None, (0, 0, 0)
    for count in SERVICE_COUNTS:
        path = services_file(tmp, count)
        parse_s, list_s, (parsed, (text, blocks)) = _parse_then_list(path)
        chars = len(text) + sum(len(b.get("text", {}).get("text", "")) for b in blocks)
        pages = _pages(parsed)
        base, last = base or (parse_s, list_s, chars), (count, pages, chars)
        print(f"  {count:>8}  {path.stat().st_size / 1024:>8.0f}  {parse_s * 1000:>9.1f} {parse_s / base[0]:>5.1f}×  "
              f"{list_s * 1000:>8.1f} {list_s / base[1]:>5.1f}×  {chars:>12,} {chars / base[2]:>5.1f}×  {pages:>5}")
    count, pages, chars = last  # the largest file
    summarize_limit(f"/diagnose list page 1, {count} services ({pages} pages)", chars, "chars", 40_000)


def _pages(parsed: object) -> int:
    from bot.slack.mrkdwn import page_lines
    from handlers.commands.diagnose import LISTING_PAGE_TEXT, service_line

    return len(page_lines([service_line(n, s) for n, s in sorted(parsed.services.items())], LISTING_PAGE_TEXT))


if __name__ == "__main__":
    main()
