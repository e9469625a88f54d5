"""Local GitHub Issues and Jira Cloud: real HTTP servers implementing the endpoints the bot uses, with the
payload shapes of the real APIs (the fields the bot reads and a few it does not), in memory.

    GitHub   POST /repos/{o}/{r}/issues (422 without a title or with labels that are not a list),
             GET /repos/{o}/{r}/issues (state, labels, per_page ≤ 100, page; a `link` header with rel="next"
             while more pages follow, as GitHub paginates; creator), GET /repos/{o}/{r}/issues/{n}, GET /user;
             Bearer token required. `no_push_access`: a create silently drops its labels, as GitHub does for a
             token without push access; `user_forbidden`: GET /user answers 403, as for an App installation token
    Jira     POST /rest/api/3/issue (400 unless `description` is an Atlassian Document — v3 refuses a plain string
             — or a label holds a space), GET /rest/api/3/search/jql (project = "K" AND labels = "x"; maxResults,
             `nextPageToken`; only ids unless `fields` is given), GET /rest/api/3/issue/{key}; basic auth required

`on_create(issue)` runs after an issue is stored and before the answer is sent (to kill a worker in that
window); `fail_creates_after_storing` answers 502 to that many creates that did store the issue;
`rate_limited` answers that many requests as the real API does when its rate limit is exceeded (GitHub: 403 with
`x-ratelimit-remaining: 0` and `x-ratelimit-reset`; Jira: 429 with `Retry-After`), waiting `rate_limit_wait_s`.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

# (status, JSON body[, extra headers])
Reply = tuple[int, Any] | tuple[int, Any, dict[str, str]]


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
        self.rate_limited = 0
        self.rate_limit_wait_s = 1

    def limit(self) -> Reply | None:
        """The rate-limit answer while `rate_limited` lasts."""
        with self.lock:
            if self.rate_limited <= 0:
                return None
            self.rate_limited -= 1
        return self.limited()

    def limited(self) -> Reply:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def creates(self) -> int:
        return sum(1 for method, path in self.requests if method == "POST")

    def answer(self, method: str, path: str, query: dict[str, list[str]], body: Any, headers: Any) -> Reply:
        raise NotImplementedError

    def stored(self, issue: dict[str, Any]) -> Reply | None:
        """After a create stored `issue`: the hook, and maybe a 502 although it was stored."""
        if self.on_create is not None:
            self.on_create(issue)
        if self.fail_creates_after_storing > 0:
            self.fail_creates_after_storing -= 1
            return 502, {"message": "Server Error"}
        return None


class FakeGitHub(_Fake):
    def __init__(self, repo: str = "acme/ops", token: str = "ghp_test", login: str = "chatops-bot") -> None:
        super().__init__()
        self.repo, self.token, self.login = repo, token, login
        self.no_push_access = False
        self.user_forbidden = False
        self.queries: list[dict[str, list[str]]] = []  # of the issue lists, in order

    def close(self, number: int) -> None:
        with self.lock:
            self.issues[number - 1]["state"] = "closed"

    def answer(self, method: str, path: str, query: dict[str, list[str]], body: Any, headers: Any) -> Reply:
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"message": "Bad credentials"}
        limited = self.limit()
        if limited is not None:
            return limited
        base = f"/repos/{self.repo}/issues"
        if method == "POST" and path == base:
            if not isinstance(body.get("title"), str | int) or not isinstance(body.get("labels", []), list):
                return 422, {"message": "Invalid request.", "errors": [{"resource": "Issue", "code": "invalid"}]}
            labels = [] if self.no_push_access else body.get("labels") or []
            with self.lock:
                number = len(self.issues) + 1
                issue = {"id": 1000 + number, "number": number, "state": "open", "title": str(body["title"]),
                         "body": body.get("body"), "labels": [{"name": n} for n in labels],
                         "html_url": f"https://github.com/{self.repo}/issues/{number}",
                         "url": f"{self.url}/repos/{self.repo}/issues/{number}", "user": {"login": self.login}}
                self.issues.append(issue)
            return self.stored(issue) or (201, issue)
        if method == "GET" and path == base:
            self.queries.append(query)
            return self._list(path, query)
        if method == "GET" and path == "/user":
            if self.user_forbidden:
                return 403, {"message": "Resource not accessible by integration"}
            return 200, {"login": self.login, "id": 1, "type": "Bot"}
        match = re.fullmatch(rf"{base}/(\d+)", path)
        if method == "GET" and match and int(match.group(1)) <= len(self.issues):
            return 200, self.issues[int(match.group(1)) - 1]
        return 404, {"message": "Not Found"}

    def limited(self) -> Reply:
        reset = int(time.time() + self.rate_limit_wait_s)
        return 403, {"message": "API rate limit exceeded for user ID 1."}, {
            "x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0", "x-ratelimit-used": "5000",
            "x-ratelimit-reset": str(reset), "x-ratelimit-resource": "core"}

    def _list(self, path: str, query: dict[str, list[str]]) -> Reply:
        state = query.get("state", ["open"])[0]
        wanted = set(query.get("labels", [""])[0].split(",")) - {""}
        creator = query.get("creator", [None])[0]
        per_page, page = min(int(query.get("per_page", ["30"])[0]), 100), int(query.get("page", ["1"])[0])
        with self.lock:
            found = [i for i in reversed(self.issues) if (state == "all" or i["state"] == state)
                     and wanted <= {label["name"] for label in i["labels"]}
                     and creator in (None, i["user"]["login"])]
        if len(found) <= page * per_page:
            return 200, found[(page - 1) * per_page: page * per_page]
        following = urlencode({**{k: v[0] for k, v in query.items()}, "page": page + 1})
        return 200, found[(page - 1) * per_page: page * per_page], {"link": f'<{self.url}{path}?{following}>; rel="next"'}


class FakeJira(_Fake):
    def __init__(self, project: str = "OPS", user: str = "bot@example.com", token: str = "jira-token") -> None:
        super().__init__()
        self.project, self.auth = project, "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()

    def resolve(self, key: str) -> None:
        with self.lock:
            issue = next(i for i in self.issues if i["key"] == key)
            issue["fields"]["status"] = {"name": "Done", "statusCategory": {"key": "done", "name": "Done"}}

    def answer(self, method: str, path: str, query: dict[str, list[str]], body: Any, headers: Any) -> Reply:
        if headers.get("Authorization") != self.auth:
            return 401, {"errorMessages": ["You are not authenticated."]}
        limited = self.limit()
        if limited is not None:
            return limited
        if method == "POST" and path == "/rest/api/3/issue":
            return self._create(body["fields"])
        if method == "GET" and path == "/rest/api/3/search/jql":
            return 200, self._search(query)
        match = re.fullmatch(r"/rest/api/3/issue/([A-Z]+-\d+)", path)
        if method == "GET" and match:
            found = next((i for i in self.issues if i["key"] == match.group(1)), None)
            if found:
                return 200, {"id": found["id"], "key": found["key"], "fields": {"status": found["fields"]["status"]}}
            return 404, {"errorMessages": ["Issue does not exist or you do not have permission to see it."]}
        return 404, {"errorMessages": ["not found"]}

    def limited(self) -> Reply:
        return 429, {"errorMessages": ["Rate limit exceeded."]}, {"Retry-After": str(self.rate_limit_wait_s)}

    def _create(self, fields: dict[str, Any]) -> Reply:
        errors = _field_errors(fields, self.project)
        if errors:
            return 400, {"errorMessages": [], "errors": errors}
        with self.lock:
            n = len(self.issues) + 1
            issue = {"id": str(10000 + n), "key": f"{self.project}-{n}",
                     "self": f"{self.url}/rest/api/3/issue/{10000 + n}",
                     "fields": {**fields, "status": {"name": "To Do",
                                                     "statusCategory": {"key": "new", "name": "To Do"}}}}
            self.issues.append(issue)
        return self.stored(issue) or (201, {k: issue[k] for k in ("id", "key", "self")})

    def _search(self, query: dict[str, list[str]]) -> dict[str, Any]:
        jql = query.get("jql", [""])[0]
        match = re.fullmatch(r'project = "([A-Z0-9_]+)" AND labels = "([^"]+)"', jql)
        if not match:
            raise ValueError(f"JQL this fake does not know: {jql}")
        size = min(int(query.get("maxResults", ["50"])[0]), 5000)
        start = int(query.get("nextPageToken", ["0"])[0])
        fields = {f for f in query.get("fields", [""])[0].split(",") if f}
        with self.lock:
            found = [i for i in self.issues if i["key"].startswith(match.group(1) + "-")
                     and match.group(2) in i["fields"].get("labels", [])]
        page = [{"id": i["id"]} | ({"key": i["key"], "fields": {f: i["fields"].get(f) for f in fields}}
                                   if fields else {}) for i in found[start:start + size]]
        more = start + size < len(found)
        return {"issues": page, "isLast": not more, **({"nextPageToken": str(start + size)} if more else {})}


def _field_errors(fields: dict[str, Any], project: str) -> dict[str, str]:
    """What Jira Cloud's v3 create refuses, among the fields the bot sends."""
    errors = {}
    if (fields.get("project") or {}).get("key") != project:
        errors["project"] = "valid project is required"
    if not str(fields.get("summary") or "").strip() or len(str(fields.get("summary"))) > 255:
        errors["summary"] = "You must specify a summary of the issue (at most 255 characters)."
    if "description" in fields and not _is_adf(fields["description"]):
        errors["description"] = "Operation value must be an Atlassian Document (see the Atlassian Document Format)"
    if any(not isinstance(label, str) or " " in label or not label for label in fields.get("labels") or []):
        errors["labels"] = "The label must not contain spaces."
    return errors


def _is_adf(doc: Any) -> bool:
    """A document node (type doc, version 1) whose text nodes are non-empty strings."""
    if not (isinstance(doc, dict) and doc.get("type") == "doc" and doc.get("version") == 1
            and isinstance(doc.get("content"), list)):
        return False
    return all(_adf_node(node) for node in doc["content"])


def _adf_node(node: Any) -> bool:
    if not isinstance(node, dict) or not isinstance(node.get("type"), str):
        return False
    if node["type"] == "text":
        return isinstance(node.get("text"), str) and node["text"] != ""
    return all(_adf_node(child) for child in node.get("content") or [])


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
            status, answer, *extra = server.answer(method, url.path, parse_qs(url.query), body, self.headers)
            data = json.dumps(answer).encode()
            self.send_response(status)
            for name, value in (extra[0] if extra else {}).items():
                self.send_header(name, value)
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
