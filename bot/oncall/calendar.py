"""iCalendar (RFC 5545), both ways, written by hand for the small subset a rotation needs.

Export: `feed(schedule, shifts)` — one VEVENT per shift, times in UTC, text escaped (\\ ; , newline) and lines
folded at 75 octets with CRLF endings.

Import: a schedule in ONCALL_FILE may say `ical: <file path or https URL>` instead of `rotation:`. Supported:
VEVENTs with DTSTART/DTEND (UTC `…Z`, `TZID=<IANA zone>`, or floating local times, read in the schedule's zone),
a Slack id (U…/S…) in SUMMARY (or DESCRIPTION) naming who is on call, and `RRULE:FREQ=WEEKLY[;INTERVAL=n]`.
The events must form a rotation: equal length, back to back, each repeating every (events × length). That is
turned into `rotation: {every, handoff, people, start}`. An event repeats at the same wall-clock time of the zone
its DTSTART is written in (RFC 5545 3.3.10): a `TZID=Europe/Berlin` series at 09:00 Berlin time all year, a UTC
(`…Z`) series at the same UTC time, so across a DST change it moves an hour on the local clock. The rotation keeps
that zone (`time_zone: UTC` on the rotation when it is not the schedule's); events written in different zones
are refused. Anything else (EXDATE, RDATE, BYDAY lists, COUNT/UNTIL,
other frequencies) is refused with a sentence saying so, never guessed.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.oncall.schedule import WEEKDAYS, Schedule
from bot.oncall.timeline import Shift
from bot.settings import ConfigError

FETCH_TIMEOUT_S = 10.0
FETCH_MAX_BYTES = 1_000_000
MAX_INTERVAL_WEEKS = 52  # a rotation that repeats less than yearly is not one
_SLACK_ID = re.compile(r"\b([US][A-Z0-9]{2,})\b")
_STAMP = "%Y%m%dT%H%M%SZ"
_UTC_ZONE = ZoneInfo("UTC")


# ------------------------------------------------------------------------------------------------ export

def escape_text(value: str) -> str:
    """TEXT value escaping (RFC 5545 3.3.11)."""
    return (value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
            .replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n"))


def fold(line: str) -> str:
    """Lines longer than 75 octets continue on the next line after CRLF + one space (3.1), never inside a
    UTF-8 character."""
    out, current = [], b""
    for char in line:
        encoded = char.encode()
        limit = 75 if not out else 74  # continuation lines start with the space
        if len(current) + len(encoded) > limit:
            out.append(current.decode())
            current = b""
        current += encoded
    out.append(current.decode())
    return "\r\n ".join(out)


def _utc(instant: dt.datetime) -> str:
    return instant.astimezone(dt.timezone.utc).strftime(_STAMP)


def feed(schedule: Schedule, shifts: Iterable[Shift], *, names: dict[str, str] | None = None,
         now: dt.datetime | None = None) -> str:
    """The schedule's shifts as a VCALENDAR; `names` maps Slack ids to display names where known."""
    names = names or {}
    stamp = _utc(now or dt.datetime.now(dt.timezone.utc))
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//chatops incident bot//on call//EN", "CALSCALE:GREGORIAN",
             "METHOD:PUBLISH", f"X-WR-CALNAME:{escape_text(f'On call: {schedule.name}')}",
             f"X-WR-TIMEZONE:{schedule.time_zone}"]
    for shift in shifts:
        who = shift.user or "nobody"
        label = names.get(who, who)
        summary = f"On call: {label}" + (" (override)" if shift.override else "")
        lines += ["BEGIN:VEVENT", f"UID:{schedule.name}-{int(shift.start.timestamp())}@oncall.chatops",
                  f"DTSTAMP:{stamp}", f"DTSTART:{_utc(shift.start)}", f"DTEND:{_utc(shift.end)}",
                  f"SUMMARY:{escape_text(summary)}",
                  f"DESCRIPTION:{escape_text(f'{schedule.name}, {shift.layer}: {who}')}",
                  "TRANSP:TRANSPARENT", "END:VEVENT"]
    lines.append("END:VCALENDAR")
    return "".join(fold(line) + "\r\n" for line in lines)


# ------------------------------------------------------------------------------------------------ import

