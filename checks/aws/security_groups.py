"""Security groups on the service's traffic paths, found from the resources the services file names.

`aws.security_groups` (config), once per service:
- load balancer → targets: an LB security group's egress and a target's security group ingress both allow the
  target group's port (by security-group reference, or a CIDR);
- targets and Lambda ENIs → databases: the source's egress and the database security group's ingress allow the
  database port (a function only when its environment names the database, by endpoint or identifier: a function
  that never opens a connection to it is not on that path);
- Lambda in a VPC → its endpoints: the function's security groups allow 443 out (AWS APIs, interface endpoints);
- world-open ingress (0.0.0.0/0, ::/0) on a database or admin port of any of these groups, or of
  `aws.security_groups`.

A CIDR rule is taken as allowing the path when the peer's address is unknown (load balancers and Lambda ENIs have
no fixed IP; moto gives load balancers none), so only a missing rule is ever reported, never a CIDR too narrow.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from checks.aws.common import Problem, aws_check, describe_load_balancer, fold, function_configuration, region
from checks.model import CheckResult, Status
from checks.registry import CheckContext, check

DATABASE_PORTS = {3306: "MySQL", 5432: "PostgreSQL", 1433: "SQL Server", 1521: "Oracle", 6379: "Redis",
                  11211: "Memcached", 27017: "MongoDB", 9200: "Elasticsearch", 5439: "Redshift"}
ADMIN_PORTS = {22: "SSH", 3389: "RDP"}
WORLD = ("0.0.0.0/0", "::/0")
HTTPS = 443


@dataclass
class Side:
    """One end of a path: what it is, its security groups, its private addresses when known."""

    name: str
    groups: list[str]
    addresses: list[str] = field(default_factory=list)


def allows(permissions: list[dict[str, Any]], port: int, peer: Side) -> bool:
    """Whether any rule of one direction lets TCP `port` through to/from `peer`."""
    return any(_rule_port(rule, port) and _rule_peer(rule, peer) for rule in permissions)


def _rule_port(rule: dict[str, Any], port: int) -> bool:
    if rule.get("IpProtocol") == "-1":
        return True
    return rule.get("IpProtocol") in ("tcp", "6") and rule.get("FromPort", 0) <= port <= rule.get("ToPort", 65535)


def _rule_peer(rule: dict[str, Any], peer: Side) -> bool:
    if any(pair.get("GroupId") in peer.groups for pair in rule.get("UserIdGroupPairs", [])):
        return True
    cidrs = [r["CidrIp"] for r in rule.get("IpRanges", [])] + [r["CidrIpv6"] for r in rule.get("Ipv6Ranges", [])]
    if rule.get("PrefixListIds") or (cidrs and not peer.addresses):
        return True
    return any(_in(address, cidr) for address in peer.addresses for cidr in cidrs)


def _in(address: str, cidr: str) -> bool:
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def world_open(group: dict[str, Any]) -> list[tuple[int, str]]:
    """Database and admin ports the group opens to the whole internet."""
    exposed = []
    for rule in group.get("IpPermissions", []):
        cidrs = [r.get("CidrIp") for r in rule.get("IpRanges", [])] + [r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])]
        if any(c in WORLD for c in cidrs):
            exposed += [(p, what) for p, what in (DATABASE_PORTS | ADMIN_PORTS).items() if _rule_port(rule, p)]
    return exposed


# --- finding the paths -----------------------------------------------------------------------------------------


@dataclass
class Path:
    source: Side
    target: Side
    port: int
    why: str  # "web → target group web-tg" for sentences


async def _lb_paths(ctx: CheckContext, name: str) -> list[Path]:
    lb = await describe_load_balancer(ctx, name)
    source = Side(f"load balancer {lb['LoadBalancerName']}", lb.get("SecurityGroups", []))
    groups = await ctx.aws.call("elbv2", region(ctx), "describe_target_groups", LoadBalancerArn=lb["LoadBalancerArn"])
    return [Path(source, target, port, f"{source.name} → {target.name}")
            for group in groups["TargetGroups"] for target, port in await _instance_targets(ctx, group)]


async def _instance_targets(ctx: CheckContext, group: dict[str, Any]) -> list[tuple[Side, int]]:
    """Each instance target with the port the load balancer sends to: the port it was registered with (ECS
    dynamic ports, an app on 8080 behind a port-80 group), else the group's."""
    if group.get("TargetType", "instance") != "instance":
        return []
    health = await ctx.aws.call("elbv2", region(ctx), "describe_target_health", TargetGroupArn=group["TargetGroupArn"])
    ports = {(d["Target"]["Id"], int(d["Target"].get("Port") or group.get("Port") or 80))
             for d in health["TargetHealthDescriptions"]}
    sides = {s.name: s for s in await instance_sides(ctx, sorted({i for i, _ in ports}))} if ports else {}
    return [(sides[f"instance {i}"], port) for i, port in sorted(ports) if f"instance {i}" in sides]


