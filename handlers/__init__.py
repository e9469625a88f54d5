"""Slack listeners — slash commands, interactive actions and events — registered on a Bolt app by `register`."""

from __future__ import annotations

from typing import Any


def register(app: Any, rt: Any) -> None:
    from handlers import actions, commands, events

    commands.register(app, rt)
    actions.register(app, rt)
    events.register(app, rt)
