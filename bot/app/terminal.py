"""The terminal chat: the whole bot without Slack credentials, like Hubot's shell adapter.

A local Slack Web API (bot/slack/local/) stands in for Slack; what you type is turned into the requests Slack
would send — signed slash commands, button clicks, message events — and dispatched to the same Bolt app, the
same queue and the same workers as production. Whatever the bot posts is shown as a chat client would show it
(terminal_render.py); log lines go to <data dir>/chatops.log (and to stderr with `chatops run --verbose`).

    hello there            a message in the current channel
    /reply text            a reply in the thread of the bot's latest message
    /click N               press button N of the latest message that has buttons
    /channel NAME          switch to (or create) a channel
    /help, /quit
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlencode

import yaml
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

from bot.app import terminal_render as render
from bot.settings import Settings
from checks.schema import HttpUrl, Secret, replace

log = logging.getLogger(__name__)
LOCAL_COMMANDS = ("/help", "/channel", "/click", "/reply", "/quit")
USER_ID, USER_NAME = "ULOCAL", "you"
TEAM_ID = "T0LOCAL"  # the local Slack's default team
MANIFEST = Path(__file__).resolve().parents[2] / "slack-app-manifest.yml"
QUIET_BETWEEN_LINES_S = 0.4  # piped input: let the last line's work show before the next line is typed


def bot_commands() -> dict[str, str]:
    """The bot's slash commands and their one-line descriptions, from the Slack app manifest (their one home)."""
    try:
        manifest = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}  # an installed package without the manifest: the terminal's own commands still work
    commands = (manifest.get("features") or {}).get("slash_commands") or []
    return {c["command"]: c.get("description", "") for c in commands if c.get("command")}


def help_text() -> str:
    bot = [f"    {name:<22} {about}" for name, about in bot_commands().items()]
    own = (__doc__ or "").split("\n\n", 2)[2].rstrip()
    return "\n".join(["  The bot's commands:", *bot, "  The terminal's own:", own])


def unknown_command_text(command: str) -> str:
    known = ", ".join([*bot_commands(), *LOCAL_COMMANDS])
    return f"{command} is not a command here. Known: {known}."


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80] or "document"


