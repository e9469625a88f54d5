"""Inbound requests built like Slack's: signed slash commands, button clicks and Events API deliveries.

The tests use them to drive the app; the terminal chat mode uses them to turn what a person types or
clicks into the requests Slack would have sent. Defaults match the workspace LocalSlack seeds with
tests/fixtures/slack.py: user U1 "alice" in #general (C1).
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier

TEAM_ID = "T0LOCAL"
APP_ID = "A0LOCAL0001"  # LocalSlack's app id
VERIFICATION_TOKEN = "local-verification-token"  # deprecated by Slack, still sent in payloads


def signed_headers(body: bytes | str, secret: str, *, timestamp: int | None = None,
                   content_type: str = "application/x-www-form-urlencoded") -> dict:
    """Headers Slack sends with a request: X-Slack-Request-Timestamp and the v0 HMAC signature."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = SignatureVerifier(secret).generate_signature(timestamp=str(timestamp), body=body)
    return {"Content-Type": content_type, "X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": signature}


def slash_command_body(command: str, text: str, *, user_id: str = "U1", user_name: str = "alice",
                       channel_id: str = "C1", channel_name: str = "general", response_url: str,
                       trigger_id: str = "t1", team_id: str = TEAM_ID) -> str:
    """A slash command as Slack POSTs it: form-encoded."""
    return urlencode({
        "token": VERIFICATION_TOKEN, "team_id": team_id, "team_domain": "local", "channel_id": channel_id,
        "channel_name": channel_name, "user_id": user_id, "user_name": user_name, "command": command,
        "text": text, "api_app_id": APP_ID, "is_enterprise_install": "false", "response_url": response_url,
        "trigger_id": trigger_id,
    })


def block_action_body(action_id: str, value: str, *, user_id: str = "U1", channel_id: str = "C1",
                      message_ts: str, response_url: str, block_id: str = "actions", user_name: str = "alice",
                      channel_name: str = "general", trigger_id: str = "t1", team_id: str = TEAM_ID,
                      message: dict | None = None, action_type: str = "button") -> str:
    """A button click as Slack POSTs it: form-encoded `payload=<json>`. Pass `message` (e.g. from
    conversations.history) to give handlers the clicked message's blocks."""
    payload = {
        "type": "block_actions", "api_app_id": APP_ID, "token": VERIFICATION_TOKEN, "trigger_id": trigger_id,
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "team": {"id": team_id, "domain": "local"}, "enterprise": None, "is_enterprise_install": False,
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel_id, "is_ephemeral": False},
        "channel": {"id": channel_id, "name": channel_name},
        "message": message or {"type": "message", "ts": message_ts, "user": "UBOT", "text": "", "blocks": []},
        "state": {"values": {}}, "response_url": response_url,
        "actions": [{"type": action_type, "action_id": action_id, "block_id": block_id, "value": value,
                     "text": {"type": "plain_text", "text": value}, "action_ts": f"{time.time():.6f}"}],
    }
    return urlencode({"payload": json.dumps(payload)})


def event_body(event: dict, *, event_id: str, team_id: str = TEAM_ID, event_time: int | None = None) -> str:
    """An Events API delivery: the JSON `event_callback` envelope around `event`."""
    return json.dumps({
        "token": VERIFICATION_TOKEN, "team_id": team_id, "api_app_id": APP_ID, "event": event,
        "type": "event_callback", "event_id": event_id, "event_time": event_time or int(time.time()),
        "authorizations": [{"enterprise_id": None, "team_id": team_id, "user_id": "UBOT", "is_bot": True,
                            "is_enterprise_install": False}],
        "is_ext_shared_channel": False, "event_context": f"4-{event_id}",
    })
