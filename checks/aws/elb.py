"""Application load balancers: subnet routing, target health against the health-check matcher, and 5xx ratio.

The three sit on three layers: a subnet routed through a NAT gateway (config) makes one AZ's connections time
out, which is why targets or clients look broken (platform) and why the 5xx ratio climbs (symptom).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from datetime import timedelta
from typing import Any

import httpx

from checks.aws.clients import AwsCheckError
from checks.aws.common import (
    RouteTable,
    aws_check,
    aws_error_code,
    default_route,
    describe_load_balancer,
    region,
    route_target,
    subnet_route_tables,
)
from checks.aws.fixes.route_table import move_offer
from checks.aws.fixes.target_matcher import add_codes_offer
from checks.aws.series import first_breach, minutes_by_id, ratio_points
from checks.fixes import FixOffer
from checks.model import STATUS_ORDER, CheckResult, Series, Status
from checks.registry import CheckContext, check
from checks.schema import replace
from checks.services import is_link_local
from checks.targets import TargetGroups

# --- aws.alb_routes ------------------------------------------------------------------------------------------


@check("aws.alb_routes", timeout_s=20)
@aws_check
async def alb_routes(name: str, ctx: CheckContext) -> CheckResult:
    """Every subnet of an internet-facing load balancer sends 0.0.0.0/0 to an attached internet gateway."""
    lb = await describe_load_balancer(ctx, name)
    subnets = [(az["SubnetId"], az["ZoneName"]) for az in lb.get("AvailabilityZones", []) if az.get("SubnetId")]
    tables = await subnet_route_tables(ctx, [subnet for subnet, _ in subnets])
    internet_facing = lb.get("Scheme") == "internet-facing"
    attached = await _attached_internet_gateways(ctx, lb["VpcId"]) if internet_facing else set()
    rows = [_route_row(subnet, az, tables.get(subnet), attached, judge=internet_facing) for subnet, az in subnets]
    evidence = {"load_balancer": lb["LoadBalancerName"], "scheme": lb.get("Scheme"), "vpc": lb["VpcId"],
                "subnets": rows}
    if not internet_facing:
        return CheckResult(status=Status.ok, summary=f"{name} is internal; its subnets need no internet route.",
                           resource=lb["LoadBalancerArn"], evidence=evidence)
    broken = [row for row in rows if row["problem"]]
    if not broken:
        return CheckResult(
            status=Status.ok, resource=lb["LoadBalancerArn"], evidence=evidence,
            summary=f"All {len(rows)} subnets of {name} route 0.0.0.0/0 to an attached internet gateway.",
        )
    return _routes_finding(name, lb, rows, broken, attached, evidence, region(ctx))


async def _attached_internet_gateways(ctx: CheckContext, vpc_id: str) -> set[str]:
    # A route to a deleted or detached IGW should read `blackhole`; asking which IGWs are attached catches it
    # even where the route state lags (and in moto, which never marks routes blackhole).
    found = await ctx.aws.call("ec2", region(ctx), "describe_internet_gateways",
                               Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}])
    return {
        igw["InternetGatewayId"]
        for igw in found["InternetGateways"]
        if any(a.get("VpcId") == vpc_id and a.get("State") in ("available", "attached") for a in igw["Attachments"])
    }


def _route_row(subnet: str, az: str, table: RouteTable | None, attached: set[str], *, judge: bool) -> dict[str, Any]:
    route = default_route(table.routes) if table else None
    target = route_target(route)
    row = {
        "subnet": subnet,
        "az": az,
        "route_table": table.route_table_id if table else None,
        "main": table.main if table else None,
        "default_route": target or "none",
        "route_state": route.get("State") if route else None,
        "problem": "",
        "verdict": "ok",
    }
    if judge:
        row["problem"], row["verdict"] = _route_problem(table, route, target, attached)
    return row


def _route_problem(
    table: RouteTable | None, route: dict[str, Any] | None, target: str | None, attached: set[str]
) -> tuple[str, str]:
    """(problem, verdict) for one subnet of an internet-facing LB; verdict is ok, fail or unverified."""
    if table is None:
        return "no route table found for the subnet", "fail"
    if route is None or target is None:
        return "there is no 0.0.0.0/0 route, so replies to internet clients are dropped", "fail"
    if route.get("State") == "blackhole":
        return f"0.0.0.0/0 goes to {target}, which no longer exists (blackhole)", "fail"
    if target.startswith("nat-"):
        return f"0.0.0.0/0 goes to NAT gateway {target}: replies leave by the wrong path (asymmetric)", "fail"
    if target.startswith("igw-"):
        if target in attached:
            return "", "ok"
        return f"0.0.0.0/0 goes to {target}, which is not attached to this VPC (blackhole)", "fail"
    # Inspection designs (Network Firewall / Gateway LB endpoints, transit gateways) are legitimate; we can't
    # follow them, so say so without calling it broken.
    return f"0.0.0.0/0 goes to {target}, not to an internet gateway; this check cannot follow it", "unverified"


def _routes_finding(name: str, lb: dict[str, Any], rows: list[dict[str, Any]], broken: list[dict[str, Any]],
                    attached: set[str], evidence: dict[str, Any], aws_region: str) -> CheckResult:
    failing = [row for row in broken if row["verdict"] == "fail"]
    if not failing:
        row = broken[0]
        return CheckResult(
            status=Status.warn, severity="P2", resource=row["route_table"], evidence=evidence,
            summary=f"Subnet {row['subnet']} of {name}: {row['problem']}.",
            hint=f"Make sure traffic from {row['default_route']} reaches an internet gateway and comes back the "
                 "same way; otherwise point 0.0.0.0/0 at the internet gateway.",
        )
    first, lb_name = failing[0], lb["LoadBalancerName"]
    tables = list(dict.fromkeys(row["route_table"] for row in failing))
    where = f"All {len(rows)}" if len(failing) == len(rows) else f"{len(failing)} of {len(rows)}"
    summary = (
        f"{where} subnets of {lb_name} cannot answer internet clients: subnet {first['subnet']} ({first['az']}) "
        f"uses route table {first['route_table']}{' (the main table)' if first['main'] else ''}, where "
        f"{first['problem']}."
    )
    if len(failing) < len(rows):
        summary += f" About {len(failing)} in {len(rows)} new connections to {lb_name} time out."
    return CheckResult(
        status=Status.fail,
        severity="P0" if len(failing) == len(rows) else "P1",
        resource=", ".join(f"{t} ({', '.join(r['subnet'] for r in failing if r['route_table'] == t)})"
                           for t in tables),
        summary=summary,
        evidence=evidence,
        hint=_routes_hint(first, rows, attached, lb["VpcId"]),
        fixes=_route_fixes(failing, rows, aws_region),
    )


def _route_fixes(failing: list[dict[str, Any]], rows: list[dict[str, Any]], where: str) -> list[FixOffer]:
    """Move each failing subnet onto the table its healthy siblings use; nothing to offer when none is healthy."""
    good = next((row for row in rows if row["verdict"] == "ok"), None)
    if good is None:
        return []
    return [move_offer(where, row["subnet"], good["route_table"], row["route_table"])
            for row in failing if row["route_table"] and row["route_table"] != good["route_table"]]


def _routes_hint(bad: dict[str, Any], rows: list[dict[str, Any]], attached: set[str], vpc: str) -> str:
    good = next((row for row in rows if row["verdict"] == "ok"), None)
    if good:
        how = (f"Subnet {bad['subnet']} has no route table of its own and silently uses the main table "
               f"{bad['route_table']}. " if bad["main"] else "")
        return (f"{how}Associate {bad['subnet']} with {good['route_table']} (the table the healthy subnets use, "
                f"0.0.0.0/0 → {good['default_route']}). Don't repoint {bad['route_table']} if private subnets "
                "use it for NAT.")
    if attached:
        igw = sorted(attached)[0]
        return f"Route 0.0.0.0/0 to {igw} in a route table for the load balancer's subnets ({bad['route_table']})."
    return f"Attach an internet gateway to {vpc} and route 0.0.0.0/0 to it from the load balancer's subnets."


# --- aws.target_health ---------------------------------------------------------------------------------------


UNHEALTHY_STATES = {"unhealthy", "unhealthy.draining", "unavailable"}
NOT_A_FAILURE = {"Target.HealthCheckDisabled"}  # "unavailable" by design (e.g. Lambda targets without checks)
MAX_PROBED_TARGETS = 5
_FAILED_CODES = re.compile(r"codes:\s*\[([\d,\s]+)\]")


@check("aws.target_health", timeout_s=25)
@aws_check
async def target_health(item: TargetGroups, ctx: CheckContext) -> CheckResult:
    """Targets are healthy, and the app's answer on the health path is one the matcher accepts."""
    groups = await _describe_target_groups(ctx, item)
    if not groups:
        return CheckResult(status=Status.skipped, summary=f"No target groups behind {item.ref}.")
    results = [await _judge_target_group(ctx, group) for group in groups]
    return _worst_of(results)


