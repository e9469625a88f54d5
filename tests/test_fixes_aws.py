"""The AWS fix actions against moto: the check that finds the cause offers the fix, the preview shows the state it
saw, the fix changes moto's state, the check passes again, and the undo restores the exact previous state.
A state that moved between preview and fix is refused, never overwritten."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from checks.aws.beanstalk import beanstalk_deploy
from checks.aws.changes import parse_aws_time, recent_changes
from checks.aws.clients import AwsClients
from checks.aws.elb import alb_routes, target_health
from checks.aws.endpoints import vpce_policy
from checks.aws.fixes import fix_actions
from checks.aws.fixes.common import label
from checks.aws.fixes.lambda_event_source import offers_for_latest
from checks.aws.fixes.lambda_rollback import offers_for_version
from checks.fixes import FixChanged, FixOffer, FixPlan, FixRefused, FixResult
from checks.model import Status
from checks.registry import CheckContext
from checks.runner import make_http_client
from checks.services import AwsSpec, ServiceSpec
from checks.targets import TargetGroups
from tests.aws_fake_apis import ENV, BeanstalkEnvironment, FakeAwsServer, beanstalk_tail, query_api
from tests.aws_lambda_scenarios import (
    create_function,
    deploy_version,
    latest_update_behind_queue,
    point_alias,
    put_log_lines,
    sqs_queue,
    wall_clock,
)
from tests.aws_scenarios import (
    REGION,
    Network,
    build_alb,
    build_network,
    build_target_group,
    drop_association,
    gateway_endpoint,
    health_server,
    role_with_policy,
    route_main_table_through_nat,
    route_through_nat,
    source_vpce_statement,
)

MakeCtx = Callable[..., CheckContext]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client() as client:
        yield client


@pytest.fixture
def make_ctx(aws: AwsClients, http: httpx.AsyncClient) -> MakeCtx:
    def make(now: datetime | None = None, **spec: Any) -> CheckContext:
        # A diagnosis run's view: its memo must not leak into the fix's reads, or the re-run's.
        return CheckContext(service_name="web", service=ServiceSpec(aws=AwsSpec(region=REGION, **spec)),
                            now=now or datetime.now(UTC), http=http, aws=aws.scoped())

    return make


@pytest.fixture
def net(aws: AwsClients) -> Network:
    return build_network(aws)


def reaches(plan: FixPlan, result: FixResult) -> bool:
    """The preview's "after" is what AWS really shows after the fix (a retry relies on it to recognise its own
    change)."""
    return all(result.after.get(key) == value for key, value in plan.after.items())


def refuse(client: Any, operation: str, code: str) -> None:
    """Answer `operation` on `client` with AWS error `code` before the request is sent, so moto never sees it."""
    def answer(**_: Any) -> tuple[Any, dict[str, Any]]:
        return (type("Http", (), {"status_code": 403})(),
                {"Error": {"Code": code, "Message": "injected"}, "ResponseMetadata": {"HTTPStatusCode": 403}})

    client.meta.events.register(f"before-call.*.{operation}", answer)


async def plan_and_apply(aws: AwsClients, offer: FixOffer) -> tuple[FixPlan, FixResult]:
    action = fix_actions()[offer.action]
    plan = await action.plan(aws, offer.params)
    return plan, await action.apply(aws, plan)


# --- lambda.rollback_alias -------------------------------------------------------------------------------------


def bad_deploy(aws: AwsClients) -> datetime:
    """api-handler v1 (build 41) and v2 (build 42) published, alias live on v2, errors from 3 min after v2."""
    create_function(aws, "api-handler")
    deploy_version(aws, "api-handler", "build 41")
    v2 = deploy_version(aws, "api-handler", "build 42")
    point_alias(aws, "api-handler", "live", v2["Version"])
    deployed_at = parse_aws_time(v2["LastModified"])
    put_log_lines(aws, "/aws/lambda/api-handler", [
        (deployed_at - timedelta(minutes=30), "INFO all good"),
        *[(deployed_at + timedelta(minutes=3, seconds=s), f"[ERROR] TypeError: bad payload {s}") for s in range(5)],
    ])
    return deployed_at


async def test_bad_lambda_deploy_is_rolled_back_and_the_undo_puts_it_back(aws: AwsClients, make_ctx: MakeCtx) -> None:
    deployed_at = bad_deploy(aws)
    diagnose = lambda: recent_changes(REGION, make_ctx(deployed_at + timedelta(minutes=10),  # noqa: E731
                                                       lambda_functions=["api-handler"]))

    found = await diagnose()

    assert found.status is Status.fail and found.summary.startswith("Errors started 3 min after deploy of api-handler v2")
    params = {"region": REGION, "function": "api-handler", "alias": "live", "version": "1", "from_version": "2"}
    assert found.fixes == [FixOffer("lambda.rollback_alias", "Roll back api-handler to v1", params,
                                    reverse_label="Put api-handler back on v2")]

    plan, result = await plan_and_apply(aws, found.fixes[0])

    assert plan.calls == ["lambda:UpdateAlias(FunctionName=api-handler, Name=live, FunctionVersion=1)"]
    assert (plan.before["FunctionVersion"], plan.after["FunctionVersion"]) == ("2", "1")
    assert result.ok and result.message == "Alias live of api-handler now runs v1 (was v2)."
    assert reaches(plan, result)
    assert aws.client("lambda", REGION).get_alias(FunctionName="api-handler", Name="live")["FunctionVersion"] == "1"
    again = await diagnose()
    assert again.status is Status.ok and again.fixes == []
    assert again.summary.endswith("rolled back since: no alias of api-handler runs v2 any more (live runs v1).")

    assert result.reverse == FixOffer("lambda.rollback_alias", "Put api-handler back on v2",
                                      {**params, "version": "2", "from_version": "1"},
                                      reverse_label="Roll back api-handler to v1")
    _, undone = await plan_and_apply(aws, result.reverse)
    assert undone.ok and undone.after["FunctionVersion"] == "2"
    assert (await diagnose()).status is Status.fail


async def test_rollback_refuses_when_someone_deployed_after_the_preview(aws: AwsClients, make_ctx: MakeCtx) -> None:
    deployed_at = bad_deploy(aws)
    found = await recent_changes(REGION, make_ctx(deployed_at + timedelta(minutes=10), lambda_functions=["api-handler"]))
    action = fix_actions()["lambda.rollback_alias"]
    plan = await action.plan(aws, found.fixes[0].params)
    v3 = deploy_version(aws, "api-handler", "build 43, the real fix")
    point_alias(aws, "api-handler", "live", v3["Version"])

    with pytest.raises(FixRefused, match=r"state changed since the preview \(FunctionVersion 2 → 3\)"):
        await action.apply(aws, plan)

    assert aws.client("lambda", REGION).get_alias(FunctionName="api-handler", Name="live")["FunctionVersion"] == "3"
    with pytest.raises(FixRefused, match="now runs v3, not v2 as the diagnosis saw"):
        await action.plan(aws, found.fixes[0].params)


async def test_latest_only_function_gets_no_fake_rollback(aws: AwsClients, make_ctx: MakeCtx) -> None:
    create_function(aws, "worker")
    client = aws.client("lambda", REGION)
    client.create_alias(FunctionName="worker", Name="live", FunctionVersion="$LATEST")
    updated = parse_aws_time(client.get_function_configuration(FunctionName="worker")["LastModified"])
    put_log_lines(aws, "/aws/lambda/worker", [(updated + timedelta(minutes=2), "[ERROR] KeyError: 'id'")])

    found = await recent_changes(REGION, make_ctx(updated + timedelta(minutes=5), lambda_functions=["worker"]))

    assert found.status is Status.fail and "$LATEST" in found.summary
    assert found.fixes == [] and "keep no history to roll back to" in found.hint
    asked = {"region": REGION, "function": "worker", "alias": "live", "version": "$LATEST", "from_version": "$LATEST"}
    with pytest.raises(FixRefused, match=r"runs \$LATEST, which is updated in place and keeps no earlier code"):
        await fix_actions()["lambda.rollback_alias"].plan(aws, asked)


async def test_rollback_to_a_deleted_version_or_a_missing_alias_is_refused_in_a_sentence(aws: AwsClients) -> None:
    create_function(aws, "api-handler")
    deploy_version(aws, "api-handler", "build 41")
    point_alias(aws, "api-handler", "live", "1")
    action = fix_actions()["lambda.rollback_alias"]
    params = {"region": REGION, "function": "api-handler", "alias": "live", "version": "0", "from_version": "1"}

    with pytest.raises(FixRefused, match="^Version 0 of api-handler no longer exists"):
        await action.plan(aws, params)
    with pytest.raises(FixRefused, match="^api-handler has no alias canary"):
        await action.plan(aws, {**params, "alias": "canary"})
    with pytest.raises(FixRefused, match="^Missing parameters: alias, from_version.$"):
        await action.plan(aws, {"region": REGION, "function": "api-handler", "version": "1"})


def test_each_alias_on_the_suspect_version_gets_its_own_rollback_and_a_first_version_none() -> None:
    versions = [{"Version": v} for v in ("$LATEST", "40", "41", "42")]
    aliases = [{"Name": "live", "FunctionVersion": "42"}, {"Name": "canary", "FunctionVersion": "42"},
               {"Name": "old", "FunctionVersion": "40"}]

    offers = offers_for_version(REGION, "api-handler", "42", versions, aliases)

    assert [(o.label, o.params["alias"], o.params["version"]) for o in offers] == [
        ("Roll back api-handler live to v41", "live", "41"), ("Roll back api-handler canary to v41", "canary", "41")]
    assert offers_for_version(REGION, "api-handler", "40", versions, aliases) == []
    assert offers_for_version(REGION, "api-handler", "41", versions, aliases) == []  # no alias runs v41


# --- lambda.point_event_source ---------------------------------------------------------------------------------


def bad_latest_update(aws: AwsClients) -> tuple[datetime, str, str]:
    """worker v1 (build 41) published, then new code on $LATEST only; the orders queue's mapping invokes the
    unqualified function, and errors begin 2 min after the update. Returns (update time, mapping UUID, queue ARN)."""
    uuid, queue = latest_update_behind_queue(aws, "worker", "orders")
    updated = wall_clock() + timedelta(seconds=5)
    stamp_latest(aws.client("lambda", REGION), updated)
    put_log_lines(aws, "/aws/lambda/worker", [
        (updated - timedelta(minutes=30), "INFO all good"),
        *[(updated + timedelta(minutes=2, seconds=s), f"[ERROR] ZeroDivisionError: division by zero {s}")
          for s in range(5)],
    ])
    return updated, uuid, queue


def stamp_latest(client: Any, at: datetime) -> None:
    """AWS stamps $LATEST's LastModified on a code update; moto keeps its creation time, so set it in the answer."""
    def stamp(parsed: dict[str, Any], **_: Any) -> None:
        for version in parsed.get("Versions", []):
            if version.get("Version") == "$LATEST":
                version["LastModified"] = at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"

    client.meta.events.register("after-call.lambda.ListVersionsByFunction", stamp)


