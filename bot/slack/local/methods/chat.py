"""chat.* methods and response_url posts: the messages the bot writes."""

from __future__ import annotations

import dataclasses
import time

from bot.slack.local.blocks import check_blocks
from bot.slack.local.model import Message, SlackError
from bot.slack.local.params import Params
from bot.slack.local.workspace import MAX_TEXT, Workspace


def post_message(ws: Workspace, p: Params) -> dict:
    channel = ws.channel_for_post(p.required("channel", "channel_not_found"))
    ws.require_open(channel)
    ws.require_member(channel)
    text, content = _content(ws, p)
    message = ws.add_message(channel, ws.bot_user_id, text, bot_id=ws.bot_id,
                             thread_ts=ws.thread_root(channel, p.text("thread_ts")),
                             reply_broadcast=p.flag("reply_broadcast"), metadata=p.get("metadata"), **content)
    return {"channel": channel.id, "ts": message.ts, "message": ws.message_view(message), **truncation_warning(p)}


def update(ws: Workspace, p: Params) -> dict:
    channel = ws.channel(p.required("channel", "channel_not_found"))
    message = ws.message(channel.id, p.text("ts"))
    if message.user != ws.bot_user_id:
        raise SlackError("cant_update_message")
    if not any(k in p for k in ("text", "blocks", "attachments", "metadata")):
        raise SlackError("no_text")
    if len(p.text("text") or "") > MAX_TEXT:
        raise SlackError("msg_too_long")  # posting methods cut long text; chat.update refuses it
    _apply_edit(ws, message, p)
    view = ws.message_view(message)
    return {"channel": channel.id, "ts": message.ts, "text": message.text, "message": view}


def delete(ws: Workspace, p: Params) -> dict:
    channel = ws.channel(p.required("channel", "channel_not_found"))
    message = ws.message(channel.id, p.text("ts"))
    if message.user != ws.bot_user_id:
        raise SlackError("cant_delete_message")
    _delete(ws, message)
    return {"channel": channel.id, "ts": message.ts}


def post_ephemeral(ws: Workspace, p: Params) -> dict:
    channel = ws.channel_for_post(p.required("channel", "channel_not_found"))
    ws.require_member(channel)
    user = ws.user(p.text("user"))
    if user.id not in channel.members:
        raise SlackError("user_not_in_channel")
    text, content = _content(ws, p)
    ts = ws.clock.next()
    _record_ephemeral(ws, source="chat.postEphemeral", channel=channel.id, user=user.id, text=text,
                      blocks=content["blocks"], thread_ts=p.text("thread_ts"), ts=ts)
    return {"message_ts": ts, **truncation_warning(p)}


def get_permalink(ws: Workspace, p: Params) -> dict:
    channel = ws.channel(p.required("channel", "channel_not_found"))
    message = ws.message(channel.id, p.text("message_ts"))
    return {"channel": channel.id, "permalink": ws.permalink(channel.id, message)}


def response_url_post(ws: Workspace, target: dict, payload: dict) -> None:
    """A POST to a response_url: ephemeral by default; in_channel posts; replace/delete act on the original."""
    p = Params(payload)
    replace, remove = p.flag("replace_original"), p.flag("delete_original")
    if not remove and not any(k in p for k in ("text", "blocks", "attachments")):
        raise SlackError("no_text")
    if "blocks" in p:
        check_blocks(p.get("blocks"), max_total_text=ws.max_block_text)
    original = _original(ws, target) if (replace or remove) else None
    entry = _record_ephemeral(
        ws, source="response_url", channel=target["channel"], user=target["user"], text=_text(p),
        blocks=p.get("blocks"), thread_ts=p.text("thread_ts"), ts=None,
        response_type=p.text("response_type", "ephemeral"), replace_original=replace, delete_original=remove,
        announce=original is None and p.text("response_type", "ephemeral") == "ephemeral")
    if original is not None and remove:
        _delete(ws, original)
    elif original is not None:
        _apply_edit(ws, original, p)
    elif entry["response_type"] == "in_channel" and target["channel"] in ws.channels:
        channel = ws.channels[target["channel"]]
        message = ws.add_message(channel, ws.bot_user_id, entry["text"], blocks=entry["blocks"], bot_id=ws.bot_id,
                                 thread_ts=ws.thread_root(channel, entry["thread_ts"]))
        entry["ts"] = message.ts


def _original(ws: Workspace, target: dict) -> Message | None:
    """The message a response_url was issued for (a button on a bot message), if the test said which."""
    message = ws.lookup(target["channel"], target["message_ts"])
    return message if message is not None and not message.deleted else None


def _content(ws: Workspace, p: Params) -> tuple[str, dict]:
    blocks, attachments = p.get("blocks"), p.get("attachments")
    if blocks is not None:
        check_blocks(blocks, max_total_text=ws.max_block_text)
    if attachments is not None and not isinstance(attachments, list):
        raise SlackError("invalid_attachments")
    text = _text(p)
    if not text and not blocks and not attachments:
        raise SlackError("no_text")
    return text, {"blocks": blocks or None, "attachments": attachments or None}


def _text(p: Params) -> str:
    return (p.text("text") or "")[:MAX_TEXT]


def truncation_warning(p: Params) -> dict:
    """Text over the limit is posted cut short, and Slack says so in the answer."""
    if len(p.text("text") or "") <= MAX_TEXT:
        return {}
    why = f"[WARN] Your message was truncated but still posted. The `text` field accepts up to {MAX_TEXT:,} characters."
    return {"response_metadata": {"warnings": ["message_truncated"], "messages": [why]}}


def _apply_edit(ws: Workspace, message: Message, p: Params) -> None:
    """chat.update semantics: fields not sent are kept; `blocks: []` removes the blocks."""
    if "blocks" in p:
        blocks = p.get("blocks")
        check_blocks(blocks, max_total_text=ws.max_block_text)
        message.blocks = blocks or None
    if "text" in p:
        message.text = _text(p)
    if "attachments" in p:
        message.attachments = p.get("attachments") or None
    if "metadata" in p:
        message.metadata = p.get("metadata") or None
    message.edited, message.edited_ts = True, ws.clock.next()
    ws.emit("update", dataclasses.asdict(message))


def _delete(ws: Workspace, message: Message) -> None:
    message.deleted = True
    ws.emit("delete", dataclasses.asdict(message))


def _record_ephemeral(ws: Workspace, *, announce: bool = True, **entry) -> dict:
    entry = {"response_type": "ephemeral", "replace_original": False, "delete_original": False, **entry,
             "at": time.time()}
    ws.ephemerals.append(entry)
    if announce:
        ws.emit("ephemeral", dict(entry))
    return entry


METHODS = {
    "chat.postMessage": post_message,
    "chat.update": update,
    "chat.delete": delete,
    "chat.postEphemeral": post_ephemeral,
    "chat.getPermalink": get_permalink,
}
