"""HTTP mode: one ASGI app with Slack's endpoint, health, metrics and webhooks, served by uvicorn.

    POST /slack/events   commands, events and interactivity (signed; verified by Bolt)
    GET  /healthz        200 only while Redis answers as a primary (and the queue's background loops progress)
    GET  /metrics        Prometheus text format
    plus whatever routes features add (PagerDuty acks; the alert sources: Alertmanager, SNS, Grafana, Datadog,
    generic — bot/alerts/sources.py).

Every body is bounded: Slack's route at SLACK_MAX_BODY (Slack's own payloads are a few KB, a large modal's
state some tens), the webhooks at WEBHOOK_MAX_BODY (an Alertmanager storm of thousands of alerts) unless a route sets its own
`max_body` (SNS: 1 MB); more is a 413,
said by Content-Length before a byte is read, or as soon as the stream passes the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from slack_bolt.adapter.asgi.async_handler import AsyncSlackRequestHandler

from bot.logs import Throttled
from bot.queue.readiness import redis_problem
from bot.runtime import Runtime

log = logging.getLogger(__name__)

Response = tuple[int, dict[str, str], bytes]
Route = Callable[[dict, bytes], Awaitable[Response]]
SLACK_MAX_BODY = 512 * 1024
WEBHOOK_MAX_BODY = 32 * 1024 * 1024


class BodyTooLarge(Exception):
    pass


_unparsed = Throttled(log)  # per process: unsigned garbage must not flood the log


def json_response(status: int, data: Any) -> Response:
    return status, {"content-type": "application/json"}, json.dumps(data).encode()


async def health(rt: Runtime) -> Response:
    try:
        not_primary = await asyncio.wait_for(redis_problem(rt.redis), timeout=2)
    except Exception as exc:
        return json_response(503, {"ok": False, "redis": f"unreachable ({type(exc).__name__})"})
    if not_primary:
        _log_problem(rt, not_primary)
        return json_response(503, {"ok": False, "redis": not_primary})
    for check in rt.hooks.health_checks:
        problem = check()
        if problem:
            _log_problem(rt, problem)
            return json_response(503, {"ok": False, "problem": problem})
    rt.health_problem = None
    return json_response(200, {"ok": True})


def _log_problem(rt: Runtime, problem: str) -> None:
    """Once when a problem appears or changes, then once a minute: probes ask every few seconds."""
    last, logged_at = rt.health_problem or ("", 0.0)
    if problem != last or time.monotonic() - logged_at >= 60:
        log.error("health check failing: %s", problem)
        rt.health_problem = (problem, time.monotonic())


def create_asgi(app: Any, rt: Runtime, routes: dict[tuple[str, str], Route] | None = None) -> Callable:
    """The bot's HTTP surface. With `app=None` (a worker-only process) it serves health and metrics only."""
    slack = AsyncSlackRequestHandler(app, path="/slack/events") if app is not None else _not_found
    table: dict[tuple[str, str], Route] = {("GET", "/healthz"): lambda scope, body: health(rt)}
    table.update(rt.hooks.http_routes)
    table.update(routes or {})  # the caller's word is last (an HTTP child hands /healthz to its parent)
    rejected = Throttled(log)
    if ("GET", "/metrics") in table and rt.settings.metrics_token:
        table[("GET", "/metrics")] = guarded(table[("GET", "/metrics")],
                                             rt.settings.metrics_token.get_secret_value())

    async def asgi(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await slack(scope, receive, send)
            return
        route = table.get((scope["method"], scope["path"]))
        try:
            if route is None:  # /slack/events, or Bolt's own 404
                await _slack_guarded(slack, scope, bounded(scope, receive, SLACK_MAX_BODY), send)
                return
            body = await _read_body(scope, receive, getattr(route, "max_body", WEBHOOK_MAX_BODY))
            status, headers, payload = await _answer(route, scope, body)
            if status in (401, 403):  # a guessed or wrong secret: worth a line, never the body
                rejected.warning("rejected %s %s: %d (%d bytes)", scope["method"], scope["path"], status, len(body))
        except BodyTooLarge as exc:
            rejected.warning("rejected %s %s: body too large (%s)", scope["method"], scope["path"], exc)
            status, headers, payload = json_response(413, {"error": f"request body too large ({exc})"})
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
        await send({"type": "http.response.body", "body": payload})

    return asgi


async def _answer(route: Route, scope: dict, body: bytes) -> Response:
    """A route that fails unexpectedly answers a plain 500 with a reference; the traceback stays in the log."""
    try:
        return await route(scope, body)
    except Exception:
        ref = uuid.uuid4().hex[:8]
        log.exception("%s %s failed (ref %s)", scope["method"], scope["path"], ref)
        return json_response(500, {"error": f"internal error (ref {ref})"})


def guarded(route: Route, token: str) -> Route:
    """METRICS_TOKEN: /metrics only for `Authorization: Bearer <token>` (compared in constant time)."""
    expected = f"bearer {token}".encode()

    async def guarded_route(scope: dict, body: bytes) -> Response:
        offered = dict(scope.get("headers") or []).get(b"authorization", b"")
        if not hmac.compare_digest(offered[:7].lower() + offered[7:], expected):
            return json_response(401, {"error": "/metrics needs Authorization: Bearer <METRICS_TOKEN>"})
        return await route(scope, body)

    return guarded_route


async def _not_found(scope: dict, receive: Callable, send: Callable) -> None:
    if scope["type"] == "http":
        await _send_plain(send, 404, b"not found")


async def _slack_guarded(slack: Callable, scope: dict, receive: Callable, send: Callable) -> None:
    """Bolt, with two holes closed: a non-numeric X-Slack-Request-Timestamp made its signature check raise, and a
    payload it cannot dispatch (a signed block_actions with no actions) escaped as a 500. Both are now answered
    like any request Slack did not send or that we cannot act on, and logged."""
    headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    stamp = headers.get("x-slack-request-timestamp")
    if scope.get("method") == "POST" and stamp is not None and not stamp.strip().isdigit():
        await _send_plain(send, 401, b"invalid request")
        return
    started = False

    async def tracking_send(message: dict) -> None:
        nonlocal started
        started = started or message.get("type") == "http.response.start"
        await send(message)

    try:
        await slack(scope, receive, tracking_send)
    except BodyTooLarge:
        if started:
            return
        raise
    except Exception as exc:  # a body Bolt cannot parse, before its signature is even checked: no traceback
        _unparsed.warning("could not handle a Slack request (%s; answered 400)", type(exc).__name__)
        if not started:
            await _send_plain(send, 400, b"malformed request")


async def _send_plain(send: Callable, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body", "body": body})


def declared_length(scope: dict) -> int:
    for key, value in scope.get("headers") or []:
        if key.lower() == b"content-length" and value.strip().isdigit():
            return int(value)
    return 0


def bounded(scope: dict, receive: Callable, limit: int) -> Callable:
    """`receive`, raising BodyTooLarge once the body is over `limit`: by Content-Length before reading, or as the
    chunks add up (a chunked upload says no length)."""
    received = 0

    async def receive_bounded() -> dict:
        nonlocal received
        if declared_length(scope) > limit:
            raise BodyTooLarge(f"{declared_length(scope)} bytes; the limit is {limit}")
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise BodyTooLarge(f"over {limit} bytes")
        return message

    return receive_bounded


async def _read_body(scope: dict, receive: Callable, limit: int = WEBHOOK_MAX_BODY) -> bytes:
    """One buffer, grown in place: a 10 MB alert storm is held once, not as a list of chunks and their join."""
    receive = bounded(scope, receive, limit)
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body  # type: ignore[return-value]  # bytes-like: every route reads it as bytes


def listening_socket(host: str, port: int) -> socket.socket:
    """A listening socket with SO_REUSEPORT, so several `chatops run` processes (HTTP_WORKERS) share one port and
    the kernel spreads connections across them — acks are CPU-bound, and this is how they use every core."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def serve(asgi: Callable, *, host: str, port: int | None, stop: asyncio.Event,
                extra_sockets: Sequence[socket.socket] = (), on_ready: Callable[[], None] | None = None) -> None:
    """Run uvicorn until `stop` is set; uvicorn's own signal handlers stay off (the CLI owns signals).
    `extra_sockets` are served too (the parent's private socket for its HTTP children), and only they when
    `port` is None; `on_ready` is called once uvicorn accepts connections."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # the CLI owns SIGTERM/SIGINT: it stops the worker and this server in order

    config = uvicorn.Config(asgi, host=host, port=port or 0, log_config=None, lifespan="off", access_log=False)
    server = Server(config)
    public = [listening_socket(host, port)] if port is not None else []
    task = asyncio.create_task(server.serve(sockets=[*public, *extra_sockets]))
    if on_ready is not None:
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            on_ready()
    await stop.wait()
    server.should_exit = True
    await task
