"""Security groups, resource and identity policies, NAT gateways, Lambda egress, VPC DNS and interface endpoints
against moto: each rule's broken scenario names the culprit, its healthy twin stays quiet."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from checks.aws.clients import AwsClients
from checks.aws.endpoints import interface_endpoints
from checks.aws.policies import identity_policies, resource_policies
from checks.aws.policy_eval import Principal, conditions, denies_for, principal_applies
from checks.aws.s3 import s3
from checks.aws.security_groups import security_groups
from checks.aws.vpc import endpoint_prefix, external_hosts, lambda_vpc, nat_gateways, vpc_dns
from checks.model import Status
from checks.registry import CheckContext
from checks.runner import make_http_client
from checks.services import BucketSpec, parse_service
from tests.aws_scenarios import (
    REGION,
    Network,
    build_alb,
    build_network,
    build_target_group,
    delete_nat,
    enable_vpc_dns,
    gateway_endpoint,
    instance_in,
    interface_endpoint,
    put_nat_metrics,
    role_with_policy,
    security_group,
    vpc_function,
)

MakeCtx = Callable[..., CheckContext]
ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/app"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client() as client:
        yield client


@pytest.fixture
def make_ctx(aws: AwsClients, http: httpx.AsyncClient) -> MakeCtx:
    def make(service: dict[str, Any] | None = None, **spec: Any) -> CheckContext:
        return CheckContext(service_name="web", service=parse_service({**(service or {}), "aws": {"region": REGION, **spec}}),
                            now=datetime.now(UTC), http=http, aws=aws)

    return make


@pytest.fixture
def net(aws: AwsClients) -> Network:
    return build_network(aws)


def app_role(aws: AwsClients, *statements: dict[str, Any]) -> str:
    return role_with_policy(aws, "app", list(statements) or [
        {"Effect": "Allow", "Action": ["sqs:SendMessage", "s3:GetObject", "s3:PutObject"], "Resource": "*"}])


# --- the policy reader ---------------------------------------------------------------------------------------


def test_deny_applies_by_principal_not_principal_and_identity_condition() -> None:
    role = Principal(ROLE_ARN, "AROAEXAMPLE", {"team": "web"})
    assert principal_applies({"Principal": {"AWS": ROLE_ARN}}, role)
    assert principal_applies({"Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}}, role)
    assert not principal_applies({"Principal": {"AWS": "arn:aws:iam::999999999999:role/app"}}, role)
    assert not principal_applies({"NotPrincipal": {"AWS": [ROLE_ARN]}}, role)
    assert principal_applies({"NotPrincipal": {"AWS": "arn:aws:iam::123456789012:role/admin"}}, role)
    outside = {"Condition": {"StringNotLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/admin*"}}}
    assert conditions(outside, role) == (True, [])
    excepted = {"Condition": {"ArnNotEquals": {"aws:PrincipalArn": ROLE_ARN}}}
    assert conditions(excepted, role) == (False, [])
    tagged = {"Condition": {"StringNotEquals": {"aws:PrincipalTag/team": "web"}, "Bool": {"aws:SecureTransport": "false"}}}
    assert conditions(tagged, role) == (False, [])
    network = {"Condition": {"StringNotEquals": {"aws:SourceVpce": "vpce-1"}}}
    assert conditions(network, role) == (True, ["aws:SourceVpce StringNotEquals vpce-1"])


def test_boundary_deny_counts_only_on_the_resources_the_role_is_granted() -> None:
    role = Principal(ROLE_ARN)
    grants = [("s3:GetObject", "arn:aws:s3:::orders/*"), ("sqs:SendMessage", "*")]
    boundary = {"Statement": [
        {"Sid": "Audit", "Effect": "Deny", "Action": "s3:*", "Resource": "arn:aws:s3:::audit-trail/*"},
        {"Sid": "Orders", "Effect": "Deny", "Action": "s3:Get*", "Resource": "arn:aws:s3:::orders/*"},
        {"Sid": "AllButJobs", "Effect": "Deny", "Action": "sqs:*", "NotResource": "arn:aws:sqs:*:*:jobs"}]}
    found = denies_for("boundary", boundary, role, ["s3:GetObject", "sqs:SendMessage"], grants)
    assert [(d.sid, d.blocked) for d in found] == [("Orders", ("s3:GetObject",)), ("AllButJobs", ("sqs:SendMessage",))]
    assert [d.sid for d in denies_for("boundary", boundary, role, ["s3:GetObject"])] == ["Audit", "Orders"]


# --- aws.resource_policies -------------------------------------------------------------------------------------


def queue_with_policy(aws: AwsClients, *statements: dict[str, Any], kms_key: str | None = None) -> str:
    sqs = aws.client("sqs", REGION)
    attributes = {"KmsMasterKeyId": kms_key} if kms_key else {}
    url = sqs.create_queue(QueueName="jobs", Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    if statements:
        policy = {"Version": "2012-10-17", "Statement": [s | {"Resource": arn} for s in statements]}
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    return url


async def test_queue_policy_denying_the_role_names_the_statement(aws: AwsClients, make_ctx: MakeCtx) -> None:
    app_role(aws)
    queue_with_policy(aws, {"Sid": "OnlyAdminsSend", "Effect": "Deny", "Principal": "*", "Action": "sqs:SendMessage",
                            "Condition": {"StringNotLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/admin"}}})

    result = await resource_policies(REGION, make_ctx(roles=["app"], queues=["jobs"]))

    assert result.status is Status.fail and result.severity == "P1"
    assert "Statement OnlyAdminsSend of the queue policy of jobs denies role app sqs:SendMessage" in result.summary
    assert "OnlyAdminsSend" in result.hint and result.evidence["denies"][0]["applies_when"] == "always"


async def test_queue_policy_whose_not_principal_lists_the_role_is_ok(aws: AwsClients, make_ctx: MakeCtx) -> None:
    app_role(aws)
    queue_with_policy(aws, {"Sid": "OthersCannotSend", "Effect": "Deny", "NotPrincipal": {"AWS": ROLE_ARN},
                            "Action": "sqs:SendMessage"})

    result = await resource_policies(REGION, make_ctx(roles=["app"], queues=["jobs"]))

    assert result.status is Status.ok, result.summary
    assert result.evidence["denies"] == []


async def test_key_policy_deny_on_the_queue_key_is_found(aws: AwsClients, make_ctx: MakeCtx) -> None:
    app_role(aws, {"Effect": "Allow", "Action": ["sqs:SendMessage", "kms:GenerateDataKey"], "Resource": "*"})
    kms = aws.client("kms", REGION)
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.put_key_policy(KeyId=key, PolicyName="default", Policy=json.dumps({"Statement": [
        {"Sid": "Root", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "kms:*",
         "Resource": "*"},
        {"Sid": "NoAppEncrypt", "Effect": "Deny", "Principal": {"AWS": ROLE_ARN}, "Action": "kms:GenerateDataKey*",
         "Resource": "*"}]}))
    queue_with_policy(aws, kms_key=key)

    result = await resource_policies(REGION, make_ctx(roles=["app"], queues=["jobs"]))

    assert result.status is Status.fail
    assert "NoAppEncrypt" in result.summary and "key policy of arn:aws:kms" in result.summary


# --- aws.s3 with roles -------------------------------------------------------------------------------------------


def bucket(aws: AwsClients, *statements: dict[str, Any]) -> None:
    client = aws.client("s3", REGION)
    client.create_bucket(Bucket="uploads")
    policy = {"Version": "2012-10-17", "Statement": [s | {"Resource": "arn:aws:s3:::uploads/*"} for s in statements]}
    client.put_bucket_policy(Bucket="uploads", Policy=json.dumps(policy))


async def test_bucket_deny_naming_the_role_fails_without_a_network_condition(aws: AwsClients, make_ctx: MakeCtx) -> None:
    app_role(aws)
    bucket(aws, {"Sid": "FreezeUploads", "Effect": "Deny", "Principal": {"AWS": ROLE_ARN}, "Action": "s3:PutObject"})

    result = await s3(BucketSpec(name="uploads"), make_ctx(roles=["app"], buckets=["uploads"]))

    assert result.status is Status.fail and result.resource == "arn:aws:s3:::uploads"
    assert "Statement FreezeUploads of the bucket policy of uploads denies role app s3:PutObject" in result.summary


async def test_bucket_deny_for_another_principal_is_not_the_roles_problem(aws: AwsClients, make_ctx: MakeCtx) -> None:
    app_role(aws)
    bucket(aws, {"Sid": "FreezeContractor", "Effect": "Deny", "Action": "s3:PutObject",
                 "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/contractor"}})

    result = await s3(BucketSpec(name="uploads"), make_ctx(roles=["app"], buckets=["uploads"]))

    assert result.status is Status.ok and result.evidence["denies"] == []


# --- aws.identity_policies ---------------------------------------------------------------------------------------


async def test_boundary_that_does_not_allow_an_action_fails(aws: AwsClients, make_ctx: MakeCtx) -> None:
    app_role(aws)
    iam = aws.client("iam", REGION)
    boundary = iam.create_policy(PolicyName="web-boundary", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": "*"}]}))["Policy"]["Arn"]
    iam.put_role_permissions_boundary(RoleName="app", PermissionsBoundary=boundary)

    result = await identity_policies("app", make_ctx(roles=["app"]))

    assert result.status is Status.fail and result.resource == boundary
    assert result.evidence["outside_boundary"] == ["sqs:SendMessage"]
    assert "web-boundary" in result.hint


async def test_boundary_allowing_everything_but_iam_by_not_action_is_ok(aws: AwsClients, make_ctx: MakeCtx) -> None:
    app_role(aws)
    iam = aws.client("iam", REGION)
    boundary = iam.create_policy(PolicyName="no-iam", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}]}))["Policy"]["Arn"]
    iam.put_role_permissions_boundary(RoleName="app", PermissionsBoundary=boundary)

    assert (await identity_policies("app", make_ctx(roles=["app"]))).status is Status.ok

    iam.put_role_policy(RoleName="app", PolicyName="admin", PolicyDocument=json.dumps({"Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "iam:CreateUser", "Resource": "*"}]}))
    result = await identity_policies("app", make_ctx(roles=["app"]))
    assert result.status is Status.fail and result.evidence["outside_boundary"] == ["iam:CreateUser"]


async def test_scp_deny_is_named_with_its_statement(aws: AwsClients, make_ctx: MakeCtx) -> None:
    app_role(aws)
    org = aws.client("organizations", REGION)
    org.create_organization(FeatureSet="ALL")
    scp = org.create_policy(Name="no-sqs", Description="d", Type="SERVICE_CONTROL_POLICY", Content=json.dumps(
        {"Statement": [{"Sid": "NoQueues", "Effect": "Deny", "Action": "sqs:*", "Resource": "*"}]}))
    org.attach_policy(PolicyId=scp["Policy"]["PolicySummary"]["Id"], TargetId=ACCOUNT)

    result = await identity_policies("app", make_ctx(roles=["app"]))

    assert result.status is Status.fail
    assert "Statement NoQueues of the SCP no-sqs denies role app sqs:SendMessage" in result.summary


async def test_role_without_boundary_or_visible_scps_is_ok(aws: AwsClients, make_ctx: MakeCtx) -> None:
    app_role(aws)

    result = await identity_policies("app", make_ctx(roles=["app"]))

    assert result.status is Status.ok, result.summary
    assert result.evidence["scps"] == "not visible from this account" and result.evidence["boundary"] is None


# --- aws.security_groups -----------------------------------------------------------------------------------------


def web_tier(aws: AwsClients, net: Network, *, target_ingress: bool = True, registered: int = 80) -> tuple[str, str]:
    """ALB → one instance registered on `registered` (the target group's port is 80); the app SG allows that
    port from the ALB's SG, or 8080 only when `target_ingress` is False."""
    lb_sg = security_group(aws, net, "alb", ingress=[(443, "0.0.0.0/0")])
    app_sg = security_group(aws, net, "app", ingress=[(registered, lb_sg)] if target_ingress else [(8080, lb_sg)])
    elbv2 = aws.client("elbv2", REGION)
    lb = build_alb(aws, net)
    elbv2.set_security_groups(LoadBalancerArn=lb["LoadBalancerArn"], SecurityGroups=[lb_sg])
    build_target_group(aws, net, target_type="instance", load_balancer=lb,
                       targets=[(instance_in(aws, net, [app_sg]), registered)])
    return lb_sg, app_sg


async def test_alb_to_target_path_allowed_is_ok(aws: AwsClients, net: Network, make_ctx: MakeCtx) -> None:
    web_tier(aws, net)

    result = await security_groups(REGION, make_ctx(load_balancers=["web"]))

    assert result.status is Status.ok, result.summary
    assert [(r["port"], r["egress"], r["ingress"]) for r in result.evidence["paths"]] == [(80, True, True)]


async def test_target_registered_on_its_own_port_is_judged_on_that_port(aws: AwsClients, net: Network,
                                                                        make_ctx: MakeCtx) -> None:
    web_tier(aws, net, registered=32768)  # ECS dynamic port behind a port-80 target group

    result = await security_groups(REGION, make_ctx(load_balancers=["web"]))

    assert result.status is Status.ok, result.summary
    assert [(r["port"], r["ingress"]) for r in result.evidence["paths"]] == [(32768, True)]


async def test_target_sg_without_the_target_port_is_named(aws: AwsClients, net: Network, make_ctx: MakeCtx) -> None:
    lb_sg, app_sg = web_tier(aws, net, target_ingress=False)

    result = await security_groups(REGION, make_ctx(load_balancers=["web"]))

    assert result.status is Status.fail and result.resource == app_sg
    assert f"No ingress rule of {app_sg}" in result.summary and "TCP 80 from load balancer web" in result.summary
    assert f"--group-id {app_sg} --protocol tcp --port 80 --source-group {lb_sg}" in result.hint


def database(aws: AwsClients, groups: list[str]) -> str:
    """A PostgreSQL instance (port 5432) in `groups`; returns its endpoint address."""
    found = aws.client("rds", REGION).create_db_instance(
        DBInstanceIdentifier="orders-db", Engine="postgres", DBInstanceClass="db.t3.micro", AllocatedStorage=20,
        MasterUsername="app", MasterUserPassword="not-a-secret-1", VpcSecurityGroupIds=groups)
    return found["DBInstance"]["Endpoint"]["Address"]


async def test_database_reached_by_the_targets_and_the_function_that_names_it(aws: AwsClients, net: Network,
                                                                              make_ctx: MakeCtx) -> None:
    _, app_sg = web_tier(aws, net)
    app_role(aws)
    fn_sg, idle_sg = security_group(aws, net, "fn"), security_group(aws, net, "idle")
    db_sg = security_group(aws, net, "db", ingress=[(5432, app_sg), (5432, fn_sg)])
    address = database(aws, [db_sg])
    vpc_function(aws, "reports", net.private_subnets, [fn_sg], role="app", env={"DB_HOST": address})
    vpc_function(aws, "mailer", net.private_subnets, [idle_sg], role="app")  # never connects to the database
    ctx = make_ctx(load_balancers=["web"], db_instances=["orders-db"], lambda_functions=["reports", "mailer"])

    result = await security_groups(REGION, ctx)

    assert result.status is Status.ok, result.summary
    to_db = [(r["from"], r["ingress"]) for r in result.evidence["paths"] if r["to"] == "database orders-db"]
    assert len(to_db) == 2 and all(ingress for _, ingress in to_db)
    assert not any(r["from"] == "function mailer" and r["to"] == "database orders-db" for r in result.evidence["paths"])


async def test_database_sg_without_the_app_group_is_named(aws: AwsClients, net: Network, make_ctx: MakeCtx) -> None:
    _, app_sg = web_tier(aws, net)
    db_sg = security_group(aws, net, "db", ingress=[(5432, "10.0.99.0/24")])  # an old subnet, not the app's
    database(aws, [db_sg])

    result = await security_groups(REGION, make_ctx(load_balancers=["web"], db_instances=["orders-db"]))

    assert result.status is Status.fail and result.resource == db_sg
    assert f"No ingress rule of {db_sg} (database orders-db) allows TCP 5432 from instance" in result.summary
    assert f"--group-id {db_sg} --protocol tcp --port 5432 --source-group {app_sg}" in result.hint


async def test_world_open_database_port_warns(aws: AwsClients, net: Network, make_ctx: MakeCtx) -> None:
    open_db = security_group(aws, net, "db", ingress=[(5432, "0.0.0.0/0")])

    result = await security_groups(REGION, make_ctx(security_groups=[open_db]))

    assert result.status is Status.warn and result.resource == open_db
    assert "5432 (PostgreSQL) from the whole internet" in result.summary


async def test_lambda_sg_without_https_egress_fails(aws: AwsClients, net: Network, make_ctx: MakeCtx) -> None:
    app_role(aws)
    closed = security_group(aws, net, "fn", egress=[(5432, "10.0.0.0/16")])
    vpc_function(aws, "worker", net.private_subnets, [closed], role="app")

    result = await security_groups(REGION, make_ctx(lambda_functions=["worker"]))

    assert result.status is Status.fail and result.resource == closed
    assert "allow no TCP 443 out" in result.summary


async def test_lambda_sg_with_https_egress_only_to_the_endpoints_group_is_ok(aws: AwsClients, net: Network,
                                                                            make_ctx: MakeCtx) -> None:
    app_role(aws)
    endpoints_sg = security_group(aws, net, "vpce")
    tight = security_group(aws, net, "fn", egress=[(443, endpoints_sg)])  # what the failing hint recommends
    vpc_function(aws, "worker", net.private_subnets, [tight], role="app")

    result = await security_groups(REGION, make_ctx(lambda_functions=["worker"]))

    assert result.status is Status.ok, result.summary


# --- aws.nat_gateways --------------------------------------------------------------------------------------------


async def test_private_subnets_through_an_available_nat_are_ok(aws: AwsClients, net: Network, make_ctx: MakeCtx) -> None:
    result = await nat_gateways(REGION, make_ctx(subnets=list(net.private_subnets)))

    assert result.status is Status.ok, result.summary
    assert {r["outbound"] for r in result.evidence["subnets"]} == {net.nat_id}


async def test_route_to_a_deleted_nat_names_the_route_table(aws: AwsClients, net: Network, make_ctx: MakeCtx) -> None:
    delete_nat(aws, net)

    result = await nat_gateways(REGION, make_ctx(subnets=list(net.private_subnets)))

    assert result.status is Status.fail and result.resource == net.private_route_table
    assert f"NAT gateway {net.nat_id}, which is deleted" in result.summary
    assert f"--route-table-id {net.private_route_table}" in result.hint


async def test_nat_port_allocation_errors_warn(aws: AwsClients, net: Network, make_ctx: MakeCtx) -> None:
    put_nat_metrics(aws, net.nat_id, datetime.now(UTC) - timedelta(minutes=3), ErrorPortAllocation=12)

    result = await nat_gateways(REGION, make_ctx(subnets=list(net.private_subnets)))

    assert result.status is Status.warn and result.resource == net.nat_id
    assert "12 port allocation errors" in result.summary


async def test_nat_dropping_a_sliver_of_its_traffic_is_ok_and_a_real_share_warns(aws: AwsClients, net: Network,
                                                                                 make_ctx: MakeCtx) -> None:
    at = datetime.now(UTC) - timedelta(minutes=3)
    put_nat_metrics(aws, net.nat_id, at, PacketsDropCount=5, PacketsInFromSource=4_000_000,
                    PacketsInFromDestination=6_000_000)  # 0.00005 %: routine
    ctx = make_ctx(subnets=list(net.private_subnets))
    assert (await nat_gateways(REGION, ctx)).status is Status.ok

    put_nat_metrics(aws, net.nat_id, at - timedelta(minutes=1), PacketsDropCount=20_000)  # 0.2 %
    result = await nat_gateways(REGION, make_ctx(subnets=list(net.private_subnets)))
    assert result.status is Status.warn and "20005 dropped packets" in result.summary


# --- aws.lambda_vpc ----------------------------------------------------------------------------------------------


def test_external_hosts_come_from_urls_and_host_ports_not_aws_or_plain_values() -> None:
    env = {"API": "https://api.stripe.com/v1", "DB": "db.internal:5432", "Q": "https://sqs.us-east-1.amazonaws.com/1/q",
           "MODE": "prod", "IP": "10.0.0.5"}
    assert external_hosts(env) == ["api.stripe.com", "db.internal"]


async def test_lambda_in_public_subnets_cannot_call_out(aws: AwsClients, net: Network, make_ctx: MakeCtx) -> None:
    app_role(aws)
    vpc_function(aws, "worker", net.public_subnets, [security_group(aws, net, "fn")], role="app",
                 env={"PAYMENTS": "https://api.stripe.com"})

    result = await lambda_vpc("worker", make_ctx(lambda_functions=["worker"]))

    assert result.status is Status.fail and result.resource == "worker"
    assert "Lambda ENIs never get a public IP" in result.summary and "api.stripe.com" in result.summary


async def test_lambda_without_nat_reaches_dynamodb_through_its_endpoint(aws: AwsClients, net: Network,
                                                                        make_ctx: MakeCtx) -> None:
    app_role(aws, {"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": "*"})
    ec2 = aws.client("ec2", REGION)
    isolated = ec2.create_route_table(VpcId=net.vpc_id)["RouteTable"]["RouteTableId"]
    for subnet in net.private_subnets:
        ec2.replace_route_table_association(AssociationId=_association_id(ec2, subnet), RouteTableId=isolated)
    gateway_endpoint(aws, net, route_tables=(isolated,))
    vpc_function(aws, "worker", net.private_subnets, [security_group(aws, net, "fn")], role="app")

    ok = await lambda_vpc("worker", make_ctx(lambda_functions=["worker"]))
    assert ok.status is Status.ok, ok.summary

    aws.client("iam", REGION).put_role_policy(RoleName="app", PolicyName="more", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]}))
    broken = await lambda_vpc("worker", make_ctx(lambda_functions=["worker"]))
    assert broken.status is Status.fail and "cannot reach secretsmanager" in broken.summary


