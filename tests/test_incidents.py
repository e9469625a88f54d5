"""`/incident` from declaration to resolution, driven by signed requests through the real app, against LocalSlack,
a real Redis and a fake PagerDuty. Each test reads as what a responder would see."""

from __future__ import annotations

import json
import re
import time

import pytest

from bot.incidents.messages import CANCEL_DECLARE_ACTION, DECLARE_ACTION, HEADER_ACTIONS
from bot.slack.local.model import Scripted
from tests.incident_harness import IncidentBot, buttons, declare_incident, incident_bot


def header_blocks(bot: IncidentBot, incident) -> list[dict]:
    message = next(m for m in bot.local.messages(incident.channel) if m.ts == incident.header_ts)
    return message.blocks or []


def header_text(bot: IncidentBot, incident) -> str:
    return json.dumps(header_blocks(bot, incident))


async def test_declaring_opens_a_channel_with_pinned_header_topic_people_announcement_page_and_diagnosis(
        local_slack, redis_url, tmp_path, pd):
    announcements = local_slack.add_channel("incidents", members=["U1"])
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd,
                            incident={"incidents_channel": announcements}) as bot:
        answer = await bot.command("/incident", "Checkout returns 500s P1 checkout", user="U1")
        assert "Declaring *INC-1* (P1)" in answer and "on-call is being paged" in answer

        incident = await bot.wait_incident("INC-1", lambda i: i.ready)
        day = time.strftime("%Y%m%d", time.gmtime(incident.declared_at))
        assert incident.channel_name == f"inc-{day}-1-checkout-returns-500s"
        channel = local_slack.channel(incident.channel)
        assert {"U1", "U2"} <= set(channel["members"])  # the reporter and the configured responder
        assert channel["topic"]["value"].startswith("INC-1 P1 investigating: Checkout returns 500s")

        header = next(m for m in local_slack.messages(incident.channel) if m.ts == incident.header_ts)
        assert header.pinned
        text = json.dumps(header.blocks)
        for expected in ("INC-1", "P1", "Investigating", "<@U1>", "`checkout`", "Running for"):
            assert expected in text
        buttons = [e["action_id"] for b in header.blocks if b["type"] == "actions" for e in b["elements"]]
        assert buttons == list(HEADER_ACTIONS)

        announced = local_slack.messages(announcements)
        assert len(announced) == 1 and f"<#{incident.channel}>" in json.dumps(announced[0].blocks)
        await bot.wait_for(lambda: bot.pd_triggers(), 5, "the page")
        assert [e["dedup_key"] for e in bot.pd_triggers()] == ["INC-1:P1:L1"]
        # the page was queued with the record and sent without waiting for the channel: a link only if it existed
        assert pd.alerts[0].body.get("links", [{"href": incident.link}])[0]["href"] == incident.link
        kinds = [e.kind for e in await bot.timeline("INC-1")]
        assert kinds[0] == "declared" and "page_sent" in kinds and "diagnosis_requested" in kinds
        await bot.settle()
        assert "diagnosis" in [e.kind for e in await bot.timeline("INC-1")]  # the verdict came back


async def test_a_slack_retry_of_the_same_command_never_declares_twice(local_slack, redis_url, tmp_path, pd):
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd) as bot:
        first = await bot.command("/incident", "Login broken P1", trigger_id="trig-1")
        again = await bot.command("/incident", "Login broken P1", trigger_id="trig-1", retry_num=1)
        assert "Declaring *INC-1*" in first
        assert "INC-1* was already declared for this command" in again
        await bot.wait_incident("INC-1", lambda i: i.ready)
        await bot.settle()
        assert await bot.ctx.store.open_ids() == ["INC-1"]
        assert len(local_slack.calls_to("conversations.create")) == 1
        assert len(bot.pd_triggers()) == 1


