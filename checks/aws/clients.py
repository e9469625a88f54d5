"""boto3 clients, created once per (service, region) and reused, called off the event loop.

AWS errors are mapped to sentences a responder can act on: AccessDenied names the missing IAM action, throttling
is retried a bounded number of times by botocore's adaptive mode, an unreachable endpoint becomes an `error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

# botocore's service names differ from IAM's action prefixes in a few places.
IAM_PREFIX = {"elbv2": "elasticloadbalancing", "lambda": "lambda", "logs": "logs", "events": "events"}
# Operations whose IAM action is not simply the CamelCase of their name (AccessDenied must name the real one).
IAM_ACTION_EXCEPTIONS = {
    ("s3", "head_object"): "s3:GetObject",
    ("s3", "get_public_access_block"): "s3:GetBucketPublicAccessBlock",
    ("s3", "list_objects_v2"): "s3:ListBucket",
    ("rds", "describe_db_instances"): "rds:DescribeDBInstances",
    ("rds", "describe_db_parameters"): "rds:DescribeDBParameters",
}

_ACCESS_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError", "403"}


class AwsCheckError(Exception):
    """An AWS call failed in a way the check reports as `error`, with a sentence that says what to do."""


def iam_action(service: str, operation: str) -> str:
    """`("elbv2", "describe_target_health")` → `elasticloadbalancing:DescribeTargetHealth`."""
    if (service, operation) in IAM_ACTION_EXCEPTIONS:
        return IAM_ACTION_EXCEPTIONS[(service, operation)]
    if service == "apigateway":  # API Gateway's IAM actions are HTTP verbs on resource paths
        return "apigateway:GET"
    prefix = IAM_PREFIX.get(service, service)
    return f"{prefix}:{''.join(part.capitalize() for part in operation.split('_'))}"


class AwsClients:
    """Per-region client cache. Thread-safe: clients are made under a lock and botocore clients are thread-safe."""

    def __init__(self, *, connect_timeout: float = 3.0, read_timeout: float = 10.0, max_attempts: int = 4) -> None:
        self._config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "adaptive", "max_attempts": max_attempts},
        )
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._session = boto3.session.Session()

    def client(self, service: str, region: str) -> Any:
        key = (service, region)
        with self._lock:
            if key not in self._clients:
                self._clients[key] = self._session.client(service, region_name=region, config=self._config)
            return self._clients[key]

    async def call(self, service: str, region: str, operation: str, **params: Any) -> dict[str, Any]:
        """Call `operation` in a worker thread; raise AwsCheckError with a plain sentence on failure."""
        client = self.client(service, region)
        with _aws_errors(service, region, operation):
            return await asyncio.to_thread(getattr(client, operation), **params)

    async def paginate(self, service: str, region: str, operation: str, key: str, **params: Any) -> list[Any]:
        """All items under `key` across pages, collected in a worker thread."""
        client = self.client(service, region)

        def collect() -> list[Any]:
            items: list[Any] = []
            for page in client.get_paginator(operation).paginate(**params):
                items.extend(page.get(key, []))
            return items

        with _aws_errors(service, region, operation):
            return await asyncio.to_thread(collect)


@contextlib.contextmanager
def _aws_errors(service: str, region: str, operation: str) -> Iterator[None]:
    """Every way an AWS call fails, as one AwsCheckError sentence (for `call` and `paginate` alike)."""
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        raise AwsCheckError(describe_client_error(exc, service, operation)) from exc
    except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError,
            botocore.exceptions.ReadTimeoutError) as exc:
        raise AwsCheckError(f"AWS {service} endpoint unreachable in {region}: {type(exc).__name__}") from exc
    except botocore.exceptions.NoCredentialsError as exc:
        raise AwsCheckError("No AWS credentials found for the bot (set a role or AWS_PROFILE)") from exc


def error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def describe_client_error(exc: botocore.exceptions.ClientError, service: str, operation: str) -> str:
    code = error_code(exc)
    if code in _ACCESS_DENIED:
        return f"Access denied: the bot's role needs {iam_action(service, operation)}"
    if code in {"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException"}:
        return f"AWS kept throttling {iam_action(service, operation)} after bounded retries"
    message = exc.response.get("Error", {}).get("Message", "")
    return f"{iam_action(service, operation)} failed: {code} {message}".strip()[:300]