class TerminalView:
    """Prints what happens in the local workspace, as a chat client would show it."""

    def __init__(self, local: Any, out: TextIO, *, data_dir: Path, ansi: bool = False) -> None:
        self.local = local
        self.out = out
        self.data_dir = data_dir
        self.style = render.Style(ansi)
        self.names = render.Names(user=self.user_name, channel=self.channel_name)
        self.lock = threading.Lock()
        self.buttons: list[dict] = []  # of the latest message that has any
        self.last_parent: tuple[str, str] | None = None  # (channel, ts) of the bot's latest top-level message
        self.shown: dict[tuple[str, str], str] = {}  # what each message looked like when last printed
        self.prompt: Callable[[], str] | None = None  # set while the person is at an input prompt
        self.on_joined: Callable[[str], None] = lambda _channel: None
        self._pending_buttons: list[dict] = []  # of the message being shown

    def say(self, text: str) -> None:
        with self.lock:
            if self.prompt is None:
                print(text, file=self.out, flush=True)
                return
            # Bot output arrives while the person types: redraw the prompt and what they typed below it.
            print(f"\r\x1b[K{text}", file=self.out)
            print(self.prompt() + _typed_so_far(), end="", file=self.out, flush=True)

    def user_name(self, user: str) -> str | None:
        return next((u.get("name") for u in self.local.users() if u.get("id") == user), None)

    def channel_name(self, channel: str) -> str | None:
        with contextlib.suppress(KeyError):
            return self.local.channel(channel).get("name")
        return None

    def where(self, channel: str) -> str:
        return "#" + (self.channel_name(channel) or channel)

    def text(self, data: dict) -> str:
        return render.blocks(data.get("blocks"), data.get("text", ""), self.names, self.style)

    def on_change(self, kind: str, data: dict) -> None:
        """Called by the local Slack (from its server thread) on every state change."""
        if kind in ("message", "update"):
            self._show_message(kind, data)
        elif kind == "ephemeral":
            self.aside(self.text(data))
        elif kind == "member_joined" and data.get("user") == USER_ID:
            self.on_joined(data.get("channel", ""))
        elif kind == "topic":
            self.say(self.style.apply("dim", f"* topic of {self.where(data.get('channel', ''))}: "
                                              f"{render.mrkdwn(data.get('topic', ''), self.names)}"))
        elif kind in ("canvas", "file"):
            self._save_document(kind, data)

    def aside(self, text: str) -> None:
        """What only the person sees (ephemeral messages, command answers)."""
        self.say(_indent(f"{self.style.apply('dim', '(only visible to you)')} {text}", "  ", first="  "))

    def _show_message(self, kind: str, data: dict) -> None:
        if data.get("user") == USER_ID:
            return  # the person typed it; no need to echo
        key, text = (data.get("channel", ""), data.get("ts", "")), self.text(data)
        if self.shown.get(key) == text:
            return  # a chat.update that changed nothing a reader would see
        before = self.shown.get(key)
        self.shown[key] = text
        self._remember_buttons(data)
        shown = text if before is None else changed_lines(before, text)
        thread = data.get("thread_ts")
        if thread and thread != data.get("ts"):
            self.say(_indent(f"↳ {'(updated) ' if before else ''}{shown}", "      ", first="    "))
        else:
            if before is None and data.get("channel", "").startswith(("C", "G")):
                self.last_parent = key
            self.say(f"{self._header(data, before is not None)}\n{_indent(shown, '  ')}")
        if shown == text:
            self._show_buttons()

    def _header(self, data: dict, updated: bool) -> str:
        stamp = time.strftime("%H:%M", time.localtime(float(data.get("ts") or time.time())))
        who = self.style.apply("bold", "chatops")
        return f"{self.where(data.get('channel', ''))} · {who} · {stamp}{' (updated)' if updated else ''}"

    def _remember_buttons(self, data: dict) -> None:
        found = [e for b in data.get("blocks") or [] if b.get("type") == "actions" for e in b.get("elements", [])]
        self._pending_buttons = found
        if found:
            self.buttons = [{**e, "_channel": data.get("channel"), "_ts": data.get("ts")} for e in found]

    def _show_buttons(self) -> None:
        if self._pending_buttons:
            labels = "  ".join(f"[{n}] {render.blocks(None, b.get('text', {}).get('text', ''))}"
                               for n, b in enumerate(self._pending_buttons, 1))
            self.say(f"  {labels}   {self.style.apply('dim', '(type /click N)')}")

    def _save_document(self, kind: str, data: dict) -> None:
        """A published postmortem (a canvas, or a Markdown file) saved where the person can open it."""
        if kind == "canvas" and data.get("action") != "deleted":
            title, content = data.get("title") or "canvas", data.get("markdown", "")
        elif kind == "file" and str((data.get("file") or {}).get("name", "")).endswith(".md"):
            title, content = data["file"]["name"].removesuffix(".md"), (data.get("content") or b"").decode()
        else:
            return
        path = self.data_dir / "documents" / f"{slug(title)}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        self.say(f"* {title} — saved to {path}")


def changed_lines(before: str, after: str) -> str:
    """An edited message as a reader needs it: whole when most of it changed (a progress line that became the
    verdict), else its first line (which message) and the lines that are new."""
    old, new = set(before.splitlines()), after.splitlines()
    fresh = [line for line in new[1:] if line not in old]
    if not new or new[0] not in old or len(fresh) * 2 > len(new):
        return after
    return "\n".join([new[0], *fresh])


def _indent(text: str, prefix: str, *, first: str | None = None) -> str:
    lines = text.splitlines() or [""]
    return "\n".join([(prefix if first is None else first) + lines[0], *(prefix + line for line in lines[1:])])


def _typed_so_far() -> str:
    try:
        import readline
    except ImportError:
        return ""
    return readline.get_line_buffer()


