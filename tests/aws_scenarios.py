"""moto scenario builders: a healthy AWS setup in a few calls, and the one change that breaks each part of it.

Every builder takes the `aws` fixture (an `AwsClients` inside `mock_aws`) and uses plain boto3 calls, so a test
reads as "a healthy network, then subnet B routed through the NAT gateway". Where moto cannot produce a state
(unhealthy targets, alarms firing) the builder uses the documented workaround and says so.

    net = build_network(aws)                         # VPC, 2 public + 2 private subnets, IGW, NAT
    lb = build_alb(aws, net)                         # internet-facing ALB in the public subnets
    route_through_nat(aws, net, net.public_subnets[1])
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import moto.elbv2.models
import pytest

from checks.aws.clients import AwsClients

REGION = "us-east-1"
AZS = ("us-east-1a", "us-east-1b")


@dataclass(frozen=True)
class Network:
    """A two-AZ VPC laid out the usual way: public subnets → IGW, private subnets → NAT, main table untouched."""

    vpc_id: str
    cidr: str
    igw_id: str
    nat_id: str
    main_route_table: str  # only the local route, as AWS creates it
    public_route_table: str  # 0.0.0.0/0 → igw
    private_route_table: str  # 0.0.0.0/0 → nat
    public_subnets: tuple[str, ...]
    private_subnets: tuple[str, ...]


def build_network(aws: AwsClients, *, cidr: str = "10.0.0.0/16", azs: tuple[str, ...] = AZS) -> Network:
    ec2 = aws.client("ec2", REGION)
    vpc_id = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    base = cidr.rsplit(".", 2)[0]  # "10.0"
    public = tuple(_subnet(ec2, vpc_id, f"{base}.{i}.0/24", az) for i, az in enumerate(azs))
    private = tuple(_subnet(ec2, vpc_id, f"{base}.{10 + i}.0/24", az) for i, az in enumerate(azs))
    igw_id = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw_id, VpcId=vpc_id)
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat_id = ec2.create_nat_gateway(SubnetId=public[0], AllocationId=allocation)["NatGateway"]["NatGatewayId"]
    public_rtb = _route_table(ec2, vpc_id, public, GatewayId=igw_id)
    private_rtb = _route_table(ec2, vpc_id, private, NatGatewayId=nat_id)
    main = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                              {"Name": "association.main", "Values": ["true"]}])
    return Network(vpc_id, cidr, igw_id, nat_id, main["RouteTables"][0]["RouteTableId"], public_rtb, private_rtb,
                   public, private)


def _subnet(ec2: Any, vpc_id: str, cidr: str, az: str) -> str:
    return ec2.create_subnet(VpcId=vpc_id, CidrBlock=cidr, AvailabilityZone=az)["Subnet"]["SubnetId"]


def _route_table(ec2: Any, vpc_id: str, subnets: tuple[str, ...], **default_target: str) -> str:
    rtb = ec2.create_route_table(VpcId=vpc_id)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=rtb, DestinationCidrBlock="0.0.0.0/0", **default_target)
    for subnet in subnets:
        ec2.associate_route_table(RouteTableId=rtb, SubnetId=subnet)
    return rtb


def _association(ec2: Any, subnet: str) -> str | None:
    tables = ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [subnet]}])
    for table in tables["RouteTables"]:
        for assoc in table["Associations"]:
            if assoc.get("SubnetId") == subnet:
                return assoc["RouteTableAssociationId"]
    return None


def route_through_nat(aws: AwsClients, net: Network, subnet: str) -> None:
    """Break: move a public subnet onto the private route table (0.0.0.0/0 → NAT): asymmetric routing."""
    ec2 = aws.client("ec2", REGION)
    ec2.replace_route_table_association(AssociationId=_association(ec2, subnet), RouteTableId=net.private_route_table)


def drop_association(aws: AwsClients, subnet: str) -> None:
    """Break (quietly): remove the subnet's explicit association, so it falls back to the VPC's main table."""
    ec2 = aws.client("ec2", REGION)
    ec2.disassociate_route_table(AssociationId=_association(ec2, subnet))


def route_main_table_through_nat(aws: AwsClients, net: Network) -> None:
    aws.client("ec2", REGION).create_route(RouteTableId=net.main_route_table, DestinationCidrBlock="0.0.0.0/0",
                                           NatGatewayId=net.nat_id)


# --- load balancers and target groups ------------------------------------------------------------------------


def build_alb(aws: AwsClients, net: Network, *, name: str = "web", scheme: str = "internet-facing",
              subnets: tuple[str, ...] | None = None) -> dict[str, Any]:
    """An ALB; internet-facing ones go in the public subnets, internal ones in the private subnets."""
    if subnets is None:
        subnets = net.public_subnets if scheme == "internet-facing" else net.private_subnets
    elbv2 = aws.client("elbv2", REGION)
    return elbv2.create_load_balancer(Name=name, Subnets=list(subnets), Scheme=scheme)["LoadBalancers"][0]


def build_target_group(aws: AwsClients, net: Network, *, name: str = "web-tg", matcher: str = "200",
                       path: str = "/health", targets: list[tuple[str, int]] = (), target_type: str = "ip",
                       load_balancer: dict[str, Any] | None = None) -> dict[str, Any]:
    """An HTTP target group with `targets` as (ip or instance id, port), behind an HTTP:80 listener of
    `load_balancer`.

    Register 127.0.0.1 with the port of a `health_server` to let the check probe a real app (moto accepts IPs
    outside the VPC's CIDR; AWS would not). For instance targets, see `loopback_instance`.
    """
    elbv2 = aws.client("elbv2", REGION)
    group = elbv2.create_target_group(
        Name=name, Protocol="HTTP", Port=80, VpcId=net.vpc_id, TargetType=target_type,
        HealthCheckPath=path, HealthCheckTimeoutSeconds=2, Matcher={"HttpCode": matcher},
    )["TargetGroups"][0]
    if targets:
        elbv2.register_targets(TargetGroupArn=group["TargetGroupArn"],
                               Targets=[{"Id": ip, "Port": port} for ip, port in targets])
    if load_balancer is not None:
        elbv2.create_listener(LoadBalancerArn=load_balancer["LoadBalancerArn"], Protocol="HTTP", Port=80,
                              DefaultActions=[{"Type": "forward", "TargetGroupArn": group["TargetGroupArn"]}])
    return group


def targets_unhealthy(monkeypatch: pytest.MonkeyPatch, *, reason: str = "Target.ResponseCodeMismatch",
                      description: str = "Health checks failed with these codes: [299]",
                      only: set[str] | None = None, state: str = "unhealthy") -> None:
    """moto reports every running target healthy; make targets (all, or those whose Id is in `only`) unhealthy
    by patching `FakeTargetGroup.health_for`, the documented workaround."""
    original = moto.elbv2.models.FakeTargetGroup.health_for

    def health_for(self: Any, target: dict[str, Any], ec2_backend: Any) -> Any:
        status = original(self, target, ec2_backend)
        if only is not None and target["Id"] not in only:
            return status
        return moto.elbv2.models.FakeHealthStatus(target["Id"], target.get("Port", self.port),
                                                  self.health_check_port, state, reason, description)

    monkeypatch.setattr(moto.elbv2.models.FakeTargetGroup, "health_for", health_for)


def loopback_instance(aws: AwsClients, net: Network, private_ip: str) -> str:
    """A running instance whose private IP a test can serve on: build the network with cidr="127.0.0.0/16"
    (moto accepts it; all of 127/8 is loopback on Linux) and pass e.g. "127.0.10.10"."""
    ec2 = aws.client("ec2", REGION)
    found = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SubnetId=net.private_subnets[0],
                              PrivateIpAddress=private_ip)
    return found["Instances"][0]["InstanceId"]


@contextmanager
def health_server(status: int, path: str = "/health", host: str = "127.0.0.1") -> Iterator[int]:
    """A local app that answers `status` on `path` (404 elsewhere); yields its port on `host`."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(status if self.path == path else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


# --- CloudWatch ----------------------------------------------------------------------------------------------


def put_alb_traffic(aws: AwsClients, lb: dict[str, Any], *, at: datetime, requests: int, target_5xx: int = 0,
                    elb_5xx: int = 0) -> None:
    """Seed AWS/ApplicationELB Sum datapoints for `lb` at `at` (moto stores them; nothing is evaluated)."""
    dimension = [{"Name": "LoadBalancer", "Value": lb["LoadBalancerArn"].split(":loadbalancer/", 1)[1]}]
    values = {"RequestCount": requests, "HTTPCode_Target_5XX_Count": target_5xx, "HTTPCode_ELB_5XX_Count": elb_5xx}
    aws.client("cloudwatch", REGION).put_metric_data(Namespace="AWS/ApplicationELB", MetricData=[
        {"MetricName": metric, "Dimensions": dimension, "Value": value, "Timestamp": at, "Unit": "Count"}
        for metric, value in values.items() if value
    ])


def firing_alarm(aws: AwsClients, name: str, *, reason: str, metric: str = "HTTPCode_Target_5XX_Count",
                 state: str = "ALARM") -> None:
    """An alarm forced into `state` with `set_alarm_state` (moto never evaluates alarms)."""
    cloudwatch = aws.client("cloudwatch", REGION)
    cloudwatch.put_metric_alarm(AlarmName=name, Namespace="AWS/ApplicationELB", MetricName=metric, Statistic="Sum",
                                Period=60, EvaluationPeriods=1, Threshold=5, ComparisonOperator="GreaterThanThreshold")
    cloudwatch.set_alarm_state(AlarmName=name, StateValue=state, StateReason=reason)


# --- network ACLs --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    number: int
    action: str  # allow | deny
    egress: bool
    ports: tuple[int, int] | None = None  # None with protocol "-1"
    protocol: str = "6"
    cidr: str = "0.0.0.0/0"


def custom_nacl(aws: AwsClients, net: Network, subnets: tuple[str, ...], rules: list[Rule]) -> str:
    """A new NACL with `rules`, replacing the default NACL on `subnets`. moto lists no implicit `*` rule."""
    ec2 = aws.client("ec2", REGION)
    acl_id = ec2.create_network_acl(VpcId=net.vpc_id)["NetworkAcl"]["NetworkAclId"]
    for rule in rules:
        extra = {"PortRange": {"From": rule.ports[0], "To": rule.ports[1]}} if rule.ports else {}
        ec2.create_network_acl_entry(NetworkAclId=acl_id, RuleNumber=rule.number, Protocol=rule.protocol,
                                     RuleAction=rule.action, Egress=rule.egress, CidrBlock=rule.cidr, **extra)
    acls = ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": list(subnets)}])
    for acl in acls["NetworkAcls"]:
        for assoc in acl["Associations"]:
            if assoc["SubnetId"] in subnets:
                ec2.replace_network_acl_association(AssociationId=assoc["NetworkAclAssociationId"],
                                                    NetworkAclId=acl_id)
    return acl_id


def web_nacl_rules(*, inbound_ephemeral: tuple[int, int] = (1024, 65535)) -> list[Rule]:
    """A sensible stateless NACL for web subnets: 80/443 in, everything out, ephemeral replies in."""
    return [
        Rule(100, "allow", egress=False, ports=(443, 443)),
        Rule(105, "allow", egress=False, ports=(80, 80)),
        Rule(110, "allow", egress=False, ports=inbound_ephemeral),
        Rule(100, "allow", egress=True, ports=None, protocol="-1"),
    ]


# --- endpoints, IAM, SSM -------------------------------------------------------------------------------------


def gateway_endpoint(aws: AwsClients, net: Network, *, service: str = "dynamodb",
                     route_tables: tuple[str, ...] = ()) -> str:
    """A gateway endpoint on `route_tables`. Build it on the right tables from the start: moto's
    `modify_vpc_endpoint(RemoveRouteTableIds=…)` leaves the `pl-… → vpce-…` route behind."""
    ec2 = aws.client("ec2", REGION)
    return ec2.create_vpc_endpoint(VpcId=net.vpc_id, ServiceName=f"com.amazonaws.{REGION}.{service}",
                                   VpcEndpointType="Gateway", RouteTableIds=list(route_tables))["VpcEndpoint"][
        "VpcEndpointId"]


def source_vpce_statement(endpoint_id: str, *, action: str = "dynamodb:*", operator: str = "StringEquals",
                          key: str = "aws:SourceVpce") -> dict[str, Any]:
    return {"Sid": "OnlyThroughEndpoint", "Effect": "Allow", "Action": action, "Resource": "*",
            "Condition": {operator: {key: endpoint_id}}}


def role_with_policy(aws: AwsClients, name: str, statements: list[dict[str, Any]], *, managed: bool = False) -> str:
    """A role whose (inline, or attached managed) policy holds `statements`."""
    iam = aws.client("iam", REGION)
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    document = json.dumps({"Version": "2012-10-17", "Statement": statements})
    if managed:
        arn = iam.create_policy(PolicyName=f"{name}-policy", PolicyDocument=document)["Policy"]["Arn"]
        iam.attach_role_policy(RoleName=name, PolicyArn=arn)
    else:
        iam.put_role_policy(RoleName=name, PolicyName=f"{name}-inline", PolicyDocument=document)
    return name


def put_parameter(aws: AwsClients, name: str, value: str, *, secure: bool = True) -> None:
    aws.client("ssm", REGION).put_parameter(Name=name, Value=value, Type="SecureString" if secure else "String")


def minutes_ago(now: datetime, minutes: int) -> datetime:
    return now - timedelta(minutes=minutes)


# --- EC2 instance metadata and API Gateway ---------------------------------------------------------------------


def metadata_instance(aws: AwsClients, *, tokens: str = "required", hop_limit: int = 2,
                      endpoint: str = "enabled") -> str:
    """A running instance with the given IMDS options (moto stores and returns them as AWS does)."""
    found = aws.client("ec2", REGION).run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
        MetadataOptions={"HttpTokens": tokens, "HttpPutResponseHopLimit": hop_limit, "HttpEndpoint": endpoint})
    return found["Instances"][0]["InstanceId"]


