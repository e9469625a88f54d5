"""What every AWS check shares: turning AWS errors into `error` results, and the lookups several checks need.

Write an AWS check as the happy path and let `@aws_check` handle the failure path (its row in checks/catalog.py
says which entries it runs for, e.g. `Check("checks.aws.thing", aws_items("things"), Layer.platform)`):

    @check("aws.thing", timeout_s=20)
    @aws_check
    async def thing(name: str, ctx: CheckContext) -> CheckResult:
        found = await ctx.aws.call("svc", region(ctx), "describe_thing", Name=name)
        ...

Any `AwsCheckError` raised inside becomes `CheckResult(status=error)` whose summary is the error's sentence
("Access denied: the bot's role needs elasticloadbalancing:DescribeTargetHealth") and whose hint says what to do.
Catch `AwsCheckError` yourself only where an AWS error *is* the finding (e.g. SSM `ParameterNotFound` is a
`fail`, not an `error`); `aws_error_code(exc)` tells you which error it was.

Evidence convention: a value that is a list of flat dicts with the same keys is a table (one dict per row, keys
in column order). Renderers show such lists side by side; keep cell values short strings, numbers or booleans.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import botocore.exceptions

from checks.aws.clients import AwsCheckError
from checks.model import CheckResult, Problem, Status, fold
from checks.registry import CheckContext

__all__ = [
    "DNS_ATTRIBUTE_FLAGS",
    "LoadBalancerNotFound",
    "Problem",
    "RouteTable",
    "aws_check",
    "aws_error_code",
    "default_route",
    "describe_load_balancer",
    "error_result",
    "fold",
    "function_configuration",
    "region",
    "route_target",
    "service_subnets",
    "subnet_route_tables",
    "vpc_dns_attributes",
]

Item = TypeVar("Item")
CheckFn = Callable[[Item, CheckContext], Awaitable[CheckResult]]

_NEEDS_ACTION = re.compile(r"needs (\S+:\S+)")


def aws_check(func: CheckFn[Item]) -> CheckFn[Item]:
    """Make `func` return an `error` result, rather than raise, when an AWS call fails."""

    @functools.wraps(func)
    async def run(item: Item, ctx: CheckContext) -> CheckResult:
        if ctx.aws is None:
            return CheckResult(status=Status.error, summary="No AWS clients were set up for this service.")
        try:
            return await func(item, ctx)
        except AwsCheckError as exc:
            return error_result(exc)

    return run


def error_result(exc: AwsCheckError) -> CheckResult:
    """The `error` result for a failed AWS call: its sentence as summary and a hint that fits the failure."""
    sentence = str(exc)
    action = _NEEDS_ACTION.search(sentence)
    if action:
        hint = f"Allow {action.group(1)} for the bot's IAM role (deploy/iam-policy.json), then rerun."
    elif "throttl" in sentence.lower():
        hint = "AWS is rate-limiting this account's API calls; rerun in a minute."
    else:
        hint = "Check that the resource named in the services file exists in this account and region."
    return CheckResult(status=Status.error, summary=sentence, hint=hint)


def aws_error_code(exc: AwsCheckError) -> str:
    """The AWS error code behind `exc` (`ParameterNotFound`, `InvalidVpcEndpointId.NotFound`), or ""."""
    cause = exc.__cause__
    if isinstance(cause, botocore.exceptions.ClientError):
        return str(cause.response.get("Error", {}).get("Code", ""))
    return ""


def region(ctx: CheckContext) -> str:
    assert ctx.service.aws is not None, "AWS checks run only for services with an `aws` block"
    return ctx.service.aws.region


# --- Load balancers ------------------------------------------------------------------------------------------


class LoadBalancerNotFound(AwsCheckError):
    """The services file names a load balancer that does not exist in the service's region."""


async def describe_load_balancer(ctx: CheckContext, name_or_arn: str) -> dict[str, Any]:
    """One load balancer by name or ARN (`elasticloadbalancing:DescribeLoadBalancers`)."""
    key = "LoadBalancerArns" if name_or_arn.startswith("arn:") else "Names"
    try:
        found = await ctx.aws.call("elbv2", region(ctx), "describe_load_balancers", **{key: [name_or_arn]})
    except AwsCheckError as exc:
        if aws_error_code(exc) == "LoadBalancerNotFound":
            raise LoadBalancerNotFound(
                f"No load balancer {name_or_arn} in {region(ctx)}: fix the services file or look for who deleted it"
            ) from exc
        raise
    return found["LoadBalancers"][0]


# --- Route tables --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteTable:
    """The route table a subnet really uses: its explicit association, else the VPC's main route table."""

    subnet_id: str
    vpc_id: str
    route_table_id: str
    main: bool  # True when the subnet has no explicit association and silently uses the main route table
    routes: list[dict[str, Any]] = field(default_factory=list, compare=False)


