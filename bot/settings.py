"""One settings class, read from the environment when asked (never at import time).

A missing or invalid variable stops start-up with one line naming it: an on-call engineer deploying at 3 a.m.
needs "SLACK_BOT_TOKEN is required when SLACK_SIGNING_SECRET is set", not a pydantic traceback.

`EnvSettings` is what every feature's settings class builds on: each field is read from the variable of its name
in any case, a list, dict or model field as JSON (unless marked `NoDecode`: its validator splits the text itself),
and values passed in win over the environment. That is all this project asked of pydantic-settings, whose sources
for .env files and cloud secret stores cost every process ~5 MiB and ~50 ms to import.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import threading
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

if TYPE_CHECKING:
    from checks.services import ServicesFile

SLACK_DEFAULT_API_URL = "https://slack.com/api/"
NAMESPACE = re.compile(r"(?=.{1,40}$)[A-Za-z0-9_.-]*(\{[A-Za-z0-9_.-]+\})?[A-Za-z0-9_.-]*")
SLACK_PARTNERS = "SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP mode)"


class ConfigError(Exception):
    """A configuration problem, told in one sentence that names the variable or file path."""


class NoDecode:
    """`Annotated[list[str], NoDecode]`: the variable's text goes to the field's validator as it is (comma lists)."""


class EnvSettings(BaseModel):
    """Settings read from the environment when made (see the module docstring); defaults are validated too."""

    model_config = ConfigDict(extra="ignore", validate_default=True, arbitrary_types_allowed=True)

    def __init__(self, **values: Any) -> None:
        super().__init__(**{**environment_values(type(self), os.environ), **values})


def environment_values(model: type[BaseModel], env: Mapping[str, str]) -> dict[str, Any]:
    """The fields of `model` that `env` sets, by name in any case; JSON fields decoded. A JSON `null` leaves a field
    that cannot be None unset (its default), as with pydantic-settings: `ALERT_RULES=null` in a deployment's
    template means the default, not a stopped start."""
    by_name = {name.lower(): text for name, text in env.items()}
    decoded = {name: _decoded(name, field.annotation, field.metadata, by_name[name])
               for name, field in model.model_fields.items() if name in by_name}
    return {name: value for name, value in decoded.items()
            if value is not None or _admits_none(model.model_fields[name].annotation)}


def _decoded(name: str, annotation: Any, metadata: list[Any], text: str) -> Any:
    if NoDecode in metadata or not _is_structured(annotation):
        return text
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{name.upper()}: expected JSON ({exc})") from None


def _admits_none(annotation: Any) -> bool:
    return annotation is Any or (get_origin(annotation) in (Union, types.UnionType)
                                 and type(None) in get_args(annotation))


def _is_structured(annotation: Any) -> bool:
    """A list, set, tuple, dict or model (or an optional one): written as JSON in a variable."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_is_structured(arm) for arm in get_args(annotation) if arm is not type(None))
    kind = origin or annotation
    return isinstance(kind, type) and issubclass(kind, (list, set, frozenset, tuple, dict, BaseModel))


