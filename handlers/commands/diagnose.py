"""`/diagnose TARGET` — validate, answer at once, and leave the probing to the queue. Typed in an incident's
channel, the run belongs to that incident (bot/incidents/diagnoses.py)."""

from __future__ import annotations

import difflib
import re
from typing import Any

from bot.diagnosis.run import request_diagnosis
from bot.errors import UserError
from bot.runtime import Runtime
from bot.slack.mrkdwn import (
    FALLBACK_TEXT_MAX,
    and_more,
    context,
    escape,
    fit_lines,
    one_line,
    pack_lines,
    page_lines,
    section,
)
from checks.runner import plan
from handlers.errors import answers_errors

USAGE = "Usage: `/diagnose SERVICE` (for example `/diagnose api`), or `/diagnose list` to see the services."
LISTING_PAGE_TEXT = 9000  # characters of service lines per `/diagnose list` page: one message, well within limits
NAMES_IN_ERRORS = 20  # known services named in an "unknown service" answer; `/diagnose list` has them all
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
    names = sorted(known)
    listing = ", ".join(names[:NAMES_IN_ERRORS]) or "none are configured"
    if len(names) > NAMES_IN_ERRORS:
        listing += " " + and_more(len(names) - NAMES_IN_ERRORS, "`/diagnose list`")
    return f'Unknown service "{escape(target)}".{did_you_mean} Known services: {listing}.'


def listing_page(text: str) -> int | None:
    """The page `/diagnose list [page] N` asks for (1 for a bare `list`); None when the text is not a listing."""
    words = text.lower().split()
    if not words or words[0] != "list":
        return None
    number = words[2:] if words[1:2] == ["page"] else words[1:]
    if not number:
        return 1
    if len(number) != 1 or not number[0].isdigit() or int(number[0]) < 1:
        raise UserError("Usage: `/diagnose list`, or `/diagnose list page 2` for the next page.")
    return int(number[0])


def services_listing(rt: Runtime, page: int = 1) -> tuple[str, list[dict]]:
    """One page of the services and their checks: a fallback text and blocks, within Slack's limits."""
    lines = [service_line(name, spec) for name, spec in sorted(rt.services().services.items())]
    pages = page_lines(lines, LISTING_PAGE_TEXT)
    shown, after = _page(pages, page), sum(len(p) for p in pages[page:])
    title = "*Services I can diagnose:*" if len(pages) == 1 else f"*Services I can diagnose* (page {page} of {len(pages)}):"
    blocks = [section(title), *(section(chunk) for chunk in pack_lines(shown or ["none are configured"]))]
    if rt.services_problem:  # a bad edit of the file: say that this list is the last good one
        note = f":warning: {escape(rt.services_problem)}"
        title = f"{note}\n{title}"
        blocks.insert(0, context(note))
    if after:
        blocks.append(context(and_more(after, f"`/diagnose list page {page + 1}`")))
    return fit_lines([title, *shown], FALLBACK_TEXT_MAX), blocks


def _page(pages: list[list[str]], page: int) -> list[str]:
    if page > len(pages):
        raise UserError(f"There {'is' if len(pages) == 1 else 'are'} only {len(pages)} page{'' if len(pages) == 1 else 's'} "
                        f"of services: `/diagnose list page {len(pages)}` is the last.")
    return pages[page - 1]


def service_line(name: str, spec: Any) -> str:
    planned = plan(spec)
    checks = sorted({p.check for p in planned})
    about = f" — {escape(spec.description)}" if spec.description else ""
    return f"• `{name}`{about}: {len(planned)} checks ({', '.join(checks) or 'none configured'})"


def register(app: Any, rt: Runtime) -> None:
    @app.command("/diagnose")
    @answers_errors
    async def diagnose(ack: Any, command: dict, **_: Any) -> None:
        text = (command.get("text") or "").strip()
        if text.lower() == "help":
            await ack(text=USAGE, response_type="ephemeral")
            return
        page = listing_page(text)
        if page is not None:
            fallback, blocks = services_listing(rt, page)
            await ack(text=fallback, blocks=blocks, response_type="ephemeral")
            return
        service = parse_target(text, list(rt.services().services))
        # One round trip: claim and queue the run. Whose run it is (an incident's, typed in its channel) its
        # start job decides (bot/incidents/diagnoses.on_diagnosis_starting).
        started = await request_diagnosis(rt, service, command["channel_id"], command["user_id"])
        await ack(text=started_text(service, started), response_type="ephemeral")


def started_text(service: str, started: Any) -> str:
    if started.joined:
        return (f"A diagnosis of `{service}` is already running in this channel — see its thread "
                f"instead of probing twice.")
    if started.planned == 0:
        return f"`{service}` has no checks configured in the services file; nothing to run."
    return f"Queued {started.planned} checks for `{service}`. Results will appear in a thread here."
