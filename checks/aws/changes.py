"""`aws.recent_changes`: what changed in the last 24 h, and whether the errors began right after it.

Changes come from Lambda published versions (and unpublished `$LATEST` updates), API Gateway deployments,
CloudFormation stack updates and Pulumi stack updates (the `pulumi:` block). When there are any, the service's log
groups (and `/aws/lambda/<fn>` of each function) are scanned for errors with the same scan `aws.log_errors` uses, from an hour before the earliest change
until now. A change in [first error − 60 min, first error] is a rollback candidate; so is a change followed within
60 min by an error signature never seen before it. CloudTrail `lookup_events` is not used (moto cannot fake it).
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from checks.aws.clients import AwsCheckError
from checks.aws.common import aws_check, region
from checks.aws.fixes.lambda_event_source import LATEST, event_source_offers, qualifier, source_name
from checks.aws.fixes.lambda_rollback import function_and_version, rollback_offers
from checks.aws.logs import ErrorScan, is_not_found, iso, scan_errors
from checks.correlation import SUSPECT_WINDOW, Change, find_suspect
from checks.fixes import FixOffer
from checks.iac.pulumi import pulumi_changes
from checks.model import CheckResult, Status
from checks.registry import CheckContext, check

LOOKBACK = timedelta(hours=24)


def parse_aws_time(value: Any) -> datetime:
    """Lambda's `2024-05-01T12:00:00.000+0000` (moto: `…00.817193000Z`), or a datetime from botocore, as UTC."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).strip().replace("Z", "+00:00")
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)  # nanoseconds → microseconds
    text = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", text)  # +0000 → +00:00
    moment = datetime.fromisoformat(text)
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- collecting changes ----------------------------------------------------------------------------------------


async def lambda_changes(ctx: CheckContext, function: str, since: datetime) -> list[Change]:
    assert ctx.aws is not None
    where = region(ctx)
    versions = await ctx.aws.paginate("lambda", where, "list_versions_by_function", "Versions", FunctionName=function)
    aliases = await ctx.aws.paginate("lambda", where, "list_aliases", "Aliases", FunctionName=function)
    return versions_as_changes(function, versions, aliases, since)


def versions_as_changes(
    function: str, versions: list[dict[str, Any]], aliases: list[dict[str, Any]], since: datetime
) -> list[Change]:
    published = sorted((v for v in versions if v.get("Version", "").isdigit()), key=lambda v: int(v["Version"]))
    changes = []
    for index, version in enumerate(published):
        at = parse_aws_time(version["LastModified"])
        if at < since:
            continue
        previous = published[index - 1]["Version"] if index else None
        changes.append(Change(
            kind="lambda-version",
            at=at,
            name=f"{function} v{version['Version']}",
            resource=version.get("FunctionArn", f"{function}:{version['Version']}"),
            rollback=_alias_rollback(function, version["Version"], previous, aliases),
            detail=version.get("Description") or "",
        ))
    latest = next((v for v in versions if v.get("Version") == "$LATEST"), None)
    newest_published = parse_aws_time(published[-1]["LastModified"]) if published else None
    if latest:
        at = parse_aws_time(latest["LastModified"])
        if at >= since and (newest_published is None or at > newest_published + timedelta(seconds=1)):
            changes.append(Change(
                kind="lambda-update",
                at=at,
                name=f"{function} $LATEST (unpublished update)",
                resource=latest.get("FunctionArn", function),
                rollback=_latest_rollback(function, published[-1]["Version"] if published else None),
                detail=latest.get("Description") or "",
            ))
    return changes


def _latest_rollback(function: str, newest: str | None) -> str:
    if newest is None:
        return (f"Redeploy {function}'s previous build; $LATEST updates keep no history to roll back to: publish "
                "versions so the next rollback is one click.")
    return (f"Point what invokes {function}'s $LATEST (event source mappings, direct callers) at v{newest}, the last "
            "published version; $LATEST itself keeps no history to roll back to.")


