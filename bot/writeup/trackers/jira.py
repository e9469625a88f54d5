"""Jira Cloud (REST v3, basic auth: the account's e-mail and an API token).

    find     GET  /rest/api/3/search/jql?jql=project = "<KEY>" AND labels = "<marker>"&fields=status
             (the marker is a label, the one field JQL matches exactly; it is in the description too)
    create   POST /rest/api/3/issue   {fields: {project, summary, issuetype, labels, description (ADF)}}
    state    GET  /rest/api/3/issue/{key}?fields=status   (done when the status category is `done`)
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from bot.writeup.trackers.config import TrackerSettings
from bot.writeup.trackers.http import call
from bot.writeup.trackers.model import Ticket, TicketRequest, TrackerError


class JiraCloud:
    name = "jira"

    def __init__(self, settings: TrackerSettings, client: httpx.AsyncClient) -> None:
        assert settings.jira_url and settings.jira_user and settings.jira_api_token and settings.jira_project
        self.settings, self.client = settings, client
        self.site = str(settings.jira_url).rstrip("/")
        self.auth = httpx.BasicAuth(settings.jira_user, settings.jira_api_token.get_secret_value())

    async def find(self, request: TicketRequest) -> Ticket | None:
        jql = f'project = "{self.settings.jira_project}" AND labels = "{request.marker}"'
        answer = await self._get("/rest/api/3/search/jql", params={"jql": jql, "fields": "status",
                                                                   "maxResults": 1})
        issues = answer.get("issues") or []
        return self._ticket(issues[0], request.item_id) if issues else None

    async def create(self, request: TicketRequest) -> Ticket:
        fields = {"project": {"key": self.settings.jira_project}, "summary": request.title,
                  "issuetype": {"name": self.settings.jira_issue_type},
                  "labels": [*self.settings.labels, request.marker], "description": _document(request)}
        response = await call(self.client, "POST", f"{self.site}/rest/api/3/issue", json={"fields": fields},
                              auth=self.auth, timeout=self.settings.tracker_timeout_s)
        created = response.json()
        now = time.time()
        return Ticket("jira", str(created["key"]), f"{self.site}/browse/{created['key']}", "To Do", False,
                      request.item_id, now, now)

    async def refresh(self, ticket: Ticket) -> Ticket:
        issue = await self._get(f"/rest/api/3/issue/{ticket.key}", params={"fields": "status"})
        fresh = self._ticket(issue, ticket.item)
        fresh.created_at = ticket.created_at
        return fresh

    async def _get(self, path: str, **kwargs: Any) -> Any:
        response = await call(self.client, "GET", f"{self.site}{path}", auth=self.auth,
                              timeout=self.settings.tracker_timeout_s, attempts=self.settings.tracker_attempts,
                              **kwargs)
        return response.json()

    def _ticket(self, issue: dict[str, Any], item: str) -> Ticket:
        if "key" not in issue:
            raise TrackerError("Jira answered without an issue key")
        status = (issue.get("fields") or {}).get("status") or {}
        category = (status.get("statusCategory") or {}).get("key")
        return Ticket("jira", str(issue["key"]), f"{self.site}/browse/{issue['key']}",
                      str(status.get("name") or "unknown"), category == "done", item, 0.0, time.time())


def _document(r: TicketRequest) -> dict[str, Any]:
    """Atlassian Document Format: paragraphs of text, links as link marks."""
    def text(value: str, href: str | None = None) -> dict[str, Any]:
        node: dict[str, Any] = {"type": "text", "text": value}
        if href:
            node["marks"] = [{"type": "link", "attrs": {"href": href}}]
        return node

    paragraphs = [[text(r.text)], [text(f"Action item from incident {r.incident_id}.")]]
    if r.owner:
        paragraphs.append([text(f"Owner: {r.owner}")])
    if r.due:
        paragraphs.append([text(f"Due: {r.due}")])
    if r.incident_link:
        paragraphs.append([text("Incident: "), text(r.incident_link, r.incident_link)])
    if r.postmortem_link:
        paragraphs.append([text("Postmortem: "), text(r.postmortem_link, r.postmortem_link)])
    paragraphs.append([text(f"[{r.marker}] written by the incident bot, which finds this issue again by it")])
    return {"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": p} for p in paragraphs]}
