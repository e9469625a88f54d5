"""On-call settings, read from the environment when asked (never at import time).

    ONCALL_FILE               (none)   YAML schedules (bot/oncall/schedule.py); without it /oncall says how to add one
    ONCALL_CALENDAR_TOKEN     (none)   guards GET /oncall/<schedule>.ics?token=…; the feeds answer 404 without it
    ONCALL_CALENDAR_WEEKS     8        how many weeks ahead a feed exports
"""

from __future__ import annotations

from pathlib import Path

from typing import Annotated

from bot.oncall.schedule import Schedule, ServiceSchedules, parse_oncall_file
from bot.settings import EnvSettings, read_yaml_file
from checks.schema import Meta, Secret


class OncallSettings(EnvSettings):
    oncall_file: Path | None = None
    oncall_calendar_token: Secret | None = None
    oncall_calendar_weeks: Annotated[int, Meta(ge=1, le=104)] = 8

    def secrets(self) -> list[str]:
        return [self.oncall_calendar_token.get_secret_value()] if self.oncall_calendar_token else []


def load_oncall_settings() -> OncallSettings:
    """Read the environment; a validation error becomes one ConfigError line naming the variable."""
    return OncallSettings.from_env()


def load_schedules(path: Path | None) -> dict[str, Schedule]:
    """The schedules of ONCALL_FILE ({} without one); a ConfigError names the file and the path inside it."""
    return load_oncall_file(path)[0]


def load_oncall_file(path: Path | None) -> tuple[dict[str, Schedule], ServiceSchedules]:
    """The schedules of ONCALL_FILE and which one each service pages (nothing without a file)."""
    if path is None:
        return {}, ServiceSchedules()
    from bot.oncall.calendar import expand_ical

    data = read_yaml_file(path, "on-call file")
    data = expand_ical(data if data is not None else {"schedules": {}}, base=path.parent, source=str(path))
    return parse_oncall_file(data, source=str(path))
