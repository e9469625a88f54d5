"""RDS: is the instance up, and how close it came to its connection limit in the last 15 minutes.

TCP reachability of the endpoint is deliberately not probed here: it depends on the network the bot runs in, and
the `tcp` entries of the services file and the `postgres` check already connect to the database. This check
reports what AWS says about the instance, which holds wherever the bot runs.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from checks.aws.common import aws_check, region
from checks.model import CheckResult, Status
from checks.registry import CheckContext, Layer, aws_items, check

WINDOW = timedelta(minutes=15)
CONNECTIONS_WARN_RATIO = 0.8
# Statuses in which the instance still accepts connections: worth mentioning, not an outage.
STILL_SERVING = {
    "backing-up", "modifying", "storage-optimization", "configuring-enhanced-monitoring",
    "configuring-iam-database-auth", "configuring-log-exports", "storage-config-upgrade",
}


@check("aws.rds", each=aws_items("db_instances"), layer=Layer.platform, timeout_s=20)
@aws_check
async def rds(instance_id: str, ctx: CheckContext) -> CheckResult:
    """RDS instance status and peak connections against max_connections"""
    found = await ctx.aws.call("rds", region(ctx), "describe_db_instances", DBInstanceIdentifier=instance_id)
    instance = found["DBInstances"][0]
    status = instance.get("DBInstanceStatus", "unknown")
    endpoint = instance.get("Endpoint") or {}
    evidence: dict[str, Any] = {
        "endpoint": f"{endpoint['Address']}:{endpoint['Port']}" if endpoint else None,
        "engine": f"{instance.get('Engine')} {instance.get('EngineVersion', '')}".strip(),
        "instance_class": instance.get("DBInstanceClass"),
        "status": status,
        "multi_az": instance.get("MultiAZ", False),
    }
    resource = instance.get("DBInstanceArn", instance_id)
    if status != "available" and status not in STILL_SERVING:
        return CheckResult(
            status=Status.fail,
            severity="P0",
            summary=f"RDS instance {instance_id} is {status}, not available: the app cannot use its database.",
            resource=resource,
            evidence=evidence,
            hint=_DOWN_HINTS.get(status, "Look at the instance's recent events (RDS console → Logs & events)."),
        )
    peak = await _peak_connections(ctx, instance_id)
    limit = await _max_connections(ctx, instance)
    evidence.update(connections_peak=peak, max_connections=limit)
    if peak is not None and limit and peak >= CONNECTIONS_WARN_RATIO * limit:
        return CheckResult(
            status=Status.warn,
            severity="P2",
            summary=f"RDS instance {instance_id} peaked at {peak} of {limit} connections in the last 15 min "
            f"({100 * peak / limit:.0f} %).",
            resource=resource,
            evidence=evidence,
            hint="New connections fail once the limit is reached: look for a pool that leaks or grew with the "
            "app's instance count, or put RDS Proxy in front.",
        )
    serving = "" if status == "available" else " and still accepting connections"
    connections = "no DatabaseConnections data" if peak is None else (
        f"peak {peak}{f' of {limit}' if limit else ''} connections"
    )
    return CheckResult(
        status=Status.ok,
        summary=f"RDS instance {instance_id} is {status}{serving}; {connections} in the last 15 min.",
        resource=resource,
        evidence=evidence,
    )


_DOWN_HINTS = {
    "stopped": "Someone stopped it: start it with `aws rds start-db-instance`; it takes a few minutes.",
    "storage-full": "Writes fail until storage grows: increase allocated storage (or enable storage autoscaling) "
    "and find what filled it.",
    "failed": "The instance needs AWS or a point-in-time restore: look at RDS events and open a support case.",
    "incompatible-parameters": "A parameter group change cannot be applied: revert it and reboot.",
    "inaccessible-encryption-credentials": "The KMS key was disabled or its grant revoked: restore key access.",
}


async def _peak_connections(ctx: CheckContext, instance_id: str) -> int | None:
    """The highest DatabaseConnections minute in the window (`cloudwatch:GetMetricStatistics`), None if no data."""
    stats = await ctx.aws.call(
        "cloudwatch", region(ctx), "get_metric_statistics",
        Namespace="AWS/RDS", MetricName="DatabaseConnections",
        Dimensions=[{"Name": "DBInstanceIdentifier", "Value": instance_id}],
        StartTime=ctx.now - WINDOW, EndTime=ctx.now, Period=60, Statistics=["Maximum"],
    )
    points = [p["Maximum"] for p in stats.get("Datapoints", [])]
    return int(max(points)) if points else None


async def _max_connections(ctx: CheckContext, instance: dict[str, Any]) -> int | None:
    """`max_connections` when the instance's parameter group sets a number (`rds:DescribeDBParameters`).

    The engine default is a formula over instance memory (`{DBInstanceClassMemory/9531392}`), which the check
    does not evaluate; then the limit is unknown and only the peak is reported.
    """
    for group in instance.get("DBParameterGroups", []):
        params = await ctx.aws.paginate(
            "rds", region(ctx), "describe_db_parameters", "Parameters",
            DBParameterGroupName=group["DBParameterGroupName"], Source="user",
        )
        value = next((p.get("ParameterValue") for p in params if p["ParameterName"] == "max_connections"), None)
        if value and value.isdigit():
            return int(value)
    return None
