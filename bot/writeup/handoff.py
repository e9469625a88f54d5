"""The follow-ups part of an on-call handoff DM: the open action items the recipient may see, as
`/incident followups` lists them, so whoever comes on call knows what is still owed."""

from __future__ import annotations

from bot.incidents.service import Incidents
from bot.runtime import Runtime
from bot.slack.mrkdwn import and_more, escape, one_line

SHOWN = 5  # the DM points at `/incident followups` for the rest


async def handoff_followups(rt: Runtime, user: str) -> list[str]:
    """Lines for the DM to `user` ([] when nothing is open); a private incident's items only to its people."""
    from bot.writeup.trackers.export import followups_page

    ctx = rt.feature(Incidents)
    if ctx is None:
        return []
    shown, total = await followups_page(rt, lambda incident: ctx.may_see(incident, user), SHOWN)
    if not shown:
        return []
    lines = [f"• *{f.incident}* {escape(one_line(f.text, 150))}" + (f" — <@{f.owner}>" if f.owner else "")
             + (f", due {escape(f.due)}" if f.due else "") for f in shown]
    more = [and_more(total - len(shown), "`/incident followups`")] if total > len(shown) else []
    return [f"*Open action items* ({total}):", *lines, *more]
