"""Action items → tickets, once; their state back into the bot; the open ones across incidents.

The `writeup.tickets` job (coalesced per incident) runs when a resolved incident's postmortem is published, and on
`/incident tickets`. Under the incident's tickets lease it reads the incident's action items from the timeline
(the postmortem's own `action_items`: `action:`/`TODO:` lines, the ☑ reaction, `/incident action`), and for each:

    remembered in Redis          refresh its state from the tracker (open / closed / the Jira status)
    not remembered, not done     search the tracker by the item's marker; create only if nothing is found;
                                 remember it in Redis either way

A job may run more than once and a worker may die at any point: the marker (model.marker) is derived from the
incident and the item, so a ticket created by a worker that was SIGKILLed before it wrote Redis is found, not
made again. A create is never retried in place (see http.py). A tracker's refusal (bad token, unknown project)
ends the job with the sentence; 5xx/network errors retry the job, bounded by the queue's max deliveries, and a
rate limit runs it again after the wait the tracker asked for (http.py).

Redis (under the bot's namespace):
    wu:tickets:<incident>     hash: action item entry id → Ticket JSON
    wu:tickets:<incident>:lk  the lease while one worker exports that incident
    wu:followups…             the follow-ups index (bot/writeup/trackers/followups.py), refreshed by every export
    inc:tl:actions:built      set once the open incidents' timelines were checked for action items (deployments
                              whose timelines predate `inc:tl:actions`, bot/incidents/timeline.py)
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import httpx

from bot.queue import Job, Permanent, Retry, lease
from bot.queue.replies import as_text
from bot.retry import RetryableError
from bot.runtime import Runtime
from bot.writeup.context import user_names, writeup_of
from bot.writeup.trackers import followups as index
from bot.writeup.trackers.config import TrackerSettings
from bot.writeup.trackers.followups import FollowUp
from bot.writeup.trackers.github import GitHubIssues
from bot.writeup.trackers.jira import JiraCloud
from bot.writeup.trackers.model import RateLimited, Ticket, TicketRequest, TrackerError, TrackerRefused
from bot.writeup.trackers.store import remember, stored_tickets, tickets_key
from bot.writeup.view import IncidentView, load_incident

if TYPE_CHECKING:
    from bot.incidents.timeline import Timeline

log = logging.getLogger("bot.trackers")

TITLE_MAX = 120
LEASE_WAIT_S = 30.0
RATE_LIMIT_WAIT_MAX_S = 3600.0  # GitHub's primary limit resets within the hour
TRACKERS = {"github": GitHubIssues, "jira": JiraCloud}
PRIVATE_ITEM_TEXT = "Action item of a private incident (its text is in the incident's channel)"
NOTE_BATCH = 50  # open incidents whose timelines are read at once, the one time they are checked for action items


@dataclass
class ExportReport:
    incident: str
    items: int = 0
    created: int = 0
    found: int = 0  # made by an earlier run that died before remembering it
    refreshed: int = 0
    changed: bool = False  # something the postmortem shows is new


def tracker_settings(rt: Runtime) -> TrackerSettings:
    found = rt.feature(TrackerSettings)
    return found if found is not None else TrackerSettings.from_env()


async def request_tickets(rt: Runtime, incident_id: str, *, reason: str) -> None:
    await rt.queue.enqueue("writeup.tickets", {"incident": incident_id, "reason": reason},
                           job_id=f"tickets:{incident_id}")


async def action_items(rt: Runtime, incident: IncidentView, *, resolve_names: bool = True) -> list[Any]:
    """The incident's action items, as the postmortem lists them; `resolve_names`: resolve people's names for a ticket's
    text (a Slack call for names not cached yet), else they stay ids (the follow-ups list mentions them)."""
    from bot.writeup.postmortem.assemble import people_in
    from bot.writeup.postmortem.facts import build_facts

    entries = await writeup_of(rt).timeline.entries(incident.id)
    names = await user_names(rt, people_in(entries, incident)) if resolve_names else {}
    facts = build_facts(incident, entries, names=names)
    for item in facts.action_items:
        item.owner_name = facts.name(item.owner) if item.owner else None
    return list(facts.action_items)


async def export(rt: Runtime, incident_id: str, *, create: bool = True) -> ExportReport:
    incident = await load_incident(rt, incident_id)
    if incident is None:
        raise TrackerRefused(f"There is no incident {incident_id}.")
    report = ExportReport(incident.id)
    settings = tracker_settings(rt)
    async with lease.held(rt.redis, tickets_key(rt, incident.id) + ":lk", wait_s=LEASE_WAIT_S, ttl_s=10.0):
        items = await action_items(rt, incident)
        report.items = len(items)
        stored = await stored_tickets(rt, incident.id)
        if settings.chosen:
            async with httpx.AsyncClient() as client:
                tracker = TRACKERS[settings.chosen](settings, client)
                pm_link = await _postmortem_link(rt, incident.id)
                for item in items:
                    await _one(rt, tracker, incident, item, stored, pm_link, create, report)
        await _index(rt, incident, items, stored)
    return report


async def _one(rt: Runtime, tracker: Any, incident: IncidentView, item: Any, stored: dict[str, Ticket],
               pm_link: str | None, create: bool, report: ExportReport) -> None:
    ticket = stored.get(item.id)
    if ticket is not None:
        fresh = await tracker.refresh(ticket)
        report.refreshed += 1
        report.changed |= (fresh.state, fresh.done) != (ticket.state, ticket.done)
    elif create and not item.done:
        request = _request(incident, item, pm_link, private_text=tracker.settings.tracker_private_text)
        fresh = await tracker.find(request)
        if fresh is None:
            fresh = await tracker.create(request)
            report.created += 1
            log.info("%s: ticket %s created for an action item", incident.id, fresh.key)
        else:
            report.found += 1
        report.changed = True
    else:
        return
    stored[item.id] = fresh
    await remember(rt, incident.id, fresh)


def _request(incident: IncidentView, item: Any, pm_link: str | None, *, private_text: bool) -> TicketRequest:
    """What the ticket says. A private incident's item keeps its words in Slack unless TRACKER_PRIVATE_TEXT allows
    them out: the tracker's readers are not the incident's people."""
    text = item.text if private_text or not incident.private else PRIVATE_ITEM_TEXT
    title = " ".join(text.split()) or "Action item"
    title = title if len(title) <= TITLE_MAX else title[: TITLE_MAX - 1] + "…"
    return TicketRequest(incident.id, item.id, f"[{incident.id}] {title}", text, item.owner_name, item.due,
                         incident.link, pm_link)


async def _postmortem_link(rt: Runtime, incident_id: str) -> str | None:
    link = await rt.redis.hget(rt.key("wu", "pm", incident_id), "link")
    return as_text(link) if link else None


async def _index(rt: Runtime, incident: IncidentView, items: list[Any], stored: dict[str, Ticket]) -> None:
    """The follow-ups index: every action item of the incident with its latest known state."""
    await index.write(rt, [_followup(incident, item, stored.get(item.id)) for item in items])


def _followup(incident: IncidentView, item: Any, ticket: Ticket | None) -> FollowUp:
    done = bool(item.done or (ticket and ticket.done))
    return FollowUp(incident.id, item.id, item.text, item.owner, item.at, item.due, done,
                    asdict(ticket) if ticket else None, private=incident.private)


async def followups(rt: Runtime, *, owner: str | None = None, include_done: bool = False) -> list[FollowUp]:
    """Action items across incidents, oldest first, from the index (without `include_done`, only the open ones
    are read), after the open incidents that have any refreshed theirs."""
    await _refresh_open(rt)
    found = await (index.every(rt) if include_done else index.open_items(rt))
    chosen = [f for f in found if (include_done or not f.done) and (owner is None or f.owner == owner)]
    return sorted(chosen, key=lambda f: f.at)


async def followups_page(rt: Runtime, visible: index.Visible, limit: int, *,
                         owner: str | None = None) -> tuple[list[FollowUp], int]:
    """What `/incident followups` and a handoff show: the first `limit` open items the reader may see, and how
    many there are (bot/writeup/trackers/followups.page)."""
    await _refresh_open(rt)
    return await index.page(rt, visible, limit, owner=owner)


async def _refresh_open(rt: Runtime) -> None:
    """The items of open incidents whose timeline holds any, into the index: their export may not have run yet.
    Resolved incidents leave the timeline's set; their export indexes them when it runs."""
    from bot.writeup.view import store_of, view_of

    timeline = writeup_of(rt).timeline
    await _ensure_actions_noted(rt, timeline)
    ids = await timeline.incidents_with_actions()
    found = await store_of(rt).records(ids)
    await timeline.forget_actions([i for i, r in zip(ids, found, strict=True) if r is None or not r.is_open])
    await asyncio.gather(*(_refresh(rt, view_of(r)) for r in found if r is not None and r.is_open))


