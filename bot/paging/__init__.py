"""Paging: who gets woken up, through which provider, and how acks flow back.

    kinds.py       the table of provider kinds: name prefix, config model, key variable, default URL, builder
    providers.py   the narrow interface (Page → PageResult) every provider implements
    pagerduty.py   PagerDuty Events API v2          opsgenie.py   Opsgenie Alert API (legacy, ends 2027-04-05)
    slack_dm.py    Slack DMs with an Acknowledge button
    policy.py      the escalation policy file (levels, ack timeouts, who may escalate)
    pagerduty_events.py   PagerDuty v3 webhooks: signature check and parsing of ack/resolve events

Nothing here does anything at import time; `build_providers` makes the providers a policy names, importing
each provider's module only then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.paging.kinds import KINDS, SLACK_DM, ProviderDeps, ProviderKind, kind_of
from bot.paging.pagerduty_events import (
    SIGNATURE_HEADER,
    PagerDutyEvent,
    WebhookError,
    parse_pagerduty_event,
    verify_pagerduty_signature,
)
from bot.paging.policy import (
    Level,
    PagingConfig,
    PagingPolicy,
    Permission,
    Target,
    default_policy,
    load_policy,
    pages_for_level,
    parse_policy,
)
from bot.paging.providers import (
    Page,
    PageResult,
    Provider,
    make_dedup_key,
    parse_dedup_key,
)

if TYPE_CHECKING:
    from bot.slack.client import SlackClient

__all__ = [
    "SIGNATURE_HEADER",
    "WebhookError",
    "KINDS",
    "Level",
    "Page",
    "PageResult",
    "PagerDutyEvent",
    "PagingConfig",
    "PagingPolicy",
    "Permission",
    "Provider",
    "ProviderKind",
    "Target",
    "build_providers",
    "close_providers",
    "default_policy",
    "load_policy",
    "make_dedup_key",
    "pages_for_level",
    "parse_dedup_key",
    "parse_pagerduty_event",
    "parse_policy",
    "verify_pagerduty_signature",
]


def build_providers(config: PagingConfig, slack: SlackClient, redis: Any, *, key_prefix: str) -> dict[str, Provider]:
    """Every provider the policy can name: the configured PagerDuty/Opsgenie ones, and always `slack` (which
    keeps who it DM'd in Redis under `key_prefix`)."""
    deps = ProviderDeps(slack, redis, key_prefix)
    providers: dict[str, Provider] = {SLACK_DM.name: SLACK_DM.make(SLACK_DM.name, None, deps)}
    for name, provider_config in config.providers.items():
        kind = kind_of(name)
        if kind is None or kind.config is None or not isinstance(provider_config, kind.config):
            raise TypeError(f"no provider named {name!r} takes a {type(provider_config).__name__}")
        providers[name] = kind.make(name, provider_config, deps)
    return providers


async def close_providers(providers: dict[str, Provider]) -> None:
    """Close the HTTP clients the providers opened (call on shutdown)."""
    for provider in providers.values():
        aclose = getattr(provider, "aclose", None)
        if aclose is not None:
            await aclose()
