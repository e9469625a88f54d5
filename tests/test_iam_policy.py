"""deploy/iam-policy.json allows what the checks call, and the recorder that proves it really records."""

from __future__ import annotations

import re

from checks.aws.clients import AwsClients
from checks.aws.sqs import sqs_dlq
from checks.registry import CheckContext
from checks.services import AwsSpec, ServiceSpec
from tests.conftest import policy_actions
from tests.fixtures.aws import AWS_OPERATIONS


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
