"""The service's way out of its VPC and its names inside it: NAT gateways, Lambda egress, VPC DNS.

- `aws.nat_gateways` (config), once per service: the NAT gateways the service's subnets route through — state,
  routes to a failed or deleted one (blackhole), `ErrorPortAllocation` and `PacketsDropCount` in the window — and
  each subnet's outbound path.
- `aws.lambda_vpc` (config), per function: a function in a VPC reaches what it calls — the hosts in its
  environment need a NAT gateway; the AWS services its role may call need a NAT gateway or a VPC endpoint.
  A subnet routed to an internet gateway does not count: Lambda ENIs never get a public IP.
- `aws.vpc_dns` (config), once per service: `enableDnsSupport`/`enableDnsHostnames`, Route 53 private hosted
  zones for the service's names that are not associated with its VPC, and Resolver forwarding rules for those
  names whose rule, association or outbound endpoint is not working.

moto: NAT metrics exist only through `put_metric_data` (tests seed them, with the real AWS/NATGateway dimension).
A Resolver rule whose target IPs do not answer cannot be seen from the API (moto or AWS); that needs a query from
inside the VPC, so only the rule's and its endpoint's status are judged.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from checks.aws.common import (
    DNS_ATTRIBUTE_FLAGS,
    Problem,
    RouteTable,
    aws_check,
    fold,
    function_configuration,
    region,
    route_target,
    service_subnets,
    subnet_route_tables,
    vpc_dns_attributes,
)
from checks.aws.endpoints import serves
from checks.aws.roles import load_role
from checks.model import CheckResult, Status
from checks.registry import CheckContext, check
from checks.services import ServiceSpec

WINDOW = timedelta(minutes=15)
NAT_METRICS = {"ErrorPortAllocation": "port allocation errors", "PacketsDropCount": "dropped packets"}
# AWS: dropped packets matter above 0.01 % of the gateway's traffic; a busy gateway drops a few all the time.
NAT_TRAFFIC = ("PacketsInFromSource", "PacketsInFromDestination")
DROP_SHARE_WARN = 0.0001
_DEAD_NAT = {"failed", "deleted", "deleting"}
_HOST = re.compile(r"^(?:[a-z][a-z0-9+.-]*://)?(?:[^@/\s]*@)?([a-z0-9-]+(?:\.[a-z0-9-]+)+)(?::\d+)?(?:/|$)", re.I)
# Services whose calls Lambda itself makes from outside the function's ENIs (logs, ENI management).
_NOT_FROM_THE_FUNCTION = {"logs", "ec2", "cloudwatch", "xray"}
# Endpoint service names (after com.amazonaws.<region>.) that differ from the IAM action prefix of their API.
_ENDPOINT_PREFIXES = {"ecr.api": "ecr", "kinesis-streams": "kinesis", "monitoring": "cloudwatch",
                      "sagemaker.api": "sagemaker", "sagemaker.runtime": "sagemaker", "ecs-agent": "ecs",
                      "ecs-telemetry": "ecs", "codeartifact.api": "codeartifact"}


_NAT_QUERIED = (*NAT_METRICS, *NAT_TRAFFIC)


# --- aws.nat_gateways ------------------------------------------------------------------------------------------


@check("aws.nat_gateways", timeout_s=20)
@aws_check
async def nat_gateways(_: str, ctx: CheckContext) -> CheckResult:
    """NAT gateways on the service's outbound path are available, not dropping packets or out of ports"""
    tables = await subnet_route_tables(ctx, await service_subnets(ctx))
    ids = sorted({r["NatGatewayId"] for t in tables.values() for r in t.routes if r.get("NatGatewayId")})
    nats = await _nat_gateways(ctx, ids)
    metrics = await _nat_metrics(ctx, [i for i in ids if nats.get(i, {}).get("State") == "available"])
    problems = [p for t in tables.values() for p in _route_problems(t, nats)]
    problems += [p for nat_id, sums in metrics.items() for p in _metric_problems(nat_id, sums)]
    evidence = {"subnets": [_outbound_row(t, nats) for t in tables.values()],
                "nat_gateways": [{"nat": i, "state": nats.get(i, {}).get("State", "gone"), **metrics.get(i, {})}
                                 for i in ids]}
    return fold([p for _, p in problems], resource=problems[0][0] if problems else ", ".join(ids) or "no NAT",
                evidence=evidence, ok=f"{len(ids)} NAT gateway(s) on the path of {len(tables)} subnet(s) are healthy")