async def _describe_target_groups(ctx: CheckContext, item: TargetGroups) -> list[dict[str, Any]]:
    if item.behind_load_balancer:
        lb = await describe_load_balancer(ctx, item.ref)
        params: dict[str, Any] = {"LoadBalancerArn": lb["LoadBalancerArn"]}
    else:
        params = {"TargetGroupArns" if item.ref.startswith("arn:") else "Names": [item.ref]}
    try:
        return await ctx.aws.paginate("elbv2", region(ctx), "describe_target_groups", "TargetGroups", **params)
    except AwsCheckError as exc:
        if item.behind_load_balancer and aws_error_code(exc) == "TargetGroupNotFound":
            return []  # moto answers an LB without target groups this way; AWS returns an empty list
        raise


async def _judge_target_group(ctx: CheckContext, group: dict[str, Any]) -> CheckResult:
    health = await ctx.aws.call("elbv2", region(ctx), "describe_target_health",
                                TargetGroupArn=group["TargetGroupArn"])
    descriptions = health["TargetHealthDescriptions"]
    matcher = (group.get("Matcher") or {}).get("HttpCode")
    probes = await _probe_targets(ctx, group, descriptions)
    rows = [_target_row(d, probes.get(_target_key(d))) for d in descriptions]
    evidence = {
        "target_group": group["TargetGroupName"],
        "matcher": matcher,
        "health_check": {
            "protocol": group.get("HealthCheckProtocol"),
            "port": group.get("HealthCheckPort"),
            "path": group.get("HealthCheckPath"),
            "timeout_s": group.get("HealthCheckTimeoutSeconds"),
        },
        "targets": rows,
    }
    return _target_verdict(group, matcher, rows, evidence, region(ctx))


