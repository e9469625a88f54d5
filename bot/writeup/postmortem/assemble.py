"""Facts → Markdown through a Jinja2 template the team can replace (POSTMORTEM_TEMPLATE).

The environment escapes for Markdown the way Jinja2's autoescape escapes for HTML: every `{{ value }}` goes
through `markdown.inline` unless a filter already produced `Md`. It is sandboxed, so a replaced template can
format the facts but not reach into Python.

    markdown = render_markdown(facts)                      # pure
    markdown = await postmortem_markdown(rt, "INC-12")     # reads the incident and its timeline
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    pass_context,
)
from jinja2.sandbox import SandboxedEnvironment

from bot.incidents.timeline import Entry
from bot.runtime import Runtime
from bot.writeup.context import user_names, writeup_of
from bot.writeup.postmortem import markdown as md
from bot.writeup.postmortem.draft import detection
from bot.writeup.postmortem.facts import PostmortemFacts, build_facts, fmt_duration
from bot.writeup.postmortem.impact import Impact, measure_impact
from bot.writeup.slacktext import MENTION_IDS
from bot.writeup.trackers.store import stored_tickets
from bot.writeup.view import IncidentView, load_incident

DEFAULT_TEMPLATE = Path(__file__).resolve().parent / "templates" / "postmortem.md.j2"
_USER_ID = re.compile(r"^[UW][A-Z0-9]+$")


class PostmortemError(Exception):
    """A postmortem could not be written (unknown incident, broken template): the sentence says which."""


def _finalize(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, md.Md):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    return md.inline(value)


@pass_context
def _person(ctx: Any, user: str | None) -> md.Md:
    if not user:
        return md.Md("—")
    if user == "bot":
        return md.Md("the bot")
    pm = ctx.get("pm")
    names = getattr(pm, "names", {}) or {}
    name = names.get(user, user)
    return md.inline("@" + name if _USER_ID.match(user) else name, 80)


def _utc(at: float | None) -> md.Md:
    if at is None:
        return md.Md("—")
    return md.Md(datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S"))


def _utc_time(at: float | None) -> md.Md:
    return md.Md(datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S")) if at is not None else md.Md("—")


def _quote(text: str, limit: int = 500) -> md.Md:
    return md.Md("“" + md.inline(text, limit) + "”")


def _link(url: str | None, label: str = "link") -> md.Md:
    return md.link(label, url)


def make_environment(template_dir: Path) -> SandboxedEnvironment:
    env = SandboxedEnvironment(loader=FileSystemLoader(str(template_dir)), autoescape=False, finalize=_finalize,
                               undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                               keep_trailing_newline=True)
    env.filters.update({
        "md": lambda v, limit=md.DEFAULT_LIMIT: md.inline(v, limit),
        "cell": lambda v, limit=300: md.inline(v, limit),
        "code": lambda v, limit=300: md.code(v, limit),
        "block": lambda v, limit=4000: md.block(v, limit),
        "quote": _quote,
        "link": _link,
        "person": _person,
        "utc": _utc,
        "utc_time": _utc_time,
        "duration": lambda s: md.Md(fmt_duration(s)),
        "checkbox": lambda done: md.Md("[x]" if done else "[ ]"),
    })
    return env


@lru_cache(maxsize=8)
def _template(path: str, mtime: float) -> Template:
    file = Path(path)
    return make_environment(file.parent).get_template(file.name)


def load_template(path: Path | None = None) -> Template:
    """The team's template (re-read when the file changes), else the built-in one."""
    file = (path or DEFAULT_TEMPLATE).resolve()
    try:
        return _template(str(file), file.stat().st_mtime)
    except (OSError, TemplateError) as exc:
        raise PostmortemError(f"The postmortem template {file} cannot be used: {exc}") from None


def render_markdown(facts: PostmortemFacts, template: Path | None = None) -> str:
    try:
        text = load_template(template).render(pm=facts)
    except TemplateError as exc:
        raise PostmortemError(f"The postmortem template failed on {facts.incident_id}: {exc}") from None
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


# ------------------------------------------------------------------------------------------------ from Redis

async def gather_facts(rt: Runtime, incident_id: str, *, now: float | None = None) -> PostmortemFacts:
    w = writeup_of(rt)
    incident = await load_incident(rt, incident_id)
    if incident is None:
        raise PostmortemError(f"There is no incident {incident_id}.")
    entries = await w.timeline.entries(incident_id)
    names = await user_names(rt, people_in(entries, incident))
    impact = await incident_impact(rt, incident, entries, time.time() if now is None else now)
    facts = build_facts(incident, entries, names=names, now=now, impact=impact)
    tickets = await stored_tickets(rt, incident_id)
    for item in facts.action_items:
        item.ticket = tickets.get(item.id)
    return facts


async def incident_impact(rt: Runtime, incident: IncidentView, entries: list[Entry], now: float) -> Impact:
    """The service's metrics from the impact start (else the declaration) to the resolution (else now)."""
    found = detection(entries, incident.declared_at)
    start = found.impact_start if found.impact_start is not None else incident.declared_at
    start_from = found.source if found.impact_start is not None else "declaration"
    end = incident.resolved_at or now
    if not incident.service:
        return Impact(start, end, start_from, unknown="the incident names no service, so no metric was read")
    try:
        spec = rt.services().services.get(incident.service)
    except Exception as exc:  # a broken services file: say so, do not fail the draft
        return Impact(start, end, start_from, unknown=f"the services file cannot be read: {str(exc)[:200]}")
    if spec is None:
        return Impact(start, end, start_from, unknown=f"the services file no longer has {incident.service}")
    return await measure_impact(rt.aws, spec, start, end, start_from)


def people_in(entries: list[Entry], incident: Any) -> set[str]:
    """Every Slack user the postmortem may name: actors, commanders, owners, and people mentioned in text."""
    found = {incident.reporter, incident.commander, incident.resolved_by, incident.acked_by}
    for e in entries:
        if e.removed:
            continue
        found.add(e.actor)
        for key in ("to", "from", "owner"):
            value = e.data.get(key)
            if isinstance(value, str):
                found.add(value)
        action = e.data.get("action")
        if action and action.get("owner"):
            found.add(action["owner"])
        if "<@" in e.text:
            found.update(MENTION_IDS.findall(e.text))
    return {u for u in found if isinstance(u, str) and _USER_ID.match(u)}


async def postmortem_markdown(rt: Runtime, incident_id: str) -> str:
    """What `chatops postmortem INC-n` prints (and what gets published)."""
    w = writeup_of(rt)
    facts = await gather_facts(rt, incident_id.upper())
    return render_markdown(facts, w.settings.postmortem_template)


__all__ = ["DEFAULT_TEMPLATE", "PostmortemError", "gather_facts", "load_template", "make_environment",
           "people_in", "postmortem_markdown", "render_markdown"]
