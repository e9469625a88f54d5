"""Failures on demand: scripted answers per method, and a rate-limit storm that fails every n-th call."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from bot.slack.local.model import Scripted, http_error


@dataclass
class _Storm:
    every: int
    status: int
    retry_after: float
    methods: frozenset[str] | None
    until: float | None  # monotonic deadline; None = until cleared
    seen: int = 0

    def hit(self, method: str) -> Scripted | None:
        if self.methods is not None and method not in self.methods:
            return None
        self.seen += 1
        if self.seen % self.every:
            return None
        return http_error(self.status, retry_after=self.retry_after if self.status == 429 else None)


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Scripted]] = {}
        self._storm: _Storm | None = None

    def script(self, method: str, responses: tuple[Scripted, ...]) -> None:
        with self._lock:
            self._scripts.setdefault(method, deque()).extend(responses)

    def fail_every(self, n: int, *, status: int, retry_after: float, methods: set[str] | None,
                   for_s: float | None) -> None:
        until = None if for_s is None else time.monotonic() + for_s
        storm = _Storm(n, status, retry_after, frozenset(methods) if methods else None, until) if n > 0 else None
        with self._lock:
            self._storm = storm

    def clear(self) -> None:
        with self._lock:
            self._scripts.clear()
            self._storm = None

    def take(self, method: str, *, storm: bool = True) -> Scripted | None:
        """The canned answer for this call, if any: scripts first (in order), then the storm."""
        with self._lock:
            queue = self._scripts.get(method)
            if queue:
                return queue.popleft()
            if not storm or self._storm is None:
                return None
            if self._storm.until is not None and time.monotonic() > self._storm.until:
                self._storm = None
                return None
            return self._storm.hit(method)