def mapping_arn(aws: AwsClients, uuid: str) -> str:
    return aws.client("lambda", REGION).get_event_source_mapping(UUID=uuid)["FunctionArn"]


async def test_queue_on_latest_is_pointed_at_the_last_version_and_the_undo_points_it_back(
    aws: AwsClients, make_ctx: MakeCtx
) -> None:
    updated, uuid, queue = bad_latest_update(aws)
    unqualified = mapping_arn(aws, uuid)
    diagnose = lambda: recent_changes(REGION, make_ctx(updated + timedelta(minutes=10),  # noqa: E731
                                                       lambda_functions=["worker"]))

    found = await diagnose()

    assert found.status is Status.fail and "$LATEST" in found.summary
    assert "at v1, the last published version" in found.hint
    params = {"region": REGION, "function": "worker", "uuid": uuid, "source": queue, "version": "1",
              "from_version": "$LATEST"}
    assert found.fixes == [FixOffer("lambda.point_event_source", "Point queue orders at worker v1", params,
                                    reverse_label="Point queue orders back at worker $LATEST")]

    plan, result = await plan_and_apply(aws, found.fixes[0])

    assert plan.calls == [f"lambda:UpdateEventSourceMapping(UUID={uuid}, FunctionName={unqualified}:1)"]
    assert (plan.before["FunctionArn"], plan.after["FunctionArn"]) == (unqualified, f"{unqualified}:1")
    assert result.ok and result.message == "Queue orders now invokes worker v1 (was $LATEST)."
    assert reaches(plan, result) and mapping_arn(aws, uuid) == f"{unqualified}:1"
    again = await diagnose()
    assert again.status is Status.ok and again.fixes == []
    assert again.summary.endswith("rolled back since: no event source mapping invokes $LATEST any more "
                                  "(queue orders invokes worker v1).")

    assert result.reverse == FixOffer("lambda.point_event_source", "Point queue orders back at worker $LATEST",
                                      {**params, "version": "$LATEST", "from_version": "1"},
                                      reverse_label="Point queue orders at worker v1")
    undo_plan, undone = await plan_and_apply(aws, result.reverse)
    assert undo_plan.calls == [f"lambda:UpdateEventSourceMapping(UUID={uuid}, FunctionName={unqualified})"]
    assert undone.ok and mapping_arn(aws, uuid) == unqualified
    assert (await diagnose()).status is Status.fail