def _target_key(description: dict[str, Any]) -> str:
    target = description["Target"]
    return f"{target['Id']}:{target.get('Port', '')}"


def _target_row(description: dict[str, Any], probe: int | str | None) -> dict[str, Any]:
    health = description.get("TargetHealth", {})
    return {
        "target": description["Target"]["Id"],
        "port": description["Target"].get("Port"),
        "az": description["Target"].get("AvailabilityZone"),
        "state": health.get("State"),
        "reason": health.get("Reason"),
        "description": health.get("Description"),
        "probe": probe if probe is not None else "not probed",
    }


def _target_verdict(group: dict[str, Any], matcher: str | None, rows: list[dict[str, Any]],
                    evidence: dict[str, Any], where: str) -> CheckResult:
    name, arn = group["TargetGroupName"], group["TargetGroupArn"]
    if not rows:
        if group.get("LoadBalancerArns"):
            return CheckResult(status=Status.fail, severity="P0", resource=arn, evidence=evidence,
                               summary=f"Target group {name} has no registered targets: its load balancer answers 503.",
                               hint="Register targets (or check the auto scaling group / ECS service that should).")
        return CheckResult(status=Status.ok, resource=arn, evidence=evidence,
                           summary=f"Target group {name} has no targets and no load balancer (unused).")
    unhealthy = [row for row in rows if _is_unhealthy(row["state"], row["reason"])]
    severity = "P0" if len(unhealthy) == len(rows) else "P1"
    rejected = _rejected_codes(matcher, rows)
    if rejected:
        path = group.get("HealthCheckPath") or "/"
        codes = ", ".join(map(str, rejected))
        count = f"{len(unhealthy)} of {len(rows)} targets unhealthy" if unhealthy else "targets still healthy"
        return CheckResult(
            status=Status.fail, severity=severity if unhealthy else "P1", resource=arn, evidence=evidence,
            summary=f"The app answers {codes} on {path} but the matcher of {name} accepts only {matcher} ({count}).",
            hint=f"Change the matcher (aws elbv2 modify-target-group --target-group-arn {arn} --matcher "
                 f"'{{\"HttpCode\": \"{matcher},{codes.replace(' ', '')}\"}}') or make the app answer "
                 f"{_first_code(matcher)} on {path}.",
            fixes=[offer] if (offer := add_codes_offer(where, group, matcher, rejected)) else [],
        )
    if unhealthy:
        first = unhealthy[0]
        return CheckResult(
            status=Status.fail, severity=severity, resource=arn, evidence=evidence,
            summary=f"{len(unhealthy)} of {len(rows)} targets of {name} are unhealthy: {first['reason']} "
                    f"({first['description']}).",
            hint=_unhealthy_hint(group, first),
        )
    return CheckResult(status=Status.ok, resource=arn, evidence=evidence,
                       summary=f"All {len(rows)} targets of {name} are healthy (matcher {matcher}).")


