"""Pages at a rate-limited provider: spread by the documented policy (bot/queue/pacing.py), never lost or doubled.

Real Redis, the bot's own workers, and a fake PagerDuty that is a real HTTP server enforcing a budget per routing
key the way the Events API does (429 past N events in a window). Budgets are shrunk to seconds through the
policy file, as an operator could configure them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from types import SimpleNamespace

import pytest
import redis.asyncio as aioredis

from bot.incidents import escalation, messages
from bot.incidents.model import Incident, PageOrder, incident_id
from bot.queue import pacing
from bot.queue.pacing import MARGIN_S, Pace, Pacer
from bot.slack.local.model import Scripted, http_error
from tests.fixtures.paging import FakePagerDuty
from checks.schema import dump, parse_json
from tests.incident_harness import IncidentBot, default_policy, incident_bot


def paged_by_pagerduty(pd: FakePagerDuty, *, limit: int | None, window_s: float = 2.0) -> dict:
    """Every severity pages PagerDuty once (no timers), with the bot pacing at `limit` per `window_s`."""
    policy = default_policy(pd.events_url)
    for severity in ("P0", "P1", "P2", "P3"):
        policy["severities"][severity].update(first="pagerduty", then=[], repeat=0)
    policy["providers"]["pagerduty"].update(rate_limit=limit, rate_window_s=window_s)
    return policy


async def page(bot: IncidentBot, number: int, severity: str = "P0") -> str:
    """A stored open incident whose first page is decided and queued; returns its dedup key. No declaration runs
    (`ready`, without a channel): its notices are retried and dead-lettered rather than waiting for a channel."""
    now = time.time()
    incident = Incident(id=incident_id(number), number=number, title=f"Paced {number}", severity=severity,
                        reporter="U1", commander="U1", origin_channel="C1", declared_at=now, updated_at=now,
                        ready=True)
    await bot.ctx.store.create(incident)
    await escalation.start_paging(bot.ctx, incident.id)
    return f"{incident.id}:{severity}:L1"


def accepted_triggers(pd: FakePagerDuty) -> list[str]:
    """Dedup keys of the triggers PagerDuty accepted, in the order it accepted them."""
    return [r.json["dedup_key"] for r in pd.requests
            if r.status == 202 and (r.json or {}).get("event_action") == "trigger"]


async def test_a_limited_pagerduty_receives_every_page_exactly_once_and_no_429(local_slack, redis_url, tmp_path):
    with FakePagerDuty(limit=(4, 2.0)) as pd:
        async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, workers=2,
                                policy=paged_by_pagerduty(pd, limit=4)) as bot:
            started = time.monotonic()
            keys = [await page(bot, n) for n in range(1, 11)]
            await bot.wait_for(lambda: set(accepted_triggers(pd)) >= set(keys), 30, "every page at PagerDuty")
            took = time.monotonic() - started
            await bot.settle()
            assert Counter(accepted_triggers(pd)) == Counter(keys)  # each once, none lost
            assert all(pd.alert(key).trigger_count == 1 for key in keys)
            assert pd.throttled == 0  # paced below the limit: PagerDuty never had to refuse one
            assert took >= 2 * (2.0 + MARGIN_S) - 0.5  # 10 pages at 4 a window: the third window
            for key in keys:
                incident = await bot.incident(key.split(":")[0])
                assert incident.paging.orders[0].done
                assert not await bot.timeline(incident.id, "page_failed")


async def test_a_p0_goes_before_waiting_p3_notices(local_slack, redis_url, tmp_path):
    with FakePagerDuty(limit=(2, 2.0)) as pd:
        async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, workers=1,
                                policy=paged_by_pagerduty(pd, limit=2)) as bot:
            notices = [await page(bot, n, "P3") for n in range(1, 5)]
            await bot.wait_for(lambda: accepted_triggers(pd), 10, "the first notice")
            urgent = await page(bot, 5, "P0")
            await bot.wait_for(lambda: set(accepted_triggers(pd)) >= {*notices, urgent}, 40, "every page")
            order = accepted_triggers(pd)
            # P3 notices use at most 3/4 of a window (here 1 of 2): the P0 takes the room kept free at once,
            # ahead of the three notices still waiting.
            assert order.index(urgent) <= 1
            assert Counter(order) == Counter([*notices, urgent]) and pd.throttled == 0


async def test_429_with_retry_after_is_honoured_and_the_page_still_goes_once(local_slack, redis_url, tmp_path):
    with FakePagerDuty() as pd:
        policy = paged_by_pagerduty(pd, limit=None)
        policy["providers"]["pagerduty"]["retry"] = {"attempts": 3, "base_s": 0.01, "max_s": 2}
        async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, policy=policy) as bot:
            pd.script(status=429, retry_after=1, times=4)  # outlasts the provider's 3 tries within one job
            key = await page(bot, 1)
            await bot.wait_for(lambda: accepted_triggers(pd), 30, "the page after the 429s")
            await bot.settle()
            requests = [r for r in pd.requests if (r.json or {}).get("dedup_key") == key]
            assert [r.status for r in requests] == [429, 429, 429, 429, 202]
            gaps = [later.at - earlier.at for earlier, later in zip(requests, requests[1:])]
            assert all(gap >= 0.95 for gap in gaps), gaps  # each Retry-After waited out
            assert accepted_triggers(pd) == [key] and pd.alert(key).trigger_count == 1
            incident = await bot.incident("INC-1")
            assert not await bot.timeline(incident.id, "page_failed")  # deferred, never recorded as failed
            assert [e.data["dedup_key"] for e in await bot.timeline(incident.id, "page_sent")] == [key]


async def test_a_provider_that_limits_below_what_the_bot_assumes_still_gets_every_page_once(
        local_slack, redis_url, tmp_path):
    with FakePagerDuty(limit=(3, 2.0), retry_after=1) as pd:
        async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, workers=2,
                                policy=paged_by_pagerduty(pd, limit=None)) as bot:
            keys = [await page(bot, n) for n in range(1, 9)]
            await bot.wait_for(lambda: set(accepted_triggers(pd)) >= set(keys), 40, "every page at PagerDuty")
            await bot.settle()
            assert Counter(accepted_triggers(pd)) == Counter(keys) and pd.throttled > 0
            assert all(pd.alert(key).trigger_count == 1 for key in keys)


async def test_the_budget_is_shared_and_waiters_go_by_severity_then_arrival(redis_url):
    client = aioredis.Redis.from_url(redis_url)
    try:
        namespace = f"tpace{uuid.uuid4().hex[:6]}"
        pacers = [Pacer(client, namespace), Pacer(client, namespace)]  # two workers' views of one budget
        pace = Pace(limit=2, window_s=5.0)
        assert [await pacers[i % 2].turn("pd:k", pace, f"p{i}", "P0") for i in range(2)] == [0, 0]
        late_p3 = await pacers[0].turn("pd:k", pace, "notice", "P3")
        late_p0 = await pacers[1].turn("pd:k", pace, "urgent", "P0")
        assert late_p3 > 0 and late_p0 > 0
        assert await pacers[0].waiting("pd:k") == ["urgent", "notice"]  # P0 first, though it came second
        assert 4.0 < late_p0 <= 5.0 + MARGIN_S  # when the first send leaves the window
        await pacers[1].pause("other", 1.0)
        assert 0.5 < await pacers[0].turn("other", pace, "x", "P0") <= 1.0  # a 429 pauses every worker
    finally:
        await client.aclose()


def pagerduty_triggers(pd: FakePagerDuty, key: str) -> list[int]:
    """The status of every trigger PagerDuty was sent for `key`, accepted or not."""
    return [r.status for r in pd.requests
            if (r.json or {}).get("event_action") == "trigger" and r.json.get("dedup_key") == key]


async def test_a_page_waiting_for_its_turn_is_not_sent_once_the_incident_is_acknowledged(
        local_slack, redis_url, tmp_path):
    with FakePagerDuty(limit=(1, 4.0)) as pd:
        async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, workers=1,
                                policy=paged_by_pagerduty(pd, limit=1, window_s=4.0)) as bot:
            waiting = await second_page_waiting(bot, pd)
            await escalation.acknowledge(bot.ctx, "INC-2", "U1", "button")
            incident = await bot.wait_for(lambda: _done(bot, "INC-2"), 4.0 + MARGIN_S + 10, "its order done")
            await bot.settle()
            assert pagerduty_triggers(pd, waiting) == []  # its turn came after the ack: never sent
            assert incident.paging.first_paged_at is None
            [withheld] = await bot.timeline("INC-2", "page_withheld")
            assert withheld.data["withheld"] == "acknowledged" and "acknowledged" in withheld.text
            assert not await bot.timeline("INC-2", "page_sent")
            assert await _waiting_at_pagerduty(bot) == []  # it left the line: nobody waits behind it


async def second_page_waiting(bot: IncidentBot, pd: FakePagerDuty) -> str:
    """INC-1's page takes the budget's one place; INC-2's waits for its turn. Returns INC-2's page key."""
    await page(bot, 1)
    await bot.wait_for(lambda: accepted_triggers(pd), 10, "the first page")
    waiting = await page(bot, 2)
    await bot.wait_for(lambda: _waiting_at_pagerduty(bot), 5, "INC-2's page waiting for its turn")
    return waiting


async def _waiting_at_pagerduty(bot: IncidentBot) -> list[str]:
    budget = bot.ctx.providers["pagerduty"].budget()[0]
    return await pacing.pacer_for(bot.rt.redis, bot.ctx.store.namespace).waiting(budget)


async def _done(bot: IncidentBot, incident_id: str) -> Incident | None:
    incident = await bot.incident(incident_id)
    return incident if all(order.done for order in incident.paging.orders) else None


async def test_a_p0s_slack_dms_go_at_once_while_its_pagerduty_page_waits_for_the_budget(
        local_slack, redis_url, tmp_path):
    with FakePagerDuty(limit=(1, 4.0)) as pd:
        policy = default_policy(pd.events_url)  # P0: PagerDuty on-call and the managers' DMs at once
        policy["providers"]["pagerduty"].update(rate_limit=1, rate_window_s=4.0)
        async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, workers=1, policy=policy) as bot:
            await page(bot, 1)
            await bot.wait_for(lambda: accepted_triggers(pd), 10, "the first page")
            waiting = await page(bot, 2)
            for manager in ("UMGR1", "UMGR2"):
                await bot.wait_for(lambda m=manager: _dms(bot, m, "INC-2"), 3, f"{manager}'s DM at once")
            assert pagerduty_triggers(pd, waiting) == []  # PagerDuty's page still waits for its turn
            await bot.wait_for(lambda: pagerduty_triggers(pd, waiting), 4.0 + MARGIN_S + 10, "PagerDuty's turn")
            await bot.wait_for(lambda: _done(bot, "INC-2"), 10, "the order done")
            await bot.settle()
            assert pagerduty_triggers(pd, waiting) == [202] and pd.throttled == 0
            assert [len(_dms(bot, m, "INC-2")) for m in ("UMGR1", "UMGR2")] == [1, 1]
            sent = [e.data["delivery"] for e in await bot.timeline("INC-2", "page_sent")]
            assert sorted(sent) == ["pagerduty", "slack:UMGR1", "slack:UMGR2"]


async def test_a_dm_page_slack_refuses_past_the_retries_goes_again_later_not_failed(local_slack, redis_url, tmp_path,
                                                                                     monkeypatch):
    """conversations.open refused past the client's retries (more people paged at once than its 50 a minute):
    that person's DM waits and goes, like a provider's page held back by its limit; it is not a failed page."""
    from bot.paging import slack_dm

    monkeypatch.setattr(slack_dm, "RATELIMITED_AGAIN_S", 0.5)
    async with incident_bot(local_slack, redis_url, tmp_path, workers=1, policy=default_policy(None)) as bot:
        local_slack.script("conversations.open", *[http_error(429, retry_after=0)] * 3)  # slack_max_retries=2
        await page(bot, 1, severity="P1")  # P1: on-call by Slack DM
        await bot.wait_for(lambda: _dms(bot, "UONCALL", "INC-1"), 10, "the DM, once Slack takes it")
        await bot.wait_for(lambda: _done(bot, "INC-1"), 10, "the order done")

        assert len(local_slack.calls_to("conversations.open")) == 4 and len(_dms(bot, "UONCALL", "INC-1")) == 1
        assert [e.data["delivery"] for e in await bot.timeline("INC-1", "page_sent")] == ["slack:UONCALL"]
        assert await bot.timeline("INC-1", "page_failed") == []


async def test_a_dm_page_slack_keeps_refusing_becomes_a_failed_page_and_escalation_goes_on(
        local_slack, redis_url, tmp_path, monkeypatch):
    """Slack refusing for longer than the limit (shortened here): the level counts as failed, said in the
    channel's timeline, instead of its retries holding the next level back for ever."""
    from bot.paging import slack_dm

    monkeypatch.setattr(slack_dm, "RATELIMITED_AGAIN_S", 0.2)
    monkeypatch.setattr(escalation, "UNBUDGETED_DEFER_LIMIT_S", 1.0)
    async with incident_bot(local_slack, redis_url, tmp_path, workers=1, policy=default_policy(None)) as bot:
        local_slack.script("conversations.open", *[http_error(429, retry_after=0)] * 200)
        await page(bot, 1, severity="P1")
        failed = await bot.wait_for(lambda: bot.timeline("INC-1", "page_failed"), 10, "the failed page")

        assert "rate limit" in failed[0].text and _dms(bot, "UONCALL", "INC-1") == []
        tries = len(local_slack.calls_to("conversations.open"))
        await asyncio.sleep(1.0)
        assert len(local_slack.calls_to("conversations.open")) == tries  # no more tries once it failed


