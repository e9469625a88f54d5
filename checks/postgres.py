"""PostgreSQL: can the bot log in, is a query stuck, is the server near `max_connections` (and who holds them).

The connection string is read from the environment variable the services file names (`database.dsn_env`) and is
never shown: no summary, evidence or hint carries the DSN or a password. libpq's own sentences are kept because
they say exactly what went wrong ("role "app" does not exist"), but any password in them is cut out first, and a
DSN that does not even parse is reported without libpq's text, which quotes the string it could not read.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from checks.model import CheckResult, Status
from checks.registry import CheckContext, check
from checks.services import DatabaseSpec

if TYPE_CHECKING:  # the driver is imported when the check first runs, not when the checks are registered
    import psycopg

CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT = "5s"
CONNECTIONS_WARN_RATIO = 0.8
QUERY_TEXT_CHARS = 120
MAX_LISTED_QUERIES = 5
MAX_LISTED_CLIENTS = 3

_CONNECTIONS = """
SELECT current_setting('max_connections')::int,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int
"""
# Our own backend is excluded; `state <> 'idle'` keeps "active" and "idle in transaction" (which holds locks).
_LONG_QUERIES = """
SELECT pid, usename, state, extract(epoch FROM now() - query_start)::float8 AS seconds, query,
       count(*) OVER () AS total
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND state <> 'idle' AND pid <> pg_backend_pid()
  AND query_start < now() - make_interval(secs => %s)
ORDER BY query_start
LIMIT %s
"""


# Who holds the connections: a pool that leaks or an app that scaled out shows up as one address with most of them.
_BY_CLIENT = """
SELECT coalesce(host(client_addr), 'local socket'), count(*)::int
FROM pg_stat_activity WHERE backend_type = 'client backend'
GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT %s
"""


@check("postgres", timeout_s=20)
async def postgres(database: DatabaseSpec, ctx: CheckContext) -> CheckResult:
    """PostgreSQL login, queries running too long, connections near max_connections (and from where)"""
    import psycopg

    session = await open_session(database, ctx)
    if isinstance(session, CheckResult):
        return session
    conn, where, secrets = session
    try:
        async with conn:
            return await _inspect(conn, database.long_query_s, where)
    except psycopg.Error as exc:  # e.g. our own statement_timeout fired on a server too busy to answer
        return CheckResult(
            status=Status.error,
            summary=f"Logged in to PostgreSQL at {where} but could not read pg_stat_activity: "
            f"{scrub(str(exc), secrets)}",
            resource=where,
        )


Session = tuple["psycopg.AsyncConnection[Any]", str, list[str]]  # connection, host:port/db, secrets to scrub


async def open_session(database: DatabaseSpec, ctx: CheckContext) -> Session | CheckResult:
    """A connection (autocommit, statement_timeout set) to the database `dsn_env` names, or the result that says
    why there is none: variable unset, DSN unreadable, login refused, server unreachable."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    dsn = ctx.env.get(database.dsn_env)
    if not dsn:
        return CheckResult(
            status=Status.error,
            summary=f"{database.dsn_env} is not set in the bot's environment; set {database.dsn_env} to the "
            "database's connection string.",
        )
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return CheckResult(
            status=Status.error,
            summary=f"{database.dsn_env} is not a valid PostgreSQL connection string (URI or key=value form).",
        )
    where = _server(params)
    secrets = [dsn, str(params.get("password") or "")]
    try:
        conn = await asyncio.wait_for(_connect(dsn), timeout=CONNECT_TIMEOUT_S + 1)
    except psycopg.Error as exc:
        return _connect_failure(scrub(str(exc), secrets), where)
    except TimeoutError:
        return _connect_failure(f"no answer within {CONNECT_TIMEOUT_S} s", where)
    try:
        await conn.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")
    except psycopg.Error as exc:
        await conn.close()
        return CheckResult(status=Status.error, resource=where,
                           summary=f"Logged in to PostgreSQL at {where} but it answers nothing: "
                           f"{scrub(str(exc), secrets)}")
    return conn, where, secrets


async def _connect(dsn: str) -> psycopg.AsyncConnection[Any]:
    import psycopg

    return await psycopg.AsyncConnection.connect(
        dsn, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True, application_name="chatops-diagnose"
    )


def _server(params: dict[str, Any]) -> str:
    """`host:port/dbname` for people; libpq's defaults when the DSN leaves them out."""
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or params.get('user') or 'postgres'}"


