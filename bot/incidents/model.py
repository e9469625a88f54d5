"""The incident record: one msgspec Record, stored as JSON under `inc:<id>` (see store.py).

Everything about an incident that other features need (the postmortem, summaries, message capture) is here or
in its timeline (bot/incidents/timeline.py). Text fields hold the plain text people typed; renderers escape it.
"""

from __future__ import annotations

import hashlib
import re
import time
import unicodedata
from datetime import UTC, datetime
from typing import Literal

from checks.fixes import FixOffer
from checks.schema import Record, field

Severity = Literal["P0", "P1", "P2", "P3"]
IncidentStatus = Literal["investigating", "identified", "monitoring", "resolved"]
SEVERITIES: tuple[Severity, ...] = ("P0", "P1", "P2", "P3")
STATUSES: tuple[IncidentStatus, ...] = ("investigating", "identified", "monitoring", "resolved")
SEVERITY_MEANING = {"P0": "critical", "P1": "high", "P2": "medium", "P3": "low"}
# "slack" (a person declared it) or an AlertSource value (bot/incidents/notice.py), spelled out: msgspec reads a
# Literal or an enum, not a union of both; tests/test_incident_record.py checks the two lists agree.
IncidentSource = Literal["slack", "alertmanager", "cloudwatch", "grafana", "datadog", "generic"]

# Roles beyond the commander (who lives in `Incident.commander`); INCIDENT_ROLES adds more by name.
ROLE_LABELS = {"scribe": "Scribe", "comms": "Communications lead", "tech_lead": "Tech lead"}

INCIDENT_ID = re.compile(r"^INC-(\d{1,9})$", re.IGNORECASE)
CHANNEL_NAME_MAX = 80


class PageRecord(Record):
    """The outcome of one delivery of a page: one provider (PagerDuty, Opsgenie) or one Slack user."""

    dedup_key: str
    delivery: str  # "pagerduty", "opsgenie-emea", "slack:U123"
    severity: Severity
    level: int
    ok: bool
    error: str | None = None
    provider_ref: str | None = None
    at: float = field(default_factory=time.time)


class FrozenLevel(Record):
    """A policy level as it was when paging started (the policy file may change; a running incident does not)."""

    number: int
    routes: dict[str, list[str]]  # provider → target ids ([] = the provider's own default target)
    ack_timeout_s: float
    urgency: Literal["high", "low"] = "high"


class PageOrder(Record):
    """A decision to page, committed before any page goes out; the `incident.page` job carries it out."""

    dedup_key: str  # make_dedup_key(id, severity, level), or `<id>:<severity>:people:<n>` for named people
    severity: Severity
    level: int
    routes: dict[str, list[str]]
    urgency: Literal["high", "low"] = "high"
    reason: Literal["policy", "timer", "manual", "severity", "people"] = "policy"
    actor: str | None = None
    schedules: dict[str, str] = field(default_factory=dict)  # paged target → the on-call schedule it came from
    unpaged: list[str] = field(default_factory=list)  # why a schedule target paged nobody (said in the channel)
    ordered_at: float = field(default_factory=time.time)
    # Paging.acks when the order was decided; None for an order stored before acknowledgements were counted
    acks_before: int | None = None
    done: bool = False
    # "acknowledged" or "resolved": done, and none of its deliveries sent, held back on purpose (not failed)
    withheld: str = ""


class Paging(Record):
    """Escalation state. `level` is the highest level of `levels` paged so far (0: none yet)."""

    severity: Severity | None = None  # the severity whose (frozen) levels are being walked; None: not started
    levels: list[FrozenLevel] = field(default_factory=list)
    level: int = 0
    orders: list[PageOrder] = field(default_factory=list)
    first_paged_at: float | None = None
    acked_at: float | None = None
    # Acknowledgements so far. "Acknowledged after this order was decided" compares counts, not `acked_at` with
    # `ordered_at`: the two are stamped by the clocks of whichever hosts decided and acknowledged.
    acks: int = 0
    acked_by: str | None = None  # Slack user id, or a name from PagerDuty
    ack_via: str | None = None  # button | command | pagerduty
    next_escalation_at: float | None = None
    timer_gen: int = 0  # bumped whenever the pending escalation timer is replaced or cancelled
    slack_paged: list[str] = field(default_factory=list)  # Slack users DM'd: they may acknowledge

    @property
    def acknowledged(self) -> bool:
        return self.acked_at is not None

    def order(self, dedup_key: str) -> PageOrder | None:
        return next((o for o in self.orders if o.dedup_key == dedup_key), None)

    def was_paged(self, user: str) -> bool:
        """`user` was named by a Slack page order (a schedule's on-call person, a policy level, `/escalate @user`)
        or DM'd through a user group: someone asked to respond."""
        return bool(user) and (user in self.slack_paged
                               or any(user in order.routes.get("slack", ()) for order in self.orders))


