"""What the emulator records and answers with: calls, messages, scripted answers, Slack errors, ids and ts."""

from __future__ import annotations

import itertools
import math
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Call:
    """One request the emulator received, as a test wants to assert on it."""

    method: str
    params: dict  # query string, form and JSON body merged; JSON-string fields (`blocks`, `view`...) decoded
    headers: dict
    at: float
    status: int = 0  # HTTP status answered; 0 while the call is still in flight (e.g. a scripted delay)
    response: dict | None = None  # the JSON answered, when the answer was JSON


@dataclass
class Message:
    """A message as the workspace holds it. Top-level messages (thread parents too) have `thread_ts=None`."""

    channel: str
    ts: str
    user: str
    text: str
    blocks: list | None = None
    thread_ts: str | None = None
    edited: bool = False
    deleted: bool = False
    reactions: dict = field(default_factory=dict)  # emoji name -> user ids, in the order they reacted
    pinned: bool = False
    files: list = field(default_factory=list)  # file objects shaped like Slack's (no content)
    metadata: dict | None = None
    attachments: list | None = None
    bot_id: str | None = None  # set on the bot's own messages, as Slack does
    reply_broadcast: bool = False
    edited_ts: str | None = None
    subtype: str | None = None


@dataclass(frozen=True)
class Scripted:
    """A canned answer. `body=None` with status 200 means "answer normally" (after `delay`)."""

    status: int = 200
    body: dict | str | None = None
    headers: dict = field(default_factory=dict)
    delay: float = 0.0

    @property
    def answers_normally(self) -> bool:
        return self.status == 200 and self.body is None


def http_error(status: int, *, retry_after: float | None = None, body: str | None = None) -> Scripted:
    """An HTTP failure. Retry-After goes out in whole seconds (rounded up): slack_sdk parses it with int()."""
    headers = {} if retry_after is None else {"Retry-After": str(max(0, math.ceil(retry_after)))}
    return Scripted(status=status, body=body if body is not None else default_error_body(status), headers=headers)


def slack_error(error: str) -> Scripted:
    """HTTP 200 with `{"ok": false, "error": error}`, the way Slack reports almost every failure."""
    return Scripted(status=200, body={"ok": False, "error": error})


def delay(seconds: float) -> Scripted:
    """Answer normally, but only after `seconds`: for client timeouts and slow-Slack tests."""
    return Scripted(delay=seconds)


def default_error_body(status: int) -> dict:
    errors = {429: "ratelimited", 500: "internal_error", 503: "service_unavailable"}
    return {"ok": False, "error": errors.get(status, f"http_{status}")}


class SlackError(Exception):
    """A method failed the way Slack says it failed: HTTP 200, ok=false, `error`, and sometimes more fields."""

    def __init__(self, error: str, **extra) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra

    def body(self) -> dict:
        return {"ok": False, "error": self.error, **self.extra}


class TsClock:
    """Message timestamps like Slack's ("1732150000.000100"), strictly increasing even within a microsecond."""

    def __init__(self) -> None:
        self._last_us = 0
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            self._last_us = max(time.time_ns() // 1000, self._last_us + 1)
            us = self._last_us
        return f"{us // 1_000_000}.{us % 1_000_000:06d}"


class IdMinter:
    """Ids shaped like Slack's (prefix letter + uppercase alphanumerics), readable in test output: C0LOCAL0002."""

    def __init__(self) -> None:
        self._counters: dict[str, itertools.count] = {}
        self._lock = threading.Lock()

    def next(self, prefix: str) -> str:
        with self._lock:
            n = next(self._counters.setdefault(prefix, itertools.count(1)))
        return f"{prefix}0LOCAL{n:04d}"
