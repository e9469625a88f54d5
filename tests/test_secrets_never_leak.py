"""No secret ever leaves the bot: not in a log line (at DEBUG, before any redaction), not on stdout/stderr, not in
anything sent to Slack, not in an answer to a user, not in what is stored in Redis (timeline, dead letters, the
postmortem's inputs).

A whole session runs with distinctive fake secrets (Slack tokens and signing secret, PagerDuty routing key, Opsgenie
key, webhook secrets, summarizer key, a database DSN with a password, all read the way production reads them): a
/diagnose whose database check fails, bad input to every command, a declared incident that pages PagerDuty (through
a 500) and is escalated to Opsgenie, forged webhooks, and the resolve that publishes the postmortem. Then everything
captured is searched for every secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from bot.logs import JsonFormatter, RedactSecrets
from bot.writeup.postmortem.assemble import postmortem_markdown
from tests.app_harness import BOT_TOKEN, RunningBot, running_bot
from tests.fixtures.paging import FakeOpsgenie, FakePagerDuty
from tests.fixtures.slack import SLACK_TEST_SIGNING_SECRET
from tests.servers import closed_port

APP_TOKEN = "xapp-1-A0LEAKTEST-1111-feedfacecafe0123456789"
PD_ROUTING_KEY = "pdLEAKtestROUTINGkey0123456789ab"  # 32 characters, as PagerDuty wants
OPSGENIE_KEY = "og-leaktest-4f1d2c3b-aaaa-bbbb-cccc-0123456789ab"
DB_PASSWORD = "Pw-LeakTest-7c1e9a"
PD_WEBHOOK_SECRET = "pdwebhook-leaktest-5a5a5a5a"
ALERTMANAGER_TOKEN = "am-leaktest-token-9b9b9b9b"
SUMMARIZER_KEY = "sk-leaktest-summarizer-0e0e0e0e"


@pytest.fixture
def pagerduty() -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as fake:
        fake.routing_key = PD_ROUTING_KEY
        yield fake


@pytest.fixture
def opsgenie() -> Iterator[FakeOpsgenie]:
    with FakeOpsgenie() as fake:
        fake.api_key = OPSGENIE_KEY
        yield fake


def paging_policy(pagerduty: FakePagerDuty, opsgenie: FakeOpsgenie) -> dict[str, Any]:
    fast = {"timeout_s": 2, "retry": {"attempts": 3, "base_s": 0.01, "max_s": 0.05}}
    return {
        "providers": {"pagerduty": {"events_url": pagerduty.events_url, **fast},
                      "opsgenie": {"api_url": opsgenie.url, **fast}},
        "severities": {"P1": {"first": "pagerduty", "then": [{"provider": "opsgenie", "targets": ["team:sre"]}],
                              "ack_timeout": 3600}},
    }


async def drive_a_session(bot: RunningBot, pagerduty: FakePagerDuty, answers: list[str]) -> str:
    """/diagnose, bad input, declare (PagerDuty answers 500 first), escalate (Opsgenie), forged webhooks, resolve.
    Returns the postmortem draft."""
    async def say(command: str, text: str) -> str:
        response = await bot.command(command, text)
        answers.append(response.text)
        return response.json().get("text", "")

    assert "Queued" in await say("/diagnose", "db")
    assert "Queued" in await say("/diagnose", "db-broken-dsn")
    for command, text in [("/diagnose", "db; cat $APP_DB_DSN"), ("/diagnose", "<!channel> db"),
                          ("/incident", "sev"), ("/incident", "note"), ("/escalate", "@nobody"),
                          ("/escalate", "INC-404 now")]:
        await say(command, text)

    pagerduty.script(status=500, times=1)
    declared = await say("/incident", "Database refuses connections P1 db")
    incident_id = re.search(r"INC-\d+", declared)
    assert incident_id, declared
    await wait_until(lambda: pagerduty.events, "the PagerDuty page")
    await bot.settle(timeout_s=20)
    escalated = await say("/escalate", f"{incident_id.group(0)} nobody answers")
    assert "Paging level 2" in escalated, escalated
    await bot.settle(timeout_s=20)

    for path, headers in [("/hooks/pagerduty", {"X-PagerDuty-Signature": "v1=00"}),
                          ("/hooks/alertmanager", {"Authorization": "Bearer wrong"})]:
        response = await bot.http.post(bot.base_url + path, content=b'{"messages": []}',
                                       headers={"content-type": "application/json", **headers})
        answers.append(f"{response.status_code} {response.text}")

    resolved = await say("/incident", f"resolve {incident_id.group(0)} restarted the primary")
    assert "resolved" in resolved, resolved
    await bot.settle(timeout_s=20)
    return await postmortem_markdown(bot.rt, incident_id.group(0))


async def redis_dump(bot: RunningBot) -> str:
    """Every value this bot stored: timeline, incident records, diagnosis results, dead letters."""
    redis, parts, ns = bot.rt.redis, [], bot.rt.namespace
    keys = {key for pattern in (f"{ns}:*", f"{{{ns}}}:*", f"{{{ns}:*")  # plain, the queue's tag, an incident's
            async for key in redis.scan_iter(match=pattern)}
    for key in sorted(keys):
        kind = (await redis.type(key)).decode()
        reader = {"string": redis.get, "hash": redis.hgetall, "list": lambda k: redis.lrange(k, 0, -1),
                  "set": redis.smembers, "zset": lambda k: redis.zrange(k, 0, -1, withscores=True),
                  "stream": redis.xrange}[kind]
        parts.append(f"{key!r} {await reader(key)!r}")
    return "\n".join(parts)


def sent_to_slack(local_slack: Any) -> str:
    """What the bot sent Slack and what Slack holds, minus the one place the bot token belongs (Authorization)."""
    return "\n".join(
        json.dumps({"method": c.method, "params": c.params, "response": c.response,
                    "headers": {k: v for k, v in c.headers.items() if k.lower() != "authorization"}}, default=str)
        for c in local_slack.calls) + json.dumps(local_slack.ephemerals(), default=str)


async def test_a_whole_session_leaks_no_secret_anywhere(local_slack, redis_url, tmp_path, monkeypatch, caplog, capfd,
                                                        pagerduty, opsgenie):
    policy_file = tmp_path / "paging.yml"
    policy_file.write_text(yaml.safe_dump(paging_policy(pagerduty, opsgenie)))
    for name, value in {"PAGING_POLICY_FILE": str(policy_file), "PAGERDUTY_ROUTING_KEY": PD_ROUTING_KEY,
                        "OPSGENIE_API_KEY": OPSGENIE_KEY, "PAGERDUTY_WEBHOOK_SECRET": PD_WEBHOOK_SECRET,
                        "ALERTMANAGER_TOKEN": ALERTMANAGER_TOKEN, "SUMMARIZER_API_KEY": SUMMARIZER_KEY}.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)
    answers: list[str] = []
    with closed_port() as (host, port):
        dsn = f"postgresql://chatops:{DB_PASSWORD}@{host}:{port}/incidents?sslmode=disable"
        monkeypatch.setenv("APP_DB_DSN", dsn)
        monkeypatch.setenv("BROKEN_DB_DSN", f"host={host} password={DB_PASSWORD} port=notaport user=chatops")
        services = {"db": {"description": "Primary database", "database": {"dsn_env": "APP_DB_DSN"}},
                    "db-broken-dsn": {"database": {"dsn_env": "BROKEN_DB_DSN"}}}
        async with running_bot(local_slack, redis_url, tmp_path, services=services,
                               slack_app_token=APP_TOKEN, job_max_deliveries=2) as bot:
            assert set(bot.rt.settings.secrets()) >= {BOT_TOKEN, SLACK_TEST_SIGNING_SECRET, APP_TOKEN}
            postmortem = await drive_a_session(bot, pagerduty, answers)
            stored = await redis_dump(bot)
            db_replies = [c.params["text"] for c in local_slack.calls_to("chat.postMessage")
                          if c.params.get("text", "").startswith(("fail: postgres", "error: postgres"))]
            assert len(db_replies) >= 3, f"a database check never reported, so a DSN went unused: {db_replies}"
    assert [e for e in opsgenie.events if e["action"] == "create"], "Opsgenie was never paged: its key was unused"
    assert "Database refuses connections" in postmortem

    out, err = capfd.readouterr()
    captured = {
        "log records": "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records),
        "formatted log": caplog.text,
        "stdout": out, "stderr": err,
        "sent to Slack": sent_to_slack(local_slack),
        "answers to users": "\n".join(answers),
        "postmortem": postmortem,
        "stored in Redis": stored,
    }
    secrets = {"bot token": BOT_TOKEN, "signing secret": SLACK_TEST_SIGNING_SECRET, "app token": APP_TOKEN,
               "PagerDuty routing key": PD_ROUTING_KEY, "Opsgenie key": OPSGENIE_KEY, "database DSN": dsn,
               "database password": DB_PASSWORD, "PagerDuty webhook secret": PD_WEBHOOK_SECRET,
               "Alertmanager token": ALERTMANAGER_TOKEN, "summarizer key": SUMMARIZER_KEY}
    leaks = [f"{secret} in {where}" for where, text in captured.items() for secret, value in secrets.items()
             if value in text]
    assert leaks == []
    assert len(caplog.records) > 50, "too little was logged for this search to mean anything"


async def wait_until(predicate: Any, what: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------------------------------- RedactSecrets


@pytest.fixture
def redacted_log() -> Iterator[tuple[logging.Logger, list[str]]]:
    """A logger whose handler redacts two secrets, as bot.logs.setup_logging sets up the root handler."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets(["xoxb-redact-me-123", "s3cr3t-pass", "short"[:5]]))
    logger = logging.getLogger(f"test.redact.{id(lines)}")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        yield logger, lines
    finally:
        logger.removeHandler(handler)