async def test_pointing_the_event_source_refuses_when_the_mapping_moved_after_the_preview(
    aws: AwsClients, make_ctx: MakeCtx
) -> None:
    updated, uuid, _ = bad_latest_update(aws)
    found = await recent_changes(REGION, make_ctx(updated + timedelta(minutes=10), lambda_functions=["worker"]))
    action = fix_actions()["lambda.point_event_source"]
    plan = await action.plan(aws, found.fixes[0].params)
    v2 = deploy_version(aws, "worker", "build 43, the real fix")
    client = aws.client("lambda", REGION)
    client.update_event_source_mapping(UUID=uuid, FunctionName=v2["FunctionArn"])

    with pytest.raises(FixChanged, match=r"state changed since the preview \(FunctionArn .*:function:worker → "
                                         r".*:function:worker:2\)") as moved:
        await action.apply(aws, plan)

    assert not moved.value.reached(plan.after)
    assert mapping_arn(aws, uuid) == v2["FunctionArn"]
    with pytest.raises(FixRefused, match=r"^Queue orders now invokes worker v2, not \$LATEST as the diagnosis saw"):
        await action.plan(aws, found.fixes[0].params)


async def test_latest_only_function_without_versions_gets_no_event_source_fix(aws: AwsClients,
                                                                                make_ctx: MakeCtx) -> None:
    create_function(aws, "worker")
    client = aws.client("lambda", REGION)
    _, queue = sqs_queue(aws, "orders")
    uuid = client.create_event_source_mapping(EventSourceArn=queue, FunctionName="worker")["UUID"]
    updated = parse_aws_time(client.get_function_configuration(FunctionName="worker")["LastModified"])
    put_log_lines(aws, "/aws/lambda/worker", [(updated + timedelta(minutes=2), "[ERROR] KeyError: 'id'")])

    found = await recent_changes(REGION, make_ctx(updated + timedelta(minutes=5), lambda_functions=["worker"]))

    assert found.status is Status.fail and found.fixes == []
    assert "keep no history to roll back to: publish versions" in found.hint
    asked = {"region": REGION, "function": "worker", "uuid": uuid, "source": queue, "version": "$LATEST",
             "from_version": "$LATEST"}
    with pytest.raises(FixRefused, match=r"keeps no earlier code: there is no version to point the event source at"):
        await fix_actions()["lambda.point_event_source"].plan(aws, asked)
    with pytest.raises(FixRefused, match="^Version 1 of worker no longer exists"):
        await fix_actions()["lambda.point_event_source"].plan(aws, {**asked, "version": "1"})
    with pytest.raises(FixRefused, match="^Event source mapping 0{8}-.* of worker no longer exists"):
        await fix_actions()["lambda.point_event_source"].plan(aws, {**asked, "uuid": "00000000-0000-0000-0000-000000000000", "version": "1"})


