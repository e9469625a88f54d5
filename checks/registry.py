"""Registering checks and the context they run with.

A check is a plain async function `async def name(item, ctx) -> CheckResult`. `@check` records it with its time
limit, and with what its row in checks/catalog.py says (so that planning needs no check module):
- `each`: which entries of a service's spec it runs for (one job per entry, e.g. one per HTTP probe);
- `target`: how to name an entry for people (`https://api.example.com/health`, `web-alb`);
- `layer`: where it sits between cause and symptom; the verdict ranks lower layers first, because a broken route
  table explains the timeouts and the timeouts explain the 5xx alarm, never the other way round.
"""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from checks import catalog
from checks.model import CheckResult
from checks.targets import Layer

__all__ = ["CURRENT_CHECK", "CheckContext", "CheckDef", "Layer", "PreviousSample", "check", "check_definition",
           "registered_checks", "registered_definitions"]

if TYPE_CHECKING:
    import httpx

    from checks.aws.clients import AwsClients
    from checks.services import ServiceSpec


class PreviousSample(msgspec.Struct, frozen=True):
    at: datetime
    numbers: dict[str, float]


class CheckContext(msgspec.Struct):
    service_name: str
    service: ServiceSpec
    now: datetime
    http: httpx.AsyncClient
    aws: AwsClients | None = None
    deadline: float = msgspec.field(default_factory=lambda: time.monotonic() + 60)
    env: dict[str, str] = msgspec.field(default_factory=dict)  # where `dsn_env` and friends are read from
    # The numbers a check reported on a target in the service's previous run, and when that run finished
    # (`previous(check, target)`); None without a previous run, or outside the bot (CLI, tests).
    previous: Callable[[str, str], Awaitable[PreviousSample | None]] | None = None

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


CheckFunc = Callable[[Any, CheckContext], Awaitable[CheckResult]]


class CheckDef(msgspec.Struct, frozen=True):
    id: str
    func: CheckFunc
    each: Callable[[ServiceSpec], Iterable[Any]]
    target: Callable[[Any], str]
    layer: Layer
    timeout_s: float
    description: str


_REGISTRY: dict[str, CheckDef] = {}

# The check running in this task (and in the threads it hands AWS calls to: asyncio.to_thread copies context).
# Logs use it, and the test suite uses it to attribute every AWS operation to a check.
CURRENT_CHECK: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_check", default=None)


def check(check_id: str, *, timeout_s: float = 20.0) -> Callable[[CheckFunc], CheckFunc]:
    """Register `func` as check `check_id`, planned as its row in checks/catalog.py says. Registration happens when
    the module defining it is imported."""
    row = catalog.CHECKS.get(check_id)
    if row is None:
        raise LookupError(f"check {check_id!r} has no row in checks/catalog.py CHECKS: add one (its module, `each`, "
                          f"layer and `target`) so that planning knows it without importing it")

    def register(func: CheckFunc) -> CheckFunc:
        doc = (func.__doc__ or check_id).strip().splitlines()[0]

        @functools.wraps(func)
        async def running(item: Any, ctx: CheckContext) -> CheckResult:
            token = CURRENT_CHECK.set(check_id)
            try:
                return await func(item, ctx)
            finally:
                CURRENT_CHECK.reset(token)

        _REGISTRY[check_id] = CheckDef(check_id, running, row.each, row.target, row.layer, timeout_s, doc)
        return running

    return register


def registered_checks() -> dict[str, CheckDef]:
    """All checks, importing the modules that define them the first time it is asked."""
    catalog.load()
    return dict(_REGISTRY)


def check_definition(check_id: str) -> CheckDef | None:
    """One check, importing only the module that defines it (and none of the others) the first time it is asked."""
    if check_id not in _REGISTRY:
        catalog.load_one(check_id)
    return _REGISTRY.get(check_id)


def registered_definitions() -> dict[str, CheckDef]:
    """The checks registered so far, importing nothing."""
    return dict(_REGISTRY)
