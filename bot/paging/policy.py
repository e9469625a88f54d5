"""The escalation policy: who is paged for each severity, how long to wait for an ack, and who may escalate.

Read from a YAML file (validated; every error names its path, `severities.P0.then[1]: unknown provider …`) or,
without a file, built from defaults and a few environment variables. The policy is data: the escalation engine
freezes it when paging starts and walks `levels_for(severity)`; a severity raise pages `added_levels(old, new)`.

Grammar of a level (`first`, and each item of `then`):
    pagerduty                              a configured provider, paging its own default target (PD: the service)
    U0123ABCD / S0456EFGH                  a Slack user / user group, DM'd by the built-in `slack` provider
    oncall / managers                      the Slack ids listed under `oncall:` / `managers:`
    {provider: opsgenie, targets: [team:sre]}   a provider with explicit targets
    {schedule: payments-primary}           whoever is on call for that schedule (ONCALL_FILE) when the level fires
    {schedule: by_service}                 whoever is on call for the schedule ONCALL_FILE's `services:` gives the
                                           incident's service (or its `default_schedule`)
    [pagerduty, managers, U0CTO]           several of the above paged at once
`then` is a list of levels, so `then: [managers, U0CTO]` is two levels (managers, then the CTO) while
`then: [[managers, U0CTO]]` is one level paging both. `repeat: N` pages the last level N more times, each
repeat a level of its own (own number, own dedup key), `ack_timeout` apart.

Providers are named `pagerduty`, `pagerduty-<anything>`, `opsgenie` or `opsgenie-<anything>` (several
PagerDuty services = several routing keys); `slack` is built in. Secrets are never written in the file: a
provider names the environment variable that holds its key (`routing_key_env: PAGERDUTY_ROUTING_KEY`).

Defaults (used for a missing file, and for any severity or field the file leaves out), where "on-call" is the
first configured of pagerduty → opsgenie → Slack DMs to `oncall`, and "managers" are Slack DMs to `managers`:
    P0  on-call + managers at once, high urgency; unacked after 15m → on-call + managers again, repeated once
    P1  on-call, high urgency; unacked after 1h → managers
    P2  on-call at low urgency (PagerDuty `warning`: notifies, does not wake); ack timeout 4h, no escalation
    P3  nobody is paged; ack timeout 24h
    status-update reminders: P0 15m, P1 30m, P2 1h, P3 24h.

Permissions (`permissions:`, one key per action in PERMISSION_ACTIONS): `channel_members` (the default: the
incident channel's members, its commander and role holders), `responders` (commander and role holders only) or
a list of Slack user/group ids. Incident admins (INCIDENT_ADMINS) may do everything.

Fixes from Slack (`remediation:`): `approval: default` (a second person must approve for P0/P1 incidents and
outside an incident) or `always`; `approvers:` Slack users/groups who may approve (default: whoever the
`remediate` permission allows); `self_approve:` actions the requester may approve themselves.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from msgspec import UNSET, Struct, UnsetType
from msgspec.structs import asdict, force_setattr, replace

from bot.oncall.schedule import BY_SERVICE
from bot.paging.kinds import PAGERDUTY, SLACK_DM, ProviderKind, configurable, kind_of
from bot.paging.providers import SEVERITIES, Page, RetrySpec, make_dedup_key
from bot.settings import ConfigError, read_yaml_file
from checks.schema import HttpUrl, Meta, Secret, Strict, ValidationError, describe, one_of, parse

log = logging.getLogger(__name__)

SLACK_PROVIDER = SLACK_DM.name
DEFAULT_ACK_TIMEOUT_S = {"P0": 15 * 60, "P1": 60 * 60, "P2": 4 * 3600, "P3": 24 * 3600}
DEFAULT_UPDATE_EVERY_S = {"P0": 15 * 60, "P1": 30 * 60, "P2": 60 * 60, "P3": 24 * 3600}
DEFAULT_URGENCY = {"P0": "high", "P1": "high", "P2": "low", "P3": "low"}
ENV_ONCALL = "PAGING_ONCALL"  # comma/space separated Slack user or group ids, used when there is no file
ENV_MANAGERS = "PAGING_MANAGERS"

_SLACK_ID = re.compile(r"^[UWS][A-Z0-9]{2,}$")
_SCHEDULE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
SCHEDULE = "schedule"  # a level's target resolved when it fires: `{schedule: <name>}` → whoever is on call then
_PROVIDER_SUFFIX = re.compile(r"^-[a-z0-9][a-z0-9_-]{0,39}$")  # the `-<anything>` of `pagerduty-<anything>`
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_SECRET_KEYS = ("routing_key", "api_key", "integration_key", "key", "token", "secret")

# ---------------------------------------------------------------------------------------------------- durations

def parse_duration(value: Any) -> float:
    """Seconds from `900`, `"90s"`, `"15m"`, `"1h"`, `"1h30m"` or `"2d"`."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90s, 15m, 1h or 1h30m, or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        match = _DURATION.match(text) if text else None
        if text.replace(".", "", 1).isdigit():
            seconds = float(text)
        elif match and any(match.groups()):
            d, h, m, s = (float(g) if g else 0.0 for g in match.groups())
            seconds = d * 86400 + h * 3600 + m * 60 + s
        else:
            raise ValueError("expected a duration such as 90s, 15m, 1h or 1h30m, or a number of seconds")
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return seconds


