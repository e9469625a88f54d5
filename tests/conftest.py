"""Shared fixtures. Each fixtures module owns one boundary: a real Redis, a local Slack Web API, AWS (moto)."""

from __future__ import annotations

import json
from pathlib import Path

pytest_plugins = [
    "tests.fixtures.redis_server",
    "tests.fixtures.slack",
    "tests.fixtures.aws",
    "tests.fixtures.moto_server",
    "tests.fixtures.paging",
    "tests.redis_topologies",
    "tests.redis_cluster",
]

POLICY = Path(__file__).resolve().parent.parent / "deploy" / "iam-policy.json"
REMEDIATION_POLICY = POLICY.with_name("iam-remediation.json")


def policy_actions() -> set[str]:
    return {action for actions in policy_statements(POLICY).values() for action in actions}


def policy_statements(path: Path) -> dict[str, set[str]]:
    """{Sid: actions} of an IAM policy document."""
    statements: dict[str, set[str]] = {}
    for statement in json.loads(path.read_text())["Statement"]:
        listed = statement["Action"]
        statements[statement.get("Sid", "")] = {listed} if isinstance(listed, str) else set(listed)
    return statements


def remediation_sid(fix: str) -> str:
    """The statement of iam-remediation.json that allows fix action `fix`: "lambda.rollback_alias" →
    "LambdaRollbackAlias"."""
    return "".join(part.capitalize() for part in fix.replace(".", "_").split("_"))


def unallowed_fix_calls(used: dict[str, set[str]]) -> dict[str, set[str]]:
    """{fix: IAM actions it used that neither its own remediation statement nor the read-only policy allows}."""
    statements, read_only = policy_statements(REMEDIATION_POLICY), policy_actions()
    missing = {fix: actions - statements.get(remediation_sid(fix), set()) - read_only
               for fix, actions in used.items()}
    return {fix: actions for fix, actions in missing.items() if actions}


def pytest_sessionfinish(session, exitstatus) -> None:  # type: ignore[no-untyped-def]
    """Fail the run when a check made an AWS call that deploy/iam-policy.json does not allow, or a fix one that
    its statement in deploy/iam-remediation.json (plus the read-only policy) does not: in production that check or
    fix would only ever say AccessDenied."""
    from tests.fixtures.aws import AWS_OPERATIONS, FIX_OPERATIONS

    missing = {action: checks for action, checks in AWS_OPERATIONS.items() if action not in policy_actions()}
    lines = [f"  {action} (used by {', '.join(sorted(checks))})" for action, checks in sorted(missing.items())]
    messages = ["deploy/iam-policy.json lacks AWS actions the checks use:\n" + "\n".join(lines)] if lines else []
    fixes = unallowed_fix_calls(FIX_OPERATIONS)
    if fixes:
        lines = [f"  {remediation_sid(fix)} ({fix}): {', '.join(sorted(actions))}"
                 for fix, actions in sorted(fixes.items())]
        messages.append("deploy/iam-remediation.json lacks AWS actions the fixes use:\n" + "\n".join(lines))
    if messages:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter:
            reporter.write_line("\n".join(messages), red=True)
        session.exitstatus = 1
