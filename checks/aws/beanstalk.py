"""Elastic Beanstalk environments (`aws.beanstalk_environments`, names): health, and the deploy that broke it.

- `aws.beanstalk_health` (platform): the environment's status and health with the causes enhanced health gives
  (`DescribeEnvironmentHealth`, `DescribeInstancesHealth`: which instances, why, which version each runs).
- `aws.beanstalk_deploy` (change): application-version deploys in the last 24 h from the environment's events,
  failed deployments, the error signatures of the instances' logs (their CloudWatch log groups when the
  environment streams logs, else the last 100 lines of each instance through `RequestEnvironmentInfo` /
  `RetrieveEnvironmentInfo`), and "errors started N min after version X was deployed; previous version Y" through
  the same correlation `aws.recent_changes` uses. The finding offers `beanstalk.deploy_version` ("Roll back
  orders-prod to v41"); once the suspect version is no longer live, the errors it caused are reported as rolled
  back since, not as a failure.

moto implements `DescribeEnvironments` only (events, health, versions and environment info raise
NotImplementedError), so the tests run these checks against a local server that speaks the Elastic Beanstalk
query API, through botocore's `AWS_ENDPOINT_URL_ELASTIC_BEANSTALK` override.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from checks.aws.changes import LOOKBACK, parse_aws_time
from checks.aws.clients import AwsCheckError
from checks.aws.common import Problem, aws_check, aws_error_code, fold, region
from checks.aws.fixes.beanstalk_version import version_offer
from checks.aws.logs import ErrorScan, iso, scan_errors, summarise_errors, to_millis
from checks.correlation import Change, Suspect, find_suspect
from checks.model import CheckResult, Status
from checks.registry import CheckContext, check

TAIL_FRESH = timedelta(minutes=15)  # a tail requested this recently (by anyone) is read rather than requested again
TAIL_WAIT_S = 20.0
TAIL_POLL_S = 2.0
MAX_TAIL_BYTES = 1_000_000
MAX_LOG_GROUPS = 6
_BAD_HEALTH = {"Severe": ("P0", Status.fail), "Degraded": ("P1", Status.fail), "Warning": ("P2", Status.warn),
               "Red": ("P1", Status.fail), "Yellow": ("P2", Status.warn)}
_FAILED_DEPLOY = re.compile(r"failed to deploy|command failed on instance|unsuccessful command execution|"
                            r"deployment failed|rolled back|failed to perform", re.IGNORECASE)


async def describe_environment(ctx: CheckContext, name: str) -> dict[str, Any] | None:
    assert ctx.aws is not None
    found = await ctx.aws.call("elasticbeanstalk", region(ctx), "describe_environments", EnvironmentNames=[name],
                               IncludeDeleted=False)
    return next(iter(found.get("Environments", [])), None)


def _missing(name: str) -> CheckResult:
    return CheckResult(status=Status.error, summary=f"No Elastic Beanstalk environment {name}.", resource=name,
                       hint="Fix aws.beanstalk_environments in the services file (environment names, not CNAMEs).")


# --- aws.beanstalk_health --------------------------------------------------------------------------------------


@check("aws.beanstalk_health", timeout_s=20)
@aws_check
async def beanstalk_health(name: str, ctx: CheckContext) -> CheckResult:
    """Elastic Beanstalk environment health and its causes, per instance with the version each one runs."""
    environment = await describe_environment(ctx, name)
    if environment is None:
        return _missing(name)
    health, instances = await _enhanced_health(ctx, name)
    status = health.get("HealthStatus") or environment.get("HealthStatus") or environment.get("Health")
    causes = list(health.get("Causes") or [])
    evidence = {
        "status": environment.get("Status"), "health": environment.get("Health"), "health_status": status,
        "version_label": environment.get("VersionLabel"), "date_updated": iso(_time(environment.get("DateUpdated"))),
        "causes": causes, "application_metrics": _app_metrics(health.get("ApplicationMetrics") or {}),
        "instances": [_instance_row(i) for i in instances], "enhanced_health": bool(health),
    }
    problems = _status_problems(name, environment) + _health_problems(name, status, causes, instances)
    ok = f"{name}: {environment.get('Status')}, health {status}, version {environment.get('VersionLabel')}."
    return fold(problems, ok=ok, resource=name, evidence=evidence)


async def _enhanced_health(ctx: CheckContext, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Enhanced health and its instances; ({}, []) when the environment reports basic health only."""
    assert ctx.aws is not None
    where = region(ctx)
    try:
        health = await ctx.aws.call("elasticbeanstalk", where, "describe_environment_health", EnvironmentName=name,
                                    AttributeNames=["All"])
        instances = await ctx.aws.call("elasticbeanstalk", where, "describe_instances_health", EnvironmentName=name,
                                       AttributeNames=["All"])
    except AwsCheckError as exc:
        if aws_error_code(exc) in ("InvalidRequestException", "ElasticBeanstalkServiceException"):
            return {}, []  # basic health: the environment's Health colour is all there is
        raise
    return health, list(instances.get("InstanceHealthList") or [])


