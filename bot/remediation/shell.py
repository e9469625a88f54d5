"""`chatops fix ACTION key=value … --dry-run | --yes`: Slack's preview of a fix, from a shell, and — for the
actions the policy lets a requester approve themselves — running it.

A shell has no incident and nobody to approve, so it is "outside an incident" in the policy's terms: `--yes` runs
only actions listed under `remediation.self_approve`; everything else is requested from the finding's button in
Slack, where a second person approves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.errors import UserError
from bot.paging.policy import RemediationPolicy
from bot.remediation.messages import plan_plain
from checks.fixes import FixAction, FixOffer, FixRefused, FixResult

@dataclass(frozen=True)
class Outcome:
    ok: bool
    text: str


def parse_params(pairs: list[str]) -> dict[str, str]:
    """`["region=eu-west-1", "function=api"]` → a dict; anything else is a usage error saying what to type."""
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"Parameters are key=value (e.g. region=eu-west-1), not {pair[:40]!r}.")
        params[key.strip()] = value.strip()
    return params


def action_named(actions: dict[str, FixAction], name: str) -> FixAction:
    if name not in actions:
        raise UserError(f"There is no fix called {name[:60]!r}. Fixes: {', '.join(sorted(actions))}.")
    return actions[name]


def may_run_here(policy: RemediationPolicy, action: str) -> None:
    """Raise unless the policy lets a requester approve `action` themselves (outside an incident)."""
    if not policy.needs_second_person(action, None):
        return
    who = f"one of {', '.join(sorted(policy.approvers))}" if policy.approvers else \
        "a second person the `remediate` permission allows"
    raise UserError(f"{action} needs a second person's approval: request it from the finding's button in Slack, "
                    f"where {who} must approve it. Nothing was changed (the policy's remediation.self_approve "
                    "lists the fixes `--yes` may run).")


async def fix_from_shell(actions: dict[str, FixAction], aws: Any, policy: RemediationPolicy, name: str,
                         params: dict[str, str], *, run: bool) -> Outcome:
    """The preview; with `run`, the fix itself (after the same fresh re-read and "changed since" guard)."""
    action = action_named(actions, name)
    if run:
        may_run_here(policy, name)
    try:
        plan = await action.plan(aws, params)
    except FixRefused as exc:
        return Outcome(False, str(exc))
    if not run:
        return Outcome(True, plan_plain(plan))
    try:
        result = await action.apply(aws, plan)
    except FixRefused as exc:
        return Outcome(False, f"{plan_plain(plan)}\n\nNot done: {exc}")
    return Outcome(result.ok, f"{plan_plain(plan)}\n\n{result_text(result)}")


def result_text(result: FixResult) -> str:
    text = f"{'Fixed' if result.ok else 'Fix failed'}: {result.message}"
    return f"{text}\nUndo: {undo_command(result.reverse)}" if result.reverse else text


def undo_command(offer: FixOffer) -> str:
    """The exact shell line of the reverse action."""
    return " ".join(["chatops fix", offer.action, *(f"{key}={value}" for key, value in offer.params.items()), "--yes"])
