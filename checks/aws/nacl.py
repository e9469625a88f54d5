"""Network ACLs: is the whole ephemeral port range (TCP 1024–65535) open in both directions?

NACLs are stateless: the reply to a connection comes back to a random high port and must be allowed separately.
A NACL that allows only part of that range, or a lower-numbered deny that shadows the allow, breaks only the
connections whose port falls in the gap — the classic intermittent 504.

The evaluator at the top is pure and mirrors AWS: per direction, rules in ascending RuleNumber, the first rule
whose protocol, CIDR and port range match decides, and the `*` rule denies what nothing matched.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from typing import Any

from checks.aws.common import (
    aws_check,
    default_route,
    describe_load_balancer,
    region,
    subnet_route_tables,
)
from checks.model import CheckResult, Status
from checks.registry import CheckContext, check
from checks.targets import NaclTarget

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

TCP = "6"
EPHEMERAL = (1024, 65535)
PROBE_PORTS = (1024, 32768, 49152, 60999, 65535)  # ALB/NAT low end, Linux, Windows/IANA, Linux top, the top
INTERNET = ipaddress.ip_network("0.0.0.0/0")
_PROTOCOL_NAMES = {"-1": "all", "6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6"}

# --- the evaluator -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NaclRule:
    number: int
    action: str  # "allow" | "deny"
    protocol: str  # "-1" (all) or an IP protocol number as a string
    cidr: Network
    ports: tuple[int, int] | None  # None: every port
    egress: bool
    implicit: bool = False  # the `*` rule AWS evaluates last

    @property
    def label(self) -> str:
        return "*" if self.implicit else str(self.number)

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> NaclRule:
        port_range = entry.get("PortRange")
        protocol = str(entry.get("Protocol", "-1"))
        return cls(
            number=int(entry["RuleNumber"]),
            action=str(entry["RuleAction"]).lower(),
            protocol={"all": "-1", "tcp": "6", "udp": "17", "icmp": "1"}.get(protocol.lower(), protocol),
            cidr=ipaddress.ip_network(entry.get("CidrBlock") or entry.get("Ipv6CidrBlock")),
            ports=(int(port_range["From"]), int(port_range["To"])) if port_range and protocol not in ("-1",) else None,
            egress=bool(entry["Egress"]),
        )

    def describe(self) -> str:
        ports = "all ports" if self.ports is None else _ports(*self.ports)
        return f"rule {self.label} ({self.action} {_PROTOCOL_NAMES.get(self.protocol, self.protocol)} {ports} " \
               f"{'to' if self.egress else 'from'} {self.cidr})"


def rules_for(entries: list[dict[str, Any]], *, egress: bool) -> list[NaclRule]:
    """One direction's rules in evaluation order, ending with the implicit `*` deny (AWS always has it; a new
    custom NACL in moto lists no entries at all)."""
    rules = sorted((NaclRule.from_entry(e) for e in entries if bool(e["Egress"]) == egress), key=lambda r: r.number)
    implicit = [NaclRule(32767, "deny", "-1", ipaddress.ip_network("0.0.0.0/0"), None, egress, implicit=True),
                NaclRule(32767, "deny", "-1", ipaddress.ip_network("::/0"), None, egress, implicit=True)]
    return rules + implicit


def rule_matches(rule: NaclRule, *, protocol: str, port: int, peer: Network) -> bool:
    """Whether `rule` applies to every address of `peer` for this protocol and port."""
    if rule.protocol not in ("-1", protocol):
        return False
    if rule.ports is not None and not rule.ports[0] <= port <= rule.ports[1]:
        return False
    return rule.cidr.version == peer.version and peer.subnet_of(rule.cidr)  # type: ignore[arg-type]


def decide(rules: list[NaclRule], *, protocol: str, port: int, peer: Network) -> NaclRule:
    """The rule that decides a packet: the first match in rule-number order (rules from `rules_for`)."""
    return next(rule for rule in rules if rule_matches(rule, protocol=protocol, port=port, peer=peer))


@dataclass(frozen=True)
class Block:
    low: int
    high: int
    rule: NaclRule  # the deny that decides these ports (possibly the implicit `*`)
    shadows: NaclRule | None = None  # a later allow that would have let them through

    @property
    def ports(self) -> str:
        return _ports(self.low, self.high)


def blocked_ranges(rules: list[NaclRule], *, protocol: str, low: int, high: int, peer: Network) -> list[Block]:
    """The sub-ranges of ports low..high that the rules deny, each with the rule that denies it.

    Exact, not sampled: the decision can only change at a rule's port boundary, so each segment between
    boundaries is decided by evaluating its first port.
    """
    edges = {low, high + 1}
    for rule in rules:
        if rule.ports:
            edges.update(edge for edge in (rule.ports[0], rule.ports[1] + 1) if low < edge <= high)
    ordered = sorted(edges)
    blocks: list[Block] = []
    for start, end in zip(ordered, ordered[1:]):
        rule = decide(rules, protocol=protocol, port=start, peer=peer)
        if rule.action == "allow":
            continue
        if blocks and blocks[-1].rule == rule and blocks[-1].high == start - 1:
            blocks[-1] = Block(blocks[-1].low, end - 1, rule)
        else:
            blocks.append(Block(start, end - 1, rule))
    return [_with_shadowed_allow(block, rules, protocol, peer) for block in blocks]


def _with_shadowed_allow(block: Block, rules: list[NaclRule], protocol: str, peer: Network) -> Block:
    later = (r for r in rules if r.number > block.rule.number and r.action == "allow" and not r.implicit)
    for rule in later:
        low, high = rule.ports or (block.low, block.high)
        if low > block.high or high < block.low:
            continue
        if rule_matches(rule, protocol=protocol, port=max(low, block.low), peer=peer):
            return Block(block.low, block.high, block.rule, shadows=rule)
    return block


def _ports(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}-{high}"


# --- the check -----------------------------------------------------------------------------------------------


@check("aws.nacl", timeout_s=20)
@aws_check
async def nacl(target: NaclTarget, ctx: CheckContext) -> CheckResult:
    """The subnets' network ACLs let TCP replies through on the whole ephemeral range 1024-65535, both ways."""
    subnets = await _subnets_of(ctx, target)
    acls = await _network_acls(ctx, subnets)
    routes = await subnet_route_tables(ctx, subnets)
    reports = []
    for acl in acls:
        own = [a["SubnetId"] for a in acl.get("Associations", []) if a.get("SubnetId") in subnets]
        peers = await _peers(ctx, acl["VpcId"], internet=any(default_route(routes[s].routes) for s in own
                                                             if s in routes))
        reports.append(_evaluate_acl(acl, own, peers))
    return _nacl_result(target, reports)


