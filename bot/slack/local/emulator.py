"""LocalSlack: the public face of the emulator. Start it, point clients at `.url`, then read and shape state."""

from __future__ import annotations

import copy
import logging
import secrets
import threading
import time
from collections.abc import Callable

from bot.slack.local.blocks import DEFAULT_MAX_BLOCK_TEXT, check_blocks
from bot.slack.local.faults import Faults
from bot.slack.local.methods.chat import truncation_warning
from bot.slack.local.methods.items import pin, react
from bot.slack.local.model import Call, Message, Scripted, SlackError
from bot.slack.local.params import Params
from bot.slack.local.rate_limits import RateLimits
from bot.slack.local.routes import Router
from bot.slack.local.server import LocalHttpServer
from bot.slack.local.workspace import GENERAL_CHANNEL_ID, Channel, User, Workspace

log = logging.getLogger(__name__)

Subscriber = Callable[[str, dict], None]


class LocalSlack:
    """A Slack Web API on 127.0.0.1 that keeps a workspace's state, records calls and fails on request.

    The workspace starts with the bot user and `#general` (id "C1"); add people and channels with the helpers.
    """

    def __init__(self, *, bot_token: str | None = None, bot_user_id: str = "UBOT", team_id: str = "T0LOCAL",
                 host: str = "127.0.0.1", port: int = 0, bot_name: str = "incidentbot",
                 max_block_text: int | None = DEFAULT_MAX_BLOCK_TEXT, rate_limits: RateLimits | None = None) -> None:
        self._address = (host, port)
        self._bot_token = bot_token
        self._ws = Workspace(team_id=team_id, bot_user_id=bot_user_id, bot_name=bot_name,
                             max_block_text=max_block_text)
        self._faults = Faults()
        self.rate_limits = rate_limits or RateLimits()  # Slack's, on unless a test says why not
        self._subscribers: list[Subscriber] = []
        self._dispatching = threading.Lock()
        self._calls_lock = threading.Lock()
        self._server: LocalHttpServer | None = None
        self._thread: threading.Thread | None = None
        self.calls: list[Call] = []
        self._seed(bot_name)

    def _seed(self, bot_name: str) -> None:
        ws = self._ws
        with ws.lock:
            ws.put_user(User(id=ws.bot_user_id, name=bot_name, real_name=bot_name, is_bot=True))
            ws.new_channel("general", creator=ws.bot_user_id, members=[ws.bot_user_id],
                           channel_id=GENERAL_CHANNEL_ID, is_general=True)

    # --- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> LocalSlack:
        if self._server is not None:
            return self
        router = Router(self._ws, self._faults, self.rate_limits, bot_token=self._bot_token, record=self._record,
                        after=self._dispatch_events)
        self._server = LocalHttpServer(self._address, router)
        host, port = self._server.server_address[:2]
        self._ws.base = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"local-slack-{port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> LocalSlack:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def base(self) -> str:
        """"http://127.0.0.1:PORT": where response_urls, upload URLs and file downloads live."""
        if not self._ws.base:
            raise RuntimeError("LocalSlack is not started: call start() or use it as a context manager")
        return self._ws.base

    @property
    def url(self) -> str:
        """The Web API base for slack_sdk's `base_url` / SLACK_API_URL: methods are POST {url}chat.postMessage."""
        return f"{self.base}/api/"

    @property
    def socket_mode_url(self) -> str:
        """The WebSocket URL apps.connections.open answers with (Socket Mode); empty: that method fails."""
        return self._ws.socket_mode_url

    @socket_mode_url.setter
    def socket_mode_url(self, url: str) -> None:
        with self._ws.lock:
            self._ws.socket_mode_url = url

    # --- what happened ------------------------------------------------------------------------------------

    def _record(self, call: Call) -> None:
        with self._calls_lock:
            self.calls.append(call)

    def calls_to(self, method: str) -> list[Call]:
        """Calls to one Web API method in arrival order; also "upload" (upload URL) and "response_url"."""
        with self._calls_lock:
            return [c for c in self.calls if c.method == method]

    def messages(self, channel: str, *, thread_ts: str | None = None, include_replies: bool = False,
                 include_deleted: bool = False) -> list[Message]:
        """Oldest first. Top-level messages (and broadcast replies) by default; with `thread_ts`, the parent
        and its replies; `include_replies` for everything in the channel."""
        with self._ws.lock:
            found = self._ws.history[self._ws.find_channel(channel).id]
            if thread_ts is not None:
                found = [m for m in found if thread_ts in (m.ts, m.thread_ts)]
            elif not include_replies:
                found = [m for m in found if m.thread_ts is None or m.reply_broadcast]
            return copy.deepcopy([m for m in found if include_deleted or not m.deleted])

    def replies(self, channel: str, thread_ts: str) -> list[Message]:
        """The replies under `thread_ts`, oldest first, without the parent."""
        return [m for m in self.messages(channel, thread_ts=thread_ts) if m.thread_ts == thread_ts]

    def ephemerals(self, channel: str | None = None) -> list[dict]:
        """chat.postEphemeral and response_url posts: source, channel, user, text, blocks, thread_ts, ts,
        response_type, replace_original, delete_original, at."""
        with self._ws.lock:
            channel_id = self._ws.find_channel(channel).id if channel else None
            return [dict(e) for e in self._ws.ephemerals if channel_id in (None, e["channel"])]

    def files(self, channel: str | None = None) -> list[dict]:
        """Completed uploads as Slack describes them, plus `content` (bytes)."""
        with self._ws.lock:
            channel_id = self._ws.find_channel(channel).id if channel else None
            return [{**self._ws.file_view(f), "content": f.content} for f in self._ws.files.values()
                    if f.completed and (channel_id is None or channel_id in f.shares)]

    def canvases(self) -> list[dict]:
        """canvas_id, title, markdown, channel (or None), kind ("standalone" | "channel"), created."""
        with self._ws.lock:
            return [dict(c) for c in self._ws.canvases.values()]

    def channel(self, ref: str) -> dict:
        """A channel as conversations.info shows it, plus `members`."""
        with self._ws.lock:
            found = self._ws.find_channel(ref)
            return {**self._ws.channel_view(found, num_members=True), "members": list(found.members)}

    def channels(self) -> list[dict]:
        with self._ws.lock:
            return [self.channel(c) for c in self._ws.channels]

    def users(self) -> list[dict]:
        with self._ws.lock:
            return [self._ws.user_view(u) for u in self._ws.users.values()]

    def message_event(self, channel: str, ts: str) -> dict:
        """The Events API `message` event Slack would deliver for this message (wrap it with event_body)."""
        with self._ws.lock:
            found = self._ws.find_channel(channel)
            message = self._ws.lookup(found.id, ts)
            if message is None:
                raise KeyError(f"no message {ts} in {channel}")
            kind = "im" if found.is_im else "mpim" if found.is_mpim else "group" if found.is_private else "channel"
            return {**self._ws.message_view(message), "channel": found.id, "event_ts": message.ts,
                    "channel_type": kind}

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5, interval: float = 0.01) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)
        return True

    # --- failures -----------------------------------------------------------------------------------------

    def script(self, method: str, *responses: Scripted) -> None:
        """The next calls to `method` get these answers, in order; then normal behaviour resumes.
        `method` may also be "upload" (the upload URL) or "response_url"."""
        self._faults.script(method, responses)

    def fail_every(self, n: int, *, status: int = 429, retry_after: float = 1.0, methods: set[str] | None = None,
                   for_s: float | None = None) -> None:
        """Every n-th Web API call (of `methods`, if given) fails with `status`, for `for_s` seconds or until
        cleared. 429s carry Retry-After in whole seconds. `n=0` ends the storm."""
        self._faults.fail_every(n, status=status, retry_after=retry_after, methods=methods, for_s=for_s)

    def clear_faults(self) -> None:
        self._faults.clear()

    # --- subscribers --------------------------------------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> None:
        """`callback(event, data)` for every change from now on, in the order the changes happened."""
        self._dispatch_events()  # earlier changes belong to earlier subscribers
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Subscriber) -> None:
        if callback in self._subscribers:
            self._subscribers.remove(callback)

    def _dispatch_events(self) -> None:
        """Deliver queued changes outside the state lock, one deliverer at a time, so order holds and a
        subscriber may read state (or even call the API) without deadlocking the server."""
        while self._ws.events:
            if not self._dispatching.acquire(blocking=False):
                return  # whoever holds it delivers ours too: it loops until the queue is empty
            try:
                for name, data in self._ws.take_events():
                    self._deliver(name, data)
            finally:
                self._dispatching.release()

    def _deliver(self, name: str, data: dict) -> None:
        for callback in list(self._subscribers):
            try:
                callback(name, data)
            except Exception:  # a broken renderer must not break the API it watches
                log.exception("local slack subscriber failed on %s", name)

    # --- shaping the workspace ----------------------------------------------------------------------------

    def add_user(self, user_id: str, name: str, *, is_admin: bool = False, email: str | None = None,
                 real_name: str | None = None, is_bot: bool = False) -> str:
        """Add (or replace) a person; like in Slack, they are in #general."""
        with self._ws.lock:
            self._ws.put_user(User(id=user_id, name=name, real_name=real_name or name.title(), email=email,
                                   is_admin=is_admin, is_bot=is_bot))
        self._dispatch_events()
        return user_id

    def add_channel(self, name: str, *, members: tuple[str, ...] | list[str] = (), is_private: bool = False,
                    bot_member: bool = True, topic: str | None = None, channel_id: str | None = None) -> str:
        """Create a channel directly (no API call) and return its id. `bot_member=False`: the bot must join or
        be invited before it can post there (`not_in_channel`); a private one is invisible to it
        (`channel_not_found`). An existing name (e.g. the seeded #general) gets `members` added instead."""
        ws, name = self._ws, name.lstrip("#")
        with ws.lock:
            for user_id in members:
                _known_user(ws, user_id)
            existing = ws.channel_named(name)
            if existing is not None:
                channel_id = _add_members(ws, existing, members, is_private)
            else:
                channel_id = _new_channel(ws, name, members, is_private, bot_member, topic, channel_id)
        self._dispatch_events()
        return channel_id

    def add_usergroup(self, handle: str, users: list[str] | tuple[str, ...], *, name: str | None = None,
                      description: str = "") -> str:
        ws = self._ws
        with ws.lock:
            group_id = ws.ids.next("S")
            now = int(time.time())
            ws.usergroups[group_id] = {
                "id": group_id, "team_id": ws.team_id, "is_usergroup": True, "is_subteam": True,
                "name": name or handle, "description": description, "handle": handle, "is_external": False,
                "date_create": now, "date_update": now, "date_delete": 0, "auto_type": None,
                "created_by": ws.bot_user_id, "updated_by": ws.bot_user_id, "deleted_by": None,
                "prefs": {"channels": [], "groups": []}, "users": [_known_user(ws, u) for u in users]}
        return group_id

    def post_user_message(self, channel: str, user: str, text: str, thread_ts: str | None = None, *,
                          blocks: list | None = None) -> str:
        """A person writes in a channel (state only: deliver `message_event(...)` to the app yourself).
        Posting in a public channel joins it, as in Slack; a private one needs membership first."""
        ws = self._ws
        with ws.lock:
            found, person = ws.find_channel(channel), _known_user(ws, user)
            if person not in found.members:
                if found.is_private:
                    raise ValueError(f"{person} is not a member of private #{found.name}")
                ws.join(found, person)
            try:
                message = ws.add_message(found, person, text, blocks=blocks, thread_ts=ws.thread_root(found, thread_ts))
            except SlackError as error:
                raise ValueError(f"cannot post in {channel}: {error.error}") from None
        self._dispatch_events()
        return message.ts

    def add_reaction(self, channel: str, ts: str, user: str, name: str) -> None:
        """A person reacts (state only, like post_user_message)."""
        self._act_on(channel, ts, lambda message: react(self._ws, message, _known_user(self._ws, user), name))

    def pin_message(self, channel: str, ts: str, user: str) -> None:
        """A person pins a message (state only)."""
        self._act_on(channel, ts, lambda message: pin(self._ws, message, _known_user(self._ws, user)))

    def _act_on(self, channel: str, ts: str, action: Callable[[Message], None]) -> None:
        with self._ws.lock:
            message = self._ws.lookup(self._ws.find_channel(channel).id, ts)
            if message is None or message.deleted:
                raise KeyError(f"no message {ts} in {channel}")
            try:
                action(message)
            except SlackError as error:
                raise ValueError(error.error) from None
        self._dispatch_events()

    def response_url(self, *, channel: str | None = None, user: str | None = None, message_ts: str | None = None,
                     max_uses: int = 5) -> str:
        """A fresh response_url on this server. Give `channel` so in_channel replies land there, and
        `message_ts` (the message a button sat on) so replace_original / delete_original act on it."""
        base = self.base
        with self._ws.lock:
            channel_id = self._ws.find_channel(channel).id if channel else None
            key = secrets.token_hex(12)
            self._ws.response_urls[key] = {"channel": channel_id, "user": user, "message_ts": message_ts,
                                           "uses": 0, "max_uses": max_uses}
        kind = "actions" if message_ts else "commands"
        return f"{base}/hooks/{kind}/{self._ws.team_id}/{key}"

    def check_reply(self, body: dict) -> dict | None:
        """Judge a message this server never sees, such as a command's ack body, as Slack would: None when it
        would be accepted, else Slack's error answer (`invalid_blocks` with its explanation, ...)."""
        try:
            if "blocks" in body:
                check_blocks(body["blocks"], max_total_text=self._ws.max_block_text)
        except SlackError as error:
            return error.body()
        warning = truncation_warning(Params(body))
        return {"ok": True, **warning} if warning else None


def _new_channel(ws: Workspace, name: str, members, is_private: bool, bot_member: bool, topic: str | None,
                 channel_id: str | None) -> str:
    people = ([ws.bot_user_id] if bot_member else []) + list(members)
    created = ws.new_channel(name, creator=people[0] if people else "USLACKBOT", members=people,
                             channel_id=channel_id, is_private=is_private)
    if topic:
        created.topic = {"value": topic, "creator": created.creator, "last_set": created.created}
    return created.id


def _add_members(ws: Workspace, channel: Channel, members, is_private: bool) -> str:
    """add_channel on an existing name: a setup step that states who must be there, not a duplicate."""
    if channel.is_private != is_private:
        raise ValueError(f"#{channel.name} already exists and is {'' if channel.is_private else 'not '}private")
    for user_id in members:
        ws.join(channel, user_id)
    return channel.id


def _known_user(ws: Workspace, user_id: str) -> str:
    if user_id not in ws.users:
        raise KeyError(f"no user {user_id!r} in the local workspace: add_user() first")
    return user_id

