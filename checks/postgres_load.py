"""PostgreSQL under load: who blocks whom on locks, and what takes the space (the runbook's performance steps).

- `postgres.locks`: sessions waiting on a lock another session holds (`pg_blocking_pids`), each with the session
  that blocks it, how long it has waited, the relation and lock mode, and both queries (literals hidden, one
  short line). The blocker that blocks the most sessions leads: cancelling it frees them.
- `postgres.size`: the largest tables (with indexes and TOAST) and `pg_database_size` now against the same
  check's sample from the service's previous diagnosis run in the same incident (or channel), when there is one:
  the growth is measured between those two runs, not over any fixed period.

Both reuse the `postgres` check's session (same DSN handling and secret scrubbing). When that check cannot log in
it says why; these two then report `skipped` rather than repeat it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from checks.model import CheckResult, Status
from checks.postgres import open_session, redact_query, scrub
from checks.registry import CheckContext, check
from checks.services import DatabaseSpec
from checks.targets import database_target

MAX_LISTED_WAITS = 10
LARGEST_TABLES = 5
GROWTH_WARN_RATIO = 0.25  # the database grew by a quarter or more between two runs ...
GROWTH_WARN_BYTES = 8 * 2**20  # ... and by at least this much (a tiny test database doubling is not news)
SIZE_CHECK = "postgres.size"

# One row per (waiting session, session blocking it). `query_start` is when the waiting statement began: it has
# been waiting about that long, since a statement stuck on a lock does nothing else.
_BLOCKED = """
SELECT w.pid, w.usename, extract(epoch FROM now() - w.query_start)::float8 AS waiting_s,
       lock.relation, lock.mode, w.query,
       b.pid, b.usename, b.state, extract(epoch FROM now() - coalesce(b.xact_start, b.query_start))::float8,
       b.query, count(*) OVER () AS total
FROM pg_stat_activity w
CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS blocker(pid)
JOIN pg_stat_activity b ON b.pid = blocker.pid
LEFT JOIN LATERAL (
    -- the lock waited for; a row lock waits for the holder's transaction id, and the table is then named by
    -- the tuple lock the waiter already holds
    SELECT (SELECT l.relation::regclass::text FROM pg_locks l
            WHERE l.pid = w.pid AND l.relation IS NOT NULL AND (NOT l.granted OR l.locktype = 'tuple')
            ORDER BY l.granted LIMIT 1) AS relation,
           (SELECT l.mode || ' on ' || l.locktype FROM pg_locks l WHERE l.pid = w.pid AND NOT l.granted
            LIMIT 1) AS mode
) lock ON true
WHERE w.wait_event_type = 'Lock'
ORDER BY waiting_s DESC
LIMIT %s
"""
_SIZES = """
SELECT current_database(), pg_database_size(current_database())
"""
_LARGEST = """
SELECT format('%%I.%%I', n.nspname, c.relname), pg_total_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%%'
ORDER BY 2 DESC
LIMIT %s
"""


@check("postgres.locks", timeout_s=20)
async def postgres_locks(database: DatabaseSpec, ctx: CheckContext) -> CheckResult:
    """PostgreSQL sessions blocked on locks: who blocks whom, for how long, on which table"""
    rows, where = await _read(database, ctx, _blocked_rows)
    if isinstance(rows, CheckResult):
        return rows
    waits = [_wait(row) for row in rows]
    total = rows[0][-1] if rows else 0
    evidence: dict[str, Any] = {"server": where, "blocked_sessions": total, "lock_wait_s": database.lock_wait_s,
                                "waits": waits}
    longest = waits[0]["waiting_s"] if waits else 0.0
    if longest < database.lock_wait_s:
        tail = f" (the longest has waited {longest:.0f} s)" if waits else ""
        return CheckResult(status=Status.ok, resource=where, evidence=evidence,
                           summary=f"No PostgreSQL session at {where} has waited {database.lock_wait_s} s or more "
                           f"on a lock{tail}.")
    return _blocked_result(database, where, waits, total, evidence)


def _blocked_result(database: DatabaseSpec, where: str, waits: list[dict[str, Any]], total: int,
                    evidence: dict[str, Any]) -> CheckResult:
    blockers = Counter(w["blocked_by"]["pid"] for w in waits)
    lead_pid, blocked_count = blockers.most_common(1)[0]
    lead = next(w["blocked_by"] for w in waits if w["blocked_by"]["pid"] == lead_pid)
    worst = waits[0]
    on = f" on {worst['relation']} ({worst['mode']})" if worst["relation"] else ""
    severe = worst["waiting_s"] >= database.long_query_s
    evidence["lead_blocker"] = lead
    return CheckResult(
        status=Status.fail if severe else Status.warn,
        severity="P1" if severe else "P2",
        resource=where,
        evidence=evidence,
        summary=f"PostgreSQL at {where}: {total} session(s) blocked on locks; pid {lead_pid} ({lead['user']}, "
        f"{lead['state']} for {lead['seconds']:.0f} s, {lead['query']!r}) blocks {blocked_count}. Longest wait "
        f"{worst['waiting_s']:.0f} s{on}: pid {worst['pid']} {worst['query']!r}.",
        hint=f"If pid {lead_pid}'s work can be dropped, SELECT pg_cancel_backend({lead_pid}) (or "
        f"pg_terminate_backend({lead_pid}) when it is 'idle in transaction': an app that opened a transaction and "
        "forgot it). Then find why it held the lock: a migration, a long batch, a missing commit.",
    )


def _wait(row: tuple[Any, ...]) -> dict[str, Any]:
    pid, user, waiting_s, relation, mode, query, b_pid, b_user, b_state, b_seconds, b_query, _total = row
    return {
        "pid": pid, "user": user, "waiting_s": round(waiting_s or 0.0, 1), "relation": relation, "mode": mode,
        "query": redact_query(query),
        "blocked_by": {"pid": b_pid, "user": b_user, "state": b_state, "seconds": round(b_seconds or 0.0, 1),
                       "query": redact_query(b_query)},
    }


@check(SIZE_CHECK, timeout_s=20)
async def postgres_size(database: DatabaseSpec, ctx: CheckContext) -> CheckResult:
    """PostgreSQL database size against the previous run's sample, and the largest tables"""
    rows, where = await _read(database, ctx, _size_rows)
    if isinstance(rows, CheckResult):
        return rows
    (name, size), largest = rows
    tables = [{"table": table, "bytes": int(total), "size": _human(total)} for table, total in largest]
    previous = await ctx.previous(SIZE_CHECK, database_target(database)) if ctx.previous else None
    before = previous.numbers.get("database_bytes") if previous else None
    evidence: dict[str, Any] = {"database_bytes": int(size), "server": where, "database": name,
                                "size": _human(size), "largest_tables": tables,
                                "compared_with": previous.at.isoformat(timespec="seconds") if before else None}
    top = f"; largest {tables[0]['table']} ({tables[0]['size']})" if tables else ""
    if before is None:
        return CheckResult(status=Status.ok, resource=where, evidence=evidence,
                           summary=f"Database {name} at {where} is {_human(size)}{top}. No earlier sample to "
                           "compare with (the next diagnosis of this service will).")
    return _growth_result(name, where, int(size), int(before), previous.at, top, evidence)  # type: ignore[union-attr]


