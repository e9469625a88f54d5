"""Every message the bot sends must be one real Slack accepts.

The local Slack refuses what Slack refuses, with Slack's own error names; the bot's renderers keep big things
(many findings, a long title, 500 services) inside the limits and say "…and N more" instead of losing them.
"""

from __future__ import annotations

import re

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.diagnosis.render.slack import grouped_message, verdict_message
from bot.incidents.messages import header
from bot.incidents.model import Incident
from bot.slack.limits import SLACK
from bot.slack.local import LocalSlack
from checks.model import CheckResult, Finding, Status, Verdict
from tests.app_harness import running_bot
from tests.fixtures.slack import SLACK_TEST_BOT_TOKEN


@pytest.fixture
def client(local_slack: LocalSlack) -> WebClient:
    return WebClient(token=SLACK_TEST_BOT_TOKEN, base_url=local_slack.url)


def section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def button(label: str = "Go", value: str = "v") -> dict:
    return {"type": "button", "action_id": "go", "text": {"type": "plain_text", "text": label}, "value": value}


def select(options: int) -> dict:
    return {"type": "static_select", "action_id": "pick", "placeholder": {"type": "plain_text", "text": "Pick"},
            "options": [{"text": {"type": "plain_text", "text": f"o{i}"}, "value": str(i)} for i in range(options)]}