def _slack_id(value: Any) -> Any:
    if not isinstance(value, str) or not _SLACK_ID.match(value):
        raise ValueError(f"expected a Slack user or group id like U0123ABCD or S0123ABCD, got {value!r}")
    return value


def _env_name(value: Any) -> Any:
    if not isinstance(value, str) or not _ENV_NAME.match(value):
        raise ValueError(f"expected the name of an environment variable (like {PAGERDUTY.secret_env}), "
                         "not the key itself")
    return value


# The file's own value types, each read by its `from_data` (checks.schema), so an error is reported at the value's
# path. What the policy builds from them is plain str and float again: the resolved policy ends up in records.

class Duration(float):
    """Seconds, written as `parse_duration` reads them."""

    __slots__ = ()

    @classmethod
    def from_data(cls, value: Any) -> Duration:
        return cls(parse_duration(value))


class SlackId(str):
    """A Slack user or group id (U…, W…, S…)."""

    __slots__ = ()

    @classmethod
    def from_data(cls, value: Any) -> SlackId:
        return cls(_slack_id(value))


class EnvName(str):
    """The name of the environment variable holding a key — never the key: the message does not echo it."""

    __slots__ = ()

    @classmethod
    def from_data(cls, value: Any) -> EnvName:
        return cls(_env_name(value))


class Allowed:
    """Who may do an action, as written: `channel_members`, `responders` or a list of Slack user/group ids."""

    __slots__ = ("value",)

    def __init__(self, value: str | tuple[str, ...]) -> None:
        self.value = value

    @classmethod
    def from_data(cls, value: Any) -> Allowed:
        if value in ("channel_members", "responders"):
            return cls(value)
        if isinstance(value, list) and value:
            return cls(tuple(_slack_id(v) for v in value))
        raise ValueError("expected channel_members, responders or a list of Slack user/group ids")

    def to_data(self) -> str | list[str]:
        return self.value if isinstance(self.value, str) else list(self.value)

    def __repr__(self) -> str:
        return f"Allowed({self.value!r})"


_CHANNEL_MEMBERS = Allowed("channel_members")


# ----------------------------------------------------------------------------------------- the file, as written
# Strict: an unknown key is refused. msgspec's messages do not echo the input (a key pasted into the wrong field
# must not come back in an error), except a Literal's `Invalid enum value '…'`, which `describe` rewords.

