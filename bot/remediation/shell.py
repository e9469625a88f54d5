"""`chatops fix ACTION key=value … --dry-run | --yes`: Slack's preview of a fix, from a shell, and — for the
actions the policy lets a requester approve themselves — running it.

A shell has no Slack identity and nobody to approve, so `--yes` runs only actions listed under
`remediation.self_approve` (in or outside an incident); everything else is requested from the finding's button in
Slack, where a second person approves it. `--yes` goes through the request path (bot/remediation/service.py
`run_from_shell`): a request record, its decision, the once-only run and the audit log lines, and, with
`incident=INC-12`, the incident's timeline (so the postmortem's Resolution lists it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bot.errors import UserError
from bot.incidents.model import INCIDENT_ID
from bot.paging.policy import RemediationPolicy
from bot.remediation.messages import plan_plain
from checks.fixes import FixAction, FixOffer, FixPlan, FixRefused, FixResult

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


Runner = Callable[[FixPlan], Awaitable[FixResult]]


async def fix_from_shell(actions: dict[str, FixAction], aws: Any, policy: RemediationPolicy, name: str,
                         params: dict[str, str], *, run: Runner | None) -> Outcome:
    """The preview; with `run`, the fix itself, through `run` (the request path: its record, the fresh re-read and
    "changed since" guard, the audit)."""
    action = action_named(actions, name)
    if run is not None:
        may_run_here(policy, name)
    try:
        plan = await action.plan(aws, params)
    except FixRefused as exc:
        return Outcome(False, str(exc))
    if run is None:
        return Outcome(True, plan_plain(plan))
    result = await run(plan)
    return Outcome(result.ok, f"{plan_plain(plan)}\n\n{result_text(result)}")


def split_incident(params: dict[str, str]) -> tuple[dict[str, str], str]:
    """`incident=INC-12` names the incident whose timeline records the fix; it is not the action's."""
    rest = {key: value for key, value in params.items() if key != "incident"}
    incident = params.get("incident", "").upper()
    if incident and not INCIDENT_ID.match(incident):
        raise UserError(f"incident= takes an incident id such as INC-12, not {incident[:40]!r}.")
    return rest, incident


def shell_label(name: str, params: dict[str, str]) -> str:
    """What the record and the timeline call a fix run from a shell (there is no offer with a button label)."""
    return " ".join([name, *(f"{key}={value}" for key, value in params.items())])[:150]


def recheck_text(request_id: str, incident: str, service: str) -> str:
    where = f"{incident}'s timeline and " if incident else ""
    target = service or "SERVICE"
    return (f"Recorded as fix request {request_id} ({where}the log). Not posted to Slack and not re-checked from "
            f"here: run `chatops diagnose {target}` (or `/diagnose {target}` in Slack) to confirm it.")


def result_text(result: FixResult) -> str:
    text = f"{'Fixed' if result.ok else 'Fix failed'}: {result.message}"
    return f"{text}\nUndo: {undo_command(result.reverse)}" if result.reverse else text


def undo_command(offer: FixOffer) -> str:
    """The exact shell line of the reverse action."""
    return " ".join(["chatops fix", offer.action, *(f"{key}={value}" for key, value in offer.params.items()), "--yes"])
