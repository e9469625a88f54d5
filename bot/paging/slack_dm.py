"""Paging by Slack DM: every targeted person gets a direct message with the incident and an Acknowledge button.

Targets are Slack ids: users (`U…`, `W…`) are DM'd directly, user groups (`S…`) are expanded with
`usergroups.users.list`; anything else (an Opsgenie team listed on the same level) is ignored. Each person is
DM'd once per dedup key however often the page is retried, and acknowledge/resolve rewrite the DMs so nobody
acts on a stale page. That memory is in Redis (one hash per dedup key, kept DM_RECORD_TTL_S): a retry on another
worker DMs only the people not reached yet, a worker killed between Slack's answer and the record does not DM
twice (bot/slack/posts.py), and whichever process handles the acknowledgement rewrites every DM.

The DM shows the title, severity, status, how long the incident has run, the last update, failing checks and a
link to the channel; all user text goes through `inert`/`truncate`, within Block Kit limits (≤ 50 blocks,
≤ 3000 characters per section, ≤ 2000 per field). The button is `action_id="incident_ack"` with the incident id
as its value; the handler that receives it is not part of this module.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import msgspec
import redis.asyncio as aioredis

from bot.paging.providers import Page, PageResult, format_elapsed, page_urgency
from bot.queue import as_text
from bot.slack.client import SlackClient, SlackError
from bot.slack.mrkdwn import MAX_BLOCKS, SECTION_TEXT_MAX, escape, inert, truncate
from bot.slack.posts import PENDING, post_once

log = logging.getLogger(__name__)

ACK_ACTION_ID = "incident_ack"
OPEN_CHANNEL_ACTION_ID = "incident_open_channel"
FIELD_TEXT_MAX = 2000
NOTIFICATION_TEXT_MAX = 300
_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
_GROUP = re.compile(r"^S[A-Z0-9]{2,}$")
_SAFE_URL = re.compile(r"^https?://[^\s<>|]+$")
DM_RECORD_TTL_S = 30 * 86400  # who was DM'd for a page, for acknowledge/resolve to rewrite: an incident's life
# A DM Slack still refused with 429 after the client's retries (a burst of pages to more people than
# conversations.open's 50 a minute) is sent again this much later, not recorded as failed: a third of the minute
# Slack's tiers count.
RATELIMITED_AGAIN_S = 20.0


class SlackDmProvider:
    def __init__(self, slack: SlackClient, redis: aioredis.Redis, *, key_prefix: str, name: str = "slack",
                 concurrency: int = 8) -> None:
        self.name = name
        self.slack = slack
        self.redis = redis
        self.key_prefix = key_prefix
        self._limit = asyncio.Semaphore(concurrency)

    def _key(self, dedup_key: str) -> str:
        return f"{self.key_prefix}:{dedup_key}"

    async def trigger(self, page: Page) -> PageResult:
        users, problems = await self._people(page.targets)
        if not users:
            reason = "; ".join(problems) or "no Slack users or user groups among the targets"
            return self._failed(f"Nobody to DM for {page.incident_id} level {page.level}: {reason}")
        key = self._key(page.dedup_key)
        async with self.redis.pipeline(transaction=True) as pipe:  # what acknowledge/resolve redraw the DMs from
            pipe.hset(key, "page", json.dumps(msgspec.structs.asdict(page), default=str))
            pipe.expire(key, DM_RECORD_TTL_S)
            await pipe.execute()
        outcomes = await asyncio.gather(*(self._dm(key, user, page) for user in users))
        failed, reached = [], []
        for user, outcome in zip(users, outcomes, strict=True):
            if isinstance(outcome, tuple):
                reached.append(outcome)
            else:
                failed.append(f"{user} ({outcome})")
        ref = ",".join(f"{ch}:{ts}" for ch, ts in reached) or None
        if not problems and {o for o in outcomes if isinstance(o, str)} == {"ratelimited"}:
            # the people reached are recorded: the page's next try DMs only the others
            return PageResult(self.name, False, provider_ref=ref, throttled_for=RATELIMITED_AGAIN_S)
        if failed or problems:
            detail = "; ".join(problems + ([f"could not DM {len(failed)} of {len(users)}: " + ", ".join(failed)]
                                           if failed else []))
            return PageResult(self.name, False, provider_ref=ref, error=f"Slack DM page incomplete: {detail}")
        log.info("paging: %s DM'd %d people for %s", self.name, len(users), page.dedup_key)
        return PageResult(self.name, True, provider_ref=ref)

    async def acknowledge(self, incident_id: str, level: int, dedup_key: str) -> PageResult:
        return await self._close_out(dedup_key, "acknowledged")

    async def resolve(self, incident_id: str, level: int, dedup_key: str) -> PageResult:
        return await self._close_out(dedup_key, "resolved")

    async def _people(self, targets: tuple[str, ...]) -> tuple[list[str], list[str]]:
        """Slack user ids to DM (groups expanded, duplicates dropped, order kept) and any lookup problems."""
        users: list[str] = []
        problems: list[str] = []
        for target in targets:
            if _USER.match(target):
                users.append(target)
            elif _GROUP.match(target):
                try:
                    answer = await self.slack.call("usergroups.users.list", usergroup=target)
                except SlackError as exc:
                    problems.append(f"user group {target} could not be read ({exc.error})")
                    continue
                members = [str(u) for u in answer.get("users") or []]
                if not members:
                    problems.append(f"user group {target} has no members")
                users.extend(members)
        return list(dict.fromkeys(users)), problems

    async def _dm(self, key: str, user: str, page: Page) -> tuple[str, str] | str:
        """(channel, ts) of the person's DM for this page, posting it unless an earlier try did; else Slack's
        error code."""
        async with self._limit:
            known_channel, known_ts = await self.redis.hmget(key, [f"channel:{user}", f"dm:{user}"])
            if known_channel and known_ts and as_text(known_ts) != PENDING:
                return as_text(known_channel), as_text(known_ts)  # reached by an earlier try of this page
            try:
                channel = await self.slack.open_dm(user)
                await self.redis.hset(key, f"channel:{user}", channel)
                ts = await post_once(self.redis, self.slack, key, f"dm:{user}", channel, page_text(page),
                                     blocks=page_blocks(page), ttl_s=DM_RECORD_TTL_S)
            except SlackError as exc:
                log.warning("paging: %s could not DM %s for %s: %s", self.name, user, page.dedup_key, exc.error)
                return exc.error
        return channel, ts

    async def _close_out(self, dedup_key: str, outcome: str) -> PageResult:
        record = {as_text(k): as_text(v) for k, v in (await self.redis.hgetall(self._key(dedup_key))).items()}
        if "page" not in record:
            return PageResult(self.name, True)  # nothing was DM'd for this page (or it is long over)
        raw = json.loads(record["page"])
        page = Page(**{**raw, "targets": tuple(raw.get("targets") or ())})
        closed, blocks = closed_text(page, outcome), closed_blocks(page, outcome)
        errors = []
        for name, ts in record.items():
            user = name.removeprefix("dm:")
            channel = record.get(f"channel:{user}")
            if name == user or ts == PENDING or not channel:
                continue  # not a DM, or one whose post never completed
            try:
                await self.slack.update_message(channel, ts, closed, blocks=blocks)
            except SlackError as exc:
                errors.append(f"{user} ({exc.error})")
        if errors:
            return self._failed(f"Could not mark the DMs as {outcome} for " + ", ".join(errors))
        if outcome == "resolved":
            await self.redis.delete(self._key(dedup_key))  # nothing will rewrite these DMs again
        return PageResult(self.name, True)

    def _failed(self, error: str) -> PageResult:
        log.warning("paging: %s: %s", self.name, error)
        return PageResult(self.name, False, error=error)


def page_text(page: Page) -> str:
    """The notification line (what a lock screen shows)."""
    line = f"{page.severity} incident {page.incident_id}: {' '.join(page.title.split())}"
    suffix = " (low urgency)" if page_urgency(page) == "low" else " — please acknowledge"
    return truncate(escape(line), NOTIFICATION_TEXT_MAX) + suffix


def page_blocks(page: Page) -> list[dict[str, Any]]:
    """The DM: what happened, how bad, how long, what's failing, where to go, and the Acknowledge button."""
    details = page.details
    low = page_urgency(page) == "low"
    icon = ":warning:" if low else ":rotating_light:"
    heading = f"{icon} *{page.severity} incident {inert(page.incident_id)}*\n*{inert(page.title)}*"
    if low:
        heading += "\nLow urgency: no need to wake up; have a look when you can."
    blocks: list[dict[str, Any]] = [_section(heading)]
    fields = [("Severity", page.severity), ("Status", details.get("status")),
              ("Running for", format_elapsed(details.get("elapsed_s"))), ("Escalation level", str(page.level))]
    blocks.append({"type": "section", "fields": [
        {"type": "mrkdwn", "text": truncate(f"*{name}*\n{inert(str(value))}", FIELD_TEXT_MAX)}
        for name, value in fields if value]})
    if page.summary and page.summary.strip() != page.title.strip():
        blocks.append(_section(inert(page.summary)))
    if details.get("last_update"):
        blocks.append(_section("*Last update*\n" + inert(str(details["last_update"]))))
    checks = [str(c) for c in details.get("failing_checks") or []]
    if checks:
        blocks.append(_section("*Failing checks*\n" + "\n".join(f"• {inert(c)}" for c in checks)))
    blocks.append(_actions(page))
    return blocks[:MAX_BLOCKS]


