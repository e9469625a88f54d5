"""The services file's schema: which services exist and what `/diagnose` may probe for each.

The checks read these models; `bot.settings.load_services` reads and validates the file.

It is the only source of probe targets — nothing typed in chat ever becomes a URL or host — so it is validated
strictly, and every error names its path (`services.api.http[0].url: invalid URL`).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

SERVICE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"

# Instance-metadata and link-local addresses: a services file that points a probe there is almost always a
# mistake or an SSRF attempt, so it has to say `allow_link_local: true` to mean it.
_LINK_LOCAL_NETS = [
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud metadata
]


def is_link_local(host: str) -> bool:
    """True when `host` is a literal address in a link-local or instance-metadata range."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host.lower() in {"metadata.google.internal", "metadata"}
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:  # [::ffff:169.254.169.254]
        address = address.ipv4_mapped
    return any(address in net for net in _LINK_LOCAL_NETS)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpProbe(_Strict):
    url: AnyHttpUrl
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = [200]
    samples: int = Field(5, ge=1, le=50)
    latency_ms: int = Field(1000, ge=1)
    timeout_s: float = Field(5.0, gt=0, le=120)
    headers: dict[str, str] = {}

    @field_validator("url", mode="before")
    @classmethod
    def _url_message(cls, value: Any) -> Any:
        if not isinstance(value, str) or "://" not in value:
            raise ValueError("invalid URL")
        return value


class HostPort(_Strict):
    host: str
    port: int = Field(ge=1, le=65535)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def _parse_host_port(value: Any, default_port: int | None) -> Any:
    if not isinstance(value, str):
        return value
    host, sep, port = value.rpartition(":")
    if not sep or "]" in port:
        if default_port is None:
            raise ValueError("expected host:port")
        return {"host": value, "port": default_port}
    if not port.isdigit():
        raise ValueError("port must be a number")
    return {"host": host.strip("[]"), "port": int(port)}


class TcpTarget(HostPort):
    @model_validator(mode="before")
    @classmethod
    def _from_str(cls, value: Any) -> Any:
        return _parse_host_port(value, None)


class TlsTarget(HostPort):
    port: int = Field(443, ge=1, le=65535)

    @model_validator(mode="before")
    @classmethod
    def _from_str(cls, value: Any) -> Any:
        return _parse_host_port(value, 443)


class DatabaseSpec(_Strict):
    dsn_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$")
    long_query_s: int = Field(300, ge=1)
    lock_wait_s: int = Field(10, ge=1)  # a session waiting this long on another's lock is reported (postgres.locks)


