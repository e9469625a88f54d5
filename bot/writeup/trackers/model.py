"""A ticket made from an action item, and the marker that finds it again.

The marker is derived from the incident and the action item's timeline entry, so the same item always gives the
same marker: a job that dies after the tracker created the ticket but before Redis remembered it finds the
ticket by its marker on its next run instead of creating a second one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass


class TrackerError(Exception):
    """The tracker answered, but not with what we asked for; the sentence says what happened."""


class TrackerRefused(TrackerError):
    """A 4xx other than a rate limit: retrying the same request will not help (bad token, unknown project...)."""


class RateLimited(TrackerError):
    """The tracker asked us to wait `retry_after` seconds, longer than is worth sleeping in place (or before a
    create, which is never repeated in place): the job is run again after that long."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Ticket:
    tracker: str  # github | jira
    key: str  # "#12" | "OPS-7"
    url: str
    state: str  # as the tracker says it: open, closed, "In Progress"...
    done: bool
    item: str  # the action item's timeline entry id
    created_at: float = 0.0
    checked_at: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Ticket:
        return cls(**json.loads(raw))


@dataclass
class TicketRequest:
    """What a new ticket says: everything a tracker needs, already in plain text."""

    incident_id: str
    item_id: str
    title: str
    text: str
    owner: str | None  # a display name
    due: str | None
    incident_link: str | None
    postmortem_link: str | None

    @property
    def marker(self) -> str:
        return marker(self.incident_id, self.item_id)


def marker(incident_id: str, item_id: str) -> str:
    """`chatops-action-<16 hex>`: also valid as a Jira label (no spaces) and as a GitHub body comment."""
    digest = hashlib.sha256(f"{incident_id}\n{item_id}".encode()).hexdigest()[:16]
    return f"chatops-action-{digest}"
