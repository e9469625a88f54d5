"""Cloud Storage: does the app's service account hold a binding that grants what it does with the bucket, is the
bucket public, is access uniform — and, opt-in, a write/read/delete probe with the bot's own credentials.

Grants are read from the bucket's IAM policy and, when the bucket grants nothing, from the project's (a project
role grants on every bucket). Roles are matched through the table below (predefined storage roles and the basic
roles); a custom role is not expanded, so a grant through one is reported as unknown rather than missing.
"""

from __future__ import annotations

import uuid
from typing import Any

from checks.gcp.api import GcpCheckError, GcpDenied, call, gcp_check, spec
from checks.model import CheckResult, Status
from checks.registry import CheckContext, check
from checks.services import GcpBucketSpec

PROBE_PREFIX = "_diagnose/probe-"
NEEDS = {"read": ["storage.objects.get", "storage.objects.list"], "write": ["storage.objects.create"]}
SUGGESTED_ROLE = {"read": "roles/storage.objectViewer", "write": "roles/storage.objectCreator"}
_OBJECT_ALL = {"storage.objects.get", "storage.objects.list", "storage.objects.create", "storage.objects.delete"}
ROLE_PERMISSIONS: dict[str, set[str]] = {
    "roles/storage.objectViewer": {"storage.objects.get", "storage.objects.list"},
    "roles/storage.objectCreator": {"storage.objects.create"},
    "roles/storage.objectUser": _OBJECT_ALL,
    "roles/storage.objectAdmin": _OBJECT_ALL,
    "roles/storage.admin": _OBJECT_ALL,
    "roles/storage.legacyObjectReader": {"storage.objects.get"},
    "roles/storage.legacyBucketReader": {"storage.objects.list"},
    "roles/storage.legacyBucketWriter": {"storage.objects.list", "storage.objects.create", "storage.objects.delete"},
    "roles/storage.legacyBucketOwner": {"storage.objects.list", "storage.objects.create", "storage.objects.delete"},
    "roles/owner": _OBJECT_ALL,
    "roles/editor": _OBJECT_ALL,
    "roles/viewer": {"storage.objects.get", "storage.objects.list"},
}
PUBLIC_MEMBERS = {"allUsers", "allAuthenticatedUsers"}


def granted(bindings: list[dict[str, Any]], member: str) -> tuple[set[str], list[str]]:
    """(permissions granted to `member` by known roles, custom roles bound to it that were not expanded)."""
    permissions: set[str] = set()
    unknown = []
    for binding in bindings:
        if member not in binding.get("members", []):
            continue
        role = binding.get("role", "")
        if role in ROLE_PERMISSIONS:
            permissions |= ROLE_PERMISSIONS[role]
        else:
            unknown.append(role)
    return permissions, unknown


async def project_bindings(ctx: CheckContext) -> list[dict[str, Any]] | None:
    try:
        policy = await call(ctx, "projects.getIamPolicy", body={"options": {"requestedPolicyVersion": 3}},
                            project=spec(ctx).project)
    except GcpDenied:
        return None
    return policy.get("bindings", [])


@check("gcp.storage", timeout_s=25)
@gcp_check
async def storage(bucket: GcpBucketSpec, ctx: CheckContext) -> CheckResult:
    """Cloud Storage grants for the app's service account, public access and uniform access; optional write probe"""
    member = f"serviceAccount:{spec(ctx).service_account}"
    meta = await call(ctx, "storage.buckets.get", name=bucket.name)
    bindings = (await call(ctx, "storage.buckets.getIamPolicy", params={"optionsRequestedPolicyVersion": 3},
                           name=bucket.name)).get("bindings", [])
    permissions, unknown = granted(bindings, member)
    needed = NEEDS[bucket.access]
    project = await project_bindings(ctx) if not set(needed) <= permissions else []
    if project:
        more, more_unknown = granted(project, member)
        permissions, unknown = permissions | more, unknown + more_unknown
    missing = [p for p in needed if p not in permissions]
    iam = meta.get("iamConfiguration", {})
    public = sorted({m for b in bindings for m in b.get("members", []) if m in PUBLIC_MEMBERS})
    uniform = bool(iam.get("uniformBucketLevelAccess", {}).get("enabled"))
    evidence = {"bucket": bucket.name, "member": member, "access": bucket.access, "missing": missing,
                "unexpanded_roles": unknown, "public_members": public, "project_policy_read": project is not None,
                "public_access_prevention": iam.get("publicAccessPrevention"), "uniform_access": uniform}
    resource = f"gs://{bucket.name}"
    if missing and not unknown:
        return _missing_result(bucket, member, missing, project is None, resource, evidence)
    if bucket.probe_write:
        probe = await write_probe(ctx, bucket.name)
        evidence["probe"] = probe
        if probe.get("failed"):
            return CheckResult(status=Status.fail, severity="P1", resource=resource, evidence=evidence,
                               summary=f"gs://{bucket.name}: the write probe failed at {probe['failed']}.",
                               hint="The bot's own account needs the opt-in probe permissions (deploy/gcp-roles.md).")
    return _posture_result(bucket, public, uniform, iam, missing, unknown, resource, evidence)


