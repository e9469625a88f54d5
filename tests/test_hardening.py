"""Every way in, tried as an attacker would, over a real HTTP server: logs that cannot be flooded or forged, body
limits with a 413, an ack that never waits for Slack's auth.test, and clicks that cannot be replayed."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bot.app.http_server import WEBHOOK_MAX_BODY, create_asgi, serve
from bot.incidents.messages import ESCALATE_ACTION
from bot.incidents.model import group_hash
from bot.logs import setup_logging
from bot.slack.local import http_error
from bot.slack.local.payloads import block_action_body, signed_headers
from tests.app_harness import free_port, running_bot
from tests.incident_harness import (
    ALERTMANAGER_TOKEN,
    SIGNING_SECRET,
    declare_incident,
    incident_bot,
)
from tests.test_incident_http import BEARER, alert_webhook

FORGED = "\n12:00:00 ERROR bot.incidents: INC-1 resolved by U1"
MB = 1024 * 1024


@contextlib.asynccontextmanager
async def served(app: Any, rt: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The bot's ASGI app behind a real uvicorn on a free port, as `chatops run` serves it."""
    port, stop = free_port(), asyncio.Event()
    server = asyncio.create_task(serve(create_asgi(app, rt), host="127.0.0.1", port=port, stop=stop))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        for _ in range(200):
            with contextlib.suppress(httpx.TransportError):
                await http.get("/healthz")
                break
            await asyncio.sleep(0.02)
        yield http
    stop.set()
    await server


