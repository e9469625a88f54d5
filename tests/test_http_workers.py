"""`chatops run` with HTTP_WORKERS=2, as operators run it: two processes answer Slack on one port, and whichever
one the kernel hands a request to, /healthz and /metrics tell the same story (the parent's, where the worker is).
The children never outlive the parent."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from bot.app import http_workers
from bot.app.http_workers import cgroup_cpu_quota
from tests.app_harness import BOT_TOKEN, free_port
from tests.fixtures.slack import SLACK_TEST_SIGNING_SECRET, signed_headers

ROOT = Path(__file__).resolve().parent.parent


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def gone(pid: int) -> bool:
    """Exited (or a zombie nobody has reaped yet: it no longer runs or holds sockets)."""
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) == "Z"
    except OSError:
        return True


def wait_for(condition, timeout_s: float = 30.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"{what}: not met within {timeout_s} s")


def get(port: int, path: str) -> httpx.Response | None:
    try:  # a new connection each time, so the kernel picks a process afresh
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5, headers={"Connection": "close"})
    except httpx.TransportError:
        return None


@contextlib.contextmanager
def http_server_processes(local_slack, redis_url: str | None, tmp_path: Path,  # type: ignore[no-untyped-def]
                          *flags: str, **settings: str) -> Iterator[tuple[subprocess.Popen, int]]:
    """`chatops run [flags]` in HTTP mode with HTTP_WORKERS=2; stopped with SIGTERM, which must be clean.
    `redis_url=None`: no REDIS_URL at all (the Redis settings are in `settings`, e.g. REDIS_SENTINELS)."""
    local_slack.add_user("U1", "u1")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "REDIS_URL"))}
    env.update(SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SLACK_TEST_SIGNING_SECRET, SLACK_API_URL=local_slack.url,
               PORT=str(port), HTTP_WORKERS="2", CHATOPS_DATA_DIR=str(tmp_path / "data"),
               SERVICES_FILE=str(ROOT / "services.example.yml"), REDIS_NAMESPACE=f"hw{port}")
    env.update({"REDIS_URL": redis_url} if redis_url else {}, **settings)
    server = subprocess.Popen([sys.executable, "-m", "bot", "run", *flags], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield server, port
    finally:
        stopped_by_us = server.poll() is None
        if stopped_by_us:
            server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
        assert "Traceback" not in output, output[-3000:]
        assert server.returncode == 0 or not stopped_by_us, output[-3000:]  # SIGTERM: a clean stop


@pytest.fixture
def two_process_server(local_slack, redis_url: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    with http_server_processes(local_slack, redis_url, tmp_path) as server:
        yield server


def test_without_a_worker_the_parent_answers_beside_one_child(local_slack, redis_url: str, tmp_path: Path) -> None:
    with http_server_processes(local_slack, redis_url, tmp_path, "--no-worker") as (server, port):
        wait_for(lambda: (r := get(port, "/healthz")) is not None and r.status_code == 200, what="server up")
        assert len(children_of(server.pid)) == 1
        assert all(get(port, "/metrics").status_code == 200 for _ in range(10))


def test_bind_address_decides_where_every_process_listens(local_slack, redis_url: str, tmp_path: Path) -> None:
    """BIND_ADDRESS=127.0.0.2: the port answers there and nowhere else, for the parent and the children alike."""
    with http_server_processes(local_slack, redis_url, tmp_path, BIND_ADDRESS="127.0.0.2") as (server, port):
        def answers(host: str) -> bool:
            try:
                return httpx.get(f"http://{host}:{port}/healthz", timeout=2,
                                 headers={"Connection": "close"}).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(lambda: answers("127.0.0.2"), what="/healthz on 127.0.0.2")
        assert len(children_of(server.pid)) == 2
        assert not any(answers("127.0.0.1") for _ in range(5))


def test_the_children_answer_and_health_and_metrics_are_the_parents(two_process_server, local_slack) -> None:
    """`chatops run` runs the worker, so both HTTP processes are children and the parent keeps off the port."""
    server, port = two_process_server
    health = wait_for(lambda: (r := get(port, "/healthz")) is not None and r.status_code == 200 and r,
                      what="/healthz 200 once both processes serve")
    assert health.json() == {"ok": True}
    children = children_of(server.pid)
    assert len(children) == 2
    assert all("--http-child" in Path(f"/proc/{child}/cmdline").read_text() for child in children)

    for _ in range(20):  # every one lands on a child, which hands it to the parent
        assert get(port, "/healthz").status_code == 200
        metrics = get(port, "/metrics")
        assert metrics.status_code == 200
        assert "chatops_worker_loop_progress_age_seconds" in metrics.text  # only the parent runs a worker

    for i in range(20):
        body = urlencode({"command": "/diagnose", "text": "nonexistent-service", "channel_id": f"C{i}",
                          "user_id": "U1", "team_id": "T0LOCAL", "response_url": local_slack.response_url()})
        answer = httpx.post(f"http://127.0.0.1:{port}/slack/events", content=body, timeout=5,
                            headers={**signed_headers(body, SLACK_TEST_SIGNING_SECRET), "Connection": "close",
                                     "Content-Type": "application/x-www-form-urlencoded"})
        assert answer.status_code == 200 and 'Unknown service \\"nonexistent-service\\"' in answer.text


def test_a_child_that_exits_fails_health(two_process_server) -> None:
    server, port = two_process_server
    wait_for(lambda: (r := get(port, "/healthz")) is not None and r.status_code == 200, what="server up")
    child = children_of(server.pid)[0]

    os.kill(child, signal.SIGKILL)
    unhealthy = wait_for(lambda: (r := get(port, "/healthz")) is not None and r.status_code == 503 and r,
                         what="/healthz 503 after a child died")
    assert f"HTTP process {child} exited" in unhealthy.json()["problem"]


def test_the_child_does_not_outlive_a_killed_parent(two_process_server) -> None:
    server, port = two_process_server
    wait_for(lambda: (r := get(port, "/healthz")) is not None and r.status_code == 200, what="server up")
    children = children_of(server.pid)

    server.kill()  # no chance to stop its children: the kernel's parent-death signal must
    server.wait(timeout=10)
    wait_for(lambda: all(gone(child) for child in children), timeout_s=15, what="the orphaned children exit")
    assert get(port, "/healthz") is None  # nobody holds the port any more


@pytest.mark.parametrize(("files", "quota"), [
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),
    ({}, None),
])
def test_the_default_process_count_respects_a_containers_cpu_quota(tmp_path: Path, files: dict, quota) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_quota(tmp_path) == quota


def test_one_process_per_usable_core_at_most_four(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setattr(http_workers, "cgroup_cpu_quota", lambda: None)
    assert http_workers.default_process_count() == 4
    monkeypatch.setattr(http_workers, "cgroup_cpu_quota", lambda: 1.5)  # a pod limited to 1.5 CPUs
    assert http_workers.default_process_count() == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.setattr(http_workers, "cgroup_cpu_quota", lambda: None)
    assert http_workers.default_process_count() == 1


def test_sigterm_while_the_children_start_stops_everything_cleanly(local_slack, redis_url: str,
                                                                   tmp_path: Path) -> None:
    with http_server_processes(local_slack, redis_url, tmp_path) as (server, port):
        children = wait_for(lambda: (found := children_of(server.pid)) and len(found) == 2 and found,
                            what="the children were started")
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        wait_for(lambda: all(gone(child) for child in children), timeout_s=15, what="the children stop")
    assert server.returncode == 0