def test_an_endpoint_serves_the_iam_prefix_of_its_api_not_its_last_label() -> None:
    names = ["com.amazonaws.us-east-1.ecr.api", "com.amazonaws.us-east-1.kinesis-streams",
             "com.amazonaws.us-east-1.secretsmanager", "com.amazonaws.us-east-1.sagemaker.runtime"]
    assert [endpoint_prefix(n) for n in names] == ["ecr", "kinesis", "secretsmanager", "sagemaker"]


def _association_id(ec2: Any, subnet: str) -> str:
    tables = ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [subnet]}])
    return next(a["RouteTableAssociationId"] for t in tables["RouteTables"] for a in t["Associations"]
                if a.get("SubnetId") == subnet)


# --- aws.vpc_dns -------------------------------------------------------------------------------------------------


def private_zone(aws: AwsClients, name: str, vpc: str) -> str:
    return aws.client("route53", REGION).create_hosted_zone(
        Name=name, CallerReference=name, HostedZoneConfig={"PrivateZone": True},
        VPC={"VPCRegion": REGION, "VPCId": vpc})["HostedZone"]["Id"]


async def test_vpc_dns_on_and_zone_associated_is_ok(aws: AwsClients, net: Network, make_ctx: MakeCtx) -> None:
    enable_vpc_dns(aws, net)
    private_zone(aws, "corp.internal", net.vpc_id)

    result = await vpc_dns(REGION, make_ctx({"tcp": ["db.corp.internal:5432"]}, subnets=[net.private_subnets[0]]))

    assert result.status is Status.ok, result.summary