def _app_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    codes = metrics.get("StatusCodes") or {}
    latency = metrics.get("Latency") or {}
    return {"requests": metrics.get("RequestCount"), "window_s": metrics.get("Duration"),
            "5xx_pct": codes.get("Status5xx"), "4xx_pct": codes.get("Status4xx"), "p99_s": latency.get("P99")}


def _instance_row(instance: dict[str, Any]) -> dict[str, Any]:
    deployment = instance.get("Deployment") or {}
    return {"instance": instance.get("InstanceId"), "health": instance.get("HealthStatus"),
            "version": deployment.get("VersionLabel"), "deployment": deployment.get("Status"),
            "cause": "; ".join(instance.get("Causes") or [])[:200]}


def _status_problems(name: str, environment: dict[str, Any]) -> list[Problem]:
    if environment.get("Status") not in ("Terminating", "Terminated"):
        return []
    return [Problem(Status.fail, "P0", f"Environment {name} is {environment['Status']}.",
                    "Rebuild it (`aws elasticbeanstalk rebuild-environment`) or restore from a saved configuration.")]


def _health_problems(name: str, status: str | None, causes: list[str],
                     instances: list[dict[str, Any]]) -> list[Problem]:
    if status not in _BAD_HEALTH:
        return []
    severity, outcome = _BAD_HEALTH[status]
    sick = [i for i in instances if i.get("HealthStatus") in _BAD_HEALTH]
    named = ", ".join(f"{i.get('InstanceId')} ({'; '.join(i.get('Causes') or [])[:120]})" for i in sick[:3])
    versions = sorted({(i.get("Deployment") or {}).get("VersionLabel") for i in instances} - {None})
    mixed = (f" Instances run different versions ({', '.join(versions)}): a deploy did not finish."
             if len(versions) > 1 else "")
    why = f": {causes[0]}" if causes else ""
    return [Problem(
        outcome, severity,
        f"{name} health is {status}{why}" + (f" Unhealthy instances: {named}." if named else "") + mixed,
        "aws.beanstalk_deploy says whether a deploy preceded it; the causes name the failing instances' symptom "
        "(5xx, latency, failed health check, CPU).",
    )]


# --- aws.beanstalk_deploy --------------------------------------------------------------------------------------


@check("aws.beanstalk_deploy", timeout_s=45)
@aws_check
async def beanstalk_deploy(name: str, ctx: CheckContext) -> CheckResult:
    """Application versions deployed to an Elastic Beanstalk environment in the last 24 h, failed deployments, and
    whether the instances' errors began right after one (the rollback candidate)."""
    environment = await describe_environment(ctx, name)
    if environment is None:
        return _missing(name)
    since = ctx.now - LOOKBACK
    events = await _events(ctx, name, since)
    deploys = await deploys_from_events(ctx, environment, events, since)
    failed = [e for e in events
              if e.get("Severity") in ("ERROR", "FATAL") or _FAILED_DEPLOY.search(e.get("Message", ""))]
    start = max(since, min((d.at for d in deploys), default=ctx.now) - timedelta(minutes=60))
    scans, source = await instance_log_scans(ctx, name, start)
    evidence = {
        "version_label": environment.get("VersionLabel"), "deploys": [d.as_evidence() for d in deploys],
        "failed_events": [{"at": iso(_time(e.get("EventDate"))), "severity": e.get("Severity"),
                           "version": e.get("VersionLabel"), "message": e.get("Message", "")[:300]}
                          for e in failed[-5:]],
        "logs_read_from": source, "first_error_at": iso(min((s.first_error_at for s in scans if s.first_error_at),
                                                             default=None)),
        "signatures": [s.as_evidence() for scan in scans for s in scan.signatures[:3]],
    }
    suspect = find_suspect(deploys, scans)
    if suspect:
        evidence["suspect"] = suspect.change.as_evidence()
        return _suspect_result(region(ctx), environment, suspect, evidence)
    return fold(_failed_deploy_problems(name, failed, deploys), ok=_quiet(name, environment, deploys), resource=name,
                evidence=evidence)


