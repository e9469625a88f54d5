"""conversations.* methods: channels, membership, topics, history and threads."""

from __future__ import annotations

import re
import time
from decimal import Decimal, InvalidOperation

from bot.slack.local.model import Message, SlackError
from bot.slack.local.params import Params, decode_cursor, encode_cursor, page_by_offset
from bot.slack.local.workspace import Channel, Workspace

MAX_NAME = 80
MAX_TOPIC = 250
_NAME_CHARS = re.compile(r"^[a-z0-9_-]+$")


def create(ws: Workspace, p: Params) -> dict:
    name = check_name(ws, p.text("name", ""))
    channel = ws.new_channel(name, creator=ws.bot_user_id, members=[ws.bot_user_id], is_private=p.flag("is_private"))
    return {"channel": ws.channel_view(channel)}


def check_name(ws: Workspace, name: str, *, renaming: Channel | None = None) -> str:
    """Slack's channel-name rules, in the order Slack reports them."""
    if not name:
        raise SlackError("invalid_name_required")
    if len(name) > MAX_NAME:
        raise SlackError("invalid_name_maxlength")
    if not _NAME_CHARS.match(name):
        raise SlackError("invalid_name_specials")
    if not re.search(r"[a-z0-9]", name):
        raise SlackError("invalid_name_punctuation")
    existing = ws.channel_named(name)
    if existing is not None and existing is not renaming:
        raise SlackError("name_taken")
    return name


def invite(ws: Workspace, p: Params) -> dict:
    """All-or-nothing like Slack: one bad or already-present user fails the call, unless `force` is set."""
    channel = _group_channel(ws, p)
    ws.require_member(channel)
    users = p.ids("users")
    if not users:
        raise SlackError("no_user")
    errors = [{"user": u, "ok": False, "error": e} for u in users if (e := _invite_error(ws, channel, u))]
    valid = [u for u in users if u not in {e["user"] for e in errors}]
    if errors and (not p.flag("force") or not valid):
        raise SlackError(errors[0]["error"], errors=errors)
    for user_id in valid:
        ws.join(channel, user_id, inviter=ws.bot_user_id)
    return {"channel": ws.channel_view(channel), **({"errors": errors} if errors else {})}


def _invite_error(ws: Workspace, channel: Channel, user_id: str) -> str | None:
    if user_id == ws.bot_user_id:
        return "cant_invite_self"
    if user_id not in ws.users:
        return "user_not_found"
    return "already_in_channel" if user_id in channel.members else None


def join(ws: Workspace, p: Params) -> dict:
    channel = _group_channel(ws, p)
    if channel.is_private:
        raise SlackError("method_not_supported_for_channel_type")
    if ws.bot_user_id in channel.members:
        return {"channel": ws.channel_view(channel), "warning": "already_in_channel",
                "response_metadata": {"warnings": ["already_in_channel"]}}
    ws.join(channel, ws.bot_user_id)
    return {"channel": ws.channel_view(channel)}


def set_topic(ws: Workspace, p: Params) -> dict:
    channel = _settable(ws, p)
    channel.topic = _topic_value(ws, p.text("topic", ""))
    ws.emit("topic", {"channel": channel.id, "topic": channel.topic["value"], "user": ws.bot_user_id})
    return {"channel": ws.channel_view(channel)}


def set_purpose(ws: Workspace, p: Params) -> dict:
    channel = _settable(ws, p)
    channel.purpose = _topic_value(ws, p.text("purpose", ""))
    ws.emit("purpose", {"channel": channel.id, "purpose": channel.purpose["value"], "user": ws.bot_user_id})
    return {"channel": ws.channel_view(channel)}


def _settable(ws: Workspace, p: Params) -> Channel:
    channel = _group_channel(ws, p)
    ws.require_open(channel)
    ws.require_member(channel)
    return channel


def _topic_value(ws: Workspace, value: str) -> dict:
    if len(value) > MAX_TOPIC:
        raise SlackError("too_long")
    return {"value": value, "creator": ws.bot_user_id, "last_set": int(time.time())}


def archive(ws: Workspace, p: Params) -> dict:
    channel = _group_channel(ws, p)
    if channel.is_general:
        raise SlackError("cant_archive_general")
    if channel.is_archived:
        raise SlackError("already_archived")
    ws.require_member(channel)
    channel.is_archived = True
    ws.emit("channel_archived", {"channel": channel.id, "user": ws.bot_user_id})
    return {}


def rename(ws: Workspace, p: Params) -> dict:
    channel = _settable(ws, p)
    name = check_name(ws, p.text("name", ""), renaming=channel)
    if name != channel.name:
        channel.previous_names.insert(0, channel.name)
        channel.name = name
        ws.emit("channel_renamed", {"channel": channel.id, "name": name})
    return {"channel": ws.channel_view(channel)}


def info(ws: Workspace, p: Params) -> dict:
    channel = ws.channel(p.required("channel", "channel_not_found"))
    return {"channel": ws.channel_view(channel, num_members=p.flag("include_num_members"))}


def members(ws: Workspace, p: Params) -> dict:
    channel = ws.channel(p.required("channel", "channel_not_found"))
    page, cursor = page_by_offset(channel.members, p)
    return {"members": page, "response_metadata": {"next_cursor": cursor}}


