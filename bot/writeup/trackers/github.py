"""GitHub Issues (REST, `X-GitHub-Api-Version: 2022-11-28`).

    find     GET  /repos/{owner}/{repo}/issues?state=all&creator=<the token's login>&sort=created&direction=desc
             &per_page=100, then the `link` header's rel="next" URLs (GitHub's pagination; at most MAX_PAGES
             pages, only on the API's own host, which gets the token). The marker is an HTML comment in the body.
             Not filtered by labels: GitHub silently drops the labels of a create when the token lacks push
             access, and a find by labels would then never see the issue, so every retried job made another.
             The login comes from GET /user, asked once per tracker; a token that cannot read it (a GitHub App
             installation's answers 403) lists every issue, newest first. The list is read rather than
             /search/issues because the search index lags behind a create by seconds to minutes — the very
             window a retried job runs in.
    create   POST /repos/{owner}/{repo}/issues   {title, body, labels}
    state    GET  /repos/{owner}/{repo}/issues/{number}
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from bot.writeup.trackers.config import TrackerSettings
from bot.writeup.trackers.http import call
from bot.writeup.trackers.model import Ticket, TicketRequest, TrackerError, TrackerRefused

MAX_PAGES = 5
_UNASKED = object()  # the login has not been asked for yet (None: asked, and the token may not read it)


class GitHubIssues:
    name = "github"

    def __init__(self, settings: TrackerSettings, client: httpx.AsyncClient) -> None:
        assert settings.github_token is not None and settings.github_repository
        self.settings, self.client = settings, client
        self.base = f"{str(settings.github_api_url).rstrip('/')}/repos/{settings.github_repository}"
        self.headers = {"Authorization": f"Bearer {settings.github_token.get_secret_value()}",
                        "Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
                        "User-Agent": "chatops-incident-bot"}
        self._creator: object = _UNASKED

    async def find(self, request: TicketRequest) -> Ticket | None:
        """Newest first, following the `link` header's rel="next" (GitHub's pagination), at most MAX_PAGES pages."""
        params: dict[str, Any] | None = {"state": "all", "per_page": 100, "sort": "created", "direction": "desc"}
        creator = await self._login()
        if creator:
            params = {**params, "creator": creator}
        url: str | None = f"{self.base}/issues"
        for _ in range(MAX_PAGES):
            if url is None:
                break
            response = await self._response(url, params=params)
            found = next((i for i in response.json() if request.marker in (i.get("body") or "")), None)
            if found is not None:
                return self._ticket(found, request.item_id)
            url, params = self._next(response), None  # the next URL carries the query
        return None

    async def _login(self) -> str | None:
        """The token's own login (GET /user, once); None when the token may not read it."""
        if self._creator is _UNASKED:
            try:
                user = await self._get(f"{str(self.settings.github_api_url).rstrip('/')}/user")
            except TrackerRefused:
                user = {}
            self._creator = str(user.get("login") or "") or None
        return self._creator  # type: ignore[return-value]

    async def create(self, request: TicketRequest) -> Ticket:
        body = {"title": request.title, "body": self._body(request), "labels": self.settings.labels}
        response = await call(self.client, "POST", f"{self.base}/issues", json=body, headers=self.headers,
                              timeout=self.settings.tracker_timeout_s)
        return self._ticket(response.json(), request.item_id, created=True)

    async def refresh(self, ticket: Ticket) -> Ticket:
        issue = await self._get(f"{self.base}/issues/{ticket.key.lstrip('#')}")
        fresh = self._ticket(issue, ticket.item)
        fresh.created_at = ticket.created_at
        return fresh

    def _next(self, response: httpx.Response) -> str | None:
        url = response.links.get("next", {}).get("url")
        return url if url and httpx.URL(url).host == httpx.URL(self.base).host else None

    async def _get(self, url: str, **kwargs: Any) -> Any:
        return (await self._response(url, **kwargs)).json()

    async def _response(self, url: str, **kwargs: Any) -> httpx.Response:
        return await call(self.client, "GET", url, headers=self.headers, timeout=self.settings.tracker_timeout_s,
                          attempts=self.settings.tracker_attempts, **kwargs)

    def _ticket(self, issue: dict[str, Any], item: str, *, created: bool = False) -> Ticket:
        if "number" not in issue:
            raise TrackerError("GitHub answered without an issue number")
        state = str(issue.get("state") or "open")
        now = time.time()
        return Ticket("github", f"#{issue['number']}", str(issue.get("html_url") or ""), state, state == "closed",
                      item, now if created else 0.0, now)

    @staticmethod
    def _body(r: TicketRequest) -> str:
        lines = [r.text, "", f"Action item from incident **{r.incident_id}**."]
        if r.owner:
            lines.append(f"Owner: {r.owner}")
        if r.due:
            lines.append(f"Due: {r.due}")
        if r.incident_link:
            lines.append(f"Incident: {r.incident_link}")
        if r.postmortem_link:
            lines.append(f"Postmortem: {r.postmortem_link}")
        lines += ["", f"<!-- {r.marker} (written by the incident bot: it finds this issue again by it) -->"]
        return "\n".join(lines)
