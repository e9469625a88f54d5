"""A diagnosis belongs to its incident: what changed since the last run, recovery confirmed, and "explains"
kept within one resource path."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace

import redis.asyncio as aioredis

from checks.compare import compare, record_of
from checks.model import CheckResult, Status
from checks.verdict import build_verdict
from bot.diagnosis import history
from bot.diagnosis.render.slack import verdict_message
from bot.diagnosis.render.text import change_line, diagnosis_json, diagnosis_text, diff_markdown
from bot.incidents.diagnoses import recovered_text
from bot.incidents.messages import RESOLVE_ACTION
from tests.app_harness import running_bot
from tests.incident_harness import buttons, declare_incident, incident_bot
from tests.servers import Reply, closed_port, local_http_server

URL_A, URL_B, URL_C = "http://a.test/health", "http://b.test/health", "http://c.test/health"


def result(check: str, target: str, status: Status, summary: str, **evidence: object) -> CheckResult:
    return CheckResult(check=check, target=target, status=status, summary=summary, evidence=dict(evidence))


def probe(url: str) -> dict:
    return {"url": url, "samples": 2, "timeout_s": 1}


# ------------------------------------------------------------------------------------------------ the diff

def test_a_rerun_counts_fixed_new_and_still_failing_by_check_and_target() -> None:
    before = record_of("r1", "api", 1000.0, [
        result("http.health", URL_A, Status.fail, "All 2 samples failed: HTTP 502"),
        result("http.health", URL_B, Status.fail, "All 2 samples failed: HTTP 502"),
        result("tcp.connect", "db:5432", Status.fail, "refused"),
        result("dns.resolve", "api.test", Status.ok, "resolves", median_ms=20),
    ])
    after = record_of("r2", "api", 1240.0, [
        result("http.health", URL_A, Status.ok, "All 2 samples returned 200"),
        result("http.health", URL_B, Status.ok, "All 2 samples returned 200"),
        result("tcp.connect", "db:5432", Status.fail, "timed out"),
        result("dns.resolve", "api.test", Status.ok, "resolves", median_ms=900),
    ])
    diff = compare(before, after)
    assert change_line(diff) == "since the last run (4 min ago): 2 fixed, 0 new, 1 still failing"
    assert [(c.check, c.target) for c in diff.fixed] == [("http.health", URL_A), ("http.health", URL_B)]
    assert diff.still_failing[0].notes == ("was: refused",)  # the same check failing differently
    assert diff.changed[0].check == "dns.resolve" and diff.changed[0].notes == ("median_ms 20 → 900",)
    text = diagnosis_text(build_verdict("api", []), [], diff)
    assert "fixed: http.health http://a.test/health — All 2 samples returned 200" in text
    assert json.loads(diagnosis_json(build_verdict("api", []), [], diff))["since_last_run"]["line"] == \
        change_line(diff)
    assert diff_markdown(diff).startswith("**Since the last run (4 min ago): 2 fixed")


def test_a_new_failure_is_new_and_a_check_that_stopped_running_is_not_fixed() -> None:
    before = record_of("r1", "api", 0.0, [result("http.health", URL_A, Status.fail, "502"),
                                          result("tcp.connect", "db:5432", Status.ok, "ok")])
    after = record_of("r2", "api", 30.0, [result("tcp.connect", "db:5432", Status.error, "deadline")])
    diff = compare(before, after)
    assert change_line(diff) == "since the last run (30 s ago): 0 fixed, 1 new, 1 still failing"
    assert diff.regressed and diff.still_failing[0].notes == ("not run this time",)


def test_the_verdict_message_says_what_changed_in_its_summary_line_and_blocks() -> None:
    before = record_of("r1", "api", 0.0, [result("http.health", URL_A, Status.fail, "502")])
    now = [result("http.health", URL_A, Status.ok, "200")]
    diff = compare(before, record_of("r2", "api", 125.0, now))
    text, blocks = verdict_message(build_verdict("api", now), diff=diff)
    assert "since the last run (2 min ago): 1 fixed, 0 new, 0 still failing" in text
    assert "fixed: http.health http://a.test/health" in json.dumps(blocks)


# ------------------------------------------------------------------------------------------------ explains

def test_a_cause_explains_only_failures_on_its_own_resource_path() -> None:
    refused = result("tcp.connect", "127.0.0.1:9001", Status.fail, "Connection refused")
    refused.resource = "127.0.0.1:9001"
    same_port = result("http.health", "http://127.0.0.1:9001/health", Status.fail, "All samples failed")
    other_port = result("http.health", "http://127.0.0.1:9002/health", Status.fail, "HTTP 404")
    explained = build_verdict("api", [refused, same_port]).findings[0].explains
    assert explained == ["http.health http://127.0.0.1:9001/health"]  # a failure is a check on one target
    unrelated = build_verdict("api", [refused, other_port])
    assert unrelated.findings[0].explains == []
    assert "This explains" not in unrelated.headline and "1 other finding(s) below" in unrelated.headline


async def test_a_run_with_two_unrelated_failures_explains_neither_with_the_other(local_slack, redis_url, tmp_path):
    with local_http_server({"/health": Reply(404)}) as server, closed_port() as (host, port):
        services = {"api": {"tcp": [f"{host}:{port}"], "http": [probe(server.url("/health"))]}}
        async with running_bot(local_slack, redis_url, tmp_path, services=services) as bot:
            await bot.command("/diagnose", "api")
            await bot.settle()
            verdict = local_slack.calls_to("chat.update")[-1].params["text"]
    assert "refused" in verdict.lower(), verdict
    assert "explains" not in verdict and "1 other finding(s) below" in verdict


# ------------------------------------------------------------------------------------------------ in an incident

async def _runs(bot, incident_id: str, count: int) -> list:
    return await bot.wait_for(
        lambda: _at_least(bot.timeline(incident_id, "diagnosis"), count), 20, f"{count} diagnosis runs")


async def _at_least(entries_coro, count: int) -> list | None:
    entries = await entries_coro
    return entries if len(entries) >= count else None


def _header_text(bot, incident) -> str:
    header = next(m for m in bot.local.messages(incident.channel) if m.ts == incident.header_ts)
    return json.dumps(header.blocks)


async def test_a_target_flipping_from_502_to_200_is_fixed_then_recovery_is_confirmed(local_slack, redis_url,
                                                                                      tmp_path):
    with local_http_server({"/health": Reply(502)}) as server:
        services = {"api": {"http": [probe(server.url("/health"))]}}
        async with incident_bot(local_slack, redis_url, tmp_path, services=services,
                                settings={"recovery_recheck_s": 1.0, "diagnose_update_interval_s": 0.1}) as bot:
            inc_id = await declare_incident(bot, "API returns 502s P2 api")
            first = (await _runs(bot, inc_id, 1))[0]  # the declaration's diagnosis
            assert first.data["status"] == "fail" and first.data["since_last"] is None
            incident = await bot.incident(inc_id)
            await bot.settle()
            assert "HTTP 502" in _header_text(bot, await bot.incident(inc_id))

            server.routes["/health"] = [Reply(200)]  # the fix
            answer = await bot.command("/diagnose", "api", user="U2", channel=incident.channel)
            assert "Queued" in answer
            second = (await _runs(bot, inc_id, 2))[-1]
            assert re.fullmatch(r"since the last run \(\d+ s ago\): 1 fixed, 0 new, 0 still failing",
                                second.data["since_last"])
            parent = next(m for m in local_slack.messages(incident.channel) if m.ts == second.data["parent_ts"])
            assert "1 fixed, 0 new, 0 still failing" in parent.text
            assert f"fixed: http.health {server.url('/health')}" in json.dumps(parent.blocks)
            await bot.settle()
            header = _header_text(bot, await bot.incident(inc_id))
            assert "Latest diagnosis" in header and "looks healthy" in header and "HTTP 502" not in header

            await bot.command("/incident", "status monitoring deployed the fix", channel=incident.channel)
            recovered = await bot.wait_for(lambda: _message_with(bot, incident, "recovered: all 1 checks"), 20,
                                           "the recovery confirmation")
            assert re.search(r"recovered: all 1 checks that failed since \d\d:\d\d UTC now pass", recovered.text)
            assert buttons({"blocks": recovered.blocks}) == {RESOLVE_ACTION: inc_id}

            server.routes["/health"] = [Reply(503)]  # it breaks again while monitoring
            regression = await bot.wait_for(lambda: _message_with(bot, incident, "Regression while monitoring"),
                                            20, "the regression")
            assert "1 new" in regression.text and "HTTP 503" in regression.text

            server.routes["/health"] = [Reply(200)]
            await bot.click(RESOLVE_ACTION, inc_id, user="U1", channel=incident.channel)
            await bot.wait_incident(inc_id, lambda i: i.status == "resolved")
            await bot.settle()
            done = len(await bot.timeline(inc_id, "diagnosis"))
            await bot.settle(quiet_s=1.5)  # past a recheck interval: the chain stopped with the resolution
            assert len(await bot.timeline(inc_id, "diagnosis")) == done


async def test_recovery_counts_every_check_that_failed_in_any_run_since_the_first_failure(local_slack, redis_url,
                                                                                           tmp_path):
    with local_http_server({"/a": Reply(502), "/b": Reply(200)}) as server:
        services = {"api": {"http": [probe(server.url("/a")), probe(server.url("/b"))]}}
        async with incident_bot(local_slack, redis_url, tmp_path, services=services,
                                settings={"recovery_recheck_s": 1.0, "diagnose_update_interval_s": 0.1}) as bot:
            inc_id = await declare_incident(bot, "API returns 502s P2 api")
            first = (await _runs(bot, inc_id, 1))[0]  # run 1: A fails
            assert [c.startswith(f"http.health {server.url('/a')}:") for c in first.data["failing_checks"]] == [True]
            incident = await bot.incident(inc_id)
            await bot.settle()

            server.routes["/b"] = [Reply(503)]  # run 2: A and B fail
            await bot.command("/diagnose", "api", user="U2", channel=incident.channel)
            second = (await _runs(bot, inc_id, 2))[-1]
            assert len(second.data["failing_checks"]) == 2
            await bot.settle()

            server.routes["/a"], server.routes["/b"] = [Reply(200)], [Reply(200)]  # run 3 (monitoring): both pass
            await bot.command("/incident", "status monitoring deployed the fix", channel=incident.channel)
            recovered = await bot.wait_for(lambda: _message_with(bot, incident, "recovered:"), 20,
                                           "the recovery confirmation")
            assert re.search(r"recovered: all 2 checks that failed since \d\d:\d\d UTC now pass", recovered.text)


def test_a_failed_check_that_no_longer_runs_is_named_not_counted_as_passing() -> None:
    text = recovered_text(3, [("http.health", "http://old.test/health")], 0.0)
    assert text == ("recovered: 2 of the 3 checks that failed since 00:00 UTC now pass; 1 no longer runs "
                    "(http.health http://old.test/health)")


def _message_with(bot, incident, needle: str):
    return next((m for m in bot.local.messages(incident.channel) if needle in (m.text or "")), None)


# ------------------------------------------------------------------------------------------------ reminders

def test_reminders_are_not_news_and_collapse_into_one_line_with_a_count() -> None:
    from bot.incidents.timeline import EntryKind
    from bot.writeup.postmortem.facts import Event, collapse_reminders
    from bot.writeup.summaries import in_catch_up

    assert not in_catch_up(EntryKind.REMINDER).news  # a catch-up after a reminder has nothing new to say
    events = [Event(0.0, EntryKind.DECLARED, "Incident declared"),
              *(Event(3600.0 * n, EntryKind.REMINDER, "Reminder: a status update was due") for n in (1, 2, 3)),
              Event(11000.0, EntryKind.RESOLVED, "Resolved")]
    collapsed = collapse_reminders(events)
    assert [e.kind for e in collapsed] == [EntryKind.DECLARED, EntryKind.REMINDER, EntryKind.RESOLVED]
    assert collapsed[1].what == "Reminder: a status update was due (3 reminders, the last at 03:00 UTC)"


async def test_diagnose_in_an_incident_channel_acks_in_one_round_trip_and_the_run_is_still_the_incidents(
        local_slack, redis_url, tmp_path, monkeypatch):
    """The ack claims and queues the run in one Redis round trip; whose run it is (the open incident whose channel
    it was typed in) the run's start job decides. A closed incident's channel keeps its runs to itself."""
    from redis.asyncio.connection import AbstractConnection

    async with incident_in_channel(local_slack, redis_url, tmp_path) as (bot, inc_id, incident):
        await bot.stop_workers()  # nothing else talks to Redis while the ack is timed
        sent: list[int] = []
        real = AbstractConnection.send_packed_command

        async def counted(self, command, check_health=True):  # type: ignore[no-untyped-def]
            sent.append(1)
            return await real(self, command, check_health)

        monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
        answer = await bot.command("/diagnose", "api", user="U2", channel=incident.channel)
        monkeypatch.setattr(AbstractConnection, "send_packed_command", real)
        assert "Queued 1 checks for `api`" in answer and len(sent) == 1, (answer, sent)

        bot.start_worker()
        await bot.settle()
        requested = await bot.timeline(inc_id, "diagnosis_requested")
        assert [(e.actor, e.data["service"], e.data["joined"]) for e in requested] == [("U2", "api", False)]
        run_id = requested[0].data["run_id"]
        assert (await bot.incident(inc_id)).diagnosis_runs == [run_id]
        assert [e.data["run_id"] for e in await bot.timeline(inc_id, "diagnosis")] == [run_id]

        await bot.command("/incident", "resolve slow query killed", channel=incident.channel)
        await bot.wait_incident(inc_id, lambda i: i.status == "resolved")
        await bot.command("/diagnose", "db", user="U2", channel=incident.channel)
        await bot.settle()
        assert len(await bot.timeline(inc_id, "diagnosis_requested")) == 1  # the closed incident's is not asked
        assert (await bot.incident(inc_id)).diagnosis_runs == [run_id]


async def test_a_run_asked_for_before_its_incident_was_resolved_is_still_the_incidents(local_slack, redis_url,
                                                                                        tmp_path):
    """Behind a queue backlog the start job can run after the incident was resolved: the run was asked for while
    it was open, so its verdict still reaches the incident's timeline (and its postmortem)."""
    async with incident_in_channel(local_slack, redis_url, tmp_path) as (bot, inc_id, incident):
        await bot.stop_workers()
        assert "Queued" in await bot.command("/diagnose", "api", user="U2", channel=incident.channel)
        await bot.command("/incident", "resolve slow query killed", channel=incident.channel)
        await bot.wait_incident(inc_id, lambda i: i.status == "resolved")
        bot.start_worker()
        await bot.settle()
        run_id = (await bot.timeline(inc_id, "diagnosis_requested"))[0].data["run_id"]
        assert [e.data["run_id"] for e in await bot.timeline(inc_id, "diagnosis")] == [run_id]
        assert (await bot.incident(inc_id)).diagnosis_runs == [run_id]


