"""Instance metadata, API Gateway stages, X-Ray, Logs Insights and Elastic Beanstalk: each rule flags its broken
scenario, names the culprit, and stays quiet on the healthy twin.

moto fakes EC2 metadata options, API Gateway (REST and HTTP) and the CloudWatch/Lambda side. It cannot fake X-Ray's
service graph, Insights' polling and StopQuery, or any Elastic Beanstalk call but DescribeEnvironments, so those
run against local servers speaking the AWS API (tests/aws_fake_apis.py) through botocore's endpoint override.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from checks.aws import insights
from checks.aws.apigateway import api_stage_config, api_stage_metrics
from checks.aws.beanstalk import beanstalk_deploy, beanstalk_health, tail_events
from checks.aws.instances import instance_metadata
from checks.aws.logs import log_errors
from checks.aws.xray import xray_traces
from checks.model import Status
from checks.registry import CheckContext, Layer, registered_checks
from checks.services import parse_service
from checks.targets import Api
from tests.aws_fake_apis import ENV, beanstalk_api, beanstalk_tail, json_api, query_api
from tests.aws_lambda_scenarios import create_function, put_lambda_metrics, put_log_lines, wall_clock
from tests.aws_scenarios import http_api, metadata_instance, put_api_traffic, rest_api


def context(aws, now: datetime | None = None, http=None, **spec) -> CheckContext:
    return CheckContext(service_name="api", service=parse_service({"aws": spec}), now=now or wall_clock(),
                        http=http, aws=aws)


# --- EC2 instance metadata ---------------------------------------------------------------------------------------


async def test_disabled_metadata_endpoint_fails_naming_the_instance(aws):
    instance = metadata_instance(aws, endpoint="disabled")
    result = await instance_metadata(instance, context(aws, instances=[instance]))
    assert result.status is Status.fail and result.resource == instance
    assert "metadata service is disabled" in result.summary and "--http-endpoint enabled" in result.hint


async def test_imdsv2_with_hop_limit_one_warns_that_containers_get_no_token(aws):
    instance = metadata_instance(aws, tokens="required", hop_limit=1)
    result = await instance_metadata(instance, context(aws, instances=[instance]))
    assert result.status is Status.warn and "hop limit of 1" in result.summary
    assert "--http-put-response-hop-limit 2" in result.hint and result.evidence["hop_limit"] == 1


async def test_imdsv2_with_hop_limit_two_is_healthy(aws):
    instance = metadata_instance(aws, tokens="required", hop_limit=2)
    result = await instance_metadata(instance, context(aws, instances=[instance]))
    assert result.status is Status.ok and result.evidence["imdsv1_allowed"] is False


# --- API Gateway ---------------------------------------------------------------------------------------------------


async def test_lambda_slower_than_the_29_s_integration_timeout_is_the_504_story(aws):
    now = wall_clock()
    function = create_function(aws, "slow-orders", timeout=60)
    put_lambda_metrics(aws, "slow-orders", now - timedelta(minutes=5), invocations=40, durations_ms=[1200, 41000])
    api_id = rest_api(aws, function["FunctionArn"])
    put_api_traffic(aws, {"ApiName": "orders", "Stage": "prod"}, at=now - timedelta(minutes=5), requests=40, e5=9,
                    latency_ms=9000, integration_ms=8900)
    ctx = context(aws, now, api_gateways=[api_id])
    config = await api_stage_config(Api("REST", api_id), ctx)
    assert config.status is Status.fail
    assert "GET /orders" in config.summary and "slow-orders" in config.summary and "504" in config.summary
    metrics = await api_stage_metrics(Api("REST", api_id), ctx)
    assert metrics.status is Status.fail and "22% of orders stage prod" in metrics.summary
    assert metrics.evidence["stages"][0]["integration_avg_ms"] == 8900


async def test_stage_throttled_below_the_observed_rate_names_the_limit_and_the_429s(aws):
    now = wall_clock()
    function = create_function(aws, "orders-fn", timeout=10)
    api_id = rest_api(aws, function["FunctionArn"], rate_limit=5)
    put_api_traffic(aws, {"ApiName": "orders", "Stage": "prod"}, at=now - timedelta(minutes=3), requests=600, e4=240)
    result = await api_stage_config(Api("REST", api_id), context(aws, now, api_gateways=[api_id]))
    assert result.status is Status.fail
    assert "stage prod of orders is throttled" in result.summary and "10 req/s against a limit of 5" in result.summary
    assert "429" in result.summary


async def test_method_throttled_below_the_stage_rate_is_named_by_route(aws):
    now = wall_clock()
    function = create_function(aws, "orders-fn", timeout=10)
    api_id = rest_api(aws, function["FunctionArn"], method_rate=1)
    put_api_traffic(aws, {"ApiName": "orders", "Stage": "prod"}, at=now - timedelta(minutes=3), requests=300, e4=200)
    result = await api_stage_config(Api("REST", api_id), context(aws, now, api_gateways=[api_id]))
    assert result.status is Status.fail and "GET /orders in stage prod" in result.summary


async def test_http_api_without_access_logs_warns_and_reads_v2_metric_names(aws):
    now = wall_clock()
    function = create_function(aws, "orders-fn", timeout=10)
    api_id = http_api(aws, function["FunctionArn"], access_logs=False)
    put_api_traffic(aws, {"ApiId": api_id, "Stage": "$default"}, at=now - timedelta(minutes=2), requests=120, e5=30,
                    http=True)
    ctx = context(aws, now, http_apis=[api_id])
    config = await api_stage_config(Api("HTTP", api_id), ctx)
    assert config.status is Status.warn and "writes no access logs" in config.summary
    assert config.evidence["integrations"] == [{"route": "GET /orders", "timeout_ms": 30000, "function": "orders-fn",
                                                "lambda_timeout_ms": 10000.0, "lambda_max_duration_ms": None}]
    metrics = await api_stage_metrics(Api("HTTP", api_id), ctx)
    assert metrics.status is Status.fail and "25%" in metrics.summary and "$default" in metrics.summary


async def test_integration_with_a_deleted_lambda_names_the_route_and_the_function(aws):
    api_id = rest_api(aws, "arn:aws:lambda:us-east-1:123456789012:function:gone-fn")
    result = await api_stage_config(Api("REST", api_id), context(aws, api_gateways=[api_id]))
    assert result.status is Status.fail and "GET /orders on orders calls Lambda gone-fn" in result.summary


async def test_healthy_rest_and_http_apis_pass_both_checks(aws):
    now = wall_clock()
    function = create_function(aws, "orders-fn", timeout=10)
    put_lambda_metrics(aws, "orders-fn", now - timedelta(minutes=5), invocations=100, durations_ms=[120, 800])
    rest_id, http_id = rest_api(aws, function["FunctionArn"]), http_api(aws, function["FunctionArn"])
    put_api_traffic(aws, {"ApiName": "orders", "Stage": "prod"}, at=now - timedelta(minutes=5), requests=600, e4=3)
    put_api_traffic(aws, {"ApiId": http_id, "Stage": "$default"}, at=now - timedelta(minutes=5), requests=60, http=True)
    ctx = context(aws, now, api_gateways=[rest_id], http_apis=[http_id])
    for api in (Api("REST", rest_id), Api("HTTP", http_id)):
        for check in (api_stage_config, api_stage_metrics):
            result = await check(api, ctx)
            assert result.status is Status.ok, (api, result.summary)


# --- X-Ray (local server: moto's service graph is always empty) --------------------------------------------------


def _trace(trace_id: str, *, fault: bool = False, throttle: bool = False) -> dict:
    summary = {"Id": trace_id, "Duration": 0.4, "ResponseTime": 0.4, "HasFault": fault, "HasError": False,
               "HasThrottle": throttle, "Http": {"HttpStatus": 502 if fault else 200}}
    if fault:
        summary["FaultRootCauses"] = [{"Services": [
            {"Name": "orders-api", "Type": "AWS::Lambda::Function", "EntityPath": [{"Name": "orders-api"}]},
            {"Name": "payments.example.com", "Type": "remote", "EntityPath": [
                {"Name": "payments.example.com", "Exceptions": [{"Name": "ConnectTimeout", "Message": "10 s"}]}]},
        ], "ClientImpacting": True}]
    return summary


def _graph(*, throttles: int = 0) -> dict:
    def stats(total: int, faults: int = 0, seconds: float = 0.0, throttled: int = 0) -> dict:
        return {"TotalCount": total, "OkCount": total - faults, "FaultStatistics": {"TotalCount": faults},
                "ErrorStatistics": {"TotalCount": throttled, "ThrottleCount": throttled}, "TotalResponseTime": seconds}
    return {"Services": [
        {"ReferenceId": 0, "Name": "orders-api", "Type": "AWS::Lambda::Function", "SummaryStatistics": stats(100, 4),
         "Edges": [{"ReferenceId": 1, "SummaryStatistics": stats(100, 4, 240.0)},
                   {"ReferenceId": 2, "SummaryStatistics": stats(100, 0, 3.0)}]},
        {"ReferenceId": 1, "Name": "payments.example.com", "Type": "remote", "SummaryStatistics": stats(100, 4)},
        {"ReferenceId": 2, "Name": "orders-table", "Type": "AWS::DynamoDB::Table",
         "SummaryStatistics": stats(100, 0, 3.0, throttles)},
    ]}


async def test_xray_names_the_dependency_behind_the_faults_and_the_slowest_downstream(aws, monkeypatch):
    traces = [_trace(f"1-{i}", fault=i < 12) for i in range(40)]
    handlers = {"TraceSummaries": lambda body: {"TraceSummaries": traces}, "ServiceGraph": lambda body: _graph()}
    with json_api(monkeypatch, "XRAY", handlers) as server:
        result = await xray_traces("us-east-1", context(aws, xray=True))
    assert server.calls == ["TraceSummaries", "ServiceGraph"]
    assert result.status is Status.fail and result.resource == "payments.example.com"
    assert "12 of 40 traces faulted" in result.summary and "payments.example.com (ConnectTimeout)" in result.summary
    assert result.evidence["slowest_downstream"][0] == {"from": "orders-api", "to": "payments.example.com",
                                                        "calls": 100, "avg_ms": 2400}


async def test_xray_throttled_node_warns_and_a_quiet_graph_is_healthy(aws, monkeypatch):
    traces = [_trace(f"1-{i}") for i in range(40)]
    graphs = iter([_graph(throttles=7), _graph()])
    handlers = {"TraceSummaries": lambda body: {"TraceSummaries": traces}, "ServiceGraph": lambda body: next(graphs)}
    with json_api(monkeypatch, "XRAY", handlers):
        throttled = await xray_traces("us-east-1", context(aws, xray=True))
        healthy = await xray_traces("us-east-1", context(aws, xray=True))
    assert throttled.status is Status.warn and "orders-table throttled 7 of 100" in throttled.summary
    assert healthy.status is Status.ok and "slowest downstream orders-api → payments.example.com" in healthy.summary


async def test_xray_a_stray_fault_or_a_few_throttles_among_thousands_are_not_findings(aws, monkeypatch):
    traces = [_trace(f"1-{i}", fault=i == 0) for i in range(10)]  # one 502 in a quiet hour: 10 %, but one trace
    graph = _graph()
    graph["Services"][2]["SummaryStatistics"].update(TotalCount=10_000, ErrorStatistics={"TotalCount": 2,
                                                                                         "ThrottleCount": 2})
    handlers = {"TraceSummaries": lambda body: {"TraceSummaries": traces}, "ServiceGraph": lambda body: graph}
    with json_api(monkeypatch, "XRAY", handlers):
        result = await xray_traces("us-east-1", context(aws, xray=True))
    assert result.status is Status.ok, result.summary
    assert result.evidence["faulted"] == 1


# --- Logs Insights for large groups ------------------------------------------------------------------------------


def _rows(now: datetime, *messages: str) -> list[list[dict]]:
    stamp = (now - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S.000")
    return [[{"field": "@timestamp", "value": stamp}, {"field": "@message", "value": m},
             {"field": "@logStream", "value": "s1"}, {"field": "@ptr", "value": "x"}] for m in messages]


def _large_group(name: str) -> dict:
    return {"logGroups": [{"logGroupName": name, "storedBytes": 50 * 1024**3}]}


async def test_large_group_is_read_with_one_insights_query_polled_until_complete(aws, monkeypatch):
    monkeypatch.setattr(insights, "POLL_S", 0.05)
    now = wall_clock()
    answers = iter([{"status": "Running", "results": []}, {"status": "Complete", "results": _rows(
        now, *[f"[ERROR] payment {n} declined by gateway" for n in range(12)])}])
    handlers = {"DescribeLogGroups": lambda body: _large_group("/big"), "StartQuery": lambda body: {"queryId": "q1"},
                "GetQueryResults": lambda body: next(answers)}
    with json_api(monkeypatch, "CLOUDWATCH_LOGS", handlers) as server:
        result = await log_errors("/big", context(aws, now, log_groups=["/big"]))
    assert server.calls == ["DescribeLogGroups", "StartQuery", "GetQueryResults", "GetQueryResults"]
    assert result.status is Status.fail and result.evidence["read_with"] == "insights"
    assert result.evidence["signatures"][0]["signature"] == "[ERROR] payment <N> declined by gateway"


async def test_insights_query_still_running_at_the_deadline_is_stopped_and_partial(aws, monkeypatch):
    monkeypatch.setattr(insights, "POLL_S", 0.05)
    monkeypatch.setattr(insights, "MAX_QUERY_S", 0.3)
    now = wall_clock()
    handlers = {"DescribeLogGroups": lambda body: _large_group("/big"), "StartQuery": lambda body: {"queryId": "q1"},
                "GetQueryResults": lambda body: {"status": "Running", "results": _rows(now, "Exception: boom")},
                "StopQuery": lambda body: {"success": True}}
    with json_api(monkeypatch, "CLOUDWATCH_LOGS", handlers) as server:
        result = await log_errors("/big", context(aws, now, log_groups=["/big"]))
    assert server.calls[-1] == "StopQuery" and server.calls.count("GetQueryResults") >= 2
    assert result.status is Status.warn and result.evidence["truncated"] is True


async def test_insights_refused_falls_back_to_filter_log_events_on_moto(aws, monkeypatch):
    """moto's StartQuery would answer; the group is small, so moto's FilterLogEvents path is the one used."""
    now = wall_clock()
    put_log_lines(aws, "/small", [(now - timedelta(minutes=3), "ValueError: bad order 7")])
    result = await log_errors("/small", context(aws, now, log_groups=["/small"]))
    assert result.evidence["read_with"] == "filter" and result.status is Status.warn


# --- Elastic Beanstalk (local server: moto implements DescribeEnvironments only) ---------------------------------

@pytest.fixture
async def http_client():
    async with httpx.AsyncClient() as client:
        yield client


async def test_errors_after_a_beanstalk_deploy_name_the_version_and_the_one_to_roll_back_to(aws, monkeypatch,
                                                                                             http_client):
    now = wall_clock()
    with query_api(monkeypatch, "ELASTIC_BEANSTALK", {}, files={"/tail/i-0abc": beanstalk_tail(now, errors=True)}) as server:
        server.handlers.update(beanstalk_api(now, server.url + "/tail/i-0abc", health="Severe"))
        ctx = context(aws, now, http=http_client, beanstalk_environments=[ENV])
        deploy = await beanstalk_deploy(ENV, ctx)
        health = await beanstalk_health(ENV, ctx)
    assert deploy.status is Status.fail and deploy.resource == ENV
    assert deploy.summary == ("Errors started 9 min after version v42 was deployed to orders-prod (previous version "
                              "v41); rollback candidate.")
    assert "--version-label v41" in deploy.hint and deploy.evidence["logs_read_from"] == "tail"
    assert deploy.evidence["signatures"][0]["signature"].endswith("ERROR KeyError: 'currency' in order <N>")
    assert health.status is Status.fail and health.severity == "P0"
    assert "100.0 % of the requests are failing with HTTP 5xx" in health.summary and "i-0abc" in health.summary


async def test_healthy_beanstalk_environment_after_a_clean_deploy_passes(aws, monkeypatch, http_client):
    now = wall_clock()
    with query_api(monkeypatch, "ELASTIC_BEANSTALK", {}, files={"/tail/i-0abc": beanstalk_tail(now, errors=False)}) as server:
        server.handlers.update(beanstalk_api(now, server.url + "/tail/i-0abc"))
        ctx = context(aws, now, http=http_client, beanstalk_environments=[ENV])
        deploy = await beanstalk_deploy(ENV, ctx)
        health = await beanstalk_health(ENV, ctx)
    assert deploy.status is Status.ok and "version v42 was deployed" in deploy.summary
    assert health.status is Status.ok and health.evidence["instances"][0]["version"] == "v42"


async def test_beanstalk_logs_streamed_to_cloudwatch_are_read_there_instead_of_the_tail(aws, monkeypatch,
                                                                                        http_client):
    now = wall_clock()
    put_log_lines(aws, f"/aws/elasticbeanstalk/{ENV}/var/log/web.stdout.log",
                  [(now - timedelta(minutes=m), f"Traceback: ValueError: order {m} has no lines") for m in (20, 10)])
    with query_api(monkeypatch, "ELASTIC_BEANSTALK", {}) as server:
        server.handlers.update(beanstalk_api(now, server.url + "/nowhere"))
        result = await beanstalk_deploy(ENV, context(aws, now, http=http_client, beanstalk_environments=[ENV]))
    assert "RetrieveEnvironmentInfo" not in server.calls and result.evidence["logs_read_from"] == "cloudwatch"
    assert result.status is Status.fail and "10 min after version v42" in result.summary


async def test_failed_beanstalk_deploy_is_reported_even_when_the_instance_logs_cannot_be_read(aws, monkeypatch,
                                                                                             http_client):
    now = wall_clock()
    failed = {"EventDate": now - timedelta(minutes=12), "Severity": "ERROR", "VersionLabel": "v42",
              "Message": "Failed to deploy application."}
    with query_api(monkeypatch, "ELASTIC_BEANSTALK", {}) as server:
        server.handlers.update(beanstalk_api(now, server.url + "/nowhere"))
        events = server.handlers["DescribeEvents"]({})
        server.handlers["DescribeEvents"] = lambda body: {"Events": [*events["Events"], failed]}
        del server.handlers["RetrieveEnvironmentInfo"]  # the fake answers InvalidRequestException
        result = await beanstalk_deploy(ENV, context(aws, now, http=http_client, beanstalk_environments=[ENV]))
    assert result.status is Status.fail
    assert "A deployment to orders-prod failed" in result.summary and "(version v42)" in result.summary
    assert "--version-label v41" in result.hint and result.evidence["logs_read_from"].startswith("none: ")


def test_tail_lines_keep_their_own_time_and_file():
    now = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)
    text = ("-----\n/var/log/eb-engine.log\n-----\n2026/12/03 14:50:01.123 [ERROR] deploy hook failed\n"
            "  continuation\n")
    found = tail_events({"Ec2InstanceId": "i-1", "SampleTimestamp": now}, text, now)
    assert [(e["logStreamName"], e["timestamp"]) for e in found] == [
        ("i-1:/var/log/eb-engine.log", int(datetime(2026, 12, 3, 14, 50, 1, tzinfo=UTC).timestamp() * 1000))] * 2


def test_new_checks_are_registered_with_their_layers():
    checks = registered_checks()
    assert {name: checks[name].layer for name in (
        "aws.instance_metadata", "aws.api_stage_config", "aws.api_stage_metrics", "aws.xray_traces",
        "aws.beanstalk_health", "aws.beanstalk_deploy")} == {
        "aws.instance_metadata": Layer.config, "aws.api_stage_config": Layer.config,
        "aws.api_stage_metrics": Layer.symptom, "aws.xray_traces": Layer.platform,
        "aws.beanstalk_health": Layer.platform, "aws.beanstalk_deploy": Layer.change}


def test_diagnose_list_shows_the_checks_the_new_keys_enable_and_a_misspelt_key_names_its_path():
    from bot.app.cli import services_text
    from bot.settings import ConfigError, parse_services

    catalog = parse_services({"services": {"shop": {"aws": {
        "api_gateways": ["r1"], "http_apis": ["h1"], "beanstalk_environments": ["orders-prod"], "instances": ["i-1"],
        "xray": True}}}})
    listed = services_text(catalog)
    for check in ("aws.api_stage_config", "aws.api_stage_metrics", "aws.beanstalk_deploy", "aws.beanstalk_health",
                  "aws.instance_metadata", "aws.xray_traces"):
        assert check in listed
    misspelt = r"services\.shop\.aws\.beanstalk_environment: unknown key; did you mean beanstalk_environments\?$"
    with pytest.raises(ConfigError, match=misspelt):
        parse_services({"services": {"shop": {"aws": {"beanstalk_environment": ["orders-prod"]}}}})
