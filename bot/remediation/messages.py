"""Block Kit for fixes: the preview dialog, the approval message, the result. Text that came from AWS or from
people is escaped; a plan's lines are shown as code."""

from __future__ import annotations

from typing import Any

from bot.slack.mrkdwn import context, escape, inert, section, truncate
from checks.fixes import FixOffer, FixPlan, FixResult

PREVIEW_VIEW = "remediation_preview"  # the dialog's callback_id; its private_metadata is the preview token
APPROVE_ACTION = "remediation_approve"  # value: the request id
DENY_ACTION = "remediation_deny"
UNDO_ACTION = "remediation_undo"
INPUT_PREFIX = "fix_param:"  # the block id of a parameter the requester types
PLAN_MAX = 2500


def changes(plan: FixPlan) -> list[str]:
    """`key: before → after`, one line a value the fix sets (Slack's preview and `chatops fix` alike)."""
    return [f"{key}: {plan.before.get(key, '—')} → {value}" for key, value in plan.after.items()]


def plan_text(plan: FixPlan) -> str:
    """Exactly what will be called, the before and after values, and what it will not touch."""
    calls = "\n".join(plan.calls)
    lines = "\n".join(changes(plan))
    untouched = "\n".join(f"• {inert(item)}" for item in plan.untouched)
    return truncate(f"*Calls*\n```{inert(calls)}```\n*Before → after*\n```{inert(lines)}```\n"
                    f"*Will not touch*\n{untouched}", PLAN_MAX)


def plan_plain(plan: FixPlan) -> str:
    """The preview for a terminal (`chatops fix --dry-run`): the same three parts, as plain text."""
    return "\n".join(["Calls:", *(f"  {call}" for call in plan.calls), "Before → after:",
                      *(f"  {line}" for line in changes(plan)), "Will not touch:",
                      *(f"  • {item}" for item in plan.untouched)])


def preview_view(offer: FixOffer, plan: FixPlan, token: str, approvers: str) -> dict[str, Any]:
    blocks = [section(f"*{escape(offer.label)}*"), section(plan_text(plan))]
    for key, value in offer.params.items():
        if value == "":  # offered empty: the requester may type it (empty keeps the default shown above)
            blocks.append({"type": "input", "block_id": f"{INPUT_PREFIX}{key}", "optional": True,
                           "label": {"type": "plain_text", "text": key.replace("_", " ")[:2000]},
                           "element": {"type": "plain_text_input", "action_id": "value"}})
    # `approvers` is the bot's own mrkdwn (mentions of policy ids and channels): escaping it would break them
    blocks.append(context(f"Requesting posts this for approval; it needs {approvers}."))
    return {"type": "modal", "callback_id": PREVIEW_VIEW, "private_metadata": token,
            "title": {"type": "plain_text", "text": "Preview fix"},
            "submit": {"type": "plain_text", "text": "Request"}, "close": {"type": "plain_text", "text": "Cancel"},
            "blocks": blocks}


def typed_values(view: dict[str, Any]) -> dict[str, str]:
    values = (view.get("state") or {}).get("values") or {}
    return {block.removeprefix(INPUT_PREFIX): str((fields.get("value") or {}).get("value") or "").strip()
            for block, fields in values.items() if block.startswith(INPUT_PREFIX)}


def approval_message(label: str, plan: FixPlan, requester: str, needs: str, expires_at: float,
                     request_id: str) -> tuple[str, list[dict[str, Any]]]:
    text = f"<@{requester}> requests a fix: {escape(label)}"
    buttons = [{"type": "button", "action_id": APPROVE_ACTION, "value": request_id, "style": "primary",
                "text": {"type": "plain_text", "text": "Approve"}},
               {"type": "button", "action_id": DENY_ACTION, "value": request_id, "style": "danger",
                "text": {"type": "plain_text", "text": "Deny"}}]
    return text, [section(f":wrench: {text}"), section(plan_text(plan)),
                  context(f"Needs approval by {needs} · expires <!date^{int(expires_at)}^{{time}}|soon>"),
                  {"type": "actions", "block_id": f"fix:{request_id}", "elements": buttons}]


def decided_message(label: str, plan: FixPlan, requester: str, outcome: str) -> tuple[str, list[dict]]:
    text = f"<@{requester}> requested a fix: {escape(label)}"
    return text, [section(f":wrench: {text}"), section(plan_text(plan)), context(outcome)]


def result_message(label: str, result: FixResult, request_id: str) -> tuple[str, list[dict[str, Any]]]:
    icon = ":white_check_mark:" if result.ok else ":x:"
    text = f"{'Fixed' if result.ok else 'Fix failed'}: {label} — {result.message}"
    blocks: list[dict[str, Any]] = [section(f"{icon} {escape(text)}")]
    if result.reverse is not None:
        blocks.append({"type": "actions", "block_id": f"undo:{request_id}", "elements": [
            {"type": "button", "action_id": UNDO_ACTION, "value": request_id,
             "text": {"type": "plain_text", "text": f"Undo: {result.reverse.label}"[:75]}}]})
    blocks.append(context("A re-diagnosis follows; its \"since the last run\" line says whether it worked."))
    return escape(text), blocks