async def test_a_run_whose_incident_cannot_be_updated_still_runs_and_posts_its_verdict(local_slack, redis_url,
                                                                                       tmp_path, monkeypatch, caplog):
    """The responder was told the run is queued: an incident locked past the wait must not fail its start (which
    left no thread, and the channel claimed so that every retry answered "already running")."""
    from bot.incidents.store import IncidentStore, LockTimeout

    async with incident_in_channel(local_slack, redis_url, tmp_path) as (bot, inc_id, incident):

        def locked(self, incident_id):  # type: ignore[no-untyped-def]
            raise LockTimeout(f"{incident_id} is locked by another worker")

        monkeypatch.setattr(IncidentStore, "mutate", locked)
        assert "Queued" in await bot.command("/diagnose", "api", user="U2", channel=incident.channel)
        await bot.settle()
        assert any("looks healthy" in m.text for m in local_slack.messages(incident.channel)), \
            [m.text for m in local_slack.messages(incident.channel)]
        assert "a start hook failed" in caplog.text
        monkeypatch.undo()
        again = await bot.command("/diagnose", "api", user="U2", channel=incident.channel)
        assert "Queued" in again  # the finished run let go of the channel's claim


@contextlib.asynccontextmanager
async def incident_in_channel(local_slack, redis_url, tmp_path) -> AsyncIterator[tuple]:  # type: ignore[no-untyped-def]
    """(bot, id, incident) of an open incident with a channel of its own and no diagnosis yet; the services `api`
    and `db` answer 200."""
    with local_http_server({"/health": Reply(200)}) as server:
        services = {"api": {"http": [probe(server.url("/health"))]}, "db": {"http": [probe(server.url("/health"))]}}
        async with incident_bot(local_slack, redis_url, tmp_path, services=services) as bot:
            inc_id = await declare_incident(bot, "API slow P2")  # no service: no diagnosis of its own
            await bot.settle()
            yield bot, inc_id, await bot.incident(inc_id)