async def _ensure_actions_noted(rt: Runtime, timeline: Timeline) -> None:
    """Timelines written before the timeline noted which incidents hold an action item: each open incident's is
    read once, and those holding one are noted (so their items keep showing after an upgrade). The marker is set
    last, and noting is idempotent, so processes starting together may each do it; a resolved incident noted in a
    race is dropped by the next refresh."""
    from bot.writeup.view import store_of

    built = f"{timeline.actions_key()}:built"
    if await rt.redis.exists(built):
        return
    ids = await store_of(rt).open_ids()
    for at in range(0, len(ids), NOTE_BATCH):
        holding = await _holding_actions(timeline, ids[at:at + NOTE_BATCH])
        if holding:
            await rt.redis.sadd(timeline.actions_key(), *holding)
    await rt.redis.set(built, 1)


async def _holding_actions(timeline: Timeline, ids: list[str]) -> list[str]:
    from bot.incidents.timeline import has_action_item

    entries = await asyncio.gather(*(timeline.entries(i) for i in ids))
    return [i for i, found in zip(ids, entries, strict=True) if any(map(has_action_item, found))]


async def _refresh(rt: Runtime, incident: IncidentView) -> None:
    stored, items = await asyncio.gather(stored_tickets(rt, incident.id),
                                         action_items(rt, incident, resolve_names=False))
    await _index(rt, incident, items, stored)


