"""Slack's limits on what a message may carry: one table, read by the bot's renderers (bot.slack.mrkdwn) and by
the local Slack emulator that enforces them in tests.

Sources: Slack's Block Kit reference (per-block limits, answered as `invalid_blocks`), the 2018 change
"Truncating really long messages" (message `text` over 40,000 characters is cut, with a `message_truncated`
warning, by every posting method; chat.update answers `msg_too_long`), and observed behaviour for the total text
of a message's blocks (`msg_blocks_too_long` from about 13,000 characters).
"""

from __future__ import annotations

import msgspec


class SlackLimits(msgspec.Struct, frozen=True):
    blocks: int = 50  # per message
    view_blocks: int = 100  # per modal or App Home view
    block_id: int = 255
    section_text: int = 3000
    section_fields: int = 10
    field_text: int = 2000
    context_elements: int = 10
    context_text: int = 2000
    header_text: int = 150
    actions_elements: int = 25
    button_text: int = 75
    button_value: int = 2000
    button_url: int = 3000
    action_id: int = 255
    select_options: int = 100
    option_text: int = 75
    option_value: int = 150
    message_text: int = 40_000
    # Not documented: Slack answers msg_blocks_too_long somewhere around 13,000 characters of block text in all.
    blocks_total_text: int = 13_000


SLACK = SlackLimits()


def block_text_length(node: object) -> int:
    """Characters of text anywhere in blocks: what Slack's overall size limit (msg_blocks_too_long) counts."""
    if isinstance(node, dict):
        return sum(len(v) if k == "text" and isinstance(v, str) else block_text_length(v) for k, v in node.items())
    if isinstance(node, list):
        return sum(block_text_length(item) for item in node)
    return 0
