"""moto builders for Lambda scenarios: a role, functions, deploys, log lines and AWS/Lambda metrics.

Each builder is one plain API call sequence, usable from any test that has the `aws` fixture (an `AwsClients`
inside moto). moto stamps Lambda versions, API deployments and stack events with the wall clock, so scenarios that
correlate with them place log events relative to the time moto returned, never to a made-up date; log event
timestamps are accepted from 14 days back to 2 hours ahead of the wall clock.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from checks.aws.clients import AwsClients

REGION = "us-east-1"
ROLE_NAME = "lambda-basic-execution"
_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def code_zip(source: str = "def handler(event, context):\n    return {}\n") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", source)
    return buffer.getvalue()


def lambda_role(aws: AwsClients, region: str = REGION) -> str:
    """The execution role moto insists on before create_function; created once per moto session."""
    iam = aws.client("iam", region)
    try:
        return iam.get_role(RoleName=ROLE_NAME)["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        return iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(_TRUST))["Role"]["Arn"]


def create_function(
    aws: AwsClients,
    name: str,
    *,
    runtime: str = "python3.12",
    timeout: int = 3,
    memory: int = 128,
    env: dict[str, str] | None = None,
    region: str = REGION,
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "FunctionName": name,
        "Runtime": runtime,
        "Role": lambda_role(aws, region),
        "Handler": "app.handler",
        "Code": {"ZipFile": code_zip()},
        "Timeout": timeout,
        "MemorySize": memory,
    }
    if env:
        params["Environment"] = {"Variables": env}
    return aws.client("lambda", region).create_function(**params)


def deploy_version(aws: AwsClients, name: str, description: str, *, region: str = REGION) -> dict[str, Any]:
    """New code for `name`, published as the next version (what a CI deploy does)."""
    client = aws.client("lambda", region)
    source = f"# {description}\ndef handler(event, context):\n    return 1\n"
    client.update_function_code(FunctionName=name, ZipFile=code_zip(source))
    return client.publish_version(FunctionName=name, Description=description)


def point_alias(aws: AwsClients, name: str, alias: str, version: str, *, region: str = REGION) -> None:
    client = aws.client("lambda", region)
    try:
        client.update_alias(FunctionName=name, Name=alias, FunctionVersion=version)
    except client.exceptions.ResourceNotFoundException:
        client.create_alias(FunctionName=name, Name=alias, FunctionVersion=version)


def sqs_queue(aws: AwsClients, name: str, *, region: str = REGION) -> tuple[str, str]:
    """(url, arn) of a new queue."""
    sqs = aws.client("sqs", region)
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def latest_update_behind_queue(aws: AwsClients, name: str, queue_name: str) -> tuple[str, str]:
    """`name` v1 (build 41) published, then new, failing code on $LATEST only, with `queue_name`'s event source
    mapping invoking the unqualified function: the `$LATEST`-only rollback case. Returns (mapping UUID, queue ARN)."""
    create_function(aws, name)
    deploy_version(aws, name, "build 41")
    client = aws.client("lambda", REGION)
    _, queue = sqs_queue(aws, queue_name)
    uuid = client.create_event_source_mapping(EventSourceArn=queue, FunctionName=name)["UUID"]
    client.update_function_code(FunctionName=name, ZipFile=code_zip("# build 42\ndef handler(e, c):\n    1/0\n"))
    return uuid, queue


def put_log_lines(
    aws: AwsClients,
    group: str,
    lines: Iterable[tuple[datetime, str]],
    *,
    stream: str = "2026/01/01/[$LATEST]0123456789abcdef",
    region: str = REGION,
) -> None:
    """Write (time, message) events to `group`/`stream`, creating both if needed. A message may span lines."""
    logs = aws.client("logs", region)
    try:
        logs.create_log_group(logGroupName=group)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    try:
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    events = sorted(({"timestamp": int(at.timestamp() * 1000), "message": text} for at, text in lines),
                    key=lambda e: e["timestamp"])
    for start in range(0, len(events), 1000):
        logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events[start : start + 1000])


def report_line(
    request_id: str,
    *,
    duration_ms: float,
    memory_size: int = 128,
    max_memory: int = 60,
    init_ms: float | None = None,
) -> str:
    """Lambda's REPORT line, tab-separated as the runtime writes it; `init_ms` makes it a cold start."""
    fields = [
        f"REPORT RequestId: {request_id}",
        f"Duration: {duration_ms:.2f} ms",
        f"Billed Duration: {int(duration_ms) + 1} ms",
        f"Memory Size: {memory_size} MB",
        f"Max Memory Used: {max_memory} MB",
    ]
    if init_ms is not None:
        fields.append(f"Init Duration: {init_ms:.2f} ms")
    return "\t".join(fields) + "\t\n"


def python_traceback(exception_line: str, *, function: str = "handler", line: int = 12) -> list[str]:
    """A Python traceback as separate lines (what a container's stdout logger ships, one event per line)."""
    return [
        "Traceback (most recent call last):",
        f'  File "/var/task/app.py", line {line}, in {function}',
        "    return process(event)",
        exception_line,
    ]


def put_lambda_metrics(
    aws: AwsClients,
    function: str,
    at: datetime,
    *,
    invocations: float = 0,
    errors: float = 0,
    throttles: float = 0,
    durations_ms: Iterable[float] = (),
    region: str = REGION,
) -> None:
    """Seed AWS/Lambda datapoints for `function` at `at` (moto never emits Lambda metrics by itself)."""
    dimensions = [{"Name": "FunctionName", "Value": function}]
    data = [
        {"MetricName": name, "Dimensions": dimensions, "Timestamp": at, "Value": value, "Unit": "Count"}
        for name, value in (("Invocations", invocations), ("Errors", errors), ("Throttles", throttles))
    ]
    data += [
        {"MetricName": "Duration", "Dimensions": dimensions, "Timestamp": at, "Value": d, "Unit": "Milliseconds"}
        for d in durations_ms
    ]
    aws.client("cloudwatch", region).put_metric_data(Namespace="AWS/Lambda", MetricData=data)


def wall_clock() -> datetime:
    """Now, to the millisecond (log timestamps are milliseconds)."""
    now = datetime.now(UTC)
    return now - timedelta(microseconds=now.microsecond % 1000)
