"""`POST /hooks/datadog`: Datadog's Webhooks integration, with the payload template the README gives:

    {"id": "$ID", "alert_id": "$ALERT_ID", "alert_cycle_key": "$ALERT_CYCLE_KEY",
     "alert_transition": "$ALERT_TRANSITION", "alert_title": "$ALERT_TITLE", "title": "$EVENT_TITLE",
     "alert_priority": "$ALERT_PRIORITY", "alert_scope": "$ALERT_SCOPE", "tags": "$TAGS",
     "alert_status": "$ALERT_STATUS", "link": "$LINK", "body": "$TEXT_ONLY_MSG"}

and the custom header `{"X-Chatops-Token": "<DATADOG_WEBHOOK_SECRET>"}` (Datadog signs nothing).

One incident per monitor (`alert_id`) while it is open; each alert is the monitor's scope (`alert_scope`, one
per group of a multi-alert monitor) in one alert cycle (`alert_cycle_key`, which links a trigger to its
recovery). `Recovered` resolves; `No Data` is said in the open incident only; any other transition fires.
Severity from `alert_priority` (P1..P3 as is, others through ALERT_SEVERITY_MAP), service from a `service:<name>`
tag (ALERT_RULES first; rules see the labels `alert_id`, `scope`, `priority`, `title` and each `tag.<name>`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from msgspec.structs import replace

from bot.alerts import auth
from bot.alerts.http import Refused, Request
from bot.incidents.notice import AlertInstance, AlertNotice, AlertSource
from checks.schema import Record

if TYPE_CHECKING:
    from bot.alerts.service import Alerts

RECOVERED, NO_DATA = {"recovered"}, {"no data", "no_data", "nodata"}


class Text(str):
    """A template value: text, or a number where the template left the quotes off (`"alert_id": $ALERT_ID`),
    written as the bot always wrote it (12345, and 1000.0 as 1000) so that a monitor keeps its incident's key."""

    __slots__ = ()

    @classmethod
    def from_data(cls, value: object) -> Text:
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("Expected `str` or a number")
        return cls(int(value) if isinstance(value, float) and value.is_integer() else value)


class Given(Text):
    """A template value that may not be empty."""

    __slots__ = ()

    @classmethod
    def from_data(cls, value: object) -> Given:
        text = Text.from_data(value)
        if not text:
            raise ValueError("Expected `str` of length >= 1")
        return cls(text)


class DatadogEvent(Record):
    id: Text = Text()
    alert_id: Given
    alert_cycle_key: Given  # links a trigger to its recovery: the firing's identity
    alert_transition: Given
    alert_title: Text = Text()
    title: Text = Text()
    alert_priority: Text = Text()
    alert_scope: Text = Text()
    tags: Text = Text()
    alert_status: Text = Text()
    link: Text = Text()
    body: Text = Text()

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:  # plain str from here on: msgspec writes no str subclass (timeline)
            setattr(self, name, str(getattr(self, name)))


def configured(ax: Alerts) -> bool:
    return ax.settings.datadog_webhook_secret is not None


async def authenticate(ax: Alerts, request: Request) -> None:
    s = ax.settings
    secret = s.datadog_webhook_secret.get_secret_value()  # type: ignore[union-attr]
    if not auth.same(request.header(s.datadog_webhook_header), secret):
        raise Refused(401, f"missing or wrong {s.datadog_webhook_header} header")


async def parse(ax: Alerts, request: Request) -> list[AlertNotice]:
    event = request.model(DatadogEvent, "not the documented Datadog payload: ")
    labels = _labels(event)
    title = (event.alert_title or event.title or f"Datadog monitor {event.alert_id}")[:200]
    transition = event.alert_transition.strip().lower()
    status = "resolved" if transition in RECOVERED else "firing"
    notice = AlertNotice(
        AlertSource.DATADOG, f"datadog:{event.alert_id}", status, title,  # type: ignore[arg-type]
        ax.mapping.severity(AlertSource.DATADOG, labels, event.alert_priority),  # type: ignore[arg-type]
        ax.mapping.service(AlertSource.DATADOG, labels, [labels.get("tag.service")]))
    if transition in NO_DATA:
        return [replace(notice, note=f"Datadog: {title} has no data ({event.alert_scope or 'all'})",
                      note_key=f"nodata:{event.alert_cycle_key}:{event.id}")]
    summary = event.alert_status or title
    scope = event.alert_scope or "*"
    instance = AlertInstance(f"{event.alert_id}|{scope}", event.alert_cycle_key, status, summary,  # type: ignore
                             labels, url=event.link)
    return [replace(notice, instances=[instance])]


def _labels(event: DatadogEvent) -> dict[str, str]:
    labels = {"alert_id": event.alert_id, "scope": event.alert_scope, "priority": event.alert_priority,
              "title": event.alert_title or event.title}
    for tag in event.tags.split(","):
        name, _, value = tag.strip().partition(":")
        if name and value:
            labels.setdefault(f"tag.{name}", value)
    return labels
