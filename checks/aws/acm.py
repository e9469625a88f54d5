"""ACM: certificates that expired, were revoked or failed, or expire soon.

Thresholds: an expired/revoked/failed certificate that something still uses is P0 (every TLS handshake fails);
under 3 days left is a P1 failure, under 14 days a P2 warning. Under 30 days stays `ok` and the hint says when to
renew: a diagnosis run during an incident should not list month-away hygiene as a problem.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from checks.aws.common import aws_check, region
from checks.model import CheckResult, Severity, Status
from checks.registry import CheckContext, check

FAIL_WITHIN = timedelta(days=3)
WARN_WITHIN = timedelta(days=14)
NOTE_WITHIN = timedelta(days=30)
BROKEN = {"EXPIRED", "REVOKED", "FAILED", "VALIDATION_TIMED_OUT"}
LISTED_USERS = 5


@check("aws.acm", timeout_s=15)
@aws_check
async def acm(certificate_arn: str, ctx: CheckContext) -> CheckResult:
    """ACM certificate status and days until expiry"""
    found = await ctx.aws.call("acm", region(ctx), "describe_certificate", CertificateArn=certificate_arn)
    cert = found["Certificate"]
    status = cert.get("Status", "UNKNOWN")
    not_after: datetime | None = cert.get("NotAfter")
    left = not_after - ctx.now if not_after else None
    users = cert.get("InUseBy", [])
    name = cert.get("DomainName", certificate_arn)
    evidence: dict[str, Any] = {
        "domain": name,
        "status": status,
        "type": cert.get("Type"),
        "not_after": not_after.isoformat() if not_after else None,
        "days_left": round(left / timedelta(days=1), 1) if left is not None else None,
        "in_use_by": users[:LISTED_USERS],
        "in_use_count": len(users),
        "renewal_status": cert.get("RenewalSummary", {}).get("RenewalStatus"),
    }

    def result(
        status_: Status, summary: str, severity: Severity | None = None, hint: str | None = None
    ) -> CheckResult:
        return CheckResult(status=status_, severity=severity, summary=summary, resource=certificate_arn,
                           evidence=evidence, hint=hint)

    if status in BROKEN or (left is not None and left <= timedelta(0)):
        state = "expired" if status in ("EXPIRED", "ISSUED") else status.lower().replace("_", " ")
        when = f" {_duration(-left)} ago" if state == "expired" and left is not None else ""
        if users:
            return result(Status.fail, f"Certificate for {name} is {state}{when} and still used by "
                          f"{_users(users)}: TLS handshakes to it fail.", "P0", _renew_hint(cert))
        return result(Status.warn, f"Certificate for {name} is {state}{when}; nothing uses it.", "P3",
                      "Delete it, or renew it before attaching it anywhere.")
    if status == "PENDING_VALIDATION":
        return result(Status.warn, f"Certificate for {name} is still pending validation and cannot be used yet.",
                      "P3", "Create the DNS validation CNAME records ACM lists for it (or approve the e-mail).")
    if left is None or left >= WARN_WITHIN:
        soon = left is not None and left < NOTE_WITHIN
        return result(Status.ok, f"Certificate for {name} is {status.lower()}"
                      + (f", {_duration(left)} left." if left is not None else "."),
                      hint=_renew_hint(cert) if soon else None)
    if left < FAIL_WITHIN:
        return result(Status.fail, f"Certificate for {name} expires in {_duration(left)}.", "P1", _renew_hint(cert))
    return result(Status.warn, f"Certificate for {name} expires in {_duration(left)}.", "P2", _renew_hint(cert))


def _duration(delta: timedelta) -> str:
    hours = delta / timedelta(hours=1)
    return f"{hours:.0f} hours" if hours < 48 else f"{hours / 24:.0f} days"


def _users(users: list[str]) -> str:
    more = f" and {len(users) - 2} more" if len(users) > 2 else ""
    return ", ".join(users[:2]) + more


def _renew_hint(cert: dict[str, Any]) -> str:
    if cert.get("Type") == "IMPORTED":
        return ("Imported certificates never renew themselves: get a new one from its issuer and re-import it "
                "into the same ARN (`aws acm import-certificate --certificate-arn …`) so users pick it up.")
    renewal = cert.get("RenewalSummary", {})
    reason = renewal.get("RenewalStatusReason") or renewal.get("RenewalStatus") or "no renewal under way"
    return ("ACM renews its own certificates from 60 days before expiry, so renewal is stuck "
            f"({reason}): check that the DNS validation CNAME records still exist.")
