"""iCalendar both ways: the feed is escaped and folded per RFC 5545; a rotation kept in a calendar file or URL
becomes a schedule; what the import does not support is refused with a sentence naming the path."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
import yaml

from bot.oncall.calendar import escape_text, feed, fold, unfold
from bot.oncall.config import load_oncall_file, load_schedules
from bot.oncall.schedule import parse_schedules
from bot.oncall.timeline import on_call, shifts
from bot.paging.policy import parse_policy
from bot.settings import ConfigError
from tests.servers import Reply, local_http_server

UTC = dt.timezone.utc
TWO_WEEK_ROTATION = "\r\n".join([
    "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//team//EN",
    "BEGIN:VEVENT", "UID:a@team", "DTSTART;TZID=Europe/Berlin:20260302T090000",
    "DTEND;TZID=Europe/Berlin:20260309T090000", "RRULE:FREQ=WEEKLY;INTERVAL=2", "SUMMARY:Alice U0ALICE", "END:VEVENT",
    "BEGIN:VEVENT", "UID:b@team", "DTSTART;TZID=Europe/Berlin:20260309T090000",
    "DTEND;TZID=Europe/Berlin:20260316T090000", "RRULE:FREQ=WEEKLY;INTERVAL=2",
    "SUMMARY:On call: Bob", "DESCRIPTION:a long description that names the person late\r\n  U0BOB", "END:VEVENT",
    "END:VCALENDAR", ""])


# The same rotation stamped in UTC: 08:00Z is 09:00 in Berlin in winter, 10:00 once summer time starts (29 March).
UTC_TWO_WEEK_ROTATION = re.sub(r"(DT(?:START|END));TZID=Europe/Berlin:(\d{8})T090000", r"\1:\2T080000Z",
                               TWO_WEEK_ROTATION)


def test_text_is_escaped_and_long_lines_fold_at_75_octets_without_splitting_a_character() -> None:
    assert escape_text("a;b,c\\d\ne") == "a\\;b\\,c\\\\d\\ne"
    line = "SUMMARY:" + "Überstunden " * 20
    folded = fold(line)
    assert all(len(part.encode()) <= 75 for part in folded.split("\r\n"))
    assert unfold(folded) == [line]


def test_the_feed_is_one_vevent_per_shift_in_utc() -> None:
    s = parse_schedules({"schedules": {"pay": {"time_zone": "Europe/Berlin",
                                               "rotation": {"every": "1w", "handoff": "mon 09:00",
                                                            "people": ["U0ALICE", "U0BOB"]}}}})["pay"]
    start = dt.datetime(2026, 3, 23, 8, tzinfo=UTC)
    end = dt.datetime(2026, 4, 6, 7, tzinfo=UTC)  # 09:00 CEST, two handoffs later
    text = feed(s, shifts(s, start, end), names={"U0ALICE": "Alice; on, call"}, now=start)
    assert text.count("BEGIN:VEVENT") == 2 and text.endswith("END:VCALENDAR\r\n")
    assert "DTSTART:20260323T080000Z" in text and "DTEND:20260330T070000Z" in text  # DST: 09:00 CEST is 07:00Z
    assert "SUMMARY:On call: Alice\\; on\\, call" in text and "SUMMARY:On call: U0BOB" in text


def test_a_calendar_file_becomes_a_rotation(tmp_path: Path) -> None:
    (tmp_path / "payments.ics").write_text(TWO_WEEK_ROTATION)
    oncall = tmp_path / "oncall.yml"
    oncall.write_text(yaml.safe_dump({"schedules": {"payments": {"ical": "payments.ics"}}}))
    s = load_schedules(oncall)["payments"]
    assert s.time_zone == "Europe/Berlin" and s.rotation is not None and s.rotation.people == ["U0ALICE", "U0BOB"]
    assert on_call(s, dt.datetime(2026, 3, 4, tzinfo=UTC)).user == "U0ALICE"
    assert on_call(s, dt.datetime(2026, 3, 10, tzinfo=UTC)).user == "U0BOB"
    assert on_call(s, dt.datetime(2026, 3, 30, 7, 30, tzinfo=UTC)).user == "U0ALICE"  # after the DST change


def test_a_calendar_url_is_fetched_with_a_size_cap(tmp_path: Path) -> None:
    with local_http_server({"/rota.ics": Reply(200, TWO_WEEK_ROTATION.encode()),
                            "/huge.ics": Reply(200, b"X" * 1_200_000)}) as server:
        oncall = tmp_path / "oncall.yml"
        oncall.write_text(yaml.safe_dump({"schedules": {"payments": {"ical": server.url("/rota.ics")},
                                                        "big": {"ical": server.url("/huge.ics"),
                                                                "time_zone": "UTC"}}}))
        with pytest.raises(ConfigError, match=r"oncall.yml: schedules.big.ical: the calendar is larger than"):
            load_schedules(oncall)
        oncall.write_text(yaml.safe_dump({"schedules": {"payments": {"ical": server.url("/rota.ics")}}}))
        assert load_schedules(oncall)["payments"].rotation.every == dt.timedelta(weeks=1)


@pytest.mark.parametrize(("calendar", "summer_handoff"), [
    (TWO_WEEK_ROTATION, dt.datetime(2026, 3, 30, 7, tzinfo=UTC)),  # Berlin wall clock: 09:00 CEST
    (UTC_TWO_WEEK_ROTATION, dt.datetime(2026, 3, 30, 8, tzinfo=UTC)),  # the same UTC time: 10:00 CEST
])
def test_an_imported_series_repeats_in_the_zone_its_start_is_written_in_across_the_march_change(
        tmp_path: Path, calendar: str, summer_handoff: dt.datetime) -> None:
    (tmp_path / "rota.ics").write_text(calendar)
    oncall = tmp_path / "oncall.yml"
    oncall.write_text(yaml.safe_dump({"schedules": {"payments": {"ical": "rota.ics", "time_zone": "Europe/Berlin"}}}))
    s = load_schedules(oncall)["payments"]
    winter = on_call(s, dt.datetime(2026, 3, 9, 8, 30, tzinfo=UTC))
    assert winter.user == "U0BOB" and winter.start == dt.datetime(2026, 3, 9, 8, tzinfo=UTC)  # 09:00 CET both ways
    summer = on_call(s, summer_handoff + dt.timedelta(minutes=1))
    assert summer.user == "U0ALICE" and summer.start == summer_handoff
    assert on_call(s, summer_handoff - dt.timedelta(minutes=1)).user == "U0BOB"
    assert s.time_zone == "Europe/Berlin"  # shown and restricted in Berlin time either way


@pytest.mark.parametrize(("change", "message"), [
    (("RRULE:FREQ=WEEKLY;INTERVAL=2", "RRULE:FREQ=DAILY"), "only RRULE:FREQ=WEEKLY"),
    (("SUMMARY:Alice U0ALICE", "SUMMARY:Alice"), "no Slack id"),
    (("DTEND;TZID=Europe/Berlin:20260316T090000", "DTEND;TZID=Europe/Berlin:20260317T090000"),
     "the same length and back to back"),
    (("INTERVAL=2", "INTERVAL=3"), "must each repeat every"),
    (("INTERVAL=2", "INTERVAL=99999999999999"), "INTERVAL must be a number of weeks from 1 to 52"),  # was a crash
    (("INTERVAL=2", "INTERVAL=two"), "INTERVAL must be a number of weeks from 1 to 52"),
    (("DTSTART;TZID=Europe/Berlin:20260309T090000", "DTSTART:20260309T080000Z"),
     "start times are written in different zones (Europe/Berlin, UTC)"),
])
def test_what_the_import_cannot_follow_is_refused_by_path(tmp_path: Path, change: tuple[str, str],
                                                          message: str) -> None:
    (tmp_path / "x.ics").write_text(TWO_WEEK_ROTATION.replace(*change, 1))
    oncall = tmp_path / "oncall.yml"
    oncall.write_text(yaml.safe_dump({"schedules": {"payments": {"ical": "x.ics"}}}))
    with pytest.raises(ConfigError) as err:
        load_schedules(oncall)
    assert str(err.value).startswith(f"{oncall}: schedules.payments.ical: ") and message in str(err.value)


def test_a_policy_level_names_a_schedule() -> None:
    policy = parse_policy({"severities": {"P1": {"first": {"schedule": "payments-primary"},
                                                 "then": [[{"schedule": "payments-secondary"}, "U0MGR"]]}}}, env={})
    assert policy.schedules() == {"payments-primary", "payments-secondary"}
    assert policy.levels_for("P1")[1].routes() == {"schedule": ("payments-secondary",), "slack": ("U0MGR",)}
    with pytest.raises(ConfigError, match=r"severities.P1.first: expected \{schedule: <name"):
        parse_policy({"severities": {"P1": {"first": {"schedule": "Payments Primary"}}}}, env={})


def readme_yaml_blocks() -> list[str]:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split("### On call", 1)[1].split("\n### ", 1)[0]
    return [block.split("```", 1)[0] for block in section.split("```yaml\n")[1:]]


def test_the_readme_examples_load_as_written(tmp_path: Path) -> None:
    minimal, full, policy = readme_yaml_blocks()
    assert parse_schedules(yaml.safe_load(minimal))["payments-primary"].rotation.people == ["U0ALICE", "U0BOB"]
    (tmp_path / "calendars").mkdir()
    (tmp_path / "calendars" / "databases.ics").write_text(TWO_WEEK_ROTATION)
    (tmp_path / "oncall.yml").write_text(full)
    schedules, routing = load_oncall_file(tmp_path / "oncall.yml")
    assert set(schedules) == {"payments-primary", "payments-secondary", "databases", "checkout"}
    assert routing.schedule_for("postgres") == "databases" and routing.schedule_for("search") == "payments-primary"
    office = on_call(schedules["payments-primary"], dt.datetime(2026, 3, 4, 10, tzinfo=UTC))  # Wednesday 11:00
    assert office.layer == "office hours" and office.user in ("U0CAROL", "U0DAN")
    assert parse_policy(yaml.safe_load(policy), env={}).schedules() == {"payments-primary", "payments-secondary"}
