"""RDS: is the instance up, how close it came to its connection limit in the last 15 minutes, and whether TLS
will let the app in: a server certificate authority that expired (or soon will), and a parameter group that forces
SSL (`rds.force_ssl=1`, MySQL's `require_secure_transport=1`) while the app connects with `sslmode=disable`
(`aws.db_client_sslmode` in the services file says which mode the app uses).

TCP reachability of the endpoint is deliberately not probed here: it depends on the network the bot runs in, and
the `tcp` entries of the services file and the `postgres` check already connect to the database. This check
reports what AWS says about the instance, which holds wherever the bot runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from checks.aws.clients import AwsCheckError
from checks.aws.common import aws_check, region
from checks.model import CheckResult, Status
from checks.registry import CheckContext, check
from checks.schema import replace

WINDOW = timedelta(minutes=15)
CONNECTIONS_WARN_RATIO = 0.8
CA_WARN = timedelta(days=30)  # rotating the CA needs a maintenance window and a client bundle: start early
CA_URGENT = timedelta(days=7)
FORCE_SSL_PARAMETERS = ("rds.force_ssl", "require_secure_transport")  # PostgreSQL, MySQL/MariaDB
VERIFYING_MODES = {"verify-ca", "verify-full"}  # the client checks the server's chain: an expired CA breaks it
# Statuses in which the instance still accepts connections: worth mentioning, not an outage.
STILL_SERVING = {
    "backing-up", "modifying", "storage-optimization", "configuring-enhanced-monitoring",
    "configuring-iam-database-auth", "configuring-log-exports", "storage-config-upgrade",
}


@check("aws.rds", timeout_s=20)
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
    params = await _user_parameters(ctx, instance)
    peak = await _peak_connections(ctx, instance_id)
    limit = _max_connections(params)
    sslmode = ctx.service.aws.db_client_sslmode.get(instance_id) if ctx.service.aws else None
    ca = await _certificate_authority(ctx, instance)
    evidence.update(connections_peak=peak, max_connections=limit, force_ssl=_forces_ssl(params),
                    client_sslmode=sslmode, **ca)
    problems = _tls_problems(instance_id, evidence, ctx.now)
    if peak is not None and limit and peak >= CONNECTIONS_WARN_RATIO * limit:
        problems.append(CheckResult(
            status=Status.warn,
            severity="P2",
            summary=f"RDS instance {instance_id} peaked at {peak} of {limit} connections in the last 15 min "
            f"({100 * peak / limit:.0f} %).",
            hint="New connections fail once the limit is reached: look for a pool that leaks or grew with the "
            "app's instance count, or put RDS Proxy in front.",
        ))
    if problems:
        return replace(_worst_first(problems), resource=resource, evidence=evidence)
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


def _worst_first(problems: list[CheckResult]) -> CheckResult:
    """One result for several problems: the worst leads, every sentence and hint is kept."""
    ranked = sorted(problems, key=lambda r: (r.status is not Status.fail, r.severity or "P9"))
    return replace(ranked[0], summary=" ".join(r.summary for r in ranked),
                   hint=" ".join(r.hint for r in ranked if r.hint))


def _tls_problems(instance_id: str, evidence: dict[str, Any], now: datetime) -> list[CheckResult]:
    problems = []
    sslmode = evidence["client_sslmode"]
    if evidence["force_ssl"] and sslmode == "disable":
        problems.append(CheckResult(
            status=Status.fail, severity="P1",
            summary=f"RDS instance {instance_id}'s parameter group forces SSL ({evidence['force_ssl']}=1) but the "
            "app connects with sslmode=disable: every connection is refused.",
            hint="Connect with sslmode=require (or verify-full with the RDS CA bundle), or set the parameter back "
            "to 0 until the app is changed.",
        ))
    valid_till = evidence.get("ca_valid_till")
    if valid_till is None:
        return problems
    left = datetime.fromisoformat(valid_till) - now
    verifying = sslmode in VERIFYING_MODES
    ca = evidence["ca_certificate"]
    if left <= timedelta(0):
        problems.append(CheckResult(
            status=Status.fail if verifying else Status.warn, severity="P1" if verifying else "P2",
            summary=f"RDS instance {instance_id}'s certificate authority {ca} expired on {valid_till[:10]}"
            + (f": the app verifies the server (sslmode={sslmode}), so its connections fail." if verifying
               else "; clients that verify the server certificate cannot connect."),
            hint=_CA_HINT,
        ))
    elif left <= CA_WARN:
        problems.append(CheckResult(
            status=Status.warn, severity="P2" if left <= CA_URGENT else "P3",
            summary=f"RDS instance {instance_id}'s certificate authority {ca} expires in {left.days} days "
            f"({valid_till[:10]}).",
            hint=_CA_HINT,
        ))
    return problems


_CA_HINT = ("Rotate the instance to a current CA (`aws rds modify-db-instance --ca-certificate-identifier "
            "rds-ca-rsa2048-g1`, applied in a maintenance window, with a restart) and give the app the matching "
            "RDS CA bundle first.")


async def _certificate_authority(ctx: CheckContext, instance: dict[str, Any]) -> dict[str, Any]:
    """The instance's CA and when it stops being valid: `CertificateDetails.ValidTill` from the instance when AWS
    returns it, else `rds:DescribeCertificates` for that CA. A CA lookup that fails leaves the date unknown."""
    ca = instance.get("CACertificateIdentifier")
    details = instance.get("CertificateDetails") or {}
    valid_till = details.get("ValidTill")
    if ca and valid_till is None:
        try:
            found = await ctx.aws.call("rds", region(ctx), "describe_certificates", CertificateIdentifier=ca)
            valid_till = next((c.get("ValidTill") for c in found.get("Certificates", [])), None)
        except AwsCheckError:
            valid_till = None
    return {"ca_certificate": ca, "ca_valid_till": valid_till.isoformat() if valid_till else None}


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


async def _user_parameters(ctx: CheckContext, instance: dict[str, Any]) -> dict[str, str]:
    """The parameters set by hand in the instance's parameter groups (`rds:DescribeDBParameters`, Source=user):
    read once for both the connection limit and the SSL setting."""
    values: dict[str, str] = {}
    for group in instance.get("DBParameterGroups", []):
        params = await ctx.aws.paginate(
            "rds", region(ctx), "describe_db_parameters", "Parameters",
            DBParameterGroupName=group["DBParameterGroupName"], Source="user",
        )
        for param in params:
            values.setdefault(param["ParameterName"], str(param.get("ParameterValue") or ""))
    return values


def _max_connections(params: dict[str, str]) -> int | None:
    """`max_connections` when the parameter group sets a number.

    The engine default is a formula over instance memory (`{DBInstanceClassMemory/9531392}`), which the check
    does not evaluate; then the limit is unknown and only the peak is reported.
    """
    value = params.get("max_connections", "")
    return int(value) if value.isdigit() else None


def _forces_ssl(params: dict[str, str]) -> str | None:
    """The name of the parameter that forces SSL when one is set to 1 (or ON), else None."""
    return next((name for name in FORCE_SSL_PARAMETERS if params.get(name, "").lower() in ("1", "on")), None)
