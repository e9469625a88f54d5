"""HTTP mode: one ASGI app with Slack's endpoint, health, metrics and webhooks, served by uvicorn.

    POST /slack/events   commands, events and interactivity (signed; verified by Bolt)
    GET  /healthz        200 only while Redis answers (and the queue's background loops make progress)
    GET  /metrics        Prometheus text format
    plus whatever routes features add (PagerDuty and Alertmanager webhooks).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from slack_bolt.adapter.asgi.async_handler import AsyncSlackRequestHandler

from bot.runtime import Runtime

log = logging.getLogger(__name__)

Response = tuple[int, dict[str, str], bytes]
Route = Callable[[dict, bytes], Awaitable[Response]]
MAX_BODY = 1_000_000


def json_response(status: int, data: Any) -> Response:
    return status, {"content-type": "application/json"}, json.dumps(data).encode()


async def health(rt: Runtime) -> Response:
    try:
        await asyncio.wait_for(rt.redis.ping(), timeout=2)
    except Exception as exc:
        return json_response(503, {"ok": False, "redis": f"unreachable ({type(exc).__name__})"})
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

    async def asgi(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await slack(scope, receive, send)
            return
        route = table.get((scope["method"], scope["path"]))
        if route is None:
            await _slack_guarded(slack, scope, receive, send)  # /slack/events, or Bolt's own 404
            return
        body = await _read_body(receive)
        status, headers, payload = await route(scope, body)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
        await send({"type": "http.response.body", "body": payload})

    return asgi


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
    except Exception:
        log.exception("the Slack request could not be handled (answered 400)")
        if not started:
            await _send_plain(send, 400, b"malformed request")


async def _send_plain(send: Callable, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Callable) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise ValueError("request body too large")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


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