class TerminalChat:
    """Turns typed lines into signed Slack requests and dispatches them to the Bolt app."""

    def __init__(self, app: Any, local: Any, view: TerminalView, secret: str, queue: Any = None) -> None:
        self.app = app
        self.queue = queue
        self.local = local
        self.view = view
        self.signer = SignatureVerifier(secret)
        self.channel = local.add_channel("general", members=[USER_ID])
        view.on_joined = self.follow

    def prompt(self) -> str:
        return f"{self.view.where(self.channel)} > "

    async def dispatch(self, body: str, content_type: str) -> tuple[int, str]:
        stamp = str(int(time.time()))
        headers = {"content-type": [content_type], "x-slack-request-timestamp": [stamp],
                   "x-slack-signature": [self.signer.generate_signature(timestamp=stamp, body=body)]}
        response = await self.app.async_dispatch(AsyncBoltRequest(body=body, headers=headers))
        return response.status, response.body or ""

    async def slash(self, command: str, text: str) -> None:
        body = urlencode({
            "token": "local", "team_id": TEAM_ID, "channel_id": self.channel,
            "channel_name": self.view.channel_name(self.channel) or "", "user_id": USER_ID,
            "user_name": USER_NAME, "command": command, "text": text, "response_url": self.local.response_url(),
            "trigger_id": uuid.uuid4().hex, "api_app_id": "ALOCAL",
        })
        status, answer = await self.dispatch(body, "application/x-www-form-urlencoded")
        if status == 404:
            self.view.aside(unknown_command_text(command))
        else:
            self._show_ack(status, answer)

    async def click(self, number: int) -> None:
        if not 1 <= number <= len(self.view.buttons):
            self.view.aside(f"no button {number}; the latest message has {len(self.view.buttons)}")
            return
        button = self.view.buttons[number - 1]
        payload = {
            "type": "block_actions", "team": {"id": TEAM_ID}, "api_app_id": "ALOCAL",
            "user": {"id": USER_ID, "name": USER_NAME}, "channel": {"id": button["_channel"]},
            "container": {"type": "message", "channel_id": button["_channel"], "message_ts": button["_ts"]},
            "message": {"ts": button["_ts"]}, "trigger_id": uuid.uuid4().hex,
            "response_url": self.local.response_url(),
            "actions": [{"type": "button", "action_id": button.get("action_id"), "value": button.get("value", ""),
                         "block_id": "b", "action_ts": str(time.time())}],
        }
        status, answer = await self.dispatch(urlencode({"payload": json.dumps(payload)}),
                                             "application/x-www-form-urlencoded")
        self._show_ack(status, answer)

    async def message(self, text: str, thread_ts: str | None = None) -> None:
        ts = self.local.post_user_message(self.channel, USER_ID, text, thread_ts=thread_ts)
        event = {"type": "message", "channel": self.channel, "user": USER_ID, "text": text, "ts": ts,
                 "channel_type": "channel", **({"thread_ts": thread_ts} if thread_ts else {})}
        envelope = {"type": "event_callback", "team_id": TEAM_ID, "api_app_id": "ALOCAL",
                    "event_id": f"Ev{uuid.uuid4().hex[:10]}", "event_time": int(time.time()), "event": event}
        await self.dispatch(json.dumps(envelope), "application/json")

    def _show_ack(self, status: int, answer: str) -> None:
        if status >= 400:
            self.view.aside(f"that did not go through (HTTP {status}); {LOG_HINT}")
            return
        try:
            data = json.loads(answer) if answer else {}
        except ValueError:
            data = {"text": answer}
        text = self.view.text(data) if data else ""
        if text:
            self.view.aside(text)

    async def handle(self, line: str) -> bool:
        """Act on one typed line; False means quit."""
        line = line.strip()
        word, _, rest = line.partition(" ")
        if word in ("/quit", "/exit"):
            return False
        if word == "/help":
            self.view.say(help_text())
        elif word == "/channel":
            self.switch(rest.strip().lstrip("#") or "general")
        elif word == "/click":
            await self.click(int(rest) if rest.strip().isdigit() else 0)
        elif word == "/reply":
            await self.reply(rest)
        elif word.startswith("/"):
            await self.slash(word, rest)
        elif line:
            await self.message(line)
        return True

    async def reply(self, text: str) -> None:
        parent = self.view.last_parent
        if parent is None:
            self.view.aside("nothing to reply to yet")
        else:
            await self.message(text, thread_ts=parent[1])

    def switch(self, name: str) -> None:
        try:
            self.channel = self.local.channel(name)["id"]
        except KeyError:  # an unknown channel: creating it is what a person expects
            self.channel = self.local.add_channel(name, members=[USER_ID])
        self.view.say(f"* now in #{name}")

    def follow(self, channel: str) -> None:
        """The bot added the person to a channel (an incident's): the chat goes there, as Slack's client would."""
        if channel and channel != self.channel:
            self.channel = channel
            self.view.say(f"* you were added to {self.view.where(channel)} — now chatting there "
                          f"(/channel general to go back)")


LOG_HINT = "details are in the log file"


async def run_terminal(settings: Settings, *, stop: asyncio.Event, worker: bool = True, verbose: bool = False,
                       stdin: TextIO | None = None, out: TextIO | None = None) -> int:
    from bot.app.demo import demo_services, wants_demo

    log_file = settings.chatops_data_dir / "chatops.log"
    _log_to_file(settings, log_file, verbose)
    with contextlib.ExitStack() as stack:
        demo = wants_demo(settings)
        if demo:
            settings = stack.enter_context(demo_services(settings))
        return await _run_chat(settings, stop=stop, worker=worker, stdin=stdin or sys.stdin,
                               out=out or sys.stdout, greeting=_greeting(log_file, demo))


