"""The terminal chat: the whole bot without Slack credentials, like Hubot's shell adapter.

A local Slack Web API (bot/slack/local/) stands in for Slack; what you type is turned into the requests Slack
would send — signed slash commands, button clicks, message events — and dispatched to the same Bolt app, the
same queue and the same workers as production. Whatever the bot posts is printed as the channel and its threads
would show it.

    /diagnose api          any slash command the bot knows
    hello there            a message in the current channel
    /reply text            a reply in the thread of the bot's latest message
    /click N               press button N of the latest message that has buttons
    /channel NAME          switch to (or create) a channel
    /help, /quit
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import threading
import time
import uuid
from typing import Any, TextIO
from urllib.parse import urlencode

from pydantic import SecretStr
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

from bot.diagnosis.render.text import blocks_to_text
from bot.settings import Settings

LOCAL_COMMANDS = {"/help", "/quit", "/exit", "/channel", "/click", "/reply"}
USER_ID, USER_NAME = "ULOCAL", "you"
TEAM_ID = "T0LOCAL"  # the local Slack's default team


class TerminalView:
    """Prints what happens in the local workspace, as a chat client would show it."""

    def __init__(self, local: Any, out: TextIO) -> None:
        self.local = local
        self.out = out
        self.lock = threading.Lock()
        self.buttons: list[dict] = []  # of the latest message that has any
        self.last_parent: tuple[str, str] | None = None  # (channel, ts) of the bot's latest top-level message
        self.names: dict[str, str] = {}

    def say(self, text: str) -> None:
        with self.lock:
            print(text, file=self.out, flush=True)

    def channel_name(self, channel: str) -> str:
        return self.names.get(channel, channel)

    def on_change(self, kind: str, data: dict) -> None:
        """Called by the local Slack (from its server thread) on every state change."""
        if kind in ("message", "update"):
            self._show_message(kind, data)
        elif kind == "ephemeral":
            self.say(f"  (only visible to you) {blocks_to_text(data.get('blocks'), data.get('text', ''))}")
        elif kind == "channel_created":
            self.names[data.get("id", "")] = "#" + data.get("name", "")
            self.say(f"* channel #{data.get('name')} created")
        elif kind in ("topic", "pin_added", "member_joined", "canvas", "file", "reaction_added"):
            self.say(f"* {kind.replace('_', ' ')} in {self.channel_name(data.get('channel', ''))}: "
                     f"{data.get('topic') or data.get('title') or data.get('user') or data.get('name') or ''}")

    def _show_message(self, kind: str, data: dict) -> None:
        if data.get("user") == USER_ID:
            return  # the person typed it; no need to echo
        text = blocks_to_text(data.get("blocks"), data.get("text", ""))
        where = self.channel_name(data.get("channel", ""))
        stamp = time.strftime("%H:%M:%S", time.localtime(float(data.get("ts", time.time()))))
        buttons = [e for b in data.get("blocks") or [] if b.get("type") == "actions" for e in b.get("elements", [])]
        if buttons:
            self.buttons = [{**e, "_channel": data.get("channel"), "_ts": data.get("ts")} for e in buttons]
        thread = data.get("thread_ts")
        if kind == "update":
            self.say(f"{where} {stamp} [updated]\n{_indent(text, '  ')}")
        elif thread and thread != data.get("ts"):
            self.say(_indent(f"↳ {text}", "    "))
        else:
            if data.get("channel", "").startswith(("C", "G")):
                self.last_parent = (data["channel"], data["ts"])
            self.say(f"{where} {stamp} chatops\n{_indent(text, '  ')}")
        if buttons:
            self.say("  " + "  ".join(f"[{n}] {b.get('text', {}).get('text', '')}" for n, b in enumerate(buttons, 1))
                     + "   (type /click N)")


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines())


class TerminalChat:
    """Turns typed lines into signed Slack requests and dispatches them to the Bolt app."""

    def __init__(self, app: Any, local: Any, view: TerminalView, secret: str, queue: Any = None) -> None:
        self.app = app
        self.queue = queue
        self.local = local
        self.view = view
        self.signer = SignatureVerifier(secret)
        self.channel = local.add_channel("general", members=[USER_ID])
        view.names[self.channel] = "#general"

    async def dispatch(self, body: str, content_type: str) -> tuple[int, str]:
        stamp = str(int(time.time()))
        headers = {"content-type": [content_type], "x-slack-request-timestamp": [stamp],
                   "x-slack-signature": [self.signer.generate_signature(timestamp=stamp, body=body)]}
        response = await self.app.async_dispatch(AsyncBoltRequest(body=body, headers=headers))
        return response.status, response.body or ""

    async def slash(self, command: str, text: str) -> None:
        body = urlencode({
            "token": "local", "team_id": TEAM_ID, "channel_id": self.channel,
            "channel_name": self.view.channel_name(self.channel).lstrip("#"), "user_id": USER_ID,
            "user_name": USER_NAME, "command": command, "text": text, "response_url": self.local.response_url(),
            "trigger_id": uuid.uuid4().hex, "api_app_id": "ALOCAL",
        })
        status, answer = await self.dispatch(body, "application/x-www-form-urlencoded")
        self._show_ack(status, answer)

    async def click(self, number: int) -> None:
        if not 1 <= number <= len(self.view.buttons):
            self.view.say(f"  no button {number}; the latest message has {len(self.view.buttons)}")
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
            self.view.say(f"  (only visible to you) the app answered HTTP {status}")
            return
        if not answer:
            return
        try:
            data = json.loads(answer)
        except ValueError:
            data = {"text": answer}
        text = blocks_to_text(data.get("blocks"), data.get("text", ""))
        if text:
            self.view.say(f"  (only visible to you) {text}")

    async def handle(self, line: str) -> bool:
        """Act on one typed line; False means quit."""
        line = line.strip()
        if not line:
            return True
        word, _, rest = line.partition(" ")
        if word in ("/quit", "/exit"):
            return False
        if word == "/help":
            self.view.say(__doc__.split("\n\n", 2)[2] if __doc__ else "")
        elif word == "/channel":
            self.switch(rest.strip().lstrip("#") or "general")
        elif word == "/click":
            await self.click(int(rest) if rest.strip().isdigit() else 0)
        elif word == "/reply":
            parent = self.view.last_parent
            if parent is None:
                self.view.say("  nothing to reply to yet")
            else:
                await self.message(rest, thread_ts=parent[1])
        elif word.startswith("/"):
            await self.slash(word, rest)
        else:
            await self.message(line)
        return True

    def switch(self, name: str) -> None:
        try:
            self.channel = self.local.channel(name)["id"]
        except Exception:  # the local Slack raises for an unknown channel; creating it is what a person expects
            self.channel = self.local.add_channel(name, members=[USER_ID])
        self.view.names[self.channel] = f"#{name}"
        self.view.say(f"* now in #{name}")


async def run_terminal(settings: Settings, *, stop: asyncio.Event, worker: bool = True,
                       stdin: TextIO | None = None, out: TextIO | None = None) -> int:
    from bot.app.bolt import create_app
    from bot.app.features import create_full_runtime
    from bot.app.processes import redis_for, run_workers
    from bot.slack.local import LocalSlack

    out = out or sys.stdout
    token, secret = f"xoxb-local-{secrets.token_hex(8)}", secrets.token_hex(16)
    local = LocalSlack(bot_token=token).start()
    local.add_user(USER_ID, USER_NAME)
    settings = settings.model_copy(update={"slack_api_url": local.url, "slack_bot_token": SecretStr(token),
                                           "slack_signing_secret": SecretStr(secret)})
    view = TerminalView(local, out)
    local.subscribe(view.on_change)
    try:
        async with redis_for(settings) as redis_url:
            rt = await create_full_runtime(settings, redis_url=redis_url)
            rt.services()
            chat = TerminalChat(create_app(rt), local, view, secret, queue=rt.queue)
            names = ", ".join(sorted(rt.services().services))
            view.say(f"chatops terminal chat — no Slack credentials, so this is a local workspace.\n"
                     f"You are @{USER_NAME} in #general. Services: {names}. Try `/diagnose "
                     f"{next(iter(sorted(rt.services().services)), 'api')}`, `/incident help`, or /help.")
            tasks = [asyncio.create_task(run_workers(rt, stop, settings.worker_concurrency))] if worker else []
            await _read_lines(chat, stdin or sys.stdin, stop)
            stop.set()
            await asyncio.gather(*tasks)
            await rt.aclose()
    finally:
        local.stop()
    return 0


async def _read_lines(chat: TerminalChat, stdin: TextIO, stop: asyncio.Event) -> None:
    while not stop.is_set():
        reader = asyncio.create_task(asyncio.to_thread(stdin.readline))
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if reader not in done:
            return  # stop was requested; the pending readline thread ends with the process
        line = reader.result()
        if line == "":  # end of input: let the worker finish what the last lines queued, then leave
            await _drain(chat)
            return
        try:
            if not await chat.handle(line):
                return
        except Exception as exc:  # a bad line must never end the session
            chat.view.say(f"  (only visible to you) that did not work: {type(exc).__name__}")


async def _drain(chat: TerminalChat, timeout_s: float = 60.0, quiet_s: float = 2.0) -> None:
    """With piped input, wait until the queue has had nothing ready or running for `quiet_s`, so the transcript
    shows the results. Delayed jobs (escalation timers hours away) do not count."""
    if chat.queue is None:
        return
    await chat.queue.wait_quiet(quiet_s=quiet_s, timeout_s=timeout_s, poll_s=0.2)
