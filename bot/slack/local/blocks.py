"""Block Kit limits Slack enforces on messages, reported the way Slack reports them (json-pointer errors)."""

from __future__ import annotations

from collections.abc import Iterator

from bot.slack.local.model import SlackError

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_SECTION_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTIONS_ELEMENTS = 25
MAX_BLOCK_ID = 255
# Slack rejects messages whose blocks carry ~12-13k characters of text in total with `msg_blocks_too_long`,
# well before 50 full sections. We fail at the upper end so we never reject what Slack would accept.
DEFAULT_MAX_BLOCK_TEXT = 13_000
# A typo in a block type is a real Slack error; a type missing here would be a false one, so the list is generous.
KNOWN_TYPES = {"section", "header", "divider", "context", "actions", "image", "input", "rich_text", "file",
               "video", "markdown", "table", "call", "context_actions", "plan", "task_card"}


def check_blocks(blocks: object, *, max_total_text: int | None = DEFAULT_MAX_BLOCK_TEXT) -> None:
    """Raise SlackError like Slack would for `blocks` on a message; return quietly when they would pass."""
    if not isinstance(blocks, list):
        raise SlackError("invalid_blocks_format")
    problems = list(_problems(blocks))
    if problems:
        messages = [f"{why} [json-pointer:{pointer}]" for why, pointer in problems]
        raise SlackError("invalid_blocks", errors=messages,
                         response_metadata={"messages": [f"[ERROR] {m}" for m in messages]})
    if max_total_text is not None and total_text(blocks) > max_total_text:
        raise SlackError("msg_blocks_too_long")


def total_text(node: object) -> int:
    """Characters of text anywhere in the blocks: what Slack's overall size limit counts."""
    if isinstance(node, dict):
        return sum(len(v) if k == "text" and isinstance(v, str) else total_text(v) for k, v in node.items())
    if isinstance(node, list):
        return sum(total_text(item) for item in node)
    return 0


def _problems(blocks: list) -> Iterator[tuple[str, str]]:
    if len(blocks) > MAX_BLOCKS:
        yield f"must provide no more than {MAX_BLOCKS} items", "/blocks"
    seen_ids: set[str] = set()
    for i, block in enumerate(blocks):
        pointer = f"/blocks/{i}"
        if not isinstance(block, dict) or not block.get("type"):
            yield "missing required field: type", pointer
            continue
        if block["type"] not in KNOWN_TYPES:
            yield f"unsupported type: {block['type']}", f"{pointer}/type"
        block_id = block.get("block_id")
        if block_id is not None:
            if len(str(block_id)) > MAX_BLOCK_ID:
                yield f"must be less than {MAX_BLOCK_ID + 1} characters", f"{pointer}/block_id"
            if block_id in seen_ids:
                yield "duplicate block_id", f"{pointer}/block_id"
            seen_ids.add(block_id)
        yield from _CHECKS.get(block["type"], _no_checks)(block, pointer)


def _too_long(text_obj: object, limit: int, pointer: str) -> Iterator[tuple[str, str]]:
    text = text_obj.get("text") if isinstance(text_obj, dict) else None
    if not isinstance(text, str):
        yield "must provide a text object with a `text` string", pointer
    elif len(text) > limit:
        yield f"must be less than {limit + 1} characters", f"{pointer}/text"


def _section(block: dict, pointer: str) -> Iterator[tuple[str, str]]:
    text, fields = block.get("text"), block.get("fields")
    if text is None and not fields:
        yield "must provide either `text` or `fields`", pointer
    if text is not None:
        yield from _too_long(text, MAX_SECTION_TEXT, f"{pointer}/text")
    if fields:
        if len(fields) > MAX_SECTION_FIELDS:
            yield f"must provide no more than {MAX_SECTION_FIELDS} items", f"{pointer}/fields"
        for j, field in enumerate(fields):
            yield from _too_long(field, MAX_FIELD_TEXT, f"{pointer}/fields/{j}")


def _header(block: dict, pointer: str) -> Iterator[tuple[str, str]]:
    text = block.get("text")
    if isinstance(text, dict) and text.get("type") != "plain_text":
        yield "must be a plain_text text object", f"{pointer}/text"
    yield from _too_long(text, MAX_HEADER_TEXT, f"{pointer}/text")


def _max_elements(limit: int):
    def check(block: dict, pointer: str) -> Iterator[tuple[str, str]]:
        if len(block.get("elements") or []) > limit:
            yield f"must provide no more than {limit} items", f"{pointer}/elements"
    return check


def _no_checks(block: dict, pointer: str) -> Iterator[tuple[str, str]]:
    return iter(())


_CHECKS = {
    "section": _section,
    "header": _header,
    "context": _max_elements(MAX_CONTEXT_ELEMENTS),
    "actions": _max_elements(MAX_ACTIONS_ELEMENTS),
}
