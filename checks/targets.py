"""Which entries of a service each check runs for, and how they are named — what planning a diagnosis needs, apart
from the checks themselves.

A process that answers Slack plans `/diagnose SERVICE` (how many checks to queue) and `/diagnose list` (which checks
a service runs), but never runs a check: planning from here leaves the check modules, and boto3, httpx or psycopg
with them, to the worker that runs them. checks/catalog.py names, per check, its module, its `each`, its `target`
and its layer from the helpers below; nothing here imports anything heavier than the services file's types.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from checks.services import DatabaseSpec, ServiceSpec


class Layer(IntEnum):
    """Lower is nearer the root cause."""

    config = 10  # routes, ACLs, endpoints, IAM conditions, reserved concurrency: states that break things
    change = 20  # a recent deploy or stack update
    platform = 30  # target health, queue dead letters, database state, certificates
    symptom = 40  # what users see: HTTP failures, alarms, 5xx ratios, error logs


def aws_items(attr: str) -> Callable[[ServiceSpec], list[Any]]:
    """`each=` for AWS checks: the entries of `aws.<attr>`, or nothing when the service has no `aws` block."""

    def items(service: ServiceSpec) -> list[Any]:
        return list(getattr(service.aws, attr)) if service.aws else []

    return items


def aws_once(predicate: Callable[[ServiceSpec], bool]) -> Callable[[ServiceSpec], list[Any]]:
    """`each=` for an AWS check that runs once per service (e.g. alarms by prefix) when `predicate` holds."""

    def items(service: ServiceSpec) -> list[Any]:
        return [service.aws.region] if service.aws and predicate(service) else []

    return items


def gcp_items(attr: str) -> Callable[[Any], list[Any]]:
    """`each=` for GCP checks: the entries of `gcp.<attr>`, or nothing when the service has no `gcp` block."""

    def items(service: Any) -> list[Any]:
        return list(getattr(service.gcp, attr)) if service.gcp else []

    return items


# --- AWS: when a once-per-service check has something to look at ------------------------------------------------


def has_alarm_prefixes(service: ServiceSpec) -> bool:
    return bool(service.aws and service.aws.alarm_prefixes)


def has_changes_to_watch(service: Any) -> bool:
    aws = service.aws
    return bool(aws.lambda_functions or aws.api_gateways or aws.stacks or service.pulumi)


def has_roles_and_queues(service: Any) -> bool:
    return bool(service.aws.roles and service.aws.queues)


def has_network_resources(service: ServiceSpec) -> bool:
    aws = service.aws
    return bool(aws and (aws.load_balancers or aws.db_instances or aws.lambda_functions or aws.security_groups))


def has_subnets(service: ServiceSpec) -> bool:
    return bool(service.aws and (service.aws.subnets or service.aws.lambda_functions))


# --- AWS: entries built from the services file ------------------------------------------------------------------


class TargetGroups(msgspec.Struct, frozen=True):
    """What `aws.target_health` looks at: a target group from the services file, or all behind a load balancer."""

    ref: str  # a target group name/ARN, or a load balancer name/ARN when `behind_load_balancer`
    behind_load_balancer: bool = False

    def __str__(self) -> str:
        return f"{self.ref} target groups" if self.behind_load_balancer else self.ref


def target_group_items(service: ServiceSpec) -> list[TargetGroups]:
    """The listed target groups; when none are listed, the target groups behind the listed load balancers.

    Listing target groups explicitly wins, so a group is never judged twice in one run.
    """
    if not service.aws:
        return []
    if service.aws.target_groups:
        return [TargetGroups(tg) for tg in service.aws.target_groups]
    return [TargetGroups(lb, behind_load_balancer=True) for lb in service.aws.load_balancers]


class NaclTarget(msgspec.Struct, frozen=True):
    """A subnet from the services file, or the subnets of a listed load balancer."""

    ref: str
    load_balancer: bool = False

    def __str__(self) -> str:
        return f"{self.ref} subnets" if self.load_balancer else self.ref


def nacl_targets(service: ServiceSpec) -> list[NaclTarget]:
    if not service.aws:
        return []
    return [NaclTarget(s) for s in service.aws.subnets] + [
        NaclTarget(lb, load_balancer=True) for lb in service.aws.load_balancers
    ]


class Api(msgspec.Struct, frozen=True):
    kind: str  # "REST" | "HTTP"
    id: str

    def __str__(self) -> str:
        return f"{self.kind} API {self.id}"


def apis(service: ServiceSpec) -> list[Api]:
    if not service.aws:
        return []
    return [Api("REST", i) for i in service.aws.api_gateways] + [Api("HTTP", i) for i in service.aws.http_apis]


# --- GCP, databases, Pulumi --------------------------------------------------------------------------------------


class LogTarget(msgspec.Struct, frozen=True):
    label: str  # how people call it: "Cloud Run api", or the filter itself
    filter: str


def log_targets(service: Any) -> list[LogTarget]:
    """One target per Cloud Run service and per extra filter of the `gcp` block."""
    if not service.gcp:
        return []
    targets = [LogTarget(f"Cloud Run {name}", run_filter(name)) for name in service.gcp.cloud_run]
    return targets + [LogTarget(f, f) for f in service.gcp.log_filters]


def run_filter(name: str) -> str:
    return f'resource.type="cloud_run_revision" AND resource.labels.service_name="{name}"'


def cloud_sql_with_access_rules(service: Any) -> list[Any]:
    """The Cloud SQL instances whose client TLS or connection path the services file states."""
    return [d for d in gcp_items("cloud_sql")(service) if d.client_ssl or d.path]


def database_of(service: ServiceSpec) -> list[DatabaseSpec]:
    return [service.database] if service.database else []


def database_target(db: DatabaseSpec) -> str:
    return f"${db.dsn_env}"


def pulumi_stacks(service: ServiceSpec) -> list[str]:
    return list(service.pulumi.stacks) if service.pulumi else []
