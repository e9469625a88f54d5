"""S3: the bucket policy's Deny statements and, when the service opts in, a write/read/delete probe.

The probe (`probe_write: true` only) writes `_diagnose/probe-<uuid>`, reads its metadata back and always deletes
it, the exact version it wrote on a versioned bucket. All three calls run in one worker thread, so a check that
times out cannot be cancelled between the put and the delete; a delete that fails is itself reported, with the
key that was left behind.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import botocore.exceptions

from checks.aws.clients import AwsCheckError, describe_client_error, error_code
from checks.aws.common import aws_check, aws_error_code, region
from checks.aws.policies import ResourcePolicy, deny_result, judge_policy
from checks.aws.policy_eval import DenyMatch
from checks.aws.roles import service_roles
from checks.model import CheckResult, Status
from checks.registry import CheckContext, check
from checks.services import BucketSpec

PROBE_PREFIX = "_diagnose/probe-"
PROBE_BODY = b"chatops /diagnose write probe; safe to delete\n"
# Condition keys that make a Deny depend on how the request arrives: the usual cause of "works here, 403 there".
NETWORK_CONDITION_KEYS = {"aws:sourcevpce", "aws:sourcevpc", "aws:securetransport", "aws:sourceip"}
STATEMENT_CHARS = 500
_DENIED = {"AccessDenied", "403"}  # S3 answers HEAD (no body) and moto answers policy denies with a bare 403


@check("aws.s3", timeout_s=20)
@aws_check
async def s3(bucket: BucketSpec, ctx: CheckContext) -> CheckResult:
    """S3 bucket policy Deny statements, and an optional write/read/delete probe"""
    statements = await _policy_statements(ctx, bucket.name)
    role_denies = await _role_denies(ctx, bucket.name, statements)
    conditional = [s for s in statements if s.get("Effect") == "Deny" and _network_keys(s)]
    evidence: dict[str, Any] = {
        "bucket": bucket.name,
        "public_access_block": await _public_access_block(ctx, bucket.name),
        "conditional_denies": [quote(s) for s in conditional],
    }
    if any(d.certain for d in role_denies):
        return deny_result(role_denies, ok="", evidence=evidence, resource=f"arn:aws:s3:::{bucket.name}")
    evidence["denies"] = [d.row() for d in role_denies]
    policy_note = _policy_note(conditional)
    hint = ("If the app gets 403 from this bucket, these conditions are the usual cause: the request must arrive "
            "through the named VPC endpoint / network, or over TLS.") if conditional else None
    if not bucket.probe_write:
        return CheckResult(
            status=Status.ok,
            summary=f"Bucket {bucket.name}: {policy_note}; write probe not enabled (probe_write: false).",
            resource=f"arn:aws:s3:::{bucket.name}",
            evidence=evidence,
            hint=hint,
        )
    probe = await asyncio.to_thread(run_probe, ctx.aws.client("s3", region(ctx)), bucket.name)
    evidence["probe"] = probe.evidence()
    return _probe_result(bucket.name, probe, statements, evidence, policy_note, hint)


async def _policy_statements(ctx: CheckContext, bucket: str) -> list[dict[str, Any]]:
    """The bucket policy's statements (`s3:GetBucketPolicy`); no policy is fine and means none."""
    try:
        found = await ctx.aws.call("s3", region(ctx), "get_bucket_policy", Bucket=bucket)
    except AwsCheckError as exc:
        if aws_error_code(exc) == "NoSuchBucketPolicy":
            return []
        raise
    statements = json.loads(found["Policy"]).get("Statement", [])
    return statements if isinstance(statements, list) else [statements]


async def _role_denies(ctx: CheckContext, bucket: str, statements: list[dict[str, Any]]) -> list[DenyMatch]:
    """Every Deny of the bucket policy that applies to one of `aws.roles` — by principal, NotPrincipal or an
    identity condition — and covers what the role is allowed on the bucket."""
    if not statements or not ctx.service.aws or not ctx.service.aws.roles:
        return []
    arn = f"arn:aws:s3:::{bucket}"
    policy = ResourcePolicy(f"bucket policy of {bucket}", {"Statement": statements}, (arn, f"{arn}/*"))
    return judge_policy(policy, await service_roles(ctx))


async def _public_access_block(ctx: CheckContext, bucket: str) -> dict[str, bool] | None:
    """The bucket's four Block Public Access flags (`s3:GetBucketPublicAccessBlock`), None when not set."""
    try:
        found = await ctx.aws.call("s3", region(ctx), "get_public_access_block", Bucket=bucket)
    except AwsCheckError as exc:
        if aws_error_code(exc) == "NoSuchPublicAccessBlockConfiguration":
            return None
        raise
    return found["PublicAccessBlockConfiguration"]


def _policy_note(conditional: list[dict[str, Any]]) -> str:
    if not conditional:
        return "no network-conditioned Deny in the bucket policy"
    keys = sorted({key for s in conditional for key in _network_keys(s)})
    count = len(conditional)
    return f"bucket policy has {count} conditional Deny statement{'s' * (count != 1)} ({', '.join(keys)})"


def _network_keys(statement: dict[str, Any]) -> list[str]:
    """The statement's condition keys that depend on the request's network path, as written in the policy."""
    keys = [key for test in (statement.get("Condition") or {}).values() for key in test]
    return [key for key in keys if key.lower() in NETWORK_CONDITION_KEYS]


