"""`chatops worker` as operators run it: a process of its own with /healthz and /metrics on WORKER_METRICS_PORT,
stopping cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.app_harness import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_worker_serves_health_and_metrics_and_stops_on_sigterm(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    env.update(REDIS_URL=redis_url, WORKER_METRICS_PORT=str(port), SERVICES_FILE=str(ROOT / "services.example.yml"))
    worker = subprocess.Popen([sys.executable, "-m", "bot", "worker"], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        health = None
        for _ in range(100):
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert health is not None and health.status_code == 200, health
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
        assert metrics.status_code == 200 and "chatops_queue_depth" in metrics.text
        assert httpx.get(f"http://127.0.0.1:{port}/slack/events", timeout=2).status_code == 404
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output[-2000:]
    assert "Traceback" not in output