def test_event_source_offers_go_to_the_newest_version_and_name_the_source() -> None:
    fn = "arn:aws:lambda:us-east-1:123456789012:function:api-handler"
    versions = [{"Version": v} for v in ("$LATEST", "40", "41")]
    mappings = [
        {"UUID": "a", "FunctionArn": fn, "EventSourceArn": "arn:aws:kinesis:us-east-1:123456789012:stream/clicks"},
        {"UUID": "b", "FunctionArn": fn,
         "EventSourceArn": "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000"},
        {"UUID": "c", "FunctionArn": f"{fn}:live", "EventSourceArn": "arn:aws:sqs:us-east-1:123456789012:jobs"},
    ]

    offers = offers_for_latest(REGION, "api-handler", versions, mappings)

    assert [(o.label, o.params["uuid"], o.params["version"]) for o in offers] == [
        ("Point stream clicks at api-handler v41", "a", "41"),
        ("Point table orders's stream at api-handler v41", "b", "41")]
    assert offers_for_latest(REGION, "api-handler", [{"Version": "$LATEST"}], mappings) == []


# --- vpc.reassociate_route_table -------------------------------------------------------------------------------


async def test_subnet_routed_through_nat_is_moved_back_to_its_siblings_table(
    aws: AwsClients, net: Network, make_ctx: MakeCtx
) -> None:
    build_alb(aws, net)
    bad = net.public_subnets[1]
    route_through_nat(aws, net, bad)

    found = await alb_routes("web", make_ctx(load_balancers=["web"]))

    assert found.status is Status.fail
    assert [f.label for f in found.fixes] == [f"Move {bad} to {net.public_route_table}"]
    plan, result = await plan_and_apply(aws, found.fixes[0])
    assert plan.calls == [f"ec2:ReplaceRouteTableAssociation(AssociationId={plan.before['association']}, "
                          f"RouteTableId={net.public_route_table})"]
    assert (plan.before["route_table"], plan.before["default_route"]) == (net.private_route_table, net.nat_id)
    assert (plan.after["route_table"], plan.after["default_route"]) == (net.public_route_table, net.igw_id)
    assert result.ok and result.after["route_table"] == net.public_route_table and reaches(plan, result)
    assert "association" not in plan.after  # AWS picks the new association's id
    assert (await alb_routes("web", make_ctx(load_balancers=["web"]))).status is Status.ok

    assert result.reverse is not None and result.reverse.label == found.fixes[0].reverse_label
    assert result.reverse.label == f"Move {bad} to {net.private_route_table}"
    assert result.reverse.reverse_label == found.fixes[0].label
    _, undone = await plan_and_apply(aws, result.reverse)
    assert undone.ok and undone.after["route_table"] == net.private_route_table
    assert (await alb_routes("web", make_ctx(load_balancers=["web"]))).status is Status.fail


