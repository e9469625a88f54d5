"""The alert sources: one row each — the route, whether it is configured, how a request is authenticated and
how it is parsed into notices, which the incident intake (bot/incidents/alerts.py) takes.

| source       | route                    | auth                                                 | module          |
|--------------|--------------------------|------------------------------------------------------|-----------------|
| alertmanager | POST /hooks/alertmanager | bearer token or secret header (ALERTMANAGER_TOKEN)   | alertmanager    |
| cloudwatch   | POST /hooks/sns          | SNS message signature (v1/v2) + topic allow-list     | sns, cloudwatch |
| grafana      | POST /hooks/grafana      | basic auth or HMAC (hmacConfig)                      | grafana         |
| datadog      | POST /hooks/datadog      | shared secret in a custom header                     | datadog         |
| generic      | POST /hooks/generic      | HMAC-SHA256 of "<timestamp>.<body>", 5-minute window | generic         |

A source's module (its payload models, and the incident intake with it) is imported with the first request to its
route: every HTTP process serves every route, and most deployments configure one source or none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import import_module
from typing import TYPE_CHECKING, Protocol

import msgspec

from bot.alerts.http import Refused, Reply, Request, Response, json_response
from bot.errors import UserError
from bot.incidents.notice import AlertNotice, AlertSource

if TYPE_CHECKING:
    from bot.alerts.service import Alerts


class SourceModule(Protocol):
    """What a source's module provides (bot/alerts/alertmanager.py is one)."""

    def configured(self, ax: Alerts) -> bool: ...
    async def authenticate(self, ax: Alerts, request: Request) -> None: ...
    async def parse(self, ax: Alerts, request: Request) -> list[AlertNotice] | Reply: ...


class Source(msgspec.Struct, frozen=True):
    kind: AlertSource
    path: str
    off: str  # what to set to turn the source on (the 404 says it)
    module: str  # under bot.alerts: its configured(ax), authenticate(ax, request) and parse(ax, request)
    max_body: int | None = None  # bytes; None: the server's webhook limit (sized for an Alertmanager storm)

    @property
    def handler(self) -> SourceModule:
        """The source's module, imported the first time its route is asked (then sys.modules has it)."""
        return import_module(f"bot.alerts.{self.module}")  # type: ignore[return-value]


SOURCES = (
    Source(AlertSource.ALERTMANAGER, "/hooks/alertmanager", "ALERTMANAGER_TOKEN", "alertmanager"),
    Source(AlertSource.CLOUDWATCH, "/hooks/sns", "SNS_TOPIC_ARNS", "sns",
           max_body=1024 * 1024),  # an SNS message is at most 256 KB; the envelope and escaping add some
    Source(AlertSource.GRAFANA, "/hooks/grafana", "GRAFANA_WEBHOOK_PASSWORD or GRAFANA_WEBHOOK_HMAC_SECRET", "grafana"),
    Source(AlertSource.DATADOG, "/hooks/datadog", "DATADOG_WEBHOOK_SECRET", "datadog"),
    Source(AlertSource.GENERIC, "/hooks/generic", "GENERIC_WEBHOOK_SECRET", "generic"),
)


def make_route(ax: Alerts, source: Source) -> Callable[[dict, bytes], Awaitable[Response]]:
    async def route(scope: dict, body: bytes) -> Response:
        handler = source.handler
        if not handler.configured(ax):
            return json_response(404, {"error": f"the {source.kind.title} webhook is off: set {source.off}"})
        request = Request(scope, body)
        try:
            await handler.authenticate(ax, request)
            parsed = await handler.parse(ax, request)
            if isinstance(parsed, Reply):
                return json_response(parsed.status, parsed.data)
            return json_response(200, await _take(ax, parsed))
        except Refused as exc:
            return json_response(exc.status, {"error": str(exc)})
        except UserError as exc:
            return json_response(409, {"error": str(exc)})

    if source.max_body is not None:
        route.max_body = source.max_body  # type: ignore[attr-defined]  # read by bot.app.http_server
    return route


async def _take(ax: Alerts, notices: list[AlertNotice]) -> dict:
    from bot.incidents import alerts as intake  # with the first alert, as the source's module

    answers = [await intake.take(ax.incidents, notice) for notice in notices]
    return answers[0] if len(answers) == 1 else {"results": answers}
