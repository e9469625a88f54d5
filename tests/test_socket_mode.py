"""`chatops run` in Socket Mode (SLACK_APP_TOKEN set), as operators run it: the same handlers answer over the
WebSocket, the queue and worker do the rest, and bad input gets its one-line answer in the acknowledgement."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.app_harness import BOT_TOKEN
from tests.fixtures.socket_mode import fake_socket_mode
from tests.servers import Reply, local_http_server

ROOT = Path(__file__).resolve().parent.parent


def command(local_slack, channel: str, text: str) -> dict:  # type: ignore[no-untyped-def]
    return {"token": "unused", "team_id": "T0LOCAL", "channel_id": channel, "user_id": "U1", "user_name": "u1",
            "command": "/diagnose", "text": text, "response_url": local_slack.response_url(channel=channel),
            "trigger_id": "1.2.3", "api_app_id": "A0LOCAL0001"}


async def test_diagnose_over_socket_mode_acks_on_the_websocket_and_posts_the_verdict(local_slack, redis_url,
                                                                                    tmp_path) -> None:
    local_slack.add_user("U1", "u1")
    channel = local_slack.add_channel("ops-socket", members=["U1"])
    with local_http_server({"/health": Reply(200)}) as service:
        services = tmp_path / "services.yml"
        services.write_text(yaml.safe_dump({"services": {"api": {"http": [
            {"url": service.url("/health"), "samples": 1, "timeout_s": 2}]}}}))
        async with fake_socket_mode() as socket_mode:
            local_slack.socket_mode_url = socket_mode.url
            env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
            env.update(SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_APP_TOKEN="xapp-1-A0LOCAL0001-1-local",
                       SLACK_API_URL=local_slack.url, REDIS_URL=redis_url, SERVICES_FILE=str(services),
                       CHATOPS_DATA_DIR=str(tmp_path / "data"), REDIS_NAMESPACE=f"sm{os.getpid()}")
            bot = subprocess.Popen([sys.executable, "-m", "bot", "run"], env=env, cwd=ROOT,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                await socket_mode.wait_connected()
                opened = local_slack.calls_to("apps.connections.open")
                assert opened and opened[0].headers.get("Authorization", "").startswith("Bearer xapp-")

                ack = await socket_mode.send("slash_commands", command(local_slack, channel, "api"))
                assert "Queued 1 checks for `api`" in ack["payload"]["text"]
                assert ack["payload"]["response_type"] == "ephemeral"

                unknown = await socket_mode.send("slash_commands", command(local_slack, channel, "apii"))
                assert unknown["payload"]["text"].startswith('Unknown service "apii". Did you mean "api"?')

                deadline = time.monotonic() + 30
                while not any(c.params.get("channel") == channel and "looks healthy" in c.params.get("text", "")
                              for c in local_slack.calls_to("chat.update")):
                    assert time.monotonic() < deadline, "no verdict on the parent message"
                    await asyncio.sleep(0.1)
                [parent] = local_slack.messages(channel)
                replies = [r for r in local_slack.replies(channel, parent.ts) if r.ts != parent.ts]
                assert len(replies) == 1 and "http.health" in replies[0].text
            finally:
                bot.send_signal(signal.SIGTERM)
                output, _ = bot.communicate(timeout=30)
    assert bot.returncode == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert "connected to Slack in Socket Mode" in output
