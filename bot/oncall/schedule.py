"""Schedules as written in ONCALL_FILE: validated structs, every error naming its path.

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

from bot.settings import ConfigError
from checks.schema import Meta, Strict, ValidationError, describe, field, parse, replace

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_START = dt.date(2024, 1, 1)
_SLACK_ID = re.compile(r"^[UWS][A-Z0-9]{2,}$")  # as the paging policy and the DM provider read them
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_SERVICE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")  # as the services file names them
BY_SERVICE = "by_service"  # `{schedule: by_service}` in a policy level: the incident's service's schedule
_EVERY = re.compile(r"^(\d+)\s*([hdw])$")
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_UNIT_HOURS = {"h": 1, "d": 24, "w": 168}

# The value types below are read from the file's text by `from_data` (checks/schema.py calls it), so an error says
# what to write and names the field it is in.


class Member(str):
    """A Slack user or user group id: U0123ABCD, S0123ABCD."""

    __slots__ = ()

    @classmethod
    def from_data(cls, value: Any) -> Member:
        if not isinstance(value, str) or not _SLACK_ID.match(value):
            raise ValueError(f"expected a Slack user or user group id like U0123ABCD or S0123ABCD, got "
                             f"{str(value)[:40]!r}")
        return cls(value)


class Every(dt.timedelta):
    """A shift's length: `1d`, `1w`, `2w`, `12h`."""

    @classmethod
    def from_data(cls, value: Any) -> Every:
        match = _EVERY.match(str(value).strip().lower())
        if not match or int(match.group(1)) < 1:
            raise ValueError("expected a shift length such as 1d, 1w, 2w or 12h")
        return cls(hours=int(match.group(1)) * _UNIT_HOURS[match.group(2)])

    def to_data(self) -> str:
        hours = int(self / dt.timedelta(hours=1))
        unit = next(unit for unit in "wdh" if hours % _UNIT_HOURS[unit] == 0)
        return f"{hours // _UNIT_HOURS[unit]}{unit}"


class StartDate(dt.date):
    """A rotation's `start`: a date, also written as midnight of it (`2024-02-01T00:00:00`, as files that
    worked before say it)."""

    @classmethod
    def from_data(cls, value: Any) -> StartDate:
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value.strip())
            except ValueError:
                raise ValueError(f"expected a date like 2024-02-01, got {value[:40]!r}") from None
        if isinstance(value, dt.datetime) and value.time() != dt.time(0, 0):
            raise ValueError("expected a date like 2024-02-01, not a time of day")
        if not isinstance(value, dt.date):
            raise ValueError("expected a date like 2024-02-01")
        return cls(value.year, value.month, value.day)

    def to_data(self) -> str:
        return self.isoformat()


def parse_clock(value: Any) -> dt.time:
    match = _CLOCK.match(str(value).strip())
    if not match:
        raise ValueError(f"expected a time of day like 09:00, got {str(value)[:20]!r}")
    return dt.time(int(match.group(1)), int(match.group(2)))


class Clock(dt.time):
    """A local time of day: `09:00`."""

    @classmethod
    def from_data(cls, value: Any) -> Clock:
        clock = parse_clock(value)
        return cls(clock.hour, clock.minute)

    def to_data(self) -> str:
        return f"{self:%H:%M}"


class TimeZone(str):
    """An IANA zone name: Europe/Berlin, UTC."""

    __slots__ = ()

    @classmethod
    def from_data(cls, value: Any) -> TimeZone:
        if not isinstance(value, str):
            raise ValueError(f"expected an IANA time zone name like Europe/Berlin, got {str(value)[:40]!r}")
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value[:40]!r}; use an IANA name like Europe/Berlin") from None
        return cls(value)


def _weekday(value: Any) -> int:
    text = str(value).strip().lower()[:3]
    if text not in WEEKDAYS:
        raise ValueError(f"expected a weekday ({', '.join(WEEKDAYS)}), got {str(value)[:20]!r}")
    return WEEKDAYS.index(text)


class Weekday(int):
    """`mon` … `sun` (any word starting so), read as 0 … 6 like `date.weekday()`."""

    @classmethod
    def from_data(cls, value: Any) -> Weekday:
        return cls(_weekday(value))

    def to_data(self) -> str:
        return WEEKDAYS[self]


class Handoff:
    """When a shift changes hands: `"09:00"` (every `every`, at that local time) or, for whole weeks, `"mon 09:00"`."""

    __slots__ = ("time", "weekday")

    def __init__(self, weekday: int | None, time: dt.time) -> None:
        self.weekday = weekday  # None: every day at `time`
        self.time = time

    @classmethod
    def from_data(cls, value: Any) -> Handoff:
        words = str(value).split()
        if len(words) == 2:
            return cls(weekday=_weekday(words[0]), time=parse_clock(words[1]))
        if len(words) == 1:
            return cls(weekday=None, time=parse_clock(words[0]))
        raise ValueError('expected a handoff like "09:00" or "mon 09:00"')

    def to_data(self) -> str:
        clock = f"{self.time:%H:%M}"
        return clock if self.weekday is None else f"{WEEKDAYS[self.weekday]} {clock}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Handoff) and (other.weekday, other.time) == (self.weekday, self.time)

    def __hash__(self) -> int:
        return hash((self.weekday, self.time))

    def __repr__(self) -> str:
        return f"Handoff({self.to_data()!r})"


