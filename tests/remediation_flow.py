"""The Slack side of a fix, as a responder does it: wait for the diagnosis to offer the fix button, open its
preview and request it, then find the re-diagnosis that reports the change. Shared by the remediation tests."""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import urlencode

from bot.diagnosis.render.slack import FIX_ACTION
from bot.remediation import messages
from bot.slack.local.payloads import APP_ID, TEAM_ID
from tests.incident_harness import buttons, declare_incident


def submitted(opened: dict, user: str, typed: dict[str, str]) -> str:
    """The `view_submission` Slack sends when `user` submits the preview `opened` with `typed` inputs."""
    values = {f"{messages.INPUT_PREFIX}{k}": {"value": {"type": "plain_text_input", "value": v}}
              for k, v in typed.items()}
    payload = {"type": "view_submission", "api_app_id": APP_ID, "team": {"id": TEAM_ID, "domain": "local"},
               "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM_ID},
               "trigger_id": uuid.uuid4().hex, "is_enterprise_install": False, "enterprise": None,
               "view": {**opened, "id": f"V{uuid.uuid4().hex[:8]}", "state": {"values": values}}}
    return urlencode({"payload": json.dumps(payload)})


def with_button(bot: Any, channel: str, action_prefix: str) -> list[Any]:
    return [m for m in bot.local.messages(channel)
            if any(a.startswith(action_prefix) for a in buttons({"blocks": m.blocks}))]


async def diagnosed_incident(bot: Any, text: str = "api-handler throttled P1 api", wait_s: float = 20) -> tuple:
    """(incident id, incident) of a new incident once its diagnosis has offered a fix button."""
    inc = await declare_incident(bot, text)
    incident = await bot.incident(inc)
    await bot.wait_for(lambda: with_button(bot, incident.channel, FIX_ACTION), wait_s, "the finding's fix button")
    await bot.settle()
    return inc, incident


async def request_fix(bot: Any, incident: Any, user: str = "U1", typed: dict[str, str] | None = None) -> tuple:
    """`user` clicks the first fix button, gets the preview and submits it; (the preview view, the approval
    request message)."""
    action_id, value = next((a, v) for m in with_button(bot, incident.channel, FIX_ACTION)
                            for a, v in buttons({"blocks": m.blocks}).items() if a.startswith(FIX_ACTION))
    before = len(bot.local.calls_to("views.open"))
    await bot.click(action_id, value, user=user, channel=incident.channel)
    opened = (await bot.wait_for(lambda: bot.local.calls_to("views.open")[before:], 5, "the preview"))[0]
    view = opened.response["view"]
    response = await bot.post_slack(submitted(view, user, typed or {}), "application/x-www-form-urlencoded")
    assert response.status_code == 200, response.text
    approval = await bot.wait_for(lambda: with_button(bot, incident.channel, messages.APPROVE_ACTION), 5,
                                  "the approval request")
    return view, approval[-1]


async def fixed_run(bot: Any, inc: str) -> str | None:
    """The "since the last run …" line of the incident's first re-diagnosis that has one."""
    entries = await bot.timeline(inc, "diagnosis")
    return next((e.data["since_last"] for e in entries if e.data.get("since_last")), None)
