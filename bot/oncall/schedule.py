"""Schedules as written in ONCALL_FILE: validated models, every error naming its path.

    schedules:
      payments-primary:
        time_zone: Europe/Berlin
        rotation: {every: 1w, handoff: "mon 09:00", people: [U0ALICE, U0BOB]}

`rotation:` is shorthand for one layer. A schedule may instead list `layers:`, each a rotation with optional
`restrictions` (windows in the schedule's time zone); where a later layer's restrictions apply it overrides the
earlier layers. `every` is a length: `1d`, `1w`, `2w`, `12h`, `3d`. `handoff` is a local time (`09:00`) or, for
whole weeks, a weekday and time (`mon 09:00`). `start` (a date) anchors who comes first: the first person takes
the shift that begins on the first handoff at or after `start` (default 2024-01-01, a Monday). A rotation's
handoffs are wall-clock times in the schedule's `time_zone`, or in its own `time_zone` when it names one (a
calendar stamped in UTC imports as `time_zone: UTC`: it hands over at the same UTC time all year).
`page_via: pagerduty-payments` pages the schedule through a configured paging provider instead of Slack DMs.

Which schedule answers for which service (a policy level `{schedule: by_service}` pages it):

    services: {api: payments-primary, search: search-primary}
    default_schedule: payments-primary     # a service not listed, or an incident without a service
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.settings import ConfigError, describe_validation_error

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_START = dt.date(2024, 1, 1)
_SLACK_ID = re.compile(r"^[UWS][A-Z0-9]{2,}$")  # as the paging policy and the DM provider read them
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_SERVICE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")  # as the services file names them
BY_SERVICE = "by_service"  # `{schedule: by_service}` in a policy level: the incident's service's schedule
_EVERY = re.compile(r"^(\d+)\s*([hdw])$")
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_UNIT_HOURS = {"h": 1, "d": 24, "w": 168}


def _member(value: Any) -> Any:
    if not isinstance(value, str) or not _SLACK_ID.match(value):
        raise ValueError(f"expected a Slack user or user group id like U0123ABCD or S0123ABCD, got {value!r}")
    return value


def _every(value: Any) -> Any:
    match = _EVERY.match(str(value).strip().lower())
    if not match or int(match.group(1)) < 1:
        raise ValueError("expected a shift length such as 1d, 1w, 2w or 12h")
    return dt.timedelta(hours=int(match.group(1)) * _UNIT_HOURS[match.group(2)])


def parse_clock(value: Any) -> dt.time:
    match = _CLOCK.match(str(value).strip())
    if not match:
        raise ValueError(f"expected a time of day like 09:00, got {str(value)[:20]!r}")
    return dt.time(int(match.group(1)), int(match.group(2)))


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value[:40]!r}; use an IANA name like Europe/Berlin") from None
    return value


def _weekday(value: Any) -> int:
    text = str(value).strip().lower()[:3]
    if text not in WEEKDAYS:
        raise ValueError(f"expected a weekday ({', '.join(WEEKDAYS)}), got {str(value)[:20]!r}")
    return WEEKDAYS.index(text)


Member = Annotated[str, BeforeValidator(_member)]
Every = Annotated[dt.timedelta, BeforeValidator(_every)]
Clock = Annotated[dt.time, BeforeValidator(parse_clock)]
Weekday = Annotated[int, BeforeValidator(_weekday)]
TimeZone = Annotated[str, AfterValidator(_zone)]


class _Strict(BaseModel):
    # defer_build: without ONCALL_FILE no schedule is ever validated; building them was ~4 ms of every start
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)


class Handoff(_Strict):
    weekday: int | None  # None: every day at `time`
    time: dt.time


def _handoff(value: Any) -> Any:
    if isinstance(value, Handoff):
        return value
    words = str(value).split()
    if len(words) == 2:
        return Handoff(weekday=_weekday(words[0]), time=parse_clock(words[1]))
    if len(words) == 1:
        return Handoff(weekday=None, time=parse_clock(words[0]))
    raise ValueError('expected a handoff like "09:00" or "mon 09:00"')


class Rotation(_Strict):
    every: Every
    handoff: Annotated[Handoff, BeforeValidator(_handoff)] = Handoff(weekday=None, time=dt.time(9, 0))
    people: list[Member] = Field(min_length=1)
    start: dt.date = DEFAULT_START
    time_zone: TimeZone | None = None  # the zone its handoffs are wall-clock times in; None: the schedule's

    @model_validator(mode="after")
    def _weekday_needs_weeks(self) -> Rotation:
        if self.handoff.weekday is not None and self.every % dt.timedelta(weeks=1):
            raise ValueError("a handoff weekday needs `every` in whole weeks (1w, 2w); use a time alone, "
                             'like "09:00"')
        return self

    def first_handoff(self) -> dt.datetime:
        """The local (naive) wall-clock time of handoff 0, the first at or after `start`, in `zone()`."""
        day = self.start
        if self.handoff.weekday is not None:
            day += dt.timedelta(days=(self.handoff.weekday - day.weekday()) % 7)
        return dt.datetime.combine(day, self.handoff.time)

    def zone(self, schedule_zone: ZoneInfo) -> ZoneInfo:
        return ZoneInfo(self.time_zone) if self.time_zone else schedule_zone


class Window(_Strict):
    """`{days: [mon, tue, wed, thu, fri], from: "09:00", to: "18:00"}`; `to` ≤ `from` runs past midnight."""

    days: list[Weekday] = Field(default_factory=lambda: list(range(7)), min_length=1)
    start: Clock = Field(alias="from")
    end: Clock = Field(alias="to")


class Layer(_Strict):
    name: str = ""
    rotation: Rotation
    restrictions: list[Window] = []


class Schedule(_Strict):
    name: str = ""
    time_zone: TimeZone
    rotation: Rotation | None = None  # shorthand for `layers: [{rotation: …}]`
    layers: list[Layer] = []
    page_via: str | None = None  # a paging provider name (pagerduty-payments): page through it, not Slack DMs

    @model_validator(mode="after")
    def _one_layer_at_least(self) -> Schedule:
        if self.rotation is not None and self.layers:
            raise ValueError("give either `rotation` (one layer) or `layers`, not both")
        if self.rotation is None and not self.layers:
            raise ValueError("needs a `rotation` (or `layers`)")
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def all_layers(self) -> list[Layer]:
        if self.rotation is not None:
            return [Layer(name="rotation", rotation=self.rotation)]
        return [layer if layer.name else layer.model_copy(update={"name": f"layer {i + 1}"})
                for i, layer in enumerate(self.layers)]

    def members(self) -> set[str]:
        return {person for layer in self.all_layers() for person in layer.rotation.people}


class OncallFile(_Strict):
    schedules: dict[str, Schedule] = Field(default_factory=dict)
    services: dict[str, str] = Field(default_factory=dict)  # service → the schedule paged for its incidents
    default_schedule: str | None = None  # paged by `by_service` for a service `services` does not list

    @field_validator("schedules", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name in value:
                if not isinstance(name, str) or not _NAME.match(name):
                    raise ValueError(f"schedule name {str(name)[:40]!r}: use 1-40 lowercase letters, digits, - or _")
                if name == BY_SERVICE:
                    raise ValueError(f"schedule name {BY_SERVICE!r} is reserved: a policy level's "
                                     f"{{schedule: {BY_SERVICE}}} means the schedule of the incident's service")
        return value

    @field_validator("services", mode="before")
    @classmethod
    def _service_names(cls, value: Any) -> Any:
        for service in value if isinstance(value, dict) else ():
            if not isinstance(service, str) or not _SERVICE.match(service):
                raise ValueError(f"service name {str(service)[:40]!r}: use the name the services file gives it")
        return value

    def routing(self) -> ServiceSchedules:
        return ServiceSchedules(services=self.services, default=self.default_schedule)


class ServiceSchedules(_Strict):
    """Which schedule a `{schedule: by_service}` level pages for an incident's service."""

    services: dict[str, str] = Field(default_factory=dict)
    default: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.services) or self.default is not None

    def schedule_for(self, service: str | None) -> str | None:
        """The service's own schedule, else the default one, else None (nobody to page from a schedule)."""
        return self.services.get(service or "") or self.default


