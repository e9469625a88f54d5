"""Change correlation, whichever cloud the changes and the errors come from: a change shortly before the errors
began is a rollback candidate.

`aws.recent_changes` feeds it Lambda versions, API Gateway deployments and stack updates; `gcp.cloud_run_changes`
feeds it Cloud Run revisions. Each source turns its records into `Change`s with a concrete rollback sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from checks.logsignatures import ErrorSignature, iso

SUSPECT_WINDOW = timedelta(minutes=60)  # a change this long before the first error is a rollback candidate
# Change kinds that are deploys of code (named "deploy of …"); the others (stack updates) name themselves.
DEPLOY_KINDS = ("lambda", "apigateway", "cloud-run")


class HasSignatures(Protocol):
    @property
    def signatures(self) -> Sequence[ErrorSignature]: ...


@dataclass(frozen=True)
class Change:
    kind: str  # lambda-version | lambda-update | apigateway-deployment | stack-update | cloud-run-revision
    at: datetime
    name: str  # how people call it: "api-handler v42", "stack orders-prod update"
    resource: str  # version ARN, deployment id, stack id
    rollback: str  # the concrete way back, or what to do when there is none
    detail: str = ""

    def as_evidence(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "at": iso(self.at), "resource": self.resource,
                "detail": self.detail}


@dataclass(frozen=True)
class Suspect:
    change: Change
    sentence: str


def find_suspect(changes: list[Change], scans: Sequence[HasSignatures]) -> Suspect | None:
    """The change most likely to have caused the errors, or None.

    First rule: the errors' first occurrence is within 60 min after a change (the latest such change wins).
    Second rule: an error signature first seen within 60 min after a change, when errors already existed before.
    """
    signatures = [s for scan in scans for s in scan.signatures]
    if not signatures:
        return None
    first_error = min(s.first_seen for s in signatures)
    before = [c for c in changes if first_error - SUSPECT_WINDOW <= c.at <= first_error]
    if before:
        change = sorted(before, key=lambda c: c.at)[-1]  # the latest; on a tie, the one listed last
        return Suspect(change, f"Errors started {_minutes(first_error - change.at)} after {_deploy(change)}; "
                               "rollback candidate.")
    for change in sorted(changes, key=lambda c: c.at, reverse=True):
        new = [s for s in signatures if change.at <= s.first_seen <= change.at + SUSPECT_WINDOW]
        if new:
            first = min(new, key=lambda s: s.first_seen)
            return Suspect(change, f"New error “{first.signature}” appeared {_minutes(first.first_seen - change.at)} "
                                   f"after {_deploy(change)}; rollback candidate.")
    return None


def _deploy(change: Change) -> str:
    return f"deploy of {change.name}" if change.kind.startswith(DEPLOY_KINDS) else change.name


def _minutes(delta: timedelta) -> str:
    minutes = round(delta.total_seconds() / 60)
    return "less than a minute" if minutes < 1 else ("1 min" if minutes == 1 else f"{minutes} min")
