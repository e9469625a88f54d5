"""SQS: dead letters piling up, queues without a dead-letter queue, and SQS→Lambda→SQS loops.

Peeking at dead letters is off unless the service opts in (`aws.peek_dead_letters: true`). A peek is a
`ReceiveMessage` with `VisibilityTimeout=0`: the messages stay on the queue, but each peek raises their
`ApproximateReceiveCount` (a DLQ with its own redrive policy can then move them on), it needs
`sqs:ReceiveMessage`, and message bodies often hold personal data that would be posted into a channel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from checks.aws.clients import AwsCheckError
from checks.aws.common import aws_check, region
from checks.model import CheckResult, Status
from checks.registry import CheckContext, check

PEEK_MESSAGES = 3
PEEK_BODY_CHARS = 200


@dataclass(frozen=True)
class Queue:
    url: str
    arn: str
    attributes: dict[str, str]

    @property
    def name(self) -> str:
        return self.arn.rsplit(":", 1)[-1]

    @property
    def account(self) -> str:
        return self.arn.split(":")[4]

    def depth(self) -> int:
        return int(self.attributes.get("ApproximateNumberOfMessages", 0))

    def in_flight(self) -> int:
        return int(self.attributes.get("ApproximateNumberOfMessagesNotVisible", 0))


async def describe_queue(ctx: CheckContext, name_or_url: str) -> Queue:
    """A queue by name or URL with all its attributes (`sqs:GetQueueUrl`, `sqs:GetQueueAttributes`)."""
    url = name_or_url
    if "://" not in name_or_url:
        found = await ctx.aws.call("sqs", region(ctx), "get_queue_url", QueueName=name_or_url)
        url = found["QueueUrl"]
    attributes = await ctx.aws.call("sqs", region(ctx), "get_queue_attributes", QueueUrl=url, AttributeNames=["All"])
    return Queue(url, attributes["Attributes"]["QueueArn"], attributes["Attributes"])


# --- Dead-letter queues --------------------------------------------------------------------------------------


@check("aws.sqs_dlq", timeout_s=20)
@aws_check
async def sqs_dlq(queue_ref: str, ctx: CheckContext) -> CheckResult:
    """SQS dead letters: messages that failed processing, or a queue with no dead-letter queue at all"""
    queue = await describe_queue(ctx, queue_ref)
    if queue.attributes.get("RedrivePolicy"):
        redrive = json.loads(queue.attributes["RedrivePolicy"])
        dlq = await describe_queue(ctx, redrive["deadLetterTargetArn"].rsplit(":", 1)[-1])
        return await _dead_letters(ctx, dlq, [queue.name], redrive.get("maxReceiveCount"))
    sources = await ctx.aws.call("sqs", region(ctx), "list_dead_letter_source_queues", QueueUrl=queue.url)
    if sources.get("queueUrls"):  # the listed queue is itself somebody's dead-letter queue
        return await _dead_letters(ctx, queue, [url.rsplit("/", 1)[-1] for url in sources["queueUrls"]], None)
    return CheckResult(
        status=Status.warn,
        severity="P3",
        summary=f"{queue.name} has no dead-letter queue: messages that keep failing are retried forever "
        "(until retention drops them), blocking and costing invocations.",
        resource=queue.arn,
        evidence={"queue": queue.arn, "depth": queue.depth(), "in_flight": queue.in_flight()},
        hint="Add a RedrivePolicy with a dead-letter queue and a maxReceiveCount (3–5 is usual).",
    )


async def _dead_letters(ctx: CheckContext, dlq: Queue, sources: list[str], max_receives: Any) -> CheckResult:
    evidence: dict[str, Any] = {
        "dead_letter_queue": dlq.arn,
        "source_queues": sources,
        "max_receive_count": max_receives,
        "depth": dlq.depth(),
        "in_flight": dlq.in_flight(),
    }
    after = f" after {max_receives} receives" if max_receives else ""
    held = dlq.depth() + dlq.in_flight()
    if not held:
        return CheckResult(
            status=Status.ok,
            summary=f"Dead-letter queue {dlq.name} of {', '.join(sources)} is empty.",
            resource=dlq.arn,
            evidence=evidence,
        )
    if ctx.service.aws.peek_dead_letters:
        evidence["peek"] = await _peek(ctx, dlq)
    return CheckResult(
        status=Status.fail,
        severity="P1",
        summary=f"Dead-letter queue {dlq.name} holds {held} message{'s' * (held != 1)} that "
        f"{', '.join(sources)} could not process{after}.",
        resource=dlq.arn,
        evidence=evidence,
        hint="Find why the consumer fails (its error logs around the first dead letter), fix it, then redrive "
        "(SQS console \"Start DLQ redrive\" or `aws sqs start-message-move-task`). Message bodies are shown "
        "only when the service sets aws.peek_dead_letters.",
    )


async def _peek(ctx: CheckContext, dlq: Queue) -> list[dict[str, Any]] | str:
    """Up to 3 bodies, left visible (VisibilityTimeout=0); a denied peek is noted, not fatal."""
    try:
        received = await ctx.aws.call(
            "sqs", region(ctx), "receive_message", QueueUrl=dlq.url, MaxNumberOfMessages=PEEK_MESSAGES,
            VisibilityTimeout=0, WaitTimeSeconds=0, AttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
        )
    except AwsCheckError as exc:
        return str(exc)
    return [_peeked(message) for message in received.get("Messages", [])]


def _peeked(message: dict[str, Any]) -> dict[str, Any]:
    body = " ".join(message.get("Body", "").split())
    attributes = message.get("Attributes", {})
    sent = datetime.fromtimestamp(int(attributes.get("SentTimestamp", 0)) / 1000, UTC)
    return {
        "sent": sent.isoformat(timespec="seconds"),
        "receives": int(attributes.get("ApproximateReceiveCount", 0)),
        "body": body if len(body) <= PEEK_BODY_CHARS else body[: PEEK_BODY_CHARS - 1] + "…",
    }
