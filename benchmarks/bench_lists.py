"""`/incident list` as incidents pile up: 10 / 1,000 / 10,000 open incidents stored (mixed severities, the worst
case: every one open), a real Redis, the store and the message the command answers with.

Two ways in the same run: the index (`IncidentStore.list_page`: the most severe and oldest first, reading only
the records shown) and, as the baseline, what the command did before (read and parse every open record, then
sort). Median of 20 calls each, after one uncounted call (the first call in a namespace ranks the incidents
saved before the index existed, once).

    .venv/bin/python -m benchmarks.bench_lists

Targets (issue #20): ≤ 50 ms at 10,000 stored, and within 2 × of 10 stored. Prints figures; not a test.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis

from bot.app.redis_server import RedisServer
from bot.incidents.messages import LIST_SHOWN, list_text
from bot.incidents.model import SEVERITIES, Incident, incident_id
from bot.incidents.store import IncidentStore

SIZES = (10, 1_000, 10_000)
CALLS = 20


async def fill(store: IncidentStore, n: int) -> None:
    async def one(number: int) -> None:
        await store.create(Incident(id=incident_id(number), number=number, title=f"Checkout errors {number}",
                                    severity=SEVERITIES[number % 4], reporter="U1", origin_channel="C1",
                                    channel=f"CINC{number}", commander="U1", declared_at=1.7e9 + number))

    for start in range(1, n + 1, 50):
        await asyncio.gather(*(one(number) for number in range(start, min(start + 50, n + 1))))


async def everyone(_: Incident) -> bool:
    return True


async def by_index(store: IncidentStore) -> str:
    shown, total = await store.list_page(everyone, LIST_SHOWN)
    return list_text(shown, total=total)


async def every_record(store: IncidentStore) -> str:
    return list_text([i for i in await store.list_open() if await everyone(i)])


async def median_ms(call: Callable[[IncidentStore], Awaitable[str]], store: IncidentStore) -> float:
    await call(store)
    times = []
    for _ in range(CALLS):
        started = time.perf_counter()
        await call(store)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis", aof=False) as server:
        redis = aioredis.Redis.from_url(server.url)
        rows = []
        for n in SIZES:
            store = IncidentStore(redis, f"bench{uuid.uuid4().hex[:6]}")
            await fill(store, n)
            rows.append((n, await median_ms(by_index, store), await median_ms(every_record, store)))
        await redis.aclose()
    base = rows[0][1]
    print(f"/incident list, open incidents stored (median of {CALLS} calls; targets ≤ 50 ms at 10,000 and ≤ 2 × "
          f"the figure at 10)")
    print(f"  {'stored':>8}  {'index':>9}  {'× at 10':>7}  {'every record (before)':>22}")
    for n, indexed, everything in rows:
        print(f"  {n:>8,}  {indexed:7.1f} ms  {indexed / base:6.2f} ×  {everything:19.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