def _dms(bot: IncidentBot, user: str, incident_id: str) -> list[str]:
    return [m.text for m in bot.dms_to(user) if incident_id in m.text]


async def test_a_page_held_back_by_the_rate_limit_pushes_the_next_escalation_back(
        local_slack, redis_url, tmp_path):
    ack_timeout_s = 2.0
    with FakePagerDuty(limit=(1, 4.0)) as pd:
        policy = paged_by_pagerduty(pd, limit=1, window_s=4.0)
        policy["severities"]["P1"].update(then=["managers"], ack_timeout=ack_timeout_s)  # level 2: Slack DMs
        async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, workers=1, policy=policy) as bot:
            await page(bot, 1)
            await bot.wait_for(lambda: accepted_triggers(pd), 10, "the first page")
            await page(bot, 2, "P1")  # its level 1 waits ~5 s for PagerDuty; its timeout is 2 s
            [escalated] = await bot.wait_for(lambda: bot.timeline("INC-2", "escalated"), 4.0 + MARGIN_S + 10,
                                             "INC-2's level 2")
            [paged] = [e for e in await bot.timeline("INC-2", "page_sent") if e.data["level"] == 1]
            # Level 2 comes a full timeout after level 1 was paged, not 2 s after it was decided.
            assert escalated.at - paged.at >= ack_timeout_s - 0.5, (escalated.at, paged.at)


