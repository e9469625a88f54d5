"""Logging set-up: text or JSON lines, with every known secret redacted before a record is written.

Redaction happens in a filter on the root handler, so it covers third-party loggers (slack_sdk logs request
details at DEBUG) as well as ours. JSON lines carry `job_id`, `incident_id` and `run_id` when a record has them.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

CONTEXT_FIELDS = ("job_id", "job_kind", "incident_id", "run_id")

# What the current task is working on (set per job by bot/app/jobs.py); every record logged inside carries it.
LOG_CONTEXT: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("log_context", default={})


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    token = LOG_CONTEXT.set({**LOG_CONTEXT.get(), **{k: v for k, v in fields.items() if v}})
    try:
        yield
    finally:
        LOG_CONTEXT.reset(token)


class AddContext(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in LOG_CONTEXT.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def add(self, secret: str) -> None:
        if secret and len(secret) >= 6 and secret not in self.secrets:
            self.secrets = sorted([*self.secrets, secret], key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self.redact(record.getMessage())
            record.args = None
            if record.exc_info:
                record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """Newlines and other control characters as visible escapes: logged text cannot start a line of its own."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


class EscapeControls(logging.Filter):
    """Request bodies, headers and user text reach log messages; a newline in them must not forge a record.
    A traceback keeps its lines, but every line after the first is indented, so none reads as a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = escape_controls(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            first, *rest = record.exc_text.split("\n")
            record.exc_text = "\n".join([first, *(f"  {line}" if line[:1] not in (" ", "") else line
                                                  for line in (_CONTROL.sub("?", ln) for ln in rest))])
        return True


class Throttled:
    """At most `per_minute` lines a minute from one noisy source (rejected requests), then one line with how many
    more there were: a flood of bad requests cannot fill the disk through the log."""

    def __init__(self, logger: logging.Logger, per_minute: int = 10,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.per_minute, self.clock = logger, per_minute, clock
        self.window_start, self.logged, self.dropped = clock(), 0, 0

    def warning(self, msg: str, *args: object) -> None:
        now = self.clock()
        if now - self.window_start >= 60:
            if self.dropped:
                self.logger.warning("%d more like this in the last minute were not logged", self.dropped)
            self.window_start, self.logged, self.dropped = now, 0, 0
        if self.logged < self.per_minute:
            self.logged += 1
            self.logger.warning(msg, *args)
        else:
            self.dropped += 1


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                "logger": record.name, "msg": record.getMessage()}
        for name in CONTEXT_FIELDS:
            if hasattr(record, name):
                data[name] = getattr(record, name)
        if "job_kind" not in data and isinstance(getattr(record, "kind", None), str):
            data["job_kind"] = record.kind  # the worker's own records say `kind`
        if record.exc_text or record.exc_info:
            data["exc"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(data, default=str)


def redact_also(secrets: Iterable[str]) -> None:
    """Add secrets learnt after start-up (paging keys, database DSNs) to the redaction of every handler."""
    for handler in logging.getLogger().handlers:
        for filt in handler.filters:
            if isinstance(filt, RedactSecrets):
                for secret in secrets:
                    filt.add(secret)


def setup_logging(level: str = "INFO", fmt: str = "text", secrets: Iterable[str] = (), *,
                  log_file: Path | None = None, stderr: bool = True) -> RedactSecrets:
    """Log to stderr, and also (or only, with `stderr=False`) to `log_file`: the terminal chat keeps its
    conversation free of log lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json"
                         else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    redactor = RedactSecrets(secrets)
    handler.addFilter(AddContext())
    handler.addFilter(redactor)
    handler.addFilter(EscapeControls())
    root = logging.getLogger()
    root.handlers[:] = ([handler] if stderr else []) + ([_file_like(handler, log_file)] if log_file else [])
    root.setLevel(level)
    for noisy in ("botocore", "urllib3", "aiohttp.access", "slack_sdk", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return redactor


def _file_like(handler: logging.Handler, path: Path) -> logging.Handler:
    """A handler appending to `path` that formats and filters (redaction included) as `handler` does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(handler.formatter)
    for filt in handler.filters:
        to_file.addFilter(filt)
    return to_file
