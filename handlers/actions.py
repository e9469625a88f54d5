"""Interactive components (buttons). Features register theirs through `rt.extras["action_registrars"]`."""

from __future__ import annotations

from typing import Any


def register(app: Any, rt: Any) -> None:
    for registrar in rt.extras.get("action_registrars", []):
        registrar(app, rt)
