"""deploy/iam-policy.json allows what the checks call, deploy/iam-remediation.json what the fixes call, and the
recorder that proves it really records."""

from __future__ import annotations

import json
import re

from checks.aws.clients import AwsClients
from checks.aws.fixes import fix_actions
from checks.aws.sqs import sqs_dlq
from checks.registry import CheckContext
from checks.services import AwsSpec, ServiceSpec
from tests.aws_lambda_scenarios import create_function
from tests.conftest import (
    REMEDIATION_POLICY,
    policy_actions,
    policy_statements,
    remediation_sid,
    unallowed_fix_calls,
)
from tests.fixtures.aws import AWS_OPERATIONS, FIX_OPERATIONS


async def test_an_aws_call_made_by_a_check_is_recorded_with_its_iam_action(aws: AwsClients) -> None:
    aws.client("sqs", "us-east-1").create_queue(QueueName="recorded")  # set-up: outside any check, not recorded
    ctx = CheckContext(service_name="s", service=ServiceSpec(aws=AwsSpec(queues=["recorded"])), now=None,  # type: ignore[arg-type]
                       http=None, aws=aws)  # type: ignore[arg-type]
    await sqs_dlq("recorded", ctx)
    assert "aws.sqs_dlq" in AWS_OPERATIONS["sqs:GetQueueAttributes"]
    assert "sqs:CreateQueue" not in AWS_OPERATIONS


def test_policy_is_read_only_except_the_opt_in_statements() -> None:
    actions = policy_actions()
    assert all(re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9*]+", a) for a in actions)
    writes = {a for a in actions if re.match(r"[a-z0-9-]+:(Put|Delete|Create|Update|Modify|Receive)", a)}
    assert writes == {"s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "sqs:ReceiveMessage"}


async def test_an_aws_call_made_by_a_fix_is_recorded_under_the_fix_not_as_a_check(aws: AwsClients) -> None:
    create_function(aws, "recorded-fn")  # set-up: not recorded
    aws.client("lambda", "us-east-1").put_function_concurrency(FunctionName="recorded-fn",
                                                               ReservedConcurrentExecutions=0)
    await fix_actions()["lambda.lift_zero_concurrency"].plan(aws, {"region": "us-east-1", "function": "recorded-fn"})
    assert "lambda:GetFunctionConcurrency" in FIX_OPERATIONS["lambda.lift_zero_concurrency"]
    assert "lambda:PutFunctionConcurrency" not in AWS_OPERATIONS


def test_every_fix_action_has_exactly_one_remediation_statement() -> None:
    statements = policy_statements(REMEDIATION_POLICY)
    assert sorted(statements) == sorted(remediation_sid(name) for name in fix_actions())


def test_remediation_statements_are_resource_scoped_writes() -> None:
    for statement in json.loads(REMEDIATION_POLICY.read_text())["Statement"]:
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert statement["Effect"] == "Allow" and "Condition" not in statement
        assert all(r.startswith("arn:aws:") and r != "*" for r in resources), statement["Sid"]


def test_a_fix_call_outside_its_own_statement_is_caught() -> None:
    # ModifyVpcEndpoint is allowed to the endpoint actions, not to the matcher's: another fix's grant does not count.
    used = {"elb.add_matcher_code": {"elasticloadbalancing:ModifyTargetGroup", "ec2:ModifyVpcEndpoint",
                                     "elasticloadbalancing:DescribeTargetGroups"}}
    assert unallowed_fix_calls(used) == {"elb.add_matcher_code": {"ec2:ModifyVpcEndpoint"}}
    assert unallowed_fix_calls({"vpc.associate_gateway_endpoint": {"ec2:ModifyVpcEndpoint"}}) == {}
