"""Things attached to messages: pins and reactions."""

from __future__ import annotations

import time

from bot.slack.local.model import Message, SlackError
from bot.slack.local.params import Params
from bot.slack.local.workspace import Workspace


def pins_add(ws: Workspace, p: Params) -> dict:
    message = _target(ws, p)
    if message.pinned:
        raise SlackError("already_pinned")
    pin(ws, message, ws.bot_user_id)
    return {}


def pin(ws: Workspace, message: Message, user: str) -> None:
    message.pinned = True
    ws.pins[(message.channel, message.ts)] = {"user": user, "created": int(time.time())}
    ws.emit("pin_added", {"channel": message.channel, "ts": message.ts, "user": user})


def pins_remove(ws: Workspace, p: Params) -> dict:
    message = _target(ws, p)
    if not message.pinned:
        raise SlackError("no_pin")
    message.pinned = False
    ws.pins.pop((message.channel, message.ts), None)
    ws.emit("pin_removed", {"channel": message.channel, "ts": message.ts, "user": ws.bot_user_id})
    return {}


def pins_list(ws: Workspace, p: Params) -> dict:
    channel = ws.channel(p.required("channel", "channel_not_found"))
    pinned = [(ts, pin) for (c, ts), pin in ws.pins.items() if c == channel.id]
    items = [{"type": "message", "created": pin["created"], "created_by": pin["user"], "channel": channel.id,
              "message": {**ws.message_view(ws.lookup(channel.id, ts)),
                          "permalink": ws.permalink(channel.id, ws.lookup(channel.id, ts))}}
             for ts, pin in reversed(pinned)]
    return {"items": items}


def reactions_add(ws: Workspace, p: Params) -> dict:
    message = _target(ws, p)
    react(ws, message, ws.bot_user_id, _emoji(p))
    return {}


def react(ws: Workspace, message: Message, user: str, name: str) -> None:
    users = message.reactions.setdefault(name, [])
    if user in users:
        raise SlackError("already_reacted")
    users.append(user)
    ws.emit("reaction_added", {"channel": message.channel, "ts": message.ts, "user": user, "name": name})


def reactions_remove(ws: Workspace, p: Params) -> dict:
    message = _target(ws, p)
    name = _emoji(p)
    if ws.bot_user_id not in message.reactions.get(name, []):
        raise SlackError("no_reaction")
    message.reactions[name].remove(ws.bot_user_id)
    if not message.reactions[name]:
        del message.reactions[name]
    ws.emit("reaction_removed", {"channel": message.channel, "ts": message.ts, "user": ws.bot_user_id,
                                 "name": name})
    return {}


def reactions_get(ws: Workspace, p: Params) -> dict:
    message = _target(ws, p, member=False)
    return {"type": "message", "channel": message.channel, "message": ws.message_view(message)}


def _target(ws: Workspace, p: Params, *, member: bool = True) -> Message:
    """The message named by `channel` + `timestamp`; the bot must be in the channel to act on it."""
    channel = ws.channel(p.required("channel", "channel_not_found"))
    if member:
        ws.require_member(channel)
    if not p.text("timestamp"):
        raise SlackError("no_item_specified")
    return ws.message(channel.id, p.text("timestamp"))


def _emoji(p: Params) -> str:
    name = (p.text("name") or "").strip(":")
    if not name:
        raise SlackError("invalid_name")
    return name


METHODS = {
    "pins.add": pins_add,
    "pins.remove": pins_remove,
    "pins.list": pins_list,
    "reactions.add": reactions_add,
    "reactions.remove": reactions_remove,
    "reactions.get": reactions_get,
}
