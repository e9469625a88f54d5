"""Lambda functions: configuration that breaks invocations, the hour's metrics, and cold starts from REPORT lines.

- `aws.lambda_config` (config): reserved concurrency 0, deprecated runtime, an SQS trigger that feeds itself.
- `aws.lambda_metrics` (symptom): throttles, error rate, durations near the timeout (CloudWatch Sum/Maximum only;
  ratios are computed here because moto breaks on percentiles and metric math).
- `aws.lambda_cold_starts` (symptom): cold-start ratio, init time and memory headroom from the REPORT lines. Init
  duration is not a CloudWatch AWS/Lambda metric; it exists only in those lines (or Lambda Insights).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from checks.aws.clients import AwsCheckError
from checks.aws.common import Problem, aws_check, error_result, fold, function_configuration, region
from checks.aws.fixes.lambda_concurrency import lift_offer
from checks.aws.logs import (
    WINDOW,
    ReportLine,
    is_not_found,
    iso,
    parse_report_line,
    percentile,
    read_events,
)
from checks.aws.series import first_breach, minutes_by_id, ratio_points
from checks.model import CheckResult, Series, Status
from checks.registry import CheckContext, check
from checks.schema import replace

# When AWS stops applying security patches to a runtime ("Deprecation date" in
# https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html, as published in November 2026). Functions keep
# running afterwards, but creating and later updating them is blocked. Review this table when AWS announces dates.
DEPRECATED_RUNTIMES: dict[str, date] = {
    "python2.7": date(2021, 7, 15),
    "python3.6": date(2022, 7, 18),
    "python3.7": date(2023, 12, 4),
    "python3.8": date(2024, 10, 14),
    "python3.9": date(2025, 12, 15),
    "python3.10": date(2026, 6, 30),
    "python3.11": date(2026, 6, 30),
    "python3.12": date(2028, 10, 31),
    "python3.13": date(2029, 6, 30),
    "nodejs": date(2016, 10, 31),
    "nodejs4.3": date(2020, 3, 5),
    "nodejs6.10": date(2019, 8, 12),
    "nodejs8.10": date(2020, 3, 6),
    "nodejs10.x": date(2021, 7, 30),
    "nodejs12.x": date(2023, 3, 31),
    "nodejs14.x": date(2023, 12, 4),
    "nodejs16.x": date(2024, 6, 12),
    "nodejs18.x": date(2025, 9, 1),
    "nodejs20.x": date(2026, 4, 30),
    "nodejs22.x": date(2027, 4, 30),
    "java8": date(2024, 1, 8),
    "java8.al2": date(2026, 6, 30),
    "java11": date(2026, 6, 30),
    "java17": date(2026, 6, 30),
    "dotnetcore2.1": date(2022, 1, 5),
    "dotnetcore3.1": date(2023, 4, 3),
    "dotnet5.0": date(2022, 5, 10),
    "dotnet6": date(2024, 11, 12),
    "dotnet7": date(2024, 5, 14),
    "dotnet8": date(2026, 11, 10),
    "ruby2.5": date(2021, 7, 30),
    "ruby2.7": date(2023, 11, 27),
    "ruby3.2": date(2026, 3, 31),
    "ruby3.3": date(2027, 3, 31),
    "go1.x": date(2024, 1, 8),
    "provided": date(2024, 1, 8),
    "provided.al2": date(2026, 6, 30),
}
UPCOMING_DEPRECATION = timedelta(days=90)  # reported in evidence only: not worth a line during an incident

ERROR_RATE_FAIL = 0.05
NEAR_TIMEOUT = 0.90
AT_TIMEOUT = 0.99  # a max Duration this close to the limit means invocations were cut off
COLD_RATIO_WARN = 0.10
COLD_MIN_INVOCATIONS = 20  # below this a ratio says more about traffic than about cold starts
INIT_WARN_MS = 1000.0
MEMORY_WARN = 0.95


# --- aws.lambda_config -----------------------------------------------------------------------------------------


@check("aws.lambda_config", timeout_s=20)
@aws_check
async def lambda_config(function: str, ctx: CheckContext) -> CheckResult:
    """Lambda configuration: reserved concurrency 0, deprecated runtime, an SQS trigger feeding itself."""
    assert ctx.aws is not None
    where = region(ctx)
    config = await function_configuration(ctx, function)
    concurrency = await ctx.aws.call("lambda", where, "get_function_concurrency", FunctionName=function)
    mappings = await ctx.aws.paginate(
        "lambda", where, "list_event_source_mappings", "EventSourceMappings", FunctionName=function
    )
    reserved = concurrency.get("ReservedConcurrentExecutions")
    runtime = config.get("Runtime")
    deprecation = DEPRECATED_RUNTIMES.get(runtime or "")
    env = (config.get("Environment") or {}).get("Variables") or {}
    problems = [
        *_concurrency_problems(function, reserved, where),
        *_runtime_problems(function, runtime, deprecation, ctx.now.date()),
        *_loop_problems(function, mappings, env),
        *_disabled_trigger_problems(function, mappings),
    ]
    evidence = {
        "function_arn": config.get("FunctionArn"),
        "runtime": runtime,
        "runtime_deprecation_date": deprecation.isoformat() if deprecation else None,
        "runtime_deprecation_upcoming": bool(
            deprecation and ctx.now.date() < deprecation <= ctx.now.date() + UPCOMING_DEPRECATION
        ),
        "package_type": config.get("PackageType"),
        "timeout_s": config.get("Timeout"),
        "memory_mb": config.get("MemorySize"),
        "reserved_concurrency": reserved,
        "last_modified": config.get("LastModified"),
        "event_sources": [_mapping_evidence(m) for m in mappings],
    }
    concurrency_text = "unreserved concurrency" if reserved is None else f"reserved concurrency {reserved}"
    ok = (
        f"{function}: {runtime or config.get('PackageType', 'image')}, {config.get('MemorySize')} MB, "
        f"{config.get('Timeout')} s timeout, {concurrency_text}, {len(mappings)} event source(s)."
    )
    return fold(problems, ok=ok, resource=config.get("FunctionArn") or function, evidence=evidence)


def _concurrency_problems(function: str, reserved: int | None, where: str) -> list[Problem]:
    if reserved != 0:
        return []
    return [
        Problem(
            Status.fail,
            "P0",
            f"{function} has reserved concurrency 0: every invocation is throttled.",
            f"Remove the limit: `aws lambda delete-function-concurrency --function-name {function}` "
            "(or put a positive value back).",
            (lift_offer(function, where),),
        )
    ]


def _runtime_problems(function: str, runtime: str | None, deprecation: date | None, today: date) -> list[Problem]:
    if not runtime or not deprecation or deprecation > today:
        return []
    return [
        Problem(
            Status.warn,
            "P3",
            f"{function} runs on {runtime}, deprecated since {deprecation:%Y-%m-%d}: it gets no security patches "
            "and AWS will block updates to it.",
            f"Plan a move from {runtime} to a supported runtime (not during the incident).",
        )
    ]


def _queue_refs(arn: str) -> list[str]:
    """Ways an environment variable can name the SQS queue `arn`: the ARN itself and its URL path."""
    parts = arn.split(":")  # arn:aws:sqs:region:account:name
    return [arn, f"/{parts[4]}/{parts[5]}"] if len(parts) == 6 else [arn]


def _loop_problems(function: str, mappings: list[dict[str, Any]], env: dict[str, str]) -> list[Problem]:
    problems = []
    for mapping in mappings:
        source = mapping.get("EventSourceArn") or ""
        if not source.startswith("arn:aws:sqs:") or mapping.get("State") not in ("Enabled", "Enabling", None):
            continue
        queue = source.rsplit(":", 1)[-1]
        refs = _queue_refs(source)
        names = [k for k, v in env.items() if v == queue or any(v == r or v.endswith(r) for r in refs)]
        if names:
            problems.append(
                Problem(
                    Status.fail,
                    "P1",
                    f"{function} is triggered by queue {queue} and its environment ({', '.join(sorted(names))}) "
                    "points back at the same queue: a message loop that never drains.",
                    f"Disable the trigger (`aws lambda update-event-source-mapping --uuid {mapping.get('UUID')} "
                    "--no-enabled`) and point the function's output at a different queue.",
                )
            )
    return problems


def _disabled_trigger_problems(function: str, mappings: list[dict[str, Any]]) -> list[Problem]:
    return [
        Problem(
            Status.warn,
            "P2",
            f"The trigger from {(m.get('EventSourceArn') or '?').rsplit(':', 1)[-1]} to {function} is disabled: "
            "its events are not being processed.",
            f"If that is not intended: `aws lambda update-event-source-mapping --uuid {m.get('UUID')} --enabled`.",
        )
        for m in mappings
        if m.get("State") == "Disabled"
    ]


def _mapping_evidence(mapping: dict[str, Any]) -> dict[str, Any]:
    return {
        "uuid": mapping.get("UUID"),
        "source": mapping.get("EventSourceArn"),
        "state": mapping.get("State"),
        "last_processing_result": mapping.get("LastProcessingResult"),
    }


# --- aws.lambda_metrics ----------------------------------------------------------------------------------------

_METRICS = {"errors": ("Errors", "Sum"), "throttles": ("Throttles", "Sum"), "invocations": ("Invocations", "Sum"),
            "duration": ("Duration", "Maximum")}


@check("aws.lambda_metrics", timeout_s=20)
@aws_check
async def lambda_metrics(function: str, ctx: CheckContext) -> CheckResult:
    """Lambda errors, throttles and durations near the timeout over the last hour (CloudWatch AWS/Lambda)."""
    config = await function_configuration(ctx, function)
    totals = await metric_totals(ctx, function)
    timeout_ms = float(config.get("Timeout") or 3) * 1000
    invocations, errors, throttles = totals["invocations"], totals["errors"], totals["throttles"]
    max_duration = totals["duration"]
    error_rate = errors / invocations if invocations else 0.0
    evidence = {
        "window_start": iso(ctx.now - WINDOW),
        "window_end": iso(ctx.now),
        "invocations": int(invocations),
        "errors": int(errors),
        "throttles": int(throttles),
        "error_rate_pct": round(error_rate * 100, 2),
        "max_duration_ms": max_duration,
        "timeout_ms": timeout_ms,
        "max_duration_of_timeout_pct": round(max_duration / timeout_ms * 100, 1) if max_duration else None,
    }
    problems = []
    if throttles > 0:
        problems.append(Problem(
            Status.fail, "P1",
            f"{function} was throttled {int(throttles)} times in the last hour.",
            "Look for a low reserved concurrency (aws.lambda_config) or an exhausted account concurrency quota.",
        ))
    if invocations and error_rate > ERROR_RATE_FAIL:
        problems.append(Problem(
            Status.fail, "P1",
            f"{error_rate:.0%} of {function}'s invocations failed ({int(errors)} of {int(invocations)}).",
            f"Read aws.log_errors for /aws/lambda/{function}; aws.recent_changes shows a deploy just before "
            "the errors began.",
        ))
    if max_duration is not None and max_duration >= NEAR_TIMEOUT * timeout_ms:
        problems.append(_timeout_problem(function, max_duration, timeout_ms))
    ok = (
        f"{function}: {int(invocations)} invocations in the last hour, {int(errors)} errors, no throttles"
        + (f", max duration {max_duration:.0f} ms of {timeout_ms:.0f} ms." if max_duration is not None else ".")
    )
    result = fold(problems, ok=ok, resource=config.get("FunctionArn") or function, evidence=evidence)
    return replace(result, series=_lambda_series(totals["minutes"], throttles > 0)) if problems \
        else result


def _lambda_series(minutes: dict[str, dict[Any, float]], throttled: bool) -> Series:
    """Throttles when there were any (the more specific cause), else the error rate, per minute."""
    if throttled:
        points = sorted(minutes["throttles"].items())
        return Series(metric="Lambda throttles per minute", unit="count", points=points, threshold=0.0,
                      markers=first_breach(points, 0, "first throttle"))
    points = ratio_points([minutes["errors"]], minutes["invocations"])
    return Series(metric="Lambda error rate per minute", unit="%", points=points, threshold=100 * ERROR_RATE_FAIL,
                  markers=first_breach(points, 100 * ERROR_RATE_FAIL, "first minute over 5 %"))


def _timeout_problem(function: str, max_duration: float, timeout_ms: float) -> Problem:
    hint = ("Look for a slow downstream call (database, HTTP API) in the function's logs; raise the timeout only "
            "if the work really needs it.")
    if max_duration >= AT_TIMEOUT * timeout_ms:
        return Problem(
            Status.fail, "P1",
            f"{function}'s invocations are timing out: max duration {max_duration:.0f} ms hits the "
            f"{timeout_ms / 1000:g} s timeout.",
            hint,
        )
    return Problem(
        Status.fail, "P2",
        f"{function}'s invocations run close to the timeout: max duration {max_duration:.0f} ms is "
        f"{max_duration / timeout_ms:.0%} of {timeout_ms / 1000:g} s.",
        hint,
    )


async def metric_totals(ctx: CheckContext, function: str) -> dict[str, Any]:
    """Sums (and the max of Duration) over the last hour from one get_metric_data call, at one-minute periods."""
    assert ctx.aws is not None
    dimensions = [{"Name": "FunctionName", "Value": function}]
    queries = [
        {
            "Id": key,
            "MetricStat": {
                "Metric": {"Namespace": "AWS/Lambda", "MetricName": name, "Dimensions": dimensions},
                "Period": 60,
                "Stat": stat,
            },
            "ReturnData": True,
        }
        for key, (name, stat) in _METRICS.items()
    ]
    results = await ctx.aws.paginate(
        "cloudwatch", region(ctx), "get_metric_data", "MetricDataResults",
        MetricDataQueries=queries, StartTime=ctx.now - WINDOW, EndTime=ctx.now,
    )
    minutes = minutes_by_id(results)
    values = {key: list(minutes.get(key, {}).values()) for key in _METRICS}
    totals: dict[str, Any] = {key: sum(values[key]) for key in ("errors", "throttles", "invocations")}
    totals["duration"] = max(values["duration"], default=None)
    totals["minutes"] = {key: minutes.get(key, {}) for key in _METRICS}
    return totals


# --- aws.lambda_cold_starts ------------------------------------------------------------------------------------


@check("aws.lambda_cold_starts", timeout_s=30)
@aws_check
async def lambda_cold_starts(function: str, ctx: CheckContext) -> CheckResult:
    """Cold starts, init time and memory headroom over the last hour, from the function's REPORT log lines."""
    config = await function_configuration(ctx, function)
    logging = config.get("LoggingConfig") or {}
    log_group = logging.get("LogGroup") or f"/aws/lambda/{function}"
    json_format = logging.get("LogFormat") == "JSON"
    try:
        batch = await read_events(
            ctx, log_group, ctx.now - WINDOW, ctx.now, pattern='"platform.report"' if json_format else "REPORT"
        )
    except AwsCheckError as exc:
        if not is_not_found(exc):
            return replace(error_result(exc), resource=log_group)
        return CheckResult(
            status=Status.skipped,
            summary=f"{function} has no log group {log_group} yet: it has never been invoked (or cannot write logs).",
            resource=log_group,
        )
    reports = [r for r in (parse_report_line(e.get("message", "")) for e in batch.events) if r]
    if not reports:
        return CheckResult(
            status=Status.skipped,
            summary=f"{function} logged no invocations in the last hour: nothing to measure.",
            resource=log_group,
            evidence={"log_group": log_group, "invocations": 0},
        )
    return cold_start_result(function, log_group, reports, truncated=batch.truncated)


