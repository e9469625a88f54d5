"""Paging providers against local fakes of PagerDuty, Opsgenie and Slack: what each provider ends up holding.

Every HTTP call goes to a loopback server (tests/fixtures/paging.py for PagerDuty and Opsgenie, the project's
LocalSlack through the `local_slack` fixture); nothing can reach a real provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
from slack_sdk.web.async_client import AsyncWebClient

from bot.paging import build_providers, close_providers
from bot.paging.opsgenie import OpsgenieProvider, opsgenie_responders
from bot.paging.pagerduty import PagerDutyConfig, PagerDutyProvider, pagerduty_severity
from bot.paging.pagerduty_events import (
    WebhookError,
    parse_pagerduty_event,
    verify_pagerduty_signature,
)
from bot.paging.policy import PagingConfig
from bot.paging.providers import (
    Page,
    Provider,
    RetrySpec,
    _proxy_for,
    make_dedup_key,
    parse_dedup_key,
)
from bot.paging import slack_dm
from bot.paging.slack_dm import ACK_ACTION_ID, SlackDmProvider
from bot.slack.client import SlackClient
from bot.slack.local import LocalSlack, Message
from bot.slack.local.model import Scripted, http_error
from checks.schema import parse
from tests.fixtures.paging import FakeOpsgenie, FakePagerDuty
from tests.fixtures.slack import SLACK_TEST_BOT_TOKEN as SLACK_TOKEN


def make_page(level: int = 1, severity: str = "P0", **overrides: Any) -> Page:
    values: dict[str, Any] = dict(
        incident_id="INC-42", level=level, dedup_key=make_dedup_key("INC-42", severity, level),
        title="Checkout API returns 502", severity=severity, summary="Checkout API returns 502 for 30% of requests",
        link="https://example.slack.com/archives/C0INC42", targets=(),
        details={"status": "investigating", "elapsed_s": 1260, "last_update": "Rolling back deploy 1234",
                 "failing_checks": ["http api: 502 x3", "elb api-prod: 2/4 targets unhealthy"]},
    )
    return Page(**(values | overrides))


# ------------------------------------------------------------------------------------------------- PagerDuty

async def test_pagerduty_trigger_opens_one_alert_that_follows_the_events_v2_contract(pd: FakePagerDuty) -> None:
    provider = PagerDutyProvider(pd.config())
    result = await provider.trigger(make_page())
    await provider.aclose()

    assert result.ok and result.error is None
    assert result.provider == "pagerduty" and result.provider_ref == "INC-42:P0:L1"
    (alert,) = pd.alerts
    assert alert.key == "INC-42:P0:L1" and alert.status == "triggered" and alert.severity == "critical"
    assert alert.summary == "[P0] INC-42: Checkout API returns 502"
    payload = alert.body["payload"]
    assert payload["source"] == "chatops-incident-bot"
    assert payload["custom_details"]["status"] == "investigating"
    assert payload["custom_details"]["running_for"] == "21m"
    assert alert.body["links"] == [{"href": "https://example.slack.com/archives/C0INC42",
                                    "text": "Slack channel for INC-42"}]


async def test_pagerduty_same_dedup_key_twice_is_one_alert_and_two_events(pd: FakePagerDuty) -> None:
    provider = PagerDutyProvider(pd.config())
    first, second = await provider.trigger(make_page()), await provider.trigger(make_page())
    await provider.aclose()

    assert first.ok and second.ok
    assert len(pd.events) == 2
    assert len(pd.alerts) == 1 and pd.alerts[0].trigger_count == 2


async def test_pagerduty_acknowledge_then_resolve_then_a_new_trigger_opens_a_new_alert(pd: FakePagerDuty) -> None:
    provider = PagerDutyProvider(pd.config())
    key = make_dedup_key("INC-42", "P0", 1)
    await provider.trigger(make_page())
    ack = await provider.acknowledge("INC-42", 1, key)
    assert ack.ok and pd.alert(key).status == "acknowledged"

    resolved = await provider.resolve("INC-42", 1, key)
    assert resolved.ok and pd.alert(key).status == "resolved" and pd.open_alerts == {}

    await provider.trigger(make_page())
    await provider.aclose()
    assert len(pd.alerts) == 2 and pd.alert(key).status == "triggered"
    assert [e["event_action"] for e in pd.events] == ["trigger", "acknowledge", "resolve", "trigger"]


async def test_pagerduty_severity_mapping_reaches_pagerduty(pd: FakePagerDuty) -> None:
    provider = PagerDutyProvider(pd.config())
    for severity in ("P0", "P1", "P2", "P3"):
        assert (await provider.trigger(make_page(severity=severity))).ok
    await provider.aclose()

    assert [a.severity for a in pd.alerts] == ["critical", "error", "warning", "info"]
    # The policy's urgency wins across PagerDuty's urgency line (warning/info are low urgency, cannot escalate).
    assert pagerduty_severity("P2", "high") == "error" and pagerduty_severity("P3", "high") == "error"
    assert pagerduty_severity("P0", "low") == "warning" and pagerduty_severity("P3", "low") == "info"


async def test_pagerduty_429_then_202_is_retried_after_retry_after_and_opens_one_alert(pd: FakePagerDuty) -> None:
    pd.script(status=429, retry_after=0.3)
    provider = PagerDutyProvider(pd.config(retry=RetrySpec(attempts=3, base_s=0.01, max_s=2)))
    result = await provider.trigger(make_page())
    await provider.aclose()

    assert result.ok
    throttled, accepted = pd.requests
    assert (throttled.status, accepted.status) == (429, 202)
    assert accepted.at - throttled.at >= 0.3  # Retry-After honoured, not the 10 ms base backoff
    assert len(pd.alerts) == 1


async def test_pagerduty_429_with_a_plain_text_body_backs_off_and_succeeds(pd: FakePagerDuty) -> None:
    pd.script(status=429, times=2, body="Rate limit exceeded")
    provider = PagerDutyProvider(pd.config())
    result = await provider.trigger(make_page())
    await provider.aclose()

    assert result.ok
    assert [r.status for r in pd.requests] == [429, 429, 202]
    assert len(pd.alerts) == 1


async def test_pagerduty_500_every_time_gives_up_after_the_bounded_tries_with_a_plain_sentence(
        pd: FakePagerDuty) -> None:
    pd.script(status=500, times=10)
    provider = PagerDutyProvider(pd.config(retry=RetrySpec(attempts=4, base_s=0.01, max_s=0.02)))
    result = await provider.trigger(make_page())
    await provider.aclose()

    assert not result.ok
    assert result.error == "PagerDuty did not take the page after 4 tries (last: HTTP 500)"
    assert len(pd.requests) == 4 and pd.alerts == []


async def test_pagerduty_400_is_not_retried_and_its_errors_become_the_sentence() -> None:
    with FakePagerDuty(routing_keys={"x" * 32}) as pd:  # our key is not one PagerDuty knows
        provider = PagerDutyProvider(pd.config())
        result = await provider.trigger(make_page())
        await provider.aclose()

        assert not result.ok
        assert result.error == "PagerDuty rejected the page: Invalid routing key"
        assert len(pd.requests) == 1 and pd.requests[0].status == 400


async def test_pagerduty_other_client_errors_are_not_retried(pd: FakePagerDuty) -> None:
    provider = PagerDutyProvider(pd.config(events_url=f"{pd.url}/v2/wrong"))
    result = await provider.trigger(make_page())
    await provider.aclose()

    assert result.error == "PagerDuty refused the page (HTTP 404)"
    assert len(pd.requests) == 1


async def test_pagerduty_slow_answers_time_out_and_give_up_bounded(pd: FakePagerDuty) -> None:
    pd.script(delay_s=1.0, times=3)
    provider = PagerDutyProvider(pd.config(timeout_s=0.2, retry=RetrySpec(attempts=3, base_s=0.01, max_s=0.02)))
    started = time.monotonic()
    result = await provider.trigger(make_page())
    await provider.aclose()

    assert not result.ok
    assert result.error == "PagerDuty did not take the page after 3 tries (last: timed out after 0.2s)"
    assert time.monotonic() - started < 1.5


async def test_pagerduty_a_timed_out_page_that_pagerduty_processed_anyway_stays_one_alert(
        pd: FakePagerDuty) -> None:
    pd.script(delay_s=0.6)  # the first answer comes too late for the client, but PagerDuty did take it
    provider = PagerDutyProvider(pd.config(timeout_s=0.2))
    result = await provider.trigger(make_page())
    await provider.aclose()

    assert result.ok
    pd.wait_for(lambda: len(pd.events) == 2, what="the late event")
    assert len(pd.alerts) == 1 and pd.alerts[0].trigger_count == 2


async def test_pagerduty_unreachable_gives_up_bounded(pd: FakePagerDuty) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    provider = PagerDutyProvider(pd.config(events_url=f"http://127.0.0.1:{closed_port}/v2/enqueue",
                                           retry=RetrySpec(attempts=2, base_s=0.01, max_s=0.02)))
    result = await provider.trigger(make_page())
    await provider.aclose()

    assert not result.ok
    assert result.error.startswith("PagerDuty did not take the page after 2 tries (last: could not connect")


@pytest.mark.parametrize(("variable", "proxy", "no_proxy"), [
    ("HTTP_PROXY", "{url}", ""), ("HTTP_PROXY", "{url}", "events.pagerduty.invalid"),
    ("ALL_PROXY", "{url}", ""), ("HTTP_PROXY", "{host_port}", ""),  # no scheme: http://, as httpx read it
])
async def test_pagerduty_pages_through_the_proxy_the_environment_names_unless_no_proxy_exempts_it(
        pd: FakePagerDuty, monkeypatch: pytest.MonkeyPatch, variable: str, proxy: str, no_proxy: str) -> None:
    # The fake PagerDuty stands in for the proxy: a forwarding proxy gets the absolute URL, which it serves as is.
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)  # lower-case names win in urllib: none of the machine's may leak in
    monkeypatch.setenv(variable, proxy.format(url=pd.url, host_port=pd.url.removeprefix("http://")))
    monkeypatch.setenv("NO_PROXY", no_proxy)
    _proxy_for.cache_clear()
    provider = PagerDutyProvider(pd.config(events_url="http://events.pagerduty.invalid/v2/enqueue",
                                           retry=RetrySpec(attempts=1, base_s=0.01, max_s=0.02)))
    try:
        result = await provider.trigger(make_page())
    finally:
        await provider.aclose()
        _proxy_for.cache_clear()

    if no_proxy:  # straight to a host that cannot resolve
        assert not result.ok and "could not connect" in result.error and not pd.requests
    else:
        assert result.ok
        (request,) = pd.requests
        assert request.headers["host"] == "events.pagerduty.invalid" and request.path == "/v2/enqueue"


async def test_pagerduty_redirect_is_not_followed(pd: FakePagerDuty) -> None:
    """A 307 would resend the event, routing key and all, to wherever Location points: it is an answer to read."""
    pd.script(status=307, headers={"Location": "http://127.0.0.1:9/elsewhere"})
    provider = PagerDutyProvider(pd.config())
    result = await provider.trigger(make_page())
    await provider.aclose()

    assert not result.ok and "307" in result.error
    assert len(pd.requests) == 1


async def test_pagerduty_long_titles_and_huge_details_stay_within_the_limits(pd: FakePagerDuty) -> None:
    page = make_page(title="disk full " * 500,
                     details={"failing_checks": [f"check {i}: " + "x" * 200 for i in range(5000)]})
    provider = PagerDutyProvider(pd.config())
    result = await provider.trigger(page)
    await provider.aclose()

    assert result.ok, result.error  # the fake answers 400 past 1024 chars of summary or 512 KB of event
    assert len(pd.alerts[0].summary) == 1024
    assert len(pd.requests[0].body) < 512 * 1024


async def test_pagerduty_routing_key_never_reaches_errors_or_logs(pd: FakePagerDuty,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key = pd.routing_key
    # A 400 that echoes the key back, a 5xx streak and a timeout: every failure path that builds a sentence.
    pd.script(status=400, body={"status": "invalid event", "errors": [f"routing key {key} is disabled"]})
    pd.script(status=503, times=2)
    pd.script(delay_s=0.5, times=2)
    provider = PagerDutyProvider(pd.config(timeout_s=0.1, retry=RetrySpec(attempts=2, base_s=0.01, max_s=0.02)))
    results = [await provider.trigger(make_page()) for _ in range(3)]
    await provider.aclose()

    assert [r.ok for r in results] == [False, False, False]
    assert results[0].error == "PagerDuty rejected the page: routing key [redacted] is disabled"
    assert all(key not in (r.error or "") for r in results)
    assert caplog.records and key not in caplog.text
    assert key not in repr(provider.config) and key not in str(provider.config)
    with pytest.raises(ValueError) as bad_key:
        parse(PagerDutyConfig, {"routing_key": "short-" + key[:10]})
    assert key[:10] not in str(bad_key.value)


# -------------------------------------------------------------------------------------------------- Opsgenie

async def test_opsgenie_create_maps_priority_message_and_responders(og: FakeOpsgenie) -> None:
    provider = OpsgenieProvider(og.config())
    page = make_page(severity="P1", title="x" * 300, targets=("U0ONCALL", "team:sre", "jane@example.com"))
    result = await provider.trigger(page)
    await provider.aclose()

    assert result.ok and result.provider_ref  # the requestId of Opsgenie's asynchronous create
    (request,) = og.requests
    assert request.headers["authorization"] == f"GenieKey {og.api_key}"
    (alert,) = og.alerts
    assert alert.key == "INC-42:P1:L1" and alert.severity == "P2"
    assert len(alert.summary) == 130  # the fake answers 422 past 130 characters
    assert alert.body["responders"] == [{"type": "team", "name": "sre"},
                                        {"type": "user", "username": "jane@example.com"}]
    assert "Rolling back deploy 1234" in alert.body["description"]
    assert all(isinstance(v, str) for v in alert.body["details"].values())


async def test_opsgenie_same_alias_twice_is_one_alert_then_ack_and_close_by_alias(og: FakeOpsgenie) -> None:
    provider = OpsgenieProvider(og.config())
    key = make_dedup_key("INC-42", "P0", 1)
    assert (await provider.trigger(make_page())).ok and (await provider.trigger(make_page())).ok
    assert len(og.alerts) == 1 and og.alerts[0].trigger_count == 2

    assert (await provider.acknowledge("INC-42", 1, key)).ok
    assert og.alert(key).status == "acknowledged"
    assert (await provider.resolve("INC-42", 1, key)).ok
    await provider.aclose()

    assert og.alert(key).status == "closed"
    ack, close = og.requests[2:]
    assert ack.path == "/v2/alerts/INC-42%3AP0%3AL1/acknowledge" and ack.query == {"identifierType": "alias"}
    assert close.path.endswith("/close") and close.query == {"identifierType": "alias"}


async def test_opsgenie_throttled_then_accepted_is_retried(og: FakeOpsgenie) -> None:
    og.script(status=429, times=2)
    provider = OpsgenieProvider(og.config())
    result = await provider.trigger(make_page())
    await provider.aclose()

    assert result.ok
    assert [r.status for r in og.requests] == [429, 429, 202] and len(og.alerts) == 1


async def test_opsgenie_5xx_streak_is_bounded_and_plain(og: FakeOpsgenie) -> None:
    og.script(status=502, times=10)
    provider = OpsgenieProvider(og.config(retry=RetrySpec(attempts=3, base_s=0.01, max_s=0.02)))
    result = await provider.trigger(make_page())
    await provider.aclose()

    assert result.error == "Opsgenie did not take the page after 3 tries (last: HTTP 502)"
    assert len(og.requests) == 3 and og.alerts == []


async def test_opsgenie_validation_errors_are_not_retried_and_read_as_a_sentence(og: FakeOpsgenie) -> None:
    og.script(status=422, body={"message": "Request body is not processable. Please check the errors.",
                                "errors": {"message": "Message can not be empty."}})
    provider = OpsgenieProvider(og.config())
    result = await provider.trigger(make_page())
    await provider.aclose()

    assert result.error == "Opsgenie rejected the page: Message can not be empty."
    assert len(og.requests) == 1


async def test_opsgenie_wrong_key_is_refused_without_showing_any_key(og: FakeOpsgenie,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-opsgenie-key-1234567890"
    provider = OpsgenieProvider(og.config(api_key=wrong))
    result = await provider.trigger(make_page())
    await provider.aclose()

    assert result.error == "Opsgenie refused the page (HTTP 401: Could not authenticate)"
    assert len(og.requests) == 1
    assert wrong not in caplog.text and og.api_key not in caplog.text and wrong not in result.error


def test_opsgenie_responders_come_only_from_explicit_opsgenie_targets() -> None:
    team_id = "4513b7ea-3b91-438f-b7e4-e3e54af9147c"
    assert opsgenie_responders(["U0ONCALL", "S0MANAGERS", f"team:{team_id}", "escalation:SRE_Escalation",
                                "schedule:sre-primary", "user:jane@example.com", "nonsense:x", "team:"]) == [
        {"type": "team", "id": team_id},
        {"type": "escalation", "name": "SRE_Escalation"},
        {"type": "schedule", "name": "sre-primary"},
        {"type": "user", "username": "jane@example.com"},
    ]


# ---------------------------------------------------------------------------------------------------- Slack DM

@dataclass
class Team:
    """The project's LocalSlack with an on-call engineer, a manager, and two user groups."""

    slack: LocalSlack
    managers: str  # user group id: U0BOSS and U0ONCALL
    nobody: str  # user group id: empty


