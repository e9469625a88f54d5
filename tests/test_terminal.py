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
    assert "(only visible to you) Queued 2 checks for `api`" in out
    assert out.count("↳ ") == 2  # one threaded reply per check
    assert "[updated]" in out and "503" in out
    assert "started a private Redis" in result.stderr and "private Redis stopped" in result.stderr
    assert (tmp_path / "data" / "redis").exists()
    assert not (tmp_path / "data" / "redis.url").exists()  # only advertised while that Redis runs
