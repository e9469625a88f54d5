"""Private incidents, the header's "Assign role" dialog, and the roles in the postmortem.

Driven like Slack drives the bot: signed slash commands, button clicks and dialog submissions through the real
app; LocalSlack creating the (private) channel and answering conversations.members; real Redis and workers.
U1 declares (the commander); U2 is invited to every incident channel as a responder; UOUT is in none.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import pytest

from bot.incidents import lifecycle
from bot.incidents.messages import (
    ACK_ACTION,
    ASSIGN_ROLE_ACTION,
    ASSIGN_ROLE_VIEW,
    DIAGNOSE_ACTION,
    ESCALATE_ACTION,
    PERSON_BLOCK,
    PERSON_PICK,
    RESOLVE_ACTION,
    ROLE_BLOCK,
    ROLE_PICK,
)
from bot.slack.local.model import slack_error
from bot.slack.local.payloads import APP_ID, TEAM_ID
from bot.writeup.postmortem.assemble import postmortem_markdown
from checks.schema import replace
from tests.incident_harness import IncidentBot, declare_incident, incident_bot, seed_workspace
from tests.test_permissions import answer, header_text
from tests.test_postmortem import section, structure_is_intact
from tests.writeup_harness import writeup_bot

TITLE = "Leaked payroll export"


async def declare_private(bot: IncidentBot, inc: str) -> Any:
    said = await answer(bot, f"{TITLE} P1 private", user="U1")
    assert said["text"].startswith(f"Declaring *{inc}* (P1)") and "private channel" in said["text"], said
    return await bot.wait_incident(inc, lambda i: i.ready)


# ------------------------------------------------------------------------------------------------ private

async def test_a_private_incident_has_a_private_channel_and_is_hidden_from_outsiders(
        local_slack, redis_url, tmp_path):
    seed_workspace(local_slack)
    announcements = local_slack.add_channel("incidents", members=["U1", "UOUT"])
    async with incident_bot(local_slack, redis_url, tmp_path, incident={"incidents_channel": announcements}) as bot:
        await answer(bot, "Search is slow P3", user="U1")  # a public one alongside
        incident = await declare_private(bot, "INC-2")
        assert incident.private
        await bot.settle()

        channel = local_slack.channel(incident.channel)
        assert channel["is_private"] and "UOUT" not in channel["members"]
        assert {"U1", "U2"} <= set(channel["members"])
        assert ":lock: Private" in header_text(bot, incident.channel)
        [declared] = await bot.timeline(incident.id, "declared")
        assert declared.data["private"] is True
        announced = " ".join(m.text + json.dumps(m.blocks) for m in local_slack.messages(announcements))
        assert "INC-2" in announced and "Private" in announced and "payroll" not in announced.lower()

        outsider_list = (await answer(bot, "list", user="UOUT"))["text"]
        assert "INC-1" in outsider_list and "INC-2" not in outsider_list and "payroll" not in outsider_list
        member_list = (await answer(bot, "list", user="U2"))["text"]
        assert "INC-2" in member_list and TITLE in member_list

        before = replace(await bot.incident(incident.id), updated_at=0.0)
        for text in ("status INC-2 monitoring contained", "summary INC-2", "postmortem INC-2", "note INC-2 hi",
                     "join INC-2"):
            said = await answer(bot, text, user="UOUT", channel="C1")
            assert said["response_type"] == "ephemeral", (text, said)
            assert "INC-2 is a private incident" in said["text"] and "<@U1> can add you" in said["text"], said
            assert "payroll" not in said["text"].lower() and incident.channel not in said["text"], said
        await bot.settle()
        assert replace(await bot.incident(incident.id), updated_at=0.0) == before
        assert not any("asks to join" in t for t in bot.channel_texts(incident))

        said = await answer(bot, "status INC-2 monitoring contained", user="U2", channel="C1")  # a member
        assert "INC-2 is now *monitoring*" in said["text"]


async def test_an_outsiders_header_clicks_on_a_private_incident_reveal_and_start_nothing(
        local_slack, redis_url, tmp_path):
    async with incident_bot(local_slack, redis_url, tmp_path) as bot:
        said = await answer(bot, f"{TITLE} P2 api private", user="U1")
        assert said["text"].startswith("Declaring *INC-1* (P2)"), said
        incident = await bot.wait_incident("INC-1", lambda i: i.ready)
        await bot.settle()
        before, diagnoses = await bot.incident("INC-1"), len(await bot.timeline("INC-1"))

        for action in (ACK_ACTION, DIAGNOSE_ACTION, ESCALATE_ACTION, RESOLVE_ACTION, ASSIGN_ROLE_ACTION):
            await bot.click(action, "INC-1", user="UOUT", channel="C1")  # a forged click from outside
        refusals = await bot.wait_for(lambda: [t for t in bot.ephemerals_for("UOUT")
                                               if "INC-1 is a private incident" in t] or None, 5, "refusals")
        await bot.settle()
        answers = bot.ephemerals_for("UOUT")
        assert len(refusals) == 5, answers  # Diagnose said "Diagnosing `api` for INC-1" and ran it
        assert not any("api" in t or "payroll" in t.lower() or incident.channel in t for t in answers), answers
        for severity in ("P2", "P3"):  # answered "INC-1 is already P2" / "INC-1 is P2; … only raises"
            said = await bot.command("/escalate", f"INC-1 {severity}", user="UOUT", channel="C1")
            assert "INC-1 is a private incident" in said and "P2" not in said, said
        assert replace(await bot.incident("INC-1"), updated_at=0.0) == replace(before, updated_at=0.0)
        assert len(await bot.timeline("INC-1")) == diagnoses


async def test_private_needs_a_channel_and_stays_a_title_word_before_a_severity(local_slack, redis_url, tmp_path):
    async with incident_bot(local_slack, redis_url, tmp_path, incident={"incident_create_channels": False}) as bot:
        refused = (await answer(bot, f"{TITLE} P1 private", user="U1"))["text"]
        assert "needs a private channel of its own" in refused and "without `private`" in refused
        assert await bot.ctx.store.list_open() == []

        said = (await answer(bot, "Repo went private P2", user="U1"))["text"]
        assert said.startswith("Declaring *INC-1* (P2)")
        incident = await bot.incident("INC-1")
        assert incident.title == "Repo went private" and not incident.private

        preview = await answer(bot, "private INC-1", user="U1")  # reads like a command: only previewed
        assert "reads like a command" in preview["text"] and len(await bot.ctx.store.list_open()) == 1


async def test_an_alert_never_declares_a_private_incident(local_slack, redis_url, tmp_path):
    async with incident_bot(local_slack, redis_url, tmp_path) as bot:
        with pytest.raises(ValueError, match="only a person declares a private incident"):
            await lifecycle.declare(bot.ctx, title="disk full", severity="P2", reporter="alertmanager",
                                    origin_channel="C1", source="alertmanager", private=True)
        assert await bot.ctx.store.list_open() == []


# ------------------------------------------------------------------------------------------------ header control

def submitted_view(opened: dict, *, user: str, role: str, person: str) -> str:
    """The dialog as Slack sends it back when submitted: the opened view with the picks in its state."""
    values = {ROLE_BLOCK: {ROLE_PICK: {"type": "static_select", "selected_option": {"value": role}}},
              PERSON_BLOCK: {PERSON_PICK: {"type": "users_select", "selected_user": person}}}
    payload = {"type": "view_submission", "api_app_id": APP_ID, "team": {"id": TEAM_ID, "domain": "local"},
               "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM_ID},
               "trigger_id": uuid.uuid4().hex, "is_enterprise_install": False, "enterprise": None,
               "view": {**opened, "state": {"values": values}}}
    return urlencode({"payload": json.dumps(payload)})


async def test_the_header_assigns_a_role_through_a_dialog_and_refuses_an_outsider(local_slack, redis_url, tmp_path):
    async with incident_bot(local_slack, redis_url, tmp_path) as bot:
        inc = await declare_incident(bot, "Login errors P2")
        incident = await bot.incident(inc)
        assert ASSIGN_ROLE_ACTION in header_text(bot, incident.channel)

        response = await bot.click(ASSIGN_ROLE_ACTION, inc, user="U1", channel=incident.channel)
        assert response.status_code == 200
        [opened] = await bot.wait_for(lambda: local_slack.calls_to("views.open"), 5, "the dialog")
        view = opened.response["view"]
        assert view["callback_id"] == ASSIGN_ROLE_VIEW and view["private_metadata"] == inc
        options = [o["value"] for o in view["blocks"][1]["element"]["options"]]
        assert options == ["commander", "scribe", "comms", "tech_lead"]
        await bot.wait_for(lambda: any("Pick the role and the person" in t for t in bot.ephemerals_for("U1")), 5)

        done = await bot.post_slack(submitted_view(view, user="U1", role="scribe", person="U2"),
                                    "application/x-www-form-urlencoded")
        assert done.status_code == 200 and "errors" not in done.text
        again = await bot.post_slack(submitted_view(view, user="U1", role="scribe", person="U2"),
                                     "application/x-www-form-urlencoded")  # a resubmission changes nothing
        assert "already the scribe" in again.json()["errors"][PERSON_BLOCK]
        await bot.settle()
        assert (await bot.incident(inc)).roles == {"scribe": "U2"}
        assert [(e.actor, e.data["to"]) for e in await bot.timeline(inc, "role")] == [("U1", "U2")]
        assert "Scribe: <@U2>" in header_text(bot, incident.channel)

        # An outsider: the click opens nothing, and a forged submission is refused in the dialog.
        await bot.click(ASSIGN_ROLE_ACTION, inc, user="UOUT", channel=incident.channel)
        await bot.wait_for(lambda: any("Only members of" in t for t in bot.ephemerals_for("UOUT")), 5, "refusal")
        assert len(local_slack.calls_to("views.open")) == 1
        forged = await bot.post_slack(submitted_view(view, user="UOUT", role="tech_lead", person="UOUT"),
                                      "application/x-www-form-urlencoded")
        assert "Only members of" in forged.json()["errors"][PERSON_BLOCK]
        await bot.settle()
        assert (await bot.incident(inc)).roles == {"scribe": "U2"}

        # A click Slack answers too late for (the trigger expired): the command to type instead.
        local_slack.script("views.open", slack_error("expired_trigger_id"))
        await bot.click(ASSIGN_ROLE_ACTION, inc, user="U1", channel=incident.channel)
        await bot.wait_for(lambda: any(f"or type `/incident role {inc} <role> @user`" in t and "could not open" in t
                                       for t in bot.ephemerals_for("U1")), 5, "the fallback")


# ------------------------------------------------------------------------------------------------ postmortem

async def test_the_postmortem_lists_the_commander_and_each_role_with_when(local_slack, redis_url, tmp_path,
                                                                           monkeypatch):
    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch) as bot:
        inc = await declare_incident(bot, "Payments slow P2")
        channel = (await bot.incident(inc)).channel
        for text in ("role scribe <@U2|bob>", "role comms <@UONCALL|oncall>", "commander <@UMGR1|m1>",
                     "role scribe <@UMGR2|m2>"):
            said = await answer(bot, text, user="U1", channel=channel)
            assert "is now the" in said["text"], said
        await bot.settle()
        started = time.strftime("%Y-%m-%d", time.gmtime())

        markdown = await postmortem_markdown(bot.rt, inc)
        roles = section(markdown, "### Roles")
        rows = [line for line in roles.splitlines() if line.startswith("| ") and "---" not in line][1:]
        assert [r.split(" | ")[:2] for r in rows] == [
            ["| Commander", "@alice"], ["| Scribe", "@bob"], ["| Communications lead", "@oncall"],
            ["| Commander", "@manager-one"], ["| Scribe", "@manager-two"]]
        assert rows[0].endswith("| declaration |") and all(r.endswith("| @alice |") for r in rows[1:])
        assert all(started in r for r in rows)
        assert "_To fill in_" not in roles
        responders = section(markdown, "## Responders and roles")
        assert "| @bob | scribe |" in responders
        structure_is_intact(markdown)
