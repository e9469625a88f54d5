"""Whether this process's Redis can take the queue's writes: reachable, and a primary.

A plain REDIS_URL can outlive the node's role: a DNS name that still points at a demoted primary, or a
self-managed primary Sentinel has turned into a replica. Such a node answers PING but refuses every write with
READONLY, so readiness asks `ROLE` instead, which costs the same one round trip. Under Sentinel the pool asks the
sentinels for the primary on each new connection, and a Redis Cluster client routes by slot, so for a cluster
client a PING is all readiness needs.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from bot.queue.replies import as_text


async def redis_problem(redis: Any) -> str | None:
    """None when Redis answers as a primary; else a sentence for /healthz. Connection errors are raised."""
    if isinstance(redis, RedisCluster):
        await redis.ping()
        return None
    try:
        reply = await redis.execute_command("ROLE")
    except ResponseError:  # an ACL without ROLE, or a proxy that does not pass it: it answered, so it is up
        return None
    role = as_text(reply[0])
    if role == "master":
        return None
    return f"Redis answers as a {role}, not the primary: writes would be refused (READONLY)"
