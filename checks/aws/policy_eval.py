"""Whether an explicit Deny in a policy applies to one of the service's roles — statically, from the documents.

IAM cannot be asked (`simulate_principal_policy` needs the caller's rights over the role and moto does not
implement it), so this reads the statement the way IAM does, as far as it can be known without a request:

- `Principal` / `NotPrincipal`: `*`, the role's ARN, its account (`arn:aws:iam::<acct>:root` or the bare id), the
  role's assumed-role session ARN. A `NotPrincipal` Deny applies to every principal it does not list.
- `Condition`: keys about *who* asks (`aws:PrincipalArn`, `aws:PrincipalAccount`, `aws:userid`,
  `aws:PrincipalTag/…`, `aws:PrincipalType`) are evaluated against the role. Keys about *how* the request arrives
  (`aws:SourceVpce`, `aws:SecureTransport`, …) cannot be, and are returned as "depends on" text.
- Actions: a Deny matters when it covers an action the role is otherwise allowed, so "Deny s3:DeleteBucket to
  everyone" next to a role that only reads objects is not a finding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

# Condition keys whose value is a property of the calling principal, not of the request.
_IDENTITY_KEYS = {"aws:principalarn", "aws:principalaccount", "aws:userid", "aws:principaltype", "aws:username"}
_OPERATORS = {
    "stringequals": (False, False), "stringnotequals": (True, False), "stringlike": (False, True),
    "stringnotlike": (True, True), "arnequals": (False, True), "arnlike": (False, True),
    "arnnotequals": (True, True), "arnnotlike": (True, True), "stringequalsignorecase": (False, False),
}  # operator → (negated, wildcards)


@dataclass(frozen=True)
class Principal:
    """One of the service's roles, as a policy sees it when the role's session makes a request."""

    arn: str  # arn:aws:iam::123456789012:role/path/Name
    role_id: str = ""  # AROA…: `aws:userid` is "<role id>:<session name>"
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def account(self) -> str:
        return self.arn.split(":")[4]

    @property
    def name(self) -> str:
        return self.arn.rsplit("/", 1)[-1]

    def aliases(self) -> list[str]:
        """Every way a Principal element can name this role's sessions."""
        return [self.arn, f"arn:aws:sts::{self.account}:assumed-role/{self.name}/*",
                f"arn:aws:iam::{self.account}:root", self.account]

    def context(self, key: str) -> str | None:
        key = key.lower()
        if key.startswith("aws:principaltag/"):
            return next((v for k, v in self.tags.items() if k.lower() == key.split("/", 1)[1]), None)
        return {"aws:principalarn": self.arn, "aws:principalaccount": self.account, "aws:principaltype": "AssumedRole",
                "aws:userid": f"{self.role_id}:session"}.get(key)


@dataclass(frozen=True)
class DenyMatch:
    """A Deny statement that applies to a role, and the role's allowed actions it takes away."""

    policy: str
    sid: str
    role: str
    actions: tuple[str, ...]  # the statement's actions (or "NOT …" for NotAction)
    blocked: tuple[str, ...]  # the role's allowed actions this Deny covers
    depends_on: tuple[str, ...]  # request-dependent conditions: the Deny applies only when they hold

    @property
    def certain(self) -> bool:
        return not self.depends_on

    def row(self) -> dict[str, Any]:
        return {"policy": self.policy, "sid": self.sid, "role": self.role, "actions": ", ".join(self.actions),
                "blocks": ", ".join(self.blocked) or "-", "applies_when": "; ".join(self.depends_on) or "always"}


def statements(document: dict[str, Any] | str | None) -> list[tuple[str, dict[str, Any]]]:
    """(sid, statement) pairs of a policy document (JSON text or dict); a statement without Sid is `#index`."""
    if not document:
        return []
    parsed = json.loads(document) if isinstance(document, str) else document
    listed = parsed.get("Statement", [])
    listed = listed if isinstance(listed, list) else [listed]
    return [(s.get("Sid") or f"#{i}", s) for i, s in enumerate(listed)]


def as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def matches_any(patterns: list[str], value: str) -> bool:
    return any(fnmatchcase(value.lower(), p.lower()) for p in patterns)


def overlaps(a: str, b: str) -> bool:
    """Two action or resource patterns can name the same thing (`s3:Get*` and `s3:GetObject`, `*` and anything)."""
    a, b = a.lower(), b.lower()
    return fnmatchcase(a, b) or fnmatchcase(b, a)


def principal_applies(statement: dict[str, Any], principal: Principal) -> bool:
    """Whether the statement's Principal/NotPrincipal covers the role (identity policies have neither: yes)."""
    if "NotPrincipal" in statement:
        return not _names(statement["NotPrincipal"], principal)
    if "Principal" in statement:
        return _names(statement["Principal"], principal)
    return True


