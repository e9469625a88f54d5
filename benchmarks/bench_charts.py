"""Thread charts: what one chart costs a worker, against the budget of ≤ 150 ms and ≤ 30 MB extra per chart.

- cold: the first chart of a process — importing Pillow (only ever done to draw) and loading its font — and the
  resident memory that import adds, once per worker process;
- warm: each later chart's drawing time (median, p95, max over 40 charts of a 60-point series with a threshold and
  two markers), the Python allocation peak while drawing one, and resident memory growth over those 40 charts;
- upload: the files v2 flow (get URL → POST the bytes → complete into a thread) against the local Slack emulator,
  i.e. the client's own cost, not Slack's network time.

    .venv/bin/python -m benchmarks.bench_charts

Prints figures; not a test.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

from benchmarks import pct
from bot.diagnosis.render.chart import alt_text, render_png
from bot.settings import Settings
from bot.slack.client import SlackClient
from bot.slack.local import LocalSlack
from checks.model import Marker, Series
from tests.app_harness import BOT_TOKEN

WARM_CHARTS = 40
UPLOADS = 20


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def sample_series() -> Series:
    start = datetime(2026, 11, 3, 14, 0, tzinfo=UTC)
    points = [(start + timedelta(minutes=i), float(max(0, i - 30) * 1.7)) for i in range(60)]
    return Series(metric="5xx ratio per minute", unit="%", points=points, threshold=5.0,
                  markers=[Marker(at=points[28][0], label="deploy v42", kind="deploy"),
                           Marker(at=points[33][0], label="first 5xx over 5 %", kind="first_breach")])


def timed_render(series: Series) -> tuple[float, bytes]:
    started = time.perf_counter()
    png = render_png(series)
    return (time.perf_counter() - started) * 1000, png


def cold_and_warm(series: Series) -> bytes:
    before = rss_mb()
    cold_ms, png = timed_render(series)
    after_first = rss_mb()
    print(f"cold: first chart {cold_ms:.0f} ms (Pillow import + fonts + drawing), "
          f"resident +{after_first - before:.1f} MB once per process; PNG {len(png) / 1024:.1f} KB")
    times = [timed_render(series)[0] for _ in range(WARM_CHARTS)]
    after_warm = rss_mb()
    tracemalloc.start()
    render_png(series)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"warm: per chart median {statistics.median(times):.0f} ms, p95 {pct(times, 95):.0f} ms, "
          f"max {max(times):.0f} ms (budget 150 ms); Python allocation peak {peak / 2**20:.1f} MB per chart; "
          f"resident growth over {WARM_CHARTS} charts {after_warm - after_first:+.1f} MB (budget 30 MB each)")
    return png


async def uploads(png: bytes, series: Series) -> None:
    local = LocalSlack(bot_token=BOT_TOKEN).start()
    try:
        channel = local.add_channel("charts", members=[])
        settings = Settings.from_env(slack_bot_token=BOT_TOKEN, slack_api_url=local.url, slack_channel_burst=1000,
                                     slack_channel_rate_per_s=1000)
        slack = SlackClient.from_settings(settings)
        parent = await slack.post_message(channel, "diagnosis")
        times = []
        for i in range(UPLOADS):
            started = time.perf_counter()
            await slack.upload_file(channel, png, f"chart-{i}.png", thread_ts=parent["ts"], alt_txt=alt_text(series))
            times.append((time.perf_counter() - started) * 1000)
        await slack.aclose()
        print(f"upload: files v2 (3 requests) to the local emulator, median {statistics.median(times):.1f} ms, "
              f"max {max(times):.1f} ms over {UPLOADS}; {len(local.files())} files in the thread")
    finally:
        local.stop()


def main() -> None:
    series = sample_series()
    png = cold_and_warm(series)
    asyncio.run(uploads(png, series))


if __name__ == "__main__":
    main()
