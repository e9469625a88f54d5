"""Settings of the write-up features (capture, back-fill, postmortems, summaries), read from the environment
when asked — never at import time. Names carry no prefix.

    SUMMARY_THRESHOLD          20        a thread gets its summary reply once it has this many replies
    SUMMARY_MIN_INTERVAL_S     180       the summary reply is updated at most this often (debounce)
    SUMMARY_SETTLE_S           5         wait this long after a reply before summarising (a burst is one update)
    SUMMARY_ALL_CHANNELS       false     also summarise long threads in channels that are not incident channels
    CATCHUP_SUMMARIES          true      post a catch-up summary into open incidents on the severity's cadence
    KEY_EVENT_REACTION         pushpin   this reaction (or a pin) marks a message as a key event
    ACTION_ITEM_REACTION       ballot_box_with_check   this reaction makes a message an action item
    ACTION_DONE_REACTION       white_check_mark        this reaction on an action item (or question) closes it
    BACKFILL_PAGE_SIZE         200       messages per conversations.history/replies page (15 for apps limited
                                         to 15 per page: commercially distributed non-Marketplace apps)
    BACKFILL_CALLS_PER_MIN     50        pace of history/replies calls (1 for those limited apps)
    BACKFILL_ON_RESOLVE        true      read the channel history after resolve and re-publish if it found gaps
    POSTMORTEM_TEMPLATE        (built-in) a Jinja2 Markdown template replacing bot/writeup/postmortem/templates/postmortem.md.j2
    POSTMORTEM_ON_RESOLVE      true      publish the draft when an incident is resolved
    POSTMORTEM_CANVAS          true      publish as a canvas (false: straight to a Markdown file upload)
    POSTMORTEM_S3_BUCKET       (none)    also store the Markdown in S3 (boto3's usual credentials and region)
    POSTMORTEM_S3_PREFIX       postmortems/
    SUMMARIZER_URL             (none)    an OpenAI-compatible API base (…/v1). OFF by default. When set, thread
                                         and incident text IS SENT to that endpoint to write a short overview
    SUMMARIZER_API_KEY         (none)    sent as `Authorization: Bearer …`
    SUMMARIZER_MODEL           gpt-4o-mini
    SUMMARIZER_TIMEOUT_S       20
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from bot.settings import EnvSettings, invalid
from checks.schema import HttpUrl, Meta, Secret

_EMOJI = re.compile(r"^[a-z0-9_+'-]{1,100}$")
_REACTIONS = ("key_event_reaction", "action_item_reaction", "action_done_reaction")


class WriteupSettings(EnvSettings):
    summary_threshold: Annotated[int, Meta(ge=2, le=10_000)] = 20
    summary_min_interval_s: Annotated[float, Meta(ge=0)] = 180.0
    summary_settle_s: Annotated[float, Meta(ge=0)] = 5.0
    summary_all_channels: bool = False
    catchup_summaries: bool = True

    key_event_reaction: str = "pushpin"
    action_item_reaction: str = "ballot_box_with_check"
    action_done_reaction: str = "white_check_mark"

    backfill_page_size: Annotated[int, Meta(ge=1, le=999)] = 200
    backfill_calls_per_min: Annotated[float, Meta(gt=0, le=1_000_000)] = 50.0
    backfill_on_resolve: bool = True

    postmortem_template: Path | None = None
    postmortem_on_resolve: bool = True
    postmortem_canvas: bool = True
    postmortem_s3_bucket: str | None = None
    postmortem_s3_prefix: str = "postmortems/"

    summarizer_url: HttpUrl | None = None
    summarizer_api_key: Secret | None = None
    summarizer_model: str = "gpt-4o-mini"
    summarizer_timeout_s: Annotated[float, Meta(gt=0, le=300)] = 20.0

    def __post_init__(self) -> None:
        for name in _REACTIONS:
            setattr(self, name, _emoji_name(name, getattr(self, name)))
        if self.postmortem_template is not None and not self.postmortem_template.is_file():
            raise invalid("postmortem_template", f"{self.postmortem_template} is not a readable file")
        prefix = self.postmortem_s3_prefix.lstrip("/")
        self.postmortem_s3_prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"

    @property
    def summarizer_enabled(self) -> bool:
        return self.summarizer_url is not None

    def secrets(self) -> list[str]:
        key = self.summarizer_api_key.get_secret_value() if self.summarizer_api_key else ""
        return [key] if key else []


def _emoji_name(variable: str, value: str) -> str:
    value = value.strip().strip(":").lower()
    if not _EMOJI.match(value):
        raise invalid(variable, "must be an emoji name such as pushpin (no colons, no spaces)")
    return value


def load_writeup_settings(**overrides: object) -> WriteupSettings:
    """Read the environment; a validation error becomes one ConfigError line naming the variable."""
    return WriteupSettings.from_env(**overrides)
