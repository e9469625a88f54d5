"""LocalSlack driven by the real slack_sdk clients, the way the bot and its workers will drive it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from urllib.parse import parse_qs

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.local import LocalSlack, delay, http_error, slack_error
from bot.slack.local.rate_limits import RateLimits
from tests.fixtures.slack import (
    SLACK_TEST_SIGNING_SECRET,
    block_action_body,
    event_body,
    signed_headers,
    slash_command_body,
)

TOKEN = "xoxb-test-token"


@pytest.fixture
def client(local_slack: LocalSlack) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=local_slack.url)


@pytest.fixture
def sync_client(local_slack: LocalSlack) -> WebClient:
    return WebClient(token=TOKEN, base_url=local_slack.url)


def section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


async def test_post_reply_update_is_visible_in_state_api_and_to_subscribers(local_slack, client):
    seen: list[tuple[str, dict]] = []
    local_slack.subscribe(lambda name, data: seen.append((name, data)))

    parent = await client.chat_postMessage(channel="#general", text="Incident declared", blocks=[section("*SEV2*")])
    reply = await client.chat_postMessage(channel="C1", text="checking api", thread_ts=parent["ts"])
    updated = await client.chat_update(channel="C1", ts=parent["ts"], text="Incident resolved")

    assert parent["channel"] == "C1" and parent["message"]["bot_id"]
    assert float(reply["ts"]) > float(parent["ts"])
    assert updated["message"]["edited"]["user"] == "UBOT"
    [top] = local_slack.messages("C1")
    assert (top.text, top.blocks, top.edited) == ("Incident resolved", [section("*SEV2*")], True)
    assert [m.text for m in local_slack.replies("C1", parent["ts"])] == ["checking api"]
    thread = await client.conversations_replies(channel="C1", ts=parent["ts"])
    assert [m["ts"] for m in thread["messages"]] == [parent["ts"], reply["ts"]]
    assert thread["messages"][0]["reply_count"] == 1
    assert [name for name, _ in seen] == ["message", "message", "update"]
    assert seen[1][1]["thread_ts"] == parent["ts"]


async def test_history_and_replies_paginate_across_pages(local_slack, client):
    stamps = [(await client.chat_postMessage(channel="C1", text=f"m{i}"))["ts"] for i in range(7)]
    parent = stamps[0]
    replies = [(await client.chat_postMessage(channel="C1", text=f"r{i}", thread_ts=parent))["ts"] for i in range(5)]

    # slack_sdk's iterator reuses one response object: keep each page's data
    pages = [page.data async for page in await client.conversations_history(channel="C1", limit=3)]
    assert [len(p["messages"]) for p in pages] == [3, 3, 1]
    assert [p["has_more"] for p in pages] == [True, True, False]
    assert [m["ts"] for p in pages for m in p["messages"]] == stamps[::-1]  # newest first

    thread_pages = [page.data async for page in await client.conversations_replies(channel="C1", ts=parent, limit=3)]
    assert all(p["messages"][0]["ts"] == parent for p in thread_pages)  # Slack repeats the parent per page
    assert [m["ts"] for p in thread_pages for m in p["messages"][1:]] == replies

    window = await client.conversations_history(channel="C1", oldest=stamps[2], latest=stamps[5])
    assert [m["ts"] for m in window["messages"]] == [stamps[4], stamps[3]]
    inclusive = await client.conversations_history(channel="C1", oldest=stamps[2], latest=stamps[5], inclusive=True)
    assert len(inclusive["messages"]) == 4


async def test_a_scripted_429_is_retried_after_retry_after(local_slack):
    local_slack.script("chat.postMessage", http_error(429, retry_after=1))
    client = AsyncWebClient(token=TOKEN, base_url=local_slack.url,
                            retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)])

    started = time.monotonic()
    await client.chat_postMessage(channel="C1", text="after the storm")
    elapsed = time.monotonic() - started

    first, second = local_slack.calls_to("chat.postMessage")
    assert elapsed >= 1.0
    assert (first.status, first.response["error"], second.status) == (429, "ratelimited", 200)
    assert second.at - first.at >= 1.0
    assert [m.text for m in local_slack.messages("C1")] == ["after the storm"]


async def test_a_scripted_500_surfaces_then_normal_behaviour_resumes(local_slack, client):
    local_slack.script("chat.postMessage", http_error(500), slack_error("channel_not_found"))

    with pytest.raises(SlackApiError) as server_error:
        await client.chat_postMessage(channel="C1", text="one")
    with pytest.raises(SlackApiError) as slack_said:
        await client.chat_postMessage(channel="C1", text="two")
    third = await client.chat_postMessage(channel="C1", text="three")

    assert server_error.value.response.status_code == 500
    assert slack_said.value.response["error"] == "channel_not_found"
    assert third["ok"] and [m.text for m in local_slack.messages("C1")] == ["three"]


async def test_a_scripted_delay_answers_normally_but_late(local_slack, client):
    local_slack.script("auth.test", delay(0.3))
    started = time.monotonic()
    answer = await client.auth_test()
    assert time.monotonic() - started >= 0.3
    assert answer["user_id"] == "UBOT"


def _outcome(call) -> object:  # type: ignore[no-untyped-def]
    try:
        call()
        return "ok"
    except SlackApiError as error:
        return error.response.status_code, error.response["error"], error.response.headers.get("Retry-After")


def test_posts_to_one_channel_past_slacks_burst_are_refused_as_slack_refuses_them(local_slack, sync_client):
    local_slack.add_channel("other", members=["UBOT"])
    burst = [_outcome(lambda i=i: sync_client.chat_postMessage(channel="C1", text=f"m{i}")) for i in range(26)]
    elsewhere = _outcome(lambda: sync_client.chat_postMessage(channel="other", text="another channel"))

    assert burst[:25] == ["ok"] * 25  # Slack tolerates short bursts
    assert burst[25] == (429, "ratelimited", "1")  # then about one a second per channel
    assert elsewhere == "ok"  # the limit is the channel's, not the method's
    assert len(local_slack.messages("C1")) == 25
    assert local_slack.calls_to("chat.postMessage")[25].status == 429
    assert local_slack.rate_limits.refused == 1


def test_a_channel_may_post_again_once_its_bucket_refills():
    with LocalSlack(bot_token=TOKEN, rate_limits=RateLimits(post_burst=1)) as slack:
        client = WebClient(token=TOKEN, base_url=slack.url)
        first, second = (_outcome(lambda: client.chat_postMessage(channel="C1", text="x")) for _ in range(2))
        time.sleep(1.05)
        third = _outcome(lambda: client.chat_postMessage(channel="C1", text="y"))

    assert (first, second[0], third) == ("ok", 429, "ok")


def test_a_tier_2_method_is_refused_past_twenty_a_minute_and_says_when_to_come_back(local_slack, sync_client):
    made = [_outcome(lambda i=i: sync_client.conversations_create(name=f"inc-{i}")) for i in range(21)]
    reads = [_outcome(lambda: sync_client.users_info(user="U1")) for _ in range(21)]  # Tier 4: still allowed

    assert made[:20] == ["ok"] * 20
    status, error, retry_after = made[20]  # type: ignore[misc]
    assert (status, error) == (429, "ratelimited") and int(retry_after) in (1, 2, 3)  # 20 a minute: one more in 3 s
    assert reads == ["ok"] * 21
    assert not any(c["name"] == "inc-20" for c in local_slack.channels())


def test_rate_limits_can_be_turned_off_for_a_test_that_says_why():
    with LocalSlack(bot_token=TOKEN, rate_limits=RateLimits(enabled=False)) as slack:
        client = WebClient(token=TOKEN, base_url=slack.url)
        outcomes = {_outcome(lambda i=i: client.conversations_create(name=f"c-{i}")) for i in range(25)}
    assert outcomes == {"ok"}


def test_fail_every_makes_a_storm_that_ends(local_slack, sync_client):
    local_slack.fail_every(2, retry_after=3, methods={"chat.postMessage"}, for_s=0.3)

    outcomes = []
    for i in range(4):
        try:
            sync_client.chat_postMessage(channel="C1", text=f"m{i}")
            outcomes.append("ok")
        except SlackApiError as error:
            outcomes.append((error.response.status_code, error.response.headers.get("Retry-After")))
    sync_client.auth_test()  # other methods are untouched by this storm
    time.sleep(0.35)
    sync_client.chat_postMessage(channel="C1", text="after")
    sync_client.chat_postMessage(channel="C1", text="after again")

    assert outcomes == ["ok", (429, "3"), "ok", (429, "3")]
    assert len(local_slack.messages("C1")) == 4


async def test_not_in_channel_until_the_bot_joins(local_slack, client):
    ops = local_slack.add_channel("ops", bot_member=False)
    joined = []
    local_slack.subscribe(lambda name, data: joined.append(data) if name == "member_joined" else None)

    with pytest.raises(SlackApiError) as refused:
        await client.chat_postMessage(channel=ops, text="hello")
    await client.conversations_join(channel=ops)
    posted = await client.chat_postMessage(channel=ops, text="hello")

    assert refused.value.response["error"] == "not_in_channel"
    assert posted["ok"] and joined == [{"channel": ops, "user": "UBOT", "inviter": None}]


async def test_private_channels_the_bot_is_not_in_do_not_exist_for_it(local_slack, client):
    secret = local_slack.add_channel("secret", is_private=True, bot_member=False, members=["U1"])
    with pytest.raises(SlackApiError) as hidden:
        await client.conversations_info(channel=secret)
    listed = await client.conversations_list(types="public_channel,private_channel")
    assert hidden.value.response["error"] == "channel_not_found"
    assert [c["name"] for c in listed["channels"]] == ["general"]


async def test_files_upload_v2_end_to_end_shares_into_the_thread(local_slack, client):
    parent = await client.chat_postMessage(channel="C1", text="Incident")
    upload = await client.files_upload_v2(content="# Timeline\n- 10:02 paged", filename="timeline.md",
                                          title="Timeline", channel="C1", thread_ts=parent["ts"],
                                          initial_comment="Full timeline")

    assert [c.method for c in local_slack.calls if c.method != "chat.postMessage"] == [
        "files.getUploadURLExternal", "upload", "files.completeUploadExternal"]
    [stored] = local_slack.files("C1")
    assert (stored["id"], stored["title"], stored["content"]) == (
        upload["file"]["id"], "Timeline", b"# Timeline\n- 10:02 paged")
    [share] = local_slack.replies("C1", parent["ts"])
    assert share.text == "Full timeline" and share.files[0]["name"] == "timeline.md"
    download = httpx.get(stored["url_private"], headers={"Authorization": f"Bearer {TOKEN}"})
    assert download.content == b"# Timeline\n- 10:02 paged"


async def test_canvases_keep_their_markdown_and_one_channel_canvas(local_slack, client):
    doc = {"type": "markdown", "markdown": "# Postmortem\n## Impact"}
    created = await client.canvases_create(title="INC-7 postmortem", document_content=doc)
    await client.conversations_canvases_create(channel_id="C1", document_content=doc)
    with pytest.raises(SlackApiError) as second:
        await client.conversations_canvases_create(channel_id="C1", document_content=doc)

    [standalone, channel_canvas] = local_slack.canvases()
    assert standalone == {**standalone, "canvas_id": created["canvas_id"], "title": "INC-7 postmortem",
                          "markdown": "# Postmortem\n## Impact", "channel": None}
    assert channel_canvas["kind"] == "channel"
    assert second.value.response["error"] == "channel_canvas_already_exists"


async def test_concurrent_posts_all_land_with_strictly_increasing_ts(local_slack, client):
    local_slack.rate_limits.enabled = False  # 40 at once is past Slack's burst for a channel; this is about ts
    answers = await asyncio.gather(*[client.chat_postMessage(channel="C1", text=str(i)) for i in range(40)])
    stored = [m.ts for m in local_slack.messages("C1")]
    assert len(set(stored)) == 40 and sorted(a["ts"] for a in answers) == stored
    assert stored == sorted(stored, key=float)


def test_a_subscriber_may_call_the_api_from_its_callback(local_slack, sync_client):
    """The terminal chat's shape: a callback reacting to a change by calling Slack must not deadlock."""
    def echo(name: str, data: dict) -> None:
        if name == "message" and data["user"] == "U1":
            sync_client.chat_postMessage(channel=data["channel"], text=f"echo {data['text']}", thread_ts=data["ts"])
    local_slack.subscribe(echo)

    ts = local_slack.post_user_message("general", "U1", "anyone there?")

    assert local_slack.wait_for(lambda: len(local_slack.replies("C1", ts)) == 1, timeout=3)
    assert local_slack.replies("C1", ts)[0].text == "echo anyone there?"


