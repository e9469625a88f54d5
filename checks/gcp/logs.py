"""Cloud Logging: error signatures for the service's resources over the last hour, and the scan that
`gcp.cloud_run_changes` correlates with revisions.

Entries come from `entries.list` with `severity>=ERROR`, so every entry is an error; its text (textPayload,
jsonPayload.message, or the HTTP request line of a request log) is prefixed with its severity and handed to the
same normalising and de-duplication as CloudWatch (`checks.logsignatures`), one stream per revision/instance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from checks.gcp.api import call, gcp_check, spec
from checks.logsignatures import ErrorSignature, SignatureTotals, iso, summarise_errors, to_millis
from checks.model import CheckResult, Status
from checks.registry import CheckContext, check
from checks.targets import LogTarget

WINDOW = timedelta(hours=1)
PAGE_SIZE = 1000
MAX_ENTRIES = 5000
MAX_PAGES = 20  # a nextPageToken with no entries means "still searching"; this bounds that too
FAIL_AT_ERRORS = 10  # as aws.log_errors: ten in an hour is sustained
TOP_SIGNATURES = 5


@dataclass
class LogScan(SignatureTotals):
    target: str
    signatures: list[ErrorSignature]
    entries: int
    truncated: bool


def entry_text(entry: dict[str, Any]) -> str:
    if entry.get("textPayload"):
        return str(entry["textPayload"])
    payload = entry.get("jsonPayload") or {}
    if payload:
        return str(payload.get("message") or json.dumps(payload, sort_keys=True))
    request = entry.get("httpRequest") or {}
    if request:
        return f"HTTP {request.get('status')} {request.get('requestMethod', '')} {request.get('requestUrl', '')}"
    status = (entry.get("protoPayload") or {}).get("status") or {}
    return str(status.get("message") or entry.get("logName", "entry"))


def as_event(entry: dict[str, Any]) -> dict[str, Any]:
    """A LogEntry in the CloudWatch event shape `summarise_errors` reads."""
    moment = datetime.fromisoformat(str(entry.get("timestamp", "1970-01-01T00:00:00Z")).replace("Z", "+00:00"))
    labels = entry.get("resource", {}).get("labels", {})
    stream = (entry.get("labels") or {}).get("instanceId") or labels.get("revision_name") or entry.get("logName", "")
    return {"timestamp": to_millis(moment), "logStreamName": stream,
            "message": f"[{entry.get('severity', 'ERROR')}] {entry_text(entry)}"}


async def scan(ctx: CheckContext, target: LogTarget, start: datetime, end: datetime) -> LogScan:
    body: dict[str, Any] = {
        "resourceNames": [f"projects/{spec(ctx).project}"], "orderBy": "timestamp asc", "pageSize": PAGE_SIZE,
        "filter": f'({target.filter}) AND severity>=ERROR AND timestamp>="{iso(start)}" AND timestamp<="{iso(end)}"',
    }
    entries: list[dict[str, Any]] = []
    truncated = False
    for _ in range(MAX_PAGES):
        page = await call(ctx, "logging.entries.list", body=body)
        entries += page.get("entries", [])
        token = page.get("nextPageToken")
        if not token:
            break
        if len(entries) >= MAX_ENTRIES or ctx.remaining() < 2:
            truncated = True
            break
        body = {**body, "pageToken": token}
    else:
        truncated = True
    return LogScan(target.label, summarise_errors(as_event(e) for e in entries), len(entries), truncated)


@check("gcp.logging", timeout_s=30)
@gcp_check
async def logging_errors(target: LogTarget, ctx: CheckContext) -> CheckResult:
    """Cloud Logging errors over the last hour, de-duplicated into signatures"""
    found = await scan(ctx, target, ctx.now - WINDOW, ctx.now)
    evidence = {"filter": target.filter, "entries": found.entries, "truncated": found.truncated,
                "errors": found.total, "first_error_at": iso(found.first_error_at),
                "signatures": [s.as_evidence() for s in found.signatures[:TOP_SIGNATURES]],
                "signature_count": len(found.signatures)}
    partial = f" (read the first {found.entries} entries only)" if found.truncated else ""
    if not found.signatures:
        return CheckResult(status=Status.ok, summary=f"No errors logged for {target.label} in the last hour.",
                           resource=target.label, evidence=evidence)
    top = found.signatures[0]
    sustained = found.total >= FAIL_AT_ERRORS
    return CheckResult(
        status=Status.fail if sustained else Status.warn, severity="P1" if sustained else "P2",
        summary=(f"{found.total} errors logged for {target.label} in the last hour ({len(found.signatures)} "
                 f"kind(s)), first at {found.first_error_at:%H:%M} UTC; most frequent: “{top.signature}” "
                 f"×{top.count}{partial}."),
        resource=target.label, evidence=evidence,
        hint="If the first error follows a new revision, gcp.cloud_run_changes names the rollback candidate.",
    )
