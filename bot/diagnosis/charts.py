"""A chart in the thread for a failing check whose evidence is a time series (`CheckResult.series`).

Drawn from the series the check already fetched (no second API call), in a thread so the worker's event loop keeps
serving other jobs, and shared with Slack's files v2 upload through the one Slack client. It is shared once the run's
results are all in, so it can mark the deploy and the first error that the run's other checks found
(checks/chartmarks.py), and only after the check's own reply was posted: whichever of the two comes last (the
verdict, or a reply that Slack held back) shares it. At most once per result:
a Redis field is claimed before the upload, so a retried job never shares a second copy; a worker that dies
between the claim and the upload leaves the thread without its chart, which the reply's text does not need.
Off with DIAGNOSE_CHARTS=false.
"""

from __future__ import annotations

import asyncio
import logging

from bot.diagnosis.render import chart
from bot.runtime import Runtime
from bot.slack.client import SlackError
from bot.slack.posts import recorded_post
from checks.chartmarks import with_run_markers
from checks.model import CheckResult
from checks.schema import replace

log = logging.getLogger(__name__)


def wants_chart(rt: Runtime, result: CheckResult) -> bool:
    return bool(rt.settings.diagnose_charts and result.status.is_problem and result.series
                and result.series.points)


async def attach_run_charts(rt: Runtime, replies_key: str, keys: list[str], channel: str, thread_ts: str,
                            results: dict[str, CheckResult], ttl_s: int) -> list[str]:
    """Share the charts of the results under `keys` whose reply is posted, marked with what the whole run found;
    returns the file ids shared now."""
    shared = []
    for key in keys:
        result = results.get(key)
        if result is None or not wants_chart(rt, result) or await recorded_post(rt.redis, replies_key, key) is None:
            continue
        assert result.series is not None
        marked = replace(result, series=with_run_markers(result.series, results.values()))
        file_id = await attach_chart(rt, replies_key, key, channel, thread_ts, marked, ttl_s)
        shared += [file_id] if file_id else []
    return shared


async def attach_chart(rt: Runtime, replies_key: str, key: str, channel: str, thread_ts: str,
                       result: CheckResult, ttl_s: int) -> str | None:
    """Share the chart of `result` in the thread; returns the file id (None when skipped or Slack refused)."""
    if not wants_chart(rt, result):
        return None
    field = f"{key}:chart"
    if not await rt.redis.hsetnx(replies_key, field, "claimed"):
        return None  # an earlier delivery of this job shared it (or tried to)
    await rt.redis.expire(replies_key, ttl_s)
    assert result.series is not None
    png = await asyncio.to_thread(chart.render_png, result.series)
    try:
        shared = await rt.slack.upload_file(channel, png, chart.chart_filename(result), thread_ts=thread_ts,
                                            title=chart.chart_title(result), alt_txt=chart.alt_text(result.series))
    except SlackError as exc:  # the reply already says everything; a missing picture must not fail the job
        log.warning("could not share the chart of %s: %s", result.check, exc.error)
        return None
    file_id = str(shared.get("id") or "")
    await rt.redis.hset(replies_key, field, file_id)
    return file_id
