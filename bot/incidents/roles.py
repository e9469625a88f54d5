"""Incident roles beyond the commander, assigned with `/incident role <role> @user`.

Built in: scribe, comms (communications lead) and tech_lead (model.ROLE_LABELS); INCIDENT_ROLES adds more by
name. `commander` is accepted as a role word too, and handed over by lifecycle.set_commander, since pages, the
topic and the header lead with it. An assignment is a change like the others: under the incident lock, recorded
in the timeline (kind `role`), said in the channel, shown in the header; the new holder is invited.
"""

from __future__ import annotations

from bot.errors import UserError
from bot.incidents import lifecycle, messages
from bot.incidents.config import IncidentSettings
from bot.incidents.model import ROLE_LABELS, Incident, role_label
from bot.incidents.service import Incidents
from bot.incidents.timeline import EntryKind
from bot.slack.mrkdwn import escape, one_line

COMMANDER = "commander"
ALIASES = {"communications": "comms", "communications_lead": "comms", "comms_lead": "comms", "tech": "tech_lead",
           "techlead": "tech_lead", "tl": "tech_lead", "ic": COMMANDER, "incident_commander": COMMANDER}
ROLE_USAGE = "`/incident role scribe @user`"


def role_names(settings: IncidentSettings) -> list[str]:
    """Every role that can be assigned, commander first."""
    return [COMMANDER, *ROLE_LABELS, *(r for r in settings.incident_roles if r not in ROLE_LABELS)]


def parse_role(word: str, settings: IncidentSettings) -> str:
    """`Tech-Lead` → "tech_lead"; UserError listing the roles for anything else."""
    name = word.strip().lower().replace("-", "_")
    name = ALIASES.get(name, name)
    if name in role_names(settings):
        return name
    raise UserError(f"Unknown role `{escape(one_line(word, 30)).replace('`', '')}`. {roles_help(settings)}")


def roles_help(settings: IncidentSettings) -> str:
    return f"Roles: {', '.join(role_names(settings))}. For example {ROLE_USAGE}."


async def give(ctx: Incidents, incident: Incident, actor: str, role: str, person: str, *, key: str) -> str:
    """Authorise, then assign `role` (the commander too): `/incident role` and the header's "Assign role" dialog
    both come here, so a click is checked exactly as the command is."""
    if role == COMMANDER:
        await ctx.authorize(incident, actor, "commander")
        await lifecycle.set_commander(ctx, incident.id, actor, person, key=key)
    else:
        await ctx.authorize(incident, actor, "roles")
        await assign_role(ctx, incident.id, actor, role, person, key=key)
    return f"<@{person}> is now the {role_label(role).lower()} of {incident.id}."


async def assign_role(ctx: Incidents, incident_id_: str, actor: str, role: str, person: str, *,
                      key: str) -> Incident:
    async with ctx.store.mutate(incident_id_) as incident:
        if not incident.is_open:
            raise UserError(f"{incident.id} is resolved; its roles are part of the record now.")
        old = incident.roles.get(role)
        if old == person:
            raise UserError(f"<@{person}> is already the {role_label(role).lower()} of {incident.id}.")
        incident.roles[role] = person
    await ctx.timeline.record(incident.id, EntryKind.ROLE, entry_id=f"role:{key}", actor=actor,
                              data={"role": role, "from": old, "to": person})
    await ctx.say(incident.id, f"role:{key}", *messages.line(
        f":busts_in_silhouette: {messages.who(person)} is now the {role_label(role).lower()} of {incident.id} "
        f"(assigned by {messages.who(actor)})."))
    await ctx.invite(incident, person, key)
    await ctx.refresh_header(incident.id)
    return incident


async def ask_to_join(ctx: Incidents, incident: Incident, user: str) -> str:
    """Someone outside the incident asks to take part: said in the incident once per person."""
    if await ctx.is_member(incident.channel, user):
        return f"You are in <#{incident.channel}> already; run {incident.id} from there."
    if incident.private and not await ctx.may_see(incident, user):
        raise UserError(ctx.private_refusal(incident))  # not said inside either: asking is not a way in
    commander = messages.who(incident.commander)
    await ctx.say(incident.id, f"join:{user}", *messages.line(
        f":wave: {messages.who(user)} asks to join {incident.id}. {commander}: `/invite` them to add them, or "
        f"assign them a role with `/incident role <role> @them`."))
    return f"Asked in {incident.id} for you to be added; its commander is {commander}."
