"""The HTTP plumbing: a threaded stdlib server on its own thread, handing each request to one function.

Threads rather than an event loop so that the code under test can be asyncio, sync, or another process,
and a scripted delay holds up one request without stalling the rest.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)


@dataclass
class HttpRequest:
    verb: str
    path: str
    query: str
    headers: dict
    body: bytes

    def header(self, name: str, default: str = "") -> str:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), default)


@dataclass
class HttpReply:
    status: int
    body: bytes
    content_type: str
    headers: dict = field(default_factory=dict)
    data: dict | None = None  # the JSON answered, kept for the call record

    @classmethod
    def json(cls, status: int, data: dict, headers: dict | None = None) -> HttpReply:
        return cls(status, json.dumps(data).encode(), "application/json; charset=utf-8", headers or {}, data)

    @classmethod
    def text(cls, status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> HttpReply:
        return cls(status, text.encode(), content_type)


Responder = Callable[[HttpRequest], HttpReply]


class LocalHttpServer(ThreadingHTTPServer):
    daemon_threads = True  # a client holding a keep-alive connection must not block stop()
    # socketserver listens with a backlog of 5: a burst of calls (slack_sdk opens a connection per call) would wait
    # for SYN retransmits (1 s) and measure the emulator, not the bot. Real Slack has no such queue.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], respond: Responder) -> None:
        super().__init__(address, _Handler)
        self.respond = respond

    def handle_error(self, request, client_address) -> None:
        log.debug("local slack: connection from %s ended badly", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as aiohttp and urllib clients expect from Slack
    server_version = "LocalSlack/1"
    timeout = 60  # an idle keep-alive connection gives its thread back eventually

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        request = HttpRequest(self.command, path, query, dict(self.headers.items()), self._body())
        try:
            reply = self.server.respond(request)
        except Exception as exc:  # an emulator bug must show up in the test, not hang the client
            log.exception("local slack crashed on %s %s", self.command, path)
            reply = HttpReply.json(500, {"ok": False, "error": f"local_slack_crashed: {exc!r}"})
        self.send_response(reply.status)
        for name, value in {**reply.headers, "Content-Type": reply.content_type,
                            "Content-Length": str(len(reply.body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._chunked_body()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _chunked_body(self) -> bytes:
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(chunks)

    def log_message(self, format: str, *args) -> None:
        log.debug("local slack: " + format, *args)
