"""Schedules: the minimal form as written, path-naming errors, and properties that hold at every instant —
one person per layer, shifts that tile, DST in Europe/Berlin, a leap day, a 00:30 handoff, overrides across a
handoff."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.oncall.schedule import Schedule, parse_oncall_file, parse_schedules
from bot.oncall.timeline import Override, layer_shifts, on_call, shifts
from bot.settings import ConfigError

UTC = dt.timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
MINIMAL = """
schedules:
  payments-primary:
    time_zone: Europe/Berlin
    rotation: {every: 1w, handoff: "mon 09:00", people: [U0ALICE, U0BOB]}
"""


def schedule(data: dict, name: str = "s") -> Schedule:
    return parse_schedules({"schedules": {name: data}})[name]


def berlin(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=BERLIN)


def test_the_minimal_form_works_as_written() -> None:
    primary = parse_schedules(yaml.safe_load(MINIMAL))["payments-primary"]
    monday = berlin(2026, 3, 2, 9, 0)
    first = on_call(primary, monday)
    assert first.start == monday and first.end == berlin(2026, 3, 9, 9, 0)
    assert on_call(primary, monday - dt.timedelta(seconds=1)).user != first.user
    assert on_call(primary, monday + dt.timedelta(days=7)).user != first.user
    assert {first.user, on_call(primary, monday + dt.timedelta(days=7)).user} == {"U0ALICE", "U0BOB"}


@pytest.mark.parametrize("start", ["2026-03-02", "2026-03-02T00:00:00", dt.date(2026, 3, 2), dt.datetime(2026, 3, 2)])
def test_a_rotation_start_reads_as_a_date_also_written_as_its_midnight(start: object) -> None:
    data = {"time_zone": "UTC", "rotation": {"every": "1w", "people": ["U0A1", "U0B2"], "start": start}}
    assert parse_schedules({"schedules": {"s": data}})["s"].all_layers()[0].rotation.start == dt.date(2026, 3, 2)


@pytest.mark.parametrize(("data", "message"), [
    ({"time_zone": "UTC", "rotation": {"every": "1w", "people": ["U0A1"], "start": "2026-03-02T09:00:00"}},
     "schedules.payments-primary.rotation.start: expected a date like 2024-02-01, not a time of day"),
    ({"time_zone": "Europe/Berlin", "rotation": {"every": "fortnight", "people": ["U0A1"]}},
     "schedules.payments-primary.rotation.every: expected a shift length"),
    ({"time_zone": "Mars/Olympus", "rotation": {"every": "1w", "people": ["U0A1"]}},
     "schedules.payments-primary.time_zone: unknown time zone"),
    ({"time_zone": "UTC", "rotation": {"every": "1d", "handoff": "mon 09:00", "people": ["U0A1"]}},
     "schedules.payments-primary.rotation: a handoff weekday needs `every` in whole weeks"),
    ({"time_zone": "UTC", "rotation": {"every": "1d", "people": ["alice"]}},
     "schedules.payments-primary.rotation.people[0]: expected a Slack user or user group id"),
    ({"time_zone": "UTC", "layers": [{"rotation": {"every": "1d", "people": ["U0A1"]},
                                      "restrictions": [{"from": "25:00", "to": "18:00"}]}]},
     "schedules.payments-primary.layers[0].restrictions[0].from: expected a time of day"),
])
def test_errors_name_the_path(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_schedules({"schedules": {"payments-primary": data}}, source="oncall.yml")
    assert str(err.value).startswith(f"oncall.yml: {message}")


def test_a_business_hours_layer_overrides_the_base_layer_only_inside_its_window() -> None:
    s = schedule({"time_zone": "Europe/Berlin", "layers": [
        {"name": "24/7", "rotation": {"every": "1w", "handoff": "mon 09:00", "people": ["U0NIGHT"]}},
        {"name": "office", "rotation": {"every": "1d", "handoff": "09:00", "people": ["U0DAY1", "U0DAY2"]},
         "restrictions": [{"days": ["mon", "tue", "wed", "thu", "fri"], "from": "09:00", "to": "18:00"}]},
    ]})
    assert on_call(s, berlin(2026, 3, 4, 10, 0)).layer == "office"  # a Wednesday morning
    assert on_call(s, berlin(2026, 3, 4, 18, 0)).user == "U0NIGHT"
    assert on_call(s, berlin(2026, 3, 7, 10, 0)).user == "U0NIGHT"  # Saturday
    assert on_call(s, berlin(2026, 3, 4, 12, 0)).user != on_call(s, berlin(2026, 3, 5, 12, 0)).user


def test_a_weekly_handoff_walks_across_both_berlin_dst_changes_at_local_nine() -> None:
    s = parse_schedules(yaml.safe_load(MINIMAL))["payments-primary"]
    week = shifts(s, berlin(2026, 3, 16, 9), berlin(2026, 11, 2, 9))
    assert all(sh.start.astimezone(BERLIN).time() == dt.time(9, 0) for sh in week)
    lengths = {sh.start.astimezone(BERLIN).date(): sh.end - sh.start for sh in week}
    assert lengths[dt.date(2026, 3, 23)] == dt.timedelta(days=7, hours=-1)  # 29 March: clocks go forward
    assert lengths[dt.date(2026, 10, 19)] == dt.timedelta(days=7, hours=1)  # 25 October: clocks go back
    assert lengths[dt.date(2026, 6, 1)] == dt.timedelta(days=7)
    assert [sh.user for sh in week[:4]] == ["U0ALICE", "U0BOB", "U0ALICE", "U0BOB"] or \
           [sh.user for sh in week[:4]] == ["U0BOB", "U0ALICE", "U0BOB", "U0ALICE"]


def test_a_handoff_at_half_past_midnight_and_a_leap_day() -> None:
    s = schedule({"time_zone": "Europe/Berlin", "rotation": {"every": "1d", "handoff": "00:30",
                                                           "people": ["U0A1", "U0B2", "U0C3"]}})
    day = shifts(s, berlin(2028, 2, 27, 0, 30), berlin(2028, 3, 2, 0, 30))
    assert [sh.start.astimezone(BERLIN).date() for sh in day] == [
        dt.date(2028, 2, 27), dt.date(2028, 2, 28), dt.date(2028, 2, 29), dt.date(2028, 3, 1)]
    assert on_call(s, berlin(2028, 2, 29, 0, 29)).user == day[1].user
    assert on_call(s, berlin(2028, 2, 29, 0, 30)).user == day[2].user
    assert len({sh.user for sh in day[:3]}) == 3


def test_an_override_spanning_a_handoff_covers_both_sides_then_the_rotation_resumes() -> None:
    s = parse_schedules(yaml.safe_load(MINIMAL))["payments-primary"]
    handoff = berlin(2026, 3, 9, 9, 0)
    cover = Override(id="o1", schedule="payments-primary", user="U0CAROL", start=(handoff - dt.timedelta(hours=2))
                     .timestamp(), end=(handoff + dt.timedelta(hours=2)).timestamp(), made_by="U0ADMIN", made_at=1.0)
    got = shifts(s, handoff - dt.timedelta(hours=3), handoff + dt.timedelta(hours=3), [cover])
    assert [sh.user for sh in got] == [on_call(s, handoff - dt.timedelta(hours=3)).user, "U0CAROL",
                                       on_call(s, handoff + dt.timedelta(hours=3)).user]
    assert got[1].override == cover and got[1].end - got[1].start == dt.timedelta(hours=4)
    assert on_call(s, handoff, [cover]).end == handoff + dt.timedelta(hours=2)


def test_a_month_long_override_is_one_shift_with_its_real_start_and_end() -> None:
    s = parse_schedules(yaml.safe_load(MINIMAL))["payments-primary"]
    now = berlin(2026, 12, 3, 16, 0)
    cover = Override(id="o1", schedule="payments-primary", user="U0CAROL", start=(now - dt.timedelta(hours=1))
                     .timestamp(), end=(now + dt.timedelta(days=30)).timestamp(), made_by="U0ADMIN", made_at=1.0)
    shift = on_call(s, now, [cover])  # was cut at the look-around: "until" 8 days and a week on, not 30 days
    assert (shift.user, shift.start, shift.end) == ("U0CAROL", now - dt.timedelta(hours=1), now + dt.timedelta(days=30))


# ------------------------------------------------------------------------------------------ properties

ZONES = st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"])
PEOPLE = st.lists(st.sampled_from(["U0A1", "U0B2", "U0C3", "S0GRP1", "U0D4"]), min_size=1, max_size=4)
EVERY = st.sampled_from(["1h", "3h", "12h", "1d", "2d", "1w", "2w"])
CLOCK = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
# Around both Berlin DST changes of 2026, and the leap day of 2028.
INSTANTS = st.sampled_from([dt.datetime(2026, 3, 25, tzinfo=UTC), dt.datetime(2026, 10, 21, tzinfo=UTC),
                            dt.datetime(2028, 2, 25, tzinfo=UTC)]).flatmap(
    lambda base: st.integers(0, 10 * 86400).map(lambda s: base + dt.timedelta(seconds=s)))


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    def layer(restricted: bool) -> dict:
        out = {"rotation": {"every": draw(EVERY), "handoff": draw(CLOCK), "people": draw(PEOPLE),
                            "start": draw(st.dates(dt.date(2025, 1, 1), dt.date(2026, 12, 31))).isoformat()}}
        if restricted:
            out["restrictions"] = [{"days": draw(st.lists(st.sampled_from(["mon", "wed", "sat", "sun"]), min_size=1)),
                                    "from": draw(CLOCK), "to": draw(CLOCK)}]
        return out
    layers = [layer(False)] + [layer(True) for _ in range(draw(st.integers(0, 2)))]
    return schedule({"time_zone": draw(ZONES), "layers": layers})


@st.composite
def overrides(draw: st.DrawFn, around: dt.datetime) -> list[Override]:
    out = []
    for i in range(draw(st.integers(0, 3))):
        start = around + dt.timedelta(minutes=draw(st.integers(-3000, 3000)))
        end = start + dt.timedelta(minutes=draw(st.sampled_from([st.integers(1, 4000), st.integers(1, 31 * 1440)])
                                                .flatmap(lambda lengths: lengths)))  # up to /oncall's 31 days
        out.append(Override(id=f"o{i}", schedule="s", user=draw(st.sampled_from(["U0X1", "U0Y2"])),
                            start=start.timestamp(), end=end.timestamp(), made_by="U0M", made_at=float(i)))
    return out


@settings(max_examples=150, deadline=None)
@given(schedules(), INSTANTS, st.integers(1, 96), st.data())
def test_shifts_tile_the_range_without_gaps_or_overlaps(s: Schedule, start: dt.datetime, hours: int,
                                                       data: st.DataObject) -> None:
    end = start + dt.timedelta(hours=hours)
    made = data.draw(overrides(start))
    got = shifts(s, start, end, made)
    assert got[0].start == start and got[-1].end == end
    assert all(a.end == b.start and a.start < a.end for a, b in zip(got, got[1:]))
    assert got[-1].start < got[-1].end
    assert all(sh.user is not None for sh in got)  # the first layer has no restrictions: someone always is


@settings(max_examples=150, deadline=None)
@given(schedules(), INSTANTS, st.data())
def test_at_every_instant_exactly_one_person_per_layer_and_on_call_agrees(s: Schedule, instant: dt.datetime,
                                                                         data: st.DataObject) -> None:
    made = data.draw(overrides(instant))
    for layer in s.all_layers():
        covering = [sh for sh in layer_shifts(s, layer, instant - dt.timedelta(days=15), instant
                                              + dt.timedelta(days=15)) if sh.start <= instant < sh.end]
        assert len(covering) == 1 and covering[0].user in layer.rotation.people
    shift = on_call(s, instant, made)
    assert shift.start <= instant < shift.end
    if shift.override is not None:  # its real start and end, not cut at the edge of the window on_call looked in
        start, end = (dt.datetime.fromtimestamp(at, UTC) for at in (shift.override.start, shift.override.end))
        assert shift in shifts(s, start - dt.timedelta(hours=1), end + dt.timedelta(hours=1), made)
    in_force = [o for o in made if o.covers(instant.timestamp())]
    if in_force:
        assert shift.user == max(in_force, key=lambda o: o.made_at).user
    else:
        assert shift.user in s.members()


@settings(max_examples=100, deadline=None)
@given(schedules(), INSTANTS)
def test_neighbouring_shifts_always_differ_in_person_or_layer(s: Schedule,
                                                                              instant: dt.datetime) -> None:
    got = shifts(s, instant, instant + dt.timedelta(days=3))
    for before, after in zip(got, got[1:]):
        assert (before.user, before.layer) != (after.user, after.layer)  # neighbours that match are merged


@pytest.mark.parametrize(("extra", "message"), [
    ({"services": {"api": "payments-secundary"}},
     "services.api: no schedule 'payments-secundary' is defined under `schedules:` (defined: payments-primary)"),
    ({"default_schedule": "nope"}, "default_schedule: no schedule 'nope' is defined"),
    ({"services": {"Public API": "payments-primary"}}, "services: service name 'Public API'"),
    ({"schedules": {"by_service": yaml.safe_load(MINIMAL)["schedules"]["payments-primary"]}},
     "schedules: schedule name 'by_service' is reserved"),
])
def test_service_routing_errors_name_the_path(extra: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_oncall_file({**yaml.safe_load(MINIMAL), **extra}, source="oncall.yml")
    assert str(err.value).startswith(f"oncall.yml: {message}"), str(err.value)


def test_each_service_has_its_schedule_and_the_rest_the_default() -> None:
    _, routing = parse_oncall_file({**yaml.safe_load(MINIMAL), "services": {"api": "payments-primary"}})
    assert routing.schedule_for("api") == "payments-primary" and routing.schedule_for("search") is None
    _, routing = parse_oncall_file({**yaml.safe_load(MINIMAL), "default_schedule": "payments-primary"})
    assert routing.schedule_for("search") == routing.schedule_for(None) == "payments-primary"
