"""Shared fixtures. Each fixtures module owns one boundary: a real Redis, a local Slack Web API, AWS (moto)."""

from __future__ import annotations

import json
from pathlib import Path

pytest_plugins = [
    "tests.fixtures.redis_server",
    "tests.fixtures.slack",
    "tests.fixtures.aws",
    "tests.fixtures.paging",
    "tests.redis_topologies",
    "tests.redis_cluster",
]

POLICY = Path(__file__).resolve().parent.parent / "deploy" / "iam-policy.json"


def policy_actions() -> set[str]:
    document = json.loads(POLICY.read_text())
    actions: set[str] = set()
    for statement in document["Statement"]:
        listed = statement["Action"]
        actions.update([listed] if isinstance(listed, str) else listed)
    return actions


def pytest_sessionfinish(session, exitstatus) -> None:  # type: ignore[no-untyped-def]
    """Fail the run when a check made an AWS call that deploy/iam-policy.json does not allow: in production that
    check would only ever say AccessDenied."""
    from tests.fixtures.aws import AWS_OPERATIONS

    missing = {action: checks for action, checks in AWS_OPERATIONS.items() if action not in policy_actions()}
    if missing:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = [f"  {action} (used by {', '.join(sorted(checks))})" for action, checks in sorted(missing.items())]
        message = "deploy/iam-policy.json lacks AWS actions the checks use:\n" + "\n".join(lines)
        if reporter:
            reporter.write_line(message, red=True)
        session.exitstatus = 1