class Settings(EnvSettings):
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: AnyHttpUrl = AnyHttpUrl(SLACK_DEFAULT_API_URL)
    redis_url: str | None = None
    # Prefix of every key and queue in Redis: several bots (or staging and production) can share one Redis. It may
    # hold one Redis Cluster hash tag (`{chatops}`): every key of the bot then lives in that one slot.
    redis_namespace: str = "chatops"
    # Redis Cluster: true uses a cluster client, false a single-node one; unset, the REDIS_URL node is asked
    # (`INFO cluster`) at start-up.
    redis_cluster: bool | None = None
    # Sentinel: "host:port,host:port,..." and the monitored master's name. REDIS_URL then only carries the data
    # nodes' password, TLS (rediss://) and db; its host is ignored, the sentinels name the primary.
    redis_sentinels: str | None = None
    redis_sentinel_master: str | None = None
    redis_sentinel_password: SecretStr | None = None  # the sentinels' own requirepass, if any
    redis_sentinel_tls: bool = False  # TLS to the sentinels themselves
    # WAIT after writes whose loss matters (timers, pages, incidents): replicas that must acknowledge them.
    # Unset: 1 under Sentinel, 0 (no WAIT) otherwise.
    redis_wait_replicas: int | None = Field(None, ge=0, le=16)
    redis_wait_timeout_ms: int = Field(1000, ge=1, le=60_000)
    services_file: Path | None = None
    port: int = Field(3000, ge=1, le=65535)
    # HTTP mode: the address PORT (and WORKER_METRICS_PORT) listen on; 127.0.0.1 behind a local proxy.
    bind_address: str = Field("0.0.0.0", min_length=1)
    # When set, GET /metrics answers only `Authorization: Bearer <METRICS_TOKEN>` (Prometheus' `authorization`).
    metrics_token: SecretStr | None = None
    # HTTP mode: processes sharing PORT (SO_REUSEPORT); unset, one per usable CPU core, at most 4.
    http_workers: int | None = Field(None, ge=1, le=64)
    worker_metrics_port: int | None = Field(None, ge=1, le=65535)  # `chatops worker`: /healthz and /metrics
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    chatops_data_dir: Path = Path(".chatops")
    # No terminal chat: `chatops run` without Slack variables stops with one line (the image sets it, so a
    # container started without its tokens says so instead of chatting with /dev/null).
    chatops_headless: bool = False

    # Worker and diagnosis tuning.
    worker_concurrency: int = Field(16, ge=1, le=512)
    job_visibility_timeout_s: float = Field(30.0, gt=0)
    job_max_deliveries: int = Field(5, ge=1, le=100)
    diagnose_deadline_s: float = Field(60.0, gt=0)
    diagnose_update_interval_s: float = Field(1.0, ge=0)
    # A failing check whose evidence is a time series gets a PNG chart in its thread reply (false: text only).
    diagnose_charts: bool = True
    # While an incident is `monitoring`, its service is diagnosed again this often until it is resolved.
    recovery_recheck_s: float = Field(300.0, ge=1)
    # Fixes from Slack (bot/remediation): off until turned on; a request not approved in time expires.
    remediation_enabled: bool = False
    remediation_request_ttl_s: float = Field(900.0, ge=10)
    slack_timeout_s: float = Field(10.0, gt=0)
    slack_max_retries: int = Field(5, ge=0, le=20)
    slack_channel_burst: int = Field(5, ge=1)
    slack_channel_rate_per_s: float = Field(1.0, gt=0)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("chatops_data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Resolved once at start-up: child processes and a later chdir must all mean the same directory.
        return value.expanduser().absolute()

    @field_validator("redis_namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not NAMESPACE.fullmatch(value):
            raise ValueError("use 1-40 letters, digits, _ . - and at most one hash tag in braces, e.g. chatops or "
                             "{chatops}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value and value.startswith("redis+sentinel"):
            raise ValueError("for Sentinel set REDIS_SENTINELS=host:port,... and REDIS_SENTINEL_MASTER=<name>")
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value or None

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinel_addresses(cls, value: str | None) -> str | None:
        for address in (value or "").split(","):
            host, _, port = address.strip().rpartition(":")
            if value and not (host and port.isdigit() and 0 < int(port) < 65536):
                raise ValueError("must be host:port pairs separated by commas, e.g. s1:26379,s2:26379,s3:26379")
        return value or None

    @model_validator(mode="after")
    def _sentinel_master_named(self) -> Settings:
        if self.redis_sentinels and not self.redis_sentinel_master:
            raise ValueError("REDIS_SENTINEL_MASTER is required when REDIS_SENTINELS is set (the name in "
                             "`sentinel monitor <name> ...`)")
        return self

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        pairs = [a.strip().rpartition(":") for a in (self.redis_sentinels or "").split(",") if a.strip()]
        return [(host, int(port)) for host, _, port in pairs]

    @property
    def wait_replicas(self) -> int:
        """Replicas a durable write waits for: REDIS_WAIT_REPLICAS, else 1 under Sentinel (which needs one to
        promote), else 0."""
        if self.redis_wait_replicas is not None:
            return self.redis_wait_replicas
        return 1 if self.redis_sentinels else 0

    @model_validator(mode="after")
    def _slack_tokens_pair(self) -> Settings:
        if (self.slack_signing_secret or self.slack_app_token) and not self.slack_bot_token:
            raise ValueError("SLACK_BOT_TOKEN is required when SLACK_SIGNING_SECRET or SLACK_APP_TOKEN is set")
        return self

    @property
    def slack_mode(self) -> Literal["socket", "http", "terminal"]:
        if self.slack_app_token:
            return "socket"
        if self.slack_signing_secret:
            return "http"
        return "terminal"

    def check_terminal_chat(self) -> None:
        """`chatops run` without Socket Mode or HTTP mode opens the terminal chat, unless that is surely a mistake:
        a bot token means Slack was meant (one of its partners is missing), and a headless process has no one to
        chat with."""
        if self.slack_bot_token:
            raise ConfigError(f"SLACK_BOT_TOKEN is set without a way to reach Slack: set {SLACK_PARTNERS} too")
        if self.chatops_headless:
            raise ConfigError(f"CHATOPS_HEADLESS is on, so there is no terminal chat: set SLACK_BOT_TOKEN with "
                              f"{SLACK_PARTNERS}")

    def resolved_services_file(self) -> Path:
        """`SERVICES_FILE`, else `services.yml`, else the shipped example, so a fresh clone runs."""
        if self.services_file:
            return self.services_file
        for candidate in (Path("services.yml"), Path("services.example.yml")):
            if candidate.exists():
                return candidate
        return Path(__file__).resolve().parent.parent / "services.example.yml"

    def secrets(self) -> list[str]:
        """Every secret value this process holds, for log redaction and the no-leak test."""
        values = [self.slack_bot_token, self.slack_signing_secret, self.slack_app_token, self.metrics_token,
                  self.redis_sentinel_password]
        return [v.get_secret_value() for v in values if v and v.get_secret_value()]


def read_yaml_file(path: Path | str, what: str) -> Any:
    """Parse a YAML file we were told to use; unreadable or malformed becomes one ConfigError naming file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        # libyaml's loader where PyYAML was built with it: 500 services parse in 0.55 s instead of 1.49 s.
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML") from None


def load_settings(**overrides: object) -> Settings:
    """Read the environment; turn a validation error into one ConfigError line naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, env=True)) from None


def describe_validation_error(exc: ValidationError, *, env: bool = False, prefix: str = "") -> str:
    """The first error as `where: what` — an env var name (upper case) or a dotted file path."""
    err = exc.errors()[0]
    parts = [str(p) for p in err.get("loc", ())]
    if env:
        where = "_".join(parts).upper() or "settings"
    else:
        where = prefix
        for part in parts:
            where += f"[{part}]" if part.isdigit() else (f".{part}" if where else part)
    message = err.get("msg", "invalid").removeprefix("Value error, ")
    if err.get("type") == "missing":
        message = "is required"
        return f"{where} {message}"
    return f"{where}: {message}" if where else message


def parse_services(data: Any, *, source: str = "services file") -> ServicesFile:
    from checks import schema
    from checks.services import ServicesFile, bad_service_name, parse_service  # the schema lives with the checks

    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise ConfigError(f"{source}: expected a top-level `services:` mapping")
    if unknown := [key for key in data if key != "services"]:
        raise ConfigError(f"{source}: {unknown[0]}: unknown key, the file holds only `services:`")
    services = {}
    for name, block in data["services"].items():  # one at a time, so that an error names its service
        if problem := bad_service_name(name):
            raise ConfigError(f"{source}: services: {problem}")
        try:
            services[name] = parse_service(block)
        except schema.ValidationError as exc:
            raise ConfigError(f"{source}: {schema.describe(exc, f'services.{name}')}") from None
    return ServicesFile(services=services)


def load_services(path: Path) -> ServicesFile:
    """Read and validate the services file; every problem is a ConfigError naming the file and the path in it."""
    with _collection_paused():
        return parse_services(read_yaml_file(path, "services file"), source=str(path))


class _CollectorPause:
    """A services file of 500 services is ~200k new, acyclic objects: the cyclic collector ran dozens of times
    while it was parsed, found nothing, and more than doubled the parse (67 against 140 ms here), holding the GIL
    that a reload thread shares with the acks. Refcounting still frees what the parse drops. A collector already
    off (held for the start) stays off; parses in two threads at once turn it back on when the last one ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._resume = False

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self._resume:
                    gc.enable()


_collection_paused = _CollectorPause()
