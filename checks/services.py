"""The services file's schema: which services exist and what `/diagnose` may probe for each.

The checks read these models; `bot.settings.load_services` reads the file and validates each service with
`parse_service`.

It is the only source of probe targets — nothing typed in chat ever becomes a URL or host — so it is validated
strictly, and every error names its path (`services.api.http[0].url: invalid URL`).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal, get_args
from urllib.parse import parse_qs, urlsplit

from checks.schema import HttpUrl, Meta, Strict, ValidationError, field, one_of, parse

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


Port = Annotated[int, Meta(ge=1, le=65535)]
EnvName = Annotated[str, Meta(pattern=r"^[A-Z_][A-Z0-9_]*$")]


class HttpProbe(Strict):
    url: HttpUrl  # anything but an http(s) URL with a host is "invalid URL"
    expect_status: list[Annotated[int, Meta(ge=100, le=599)]] = field(default_factory=lambda: [200])
    samples: Annotated[int, Meta(ge=1, le=50)] = 5
    latency_ms: Annotated[int, Meta(ge=1)] = 1000
    timeout_s: Annotated[float, Meta(gt=0, le=120)] = 5.0
    headers: dict[str, str] = {}


class HostPort(Strict):
    host: str
    port: Port

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class TcpTarget(HostPort):
    """`{host: db, port: 5432}`, or `db:5432` in short (see `parse_service`)."""


class TlsTarget(HostPort):
    """`{host: api.example.com, port: 8443}`, or `api.example.com:8443`, or `api.example.com` for port 443."""

    port: Port = 443


class DatabaseSpec(Strict):
    dsn_env: EnvName
    long_query_s: Annotated[int, Meta(ge=1)] = 300
    # a session waiting this long on another's lock is reported (postgres.locks)
    lock_wait_s: Annotated[int, Meta(ge=1)] = 10


class BucketSpec(Strict):
    """An S3 bucket: `{name: uploads, probe_write: true}`, or `uploads` in short."""

    name: str
    probe_write: bool = False


SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class AwsSpec(Strict):
    region: Annotated[str, Meta(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")] = "us-east-1"
    load_balancers: list[str] = []
    target_groups: list[str] = []
    lambda_functions: list[str] = []
    log_groups: list[str] = []
    queues: list[str] = []
    dynamodb_tables: list[str] = []
    db_instances: list[str] = []
    # instance id → the app's libpq sslmode (an SslMode), judged against the instance's rds.force_ssl and CA expiry;
    # checked in __post_init__, where a wrong mode's error can name its instance
    db_client_sslmode: dict[str, str] = {}
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

    def __post_init__(self) -> None:
        for instance, mode in self.db_client_sslmode.items():
            if mode not in get_args(SslMode):
                raise ValueError(f"db_client_sslmode.{instance}: {mode!r} is not an sslmode, expected "
                                 f"{one_of(list(get_args(SslMode)))}")


_PULUMI_NAME = r"[A-Za-z0-9_.-]+"
PULUMI_CLOUD = "https://api.pulumi.com"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}  # plain http only here (a local proxy or test server): tokens travel


class PulumiSpec(Strict):
    """Where a service's Pulumi stacks keep their state: `s3://bucket[/prefix][?region=r]`, `file:///path`, or
    Pulumi Cloud (`https://api.pulumi.com`, or a self-hosted service's API URL) with its token in `token_env`.

    Stacks are `project/stack` on a self-managed backend (a bare `stack` means the legacy, project-less layout)
    and `organization/project/stack` on Pulumi Cloud.
    """

    backend: str
    stacks: Annotated[list[Annotated[str, Meta(pattern=rf"^{_PULUMI_NAME}(/{_PULUMI_NAME}){{0,2}}$")]],
                      Meta(min_length=1)]
    token_env: EnvName | None = None

    def __post_init__(self) -> None:
        _known_backend(self.backend)
        if self.kind != "cloud":
            return
        if not self.token_env:
            raise ValueError("token_env: name the environment variable that holds the Pulumi access token")
        for index, stack in enumerate(self.stacks):
            if stack.count("/") != 2:
                raise ValueError(f"stacks[{index}]: Pulumi Cloud stacks are organization/project/stack")

    @property
    def kind(self) -> str:
        """`s3`, `file` or `cloud`."""
        scheme = urlsplit(self.backend).scheme
        return "cloud" if scheme in ("https", "http") else scheme

    @property
    def region(self) -> str | None:
        """An S3 backend's `?region=`, when it names one."""
        return (parse_qs(urlsplit(self.backend).query).get("region") or [None])[0]


def _known_backend(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme == "s3" and parts.netloc:
        unknown = sorted(set(parse_qs(parts.query)) - {"region"})
        if unknown:
            raise ValueError(f"backend: unsupported s3 backend option {unknown[0]!r}: the bot uses its own AWS "
                             "credentials; only ?region= is read")
        return
    if parts.scheme == "file" and parts.path.startswith(("/", "~")):
        return
    if parts.scheme == "https" and parts.hostname or parts.scheme == "http" and parts.hostname in _LOOPBACK:
        if parts.hostname == "app.pulumi.com":
            raise ValueError(f"backend: use the API endpoint {PULUMI_CLOUD}, not the console's app.pulumi.com")
        return
    raise ValueError('backend: expected "s3://bucket[/prefix]", "file:///absolute/path" or "https://api.pulumi.com"')


class GcpBucketSpec(Strict):
    """A Cloud Storage bucket: `{name: uploads, access: write}`, or `uploads` in short."""

    name: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")]
    access: Literal["read", "write"] = "read"  # what the service's service account does with the objects
    probe_write: bool = False  # write, read back and delete one object with the bot's own credentials


class CloudSqlSpec(Strict):
    """A Cloud SQL instance: `{instance: orders, path: private}`, or `orders` in short."""

    instance: Annotated[str, Meta(pattern=r"^[a-z][a-z0-9-]{0,97}$")]
    client_ssl: Literal["none", "tls", "cert"] | None = None  # what the app presents: nothing, TLS, TLS + cert
    path: Literal["private", "public", "connector"] | None = None  # how the app reaches it
    client_cidrs: list[ipaddress.IPv4Network] = []  # the app's egress addresses, for authorized networks
    max_connections: Annotated[int, Meta(ge=1)] | None = None  # when a database flag sets it, else from the tier


class BackendServiceSpec(Strict):
    """A load balancer's backend service: `{name: web, per_user: true}`, or `web` in short."""

    name: Annotated[str, Meta(pattern=r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")]
    regional: bool = False  # a regional backend service in the gcp block's region, else global
    per_user: bool = False  # serves per-user responses: caching them all would leak one user's page to another


class GcpSpec(Strict):
    project: Annotated[str, Meta(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")]
    region: Annotated[str, Meta(pattern=r"^[a-z]+-[a-z]+\d+$")]
    service_account: Annotated[str, Meta(pattern=r"^[^@\s]+@[a-z0-9.-]+$")] | None = None  # the app's: bucket grants
    cloud_run: list[Annotated[str, Meta(pattern=r"^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$")]] = []
    cloud_sql: list[CloudSqlSpec] = []
    buckets: list[GcpBucketSpec] = []
    backend_services: list[BackendServiceSpec] = []
    log_filters: list[Annotated[str, Meta(min_length=1, max_length=2000)]] = []  # extra Cloud Logging filters

    def __post_init__(self) -> None:
        if self.buckets and not self.service_account:
            raise ValueError("buckets: set service_account (the app's) so its bucket grants can be checked")


class ServiceSpec(Strict, weakref=True):  # weakref: checks.runner.plan caches a plan per spec
    description: str = ""
    http: list[HttpProbe] = []
    tcp: list[TcpTarget] = []
    dns: list[str] = []
    tls: list[TlsTarget] = []
    cdn: list[HttpUrl] = []  # asset URLs whose cache headers are checked
    database: DatabaseSpec | None = None
    aws: AwsSpec | None = None
    pulumi: PulumiSpec | None = None
    gcp: GcpSpec | None = None
    allow_link_local: bool = False

    def __post_init__(self) -> None:
        self._refuse_link_local()

    def _refuse_link_local(self) -> None:
        if self.allow_link_local:
            return
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

    @property
    def needs_aws(self) -> bool:
        """AWS clients serve the `aws` block, and Pulumi stacks too (an S3 backend; drift of AWS resources)."""
        return self.aws is not None or self.pulumi is not None


class ServicesFile(Strict):
    """The whole file, built by `bot.settings.parse_services` from services validated one at a time."""

    services: dict[str, ServiceSpec]


def bad_service_name(name: object) -> str | None:
    """Why `name` cannot name a service (it is a Redis key part and a Slack command argument), or None."""
    if isinstance(name, str) and re.fullmatch(SERVICE_NAME_PATTERN, name):
        return None
    return (f"{name!r} is not a service name: lower-case letters, digits, `.`, `_` and `-`, at most 63, "
            "starting with a letter or digit")


def parse_service(data: Any) -> ServiceSpec:
    """One service's block from the services file, validated, its shorthands (`db:5432`, a bucket's bare name)
    written out in full first. Raises ValidationError, its path starting in the block (`tcp[0].port`)."""
    return parse(ServiceSpec, _written_out(data, _SHORTHANDS))


def _host_port(value: str, default_port: int | None) -> dict[str, Any]:
    host, sep, port = value.rpartition(":")
    if not sep or "]" in port:
        if default_port is None:
            raise ValueError("expected host:port")
        return {"host": value, "port": default_port}
    if not port.isdigit():
        raise ValueError("port must be a number")
    return {"host": host.strip("[]"), "port": int(port)}


def _named(key: str) -> Any:
    return lambda value: {key: value}


# Where an entry may be written as one string, and what it stands for. msgspec validates an entry as one type, not
# as "a string or a mapping", so these are written out before it reads the block.
_SHORTHANDS: dict[str, Any] = {
    "tcp": lambda value: _host_port(value, None),
    "tls": lambda value: _host_port(value, 443),
    "aws": {"buckets": _named("name")},
    "gcp": {"buckets": _named("name"), "cloud_sql": _named("instance"), "backend_services": _named("name")},
}


def _written_out(data: Any, shorthands: dict[str, Any], where: str = "") -> Any:
    """A copy of `data` with the strings in its shorthand lists written out; anything else is left for msgspec to
    judge (a list that is not a list, a number for a host)."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for key, expand in shorthands.items():
        value = out.get(key)
        if isinstance(expand, dict):
            if isinstance(value, dict):
                out[key] = _written_out(value, expand, f"{where}{key}.")
        elif isinstance(value, list):
            out[key] = [_expanded(item, expand, f"{where}{key}[{i}]") for i, item in enumerate(value)]
    return out


def _expanded(item: Any, expand: Any, where: str) -> Any:
    if not isinstance(item, str):
        return item
    try:
        return expand(item)
    except ValueError as exc:
        # told as msgspec tells its own errors, so that `describe` names the entry: `services.db.tcp[0]: ...`
        raise ValidationError(f"{exc} - at `$.{where}`") from None
