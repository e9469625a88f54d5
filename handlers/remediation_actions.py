"""The fix buttons: an offer (on a finding's reply or the incident header) or an undo opens the preview dialog;
its "Request" posts the request for approval; "Approve" queues the fix, "Deny" drops it.

Values are references (a run and an offer digest, a request id), never parameters: bot/remediation reads the
offer and the plan back from what it stored, and checks who may, whatever the payload says.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from bot.diagnosis.render.slack import FIX_ACTION
from bot.errors import UserError
from bot.remediation import messages, service
from bot.runtime import Runtime
from bot.slack.mrkdwn import truncate
from handlers.errors import answers_errors, internal_error_text, reference_id

log = logging.getLogger(__name__)

_OFFER = re.compile(rf"^{FIX_ACTION}(?::\d+)?$")


def register(app: Any, rt: Runtime) -> None:
    app.action(_OFFER)(_listener(rt, _on_offer))
    app.action(messages.UNDO_ACTION)(_listener(rt, _on_undo))
    app.action(messages.APPROVE_ACTION)(_listener(rt, _on_approve))
    app.action(messages.DENY_ACTION)(_listener(rt, _on_deny))
    app.view(messages.PREVIEW_VIEW)(_submitted(rt))


def _listener(rt: Runtime, handler: Any) -> Any:
    @answers_errors
    async def listener(ack: Any, body: dict, action: dict, respond: Any, **_: Any) -> None:
        await ack()
        user = (body.get("user") or {}).get("id") or ""
        trigger = str(body.get("trigger_id") or uuid.uuid4().hex)
        text = await handler(service.remediation_of(rt), str(action.get("value") or ""), user, trigger)
        await respond(text=text, response_type="ephemeral", replace_original=False)

    listener.__name__ = f"remediation_{handler.__name__.strip('_')}"
    return listener


async def _on_offer(fx: service.Remediation, value: str, user: str, trigger: str) -> str:
    return await service.open_preview(fx, value, user, trigger)


async def _on_undo(fx: service.Remediation, value: str, user: str, trigger: str) -> str:
    return await service.open_preview(fx, f"undo:{value}", user, trigger)


async def _on_approve(fx: service.Remediation, value: str, user: str, trigger: str) -> str:
    return await service.approve(fx, value, user)


async def _on_deny(fx: service.Remediation, value: str, user: str, trigger: str) -> str:
    return await service.deny(fx, value, user)


def _submitted(rt: Runtime) -> Any:
    async def submitted(ack: Any, body: dict, view: dict, **_: Any) -> None:
        """A refusal is shown in the dialog, which stays open; nothing is requested."""
        user = (body.get("user") or {}).get("id") or ""
        token = str(view.get("private_metadata") or "")
        first_block = next((b.get("block_id") for b in view.get("blocks") or [] if b.get("type") == "input"), None)
        try:
            await service.submit_request(service.remediation_of(rt), token, messages.typed_values(view), user)
        except UserError as exc:
            await _refuse(ack, first_block, str(exc))
            return
        except Exception:
            ref = reference_id()
            log.exception("requesting a fix from the dialog failed (ref %s)", ref)
            await _refuse(ack, first_block, internal_error_text(ref))
            return
        await ack()

    return submitted


async def _refuse(ack: Any, block: str | None, text: str) -> None:
    if block:
        await ack(response_action="errors", errors={block: truncate(text, 300)})
    else:  # a dialog without inputs cannot show an error under one: say it in place of the dialog
        await ack(response_action="update", view={
            "type": "modal", "title": {"type": "plain_text", "text": "Fix not requested"},
            "close": {"type": "plain_text", "text": "Close"},
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, 2900)}}]})
