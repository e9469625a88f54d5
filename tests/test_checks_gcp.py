"""GCP checks against a local Google Cloud (tests/gcp_fake.py): google-auth really mints a token from a fake
service-account key at the local token endpoint, and every check has a broken and a healthy scenario."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from checks.gcp import api
from checks.gcp.changes import cloud_run_changes
from checks.gcp.lb import backend_service
from checks.gcp.logs import logging_errors
from checks.gcp.run import cloud_run, cloud_run_traffic
from checks.gcp.sql import cloud_sql, cloud_sql_access
from checks.gcp.storage import storage
from checks.model import Status
from checks.registry import CheckContext, registered_checks
from checks.runner import make_http_client, run_service
from checks.services import ServiceSpec, parse_service
from checks.targets import LogTarget, run_filter
from checks.verdict import build_verdict
from tests.gcp_fake import FakeGcp, fake_gcp

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
PROJECT, REGION, APP_SA = "shop-prod", "us-central1", "api@shop-prod.iam.gserviceaccount.com"
RUN = f"/v2/projects/{PROJECT}/locations/{REGION}/services"
SQL = f"/v1/projects/{PROJECT}/instances"
SERIES = f"/v3/projects/{PROJECT}/timeSeries"
ROLES_DOC = Path(__file__).resolve().parent.parent / "deploy" / "gcp-roles.md"


@pytest.fixture
def gcp(tmp_path: Path) -> Iterator[FakeGcp]:
    api.forget_credentials()
    with fake_gcp() as fake:
        fake.key_file(tmp_path)
        yield fake
        assert fake.unknown == [], "the checks called an endpoint that OPERATIONS (and gcp-roles.md) do not list"
    api.forget_credentials()


def gcp_spec(**resources: Any) -> ServiceSpec:
    return parse_service({"gcp": {"project": PROJECT, "region": REGION, "service_account": APP_SA, **resources}})


@pytest.fixture
async def ctx_for(gcp: FakeGcp, tmp_path: Path) -> Any:
    http = make_http_client()

    def make(**resources: Any) -> CheckContext:
        return CheckContext(service_name="shop", service=gcp_spec(**resources), now=NOW, http=http,
                            env={"GCP_API_ENDPOINT": gcp.url,
                                 "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "sa.json")})

    yield make
    await http.aclose()


def at(minutes_before: float) -> str:
    return (NOW - timedelta(minutes=minutes_before)).isoformat().replace("+00:00", "Z")


def run_service_body(*, failed: bool) -> dict[str, Any]:
    name = f"projects/{PROJECT}/locations/{REGION}/services/api"
    body = {
        "name": name, "reconciling": False, "uri": "https://api-xyz.a.run.app",
        "terminalCondition": {"type": "Ready", "state": "CONDITION_SUCCEEDED"},
        "latestReadyRevision": f"{name}/revisions/api-00006-xyz", "latestCreatedRevision": f"{name}/revisions/api-00006-xyz",
        "traffic": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100}],
        "trafficStatuses": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "revision": "api-00006-xyz",
                             "percent": 100}],
        "template": {"scaling": {"minInstanceCount": 1}},
    }
    if failed:
        body["terminalCondition"] = {"type": "Ready", "state": "CONDITION_FAILED", "reason": "REVISION_FAILED",
                                     "message": "Revision 'api-00007-abc' is not ready and cannot serve traffic."}
        body["latestCreatedRevision"] = f"{name}/revisions/api-00007-abc"
        body["trafficStatuses"][0]["type"] = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"
    return body


def revisions_body(*created_minutes_before: float) -> dict[str, Any]:
    name = f"projects/{PROJECT}/locations/{REGION}/services/api/revisions"
    revisions = []
    for index, minutes in enumerate(created_minutes_before, start=6):
        revision = {"name": f"{name}/api-{index:05d}-r{index}", "createTime": at(minutes),
                    "containers": [{"image": f"gcr.io/shop/api:{index}"}],
                    "conditions": [{"type": "Ready", "state": "CONDITION_SUCCEEDED"}]}
        revisions.append(revision)
    return {"revisions": revisions}


def failed_revision() -> dict[str, Any]:
    return {"revisions": [{
        "name": f"projects/{PROJECT}/locations/{REGION}/services/api/revisions/api-00007-abc", "createTime": at(20),
        "conditions": [{"type": "Ready", "state": "CONDITION_FAILED", "reason": "HEALTH_CHECK_CONTAINER_ERROR",
                        "message": "The user-provided container failed to start and listen on the port defined "
                                   "provided by the PORT=8080 environment variable."}]}]}


def timeseries(by_metric: dict[str, list[tuple[dict[str, str], float]]]) -> Any:
    """A timeSeries.list answer chosen by the filter's metric.type; each series one point."""

    def answer(query: dict[str, list[str]], _body: Any) -> tuple[int, Any]:
        metric = re.search(r'metric.type="([^"]+)"', query["filter"][0]).group(1)  # type: ignore[union-attr]
        found = [{"metric": {"type": metric, "labels": labels}, "resource": {"type": "x", "labels": {}},
                  "points": [{"interval": {"endTime": at(0)},
                              "value": {"doubleValue": value} if "latenc" in metric else {"int64Value": str(int(value))}}]}
                 for labels, value in by_metric.get(metric, [])]
        return 200, {"timeSeries": found}

    return answer


