"""Who may request a fix, and who may approve one.

Requesting needs the `remediate` permission of the paging policy (in an incident: as `Incidents.authorize`
checks every incident action; outside one: membership of the channel the diagnosis ran in, or the listed
users and groups). Approving needs the same, or a place in `remediation.approvers` when the policy names
approvers, and — where `needs_second_person` says so — somebody other than the requester.
"""

from __future__ import annotations

from bot.errors import UserError
from bot.incidents.model import Incident
from bot.incidents.service import Incidents, mention_all
from bot.remediation.records import FixRequest, Origin


async def may_request(ctx: Incidents, origin: Origin, incident: Incident | None, user: str) -> None:
    """Raise UserError (saying who can) unless `user` may request fixes here."""
    if incident is not None:
        await ctx.authorize(incident, user, "remediate")
        return
    if not await _allowed_outside(ctx, origin, user):
        raise UserError(f"Only {_who_may(ctx, origin)} can request fixes here. Nothing was changed.")


async def may_approve(ctx: Incidents, request: FixRequest, incident: Incident | None, user: str) -> None:
    policy = ctx.policy.remediation
    action = request.plan["action"]
    if user == request.requester and policy.needs_second_person(action, request.severity):
        raise UserError(f"This fix needs a second person's approval: you requested it. "
                        f"Ask {approvers_text(ctx, request.origin, incident)}. Nothing was changed.")
    if policy.approvers:
        if not (user in policy.approvers or await ctx.is_admin(user, strict=True)
                or await _in_groups(ctx, user, policy.approvers)):
            raise UserError(f"Only {approvers_text(ctx, request.origin, incident)} can approve this fix. "
                            f"Nothing was changed.")
        return
    await may_request(ctx, request.origin, incident, user)


def approvers_text(ctx: Incidents, origin: Origin, incident: Incident | None) -> str:
    """Who can approve, for refusals and the approval message."""
    if ctx.policy.remediation.approvers:
        return mention_all(ctx.policy.remediation.approvers)
    if incident is not None:
        return f"someone else who may act in {incident.id} (its channel's members, commander and role holders)" \
            if ctx.permission("remediate").channel_members else f"{mention_all(ctx.permission('remediate').ids)}"
    return _who_may(ctx, origin)


def _who_may(ctx: Incidents, origin: Origin) -> str:
    permission = ctx.permission("remediate")
    if permission.channel_members or permission.responders:
        return f"members of <#{origin.channel}>"
    return mention_all(permission.ids)


async def _allowed_outside(ctx: Incidents, origin: Origin, user: str) -> bool:
    permission = ctx.permission("remediate")
    if await ctx.is_admin(user, strict=True):
        return True
    if permission.channel_members or permission.responders:
        return await ctx.is_member(origin.channel, user)
    return user in permission.ids or await _in_groups(ctx, user, permission.ids)


async def _in_groups(ctx: Incidents, user: str, ids: frozenset[str]) -> bool:
    for group in sorted(i for i in ids if i.startswith("S")):
        if user in await ctx.group_members(group, strict=True):
            return True
    return False
