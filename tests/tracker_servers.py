"""Local GitHub Issues and Jira Cloud: real HTTP servers implementing the endpoints the bot uses, with the
payload shapes of the real APIs (the fields the bot reads and a few it does not), in memory.

    GitHub   POST /repos/{o}/{r}/issues, GET /repos/{o}/{r}/issues (state, labels, per_page, page),
             GET /repos/{o}/{r}/issues/{n}; Bearer token required
    Jira     POST /rest/api/3/issue, GET /rest/api/3/search/jql (project = "K" AND labels = "x"),
             GET /rest/api/3/issue/{key}; basic auth required

`on_create(issue)` runs after an issue is stored and before the answer is sent (to kill a worker in that
window); `fail_creates_after_storing` answers 502 to that many creates that did store the issue.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


class _Fake(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _handler(self))
        self.lock = threading.Lock()
        self.issues: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.on_create: Callable[[dict[str, Any]], None] | None = None
        self.fail_creates_after_storing = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def creates(self) -> int:
        return sum(1 for method, path in self.requests if method == "POST")

    def answer(self, method: str, path: str, query: dict[str, list[str]], body: Any,
               headers: Any) -> tuple[int, Any]:
        raise NotImplementedError

    def stored(self, issue: dict[str, Any]) -> tuple[int, Any] | None:
        """After a create stored `issue`: the hook, and maybe a 502 although it was stored."""
        if self.on_create is not None:
            self.on_create(issue)
        if self.fail_creates_after_storing > 0:
            self.fail_creates_after_storing -= 1
            return 502, {"message": "Server Error"}
        return None


class FakeGitHub(_Fake):
    def __init__(self, repo: str = "acme/ops", token: str = "ghp_test") -> None:
        super().__init__()
        self.repo, self.token = repo, token

    def close(self, number: int) -> None:
        with self.lock:
            self.issues[number - 1]["state"] = "closed"

    def answer(self, method: str, path: str, query: dict[str, list[str]], body: Any,
               headers: Any) -> tuple[int, Any]:
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"message": "Bad credentials"}
        base = f"/repos/{self.repo}/issues"
        if method == "POST" and path == base:
            with self.lock:
                number = len(self.issues) + 1
                issue = {"id": 1000 + number, "number": number, "state": "open", "title": body["title"],
                         "body": body.get("body"), "labels": [{"name": n} for n in body.get("labels") or []],
                         "html_url": f"https://github.com/{self.repo}/issues/{number}",
                         "url": f"{self.url}/repos/{self.repo}/issues/{number}", "user": {"login": "chatops-bot"}}
                self.issues.append(issue)
            return self.stored(issue) or (201, issue)
        if method == "GET" and path == base:
            return 200, self._list(query)
        match = re.fullmatch(rf"{base}/(\d+)", path)
        if method == "GET" and match and int(match.group(1)) <= len(self.issues):
            return 200, self.issues[int(match.group(1)) - 1]
        return 404, {"message": "Not Found"}

    def _list(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        state = query.get("state", ["open"])[0]
        wanted = set(query.get("labels", [""])[0].split(",")) - {""}
        per_page, page = int(query.get("per_page", ["30"])[0]), int(query.get("page", ["1"])[0])
        with self.lock:
            found = [i for i in reversed(self.issues) if (state == "all" or i["state"] == state)
                     and wanted <= {label["name"] for label in i["labels"]}]
        return found[(page - 1) * per_page: page * per_page]


class FakeJira(_Fake):
    def __init__(self, project: str = "OPS", user: str = "bot@example.com", token: str = "jira-token") -> None:
        super().__init__()
        self.project, self.auth = project, "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()

    def resolve(self, key: str) -> None:
        with self.lock:
            issue = next(i for i in self.issues if i["key"] == key)
            issue["fields"]["status"] = {"name": "Done", "statusCategory": {"key": "done", "name": "Done"}}

    def answer(self, method: str, path: str, query: dict[str, list[str]], body: Any,
               headers: Any) -> tuple[int, Any]:
        if headers.get("Authorization") != self.auth:
            return 401, {"errorMessages": ["You are not authenticated."]}
        if method == "POST" and path == "/rest/api/3/issue":
            fields = body["fields"]
            if fields["project"]["key"] != self.project:
                return 400, {"errorMessages": [], "errors": {"project": "valid project is required"}}
            with self.lock:
                n = len(self.issues) + 1
                issue = {"id": str(10000 + n), "key": f"{self.project}-{n}",
                         "self": f"{self.url}/rest/api/3/issue/{10000 + n}",
                         "fields": {**fields, "status": {"name": "To Do",
                                                         "statusCategory": {"key": "new", "name": "To Do"}}}}
                self.issues.append(issue)
            return self.stored(issue) or (201, {k: issue[k] for k in ("id", "key", "self")})
        if method == "GET" and path == "/rest/api/3/search/jql":
            return 200, {"issues": self._search(query.get("jql", [""])[0]), "isLast": True}
        match = re.fullmatch(r"/rest/api/3/issue/([A-Z]+-\d+)", path)
        if method == "GET" and match:
            found = next((i for i in self.issues if i["key"] == match.group(1)), None)
            if found:
                return 200, {"id": found["id"], "key": found["key"], "fields": {"status": found["fields"]["status"]}}
            return 404, {"errorMessages": ["Issue does not exist or you do not have permission to see it."]}
        return 404, {"errorMessages": ["not found"]}

    def _search(self, jql: str) -> list[dict[str, Any]]:
        match = re.fullmatch(r'project = "([A-Z0-9_]+)" AND labels = "([^"]+)"', jql)
        if not match:
            raise ValueError(f"JQL this fake does not know: {jql}")
        with self.lock:
            return [{"id": i["id"], "key": i["key"], "fields": {"status": i["fields"]["status"]}}
                    for i in self.issues if i["key"].startswith(match.group(1) + "-")
                    and match.group(2) in i["fields"].get("labels", [])]


def _handler(server: _Fake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def _serve(self, method: str) -> None:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            server.requests.append((method, url.path))
            status, answer = server.answer(method, url.path, parse_qs(url.query), body, self.headers)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return Handler


@contextmanager
def serving(fake: _Fake) -> Iterator[_Fake]:
    thread = threading.Thread(target=fake.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.shutdown()
        fake.server_close()