def _alias_rollback(function: str, version: str, previous: str | None, aliases: list[dict[str, Any]]) -> str:
    live = [a["Name"] for a in aliases if a.get("FunctionVersion") == version]
    if previous is None:
        return f"v{version} is {function}'s first published version; there is no earlier version to go back to."
    if not live:
        return (f"No alias points at v{version}; whatever invokes that version directly must be pointed back at "
                f"v{previous}.")
    return " ; ".join(
        f"`aws lambda update-alias --function-name {function} --name {alias} --function-version {previous}`"
        for alias in live
    )


async def apigateway_changes(ctx: CheckContext, api_id: str, since: datetime) -> list[Change]:
    assert ctx.aws is not None
    where = region(ctx)
    deployments = await ctx.aws.paginate("apigateway", where, "get_deployments", "items", restApiId=api_id)
    stages = (await ctx.aws.call("apigateway", where, "get_stages", restApiId=api_id)).get("item", [])
    return deployments_as_changes(api_id, deployments, stages, since)


def deployments_as_changes(
    api_id: str, deployments: list[dict[str, Any]], stages: list[dict[str, Any]], since: datetime
) -> list[Change]:
    ordered = sorted(deployments, key=lambda d: parse_aws_time(d["createdDate"]))
    changes = []
    for index, deployment in enumerate(ordered):
        at = parse_aws_time(deployment["createdDate"])
        if at < since:
            continue
        previous = ordered[index - 1]["id"] if index else None
        live = [s["stageName"] for s in stages if s.get("deploymentId") == deployment["id"]]
        if previous and live:
            rollback = " ; ".join(
                f"`aws apigateway update-stage --rest-api-id {api_id} --stage-name {stage} "
                f"--patch-operations op=replace,path=/deploymentId,value={previous}`"
                for stage in live
            )
        elif previous:
            rollback = f"No stage uses deployment {deployment['id']} any more; nothing to roll back on the API."
        else:
            rollback = f"Deployment {deployment['id']} is the API's first; there is no earlier one to go back to."
        changes.append(Change(
            kind="apigateway-deployment",
            at=at,
            name=f"API {api_id} deployment {deployment['id']}" + (f" ({', '.join(live)})" if live else ""),
            resource=deployment["id"],
            rollback=rollback,
            detail=deployment.get("description") or "",
        ))
    return changes


async def stack_changes(ctx: CheckContext, stack: str, since: datetime) -> list[Change]:
    """Stack-level update/create operations since `since`; reads describe_stack_events pages until older events."""
    assert ctx.aws is not None
    events: list[dict[str, Any]] = []
    params: dict[str, Any] = {"StackName": stack}
    while True:  # newest first: stop as soon as a page reaches before `since`
        page = await ctx.aws.call("cloudformation", region(ctx), "describe_stack_events", **params)
        events.extend(page.get("StackEvents", []))
        oldest = min((parse_aws_time(e["Timestamp"]) for e in page.get("StackEvents", [])), default=since)
        if not page.get("NextToken") or oldest < since:
            break
        params["NextToken"] = page["NextToken"]
    return stack_events_as_changes(events, since)


_OPERATION_START = re.compile(r"^(CREATE|UPDATE|IMPORT)_IN_PROGRESS$")
_OPERATION_END = re.compile(r"_(COMPLETE|FAILED)$")