def _growth_result(name: str, where: str, size: int, before: int, then: datetime, top: str,
                   evidence: dict[str, Any]) -> CheckResult:
    grown = size - before
    evidence.update(previous_bytes=before, growth_bytes=grown)
    since = f"since the previous run ({then:%Y-%m-%d %H:%M} UTC)"
    change = f"{'+' if grown >= 0 else '-'}{_human(abs(grown))}"
    if before and grown >= GROWTH_WARN_BYTES and grown / before >= GROWTH_WARN_RATIO:
        return CheckResult(
            status=Status.warn, severity="P3", resource=where, evidence=evidence,
            summary=f"Database {name} at {where} grew {change} ({100 * grown / before:.0f} %) {since}, to "
            f"{_human(size)}{top}.",
            hint="Fast growth fills the disk: see which of the largest tables grew (a runaway log or queue table, "
            "bloat from a stuck autovacuum), and the free storage (aws.rds, FreeStorageSpace).",
        )
    return CheckResult(status=Status.ok, resource=where, evidence=evidence,
                       summary=f"Database {name} at {where} is {_human(size)} ({change} {since}){top}.")


async def _read(database: DatabaseSpec, ctx: CheckContext,
                reader: Callable[[Any], Awaitable[Any]]) -> tuple[Any, str]:
    """What `reader(cursor)` returns, with the server's name; or the result to return instead (a skip when the
    `postgres` check will already say why the bot cannot log in)."""
    import psycopg

    session = await open_session(database, ctx)
    if isinstance(session, CheckResult):
        return _not_connected(session), ""
    conn, where, secrets = session
    try:
        async with conn, conn.cursor() as cur:
            return await reader(cur), where
    except psycopg.Error as exc:
        return CheckResult(status=Status.error, resource=where,
                           summary=f"Logged in to PostgreSQL at {where} but could not read its statistics: "
                           f"{scrub(str(exc), secrets)}"), where


async def _blocked_rows(cur: Any) -> list[tuple[Any, ...]]:
    await cur.execute(_BLOCKED, (MAX_LISTED_WAITS,))
    return await cur.fetchall()


async def _size_rows(cur: Any) -> tuple[tuple[str, int], list[tuple[str, int]]]:
    await cur.execute(_SIZES)
    database = await cur.fetchone()
    await cur.execute(_LARGEST, (LARGEST_TABLES,))
    return database, await cur.fetchall()


def _not_connected(result: CheckResult) -> CheckResult:
    return CheckResult(status=Status.skipped, resource=result.resource,
                       summary="Not connected to PostgreSQL; the postgres check says why.")


def _human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"