def test_a_wrong_or_missing_token_is_refused(local_slack):
    wrong = WebClient(token="xoxb-wrong", base_url=local_slack.url)
    missing = WebClient(base_url=local_slack.url)
    errors = []
    for client in (wrong, missing):
        with pytest.raises(SlackApiError) as refused:
            client.chat_postMessage(channel="C1", text="x")
        errors.append(refused.value.response["error"])
    assert errors == ["invalid_auth", "not_authed"]
    assert local_slack.messages("C1") == []


@pytest.mark.parametrize(("name", "error"), [
    ("INC-42", "invalid_name_specials"),
    ("inc 42", "invalid_name_specials"),
    ("i" * 81, "invalid_name_maxlength"),
    ("general", "name_taken"),
    ("---", "invalid_name_punctuation"),
])
def test_conversations_create_enforces_name_rules(sync_client, name, error):
    with pytest.raises(SlackApiError) as refused:
        sync_client.conversations_create(name=name)
    assert refused.value.response["error"] == error


def test_conversations_create_makes_a_channel_the_bot_is_in(local_slack, sync_client):
    created = sync_client.conversations_create(name="inc-2026-db_" + "x" * 68)
    assert created["channel"]["is_member"] and created["channel"]["creator"] == "UBOT"
    assert local_slack.channel(created["channel"]["id"])["members"] == ["UBOT"]