async def test_a_waiter_that_comes_back_keeps_its_place_and_idle_budgets_expire(redis_url, monkeypatch):
    monkeypatch.setattr(pacing, "FORGET_AFTER_S", 0.2)
    client = aioredis.Redis.from_url(redis_url)
    try:
        pacer, pace = Pacer(client, f"tpace{uuid.uuid4().hex[:6]}"), Pace(limit=1, window_s=1.0)
        assert await pacer.turn("pd:k", pace, "first", "P1") == 0
        early = await pacer.turn("pd:k", pace, "early", "P1")
        await pacer.turn("pd:k", pace, "late", "P1")
        waiting, forget, arrived = (pacer._keys("pd:k")[i] for i in (1, 2, 4))
        assert all([0 < await client.pttl(key) for key in (waiting, forget, arrived)])  # they expire when unused
        await asyncio.sleep(early + 0.3)  # early's turn came and went while it did not ask: forgotten
        assert await pacer.turn("pd:k", pace, "other", "P1") > 0  # late is still ahead of it
        assert await pacer.waiting("pd:k") == ["late", "other"]
        # early asks again: it arrived before late and other, so the free send is its own
        assert await pacer.turn("pd:k", pace, "early", "P1") == 0
        await pacer.leave("pd:k", "late")  # withdrawn: it no longer holds back those behind it
        assert await pacer.waiting("pd:k") == ["other"]
    finally:
        await client.aclose()