def _missing_result(bucket: GcpBucketSpec, member: str, missing: list[str], project_unread: bool, resource: str,
                    evidence: dict[str, Any]) -> CheckResult:
    role = SUGGESTED_ROLE[bucket.access]
    unread = " (the project's policy could not be read, so a project-level grant is possible)" if project_unread else ""
    return CheckResult(
        status=Status.warn if project_unread else Status.fail, severity="P2" if project_unread else "P1",
        summary=f"gs://{bucket.name}: {member} has no binding granting {', '.join(missing)}: the app gets 403 "
                f"— missing binding {role}{unread}.",
        resource=resource, evidence=evidence,
        hint=f"`gcloud storage buckets add-iam-policy-binding gs://{bucket.name} --member={member} --role={role}`",
    )


def _posture_result(bucket: GcpBucketSpec, public: list[str], uniform: bool, iam: dict[str, Any], missing: list[str],
                    unknown: list[str], resource: str, evidence: dict[str, Any]) -> CheckResult:
    enforced = iam.get("publicAccessPrevention") == "enforced"
    if public and not enforced:
        return CheckResult(status=Status.warn, severity="P2", resource=resource, evidence=evidence,
                           summary=f"gs://{bucket.name} is public: {', '.join(public)} hold a role on it.",
                           hint=f"If it should not be: `gcloud storage buckets update gs://{bucket.name} "
                                "--public-access-prevention`.")
    notes = [f"the {bucket.access} grant for the app is present" if not missing
             else f"the app's access depends on custom role(s) {', '.join(unknown)} (not expanded)"]
    if public:
        notes.append(f"public access prevention blocks the {', '.join(public)} binding")
    if not uniform:
        notes.append("uniform bucket-level access is off, so object ACLs can also grant or withhold access")
    return CheckResult(status=Status.ok, summary=f"gs://{bucket.name}: " + "; ".join(notes) + ".",
                       resource=resource, evidence=evidence)


async def write_probe(ctx: CheckContext, bucket: str) -> dict[str, Any]:
    """Upload, read back and always delete one object; returns the steps and the first that failed."""
    key = f"{PROBE_PREFIX}{uuid.uuid4()}"
    steps: dict[str, str] = {}
    failed = None
    try:
        await call(ctx, "storage.objects.insert", params={"uploadType": "media", "name": key},
                   content=b"chatops /diagnose write probe; safe to delete\n", name=bucket)
        steps["storage.objects.create"] = "ok"
        await call(ctx, "storage.objects.get", name=bucket, object=key)
        steps["storage.objects.get"] = "ok"
    except GcpCheckError as exc:
        failed = "storage.objects.create" if "storage.objects.create" not in steps else "storage.objects.get"
        steps[failed] = str(exc)
    if "storage.objects.create" in steps and steps["storage.objects.create"] == "ok":
        try:
            await call(ctx, "storage.objects.delete", name=bucket, object=key)
            steps["storage.objects.delete"] = "ok"
        except GcpCheckError as exc:
            steps["storage.objects.delete"] = f"{exc}; {key} was left behind"
            failed = failed or "storage.objects.delete"
    return {"key": key, "steps": steps, "failed": failed}