async def test_two_finish_jobs_at_once_keep_the_diff_the_first_one_stored(redis_url, monkeypatch) -> None:
    """The last two checks of a run each queue a finish job. Both found no diff stored; the second read "the previous
    run" after the first had made this run the previous one, found nothing to compare and wrote an empty diff over
    the first's: the timeline said "1 fixed", the run's record nothing (seen in the suite, under load)."""
    class Reads:
        """The Redis client, telling when both finish jobs have looked for a stored diff."""

        def __init__(self, client: aioredis.Redis) -> None:
            self.client, self.count, self.both = client, 0, asyncio.Event()

        def __getattr__(self, name: str) -> object:
            return getattr(self.client, name)

        async def hget(self, *args: object) -> object:
            value = await self.client.hget(*args)
            self.count += 1
            if self.count == 2:
                self.both.set()
            return value

    prefix = f"t{uuid.uuid4().hex[:8]}"
    client = aioredis.Redis.from_url(redis_url)
    redis = Reads(client)
    rt = SimpleNamespace(redis=redis, key=lambda *parts: ":".join([prefix, *map(str, parts)]))
    state = {"service": "api", "channel": "C1", "finished_at": "2000"}
    failing = record_of("r0", "api", 1000.0, [result("http.health", URL_A, Status.fail, "HTTP 502")])
    await client.set(rt.key("diag", "last", "C1", "api"), failing.to_json())
    calls, previous_run = [], history.previous_run

    async def in_turn(rt_: object, state_: dict) -> object:
        calls.append(1)
        if len(calls) == 1:  # the first, once both have found no diff stored
            await redis.both.wait()
            return await previous_run(rt_, state_)
        async with asyncio.timeout(5):  # the second, once the first has made this run the previous one
            while (record := await previous_run(rt_, state_)) is None or record.run_id != "r1":
                await asyncio.sleep(0.01)
        return record

    monkeypatch.setattr(history, "previous_run", in_turn)
    healthy = [result("http.health", URL_A, Status.ok, "HTTP 200")]
    run_key = rt.key("diag", "run", "r1")
    try:
        first, second = await asyncio.gather(*(history.diff_and_remember(rt, "r1", state, healthy, run_key)
                                               for _ in range(2)))
        stored = history.stored_diff({"diff": (await client.hget(run_key, "diff")).decode()})
    finally:
        await client.aclose()
    assert len(calls) == 2
    assert stored is not None and [c.check for c in stored.fixed] == ["http.health"]
    assert first == second == stored
