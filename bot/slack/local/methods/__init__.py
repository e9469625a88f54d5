"""The Web API methods the emulator knows. Each is `handler(workspace, params) -> dict` (without "ok"),
raising SlackError to fail the way Slack fails. Anything not listed answers `unknown_method`."""

from __future__ import annotations

from collections.abc import Callable

from bot.slack.local.methods import chat, content, conversations, items, people
from bot.slack.local.params import Params
from bot.slack.local.workspace import Workspace

Handler = Callable[[Workspace, Params], dict]


def all_methods() -> dict[str, Handler]:
    return {**chat.METHODS, **conversations.METHODS, **people.METHODS, **items.METHODS, **content.METHODS}
