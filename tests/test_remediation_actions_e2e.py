"""Every AWS fix action end to end through Slack: a P1 incident on a broken service, `/diagnose` offers the fix,
U1 previews and requests it, U2 approves, the change shows in moto (or the local Elastic Beanstalk server), and
the automatic re-diagnosis counts the check that offered the fix as fixed. The causes are the scenarios of
tests/test_fixes_aws.py, placed in the past (the bot diagnoses at the wall clock); `lambda.lift_zero_concurrency`
has its own, longer story in tests/test_remediation.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from moto.awslambda_simple.models import lambda_simple_backends
from moto.core import DEFAULT_ACCOUNT_ID

from bot.diagnosis.history import stored_diff
from bot.diagnosis.run import run_state
from bot.remediation import messages
from checks.aws.clients import AwsClients
from tests.aws_fake_apis import ENV, BeanstalkEnvironment, beanstalk_tail, query_api
from tests.aws_lambda_scenarios import (
    create_function,
    deploy_version,
    latest_update_behind_queue,
    point_alias,
    put_log_lines,
    wall_clock,
)
from tests.aws_scenarios import (
    REGION,
    build_alb,
    build_network,
    build_target_group,
    gateway_endpoint,
    health_server,
    role_with_policy,
    route_through_nat,
    source_vpce_statement,
)
from tests.incident_harness import buttons, incident_bot
from tests.remediation_flow import diagnosed_incident, fixed_run, request_fix

FAST = {"diagnose_update_interval_s": 0.1, "remediation_enabled": True}
Probe = Callable[[], bool]  # the fixed state, read back from AWS


@dataclass(frozen=True)
class Broken:
    aws: dict[str, Any]  # the service's `aws:` block
    check: str  # the check that finds the cause and offers the fix
    fixed: Probe


# --- the causes --------------------------------------------------------------------------------------------------


def backdate(function: str, qualifier: str, at: datetime) -> None:
    """moto stamps a version with the time it was made; AWS's history is older than this test. (moto serves Lambda
    from its "simple" backend when it runs no Docker.)"""
    version = lambda_simple_backends[DEFAULT_ACCOUNT_ID][REGION].get_function(function, qualifier)
    version.last_modified = at.strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


def errors_from(aws: AwsClients, function: str, start: datetime, error: str) -> None:
    put_log_lines(aws, f"/aws/lambda/{function}", [
        (start - timedelta(minutes=30), "INFO all good"),
        *[(start + timedelta(seconds=s), f"[ERROR] {error} {s}") for s in range(5)]])


def bad_alias_deploy(aws: AwsClients, _: ExitStack, __: pytest.MonkeyPatch) -> Broken:
    """api-handler's alias live went from v1 to v2 ten minutes ago; errors from 3 min after."""
    create_function(aws, "api-handler")
    deploy_version(aws, "api-handler", "build 41")
    deploy_version(aws, "api-handler", "build 42")
    point_alias(aws, "api-handler", "live", "2")
    now = wall_clock()
    for qualifier, ago in (("1", 120), ("2", 10), ("$LATEST", 10)):
        backdate("api-handler", qualifier, now - timedelta(minutes=ago))
    errors_from(aws, "api-handler", now - timedelta(minutes=7), "TypeError: bad payload")
    client = aws.client("lambda", REGION)
    return Broken({"lambda_functions": ["api-handler"]}, "aws.recent_changes",
                  lambda: client.get_alias(FunctionName="api-handler", Name="live")["FunctionVersion"] == "1")


def bad_latest_update(aws: AwsClients, _: ExitStack, __: pytest.MonkeyPatch) -> Broken:
    """worker v1 published two hours ago, new code on $LATEST ten minutes ago; the orders queue's mapping invokes
    $LATEST, errors from 8 min ago."""
    uuid, _ = latest_update_behind_queue(aws, "worker", "orders")
    client = aws.client("lambda", REGION)
    now = wall_clock()
    backdate("worker", "1", now - timedelta(minutes=120))
    backdate("worker", "$LATEST", now - timedelta(minutes=10))
    errors_from(aws, "worker", now - timedelta(minutes=8), "ZeroDivisionError: division by zero")
    return Broken({"lambda_functions": ["worker"]}, "aws.recent_changes",
                  lambda: client.get_event_source_mapping(UUID=uuid)["FunctionArn"].endswith(":worker:1"))


def subnet_through_nat(aws: AwsClients, _: ExitStack, __: pytest.MonkeyPatch) -> Broken:
    """One of the ALB's public subnets routed through the NAT: asymmetric routing."""
    net = build_network(aws)
    build_alb(aws, net)
    bad = net.public_subnets[1]
    route_through_nat(aws, net, bad)
    ec2 = aws.client("ec2", REGION)

    def fixed() -> bool:
        tables = ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [bad]}])
        return [t["RouteTableId"] for t in tables["RouteTables"]] == [net.public_route_table]

    return Broken({"load_balancers": ["web"]}, "aws.alb_routes", fixed)


