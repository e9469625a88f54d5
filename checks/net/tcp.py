"""tcp.connect: can the bot open a TCP connection to host:port (a database, a cache, an internal API)?

Every address the name resolves to is tried, concurrently, so a dead replica or zone is not hidden behind a healthy
first answer. The three ways it fails need different fixes and are told apart: the name does not resolve (DNS),
the connection is refused (nothing listening, or a firewall rejecting), or it times out (packets dropped: security
group, NACL, route table).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from checks.model import CheckResult, Status
from checks.net import guard
from checks.net.probe import Outcome, no_route, probe_tcp, time_left, with_route
from checks.registry import CheckContext, check
from checks.services import TcpTarget

CHECK_LIMIT_S = 15.0
RESOLVE_TIMEOUT_S = 3.0
CONNECT_TIMEOUT_S = 3.0

_HINTS = {
    "refused": "The address answers but nothing accepts on port {port}: check the service is running there "
               "(e.g. the RDS instance status) and listens on that port, or a host firewall that rejects.",
    "connect_timeout": "Packets to port {port} are dropped: check the target's security group allows this port "
                       "from the clients' subnets, the network ACLs (including ephemeral ports 1024-65535 on the "
                       "way back) and the route tables between them.",
}
_DEFAULT_HINT = "Look at the evidence for each address's error, then at the network path to it."


@check("tcp.connect", timeout_s=CHECK_LIMIT_S)
async def tcp_connect(target: TcpTarget, ctx: CheckContext) -> CheckResult:
    """TCP: a connection to host:port opens in time."""
    ends_at = time.monotonic() + time_left(ctx.remaining(), CHECK_LIMIT_S)
    try:
        addresses = await guard.allowed_addresses(target.host, target.port, ctx, timeout=RESOLVE_TIMEOUT_S)
    except guard.NameNotResolved as exc:
        return CheckResult(
            status=Status.fail, severity="P1", resource=str(target),
            summary=f"{target.host} does not resolve ({exc}), so nothing can connect to {target}.",
            evidence={"host": target.host, "port": target.port, "resolve_error": str(exc)},
            hint="Check the endpoint name in the configuration (a renamed or deleted RDS instance/cluster changes "
                 "it), the private hosted zone and the VPC's DNS settings.",
        )
    except guard.TargetRefused as exc:
        return CheckResult(status=Status.error, summary=str(exc), resource=str(target))

    timeout = min(CONNECT_TIMEOUT_S, max(0.05, ends_at - time.monotonic()))
    reachable = with_route(addresses)
    outcomes = await asyncio.gather(*(probe_tcp(address, target.port, timeout=timeout) for address in reachable))
    return judge(target, [*outcomes, *(no_route(a) for a in addresses if a not in reachable)], timeout)


def judge(target: TcpTarget, outcomes: list[Outcome], timeout: float) -> CheckResult:
    probed = [o for o in outcomes if o.kind != "no_route"]
    dead = [o for o in probed if not o.answered]
    evidence: dict[str, Any] = {"host": target.host, "port": target.port,
                                "addresses": [o.evidence() for o in outcomes]}
    if probed and not dead:
        fastest = min(o.latency_ms or 0.0 for o in probed)
        return CheckResult(status=Status.ok, resource=str(target), evidence=evidence,
                           summary=f"{target} accepts connections ({', '.join(o.address for o in probed)}; "
                                   f"{fastest:.0f} ms).")
    if not probed:
        return CheckResult(status=Status.error, resource=str(target), evidence=evidence,
                           summary=f"The bot has no route to any address of {target.host} "
                                   f"({', '.join(o.address for o in outcomes)}).")
    first = dead[0]
    where = ", ".join(f"{o.address}: {o.detail or o.phrase}" for o in dead)
    if len(dead) < len(probed):
        summary = (f"{len(dead)} of {len(probed)} addresses of {target} fail ({where}); "
                   f"the others accept connections.")
        resource = ", ".join(f"{o.address}:{target.port}" for o in dead)
    elif first.kind == "refused":
        summary, resource = f"{target} refused the connection ({_addresses(dead)}).", str(target)
    elif first.kind == "connect_timeout":
        summary = f"Connecting to {target} timed out after {timeout:.1f} s ({_addresses(dead)})."
        resource = str(target)
    else:
        summary, resource = f"Could not connect to {target} ({where}).", str(target)
    return CheckResult(status=Status.fail, severity="P1", resource=resource, evidence=evidence, summary=summary,
                       hint=_HINTS.get(first.kind, _DEFAULT_HINT).format(port=target.port))


def _addresses(outcomes: list[Outcome]) -> str:
    return ", ".join(o.address for o in outcomes)

