"""The one Slack Web API client the bot uses, wherever it runs (HTTP, Socket Mode, terminal, workers).

- Base URL from `SLACK_API_URL`, so tests and the terminal chat point it at a local Slack.
- Bounded retries: 429 honouring Retry-After, 5xx and dropped connections (slack_sdk's handlers). A timeout is
  retried here instead, and only where repeating is harmless: a post that timed out may have been processed, so
  the client first looks for it (each post carries a marker in its metadata) and re-posts only if it is absent.
- Per-channel pacing and order: chat.postMessage is limited to about one message per second per channel; a token
  bucket (small burst, then the steady rate) keeps a chatty diagnosis from earning 429s, and a channel's posts go
  out one at a time, retries included, so a reply held back by a 429 is not overtaken in its thread.
- Errors become `SlackError` carrying Slack's error code and a sentence; never a traceback in a channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.queue.pacing import Pacer
from bot.queue.slots import in_job, parked
from bot.retry import retry_after_s
from bot.settings import Settings
from bot.slack.tiers import pace_of

log = logging.getLogger(__name__)

# Methods whose repetition changes nothing (reads, in-place updates, "already done" answers): safe to retry after a
# timeout, when Slack may or may not have processed the first try.
IDEMPOTENT_PREFIXES = ("auth.", "users.", "usergroups.list", "usergroups.users.list", "conversations.history",
                       "conversations.replies", "conversations.info", "conversations.members", "conversations.list",
                       "conversations.join", "conversations.invite", "conversations.open", "conversations.setTopic",
                       "chat.update", "chat.getPermalink", "pins.", "reactions.")
POST_MARKER_EVENT = "chatops_post"
ANSWERS_KEPT = 10_000  # keys a SharedAnswers remembers; past it the oldest is asked again
# Answers that no retry can change: the job that met one is dead-lettered at once instead of retried for minutes.
PERMANENT_ERRORS = {"channel_not_found", "is_archived", "invalid_auth", "account_inactive", "token_revoked",
                    "not_authed", "missing_scope", "restricted_action", "invalid_blocks", "msg_too_long",
                    "msg_blocks_too_long", "no_text", "user_not_found", "cant_invite_self"}


class SlackError(Exception):
    def __init__(self, method: str, error: str, *, timed_out: bool = False) -> None:
        super().__init__(f"Slack {method} failed: {error}")
        self.method = method
        self.error = error
        self.timed_out = timed_out

    @property
    def permanent(self) -> bool:
        return self.error in PERMANENT_ERRORS


FIND_POST_PAGES = 5  # of 200 messages: how far back find_post looks


class ChannelPacer:
    """Token bucket per channel: `burst` messages at once, then `rate` per second; one post at a time per channel.
    With a `shared` budget the bucket is counted in Redis for every process: two workers posting one run's replies
    into one channel each kept Slack's pace alone and met its 429s together."""

    def __init__(self, *, burst: int = 5, rate: float = 1.0, shared: Pacer | None = None) -> None:
        self._burst = burst
        self._rate = rate
        self._shared = shared
        self._buckets: dict[str, tuple[float, float]] = {}  # channel -> (tokens, updated_at)
        self._locks: dict[str, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def slot(self, channel: str) -> AsyncIterator[None]:
        """Hold the channel (FIFO: asyncio.Lock is fair) for a whole post, retries included, after its token.
        Waiting for the channel or its token is waiting on Slack's pace: a job's worker slot is free meanwhile."""
        lock = self._locks.setdefault(channel, asyncio.Lock())
        must_wait = lock.locked() or (self._shared is None and self._tokens(channel) < 1)  # shared: asked below
        async with parked() if must_wait else contextlib.nullcontext():
            await lock.acquire()
            try:
                await self._take_token(channel)
            except BaseException:
                lock.release()
                raise
        try:
            yield
        finally:
            lock.release()

    def _tokens(self, channel: str) -> float:
        tokens, updated = self._buckets.get(channel, (float(self._burst), time.monotonic()))
        return min(self._burst, tokens + (time.monotonic() - updated) * self._rate)

    async def _take_token(self, channel: str) -> None:
        if self._shared is not None:
            while (wait_s := await self._shared.spend(f"slack-channel:{channel}", burst=self._burst,
                                                      per_second=self._rate)) > 0:
                async with parked(wait_s):
                    await asyncio.sleep(wait_s)
            return
        tokens = self._tokens(channel)
        if tokens < 1:
            await asyncio.sleep((1 - tokens) / self._rate)
            tokens = 1.0
        self._buckets[channel] = (tokens - 1, time.monotonic())


_urgent: ContextVar[bool] = ContextVar("slack_urgent", default=False)


@contextlib.contextmanager
def urgent() -> Iterator[None]:
    """Slack calls made inside never wait for a tier's budget: a page (its DMs, the group it expands) and the
    close-out of its DMs go before any channel set-up; past Slack's limit, Slack's 429 and Retry-After pace them."""
    token = _urgent.set(True)
    try:
        yield
    finally:
        _urgent.reset(token)


T = TypeVar("T")


class SharedAnswers(Generic[T]):
    """Answers asked of Slack once for many callers: those asking for one key at the same moment share one call
    (the ones joining it wait parked, on another job's call as behind its post in a channel), and an answer is kept
    `keep_s` (None: for the process's life), for ANSWERS_KEPT keys at most, the oldest dropped first. A failure is
    not kept: every caller sharing the call raises it, and the next one asks again. The shared call runs as urgent:
    a page may come to wait on it, so it never waits for a method's turn."""

    def __init__(self, ask: Callable[[str], Awaitable[T]], *, keep_s: float | None = None) -> None:
        self._ask = ask
        self._keep_s = keep_s
        self._known: dict[str, tuple[float, T]] = {}  # key -> (kept until, answer)
        self._asking: dict[str, asyncio.Future[T]] = {}  # key -> the call under way

    async def get(self, key: str) -> T:
        known = self._known.get(key)
        if known is not None and known[0] > time.monotonic():
            return known[1]
        if (asking := self._asking.get(key)) is not None:
            async with parked():
                return await asyncio.shield(asking)  # this job cancelled (its timeout) leaves the others' call
        with urgent():  # the task takes this context
            asking = self._asking[key] = asyncio.ensure_future(self._ask(key))
        asking.add_done_callback(functools.partial(self._answered, key))
        return await asyncio.shield(asking)

    def _answered(self, key: str, asking: asyncio.Future[T]) -> None:
        self._asking.pop(key, None)
        if asking.cancelled() or asking.exception() is not None:  # marked as seen: none may be left to await it
            return
        if key not in self._known and len(self._known) >= ANSWERS_KEPT:
            self._known.pop(next(iter(self._known)))
        until = math.inf if self._keep_s is None else time.monotonic() + self._keep_s
        self._known[key] = (until, asking.result())


class SlackClient:
    def __init__(self, web: AsyncWebClient, *, pacer: ChannelPacer | None = None, timeout_retries: int = 2,
                 timeout_s: float = 10.0, budget: Pacer | None = None, minute_s: float = 60.0) -> None:
        self.web = web
        self.pacer = pacer or ChannelPacer()
        # Slack's per-method limits (bot/slack/tiers.py), counted in Redis so every process shares them: 50
        # incidents opened at once must not send 50 conversations.create into a limit of 20 a minute, and then
        # retry them all together. Without Redis (a CLI run) there is no budget; Slack's 429s still pace.
        self.budget = budget
        self.minute_s = minute_s  # a test's shorter minute
        self.timeout_retries = timeout_retries
        self.timeout_s = timeout_s
        self.errors: Counter[str] = Counter()  # Slack API errors by method (given up on), for /metrics
        self._dm_channels = SharedAnswers(self._open_dm)  # user -> the bot's DM channel with them

    @classmethod
    def from_settings(cls, settings: Settings, budget: Pacer | None = None) -> SlackClient:
        pacer = ChannelPacer(burst=settings.slack_channel_burst, rate=settings.slack_channel_rate_per_s, shared=budget)
        return cls(make_web_client(settings, budget), pacer=pacer, timeout_retries=settings.slack_max_retries,
                   timeout_s=settings.slack_timeout_s, budget=budget)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Call any Web API method; raise SlackError with Slack's error code when it answers not-ok. A timeout is
        retried (bounded) only for methods where a repeat is harmless."""
        await self._take_turn(method)  # once per call: a retry after a timeout keeps its place
        return await self._call_retrying(method, params)

    async def _call_retrying(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        retries = self.timeout_retries if method.startswith(IDEMPOTENT_PREFIXES) else 0
        for attempt in range(retries + 1):
            try:
                return await self._call_once(method, params)
            except SlackError as exc:
                if not exc.timed_out or attempt == retries:
                    self.errors[method] += 1
                    raise
                log.warning("Slack %s timed out; retrying (%d of %d)", method, attempt + 1, retries)
        raise AssertionError("unreachable")

    async def _call_once(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await _sdk_method(self.web, method)(**_drop_none(params))
        except SlackApiError as exc:
            error = str(exc.response.get("error", "unknown_error")) if exc.response is not None else "unknown_error"
            raise SlackError(method, error) from None
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            raise SlackError(method, f"unreachable ({type(exc).__name__})",
                             timed_out=isinstance(exc, TimeoutError)) from None
        return dict(response.data) if isinstance(response.data, dict) else {}

    async def _take_turn(self, method: str, *, wait: bool = True) -> bool:
        """In a worker's job, wait for `method`'s turn in its tier's budget, first come first served across every
        process; the wait is on Slack's pace, so the job's worker slot is free meanwhile. With `wait=False`, a
        turn that is not there now is given up (False). A call someone is waiting for (an ack's, a modal's whose
        trigger_id lasts 3 s) and a page's (`urgent()`) never wait here: Slack's 429, if any, is retried."""
        pacer = self.budget
        if pacer is None or not in_job() or _urgent.get() or (pace := pace_of(method, self.minute_s)) is None:
            return True
        budget, member = f"slack:{method}", uuid.uuid4().hex
        try:
            while (wait_s := await pacer.turn(budget, pace, member, "P1")) > 0:
                if not wait:
                    await pacer.leave(budget, member)
                    return False
                async with parked(wait_s):
                    await asyncio.sleep(wait_s)
        except BaseException:  # cancelled (the job's timeout, a shutdown): do not hold back those behind
            with contextlib.suppress(Exception):
                await pacer.leave(budget, member)
            raise
        return True

    async def post_message(self, channel: str, text: str, *, blocks: list | None = None,
                           thread_ts: str | None = None, post_id: str | None = None, **extra: Any) -> dict[str, Any]:
        """Post (paced and ordered per channel), at most once; returns Slack's answer with `channel` and `ts`.
        `post_id` is the marker the post carries (a fresh one by default); `find_post` looks for it."""
        marker = post_id or uuid.uuid4().hex
        params = dict(channel=channel, text=text, blocks=blocks, thread_ts=thread_ts, unfurl_links=False,
                      unfurl_media=False, **extra,
                      metadata={"event_type": POST_MARKER_EVENT, "event_payload": {"post_id": marker}})
        async with self.pacer.slot(channel):
            for attempt in range(self.timeout_retries + 1):
                try:
                    return await self._post_once(params)
                except SlackError as exc:
                    if not exc.timed_out:
                        self.errors["chat.postMessage"] += 1
                        raise
                    # Slack may have processed it anyway: give it the time it was allowed, then look.
                    await asyncio.sleep(self.timeout_s)
                    found = await self.find_post(channel, thread_ts, marker)
                    if found is not None:
                        return found
                    if attempt == self.timeout_retries:
                        self.errors["chat.postMessage"] += 1
                        raise
                    log.warning("Slack chat.postMessage timed out and the post is not there; posting again")
        raise AssertionError("unreachable")

    async def _post_once(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self._call_once("chat.postMessage", params)
        except SlackError as exc:
            if exc.error != "not_in_channel":
                raise
            await self.call("conversations.join", channel=params["channel"])  # public channels; private re-raise
            return await self._call_once("chat.postMessage", params)

    async def find_post(self, channel: str, thread_ts: str | None, marker: str) -> dict[str, Any] | None:
        """The message posted with `marker` (its `post_id`), if Slack has it: looked for among the thread's replies
        or the channel's latest messages. None also when Slack cannot be asked: re-posting is the lesser evil."""
        method, params = (("conversations.replies", {"ts": thread_ts}) if thread_ts
                          else ("conversations.history", {}))
        cursor = None
        for _ in range(FIND_POST_PAGES):  # a busy thread or channel may have moved on since the post
            try:
                answer = await self.call(method, channel=channel, limit=200, include_all_metadata=True,
                                         cursor=cursor, **params)
            except SlackError as exc:
                log.warning("could not look for an earlier post in %s (%s): it may be posted twice", channel,
                            exc.error)
                return None  # cannot tell; re-posting is the lesser evil than losing the message
            for message in answer.get("messages", []):
                payload = (message.get("metadata") or {}).get("event_payload") or {}
                if payload.get("post_id") == marker:
                    return {"ok": True, "channel": channel, "ts": message["ts"], "message": message}
            cursor = (answer.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return None
        return None

    async def upload_file(self, channel: str, content: bytes, filename: str, *, title: str | None = None,
                          alt_txt: str | None = None, thread_ts: str | None = None,
                          initial_comment: str | None = None) -> dict[str, Any]:
        """Share `content` as a file in `channel` (in the thread `thread_ts`) with Slack's three-step upload:
        files.getUploadURLExternal, the bytes POSTed to the URL it hands out, files.completeUploadExternal. Paced
        like a post (the share is a message, with `initial_comment` as its text). Not retried after a timeout: a
        second share would be a duplicate. A public channel the bot is not in is joined, as for a post."""
        async with self.pacer.slot(channel):
            reserved = await self.call("files.getUploadURLExternal", filename=filename, length=len(content),
                                       alt_txt=alt_txt)
            await self._send_upload(reserved["upload_url"], content)
            share = dict(channel_id=channel, thread_ts=thread_ts, initial_comment=initial_comment,
                         files=[{"id": reserved["file_id"], "title": title or filename}])
            done = await self._complete_upload(share)
        return dict((done.get("files") or [{}])[0])

    async def _complete_upload(self, share: dict[str, Any]) -> dict[str, Any]:
        await self._take_turn("files.completeUploadExternal")  # _call_once takes none: `call` takes them
        try:
            return await self._call_once("files.completeUploadExternal", share)
        except SlackError as exc:
            if exc.error != "not_in_channel":
                self.errors["files.completeUploadExternal"] += 1
                raise
        await self.call("conversations.join", channel=share["channel_id"])  # public channels; private re-raise
        return await self.call("files.completeUploadExternal", **share)

    async def _send_upload(self, url: str, content: bytes) -> None:
        """Step 2: the raw bytes to the upload URL (Slack answers 200 "OK - <length>")."""
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        session = self.web.session
        try:
            if session is not None and not session.closed:
                await self._post_bytes(session, url, content, timeout)
                return
            async with aiohttp.ClientSession() as own:
                await self._post_bytes(own, url, content, timeout)
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            self.errors["files.upload"] += 1
            raise SlackError("files.upload", f"unreachable ({type(exc).__name__})",
                             timed_out=isinstance(exc, TimeoutError)) from None

    async def _post_bytes(self, session: aiohttp.ClientSession, url: str, content: bytes,
                          timeout: aiohttp.ClientTimeout) -> None:
        async with session.post(url, data=content, timeout=timeout,
                                headers={"Content-Type": "application/octet-stream"}) as answer:
            if answer.status != 200:
                self.errors["files.upload"] += 1
                raise SlackError("files.upload", f"HTTP {answer.status}")

    async def aclose(self) -> None:
        if self.web.session is not None and not self.web.session.closed:
            await self.web.session.close()

    async def update_message(self, channel: str, ts: str, text: str, *, blocks: list | None = None) -> dict:
        return await self.call("chat.update", channel=channel, ts=ts, text=text, blocks=blocks)

    async def redraw_if_free(self, channel: str, ts: str, text: str, *, blocks: list | None = None) -> bool:
        """A redraw worth making only now (a progress count): skipped (False) while chat.update's budget, 50 a
        minute for the whole workspace, is spent, so it never queues ahead of one that matters (a verdict)."""
        if not await self._take_turn("chat.update", wait=False):
            return False
        await self._call_retrying("chat.update", {"channel": channel, "ts": ts, "text": text, "blocks": blocks})
        return True

    async def post_ephemeral(self, channel: str, user: str, text: str, *, blocks: list | None = None) -> dict:
        return await self.call("chat.postEphemeral", channel=channel, user=user, text=text, blocks=blocks)

    async def open_dm(self, user: str) -> str:
        """The bot's DM channel with `user`. Slack keeps one per person, so each process asks once (callers at the
        same moment share the one call): a storm of 50 pages to three people is 150 DMs, not 150
        conversations.open first, a Tier 3 method (50 a minute) that paced the pages behind it."""
        return await self._dm_channels.get(user)

    async def _open_dm(self, user: str) -> str:
        answer = await self.call("conversations.open", users=user)
        return str(answer["channel"]["id"])

    async def permalink(self, channel: str, ts: str) -> str | None:
        try:
            answer = await self.call("chat.getPermalink", channel=channel, message_ts=ts)
        except SlackError:
            return None  # a missing link must not fail the message that wanted it
        return answer.get("permalink")


class SharedRateLimitRetry(AsyncRateLimitErrorRetryHandler):
    """slack_sdk's 429 retry, plus: every 429 on a tiered method (the last one too, when no retry is left) pauses
    that method's shared budget for its Retry-After, in every process, so the calls waiting for a turn wait it out
    instead of each meeting a 429 of its own (our count and Slack's can differ: calls that never wait for a turn, a
    limit lower than documented). The retry's wait is on Slack's pace: a job's worker slot is free meanwhile."""

    def __init__(self, budget: Pacer, max_retry_count: int, minute_s: float = 60.0) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.budget = budget
        self.minute_s = minute_s

    async def can_retry_async(self, *, state: Any, request: Any, response: Any = None,
                              error: Exception | None = None) -> bool:
        method = request.url.rstrip("/").rsplit("/", 1)[-1]
        if response is not None and response.status_code == 429 and pace_of(method, self.minute_s) is not None:
            with contextlib.suppress(Exception):  # the budget is a courtesy to the others; the answer stands
                await self.budget.pause(f"slack:{method}", retry_after_s(response.headers))
        return await super().can_retry_async(state=state, request=request, response=response, error=error)

    async def prepare_for_next_attempt_async(self, *, state: Any, request: Any, response: Any = None,
                                             error: Exception | None = None) -> None:
        async with parked(retry_after_s(response.headers) if response is not None else None):
            await super().prepare_for_next_attempt_async(state=state, request=request, response=response,
                                                         error=error)


def make_web_client(settings: Settings, budget: Pacer | None = None) -> AsyncWebClient:
    """slack_sdk's client with bounded retries; with a shared `budget`, a 429 pauses the method's budget too."""
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    retries = settings.slack_max_retries
    rate_limited = (SharedRateLimitRetry(budget, retries) if budget is not None
                    else AsyncRateLimitErrorRetryHandler(max_retry_count=retries))
    timeout = max(1, round(settings.slack_timeout_s))  # slack_sdk takes whole seconds; 0 would mean no wait
    return AsyncWebClient(
        token=token,
        base_url=str(settings.slack_api_url),
        timeout=timeout,
        session=_shared_session(timeout),
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=retries),
            rate_limited,
            AsyncServerErrorRetryHandler(max_retry_count=retries),
        ],
    )


def _shared_session(timeout_s: float) -> aiohttp.ClientSession | None:
    """One connection pool for every Slack call of this process (slack_sdk otherwise opens a connection per call,
    which costs a TCP and TLS handshake each under load). With a session, slack_sdk takes the timeout from it."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return None  # made outside an event loop: slack_sdk falls back to a session per call
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s),
                                 connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=30))


def _sdk_method(web: AsyncWebClient, method: str) -> Any:
    """slack_sdk's own method (`chat.postMessage` → `chat_postMessage`), which knows each method's encoding."""
    named = getattr(web, method.replace(".", "_"), None)
    if named is not None:
        return named
    return lambda **params: web.api_call(method, json=params)


def _drop_none(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}
