"""Pages at a rate-limited provider: spread by the documented policy (bot/paging/pacing.py), never lost or doubled.

Real Redis, the bot's own workers, and a fake PagerDuty that is a real HTTP server enforcing a budget per routing
key the way the Events API does (429 past N events in a window). Budgets are shrunk to seconds through the
policy file, as an operator could configure them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import redis.asyncio as aioredis

from bot.incidents import escalation
from bot.incidents.model import Incident, incident_id
from bot.paging.pacing import MARGIN_S, Pace, Pacer
from tests.fixtures.paging import FakePagerDuty
from tests.incident_harness import IncidentBot, default_policy, incident_bot


def paged_by_pagerduty(pd: FakePagerDuty, *, limit: int | None, window_s: float = 2.0) -> dict:
    """Every severity pages PagerDuty once (no timers), with the bot pacing at `limit` per `window_s`."""
    policy = default_policy(pd.events_url)
    for severity in ("P0", "P1", "P2", "P3"):
        policy["severities"][severity].update(first="pagerduty", then=[], repeat=0)
    policy["providers"]["pagerduty"].update(rate_limit=limit, rate_window_s=window_s)
    return policy


async def page(bot: IncidentBot, number: int, severity: str = "P0") -> str:
    """A stored open incident whose first page is decided and queued; returns its dedup key."""
    now = time.time()
    incident = Incident(id=incident_id(number), number=number, title=f"Paced {number}", severity=severity,
                        reporter="U1", commander="U1", origin_channel="C1", declared_at=now, updated_at=now)
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