def rest_api(aws: AwsClients, function_arn: str, *, name: str = "orders", stage: str = "prod",
             rate_limit: float = 100.0, access_logs: bool = True, method_rate: float | None = None) -> str:
    """A REST API with GET /orders proxied to a Lambda (29 s integration timeout), deployed to `stage`."""
    api = aws.client("apigateway", REGION)
    api_id = api.create_rest_api(name=name)["id"]
    root = api.get_resources(restApiId=api_id)["items"][0]["id"]
    resource = api.create_resource(restApiId=api_id, parentId=root, pathPart="orders")["id"]
    api.put_method(restApiId=api_id, resourceId=resource, httpMethod="GET", authorizationType="NONE")
    api.put_integration(restApiId=api_id, resourceId=resource, httpMethod="GET", type="AWS_PROXY",
                        integrationHttpMethod="POST", timeoutInMillis=29000,
                        uri=f"arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/{function_arn}/invocations")
    api.create_deployment(restApiId=api_id, stageName=stage)
    patches = [{"op": "replace", "path": "/*/*/throttling/rateLimit", "value": str(rate_limit)}]
    if method_rate is not None:
        patches.append({"op": "replace", "path": "/~1orders/GET/throttling/rateLimit", "value": str(method_rate)})
    if access_logs:
        patches += [{"op": "replace", "path": "/accessLogSettings/destinationArn",
                     "value": f"arn:aws:logs:{REGION}:123456789012:log-group:{name}-access"},
                    {"op": "replace", "path": "/accessLogSettings/format", "value": "$context.requestId"}]
    api.update_stage(restApiId=api_id, stageName=stage, patchOperations=patches)
    return api_id