def stack_events_as_changes(events: list[dict[str, Any]], since: datetime) -> list[Change]:
    """One change per stack operation (…_IN_PROGRESS on the stack itself), dated by its start, with its outcome."""
    own = sorted(
        (e for e in events if e.get("LogicalResourceId") == e.get("StackName")
         and e.get("ResourceType") == "AWS::CloudFormation::Stack"),
        key=lambda e: parse_aws_time(e["Timestamp"]),
    )
    changes = []
    for index, event in enumerate(own):
        if not _OPERATION_START.match(event.get("ResourceStatus", "")):
            continue
        at = parse_aws_time(event["Timestamp"])
        if at < since:
            continue
        later = own[index + 1 :]
        outcome = next(
            (e["ResourceStatus"] for e in later
             if _OPERATION_END.search(e.get("ResourceStatus", "")) and "CLEANUP" not in e["ResourceStatus"]),
            "IN_PROGRESS",
        )
        name = event["StackName"]
        changes.append(Change(
            kind="stack-update",
            at=at,
            name=f"stack {name} {event['ResourceStatus'].split('_')[0].lower()} ({outcome})",
            resource=event.get("StackId") or name,
            rollback=_stack_rollback(name, outcome),
            detail=event.get("ResourceStatusReason") or "",
        ))
    return changes


def _stack_rollback(stack: str, outcome: str) -> str:
    if outcome == "IN_PROGRESS" or outcome.endswith("_IN_PROGRESS"):
        return f"`aws cloudformation cancel-update-stack --stack-name {stack}` while it is still in progress."
    if "ROLLBACK" in outcome:
        return f"The update of {stack} already rolled back; check that the rollback restored the old resources."
    return (f"Redeploy {stack}'s previous template and parameters (CloudFormation cannot undo a completed update "
            "by itself).")


# --- the check -------------------------------------------------------------------------------------------------


@check("aws.recent_changes", timeout_s=45)
@aws_check
async def recent_changes(_region: str, ctx: CheckContext) -> CheckResult:
    """Deploys and stack updates in the last 24 h, and whether the errors began right after one of them."""
    assert ctx.service.aws is not None
    spec = ctx.service.aws
    since = ctx.now - LOOKBACK
    changes: list[Change] = []
    for function in spec.lambda_functions:
        changes += await lambda_changes(ctx, function, since)
    for api_id in spec.api_gateways:
        changes += await apigateway_changes(ctx, api_id, since)
    for stack in spec.stacks:
        changes += await stack_changes(ctx, stack, since)
    changes += await pulumi_changes(ctx, since)
    changes = [c for c in changes if c.at <= ctx.now]
    changes.sort(key=lambda c: c.at)
    evidence: dict[str, Any] = {"since": iso(since), "changes": [c.as_evidence() for c in changes]}
    if not changes:
        return CheckResult(status=Status.ok, summary="No deploys or stack updates in the last 24 h.", evidence=evidence)

    groups = list(dict.fromkeys([*spec.log_groups, *(f"/aws/lambda/{f}" for f in spec.lambda_functions)]))
    start = max(since, changes[0].at - SUSPECT_WINDOW)
    try:
        scans, missing = await _scan_groups(ctx, groups, start)
    except AwsCheckError as exc:
        return CheckResult(
            status=Status.error,
            summary=f"{_count(changes)} in the last 24 h, but the logs could not be read to correlate them: {exc}",
            evidence=evidence,
            hint="Add logs:FilterLogEvents for the service's log groups to the bot's role (deploy/iam-policy.json).",
        )
    first_error = min((s.first_error_at for s in scans if s.first_error_at), default=None)
    evidence.update({
        "first_error_at": iso(first_error),
        "log_groups_scanned": [s.log_group for s in scans],
        "log_groups_missing": missing,
        "scan_start": iso(start),
        "scan_truncated": any(s.truncated for s in scans),
    })
    suspect = find_suspect(changes, scans)
    if suspect:
        evidence["suspect"] = suspect.change.as_evidence()
        rolled_back = await _rolled_back(ctx, suspect.change)
        if rolled_back:
            return CheckResult(status=Status.ok, resource=suspect.change.resource, evidence=evidence,
                               summary=suspect.sentence.removesuffix("rollback candidate.") + rolled_back)
        return CheckResult(
            status=Status.fail,
            severity="P1",
            summary=suspect.sentence,
            resource=suspect.change.resource,
            evidence=evidence,
            hint=f"Roll back: {suspect.change.rollback}",
            fixes=await _rollback_fixes(ctx, suspect.change),
        )
    latest = changes[-1]
    listed = f"{_count(changes)} in the last 24 h (latest: {latest.name} at {latest.at:%H:%M} UTC)"
    if first_error is None:
        summary = f"{listed}; no errors after them."
    else:
        summary = f"{listed}; errors since {first_error:%H:%M} UTC do not follow any of them within 60 min."
    return CheckResult(status=Status.ok, summary=summary, evidence=evidence)


