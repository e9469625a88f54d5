"""`/diagnose TARGET` — validate, answer at once, and leave the probing to the queue."""

from __future__ import annotations

import difflib
import re
from typing import Any

from bot.diagnosis.run import request_diagnosis
from bot.errors import UserError
from bot.runtime import Runtime
from bot.slack.mrkdwn import escape, one_line
from checks.runner import plan
from handlers.errors import answers_errors

USAGE = "Usage: `/diagnose SERVICE` (for example `/diagnose api`), or `/diagnose list` to see the services."
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def parse_target(text: str, known: list[str]) -> str:
    """The service name from the command text, or a UserError that says what to type instead."""
    words = (text or "").split()
    if not words:
        raise UserError(USAGE)
    if len(words) > 1:
        raise UserError(f"`/diagnose` takes one service name. {USAGE}")
    target = words[0].lower()
    if target.startswith("<") or "://" in target or not _NAME.match(target):
        shown = escape(one_line(words[0], 40))
        raise UserError(f"`{shown}` is not a service name. Service names look like `api` or `web-edge`; "
                        f"`/diagnose list` shows them.")
    if target not in known:
        raise UserError(unknown_service_text(target, known))
    return target


def unknown_service_text(target: str, known: list[str]) -> str:
    guess = difflib.get_close_matches(target, known, n=1, cutoff=0.6)
    did_you_mean = f' Did you mean "{guess[0]}"?' if guess else ""
    listing = ", ".join(sorted(known)) or "none are configured"
    return f'Unknown service "{escape(target)}".{did_you_mean} Known services: {listing}.'


def services_listing(rt: Runtime) -> str:
    lines = ["*Services I can diagnose:*"]
    for name, spec in sorted(rt.services().services.items()):
        checks = sorted({p.check for p in plan(spec)})
        about = f" — {escape(spec.description)}" if spec.description else ""
        lines.append(f"• `{name}`{about}: {len(plan(spec))} checks ({', '.join(checks) or 'none configured'})")
    return "\n".join(lines)


def register(app: Any, rt: Runtime) -> None:
    @app.command("/diagnose")
    @answers_errors
    async def diagnose(ack: Any, command: dict, **_: Any) -> None:
        text = (command.get("text") or "").strip()
        if text.lower() in ("list", "help"):
            await ack(text=services_listing(rt) if text.lower() == "list" else USAGE, response_type="ephemeral")
            return
        service = parse_target(text, list(rt.services().services))
        started = await request_diagnosis(rt, service, command["channel_id"], command["user_id"])
        await ack(text=started_text(service, started), response_type="ephemeral")


def started_text(service: str, started: Any) -> str:
    if started.joined:
        return (f"A diagnosis of `{service}` is already running in this channel — see its thread "
                f"instead of probing twice.")
    if started.planned == 0:
        return f"`{service}` has no checks configured in the services file; nothing to run."
    return f"Queued {started.planned} checks for `{service}`. Results will appear in a thread here."