class ProviderSpec(Strict):
    """A configured provider's settings as written; `_spec_struct` adds its kind's `<secret>_env` and URL fields."""

    kind: ClassVar[ProviderKind]
    timeout_s: Annotated[float, Meta(gt=0, le=60)] = 5.0
    retry: RetrySpec = RetrySpec()
    source: Annotated[str, Meta(min_length=1, max_length=100)] = "chatops-incident-bot"
    # The key's rate budget (bot/queue/pacing.py); left out, the kind's documented default (PagerDuty: 120 a
    # minute; Opsgenie: none, its limits depend on the plan). `rate_limit: null` paces only on 429s.
    rate_limit: Annotated[int, Meta(ge=1, le=100_000)] | None | UnsetType = UNSET
    rate_window_s: Annotated[float, Meta(gt=0, le=3600)] | UnsetType = UNSET

    def secret_env(self) -> str:
        return str(getattr(self, self.kind.env_field))

    def resolve(self, env: Mapping[str, str]) -> Any:
        """The kind's config, its key read from the environment variable the file names. Raises ValueError
        (`<field>: <what>`, never the key) when the config refuses the key."""
        assert self.kind.config is not None
        paced = {name: getattr(self, name) for name in ("rate_limit", "rate_window_s")
                 if getattr(self, name) is not UNSET}  # left out: the kind's default
        return self.kind.config(**{self.kind.secret_field: Secret(_env_secret(env, self.secret_env())),
                                   self.kind.url_field: getattr(self, self.kind.url_field),
                                   "timeout_s": self.timeout_s, "retry": self.retry, "source": self.source, **paced})


@cache
def _spec_struct(kind: ProviderKind) -> type[ProviderSpec]:
    """The settings of a kind (made once per kind, on first use): ProviderSpec plus `<secret>_env`, URL."""
    # Made through ProviderSpec's own metaclass, as a class statement would be (defstruct does not build structs
    # with a metaclass of their own).
    namespace = {"__module__": __name__, "__annotations__": {kind.env_field: EnvName, kind.url_field: HttpUrl},
                 kind.env_field: EnvName(kind.secret_env), kind.url_field: HttpUrl.parse(kind.default_url),
                 "kind": kind}  # which kind the literal-secret check and `resolve` speak for
    return type(ProviderSpec)(f"{kind.name.title()}Spec", (ProviderSpec,), namespace)


def _no_literal_secrets(name: str, kind: ProviderKind, raw: Mapping[str, Any]) -> None:
    """Checked before the settings are read, so a pasted key is refused as such, not as an unknown key."""
    for key in _SECRET_KEYS:
        if key in raw:
            raise ConfigError(f"providers.{name}: `{key}`: secrets do not belong in the policy file; put the key in "
                              f"an environment variable and name that variable in `{kind.env_field}`")


class SeveritySpec(Strict):
    first: Any = UNSET  # a level (grammar in the module docstring); left out = the default, `[]` = nobody
    ack_timeout: Duration | None = None
    then: list[Any] | dict[str, Any] | str | None = None  # a list of levels, or one level without the list
    repeat: Annotated[int, Meta(ge=0, le=10)] | None = None
    urgency: Literal["high", "low"] | None = None
    update_every: Duration | None = None

    def __post_init__(self) -> None:
        if isinstance(self.then, str | dict):
            force_setattr(self, "then", [self.then])


class SeveritiesSpec(Strict):
    P0: SeveritySpec = SeveritySpec()
    P1: SeveritySpec = SeveritySpec()
    P2: SeveritySpec = SeveritySpec()
    P3: SeveritySpec = SeveritySpec()


# What the permission policy governs; every action defaults to `channel_members`.
PERMISSION_ACTIONS = ("severity", "status", "commander", "roles", "resolve", "escalate", "note", "read",
                      "remediate")


