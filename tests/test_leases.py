"""Short leases kept alive by their holder: nothing waits out a long fixed lock after a crash, and a live holder
is never overtaken (a real Redis; the holder's "death" is a lease nobody renews, as after a SIGKILL)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from bot.incidents.store import IncidentStore, LockTimeout
from bot.queue import lease


async def test_a_live_holder_keeps_its_lease_past_the_ttl(redis, unique_name) -> None:
    key = f"{unique_name}:lease"
    async with lease.held(redis, key, wait_s=1, ttl_s=0.3):
        await asyncio.sleep(1.0)  # three TTLs: only the heartbeat keeps it
        assert not await lease.try_acquire(redis, key, "intruder", ttl_s=0.3)
    assert await redis.get(key) is None  # released on the way out


async def test_a_dead_holders_lease_is_taken_over_within_its_ttl(redis, unique_name) -> None:
    key = f"{unique_name}:lease"
    assert await lease.try_acquire(redis, key, "killed-worker", ttl_s=0.5)  # acquired, then never renewed
    started = time.monotonic()
    async with lease.held(redis, key, wait_s=5, ttl_s=0.5):
        waited = time.monotonic() - started
    assert 0.3 < waited < 1.0


async def test_releasing_never_deletes_a_lease_someone_else_now_holds(redis, unique_name) -> None:
    key = f"{unique_name}:lease"
    async with lease.held(redis, key, wait_s=1, ttl_s=0.3):
        await redis.set(key, "new-holder")  # as if ours had lapsed in a stall and another worker took it
    assert await redis.get(key) == "new-holder"


async def test_an_incident_lock_left_by_a_killed_worker_frees_itself_in_seconds(redis, unique_name) -> None:
    store = IncidentStore(redis, unique_name)
    assert await lease.try_acquire(redis, store.key("INC-1", "lock"), "killed-worker")
    started = time.monotonic()
    async with store.lock("INC-1"):
        waited = time.monotonic() - started
    assert waited <= lease.LEASE_TTL_S + 0.5  # the old fixed lock made this 15 s


async def test_a_busy_incident_lock_still_times_out_with_its_own_error(redis, unique_name) -> None:
    store = IncidentStore(redis, unique_name)
    async with store.lock("INC-1"):
        with pytest.raises(LockTimeout):
            async with store.lock("INC-1", wait_s=0.2):
                pass


class RenewalsSwallowingCancellation:
    """The Redis client, except that a lease renewal in flight ignores a cancellation, as redis-py's does under
    Python 3.11 when the cancel lands while the command is being sent (asyncio.wait_for returns the finished
    send's result instead of raising). `renewing` is set once a renewal is in flight."""

    def __init__(self, redis) -> None:  # type: ignore[no-untyped-def]
        self.redis, self.renewing = redis, asyncio.Event()

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.redis, name)

    async def eval(self, script: str, numkeys: int, *args):  # type: ignore[no-untyped-def]
        if "PEXPIRE" in script:
            self.renewing.set()
            answered_at = time.monotonic() + 0.2  # a renewal that takes its time, cancelled or not
            while time.monotonic() < answered_at:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(answered_at - time.monotonic())
        return await self.redis.eval(script, numkeys, *args)


async def test_a_holder_whose_renewal_swallowed_the_cancellation_still_releases_at_once(redis, unique_name) -> None:
    client, key = RenewalsSwallowingCancellation(redis), f"{unique_name}:lease"
    started = time.monotonic()
    async with asyncio.timeout(5):  # it waited for a beat that slept on, forever
        async with lease.held(client, key, wait_s=1, ttl_s=0.6):  # type: ignore[arg-type]
            await client.renewing.wait()
    assert time.monotonic() - started < 1.0  # the first beat (0.2 s) and that renewal (0.2 s), then the release
    assert await redis.get(key) is None


async def test_a_holder_cancelled_while_releasing_stops_and_still_releases(redis, unique_name, caplog) -> None:
    client, key = RenewalsSwallowingCancellation(redis), f"{unique_name}:lease"
    stopped_body = asyncio.Event()

    async def hold() -> str:
        async with lease.held(client, key, wait_s=1, ttl_s=0.6):  # type: ignore[arg-type]
            await client.renewing.wait()
            stopped_body.set()
        return "went on after being cancelled"

    holder = asyncio.create_task(hold())
    await stopped_body.wait()
    await asyncio.sleep(0.05)  # the holder now waits for its beat's renewal to end
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(holder, 5)
    assert await redis.get(key) is None
    await asyncio.sleep(0.3)  # the beat's renewal answers after the release: a stopped beat, not a lost lease
    assert "was lost" not in caplog.text