def _log_to_file(settings: Settings, log_file: Path, verbose: bool) -> None:
    from bot.logs import setup_logging

    setup_logging(settings.log_level, settings.log_format, settings.secrets(), log_file=log_file, stderr=verbose)


def _greeting(log_file: Path, demo: bool) -> Callable[[list[str]], str]:
    from bot.app.demo import DEMO_TRY

    def greeting(services: list[str]) -> str:
        tries = " or ".join(f"`{t}`" for t in DEMO_TRY) if demo else f"`/diagnose {services[0] if services else 'api'}`"
        return (f"chatops terminal chat — no Slack credentials, so this is a local workspace (logs: {log_file}).\n"
                f"You are @{USER_NAME} in #general. Services: {', '.join(services)}.\n"
                f"Try {tries}; /help lists every command.")

    return greeting


async def _run_chat(settings: Settings, *, stop: asyncio.Event, worker: bool, stdin: TextIO, out: TextIO,
                    greeting: Callable[[list[str]], str]) -> int:
    from bot.app.bolt import create_app
    from bot.app.features import create_full_runtime
    from bot.app.processes import redis_for, run_workers
    from bot.slack.local import LocalSlack

    token, secret = f"xoxb-local-{secrets.token_hex(8)}", secrets.token_hex(16)
    local = LocalSlack(bot_token=token).start()
    local.add_user(USER_ID, USER_NAME)
    settings = replace(settings, slack_api_url=HttpUrl.parse(local.url), slack_bot_token=Secret(token),
                       slack_signing_secret=Secret(secret))
    interactive = stdin.isatty() and out.isatty()
    view = TerminalView(local, out, data_dir=settings.chatops_data_dir, ansi=out.isatty())
    local.subscribe(view.on_change)
    try:
        async with redis_for(settings) as redis_url:
            rt = await create_full_runtime(settings, redis_url=redis_url)
            chat = TerminalChat(create_app(rt), local, view, secret, queue=rt.queue)
            view.say(render.mrkdwn(greeting(list(rt.services().services)), view.names, view.style))
            tasks = [asyncio.create_task(run_workers(rt, stop, settings.worker_concurrency))] if worker else []
            await _read_lines(chat, stdin, stop, interactive=interactive)
            stop.set()
            await asyncio.gather(*tasks)
            await rt.aclose()
    finally:
        local.stop()
    return 0


async def _read_lines(chat: TerminalChat, stdin: TextIO, stop: asyncio.Event, *, interactive: bool) -> None:
    while not stop.is_set():
        line = await _next_line(chat, stdin, stop, interactive)
        if line is None:
            return  # stop was requested; a pending readline thread ends with the process
        if line == "":  # end of input: let the worker finish what the last lines queued, then leave
            await _settle(chat, quiet_s=2.0)
            return
        try:
            if not await chat.handle(line):
                return
        except Exception as exc:  # a bad line must never end the session
            chat.view.aside(f"that did not work ({type(exc).__name__}); {LOG_HINT}")
            log.exception("terminal line failed")
        if not interactive:
            await _settle(chat, quiet_s=QUIET_BETWEEN_LINES_S)


async def _next_line(chat: TerminalChat, stdin: TextIO, stop: asyncio.Event, interactive: bool) -> str | None:
    """The next typed line ("" at end of input), read in a thread; None when stop is set first."""
    read = (lambda: _prompted(chat)) if interactive else stdin.readline
    reader = asyncio.create_task(asyncio.to_thread(read))
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    return reader.result() if reader in done else None


def _prompted(chat: TerminalChat) -> str:
    """input() with the channel as prompt (readline gives editing and history); "" at end of input."""
    chat.view.prompt = chat.prompt
    try:
        return input(chat.prompt()) + "\n"
    except EOFError:
        return ""
    finally:
        chat.view.prompt = None


async def _settle(chat: TerminalChat, *, quiet_s: float, timeout_s: float = 60.0) -> None:
    """Wait until the queue has had nothing ready or running for `quiet_s`, so what the line started shows before
    the next one. Delayed jobs (escalation timers hours away) do not count."""
    if chat.queue is not None:
        await chat.queue.wait_quiet(quiet_s=quiet_s, timeout_s=timeout_s, poll_s=0.1)