async def test_a_declaration_that_fails_half_way_resumes_without_a_second_channel_header_or_page(
        local_slack, redis_url, tmp_path, pd):
    # pins.add fails hard (past the client's retries) after the channel, the header and the page exist.
    local_slack.script("pins.add", *[Scripted(status=500, body={"ok": False, "error": "internal_error"})] * 3)
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd) as bot:
        await bot.command("/incident", "Search is slow P1")
        incident = await bot.wait_incident("INC-1", lambda i: i.ready, timeout_s=20)
        await bot.settle()
        assert len(local_slack.calls_to("conversations.create")) == 1
        headers = [m for m in local_slack.messages(incident.channel)
                   if m.blocks and m.blocks[0].get("block_id") == "chatops:INC-1:header"]
        assert len(headers) == 1 and headers[0].pinned
        assert len(bot.pd_triggers()) == 1 and len(pd.alerts) == 1


async def test_a_channel_created_by_a_try_that_timed_out_is_found_not_created_again(
        local_slack, redis_url, tmp_path, pd):
    # Slack creates the channel but answers after the client gave up; the client's retry gets name_taken.
    local_slack.script("conversations.create", Scripted(delay=1.5))
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd,
                            settings={"slack_timeout_s": 1.0}) as bot:
        await bot.command("/incident", "Payments failing P2")
        incident = await bot.wait_incident("INC-1", lambda i: i.ready, timeout_s=20)
        named = [c for c in local_slack.channels() if c.get("name", "").endswith("-1-payments-failing")]
        assert len(named) == 1 and incident.channel == named[0]["id"] and incident.mode == "channel"


async def test_every_change_updates_the_header_and_the_timeline_with_who_and_when(
        local_slack, redis_url, tmp_path, pd):
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd) as bot:
        inc = await declare_incident(bot, "API latency high P2 api", user="U1")
        incident = await bot.incident(inc)
        here = incident.channel
        steps = [
            ("status identified bad deploy 4512", "U1", "is now *identified*", "Identified"),
            ("sev P1", "U1", "is now *P1*", "P1 (high)"),
            ("commander <@U2|bob>", "U1", "<@U2> is now the commander", "*Commander*\\n<@U2>"),
            ("note rolled back to 4511", "U2", "Noted", "rolled back to 4511"),
            ("resolve rollback of deploy 4512", "U2", "is resolved", "rollback of deploy 4512"),
        ]
        for text, user, answer, in_header in steps:
            assert answer in await bot.command("/incident", text, user=user, channel=here)
            await bot.wait_for(lambda shown=in_header: shown in header_text(bot, incident), 5,
                               f"the header to show {text!r}")
        await bot.settle()

        incident = await bot.incident(inc)
        assert (incident.status, incident.severity, incident.commander) == ("resolved", "P1", "U2")
        assert incident.resolution == "rollback of deploy 4512" and incident.resolved_by == "U2"
        timeline = await bot.timeline(inc)
        changes = {e.kind: e for e in timeline}
        assert changes["status"].actor == "U1" and changes["status"].data["to"] == "identified"
        assert changes["severity"].data == {"from": "P2", "to": "P1", "paged": changes["severity"].data["paged"]}
        assert changes["commander"].data == {"from": "U1", "to": "U2"}
        assert changes["note"].actor == "U2" and changes["note"].text == "rolled back to 4511"
        assert changes["resolved"].actor == "U2" and changes["resolved"].text == "rollback of deploy 4512"
        assert all(e.at > 0 for e in timeline)

        final = header_text(bot, incident)
        assert "Resolved" in final and "rollback of deploy 4512" in final and "<@U2>" in final
        assert not [b for b in header_blocks(bot, incident) if b["type"] == "actions"]  # no buttons left
        updates = [c for c in local_slack.calls_to("chat.update") if c.params.get("ts") == incident.header_ts]
        assert len(updates) >= len(steps)
        posted = " ".join(bot.channel_texts(incident))
        assert "identified" in posted and "bad deploy 4512" in posted and "resolved" in posted
        # P2 paged on-call at low urgency; P1 re-paged them at high urgency (a new alert); both closed now.
        assert [(a.key, a.status) for a in pd.alerts] == [("INC-1:P2:L1", "resolved"), ("INC-1:P1:L1", "resolved")]


