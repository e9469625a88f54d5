"""The one Slack Web API client the bot uses, wherever it runs (HTTP, Socket Mode, terminal, workers).

- Base URL from `SLACK_API_URL`, so tests and the terminal chat point it at a local Slack.
- Bounded retries: 429 honouring Retry-After, 5xx, and connection errors/timeouts (slack_sdk's handlers).
- Per-channel pacing: chat.postMessage is limited to about one message per second per channel; a token bucket
  (small burst, then the steady rate) keeps a chatty diagnosis from earning 429s in the first place.
- Errors become `SlackError` carrying Slack's error code and a sentence; never a traceback in a channel.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.settings import Settings

log = logging.getLogger(__name__)


class SlackError(Exception):
    def __init__(self, method: str, error: str) -> None:
        super().__init__(f"Slack {method} failed: {error}")
        self.method = method
        self.error = error


class _TimeoutRetryHandler(AsyncConnectionErrorRetryHandler):
    """slack_sdk retries dropped connections; a read timeout deserves the same bounded second chance."""

    async def _can_retry_async(self, *, state, request, response=None, error=None) -> bool:  # type: ignore[override]
        if isinstance(error, asyncio.TimeoutError | TimeoutError):
            return True
        return await super()._can_retry_async(state=state, request=request, response=response, error=error)


class ChannelPacer:
    """Token bucket per channel: `burst` messages at once, then `rate` per second."""

    def __init__(self, *, burst: int = 5, rate: float = 1.0) -> None:
        self._burst = burst
        self._rate = rate
        self._buckets: dict[str, tuple[float, float]] = {}  # channel -> (tokens, updated_at)
        self._locks: dict[str, asyncio.Lock] = {}

    async def wait(self, channel: str) -> None:
        lock = self._locks.setdefault(channel, asyncio.Lock())
        async with lock:  # also keeps a channel's messages in the order they were asked for
            tokens, updated = self._buckets.get(channel, (float(self._burst), time.monotonic()))
            now = time.monotonic()
            tokens = min(self._burst, tokens + (now - updated) * self._rate)
            if tokens < 1:
                await asyncio.sleep((1 - tokens) / self._rate)
                tokens, now = 1.0, time.monotonic()
            self._buckets[channel] = (tokens - 1, now)


class SlackClient:
    def __init__(self, web: AsyncWebClient, *, pacer: ChannelPacer | None = None) -> None:
        self.web = web
        self.pacer = pacer or ChannelPacer()
        self.errors: Counter[str] = Counter()  # Slack API errors by method, for /metrics

    @classmethod
    def from_settings(cls, settings: Settings) -> SlackClient:
        return cls(make_web_client(settings), pacer=ChannelPacer(
            burst=settings.slack_channel_burst, rate=settings.slack_channel_rate_per_s))

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Call any Web API method; raise SlackError with Slack's error code when it answers not-ok."""
        try:
            response = await _sdk_method(self.web, method)(**_drop_none(params))
        except SlackApiError as exc:
            error = str(exc.response.get("error", "unknown_error")) if exc.response is not None else "unknown_error"
            self.errors[method] += 1
            raise SlackError(method, error) from None
        except (asyncio.TimeoutError, OSError) as exc:
            self.errors[method] += 1
            raise SlackError(method, f"unreachable ({type(exc).__name__})") from None
        return dict(response.data) if isinstance(response.data, dict) else {}

    async def post_message(self, channel: str, text: str, *, blocks: list | None = None,
                           thread_ts: str | None = None, **extra: Any) -> dict[str, Any]:
        """Post (paced per channel); returns Slack's answer including `channel` and `ts`."""
        await self.pacer.wait(channel)
        params = dict(channel=channel, text=text, blocks=blocks, thread_ts=thread_ts,
                      unfurl_links=False, unfurl_media=False, **extra)
        try:
            return await self.call("chat.postMessage", **params)
        except SlackError as exc:
            if exc.error != "not_in_channel":
                raise
            await self.call("conversations.join", channel=channel)  # public channels only; private ones re-raise
            return await self.call("chat.postMessage", **params)

    async def update_message(self, channel: str, ts: str, text: str, *, blocks: list | None = None) -> dict:
        return await self.call("chat.update", channel=channel, ts=ts, text=text, blocks=blocks)

    async def post_ephemeral(self, channel: str, user: str, text: str, *, blocks: list | None = None) -> dict:
        return await self.call("chat.postEphemeral", channel=channel, user=user, text=text, blocks=blocks)

    async def open_dm(self, user: str) -> str:
        answer = await self.call("conversations.open", users=user)
        return str(answer["channel"]["id"])

    async def permalink(self, channel: str, ts: str) -> str | None:
        try:
            answer = await self.call("chat.getPermalink", channel=channel, message_ts=ts)
        except SlackError:
            return None  # a missing link must not fail the message that wanted it
        return answer.get("permalink")


def make_web_client(settings: Settings) -> AsyncWebClient:
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    retries = settings.slack_max_retries
    return AsyncWebClient(
        token=token,
        base_url=str(settings.slack_api_url),
        timeout=int(settings.slack_timeout_s),
        retry_handlers=[
            _TimeoutRetryHandler(max_retry_count=retries),
            AsyncRateLimitErrorRetryHandler(max_retry_count=retries),
            AsyncServerErrorRetryHandler(max_retry_count=retries),
        ],
    )


def _sdk_method(web: AsyncWebClient, method: str) -> Any:
    """slack_sdk's own method (`chat.postMessage` → `chat_postMessage`), which knows each method's encoding."""
    named = getattr(web, method.replace(".", "_"), None)
    if named is not None:
        return named
    return lambda **params: web.api_call(method, json=params)


def _drop_none(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}
