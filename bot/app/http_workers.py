"""HTTP_WORKERS > 1: more processes answering Slack on the same port, started and watched by `chatops run`.

Acks are CPU-bound (Bolt, the signature, one Redis round trip), so one process answers on one core; with
SO_REUSEPORT the kernel spreads connections over several. The first process (the parent) keeps the queue
worker, the metrics and the health that count. The children only answer Slack, and they hand `GET /healthz` and
`GET /metrics` to the parent over a private loopback socket, so a load balancer or Prometheus sees one coherent
server whichever process the kernel picked. A parent that runs the worker starts HTTP_WORKERS children and
leaves the public port to them, so acks never wait behind the worker's event loop; with `--no-worker` it starts
HTTP_WORKERS - 1 and answers too.

    parent  chatops run                 starts the children, opens the public PORT once they serve (unless it
                                        runs the worker), plus a private 127.0.0.1:<n>; /healthz fails when a
                                        child has exited
    child   chatops run --no-worker --http-child URL --parent-pid P --ready-fd F
                                        public PORT; writes its pid to F once listening; gets SIGTERM when the
                                        parent dies (Linux), so no orphan keeps the port with old code
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from bot.app.http_server import Response, Route, json_response

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # linux/prctl.h
DEFAULT_MAX_PROCESSES = 4  # past this, memory (~100 MB a process) buys little for a chat bot's bursts
FORWARD_TIMEOUT_S = 5.0  # longer than the parent's own budgets (queue stats 2 s): its answer, not ours
STARTUP_TIMEOUT_S = 60.0
FORWARDED = ("/healthz", "/metrics")


def default_process_count() -> int:
    """HTTP_WORKERS when unset: one process per CPU core this process may use, at most DEFAULT_MAX_PROCESSES."""
    return max(1, min(usable_cpus(), DEFAULT_MAX_PROCESSES))


def usable_cpus() -> int:
    """The cores this process may run on (affinity), lowered to its cgroup's CPU quota when a container runtime
    set one — a pod limited to 1 CPU on a 64-core node should not start 64 servers."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs' worth of time the cgroup may use per period (1.5 = one and a half cores), None when unlimited."""
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        quota, period = (root / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1: a quota of -1 means none
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


class ChildOptions(msgspec.Struct, frozen=True):
    """What a child is told on its command line (hidden options of `chatops run`)."""

    parent_url: str
    parent_pid: int
    ready_fd: int


class HttpChildren:
    """The parent's side: start the children, know which serve, and say so in /healthz."""

    def __init__(self, count: int, parent_url: str, env: dict[str, str]) -> None:
        self.count = count
        self.ready: set[int] = set()
        self._read_fd, write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        self._buffer = b""
        options = ["--http-child", parent_url, "--parent-pid", str(os.getpid()), "--ready-fd", str(write_fd)]
        try:
            self.procs = [subprocess.Popen([sys.executable, "-m", "bot", "run", "--no-worker", *options],
                                           env=env, pass_fds=(write_fd,)) for _ in range(count)]
        finally:
            os.close(write_fd)  # the children hold it now; EOF on ours once they have all gone
        asyncio.get_running_loop().add_reader(self._read_fd, self._on_ready)

    def _on_ready(self) -> None:
        try:
            chunk = os.read(self._read_fd, 4096)
        except BlockingIOError:
            return
        if not chunk:  # every child has closed its end
            asyncio.get_running_loop().remove_reader(self._read_fd)
            return
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self.ready.add(int(line))
            log.info("HTTP process %s is serving (%d of %d)", line.decode(), len(self.ready), self.count)

    async def wait_ready(self, stop: asyncio.Event, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Until every child serves (the parent opens its own port after them, so the server is either starting
        or whole), one has exited, `stop` is set, or `timeout_s` passed; /healthz says which it was."""
        deadline = time.monotonic() + timeout_s
        while len(self.ready) < self.count and time.monotonic() < deadline and not stop.is_set():
            if any(proc.poll() is not None for proc in self.procs):
                break
            await asyncio.sleep(0.05)
        if self.problem() and not stop.is_set():
            log.error("HTTP processes: %s; serving anyway, /healthz fails until this is fixed", self.problem())

    def problem(self) -> str | None:
        """For /healthz: None while every child serves."""
        for proc in self.procs:
            if proc.poll() is not None:
                return f"HTTP process {proc.pid} exited with code {proc.returncode}"
        starting = self.count - len(self.ready)
        return f"{starting} of {self.count} HTTP child processes still starting" if starting else None

    async def stop(self, timeout_s: float = 30) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                await asyncio.to_thread(proc.wait, timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("HTTP process %d did not stop in %.0f s; killing it", proc.pid, timeout_s)
                proc.kill()
        with contextlib.suppress(ValueError, RuntimeError):
            asyncio.get_running_loop().remove_reader(self._read_fd)
        os.close(self._read_fd)


def die_with_parent(parent_pid: int) -> None:
    """A child's first act: have the kernel send SIGTERM when the parent dies, and check it has not already (the
    parent may have died before the request was made, leaving this process to init)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d): this process may outlive its parent",
                        ctypes.get_errno())
    if os.getppid() != parent_pid:
        raise SystemExit("chatops: the parent server process is gone; not starting")


def signal_ready(ready_fd: int) -> None:
    os.write(ready_fd, f"{os.getpid()}\n".encode())
    os.close(ready_fd)


def parent_routes(parent_url: str) -> tuple[dict[tuple[str, str], Route], Any]:
    """A child's /healthz and /metrics: the parent's answers. Returns the routes and the client to close."""
    import httpx  # only a child forwards: a single process, or the parent, never needs an HTTP client here

    client = httpx.AsyncClient(base_url=parent_url, timeout=FORWARD_TIMEOUT_S)

    async def forward(scope: dict, body: bytes) -> Response:
        try:
            passed = {k.decode(): v.decode("latin-1") for k, v in scope.get("headers") or [] if k == b"authorization"}
            answer = await client.get(scope["path"], headers=passed)  # METRICS_TOKEN is the parent's to check
        except httpx.HTTPError as exc:
            return json_response(503, {"ok": False, "problem": f"the main server process did not answer "
                                                               f"({type(exc).__name__})"})
        return answer.status_code, {"content-type": answer.headers.get("content-type", "text/plain")}, answer.content

    return {("GET", path): forward for path in FORWARDED}, client