async def test_subnet_on_the_main_table_gets_an_association_and_the_undo_removes_it(
    aws: AwsClients, net: Network, make_ctx: MakeCtx
) -> None:
    build_alb(aws, net)
    route_main_table_through_nat(aws, net)
    bad = net.public_subnets[0]
    drop_association(aws, bad)

    found = await alb_routes("web", make_ctx(load_balancers=["web"]))
    plan, result = await plan_and_apply(aws, found.fixes[0])

    assert plan.calls == [f"ec2:AssociateRouteTable(SubnetId={bad}, RouteTableId={net.public_route_table})"]
    assert plan.before["association"] == "none (main table)"
    assert result.ok and reaches(plan, result)
    assert (await alb_routes("web", make_ctx(load_balancers=["web"]))).status is Status.ok
    assert result.reverse is not None and result.reverse.params["implicit"] == "true"
    undo = fix_actions()["vpc.reassociate_route_table"]
    undo_plan = await undo.plan(aws, result.reverse.params)
    assert undo_plan.calls == [f"ec2:DisassociateRouteTable(AssociationId={result.after['association']})"]
    undone = await undo.apply(aws, undo_plan)
    assert undone.ok and undone.after["association"] == "none (main table)" and reaches(undo_plan, undone)
    assert undone.after["route_table"] == net.main_route_table


async def test_reassociation_refuses_when_the_subnet_moved_after_the_preview(
    aws: AwsClients, net: Network, make_ctx: MakeCtx
) -> None:
    build_alb(aws, net)
    bad = net.public_subnets[1]
    route_through_nat(aws, net, bad)
    found = await alb_routes("web", make_ctx(load_balancers=["web"]))
    action = fix_actions()["vpc.reassociate_route_table"]
    plan = await action.plan(aws, found.fixes[0].params)
    drop_association(aws, bad)  # someone else's change: the subnet now uses the main table

    with pytest.raises(FixRefused, match="state changed since the preview"):
        await action.apply(aws, plan)

    with pytest.raises(FixRefused, match=f"now uses {net.main_route_table}, not {net.private_route_table}"):
        await action.plan(aws, found.fixes[0].params)


# --- elb.add_matcher_code --------------------------------------------------------------------------------------


async def test_matcher_gets_the_code_the_health_path_answers_and_the_undo_restores_it(
    aws: AwsClients, net: Network, make_ctx: MakeCtx
) -> None:
    with health_server(299) as port:
        group = build_target_group(aws, net, matcher="200", targets=[("127.0.0.1", port)])
        diagnose = lambda: target_health(TargetGroups("web-tg"), make_ctx(target_groups=["web-tg"]))  # noqa: E731

        found = await diagnose()

        assert found.status is Status.fail
        arn = group["TargetGroupArn"]
        assert found.fixes == [FixOffer("elb.add_matcher_code", "Accept 299 in web-tg health checks",
                                        {"region": REGION, "target_group": arn, "from_matcher": "200",
                                         "matcher": "200,299"},
                                        reverse_label="Restore web-tg matcher to 200")]
        plan, result = await plan_and_apply(aws, found.fixes[0])
        assert plan.calls == [f'elasticloadbalancing:ModifyTargetGroup(TargetGroupArn={arn}, '
                              'Matcher={"HttpCode": "200,299"})']
        assert (plan.before["Matcher.HttpCode"], plan.after["Matcher.HttpCode"]) == ("200", "200,299")
        assert result.ok and reaches(plan, result)
        described = aws.client("elbv2", REGION).describe_target_groups(TargetGroupArns=[arn])["TargetGroups"][0]
        assert described["Matcher"] == {"HttpCode": "200,299"}
        assert (await diagnose()).status is Status.ok

        assert result.reverse is not None and result.reverse.label == "Restore web-tg matcher to 200"
        assert result.reverse.reverse_label == found.fixes[0].label
        _, undone = await plan_and_apply(aws, result.reverse)
        assert undone.ok and undone.after["Matcher.HttpCode"] == "200"
        assert (await diagnose()).status is Status.fail


