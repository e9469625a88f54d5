"""Previews and requests, stored as JSON in Redis under `<ns>:fix:`.

A preview is what a click on an offer showed (the offer and where it came from), kept until the request TTL; a
request is what someone asked to run: the exact plan they previewed, who asked, until when it may be approved,
who decided, and once run its result. Requests are kept a day (the undo button reads the result).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from bot.queue.replies import as_text
from checks.fixes import FixOffer, FixPlan, FixResult
from checks.schema import Record, dump, dump_json, field, parse_json

RECORD_TTL_S = 86400
Status = Literal["pending", "approved", "denied", "done"]


class Origin(Record):
    """Where an offer was made: the channel (the incident's, or the one a diagnosis ran in), the service."""

    channel: str
    service: str = ""
    incident_id: str = ""
    run_id: str = ""
    thread_ts: str = ""


class Preview(Record):
    offer: dict[str, Any]
    origin: Origin

    def fix_offer(self) -> FixOffer:
        return FixOffer(**self.offer)


class FixRequest(Record):
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    label: str
    plan: dict[str, Any]
    origin: Origin
    requester: str
    severity: str | None = None  # the incident's when requested; None outside an incident
    created_at: float = field(default_factory=time.time)
    expires_at: float
    status: Status = "pending"
    decided_by: str | None = None
    message_ts: str | None = None  # the approval message, redrawn when decided
    result: dict[str, Any] | None = None
    rediagnosis: str | None = None  # the run id of the re-check after the fix

    def fix_plan(self) -> FixPlan:
        return FixPlan(**self.plan)

    def fix_result(self) -> FixResult | None:
        if self.result is None:
            return None
        reverse = self.result.get("reverse")
        return FixResult(**{**self.result, "reverse": FixOffer(**reverse) if reverse else None})

    @property
    def expired(self) -> bool:
        return self.status == "pending" and time.time() > self.expires_at


def as_dict(value: Any) -> dict[str, Any]:
    return dump(value)  # an offer, plan or result (Structs) as the JSON-ready dict stored with a record


class Records:
    def __init__(self, redis: Any, key: Any, decision_key: Any) -> None:
        self.redis, self._key = redis, key  # `key(*parts)`: the runtime's namespaced key
        # `decision_key(request_id)`: in the queue's hash slot, so an approval claims it and queues the job in one
        # script (Queue.enqueue_claimed); its value is "approved:<user>:<nonce>" or "denied:<user>:<nonce>"
        self.decision_key = decision_key

    async def save_preview(self, preview: Preview, ttl_s: float) -> str:
        token = uuid.uuid4().hex[:16]
        await self.redis.set(self._key("fix", "preview", token), dump_json(preview), ex=int(ttl_s))
        return token

    async def preview(self, token: str) -> Preview | None:
        raw = await self.redis.get(self._key("fix", "preview", token))
        return parse_json(Preview, raw) if raw else None

    async def save(self, request: FixRequest) -> None:
        await self.redis.set(self._key("fix", "req", request.id), dump_json(request), ex=RECORD_TTL_S)

    async def get(self, request_id: str) -> FixRequest | None:
        raw = await self.redis.get(self._key("fix", "req", request_id))
        return parse_json(FixRequest, raw) if raw else None

    async def deny(self, request_id: str, user: str) -> bool:
        """True when this call took the decision (nobody approved or denied before)."""
        return await self.decide(request_id, "denied", user)

    async def decide(self, request_id: str, verdict: str, user: str) -> bool:
        """True when this call took the decision. An approval from Slack takes it with its job instead
        (Queue.enqueue_claimed); `chatops fix --yes` runs in its own process and takes it here."""
        return bool(await self.redis.set(self.decision_key(request_id), f"{verdict}:{user}:{uuid.uuid4().hex[:8]}",
                                          nx=True, ex=RECORD_TTL_S))

    async def decision(self, request_id: str) -> tuple[str, str] | None:
        """("approved" or "denied", who) once someone decided; the request record may not say so yet."""
        raw = await self.redis.get(self.decision_key(request_id))
        if not raw:
            return None
        verdict, user, _ = as_text(raw).split(":", 2)
        return verdict, user

    async def claim(self, request_id: str, what: str) -> bool:
        """True for the first caller only: one decision per request, one attempt marker per request."""
        return bool(await self.redis.set(self._key("fix", what, request_id), "1", nx=True, ex=RECORD_TTL_S))