class PermissionsSpec(Strict):
    """`permissions:` in the policy file: who may do each action to an incident (`read`: its summary and
    postmortem; `note`: add to its timeline). Incident admins (INCIDENT_ADMINS) may always."""

    severity: Allowed = _CHANNEL_MEMBERS
    status: Allowed = _CHANNEL_MEMBERS
    commander: Allowed = _CHANNEL_MEMBERS
    roles: Allowed = _CHANNEL_MEMBERS
    resolve: Allowed = _CHANNEL_MEMBERS
    escalate: Allowed = _CHANNEL_MEMBERS
    note: Allowed = _CHANNEL_MEMBERS
    read: Allowed = _CHANNEL_MEMBERS
    remediate: Allowed = _CHANNEL_MEMBERS  # request and approve fixes from Slack (bot/remediation)


class RemediationSpec(Strict):
    """`remediation:` in the policy file: when a fix needs a second person, and who that may be."""

    approval: Literal["default", "always"] = "default"
    approvers: list[SlackId] = []
    self_approve: list[str] = []  # action names, e.g. lambda.lift_zero_concurrency


class RemediationPolicy(Struct, frozen=True):
    always: bool = False  # every fix needs a second person, whatever the severity
    approvers: frozenset[str] = frozenset()  # empty: whoever the `remediate` permission allows
    self_approve: frozenset[str] = frozenset()

    def needs_second_person(self, action: str, severity: str | None) -> bool:
        """`severity` None: outside an incident."""
        if action in self.self_approve:
            return False
        return self.always or severity in (None, "P0", "P1")


def _configurable_name(name: str) -> bool:
    kind = kind_of(name)
    return (kind is not None and kind.config is not None
            and (name == kind.name or bool(_PROVIDER_SUFFIX.match(name.removeprefix(kind.name)))))


def _naming_rule() -> str:
    """`pagerduty, opsgenie, pagerduty-<name> or opsgenie-<name>`, from the table of kinds."""
    return one_of([k.name for k in configurable()] + [f"{k.name}-<name>" for k in configurable()])


class PolicyFile(Strict):
    providers: dict[str, dict[str, Any]] = {}  # each read by its kind: `provider_specs`
    oncall: list[SlackId] = []
    managers: list[SlackId] = []
    severities: SeveritiesSpec = SeveritiesSpec()
    escalation_allowed: Allowed | None = None  # older spellings of permissions.escalate / permissions.severity
    severity_change_allowed: Allowed | None = None
    permissions: PermissionsSpec = PermissionsSpec()
    remediation: RemediationSpec = RemediationSpec()

    def permission_specs(self) -> dict[str, Allowed]:
        """action → what the file allows; the older top-level keys win for their action when given."""
        specs = asdict(self.permissions)
        older = {"escalate": self.escalation_allowed, "severity": self.severity_change_allowed}
        return {**specs, **{action: value for action, value in older.items() if value is not None}}

    def provider_specs(self) -> dict[str, ProviderSpec]:
        """Each provider's settings, validated by its kind (the name says which) on their own, so that an error
        names the provider (`providers.pagerduty-db.timeout_s`)."""
        specs: dict[str, ProviderSpec] = {}
        for name, raw in self.providers.items():
            kind = kind_of(name)
            assert kind is not None  # `_provider_blocks` refused names no kind owns
            _no_literal_secrets(name, kind, raw)
            try:
                specs[name] = parse(_spec_struct(kind), raw)
            except ValidationError as exc:
                raise ConfigError(describe(exc, f"providers.{name}", _spec_struct(kind))) from None
        return specs


def _provider_blocks(providers: Any) -> dict[str, dict[str, Any]]:
    """`providers:` checked before the file is read, so each message can name `providers.<name>` itself."""
    if providers is None:
        return {}
    if not isinstance(providers, dict):
        raise ConfigError("providers: expected a mapping of provider name to its settings")
    for name, spec in providers.items():
        if name == SLACK_PROVIDER:
            raise ConfigError("providers.slack: `slack` is the built-in Slack DM provider and takes no settings")
        if not isinstance(name, str) or not _configurable_name(name):
            raise ConfigError(f"providers.{name}: a provider is named {_naming_rule()} "
                              "(the name says which kind it is)")
        if spec is not None and not isinstance(spec, dict):
            raise ConfigError(f"providers.{name}: expected a mapping of settings")
    return {name: spec or {} for name, spec in providers.items()}