async def test_a_health_path_answering_5xx_is_not_papered_over(
    aws: AwsClients, net: Network, make_ctx: MakeCtx
) -> None:
    with health_server(503) as port:
        build_target_group(aws, net, matcher="200", targets=[("127.0.0.1", port)])

        found = await target_health(TargetGroups("web-tg"), make_ctx(target_groups=["web-tg"]))

    assert found.status is Status.fail and "answers 503" in found.summary
    assert found.fixes == []


async def test_matcher_change_refuses_when_someone_changed_it_after_the_preview(
    aws: AwsClients, net: Network, make_ctx: MakeCtx
) -> None:
    with health_server(299) as port:
        group = build_target_group(aws, net, matcher="200", targets=[("127.0.0.1", port)])
        found = await target_health(TargetGroups("web-tg"), make_ctx(target_groups=["web-tg"]))
    action = fix_actions()["elb.add_matcher_code"]
    plan = await action.plan(aws, found.fixes[0].params)
    aws.client("elbv2", REGION).modify_target_group(TargetGroupArn=group["TargetGroupArn"],
                                                    Matcher={"HttpCode": "200-299"})

    with pytest.raises(FixRefused, match=r"Matcher.HttpCode 200 → 200-299"):
        await action.apply(aws, plan)


async def test_an_aws_error_while_fixing_is_one_sentence_and_changes_nothing(
    aws: AwsClients, net: Network, make_ctx: MakeCtx
) -> None:
    with health_server(299) as port:
        group = build_target_group(aws, net, matcher="200", targets=[("127.0.0.1", port)])
        found = await target_health(TargetGroups("web-tg"), make_ctx(target_groups=["web-tg"]))
    action = fix_actions()["elb.add_matcher_code"]
    plan = await action.plan(aws, found.fixes[0].params)
    refuse(aws.client("elbv2", REGION), "ModifyTargetGroup", "AccessDenied")

    result = await action.apply(aws, plan)

    assert (result.ok, result.message, result.reverse) == (
        False, "Access denied: the bot's role needs elasticloadbalancing:ModifyTargetGroup.", None)
    described = aws.client("elbv2", REGION).describe_target_groups(TargetGroupArns=[group["TargetGroupArn"]])
    assert described["TargetGroups"][0]["Matcher"] == {"HttpCode": "200"}
    refuse(aws.client("elbv2", REGION), "DescribeTargetGroups", "AccessDenied")
    with pytest.raises(FixRefused, match="^Access denied: the bot's role needs "
                                         "elasticloadbalancing:DescribeTargetGroups.$"):
        await action.plan(aws, found.fixes[0].params)


# --- vpc.associate_gateway_endpoint ----------------------------------------------------------------------------


async def test_route_table_is_put_on_the_gateway_endpoint_and_the_undo_takes_it_off(
    aws: AwsClients, net: Network, make_ctx: MakeCtx
) -> None:
    vpce = gateway_endpoint(aws, net, route_tables=(net.public_route_table,))
    role_with_policy(aws, "app", [source_vpce_statement(vpce)])
    diagnose = lambda: vpce_policy("app", make_ctx(roles=["app"], subnets=[net.private_subnets[0]]))  # noqa: E731

    found = await diagnose()

    rtb = net.private_route_table
    assert found.status is Status.fail
    assert found.fixes == [FixOffer("vpc.associate_gateway_endpoint", f"Add {rtb} to {vpce}",
                                    {"region": REGION, "endpoint": vpce, "route_table": rtb},
                                    reverse_label=f"Remove {rtb} from {vpce}")]
    plan, result = await plan_and_apply(aws, found.fixes[0])
    assert plan.calls == [f"ec2:ModifyVpcEndpoint(VpcEndpointId={vpce}, AddRouteTableIds=['{rtb}'])"]
    assert plan.before["RouteTableIds"] == net.public_route_table
    assert plan.after["RouteTableIds"] == ", ".join(sorted([net.public_route_table, rtb]))
    assert result.ok and reaches(plan, result)
    tables = aws.client("ec2", REGION).describe_vpc_endpoints(VpcEndpointIds=[vpce])["VpcEndpoints"][0]["RouteTableIds"]
    assert sorted(tables) == sorted([net.public_route_table, rtb])
    assert (await diagnose()).status is Status.ok

    assert result.reverse == FixOffer("vpc.disassociate_gateway_endpoint", f"Remove {rtb} from {vpce}",
                                      {"region": REGION, "endpoint": vpce, "route_table": rtb},
                                      reverse_label=f"Add {rtb} to {vpce}")
    undo_plan, undone = await plan_and_apply(aws, result.reverse)
    assert undo_plan.calls == [f"ec2:ModifyVpcEndpoint(VpcEndpointId={vpce}, RemoveRouteTableIds=['{rtb}'])"]
    assert undone.ok and undone.after["RouteTableIds"] == net.public_route_table
    assert (await diagnose()).status is Status.fail


