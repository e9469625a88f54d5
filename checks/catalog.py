"""Every check in one table: where it is defined, which entries of a service it runs for, how they are named and
its layer — so that planning imports no check, and running one imports only its module (and what that module
imports when its check runs: boto3, psycopg, google-auth).

A process that answers Slack plans (`/diagnose SERVICE` counts the checks it queues, `/diagnose list` names them)
from this table alone: the `each` and `target` functions live in checks/targets.py, which imports nothing heavy. A
worker runs the checks a plan names, one at a time: `load_one` imports just the module of the check it is about to
run, whose `@check` takes its `each`, `target` and layer from its row here.

The table is declared rather than discovered at run time; tests/test_check_catalog.py imports every module under
checks/ (`import_every_module`) and compares what they register with it, so a check without a row fails as it
registers, and a row without a check fails there.
"""

from __future__ import annotations

import gc
import importlib
import pkgutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from checks.targets import (
    Layer,
    apis,
    aws_items,
    aws_once,
    cloud_sql_with_access_rules,
    database_of,
    database_target,
    gcp_items,
    has_alarm_prefixes,
    has_changes_to_watch,
    has_network_resources,
    has_roles_and_queues,
    has_subnets,
    log_targets,
    nacl_targets,
    pulumi_stacks,
    target_group_items,
)

if TYPE_CHECKING:
    from checks.services import ServiceSpec


class Check(msgspec.Struct, frozen=True):
    module: str  # where the check is defined: imported when the check first runs
    each: Callable[[ServiceSpec], Iterable[Any]]  # the entries of a service it runs for (one job per entry)
    layer: Layer  # where it sits between cause and symptom (checks/registry.py)
    target: Callable[[Any], str] = str  # how to name an entry for people


CHECKS: dict[str, Check] = {
    "aws.acm": Check("checks.aws.acm", aws_items("certificates"), Layer.platform),
    "aws.alarms": Check("checks.aws.alarms", aws_once(has_alarm_prefixes), Layer.symptom,
        target=lambda r: f"alarms in {r}"),
    "aws.alb_routes": Check("checks.aws.elb", aws_items("load_balancers"), Layer.config),
    "aws.api_stage_config": Check("checks.aws.apigateway", apis, Layer.config),
    "aws.api_stage_metrics": Check("checks.aws.apigateway", apis, Layer.symptom),
    "aws.beanstalk_deploy": Check("checks.aws.beanstalk", aws_items("beanstalk_environments"), Layer.change),
    "aws.beanstalk_health": Check("checks.aws.beanstalk", aws_items("beanstalk_environments"), Layer.platform),
    "aws.dynamodb": Check("checks.aws.dynamodb", aws_items("dynamodb_tables"), Layer.platform),
    "aws.elb_5xx": Check("checks.aws.elb", aws_items("load_balancers"), Layer.symptom),
    "aws.identity_policies": Check("checks.aws.policies", aws_items("roles"), Layer.config),
    "aws.instance_metadata": Check("checks.aws.instances", aws_items("instances"), Layer.config),
    "aws.interface_endpoints": Check("checks.aws.endpoints", aws_items("vpc_endpoints"), Layer.config),
    "aws.lambda_cold_starts": Check("checks.aws.lambdas", aws_items("lambda_functions"), Layer.symptom),
    "aws.lambda_config": Check("checks.aws.lambdas", aws_items("lambda_functions"), Layer.config),
    "aws.lambda_metrics": Check("checks.aws.lambdas", aws_items("lambda_functions"), Layer.symptom),
    "aws.lambda_vpc": Check("checks.aws.vpc", aws_items("lambda_functions"), Layer.config),
    "aws.log_errors": Check("checks.aws.logs", aws_items("log_groups"), Layer.symptom),
    "aws.nacl": Check("checks.aws.nacl", nacl_targets, Layer.config),
    "aws.nat_gateways": Check("checks.aws.vpc", aws_once(has_subnets), Layer.config),
    "aws.rds": Check("checks.aws.rds", aws_items("db_instances"), Layer.platform),
    "aws.recent_changes": Check("checks.aws.changes", aws_once(has_changes_to_watch), Layer.change,
        target=lambda where: f"recent changes ({where})"),
    "aws.resource_policies": Check("checks.aws.policies", aws_once(has_roles_and_queues), Layer.config),
    "aws.s3": Check("checks.aws.s3", aws_items("buckets"), Layer.config, target=lambda b: b.name),
    "aws.security_groups": Check("checks.aws.security_groups", aws_once(has_network_resources), Layer.config),
    "aws.sqs_dlq": Check("checks.aws.sqs", aws_items("queues"), Layer.platform),
    "aws.ssm_parameters": Check("checks.aws.endpoints", aws_items("parameters"), Layer.config),
    "aws.target_health": Check("checks.aws.elb", target_group_items, Layer.platform),
    "aws.vpc_dns": Check("checks.aws.vpc", aws_once(has_subnets), Layer.config),
    "aws.vpce_policy": Check("checks.aws.endpoints", aws_items("roles"), Layer.config),
    "aws.xray_traces": Check("checks.aws.xray", aws_once(lambda s: s.aws.xray), Layer.platform,
        target=lambda where: f"X-Ray ({where})"),
    "cdn.cache_headers": Check("checks.net.cdn", lambda svc: svc.cdn, Layer.symptom),
    "cdn.distribution": Check("checks.net.cdn", aws_items("distributions"), Layer.config),
    "dns.resolve": Check("checks.net.dns", lambda svc: svc.dns, Layer.platform),
    "gcp.backend_service": Check("checks.gcp.lb", gcp_items("backend_services"), Layer.platform,
        target=lambda b: b.name),
    "gcp.cloud_run": Check("checks.gcp.run", gcp_items("cloud_run"), Layer.platform),
    "gcp.cloud_run_changes": Check("checks.gcp.changes", gcp_items("cloud_run"), Layer.change),
    "gcp.cloud_run_traffic": Check("checks.gcp.run", gcp_items("cloud_run"), Layer.symptom),
    "gcp.cloud_sql": Check("checks.gcp.sql", gcp_items("cloud_sql"), Layer.platform, target=lambda d: d.instance),
    "gcp.cloud_sql_access": Check("checks.gcp.sql", cloud_sql_with_access_rules, Layer.config,
        target=lambda d: d.instance),
    "gcp.logging": Check("checks.gcp.logs", log_targets, Layer.symptom, target=lambda t: t.label),
    "gcp.storage": Check("checks.gcp.storage", gcp_items("buckets"), Layer.config, target=lambda b: f"gs://{b.name}"),
    "http.health": Check("checks.http", lambda svc: svc.http, Layer.symptom, target=lambda probe: str(probe.url)),
    "postgres": Check("checks.postgres", database_of, Layer.platform, target=database_target),
    "postgres.locks": Check("checks.postgres_load", database_of, Layer.platform, target=database_target),
    "postgres.size": Check("checks.postgres_load", database_of, Layer.platform, target=database_target),
    "pulumi.drift": Check("checks.iac.pulumi", pulumi_stacks, Layer.config,
        target=lambda ref: f"pulumi {ref} resources"),
    "pulumi.stack": Check("checks.iac.pulumi", pulumi_stacks, Layer.change, target=lambda ref: f"pulumi {ref}"),
    "tcp.connect": Check("checks.net.tcp", lambda svc: svc.tcp, Layer.platform),
    "tls.certificate": Check("checks.net.tls", lambda svc: svc.tls, Layer.platform),
}
MODULES: dict[str, str] = {check_id: row.module for check_id, row in CHECKS.items()}

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
