"""An incident from declaration to resolution.

Declaring is split in two so the slash command answers within Slack's 3 seconds and no incident is ever half
written: `declare()` allocates the id (`INCR`), stores the record and queues `incident.declare`; that job then
takes the steps below, each recorded when done (`inc:<id>:steps`, the posted-message keys, fields of the
record), so a worker that dies half-way is resumed by the retried job — or by the auditor — without a second
channel, header or announcement:

    paging    decided by `declare()` with the record and queued right after it (escalation.order_first_page),
              ahead of this job: the page never waits for the set-up, and carries the channel's link only if
              the channel exists by the time it is sent (later levels do)
    channel   conversations.create inc-<yyyymmdd>-<n>-<slug> (name_taken → it is ours from an earlier try:
              found with conversations.list); thread mode when creation is off or refused. Its link
              (auth.test's workspace URL + /archives/<id>) is what pages and DMs point to.
    header    posted with a marker block_id (an earlier, unrecorded post is found in the history); in thread
              mode its permalink is the link
    invite    reporter + INCIDENT_RESPONDERS (groups expanded)
    pin, topic, announce (INCIDENTS_CHANNEL), diagnosis (when a service is named), reminder timer

Changes (`change_status`, `add_note`, `set_commander`, `resolve`) are read-modify-writes under the incident
lock; each records a timeline entry with who and when and queues the channel post and the header redraw.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

from bot.diagnosis import history
from bot.errors import UserError
from bot.incidents import diagnoses, escalation, limits, messages
from bot.incidents.model import (
    Incident,
    IncidentStatus,
    Severity,
    channel_name,
    incident_id,
)
from bot.incidents.service import Incidents
from bot.incidents.timeline import EntryKind
from bot.queue import Job, Permanent, Retry, slots
from bot.retry import RetryPolicy
from bot.slack.client import SlackError
from bot.slack.mrkdwn import escape

log = logging.getLogger("bot.incidents")

STALLED_DECLARATION_S = 30.0  # the auditor resumes a declaration not finished this long after it started
TIMER_GRACE_S = 5.0  # the auditor re-queues a timer this long past its due time
INVITE_WAIT_S = 1.0  # the first wait of an invite or post that finds no channel yet (channel_wait_s doubles it)
# When a post or invite parked behind its incident's channel set-up looks again (the one retry policy's backoff,
# bounded by CHANNEL_WAIT_LIMIT_S rather than its attempts). A storm's hundreds of parked notices, each reading its
# incident every 2 s, slowed the escalation timers beside them (p99 380 → 541 ms); the notice follows its channel
# by 15 s at most.
CHANNEL_POLL = RetryPolicy(base_s=2.0, max_s=15.0)
# ...and for how long after the declaration: 1,200 declarations' channels at conversations.create's 20 a minute.
# A declaration that gave up without a channel leaves its notices to the retries and the dead letters after that.
CHANNEL_WAIT_LIMIT_S = 3600.0


def channel_wait_s(job: Job) -> float:
    """1, 2, 4, 8 s…: five tries span ~15 s, past a crashed declaration's reclaim (a dead worker's jobs are
    released after 5 s) and its re-run, so a message or invite queued before the channel exists is not lost."""
    return INVITE_WAIT_S * 2 ** (job.attempt - 1)


async def with_its_channel(ctx: Incidents, incident_id: str) -> Incident | None:
    """The incident, once its declaration has made its channel (or finished without one). A post or invite queued
    before that (an escalation's notice, a failed page's, someone paged to invite) waits parked: in a storm the
    channel waits minutes for conversations.create's turn (20 a minute), far past the retries of channel_wait_s,
    which dead-lettered those messages. Parked, the wait uses no delivery and holds no worker slot. A declaration
    that gave up without a place (an alert's, with no INCIDENTS_CHANNEL) ends the wait."""
    incident, looks = await ctx.store.get(incident_id), 0
    while incident is not None and incident.channel is None and not (incident.ready or incident.place_note) \
            and time.time() < incident.declared_at + CHANNEL_WAIT_LIMIT_S:
        looks += 1
        async with slots.parked(pause := CHANNEL_POLL.delay(looks)):
            await asyncio.sleep(pause)
        incident = await ctx.store.get(incident_id)
    return incident


# ------------------------------------------------------------------------------------------------ declare

async def declare(ctx: Incidents, *, title: str, severity: Severity, reporter: str, origin_channel: str,
                  service: str | None = None, trigger_id: str | None = None, source: str = "slack",
                  alert_group_key: str | None = None, private: bool = False) -> tuple[Incident, bool]:
    """Record a new incident and queue its declaration. Returns (incident, created); a repeated `trigger_id`
    (a Slack retry of the same command) returns the incident it already created. Only a person declares a
    `private` incident: an alert's incident is seen by whoever the alert pages."""
    if private:
        _check_private(ctx, source)
    if trigger_id:
        existing = await ctx.store.by_trigger(trigger_id)
        if existing:
            return await _wait_for_record(ctx, existing), False
    if source == "slack":  # a person declaring; alerts are de-duplicated by their group instead
        await limits.check_declaration(ctx, reporter, trigger_id)
    number = await ctx.store.next_number()
    new_id = incident_id(number)
    if trigger_id:
        owner = await ctx.store.claim_trigger(trigger_id, new_id)
        if owner != new_id:  # a concurrent retry won the race; this number stays unused
            return await _wait_for_record(ctx, owner), False
    now = time.time()
    incident = Incident(id=new_id, number=number, title=title, severity=severity, service=service,
                        reporter=reporter, commander=reporter if source == "slack" else None,
                        source=source, declared_at=now, updated_at=now, origin_channel=origin_channel,  # type: ignore
                        alert_group_key=alert_group_key, private=private)
    first_page = await escalation.order_first_page(ctx, incident)  # nobody else sees the record yet: no lock
    await ctx.store.create(incident)
    await first_page.run(ctx, incident)  # before the set-up is even queued: the page waits for no Slack call
    await ctx.timeline.record(new_id, EntryKind.DECLARED, entry_id="declared", actor=reporter, at=now, text=title,
                              data={"severity": severity, "service": service, "source": source,
                                    "origin_channel": origin_channel, "alert_group_key": alert_group_key,
                                    "private": private})
    await ctx.rt.queue.enqueue("incident.declare", {"incident": new_id}, job_id=f"declare:{new_id}")
    await arm_audit(ctx)
    return incident, True


def _check_private(ctx: Incidents, source: str) -> None:
    if source != "slack":
        raise ValueError("only a person declares a private incident")
    if not ctx.settings.incident_create_channels:
        raise UserError("A private incident needs a private channel of its own, and this bot runs incidents in "
                        "threads (INCIDENT_CREATE_CHANNELS=false). Declare it without `private`, or ask an "
                        "admin to turn channels on.")


PROPOSAL_TTL_S = 3600  # how long a "Declare?" preview's button keeps working


async def propose(ctx: Incidents, *, title: str, severity: Severity, reporter: str, origin_channel: str,
                  service: str | None = None, private: bool = False) -> str:
    """Keep a declaration that looked accidental until its reporter confirms it; returns the token the
    preview's Declare button carries. Nothing is declared and nobody is paged until `declare_proposed`."""
    token = uuid.uuid4().hex
    fields = {"title": title, "severity": severity, "service": service, "reporter": reporter,
              "origin_channel": origin_channel, "private": private}
    await ctx.rt.redis.set(ctx.store.key("proposal", token), json.dumps(fields), ex=PROPOSAL_TTL_S)
    return token


async def declare_proposed(ctx: Incidents, token: str, user: str) -> tuple[Incident, bool]:
    """Declare exactly what the preview showed, once: a second or replayed click finds the incident the first
    one declared (the token is the declaration's trigger), and declares nothing more."""
    raw = await ctx.rt.redis.get(ctx.store.key("proposal", token))
    if raw is None:
        raise UserError("That preview has expired or was cancelled; nothing was declared. To declare, type "
                        "`/incident declare <title> [P0|P1|P2|P3] [service]`.")
    fields = json.loads(raw)
    if fields["reporter"] != user:
        raise UserError(f"Only {messages.who(fields['reporter'])} can confirm their own declaration.")
    return await declare(ctx, **fields, trigger_id=f"proposal:{token}")


async def cancel_proposal(ctx: Incidents, token: str) -> str | None:
    """Forget a preview; returns the incident it already declared, if its Declare button was pressed first."""
    await ctx.rt.redis.delete(ctx.store.key("proposal", token))
    return await ctx.store.by_trigger(f"proposal:{token}")


async def _wait_for_record(ctx: Incidents, incident: str, timeout_s: float = 3.0) -> Incident:
    deadline = time.monotonic() + timeout_s
    while True:
        found = await ctx.store.get(incident)
        if found is not None or time.monotonic() > deadline:
            if found is None:
                raise UserError(f"{incident} is being declared; `/incident list` will show it in a moment.")
            return found
        await asyncio.sleep(0.05)


async def declare_job(ctx: Incidents, job: Job) -> None:
    incident_id_ = job.payload["incident"]
    incident = await ctx.store.get(incident_id_)
    if incident is None or incident.ready:
        return
    if incident.is_open:  # a record from before `declare` decided the page: page first, then set up
        await escalation.start_paging(ctx, incident.id)
    incident = await _ensure_place(ctx, incident)
    incident = await _ensure_header(ctx, incident)
    await _step(ctx, incident, "invite", _invite)
    await _step(ctx, incident, "pin", _pin)
    await _step(ctx, incident, "topic", _topic)
    await _step(ctx, incident, "announce", _announce)
    await _step(ctx, incident, "diagnosis", _diagnose_on_declare)
    async with ctx.store.mutate(incident.id) as incident:
        reminder = _arm_reminder(ctx, incident) if incident.reminder_due is None else None
        incident.ready = True
    if reminder:
        await _enqueue_reminder(ctx, incident, reminder)
    await ctx.refresh_header(incident.id, delay_s=0)


async def _step(ctx: Incidents, incident: Incident, name: str, fn: Any) -> None:
    if await ctx.store.step(incident.id, name) is not None:
        return
    result = await fn(ctx, await ctx.store.require(incident.id))
    await ctx.store.mark_step(incident.id, name, str(result or "done"))


async def _ensure_place(ctx: Incidents, incident: Incident) -> Incident:
    """The incident channel (created once), or a thread in the channel it was declared in."""
    if incident.channel:
        return incident
    channel, name, note, origin = None, None, None, None
    if ctx.settings.incident_create_channels:
        name = channel_name(ctx.settings.incident_channel_prefix, incident.number, incident.title,
                            incident.declared_at)
        try:
            answer = await ctx.slack.call("conversations.create", name=name, is_private=incident.private)
            channel = str(answer["channel"]["id"])
        except SlackError as exc:
            if exc.error == "name_taken" or (_is_transient(exc) and exc.error != "ratelimited"):
                # An earlier try (or this one, answered too late) may have created it before dying or giving up.
                # (A 429 did nothing: looking would only spend conversations.list's budget of 20 a minute.)
                channel = await _find_channel(ctx, name)
            if channel is None and _is_transient(exc):
                raise  # Slack is struggling: the retried job tries again (and finds the channel if it was made)
            if channel is None:
                note = f"Could not create #{name} ({exc.error}); running the incident in this thread instead."
                origin = await _private_fallback(ctx, incident) if incident.private else None
                log.warning("%s: conversations.create %s failed: %s", incident.id, name, exc.error)
    base = await ctx.workspace_url() if channel else None
    async with ctx.store.mutate(incident.id) as current:
        if current.channel is None:
            if channel:  # (a later try may succeed where an earlier one gave up: its note no longer holds)
                current.mode, current.channel, current.channel_name = "channel", channel, name
                current.place_note = None
                current.link = f"{base.rstrip('/')}/archives/{channel}" if base else None
            elif origin or current.origin_channel:
                current.mode, current.channel, current.place_note = "thread", origin or current.origin_channel, note
            else:  # an alert, with no channel of its own and no INCIDENTS_CHANNEL to fall back to
                current.place_note = "no channel could be created and INCIDENTS_CHANNEL is not set"
    if current.channel is None:  # said in the record first: notices waiting for a channel stop waiting
        raise Permanent(f"{current.id}: {current.place_note}")
    if current.link:
        await ctx.store.mark_step(current.id, "link", current.link)
    return current


async def _private_fallback(ctx: Incidents, incident: Incident) -> str:
    """A private incident never falls back to a thread in a shared channel (its title would show there): it
    runs in a thread of the reporter's DM with the bot, until someone makes a private channel by hand."""
    answer = await ctx.slack.call("conversations.open", users=incident.reporter)
    return str(answer["channel"]["id"])


async def _find_channel(ctx: Incidents, name: str) -> str | None:
    cursor = None
    for _ in range(100):
        answer = await ctx.slack.call("conversations.list", types="public_channel,private_channel",
                                      exclude_archived=True, limit=1000, cursor=cursor)
        for channel in answer.get("channels") or []:
            if channel.get("name") == name:
                return str(channel["id"])
        cursor = (answer.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            return None
    return None


async def _ensure_header(ctx: Incidents, incident: Incident) -> Incident:
    if incident.header_ts and incident.link:
        return incident
    assert incident.channel is not None
    ts = incident.header_ts or await ctx.post_once(incident.id, "header", incident.channel,
                                                   *messages.header(incident))
    link = incident.link or await ctx.slack.permalink(incident.channel, ts)
    async with ctx.store.mutate(incident.id) as current:
        current.header_ts = ts
        current.link = current.link or link
        if current.mode == "thread":
            current.thread_ts = ts
    if current.link:
        await ctx.store.mark_step(current.id, "link", current.link)
    if current.place_note:
        await ctx.post_in(current, "place_note", *messages.line(escape(current.place_note)))
    return current


async def _invite(ctx: Incidents, incident: Incident) -> str:
    if incident.mode != "channel" or not incident.channel:
        return "thread"
    users: list[str] = []
    for who in [incident.reporter, incident.commander, *ctx.settings.incident_responders]:
        if not who:
            continue
        if who.startswith("S"):
            users.extend(await ctx.group_members(who))
        elif who[:1] in ("U", "W"):
            users.append(who)
    users = list(dict.fromkeys(users))
    if not users:
        return "nobody"
    try:
        await ctx.slack.call("conversations.invite", channel=incident.channel, users=",".join(users), force=True)
    except SlackError as exc:  # everyone already in, or nobody invitable: nothing more to do
        _raise_if_transient(exc)
        log.info("%s: conversations.invite: %s", incident.id, exc.error)
    return ",".join(users)


async def _pin(ctx: Incidents, incident: Incident) -> str:
    try:
        await ctx.slack.call("pins.add", channel=incident.channel, timestamp=incident.header_ts)
    except SlackError as exc:
        if exc.error != "already_pinned":
            _raise_if_transient(exc)
            log.warning("%s: pins.add failed: %s", incident.id, exc.error)
            return f"failed:{exc.error}"
    return "pinned"


async def _topic(ctx: Incidents, incident: Incident) -> str:
    if incident.mode != "channel":
        return "thread"
    text = messages.topic(incident)
    try:
        await ctx.slack.call("conversations.setTopic", channel=incident.channel, topic=text)
    except SlackError as exc:
        _raise_if_transient(exc)
        log.warning("%s: conversations.setTopic failed: %s", incident.id, exc.error)
        return f"failed:{exc.error}"
    return text


TRANSIENT_SLACK_ERRORS = {"internal_error", "fatal_error", "ratelimited", "service_unavailable", "request_timeout",
                          "unknown_error"}


def _is_transient(exc: SlackError) -> bool:
    return exc.error in TRANSIENT_SLACK_ERRORS or exc.error.startswith("unreachable") or \
        bool(getattr(exc, "timed_out", False))


def _raise_if_transient(exc: SlackError) -> None:
    """Slack being down is worth a retry of the job; a refusal (missing scope, archived channel) is not, and must
    not hold up the rest of the declaration."""
    if _is_transient(exc):
        raise exc


async def _announce(ctx: Incidents, incident: Incident) -> str:
    target = ctx.settings.incidents_channel
    if not target or (incident.mode == "channel" and target == incident.channel):
        return "none"
    if incident.mode == "thread" and target == incident.channel:
        return "none"  # the header in that very channel is the announcement
    ts = await ctx.post_once(incident.id, "announce", target, *messages.announcement(incident))
    async with ctx.store.mutate(incident.id) as current:
        current.announcement = (target, ts)
    return ts


async def _diagnose_on_declare(ctx: Incidents, incident: Incident) -> str:
    if not incident.service:
        return "none"
    return await request_incident_diagnosis(ctx, incident, incident.reporter)


async def request_incident_diagnosis(ctx: Incidents, incident: Incident, user: str) -> str:
    if not incident.service:
        raise UserError(f"{incident.id} names no service, so there is nothing to diagnose. "
                        f"Run `/diagnose SERVICE` here for the one you suspect.")
    if incident.service not in ctx.rt.services().services:
        raise UserError(f"`{escape(incident.service)}` is not in the services file any more; "
                        f"`/diagnose list` shows what can be diagnosed.")
    return (await diagnoses.diagnose_for_incident(ctx, incident, user, incident.service)).run_id


async def on_diagnosis_finished(rt: Any, run_id: str, state: dict[str, str], verdict: Any) -> None:
    """Hook for bot.diagnosis.run: the verdict goes into the timeline and the header's failing checks."""
    incident = state.get("incident_id")
    ctx: Incidents | None = rt.feature(Incidents)
    if not incident or ctx is None or await ctx.store.get(incident) is None:
        return
    failing = [f"{f.check} {f.target}: {f.summary}" for f in verdict.findings]  # findings are the problems
    diff = history.stored_diff(state)
    latest = diagnoses.latest_verdict(run_id, state, verdict, diff)
    await ctx.timeline.record(incident, EntryKind.DIAGNOSIS, entry_id=f"diagnosis:{run_id}", actor="bot",
                              text=verdict.headline, at=latest.at or None,
                              data={"run_id": run_id, "service": verdict.target, "status": str(verdict.status.value),
                                    "suggested_severity": verdict.severity, "failing_checks": failing,
                                    "counts": verdict.counts, "parent_ts": state.get("parent_ts"),
                                    "since_last": latest.since_last})
    async with ctx.store.mutate(incident) as current:
        if diagnoses.newer(current.latest_verdict, latest):
            current.failing_checks, current.latest_verdict = failing, latest
    await ctx.refresh_header(incident)
    await diagnoses.judge_while_monitoring(ctx, current, run_id, state, verdict, diff)


# ------------------------------------------------------------------------------------------------ changes

async def change_status(ctx: Incidents, incident_id_: str, actor: str, new: IncidentStatus, note: str | None,
                        *, key: str) -> Incident:
    if new == "resolved":
        return await resolve(ctx, incident_id_, actor, note, key=key)
    async with ctx.store.mutate(incident_id_) as incident:
        _require_open(incident)
        old = incident.status
        if old == new and not note:
            raise UserError(f"{incident.id} is already {new}. Add what changed: `/incident status {new} <note>`.")
        now = time.time()
        incident.status = new
        incident.last_update_at, incident.last_update = now, note or f"Status: {new}"
    next_due = now + ctx.policy.update_every_s(incident.severity)
    await ctx.timeline.record(incident.id, EntryKind.STATUS, entry_id=f"status:{key}", actor=actor, at=now,
                              text=note or "", data={"from": old, "to": new, "next_update_due": next_due})
    await ctx.say(incident.id, f"status:{key}",
                  *messages.line(messages.status_line(incident, actor, old, new, note, next_due)))
    await ctx.refresh_header(incident.id)
    await _refresh_topic(ctx, incident)
    if new == "monitoring" and old != "monitoring":
        await diagnoses.arm(ctx, incident)
    return incident


async def add_note(ctx: Incidents, incident_id_: str, actor: str, text: str, *, key: str) -> Incident:
    async with ctx.store.mutate(incident_id_) as incident:
        now = time.time()
        if incident.is_open:
            incident.last_update_at, incident.last_update = now, text
    await ctx.timeline.record(incident.id, EntryKind.NOTE, entry_id=f"note:{key}", actor=actor, at=now, text=text)
    await ctx.say(incident.id, f"note:{key}", *messages.line(
        f":memo: Note from {messages.who(actor)}: {messages.inert(text)}"))
    await ctx.refresh_header(incident.id)
    return incident


async def set_commander(ctx: Incidents, incident_id_: str, actor: str, commander: str, *, key: str) -> Incident:
    async with ctx.store.mutate(incident_id_) as incident:
        _require_open(incident)
        old = incident.commander
        if old == commander:
            raise UserError(f"<@{commander}> is already the commander of {incident.id}.")
        incident.commander = commander
    await ctx.timeline.record(incident.id, EntryKind.COMMANDER, entry_id=f"commander:{key}", actor=actor,
                              data={"from": old, "to": commander})
    await ctx.say(incident.id, f"commander:{key}", *messages.line(
        f":crown: {messages.who(commander)} is now the incident commander (handed over by {messages.who(actor)})."))
    await ctx.invite(incident, commander, key)
    await ctx.refresh_header(incident.id)
    return incident


async def resolve(ctx: Incidents, incident_id_: str, actor: str, resolution: str | None, *, key: str) -> Incident:
    async with ctx.store.mutate(incident_id_) as incident:
        if not incident.is_open:
            raise UserError(f"{incident.id} was already resolved by {messages.who(incident.resolved_by)}.")
        now = time.time()
        old = incident.status
        incident.status = "resolved"
        incident.resolved_at, incident.resolved_by, incident.resolution = now, actor, resolution
        incident.last_update_at, incident.last_update = now, resolution or "Resolved"
        cancel_timer = escalation.cancel_timer(incident)
        cancel_reminder = escalation.reminder_job_id(incident.id, incident.reminder_gen)
        incident.reminder_gen += 1
        incident.reminder_due = None
    for job_id in (cancel_timer, cancel_reminder):
        if job_id:
            await ctx.rt.queue.cancel(job_id)
    await ctx.timeline.record(incident.id, EntryKind.RESOLVED, entry_id="resolved", actor=actor, at=now,
                              text=resolution or "",
                              data={"from": old, "duration_s": round(incident.elapsed_s(), 3),
                                    "severity": incident.severity})
    await ctx.say(incident.id, "resolved", *messages.line(messages.resolved_line(incident)))
    await escalation.notify_providers(ctx, incident, "resolve", "resolve")
    if incident.alert_group_key:
        from bot.incidents.model import group_hash

        await ctx.store.release_alert(group_hash(incident.alert_group_key), incident.id)
    await ctx.refresh_header(incident.id, delay_s=0)
    await _refresh_topic(ctx, incident)
    return incident


def _require_open(incident: Incident) -> None:
    if not incident.is_open:
        raise UserError(f"{incident.id} is resolved. Add to its record with `/incident note {incident.id} <text>`, "
                        f"or declare a new incident if it is back.")


async def _refresh_topic(ctx: Incidents, incident: Incident) -> None:
    if incident.mode == "channel" and await ctx.store.step(incident.id, "topic") is not None:
        await ctx.rt.queue.enqueue("incident.topic", {"incident": incident.id}, job_id=f"topic:{incident.id}",
                                   delay_s=0.5)


# ------------------------------------------------------------------------------------------------ reminders

def _arm_reminder(ctx: Incidents, incident: Incident) -> tuple[str, float]:
    incident.reminder_gen += 1
    every = ctx.policy.update_every_s(incident.severity)
    incident.reminder_due = max((incident.last_update_at or incident.declared_at) + every, time.time() + 1)
    return escalation.reminder_job_id(incident.id, incident.reminder_gen), incident.reminder_due


async def _enqueue_reminder(ctx: Incidents, incident: Incident, reminder: tuple[str, float]) -> None:
    job_id, due = reminder
    await ctx.rt.queue.enqueue("incident.remind", {"incident": incident.id, "gen": incident.reminder_gen},
                               job_id=job_id, run_at=due)


async def remind_job(ctx: Incidents, job: Job) -> None:
    """Remind the channel when no status update came within the severity's cadence; then re-arm."""
    incident_id_, gen = job.payload["incident"], int(job.payload["gen"])
    fire = None
    async with ctx.store.lock(incident_id_):
        incident = await ctx.store.get(incident_id_)
        if incident is None or not incident.is_open or incident.reminder_gen != gen:
            return
        every = ctx.policy.update_every_s(incident.severity)
        since = incident.last_update_at or incident.declared_at
        now = time.time()
        incident.reminder_gen += 1
        if now >= since + every - 0.05:
            fire = now - since
            incident.reminder_due = now + every  # the next reminder comes a full cadence after this one
        else:
            incident.reminder_due = since + every  # an update came in meanwhile: count from it
        reminder = (escalation.reminder_job_id(incident.id, incident.reminder_gen), incident.reminder_due)
        await ctx.store.save(incident)
    await _enqueue_reminder(ctx, incident, reminder)
    if fire is not None:
        await ctx.timeline.record(incident.id, EntryKind.REMINDER, entry_id=f"reminder:{gen}", actor="bot",
                                  data={"since_update_s": round(fire, 1), "every_s": every})
        await ctx.say(incident.id, f"reminder:{gen}",
                      *messages.line(messages.reminder_line(incident, fire, every)))
        await ctx.refresh_header(incident.id)


# ------------------------------------------------------------------------------------------------ small jobs

async def post_job(ctx: Incidents, job: Job) -> None:
    incident = await with_its_channel(ctx, job.payload["incident"])
    if incident is None:
        return
    if not incident.channel:
        raise Retry("the incident has no channel yet", delay_s=channel_wait_s(job))
    await ctx.post_in(incident, job.payload["key"], job.payload["text"], job.payload.get("blocks"))


async def refresh_job(ctx: Incidents, job: Job) -> None:
    """Redraw the header (and the announcement) from the stored state."""
    incident = await ctx.store.get(job.payload["incident"])
    if incident is None or not incident.header_ts or not incident.channel:
        return
    text, blocks = messages.header(incident)
    await ctx.slack.update_message(incident.channel, incident.header_ts, text, blocks=blocks)
    if incident.announcement:
        channel, ts = incident.announcement
        text, blocks = messages.announcement(incident)
        await ctx.slack.update_message(channel, ts, text, blocks=blocks)


async def topic_job(ctx: Incidents, job: Job) -> None:
    incident = await ctx.store.get(job.payload["incident"])
    if incident is None or incident.mode != "channel" or not incident.channel:
        return
    text = messages.topic(incident)
    if await ctx.store.step(incident.id, "topic") != text:
        await ctx.slack.call("conversations.setTopic", channel=incident.channel, topic=text)
        await ctx.store.mark_step(incident.id, "topic", text)


async def invite_job(ctx: Incidents, job: Job) -> None:
    # the first page's DM goes out before the channel is made: invite once it is
    incident = await with_its_channel(ctx, job.payload["incident"])
    if incident is None or incident.mode != "channel" or incident.channel is None:
        return
    try:
        await ctx.slack.call("conversations.invite", channel=incident.channel, users=",".join(job.payload["users"]),
                             force=True)
    except SlackError as exc:
        log.info("%s: conversations.invite: %s", incident.id, exc.error)


# ------------------------------------------------------------------------------------------------ auditor

async def arm_audit(ctx: Incidents, delay_s: float | None = None) -> None:
    await ctx.rt.queue.enqueue("incident.audit", {}, job_id="incident.audit",
                               delay_s=ctx.settings.incident_audit_interval_s if delay_s is None else delay_s)


async def audit_job(ctx: Incidents, job: Job) -> None:
    """Find decisions that were committed but whose job never got queued (a crash in between) and queue them:
    unfinished declarations, page orders not carried out, timers and reminders overdue. Every re-queued job
    re-checks its own state, so a false alarm costs nothing."""
    now = time.time()
    open_incidents = await ctx.store.list_open()
    for incident in open_incidents:
        await audit_incident(ctx, incident, now)
    if open_incidents:
        await arm_audit(ctx)


async def audit_incident(ctx: Incidents, incident: Incident, now: float) -> None:
    queue = ctx.rt.queue
    if not incident.ready and now - incident.declared_at > STALLED_DECLARATION_S:
        await queue.enqueue("incident.declare", {"incident": incident.id}, job_id=f"declare:{incident.id}")
    for order in incident.paging.orders:
        if not order.done and now - order.ordered_at > TIMER_GRACE_S:
            await escalation.enqueue_page(ctx, incident.id, order.dedup_key)
    paging = incident.paging
    if paging.next_escalation_at and not paging.acknowledged and now > paging.next_escalation_at + TIMER_GRACE_S:
        await queue.enqueue("incident.escalate", {"incident": incident.id, "gen": paging.timer_gen},
                            job_id=escalation.timer_job_id(incident.id, paging.timer_gen))
    if incident.reminder_due and now > incident.reminder_due + TIMER_GRACE_S:
        await queue.enqueue("incident.remind", {"incident": incident.id, "gen": incident.reminder_gen},
                            job_id=escalation.reminder_job_id(incident.id, incident.reminder_gen))
