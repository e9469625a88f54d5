"""The workspace state behind the emulator: users, channels, messages, files, canvases, and who can see what.

Every method here expects the caller to hold `ws.lock` (handlers run under it; the public LocalSlack helpers
take it). Changes are announced by `emit`, queued, and delivered to subscribers after the lock is released.
"""

from __future__ import annotations

import dataclasses
import mimetypes
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from bot.slack.limits import SLACK
from bot.slack.local.model import IdMinter, Message, SlackError, TsClock

GENERAL_CHANNEL_ID = "C1"  # the payload builders in tests/fixtures/slack.py default to channel_id="C1"
MAX_TEXT = SLACK.message_text  # Slack truncates longer message text


@dataclass
class Channel:
    id: str
    name: str
    created: int
    creator: str
    members: list[str] = field(default_factory=list)
    is_private: bool = False
    is_im: bool = False
    is_mpim: bool = False
    is_general: bool = False
    is_archived: bool = False
    topic: dict = field(default_factory=lambda: {"value": "", "creator": "", "last_set": 0})
    purpose: dict = field(default_factory=lambda: {"value": "", "creator": "", "last_set": 0})
    im_user: str | None = None
    canvas_id: str | None = None
    previous_names: list[str] = field(default_factory=list)


@dataclass
class User:
    id: str
    name: str
    real_name: str
    email: str | None = None
    is_admin: bool = False
    is_bot: bool = False
    tz: str = "Etc/UTC"
    deleted: bool = False
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass
class StoredFile:
    id: str
    name: str
    length: int
    created: int
    user: str
    upload_key: str
    title: str = ""
    alt_txt: str | None = None
    snippet_type: str | None = None
    content: bytes | None = None  # None until the bytes are POSTed to the upload URL
    completed: bool = False
    shares: dict = field(default_factory=dict)  # channel id -> [{"ts": ..., "thread_ts": ...}]