# ------------------------------------------------------------------------------------- the policy, as resolved

class Target(Struct, frozen=True):
    provider: str  # "slack", "pagerduty", "opsgenie-emea", ...
    id: str | None = None  # a Slack id, an Opsgenie responder; None = the provider's own default target


class Level(Struct, frozen=True):
    number: int  # 1-based; repeats are unrolled, so every level has its own number (and dedup keys)
    targets: tuple[Target, ...]
    ack_timeout_s: float  # how long to wait for an ack before paging the next level
    urgency: str
    repeat_of: int | None = None  # the level this one repeats, if it is a repeat

    def routes(self) -> dict[str, tuple[str, ...]]:
        """provider name → the target ids it gets (empty tuple = the provider's default target)."""
        routes: dict[str, list[str]] = {}
        for target in self.targets:
            ids = routes.setdefault(target.provider, [])
            if target.id is not None and target.id not in ids:
                ids.append(target.id)
        return {name: tuple(ids) for name, ids in routes.items()}


class SeverityPolicy(Struct, frozen=True):
    severity: str
    levels: tuple[Level, ...]
    ack_timeout_s: float
    update_every_s: float
    urgency: str


class Permission(Struct, frozen=True):
    """Who may do something to an incident: everyone in its channel and its responders (commander and role
    holders), only its responders, or the listed users and members of groups. Incident admins always may:
    the incident service adds them, as they are settings rather than policy."""

    channel_members: bool
    ids: frozenset[str] = frozenset()
    responders: bool = False

    def allows(self, user: str, *, in_channel: bool, user_groups: Iterable[str] = (),
               responder: bool = False) -> bool:
        if self.channel_members:
            return in_channel or responder
        if self.responders and responder:
            return True
        return user in self.ids or any(group in self.ids for group in user_groups)


class PagingConfig(Struct, frozen=True):
    """The providers to build, secrets already read from the environment."""

    providers: Mapping[str, Any]  # provider name → its kind's config (PagerDutyConfig, OpsgenieConfig)

    def secrets(self) -> list[str]:
        """Every provider key this policy holds, for log redaction and no-leak tests (like Settings.secrets)."""
        return [getattr(config, _kind(name).secret_field).get_secret_value()
                for name, config in self.providers.items()]


class PagingPolicy(Struct, frozen=True):
    severities: Mapping[str, SeverityPolicy]
    permissions: Mapping[str, Permission]  # PERMISSION_ACTIONS → who may
    paging: PagingConfig
    source: str = "defaults"
    remediation: RemediationPolicy = RemediationPolicy()
    warnings: tuple[str, ...] = ()

    @property
    def escalation_allowed(self) -> Permission:
        return self.permissions["escalate"]

    @property
    def severity_change_allowed(self) -> Permission:
        return self.permissions["severity"]

    def schedules(self) -> set[str]:
        """Every schedule a level names (each must exist in ONCALL_FILE); not `by_service`, chosen per incident."""
        return {t.id for sev in self.severities.values() for level in sev.levels for t in level.targets
                if t.provider == SCHEDULE and t.id and t.id != BY_SERVICE}

    def pages_by_service(self) -> bool:
        """Some level names `{schedule: by_service}` (ONCALL_FILE must then say which schedule each service has)."""
        return any(t.provider == SCHEDULE and t.id == BY_SERVICE
                   for sev in self.severities.values() for level in sev.levels for t in level.targets)

    def levels_for(self, severity: str) -> list[Level]:
        return list(self._severity(severity).levels)

    def ack_timeout_s(self, severity: str) -> float:
        return self._severity(severity).ack_timeout_s

    def update_every_s(self, severity: str) -> float:
        return self._severity(severity).update_every_s

    def urgency(self, severity: str) -> str:
        return self._severity(severity).urgency

    def added_levels(self, old_severity: str, new_severity: str, *, reached: int = 1) -> list[Level]:
        """What to page now when an incident goes from `old_severity` to `new_severity`.

        `reached` is how many levels the old severity had paged (1 = only the first). The answer is the new
        severity's first `reached` levels, keeping only the targets the old ones did not already page at the
        same or a higher urgency (someone paged at low urgency is paged again at high), without repeats and
        without levels left empty. Escalation then continues with the new severity's level `reached + 1`.
        A lowering usually returns [] (nobody new to page).
        """
        paged: dict[Target, str] = {}
        for level in self.levels_for(old_severity)[:reached]:
            for target in level.targets:
                paged[target] = "high" if "high" in (paged.get(target), level.urgency) else level.urgency
        added = []
        for level in self.levels_for(new_severity)[:reached]:
            fresh = tuple(t for t in level.targets if paged.get(t) not in ("high", level.urgency))
            for target in fresh:
                paged[target] = level.urgency
            if fresh:
                added.append(replace(level, targets=fresh))
        return added

    def _severity(self, severity: str) -> SeverityPolicy:
        try:
            return self.severities[severity]
        except KeyError:
            raise ValueError(f"unknown severity {severity!r}; expected one of {', '.join(SEVERITIES)}") from None


