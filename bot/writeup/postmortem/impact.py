"""Impact in numbers: the services' own CloudWatch metrics over the incident window, with the peak minute.

Only what the services file names is measured (nothing is guessed from a service's name):

    aws.load_balancers    AWS/ApplicationELB  RequestCount, HTTPCode_ELB_5XX_Count, HTTPCode_Target_5XX_Count
    aws.api_gateways      AWS/ApiGateway      Count, 5XXError (by ApiName, read from the REST API id)
    aws.lambda_functions  AWS/Lambda          Invocations, Errors, Throttles
    aws.queues            AWS/SQS             ApproximateNumberOfMessagesVisible of each queue's dead-letter queue
                                              (Maximum: a depth, not a count of events)

Each figure says where it came from (namespace, metric, statistic, period). A service without such resources, a
metric without data points in the window, or CloudWatch refusing (permissions, throttling, a timeout) gives no
number but a sentence saying why — never a made-up one. One `get_metric_data` call per region and service, with
the AWS clients' own timeouts and bounded retries, and the whole measurement under IMPACT_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MAX_POINTS = 1440  # CloudWatch returns at most this many points per query and call page: widen the period beyond
IMPACT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class MetricSpec:
    """One metric to read for one kind of resource."""

    label: str  # what the number means, in the postmortem's words
    namespace: str
    metric: str
    stat: str = "Sum"


LB_METRICS = (MetricSpec("requests at the load balancer", "AWS/ApplicationELB", "RequestCount"),
              MetricSpec("5xx from the load balancer", "AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count"),
              MetricSpec("5xx from the targets", "AWS/ApplicationELB", "HTTPCode_Target_5XX_Count"))
API_METRICS = (MetricSpec("API requests", "AWS/ApiGateway", "Count"),
               MetricSpec("API 5xx", "AWS/ApiGateway", "5XXError"))
LAMBDA_METRICS = (MetricSpec("Lambda invocations", "AWS/Lambda", "Invocations"),
                  MetricSpec("Lambda errors", "AWS/Lambda", "Errors"),
                  MetricSpec("Lambda throttles", "AWS/Lambda", "Throttles"))
DLQ_METRICS = (MetricSpec("messages in the dead-letter queue (deepest)", "AWS/SQS",
                          "ApproximateNumberOfMessagesVisible", "Maximum"),)


@dataclass
class ImpactFigure:
    label: str
    resource: str
    total: float | None  # Sum over the window; for a Maximum metric the highest value
    peak: float | None
    peak_at: float | None  # start of the peak period (epoch seconds)
    source: str  # "CloudWatch AWS/Lambda Errors (Sum per 1 min)"
    note: str = ""  # why there is no number
    points: list[tuple[float, float]] = field(default_factory=list)  # (period start, value), for the chart


@dataclass
class Impact:
    start: float
    end: float
    start_from: str  # which start the window counts from
    figures: list[ImpactFigure] = field(default_factory=list)
    unknown: str = ""  # why nothing could be measured at all

    @property
    def measured(self) -> list[ImpactFigure]:
        return [f for f in self.figures if f.total is not None]


@dataclass(frozen=True)
class _Query:
    spec: MetricSpec
    resource: str
    dimensions: tuple[tuple[str, str], ...]


def period_for(start: float, end: float) -> int:
    """One minute, or the smallest whole number of minutes that keeps the window under MAX_POINTS points."""
    minutes = math.ceil(max(end - start, 60.0) / 60.0 / MAX_POINTS)
    return 60 * max(minutes, 1)


async def measure_impact(aws: Any, service: Any, start: float, end: float, start_from: str) -> Impact:
    """The impact figures of one service (a ServiceSpec) between `start` and `end`."""
    impact = Impact(start, end, start_from)
    spec = getattr(service, "aws", None) if service is not None else None
    if spec is None:
        impact.unknown = "the services file names no AWS resources for this service, so no metric was read"
        return impact
    try:
        impact.figures = await asyncio.wait_for(_figures(aws, spec, start, end), IMPACT_TIMEOUT_S)
    except TimeoutError:
        impact.unknown = f"CloudWatch did not answer within {IMPACT_TIMEOUT_S:.0f} s"
    except Exception as exc:  # AwsCheckError and friends: a plain sentence, no number
        impact.unknown = f"CloudWatch could not be read: {str(exc)[:200]}"
    if not impact.figures and not impact.unknown:
        impact.unknown = ("the services file names no load balancer, API, Lambda function or queue for this "
                          "service")
    return impact


async def _figures(aws: Any, spec: Any, start: float, end: float) -> list[ImpactFigure]:
    queries = await _queries(aws, spec)
    if not queries:
        return []
    period = period_for(start, end)
    values = await _read(aws, spec.region, queries, start, end, period)
    return [_figure(q, values.get(i, []), period) for i, q in enumerate(queries)]


async def _queries(aws: Any, spec: Any) -> list[_Query]:
    out: list[_Query] = []
    for lb in spec.load_balancers:
        dim = await _lb_dimension(aws, spec.region, lb)
        out += [_Query(m, lb, (("LoadBalancer", dim),)) for m in LB_METRICS]
    for api_id in spec.api_gateways:
        name = str((await aws.call("apigateway", spec.region, "get_rest_api", restApiId=api_id)).get("name"))
        out += [_Query(m, name, (("ApiName", name),)) for m in API_METRICS]
    for fn in spec.lambda_functions:
        out += [_Query(m, fn, (("FunctionName", fn),)) for m in LAMBDA_METRICS]
    for queue in spec.queues:
        dlq = await _dead_letter_queue(aws, spec.region, queue)
        if dlq:
            out += [_Query(m, dlq, (("QueueName", dlq),)) for m in DLQ_METRICS]
    return out


async def _lb_dimension(aws: Any, region: str, ref: str) -> str:
    """CloudWatch names an ALB `app/<name>/<id>`: the tail of its ARN."""
    params = {"LoadBalancerArns": [ref]} if ref.startswith("arn:") else {"Names": [ref]}
    found = await aws.call("elbv2", region, "describe_load_balancers", **params)
    arn = str(found["LoadBalancers"][0]["LoadBalancerArn"])
    return arn.split(":loadbalancer/", 1)[-1]


async def _dead_letter_queue(aws: Any, region: str, queue: str) -> str | None:
    url = queue if queue.startswith("https://") else \
        str((await aws.call("sqs", region, "get_queue_url", QueueName=queue))["QueueUrl"])
    attrs = await aws.call("sqs", region, "get_queue_attributes", QueueUrl=url, AttributeNames=["RedrivePolicy"])
    redrive = (attrs.get("Attributes") or {}).get("RedrivePolicy")
    if not redrive:
        return None
    return str(json.loads(redrive)["deadLetterTargetArn"]).rsplit(":", 1)[-1]


async def _read(aws: Any, region: str, queries: list[_Query], start: float, end: float,
                period: int) -> dict[int, list[tuple[float, float]]]:
    """(time, value) points per query index, pages merged."""
    body = [{"Id": f"q{i}", "ReturnData": True,
             "MetricStat": {"Metric": {"Namespace": q.spec.namespace, "MetricName": q.spec.metric,
                                       "Dimensions": [{"Name": n, "Value": v} for n, v in q.dimensions]},
                            "Period": period, "Stat": q.spec.stat}} for i, q in enumerate(queries)]
    results = await aws.paginate("cloudwatch", region, "get_metric_data", "MetricDataResults",
                                 MetricDataQueries=body, StartTime=_utc(_floor(start - period, period)),
                                 EndTime=_utc(_floor(end + 2 * period, period)))
    points: dict[int, list[tuple[float, float]]] = {}
    for result in results:
        index = int(str(result["Id"])[1:])
        stamps = [t.timestamp() if isinstance(t, datetime) else float(t) for t in result.get("Timestamps", [])]
        pairs = zip(stamps, (float(v) for v in result.get("Values", [])), strict=False)
        # a point stands for [t, t + period): keep the periods that overlap the window
        points.setdefault(index, []).extend(p for p in pairs if start - period < p[0] < end)
    return points


def _figure(q: _Query, points: list[tuple[float, float]], period: int) -> ImpactFigure:
    every = "1 min" if period == 60 else f"{period // 60} min"
    source = f"CloudWatch {q.spec.namespace} {q.spec.metric} ({q.spec.stat} per {every})"
    if not points:
        return ImpactFigure(q.spec.label, q.resource, None, None, None, source,
                            "no data points in the window (the metric is not emitted, or nothing happened)")
    peak_at, peak = max(sorted(points), key=lambda p: p[1])  # the earliest minute among equal peaks
    total = peak if q.spec.stat == "Maximum" else sum(v for _, v in points)
    return ImpactFigure(q.spec.label, q.resource, total, peak, peak_at, source, points=sorted(points))


def _floor(at: float, period: int) -> float:
    """Periods aligned to whole minutes (CloudWatch's advice, and what makes a 'peak minute' a minute)."""
    return math.floor(at / period) * period


def _utc(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


__all__ = ["Impact", "ImpactFigure", "measure_impact", "period_for"]
