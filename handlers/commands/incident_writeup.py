"""`/incident postmortem [INC-n]`, `/incident summary [INC-n] [--post]`, `/incident action <text> [@owner] [due]`,
`/incident tickets [INC-n]` and `/incident followups [@user]`: the write-up subcommands.

handlers/commands/incident.py offers them when the write-up feature is installed, with the same
signature as its own: `(ctx, command, args) -> ephemeral text`. Postmortem and summary need the policy's `read`
permission, action and tickets its `note`; followups show only incidents the person may see, and a report is
posted in the channel with its chart (bot/writeup/report_post.py), so it leaves private incidents out. The slow
parts (assembling and publishing a postmortem, posting a summary or a report, making tickets) go to the queue; the
ephemeral summary is built at once from the timeline.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from bot.errors import UserError
from bot.runtime import Runtime
from bot.slack.mrkdwn import FALLBACK_TEXT_MAX, escape, fit_lines, one_line

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
    from bot.writeup.trackers.export import tickets_line

    text, _ = await catch_up_text(rt, incident.id)
    tickets = await tickets_line(rt, incident.id)
    return f"{text}\n{tickets}" if tickets else text


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


ACTION_USAGE = "`/incident action <what to do> [@owner] [YYYY-MM-DD | 3d | 2w]`"
RELATIVE_DUE = re.compile(r"^(\d{1,3})([dw])$", re.IGNORECASE)
FOLLOWUPS_SHOWN = 25


def parse_due(token: str, now: float | None = None) -> str | None:
    """`2026-12-24` → itself; `3d` / `2w` → the date that many days or weeks from today (UTC); else None."""
    if len(token) == 10:
        try:
            return date.fromisoformat(token).isoformat()
        except ValueError:
            return None
    match = RELATIVE_DUE.match(token)
    if not match:
        return None
    days = int(match.group(1)) * (7 if match.group(2).lower() == "w" else 1)
    today = datetime.fromtimestamp(time.time() if now is None else now, UTC).date()
    return (today + timedelta(days=days)).isoformat()


def parse_person(token: str) -> str:
    from bot.incidents.service import parse_person as person  # the one rule: Slack sends a mention as an id

    return person(token)


def parse_action(args: list[str]) -> tuple[str, str | None, str | None]:
    """`<text> [@owner] [due]` (owner and due in either order, at the end) → (text, owner id, due date)."""
    words, owner, due = list(args), None, None
    for _ in range(2):
        if len(words) > 1 and due is None and parse_due(words[-1]):
            due = parse_due(words.pop())
        elif len(words) > 1 and owner is None and words[-1].startswith("<@"):
            owner = parse_person(words.pop())
    text = " ".join(words).strip()
    if not text:
        raise UserError(f"What should be done? {ACTION_USAGE}, for example "
                        f"`/incident action alert on pool saturation @bob 2w`.")
    return text, owner, due


async def action_command(ctx: Any, command: dict, args: list[str]) -> str:
    """`/incident action <text> [@owner] [due]` record an action item (it becomes a ticket on resolve)"""
    from bot.incidents.timeline import EntryKind
    from bot.writeup.context import writeup_of

    explicit, rest = _explicit(args)
    text, owner, due = parse_action(rest)
    incident = await ctx.find_for_command(command["channel_id"], explicit, "/incident action INC-12 <text>")
    await ctx.authorize(incident, command["user_id"], "note")
    user = command["user_id"]
    key = command.get("trigger_id") or f"{user}:{time.time_ns()}"
    await writeup_of(ctx.rt).timeline.record(
        incident.id, EntryKind.ACTION_ITEM, entry_id=f"action_item:{key}", actor=user, text=text,
        data={"owner": owner or user, "due": due, "source": "command", "done": False})
    who = f"<@{owner or user}>"
    return (f"Action item recorded in {incident.id} for {who}" + (f", due {due}" if due else "") +
            ". It becomes a ticket when the incident is resolved (or now: `/incident tickets`).")


async def tickets_command(ctx: Any, command: dict, args: list[str]) -> str:
    """`/incident tickets [INC-12]` make tickets of the action items now (and refresh their state)"""
    from bot.writeup.trackers.export import request_tickets, tracker_settings

    explicit, rest = _explicit(args)
    if rest:
        raise UserError("`/incident tickets` takes only an incident: `/incident tickets INC-12`.")
    incident = await ctx.find_for_command(command["channel_id"], explicit, "/incident tickets INC-12")
    await ctx.authorize(incident, command["user_id"], "note")
    chosen = tracker_settings(ctx.rt).chosen
    if chosen is None:
        return ("No tracker is configured: set GITHUB_TOKEN and GITHUB_REPOSITORY, or JIRA_URL, JIRA_USER, "
                "JIRA_API_TOKEN and JIRA_PROJECT.")
    await request_tickets(ctx.rt, incident.id, reason=f"requested by {command['user_id']}")
    return (f"Making tickets in {'GitHub' if chosen == 'github' else 'Jira'} for the action items of *{incident.id}*; "
            f"`/incident summary` shows them in a moment.")


async def followups_command(ctx: Any, command: dict, args: list[str]) -> str:
    """`/incident followups [@user]` open action items across incidents, oldest first"""
    from bot.durations import format_duration
    from bot.writeup.trackers.export import followups_page

    if len(args) > 1:
        raise UserError("`/incident followups` or `/incident followups @user`.")
    owner = parse_person(args[0]) if args else None
    user, now = command["user_id"], time.time()
    shown, total = await followups_page(ctx.rt, lambda incident: ctx.may_see(incident, user), FOLLOWUPS_SHOWN,
                                        owner=owner)
    if not shown:
        return "No open action items" + (f" for <@{owner}>." if owner else ".")
    lines = [f"• *{f.incident}* ({format_duration(f.age_s(now))} old) {escape(one_line(f.text, 150))} — "
             f"<@{f.owner}>" + (f", due {f.due}" if f.due else "") +
             (f" — <{f.ticket['url']}|{f.ticket['key']}> ({escape(f.ticket['state'])})" if f.ticket else "")
             for f in shown]
    head = f"*Open action items{f' of <@{owner}>' if owner else ''}* ({total}):"
    return fit_lines([head, *lines], FALLBACK_TEXT_MAX, unlisted=total - len(shown))


REPORT_USAGE = "`/incident report [30d|90d] [service]`"


async def report_command(ctx: Any, command: dict, args: list[str]) -> str:
    """`/incident report [30d|90d] [service]` incidents, MTTA/MTTR against targets, pages, recurring findings"""
    from bot.writeup.report import parse_since, period
    from bot.writeup.report_post import request_report

    since, service = 30 * 86400.0, None
    for word in args:
        try:
            since = parse_since(word)
        except ValueError:
            if service is not None or word.lower() not in ctx.rt.services().services:
                raise UserError(f"Unknown period or service `{escape(one_line(word, 40))}`. Use {REPORT_USAGE}.")
            service = word.lower()
    # Drawing and sharing the chart take longer than an ack may: a queue job posts the report with its chart.
    await request_report(ctx.rt, channel=command["channel_id"], user=command["user_id"], since_s=since,
                         service=service, request_id=str(command.get("trigger_id") or time.time_ns()))
    scope = f" of `{escape(service)}`" if service else ""
    return f"Posting the incident report{scope} for the last {period(since)} here, with a chart, in a moment."


SUBCOMMANDS = {"postmortem": postmortem_command, "summary": summary_command, "action": action_command,
               "tickets": tickets_command, "followups": followups_command, "report": report_command}
