"""Pulumi stack state read straight from the backend: a directory (file://), an S3 bucket in moto, and Pulumi
Cloud as a local HTTP server. Each scenario writes the files the CLI would write, in its layout and shapes."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.settings import ConfigError, parse_services
from checks.aws.changes import recent_changes
from checks.aws.clients import AwsClients
from checks.iac.pulumi import pulumi_drift, pulumi_stack
from checks.model import CheckResult, Status
from checks.registry import CheckContext
from checks.schema import replace
from checks.services import AwsSpec, PulumiSpec, ServiceSpec
from checks.verdict import build_verdict
from tests.aws_lambda_scenarios import put_log_lines
from tests.servers import Reply, local_http_server

NOW = datetime.now(UTC).replace(microsecond=0)
STACK = "web/prod"
PROVIDER = "urn:pulumi:prod::web::pulumi:providers:aws::default_6_0_0"


def resource(type_: str, name: str, id_: str, **extra: Any) -> dict[str, Any]:
    return {"urn": f"urn:pulumi:prod::web::{type_}::{name}", "custom": True, "id": id_, "type": type_,
            "inputs": {}, "outputs": {}, "provider": f"{PROVIDER}::04da6b54", **extra}


def provider(region: str = "us-east-1") -> dict[str, Any]:
    return {"urn": PROVIDER, "custom": True, "id": "04da6b54", "type": "pulumi:providers:aws:default_6_0_0",
            "inputs": {"region": region}, "outputs": {"region": region}}


def checkpoint(resources: list[dict[str, Any]], pending: list[tuple[str, dict[str, Any]]] = ()) -> dict[str, Any]:
    """A `VersionedCheckpoint` as `pulumi up` leaves it (pending_operations only when interrupted)."""
    latest: dict[str, Any] = {
        "manifest": {"time": NOW.isoformat(), "magic": "", "version": "v3.140.0"},
        "secrets_providers": {"type": "passphrase", "state": {"salt": "v1:abc"}},
        "resources": [provider(), *resources],
    }
    if pending:
        latest["pending_operations"] = [{"resource": r, "type": op} for op, r in pending]
    return {"version": 3, "checkpoint": {"stack": f"organization/{STACK}", "config": {}, "latest": latest}}


def update_info(result: str, started: datetime, *, author: str = "dana", commit: str = "9f1c2ab77e01") -> dict:
    return {"kind": "update", "startTime": int(started.timestamp()), "message": "deploy", "result": result,
            "endTime": int((started + timedelta(minutes=2)).timestamp()),
            "environment": {"git.head": commit, "git.author": author, "exec.kind": "cli"},
            "config": {}, "resourceChanges": {"same": 4, "update": 1}}


class Backend:
    """Writes the `.pulumi/` tree the DIY backend keeps, through `put(key, bytes)` (a directory or a bucket)."""

    def __init__(self, put: Callable[[str, bytes], None]) -> None:
        self.put = put

    def state(self, document: dict[str, Any], *, gz: bool = False) -> None:
        raw = json.dumps(document).encode()
        self.put(".pulumi/stacks/web/prod.json" + (".gz" if gz else ""), gzip.compress(raw) if gz else raw)

    def lock(self, since: datetime, lock_id: str = "3f0c7a0e-5a1e-4d6e-9d0e-4f2b8c1d2e3f") -> None:
        body = {"pid": 4242, "username": "ci", "hostname": "runner-1", "timestamp": since.isoformat()}
        self.put(f".pulumi/locks/organization/web/prod/{lock_id}.json", json.dumps(body).encode())

    def history(self, info: dict[str, Any]) -> None:
        nanos = info["startTime"] * 10**9
        self.put(f".pulumi/history/web/prod/prod-{nanos}.history.json", json.dumps(info).encode())
        self.put(f".pulumi/history/web/prod/prod-{nanos}.checkpoint.json", b"{}")


@pytest.fixture
def directory(tmp_path: Path) -> Backend:
    def put(key: str, raw: bytes) -> None:
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(raw)

    return Backend(put)


def file_context(tmp_path: Path, *, aws: AwsClients | None = None, **spec: Any) -> CheckContext:
    service = ServiceSpec(pulumi=PulumiSpec(backend=f"file://{tmp_path}", stacks=[STACK]), **spec)
    return CheckContext(service_name="web", service=service, now=NOW, http=None, aws=aws)  # type: ignore[arg-type]


# --- file backend --------------------------------------------------------------------------------------------


async def test_a_healthy_stack_reports_its_last_successful_update(tmp_path: Path, directory: Backend) -> None:
    directory.state(checkpoint([resource("aws:s3/bucket:Bucket", "assets", "assets-1a2b")]))
    directory.history(update_info("failed", NOW - timedelta(hours=5)))
    directory.history(update_info("succeeded", NOW - timedelta(hours=3)))

    result = await pulumi_stack(STACK, file_context(tmp_path))

    assert result.status is Status.ok, result.summary
    assert result.summary == "Stack web/prod: last update succeeded 3 h ago; not locked, no pending operations."
    assert [u["result"] for u in result.evidence["updates"]] == ["failed", "succeeded"]
    assert result.evidence["resources"] == 2


async def test_pending_operations_in_a_gzipped_checkpoint_name_the_resources_and_the_recovery(
        tmp_path: Path, directory: Backend) -> None:
    bucket = resource("aws:s3/bucket:Bucket", "uploads", "")
    function = resource("aws:lambda/function:Function", "api-handler", "api-handler-7c1d")
    directory.state(checkpoint([function], pending=[("creating", bucket), ("updating", function)]), gz=True)

    result = await pulumi_stack(STACK, file_context(tmp_path))

    assert (result.status, result.severity) == (Status.fail, "P2")
    assert result.summary.startswith("Stack web/prod has 2 pending operations left by an interrupted update "
                                     "(creating uploads (aws:s3/bucket:Bucket), updating api-handler "
                                     "(aws:lambda/function:Function))")
    assert "stack has pending operations" in result.summary
    assert "`pulumi refresh --stack web/prod`" in result.hint and "--clear-pending-creates" in result.hint
    assert "`pulumi stack export --stack web/prod --file state.json`" in result.hint
    assert [p["operation"] for p in result.evidence["pending_operations"]] == ["creating", "updating"]


async def test_the_newest_checkpoint_variant_wins(tmp_path: Path, directory: Backend) -> None:
    bucket = resource("aws:s3/bucket:Bucket", "uploads", "")
    directory.state(checkpoint([], pending=[("creating", bucket)]))  # an old plain .json the CLI left behind
    old = (NOW - timedelta(days=2)).timestamp()
    os.utime(tmp_path / ".pulumi/stacks/web/prod.json", (old, old))
    directory.state(checkpoint([bucket]), gz=True)

    result = await pulumi_stack(STACK, file_context(tmp_path))

    assert result.status is Status.ok, result.summary


async def test_a_lock_held_for_hours_says_by_whom_and_to_cancel(tmp_path: Path, directory: Backend) -> None:
    directory.state(checkpoint([]))
    directory.lock(NOW - timedelta(hours=3))

    result = await pulumi_stack(STACK, file_context(tmp_path))

    assert (result.status, result.severity) == (Status.fail, "P2")
    assert result.summary.startswith("Stack web/prod has been locked for 3.0 h by ci@runner-1 (pid 4242)")
    assert "`pulumi cancel --stack web/prod`" in result.hint
    assert result.evidence["locks"][0]["minutes"] == 180


async def test_a_fresh_lock_with_operations_in_flight_is_an_update_running(tmp_path: Path,
                                                                          directory: Backend) -> None:
    directory.state(checkpoint([], pending=[("updating", resource("aws:s3/bucket:Bucket", "assets", "a-1"))]))
    directory.lock(NOW - timedelta(minutes=4))

    result = await pulumi_stack(STACK, file_context(tmp_path))

    assert (result.status, result.severity) == (Status.warn, "P3")
    assert result.summary == ("An update of web/prod is running: for 4 min by ci@runner-1 (pid 4242) "
                              "(1 operation in flight).")


async def test_a_failed_last_update_names_who_when_and_the_resources_that_failed(
        tmp_path: Path, directory: Backend) -> None:
    broken = resource("aws:lambda/function:Function", "api-handler", "api-handler-7c1d",
                      initErrors=["timeout while waiting for state to become 'Active'"])
    directory.state(checkpoint([broken]))
    directory.history(update_info("succeeded", NOW - timedelta(days=3)))
    directory.history(update_info("failed", NOW - timedelta(minutes=30), author="sam"))

    result = await pulumi_stack(STACK, file_context(tmp_path))

    assert (result.status, result.severity) == (Status.fail, "P2")
    ended = NOW - timedelta(minutes=28)
    assert result.summary == (f"The last update of web/prod failed at {ended:%Y-%m-%d %H:%M} UTC by sam, commit "
                              "9f1c2ab77e01; resources that failed: api-handler (aws:lambda/function:Function).")
    assert "pulumi stack history --stack web/prod" in result.hint
    assert "timeout while waiting" in result.evidence["failed_resources"][0]["error"]


async def test_a_stack_the_backend_does_not_have_is_an_error_naming_where_it_looked(tmp_path: Path) -> None:
    result = await pulumi_stack(STACK, file_context(tmp_path))

    assert result.status is Status.error
    assert result.summary == f"No stack web/prod at {tmp_path}/.pulumi/stacks/web/prod.json."


async def test_a_zstd_checkpoint_is_an_error_that_says_how_to_store_it(tmp_path: Path, directory: Backend) -> None:
    directory.put(".pulumi/stacks/web/prod.json.zst", b"\x28\xb5\x2f\xfd")

    result = await pulumi_stack(STACK, file_context(tmp_path))

    assert result.status is Status.error and "zstd" in result.summary


# --- S3 backend (moto) ---------------------------------------------------------------------------------------


def bucket_backend(aws: AwsClients, prefix: str = "infra/") -> Backend:
    s3 = aws.client("s3", "us-east-1")
    s3.create_bucket(Bucket="acme-pulumi-state")
    return Backend(lambda key, raw: s3.put_object(Bucket="acme-pulumi-state", Key=prefix + key, Body=raw))


def s3_context(clients: AwsClients, now: datetime = NOW, **spec: Any) -> CheckContext:
    service = ServiceSpec(pulumi=PulumiSpec(backend="s3://acme-pulumi-state/infra", stacks=[STACK]), **spec)
    return CheckContext(service_name="web", service=service, now=now, http=None, aws=clients)  # type: ignore[arg-type]


async def test_s3_backend_stale_lock_and_interrupted_update(aws: AwsClients) -> None:
    backend = bucket_backend(aws)
    backend.state(checkpoint([], pending=[("deleting", resource("aws:ec2/securityGroup:SecurityGroup", "web-sg",
                                                                 "sg-0123"))]), gz=True)
    backend.lock(NOW - timedelta(hours=2))
    backend.history(update_info("succeeded", NOW - timedelta(days=1)))

    result = await pulumi_stack(STACK, s3_context(aws))

    assert result.status is Status.fail
    assert "locked for 2.0 h by ci@runner-1 (pid 4242)" in result.summary
    assert "1 pending operation left by an interrupted update (deleting web-sg" in result.summary
    assert result.evidence["backend"] == "s3://acme-pulumi-state/infra/.pulumi/stacks/web/prod.json"
    assert result.evidence["locks"][0]["lock"].startswith("s3://acme-pulumi-state/infra/.pulumi/locks/organization/")


async def test_s3_backend_healthy_stack(aws: AwsClients) -> None:
    backend = bucket_backend(aws)
    backend.state(checkpoint([resource("aws:s3/bucket:Bucket", "assets", "assets-1a2b")]))
    backend.history(update_info("succeeded", NOW - timedelta(hours=2, minutes=2)))

    result = await pulumi_stack(STACK, s3_context(aws))

    assert result.status is Status.ok
    assert result.summary.startswith("Stack web/prod: last update succeeded 2 h ago")


async def test_s3_backend_denied_names_the_permission(aws: AwsClients) -> None:
    result = await pulumi_stack(STACK, s3_context(aws))  # the bucket does not exist: moto answers NoSuchBucket

    assert result.status is Status.error
    assert "s3:ListBucket" in result.summary


# --- drift ---------------------------------------------------------------------------------------------------


def aws_resources(aws: AwsClients) -> dict[str, str]:
    """A bucket, a security group and a target group that exist; their ids as the state would record them."""
    aws.client("s3", "us-east-1").create_bucket(Bucket="assets-1a2b")
    ec2 = aws.client("ec2", "us-east-1")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    sg = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)["GroupId"]
    tg = aws.client("elbv2", "us-east-1").create_target_group(Name="web-tg", Protocol="HTTP", Port=80,
                                                               VpcId=vpc)["TargetGroups"][0]["TargetGroupArn"]
    return {"bucket": "assets-1a2b", "sg": sg, "tg": tg}


async def test_resources_deleted_outside_pulumi_are_drift(aws: AwsClients) -> None:
    ids = aws_resources(aws)
    backend = bucket_backend(aws)
    backend.state(checkpoint([
        resource("aws:s3/bucket:Bucket", "assets", ids["bucket"]),
        resource("aws:s3/bucketV2:BucketV2", "uploads", "uploads-9z8y"),  # deleted by hand
        resource("aws:ec2/securityGroup:SecurityGroup", "web-sg", ids["sg"]),
        resource("aws:lambda/function:Function", "api-handler", "api-handler-7c1d"),  # never there
        resource("aws:lb/targetGroup:TargetGroup", "web-tg", ids["tg"]),
        resource("aws:iam/role:Role", "web-role", "web-role-1"),  # not a type drift looks at
    ]))

    result = await pulumi_drift(STACK, s3_context(aws))

    assert (result.status, result.severity) == (Status.fail, "P2")
    assert [m["name"] for m in result.evidence["missing"]] == ["uploads", "api-handler"]
    assert result.evidence["checked"] == 5
    assert result.summary.startswith("2 resource(s) recorded in stack web/prod no longer exist in AWS: uploads "
                                     "(aws:s3/bucketV2:BucketV2, uploads-9z8y)")
    assert "`pulumi refresh --stack web/prod`" in result.hint


async def test_no_drift_when_every_recorded_resource_exists(aws: AwsClients, tmp_path: Path,
                                                            directory: Backend) -> None:
    ids = aws_resources(aws)
    directory.state(checkpoint([resource("aws:s3/bucket:Bucket", "assets", ids["bucket"]),
                                resource("aws:ec2/securityGroup:SecurityGroup", "web-sg", ids["sg"]),
                                resource("aws:lb/targetGroup:TargetGroup", "web-tg", ids["tg"])]))

    result = await pulumi_drift(STACK, file_context(tmp_path, aws=aws))

    assert result.status is Status.ok, result.summary
    assert result.summary == ("All 3 checked AWS resources of web/prod exist; property drift needs "
                              "`pulumi preview --refresh`.")


# --- Pulumi Cloud (local HTTP server) ------------------------------------------------------------------------

CLOUD_STACK = "acme/web/prod"
CLOUD_PATH = "/api/stacks/acme/web/prod"


def cloud_update(result: str, started: datetime, version: int) -> dict[str, Any]:
    return {"info": update_info(result, started), "updateID": f"u-{version}", "version": version,
            "latestVersion": version, "requestedBy": {"name": "Dana", "githubLogin": "dana"}}


def cloud_routes(updates: list[dict[str, Any]], export: dict[str, Any]) -> dict[str, Reply]:
    listing = {"updates": updates, "itemsPerPage": 10, "total": len(updates)}
    return {f"{CLOUD_PATH}/updates": Reply(200, json.dumps(listing).encode()),
            f"{CLOUD_PATH}/export": Reply(200, json.dumps(export).encode())}


async def cloud_check(routes: dict[str, Reply], env: dict[str, str] | None = None) -> tuple[CheckResult, Any]:
    import httpx

    with local_http_server(routes) as server:
        spec = PulumiSpec(backend=server.url("").rstrip("/"), stacks=[CLOUD_STACK], token_env="PULUMI_TOKEN")
        async with httpx.AsyncClient() as http:
            ctx = CheckContext(service_name="web", service=ServiceSpec(pulumi=spec), now=NOW, http=http,
                               env={"PULUMI_TOKEN": "pul-secret"} if env is None else env)
            return await pulumi_stack(CLOUD_STACK, ctx), server


def export_of(document: dict[str, Any]) -> dict[str, Any]:
    return {"version": 3, "deployment": document["checkpoint"]["latest"]}


async def test_pulumi_cloud_update_running_for_hours_is_stuck() -> None:
    routes = cloud_routes([cloud_update("succeeded", NOW - timedelta(days=1), 11),
                           cloud_update("in-progress", NOW - timedelta(hours=3), 12)], export_of(checkpoint([])))

    result, server = await cloud_check(routes)

    assert result.status is Status.fail
    assert result.summary.startswith("An update of acme/web/prod has been running for 3.0 h by dana")
    assert "`pulumi cancel --stack acme/web/prod`" in result.hint
    assert server.request_headers[0]["Authorization"] == "token pul-secret"
    assert server.request_headers[0]["Accept"] == "application/vnd.pulumi+8"


async def test_pulumi_cloud_export_with_pending_operations_and_a_healthy_one() -> None:
    bucket = resource("aws:s3/bucket:Bucket", "uploads", "")
    broken = cloud_routes([cloud_update("succeeded", NOW - timedelta(hours=2), 7)],
                          export_of(checkpoint([], pending=[("creating", bucket)])))
    healthy = cloud_routes([cloud_update("succeeded", NOW - timedelta(hours=2), 7)], export_of(checkpoint([bucket])))

    (bad, _), (good, _) = await cloud_check(broken), await cloud_check(healthy)

    assert bad.status is Status.fail and "1 pending operation left by an interrupted update" in bad.summary
    assert good.status is Status.ok and good.summary.startswith("Stack acme/web/prod: last update succeeded 2 h")


async def test_pulumi_cloud_without_a_token_or_with_a_rejected_one_is_an_error() -> None:
    routes = {f"{CLOUD_PATH}/updates": Reply(401, b'{"code":401,"message":"Unauthorized"}')}

    (missing, server), (rejected, _) = await cloud_check(routes, env={}), await cloud_check(routes)

    assert missing.status is Status.error and "set PULUMI_TOKEN" in missing.summary
    assert server.hits == []  # no request without a token
    assert rejected.status is Status.error and "refused the token (401)" in rejected.summary
    assert "pul-secret" not in rejected.summary


# --- services file, list, verdict, change correlation --------------------------------------------------------


@pytest.mark.parametrize(("block", "error"), [
    ({"backend": "https://api.pulumi.com", "stacks": ["acme/web/prod"]}, "token_env: name the environment"),
    ({"backend": "https://api.pulumi.com", "token_env": "T", "stacks": ["web/prod"]},
     "stacks[0]: Pulumi Cloud stacks are organization/project/stack"),
    ({"backend": "gs://bucket", "stacks": ["web/prod"]}, "expected \"s3://bucket[/prefix]\""),
    ({"backend": "s3://bucket?awssdk=v2", "stacks": ["web/prod"]}, "unsupported s3 backend option 'awssdk'"),
    ({"backend": "file:///srv/state", "stacks": []}, "Expected `array` of length >= 1"),
])
def test_the_services_file_refuses_a_bad_pulumi_block_naming_the_path(block: dict, error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_services({"services": {"web": {"pulumi": block}}})

    assert "services.web.pulumi" in str(raised.value) and error in str(raised.value)


def test_the_minimal_block_is_accepted_and_listed() -> None:
    from bot.app.cli import services_text

    catalog = parse_services(
        {"services": {"web": {"pulumi": {"backend": "s3://acme-state/infra", "stacks": ["web/prod", "web/stg"]}}}})

    assert catalog.services["web"].needs_aws
    assert services_text(catalog) == "web    4 checks: pulumi.drift, pulumi.stack"


async def test_drift_ranks_before_the_failing_http_probe_it_explains(aws: AwsClients) -> None:
    bucket_backend(aws).state(checkpoint([resource("aws:s3/bucket:Bucket", "assets", "assets-gone")]))
    drift = replace(await pulumi_drift(STACK, s3_context(aws)), check="pulumi.drift")
    probe = CheckResult(check="http", target="https://web.example.com/", status=Status.fail, summary="5/5 got 503")

    verdict = build_verdict("web", [probe, drift])

    assert [f.check for f in verdict.findings] == ["pulumi.drift", "http"]
    assert verdict.headline.startswith("1 resource(s) recorded in stack web/prod no longer exist")


async def test_errors_right_after_a_stack_update_make_it_the_rollback_candidate(aws: AwsClients) -> None:
    updated = NOW - timedelta(minutes=40)
    backend = bucket_backend(aws)
    backend.state(checkpoint([]))
    backend.history(update_info("succeeded", updated, commit="4be1d0c93a77"))
    put_log_lines(aws, "/ecs/web", [(updated - timedelta(minutes=20), "INFO fine"),
                                    *[(updated + timedelta(minutes=6, seconds=s), "ERROR connect ECONNREFUSED")
                                      for s in range(3)]])

    result = await recent_changes("us-east-1", s3_context(aws, aws=AwsSpec(log_groups=["/ecs/web"])))

    assert (result.status, result.severity) == (Status.fail, "P1"), result.summary
    assert result.summary == "Errors started 6 min after pulumi update of web/prod (succeeded); rollback candidate."
    assert "`pulumi up --stack web/prod` from the commit before 4be1d0c93a77" in result.hint