async def _nat_gateways(ctx: CheckContext, ids: list[str]) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    found = await ctx.aws.call("ec2", region(ctx), "describe_nat_gateways", NatGatewayIds=ids)
    return {n["NatGatewayId"]: n for n in found["NatGateways"]}


async def _nat_metrics(ctx: CheckContext, ids: list[str]) -> dict[str, dict[str, float]]:
    if not ids:
        return {}
    queries = [{"Id": f"m{i}x{j}", "ReturnData": True, "MetricStat": {
        "Metric": {"Namespace": "AWS/NATGateway", "MetricName": metric,
                   "Dimensions": [{"Name": "NatGatewayId", "Value": nat}]}, "Period": 60, "Stat": "Sum"}}
        for i, nat in enumerate(ids) for j, metric in enumerate(_NAT_QUERIED)]
    results = await ctx.aws.paginate("cloudwatch", region(ctx), "get_metric_data", "MetricDataResults",
                                     MetricDataQueries=queries, StartTime=ctx.now - WINDOW, EndTime=ctx.now)
    sums = {nat: dict.fromkeys(_NAT_QUERIED, 0.0) for nat in ids}
    for result in results:
        i, j = (int(n) for n in result["Id"][1:].split("x"))
        sums[ids[i]][_NAT_QUERIED[j]] += sum(result.get("Values", []))
    return sums


def _route_problems(table: RouteTable, nats: dict[str, dict[str, Any]]) -> list[tuple[str, Problem]]:
    problems = []
    for route in (r for r in table.routes if r.get("NatGatewayId")):
        nat_id = route["NatGatewayId"]
        state = nats.get(nat_id, {}).get("State", "deleted")
        if state in _DEAD_NAT or route.get("State") == "blackhole":
            reason = nats.get(nat_id, {}).get("FailureMessage") or state
            problems.append((table.route_table_id, Problem(
                Status.fail, "P1", f"Route table {table.route_table_id} (subnet {table.subnet_id}) sends "
                                   f"{route.get('DestinationCidrBlock', '?')} to NAT gateway {nat_id}, which is "
                                   f"{reason}: outbound calls from the subnet time out.",
                f"Point the route at an available NAT gateway: aws ec2 replace-route --route-table-id "
                f"{table.route_table_id} --destination-cidr-block {route.get('DestinationCidrBlock', '0.0.0.0/0')} "
                "--nat-gateway-id <an available nat-…>")))
    return problems


def _metric_problems(nat_id: str, sums: dict[str, float]) -> list[tuple[str, Problem]]:
    packets = sum(sums.get(m, 0.0) for m in NAT_TRAFFIC)
    worrying = {"ErrorPortAllocation": sums.get("ErrorPortAllocation", 0) > 0,
                "PacketsDropCount": sums.get("PacketsDropCount", 0) > DROP_SHARE_WARN * packets}
    return [(nat_id, Problem(
        Status.warn, "P2", f"NAT gateway {nat_id} had {sums[metric]:.0f} {what} in the last 15 min.",
        "Port allocation errors mean too many concurrent connections to one destination: reuse connections, "
        "spread over more NAT gateways or add secondary IPs. Dropped packets: see the NAT gateway's metrics "
        "and AWS Health."))
        for metric, what in NAT_METRICS.items() if worrying[metric]]


def _outbound_row(table: RouteTable, nats: dict[str, dict[str, Any]]) -> dict[str, Any]:
    target = route_target(_default(table)) or "none"
    state = nats.get(target, {}).get("State", "gone") if target.startswith("nat-") else ""
    return {"subnet": table.subnet_id, "route_table": table.route_table_id, "main": table.main,
            "outbound": target, "nat_state": state}


def _default(table: RouteTable) -> dict[str, Any] | None:
    return next((r for r in table.routes if r.get("DestinationCidrBlock") == "0.0.0.0/0"), None)


# --- aws.lambda_vpc ----------------------------------------------------------------------------------------------


@check("aws.lambda_vpc", timeout_s=20)
@aws_check
async def lambda_vpc(function: str, ctx: CheckContext) -> CheckResult:
    """A function in a VPC has a way out for what it calls: a NAT gateway or an endpoint per subnet"""
    config = await function_configuration(ctx, function)
    subnets = (config.get("VpcConfig") or {}).get("SubnetIds") or []
    if not subnets:
        return CheckResult(status=Status.ok, resource=function, summary=f"{function} is not in a VPC.")
    hosts = external_hosts((config.get("Environment") or {}).get("Variables") or {})
    services = await _aws_services(ctx, config.get("Role", ""))
    tables = await subnet_route_tables(ctx, subnets)
    endpoints = await _vpc_endpoints(ctx, {t.vpc_id for t in tables.values()})
    rows = [_egress_row(t, hosts, services, endpoints) for t in tables.values()]
    problems = [_egress_problem(function, row) for row in rows if row["unreachable"]]
    return fold(problems, resource=function, evidence={"hosts": hosts, "aws_services": services, "subnets": rows},
                ok=f"Every subnet of {function} has a way to the {len(hosts)} host(s) and {len(services)} AWS "
                   "service(s) it calls.")


