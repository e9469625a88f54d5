"""Slack's rate limits, enforced the way Slack enforces them, so a test sees the 429 real Slack would send.

Slack limits each Web API method per app per workspace by its tier (bot/slack/tiers.py), and chat.postMessage per
channel: "1 per second per channel, short bursts >1 allowed". Each limit here is a token bucket holding a minute's
allowance (the burst) and refilling at the documented rate: the floor Slack promises, so what passes here passes
there. A refused call gets what Slack sends: HTTP 429, `Retry-After` in whole seconds, and
`{"ok": false, "error": "ratelimited"}`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from bot.slack.local.model import Scripted, http_error
from bot.slack.tiers import per_minute

POSTS_PER_SECOND = 1.0  # chat.postMessage, per channel
POST_BURST = 25  # "short bursts >1 allowed": about what people measure before the 429s start


@dataclass
class Bucket:
    capacity: float
    per_second: float
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.capacity  # full on first use: a minute's allowance at once

    def take(self, now: float) -> float:
        """0 when a call may go now (and it is counted); else the seconds until one may."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.per_second)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.per_second


class RateLimits:
    """The buckets of one app in one workspace. `enabled=False` turns them off (a test about something else that
    must make more calls a minute than Slack allows, said where it is done)."""

    def __init__(self, *, enabled: bool = True, post_burst: int = POST_BURST, minute_s: float = 60.0) -> None:
        self.enabled = enabled
        self._post_burst = post_burst
        self._minute_s = minute_s  # shorter for a test that must see a minute's limit pass
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self._lock = threading.Lock()
        self.refused = 0

    def take(self, method: str, params: dict) -> Scripted | None:
        """None when the call may go; Slack's 429 when its method (or its channel, for a post) is over the limit."""
        if not self.enabled:
            return None
        key, bucket = self._bucket(method, params)
        if bucket is None:
            return None
        with self._lock:
            wait = self._buckets.setdefault(key, bucket).take(time.monotonic())
            self.refused += wait > 0
        return http_error(429, retry_after=wait) if wait > 0 else None

    def _bucket(self, method: str, params: dict) -> tuple[tuple[str, str], Bucket | None]:
        if method == "chat.postMessage":
            return (method, str(params.get("channel", ""))), Bucket(self._post_burst, POSTS_PER_SECOND)
        limit = per_minute(method)
        return (method, ""), Bucket(limit, limit / self._minute_s) if limit else None