async def instance_sides(ctx: CheckContext, ids: list[str]) -> list[Side]:
    found = await ctx.aws.call("ec2", region(ctx), "describe_instances", InstanceIds=ids)
    return [Side(f"instance {i['InstanceId']}", [g["GroupId"] for g in i.get("SecurityGroups", [])],
                 [i["PrivateIpAddress"]] if i.get("PrivateIpAddress") else [])
            for reservation in found["Reservations"] for i in reservation["Instances"]]


@dataclass
class Database:
    side: Side
    port: int
    names: tuple[str, ...]  # how a client's configuration refers to it: endpoint address, identifier


async def _database(ctx: CheckContext, instance_id: str) -> Database:
    found = await ctx.aws.call("rds", region(ctx), "describe_db_instances", DBInstanceIdentifier=instance_id)
    db = found["DBInstances"][0]
    endpoint = db.get("Endpoint") or {}
    port = int(endpoint.get("Port") or db.get("DbInstancePort") or 5432)
    side = Side(f"database {instance_id}", [g["VpcSecurityGroupId"] for g in db.get("VpcSecurityGroups", [])])
    return Database(side, port, tuple(n for n in (endpoint.get("Address"), instance_id) if n))


@dataclass
class FunctionSide:
    side: Side
    environment: str  # the function's environment values, to see which databases it names


async def _lambda_side(ctx: CheckContext, function: str) -> FunctionSide | None:
    config = await function_configuration(ctx, function)
    groups = (config.get("VpcConfig") or {}).get("SecurityGroupIds") or []
    env = " ".join(((config.get("Environment") or {}).get("Variables") or {}).values())
    return FunctionSide(Side(f"function {function}", groups), env) if groups else None


def _db_clients(targets: list[Side], functions: list[FunctionSide], db: Database) -> list[Side]:
    """Who connects to `db`: every load-balancer target, and the functions whose environment names it."""
    return targets + [f.side for f in functions if any(name in f.environment for name in db.names)]


# --- the check -------------------------------------------------------------------------------------------------


@check("aws.security_groups", timeout_s=25)
@aws_check
async def security_groups(_: str, ctx: CheckContext) -> CheckResult:
    """Security groups allow the LB → target → database paths and Lambda egress; no world-open database port"""
    assert ctx.service.aws is not None
    spec = ctx.service.aws
    paths = [p for lb in spec.load_balancers for p in await _lb_paths(ctx, lb)]
    functions = [s for f in spec.lambda_functions if (s := await _lambda_side(ctx, f)) is not None]
    lambdas = [f.side for f in functions]
    targets = [p.target for p in paths]
    for db_id in spec.db_instances:
        db = await _database(ctx, db_id)
        paths += [Path(client, db.side, db.port, f"{client.name} → {db.side.name}")
                  for client in _db_clients(targets, functions, db)]
    ids = sorted({g for p in paths for g in p.source.groups + p.target.groups}
                 | {g for s in lambdas for g in s.groups} | set(spec.security_groups))
    groups = await _describe_groups(ctx, ids)
    problems = [pr for p in paths for pr in _path_problems(p, groups)]
    problems += [pr for s in lambdas for pr in _lambda_egress(s, groups)]
    problems += [pr for g in groups.values() for pr in _exposure(g)]
    evidence = {"paths": [_path_row(p, groups) for p in paths], "groups": sorted(groups)}
    culprit = next((r for r, pr in problems if pr.status is Status.fail), problems[0][0] if problems else None)
    return fold([pr for _, pr in problems], resource=culprit or ", ".join(ids), evidence=evidence,
                ok=f"{len(ids)} security groups allow the service's {len(paths)} paths; no world-open database port")


