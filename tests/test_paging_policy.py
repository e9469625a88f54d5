"""The escalation policy: defaults from the runbook, the YAML file and its errors, and what a severity raise pages."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.paging.policy import (
    Level,
    Permission,
    Target,
    default_policy,
    load_policy,
    pages_for_level,
    parse_duration,
    parse_policy,
)
from bot.settings import ConfigError

PD_KEY = "pdfakeroutingkey" * 2
OG_KEY = "og-test-key-0000"
ENV = {"PAGERDUTY_ROUTING_KEY": PD_KEY, "PAGERDUTY_DB_ROUTING_KEY": "d" * 32, "OPSGENIE_API_KEY": OG_KEY}

EXAMPLE = """\
providers:
  pagerduty:
    routing_key_env: PAGERDUTY_ROUTING_KEY
  pagerduty-db:
    routing_key_env: PAGERDUTY_DB_ROUTING_KEY
    timeout_s: 3
    retry: {attempts: 3, base_s: 1, max_s: 20}
  opsgenie:
    api_key_env: OPSGENIE_API_KEY
    api_url: https://api.eu.opsgenie.com
oncall: [U0ONCALL1, U0ONCALL2]
managers: [S0MANAGERS]
severities:
  P0:
    first: [pagerduty, managers]
    ack_timeout: 10m
    then:
      - pagerduty-db
      - [U0CTO, {provider: opsgenie, targets: ["team:sre-leads"]}]
    repeat: 2
    update_every: 15m
  P1:
    first: oncall
    ack_timeout: 1h30m
    then: [managers]
  P2:
    urgency: high
  P3:
    first: []
