"""`chatops` from a shell: diagnose without Slack or Redis, exit codes, JSON, and one-line config errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from tests.servers import Reply, closed_port, local_http_server

ROOT = Path(__file__).resolve().parent.parent


def chatops(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "REDIS_URL", "SERVICES_FILE"))}
    return subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True, text=True, timeout=60,
                          env={**clean, **(env or {})}, cwd=cwd or ROOT)


def services_file(tmp_path: Path, services: dict) -> Path:
    path = tmp_path / "services.yml"
    path.write_text(yaml.safe_dump({"services": services}))
    return path


def test_diagnose_healthy_service_exits_0_with_text(tmp_path: Path) -> None:
    with local_http_server({"/health": Reply(200)}) as server:
        path = services_file(tmp_path, {"api": {"http": [{"url": server.url("/health"), "samples": 2}]}})
        result = chatops("diagnose", "api", "--services", str(path))
    assert result.returncode == 0, result.stderr
    assert "api: OK" in result.stdout and "http.health" in result.stdout


def test_diagnose_json_carries_checks_and_ranked_findings_and_exits_1(tmp_path: Path) -> None:
    with local_http_server({"/health": Reply(503)}) as server, closed_port() as (host, port):
        path = services_file(tmp_path, {"api": {"http": [
            {"url": server.url("/health"), "samples": 2}, {"url": f"http://{host}:{port}/", "samples": 1},
        ]}})
        result = chatops("diagnose", "api", "--services", str(path), "--format", "json")
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["target"] == "api" and document["status"] == "fail"
    assert {c["status"] for c in document["checks"]} == {"fail"}
    assert set(document["checks"][0]) >= {"check", "target", "status", "summary", "resource", "evidence", "hint",
                                          "duration_ms"}
    assert len(document["findings"]) == 2 and document["findings"][0]["severity"] in ("P0", "P1")


def test_unknown_service_and_usage_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    path = services_file(tmp_path, {"api": {}, "web": {}})
    unknown = chatops("diagnose", "apii", "--services", str(path))
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == 'chatops: Unknown service "apii". Did you mean "api"? Known services: api, web.'
    assert chatops("diagnose").returncode == 2
    assert chatops("frobnicate").returncode == 2


def test_broken_services_file_is_named_with_its_path(tmp_path: Path) -> None:
    path = services_file(tmp_path, {"api": {"http": [{"url": "not a url"}]}})
    result = chatops("diagnose", "api", "--services", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"chatops: {path}: services.api.http[0].url: invalid URL"


def test_invalid_settings_stop_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    result = chatops("diagnose", "api", env={"PORT": "seventy"})
    assert result.returncode == 2
    assert result.stderr.startswith("chatops: PORT: ") and "Traceback" not in result.stderr
    result = chatops("run", env={"SLACK_SIGNING_SECRET": "s3cret-value"})
    assert result.returncode == 2
    assert "SLACK_BOT_TOKEN is required" in result.stderr and "s3cret-value" not in result.stderr
    result = chatops("worker", env={"CHATOPS_DATA_DIR": str(tmp_path)})  # no REDIS_URL, no local `chatops run`
    assert result.returncode == 2 and "REDIS_URL or REDIS_SENTINELS is required" in result.stderr
    result = chatops("worker", env={"REDIS_SENTINELS": "s1:26379,s2"})
    assert result.returncode == 2 and result.stderr.startswith("chatops: REDIS_SENTINELS: must be host:port")
    result = chatops("worker", env={"REDIS_SENTINELS": "s1:26379"})
    assert result.returncode == 2 and "REDIS_SENTINEL_MASTER is required" in result.stderr


def test_diagnose_list_shows_each_service_with_its_description_and_checks(tmp_path: Path) -> None:
    path = services_file(tmp_path, {
        "api": {"description": "Public API", "http": [{"url": "https://api.example.com/health"}],
                "dns": ["api.example.com"]},
        "queue-db": {"tcp": ["db.internal:5432"]},
    })
    result = chatops("diagnose", "list", "--services", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "api       Public API  2 checks: dns.resolve, http.health",
        "queue-db              1 checks: tcp.connect",
    ]


def test_postmortem_of_an_incident_that_does_not_exist_is_one_line_and_exit_2(redis_url: str) -> None:
    namespace = f"cli-{uuid.uuid4().hex[:8]}"  # an empty bot: no incident at all
    result = chatops("postmortem", "INC-99", env={"REDIS_URL": redis_url, "REDIS_NAMESPACE": namespace})
    assert result.returncode == 2
    assert result.stderr.strip() == "chatops: There is no incident INC-99." and result.stdout == ""


def test_a_missing_services_file_stops_http_mode_with_one_line_and_nothing_left_open(tmp_path: Path,
                                                                                     redis_url: str) -> None:
    result = chatops("run", env={"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "REDIS_URL": redis_url,
                                 "SLACK_API_URL": "http://127.0.0.1:9/api/", "SERVICES_FILE": str(tmp_path / "no.yml"),
                                 "CHATOPS_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert f"chatops: cannot read services file {tmp_path / 'no.yml'}" in result.stderr
    assert "Unclosed" not in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_bot_token_without_its_partner_stops_instead_of_opening_the_terminal_chat(tmp_path: Path) -> None:
    result = chatops("run", env={"SLACK_BOT_TOKEN": "xoxb-only-this", "CHATOPS_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == ("chatops: SLACK_BOT_TOKEN is set without a way to reach Slack: set "
                                     "SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP mode) too")
    assert not (tmp_path / "redis").exists()  # stopped before starting anything



def test_chatops_run_with_redis_down_stops_with_one_line(tmp_path: Path) -> None:
    """An unreachable REDIS_URL at start: one line naming Redis and what to set, exit 1, no traceback."""
    result = chatops("run", env={"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s",
                                 "REDIS_URL": "redis://127.0.0.1:9", "SLACK_API_URL": "http://127.0.0.1:9/api/",
                                 "CHATOPS_DATA_DIR": str(tmp_path), "HTTP_WORKERS": "1"})
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if "WARNING" not in line]
    assert len(errors) == 1 and errors[0].startswith("chatops: Redis did not answer at start ("), result.stderr
    assert "127.0.0.1:9" in errors[0] and "REDIS_URL" in errors[0]


def test_a_start_that_fails_turns_the_collector_back_on_and_names_redis() -> None:
    """hold_collection() turns the collector off until warm_up(); a start that never gets there must not leave a
    process (or a caller running chatops in-process) without it, whatever stopped it."""
    import asyncio
    import gc

    from redis.exceptions import ConnectionError as RedisConnectionError

    from bot.app.cli import StartError, started
    from bot.app.processes import hold_collection

    async def refused() -> None:
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:9. Connection refused.")

    async def broken() -> None:
        raise ValueError("not Redis")

    try:
        hold_collection()
        with pytest.raises(StartError, match=r"^Redis did not answer at start \(Error 111 .*REDIS_URL"):
            asyncio.run(started(refused()))
        assert gc.isenabled()
        hold_collection()
        with pytest.raises(ValueError):
            asyncio.run(started(broken()))
        assert gc.isenabled()
    finally:
        gc.enable()
