"""Lambda, log and change checks against moto: each rule flags its broken scenario and stays quiet on a healthy one.

moto stamps Lambda versions, API deployments and stack events with the wall clock, so those scenarios read the
time moto recorded and place log events and `ctx.now` relative to it.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from botocore.stub import Stubber

from checks.aws.changes import (
    Change,
    find_suspect,
    lambda_changes,
    parse_aws_time,
    recent_changes,
)
from checks.aws.lambdas import lambda_cold_starts, lambda_config, lambda_metrics
from checks.aws.logs import (
    ErrorScan,
    log_errors,
    normalise,
    parse_report_line,
    summarise_errors,
)
from checks.model import Status
from checks.registry import CheckContext, Layer
from checks.services import parse_service
from tests.aws_lambda_scenarios import (
    REGION,
    create_function,
    deploy_version,
    point_alias,
    put_lambda_metrics,
    put_log_lines,
    python_traceback,
    report_line,
    sqs_queue,
    wall_clock,
)

FIXED_NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def context(aws, now: datetime, **spec) -> CheckContext:
    return CheckContext(service_name="api", service=parse_service({"aws": spec}), now=now, http=None, aws=aws)


def events(*lines: tuple[int, str], stream: str = "s1") -> list[dict]:
    """filter_log_events-shaped events from (seconds, message) pairs."""
    base = int(FIXED_NOW.timestamp() * 1000)
    return [{"timestamp": base + s * 1000, "message": m, "logStreamName": stream} for s, m in lines]


def request_id() -> str:
    return str(uuid.uuid4())


# --- pure parsing: REPORT lines ----------------------------------------------------------------------------------


def test_report_line_of_a_cold_start_carries_init_duration():
    line = ("REPORT RequestId: 3f1c2b9e-1111-4222-8333-444455556666\tDuration: 102.25 ms\tBilled Duration: 103 ms\t"
            "Memory Size: 128 MB\tMax Memory Used: 70 MB\tInit Duration: 245.12 ms\t\n")
    report = parse_report_line(line)
    assert report is not None and report.cold
    assert (report.duration_ms, report.billed_ms, report.init_ms) == (102.25, 103.0, 245.12)
    assert (report.memory_size_mb, report.max_memory_used_mb) == (128, 70)


def test_report_line_of_a_warm_timeout_has_no_init_and_keeps_the_status():
    report = parse_report_line("REPORT RequestId: abc Duration: 3000.00 ms Billed Duration: 3000 ms "
                               "Memory Size: 256 MB Max Memory Used: 90 MB Status: timeout")
    assert report is not None and not report.cold
    assert report.duration_ms == 3000.0 and report.status == "timeout"


def test_report_record_in_json_log_format_is_read_too():
    report = parse_report_line('{"time":"2026-11-20T12:00:00Z","type":"platform.report","record":{"requestId":"r1",'
                               '"metrics":{"durationMs":12.5,"billedDurationMs":13,"memorySizeMB":512,'
                               '"maxMemoryUsedMB":80,"initDurationMs":420.1},"status":"success"}}')
    assert report is not None and report.init_ms == 420.1 and report.memory_size_mb == 512


@pytest.mark.parametrize("line", [
    "START RequestId: abc Version: $LATEST",
    "END RequestId: abc",
    "INFO REPORT generated for customer 42",
    '{"type":"platform.start","record":{}}',
])
def test_lines_that_are_not_report_lines_are_ignored(line):
    assert parse_report_line(line) is None


# --- pure parsing: error signatures ------------------------------------------------------------------------------


def test_two_tracebacks_differing_only_in_ids_collapse_to_one_signature():
    first = python_traceback("ValueError: unknown user 1234 (request 3f1c2b9e-1111-4222-8333-444455556666)")
    second = python_traceback("ValueError: unknown user 98 (request 0a1b2c3d-aaaa-4bbb-8ccc-ddddeeeeffff)", line=14)
    found = summarise_errors(events(
        (0, "INFO handling request"),
        *[(1, line) for line in first],
        (2, "INFO handling request"),
        *[(9, line) for line in second],
    ))
    assert len(found) == 1
    assert found[0].count == 2
    assert found[0].signature == "ValueError: unknown user <N> (request <UUID>)"
    assert found[0].first_seen == FIXED_NOW + timedelta(seconds=1)
    assert found[0].last_seen == FIXED_NOW + timedelta(seconds=9)


@pytest.mark.parametrize(("raw", "expected"), [
    ("[ERROR]\t2026-11-20T12:00:01.123Z\t3f1c2b9e-1111-4222-8333-444455556666\tPayment failed for order 5521",
     "[ERROR] Payment failed for order <N>"),
    ("timeout connecting to 10.0.3.4:5432 after 3.5 s", "timeout connecting to <IP> after <N> s"),
    ("object 0x7f3a2b at sha deadbeef12345678 failed", "object <HEX> at sha <HEX> failed"),
    ("trace Root=1-5f84c7a5-0123456789abcdef01234567 failed at 2026-11-20 12:00:01",
     "trace Root=<TRACE> failed at <TS>"),
])
def test_normalise_replaces_what_differs_between_occurrences(raw, expected):
    assert normalise(raw) == expected


def test_lambda_unhandled_exception_is_one_error_named_by_its_exception_line():
    found = summarise_errors(events(
        (0, "START RequestId: r1 Version: $LATEST\n"),
        (1, "[ERROR] KeyError: 'user_id'\nTraceback (most recent call last):\n"
            '  File "/var/task/app.py", line 5, in handler\n    return event["user_id"]\n'),
        (2, "END RequestId: r1\n"),
    ))
    assert [(s.signature, s.count) for s in found] == [("[ERROR] KeyError: 'user_id'", 1)]
    assert found[0].sample[0] == "START RequestId: r1 Version: $LATEST"
    assert found[0].sample[-1] == "END RequestId: r1"


def test_lambda_timeout_line_counts_as_an_error():
    found = summarise_errors(events(
        (3, "2026-11-20T12:00:03.010Z 3f1c2b9e-1111-4222-8333-444455556666 Task timed out after 3.00 seconds\n"),
    ))
    assert [(s.signature, s.count) for s in found] == [("Task timed out after <N> seconds", 1)]


def test_sample_context_comes_from_the_erroring_stream_only():
    found = summarise_errors([
        *events((0, "other stream before"), (3, "other stream after"), stream="b"),
        *events((1, "worker ready"), (2, "ERROR could not reach db"), (4, "retrying"), stream="a"),
    ])
    assert found[0].stream == "a"
    assert found[0].sample == ["worker ready", "ERROR could not reach db", "retrying"]


@pytest.mark.parametrize("line", [
    "processed 10 items, errors=0",
    "batch done: 0 errors",
    'response {"error": null, "ok": true}',
    "health check passed with no errors",
])
def test_lines_that_only_mention_errors_are_not_errors(line):
    assert summarise_errors(events((0, line))) == []


# --- aws.lambda_config -------------------------------------------------------------------------------------------


async def test_reserved_concurrency_zero_fails_p0_because_every_call_is_throttled(aws):
    create_function(aws, "api-handler")
    aws.client("lambda", REGION).put_function_concurrency(FunctionName="api-handler", ReservedConcurrentExecutions=0)

    result = await lambda_config("api-handler", context(aws, FIXED_NOW, lambda_functions=["api-handler"]))

    assert (result.status, result.severity) == (Status.fail, "P0")
    assert "every invocation is throttled" in result.summary
    assert "delete-function-concurrency --function-name api-handler" in result.hint
    assert result.evidence["reserved_concurrency"] == 0


async def test_deprecated_runtime_warns_p3_with_its_date(aws):
    create_function(aws, "legacy", runtime="python3.8")

    result = await lambda_config("legacy", context(aws, FIXED_NOW, lambda_functions=["legacy"]))

    assert (result.status, result.severity) == (Status.warn, "P3")
    assert "python3.8, deprecated since 2024-10-14" in result.summary


async def test_healthy_function_config_is_ok_with_timeout_and_memory_in_evidence(aws):
    create_function(aws, "api-handler", runtime="python3.12", timeout=30, memory=512)
    aws.client("lambda", REGION).put_function_concurrency(FunctionName="api-handler", ReservedConcurrentExecutions=50)

    result = await lambda_config("api-handler", context(aws, FIXED_NOW, lambda_functions=["api-handler"]))

    assert result.status == Status.ok
    assert (result.evidence["timeout_s"], result.evidence["memory_mb"]) == (30, 512)
    assert result.evidence["reserved_concurrency"] == 50
    assert result.evidence["runtime_deprecation_upcoming"] is False


async def test_sqs_trigger_whose_function_writes_back_to_the_same_queue_fails_as_a_loop(aws):
    url, arn = sqs_queue(aws, "orders")
    create_function(aws, "relay", env={"OUTPUT_QUEUE_URL": url})
    aws.client("lambda", REGION).create_event_source_mapping(EventSourceArn=arn, FunctionName="relay")

    result = await lambda_config("relay", context(aws, FIXED_NOW, lambda_functions=["relay"]))

    assert (result.status, result.severity) == (Status.fail, "P1")
    assert "triggered by queue orders" in result.summary and "OUTPUT_QUEUE_URL" in result.summary
    assert result.evidence["event_sources"][0]["source"] == arn


async def test_sqs_trigger_writing_to_another_queue_is_ok(aws):
    _, source = sqs_queue(aws, "orders")
    target, _ = sqs_queue(aws, "orders-done")
    create_function(aws, "relay", env={"OUTPUT_QUEUE_URL": target})
    aws.client("lambda", REGION).create_event_source_mapping(EventSourceArn=source, FunctionName="relay")

    result = await lambda_config("relay", context(aws, FIXED_NOW, lambda_functions=["relay"]))

    assert result.status == Status.ok, result.summary
    assert result.evidence["event_sources"][0]["state"] == "Enabled"


async def test_disabled_trigger_warns(aws):
    _, source = sqs_queue(aws, "orders")
    create_function(aws, "worker")
    client = aws.client("lambda", REGION)
    mapping = client.create_event_source_mapping(EventSourceArn=source, FunctionName="worker")
    client.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)

    result = await lambda_config("worker", context(aws, FIXED_NOW, lambda_functions=["worker"]))

    assert (result.status, result.severity) == (Status.warn, "P2")
    assert "trigger from orders to worker is disabled" in result.summary


async def test_access_denied_is_an_error_naming_the_missing_action(aws):
    client = aws.client("lambda", REGION)
    with Stubber(client) as stub:
        stub.add_client_error("get_function_configuration", service_error_code="AccessDeniedException",
                              service_message="not authorized", http_status_code=403)
        result = await lambda_config("api-handler", context(aws, FIXED_NOW, lambda_functions=["api-handler"]))

    assert result.status == Status.error
    assert "lambda:GetFunctionConfiguration" in result.summary
    assert "lambda:GetFunctionConfiguration" in result.hint


# --- aws.lambda_metrics ------------------------------------------------------------------------------------------


async def test_throttles_fail_p1(aws):
    create_function(aws, "api-handler")
    put_lambda_metrics(aws, "api-handler", FIXED_NOW - timedelta(minutes=10), invocations=100, throttles=7,
                       durations_ms=[120])

    result = await lambda_metrics("api-handler", context(aws, FIXED_NOW, lambda_functions=["api-handler"]))

    assert (result.status, result.severity) == (Status.fail, "P1")
    assert "throttled 7 times" in result.summary
    assert result.evidence["throttles"] == 7


async def test_error_rate_above_five_percent_fails_p1(aws):
    create_function(aws, "api-handler")
    for minutes in (5, 15):
        put_lambda_metrics(aws, "api-handler", FIXED_NOW - timedelta(minutes=minutes), invocations=100, errors=12,
                           durations_ms=[150])

    result = await lambda_metrics("api-handler", context(aws, FIXED_NOW, lambda_functions=["api-handler"]))

    assert (result.status, result.severity) == (Status.fail, "P1")
    assert "12% of api-handler's invocations failed (24 of 200)" in result.summary
    assert result.evidence["error_rate_pct"] == 12.0


async def test_max_duration_at_the_timeout_fails_p1_as_timing_out(aws):
    create_function(aws, "api-handler", timeout=3)
    put_lambda_metrics(aws, "api-handler", FIXED_NOW - timedelta(minutes=3), invocations=50,
                       durations_ms=[200, 3000.4])

    result = await lambda_metrics("api-handler", context(aws, FIXED_NOW, lambda_functions=["api-handler"]))

    assert (result.status, result.severity) == (Status.fail, "P1")
    assert "timing out" in result.summary
    assert result.evidence["timeout_ms"] == 3000.0 and result.evidence["max_duration_ms"] == 3000.4


async def test_max_duration_near_the_timeout_fails_with_the_runbooks_p2(aws):
    create_function(aws, "api-handler", timeout=10)
    put_lambda_metrics(aws, "api-handler", FIXED_NOW - timedelta(minutes=3), invocations=50, durations_ms=[9300])

    result = await lambda_metrics("api-handler", context(aws, FIXED_NOW, lambda_functions=["api-handler"]))

    assert (result.status, result.severity) == (Status.fail, "P2")
    assert "93% of 10 s" in result.summary


async def test_healthy_metrics_stay_ok_despite_a_few_errors_and_old_spikes(aws):
    create_function(aws, "api-handler", timeout=3)
    put_lambda_metrics(aws, "api-handler", FIXED_NOW - timedelta(minutes=20), invocations=400, errors=4,
                       durations_ms=[180, 900])
    # A throttle storm two hours ago is outside the window.
    put_lambda_metrics(aws, "api-handler", FIXED_NOW - timedelta(hours=2), throttles=50, durations_ms=[2999])

    result = await lambda_metrics("api-handler", context(aws, FIXED_NOW, lambda_functions=["api-handler"]))

    assert result.status == Status.ok, result.summary
    assert result.evidence["invocations"] == 400 and result.evidence["throttles"] == 0
    assert result.evidence["max_duration_ms"] == 900


# --- aws.lambda_cold_starts --------------------------------------------------------------------------------------


def put_reports(aws, function: str, now: datetime, specs: list[dict]) -> None:
    lines = [(now - timedelta(minutes=50) + timedelta(seconds=20 * i), report_line(request_id(), **spec))
             for i, spec in enumerate(specs)]
    put_log_lines(aws, f"/aws/lambda/{function}", lines)


async def test_frequent_cold_starts_warn_p2(aws):
    now = wall_clock()
    create_function(aws, "api-handler")
    put_reports(aws, "api-handler", now, [{"duration_ms": 40, "init_ms": 350 if i % 3 == 0 else None}
                                          for i in range(30)])

    result = await lambda_cold_starts("api-handler", context(aws, now, lambda_functions=["api-handler"]))

    assert (result.status, result.severity) == (Status.warn, "P2")
    assert "33% of api-handler's invocations were cold starts (10 of 30)" in result.summary
    assert result.evidence["cold_starts"] == 10


async def test_slow_init_warns_even_with_few_invocations(aws):
    now = wall_clock()
    create_function(aws, "api-handler")
    put_reports(aws, "api-handler", now, [{"duration_ms": 40, "init_ms": 2500}, {"duration_ms": 35}])

    result = await lambda_cold_starts("api-handler", context(aws, now, lambda_functions=["api-handler"]))

    assert result.status == Status.warn
    assert "up to 2500 ms of init" in result.summary
    assert result.evidence["init_ms"]["max"] == 2500.0


async def test_memory_nearly_exhausted_warns(aws):
    now = wall_clock()
    create_function(aws, "api-handler", memory=128)
    put_reports(aws, "api-handler", now, [{"duration_ms": 40, "max_memory": 125} for _ in range(3)])

    result = await lambda_cold_starts("api-handler", context(aws, now, lambda_functions=["api-handler"]))

    assert result.status == Status.warn
    assert "125 of its 128 MB" in result.summary and "--memory-size 256" in result.hint


async def test_healthy_cold_starts_are_ok_with_percentiles_in_evidence(aws):
    now = wall_clock()
    create_function(aws, "api-handler")
    specs = [{"duration_ms": 40, "max_memory": 70}] * 48 + [{"duration_ms": 60, "init_ms": 300},
                                                            {"duration_ms": 55, "init_ms": 420}]
    put_reports(aws, "api-handler", now, specs)
    put_log_lines(aws, "/aws/lambda/api-handler", [(now - timedelta(minutes=5), "INFO request served")])

    result = await lambda_cold_starts("api-handler", context(aws, now, lambda_functions=["api-handler"]))

    assert result.status == Status.ok, result.summary
    assert result.evidence["invocations"] == 50 and result.evidence["cold_start_ratio_pct"] == 4.0
    assert result.evidence["init_ms"] == {"p50": 300.0, "p95": 420.0, "max": 420.0}


async def test_json_log_format_reads_platform_report_records_from_the_configured_group(aws):
    # moto drops LoggingConfig, so the configuration comes from a Stubber; the logs are real moto logs.
    now = wall_clock()
    record = {"type": "platform.report", "record": {"requestId": "r", "metrics": {
        "durationMs": 30.0, "billedDurationMs": 31, "memorySizeMB": 256, "maxMemoryUsedMB": 250}}}
    put_log_lines(aws, "/shared/json-logs", [(now - timedelta(minutes=9), json.dumps(record)),
                                             (now - timedelta(minutes=8), '{"level":"INFO","message":"ok"}')])
    with Stubber(aws.client("lambda", REGION)) as stub:
        stub.add_response("get_function_configuration", {
            "FunctionName": "api-handler",
            "LoggingConfig": {"LogFormat": "JSON", "LogGroup": "/shared/json-logs"},
        }, {"FunctionName": "api-handler"})
        result = await lambda_cold_starts("api-handler", context(aws, now, lambda_functions=["api-handler"]))

    assert result.status == Status.warn and "250 of its 256 MB" in result.summary
    assert result.evidence["log_group"] == "/shared/json-logs" and result.evidence["invocations"] == 1


async def test_function_without_a_log_group_is_skipped_not_failed(aws):
    create_function(aws, "never-called")

    result = await lambda_cold_starts("never-called", context(aws, wall_clock(), lambda_functions=["never-called"]))

    assert result.status == Status.skipped
    assert "/aws/lambda/never-called" in result.summary


# --- aws.log_errors ----------------------------------------------------------------------------------------------


async def test_sustained_errors_fail_p1_with_signature_counts_and_context(aws):
    now = wall_clock()
    lines = []
    for i in range(12):
        at = now - timedelta(minutes=40) + timedelta(minutes=2 * i)
        lines.append((at, f"INFO GET /orders/{1000 + i}"))
        lines += [(at + timedelta(milliseconds=5), text)
                  for text in python_traceback(f"KeyError: 'customer' (order {1000 + i}, request {request_id()})")]
    lines.append((now - timedelta(minutes=30), "WARN cache miss ratio high; errors=0"))
    put_log_lines(aws, "api-prod", lines)

    result = await log_errors("api-prod", context(aws, now, log_groups=["api-prod"]))

    assert (result.status, result.severity) == (Status.fail, "P1")
    top = result.evidence["signatures"][0]
    assert top["signature"] == "KeyError: 'customer' (order <N>, request <UUID>)"
    assert top["count"] == 12 and result.evidence["signature_count"] == 1
    assert top["sample"][0].startswith("INFO GET /orders/1000") and top["sample"][1].startswith("Traceback")
    first_traceback = now - timedelta(minutes=40) + timedelta(milliseconds=5)
    assert result.evidence["first_error_at"] == first_traceback.isoformat(timespec="seconds")
    assert "12 errors in api-prod" in result.summary


async def test_a_handful_of_errors_warns_p2(aws):
    now = wall_clock()
    put_log_lines(aws, "api-prod", [(now - timedelta(minutes=m), f"ERROR upstream 502 from payments in {m * 7} ms")
                                    for m in (50, 20, 3)])

    result = await log_errors("api-prod", context(aws, now, log_groups=["api-prod"]))

    assert (result.status, result.severity) == (Status.warn, "P2")
    assert result.evidence["signatures"][0]["signature"] == "ERROR upstream <N> from payments in <N> ms"
    assert result.evidence["errors"] == 3


async def test_clean_logs_and_old_errors_stay_ok(aws):
    now = wall_clock()
    put_log_lines(aws, "api-prod", [
        (now - timedelta(hours=3), "ERROR yesterday's outage"),  # outside the hour
        (now - timedelta(minutes=30), "INFO processed 10 items, errors=0"),
        (now - timedelta(minutes=10), "INFO health check passed with no errors"),
    ])

    result = await log_errors("api-prod", context(aws, now, log_groups=["api-prod"]))

    assert result.status == Status.ok, result.summary
    assert result.evidence["events_scanned"] == 2 and result.evidence["first_error_at"] is None


async def test_errors_on_the_second_page_of_events_are_found(aws):
    now = wall_clock()
    start = now - timedelta(minutes=50)
    noise = [(start + timedelta(milliseconds=i), f"INFO tick {i}") for i in range(10_050)]
    put_log_lines(aws, "busy", [*noise, (now - timedelta(minutes=1), "ERROR disk full on /tmp")])

    result = await log_errors("busy", context(aws, now, log_groups=["busy"]))

    assert result.evidence["events_scanned"] == 10_051 and result.evidence["truncated"] is False
    assert result.evidence["signatures"][0]["signature"] == "ERROR disk full on /tmp"


async def test_missing_log_group_is_an_error_pointing_at_the_services_file(aws):
    result = await log_errors("nope", context(aws, wall_clock(), log_groups=["nope"]))

    assert result.status == Status.error
    assert "nope does not exist" in result.summary and "services file" in result.hint


# --- aws.recent_changes ------------------------------------------------------------------------------------------


def deployed_api_handler(aws) -> datetime:
    """api-handler with v1 and v2 published and alias `live` on v2; returns when moto says v2 was deployed."""
    create_function(aws, "api-handler")
    deploy_version(aws, "api-handler", "build 41")
    v2 = deploy_version(aws, "api-handler", "build 42")
    point_alias(aws, "api-handler", "live", v2["Version"])
    return parse_aws_time(v2["LastModified"])


async def test_errors_right_after_a_lambda_deploy_name_the_version_and_the_rollback(aws):
    deployed_at = deployed_api_handler(aws)
    put_log_lines(aws, "/aws/lambda/api-handler", [
        (deployed_at - timedelta(minutes=30), "INFO all good"),
        *[(deployed_at + timedelta(minutes=3, seconds=s), f"[ERROR] TypeError: bad payload {s}") for s in range(5)],
    ])
    ctx = context(aws, deployed_at + timedelta(minutes=10), lambda_functions=["api-handler"],
                  log_groups=["api-prod-never-created"])

    result = await recent_changes(REGION, ctx)

    assert (result.status, result.severity) == (Status.fail, "P1")
    assert result.evidence["log_groups_missing"] == ["api-prod-never-created"]
    assert result.summary == "Errors started 3 min after deploy of api-handler v2; rollback candidate."
    assert result.resource.endswith(":function:api-handler:2")
    assert "aws lambda update-alias --function-name api-handler --name live --function-version 1" in result.hint
    assert result.evidence["first_error_at"] == (deployed_at + timedelta(minutes=3)).isoformat(timespec="seconds")
    assert [c["name"] for c in result.evidence["changes"]] == ["api-handler v1", "api-handler v2"]


async def test_a_deploy_without_errors_after_it_is_ok_and_listed(aws):
    deployed_at = deployed_api_handler(aws)
    put_log_lines(aws, "/aws/lambda/api-handler", [(deployed_at + timedelta(minutes=m), "INFO served")
                                                   for m in range(1, 9)])
    ctx = context(aws, deployed_at + timedelta(minutes=10), lambda_functions=["api-handler"])

    result = await recent_changes(REGION, ctx)

    assert result.status == Status.ok, result.summary
    assert "no errors after them" in result.summary
    assert result.evidence["changes"][-1]["detail"] == "build 42"
    assert result.evidence["log_groups_scanned"] == ["/aws/lambda/api-handler"]


async def test_errors_that_began_before_the_deploy_do_not_blame_it(aws):
    deployed_at = deployed_api_handler(aws)
    put_log_lines(aws, "/aws/lambda/api-handler", [
        (deployed_at + timedelta(minutes=m), f"ERROR timeout calling payments after {3000 + m} ms")
        for m in range(-40, 8, 4)
    ])
    ctx = context(aws, deployed_at + timedelta(minutes=10), lambda_functions=["api-handler"])

    result = await recent_changes(REGION, ctx)

    assert result.status == Status.ok, result.summary
    assert "do not follow any of them" in result.summary


async def test_changes_older_than_a_day_are_not_reported(aws):
    deployed_at = deployed_api_handler(aws)

    result = await recent_changes(REGION, context(aws, deployed_at + timedelta(hours=25),
                                                  lambda_functions=["api-handler"]))

    assert result.status == Status.ok
    assert result.summary == "No deploys or stack updates in the last 24 h." and result.evidence["changes"] == []


async def test_errors_after_an_api_gateway_deployment_suggest_pointing_the_stage_back(aws):
    apigw = aws.client("apigateway", REGION)
    api = apigw.create_rest_api(name="orders")["id"]
    root = apigw.get_resources(restApiId=api)["items"][0]["id"]
    apigw.put_method(restApiId=api, resourceId=root, httpMethod="GET", authorizationType="NONE")
    apigw.put_integration(restApiId=api, resourceId=root, httpMethod="GET", type="MOCK")
    old = apigw.create_deployment(restApiId=api, stageName="prod", description="v1")["id"]
    new = apigw.create_deployment(restApiId=api, stageName="prod", description="v2")
    deployed_at = parse_aws_time(new["createdDate"])
    put_log_lines(aws, "API-Gateway-Execution-Logs_orders/prod", [
        (deployed_at + timedelta(minutes=7), "Execution failed due to configuration error: Invalid mapping"),
    ])
    ctx = context(aws, deployed_at + timedelta(minutes=15), api_gateways=[api],
                  log_groups=["API-Gateway-Execution-Logs_orders/prod"])

    result = await recent_changes(REGION, ctx)

    assert result.status == Status.fail
    assert result.summary.startswith(f"Errors started 7 min after deploy of API {api} deployment {new['id']} (prod)")
    assert result.resource == new["id"]
    assert f"--stage-name prod --patch-operations op=replace,path=/deploymentId,value={old}" in result.hint


async def test_errors_after_a_stack_update_blame_the_stack(aws):
    cfn = aws.client("cloudformation", REGION)
    template = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}
    stack_id = cfn.create_stack(StackName="orders", TemplateBody=json.dumps(template))["StackId"]
    template["Resources"]["Dlq"] = {"Type": "AWS::SQS::Queue"}
    cfn.update_stack(StackName="orders", TemplateBody=json.dumps(template))
    stack_events = cfn.describe_stack_events(StackName="orders")["StackEvents"]
    updated_at = max(parse_aws_time(e["Timestamp"]) for e in stack_events)
    put_log_lines(aws, "orders-app", [(updated_at + timedelta(minutes=2), "ERROR AccessDenied on sqs:SendMessage")])
    ctx = context(aws, updated_at + timedelta(minutes=5), stacks=["orders"], log_groups=["orders-app"])

    result = await recent_changes(REGION, ctx)

    assert result.status == Status.fail
    assert result.summary == "Errors started 2 min after stack orders update (UPDATE_COMPLETE); rollback candidate."
    assert result.resource == stack_id
    assert [c["kind"] for c in result.evidence["changes"]] == ["stack-update", "stack-update"]


async def test_lambda_changes_ignore_versions_before_the_window(aws):
    deployed_at = deployed_api_handler(aws)

    changes = await lambda_changes(context(aws, deployed_at, lambda_functions=["api-handler"]), "api-handler",
                                   since=deployed_at + timedelta(seconds=1))

    assert changes == []


def test_new_error_signature_right_after_a_change_is_blamed_even_with_old_noise():
    deploy = Change("lambda-version", FIXED_NOW, "api-handler v7", "arn:…:api-handler:7", "rollback")
    noise = summarise_errors(events(*[(s, "ERROR cache timeout") for s in range(-3000, 600, 300)]))
    new = summarise_errors(events((240, "ValueError: price must be positive")))
    scan = ErrorScan("g", FIXED_NOW - timedelta(hours=1), FIXED_NOW + timedelta(minutes=10), noise + new, 20, False)

    suspect = find_suspect([deploy], [scan])

    assert suspect is not None and suspect.change is deploy
    assert suspect.sentence == ("New error “ValueError: price must be positive” appeared 4 min after deploy of "
                                "api-handler v7; rollback candidate.")


@pytest.mark.parametrize("raw", ["2026-11-20T12:00:00.000+0000", "2026-11-20T12:00:00.817193000Z",
                                 datetime(2026, 11, 20, 13, 0, tzinfo=timezone(timedelta(hours=1)))])
def test_aws_time_formats_parse_to_utc(raw):
    assert parse_aws_time(raw).replace(microsecond=0) == FIXED_NOW


# --- registration ------------------------------------------------------------------------------------------------


def test_checks_are_registered_on_their_layers():
    from checks.registry import registered_checks

    layers = {name: d.layer for name, d in registered_checks().items()}

    assert layers["aws.lambda_config"] == Layer.config
    assert layers["aws.recent_changes"] == Layer.change
    assert {layers[n] for n in ("aws.lambda_metrics", "aws.lambda_cold_starts", "aws.log_errors")} == {Layer.symptom}