@pytest.fixture
def team(local_slack: LocalSlack) -> Team:
    local_slack.add_user("U0ONCALL", "oncall")
    local_slack.add_user("U0BOSS", "boss")
    return Team(local_slack, managers=local_slack.add_usergroup("managers", ["U0BOSS", "U0ONCALL"]),
                nobody=local_slack.add_usergroup("nobody", []))


def slack_client(slack: LocalSlack) -> SlackClient:
    return SlackClient(AsyncWebClient(token=SLACK_TOKEN, base_url=slack.url))


def dm_provider(slack: LocalSlack, redis: aioredis.Redis) -> SlackDmProvider:
    return SlackDmProvider(slack_client(slack), redis, key_prefix=f"test:dm:{uuid.uuid4().hex[:8]}")


def dm_messages(slack: LocalSlack) -> dict[str, list[Message]]:
    """Each DM channel the bot wrote to, with its messages."""
    channels = {c.params["channel"] for c in slack.calls_to("chat.postMessage")}
    return {channel: slack.messages(channel) for channel in sorted(channels)}


async def test_slack_dm_pages_each_person_once_with_an_acknowledge_button(team: Team, redis: aioredis.Redis) -> None:
    slack = team.slack
    provider = dm_provider(slack, redis)
    page = make_page(title="<!channel> *everything* is down", targets=("U0ONCALL", team.managers, "team:sre"))
    result = await provider.trigger(page)

    assert result.ok, result.error
    opened = [c.params["users"] for c in slack.calls_to("conversations.open")]
    # DMs go out concurrently, so in no set order: the group expanded, the duplicate and the Opsgenie team dropped
    assert sorted(opened) == ["U0BOSS", "U0ONCALL"]
    dms = dm_messages(slack)
    assert len(dms) == 2 and all(len(messages) == 1 for messages in dms.values())
    message = next(iter(dms.values()))[0]
    rendered = json.dumps(message.blocks)
    assert "<!channel>" not in rendered and "<!channel>" not in message.text
    assert "&lt;!channel&gt;" in rendered
    assert "Running for" in rendered and "21m" in rendered and "Rolling back deploy 1234" in rendered
    assert "elb api-prod: 2/4 targets unhealthy" in rendered
    (button,) = [e for b in message.blocks if b["type"] == "actions" for e in b["elements"]
                 if e.get("action_id") == ACK_ACTION_ID]
    assert button["value"] == "INC-42" and button["text"]["text"] == "Acknowledge"


