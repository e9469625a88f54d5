"""VPC endpoints the service depends on: IAM conditions on `aws:sourceVpce`/`aws:sourceVpc`, SSM parameters, and
the interface endpoints of `aws.vpc_endpoints` (state, private DNS and VPC DNS, zones, 443 from the service's
subnets, endpoint policy Denies that apply to `aws.roles`).

A role policy that allows DynamoDB only `"aws:SourceVpce": "vpce-…"` works from a subnet whose route table is
on that gateway endpoint and fails with AccessDenied from every other subnet — and IAM's error never says why.
This check reads the policies, finds such conditions and checks the endpoint and the service's subnets' route
tables against them, statically (moto, like IAM itself, cannot simulate `aws:sourceVpce`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from checks.aws.clients import AwsCheckError
from checks.aws.common import (
    DNS_ATTRIBUTE_FLAGS,
    Problem,
    RouteTable,
    aws_check,
    aws_error_code,
    fold,
    function_configuration,
    region,
    service_subnets,
    subnet_route_tables,
    vpc_dns_attributes,
)
from checks.aws.policies import ResourcePolicy, deny_result, judge_policy
from checks.aws.policy_eval import DenyMatch, as_list, statements
from checks.aws.roles import role_policy_documents, service_roles
from checks.aws.security_groups import HTTPS, Side, allows
from checks.aws.fixes.gateway_endpoint import endpoint_offer
from checks.model import CheckResult, Status
from checks.registry import CheckContext, check

SOURCE_VPCE = "aws:sourcevpce"
SOURCE_VPC = "aws:sourcevpc"

# --- reading policies ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    """One statement's condition that requests must come through a VPC endpoint (or from a VPC)."""

    policy: str
    sid: str
    effect: str
    actions: tuple[str, ...]
    operator: str
    key: str  # "aws:SourceVpce" or "aws:SourceVpc", as written in the policy
    values: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.policy}, statement {self.sid},"

    @property
    def by_endpoint(self) -> bool:
        return self.key.lower() == SOURCE_VPCE

    def row(self) -> dict[str, Any]:
        return {"policy": self.policy, "sid": self.sid, "effect": self.effect, "actions": ", ".join(self.actions),
                "condition": f"{self.operator} {self.key}", "values": ", ".join(self.values)}


def vpc_requirements(policy: str, document: dict[str, Any]) -> list[Requirement]:
    """Every `aws:sourceVpce` / `aws:sourceVpc` condition in a policy document, any operator, any key case."""
    return [Requirement(policy=policy, sid=sid, effect=statement.get("Effect", ""),
                        actions=tuple(as_list(statement.get("Action") or statement.get("NotAction"))),
                        operator=operator, key=key, values=tuple(as_list(values)))
            for sid, statement in statements(document)
            for operator, conditions in (statement.get("Condition") or {}).items()
            for key, values in conditions.items() if key.lower() in (SOURCE_VPCE, SOURCE_VPC)]


# --- aws.vpce_policy -----------------------------------------------------------------------------------------


@check("aws.vpce_policy", timeout_s=20)
@aws_check
async def vpce_policy(role: str, ctx: CheckContext) -> CheckResult:
    """Role policy conditions on aws:sourceVpce/aws:sourceVpc can be met from the service's subnets."""
    documents = await role_policy_documents(ctx, role)
    requirements = [req for name, doc in documents for req in vpc_requirements(name, doc)]
    if not requirements:
        return CheckResult(status=Status.ok, resource=role,
                           evidence={"policies": [name for name, _ in documents]},
                           summary=f"No aws:sourceVpce or aws:sourceVpc condition in the {len(documents)} policies "
                                   f"of {role}.")
    assert ctx.service.aws is not None
    tables = await subnet_route_tables(ctx, ctx.service.aws.subnets)
    endpoints = await _endpoints(ctx, requirements, tables)
    judged = [_judge(req, endpoints, tables) for req in requirements]
    problems = [p for found, _ in judged for p in found]
    evidence = {
        "statements": [req.row() for req in requirements],
        "endpoints": [_endpoint_row(eid, ep) for eid, ep in endpoints.by_id.items()],
        "subnets": [row for _, rows in judged for row in rows],
    }
    if not problems:
        where = f"from all {len(tables)} subnets" if tables else "(no subnets listed to check routes from)"
        return CheckResult(status=Status.ok, resource=role, evidence=evidence,
                           summary=f"The endpoint conditions of {role} can be met {where}.")
    return _unmet_result(role, problems, evidence, region(ctx))


