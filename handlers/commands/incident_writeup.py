"""`/incident postmortem [INC-n]` and `/incident summary [INC-n] [--post]`: the write-up subcommands.

handlers/commands/incident.py offers them when the write-up feature is installed, with the same
signature as its own: `(ctx, command, args) -> ephemeral text`. Both are the policy's `read` permission. The slow parts (assembling and publishing a
postmortem, posting a summary) go to the queue; the ephemeral summary is built at once from the timeline.
"""

from __future__ import annotations

from typing import Any

from bot.errors import UserError
from bot.runtime import Runtime

POSTMORTEM_USAGE = "`/incident postmortem` in the incident channel, or `/incident postmortem INC-12`"
SUMMARY_USAGE = "`/incident summary [INC-12] [--post]`"


async def postmortem_subcommand(rt: Runtime, incident_id: str, user: str, channel: str | None) -> str:
    """Queue the draft of `incident_id`; the answer says where it will appear."""
    from bot.writeup.requests import request_postmortem
    from bot.writeup.view import load_incident

    incident = await load_incident(rt, incident_id)
    if incident is None:
        raise UserError(f"There is no incident {incident_id}.")
    await request_postmortem(rt, incident.id, reason=f"requested by {user}")
    where = f"<#{incident.channel}>" if incident.channel and incident.mode == "channel" else "the incident thread"
    state = "draft so far" if incident.is_open else "draft"
    return (f"Writing the postmortem {state} of *{incident.id}* from its timeline; the link appears in {where} "
            f"in a moment.")


async def summary_subcommand(rt: Runtime, incident_id: str, user: str, channel: str | None, *,
                             post: bool = False) -> str:
    """The catch-up summary: returned (for an ephemeral answer), or queued to be posted in the incident."""
    from bot.writeup.summaries import catch_up_text
    from bot.writeup.view import load_incident

    incident = await load_incident(rt, incident_id)
    if incident is None:
        raise UserError(f"There is no incident {incident_id}.")
    if post:
        await rt.queue.enqueue("summary.post", {"incident": incident.id, "user": user},
                               job_id=f"sumpost:{incident.id}")
        return f"Posting a catch-up summary of *{incident.id}* in the incident channel."
    text, _ = await catch_up_text(rt, incident.id)
    return text


async def postmortem_command(ctx: Any, command: dict, args: list[str]) -> str:
    """`/incident postmortem [INC-12]` draft the postmortem from the timeline"""
    explicit, rest = _explicit(args)
    if rest:
        raise UserError(f"`/incident postmortem` takes no other words. Use {POSTMORTEM_USAGE}.")
    incident = await ctx.find_for_command(command["channel_id"], explicit, "/incident postmortem INC-12")
    await ctx.authorize(incident, command["user_id"], "read")
    return await postmortem_subcommand(ctx.rt, incident.id, command["user_id"], command.get("channel_id"))


async def summary_command(ctx: Any, command: dict, args: list[str]) -> str:
    """`/incident summary [INC-12] [--post]` a catch-up summary, to you (or posted in the incident)"""
    explicit, rest = _explicit(args)
    post = any(word.lower() in ("--post", "post") for word in rest)
    unknown = [word for word in rest if word.lower() not in ("--post", "post")]
    if unknown:
        raise UserError(f"Unknown option for `/incident summary`. Use {SUMMARY_USAGE}.")
    incident = await ctx.find_for_command(command["channel_id"], explicit, "/incident summary INC-12")
    await ctx.authorize(incident, command["user_id"], "read")
    return await summary_subcommand(ctx.rt, incident.id, command["user_id"], command.get("channel_id"), post=post)


def _explicit(args: list[str]) -> tuple[str | None, list[str]]:
    from bot.incidents.model import parse_incident_id

    if args and parse_incident_id(args[0]):
        return args[0], args[1:]
    return None, args


SUBCOMMANDS = {"postmortem": postmortem_command, "summary": summary_command}