def cold_start_result(
    function: str, log_group: str, reports: list[ReportLine], *, truncated: bool = False
) -> CheckResult:
    inits = [r.init_ms for r in reports if r.init_ms is not None]
    memory = [(r.max_memory_used_mb, r.memory_size_mb) for r in reports if r.max_memory_used_mb and r.memory_size_mb]
    peak_used, size = max(memory, default=(None, None), key=lambda m: m[0] / m[1])
    evidence = _cold_start_evidence(log_group, reports, inits, peak_used, size) | {"truncated": truncated}
    problems = _cold_start_problems(function, len(reports), inits) + _memory_problems(function, peak_used, size)
    ok = (
        f"{function}: {len(inits)} cold starts in {len(reports)} invocations"
        + (f", max init {max(inits):.0f} ms" if inits else "")
        + (f", peak memory {peak_used} of {size} MB." if peak_used else ".")
    )
    return fold(problems, ok=ok, resource=log_group, evidence=evidence)


def _cold_start_evidence(log_group: str, reports: list[ReportLine], inits: list[float], peak_used: int | None,
                         size: int | None) -> dict[str, Any]:
    return {
        "log_group": log_group,
        "invocations": len(reports),
        "cold_starts": len(inits),
        "cold_start_ratio_pct": round(len(inits) / len(reports) * 100, 1),
        "init_ms": {"p50": percentile(inits, 50), "p95": percentile(inits, 95), "max": max(inits, default=None)},
        "max_memory_used_mb": peak_used,
        "memory_size_mb": size,
        "timeouts": sum(1 for r in reports if (r.status or "").lower() == "timeout"),
    }