def log_entries(entries: list[dict[str, Any]]) -> Any:
    return lambda _query, _body: (200, {"entries": entries})


def error_entry(minutes_before: float, text: str, revision: str = "api-00007-r7") -> dict[str, Any]:
    return {"logName": f"projects/{PROJECT}/logs/run.googleapis.com%2Fstderr", "severity": "ERROR",
            "timestamp": at(minutes_before), "textPayload": text, "insertId": text[-6:],
            "resource": {"type": "cloud_run_revision", "labels": {"service_name": "api", "revision_name": revision}}}


# --- credentials ------------------------------------------------------------------------------------------------


async def test_google_auth_mints_a_token_at_the_local_endpoint_once_and_every_call_carries_it(
        gcp: FakeGcp, ctx_for: Any) -> None:
    gcp.answer("GET", f"{RUN}/api", (200, run_service_body(failed=False)))
    gcp.answer("GET", f"{RUN}/api/revisions", (200, revisions_body(600)))
    gcp.answer("GET", SERIES, timeseries({}))
    ctx = ctx_for(cloud_run=["api"])

    first = await cloud_run("api", ctx)
    second = await cloud_run("api", ctx)

    assert first.status is Status.ok and second.status is Status.ok
    assert gcp.token_requests == 1  # the signed JWT was verified by the server and the token reused
    assert gcp.ops()[:2] == ["run.services.get", "run.revisions.list"]


