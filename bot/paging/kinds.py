"""The kinds of paging provider, in one table: everything the policy and the builder need to know per kind.

A configured provider's name says its kind: `pagerduty`, `pagerduty-db`, `opsgenie-emea` (several PagerDuty
services = several routing keys). `slack` (Slack DMs) is built in and takes no settings. Adding a kind means
adding one row to `KINDS`; the policy file's grammar, its error messages, the default policy and
`build_providers` all read from here. A kind's module (its provider and its config model) is
imported when a policy configures that kind or a provider of it is built, so a process that only answers Slack
without paging through PagerDuty or Opsgenie never loads them.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING, Any

from msgspec import Struct
from msgspec.structs import fields

if TYPE_CHECKING:  # a provider's module is imported when a provider of its kind is built
    from bot.paging.providers import Provider
    from bot.slack.client import SlackClient


class ProviderDeps(Struct, frozen=True):
    """What a provider may need besides its own config (only Slack DMs use these today)."""

    slack: SlackClient
    redis: Any
    key_prefix: str  # Redis key prefix under which the Slack DM provider remembers whom it DM'd


class ProviderKind(Struct, frozen=True):
    name: str  # the provider name, and the prefix of `<name>-<anything>`
    make: Callable[[str, Any, ProviderDeps], Provider]  # (provider name, its config, deps) → the provider
    config_model: str = ""  # "module:Class" of the resolved settings; "" = built in, no settings
    secret_field: str = ""  # the config field holding the key; the file names its variable in `<field>_env`
    secret_env: str = ""  # the default environment variable for the key (also: set → on by default)
    url_field: str = ""
    targets_refused: str = ""  # why `targets:` make no sense for this kind; "" = targets are allowed

    @property
    def config(self) -> type[Struct] | None:
        """The settings struct, its module imported the first time a policy configures this kind."""
        if not self.config_model:
            return None
        module, _, name = self.config_model.partition(":")
        return getattr(import_module(module), name)

    @property
    def default_url(self) -> str:
        """Where the config struct sends by default (its module says, once)."""
        assert self.config is not None
        return str(next(f.default for f in fields(self.config) if f.name == self.url_field))

    @property
    def env_field(self) -> str:
        return f"{self.secret_field}_env"

    def owns(self, provider_name: str) -> bool:
        return provider_name == self.name or provider_name.startswith(f"{self.name}-")


def _pagerduty(name: str, config: Any, deps: ProviderDeps) -> Provider:
    from bot.paging.pagerduty import PagerDutyProvider

    return PagerDutyProvider(config, name=name)


def _opsgenie(name: str, config: Any, deps: ProviderDeps) -> Provider:
    from bot.paging.opsgenie import OpsgenieProvider

    return OpsgenieProvider(config, name=name)


def _slack_dm(name: str, config: Any, deps: ProviderDeps) -> Provider:
    from bot.paging.slack_dm import SlackDmProvider

    return SlackDmProvider(deps.slack, deps.redis, key_prefix=deps.key_prefix, name=name)


PAGERDUTY = ProviderKind(
    "pagerduty", _pagerduty, "bot.paging.pagerduty:PagerDutyConfig", secret_field="routing_key",
    secret_env="PAGERDUTY_ROUTING_KEY", url_field="events_url",
    targets_refused="PagerDuty pages go to the service behind the routing key; name another pagerduty-<name> "
                    "provider for another service instead of targets")
OPSGENIE = ProviderKind(
    "opsgenie", _opsgenie, "bot.paging.opsgenie:OpsgenieConfig", secret_field="api_key", secret_env="OPSGENIE_API_KEY",
    url_field="api_url")
SLACK_DM = ProviderKind("slack", _slack_dm)

# Order matters: the default policy's on-call is the first configured of these (pagerduty → opsgenie → Slack DMs).
KINDS: tuple[ProviderKind, ...] = (PAGERDUTY, OPSGENIE, SLACK_DM)


def configurable() -> tuple[ProviderKind, ...]:
    """The kinds a policy file configures under `providers:` (all but the built-in Slack DMs)."""
    return tuple(kind for kind in KINDS if kind.config_model)


def kind_of(provider_name: str) -> ProviderKind | None:
    """The kind a provider's name says, or None for a name no kind owns."""
    if provider_name == SLACK_DM.name:
        return SLACK_DM
    return next((kind for kind in configurable() if kind.owns(provider_name)), None)
