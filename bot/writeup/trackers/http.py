"""One HTTP call to a tracker: a timeout on every request, bounded retries for reads, and rate limits honoured.

Reads (GET) are retried on 429, 5xx and network errors with the one retry policy (the server's wait wins).
A create (POST) is tried once: if it timed out, the ticket may exist, so the caller's job retries from the top,
where the search by marker finds it — retrying the POST itself could make two.

Rate limits, as each tracker documents them:
    GitHub   403 or 429; `retry-after` (seconds) when present, else `x-ratelimit-remaining: 0` with
             `x-ratelimit-reset` (UTC epoch seconds), else a secondary limit named in the message: wait ≥ 1 min.
             A 403 with none of these is a refusal (no access), not a limit.
    Jira     429 with `Retry-After` (seconds) and/or `X-RateLimit-Reset` (ISO 8601, `2026-12-03T16:20Z`).
A wait longer than the in-place policy allows is not slept here: RateLimited carries it to the job, which the
queue runs again after that long (bounded by its max deliveries).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx

from bot.retry import RetryableError, RetryPolicy, retry_after_s, retry_async
from bot.writeup.trackers.model import RateLimited, TrackerRefused

READ_RETRY = RetryPolicy(attempts=4, base_s=0.5, max_s=8.0)
SECONDARY_LIMIT_WAIT_S = 60.0  # GitHub: "otherwise, wait for at least one minute before retrying"


async def call(client: httpx.AsyncClient, method: str, url: str, *, attempts: int | None = None,
               **kwargs: Any) -> httpx.Response:
    policy = READ_RETRY if attempts is None else RetryPolicy(attempts, READ_RETRY.base_s, READ_RETRY.max_s)
    if method != "GET":
        policy = RetryPolicy(1)

    async def once() -> httpx.Response:
        try:
            response = await client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise RetryableError(f"{method} {_path(url)}: {type(exc).__name__}") from None
        wait = rate_limit_wait(response)
        if wait is not None:
            error = RateLimited if wait > policy.max_s or policy.attempts == 1 else RetryableError
            raise error(f"{method} {_path(url)} answered {response.status_code} (rate limited)", retry_after=wait)
        if response.status_code >= 500:
            raise RetryableError(f"{method} {_path(url)} answered {response.status_code}",
                                 retry_after=retry_after_s(response.headers))
        if response.status_code >= 400:
            raise TrackerRefused(f"{method} {_path(url)} answered {response.status_code}: "
                                 f"{' '.join(response.text.split())[:200]}")
        return response

    return await retry_async(once, policy)


def rate_limit_wait(response: httpx.Response, now: float | None = None) -> float | None:
    """Seconds to wait when `response` says the caller is rate limited; None when it does not."""
    if response.status_code not in (403, 429):
        return None
    headers, now = response.headers, time.time() if now is None else now
    retry_after = retry_after_s(headers)
    if retry_after is not None:
        return retry_after
    reset = _moment(headers.get("x-ratelimit-reset"))
    if reset is not None and (response.status_code == 429 or headers.get("x-ratelimit-remaining") == "0"):
        return max(reset - now, 0.0)
    if response.status_code == 429 or "rate limit" in response.text.lower():
        return SECONDARY_LIMIT_WAIT_S
    return None


def _path(url: str) -> str:
    return httpx.URL(url).path  # never the query (a JQL may hold text) in a log line or error


def _moment(value: str | None) -> float | None:
    """GitHub's epoch seconds or Jira's ISO 8601 time."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
