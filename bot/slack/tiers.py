"""Slack's per-method rate limits (docs.slack.dev/apis/web-api/rate-limits), in one place: the client paces the
methods it calls by them (bot/slack/client.py) and the local Slack enforces them (bot/slack/local/rate_limits.py).

Slack limits each Web API method per app per workspace by tier: Tier 1 "1+ per minute", Tier 2 "20+", Tier 3 "50+",
Tier 4 "100+", each tolerating bursts. chat.postMessage is "Special": about one a second per channel, paced per
channel (ChannelPacer). Methods Slack calls "Special" without a number (auth.test, chat.getPermalink) have none.
These are an internal (customer-built) app's: since 2025-05-29 a commercially distributed app outside the
Marketplace gets 1 conversations.history/replies call a minute, which the back-fill's own pace is set for
(BACKFILL_CALLS_PER_MIN), not this table.
"""

from __future__ import annotations

from bot.queue.pacing import Pace

PER_MINUTE = {1: 1, 2: 20, 3: 50, 4: 100}  # calls a minute per method, per app and workspace

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


def per_minute(method: str) -> int | None:
    """Calls a minute Slack promises `method` (per app and workspace); None when it has no tier."""
    tier = METHOD_TIERS.get(method)
    return PER_MINUTE[tier] if tier else None


def pace_of(method: str, minute_s: float = 60.0) -> Pace | None:
    """`method`'s budget: its tier's calls per minute (`minute_s` shortens the minute for tests)."""
    limit = per_minute(method)
    return Pace(limit, minute_s) if limit else None