escalation_allowed: channel_members
severity_change_allowed: [S0INCIDENTLEADS, U0CTO]
"""


def policy_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "paging.yml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(data: object, env: dict[str, str] = ENV) -> str:
    with pytest.raises(ConfigError) as error:
        parse_policy(data, env=env, source="paging.yml")
    return str(error.value)


def people(level: Level) -> list[tuple[str, str | None]]:
    return [(t.provider, t.id) for t in level.targets]


# ------------------------------------------------------------------------------------------------ defaults

def test_defaults_without_any_configuration_page_nobody_and_say_so() -> None:
    policy = load_policy(None, env={})

    assert all(policy.levels_for(sev) == [] for sev in ("P0", "P1", "P2", "P3"))
    assert policy.warnings == ("P0 pages nobody: list `oncall` users or configure pagerduty/opsgenie",
                               "P1 pages nobody: list `oncall` users or configure pagerduty/opsgenie")


def test_defaults_with_slack_oncall_follow_the_runbook() -> None:
    policy = default_policy({"PAGING_ONCALL": "U0ONCALL1, U0ONCALL2", "PAGING_MANAGERS": "S0MANAGERS"})
    oncall = [("slack", "U0ONCALL1"), ("slack", "U0ONCALL2")]

    p0 = policy.levels_for("P0")
    assert [people(level) for level in p0] == [oncall + [("slack", "S0MANAGERS")]] * 3
    assert [(lv.number, lv.repeat_of, lv.urgency, lv.ack_timeout_s) for lv in p0] == [
        (1, None, "high", 900), (2, None, "high", 900), (3, 2, "high", 900)]
    assert [people(level) for level in policy.levels_for("P1")] == [oncall, [("slack", "S0MANAGERS")]]
    (p2,) = policy.levels_for("P2")
    assert people(p2) == oncall and p2.urgency == "low"
    assert policy.levels_for("P3") == []
    assert [policy.ack_timeout_s(s) for s in ("P0", "P1", "P2", "P3")] == [900, 3600, 4 * 3600, 24 * 3600]
    assert [policy.update_every_s(s) for s in ("P0", "P1", "P2", "P3")] == [900, 1800, 3600, 24 * 3600]
    assert policy.escalation_allowed.channel_members and policy.severity_change_allowed.channel_members
    assert policy.paging.providers == {} and policy.warnings == ()


def test_defaults_page_on_call_through_pagerduty_when_its_key_is_set() -> None:
    policy = default_policy({"PAGERDUTY_ROUTING_KEY": PD_KEY, "PAGING_ONCALL": "U0ONCALL1"})

    assert [people(level) for level in policy.levels_for("P0")][0] == [("pagerduty", None)]
    assert people(policy.levels_for("P2")[0]) == [("pagerduty", None)]
    config = policy.paging.providers["pagerduty"]
    assert config.routing_key.get_secret_value() == PD_KEY and PD_KEY not in repr(policy)


def test_without_managers_the_manager_levels_are_skipped_not_empty() -> None:
    policy = default_policy({"PAGING_ONCALL": "U0ONCALL1"})

    assert [lv.number for lv in policy.levels_for("P1")] == [1]
    assert all(level.targets for sev in ("P0", "P1", "P2") for level in policy.levels_for(sev))


# -------------------------------------------------------------------------------------------------- the file

def test_the_documented_example_file_loads_as_written(tmp_path: Path) -> None:
    policy = load_policy(policy_file(tmp_path, EXAMPLE), env=ENV)

    p0 = policy.levels_for("P0")
    assert [people(level) for level in p0] == [
        [("pagerduty", None), ("slack", "S0MANAGERS")],
        [("pagerduty-db", None)],
        [("slack", "U0CTO"), ("opsgenie", "team:sre-leads")],
        [("slack", "U0CTO"), ("opsgenie", "team:sre-leads")],
        [("slack", "U0CTO"), ("opsgenie", "team:sre-leads")],
    ]
    assert [lv.repeat_of for lv in p0] == [None, None, None, 3, 3]
    assert policy.ack_timeout_s("P0") == 600 and policy.ack_timeout_s("P1") == 5400
    assert [people(level) for level in policy.levels_for("P1")] == [
        [("slack", "U0ONCALL1"), ("slack", "U0ONCALL2")], [("slack", "S0MANAGERS")]]
    # P2 only overrides urgency: who and when stay the defaults (on-call through PagerDuty, 4 h).
    (p2,) = policy.levels_for("P2")
    assert people(p2) == [("pagerduty", None)] and p2.urgency == "high" and p2.ack_timeout_s == 4 * 3600
    assert policy.levels_for("P3") == []
    db = policy.paging.providers["pagerduty-db"]
    assert db.timeout_s == 3 and db.retry.policy().attempts == 3
    assert str(policy.paging.providers["opsgenie"].api_url) == "https://api.eu.opsgenie.com/"
    assert policy.severity_change_allowed == Permission(False, frozenset({"S0INCIDENTLEADS", "U0CTO"}))
    assert sorted(policy.paging.secrets()) == sorted(ENV.values())  # for log redaction


def test_an_empty_file_means_the_defaults(tmp_path: Path) -> None:
    policy = load_policy(policy_file(tmp_path, "# nothing yet\n"), env={})
    assert policy.levels_for("P0") == [] and policy.ack_timeout_s("P1") == 3600


@pytest.mark.parametrize(("data", "message"), [
    ({"severities": {"P0": {"then": ["pagerduty", "pagerdty"]}}, "providers": {"pagerduty": {}}},
     "paging.yml: severities.P0.then[1]: unknown provider or target 'pagerdty' (configured providers: "
     "pagerduty; Slack ids look like U0123ABCD); did you mean pagerduty?"),
    ({"severities": {"P1": {"ack_timeout": "soon"}}},
     "paging.yml: severities.P1.ack_timeout: expected a duration such as 90s, 15m, 1h or 1h30m, "
     "or a number of seconds"),
    ({"severities": {"P1": {"ack_timeout": 0}}}, "paging.yml: severities.P1.ack_timeout: must be longer than zero"),
    ({"oncall": ["U0ONCALL1", "@jane"]},
     "paging.yml: oncall[1]: expected a Slack user or group id like U0123ABCD or S0123ABCD, got '@jane'"),
    ({"severities": {"P4": {}}}, "paging.yml: severities.P4: unknown key; expected P0, P1, P2 or P3"),
    ({"severities": {"P0": {"urgency": "urgent"}}}, "paging.yml: severities.P0.urgency: expected high or low"),
    ({"severities": {"P0": {"first": "oncall"}}},
     "paging.yml: severities.P0.first: `oncall` is used but no oncall are listed (top-level `oncall:`)"),
    ({"severities": {"P0": {"first": {"provider": "pagerduty", "targets": ["x"]}}}, "providers": {"pagerduty": {}}},
     "paging.yml: severities.P0.first.targets: PagerDuty pages go to the service behind the routing key"),
    ({"severities": {"P0": {"first": {"provider": "slack", "targets": ["jane"]}}}},
     "paging.yml: severities.P0.first.targets[0]: expected a Slack user or group id"),
    ({"severities": {"P0": {"then": [[{"who": "U0CTO"}]]}}},
     "paging.yml: severities.P0.then[0][0]: expected {provider: <name>, targets: [...]}; unknown key 'who'"),
    ({"providers": {"pagerduty": {"routing_key_env": "PAGERDUTY_ROUTING_KEY", "timeout_s": -1}}},
     "paging.yml: providers.pagerduty.timeout_s: Expected `float` > 0"),
    ({"providers": {"pagerduty": {"retry": {"tries": 3}}}},
     "paging.yml: providers.pagerduty.retry.tries: unknown key; expected attempts, base_s or max_s"),
    ({"providers": {"pd": {}}}, "paging.yml: providers.pd: a provider is named pagerduty, opsgenie, "
                                "pagerduty-<name> or opsgenie-<name>"),
    ({"providers": {"slack": {}}}, "paging.yml: providers.slack: `slack` is the built-in Slack DM provider"),
    ({"providers": ["pagerduty"]}, "paging.yml: providers: expected a mapping of provider name to its settings"),
    ({"escalation_allowed": "everyone"},
     "paging.yml: escalation_allowed: expected channel_members, responders or a list of Slack user/group ids"),
    ({"paging": {}}, "paging.yml: paging: unknown key; expected providers, oncall, managers, severities, "
                     "escalation_allowed, severity_change_allowed, permissions or remediation"),
])
def test_errors_name_the_file_and_the_path(data: dict, message: str) -> None:
    assert config_error(data).startswith(message)


def test_a_literal_secret_in_the_file_is_refused_without_echoing_it() -> None:
    error = config_error({"providers": {"pagerduty": {"routing_key": PD_KEY}}})

    assert error.startswith("paging.yml: providers.pagerduty: `routing_key`: secrets do not belong in the policy")
    assert "routing_key_env" in error and PD_KEY not in error


def test_a_key_pasted_where_the_variable_name_goes_is_not_echoed() -> None:
    error = config_error({"providers": {"pagerduty": {"routing_key_env": PD_KEY}}})

    assert error == ("paging.yml: providers.pagerduty.routing_key_env: expected the name of an environment "
                     "variable (like PAGERDUTY_ROUTING_KEY), not the key itself")
    assert PD_KEY not in error


def test_a_key_pasted_into_a_field_of_fixed_words_is_not_echoed() -> None:
    error = config_error({"severities": {"P0": {"urgency": PD_KEY}}})

    assert error == "paging.yml: severities.P0.urgency: expected high or low"


def test_missing_or_malformed_keys_name_the_variable_never_the_value() -> None:
    missing = config_error({"providers": {"pagerduty": {}}}, env={})
    assert missing == ("paging.yml: environment variable PAGERDUTY_ROUTING_KEY is not set "
                       "(the paging policy names it)")

    short_key = "short-but-secret"
    wrong = config_error({"providers": {"pagerduty": {}}}, env={"PAGERDUTY_ROUTING_KEY": short_key})
    assert wrong == "paging.yml: PAGERDUTY_ROUTING_KEY: must be a 32-character Events API v2 integration key"
    assert short_key not in wrong


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = policy_file(tmp_path, "severities:\n  P0:\n    first: [oops\n")
    with pytest.raises(ConfigError, match=r"paging\.yml: line \d+ is not valid YAML"):
        load_policy(path, env={})


# --------------------------------------------------------------------------------------- severity changes

def test_raising_p1_to_p0_pages_only_the_managers_p1_had_not_paged() -> None:
    policy = default_policy({"PAGERDUTY_ROUTING_KEY": PD_KEY, "PAGING_MANAGERS": "S0MANAGERS"})

    (added,) = policy.added_levels("P1", "P0")
    assert people(added) == [("slack", "S0MANAGERS")] and added.number == 1 and added.urgency == "high"


def test_raising_p2_to_p0_repages_on_call_at_high_urgency_and_adds_managers() -> None:
    policy = default_policy({"PAGING_ONCALL": "U0ONCALL1", "PAGING_MANAGERS": "S0MANAGERS"})

    (added,) = policy.added_levels("P2", "P0")  # P2 paged on-call at low urgency: that did not wake them
    assert people(added) == [("slack", "U0ONCALL1"), ("slack", "S0MANAGERS")] and added.urgency == "high"


def test_lowering_or_keeping_the_severity_pages_nobody_new() -> None:
    policy = default_policy({"PAGING_ONCALL": "U0ONCALL1", "PAGING_MANAGERS": "S0MANAGERS"})

    assert policy.added_levels("P0", "P2") == []
    assert policy.added_levels("P1", "P1") == []
    assert policy.added_levels("P3", "P3") == []


def test_added_levels_count_everyone_already_reached(tmp_path: Path) -> None:
    policy = load_policy(policy_file(tmp_path, EXAMPLE), env=ENV)

    # P1 escalated to its level 2 (managers) before the raise; P0's first two levels add PagerDuty services.
    added = policy.added_levels("P1", "P0", reached=2)
    assert [(lv.number, people(lv)) for lv in added] == [(1, [("pagerduty", None)]), (2, [("pagerduty-db", None)])]


# ---------------------------------------------------------------------------------------------- helpers

def test_pages_for_a_level_carry_deterministic_keys_per_provider(tmp_path: Path) -> None:
    policy = load_policy(policy_file(tmp_path, EXAMPLE), env=ENV)
    level = policy.levels_for("P0")[3]  # the first repeat of level 3

    pages = pages_for_level(level, incident_id="INC-42", severity="P0", title="Checkout down", summary="502s",
                            link="https://example.slack.com/archives/C0INC42", details={"status": "identified"})
    assert sorted(pages) == ["opsgenie", "slack"]
    assert pages["slack"].targets == ("U0CTO",) and pages["opsgenie"].targets == ("team:sre-leads",)
    assert {p.dedup_key for p in pages.values()} == {"INC-42:P0:L4"}  # a repeat has a key of its own
    assert pages["slack"].urgency == "high" and pages["slack"].details == {"status": "identified"}


def test_level_routes_group_targets_by_provider() -> None:
    level = Level(1, (Target("pagerduty"), Target("slack", "U1X"), Target("slack", "S2Y")), 900, "high")
    assert level.routes() == {"pagerduty": (), "slack": ("U1X", "S2Y")}


@pytest.mark.parametrize(("value", "seconds"), [
    (900, 900), ("900", 900), ("90s", 90), ("15m", 900), ("1h", 3600), ("1h30m", 5400), ("2d", 172800),
    ("1.5", 1.5), (" 4h ", 14400),
])
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


def test_permissions() -> None:
    members = Permission(channel_members=True)
    assert members.allows("U1", in_channel=True) and not members.allows("U1", in_channel=False)
    leads = Permission(channel_members=False, ids=frozenset({"S0LEADS", "U0CTO"}))
    assert leads.allows("U0CTO", in_channel=False)
    assert leads.allows("U7", in_channel=True, user_groups=["S0LEADS"])
    assert not leads.allows("U7", in_channel=True, user_groups=["S0OTHER"])
