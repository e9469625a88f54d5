"""Slack's rate limits, enforced the way Slack enforces them, so a test sees the 429 real Slack would send.

Slack limits each Web API method per app per workspace by tier, and chat.postMessage per channel
(docs.slack.dev/apis/web-api/rate-limits): Tier 1 "1+ per minute", Tier 2 "20+", Tier 3 "50+", Tier 4 "100+", each
tolerating bursts; chat.postMessage "1 per second per channel, short bursts >1 allowed". Each limit here is a token
bucket holding a minute's allowance (the burst) and refilling at the documented rate: the floor Slack promises, so
what passes here passes there. A refused call gets what Slack sends: HTTP 429, `Retry-After` in whole seconds, and
`{"ok": false, "error": "ratelimited"}`. Methods whose tier Slack calls "Special" without a number (auth.test,
chat.getPermalink) are not limited here.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from bot.slack.local.model import Scripted, http_error

PER_MINUTE = {1: 1, 2: 20, 3: 50, 4: 100}  # Slack's tiers: calls a minute per method, per app and workspace

METHOD_TIERS = {  # each method's tier, from its reference page on docs.slack.dev
    "apps.connections.open": 1,
    "canvases.create": 2, "conversations.canvases.create": 2, "conversations.create": 2,
    "conversations.archive": 2, "conversations.rename": 2, "conversations.setTopic": 2,
    "conversations.setPurpose": 2, "conversations.list": 2, "pins.add": 2, "pins.remove": 2, "pins.list": 2,
    "reactions.remove": 2, "users.list": 2, "usergroups.list": 2, "usergroups.users.list": 2, "files.upload": 2,
    "canvases.edit": 3, "canvases.delete": 3, "chat.update": 3, "chat.delete": 3, "conversations.history": 3,
    "conversations.replies": 3, "conversations.info": 3, "conversations.invite": 3, "conversations.join": 3,
    "conversations.open": 3, "reactions.add": 3, "reactions.get": 3, "users.lookupByEmail": 3,
    "chat.postEphemeral": 4, "conversations.members": 4, "users.info": 4, "files.info": 4,
    "files.getUploadURLExternal": 4, "files.completeUploadExternal": 4,
    "views.open": 4, "views.publish": 4, "views.push": 4, "views.update": 4,
}
POSTS_PER_SECOND = 1.0  # chat.postMessage, per channel
POST_BURST = 25  # "short bursts >1 allowed": about what people measure before the 429s start


@dataclass
class Bucket:
    capacity: float
    per_second: float
    tokens: float = -1.0  # full on first use
    stamp: float = field(default_factory=time.monotonic)

    def take(self, now: float) -> float:
        """0 when a call may go now (and it is counted); else the seconds until one may."""
        if self.tokens < 0:
            self.tokens = self.capacity
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.per_second)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.per_second


class RateLimits:
    """The buckets of one app in one workspace. `enabled=False` turns them off (a test about something else that
    must make more calls a minute than Slack allows, said where it is done)."""

    def __init__(self, *, enabled: bool = True, post_burst: int = POST_BURST) -> None:
        self.enabled = enabled
        self._post_burst = post_burst
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self._lock = threading.Lock()
        self.refused = 0

    def take(self, method: str, params: dict) -> Scripted | None:
        """None when the call may go; Slack's 429 when its method (or its channel, for a post) is over the limit."""
        key, bucket = self._bucket(method, params)
        if not self.enabled or bucket is None:
            return None
        with self._lock:
            wait = self._buckets.setdefault(key, bucket).take(time.monotonic())
            self.refused += wait > 0
        return http_error(429, retry_after=wait) if wait > 0 else None

    def _bucket(self, method: str, params: dict) -> tuple[tuple[str, str], Bucket | None]:
        if method == "chat.postMessage":
            return (method, str(params.get("channel", ""))), Bucket(self._post_burst, POSTS_PER_SECOND)
        tier = METHOD_TIERS.get(method)
        per_minute = PER_MINUTE[tier] if tier else 0
        return (method, ""), Bucket(per_minute, per_minute / 60) if per_minute else None
