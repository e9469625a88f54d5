"""A lease: a Redis key held with a token, short-lived, and renewed by a heartbeat while its holder works.

A fixed long lock (15 s) made a crash expensive: the job that took over after a SIGKILL waited out the dead
holder's lock before it could page. A short lease that the holder keeps alive costs nothing while the holder
lives and frees itself within `ttl_s` of its death. Renewal and release compare the token, so a holder that lost
its lease (a long stall) never extends or deletes someone else's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("bot.queue")

LEASE_TTL_S = 3.0

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseBusy(TimeoutError):
    """Another live holder kept the lease for longer than we were willing to wait."""


async def try_acquire(redis: aioredis.Redis, key: str, token: str, ttl_s: float = LEASE_TTL_S) -> bool:
    return bool(await redis.set(key, token, nx=True, px=int(ttl_s * 1000)))


async def acquire(redis: aioredis.Redis, key: str, token: str, *, wait_s: float, ttl_s: float = LEASE_TTL_S) -> None:
    """Wait (with a capped backoff) until the lease is ours; a dead holder's lease is free within `ttl_s`."""
    deadline, delay = time.monotonic() + wait_s, 0.005
    while not await try_acquire(redis, key, token, ttl_s):
        if time.monotonic() > deadline:
            raise LeaseBusy(f"{key} is held by another worker")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


@contextlib.asynccontextmanager
async def held(redis: aioredis.Redis, key: str, *, wait_s: float, ttl_s: float = LEASE_TTL_S) -> AsyncIterator[None]:
    """`async with held(redis, key, wait_s=10):` — acquire, renew every ttl/3 while the body runs, release."""
    token = uuid.uuid4().hex
    await acquire(redis, key, token, wait_s=wait_s, ttl_s=ttl_s)
    async with kept_alive(redis, key, token, ttl_s):
        yield


@contextlib.asynccontextmanager
async def kept_alive(redis: aioredis.Redis, key: str, token: str, ttl_s: float = LEASE_TTL_S) -> AsyncIterator[None]:
    """Renew a lease we hold while the body runs; release it after (only if it is still ours)."""
    beat = asyncio.create_task(_renew_until_cancelled(redis, key, token, ttl_s))
    try:
        yield
    finally:
        beat.cancel()
        try:
            await asyncio.wait([beat])  # waits for the beat to end; our own cancellation is still raised...
        finally:
            await redis.eval(_RELEASE, 1, key, token)  # ...after the release: a cancelled holder stops


async def _renew_until_cancelled(redis: aioredis.Redis, key: str, token: str, ttl_s: float) -> None:
    beat = asyncio.current_task()
    assert beat is not None
    while True:
        await asyncio.sleep(ttl_s / 3)
        kept = await _renewed(redis, key, token, ttl_s)
        # The holder may have cancelled us during that renewal and the cancellation been swallowed: under Python
        # 3.11 redis-py sends a command through asyncio.wait_for, which returns the send's result instead of
        # raising when the send is already done (a cancel in its first loop turns). The beat then slept on, and
        # the holder waited for it forever (a declaration stalled after a failover, where the 1 s WAIT that ends
        # a save lines up with the first renewal). The holder may also have released the lease meanwhile.
        if beat.cancelling():
            return
        if not kept:
            log.warning("lease %s was lost while held (a stall longer than %g s)", key, ttl_s)
            return


async def _renewed(redis: aioredis.Redis, key: str, token: str, ttl_s: float) -> bool:
    """False only when the lease is no longer ours."""
    try:
        return bool(await redis.eval(_RENEW, 1, key, token, int(ttl_s * 1000)))
    except RedisError as exc:  # a blip: the next beat tries again, well within the TTL
        log.warning("renewing lease %s failed: %s", key, type(exc).__name__)
        return True
