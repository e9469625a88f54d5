"""Checks are imported one module at a time: a worker imports the module of the check it is about to run, and with
it the SDK that check needs (boto3, psycopg, google-auth) — not every check at start. That rests on the table of
check → module in checks/catalog.py, which must say what importing the modules actually registers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from checks.catalog import MODULES, import_every_module
from checks.registry import registered_definitions
from tests.servers import Reply, local_http_server

ROOT = Path(__file__).resolve().parent.parent
SDKS = ["boto3", "botocore", "psycopg", "google.auth"]

# A worker's interpreter: start-up as the worker command does it, then the check jobs of one run, one at a time.
WORKER = """
import asyncio, json, sys
from datetime import UTC, datetime

from bot.app.processes import warm_up
from checks.registry import CheckContext
from checks.runner import PlannedCheck, make_http_client, run_check
from checks.services import parse_service

SDKS = json.loads(sys.argv[2])


async def run(planned, service):
    http = make_http_client()
    try:
        ctx = CheckContext(service_name="api", service=service, now=datetime.now(UTC), http=http, env={})
        return await run_check(planned, ctx)
    finally:
        await http.aclose()


async def main():
    warm_up()
    at_start = sorted(m for m in sys.modules if m.startswith("checks.") or m in SDKS)
    service = parse_service({"http": [{"url": sys.argv[1], "samples": 1}], "database": {"dsn_env": "UNSET_DSN"}})
    http = await run(PlannedCheck("http.health", 0, sys.argv[1]), service)
    after_http = sorted(sys.modules)
    database = await run(PlannedCheck("postgres", 0, "$UNSET_DSN"), service)
    print(json.dumps({"at_start": at_start, "http": http.status.value, "after_http": after_http,
                      "database": database.summary, "after_database": sorted(sys.modules)}))


asyncio.run(main())
"""


def test_the_table_of_check_modules_is_what_importing_every_module_registers() -> None:
    import_every_module()
    registered = {check_id: d.func.__module__ for check_id, d in sorted(registered_definitions().items())}
    assert len(registered) > 40  # every check registered: the walk saw the real modules
    rows = "\n".join(f"    {check_id}: {module}" for check_id, module in registered.items())
    assert registered == MODULES, f"checks/catalog.py CHECKS should name these modules:\n{rows}"


def test_a_worker_imports_a_checks_module_and_its_sdk_when_it_first_runs_that_check() -> None:
    with local_http_server({"/health": Reply(200)}) as server:
        done = subprocess.run([sys.executable, "-c", WORKER, server.url("/health"), json.dumps(SDKS)], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert [m for m in report["at_start"] if m in SDKS or m in MODULES.values()] == []
    assert report["http"] == "ok"
    after_http = set(report["after_http"])
    assert "checks.http" in after_http
    assert [m for m in SDKS if m in after_http] == []
    assert sorted(set(MODULES.values()) & after_http) == ["checks.http"]  # no other check's module either
    assert "UNSET_DSN is not set" in report["database"]  # the Postgres check ran, and only now needed its driver
    assert {"checks.postgres", "psycopg"} <= set(report["after_database"])


def test_a_plan_is_worked_out_once_per_spec_and_again_for_an_edited_one() -> None:
    from checks.runner import plan
    from checks.services import parse_service

    first = parse_service({"http": [{"url": "http://a.example/"}]})
    edited = parse_service({"http": [{"url": "http://a.example/"}, {"url": "http://b.example/"}],
                            "tcp": [{"host": "db.example", "port": 5432}]})
    planned = plan(first)
    planned.clear()  # a caller's list is its own: the cached plan is not changed through it
    assert [(p.check, p.target) for p in plan(first)] == [("http.health", "http://a.example/")]
    assert sorted((p.check, p.index) for p in plan(edited)) == [("http.health", 0), ("http.health", 1),
                                                                  ("tcp.connect", 0)]
