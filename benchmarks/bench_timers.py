"""Escalation timer bursts: 10 / 100 / 1,000 timers due in the same second → the next level's page received by
an unthrottled fake PagerDuty, through 2 worker processes (as bench_incidents deploys the bot).

Each burst's incidents are stored as a declaration leaves them (open, in a channel, the first level paged and
done, its timer armed), all due at one instant; the timers are real delayed jobs `incident.escalate`. The figure
is due → PagerDuty received the level-2 trigger.

The last row is 1,000 timers at a fake PagerDuty that enforces the Events API's documented budget (120 events a
minute per routing key; 429 past it), with the bot pacing at it (bot/queue/pacing.py): the time until the last
page, and that every page arrived exactly once. That row takes about eight minutes: the limit's own pace.

    .venv/bin/python -m benchmarks.bench_timers
    TIMERS_LIMITED=0 .venv/bin/python -m benchmarks.bench_timers   # without the limited row

Targets (issue #20): 100 due at once → p99 ≤ 1.5 s; 1,000 → p99 ≤ 5 s. Prints figures; not a test.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from collections import Counter
from typing import Any

from benchmarks import pct, summarize, summarize_limit
from benchmarks.bench_incidents import NO_DECLARE_LIMITS, bot_with_worker_processes
from bot.incidents import escalation
from bot.incidents.model import Incident, incident_id
from bot.queue.pacing import MARGIN_S
from tests.incident_harness import IncidentBot

SIZES = (10, 100, 1_000)
LEAD_S = 2.0  # the burst is due this long after its timers are queued
PD_LIMIT = (120, 60.0)  # PagerDuty Events API v2: about 120 events a minute per routing key
TARGETS = {100: 1.5, 1_000: 5.0}


async def armed(bot: IncidentBot, number: int, channel: str) -> tuple[Incident, str]:
    """An incident as its declaration leaves it; returns it and its timer's job id (not yet queued)."""
    ctx = bot.ctx
    now = time.time()
    incident = Incident(id=incident_id(number), number=number, title=f"Timer burst {number}", severity="P0",
                        reporter="U1", commander="U1", origin_channel="C1", channel=channel, ready=True,
                        declared_at=now, updated_at=now)
    effects = await escalation.order_first_page(ctx, incident)
    for order in incident.paging.orders:
        order.done = True
    incident.paging.first_paged_at = now  # level 1 reached someone
    assert effects.timer is not None
    await ctx.store.create(incident)
    return incident, effects.timer[0]


async def burst(bot: IncidentBot, first: int, n: int, timeout_s: float = 120) -> list[float]:
    """n timers due at one instant; seconds from due to each level-2 page at PagerDuty."""
    made: list[tuple[Incident, str]] = []
    for start in range(0, n, 50):
        made += await asyncio.gather(*(armed(bot, first + i, bot.local.add_channel(f"timer-{first + i}",
                                                                                   members=["U1"]))
                                       for i in range(start, min(start + 50, n))))
    due_wall = time.time() + LEAD_S
    due_mono = time.monotonic() + LEAD_S
    for incident, job_id in made:
        async with bot.ctx.store.mutate(incident.id) as current:
            current.paging.next_escalation_at = due_wall
        await bot.rt.queue.enqueue("incident.escalate", {"incident": incident.id, "gen": current.paging.timer_gen},
                                   job_id=job_id, run_at=due_wall)
    keys = [f"{incident.id}:P0:L2" for incident, _ in made]
    received = await triggers_of(bot.pagerduty, keys, LEAD_S + timeout_s)
    return [received[key] - due_mono for key in keys]


async def triggers_of(pd: Any, keys: list[str], timeout_s: float) -> dict[str, float]:
    """dedup key → when PagerDuty first accepted its trigger, once every key has one. One pass over the requests
    a poll (not one per key): the fake PagerDuty shares this process, and a poll costing seconds of CPU at 1,000
    keys starved it, which the figures then blamed on the bot."""
    deadline, wanted, seen = time.monotonic() + timeout_s, set(keys), 0
    first: dict[str, float] = {}
    while time.monotonic() < deadline:
        requests = pd.requests
        for r in requests[seen:]:
            body = r.json or {}
            if r.status == 202 and body.get("event_action") == "trigger" and body.get("dedup_key") in wanted:
                first.setdefault(body["dedup_key"], r.at)
        seen = len(requests)
        if len(first) == len(wanted):
            return first
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{len(wanted) - len(first)} pages never reached PagerDuty")


async def unthrottled(tmp: Path) -> None:
    async with bot_with_worker_processes(tmp / "open", [], processes=2, dead_worker_after_s=10,
                                         incident=NO_DECLARE_LIMITS) as (bot, _pd):
        rows, first = [], 1
        for n in SIZES:
            latency = await burst(bot, first, n)
            first += n
            rows.append((n, statistics.median(latency), pct(latency, 99), max(latency)))
            await asyncio.sleep(2.0)  # the burst's follow-ups (lines, header redraws) settle
    print("escalation timers due in the same second → level-2 page at PagerDuty (2 worker processes; targets: "
          "100 → p99 ≤ 1.5 s, 1,000 → p99 ≤ 5 s)")
    print(f"  {'timers':>7}  {'p50':>8}  {'p99':>8}  {'max':>8}  {'pages/s':>8}")
    for n, p50, p99, worst in rows:
        print(f"  {n:>7,}  {p50:6.2f} s  {p99:6.2f} s  {worst:6.2f} s  {n / max(worst, 1e-3):8.0f}", flush=True)
        summarize_limit(f"{n:,} escalation timers due at once → page, p99", p99, "s", TARGETS.get(n))


async def limited(tmp: Path, n: int = 1_000) -> None:
    """n timers due at once at a PagerDuty enforcing its documented limit: when the last page arrives, and that
    each arrived exactly once (none lost to a 429, none doubled by a retry)."""
    events, window_s = PD_LIMIT
    async with bot_with_worker_processes(tmp / "limited", [], processes=2, dead_worker_after_s=10,
                                         pd_limit=PD_LIMIT, incident=NO_DECLARE_LIMITS) as (bot, pd):
        latency = await burst(bot, 1, n, timeout_s=n / events * (window_s + 2) + 120)
        await asyncio.sleep(2.0)
        counts = Counter(r.json["dedup_key"] for r in pd.requests if r.status == 202
                         and (r.json or {}).get("event_action") == "trigger")
    # the first window's events at once, then one window per `events`, each MARGIN_S longer than the provider's
    floor = (n - 1) // events * (window_s + MARGIN_S)
    once = sum(1 for c in counts.values() if c == 1)
    print(f"  {n:,} timers with the PagerDuty limit applied ({events} events per {window_s:g} s per routing key): "
          f"last page {max(latency):.0f} s after due (the pacer's floor: {floor:.0f} s); the first {events} within "
          f"{sorted(latency)[events - 1]:.1f} s; {len(counts):,}/{n:,} received, {once:,} exactly once; "
          f"{pd.throttled} answered 429")
    summarize_limit(f"{n:,} timers at PagerDuty's limit → last page", max(latency), "s", None,
                    baseline=floor, baseline_name="the pacer's floor")
    summarize(f"{n:,} timers at PagerDuty's limit → paged once each", once, "pages", baseline=n,
              baseline_name="timers", target=f"= {n:,}", met=once == n)


async def run(tmp: Path) -> None:
    await unthrottled(tmp)
    if os.environ.get("TIMERS_LIMITED", "1") != "0":
        await limited(tmp)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-timers-") as tmp:
        asyncio.run(run(Path(tmp)))


if __name__ == "__main__":
    main()
