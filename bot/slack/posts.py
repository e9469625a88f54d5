"""Slack posts made by jobs, posted once even when a worker dies between "Slack has it" and "we wrote it down".

A job records each post's ts in a Redis hash so that its retries do not post again. That leaves one window: a
worker killed after Slack accepted the post but before the ts was recorded, whose job then runs again elsewhere.
So the field first says PENDING, and the post carries a marker derived from the hash key and field; a delivery
that finds PENDING looks for the marker in the thread (or the channel) and records what it finds instead of
posting a second message.
"""

from __future__ import annotations

import hashlib
from typing import Any

import redis.asyncio as aioredis

from bot.queue import as_text
from bot.slack.client import SlackClient

PENDING = "pending"


async def post_once(redis: aioredis.Redis, slack: SlackClient, key: str, field: str, channel: str, text: str, *,
                    blocks: list | None = None, thread_ts: str | None = None, ttl_s: int | None = None) -> str:
    """Post unless field `field` of hash `key` already records the post; returns the message's ts. With `ttl_s`
    the hash expires that long after its last post (diagnosis runs); without, it is kept (incidents)."""
    raw = await redis.hget(key, field)
    recorded = None if raw is None else as_text(raw)
    if recorded is not None and recorded != PENDING:
        return recorded
    post_id = hashlib.sha256(f"{key}\n{field}".encode()).hexdigest()[:32]
    if recorded == PENDING:  # an earlier delivery got this far: it may have posted before it died
        found = await slack.find_post(channel, thread_ts, post_id)
        if found is not None:
            return await _record(redis, key, field, found["ts"], ttl_s)
    else:
        await _record(redis, key, field, PENDING, ttl_s)
    posted: dict[str, Any] = await slack.post_message(channel, text, blocks=blocks, thread_ts=thread_ts,
                                                      post_id=post_id)
    return await _record(redis, key, field, str(posted["ts"]), ttl_s)


async def recorded_post(redis: aioredis.Redis, key: str, field: str) -> str | None:
    """The ts `post_once` recorded, None while there is none (or its post may still be in flight)."""
    raw = await redis.hget(key, field)
    return None if raw is None or as_text(raw) == PENDING else as_text(raw)


async def _record(redis: aioredis.Redis, key: str, field: str, value: str, ttl_s: int | None) -> str:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, field, value)
        if ttl_s is not None:
            pipe.expire(key, ttl_s)
        await pipe.execute()
    return value
