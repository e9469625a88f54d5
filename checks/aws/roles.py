"""The service's IAM roles as policies see them: ARN, id, tags, identity policies and permissions boundary.

Every call goes through the run's memo, so the checks that need a role (S3, queues and keys, endpoints, the
identity check) read it from IAM once per run between them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from checks.aws.common import region
from checks.aws.policy_eval import Principal, allowed_actions, allowed_grants
from checks.registry import CheckContext


@dataclass(frozen=True)
class Role:
    principal: Principal
    documents: list[tuple[str, dict[str, Any]]]  # (policy name, document) of its inline and attached policies
    boundary: tuple[str, dict[str, Any]] | None  # (policy ARN, document) of its permissions boundary

    @property
    def name(self) -> str:
        return self.principal.name

    def allowed(self, resources: list[str]) -> list[str]:
        """The actions its identity policies allow on any of `resources`."""
        return allowed_actions([doc for _, doc in self.documents], self.principal, resources)

    def grants(self) -> list[tuple[str, str]]:
        """(action, resource pattern) its identity policies allow."""
        return allowed_grants([doc for _, doc in self.documents], self.principal)


async def role_policy_documents(ctx: CheckContext, role: str) -> list[tuple[str, dict[str, Any]]]:
    """(policy name, document) for the role's inline and attached managed policies."""
    documents = []
    for name in await ctx.aws.paginate("iam", region(ctx), "list_role_policies", "PolicyNames", RoleName=role):
        found = await ctx.aws.call("iam", region(ctx), "get_role_policy", RoleName=role, PolicyName=name)
        documents.append((f"inline policy {name}", _document(found["PolicyDocument"])))
    attached = await ctx.aws.paginate("iam", region(ctx), "list_attached_role_policies", "AttachedPolicies",
                                      RoleName=role)
    for policy in attached:
        document = await managed_policy_document(ctx, policy["PolicyArn"])
        documents.append((f"managed policy {policy['PolicyName']}", document))
    return documents


async def managed_policy_document(ctx: CheckContext, arn: str) -> dict[str, Any]:
    """The default version's document of a managed policy (`iam:GetPolicy`, `iam:GetPolicyVersion`)."""
    meta = await ctx.aws.call("iam", region(ctx), "get_policy", PolicyArn=arn)
    version = await ctx.aws.call("iam", region(ctx), "get_policy_version", PolicyArn=arn,
                                 VersionId=meta["Policy"]["DefaultVersionId"])
    return _document(version["PolicyVersion"]["Document"])


def _document(document: dict[str, Any] | str) -> dict[str, Any]:
    # boto3 decodes IAM documents to dicts; a raw client or a Stubber may hand back the URL-encoded JSON.
    return document if isinstance(document, dict) else json.loads(unquote(document))


async def load_role(ctx: CheckContext, name: str) -> Role:
    """One role with its policies and boundary (`iam:GetRole` and the policy reads)."""
    found = (await ctx.aws.call("iam", region(ctx), "get_role", RoleName=name))["Role"]
    tags = {t["Key"]: t["Value"] for t in found.get("Tags", [])}
    principal = Principal(found["Arn"], found.get("RoleId", ""), tags)
    boundary_arn = (found.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
    boundary = (boundary_arn, await managed_policy_document(ctx, boundary_arn)) if boundary_arn else None
    return Role(principal, await role_policy_documents(ctx, name), boundary)


async def service_roles(ctx: CheckContext) -> list[Role]:
    assert ctx.service.aws is not None
    return [await load_role(ctx, name) for name in ctx.service.aws.roles]