BAD_INPUT = [
    ("", "Give the incident a title"),
    ("P1", "Give the incident a title"),
    ("Checkout down P7", "Unknown severity `P7`"),
    ("Checkout down P1 chekout", 'Unknown service "chekout". Did you mean "checkout"?'),
    ("stats monitoring", 'Unknown subcommand "stats". Did you mean `/incident status`?'),
    ("status monitoring", "Run this in an incident channel, or name it: `/incident status INC-12 monitoring`"),
    ("status INC-999 monitoring", "There is no incident `INC-999`"),
    ("status", "Which status?"),
    ("sev", "Which severity?"),
    ("sev P9", "Unknown severity `P9`"),
    ("commander bob", "I can't tell who `bob` is"),
    ("note", "What should the note say?"),
    ("resolve", "Say what fixed it"),
    ("ack", "Run this in an incident channel"),
    ("x" * 201, "Keep the title under 200 characters"),
]


async def test_bad_input_gets_a_clear_ephemeral_answer(local_slack, redis_url, tmp_path):
    async with incident_bot(local_slack, redis_url, tmp_path) as bot:
        for text, expected in BAD_INPUT:
            answer = await bot.command("/incident", text, user="U1", channel="C1")
            assert expected in answer, (text, answer)
        assert await bot.ctx.store.open_ids() == []  # nothing was declared
        assert not local_slack.calls_to("chat.postMessage")


async def test_bad_input_inside_an_incident_channel(local_slack, redis_url, tmp_path):
    async with incident_bot(local_slack, redis_url, tmp_path) as bot:
        inc = await declare_incident(bot, "Queue backlog P2")
        here = (await bot.incident(inc)).channel
        cases = {
            "status paused": 'Unknown status "paused"',
            "status investigating": "is already investigating",
            "sev P2": "is already P2",
            "commander <@U1|alice>": "is already the commander",
        }
        for text, expected in cases.items():
            assert expected in await bot.command("/incident", text, channel=here), text
        assert "only raises the severity" in await bot.command("/escalate", "P3", channel=here)
        assert "I can't tell who `@bob` is" in await bot.command("/escalate", "@bob", channel=here)
        assert "Run this in an incident channel" in await bot.command("/escalate", "now please", channel="C1")
        await bot.command("/incident", "resolve restarted the consumer", channel=here)
        assert "is resolved" in await bot.command("/incident", "status monitoring", channel=here)
        assert "already resolved" in await bot.command("/incident", "resolve again", channel=here)
        assert (await bot.incident(inc)).severity == "P2"


async def test_a_title_with_channel_mentions_pings_nobody_anywhere(local_slack, redis_url, tmp_path, pd):
    announcements = local_slack.add_channel("incidents-all", members=["U1"])
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd,
                            incident={"incidents_channel": announcements}) as bot:
        title = "<!channel> <!here> <@U2> *down* <!subteam^S1|@ops>"
        answer = await bot.command("/incident", f"{title} P0")
        inc = re.search(r"INC-\d+", answer).group(0)
        await bot.wait_incident(inc, lambda i: i.ready)
        here = (await bot.incident(inc)).channel
        await bot.command("/incident", "note <!everyone> look", channel=here)
        await bot.command("/incident", "status identified <!channel> again", channel=here)
        await bot.settle()
        sent = [answer]
        for method in ("chat.postMessage", "chat.update", "conversations.setTopic", "chat.postEphemeral"):
            sent += [json.dumps(c.params) for c in local_slack.calls_to(method)]
        sent += [e.get("text") or "" for e in local_slack.ephemerals()]
        everything = " ".join(sent)
        for raw in ("<!channel>", "<!here>", "<!everyone>", "<@U2>", "<!subteam^S1"):
            assert raw not in everything.replace("<@U2> is now", ""), raw
        assert "&lt;!channel&gt;" in everything
        for call in local_slack.calls_to("chat.postMessage"):
            assert not call.params.get("link_names") and call.params.get("parse") != "full"


async def test_without_channel_creation_the_incident_lives_in_a_thread_here(local_slack, redis_url, tmp_path, pd):
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd,
                            incident={"incident_create_channels": False}) as bot:
        answer = await bot.command("/incident", "Cache evictions P2", channel="C1")
        assert "runs in a thread" in answer
        incident = await bot.wait_incident("INC-1", lambda i: i.ready)
        assert (incident.mode, incident.channel, incident.thread_ts) == ("thread", "C1", incident.header_ts)
        assert not local_slack.calls_to("conversations.create")
        assert "is now *monitoring*" in await bot.command("/incident", "status monitoring hit rate back",
                                                          channel="C1")
        await bot.settle()
        replies = [m.text for m in local_slack.replies("C1", incident.header_ts)]
        assert any("monitoring" in r for r in replies)