@pytest.mark.parametrize(("blocks", "pointer"), [
    ([section("x")] * 51, "/blocks"),
    ([{"type": "sectoin", "text": {"type": "mrkdwn", "text": "typo"}}], "/blocks/0/type"),
    ([section("x" * 3001)], "/blocks/0/text/text"),
    ([{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}], "/blocks/0/text/text"),
])
def test_block_kit_limits_are_enforced(sync_client, blocks, pointer):
    with pytest.raises(SlackApiError) as refused:
        sync_client.chat_postMessage(channel="C1", text="fallback", blocks=blocks)
    assert refused.value.response["error"] == "invalid_blocks"
    assert pointer in refused.value.response["errors"][0]


def test_long_text_is_truncated_and_big_block_payloads_refused(local_slack, sync_client):
    sync_client.chat_postMessage(channel="C1", text="y" * 40_001)
    with pytest.raises(SlackApiError) as refused:
        sync_client.chat_postMessage(channel="C1", text="t", blocks=[section("z" * 2900)] * 5)
    assert len(local_slack.messages("C1")[0].text) == 40_000
    assert refused.value.response["error"] == "msg_blocks_too_long"


def test_form_and_json_bodies_record_the_same_params(local_slack, sync_client):
    blocks = [section("hi")]
    sync_client.api_call("chat.postMessage", data={"channel": "C1", "text": "form", "blocks": json.dumps(blocks)})
    sync_client.api_call("chat.postMessage", json={"channel": "C1", "text": "json", "blocks": blocks})
    form, as_json = local_slack.calls_to("chat.postMessage")
    assert form.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert as_json.headers["Content-Type"].startswith("application/json")
    assert form.params["blocks"] == as_json.params["blocks"] == blocks
    assert [m.blocks for m in local_slack.messages("C1")] == [blocks, blocks]


