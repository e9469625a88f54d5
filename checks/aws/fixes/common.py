"""What every fix action shares: fresh reads, the "changed since the preview" guard, and AWS errors as a sentence.

A fix reads AWS state twice — for the preview and again right before it writes — and each read must be a real
request: a diagnosis run's memo would hand back the state from before someone else's fix.
"""

from __future__ import annotations

import contextvars
from typing import Any

from checks.aws.clients import AwsCheckError, AwsClients
from checks.aws.common import aws_error_code
from checks.fixes import FixChanged, FixPlan, FixRefused, fingerprint

LABEL_LIMIT = 75  # Slack button text

# The fix running in this task (and in the threads its AWS calls use): logs read it, and the test suite uses it to
# check every call a fix makes against deploy/iam-remediation.json.
CURRENT_FIX: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_fix", default=None)


async def read(aws: AwsClients, service: str, region: str, operation: str, **params: Any) -> dict[str, Any]:
    """A fresh read; an AWS error refuses the fix with AWS's sentence."""
    try:
        return await aws.scoped().call(service, region, operation, **params)
    except AwsCheckError as exc:
        raise FixRefused(f"{exc}.") from exc


async def read_or_none(aws: AwsClients, service: str, region: str, operation: str, missing: str,
                       **params: Any) -> dict[str, Any] | None:
    """Like `read`, but None when AWS answers with the error code `missing` (the resource is gone)."""
    try:
        return await aws.scoped().call(service, region, operation, **params)
    except AwsCheckError as exc:
        if aws_error_code(exc) == missing:
            return None
        raise FixRefused(f"{exc}.") from exc


async def write(aws: AwsClients, service: str, region: str, operation: str, **params: Any) -> str | None:
    """Make the change; None when it worked, else AWS's error in one sentence."""
    try:
        await aws.call(service, region, operation, **params)
    except AwsCheckError as exc:
        return f"{exc}."
    return None


def unchanged(plan: FixPlan, before: dict[str, str]) -> None:
    """Refuse when the state read right before the write is not the state the preview showed."""
    if fingerprint(before) == plan.fingerprint:
        return
    moved = [f"{key} {plan.before.get(key, 'none')} → {before.get(key, 'none')}"
             for key in sorted({*plan.before, *before}) if plan.before.get(key) != before.get(key)]
    raise FixChanged(f"Not done: the state changed since the preview ({'; '.join(moved)}); someone may have fixed "
                     "it another way, so look again before acting.", before)


def need(params: dict[str, str], *names: str) -> list[str]:
    """The named params, or a refusal naming the missing ones."""
    missing = [name for name in names if not params.get(name)]
    if missing:
        raise FixRefused(f"Missing parameter{'s' if len(missing) > 1 else ''}: {', '.join(missing)}.")
    return [params[name] for name in names]


def label(text: str) -> str:
    """Button text within Slack's limit; long names lose their middle, which keeps both ends recognisable."""
    if len(text) <= LABEL_LIMIT:
        return text
    cut = len(text) - LABEL_LIMIT + 1
    middle = len(text) // 2
    return text[: middle - cut // 2 - cut % 2] + "…" + text[middle + cut // 2:]