async def _network_acls(ctx: CheckContext, subnets: list[str]) -> list[dict[str, Any]]:
    """The distinct ACLs of `subnets`, one call per subnet (moto mis-matches a multi-valued subnet filter)."""
    found = await asyncio.gather(*(
        ctx.aws.call("ec2", region(ctx), "describe_network_acls",
                     Filters=[{"Name": "association.subnet-id", "Values": [subnet]}])
        for subnet in subnets
    ))
    return list({acl["NetworkAclId"]: acl for page in found for acl in page["NetworkAcls"]}.values())


async def _subnets_of(ctx: CheckContext, target: NaclTarget) -> list[str]:
    if not target.load_balancer:
        return [target.ref]
    lb = await describe_load_balancer(ctx, target.ref)
    return [az["SubnetId"] for az in lb.get("AvailabilityZones", []) if az.get("SubnetId")]


async def _peers(ctx: CheckContext, vpc_id: str, *, internet: bool) -> list[tuple[str, Network]]:
    """Who replies must reach: the VPC's own CIDRs always; the internet when the subnet routes 0.0.0.0/0.

    A rule counts for a peer only if it covers the whole peer range, so a blocklist deny of one /32 is not read
    as blocking "the internet", and an isolated subnet is not asked to accept replies from the internet.
    """
    vpcs = await ctx.aws.call("ec2", region(ctx), "describe_vpcs", VpcIds=[vpc_id])
    vpc = vpcs["Vpcs"][0]
    cidrs = [a["CidrBlock"] for a in vpc.get("CidrBlockAssociationSet", []) if a.get("CidrBlock")] or [vpc["CidrBlock"]]
    peers = [(f"internet ({INTERNET})", INTERNET)] if internet else []
    return peers + [(f"VPC {cidr}", ipaddress.ip_network(cidr)) for cidr in dict.fromkeys(cidrs)]