def _names(spec: Any, principal: Principal) -> bool:
    listed = as_list(spec) if not isinstance(spec, dict) else as_list(spec.get("AWS"))
    return "*" in listed or any(matches_any(listed, alias) for alias in principal.aliases())


def conditions(statement: dict[str, Any], principal: Principal) -> tuple[bool, list[str]]:
    """(can apply to the role, the request-dependent conditions left). An identity condition the role fails makes
    the statement not apply; one it meets drops out."""
    left = []
    for operator, tests in (statement.get("Condition") or {}).items():
        for key, values in tests.items():
            outcome = _identity_test(operator, key, as_list(values), principal)
            if outcome is False:
                return False, []
            if outcome is None:
                left.append(f"{key} {operator} {', '.join(as_list(values))}")
    return True, left


def _identity_test(operator: str, key: str, values: list[str], principal: Principal) -> bool | None:
    """True/False when the condition is about the principal and decidable; None when it depends on the request."""
    bare = operator.split(":")[-1].lower().removesuffix("ifexists")
    if not (key.lower() in _IDENTITY_KEYS or key.lower().startswith("aws:principaltag/")) or bare not in _OPERATORS:
        return None
    negated, wildcards = _OPERATORS[bare]
    actual = principal.context(key)
    if actual is None:
        return operator.lower().endswith("ifexists") or negated
    hit = matches_any(values, actual) if wildcards else actual.lower() in {v.lower() for v in values}
    return hit != negated


def grants_action(statement: dict[str, Any], action: str) -> bool:
    """Whether the statement names `action`: in its Action, or outside its NotAction ("everything but iam:*")."""
    if "NotAction" in statement:
        return not matches_any(as_list(statement["NotAction"]), action)
    return matches_any(as_list(statement.get("Action")), action)


def blocked_actions(statement: dict[str, Any], allowed: list[str]) -> list[str]:
    """The allowed actions a Deny covers: overlapping its Action, or outside its NotAction."""
    if "NotAction" in statement:
        excluded = as_list(statement["NotAction"])
        return [a for a in allowed if not matches_any(excluded, a)]
    denied = as_list(statement.get("Action"))
    return [a for a in allowed if any(overlaps(a, d) for d in denied)]


def covers_resource(statement: dict[str, Any], resource: str) -> bool:
    """Whether the statement's Resource (or what its NotResource leaves) can include the `resource` pattern."""
    if "NotResource" in statement:
        return not matches_any(as_list(statement["NotResource"]), resource)
    return any(overlaps(p, resource) for p in as_list(statement.get("Resource")) or ["*"])


def denies_for(policy: str, document: Any, principal: Principal, allowed: list[str],
               grants: list[tuple[str, str]] | None = None) -> list[DenyMatch]:
    """The Deny statements of `document` that apply to `principal` and take away something in `allowed`. With
    `grants` ((action, resource) the role is allowed), a Deny counts only where its resources meet the granted
    ones: a boundary's "Deny s3:* on the audit bucket" takes nothing from a role that reads another bucket."""
    found = []
    for sid, statement in statements(document):
        if statement.get("Effect") != "Deny" or not principal_applies(statement, principal):
            continue
        applies, depends_on = conditions(statement, principal)
        blocked = blocked_actions(statement, allowed)
        if grants is not None:
            blocked = [a for a in blocked if any(a == g and covers_resource(statement, r) for g, r in grants)]
        if applies and blocked:
            actions = as_list(statement.get("Action")) or [f"NOT {a}" for a in as_list(statement.get("NotAction"))]
            found.append(DenyMatch(policy, sid, principal.name, tuple(actions), tuple(blocked), tuple(depends_on)))
    return found


def allowed_grants(documents: list[Any], principal: Principal) -> list[tuple[str, str]]:
    """(action, resource pattern) for every Allow statement of the documents that applies to `principal`."""
    return [(action, resource) for document in documents for _, s in statements(document)
            if s.get("Effect") == "Allow" and principal_applies(s, principal)
            for action in as_list(s.get("Action")) for resource in as_list(s.get("Resource")) or ["*"]]


def allowed_actions(documents: list[Any], principal: Principal, resources: list[str]) -> list[str]:
    """Actions the documents' Allow statements grant `principal` on any of `resources` (ARN patterns)."""
    found: list[str] = []
    for document in documents:
        for _, statement in statements(document):
            if statement.get("Effect") != "Allow" or not principal_applies(statement, principal):
                continue
            patterns = as_list(statement.get("Resource")) or ["*"]
            if any(overlaps(p, r) for p in patterns for r in resources):
                found += as_list(statement.get("Action"))
    return list(dict.fromkeys(found))
