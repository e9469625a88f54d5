"""`Alerts`: what every alert source works with — its settings, the incidents feature, the rules, the SNS fetcher
and the memory of firings. Installed on the runtime by bot/alerts/install.py; found again with
`rt.feature(Alerts)`."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.alerts.config import AlertSourceSettings
from bot.alerts.episodes import Episodes
from bot.alerts.rules import Mapping
from bot.incidents.service import Incidents
from bot.runtime import Runtime

if TYPE_CHECKING:  # the fetcher is made, and its module imported, with the first SNS message
    from bot.alerts.sns_fetch import SnsFetcher


@dataclass
class Alerts:
    rt: Runtime
    incidents: Incidents
    settings: AlertSourceSettings
    episodes: Episodes = field(init=False)

    def __post_init__(self) -> None:
        self.episodes = Episodes(self.rt.redis, self.rt.key("alerts", "firings"))

    @functools.cached_property
    def sns(self) -> SnsFetcher:
        """The SNS fetcher (certificates and subscription confirmations), made with the first SNS message."""
        from bot.alerts.sns_fetch import SnsFetcher

        return SnsFetcher(self.settings)

    @property
    def incident_settings(self) -> Any:
        return self.incidents.settings

    @property
    def mapping(self) -> Mapping:
        """The rules with the services file as it is now (it is re-read when it changes)."""
        return Mapping.build(self.settings, self.incidents.settings, self.rt.services())

    @contextlib.asynccontextmanager
    async def alert_lock(self, name: str) -> AsyncIterator[None]:
        async with self.incidents.store.lock(name):
            yield
