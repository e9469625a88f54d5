"""Explicit Denies that reach the service's roles: resource policies (queues, KMS keys) and identity limits.

- `aws.resource_policies` (config): the queue policies of `aws.queues` and the key policies of their KMS keys,
  against every role in `aws.roles`. Bucket policies are judged by `aws.s3` and endpoint policies by
  `aws.interface_endpoints`, with the same rules (`judge_policy`).
- `aws.identity_policies` (config), per role: its permissions boundary (a Deny, or an action the role's policies
  allow that the boundary does not) and the service control policies visible to the account.

A Deny is a finding when it applies to the role (principal, NotPrincipal, identity conditions: see
checks/aws/policy_eval.py) and covers an action the role is otherwise allowed on that resource. A Deny that also
depends on the request (`aws:SourceVpce`, `aws:SecureTransport`) is listed, not failed: it is the usual cause of
"works here, 403 there", but often deliberate.

Not covered: SCPs are read with `organizations:ListPoliciesForTarget`, which only the management account (or a
delegated administrator) may call; elsewhere the evidence says they are not visible. SCPs never apply to the
management account itself, and an SCP that limits by not allowing (rather than by Deny) is not evaluated. moto
cannot evaluate any of this (`iam:SimulatePrincipalPolicy` is not implemented), which is why it is static.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from checks.aws.clients import AwsCheckError
from checks.aws.common import aws_check, aws_error_code, region
from checks.aws.policy_eval import DenyMatch, allowed_actions, denies_for, grants_action, statements
from checks.aws.roles import Role, load_role, service_roles
from checks.aws.sqs import describe_queue
from checks.model import CheckResult, Status
from checks.registry import CheckContext, check

# Not the management account, no organization (moto says AccountNotFoundException for that): SCPs are not visible.
_SCP_HIDDEN = {"AccessDeniedException", "AccessDenied", "AWSOrganizationsNotInUseException", "AccountNotFoundException"}


@dataclass(frozen=True)
class ResourcePolicy:
    name: str  # "queue policy of jobs", "key policy of arn:aws:kms:…"
    document: Any
    resources: tuple[str, ...]  # the ARNs the policy protects, to match the roles' Allow statements against


def judge_policy(policy: ResourcePolicy, roles: list[Role]) -> list[DenyMatch]:
    """The policy's Denies that take away from a role what its own policies or this policy allow it."""
    resources = list(policy.resources)
    found = []
    for role in roles:
        allowed = role.allowed(resources) + allowed_actions([policy.document], role.principal, resources)
        found += denies_for(policy.name, policy.document, role.principal, list(dict.fromkeys(allowed)))
    return found


def deny_result(denies: list[DenyMatch], *, ok: str, evidence: dict[str, Any], resource: str | None = None) -> CheckResult:
    """`fail` naming the first Deny that always applies; conditional ones only as evidence."""
    evidence = evidence | {"denies": [d.row() for d in denies]}
    certain = [d for d in denies if d.certain]
    if not certain:
        note = f"; {len(denies)} Deny statement(s) apply only under request conditions" if denies else ""
        return CheckResult(status=Status.ok, summary=ok + note, evidence=evidence)
    first = certain[0]
    more = f" (+{len(certain) - 1} more)" if certain[1:] else ""
    return CheckResult(
        status=Status.fail, severity="P1", resource=resource or first.policy, evidence=evidence,
        summary=f"Statement {first.sid} of the {first.policy} denies role {first.role} "
                f"{', '.join(first.blocked)}, which it needs.{more}",
        hint=f"Exclude {first.role} from statement {first.sid} (NotPrincipal, or an aws:PrincipalArn condition), "
             "or narrow its actions: an explicit Deny wins over every Allow.",
    )


# --- aws.resource_policies -------------------------------------------------------------------------------------


@check("aws.resource_policies", timeout_s=20)
@aws_check
async def resource_policies(_: str, ctx: CheckContext) -> CheckResult:
    """Queue and KMS key policies hold no Deny that applies to the service's roles"""
    roles = await service_roles(ctx)
    policies = await _queue_and_key_policies(ctx)
    denies = [d for policy in policies for d in judge_policy(policy, roles)]
    evidence = {"policies": [p.name for p in policies], "roles": [r.name for r in roles]}
    return deny_result(denies, evidence=evidence,
                       ok=f"No Deny in {len(policies)} queue/key policies applies to {len(roles)} role(s)")


