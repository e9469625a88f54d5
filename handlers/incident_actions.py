"""The incident buttons: Acknowledge (header and paging DMs), Diagnose, Escalate, Resolve, Assign role (a dialog:
a role and a person, handled as `/incident role`); and Declare / Cancel on the preview `/incident` shows for
text that looks typed by accident.

A button's value is the incident id. Nothing about the click is trusted beyond Slack's signature: the same
server-side authorisation as the commands runs here, so a forged payload naming another incident or pressed
by someone outside the channel is refused (ephemerally, saying who can) and changes nothing.
"""

from __future__ import annotations

import logging
import uuid
import weakref
from typing import Any

from bot.errors import UserError
from bot.incidents import escalation, lifecycle, roles
from bot.incidents.messages import (
    ACK_ACTION,
    ASSIGN_ROLE_ACTION,
    ASSIGN_ROLE_VIEW,
    PERSON_BLOCK,
    PERSON_PICK,
    ROLE_BLOCK,
    ROLE_PICK,
    CANCEL_DECLARE_ACTION,
    DECLARE_ACTION,
    DIAGNOSE_ACTION,
    ESCALATE_ACTION,
    RESOLVE_ACTION,
    ack_answer,
    assign_role_view,
    escalate_answer,
    who,
)
from bot.incidents.model import parse_incident_id
from bot.incidents.service import Incidents, incidents_of
from bot.paging.slack_dm import OPEN_CHANNEL_ACTION_ID
from bot.runtime import Runtime
from bot.slack.client import SlackError
from bot.slack.mrkdwn import truncate
from handlers.commands.incident import declared_answer
from handlers.errors import answers_errors, internal_error_text, reference_id

log = logging.getLogger(__name__)

_registered: weakref.WeakSet = weakref.WeakSet()


def register(app: Any, rt: Runtime) -> None:
    """Idempotent per app, so it is safe to call from both handlers.actions and a test harness."""
    if app in _registered:
        return
    _registered.add(app)
    for action_id, handler in ((ACK_ACTION, on_ack), (DIAGNOSE_ACTION, on_diagnose),
                               (ESCALATE_ACTION, on_escalate), (RESOLVE_ACTION, on_resolve)):
        app.action(action_id)(_listener(rt, handler))
    for action_id, handler in ((DECLARE_ACTION, on_declare), (CANCEL_DECLARE_ACTION, on_cancel_declare)):
        app.action(action_id)(_preview_listener(rt, handler))
    app.action(ASSIGN_ROLE_ACTION)(_listener(rt, on_assign_role))
    app.view(ASSIGN_ROLE_VIEW)(_assign_role_submitted(rt))

    @app.action(OPEN_CHANNEL_ACTION_ID)
    async def open_channel(ack: Any, **_: Any) -> None:
        await ack()  # a link button: Slack still sends the click, and it must be acknowledged


def _listener(rt: Runtime, handler: Any) -> Any:
    @answers_errors
    async def listener(ack: Any, body: dict, action: dict, respond: Any, **_: Any) -> None:
        await ack()  # within 3 s, before anything slow; what follows answers through response_url
        ctx = incidents_of(rt)
        incident_id = parse_incident_id(str(action.get("value") or ""))
        incident = await ctx.store.get(incident_id) if incident_id else None
        if incident is None:
            raise UserError("That button belongs to an incident I don't know any more.")
        user = (body.get("user") or {}).get("id") or ""
        key = str(body.get("trigger_id") or uuid.uuid4().hex)
        text = await handler(ctx, incident, user, key)
        await respond(text=text, response_type="ephemeral", replace_original=False)

    listener.__name__ = f"incident_button_{handler.__name__}"
    return listener


async def on_ack(ctx: Incidents, incident: Any, user: str, key: str) -> str:
    await ctx.authorize(incident, user, "ack")
    result = await escalation.acknowledge(ctx, incident.id, user, "button")
    if result.already:
        return f"{incident.id} was already acknowledged by {who(result.incident.paging.acked_by)}."
    return ack_answer(result.incident)


async def on_diagnose(ctx: Incidents, incident: Any, user: str, key: str) -> str:
    await ctx.require_visible(incident, user)  # a forged click must not name a private incident's service
    run_id = await lifecycle.request_incident_diagnosis(ctx, incident, user)
    return f"Diagnosing `{incident.service}` for {incident.id} (run {run_id}); results appear in the channel."


ESCALATE_CLICK_WINDOW_S = 10


