"""Guarded fixes: the data a check attaches to a finding and an action's preview and result.

Data only. The actions themselves live in checks/aws/fixes/ (pure functions of an AwsClients, no bot imports);
the bot's remediation package decides who may run them and when. AwsClients is asynchronous, so `plan` and
`apply` are coroutines. Every action reads `region` from its params.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol

import msgspec


class FixOffer(msgspec.Struct, frozen=True):
    """A fix offered by the check that found the cause."""

    action: str  # registry name, e.g. "lambda.rollback_alias"
    label: str  # button text, at most 75 characters: "Roll back api-handler to v41"
    params: dict[str, str] = msgspec.field(default_factory=dict)  # what the action needs (region, function, version…)
    reverse_label: str = ""


class FixPlan(msgspec.Struct, frozen=True):
    """The preview: exactly what will be called, on which state."""

    action: str
    params: dict[str, str]
    calls: list[str]  # "lambda:UpdateAlias(FunctionName=api-handler, Name=live, FunctionVersion=41)"
    before: dict[str, str]
    after: dict[str, str]
    untouched: list[str]  # what it will not touch
    fingerprint: str  # hash of `before`: the state the preview saw


class FixResult(msgspec.Struct, frozen=True):
    ok: bool
    message: str  # one sentence: what changed, or AWS's error
    after: dict[str, str] = msgspec.field(default_factory=dict)
    reverse: FixOffer | None = None


class FixRefused(Exception):
    """The action will not run; the message is one sentence for the requester."""


class FixChanged(FixRefused):
    """Refused because the state read right before the write is not the preview's; `current` is what was read.

    A retry after an interrupted attempt compares `current` with the plan's `after`: equal means that attempt
    made the change, which is a success and not a refusal."""

    def __init__(self, message: str, current: dict[str, str]) -> None:
        super().__init__(message)
        self.current = current

    def reached(self, after: dict[str, str]) -> bool:
        """The state already holds every value the plan meant to set."""
        return all(self.current.get(key) == value for key, value in after.items())


class FixAction(Protocol):
    name: str

    async def plan(self, aws: Any, params: dict[str, str]) -> FixPlan:
        """Read-only; raises FixRefused with a sentence."""
        ...

    async def apply(self, aws: Any, plan: FixPlan) -> FixResult:
        """Re-reads the state first and raises FixChanged if its fingerprint differs from the plan's."""
        ...

    def reverse(self, plan: FixPlan) -> FixOffer | None:
        """The offer that undoes `plan` once applied. A function of the plan alone, so a retry that finds an
        interrupted attempt's change can offer the same undo the attempt would have."""
        ...


def fingerprint(before: dict[str, str]) -> str:
    """The identity of the state a preview saw: equal states hash equal, whatever the key order."""
    return hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]


def call_text(api: str, **params: object) -> str:
    """`call_text("lambda:UpdateAlias", FunctionName="f")` → `lambda:UpdateAlias(FunctionName=f)`."""
    return f"{api}({', '.join(f'{key}={value}' for key, value in params.items())})"
