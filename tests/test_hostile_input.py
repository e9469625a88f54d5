"""Hostile and bad input: forged or stale signatures, arbitrary text and payloads, and markup smuggled in through
what a probed service answers. Each test drives the real app through signed HTTP requests.

- Signatures: anything not signed with the signing secret within 300 s is a 401 that changes nothing.
- Property-based (hypothesis): any text to any slash command, any button payload → an answer within 3 s, never
  an HTTP 500, never a Traceback, never a mention from the input echoed live.
- Injection: a probed service's answer (a redirect's Location) reaches the thread and the verdict inert and
  within Block Kit limits, even at 10 kB.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slack_sdk.signature import SignatureVerifier

from bot.slack.local.payloads import (
    block_action_body,
    event_body,
    signed_headers,
    slash_command_body,
)
from tests.app_harness import RunningBot, running_bot
from tests.fixtures.slack import SLACK_TEST_SIGNING_SECRET
from tests.incident_harness import IncidentBot, incident_bot
from tests.servers import Reply, closed_port, local_http_server

FORM = "application/x-www-form-urlencoded"
ANSWER_WITHIN_S = 3.0
LIVE_MENTION = re.compile(r"<(?:!channel|!here|!everyone|!subteam\^[^>]*|@[UW][^>]*)>")


def live_mentions(text: str) -> list[str]:
    return LIVE_MENTION.findall(text)


# ------------------------------------------------------------------------------------------------- signatures


def without(headers: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k not in names}


def forged_variants(body: str, content_type: str) -> dict[str, dict[str, str]]:
    """Every way a request can fail Slack's signature scheme, by what an attacker (or a stale proxy) would do."""
    now = int(time.time())
    good = signed_headers(body, SLACK_TEST_SIGNING_SECRET, content_type=content_type)
    return {
        "signed with another secret": signed_headers(body, "not-the-signing-secret", content_type=content_type),
        "signature of another body": {**good, "X-Slack-Signature": signed_headers(
            body + "&x=1", SLACK_TEST_SIGNING_SECRET)["X-Slack-Signature"]},
        "replayed capture, timestamp 301 s old": signed_headers(body, SLACK_TEST_SIGNING_SECRET, timestamp=now - 301,
                                                                content_type=content_type),
        "replayed capture, timestamp an hour old": signed_headers(body, SLACK_TEST_SIGNING_SECRET,
                                                                  timestamp=now - 3600, content_type=content_type),
        "timestamp 10 minutes ahead": signed_headers(body, SLACK_TEST_SIGNING_SECRET, timestamp=now + 600,
                                                     content_type=content_type),
        "no signature header": without(good, "X-Slack-Signature"),
        "no timestamp header": without(good, "X-Slack-Request-Timestamp"),
        "no Slack headers at all": {"Content-Type": content_type},
        "empty signature": {**good, "X-Slack-Signature": "v0="},
        "signature without the v0= prefix": {**good, "X-Slack-Signature": good["X-Slack-Signature"][3:]},
    }


async def assert_nothing_happened(bot: RunningBot, local_slack: Any, case: str) -> None:
    await asyncio.sleep(0.3)  # what a worker would have picked up by now
    stats = await bot.rt.queue.stats()
    assert (stats.depth, stats.pending, stats.delayed) == (0, 0, 0), f"{case}: something was queued: {stats}"
    assert [key async for key in bot.rt.redis.scan_iter(match=bot.rt.key("diag", "*"))] == [], case
    calls = [c.method for c in local_slack.calls if c.method != "auth.test"]  # start-up's own, not the request's
    assert calls == [], f"{case}: Slack was called: {calls}"


async def test_unsigned_forged_and_stale_requests_get_401_and_change_nothing(local_slack, redis_url, tmp_path):
    with closed_port() as (host, port):
        services = {"api": {"http": [{"url": f"http://{host}:{port}/", "samples": 1, "timeout_s": 1}]}}
        async with running_bot(local_slack, redis_url, tmp_path, services=services) as bot:
            requests = {
                "/diagnose api": (slash_command_body("/diagnose", "api", channel_id=bot.channel,
                                                     response_url=local_slack.response_url()), FORM),
                "button click": (block_action_body("incident_resolve", "INC-1", channel_id=bot.channel,
                                                   message_ts="1.000001", response_url=local_slack.response_url()),
                                 FORM),
                "message event": (event_body({"type": "message", "channel": bot.channel, "user": "U1",
                                              "text": "<!channel> hi", "ts": "1.000002"}, event_id="EvFORGED"),
                                  "application/json"),
            }
            for what, (body, content_type) in requests.items():
                for case, headers in forged_variants(body, content_type).items():
                    response = await bot.http.post(bot.base_url + "/slack/events", content=body.encode(),
                                                   headers=headers)
                    assert response.status_code == 401, f"{what}, {case}: {response.status_code} {response.text}"
                    assert "Traceback" not in response.text
            await assert_nothing_happened(bot, local_slack, "forged requests")

            # The control: the same command, properly signed, does start a diagnosis.
            body, _ = requests["/diagnose api"]
            accepted = await bot.post_signed("/slack/events", body, FORM)
            assert accepted.status_code == 200 and "Queued 1 checks" in accepted.json()["text"]