def quote(statement: dict[str, Any]) -> str:
    text = json.dumps(statement, separators=(",", ":"), sort_keys=True)
    return text if len(text) <= STATEMENT_CHARS else text[: STATEMENT_CHARS - 1] + "…"


# --- The write probe -----------------------------------------------------------------------------------------


@dataclass
class Probe:
    key: str
    steps: dict[str, str] = field(default_factory=dict)  # IAM action → "ok" or what went wrong
    failed_action: str | None = None  # the first action S3 refused
    denied: bool = False
    unreachable: bool = False  # S3 never answered: the check could not run
    left_behind: bool = False

    def evidence(self) -> dict[str, Any]:
        return {"key": self.key, "steps": self.steps, "left_behind": self.left_behind}

    def record(self, action: str, operation: str, exc: Exception) -> None:
        if isinstance(exc, botocore.exceptions.ClientError):
            denied = error_code(exc) in _DENIED
            self.steps[action] = f"{action} denied" if denied else describe_client_error(exc, "s3", operation)
            self.denied = self.denied or (denied and self.failed_action is None)
        else:
            self.steps[action] = f"S3 unreachable: {type(exc).__name__}"
            self.unreachable = True
        self.failed_action = self.failed_action or action


def run_probe(client: Any, bucket: str) -> Probe:
    """Put, head and always delete one probe object; blocking, so run it in a worker thread."""
    probe = Probe(f"{PROBE_PREFIX}{uuid.uuid4()}")
    version: dict[str, str] = {}
    written = True  # until S3 says otherwise: a put that timed out may still have landed
    step = ("s3:PutObject", "put_object")
    try:
        put = client.put_object(Bucket=bucket, Key=probe.key, Body=PROBE_BODY)
        probe.steps["s3:PutObject"] = "ok"
        version = {"VersionId": put["VersionId"]} if put.get("VersionId") else {}
        step = ("s3:GetObject", "head_object")
        client.head_object(Bucket=bucket, Key=probe.key, **version)
        probe.steps["s3:GetObject"] = "ok"
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        written = not (step[1] == "put_object" and isinstance(exc, botocore.exceptions.ClientError))
        probe.record(*step, exc)
    finally:
        # Deleting the exact version leaves nothing behind on a versioned bucket (a plain delete adds a marker).
        delete_action = "s3:DeleteObjectVersion" if version else "s3:DeleteObject"
        try:
            client.delete_object(Bucket=bucket, Key=probe.key, **version)
            probe.steps[delete_action] = "ok"
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            if written:
                probe.record(delete_action, "delete_object", exc)
                probe.left_behind = True
    return probe


def _probe_result(
    bucket: str, probe: Probe, statements: list[dict[str, Any]], evidence: dict[str, Any], policy_note: str,
    hint: str | None,
) -> CheckResult:
    resource = f"arn:aws:s3:::{bucket}"
    left = f" The probe object {probe.key} was left behind; delete it by hand." if probe.left_behind else ""
    if probe.failed_action is None:
        return CheckResult(
            status=Status.ok,
            summary=f"Bucket {bucket}: wrote, read back and deleted a probe object; {policy_note}.",
            resource=resource, evidence=evidence, hint=hint,
        )
    action = probe.failed_action
    if probe.unreachable:
        return CheckResult(
            status=Status.error, summary=f"Could not finish the write probe on {bucket}: {probe.steps[action]}.{left}",
            resource=resource, evidence=evidence,
        )
    if probe.denied:
        denies = [s for s in statements if denies_action(s, action, f"{resource}/{probe.key}")]
        evidence["matching_denies"] = [quote(s) for s in denies]
        cause = (f"the bucket policy denies it: {quote(denies[0])}" if denies
                 else "no bucket policy Deny matches, so look at the bot role's IAM policy, KMS or an SCP")
        return CheckResult(
            status=Status.fail, severity="P1",
            summary=f"Bucket {bucket}: {action} was denied for the probe object; {cause}.{left}",
            resource=resource, evidence=evidence,
            hint=hint or "A Deny wins over every Allow: fix the statement or the path the request takes.",
        )
    return CheckResult(
        status=Status.fail, severity="P1",
        summary=f"Bucket {bucket}: the write probe failed at {action}: {probe.steps[action]}.{left}",
        resource=resource, evidence=evidence, hint=hint,
    )


def denies_action(statement: dict[str, Any], action: str, resource_arn: str) -> bool:
    """True when `statement` is a Deny covering `action` on `resource_arn` (conditions taken as matching)."""
    if statement.get("Effect") != "Deny":
        return False
    return (
        _covers(statement, "Action", "NotAction", action)
        and _covers(statement, "Resource", "NotResource", resource_arn)
    )


def _covers(statement: dict[str, Any], key: str, not_key: str, value: str) -> bool:
    if key in statement:
        return _matches(statement[key], value)
    if not_key in statement:
        return not _matches(statement[not_key], value)
    return True


def _matches(patterns: str | list[str], value: str) -> bool:
    patterns = [patterns] if isinstance(patterns, str) else patterns
    return any(fnmatchcase(value.lower(), pattern.lower()) for pattern in patterns)