async def _events(ctx: CheckContext, name: str, since: datetime) -> list[dict[str, Any]]:
    """The environment's events since `since`, oldest first (one page: DescribeEvents returns newest first)."""
    assert ctx.aws is not None
    found = await ctx.aws.call("elasticbeanstalk", region(ctx), "describe_events", EnvironmentName=name,
                               StartTime=since, EndTime=ctx.now, MaxRecords=1000)
    return sorted(found.get("Events", []), key=lambda e: _time(e.get("EventDate")) or since)


async def deploys_from_events(ctx: CheckContext, environment: dict[str, Any], events: list[dict[str, Any]],
                              since: datetime) -> list[Change]:
    """A deploy is where the events' version label changes; the first one's predecessor comes from the
    application's version list. With no labelled events, the environment's last update stands in."""
    runs = _label_runs(events)
    steady = runs.pop(0)[0] if runs and _is_steady(events, runs[0][0]) else None
    if not runs and not steady and environment.get("VersionLabel") and _time(environment.get("DateUpdated")):
        runs = [(environment["VersionLabel"], _time(environment["DateUpdated"]))]
    runs = [(label, at) for label, at in runs if at and at >= since]
    if not runs:
        return []
    before = steady or await _version_before(ctx, environment.get("ApplicationName", ""), runs[0][0])
    previous = [before, *(label for label, _ in runs[:-1])]
    return [_deploy(environment["EnvironmentName"], label, at, prior)
            for (label, at), prior in zip(runs, previous, strict=True)]


def _label_runs(events: list[dict[str, Any]]) -> list[tuple[str, datetime | None]]:
    """(version label, first event) of each stretch of events that name the same version."""
    runs: list[tuple[str, datetime | None]] = []
    for event in events:
        label = event.get("VersionLabel")
        if label and (not runs or runs[-1][0] != label):
            runs.append((label, _time(event.get("EventDate"))))
    return runs


def _is_steady(events: list[dict[str, Any]], label: str) -> bool:
    """Whether the window's first labelled events are the old version still running rather than its deploy."""
    first = next(e for e in events if e.get("VersionLabel") == label).get("Message", "").lower()
    return "deploy" not in first and "update is starting" not in first


async def _version_before(ctx: CheckContext, application: str, label: str) -> str | None:
    assert ctx.aws is not None
    found = await ctx.aws.call("elasticbeanstalk", region(ctx), "describe_application_versions",
                               ApplicationName=application, MaxRecords=100)
    versions = sorted(found.get("ApplicationVersions", []), key=lambda v: _time(v.get("DateCreated")) or datetime.min)
    labels = [v.get("VersionLabel") for v in versions]
    index = labels.index(label) if label in labels else 0
    return labels[index - 1] if index > 0 else None


@dataclass(frozen=True)
class VersionDeploy(Change):
    """A deploy of application version `version` over `previous` (None: the first version on record)."""

    version: str = ""
    previous: str | None = None


def _deploy(env: str, label: str, at: datetime, previous: str | None) -> VersionDeploy:
    rollback = (f"`aws elasticbeanstalk update-environment --environment-name {env} --version-label {previous}`"
                if previous else f"{label} is the first version on record; redeploy the last known good build.")
    return VersionDeploy(kind="beanstalk-deploy", at=at,
                         name=f"version {label} was deployed to {env}"
                         + (f" (previous version {previous})" if previous else ""),
                         resource=env, rollback=rollback, detail=f"previous: {previous}" if previous else "",
                         version=label, previous=previous)