def _unmet_result(role: str, problems: list[Unmet], evidence: dict[str, Any], where: str) -> CheckResult:
    """`fail` naming the first unmet condition, with an association offer per gateway endpoint/route table."""
    first, more = problems[0], f" (+{len(problems) - 1} more)" if problems[1:] else ""
    return CheckResult(status=Status.fail, severity="P1", resource=first.resource, evidence=evidence,
                       summary=f"Role {role}: {first.summary}{more}", hint=first.hint,
                       fixes=[endpoint_offer(where, *pair)
                              for pair in dict.fromkeys(p.gateway_route for p in problems if p.gateway_route)])


@dataclass(frozen=True)
class Unmet:
    """A condition of the role's policy that requests from a subnet cannot meet."""

    resource: str
    summary: str
    hint: str
    gateway_route: tuple[str, str] | None = None  # (gateway endpoint, route table) whose association fixes it


@dataclass
class Endpoints:
    by_id: dict[str, dict[str, Any] | None]  # None: the id in the policy does not exist in this region
    by_vpc: dict[str, list[dict[str, Any]]]  # for aws:sourceVpc: the endpoints in each subnet's VPC


async def _endpoints(ctx: CheckContext, requirements: list[Requirement], tables: dict[str, RouteTable]) -> Endpoints:
    ids = sorted({v for req in requirements if req.by_endpoint for v in req.values if _is_endpoint_id(v)})
    by_id = {eid: await _endpoint(ctx, eid) for eid in ids}
    by_vpc: dict[str, list[dict[str, Any]]] = {}
    if any(not req.by_endpoint for req in requirements):
        for vpc in sorted({t.vpc_id for t in tables.values()}):
            found = await ctx.aws.call("ec2", region(ctx), "describe_vpc_endpoints",
                                       Filters=[{"Name": "vpc-id", "Values": [vpc]}])
            by_vpc[vpc] = found["VpcEndpoints"]
    return Endpoints(by_id, by_vpc)


def _is_endpoint_id(value: str) -> bool:
    return value.startswith("vpce-") and not any(c in value for c in "*?$")


async def _endpoint(ctx: CheckContext, endpoint_id: str) -> dict[str, Any] | None:
    # `VpcEndpointIds=`, not the `vpc-endpoint-id` filter: moto cannot evaluate that filter.
    try:
        found = await ctx.aws.call("ec2", region(ctx), "describe_vpc_endpoints", VpcEndpointIds=[endpoint_id])
    except AwsCheckError as exc:
        if aws_error_code(exc) == "InvalidVpcEndpointId.NotFound":
            return None
        raise
    return found["VpcEndpoints"][0] if found["VpcEndpoints"] else None


def _endpoint_row(endpoint_id: str, endpoint: dict[str, Any] | None) -> dict[str, Any]:
    if endpoint is None:
        return {"endpoint": endpoint_id, "exists": False, "type": None, "service": None, "vpc": None,
                "state": None, "route_tables": ""}
    return {"endpoint": endpoint_id, "exists": True, "type": endpoint.get("VpcEndpointType"),
            "service": endpoint.get("ServiceName"), "vpc": endpoint.get("VpcId"), "state": endpoint.get("State"),
            "route_tables": ", ".join(endpoint.get("RouteTableIds", []))}


def serves(endpoint: dict[str, Any], table: RouteTable) -> bool:
    """Whether traffic from a subnet with this route table goes through `endpoint`."""
    if endpoint.get("VpcId") != table.vpc_id or str(endpoint.get("State", "")).lower() != "available":
        return False
    if endpoint.get("VpcEndpointType") != "Gateway":
        return True  # interface endpoints are reached by DNS from any subnet of their VPC
    endpoint_id = endpoint["VpcEndpointId"]
    return table.route_table_id in endpoint.get("RouteTableIds", []) or any(
        r.get("DestinationPrefixListId") and r.get("GatewayId") == endpoint_id for r in table.routes
    )


def _judge(req: Requirement, endpoints: Endpoints, tables: dict[str, RouteTable]) -> tuple[list[Unmet], list]:
    if req.by_endpoint:
        return _judge_source_vpce(req, endpoints.by_id, tables)
    return _judge_source_vpc(req, endpoints.by_vpc, tables)


