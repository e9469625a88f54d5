"""Reading a Web API request the way Slack does: query string, form or JSON body, token from header or param.

slack_sdk sends all three shapes: `chat.postMessage`/`views.open`/`canvases.create` as JSON, most others as
form bodies, and GET-style methods (`conversations.history`, `users.info`...) and `files.getUploadURLExternal`
with their arguments in the query string. Form values that carry structures (`blocks`, `view`, `files`) arrive
as JSON strings and are decoded here, so handlers and recorded calls see Python objects either way.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qsl

from bot.slack.local.model import SlackError

JSON_FIELDS = {"blocks", "attachments", "metadata", "files", "view", "document_content", "changes",
               "unfurls", "user_auth_blocks", "outputs"}


def parse_request(query: str, body: bytes, content_type: str) -> dict:
    """Merge query string and body into one dict; raise SlackError("invalid_json") for a broken JSON body."""
    params = dict(parse_qsl(query, keep_blank_values=True))
    media = content_type.split(";")[0].strip().lower()
    if media == "application/json" and body.strip():
        params.update(_json_object(body))
    elif media == "application/x-www-form-urlencoded" and body:
        params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    return {k: _decode_json_field(k, v) for k, v in params.items()}


def bearer_token(headers: dict, params: dict) -> str | None:
    auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return params.get("token")


def _json_object(body: bytes) -> dict:
    try:
        value = json.loads(body)
    except ValueError:
        raise SlackError("invalid_json") from None
    if not isinstance(value, dict):
        raise SlackError("json_not_object")
    return value


def _decode_json_field(name: str, value: object) -> object:
    if name in JSON_FIELDS and isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value  # left as sent, so the handler reports it like Slack would (e.g. invalid_blocks_format)
    return value


class Params:
    """Typed access to one request's arguments, with Slack's error codes for the usual mistakes."""

    def __init__(self, data: dict) -> None:
        self.data = data

    def __contains__(self, name: str) -> bool:
        return name in self.data

    def get(self, name: str, default: object = None) -> object:
        return self.data.get(name, default)

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.data.get(name)
        return default if value is None or value == "" else str(value)

    def required(self, name: str, error: str = "invalid_arguments") -> str:
        value = self.text(name)
        if value is None:
            raise SlackError(error)
        return value

    def flag(self, name: str) -> bool:
        return str(self.data.get(name, "")).lower() in ("1", "true")

    def integer(self, name: str, default: int, *, low: int = 1, high: int = 1000) -> int:
        try:
            value = int(self.data.get(name) or default)
        except (TypeError, ValueError):
            raise SlackError("invalid_limit") from None
        return min(max(value, low), high)

    def ids(self, name: str) -> list[str]:
        value = self.data.get(name) or ""
        items = value if isinstance(value, list) else str(value).split(",")
        return [str(item).strip() for item in items if str(item).strip()]


def encode_cursor(position: str) -> str:
    """Opaque like Slack's ("bmV4dF90czox..." is base64 of "next_ts:1...")."""
    return base64.b64encode(f"next:{position}".encode()).decode()


def decode_cursor(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        kind, _, position = base64.b64decode(cursor.encode(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        raise SlackError("invalid_cursor") from None
    if kind != "next" or not position:
        raise SlackError("invalid_cursor")
    return position


def page_by_offset(items: list, params: Params, *, default_limit: int = 100) -> tuple[list, str]:
    """One page of a list method (users, channels, members) and the cursor of the next, "" at the end."""
    limit = params.integer("limit", default_limit)
    position = decode_cursor(params.text("cursor")) or "0"
    if not position.isdigit():
        raise SlackError("invalid_cursor")
    start = int(position)
    page = items[start:start + limit]
    more = start + limit < len(items)
    return page, encode_cursor(str(start + limit)) if more else ""