async def test_dns_support_off_fails(aws: AwsClients, net: Network, make_ctx: MakeCtx) -> None:
    enable_vpc_dns(aws, net, support=False)

    result = await vpc_dns(REGION, make_ctx(subnets=[net.private_subnets[0]]))

    assert result.status is Status.fail and result.resource == net.vpc_id
    assert "enableDnsSupport is off" in result.summary and "--enable-dns-support" in result.hint


async def test_private_zone_of_another_vpc_is_named(aws: AwsClients, net: Network, make_ctx: MakeCtx) -> None:
    enable_vpc_dns(aws, net)
    other = aws.client("ec2", REGION).create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    zone = private_zone(aws, "corp.internal", other)

    result = await vpc_dns(REGION, make_ctx({"tcp": ["db.corp.internal:5432"]}, subnets=[net.private_subnets[0]]))

    assert result.status is Status.fail and result.resource == zone
    assert f"is not associated with {net.vpc_id}" in result.summary and "associate-vpc-with-hosted-zone" in result.hint


# --- aws.interface_endpoints -------------------------------------------------------------------------------------


def ssm_endpoint(aws: AwsClients, net: Network, *, https_from: str = "10.0.0.0/16", **kwargs: Any) -> str:
    group = security_group(aws, net, "vpce", ingress=[(443, https_from)])
    return interface_endpoint(aws, net, "ssm", subnets=net.private_subnets, groups=[group], **kwargs)


