"""`/escalate` — two different things, kept explicit:

    /escalate [reason]            page the next level of the policy now
    /escalate P0 [reason]         raise the severity; page only whoever the new severity adds
    /escalate @user @group [reason]   page exactly those people (Slack DMs with an Acknowledge button)

Inside an incident channel the incident is implied; elsewhere start with its id (`/escalate INC-12 …`).
Who may escalate (and raise the severity) comes from the paging policy; the check runs here, server-side.
"""

from __future__ import annotations

import uuid
from typing import Any

from bot.errors import UserError
from bot.incidents import escalation, messages
from bot.incidents.service import GROUP_MENTION, MENTION, Incidents, incidents_of
from bot.runtime import Runtime
from bot.slack.mrkdwn import escape, one_line
from handlers.commands.incident import (
    ALREADY_DONE,
    first_time,
    severity_of,
    split_explicit,
)
from handlers.errors import answers_errors

EXAMPLE = "/escalate INC-12 <reason>"


def split_people(words: list[str]) -> tuple[list[str], list[str]]:
    """Leading mentions (`<@U1|ann>`, `<!subteam^S1|@db>`) → ids; the rest is the reason."""
    people: list[str] = []
    while words:
        match = MENTION.match(words[0]) or GROUP_MENTION.match(words[0])
        if not match:
            break
        people.append(match.group(1))
        words = words[1:]
    if not people and words and words[0].startswith("@"):
        raise UserError(f"I can't tell who `{escape(one_line(words[0], 40))}` is. Mention them so Slack sends "
                        f"their id: type @ and pick the person or group from the list.")
    return list(dict.fromkeys(people)), words


def register(app: Any, rt: Runtime) -> None:
    @app.command("/escalate")
    @answers_errors
    async def escalate(ack: Any, command: dict, **_: Any) -> None:
        ctx = incidents_of(rt)
        explicit, words = split_explicit((command.get("text") or "").split())
        incident = await ctx.find_for_command(command["channel_id"], explicit, EXAMPLE)
        if not await first_time(ctx, command):
            await ack(text=ALREADY_DONE, response_type="ephemeral")
            return
        user, key = command["user_id"], str(command.get("trigger_id") or uuid.uuid4().hex)
        new_severity = severity_of(words[0]) if words else None
        if new_severity:
            text = await raise_severity(ctx, incident, user, new_severity, " ".join(words[1:]) or None, key)
        else:
            people, rest = split_people(words)
            await ctx.authorize(incident, user, "escalate")
            reason = " ".join(rest).strip() or None
            if people:
                await escalation.page_people(ctx, incident.id, user, people, reason, key)
                text = f"Paging {len(people)} {'person or group' if len(people) == 1 else 'people or groups'} " \
                       f"for {incident.id}."
            else:
                result = await escalation.escalate_next(ctx, incident.id, user, reason)
                text = messages.escalate_answer(incident.id, result.level, result.targets)
        await ack(text=text, response_type="ephemeral")


async def raise_severity(ctx: Incidents, incident: Any, user: str, new: str, reason: str | None, key: str) -> str:
    # Asked first, so an outsider learns nothing of a private incident's severity from the answers below.
    await ctx.authorize(incident, user, "severity")
    await ctx.authorize(incident, user, "escalate")
    if new == incident.severity:
        raise UserError(f"{incident.id} is already {new}. `/escalate <reason>` pages the next level; "
                        f"`/escalate @user` pages someone by name.")
    if int(new[1]) > int(incident.severity[1]):
        raise UserError(f"{incident.id} is {incident.severity}; `/escalate {new}` only raises the severity. "
                        f"To lower it: `/incident sev {new}`.")
    change = await escalation.change_severity(ctx, incident.id, user, new, key=key, reason=reason)  # type: ignore
    return f"{incident.id} raised to *{new}* (was {change.old}).{messages.paged_note(change.incident, change.paged)}"