class LatestVerdict(Record):
    """The newest finished diagnosis of the incident, as its header shows it (bot/incidents/diagnoses.py)."""

    run_id: str
    service: str
    status: str  # ok | warn | fail | error | skipped
    headline: str
    at: float
    since_last: str | None = None  # "since the last run (4 min ago): 1 fixed, 0 new, 0 still failing"
    fixes: list[FixOffer] = field(default_factory=list)  # what its findings offer to fix (header buttons)


class Incident(Record):
    id: str  # "INC-12"
    number: int
    title: str
    severity: Severity = "P2"
    status: IncidentStatus = "investigating"
    service: str | None = None
    reporter: str  # Slack user id, or the alert source ("alertmanager", "cloudwatch", …)
    commander: str | None = None
    roles: dict[str, str] = field(default_factory=dict)  # role name → Slack user id (bot/incidents/roles.py)
    source: IncidentSource = "slack"
    # Declared `private` (never by an alert): its channel is private, and outside it the incident is not listed
    # and not shown to anyone but its commander, role holders, the people paged for it and incident admins
    # (Incidents.may_see).
    private: bool = False
    declared_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    # Where it lives. Channel mode: `channel` is the incident channel. Thread mode (INCIDENT_CREATE_CHANNELS=false,
    # or creation failed): `channel` is `origin_channel` and `thread_ts` is the header's ts.
    origin_channel: str
    mode: Literal["channel", "thread"] = "channel"
    channel: str | None = None
    channel_name: str | None = None
    thread_ts: str | None = None
    header_ts: str | None = None
    announcement: tuple[str, str] | None = None  # (channel, ts) in the incidents channel
    place_note: str | None = None  # why it lives in a thread although channels were wanted, or has no place

    last_update_at: float | None = None  # the latest status update or note (reminders count from here)
    last_update: str | None = None
    failing_checks: list[str] = field(default_factory=list)  # from the latest diagnosis verdict
    diagnosis_runs: list[str] = field(default_factory=list)
    latest_verdict: LatestVerdict | None = None
    resolved_at: float | None = None
    resolved_by: str | None = None
    resolution: str | None = None
    alert_group_key: str | None = None

    paging: Paging = field(default_factory=Paging)
    reminder_due: float | None = None
    reminder_gen: int = 0
    link: str | None = None  # permalink of the header message (pages and DMs link to it)
    ready: bool = False  # every declaration step is done (channel, header, pin, topic, announcement, paging)

    @property
    def is_open(self) -> bool:
        return self.status != "resolved"

    def is_responder(self, user: str) -> bool:
        """The commander or a role holder: they may run the incident whether or not they are in its channel."""
        return bool(user) and (user == self.commander or user in self.roles.values())

    @property
    def where(self) -> str | None:
        """Slack channel the incident's messages go to."""
        return self.channel

    def elapsed_s(self, now: float | None = None) -> float:
        end = self.resolved_at if self.resolved_at else (now or time.time())
        return max(end - self.declared_at, 0.0)


def role_label(role: str) -> str:
    """`tech_lead` → "Tech lead"; a configured role is shown by its name."""
    return ROLE_LABELS.get(role) or role.replace("_", " ").capitalize()


def incident_id(number: int) -> str:
    return f"INC-{number}"


def parse_incident_id(text: str) -> str | None:
    match = INCIDENT_ID.match(text.strip())
    return f"INC-{int(match.group(1))}" if match else None


def slugify(title: str, limit: int = 40) -> str:
    """`Checkout API 500s!` → `checkout-api-500s` (ASCII letters/digits joined by '-')."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_title).strip("-")
    return slug[:limit].rstrip("-") or "incident"


def channel_name(prefix: str, number: int, title: str, at: float | None = None) -> str:
    """`inc-20261107-12-checkout-api-500s`: a valid Slack channel name (lowercase, digits, '-', '_', ≤ 80)."""
    day = datetime.fromtimestamp(at or time.time(), UTC).strftime("%Y%m%d")
    head = f"{prefix}-{day}-{number}"
    room = CHANNEL_NAME_MAX - len(head) - 1
    slug = slugify(title, limit=max(room, 0))
    return f"{head}-{slug}" if slug and room > 0 else head[:CHANNEL_NAME_MAX]


def group_hash(group_key: str) -> str:
    return hashlib.sha256(group_key.encode()).hexdigest()[:24]
