"""The lists the bot shows, as records pile up: 10 / 1,000 / 10,000 stored, a real Redis, the store and the
message each command answers with. Two ways in the same run for each: through its index, and as the baseline what
the command did before. Median of 100 calls through the index, 10 the way before, after one uncounted call (the
first call in a namespace fills an index from the records saved before it existed, once).

    /incident list       10 / 1,000 / 10,000 open incidents (mixed severities, the worst case: every one open).
                         Index: `IncidentStore.list_page` (most severe, then oldest, first; reads the records shown).
                         Before: read and parse every open record, then sort.
    /incident followups  10 / 1,000 / 10,000 resolved incidents with one action item each in the follow-ups index,
                         one in five still open; plus open incidents (1 %), five of them with an action item in
                         their timeline not exported yet. Index: `followups_page` (the open items' sorted sets, the
                         25 shown read). Before: the whole follow-ups hash, every open incident's timeline, a record
                         read per item.
    /incident report     10 / 1,000 / 10,000 incidents, ten of them in the last 30 days, the rest over the years
                         before. Index: the declaration-time index, the window read 500 records a pipeline, and
                         the findings of the window's incidents. Before (as the code was): every incident ever
                         declared read as raw JSON and json.loads'ed, then the window picked out, and every
                         recurring finding ever recorded. Each incident has one failing check (50 checks recur).

    .venv/bin/python -m benchmarks.bench_lists

Targets (issue #20): ≤ 50 ms at 10,000 stored, and within 2 × of 10 stored. Prints figures; not a test.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from benchmarks import summarize_limit, summarize_ratio
from bot.app.redis_server import RedisServer
from bot.incidents.messages import LIST_SHOWN, list_text
from bot.incidents.model import SEVERITIES, Incident, incident_id
from bot.incidents.store import IncidentStore
from bot.incidents.timeline import EntryKind
from bot.runtime import Runtime, create_runtime
from bot.settings import Settings
from bot.slack.mrkdwn import FALLBACK_TEXT_MAX, fit_lines
from bot.writeup import report
from bot.writeup.config import WriteupSettings
from bot.writeup.install import install
from bot.writeup.trackers import export
from bot.writeup.trackers.followups import FollowUp, write
from bot.writeup.view import view_of
from checks.schema import Secret, dump_json

SIZES = (10, 1_000, 10_000)
CALLS = 100  # through an index a call takes about a millisecond: enough calls that a scheduling hiccup on a busy
#              machine does not move the median (the ratio to 10 stored is of two such medians)
BEFORE_CALLS = 10  # the way before takes up to a second a call at 10,000
SHOWN = 25  # follow-ups a page shows (handlers/commands/incident_writeup.FOLLOWUPS_SHOWN)
DAY = 86_400.0


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


async def followups_fill(rt: Runtime, n: int) -> None:
    """n resolved incidents with one exported item each (one in five open), n/100 open incidents, five of them
    with an action item in the timeline only."""
    w = await install(rt, settings=WriteupSettings.from_env())
    store, now = IncidentStore(rt.redis, rt.namespace), 1.7e9
    for start in range(1, n + 1, 500):
        await write(rt, [FollowUp(incident_id(i), "i1", f"add an alarm {i}", f"U{i % 7}", now + i, None, i % 5 != 0)
                         for i in range(start, min(start + 500, n + 1))])
    for number in range(n + 1, n + 1 + max(n // 100, 5)):
        await store.create(Incident(id=incident_id(number), number=number, title="open", severity="P2",
                                    reporter="U1", origin_channel="C1", channel=f"CINC{number}", declared_at=now))
        if number < n + 6:
            await w.timeline.record(incident_id(number), EntryKind.ACTION_ITEM, entry_id="action_item:1",
                                    actor="U1", text="raise the pool limit", data={"owner": "U2", "done": False})


async def visible(incident: Incident) -> bool:
    return not incident.private


async def followups_by_index(rt: Runtime) -> str:
    shown, total = await export.followups_page(rt, visible, SHOWN)
    return followups_text(shown, total)


async def followups_before(rt: Runtime) -> str:
    """What `/incident followups` did before its index: the open items (`open_followups_before`), then a record
    read per item to ask who may see it."""
    store = IncidentStore(rt.redis, rt.namespace)
    shown = []
    for f in await open_followups_before(rt):
        record = await store.get(f.incident)
        if record is None or await visible(record):
            shown.append(f)
    return followups_text(shown[:SHOWN], len(shown))


def followups_text(shown: list[FollowUp], total: int) -> str:
    lines = [f"• *{f.incident}* {f.text} — <@{f.owner}>" for f in shown]
    return fit_lines([f"*Open action items* ({total}):", *lines], FALLBACK_TEXT_MAX, unlisted=total - len(shown))


async def report_fill(rt: Runtime, n: int) -> None:
    """n incidents: ten in the last 30 days, the rest one a day before them (resolved, paged and acked)."""
    store, now = IncidentStore(rt.redis, rt.namespace), time.time()
    for start in range(1, n + 1, 500):
        pipe = rt.redis.pipeline(transaction=False)
        for number in range(start, min(start + 500, n + 1)):
            declared = now - (number * DAY if number <= 10 else (30 + number) * DAY)
            incident = Incident(id=incident_id(number), number=number, title=f"t{number}", severity="P2",
                                reporter="U1", origin_channel="C1", declared_at=declared, status="resolved",
                                resolved_at=declared + 3600)
            pipe.set(store.incident_key(incident.id), dump_json(incident))
            pipe.zadd(store.key("all"), {incident.id: number})
            pipe.zadd(store.key("declared"), {incident.id: declared})
        await pipe.execute()
        for number in range(start, min(start + 500, n + 1)):  # a failing check each, 50 checks recurring
            await report.record_recurring(rt, incident_id(number), [{"check": f"check.{number % 50}",
                                                                      "target": "res", "status": "fail"}])
    await rt.redis.set(store.key("declared", "built"), 1)


async def report_by_index(rt: Runtime) -> str:
    return report.slack_text(await report.build_report(rt, since_s=30 * DAY))


async def open_followups_before(rt: Runtime) -> list[FollowUp]:
    """The open action items as `export.followups` read them before the index (it took no reader): every item in
    the hash, and every open incident's items read live from its timeline, oldest first."""
    store = IncidentStore(rt.redis, rt.namespace)
    found = {f.key: f for f in await export.index.every(rt)}
    for incident in (view_of(i) for i in await store.list_open()):
        stored = await export.stored_tickets(rt, incident.id)
        for item in await export.action_items(rt, incident, resolve_names=False):
            followup = export._followup(incident, item, stored.get(item.id))
            found[followup.key] = followup
    return sorted((f for f in found.values() if not f.done), key=lambda f: f.at)