class BucketSpec(_Strict):
    name: str
    probe_write: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_str(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class AwsSpec(_Strict):
    region: str = Field("us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    load_balancers: list[str] = []
    target_groups: list[str] = []
    lambda_functions: list[str] = []
    log_groups: list[str] = []
    queues: list[str] = []
    dynamodb_tables: list[str] = []
    db_instances: list[str] = []
    # instance id → the app's libpq sslmode, judged against the instance's rds.force_ssl and CA expiry
    db_client_sslmode: dict[str, SslMode] = {}
    buckets: list[BucketSpec] = []
    distributions: list[str] = []
    certificates: list[str] = []
    alarm_prefixes: list[str] = []
    subnets: list[str] = []
    roles: list[str] = []
    parameters: list[str] = []  # SSM parameter names the service reads at start-up
    api_gateways: list[str] = []  # REST API ids: deployments count as changes; stages, metrics and integrations
    http_apis: list[str] = []  # API Gateway v2 (HTTP API) ids: stages, metrics and integrations
    beanstalk_environments: list[str] = []  # Elastic Beanstalk environment names
    instances: list[str] = []  # EC2 instance ids whose metadata options (IMDS) are checked
    xray: bool = False  # read X-Ray trace summaries and the service graph for the window
    stacks: list[str] = []  # CloudFormation stacks whose events count as changes
    security_groups: list[str] = []  # SG ids to judge besides those found on the LBs, targets, DBs and Lambdas
    vpc_endpoints: list[str] = []  # interface endpoint ids (SSM, Secrets Manager, STS, ECR…) the service calls
    # Peeking at dead letters is a receive (it bumps receive counts, needs sqs:ReceiveMessage, bodies may hold
    # personal data), so it is opt-in.
    peek_dead_letters: bool = False


_PULUMI_NAME = r"[A-Za-z0-9_.-]+"
PULUMI_CLOUD = "https://api.pulumi.com"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}  # plain http only here (a local proxy or test server): tokens travel


class PulumiSpec(_Strict):
    """Where a service's Pulumi stacks keep their state: `s3://bucket[/prefix][?region=r]`, `file:///path`, or
    Pulumi Cloud (`https://api.pulumi.com`, or a self-hosted service's API URL) with its token in `token_env`.

    Stacks are `project/stack` on a self-managed backend (a bare `stack` means the legacy, project-less layout)
    and `organization/project/stack` on Pulumi Cloud.
    """

    backend: str
    stacks: list[Annotated[str, Field(pattern=rf"^{_PULUMI_NAME}(/{_PULUMI_NAME}){{0,2}}$")]] = Field(min_length=1)
    token_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme == "s3" and parts.netloc:
            unknown = sorted(set(parse_qs(parts.query)) - {"region"})
            if unknown:
                raise ValueError(f"unsupported s3 backend option {unknown[0]!r}: the bot uses its own AWS "
                                 "credentials; only ?region= is read")
            return value
        if parts.scheme == "file" and parts.path.startswith(("/", "~")):
            return value
        if parts.scheme == "https" and parts.hostname or parts.scheme == "http" and parts.hostname in _LOOPBACK:
            if parts.hostname == "app.pulumi.com":
                raise ValueError(f"use the API endpoint {PULUMI_CLOUD}, not the console's app.pulumi.com")
            return value
        raise ValueError('expected "s3://bucket[/prefix]", "file:///absolute/path" or "https://api.pulumi.com"')

    @model_validator(mode="after")
    def _cloud_needs_token_and_org(self) -> PulumiSpec:
        if self.kind != "cloud":
            return self
        if not self.token_env:
            raise ValueError("token_env: name the environment variable that holds the Pulumi access token")
        for index, stack in enumerate(self.stacks):
            if stack.count("/") != 2:
                raise ValueError(f"stacks[{index}]: Pulumi Cloud stacks are organization/project/stack")
        return self

    @property
    def kind(self) -> str:
        """`s3`, `file` or `cloud`."""
        scheme = urlsplit(self.backend).scheme
        return "cloud" if scheme in ("https", "http") else scheme

    @property
    def region(self) -> str | None:
        """An S3 backend's `?region=`, when it names one."""
        return (parse_qs(urlsplit(self.backend).query).get("region") or [None])[0]


class GcpBucketSpec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
    access: Literal["read", "write"] = "read"  # what the service's service account does with the objects
    probe_write: bool = False  # write, read back and delete one object with the bot's own credentials

    @model_validator(mode="before")
    @classmethod
    def _from_str(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class CloudSqlSpec(_Strict):
    instance: str = Field(pattern=r"^[a-z][a-z0-9-]{0,97}$")
    client_ssl: Literal["none", "tls", "cert"] | None = None  # what the app presents: nothing, TLS, TLS + cert
    path: Literal["private", "public", "connector"] | None = None  # how the app reaches it
    client_cidrs: list[ipaddress.IPv4Network] = []  # the app's egress addresses, for authorized networks
    max_connections: int | None = Field(None, ge=1)  # when a database flag sets it, else read from the tier

    @model_validator(mode="before")
    @classmethod
    def _from_str(cls, value: Any) -> Any:
        return {"instance": value} if isinstance(value, str) else value


class BackendServiceSpec(_Strict):
    name: str = Field(pattern=r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
    regional: bool = False  # a regional backend service in the gcp block's region, else global
    per_user: bool = False  # serves per-user responses: caching them all would leak one user's page to another

    @model_validator(mode="before")
    @classmethod
    def _from_str(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class GcpSpec(_Strict):
    project: str = Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
    region: str = Field(pattern=r"^[a-z]+-[a-z]+\d+$")
    service_account: str | None = Field(None, pattern=r"^[^@\s]+@[a-z0-9.-]+$")  # the app's, for bucket grants
    cloud_run: list[Annotated[str, Field(pattern=r"^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$")]] = []
    cloud_sql: list[CloudSqlSpec] = []
    buckets: list[GcpBucketSpec] = []
    backend_services: list[BackendServiceSpec] = []
    log_filters: list[Annotated[str, Field(min_length=1, max_length=2000)]] = []  # extra Cloud Logging filters

    @model_validator(mode="after")
    def _buckets_need_an_account(self) -> GcpSpec:
        if self.buckets and not self.service_account:
            raise ValueError("buckets: set service_account (the app's) so its bucket grants can be checked")
        return self


class ServiceSpec(_Strict):
    description: str = ""
    http: list[HttpProbe] = []
    tcp: list[TcpTarget] = []
    dns: list[str] = []
    tls: list[TlsTarget] = []
    cdn: list[AnyHttpUrl] = []  # asset URLs whose cache headers are checked
    database: DatabaseSpec | None = None
    aws: AwsSpec | None = None
    pulumi: PulumiSpec | None = None
    gcp: GcpSpec | None = None
    allow_link_local: bool = False

    @model_validator(mode="after")
    def _refuse_link_local(self) -> ServiceSpec:
        if self.allow_link_local:
            return self
        hosts = [(f"http[{i}].url", p.url.host or "") for i, p in enumerate(self.http)]
        hosts += [(f"tcp[{i}]", t.host) for i, t in enumerate(self.tcp)]
        hosts += [(f"tls[{i}]", t.host) for i, t in enumerate(self.tls)]
        hosts += [(f"dns[{i}]", h) for i, h in enumerate(self.dns)]
        hosts += [(f"cdn[{i}]", u.host or "") for i, u in enumerate(self.cdn)]
        if self.pulumi and self.pulumi.kind == "cloud":
            hosts.append(("pulumi.backend", urlsplit(self.pulumi.backend).hostname or ""))
        for where, host in hosts:
            if is_link_local(host):
                raise ValueError(
                    f"{where}: {host} is a link-local/instance-metadata address; "
                    "set allow_link_local: true on the service if you really mean to probe it"
                )
        return self


    @property
    def needs_aws(self) -> bool:
        """AWS clients serve the `aws` block, and Pulumi stacks too (an S3 backend; drift of AWS resources)."""
        return self.aws is not None or self.pulumi is not None


class ServicesFile(_Strict):
    services: dict[Annotated[str, Field(pattern=SERVICE_NAME_PATTERN)], ServiceSpec]