def _cold_start_problems(function: str, invocations: int, inits: list[float]) -> list[Problem]:
    ratio = len(inits) / invocations
    problems = []
    if invocations >= COLD_MIN_INVOCATIONS and ratio > COLD_RATIO_WARN:
        problems.append(Problem(
            Status.warn, "P2",
            f"{ratio:.0%} of {function}'s invocations were cold starts ({len(inits)} of {invocations}).",
            "Bursty traffic or frequent deploys cause cold starts; provisioned concurrency or a smaller package helps.",
        ))
    if inits and max(inits) > INIT_WARN_MS:
        problems.append(Problem(
            Status.warn, "P2",
            f"{function}'s cold starts take up to {max(inits):.0f} ms of init (p50 {percentile(inits, 50):.0f} ms).",
            "Move slow set-up out of module import (lazy clients, fewer dependencies) or use provisioned concurrency.",
        ))
    return problems


def _memory_problems(function: str, peak_used: int | None, size: int | None) -> list[Problem]:
    if not (peak_used and size and peak_used / size >= MEMORY_WARN):
        return []
    return [Problem(
        Status.warn, "P2",
        f"{function} used up to {peak_used} of its {size} MB ({peak_used / size:.0%}): close to running out.",
        f"Raise the memory: `aws lambda update-function-configuration --function-name {function} "
        f"--memory-size {size * 2}`.",
    )]

