"""What each URL on the emulator does: Web API methods under /api/, upload URLs, response_urls, file downloads."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from urllib.parse import parse_qsl

from bot.slack.local.faults import Faults
from bot.slack.local.methods import all_methods
from bot.slack.local.methods.chat import response_url_post
from bot.slack.local.methods.content import receive_upload
from bot.slack.local.model import Call, Scripted, SlackError
from bot.slack.local.params import Params, bearer_token, parse_request
from bot.slack.local.rate_limits import RateLimits

APP_TOKEN_METHODS = {"apps.connections.open"}
from bot.slack.local.server import HttpReply, HttpRequest
from bot.slack.local.workspace import Workspace

API_PREFIX = "/api/"
UPLOAD_PREFIX = "/upload/v1/"
HOOK_PREFIX = "/hooks/"
FILES_PREFIX = "/files/"

log = logging.getLogger(__name__)


class Router:
    def __init__(self, ws: Workspace, faults: Faults, limits: RateLimits, *, bot_token: str | None,
                 record: Callable[[Call], None], after: Callable[[], None]) -> None:
        self._ws = ws
        self._faults = faults
        self._limits = limits
        self._bot_token = bot_token
        self._record = record
        self._after = after  # delivers queued events to subscribers, outside the state lock
        self._methods = all_methods()

    def __call__(self, request: HttpRequest) -> HttpReply:
        path = request.path
        if path.startswith(API_PREFIX):
            route, name = self._api, path[len(API_PREFIX):]
        elif path.startswith(UPLOAD_PREFIX):
            route, name = self._upload, "upload"
        elif path.startswith(HOOK_PREFIX):
            route, name = self._hook, "response_url"
        elif path.startswith(FILES_PREFIX) and request.verb == "GET":
            return self._download(request)
        else:
            return HttpReply.text(404, "not found")
        return self._recorded(name, request, route)

    def _recorded(self, name: str, request: HttpRequest, route: Callable) -> HttpReply:
        """Record the call on arrival, let a scripted fault or Slack's rate limit pre-empt it, answer, then announce
        changes."""
        try:
            params, problem = self._params(name, request), None
        except SlackError as error:
            params, problem = {}, error
        call = Call(name, params, dict(request.headers), time.time())
        self._record(call)
        scripted = self._faults.take(name, storm=route == self._api)
        if scripted is None and route == self._api and problem is None:
            scripted = self._limits.take(name, params)
        reply = _scripted_reply(scripted) if scripted else None
        if reply is None:
            reply = self._answer(route, request, params, problem)
        call.status, call.response = reply.status, reply.data
        self._after()
        return reply

    def _answer(self, route: Callable, request: HttpRequest, params: dict, problem: SlackError | None) -> HttpReply:
        if problem is not None:
            return HttpReply.json(200 if route == self._api else 400, problem.body())  # hooks fail out of band
        try:
            return route(request, params)
        except Exception as exc:  # an emulator bug: make it visible in the call record and to the client
            log.exception("local slack crashed on %s", request.path)
            return HttpReply.json(500, {"ok": False, "error": f"local_slack_crashed: {exc!r}"})

    def _params(self, name: str, request: HttpRequest) -> dict:
        if name == "upload":
            return {"key": request.path[len(UPLOAD_PREFIX):], "size": len(request.body)}
        if name == "response_url":
            return _hook_payload(request)
        return parse_request(request.query, request.body, request.header("Content-Type"))

    def _api(self, request: HttpRequest, params: dict) -> HttpReply:
        method = request.path[len(API_PREFIX):]
        handler = self._methods.get(method)
        if handler is None:
            return HttpReply.json(200, {"ok": False, "error": "unknown_method", "req_method": method})
        try:
            self._check_token(request.headers, params, app_level=method in APP_TOKEN_METHODS)
            with self._ws.lock:
                return HttpReply.json(200, {"ok": True, **handler(self._ws, Params(params))})
        except SlackError as error:
            return HttpReply.json(200, error.body())

    def _check_token(self, headers: dict, params: dict, *, app_level: bool = False) -> None:
        token = bearer_token(headers, params)
        if app_level:  # apps.connections.open takes the app-level token (xapp-…), never the bot's
            if not token:
                raise SlackError("not_authed")
            if not token.startswith("xapp-"):
                raise SlackError("not_allowed_token_type")
            return
        if self._bot_token is None:
            return
        if not token:
            raise SlackError("not_authed")
        if token != self._bot_token:
            raise SlackError("invalid_auth")

    def _upload(self, request: HttpRequest, params: dict) -> HttpReply:
        with self._ws.lock:
            stored = receive_upload(self._ws, params["key"], request.body)
        if stored is None:
            return HttpReply.text(404, "not found")
        params["file_id"] = stored.id
        return HttpReply.text(200, f"OK - {len(request.body)}")

    def _hook(self, request: HttpRequest, payload: dict) -> HttpReply:
        key = request.path.rsplit("/", 1)[-1]
        with self._ws.lock:
            target = self._ws.response_urls.get(key)
            if target is None:
                return HttpReply.json(404, {"ok": False, "error": "expired_url"})
            if target["uses"] >= target["max_uses"]:
                return HttpReply.json(404, {"ok": False, "error": "used_url"})
            try:
                response_url_post(self._ws, target, payload)
            except SlackError as error:
                return HttpReply.json(400, error.body())
            target["uses"] += 1
        return HttpReply.json(200, {"ok": True})

    def _download(self, request: HttpRequest) -> HttpReply:
        """url_private: needs the bot token, like Slack's."""
        parts = request.path[len(FILES_PREFIX):].split("/")
        try:
            self._check_token(request.headers, {})
        except SlackError as error:
            return HttpReply.text(403, error.error)
        with self._ws.lock:
            stored = self._ws.files.get(parts[0])
            if stored is None or not stored.completed:
                return HttpReply.text(404, "file_not_found")
            view = self._ws.file_view(stored)
            return HttpReply(200, stored.content or b"", view["mimetype"])


def _hook_payload(request: HttpRequest) -> dict:
    """response_url takes JSON; a form body with `payload=<json>` is accepted too."""
    body = request.body.decode("utf-8", "replace")
    if request.header("Content-Type").startswith("application/x-www-form-urlencoded"):
        body = dict(parse_qsl(body)).get("payload", "{}")
    try:
        payload = json.loads(body or "{}")
    except ValueError:
        raise SlackError("invalid_payload") from None
    if not isinstance(payload, dict):
        raise SlackError("invalid_payload")
    return payload


def _scripted_reply(scripted: Scripted) -> HttpReply | None:
    """None when the script only delays: the call then goes on to its normal answer."""
    if scripted.delay:
        time.sleep(scripted.delay)
    if scripted.answers_normally:
        return None
    body = scripted.body
    if isinstance(body, dict):
        return HttpReply.json(scripted.status, body, dict(scripted.headers))
    text = body or ""
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else None
    except ValueError:
        data = None  # a deliberately broken body: sent as is
    content_type = "application/json; charset=utf-8" if data is not None else "text/html; charset=utf-8"
    return HttpReply(scripted.status, text.encode(), content_type, dict(scripted.headers), data)
