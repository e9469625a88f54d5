"""Fixes from Slack, end to end: a moto Lambda with reserved concurrency 0, diagnosed in an incident, its fix
previewed, requested by one person, approved by another, applied once, recorded, and confirmed by the
re-diagnosis; and the refusals (self-approval, an outsider, an expired request, a resource changed since the
preview), a crash between the change and its record, and the feature turned off."""

from __future__ import annotations

import json
import time

import pytest

from bot.diagnosis.render.slack import FIX_ACTION
from bot.remediation import messages
from bot.remediation.service import execute, remediation_of
from checks.aws.fixes import lambda_concurrency
from tests.aws_lambda_scenarios import REGION, create_function
from tests.incident_harness import buttons, declare_incident, incident_bot
from tests.remediation_flow import diagnosed_incident, fixed_run, request_fix, with_button

SERVICES = {"api": {"aws": {"region": REGION, "lambda_functions": ["api-handler"]}}}
FAST = {"diagnose_update_interval_s": 0.1, "remediation_enabled": True}


def throttled(aws) -> None:
    create_function(aws, "api-handler")
    aws.client("lambda", REGION).put_function_concurrency(FunctionName="api-handler", ReservedConcurrentExecutions=0)


def reserved(aws) -> int | None:
    return aws.client("lambda", REGION).get_function_concurrency(FunctionName="api-handler").get(
        "ReservedConcurrentExecutions")


async def test_a_fix_is_previewed_requested_approved_by_a_second_person_applied_and_confirmed(
        aws, local_slack, redis_url, tmp_path):
    throttled(aws)
    async with incident_bot(local_slack, redis_url, tmp_path, services=SERVICES, settings=FAST) as bot:
        inc, incident = await diagnosed_incident(bot)
        header = next(m for m in local_slack.messages(incident.channel) if m.ts == incident.header_ts)
        assert any(a.startswith(FIX_ACTION) for a in buttons({"blocks": header.blocks}))

        view, approval = await request_fix(bot, incident, typed={"value": "5"})
        preview = json.dumps(view["blocks"], ensure_ascii=False)
        assert "lambda:DeleteFunctionConcurrency(FunctionName=api-handler)" in preview
        assert "concurrency: 0 → unreserved" in preview and "every other function" in preview
        assert "PutFunctionConcurrency(FunctionName=api-handler, ReservedConcurrentExecutions=5)" in \
            json.dumps(approval.blocks)  # the typed value is what will run
        request_id = buttons({"blocks": approval.blocks})[messages.APPROVE_ACTION]

        await bot.click(messages.APPROVE_ACTION, request_id, user="U1", channel=incident.channel)
        await bot.click(messages.APPROVE_ACTION, request_id, user="UOUT", channel=incident.channel)
        await bot.wait_for(lambda: any("needs a second person" in t for t in bot.ephemerals_for("U1")), 5)
        await bot.wait_for(lambda: any("Only members" in t for t in bot.ephemerals_for("UOUT")), 5)
        await bot.settle()
        assert reserved(aws) == 0  # refused twice: nothing changed

        await bot.click(messages.APPROVE_ACTION, request_id, user="U2", channel=incident.channel)
        await bot.wait_for(lambda: reserved(aws) == 5, 10, "the change in moto")
        result = await bot.wait_for(lambda: [m for m in local_slack.messages(incident.channel)
                                             if m.text.startswith("Fixed:")], 10, "the result")
        assert "reserved concurrency 0 → 5" in result[0].text
        assert messages.UNDO_ACTION in buttons({"blocks": result[0].blocks})
        runs = await bot.wait_for(lambda: fixed_run(bot, inc), 30, "the re-diagnosis")
        assert "1 fixed" in runs
        stages = [e.data["stage"] for e in await bot.timeline(inc, "remediation")]
        assert stages == ["requested", "approved", "applied"]


async def test_a_resource_changed_since_the_preview_is_not_overwritten(aws, local_slack, redis_url, tmp_path):
    throttled(aws)
    async with incident_bot(local_slack, redis_url, tmp_path, services=SERVICES, settings=FAST) as bot:
        inc, incident = await diagnosed_incident(bot)
        _, approval = await request_fix(bot, incident)
        aws.client("lambda", REGION).put_function_concurrency(FunctionName="api-handler",
                                                               ReservedConcurrentExecutions=3)  # someone else
        request_id = buttons({"blocks": approval.blocks})[messages.APPROVE_ACTION]
        await bot.click(messages.APPROVE_ACTION, request_id, user="U2", channel=incident.channel)
        failed = await bot.wait_for(lambda: [m for m in local_slack.messages(incident.channel)
                                             if m.text.startswith("Fix failed:")], 10, "the refusal")
        assert "changed since the preview" in failed[0].text and reserved(aws) == 3


