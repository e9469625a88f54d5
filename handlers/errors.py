"""How failures reach people: a known problem is one plain sentence; anything else is a short reference id.

A `UserError` (bot/errors.py) carries the sentence the user reads (what was wrong and what to type instead). An unexpected
exception is logged with a reference id, and the user sees only that id — never a stack trace in Slack.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from bot.errors import UserError

log = logging.getLogger("handlers")


def reference_id() -> str:
    return uuid.uuid4().hex[:8]


def internal_error_text(ref: str) -> str:
    return f"Sorry, that failed on our side. Nothing was changed. Reference `{ref}` — quote it to whoever runs the bot."


def answers_errors(listener: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wrap a command/action listener: UserError → its sentence; other errors → a reference id. Acks exactly once."""

    @functools.wraps(listener)
    async def wrapper(ack: Callable[..., Awaitable[Any]], **kwargs: Any) -> None:
        acked = False

        async def ack_once(*args: Any, **kw: Any) -> None:
            nonlocal acked
            if not acked:
                acked = True
                await ack(*args, **kw)

        try:
            await listener(ack=ack_once, **kwargs)
        except UserError as exc:
            await _tell(ack_once, acked, kwargs, str(exc))
        except Exception:
            ref = reference_id()
            log.exception("listener %s failed (ref %s)", listener.__name__, ref)
            await _tell(ack_once, acked, kwargs, internal_error_text(ref))
        finally:
            await ack_once()

    return wrapper


async def _tell(ack_once: Callable[..., Awaitable[Any]], acked: bool, kwargs: dict[str, Any], text: str) -> None:
    if not acked:
        await ack_once(text=text, response_type="ephemeral")
        return
    respond = kwargs.get("respond")
    if respond is not None:  # after the ack, the response_url still reaches the user, ephemerally
        try:
            await respond(text=text, response_type="ephemeral", replace_original=False)
        except Exception:
            log.warning("could not deliver an error message to the user", exc_info=True)
