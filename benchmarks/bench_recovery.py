"""Crash recovery: `/incident … P0` is acked, the only worker is SIGKILLed 0, 0.1, 0.5 or 1 s later and started
again at once; how long after that restart does PagerDuty receive the page?

    .venv/bin/python -m benchmarks recovery

Set-up (bench_incidents.bot_with_worker_processes): a private Redis with AOF, LocalSlack, the fake PagerDuty,
the Bolt app in this process, and one worker process at the production default for releasing a dead worker's
jobs (5 s), replaced by a fresh one at each kill. Target (issue #12): p50 and max ≤ 10 s after the restart, and
one first-level PagerDuty alert per incident. Prints figures; not a test.
"""

from __future__ import annotations

import asyncio
import re
import signal
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.bench_incidents import (
    bot_with_worker_processes,
    first_trigger_at,
    wait_for_keys,
)
from tests.fixtures.paging import FakePagerDuty
from tests.incident_harness import IncidentBot

KILL_AFTER_S = (0.0, 0.1, 0.5, 1.0)
RUNS = 3
DEAD_WORKER_AFTER_S = 5.0  # bot.queue.worker.Worker's default


async def one_crash(bot: IncidentBot, pd: FakePagerDuty, tmp: Path, procs: list, kill_after_s: float,
                    n: int) -> float:
    # A declarer each: one person declaring twelve P0s in a minute is what the declaration limit refuses.
    answer = await bot.command("/incident", f"recovery {kill_after_s} run {n} P0", user=f"UREC{kill_after_s}{n}")
    found = re.search(r"INC-\d+", answer)
    assert found, answer
    incident = found.group(0)
    await asyncio.sleep(kill_after_s)
    procs[-1].send_signal(signal.SIGKILL)
    procs[-1].wait(10)
    restarted = time.monotonic()
    procs.append(bot.worker_process(tmp, dead_worker_after_s=DEAD_WORKER_AFTER_S))
    await wait_for_keys(pd, [f"{incident}:P0:L1"], 60)
    return first_trigger_at(pd, f"{incident}:P0:L1") - restarted


async def run(tmp: Path) -> None:
    procs: list = []
    async with bot_with_worker_processes(tmp, procs, processes=1, dead_worker_after_s=DEAD_WORKER_AFTER_S,
                                         page_lease_s=3.0) as (bot, pd):
        await report(bot, pd, tmp, procs)


async def report(bot: IncidentBot, pd: FakePagerDuty, tmp: Path, procs: list) -> None:
    print(f"   SIGKILL of the only worker N s after the ack, restarted at once; restart → page at PagerDuty "
          f"({RUNS} runs each; target ≤ 10 s):")
    for kill_after_s in KILL_AFTER_S:
        delays = [await one_crash(bot, pd, tmp, procs, kill_after_s, n) for n in range(RUNS)]
        after = [d for d in delays if d > 0]  # the others were paged before the kill landed
        figures = (f"p50 {statistics.median(after):.1f} s, max {max(after):.1f} s" if after else "—")
        print(f"   kill {kill_after_s:>4} s after the ack: {figures}  ({RUNS - len(after)} of {RUNS} paged before the kill)")
    first = [e for e in pd.events if e["event_action"] == "trigger" and e["dedup_key"].endswith(":P0:L1")]
    keys = {e["dedup_key"] for e in first}
    print(f"   PagerDuty: {len(keys)} first-level alerts for {len(KILL_AFTER_S) * RUNS} incidents, from "
          f"{len(first)} trigger events (a re-sent page carries the same dedup key, so it is one alert)")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
        asyncio.run(run(Path(tmp)))


if __name__ == "__main__":
    main()
