"""Making user text inert in Slack, and keeping every message inside Block Kit's limits.

Escaping `&`, `<` and `>` (in that order) neutralises `<!channel>`, `<!here>`, `<@U…>` and `<!subteam^…>`
smuggled into a title, note or reason; `*`, `_`, `~` and backticks are wrapped so they cannot open formatting.

Renderers build blocks with `section`, `context`, `header`, `button` and `fields` (each clamps its text to
Slack's limit) and finish a message with `fit_blocks`; long lists go through `fit_lines` / `pack_lines`. What
does not fit is said, never dropped silently: "…and N more".
"""

from __future__ import annotations

from typing import Any

from bot.slack.limits import SLACK, block_text_length

SECTION_TEXT_MAX = SLACK.section_text
FIELD_TEXT_MAX = SLACK.field_text
CONTEXT_TEXT_MAX = SLACK.context_text
HEADER_TEXT_MAX = SLACK.header_text
BUTTON_TEXT_MAX = SLACK.button_text
FALLBACK_TEXT_MAX = 4000  # notifications show little; Slack's hard cap is 40,000
MESSAGE_TEXT_MAX = SLACK.message_text
MAX_BLOCKS = SLACK.blocks
# Our own ceiling on the text of one message's blocks: Slack's undocumented msg_blocks_too_long starts near 13,000.
BLOCK_TEXT_BUDGET = 12_000


def escape(text: str) -> str:
    """Escape control characters for mrkdwn; the result renders as the literal text the user typed."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def inert(text: str) -> str:
    """Escape and also neutralise emphasis/code markers so user text cannot restyle the message around it."""
    escaped = escape(text)
    # A zero-width space after each marker stops Slack pairing it with another; the text still reads the same.
    for marker in ("*", "_", "~", "`"):
        escaped = escaped.replace(marker, marker + "\u200b")
    return escaped


def truncate(text: str, limit: int) -> str:
    """Cut to `limit` characters with an ellipsis, never splitting an `&amp;`-style entity."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def one_line(text: str, limit: int = 200) -> str:
    return truncate(" ".join(text.split()), limit)


def and_more(count: int, hint: str = "") -> str:
    """The visible line that stands for what was left out: "…and 3 more" or "…and 3 more: `/diagnose list page 2`"."""
    return f"…and {count} more" + (f": {hint}" if hint else "")


def fit_lines(lines: list[str], limit: int = SECTION_TEXT_MAX, *, hint: str = "", max_lines: int | None = None,
              unlisted: int = 0) -> str:
    """Join whole lines (at most `max_lines`) while they fit in `limit`, ending with "…and N more" when some had
    to stay out. `unlisted`: lines of a longer list that were never read (a page of it), counted in N too."""
    if not unlisted and len("\n".join(lines)) <= limit and (max_lines is None or len(lines) <= max_lines):
        return "\n".join(lines)
    kept: list[str] = []
    used = 0
    for i, line in enumerate(lines[:max_lines]):
        # keeping this line leaves len(lines) - i - 1 to count in the closing line, which must fit too
        if used + len(line) + 1 + len(and_more(len(lines) - i - 1 + unlisted, hint)) > limit:
            break
        kept.append(line)
        used += len(line) + 1
    left = len(lines) - len(kept) + unlisted
    return truncate("\n".join([*kept, *([and_more(left, hint)] if left else [])]), limit)


def pack_lines(lines: list[str], limit: int = SECTION_TEXT_MAX) -> list[str]:
    """Lines grouped into as few texts of at most `limit` characters as they fit in (a long line is cut)."""
    chunks: list[list[str]] = [[]]
    for line in (truncate(line, limit) for line in lines):
        if chunks[-1] and len("\n".join([*chunks[-1], line])) > limit:
            chunks.append([])
        chunks[-1].append(line)
    return ["\n".join(chunk) for chunk in chunks if chunk]


def page_lines(lines: list[str], budget: int) -> list[list[str]]:
    """Lines split into pages of at most `budget` characters each (never an empty page; a long line is cut)."""
    pages: list[list[str]] = [[]]
    used = 0
    for line in (truncate(line, budget) for line in lines):
        if pages[-1] and used + len(line) + 1 > budget:
            pages.append([])
            used = 0
        pages[-1].append(line)
        used += len(line) + 1
    return pages


def fit_blocks(blocks: list[dict], *, hint: str = "", budget: int = BLOCK_TEXT_BUDGET) -> list[dict]:
    """The leading blocks that fit in one message (count and total text); a context block says how many did not."""
    if len(blocks) <= MAX_BLOCKS and block_text_length(blocks) <= budget:
        return blocks
    room = budget - len(and_more(len(blocks), hint))
    kept: list[dict] = []
    for block in blocks[: MAX_BLOCKS - 1]:
        room -= block_text_length(block)
        if room < 0:
            break
        kept.append(block)
    return [*kept, context(and_more(len(blocks) - len(kept), hint))]


def section(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, SECTION_TEXT_MAX)}, **extra}


def context(*texts: str) -> dict[str, Any]:
    elements = [{"type": "mrkdwn", "text": truncate(t, CONTEXT_TEXT_MAX)} for t in texts[: SLACK.context_elements]]
    return {"type": "context", "elements": elements}


def header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": plain(text, HEADER_TEXT_MAX)}


def plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": truncate(text, limit), "emoji": True}


def field(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": truncate(text, FIELD_TEXT_MAX)}


def button(label: str, action_id: str, value: str = "", **extra: Any) -> dict[str, Any]:
    """A button whose label fits; a value too long to carry is a bug in the caller, so it is not cut."""
    element = {"type": "button", "action_id": action_id, "text": plain(label, BUTTON_TEXT_MAX), **extra}
    return {**element, "value": value} if value else element


def fallback_text(text: str, limit: int = FALLBACK_TEXT_MAX) -> str:
    """A message's `text`: the notification and screen-reader version, kept well under Slack's 40,000 cut."""
    return truncate(text, min(limit, MESSAGE_TEXT_MAX))


def slack_date(at: float, fmt: str = "{date_short_pretty} {time}") -> str:
    """A Slack date token: shown in each reader's own time zone, with a UTC fallback."""
    from datetime import UTC, datetime

    fallback = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(at)}^{fmt}|{fallback}>"


def mention(slack_id: str | None) -> str:
    """A Slack user (U…/W…) or user group (S…) id as a mention; None as "nobody"."""
    if not slack_id:
        return "nobody"
    return f"<!subteam^{slack_id}>" if slack_id.startswith("S") else f"<@{slack_id}>"