def pages_for_level(level: Level, *, incident_id: str, severity: str, title: str, summary: str,
                    link: str | None = None, details: Mapping[str, Any] | None = None) -> dict[str, Page]:
    """One `Page` per provider of a level, keyed by provider name, each with the deterministic dedup key."""
    return {
        provider: Page(incident_id=incident_id, level=level.number,
                       dedup_key=make_dedup_key(incident_id, severity, level.number), title=title,
                       severity=severity, summary=summary, link=link, targets=targets,
                       details=dict(details or {}), urgency=level.urgency)  # type: ignore[arg-type]
        for provider, targets in level.routes().items()
    }


# ------------------------------------------------------------------------------------------------ loading

def load_policy(path: Path | str | None, *, env: Mapping[str, str] | None = None) -> PagingPolicy:
    """The policy from `path`, or the defaults when `path` is None; a ConfigError names the file and the path."""
    env = os.environ if env is None else env
    if path is None:
        return _logged(default_policy(env))
    data = read_yaml_file(path, "paging policy")
    return _logged(parse_policy(data if data is not None else {}, env=env, source=str(path)))


def parse_policy(data: Any, *, env: Mapping[str, str], source: str = "paging policy") -> PagingPolicy:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        spec = parse(PolicyFile, {**data, "providers": _provider_blocks(data.get("providers"))})
        specs = spec.provider_specs()
        configs = {name: _resolve_provider(name, s, env) for name, s in specs.items()}
        return _build(spec, configs, source=source)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe(exc, kind=PolicyFile)}") from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def default_policy(env: Mapping[str, str] | None = None) -> PagingPolicy:
    """The policy without a file: providers whose key is in the environment, on-call/managers from env vars."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {"providers": {}, "oncall": _id_list(env.get(ENV_ONCALL, "")),
                            "managers": _id_list(env.get(ENV_MANAGERS, ""))}
    for kind in configurable():
        if env.get(kind.secret_env):
            data["providers"][kind.name] = {}
    try:
        return parse_policy(data, env=env, source="default paging policy")
    except ConfigError as exc:
        raise ConfigError(f"{exc} (set by {ENV_ONCALL}/{ENV_MANAGERS}/{PAGERDUTY.secret_env})") from None


def _kind(provider_name: str) -> ProviderKind:
    kind = kind_of(provider_name)
    if kind is None:
        raise ValueError(f"no kind of paging provider is named like {provider_name!r}")
    return kind


def _resolve_provider(name: str, spec: ProviderSpec, env: Mapping[str, str]) -> Any:
    try:
        return spec.resolve(env)
    except ValueError as exc:  # the config refused the key: `<field>: <what>`, never the value itself
        field, _, message = str(exc).partition(": ")
        where = spec.secret_env() if field == spec.kind.secret_field else f"providers.{name}.{field}"
        raise ConfigError(f"{where}: {message}") from None


def _env_secret(env: Mapping[str, str], name: str) -> str:
    value = (env.get(name) or "").strip()
    if not value:
        raise ConfigError(f"environment variable {name} is not set (the paging policy names it)")
    return value


def _id_list(text: str) -> list[str]:
    return [part for part in re.split(r"[\s,]+", text) if part]


# ------------------------------------------------------------------------------------------------ building

class _Names(Struct, frozen=True):
    providers: tuple[str, ...]
    oncall: tuple[str, ...]
    managers: tuple[str, ...]


def _build(spec: PolicyFile, configs: dict[str, Any], *, source: str) -> PagingPolicy:
    names = _Names(tuple(configs), tuple(map(str, spec.oncall)), tuple(map(str, spec.managers)))
    defaults = _default_levels(names)
    severities = {}
    for severity in SEVERITIES:
        sev_spec: SeveritySpec = getattr(spec.severities, severity)
        severities[severity] = _severity_policy(severity, sev_spec, defaults[severity], names)
    paging_kinds = "/".join(kind.name for kind in configurable())
    warnings = tuple(f"{sev} pages nobody: list `oncall` users or configure {paging_kinds}"
                     for sev in ("P0", "P1") if not severities[sev].levels)
    return PagingPolicy(
        severities=severities,
        permissions={action: _permission(value) for action, value in spec.permission_specs().items()},
        paging=PagingConfig(providers=configs),
        source=source,
        remediation=RemediationPolicy(spec.remediation.approval == "always",
                                      frozenset(map(str, spec.remediation.approvers)),
                                      frozenset(spec.remediation.self_approve)),
        warnings=warnings,
    )


def _default_levels(names: _Names) -> dict[str, tuple[tuple[Target, ...], list[tuple[Target, ...]], int]]:
    """(first, then, repeat) per severity — the runbook defaults in the module docstring."""
    paging_provider = next((k.name for k in configurable() if k.name in names.providers), None)
    oncall = ((Target(paging_provider),) if paging_provider
              else tuple(Target(SLACK_PROVIDER, i) for i in names.oncall))
    managers = tuple(Target(SLACK_PROVIDER, i) for i in names.managers)
    return {
        "P0": (oncall + managers, [oncall + managers], 1),
        "P1": (oncall, [managers], 0),
        "P2": (oncall, [], 0),
        "P3": ((), [], 0),
    }


def _severity_policy(severity: str, spec: SeveritySpec, default: Any, names: _Names) -> SeverityPolicy:
    first, then, repeat = default
    path = f"severities.{severity}"
    if spec.first is not UNSET:
        first = _level_targets(spec.first, f"{path}.first", names)
    if spec.then is not None:
        then = [_level_targets(item, f"{path}.then[{i}]", names) for i, item in enumerate(spec.then)]
    if spec.repeat is not None:
        repeat = spec.repeat
    ack_timeout = float(spec.ack_timeout or DEFAULT_ACK_TIMEOUT_S[severity])
    urgency = spec.urgency or DEFAULT_URGENCY[severity]
    steps = [first, *then]
    steps += [steps[-1]] * repeat
    levels: list[Level] = []
    last_original: int | None = None
    for index, targets in enumerate(steps):
        if not targets:
            continue  # a level nobody is configured for (no managers listed, say) is skipped, not an error
        is_repeat = index > len(then)
        number = len(levels) + 1
        if not is_repeat:
            last_original = number
        levels.append(Level(number, targets, ack_timeout, urgency, last_original if is_repeat else None))
    return SeverityPolicy(severity, tuple(levels), ack_timeout,
                          float(spec.update_every or DEFAULT_UPDATE_EVERY_S[severity]), urgency)


def _level_targets(raw: Any, path: str, names: _Names) -> tuple[Target, ...]:
    items = raw if isinstance(raw, list) else [raw] if raw is not None else []
    targets: list[Target] = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]" if isinstance(raw, list) else path
        if isinstance(item, str):
            targets.extend(_named_targets(item.strip(), where, names))
        elif isinstance(item, dict) and "schedule" in item:
            targets.append(_schedule_target(item, where))
        elif isinstance(item, dict):
            targets.extend(_route_targets(item, where, names))
        else:
            raise ConfigError(f"{where}: expected a provider name, a Slack id, oncall, managers, "
                              "{schedule: <name>} or {provider: …, targets: […]}")
    return tuple(dict.fromkeys(targets))


def _named_targets(name: str, where: str, names: _Names) -> list[Target]:
    if _SLACK_ID.match(name):
        return [Target(SLACK_PROVIDER, name)]
    if name in ("oncall", "managers"):
        ids = names.oncall if name == "oncall" else names.managers
        if not ids:
            raise ConfigError(f"{where}: `{name}` is used but no {name} are listed (top-level `{name}:`)")
        return [Target(SLACK_PROVIDER, i) for i in ids]
    if name in names.providers:
        return [Target(name)]
    raise ConfigError(f"{where}: {_unknown(name, names)}")


def _schedule_target(item: dict[str, Any], where: str) -> Target:
    """`{schedule: payments-primary}`: whoever is on call for that schedule (ONCALL_FILE) when the level fires;
    `{schedule: by_service}`: for the schedule of the incident's service."""
    name = item["schedule"]
    if set(item) != {"schedule"} or not isinstance(name, str) or not _SCHEDULE_NAME.match(name):
        raise ConfigError(f"{where}: expected {{schedule: <name of a schedule in ONCALL_FILE>}}")
    return Target(SCHEDULE, name)


