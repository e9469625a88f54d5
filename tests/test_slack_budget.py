"""Slack's per-method limits, paced by the client through a budget every process shares (bot/slack/client.py),
against the local Slack enforcing them as Slack does. A minute lasts MINUTE_S here so the limit passes in a test."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import redis.asyncio as aioredis
from slack_sdk.web.async_client import AsyncWebClient

from bot.queue import slots
from bot.queue.pacing import MARGIN_S, Pacer
from bot.slack.client import ChannelPacer, SharedRateLimitRetry, SlackClient, SlackError, urgent
from bot.slack.local import LocalSlack
from bot.slack.local.rate_limits import RateLimits

TOKEN = "xoxb-budget"
MINUTE_S = 3.0
CREATES = 30  # conversations.create is Tier 2: 20 a minute


def client(slack: LocalSlack, budget: Pacer | None) -> SlackClient:
    """No slack_sdk retry on 429: a refusal surfaces, so a test sees each one."""
    return SlackClient(AsyncWebClient(token=TOKEN, base_url=slack.url), budget=budget, minute_s=MINUTE_S)


async def create_all(clients: list[SlackClient], *, count: int = CREATES) -> list[object]:
    """`count` channels at once, each call in a task of its own (as the caller's context says: job, ack, page)."""
    async def create(i: int) -> object:
        try:
            return (await clients[i % len(clients)].call("conversations.create", name=f"inc-{i}"))["channel"]["id"]
        except SlackError as exc:
            return exc.error

    return await asyncio.gather(*(create(i) for i in range(count)))


async def test_two_processes_sharing_a_budget_open_every_channel_without_one_429(redis_url):
    slots.bind(contextlib.nullcontext)  # as worker jobs: the tasks below inherit it
    namespace = f"t{uuid.uuid4().hex[:8]}"
    redis = [aioredis.Redis.from_url(redis_url) for _ in range(2)]  # two processes': one budget in Redis
    with LocalSlack(bot_token=TOKEN, rate_limits=RateLimits(minute_s=MINUTE_S)) as slack:
        clients = [client(slack, Pacer(connection, namespace)) for connection in redis]
        started = time.monotonic()
        made = await create_all(clients)
        elapsed = time.monotonic() - started
        refused = slack.rate_limits.refused
        names = {c["name"] for c in slack.channels()}
    for connection in redis:
        await connection.aclose()

    assert all(str(m).startswith("C") for m in made), made
    assert refused == 0
    assert {f"inc-{i}" for i in range(CREATES)} <= names
    assert elapsed >= MINUTE_S + MARGIN_S - 0.5  # the last ten waited for the next window, not for a 429


async def test_without_the_budget_the_same_burst_is_refused_by_slack():
    with LocalSlack(bot_token=TOKEN, rate_limits=RateLimits(minute_s=MINUTE_S)) as slack:
        made = await create_all([client(slack, None)])

    assert made.count("ratelimited") == CREATES - 20


async def spent(slack_client: SlackClient) -> None:
    """conversations.create's budget used up by jobs (20 channels), in a task of its own."""
    async def in_a_job() -> None:
        slots.bind(contextlib.nullcontext)
        for i in range(20):
            await slack_client.call("conversations.create", name=f"spent-{i}")

    await asyncio.create_task(in_a_job())


async def test_an_ack_or_a_page_never_waits_for_the_budget(redis_url):
    """With the budget spent, an ack's call and a page's go at once (Slack's 429 is theirs to retry); a job's waits."""
    redis = aioredis.Redis.from_url(redis_url)
    with LocalSlack(bot_token=TOKEN, rate_limits=RateLimits(minute_s=MINUTE_S)) as slack:
        slack_client = client(slack, Pacer(redis, f"t{uuid.uuid4().hex[:8]}"))
        await spent(slack_client)

        async def timed(as_job: bool, is_page: bool) -> tuple[float, object]:
            if as_job:
                slots.bind(contextlib.nullcontext)
            started = time.monotonic()
            with urgent() if is_page else contextlib.nullcontext():
                made = (await create_all([slack_client], count=1))[0]
            return time.monotonic() - started, made

        ack_s, ack = await asyncio.create_task(timed(as_job=False, is_page=False))
        page_s, page = await asyncio.create_task(timed(as_job=True, is_page=True))
        job_s, job = await asyncio.create_task(timed(as_job=True, is_page=False))
    await redis.aclose()

    assert ack_s < 1 and page_s < 1  # straight to Slack, which refused them (no retry handler in this client)
    assert (ack, page) == ("ratelimited", "ratelimited")
    assert job_s >= MINUTE_S - 1 and str(job).startswith("C")  # waited for the next window, then went through


async def test_a_progress_redraw_is_skipped_while_the_budget_is_spent_and_a_verdict_waits_its_turn(redis_url):
    """chat.update is Tier 3 (50 a minute): progress redraws past it are dropped, not queued ahead of the verdict."""
    redis = aioredis.Redis.from_url(redis_url)
    with LocalSlack(bot_token=TOKEN, rate_limits=RateLimits(minute_s=MINUTE_S)) as slack:
        slack_client = client(slack, Pacer(redis, f"t{uuid.uuid4().hex[:8]}"))
        ts = (await slack_client.post_message("C1", "0 of 60 checks"))["ts"]
        slots.bind(contextlib.nullcontext)  # as a worker's job
        drawn = [await slack_client.redraw_if_free("C1", ts, f"{i} of 60 checks") for i in range(1, 61)]
        started = time.monotonic()
        await slack_client.update_message("C1", ts, "verdict: api is down")
        waited = time.monotonic() - started
        shown, refused = slack.messages("C1")[-1].text, slack.rate_limits.refused
    await redis.aclose()

    assert drawn == [True] * 50 + [False] * 10
    assert waited >= MINUTE_S - 1  # the verdict waited for the next window instead of earning a 429
    assert (shown, refused) == ("verdict: api is down", 0)


async def test_a_429_pauses_the_shared_budget_so_the_other_process_waits_instead_of_meeting_one(redis_url):
    """Slack's count and ours can differ (calls that never wait for a turn spent Slack's here): the first job to meet
    a 429 pauses the method's budget for its Retry-After, and a job in another process waits it out instead of
    being refused too; both channels are made (slack_sdk's 429 retry)."""
    namespace = f"t{uuid.uuid4().hex[:8]}"
    redis = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    with LocalSlack(bot_token=TOKEN, rate_limits=RateLimits(minute_s=MINUTE_S)) as slack:
        budgets = [Pacer(connection, namespace) for connection in redis]
        retrying = [SlackClient(AsyncWebClient(token=TOKEN, base_url=slack.url, retry_handlers=[
            SharedRateLimitRetry(budget, 2, MINUTE_S)]), budget=budget, minute_s=MINUTE_S) for budget in budgets]
        for i in range(20):  # acks' calls: they never take a turn, so the budget did not count them
            await retrying[0].call("conversations.create", name=f"ack-{i}")

        async def job(slack_client: SlackClient, name: str) -> tuple[str, float]:
            slots.bind(contextlib.nullcontext)
            started = time.monotonic()
            made = (await slack_client.call("conversations.create", name=name))["channel"]["id"]
            return made, time.monotonic() - started

        first = asyncio.create_task(job(retrying[0], "first"))
        async with asyncio.timeout(5):  # the first job's 429 pauses the budget
            while await Pacer(redis[1], namespace).paused_for("slack:conversations.create") == 0:
                await asyncio.sleep(0.01)
        refused_when_paused = slack.rate_limits.refused
        second, second_s = await asyncio.create_task(job(retrying[1], "second"))
        made, _first_s = await first
        refused = slack.rate_limits.refused
    for connection in redis:
        await connection.aclose()

    assert refused_when_paused == 1 and refused == 1  # the second job waited out the pause and went once
    assert second_s >= 0.8  # it waited for the pause (Slack's Retry-After is whole seconds); refused == 1: no 429
    assert str(made).startswith("C") and str(second).startswith("C")


async def test_the_last_429_pauses_the_budget_too_when_no_retry_is_left(redis_url):
    redis = aioredis.Redis.from_url(redis_url)
    budget = Pacer(redis, f"t{uuid.uuid4().hex[:8]}")
    with LocalSlack(bot_token=TOKEN, rate_limits=RateLimits(minute_s=MINUTE_S)) as slack:
        no_retry = SlackClient(AsyncWebClient(token=TOKEN, base_url=slack.url, retry_handlers=[
            SharedRateLimitRetry(budget, 0, MINUTE_S)]), budget=budget, minute_s=MINUTE_S)
        made: list[str] = []
        for i in range(40):  # acks' calls, until Slack refuses one (its bucket refills while they go)
            try:
                made.append((await no_retry.call("conversations.create", name=f"ack-{i}"))["channel"]["id"])
            except SlackError as exc:
                assert exc.error == "ratelimited"
                break
        refused = slack.rate_limits.refused
        paused = await budget.paused_for("slack:conversations.create")
        await budget.pause("slack:conversations.create", 0.1)  # a shorter pause does not cut it short
        still = await budget.paused_for("slack:conversations.create")
    await redis.aclose()

    assert 20 <= len(made) < 40 and refused == 1  # one met Slack's 429 with no retry left
    assert 0 < paused <= 1.0 and still >= paused - 0.5  # paused for Retry-After (1 s); 0.1 s did not shorten it


async def posts_from(clients: list[SlackClient], channel: str, count: int) -> list[str]:
    """`count` posts into one channel at once, spread over `clients`; each post's ts, or the error it met."""
    async def post(i: int) -> str:
        try:
            return (await clients[i % len(clients)].post_message(channel, f"reply {i}"))["ts"]
        except SlackError as exc:
            return exc.error

    return await asyncio.gather(*(post(i) for i in range(count)))


async def test_two_processes_posting_into_one_channel_keep_its_pace_together(redis_url):
    """One run's replies posted by two workers: each kept the channel's pace (a burst of 3, then 1 a second) by
    itself, so together they sent twice it and Slack refused the rest. Counted in Redis, none is refused."""
    namespace = f"t{uuid.uuid4().hex[:8]}"
    redis = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    try:
        with LocalSlack(bot_token=TOKEN, rate_limits=RateLimits(post_burst=3)) as slack:
            channel = slack.add_channel("replies", members=["UBOT"])
            alone = [SlackClient(AsyncWebClient(token=TOKEN, base_url=slack.url), pacer=ChannelPacer(burst=3))
                     for _ in redis]
            assert (await posts_from(alone, channel, 6)).count("ratelimited") == 3
        with LocalSlack(bot_token=TOKEN, rate_limits=RateLimits(post_burst=3)) as slack:
            channel = slack.add_channel("replies", members=["UBOT"])
            shared = [SlackClient(AsyncWebClient(token=TOKEN, base_url=slack.url),
                                  pacer=ChannelPacer(burst=3, shared=Pacer(connection, namespace)))
                      for connection in redis]
            started = time.monotonic()
            posted = await posts_from(shared, channel, 6)
            elapsed = time.monotonic() - started
            refused = slack.rate_limits.refused
    finally:
        for connection in redis:
            await connection.aclose()
    assert refused == 0 and all("." in ts for ts in posted), posted
    assert 2.5 <= elapsed < 5  # three at once, then one a second