def http_api(aws: AwsClients, function_arn: str, *, rate_limit: float = 100.0, access_logs: bool = True) -> str:
    """An HTTP API with GET /orders → Lambda (30 s) and a `$default` stage."""
    api = aws.client("apigatewayv2", REGION)
    api_id = api.create_api(Name="orders-http", ProtocolType="HTTP")["ApiId"]
    integration = api.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=function_arn,
                                         PayloadFormatVersion="2.0", TimeoutInMillis=30000)["IntegrationId"]
    api.create_route(ApiId=api_id, RouteKey="GET /orders", Target=f"integrations/{integration}")
    logs = ({"AccessLogSettings": {"DestinationArn": f"arn:aws:logs:{REGION}:123456789012:log-group:http-access",
                                   "Format": "$context.requestId"}} if access_logs else {})
    api.create_stage(ApiId=api_id, StageName="$default", **logs,
                     DefaultRouteSettings={"ThrottlingRateLimit": rate_limit, "ThrottlingBurstLimit": 50})
    return api_id


def put_api_traffic(aws: AwsClients, dimensions: dict[str, str], *, at: datetime, requests: int, e5: int = 0,
                    e4: int = 0, latency_ms: float = 80.0, integration_ms: float = 60.0, http: bool = False) -> None:
    """Seed one minute of AWS/ApiGateway datapoints (REST names by default, HTTP API names with `http=True`)."""
    names = ("Count", "5xx", "4xx") if http else ("Count", "5XXError", "4XXError")
    values = [*zip(names, (requests, e5, e4), strict=True), ("Latency", latency_ms),
              ("IntegrationLatency", integration_ms)]
    dims = [{"Name": k, "Value": v} for k, v in dimensions.items()]
    aws.client("cloudwatch", REGION).put_metric_data(Namespace="AWS/ApiGateway", MetricData=[
        {"MetricName": name, "Dimensions": dims, "Value": value, "Timestamp": at} for name, value in values])


