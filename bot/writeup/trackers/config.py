"""Where action items become tickets, read from the environment when asked (never at import time).

GitHub Issues, with the names GitHub's own tooling uses:
    GITHUB_TOKEN           a token that may create issues in the repository (fine-grained: Issues read/write)
    GITHUB_REPOSITORY      owner/repo
    GITHUB_API_URL         https://api.github.com (GitHub Enterprise Server: https://<host>/api/v3)
Jira Cloud (REST v3, basic auth with an API token):
    JIRA_URL               https://<site>.atlassian.net
    JIRA_USER              the account's e-mail
    JIRA_API_TOKEN         an API token of that account
    JIRA_PROJECT           the project key (OPS)
    JIRA_ISSUE_TYPE        Task
Both:
    TRACKER                github | jira | off; unset: whichever is fully configured (GitHub first)
    TRACKER_LABELS         incident-action     comma-separated labels put on every ticket (for Jira without
                                               spaces: Jira refuses every create with such a label, so the
                                               start refuses it instead)
    TRACKER_ON_RESOLVE     true                export the incident's action items when it is resolved
    TRACKER_PRIVATE_TEXT   false               copy a private incident's action item text into its ticket (off:
                                               the ticket says only that it is an action item of that incident,
                                               as the tracker's readers are not the incident's people)
    TRACKER_TIMEOUT_S      10                  per HTTP request
    TRACKER_ATTEMPTS       4                   per request, on 429/5xx/network errors (then the job retries)
"""

from __future__ import annotations

from typing import Annotated

from bot.settings import ConfigError, EnvSettings, invalid
from checks.schema import HttpUrl, Meta, Secret

TRACKERS = ("github", "jira", "off")


class TrackerSettings(EnvSettings):
    tracker: str | None = None  # one of TRACKERS, in any case; blank is unset
    github_token: Secret | None = None
    github_repository: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")] | None = None
    github_api_url: HttpUrl = HttpUrl("https://api.github.com/")
    jira_url: HttpUrl | None = None
    jira_user: str | None = None
    jira_api_token: Secret | None = None
    jira_project: Annotated[str, Meta(pattern=r"^[A-Z][A-Z0-9_]{0,9}$")] | None = None
    jira_issue_type: str = "Task"
    tracker_labels: str = "incident-action"
    tracker_on_resolve: bool = True
    tracker_private_text: bool = False
    tracker_timeout_s: Annotated[float, Meta(gt=0, le=120)] = 10.0
    tracker_attempts: Annotated[int, Meta(ge=1, le=10)] = 4

    def __post_init__(self) -> None:
        self.tracker = (self.tracker or "").strip().lower() or None
        if self.tracker is not None and self.tracker not in TRACKERS:
            raise invalid("tracker", f"use one of {', '.join(TRACKERS)} (or leave it unset), got {self.tracker!r}")

    @property
    def labels(self) -> list[str]:
        return [label.strip() for label in self.tracker_labels.split(",") if label.strip()]

    @property
    def github_ready(self) -> bool:
        return bool(self.github_token and self.github_repository)

    @property
    def jira_ready(self) -> bool:
        return bool(self.jira_url and self.jira_user and self.jira_api_token and self.jira_project)

    @property
    def chosen(self) -> str | None:
        """The tracker in use, or None (off, or nothing configured)."""
        if self.tracker == "off":
            return None
        if self.tracker == "github" or (self.tracker is None and self.github_ready):
            return "github" if self.github_ready else None
        if self.tracker == "jira" or (self.tracker is None and self.jira_ready):
            return "jira" if self.jira_ready else None
        return None

    def problem(self) -> str | None:
        """A sentence when TRACKER names a tracker that is not fully configured, or its labels would be refused."""
        if self.tracker == "github" and not self.github_ready:
            return "TRACKER=github needs GITHUB_TOKEN and GITHUB_REPOSITORY (owner/repo)"
        if self.tracker == "jira" and not self.jira_ready:
            return "TRACKER=jira needs JIRA_URL, JIRA_USER, JIRA_API_TOKEN and JIRA_PROJECT"
        return self._jira_labels_problem()

    def _jira_labels_problem(self) -> str | None:
        """Jira answers 400 "The label must not contain spaces" to a create with such a label: every ticket would
        fail, long after a start that looked fine."""
        spaced = [label for label in self.labels if any(c.isspace() for c in label)]
        if self.chosen != "jira" or not spaced:
            return None
        shown = ", ".join(f'"{label[:40]}"' for label in spaced[:3])
        fixed = "-".join(spaced[0].split())[:40]
        return f"TRACKER_LABELS: Jira labels cannot contain spaces: {shown} (write {fixed} instead)"

    def secrets(self) -> list[str]:
        return [s.get_secret_value() for s in (self.github_token, self.jira_api_token) if s]


def load_tracker_settings(**overrides: object) -> TrackerSettings:
    """Read the environment; a validation error, or a tracker named but not fully configured, becomes one
    ConfigError line naming the variable."""
    settings = TrackerSettings.from_env(**overrides)
    if settings.problem():
        raise ConfigError(str(settings.problem()))
    return settings
