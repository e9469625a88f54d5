"""`POST /hooks/pagerduty`: PagerDuty v3 webhooks acknowledge incidents (HTTP mode).

The signature (`X-PagerDuty-Signature`, any of PAGERDUTY_WEBHOOK_SECRET's comma-separated secrets) is checked on
the raw body before anything else. `incident.acknowledged` for one of our pages (its `incident_key` is our dedup
key, `INC-42:P0:L1`) acknowledges INC-42 exactly like the button: the pending escalation is cancelled and the
channel reads "acknowledged by Jane Doe in PagerDuty after 4m12s". `incident.resolved` is noted in the timeline
only — closing the PagerDuty alert is not the same as the incident being over. Deliveries are de-duplicated on
the event id (PagerDuty retries). Without a secret the route answers 404.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from bot.errors import UserError
from bot.incidents import escalation
from bot.incidents.alerts import header
from bot.incidents.service import Incidents
from bot.incidents.store import IncidentNotFound
from bot.incidents.timeline import EntryKind
from bot.paging import (
    SIGNATURE_HEADER,
    WebhookError,
    parse_pagerduty_event,
    verify_pagerduty_signature,
)

log = logging.getLogger("bot.incidents")

Response = tuple[int, dict[str, str], bytes]
EVENT_TTL_S = 7 * 86400


def _json(status: int, data: dict[str, Any]) -> Response:
    return status, {"content-type": "application/json"}, json.dumps(data).encode()


def make_route(ctx: Incidents) -> Any:
    async def pagerduty(scope: dict, body: bytes) -> Response:
        secrets = ctx.settings.webhook_secrets()
        if not secrets:
            return _json(404, {"error": "the PagerDuty webhook is off: set PAGERDUTY_WEBHOOK_SECRET"})
        if not verify_pagerduty_signature(body, header(scope, SIGNATURE_HEADER), secrets):
            return _json(401, {"error": "bad or missing X-PagerDuty-Signature"})
        try:
            event = parse_pagerduty_event(body)
        except WebhookError as exc:
            return _json(400, {"error": str(exc)})
        return _json(200, await handle_event(ctx, event))

    return pagerduty


async def handle_event(ctx: Incidents, event: Any) -> dict[str, Any]:
    ours = event.our_page
    if ours is None or not (event.is_ack or event.is_resolve):
        return {"action": "ignored"}
    incident_id = ours[0]
    if event.event_id and not await ctx.rt.redis.set(ctx.store.key("pdevent", event.event_id), 1, nx=True,
                                                     ex=EVENT_TTL_S):
        return {"action": "duplicate", "incident": incident_id}
    actor = event.acknowledged_by or "PagerDuty"
    if event.is_resolve:
        await ctx.timeline.record(incident_id, EntryKind.PAGE_RESOLVED, entry_id=f"pd:{event.event_id or event.incident_key}",
                                  actor=actor, text=f"PagerDuty alert {event.incident_key} resolved",
                                  data={"dedup_key": event.incident_key,
                                        "pagerduty_incident": event.pagerduty_incident_id})
        return {"action": "noted", "incident": incident_id}
    try:
        result = await escalation.acknowledge(ctx, incident_id, actor, "pagerduty")
    except (IncidentNotFound, UserError) as exc:
        log.info("PagerDuty ack for %s ignored: %s", incident_id, exc)
        return {"action": "ignored", "incident": incident_id}
    return {"action": "already acknowledged" if result.already else "acknowledged", "incident": incident_id}