def test_invite_is_all_or_nothing_unless_forced(local_slack, sync_client):
    local_slack.add_user("U2", "bob")
    room = local_slack.add_channel("inc-1", members=["U1"])
    with pytest.raises(SlackApiError) as already:
        sync_client.conversations_invite(channel=room, users=["U1", "U2"])
    assert already.value.response["error"] == "already_in_channel"
    assert "U2" not in local_slack.channel(room)["members"]

    forced = sync_client.conversations_invite(channel=room, users=["U1", "U2"], force=True)
    assert forced["errors"] == [{"user": "U1", "ok": False, "error": "already_in_channel"}]
    assert local_slack.channel(room)["members"] == ["UBOT", "U1", "U2"]


def test_ephemerals_and_response_urls(local_slack, sync_client):
    button = sync_client.chat_postMessage(channel="C1", text="Ack?", blocks=[section("Ack?")])
    sync_client.chat_postEphemeral(channel="C1", user="U1", text="only you")
    url = local_slack.response_url(channel="C1", user="U1", message_ts=button["ts"])

    httpx.post(url, json={"text": "Queued 9 checks"})
    httpx.post(url, json={"response_type": "in_channel", "text": "Diagnosis started"})
    httpx.post(url, json={"replace_original": True, "text": "Acked by alice"})
    for _ in range(2):
        httpx.post(url, json={"text": "more"})
    sixth = httpx.post(url, json={"text": "too many"})

    assert [e["source"] for e in local_slack.ephemerals("C1")][:2] == ["chat.postEphemeral", "response_url"]
    assert [m.text for m in local_slack.messages("C1")] == ["Acked by alice", "Diagnosis started"]
    assert (sixth.status_code, sixth.json()["error"]) == (404, "used_url")


