"""Paging and escalation: exactly one page per incident, level and person; timers that survive restarts; acks
that stop them; severity raises that page only the difference; authorisation that cannot be bypassed.

Counted at a fake PagerDuty (a real HTTP server that validates Events v2 and de-duplicates like PagerDuty) and
in LocalSlack's DMs. Timeouts are shortened through the policy file, as an operator would configure them.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest

from bot.incidents import lifecycle
from checks.model import CheckResult, Status
from checks.schema import replace
from checks.verdict import build_verdict
from tests.fixtures.paging import FakePagerDuty
from tests.incident_harness import (
    IncidentBot,
    declare_incident,
    default_policy,
    incident_bot,
    seed_workspace,
)

ACK_TIMEOUT_S = 1.5


def oncall_then_managers(pd: FakePagerDuty, ack_timeout_s: float = ACK_TIMEOUT_S) -> dict:
    """P0 and P1 page PagerDuty on-call first and the managers (Slack DMs) when nobody acknowledges."""
    policy = default_policy(pd.events_url, ack_timeout_s=ack_timeout_s)
    policy["severities"]["P0"].update(first="pagerduty", then=["managers"])
    return policy


def dm_texts(bot: IncidentBot, user: str, incident_id: str | None = None) -> list[str]:
    texts = [m.text + json.dumps(m.blocks or []) for m in bot.dms_to(user)]
    return [t for t in texts if incident_id is None or incident_id in t]


async def test_an_unacknowledged_p0_reaches_the_managers_after_its_timeout(local_slack, redis_url, tmp_path, pd):
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, policy=oncall_then_managers(pd)) as bot:
        inc = await declare_incident(bot, "Primary database down P0 api")
        incident = await bot.incident(inc)
        await bot.command("/incident", "note failover did not start", channel=incident.channel)
        # Declaring with a service queues its diagnosis (no checks here, so an empty verdict); let it land first,
        # or it may overwrite the failing check this test reports below.
        await bot.wait_for(lambda: bot.timeline(inc, "diagnosis"), 5, "the automatic diagnosis")
        failing = CheckResult(check="tcp", target="db:5432", status=Status.fail, summary="connection refused")
        await lifecycle.on_diagnosis_finished(bot.rt, "run1", {"incident_id": inc},
                                              build_verdict("api", [failing]))
        first_page = await bot.wait_for(lambda: bot.pd_triggers("INC-1:P0:L1"), 5, "the on-call page")
        assert not dm_texts(bot, "UMGR1")  # managers are not woken before the on-call had their chance

        dm = (await bot.wait_for(lambda: dm_texts(bot, "UMGR1", inc), 10, "the managers' DM"))[0]
        ordered_at = (await bot.incident(inc)).paging.orders[0].ordered_at  # the ack timeout counts from here
        assert time.time() - ordered_at >= ACK_TIMEOUT_S - 0.1
        for expected in ("Primary database down", "P0", "investigating", "Running for",
                         "failover did not start", "tcp db:5432: connection refused", incident.link,
                         '"action_id": "incident_ack"'):
            assert expected in dm, expected
        await bot.wait_for(lambda: dm_texts(bot, "UMGR2", inc), 5, "the second manager's DM")
        await bot.settle()
        assert len(first_page) == 1 and len(pd.alerts) == 1  # level 2 is Slack only: PagerDuty saw one page
        escalated = await bot.timeline(inc, "escalated")
        assert [e.data["level"] for e in escalated] == [2] and escalated[0].data["reason"] == "timer"
        assert escalated[0].data["lateness_s"] < 2.0
        assert any("No acknowledgement in time" in t for t in bot.channel_texts(incident))


async def test_an_ack_before_the_timeout_stops_the_escalation(local_slack, redis_url, tmp_path, pd):
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, policy=oncall_then_managers(pd)) as bot:
        inc = await declare_incident(bot, "Checkout latency P1 checkout")
        incident = await bot.incident(inc)
        await bot.wait_for(lambda: bot.pd_triggers(), 5, "the on-call page")
        await bot.click("incident_ack", inc, user="U1", channel=incident.channel, message_ts=incident.header_ts)
        await bot.wait_for(lambda: any("acknowledged by <@U1> after" in t for t in bot.channel_texts(incident)),
                           5, "the ack line")
        await asyncio.sleep(ACK_TIMEOUT_S + 1.0)
        await bot.settle()
        assert not dm_texts(bot, "UMGR1")
        incident = await bot.incident(inc)
        assert (incident.paging.acked_by, incident.paging.ack_via, incident.paging.level) == ("U1", "button", 1)
        assert incident.paging.next_escalation_at is None
        assert [a.status for a in pd.alerts] == ["acknowledged"]  # acknowledged at PagerDuty as well
        assert "You acknowledged INC-1" in " ".join(bot.ephemerals_for("U1"))
        acked = await bot.timeline(inc, "page_acked")
        assert len(acked) == 1 and acked[0].actor == "U1" and acked[0].data["via"] == "button"


async def test_a_paged_manager_can_acknowledge_from_the_dm_outside_the_channel(local_slack, redis_url, tmp_path, pd):
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd) as bot:  # P0 DMs managers at once
        inc = await declare_incident(bot, "Data loss suspected P0")
        await bot.wait_incident(inc, lambda i: {"UMGR1", "UMGR2"} <= set(i.paging.slack_paged))
        dm = bot.dms_to("UMGR1")
        await bot.click("incident_ack", inc, user="UMGR1", channel=dm[0].channel, message_ts=dm[0].ts)
        await bot.wait_incident(inc, lambda i: i.paging.acked_by == "UMGR1")
        await bot.click("incident_ack", inc, user="UMGR2", channel=dm[0].channel, message_ts=dm[0].ts)
        await bot.wait_for(lambda: any("already acknowledged by <@UMGR1>" in t for t in bot.ephemerals_for("UMGR2")),
                           5, "the second ack to be told")


async def test_an_unacked_timer_fires_after_a_worker_restart_and_an_acked_one_does_not(
        local_slack, redis_url, tmp_path, pd):
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, policy=oncall_then_managers(pd)) as bot:
        unacked = await declare_incident(bot, "Queue stuck P1")
        acked = await declare_incident(bot, "Emails delayed P1")
        await bot.wait_for(lambda: len(bot.pd_triggers()) == 2, 5, "both on-call pages")
        await bot.stop_workers()  # every worker is gone while both timers come due
        assert "You acknowledged INC-2" in await bot.command("/incident", "ack INC-2")
        await asyncio.sleep(ACK_TIMEOUT_S + 0.5)
        assert not dm_texts(bot, "UMGR1")

        bot.start_worker()
        await bot.wait_for(lambda: dm_texts(bot, "UMGR1", unacked), 10, "the late escalation")
        await asyncio.sleep(1.0)
        await bot.settle()
        assert not dm_texts(bot, "UMGR1", acked)
        assert len(dm_texts(bot, "UMGR1", unacked)) == 1


@pytest.mark.slow
async def test_timers_survive_a_redis_crash_with_aof(local_slack, redis_server_factory, tmp_path, pd):
    server = redis_server_factory(aof=True)
    async with incident_bot(local_slack, server.url, tmp_path, pagerduty=pd,
                            policy=oncall_then_managers(pd, ack_timeout_s=3.0)) as bot:
        unacked = await declare_incident(bot, "Ledger writes failing P0")
        acked = await declare_incident(bot, "Reports slow P1")
        await bot.command("/incident", "ack INC-2")
        await bot.wait_for(lambda: len(bot.pd_triggers()) == 2, 5, "both on-call pages")
        await asyncio.sleep(1.2)  # appendfsync everysec: what is older than a second is on disk
        await asyncio.to_thread(server.restart, crash=True)  # SIGKILL, then start on the same AOF
        dm = await bot.wait_for(lambda: dm_texts(bot, "UMGR1", unacked), 20, "the escalation after the crash")
        assert len(dm) == 1
        await asyncio.sleep(1.0)
        assert not dm_texts(bot, "UMGR1", acked)
        assert (await bot.incident(acked)).paging.acknowledged


async def test_a_page_retried_against_a_slow_pagerduty_opens_one_alert(local_slack, redis_url, tmp_path, pd):
    pd.script(delay_s=2.5)  # processed after the client's 2 s timeout: the bot retries with the same dedup key
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, policy=oncall_then_managers(pd)) as bot:
        inc = await declare_incident(bot, "Login errors P1")
        await bot.wait_for(lambda: len(bot.pd_triggers("INC-1:P1:L1")) == 2, 8, "the retried trigger")
        await bot.settle()
        # The job runs again (a redelivery): the recorded page is not sent again.
        await bot.rt.queue.enqueue("incident.page", {"incident": inc, "key": "INC-1:P1:L1"})
        await bot.settle()
        assert len(pd.alerts) == 1 and pd.alerts[0].trigger_count == 2
        assert len(bot.pd_triggers("INC-1:P1:L1")) == 2  # raw events: the timed-out one and its retry
        sent = [e for e in await bot.timeline(inc, "page_sent") if e.data["delivery"] == "pagerduty"]
        assert len(sent) == 1


@pytest.mark.slow
async def test_exactly_one_alert_when_a_worker_is_killed_between_sending_and_recording(
        local_slack, redis_url, tmp_path, pd):
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, workers=0, page_lease_s=1.0,
                            settings={"job_visibility_timeout_s": 2}) as bot:
        killer = bot.worker_process(tmp_path, kill_after_page=True)
        try:
            answer = await bot.command("/incident", "Orders not shipping P1")
            assert "Declaring *INC-1*" in answer
            await bot.wait_for(lambda: killer.poll() is not None, 20, "the worker to be killed")
            assert killer.returncode == -signal.SIGKILL
            assert len(pd.alerts) == 1 and not await bot.ctx.store.page_records("INC-1")  # sent, not recorded

            bot.start_worker()
            await bot.wait_incident("INC-1", lambda i: i.ready and all(o.done for o in i.paging.orders), 20)
            await bot.settle()
        finally:
            if killer.poll() is None:
                killer.kill()
        # What "exactly once" honestly means here: PagerDuty got the trigger twice (the dead worker could not
        # know it had been accepted), with the same dedup key, so it holds ONE alert; and the bot recorded one page.
        assert len(pd.alerts) == 1
        assert len(bot.pd_triggers("INC-1:P1:L1")) == 2
        sent = [e for e in await bot.timeline("INC-1", "page_sent") if e.data["delivery"] == "pagerduty"]
        assert len(sent) == 1
        # one channel: the killed worker may have created it while paging (the page no longer waits for it); the
        # resumed declaration then finds it by its name
        assert len([c for c in local_slack.calls_to("conversations.create") if (c.response or {}).get("ok")]) == 1


async def test_raising_the_severity_pages_only_whoever_the_new_severity_adds(local_slack, redis_url, tmp_path, pd):
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd) as bot:  # P1: on-call; P0: + managers
        inc = await declare_incident(bot, "Partial outage in eu-west P1")
        here = (await bot.incident(inc)).channel
        await bot.wait_for(lambda: bot.pd_triggers(), 5, "the on-call page")
        answer = await bot.command("/escalate", "P0 customers cannot pay", channel=here)
        assert "raised to *P0* (was P1)" in answer and "<@UMGR1>" in answer and "<@UMGR2>" in answer
        await bot.wait_for(lambda: dm_texts(bot, "UMGR1", inc) and dm_texts(bot, "UMGR2", inc), 5, "managers")
        await bot.settle()
        assert [e["dedup_key"] for e in bot.pd_triggers()] == ["INC-1:P1:L1"]  # on-call is not paged again
        change = (await bot.timeline(inc, "severity"))[0]
        assert change.data["from"] == "P1" and change.data["to"] == "P0" and change.text == "customers cannot pay"

        assert "is now *P1* (was P0)" in await bot.command("/incident", "sev P1", channel=here)  # lowering
        await bot.settle()
        assert any("Nobody new to page" in t for t in bot.channel_texts(await bot.incident(inc)))
        assert len(bot.pd_triggers()) == 1 and len(dm_texts(bot, "UMGR1", inc)) == 1


async def test_escalate_pages_the_next_level_now_or_the_people_named(local_slack, redis_url, tmp_path, pd):
    seed_workspace(local_slack)
    group = local_slack.add_usergroup("dba", ["UONCALL"])
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, policy=oncall_then_managers(pd, 600)) \
            as bot:
        inc = await declare_incident(bot, "Replication lag P1")
        here = (await bot.incident(inc)).channel
        answer = await bot.command("/escalate", "need a decision on failover", channel=here, trigger_id="esc-1")
        assert "Paging level 2 of INC-1" in answer
        again = await bot.command("/escalate", "need a decision on failover", channel=here, trigger_id="esc-1",
                                  retry_num=1)  # Slack repeating the same command must not page level 3
        assert "Already done" in again and (await bot.incident(inc)).paging.level == 2
        await bot.wait_for(lambda: dm_texts(bot, "UMGR1", inc), 5, "the managers")
        assert "has paged every level" in await bot.command("/escalate", "", channel=here)

        answer = await bot.command("/escalate", f"<@UOUT|outsider> <!subteam^{group}|@dba> replica is yours",
                                   channel=here)
        assert "Paging 2 people or groups" in answer
        await bot.wait_for(lambda: dm_texts(bot, "UOUT", inc) and dm_texts(bot, "UONCALL", inc), 5,
                           "the outsider and the DBAs")
        kinds = [(e.data.get("reason"), e.actor) for e in await bot.timeline(inc, "escalated")]
        assert kinds == [("manual", "U1"), ("people", "U1")]
        # Someone paged by name may acknowledge although they are not in the channel.
        await bot.click("incident_ack", inc, user="UOUT", channel=here)
        await bot.wait_incident(inc, lambda i: i.paging.acked_by == "UOUT")


async def test_unauthorised_escalation_is_refused_and_changes_nothing(local_slack, redis_url, tmp_path, pd):
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, policy=oncall_then_managers(pd, 600)) \
            as bot:
        inc = await declare_incident(bot, "Payments degraded P1")
        await bot.settle()
        before = replace(await bot.incident(inc), updated_at=0.0)
        events, entries = len(pd.events), len(await bot.timeline(inc))
        refusals = [
            await bot.command("/escalate", f"{inc} now", user="UOUT"),
            await bot.command("/escalate", f"{inc} P0 big", user="UOUT"),
            await bot.command("/escalate", f"{inc} <@U2|bob>", user="UOUT"),
            await bot.command("/incident", f"sev {inc} P0", user="UOUT"),
            await bot.command("/incident", f"resolve {inc} it went away", user="UOUT"),
            await bot.command("/incident", f"status {inc} resolved", user="UOUT"),
            await bot.command("/incident", f"ack {inc}", user="UOUT"),
        ]
        for action in ("incident_escalate", "incident_resolve", "incident_ack"):  # forged clicks from outside
            await bot.click(action, inc, user="UOUT", channel="C1")
        refusals += await bot.wait_for(lambda: len(bot.ephemerals_for("UOUT")) >= 3 and bot.ephemerals_for("UOUT"),
                                       5, "the button refusals")
        channel = (await bot.incident(inc)).channel
        for refusal in refusals:
            assert f"Only members of <#{channel}> can" in refusal and "INC-1" in refusal, refusal
        await bot.settle()
        assert replace(await bot.incident(inc), updated_at=0.0) == before
        assert len(pd.events) == events and len(await bot.timeline(inc)) == entries
        assert not bot.dms_to("UMGR1") and not bot.dms_to("U2")


async def test_a_listed_permission_names_who_may_escalate(local_slack, redis_url, tmp_path, pd):
    policy = oncall_then_managers(pd, 600)
    policy["escalation_allowed"] = ["UMGR1"]
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, policy=policy) as bot:
        inc = await declare_incident(bot, "Search index stale P1")
        here = (await bot.incident(inc)).channel
        assert "Only <@UMGR1> can escalate INC-1" in await bot.command("/escalate", "please", channel=here)
        assert "Paging level 2" in await bot.command("/escalate", f"{inc} please", user="UMGR1")


async def test_a_rejected_page_is_told_in_the_channel_and_the_escalation_still_runs(local_slack, redis_url, tmp_path):
    with FakePagerDuty(routing_keys={"k" * 32}) as pd:  # our key is not one PagerDuty knows
        async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd,
                                policy=oncall_then_managers(pd)) as bot:
            inc = await declare_incident(bot, "Cluster unreachable P0")
            incident = await bot.incident(inc)
            await bot.wait_for(lambda: any("PagerDuty rejected the page: Invalid routing key" in t
                                           for t in bot.channel_texts(incident)), 5, "the rejection sentence")
            assert pd.routing_key not in " ".join(bot.channel_texts(incident))
            failed = await bot.timeline(inc, "page_failed")
            assert len(failed) == 1 and "Invalid routing key" in failed[0].text
            await bot.wait_for(lambda: dm_texts(bot, "UMGR1", inc), 10, "the managers after the timeout")


async def test_a_slow_slack_during_the_permission_check_is_said_plainly_within_3s_and_changes_nothing(
        local_slack, redis_url, tmp_path, pd):
    from bot.slack.local import http_error

    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, policy=oncall_then_managers(pd)) as bot:
        inc = await declare_incident(bot, "Checkout errors P1")
        incident = await bot.incident(inc)
        await bot.settle()
        pages_before = len(pd.requests)
        local_slack.script("conversations.members", http_error(429, retry_after=10))
        started = time.monotonic()
        # U2, a responder in the channel but not its commander: only Slack can say they are a member.
        answer = await bot.command("/escalate", "P0 it is spreading", user="U2", channel=incident.channel)
        assert time.monotonic() - started < 3
        assert "couldn't check who may" in answer and "Nothing was changed" in answer
        assert (await bot.incident(inc)).severity == "P1"
        await bot.settle()
        assert len(pd.requests) == pages_before


# ------------------------------------------------------------------------------ saying who was paged, truly

def nobody_on_call() -> dict:
    """A policy with nobody to page at any severity (no on-call, no managers, no provider)."""
    return {"severities": {sev: {"first": [], "then": [], "update_every": 3600} for sev in ("P0", "P1", "P2", "P3")}}


async def test_when_the_policy_names_nobody_every_answer_says_nobody_was_paged(local_slack, redis_url, tmp_path):
    async with incident_bot(local_slack, redis_url, tmp_path, policy=nobody_on_call()) as bot:
        declared = await bot.command("/incident", "Database down P0")
        assert "nobody is paged: the P0 paging policy names nobody" in declared and "/escalate @user" in declared
        assert "on-call is being paged" not in declared
        incident = await bot.wait_incident("INC-1", lambda i: i.ready)
        here = incident.channel
        await bot.settle()
        assert "nobody paged: the P0 paging policy names nobody to page" in json.dumps(
            next(m for m in local_slack.messages(here) if m.ts == incident.header_ts).blocks)

        escalated = await bot.command("/escalate", "", channel=here)
        assert escalated.startswith("Nobody has been paged for INC-1: the P0 paging policy names nobody to page.")
        assert "every level" not in escalated and "/escalate P0" not in escalated  # it is P0 already
        again = await bot.command("/escalate", "P0 worse", channel=here)
        assert again.startswith("INC-1 is already P0.") and "To lower it" not in again

        acked = await bot.command("/incident", "ack", channel=here)
        assert "Nobody had been paged (the P0 paging policy names nobody to page)" in acked
        assert "escalation is stopped" not in acked
        resolved = await bot.command("/incident", "resolve replica promoted", channel=here)
        assert "Nobody had been paged" in resolved and "pages are being closed" not in resolved
        await bot.settle()
        said = " ".join(bot.channel_texts(await bot.incident("INC-1")))
        assert "Nobody had been paged" in said and "Escalation stopped" not in said


async def test_a_severity_raise_that_pages_nobody_says_so(local_slack, redis_url, tmp_path):
    async with incident_bot(local_slack, redis_url, tmp_path, policy=nobody_on_call()) as bot:
        inc = await declare_incident(bot, "Docs build slow P3")
        here = (await bot.incident(inc)).channel
        raised = await bot.command("/escalate", "P1 customers notice", channel=here)
        assert raised.endswith("Nobody is paged: the P1 paging policy names nobody to page.")
        await bot.settle()
        said = " ".join(bot.channel_texts(await bot.incident(inc)))
        assert "Nobody is paged: the P1 paging policy names nobody to page." in said
        assert "was paged already" not in said


async def test_when_every_page_failed_ack_escalate_and_resolve_say_nobody_was_reached(
        local_slack, redis_url, tmp_path):
    with FakePagerDuty(routing_keys={"k" * 32}) as pd:  # our key is not one PagerDuty knows: every page fails
        policy = default_policy(pd.events_url)
        policy["severities"]["P1"].update(then=[])
        async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, policy=policy) as bot:
            inc = await declare_incident(bot, "Cluster unreachable P1")
            await bot.wait_for(lambda: bot.timeline(inc, "page_failed"), 5, "the failed page")
            await bot.wait_incident(inc, lambda i: all(o.done for o in i.paging.orders))
            here = (await bot.incident(inc)).channel
            escalated = await bot.command("/escalate", "", channel=here)
            assert escalated.startswith("Nobody has been paged for INC-1: every page so far failed")
            assert "/escalate P0" in escalated  # raising is still possible from P1
            acked = await bot.command("/incident", "ack", channel=here)
            assert "Nobody had been paged (every page so far failed" in acked
            resolved = await bot.command("/incident", "resolve network restored", channel=here)
            assert "Nobody had been paged" in resolved and "pages are being closed" not in resolved


async def test_when_someone_was_paged_the_answers_say_so(local_slack, redis_url, tmp_path, pd):
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd) as bot:
        declared = await bot.command("/incident", "Login errors P2")
        assert "on-call is being paged (PagerDuty on-call)" in declared
        await bot.wait_for(lambda: bot.pd_triggers(), 5, "the page")
        incident = await bot.wait_incident("INC-1", lambda i: i.ready and i.paging.first_paged_at is not None)
        assert "escalation is stopped" in await bot.command("/incident", "ack", channel=incident.channel)
        assert "pages are being closed" in await bot.command("/incident", "resolve fixed", channel=incident.channel)
