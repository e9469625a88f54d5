"""Interactive components (buttons): each feature's buttons, registered when that feature is installed."""

from __future__ import annotations

from typing import Any

from bot.incidents.service import Incidents


def register(app: Any, rt: Any) -> None:
    if rt.feature(Incidents) is not None:
        from handlers import incident_actions

        incident_actions.register(app, rt)
    from bot.remediation.service import Remediation

    if rt.feature(Remediation) is not None:
        from handlers import remediation_actions

        remediation_actions.register(app, rt)
