"""Network-side AWS checks against moto: ALB routes, target health, 5xx ratio, alarms, NACLs, endpoints, SSM.

Each rule has a broken scenario that must name the culprit and a healthy one that must stay quiet.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber

from checks.aws.alarms import alarms
from checks.aws.clients import AwsClients
from checks.aws.elb import (
    TargetGroups,
    alb_routes,
    elb_5xx,
    matcher_accepts,
    parse_matcher,
    target_health,
)
from checks.aws.endpoints import ssm_parameters, vpce_policy
from checks.aws.nacl import (
    NaclRule,
    NaclTarget,
    blocked_ranges,
    decide,
    nacl,
    rules_for,
)
from checks.model import Status
from checks.registry import CheckContext
from checks.runner import make_http_client, run_service
from checks.schema import dump, dump_json
from checks.services import AwsSpec, ServiceSpec, parse_service
from tests.aws_scenarios import (
    REGION,
    Network,
    Rule,
    build_alb,
    build_network,
    build_target_group,
    custom_nacl,
    drop_association,
    firing_alarm,
    gateway_endpoint,
    health_server,
    loopback_instance,
    put_alb_traffic,
    put_parameter,
    role_with_policy,
    route_main_table_through_nat,
    route_through_nat,
    source_vpce_statement,
    targets_unhealthy,
    web_nacl_rules,
)

MakeCtx = Callable[..., CheckContext]


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC)  # moto stamps metrics and alarms with the wall clock


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client() as client:
        yield client


@pytest.fixture
def make_ctx(aws: AwsClients, http: httpx.AsyncClient, now: datetime) -> MakeCtx:
    def make(**spec: Any) -> CheckContext:
        return CheckContext(service_name="web", service=parse_service({"aws": {"region": REGION, **spec}}), now=now,
                            http=http, aws=aws)

    return make


@pytest.fixture
def net(aws: AwsClients) -> Network:
    return build_network(aws)


def inject_error(client: Any, operation: str, code: str, *, status: int = 400) -> list[int]:
    """Answer every HTTP attempt of `operation` with an AWS error (before botocore's retry logic, so throttling
    is retried as in production); returns the list that counts the attempts."""
    attempts: list[int] = []
    body = (f"<Response><Errors><Error><Code>{code}</Code><Message>injected</Message></Error></Errors>"
            "<RequestID>test</RequestID></Response>").encode()

    class Raw:
        def stream(self, **_: Any) -> Any:
            yield body

    def respond(request: Any, **_: Any) -> AWSResponse:
        attempts.append(1)
        return AWSResponse(request.url, status, {}, Raw())

    client.meta.events.register(f"before-send.*.{operation}", respond)
    return attempts


# --- aws.alb_routes ------------------------------------------------------------------------------------------


async def test_alb_whose_subnets_all_route_to_the_igw_is_ok(aws: AwsClients, net: Network, make_ctx: MakeCtx) -> None:
    build_alb(aws, net)

    result = await alb_routes("web", make_ctx(load_balancers=["web"]))

    assert result.status is Status.ok
    assert [row["default_route"] for row in result.evidence["subnets"]] == [net.igw_id, net.igw_id]


async def test_alb_subnet_routed_through_nat_names_its_route_table(
    aws: AwsClients, net: Network, make_ctx: MakeCtx
) -> None:
    build_alb(aws, net)
    bad_subnet = net.public_subnets[1]
    route_through_nat(aws, net, bad_subnet)

    result = await alb_routes("web", make_ctx(load_balancers=["web"]))

    assert result.status is Status.fail and result.severity == "P1"
    assert result.resource == f"{net.private_route_table} ({bad_subnet})"
    rows = {row["subnet"]: row for row in result.evidence["subnets"]}
    assert rows[bad_subnet] | {"problem": ""} == {
        "subnet": bad_subnet, "az": "us-east-1b", "route_table": net.private_route_table, "main": False,
        "default_route": net.nat_id, "route_state": "active", "problem": "", "verdict": "fail",
    }
    assert rows[net.public_subnets[0]]["verdict"] == "ok"
    assert "asymmetric" in rows[bad_subnet]["problem"]
    assert f"Associate {bad_subnet} with {net.public_route_table}" in result.hint


async def test_alb_subnet_without_association_silently_uses_the_main_table(
    aws: AwsClients, net: Network, make_ctx: MakeCtx
) -> None:
    build_alb(aws, net)
    route_main_table_through_nat(aws, net)
    drop_association(aws, net.public_subnets[0])

    result = await alb_routes("web", make_ctx(load_balancers=["web"]))

    assert result.status is Status.fail
    assert net.main_route_table in result.resource
    row = next(r for r in result.evidence["subnets"] if r["subnet"] == net.public_subnets[0])
    assert row["main"] is True and row["default_route"] == net.nat_id
    assert "silently uses the main table" in result.hint


async def test_alb_with_no_internet_route_in_any_subnet_is_p0(
    aws: AwsClients, net: Network, make_ctx: MakeCtx
) -> None:
    lb = build_alb(aws, net)
    for subnet in net.public_subnets:
        drop_association(aws, subnet)  # the main table has only the local route

    result = await alb_routes(lb["LoadBalancerArn"], make_ctx(load_balancers=[lb["LoadBalancerArn"]]))

    assert result.status is Status.fail and result.severity == "P0"
    assert result.summary.startswith("All 2 subnets of web")
    assert {row["default_route"] for row in result.evidence["subnets"]} == {"none"}
    assert net.igw_id in result.hint


async def test_alb_route_to_a_detached_igw_is_a_blackhole(aws: AwsClients, net: Network, make_ctx: MakeCtx) -> None:
    build_alb(aws, net)
    aws.client("ec2", REGION).detach_internet_gateway(InternetGatewayId=net.igw_id, VpcId=net.vpc_id)

    result = await alb_routes("web", make_ctx(load_balancers=["web"]))

    assert result.status is Status.fail and result.severity == "P0"
    assert all("not attached" in row["problem"] for row in result.evidence["subnets"])


async def test_internal_alb_needs_no_internet_gateway(aws: AwsClients, net: Network, make_ctx: MakeCtx) -> None:
    build_alb(aws, net, name="internal", scheme="internal")  # private subnets: 0.0.0.0/0 → NAT, which is fine

    result = await alb_routes("internal", make_ctx(load_balancers=["internal"]))

    assert result.status is Status.ok
    assert {row["default_route"] for row in result.evidence["subnets"]} == {net.nat_id}


async def test_unknown_load_balancer_is_an_error_not_a_crash(aws: AwsClients, make_ctx: MakeCtx) -> None:
    result = await alb_routes("nope", make_ctx(load_balancers=["nope"]))

    assert result.status is Status.error
    assert "No load balancer nope" in result.summary


# --- aws.target_health ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("matcher", "accepted", "rejected"), [
    ("200", [200], [201, 299]),
    ("200,202", [200, 202], [201]),
    ("200-299", [200, 250, 299], [199, 300]),
    ("200, 300-302", [200, 301], [299, 303]),
])
def test_parse_matcher(matcher: str, accepted: list[int], rejected: list[int]) -> None:
    ranges = parse_matcher(matcher)

    assert all(matcher_accepts(ranges, code) for code in accepted)
    assert not any(matcher_accepts(ranges, code) for code in rejected)


def test_parse_matcher_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="not an HTTP code matcher"):
        parse_matcher("2xx")


async def test_app_answering_299_against_a_200_matcher_is_named(
    aws: AwsClients, net: Network, make_ctx: MakeCtx, monkeypatch: pytest.MonkeyPatch
) -> None:
    with health_server(299) as port:
        group = build_target_group(aws, net, matcher="200", targets=[("127.0.0.1", port)])
        targets_unhealthy(monkeypatch)  # what AWS reports for it: Target.ResponseCodeMismatch

        result = await target_health(TargetGroups("web-tg"), make_ctx(target_groups=["web-tg"]))

    assert result.status is Status.fail and result.severity == "P0"
    assert result.resource == group["TargetGroupArn"]
    assert "answers 299 on /health but the matcher of web-tg accepts only 200" in result.summary
    assert result.evidence["targets"][0]["probe"] == 299
    assert result.evidence["targets"][0]["reason"] == "Target.ResponseCodeMismatch"
    assert '"HttpCode": "200,299"' in result.hint and "answer 200 on /health" in result.hint


async def test_299_is_found_by_probing_even_before_aws_marks_targets_unhealthy(
    aws: AwsClients, net: Network, make_ctx: MakeCtx
) -> None:
    with health_server(299) as port:
        build_target_group(aws, net, matcher="200", targets=[("127.0.0.1", port)])

        result = await target_health(TargetGroups("web-tg"), make_ctx(target_groups=["web-tg"]))

    assert result.status is Status.fail and result.severity == "P1"
    assert "targets still healthy" in result.summary


@pytest.mark.parametrize(("status", "matcher"), [(200, "200"), (299, "200-299"), (299, "200,299")])
async def test_app_answer_within_the_matcher_is_ok(
    aws: AwsClients, net: Network, make_ctx: MakeCtx, status: int, matcher: str
) -> None:
    with health_server(status) as port:
        build_target_group(aws, net, matcher=matcher, targets=[("127.0.0.1", port)])

        result = await target_health(TargetGroups("web-tg"), make_ctx(target_groups=["web-tg"]))

    assert result.status is Status.ok, result.summary
    assert result.evidence["targets"][0]["probe"] == status


async def test_instance_targets_are_probed_at_their_private_ip(aws: AwsClients, make_ctx: MakeCtx) -> None:
    net = build_network(aws, cidr="127.0.0.0/16")
    instance = loopback_instance(aws, net, "127.0.10.10")
    with health_server(299, host="127.0.10.10") as port:
        build_target_group(aws, net, matcher="200-298", target_type="instance", targets=[(instance, port)])

        result = await target_health(TargetGroups("web-tg"), make_ctx(target_groups=["web-tg"]))

    assert result.status is Status.fail
    assert result.evidence["targets"][0] | {"az": None} == {
        "target": instance, "port": port, "az": None, "state": "healthy", "reason": None, "description": None,
        "probe": 299,
    }


async def test_one_timing_out_target_behind_the_listed_alb_is_p1(
    aws: AwsClients, net: Network, make_ctx: MakeCtx, monkeypatch: pytest.MonkeyPatch
) -> None:
    lb = build_alb(aws, net)
    group = build_target_group(aws, net, targets=[("10.0.10.5", 8080), ("10.0.11.5", 8080)], load_balancer=lb)
    targets_unhealthy(monkeypatch, reason="Target.Timeout", description="Request timed out", only={"10.0.11.5"})
    monkeypatch.setattr("checks.aws.elb.MAX_PROBED_TARGETS", 0)  # 10.0.x.x is not reachable from a test

    result = await target_health(TargetGroups("web", behind_load_balancer=True), make_ctx(load_balancers=["web"]))

    assert result.status is Status.fail and result.severity == "P1"
    assert result.resource == group["TargetGroupArn"]
    assert result.summary.startswith("1 of 2 targets of web-tg are unhealthy: Target.Timeout")
    assert "security group to port 8080" in result.hint


async def test_target_group_behind_alb_with_unreachable_targets_stays_ok(
    aws: AwsClients, net: Network, make_ctx: MakeCtx
) -> None:
    lb = build_alb(aws, net)
    build_target_group(aws, net, targets=[("127.0.0.1", 9)], load_balancer=lb)  # port 9: nothing listens

    result = await target_health(TargetGroups("web", behind_load_balancer=True), make_ctx(load_balancers=["web"]))

    assert result.status is Status.ok  # the bot not reaching a target is not a finding; AWS says healthy
    assert result.evidence["targets"][0]["probe"].startswith("unreachable")


async def test_targets_without_health_checks_are_not_unhealthy(
    aws: AwsClients, net: Network, make_ctx: MakeCtx, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_target_group(aws, net, targets=[("10.0.10.5", 8080)])
    targets_unhealthy(monkeypatch, state="unavailable", reason="Target.HealthCheckDisabled",
                      description="Health checks are disabled")
    monkeypatch.setattr("checks.aws.elb.MAX_PROBED_TARGETS", 0)

    result = await target_health(TargetGroups("web-tg"), make_ctx(target_groups=["web-tg"]))

    assert result.status is Status.ok, result.summary


async def test_target_group_without_targets_behind_a_load_balancer_is_p0(
    aws: AwsClients, net: Network, make_ctx: MakeCtx
) -> None:
    lb = build_alb(aws, net)
    build_target_group(aws, net, load_balancer=lb)

    result = await target_health(TargetGroups("web-tg"), make_ctx(target_groups=["web-tg"]))

    assert result.status is Status.fail and result.severity == "P0"
    assert "no registered targets" in result.summary


async def test_missing_describe_target_health_permission_names_the_action(
    aws: AwsClients, net: Network, make_ctx: MakeCtx
) -> None:
    build_target_group(aws, net, targets=[("127.0.0.1", 9)])
    inject_error(aws.client("elbv2", REGION), "DescribeTargetHealth", "AccessDenied", status=403)

    result = await target_health(TargetGroups("web-tg"), make_ctx(target_groups=["web-tg"]))

    assert result.status is Status.error
    assert "needs elasticloadbalancing:DescribeTargetHealth" in result.summary
    assert "Allow elasticloadbalancing:DescribeTargetHealth" in result.hint


# --- aws.elb_5xx ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("requests", "from_targets", "from_lb", "status", "severity"), [
    (1000, 10, 0, Status.ok, None),
    (1000, 40, 30, Status.fail, "P1"),
    (1000, 400, 200, Status.fail, "P0"),
    (0, 0, 80, Status.fail, "P0"),  # all 503 "no healthy target": not in RequestCount at all
    (6, 2, 0, Status.warn, "P2"),  # a ratio of six requests is noise
])
async def test_5xx_ratio_thresholds(
    aws: AwsClients, net: Network, make_ctx: MakeCtx, now: datetime,
    requests: int, from_targets: int, from_lb: int, status: Status, severity: str | None,
) -> None:
    lb = build_alb(aws, net)
    put_alb_traffic(aws, lb, at=now - timedelta(minutes=5), requests=requests, target_5xx=from_targets,
                    elb_5xx=from_lb)

    result = await elb_5xx("web", make_ctx(load_balancers=["web"]))

    assert (result.status, result.severity) == (status, severity), result.summary
    assert (result.evidence["target_5xx"], result.evidence["elb_5xx"]) == (from_targets, from_lb)
    assert result.resource == lb["LoadBalancerArn"]


async def test_5xx_older_than_the_window_are_not_counted(
    aws: AwsClients, net: Network, make_ctx: MakeCtx, now: datetime
) -> None:
    lb = build_alb(aws, net)
    put_alb_traffic(aws, lb, at=now - timedelta(minutes=40), requests=100, target_5xx=90)
    put_alb_traffic(aws, lb, at=now - timedelta(minutes=3), requests=500, target_5xx=1)

    result = await elb_5xx("web", make_ctx(load_balancers=["web"]))

    assert result.status is Status.ok
    assert (result.evidence["requests"], result.evidence["target_5xx"]) == (500, 1)


# --- aws.alarms ----------------------------------------------------------------------------------------------


async def test_alarms_in_alarm_under_the_prefixes_are_findings(aws: AwsClients, make_ctx: MakeCtx) -> None:
    firing_alarm(aws, "web-5xx", reason="Threshold Crossed: 1 datapoint [42.0] was greater than 5.0")
    firing_alarm(aws, "web-unhealthy-hosts", reason="Threshold Crossed: UnHealthyHostCount 2 > 0",
                 metric="UnHealthyHostCount")
    firing_alarm(aws, "web-latency", reason="back to normal", state="OK")
    firing_alarm(aws, "billing-spike", reason="someone else's problem")

    result = await alarms(REGION, make_ctx(alarm_prefixes=["web-", "web-5"]))

    assert result.status is Status.fail and result.severity == "P1"
    assert {row["alarm"] for row in result.evidence["alarms"]} == {"web-5xx", "web-unhealthy-hosts"}
    assert "web-5xx" in result.resource and "web-unhealthy-hosts" in result.resource
    row = next(r for r in result.evidence["alarms"] if r["alarm"] == "web-5xx")
    assert row["reason"].startswith("Threshold Crossed: 1 datapoint [42.0]")
    assert row["metric"] == "AWS/ApplicationELB/HTTPCode_Target_5XX_Count" and row["threshold"] == "Sum > 5"


async def test_no_alarm_in_alarm_is_ok(aws: AwsClients, make_ctx: MakeCtx) -> None:
    firing_alarm(aws, "web-5xx", reason="fine", state="OK")
    firing_alarm(aws, "other-5xx", reason="firing elsewhere")

    result = await alarms(REGION, make_ctx(alarm_prefixes=["web-"]))

    assert result.status is Status.ok and result.evidence["alarms"] == []


# --- the NACL evaluator (pure) -------------------------------------------------------------------------------

ANYWHERE = ipaddress.ip_network("0.0.0.0/0")


def entry(number: int, action: str, *, egress: bool = False, ports: tuple[int, int] | None = None,
          protocol: str = "6", cidr: str = "0.0.0.0/0") -> dict[str, Any]:
    found: dict[str, Any] = {"RuleNumber": number, "RuleAction": action, "Egress": egress, "Protocol": protocol,
                             "CidrBlock": cidr}
    if ports:
        found["PortRange"] = {"From": ports[0], "To": ports[1]}
    return found


def inbound_blocks(entries: list[dict[str, Any]], peer: str = "0.0.0.0/0") -> list[tuple[str, str, str | None]]:
    rules = rules_for(entries, egress=False)
    blocks = blocked_ranges(rules, protocol="6", low=1024, high=65535, peer=ipaddress.ip_network(peer))
    return [(b.ports, b.rule.label, b.shadows.label if b.shadows else None) for b in blocks]


def test_classic_trap_deny_90_shadows_allow_110() -> None:
    entries = [entry(90, "deny", ports=(32768, 65535)), entry(110, "allow", ports=(1024, 65535))]

    assert inbound_blocks(entries) == [("32768-65535", "90", "110")]
    rules = rules_for(entries, egress=False)
    assert decide(rules, protocol="6", port=1024, peer=ANYWHERE).label == "110"
    assert decide(rules, protocol="6", port=60999, peer=ANYWHERE).label == "90"


def test_rules_are_evaluated_by_number_not_by_listing_order() -> None:
    entries = [entry(110, "allow", ports=(1024, 65535)), entry(90, "deny", ports=(32768, 65535))]

    assert inbound_blocks(entries) == [("32768-65535", "90", "110")]


def test_allow_covering_part_of_the_range_leaves_the_rest_to_the_star_rule() -> None:
    assert inbound_blocks([entry(100, "allow", ports=(1024, 32767))]) == [("32768-65535", "*", None)]


def test_gaps_between_allows_are_computed_exactly() -> None:
    entries = [entry(100, "allow", ports=(1024, 5000)), entry(101, "allow", ports=(5002, 65000))]

    assert inbound_blocks(entries) == [("5001", "*", None), ("65001-65535", "*", None)]


def test_custom_nacl_with_no_entries_denies_everything_via_the_implicit_rule() -> None:
    assert inbound_blocks([]) == [("1024-65535", "*", None)]


def test_default_nacl_allows_everything() -> None:
    default = [entry(100, "allow", protocol="-1"), entry(32767, "deny", protocol="-1")]

    assert inbound_blocks(default) == []


def test_what_does_not_match_falls_through() -> None:
    entries = [
        entry(80, "deny", protocol="17", ports=(1024, 65535)),  # UDP: not our TCP replies
        entry(85, "deny", cidr="198.51.100.7/32", ports=(1024, 65535)),  # a blocklist entry, not "everyone"
        entry(90, "deny", egress=True, ports=(1024, 65535)),  # the other direction
        entry(95, "allow", protocol="-1", ports=(0, 0)),  # "all protocols" ignores the port range
    ]

    assert inbound_blocks(entries) == []
    assert inbound_blocks([entry(100, "allow", cidr="10.0.0.0/16", ports=(1024, 65535))],
                          peer="10.0.0.0/16") == []


def test_rule_order_yields_first_match_for_ipv6_entries_too() -> None:
    rules = rules_for([{"RuleNumber": 100, "RuleAction": "allow", "Egress": False, "Protocol": "-1",
                        "Ipv6CidrBlock": "::/0"}], egress=False)

    assert [r.label for r in rules] == ["100", "*", "*"]
    assert decide(rules, protocol="6", port=2000, peer=ipaddress.ip_network("::/0")).label == "100"
    assert decide(rules, protocol="6", port=2000, peer=ANYWHERE).label == "*"
    assert isinstance(rules[0], NaclRule)


# --- aws.nacl ------------------------------------------------------------------------------------------------


async def test_default_nacl_on_alb_subnets_is_ok(aws: AwsClients, net: Network, make_ctx: MakeCtx) -> None:
    build_alb(aws, net)

    result = await nacl(NaclTarget("web", load_balancer=True), make_ctx(load_balancers=["web"]))

    assert result.status is Status.ok
    assert {row["action"] for row in result.evidence["probes"]} == {"allow"}


async def test_sensible_custom_web_nacl_is_ok(aws: AwsClients, net: Network, make_ctx: MakeCtx) -> None:
    custom_nacl(aws, net, net.public_subnets, web_nacl_rules())

    result = await nacl(NaclTarget(net.public_subnets[0]), make_ctx(subnets=[net.public_subnets[0]]))

    assert result.status is Status.ok, result.summary


async def test_deny_90_before_allow_110_on_alb_subnets_names_the_acl_and_rule(
    aws: AwsClients, net: Network, make_ctx: MakeCtx
) -> None:
    build_alb(aws, net)
    trap = [Rule(90, "deny", egress=False, ports=(32768, 65535)), *web_nacl_rules()]
    acl_id = custom_nacl(aws, net, net.public_subnets, trap)

    result = await nacl(NaclTarget("web", load_balancer=True), make_ctx(load_balancers=["web"]))

    assert result.status is Status.fail and result.severity == "P1"
    assert result.resource == acl_id
    assert {(b["direction"], b["ports"], b["denied_by"], b["shadowed_allow"]) for b in result.evidence["blocked"]} == {
        ("inbound", "32768-65535", "90", "110")
    }
    probes = {(p["direction"], p["peer"].split()[0], p["port"]): p["rule"] for p in result.evidence["probes"]}
    assert probes[("inbound", "internet", 1024)] == "110"
    assert probes[("inbound", "internet", 60999)] == "90"
    assert probes[("outbound", "internet", 65535)] == "100"
    assert "rule 90 (deny tcp 32768-65535 from 0.0.0.0/0)" in result.hint and "renumber it above 110" in result.hint


async def test_outbound_gap_is_found_too(aws: AwsClients, net: Network, make_ctx: MakeCtx) -> None:
    rules = [Rule(100, "allow", egress=False, ports=None, protocol="-1"),
             Rule(100, "allow", egress=True, ports=(443, 443)), Rule(110, "allow", egress=True, ports=(1024, 32767))]
    acl_id = custom_nacl(aws, net, net.private_subnets[:1], rules)

    result = await nacl(NaclTarget(net.private_subnets[0]), make_ctx(subnets=[net.private_subnets[0]]))

    assert result.status is Status.fail and result.resource == acl_id
    assert {(b["direction"], b["ports"], b["denied_by"]) for b in result.evidence["blocked"]} == {
        ("outbound", "32768-65535", "*")
    }
    assert "no outbound rule allows TCP 32768-65535" in result.hint


async def test_isolated_subnet_allowing_only_vpc_replies_is_ok(
    aws: AwsClients, net: Network, make_ctx: MakeCtx
) -> None:
    subnet = net.private_subnets[1]
    drop_association(aws, subnet)  # main table: local route only, no way to the internet
    vpc_only = [Rule(100, "allow", egress=False, ports=None, protocol="-1", cidr=net.cidr),
                Rule(100, "allow", egress=True, ports=None, protocol="-1", cidr=net.cidr)]
    custom_nacl(aws, net, (subnet,), vpc_only)

    result = await nacl(NaclTarget(subnet), make_ctx(subnets=[subnet]))

    assert result.status is Status.ok, result.summary
    assert {p["peer"] for p in result.evidence["probes"]} == {f"VPC {net.cidr}"}


# --- aws.vpce_policy -----------------------------------------------------------------------------------------


async def test_source_vpce_policy_with_endpoint_on_the_subnets_route_table_is_ok(
    aws: AwsClients, net: Network, make_ctx: MakeCtx
) -> None:
    vpce = gateway_endpoint(aws, net, route_tables=(net.private_route_table,))
    role_with_policy(aws, "app", [source_vpce_statement(vpce)])

    result = await vpce_policy("app", make_ctx(roles=["app"], subnets=list(net.private_subnets)))

    assert result.status is Status.ok, result.summary
    assert {row["served_by"] for row in result.evidence["subnets"]} == {vpce}


async def test_route_table_missing_from_the_gateway_endpoint_is_named(
    aws: AwsClients, net: Network, make_ctx: MakeCtx
) -> None:
    vpce = gateway_endpoint(aws, net, route_tables=(net.public_route_table,))
    role_with_policy(aws, "app", [source_vpce_statement(vpce)])

    result = await vpce_policy("app", make_ctx(roles=["app"], subnets=[net.private_subnets[0]]))

    assert result.status is Status.fail and result.severity == "P1"
    assert result.resource == net.private_route_table
    assert f"Add {net.private_route_table} to {vpce}" in result.hint
    assert result.evidence["statements"][0]["condition"] == "StringEquals aws:SourceVpce"
    assert result.evidence["endpoints"][0]["route_tables"] == net.public_route_table


async def test_deny_unless_deleted_endpoint_in_a_managed_policy_names_the_endpoint(
    aws: AwsClients, net: Network, make_ctx: MakeCtx
) -> None:
    gone = "vpce-0123456789abcdef0"
    statement = source_vpce_statement(gone, operator="StringNotEquals", key="AWS:SOURCEVPCE")
    role_with_policy(aws, "app", [statement | {"Effect": "Deny"}], managed=True)

    result = await vpce_policy("app", make_ctx(roles=["app"], subnets=[net.private_subnets[0]]))

    assert result.status is Status.fail and result.resource == gone
    assert "managed policy app-policy, statement OnlyThroughEndpoint, requires" in result.summary
    assert "does not exist" in result.summary
    assert result.evidence["endpoints"] == [{"endpoint": gone, "exists": False, "type": None, "service": None,
                                             "vpc": None, "state": None, "route_tables": ""}]


async def test_role_without_endpoint_conditions_is_ok(aws: AwsClients, make_ctx: MakeCtx) -> None:
    role_with_policy(aws, "plain", [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}])

    result = await vpce_policy("plain", make_ctx(roles=["plain"]))

    assert result.status is Status.ok and result.evidence["policies"] == ["inline policy plain-inline"]


async def test_source_vpc_condition_needs_an_endpoint_on_the_route_table(
    aws: AwsClients, net: Network, make_ctx: MakeCtx
) -> None:
    role_with_policy(aws, "app", [source_vpce_statement(net.vpc_id, key="aws:SourceVpc")])
    ctx = make_ctx(roles=["app"], subnets=[net.private_subnets[0]])

    missing = await vpce_policy("app", ctx)
    vpce = gateway_endpoint(aws, net, route_tables=(net.private_route_table,))
    served = await vpce_policy("app", ctx)

    assert missing.status is Status.fail and missing.resource == net.private_route_table
    assert "only set on requests through a VPC endpoint" in missing.summary
    assert served.status is Status.ok and served.evidence["subnets"][0]["served_by"] == vpce


# --- aws.ssm_parameters --------------------------------------------------------------------------------------


async def test_existing_secure_parameter_is_ok_and_its_value_never_leaks(aws: AwsClients, make_ctx: MakeCtx) -> None:
    put_parameter(aws, "/web/db-password", "hunter2-very-secret")

    result = await ssm_parameters("/web/db-password", make_ctx(parameters=["/web/db-password"]))

    assert result.status is Status.ok
    assert result.evidence["type"] == "SecureString" and result.evidence["version"] == 1
    assert "hunter2" not in dump_json(result)


async def test_missing_parameter_fails(aws: AwsClients, make_ctx: MakeCtx) -> None:
    result = await ssm_parameters("/web/missing", make_ctx(parameters=["/web/missing"]))

    assert result.status is Status.fail and result.severity == "P1"
    assert result.resource == "/web/missing" and "aws ssm put-parameter --name /web/missing" in result.hint


async def test_denied_parameter_read_is_an_error_naming_ssm_get_parameter(aws: AwsClients, make_ctx: MakeCtx) -> None:
    with Stubber(aws.client("ssm", REGION)) as stub:
        stub.add_client_error("get_parameter", service_error_code="AccessDeniedException", http_status_code=400,
                              service_message="User is not authorized to perform: ssm:GetParameter")

        result = await ssm_parameters("/web/db", make_ctx(parameters=["/web/db"]))

    assert result.status is Status.error
    assert result.summary == "Access denied: the bot's role needs ssm:GetParameter"


async def test_denied_kms_decrypt_names_kms_not_ssm(aws: AwsClients, make_ctx: MakeCtx) -> None:
    with Stubber(aws.client("ssm", REGION)) as stub:
        stub.add_client_error("get_parameter", service_error_code="AccessDeniedException", http_status_code=400,
                              service_message="User is not authorized to perform: kms:Decrypt on resource key/1")

        result = await ssm_parameters("/web/db", make_ctx(parameters=["/web/db"]))

    assert result.status is Status.error and "kms:Decrypt" in result.summary


async def test_throttling_is_retried_a_bounded_number_of_times_then_an_error(
    aws: AwsClients, net: Network, make_ctx: MakeCtx
) -> None:
    build_alb(aws, net)
    attempts = inject_error(aws.client("elbv2", REGION), "DescribeLoadBalancers", "Throttling", status=400)
    started = time.monotonic()

    result = await alb_routes("web", make_ctx(load_balancers=["web"]))

    assert result.status is Status.error
    assert result.summary == "AWS kept throttling elasticloadbalancing:DescribeLoadBalancers after bounded retries"
    assert "rate-limiting" in result.hint
    # Retried (botocore's retries.max_attempts counts retries, so the fixture's 2 means up to 3 tries), bounded.
    assert 2 <= len(attempts) <= 3
    assert time.monotonic() - started < 10


# --- several checks together ---------------------------------------------------------------------------------


async def test_run_service_ranks_the_route_table_finding_first_and_names_it(
    aws: AwsClients, net: Network, now: datetime
) -> None:
    lb = build_alb(aws, net)
    route_through_nat(aws, net, net.public_subnets[1])
    put_alb_traffic(aws, lb, at=now - timedelta(minutes=2), requests=1000, target_5xx=0, elb_5xx=300)
    firing_alarm(aws, "web-5xx", reason="Threshold Crossed: 300 > 5")
    put_parameter(aws, "/web/db", "secret")
    spec = ServiceSpec(aws=AwsSpec(region=REGION, load_balancers=["web"], alarm_prefixes=["web-"],
                                   subnets=[net.private_subnets[0]], parameters=["/web/db"]))

    results = await run_service("web", spec, aws_factory=lambda: aws, now=now, deadline_s=30)

    by_check = {r.check: r for r in results if r.check.startswith("aws.")}
    routes = by_check["aws.alb_routes"]
    assert routes.status is Status.fail and net.private_route_table in routes.resource
    assert routes.target == "web"
    assert by_check["aws.elb_5xx"].status is Status.fail and by_check["aws.elb_5xx"].severity == "P1"
    assert by_check["aws.alarms"].status is Status.fail
    assert by_check["aws.nacl"].status is Status.ok
    assert by_check["aws.ssm_parameters"].status is Status.ok
    mine = [r.check for r in results if r.check in by_check]
    assert mine.index("aws.alb_routes") < mine.index("aws.elb_5xx")  # plan order: config before symptom
    assert json.dumps([dump(r) for r in results])  # everything a renderer gets is JSON-able