async def test_slack_dm_respects_block_kit_limits_with_huge_input(team: Team, redis: aioredis.Redis) -> None:
    slack = team.slack
    provider = dm_provider(slack, redis)
    page = make_page(targets=("U0ONCALL",), summary="s" * 10_000,
                     details={"last_update": "u" * 10_000, "failing_checks": [f"check {i}" for i in range(2000)],
                              "status": "investigating"})
    result = await provider.trigger(page)

    assert result.ok, result.error  # LocalSlack answers invalid_blocks past Block Kit's limits
    (messages,) = dm_messages(slack).values()
    blocks = messages[0].blocks
    assert len(blocks) <= 50
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section" and "text" in b)
    assert all(len(f["text"]) <= 2000 for b in blocks for f in b.get("fields", []))


async def test_slack_dm_retry_does_not_dm_twice_and_only_reaches_the_missing_people(team: Team,
                                                                                     redis: aioredis.Redis) -> None:
    slack = team.slack
    provider = dm_provider(slack, redis)
    page = make_page(targets=("U0ONCALL", "U0GONE"))
    first = await provider.trigger(page)
    assert not first.ok
    assert first.error == "Slack DM page incomplete: could not DM 1 of 2: U0GONE (user_not_found)"

    slack.add_user("U0GONE", "gone")  # the account is back; the job retries the same page
    second = await provider.trigger(page)

    assert second.ok
    assert sorted(c.params["users"] for c in slack.calls_to("conversations.open")) == ["U0GONE", "U0GONE", "U0ONCALL"]
    assert len(slack.calls_to("chat.postMessage")) == 2


