"""boto3 clients, created once per (service, region) and reused, called off the event loop.

AWS errors are mapped to sentences a responder can act on: AccessDenied names the missing IAM action, throttling
is retried a bounded number of times by botocore's adaptive mode, an unreachable endpoint becomes an `error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import functools
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import botocore.exceptions

# botocore's service names differ from IAM's action prefixes in a few places.
IAM_PREFIX = {"elbv2": "elasticloadbalancing", "lambda": "lambda", "logs": "logs", "events": "events"}
# Operations whose IAM action is not simply the CamelCase of their name (AccessDenied must name the real one).
IAM_ACTION_EXCEPTIONS = {
    ("s3", "head_object"): "s3:GetObject",
    ("s3", "head_bucket"): "s3:ListBucket",
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
    if service in ("apigateway", "apigatewayv2"):  # API Gateway's IAM actions (REST and HTTP APIs) are HTTP verbs
        return "apigateway:GET"
    prefix = IAM_PREFIX.get(service, service)
    return f"{prefix}:{''.join(part.capitalize() for part in operation.split('_'))}"


class AwsClients:
    """Per-region client cache, plus a per-run memo of read-only calls.

    Thread-safe: clients are made under a lock and botocore clients are thread-safe. `scoped()` gives a view for
    one diagnosis run that shares the clients but has its own memo, so the checks of a run ask AWS each question
    once (three checks that describe the same load balancer make one request, and concurrent identical calls share
    it), while the next run — maybe right after someone fixed the route table — asks afresh.
    """

    READ_ONLY_PREFIXES = ("describe_", "get_", "list_", "filter_")

    def __init__(self, *, connect_timeout: float = 3.0, read_timeout: float = 10.0, max_attempts: int = 4) -> None:
        # Imported here, not with the module: registering the checks (which a process answering Slack does to
        # count a /diagnose plan) must not cost boto3's import; the first client cache pays it.
        import boto3
        from botocore.config import Config

        # botocore's `total_max_attempts` counts the first try too, which is what "attempts" means here.
        self._config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "adaptive", "total_max_attempts": max_attempts},
        )
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._session = boto3.session.Session()
        # AWS calls block a thread each; their own pool keeps 25 concurrent checks from queueing behind the
        # event loop's small default executor (min(32, cores + 4) threads: 6 on this machine).
        self._executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="aws")
        self._memo: dict[tuple[str, ...], asyncio.Future[Any]] | None = None  # only a run's view remembers

    def scoped(self) -> AwsClients:
        """A view for one run: same clients, fresh memo."""
        view = copy.copy(self)
        view._memo = {}
        return view

    async def _in_thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Like asyncio.to_thread (context variables included, so logs and the IAM recorder see the check), on
        the AWS pool."""
        context = contextvars.copy_context()
        call = functools.partial(context.run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def _memoized(self, key: tuple[str, ...], fetch: Callable[[], Awaitable[Any]]) -> Any:
        if self._memo is None or not key[2].startswith(self.READ_ONLY_PREFIXES):
            return await fetch()
        future = self._memo.get(key)
        if future is None:
            future = asyncio.ensure_future(fetch())
            self._memo[key] = future
        try:
            return copy.deepcopy(await asyncio.shield(future))  # callers may mutate what they get
        except BaseException:
            if future.done() and self._memo.get(key) is future:
                del self._memo[key]  # a failure is not remembered: a later check may try again
            raise

    def client(self, service: str, region: str) -> Any:
        key = (service, region)
        with self._lock:
            if key not in self._clients:
                self._clients[key] = self._session.client(service, region_name=region, config=self._config)
            return self._clients[key]

    async def call(self, service: str, region: str, operation: str, **params: Any) -> dict[str, Any]:
        """Call `operation` in a worker thread; raise AwsCheckError with a plain sentence on failure."""
        client = self.client(service, region)

        async def fetch() -> dict[str, Any]:
            with _aws_errors(service, region, operation):
                return await self._in_thread(getattr(client, operation), **params)

        return await self._memoized(("call", service, operation, region, _params_key(params)), fetch)

    async def poll(self, service: str, region: str, operation: str, **params: Any) -> dict[str, Any]:
        """Like `call`, but never memoized: for answers that change between two identical calls (query status)."""
        client = self.client(service, region)
        with _aws_errors(service, region, operation):
            return await self._in_thread(getattr(client, operation), **params)

    async def paginate(self, service: str, region: str, operation: str, key: str, **params: Any) -> list[Any]:
        """All items under `key` across pages, collected in a worker thread."""
        client = self.client(service, region)

        def collect() -> list[Any]:
            items: list[Any] = []
            for page in client.get_paginator(operation).paginate(**params):
                items.extend(page.get(key, []))
            return items

        async def fetch() -> list[Any]:
            with _aws_errors(service, region, operation):
                return await self._in_thread(collect)

        return await self._memoized(("paginate", service, operation, region, key, _params_key(params)), fetch)


    async def read_object(self, region: str, bucket: str, key: str) -> bytes | None:
        """An S3 object's bytes, read in a worker thread (the body is a stream `call` cannot hand over), or None
        when there is no such key."""
        client = self.client("s3", region)

        def read() -> bytes | None:
            try:
                return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())
            except client.exceptions.NoSuchKey:
                return None

        async def fetch() -> bytes | None:
            with _aws_errors("s3", region, "get_object"):
                return await self._in_thread(read)

        return await self._memoized(("object", "s3", "get_object", region, bucket, key), fetch)


def _params_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


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