async def test_list_and_help(local_slack, redis_url, tmp_path):
    async with incident_bot(local_slack, redis_url, tmp_path) as bot:
        assert "No open incidents" in await bot.command("/incident", "list")
        await declare_incident(bot, "Disk full on db-2 P1")
        await declare_incident(bot, "Docs typo P3")
        listing = await bot.command("/incident", "list")
        assert "Open incidents (2)" in listing and listing.index("INC-1") < listing.index("INC-2")
        helped = await bot.command("/incident", "help")
        for word in ("status", "sev", "commander", "note", "ack", "resolve", "list", "/escalate"):
            assert word in helped


async def test_the_diagnose_button_and_a_service_less_incident(local_slack, redis_url, tmp_path):
    async with incident_bot(local_slack, redis_url, tmp_path) as bot:
        with_service = await declare_incident(bot, "API errors P2 api")
        without = await declare_incident(bot, "Something odd P3")
        here = (await bot.incident(with_service)).channel
        await bot.click("incident_diagnose", with_service, user="U1", channel=here)
        await bot.click("incident_diagnose", without, user="U1", channel=here)
        await bot.settle()
        answers = " ".join(bot.ephemerals_for("U1"))
        assert "Diagnosing `api` for INC-1" in answers
        assert "INC-2 names no service" in answers
        assert len((await bot.incident(with_service)).diagnosis_runs) >= 1


async def test_status_update_reminders_follow_the_cadence(local_slack, redis_url, tmp_path):
    from tests.incident_harness import default_policy

    async with incident_bot(local_slack, redis_url, tmp_path,
                            policy=default_policy(None, update_every_s=1.0)) as bot:
        inc = await declare_incident(bot, "Billing export late P2")
        incident = await bot.incident(inc)
        await bot.wait_for(lambda: any("No status update" in t for t in bot.channel_texts(incident)), 6,
                           "a reminder")
        await bot.command("/incident", "status identified upstream SFTP down", channel=incident.channel)
        reminders = len(await bot.timeline(inc, "reminder"))
        await bot.command("/incident", "resolve SFTP back", channel=incident.channel)
        await bot.settle()
        time_after = time.time()
        await bot.wait_for(lambda: time.time() > time_after + 1.5, 3)
        assert len(await bot.timeline(inc, "reminder")) == reminders  # none after the resolve


@pytest.mark.parametrize("text, meant", [
    ("acknowledge", "/incident ack"), ("close it", "/incident resolve"), ("escalate now", "/escalate"),
    ("sumary", "/incident summary"), ("postmortm", "/incident postmortem"), ("stauts monitoring", "/incident status"),
])
async def test_a_subcommand_typo_or_a_common_verb_declares_nothing(local_slack, redis_url, tmp_path, text, meant):
    async with incident_bot(local_slack, redis_url, tmp_path) as bot:
        answer = await bot.command("/incident", text)
        assert f"Did you mean `{meant}`?" in answer and "/incident declare" in answer
        assert await bot.ctx.store.list_open() == []


# ------------------------------------------------------------------------------ text typed by accident

ACCIDENTAL = [
    ("scribe <@U2|bob>", '"scribe" reads like a command'),
    ("liaison <@U2|bob> customer calls", '"liaison" reads like a command'),
    ("comms <@U2|bob>", '"comms" reads like a command'),
    ("page <@UONCALL|oncall> now", '"page" reads like a command, not an incident title. Did you mean `/escalate`?'),
    ("<@U2|bob>", "starts with a mention"),
    ("<@U2|bob> can you look at checkout", "starts with a mention"),
    ("outage", 'A one-word title ("outage")'),
    ("checkout P1", 'A one-word title ("checkout")'),
]


async def assert_nothing_declared(bot: IncidentBot) -> None:
    await bot.settle()
    assert await bot.ctx.store.list_open() == []
    assert not bot.local.calls_to("conversations.create")
    assert bot.pagerduty.events == []  # nobody was paged


