"""`/oncall` — who is on call, and covering for someone:

    /oncall                               who is on call now for each schedule, until when, and who is next
    /oncall <schedule>                    the next two weeks of that schedule, overrides marked with who made them
    /oncall override [schedule] @user 4h  @user is on call from now (or `until 18:00`, or an ISO time)
    /oncall swap [schedule] @user <date>  @user takes your shift on that date; you take their next one

The schedule may be left out when there is only one. Everything is computed here, within Slack's 3-second ack:
it is a few hundred datetime operations and one Redis read per schedule. Who may change a schedule: its members
and incident admins (INCIDENT_ADMINS), checked here, server-side.
"""

from __future__ import annotations

import difflib
from typing import Any

from bot.errors import UserError
from bot.incidents.service import MENTION, Incidents
from bot.oncall import changes, service
from bot.oncall.service import Oncall, oncall_of
from bot.runtime import Runtime
from bot.slack.mrkdwn import escape, one_line
from handlers.errors import answers_errors

HELP = ("`/oncall` shows who is on call now; `/oncall <schedule>` the next two weeks; "
        f"{changes.OVERRIDE_USAGE} covers for someone; {changes.SWAP_USAGE} swaps a shift "
        "(name the schedule first when there are several: `/oncall override payments-primary @user 4h`).")
NO_FILE = ("No on-call schedules are configured. Set ONCALL_FILE to a YAML file like\n```schedules:\n"
           "  payments-primary:\n    time_zone: Europe/Berlin\n"
           "    rotation: {every: 1w, handoff: \"mon 09:00\", people: [U0ALICE, U0BOB]}```")


def register(app: Any, rt: Runtime) -> None:
    @app.command("/oncall")
    @answers_errors
    async def oncall(ack: Any, command: dict, **_: Any) -> None:
        await ack(text=await answer(rt, command), response_type="ephemeral")


async def answer(rt: Runtime, command: dict) -> str:
    words = (command.get("text") or "").split()
    ctx = oncall_of(rt)
    if words[:1] == ["help"]:
        return HELP
    if ctx is None or not ctx.schedules:
        return NO_FILE
    if not words:
        await service.arm_handoffs(ctx)
        return await service.now_text(ctx)
    if words[0] in ("override", "swap"):
        return await _change(rt, ctx, command["user_id"], words[0], words[1:])
    if len(words) == 1:
        return await service.schedule_text(ctx, _schedule(ctx, words[0]))
    raise UserError(f"I don't know `/oncall {escape(one_line(' '.join(words), 60))}`. {HELP}")


def _schedule(ctx: Oncall, name: str) -> str:
    if name in ctx.schedules:
        return name
    guess = difflib.get_close_matches(name, list(ctx.schedules), n=1)
    hint = f" Did you mean `{guess[0]}`?" if guess else ""
    raise UserError(f"There is no schedule `{escape(one_line(name, 40))}`.{hint} Schedules: "
                    f"{', '.join(f'`{n}`' for n in sorted(ctx.schedules))}.")


async def _change(rt: Runtime, ctx: Oncall, actor: str, verb: str, words: list[str]) -> str:
    usage = changes.OVERRIDE_USAGE if verb == "override" else changes.SWAP_USAGE
    if words and not MENTION.match(words[0]):
        name, words = _schedule(ctx, words[0]), words[1:]
    elif len(ctx.schedules) == 1:
        name = next(iter(ctx.schedules))
    else:
        raise UserError(f"Which schedule? Type {usage.replace('/oncall ' + verb, f'/oncall {verb} <schedule>')}.")
    match = MENTION.match(words[0]) if words else None
    if match is None:
        raise UserError(f"Mention who covers (type @ and pick them). Type {usage}.")
    await _authorize(rt, ctx, name, actor)
    user, rest = match.group(1), words[1:]
    if verb == "override":
        made = [await changes.override(ctx, name, actor, user, rest)]
    else:
        if len(rest) != 1:
            raise UserError(f"Which day? Type {usage}.")
        made = await changes.swap(ctx, name, actor, user, changes.parse_day(rest[0]))
    return changes.made_text(name, made)


async def _authorize(rt: Runtime, ctx: Oncall, name: str, actor: str) -> None:
    incidents = rt.feature(Incidents)  # INCIDENT_ADMINS and user-group lookups live with incidents
    is_admin = await incidents.is_admin(actor) if incidents else False
    members = incidents.group_members if incidents else _no_groups
    await changes.may_change(ctx, name, actor, is_admin=is_admin, group_members=members)


async def _no_groups(group: str) -> list[str]:
    return []
