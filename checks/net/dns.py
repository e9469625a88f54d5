"""dns.resolve: does the name resolve, and does every address it resolves to answer?

A load balancer has one address per availability zone. When one zone's subnet routes its return traffic through a
NAT gateway, or its network ACL drops the ephemeral ports, that one address stops answering while the others are
fine — clients see a fraction of requests hang. So every A/AAAA answer is probed, concurrently, with an HTTP GET
carrying the name (Host header, SNI): a TCP connect alone would miss a node that accepts connections but never
answers. Any HTTP status counts as "answers"; whether it is the right one is http.health's question.

The URL probed at each address is the service's own http/cdn URL on the same host when there is one (its scheme,
port, path and, for an http probe, timeout_s), otherwise https://<name>/ with a 5 s timeout.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from checks.model import CheckResult, Status
from checks.net import guard
from checks.net.probe import Outcome, no_route, probe_http, request_timeouts, time_left, with_route
from checks.registry import CheckContext, check

CHECK_LIMIT_S = 20.0
RESOLVE_TIMEOUT_S = 3.0
PROBE_TIMEOUT_S = 5.0

_ZONE_HINT = (
    "One address failing while the others answer points at one availability zone: check that zone's subnet route "
    "table (0.0.0.0/0 must go to the internet gateway, not a NAT gateway) and its network ACL (inbound and outbound "
    "ephemeral ports 1024-65535), and the targets registered in that zone."
)


@check("dns.resolve", timeout_s=CHECK_LIMIT_S)
async def dns_resolve(host: str, ctx: CheckContext) -> CheckResult:
    """DNS: the name resolves and every address it returns answers."""
    ends_at = time.monotonic() + time_left(ctx.remaining(), CHECK_LIMIT_S)
    url, preferred_timeout = probe_url(host, ctx)
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = await guard.allowed_addresses(host, port, ctx, timeout=RESOLVE_TIMEOUT_S)
    except guard.NameNotResolved as exc:
        return CheckResult(
            status=Status.fail, severity="P0", resource=host,
            summary=f"{host} does not resolve ({exc}).",
            evidence={"host": host, "resolve_error": str(exc)},
            hint="Check the record in the hosted zone (and an alias's target), the VPC's DNS settings and the "
                 "resolver the clients use.",
        )
    except guard.TargetRefused as exc:
        return CheckResult(status=Status.error, summary=str(exc), resource=host)

    timeout, cap = request_timeouts(preferred_timeout, ends_at - time.monotonic())
    reachable = with_route(addresses)
    outcomes = await asyncio.gather(*(probe_http(ctx.http, url, address, timeout=timeout, cap=cap)
                                      for address in reachable))
    return judge(host, url, [*outcomes, *(no_route(a) for a in addresses if a not in reachable)])


def probe_url(host: str, ctx: CheckContext) -> tuple[httpx.URL, float]:
    """The service's own URL on `host` and its timeout if it has one (same scheme/port/path as real traffic),
    else https://host/ with the default timeout."""
    candidates = [(str(p.url), p.timeout_s) for p in ctx.service.http]
    candidates += [(str(u), PROBE_TIMEOUT_S) for u in ctx.service.cdn]
    for candidate, timeout in candidates:
        url = httpx.URL(candidate)
        if url.host == host.lower():
            return url, timeout
    return httpx.URL(f"https://{host}/"), PROBE_TIMEOUT_S


def judge(host: str, url: httpx.URL, outcomes: list[Outcome]) -> CheckResult:
    probed = [o for o in outcomes if o.kind != "no_route"]  # the bot's missing IPv6 route is not the target's fault
    dead = [o for o in probed if not o.answered]
    alive = [o for o in probed if o.answered]
    evidence: dict[str, Any] = {
        "host": host, "url": str(url),
        "addresses": [o.evidence() for o in outcomes],
        "alive": [o.address for o in alive], "dead": [o.address for o in dead],
        "not_probed": [o.address for o in outcomes if o.kind == "no_route"],
    }
    if not probed:
        return CheckResult(status=Status.error, resource=host, evidence=evidence,
                           summary=f"{host} resolves only to addresses the bot has no route to "
                                   f"({', '.join(o.address for o in outcomes)}).")
    if not dead:
        return CheckResult(status=Status.ok, resource=host, evidence=evidence,
                           summary=f"{host} resolves to {_count(len(alive), 'address')} and every one answers "
                                   f"({', '.join(f'{o.address}: {o.phrase}' for o in alive)}).")
    failures = "; ".join(f"{o.address} {o.phrase}" for o in dead)
    if alive:
        return CheckResult(
            status=Status.fail, severity="P1", resource=", ".join(o.address for o in dead), evidence=evidence,
            summary=f"{len(dead)} of {len(probed)} addresses of {host} do not answer ({failures}) while "
                    f"{', '.join(o.address for o in alive)} answer{'s' if len(alive) == 1 else ''}.",
            hint=_ZONE_HINT,
        )
    return CheckResult(
        status=Status.fail, severity="P0", resource=host, evidence=evidence,
        summary=(f"The only address of {host} does not answer ({failures})." if len(probed) == 1
                 else f"None of the {len(probed)} addresses of {host} answers ({failures})."),
        hint="Every address fails, so it is not one zone: check the load balancer (listener, security group, "
             "state) and the network path from the clients to it.",
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}es" if noun.endswith("s") else f"{n} {noun}s"