def _judge_source_vpce(req: Requirement, by_id: dict[str, dict[str, Any] | None],
                       tables: dict[str, RouteTable]) -> tuple[list[Unmet], list[dict[str, Any]]]:
    named = [v for v in req.values if _is_endpoint_id(v)]
    existing = [by_id[v] for v in named if by_id.get(v)]
    problems, rows = [], []
    if named and not existing:
        missing = ", ".join(named)
        problems.append(Unmet(
            resource=named[0],
            summary=f"{req.where} requires requests through {missing}, which does not exist.",
            hint=f"Update the aws:SourceVpce condition in {req.policy} to the current endpoint id, or recreate the "
                 "endpoint; every request this statement covers is denied until then.",
        ))
    for subnet, table in tables.items():
        served_by = next((e["VpcEndpointId"] for e in existing if serves(e, table)), None)
        rows.append(_subnet_row(req, table, served_by))
        if served_by or not existing:
            continue
        gateway = next((e for e in existing if e.get("VpcEndpointType") == "Gateway"
                        and e.get("VpcId") == table.vpc_id), None)
        problems.append(_unrouted(req, table, gateway, existing))
    return problems, rows


def _unrouted(req: Requirement, table: RouteTable, gateway: dict[str, Any] | None,
              existing: list[dict[str, Any]]) -> Unmet:
    rtb = table.route_table_id
    implicit = " (the VPC's main table; the subnet has no association of its own)" if table.main else ""
    if gateway is not None:
        vpce = gateway["VpcEndpointId"]
        return Unmet(
            resource=rtb,
            summary=f"{req.where} allows {', '.join(req.actions)} only through {vpce}, but "
                    f"subnet {table.subnet_id} uses route table {rtb}{implicit}, which is not on that gateway "
                    "endpoint, so its requests reach the service over the internet and are denied.",
            hint=f"Add {rtb} to {vpce}: aws ec2 modify-vpc-endpoint --vpc-endpoint-id {vpce} "
                 f"--add-route-table-ids {rtb}",
            gateway_route=(vpce, rtb),
        )
    names = ", ".join(e["VpcEndpointId"] for e in existing)
    return Unmet(
        resource=table.subnet_id,
        summary=f"{req.where} allows requests only through {names}, none of which is usable "
                f"from subnet {table.subnet_id} in {table.vpc_id}.",
        hint=f"Create an endpoint for the service in {table.vpc_id} and add its id to the aws:SourceVpce "
             f"condition of {req.policy}.",
    )


def _judge_source_vpc(req: Requirement, by_vpc: dict[str, list[dict[str, Any]]],
                      tables: dict[str, RouteTable]) -> tuple[list[Unmet], list[dict[str, Any]]]:
    # aws:SourceVpc is only set on requests that arrive through a VPC endpoint, so the subnet's VPC must be
    # listed *and* an endpoint of the statement's service must carry the subnet's traffic.
    services = {a.split(":", 1)[0].lower() for a in req.actions if ":" in a}
    problems, rows = [], []
    for subnet, table in tables.items():
        candidates = [e for e in by_vpc.get(table.vpc_id, [])
                      if not services or e.get("ServiceName", "").rsplit(".", 1)[-1] in services]
        served_by = next((e["VpcEndpointId"] for e in candidates if serves(e, table)), None)
        rows.append(_subnet_row(req, table, served_by))
        if table.vpc_id not in req.values:
            problems.append(Unmet(
                resource=table.subnet_id,
                summary=f"{req.where} allows requests only from {', '.join(req.values)}, but "
                        f"subnet {table.subnet_id} is in {table.vpc_id}.",
                hint=f"Add {table.vpc_id} to the aws:SourceVpc condition of {req.policy}, or run the service in "
                     "the listed VPC.",
            ))
        elif not served_by:
            gateway = next((e for e in candidates if e.get("VpcEndpointType") == "Gateway"), None)
            what = ", ".join(sorted(services)) or "the service"
            problems.append(Unmet(
                resource=table.route_table_id,
                summary=f"{req.where} requires aws:SourceVpc {table.vpc_id}, which is only set "
                        f"on requests through a VPC endpoint, and no {what} endpoint serves route table "
                        f"{table.route_table_id} of subnet {table.subnet_id}.",
                hint=(f"Add {table.route_table_id} to {gateway['VpcEndpointId']}: aws ec2 modify-vpc-endpoint "
                      f"--vpc-endpoint-id {gateway['VpcEndpointId']} --add-route-table-ids {table.route_table_id}")
                if gateway else f"Create a {what} VPC endpoint in {table.vpc_id} and add {table.route_table_id} to it.",
                gateway_route=(gateway["VpcEndpointId"], table.route_table_id) if gateway else None,
            ))
    return problems, rows


def _subnet_row(req: Requirement, table: RouteTable, served_by: str | None) -> dict[str, Any]:
    return {"subnet": table.subnet_id, "vpc": table.vpc_id, "route_table": table.route_table_id,
            "main": table.main, "requires": f"{req.key} {', '.join(req.values)}", "served_by": served_by}