def _connect_failure(reason: str, where: str) -> CheckResult:
    """A server that answered with FATAL refused us (a definite finding); anything else means we never got there."""
    if "FATAL:" in reason:
        return CheckResult(
            status=Status.fail,
            severity="P0",
            summary=f"PostgreSQL at {where} refused the login: {reason.split('FATAL:', 1)[1].strip()}",
            resource=where,
            evidence={"server": where, "error": reason},
            hint="The app connects with the same settings, so it is failing too: check the user, password "
            "(rotated secret?), database name and pg_hba rules, or whether the server is out of connections.",
        )
    return CheckResult(
        status=Status.error,
        summary=f"Could not reach PostgreSQL at {where}: {reason}",
        resource=where,
        evidence={"server": where, "error": reason},
        hint="Unreachable from the bot's network, which may not be the app's: compare with the aws.rds status "
        "and the tcp check, then look at security groups, NACLs and routes between the two.",
    )


async def _inspect(conn: psycopg.AsyncConnection[Any], long_query_s: int, where: str) -> CheckResult:
    async with conn.cursor() as cur:
        await cur.execute(_CONNECTIONS)
        max_connections, connections = await cur.fetchone() or (0, 0)
        await cur.execute(_LONG_QUERIES, (long_query_s, MAX_LISTED_QUERIES))
        rows = await cur.fetchall()
        await cur.execute(_BY_CLIENT, (MAX_LISTED_CLIENTS,))
        by_client = [{"client": address, "connections": count} for address, count in await cur.fetchall()]
    long_queries = [_describe_query(row) for row in rows]
    total_long = rows[0][5] if rows else 0
    ratio = connections / max_connections if max_connections else 0.0
    evidence: dict[str, Any] = {
        "server": where,
        "connections": connections,
        "max_connections": max_connections,
        "connections_pct": round(100 * ratio, 1),
        "long_query_s": long_query_s,
        "long_queries": long_queries,
        "long_query_count": total_long,
        "by_client": by_client,
    }
    problems = []
    if total_long:
        oldest = long_queries[0]
        problems.append(
            f"{total_long} quer{'y' if total_long == 1 else 'ies'} running over {long_query_s} s "
            f"(longest: pid {oldest['pid']}, {oldest['seconds']:.0f} s, {oldest['query']!r})"
        )
    if ratio >= CONNECTIONS_WARN_RATIO:
        top = by_client[0] if by_client else None
        source = f", most from {top['client']} ({top['connections']})" if top else ""
        problems.append(f"{connections} of {max_connections} connections in use ({100 * ratio:.0f} %){source}")
    if not problems:
        return CheckResult(
            status=Status.ok,
            summary=f"Logged in to PostgreSQL at {where}; {connections}/{max_connections} connections, "
            f"no query running over {long_query_s} s.",
            resource=where,
            evidence=evidence,
        )
    return CheckResult(
        status=Status.warn,
        severity="P2",
        summary=f"PostgreSQL at {where}: " + "; ".join(problems) + ".",
        resource=where,
        evidence=evidence,
        hint="A long query can hold locks others wait on: look at it with pg_stat_activity/pg_locks and, if it "
        "must go, SELECT pg_cancel_backend(pid). Near max_connections, look for a pool that leaks or grew with "
        "the app's instance count. Without pg_read_all_stats the bot sees other users' queries as "
        "'<insufficient privilege>'.",
    )


def _describe_query(row: tuple[Any, ...]) -> dict[str, Any]:
    pid, user, state, seconds, query, _total = row
    return {"pid": pid, "user": user, "state": state, "seconds": round(seconds, 1), "query": redact_query(query)}


_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")


def redact_query(query: str | None) -> str:
    """Query text for a chat channel: literals (which can hold passwords or personal data) hidden, one line, short."""
    text = " ".join(_STRING_LITERAL.sub("'…'", query or "").split())
    return text if len(text) <= QUERY_TEXT_CHARS else text[: QUERY_TEXT_CHARS - 1] + "…"


_URI_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def scrub(message: str, secrets: list[str]) -> str:
    """One line of a psycopg/libpq message with the DSN and every password removed."""
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        message = message.replace(secret, "***")
    message = _KEYWORD_PASSWORD.sub(r"\1***", _URI_PASSWORD.sub(r"\1***@", message))
    message = message.removeprefix("connection failed: ")
    return " ".join(message.split())[:300]
