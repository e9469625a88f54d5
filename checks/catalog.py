"""Finds the modules that define checks and imports them, which registers their checks.

Discovery (rather than a hand-kept list) means adding a check is adding a module. Only modules that use `@check`
register anything; importing the others is harmless because no module here does work at import time.
"""

from __future__ import annotations

import gc
import importlib
import pkgutil
from pathlib import Path

_NOT_CHECKS = {"checks.catalog", "checks.registry", "checks.model", "checks.runner", "checks.services",
               "checks.verdict"}
_loaded = False


def load() -> None:
    global _loaded
    if _loaded:
        return
    for module in pkgutil.walk_packages([str(Path(__file__).parent)], prefix="checks."):
        if module.name not in _NOT_CHECKS:
            importlib.import_module(module.name)
    _loaded = True
    # The modules live as long as the process: keep the collector from walking them again and again. A process
    # that answers Slack loads them with its first /diagnose, after its start-up heap was frozen.
    gc.freeze()