def matcher_too_narrow(aws: AwsClients, stack: ExitStack, _: pytest.MonkeyPatch) -> Broken:
    """The app's health path answers 299; the target group accepts only 200."""
    port = stack.enter_context(health_server(299))
    group = build_target_group(aws, build_network(aws), matcher="200", targets=[("127.0.0.1", port)])
    elbv2 = aws.client("elbv2", REGION)
    return Broken({"target_groups": ["web-tg"]}, "aws.target_health", lambda: elbv2.describe_target_groups(
        TargetGroupArns=[group["TargetGroupArn"]])["TargetGroups"][0]["Matcher"] == {"HttpCode": "200,299"})


def endpoint_missing_a_table(aws: AwsClients, _: ExitStack, __: pytest.MonkeyPatch) -> Broken:
    """The role allows DynamoDB only through the gateway endpoint, which the private subnets' table lacks."""
    net = build_network(aws)
    vpce = gateway_endpoint(aws, net, route_tables=(net.public_route_table,))
    role_with_policy(aws, "app", [source_vpce_statement(vpce)])
    ec2 = aws.client("ec2", REGION)
    return Broken({"roles": ["app"], "subnets": [net.private_subnets[0]]}, "aws.vpce_policy",
                  lambda: net.private_route_table in ec2.describe_vpc_endpoints(
                      VpcEndpointIds=[vpce])["VpcEndpoints"][0]["RouteTableIds"])


def bad_beanstalk_deploy(_: AwsClients, stack: ExitStack, monkeypatch: pytest.MonkeyPatch) -> Broken:
    """orders-prod on the local Elastic Beanstalk server: v42 deployed 30 min ago, KeyErrors from 9 min later."""
    orders = BeanstalkEnvironment(wall_clock(), health="Severe")
    server = stack.enter_context(query_api(monkeypatch, "ELASTIC_BEANSTALK", {},
                                           files={"/tail": beanstalk_tail(orders.now, errors=True)}))
    server.handlers.update(orders.handlers(server.url + "/tail"))
    return Broken({"beanstalk_environments": [ENV]}, "aws.beanstalk_deploy", lambda: orders.version == "v41")


CAUSES = {  # action → (the API call its preview names, the cause it fixes)
    "lambda.rollback_alias": ("lambda:UpdateAlias(", bad_alias_deploy),
    "lambda.point_event_source": ("lambda:UpdateEventSourceMapping(", bad_latest_update),
    "vpc.reassociate_route_table": ("ec2:ReplaceRouteTableAssociation(", subnet_through_nat),
    "elb.add_matcher_code": ("elasticloadbalancing:ModifyTargetGroup(", matcher_too_narrow),
    "vpc.associate_gateway_endpoint": ("ec2:ModifyVpcEndpoint(", endpoint_missing_a_table),
    "beanstalk.deploy_version": ("elasticbeanstalk:UpdateEnvironment(", bad_beanstalk_deploy),
}


# --- the flow ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", CAUSES)
async def test_each_fix_runs_end_to_end_through_slack(action, aws, local_slack, redis_url, tmp_path, monkeypatch):
    with ExitStack() as stack:
        call, cause = CAUSES[action]
        broken = cause(aws, stack, monkeypatch)
        services = {"web": {"aws": {"region": REGION, **broken.aws}}}
        async with incident_bot(local_slack, redis_url, tmp_path, services=services, settings=FAST) as bot:
            inc, incident = await diagnosed_incident(bot, "web is failing P1 web")

            view, approval = await request_fix(bot, incident, user="U1")
            assert call in json.dumps(view["blocks"]) and not broken.fixed()
            request_id = buttons({"blocks": approval.blocks})[messages.APPROVE_ACTION]
            await bot.click(messages.APPROVE_ACTION, request_id, user="U2", channel=incident.channel)

            await bot.wait_for(broken.fixed, 10, "the change in AWS")
            await bot.wait_for(lambda: any(m.text.startswith("Fixed:") for m in local_slack.messages(incident.channel)),
                               10, "the result")
            line = await bot.wait_for(lambda: fixed_run(bot, inc), 30, "the re-diagnosis")
            assert line.startswith("since the last run") and " 0 fixed" not in line
            # The run's own record names the check that offered the fix as fixed. (Its parent message lists the
            # first changes only: under load, checks that ran out of time in the first run are fixed too, and
            # they can push this one past what the message shows; the thread has every check.)
            rerun = next(e for e in await bot.timeline(inc, "diagnosis") if e.data.get("since_last"))
            diff = stored_diff(await run_state(bot.rt, rerun.data["run_id"]))
            assert broken.check in {change.check for change in diff.fixed}, line
            parent = next(m for m in local_slack.messages(incident.channel) if m.ts == rerun.data["parent_ts"])
            assert line in posted_text(parent) and "• fixed: " in posted_text(parent)


def posted_text(message: Any) -> str:
    """A message's blocks as people read them (the zero-width spaces that keep ids inert out)."""
    return json.dumps(message.blocks, ensure_ascii=False).replace("\u200b", "")