async def _queue_and_key_policies(ctx: CheckContext) -> list[ResourcePolicy]:
    assert ctx.service.aws is not None
    found: list[ResourcePolicy] = []
    keys: dict[str, None] = {}
    for ref in ctx.service.aws.queues:
        queue = await describe_queue(ctx, ref)
        if queue.attributes.get("Policy"):
            found.append(ResourcePolicy(f"queue policy of {queue.name}", queue.attributes["Policy"], (queue.arn,)))
        key = queue.attributes.get("KmsMasterKeyId")
        if key and not key.startswith("alias/aws/"):  # AWS-managed keys have the fixed AWS policy
            keys[key] = None
    return found + [await _key_policy(ctx, key) for key in keys]


async def _key_policy(ctx: CheckContext, key: str) -> ResourcePolicy:
    """`kms:DescribeKey` (for the ARN an alias stands for) and `kms:GetKeyPolicy`."""
    meta = (await ctx.aws.call("kms", region(ctx), "describe_key", KeyId=key))["KeyMetadata"]
    policy = await ctx.aws.call("kms", region(ctx), "get_key_policy", KeyId=meta["KeyId"], PolicyName="default")
    return ResourcePolicy(f"key policy of {meta['Arn']}", policy["Policy"], (meta["Arn"],))


# --- aws.identity_policies -------------------------------------------------------------------------------------


@check("aws.identity_policies", timeout_s=20)
@aws_check
async def identity_policies(name: str, ctx: CheckContext) -> CheckResult:
    """A role's permissions boundary and the account's SCPs do not take away what its policies allow"""
    role = await load_role(ctx, name)
    allowed = role.allowed(["*"])
    denies, outside = _boundary_limits(role, allowed)
    scps = await _service_control_policies(ctx, role.principal.account)
    for scp_name, document in scps or []:
        denies += denies_for(scp_name, document, role.principal, allowed, role.grants())
    evidence = {"role": role.principal.arn, "boundary": role.boundary[0] if role.boundary else None,
                "allowed_actions": allowed, "outside_boundary": outside,
                "scps": [n for n, _ in scps] if scps is not None else "not visible from this account"}
    if outside and not any(d.certain for d in denies):
        return _outside_boundary(role, outside, evidence)
    return deny_result(denies, evidence=evidence,
                       ok=f"Nothing in the boundary or visible SCPs of {name} denies what its policies allow")


def _boundary_limits(role: Role, allowed: list[str]) -> tuple[list[DenyMatch], list[str]]:
    """The boundary's Denies, and the allowed actions no boundary Allow covers (implicitly denied)."""
    if role.boundary is None:
        return [], []
    arn, document = role.boundary
    allows = [s for _, s in statements(document) if s.get("Effect") == "Allow"]
    outside = [a for a in allowed if "*" not in a and not any(grants_action(s, a) for s in allows)]
    return denies_for(f"permissions boundary {arn}", document, role.principal, allowed, role.grants()), outside


def _outside_boundary(role: Role, outside: list[str], evidence: dict[str, Any]) -> CheckResult:
    arn = role.boundary[0] if role.boundary else ""
    return CheckResult(
        status=Status.fail, severity="P1", resource=arn, evidence=evidence,
        summary=f"Role {role.name} is allowed {', '.join(outside)} by its policies, but its permissions boundary "
                f"{arn} does not allow it, so every such call is denied.",
        hint=f"Add {', '.join(outside)} to an Allow statement of the boundary {arn}, or remove the boundary.",
    )


async def _service_control_policies(ctx: CheckContext, account: str) -> list[tuple[str, Any]] | None:
    """The SCPs attached to the account (`organizations:ListPoliciesForTarget`, `DescribePolicy`); None when the
    account may not see them."""
    try:
        listed = await ctx.aws.paginate("organizations", region(ctx), "list_policies_for_target", "Policies",
                                        TargetId=account, Filter="SERVICE_CONTROL_POLICY")
    except AwsCheckError as exc:
        if aws_error_code(exc) in _SCP_HIDDEN:
            return None
        raise
    found = []
    for summary in listed:
        policy = await ctx.aws.call("organizations", region(ctx), "describe_policy", PolicyId=summary["Id"])
        found.append((f"SCP {summary['Name']}", policy["Policy"]["Content"]))
    return found