async def _rolled_back(ctx: CheckContext, change: Change) -> str | None:
    """Whether a suspect Lambda change has been taken out of service since, as a sentence; None if not."""
    if change.kind == "lambda-update":
        return await _latest_rolled_back(ctx, function_and_version(change.resource)[0])
    if change.kind == "lambda-version":
        return await _version_rolled_back(ctx, change)
    return None


async def _version_rolled_back(ctx: CheckContext, change: Change) -> str | None:
    """A published version taken off every alias. Only a function with aliases can say so: without them, a
    version may be invoked by its number."""
    function, version = function_and_version(change.resource)
    if not version.isdigit():
        return None
    assert ctx.aws is not None
    aliases = await ctx.aws.paginate("lambda", region(ctx), "list_aliases", "Aliases", FunctionName=function)
    if not aliases or any(a.get("FunctionVersion") == version for a in aliases):
        return None
    runs = ", ".join(f"{a['Name']} runs v{a['FunctionVersion']}" for a in aliases)
    return f"rolled back since: no alias of {function} runs v{version} any more ({runs})."


async def _latest_rolled_back(ctx: CheckContext, function: str) -> str | None:
    """An unpublished `$LATEST` update whose event source mappings all invoke a published version now (the
    `lambda.point_event_source` fix). Only mappings can say so: direct callers of `$LATEST` leave no trace, so a
    function without mappings stays a candidate."""
    assert ctx.aws is not None
    mappings = await ctx.aws.paginate("lambda", region(ctx), "list_event_source_mappings", "EventSourceMappings",
                                      FunctionName=function)
    invoked = [(source_name(m.get("EventSourceArn", m["UUID"])), qualifier(m["FunctionArn"]))
               for m in mappings if m.get("FunctionArn")]
    if not invoked or any(version == LATEST for _, version in invoked):
        return None
    runs = ", ".join(f"{source} invokes {function} {_numbered(version)}" for source, version in invoked)
    return f"rolled back since: no event source mapping invokes $LATEST any more ({runs})."


def _numbered(version: str) -> str:
    """A version as people write it ("v41"); an alias name stays as it is."""
    return f"v{version}" if version.isdigit() else version


async def _rollback_fixes(ctx: CheckContext, change: Change) -> list[FixOffer]:
    """A one-click rollback for a published Lambda version that aliases run, or for an unpublished `$LATEST`
    update the event source mappings on the unqualified function to the last published version. `$LATEST` keeps
    no earlier code, so a function without published versions gets none (the hint says why)."""
    assert ctx.aws is not None
    if change.kind == "lambda-version":
        return await rollback_offers(ctx.aws, region(ctx), change.resource)
    if change.kind == "lambda-update":
        return await event_source_offers(ctx.aws, region(ctx), function_and_version(change.resource)[0])
    return []


def _count(changes: list[Change]) -> str:
    return "1 change" if len(changes) == 1 else f"{len(changes)} changes"


async def _scan_groups(ctx: CheckContext, groups: list[str], start: datetime) -> tuple[list[ErrorScan], list[str]]:
    """Error scans of the groups that exist; a missing group (a function never invoked) is noted, not fatal."""

    async def scan(group: str) -> ErrorScan | None:
        try:
            return await scan_errors(ctx, group, start, ctx.now)
        except AwsCheckError as exc:
            if is_not_found(exc):
                return None
            raise

    found = await asyncio.gather(*(scan(group) for group in groups))
    return [s for s in found if s is not None], [g for g, s in zip(groups, found, strict=True) if s is None]