# --- aws.ssm_parameters --------------------------------------------------------------------------------------

_NOT_FOUND = {"ParameterNotFound", "ParameterVersionNotFound"}


@check("aws.ssm_parameters", timeout_s=15)
@aws_check
async def ssm_parameters(name: str, ctx: CheckContext) -> CheckResult:
    """An SSM parameter the service reads at start-up exists and can be read and decrypted."""
    try:
        found = await ctx.aws.call("ssm", region(ctx), "get_parameter", Name=name, WithDecryption=True)
    except AwsCheckError as exc:
        return _parameter_error(name, ctx, exc)
    # Never keep the value: it may be a secret, and evidence ends up in Slack and postmortems.
    parameter = found["Parameter"]
    modified = parameter.get("LastModifiedDate")
    evidence = {
        "name": parameter["Name"],
        "type": parameter.get("Type"),
        "version": parameter.get("Version"),
        "last_modified": modified.isoformat(timespec="seconds") if modified else None,
    }
    return CheckResult(status=Status.ok, resource=name, evidence=evidence,
                       summary=f"{name} exists ({evidence['type']}, version {evidence['version']}) and can be read.")


def _parameter_error(name: str, ctx: CheckContext, exc: AwsCheckError) -> CheckResult:
    code = aws_error_code(exc)
    if code in _NOT_FOUND:
        return CheckResult(
            status=Status.fail, severity="P1", resource=name, evidence={"name": name, "region": region(ctx)},
            summary=f"SSM parameter {name} does not exist in {region(ctx)}: the service fails when it reads it at "
                    "start-up.",
            hint=f"Create it (aws ssm put-parameter --name {name} --type SecureString --value …) or fix the name the "
                 "service reads (a typo, a missing environment prefix, the wrong region).",
        )
    message = str(exc.__cause__ or "")
    if code.startswith("AccessDenied") and "kms:" in message.lower():
        return CheckResult(status=Status.error, resource=name,
                           summary=f"Access denied: the bot's role needs kms:Decrypt on the KMS key of {name}",
                           hint="Allow kms:Decrypt on that key for the bot's role (deploy/iam-policy.json).")
    raise exc


# --- aws.interface_endpoints ---------------------------------------------------------------------------------


@check("aws.interface_endpoints", timeout_s=20)
@aws_check
async def interface_endpoints(endpoint_id: str, ctx: CheckContext) -> CheckResult:
    """An interface endpoint the service calls is available, resolvable, reachable on 443 and lets its roles in"""
    endpoint = await _endpoint(ctx, endpoint_id)
    if endpoint is None:
        return CheckResult(status=Status.fail, severity="P1", resource=endpoint_id,
                           summary=f"VPC endpoint {endpoint_id} does not exist in {region(ctx)}.",
                           hint="Fix aws.vpc_endpoints in the services file, or recreate the endpoint.")
    subnets = await _service_subnet_rows(ctx, endpoint["VpcId"])
    problems = _state_problems(endpoint) + await _dns_problems(ctx, endpoint)
    problems += await _az_problems(ctx, endpoint, subnets) + await _sg_problems(ctx, endpoint, subnets)
    denies = await _endpoint_denies(ctx, endpoint)
    evidence = {"service": endpoint.get("ServiceName"), "private_dns": endpoint.get("PrivateDnsEnabled"),
                "subnets": endpoint.get("SubnetIds", []), "groups": [g["GroupId"] for g in endpoint.get("Groups", [])],
                "service_subnets": subnets, "denies": [d.row() for d in denies]}
    if not problems and any(d.certain for d in denies):
        return deny_result(denies, ok="", evidence=evidence, resource=endpoint_id)
    return fold(problems, resource=endpoint_id, evidence=evidence,
                ok=f"{endpoint_id} ({endpoint.get('ServiceName')}) is available, resolvable and reachable on 443 "
                   f"from {len(subnets)} service subnet(s)")


def _state_problems(endpoint: dict[str, Any]) -> list[Problem]:
    state = str(endpoint.get("State", "")).lower()
    if state == "available":
        return []
    return [Problem(Status.fail, "P1", f"{endpoint['VpcEndpointId']} is {state}, not available.",
                          "Accept or recreate the endpoint (aws ec2 describe-vpc-endpoints shows why).")]