def _is_unhealthy(state: str | None, reason: str | None) -> bool:
    return state in UNHEALTHY_STATES and reason not in NOT_A_FAILURE


def _first_code(matcher: str) -> str:
    return matcher.split(",")[0].split("-")[0].strip()


def _rejected_codes(matcher: str | None, rows: list[dict[str, Any]]) -> list[int]:
    """HTTP codes the app gave (by our probe or in the ALB's failure description) that the matcher rejects."""
    if not matcher:
        return []
    try:
        accepted = parse_matcher(matcher)
    except ValueError:
        return []
    seen: set[int] = set()
    for row in rows:
        if isinstance(row["probe"], int):
            seen.add(row["probe"])
        found = _FAILED_CODES.search(row["description"] or "")
        if found:
            seen.update(int(code) for code in found.group(1).replace(" ", "").split(",") if code)
    return sorted(code for code in seen if not matcher_accepts(accepted, code))


def _unhealthy_hint(group: dict[str, Any], row: dict[str, Any]) -> str:
    port = group.get("HealthCheckPort")
    port = row["port"] if port in (None, "traffic-port") else port
    reason = row["reason"] or ""
    if reason == "Target.Timeout":
        return (f"Health checks time out: allow the load balancer's security group to port {port} on the targets, "
                "check the subnets' NACLs (aws.nacl) and that the app listens on that port.")
    if reason == "Target.FailedHealthChecks":
        return f"Connections to port {port} fail: is the app running and listening on {port}?"
    if reason == "Target.ResponseCodeMismatch":
        return (f"From inside the VPC, curl -i http://{row['target']}:{port}{group.get('HealthCheckPath') or '/'} "
                "and compare the status with the matcher.")
    return "Look at the targets' own logs and at the health-check settings of the target group."


def parse_matcher(code: str) -> list[tuple[int, int]]:
    """An ALB matcher (`"200"`, `"200,202"`, `"200-299"`, `"200,300-399"`) as inclusive ranges."""
    ranges = []
    for part in code.split(","):
        low, _, high = part.strip().partition("-")
        if not low.strip().isdigit() or (high and not high.strip().isdigit()):
            raise ValueError(f"not an HTTP code matcher: {code!r}")
        ranges.append((int(low), int(high or low)))
    return ranges


def matcher_accepts(ranges: list[tuple[int, int]], status: int) -> bool:
    return any(low <= status <= high for low, high in ranges)