async def test_endpoint_association_refuses_when_the_endpoint_changed_after_the_preview(
    aws: AwsClients, net: Network, make_ctx: MakeCtx
) -> None:
    vpce = gateway_endpoint(aws, net, route_tables=(net.public_route_table,))
    role_with_policy(aws, "app", [source_vpce_statement(vpce)])
    found = await vpce_policy("app", make_ctx(roles=["app"], subnets=[net.private_subnets[0]]))
    action = fix_actions()["vpc.associate_gateway_endpoint"]
    plan = await action.plan(aws, found.fixes[0].params)
    aws.client("ec2", REGION).modify_vpc_endpoint(VpcEndpointId=vpce, RemoveRouteTableIds=[net.public_route_table])

    with pytest.raises(FixRefused, match="state changed since the preview"):
        await action.apply(aws, plan)

    assert aws.client("ec2", REGION).describe_vpc_endpoints(VpcEndpointIds=[vpce])["VpcEndpoints"][0].get(
        "RouteTableIds", []) == []


async def test_endpoint_actions_refuse_what_does_not_apply(aws: AwsClients, net: Network) -> None:
    vpce = gateway_endpoint(aws, net, route_tables=(net.public_route_table,))
    other = build_network(aws, cidr="10.1.0.0/16")
    params = {"region": REGION, "endpoint": vpce}
    add, remove = fix_actions()["vpc.associate_gateway_endpoint"], fix_actions()["vpc.disassociate_gateway_endpoint"]

    with pytest.raises(FixRefused, match=f"{net.public_route_table} is already on {vpce}"):
        await add.plan(aws, {**params, "route_table": net.public_route_table})
    with pytest.raises(FixRefused, match=f"{net.private_route_table} is not on {vpce}"):
        await remove.plan(aws, {**params, "route_table": net.private_route_table})
    with pytest.raises(FixRefused, match=f"not a route table of {net.vpc_id}"):
        await add.plan(aws, {**params, "route_table": other.private_route_table})
    with pytest.raises(FixRefused, match="InvalidVpcEndpointId.NotFound"):
        await add.plan(aws, {**params, "endpoint": "vpce-0123456789abcdef0", "route_table": net.private_route_table})


# --- beanstalk.deploy_version ---------------------------------------------------------------------------------

Beanstalk = tuple[BeanstalkEnvironment, FakeAwsServer]
ROLLBACK = {"region": REGION, "environment": ENV, "version": "v41", "from_version": "v42"}


@pytest.fixture
def beanstalk(aws: AwsClients, monkeypatch: pytest.MonkeyPatch) -> Iterator[Beanstalk]:
    """orders-prod on the local Elastic Beanstalk server: v42 deployed 30 min ago, KeyErrors from 9 min later."""
    now = wall_clock()
    orders = BeanstalkEnvironment(now, health="Severe")
    with query_api(monkeypatch, "ELASTIC_BEANSTALK", {}, files={"/tail": beanstalk_tail(now, errors=True)}) as server:
        server.handlers.update(orders.handlers(server.url + "/tail"))
        yield orders, server


async def test_bad_beanstalk_deploy_is_rolled_back_and_the_undo_puts_it_back(
    aws: AwsClients, beanstalk: Beanstalk, make_ctx: MakeCtx
) -> None:
    orders, server = beanstalk
    diagnose = lambda: beanstalk_deploy(ENV, make_ctx(orders.now, beanstalk_environments=[ENV]))  # noqa: E731
    action = fix_actions()["beanstalk.deploy_version"]

    found = await diagnose()

    assert found.status is Status.fail and found.summary == ("Errors started 9 min after version v42 was deployed to "
                                                             "orders-prod (previous version v41); rollback candidate.")
    assert found.fixes == [FixOffer("beanstalk.deploy_version", "Roll back orders-prod to v41", ROLLBACK,
                                    reverse_label="Put orders-prod back on v42")]

    plan, result = await plan_and_apply(aws, found.fixes[0])

    assert plan.calls == ["elasticbeanstalk:UpdateEnvironment(EnvironmentName=orders-prod, VersionLabel=v41)"]
    assert (plan.before, plan.after) == ({"environment": ENV, "VersionLabel": "v42", "Status": "Ready"},
                                         {"VersionLabel": "v41"})
    assert result.ok and result.message.startswith("orders-prod is deploying v41 (was v42);")
    assert reaches(plan, result) and (orders.version, orders.status) == ("v41", "Updating")
    assert server.calls.count("UpdateEnvironment") == 1
    deploying = await diagnose()
    assert deploying.status is Status.ok and deploying.fixes == []
    assert deploying.summary.endswith("rolled back since: orders-prod runs v41 again, not v42 (still Updating).")
    assert result.reverse == FixOffer("beanstalk.deploy_version", "Put orders-prod back on v42",
                                      {**ROLLBACK, "version": "v42", "from_version": "v41", "undo": "yes"},
                                      reverse_label="Roll back orders-prod to v41")
    with pytest.raises(FixRefused, match="^orders-prod is Updating, not Ready"):  # the rollback is still deploying
        await action.plan(aws, result.reverse.params)

    orders.settle()
    assert (await diagnose()).summary.endswith("rolled back since: orders-prod runs v41 again, not v42.")
    undo_plan, undone = await plan_and_apply(aws, result.reverse)
    assert undone.ok and reaches(undo_plan, undone) and orders.version == "v42"
    assert undone.reverse is not None and undone.reverse.label == "Roll back orders-prod to v41"
    orders.settle()
    assert (await diagnose()).status is Status.fail