def _suspect_result(where: str, environment: dict[str, Any], suspect: Suspect,
                    evidence: dict[str, Any]) -> CheckResult:
    """The deploy the errors followed: a failure with its rollback offered, or, when another version is live
    now (rolled back, or replaced by a newer one), an ok that says so."""
    deploy, name = suspect.change, environment["EnvironmentName"]
    assert isinstance(deploy, VersionDeploy)
    live = environment.get("VersionLabel")
    if live and live != deploy.version:
        return CheckResult(status=Status.ok, resource=name, evidence=evidence,
                           summary=suspect.sentence.removesuffix("rollback candidate.") + _since(environment, deploy))
    offers = [version_offer(where, name, deploy.previous, deploy.version)] if deploy.previous else []
    return CheckResult(status=Status.fail, severity="P1", summary=suspect.sentence, resource=name, evidence=evidence,
                       hint=f"Roll back: {deploy.rollback}", fixes=offers)


def _since(environment: dict[str, Any], deploy: VersionDeploy) -> str:
    name, live, status = environment["EnvironmentName"], environment["VersionLabel"], environment.get("Status")
    still = f" (still {status})" if status and status != "Ready" else ""
    if live == deploy.previous:
        return f"rolled back since: {name} runs {live} again, not {deploy.version}{still}."
    return f"replaced since: {name} runs {live} now, not {deploy.version}{still}."


def _failed_deploy_problems(name: str, failed: list[dict[str, Any]], deploys: list[Change]) -> list[Problem]:
    if not failed:
        return []
    last = failed[-1]
    rollback = deploys[-1].rollback if deploys else f"Redeploy {name}'s last good version."
    return [Problem(
        Status.fail, "P1",
        f"A deployment to {name} failed at {_time(last.get('EventDate')):%H:%M} UTC"
        + (f" (version {last['VersionLabel']})" if last.get("VersionLabel") else "")
        + f": {last.get('Message', '')[:200]}",
        f"Read the instance logs in the evidence; roll back: {rollback}",
    )]


def _quiet(name: str, environment: dict[str, Any], deploys: list[Change]) -> str:
    if not deploys:
        return f"{name}: no deploys in the last 24 h (running {environment.get('VersionLabel')})."
    last = deploys[-1]
    return f"{name}: {last.name} at {last.at:%H:%M} UTC; no errors followed it within 60 min."


def _time(value: Any) -> datetime | None:
    return parse_aws_time(value) if value else None


# --- instance logs ---------------------------------------------------------------------------------------------


async def instance_log_scans(ctx: CheckContext, name: str, start: datetime) -> tuple[list[ErrorScan], str]:
    """Error scans of the environment's CloudWatch log groups, else of each instance's last 100 lines."""
    assert ctx.aws is not None
    found = await ctx.aws.call("logs", region(ctx), "describe_log_groups",
                               logGroupNamePrefix=f"/aws/elasticbeanstalk/{name}/")
    groups = [g["logGroupName"] for g in found.get("logGroups", [])][:MAX_LOG_GROUPS]
    if groups:
        return list(await asyncio.gather(*(scan_errors(ctx, g, start, ctx.now) for g in groups))), "cloudwatch"
    try:
        return [await tail_scan(ctx, name, start)], "tail"
    except AwsCheckError as exc:  # the deploys and failed events are still worth reporting without the logs
        return [], f"none: {exc}"


async def tail_scan(ctx: CheckContext, name: str, start: datetime) -> ErrorScan:
    """The last 100 lines of each instance's logs (fresh ones if someone asked in the last 15 min)."""
    infos = await _tail_infos(ctx, name)
    texts = await asyncio.gather(*(_download(ctx, info.get("Message", "")) for info in infos))
    events = [event for info, text in zip(infos, texts, strict=True) for event in tail_events(info, text, ctx.now)]
    events = [e for e in events if e["timestamp"] >= to_millis(start)]
    return ErrorScan(f"{name} instance logs (last 100 lines)", start, ctx.now, summarise_errors(events), len(events),
                     truncated=True, via="tail")


