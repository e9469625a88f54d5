"""Diagnostic checks: plain async functions that return data (CheckResult), registered with `@check`.

Renderers (Slack blocks, terminal text, JSON, postmortem markdown) present results; checks never format chat text.
"""

from checks.model import CheckResult, Finding, Status, Verdict
from checks.registry import CheckContext, check, registered_checks

__all__ = ["CheckContext", "CheckResult", "Finding", "Status", "Verdict", "check", "registered_checks"]
