"""Opsgenie through its REST Alert API: create, acknowledge and close one alert per page.

LEGACY: Atlassian ended new Opsgenie sales in June 2025 and the REST API stops working on 2027-04-05. Keep this
adapter for teams still on it; new set-ups should page through PagerDuty or Slack DMs.

Contract: `Authorization: GenieKey <key>`; `POST /v2/alerts` with `message` (≤ 130 chars, required), `alias`
(our dedup key: Opsgenie folds a create with the alias of an open alert into that alert instead of notifying
again), `description`, `details`, `tags`, `priority`, `responders`. Acknowledge is
`POST /v2/alerts/{alias}/acknowledge?identifierType=alias`, close is `…/close?identifierType=alias`. All three
are asynchronous: 202 with a `requestId` (kept as the page's `provider_ref`).

Priority mapping (the bot's P0–P3 → Opsgenie P1 highest … P5):

    P0 → P1    P1 → P2    P2 → P3    P3 → P4        (P5 is never used)

Opsgenie has no urgency; the policy's urgency does not change the priority.

Responders come from `Page.targets`, but only targets that name an Opsgenie responder explicitly:
`team:<name>`, `user:<username>`, `escalation:<name>`, `schedule:<name>` (a UUID after the colon is sent as an
`id`, anything else as `name`, or `username` for users), and a bare e-mail address is a user. Everything else
— Slack ids in particular — is ignored, so one level can list Slack users and an Opsgenie team side by side.
Without responders the alert goes to whatever the API key's integration routes it to.

Answers: 202 → ok; 429 (`X-RateLimit-State: THROTTLED`), 5xx, timeouts and connection errors → bounded retries
with backoff; other answers → not retried, Opsgenie's message becomes the sentence. The API key is never logged
and never appears in an error.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

from msgspec.structs import force_setattr

from bot.paging.providers import (
    HttpAnswer,
    HttpProvider,
    Page,
    PageResult,
    RetrySpec,
    format_elapsed,
    redact,
)
from checks.schema import HttpUrl, Meta, Secret, Strict

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.opsgenie.com"
MESSAGE_MAX = 130
ALIAS_MAX = 512
DESCRIPTION_MAX = 15000
DETAIL_VALUE_MAX = 1000
RESPONDERS_MAX = 50
PRIORITY_MAP = {"P0": "P1", "P1": "P2", "P2": "P3", "P3": "P4"}
RESPONDER_TYPES = ("team", "user", "escalation", "schedule")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_EMAIL = re.compile(r"^[^@\s:]+@[^@\s]+\.[^@\s]+$")
_ACTION_NOUN = {"create": "the page", "acknowledge": "the acknowledgement", "close": "the close"}


class OpsgenieConfig(Strict):
    """Built by the paging policy from the file's settings and the key from the environment (never the file)."""

    api_key: Secret  # a Secret: never in a repr, a log line or an error
    api_url: HttpUrl = HttpUrl.parse(DEFAULT_API_URL)  # https://api.eu.opsgenie.com for EU accounts
    timeout_s: Annotated[float, Meta(gt=0, le=60)] = 5.0
    retry: RetrySpec = RetrySpec()
    # Opsgenie's limits depend on the plan (Alert domain, a token bucket): set your plan's figure to pace ahead of
    # it (bot/queue/pacing.py). None: pace only on 429s (`X-RateLimit-State: THROTTLED`).
    rate_limit: Annotated[int, Meta(ge=1, le=100_000)] | None = None
    rate_window_s: Annotated[float, Meta(gt=0, le=3600)] = 60.0
    source: Annotated[str, Meta(min_length=1, max_length=100)] = "chatops-incident-bot"

    def __post_init__(self) -> None:
        # Runs when built in code too, so a key read from the environment is checked where it is put in.
        key = self.api_key.get_secret_value().strip()
        if not key:
            raise ValueError("api_key: must not be empty")
        force_setattr(self, "api_key", Secret(key))


def opsgenie_responders(targets: tuple[str, ...] | list[str]) -> list[dict[str, str]]:
    """Opsgenie responders named by `targets` (rules in the module docstring); other targets are skipped."""
    responders: list[dict[str, str]] = []
    for target in targets:
        kind, sep, value = target.partition(":")
        if not sep and _EMAIL.match(target):
            kind, value = "user", target
        elif not sep or kind not in RESPONDER_TYPES or not value:
            continue
        if _UUID.match(value):
            responders.append({"type": kind, "id": value})
        else:
            responders.append({"type": kind, "username" if kind == "user" else "name": value})
    return responders[:RESPONDERS_MAX]