def expand_ical(data: Any, *, base: Path, source: str) -> Any:
    """`schedules.<name>.ical: <path or URL>` replaced by the `rotation:` the calendar describes."""
    if not isinstance(data, dict) or not isinstance(data.get("schedules"), dict):
        return data
    out = dict(data)
    out["schedules"] = {name: _expanded(spec, base, f"{source}: schedules.{name}")
                        for name, spec in data["schedules"].items()}
    return out


def _expanded(spec: Any, base: Path, where: str) -> Any:
    if not isinstance(spec, dict) or "ical" not in spec:
        return spec
    rest = {k: v for k, v in spec.items() if k != "ical"}
    if "rotation" in rest or "layers" in rest:
        raise ConfigError(f"{where}.ical: give either `ical` or `rotation`/`layers`, not both")
    zone = rest.get("time_zone")
    try:
        text = read_calendar(str(spec["ical"]), base)
        rotation, found_zone = rotation_from_ical(text, zone)
    except ValueError as exc:
        raise ConfigError(f"{where}.ical: {exc}") from None
    return {**rest, "time_zone": zone or found_zone, "rotation": rotation}


def read_calendar(location: str, base: Path) -> str:
    if location.startswith(("https://", "http://")):
        return _fetch(location)
    path = (base / location).expanduser()
    try:
        raw = path.read_bytes()[:FETCH_MAX_BYTES + 1]
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > FETCH_MAX_BYTES:
        raise ValueError(f"{path} is larger than {FETCH_MAX_BYTES // 1000} kB")
    return raw.decode("utf-8", errors="replace")


def _fetch(url: str) -> str:
    import httpx  # only a schedule imported from a URL fetches: not every process

    body = b""
    try:
        with httpx.stream("GET", url, timeout=FETCH_TIMEOUT_S, follow_redirects=True) as response:
            if response.status_code != 200:
                raise ValueError(f"the calendar URL answered HTTP {response.status_code}")
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > FETCH_MAX_BYTES:
                    raise ValueError(f"the calendar is larger than {FETCH_MAX_BYTES // 1000} kB")
    except httpx.HTTPError as exc:
        raise ValueError(f"cannot fetch the calendar ({type(exc).__name__})") from None
    return body.decode("utf-8", errors="replace")


def unfold(text: str) -> list[str]:
    return [line for line in re.sub(r"\r?\n[ \t]", "", text).splitlines() if line]


def _events(text: str) -> list[dict[str, tuple[dict[str, str], str]]]:
    events, current = [], None
    for line in unfold(text):
        if line == "BEGIN:VEVENT":
            current = {}
        elif line == "END:VEVENT" and current is not None:
            events.append(current)
            current = None
        elif current is not None and ":" in line:
            head, value = line.split(":", 1)
            name, *params = head.split(";")
            current[name.upper()] = (dict(p.split("=", 1) for p in params if "=" in p), value)
    return events


def _when(prop: tuple[dict[str, str], str], zone: ZoneInfo) -> dt.datetime:
    """The time in the zone it is written in, which its repeats keep: UTC for `…Z`, its TZID, else (a floating
    time) the schedule's `zone`."""
    params, value = prop
    try:
        if value.endswith("Z"):
            return dt.datetime.strptime(value, _STAMP).replace(tzinfo=_UTC_ZONE)
        local = dt.datetime.strptime(value, "%Y%m%dT%H%M%S")
    except ValueError:
        raise ValueError(f"cannot read the time {value[:30]!r} (expected 20260302T090000 or …Z)") from None
    tz = zone
    if "TZID" in params:
        try:
            tz = ZoneInfo(params["TZID"].strip('"'))
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown TZID {params['TZID'][:40]!r}; use an IANA zone name") from None
    return local.replace(tzinfo=tz)


def _interval_weeks(event: dict[str, tuple[dict[str, str], str]]) -> int:
    if "RRULE" not in event:
        raise ValueError("every event needs RRULE:FREQ=WEEKLY (a one-off event is not a rotation)")
    parts = dict(p.split("=", 1) for p in event["RRULE"][1].upper().split(";") if "=" in p)
    if parts.get("FREQ") != "WEEKLY" or set(parts) - {"FREQ", "INTERVAL", "WKST"}:
        raise ValueError("only RRULE:FREQ=WEEKLY with an optional INTERVAL is supported")
    interval = parts.get("INTERVAL", "1")
    if not interval.isdigit() or not 1 <= int(interval) <= MAX_INTERVAL_WEEKS:  # 10**20 weeks overflowed timedelta
        raise ValueError(f"RRULE INTERVAL must be a number of weeks from 1 to {MAX_INTERVAL_WEEKS}")
    return int(interval)