async def test_a_request_s_signature_is_checked_once_and_a_bad_one_is_refused(local_slack, redis_url, tmp_path,
                                                                               monkeypatch):
    """Bolt's own check is switched off for the bot's quieter one (bot/app/slack_gate.py): exactly one of them runs."""
    checked: list[bool] = []
    is_valid = SignatureVerifier.is_valid

    def counted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        checked.append(is_valid(self, *args, **kwargs))
        return checked[-1]

    monkeypatch.setattr(SignatureVerifier, "is_valid", counted)
    async with running_bot(local_slack, redis_url, tmp_path, services={"api": {}}) as bot:
        body = slash_command_body("/diagnose", "help", channel_id=bot.channel, response_url=local_slack.response_url())
        accepted = await bot.post_signed("/slack/events", body, FORM)
        assert accepted.status_code == 200 and checked == [True]
        forged = {**signed_headers(body, "not-the-signing-secret"), "Content-Type": FORM}
        refused = await bot.http.post(bot.base_url + "/slack/events", content=body.encode(), headers=forged)
        assert refused.status_code == 401 and checked == [True, False]


async def test_a_timestamp_that_is_not_a_number_gets_401_not_500(local_slack, redis_url, tmp_path):
    async with running_bot(local_slack, redis_url, tmp_path, services={"api": {}}) as bot:
        body = slash_command_body("/diagnose", "api", channel_id=bot.channel, response_url=local_slack.response_url())
        headers = {**signed_headers(body, SLACK_TEST_SIGNING_SECRET), "X-Slack-Request-Timestamp": "yesterday"}
        response = await bot.http.post(bot.base_url + "/slack/events", content=body.encode(), headers=headers)
        await assert_nothing_happened(bot, local_slack, "timestamp not a number")
        assert response.status_code == 401


async def test_a_replay_inside_the_300_s_window_does_not_start_a_second_run(local_slack, redis_url, tmp_path):
    """Slack's scheme cannot tell a replay within 300 s from the original; the command itself must be idempotent."""
    with closed_port() as (host, port):
        services = {"api": {"http": [{"url": f"http://{host}:{port}/", "samples": 1, "timeout_s": 1}]}}
        async with running_bot(local_slack, redis_url, tmp_path, services=services) as bot:
            body = slash_command_body("/diagnose", "api", channel_id=bot.channel,
                                      response_url=local_slack.response_url())
            headers = signed_headers(body, SLACK_TEST_SIGNING_SECRET)
            first = await bot.http.post(bot.base_url + "/slack/events", content=body.encode(), headers=headers)
            replay = await bot.http.post(bot.base_url + "/slack/events", content=body.encode(), headers=headers)
            assert "Queued" in first.json()["text"]
            assert "already running" in replay.json()["text"]
            await bot.settle()
            assert len(bot.parents()) == 1


# --------------------------------------------------------------------------------------- property-based input

HOSTILE_WORDS = [
    "<!channel>", "<!here>", "<!everyone>", "<@U1|alice>", "<@UOUT|outsider>", "<@U999>", "<!subteam^S1|@sre>",
    "*bold*", "_it_", "~s~", "`", "```", "&amp;", "&", "<", ">", "P0", "p1", "sev2", "P7", "INC-1", "INC-0",
    "INC-99999999999", "declare", "status", "sev", "commander", "note", "ack", "resolve", "list", "help", "api",
    "checkout", "@bob", "http://169.254.169.254/latest", "../../etc/passwd", "\n", "\t", "\u202e", "\u200b",
    "🔥", "x" * 300, "Traceback", "{}", "%s", "'; DROP TABLE", "\\",
]
command_text = st.one_of(
    st.text(max_size=400),
    st.lists(st.one_of(st.sampled_from(HOSTILE_WORDS), st.text(max_size=12)), max_size=12).map(" ".join),
)


@contextlib.contextmanager
def driven(bot_context: Any) -> Iterator[tuple[asyncio.Runner, Any]]:
    """An async bot driven from synchronous code: hypothesis calls a plain function per example, and each
    example runs its requests on the bot's own loop (the same loop for the whole test, so one bot per test)."""
    with asyncio.Runner() as runner:
        bot = runner.run(bot_context.__aenter__())
        try:
            yield runner, bot
        finally:
            runner.run(bot_context.__aexit__(None, None, None))