async def _probe_targets(ctx: CheckContext, group: dict[str, Any],
                         descriptions: list[dict[str, Any]]) -> dict[str, int | str]:
    """Send the ALB's own health check to targets the bot can reach; {target key: HTTP status or why not}.

    The URL comes from AWS, not from chat: the target's private IP (IP targets as registered, instance targets
    via DescribeInstances), the health-check port (or the target's traffic port) and path. Unhealthy targets are
    probed first. A target the bot cannot reach (it usually runs outside the VPC) is not itself a finding.
    """
    protocol = (group.get("HealthCheckProtocol") or "").upper()
    if protocol not in ("HTTP", "HTTPS") or group.get("TargetType") not in ("ip", "instance"):
        return {}
    chosen = sorted(descriptions, key=lambda d: not _is_unhealthy(d["TargetHealth"].get("State"),
                                                                  d["TargetHealth"].get("Reason")))
    chosen = chosen[:MAX_PROBED_TARGETS]
    addresses = await _target_addresses(ctx, group, chosen)
    timeout = min(float(group.get("HealthCheckTimeoutSeconds") or 5), 5.0, max(ctx.remaining() - 1, 0.5))
    client = ctx.http if protocol == "HTTP" else httpx.AsyncClient(verify=False, trust_env=False, timeout=timeout)
    try:
        urls = {_target_key(d): _health_url(protocol, addresses.get(d["Target"]["Id"]), d, group) for d in chosen}
        statuses = await asyncio.gather(*(_probe(client, url, timeout) for url in urls.values()))
    finally:
        if client is not ctx.http:
            await client.aclose()
    return dict(zip(urls, statuses, strict=True))


async def _target_addresses(ctx: CheckContext, group: dict[str, Any], chosen: list[dict[str, Any]]) -> dict[str, str]:
    ids = [d["Target"]["Id"] for d in chosen]
    if group.get("TargetType") == "ip" or not ids:
        return {target: target for target in ids}
    found = await ctx.aws.call("ec2", region(ctx), "describe_instances", InstanceIds=ids)
    return {
        instance["InstanceId"]: instance["PrivateIpAddress"]
        for reservation in found["Reservations"]
        for instance in reservation["Instances"]
        if instance.get("PrivateIpAddress")
    }


def _health_url(protocol: str, address: str | None, description: dict[str, Any], group: dict[str, Any]) -> str | None:
    if not address or is_link_local(address):
        return None
    port = group.get("HealthCheckPort")
    port = description["Target"].get("Port") if port in (None, "traffic-port") else port
    host = f"[{address}]" if isinstance(ipaddress.ip_address(address), ipaddress.IPv6Address) else address
    return f"{protocol.lower()}://{host}:{port}{group.get('HealthCheckPath') or '/'}"


