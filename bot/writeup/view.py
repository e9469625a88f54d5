"""The write-up's only window onto incidents (issue #4): which incident a channel or thread belongs to, and the
incident record as plain facts. Everything else in the write-up works from `IncidentView` and the timeline, so
a change in the incident model touches this file only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from bot.incidents.service import Incidents
from bot.queue.replies import as_text
from bot.runtime import Runtime
from bot.slack.posts import PENDING

log = logging.getLogger("bot.writeup")

# The runbook's cadence, for when no paging policy is installed: P0 every 15 min, P1 30 min, P2 hourly, P3 daily.
DEFAULT_UPDATE_EVERY_S = {"P0": 900.0, "P1": 1800.0, "P2": 3600.0, "P3": 86400.0}
POST_MARK = "chatops_incident"  # metadata event_type on the incident feature's own posts


@dataclass
class IncidentView:
    """What the write-up needs to know about an incident, independent of how the incident feature stores it."""

    id: str
    title: str
    severity: str
    status: str
    declared_at: float
    reporter: str | None = None
    commander: str | None = None
    service: str | None = None
    channel: str | None = None
    mode: str = "channel"  # channel | thread
    thread_ts: str | None = None
    header_ts: str | None = None
    link: str | None = None  # permalink of the header message
    announcement: tuple[str, str] | None = None  # (channel, ts) in the incidents channel
    private: bool = False  # outside its channel, only its people may learn what it is about
    resolved_at: float | None = None
    resolved_by: str | None = None
    resolution: str | None = None
    failing_checks: list[str] = field(default_factory=list)
    first_paged_at: float | None = None
    acked_at: float | None = None
    acked_by: str | None = None
    posted: dict[str, str] = field(default_factory=dict)  # message key → ts of the incident's own posts

    @property
    def is_open(self) -> bool:
        return self.status != "resolved"

    def elapsed_s(self, now: float) -> float:
        return max((self.resolved_at or now) - self.declared_at, 0.0)


def view_of(incident: Any, posted: dict[str, str] | None = None) -> IncidentView:
    """Adapter from bot.incidents.model.Incident (or anything with the same attributes)."""
    paging = getattr(incident, "paging", None)
    announcement = getattr(incident, "announcement", None)
    return IncidentView(
        id=incident.id, title=incident.title, severity=incident.severity, status=incident.status,
        declared_at=incident.declared_at, reporter=incident.reporter, commander=incident.commander,
        service=incident.service, channel=incident.channel, mode=incident.mode, thread_ts=incident.thread_ts,
        header_ts=incident.header_ts, link=incident.link,
        announcement=tuple(announcement) if announcement else None,  # type: ignore[arg-type]
        private=bool(getattr(incident, "private", False)),
        resolved_at=incident.resolved_at, resolved_by=incident.resolved_by, resolution=incident.resolution,
        failing_checks=list(incident.failing_checks or []),
        first_paged_at=getattr(paging, "first_paged_at", None), acked_at=getattr(paging, "acked_at", None),
        acked_by=getattr(paging, "acked_by", None), posted=dict(posted or {}),
    )


def store_of(rt: Runtime) -> Any:
    ctx = rt.feature(Incidents)
    if ctx is not None:
        return ctx.store
    from bot.incidents.store import IncidentStore

    return IncidentStore(rt.redis, rt.namespace)


async def load_incident(rt: Runtime, incident_id: str) -> IncidentView | None:
    store = store_of(rt)
    incident = await store.get(incident_id)
    if incident is None:
        return None
    posted = await rt.redis.hgetall(store.incident_key(incident_id, "posted"))
    # A post still PENDING (or whose worker died before recording it) has no ts to link to yet.
    return view_of(incident, {as_text(k): as_text(v) for k, v in posted.items() if as_text(v) != PENDING})


async def incident_for(rt: Runtime, channel: str | None, thread_ts: str | None = None) -> str | None:
    """The incident a message in `channel` (in thread `thread_ts`) belongs to: the incident channel's, or a
    thread-mode incident whose header thread this is."""
    if not channel:
        return None
    store = store_of(rt)
    found = await store.by_channel(channel)
    if found:
        return found
    if not thread_ts:
        return None
    for incident_id in await store.open_in_thread_channel(channel):
        incident = await store.get(incident_id)
        if incident is not None and thread_ts in (incident.thread_ts, incident.header_ts):
            return incident_id
    return None


def update_every_s(rt: Runtime, severity: str) -> float:
    """The status-update cadence of a severity: the paging policy's, else the runbook's."""
    ctx = rt.feature(Incidents)
    if ctx is not None:
        try:
            return float(ctx.policy.update_every_s(severity))
        except ValueError:  # an unknown severity in an old record: fall back rather than stop summarising
            log.warning("no update cadence for severity %s in the paging policy", severity)
    return DEFAULT_UPDATE_EVERY_S.get(severity, 3600.0)

