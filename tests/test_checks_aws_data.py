"""Data-layer AWS checks against moto: SQS dead letters and loops, DynamoDB, RDS, S3 and ACM.

moto never throttles and has no database connections, so CloudWatch metrics are seeded with put_metric_data; it
refuses to import an expired certificate, so expiry is simulated by moving `ctx.now` past NotAfter.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.stub import Stubber
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from checks.aws.acm import acm
from checks.aws.clients import AwsClients
from checks.aws.dynamodb import dynamodb
from checks.aws.rds import rds
from checks.aws.s3 import PROBE_PREFIX, s3
from checks.aws.sqs import sqs_dlq
from checks.model import Status
from checks.registry import CheckContext
from checks.schema import replace
from checks.services import BucketSpec, parse_service

REGION = "us-east-1"


def context(aws: AwsClients, *, now: datetime | None = None, **spec: Any) -> CheckContext:
    return CheckContext(
        service_name="orders",
        service=parse_service({"aws": {"region": REGION, **spec}}),
        now=now or datetime.now(UTC),
        http=None,  # type: ignore[arg-type]  # these checks make no HTTP calls
        aws=aws,
    )


# --- SQS dead letters ----------------------------------------------------------------------------------------


def make_queue(aws: AwsClients, name: str, dlq_arn: str | None = None, max_receives: int = 1) -> tuple[str, str]:
    sqs = aws.client("sqs", REGION)
    attributes = {}
    if dlq_arn:
        attributes["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives})
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def fail_processing(aws: AwsClients, url: str, body: str, receives: int = 2) -> None:
    """A consumer that receives `body` and never deletes it; past maxReceiveCount SQS moves it to the DLQ."""
    sqs = aws.client("sqs", REGION)
    sqs.send_message(QueueUrl=url, MessageBody=body)
    for _ in range(receives):
        sqs.receive_message(QueueUrl=url, VisibilityTimeout=0, MaxNumberOfMessages=10)


def dlq_depth(aws: AwsClients, url: str) -> int:
    attributes = aws.client("sqs", REGION).get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


async def test_queue_without_redrive_policy_is_a_p3_warning(aws: AwsClients) -> None:
    make_queue(aws, "orders")

    result = await sqs_dlq("orders", context(aws, queues=["orders"]))

    assert result.status is Status.warn and result.severity == "P3"
    assert "retried forever" in result.summary
    assert result.resource == "arn:aws:sqs:us-east-1:123456789012:orders"


async def test_failed_messages_in_the_dead_letter_queue_fail_naming_the_dlq(aws: AwsClients) -> None:
    dlq_url, dlq_arn = make_queue(aws, "orders-dlq")
    url, _ = make_queue(aws, "orders", dlq_arn, max_receives=1)
    fail_processing(aws, url, '{"order": 42}')

    result = await sqs_dlq(url, context(aws, queues=[url]))

    assert result.status is Status.fail and result.severity == "P1"
    assert result.resource == dlq_arn
    assert result.summary == (
        "Dead-letter queue orders-dlq holds 1 message that orders could not process after 1 receives."
    )
    assert result.evidence["depth"] == 1 and result.evidence["max_receive_count"] == 1
    assert "peek" not in result.evidence  # bodies stay private unless the service opts in
    assert dlq_depth(aws, dlq_url) == 1


async def test_empty_dead_letter_queue_is_ok(aws: AwsClients) -> None:
    _, dlq_arn = make_queue(aws, "orders-dlq")
    make_queue(aws, "orders", dlq_arn)

    result = await sqs_dlq("orders", context(aws, queues=["orders"]))

    assert result.status is Status.ok
    assert result.summary == "Dead-letter queue orders-dlq of orders is empty."


async def test_a_listed_dead_letter_queue_is_judged_by_its_own_depth(aws: AwsClients) -> None:
    _, dlq_arn = make_queue(aws, "orders-dlq")
    url, _ = make_queue(aws, "orders", dlq_arn)
    fail_processing(aws, url, "boom")

    result = await sqs_dlq("orders-dlq", context(aws, queues=["orders-dlq"]))

    assert result.status is Status.fail and result.evidence["source_queues"] == ["orders"]


async def test_peek_shows_three_truncated_bodies_and_leaves_them_on_the_queue(aws: AwsClients) -> None:
    dlq_url, dlq_arn = make_queue(aws, "orders-dlq")
    url, _ = make_queue(aws, "orders", dlq_arn)
    for n in range(4):
        fail_processing(aws, url, f"order {n} " + "x" * 500)
    ctx = context(aws, queues=["orders"])
    ctx.service = replace(ctx.service, aws=replace(ctx.service.aws, peek_dead_letters=True))

    result = await sqs_dlq("orders", ctx)

    peek = result.evidence["peek"]
    assert result.status is Status.fail and len(peek) == 3
    assert all(len(m["body"]) == 200 and m["body"].startswith("order ") for m in peek)
    assert dlq_depth(aws, dlq_url) == 4


async def test_access_denied_is_an_error_naming_the_missing_action(aws: AwsClients) -> None:
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/orders"
    with Stubber(aws.client("sqs", REGION)) as stub:
        stub.add_client_error("get_queue_attributes", "AccessDenied", "not authorized", http_status_code=403)
        result = await sqs_dlq(url, context(aws, queues=[url]))

    assert result.status is Status.error
    assert result.summary == "Access denied: the bot's role needs sqs:GetQueueAttributes"


# --- DynamoDB ------------------------------------------------------------------------------------------------


def make_table(aws: AwsClients, name: str = "orders", rcu: int | None = 5) -> None:
    capacity: dict[str, Any] = (
        {"ProvisionedThroughput": {"ReadCapacityUnits": rcu, "WriteCapacityUnits": 5}}
        if rcu else {"BillingMode": "PAY_PER_REQUEST"}
    )
    aws.client("dynamodb", REGION).create_table(
        TableName=name, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}], **capacity,
    )


def put_metric(aws: AwsClients, namespace: str, name: str, value: float, ago: timedelta, **dims: str) -> None:
    aws.client("cloudwatch", REGION).put_metric_data(Namespace=namespace, MetricData=[{
        "MetricName": name, "Value": value, "Timestamp": datetime.now(UTC) - ago,
        "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
    }])


async def test_throttled_table_fails_with_the_throttle_counts(aws: AwsClients) -> None:
    make_table(aws)
    put_metric(aws, "AWS/DynamoDB", "ReadThrottleEvents", 12, timedelta(minutes=2), TableName="orders")
    put_metric(aws, "AWS/DynamoDB", "ThrottledRequests", 3, timedelta(minutes=3), TableName="orders",
               Operation="Query")

    result = await dynamodb("orders", context(aws, dynamodb_tables=["orders"]))

    assert result.status is Status.fail and result.severity == "P1"
    assert result.summary == ("orders was throttled in the last 15 min: 12 read throttle events, "
                              "3 throttled Query requests.")
    assert result.evidence["throttles"] == {"read_throttle_events": 12, "throttled_Query": 3}


async def test_busiest_minute_near_provisioned_capacity_is_a_warning(aws: AwsClients) -> None:
    make_table(aws, rcu=5)
    put_metric(aws, "AWS/DynamoDB", "ConsumedReadCapacityUnits", 270, timedelta(minutes=4), TableName="orders")

    result = await dynamodb("orders", context(aws, dynamodb_tables=["orders"]))

    assert result.status is Status.warn and result.severity == "P2"
    assert "read 4.5 of 5 units/s (90 %)" in result.summary
    assert result.evidence["read_capacity"] == {"peak_per_s": 4.5, "provisioned": 5, "pct": 90.0}


async def test_table_with_headroom_and_only_old_throttles_is_ok(aws: AwsClients) -> None:
    make_table(aws, rcu=5)
    put_metric(aws, "AWS/DynamoDB", "ConsumedReadCapacityUnits", 60, timedelta(minutes=4), TableName="orders")
    put_metric(aws, "AWS/DynamoDB", "ReadThrottleEvents", 40, timedelta(minutes=30), TableName="orders")

    result = await dynamodb("orders", context(aws, dynamodb_tables=["orders"]))

    assert result.status is Status.ok
    assert result.summary == ("No throttling on orders in the last 15 min "
                              "(read peak 1/5 units/s, write peak 0/5 units/s).")


async def test_on_demand_table_without_throttles_is_ok(aws: AwsClients) -> None:
    make_table(aws, rcu=None)
    put_metric(aws, "AWS/DynamoDB", "ConsumedReadCapacityUnits", 6000, timedelta(minutes=1), TableName="orders")

    result = await dynamodb("orders", context(aws, dynamodb_tables=["orders"]))

    assert result.status is Status.ok and "(on-demand)" in result.summary


# --- RDS -----------------------------------------------------------------------------------------------------


def make_db(aws: AwsClients, max_connections: int | None = 100, *, force_ssl: bool = False,
            ca: str = "rds-ca-rsa2048-g1") -> None:
    client = aws.client("rds", REGION)
    client.create_db_parameter_group(DBParameterGroupName="orders-pg", DBParameterGroupFamily="postgres15",
                                     Description="orders")
    settings = {"max_connections": max_connections, "rds.force_ssl": 1 if force_ssl else None}
    for name, value in settings.items():
        if value is not None:
            client.modify_db_parameter_group(DBParameterGroupName="orders-pg", Parameters=[{
                "ParameterName": name, "ParameterValue": str(value), "ApplyMethod": "pending-reboot"}])
    client.create_db_instance(
        DBInstanceIdentifier="orders-db", Engine="postgres", DBInstanceClass="db.t3.micro", AllocatedStorage=20,
        MasterUsername="app", MasterUserPassword="not-a-real-secret", DBParameterGroupName="orders-pg",
        MultiAZ=True, CACertificateIdentifier=ca,
    )


async def test_stopped_instance_is_a_p0_failure_with_its_endpoint(aws: AwsClients) -> None:
    make_db(aws)
    aws.client("rds", REGION).stop_db_instance(DBInstanceIdentifier="orders-db")

    result = await rds("orders-db", context(aws, db_instances=["orders-db"]))

    assert result.status is Status.fail and result.severity == "P0"
    assert result.summary.startswith("RDS instance orders-db is stopped, not available")
    assert result.evidence["status"] == "stopped" and result.evidence["multi_az"] is True
    assert result.evidence["endpoint"].endswith(".rds.amazonaws.com:5432")
    assert result.evidence["engine"].startswith("postgres")
    assert "start-db-instance" in (result.hint or "")


async def test_connections_near_max_connections_are_a_warning(aws: AwsClients) -> None:
    make_db(aws, max_connections=100)
    put_metric(aws, "AWS/RDS", "DatabaseConnections", 91, timedelta(minutes=5), DBInstanceIdentifier="orders-db")
    put_metric(aws, "AWS/RDS", "DatabaseConnections", 40, timedelta(minutes=2), DBInstanceIdentifier="orders-db")

    result = await rds("orders-db", context(aws, db_instances=["orders-db"]))

    assert result.status is Status.warn and result.severity == "P2"
    assert "peaked at 91 of 100 connections" in result.summary


async def test_available_instance_with_headroom_is_ok(aws: AwsClients) -> None:
    make_db(aws, max_connections=100)
    put_metric(aws, "AWS/RDS", "DatabaseConnections", 20, timedelta(minutes=2), DBInstanceIdentifier="orders-db")

    result = await rds("orders-db", context(aws, db_instances=["orders-db"]))

    assert result.status is Status.ok
    assert result.summary == "RDS instance orders-db is available; peak 20 of 100 connections in the last 15 min."


async def test_unknown_limit_reports_the_peak_only(aws: AwsClients) -> None:
    make_db(aws, max_connections=None)
    put_metric(aws, "AWS/RDS", "DatabaseConnections", 950, timedelta(minutes=2), DBInstanceIdentifier="orders-db")

    result = await rds("orders-db", context(aws, db_instances=["orders-db"]))

    assert result.status is Status.ok and result.evidence["max_connections"] is None
    assert "peak 950 connections" in result.summary


async def test_forced_ssl_against_a_client_that_disables_it_is_a_failure(aws: AwsClients) -> None:
    make_db(aws, force_ssl=True)

    result = await rds("orders-db", context(aws, db_instances=["orders-db"],
                                            db_client_sslmode={"orders-db": "disable"}))

    assert result.status is Status.fail and result.severity == "P1"
    assert "forces SSL (rds.force_ssl=1) but the app connects with sslmode=disable" in result.summary
    assert result.evidence["force_ssl"] == "rds.force_ssl" and result.evidence["client_sslmode"] == "disable"
    assert "sslmode=require" in (result.hint or "")


async def test_forced_ssl_with_a_client_that_uses_tls_is_ok(aws: AwsClients) -> None:
    make_db(aws, force_ssl=True)

    result = await rds("orders-db", context(aws, db_instances=["orders-db"],
                                            db_client_sslmode={"orders-db": "verify-full"}))

    assert result.status is Status.ok, result.summary
    assert result.evidence["ca_certificate"] == "rds-ca-rsa2048-g1"
    assert result.evidence["ca_valid_till"].startswith("2061-05-25")


async def test_expired_ca_fails_a_client_that_verifies_the_server(aws: AwsClients) -> None:
    make_db(aws, ca="rds-ca-2019")  # expired on 2024-08-22

    verifying = await rds("orders-db", context(aws, db_instances=["orders-db"],
                                               db_client_sslmode={"orders-db": "verify-full"}))
    not_verifying = await rds("orders-db", context(aws, db_instances=["orders-db"]))

    assert verifying.status is Status.fail and verifying.severity == "P1"
    assert "certificate authority rds-ca-2019 expired on 2024-08-22" in verifying.summary
    assert "sslmode=verify-full" in verifying.summary
    assert not_verifying.status is Status.warn and not_verifying.severity == "P2"
    assert "modify-db-instance --ca-certificate-identifier" in (not_verifying.hint or "")


async def test_ca_expiring_within_a_week_is_an_urgent_warning(aws: AwsClients, monkeypatch) -> None:
    from tests.fixtures.rds_certificates import CERTIFICATE_AUTHORITIES

    now = datetime.now(UTC)
    monkeypatch.setitem(CERTIFICATE_AUTHORITIES, "rds-ca-rsa2048-g1", now + timedelta(days=5, hours=1))
    make_db(aws)

    result = await rds("orders-db", context(aws, now=now, db_instances=["orders-db"]))

    assert result.status is Status.warn and result.severity == "P2"
    assert "rds-ca-rsa2048-g1 expires in 5 days" in result.summary


# --- S3 ------------------------------------------------------------------------------------------------------

VPCE_ONLY_UPLOADS = {
    "Sid": "UploadsOnlyThroughVpce", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
    "Resource": "arn:aws:s3:::orders-uploads/*", "Condition": {"StringNotEquals": {"aws:sourceVpce": "vpce-1a2b"}},
}
NO_DELETES = {
    "Sid": "KeepEverything", "Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject*",
    "Resource": "arn:aws:s3:::orders-uploads/*",
}


def make_bucket(aws: AwsClients, *statements: dict[str, Any], versioned: bool = False) -> None:
    client = aws.client("s3", REGION)
    client.create_bucket(Bucket="orders-uploads")
    if versioned:
        client.put_bucket_versioning(Bucket="orders-uploads", VersioningConfiguration={"Status": "Enabled"})
    if statements:
        policy = {"Version": "2012-10-17", "Statement": list(statements)}
        client.put_bucket_policy(Bucket="orders-uploads", Policy=json.dumps(policy))


def leftovers(aws: AwsClients) -> list[str]:
    found = aws.client("s3", REGION).list_object_versions(Bucket="orders-uploads")
    return [v["Key"] for v in found.get("Versions", []) + found.get("DeleteMarkers", [])]


async def run_s3(aws: AwsClients, probe_write: bool) -> Any:
    bucket = BucketSpec(name="orders-uploads", probe_write=probe_write)
    return await s3(bucket, context(aws, buckets=[bucket]))


async def test_bucket_without_policy_or_probe_is_ok_and_untouched(aws: AwsClients) -> None:
    make_bucket(aws)

    result = await run_s3(aws, probe_write=False)

    assert result.status is Status.ok
    assert result.summary == ("Bucket orders-uploads: no network-conditioned Deny in the bucket policy; "
                              "write probe not enabled (probe_write: false).")
    assert result.evidence["public_access_block"] is None and leftovers(aws) == []


async def test_conditional_deny_is_quoted_even_without_the_probe(aws: AwsClients) -> None:
    make_bucket(aws, VPCE_ONLY_UPLOADS)

    result = await run_s3(aws, probe_write=False)

    assert result.status is Status.ok
    assert "1 conditional Deny statement (aws:sourceVpce)" in result.summary
    assert '"Sid":"UploadsOnlyThroughVpce"' in result.evidence["conditional_denies"][0]


async def test_healthy_probe_writes_reads_and_leaves_nothing_behind(aws: AwsClients) -> None:
    make_bucket(aws)

    result = await run_s3(aws, probe_write=True)

    assert result.status is Status.ok, result.summary
    assert result.evidence["probe"]["steps"] == {"s3:PutObject": "ok", "s3:GetObject": "ok", "s3:DeleteObject": "ok"}
    assert result.evidence["probe"]["key"].startswith(PROBE_PREFIX)
    assert leftovers(aws) == []


async def test_probe_on_versioned_bucket_deletes_its_exact_version(aws: AwsClients) -> None:
    make_bucket(aws, versioned=True)

    result = await run_s3(aws, probe_write=True)

    assert result.status is Status.ok
    assert result.evidence["probe"]["steps"]["s3:DeleteObjectVersion"] == "ok"
    assert leftovers(aws) == []  # no version and no delete marker


async def test_denied_upload_fails_quoting_the_deny_statement(aws: AwsClients) -> None:
    make_bucket(aws, VPCE_ONLY_UPLOADS)

    result = await run_s3(aws, probe_write=True)

    assert result.status is Status.fail and result.severity == "P1"
    assert result.summary.startswith("Bucket orders-uploads: s3:PutObject was denied for the probe object; "
                                     'the bucket policy denies it: {"Action":"s3:PutObject"')
    assert '"Sid":"UploadsOnlyThroughVpce"' in result.summary
    assert result.evidence["probe"]["left_behind"] is False and leftovers(aws) == []


async def test_denied_delete_is_reported_with_the_key_left_behind(aws: AwsClients) -> None:
    make_bucket(aws, NO_DELETES)

    result = await run_s3(aws, probe_write=True)

    key = result.evidence["probe"]["key"]
    assert result.status is Status.fail and result.severity == "P1"
    assert "s3:DeleteObject was denied" in result.summary and "KeepEverything" in result.summary
    assert f"The probe object {key} was left behind" in result.summary
    assert leftovers(aws) == [key]  # the report is true: the object really is there


# --- ACM -----------------------------------------------------------------------------------------------------


def import_cert(aws: AwsClients, days_left: int, domain: str = "api.example.com") -> tuple[str, datetime]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = datetime.now(UTC).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=days_left))
        .sign(key, hashes.SHA256())
    )
    arn = aws.client("acm", REGION).import_certificate(
        Certificate=cert.public_bytes(serialization.Encoding.PEM),
        PrivateKey=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()),
    )["CertificateArn"]
    return arn, now + timedelta(days=days_left)


def use_on_load_balancer(aws: AwsClients, cert_arn: str) -> None:
    aws.client("elb", REGION).create_load_balancer(
        LoadBalancerName="api-lb", AvailabilityZones=["us-east-1a"],
        Listeners=[{"Protocol": "HTTPS", "LoadBalancerPort": 443, "InstancePort": 80, "SSLCertificateId": cert_arn}],
    )


async def test_expired_certificate_in_use_is_p0(aws: AwsClients) -> None:
    arn, not_after = import_cert(aws, days_left=5)
    use_on_load_balancer(aws, arn)

    result = await acm(arn, context(aws, certificates=[arn], now=not_after + timedelta(days=1)))

    assert result.status is Status.fail and result.severity == "P0"
    assert result.summary == ("Certificate for api.example.com is expired 24 hours ago and still used by "
                              "api-lb.us-east-1.elb.amazonaws.com: TLS handshakes to it fail.")
    assert result.resource == arn and "re-import" in (result.hint or "")


async def test_expired_certificate_nothing_uses_is_hygiene(aws: AwsClients) -> None:
    arn, not_after = import_cert(aws, days_left=5)

    result = await acm(arn, context(aws, certificates=[arn], now=not_after + timedelta(hours=1)))

    assert result.status is Status.warn and result.severity == "P3"
    assert "nothing uses it" in result.summary


@pytest.mark.parametrize(
    ("days_before_expiry", "status", "severity", "left"),
    [(1, Status.fail, "P1", "24 hours"), (5, Status.warn, "P2", "5 days")],
)
async def test_certificate_close_to_expiry(
    aws: AwsClients, days_before_expiry: int, status: Status, severity: str, left: str
) -> None:
    arn, not_after = import_cert(aws, days_left=5)
    use_on_load_balancer(aws, arn)

    result = await acm(arn, context(aws, certificates=[arn], now=not_after - timedelta(days=days_before_expiry)))

    assert result.status is status and result.severity == severity
    assert result.summary == f"Certificate for api.example.com expires in {left}."
    assert result.evidence["in_use_count"] == 1


async def test_certificate_with_months_left_is_ok(aws: AwsClients) -> None:
    arn, _ = import_cert(aws, days_left=90)

    result = await acm(arn, context(aws, certificates=[arn]))

    assert result.status is Status.ok and result.hint is None
    assert result.summary == "Certificate for api.example.com is issued, 90 days left."


async def test_certificate_with_weeks_left_is_ok_with_a_renewal_hint(aws: AwsClients) -> None:
    arn, _ = import_cert(aws, days_left=20)

    result = await acm(arn, context(aws, certificates=[arn]))

    assert result.status is Status.ok and result.severity is None
    assert "20 days left" in result.summary and "re-import" in (result.hint or "")
