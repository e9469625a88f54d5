"""How every process reaches Redis: one client built here from the settings, whatever the topology.

    single Redis   REDIS_URL (redis://, rediss://, unix://), or the private Redis a `chatops run` started
    Sentinel       REDIS_SENTINELS=host:port,... + REDIS_SENTINEL_MASTER: the client asks the sentinels for the
                   primary on every new connection, so after a failover it follows the promoted replica by itself;
                   REDIS_URL then only lends the data nodes' password, TLS (rediss://) and db
    Redis Cluster  REDIS_URL at any node (or a managed configuration endpoint): a cluster client that learns the
                   slot map and follows MOVED/ASK; chosen by REDIS_CLUSTER=true, or when REDIS_CLUSTER is unset and
                   the node answers `INFO cluster` with cluster_enabled:1 at start-up

`durable(redis, marker_key, what)` is the one place writes whose loss matters (escalation timers, page records,
incident records) wait for replicas: `WAIT <REDIS_WAIT_REPLICAS> <REDIS_WAIT_TIMEOUT_MS>`, on by default under
Sentinel, off unless REDIS_WAIT_REPLICAS is set on a single Redis or a cluster (whose primaries may have no
replicas). Replication is asynchronous; without it a write acknowledged a moment before the primary dies is gone
from the promoted replica. On a cluster the WAIT goes to the primary owning the marker key's slot, so the marker
must share the write's hash tag.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import redis
import redis.asyncio as aioredis
from redis._parsers import _AsyncHiredisParser, _AsyncRESP3Parser
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import AskError, MovedError, ReadOnlyError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

from bot.logs import Throttled
from bot.queue import slots
from bot.settings import Settings

log = logging.getLogger("bot.queue")

# A failover (down-after 1-5 s, then election and promotion) outlasts 3 jittered retries capped at 1 s: under
# Sentinel a short command waits out roughly that long instead of failing a user's command mid-failover.
SINGLE_RETRIES, SENTINEL_RETRIES = 3, 8
SENTINEL_QUERY_TIMEOUT_S = 0.5  # per sentinel; a dead one must not hold up finding the primary
MARKER_TTL_MS = 60_000
CLUSTER_PROBE_TIMEOUT_S = 2.0


class NoReplicasError(ResponseError):
    """NOREPLICAS: a primary with `min-replicas-to-write` refusing a write because too few replicas follow it.
    That is what a primary cut off from its replicas answers (one Sentinel is about to demote, or a stale one in a
    split brain): like READONLY, the write was refused, and a fresh connection may reach the current primary."""


class _Parser(_AsyncRESP3Parser):
    # redis-py has no class for NOREPLICAS (a bare ResponseError): this names it, so the client's retry and the
    # worker can tell it from a command's own error.
    EXCEPTION_CLASSES = {**_AsyncRESP3Parser.EXCEPTION_CLASSES, "NOREPLICAS": NoReplicasError}


class _CParser(_AsyncHiredisParser):
    # The same names with hiredis's C reader, which redis-py uses only when not given a parser class: on a burst of
    # `/diagnose` acks it parses each reply in a fraction of the pure-Python parser's CPU.
    EXCEPTION_CLASSES = _Parser.EXCEPTION_CLASSES


PARSER: type = _CParser if HIREDIS_AVAILABLE else _Parser  # hiredis is a dependency; its wheel may be missing

# Writes refused or lost for the node's sake, never the command's: retried on a fresh connection.
REFUSED_WRITES = (ReadOnlyError, NoReplicasError)


class WaitPolicy(msgspec.Struct, frozen=True):
    replicas: int
    timeout_ms: int


class DurabilityStats(msgspec.Struct):
    """Per process, for /metrics: durable writes, and those fewer replicas acknowledged than asked."""

    waits: int = 0
    short: int = 0


DURABILITY = DurabilityStats()
_policies: weakref.WeakKeyDictionary[Any, WaitPolicy] = weakref.WeakKeyDictionary()
_short_log = Throttled(log, per_minute=2)


def connect(settings: Settings, url: str | None = None, *, max_connections: int | None = None) -> aioredis.Redis:
    """The process's Redis client; `url` overrides REDIS_URL (a private Redis this process found or started)."""
    url = url or settings.redis_url
    options = _pool_options(settings, max_connections)
    if settings.redis_sentinels:
        client = _sentinel_client(settings, url, options)
    elif not url:
        raise ValueError("no Redis: set REDIS_URL or REDIS_SENTINELS")
    elif is_cluster(settings, url):
        client = _cluster_client(url, options)
    else:
        client = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(url, **options))
    _policies[client] = WaitPolicy(settings.wait_replicas, settings.redis_wait_timeout_ms)
    return client


