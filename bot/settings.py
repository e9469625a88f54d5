"""One settings class, read from the environment when asked (never at import time).

A missing or invalid variable stops start-up with one line naming it: an on-call engineer deploying at 3 a.m.
needs "SLACK_BOT_TOKEN is required when SLACK_SIGNING_SECRET is set", not a traceback.

`EnvSettings` is what every feature's settings class builds on, read with `from_env(**overrides)`: each field is
read from the variable of its name in any case, a list, dict or struct field as JSON (unless marked `NoDecode`: its
own reader splits the text), booleans as 1/0, true/false, yes/no, on/off, and values passed in win over the
environment. That is all this project asked of a settings library, whose sources for .env files and cloud secret
stores cost every process ~5 MiB and ~50 ms to import.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import re
import threading
import types
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, Union, get_args, get_origin

import msgspec
import yaml

from checks.schema import HttpUrl, Meta, Record, Secret, ValidationError, describe, locate, parse

if TYPE_CHECKING:
    from checks.services import ServicesFile

SLACK_DEFAULT_API_URL = "https://slack.com/api/"
NAMESPACE = re.compile(r"(?=.{1,40}$)[A-Za-z0-9_.-]*(\{[A-Za-z0-9_.-]+\})?[A-Za-z0-9_.-]*")
SLACK_PARTNERS = "SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP mode)"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# What the settings always took for a boolean, which deployments already write (`CHATOPS_HEADLESS=yes`).
BOOLEANS = {"1": True, "true": True, "t": True, "yes": True, "y": True, "on": True,
            "0": False, "false": False, "f": False, "no": False, "n": False, "off": False}


class ConfigError(Exception):
    """A configuration problem, told in one sentence that names the variable or file path."""


class NoDecode:
    """`Annotated[list[str], NoDecode(split)]`: the variable's text (or a text passed in) is not JSON; `split` turns
    it into the field's value, raising ValueError with what to write instead."""

    def __init__(self, read: Callable[[str], Any]) -> None:
        self.read = read


def invalid(variable: str, message: str) -> ValueError:
    """A field's rule broken, raised from `__post_init__`: the message names the variable as the user set it."""
    return ValueError(f"{variable.upper()}: {message}")


class EnvSettings(Record):
    """Settings read from the environment by `from_env` (see the module docstring). Made in code (`Settings()`)
    they are neither read from it nor type-checked: only `__post_init__` runs."""

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """The environment's values, then `overrides`, over the defaults, all validated (the defaults too);
        every problem is one ConfigError line naming the variable."""
        plan = _plan(cls)
        values = {name: field.default_value() for name, field in plan.items()}
        values |= environment_values(cls, os.environ, skip=overrides.keys())
        values |= {name: value for name, value in overrides.items() if name in plan}
        try:
            return parse(cls, {name: plan[name].prepared(value) for name, value in values.items()})
        except ValidationError as exc:
            raise ConfigError(_describe_env_error(exc, cls)) from None


class _Field:
    """What reading one field needs to know of its type, worked out once per class."""

    def __init__(self, info: msgspec.structs.FieldInfo) -> None:
        self.name = info.name
        self.info = info
        self.optional = info.type is Any or type(None) in _arms(_unwrapped(info.type))
        arms = [_unwrapped(arm) for arm in _arms(_unwrapped(info.type)) if arm is not type(None)]
        self.read = next((m.read for m in getattr(info.type, "__metadata__", ()) if isinstance(m, NoDecode)), None)
        self.structured = self.read is None and any(_is_structured(arm) for arm in arms)
        self.boolean = bool in arms
        self.number = any(arm in (int, float) for arm in arms)
        self.path = Path in arms

    def default_value(self) -> Any:
        default = self.info.default
        return self.info.default_factory() if default is msgspec.NODEFAULT else default

    def decoded(self, text: str) -> Any:
        """The variable's text: JSON for a structured field, else as it is (parse converts numbers)."""
        if not self.structured:
            return text
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{self.name.upper()}: expected JSON ({exc})") from None

    def prepared(self, value: Any) -> Any:
        """A text as the settings always took it, where msgspec's lax mode does not: split by the field's reader,
        a boolean written yes/no/on/off, a number with spaces around it (a ConfigMap's trailing newline), an empty
        path as unset (a template's `SERVICES_FILE=` means "the default", not "this directory")."""
        if not isinstance(value, str):
            return value
        if self.path and not value.strip():
            return self.default_value()
        if self.read is not None:
            try:
                return self.read(value)
            except ValueError as exc:
                raise ConfigError(f"{self.name.upper()}: {exc}") from None
        if self.boolean:
            if value.strip().lower() not in BOOLEANS:
                raise ConfigError(f"{self.name.upper()}: expected true or false (or 1/0, yes/no, on/off), got "
                                  f"{value!r}")
            return BOOLEANS[value.strip().lower()]
        return value.strip() if self.number else value


