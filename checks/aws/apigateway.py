"""API Gateway stages (REST `aws.api_gateways` and HTTP `aws.http_apis`): what users saw, and the settings behind it.

- `aws.api_stage_metrics` (symptom): 5XX/4XX ratios, Latency and IntegrationLatency per stage over the last hour
  (CloudWatch AWS/ApiGateway, Sum/Average/Maximum only: moto breaks on percentiles).
- `aws.api_stage_config` (config): a Lambda integration that runs longer than the integration timeout (the caller
  gets 504 while the function keeps running; REST APIs stop waiting at 29 s by default, HTTP APIs at 30 s), stage
  and method throttling against the observed peak request rate (the 429s are counted in 4XX), and stages without
  access logs.

REST and HTTP APIs differ in every name (`get_stages` vs `get_stages`, `item` vs `Items`, `ApiName` vs `ApiId`
dimensions, `5XXError` vs `5xx`); `_read_rest` and `_read_http` turn both into the same `ApiConfig`.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any

from checks.aws.clients import AwsCheckError
from checks.aws.common import Problem, aws_check, fold, function_configuration, region
from checks.aws.lambdas import metric_totals
from checks.aws.logs import WINDOW, is_not_found, iso
from checks.model import CheckResult, Status
from checks.registry import CheckContext, check
from checks.targets import Api

FIVE_XX_FAIL = 0.05
FIVE_XX_P0 = 0.50
FOUR_XX_WARN = 0.25
LATENCY_WARN_MS = 1000.0
NEAR_RATE_LIMIT = 0.80
_FUNCTION = re.compile(r":function:([^:/]+)")


@dataclass(frozen=True)
class Stage:
    name: str
    rate_limit: float | None  # requests per second for the whole stage; None when unset (account limit applies)
    method_limits: dict[str, float]  # "GET /orders" → requests per second
    access_logs: bool


@dataclass(frozen=True)
class Integration:
    route: str  # "GET /orders"
    timeout_ms: int
    function: str | None  # the Lambda behind it, when there is one


@dataclass
class ApiConfig:
    api: Api
    name: str
    region: str
    stages: list[Stage]
    integrations: list[Integration] = field(default_factory=list)


# --- reading the configuration ---------------------------------------------------------------------------------


async def read_api(ctx: CheckContext, api: Api) -> ApiConfig:
    return await (_read_rest(ctx, api) if api.kind == "REST" else _read_http(ctx, api))


async def _read_rest(ctx: CheckContext, api: Api) -> ApiConfig:
    assert ctx.aws is not None
    where = region(ctx)
    rest = await ctx.aws.call("apigateway", where, "get_rest_api", restApiId=api.id)
    stages = (await ctx.aws.call("apigateway", where, "get_stages", restApiId=api.id)).get("item", [])
    resources = await ctx.aws.paginate("apigateway", where, "get_resources", "items", restApiId=api.id,
                                       embed=["methods"])
    integrations = [
        _integration(f"{verb} {resource.get('path', '/')}", method.get("methodIntegration") or {},
                     "timeoutInMillis", "uri", 29_000)
        for resource in resources for verb, method in (resource.get("resourceMethods") or {}).items()
        if method.get("methodIntegration")
    ]
    return ApiConfig(api, rest.get("name", api.id), where, [_rest_stage(s) for s in stages], integrations)


def _rest_stage(stage: dict[str, Any]) -> Stage:
    settings = stage.get("methodSettings") or {}
    methods = {_rest_method(key): float(value["throttlingRateLimit"]) for key, value in settings.items()
               if key != "*/*" and value.get("throttlingRateLimit") is not None}
    return Stage(stage["stageName"], (settings.get("*/*") or {}).get("throttlingRateLimit"), methods,
                 bool((stage.get("accessLogSettings") or {}).get("destinationArn")))


def _rest_method(key: str) -> str:
    """methodSettings keys are `~1orders~1{id}/GET` (the path with `/` escaped as `~1`)."""
    path, _, verb = key.rpartition("/")
    return f"{verb} {path.replace('~1', '/') or '/'}"


async def _read_http(ctx: CheckContext, api: Api) -> ApiConfig:
    assert ctx.aws is not None
    where = region(ctx)
    found = await ctx.aws.call("apigatewayv2", where, "get_api", ApiId=api.id)
    stages = (await ctx.aws.call("apigatewayv2", where, "get_stages", ApiId=api.id)).get("Items", [])
    routes = (await ctx.aws.call("apigatewayv2", where, "get_routes", ApiId=api.id)).get("Items", [])
    integrations = {i["IntegrationId"]: i for i in
                    (await ctx.aws.call("apigatewayv2", where, "get_integrations", ApiId=api.id)).get("Items", [])}
    linked = [(r["RouteKey"], integrations.get((r.get("Target") or "").removeprefix("integrations/")))
              for r in routes]
    return ApiConfig(api, found.get("Name", api.id), where, [_http_stage(s) for s in stages],
                     [_integration(key, i, "TimeoutInMillis", "IntegrationUri", 30_000) for key, i in linked if i])


def _http_stage(stage: dict[str, Any]) -> Stage:
    routes = stage.get("RouteSettings") or {}
    methods = {key: float(value["ThrottlingRateLimit"]) for key, value in routes.items()
               if value.get("ThrottlingRateLimit") is not None}
    return Stage(stage["StageName"], (stage.get("DefaultRouteSettings") or {}).get("ThrottlingRateLimit"), methods,
                 bool((stage.get("AccessLogSettings") or {}).get("DestinationArn")))


def _integration(route: str, raw: dict[str, Any], timeout_key: str, uri_key: str, default_ms: int) -> Integration:
    uri = str(raw.get(uri_key) or "")
    function = _FUNCTION.search(uri) if ":lambda:" in uri else None
    return Integration(route, int(raw.get(timeout_key) or default_ms), function.group(1) if function else None)


# --- reading the metrics ---------------------------------------------------------------------------------------

# key → (REST metric name, HTTP metric name, statistic)
_METRICS = {
    "count": ("Count", "Count", "Sum"),
    "e5": ("5XXError", "5xx", "Sum"),
    "e4": ("4XXError", "4xx", "Sum"),
    "lat": ("Latency", "Latency", "Average"),
    "latmax": ("Latency", "Latency", "Maximum"),
    "intmax": ("IntegrationLatency", "IntegrationLatency", "Maximum"),
    "int": ("IntegrationLatency", "IntegrationLatency", "Average"),
}


@dataclass(frozen=True)
class StageTraffic:
    requests: int
    peak_rps: float  # the busiest minute's requests per second
    errors_5xx: int
    errors_4xx: int
    latency_avg_ms: float | None
    latency_max_ms: float | None
    integration_avg_ms: float | None
    integration_max_ms: float | None

    def ratio(self, errors: int) -> float:
        return errors / self.requests if self.requests else 0.0


async def stage_traffic(ctx: CheckContext, config: ApiConfig) -> dict[str, StageTraffic]:
    """Per stage, from one get_metric_data call at one-minute periods over the last hour."""
    assert ctx.aws is not None
    queries = [_query(config, index, stage, key) for index, stage in enumerate(config.stages) for key in _METRICS]
    if not queries:
        return {}
    results = await ctx.aws.paginate("cloudwatch", region(ctx), "get_metric_data", "MetricDataResults",
                                     MetricDataQueries=queries, StartTime=ctx.now - WINDOW, EndTime=ctx.now)
    values: dict[str, list[float]] = {}
    for result in results:
        values.setdefault(result["Id"], []).extend(float(v) for v in result.get("Values", []))
    return {stage.name: _traffic(values, index) for index, stage in enumerate(config.stages)}


def _query(config: ApiConfig, index: int, stage: Stage, key: str) -> dict[str, Any]:
    rest, http, stat = _METRICS[key]
    api_dimension = ({"Name": "ApiName", "Value": config.name} if config.api.kind == "REST"
                     else {"Name": "ApiId", "Value": config.api.id})
    metric = {"Namespace": "AWS/ApiGateway", "MetricName": rest if config.api.kind == "REST" else http,
              "Dimensions": [api_dimension, {"Name": "Stage", "Value": stage.name}]}
    return {"Id": f"s{index}_{key}", "MetricStat": {"Metric": metric, "Period": 60, "Stat": stat}, "ReturnData": True}


def _traffic(values: dict[str, list[float]], index: int) -> StageTraffic:
    def series(key: str) -> list[float]:
        return values.get(f"s{index}_{key}", [])

    def mean(key: str) -> float | None:
        return round(sum(series(key)) / len(series(key)), 1) if series(key) else None

    return StageTraffic(
        requests=int(sum(series("count"))), peak_rps=round(max(series("count"), default=0.0) / 60, 2),
        errors_5xx=int(sum(series("e5"))), errors_4xx=int(sum(series("e4"))),
        latency_avg_ms=mean("lat"), latency_max_ms=max(series("latmax"), default=None),
        integration_avg_ms=mean("int"), integration_max_ms=max(series("intmax"), default=None),
    )


# --- aws.api_stage_metrics -------------------------------------------------------------------------------------


@check("aws.api_stage_metrics", timeout_s=20)
@aws_check
async def api_stage_metrics(api: Api, ctx: CheckContext) -> CheckResult:
    """API Gateway 5XX/4XX ratios, Latency and IntegrationLatency per stage over the last hour."""
    config = await read_api(ctx, api)
    traffic = await stage_traffic(ctx, config)
    rows = [_traffic_row(name, t) for name, t in traffic.items()]
    problems = [p for name, t in traffic.items() for p in _traffic_problems(config, name, t)]
    total = sum(t.requests for t in traffic.values())
    ok = f"{config.name} ({api}): {total} requests in the last hour over {len(traffic)} stage(s), error ratios normal."
    evidence = {"api_name": config.name, "window_start": iso(ctx.now - WINDOW), "window_end": iso(ctx.now),
                "stages": rows}
    return fold(problems, ok=ok, resource=str(api), evidence=evidence)


def _traffic_row(name: str, t: StageTraffic) -> dict[str, Any]:
    return {"stage": name, "requests": t.requests, "peak_rps": t.peak_rps, "5xx": t.errors_5xx,
            "5xx_pct": round(t.ratio(t.errors_5xx) * 100, 1), "4xx": t.errors_4xx,
            "4xx_pct": round(t.ratio(t.errors_4xx) * 100, 1), "latency_avg_ms": t.latency_avg_ms,
            "latency_max_ms": t.latency_max_ms, "integration_avg_ms": t.integration_avg_ms,
            "integration_max_ms": t.integration_max_ms}


def _traffic_problems(config: ApiConfig, stage: str, t: StageTraffic) -> list[Problem]:
    where = f"{config.name} stage {stage}"
    problems = []
    five = t.ratio(t.errors_5xx)
    if five > FIVE_XX_FAIL:
        problems.append(Problem(
            Status.fail, "P0" if five >= FIVE_XX_P0 else "P1",
            f"{five:.0%} of {where}'s requests failed with 5XX ({t.errors_5xx} of {t.requests}){_slow_part(t)}.",
            "aws.api_stage_config compares the integration timeout with the backing Lambda; aws.xray_traces names "
            "the dependency that faulted.",
        ))
    if t.ratio(t.errors_4xx) > FOUR_XX_WARN:
        problems.append(Problem(
            Status.warn, "P2",
            f"{t.ratio(t.errors_4xx):.0%} of {where}'s requests got 4XX ({t.errors_4xx} of {t.requests}).",
            "429s count as 4XX: aws.api_stage_config compares the throttling limits with the request rate; "
            "otherwise look for auth or request-validation failures in the access logs.",
        ))
    if t.latency_avg_ms is not None and t.latency_avg_ms > LATENCY_WARN_MS:
        problems.append(Problem(
            Status.warn, "P2", f"{where} answers slowly: {t.latency_avg_ms:.0f} ms on average{_slow_part(t)}.",
            "When the integration takes most of the time, look at the backend; otherwise at authorizers and "
            "mapping templates.",
        ))
    return problems


def _slow_part(t: StageTraffic) -> str:
    if t.latency_avg_ms is None or t.integration_avg_ms is None:
        return ""
    return f"; the integration takes {t.integration_avg_ms:.0f} of {t.latency_avg_ms:.0f} ms on average"


# --- aws.api_stage_config --------------------------------------------------------------------------------------


@check("aws.api_stage_config", timeout_s=25)
@aws_check
async def api_stage_config(api: Api, ctx: CheckContext) -> CheckResult:
    """API Gateway integration timeouts against the backing Lambda, throttling against the request rate, access
    logs."""
    config = await read_api(ctx, api)
    traffic = await stage_traffic(ctx, config)
    lambdas = await _lambda_facts(ctx, config)
    problems = [
        *(p for i in config.integrations for p in _timeout_problems(config, i, lambdas.get(i.function or ""))),
        *(p for s in config.stages for p in _throttle_problems(config, s, traffic.get(s.name))),
        *(p for s in config.stages for p in _access_log_problems(config, s)),
    ]
    evidence = {
        "api_name": config.name,
        "stages": [{"stage": s.name, "rate_limit": s.rate_limit, "method_limits": len(s.method_limits),
                    "access_logs": s.access_logs,
                    "peak_rps": traffic[s.name].peak_rps if s.name in traffic else None} for s in config.stages],
        "integrations": [{"route": i.route, "timeout_ms": i.timeout_ms, "function": i.function,
                          **lambdas.get(i.function or "", {})} for i in config.integrations],
    }
    ok = (f"{config.name} ({api}): {len(config.integrations)} integration(s) finish within their timeouts, "
          "throttling above the observed rate, access logs on.")
    return fold(problems, ok=ok, resource=str(api), evidence=evidence)


async def _lambda_facts(ctx: CheckContext, config: ApiConfig) -> dict[str, dict[str, Any]]:
    """Per backing function: its timeout and the hour's longest invocation (the calls aws.lambda_* make too)."""
    functions = list(dict.fromkeys(i.function for i in config.integrations if i.function))
    found = await asyncio.gather(*(_lambda_fact(ctx, f) for f in functions))
    return dict(zip(functions, found, strict=True))