async def tickets_line(rt: Runtime, incident_id: str) -> str:
    """One line for `/incident summary`: the tickets and their state; "" when there is no tracker and no ticket."""
    tickets = await stored_tickets(rt, incident_id)
    if not tickets:
        chosen = tracker_settings(rt).chosen
        return "Tickets: none yet (they are made on resolve, or now with `/incident tickets`)." if chosen else ""
    shown = ", ".join(f"<{t.url}|{t.key}> ({t.state})" for t in sorted(tickets.values(), key=lambda t: t.created_at))
    done = sum(t.done for t in tickets.values())
    return f"Tickets: {shown} — {done} of {len(tickets)} done."


async def tickets_job(rt: Runtime, job: Job) -> None:
    incident_id = str(job.payload["incident"])
    try:
        report = await export(rt, incident_id)
    except TrackerRefused as exc:
        raise Permanent(str(exc)) from None
    except RateLimited as exc:  # run again when the tracker said, not on the queue's shorter backoff
        raise Retry(f"{incident_id}: tickets not exported yet: {exc}",
                    delay_s=min(exc.retry_after, RATE_LIMIT_WAIT_MAX_S)) from None
    except (RetryableError, TrackerError, lease.LeaseBusy) as exc:
        raise RuntimeError(f"{incident_id}: tickets not exported yet: {exc}") from None  # the queue retries
    log.info("%s: tickets: %d created, %d found again, %d refreshed", incident_id, report.created, report.found,
             report.refreshed)
    if report.changed and job.payload.get("reason") != "postmortem refresh":
        from bot.writeup.requests import request_postmortem

        await request_postmortem(rt, incident_id, reason="tickets")  # the draft links each ticket


__all__ = ["ExportReport", "FollowUp", "export", "followups", "request_tickets", "stored_tickets",
           "tickets_job", "tickets_line", "tracker_settings", "followups_page"]
