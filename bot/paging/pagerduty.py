"""PagerDuty through the Events API v2: trigger, acknowledge and resolve one alert per page.

Contract (https://events.pagerduty.com/v2/enqueue, JSON, the 32-character `routing_key` in the body is the only
credential): `event_action` trigger | acknowledge | resolve; a trigger carries `payload.summary` (≤ 1024 chars),
`payload.source` and `payload.severity`, plus `custom_details`, `links` to the incident channel and our
`dedup_key`. The same `dedup_key` on the same routing key updates the open alert instead of opening another, so
a retried job never pages twice.

Severity mapping (the bot's P0–P3 → PagerDuty `payload.severity`):

    P0 → critical    P1 → error    P2 → warning    P3 → info

PagerDuty derives urgency from it: critical/error are high urgency, warning/info are LOW urgency, and low-urgency
incidents cannot escalate inside PagerDuty — one reason the bot runs its own escalation timers. When the policy
sets an urgency that disagrees with the severity, the urgency wins across that boundary: a high-urgency P2/P3
page is sent as `error`, a low-urgency P0/P1 page as `warning`.

Answers: 202 → ok. 400 → not retried; the `errors` list becomes the sentence ("PagerDuty rejected the page:
Invalid routing key"). 429, 5xx, timeouts and connection errors → bounded retries with backoff, honouring
Retry-After (a 429 body may not be JSON), then a plain error. Every request has a timeout. The routing key is
never logged and never appears in an error (it is redacted even if PagerDuty were to echo it).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Annotated, Any

from msgspec.structs import force_setattr

from bot.paging.providers import (
    HttpAnswer,
    HttpProvider,
    Page,
    PageResult,
    RetrySpec,
    format_elapsed,
    page_urgency,
    redact,
)
from checks.schema import HttpUrl, Meta, Secret, Strict

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

DEFAULT_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
SUMMARY_MAX = 1024
EVENT_MAX_BYTES = 512 * 1024
DETAIL_TEXT_MAX = 8000  # long status updates are cut in custom_details; the channel has the full text
DEDUP_KEY_MAX = 255
SEVERITY_MAP = {"P0": "critical", "P1": "error", "P2": "warning", "P3": "info"}
_HIGH_URGENCY = {"critical", "error"}
_ACTION_NOUN = {"trigger": "the page", "acknowledge": "the acknowledgement", "resolve": "the resolve"}


class PagerDutyConfig(Strict):
    """Built by the paging policy from the file's settings and the key from the environment (never the file)."""

    routing_key: Secret  # a Secret: never in a repr, a log line or an error
    events_url: HttpUrl = HttpUrl.parse(DEFAULT_EVENTS_URL)
    timeout_s: Annotated[float, Meta(gt=0, le=60)] = 5.0
    retry: RetrySpec = RetrySpec()
    # The Events API's documented budget per routing key, about 120 events a minute: pages beyond it wait their
    # turn (bot/queue/pacing.py). None: pace only on 429s.
    rate_limit: Annotated[int, Meta(ge=1, le=100_000)] | None = 120
    rate_window_s: Annotated[float, Meta(gt=0, le=3600)] = 60.0
    source: Annotated[str, Meta(min_length=1, max_length=255)] = "chatops-incident-bot"

    def __post_init__(self) -> None:
        # Runs when built in code too, so a key read from the environment is checked where it is put in.
        key = self.routing_key.get_secret_value().strip()
        if len(key) != 32:
            raise ValueError("routing_key: must be a 32-character Events API v2 integration key")  # never the value
        force_setattr(self, "routing_key", Secret(key))


def pagerduty_severity(severity: str, urgency: str | None = None) -> str:
    """The PagerDuty `payload.severity` for a page (see the module docstring for why urgency may override)."""
    mapped = SEVERITY_MAP.get(severity, "critical")
    if urgency == "high" and mapped not in _HIGH_URGENCY:
        return "error"
    if urgency == "low" and mapped in _HIGH_URGENCY:
        return "warning"
    return mapped


