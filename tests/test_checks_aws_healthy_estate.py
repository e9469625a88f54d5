"""One healthy estate exercising the network, policy and runbook checks together against moto: the whole diagnosis
of a service whose load balancer, instances, function in a VPC, queue and key, bucket, interface endpoint, APIs,
Beanstalk environment, database and X-Ray are all in order reports no failure and no warning. Each check's own healthy twin
lives beside its broken scenario; this is where checks meet resources built for the others (an ALB with a
security group, instance targets on their registered port, a role with a boundary) and a false alarm shows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from bot.settings import parse_services
from checks.aws.clients import AwsClients
from checks.model import Status
from checks.runner import make_http_client, run_service
from tests.aws_fake_apis import ENV, beanstalk_api, beanstalk_tail, query_api
from tests.aws_lambda_scenarios import put_lambda_metrics
from tests.aws_scenarios import (
    REGION,
    Network,
    build_network,
    enable_vpc_dns,
    health_server,
    http_api,
    interface_endpoint,
    metadata_instance,
    put_alb_traffic,
    put_api_traffic,
    rest_api,
    role_with_policy,
    security_group,
    vpc_function,
)

ACCOUNT = "123456789012"
APP_IP = "127.0.10.10"  # the VPC is 127.0.0.0/16 (moto accepts it), so the instance's address is a local app


def _alb_with_instance(aws: AwsClients, net: Network, alb_sg: str, app_sg: str, app_port: int) -> str:
    """An internet-facing ALB with its own security group, forwarding to an instance registered on `app_port` (the
    target group's own port stays 80, as behind ECS dynamic ports or an app on 8080)."""
    elbv2, ec2 = aws.client("elbv2", REGION), aws.client("ec2", REGION)
    lb = elbv2.create_load_balancer(Name="web", Subnets=list(net.public_subnets), SecurityGroups=[alb_sg],
                                    Scheme="internet-facing")["LoadBalancers"][0]
    group = elbv2.create_target_group(Name="web-tg", Protocol="HTTP", Port=80, VpcId=net.vpc_id,
                                      TargetType="instance", HealthCheckPath="/health")["TargetGroups"][0]
    instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SubnetId=net.private_subnets[0],
                                 PrivateIpAddress=APP_IP, SecurityGroupIds=[app_sg],
                                 MetadataOptions={"HttpTokens": "required", "HttpPutResponseHopLimit": 2},
                                 )["Instances"][0]["InstanceId"]
    elbv2.register_targets(TargetGroupArn=group["TargetGroupArn"], Targets=[{"Id": instance, "Port": app_port}])
    elbv2.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
                          DefaultActions=[{"Type": "forward", "TargetGroupArn": group["TargetGroupArn"]}])
    put_alb_traffic(aws, lb, at=datetime.now(UTC) - timedelta(minutes=3), requests=500)
    return instance