async def test_an_expired_request_cannot_be_approved(aws, local_slack, redis_url, tmp_path):
    throttled(aws)
    async with incident_bot(local_slack, redis_url, tmp_path, services=SERVICES, settings=FAST) as bot:
        inc, incident = await diagnosed_incident(bot)
        _, approval = await request_fix(bot, incident)
        request_id = buttons({"blocks": approval.blocks})[messages.APPROVE_ACTION]
        fx = remediation_of(bot.rt)
        request = await fx.records.get(request_id)
        request.expires_at = time.time() - 1
        await fx.records.save(request)
        await bot.click(messages.APPROVE_ACTION, request_id, user="U2", channel=incident.channel)
        await bot.wait_for(lambda: any("expired" in t for t in bot.ephemerals_for("U2")), 5)
        await bot.settle()
        assert reserved(aws) == 0


async def test_a_crash_between_the_change_and_its_record_applies_it_once(aws, local_slack, redis_url, tmp_path,
                                                                         monkeypatch):
    throttled(aws)
    writes = []
    real_write = lambda_concurrency._write

    async def counted(*args):
        writes.append(args)
        await real_write(*args)

    monkeypatch.setattr(lambda_concurrency, "_write", counted)
    async with incident_bot(local_slack, redis_url, tmp_path, services=SERVICES,
                            settings={**FAST, "job_visibility_timeout_s": 1}) as bot:
        inc, incident = await diagnosed_incident(bot)
        _, approval = await request_fix(bot, incident)
        fx = remediation_of(bot.rt)
        real_save, crashed = fx.records.save, []

        async def crash_once(request):
            if request.result is not None and not crashed:
                crashed.append(request.id)
                raise ConnectionError("worker lost Redis right after the change")
            await real_save(request)

        monkeypatch.setattr(fx.records, "save", crash_once)
        request_id = buttons({"blocks": approval.blocks})[messages.APPROVE_ACTION]
        await bot.click(messages.APPROVE_ACTION, request_id, user="U2", channel=incident.channel)
        posted = await bot.wait_for(lambda: [m for m in local_slack.messages(incident.channel)
                                             if m.text.startswith("Fix")], 30, "the result after the retry")
        assert crashed and len(writes) == 1 and reserved(aws) is None
        assert posted[0].text.startswith("Fixed:") and "an earlier attempt made the change" in posted[0].text
        assert buttons({"blocks": posted[0].blocks}) == {messages.UNDO_ACTION: request_id}  # the same undo
        done = await fx.records.get(request_id)
        assert done.status == "done" and done.fix_result().reverse.action == lambda_concurrency.RESTORE

        aws.client("lambda", REGION).put_function_concurrency(FunctionName="api-handler",
                                                               ReservedConcurrentExecutions=3)  # someone else
        again = await execute(fx, done.fix_plan(), first_attempt=False)
        assert not again.ok and again.message.startswith("an earlier attempt was interrupted, and now: ")


async def test_turned_off_no_fix_is_offered_and_the_buttons_refuse(aws, local_slack, redis_url, tmp_path):
    throttled(aws)
    async with incident_bot(local_slack, redis_url, tmp_path, services=SERVICES,
                            settings={"diagnose_update_interval_s": 0.1}) as bot:
        inc = await declare_incident(bot, "api-handler throttled P1 api")
        await bot.wait_for(lambda: _runs_done(bot, inc), 20, "the diagnosis")
        await bot.settle()
        incident = await bot.incident(inc)
        assert not with_button(bot, incident.channel, FIX_ACTION)
        assert "reserved concurrency 0" in json.dumps([m.blocks for m in local_slack.messages(incident.channel)])
        await bot.click(f"{FIX_ACTION}:0", "run:abc", user="U1", channel=incident.channel)
        await bot.wait_for(lambda: any("REMEDIATION_ENABLED=false" in t for t in bot.ephemerals_for("U1")), 5)


async def _runs_done(bot, inc):
    return await bot.timeline(inc, "diagnosis")