class PagerDutyProvider(HttpProvider):
    """Thin adapter: builds Events v2 bodies, sends them with bounded retries, reads the answer."""

    kind = "pagerduty"
    config: PagerDutyConfig

    def __init__(self, config: PagerDutyConfig, *, name: str = "pagerduty",
                 client: aiohttp.ClientSession | None = None) -> None:
        super().__init__(config, name=name, client=client)

    async def trigger(self, page: Page) -> PageResult:
        return await self._send("trigger", page.dedup_key, self.trigger_body(page))

    async def acknowledge(self, incident_id: str, level: int, dedup_key: str) -> PageResult:
        return await self._send("acknowledge", dedup_key, self._body("acknowledge", dedup_key))

    async def resolve(self, incident_id: str, level: int, dedup_key: str) -> PageResult:
        return await self._send("resolve", dedup_key, self._body("resolve", dedup_key))

    def trigger_body(self, page: Page) -> dict[str, Any]:
        """The Events v2 trigger for a page (public so tests and dry runs can inspect it without sending)."""
        body = self._body("trigger", page.dedup_key)
        body["payload"] = {
            "summary": _cut(f"[{page.severity}] {page.incident_id}: {' '.join(page.title.split())}", SUMMARY_MAX),
            "source": self.config.source,
            "severity": pagerduty_severity(page.severity, page_urgency(page)),
            "component": page.incident_id,
            "group": f"escalation-level-{page.level}",
            "class": "incident",
            "custom_details": _custom_details(page),
        }
        if page.link:
            body["links"] = [{"href": page.link, "text": f"Slack channel for {page.incident_id}"}]
            body["client"], body["client_url"] = "Slack incident channel", page.link
        return _within_size_limit(body)

    def _body(self, action: str, dedup_key: str) -> dict[str, Any]:
        return {
            "routing_key": self.config.routing_key.get_secret_value(),
            "event_action": action,
            "dedup_key": dedup_key[:DEDUP_KEY_MAX],
        }

    async def _send(self, action: str, dedup_key: str, body: dict[str, Any]) -> PageResult:
        return await self._post(action, dedup_key, str(self.config.events_url), body)

    def _secret(self) -> str:
        return self.config.routing_key.get_secret_value()

    def _result(self, action: str, answer: HttpAnswer) -> PageResult:
        noun = _ACTION_NOUN[action]
        body = answer.body if isinstance(answer.body, dict) else {}
        if answer.status == 202:
            return PageResult(self.name, True, provider_ref=body.get("dedup_key"))
        if answer.failure is not None:
            error = f"PagerDuty did not take {noun} after {answer.tries} tries (last: {answer.failure})"
        elif answer.status == 400:
            errors = [str(e) for e in body.get("errors") or []] or [str(body.get("message") or "invalid event")]
            error = f"PagerDuty rejected {noun}: {'; '.join(errors)}"
        else:
            error = f"PagerDuty refused {noun} (HTTP {answer.status})"
        return PageResult(self.name, False, error=redact(error, self.config.routing_key.get_secret_value()))



def _custom_details(page: Page) -> dict[str, Any]:
    details: dict[str, Any] = {"incident": page.incident_id, "severity": page.severity, "level": page.level,
                               "summary": _cut(page.summary, DETAIL_TEXT_MAX)}
    details.update({k: v for k, v in page.details.items() if v is not None})
    if isinstance(details.get("last_update"), str):
        details["last_update"] = _cut(details["last_update"], DETAIL_TEXT_MAX)
    if "elapsed_s" in details:
        details["running_for"] = format_elapsed(details["elapsed_s"])
    return json.loads(json.dumps(details, default=str))  # datetimes and the like become strings


def _within_size_limit(body: dict[str, Any]) -> dict[str, Any]:
    """PagerDuty refuses events of 512 KB or more; the page matters more than its details."""
    if len(json.dumps(body).encode()) < EVENT_MAX_BYTES - 1024:
        return body
    details = body["payload"]["custom_details"]
    body["payload"]["custom_details"] = {"incident": details.get("incident"), "severity": details.get("severity"),
                                         "note": "details too large for PagerDuty; see the Slack channel"}
    return body


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