async def report_before(rt: Runtime) -> str:
    """`build_report` as it was before the declaration index (git show 2be59dc:bot/writeup/report.py): every
    incident ever declared read as raw JSON, 1,000 a pipeline, and json.loads'ed (no model); every recurring finding
    ever recorded; the window's open items from the follow-ups as they were read then."""
    store, records, now = IncidentStore(rt.redis, rt.namespace), [], time.time()
    ids = await store.all_ids()
    for at in range(0, len(ids), 1000):
        async with rt.redis.pipeline(transaction=False) as pipe:
            for incident in ids[at:at + 1000]:
                pipe.get(store.incident_key(incident))
            records.extend(json.loads(raw) for raw in await pipe.execute() if raw is not None)
    built = report.compute(records, since_s=30 * DAY, now=now, ack_targets=report._ack_targets(rt),
                           findings=await every_finding(rt))
    ids_shown = {str(r["id"]) for r in report.select(records, built.start, None)}
    built.followups = [{"incident": f.incident, "text": f.text, "owner": f.owner, "age_s": built.end - f.at,
                        "ticket": (f.ticket or {}).get("key")} for f in await open_followups_before(rt)
                       if f.incident in ids_shown]
    built.open_followups = len(built.followups)
    return report.slack_text(built)


async def every_finding(rt: Runtime) -> dict[str, set[str]]:
    """Every finding recorded since the bot started, and every incident it failed in (the report's read before)."""
    keys = sorted(k.decode() for k in await rt.redis.smembers(rt.key("wu", "findings")))
    async with rt.redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.smembers(report._finding_key(rt, key))
        members = await pipe.execute()
    return {k: {i.decode() for i in m} for k, m in zip(keys, members, strict=True)}


async def median_ms(call: Callable[[Any], Awaitable[str]], subject: Any, calls: int = CALLS) -> float:
    await call(subject)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        await call(subject)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def incident_list_rows(redis: aioredis.Redis) -> list[tuple[int, float, float]]:
    rows = []
    for n in SIZES:
        store = IncidentStore(redis, f"bench{uuid.uuid4().hex[:6]}")
        await fill(store, n)
        rows.append((n, await median_ms(by_index, store), await median_ms(every_record, store, BEFORE_CALLS)))
    return rows


async def runtime_rows(url: str, fill_: Callable[[Runtime, int], Awaitable[None]],
                       by_index_: Callable[[Runtime], Awaitable[str]],
                       before: Callable[[Runtime], Awaitable[str]]) -> list[tuple[int, float, float]]:
    rows = []
    for n in SIZES:
        settings = Settings.from_env(slack_bot_token=Secret("xoxb-test-token"), redis_url=url)
        rt = create_runtime(settings, redis_url=url, queue_name=f"bench{uuid.uuid4().hex[:6]}")
        await install(rt, settings=WriteupSettings.from_env())
        await fill_(rt, n)
        rows.append((n, await median_ms(by_index_, rt), await median_ms(before, rt, BEFORE_CALLS)))
        await rt.aclose()
    return rows


def table(name: str, what: str, rows: list[tuple[int, float, float]]) -> None:
    base = rows[0][1]
    print(f"{name}, {what} (median of {CALLS} calls, {BEFORE_CALLS} before; targets ≤ 50 ms at 10,000 and ≤ 2 × "
          "the figure at 10)")
    print(f"  {'stored':>8}  {'index':>9}  {'× at 10':>7}  {'before (baseline)':>18}  {'before ÷ index':>14}")
    for n, indexed, everything in rows:
        print(f"  {n:>8,}  {indexed:7.1f} ms  {indexed / base:6.2f} ×  {everything:15.1f} ms  "
              f"{everything / indexed:12.1f} ×")
    n, indexed, everything = rows[-1]
    summarize_limit(f"{name}, {n:,} stored", indexed, "ms", 50, baseline=everything, baseline_name="before")
    summarize_ratio(f"{name}, {n:,} stored vs 10", indexed, base, "ms", limit=2, baseline_name="at 10")


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis", aof=False) as server:
        redis = aioredis.Redis.from_url(server.url)
        table("/incident list", "open incidents stored", await incident_list_rows(redis))
        table("/incident followups", "incidents with an action item stored",
              await runtime_rows(server.url, followups_fill, followups_by_index, followups_before))
        table("/incident report 30d", "incidents stored, 10 in the window",
              await runtime_rows(server.url, report_fill, report_by_index, report_before))
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