async def _lambda_fact(ctx: CheckContext, function: str) -> dict[str, Any]:
    try:
        lambda_config = await function_configuration(ctx, function)
    except AwsCheckError as exc:
        if is_not_found(exc):
            return {"lambda_missing": True}
        raise
    totals = await metric_totals(ctx, function)
    return {"lambda_timeout_ms": float(lambda_config.get("Timeout") or 3) * 1000,
            "lambda_max_duration_ms": totals["duration"]}


def _timeout_problems(config: ApiConfig, integration: Integration, facts: dict[str, Any] | None) -> list[Problem]:
    if not facts:
        return []
    limit, function = integration.timeout_ms, integration.function
    if facts.get("lambda_missing"):
        return [Problem(
            Status.fail, "P1",
            f"{integration.route} on {config.name} calls Lambda {function}, which does not exist in {config.region}: "
            "every call fails with 5XX.",
            f"Point the integration at the function's current name, or redeploy {function}.",
        )]
    longest, timeout = facts["lambda_max_duration_ms"], facts["lambda_timeout_ms"]
    if longest is not None and longest >= limit:
        return [Problem(
            Status.fail, "P1",
            f"{integration.route} on {config.name} waits at most {limit / 1000:g} s for Lambda {function}, which ran "
            f"up to {longest / 1000:.1f} s in the last hour: callers got 504 while it kept running.",
            f"Make {function} answer within {limit / 1000:g} s (hand slow work to a queue, fix the slow downstream) "
            f"and set its timeout below {limit / 1000:g} s so a stuck call fails visibly.",
        )]
    if timeout > limit:
        return [Problem(
            Status.warn, "P3",
            f"Lambda {function} may run {timeout / 1000:g} s but {integration.route} on {config.name} stops waiting "
            f"after {limit / 1000:g} s: a slow invocation would be a 504.",
            f"Lower {function}'s timeout to under {limit / 1000:g} s.",
        )]
    return []


