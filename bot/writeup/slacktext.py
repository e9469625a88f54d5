"""Slack message text as plain text: what a reader saw, without Slack's markup, ready for any renderer to escape.

    "<@U1> see <https://x.io|the graph> &amp; <!here>"  →  "@alice see the graph (https://x.io) & @here"

Mentions become `@name` text (never a live mention again), links show their label and address, and Slack's
three entities are decoded. Every renderer (mrkdwn, Markdown) escapes the result for its own medium.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_TOKEN = re.compile(r"<([^<>]*)>")
_USER = re.compile(r"^@([UW][A-Z0-9]+)(?:\|(.*))?$")
_CHANNEL = re.compile(r"^#([CG][A-Z0-9]+)(?:\|(.*))?$")
_SPECIAL = re.compile(r"^!(channel|here|everyone)(?:\|.*)?$")
_SUBTEAM = re.compile(r"^!subteam\^([A-Z0-9]+)(?:\|(.*))?$")
_DATE = re.compile(r"^!date\^\d+\^[^|]*\|(.*)$")
MENTION_IDS = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")


def plain(text: str, names: Mapping[str, str] | None = None) -> str:
    """Slack's `text` field as the words a person read."""
    names = names or {}

    def token(match: re.Match[str]) -> str:
        inner = match.group(1)
        if found := _USER.match(inner):
            return "@" + (names.get(found.group(1)) or found.group(2) or found.group(1))
        if found := _CHANNEL.match(inner):
            return "#" + (found.group(2) or found.group(1))
        if found := _SPECIAL.match(inner):
            return "@" + found.group(1)
        if found := _SUBTEAM.match(inner):
            return "@" + (found.group(2) or found.group(1)).lstrip("@")
        if found := _DATE.match(inner):
            return found.group(1)
        url, _, label = inner.partition("|")
        return f"{label} ({url})" if label and label != url else url

    return _decode(_TOKEN.sub(token, text or ""))


def mentioned_users(text: str) -> list[str]:
    """User ids mentioned in Slack text, in order, without repeats."""
    return list(dict.fromkeys(MENTION_IDS.findall(text or "")))


def _decode(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
