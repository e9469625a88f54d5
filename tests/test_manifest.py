"""The Slack app manifest is valid, and every command and event it declares reaches a listener."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from tests.app_harness import running_bot

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = yaml.safe_load((ROOT / "slack-app-manifest.yml").read_text())


def test_manifest_matches_slacks_schema() -> None:
    schema = json.loads((ROOT / "tests" / "data" / "slack-manifest.schema.json").read_text())
    jsonschema.Draft7Validator(schema).validate(MANIFEST)
    assert MANIFEST["settings"]["socket_mode_enabled"] is True
    assert MANIFEST["settings"]["interactivity"]["is_enabled"] is True
    assert all(c["should_escape"] for c in MANIFEST["features"]["slash_commands"])


async def test_every_declared_command_and_event_has_a_listener(local_slack, redis_url, tmp_path) -> None:
    async with running_bot(local_slack, redis_url, tmp_path, services={"api": {}}) as bot:
        for command in MANIFEST["features"]["slash_commands"]:
            response = await bot.command(command["command"], "help")
            assert response.status_code == 200, command["command"]
            assert response.text, f"{command['command']} was acknowledged with nothing to say"
        for declared in MANIFEST["settings"]["event_subscriptions"]["bot_events"]:
            event_type = declared.split(".")[0]  # message.channels / message.groups arrive as `message`
            event = {"type": event_type, "channel": bot.channel, "user": "U1", "ts": "1700000000.000100",
                     "text": "hello", "item": {"type": "message", "channel": bot.channel, "ts": "1700000000.0001"},
                     "reaction": "pushpin", "event_ts": "1700000000.000100"}
            response = await bot.event(event)
            assert response.status_code == 200, f"{declared} has no listener (Bolt answers 404 and Slack retries)"