def _throttle_problems(config: ApiConfig, stage: Stage, traffic: StageTraffic | None) -> list[Problem]:
    peak = traffic.peak_rps if traffic else 0.0
    rejected = traffic.errors_4xx if traffic else 0
    limits = ([("stage " + stage.name, stage.rate_limit)] if stage.rate_limit is not None else [])
    limits += [(f"{route} in stage {stage.name}", rate) for route, rate in sorted(stage.method_limits.items())]
    return [_throttled(config, stage, where, rate, peak, rejected) for where, rate in limits
            if rate == 0 or peak >= NEAR_RATE_LIMIT * rate]


def _throttled(config: ApiConfig, stage: Stage, where: str, rate: float, peak: float, rejected: int) -> Problem:
    hint = (f"Raise the limit of {where} above the peak (update-stage on {config.api}), or find the client "
            "that suddenly sends more.")
    if rate == 0:
        return Problem(Status.fail, "P1", f"{where} of {config.name} is throttled to 0 req/s: every call gets 429.",
                       hint)
    if rejected and peak >= rate:
        return Problem(Status.fail, "P1",
                       f"{where} of {config.name} is throttled: the busiest minute averaged {peak:g} req/s against a "
                       f"limit of {rate:g} req/s, and {rejected} requests got 4XX (429 Too Many Requests).", hint)
    return Problem(Status.warn, "P2",
                   f"{where} of {config.name} runs near its throttling limit: {peak:g} of {rate:g} req/s at peak.",
                   hint)


def _access_log_problems(config: ApiConfig, stage: Stage) -> list[Problem]:
    if stage.access_logs:
        return []
    command = ("apigateway update-stage --rest-api-id {id} --stage-name {stage} --patch-operations "
               "op=replace,path=/accessLogSettings/destinationArn,value=<log group ARN>" if config.api.kind == "REST"
               else "apigatewayv2 update-stage --api-id {id} --stage-name {stage} --access-log-settings ...")
    return [Problem(
        Status.warn, "P3",
        f"Stage {stage.name} of {config.name} writes no access logs: this incident's 4XX/5XX leave no per-request "
        "record.",
        f"Turn them on: `aws {command.format(id=config.api.id, stage=stage.name)}`.",
    )]
