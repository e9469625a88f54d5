"""Whether the AWS resources a Pulumi state records still exist: the one kind of drift knowable without a preview.

Each supported type has one read-only lookup by the `id` the state records; "not found" is drift, any other error
is an error of the check. A resource's region is its provider's (`aws:region` of the provider resource the state
records), else the one in its ARN, else the service's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from checks.aws.clients import AwsCheckError
from checks.aws.common import aws_error_code
from checks.registry import CheckContext

MAX_CHECKED = 40  # lookups per stack; the rest are counted as not checked

# type token → (botocore service, operation, parameters from the id, error codes that mean "gone")
_LOOKUPS: dict[str, tuple[str, str, Any, frozenset[str]]] = {
    "aws:s3/bucket:Bucket": ("s3", "head_bucket", lambda i: {"Bucket": i}, frozenset({"404", "NoSuchBucket"})),
    "aws:s3/bucketV2:BucketV2": ("s3", "head_bucket", lambda i: {"Bucket": i}, frozenset({"404", "NoSuchBucket"})),
    "aws:lambda/function:Function": ("lambda", "get_function_configuration", lambda i: {"FunctionName": i},
                                     frozenset({"ResourceNotFoundException"})),
    "aws:ec2/securityGroup:SecurityGroup": ("ec2", "describe_security_groups", lambda i: {"GroupIds": [i]},
                                            frozenset({"InvalidGroup.NotFound", "InvalidGroupId.Malformed"})),
    "aws:lb/targetGroup:TargetGroup": ("elbv2", "describe_target_groups", lambda i: {"TargetGroupArns": [i]},
                                       frozenset({"TargetGroupNotFound"})),
    "aws:alb/targetGroup:TargetGroup": ("elbv2", "describe_target_groups", lambda i: {"TargetGroupArns": [i]},
                                        frozenset({"TargetGroupNotFound"})),
}


@dataclass
class DriftFound:
    checked: int = 0
    unchecked: int = 0  # supported resources beyond MAX_CHECKED
    missing: list[dict[str, str]] = field(default_factory=list)


async def missing_resources(ctx: CheckContext, deployment: dict[str, Any]) -> DriftFound:
    resources = deployment.get("resources") or []
    regions = _provider_regions(resources)
    fallback = ctx.service.aws.region if ctx.service.aws else "us-east-1"
    supported = [r for r in resources if r.get("type") in _LOOKUPS and r.get("id") and not r.get("delete")]
    found = DriftFound(unchecked=max(0, len(supported) - MAX_CHECKED))
    for resource in supported[:MAX_CHECKED]:
        region = regions.get(str(resource.get("provider", "")).rsplit("::", 1)[0]) or _arn_region(resource) or fallback
        found.checked += 1
        if not await _exists(ctx, resource, region):
            found.missing.append({"name": str(resource.get("urn", "")).rsplit("::", 1)[-1],
                                  "type": resource["type"], "id": str(resource["id"]), "region": region})
    return found


async def _exists(ctx: CheckContext, resource: dict[str, Any], region: str) -> bool:
    assert ctx.aws is not None
    service, operation, params, gone = _LOOKUPS[resource["type"]]
    try:
        answer = await ctx.aws.call(service, region, operation, **params(str(resource["id"])))
    except AwsCheckError as exc:
        if aws_error_code(exc) in gone:
            return False
        raise
    return operation != "describe_target_groups" or bool(answer.get("TargetGroups"))


def _provider_regions(resources: list[dict[str, Any]]) -> dict[str, str]:
    """Provider URN → the region it was configured with (the default provider's comes from `aws:region`)."""
    regions = {}
    for resource in resources:
        if str(resource.get("type", "")).startswith("pulumi:providers:aws"):
            region = (resource.get("inputs") or {}).get("region") or (resource.get("outputs") or {}).get("region")
            if isinstance(region, str):
                regions[str(resource.get("urn"))] = region
    return regions


def _arn_region(resource: dict[str, Any]) -> str | None:
    arn = str((resource.get("outputs") or {}).get("arn") or resource.get("id") or "")
    parts = arn.split(":")
    return parts[3] if arn.startswith("arn:") and len(parts) > 3 and parts[3] else None