# --- security groups, NAT gateways, functions in a VPC, interface endpoints ----------------------------------


def security_group(aws: AwsClients, net: Network, name: str, *, ingress: list[tuple[int, str]] = (),
                   egress: list[tuple[int, str]] | None = None) -> str:
    """A security group with TCP rules (port, source) where source is an `sg-…` id or a CIDR. `egress=None` keeps
    the allow-all egress rule AWS creates; a list replaces it."""
    ec2 = aws.client("ec2", REGION)
    group = ec2.create_security_group(GroupName=name, Description=name, VpcId=net.vpc_id)["GroupId"]
    if ingress:
        ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[_permission(*r) for r in ingress])
    if egress is not None:
        ec2.revoke_security_group_egress(GroupId=group, IpPermissions=[
            {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        if egress:
            ec2.authorize_security_group_egress(GroupId=group, IpPermissions=[_permission(*r) for r in egress])
    return group


def _permission(port: int, source: str) -> dict[str, Any]:
    peer = {"UserIdGroupPairs": [{"GroupId": source}]} if source.startswith("sg-") else {
        "IpRanges": [{"CidrIp": source}]}
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, **peer}


def instance_in(aws: AwsClients, net: Network, groups: list[str]) -> str:
    ec2 = aws.client("ec2", REGION)
    found = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SubnetId=net.private_subnets[0],
                              SecurityGroupIds=groups)
    return found["Instances"][0]["InstanceId"]


def vpc_function(aws: AwsClients, name: str, subnets: tuple[str, ...], groups: list[str], *, role: str,
                 env: dict[str, str] | None = None) -> dict[str, Any]:
    """A Lambda function attached to `subnets`, running as `role` (whose policies say which AWS services it calls)."""
    from tests.aws_lambda_scenarios import code_zip

    arn = aws.client("iam", REGION).get_role(RoleName=role)["Role"]["Arn"]
    return aws.client("lambda", REGION).create_function(
        FunctionName=name, Runtime="python3.12", Role=arn, Handler="app.handler", Code={"ZipFile": code_zip()},
        VpcConfig={"SubnetIds": list(subnets), "SecurityGroupIds": groups}, Environment={"Variables": env or {}})


def delete_nat(aws: AwsClients, net: Network) -> None:
    """The private subnets keep their 0.0.0.0/0 route to the NAT gateway, which AWS then shows as a blackhole."""
    aws.client("ec2", REGION).delete_nat_gateway(NatGatewayId=net.nat_id)


def put_nat_metrics(aws: AwsClients, nat_id: str, at: datetime, **sums: float) -> None:
    """AWS/NATGateway datapoints (moto has no data plane, so they are seeded), e.g. ErrorPortAllocation=12."""
    aws.client("cloudwatch", REGION).put_metric_data(Namespace="AWS/NATGateway", MetricData=[
        {"MetricName": metric, "Dimensions": [{"Name": "NatGatewayId", "Value": nat_id}], "Timestamp": at,
         "Value": value, "Unit": "Count"} for metric, value in sums.items()])


def interface_endpoint(aws: AwsClients, net: Network, service: str, *, subnets: tuple[str, ...], groups: list[str],
                       private_dns: bool = True, policy: dict[str, Any] | None = None) -> str:
    ec2 = aws.client("ec2", REGION)
    params: dict[str, Any] = {"PolicyDocument": json.dumps(policy)} if policy else {}
    return ec2.create_vpc_endpoint(VpcId=net.vpc_id, ServiceName=f"com.amazonaws.{REGION}.{service}",
                                   VpcEndpointType="Interface", SubnetIds=list(subnets), SecurityGroupIds=groups,
                                   PrivateDnsEnabled=private_dns, **params)["VpcEndpoint"]["VpcEndpointId"]


def enable_vpc_dns(aws: AwsClients, net: Network, *, support: bool = True, hostnames: bool = True) -> None:
    ec2 = aws.client("ec2", REGION)
    ec2.modify_vpc_attribute(VpcId=net.vpc_id, EnableDnsSupport={"Value": support})
    ec2.modify_vpc_attribute(VpcId=net.vpc_id, EnableDnsHostnames={"Value": hostnames})
