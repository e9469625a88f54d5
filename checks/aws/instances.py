"""`aws.instance_metadata`: the instance metadata service (IMDS) options that stop code on an instance getting
its role's credentials.

- `HttpEndpoint=disabled`: nothing on the instance can read metadata or credentials; SDKs fail with "Unable to
  locate credentials".
- `HttpTokens=required` with `HttpPutResponseHopLimit=1`: the IMDSv2 token `PUT` answer is dropped one hop out,
  so containers on a bridge network (Docker, ECS bridge mode, EKS pods without host networking) cannot get a token
  while the host can.
- `HttpTokens=optional` is IMDSv1 still allowed: evidence only, not a cause of an outage.
"""

from __future__ import annotations

from typing import Any

from checks.aws.common import Problem, aws_check, fold, region
from checks.model import CheckResult, Status
from checks.registry import CheckContext, check


@check("aws.instance_metadata", timeout_s=15)
@aws_check
async def instance_metadata(instance_id: str, ctx: CheckContext) -> CheckResult:
    """EC2 metadata options: IMDS disabled, or IMDSv2 required with a hop limit of 1 that containers cannot cross."""
    assert ctx.aws is not None
    found = await ctx.aws.call("ec2", region(ctx), "describe_instances", InstanceIds=[instance_id])
    instance = next((i for r in found.get("Reservations", []) for i in r.get("Instances", [])), None)
    if instance is None:
        return CheckResult(status=Status.error, summary=f"No instance {instance_id} in {region(ctx)}.",
                           resource=instance_id, hint="Fix aws.instances in the services file.")
    options = instance.get("MetadataOptions") or {}
    evidence = metadata_evidence(instance, options)
    ok = (f"{instance_id}: metadata on, IMDSv2 {'required' if options.get('HttpTokens') == 'required' else 'optional'}"
          f", hop limit {options.get('HttpPutResponseHopLimit')}.")
    return fold(metadata_problems(instance_id, options), ok=ok, resource=instance_id, evidence=evidence)


def metadata_evidence(instance: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    return {
        "instance": instance.get("InstanceId"),
        "state": (instance.get("State") or {}).get("Name"),
        "http_endpoint": options.get("HttpEndpoint"),
        "http_tokens": options.get("HttpTokens"),
        "hop_limit": options.get("HttpPutResponseHopLimit"),
        "options_state": options.get("State"),  # "pending" while a change is being applied
        "instance_profile": (instance.get("IamInstanceProfile") or {}).get("Arn"),
        "imdsv1_allowed": options.get("HttpTokens") == "optional",
    }


def metadata_problems(instance_id: str, options: dict[str, Any]) -> list[Problem]:
    fix = f"`aws ec2 modify-instance-metadata-options --instance-id {instance_id}"
    if options.get("HttpEndpoint") == "disabled":
        return [Problem(
            Status.fail, "P1",
            f"The metadata service is disabled on {instance_id}: code on it cannot get its role's credentials.",
            f"{fix} --http-endpoint enabled --http-tokens required`.",
        )]
    if options.get("HttpTokens") == "required" and int(options.get("HttpPutResponseHopLimit") or 1) < 2:
        return [Problem(
            Status.warn, "P2",
            f"{instance_id} requires IMDSv2 with a hop limit of 1: containers on it (Docker bridge, ECS bridge "
            "mode, EKS pods) cannot get a metadata token, so their SDKs find no credentials.",
            f"{fix} --http-put-response-hop-limit 2` (the host is unaffected).",
        )]
    return []