@pytest.fixture
def log_file(monkeypatch: pytest.MonkeyPatch):
    """The process's log as `chatops` sets it up (text format, stderr), captured in memory."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    monkeypatch.setattr(sys, "stderr", stream)
    setup_logging("INFO", "text")
    yield stream
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


async def test_five_unsigned_10mb_posts_add_a_few_lines_to_the_log(local_slack, redis_url, tmp_path, log_file):
    async with running_bot(local_slack, redis_url, tmp_path, services={}) as bot:
        before = len(log_file.getvalue())
        for _ in range(5):
            response = await bot.http.post(bot.base_url + "/slack/events", content=b"x" * (10 * MB),
                                           headers={"content-type": "application/json"})
            assert response.status_code == 413 and "Traceback" not in response.text
        for n in range(40):  # under the size limit: they reach the signature check, or fail to parse
            kind = ("application/x-www-form-urlencoded", "application/json")[n % 2]
            response = await bot.http.post(bot.base_url + "/slack/events", content=("y" * 100_000).encode(),
                                           headers={"content-type": kind})
            assert response.status_code in (400, 401)
        grown = len(log_file.getvalue()) - before
        assert grown < 4096, log_file.getvalue()[before:]
        assert "rejected POST /slack/events" in log_file.getvalue() and "yyyy" not in log_file.getvalue()


async def test_a_webhook_refused_for_its_token_logs_one_short_line_without_the_body(local_slack, redis_url,
                                                                                     tmp_path, log_file):
    async with incident_bot(local_slack, redis_url, tmp_path) as bot, served(bot.app, bot.rt) as http:
        before = len(log_file.getvalue())
        for _ in range(30):
            answer = await http.post("/hooks/alertmanager", content=b"z" * MB + FORGED.encode(),
                                     headers={"content-type": "application/json", "authorization": "Bearer wrong"})
            assert answer.status_code == 401
    logged = log_file.getvalue()[before:]
    assert logged.count("rejected POST /hooks/alertmanager: 401") == 10, logged  # then the throttle holds
    assert "zzz" not in logged and len(logged) < 2048, logged


async def test_a_forged_log_line_in_a_body_or_a_command_stays_inside_its_own_record(local_slack, redis_url,
                                                                                   tmp_path, log_file):
    async with running_bot(local_slack, redis_url, tmp_path, services={}) as bot:
        unsigned = await bot.http.post(bot.base_url + "/slack/events", content=f"text={FORGED}".encode(),
                                       headers={"content-type": "application/x-www-form-urlencoded"})
        assert unsigned.status_code == 401
        assert (await bot.command("/diagnose", f"nosuch{FORGED}")).status_code == 200
        logging.getLogger("handlers").warning("user said %r then %s", "x", FORGED)  # any logged user value
        await bot.settle()
    lines = log_file.getvalue().splitlines()
    assert not [line for line in lines if line.startswith("12:00:00 ERROR bot.incidents")], lines
    assert any("\\n12:00:00 ERROR" in line for line in lines)


async def test_every_route_bounds_its_body_and_answers_malformed_payloads_with_400(local_slack, redis_url, tmp_path):
    async with incident_bot(local_slack, redis_url, tmp_path) as bot, served(bot.app, bot.rt) as http:
        json_type = {"content-type": "application/json"}
        slack = await http.post("/slack/events", content=b"{" * MB, headers=json_type)
        assert slack.status_code == 413
        webhook_10mb = await http.post("/hooks/alertmanager", content=b"[" * (10 * MB), headers={**json_type,
                                                                                                  **BEARER})
        assert webhook_10mb.status_code == 400, webhook_10mb.text  # read whole, then refused as not a webhook
        assert WEBHOOK_MAX_BODY >= 10 * MB  # an alert storm of thousands of alerts fits
        huge = await http.post("/hooks/pagerduty", content=b"{" * (40 * MB), headers=json_type)
        assert huge.status_code == 413 and "too large" in huge.json()["error"]
        pending = b'{"version": "4", "groupKey": "g", "status": "firing", "alerts": [{"status": "pending"}]}'
        for body in (b"", b"\xff\xfe", b'{"version": "4"', b"null", b'{"version": "4", "alerts": 7}', pending):
            answer = await http.post("/hooks/alertmanager", content=body, headers={**json_type, **BEARER})
            assert answer.status_code == 400 and "Traceback" not in answer.text, (body, answer.text)


async def test_an_alert_storm_of_a_thousand_alerts_opens_its_incident(local_slack, redis_url, tmp_path):
    hook = alert_webhook("firing", fingerprints=tuple(f"fp{n:04d}" for n in range(1000)))
    for alert in hook["alerts"]:  # labels as a real exporter sets them
        alert["labels"].update(job="kubernetes-pods", namespace="payments", pod=f"api-7d9f-{alert['fingerprint']}",
                               container="api", node="ip-10-0-12-34.eu-west-1.compute.internal",
                               endpoint="http-metrics", prometheus="monitoring/kube-prometheus-stack-prometheus",
                               instance=f"10.0.{len(alert['fingerprint'])}.34:8080", team="payments-oncall",
                               image="123456789012.dkr.ecr.eu-west-1.amazonaws.com/payments/api:2026.11.20-4f9c2e1",
                               uid=f"6f1c2b7e-{alert['fingerprint']}-4e8a-9b1d-2f0c3a5e7d91",
                               service_account="payments-api", cluster="prod-eu-west-1-blue", region="eu-west-1",
                               deployment="payments-api", replicaset="payments-api-7d9f8c6b5", severity_level="page")
        alert["annotations"].update(
            description=f"5xx ratio above 5% for 5 minutes on {alert['labels']['pod']} in payments (eu-west-1)",
            runbook_url="https://runbooks.example.com/payments/api/high-error-rate#first-steps",
            dashboard=f"https://grafana.example.com/d/api-errors/payments-api?var-pod={alert['labels']['pod']}")
    body = json.dumps(hook).encode()
    assert len(body) > 1_150_000  # about 1.2 MB: what 1,000 alerts with realistic labels weigh
    async with incident_bot(local_slack, redis_url, tmp_path) as bot, served(bot.app, bot.rt) as http:
        answer = await http.post("/hooks/alertmanager", content=body,
                                 headers={"Authorization": f"Bearer {ALERTMANAGER_TOKEN}"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["action"] == "opened"
        assert await bot.ctx.store.open_ids() == ["INC-1"]
        assert await bot.ctx.store.alert_tally(group_hash(hook["groupKey"]), "INC-1") == (1000, 1000)
        hook["status"] = "resolved"
        for alert in hook["alerts"]:
            alert["status"] = "resolved"
        answer = await http.post("/hooks/alertmanager", content=json.dumps(hook).encode(),
                                 headers={"Authorization": f"Bearer {ALERTMANAGER_TOKEN}"})
        assert answer.json() == {"incident": "INC-1", "action": "resolved"}, answer.text
        over = await http.post("/hooks/alertmanager", content=b" " * (WEBHOOK_MAX_BODY + 1),
                               headers={"Authorization": f"Bearer {ALERTMANAGER_TOKEN}"})
        assert over.status_code == 413 and "too large" in over.json()["error"]
        assert await bot.ctx.store.all_ids() == ["INC-1"]


async def test_the_first_command_acks_within_3s_while_slack_refuses_auth_test(local_slack, redis_url, tmp_path):
    local_slack.script("auth.test", *[http_error(429, retry_after=1)] * 8, *[http_error(500)] * 4)
    async with running_bot(local_slack, redis_url, tmp_path, services={}, slack_max_retries=2) as bot:
        started = time.monotonic()
        response = await bot.command("/diagnose", "nosuch")
        assert time.monotonic() - started < 3
        assert response.status_code == 200 and "nosuch" in response.json()["text"]
        assert "no longer available" not in response.text
        local_slack.clear_faults()
        deadline = time.monotonic() + 30
        while not [c for c in local_slack.calls_to("auth.test") if c.status == 200]:
            assert time.monotonic() < deadline, "auth.test was never retried in the background"
            await asyncio.sleep(0.1)


async def test_a_replayed_escalate_click_escalates_once(local_slack, redis_url, tmp_path):
    async with incident_bot(local_slack, redis_url, tmp_path) as bot, served(bot.app, bot.rt) as http:
        inc = await declare_incident(bot, "Primary database down P0 api")
        incident = await bot.incident(inc)
        before = incident.paging.level
        body = block_action_body(ESCALATE_ACTION, inc, user_id="U1", channel_id=incident.channel,
                                 message_ts=incident.header_ts, trigger_id="13345.98765.abcdef",
                                 response_url=bot.local.response_url(channel=incident.channel, user="U1"))
        headers = signed_headers(body, SIGNING_SECRET, content_type="application/x-www-form-urlencoded")
        assert (await http.post("/slack/events", content=body, headers=headers)).status_code == 200
        await bot.settle()
        level = (await bot.incident(inc)).paging.level
        assert level == before + 1
        # what 11 s would do: the button's own double-click window ends
        await bot.rt.redis.delete(bot.rt.key("inc", inc, "escalate-click"))
        replay = await http.post("/slack/events", content=body, headers=headers)
        assert replay.status_code == 200
        await bot.settle()
        assert (await bot.incident(inc)).paging.level == level, "the replayed click escalated again"


async def test_metrics_token_guards_metrics_and_leaves_health_open(local_slack, redis_url, tmp_path):
    async with running_bot(local_slack, redis_url, tmp_path, services={}, metrics_token="m3trics-t0ken") as bot:
        assert (await bot.http.get(bot.base_url + "/metrics")).status_code == 401
        wrong = await bot.http.get(bot.base_url + "/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = await bot.http.get(bot.base_url + "/metrics", headers={"Authorization": "Bearer m3trics-t0ken"})
        assert right.status_code == 200 and "chatops" in right.text
        assert (await bot.http.get(bot.base_url + "/healthz")).status_code == 200