@pytest.mark.parametrize("ack_clock_behind_s", [0.0, 60.0])
async def test_a_page_acknowledged_while_it_waits_in_its_job_is_not_sent(local_slack, redis_url, tmp_path,
                                                                         monkeypatch, ack_clock_behind_s):
    """Also when the host that takes the acknowledgement has a clock a minute behind the one that decided the
    page: an acknowledgement after the decision is counted, not compared by time."""
    monkeypatch.setattr(escalation, "SHORT_TURN_S", 10.0)  # the turn is waited for in the job, not re-queued
    with FakePagerDuty(limit=(1, 3.0)) as pd:
        async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, workers=1,
                                policy=paged_by_pagerduty(pd, limit=1, window_s=3.0)) as bot:
            waiting = await second_page_waiting(bot, pd)
            with monkeypatch.context() as skewed:
                skewed.setattr(escalation, "time", SimpleNamespace(time=lambda: time.time() - ack_clock_behind_s))
                await escalation.acknowledge(bot.ctx, "INC-2", "U1", "button")  # its job read the record before
            await bot.wait_for(lambda: _done(bot, "INC-2"), 3.0 + MARGIN_S + 10, "its order done")
            await bot.settle()
            assert pagerduty_triggers(pd, waiting) == []  # re-checked just before the send
            [withheld] = await bot.timeline("INC-2", "page_withheld")
            assert withheld.data["withheld"] == "acknowledged"
            incident = await bot.incident("INC-2")
            assert [o.withheld for o in incident.paging.orders] == ["acknowledged"]
            assert messages.nobody_paged_reason(incident) == ("its pages were held back: it was acknowledged "
                                                              "before their turn")  # not "every page failed"


