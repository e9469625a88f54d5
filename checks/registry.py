"""Registering checks and the context they run with.

A check is a plain async function `async def name(item, ctx) -> CheckResult`. `@check` records it with:
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
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from checks.model import CheckResult

if TYPE_CHECKING:
    import httpx

    from checks.aws.clients import AwsClients
    from checks.services import ServiceSpec


class Layer(IntEnum):
    """Lower is nearer the root cause."""

    config = 10  # routes, ACLs, endpoints, IAM conditions, reserved concurrency: states that break things
    change = 20  # a recent deploy or stack update
    platform = 30  # target health, queue dead letters, database state, certificates
    symptom = 40  # what users see: HTTP failures, alarms, 5xx ratios, error logs


@dataclass(frozen=True)
class PreviousSample:
    at: datetime
    numbers: dict[str, float]


@dataclass
class CheckContext:
    service_name: str
    service: ServiceSpec
    now: datetime
    http: httpx.AsyncClient
    aws: AwsClients | None = None
    deadline: float = field(default_factory=lambda: time.monotonic() + 60)
    env: dict[str, str] = field(default_factory=dict)  # where `dsn_env` and friends are read from
    # The numbers a check reported on a target in the service's previous run, and when that run finished
    # (`previous(check, target)`); None without a previous run, or outside the bot (CLI, tests).
    previous: Callable[[str, str], Awaitable[PreviousSample | None]] | None = None

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


CheckFunc = Callable[[Any, CheckContext], Awaitable[CheckResult]]


@dataclass(frozen=True)
class CheckDef:
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


def check(
    check_id: str,
    *,
    each: Callable[[ServiceSpec], Iterable[Any]],
    target: Callable[[Any], str] = str,
    layer: Layer = Layer.symptom,
    timeout_s: float = 20.0,
) -> Callable[[CheckFunc], CheckFunc]:
    """Register `func` as check `check_id`. Registration happens when the module defining it is imported."""

    def register(func: CheckFunc) -> CheckFunc:
        doc = (func.__doc__ or check_id).strip().splitlines()[0]

        @functools.wraps(func)
        async def running(item: Any, ctx: CheckContext) -> CheckResult:
            token = CURRENT_CHECK.set(check_id)
            try:
                return await func(item, ctx)
            finally:
                CURRENT_CHECK.reset(token)

        _REGISTRY[check_id] = CheckDef(check_id, running, each, target, layer, timeout_s, doc)
        return running

    return register


def registered_checks() -> dict[str, CheckDef]:
    """All checks, importing the modules that define them the first time it is asked."""
    from checks import catalog

    catalog.load()
    return dict(_REGISTRY)


def check_definition(check_id: str) -> CheckDef | None:
    """One check, importing only the module that defines it (and none of the others) the first time it is asked."""
    if check_id not in _REGISTRY:
        from checks import catalog

        catalog.load_one(check_id)
    return _REGISTRY.get(check_id)


def registered_definitions() -> dict[str, CheckDef]:
    """The checks registered so far, importing nothing."""
    return dict(_REGISTRY)


def aws_items(attr: str) -> Callable[[ServiceSpec], list[Any]]:
    """`each=` for AWS checks: the entries of `aws.<attr>`, or nothing when the service has no `aws` block."""

    def items(service: ServiceSpec) -> list[Any]:
        return list(getattr(service.aws, attr)) if service.aws else []

    return items


def aws_once(predicate: Callable[[ServiceSpec], bool]) -> Callable[[ServiceSpec], list[Any]]:
    """`each=` for an AWS check that runs once per service (e.g. alarms by prefix) when `predicate` holds."""

    def items(service: ServiceSpec) -> list[Any]:
        return [service.aws.region] if service.aws and predicate(service) else []

    return items