async def timed_post(bot: IncidentBot, body: str) -> tuple[Any, float]:
    started = time.perf_counter()
    response = await bot.post_slack(body, FORM)
    return response, time.perf_counter() - started


def assert_inert_answer(text: str, user_input: str, what: str) -> None:
    assert "Traceback (most recent call last)" not in text and "File \"/" not in text, f"{what}: {text}"
    echoed = [m for m in live_mentions(text) if m in user_input]
    assert not echoed, f"{what}: the answer repeats live mentions from the input: {echoed}"
    assert "<!channel>" not in text and "<!here>" not in text and "<!everyone>" not in text, f"{what}: {text}"


def test_any_text_to_any_slash_command_gets_a_prompt_inert_answer(local_slack, redis_url, tmp_path):
    with driven(incident_bot(local_slack, redis_url, tmp_path)) as (runner, bot):
        declared = runner.run(bot.command("/incident", "Checkout down P3 checkout"))
        assert "INC-1" in declared, declared

        @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(command=st.sampled_from(["/diagnose", "/incident", "/escalate"]), text=command_text,
               user=st.sampled_from(["U1", "UOUT"]))
        def answers(command: str, text: str, user: str) -> None:
            body = slash_command_body(command, text, user_id=user, channel_id=bot.channel,
                                      response_url=local_slack.response_url(), trigger_id=uuid.uuid4().hex)
            response, took = runner.run(timed_post(bot, body))
            what = f"{command} {text!r} by {user}"
            assert response.status_code == 200, f"{what}: HTTP {response.status_code} {response.text[:300]}"
            assert took < ANSWER_WITHIN_S, f"{what}: answered after {took:.2f} s"
            answer = response.json().get("text", "")
            assert answer.strip(), f"{what}: an empty answer tells the user nothing"
            assert_inert_answer(answer, text, what)

        answers()


ACTION_IDS = ["incident_ack", "incident_diagnose", "incident_escalate", "incident_resolve"]
RANDOM_ID = "<a random action id>"
SHAPES = ["button", "no value", "select menu", "no user", "two actions"]


def shaped(body: str, shape: str) -> str:
    """The click payload bent into shapes Slack sends for other components, or that a forger would send."""
    payload = json.loads(parse_qs(body)["payload"][0])
    action = payload["actions"][0]
    if shape == "no value":
        del action["value"]
    elif shape == "select menu":
        action.update(type="static_select", selected_option={"value": action.pop("value"),
                                                             "text": {"type": "plain_text", "text": "x"}})
    elif shape == "no user":
        del payload["user"]
    elif shape == "two actions":
        payload["actions"] = [action, {**action, "action_id": "incident_resolve"}]
    return urlencode({"payload": json.dumps(payload)})


def test_any_button_payload_gets_a_prompt_ack_and_an_inert_answer(local_slack, redis_url, tmp_path):
    with driven(incident_bot(local_slack, redis_url, tmp_path)) as (runner, bot):
        declared = runner.run(bot.command("/incident", "Checkout down P3 checkout"))
        assert "INC-1" in declared, declared
        answers = functools.partial(local_slack.calls_to, "response_url")
        outcomes: collections.Counter[int] = collections.Counter()

        @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(action_id=st.sampled_from([*ACTION_IDS, RANDOM_ID]), random_id=st.text(min_size=1, max_size=40),
               value=st.one_of(st.sampled_from(["INC-1", "INC-2", "inc-1", " INC-1 ", "INC-0", ""]), command_text),
               user=st.sampled_from(["U1", "UOUT", "U999"]), shape=st.sampled_from(SHAPES))
        def clicks(action_id: str, random_id: str, value: str, user: str, shape: str) -> None:
            action_id = random_id if action_id == RANDOM_ID else action_id
            before = len(answers())
            url = local_slack.response_url(channel=bot.channel, user=user, message_ts="1.000001")
            body = shaped(block_action_body(action_id, value, user_id=user, channel_id=bot.channel,
                                            message_ts="1.000001", response_url=url, trigger_id=uuid.uuid4().hex),
                          shape)
            response, took = runner.run(timed_post(bot, body))
            outcomes[response.status_code] += 1
            what = f"{action_id!r} value {value!r} by {user}, {shape}"
            assert response.status_code != 500, f"{what}: HTTP 500 {response.text[:300]}"
            assert took < ANSWER_WITHIN_S, f"{what}: acknowledged after {took:.2f} s"
            if action_id not in ACTION_IDS:
                return  # no listener: Bolt's own 404, and nothing to say to anyone
            assert response.status_code == 200, f"{what}: HTTP {response.status_code}"
            runner.run(wait_until(lambda: len(answers()) > before, what=f"{what}: the answer"))
            assert_inert_answer(json.dumps(answers()[before].params), value, what)

        clicks()
        assert outcomes[200] >= 20, f"too few clicks reached a listener to say anything: {outcomes}"