def closed_text(page: Page, outcome: str) -> str:
    return truncate(escape(f"{page.severity} incident {page.incident_id} was {outcome}: {page.title}"),
                    NOTIFICATION_TEXT_MAX)


def closed_blocks(page: Page, outcome: str) -> list[dict[str, Any]]:
    """What a DM becomes once the page is acknowledged or resolved: no button left to press."""
    text = (f":white_check_mark: *{page.severity} incident {inert(page.incident_id)}* was {outcome}. "
            f"No action needed from this page.\n{inert(page.title)}")
    blocks = [_section(text)]
    if _safe_link(page.link):
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"<{page.link}|Open the incident channel>"}]})
    return blocks


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, SECTION_TEXT_MAX)}}


def _actions(page: Page) -> dict[str, Any]:
    elements: list[dict[str, Any]] = [{
        "type": "button", "action_id": ACK_ACTION_ID, "style": "primary", "value": page.incident_id,
        "text": {"type": "plain_text", "text": "Acknowledge"},
    }]
    if _safe_link(page.link):
        elements.append({"type": "button", "action_id": OPEN_CHANNEL_ACTION_ID, "url": page.link,
                         "text": {"type": "plain_text", "text": "Open the incident channel"}})
    return {"type": "actions", "block_id": f"page:{page.dedup_key}"[:255], "elements": elements}


def _safe_link(link: str | None) -> bool:
    return bool(link) and len(link or "") <= 3000 and bool(_SAFE_URL.match(link or ""))
