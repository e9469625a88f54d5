"""Postmortem and back-fill figures (issue #5).

1. Assembly of incidents with 1,000, 10,000 and 50,000 timeline entries (a realistic mix: messages and thread
   replies, reactions, pins, key events, action items, questions, status/severity changes, pages, acks and
   diagnoses), from a real Redis: reading the timeline, building the facts, rendering the default template.
   Time (best of 3) and peak memory (tracemalloc, a separate run), per size and per entry.
   Targets: growth linear or better; 50,000 entries within 5 s and 300 MB.
2. Back-fill of a 10,000-message channel (100 threads of 10 replies among them) against LocalSlack over HTTP:
   calls made, time unpaced, and what the configured pace means (Tier 3 internal apps at 50 calls/min with 200
   per page; commercially distributed apps at 1 call/min with 15 per page).
3. The trends report (`/incident report 90d`, `chatops report`) over 10,000 incident records spread over 90 days
   (1 % still open with an action item each, paging orders of one to three levels, 300 recurring findings):
   reading the records and the findings index, computing, rendering. Target: under 2 s.

    .venv/bin/python -m benchmarks.bench_postmortem

Prints figures; not a test.
"""

from __future__ import annotations

import asyncio
import gc
import random
import resource
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

import redis.asyncio as aioredis

from bot.app.redis_server import RedisServer
from bot.incidents.model import Incident, PageOrder, Paging
from bot.incidents.store import IncidentStore
from bot.incidents.timeline import Entry, Timeline
from bot.runtime import create_runtime
from bot.settings import Settings
from bot.slack.local import LocalSlack
from bot.slack.local.rate_limits import RateLimits
from bot.writeup.backfill import backfill_incident
from bot.writeup.config import WriteupSettings
from bot.writeup.install import install
from bot.writeup.postmortem.assemble import render_markdown
from bot.writeup.postmortem.facts import build_facts
from bot.writeup.view import IncidentView
from checks.schema import Secret, dump_json

T0 = 1_790_000_000.0
PEOPLE = [f"U{i:03d}" for i in range(40)]
WORDS = ["db", "pool", "latency", "deploy", "rollback", "cache", "timeout", "500s", "error", "rate", "replica",
         "failover", "queue", "lag", "cpu", "memory", "disk", "network", "dns", "tls", "certificate", "config", "flag",
         "canary", "region", "zone", "alert", "dashboard", "runbook"]


# ------------------------------------------------------------------------------------------------ assembly

