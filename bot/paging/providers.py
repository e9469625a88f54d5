"""The narrow paging interface every provider implements, and the types that cross it.

A provider turns one `Page` into a notification in its own medium (PagerDuty, Opsgenie, a Slack DM) and answers
with a `PageResult` — it never raises for a provider-side failure: `ok=False` plus `error`, a plain sentence an
incident channel can show ("PagerDuty rejected the page: Invalid routing key"). Secrets never appear in it.

Idempotency is the provider's job: paging jobs may run more than once, so every page carries a deterministic
`dedup_key` (see `make_dedup_key`) and a retried trigger with the same key must not open a second alert.

Known keys of `Page.details` (providers render what they know and pass the rest along as custom details):
`status` (investigating/identified/monitoring/resolved), `elapsed_s` (seconds since the incident opened),
`last_update` (the latest status-update text), `failing_checks` (list of check names or one-line results).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

import aiohttp
import msgspec
from yarl import URL

from bot import durations
from bot.queue.pacing import Pace, budget_id
from bot.retry import RetryableError, RetryPolicy, retry_after_s, retry_async
from checks.schema import Meta, Strict

log = logging.getLogger(__name__)

Severity = Literal["P0", "P1", "P2", "P3"]
Urgency = Literal["high", "low"]
SEVERITIES: tuple[str, ...] = ("P0", "P1", "P2", "P3")

_DEDUP_KEY = re.compile(r"^(?P<incident>.+):(?P<severity>P[0-3]):L(?P<level>\d+)$")


def make_dedup_key(incident_id: str, severity: str, level: int) -> str:
    """`INC-42:P0:L1` — the same on every retry of the same page.

    The severity is part of the key on purpose: PagerDuty folds a trigger into an open alert with the same key
    without notifying anyone, so a P2 page (low urgency) must not swallow the P0 page that follows a raise.
    """
    return f"{incident_id}:{severity}:L{level}"


def parse_dedup_key(key: str) -> tuple[str, str, int] | None:
    """`(incident_id, severity, level)` from a key made by `make_dedup_key`, or None for a foreign key."""
    match = _DEDUP_KEY.match(key or "")
    if not match:
        return None
    return match["incident"], match["severity"], int(match["level"])


class Page(msgspec.Struct, frozen=True):
    incident_id: str  # "INC-42"
    level: int  # escalation level: 1 = on-call, 2 = managers, ...
    dedup_key: str  # make_dedup_key(...): the same on retry
    title: str  # plain, unescaped user text
    severity: str  # "P0".."P3"
    summary: str  # plain text, unescaped: each provider escapes/truncates for its own medium
    link: str | None = None  # the incident channel's permalink
    targets: tuple[str, ...] = ()  # provider-specific "who" (Slack ids for slack, responders for Opsgenie)
    details: dict[str, Any] = msgspec.field(default_factory=dict)
    urgency: Urgency | None = None  # from the policy; None = follow the severity (see `page_urgency`)


def page_urgency(page: Page) -> str:
    """The page's urgency: the policy's when set, else high for P0/P1 and low for P2/P3 (notify, don't wake)."""
    return page.urgency or ("high" if page.severity in ("P0", "P1") else "low")


class PageResult(msgspec.Struct):
    provider: str
    ok: bool
    provider_ref: str | None = None  # PagerDuty dedup key, Opsgenie requestId, Slack "channel:ts" list
    error: str | None = None  # a plain sentence, safe to show in a channel
    # Set when the provider still rate-limited the call (429) after the bounded retries: nothing was done there,
    # and the page should go again after this many seconds (its Retry-After, when it said) — not be recorded.
    throttled_for: float | None = None


@runtime_checkable
class Provider(Protocol):
    name: str

    async def trigger(self, page: Page) -> PageResult: ...

    async def acknowledge(self, incident_id: str, level: int, dedup_key: str) -> PageResult: ...

    async def resolve(self, incident_id: str, level: int, dedup_key: str) -> PageResult: ...


class RetrySpec(Strict):
    """Bounded retries for one provider; turned into the project's one `RetryPolicy`."""

    attempts: Annotated[int, Meta(ge=1, le=10)] = 4
    base_s: Annotated[float, Meta(gt=0, le=60)] = 0.5
    max_s: Annotated[float, Meta(gt=0, le=300)] = 30.0

    def policy(self) -> RetryPolicy:
        return RetryPolicy(attempts=self.attempts, base_s=self.base_s, max_s=self.max_s)


def redact(text: str, *secrets: str) -> str:
    """Replace any secret value in `text`; a provider's error echo must never carry a key into a channel."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def format_elapsed(seconds: float | int | None) -> str | None:
    """`2h 05m`, `12m`, `45s` — how long an incident has been running."""
    return None if seconds is None else durations.format_duration(seconds, spaced=True, coarse=True)


class HttpAnswer(msgspec.Struct):
    """What an HTTP provider finally got: an answer not worth retrying, or the reason retries ran out."""

    status: int | None  # the answer read; None when retries ran out (see `failure`)
    body: Any = None  # parsed JSON, or None when the body was not JSON (a 429 may be plain text)
    tries: int = 0
    failure: str | None = None  # set when retries ran out: "HTTP 503", "rate limited", "timed out after 5s"
    throttled: bool = False  # retries ran out on a 429
    retry_after: float | None = None  # the last 429's Retry-After


async def post_with_retries(
    client: aiohttp.ClientSession,
    url: str,
    *,
    payload: dict[str, Any],
    headers: dict[str, str] | None = None,
    timeout_s: float,
    policy: RetryPolicy,
    what: str,
) -> HttpAnswer:
    """POST JSON; retry 429, 5xx, timeouts and connection errors with the project's backoff, bounded.

    Any other status comes back at once for the adapter to read (a 400 is the caller's mistake: retrying it
    only burns the rate limit). `what` ("pagerduty trigger INC-42:P0:L1") names the call in log lines; it must
    not contain secrets, and neither does anything else logged here.
    """
    tries, last_429 = 0, None

    async def attempt() -> HttpAnswer:
        nonlocal tries, last_429
        tries += 1
        last_429 = None
        status, headers_in, body = await _post_json(client, url, payload, headers, timeout_s, what)
        if status == 429:
            last_429 = (retry_after_s(headers_in),)
            raise _retry(what, "rate limited (HTTP 429)", retry_after=last_429[0])
        if status >= 500:
            raise _retry(what, f"HTTP {status}", retry_after=retry_after_s(headers_in))
        return HttpAnswer(status=status, body=body, tries=tries)

    try:
        return await retry_async(attempt, policy)
    except RetryableError as exc:
        return HttpAnswer(status=None, tries=tries, failure=str(exc), throttled=last_429 is not None,
                          retry_after=last_429[0] if last_429 else None)


async def _post_json(client: aiohttp.ClientSession, url: str, payload: dict[str, Any],
                     headers: dict[str, str] | None, timeout_s: float, what: str) -> tuple[int, Any, Any]:
    """One POST: (status, headers, parsed JSON or None). Timeouts and connection failures become retries."""
    try:  # encoded=True: sent as built (an Opsgenie alias stays percent-encoded in the path, `/` included)
        # No redirect followed (as with httpx): a 307 would resend the body, routing key and all, to another host.
        async with client.post(URL(url, encoded=True), json=payload, headers=headers, proxy=_proxy_for(url),
                               allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            return response.status, response.headers, _json_or_none(await response.read())
    except asyncio.TimeoutError:  # aiohttp's own timeouts derive from it
        raise _retry(what, f"timed out after {timeout_s:g}s") from None
    except aiohttp.ClientError as exc:
        raise _retry(what, f"could not connect ({type(exc).__name__})") from None


@functools.lru_cache(maxsize=64)
def _proxy_for(url: str) -> str | None:
    """The proxy HTTPS_PROXY / HTTP_PROXY (or ALL_PROXY) names for this URL, unless NO_PROXY exempts its host, read
    as httpx read them (`proxy.corp:3128` means http://); once per URL: aiohttp's own trust_env reads the
    environment and ~/.netrc again on each request, on a thread."""
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    return proxy if not proxy or "://" in proxy else f"http://{proxy}"


def _retry(what: str, reason: str, *, retry_after: float | None = None) -> RetryableError:
    log.warning("paging: %s: %s", what, reason)
    return RetryableError(reason, retry_after=retry_after)


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:  # UnicodeDecodeError included: a 429 or a proxy's error page may be anything
        return None


class HttpProvider:
    """What the HTTP paging providers share: a lazily made client (or the caller's), bounded sends through
    `post_with_retries`, and one log line per outcome. Subclasses build bodies and read answers (`_result`)."""

    name: str
    kind: str  # "pagerduty", "opsgenie": names the budget of its key
    config: Any  # a provider config with `timeout_s`, `retry`, `rate_limit` and `rate_window_s`

    def __init__(self, config: Any, *, name: str, client: aiohttp.ClientSession | None = None) -> None:
        self.name = name
        self.config = config
        self._client = client
        self._owns_client = client is None

    async def aclose(self) -> None:
        if self._client is not None and self._owns_client:
            await self._client.close()
            self._client = None

    def _http(self) -> aiohttp.ClientSession:
        """aiohttp, already in every process with Slack's async client, costs a fifth of httpx's CPU a request:
        in a burst of due escalation timers the provider's POST was most of a worker's CPU (benchmarks/
        bench_timers.py). HTTPS_PROXY and NO_PROXY still apply, as they did with httpx (`_proxy_for`)."""
        if self._client is None:
            self._client = aiohttp.ClientSession()
        return self._client

    async def _post(self, action: str, dedup_key: str, url: str, body: dict[str, Any],
                    headers: dict[str, str] | None = None) -> PageResult:
        answer = await post_with_retries(
            self._http(), url, payload=body, headers=headers, timeout_s=self.config.timeout_s,
            policy=self.config.retry.policy(), what=f"{self.name} {action} {dedup_key}",
        )
        result = self._result(action, answer)
        if answer.throttled:
            result.throttled_for = answer.retry_after or 0.0
        if result.ok:
            log.info("paging: %s %s %s accepted after %d tries", self.name, action, dedup_key, answer.tries)
        else:
            log.warning("paging: %s %s %s failed: %s", self.name, action, dedup_key, result.error)
        return result

    def _result(self, action: str, answer: HttpAnswer) -> PageResult:
        raise NotImplementedError

    def budget(self) -> tuple[str, Pace | None]:
        """The rate budget this provider's key draws on, and its pace when the config sets one (pacing.py)."""
        limit = self.config.rate_limit
        return budget_id(self.kind, self._secret()), Pace(limit, self.config.rate_window_s) if limit else None

    def _secret(self) -> str:
        raise NotImplementedError
