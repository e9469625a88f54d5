"""The terminal chat's `demo` service: something real to diagnose out of the box, with no network.

When the user has no services file of their own, the terminal chat starts a tiny shop on 127.0.0.1 in this
process — `/health` answers 200, `/checkout` answers 502 since a (pretend) deploy, `/search` answers slowly — and
writes a services file under the data directory naming it `demo`, next to the documented example services.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from bot.settings import Settings, read_yaml_file
from checks.schema import replace

DEMO_SERVICE = "demo"
SLOW_S = 0.6
DEMO_TRY = (f"/diagnose {DEMO_SERVICE}", f"/incident Checkout down P1 {DEMO_SERVICE}")


class _Shop(BaseHTTPRequestHandler):
    server: _ShopServer

    def do_GET(self) -> None:
        if self.path == "/checkout":
            self._answer(502, f"bad gateway: checkout v2.4.1 (deployed {self.server.deployed_at}) is not answering\n")
        elif self.path == "/search":
            time.sleep(SLOW_S)
            self._answer(200, "ok, eventually\n")
        else:
            self._answer(200 if self.path == "/health" else 404, "ok\n")

    def _answer(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the chat's output is the conversation; requests are the demo's business


class _ShopServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Shop)
        self.deployed_at = time.strftime("%H:%M:%S")  # the pretend deploy that broke checkout: at start-up


def wants_demo(settings: Settings) -> bool:
    """Only when the user has no services file of their own: theirs always wins."""
    return settings.services_file is None and not Path("services.yml").exists()


@contextlib.contextmanager
def demo_services(settings: Settings) -> Iterator[Settings]:
    """Run the demo shop and yield settings whose services file has `demo` and the example services."""
    server = _ShopServer()
    threading.Thread(target=server.serve_forever, name="demo-shop", daemon=True).start()
    try:
        path = write_services(settings, f"http://127.0.0.1:{server.server_address[1]}")
        yield replace(settings, services_file=path)
    finally:
        server.shutdown()
        server.server_close()


def write_services(settings: Settings, base_url: str) -> Path:
    document = read_yaml_file(settings.resolved_services_file(), "services file") or {}
    services = {DEMO_SERVICE: demo_spec(base_url), **(document.get("services") or {})}
    path = settings.chatops_data_dir / "demo-services.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Written by the terminal chat at start-up: the demo shop's port changes every run.\n"
                    + yaml.safe_dump({"services": services}, sort_keys=False))
    return path


def demo_spec(base_url: str) -> dict[str, Any]:
    return {
        "description": "Demo shop the terminal chat runs on 127.0.0.1 (checkout broke with the last deploy)",
        "http": [
            {"url": f"{base_url}/health", "samples": 2},
            {"url": f"{base_url}/checkout", "samples": 2},
            {"url": f"{base_url}/search", "samples": 2, "latency_ms": int(SLOW_S * 1000 / 2)},
        ],
    }
