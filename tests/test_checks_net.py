"""Network checks (dns, tcp, tls, cdn) and the address guard, against real local servers.

DNS answers are injected (`use_resolver(static_resolver(...))`) because made-up names cannot resolve otherwise;
everything a check connects to is a real socket on loopback. Certificates are made at test time, trusted through
SSL_CERT_FILE (which OpenSSL's default verify paths read), and expiry is judged against an injected `now`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from checks.aws.clients import AwsClients
from checks.model import CheckResult, Status
from checks.net import dns, guard
from checks.net.cdn import CACHING_DISABLED, cdn_cache_headers, cdn_distribution
from checks.net.dns import dns_resolve
from checks.net.guard import static_resolver, use_resolver
from checks.net.probe import Outcome, with_route
from checks.net.tcp import tcp_connect
from checks.net.tls import tls_certificate
from checks.registry import CheckContext
from checks.runner import make_http_client
from checks.services import ServiceSpec, parse_service
from tests.servers import (
    Reply,
    TestCA,
    blackhole_listener,
    closed_port,
    local_http_server,
    self_signed,
    silent_listener,
)

NOW = datetime.now(UTC)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client() as http:
        yield http


@pytest.fixture
def names() -> Iterator[dict[str, list[str]]]:
    """DNS for the test: fill in `names["api.test"] = [...]`; anything else does not resolve."""
    answers: dict[str, list[str]] = {}
    with use_resolver(static_resolver(answers)):
        yield answers


def context(service: ServiceSpec, http: httpx.AsyncClient, *, now: datetime = NOW, deadline_s: float = 3,
            aws: AwsClients | None = None) -> CheckContext:
    return CheckContext("api", service, now, http, aws=aws, deadline=time.monotonic() + deadline_s)


# ------------------------------------------------------------------------------------------------------ guard


@pytest.mark.parametrize(("address", "forbidden"), [
    ("169.254.169.254", True),
    ("fd00:ec2::254", True),
    ("fe80::1", True),
    ("100.100.100.200", True),
    ("::ffff:169.254.169.254", True),  # IPv4-mapped IPv6 must not slip through
    ("10.0.1.5", False),
    ("127.0.0.1", False),
    ("2600:1f18::1", False),
])
def test_guard_knows_metadata_and_link_local_addresses(address: str, forbidden: bool) -> None:
    assert guard.is_forbidden(address) is forbidden


def test_guard_refuses_a_name_if_any_answer_is_forbidden_unless_the_service_allows_it() -> None:
    with pytest.raises(guard.TargetRefused, match="api.test resolves to 169.254.169.254"):
        guard.refuse_forbidden("api.test", ["10.0.0.1", "169.254.169.254"], allow_link_local=False)
    guard.refuse_forbidden("api.test", ["169.254.169.254"], allow_link_local=True)
    guard.refuse_forbidden("api.test", ["10.0.0.1", "10.0.0.2"], allow_link_local=False)


@pytest.mark.parametrize("service", [
    {"dns": ["api.test"]},
    {"tcp": ["api.test:5432"]},
    {"tls": ["api.test:443"]},
    {"cdn": ["https://api.test/app.js"]},
])
async def test_every_connecting_check_refuses_a_name_that_rebinds_to_metadata(
        service: dict[str, Any], names: dict[str, list[str]], client: httpx.AsyncClient) -> None:
    names["api.test"] = ["169.254.169.254"]
    spec = parse_service(service)
    ctx = context(spec, client)
    check, item = {"dns": (dns_resolve, spec.dns), "tcp": (tcp_connect, spec.tcp), "tls": (tls_certificate, spec.tls),
                   "cdn": (cdn_cache_headers, spec.cdn)}[next(iter(service))]
    result = await check(item[0], ctx)
    assert result.status is Status.error
    assert result.summary.startswith("Refused to connect: api.test resolves to 169.254.169.254")
    assert "allow_link_local" in result.summary


# -------------------------------------------------------------------------------------------------------- dns


async def dns_check(host: str, http: httpx.AsyncClient, url: str) -> CheckResult:
    spec = parse_service({"dns": [host], "http": [{"url": url, "timeout_s": 0.3}]})
    return await dns_resolve(host, context(spec, http))


async def test_dns_every_address_answering_is_ok(names: dict[str, list[str]], client: httpx.AsyncClient) -> None:
    with local_http_server({"/health": Reply(200)}) as one, \
            local_http_server({"/health": Reply(200)}, host="127.0.0.3", port=one.port):
        names["api.test"] = ["127.0.0.1", "127.0.0.3"]
        result = await dns_check("api.test", client, f"http://api.test:{one.port}/health")
    assert result.status is Status.ok, result.summary
    assert result.summary == ("api.test resolves to 2 addresses and every one answers "
                              "(127.0.0.1: HTTP 200, 127.0.0.3: HTTP 200).")
    assert result.evidence["alive"] == ["127.0.0.1", "127.0.0.3"] and result.evidence["dead"] == []


async def test_dns_one_address_timing_out_is_a_zone_fault(names: dict[str, list[str]],
                                                          client: httpx.AsyncClient) -> None:
    with local_http_server({"/health": Reply(200)}) as server, silent_listener("127.0.0.2", port=server.port):
        names["api.test"] = ["127.0.0.1", "127.0.0.2"]
        started = time.monotonic()
        result = await dns_check("api.test", client, f"http://api.test:{server.port}/health")
    assert time.monotonic() - started < 3
    assert (result.status, result.severity) == (Status.fail, "P1")
    assert result.resource == "127.0.0.2"
    assert result.summary == ("1 of 2 addresses of api.test do not answer (127.0.0.2 connected but no response "
                              "in time) while 127.0.0.1 answers.")
    assert "route table" in (result.hint or "") and "network ACL" in (result.hint or "")
    assert result.evidence["dead"] == ["127.0.0.2"]
    assert result.evidence["url"] == f"http://api.test:{server.port}/health"  # the service's own URL and port


async def test_dns_every_address_dead_is_p0(names: dict[str, list[str]], client: httpx.AsyncClient) -> None:
    with closed_port() as (_, port), closed_port("127.0.0.2", port=port):
        names["api.test"] = ["127.0.0.1", "127.0.0.2"]
        result = await dns_check("api.test", client, f"http://api.test:{port}/")
    assert (result.status, result.severity) == (Status.fail, "P0")
    assert result.summary.startswith("None of the 2 addresses of api.test answers (127.0.0.1 connection refused")


async def test_dns_name_that_does_not_resolve(names: dict[str, list[str]], client: httpx.AsyncClient) -> None:
    result = await dns_check("api.test", client, "https://api.test/")
    assert (result.status, result.severity) == (Status.fail, "P0")
    assert result.summary == "api.test does not resolve (Name or service not known)."


def test_addresses_the_kernel_will_not_route_to_are_left_out_unless_nothing_else_remains() -> None:
    # UDP connect() to the broadcast address is refused locally (no SO_BROADCAST), like an IPv6 answer on an
    # IPv4-only host; nothing is sent either way.
    assert with_route(["255.255.255.255", "127.0.0.1"]) == ["127.0.0.1"]
    assert with_route(["255.255.255.255"]) == ["255.255.255.255"]


def test_dns_addresses_the_bot_cannot_route_to_are_not_blamed() -> None:
    outcomes = [Outcome("127.0.0.1", "response", latency_ms=3, status=200),
                Outcome("2001:db8::1", "no_route", detail="Network is unreachable")]
    result = dns.judge("api.test", httpx.URL("https://api.test/"), outcomes)
    assert result.status is Status.ok, result.summary
    assert result.evidence["not_probed"] == ["2001:db8::1"]


# -------------------------------------------------------------------------------------------------------- tcp


async def tcp_check(target: str, http: httpx.AsyncClient, deadline_s: float = 3) -> CheckResult:
    spec = parse_service({"tcp": [target]})
    return await tcp_connect(spec.tcp[0], context(spec, http, deadline_s=deadline_s))


async def test_tcp_listening_port_is_ok(client: httpx.AsyncClient) -> None:
    with silent_listener() as (host, port):
        result = await tcp_check(f"{host}:{port}", client)
    assert result.status is Status.ok, result.summary
    assert result.summary.startswith(f"{host}:{port} accepts connections (127.0.0.1;")


async def test_tcp_refused(client: httpx.AsyncClient) -> None:
    with closed_port() as (host, port):
        result = await tcp_check(f"{host}:{port}", client)
    assert (result.status, result.severity) == (Status.fail, "P1")
    assert result.summary == f"{host}:{port} refused the connection (127.0.0.1)."
    assert "nothing accepts" in (result.hint or "")


async def test_tcp_timeout_is_told_apart_from_refused(client: httpx.AsyncClient) -> None:
    with blackhole_listener() as (host, port):
        result = await tcp_check(f"{host}:{port}", client, deadline_s=0.8)
    assert result.status is Status.fail
    assert result.summary.startswith(f"Connecting to {host}:{port} timed out after 0.")
    assert result.evidence["addresses"][0]["outcome"] == "connect_timeout"
    assert "security group" in (result.hint or "")


async def test_tcp_name_that_does_not_resolve(names: dict[str, list[str]], client: httpx.AsyncClient) -> None:
    result = await tcp_check("db.test:5432", client)
    assert (result.status, result.severity) == (Status.fail, "P1")
    assert result.summary == "db.test does not resolve (Name or service not known), so nothing can connect to " \
                             "db.test:5432."


async def test_tcp_one_dead_replica_is_named(names: dict[str, list[str]], client: httpx.AsyncClient) -> None:
    with silent_listener() as (_, port), closed_port("127.0.0.2", port=port):
        names["db.test"] = ["127.0.0.1", "127.0.0.2"]
        result = await tcp_check(f"db.test:{port}", client)
    assert (result.status, result.severity) == (Status.fail, "P1")
    assert result.resource == f"127.0.0.2:{port}"
    assert result.summary.startswith(f"1 of 2 addresses of db.test:{port} fail (127.0.0.2:")


# -------------------------------------------------------------------------------------------------------- tls


@pytest.fixture
def ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestCA:
    """A CA the system trust store (OpenSSL's default verify paths) trusts for this test."""
    authority = TestCA()
    monkeypatch.setenv("SSL_CERT_FILE", str(authority.trust_file(tmp_path)))
    return authority


async def tls_check(server_port: int, http: httpx.AsyncClient, now: datetime = NOW, deadline_s: float = 3,
                    host: str = "api.test") -> CheckResult:
    spec = parse_service({"tls": [f"{host}:{server_port}"]})
    return await tls_certificate(spec.tls[0], context(spec, http, now=now, deadline_s=deadline_s))


@pytest.mark.parametrize(("days", "status", "severity", "summary"), [
    (90, Status.ok, None, "is trusted and valid for 89 more days"),
    (20, Status.warn, "P3", "expires in 19 days"),
    (10, Status.warn, "P2", "expires in 9 days"),
    (2, Status.fail, "P1", "expires in 1 day "),
    (-1, Status.fail, "P0", "expired 1 day ago"),
])
async def test_tls_expiry_thresholds(days: int, status: Status, severity: str | None, summary: str, ca: TestCA,
                                     names: dict[str, list[str]], client: httpx.AsyncClient) -> None:
    names["api.test"] = ["127.0.0.1"]
    # issued a few minutes before NOW, so "days left" is just under `days`
    leaf = ca.issue(["api.test"], days=days, now=NOW - timedelta(minutes=5))
    with local_http_server({}, ssl_context=leaf.server_context()) as server:
        result = await tls_check(server.port, client)
    assert (result.status, result.severity) == (status, severity), result.summary
    assert summary in result.summary
    assert result.evidence["san"] == ["api.test"]
    assert result.evidence["not_after"] == leaf.cert.not_valid_after_utc.isoformat()
    assert result.evidence["verified"] is (days > 0)


async def test_tls_expiry_uses_the_injected_clock(ca: TestCA, names: dict[str, list[str]],
                                                  client: httpx.AsyncClient) -> None:
    names["api.test"] = ["127.0.0.1"]
    with local_http_server({}, ssl_context=ca.issue(["api.test"], days=90).server_context()) as server:
        later = await tls_check(server.port, client, now=NOW + timedelta(days=100))
    assert (later.status, later.severity) == (Status.fail, "P0")
    assert "expired 9 days ago" in later.summary
    assert later.evidence["verified"] is True  # the chain is fine; only the (injected) date is past


async def test_tls_untrusted_chain_is_reported_with_the_certificate(names: dict[str, list[str]],
                                                                    client: httpx.AsyncClient) -> None:
    names["api.test"] = ["127.0.0.1"]
    with local_http_server({}, ssl_context=self_signed(["api.test"], days=90).server_context()) as server:
        result = await tls_check(server.port, client)
    assert (result.status, result.severity) == (Status.fail, "P1")
    assert result.summary.startswith(f"The certificate chain of api.test:{server.port} does not verify against the "
                                     "system trust store: self-signed certificate")
    assert result.evidence["self_signed"] is True and result.evidence["days_left"] > 80


async def test_tls_certificate_for_another_name(ca: TestCA, names: dict[str, list[str]],
                                                client: httpx.AsyncClient) -> None:
    names["api.test"] = ["127.0.0.1"]
    with local_http_server({}, ssl_context=ca.issue(["www.other.test"]).server_context()) as server:
        result = await tls_check(server.port, client)
    assert (result.status, result.severity) == (Status.fail, "P1")
    assert result.summary == (f"The certificate served on api.test:{server.port} does not cover api.test "
                              "(it is for www.other.test); clients reject it.")


async def test_tls_port_that_does_not_speak_tls(names: dict[str, list[str]], client: httpx.AsyncClient) -> None:
    names["api.test"] = ["127.0.0.1"]
    with local_http_server({"/": Reply(200)}) as plain_http:
        result = await tls_check(plain_http.port, client)
    assert (result.status, result.severity) == (Status.fail, "P1")
    assert result.summary.startswith(f"The TLS handshake with api.test:{plain_http.port} fails:")
    assert "serves TLS" in (result.hint or "")


@pytest.mark.parametrize(("endpoint", "reason"), [
    (closed_port, "the address answered the connection attempt with a reset."),
    (silent_listener, "no completed handshake within 0."),  # the rest of the deadline, a fraction of a second
])
async def test_tls_unreachable_endpoint_is_an_error_not_a_finding(endpoint: Any, reason: str,
                                                                 names: dict[str, list[str]],
                                                                 client: httpx.AsyncClient) -> None:
    names["api.test"] = ["127.0.0.1"]
    with endpoint() as (_, port):
        result = await tls_check(port, client, deadline_s=0.75)
    assert result.status is Status.error
    assert result.summary.startswith(f"Could not read the certificate of api.test:{port} at 127.0.0.1: {reason}")


# ---------------------------------------------------------------------------------------------- cdn headers


async def cdn_check(route: Reply | list[Reply], http: httpx.AsyncClient) -> CheckResult:
    with local_http_server({"/static/app.js": route}) as server:
        spec = parse_service({"cdn": [server.url("/static/app.js")]})
        result = await cdn_cache_headers(spec.cdn[0], context(spec, http))
        assert server.hits == ["/static/app.js"] * 2  # fetched twice, from the same address
    return result


async def test_cdn_cacheable_asset_hit_on_repeat_is_ok(client: httpx.AsyncClient) -> None:
    cached = {"Cache-Control": "public, max-age=31536000, immutable"}
    result = await cdn_check([Reply(headers={**cached, "X-Cache": "Miss from cloudfront"}),
                              Reply(headers={**cached, "X-Cache": "Hit from cloudfront", "Age": "1"})], client)
    assert result.status is Status.ok, result.summary
    assert "served from cache (X-Cache: Hit from cloudfront)" in result.summary
    assert result.evidence["repeat"]["headers"]["age"] == "1"


async def test_cdn_no_store_on_an_asset_warns(client: httpx.AsyncClient) -> None:
    result = await cdn_check(Reply(headers={"Cache-Control": "no-store"}), client)
    assert (result.status, result.severity) == (Status.warn, "P2")
    assert "Cache-Control says no-store" in result.summary
    assert result.evidence["first"]["headers"]["cache-control"] == "no-store"


async def test_cdn_repeat_miss_warns(client: httpx.AsyncClient) -> None:
    result = await cdn_check(Reply(headers={"Cache-Control": "max-age=3600", "X-Cache": "Miss from cloudfront"}),
                             client)
    assert (result.status, result.severity) == (Status.warn, "P2")
    assert "the repeat request was still a cache miss (X-Cache: Miss from cloudfront)" in result.summary


@pytest.mark.parametrize(("cache_control", "flagged"), [
    ("max-age=0", "max-age=0"),
    ("private, max-age=600", "private"),
    ("max-age=0, s-maxage=3600", None),  # browsers revalidate, the CDN keeps it: fine
])
async def test_cdn_max_age_zero_unless_shared_caches_may_keep_it(cache_control: str, flagged: str | None,
                                                                 client: httpx.AsyncClient) -> None:
    result = await cdn_check(Reply(headers={"Cache-Control": cache_control, "X-Cache": "Hit from cloudfront"}),
                             client)
    if flagged:
        assert result.status is Status.warn and f"Cache-Control says {flagged}" in result.summary
    else:
        assert result.status is Status.ok, result.summary


async def test_cdn_missing_asset_fails(client: httpx.AsyncClient) -> None:
    result = await cdn_check(Reply(404, headers={"X-Cache": "Error from cloudfront"}), client)
    assert (result.status, result.severity) == (Status.fail, "P1")
    assert "returns HTTP 404" in result.summary


async def test_cdn_unreachable_asset_is_an_error(client: httpx.AsyncClient) -> None:
    with closed_port() as (host, port):
        spec = parse_service({"cdn": [f"http://{host}:{port}/app.js"]})
        result = await cdn_cache_headers(spec.cdn[0], context(spec, client))
    assert result.status is Status.error
    assert result.summary.endswith("at 127.0.0.1: the address answered the connection attempt with a reset.")


# ----------------------------------------------------------------------------------------- cdn distribution


def _distribution(aws: AwsClients, **behavior: Any) -> str:
    config = {
        "CallerReference": str(time.monotonic_ns()), "Comment": "", "Enabled": True,
        "Origins": {"Quantity": 1, "Items": [{"Id": "app", "DomainName": "app.s3.amazonaws.com",
                                              "S3OriginConfig": {"OriginAccessIdentity": ""}}]},
        "DefaultCacheBehavior": {"TargetOriginId": "app", "ViewerProtocolPolicy": "redirect-to-https", **behavior},
    }
    client = aws.client("cloudfront", "us-east-1")
    return str(client.create_distribution(DistributionConfig=config)["Distribution"]["Id"])


LEGACY = {"ForwardedValues": {"QueryString": False, "Cookies": {"Forward": "none"}}, "MinTTL": 0}


async def distribution_check(aws: AwsClients, distribution_id: str, http: httpx.AsyncClient) -> CheckResult:
    spec = parse_service({"aws": {"distributions": [distribution_id]}})
    return await cdn_distribution(distribution_id, context(spec, http, aws=aws))


@pytest.mark.parametrize(("behavior", "status", "summary"), [
    ({**LEGACY, "DefaultTTL": 0, "MaxTTL": 0}, Status.warn, "DefaultTTL=0, MaxTTL=0 (legacy TTL settings)"),
    ({**LEGACY, "DefaultTTL": 86400, "MaxTTL": 31536000}, Status.ok, "DefaultTTL=86400, MaxTTL=31536000"),
    ({"CachePolicyId": CACHING_DISABLED}, Status.warn, "(managed cache policy CachingDisabled)"),
    ({"CachePolicyId": "658327ea-f89d-4fab-a63d-7e88639e58f6"}, Status.ok, "managed cache policy CachingOptimized"),
])
async def test_cdn_distribution_default_ttls(behavior: dict[str, Any], status: Status, summary: str,
                                             aws: AwsClients, client: httpx.AsyncClient) -> None:
    result = await distribution_check(aws, _distribution(aws, **behavior), client)
    assert result.status is status, result.summary
    assert summary in result.summary
    assert result.severity == ("P2" if status is Status.warn else None)


async def test_cdn_distribution_unknown_id_is_an_error_with_a_sentence(aws: AwsClients,
                                                                       client: httpx.AsyncClient) -> None:
    result = await distribution_check(aws, "E000NOTREAL", client)
    assert result.status is Status.error
    assert result.summary.startswith("cloudfront:GetDistributionConfig failed: NoSuchDistribution")
