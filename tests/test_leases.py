"""Short leases kept alive by their holder: nothing waits out a long fixed lock after a crash, and a live holder
is never overtaken (a real Redis; the holder's "death" is a lease nobody renews, as after a SIGKILL)."""

from __future__ import annotations

import asyncio
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