async def initialized(client: aioredis.Redis) -> aioredis.Redis:
    """The client, ready to be shared by concurrent tasks. A cluster client loads its slot map on its first command;
    first commands sent concurrently before that reached the wrong nodes (MOVED), and the slot-map reloads those
    trigger dropped connections other tasks were using (`Connection closed by server`, measured with six workers
    starting at once). A plain or Sentinel client needs nothing."""
    if isinstance(client, RedisCluster):
        await client.initialize()
    return client


def is_cluster(settings: Settings, url: str) -> bool:
    """REDIS_CLUSTER when set; else whether the REDIS_URL node says it is a cluster node (`INFO cluster`)."""
    if settings.redis_cluster is not None:
        return settings.redis_cluster
    if url.startswith("unix://"):  # a cluster is reached over TCP only
        return False
    return _cluster_enabled(url)


def _cluster_enabled(url: str) -> bool:
    # Once per process at start-up, before any event loop work depends on Redis: a short blocking probe.
    probe = redis.Redis.from_url(url, socket_timeout=CLUSTER_PROBE_TIMEOUT_S,
                                 socket_connect_timeout=CLUSTER_PROBE_TIMEOUT_S)
    try:
        return bool(probe.info("cluster").get("cluster_enabled"))
    except RedisError as exc:
        log.warning("could not ask Redis whether it is a cluster node (%s): assuming a single Redis; set "
                    "REDIS_CLUSTER=true or false to skip the question", type(exc).__name__)
        return False
    finally:
        probe.close()


def _cluster_client(url: str, options: dict[str, Any]) -> RedisCluster:
    # The cluster client keeps one pool per node, and it raises when a pool is full rather than waiting for a free
    # connection: so no cap (redis-py's default), or a burst of commands would fail where a single Redis waits.
    # Its own bounded retry also covers MOVED/ASK, CLUSTERDOWN and a node that went away (the slot map reloads).
    kept = {k: options[k] for k in ("socket_timeout", "socket_connect_timeout", "health_check_interval", "retry")}
    client = RedisCluster.from_url(url, **kept)
    # RedisCluster takes no parser class, so NOREPLICAS from a primary would be a bare ResponseError. Its nodes'
    # connections are made from these keyword arguments (redis-py adds its own the same way): the nodes it will
    # discover take the shared ones, the start-up nodes were built already and hold their own. On a cluster the
    # client does not send a refused write again (its node connections retry nothing); the worker tells the
    # refusal from the command's own error and retries the job.
    for kwargs in (client.nodes_manager.connection_kwargs,
                   *(node.connection_kwargs for node in client.nodes_manager.startup_nodes.values())):
        kwargs["parser_class"] = PARSER
    return client


def _pool_options(settings: Settings, max_connections: int | None) -> dict[str, Any]:
    # A burst of commands must wait briefly for a connection, not fail: redis-py's default pool raises
    # MaxConnectionsError when exhausted, which turned a 200-command burst into "failed on our side" answers.
    # After a Redis restart the first command on each pooled connection meets "Connection closed by server";
    # redis-py 8 retries nothing unless told, so a bounded, jittered retry (the only one Redis calls get).
    # READONLY means the node we reached was demoted (a DNS endpoint that moved, a stale primary), NOREPLICAS that
    # it lost its replicas (an isolated primary): the write was refused, so retrying it on a fresh connection is
    # safe, and that connection reaches the current primary (under Sentinel it asks the sentinels again).
    retries = SENTINEL_RETRIES if settings.redis_sentinels else SINGLE_RETRIES
    return dict(
        max_connections=max_connections or max(64, _worker_slots(settings) + 16), timeout=5, socket_timeout=10,
        socket_connect_timeout=5, health_check_interval=30, parser_class=PARSER,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=retries,
                    supported_errors=(RedisConnectionError, RedisTimeoutError, *REFUSED_WRITES)))