def list_(ws: Workspace, p: Params) -> dict:
    types = set(p.ids("types") or ["public_channel"])
    listed = [c for c in ws.channels.values() if _listed(ws, c, types)
              and not (c.is_archived and p.flag("exclude_archived"))]
    page, cursor = page_by_offset(listed, p)
    return {"channels": [ws.channel_view(c, num_members=not c.is_im) for c in page],
            "response_metadata": {"next_cursor": cursor}}


def _listed(ws: Workspace, c: Channel, types: set[str]) -> bool:
    kind = "im" if c.is_im else "mpim" if c.is_mpim else "private_channel" if c.is_private else "public_channel"
    return kind in types and (kind == "public_channel" or ws.bot_user_id in c.members)


def open_(ws: Workspace, p: Params) -> dict:
    if p.text("channel"):
        channel, existed = ws.channel(p.text("channel")), True
    else:
        users = p.ids("users")
        if not users:
            raise SlackError("users_list_not_supplied")
        for user_id in users:
            ws.user(user_id)
        channel, existed = ws.open_dm(users[0]) if len(users) == 1 else _open_mpim(ws, users)
    answer = {"channel": ws.channel_view(channel) if p.flag("return_im") else {"id": channel.id}}
    return {**answer, "no_op": True, "already_open": True} if existed else answer


def _open_mpim(ws: Workspace, users: list[str]) -> tuple[Channel, bool]:
    wanted = {ws.bot_user_id, *users}
    for channel in ws.channels.values():
        if channel.is_mpim and set(channel.members) == wanted:
            return channel, True
    name = "mpdm-" + "--".join(ws.users[u].name for u in users) + "-1"
    return ws.new_channel(name, creator=ws.bot_user_id, members=[ws.bot_user_id, *users],
                          channel_id=ws.ids.next("G"), is_mpim=True, is_private=True), False


def history(ws: Workspace, p: Params) -> dict:
    """Newest first; cursor pages walk back in time; deleted parents with replies show as tombstones."""
    channel = _readable(ws, p)
    newest_first = list(reversed(_in_window(ws.top_level(channel.id), p)))
    position = decode_cursor(p.text("cursor"))
    if position:
        newest_first = [m for m in newest_first if _ts(m.ts) <= _ts(position)]
    limit = p.integer("limit", 100, high=999)
    page, rest = newest_first[:limit], newest_first[limit:]
    pins = sum(1 for (c, _) in ws.pins if c == channel.id)
    return {"messages": [ws.message_view(m) for m in page], "has_more": bool(rest), "pin_count": pins,
            "channel_actions_ts": None, "channel_actions_count": 0,
            "response_metadata": {"next_cursor": encode_cursor(rest[0].ts) if rest else ""}}


def replies(ws: Workspace, p: Params) -> dict:
    """Oldest first. Like Slack, the parent leads every page, so `limit` counts it too."""
    channel = _readable(ws, p)
    found = ws.lookup(channel.id, p.text("ts"))
    if found is None:
        raise SlackError("thread_not_found")
    parent = ws.lookup(channel.id, found.thread_ts) if found.thread_ts else found
    thread = _in_window(ws.replies_of(channel.id, parent.ts), p)
    if parent.deleted and not thread:
        raise SlackError("thread_not_found")
    position = decode_cursor(p.text("cursor"))
    if position:
        thread = [m for m in thread if _ts(m.ts) >= _ts(position)]
    take = max(p.integer("limit", 1000, high=1000) - 1, 1)
    page, rest = thread[:take], thread[take:]
    return {"messages": [ws.message_view(m) for m in [parent, *page]], "has_more": bool(rest),
            "response_metadata": {"next_cursor": encode_cursor(rest[0].ts) if rest else ""}}


def _readable(ws: Workspace, p: Params) -> Channel:
    channel = ws.channel(p.required("channel", "channel_not_found"))
    ws.require_member(channel)
    return channel


def _group_channel(ws: Workspace, p: Params) -> Channel:
    channel = ws.channel(p.required("channel", "channel_not_found"))
    if channel.is_im:
        raise SlackError("method_not_supported_for_channel_type")
    return channel


def _in_window(messages: list[Message], p: Params) -> list[Message]:
    """`oldest`/`latest` bound the listing, exclusive unless `inclusive` is set, as Slack documents."""
    oldest = _ts(p.text("oldest", "0"), "invalid_ts_oldest")
    latest = _ts(p.text("latest"), "invalid_ts_latest") if p.text("latest") else None
    inclusive = p.flag("inclusive")

    def inside(m: Message) -> bool:
        t = _ts(m.ts)
        above = t >= oldest if inclusive else t > oldest
        below = latest is None or (t <= latest if inclusive else t < latest)
        return above and below
    return [m for m in messages if inside(m)]


def _ts(value: str, error: str = "invalid_cursor") -> Decimal:
    """Exact comparison: a float cannot hold ten integer digits plus six decimals reliably."""
    try:
        return Decimal(value)
    except (InvalidOperation, TypeError):
        raise SlackError(error) from None


METHODS = {
    "conversations.create": create,
    "conversations.invite": invite,
    "conversations.join": join,
    "conversations.setTopic": set_topic,
    "conversations.setPurpose": set_purpose,
    "conversations.archive": archive,
    "conversations.rename": rename,
    "conversations.info": info,
    "conversations.members": members,
    "conversations.list": list_,
    "conversations.open": open_,
    "conversations.history": history,
    "conversations.replies": replies,
}
