"""Pulumi stacks named in a service's `pulumi:` block: their state, read from the backend without the CLI.

`pulumi.stack` (change layer) reports a lock held on the stack (for how long, by whom), pending operations left in
the checkpoint by an interrupted update (the cause of "stack has pending operations" and of deployments that hang),
the last update's result and time, and resources whose last update failed (`initErrors`), with the runbook's way
out (`pulumi cancel`, `pulumi refresh`, `pulumi stack export` / `import`).

`pulumi.drift` (config layer) reports drift only where it is knowable without a preview: an AWS resource the state
records that no longer exists, for S3 buckets, Lambda functions, security groups and target groups. It does NOT
see changed properties (an edited security-group rule, a resized function), resources of other types or clouds,
or resources created outside Pulumi; those need `pulumi preview --refresh` with the stack's credentials.

Stack updates also feed the change correlation (`pulumi_changes`): an update shortly before errors began is a
rollback candidate.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from checks.aws.clients import AwsCheckError
from checks.aws.common import error_result
from checks.correlation import Change
from checks.iac.pulumi_backends import diy_store, read_cloud_stack, read_diy_stack
from checks.iac.pulumi_drift import missing_resources
from checks.iac.pulumi_state import StackState, StateReadError, Update, assess
from checks.model import CheckResult, Status
from checks.registry import CheckContext, check
from checks.schema import replace
from checks.targets import pulumi_stacks


async def read_stack(ctx: CheckContext, ref: str) -> StackState:
    spec = ctx.service.pulumi
    assert spec is not None, "Pulumi checks run only for services with a `pulumi` block"
    if spec.kind == "cloud":
        return await read_cloud_stack(ctx, spec, ref)
    return await read_diy_stack(diy_store(ctx, spec), ref, ctx.now)


StateCheck = Callable[[StackState, CheckContext], Awaitable[CheckResult]]


async def _with_state(ref: str, ctx: CheckContext, then: StateCheck) -> CheckResult:
    """Read the stack, then run `then`; a backend that cannot be read is an `error` saying why."""
    try:
        return await then(await read_stack(ctx, ref), ctx)
    except StateReadError as exc:
        return CheckResult(status=Status.error, summary=f"Cannot read Pulumi stack {ref}: {exc}.", resource=ref,
                           hint="Fix the `pulumi:` block of the services file or the bot's access to the backend.")
    except AwsCheckError as exc:
        return replace(error_result(exc), resource=ref)


@check("pulumi.stack", timeout_s=30)
async def pulumi_stack(ref: str, ctx: CheckContext) -> CheckResult:
    """Pulumi stack state: locks, pending operations, the last update's result"""

    async def judge(state: StackState, ctx: CheckContext) -> CheckResult:
        return assess(state, ctx.now)

    return await _with_state(ref, ctx, judge)


@check("pulumi.drift", timeout_s=45)
async def pulumi_drift(ref: str, ctx: CheckContext) -> CheckResult:
    """AWS resources a Pulumi stack records that no longer exist (buckets, functions, security groups, target groups)"""
    return await _with_state(ref, ctx, _drift)


async def _drift(state: StackState, ctx: CheckContext) -> CheckResult:
    if state.deployment is None:
        return assess(state, ctx.now)  # the same "no such stack" error as pulumi.stack
    if ctx.aws is None:
        return CheckResult(status=Status.error, summary="No AWS clients were set up for this service.")
    found = await missing_resources(ctx, state.deployment)
    evidence: dict[str, Any] = {"checked": found.checked, "not_checked": found.unchecked, "missing": found.missing,
                                "covers": "existence of S3 buckets, Lambda functions, security groups, target groups"}
    if not found.missing:
        what = f"All {found.checked} checked AWS resources" if found.checked else "No resources of the checked types"
        return CheckResult(status=Status.ok if found.checked else Status.skipped, resource=state.ref,
                           summary=f"{what} of {state.ref} exist; property drift needs `pulumi preview --refresh`.",
                           evidence=evidence)
    names = ", ".join(f"{m['name']} ({m['type']}, {m['id']})" for m in found.missing[:5])
    return CheckResult(
        status=Status.fail, severity="P2", resource=state.ref, evidence=evidence,
        summary=f"{len(found.missing)} resource(s) recorded in stack {state.ref} no longer exist in AWS: {names}.",
        hint=f"Something deleted them outside Pulumi. `pulumi refresh --stack {state.ref}` drops them from the "
             f"state and `pulumi up --stack {state.ref}` recreates them; find out who deleted them first.")


# --- change correlation --------------------------------------------------------------------------------------


async def pulumi_changes(ctx: CheckContext, since: datetime) -> list[Change]:
    """Every stack operation since `since` of the service's stacks, as changes; unreadable stacks give none (their
    own `pulumi.stack` result says why)."""
    changes: list[Change] = []
    for ref in pulumi_stacks(ctx.service):
        try:
            state = await read_stack(ctx, ref)
        except (StateReadError, AwsCheckError):
            continue
        changes += [update_as_change(ref, u) for u in state.updates if u.started >= since and u.kind != "preview"]
    return changes


def update_as_change(ref: str, update: Update) -> Change:
    before = f"the commit before {update.commit}" if update.commit else "the previous commit"
    return Change(
        kind="pulumi-update", at=update.started, name=f"pulumi {update.kind} of {ref} ({update.result})",
        resource=ref,
        rollback=(f"Run `pulumi up --stack {ref}` from {before}; importing an older state "
                  "(`pulumi stack export --version`) would not change the cloud resources."),
        detail=", ".join(f"{op} {n}" for op, n in sorted(update.changes.items()) if op != "same"),
    )
