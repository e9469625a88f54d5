"""The on-call feature's context: the schedules, the overrides, who to page, and the handoff timers.

Handoffs are delayed jobs `oncall.handoff {schedule, at}` with the id `oncall.handoff:<schedule>:<at>`, so
arming the same handoff twice queues it once, and a restart loses nothing (delayed jobs live in Redis). The job
re-checks that `at` is still a handoff (an override may have moved it), DMs the outgoing and incoming people
once (`once()` on schedule, instant and both people) and arms the next one.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec

from bot.oncall.config import OncallSettings
from bot.oncall.overrides import OverrideStore
from bot.oncall.schedule import Schedule, ServiceSchedules
from bot.oncall.timeline import UTC, Override, Shift, on_call, shifts
from bot.queue import Job, once
from bot.runtime import Runtime
from bot.slack.client import SlackError
from bot.slack.mrkdwn import MESSAGE_TEXT_MAX, fit_lines, mention, slack_date

log = logging.getLogger("bot.oncall")

HANDOFF_JOB = "oncall.handoff"
# Lines for the handoff DM to this user (open incidents, follow-ups), supplied by features above this one.
HandoffNotes = Callable[[str], Awaitable[list[str]]]


class Oncall(msgspec.Struct):
    rt: Runtime
    settings: OncallSettings
    schedules: dict[str, Schedule]
    overrides: OverrideStore
    routing: ServiceSchedules = msgspec.field(default_factory=ServiceSchedules)  # `services:` → the schedule of each
    handoff_notes: list[HandoffNotes] = msgspec.field(default_factory=list)

    def schedule(self, name: str) -> Schedule | None:
        return self.schedules.get(name)

    async def shift_at(self, name: str, at: float | None = None) -> Shift:
        schedule = self.schedules[name]
        instant = dt.datetime.fromtimestamp(time.time() if at is None else at, UTC)
        return on_call(schedule, instant, await self.overrides.list(name))

    async def shifts(self, name: str, start: float, end: float) -> list[Shift]:
        window = (dt.datetime.fromtimestamp(start, UTC), dt.datetime.fromtimestamp(end, UTC))
        return shifts(self.schedules[name], *window, await self.overrides.list(name))

    async def page_routes(self, name: str, at: float | None = None) -> tuple[dict[str, list[str]], Shift | None]:
        """Whom a page to schedule `name` goes to right now: {provider: ids} and the shift it came from.
        A schedule with `page_via` pages through that provider's own target; an unknown one pages nobody."""
        schedule = self.schedules.get(name)
        if schedule is None:
            return {}, None
        if schedule.page_via:
            return {schedule.page_via: []}, None
        shift = await self.shift_at(name, at)
        return ({"slack": [shift.user]} if shift.user else {}), shift


def oncall_of(rt: Runtime) -> Oncall | None:
    return rt.feature(Oncall)


# ------------------------------------------------------------------------------------------------ handoffs

def handoff_job_id(name: str, at: float) -> str:
    return f"{HANDOFF_JOB}:{name}:{int(at)}"


async def arm_handoffs(ctx: Oncall, names: list[str] | None = None) -> None:
    """Queue each schedule's next handoff (idempotent: the job id is the schedule and the instant)."""
    for name in names or list(ctx.schedules):
        if ctx.schedules[name].page_via:
            continue  # paged elsewhere; its people still rotate here, but nobody is DM'd by us
        shift = await ctx.shift_at(name)
        await announce_handoff(ctx, name, shift.end.timestamp())


async def announce_handoff(ctx: Oncall, name: str, at: float) -> None:
    """Queue the handoff at `at` (now or past: it runs at once); the job checks it still is one."""
    await ctx.rt.queue.enqueue(HANDOFF_JOB, {"schedule": name, "at": at}, job_id=handoff_job_id(name, at),
                               run_at=at)


async def handoff_job(ctx: Oncall, job: Job) -> None:
    name, at = job.payload["schedule"], float(job.payload["at"])
    if name not in ctx.schedules:
        return  # the schedule was removed from ONCALL_FILE
    outgoing, incoming = await ctx.shift_at(name, at - 0.001), await ctx.shift_at(name, at)
    if outgoing.user != incoming.user:
        key = ctx.rt.key("oncall", "handed", name, int(at), outgoing.user, incoming.user)
        if await once(ctx.rt.redis, key, ttl_s=30 * 86400):
            await _send_handoff(ctx, name, outgoing, incoming)
    await arm_handoffs(ctx, [name])


async def _send_handoff(ctx: Oncall, name: str, outgoing: Shift, incoming: Shift) -> None:
    until = slack_date(incoming.end.timestamp())
    texts = {
        outgoing.user: f":wave: Your on-call shift for *{name}* has ended; {mention(incoming.user)} has it now.",
        incoming.user: f":pager: You are on call for *{name}* until {until} (from {mention(outgoing.user)}).",
    }
    for user, text in texts.items():
        if user and user.startswith(("U", "W")):
            await _dm(ctx, user, f"{text}\n{await _notes_for(ctx, user)}")


async def _notes_for(ctx: Oncall, user: str) -> str:
    """Each recipient's own notes: a private incident is listed only to someone who may see it."""
    notes: list[str] = []
    for supplier in ctx.handoff_notes:
        notes += await supplier(user)
    return "\n".join(notes) if notes else "No open incidents."


async def _dm(ctx: Oncall, user: str, text: str) -> None:
    try:
        await ctx.rt.slack.post_message(await ctx.rt.slack.open_dm(user), text)
    except SlackError as exc:
        log.warning("handoff DM to %s failed: %s", user, exc.error)


# ------------------------------------------------------------------------------------------------ answers

def shift_line(shift: Shift) -> str:
    text = f"{mention(shift.user)} {slack_date(shift.start.timestamp())} → {slack_date(shift.end.timestamp())}"
    return text + override_note(shift.override)


def override_note(override: Override | None) -> str:
    if override is None:
        return ""
    what = "swap" if override.kind == "swap" else "override"
    return f" _({what} by {mention(override.made_by)})_"


async def now_text(ctx: Oncall) -> str:
    """`/oncall`: per schedule, who is on call now and until when, and who is next."""
    lines = []
    for name in sorted(ctx.schedules):
        shift = await ctx.shift_at(name)
        nxt = await ctx.shift_at(name, shift.end.timestamp())
        via = f" (paged through {ctx.schedules[name].page_via})" if ctx.schedules[name].page_via else ""
        lines.append(f"*{name}*{via}: {mention(shift.user)}{override_note(shift.override)} until "
                     f"{slack_date(shift.end.timestamp())}, then {mention(nxt.user)}")
    return "\n".join(lines)


async def schedule_text(ctx: Oncall, name: str, days: int = 14) -> str:
    """`/oncall <schedule>`: the next two weeks, then the overrides in force with who made them."""
    now = time.time()
    rows = [f"• {shift_line(s)}" for s in await ctx.shifts(name, now, now + days * 86400)]
    head = f"*{name}* ({ctx.schedules[name].time_zone}), the next {days} days:\n"
    # Hourly shifts over two weeks, with layers, run past the 40,000 characters Slack takes in a message.
    return head + fit_lines(rows, MESSAGE_TEXT_MAX - len(head))