async def _tail_infos(ctx: CheckContext, name: str) -> list[dict[str, Any]]:
    assert ctx.aws is not None
    where = region(ctx)
    fresh = await _fresh_tails(ctx, name, ctx.now - TAIL_FRESH)
    if fresh:
        return fresh
    requested_at = ctx.now
    await ctx.aws.call("elasticbeanstalk", where, "request_environment_info", EnvironmentName=name, InfoType="tail")
    give_up = asyncio.get_running_loop().time() + min(TAIL_WAIT_S, ctx.remaining() - 5)
    while asyncio.get_running_loop().time() < give_up:
        await asyncio.sleep(TAIL_POLL_S)
        fresh = await _fresh_tails(ctx, name, requested_at - timedelta(seconds=5), poll=True)
        if fresh:
            return fresh
    return []


async def _fresh_tails(ctx: CheckContext, name: str, after: datetime, *, poll: bool = False) -> list[dict[str, Any]]:
    assert ctx.aws is not None
    read = ctx.aws.poll if poll else ctx.aws.call
    found = await read("elasticbeanstalk", region(ctx), "retrieve_environment_info", EnvironmentName=name,
                       InfoType="tail")
    infos = [i for i in found.get("EnvironmentInfo", []) if (_time(i.get("SampleTimestamp")) or after) > after]
    newest: dict[str, dict[str, Any]] = {}
    for info in sorted(infos, key=lambda i: _time(i.get("SampleTimestamp"))):
        newest[info.get("Ec2InstanceId", "")] = info
    return list(newest.values())


async def _download(ctx: CheckContext, url: str) -> str:
    """The tail file behind the pre-signed URL Elastic Beanstalk returns (read at most MAX_TAIL_BYTES)."""
    if not url.startswith(("https://", "http://")):
        return ""
    body = b""
    try:
        async with ctx.http.stream("GET", url, timeout=5.0) as response:
            if response.status_code != 200:
                return ""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) >= MAX_TAIL_BYTES:
                    break
    except httpx.HTTPError:
        return ""  # an expired or unreachable link: that instance's lines are missing, the others still count
    return body[:MAX_TAIL_BYTES].decode("utf-8", "replace")


_FILE_HEADER = re.compile(r"^-{5,}\s*$")
_LINE_TIME = [
    (re.compile(r"^(\d{4})/(\d{2})/(\d{2}) (\d{2}):(\d{2}):(\d{2})"), "%Y/%m/%d %H:%M:%S"),  # eb-engine.log, nginx
    (re.compile(r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})"), "%Y-%m-%d %H:%M:%S"),
    (re.compile(r"^([A-Z][a-z]{2}) +(\d{1,2}) (\d{2}):(\d{2}):(\d{2})"), "%b %d %H:%M:%S"),  # syslog: web.stdout.log
]


def tail_events(info: dict[str, Any], text: str, now: datetime) -> list[dict[str, Any]]:
    """A tail file as FilterLogEvents-shaped events, one per line, stream `<instance>:<log file>`, each line dated
    by its own timestamp when it has one (else by the previous line's, else the sample time)."""
    instance = info.get("Ec2InstanceId", "?")
    at = _time(info.get("SampleTimestamp")) or now
    current_file, events, lines = "log", [], text.splitlines()
    for index, line in enumerate(lines):
        if _FILE_HEADER.match(line) or not line.strip():
            continue
        if index + 1 < len(lines) and _FILE_HEADER.match(lines[index + 1]) and line.startswith("/"):
            current_file = line.strip()
            continue
        at = line_time(line, now) or at
        events.append({"timestamp": to_millis(at), "message": line, "logStreamName": f"{instance}:{current_file}"})
    return events


def line_time(line: str, now: datetime) -> datetime | None:
    for pattern, layout in _LINE_TIME:
        match = pattern.match(line)
        if match:
            text = match.group(0).replace("T", " ")
            try:
                parsed = datetime.strptime(f"{now.year} {text}" if "%b" in layout else text,
                                           f"%Y {layout}" if "%b" in layout else layout)
            except ValueError:
                return None
            return parsed.replace(tzinfo=now.tzinfo)
    return None
