"""What every Slack request passes before a listener runs: its signature, the workspace's authorization, and the
replay guard for clicks. Each replaces a Bolt default that could hurt an ack or the log:

- `QuietVerification`: Bolt logs the whole body of a request whose signature fails (five unsigned 10 MB posts were
  52 MB of log); this logs one short line (route, reason, size), at most a few a minute.
- `InstallationAuth`: Bolt's single-workspace mode calls `auth.test` on the first request, inside the ack, with
  the client's retries (27 s while Slack answered 429). This learns the workspace once at start-up, retrying in
  the background; until then a request is authorized with the bot token alone, so an ack never waits for Slack.
- `OncePerClick`: a signed click replayed within Slack's 5-minute signing window does nothing the second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.authorization import AuthorizeResult
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.middleware.request_verification.async_request_verification import (
    AsyncRequestVerification,
)
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.logs import Throttled
from bot.runtime import Runtime

log = logging.getLogger(__name__)

SIGNING_WINDOW_S = 300  # Slack's: a signature older than this is refused anyway
CLICK_TTL_S = 2 * SIGNING_WINDOW_S
AUTH_RETRY_S = (1, 2, 5, 10, 30, 60)


class QuietVerification(AsyncRequestVerification):
    """Bolt's signature check, logging what was refused instead of the body."""

    def __init__(self, signing_secret: str) -> None:
        super().__init__(signing_secret)
        self.rejected = Throttled(log)

    def _debug_log_error(self, signature: Any, timestamp: Any, body: Any) -> None:
        self.rejected.warning("rejected POST /slack/events: %s (%d bytes)", refusal_reason(signature, timestamp),
                              len(body or ""))


def refusal_reason(signature: str, timestamp: str) -> str:
    if not signature:
        return "no X-Slack-Signature"
    if not str(timestamp).isdigit() or abs(time.time() - int(timestamp)) > SIGNING_WINDOW_S:
        return "X-Slack-Request-Timestamp missing or outside the 5-minute window"
    return "signature does not match SLACK_SIGNING_SECRET"


class InstallationAuth:
    """Bolt's `authorize` for the one workspace this bot is installed in, answered from memory."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        self.token = client.token or ""
        self.learnt: dict[str, Any] = {}  # auth.test's answer: team, bot user, scopes
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._learn())

    async def aclose(self, _rt: Any = None) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _learn(self) -> None:
        for attempt in itertools.count():
            try:
                answer = await self.client.auth_test()
                self.learnt = {**answer.data, "scopes": answer.headers.get("x-oauth-scopes")}  # type: ignore[dict-item]
                log.info("Slack: authorized as %s in %s", self.learnt.get("user_id"), self.learnt.get("team_id"))
                return
            except Exception as exc:
                wait = AUTH_RETRY_S[min(attempt, len(AUTH_RETRY_S) - 1)]
                log.warning("Slack auth.test failed (%s); requests are served with the bot token meanwhile; "
                            "retrying in %d s", type(exc).__name__, wait)
                await asyncio.sleep(wait)

    def authorize(self) -> Callable[..., Awaitable[AuthorizeResult]]:
        """Bolt's `authorize=`: a plain function, since Bolt passes arguments by the names in its signature."""

        async def authorize(enterprise_id: str | None, team_id: str | None, user_id: str | None) -> AuthorizeResult:
            self.start()
            return self.result(enterprise_id, team_id, user_id)

        return authorize

    def result(self, enterprise_id: str | None, team_id: str | None, user_id: str | None) -> AuthorizeResult:
        known = self.learnt
        return AuthorizeResult(
            enterprise_id=known.get("enterprise_id") or enterprise_id, team_id=known.get("team_id") or team_id,
            bot_id=known.get("bot_id"), bot_user_id=known.get("user_id"), bot_token=self.token,
            user_id=user_id, bot_scopes=known.get("scopes"))


def click_key(rt: Runtime, body: dict) -> str | None:
    """One key per click: Slack gives each its own trigger_id and action_ts; a replay repeats both."""
    actions = body.get("actions") or [{}]
    parts = [body.get("trigger_id"), (body.get("user") or {}).get("id"), actions[0].get("action_id"),
             actions[0].get("action_ts")]
    if body.get("type") != "block_actions" or not any(parts):
        return None
    return rt.key("click", hashlib.sha256(repr(parts).encode()).hexdigest()[:32])


class OncePerClick(AsyncMiddleware):
    """A middleware object rather than a function: Bolt calls a function middleware with arguments it builds from
    the request by name, on every request, slash commands included; this one reads the body it needs itself."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def async_process(self, *, req: AsyncBoltRequest, resp: BoltResponse,
                            next: Callable[[], Awaitable[BoltResponse]]) -> BoltResponse | None:
        key = click_key(self.rt, req.body)
        if key is not None and not await _first_time(self.rt, key):
            log.info("ignored a replayed click (%s)", key.rsplit(":", 1)[-1][:8])
            return BoltResponse(status=200, body="")  # acknowledged, and nothing else happens
        return await next()


async def _first_time(rt: Runtime, key: str) -> bool:
    """SET NX with a TTL past the signing window. With Redis down the click goes through: the handler itself
    then fails or guards its own effect, and refusing every button during an outage would be worse."""
    try:
        return bool(await rt.redis.set(key, 1, nx=True, ex=CLICK_TTL_S))
    except Exception as exc:
        log.warning("replay guard unavailable (%s); letting the click through", type(exc).__name__)
        return True
