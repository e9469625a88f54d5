"""/metrics and the dead-man /healthz check, on the whole bot in HTTP mode (real uvicorn, Redis, local Slack)."""

from __future__ import annotations

import asyncio
import logging
import re
import time

from prometheus_client.parser import text_string_to_metric_families

from bot.app.jobs import job_handlers
from bot.app.metrics import Metrics
from bot.queue import Worker
from bot.slack.local import slack_error
from tests.app_harness import RunningBot, running_bot
from tests.servers import Reply, local_http_server


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """`{(sample name, sorted labels): value}` from Prometheus text; parsing it proves the format too."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def scrape(bot: RunningBot) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await bot.http.get(bot.base_url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return samples(response.text)


async def test_metrics_show_queue_jobs_checks_and_slack_errors_after_a_diagnosis(local_slack, redis_url, tmp_path):
    with local_http_server({"/ok": Reply(200), "/boom": Reply(500)}) as server:
        services = {"api": {"http": [{"url": server.url("/ok"), "samples": 1, "timeout_s": 1},
                                     {"url": server.url("/boom"), "samples": 1, "timeout_s": 1}]}}
        async with running_bot(local_slack, redis_url, tmp_path, services=services) as bot:
            bot.rt.worker = bot.workers[0]
            before = await scrape(bot)
            assert before[("chatops_queue_depth", ())] == 0
            assert before[("chatops_queue_stats_up", ())] == 1

            local_slack.script("chat.postMessage", slack_error("fatal_error"))  # the parent post fails once
            assert "Queued 2 checks" in (await bot.command("/diagnose", "api")).json()["text"]
            await bot.settle()
            after = await scrape(bot)

    for gauge in ("depth", "urgent_depth", "pending", "oldest_pending_age_seconds", "delayed", "dead_letters"):
        assert (f"chatops_queue_{gauge}", ()) in after
    assert after[("chatops_queue_pending", ())] == 0 and after[("chatops_queue_dead_letters", ())] == 0
    assert after[("chatops_slack_api_errors_total", (("method", "chat.postMessage"),))] == 1
    assert after[("chatops_jobs_total", (("kind", "diagnose.start"), ("outcome", "failed")))] == 1
    assert after[("chatops_jobs_total", (("kind", "diagnose.start"), ("outcome", "ok")))] == 1
    assert after[("chatops_jobs_total", (("kind", "diagnose.check"), ("outcome", "ok")))] == 2
    assert after[("chatops_jobs_retried_total", ())] >= 1
    assert after[("chatops_job_duration_seconds_count", (("kind", "diagnose.check"),))] == 2
    assert after[("chatops_job_duration_seconds_sum", (("kind", "diagnose.check"),))] > 0
    assert after[("chatops_check_duration_seconds_count", (("check", "http.health"), ("status", "ok")))] == 1
    assert after[("chatops_check_duration_seconds_count", (("check", "http.health"), ("status", "fail")))] == 1
    assert {"mover", "reclaimer"} <= {dict(labels)["loop"] for name, labels in after
                                       if name == "chatops_worker_loop_progress_age_seconds"}


async def test_pages_sent_and_failed_are_counted_where_the_paging_code_sends_them(local_slack, redis_url, tmp_path):
    from tests.fixtures.paging import FakePagerDuty
    from tests.incident_harness import default_policy, incident_bot

    with FakePagerDuty() as pd:
        policy = default_policy(pd.events_url, ack_timeout_s=60)
        policy["severities"]["P0"].update(first="pagerduty", then=["managers"])
        async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, policy=policy) as bot:
            answer = await bot.command("/incident", "Checkout down P0")
            assert "INC-1" in answer, answer
            await bot.wait_for(lambda: bot.pd_triggers("INC-1:P0:L1"), 5, "the first page")
            pd.script(status=400, times=5)  # PagerDuty now refuses: the next page fails
            await bot.command("/incident", "Search down P0")
            await bot.settle()
            text = (await bot.rt.feature(Metrics).scrape()).decode()
    sent = re.search(r'chatops_pages_total\{outcome="sent",provider="pagerduty"\} (\S+)', text)
    failed = re.search(r'chatops_pages_total\{outcome="failed",provider="pagerduty"\} (\S+)', text)
    assert sent and float(sent.group(1)) == 1
    assert failed and float(failed.group(1)) == 1


async def test_two_runtimes_in_one_process_keep_their_own_figures(local_slack, redis_url, tmp_path):
    async with running_bot(local_slack, redis_url, tmp_path, services={}) as first, \
            running_bot(local_slack, redis_url, tmp_path, services={}) as second:
        first.rt.slack.errors["chat.update"] += 3
        assert first.rt.feature(Metrics).registry is not second.rt.feature(Metrics).registry
        assert (await scrape(first))[("chatops_slack_api_errors_total", (("method", "chat.update"),))] == 3
        assert not any(name == "chatops_slack_api_errors_total" for name, _ in await scrape(second))


async def test_healthz_fails_and_logs_why_while_the_delayed_job_mover_is_stuck(local_slack, redis_url, tmp_path,
                                                                              caplog):
    """The mover's Redis key holds the wrong type (as after a bad manual edit): every round fails, so the mover makes
    no progress while Redis itself answers pings. /healthz must notice, say why, and recover with the mover."""
    caplog.set_level(logging.WARNING)
    async with running_bot(local_slack, redis_url, tmp_path, services={}, workers=0) as bot:
        worker = Worker(bot.rt.queue, job_handlers(bot.rt), mover_interval_s=0.05, reclaim_interval_s=0.05)
        bot.rt.worker = worker
        task = asyncio.create_task(worker.run())
        try:
            await wait_for_status(bot, 200)

            await bot.rt.redis.set(bot.rt.queue.delayed_key, "not a sorted set")
            body = await wait_for_status(bot, 503, within_s=5)
            assert "delayed-job mover" in body["problem"] and worker.consumer in body["problem"]
            assert any("health check failing" in r.getMessage() and "delayed-job mover" in r.getMessage()
                       for r in caplog.records)
            assert any("queue mover" in r.getMessage() and "WRONGTYPE" in r.getMessage() for r in caplog.records)

            await bot.rt.redis.delete(bot.rt.queue.delayed_key)
            await wait_for_status(bot, 200, within_s=5)
        finally:
            worker.stop()
            await task


async def test_healthz_fails_when_the_worker_never_gets_going(local_slack, redis_url, tmp_path):
    """A worker registered but never run (its loops never complete a round) is as stuck as a stalled one."""
    async with running_bot(local_slack, redis_url, tmp_path, services={}, workers=0) as bot:
        idle = Worker(bot.rt.queue, {}, mover_interval_s=0.01, reclaim_interval_s=0.01)
        bot.rt.worker = idle
        assert (await bot.http.get(bot.base_url + "/healthz")).status_code == 200  # first look starts the clock
        body = await wait_for_status(bot, 503, within_s=3)
        assert "no progress" in body["problem"]


async def wait_for_status(bot: RunningBot, status: int, within_s: float = 3.0) -> dict:
    deadline = time.monotonic() + within_s
    while True:
        response = await bot.http.get(bot.base_url + "/healthz")
        if response.status_code == status:
            return response.json()
        assert time.monotonic() < deadline, f"/healthz stayed {response.status_code}: {response.text}"
        await asyncio.sleep(0.1)
