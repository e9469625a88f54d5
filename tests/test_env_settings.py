"""EnvSettings, the environment reader every settings class builds on: names in any case, JSON or comma lists,
passed values first (validated too), validated defaults, `null`, booleans as deployments write them, and every
bad value told in one line naming the variable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import pytest

from bot.alerts.config import AlertSourceSettings, load_alert_settings
from bot.incidents.config import DEFAULT_ALERT_SEVERITY_MAP, IncidentSettings, load_incident_settings
from bot.settings import SLACK_DEFAULT_API_URL, ConfigError, EnvSettings, NoDecode, Settings, invalid
from bot.writeup.trackers.config import TrackerSettings
from checks.schema import Meta, Secret, field
from tests.test_cli import chatops


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",")]


class Sample(EnvSettings):
    level: str = "info"
    count: Annotated[int, Meta(ge=1)] = 3
    ratio: float = 0.5
    flag: bool = False
    maybe_flag: bool | None = None
    note: str | None = None
    tags: list[str] = field(default_factory=lambda: ["default"])
    labels: dict[str, str] = field(default_factory=lambda: {"env": "prod"})
    maybe_tags: list[str] | None = field(default_factory=lambda: ["default"])
    ids: Annotated[list[str], NoDecode(_split)] = []

    def __post_init__(self) -> None:
        self.level = self.level.upper()
        if "bad" in self.ids:
            raise invalid("ids", "'bad' is not an id")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No Sample variable leaks in from the machine running the tests."""
    for name in list(os.environ):
        if name.lower() in Sample.__struct_fields__:
            monkeypatch.delenv(name)
    return monkeypatch


READS = [  # (variable, text, attribute, value)
    ("count", "7", "count", 7),                      # lower case
    ("COUNT", "7", "count", 7),                      # upper case
    ("Count", "7", "count", 7),                      # any case
    ("COUNT", " 7\n", "count", 7),                   # a ConfigMap's trailing newline
    ("RATIO", "0.25", "ratio", 0.25),
    ("TAGS", '["a", "b"]', "tags", ["a", "b"]),      # a list is JSON
    ("LABELS", '{"team": "db"}', "labels", {"team": "db"}),
    ("IDS", "U1, U2", "ids", ["U1", "U2"]),          # NoDecode: its reader splits the text
    ("IDS", '["U1"]', "ids", ['["U1"]']),            # ... and JSON-looking text is not decoded
    ("NOTE", "null", "note", "null"),                # a plain string is never JSON: `null` is the text
    ("TAGS", "null", "tags", ["default"]),           # `null` for a list that cannot be None: its default
    ("LABELS", "null", "labels", {"env": "prod"}),
    ("MAYBE_TAGS", "null", "maybe_tags", None),      # ... but an optional one is None
    ("LEVEL", "debug", "level", "DEBUG"),
    *[("FLAG", text, "flag", True) for text in ("true", "1", "yes", "on", "TRUE", "t", "y", "Yes")],
    *[("FLAG", text, "flag", False) for text in ("false", "0", "no", "off", "f", "n", "OFF")],
    ("MAYBE_FLAG", "on", "maybe_flag", True),
]


@pytest.mark.parametrize(("variable", "text", "attribute", "value"), READS)
def test_a_variable_is_read_into_its_field(env: pytest.MonkeyPatch, variable: str, text: str, attribute: str,
                                           value: Any) -> None:
    env.setenv(variable, text)
    assert getattr(Sample.from_env(), attribute) == value


def test_unset_variables_leave_the_defaults_and_the_defaults_are_validated(env: pytest.MonkeyPatch) -> None:
    sample = Sample.from_env()
    assert (sample.level, sample.count, sample.tags, sample.ids) == ("INFO", 3, ["default"], [])

    class BadDefault(EnvSettings):
        count: Annotated[int, Meta(ge=1)] = 0

    with pytest.raises(ConfigError, match=r"^COUNT: Expected `int` >= 1$"):
        BadDefault.from_env()


def test_an_empty_path_variable_means_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVICES_FILE", "")
    monkeypatch.setenv("CHATOPS_DATA_DIR", " ")
    settings = Settings.from_env()
    assert settings.services_file is None and settings.chatops_data_dir == Path(".chatops").absolute()


def test_the_real_defaults_are_validated_and_transformed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLACK_API_URL", "CHATOPS_DATA_DIR", "LOG_LEVEL", "GITHUB_API_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env()
    assert settings.slack_api_url == SLACK_DEFAULT_API_URL == "https://slack.com/api/"
    assert settings.chatops_data_dir.is_absolute() and settings.log_level == "INFO"
    assert TrackerSettings.from_env().github_api_url == "https://api.github.com/"


@pytest.mark.parametrize(("variable", "text", "passed"), [
    ("COUNT", "7", {"count": 9}),
    ("count", "not a number", {"count": 9}),   # the variable is not even validated when a value is passed
    ("TAGS", '["env"]', {"tags": ["passed"]}),
    ("TAGS", '["env"', {"tags": ["passed"]}),  # ... nor decoded
])
def test_a_passed_value_wins_over_the_environment(env: pytest.MonkeyPatch, variable: str, text: str,
                                                 passed: dict[str, Any]) -> None:
    env.setenv(variable, text)
    sample = Sample.from_env(**passed)
    assert {name: getattr(sample, name) for name in passed} == passed


def test_passed_values_are_validated_and_converted_as_the_environment_is(env: pytest.MonkeyPatch) -> None:
    sample = Sample.from_env(count="8", flag="yes", ids="U1,U2", level="warning", unknown="ignored")
    assert (sample.count, sample.flag, sample.ids, sample.level) == (8, True, ["U1", "U2"], "WARNING")
    with pytest.raises(ConfigError, match=r"^COUNT: Expected `int` >= 1$"):
        Sample.from_env(count=0)
    settings = Settings.from_env(slack_bot_token="xoxb-1", slack_signing_secret=Secret("s"), port="8080")
    assert settings.slack_bot_token == Secret("xoxb-1") and settings.port == 8080
    assert settings.secrets()[:2] == ["xoxb-1", "s"]