async def test_slack_dm_pages_at_once_open_each_persons_dm_channel_once(team: Team, redis: aioredis.Redis) -> None:
    """A storm: twenty pages to the same two people at once. conversations.open is Tier 3 (50 a minute), so
    opening the channel again for each page paced the pages behind it; Slack keeps one DM channel a person."""
    slack = team.slack
    provider = dm_provider(slack, redis)
    pages = [make_page(incident_id=f"INC-{i}", dedup_key=make_dedup_key(f"INC-{i}", "P0", 1),
                       targets=("U0ONCALL", team.managers)) for i in range(20)]
    results = await asyncio.gather(*(provider.trigger(page) for page in pages))

    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert sorted(c.params["users"] for c in slack.calls_to("conversations.open")) == ["U0BOSS", "U0ONCALL"]
    assert sorted(len(messages) for messages in dm_messages(slack).values()) == [20, 20]


async def test_jobs_waiting_on_another_jobs_dm_open_give_their_worker_slot_back(team: Team) -> None:
    """Two pages' jobs DM the same person at once: the second waits on the first's conversations.open (slow here)
    parked, as behind another's post in a channel, so its worker slot is free meanwhile."""
    from bot.queue import slots

    slack = team.slack
    client = slack_client(slack)
    slack.script("conversations.open", Scripted(delay=0.5))
    parks: list[str] = []

    def job(name: str):  # what a worker binds in each job's task: a park that says whose it was
        @contextlib.asynccontextmanager
        async def park(_wait_s: float | None):
            parks.append(name)
            yield

        async def run() -> str:
            slots.bind(park)
            return await client.open_dm("U0ONCALL")

        return asyncio.create_task(run())

    first = job("first")
    await asyncio.sleep(0.1)
    channels = await asyncio.gather(first, job("second"))

    assert channels[0] == channels[1] and parks == ["second"]
    assert len(slack.calls_to("conversations.open")) == 1


