"""Making overrides and swaps: reading "4h", "until 18:00" and ISO times, and who may change a schedule.

Who may: incident admins (INCIDENT_ADMINS, decided by the caller, which knows them) and the schedule's own
members, by id or through a user group in the rotation. Every refusal and every bad input is a UserError whose
sentence says what to type.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Awaitable, Callable

from bot.errors import UserError
from bot.oncall.schedule import parse_clock
from bot.oncall.service import Oncall, announce_handoff, arm_handoffs
from bot.oncall.timeline import Override
from bot.slack.mrkdwn import escape, mention, one_line, slack_date

MAX_OVERRIDE = dt.timedelta(days=31)
MAX_SWAP_AHEAD = dt.timedelta(days=366)
OVERRIDE_USAGE = "`/oncall override @user 4h` (or `until 18:00`, or `until 2026-03-02T09:00`)"
SWAP_USAGE = "`/oncall swap @user 2026-03-02`"
_LENGTH = re.compile(r"^(\d+)(m|h|d|w)$")
_LENGTH_UNIT = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _said(words: list[str]) -> str:
    return escape(one_line(" ".join(words), 60))


def parse_until(words: list[str], now: float, zone: dt.tzinfo) -> float:
    """`4h`, `90m`, `2d`; `until 18:00` (the next 18:00 in the schedule's zone); `until 2026-03-02T09:00`
    or an ISO time with an offset. The end, in epoch seconds."""
    if len(words) == 1 and (match := _LENGTH.match(words[0].lower())):
        return now + int(match.group(1)) * _LENGTH_UNIT[match.group(2)]
    text = " ".join(words[1:] if words[:1] == ["until"] else words)
    try:
        clock = parse_clock(text)
    except ValueError:
        return _iso(text, zone)
    local_now = dt.datetime.fromtimestamp(now, zone)
    end = dt.datetime.combine(local_now.date(), clock, tzinfo=zone)
    if end <= local_now:
        end = dt.datetime.combine(local_now.date() + dt.timedelta(days=1), clock, tzinfo=zone)
    return end.timestamp()


def _iso(text: str, zone: dt.tzinfo) -> float:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"I can't read `{escape(one_line(text, 40))}` as a length or a time. Type "
                        f"{OVERRIDE_USAGE}.") from None
    return (when if when.tzinfo else when.replace(tzinfo=zone)).timestamp()


def parse_day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise UserError(f"I can't read `{escape(one_line(text, 40))}` as a date. Type {SWAP_USAGE}.") from None


async def may_change(ctx: Oncall, name: str, user: str, *, is_admin: bool,
                     group_members: Callable[[str], Awaitable[list[str]]]) -> None:
    """Refuse (UserError) unless `user` is an admin or in the schedule's rotation."""
    members = ctx.schedules[name].members()
    if is_admin or user in members:
        return
    for group in sorted(m for m in members if m.startswith("S")):
        if user in await group_members(group):
            return
    raise UserError(f"Only people in the *{name}* rotation, or an incident admin, can change who is on call for "
                    f"it. Nothing was changed.")


async def override(ctx: Oncall, name: str, actor: str, user: str, words: list[str],
                   now: float | None = None) -> Override:
    """`user` is on call for `name` from now until what `words` say."""
    now = time.time() if now is None else now
    if not words:
        raise UserError(f"For how long? Type {OVERRIDE_USAGE}.")
    end = parse_until(words, now, ctx.schedules[name].tz)
    if end <= now:
        raise UserError(f"`{_said(words)}` is already past. Type {OVERRIDE_USAGE}.")
    if end - now > MAX_OVERRIDE.total_seconds():
        raise UserError(f"An override lasts at most {MAX_OVERRIDE.days} days; change the rotation in the "
                        f"on-call file for longer.")
    made = await ctx.overrides.add(name, user, now, end, actor)
    await announce_handoff(ctx, name, made.start)  # starting now is a handoff too: both people hear of it
    await arm_handoffs(ctx, [name])
    return made


def _swappable(schedule_tz: dt.tzinfo, actor: str, user: str, day: dt.date, now: float) -> None:
    """Refuse a swap with oneself, of a day already over, or of a day too far ahead to compute (year 9999)."""
    if user == actor:
        raise UserError(f"Name someone else to take your shift. Type {SWAP_USAGE}.")
    today = dt.datetime.fromtimestamp(now, schedule_tz).date()
    if day < today:
        raise UserError(f"{day.isoformat()} is over. Type {SWAP_USAGE} with today or a later day.")
    if day > today + MAX_SWAP_AHEAD:
        raise UserError(f"A swap can be at most {MAX_SWAP_AHEAD.days} days ahead. Type {SWAP_USAGE}.")


async def swap(ctx: Oncall, name: str, actor: str, user: str, day: dt.date,
               now: float | None = None) -> list[Override]:
    """`user` takes the actor's shift on `day` (in the schedule's zone), and the actor takes `user`'s next
    shift after it: two overrides, both shown as a swap made by the actor."""
    schedule = ctx.schedules[name]
    _swappable(schedule.tz, actor, user, day, time.time() if now is None else now)
    day_start = dt.datetime.combine(day, dt.time(0), tzinfo=schedule.tz).timestamp()
    mine = [s for s in await ctx.shifts(name, day_start, day_start + 86400) if s.user == actor]
    if not mine:
        raise UserError(f"You are not on call for *{name}* on {day.isoformat()}, so there is no shift to swap. "
                        f"`/oncall {name}` shows the next two weeks.")
    given = await ctx.shift_at(name, mine[0].start.timestamp())  # whole, not cut at midnight
    later = [s for s in await ctx.shifts(name, given.end.timestamp(), given.end.timestamp() + 90 * 86400)
             if s.user == user]
    if not later:
        raise UserError(f"{mention(user)} has no shift in *{name}* in the next 90 days to swap with yours. "
                        f"Use {OVERRIDE_USAGE} instead.")
    taken = await ctx.shift_at(name, later[0].start.timestamp())
    made = [await ctx.overrides.add(name, user, given.start.timestamp(), given.end.timestamp(), actor, kind="swap",
                                    replaces=actor),
            await ctx.overrides.add(name, actor, taken.start.timestamp(), taken.end.timestamp(), actor, kind="swap",
                                    replaces=user)]
    await arm_handoffs(ctx, [name])
    return made


def made_text(name: str, made: list[Override]) -> str:
    parts = [f"{mention(o.user)} is on call for *{name}* {slack_date(o.start)} → {slack_date(o.end)}" for o in made]
    return ";\n".join(parts) + f" (made by {mention(made[0].made_by)})."
