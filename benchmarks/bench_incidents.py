"""Incident figures: time from `/incident … P0` to the paging provider receiving the page, over 50 incidents
declared at once; and how late escalation timers fire (due time → the next level's page at the provider).

    .venv/bin/python -m benchmarks.bench_incidents

Set-up: a private Redis with AOF (as deployed), LocalSlack, the fake PagerDuty (a real HTTP server), the Bolt app
served through the real ASGI app in this process, and 2 worker processes (tests/incident_harness.py builds the
same bot in both). Targets (issue #4): page p99 < 1 s after the command; timer lateness p99 < 2 s. Prints
figures; not a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from benchmarks import pct
from bot.app.redis_server import RedisServer
from bot.incidents.escalation import LINK_WAIT_S
from bot.slack.local import LocalSlack
from tests.fixtures.paging import FakePagerDuty
from tests.incident_harness import BOT_TOKEN, IncidentBot, default_policy, incident_bot

INCIDENTS = 50
ACK_TIMEOUT_S = 3.0
WORKER_PROCESSES = 2



def policy(events_url: str) -> dict:
    """P0 pages PagerDuty at once and again (level 2, its own dedup key) when nobody acknowledges in time."""
    data = default_policy(events_url, ack_timeout_s=ACK_TIMEOUT_S)
    data["severities"]["P0"].update(first="pagerduty", then=["pagerduty"], repeat=0)
    return data


async def declare_many(bot: IncidentBot, n: int, label: str) -> dict[str, float]:
    """n signed `/incident` commands at once; returns incident id → monotonic time the command was sent."""
    async def one(i: int) -> tuple[str, float]:
        started = time.monotonic()
        answer = await bot.command("/incident", f"{label} outage {i} P0")
        return re.search(r"INC-\d+", answer).group(0), started

    return dict(await asyncio.gather(*(one(i) for i in range(n))))


def first_trigger_at(pd: FakePagerDuty, key: str) -> float | None:
    times = [r.at for r in pd.requests if r.status == 202 and (r.json or {}).get("dedup_key") == key
             and (r.json or {}).get("event_action") == "trigger"]
    return min(times) if times else None


async def wait_for_keys(pd: FakePagerDuty, keys: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(first_trigger_at(pd, k) is not None for k in keys):
            return
        await asyncio.sleep(0.05)
    missing = [k for k in keys if first_trigger_at(pd, k) is None]
    raise TimeoutError(f"{len(missing)} pages never reached PagerDuty: {missing[:5]}")


@contextlib.asynccontextmanager
async def bot_with_worker_processes(tmp: Path, procs: list[subprocess.Popen], *, processes: int,
                                    dead_worker_after_s: float,
                                    **options: Any) -> AsyncIterator[tuple[IncidentBot, FakePagerDuty]]:
    """The bot as deployed for these figures: AOF Redis, LocalSlack, the fake PagerDuty, no in-process worker
    and `processes` worker processes in `procs` (the caller may add more; all are stopped on the way out)."""
    with RedisServer(tmp / "redis", aof=True, die_with_parent=True) as redis, FakePagerDuty() as pd:
        local = LocalSlack(bot_token=BOT_TOKEN).start()
        local.add_user("U1", "alice")
        try:
            async with incident_bot(local, redis.url, tmp, pagerduty=pd, policy=policy(pd.events_url),
                                    workers=0, **options) as bot:
                procs += [bot.worker_process(tmp, dead_worker_after_s=dead_worker_after_s) for _ in range(processes)]
                try:
                    await asyncio.sleep(3.0)  # the worker processes import and join the group
                    yield bot, pd
                finally:
                    for proc in procs:
                        proc.terminate()
                    for proc in procs:
                        proc.wait(30)
        finally:
            local.stop()


async def run(tmp: Path) -> None:
    async with bot_with_worker_processes(tmp, [], processes=WORKER_PROCESSES, dead_worker_after_s=10) as (bot, pd):
        await report(bot, pd)


async def report(bot: IncidentBot, pd: FakePagerDuty) -> None:
    warm = await declare_many(bot, 5, "warm-up")  # connection pools, Lua scripts, imports
    await wait_for_keys(pd, [f"{i}:P0:L1" for i in warm], 30)
    for inc in warm:
        await bot.command("/incident", f"ack {inc}")

    sent = await declare_many(bot, INCIDENTS, "bench")
    keys = {inc: f"{inc}:P0:L1" for inc in sent}
    await wait_for_keys(pd, list(keys.values()), 60)
    latency = [first_trigger_at(pd, keys[inc]) - started for inc, started in sent.items()]

    # Nobody acknowledges: every incident's level-2 timer comes due ACK_TIMEOUT_S after its first page.
    await wait_for_keys(pd, [f"{inc}:P0:L2" for inc in sent], ACK_TIMEOUT_S + 60)
    offset = time.time() - time.monotonic()
    fired, received = [], []
    for inc in sent:
        escalated = [e for e in await bot.timeline(inc, "escalated") if e.data.get("level") == 2]
        due = escalated[0].data["due"]
        fired.append(escalated[0].data["lateness_s"])
        received.append(first_trigger_at(pd, f"{inc}:P0:L2") + offset - due)

    print(f"   /incident … P0 → PagerDuty received the page, {INCIDENTS} declared at once: "
          f"p50 {statistics.median(latency) * 1000:.0f} ms, p99 {pct(latency, 99) * 1000:.0f} ms, "
          f"max {max(latency) * 1000:.0f} ms  (target p99 < 1000 ms)")
    print(f"   escalation timers, due → next level received by PagerDuty: p50 {statistics.median(received) * 1000:.0f}"
          f" ms, p99 {pct(received, 99) * 1000:.0f} ms (timer job started: p99 {pct(fired, 99) * 1000:.0f} ms)"
          f"  (target p99 < 2000 ms)")
    linked = sum(1 for inc in sent if (pd.alert(keys[inc]).body.get("links") or [{}])[0].get("href"))
    print(f"   first pages that carried the channel link: {linked} of {INCIDENTS} (a page waits at most "
          f"{LINK_WAIT_S * 1000:.0f} ms for it)")
    print(f"   PagerDuty: {len(pd.alerts)} alerts for {len(pd.events)} events "
          f"(expected {2 * (INCIDENTS + 5) - 5} alerts: 5 warm-up + {INCIDENTS} × 2 levels)")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-incidents-") as tmp:
        asyncio.run(run(Path(tmp)))


if __name__ == "__main__":
    main()
