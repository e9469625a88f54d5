"""One HTTP call to a tracker: a timeout on every request, bounded retries for reads.

Reads (GET) are retried on 429, 5xx and network errors with the one retry policy (a server's Retry-After wins).
A create (POST) is tried once: if it timed out, the ticket may exist, so the caller's job retries from the top,
where the search by marker finds it — retrying the POST itself could make two.
"""

from __future__ import annotations

from typing import Any

import httpx

from bot.retry import RetryableError, RetryPolicy, retry_async
from bot.writeup.trackers.model import TrackerRefused

READ_RETRY = RetryPolicy(attempts=4, base_s=0.5, max_s=8.0)


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
        if response.status_code == 429 or response.status_code >= 500:
            raise RetryableError(f"{method} {_path(url)} answered {response.status_code}",
                                 retry_after=_retry_after(response))
        if response.status_code >= 400:
            raise TrackerRefused(f"{method} {_path(url)} answered {response.status_code}: "
                                 f"{' '.join(response.text.split())[:200]}")
        return response

    return await retry_async(once, policy)


def _path(url: str) -> str:
    return httpx.URL(url).path  # never the query (a JQL may hold text) in a log line or error


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
