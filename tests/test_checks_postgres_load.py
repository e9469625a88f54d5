"""postgres.locks and postgres.size against the real PostgreSQL on this machine (see test_checks_postgres.py):
one session holds a row lock in an open transaction while another waits on it; a table is filled between two
samples of the database's size."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from checks.model import CheckResult, Status
from checks.postgres_load import postgres_locks, postgres_size
from checks.registry import CheckContext, PreviousSample
from checks.services import DatabaseSpec, ServiceSpec
from tests.test_checks_postgres import pg_dsn  # noqa: F401  (the fixture: skips without a server)


def context(dsn: str, previous: PreviousSample | None = None, **spec: int) -> tuple[DatabaseSpec, CheckContext]:
    database = DatabaseSpec(dsn_env="API_DB_DSN", **spec)
    asked: list[tuple[str, str]] = []

    async def earlier(check: str, target: str) -> PreviousSample | None:
        asked.append((check, target))
        return previous

    ctx = CheckContext(service_name="api", service=ServiceSpec(database=database), now=datetime.now(UTC),
                       http=None, env={"API_DB_DSN": dsn}, previous=earlier)  # type: ignore[arg-type]
    return database, ctx


@asynccontextmanager
async def table(dsn: str) -> AsyncIterator[str]:
    name = f"chatops_test_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        await admin.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, note text)")
        await admin.execute(f"INSERT INTO {name} VALUES (1, 'first')")
        try:
            yield name
        finally:
            await admin.execute(f"DROP TABLE IF EXISTS {name}")


@asynccontextmanager
async def blocked_update(dsn: str, name: str, wait_s: float) -> AsyncIterator[tuple[int, int]]:
    """A holder with an uncommitted UPDATE of row 1 and a waiter trying to update it too; yields (holder pid,
    waiter pid) once the waiter has waited `wait_s`."""
    async with await psycopg.AsyncConnection.connect(dsn) as holder, \
            await psycopg.AsyncConnection.connect(dsn, autocommit=True) as waiter:
        await holder.execute(f"UPDATE {name} SET note = 'held by the test' WHERE id = 1")  # transaction left open
        task = asyncio.create_task(waiter.execute(
            f"UPDATE {name} SET note = 'secret-literal' WHERE id = 1 /* waiter */"))
        try:
            await asyncio.sleep(wait_s)
            yield holder.info.backend_pid, waiter.info.backend_pid
        finally:
            await holder.rollback()
            await task


async def test_a_session_waiting_on_anothers_lock_names_the_blocker_and_the_table(pg_dsn: str) -> None:  # noqa: F811
    async with table(pg_dsn) as name, blocked_update(pg_dsn, name, wait_s=1.5) as (holder, waiter):
        result = await postgres_locks(*context(pg_dsn, lock_wait_s=1))

    assert result.status is Status.warn and result.severity == "P2", result.summary
    [wait] = [w for w in result.evidence["waits"] if w["pid"] == waiter]
    assert wait["blocked_by"]["pid"] == holder and wait["blocked_by"]["state"] == "idle in transaction"
    assert wait["relation"] == name and wait["mode"] == "ShareLock on transactionid"  # the holder's transaction
    assert wait["waiting_s"] >= 1
    assert "secret-literal" not in wait["query"] and "'…'" in wait["query"]
    assert f"pid {holder} (" in result.summary and "blocks 1" in result.summary
    assert f"pg_terminate_backend({holder})" in (result.hint or "")


async def test_a_wait_longer_than_the_long_query_limit_is_a_failure(pg_dsn: str) -> None:  # noqa: F811
    async with table(pg_dsn) as name, blocked_update(pg_dsn, name, wait_s=1.2):
        database, ctx = context(pg_dsn, lock_wait_s=1, long_query_s=1)
        result = await postgres_locks(database, ctx)

    assert result.status is Status.fail and result.severity == "P1", result.summary


async def test_no_lock_waits_is_ok(pg_dsn: str) -> None:  # noqa: F811
    async with table(pg_dsn):
        database, ctx = context(pg_dsn, lock_wait_s=1)
        result = await postgres_locks(database, ctx)

    assert result.status is Status.ok, result.summary
    assert "has waited 1 s or more on a lock" in result.summary


async def test_size_without_an_earlier_sample_lists_the_largest_tables(pg_dsn: str) -> None:  # noqa: F811
    async with table(pg_dsn) as name:
        database, ctx = context(pg_dsn)
        result = await postgres_size(database, ctx)

    assert result.status is Status.ok
    assert result.evidence["database_bytes"] > 0 and result.evidence["compared_with"] is None
    assert "No earlier sample" in result.summary
    assert len(result.evidence["largest_tables"]) <= 5
    assert name in [t["table"].split(".", 1)[1] for t in result.evidence["largest_tables"]] or \
        len(result.evidence["largest_tables"]) == 5


async def test_size_growth_since_the_previous_run_is_a_warning(pg_dsn: str) -> None:  # noqa: F811
    async with table(pg_dsn) as name:
        database, ctx = context(pg_dsn)
        first = await postgres_size(database, ctx)
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as admin:
            await admin.execute(f"INSERT INTO {name} SELECT g, repeat(md5(g::text), 8) FROM generate_series(2, "
                                "60001) g")
        then = datetime.now(UTC) - timedelta(minutes=10)
        previous = PreviousSample(at=then, numbers={"database_bytes": float(first.evidence["database_bytes"])})
        database, ctx = context(pg_dsn, previous)
        result = await postgres_size(database, ctx)

    grown = result.evidence["growth_bytes"]
    assert grown >= 8 * 2**20, grown
    if grown / first.evidence["database_bytes"] < 0.25:
        pytest.skip("this database is too large for 20 MB to be a quarter of it")
    assert result.status is Status.warn and result.severity == "P3", result.summary
    assert f"since the previous run ({then:%Y-%m-%d %H:%M} UTC)" in result.summary
    assert result.evidence["largest_tables"][0]["table"] == f"public.{name}"
    assert f"largest public.{name}" in result.summary


async def test_size_that_barely_moved_is_ok_and_says_what_it_compared(pg_dsn: str) -> None:  # noqa: F811
    database, ctx = context(pg_dsn)
    first = await postgres_size(database, ctx)
    then = datetime.now(UTC) - timedelta(minutes=3)
    database, ctx = context(pg_dsn, PreviousSample(then, {"database_bytes": first.evidence["database_bytes"]}))

    result = await postgres_size(database, ctx)

    assert result.status is Status.ok
    assert result.evidence["compared_with"] == then.isoformat(timespec="seconds")
    assert "since the previous run" in result.summary


async def test_checks_skip_when_the_postgres_check_cannot_log_in() -> None:
    database, ctx = context("postgresql://app@127.0.0.1:1/orders")

    results: list[CheckResult] = [await postgres_locks(database, ctx), await postgres_size(database, ctx)]

    assert all(r.status is Status.skipped for r in results)
    assert all("the postgres check says why" in r.summary for r in results)


async def test_second_diagnosis_compares_the_size_with_the_first(pg_dsn, local_slack, redis_url, tmp_path,  # noqa: F811
                                                                  monkeypatch) -> None:
    from tests.app_harness import running_bot

    monkeypatch.setenv("ORDERS_DB_DSN", pg_dsn)
    services = {"orders": {"database": {"dsn_env": "ORDERS_DB_DSN"}}}
    async with running_bot(local_slack, redis_url, tmp_path, services=services) as bot:
        sizes = []
        for _ in range(2):
            await bot.command("/diagnose", "orders")
            await bot.settle()
            parent = bot.parents()[-1]
            sizes += [r.text for r in local_slack.replies(bot.channel, parent.ts) if "postgres.size" in r.text]

    assert len(sizes) == 2, sizes
    assert "No earlier sample" in sizes[0]
    assert "since the previous run" in sizes[1]


def test_a_lock_wait_ranks_before_the_http_failures_it_causes() -> None:
    from checks.verdict import build_verdict

    results = [
        CheckResult(check="http.health", target="https://api.example.com/health", status=Status.fail,
                    severity="P0", summary="5 of 5 samples timed out"),
        CheckResult(check="postgres.locks", target="$API_DB_DSN", status=Status.fail, severity="P1",
                    summary="3 sessions blocked", resource="db:5432/orders"),
    ]

    verdict = build_verdict("api", results)

    assert [f.check for f in verdict.findings] == ["postgres.locks", "http.health"]