class Workspace:
    def __init__(self, *, team_id: str, bot_user_id: str, bot_name: str, max_block_text: int | None) -> None:
        self.lock = threading.RLock()
        self.clock = TsClock()
        self.ids = IdMinter()
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = "B0LOCAL0001"
        self.app_id = "A0LOCAL0001"
        self.max_block_text = max_block_text
        self.base = ""  # http://host:port, known once the server is bound
        self.socket_mode_url = ""  # ws://… that apps.connections.open hands out (a test's Socket Mode server)
        self.users: dict[str, User] = {}
        self.channels: dict[str, Channel] = {}
        self.history: dict[str, list[Message]] = {}
        self._index: dict[tuple[str, str], Message] = {}
        self.pins: dict[tuple[str, str], dict] = {}  # (channel, ts) -> {"user", "created"}
        self.files: dict[str, StoredFile] = {}
        self.uploads: dict[str, str] = {}  # upload URL key -> file id
        self.canvases: dict[str, dict] = {}
        self.usergroups: dict[str, dict] = {}
        self.ephemerals: list[dict] = []
        self.views: dict[str, dict] = {}
        self.response_urls: dict[str, dict] = {}
        self.events: deque[tuple[str, dict]] = deque()

    # --- events -------------------------------------------------------------------------------------------

    def emit(self, name: str, data: dict) -> None:
        self.events.append((name, data))

    def take_events(self) -> list[tuple[str, dict]]:
        with self.lock:
            taken = list(self.events)
            self.events.clear()
        return taken

    # --- users --------------------------------------------------------------------------------------------

    def put_user(self, user: User) -> User:
        self.users[user.id] = user
        general = self.channels.get(GENERAL_CHANNEL_ID)
        if general and not user.is_bot and user.id not in general.members:
            self.join(general, user.id)  # everyone is in #general, as in a real workspace
        return user

    def user(self, user_id: str | None) -> User:
        if not user_id or user_id not in self.users:
            raise SlackError("user_not_found")
        return self.users[user_id]

    # --- channels -----------------------------------------------------------------------------------------

    def new_channel(self, name: str, *, creator: str, members: list[str], channel_id: str | None = None,
                    **flags) -> Channel:
        channel = Channel(id=channel_id or self.ids.next("C"), name=name, created=int(time.time()),
                          creator=creator, members=list(dict.fromkeys(members)), **flags)
        self.channels[channel.id] = channel
        self.history[channel.id] = []
        if not channel.is_im:  # "channel" is the id in every event; "id" too, for readers of Slack's shape
            self.emit("channel_created", {"channel": channel.id, "id": channel.id, "name": channel.name,
                                          "is_private": channel.is_private, "created": channel.created,
                                          "creator": channel.creator})
        return channel

    def channel(self, ref: str | None) -> Channel:
        """A channel as the bot's token sees it: private channels it is not in do not exist for it."""
        channel = self.channels.get(ref or "")
        if channel is None or (channel.is_private and self.bot_user_id not in channel.members):
            raise SlackError("channel_not_found")
        return channel

    def channel_for_post(self, ref: str | None) -> Channel:
        """chat.postMessage also takes `#name`, a bare name, or a user id (the app's DM with that user)."""
        ref = (ref or "").strip()
        if ref.startswith(("U", "W")) and ref in self.users:
            return self.open_dm(ref)[0]
        if ref not in self.channels:
            by_name = self.channel_named(ref.lstrip("#"))
            ref = by_name.id if by_name else ref
        return self.channel(ref)

    def channel_named(self, name: str) -> Channel | None:
        return next((c for c in self.channels.values() if not c.is_im and c.name == name), None)

    def find_channel(self, ref: str) -> Channel:
        """For test helpers: by id, `#name` or name, regardless of what the bot can see."""
        channel = self.channels.get(ref) or self.channel_named(ref.lstrip("#"))
        if channel is None:
            raise KeyError(f"no channel {ref!r} in the local workspace")
        return channel

    def require_member(self, channel: Channel) -> None:
        if self.bot_user_id not in channel.members:
            raise SlackError("not_in_channel")

    def require_open(self, channel: Channel) -> None:
        if channel.is_archived:
            raise SlackError("is_archived")

    def join(self, channel: Channel, user_id: str, *, inviter: str | None = None) -> None:
        if user_id in channel.members:
            return
        channel.members.append(user_id)
        self.emit("member_joined", {"channel": channel.id, "user": user_id, "inviter": inviter})

    def open_dm(self, user_id: str) -> tuple[Channel, bool]:
        """The bot's DM with a user, created on first use. Returns (channel, already_open)."""
        for channel in self.channels.values():
            if channel.is_im and channel.im_user == user_id:
                return channel, True
        channel = self.new_channel(user_id, creator=user_id, members=[self.bot_user_id, user_id],
                                   channel_id=self.ids.next("D"), is_im=True, is_private=True, im_user=user_id)
        return channel, False

    # --- messages -----------------------------------------------------------------------------------------

    def add_message(self, channel: Channel, user: str, text: str, **fields) -> Message:
        message = Message(channel=channel.id, ts=self.clock.next(), user=user, text=text[:MAX_TEXT], **fields)
        self.history[channel.id].append(message)
        self._index[(channel.id, message.ts)] = message
        self.emit("message", dataclasses.asdict(message))
        return message

    def message(self, channel_id: str, ts: str | None, *, error: str = "message_not_found") -> Message:
        message = self._index.get((channel_id, ts or ""))
        if message is None or message.deleted:
            raise SlackError(error)
        return message

    def lookup(self, channel_id: str | None, ts: str | None) -> Message | None:
        """The message at (channel, ts), deleted or not; None when there is none."""
        return self._index.get((channel_id or "", ts or ""))

    def thread_root(self, channel: Channel, thread_ts: str | None) -> str | None:
        """Slack threads a reply to a reply under the same parent; an unknown thread_ts is an error."""
        if not thread_ts:
            return None
        message = self._index.get((channel.id, thread_ts))
        if message is None:
            raise SlackError("invalid_thread_ts")
        return message.thread_ts or message.ts

    def replies_of(self, channel_id: str, parent_ts: str) -> list[Message]:
        return [m for m in self.history[channel_id] if m.thread_ts == parent_ts and not m.deleted]

    def top_level(self, channel_id: str) -> list[Message]:
        """What conversations.history lists: parents and broadcasts; a deleted parent stays while it has replies."""
        return [m for m in self.history[channel_id]
                if (m.thread_ts is None or m.reply_broadcast)
                and (not m.deleted or (m.thread_ts is None and self.replies_of(channel_id, m.ts)))]

    def permalink(self, channel_id: str, message: Message) -> str:
        link = f"https://local.slack/archives/{channel_id}/p{message.ts.replace('.', '')}"
        return f"{link}?thread_ts={message.thread_ts}&cid={channel_id}" if message.thread_ts else link

    # --- JSON shapes (as Slack answers them) --------------------------------------------------------------

    def message_view(self, m: Message) -> dict:
        if m.deleted:
            return self._tombstone(m)
        view = {"type": "message", "ts": m.ts, "user": m.user, "text": m.text, "team": self.team_id}
        if m.subtype:
            view["subtype"] = m.subtype
        if m.bot_id:
            view.update(bot_id=m.bot_id, app_id=self.app_id)
        optional = {"blocks": m.blocks, "attachments": m.attachments, "metadata": m.metadata}
        view.update({k: v for k, v in optional.items() if v is not None})
        if m.files:
            view.update(files=m.files, upload=False)
        if m.edited:
            view["edited"] = {"user": m.user, "ts": m.edited_ts}
        reactions = [{"name": n, "users": list(us), "count": len(us)} for n, us in m.reactions.items() if us]
        if reactions:
            view["reactions"] = reactions
        if m.pinned:
            view["pinned_to"] = [m.channel]
        view.update(self._thread_fields(m))
        return view

    def _thread_fields(self, m: Message) -> dict:
        if m.thread_ts:
            parent = self._index.get((m.channel, m.thread_ts))
            fields = {"thread_ts": m.thread_ts, "parent_user_id": parent.user if parent else m.user}
            return {**fields, "subtype": "thread_broadcast"} if m.reply_broadcast else fields
        replies = self.replies_of(m.channel, m.ts)
        if not replies:
            return {}
        users = list(dict.fromkeys(r.user for r in replies))
        return {"thread_ts": m.ts, "reply_count": len(replies), "reply_users_count": len(users),
                "reply_users": users[:5], "latest_reply": replies[-1].ts, "is_locked": False, "subscribed": False}

    def _tombstone(self, m: Message) -> dict:
        return {"type": "message", "subtype": "tombstone", "ts": m.ts, "user": "USLACKBOT", "hidden": True,
                "text": "This message was deleted.", **self._thread_fields(m)}

    def channel_view(self, c: Channel, *, num_members: bool = False) -> dict:
        if c.is_im:
            return {"id": c.id, "created": c.created, "is_im": True, "is_org_shared": False, "user": c.im_user,
                    "is_user_deleted": False, "priority": 0, "is_open": True}
        view = {
            "id": c.id, "name": c.name, "name_normalized": c.name, "created": c.created, "creator": c.creator,
            "is_channel": not c.is_private and not c.is_mpim, "is_group": c.is_private and not c.is_mpim,
            "is_im": False, "is_mpim": c.is_mpim, "is_private": c.is_private, "is_archived": c.is_archived,
            "is_general": c.is_general, "unlinked": 0, "is_shared": False, "is_ext_shared": False,
            "is_org_shared": False, "pending_shared": [], "is_pending_ext_shared": False,
            "is_member": self.bot_user_id in c.members, "topic": dict(c.topic), "purpose": dict(c.purpose),
            "previous_names": list(c.previous_names),
        }
        if c.canvas_id:
            view["properties"] = {"canvas": {"file_id": c.canvas_id, "is_empty": False}}
        if num_members:
            view["num_members"] = len(c.members)
        return view

    def user_view(self, u: User) -> dict:
        profile = {"real_name": u.real_name, "real_name_normalized": u.real_name, "display_name": u.name,
                   "display_name_normalized": u.name, "team": self.team_id, "status_text": "", "status_emoji": ""}
        if u.email:
            profile["email"] = u.email
        if u.is_bot:
            profile.update(bot_id=self.bot_id, api_app_id=self.app_id, always_active=True)
        return {"id": u.id, "team_id": self.team_id, "name": u.name, "deleted": u.deleted, "color": "9f69e7",
                "real_name": u.real_name, "tz": u.tz, "tz_label": "Coordinated Universal Time", "tz_offset": 0,
                "profile": profile, "is_admin": u.is_admin, "is_owner": False, "is_primary_owner": False,
                "is_restricted": False, "is_ultra_restricted": False, "is_bot": u.is_bot, "is_app_user": False,
                "updated": u.created, "is_email_confirmed": bool(u.email)}

    def file_view(self, f: StoredFile) -> dict:
        public = {c: s for c, s in f.shares.items() if not self.channels[c].is_private}
        private = {c: s for c, s in f.shares.items() if self.channels[c].is_private}
        return {"id": f.id, "created": f.created, "timestamp": f.created, "name": f.name, "title": f.title or f.name,
                "mimetype": _mimetype(f.name), "filetype": _filetype(f.name), "pretty_type": _filetype(f.name),
                "user": f.user, "user_team": self.team_id, "editable": False, "size": len(f.content or b""),
                "mode": "hosted", "is_external": False, "external_type": "", "is_public": bool(public),
                "public_url_shared": False, "display_as_bot": False, "username": "",
                "url_private": f"{self.base}/files/{f.id}/{f.name}",
                "url_private_download": f"{self.base}/files/{f.id}/download/{f.name}",
                "permalink": f"https://local.slack/files/{f.user}/{f.id}/{f.name}",
                "channels": [c for c in public], "groups": [c for c in private], "ims": [],
                "shares": {"public": public, "private": private} if f.shares else {},
                "comments_count": 0, "has_rich_preview": False, "file_access": "visible",
                **({"alt_txt": f.alt_txt} if f.alt_txt else {})}


def _mimetype(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _filetype(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return {"txt": "text", "md": "markdown", "": "binary"}.get(ext, ext)
