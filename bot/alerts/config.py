"""Alert-source settings, read from the environment when asked (never at import time). A source whose secret
is unset is off: its route answers 404.

    SNS_TOPIC_ARNS              (none)   comma-separated topic ARNs whose messages are accepted; POST /hooks/sns is
                                         off without one. Anything else gets 403.
    SNS_REGIONS                 (the regions of SNS_TOPIC_ARNS)  regions whose SNS hosts may serve signing
                                         certificates and subscription confirmations
    SNS_TRUST_ROOTS_FILE        (certifi's bundle)  PEM of the roots the SNS signing certificate must chain to
                                         (a leaf-only PEM's issuer is fetched from crt.*.amazontrust.com)
    SNS_CERT_NAME               sns.amazonaws.com   the DNS name the signing certificate must carry
    SNS_CONNECT_TO              (none)   TEST ONLY: `host=127.0.0.1:port,...` sends requests for an SNS host to a
                                         local server, still checking the host name and its TLS certificate as
                                         usual (like curl --connect-to). Never set it in production.
    SNS_TLS_CA_FILE             (system) CA bundle for the HTTPS fetches from SNS hosts
    GRAFANA_WEBHOOK_USER / GRAFANA_WEBHOOK_PASSWORD   HTTP basic auth of the Grafana contact point
    GRAFANA_WEBHOOK_HMAC_SECRET (none)   or: the contact point's hmacConfig.secret
    GRAFANA_WEBHOOK_HMAC_HEADER X-Grafana-Alert-Signature   hmacConfig.header (what Grafana sends when it is
                                         left empty; its UI's placeholder, X-Grafana-Alerting-Signature, is not it)
    GRAFANA_WEBHOOK_TIMESTAMP_HEADER (none)  hmacConfig.timestampHeader, when set there
    DATADOG_WEBHOOK_SECRET      (none)   the value Datadog sends in DATADOG_WEBHOOK_HEADER
    DATADOG_WEBHOOK_HEADER      X-Chatops-Token
    GENERIC_WEBHOOK_SECRET      (none)   HMAC key of POST /hooks/generic
    ALERT_RULES                 []       JSON list of mapping rules, first match wins per field:
                                         [{"source": "cloudwatch", "match": {"alarm_name": "prod-.*"},
                                           "severity": "P1", "service": "api"}]; `match` regexes must match the
                                         whole label value; `source` is optional
    ALERT_WINDOW_S              300      how old a signed timestamp may be (generic, Grafana with a timestamp)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from bot.settings import EnvSettings, NoDecode, invalid
from checks.schema import Meta, Record, Secret

_TOPIC = re.compile(r"^arn:aws[a-z-]*:sns:([a-z0-9-]+):\d{12}:[A-Za-z0-9_.-]{1,256}$")


class Rule(Record):
    """Maps an alert to a severity and/or a service when its labels match."""

    source: str | None = None
    match: dict[str, str] = {}
    severity: Literal["P0", "P1", "P2", "P3"] | None = None
    service: str | None = None

    def __post_init__(self) -> None:
        for label, pattern in self.match.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"match.{label}: {pattern!r} is not a regular expression ({exc})") from None


def _split(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _connect_to(text: str) -> dict[str, str]:
    pairs = [p.split("=", 1) for p in _split(text)]
    if any(len(p) != 2 for p in pairs):
        raise ValueError("use host=address:port,host=address:port")
    return {host.strip().lower(): target.strip() for host, target in pairs}


class AlertSourceSettings(EnvSettings):
    sns_topic_arns: Annotated[list[str], NoDecode(_split)] = []
    sns_regions: Annotated[list[str], NoDecode(_split)] = []
    sns_trust_roots_file: Path | None = None
    sns_cert_name: str = "sns.amazonaws.com"
    sns_connect_to: Annotated[dict[str, str], NoDecode(_connect_to)] = {}
    sns_tls_ca_file: Path | None = None
    grafana_webhook_user: str | None = None
    grafana_webhook_password: Secret | None = None
    grafana_webhook_hmac_secret: Secret | None = None
    grafana_webhook_hmac_header: str = "X-Grafana-Alert-Signature"  # grafana/alerting http/hmac.go's default
    grafana_webhook_timestamp_header: str | None = None
    datadog_webhook_secret: Secret | None = None
    datadog_webhook_header: str = "X-Chatops-Token"
    generic_webhook_secret: Secret | None = None
    alert_rules: list[Rule] = []
    alert_window_s: Annotated[float, Meta(gt=0, le=3600)] = 300.0
    # SNS retries a delivery for at most about an hour by its delivery policy; a signed message much older than
    # that is a replay, and past ALERT_OWNERS_TTL_S it could open an incident again.
    sns_max_age_s: Annotated[float, Meta(gt=0, le=30 * 86_400)] = 86_400.0

    def __post_init__(self) -> None:
        for arn in self.sns_topic_arns:
            if not _TOPIC.match(arn):
                raise invalid("sns_topic_arns", f"{arn!r} is not an SNS topic ARN "
                                                "(arn:aws:sns:<region>:<account>:<name>)")

    def regions(self) -> set[str]:
        """Regions whose SNS hosts are trusted: SNS_REGIONS, else those of the allowed topics."""
        return set(self.sns_regions) or {_TOPIC.match(arn).group(1) for arn in self.sns_topic_arns}  # type: ignore

    def secrets(self) -> list[str]:
        values = [self.grafana_webhook_password, self.grafana_webhook_hmac_secret, self.datadog_webhook_secret,
                  self.generic_webhook_secret]
        return [v.get_secret_value() for v in values if v and v.get_secret_value()]


def load_alert_settings(**overrides: object) -> AlertSourceSettings:
    """Read the environment; a validation error becomes one ConfigError line naming the variable."""
    return AlertSourceSettings.from_env(**overrides)
