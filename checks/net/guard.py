"""Where a probe may connect: resolve a name once, refuse metadata/link-local answers, connect to what was checked.

The services file is validated, but validation sees names, not addresses: `api.example.com` can resolve to
169.254.169.254 tomorrow (DNS rebinding), and a probe that re-resolves the name when it connects would then read the
instance-metadata service. So every network check asks `allowed_addresses()` for the addresses and connects to
exactly those (with the name kept for the Host header, SNI and certificate checks).

Name resolution goes through a resolver held in a context variable, so tests and dry runs can answer DNS for
made-up names (`with use_resolver(static_resolver({...})):`) without patching the socket module.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from checks.services import is_link_local

if TYPE_CHECKING:
    from checks.registry import CheckContext

Resolver = Callable[[str, int], Awaitable[list[str]]]


class NameNotResolved(Exception):
    """The name has no address (NXDOMAIN, no A/AAAA record) or the resolver did not answer in time."""


class TargetRefused(Exception):
    """The name resolved to an address probes must not touch; the message is the sentence a responder reads."""


async def system_resolver(host: str, port: int) -> list[str]:
    """Every A/AAAA answer from the operating system's resolver, in its order, without duplicates."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def static_resolver(answers: Mapping[str, Sequence[str]]) -> Resolver:
    """A resolver that answers from `answers`; literal IP addresses resolve to themselves, other names fail."""

    async def resolve(host: str, port: int) -> list[str]:
        if _is_ip_literal(host):
            return [host.strip("[]")]
        if host not in answers or not answers[host]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(answers[host])

    return resolve


_resolver: ContextVar[Resolver] = ContextVar("checks_net_resolver", default=system_resolver)


@contextmanager
def use_resolver(resolver: Resolver) -> Iterator[None]:
    """Resolve names with `resolver` inside this block (and in tasks started from it)."""
    token = _resolver.set(resolver)
    try:
        yield
    finally:
        _resolver.reset(token)


def is_forbidden(address: str) -> bool:
    """True for link-local / instance-metadata addresses, including IPv4 ones written as IPv6 (::ffff:169.254.x.x)."""
    if is_link_local(address):
        return True
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0].strip("[]"))
    except ValueError:
        return False
    embedded = getattr(ip, "ipv4_mapped", None) or getattr(ip, "sixtofour", None)
    return embedded is not None and is_link_local(str(embedded))


def refuse_forbidden(host: str, addresses: Sequence[str], *, allow_link_local: bool) -> None:
    """Raise TargetRefused when any answer for `host` is forbidden (a name that half-points at metadata is hostile)."""
    if allow_link_local:
        return
    forbidden = [address for address in addresses if is_forbidden(address)]
    if forbidden:
        raise TargetRefused(
            f"Refused to connect: {host} resolves to {', '.join(forbidden)}, a link-local/instance-metadata "
            "address. Set allow_link_local: true on the service only if probing it is intended."
        )


async def resolve(host: str, port: int, *, timeout: float) -> list[str]:
    """Resolve with the current resolver; NameNotResolved carries a short reason."""
    try:
        addresses = await asyncio.wait_for(_resolver.get()(host, port), timeout=max(timeout, 0.01))
    except socket.gaierror as exc:
        raise NameNotResolved(exc.strerror or str(exc)) from exc
    except TimeoutError as exc:
        raise NameNotResolved(f"the resolver did not answer within {timeout:.1f} s") from exc
    if not addresses:
        raise NameNotResolved("no A/AAAA records")
    return addresses


async def allowed_addresses(host: str, port: int, ctx: CheckContext, *, timeout: float) -> list[str]:
    """The addresses a probe of `host` may connect to; raises NameNotResolved or TargetRefused."""
    addresses = await resolve(host, port, timeout=timeout)
    refuse_forbidden(host, addresses, allow_link_local=ctx.service.allow_link_local)
    return addresses


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