def _zone_of(events: list[dict[str, Any]], zone: str | None) -> str:
    if zone:
        return zone
    tzid = events[0]["DTSTART"][0].get("TZID")
    if not tzid:
        raise ValueError("say the schedule's `time_zone` (the calendar's DTSTART has no TZID)")
    return str(tzid).strip('"')


def rotation_from_ical(text: str, zone: str | None) -> tuple[dict[str, Any], str]:
    """(the `rotation:` mapping, the zone) a calendar describes; ValueError saying what is unsupported."""
    events = [e for e in _events(text) if "DTSTART" in e]
    if not events:
        raise ValueError("the calendar has no VEVENT with a DTSTART")
    zone_name = _zone_of(events, zone)
    tz = ZoneInfo(zone_name)
    rows = []
    for event in events:
        start = _when(event["DTSTART"], tz)
        end = _when(event.get("DTEND", event["DTSTART"]), tz).astimezone(start.tzinfo)
        label = event.get("SUMMARY", ({}, ""))[1] + " " + event.get("DESCRIPTION", ({}, ""))[1]
        person = _SLACK_ID.search(label)
        if person is None:
            raise ValueError(f"no Slack id (U0123ABCD) in the event starting {start:%Y-%m-%d %H:%M}")
        rows.append((start, end, person.group(1), _interval_weeks(event)))
    rows.sort()
    repeats_in = _repeat_zone(rows)
    rotation = _as_rotation(rows)
    return (rotation if repeats_in == zone_name else {**rotation, "time_zone": repeats_in}), zone_name


def _repeat_zone(rows: list[tuple[dt.datetime, dt.datetime, str, int]]) -> str:
    """The one zone every event's DTSTART is written in (its repeats keep that zone's wall-clock time)."""
    zones = sorted({str(start.tzinfo) for start, *_ in rows})
    if len(zones) > 1:
        raise ValueError(f"the events' start times are written in different zones ({', '.join(zones)}); a rotation "
                         "repeats in one: write every DTSTART in UTC (…Z) or every one with the same TZID")
    return zones[0]


def _as_rotation(rows: list[tuple[dt.datetime, dt.datetime, str, int]]) -> dict[str, Any]:
    """Equal, back-to-back weekly-repeating events → `{every, handoff, people, start}`, or a ValueError."""
    length = _wall(rows[0][1]) - _wall(rows[0][0])
    hours = length / dt.timedelta(hours=1)
    if hours < 1 or hours != int(hours):
        raise ValueError("events must last whole hours")
    next_starts = [start for start, *_ in rows[1:]] + [rows[-1][0] + length]
    for (start, end, _, _), following in zip(rows, next_starts):
        if {_wall(end) - _wall(start), _wall(following) - _wall(start)} != {length}:
            raise ValueError("events must be the same length and back to back (a rotation)")
    cycle_weeks = {weeks for *_, weeks in rows}
    if len(cycle_weeks) != 1 or length * len(rows) != dt.timedelta(weeks=cycle_weeks.pop()):
        raise ValueError(f"{len(rows)} events of {int(hours)}h must each repeat every {len(rows)} × {int(hours)}h "
                         "(RRULE INTERVAL in weeks)")
    first = rows[0][0]
    weekly = length % dt.timedelta(weeks=1) == dt.timedelta(0)
    return {"every": _length_text(int(hours)), "people": [person for _, _, person, _ in rows],
            "handoff": f"{WEEKDAYS[first.weekday()]} {first:%H:%M}" if weekly else f"{first:%H:%M}",
            "start": first.date().isoformat()}


def _wall(instant: dt.datetime) -> dt.datetime:
    """Wall-clock time in the zone the events repeat in (their DTSTART's), as RFC 5545 repeats them."""
    return instant.replace(tzinfo=None)


def _length_text(hours: int) -> str:
    if hours % 168 == 0:
        return f"{hours // 168}w"
    return f"{hours // 24}d" if hours % 24 == 0 else f"{hours}h"
