"""One HTTP request or TCP connect to one address, and what went wrong told apart in words a responder can use.

Requests are pinned: the URL's host is replaced by an address `guard.allowed_addresses()` approved, while the
Host header, TLS SNI and certificate verification keep using the name. Redirects are never followed.

Failure kinds (the `kind` of an Outcome) and what they mean:
- `refused`: the address answered with a reset — nothing listens there, or a firewall rejects;
- `connect_timeout`: no answer to the connection attempt — packets are dropped on the way;
- `tls_timeout`: TCP connected but the TLS handshake did not finish;
- `read_timeout`: connected (and handshaked) but no response arrived in time — the server hangs;
- `tls_cert`: the certificate was rejected (expired, untrusted chain, wrong name);
- `tls_error`: the TLS handshake failed otherwise (e.g. the port does not speak TLS);
- `closed`: the server closed or reset the connection without a complete response;
- `no_route`: the bot itself has no route to the address (an IPv6 answer on an IPv4-only host) — not the target's
  fault, so callers do not count it against the target;
- `timeout`: the request as a whole took longer than allowed;
- `error`: any other connection failure (the detail says which).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

# Responses a probe sees are described with these headers only: enough to diagnose, nothing user-specific.
EVIDENCE_HEADERS = ("location", "cache-control", "age", "x-cache", "cf-cache-status", "via", "etag", "expires",
                    "last-modified", "server", "content-type")

FAILURE_PHRASES = {
    "refused": "connection refused",
    "connect_timeout": "timed out connecting",
    "tls_timeout": "TLS handshake timed out",
    "read_timeout": "connected but no response in time",
    "tls_cert": "TLS certificate rejected",
    "tls_error": "TLS handshake failed",
    "closed": "connection closed without a response",
    "no_route": "no route from the bot",
    "timeout": "request took too long",
    "error": "connection failed",
}


@dataclass
class Outcome:
    """What one attempt against one address produced: an HTTP status, or a failure kind with its detail."""

    address: str
    kind: str  # "response", "connected", or one of FAILURE_PHRASES
    latency_ms: float | None = None
    status: int | None = None
    detail: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def answered(self) -> bool:
        return self.kind in ("response", "connected")

    @property
    def phrase(self) -> str:
        if self.kind == "response":
            return f"HTTP {self.status}"
        if self.kind == "connected":
            return "connected"
        return FAILURE_PHRASES.get(self.kind, self.kind)

    def evidence(self) -> dict[str, Any]:
        data: dict[str, Any] = {"address": self.address, "outcome": self.kind}
        if self.status is not None:
            data["status"] = self.status
        if self.latency_ms is not None:
            data["latency_ms"] = round(self.latency_ms, 1)
        if self.detail:
            data["error"] = self.detail
        if self.headers.get("location"):
            data["location"] = self.headers["location"]
        return data


def with_route(addresses: list[str]) -> list[str]:
    """The addresses the bot's host has a route to (all of them when it has none, so the failure gets reported).

    A dual-stack load balancer answers AAAA too; from an IPv4-only bot those addresses fail instantly with "network
    unreachable", which says nothing about the target. A UDP connect() only looks the route up — no packet leaves.
    """
    routable = [address for address in addresses if _has_route(address)]
    return routable or addresses


def no_route(address: str) -> Outcome:
    """The outcome recorded for an address `with_route` left out."""
    return Outcome(address, "no_route", detail="the bot's host has no route to this address (family)")


def _has_route(address: str) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((address, 9))
        except OSError:
            return False
    return True


def time_left(ctx_remaining: float, preferred: float, *, margin: float = 0.25) -> float:
    """`preferred`, cut so the check answers before its deadline (the runner's own timeout is a last resort)."""
    return max(0.0, min(preferred, ctx_remaining - margin))


def request_timeouts(preferred: float, left: float) -> tuple[float, float]:
    """(per-phase timeout, whole-request cap) for a request that must end within `left` seconds.

    The cap stays above the phase timeout, so a request hanging in one phase ends with httpx's own, precise error
    (connect vs read timeout) rather than the cap's generic one."""
    timeout = max(0.05, min(preferred, 0.8 * left))
    return timeout, max(timeout, min(2 * timeout, left))


def pinned_request(client: httpx.AsyncClient, url: httpx.URL, address: str, *, headers: Mapping[str, str],
                   timeout: float) -> httpx.Request:
    """GET `url` at `address`, keeping the name for Host, SNI and certificate verification."""
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    request_headers = httpx.Headers({"Host": url.netloc.decode("ascii")})
    request_headers.update(headers)  # case-insensitive: a probe's own Host header wins
    return client.build_request(
        "GET",
        url.copy_with(host=address),
        headers=request_headers,
        timeout=httpx.Timeout(timeout),
        extensions=extensions,
    )


async def probe_http(client: httpx.AsyncClient, url: httpx.URL, address: str, *, timeout: float,
                     cap: float | None = None, headers: Mapping[str, str] | None = None) -> Outcome:
    """One GET of `url` at `address`. `timeout` bounds each phase (connect, read); `cap` bounds the whole request."""
    request = pinned_request(client, url, address, headers=headers or {}, timeout=timeout)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(cap if cap is not None else 2 * timeout):
            response = await client.send(request, follow_redirects=False)
    except TimeoutError:
        return Outcome(address, "timeout", detail=f"no complete response within {cap or 2 * timeout:.1f} s")
    except httpx.TransportError as exc:
        kind, detail = classify_http_error(exc, timeout)
        return Outcome(address, kind, detail=detail)
    latency_ms = (time.perf_counter() - started) * 1000
    kept = {name: response.headers[name] for name in EVIDENCE_HEADERS if name in response.headers}
    return Outcome(address, "response", latency_ms=latency_ms, status=response.status_code, headers=kept)


def classify_http_error(exc: httpx.TransportError, timeout: float) -> tuple[str, str]:
    """Map an httpx transport error to (kind, detail) by its class and what it was raised from."""
    causes = list(_chain(exc))
    if isinstance(exc, httpx.ConnectTimeout):
        if any(isinstance(cause, ssl.SSLError) for cause in causes):
            return "tls_timeout", f"TCP connected but the TLS handshake did not finish within {timeout:.1f} s"
        return "connect_timeout", f"no answer to the connection attempt within {timeout:.1f} s"
    if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout):
        return "read_timeout", f"connected, but no response within {timeout:.1f} s"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout", f"timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return "closed", _first_line(exc) or "the server closed the connection without a complete response"
    return classify_connect_error(causes)