def synthetic_timeline(incident_id: str, n: int, channel: str = "C0BENCH") -> list[Entry]:
    """`n` entries over `n` seconds (one a second), in the proportions a busy incident channel has."""
    rng = random.Random(n)
    entries: list[Entry] = [Entry(id="declared", incident_id=incident_id, at=T0, kind="declared", actor=PEOPLE[0],
                                  text="Checkout errors", data={"severity": "P2", "service": "api",
                                                                "source": "slack"})]
    statuses = ["investigating", "identified", "monitoring"]
    parents: list[str] = []
    for i in range(1, n - 1):
        at = T0 + i
        ts = f"{at:.6f}"
        roll = rng.random()
        actor = rng.choice(PEOPLE)
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 30)))
        if roll < 0.003:
            kind = rng.choice(["status", "severity", "page_sent", "page_acked", "note", "diagnosis"])
            status_to = statuses[min(2, i * 3 // n)]
            data = {"status": {"from": "investigating", "to": status_to},
                    "severity": {"from": "P2", "to": rng.choice(["P1", "P2"])},
                    "page_sent": {"delivery": "pagerduty", "severity": "P2", "level": 1, "reason": "policy"},
                    "page_acked": {"via": "button", "after_s": 120.0},
                    "note": {},
                    "diagnosis": {"run_id": f"r{i}", "service": "api", "status": "fail",
                                  "counts": {"ok": 8, "fail": 2}, "failing_checks": ["http.health api: 500"]}}[kind]
            entries.append(Entry(id=f"{kind}:{i}", incident_id=incident_id, at=at, kind=kind, actor=actor,
                                 text=text if kind in ("status", "note", "severity") else "", data=data))
        elif roll < 0.10:
            target = rng.choice(parents) if parents else ts
            entries.append(Entry(id=f"reaction:{channel}:{target}:eyes:{actor}", incident_id=incident_id, at=at,
                                 kind="reaction", actor=actor, text="eyes", ts=target, channel=channel))
        else:
            reply = parents and rng.random() < 0.45
            thread = rng.choice(parents[-20:]) if reply else None
            data: dict = {"reactions": {}}
            key = rng.random() < 0.01
            if key:
                data["reactions"] = {"pushpin": [PEOPLE[0]]}
            if rng.random() < 0.005:
                text = f"action: <@{rng.choice(PEOPLE)}> {text}"
                data["action"] = {"text": text[8:], "owner": rng.choice(PEOPLE), "source": "prefix", "done": False}
            if rng.random() < 0.05:
                text += "?"
            entries.append(Entry(id=f"msg:{channel}:{ts}", incident_id=incident_id, at=at,
                                 kind="reply" if thread else "message", actor=actor, text=text, ts=ts,
                                 thread_ts=thread, channel=channel, data=data, key_event=key))
            if not thread:
                parents.append(ts)
    entries.append(Entry(id="resolved", incident_id=incident_id, at=T0 + n, kind="resolved", actor=PEOPLE[0],
                         text="rolled back deploy 4512", data={"from": "monitoring"}))
    return entries


def view(incident_id: str, n: int) -> IncidentView:
    return IncidentView(id=incident_id, title="Checkout errors", severity="P1", status="resolved", declared_at=T0,
                        reporter=PEOPLE[0], commander=PEOPLE[0], service="api", channel="C0BENCH",
                        link="https://bench.slack.com/archives/C0BENCH/p1790000000000000", resolved_at=T0 + n,
                        resolved_by=PEOPLE[0], resolution="rolled back deploy 4512")


async def store(timeline: Timeline, entries: list[Entry]) -> None:
    for start in range(0, len(entries), 100):
        await asyncio.gather(*(timeline.add(e) for e in entries[start:start + 100]))


async def assemble(timeline: Timeline, incident_id: str, n: int) -> tuple[float, float, int]:
    started = time.perf_counter()
    entries = await timeline.entries(incident_id)
    read = time.perf_counter() - started
    markdown = render_markdown(build_facts(view(incident_id, n), entries, names={p: f"person-{p}" for p in PEOPLE},
                                           now=T0 + n))
    return read, time.perf_counter() - started, len(markdown)


async def bench_assembly(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    timeline = Timeline(client, f"bench{uuid.uuid4().hex[:6]}")
    per_entry = {}
    print("postmortem assembly (read the timeline from Redis + facts + default template):")
    for n in (1_000, 10_000, 50_000):
        incident_id = f"INC-{n}"
        await store(timeline, synthetic_timeline(incident_id, n))
        runs = [await assemble(timeline, incident_id, n) for _ in range(3)]
        read, total, size = min(runs, key=lambda r: r[1])
        gc.collect()
        tracemalloc.start()
        await assemble(timeline, incident_id, n)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        per_entry[n] = total / n
        print(f"  {n:>6,} entries: {total:6.3f} s (read {read:.3f} s), peak {peak / 2**20:6.1f} MB traced, "
              f"{total / n * 1e6:5.1f} µs/entry, document {size / 1024:.0f} kB")
    growth = per_entry[50_000] / per_entry[1_000]
    print(f"  time per entry at 50,000 vs 1,000: x{growth:.2f} (≤ ~1 is linear or better); "
          f"process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
          f"(targets: 50,000 within 5 s and 300 MB)")
    await client.aclose()


# ------------------------------------------------------------------------------------------------ back-fill

async def bench_backfill(redis_url: str, tmp: Path) -> None:
    # Slack's limits off: this counts the calls and times the bot's own work; what the limits make of that count is
    # worked out below (the bot's back-fill paces itself by BACKFILL_CALLS_PER_MIN, set out of the way here).
    with LocalSlack(bot_token="xoxb-test-token", rate_limits=RateLimits(enabled=False)) as local:
        for person in PEOPLE[:10]:
            local.add_user(person, f"person-{person}")
        channel = local.add_channel("inc-bench", members=PEOPLE[:10])
        parents = []
        for i in range(9_000):
            ts = local.post_user_message(channel, PEOPLE[i % 10], f"message {i} " + WORDS[i % len(WORDS)])
            if i % 90 == 0:
                parents.append(ts)
        for parent in parents:
            for r in range(10):
                local.post_user_message(channel, PEOPLE[r], f"reply {r}", thread_ts=parent)
        for page_size, label in ((200, "Tier 3 internal app: 200/page"), (15, "limited app: 15/page")):
            settings = Settings.from_env(slack_bot_token=Secret("xoxb-test-token"), slack_api_url=local.url,
                                         redis_url=redis_url)
            rt = create_runtime(settings, redis_url=redis_url, queue_name=f"bench{uuid.uuid4().hex[:6]}")
            await install(rt, settings=WriteupSettings.from_env(backfill_page_size=page_size,
                                                                backfill_calls_per_min=1_000_000))
            store_ = IncidentStore(rt.redis, rt.namespace)
            incident = Incident(id="INC-1", number=1, title="bench", reporter=PEOPLE[0], origin_channel=channel,
                                channel=channel, mode="channel", declared_at=time.time() - 3600)
            await store_.create(incident)
            await store_.save(incident)
            before = len(local.calls)
            started = time.perf_counter()
            report = await backfill_incident(rt, "INC-1")
            elapsed = time.perf_counter() - started
            calls = len(local.calls) - before
            at_50 = report.calls * 60 / 50
            at_1 = report.calls * 60 / 1
            print(f"back-fill of a {report.messages:,}-message channel ({report.threads} threads), {label}: "
                  f"{report.calls} history/replies calls ({calls} HTTP requests incl. auth.test), {elapsed:.2f} s "
                  f"unpaced; at 50 calls/min ≥ {at_50 / 60:.1f} min, at 1 call/min ≥ {at_1 / 3600:.1f} h")
            await rt.aclose()


# ------------------------------------------------------------------------------------------------ report

def synthetic_incident(n: int, now: float, rng: random.Random) -> Incident:
    severity = rng.choice(["P0", "P1", "P1", "P2", "P2", "P2", "P3"])
    declared = now - rng.uniform(0, 90 * 86400)
    levels = rng.choice([1, 1, 1, 2, 3])
    orders = [PageOrder(dedup_key=f"INC-{n}:{severity}:{level}", severity=severity, level=level,
                        routes={"slack": [rng.choice(PEOPLE)], "pagerduty": []},
                        reason="policy" if level == 1 else "timer") for level in range(1, levels + 1)]
    is_open = n % 100 == 0
    paging = Paging(first_paged_at=declared + 5, acked_at=declared + 5 + rng.expovariate(1 / 600), orders=orders)
    return Incident(id=f"INC-{n}", number=n, title=f"incident {n}", severity=severity,
                    service=rng.choice(["api", "web", "db", "queue", "search"]), reporter=PEOPLE[0],
                    origin_channel="C0BENCH", declared_at=declared, paging=paging,
                    status="investigating" if is_open else "resolved",
                    resolved_at=None if is_open else declared + rng.expovariate(1 / 5400))


async def bench_report(redis_url: str, count: int = 10_000) -> None:
    from bot.incidents.timeline import EntryKind
    from bot.writeup.report import build_report, markdown, record_recurring

    settings = Settings.from_env(slack_bot_token=Secret("xoxb-test-token"), redis_url=redis_url)
    rt = create_runtime(settings, redis_url=redis_url, queue_name=f"bench{uuid.uuid4().hex[:6]}")
    w = await install(rt, settings=WriteupSettings.from_env())
    store_ = IncidentStore(rt.redis, rt.namespace)
    rng, now = random.Random(7), time.time()
    for start in range(1, count + 1, 500):
        batch = [synthetic_incident(n, now, rng) for n in range(start, min(start + 500, count + 1))]
        pipe = rt.redis.pipeline(transaction=False)
        for incident in batch:
            pipe.set(store_.incident_key(incident.id), dump_json(incident))
            pipe.zadd(store_.key("all"), {incident.id: incident.number})
            if incident.is_open:
                pipe.sadd(store_.key("open"), incident.id)
        await pipe.execute()
        for incident in batch:
            if incident.is_open:
                await w.timeline.record(incident.id, EntryKind.ACTION_ITEM, entry_id="action_item:1", actor=PEOPLE[1],
                                        text="add an alarm", data={"owner": PEOPLE[2]})
    for n in range(1, count + 1, 7):  # 300 findings, each failing in several incidents
        await record_recurring(rt, f"INC-{n}", [{"check": f"check.{n % 300}", "target": "res", "status": "fail"}])
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        report = await build_report(rt, since_s=90 * 86400, now=now)
        text = markdown(report)
        best = min(best, time.perf_counter() - started)
    print(f"report over {count:,} incidents (90 days; {report.incidents:,} in the window, {report.open_incidents} "
          f"open, {len(report.recurring)} recurring findings, {report.open_followups} open follow-ups): "
          f"{best:.2f} s best of 3 (target < 2 s); {len(text):,} characters of Markdown")
    await rt.aclose()


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis", aof=False) as redis:
        await bench_assembly(redis.url)
        await bench_backfill(redis.url, Path(tmp))
        await bench_report(redis.url)


if __name__ == "__main__":
    asyncio.run(main())