async def _dns_problems(ctx: CheckContext, endpoint: dict[str, Any]) -> list[Problem]:
    eid, service = endpoint["VpcEndpointId"], endpoint.get("ServiceName", "")
    if not endpoint.get("PrivateDnsEnabled"):
        return [Problem(
            Status.fail, "P1", f"Private DNS is off on {eid} ({service}): the SDK's default name resolves to the "
                               "public endpoint, which private subnets without NAT cannot reach.",
            f"aws ec2 modify-vpc-endpoint --vpc-endpoint-id {eid} --private-dns-enabled")]
    off = [a for a, on in (await vpc_dns_attributes(ctx, endpoint["VpcId"])).items() if not on]
    return [Problem(
        Status.fail, "P1", f"{eid} has private DNS on, but {', '.join(off)} is off in {endpoint['VpcId']}: the "
                           f"private name of {service} does not resolve to the endpoint.",
        f"aws ec2 modify-vpc-attribute --vpc-id {endpoint['VpcId']} {DNS_ATTRIBUTE_FLAGS[off[0]]}"
        " '{\"Value\":true}'")] if off else []


async def _service_subnet_rows(ctx: CheckContext, vpc: str) -> list[dict[str, Any]]:
    """The service's subnets in the endpoint's VPC, with their AZ and CIDR (`ec2:DescribeSubnets`)."""
    ids = await service_subnets(ctx)
    if not ids:
        return []
    found = await ctx.aws.call("ec2", region(ctx), "describe_subnets", SubnetIds=ids)
    return [{"subnet": s["SubnetId"], "az": s["AvailabilityZone"], "cidr": s["CidrBlock"]}
            for s in found["Subnets"] if s["VpcId"] == vpc]


async def _az_problems(ctx: CheckContext, endpoint: dict[str, Any], subnets: list[dict[str, Any]]) -> list[Problem]:
    if not endpoint.get("SubnetIds") or not subnets:
        return []
    found = await ctx.aws.call("ec2", region(ctx), "describe_subnets", SubnetIds=endpoint["SubnetIds"])
    covered = {s["AvailabilityZone"] for s in found["Subnets"]}
    missing = sorted({row["az"] for row in subnets} - covered)
    return [Problem(
        Status.warn, "P2", f"{endpoint['VpcEndpointId']} has no network interface in {', '.join(missing)}, where "
                           "the service runs: those calls cross zones and fail with the endpoint's zone.",
        f"aws ec2 modify-vpc-endpoint --vpc-endpoint-id {endpoint['VpcEndpointId']} --add-subnet-ids "
        "<a subnet in each missing zone>")] if missing else []


async def _sg_problems(ctx: CheckContext, endpoint: dict[str, Any], subnets: list[dict[str, Any]]) -> list[Problem]:
    group_ids = [g["GroupId"] for g in endpoint.get("Groups", [])]
    if not group_ids or not subnets:
        return []
    found = await ctx.aws.call("ec2", region(ctx), "describe_security_groups", GroupIds=group_ids)
    rules = [rule for g in found["SecurityGroups"] for rule in g.get("IpPermissions", [])]
    callers = await _caller_groups(ctx)
    blocked = [row["subnet"] for row in subnets
               if not allows(rules, HTTPS, Side(row["subnet"], callers, [row["cidr"].split("/")[0]]))]
    return [Problem(
        Status.fail, "P1", f"The security groups of {endpoint['VpcEndpointId']} ({', '.join(group_ids)}) allow no "
                           f"TCP 443 from subnet(s) {', '.join(blocked)}: calls to {endpoint.get('ServiceName')} "
                           "time out.",
        f"aws ec2 authorize-security-group-ingress --group-id {group_ids[0]} --protocol tcp --port 443 --cidr "
        f"{next(r['cidr'] for r in subnets if r['subnet'] == blocked[0])}")] if blocked else []


async def _caller_groups(ctx: CheckContext) -> list[str]:
    """The security groups the service's calls leave from: its functions' and `aws.security_groups`, so a rule
    naming the callers' group (the usual one) counts as well as a CIDR."""
    assert ctx.service.aws is not None
    groups = list(ctx.service.aws.security_groups)
    for function in ctx.service.aws.lambda_functions:
        groups += ((await function_configuration(ctx, function)).get("VpcConfig") or {}).get("SecurityGroupIds") or []
    return list(dict.fromkeys(groups))


async def _endpoint_denies(ctx: CheckContext, endpoint: dict[str, Any]) -> list[DenyMatch]:
    assert ctx.service.aws is not None
    if not ctx.service.aws.roles or not endpoint.get("PolicyDocument"):
        return []
    policy = ResourcePolicy(f"endpoint policy of {endpoint['VpcEndpointId']}", endpoint["PolicyDocument"], ("*",))
    return judge_policy(policy, await service_roles(ctx))