def _app_role(aws: AwsClients) -> str:
    """The function's role: sends to the queue (through its KMS key), reads parameters, with a boundary allowing
    all of it, next to a boundary Deny on something the role never does."""
    iam = aws.client("iam", REGION)
    boundary = iam.create_policy(PolicyName="app-boundary", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["sqs:*", "kms:*", "s3:*Object", "ssm:GetParameter", "logs:*", "ec2:*Network*"],
             "Resource": "*"},
            {"Sid": "NoUserAdmin", "Effect": "Deny", "Action": "iam:*", "Resource": "*"},
            {"Sid": "HandsOffTheAuditTrail", "Effect": "Deny", "Action": "s3:*",
             "Resource": "arn:aws:s3:::audit-trail/*"}]}))["Policy"]["Arn"]
    role_with_policy(aws, "app", [
        {"Effect": "Allow", "Action": ["sqs:SendMessage", "kms:GenerateDataKey", "ssm:GetParameter"],
         "Resource": "*"},
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": "arn:aws:s3:::orders-assets/*"}])
    iam.put_role_permissions_boundary(RoleName="app", PermissionsBoundary=boundary)
    iam.update_assume_role_policy(RoleName="app", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}))
    return "app"


def _queue_with_key(aws: AwsClients) -> str:
    """A queue encrypted with a customer key; its policy denies everyone but the app role from sending."""
    key = aws.client("kms", REGION).create_key()["KeyMetadata"]["KeyId"]
    sqs = aws.client("sqs", REGION)
    url = sqs.create_queue(QueueName="jobs", Attributes={"KmsMasterKeyId": key})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    dlq = sqs.create_queue(QueueName="jobs-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = {"Version": "2012-10-17", "Statement": [
        {"Sid": "OnlyTheApp", "Effect": "Deny", "NotPrincipal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/app"},
         "Action": "sqs:SendMessage", "Resource": arn}]}
    sqs.set_queue_attributes(QueueUrl=url, Attributes={
        "Policy": json.dumps(policy),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})})
    return "jobs"


def _bucket(aws: AwsClients) -> str:
    """A bucket the app reads and writes; its policy denies deleting the bucket to everyone (the app never does)
    and plain-HTTP requests (conditional: listed, not failed)."""
    s3 = aws.client("s3", REGION)
    s3.create_bucket(Bucket="orders-assets")
    s3.put_bucket_policy(Bucket="orders-assets", Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "KeepTheBucket", "Effect": "Deny", "Principal": "*", "Action": "s3:DeleteBucket",
         "Resource": "arn:aws:s3:::orders-assets"},
        {"Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": "arn:aws:s3:::orders-assets/*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}))
    return "orders-assets"


def _quiet_traces(aws: AwsClients) -> None:
    """Twenty sampled requests in the last minutes, none faulted."""
    now = datetime.now(UTC).timestamp()
    segments = [json.dumps({"name": "orders", "id": f"{i:016x}", "trace_id": f"1-{int(now):08x}-{i:024x}",
                            "start_time": now - 120 + i, "end_time": now - 119.9 + i}) for i in range(20)]
    aws.client("xray", REGION).put_trace_segments(TraceSegmentDocuments=segments)


def build_estate(aws: AwsClients, app_port: int) -> dict[str, Any]:
    net = build_network(aws, cidr="127.0.0.0/16")
    enable_vpc_dns(aws, net)
    alb_sg = security_group(aws, net, "alb", ingress=[(443, "0.0.0.0/0")])
    app_sg = security_group(aws, net, "app", ingress=[(app_port, alb_sg)])
    fn_sg = security_group(aws, net, "fn")
    db_sg = security_group(aws, net, "db", ingress=[(5432, app_sg)])
    aws.client("rds", REGION).create_db_instance(
        DBInstanceIdentifier="orders-db", Engine="postgres", DBInstanceClass="db.t3.micro", AllocatedStorage=20,
        MasterUsername="app", MasterUserPassword="not-a-secret-1", VpcSecurityGroupIds=[db_sg])
    vpce_sg = security_group(aws, net, "vpce", ingress=[(443, net.cidr)])
    instance = _alb_with_instance(aws, net, alb_sg, app_sg, app_port)
    role = _app_role(aws)
    function = vpc_function(aws, "orders-fn", net.private_subnets, [fn_sg], role=role)
    _quiet_traces(aws)
    put_lambda_metrics(aws, "orders-fn", datetime.now(UTC) - timedelta(minutes=5), invocations=100,
                       durations_ms=[120, 250])
    endpoint = interface_endpoint(aws, net, "ssm", subnets=net.private_subnets, groups=[vpce_sg])
    rest = rest_api(aws, function["FunctionArn"])
    http = http_api(aws, function["FunctionArn"])
    at = datetime.now(UTC) - timedelta(minutes=4)
    put_api_traffic(aws, {"ApiName": "orders", "Stage": "prod"}, at=at, requests=300)
    put_api_traffic(aws, {"ApiId": http, "Stage": "$default"}, at=at, requests=300, http=True)
    return {"services": {"orders": {"aws": {
        "region": REGION, "load_balancers": ["web"], "target_groups": ["web-tg"], "lambda_functions": ["orders-fn"],
        "queues": [_queue_with_key(aws)], "buckets": [_bucket(aws)], "roles": [role], "instances": [metadata_instance(aws), instance],
        "security_groups": [alb_sg, app_sg, fn_sg, vpce_sg, db_sg], "db_instances": ["orders-db"], "vpc_endpoints": [endpoint],
        "api_gateways": [rest], "http_apis": [http], "xray": True, "beanstalk_environments": [ENV],
        "subnets": list(net.private_subnets),
    }}}}


@pytest.fixture
async def http_client() -> Any:
    async with make_http_client() as client:
        yield client


async def test_a_healthy_estate_raises_no_failure_and_no_warning(aws: AwsClients, monkeypatch: pytest.MonkeyPatch,
                                                                 http_client: httpx.AsyncClient) -> None:
    now = datetime.now(UTC)
    with health_server(200, host=APP_IP) as app_port, query_api(monkeypatch, "ELASTIC_BEANSTALK", {}, files={"/tail": beanstalk_tail(now, errors=False)}) as eb:
        eb.handlers.update(beanstalk_api(now, eb.url + "/tail"))
        spec = parse_services(build_estate(aws, app_port)).services["orders"]
        results = await run_service("orders", spec, http=http_client, aws_factory=lambda: aws)
    loud = {f"{r.check} {r.target}": (r.status.value, r.summary) for r in results
            if r.status in (Status.fail, Status.warn, Status.error)}
    assert loud == {}
    ran = {r.check for r in results if r.status is Status.ok}
    assert {"aws.security_groups", "aws.identity_policies", "aws.resource_policies", "aws.s3", "aws.lambda_vpc",
            "aws.nat_gateways", "aws.vpc_dns", "aws.interface_endpoints", "aws.instance_metadata",
            "aws.api_stage_config", "aws.api_stage_metrics", "aws.beanstalk_deploy", "aws.beanstalk_health",
            "aws.xray_traces", "aws.target_health", "aws.rds"} <= ran
