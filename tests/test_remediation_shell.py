"""`chatops fix` from a shell, against moto served over HTTP (the CLI is a process of its own): the same preview
as Slack's, `--yes` only where the policy allows self-approval and through the request path (its record, audit
line, and the incident's timeline when one is named), and the feature switch."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import redis
import yaml

from tests.aws_lambda_scenarios import REGION, create_function
from tests.incident_harness import declare_incident, incident_bot

ROOT = Path(__file__).resolve().parent.parent
LIFT = ["lambda.lift_zero_concurrency", f"region={REGION}", "function=api-handler"]
SELF_APPROVE = {"remediation": {"self_approve": ["lambda.lift_zero_concurrency"]}}
SERVICES = {"api": {"aws": {"region": REGION, "lambda_functions": ["api-handler"]}}}


def chatops_fix(*args: str, tmp_path: Path, policy: dict | None = None, enabled: bool = True,
                redis: tuple[str, str] | None = None) -> subprocess.CompletedProcess:
    """`redis`: (url, namespace) of the bot whose records `--yes` writes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "REDIS_", "PAGING_POLICY_FILE"))}
    env["REMEDIATION_ENABLED"] = "true" if enabled else "false"
    if redis is not None:
        env["REDIS_URL"], env["REDIS_NAMESPACE"] = redis
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


def test_yes_runs_a_self_approvable_fix_once_records_it_and_prints_its_undo(served_aws, redis_url, tmp_path):
    throttled(served_aws)
    namespace = f"tfix{uuid.uuid4().hex[:6]}"
    result = chatops_fix(*LIFT, "--yes", tmp_path=tmp_path, policy=SELF_APPROVE, redis=(redis_url, namespace))
    assert result.returncode == 0, result.stderr
    assert reserved(served_aws) is None
    assert "Fixed: api-handler: reserved concurrency 0 → unreserved." in result.stdout
    undo = next(line for line in result.stdout.splitlines() if line.startswith("Undo: "))
    assert undo == (f"Undo: chatops fix lambda.restore_zero_concurrency region={REGION} function=api-handler "
                    "expect=unreserved --yes")
    request_id = re.search(r"Recorded as fix request (\w+) \(the log\)", result.stdout).group(1)
    assert "run `chatops diagnose SERVICE`" in result.stdout
    kept = json.loads(redis.Redis.from_url(redis_url).get(f"{namespace}:fix:req:{request_id}"))
    assert (kept["status"], kept["result"]["ok"], kept["plan"]["action"]) == ("done", True, LIFT[0])
    assert kept["requester"].endswith("(chatops fix)") and kept["decided_by"] == kept["requester"]
    assert f"fix {request_id} applied by " in result.stderr  # the audit line
    again = chatops_fix(*LIFT, "--yes", tmp_path=tmp_path, policy=SELF_APPROVE, redis=(redis_url, namespace))
    assert again.returncode == 1 and "not 0: nothing to lift" in again.stdout


async def test_yes_naming_an_incident_writes_its_timeline(served_aws, local_slack, redis_url, tmp_path):
    throttled(served_aws)
    async with incident_bot(local_slack, redis_url, tmp_path, services=SERVICES) as bot:
        inc = await declare_incident(bot, "api-handler throttled P1 api")
        result = await asyncio.to_thread(chatops_fix, *LIFT, f"incident={inc.lower()}", "--yes", tmp_path=tmp_path,
                                         policy=SELF_APPROVE, redis=(redis_url, bot.config.namespace))
        assert result.returncode == 0, result.stderr
        assert f"({inc}'s timeline and the log)" in result.stdout and "`chatops diagnose api`" in result.stdout
        entries = await bot.timeline(inc, "remediation")
        assert [e.data["stage"] for e in entries] == ["requested", "approved", "applied"]
        assert entries[-1].actor.endswith("(chatops fix)") and entries[-1].data["fix"] == LIFT[0]
        missing = await asyncio.to_thread(chatops_fix, *LIFT, "incident=INC-999", "--yes", tmp_path=tmp_path,
                                          policy=SELF_APPROVE, redis=(redis_url, bot.config.namespace))
        assert missing.returncode == 2 and "There is no incident INC-999" in missing.stderr


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