async def test_interface_endpoint_reachable_and_resolvable_is_ok(aws: AwsClients, net: Network,
                                                                 make_ctx: MakeCtx) -> None:
    enable_vpc_dns(aws, net)
    endpoint = ssm_endpoint(aws, net)

    result = await interface_endpoints(endpoint, make_ctx(vpc_endpoints=[endpoint], subnets=list(net.private_subnets)))

    assert result.status is Status.ok, result.summary


async def test_interface_endpoint_with_private_dns_off_fails(aws: AwsClients, net: Network, make_ctx: MakeCtx) -> None:
    enable_vpc_dns(aws, net)
    endpoint = ssm_endpoint(aws, net, private_dns=False)

    result = await interface_endpoints(endpoint, make_ctx(vpc_endpoints=[endpoint], subnets=list(net.private_subnets)))

    assert result.status is Status.fail and result.resource == endpoint
    assert "Private DNS is off" in result.summary and "--private-dns-enabled" in result.hint


async def test_endpoint_sg_allowing_443_from_the_functions_group_is_ok(aws: AwsClients, net: Network,
                                                                        make_ctx: MakeCtx) -> None:
    enable_vpc_dns(aws, net)
    app_role(aws)
    fn_sg = security_group(aws, net, "fn")
    vpc_function(aws, "worker", net.private_subnets, [fn_sg], role="app")
    endpoint = ssm_endpoint(aws, net, https_from=fn_sg)  # the usual rule: by the callers' group, not a CIDR
    ctx = make_ctx(vpc_endpoints=[endpoint], lambda_functions=["worker"])

    assert (await interface_endpoints(endpoint, ctx)).status is Status.ok
    other_sg = security_group(aws, net, "other")
    aws.client("lambda", REGION).update_function_configuration(
        FunctionName="worker", VpcConfig={"SubnetIds": list(net.private_subnets), "SecurityGroupIds": [other_sg]})
    broken = await interface_endpoints(endpoint, make_ctx(vpc_endpoints=[endpoint], lambda_functions=["worker"]))
    assert broken.status is Status.fail and "allow no TCP 443 from subnet(s)" in broken.summary