OVER_THE_LIMIT = {
    "51 blocks": ([section("x")] * 51, "/blocks"),
    "a 3,001-character section": ([section("x" * 3001)], "/blocks/0/text/text"),
    "11 fields": ([{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}], "/blocks/0/fields"),
    "a 2,001-character field": ([{"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2001}]}],
                                "/blocks/0/fields/0/text"),
    "a 2,001-character context element": ([{"type": "context", "elements": [{"type": "mrkdwn", "text": "c" * 2001}]}],
                                          "/blocks/0/elements/0/text"),
    "11 context elements": ([{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}],
                            "/blocks/0/elements"),
    "a 151-character header": ([{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
                               "/blocks/0/text/text"),
    "a 76-character button label": ([{"type": "actions", "elements": [button(label="b" * 76)]}],
                                    "/blocks/0/elements/0/text/text"),
    "a 2,001-character button value": ([{"type": "actions", "elements": [button(value="v" * 2001)]}],
                                       "/blocks/0/elements/0/value"),
    "26 actions": ([{"type": "actions", "elements": [button()] * 26}], "/blocks/0/elements"),
    "101 select options": ([{"type": "actions", "elements": [select(101)]}], "/blocks/0/elements/0/options"),
    "a 256-character block_id": ([{**section("x"), "block_id": "b" * 256}], "/blocks/0/block_id"),
    "a too-long button on a section": ([{**section("x"), "accessory": button(label="b" * 76)}],
                                       "/blocks/0/accessory/text/text"),
}


@pytest.mark.parametrize(("blocks", "pointer"), OVER_THE_LIMIT.values(), ids=OVER_THE_LIMIT.keys())
@pytest.mark.parametrize("method", ["chat_postMessage", "chat_postEphemeral", "chat_update"])
def test_the_local_slack_refuses_what_slack_refuses_with_its_explanation(local_slack, client, method, blocks,
                                                                          pointer):
    ts = client.chat_postMessage(channel="C1", text="original")["ts"]
    where = {"chat_postMessage": {}, "chat_postEphemeral": {"user": "U1"}, "chat_update": {"ts": ts}}[method]
    with pytest.raises(SlackApiError) as refused:
        getattr(client, method)(channel="C1", text="fallback", blocks=blocks, **where)
    answer = refused.value.response
    assert answer["error"] == "invalid_blocks"
    assert any(f"[json-pointer:{pointer}]" in m and m.startswith("[ERROR] ")
               for m in answer["response_metadata"]["messages"])
    assert [m.text for m in local_slack.messages("C1")] == ["original"]  # nothing was posted or changed


def test_exactly_at_the_limits_is_accepted(local_slack, client):
    blocks = [{"type": "header", "text": {"type": "plain_text", "text": "h" * 150}},
              {"type": "actions", "elements": [button(label="b" * 75, value="v" * 2000), select(100)]},
              {"type": "context", "elements": [{"type": "mrkdwn", "text": "c" * 2000}] * 3},
              {**section("s" * 3000), "block_id": "b" * 255}] + [{"type": "divider"}] * 46
    client.chat_postMessage(channel="C1", text="fallback", blocks=blocks)
    assert len(local_slack.messages("C1")[0].blocks) == 50


def test_a_response_url_reply_over_the_limits_is_refused_and_shows_nothing(local_slack):
    url = local_slack.response_url(channel="C1", user="U1")
    answer = httpx.post(url, json={"text": "t", "blocks": [section("x" * 3001)]})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_blocks"
    assert local_slack.ephemerals() == []


def test_text_past_40000_characters_is_cut_with_slacks_warning_but_an_edit_to_it_is_refused(local_slack, client):
    posted = client.chat_postMessage(channel="C1", text="y" * 40_001)
    assert posted["response_metadata"]["warnings"] == ["message_truncated"]
    assert len(local_slack.messages("C1")[0].text) == SLACK.message_text
    with pytest.raises(SlackApiError) as refused:
        client.chat_update(channel="C1", ts=posted["ts"], text="z" * 40_001)
    assert refused.value.response["error"] == "msg_too_long"


def test_a_modal_may_carry_100_blocks_but_not_101(local_slack, client):
    view = {"type": "modal", "title": {"type": "plain_text", "text": "Roles"}}
    client.views_open(trigger_id="t1", view={**view, "blocks": [section("x")] * 100})
    with pytest.raises(SlackApiError) as refused:
        client.views_open(trigger_id="t2", view={**view, "blocks": [section("x")] * 101})
    assert refused.value.response["error"] == "invalid_blocks"


def test_an_ack_body_is_judged_the_same_way(local_slack):
    assert local_slack.check_reply({"text": "ok", "blocks": [section("fine")]}) is None
    assert local_slack.check_reply({"text": "t", "blocks": [section("x" * 3001)]})["error"] == "invalid_blocks"
    assert local_slack.check_reply({"text": "y" * 40_001})["response_metadata"]["warnings"] == ["message_truncated"]


# ------------------------------------------------------------------------------------------ the bot's side

def finding(n: int) -> Finding:
    return Finding(check="http.health", target=f"svc-{n}", status=Status.fail,
                   summary=f"endpoint {n} answered 503 " + "after a long wait " * 200,
                   resource=f"https://svc-{n}.example/health", hint="look at the load balancer " * 50, severity="P1")


def test_a_diagnosis_with_very_many_findings_posts_and_says_how_many_more(local_slack, client):
    verdict = Verdict(target="api", status=Status.fail, headline="everything is down " * 300,
                      findings=[finding(n) for n in range(400)], counts={"fail": 400}, severity="P1")
    text, blocks = verdict_message(verdict, duration_s=3.2)
    client.chat_postMessage(channel="C1", text=text, blocks=blocks)
    shown = local_slack.messages("C1")[0]
    assert "…and 397 more" in str(shown.blocks)


def test_hundreds_of_unremarkable_results_fit_one_reply_with_the_rest_counted(local_slack, client):
    results = [CheckResult(check="http.health", target=f"svc-{n}", status=Status.ok, summary="200 OK " * 40,
                           duration_ms=5) for n in range(900)]
    text, blocks = grouped_message(results)
    client.chat_postMessage(channel="C1", text=text, blocks=blocks)
    said = str(local_slack.messages("C1")[0].blocks)
    more = int(re.search(r"…and (\d+) more", said).group(1))
    assert said.count("svc-") + more == 900


async def test_a_500_service_list_is_paged_and_every_page_is_a_valid_message(local_slack, redis_url, tmp_path):
    services = {f"service-{n:03d}": {"description": "A service with a rather long description " * 2,
                                      "http": [{"url": f"http://127.0.0.1:9/{n}"}]} for n in range(500)}
    async with running_bot(local_slack, redis_url, tmp_path, services=services) as bot:
        pages, listed, page = [], [], 1
        while True:
            body = (await bot.command("/diagnose", f"list page {page}")).json()
            assert local_slack.check_reply(body) is None, body.get("error")
            assert len(body["text"]) < SLACK.message_text
            pages.append(body)
            listed += re.findall(r"`(service-\d+)`", str(body["blocks"]))
            if f"`/diagnose list page {page + 1}`" not in str(body["blocks"]):
                break
            page += 1
        assert sorted(listed) == sorted(services) and len(pages) > 1
        first = str(pages[0]["blocks"])
        assert f"…and {500 - first.count('`service-')} more: `/diagnose list page 2`" in first
        too_far = (await bot.command("/diagnose", f"list page {len(pages) + 1}")).json()["text"]
        assert f"`/diagnose list page {len(pages)}` is the last" in too_far


def test_an_incident_header_with_a_very_long_title_and_much_to_show_posts(local_slack, client):
    incident = Incident(id="INC-7", number=7, title="<!channel> & " * 700, reporter="U1", origin_channel="C1",
                        commander="U1", roles={f"role-{n}": "U1" for n in range(40)}, service="api",
                        last_update="&" * 2000, last_update_at=1.0,
                        failing_checks=[f"http.health svc-{n} answered 503" for n in range(30)])
    text, blocks = header(incident)
    client.chat_postMessage(channel="C1", text=text, blocks=blocks)
    shown = str(local_slack.messages("C1")[0].blocks)
    assert "…and 25 more" in shown and "<!channel>" not in shown
