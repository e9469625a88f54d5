"""Severity and service of an alert: the configured rules (ALERT_RULES) first, then what the source says.

Severity: the first rule matching the alert's labels that names a severity; else the source's own value when it
is already P0..P3, else that value through ALERT_SEVERITY_MAP; else ALERT_DEFAULT_SEVERITY.
Service: the first matching rule that names one; else the source's candidates in order (a `service` label, a
tag, a resource found in the services file). Only a service of the services file counts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import msgspec

from bot.alerts.config import AlertSourceSettings, Rule
from bot.incidents.notice import AlertSource

SEVERITIES = ("P0", "P1", "P2", "P3")


class Mapping(msgspec.Struct, frozen=True):
    rules: list[Rule]
    severity_map: dict[str, str]
    default_severity: str
    services: Any  # checks.services.ServicesFile: the file as loaded for this request

    @classmethod
    def build(cls, settings: AlertSourceSettings, incident_settings: Any, services: Any) -> Mapping:
        return cls(settings.alert_rules, incident_settings.alert_severity_map,
                   incident_settings.alert_default_severity, services)

    def severity(self, source: AlertSource, labels: dict[str, str], raw: str | None) -> str:
        ruled = self._first(source, labels, "severity")
        if ruled:
            return ruled
        value = (raw or "").strip()
        if value.upper() in SEVERITIES:
            return value.upper()
        return self.severity_map.get(value.lower(), self.default_severity)

    def service(self, source: AlertSource, labels: dict[str, str], candidates: Iterable[str | None]) -> str | None:
        known = self.services.services
        for name in (self._first(source, labels, "service"), *candidates):
            if name and name in known:
                return name
        return None

    def _first(self, source: AlertSource, labels: dict[str, str], what: str) -> str | None:
        for rule in self.rules:
            if getattr(rule, what) and rule.source in (None, source.value) and _matches(rule, labels):
                return getattr(rule, what)
        return None


def _matches(rule: Rule, labels: dict[str, str]) -> bool:
    return all(re.fullmatch(pattern, labels.get(label, "")) for label, pattern in rule.match.items())
