"""Fixes from Slack beyond the happy path: the undo button end to end, the postmortem's Resolution, and the
policy's `remediation:` options (`approval: always`, `approvers:` a user group, `self_approve:`)."""

from __future__ import annotations

from bot.remediation import messages
from bot.writeup.postmortem.assemble import postmortem_markdown
from tests.incident_harness import buttons, default_policy, incident_bot, seed_workspace
from tests.remediation_flow import diagnosed_incident, request_fix, submitted
from tests.test_remediation import FAST, SERVICES, reserved, throttled

LIFT_LABEL = "Lift reserved concurrency 0 from api-handler"


def policy_with(**remediation) -> dict:
    return {**default_policy(None), "remediation": remediation}


def results(bot, incident, prefix: str = "Fixed:") -> list:
    return [m for m in bot.local.messages(incident.channel) if m.text.startswith(prefix)]


async def approve(bot, incident, approval, user: str) -> None:
    request_id = buttons({"blocks": approval.blocks})[messages.APPROVE_ACTION]
    await bot.click(messages.APPROVE_ACTION, request_id, user=user, channel=incident.channel)


async def test_undo_puts_the_old_value_back_through_the_same_approval_and_both_are_in_the_postmortem(
        aws, local_slack, redis_url, tmp_path):
    throttled(aws)
    async with incident_bot(local_slack, redis_url, tmp_path, services=SERVICES, settings=FAST) as bot:
        inc, incident = await diagnosed_incident(bot)
        _, approval = await request_fix(bot, incident, typed={"value": "5"})
        await approve(bot, incident, approval, "U2")
        fixed = (await bot.wait_for(lambda: results(bot, incident), 10, "the result"))[0]
        assert reserved(aws) == 5

        undo_value = buttons({"blocks": fixed.blocks})[messages.UNDO_ACTION]
        before = len(local_slack.calls_to("views.open"))
        await bot.click(messages.UNDO_ACTION, undo_value, user="U1", channel=incident.channel)
        opened = (await bot.wait_for(lambda: local_slack.calls_to("views.open")[before:], 5, "the undo preview"))[0]
        assert "PutFunctionConcurrency(FunctionName=api-handler, ReservedConcurrentExecutions=0)" in str(
            opened.response["view"]["blocks"])
        await bot.post_slack(submitted(opened.response["view"], "U1", {}), "application/x-www-form-urlencoded")
        undo_approval = (await bot.wait_for(
            lambda: [m for m in bot.local.messages(incident.channel) if "Put reserved concurrency 0 back" in m.text
                     and messages.APPROVE_ACTION in buttons({"blocks": m.blocks})], 5, "the undo's request"))[-1]
        await approve(bot, incident, undo_approval, "U2")
        await bot.wait_for(lambda: reserved(aws) == 0, 10, "the undo in moto")
        await bot.wait_for(lambda: len(results(bot, incident)) == 2, 10, "the undo's result")
        await bot.settle()
        applied = [e.text for e in await bot.timeline(inc, "remediation") if e.data["stage"] == "applied"]
        assert applied == [LIFT_LABEL, "Put reserved concurrency 0 back on api-handler"]
        await bot.command("/incident", "resolve lifted the concurrency limit", user="U1", channel=incident.channel)
        await bot.wait_incident(inc, lambda i: i.status == "resolved")
        draft = await postmortem_markdown(bot.rt, inc)
        resolution = draft.split("Resolution", 1)[1].split("\n## ", 1)[0]
        assert "lifted the concurrency limit Fixed from Slack: " in resolution
        assert f"{LIFT_LABEL} (api-handler: reserved concurrency 0 → 5.)" in resolution
        assert "Put reserved concurrency 0 back on api-handler (api-handler: reserved concurrency 5 → 0.)" in resolution


async def test_self_approve_lets_the_requester_approve_a_listed_fix_at_p1(aws, local_slack, redis_url, tmp_path):
    throttled(aws)
    policy = policy_with(self_approve=["lambda.lift_zero_concurrency"])
    async with incident_bot(local_slack, redis_url, tmp_path, services=SERVICES, settings=FAST,
                            policy=policy) as bot:
        _, incident = await diagnosed_incident(bot)
        _, approval = await request_fix(bot, incident)
        assert "the requester may approve it" in str(approval.blocks)
        await approve(bot, incident, approval, "U1")
        await bot.wait_for(lambda: results(bot, incident), 10, "the result")
        assert reserved(aws) is None


async def test_approval_always_and_an_approver_group_bind_even_at_p3(aws, local_slack, redis_url, tmp_path):
    throttled(aws)
    seed_workspace(local_slack)  # the people, before the group that names one of them
    group = local_slack.add_usergroup("fix-approvers", ["UMGR1"])
    policy = policy_with(approval="always", approvers=[group])
    async with incident_bot(local_slack, redis_url, tmp_path, services=SERVICES, settings=FAST,
                            policy=policy) as bot:
        _, incident = await diagnosed_incident(bot, "api-handler throttled P3 api")
        assert incident.severity == "P3"
        _, approval = await request_fix(bot, incident)
        assert f"Needs approval by a second person: <!subteam^{group}>" in str(approval.blocks)
        await approve(bot, incident, approval, "U1")  # P3, but `always`: not the requester
        await approve(bot, incident, approval, "U2")  # an incident member, but not in the group
        await bot.wait_for(lambda: any("needs a second person" in t for t in bot.ephemerals_for("U1")), 5)
        await bot.wait_for(lambda: any(t.startswith("Only <!subteam^") for t in bot.ephemerals_for("U2")), 5)
        await bot.settle()
        assert reserved(aws) == 0 and not results(bot, incident, "Fix")
        await approve(bot, incident, approval, "UMGR1")
        await bot.wait_for(lambda: results(bot, incident), 10, "the result")
        assert reserved(aws) is None