def external_hosts(env: dict[str, str]) -> list[str]:
    """Host names in environment values (URLs, host:port) outside AWS's own API domain."""
    found = (m.group(1).lower() for v in env.values() if (m := _HOST.match(v.strip())))
    return sorted({h for h in found if not h.endswith(".amazonaws.com") and not h.replace(".", "").isdigit()})


async def _aws_services(ctx: CheckContext, role_arn: str) -> list[str]:
    """The services the function's role may call (action prefixes), less those Lambda calls on its behalf."""
    if ":role/" not in role_arn:
        return []
    role = await load_role(ctx, role_arn.rsplit("/", 1)[-1])
    prefixes = {a.split(":", 1)[0].lower() for a in role.allowed(["*"]) if ":" in a}
    return sorted(prefixes - _NOT_FROM_THE_FUNCTION)


async def _vpc_endpoints(ctx: CheckContext, vpcs: set[str]) -> list[dict[str, Any]]:
    if not vpcs:
        return []
    found = await ctx.aws.call("ec2", region(ctx), "describe_vpc_endpoints",
                               Filters=[{"Name": "vpc-id", "Values": sorted(vpcs)}])
    return found["VpcEndpoints"]


def _egress_row(table: RouteTable, hosts: list[str], services: list[str],
                endpoints: list[dict[str, Any]]) -> dict[str, Any]:
    target = route_target(_default(table)) or "none"
    via_nat = target.startswith(("nat-", "tgw-")) or target.startswith("eni-")
    served = {endpoint_prefix(e.get("ServiceName", "")) for e in endpoints if serves(e, table)}
    unreachable = ([] if via_nat else hosts) + [s for s in services if not via_nat and s not in served]
    return {"subnet": table.subnet_id, "route_table": table.route_table_id, "outbound": target,
            "endpoints": ", ".join(sorted(served)), "unreachable": ", ".join(unreachable)}


def endpoint_prefix(service_name: str) -> str:
    """The IAM action prefix an endpoint's service answers: com.amazonaws.us-east-1.kinesis-streams → kinesis
    (the last label alone would make an ECR endpoint "api")."""
    name = service_name.split(".", 3)[-1] if service_name.startswith("com.amazonaws.") else service_name
    return _ENDPOINT_PREFIXES.get(name, name.split(".", 1)[0])


def _egress_problem(function: str, row: dict[str, Any]) -> Problem:
    igw = row["outbound"].startswith("igw-")
    why = ("routes to an internet gateway, but Lambda ENIs never get a public IP" if igw
           else f"has no NAT gateway (outbound: {row['outbound']}) and no endpoint for them")
    return Problem(
        Status.fail, "P1", f"{function} in subnet {row['subnet']} cannot reach {row['unreachable']}: route table "
                           f"{row['route_table']} {why}; calls time out.",
        f"Run {function} in private subnets whose route table {row['route_table']} sends 0.0.0.0/0 to a NAT "
        "gateway, or add VPC endpoints for the AWS services it calls.")


# --- aws.vpc_dns -------------------------------------------------------------------------------------------------


def service_names(service: ServiceSpec) -> list[str]:
    """The DNS names the service is reached by, from its probes."""
    names = list(service.dns) + [p.url.host or "" for p in service.http] + [t.host for t in service.tcp + service.tls]
    return sorted({n.lower().rstrip(".") for n in names if n and not n.replace(".", "").isdigit()})


@check("aws.vpc_dns", timeout_s=20)
@aws_check
async def vpc_dns(_: str, ctx: CheckContext) -> CheckResult:
    """VPC DNS resolution is on, private zones for the service's names are associated, forwarding rules work"""
    tables = await subnet_route_tables(ctx, await service_subnets(ctx))
    vpcs = sorted({t.vpc_id for t in tables.values()})
    names = service_names(ctx.service)
    problems, rows = [], []
    for vpc in vpcs:
        attributes = await vpc_dns_attributes(ctx, vpc)
        rows.append({"vpc": vpc, **attributes})
        problems += _attribute_problems(vpc, attributes)
        problems += await _zone_problems(ctx, vpc, names)
        problems += await _resolver_problems(ctx, vpc, names)
    return fold([p for _, p in problems], resource=problems[0][0] if problems else ", ".join(vpcs),
                evidence={"vpcs": rows, "names": names},
                ok=f"DNS is on in {len(vpcs)} VPC(s); {len(names)} service name(s) resolve through associated zones")