async def test_slack_dm_refused_for_slacks_rate_limit_asks_to_go_again_not_to_fail(team: Team,
                                                                                    redis: aioredis.Redis) -> None:
    """More people paged at once than conversations.open allows (50 a minute): the DMs Slack refused go again
    later, to those people only, instead of being recorded as a failed page."""
    slack = team.slack
    provider = dm_provider(slack, redis)
    page = make_page(targets=("U0ONCALL", "U0BOSS"))
    slack.script("conversations.open", http_error(429, retry_after=1))
    first = await provider.trigger(page)

    assert (first.ok, first.error, first.throttled_for) == (False, None, slack_dm.RATELIMITED_AGAIN_S)
    second = await provider.trigger(page)
    assert second.ok, second.error
    assert sorted(len(messages) for messages in dm_messages(slack).values()) == [1, 1]


async def test_slack_dm_acknowledge_rewrites_the_dms_without_the_button(team: Team, redis: aioredis.Redis) -> None:
    slack = team.slack
    provider = dm_provider(slack, redis)
    page = make_page(targets=(team.managers,))
    await provider.trigger(page)
    result = await provider.acknowledge("INC-42", 1, page.dedup_key)

    assert result.ok
    dms = dm_messages(slack)
    assert len(dms) == 2
    for (message,) in dms.values():
        assert message.edited and "was acknowledged" in message.text
        assert all(block["type"] != "actions" for block in message.blocks)