async def test_a_page_sent_while_the_incident_is_acknowledged_is_acknowledged_at_the_provider_too(
        local_slack, redis_url, tmp_path, monkeypatch):
    with FakePagerDuty() as pd:
        async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, workers=2,
                                policy=paged_by_pagerduty(pd, limit=None)) as bot:
            provider = bot.ctx.providers["pagerduty"]
            trigger = provider.trigger

            async def acknowledged_meanwhile(page):  # noqa: ANN001, ANN202
                result = await trigger(page)
                await escalation.acknowledge(bot.ctx, page.incident_id, "U1", "button")
                await asyncio.sleep(1.0)  # the other worker tells the providers before this page is recorded
                return result

            monkeypatch.setattr(provider, "trigger", acknowledged_meanwhile)
            key = await page(bot, 1)
            await bot.wait_for(lambda: (pd.alert(key) or None) and pd.alert(key).status == "acknowledged", 10,
                               "the page acknowledged at PagerDuty")
            await bot.settle()
            assert pd.alert(key).trigger_count == 1
            assert [e.data["delivery"] for e in await bot.timeline("INC-1", "page_sent")] == ["pagerduty"]


async def test_a_page_whose_incident_is_resolved_while_it_waits_is_not_sent_and_leaves_the_line(
        local_slack, redis_url, tmp_path):
    from bot.incidents import lifecycle

    with FakePagerDuty(limit=(1, 3.0)) as pd:
        async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, workers=1,
                                policy=paged_by_pagerduty(pd, limit=1, window_s=3.0)) as bot:
            waiting = await second_page_waiting(bot, pd)
            await lifecycle.resolve(bot.ctx, "INC-2", "U1", None, key="resolve-2")
            await bot.wait_for(lambda: _done(bot, "INC-2"), 3.0 + MARGIN_S + 10, "its order done")
            assert await _waiting_at_pagerduty(bot) == []  # it left the line at once: nobody waits behind it
            await bot.settle()
            assert pagerduty_triggers(pd, waiting) == []
            [withheld] = await bot.timeline("INC-2", "page_withheld")
            assert withheld.data["withheld"] == "resolved" and "resolved" in withheld.text



