"""Paging by Slack DM: every targeted person gets a direct message with the incident and an Acknowledge button.

Targets are Slack ids: users (`U…`, `W…`) are DM'd directly, user groups (`S…`) are expanded with
`usergroups.users.list`; anything else (an Opsgenie team listed on the same level) is ignored. Each person is
DM'd once per dedup key however often the page is retried, and acknowledge/resolve rewrite the DMs so nobody
acts on a stale page. That memory lives in this process only: after a restart a retried page may DM again,
which is the safe side of the trade (a duplicate DM, never a missed one).

The DM shows the title, severity, status, how long the incident has run, the last update, failing checks and a
link to the channel; all user text goes through `inert`/`truncate`, within Block Kit limits (≤ 50 blocks,
≤ 3000 characters per section, ≤ 2000 per field). The button is `action_id="incident_ack"` with the incident id
as its value; the handler that receives it is not part of this module.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from bot.mrkdwn import MAX_BLOCKS, SECTION_TEXT_MAX, escape, inert, truncate
from bot.paging.providers import Page, PageResult, format_elapsed, page_urgency
from bot.slack_client import SlackClient, SlackError

log = logging.getLogger(__name__)

ACK_ACTION_ID = "incident_ack"
OPEN_CHANNEL_ACTION_ID = "incident_open_channel"
FIELD_TEXT_MAX = 2000
NOTIFICATION_TEXT_MAX = 300
_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
_GROUP = re.compile(r"^S[A-Z0-9]{2,}$")
_SAFE_URL = re.compile(r"^https?://[^\s<>|]+$")


@dataclass
class _Delivery:
    page: Page
    dms: dict[str, tuple[str, str]] = field(default_factory=dict)  # user -> (dm channel, message ts)


class SlackDmProvider:
    def __init__(self, slack: SlackClient, *, name: str = "slack", concurrency: int = 8,
                 remember: int = 2000) -> None:
        self.name = name
        self.slack = slack
        self._limit = asyncio.Semaphore(concurrency)
        self._remember = remember
        self._deliveries: OrderedDict[str, _Delivery] = OrderedDict()

    async def trigger(self, page: Page) -> PageResult:
        users, problems = await self._people(page.targets)
        if not users:
            reason = "; ".join(problems) or "no Slack users or user groups among the targets"
            return self._failed(f"Nobody to DM for {page.incident_id} level {page.level}: {reason}")
        delivery = self._deliveries.setdefault(page.dedup_key, _Delivery(page))
        self._forget_old()
        pending = [u for u in users if u not in delivery.dms]
        outcomes = await asyncio.gather(*(self._dm(u, page) for u in pending))
        failed = []
        for user, outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, tuple):
                delivery.dms[user] = outcome
            else:
                failed.append(f"{user} ({outcome})")
        ref = ",".join(f"{ch}:{ts}" for ch, ts in delivery.dms.values()) or None
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

    async def _dm(self, user: str, page: Page) -> tuple[str, str] | str:
        """(channel, ts) of the DM, or Slack's error code."""
        async with self._limit:
            try:
                channel = await self.slack.open_dm(user)
                answer = await self.slack.post_message(channel, page_text(page), blocks=page_blocks(page))
            except SlackError as exc:
                log.warning("paging: %s could not DM %s for %s: %s", self.name, user, page.dedup_key, exc.error)
                return exc.error
        return str(answer.get("channel") or channel), str(answer.get("ts"))

    async def _close_out(self, dedup_key: str, outcome: str) -> PageResult:
        delivery = self._deliveries.get(dedup_key)
        if delivery is None:
            return PageResult(self.name, True)  # nothing DM'd from this process: nothing to rewrite
        errors = []
        text, blocks = closed_text(delivery.page, outcome), closed_blocks(delivery.page, outcome)
        for user, (channel, ts) in delivery.dms.items():
            try:
                await self.slack.update_message(channel, ts, text, blocks=blocks)
            except SlackError as exc:
                errors.append(f"{user} ({exc.error})")
        if outcome == "resolved":
            self._deliveries.pop(dedup_key, None)
        if errors:
            return self._failed(f"Could not mark the DMs as {outcome} for " + ", ".join(errors))
        return PageResult(self.name, True)

    def _forget_old(self) -> None:
        while len(self._deliveries) > self._remember:
            self._deliveries.popitem(last=False)

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
