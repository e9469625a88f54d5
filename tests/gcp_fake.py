"""A local Google Cloud: the few REST endpoints the GCP checks call, plus an OAuth token endpoint.

One real HTTP server on loopback, pointed at through `GCP_API_ENDPOINT`. A test scripts answers per (method, path)
with `fake.answer(...)`; bodies are the response shapes of the REST references (/work/shared/reference/
gcp-checks.md). The token endpoint takes google-auth's JWT-bearer grant, verifies the assertion's RS256 signature
against the fake service-account key's public half, and mints an access token; every API request must carry one.
A request whose path matches no operation of `checks.gcp.api.OPERATIONS` is recorded in `unknown`, so a test can
prove every call the checks make is a documented operation (and so a documented permission).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from checks.gcp.api import OPERATIONS

Answer = tuple[int, Any] | Callable[[dict[str, list[str]], Any], tuple[int, Any]]
SA_EMAIL = "chatops-bot@shop-prod.iam.gserviceaccount.com"


def _template_regex(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[a-z]+\\\}", "[^/]+", re.escape(path)) + "$")


_TEMPLATES = [(op.method, _template_regex(op.path), name) for name, op in OPERATIONS.items()]


def operation_of(method: str, path: str) -> str | None:
    return next((name for m, rx, name in _TEMPLATES if m == method and rx.match(path)), None)


@dataclass
class Hit:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    operation: str | None


@dataclass
class FakeGcp:
    key: rsa.RSAPrivateKey
    answers: dict[tuple[str, str], Answer] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    token_requests: int = 0
    unknown: list[str] = field(default_factory=list)
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, method: str, path: str, answer: Answer) -> None:
        """Answer requests for exactly `path`, or for every path under it when it ends with "/"."""
        self.answers[(method, path)] = answer

    def ops(self) -> list[str]:
        return [h.operation or "?" for h in self.hits]

    def key_file(self, directory: Path) -> Path:
        pem = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
        path = directory / "sa.json"
        path.write_text(json.dumps({
            "type": "service_account", "project_id": "shop-prod", "private_key_id": "k1", "private_key": pem,
            "client_email": SA_EMAIL, "client_id": "1", "token_uri": f"{self.url}/token",
        }))
        return path

    # --- what the handler calls ------------------------------------------------------------------------------

    def mint(self, form: dict[str, list[str]]) -> tuple[int, Any]:
        assertion = form.get("assertion", [""])[0]
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"] or not self._signed(assertion):
            return 400, {"error": "invalid_grant", "error_description": "bad assertion"}
        token = f"ya29.local-{secrets.token_hex(8)}"
        with self.lock:
            self.tokens.add(token)
            self.token_requests += 1
        return 200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}

    def _signed(self, jwt: str) -> bool:
        try:
            head, payload, signature = jwt.split(".")
            self.key.public_key().verify(_unb64(signature), f"{head}.{payload}".encode(), padding.PKCS1v15(),
                                         hashes.SHA256())
        except Exception:
            return False
        claims = json.loads(_unb64(payload))
        return claims.get("iss") == SA_EMAIL and "cloud-platform" in claims.get("scope", "")

    def serve(self, method: str, path: str, query: dict[str, list[str]], body: Any, auth: str) -> tuple[int, Any]:
        operation = operation_of(method, path)
        with self.lock:
            self.hits.append(Hit(method, path, query, body, operation))
            if operation is None:
                self.unknown.append(f"{method} {path}")
        if auth.removeprefix("Bearer ") not in self.tokens:
            return 401, {"error": {"code": 401, "message": "Request had invalid authentication credentials.",
                                   "status": "UNAUTHENTICATED"}}
        answer = self.answers.get((method, path)) or next(
            (a for (m, p), a in self.answers.items() if m == method and p.endswith("/") and path.startswith(p)), None)
        if answer is None:
            return 404, {"error": {"code": 404, "message": f"{path} not found", "status": "NOT_FOUND"}}
        return answer(query, body) if callable(answer) else answer


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _handler(fake: FakeGcp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode() if payload is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if parts.path == "/token":
                self._reply(*fake.mint(parse_qs(raw.decode())))
                return
            body: Any = raw
            if self.headers.get("Content-Type", "").startswith("application/json") and raw:
                body = json.loads(raw)
            query: dict[str, list[str]] = {}
            for key, value in parse_qsl(parts.query):
                query.setdefault(key, []).append(value)
            self._reply(*fake.serve(self.command, parts.path, query, body, self.headers.get("Authorization", "")))

        do_GET = do_POST = do_DELETE = _handle  # noqa: N815 (http.server's naming)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return Handler


@contextmanager
def fake_gcp() -> Iterator[FakeGcp]:
    fake = FakeGcp(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