def parse_oncall_file(data: Any, *, source: str = "on-call file") -> tuple[dict[str, Schedule], ServiceSchedules]:
    """Named schedules and the service routing from parsed YAML; a ConfigError says `<source>: <path>: <what>`
    (`schedules.<name>.<field>`, `services.<service>`, `default_schedule`)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with `schedules:` at the top level")
    try:
        parsed = OncallFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc)}") from None
    _check_references(parsed, source)
    schedules = {name: s.model_copy(update={"name": name}) for name, s in parsed.schedules.items()}
    return schedules, parsed.routing()


def _check_references(parsed: OncallFile, source: str) -> None:
    """Every schedule named by `services` or `default_schedule` is defined: otherwise it would page nobody."""
    named = [(f"services.{service}", name) for service, name in parsed.services.items()]
    named += [("default_schedule", parsed.default_schedule)] if parsed.default_schedule is not None else []
    defined = ", ".join(sorted(parsed.schedules)) or "none"
    for where, name in named:
        if name not in parsed.schedules:
            raise ConfigError(f"{source}: {where}: no schedule {str(name)[:40]!r} is defined under `schedules:` "
                              f"(defined: {defined})")


def parse_schedules(data: Any, *, source: str = "on-call file") -> dict[str, Schedule]:
    """Named schedules from parsed YAML; a ConfigError says `<source>: schedules.<name>.<field>: <what>`."""
    return parse_oncall_file(data, source=source)[0]
