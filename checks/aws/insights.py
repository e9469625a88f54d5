"""CloudWatch Logs Insights: the error-line query for log groups too large to page through with FilterLogEvents.

`error_events(ctx, group, start, end)` starts one query, polls `GetQueryResults` until it ends or the time it may
use runs out (the run's deadline, and `MAX_QUERY_S` so the check's own timeout is never what stops it), stops the
query when it gives up (`StopQuery`: an abandoned query keeps costing scanned bytes), and returns the rows shaped
like FilterLogEvents events so `logs.summarise_errors` reads both alike. It returns None when Insights cannot
answer (no permission, query limit reached, query failed), and the caller falls back to FilterLogEvents.

Insights returns the matching lines only, so a signature's sample has no surrounding context lines; and a Python
traceback's frames do not match, only its exception line (which is what names the error anyway).

moto's Insights ignores `filter`/`stats` (it returns every event in the range; the client-side matching then does
the filtering) and has no StopQuery, so the polling and cancelling paths are tested against a local server that
speaks the Logs JSON API.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from checks.aws.clients import AwsCheckError
from checks.aws.common import region
from checks.registry import CheckContext

QUERY_LIMIT = 10_000  # Insights' own maximum rows per query
MAX_QUERY_S = 20.0
POLL_S = 1.0
_FINISHED = {"Complete", "Failed", "Cancelled", "Timeout", "Unknown"}
# The words of logs.is_error_line, case-insensitive. "traceback" is left out on purpose: its line names nothing.
ERROR_QUERY = (
    "fields @timestamp, @message, @logStream"
    " | filter @message like /(?i)(error|exception|task timed out after)/"
    f" | sort @timestamp asc | limit {QUERY_LIMIT}"
)


@dataclass
class QueryEvents:
    events: list[dict[str, Any]]
    truncated: bool  # the query hit its row limit, or was stopped at the deadline with partial results
    status: str


async def error_events(ctx: CheckContext, log_group: str, start: datetime, end: datetime) -> QueryEvents | None:
    """The error lines of `log_group` in [start, end] through one Insights query; None when Insights fails."""
    assert ctx.aws is not None
    try:
        started = await ctx.aws.call("logs", region(ctx), "start_query", logGroupName=log_group,
                                     startTime=int(start.timestamp()), endTime=int(end.timestamp()),
                                     queryString=ERROR_QUERY, limit=QUERY_LIMIT)
    except AwsCheckError:
        return None
    return await _results(ctx, started["queryId"], asyncio.get_running_loop().time() + _budget(ctx))


def _budget(ctx: CheckContext) -> float:
    return max(0.0, min(MAX_QUERY_S, ctx.remaining() - 2 * POLL_S))


async def _results(ctx: CheckContext, query_id: str, give_up_at: float) -> QueryEvents | None:
    assert ctx.aws is not None
    finished = False
    try:
        while True:
            page = await ctx.aws.poll("logs", region(ctx), "get_query_results", queryId=query_id)
            status = str(page.get("status", "Unknown"))
            finished = status in _FINISHED
            if finished or asyncio.get_running_loop().time() + POLL_S > give_up_at:
                return _outcome(page, status, finished)
            await asyncio.sleep(POLL_S)
    except AwsCheckError:
        return None
    finally:
        if not finished:
            await _stop(ctx, query_id)


def _outcome(page: dict[str, Any], status: str, finished: bool) -> QueryEvents | None:
    if finished and status != "Complete":
        return None
    rows = [_event(row) for row in page.get("results", [])]
    return QueryEvents(rows, truncated=not finished or len(rows) >= QUERY_LIMIT, status=status)


async def _stop(ctx: CheckContext, query_id: str) -> None:
    """Best effort: a query that cannot be stopped ends by itself after Insights' 60 min limit."""
    assert ctx.aws is not None
    with contextlib.suppress(AwsCheckError, TimeoutError):
        await asyncio.wait_for(ctx.aws.poll("logs", region(ctx), "stop_query", queryId=query_id), timeout=3)


def _event(row: list[dict[str, str]]) -> dict[str, Any]:
    fields = {f.get("field"): f.get("value", "") for f in row}
    return {"timestamp": _millis(fields.get("@timestamp", "0")), "message": fields.get("@message", ""),
            "logStreamName": fields.get("@logStream", "")}


def _millis(value: str) -> int:
    """Insights answers `2026-12-03 15:00:01.123` (moto: epoch milliseconds)."""
    if value.isdigit():
        return int(value)
    moment = datetime.strptime(value, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
