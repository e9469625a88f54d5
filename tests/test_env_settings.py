"""EnvSettings, the environment reader every settings class builds on: names in any case, JSON or comma lists,
passed values first, validated defaults, `null`, and a bad JSON value told in one line naming the variable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import Field, ValidationError, field_validator

from bot.alerts.config import load_alert_settings
from bot.incidents.config import DEFAULT_ALERT_SEVERITY_MAP, load_incident_settings
from bot.settings import ConfigError, EnvSettings, NoDecode
from tests.test_cli import chatops


class Sample(EnvSettings):
    level: str = "info"
    count: int = Field(3, ge=1)
    flag: bool = False
    note: str | None = None
    tags: list[str] = ["default"]
    labels: dict[str, str] = {"env": "prod"}
    maybe_tags: list[str] | None = ["default"]
    ids: Annotated[list[str], NoDecode] = []

    @field_validator("level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("ids", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return [part.strip() for part in value.split(",")] if isinstance(value, str) else value


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No Sample variable leaks in from the machine running the tests."""
    for name in list(os.environ):
        if name.lower() in Sample.model_fields:
            monkeypatch.delenv(name)
    return monkeypatch


READS = [  # (variable, text, field, value)
    ("count", "7", "count", 7),                      # lower case
    ("COUNT", "7", "count", 7),                      # upper case
    ("Count", "7", "count", 7),                      # any case
    ("TAGS", '["a", "b"]', "tags", ["a", "b"]),      # a list is JSON
    ("LABELS", '{"team": "db"}', "labels", {"team": "db"}),
    ("IDS", "U1, U2", "ids", ["U1", "U2"]),          # NoDecode: the validator splits the text
    ("IDS", '["U1"]', "ids", ['["U1"]']),            # ... and JSON-looking text is not decoded
    ("NOTE", "null", "note", "null"),                # a plain string is never JSON: `null` is the text
    ("TAGS", "null", "tags", ["default"]),           # `null` for a list that cannot be None: its default
    ("LABELS", "null", "labels", {"env": "prod"}),
    ("MAYBE_TAGS", "null", "maybe_tags", None),      # ... but an optional one is None
    ("LEVEL", "debug", "level", "DEBUG"),
    *[("FLAG", text, "flag", True) for text in ("true", "1", "yes", "on", "TRUE")],
    *[("FLAG", text, "flag", False) for text in ("false", "0", "no", "off")],
]


@pytest.mark.parametrize(("variable", "text", "field", "value"), READS)
def test_a_variable_is_read_into_its_field(env: pytest.MonkeyPatch, variable: str, text: str, field: str,
                                           value: Any) -> None:
    env.setenv(variable, text)
    assert getattr(Sample(), field) == value


def test_unset_variables_leave_the_defaults_and_the_defaults_are_validated(env: pytest.MonkeyPatch) -> None:
    sample = Sample()
    assert (sample.level, sample.count, sample.tags, sample.ids) == ("INFO", 3, ["default"], [])

    class BadDefault(EnvSettings):
        count: int = Field(0, ge=1)

    with pytest.raises(ValidationError, match="count"):
        BadDefault()


@pytest.mark.parametrize(("variable", "text", "passed"), [
    ("COUNT", "7", {"count": 9}),
    ("count", "not a number", {"count": 9}),   # the variable is not even validated when a value is passed
    ("TAGS", '["env"]', {"tags": ["passed"]}),
])
def test_a_passed_value_wins_over_the_environment(env: pytest.MonkeyPatch, variable: str, text: str,
                                                 passed: dict[str, Any]) -> None:
    env.setenv(variable, text)
    sample = Sample(**passed)
    assert {name: getattr(sample, name) for name in passed} == passed


@pytest.mark.parametrize(("variable", "text"), [("TAGS", '["a", '), ("labels", "{team: db}"), ("TAGS", "a,b")])
def test_a_value_that_is_not_json_is_one_config_error_naming_the_variable(env: pytest.MonkeyPatch, variable: str,
                                                                          text: str) -> None:
    env.setenv(variable, text)
    with pytest.raises(ConfigError) as caught:
        Sample()
    message = str(caught.value)
    assert message.startswith(f"{variable.upper()}: expected JSON (") and "\n" not in message


def test_null_for_the_real_structured_variables_means_their_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERT_RULES", "null")
    monkeypatch.setenv("ALERT_SEVERITY_MAP", "null")
    assert load_alert_settings().alert_rules == []
    assert load_incident_settings().alert_severity_map == DEFAULT_ALERT_SEVERITY_MAP


def test_chatops_run_with_a_variable_that_is_not_json_stops_with_one_line(tmp_path: Path, redis_url: str) -> None:
    result = chatops("run", env={"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "REDIS_URL": redis_url,
                                 "SLACK_API_URL": "http://127.0.0.1:9/api/", "CHATOPS_DATA_DIR": str(tmp_path),
                                 "HTTP_WORKERS": "1", "ALERT_RULES": '[{"match": '})
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "WARNING" not in line]  # the default policy's notes
    assert errors == ["chatops: ALERT_RULES: expected JSON (Expecting value: line 1 column 12 (char 11))"]