async def subnet_route_tables(ctx: CheckContext, subnet_ids: Iterable[str]) -> dict[str, RouteTable]:
    """The effective route table of each subnet (`ec2:DescribeRouteTables`, `ec2:DescribeSubnets`).

    A subnet without an explicit association uses its VPC's main route table; forgetting that is how a "public"
    subnet ends up routing through a NAT gateway.
    """
    subnet_ids = list(dict.fromkeys(subnet_ids))
    if not subnet_ids:
        return {}
    # One call per subnet: moto matches a multi-valued `association.subnet-id` filter only when a table's
    # associations are a subset or superset of the values, so a shared table would be missed.
    explicit = await asyncio.gather(*(_explicit_route_table(ctx, subnet) for subnet in subnet_ids))
    found = {table.subnet_id: table for table in explicit if table is not None}
    implicit = [s for s in subnet_ids if s not in found]
    if implicit:
        found.update(await _main_route_tables(ctx, implicit))
    return found


async def _explicit_route_table(ctx: CheckContext, subnet_id: str) -> RouteTable | None:
    found = await ctx.aws.call("ec2", region(ctx), "describe_route_tables",
                               Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}])
    for table in found["RouteTables"]:
        for assoc in table.get("Associations", []):
            if assoc.get("SubnetId") == subnet_id:
                return RouteTable(subnet_id, table["VpcId"], table["RouteTableId"], False, table.get("Routes", []))
    return None


async def _main_route_tables(ctx: CheckContext, subnet_ids: list[str]) -> dict[str, RouteTable]:
    subnets = await ctx.aws.call("ec2", region(ctx), "describe_subnets", SubnetIds=subnet_ids)
    vpc_of = {s["SubnetId"]: s["VpcId"] for s in subnets["Subnets"]}
    mains = await ctx.aws.call(
        "ec2", region(ctx), "describe_route_tables",
        Filters=[
            {"Name": "vpc-id", "Values": sorted(set(vpc_of.values()))},
            {"Name": "association.main", "Values": ["true"]},
        ],
    )
    main_of_vpc = {t["VpcId"]: t for t in mains["RouteTables"]}
    return {
        subnet: RouteTable(subnet, vpc, main_of_vpc[vpc]["RouteTableId"], True, main_of_vpc[vpc].get("Routes", []))
        for subnet, vpc in vpc_of.items()
        if vpc in main_of_vpc
    }


_TARGET_KEYS = (
    "GatewayId", "NatGatewayId", "TransitGatewayId", "VpcPeeringConnectionId", "NetworkInterfaceId",
    "InstanceId", "EgressOnlyInternetGatewayId", "CarrierGatewayId", "LocalGatewayId", "CoreNetworkArn",
)


def default_route(routes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The IPv4 `0.0.0.0/0` route of a route table, or None."""
    return next((r for r in routes if r.get("DestinationCidrBlock") == "0.0.0.0/0"), None)


def route_target(route: dict[str, Any] | None) -> str | None:
    """Where a route sends traffic: `igw-…`, `nat-…`, `vpce-…`, `local`, `tgw-…`, …"""
    if route is None:
        return None
    return next((str(route[key]) for key in _TARGET_KEYS if route.get(key)), None)


# --- The service's VPC ---------------------------------------------------------------------------------------


async def service_subnets(ctx: CheckContext) -> list[str]:
    """`aws.subnets` and the subnets of the service's functions in a VPC (`lambda:GetFunctionConfiguration`)."""
    assert ctx.service.aws is not None
    found = list(ctx.service.aws.subnets)
    for function in ctx.service.aws.lambda_functions:
        config = await function_configuration(ctx, function)
        found += (config.get("VpcConfig") or {}).get("SubnetIds") or []
    return list(dict.fromkeys(found))


# A VPC DNS attribute → its `aws ec2 modify-vpc-attribute` flag, for hints.
DNS_ATTRIBUTE_FLAGS = {"enableDnsSupport": "--enable-dns-support", "enableDnsHostnames": "--enable-dns-hostnames"}


async def vpc_dns_attributes(ctx: CheckContext, vpc: str) -> dict[str, bool]:
    """`enableDnsSupport` and `enableDnsHostnames` of a VPC (`ec2:DescribeVpcAttribute`)."""
    found = {}
    for attribute in DNS_ATTRIBUTE_FLAGS:
        answer = await ctx.aws.call("ec2", region(ctx), "describe_vpc_attribute", VpcId=vpc, Attribute=attribute)
        found[attribute] = bool(answer[attribute[0].upper() + attribute[1:]]["Value"])
    return found


async def function_configuration(ctx: CheckContext, function: str) -> dict[str, Any]:
    """A Lambda function's configuration (`lambda:GetFunctionConfiguration`, once per run through the memo)."""
    assert ctx.aws is not None
    return await ctx.aws.call("lambda", region(ctx), "get_function_configuration", FunctionName=function)