async def test_a_signed_click_without_actions_gets_an_answer_not_500(local_slack, redis_url, tmp_path):
    async with running_bot(local_slack, redis_url, tmp_path, services={}) as bot:
        body = block_action_body("incident_ack", "INC-1", channel_id=bot.channel, message_ts="1.000001",
                                 response_url=local_slack.response_url())
        payload = json.loads(parse_qs(body)["payload"][0])
        without_actions = urlencode({"payload": json.dumps({**payload, "actions": []})})
        response = await bot.post_signed("/slack/events", without_actions, FORM)
        assert response.status_code != 500


async def wait_until(predicate: Any, *, what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------------------- injection into diagnose output

INJECTION = "<!channel> <!here> <@U1|alice> <!subteam^S1|@sre> *bold* `code` ```fence``` _it_ ~s~ &amp;"


def posted_by_the_bot(local_slack: Any) -> list[Any]:
    return local_slack.calls_to("chat.postMessage") + local_slack.calls_to("chat.update")


def assert_within_block_kit_limits(call: Any) -> None:
    assert call.status == 200 and call.response and call.response.get("ok"), (call.method, call.response)
    blocks = call.params.get("blocks") or []
    assert len(blocks) <= 50
    for block in blocks:
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000
        if block["type"] == "context":
            assert all(len(e.get("text", "")) <= 3000 for e in block["elements"])
    assert len(call.params.get("text") or "") <= 40000


async def diagnose_redirecting_service(local_slack: Any, redis_url: str, tmp_path: Any, location: str,
                                       probes: int = 1) -> list[Any]:
    """`/diagnose api` where the endpoint answers 302 with `location`: the Location reaches the summary, the
    evidence and the verdict. Returns every chat.postMessage / chat.update call the bot made."""
    with local_http_server({"/health": Reply(302, b"", headers={"Location": location})}) as server:
        services = {"api": {"description": INJECTION, "http": [
            {"url": server.url(f"/health?p={n}"), "samples": 1, "timeout_s": 1} for n in range(probes)]}}
        async with running_bot(local_slack, redis_url, tmp_path, services=services) as bot:
            listing = (await bot.command("/diagnose", "list")).json()["text"]
            assert "&lt;!channel&gt;" in listing and not live_mentions(listing)
            assert "Queued" in (await bot.command("/diagnose", "api")).json()["text"]
            await bot.settle()
            [parent] = bot.parents()
            assert len(local_slack.replies(bot.channel, parent.ts)) == probes
    calls = posted_by_the_bot(local_slack)
    assert calls and any("redirect" in json.dumps(c.params) for c in calls), "the Location never reached Slack"
    return calls


async def test_mentions_from_a_probed_service_render_inert_in_thread_and_verdict(local_slack, redis_url, tmp_path):
    calls = await diagnose_redirecting_service(local_slack, redis_url, tmp_path, f"/next {INJECTION}")
    for call in calls:
        assert_within_block_kit_limits(call)
        blocks = json.dumps(call.params.get("blocks"), ensure_ascii=False)
        assert not live_mentions(blocks), (call.method, live_mentions(blocks))
        assert call.params.get("link_names") in (None, False, "false", 0, "0")
        assert call.params.get("parse") in (None, "none")
    assert any("&lt;!channel&gt;" in json.dumps(c.params.get("blocks")) for c in calls)


async def test_mentions_from_a_probed_service_stay_out_of_the_notification_text(local_slack, redis_url, tmp_path):
    calls = await diagnose_redirecting_service(local_slack, redis_url, tmp_path, f"/next {INJECTION}")
    assert [c.params.get("text") for c in calls if live_mentions(c.params.get("text") or "")] == []


async def test_ten_kilobytes_from_a_probed_service_stay_within_block_kit_limits(local_slack, redis_url, tmp_path):
    location = "/" + (INJECTION + " ") * (10_000 // (len(INJECTION) + 1))
    calls = await diagnose_redirecting_service(local_slack, redis_url, tmp_path, location, probes=12)
    for call in calls:  # 12 probes: more than GROUP_AFTER, so the grouped reply is exercised too
        assert_within_block_kit_limits(call)
        assert not live_mentions(json.dumps(call.params.get("blocks"), ensure_ascii=False))


async def test_formatting_from_a_probed_service_cannot_restyle_the_thread(local_slack, redis_url, tmp_path):
    calls = await diagnose_redirecting_service(local_slack, redis_url, tmp_path, "/x *bold* ```fence```")
    block_texts = [json.dumps(c.params.get("blocks"), ensure_ascii=False) for c in calls]
    assert not any("*bold*" in text or "```fence```" in text for text in block_texts)