@pytest.mark.parametrize("text, why", ACCIDENTAL)
async def test_text_typed_by_accident_is_only_previewed_with_a_declare_button(
        local_slack, redis_url, tmp_path, pd, text, why):
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd) as bot:
        reply = await bot.command_reply("/incident", text, user="U1", channel="C1")
        assert reply["response_type"] == "ephemeral"
        assert why in reply["text"] and "Nothing was declared and nobody was paged" in reply["text"]
        assert "*Declare INC as “" in reply["text"] and "/incident declare " in reply["text"]
        assert set(buttons(reply)) == {DECLARE_ACTION, CANCEL_DECLARE_ACTION}
        await assert_nothing_declared(bot)


async def test_role_words_never_declare_whether_or_not_the_role_subcommand_exists(
        local_slack, redis_url, tmp_path, pd):
    from handlers.commands.incident import SUBCOMMAND_HANDLERS

    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd) as bot:
        reply = await bot.command_reply("/incident", "role comms <@UONCALL|oncall>", channel="C1")
        if "role" not in SUBCOMMAND_HANDLERS:  # the subcommand answers for itself when it exists
            assert DECLARE_ACTION in buttons(reply)
        assert "Declaring" not in reply["text"]
        await assert_nothing_declared(bot)


async def test_the_preview_declares_exactly_what_it_showed_once_however_often_it_is_pressed(
        local_slack, redis_url, tmp_path, pd):
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd) as bot:
        reply = await bot.command_reply("/incident", "scribe <@U2|bob> P1", user="U1", channel="C1")
        token = buttons(reply)[DECLARE_ACTION]
        assert "UOUT" not in token and "scribe" not in token  # the button names the preview, not the text
        await bot.click(DECLARE_ACTION, token, user="UOUT")  # someone else's (forged) press declares nothing
        await bot.wait_for(lambda: any("Only <@U1> can confirm" in t for t in bot.ephemerals_for("UOUT")), 5)
        for _ in range(3):  # the press, a double click, a replay
            await bot.click(DECLARE_ACTION, token, user="U1")
        incident = await bot.wait_incident("INC-1", lambda i: i.ready)
        await bot.settle()
        assert (incident.title, incident.severity, incident.reporter) == ("scribe <@U2|bob>", "P1", "U1")
        answers = bot.ephemerals_for("U1")
        assert sum("Declaring *INC-1* (P1)" in a for a in answers) == 1
        assert sum("*INC-1* was already declared" in a for a in answers) == 2
        assert await bot.ctx.store.open_ids() == ["INC-1"]
        assert len(local_slack.calls_to("conversations.create")) == 1
        assert [e["dedup_key"] for e in bot.pd_triggers()] == ["INC-1:P1:L1"]


async def test_cancel_forgets_the_preview_and_declare_still_declares_directly(local_slack, redis_url, tmp_path, pd):
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd) as bot:
        token = buttons(await bot.command_reply("/incident", "outage", channel="C1"))[CANCEL_DECLARE_ACTION]
        await bot.click(CANCEL_DECLARE_ACTION, token)
        await bot.click(DECLARE_ACTION, token)
        await bot.wait_for(lambda: any("expired or was cancelled" in t for t in bot.ephemerals_for("U1")), 5)
        assert any(t.startswith("Cancelled: nothing was declared") for t in bot.ephemerals_for("U1"))
        await assert_nothing_declared(bot)
        assert "Declaring *INC-1* (P2): scribe" in await bot.command("/incident", "declare scribe rota broken")
        assert "Declaring *INC-2* (P1): Checkout is down" in await bot.command("/incident", "Checkout is down P1 api")


async def test_help_lists_every_subcommand_there_is(local_slack, redis_url, tmp_path):
    from handlers.commands.incident import READ_SUBCOMMANDS, subcommands

    async with incident_bot(local_slack, redis_url, tmp_path) as bot:
        helped = await bot.command("/incident", "help")
        names = [*subcommands(bot.rt), *READ_SUBCOMMANDS]
        assert {"postmortem", "summary", "list", "help"} <= set(names)
        for name in names:
            assert f"`/incident {name}" in helped or f"`{name}`" in helped, name
        assert "`/incident declare <title>" in helped and "`/escalate @user`" in helped
