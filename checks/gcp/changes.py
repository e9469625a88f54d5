"""`gcp.cloud_run_changes`: Cloud Run revisions created in the last 24 h, and whether errors began right after one.

The same correlation as `aws.recent_changes` (`checks.correlation.find_suspect`): each revision is a change; the
service's Cloud Logging errors from an hour before the earliest one until now are the errors.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from checks.correlation import SUSPECT_WINDOW, Change, find_suspect
from checks.gcp.api import gcp_check, spec
from checks.gcp.logs import scan
from checks.targets import LogTarget, run_filter
from checks.gcp.run import list_revisions, short
from checks.logsignatures import iso
from checks.model import CheckResult, Status
from checks.registry import CheckContext, check

LOOKBACK = timedelta(hours=24)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def revisions_as_changes(name: str, region: str, revisions: list[dict[str, Any]], since: datetime) -> list[Change]:
    ordered = sorted((r for r in revisions if r.get("createTime")), key=lambda r: r["createTime"])
    changes = []
    for index, revision in enumerate(ordered):
        at = parse_time(revision["createTime"])
        if at < since:
            continue
        previous = short(ordered[index - 1]["name"]) if index else None
        rollback = (f"`gcloud run services update-traffic {name} --region {region} --to-revisions {previous}=100`"
                    if previous else f"{short(revision['name'])} is {name}'s first revision; nothing to go back to.")
        image = next(iter(revision.get("containers", [])), {}).get("image", "")
        changes.append(Change(kind="cloud-run-revision", at=at, name=f"{name} revision {short(revision['name'])}",
                              resource=revision["name"], rollback=rollback, detail=image))
    return changes


@check("gcp.cloud_run_changes", timeout_s=40)
@gcp_check
async def cloud_run_changes(name: str, ctx: CheckContext) -> CheckResult:
    """Cloud Run revisions of the last 24 h, and whether the errors began right after one of them"""
    since = ctx.now - LOOKBACK
    changes = [c for c in revisions_as_changes(name, spec(ctx).region, await list_revisions(ctx, name), since)
               if c.at <= ctx.now]
    evidence: dict[str, Any] = {"since": iso(since), "changes": [c.as_evidence() for c in changes]}
    if not changes:
        return CheckResult(status=Status.ok, summary=f"No new revisions of {name} in the last 24 h.",
                           evidence=evidence)
    start = max(since, changes[0].at - SUSPECT_WINDOW)
    errors = await scan(ctx, LogTarget(f"Cloud Run {name}", run_filter(name)), start, ctx.now)
    evidence.update({"scan_start": iso(start), "first_error_at": iso(errors.first_error_at),
                     "scan_truncated": errors.truncated})
    suspect = find_suspect(changes, [errors])
    if suspect:
        evidence["suspect"] = suspect.change.as_evidence()
        return CheckResult(status=Status.fail, severity="P1", summary=suspect.sentence,
                           resource=suspect.change.resource, evidence=evidence,
                           hint=f"Roll back: {suspect.change.rollback}")
    latest = changes[-1]
    tail = ("no errors after them." if errors.first_error_at is None else
            f"errors since {errors.first_error_at:%H:%M} UTC do not follow any of them within 60 min.")
    return CheckResult(status=Status.ok, evidence=evidence,
                       summary=f"{len(changes)} revision(s) of {name} in the last 24 h (latest {latest.name} at "
                               f"{latest.at:%H:%M} UTC); {tail}")
