"""One settings class, read from the environment when asked (never at import time).

A missing or invalid variable stops start-up with one line naming it: an on-call engineer deploying at 3 a.m.
needs "SLACK_BOT_TOKEN is required when SLACK_SIGNING_SECRET is set", not a pydantic traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from checks.services import ServicesFile

SLACK_DEFAULT_API_URL = "https://slack.com/api/"
SLACK_PARTNERS = "SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP mode)"


class ConfigError(Exception):
    """A configuration problem, told in one sentence that names the variable or file path."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: AnyHttpUrl = AnyHttpUrl(SLACK_DEFAULT_API_URL)
    redis_url: str | None = None
    # Prefix of every key and queue in Redis: several bots (or staging and production) can share one Redis.
    redis_namespace: str = Field("chatops", pattern=r"^[A-Za-z0-9_.-]{1,40}$")
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

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value or None

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
        values = [self.slack_bot_token, self.slack_signing_secret, self.slack_app_token, self.metrics_token]
        return [v.get_secret_value() for v in values if v and v.get_secret_value()]


def read_yaml_file(path: Path | str, what: str) -> Any:
    """Parse a YAML file we were told to use; unreadable or malformed becomes one ConfigError naming file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
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
    from checks.services import (
        ServicesFile,  # the schema lives with the checks that read it
    )

    if not isinstance(data, dict) or "services" not in data:
        raise ConfigError(f"{source}: expected a top-level `services:` mapping")
    try:
        return ServicesFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc)}") from None


def load_services(path: Path) -> ServicesFile:
    """Read and validate the services file; every problem is a ConfigError naming the file and the path in it."""
    return parse_services(read_yaml_file(path, "services file"), source=str(path))
