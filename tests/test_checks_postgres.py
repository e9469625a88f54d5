"""The postgres check against a real PostgreSQL (trust auth on this machine; CHATOPS_TEST_PG_DSN overrides).

Wrong-password logins cannot be produced against a trust-auth server, so refused logins are exercised with an
unknown role and an unknown database, which reach the same FATAL path.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from checks.model import CheckResult, Status
from checks.postgres import postgres, redact_query, scrub
from checks.registry import CheckContext
from checks.schema import dump_json
from checks.services import DatabaseSpec, ServiceSpec

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PASSWORD = "Hunter2-Sekret-pw"


@pytest.fixture(scope="module")
def pg_dsn() -> str:
    dsn = os.environ.get("CHATOPS_TEST_PG_DSN", DEFAULT_DSN)
    try:
        with psycopg.connect(dsn, connect_timeout=3):
            pass
    except psycopg.Error:
        pytest.skip(f"no PostgreSQL reachable at {DEFAULT_DSN}; set CHATOPS_TEST_PG_DSN to a database to test against")
    return dsn


async def diagnose(dsn: str | None, *, long_query_s: int = 300) -> CheckResult:
    database = DatabaseSpec(dsn_env="API_DB_DSN", long_query_s=long_query_s)
    ctx = CheckContext(
        service_name="api",
        service=ServiceSpec(database=database),
        now=datetime.now(UTC),
        http=None,  # type: ignore[arg-type]  # the postgres check makes no HTTP calls
        env={} if dsn is None else {"API_DB_DSN": dsn},
    )
    return await postgres(database, ctx)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@asynccontextmanager
async def sleeping_query(dsn: str, older_than_s: float) -> AsyncIterator[int]:
    """A second session running pg_sleep; yields its pid once the query is older than `older_than_s`."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as sleeper, \
            await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        pid = sleeper.info.backend_pid
        task = asyncio.create_task(sleeper.execute("SELECT pg_sleep(30) /* chatops-test 'secret-literal' */"))
        try:
            await asyncio.sleep(older_than_s + 0.3)
            yield pid
        finally:
            await admin.execute("SELECT pg_cancel_backend(%s)", (pid,))
            with pytest.raises(psycopg.errors.QueryCanceled):
                await task


async def test_healthy_database_logs_in_and_reports_headroom(pg_dsn: str) -> None:
    result = await diagnose(pg_dsn)

    assert result.status is Status.ok, result.summary
    assert result.summary.startswith(f"Logged in to PostgreSQL at {result.resource};")
    assert result.evidence["max_connections"] > result.evidence["connections"] >= 1
    assert result.evidence["long_queries"] == []


async def test_query_running_longer_than_the_limit_is_a_warning_naming_its_pid(pg_dsn: str) -> None:
    async with sleeping_query(pg_dsn, older_than_s=1) as pid:
        result = await diagnose(pg_dsn, long_query_s=1)

    assert result.status is Status.warn and result.severity == "P2", result.summary
    listed = {q["pid"]: q for q in result.evidence["long_queries"]}
    assert pid in listed, result.evidence
    assert listed[pid]["seconds"] >= 1
    assert "pg_sleep(30)" in listed[pid]["query"] and "secret-literal" not in listed[pid]["query"]
    assert "running over 1 s" in result.summary


async def test_connections_near_max_connections_are_a_warning(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        max_connections, in_use = conn.execute(
            "SELECT current_setting('max_connections')::int,"
            " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        ).fetchone()
    needed = math.ceil(0.8 * max_connections) - in_use  # the check's own session adds one more
    if needed > 150:
        pytest.skip(f"max_connections={max_connections} needs {needed} extra sessions to reach 80 %; too many")
    extra = await asyncio.gather(*(psycopg.AsyncConnection.connect(pg_dsn) for _ in range(max(needed, 0))))
    try:
        result = await diagnose(pg_dsn)
    finally:
        await asyncio.gather(*(conn.close() for conn in extra))

    assert result.status is Status.warn and result.severity == "P2", result.summary
    assert result.evidence["connections_pct"] >= 80
    assert f"of {max_connections} connections in use" in result.summary
    top = result.evidence["by_client"][0]
    assert top["client"] == "127.0.0.1" and top["connections"] >= needed
    assert f"most from 127.0.0.1 ({top['connections']})" in result.summary


async def test_unknown_role_is_a_refused_login(pg_dsn: str) -> None:
    result = await diagnose(make_conninfo(pg_dsn, user="chatops_no_such_role", password=PASSWORD))

    assert result.status is Status.fail and result.severity == "P0"
    assert 'refused the login: role "chatops_no_such_role" does not exist' in result.summary


async def test_unknown_database_is_a_refused_login(pg_dsn: str) -> None:
    result = await diagnose(make_conninfo(pg_dsn, dbname="chatops_no_such_db"))

    assert result.status is Status.fail and result.severity == "P0"
    assert 'database "chatops_no_such_db" does not exist' in result.summary
    assert result.resource and result.resource.endswith("/chatops_no_such_db")


async def test_nothing_listening_is_an_error_not_a_refused_login() -> None:
    port = closed_port()
    result = await diagnose(f"postgresql://app:{PASSWORD}@127.0.0.1:{port}/orders")

    assert result.status is Status.error
    assert result.summary.startswith(f"Could not reach PostgreSQL at 127.0.0.1:{port}/orders")
    assert "Connection refused" in result.summary


async def test_missing_environment_variable_says_what_to_set() -> None:
    result = await diagnose(None)

    assert result.status is Status.error
    assert "set API_DB_DSN" in result.summary


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://app:{PASSWORD}@[::1:5432/orders",  # libpq quotes the whole URI back
        f"host=127.0.0.1 password={PASSWORD} stray-word",
    ],
)
async def test_unparseable_dsn_is_reported_without_quoting_it(dsn: str) -> None:
    result = await diagnose(dsn)

    assert result.status is Status.error
    assert "not a valid PostgreSQL connection string" in result.summary
    assert PASSWORD not in dump_json(result)


async def test_password_never_appears_in_the_result(pg_dsn: str) -> None:
    refused = make_conninfo(pg_dsn, user="chatops_no_such_role", password=PASSWORD)
    unreachable = f"postgresql://app:{PASSWORD}@127.0.0.1:{closed_port()}/orders"

    for dsn in (refused, unreachable):
        dumped = dump_json(await diagnose(dsn))
        assert PASSWORD not in dumped
        assert dsn not in dumped


def test_scrub_removes_passwords_in_either_dsn_form() -> None:
    message = f'bad "postgresql://app:{PASSWORD}@db:5432/x" and "password={PASSWORD} host=db"'

    cleaned = scrub(message, secrets=[])

    assert PASSWORD not in cleaned
    assert "postgresql://app:***@db:5432/x" in cleaned and "password=*** host=db" in cleaned


def test_query_text_hides_literals_and_is_one_short_line() -> None:
    text = redact_query("ALTER ROLE app\n  PASSWORD 'it''s-secret' " + "x" * 300)

    assert "secret" not in text and "\n" not in text
    assert text.startswith("ALTER ROLE app PASSWORD '…'") and len(text) == 120
