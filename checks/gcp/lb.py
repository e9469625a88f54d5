"""Load-balancer backend services: backend health per group (`getHealth`), and Cloud CDN's cache mode and hit
ratio when CDN is on.

Serverless NEGs (Cloud Run behind a load balancer) have no health checks, so an empty `healthStatus` there is
reported as "not health-checked", not as unhealthy. The hit ratio reads `loadbalancing.googleapis.com/https/
request_count` by its `cache_result` label (HIT, MISS, ...) — metric and label names not verified against Google's
list.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from checks.gcp.api import GcpCheckError, call, gcp_check, spec
from checks.gcp.monitoring import metric_filter, series, totals_by
from checks.model import CheckResult, Problem, Status, fold
from checks.registry import CheckContext, check
from checks.services import BackendServiceSpec

WINDOW = timedelta(hours=1)
LOW_HIT_RATIO = 0.1
MIN_REQUESTS_FOR_RATIO = 100


def _ops(backend: BackendServiceSpec) -> tuple[str, str]:
    prefix = "compute.regionBackendServices" if backend.regional else "compute.backendServices"
    return f"{prefix}.get", f"{prefix}.getHealth"


async def group_health(ctx: CheckContext, backend: BackendServiceSpec, group: str) -> list[dict[str, Any]]:
    gcp = spec(ctx)
    found = await call(ctx, _ops(backend)[1], body={"group": group}, project=gcp.project, region=gcp.region,
                       name=backend.name)
    return [{"group": group.rsplit("/", 1)[-1], "instance": (h.get("instance") or "").rsplit("/", 1)[-1],
             "address": f"{h.get('ipAddress', '')}:{h.get('port', '')}", "state": h.get("healthState", "UNKNOWN")}
            for h in found.get("healthStatus", [])]


async def hit_ratio(ctx: CheckContext, name: str) -> tuple[float | None, int]:
    query = metric_filter("loadbalancing.googleapis.com/https/request_count", "https_lb_rule",
                          resource__labels__backend_target_name=name)
    try:
        counts = totals_by(await series(ctx, query, ctx.now - WINDOW, ctx.now, aligner="ALIGN_DELTA",
                                        reducer="REDUCE_SUM", group_by="metric.labels.cache_result"), "cache_result")
    except GcpCheckError:
        return None, 0
    total = int(sum(counts.values()))
    return (counts.get("HIT", 0.0) / total if total else None), total


@check("gcp.backend_service", timeout_s=25)
@gcp_check
async def backend_service(backend: BackendServiceSpec, ctx: CheckContext) -> CheckResult:
    """Load-balancer backend health, and Cloud CDN cache mode and hit ratio"""
    gcp = spec(ctx)
    service = await call(ctx, _ops(backend)[0], project=gcp.project, region=gcp.region, name=backend.name)
    groups = [b["group"] for b in service.get("backends", []) if b.get("group")]
    rows = [row for group in groups for row in await group_health(ctx, backend, group)]
    unhealthy = [r for r in rows if r["state"] != "HEALTHY"]
    cdn = bool(service.get("enableCDN"))
    mode = (service.get("cdnPolicy") or {}).get("cacheMode")
    ratio, requests = await hit_ratio(ctx, backend.name) if cdn else (None, 0)
    evidence = {"backends": rows, "groups": len(groups), "cdn": cdn, "cache_mode": mode,
                "hit_ratio": None if ratio is None else round(ratio, 3), "requests_last_hour": requests}
    problems = _health_problems(backend.name, rows, unhealthy) + _cdn_problems(backend, cdn, mode, ratio, requests)
    health = f"{len(rows)} backend(s) healthy" if rows else "no health-checked backends (serverless NEG?)"
    cdn_note = f"; CDN {mode}, hit ratio {ratio:.0%}" if ratio is not None else (f"; CDN {mode}" if cdn else "")
    return fold(problems, ok=f"{backend.name}: {health}{cdn_note}.", resource=backend.name, evidence=evidence)


def _health_problems(name: str, rows: list[dict[str, Any]], unhealthy: list[dict[str, Any]]) -> list[Problem]:
    hint = ("Check the health check's path/port against the app and the firewall rule for Google's health-check "
            "ranges (35.191.0.0/16, 130.211.0.0/22).")
    if rows and len(unhealthy) == len(rows):
        return [Problem(Status.fail, "P1", f"Every backend of {name} is unhealthy ({len(rows)}): the load balancer "
                                           "has nowhere to send requests.", hint)]
    if unhealthy:
        names = ", ".join(f"{r['instance'] or r['address']} ({r['state']})" for r in unhealthy[:5])
        return [Problem(Status.warn, "P2", f"{len(unhealthy)} of {len(rows)} backends of {name} are unhealthy: "
                                           f"{names}.", hint)]
    return []


def _cdn_problems(backend: BackendServiceSpec, cdn: bool, mode: str | None, ratio: float | None,
                  requests: int) -> list[Problem]:
    if cdn and mode == "FORCE_CACHE_ALL" and backend.per_user:
        return [Problem(Status.fail, "P1", f"{backend.name} serves per-user responses with Cloud CDN in "
                                           "FORCE_CACHE_ALL: one user's private page can be served to another.",
                        "Switch to USE_ORIGIN_HEADERS or CACHE_ALL_STATIC and invalidate the cache.")]
    if ratio is not None and requests >= MIN_REQUESTS_FOR_RATIO and ratio < LOW_HIT_RATIO:
        return [Problem(Status.warn, "P3", f"Cloud CDN on {backend.name} hit {ratio:.0%} of {requests} requests "
                                           f"({mode}): nearly everything goes to the origin.",
                        "With USE_ORIGIN_HEADERS the origin must send Cache-Control: public, max-age=…; "
                        "private/no-store responses are never cached.")]
    return []