@functools.cache
def _plan(model: type[msgspec.Struct]) -> dict[str, _Field]:
    return {info.name: _Field(info) for info in msgspec.structs.fields(model)}


def environment_values(model: type[msgspec.Struct], env: Mapping[str, str], *,
                       skip: Collection[str] = ()) -> dict[str, Any]:
    """The fields of `model` that `env` sets (but those in `skip`), by name in any case; JSON fields decoded. A
    JSON `null` leaves a field that cannot be None unset (its default), as it always did:
    `ALERT_RULES=null` in a deployment's template means the default, not a stopped start."""
    by_name = {name.lower(): text for name, text in env.items()}
    plan = _plan(model)
    decoded = {name: field.decoded(by_name[name]) for name, field in plan.items()
               if name in by_name and name not in skip}
    return {name: value for name, value in decoded.items() if value is not None or plan[name].optional}


def _unwrapped(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _arms(annotation: Any) -> tuple[Any, ...]:
    return get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)


def _is_structured(annotation: Any) -> bool:
    """A list, set, tuple, dict or struct: written as JSON in a variable."""
    kind = get_origin(annotation) or annotation
    return isinstance(kind, type) and issubclass(kind, (list, set, frozenset, tuple, dict, msgspec.Struct))


def _describe_env_error(exc: ValidationError, model: type[msgspec.Struct]) -> str:
    """msgspec's error as `VARIABLE: what` (`ALERT_RULES[0].severity: ...` inside a JSON value); a rule of
    `__post_init__` already names its variables."""
    where, message = locate(exc, model)
    variable = re.match(r"[a-z][a-z0-9_]*", where)
    if variable is None or variable.group() not in _plan(model):
        return f"{where}: {message}" if where else message
    return f"{variable.group().upper()}{where[variable.end():]}: {message}"