async def test_slack_dm_acknowledged_by_another_process_rewrites_every_dm(team: Team, redis: aioredis.Redis) -> None:
    """The page goes out from one worker, the acknowledgement is handled by another (or after a restart)."""
    sender = dm_provider(team.slack, redis)
    other = SlackDmProvider(slack_client(team.slack), redis, key_prefix=sender.key_prefix)
    page = make_page(targets=(team.managers,))
    assert (await sender.trigger(page)).ok

    assert (await other.acknowledge("INC-42", 1, page.dedup_key)).ok

    for (message,) in dm_messages(team.slack).values():
        assert message.edited and "was acknowledged" in message.text
        assert all(block["type"] != "actions" for block in message.blocks)


async def test_slack_dm_of_a_worker_that_died_after_slack_answered_is_not_sent_again(
        team: Team, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.slack import posts

    provider = dm_provider(team.slack, redis)
    page = make_page(targets=("U0ONCALL",))
    record = posts._record

    async def dies_after_slack_answered(redis_, key, field, value, ttl_s):  # type: ignore[no-untyped-def]
        if value != posts.PENDING:
            raise ConnectionError("worker killed")
        return await record(redis_, key, field, value, ttl_s)

    monkeypatch.setattr(posts, "_record", dies_after_slack_answered)
    with pytest.raises(ConnectionError):
        await provider.trigger(page)
    monkeypatch.setattr(posts, "_record", record)

    retried = SlackDmProvider(slack_client(team.slack), redis, key_prefix=provider.key_prefix)  # another worker
    assert (await retried.trigger(page)).ok
    assert len(team.slack.calls_to("chat.postMessage")) == 1
    ((message,),) = dm_messages(team.slack).values()
    assert (await retried.acknowledge("INC-42", 1, page.dedup_key)).ok
    assert "was acknowledged" in team.slack.messages(message.channel)[0].text


async def test_slack_dm_with_nobody_to_page_says_so(team: Team, redis: aioredis.Redis) -> None:
    provider = dm_provider(team.slack, redis)
    result = await provider.trigger(make_page(targets=(team.nobody, "S0MISSING")))

    assert not result.ok
    assert result.error == (f"Nobody to DM for INC-42 level 1: user group {team.nobody} has no members; "
                            "user group S0MISSING could not be read (no_such_subteam)")
    assert team.slack.calls_to("chat.postMessage") == []


async def test_build_providers_makes_every_configured_provider_plus_slack(
        pd: FakePagerDuty, og: FakeOpsgenie, local_slack: LocalSlack, redis: aioredis.Redis, unique_name: str) -> None:
    config = PagingConfig(providers={"pagerduty": pd.config(), "opsgenie-emea": og.config()})
    providers = build_providers(config, slack_client(local_slack), redis, key_prefix=unique_name)

    assert sorted(providers) == ["opsgenie-emea", "pagerduty", "slack"]
    assert all(isinstance(p, Provider) and p.name == name for name, p in providers.items())
    result = await providers["opsgenie-emea"].trigger(make_page())
    await close_providers(providers)
    assert result.provider == "opsgenie-emea" and len(og.alerts) == 1


# ------------------------------------------------------------------------------------ dedup keys and webhooks

def test_dedup_keys_are_deterministic_and_readable_back() -> None:
    assert make_dedup_key("INC-42", "P1", 3) == "INC-42:P1:L3" == make_dedup_key("INC-42", "P1", 3)
    assert parse_dedup_key("INC-42:P1:L3") == ("INC-42", "P1", 3)
    assert parse_dedup_key("d3640fbd41094207a1c11e58e46b1662") is None


SECRET = "whsec-test-secret"


def sign(body: bytes, secret: str = SECRET) -> str:
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook(event_type: str = "incident.acknowledged", *, agent: dict | None = None,
            incident_key: str | None = "INC-42:P0:L1") -> bytes:
    data = {"id": "PGR0VU2", "type": "incident", "status": event_type.rsplit(".", 1)[-1],
            "title": "Checkout API returns 502"}
    if incident_key is not None:
        data["incident_key"] = incident_key
    return json.dumps({"event": {
        "id": "01DEN0HO", "event_type": event_type, "resource_type": "incident",
        "occurred_at": "2024-05-01T10:15:22.169Z", "agent": agent, "client": None, "data": data,
    }}).encode()


def test_webhook_signature_good_bad_missing_and_rotated() -> None:
    body = webhook()
    assert verify_pagerduty_signature(body, sign(body), [SECRET])
    assert not verify_pagerduty_signature(body + b" ", sign(body), [SECRET])  # body altered
    assert not verify_pagerduty_signature(body, sign(body, "other"), [SECRET])
    assert not verify_pagerduty_signature(body, "", [SECRET])
    assert not verify_pagerduty_signature(body, None, [SECRET])
    assert not verify_pagerduty_signature(body, sign(body), [])
    assert not verify_pagerduty_signature(body, sign(body).replace("v1=", "v0="), [SECRET])
    # During a rotation PagerDuty sends one signature per secret; either side may hold either secret.
    rotated = f"{sign(body, 'old-secret')}, {sign(body, SECRET)}"
    assert verify_pagerduty_signature(body, rotated, [SECRET])
    assert verify_pagerduty_signature(body, sign(body, "old-secret"), ["new-secret", "old-secret"])


def test_webhook_acknowledged_by_a_person_maps_back_to_our_page() -> None:
    agent = {"id": "PLH1HKV", "type": "user_reference", "summary": "Jane Oncall"}
    event = parse_pagerduty_event(webhook(agent=agent))

    assert event.is_ack and not event.is_resolve
    assert event.incident_key == "INC-42:P0:L1" and event.our_page == ("INC-42", "P0", 1)
    assert event.acknowledged_by == "Jane Oncall" and event.agent_id == "PLH1HKV"
    assert event.pagerduty_incident_id == "PGR0VU2"
    assert event.at == datetime(2024, 5, 1, 10, 15, 22, 169000, tzinfo=UTC)


def test_webhook_resolved_by_the_system_and_foreign_or_missing_keys() -> None:
    resolved = parse_pagerduty_event(webhook("incident.resolved", agent=None))
    assert resolved.is_resolve and resolved.acknowledged_by is None

    foreign = parse_pagerduty_event(webhook(incident_key="d3640fbd41094207a1c11e58e46b1662"))
    assert foreign.incident_key and foreign.our_page is None
    assert parse_pagerduty_event(webhook(incident_key=None)).incident_key is None

    ping = parse_pagerduty_event({"event": {"event_type": "pagey.ping", "data": {"type": "ping"}}})
    assert ping.event_type == "pagey.ping" and ping.incident_key is None


def test_webhook_that_is_not_one_is_refused() -> None:
    for body in (b"not json", b"[]", b'{"event": {}}', b'{"messages": []}'):
        with pytest.raises(WebhookError):
            parse_pagerduty_event(body)
