"""/diagnose while Slack misbehaves (rate limits, 500s, timeouts) and while a probed service hangs.

The properties: every message is eventually posted exactly once, replies land in the thread in the order the
results came in, the parent ends in its final verdict state, retries stay bounded (the client's, then the queue's),
and a run finishes by its deadline whatever the target does. Retry-After is kept short: the property is bounded
retrying, not wall time.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from bot.diagnosis.run import DEADLINE_GRACE_S
from bot.slack.local import Scripted, delay, http_error
from tests.app_harness import RunningBot, running_bot
from tests.servers import Reply, local_http_server, silent_listener

CHECKS = 6
SPACING_S = 0.3  # probe n answers after n × SPACING_S, so the results come in a known order


def staggered_service(server: Any) -> dict:
    return {"api": {"http": [{"url": server.url(f"/h{n}"), "samples": 1, "timeout_s": 5} for n in range(CHECKS)]}}


def staggered_routes() -> dict[str, Reply]:
    return {f"/h{n}": Reply(200, delay_s=n * SPACING_S) for n in range(CHECKS)}


def thread_of(bot: RunningBot) -> tuple[Any, list[Any]]:
    [parent] = bot.parents()
    return parent, [r for r in bot.local.replies(bot.channel, parent.ts) if r.ts != parent.ts]


def probe_of(reply: Any) -> str:
    """Which probe a threaded reply is about (`/h3`)."""
    return next(f"/h{n}" for n in range(CHECKS) if f"/h{n}" in reply.text)


def assert_final_verdict(parent: Any) -> None:
    assert not parent.text.startswith("Diagnosing"), f"the parent was left in a progress state: {parent.text!r}"
    assert parent.text.startswith("api:"), parent.text


async def test_rate_limited_every_other_call_still_posts_each_reply_exactly_once(local_slack, redis_url, tmp_path):
    with local_http_server(staggered_routes()) as server:
        async with running_bot(local_slack, redis_url, tmp_path, services=staggered_service(server)) as bot:
            local_slack.fail_every(2, status=429, retry_after=0)
            response = await bot.command("/diagnose", "api")
            assert response.status_code == 200 and "Queued 6 checks" in response.json()["text"]
            await bot.settle(timeout_s=30)
            local_slack.clear_faults()

            parent, replies = thread_of(bot)
            assert sorted(Counter(probe_of(r) for r in replies).items()) == [(f"/h{n}", 1) for n in range(CHECKS)]
            assert all(r.thread_ts == parent.ts for r in replies)
            assert any(c.params.get("ts") == parent.ts and c.params["text"].startswith("api:")
                       for c in local_slack.calls_to("chat.update") if c.status == 200), "no verdict was ever drawn"
            assert [c for c in local_slack.calls if c.status == 429], "the storm never hit: the test proved nothing"
            assert bot.rt.slack.errors == Counter(), "a call failed for good despite retries"
            assert (await bot.rt.queue.stats()).dead_letters == 0


async def test_a_progress_update_held_back_by_a_429_cannot_overwrite_the_verdict(local_slack, redis_url, tmp_path):
    with local_http_server(staggered_routes()) as server:
        async with running_bot(local_slack, redis_url, tmp_path, services=staggered_service(server)) as bot:
            local_slack.script("chat.update", http_error(429, retry_after=3))  # the first progress redraw
            await bot.command("/diagnose", "api")
            await bot.settle(timeout_s=30)
            await until_resent(local_slack, "chat.update")
            parent, _replies = thread_of(bot)
            assert_final_verdict(parent)


async def test_a_reply_held_back_by_a_429_keeps_its_place_in_the_thread(local_slack, redis_url, tmp_path):
    with local_http_server(staggered_routes()) as server:
        async with running_bot(local_slack, redis_url, tmp_path, services=staggered_service(server)) as bot:
            local_slack.script("chat.postMessage", delay(0), http_error(429, retry_after=1))  # parent ok, /h0 not
            await bot.command("/diagnose", "api")
            await bot.settle(timeout_s=30)
            _parent, replies = thread_of(bot)
            assert [probe_of(r) for r in replies] == [f"/h{n}" for n in range(CHECKS)]


async def test_a_500_then_ok_posts_once(local_slack, redis_url, tmp_path):
    with local_http_server({"/ok": Reply(200)}) as server:
        services = {"api": {"http": [{"url": server.url("/ok"), "samples": 1, "timeout_s": 1}]}}
        async with running_bot(local_slack, redis_url, tmp_path, services=services) as bot:
            local_slack.script("chat.postMessage", http_error(500), http_error(500))  # parent, then again
            local_slack.script("chat.update", http_error(500))
            await bot.command("/diagnose", "api")
            await bot.settle()

            parent, replies = thread_of(bot)
            assert len(replies) == 1
            assert_final_verdict(parent)
            statuses = [c.status for c in local_slack.calls_to("chat.postMessage")]
            assert statuses == [500, 500, 200, 200], statuses  # two refusals, the parent, the reply
            assert bot.rt.slack.errors == Counter()


async def test_slack_timing_out_is_retried_within_bounds_then_by_the_queue_and_nothing_is_lost(
        local_slack, redis_url, tmp_path):
    """Slack holds the parent's post past the client timeout, twice, without processing it: the client retries once
    (slack_max_retries=1), gives up, the job fails and the queue runs it again, and then it goes through."""
    hang = Scripted(status=503, body={"ok": False, "error": "service_unavailable"}, delay=1.6)
    with local_http_server({"/ok": Reply(200)}) as server:
        services = {"api": {"http": [{"url": server.url("/ok"), "samples": 1, "timeout_s": 1}]}}
        async with running_bot(local_slack, redis_url, tmp_path, services=services,
                               slack_timeout_s=1, slack_max_retries=1) as bot:
            local_slack.script("chat.postMessage", hang, hang)
            started = time.monotonic()
            await bot.command("/diagnose", "api")
            await bot.settle(timeout_s=20)

            parent, replies = thread_of(bot)
            assert len(replies) == 1
            assert_final_verdict(parent)
            posts = local_slack.calls_to("chat.postMessage")
            assert len(posts) == 4, [c.status for c in posts]  # 2 timed out (1 try + 1 retry), the parent, the reply
            assert bot.workers[0].stats["jobs_retried"] == 1, bot.workers[0].stats
            assert bot.rt.slack.errors["chat.postMessage"] == 1  # one give-up, reported, then the queue's retry
            assert (await bot.rt.queue.stats()).dead_letters == 0
            assert time.monotonic() - started < 10


async def test_a_post_slack_processed_after_the_client_gave_up_is_not_duplicated(local_slack, redis_url, tmp_path):
    with local_http_server({"/ok": Reply(200)}) as server:
        services = {"api": {"http": [{"url": server.url("/ok"), "samples": 1, "timeout_s": 1}]}}
        async with running_bot(local_slack, redis_url, tmp_path, services=services,
                               slack_timeout_s=1, slack_max_retries=1) as bot:
            local_slack.script("chat.postMessage", delay(1.6))
            await bot.command("/diagnose", "api")
            await bot.settle(timeout_s=20)
            assert len(bot.parents()) == 1


async def test_a_hanging_service_still_gets_its_verdict_by_the_deadline(local_slack, redis_url, tmp_path):
    deadline_s = 3.0
    with local_http_server({"/ok": Reply(200), "/stuck": Reply(200, delay_s=60)}) as server, \
            silent_listener() as (host, port):
        services = {"api": {"http": [
            {"url": server.url("/ok"), "samples": 1, "timeout_s": 1},
            {"url": server.url("/stuck"), "samples": 1, "timeout_s": 30},  # its own limit is past the deadline
            {"url": f"http://{host}:{port}/", "samples": 2, "timeout_s": 30},
        ]}}
        async with running_bot(local_slack, redis_url, tmp_path, services=services,
                               diagnose_deadline_s=deadline_s) as bot:
            started = time.monotonic()
            await bot.command("/diagnose", "api")
            await wait_for_verdict(bot, within_s=deadline_s + DEADLINE_GRACE_S + 2)
            took = time.monotonic() - started
            await bot.settle()

            parent, replies = thread_of(bot)
            assert_final_verdict(parent)
            assert took <= deadline_s + DEADLINE_GRACE_S + 2, took
            by_target = {("stuck" if "/stuck" in r.text else "silent" if f":{port}/" in r.text else "ok"): r.text
                         for r in replies}
            assert by_target.keys() == {"ok", "stuck", "silent"}, list(by_target)
            assert by_target["ok"].startswith("ok:")
            for hung in ("stuck", "silent"):
                assert by_target[hung].startswith(("error:", "fail:")), by_target[hung]


async def until_resent(local_slack: Any, method: str, timeout_s: float = 10) -> None:
    """Until the call first refused with 429 has been sent again and answered."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        calls = local_slack.calls_to(method)
        refused = next((n for n, c in enumerate(calls) if c.status == 429), None)
        if refused is not None and any(c.params == calls[refused].params and c.status == 200
                                       for c in calls[refused + 1:]):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the refused {method} was never sent again")


async def wait_for_verdict(bot: RunningBot, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        parents = bot.parents()
        if parents and parents[0].text.startswith("api:"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no verdict within {within_s} s: {[p.text for p in bot.parents()]}")
