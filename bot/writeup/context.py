"""`Writeup`: what the write-up features share in one process, built by `install` and provided on the runtime (`rt.feature(Writeup)`) —
settings, the timeline, the capture rules, the optional summariser — plus the bot's own identity and a
cached user-name lookup (users.info is Tier 4, and a 50,000-entry postmortem names the same people often).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import msgspec

from bot.incidents.timeline import Timeline
from bot.queue.replies import as_text
from bot.runtime import Runtime
from bot.slack.client import SlackError
from bot.writeup.config import WriteupSettings

log = logging.getLogger("bot.writeup")

NAME_TTL_S = 86_400


class CaptureRules(msgspec.Struct, frozen=True):
    """How a message becomes a key event or an action item."""

    key_reaction: str = "pushpin"
    action_reaction: str = "ballot_box_with_check"
    done_reaction: str = "white_check_mark"
    action_prefixes: tuple[str, ...] = ("action:", "todo:")

    @classmethod
    def from_settings(cls, settings: WriteupSettings) -> CaptureRules:
        return cls(key_reaction=settings.key_event_reaction, action_reaction=settings.action_item_reaction,
                   done_reaction=settings.action_done_reaction)


class Writeup(msgspec.Struct):
    rt: Runtime
    settings: WriteupSettings
    timeline: Timeline
    rules: CaptureRules
    summarizer: Any = None  # bot.writeup.summaries.Summarizer when SUMMARIZER_URL is set
    identity: tuple[str, str] | None = None  # (bot user id, bot id), from auth.test


def writeup_of(rt: Runtime) -> Writeup:
    found = rt.feature(Writeup)
    if found is None:
        raise RuntimeError("the write-up features are not installed in this runtime (bot.writeup.install.install)")
    return found


async def bot_identity(w: Writeup) -> tuple[str, str]:
    """The bot's user id and bot id: its own messages are not part of the record people wrote."""
    if w.identity is None:
        try:
            answer = await w.rt.slack.call("auth.test")
            w.identity = (str(answer.get("user_id") or ""), str(answer.get("bot_id") or ""))
        except SlackError as exc:
            log.warning("auth.test failed (%s): cannot tell the bot's own messages apart", exc.error)
            return ("", "")
    return w.identity


async def user_names(rt: Runtime, ids: Iterable[str]) -> dict[str, str]:
    """Slack user id → the name people see (display name, else real name, else handle); the id when unknown."""
    wanted = sorted({i for i in ids if i and i[:1] in ("U", "W")})
    if not wanted:
        return {}
    async with rt.redis.pipeline(transaction=False) as pipe:  # not MGET: the names live in many hash slots
        for user in wanted:
            pipe.get(rt.key("wu", "name", user))
        cached = await pipe.execute()
    names: dict[str, str] = {}
    for user, raw in zip(wanted, cached, strict=True):
        if raw is not None:
            names[user] = as_text(raw)
            continue
        names[user] = await _lookup_name(rt, user)
    return names


async def _lookup_name(rt: Runtime, user: str) -> str:
    try:
        answer = await rt.slack.call("users.info", user=user)
    except SlackError as exc:
        log.info("users.info %s failed: %s", user, exc.error)
        return user
    info = answer.get("user") or {}
    profile = info.get("profile") or {}
    name = profile.get("display_name") or profile.get("real_name") or info.get("real_name") or info.get("name")
    name = " ".join(str(name or user).split())[:80]
    await rt.redis.set(rt.key("wu", "name", user), name, ex=NAME_TTL_S)
    return name