@pytest.mark.parametrize(("variable", "text"), [("TAGS", '["a", '), ("labels", "{team: db}"), ("TAGS", "a,b")])
def test_a_value_that_is_not_json_is_one_config_error_naming_the_variable(env: pytest.MonkeyPatch, variable: str,
                                                                          text: str) -> None:
    env.setenv(variable, text)
    with pytest.raises(ConfigError) as caught:
        Sample.from_env()
    message = str(caught.value)
    assert message.startswith(f"{variable.upper()}: expected JSON (") and "\n" not in message


@pytest.mark.parametrize(("variable", "text", "message"), [
    ("COUNT", "0", "COUNT: Expected `int` >= 1"),
    ("count", "seven", "COUNT: Expected `int`, got `str`"),
    ("TAGS", '{"a": 1}', "TAGS: Expected `array`, got `object`"),
    ("LABELS", '{"team": 1}', "LABELS[...]: Expected `str`, got `int`"),
    ("FLAG", "maybe", "FLAG: expected true or false (or 1/0, yes/no, on/off), got 'maybe'"),
    ("IDS", "U1,bad", "IDS: 'bad' is not an id"),   # a rule of __post_init__ names its variable
])
def test_a_bad_value_is_one_config_error_naming_the_variable(env: pytest.MonkeyPatch, variable: str, text: str,
                                                             message: str) -> None:
    env.setenv(variable, text)
    with pytest.raises(ConfigError) as caught:
        Sample.from_env()
    assert str(caught.value) == message


@pytest.mark.parametrize(("env_vars", "message"), [
    ({"PORT": "70000"}, "PORT: Expected `int` <= 65535"),
    ({"REDIS_NAMESPACE": "a b"}, "REDIS_NAMESPACE: use 1-40 letters, digits, _ . - and at most one hash tag in "
                                 "braces, e.g. chatops or {chatops}"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT: expected text or json"),
    ({"LOG_LEVEL": "trace"}, "LOG_LEVEL: use one of DEBUG, INFO, WARNING, ERROR, got 'trace'"),
    ({"SLACK_API_URL": "ftp://slack.example"}, "SLACK_API_URL: URL scheme should be 'http' or 'https'"),
    ({"REDIS_URL": "http://db"}, "REDIS_URL: must start with redis://, rediss:// or unix://"),
    ({"SLACK_APP_TOKEN": "xapp-secret-value"},
     "SLACK_BOT_TOKEN is required when SLACK_SIGNING_SECRET or SLACK_APP_TOKEN is set"),
])
def test_the_bot_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, env_vars: dict[str, str],
                                            message: str) -> None:
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "REDIS_URL", "REDIS_SENTINELS"):
        monkeypatch.delenv(name, raising=False)
    for name, text in env_vars.items():
        monkeypatch.setenv(name, text)
    with pytest.raises(ConfigError) as caught:
        Settings.from_env()
    assert str(caught.value) == message and "secret-value" not in message


@pytest.mark.parametrize(("kind", "env_vars", "message"), [
    (IncidentSettings, {"INCIDENT_ADMINS": "U1, nobody"},
     "INCIDENT_ADMINS: 'nobody' is not a Slack user (U…/W…) or user group (S…) id"),
    (IncidentSettings, {"ALERT_SEVERITY_MAP": '{"critical": "P9"}'}, "ALERT_SEVERITY_MAP: 'critical' maps to 'P9'; "
                                                                     "use P0..P3"),
    (AlertSourceSettings, {"SNS_CONNECT_TO": "sns.example"}, "SNS_CONNECT_TO: use host=address:port,"
                                                             "host=address:port"),
    (AlertSourceSettings, {"ALERT_RULES": '[{"severity": "P9"}]'},
     "ALERT_RULES[0].severity: expected P0, P1, P2 or P3"),
    (AlertSourceSettings, {"ALERT_RULES": '[{"match": {"env": "("}}]'},
     "ALERT_RULES[0]: match.env: '(' is not a regular expression (missing ), unterminated subpattern at "
     "position 0)"),
    (TrackerSettings, {"TRACKER": "gitlab"}, "TRACKER: use one of github, jira, off (or leave it unset), got "
                                             "'gitlab'"),
])
def test_the_feature_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, kind: type[EnvSettings],
                                                env_vars: dict[str, str], message: str) -> None:
    for name, text in env_vars.items():
        monkeypatch.setenv(name, text)
    with pytest.raises(ConfigError) as caught:
        kind.from_env()
    assert str(caught.value) == message


def test_comma_lists_and_case_are_read_by_the_feature_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INCIDENT_ROLES", "Security; customer-liaison")
    monkeypatch.setenv("INCIDENT_CHANNEL_PREFIX", " INC ")
    monkeypatch.setenv("SNS_CONNECT_TO", "SNS.us-east-1.amazonaws.com=127.0.0.1:8443")
    monkeypatch.setenv("TRACKER", " ")
    incidents = IncidentSettings.from_env(incident_responders="U1,U2")
    assert incidents.incident_roles == ["security", "customer_liaison"] and incidents.incident_channel_prefix == "inc"
    assert incidents.incident_responders == ["U1", "U2"]
    assert AlertSourceSettings.from_env().sns_connect_to == {"sns.us-east-1.amazonaws.com": "127.0.0.1:8443"}
    assert TrackerSettings.from_env().tracker is None


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