async def _probe(client: httpx.AsyncClient, url: str | None, timeout: float) -> int | str:
    if url is None:
        return "no address"
    try:
        response = await client.get(url, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        return f"unreachable ({type(exc).__name__})"
    return response.status_code


def _worst_of(results: list[CheckResult]) -> CheckResult:
    if len(results) == 1:
        return results[0]
    ranked = sorted(results, key=lambda r: (STATUS_ORDER.index(r.status), r.severity or "P9"))
    worst = ranked[0]
    others = [{"resource": r.resource, "status": r.status.value, "summary": r.summary} for r in ranked[1:]]
    return replace(worst, evidence={**worst.evidence, "other_target_groups": others})


# --- aws.elb_5xx ---------------------------------------------------------------------------------------------

WINDOW = timedelta(minutes=15)
FAIL_RATIO = 0.05
P0_RATIO = 0.50
MIN_REQUESTS = 20  # below this a ratio is noise: 1 error in 3 requests is not "33 % of users"
_METRICS = {"requests": "RequestCount", "target_5xx": "HTTPCode_Target_5XX_Count", "elb_5xx": "HTTPCode_ELB_5XX_Count"}


@check("aws.elb_5xx", timeout_s=15)
@aws_check
async def elb_5xx(name: str, ctx: CheckContext) -> CheckResult:
    """Share of requests answered with 5xx by the targets or by the load balancer itself, last 15 minutes."""
    lb = await describe_load_balancer(ctx, name)
    if lb.get("Type") != "application":
        return CheckResult(status=Status.skipped, summary=f"{name} is a {lb.get('Type')} load balancer: no HTTP codes.")
    minutes = await _metric_minutes(ctx, lb["LoadBalancerArn"].split(":loadbalancer/", 1)[1])
    sums = {key: sum(values.values()) for key, values in minutes.items()}
    errors = sums["target_5xx"] + sums["elb_5xx"]
    # ELB 503s for "no healthy target" are not in RequestCount; never let the ratio exceed 100 %.
    served = max(sums["requests"], errors)
    ratio = errors / served if served else 0.0
    evidence = {
        "window": f"{(ctx.now - WINDOW).isoformat(timespec='minutes')} – {ctx.now.isoformat(timespec='minutes')}",
        "requests": int(sums["requests"]),
        "target_5xx": int(sums["target_5xx"]),
        "elb_5xx": int(sums["elb_5xx"]),
        "ratio_5xx": round(ratio, 4),
    }
    percent = f"{ratio:.1%}"
    if not served:
        return CheckResult(status=Status.ok, resource=lb["LoadBalancerArn"], evidence=evidence,
                           summary=f"No requests to {name} in the last 15 min.")
    if ratio <= FAIL_RATIO:
        return CheckResult(status=Status.ok, resource=lb["LoadBalancerArn"], evidence=evidence,
                           summary=f"{percent} of {int(served)} requests to {name} got a 5xx in the last 15 min.")
    source = "the targets" if sums["target_5xx"] >= sums["elb_5xx"] else "the load balancer itself"
    summary = (f"{percent} of {int(served)} requests to {name} got a 5xx in the last 15 min "
               f"({int(sums['target_5xx'])} from targets, {int(sums['elb_5xx'])} from the load balancer).")
    if served < MIN_REQUESTS:
        return CheckResult(status=Status.warn, severity="P2", resource=lb["LoadBalancerArn"], evidence=evidence,
                           summary=summary + " Too little traffic to call it an outage.", hint=_5xx_hint(source),
                           series=_5xx_series(minutes))
    return CheckResult(status=Status.fail, severity="P0" if ratio > P0_RATIO else "P1", resource=lb["LoadBalancerArn"],
                       evidence=evidence, summary=summary, hint=_5xx_hint(source), series=_5xx_series(minutes))


def _5xx_series(minutes: dict[str, dict[Any, float]]) -> Series:
    points = ratio_points([minutes["target_5xx"], minutes["elb_5xx"]], minutes["requests"])
    return Series(metric="5xx ratio per minute", unit="%", points=points, threshold=100 * FAIL_RATIO,
                  markers=first_breach(points, 100 * FAIL_RATIO, "first minute over 5 %"))


def _5xx_hint(source: str) -> str:
    if source == "the targets":
        return "Most 5xx come from the app: read its error logs and look for a deploy just before the first error."
    return ("Most 5xx come from the load balancer (502/503/504): it cannot get answers from targets; see target "
            "health, security groups, NACLs and the target timeout.")


async def _metric_minutes(ctx: CheckContext, dimension: str) -> dict[str, dict[Any, float]]:
    """Each metric's per-minute Sums over the window: {"requests": {minute: n}, "target_5xx": ..., "elb_5xx": ...}."""
    queries = [
        {
            "Id": key.replace("_", ""),
            "MetricStat": {
                "Metric": {"Namespace": "AWS/ApplicationELB", "MetricName": metric,
                           "Dimensions": [{"Name": "LoadBalancer", "Value": dimension}]},
                "Period": 60,
                "Stat": "Sum",
            },
            "ReturnData": True,
        }
        for key, metric in _METRICS.items()
    ]
    results = await ctx.aws.paginate("cloudwatch", region(ctx), "get_metric_data", "MetricDataResults",
                                     MetricDataQueries=queries, StartTime=ctx.now - WINDOW, EndTime=ctx.now)
    by_id = minutes_by_id(results)
    return {key: by_id.get(key.replace("_", ""), {}) for key in _METRICS}
