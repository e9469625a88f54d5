"""Block Kit limits Slack enforces, reported the way Slack reports them (json-pointer errors).

The numbers live in one table, bot.slack.limits.SLACK; this module says where in a block each one applies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from bot.slack.limits import SLACK, block_text_length
from bot.slack.local.model import SlackError

Problems = Iterator[tuple[str, str]]  # (why, json pointer), as Slack words them

DEFAULT_MAX_BLOCK_TEXT = SLACK.blocks_total_text
# A typo in a block type is a real Slack error; a type missing here would be a false one, so the list is generous.
KNOWN_TYPES = {"section", "header", "divider", "context", "actions", "image", "input", "rich_text", "file",
               "video", "markdown", "table", "call", "context_actions", "plan", "task_card"}
_OPTION_ELEMENTS = {"static_select", "multi_static_select", "overflow", "radio_buttons", "checkboxes"}


def check_blocks(blocks: object, *, max_total_text: int | None = DEFAULT_MAX_BLOCK_TEXT,
                 max_blocks: int = SLACK.blocks) -> None:
    """Raise SlackError like Slack would for `blocks` on a message; return quietly when they would pass."""
    if not isinstance(blocks, list):
        raise SlackError("invalid_blocks_format")
    problems = list(_problems(blocks, max_blocks))
    if problems:
        messages = [f"{why} [json-pointer:{pointer}]" for why, pointer in problems]
        raise SlackError("invalid_blocks", errors=messages,
                         response_metadata={"messages": [f"[ERROR] {m}" for m in messages]})
    if max_total_text is not None and block_text_length(blocks) > max_total_text:
        raise SlackError("msg_blocks_too_long")


def _problems(blocks: list, max_blocks: int) -> Problems:
    yield from _at_most(blocks, max_blocks, "/blocks")
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
            yield from _string_at_most(block_id, SLACK.block_id, f"{pointer}/block_id")
            if block_id in seen_ids:
                yield "duplicate block_id", f"{pointer}/block_id"
            seen_ids.add(block_id)
        yield from _BLOCK_CHECKS.get(block["type"], _no_checks)(block, pointer)


def _at_most(items: object, limit: int, pointer: str) -> Problems:
    if isinstance(items, list) and len(items) > limit:
        yield f"must provide no more than {limit} items", pointer


def _string_at_most(value: object, limit: int, pointer: str) -> Problems:
    if isinstance(value, str) and len(value) > limit:
        yield f"must be less than {limit + 1} characters", pointer


def _text_object(text_obj: object, limit: int, pointer: str, *, plain: bool = False) -> Problems:
    text = text_obj.get("text") if isinstance(text_obj, dict) else None
    if not isinstance(text, str):
        yield "must provide a text object with a `text` string", pointer
        return
    if plain and text_obj.get("type") != "plain_text":
        yield "must be a plain_text text object", pointer
    yield from _string_at_most(text, limit, f"{pointer}/text")


def _section(block: dict, pointer: str) -> Problems:
    text, fields = block.get("text"), block.get("fields")
    if text is None and not fields:
        yield "must provide either `text` or `fields`", pointer
    if text is not None:
        yield from _text_object(text, SLACK.section_text, f"{pointer}/text")
    if fields:
        yield from _at_most(fields, SLACK.section_fields, f"{pointer}/fields")
        for j, field in enumerate(fields):
            yield from _text_object(field, SLACK.field_text, f"{pointer}/fields/{j}")
    if isinstance(block.get("accessory"), dict):
        yield from _element(block["accessory"], f"{pointer}/accessory")


def _header(block: dict, pointer: str) -> Problems:
    yield from _text_object(block.get("text"), SLACK.header_text, f"{pointer}/text", plain=True)


def _context(block: dict, pointer: str) -> Problems:
    elements = block.get("elements") or []
    yield from _at_most(elements, SLACK.context_elements, f"{pointer}/elements")
    for j, element in enumerate(elements):
        if isinstance(element, dict) and element.get("type") in ("mrkdwn", "plain_text"):
            yield from _string_at_most(element.get("text"), SLACK.context_text, f"{pointer}/elements/{j}/text")


def _actions(block: dict, pointer: str) -> Problems:
    elements = block.get("elements") or []
    yield from _at_most(elements, SLACK.actions_elements, f"{pointer}/elements")
    for j, element in enumerate(elements):
        yield from _element(element, f"{pointer}/elements/{j}")


def _input(block: dict, pointer: str) -> Problems:
    if isinstance(block.get("element"), dict):
        yield from _element(block["element"], f"{pointer}/element")


def _element(element: object, pointer: str) -> Problems:
    """Interactive elements: a button's label, value and url; a select's options."""
    if not isinstance(element, dict):
        return
    yield from _string_at_most(element.get("action_id"), SLACK.action_id, f"{pointer}/action_id")
    if element.get("type") == "button":
        yield from _text_object(element.get("text"), SLACK.button_text, f"{pointer}/text", plain=True)
        yield from _string_at_most(element.get("value"), SLACK.button_value, f"{pointer}/value")
        yield from _string_at_most(element.get("url"), SLACK.button_url, f"{pointer}/url")
    elif element.get("type") in _OPTION_ELEMENTS:
        yield from _options(element.get("options") or [], f"{pointer}/options")
        yield from _at_most(element.get("option_groups"), SLACK.select_options, f"{pointer}/option_groups")


def _options(options: list, pointer: str) -> Problems:
    yield from _at_most(options, SLACK.select_options, pointer)
    for k, option in enumerate(options if isinstance(options, list) else []):
        if isinstance(option, dict):
            yield from _text_object(option.get("text"), SLACK.option_text, f"{pointer}/{k}/text")
            yield from _string_at_most(option.get("value"), SLACK.option_value, f"{pointer}/{k}/value")


def _no_checks(block: dict, pointer: str) -> Problems:
    return iter(())


_BLOCK_CHECKS: dict[str, Callable[[dict, str], Problems]] = {
    "section": _section,
    "header": _header,
    "context": _context,
    "actions": _actions,
    "input": _input,
}