async def _describe_groups(ctx: CheckContext, ids: list[str]) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    found = await ctx.aws.call("ec2", region(ctx), "describe_security_groups", GroupIds=ids)
    return {g["GroupId"]: g for g in found["SecurityGroups"]}


def _egress_ok(path: Path, groups: dict[str, dict[str, Any]]) -> bool:
    return any(allows(groups[g].get("IpPermissionsEgress", []), path.port, path.target) for g in path.source.groups
               if g in groups)


def _ingress_ok(path: Path, groups: dict[str, dict[str, Any]]) -> bool:
    return any(allows(groups[g].get("IpPermissions", []), path.port, path.source) for g in path.target.groups
               if g in groups)


def _path_problems(path: Path, groups: dict[str, dict[str, Any]]) -> list[tuple[str, Problem]]:
    problems = []
    if path.source.groups and not _egress_ok(path, groups):
        sg = path.source.groups[0]
        problems.append((sg, Problem(
            Status.fail, "P1", f"No egress rule of {', '.join(path.source.groups)} ({path.source.name}) allows TCP "
                               f"{path.port} to {path.target.name}.",
            f"aws ec2 authorize-security-group-egress --group-id {sg} --ip-permissions "
            f"IpProtocol=tcp,FromPort={path.port},ToPort={path.port},UserIdGroupPairs=[{{GroupId={_first(path.target)}}}]")))
    if path.target.groups and not _ingress_ok(path, groups):
        sg = path.target.groups[0]
        problems.append((sg, Problem(
            Status.fail, "P1", f"No ingress rule of {', '.join(path.target.groups)} ({path.target.name}) allows TCP "
                               f"{path.port} from {path.source.name}.",
            f"aws ec2 authorize-security-group-ingress --group-id {sg} --protocol tcp --port {path.port} "
            f"--source-group {_first(path.source)}")))
    return problems


def _first(side: Side) -> str:
    return side.groups[0] if side.groups else "<its security group>"


def _lambda_egress(side: Side, groups: dict[str, dict[str, Any]]) -> list[tuple[str, Problem]]:
    # Any 443 egress counts, to a CIDR, a prefix list or the endpoints' security group: which endpoint the
    # function calls is not known here.
    rules = [rule for g in side.groups if g in groups for rule in groups[g].get("IpPermissionsEgress", [])]
    if any(_rule_port(rule, HTTPS) for rule in rules):
        return []
    return [(side.groups[0], Problem(
        Status.fail, "P1", f"{side.name} runs with {', '.join(side.groups)}, which allow no TCP 443 out: every AWS "
                           "API call and interface endpoint times out.",
        f"Allow TCP 443 egress on {side.groups[0]} (to 0.0.0.0/0, or to the endpoints' security groups)."))]


def _exposure(group: dict[str, Any]) -> list[tuple[str, Problem]]:
    exposed = world_open(group)
    if not exposed:
        return []
    ports = ", ".join(f"{port} ({what})" for port, what in exposed)
    return [(group["GroupId"], Problem(
        Status.warn, "P2", f"{group['GroupId']} ({group.get('GroupName', '')}) accepts {ports} from the whole internet.",
        f"Replace the 0.0.0.0/0 rule on {group['GroupId']} with the security group of the clients (or a VPN "
        "CIDR); use Session Manager instead of open SSH/RDP."))]


def _path_row(path: Path, groups: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"from": path.source.name, "from_sgs": ", ".join(path.source.groups), "to": path.target.name,
            "to_sgs": ", ".join(path.target.groups), "port": path.port,
            "egress": _egress_ok(path, groups) if path.source.groups else "n/a",
            "ingress": _ingress_ok(path, groups) if path.target.groups else "n/a"}