def classify_connect_error(causes: list[BaseException]) -> tuple[str, str]:
    """(kind, detail) for a failed connection, from the exception and its causes."""
    for cause in causes:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "tls_cert", cause.verify_message or _first_line(cause)
        if isinstance(cause, ssl.SSLError):
            return "tls_error", cause.reason or _first_line(cause)
        if isinstance(cause, ConnectionRefusedError):
            return "refused", "the address answered the connection attempt with a reset"
        if isinstance(cause, ConnectionResetError):
            return "closed", "the connection was reset"
        if isinstance(cause, OSError) and cause.errno in (errno.ENETUNREACH, errno.EADDRNOTAVAIL):
            return "no_route", cause.strerror or "network unreachable"
        if isinstance(cause, OSError) and cause.errno == errno.EHOSTUNREACH:
            return "error", "host unreachable (an ICMP error came back)"
    return "error", _first_line(causes[-1]) if causes else "unknown error"


async def probe_tcp(address: str, port: int, *, timeout: float) -> Outcome:
    """Open (and close) one TCP connection to address:port."""
    started = time.perf_counter()
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout=timeout)
    except TimeoutError:
        return Outcome(address, "connect_timeout", detail=f"no answer to the connection attempt within {timeout:.1f} s")
    except OSError as exc:
        kind, detail = classify_connect_error(list(_chain(exc)))
        return Outcome(address, kind, detail=detail)
    latency_ms = (time.perf_counter() - started) * 1000
    writer.close()
    await _quietly_closed(writer)
    return Outcome(address, "connected", latency_ms=latency_ms)


async def _quietly_closed(writer: asyncio.StreamWriter) -> None:
    try:
        await asyncio.wait_for(writer.wait_closed(), timeout=1.0)
    except (OSError, TimeoutError, ssl.SSLError):
        pass


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