@dataclass
class AclReport:
    acl_id: str
    subnets: list[str]
    rules: list[dict[str, Any]]
    probes: list[dict[str, Any]]
    blocked: list[dict[str, Any]]
    blocks: list[Block]


def _evaluate_acl(acl: dict[str, Any], subnets: list[str], peers: list[tuple[str, Network]]) -> AclReport:
    rules_by_direction = {"inbound": rules_for(acl["Entries"], egress=False),
                          "outbound": rules_for(acl["Entries"], egress=True)}
    probes, blocked, blocks = [], [], []
    for direction, rules in rules_by_direction.items():
        for peer_name, peer in peers:
            for port in PROBE_PORTS:
                rule = decide(rules, protocol=TCP, port=port, peer=peer)
                probes.append({"direction": direction, "peer": peer_name, "port": port,
                               "action": rule.action, "rule": rule.label})
            for block in blocked_ranges(rules, protocol=TCP, low=EPHEMERAL[0], high=EPHEMERAL[1], peer=peer):
                blocks.append(block)
                blocked.append({"direction": direction, "peer": peer_name, "ports": block.ports,
                                "denied_by": block.rule.label,
                                "shadowed_allow": block.shadows.label if block.shadows else None})
    rows = [_rule_row(direction, rule) for direction, rules in rules_by_direction.items() for rule in rules
            if rule.cidr.version == 4 or not rule.implicit]
    return AclReport(acl["NetworkAclId"], subnets, rows, probes, blocked, blocks)


def _rule_row(direction: str, rule: NaclRule) -> dict[str, Any]:
    return {"direction": direction, "rule": rule.label, "action": rule.action,
            "protocol": _PROTOCOL_NAMES.get(rule.protocol, rule.protocol),
            "ports": "all" if rule.ports is None else _ports(*rule.ports), "cidr": str(rule.cidr)}


def _nacl_result(target: NaclTarget, reports: list[AclReport]) -> CheckResult:
    evidence = {
        "network_acls": [{"network_acl": r.acl_id, "subnets": ", ".join(r.subnets)} for r in reports],
        "rules": [{"network_acl": r.acl_id, **row} for r in reports for row in r.rules],
        "probes": [{"network_acl": r.acl_id, **row} for r in reports for row in r.probes],
        "blocked": [{"network_acl": r.acl_id, **row} for r in reports for row in r.blocked],
    }
    broken = [r for r in reports if r.blocked]
    if not broken:
        ids = ", ".join(r.acl_id for r in reports)
        return CheckResult(status=Status.ok, resource=ids or None, evidence=evidence,
                           summary=f"Network ACL {ids} of {target} allows TCP 1024-65535 in and out.")
    first = broken[0]
    row, block = first.blocked[0], first.blocks[0]
    gaps = "; ".join(_gaps(first.blocked))
    return CheckResult(
        status=Status.fail,
        severity="P1",
        resource=", ".join(r.acl_id for r in broken),
        evidence=evidence,
        summary=f"Network ACL {first.acl_id} of {target} blocks part of the ephemeral range, so replies on those "
                f"ports are dropped and connections fail intermittently: {gaps}.",
        hint=_nacl_hint(first.acl_id, row["direction"], row["peer"], block),
    )


def _gaps(blocked: list[dict[str, Any]]) -> list[str]:
    """"inbound 32768-65535 from internet (0.0.0.0/0) and VPC 10.0.0.0/16 denied by rule 90", one per gap."""
    peers: dict[tuple[str, str, str], list[str]] = {}
    for row in blocked:
        peers.setdefault((row["direction"], row["ports"], row["denied_by"]), []).append(row["peer"])
    return [f"{direction} {ports} from {' and '.join(who)} denied by rule {rule}"
            for (direction, ports, rule), who in peers.items()]


def _nacl_hint(acl_id: str, direction: str, peer: str, block: Block) -> str:
    if block.shadows is not None:
        return (f"In {acl_id}, {block.rule.describe()} is evaluated before {block.shadows.describe()}: delete rule "
                f"{block.rule.label} or renumber it above {block.shadows.label}.")
    return (f"In {acl_id}, no {direction} rule allows TCP {block.ports} ({peer}); widen the allow rule to "
            f"1024-65535 or add an allow rule numbered below any deny that covers those ports.")