def _worker_slots(settings: Settings) -> int:
    """Jobs a worker may run at once: its concurrency and the slots it keeps for urgent jobs."""
    return settings.worker_concurrency + slots.reserved_for_urgent(settings.worker_concurrency)


class SentinelBlockingPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's pool (connections reach the primary the sentinels name now), waiting for a free connection
    like the single-Redis pool. Closing it for good also closes the clients of the sentinels."""

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:  # the client is closing (a failover drops only idle connections)
            await self.sentinel_manager.aclose()


def _sentinel_client(settings: Settings, url: str | None, options: dict[str, Any]) -> aioredis.Redis:
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": SENTINEL_QUERY_TIMEOUT_S,
                                       "socket_connect_timeout": SENTINEL_QUERY_TIMEOUT_S}
    if settings.redis_sentinel_password:
        sentinel_kwargs["password"] = settings.redis_sentinel_password.get_secret_value()
    if settings.redis_sentinel_tls:
        sentinel_kwargs["ssl"] = True
    sentinel = Sentinel(settings.sentinel_addresses, sentinel_kwargs=sentinel_kwargs)
    return sentinel.master_for(settings.redis_sentinel_master, connection_pool_class=SentinelBlockingPool,
                               **_data_node_options(url), **options)


def _data_node_options(url: str | None) -> dict[str, Any]:
    """Password, user, db and TLS of the data nodes from REDIS_URL; its host and port are the sentinels' to say."""
    if not url:
        return {}
    parsed = parse_url(url)
    keep = {k: parsed[k] for k in ("username", "password", "db") if parsed.get(k) is not None}
    return {**keep, "ssl": True} if url.startswith("rediss://") else keep


async def durable(redis: aioredis.Redis, marker_key: str, what: str) -> int | None:
    """Wait until the replicas hold every write made so far, on any connection: a marker write, then WAIT, on one
    connection (WAIT covers its own connection's writes, and replication keeps the primary's order). Returns the
    replicas that acknowledged, None when no WAIT is configured for this client.

    Fewer than asked is logged (throttled) and counted, not raised: the user's command stands. A connection lost
    during the WAIT is raised: the write's fate is then unknown, and a retry on the new primary would prove
    nothing about it."""
    policy = _policies.get(redis)
    if policy is None or policy.replicas <= 0:
        return None
    acked = await _marker_and_wait(redis, marker_key, policy)
    DURABILITY.waits += 1
    if acked < policy.replicas:
        DURABILITY.short += 1
        _short_log.warning("Redis: %s acknowledged by %d of %d replicas within %d ms; it is lost if the primary "
                           "fails before they catch up", what, acked, policy.replicas, policy.timeout_ms)
    return acked


async def _marker_and_wait(redis: aioredis.Redis, marker_key: str, policy: WaitPolicy) -> int:
    async with _connection_for(redis, marker_key) as conn:
        try:
            await conn.send_packed_command(conn.pack_commands(
                [("SET", marker_key, "1", "PX", MARKER_TTL_MS), ("WAIT", policy.replicas, policy.timeout_ms)]))
            await conn.read_response()
            return int(await conn.read_response())
        except (MovedError, AskError):
            return 0  # the slot moved since the write (resharding): which replicas hold it is unknown
        except BaseException:
            await conn.disconnect()
            raise


@contextlib.asynccontextmanager
async def _connection_for(redis: aioredis.Redis | RedisCluster, key: str) -> AsyncIterator[Connection]:
    """One connection to the primary holding `key`. On a cluster that is the node owning the key's slot: WAIT
    counts that node's replicas, and the cluster client's own execute_command could not keep the marker and the
    WAIT on one connection."""
    if isinstance(redis, RedisCluster):
        node = redis.get_node_from_key(key)
        conn = node.acquire_connection()
        try:
            yield conn
        finally:
            node.release(conn)
        return
    pool = redis.connection_pool
    conn = await pool.get_connection()
    try:
        yield conn
    finally:
        await pool.release(conn)