async def test_endpoint_sg_without_443_from_the_service_subnet_fails(aws: AwsClients, net: Network,
                                                                      make_ctx: MakeCtx) -> None:
    enable_vpc_dns(aws, net)
    endpoint = ssm_endpoint(aws, net, https_from="10.0.11.0/24")  # only the second private subnet

    result = await interface_endpoints(endpoint, make_ctx(vpc_endpoints=[endpoint], subnets=list(net.private_subnets)))

    assert result.status is Status.fail
    assert f"allow no TCP 443 from subnet(s) {net.private_subnets[0]}" in result.summary
    assert "--cidr 10.0.10.0/24" in result.hint


async def test_endpoint_missing_from_a_service_zone_warns(aws: AwsClients, net: Network, make_ctx: MakeCtx) -> None:
    enable_vpc_dns(aws, net)
    group = security_group(aws, net, "vpce", ingress=[(443, "10.0.0.0/16")])
    endpoint = interface_endpoint(aws, net, "ssm", subnets=net.private_subnets[:1], groups=[group])

    result = await interface_endpoints(endpoint, make_ctx(vpc_endpoints=[endpoint], subnets=list(net.private_subnets)))

    assert result.status is Status.warn and "no network interface in us-east-1b" in result.summary


async def test_endpoint_policy_denying_the_role_fails(aws: AwsClients, net: Network, make_ctx: MakeCtx) -> None:
    enable_vpc_dns(aws, net)
    app_role(aws, {"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": "*"})
    endpoint = ssm_endpoint(aws, net, policy={"Statement": [
        {"Sid": "All", "Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"},
        {"Sid": "NoParameters", "Effect": "Deny", "Principal": "*", "Action": "ssm:GetParameter*", "Resource": "*"}]})

    result = await interface_endpoints(endpoint, make_ctx(vpc_endpoints=[endpoint], roles=["app"],
                                                          subnets=list(net.private_subnets)))

    assert result.status is Status.fail and result.resource == endpoint
    assert "Statement NoParameters of the endpoint policy" in result.summary