def test_reactions_pins_permalinks_and_people(local_slack, sync_client):
    local_slack.add_user("U2", "bob", email="bob@example.com", is_admin=True)
    oncall = local_slack.add_usergroup("oncall", ["U1", "U2"])
    posted = sync_client.chat_postMessage(channel="C1", text="Root cause found")
    sync_client.reactions_add(channel="C1", timestamp=posted["ts"], name="white_check_mark")
    sync_client.pins_add(channel="C1", timestamp=posted["ts"])
    link = sync_client.chat_getPermalink(channel="C1", message_ts=posted["ts"])["permalink"]

    [message] = local_slack.messages("C1")
    assert message.reactions == {"white_check_mark": ["UBOT"]} and message.pinned
    assert sync_client.pins_list(channel="C1")["items"][0]["message"]["ts"] == posted["ts"]
    assert link == f"https://local.slack/archives/C1/p{posted['ts'].replace('.', '')}"
    assert sync_client.chat_getPermalink(channel="C1", message_ts=posted["ts"])["permalink"] == link
    assert sync_client.users_lookupByEmail(email="bob@example.com")["user"]["is_admin"]
    assert sync_client.usergroups_users_list(usergroup=oncall)["users"] == ["U1", "U2"]
    dm = sync_client.conversations_open(users="U2")["channel"]["id"]
    assert dm.startswith("D") and sync_client.chat_postMessage(channel=dm, text="you're paged")["ok"]


def test_unknown_methods_fail_loudly(sync_client):
    with pytest.raises(SlackApiError) as refused:
        sync_client.api_call("chat.postMesage", json={"channel": "C1", "text": "typo"})
    assert refused.value.response["error"] == "unknown_method"


def test_a_human_message_becomes_the_event_slack_would_send(local_slack):
    ts = local_slack.post_user_message("general", "U1", "db is down")
    event = local_slack.message_event("C1", ts)
    envelope = json.loads(event_body(event, event_id="Ev1"))
    assert event == {**event, "type": "message", "channel": "C1", "user": "U1", "text": "db is down",
                     "channel_type": "channel", "event_ts": ts}
    assert envelope["type"] == "event_callback" and envelope["event"]["ts"] == ts


def test_inbound_payloads_are_signed_like_slack(local_slack):
    body = slash_command_body("/incident", "declare db down", response_url=local_slack.response_url())
    headers = signed_headers(body, SLACK_TEST_SIGNING_SECRET)
    verifier = SignatureVerifier(SLACK_TEST_SIGNING_SECRET)
    assert verifier.is_valid(body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"])
    assert "command=%2Fincident" in body and "channel_id=C1" in body
    action = json.loads(parse_qs(block_action_body("ack", "INC-1", message_ts="1.000001",
                                                    response_url="http://x/"))["payload"][0])
    assert (action["type"], action["actions"][0]["value"], action["channel"]["id"]) == ("block_actions", "INC-1", "C1")


def test_another_process_reaches_it_through_slack_api_url(local_slack):
    script = ("import os; from slack_sdk import WebClient; "
              "WebClient(token='xoxb-test-token', base_url=os.environ['SLACK_API_URL'])"
              ".chat_postMessage(channel='C1', text='from a worker')")
    env = {**os.environ, "SLACK_API_URL": local_slack.url}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=30)
    assert [m.text for m in local_slack.messages("C1")] == ["from a worker"]


def test_add_channel_on_an_existing_name_adds_the_members(local_slack):
    local_slack.add_user("U2", "bob")
    assert local_slack.add_channel("general", members=["U2"]) == "C1"
    assert "U2" in local_slack.channel("C1")["members"]
    with pytest.raises(KeyError):
        local_slack.add_channel("ops", members=["U404"])


def test_channel_events_name_the_channel_by_id(local_slack, sync_client):
    seen = []
    local_slack.subscribe(lambda name, data: seen.append((name, data)))
    created = sync_client.conversations_create(name="inc-9")["channel"]["id"]
    sync_client.conversations_setTopic(channel=created, topic="db down")
    assert seen == [
        ("channel_created", {"channel": created, "id": created, "name": "inc-9", "is_private": False,
                             "created": seen[0][1]["created"], "creator": "UBOT"}),
        ("topic", {"channel": created, "topic": "db down", "user": "UBOT"}),
    ]