async def test_the_arrival_of_a_waiter_that_never_comes_back_is_dropped(redis_url, monkeypatch):
    monkeypatch.setattr(pacing, "FORGET_AFTER_S", 0.05)  # and its arrival is kept 10 × that past its turn
    client = aioredis.Redis.from_url(redis_url)
    try:
        pacer, pace = Pacer(client, f"tpace{uuid.uuid4().hex[:6]}"), Pace(limit=1, window_s=0.1)
        assert await pacer.turn("pd:k", pace, "first", "P1") == 0
        wait = await pacer.turn("pd:k", pace, "gone", "P1")  # waits, and never asks again
        assert wait > 0
        arrived = pacer._keys("pd:k")[4]
        assert await client.hexists(arrived, "gone")
        await asyncio.sleep(wait + 0.05 + 0.5 + 0.2)
        await pacer.turn("pd:k", pace, "next", "P1")  # the key stays busy: its sets never expire meanwhile
        assert not await client.hexists(arrived, "gone")  # swept with the forgotten
        assert await client.hlen(arrived) <= 1
    finally:
        await client.aclose()


def test_an_order_stored_before_acknowledgements_were_counted_still_compares_times() -> None:
    """Incidents written by the previous version carry orders without `acks_before`: for them the acknowledgement
    time decides, as it did then; an order decided now counts acknowledgements."""
    stored = dump(Incident(id="INC-9", number=9, title="old record", reporter="U1", origin_channel="C1"))
    del stored["paging"]["acks"]
    incident = parse_json(Incident, json.dumps(stored))
    old = PageOrder(dedup_key="k-old", severity="P1", level=1, routes={}, ordered_at=100.0)
    assert old.acks_before is None
    incident.paging.orders.append(old)
    incident.paging.acked_at = 150.0
    assert escalation._withdrawn(incident, old) == "acknowledged"
    old.ordered_at = 200.0  # decided after that acknowledgement: a new request
    assert escalation._withdrawn(incident, old) is None
    new = escalation._add_order(incident, PageOrder(dedup_key="k-new", severity="P1", level=2, routes={}))
    assert new is not None and new.acks_before == 0
    assert escalation._withdrawn(incident, new) is None  # acknowledged, but before this order was decided


async def test_pages_to_a_user_group_at_once_ask_slack_for_its_members_once(local_slack, redis_url, tmp_path):
    """A storm paging one on-call user group: usergroups.users.list is Tier 2 (20 a minute), and each page asking
    again met 429s that paged nobody. The members are asked once (the pages at once share the call); a lookup
    Slack refused is not kept."""
    async with incident_bot(local_slack, redis_url, tmp_path, workers=1, policy=default_policy(None)) as bot:
        group = local_slack.add_usergroup("oncall-team", ["UONCALL", "UMGR1"])
        ctx = bot.ctx
        local_slack.script("usergroups.users.list", Scripted(body={"ok": False, "error": "missing_scope"}))
        assert await ctx.group_members(group) == []  # refused: said in the log, and not kept
        members = await asyncio.gather(*(ctx.group_members(group) for _ in range(20)))

        assert all(m == ["UONCALL", "UMGR1"] for m in members)
        assert len(local_slack.calls_to("usergroups.users.list")) == 2