class Settings(EnvSettings):
    slack_bot_token: Secret | None = None
    slack_signing_secret: Secret | None = None
    slack_app_token: Secret | None = None
    slack_api_url: HttpUrl = HttpUrl(SLACK_DEFAULT_API_URL)
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
    redis_sentinel_password: Secret | None = None  # the sentinels' own requirepass, if any
    redis_sentinel_tls: bool = False  # TLS to the sentinels themselves
    # WAIT after writes whose loss matters (timers, pages, incidents): replicas that must acknowledge them.
    # Unset: 1 under Sentinel, 0 (no WAIT) otherwise.
    redis_wait_replicas: Annotated[int, Meta(ge=0, le=16)] | None = None
    redis_wait_timeout_ms: Annotated[int, Meta(ge=1, le=60_000)] = 1000
    services_file: Path | None = None
    port: Annotated[int, Meta(ge=1, le=65535)] = 3000
    # HTTP mode: the address PORT (and WORKER_METRICS_PORT) listen on; 127.0.0.1 behind a local proxy.
    bind_address: Annotated[str, Meta(min_length=1)] = "0.0.0.0"
    # When set, GET /metrics answers only `Authorization: Bearer <METRICS_TOKEN>` (Prometheus' `authorization`).
    metrics_token: Secret | None = None
    # HTTP mode: processes sharing PORT (SO_REUSEPORT); unset, one per usable CPU core, at most 4.
    http_workers: Annotated[int, Meta(ge=1, le=64)] | None = None
    worker_metrics_port: Annotated[int, Meta(ge=1, le=65535)] | None = None  # `chatops worker`: /healthz, /metrics
    log_level: str = "INFO"  # one of LOG_LEVELS, in any case
    log_format: Literal["text", "json"] = "text"
    chatops_data_dir: Path = Path(".chatops")
    # No terminal chat: `chatops run` without Slack variables stops with one line (the image sets it, so a
    # container started without its tokens says so instead of chatting with /dev/null).
    chatops_headless: bool = False

    # Worker and diagnosis tuning.
    worker_concurrency: Annotated[int, Meta(ge=1, le=512)] = 16
    job_visibility_timeout_s: Annotated[float, Meta(gt=0)] = 30.0
    job_max_deliveries: Annotated[int, Meta(ge=1, le=100)] = 5
    diagnose_deadline_s: Annotated[float, Meta(gt=0)] = 60.0
    diagnose_update_interval_s: Annotated[float, Meta(ge=0)] = 1.0
    # A failing check whose evidence is a time series gets a PNG chart in its thread reply (false: text only).
    diagnose_charts: bool = True
    # While an incident is `monitoring`, its service is diagnosed again this often until it is resolved.
    recovery_recheck_s: Annotated[float, Meta(ge=1)] = 300.0
    # Fixes from Slack (bot/remediation): off until turned on; a request not approved in time expires.
    remediation_enabled: bool = False
    remediation_request_ttl_s: Annotated[float, Meta(ge=10)] = 900.0
    slack_timeout_s: Annotated[float, Meta(gt=0)] = 10.0
    slack_max_retries: Annotated[int, Meta(ge=0, le=20)] = 5
    slack_channel_burst: Annotated[int, Meta(ge=1)] = 5
    slack_channel_rate_per_s: Annotated[float, Meta(gt=0)] = 1.0

    def __post_init__(self) -> None:
        self.log_level = _log_level(self.log_level)
        # Resolved once at start-up: child processes and a later chdir must all mean the same directory.
        self.chatops_data_dir = self.chatops_data_dir.expanduser().absolute()
        _check_namespace(self.redis_namespace)
        self.redis_url = _redis_url(self.redis_url)
        self.redis_sentinels = _sentinel_addresses(self.redis_sentinels)
        if self.redis_sentinels and not self.redis_sentinel_master:
            raise ValueError("REDIS_SENTINEL_MASTER is required when REDIS_SENTINELS is set (the name in "
                             "`sentinel monitor <name> ...`)")
        if (self.slack_signing_secret or self.slack_app_token) and not self.slack_bot_token:
            raise ValueError("SLACK_BOT_TOKEN is required when SLACK_SIGNING_SECRET or SLACK_APP_TOKEN is set")

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


def _log_level(value: str) -> str:
    if value.upper() not in LOG_LEVELS:
        raise invalid("log_level", f"use one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return value.upper()


def _check_namespace(value: str) -> None:
    if not NAMESPACE.fullmatch(value):
        raise invalid("redis_namespace", "use 1-40 letters, digits, _ . - and at most one hash tag in braces, e.g. "
                                         "chatops or {chatops}")


def _redis_url(value: str | None) -> str | None:
    if value and value.startswith("redis+sentinel"):
        raise invalid("redis_url", "for Sentinel set REDIS_SENTINELS=host:port,... and REDIS_SENTINEL_MASTER=<name>")
    if value and not value.startswith(("redis://", "rediss://", "unix://")):
        raise invalid("redis_url", "must start with redis://, rediss:// or unix://")
    return value or None


def _sentinel_addresses(value: str | None) -> str | None:
    for address in (value or "").split(","):
        host, _, port = address.strip().rpartition(":")
        if value and not (host and port.isdigit() and 0 < int(port) < 65536):
            raise invalid("redis_sentinels", "must be host:port pairs separated by commas, e.g. "
                                             "s1:26379,s2:26379,s3:26379")
    return value or None


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
    """Read the environment; a validation error becomes one ConfigError line naming the variable."""
    return Settings.from_env(**overrides)


def parse_services(data: Any, *, source: str = "services file") -> ServicesFile:
    from checks.services import ServicesFile, ServiceSpec, bad_service_name, parse_service  # the schema lives with the checks

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
        except ValidationError as exc:
            raise ConfigError(f"{source}: {describe(exc, f'services.{name}', ServiceSpec)}") from None
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
