"""Local servers that speak an AWS API where moto does not: the checks' real boto3 clients reach them through
botocore's per-service endpoint override (`AWS_ENDPOINT_URL_<SERVICE>`), inside `mock_aws` (moto lets requests
to other hosts through), so everything else a test does still goes to moto.

- `json_api(monkeypatch, "XRAY", {"TraceSummaries": fn})`: X-Ray (REST-JSON: the operation is the path) and
  CloudWatch Logs (JSON 1.1: the operation is the `X-Amz-Target` suffix). `fn(body) -> dict` answers one call.
- `query_api(monkeypatch, "ELASTIC_BEANSTALK", {"DescribeEvents": fn}, files={"/tail/i-1": b"..."})`: the
  query protocol (form-encoded `Action=…`, XML answers), plus plain GET files for pre-signed download URLs.

`beanstalk_api(now, tail_url, health=…)` and `beanstalk_tail(now, errors=…)` script one Elastic Beanstalk
environment, healthy or broken after its latest deploy.

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
            return self._error(operation)
        result = handler(body)
        if self.protocol == "json":
            return 200, json.dumps(result, default=_json_default).encode(), "application/x-amz-json-1.1"
        return 200, query_xml(operation, result).encode(), "text/xml"

    def _error(self, operation: str) -> tuple[int, bytes, str]:
        if self.protocol == "json":
            body = {"__type": "InvalidRequestException", "message": f"{operation} is not scripted"}
            return 400, json.dumps(body).encode(), "application/x-amz-json-1.1"
        xml = (f"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidRequestException</Code><Message>{operation} "
               "is not scripted</Message></Error></ErrorResponse>")
        return 400, xml.encode(), "text/xml"


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


def _environment(now: datetime, *, health: str = "Ok", version: str = "v42") -> dict:
    return {"Environments": [{"EnvironmentName": ENV, "ApplicationName": "orders", "VersionLabel": version,
                              "Status": "Ready", "Health": "Green" if health == "Ok" else "Red",
                              "HealthStatus": health, "DateUpdated": now - timedelta(minutes=30)}]}


def _deploy_events(now: datetime) -> dict:
    def event(minutes: int, message: str, version: str) -> dict:
        return {"EventDate": now - timedelta(minutes=minutes), "Message": message, "VersionLabel": version,
                "Severity": "INFO", "EnvironmentName": ENV, "ApplicationName": "orders"}
    return {"Events": [event(300, "Environment health has transitioned from Info to Ok.", "v41"),
                       event(30, "Environment update is starting.", "v42"),
                       event(28, "New application version was deployed to running EC2 instances.", "v42")]}


def beanstalk_tail(now: datetime, *, errors: bool) -> bytes:
    """One instance's tail file: quiet requests before the deploy, and `KeyError` lines 21, 15 and 9 min ago."""
    quiet = [f"{(now - timedelta(minutes=m)):%b %d %H:%M:%S} ip-10-0-1-5 web: GET /orders 200" for m in (40, 35)]
    broken = [f"{(now - timedelta(minutes=m)):%b %d %H:%M:%S} ip-10-0-1-5 web: ERROR KeyError: 'currency' in order {m}"
              for m in (21, 15, 9)] if errors else []
    return ("----------------------------------------\n/var/log/web.stdout.log\n"
            "----------------------------------------\n" + "\n".join(quiet + broken) + "\n").encode()


def beanstalk_api(now: datetime, tail_url: str, *, health: str = "Ok") -> dict[str, Handler]:
    """Handlers for the environment: `health` other than Ok makes it and its one instance fail with 5xx causes."""
    sick = health != "Ok"
    return {
        "DescribeEnvironments": lambda body: _environment(now, health=health),
        "DescribeEnvironmentHealth": lambda body: {
            "EnvironmentName": ENV, "HealthStatus": health, "Status": "Ready",
            "Causes": ["100.0 % of the requests are failing with HTTP 5xx."] if sick else [],
            "ApplicationMetrics": {"RequestCount": 1200, "StatusCodes": {"Status5xx": 100 if sick else 0}}},
        "DescribeInstancesHealth": lambda body: {"InstanceHealthList": [
            {"InstanceId": "i-0abc", "HealthStatus": health, "Causes": ["Application errors (5xx)."] if sick else [],
             "Deployment": {"VersionLabel": "v42", "Status": "Deployed"}}]},
        "DescribeEvents": lambda body: _deploy_events(now),
        "DescribeApplicationVersions": lambda body: {"ApplicationVersions": [
            {"VersionLabel": "v41", "DateCreated": now - timedelta(days=2)},
            {"VersionLabel": "v42", "DateCreated": now - timedelta(hours=1)}]},
        "RetrieveEnvironmentInfo": lambda body: {"EnvironmentInfo": [
            {"InfoType": "tail", "Ec2InstanceId": "i-0abc", "SampleTimestamp": now - timedelta(minutes=1),
             "Message": tail_url}]},
    }
