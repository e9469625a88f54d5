"""Local servers that speak an AWS API where moto does not: the checks' real boto3 clients reach them through
botocore's per-service endpoint override (`AWS_ENDPOINT_URL_<SERVICE>`), inside `mock_aws` (moto lets requests
to other hosts through), so everything else a test does still goes to moto.

- `json_api(monkeypatch, "XRAY", {"TraceSummaries": fn})`: X-Ray (REST-JSON: the operation is the path) and
  CloudWatch Logs (JSON 1.1: the operation is the `X-Amz-Target` suffix). `fn(body) -> dict` answers one call.
- `query_api(monkeypatch, "ELASTIC_BEANSTALK", {"DescribeEvents": fn}, files={"/tail/i-1": b"..."})`: the
  query protocol (form-encoded `Action=…`, XML answers), plus plain GET files for pre-signed download URLs.

`beanstalk_api(now, tail_url, health=…)` and `beanstalk_tail(now, errors=…)` script one Elastic Beanstalk
environment, healthy or broken after its latest deploy; `BeanstalkEnvironment` is that environment as state, for
tests that change it (`UpdateEnvironment` deploys a version; `DescribeApplicationVersions` honours VersionLabels).
A handler raises `FakeAwsError(code, message)` to answer with an AWS error.

`server.calls` lists the operations in the order they were asked, for assertions on polling and cancelling.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import pytest

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class FakeAwsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handlers: Mapping[str, Handler], protocol: str, files: Mapping[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.handlers, self.protocol, self.files = dict(handlers), protocol, dict(files)
        self.calls: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, operation: str, body: dict[str, Any]) -> tuple[int, bytes, str]:
        self.calls.append(operation)
        handler = self.handlers.get(operation)
        if handler is None:
            return self._error("InvalidRequestException", f"{operation} is not scripted")
        try:
            result = handler(body)
        except FakeAwsError as exc:
            return self._error(exc.code, exc.message)
        if self.protocol == "json":
            return 200, json.dumps(result, default=_json_default).encode(), "application/x-amz-json-1.1"
        return 200, query_xml(operation, result).encode(), "text/xml"

    def _error(self, code: str, message: str) -> tuple[int, bytes, str]:
        if self.protocol == "json":
            return 400, json.dumps({"__type": code, "message": message}).encode(), "application/x-amz-json-1.1"
        xml = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{escape(code)}</Code><Message>{escape(message)}"
               "</Message></Error></ErrorResponse>")
        return 400, xml.encode(), "text/xml"


class FakeAwsError(Exception):
    """Raised by a handler: the server answers with this AWS error code and message (HTTP 400)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class _Handler(BaseHTTPRequestHandler):
    server: FakeAwsServer

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        if self.server.protocol == "json":
            target = self.headers.get("X-Amz-Target") or self.path.strip("/")
            operation, body = target.rsplit(".", 1)[-1], json.loads(raw or "{}")
        else:
            form = {k: v[0] for k, v in parse_qs(raw).items()}
            operation, body = form.pop("Action", ""), form
        self._send(*self.server.answer(operation, body))

    def do_GET(self) -> None:  # noqa: N802
        content = self.server.files.get(self.path.split("?", 1)[0])
        self._send(200 if content is not None else 404, content or b"", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def query_xml(action: str, result: dict[str, Any]) -> str:
    """An AWS query-protocol answer: lists as `<member>`s, datetimes in ISO 8601."""
    return (f'<{action}Response xmlns="https://elasticbeanstalk.amazonaws.com/docs/2010-12-01/">'
            f"<{action}Result>{_xml(result)}</{action}Result>"
            f"<ResponseMetadata><RequestId>fake</RequestId></ResponseMetadata></{action}Response>")


def _xml(value: Any) -> str:
    if isinstance(value, dict):
        return "".join(f"<{k}>{_xml(v)}</{k}>" for k, v in value.items() if v is not None)
    if isinstance(value, list):
        return "".join(f"<member>{_xml(v)}</member>" for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return escape(str(value))


def _json_default(value: Any) -> Any:
    return value.timestamp() if isinstance(value, datetime) else str(value)


@contextmanager
def running(server: FakeAwsServer) -> Iterator[FakeAwsServer]:
    """Serve in a thread until the block ends (point a client at `server.url` yourself)."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def _serve(monkeypatch: pytest.MonkeyPatch, service: str, server: FakeAwsServer) -> Iterator[FakeAwsServer]:
    with running(server):
        monkeypatch.setenv(f"AWS_ENDPOINT_URL_{service}", server.url)
        yield server


@contextmanager
def json_api(monkeypatch: pytest.MonkeyPatch, service: str, handlers: Mapping[str, Handler]) -> Iterator[FakeAwsServer]:
    with _serve(monkeypatch, service, FakeAwsServer(handlers, "json", {})) as server:
        yield server


@contextmanager
def query_api(monkeypatch: pytest.MonkeyPatch, service: str, handlers: Mapping[str, Handler], *,
              files: Mapping[str, bytes] = {}) -> Iterator[FakeAwsServer]:  # noqa: B006 - read only
    with _serve(monkeypatch, service, FakeAwsServer(handlers, "query", files)) as server:
        yield server


# --- an Elastic Beanstalk environment: orders-prod, v41 for hours, v42 deployed 30 min ago -----------------------

ENV = "orders-prod"
APPLICATION = "orders"
_ARN = "arn:aws:elasticbeanstalk:us-east-1:123456789012"


class BeanstalkEnvironment:
    """orders-prod's state as Elastic Beanstalk keeps it, so a fix's `UpdateEnvironment` shows in the next
    `DescribeEnvironments` and `DescribeEvents`. A deploy leaves the environment `Updating` (as AWS does for
    minutes) until the test calls `settle()`. Answers carry the fields of botocore's output shapes
    (EnvironmentDescription, ApplicationVersionDescription); errors are AWS's InvalidParameterValue sentences."""

    def __init__(self, now: datetime, *, health: str = "Ok") -> None:
        self.now, self.health = now, health
        self.version, self.status = "v42", "Ready"
        self.updated = now - timedelta(minutes=30)
        self.versions = {"v41": now - timedelta(days=2), "v42": now - timedelta(hours=1)}
        self.events = _deploy_events(now)["Events"]

    def settle(self) -> None:
        """The running deployment finishes on every instance."""
        self.status = "Ready"
        self.events.append(_event(self.now, "Environment update completed successfully.", self.version))

    def describe(self, body: dict[str, Any]) -> dict[str, Any]:
        named = {v for k, v in body.items() if k.startswith("EnvironmentNames.member.")}
        return {"Environments": [self._description()] if not named or ENV in named else []}

    def describe_events(self, body: dict[str, Any]) -> dict[str, Any]:
        # Newest first, as AWS answers; of events at the same instant, the one recorded last comes first.
        return {"Events": sorted(self.events, key=lambda e: e["EventDate"])[::-1]}

    def describe_versions(self, body: dict[str, Any]) -> dict[str, Any]:
        wanted = {v for k, v in body.items() if k.startswith("VersionLabels.member.")} or set(self.versions)
        return {"ApplicationVersions": [self._version(label, created) for label, created in self.versions.items()
                                        if label in wanted]}

    def update(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("EnvironmentName") != ENV:
            raise FakeAwsError("InvalidParameterValue",
                               f"No Environment found for EnvironmentName = '{body.get('EnvironmentName')}'.")
        if body.get("VersionLabel") not in self.versions:
            raise FakeAwsError("InvalidParameterValue", f"No Application Version named '{body.get('VersionLabel')}' "
                                                        f"found.")
        self.version, self.status, self.updated = body["VersionLabel"], "Updating", self.now
        self.events.append(_event(self.now, "Environment update is starting.", self.version))
        return self._description()

    def handlers(self, tail_url: str) -> dict[str, Handler]:
        return {"DescribeEnvironments": self.describe, "DescribeEvents": self.describe_events,
                "DescribeApplicationVersions": self.describe_versions, "UpdateEnvironment": self.update,
                **_health_handlers(self.now, self.health), "RetrieveEnvironmentInfo": lambda body: {"EnvironmentInfo": [
                    {"InfoType": "tail", "Ec2InstanceId": "i-0abc", "SampleTimestamp": self.now - timedelta(minutes=1),
                     "Message": tail_url}]}}

    def _description(self) -> dict[str, Any]:
        return {"EnvironmentName": ENV, "EnvironmentId": "e-abcdef1234", "ApplicationName": APPLICATION,
                "VersionLabel": self.version, "SolutionStackName": "64bit Amazon Linux 2023 v4.3.0 running Python 3.11",
                "EndpointURL": "awseb-e-a-AWSEBLoa-1.us-east-1.elb.amazonaws.com",
                "CNAME": f"{ENV}.eba-abc.us-east-1.elasticbeanstalk.com", "DateCreated": self.now - timedelta(days=30),
                "DateUpdated": self.updated, "Status": self.status, "AbortableOperationInProgress":
                self.status == "Updating", "Health": "Green" if self.health == "Ok" else "Red",
                "HealthStatus": self.health, "Tier": {"Name": "WebServer", "Type": "Standard", "Version": "1.0"},
                "EnvironmentArn": f"{_ARN}:environment/{APPLICATION}/{ENV}"}

    def _version(self, label: str, created: datetime) -> dict[str, Any]:
        return {"ApplicationVersionArn": f"{_ARN}:applicationversion/{APPLICATION}/{label}",
                "ApplicationName": APPLICATION, "VersionLabel": label,
                "SourceBundle": {"S3Bucket": "elasticbeanstalk-us-east-1-123456789012", "S3Key": f"orders/{label}.zip"},
                "DateCreated": created, "DateUpdated": created, "Status": "Processed"}


def _event(at: datetime, message: str, version: str) -> dict:
    return {"EventDate": at, "Message": message, "VersionLabel": version, "Severity": "INFO",
            "EnvironmentName": ENV, "ApplicationName": APPLICATION}


def _deploy_events(now: datetime) -> dict:
    healthy = "Environment health has transitioned from Info to Ok."
    return {"Events": [_event(now - timedelta(minutes=300), healthy, "v41"),
                       _event(now - timedelta(minutes=30), "Environment update is starting.", "v42"),
                       _event(now - timedelta(minutes=28), "New application version was deployed to running EC2 "
                                                            "instances.", "v42")]}


def beanstalk_tail(now: datetime, *, errors: bool) -> bytes:
    """One instance's tail file: quiet requests before the deploy, and `KeyError` lines 21, 15 and 9 min ago."""
    quiet = [f"{(now - timedelta(minutes=m)):%b %d %H:%M:%S} ip-10-0-1-5 web: GET /orders 200" for m in (40, 35)]
    broken = [f"{(now - timedelta(minutes=m)):%b %d %H:%M:%S} ip-10-0-1-5 web: ERROR KeyError: 'currency' in order {m}"
              for m in (21, 15, 9)] if errors else []
    return ("----------------------------------------\n/var/log/web.stdout.log\n"
            "----------------------------------------\n" + "\n".join(quiet + broken) + "\n").encode()


def _health_handlers(now: datetime, health: str) -> dict[str, Handler]:
    sick = health != "Ok"
    return {
        "DescribeEnvironmentHealth": lambda body: {
            "EnvironmentName": ENV, "HealthStatus": health, "Status": "Ready",
            "Causes": ["100.0 % of the requests are failing with HTTP 5xx."] if sick else [],
            "ApplicationMetrics": {"RequestCount": 1200, "StatusCodes": {"Status5xx": 100 if sick else 0}}},
        "DescribeInstancesHealth": lambda body: {"InstanceHealthList": [
            {"InstanceId": "i-0abc", "HealthStatus": health, "Causes": ["Application errors (5xx)."] if sick else [],
             "Deployment": {"VersionLabel": "v42", "Status": "Deployed"}}]},
    }


def beanstalk_api(now: datetime, tail_url: str, *, health: str = "Ok") -> dict[str, Handler]:
    """Handlers for the environment: `health` other than Ok makes it and its one instance fail with 5xx causes."""
    return BeanstalkEnvironment(now, health=health).handlers(tail_url)
