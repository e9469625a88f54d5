"""http.health: is the service's HTTP endpoint up, answering with the expected status, and fast enough?

Samples run one after another, not concurrently: latency is the point of the check, and parallel requests from the
bot would measure the bot's own burst and load a service that may already be struggling. Each sample is bounded by
the probe's `timeout_s` and the whole check by the diagnosis deadline, so a hanging endpoint costs at most
samples × timeout_s; samples the deadline leaves no room for are reported as not run.

When the name has several addresses (an ALB has one per zone), samples rotate over them as clients' DNS
round-robin would, so a dead zone shows up as partial failures here and is pinned down by `dns.resolve`.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from typing import Any

import httpx

from checks.model import CheckResult, Status
from checks.net import guard
from checks.net.probe import (
    Outcome,
    probe_http,
    request_timeouts,
    time_left,
    with_route,
)
from checks.registry import CheckContext, check
from checks.services import HttpProbe

CHECK_LIMIT_S = 90.0
RESOLVE_TIMEOUT_S = 3.0

_HINTS = {
    "refused": "Nothing is listening on that port, or a firewall actively rejects: check the process or the load "
               "balancer listener and the port it serves.",
    "connect_timeout": "Packets are dropped before they reach the server: check security groups, network ACLs and "
                       "route tables on the path (dns.resolve shows whether one zone's address is the dead one).",
    "tls_timeout": "TCP connects but TLS never completes: check the TLS listener/terminator on that port.",
    "read_timeout": "The server accepts connections but does not answer: look at the application (hung workers, "
                    "a slow dependency, exhausted connection pools) and its logs.",
    "timeout": "Responses take far too long: look at the application and its dependencies.",
    "tls_cert": "Clients reject the certificate: tls.certificate shows its expiry, chain and names.",
    "tls_error": "The TLS handshake fails: check the port serves TLS and its protocol/cipher settings.",
    "closed": "The server drops connections mid-request: check the app for crashes/restarts and the load "
              "balancer's idle timeouts.",
    "status": "The endpoint answers with an unexpected status: check the application logs around these requests.",
    "redirect": "The URL redirects: point the probe at the final URL, or add the code to expect_status.",
}


@check("http.health", timeout_s=CHECK_LIMIT_S)
async def http_health(probe: HttpProbe, ctx: CheckContext) -> CheckResult:
    """HTTP health: status and latency over several samples."""
    url = httpx.URL(str(probe.url))
    port = url.port or (443 if url.scheme == "https" else 80)
    ends_at = time.monotonic() + time_left(ctx.remaining(), CHECK_LIMIT_S)
    try:
        addresses = await guard.allowed_addresses(url.host, port, ctx, timeout=min(RESOLVE_TIMEOUT_S,
                                                                                    ends_at - time.monotonic()))
    except guard.NameNotResolved as exc:
        return CheckResult(
            status=Status.fail, severity="P0", resource=str(url),
            summary=f"{url.host} does not resolve ({exc}), so no request can reach {url}.",
            evidence={"url": str(url), "host": url.host, "resolve_error": str(exc)},
            hint="Check the DNS record (hosted zone, alias target) and the resolver the service's clients use.",
        )
    except guard.TargetRefused as exc:
        return CheckResult(status=Status.error, summary=str(exc), resource=str(url))

    samples = await _take_samples(ctx, probe, url, addresses, ends_at)
    return judge(probe, url, addresses, samples)


async def _take_samples(ctx: CheckContext, probe: HttpProbe, url: httpx.URL, addresses: list[str],
                        ends_at: float) -> list[Outcome | None]:
    samples: list[Outcome | None] = []
    reachable = with_route(addresses)
    for n in range(probe.samples):
        left = ends_at - time.monotonic()
        if left < min(0.05, probe.timeout_s):
            samples.append(None)  # the deadline leaves no room: not run
            continue
        timeout, cap = request_timeouts(probe.timeout_s, left)
        samples.append(await probe_http(ctx.http, url, reachable[n % len(reachable)], timeout=timeout, cap=cap,
                                        headers=probe.headers))
    return samples


def judge(probe: HttpProbe, url: httpx.URL, addresses: list[str], samples: list[Outcome | None]) -> CheckResult:
    """Turn the samples into one result: failures first (all → P0, some → P1), then latency (P2)."""
    ran = [s for s in samples if s is not None]
    failed = [s for s in ran if not _passed(s, probe)]
    latencies = [s.latency_ms for s in ran if s.latency_ms is not None]
    median_ms = round(statistics.median(latencies), 1) if latencies else None
    max_ms = round(max(latencies), 1) if latencies else None
    evidence: dict[str, Any] = {
        "url": str(url), "addresses": addresses, "expect_status": probe.expect_status,
        "latency_objective_ms": probe.latency_ms, "timeout_s": probe.timeout_s,
        "samples": [_sample_evidence(n, s) for n, s in enumerate(samples, start=1)],
        "failed": len(failed), "ran": len(ran), "median_ms": median_ms, "max_ms": max_ms,
    }
    not_run = len(samples) - len(ran)
    tail = f" ({not_run} of {len(samples)} samples not run: diagnosis deadline)" if not_run else ""
    base = {"resource": str(url), "evidence": evidence}
    if not ran:
        return CheckResult(status=Status.error, summary=f"No sample of {url} could run before the deadline.", **base)
    if failed:
        return _failure_result(probe, ran, failed, tail, base)
    if median_ms is not None and median_ms > probe.latency_ms:
        return CheckResult(
            status=Status.warn, severity="P2",
            summary=f"Median latency {median_ms:.0f} ms is above the {probe.latency_ms} ms objective "
                    f"(max {max_ms:.0f} ms over {len(ran)} samples){tail}.",
            hint="Responses are slow but correct: compare with the latency/saturation of the app and its "
                 "dependencies (database, downstream APIs) over the same minutes.",
            **base,
        )
    statuses = ", ".join(sorted({str(s.status) for s in ran}))
    return CheckResult(
        status=Status.ok,
        summary=f"All {len(ran)} samples returned {statuses}; median {median_ms:.0f} ms, max {max_ms:.0f} ms{tail}.",
        **base,
    )


def _failure_result(probe: HttpProbe, ran: list[Outcome], failed: list[Outcome], tail: str,
                    base: dict[str, Any]) -> CheckResult:
    counts = Counter(_failure_label(s) for s in failed)
    breakdown = ", ".join(f"{count} × {label}" for label, count in counts.most_common())
    if len(failed) < len(ran):
        summary, severity = f"{len(failed)} of {len(ran)} samples failed ({breakdown})", "P1"
    elif len(counts) == 1:
        summary, severity = f"All {len(ran)} samples failed: {next(iter(counts))}", "P0"
    else:
        summary, severity = f"All {len(ran)} samples failed ({breakdown})", "P0"
    if any(s.kind == "response" for s in failed):
        summary += f"; expected HTTP {'/'.join(str(code) for code in probe.expect_status)}"
    failing_at = sorted({s.address for s in failed})
    if len(failing_at) < len({s.address for s in ran}):
        summary += f"; failing at {', '.join(failing_at)}"
    return CheckResult(status=Status.fail, severity=severity, summary=summary + tail + ".",
                       hint=_hint(failed, counts), **base)


def _passed(sample: Outcome, probe: HttpProbe) -> bool:
    return sample.kind == "response" and sample.status in probe.expect_status


def _failure_label(sample: Outcome) -> str:
    if sample.kind != "response":
        return sample.phrase
    if sample.status is not None and 300 <= sample.status < 400 and sample.headers.get("location"):
        return f"HTTP {sample.status} redirect to {sample.headers['location']}"
    return f"HTTP {sample.status}"


def _hint(failed: list[Outcome], counts: Counter[str]) -> str:
    label = counts.most_common(1)[0][0]
    sample = next(s for s in failed if _failure_label(s) == label)
    if sample.kind != "response":
        return _HINTS.get(sample.kind, "Look at the endpoint directly; the evidence lists each sample's error.")
    if sample.status is not None and 300 <= sample.status < 400:
        return _HINTS["redirect"]
    return _HINTS["status"]


def _sample_evidence(n: int, sample: Outcome | None) -> dict[str, Any]:
    if sample is None:
        return {"n": n, "outcome": "not_run"}
    return {"n": n, **sample.evidence()}
