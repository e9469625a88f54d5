"""A service with ~25 AWS checks against moto's server (own process) (real HTTP, like AWS): wall time of the run divided
by the slowest single check's time (target ≤ 1.5), and the AWS API calls made per run (target: none repeated).

    .venv/bin/python -m benchmarks.bench_aws

Prints figures; not a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks import summarize_limit, summarize_ratio
from bot.settings import parse_services
from checks.aws.clients import AwsClients
from checks.registry import CheckContext
from checks.runner import make_http_client, plan, run_check, run_service
from tests.app_harness import free_port
from tests.aws_fake_apis import ENV, FakeAwsServer, beanstalk_api, beanstalk_tail, running
from tests.aws_lambda_scenarios import (
    ROLE_NAME,
    create_function,
    put_lambda_metrics,
    put_log_lines,
    report_line,
    sqs_queue,
)
from tests.aws_scenarios import (
    build_alb,
    build_network,
    build_target_group,
    firing_alarm,
    http_api,
    interface_endpoint,
    metadata_instance,
    put_parameter,
    rest_api,
    security_group,
)
from tests.fixtures.aws import FAKE_CREDENTIALS

FUNCTIONS = [f"fn-{i}" for i in range(4)]


def build_world(aws: AwsClients) -> dict[str, Any]:
    """The AWS side of one service: an ALB and target group, four Lambdas with logs and metrics, queues, tables,
    parameters and an alarm — enough for 25-odd checks."""
    now = datetime.now(UTC)
    net = build_network(aws)
    build_alb(aws, net, name="web")
    build_target_group(aws, net, name="web-tg")
    for name in FUNCTIONS:
        create_function(aws, name, timeout=10)
        put_lambda_metrics(aws, name, now - timedelta(minutes=5), invocations=100, durations_ms=[120, 250])
        put_log_lines(aws, f"/aws/lambda/{name}", [(now - timedelta(minutes=m), report_line(f"req-{m}", duration_ms=100))
                                                   for m in range(1, 30)])
    for name in ("jobs", "emails"):
        sqs_queue(aws, name)
    dynamo = aws.client("dynamodb", "us-east-1")
    for table in ("orders", "users"):
        dynamo.create_table(TableName=table, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                            BillingMode="PAY_PER_REQUEST")
    for name in ("/api/db-url", "/api/feature-flags"):
        put_parameter(aws, name, "value")
    firing_alarm(aws, "api-5xx", reason="Threshold crossed")
    aws.client("rds", "us-east-1").create_db_instance(
        DBInstanceIdentifier="orders-db", Engine="postgres", DBInstanceClass="db.t3.micro", AllocatedStorage=20,
        MasterUsername="app", MasterUserPassword="not-a-real-secret", CACertificateIdentifier="rds-ca-rsa2048-g1")
    fn_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTIONS[0]}"
    runbook = {"instances": [metadata_instance(aws)], "api_gateways": [rest_api(aws, fn_arn)],
               "http_apis": [http_api(aws, fn_arn)], "xray": True, "beanstalk_environments": [ENV]}
    return {"services": {"api": {"aws": {**runbook,
        "region": "us-east-1", "load_balancers": ["web"], "target_groups": ["web-tg"],
        "lambda_functions": FUNCTIONS, "log_groups": [f"/aws/lambda/{FUNCTIONS[0]}"], "queues": ["jobs", "emails"],
        "dynamodb_tables": ["orders", "users"], "parameters": ["/api/db-url", "/api/feature-flags"],
        "alarm_prefixes": ["api-"], "subnets": list(net.public_subnets[:1]),
        "db_instances": ["orders-db"], "db_client_sslmode": {"orders-db": "verify-full"},
        **network_and_policies(aws, net),
    }}}}


def network_and_policies(aws: AwsClients, net: Any) -> dict[str, Any]:
    """Keys for the security group, policy, NAT, VPC DNS and interface endpoint checks: the functions' role and an
    SSM interface endpoint reachable from the private subnets."""
    group = security_group(aws, net, "vpce", ingress=[(443, net.cidr)])
    endpoint = interface_endpoint(aws, net, "ssm", subnets=net.private_subnets, groups=[group])
    return {"roles": [ROLE_NAME], "vpc_endpoints": [endpoint], "security_groups": [group]}


class CallCounter:
    """Counts every AWS request the checks' clients send (botocore's before-call event), by operation+params,
    and optionally adds a network round trip to each (before-send), as calls to a remote AWS region have."""

    def __init__(self, latency_s: float = 0.0) -> None:
        self.calls: Counter[str] = Counter()
        self.latency_s = latency_s

    def attach(self, aws: AwsClients) -> None:
        original = aws.client

        def client(service: str, region: str) -> Any:
            made = original(service, region)
            if not getattr(made, "_bench_counted", False):
                made.meta.events.register("before-call.*.*", self.on_call)
                made.meta.events.register("before-send.*.*", self.on_send)
                made._bench_counted = True
            return made

        aws.client = client  # type: ignore[method-assign]

    def on_send(self, **_: Any) -> None:
        if self.latency_s:
            time.sleep(self.latency_s)  # runs in the AWS thread pool, like waiting on the network

    def on_call(self, model: Any, params: Any, **_: Any) -> None:
        self.calls[f"{model.service_model.service_name}.{model.name} {json.dumps(params, sort_keys=True, default=str)}"] += 1


async def measure(spec: Any, latency_s: float) -> None:
    aws = AwsClients()
    counter = CallCounter(latency_s)
    counter.attach(aws)
    planned = plan(spec)
    http = make_http_client()
    try:
        await run_service("api", spec, http=http, aws_factory=aws.scoped)  # warm: clients, models, connections
        singles = []
        for item in planned:
            ctx = CheckContext("api", spec, datetime.now(UTC), http, aws.scoped(), deadline=time.monotonic() + 60)
            result = await run_check(item, ctx)
            singles.append((result.duration_ms, item.check, result.status.value))
        counter.calls.clear()
        started = time.perf_counter()
        results = await run_service("api", spec, http=http, aws_factory=aws.scoped)
        wall_ms = (time.perf_counter() - started) * 1000
    finally:
        await http.aclose()
    slowest = max(singles)
    repeated = {k: n for k, n in counter.calls.items() if n > 1}
    where = f"moto + {latency_s * 1000:.0f} ms per call" if latency_s else "moto alone (its own CPU time per request, not the checks, sets the pace)"
    print(f"AWS checks, {where}: {len(results)} checks ({dict(Counter(r.status.value for r in results))})")
    print(f"  wall {wall_ms:.0f} ms; slowest single check {slowest[1]} {slowest[0]} ms; "
          f"ratio {wall_ms / max(slowest[0], 1):.2f} (target ≤ 1.5)")
    print(f"  AWS API calls per run: {sum(counter.calls.values())}, distinct {len(counter.calls)}, "
          f"repeated {len(repeated)} (target 0)")
    for call, n in sorted(repeated.items(), key=lambda kv: -kv[1])[:5]:
        print(f"    x{n} {call[:140]}")
    label = f"{len(results)} AWS checks, {latency_s * 1000:.0f} ms a call"
    if latency_s:
        summarize_ratio(f"{label}: wall", wall_ms, slowest[0], "ms", limit=1.5, baseline_name="slowest check")
    summarize_limit(f"{label}: repeated calls", len(repeated), "calls", 0)


def main() -> None:
    """moto's server runs in its own process, as AWS would be remote: sharing this process's GIL would measure
    moto's Python, not the checks' concurrency."""
    port = free_port()
    # moto's server, taught rds:DescribeCertificates (which it lacks) for the aws.rds check
    server = subprocess.Popen([sys.executable, "-m", "tests.fixtures.rds_certificates", "-H", "127.0.0.1",
                               "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ.update(FAKE_CREDENTIALS)
    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port)
        spec = parse_services(build_world(AwsClients())).services["api"]
        with running(FakeAwsServer({}, "query", {})) as beanstalk:  # moto has Beanstalk's DescribeEnvironments only
            beanstalk.files["/tail"] = beanstalk_tail(datetime.now(UTC), errors=False)
            beanstalk.handlers.update(beanstalk_api(datetime.now(UTC), beanstalk.url + "/tail"))
            os.environ["AWS_ENDPOINT_URL_ELASTIC_BEANSTALK"] = beanstalk.url
            for latency_s in (0.0, 0.05):
                asyncio.run(measure(spec, latency_s))
    finally:
        server.terminate()
        server.wait(timeout=10)


def wait_for_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError("moto server did not start")


if __name__ == "__main__":
    main()
