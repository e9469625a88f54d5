"""Interactive components (buttons). Features add theirs through `ACTION_REGISTRARS`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ACTION_REGISTRARS: list[Callable[[Any, Any], None]] = []


def register(app: Any, rt: Any) -> None:
    for registrar in ACTION_REGISTRARS:
        registrar(app, rt)
