"""From check results to a verdict: what is broken, the evidence, what to do — ranked by likely causality.

Ranking: failures first, then warnings, then checks that could not run — an AccessDenied or a deprecated-runtime
note must never headline over a health endpoint that is down. Among failures (and likewise among warnings), a
finding in a lower layer (config < change < platform < symptom) is a likelier cause than one above it, so a NAT
route in an ALB subnet is listed before the timeouts it causes, and those before the 5xx alarm; within a layer,
higher severity first. The top failure "explains" the failures in higher layers that concern the same resource
path (`resource_keys`: the same host:port, load balancer, target group, function, subnet...): a refused connection
on one port explains nothing about a 404 on another port of the same host. Findings that name no resource at all
are about the service as a whole, and explain each other by layer alone.
"""

from __future__ import annotations

import re
from collections import Counter
from urllib.parse import urlsplit

from checks.model import CheckResult, Finding, Severity, Status, Verdict, worst
from checks.registry import Layer, check_definition

_STATUS_RANK = {Status.fail: 0, Status.warn: 1, Status.error: 2}
_DEFAULT_SEVERITY: dict[Status, Severity] = {Status.fail: "P1", Status.error: "P2", Status.warn: "P2"}


def _layer(check_id: str) -> Layer:
    definition = check_definition(check_id)
    return definition.layer if definition else Layer.symptom


def _finding(result: CheckResult) -> Finding:
    return Finding(
        check=result.check, target=result.target, status=result.status, summary=result.summary,
        resource=result.resource, evidence=result.evidence, hint=result.hint,
        severity=result.severity or _DEFAULT_SEVERITY[result.status], fixes=result.fixes,
    )


def rank_findings(results: list[CheckResult]) -> list[Finding]:
    problems = [r for r in results if r.status.is_problem]
    # An `error` means we could not look, not that something is broken: it ranks after real failures and
    # warnings, but is never hidden.
    problems.sort(key=lambda r: (_STATUS_RANK[r.status], _layer(r.check), r.severity or "P9", r.check, r.target))
    findings = [_finding(r) for r in problems]
    if findings and findings[0].status is Status.fail:
        top = findings[0]
        findings[0].explains = sorted({explained_id(f) for f in findings[1:] if f.status is Status.fail
                                       and _layer(f.check) > _layer(top.check) and same_path(top, f)})
    return findings


def explained_id(finding: Finding) -> str:
    """One failure, as `explains` lists it: a check on one target (the same check on two targets is two)."""
    return f"{finding.check} {finding.target}"


# Evidence keys that name the resource a result is about, besides `resource` and `target` themselves.
_PATH_EVIDENCE = ("load_balancer", "target_group", "target_groups", "function", "function_name", "subnet",
                  "subnets", "route_table", "table", "queue", "db_instance", "distribution", "url")
_AWS_NAMED = re.compile(r"(?:loadbalancer/(?:app|net|gwy)/|targetgroup/)([^/]+)/[0-9a-f]+$|:function:([^:]+)")


def same_path(a: Finding, b: Finding) -> bool:
    keys_a, keys_b = resource_keys(a), resource_keys(b)
    if not keys_a and not keys_b:
        return True
    return bool(keys_a & keys_b)


def resource_keys(finding: Finding) -> set[str]:
    """The resources a finding concerns, normalised so that two checks naming one thing differently agree: a URL
    and a TCP target become host:port, an ELB or Lambda ARN its name. A bare host is never a key: two ports of
    one host are two resources."""
    names = [finding.target or "", *(finding.resource or "").split(", ")]
    for key in _PATH_EVIDENCE:
        value = finding.evidence.get(key)
        names.extend(value if isinstance(value, list) else [value])
    return {k for k in (_resource_key(str(n)) for n in names if isinstance(n, str | int) and n) if k}


def _resource_key(name: str) -> str | None:
    name = name.strip().split(" (", 1)[0]
    if "://" in name:
        parts = urlsplit(name)
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
        return f"{parts.hostname}:{port}" if parts.hostname else None
    named = _AWS_NAMED.search(name)
    if named:
        return named.group(1) or named.group(2)
    if name.startswith(("alarms in ", "$")):
        return None  # a region's alarms, a DSN variable: not a resource path
    return name or None


def suggested_severity(findings: list[Finding]) -> Severity | None:
    real = [f.severity for f in findings if f.status in (Status.fail, Status.warn)]
    return min(real) if real else None  # "P0" < "P1" < ... as strings


def build_verdict(target: str, results: list[CheckResult]) -> Verdict:
    findings = rank_findings(results)
    counts = Counter(r.status.value for r in results)
    status = worst([r.status for r in results]) if results else Status.skipped
    return Verdict(
        target=target, status=status, headline=_headline(target, results, findings), findings=findings,
        severity=suggested_severity(findings), counts=dict(counts),
    )


def _headline(target: str, results: list[CheckResult], findings: list[Finding]) -> str:
    if not results:
        return f"No checks are configured for {target}."
    if not findings:
        return f"{target} looks healthy: all {len(results)} checks passed."
    top = findings[0]
    if top.status is Status.error and all(f.status is Status.error for f in findings):
        return f"Could not complete {len(findings)} of {len(results)} checks for {target}: {top.summary}"
    more = len(findings) - 1 - len(top.explains)
    tail = f" This explains {len(top.explains)} other failing check(s)." if top.explains else ""
    tail += f" {more} other finding(s) below." if more > 0 else ""
    return f"{top.summary}{tail}"