def _attribute_problems(vpc: str, attributes: dict[str, bool]) -> list[tuple[str, Problem]]:
    return [(vpc, Problem(
        Status.fail if attribute == "enableDnsSupport" else Status.warn, "P1" if attribute == "enableDnsSupport" else "P2",
        f"{attribute} is off in {vpc}: " + ("nothing in the VPC can resolve names through the Amazon DNS server."
                                             if attribute == "enableDnsSupport" else
                                             "private hosted zones and interface endpoints' private DNS do not work."),
        f"aws ec2 modify-vpc-attribute --vpc-id {vpc} {DNS_ATTRIBUTE_FLAGS[attribute]} "
        "'{\"Value\":true}'")) for attribute, on in attributes.items() if not on]


def _covers(domain: str, names: list[str]) -> list[str]:
    domain = domain.lower().rstrip(".")
    return [n for n in names if n == domain or n.endswith("." + domain)]


async def _zone_problems(ctx: CheckContext, vpc: str, names: list[str]) -> list[tuple[str, Problem]]:
    if not names:
        return []
    zones = await ctx.aws.paginate("route53", region(ctx), "list_hosted_zones", "HostedZones")
    private = [z for z in zones if (z.get("Config") or {}).get("PrivateZone") and _covers(z["Name"], names)]
    if not private:
        return []
    found = await ctx.aws.call("route53", region(ctx), "list_hosted_zones_by_vpc", VPCId=vpc, VPCRegion=region(ctx))
    associated = {z["HostedZoneId"] for z in found["HostedZoneSummaries"]}
    return [(z["Id"], Problem(
        Status.fail, "P1", f"Private hosted zone {z['Name']} ({z['Id'].rsplit('/', 1)[-1]}) holds "
                           f"{', '.join(_covers(z['Name'], names))} but is not associated with {vpc}: those "
                           "names do not resolve (or resolve publicly) from the service.",
        f"aws route53 associate-vpc-with-hosted-zone --hosted-zone-id {z['Id'].rsplit('/', 1)[-1]} --vpc "
        f"VPCRegion={region(ctx)},VPCId={vpc}"))
        for z in private if z["Id"].rsplit("/", 1)[-1] not in associated]


async def _resolver_problems(ctx: CheckContext, vpc: str, names: list[str]) -> list[tuple[str, Problem]]:
    if not names:
        return []
    associations = await ctx.aws.paginate("route53resolver", region(ctx), "list_resolver_rule_associations",
                                          "ResolverRuleAssociations", Filters=[{"Name": "VPCId", "Values": [vpc]}])
    problems = []
    for association in associations:
        rule = (await ctx.aws.call("route53resolver", region(ctx), "get_resolver_rule",
                                   ResolverRuleId=association["ResolverRuleId"]))["ResolverRule"]
        if rule.get("RuleType") == "FORWARD" and _covers(rule.get("DomainName", ""), names):
            problems += await _rule_problems(ctx, vpc, rule, association)
    return problems


async def _rule_problems(ctx: CheckContext, vpc: str, rule: dict[str, Any],
                         association: dict[str, Any]) -> list[tuple[str, Problem]]:
    targets = ", ".join(f"{t.get('Ip')}:{t.get('Port', 53)}" for t in rule.get("TargetIps", []))
    endpoint = rule.get("ResolverEndpointId")
    status = (await ctx.aws.call("route53resolver", region(ctx), "get_resolver_endpoint",
                                 ResolverEndpointId=endpoint))["ResolverEndpoint"].get("Status") if endpoint else None
    broken = [s for s in (rule.get("Status"), association.get("Status")) if s not in ("COMPLETE", None)]
    if endpoint and status != "OPERATIONAL":
        broken.append(f"outbound endpoint {endpoint} {status}")
    if not broken and targets:
        return []
    return [(rule["Id"], Problem(
        Status.fail, "P1", f"Resolver rule {rule['Id']} forwards {rule.get('DomainName')} from {vpc} to "
                           f"{targets or 'no target'} but is not working ({', '.join(broken) or 'no target IPs'}): "
                           "the service's names under it do not resolve.",
        f"Fix outbound endpoint {endpoint} (its security group must allow DNS to {targets}) or disassociate the rule: "
        f"aws route53resolver disassociate-resolver-rule --vpc-id {vpc} --resolver-rule-id {rule['Id']}"))]
