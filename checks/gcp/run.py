"""Cloud Run: is the service serving, did the last rollout fail, cold starts, and what users see (5xx, latency).

`gcp.cloud_run` reads the service and its revisions (Admin API v2): the Ready condition (`terminalCondition`) and
its reason, the newest revision against the one serving traffic (a rollout whose revision never became ready
leaves the old one serving), the failing revision's own condition (a container that did not start and listen on
$PORT), and min-instances 0 with the cold starts of the last hour. `gcp.cloud_run_traffic` reads request counts
by response class and the p99 latency from Cloud Monitoring.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from checks.gcp.api import GcpCheckError, call, gcp_check, spec
from checks.gcp.monitoring import metric_filter, peak, series, totals_by
from checks.model import CheckResult, Problem, Status, fold
from checks.registry import CheckContext, check

WINDOW = timedelta(hours=1)
FAIL_5XX_RATIO = 0.05
WARN_5XX_RATIO = 0.01
WARN_P99_MS = 2000.0
_IN_PROGRESS = {"CONDITION_PENDING", "CONDITION_RECONCILING"}


def short(name: str) -> str:
    """`projects/p/locations/r/services/api/revisions/api-00007-abc` → `api-00007-abc`."""
    return name.rsplit("/", 1)[-1] if name else ""


async def get_service(ctx: CheckContext, name: str) -> dict[str, Any]:
    gcp = spec(ctx)
    return await call(ctx, "run.services.get", project=gcp.project, region=gcp.region, name=name)


async def list_revisions(ctx: CheckContext, name: str) -> list[dict[str, Any]]:
    """The service's revisions, newest first (one page of 50: enough to see the last day's rollouts)."""
    gcp = spec(ctx)
    page = await call(ctx, "run.revisions.list", params={"pageSize": 50}, project=gcp.project, region=gcp.region,
                      name=name)
    return sorted(page.get("revisions", []), key=lambda r: r.get("createTime", ""), reverse=True)


def serving_revisions(service: dict[str, Any]) -> list[str]:
    return [short(t.get("revision", "")) for t in service.get("trafficStatuses", []) if t.get("percent")]


def service_path(ctx: CheckContext, name: str) -> str:
    gcp = spec(ctx)
    return f"projects/{gcp.project}/locations/{gcp.region}/services/{name}"


def ready_condition(resource: dict[str, Any]) -> dict[str, Any]:
    conditions = [resource.get("terminalCondition") or {}, *resource.get("conditions", [])]
    return next((c for c in conditions if c.get("type") == "Ready"), {})


# --- findings ---------------------------------------------------------------------------------------------------


def readiness_findings(name: str, service: dict[str, Any]) -> list[Problem]:
    ready = ready_condition(service)
    state = ready.get("state", "")
    why = " — ".join(x for x in (ready.get("reason"), ready.get("message")) if x)
    if state == "CONDITION_FAILED":
        return [Problem(Status.fail, "P1", f"Cloud Run service {name} is not ready: {why or 'no reason given'}.",
                        f"`gcloud run services describe {name}` shows the whole condition; gcp.logging has the "
                        "container's own errors.")]
    if service.get("reconciling") or state in _IN_PROGRESS:
        return [Problem(Status.warn, "P3", f"Cloud Run service {name} is still rolling out ({state or 'reconciling'}).",
                         "Wait for the rollout to settle, then rerun.")]
    return []


def rollout_findings(name: str, region: str, service: dict[str, Any],
                     revisions: list[dict[str, Any]]) -> list[Problem]:
    created, ready = short(service.get("latestCreatedRevision", "")), short(service.get("latestReadyRevision", ""))
    if not created or created == ready or service.get("reconciling"):
        return []
    failed = next((r for r in revisions if short(r.get("name", "")) == created), {})
    condition = ready_condition(failed)
    why = condition.get("message") or condition.get("revisionReason") or condition.get("reason") or "no reason given"
    serving = ", ".join(serving_revisions(service)) or ready or "nothing"
    return [Problem(
        Status.fail, "P1",
        f"The newest revision {created} of {name} never became ready ({why}); {serving} still serves.",
        f"Fix the container and redeploy; to pin the old one: `gcloud run services update-traffic {name} "
        f"--region {region} --to-revisions {ready}=100`." if ready else "Fix the container and redeploy.",
    )]


def traffic_findings(name: str, service: dict[str, Any]) -> list[Problem]:
    wants_latest = any(t.get("type") == "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST" and t.get("percent")
                       for t in service.get("traffic", []))
    latest = short(service.get("latestReadyRevision", ""))
    serving = serving_revisions(service)
    if wants_latest and latest and serving and latest not in serving:
        return [Problem(Status.warn, "P2",
                        f"{name} asks for the latest revision ({latest}) but {', '.join(serving)} serves traffic.",
                        f"`gcloud run services update-traffic {name} --to-latest` once {latest} is known good.")]
    return []


def min_instances(service: dict[str, Any]) -> int:
    scaling = {**(service.get("template", {}).get("scaling") or {}), **(service.get("scaling") or {})}
    return int(scaling.get("minInstanceCount") or 0)


async def cold_starts(ctx: CheckContext, name: str) -> int | None:
    """Container starts in the window (`container/startup_latencies` sample count); None when unreadable."""
    query = metric_filter("run.googleapis.com/container/startup_latencies", "cloud_run_revision",
                          resource__labels__service_name=name)
    try:
        found = await series(ctx, query, ctx.now - WINDOW, ctx.now, aligner="ALIGN_DELTA", reducer="REDUCE_SUM")
    except GcpCheckError:
        return None
    return int(sum(totals_by(found, "").values()))


# --- the checks -------------------------------------------------------------------------------------------------


@check("gcp.cloud_run", timeout_s=25)
@gcp_check
async def cloud_run(name: str, ctx: CheckContext) -> CheckResult:
    """Cloud Run service readiness, failed rollouts, traffic and cold starts"""
    service = await get_service(ctx, name)
    revisions = await list_revisions(ctx, name)
    region = spec(ctx).region
    findings = readiness_findings(name, service) + rollout_findings(name, region, service, revisions)
    findings += traffic_findings(name, service)
    minimum = min_instances(service)
    starts = await cold_starts(ctx, name) if minimum == 0 else None
    if minimum == 0 and starts:
        findings.append(Problem(
            Status.warn, "P3", f"{name} scales to zero (min-instances 0) and had {starts} cold start(s) in the last "
                               "hour; first requests wait for a container to start.",
            f"`gcloud run services update {name} --region {region} --min-instances 1` keeps one warm."))
    evidence = {
        "service": service.get("name", name), "uri": service.get("uri"),
        "ready": {k: ready_condition(service).get(k) for k in ("state", "reason", "message")},
        "latest_created": short(service.get("latestCreatedRevision", "")),
        "latest_ready": short(service.get("latestReadyRevision", "")),
        "serving": serving_revisions(service), "min_instances": minimum, "cold_starts_last_hour": starts,
    }
    return fold(findings, resource=service_path(ctx, name), evidence=evidence,
                ok=f"Cloud Run service {name} is ready and serving its latest revision {evidence['latest_ready']}.")


@check("gcp.cloud_run_traffic", timeout_s=25)
@gcp_check
async def cloud_run_traffic(name: str, ctx: CheckContext) -> CheckResult:
    """Cloud Run requests, 5xx ratio and p99 latency over the last hour (Cloud Monitoring)"""
    start, labels = ctx.now - WINDOW, {"resource__labels__service_name": name}
    counts = totals_by(await series(
        ctx, metric_filter("run.googleapis.com/request_count", "cloud_run_revision", **labels), start, ctx.now,
        aligner="ALIGN_DELTA", reducer="REDUCE_SUM", group_by="metric.labels.response_code_class"),
        "response_code_class")
    p99 = peak(await series(
        ctx, metric_filter("run.googleapis.com/request_latencies", "cloud_run_revision", **labels), start, ctx.now,
        aligner="ALIGN_PERCENTILE_99", reducer="REDUCE_MAX"))
    total, errors = sum(counts.values()), counts.get("5xx", 0.0)
    ratio = errors / total if total else 0.0
    evidence = {"requests": int(total), "by_class": {k: int(v) for k, v in sorted(counts.items())},
                "ratio_5xx": round(ratio, 4), "p99_ms": p99}
    latency = f", p99 {p99:.0f} ms" if p99 is not None else ""
    resource = service_path(ctx, name)
    summary = f"{name}: {int(total)} requests in the last hour, {int(errors)} 5xx ({ratio:.1%}){latency}."
    if total and ratio >= FAIL_5XX_RATIO:
        return CheckResult(status=Status.fail, severity="P1", summary=summary, resource=resource, evidence=evidence,
                           hint="gcp.cloud_run and gcp.logging show why; gcp.cloud_run_changes names a rollback "
                                "candidate if a revision came just before.")
    if (total and ratio >= WARN_5XX_RATIO) or (p99 or 0) >= WARN_P99_MS:
        return CheckResult(status=Status.warn, severity="P2", summary=summary, resource=resource, evidence=evidence)
    return CheckResult(status=Status.ok, summary=summary, resource=resource, evidence=evidence)
