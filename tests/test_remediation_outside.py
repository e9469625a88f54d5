"""Fixes offered by a `/diagnose` in an ordinary channel (no incident): a second person must approve by default,
the result is posted where the diagnosis ran, and the request record and a log line keep the audit trail. Then
hostile clicks against one request: a forged approval of another request, the requester under another name,
two approvals at once, Deny then Approve."""

from __future__ import annotations

import asyncio
import logging

from bot.diagnosis.render.slack import FIX_ACTION
from bot.remediation import messages
from bot.remediation.service import remediation_of
from bot.slack.local.payloads import block_action_body
from tests.incident_harness import buttons, incident_bot
from tests.remediation_flow import submitted
from tests.test_remediation import FAST, SERVICES, reserved, throttled


def fix_offers(bot, channel: str) -> list:
    return [m for m in bot.local.messages(channel, include_replies=True)
            if any(a.startswith(FIX_ACTION) for a in buttons({"blocks": m.blocks}))]


def results(bot, channel: str, prefix: str = "Fix") -> list:
    return [m for m in bot.local.messages(channel, include_replies=True) if m.text.startswith(prefix)]


async def diagnosed_channel(bot) -> str:
    channel = bot.local.add_channel("ops", members=["U1", "U2", "UMGR1"])
    await bot.command("/diagnose", "api", user="U1", channel=channel)
    await bot.wait_for(lambda: fix_offers(bot, channel), 20, "the finding's fix button")
    await bot.settle()
    return channel


async def request_in(bot, channel: str, user: str = "U1") -> str:
    """The finding's button → the preview → Request; the new request's id."""
    action_id, value = next((a, v) for m in fix_offers(bot, channel)
                            for a, v in buttons({"blocks": m.blocks}).items() if a.startswith(FIX_ACTION))
    before, asked = len(bot.local.calls_to("views.open")), len(approvals(bot, channel))
    await bot.click(action_id, value, user=user, channel=channel)
    opened = (await bot.wait_for(lambda: bot.local.calls_to("views.open")[before:], 5, "the preview"))[0]
    response = await bot.post_slack(submitted(opened.response["view"], user, {}), "application/x-www-form-urlencoded")
    assert response.status_code == 200, response.text
    await bot.wait_for(lambda: len(approvals(bot, channel)) > asked, 5, "the approval request")
    return buttons({"blocks": approvals(bot, channel)[-1].blocks})[messages.APPROVE_ACTION]


def approvals(bot, channel: str) -> list:
    return [m for m in bot.local.messages(channel, include_replies=True)
            if messages.APPROVE_ACTION in buttons({"blocks": m.blocks})]


async def test_outside_an_incident_a_second_person_approves_and_the_result_is_posted_and_kept(
        aws, local_slack, redis_url, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="bot.remediation.service")
    throttled(aws)
    async with incident_bot(local_slack, redis_url, tmp_path, services=SERVICES, settings=FAST) as bot:
        channel = await diagnosed_channel(bot)
        request_id = await request_in(bot, channel)
        assert "Needs approval by a second person: members of" in str(approvals(bot, channel)[-1].blocks)

        await bot.click(messages.APPROVE_ACTION, request_id, user="U1", channel=channel)
        await bot.click(messages.APPROVE_ACTION, request_id, user="UOUT", channel=channel)
        await bot.wait_for(lambda: any("needs a second person" in t for t in bot.ephemerals_for("U1")), 5)
        await bot.wait_for(lambda: any("Only members of" in t for t in bot.ephemerals_for("UOUT")), 5)
        await bot.settle()
        assert reserved(aws) == 0 and not results(bot, channel)

        await bot.click(messages.APPROVE_ACTION, request_id, user="U2", channel=channel)
        posted = await bot.wait_for(lambda: results(bot, channel), 10, "the result in the diagnosis' channel")
        assert posted[0].text.startswith("Fixed: Lift reserved concurrency 0 from api-handler") and reserved(aws) is None
        kept = await remediation_of(bot.rt).records.get(request_id)
        assert (kept.status, kept.requester, kept.decided_by, kept.result["ok"]) == ("done", "U1", "U2", True)
        assert kept.origin.channel == channel and kept.origin.incident_id == "" and kept.severity is None
        lines = lambda: [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"fix {request_id} ")]
        audit = await bot.wait_for(lambda: len(lines()) == 3 and lines(), 10, "the audit line after the post")
        assert [line.split(" ")[2] for line in audit] == ["requested", "approved", "applied"]
        assert audit[-1] == (f"fix {request_id} applied by U2: Lift reserved concurrency 0 from api-handler "
                             "(api-handler: reserved concurrency 0 → unreserved.)")


async def test_hostile_clicks_run_nothing_twice_and_let_no_requester_approve(aws, local_slack, redis_url, tmp_path):
    throttled(aws)
    async with incident_bot(local_slack, redis_url, tmp_path, services=SERVICES, settings=FAST) as bot:
        channel = await diagnosed_channel(bot)
        fx = remediation_of(bot.rt)
        denied_id = await request_in(bot, channel, user="U2")
        request_id = await request_in(bot, channel, user="U1")

        # the requester's id under another account name, on their own request: ids decide, not names
        url = bot.local.response_url(channel=channel, user="U1", message_ts="1.000001")
        renamed = block_action_body(messages.APPROVE_ACTION, request_id, user_id="U1", user_name="alice-alt",
                                    channel_id=channel, message_ts="1.000001", response_url=url)
        await bot.post_slack(renamed, "application/x-www-form-urlencoded")
        # a forged value: a request id nobody made
        await bot.click(messages.APPROVE_ACTION, "0123456789ab", user="U2", channel=channel)
        await bot.wait_for(lambda: any("needs a second person" in t for t in bot.ephemerals_for("U1")), 5)
        await bot.wait_for(lambda: any("don't know that fix request" in t for t in bot.ephemerals_for("U2")), 5)

        # Deny, then Approve: the denial stands
        await bot.click(messages.DENY_ACTION, denied_id, user="U1", channel=channel)
        await bot.wait_for(lambda: any(t.startswith("Denied:") for t in bot.ephemerals_for("U1")), 5)
        await bot.click(messages.APPROVE_ACTION, denied_id, user="UMGR1", channel=channel)
        await bot.wait_for(lambda: any("already denied by <@U1>" in t for t in bot.ephemerals_for("UMGR1")), 5)
        assert (await fx.records.get(denied_id)).status == "denied"

        # two approvals at once: one job, one write, one result
        await asyncio.gather(bot.click(messages.APPROVE_ACTION, request_id, user="U2", channel=channel),
                             bot.click(messages.APPROVE_ACTION, request_id, user="UMGR1", channel=channel))
        await bot.wait_for(lambda: results(bot, channel), 10, "the result")
        await bot.settle()
        assert len(results(bot, channel)) == 1 and reserved(aws) is None
        assert sum(t.startswith("Approved:") for t in bot.ephemerals_for("U2") + bot.ephemerals_for("UMGR1")) == 1
