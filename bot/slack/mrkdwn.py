"""Making user text inert in Slack: escaping and Block Kit size limits.

Escaping `&`, `<` and `>` (in that order) neutralises `<!channel>`, `<!here>`, `<@U…>` and `<!subteam^…>`
smuggled into a title, note or reason; `*`, `_`, `~` and backticks are wrapped so they cannot open formatting.
"""

from __future__ import annotations

SECTION_TEXT_MAX = 3000
HEADER_TEXT_MAX = 150
FALLBACK_TEXT_MAX = 4000  # notifications show little; Slack's hard cap is 40,000
MAX_BLOCKS = 50


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