def _route_targets(item: dict[str, Any], where: str, names: _Names) -> list[Target]:
    unknown_keys = set(item) - {"provider", "targets"}
    if unknown_keys or not isinstance(item.get("provider"), str):
        raise ConfigError(f"{where}: expected {{provider: <name>, targets: [...]}}"
                          + (f"; unknown key {sorted(unknown_keys)[0]!r}" if unknown_keys else ""))
    provider, ids = item["provider"], item.get("targets") or []
    if provider != SLACK_PROVIDER and provider not in names.providers:
        raise ConfigError(f"{where}.provider: {_unknown(provider, names)}")
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise ConfigError(f"{where}.targets: expected a list of names or ids")
    refused = _kind(provider).targets_refused
    if refused and ids:
        raise ConfigError(f"{where}.targets: {refused}")
    if provider == SLACK_PROVIDER:
        for j, target in enumerate(ids):
            if not _SLACK_ID.match(target):
                raise ConfigError(f"{where}.targets[{j}]: expected a Slack user or group id like U0123ABCD")
        return [Target(SLACK_PROVIDER, i) for i in ids]
    return [Target(provider, i) for i in ids] or [Target(provider)]


def _unknown(name: str, names: _Names) -> str:
    known = [*names.providers, SLACK_PROVIDER, "oncall", "managers"]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    configured = ", ".join(names.providers) or "none"
    return (f"unknown provider or target {name!r} (configured providers: {configured}; Slack ids look like "
            f"U0123ABCD){hint}")


def _permission(allowed: Allowed) -> Permission:
    if allowed.value == "channel_members":
        return Permission(channel_members=True, responders=True)
    if allowed.value == "responders":
        return Permission(channel_members=False, responders=True)
    return Permission(channel_members=False, ids=frozenset(allowed.value))


def _logged(policy: PagingPolicy) -> PagingPolicy:
    for warning in policy.warnings:
        log.warning("paging policy (%s): %s", policy.source, warning)
    return policy