def test_redaction_covers_message_arguments(redacted_log):
    logger, lines = redacted_log
    logger.info("calling Slack with %s and %r", "xoxb-redact-me-123", {"password": "s3cr3t-pass"})
    assert "xoxb-redact-me-123" not in lines[0] and "s3cr3t-pass" not in lines[0]
    assert json.loads(lines[0])["msg"] == "calling Slack with [redacted] and {'password': '[redacted]'}"


def test_redaction_covers_exception_text_and_traceback(redacted_log):
    logger, lines = redacted_log
    try:
        raise ConnectionError("could not connect to postgresql://app:s3cr3t-pass@db/app")
    except ConnectionError:
        logger.exception("database check failed")
    record = json.loads(lines[0])
    assert "s3cr3t-pass" not in lines[0]
    assert "postgresql://app:[redacted]@db/app" in record["exc"] and "Traceback" in record["exc"]


def test_redaction_covers_secrets_added_later_and_ignores_fragments_too_short_to_be_secrets(redacted_log):
    logger, lines = redacted_log
    redactor = next(f for f in logger.handlers[0].filters if isinstance(f, RedactSecrets))
    redactor.add("pd-routing-key-added-later")
    logger.warning("page failed for pd-routing-key-added-later; short words stay")
    assert json.loads(lines[0])["msg"] == "page failed for [redacted]; short words stay"
