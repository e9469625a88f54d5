"""Plan a service's checks and run them: each with its own timeout, all concurrently, inside one deadline.

A check that raises or times out becomes an `error` result naming what went wrong; nothing a check does can crash
the run. Only targets from the services file are ever planned.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec

from checks.model import CheckResult, Status
from checks.catalog import CHECKS, Check
from checks.registry import CheckContext, CheckDef, check_definition
from checks.schema import replace
from checks.services import ServiceSpec

if TYPE_CHECKING:  # planning (a process answering Slack) needs no HTTP client; running checks imports it
    import httpx

log = logging.getLogger(__name__)


class PlannedCheck(msgspec.Struct, frozen=True):
    check: str
    index: int  # which entry of the check's `each` list; with the service name it identifies the job
    target: str

    @property
    def key(self) -> str:
        return f"{self.check}#{self.index}"


def plan(service: ServiceSpec) -> list[PlannedCheck]:
    """The service's checks, lower layers first, from the catalog alone: planning imports no check module.
    Worked out once per spec (a services file's specs are frozen; an edit brings new ones): every `/diagnose` ack
    plans, and walking the catalog's rows was the ack path's costliest step of its own."""
    key = id(service)
    known = _PLANS.get(key)
    if known is None or known[0]() is not service:  # an id is reused only once its spec is gone, and forgotten
        gone = weakref.ref(service, lambda _ref, plans=_PLANS: plans.pop(key, None))
        known = _PLANS[key] = (gone, _planned(service))
    return list(known[1])


_PLANS: dict[int, tuple[weakref.ref, tuple[PlannedCheck, ...]]] = {}


def _planned(service: ServiceSpec) -> tuple[PlannedCheck, ...]:
    planned = []
    for check_id, row in _in_layer_order():
        for index, item in enumerate(row.each(service)):
            planned.append(PlannedCheck(check_id, index, row.target(item)))
    return tuple(planned)


@functools.cache
def _in_layer_order() -> tuple[tuple[str, Check], ...]:
    # Sorted once: planning is on every /diagnose ack, and sorting the catalog's rows was two thirds of it.
    return tuple(sorted(CHECKS.items(), key=lambda kv: (kv[1].layer, kv[0])))


def _item(definition: CheckDef, service: ServiceSpec, index: int) -> object:
    items = list(definition.each(service))
    if index >= len(items):
        raise LookupError(f"{definition.id} has no entry {index} for this service (services file changed?)")
    return items[index]


async def run_check(planned: PlannedCheck, ctx: CheckContext) -> CheckResult:
    """Run one planned check; always returns a result (an `error` one when the check could not run)."""
    started = time.perf_counter()
    definition = check_definition(planned.check)
    try:
        if definition is None:
            raise LookupError(f"unknown check {planned.check}")
        item = _item(definition, ctx.service, planned.index)
        budget = min(definition.timeout_s, ctx.remaining())
        if budget <= 0:
            raise TimeoutError
        result = await asyncio.wait_for(definition.func(item, ctx), timeout=budget)
    except TimeoutError:
        result = CheckResult(
            status=Status.error,
            summary=f"The check did not finish within its time limit ({_limit(definition, ctx):.0f} s).",
            hint="The target may be hanging; rerun once, then look at it directly.",
        )
    except Exception as exc:  # a check bug or an unexpected SDK error must not sink the run
        log.warning("check %s on %s raised", planned.check, planned.target, exc_info=True)
        result = CheckResult(status=Status.error, summary=f"The check could not run: {describe_exception(exc)}")
    duration_ms = int((time.perf_counter() - started) * 1000)
    return replace(result, check=planned.check, target=planned.target, duration_ms=duration_ms)


def _limit(definition: CheckDef | None, ctx: CheckContext) -> float:
    return definition.timeout_s if definition else ctx.remaining()


def describe_exception(exc: BaseException) -> str:
    """A short, secret-free description: the exception type and its first line, at most 200 characters."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


async def run_service(
    service_name: str,
    service: ServiceSpec,
    *,
    deadline_s: float = 60.0,
    http: httpx.AsyncClient | None = None,
    aws_factory: Callable[[], object] | None = None,
    env: dict[str, str] | None = None,
    now: datetime | None = None,
) -> list[CheckResult]:
    """Run every check the service's spec enables, concurrently, and return results in plan order."""
    import os

    from checks.aws.clients import AwsClients

    owns_http = http is None
    http = http or make_http_client()
    ctx = CheckContext(
        service_name=service_name,
        service=service,
        now=now or datetime.now(UTC),
        http=http,
        aws=(aws_factory() if aws_factory else AwsClients()) if service.needs_aws else None,  # type: ignore[arg-type]
        deadline=time.monotonic() + deadline_s,
        env=dict(os.environ) if env is None else env,
    )
    try:
        return list(await asyncio.gather(*(run_check(p, ctx) for p in plan(service))))
    finally:
        if owns_http:
            await http.aclose()


def make_http_client() -> httpx.AsyncClient:
    """The probes' HTTP client: no redirects followed silently, no proxies from the environment, bounded pool."""
    import httpx

    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        timeout=httpx.Timeout(5.0),
        headers={"User-Agent": "chatops-diagnose/0.1"},
    )
