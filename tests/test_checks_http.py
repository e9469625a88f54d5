"""http.health against real local servers: each way an endpoint breaks is named, and a healthy one stays ok."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from checks.http import http_health
from checks.model import CheckResult, Status
from checks.net.guard import static_resolver, use_resolver
from checks.registry import CheckContext
from checks.runner import make_http_client, run_service
from checks.services import parse_service
from tests.servers import (
    Reply,
    TestCA,
    blackhole_listener,
    closed_port,
    local_http_server,
    self_signed,
    silent_listener,
)

FAST = {"timeout_s": 0.3, "samples": 5}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client() as http:
        yield http


async def health(url: str, client: httpx.AsyncClient, *, deadline_s: float = 10, **probe: Any) -> CheckResult:
    service = parse_service({"http": [{"url": url, **FAST, **probe}]})
    ctx = CheckContext("api", service, datetime.now(UTC), client, deadline=time.monotonic() + deadline_s)
    return await http_health(service.http[0], ctx)


def outcomes(result: CheckResult) -> list[str]:
    return [sample["outcome"] for sample in result.evidence["samples"]]


async def test_healthy_endpoint_is_ok_with_latency_evidence(client: httpx.AsyncClient) -> None:
    with local_http_server({"/health": Reply(200)}) as server:
        result = await health(server.url("/health"), client)
    assert result.status is Status.ok, result.summary
    assert result.severity is None
    assert result.summary.startswith("All 5 samples returned 200")
    assert result.resource == server.url("/health")
    assert [s["status"] for s in result.evidence["samples"]] == [200] * 5
    assert result.evidence["median_ms"] is not None and result.evidence["max_ms"] >= result.evidence["median_ms"]
    assert server.hits == ["/health"] * 5


async def test_every_sample_500_is_p0_and_names_the_status(client: httpx.AsyncClient) -> None:
    with local_http_server({"/health": Reply(500)}) as server:
        result = await health(server.url("/health"), client)
    assert (result.status, result.severity) == (Status.fail, "P0")
    assert result.summary == "All 5 samples failed: HTTP 500; expected HTTP 200."
    assert [s["status"] for s in result.evidence["samples"]] == [500] * 5
    assert "application logs" in (result.hint or "")


async def test_three_of_five_failing_is_partial_p1(client: httpx.AsyncClient) -> None:
    script = [Reply(200), Reply(500), Reply(200), Reply(503), Reply(500)]
    with local_http_server({"/health": script}) as server:
        result = await health(server.url("/health"), client)
    assert (result.status, result.severity) == (Status.fail, "P1")
    assert result.summary.startswith("3 of 5 samples failed (2 × HTTP 500, 1 × HTTP 503)")
    assert result.evidence["failed"] == 3


async def test_an_expected_non_200_status_is_healthy(client: httpx.AsyncClient) -> None:
    with local_http_server({"/health": Reply(299)}) as server:
        result = await health(server.url("/health"), client, expect_status=[200, 299])
    assert result.status is Status.ok, result.summary


async def test_connection_refused(client: httpx.AsyncClient) -> None:
    with closed_port() as (host, port):
        result = await health(f"http://{host}:{port}/health", client)
    assert (result.status, result.severity) == (Status.fail, "P0")
    assert result.summary == "All 5 samples failed: connection refused."
    assert set(outcomes(result)) == {"refused"}
    assert "listening" in (result.hint or "")


async def test_connect_timeout_when_packets_are_dropped(client: httpx.AsyncClient) -> None:
    with blackhole_listener() as (host, port):
        result = await health(f"http://{host}:{port}/health", client, samples=2)
    assert (result.status, result.severity) == (Status.fail, "P0")
    assert result.summary == "All 2 samples failed: timed out connecting."
    assert set(outcomes(result)) == {"connect_timeout"}
    assert "security groups" in (result.hint or "")


async def test_read_timeout_when_the_server_accepts_but_never_answers(client: httpx.AsyncClient) -> None:
    with local_http_server({"/health": Reply(200, delay_s=5)}) as server:
        started = time.monotonic()
        result = await health(server.url("/health"), client, samples=2)
    assert time.monotonic() - started < 2, "each sample must stop at timeout_s"
    assert result.summary == "All 2 samples failed: connected but no response in time."
    assert set(outcomes(result)) == {"read_timeout"}
    assert "application" in (result.hint or "")


async def test_untrusted_certificate_is_a_tls_error(client: httpx.AsyncClient) -> None:
    leaf = self_signed(["127.0.0.1"])
    with local_http_server({"/health": Reply(200)}, ssl_context=leaf.server_context()) as server:
        result = await health(server.url("/health"), client, samples=1)
    assert result.summary == "All 1 samples failed: TLS certificate rejected."
    assert result.evidence["samples"][0]["outcome"] == "tls_cert"
    assert "self-signed" in result.evidence["samples"][0]["error"]
    assert "tls.certificate" in (result.hint or "")


async def test_https_by_name_is_pinned_to_the_checked_address_with_sni(tmp_path: Any) -> None:
    """The name is resolved once (here by an injected answer); the request goes to that address while the
    certificate is still verified against the name."""
    ca = TestCA()
    with local_http_server({"/health": Reply(200)}, ssl_context=ca.issue(["api.test"]).server_context()) as server:
        async with httpx.AsyncClient(verify=ca.client_context(), trust_env=False) as trusting_client:
            with use_resolver(static_resolver({"api.test": ["127.0.0.1"]})):
                result = await health(f"https://api.test:{server.port}/health", trusting_client, samples=2)
    assert result.status is Status.ok, result.summary
    assert result.evidence["addresses"] == ["127.0.0.1"]


async def test_name_that_does_not_resolve(client: httpx.AsyncClient) -> None:
    with use_resolver(static_resolver({})):
        result = await health("https://api.test/health", client)
    assert (result.status, result.severity) == (Status.fail, "P0")
    assert result.summary.startswith("api.test does not resolve (Name or service not known)")
    assert result.evidence["resolve_error"] == "Name or service not known"


async def test_redirect_is_reported_not_followed(client: httpx.AsyncClient) -> None:
    with local_http_server({"/health": Reply(301, headers={"Location": "/login"}), "/login": Reply(200)}) as server:
        result = await health(server.url("/health"), client, samples=2)
    assert result.status is Status.fail
    assert result.summary == "All 2 samples failed: HTTP 301 redirect to /login; expected HTTP 200."
    assert result.evidence["samples"][0]["location"] == "/login"
    assert "/login" not in server.hits
    assert "redirects" in (result.hint or "")


async def test_slow_median_warns_p2(client: httpx.AsyncClient) -> None:
    with local_http_server({"/health": Reply(200, delay_s=0.08)}) as server:
        slow = await health(server.url("/health"), client, samples=3, latency_ms=40, timeout_s=1)
        fine = await health(server.url("/health"), client, samples=3, latency_ms=1000, timeout_s=1)
    assert (slow.status, slow.severity) == (Status.warn, "P2")
    assert slow.summary.startswith("Median latency") and "above the 40 ms objective" in slow.summary
    assert slow.evidence["median_ms"] >= 80
    assert fine.status is Status.ok, fine.summary


async def test_one_dead_address_of_two_shows_as_partial_failure_at_that_address(client: httpx.AsyncClient) -> None:
    with local_http_server({"/health": Reply(200)}) as server, silent_listener("127.0.0.2", port=server.port):
        with use_resolver(static_resolver({"api.test": ["127.0.0.1", "127.0.0.2"]})):
            result = await health(f"http://api.test:{server.port}/health", client, samples=4)
    assert (result.status, result.severity) == (Status.fail, "P1")
    assert result.summary == ("2 of 4 samples failed (2 × connected but no response in time); "
                              "failing at 127.0.0.2.")
    assert [s["address"] for s in result.evidence["samples"]] == ["127.0.0.1", "127.0.0.2"] * 2


async def test_samples_stop_at_the_diagnosis_deadline(client: httpx.AsyncClient) -> None:
    with local_http_server({"/health": Reply(200, delay_s=5)}) as server:
        started = time.monotonic()
        result = await health(server.url("/health"), client, samples=10, deadline_s=1.0)
    assert time.monotonic() - started < 1.0
    assert "not_run" in outcomes(result) and "read_timeout" in outcomes(result)
    assert "samples not run: diagnosis deadline" in result.summary


async def test_metadata_address_is_refused_before_connecting(client: httpx.AsyncClient) -> None:
    with use_resolver(static_resolver({"api.test": ["169.254.169.254"]})):
        result = await health("http://api.test/latest/meta-data/", client)
    assert result.status is Status.error
    assert result.summary.startswith("Refused to connect: api.test resolves to 169.254.169.254")
    assert "samples" not in result.evidence


async def test_run_service_reports_each_endpoint_and_finishes_by_its_deadline() -> None:
    routes = {"/ok": Reply(200), "/broken": Reply(500), "/slow": Reply(200, delay_s=5)}
    with local_http_server(routes) as server, closed_port() as (host, port):
        service = parse_service({"http": [
            {"url": server.url("/ok"), **FAST},
            {"url": server.url("/broken"), **FAST},
            {"url": server.url("/slow"), **FAST},
            {"url": f"http://{host}:{port}/down", **FAST},
        ]})
        started = time.monotonic()
        results = await run_service("api", service, deadline_s=4)
        elapsed = time.monotonic() - started
    assert elapsed < 4
    by_target = {r.target: r for r in results if r.check == "http.health"}
    assert [(by_target[str(p.url)].status, by_target[str(p.url)].severity) for p in service.http] == [
        (Status.ok, None), (Status.fail, "P0"), (Status.fail, "P0"), (Status.fail, "P0")]
    assert "HTTP 500" in by_target[server.url("/broken")].summary
    assert "no response in time" in by_target[server.url("/slow")].summary
    assert "connection refused" in by_target[f"http://{host}:{port}/down"].summary
