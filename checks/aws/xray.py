"""`aws.xray_traces` (`aws.xray: true`): which dependency raised the 5xx, from X-Ray.

Trace summaries over the last hour give the share of faulted, errored and throttled traces and X-Ray's own root
cause analysis (`FaultRootCauses`: the service and exception at the end of the failing path), so a 5xx names the
dependency that raised it rather than the front door that passed it on. The service graph gives per-node fault and
throttle counts and per-edge response times: the slowest downstream.

Reads are bounded: at most `MAX_PAGES` pages of each, and none once the run's deadline is near. X-Ray is account
wide here (moto rejects `FilterExpression`, and a service's name in X-Ray need not match the services file's).
moto stores segments but its service graph is always empty, so the tests run this check against a local server
that speaks the X-Ray JSON API (through botocore's `AWS_ENDPOINT_URL_XRAY` override).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from checks.aws.common import Problem, aws_check, fold, region
from checks.aws.logs import WINDOW, iso
from checks.model import CheckResult, Status
from checks.registry import CheckContext, check

MAX_PAGES = 5
FAULT_FAIL = 0.05
MIN_FAULTED = 3  # one or two faulted traces in a quiet hour are a stray 5xx, not an incident
THROTTLE_WARN = 0.01  # a node's share of throttled requests; a handful among thousands is retried and unnoticed
_MIN_TIME_LEFT_S = 3.0


async def _pages(ctx: CheckContext, operation: str, key: str) -> tuple[list[dict[str, Any]], bool]:
    """Items of `operation` over the window, following NextToken for at most MAX_PAGES; (items, truncated)."""
    assert ctx.aws is not None
    params: dict[str, Any] = {"StartTime": ctx.now - WINDOW, "EndTime": ctx.now}
    items: list[dict[str, Any]] = []
    for _ in range(MAX_PAGES):
        page = await ctx.aws.call("xray", region(ctx), operation, **params)
        items.extend(page.get(key, []))
        if not page.get("NextToken"):
            return items, False
        if ctx.remaining() < _MIN_TIME_LEFT_S:
            break
        params["NextToken"] = page["NextToken"]
    return items, True


@dataclass(frozen=True)
class Node:
    name: str
    type: str
    total: int
    faults: int
    errors: int
    throttles: int

    @classmethod
    def of(cls, service: dict[str, Any]) -> Node:
        stats = service.get("SummaryStatistics") or {}
        return cls(service.get("Name", "?"), service.get("Type", ""), int(stats.get("TotalCount") or 0),
                   int((stats.get("FaultStatistics") or {}).get("TotalCount") or 0),
                   int((stats.get("ErrorStatistics") or {}).get("TotalCount") or 0),
                   int((stats.get("ErrorStatistics") or {}).get("ThrottleCount") or 0))


def root_causes(summaries: list[dict[str, Any]], key: str = "FaultRootCauses") -> Counter[str]:
    """`service (Exception)` at the end of each trace's failing path, counted once per trace."""
    found: Counter[str] = Counter()
    for summary in summaries:
        found.update({_cause(cause) for cause in summary.get(key) or []})
    return found


def _cause(cause: dict[str, Any]) -> str:
    services = cause.get("Services") or [{}]
    service = services[-1]  # the last service on the path is where the fault began
    exceptions = [e.get("Name") for entity in service.get("EntityPath") or [] for e in entity.get("Exceptions") or []]
    name = service.get("Name", "?")
    return f"{name} ({exceptions[-1]})" if exceptions and exceptions[-1] else name


def slowest_edges(services: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every client → downstream edge of the graph with its average response time, slowest first."""
    names = {s.get("ReferenceId"): s.get("Name", "?") for s in services}
    edges = []
    for service in services:
        for edge in service.get("Edges") or []:
            stats = edge.get("SummaryStatistics") or {}
            count = int(stats.get("TotalCount") or 0)
            if count:
                average_ms = round(float(stats.get("TotalResponseTime") or 0) / count * 1000)
                edges.append({"from": service.get("Name", "?"), "to": names.get(edge.get("ReferenceId"), "?"),
                              "calls": count, "avg_ms": average_ms})
    return sorted(edges, key=lambda e: -e["avg_ms"])


@check("aws.xray_traces", timeout_s=25)
@aws_check
async def xray_traces(_region: str, ctx: CheckContext) -> CheckResult:
    """X-Ray over the last hour: faulted and throttled traces, their root-cause dependency, the slowest downstream."""
    summaries, summaries_cut = await _pages(ctx, "get_trace_summaries", "TraceSummaries")
    services, graph_cut = await _pages(ctx, "get_service_graph", "Services")
    nodes = [Node.of(s) for s in services]
    edges = slowest_edges(services)
    faults = root_causes(summaries)
    evidence = {
        "window_start": iso(ctx.now - WINDOW), "window_end": iso(ctx.now), "traces": len(summaries),
        "faulted": sum(1 for s in summaries if s.get("HasFault")),
        "errored": sum(1 for s in summaries if s.get("HasError")),
        "throttled": sum(1 for s in summaries if s.get("HasThrottle")),
        "fault_root_causes": [{"cause": c, "traces": n} for c, n in faults.most_common(5)],
        "error_root_causes": [{"cause": c, "traces": n} for c, n in root_causes(summaries, "ErrorRootCauses")
                              .most_common(5)],
        "nodes": [vars(n) for n in nodes if n.faults or n.throttles][:10],
        "slowest_downstream": edges[:5], "truncated": summaries_cut or graph_cut,
    }
    if not summaries and not services:
        return CheckResult(status=Status.skipped, evidence=evidence,
                           summary="X-Ray has no traces in the last hour: tracing is off or nothing was sampled.")
    problems = _fault_problems(summaries, faults) + _throttle_problems(nodes)
    slowest = f"; slowest downstream {edges[0]['from']} → {edges[0]['to']} {edges[0]['avg_ms']} ms" if edges else ""
    ok = f"X-Ray: {len(summaries)} traces in the last hour, {evidence['faulted']} faulted{slowest}."
    resource = faults.most_common(1)[0][0].split(" (", 1)[0] if faults else "X-Ray"
    return fold(problems, ok=ok, resource=resource, evidence=evidence)


def _fault_problems(summaries: list[dict[str, Any]], faults: Counter[str]) -> list[Problem]:
    faulted = sum(1 for s in summaries if s.get("HasFault"))
    if faulted < MIN_FAULTED or faulted / len(summaries) <= FAULT_FAIL:
        return []
    cause, count = faults.most_common(1)[0] if faults else ("an unnamed service", faulted)
    return [Problem(
        Status.fail, "P1",
        f"{faulted} of {len(summaries)} traces faulted (5xx) in the last hour; the root cause in {count} of them "
        f"is {cause}.",
        f"Start with {cause.split(' (', 1)[0]}: its errors are what the callers pass on as 5xx. Open one of the "
        "faulted traces in the X-Ray console for the full path.",
    )]


def _throttle_problems(nodes: list[Node]) -> list[Problem]:
    throttled = sorted((n for n in nodes if n.throttles and n.throttles >= THROTTLE_WARN * n.total),
                       key=lambda n: -n.throttles)
    return [Problem(
        Status.warn, "P2",
        f"{n.name} throttled {n.throttles} of {n.total} requests (429) in the last hour.",
        f"Raise {n.name}'s limit or add retries with backoff in its callers.",
    ) for n in throttled[:3]]