class Rotation(Strict):
    every: Every
    handoff: Handoff = Handoff(weekday=None, time=dt.time(9, 0))
    people: Annotated[list[Member], Meta(min_length=1)]
    start: StartDate = StartDate.from_data(DEFAULT_START)
    time_zone: TimeZone | None = None  # the zone its handoffs are wall-clock times in; None: the schedule's

    def __post_init__(self) -> None:
        if self.handoff.weekday is not None and self.every % dt.timedelta(weeks=1):
            raise ValueError("a handoff weekday needs `every` in whole weeks (1w, 2w); use a time alone, "
                             'like "09:00"')

    def first_handoff(self) -> dt.datetime:
        """The local (naive) wall-clock time of handoff 0, the first at or after `start`, in `zone()`."""
        day = self.start
        if self.handoff.weekday is not None:
            day += dt.timedelta(days=(self.handoff.weekday - day.weekday()) % 7)
        return dt.datetime.combine(day, self.handoff.time)

    def zone(self, schedule_zone: ZoneInfo) -> ZoneInfo:
        return ZoneInfo(self.time_zone) if self.time_zone else schedule_zone


class Window(Strict):
    """`{days: [mon, tue, wed, thu, fri], from: "09:00", to: "18:00"}`; `to` ≤ `from` runs past midnight."""

    days: Annotated[list[Weekday], Meta(min_length=1)] = field(default_factory=lambda: list(range(7)))
    start: Clock = field(name="from")
    end: Clock = field(name="to")


class Layer(Strict):
    name: str = ""
    rotation: Rotation
    restrictions: list[Window] = []


class Schedule(Strict):
    name: str = ""
    time_zone: TimeZone
    rotation: Rotation | None = None  # shorthand for `layers: [{rotation: …}]`
    layers: list[Layer] = []
    page_via: str | None = None  # a paging provider name (pagerduty-payments): page through it, not Slack DMs

    def __post_init__(self) -> None:
        if self.rotation is not None and self.layers:
            raise ValueError("give either `rotation` (one layer) or `layers`, not both")
        if self.rotation is None and not self.layers:
            raise ValueError("needs a `rotation` (or `layers`)")

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def all_layers(self) -> list[Layer]:
        if self.rotation is not None:
            return [Layer(name="rotation", rotation=self.rotation)]
        return [layer if layer.name else replace(layer, name=f"layer {i + 1}") for i, layer in enumerate(self.layers)]

    def members(self) -> set[str]:
        return {person for layer in self.all_layers() for person in layer.rotation.people}


class OncallFile(Strict):
    """The file's top level. Its schedules are read one by one (parse_oncall_file), so an error names the schedule:
    msgspec would say `schedules[...]`."""

    schedules: dict[str, Schedule] = {}
    services: dict[str, str] = {}  # service → the schedule paged for its incidents
    default_schedule: str | None = None  # paged by `by_service` for a service `services` does not list

    def routing(self) -> ServiceSchedules:
        return ServiceSchedules(services=self.services, default=self.default_schedule)


class ServiceSchedules(Strict):
    """Which schedule a `{schedule: by_service}` level pages for an incident's service."""

    services: dict[str, str] = {}
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
        raw = _schedule_names(data.get("schedules", {}))
        _check_services(data.get("services", {}))
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        top = parse(OncallFile, {**data, "schedules": {}})
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe(exc, kind=OncallFile)}") from None
    parsed = replace(top, schedules={name: _schedule(name, spec, source) for name, spec in raw.items()})
    _check_references(parsed, source)
    return parsed.schedules, parsed.routing()


def _schedule_names(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("schedules: expected a mapping of schedule names to schedules")
    for name in value:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"schedules: schedule name {str(name)[:40]!r}: use 1-40 lowercase letters, digits, "
                             "- or _")
        if name == BY_SERVICE:
            raise ValueError(f"schedules: schedule name {BY_SERVICE!r} is reserved: a policy level's "
                             f"{{schedule: {BY_SERVICE}}} means the schedule of the incident's service")
    return value


def _check_services(value: Any) -> None:
    """Service names as the services file writes them, each naming a schedule (defined: _check_references)."""
    for service, name in value.items() if isinstance(value, dict) else ():
        if not isinstance(service, str) or not _SERVICE.match(service):
            raise ValueError(f"services: service name {str(service)[:40]!r}: use the name the services file gives it")
        if not isinstance(name, str):
            raise ValueError(f"services.{service}: expected the name of a schedule, got {str(name)[:40]}")


def _schedule(name: str, spec: Any, source: str) -> Schedule:
    try:
        return replace(parse(Schedule, spec), name=name)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe(exc, f'schedules.{name}', Schedule)}") from None


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
