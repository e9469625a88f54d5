"""Who may do what to an incident, and how often anyone may declare one.

Driven like Slack drives the bot: signed slash commands through the real app, LocalSlack answering
conversations.members and usergroups.users.list, a fake PagerDuty counting pages and resolves, real Redis for
the declaration limits. UOUT is in no incident channel; U1 declares (and so commands and is invited); U2 is
invited to every incident channel as a responder.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from bot.slack.local.payloads import slash_command_body
from checks.schema import replace
from tests.fixtures.paging import FakePagerDuty
from tests.incident_harness import (
    PEOPLE,
    IncidentBot,
    declare_incident,
    default_policy,
    incident_bot,
    seed_workspace,
)


def pagerduty_first(pd: FakePagerDuty) -> dict[str, Any]:
    policy = default_policy(pd.events_url)
    policy["severities"]["P0"].update(first="pagerduty", then=["managers"])
    return policy


async def answer(bot: IncidentBot, text: str, *, user: str, channel: str | None = None) -> dict[str, Any]:
    """`/incident <text>` as `user`; the whole answer, so its visibility can be checked too."""
    body = slash_command_body("/incident", text, user_id=user, user_name=PEOPLE.get(user, user.lower()),
                              channel_id=channel or bot.channel, response_url=bot.local.response_url(),
                              trigger_id=uuid.uuid4().hex)
    response = await bot.post_slack(body, "application/x-www-form-urlencoded")
    assert response.status_code == 200, response.text
    return response.json()


async def snapshot(bot: IncidentBot, inc: str) -> tuple[Any, ...]:
    incident = await bot.incident(inc)
    return (replace(incident, updated_at=0.0), len(await bot.timeline(inc)),
            len(bot.channel_texts(incident)))


def header_text(bot: IncidentBot, channel: str) -> str:
    for message in bot.local.messages(channel):
        if any(b.get("block_id", "").endswith(":header") for b in message.blocks or []):
            return json.dumps(message.blocks)
    raise AssertionError("no header in the incident channel")


# ------------------------------------------------------------------------------------------------- break 1

TAKE_OVER = ["commander INC-1 <@UOUT|outsider>", "sev INC-1 P3", "resolve INC-1 false alarm",
             "status INC-1 monitoring all good", "status INC-1 resolved", "note INC-1 nothing to see",
             "summary INC-1 --post", "summary INC-1", "postmortem INC-1", "role INC-1 scribe <@UOUT|outsider>"]


async def test_an_outsider_can_neither_take_over_nor_resolve_nor_read_another_incident(
        local_slack, redis_url, tmp_path, pd):
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, policy=pagerduty_first(pd)) as bot:
        inc = await declare_incident(bot, "Checkout down P0")
        await bot.wait_for(lambda: bot.pd_triggers(), 5, "the P0 page")
        await bot.settle()
        before, events = await snapshot(bot, inc), len(pd.events)
        channel = (await bot.incident(inc)).channel

        for text in TAKE_OVER:  # from the outsider's own channel, naming the incident
            said = await answer(bot, text, user="UOUT", channel="C1")
            assert said["response_type"] == "ephemeral", (text, said)
            assert f"Only members of <#{channel}> can" in said["text"] and "INC-1" in said["text"], (text, said)
            assert "Nothing was changed" in said["text"] and "<@U1>" in said["text"], (text, said)

        await bot.settle()
        assert await snapshot(bot, inc) == before
        assert len(pd.events) == events and not [e for e in pd.events if e["event_action"] == "resolve"]


async def test_members_and_admins_may_and_an_outsider_may_ask_to_join(local_slack, redis_url, tmp_path, pd):
    seed_workspace(local_slack)
    admins = local_slack.add_usergroup("incident-admins", ["UMGR2"])
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, policy=pagerduty_first(pd),
                            incident={"incident_admins": ["UMGR1", admins]}) as bot:
        inc = await declare_incident(bot, "Payments slow P0")
        channel = (await bot.incident(inc)).channel
        assert "is now *P1*" in (await answer(bot, "sev P1", user="U1", channel=channel))["text"]
        assert "Noted" in (await answer(bot, f"note {inc} replica lag 40s", user="U2"))["text"]  # a member, elsewhere

        said = await answer(bot, f"join {inc}", user="UOUT")
        assert "Asked in INC-1" in said["text"] and said["response_type"] == "ephemeral"
        incident = await bot.incident(inc)
        await bot.wait_for(lambda: any("<@UOUT> asks to join INC-1" in t for t in bot.channel_texts(incident)), 5,
                           "the request to join, in the incident channel")

        # Admins by id and through a user group, neither of them in the channel.
        assert "commander of INC-1" in (await answer(bot, f"commander {inc} <@UMGR1|m1>", user="UMGR2"))["text"]
        assert "is resolved" in (await answer(bot, f"resolve {inc} failed over", user="UMGR1"))["text"]
        await bot.wait_for(lambda: [e for e in pd.events if e["event_action"] == "resolve"], 5, "the PD resolve")
        incident = await bot.incident(inc)
        assert (incident.severity, incident.status, incident.resolved_by) == ("P1", "resolved", "UMGR1")


# ------------------------------------------------------------------------------------------------- roles

async def test_roles_are_assigned_shown_in_the_header_and_recorded(local_slack, redis_url, tmp_path):
    policy = default_policy(None)
    policy["permissions"] = {"severity": "responders"}  # only the commander and role holders
    async with incident_bot(local_slack, redis_url, tmp_path, policy=policy,
                            incident={"incident_roles": "security"}) as bot:
        inc = await declare_incident(bot, "Login errors P2")
        channel = (await bot.incident(inc)).channel

        assert "<@U2> is now the scribe of INC-1" in (await answer(bot, "role scribe <@U2|bob>", user="U1",
                                                                   channel=channel))["text"]
        assert "tech lead" in (await answer(bot, "role INC-1 tech-lead <@UONCALL|oncall>", user="U1"))["text"]
        assert "security" in (await answer(bot, "role security <@UMGR1|m1>", user="U2", channel=channel))["text"]
        unknown = await answer(bot, "role janitor <@U2|bob>", user="U1", channel=channel)
        assert "Unknown role `janitor`" in unknown["text"] and "scribe, comms, tech_lead, security" in unknown["text"]

        await bot.settle()
        incident = await bot.incident(inc)
        assert incident.roles == {"scribe": "U2", "tech_lead": "UONCALL", "security": "UMGR1"}
        shown = header_text(bot, channel)
        assert all(part in shown for part in ("Scribe: <@U2>", "Tech lead: <@UONCALL>", "Security: <@UMGR1>"))
        recorded = [(e.actor, e.data["role"], e.data["to"]) for e in await bot.timeline(inc, "role")]
        assert recorded == [("U1", "scribe", "U2"), ("U1", "tech_lead", "UONCALL"), ("U2", "security", "UMGR1")]
        assert "<@UONCALL> is now the tech lead" in " ".join(bot.channel_texts(incident))

        # With `severity: responders`, a role holder may change it and a plain channel member may not.
        assert "is now *P1*" in (await answer(bot, "sev INC-1 P1", user="UONCALL"))["text"]
        local_slack.add_user("U9", "nine")
        await bot.rt.slack.call("conversations.invite", channel=channel, users="U9")
        refused = await answer(bot, "sev P0", user="U9", channel=channel)
        assert "Only the commander (<@U1>) and role holders of INC-1 can change the severity" in refused["text"]
        assert (await bot.incident(inc)).severity == "P1"


# ------------------------------------------------------------------------------------------------- break 5

async def test_one_person_declaring_thirty_p0s_gets_three(local_slack, redis_url, tmp_path, pd):
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, policy=pagerduty_first(pd),
                            incident={"incident_admins": "UMGR1"}) as bot:
        said = await asyncio.gather(*(answer(bot, f"Everything is on fire {n} P0", user="U1") for n in range(30)))
        declared = [s["text"] for s in said if s["text"].startswith("Declaring")]
        refused = [s for s in said if not s["text"].startswith("Declaring")]
        assert len(declared) == 3 and len(refused) == 27
        for refusal in refused:
            assert refusal["response_type"] == "ephemeral"
            assert "You have declared 3 incidents in the last 10 minutes, the limit" in refusal["text"]
            assert "Nothing was declared and nobody was paged" in refusal["text"]
        await bot.settle()
        assert len(await bot.ctx.store.list_open()) == 3 and len(bot.pd_triggers()) == 3

        for n in range(5):  # an admin is not limited
            assert (await answer(bot, f"Admin drill {n} P3", user="UMGR1"))["text"].startswith("Declaring")


async def test_the_workspace_limit_counts_everyone_together(local_slack, redis_url, tmp_path):
    async with incident_bot(local_slack, redis_url, tmp_path,
                            incident={"incident_declare_per_workspace": 4, "incident_create_channels": False}) as bot:
        for user, n in (("U1", 0), ("U1", 1), ("U2", 2), ("UOUT", 3)):
            assert (await answer(bot, f"Slow pages {n} P3", user=user))["text"].startswith("Declaring")
        refused = (await answer(bot, "One more P3", user="U2"))["text"]
        assert refused.startswith("4 incidents were declared in the last 10 minutes, the limit")
        assert len(await bot.ctx.store.list_open()) == 4
