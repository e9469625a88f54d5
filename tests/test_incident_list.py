"""`/incident list` answers from an index of the open incidents (severity, then age) and reads only the records it
shows; private incidents are counted and shown only to who may see them; incidents saved before the index existed
still list (it is built once from `inc:open`), and an entry left by a race with that build is dropped."""

from __future__ import annotations

import redis.asyncio as aioredis

from bot.incidents.messages import list_text
from bot.incidents.model import Incident, incident_id
from bot.incidents.store import RANKED, RANKED_BUILT, RANKED_PRIVATE, IncidentStore


def incident(number: int, severity: str, *, declared_at: float, **fields: object) -> Incident:
    return Incident(id=incident_id(number), number=number, title=f"t{number}",
                    severity=severity,  # type: ignore[arg-type]
                    reporter="U1", origin_channel="C1", declared_at=declared_at, **fields)


async def everyone(_: Incident) -> bool:
    return True


async def gets(redis: aioredis.Redis) -> int:
    return int((await redis.info("commandstats")).get("cmdstat_get", {}).get("calls", 0))


async def test_the_page_is_most_severe_then_oldest_and_reads_only_what_it_shows(redis, unique_name) -> None:
    store = IncidentStore(redis, unique_name)
    severities = ["P3", "P1", "P0", "P2", "P1"]
    for n in range(1, 41):
        await store.create(incident(n, severities[n % 5], declared_at=1_000 + n))
    await store.save(incident(41, "P0", declared_at=999, status="resolved"))
    await store.list_page(everyone, 5)  # a new namespace: the one-time build from `inc:open` (tested below)
    before = await gets(redis)
    shown, total = await IncidentStore(redis, unique_name).list_page(everyone, 5)
    assert await gets(redis) - before == 5
    assert total == 40
    # P0 are n ≡ 2 (mod 5): 2, 7, 12, ... oldest first; the resolved P0 is not listed
    assert [i.id for i in shown] == ["INC-2", "INC-7", "INC-12", "INC-17", "INC-22"]
    assert "Open incidents (40; the 5 most severe shown, oldest first)" in list_text(shown, total=total)


async def test_a_severity_change_or_a_resolution_moves_the_incident_in_the_index(redis, unique_name) -> None:
    store = IncidentStore(redis, unique_name)
    for n, severity in ((1, "P2"), (2, "P1"), (3, "P3")):
        await store.create(incident(n, severity, declared_at=1_000 + n))
    async with store.mutate("INC-3") as inc:
        inc.severity = "P0"
    async with store.mutate("INC-2") as inc:
        inc.status = "resolved"
    shown, total = await store.list_page(everyone, 10)
    assert ([i.id for i in shown], total) == (["INC-3", "INC-1"], 2)


async def test_private_incidents_are_counted_and_shown_only_to_who_may_see_them(redis, unique_name) -> None:
    store = IncidentStore(redis, unique_name)
    await store.create(incident(1, "P2", declared_at=1_001))
    await store.create(incident(2, "P0", declared_at=1_002, private=True, commander="UCMD"))

    async def commander_only(inc: Incident) -> bool:
        return not inc.private or inc.commander == "UCMD"

    async def outsider(inc: Incident) -> bool:
        return not inc.private

    shown, total = await store.list_page(commander_only, 10)
    assert ([i.id for i in shown], total) == (["INC-2", "INC-1"], 2)
    shown, total = await store.list_page(outsider, 10)
    assert ([i.id for i in shown], total) == (["INC-1"], 1)
    assert await redis.zrange(store.key(*RANKED_PRIVATE), 0, -1) == ["INC-2"]


async def test_incidents_saved_before_the_index_still_list(redis, unique_name) -> None:
    store = IncidentStore(redis, unique_name)
    for n, severity in ((1, "P3"), (2, "P1")):
        await store.create(incident(n, severity, declared_at=1_000 + n))
    await redis.delete(store.key(*RANKED), store.key(*RANKED_PRIVATE), store.key(*RANKED_BUILT))  # an old deployment

    fresh = IncidentStore(redis, unique_name)  # a process started on that data
    shown, total = await fresh.list_page(everyone, 10)
    assert ([i.id for i in shown], total) == (["INC-2", "INC-1"], 2)
    assert await redis.exists(store.key(*RANKED_BUILT))


async def test_an_entry_whose_incident_closed_behind_the_index_is_dropped(redis, unique_name) -> None:
    store = IncidentStore(redis, unique_name)
    await store.create(incident(1, "P1", declared_at=1_001))
    closed = incident(2, "P0", declared_at=1_002, status="resolved")
    await store.save(closed)
    await redis.zadd(store.key(*RANKED), {"INC-2": 0, "INC-9": 1})  # a build racing the close; a vanished record
    shown, _ = await store.list_page(everyone, 10)
    assert [i.id for i in shown] == ["INC-1"]
    assert await redis.zrange(store.key(*RANKED), 0, -1) == ["INC-1"]