class OpsgenieProvider(HttpProvider):
    """Thin adapter over the Alert API (see the module docstring for the contract and the mappings)."""

    kind = "opsgenie"
    config: OpsgenieConfig

    def __init__(self, config: OpsgenieConfig, *, name: str = "opsgenie",
                 client: aiohttp.ClientSession | None = None) -> None:
        super().__init__(config, name=name, client=client)

    async def trigger(self, page: Page) -> PageResult:
        return await self._send("create", page.dedup_key, self._url("/v2/alerts"), self.create_body(page))

    async def acknowledge(self, incident_id: str, level: int, dedup_key: str) -> PageResult:
        body = {"source": self.config.source, "note": f"Acknowledged in Slack ({incident_id})"}
        return await self._send("acknowledge", dedup_key, self._alias_url(dedup_key, "acknowledge"), body)

    async def resolve(self, incident_id: str, level: int, dedup_key: str) -> PageResult:
        body = {"source": self.config.source, "note": f"Resolved in Slack ({incident_id})"}
        return await self._send("close", dedup_key, self._alias_url(dedup_key, "close"), body)

    def create_body(self, page: Page) -> dict[str, Any]:
        """The create-alert request for a page (public so tests and dry runs can inspect it)."""
        body: dict[str, Any] = {
            "message": _cut(f"[{page.severity}] {page.incident_id}: {' '.join(page.title.split())}", MESSAGE_MAX),
            "alias": page.dedup_key[:ALIAS_MAX],
            "description": _cut(_description(page), DESCRIPTION_MAX),
            "details": _details(page),
            "tags": ["chatops", page.incident_id[:50], page.severity, f"level-{page.level}"],
            "entity": page.incident_id,
            "source": self.config.source,
            "priority": PRIORITY_MAP.get(page.severity, "P1"),
        }
        responders = opsgenie_responders(page.targets)
        if responders:
            body["responders"] = responders
        return body

    def _url(self, path: str) -> str:
        return str(self.config.api_url).rstrip("/") + path

    def _alias_url(self, alias: str, action: str) -> str:
        return self._url(f"/v2/alerts/{quote(alias[:ALIAS_MAX], safe='')}/{action}?identifierType=alias")

    async def _send(self, action: str, dedup_key: str, url: str, body: dict[str, Any]) -> PageResult:
        headers = {"Authorization": f"GenieKey {self.config.api_key.get_secret_value()}"}
        return await self._post(action, dedup_key, url, body, headers)

    def _secret(self) -> str:
        return self.config.api_key.get_secret_value()

    def _result(self, action: str, answer: HttpAnswer) -> PageResult:
        noun = _ACTION_NOUN[action]
        body = answer.body if isinstance(answer.body, dict) else {}
        if answer.status == 202:
            return PageResult(self.name, True, provider_ref=body.get("requestId"))
        if answer.failure is not None:
            error = f"Opsgenie did not take {noun} after {answer.tries} tries (last: {answer.failure})"
        elif answer.status in (400, 422):
            error = f"Opsgenie rejected {noun}: {_opsgenie_message(body)}"
        else:
            reason = body.get("message")
            error = f"Opsgenie refused {noun} (HTTP {answer.status}{': ' + str(reason) if reason else ''})"
        return PageResult(self.name, False, error=redact(error, self.config.api_key.get_secret_value()))



def _opsgenie_message(body: dict[str, Any]) -> str:
    """Opsgenie's field errors (`{"errors": {"message": "..."}}`) read better than its generic message."""
    errors = body.get("errors")
    if isinstance(errors, dict) and errors:
        return "; ".join(str(v) for v in errors.values())
    return str(body.get("message") or "invalid request")


def _description(page: Page) -> str:
    lines = [page.summary]
    status, elapsed = page.details.get("status"), format_elapsed(page.details.get("elapsed_s"))
    if status:
        lines.append(f"Status: {status}")
    if elapsed:
        lines.append(f"Running for: {elapsed}")
    if page.details.get("last_update"):
        lines.append(f"Last update: {page.details['last_update']}")
    checks = page.details.get("failing_checks") or []
    if checks:
        lines.append("Failing checks:\n" + "\n".join(f"- {c}" for c in checks))
    if page.link:
        lines.append(f"Slack channel: {page.link}")
    return "\n\n".join(str(line) for line in lines if line)


def _details(page: Page) -> dict[str, str]:
    """Opsgenie details are a string-to-string map."""
    details = {"incident": page.incident_id, "severity": page.severity, "level": str(page.level)}
    for key, value in page.details.items():
        if value is None:
            continue
        text = ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
        details[str(key)[:100]] = _cut(text, DETAIL_VALUE_MAX)
    if page.link:
        details["slack_channel"] = page.link
    return details


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
