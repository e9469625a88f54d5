"""PagerDuty v3 webhooks: is this request really from PagerDuty, and what happened?

Signature (`X-PagerDuty-Signature`): `v1=<hex HMAC-SHA256 of the raw body, keyed with the subscription secret>`;
several comma-separated signatures may be present while a secret is being rotated, and any one matching is
enough. Verify the raw bytes exactly as received, before any JSON parsing; compare in constant time.

Payload: `{"event": {"id", "event_type", "resource_type", "occurred_at", "agent", "client", "data"}}`. For
incident events `event.data` is the incident: `data.id` (PagerDuty's incident id), `data.status`,
`data.incident_key` — for incidents opened through the Events API this is the `dedup_key` of the alert that
opened the incident (ours: `INC-42:P0:L1`, see `providers.parse_dedup_key`), and it may be null or absent —
and `event.agent` is who did it (`type: user_reference`, `summary` = the user's name) or null for the system
(an auto-resolve, say). A subscription test sends `event_type: pagey.ping`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

import msgspec

from bot.paging.providers import parse_dedup_key

SIGNATURE_HEADER = "X-PagerDuty-Signature"
ACKNOWLEDGED = "incident.acknowledged"
RESOLVED = "incident.resolved"


class WebhookError(ValueError):
    """The body is not a PagerDuty v3 webhook we can read; answer 400 and log it."""


class PagerDutyEvent(msgspec.Struct, frozen=True):
    event_type: str  # "incident.acknowledged", "incident.resolved", ... or "pagey.ping"
    event_id: str | None
    incident_key: str | None  # our dedup key when the incident was opened by our page
    pagerduty_incident_id: str | None
    status: str | None
    acknowledged_by: str | None  # the acting user's name (agent.summary) when a person did it
    agent_id: str | None
    at: datetime | None

    @property
    def is_ack(self) -> bool:
        return self.event_type == ACKNOWLEDGED

    @property
    def is_resolve(self) -> bool:
        return self.event_type == RESOLVED

    @property
    def our_page(self) -> tuple[str, str, int] | None:
        """(incident_id, severity, level) when the key is one of ours, else None."""
        return parse_dedup_key(self.incident_key) if self.incident_key else None


def verify_pagerduty_signature(body: bytes, header: str | None, secrets: list[str]) -> bool:
    """True when one of the `v1=` signatures in `header` is the HMAC of `body` under one of `secrets`."""
    if not header or not secrets:
        return False
    offered = [part.strip()[3:].lower() for part in header.split(",") if part.strip().startswith("v1=")]
    if not offered:
        return False
    expected = [hmac.new(s.encode("utf-8"), body, hashlib.sha256).hexdigest() for s in secrets if s]
    matched = False
    for signature in offered:
        for candidate in expected:
            matched |= hmac.compare_digest(signature.encode(), candidate.encode())  # no early exit
    return matched


def parse_pagerduty_event(body: bytes | str | dict[str, Any]) -> PagerDutyEvent:
    """Read a v3 webhook body (verify the signature first); raise WebhookError when it is not one."""
    data = body if isinstance(body, dict) else _json(body)
    event = data.get("event") if isinstance(data, dict) else None
    if not isinstance(event, dict) or not isinstance(event.get("event_type"), str):
        raise WebhookError("not a PagerDuty v3 webhook: no event.event_type")
    incident = event.get("data") if isinstance(event.get("data"), dict) else {}
    if incident.get("type") not in (None, "incident"):
        incident = {}  # notes, responders, services: no incident key at the top of their data
    agent = event.get("agent") if isinstance(event.get("agent"), dict) else {}
    by_person = agent.get("type") == "user_reference"
    return PagerDutyEvent(
        event_type=event["event_type"],
        event_id=_str(event.get("id")),
        incident_key=_str(incident.get("incident_key")),
        pagerduty_incident_id=_str(incident.get("id")),
        status=_str(incident.get("status")),
        acknowledged_by=_str(agent.get("summary")) if by_person else None,
        agent_id=_str(agent.get("id")) if by_person else None,
        at=_timestamp(event.get("occurred_at")),
    )


def _json(body: bytes | str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookError("not a PagerDuty v3 webhook: the body is not JSON") from None


def _str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