async def on_escalate(ctx: Incidents, incident: Any, user: str, key: str) -> str:
    await ctx.authorize(incident, user, "escalate")
    # Two people (or one double click) pressing Escalate together mean "escalate", not "skip a level".
    if not await ctx.rt.redis.set(ctx.rt.key("inc", incident.id, "escalate-click"), user, nx=True,
                                  ex=ESCALATE_CLICK_WINDOW_S):
        return (f"{incident.id} was escalated moments ago; not paging another level. Use `/escalate` if you "
                f"really mean the level after that.")
    result = await escalation.escalate_next(ctx, incident.id, user, None)
    return escalate_answer(incident.id, result.level, result.targets)


async def on_resolve(ctx: Incidents, incident: Any, user: str, key: str) -> str:
    await ctx.authorize(incident, user, "resolve")
    await lifecycle.resolve(ctx, incident.id, user, None, key=key)
    return (f"{incident.id} is resolved. Say what fixed it with `/incident note {incident.id} <what fixed it>` "
            f"so the postmortem has it.")


ASSIGN_ROLE_FALLBACK = "or type `/incident role {id} <role> @user`"


async def on_assign_role(ctx: Incidents, incident: Any, user: str, key: str) -> str:
    """Checked before the dialog opens (and again when it is submitted: the change is made then). `key` is the
    click's trigger_id, which views.open needs within 3 s of the click."""
    await ctx.authorize(incident, user, "roles")
    view = assign_role_view(incident, roles.role_names(ctx.settings))
    try:
        await ctx.slack.call("views.open", trigger_id=key, view=view)
    except SlackError as exc:  # e.g. expired_trigger_id: Slack was slower than the click's 3 s
        log.warning("%s: views.open failed: %s", incident.id, exc.error)
        return f"The dialog could not open; {ASSIGN_ROLE_FALLBACK.format(id=incident.id)}."
    return f"Pick the role and the person in the dialog ({ASSIGN_ROLE_FALLBACK.format(id=incident.id)})."


def _assign_role_submitted(rt: Runtime) -> Any:
    async def assign_role_submitted(ack: Any, body: dict, view: dict, **_: Any) -> None:
        """A wrong pick or a refusal is shown in the dialog itself, which stays open; nothing is changed."""
        try:
            await _assign_from_view(incidents_of(rt), body, view)
        except UserError as exc:
            await ack(response_action="errors", errors={PERSON_BLOCK: truncate(str(exc), 300)})
            return
        except Exception:
            ref = reference_id()
            log.exception("assigning a role from the dialog failed (ref %s)", ref)
            await ack(response_action="errors", errors={PERSON_BLOCK: truncate(internal_error_text(ref), 300)})
            return
        await ack()

    return assign_role_submitted


async def _assign_from_view(ctx: Incidents, body: dict, view: dict) -> str:
    values = (view.get("state") or {}).get("values") or {}
    role = ((values.get(ROLE_BLOCK, {}).get(ROLE_PICK) or {}).get("selected_option") or {}).get("value")
    person = (values.get(PERSON_BLOCK, {}).get(PERSON_PICK) or {}).get("selected_user")
    incident_id = parse_incident_id(str(view.get("private_metadata") or ""))
    incident = await ctx.store.get(incident_id) if incident_id else None
    if incident is None or not role or not person:
        raise UserError("Pick a role and a person, or use `/incident role <role> @user`.")
    role = roles.parse_role(str(role), ctx.settings)
    user = (body.get("user") or {}).get("id") or ""
    # A resubmitted dialog (Slack retrying) carries the same view id and hash: the same key, recorded once.
    key = f"view:{view.get('id')}:{view.get('hash')}"
    return await roles.give(ctx, incident, user, role, str(person), key=key)


def _preview_listener(rt: Runtime, handler: Any) -> Any:
    """The preview's buttons carry a proposal token, not an incident id; the answer replaces the preview, so
    its buttons are gone once used."""
    @answers_errors
    async def listener(ack: Any, body: dict, action: dict, respond: Any, **_: Any) -> None:
        await ack()
        user = (body.get("user") or {}).get("id") or ""
        text = await handler(incidents_of(rt), str(action.get("value") or ""), user)
        await respond(text=text, response_type="ephemeral", replace_original=True)

    listener.__name__ = f"incident_preview_{handler.__name__}"
    return listener


async def on_declare(ctx: Incidents, token: str, user: str) -> str:
    incident, created = await lifecycle.declare_proposed(ctx, token, user)
    return declared_answer(ctx, incident, created)


async def on_cancel_declare(ctx: Incidents, token: str, user: str) -> str:
    declared = await lifecycle.cancel_proposal(ctx, token)
    if declared:
        return f"*{declared}* was already declared from this preview; `/incident resolve` closes it."
    return "Cancelled: nothing was declared and nobody was paged."