async def test_beanstalk_rollback_refuses_when_someone_deployed_after_the_preview(
    aws: AwsClients, beanstalk: Beanstalk
) -> None:
    orders, server = beanstalk
    action = fix_actions()["beanstalk.deploy_version"]
    plan = await action.plan(aws, ROLLBACK)
    orders.versions["v43"] = orders.now
    orders.update({"EnvironmentName": ENV, "VersionLabel": "v43"})  # someone's fix-forward, straight to AWS

    with pytest.raises(FixChanged, match=r"state changed since the preview \(Status Ready → Updating; "
                                         r"VersionLabel v42 → v43\)"):
        await action.apply(aws, plan)

    assert "UpdateEnvironment" not in server.calls and orders.version == "v43"
    orders.settle()
    with pytest.raises(FixRefused, match="^orders-prod now runs v43, not v42 as the diagnosis saw"):
        await action.plan(aws, ROLLBACK)


async def test_beanstalk_rollback_refuses_an_environment_that_is_updating(aws: AwsClients,
                                                                          beanstalk: Beanstalk) -> None:
    orders, server = beanstalk
    action = fix_actions()["beanstalk.deploy_version"]
    orders.status = "Updating"  # a configuration change, same version

    with pytest.raises(FixRefused, match="^orders-prod is Updating, not Ready: a deployment or configuration change"):
        await action.plan(aws, ROLLBACK)

    orders.status = "Ready"
    plan = await action.plan(aws, ROLLBACK)
    orders.status = "Updating"
    with pytest.raises(FixChanged, match=r"\(Status Ready → Updating\)"):
        await action.apply(aws, plan)
    assert "UpdateEnvironment" not in server.calls and orders.version == "v42"


async def test_beanstalk_rollback_to_a_missing_version_is_refused_or_fails_in_one_sentence(
    aws: AwsClients, beanstalk: Beanstalk
) -> None:
    orders, _ = beanstalk
    action = fix_actions()["beanstalk.deploy_version"]
    plan = await action.plan(aws, ROLLBACK)
    del orders.versions["v41"]  # deleted after the preview: the state the preview fingerprinted did not move

    result = await action.apply(aws, plan)

    assert not result.ok and "No Application Version named 'v41' found." in result.message
    assert (orders.version, orders.status) == ("v42", "Ready")
    with pytest.raises(FixRefused, match="^Version v41 of orders no longer exists"):
        await action.plan(aws, ROLLBACK)
    with pytest.raises(FixRefused, match="^No Elastic Beanstalk environment orders-staging"):
        await action.plan(aws, {**ROLLBACK, "environment": "orders-staging"})


# --- shared ----------------------------------------------------------------------------------------------------


def test_labels_fit_a_slack_button_and_keep_both_ends() -> None:
    long = label(f"Roll back {'f' * 64} to v41")
    assert len(long) == 75 and long.startswith("Roll back fff") and long.endswith("to v41") and "…" in long
    assert label("Roll back api-handler to v41") == "Roll back api-handler to v41"


def test_every_registered_action_has_a_name_matching_its_key() -> None:
    actions = fix_actions()
    assert {"lambda.rollback_alias", "vpc.reassociate_route_table", "elb.add_matcher_code",
            "vpc.associate_gateway_endpoint", "vpc.disassociate_gateway_endpoint",
            "beanstalk.deploy_version"} <= set(actions)
    assert all(action.name == name for name, action in actions.items())
