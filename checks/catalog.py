"""Where each check is defined, so that a process imports a check's module — and what that module imports when
its check runs: boto3, psycopg, google-auth — only when it first needs that check.

A worker runs the checks a plan names, one at a time: `load_one` imports just the module of the check it is about
to run. Planning (the HTTP process's `/diagnose SERVICE` and `/diagnose list`) asks every check which entries of a
service it runs for, and those `each=` functions live beside the checks: `load` imports every module in the table.
The modules do no work at import time and import their SDKs inside the checks, so planning costs ~0.3 s once and
no SDK.

`MODULES` is declared here rather than discovered at run time; tests/test_check_catalog.py imports every module
under checks/ (`import_every_module`) and compares what they register with it, so a check without a row, or a row
without a check, fails there, printing the rows to paste.
"""

from __future__ import annotations

import gc
import importlib
import pkgutil
from pathlib import Path

MODULES: dict[str, str] = {
    "aws.acm": "checks.aws.acm",
    "aws.alarms": "checks.aws.alarms",
    "aws.alb_routes": "checks.aws.elb",
    "aws.api_stage_config": "checks.aws.apigateway",
    "aws.api_stage_metrics": "checks.aws.apigateway",
    "aws.beanstalk_deploy": "checks.aws.beanstalk",
    "aws.beanstalk_health": "checks.aws.beanstalk",
    "aws.dynamodb": "checks.aws.dynamodb",
    "aws.elb_5xx": "checks.aws.elb",
    "aws.identity_policies": "checks.aws.policies",
    "aws.instance_metadata": "checks.aws.instances",
    "aws.interface_endpoints": "checks.aws.endpoints",
    "aws.lambda_cold_starts": "checks.aws.lambdas",
    "aws.lambda_config": "checks.aws.lambdas",
    "aws.lambda_metrics": "checks.aws.lambdas",
    "aws.lambda_vpc": "checks.aws.vpc",
    "aws.log_errors": "checks.aws.logs",
    "aws.nacl": "checks.aws.nacl",
    "aws.nat_gateways": "checks.aws.vpc",
    "aws.rds": "checks.aws.rds",
    "aws.recent_changes": "checks.aws.changes",
    "aws.resource_policies": "checks.aws.policies",
    "aws.s3": "checks.aws.s3",
    "aws.security_groups": "checks.aws.security_groups",
    "aws.sqs_dlq": "checks.aws.sqs",
    "aws.ssm_parameters": "checks.aws.endpoints",
    "aws.target_health": "checks.aws.elb",
    "aws.vpc_dns": "checks.aws.vpc",
    "aws.vpce_policy": "checks.aws.endpoints",
    "aws.xray_traces": "checks.aws.xray",
    "cdn.cache_headers": "checks.net.cdn",
    "cdn.distribution": "checks.net.cdn",
    "dns.resolve": "checks.net.dns",
    "gcp.backend_service": "checks.gcp.lb",
    "gcp.cloud_run": "checks.gcp.run",
    "gcp.cloud_run_changes": "checks.gcp.changes",
    "gcp.cloud_run_traffic": "checks.gcp.run",
    "gcp.cloud_sql": "checks.gcp.sql",
    "gcp.cloud_sql_access": "checks.gcp.sql",
    "gcp.logging": "checks.gcp.logs",
    "gcp.storage": "checks.gcp.storage",
    "http.health": "checks.http",
    "postgres": "checks.postgres",
    "postgres.locks": "checks.postgres_load",
    "postgres.size": "checks.postgres_load",
    "pulumi.drift": "checks.iac.pulumi",
    "pulumi.stack": "checks.iac.pulumi",
    "tcp.connect": "checks.net.tcp",
    "tls.certificate": "checks.net.tls",
}

_NOT_CHECKS = {"checks.catalog", "checks.registry", "checks.model", "checks.runner", "checks.services",
               "checks.verdict"}
_imported: set[str] = set()


def load() -> None:
    """Import every module that defines a check."""
    for module in sorted(set(MODULES.values())):
        _import(module)


def load_one(check_id: str) -> None:
    """Import the module that defines `check_id` (nothing for an unknown id: the caller reports it)."""
    if check_id in MODULES:
        _import(MODULES[check_id])


def _import(module: str) -> None:
    if module in _imported:
        return
    importlib.import_module(module)
    _imported.add(module)
    # The module lives as long as the process: keep the collector from walking it again and again. A process
    # that answers Slack loads them with its first /diagnose, after its start-up heap was frozen.
    gc.freeze()


def import_every_module() -> None:
    """Import every module under checks/, table or not: what they register is what `MODULES` must say."""
    for module in pkgutil.walk_packages([str(Path(__file__).parent)], prefix="checks."):
        if module.name not in _NOT_CHECKS:
            importlib.import_module(module.name)
