"""`Incidents`: what every incident function needs, built once per process by `install` and kept in
`rt.feature(Incidents)` — settings, the paging policy and providers, the store and the timeline — plus the
helpers they share: posting into an incident exactly once, queueing a header refresh, finding the incident a
command means, and the authorisation check.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from bot.errors import UserError
from bot.incidents.config import IncidentSettings
from bot.incidents.model import Incident, parse_incident_id
from bot.incidents.store import IncidentStore
from bot.incidents.timeline import Timeline
from bot.paging.policy import PagingPolicy, Permission
from bot.paging.providers import Provider
from bot.runtime import Runtime
from bot.slack.client import SharedAnswers, SlackClient, SlackError
from bot.slack.posts import post_once

log = logging.getLogger("bot.incidents")

Action = Literal["escalate", "severity", "resolve", "ack", "status", "commander", "roles", "note", "read",
                 "remediate"]
_VERBS = {"escalate": "escalate", "severity": "change the severity of", "resolve": "resolve",
          "ack": "acknowledge the page of", "status": "post status updates to",
          "commander": "hand over the commander role of", "roles": "assign roles in", "note": "add notes to",
          "read": "read the summary or postmortem of",
          "remediate": "request or approve fixes in"}
MEMBERSHIP_CACHE_S = 30.0  # a "yes, a member" is remembered this long (a "no" is always asked again)
# A user group's members, for paging and invites, are asked once per process this long (callers at the same moment
# share the call). A storm of 50 pages to one group sent 50 usergroups.users.list (Tier 2, 20 a minute); the ones
# Slack refused paged nobody: 46 of 150 DMs lost in the benchmark's set-up with the group as on-call.
GROUP_MEMBERS_FRESH_S = 30.0


AUTHORIZE_BUDGET_S = 2.0  # of Slack's 3 s to answer a command, for the permission look-ups


@dataclass
class Incidents:
    rt: Runtime
    settings: IncidentSettings
    policy: PagingPolicy
    providers: dict[str, Provider]
    store: IncidentStore
    timeline: Timeline
    # "sending this page": renewed while the sender lives, so a dead sender's delivery is taken over this soon
    page_lease_s: float = 3.0
    _workspace_url: tuple[str | None] | None = None  # auth.test's answer, once asked
    _members_seen: dict[tuple[str, str], float] = field(default_factory=dict)  # (channel/group, user) → until
    _groups: SharedAnswers[list[str]] = field(init=False)  # group → its members, for paging and invites

    def __post_init__(self) -> None:
        self._groups = SharedAnswers(self._list_group, keep_s=GROUP_MEMBERS_FRESH_S)

    @property
    def slack(self) -> SlackClient:
        return self.rt.slack

    async def workspace_url(self) -> str | None:
        """`https://<team>.slack.com/` from auth.test, once per process (None when Slack does not say)."""
        if self._workspace_url is None:
            try:
                answer = await self.slack.call("auth.test")
            except SlackError as exc:
                log.warning("auth.test failed (%s): pages will link to the header once it is posted", exc.error)
                return None
            self._workspace_url = (str(answer.get("url") or "") or None,)
        return self._workspace_url[0]

    # -- jobs -------------------------------------------------------------------------------------------------

    async def refresh_header(self, incident_id: str, *, delay_s: float = 0.3) -> None:
        """Queue a redraw of the header (and announcement); coalesces while one is waiting."""
        await self.rt.queue.enqueue("incident.refresh", {"incident": incident_id}, job_id=f"refresh:{incident_id}",
                                    delay_s=delay_s)

    async def invite(self, incident: Incident, user: str, key: str) -> None:
        """A new commander, role holder, or someone paged for a private incident is brought into the incident
        channel (a job: Slack may be slow)."""
        if incident.mode == "channel":
            await self.rt.queue.enqueue("incident.invite", {"incident": incident.id, "users": [user]},
                                        job_id=f"invite:{incident.id}:{key}")

    async def say(self, incident_id: str, key: str, text: str, blocks: list[dict] | None = None) -> None:
        """Queue a message into the incident (its channel, or its thread), posted once under `key`."""
        await self.rt.queue.enqueue("incident.post", {"incident": incident_id, "key": key, "text": text,
                                                      "blocks": blocks}, job_id=f"post:{incident_id}:{key}")

    # -- posting exactly once ---------------------------------------------------------------------------------

    async def post_once(self, incident_id: str, key: str, channel: str, text: str, blocks: list[dict] | None,
                        *, thread_ts: str | None = None) -> str:
        """Post and remember the ts under `key`; a try that died between posting and remembering is found again
        (bot/slack/posts.py), so a resumed declaration does not post a second header."""
        return await post_once(self.store.redis, self.slack, self.store.incident_key(incident_id, "posted"), key,
                               channel, text, blocks=blocks, thread_ts=thread_ts)

    async def post_in(self, incident: Incident, key: str, text: str, blocks: list[dict] | None) -> str | None:
        """Post into the incident's channel (or thread); None while it has no place yet."""
        if not incident.channel:
            return None
        thread = incident.thread_ts if incident.mode == "thread" else None
        return await self.post_once(incident.id, key, incident.channel, text, blocks, thread_ts=thread)

    # -- which incident a command means ---------------------------------------------------------------------

    async def find_for_command(self, channel: str, explicit: str | None, example: str) -> Incident:
        """The incident named (`INC-12`), or the one whose channel (or single open thread) this is."""
        if explicit:
            incident_id = parse_incident_id(explicit)
            found = await self.store.get(incident_id) if incident_id else None
            if found is None:
                raise UserError(f"There is no incident {_code(explicit)}. `/incident list` shows the open ones.")
            return found
        incident_id = await self.store.by_channel(channel)
        if incident_id is None:
            threads = await self.store.open_in_thread_channel(channel)
            if len(threads) == 1:
                incident_id = threads[0]
            elif threads:
                raise UserError(f"Several incidents run in threads here ({', '.join(threads)}): name one, "
                                f"for example `{example.replace('INC-12', threads[0])}`.")
        if incident_id is None:
            raise UserError(f"Run this in an incident channel, or name it: `{example}`.")
        return await self.store.require(incident_id)

    # -- authorisation ----------------------------------------------------------------------------------------

    def permission(self, action: Action) -> Permission:
        return self.policy.permissions["escalate" if action == "ack" else action]

    async def authorize(self, incident: Incident, user: str, action: Action) -> None:
        """Raise UserError (saying who can) unless `user` may do `action` to `incident`. Enforced server-side,
        whether the incident is named from elsewhere or implied by the channel: a forged button payload goes
        through the same check as the command."""
        if action == "ack" and user in incident.paging.slack_paged:
            return  # whoever was paged may acknowledge their page, even from a DM outside the channel
        permission = self.permission(action)
        if incident.is_responder(user) and (permission.channel_members or permission.responders):
            return
        try:
            # Commands are answered within Slack's 3 s: the membership look-ups get a budget, and a Slack that is
            # slow or failing is said plainly rather than read as "you are not a member".
            refusal = await asyncio.wait_for(self._refusal(incident, user, action, permission),
                                             timeout=AUTHORIZE_BUDGET_S)
        except (TimeoutError, _MembershipUnknown):
            raise UserError(f"I couldn't check who may {_VERBS[action]} {incident.id} just now: Slack did not "
                            f"answer in time. Nothing was changed; try again in a moment.") from None
        if refusal:
            raise UserError(refusal)

    async def require_visible(self, incident: Incident, user: str) -> None:
        """Raise the private refusal (UserError) unless `user` may see `incident`: for what anyone may do to a
        public incident but must not reveal or start in a private one (the Diagnose button)."""
        try:
            visible = await asyncio.wait_for(self.may_see(incident, user, strict=True), timeout=AUTHORIZE_BUDGET_S)
        except (TimeoutError, _MembershipUnknown):
            raise UserError(f"I couldn't check whether you may see {incident.id} just now: Slack did not answer in "
                            f"time. Nothing was changed; try again in a moment.") from None
        if not visible:
            raise UserError(self.private_refusal(incident))

    async def _refusal(self, incident: Incident, user: str, action: Action, permission: Permission) -> str | None:
        """Why `user` may not, or None. Someone who may not see a private incident is told only that."""
        if not await self.may_see(incident, user, strict=True):
            return self.private_refusal(incident)
        if not await self._allowed(incident, user, permission):
            return self.refusal(incident, action, permission)
        return None

    async def may_see(self, incident: Incident, user: str, *, strict: bool = False) -> bool:
        """Anyone sees a public incident; a private one only its channel's members, its commander and role
        holders, the people paged for it (asked to respond, so they must be able to), and incident admins.
        Without `strict`, a Slack that cannot say counts as "no"."""
        if (not incident.private or incident.is_responder(user) or incident.paging.was_paged(user)
                or await self.is_admin(user, strict=strict)):
            return True
        if strict:
            return bool(incident.channel) and await self._member_or_raise(incident.channel, user)  # type: ignore
        return await self.is_member(incident.channel, user)

    async def open_for(self, user: str, limit: int) -> tuple[list[Incident], int]:
        """What `/incident list` shows `user`: the first `limit` open incidents they may see, and how many."""
        return await self.store.list_page(lambda incident: self.may_see(incident, user), limit)

    def private_refusal(self, incident: Incident) -> str:
        """No title, no channel name: only that it exists and who can let them in."""
        commander = f"<@{incident.commander}>" if incident.commander else "its commander"
        return (f"{incident.id} is a private incident: only the people in it can see or change it. "
                f"{commander} can add you; ask them directly. Nothing was changed.")

    async def _allowed(self, incident: Incident, user: str, permission: Permission) -> bool:
        if await self.is_admin(user, strict=True):
            return True
        in_channel = False
        if permission.channel_members and incident.channel:
            in_channel = await self._member_or_raise(incident.channel, user)
        groups = await self._groups_of(user, permission.ids, strict=True) if permission.ids else []
        return permission.allows(user, in_channel=in_channel, user_groups=groups,
                                 responder=incident.is_responder(user))

    async def is_admin(self, user: str, *, strict: bool = False) -> bool:
        """In INCIDENT_ADMINS, by id or through one of its user groups."""
        admins = frozenset(self.settings.incident_admins)
        return user in admins or bool(await self._groups_of(user, admins, strict=strict))

    def refusal(self, incident: Incident, action: Action, permission: Permission) -> str:
        verb, admins = _VERBS[action], self._admins_clause()
        commander = f"<@{incident.commander}>" if incident.commander else "nobody yet"
        ask = (f" Nothing was changed; `/incident join {incident.id}` asks its commander ({commander}) to add "
               f"you.")
        if permission.channel_members:
            where = f"<#{incident.channel}>" if incident.channel else "the incident channel"
            return (f"Only members of {where} can {verb} {incident.id} (its commander and role holders among "
                    f"them){admins}.{ask}")
        if permission.responders:
            return f"Only the commander ({commander}) and role holders of {incident.id} can {verb} it{admins}.{ask}"
        return f"Only {mention_all(permission.ids)} can {verb} {incident.id}{admins}. Ask one of them."

    def _admins_clause(self) -> str:
        admins = self.settings.incident_admins
        return f", or an incident admin ({mention_all(admins)})" if admins else ""

    async def is_member(self, channel: str | None, user: str) -> bool:
        """False also when Slack cannot say (logged); authorisation uses the strict form instead."""
        try:
            return bool(channel) and await self._member_or_raise(channel, user)  # type: ignore[arg-type]
        except _MembershipUnknown:
            return False

    async def _member_or_raise(self, channel: str, user: str) -> bool:
        if self._seen(channel, user):
            return True
        found = await self._ask_members(channel, user)
        if found:
            self._remember(channel, user)
        return found

    def _seen(self, container: str, user: str) -> bool:
        return self._members_seen.get((container, user), 0.0) > time.monotonic()

    def _remember(self, container: str, user: str) -> None:
        if len(self._members_seen) > 10_000:  # bounded: forget everything rather than grow
            self._members_seen.clear()
        self._members_seen[(container, user)] = time.monotonic() + MEMBERSHIP_CACHE_S

    async def _ask_members(self, channel: str, user: str) -> bool:
        cursor = None
        for _ in range(50):  # 50 pages of 1,000 members is more than any incident channel has
            try:
                answer = await self.slack.call("conversations.members", channel=channel, limit=1000, cursor=cursor)
            except SlackError as exc:
                log.warning("conversations.members %s failed: %s", channel, exc.error)
                raise _MembershipUnknown(exc.error) from None
            if user in (answer.get("members") or []):
                return True
            cursor = (answer.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return False
        return False

    async def _groups_of(self, user: str, ids: frozenset[str], *, strict: bool = False) -> list[str]:
        groups = []
        for group in sorted(i for i in ids if i.startswith("S")):
            if self._seen(group, user) or user in await self.group_members(group, strict=strict):
                self._remember(group, user)
                groups.append(group)
        return groups

    async def group_members(self, group: str, *, strict: bool = False) -> list[str]:
        """The group's users; [] when Slack cannot say (logged), or _MembershipUnknown with `strict` (a
        permission check: always asked afresh, never from the paging cache)."""
        try:
            return await self._list_group(group) if strict else list(await self._groups.get(group))
        except SlackError as exc:
            log.warning("usergroups.users.list %s failed: %s", group, exc.error)
            if strict:
                raise _MembershipUnknown(exc.error) from None
            return []

    async def _list_group(self, group: str) -> list[str]:
        answer = await self.slack.call("usergroups.users.list", usergroup=group)
        return [str(u) for u in answer.get("users") or []]


class _MembershipUnknown(Exception):
    """Slack could not say who is in a channel or group right now."""


def incidents_of(rt: Runtime) -> Incidents:
    ctx = rt.feature(Incidents)
    if ctx is None:
        raise RuntimeError("incidents are not installed in this runtime (bot.incidents.install.install)")
    return ctx


def mention_all(ids: Iterable[str]) -> str:
    return ", ".join(sorted(f"<!subteam^{i}>" if i.startswith("S") else f"<@{i}>" for i in ids))


def _code(text: str) -> str:
    from bot.slack.mrkdwn import escape, one_line

    return f"`{escape(one_line(text, 40)).replace('`', '')}`"


MENTION = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$")
GROUP_MENTION = re.compile(r"^<!subteam\^(S[A-Z0-9]+)(?:\|[^>]*)?>$")


def parse_person(token: str) -> str:
    """`<@U123|bob>` (how Slack sends a mention with should_escape) → U123."""
    from bot.slack.mrkdwn import escape, one_line

    if match := MENTION.match(token):
        return match.group(1)
    raise UserError(f"I can't tell who `{escape(one_line(token, 40))}` is. Mention them so Slack sends their id: "
                    f"type @ and pick the person from the list.")
