"""The one retry policy: exponential backoff with full jitter, always bounded in attempts and in total time.

Used by the queue (job retries), the paging providers and anything else that calls out. Slack's own client uses
slack_sdk's retry handlers configured from the same numbers (see bot/slack/client.py).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")


class RetryPolicy(msgspec.Struct, frozen=True):
    attempts: int = 5  # total tries, including the first
    base_s: float = 0.5
    max_s: float = 30.0

    def delay(self, attempt: int, *, retry_after: float | None = None) -> float:
        """Seconds to wait before try number `attempt + 1` (attempt counts from 1). A server's Retry-After wins."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_s)
        ceiling = min(self.max_s, self.base_s * (2 ** max(attempt - 1, 0)))
        return random.uniform(ceiling / 2, ceiling)  # "equal jitter": never zero, never in lockstep


def retry_after_s(headers: Mapping[str, Any]) -> float | None:
    """A response's Retry-After as seconds (a number or an HTTP date; of several values, as slack_sdk keeps them
    in a list or httpx joins them with commas, the first); None when absent or unreadable. The header's name is
    matched in any case."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if isinstance(value, list):
        value = value[0] if value else None
    if not value:
        return None
    seconds = _seconds_or_date(value)
    if seconds is None and "," in value:  # repeated headers joined ("5, 5", as httpx does); a date has a comma too
        seconds = _seconds_or_date(value.split(",", 1)[0])
    return seconds


def _seconds_or_date(value: str) -> float | None:
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:  # "nan" and "inf" parse as floats: a wait no caller could keep, so unreadable
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


class RetryableError(Exception):
    """Raise from an attempt to ask for another try; `retry_after` carries a server's Retry-After."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


async def retry_async(
    attempt_fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy = RetryPolicy(),
    *,
    retry_on: tuple[type[BaseException], ...] = (RetryableError,),
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Call `attempt_fn` until it returns, or re-raise its last error after `policy.attempts` tries."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return await attempt_fn()
        except retry_on as exc:
            if attempt == policy.attempts:
                raise
            await sleep(policy.delay(attempt, retry_after=getattr(exc, "retry_after", None)))
    raise AssertionError("unreachable")
