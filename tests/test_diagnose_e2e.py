"""`/diagnose` end to end in HTTP mode: signed request → ack → parent message → threaded results → verdict."""

from __future__ import annotations

import time

import pytest


from tests.app_harness import running_bot
from tests.servers import Reply, closed_port, local_http_server, silent_listener


def probe(url: str, **extra: object) -> dict:
    return {"url": url, "samples": 2, "timeout_s": 1, **extra}


async def test_healthy_service_gets_parent_thread_and_green_verdict(local_slack, redis_url, tmp_path):
    with local_http_server({"/health": Reply(200)}) as server:
        services = {"api": {"description": "Public API", "http": [probe(server.url("/health"))]}}
        async with running_bot(local_slack, redis_url, tmp_path, services=services) as bot:
            started = time.perf_counter()
            response = await bot.command("/diagnose", "api")
            assert time.perf_counter() - started < 3
            assert response.status_code == 200
            assert "Queued 1 checks for `api`" in response.json()["text"]
            await bot.settle()

            [parent] = bot.parents()
            replies = local_slack.replies(bot.channel, parent.ts)
            threaded = [r for r in replies if r.ts != parent.ts]
            assert len(threaded) == 1 and threaded[0].thread_ts == parent.ts
            assert "http.health" in threaded[0].text
            updates = [c for c in local_slack.calls_to("chat.update") if c.params["ts"] == parent.ts]
            assert updates, "the parent message was never updated with the verdict"
            assert "looks healthy" in updates[-1].params["text"]


async def test_failing_slow_and_dead_targets_are_told_apart_in_the_thread(local_slack, redis_url, tmp_path):
    routes = {"/ok": Reply(200), "/boom": Reply(500), "/slow": Reply(200, delay_s=3)}
    with local_http_server(routes) as server, closed_port() as (host, port), silent_listener() as (shost, sport):
        services = {"api": {"http": [
            probe(server.url("/ok")), probe(server.url("/boom")), probe(server.url("/slow")),
            probe(f"http://{host}:{port}/health"), probe(f"http://{shost}:{sport}/health"),
        ]}}
        async with running_bot(local_slack, redis_url, tmp_path, services=services) as bot:
            response = await bot.command("/diagnose", "api")
            assert response.status_code == 200
            await bot.settle()

            [parent] = bot.parents()
            threaded = [r for r in local_slack.replies(bot.channel, parent.ts) if r.ts != parent.ts]
            assert len(threaded) == 5
            assert all(r.thread_ts == parent.ts for r in threaded)
            by_target = {r.text.split(" — ")[0]: r.text for r in threaded}
            text = "\n".join(by_target.values())
            assert "500" in next(t for k, t in by_target.items() if "/boom" in k)
            assert "refused" in next(t for k, t in by_target.items() if f":{port}/" in k).lower()
            assert "no response in time" in next(t for k, t in by_target.items() if "/slow" in k)
            assert "no response in time" in next(t for k, t in by_target.items() if f":{sport}/" in k)
            assert text.count("fail:") >= 3
            final = [c for c in local_slack.calls_to("chat.update") if c.params["ts"] == parent.ts][-1]
            assert "looks healthy" not in final.params["text"]
            assert any(":x:" in str(b) for b in final.params["blocks"])


async def test_second_diagnose_of_same_target_joins_the_running_one(local_slack, redis_url, tmp_path):
    with local_http_server({"/slow": Reply(200, delay_s=1.0)}) as server:
        services = {"api": {"http": [probe(server.url("/slow"), timeout_s=3)]}}
        async with running_bot(local_slack, redis_url, tmp_path, services=services) as bot:
            first = await bot.command("/diagnose", "api")
            second = await bot.command("/diagnose", "api", user="U2")
            assert "Queued" in first.json()["text"]
            assert "already running" in second.json()["text"]
            await bot.settle()
            assert len(bot.parents()) == 1
            third = await bot.command("/diagnose", "api")  # once finished, a new run starts
            assert "Queued" in third.json()["text"]
            await bot.settle()
            assert len(bot.parents()) == 2


@pytest.mark.parametrize("text, expected", [
    ("", "Usage: `/diagnose SERVICE`"),
    ("apii", 'Unknown service "apii". Did you mean "api"? Known services: api, db, web.'),
    ("x" * 5000, "is not a service name"),
    ("api; rm -rf /", "takes one service name"),
    ("../../etc/passwd", "is not a service name"),
    ("<@U123|bob>", "is not a service name"),
    ("<!channel>", "is not a service name"),
    ("http://169.254.169.254/latest", "is not a service name"),
    ("ÄPI", "is not a service name"),
])
async def test_bad_input_gets_a_clear_ephemeral_answer_and_queues_nothing(local_slack, redis_url, tmp_path,
                                                                          text, expected):
    services = {"api": {"http": [probe("http://127.0.0.1:9/")]}, "db": {}, "web": {}}
    async with running_bot(local_slack, redis_url, tmp_path, services=services) as bot:
        response = await bot.command("/diagnose", text)
        assert response.status_code == 200
        body = response.json()
        assert expected in body["text"]
        assert body.get("response_type", "ephemeral") == "ephemeral"
        assert "Traceback" not in body["text"] and "<!channel>" not in body["text"] and "<@U123" not in body["text"]
        assert len(body["text"]) < 400
        stats = await bot.rt.queue.stats()
        assert stats.depth == 0 and stats.delayed == 0
        assert local_slack.calls_to("chat.postMessage") == []


async def test_list_shows_services_and_their_checks(local_slack, redis_url, tmp_path):
    services = {"api": {"description": "Public <API>", "http": [probe("http://127.0.0.1:9/")]}, "db": {}}
    async with running_bot(local_slack, redis_url, tmp_path, services=services) as bot:
        text = (await bot.command("/diagnose", "list")).json()["text"]
        assert "`api` — Public &lt;API&gt;: 1 checks (http.health)" in text
        assert "`db`" in text and "none configured" in text


async def test_list_shows_the_database_checks_for_a_service_with_a_database(local_slack, redis_url, tmp_path):
    services = {"orders": {"database": {"dsn_env": "ORDERS_DB_DSN", "lock_wait_s": 5},
                           "aws": {"db_instances": ["orders-db"], "db_client_sslmode": {"orders-db": "require"}}}}
    async with running_bot(local_slack, redis_url, tmp_path, services=services) as bot:
        text = (await bot.command("/diagnose", "list")).json()["text"]
        assert "postgres, postgres.locks, postgres.size" in text and "aws.rds" in text


async def test_a_channel_slack_says_does_not_exist_dead_letters_the_job_at_once(local_slack, redis_url, tmp_path):
    services = {"api": {"http": [probe("http://127.0.0.1:9/")]}}
    async with running_bot(local_slack, redis_url, tmp_path, services=services) as bot:
        response = await bot.command("/diagnose", "api", channel="CGONE")  # archived or deleted since
        assert "Queued" in response.json()["text"]
        await bot.settle()
        [dead] = await bot.rt.queue.dead_letters()
        assert dead["kind"] == "diagnose.start" and "channel_not_found" in dead["error"]
        assert int(dead["attempts"]) == 1  # no point retrying for minutes
        assert len(local_slack.calls_to("chat.postMessage")) == 1