async def test_without_credentials_every_gcp_check_is_an_error_that_says_how_to_provide_them(
        gcp: FakeGcp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from google.auth.compute_engine import _metadata

    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", True)  # no metadata server here; don't wait for one
    spec = gcp_spec(cloud_run=["api"], cloud_sql=["orders-db"], buckets=["shop-uploads"],
                    backend_services=["web"])

    results = await run_service("shop", spec, now=NOW, env={"GCP_API_ENDPOINT": gcp.url})

    gcp_results = [r for r in results if r.check.startswith("gcp.")]
    assert {r.check for r in gcp_results} == {"gcp.cloud_run", "gcp.cloud_run_traffic", "gcp.cloud_run_changes",
                                              "gcp.cloud_sql", "gcp.storage", "gcp.backend_service", "gcp.logging"}
    assert all(r.status is Status.error for r in gcp_results)
    assert all("GOOGLE_APPLICATION_CREDENTIALS" in (r.hint or "") for r in gcp_results)
    assert gcp.hits == []


async def test_a_missing_key_file_is_an_error_naming_it(gcp: FakeGcp, ctx_for: Any, tmp_path: Path) -> None:
    ctx = ctx_for(cloud_run=["api"])
    ctx.env["GOOGLE_APPLICATION_CREDENTIALS"] = str(tmp_path / "gone.json")

    result = await cloud_run("api", ctx)

    assert result.status is Status.error and "gone.json" in result.summary


async def test_a_403_names_the_permission_and_role(gcp: FakeGcp, ctx_for: Any) -> None:
    gcp.answer("GET", f"{SQL}/orders-db", (403, {"error": {"code": 403, "message": "not authorized",
                                                          "status": "PERMISSION_DENIED"}}))
    result = await cloud_sql(gcp_spec(cloud_sql=["orders-db"]).gcp.cloud_sql[0], ctx_for(cloud_sql=["orders-db"]))

    assert result.status is Status.error
    assert "cloudsql.instances.get" in result.summary and "roles/cloudsql.viewer" in result.summary


# --- Cloud Run -----------------------------------------------------------------------------------------------------


async def test_a_failed_rollout_names_the_bad_revision_its_container_error_and_what_still_serves(
        gcp: FakeGcp, ctx_for: Any) -> None:
    gcp.answer("GET", f"{RUN}/api", (200, run_service_body(failed=True)))
    gcp.answer("GET", f"{RUN}/api/revisions", (200, failed_revision()))

    result = await cloud_run("api", ctx_for(cloud_run=["api"]))

    assert result.status is Status.fail and result.severity == "P1"
    assert "REVISION_FAILED" in result.summary
    assert "revision api-00007-abc of api never became ready" in result.summary and "failed to start and listen" in result.summary
    assert "api-00006-xyz still serves" in result.summary
    assert "--to-revisions api-00006-xyz=100" in (result.hint or "")


async def test_min_instances_zero_with_cold_starts_is_a_warning(gcp: FakeGcp, ctx_for: Any) -> None:
    body = run_service_body(failed=False)
    body["template"]["scaling"]["minInstanceCount"] = 0
    gcp.answer("GET", f"{RUN}/api", (200, body))
    gcp.answer("GET", f"{RUN}/api/revisions", (200, revisions_body(600)))
    gcp.answer("GET", SERIES, timeseries({"run.googleapis.com/container/startup_latencies": [({}, 14)]}))

    result = await cloud_run("api", ctx_for(cloud_run=["api"]))

    assert result.status is Status.warn and "14 cold start(s)" in result.summary
    assert "--min-instances 1" in (result.hint or "")


async def test_5xx_ratio_from_monitoring_fails_and_a_quiet_service_passes(gcp: FakeGcp, ctx_for: Any) -> None:
    gcp.answer("GET", SERIES, timeseries({
        "run.googleapis.com/request_count": [({"response_code_class": "2xx"}, 900),
                                             ({"response_code_class": "5xx"}, 100)],
        "run.googleapis.com/request_latencies": [({}, 850.0)]}))
    ctx = ctx_for(cloud_run=["api"])

    broken = await cloud_run_traffic("api", ctx)

    assert broken.status is Status.fail and "1000 requests" in broken.summary and "10.0%" in broken.summary
    assert broken.evidence["p99_ms"] == 850.0
    filters = [h.query["filter"][0] for h in gcp.hits]
    assert any('metric.type="run.googleapis.com/request_count"' in f and 'service_name="api"' in f for f in filters)
    gcp.answer("GET", SERIES, timeseries({"run.googleapis.com/request_count": [({"response_code_class": "2xx"}, 500)]}))
    assert (await cloud_run_traffic("api", ctx)).status is Status.ok


async def test_a_revision_deployed_just_before_the_errors_is_the_rollback_candidate(gcp: FakeGcp, ctx_for: Any) -> None:
    gcp.answer("GET", f"{RUN}/api/revisions", (200, revisions_body(300, 40)))
    gcp.answer("POST", "/v2/entries:list", log_entries([
        error_entry(30, "ERROR KeyError: 'currency' in order 8812"), error_entry(25, "ERROR KeyError: 'currency' in order 99")]))

    result = await cloud_run_changes("api", ctx_for(cloud_run=["api"]))

    assert result.status is Status.fail and result.severity == "P1"
    assert result.summary.startswith("Errors started 10 min after deploy of api revision api-00007-r7")
    assert "--to-revisions api-00006-r6=100" in (result.hint or "")
    body = next(h.body for h in gcp.hits if h.operation == "logging.entries.list")
    assert body["resourceNames"] == [f"projects/{PROJECT}"] and "severity>=ERROR" in body["filter"]


async def test_revisions_without_errors_after_them_are_listed_as_fine(gcp: FakeGcp, ctx_for: Any) -> None:
    gcp.answer("GET", f"{RUN}/api/revisions", (200, revisions_body(300)))
    gcp.answer("POST", "/v2/entries:list", log_entries([]))

    result = await cloud_run_changes("api", ctx_for(cloud_run=["api"]))

    assert result.status is Status.ok and "no errors after them" in result.summary


# --- Cloud Logging -----------------------------------------------------------------------------------------------


async def test_log_errors_are_deduplicated_into_signatures_like_cloudwatch(gcp: FakeGcp, ctx_for: Any) -> None:
    entries = [error_entry(50 - i, f"ERROR payment 4{i}21 failed: upstream 10.0.0.{i}:443 timeout") for i in range(11)]
    entries.append({**error_entry(5, ""), "textPayload": None, "httpRequest": {"status": 503, "requestMethod": "GET",
                                                                               "requestUrl": "/checkout"}})
    gcp.answer("POST", "/v2/entries:list", log_entries(entries))
    target = LogTarget("Cloud Run api", run_filter("api"))

    result = await logging_errors(target, ctx_for(cloud_run=["api"]))

    assert result.status is Status.fail and result.evidence["errors"] == 12
    top = result.evidence["signatures"][0]
    assert top["count"] == 11 and top["signature"] == "[ERROR] ERROR payment <N> failed: upstream <IP> timeout"
    assert result.evidence["signature_count"] == 2


async def test_no_error_entries_is_ok(gcp: FakeGcp, ctx_for: Any) -> None:
    gcp.answer("POST", "/v2/entries:list", log_entries([]))
    result = await logging_errors(LogTarget("Cloud Run api", run_filter("api")), ctx_for(cloud_run=["api"]))
    assert result.status is Status.ok


# --- Cloud SQL ---------------------------------------------------------------------------------------------------


def sql_instance(state: str = "RUNNABLE", **settings: Any) -> dict[str, Any]:
    return {"name": "orders-db", "state": state, "databaseVersion": "POSTGRES_16",
            "connectionName": f"{PROJECT}:{REGION}:orders-db",
            "settings": {"tier": "db-custom-2-7680", "activationPolicy": "ALWAYS",
                         "ipConfiguration": {"ipv4Enabled": True, "sslMode": "ENCRYPTED_ONLY",
                                             "authorizedNetworks": [{"value": "203.0.113.0/24"}]}, **settings},
            "ipAddresses": [{"type": "PRIMARY", "ipAddress": "34.1.2.3"}],
            "serverCaCert": {"expirationTime": "2027-06-01T00:00:00.000Z"}}


async def test_a_suspended_instance_fails_with_its_reason(gcp: FakeGcp, ctx_for: Any) -> None:
    gcp.answer("GET", f"{SQL}/orders-db", (200, {**sql_instance("SUSPENDED"), "suspensionReason": ["BILLING_ISSUE"]}))
    ctx = ctx_for(cloud_sql=["orders-db"])
    result = await cloud_sql(ctx.service.gcp.cloud_sql[0], ctx)
    assert result.status is Status.fail and "suspended" in result.summary and "BILLING_ISSUE" in result.summary
    assert result.resource == f"{PROJECT}:{REGION}:orders-db"


async def test_connections_near_the_tier_limit_fail_and_headroom_passes(gcp: FakeGcp, ctx_for: Any) -> None:
    gcp.answer("GET", f"{SQL}/orders-db", (200, sql_instance()))  # 7.5 GB → PostgreSQL default 200
    metric = "cloudsql.googleapis.com/database/postgresql/num_backends"
    gcp.answer("GET", SERIES, timeseries({metric: [({}, 190)]}))
    ctx = ctx_for(cloud_sql=["orders-db"])

    full = await cloud_sql(ctx.service.gcp.cloud_sql[0], ctx)

    assert full.status is Status.fail and "190 of 200 connections" in full.summary
    gcp.answer("GET", SERIES, timeseries({metric: [({}, 40)]}))
    healthy = await cloud_sql(ctx.service.gcp.cloud_sql[0], ctx)
    assert healthy.status is Status.ok and "40/200" in healthy.summary


async def test_an_expiring_server_ca_warns(gcp: FakeGcp, ctx_for: Any) -> None:
    gcp.answer("GET", f"{SQL}/orders-db", (200, {**sql_instance(), "serverCaCert": {"expirationTime": at(-60 * 24 * 10)}}))
    gcp.answer("GET", SERIES, timeseries({}))
    ctx = ctx_for(cloud_sql=["orders-db"])
    result = await cloud_sql(ctx.service.gcp.cloud_sql[0], ctx)
    assert result.status is Status.warn and "server CA certificate expires" in result.summary


async def test_ssl_mode_and_network_path_against_the_client(gcp: FakeGcp, ctx_for: Any) -> None:
    cert_required = sql_instance(ipConfiguration={"ipv4Enabled": True, "sslMode": "TRUSTED_CLIENT_CERTIFICATE_REQUIRED",
                                                  "authorizedNetworks": [{"value": "203.0.113.0/24"}]})
    gcp.answer("GET", f"{SQL}/orders-db", (200, cert_required))
    ctx = ctx_for(cloud_sql=[{"instance": "orders-db", "client_ssl": "tls", "path": "public",
                              "client_cidrs": ["203.0.113.7/32"]}])
    ssl = await cloud_sql_access(ctx.service.gcp.cloud_sql[0], ctx)
    assert ssl.status is Status.fail and "requires a trusted client certificate" in ssl.summary

    ctx = ctx_for(cloud_sql=[{"instance": "orders-db", "path": "private"}])
    private = await cloud_sql_access(ctx.service.gcp.cloud_sql[0], ctx)
    assert private.status is Status.fail and "has no private IP" in private.summary

    ctx = ctx_for(cloud_sql=[{"instance": "orders-db", "path": "public", "client_cidrs": ["198.51.100.9/32"]}])
    outside = await cloud_sql_access(ctx.service.gcp.cloud_sql[0], ctx)
    assert outside.status is Status.fail and "198.51.100.9/32" in outside.summary

    gcp.answer("GET", f"{SQL}/orders-db", (200, sql_instance()))
    ctx = ctx_for(cloud_sql=[{"instance": "orders-db", "client_ssl": "tls", "path": "public",
                              "client_cidrs": ["203.0.113.7/32"]}])
    assert (await cloud_sql_access(ctx.service.gcp.cloud_sql[0], ctx)).status is Status.ok


# --- Cloud Storage -----------------------------------------------------------------------------------------------


def bucket_meta(prevention: str = "inherited", uniform: bool = True) -> dict[str, Any]:
    return {"name": "shop-uploads", "iamConfiguration": {"publicAccessPrevention": prevention,
                                                          "uniformBucketLevelAccess": {"enabled": uniform}}}


def policy(*bindings: tuple[str, list[str]]) -> dict[str, Any]:
    return {"version": 3, "etag": "CAE=", "bindings": [{"role": r, "members": m} for r, m in bindings]}


async def test_a_write_bucket_without_a_create_binding_names_the_missing_binding(gcp: FakeGcp, ctx_for: Any) -> None:
    gcp.answer("GET", "/storage/v1/b/shop-uploads", (200, bucket_meta()))
    gcp.answer("GET", "/storage/v1/b/shop-uploads/iam",
               (200, policy(("roles/storage.objectViewer", [f"serviceAccount:{APP_SA}"]))))
    gcp.answer("POST", f"/v1/projects/{PROJECT}:getIamPolicy", (200, policy(("roles/viewer", ["user:ann@shop.example"]))))
    ctx = ctx_for(buckets=[{"name": "shop-uploads", "access": "write"}])

    result = await storage(ctx.service.gcp.buckets[0], ctx)

    assert result.status is Status.fail and result.severity == "P1"
    assert "storage.objects.create" in result.summary and "403" in result.summary
    assert "roles/storage.objectCreator" in result.summary
    assert f"--member=serviceAccount:{APP_SA} --role=roles/storage.objectCreator" in (result.hint or "")


async def test_a_project_level_grant_counts_and_a_public_bucket_warns(gcp: FakeGcp, ctx_for: Any) -> None:
    gcp.answer("GET", "/storage/v1/b/shop-uploads", (200, bucket_meta()))
    gcp.answer("GET", "/storage/v1/b/shop-uploads/iam", (200, policy(("roles/storage.objectViewer", ["allUsers"]))))
    gcp.answer("POST", f"/v1/projects/{PROJECT}:getIamPolicy",
               (200, policy(("roles/storage.objectUser", [f"serviceAccount:{APP_SA}"]))))
    ctx = ctx_for(buckets=[{"name": "shop-uploads", "access": "write"}])

    public = await storage(ctx.service.gcp.buckets[0], ctx)
    assert public.status is Status.warn and "allUsers" in public.summary and public.evidence["missing"] == []

    gcp.answer("GET", "/storage/v1/b/shop-uploads", (200, bucket_meta(prevention="enforced")))
    healthy = await storage(ctx.service.gcp.buckets[0], ctx)
    assert healthy.status is Status.ok and "public access prevention blocks" in healthy.summary


async def test_the_write_probe_deletes_its_object_and_a_denied_upload_fails(gcp: FakeGcp, ctx_for: Any) -> None:
    gcp.answer("GET", "/storage/v1/b/shop-uploads", (200, bucket_meta()))
    gcp.answer("GET", "/storage/v1/b/shop-uploads/iam",
               (200, policy(("roles/storage.objectUser", [f"serviceAccount:{APP_SA}"]))))
    gcp.answer("POST", "/upload/storage/v1/b/shop-uploads/o", lambda q, _b: (200, {"name": q["name"][0]}))
    gcp.answer("GET", "/storage/v1/b/shop-uploads/o/", (200, {"name": "probe"}))
    gcp.answer("DELETE", "/storage/v1/b/shop-uploads/o/", (204, None))
    ctx = ctx_for(buckets=[{"name": "shop-uploads", "access": "write", "probe_write": True}])

    ok = await storage(ctx.service.gcp.buckets[0], ctx)

    assert ok.status is Status.ok, ok.summary
    assert list(ok.evidence["probe"]["steps"]) == ["storage.objects.create", "storage.objects.get",
                                                   "storage.objects.delete"]
    uploaded = next(h.query["name"][0] for h in gcp.hits if h.operation == "storage.objects.insert")
    deleted = next(h.path for h in gcp.hits if h.operation == "storage.objects.delete")
    assert uploaded.startswith("_diagnose/probe-") and deleted.endswith("/o/" + uploaded.replace("/", "%2F"))

    gcp.answer("POST", "/upload/storage/v1/b/shop-uploads/o", (403, {"error": {"code": 403, "message": "denied"}}))
    denied = await storage(ctx.service.gcp.buckets[0], ctx)
    assert denied.status is Status.fail and "storage.objects.create" in denied.summary
    assert "storage.objects.delete" not in denied.evidence["probe"]["steps"]  # nothing written, nothing to delete


# --- load balancer and CDN -------------------------------------------------------------------------------------


BS = f"/compute/v1/projects/{PROJECT}/global/backendServices/web"
GROUP = f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/zones/us-central1-a/instanceGroups/web-ig"


def health(*states: str) -> dict[str, Any]:
    return {"kind": "compute#backendServiceGroupHealth", "healthStatus": [
        {"healthState": s, "ipAddress": f"10.0.0.{i}", "port": 8080,
         "instance": f"projects/{PROJECT}/zones/us-central1-a/instances/web-{i}"} for i, s in enumerate(states)]}


async def test_all_backends_unhealthy_fail_and_forced_caching_of_per_user_pages_fails(gcp: FakeGcp, ctx_for: Any) -> None:
    gcp.answer("GET", BS, (200, {"name": "web", "backends": [{"group": GROUP}], "enableCDN": False}))
    gcp.answer("POST", f"{BS}/getHealth", (200, health("UNHEALTHY", "UNHEALTHY")))
    ctx = ctx_for(backend_services=[{"name": "web", "per_user": True}])

    down = await backend_service(ctx.service.gcp.backend_services[0], ctx)

    assert down.status is Status.fail and "Every backend of web is unhealthy (2)" in down.summary
    assert next(h.body for h in gcp.hits if h.operation == "compute.backendServices.getHealth") == {"group": GROUP}
    gcp.answer("POST", f"{BS}/getHealth", (200, health("HEALTHY", "HEALTHY")))
    gcp.answer("GET", BS, (200, {"name": "web", "backends": [{"group": GROUP}], "enableCDN": True,
                                 "cdnPolicy": {"cacheMode": "FORCE_CACHE_ALL"}}))
    gcp.answer("GET", SERIES, timeseries({}))
    leak = await backend_service(ctx.service.gcp.backend_services[0], ctx)
    assert leak.status is Status.fail and "FORCE_CACHE_ALL" in leak.summary


async def test_low_cdn_hit_ratio_warns_and_a_healthy_cached_backend_passes(gcp: FakeGcp, ctx_for: Any) -> None:
    gcp.answer("GET", BS, (200, {"name": "web", "backends": [{"group": GROUP}], "enableCDN": True,
                                 "cdnPolicy": {"cacheMode": "USE_ORIGIN_HEADERS"}}))
    gcp.answer("POST", f"{BS}/getHealth", (200, health("HEALTHY", "UNHEALTHY")))
    metric = "loadbalancing.googleapis.com/https/request_count"
    gcp.answer("GET", SERIES, timeseries({metric: [({"cache_result": "HIT"}, 20), ({"cache_result": "MISS"}, 980)]}))
    ctx = ctx_for(backend_services=["web"])

    partly = await backend_service(ctx.service.gcp.backend_services[0], ctx)
    assert partly.status is Status.warn and "1 of 2 backends of web are unhealthy: web-1" in partly.summary

    gcp.answer("POST", f"{BS}/getHealth", (200, health("HEALTHY", "HEALTHY")))
    cold = await backend_service(ctx.service.gcp.backend_services[0], ctx)
    assert cold.status is Status.warn and "hit 2% of 1000 requests" in cold.summary

    gcp.answer("GET", SERIES, timeseries({metric: [({"cache_result": "HIT"}, 900), ({"cache_result": "MISS"}, 100)]}))
    assert (await backend_service(ctx.service.gcp.backend_services[0], ctx)).status is Status.ok


# --- the whole run: registration, verdict, documented permissions ---------------------------------------------


def test_gcp_checks_are_registered_with_descriptions_for_diagnose_list() -> None:
    checks = {k: v for k, v in registered_checks().items() if k.startswith("gcp.")}
    assert set(checks) == {"gcp.cloud_run", "gcp.cloud_run_traffic", "gcp.cloud_run_changes", "gcp.cloud_sql",
                           "gcp.cloud_sql_access", "gcp.storage", "gcp.backend_service", "gcp.logging"}
    assert all(d.description and not d.description.startswith("gcp.") for d in checks.values())


async def test_the_verdict_ranks_the_missing_grant_before_the_failed_rollout_before_the_5xx(
        gcp: FakeGcp, tmp_path: Path) -> None:
    gcp.answer("GET", f"{RUN}/api", (200, run_service_body(failed=True)))
    gcp.answer("GET", f"{RUN}/api/revisions", (200, failed_revision()))
    gcp.answer("GET", SERIES, timeseries({"run.googleapis.com/request_count": [
        ({"response_code_class": "2xx"}, 10), ({"response_code_class": "5xx"}, 90)]}))
    gcp.answer("POST", "/v2/entries:list", log_entries([]))
    gcp.answer("GET", "/storage/v1/b/shop-uploads", (200, bucket_meta()))
    gcp.answer("GET", "/storage/v1/b/shop-uploads/iam", (200, policy()))
    gcp.answer("POST", f"/v1/projects/{PROJECT}:getIamPolicy", (200, policy()))
    spec = gcp_spec(cloud_run=["api"], buckets=[{"name": "shop-uploads", "access": "write"}])

    results = await run_service("shop", spec, now=NOW, env={"GCP_API_ENDPOINT": gcp.url,
                                                            "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "sa.json")})
    verdict = build_verdict("shop", results)

    failing = [f.check for f in verdict.findings if f.status is Status.fail]
    assert failing == ["gcp.storage", "gcp.cloud_run", "gcp.cloud_run_traffic"]
    assert gcp.token_requests == 1


def test_every_operation_the_checks_call_has_its_permission_and_role_in_gcp_roles_md() -> None:
    doc = ROLES_DOC.read_text()
    missing = [f"{name}: {op.permission}" for name, op in api.OPERATIONS.items()
               if f"`{op.permission}`" not in doc or f"`{name}`" not in doc]
    assert missing == []
