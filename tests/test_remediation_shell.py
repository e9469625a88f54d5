"""`chatops fix` from a shell, against moto served over HTTP (the CLI is a process of its own): the same preview
as Slack's, `--yes` only where the policy allows self-approval, and the feature switch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.aws_lambda_scenarios import REGION, create_function

ROOT = Path(__file__).resolve().parent.parent
LIFT = ["lambda.lift_zero_concurrency", f"region={REGION}", "function=api-handler"]


def chatops_fix(*args: str, tmp_path: Path, policy: dict | None = None,
                enabled: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "REDIS_URL", "PAGING_POLICY_FILE"))}
    env["REMEDIATION_ENABLED"] = "true" if enabled else "false"
    if policy is not None:
        path = tmp_path / "policy.yml"
        path.write_text(yaml.safe_dump(policy))
        env["PAGING_POLICY_FILE"] = str(path)
    return subprocess.run([sys.executable, "-m", "bot", "fix", *args], capture_output=True, text=True, timeout=60,
                          env=env, cwd=ROOT)


def throttled(aws) -> None:
    create_function(aws, "api-handler")
    aws.client("lambda", REGION).put_function_concurrency(FunctionName="api-handler", ReservedConcurrentExecutions=0)


def reserved(aws) -> int | None:
    return aws.client("lambda", REGION).get_function_concurrency(FunctionName="api-handler").get(
        "ReservedConcurrentExecutions")


def test_dry_run_prints_the_calls_before_after_and_untouched_and_changes_nothing(served_aws, tmp_path):
    throttled(served_aws)
    result = chatops_fix(*LIFT, "value=7", "--dry-run", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:4] == [
        "Calls:", "  lambda:PutFunctionConcurrency(FunctionName=api-handler, ReservedConcurrentExecutions=7)",
        "Before → after:", "  reserved_concurrency: 0 → 7"]
    assert "Will not touch:\n  • the function's code, configuration, aliases and versions" in result.stdout
    assert reserved(served_aws) == 0


def test_yes_runs_a_self_approvable_fix_once_and_prints_its_undo(served_aws, tmp_path):
    throttled(served_aws)
    policy = {"remediation": {"self_approve": ["lambda.lift_zero_concurrency"]}}
    result = chatops_fix(*LIFT, "--yes", tmp_path=tmp_path, policy=policy)
    assert result.returncode == 0, result.stderr
    assert reserved(served_aws) is None
    assert "Fixed: api-handler: reserved concurrency 0 → unreserved." in result.stdout
    undo = next(line for line in result.stdout.splitlines() if line.startswith("Undo: "))
    assert undo == (f"Undo: chatops fix lambda.restore_zero_concurrency region={REGION} function=api-handler "
                    "expect=unreserved --yes")
    again = chatops_fix(*LIFT, "--yes", tmp_path=tmp_path, policy=policy)  # nothing left to lift
    assert again.returncode == 1 and "not 0: nothing to lift" in again.stdout


def test_yes_refuses_where_a_second_person_must_approve_and_says_who(served_aws, tmp_path):
    throttled(served_aws)
    result = chatops_fix(*LIFT, "--yes", tmp_path=tmp_path, policy={"remediation": {"approvers": ["S0APPROVE"]}})
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (
        "chatops: lambda.lift_zero_concurrency needs a second person's approval: request it from the finding's "
        "button in Slack, where one of S0APPROVE must approve it. Nothing was changed (the policy's "
        "remediation.self_approve lists the fixes `--yes` may run).")
    default = chatops_fix(*LIFT, "--yes", tmp_path=tmp_path)
    assert default.returncode == 2 and "a second person the `remediate` permission allows" in default.stderr
    assert reserved(served_aws) == 0


def test_turned_off_or_mistyped_it_exits_2_with_one_sentence(served_aws, tmp_path):
    throttled(served_aws)
    off = chatops_fix(*LIFT, "--yes", tmp_path=tmp_path, enabled=False)
    assert off.returncode == 2 and "REMEDIATION_ENABLED=false" in off.stderr and "Traceback" not in off.stderr
    unknown = chatops_fix("lambda.lift", "--dry-run", tmp_path=tmp_path)
    assert unknown.returncode == 2 and "There is no fix called 'lambda.lift'. Fixes: " in unknown.stderr
    bad = chatops_fix(*LIFT, "api-handler", "--dry-run", tmp_path=tmp_path)
    assert bad.returncode == 2 and "Parameters are key=value (e.g. region=eu-west-1), not 'api-handler'." in bad.stderr
    assert chatops_fix(*LIFT, tmp_path=tmp_path).returncode == 2  # neither --dry-run nor --yes
    assert reserved(served_aws) == 0
