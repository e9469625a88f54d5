"""`chatops run` with no Slack credentials: a terminal chat over the same app, queue and workers, with a private
Redis it starts and stops itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.servers import Reply, local_http_server

ROOT = Path(__file__).resolve().parent.parent


def test_typed_diagnose_shows_ack_thread_and_verdict(tmp_path: Path) -> None:
    with local_http_server({"/health": Reply(200), "/down": Reply(503)}) as server:
        services = tmp_path / "services.yml"
        services.write_text(yaml.safe_dump({"services": {"api": {"http": [
            {"url": server.url("/health"), "samples": 2}, {"url": server.url("/down"), "samples": 2},
        ]}}}))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "REDIS_URL"))}
        env.update(SERVICES_FILE=str(services), CHATOPS_DATA_DIR=str(tmp_path / "data"))
        result = subprocess.run([sys.executable, "-m", "bot", "run"], input="/diagnose apii\n/diagnose api\n",
                                capture_output=True, text=True, timeout=90, env=env, cwd=ROOT)
    out = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'Unknown service "apii". Did you mean "api"?' in out
    assert "(only visible to you) Queued 2 checks for api" in out
    assert out.count("↳ ") == 2  # one threaded reply per check
    assert "(updated)" in out and "503" in out
    assert "demo" not in out  # the user's own services file: no demo shop
    log = (tmp_path / "data" / "chatops.log").read_text()
    assert "started a private Redis" in log and "private Redis stopped" in log
    assert result.stderr == ""  # log lines go to the file unless --verbose
    assert (tmp_path / "data" / "redis").exists()
    assert not (tmp_path / "data" / "redis.url").exists()  # only advertised while that Redis runs


def chat(lines: list[str], data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`chatops run` as a newcomer starts it: no Slack variables, no Redis, no services file of their own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "REDIS_URL", "SERVICES_FILE"))}
    env["CHATOPS_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "bot", "run", *args], input="".join(f"{x}\n" for x in lines),
                          check=False, capture_output=True, text=True, timeout=120, env=env, cwd=data_dir.parent)


def test_a_first_conversation_reads_like_a_chat(tmp_path: Path) -> None:
    result = chat(["/help", "/diagnose demo", "/incident Checkout down P1 demo", "/nope"], tmp_path / "data")
    out = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Try /diagnose demo or /incident Checkout down P1 demo" in out  # the greeting
    assert "/escalate" in out and "/click N" in out  # /help: the bot's commands and the terminal's own
    # The demo shop's verdict names the endpoint that answers 502: once in #general, once in the incident's channel.
    assert out.count("❌ demo: All 2 samples failed: HTTP 502") == 2
    assert out.count("Resource: http://127.0.0.1:") >= 2 and "/checkout" in out
    assert "│ url " in out  # evidence as a table
    # The incident is declared, and the chat follows the person into its channel.
    assert "INC-1" in out
    assert "you were added to #inc-" in out and "now chatting there" in out
    assert "/nope is not a command here. Known: /incident, /diagnose, /escalate, /oncall, /help" in out
    for wire in ("<@", "<#", "<!", "&lt;", "&gt;", "&amp;", "*INC", ":x:", ":mag:", "```", "{\n"):
        assert wire not in out, wire
    assert "Traceback" not in out + result.stderr
    assert not [line for line in out.splitlines() if " INFO " in line or " WARNING " in line]
    assert result.stderr == ""
    shown = messages(out)
    assert len(shown) == len(set(shown)), "a message was shown twice"
    assert "started a private Redis" in (tmp_path / "data" / "chatops.log").read_text()


def test_verbose_sends_log_lines_to_stderr_not_to_the_conversation(tmp_path: Path) -> None:
    result = chat(["/diagnose list"], tmp_path / "data", "--verbose")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "started a private Redis" in result.stderr
    assert "• demo" in result.stdout and " INFO " not in result.stdout


def messages(out: str) -> list[tuple[str, str]]:
    """(channel, text) of every message the chat printed: a `#channel · chatops · time` line and what follows."""
    found: list[tuple[str, str]] = []
    for chunk in out.split("\n#")[1:]:
        head, _, body = chunk.partition("\n")
        if " · chatops · " in head:
            found.append((head.split(" · ")[0], body.split("\n#")[0]))
    return found
