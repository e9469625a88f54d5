"""Cloud SQL: instance state, connections against the limit, server CA expiry (`gcp.cloud_sql`), and whether the
app's way in matches the instance (`gcp.cloud_sql_access`: SSL mode against what the client presents, private IP
or authorized networks against the path the services file names).

Connection limits when no `max_connections` flag or spec value says otherwise are Cloud SQL's defaults by memory
(PostgreSQL) or tier (MySQL) as documented for Cloud SQL; they were not verified against a live instance.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime, timedelta
from typing import Any

from checks.gcp.api import GcpCheckError, call, gcp_check, spec
from checks.gcp.monitoring import metric_filter, peak, series
from checks.model import CheckResult, Status
from checks.registry import CheckContext, check
from checks.services import CloudSqlSpec

CA_WARN = timedelta(days=30)
CONNECTIONS_WINDOW = timedelta(minutes=10)
FAIL_AT_USE, WARN_AT_USE = 0.9, 0.75
# PostgreSQL default max_connections by instance memory (GB, lower bound) — Cloud SQL's documented table.
_PG_BY_MEMORY = [(120, 500), (60, 400), (30, 300), (15, 250), (7.5, 200), (6, 150), (3.75, 100), (1.7, 50), (0, 25)]
_MYSQL_BY_TIER = {"db-f1-micro": 250, "db-g1-small": 1000}
_MYSQL_DEFAULT = 4000
_STATE_SENTENCE = {
    "SUSPENDED": "is suspended (not available)",
    "MAINTENANCE": "is down for maintenance",
    "FAILED": "has failed (creation failed or a fatal error during maintenance)",
    "PENDING_CREATE": "is still being created",
    "PENDING_DELETE": "is being deleted",
    "REPAIRING": "is repairing its read pool nodes",
    "SQL_INSTANCE_STATE_UNSPECIFIED": "is in an unknown state",
}


async def get_instance(ctx: CheckContext, name: str) -> dict[str, Any]:
    return await call(ctx, "sql.instances.get", project=spec(ctx).project, name=name)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def connection_limit(instance: dict[str, Any], db: CloudSqlSpec) -> int | None:
    if db.max_connections:
        return db.max_connections
    settings = instance.get("settings", {})
    flag = next((f.get("value") for f in settings.get("databaseFlags", []) if f.get("name") == "max_connections"), None)
    if flag and str(flag).isdigit():
        return int(flag)
    tier = settings.get("tier", "")
    if instance.get("databaseVersion", "").startswith("MYSQL"):
        return _MYSQL_BY_TIER.get(tier, _MYSQL_DEFAULT)
    memory = _tier_memory_gb(tier)
    return next(limit for floor, limit in _PG_BY_MEMORY if memory >= floor) if memory is not None else None


def _tier_memory_gb(tier: str) -> float | None:
    custom = re.fullmatch(r"db-custom-\d+-(\d+)", tier)
    if custom:
        return int(custom.group(1)) / 1024
    return {"db-f1-micro": 0.6, "db-g1-small": 1.7}.get(tier)


async def peak_connections(ctx: CheckContext, instance: dict[str, Any], name: str) -> float | None:
    postgres = instance.get("databaseVersion", "").startswith("POSTGRES")
    metric = ("cloudsql.googleapis.com/database/postgresql/num_backends" if postgres
              else "cloudsql.googleapis.com/database/network/connections")
    query = metric_filter(metric, "cloudsql_database", resource__labels__database_id=f"{spec(ctx).project}:{name}")
    try:
        found = await series(ctx, query, ctx.now - CONNECTIONS_WINDOW, ctx.now, aligner="ALIGN_MAX",
                             reducer="REDUCE_SUM")
    except GcpCheckError:
        return None
    return peak(found)


def state_problem(instance: dict[str, Any]) -> tuple[str, str] | None:
    """(sentence, hint) when the instance is not available."""
    state = instance.get("state", "SQL_INSTANCE_STATE_UNSPECIFIED")
    if state == "RUNNABLE":
        if instance.get("settings", {}).get("activationPolicy") == "NEVER":
            return "is stopped by its owner (activation policy NEVER)", "Start it: `gcloud sql instances patch " \
                f"{instance.get('name', '')} --activation-policy ALWAYS`."
        return None
    reasons = ", ".join(instance.get("suspensionReason", []))
    sentence = _STATE_SENTENCE.get(state, f"is {state}") + (f" ({reasons})" if reasons else "")
    hint = ("A billing problem suspends every instance of the project: fix billing first." if "BILLING" in reasons
            else "See the instance's operations in the console (`gcloud sql operations list --instance ...`).")
    return sentence, hint


@check("gcp.cloud_sql", timeout_s=25)
@gcp_check
async def cloud_sql(db: CloudSqlSpec, ctx: CheckContext) -> CheckResult:
    """Cloud SQL instance state, connections against the limit and server CA expiry"""
    instance = await get_instance(ctx, db.instance)
    resource = instance.get("connectionName") or f"{spec(ctx).project}:{spec(ctx).region}:{db.instance}"
    limit = connection_limit(instance, db)
    used = await peak_connections(ctx, instance, db.instance) if instance.get("state") == "RUNNABLE" else None
    expires = (instance.get("serverCaCert") or {}).get("expirationTime")
    evidence = {"state": instance.get("state"), "tier": instance.get("settings", {}).get("tier"),
                "database_version": instance.get("databaseVersion"), "connections_peak_10m": used,
                "connection_limit": limit, "server_ca_expires": expires}
    problem = state_problem(instance)
    if problem:
        return CheckResult(status=Status.fail, severity="P1", summary=f"Cloud SQL {db.instance} {problem[0]}.",
                           resource=resource, evidence=evidence, hint=problem[1])
    if used is not None and limit:
        use = used / limit
        if use >= WARN_AT_USE:
            return CheckResult(
                status=Status.fail if use >= FAIL_AT_USE else Status.warn, severity="P1" if use >= FAIL_AT_USE else "P2",
                summary=f"Cloud SQL {db.instance} peaked at {used:.0f} of {limit} connections ({use:.0%}) in the "
                        "last 10 min; new connections will be refused at the limit.",
                resource=resource, evidence=evidence,
                hint="Look for a connection leak or too many instances × pool size; raise max_connections or the tier.")
    if expires and parse_time(expires) - ctx.now < CA_WARN:
        expired = parse_time(expires) <= ctx.now
        return CheckResult(
            status=Status.fail if expired else Status.warn, severity="P1" if expired else "P2",
            summary=f"Cloud SQL {db.instance}'s server CA certificate {'expired' if expired else 'expires'} "
                    f"{expires}; clients that verify it will refuse to connect.",
            resource=resource, evidence=evidence,
            hint="Rotate the server CA (`gcloud sql ssl server-ca-certs create/rotate`) and ship the new CA to clients.")
    usage = f"{used:.0f}/{limit} connections" if used is not None and limit else "connections not measured"
    return CheckResult(status=Status.ok, summary=f"Cloud SQL {db.instance} is RUNNABLE; {usage}.",
                       resource=resource, evidence=evidence)


# --- access: SSL and network path ------------------------------------------------------------------------------


def ssl_mode(instance: dict[str, Any]) -> str:
    ip = instance.get("settings", {}).get("ipConfiguration", {})
    if ip.get("sslMode"):
        return str(ip["sslMode"])  # has priority over requireSsl
    return "TRUSTED_CLIENT_CERTIFICATE_REQUIRED" if ip.get("requireSsl") else "ALLOW_UNENCRYPTED_AND_ENCRYPTED"


def ssl_problem(mode: str, client: str | None) -> tuple[Status, str] | None:
    if client is None:
        return None
    if mode == "TRUSTED_CLIENT_CERTIFICATE_REQUIRED" and client != "cert":
        return Status.fail, "requires a trusted client certificate, and the app presents none"
    if mode == "ENCRYPTED_ONLY" and client == "none":
        return Status.fail, "accepts encrypted connections only, and the app connects without TLS"
    if mode == "ALLOW_UNENCRYPTED_AND_ENCRYPTED" and client == "none":
        return Status.warn, "lets the app connect unencrypted"
    return None


def path_problem(instance: dict[str, Any], db: CloudSqlSpec) -> str | None:
    ip = instance.get("settings", {}).get("ipConfiguration", {})
    kinds = {a.get("type") for a in instance.get("ipAddresses", [])}
    if db.path == "private" and not (ip.get("privateNetwork") and "PRIVATE" in kinds):
        return "has no private IP, and the app connects over the private network"
    if db.path in ("public", "connector") and not ip.get("ipv4Enabled", "PRIMARY" in kinds):
        return "has no public IP, and the app connects over it"
    if db.path == "public" and db.client_cidrs:
        allowed = [ipaddress.ip_network(n.get("value", ""), strict=False) for n in ip.get("authorizedNetworks", [])]
        outside = [str(c) for c in db.client_cidrs if not any(c.subnet_of(a) for a in allowed if a.version == 4)]
        if outside:
            return f"does not authorize the app's address(es) {', '.join(outside)} (authorized networks)"
    return None


@check("gcp.cloud_sql_access", timeout_s=20)
@gcp_check
async def cloud_sql_access(db: CloudSqlSpec, ctx: CheckContext) -> CheckResult:
    """Cloud SQL SSL mode against the client, and the private IP / authorized networks path"""
    instance = await get_instance(ctx, db.instance)
    resource = instance.get("connectionName") or db.instance
    mode = ssl_mode(instance)
    ip = instance.get("settings", {}).get("ipConfiguration", {})
    evidence = {"ssl_mode": mode, "client_ssl": db.client_ssl, "path": db.path,
                "private_network": ip.get("privateNetwork"), "ipv4_enabled": ip.get("ipv4Enabled"),
                "authorized_networks": [n.get("value") for n in ip.get("authorizedNetworks", [])]}
    ssl = ssl_problem(mode, db.client_ssl)
    path = path_problem(instance, db)
    if path:
        return CheckResult(status=Status.fail, severity="P1", summary=f"Cloud SQL {db.instance} {path}.",
                           resource=resource, evidence=evidence,
                           hint="Connect the way the instance allows (Cloud SQL Auth Proxy / connector needs no "
                                "authorized network) or change the instance's IP configuration.")
    if ssl:
        return CheckResult(status=ssl[0], severity="P1" if ssl[0] is Status.fail else "P3",
                           summary=f"Cloud SQL {db.instance} ({mode}) {ssl[1]}.", resource=resource,
                           evidence=evidence,
                           hint="Make the client's sslmode match the instance, or change ssl_mode with "
                                "`gcloud sql instances patch --ssl-mode`.")
    return CheckResult(status=Status.ok, summary=f"Cloud SQL {db.instance}: SSL mode {mode} and the "
                                                 f"{db.path or 'configured'} path fit the client.",
                       resource=resource, evidence=evidence)
