"""Slash commands: one module per command, each with `register(app, rt)`."""

from __future__ import annotations

from typing import Any

from handlers.commands import diagnose, escalate, incident, oncall


def register(app: Any, rt: Any) -> None:
    diagnose.register(app, rt)
    incident.register(app, rt)
    escalate.register(app, rt)
    oncall.register(app, rt)
