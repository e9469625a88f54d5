"""What incidents look like in Slack: the pinned header, the announcement, and the lines posted as things change.

Every function returns `(text, blocks)` (the text is the notification fallback) or a plain mrkdwn string for
ephemeral answers. All user text (titles, notes, reasons, resolutions, names from PagerDuty) goes through
`inert`, so a title containing `<!channel>` pings nobody and `*bold*` cannot restyle the header.
"""

from __future__ import annotations

import re
import time
from typing import Any

from bot import durations
from bot.diagnosis.render.slack import fix_buttons
from bot.incidents.model import SEVERITY_MEANING, Incident, role_label
from bot.incidents.notice import AlertSource
from bot.slack.limits import SLACK
from bot.slack.mrkdwn import (
    SECTION_TEXT_MAX,
    context,
    escape,
    fit_lines,
    inert,
    one_line,
    plain,
    slack_date,
    truncate,
)

ACK_ACTION = "incident_ack"
DIAGNOSE_ACTION = "incident_diagnose"
ESCALATE_ACTION = "incident_escalate"
RESOLVE_ACTION = "incident_resolve"
ASSIGN_ROLE_ACTION = "incident_assign_role"  # opens ASSIGN_ROLE_VIEW, a modal with a role and a person to pick
HEADER_ACTIONS = (ACK_ACTION, DIAGNOSE_ACTION, ESCALATE_ACTION, RESOLVE_ACTION, ASSIGN_ROLE_ACTION)
ASSIGN_ROLE_VIEW = "incident_assign_role_view"  # the modal's callback_id; its private_metadata is the incident id
ROLE_BLOCK, ROLE_PICK, PERSON_BLOCK, PERSON_PICK = "role", "role_pick", "person", "person_pick"
PRIVATE_MARK = ":lock: Private"
DECLARE_ACTION = "incident_declare_confirm"  # the Declare button of a preview; its value is the proposal token
CANCEL_DECLARE_ACTION = "incident_declare_cancel"

SEVERITY_ICON = {"P0": ":red_circle:", "P1": ":large_orange_circle:", "P2": ":large_yellow_circle:",
                 "P3": ":large_blue_circle:"}
RESOLVED_ICON = ":white_check_mark:"
FIELD_MAX = 2000
_USER_ID = re.compile(r"^[UW][A-Z0-9]+$")

ESCALATE_USAGE = ("*`/escalate`* `[reason]` pages the next level now · `/escalate P0 [reason]` raises the severity · "
                  "`/escalate @user` or `@group` pages them")


# ------------------------------------------------------------------------------------------------ formatting

def format_duration(seconds: float) -> str:
    """`45s`, `4m12s`, `1h02m`, `2d03h` — compact, for "acknowledged after 4m12s"."""
    return durations.format_duration(seconds)


def who(actor: str | None) -> str:
    """A Slack user id as a mention; anything else (a PagerDuty name, "alertmanager") as inert text."""
    if not actor:
        return "nobody"
    if _USER_ID.match(actor):
        return f"<@{actor}>"
    return inert(one_line(actor, 80))


def channel_ref(incident: Incident) -> str:
    if incident.channel and incident.mode == "channel":
        return f"<#{incident.channel}>"
    return f"the thread of {escape(incident.id)}"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, SECTION_TEXT_MAX)}}


def _context(text: str) -> dict[str, Any]:
    return context(text)


def _field(name: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": truncate(f"*{name}*\n{value}", FIELD_MAX)}


def title_line(incident: Incident, limit: int = 300) -> str:
    return inert(one_line(incident.title, limit))


def plain_summary(incident: Incident) -> str:
    """Notification fallback text: escaped (never a mention), one line."""
    return escape(one_line(f"{incident.id} [{incident.severity}] {incident.title} — {incident.status}", 300))


# ------------------------------------------------------------------------------------------------ header

def header(incident: Incident, *, now: float | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The pinned header: title, severity, status, commander, service, elapsed time, paging, buttons."""
    now = now or time.time()
    icon = RESOLVED_ICON if not incident.is_open else SEVERITY_ICON[incident.severity]
    private = f" · {PRIVATE_MARK}" if incident.private else ""
    heading = (f"{icon} *{escape(incident.id)} · {incident.severity} {SEVERITY_MEANING[incident.severity]} · "
               f"{incident.status.capitalize()}*{private}\n*{title_line(incident)}*")
    running = ("Duration", format_duration(incident.elapsed_s(now))) if not incident.is_open else \
        ("Running for", format_duration(incident.elapsed_s(now)))
    fields = [
        _field("Severity", f"{incident.severity} ({SEVERITY_MEANING[incident.severity]})"),
        _field("Status", incident.status.capitalize()),
        _field("Commander", who(incident.commander)),
        *([_field("Roles", roles_line(incident))] if incident.roles else []),
        _field("Service", f"`{escape(incident.service)}`" if incident.service else "none named"),
        _field("Declared", slack_date(incident.declared_at)),
        _field(*running),
        _field("Paging", paging_line(incident, now)),
    ]
    first = {**_section(heading), "block_id": f"chatops:{incident.id}:header"}  # tests and people find it by this
    blocks: list[dict[str, Any]] = [first, {"type": "section", "fields": fields[:10]}]
    if incident.latest_verdict or incident.failing_checks:
        blocks.append(_section(diagnosis_summary(incident)))
    if incident.last_update and incident.last_update_at:
        blocks.append(_context(f"Last update {slack_date(incident.last_update_at, '{time}')}: "
                               f"{inert(one_line(incident.last_update, 500))}"))
    if not incident.is_open:
        fix = inert(one_line(incident.resolution or "no summary given", 1000))
        blocks.append(_section(f"{RESOLVED_ICON} Resolved by {who(incident.resolved_by)}: {fix}"))
    else:
        blocks.append(header_actions(incident))
        if (latest := incident.latest_verdict) and latest.fixes:
            blocks.append(fix_buttons(latest.run_id, latest.fixes, f"fixes:{incident.id}"))
    return plain_summary(incident), blocks


VERDICT_ICON = {"ok": ":white_check_mark:", "warn": ":warning:", "fail": ":x:", "error": ":grey_question:",
                "skipped": ":fast_forward:"}


def diagnosis_summary(incident: Incident) -> str:
    """The latest verdict with its time (it replaces the one before), then its failing checks."""
    lines = []
    if latest := incident.latest_verdict:
        lines.append(f"*Latest diagnosis* of `{escape(latest.service)}` at {slack_date(latest.at, '{time}')}: "
                     f"{VERDICT_ICON.get(latest.status, '')} {inert(one_line(latest.headline, 300))}")
        if latest.since_last:
            lines.append(f"_{escape(latest.since_last)}_")
    if incident.failing_checks:
        shown = fit_lines([f"• {inert(one_line(c, 200))}" for c in incident.failing_checks], 2500, max_lines=5)
        lines.append(f"*Failing checks*\n{shown}")
    return "\n".join(lines)


def roles_line(incident: Incident) -> str:
    return "\n".join(f"{role_label(role)}: {who(user)}" for role, user in sorted(incident.roles.items()))


def paging_line(incident: Incident, now: float) -> str:
    paging = incident.paging
    if paging.acknowledged and paging.acked_at:
        started = paging.first_paged_at or incident.declared_at
        return f"acknowledged by {who(paging.acked_by)} after {format_duration(paging.acked_at - started)}"
    if not incident.ready and paging.level == 0:
        return "starting…"
    if reason := nobody_paged_reason(incident):
        return f"nobody paged: {reason}"
    if paging.severity is None or paging.level == 0:
        return "nobody paged"
    line = f"level {paging.level} paged, not acknowledged"
    if on_call := [f"{who(t)} ({inert(name)})" for o in paging.orders[-1:] for t, name in o.schedules.items()]:
        line += f"; on call: {', '.join(on_call)}"
    if paging.next_escalation_at and incident.is_open:
        line += f"; escalates {slack_date(paging.next_escalation_at, '{time}')}"
    return line


def header_actions(incident: Incident) -> dict[str, Any]:
    value = incident.id

    def button(label: str, action: str, style: str | None = None, confirm: dict | None = None) -> dict:
        element: dict[str, Any] = {"type": "button", "action_id": action, "value": value,
                                   "text": {"type": "plain_text", "text": label}}
        if style:
            element["style"] = style
        if confirm:
            element["confirm"] = confirm
        return element

    def confirm(title: str, text: str, yes: str) -> dict[str, Any]:
        return {"title": {"type": "plain_text", "text": title}, "text": {"type": "mrkdwn", "text": text},
                "confirm": {"type": "plain_text", "text": yes}, "deny": {"type": "plain_text", "text": "Cancel"}}

    elements = [
        button("Acknowledge", ACK_ACTION, "primary"),
        button("Diagnose", DIAGNOSE_ACTION),
        button("Escalate", ESCALATE_ACTION, confirm=confirm(
            "Escalate?", f"Page the next escalation level for {escape(incident.id)} now?", "Page them")),
        button("Resolve", RESOLVE_ACTION, "danger", confirm=confirm(
            "Resolve?", f"Mark {escape(incident.id)} resolved? Say what fixed it with "
                        "`/incident note` (or use `/incident resolve <what fixed it>` instead).", "Resolve")),
        button("Assign role", ASSIGN_ROLE_ACTION),
    ]
    return {"type": "actions", "block_id": f"incident:{incident.id}", "elements": elements}


def assign_role_view(incident: Incident, roles: list[str]) -> dict[str, Any]:
    """The modal the header's "Assign role" opens: a role (commander first) and a person. Roles whose name is
    longer than an option value may be are left to `/incident role`, and the list stops at Slack's 100."""
    options = [{"text": plain(role_label(r), SLACK.option_text), "value": r}
               for r in roles if len(r) <= SLACK.option_value][:SLACK.select_options]
    role = {"type": "input", "block_id": ROLE_BLOCK, "label": plain("Role", 2000),
            "element": {"type": "static_select", "action_id": ROLE_PICK, "options": options,
                        "placeholder": plain("Pick a role", 150)}}
    person = {"type": "input", "block_id": PERSON_BLOCK, "label": plain("Person", 2000),
              "element": {"type": "users_select", "action_id": PERSON_PICK,
                          "placeholder": plain("Pick a person", 150)}}
    intro = _section(f"Assign a role in *{escape(incident.id)}*. The same as `/incident role <role> @user`; the "
                     f"new holder is invited to the channel.")
    return {"type": "modal", "callback_id": ASSIGN_ROLE_VIEW, "private_metadata": incident.id,
            "title": plain("Assign a role", 24), "submit": plain("Assign", 24), "close": plain("Cancel", 24),
            "blocks": [intro, role, person]}


def topic(incident: Incident) -> str:
    """Channel topic (plain text, ≤ 250 characters)."""
    text = f"{incident.id} {incident.severity} {incident.status}: {one_line(incident.title, 200)}"
    return escape(text)[:250]


# ------------------------------------------------------------------------------------------------ posts

def announcement(incident: Incident) -> tuple[str, list[dict[str, Any]]]:
    if incident.private:
        return private_announcement(incident)
    icon = RESOLVED_ICON if not incident.is_open else SEVERITY_ICON[incident.severity]
    where = f"<#{incident.channel}>" if incident.channel and incident.mode == "channel" else "its thread"
    state = "resolved" if not incident.is_open else incident.status
    by = who(incident.reporter) if incident.source == "slack" else AlertSource(incident.source).title
    text = (f"{icon} *{escape(incident.id)}* {incident.severity} — *{title_line(incident)}* ({state}). "
            f"Declared by {by}; follow it in {where}.")
    if incident.service:
        text += f" Service: `{escape(incident.service)}`."
    return plain_summary(incident), [_section(text)]


def private_announcement(incident: Incident) -> tuple[str, list[dict[str, Any]]]:
    """Says a private incident exists (people should know something is being handled), never what it is."""
    state = "resolved" if not incident.is_open else incident.status
    text = (f"{PRIVATE_MARK}: *{escape(incident.id)}* {incident.severity} ({state}), declared by "
            f"{who(incident.reporter)}. Its commander, {who(incident.commander)}, adds whoever is needed.")
    return f"{incident.id} [{incident.severity}] private incident — {state}", [_section(text)]


def line(text: str) -> tuple[str, list[dict[str, Any]]]:
    """A one-section message whose text is already safe mrkdwn."""
    return truncate(text, 3000), [_section(text)]


def declared_line(incident: Incident) -> str:
    return (f"{SEVERITY_ICON[incident.severity]} {who(incident.reporter)} declared *{escape(incident.id)}* "
            f"({incident.severity}): {title_line(incident)}")


def status_line(incident: Incident, actor: str, old: str, new: str, note: str | None,
                next_due: float | None) -> str:
    text = f"*Status:* {old} → *{new}* ({who(actor)})"
    if note:
        text += f"\n{inert(note)}"
    if next_due and new != "resolved":
        text += f"\n_Next update due {slack_date(next_due, '{time}')}._"
    return text


def severity_line(actor: str, old: str, incident: Incident, paged: list[str]) -> str:
    new = incident.severity
    text = f"{SEVERITY_ICON[new]} *Severity:* {old} → *{new}* ({who(actor)})"
    if paged:
        return text + f"\nPaging what {new} adds: {', '.join(paged)}."
    if reason := nobody_paged_reason(incident):
        return text + f"\nNobody is paged: {reason}."
    if _rank(new) < _rank(old):
        return text + f"\nNobody new to page: everyone {new} names was paged already."
    paging = incident.paging
    if not paging.acknowledged and paging.level < len(paging.levels):
        return text + f"\nNobody new to page; escalation continues with {new}'s policy."
    return text + "\nNobody new to page."


def paged_note(incident: Incident, paged: list[str]) -> str:
    """The sentence after a severity change in the changer's answer: who is paged now, if anyone."""
    if paged:
        return f" Paging what {incident.severity} adds: {', '.join(paged)}."
    if reason := nobody_paged_reason(incident):
        return f" Nobody is paged: {reason}."
    return " Nobody new to page."


def nobody_paged_reason(incident: Incident) -> str | None:
    """Why no page has reached anyone for `incident`; None when one has, one is on its way, or paging has
    not started yet. Read from the incident's own page orders (and `first_paged_at`, set by a delivered page),
    so no answer says "paged" or "escalation" when nobody was paged."""
    paging = incident.paging
    if paging.severity is None or paging.first_paged_at is not None or any(not o.done for o in paging.orders):
        return None
    if withheld := next((o.withheld for o in paging.orders if o.withheld), ""):
        return f"its pages were held back: it was {withheld} before their turn"
    if paging.orders:
        return "every page so far failed (the incident channel says why)"
    return f"the {paging.severity} paging policy names nobody to page"


def ack_answer(incident: Incident) -> str:
    """The acknowledger's own answer (command or button)."""
    if reason := nobody_paged_reason(incident):
        return f"You acknowledged {escape(incident.id)}. Nobody had been paged ({reason}), so no page was stopped."
    return f"You acknowledged {escape(incident.id)}; the escalation is stopped."


def ack_line(actor: str, after_s: float, via: str, nobody_reason: str | None = None) -> str:
    source = {"pagerduty": " in PagerDuty", "opsgenie": " in Opsgenie"}.get(via, "")
    if nobody_reason:
        return (f":raising_hand: Acknowledged by {who(actor)} after {format_duration(after_s)}. Nobody had been "
                f"paged ({nobody_reason}).")
    return (f":raising_hand: Page acknowledged by {who(actor)}{source} after {format_duration(after_s)}. "
            f"Escalation stopped.")


def escalate_answer(incident_id: str, level: int, targets: list[str]) -> str:
    """The escalator's answer (command or button)."""
    return f"Paging level {level} of {escape(incident_id)}: {', '.join(targets)}."


def resolve_answer(incident: Incident) -> str:
    if reason := nobody_paged_reason(incident):
        return f"{escape(incident.id)} is resolved. Thank you. Nobody had been paged ({reason}), so no page is open."
    return f"{escape(incident.id)} is resolved. Thank you — the pages are being closed."


def level_targets(levels: list[Any]) -> list[str]:
    """Who the first of a severity's policy levels pages, by name ([] when the policy names nobody)."""
    if not levels:
        return []
    return targets_text([(p, i) for p, ids in levels[0].routes().items() for i in (ids or (None,))])


def declare_paging(levels: list[Any], severity: str) -> str:
    """What declaring at `severity` pages, from the policy's first level (the pages themselves go out next)."""
    if names := level_targets(levels):
        return f"on-call is being paged ({', '.join(names)})"
    hint = "; page someone by name with `/escalate @user`" if _rank(severity) <= 1 else ""
    return f"nobody is paged: the {severity} paging policy names nobody{hint}"


def declare_preview(why: str, title: str, severity: str, service: str | None, targets: list[str], typed: str,
                    token: str, *, private: bool = False) -> tuple[str, list[dict[str, Any]]]:
    """The answer to an `/incident` that looks typed by accident: what it would declare and page, and buttons."""
    shown = inert(one_line(title, 200))
    where = (f", service `{escape(service)}`" if service else "") + (", private" if private else "")
    pages = f"it would page {', '.join(targets)}" if targets else f"it would page nobody ({severity} names nobody)"
    text = (f"{why} Nothing was declared and nobody was paged.\n*Declare INC as “{shown}” {severity}{where}?* "
            f"Declaring {pages}. Press Declare, or type `/incident declare {inert(one_line(typed, 200))}`. "
            f"`/incident help` lists the subcommands.")

    def button(label: str, action: str, style: str | None = None) -> dict[str, Any]:
        return {"type": "button", "action_id": action, "value": token, **({"style": style} if style else {}),
                "text": {"type": "plain_text", "text": label}}

    actions = {"type": "actions", "block_id": f"declare:{token}",
               "elements": [button("Declare", DECLARE_ACTION, "danger"), button("Cancel", CANCEL_DECLARE_ACTION)]}
    return truncate(text, 3000), [_section(text), actions]


def escalated_line(level: int, targets: list[str], reason: str, actor: str | None) -> str:
    if reason == "timer":
        head = f":rotating_light: No acknowledgement in time: paging level {level}"
    else:
        head = f":rotating_light: {who(actor)} escalated: paging level {level}"
    return head + (f" ({', '.join(targets)})." if targets else ".")


def people_paged_line(actor: str, people: list[str], reason: str | None) -> str:
    text = f":rotating_light: {who(actor)} paged {', '.join(people)}."
    if reason:
        text += f" Reason: {inert(one_line(reason, 500))}"
    return text


def resolved_line(incident: Incident) -> str:
    fix = inert(incident.resolution) if incident.resolution else "_no summary given_"
    return (f"{RESOLVED_ICON} *{escape(incident.id)} resolved* by {who(incident.resolved_by)} after "
            f"{format_duration(incident.elapsed_s())}.\n*What fixed it:* {fix}")


def reminder_line(incident: Incident, since_s: float, every_s: float) -> str:
    return (f":alarm_clock: No status update on *{escape(incident.id)}* for {format_duration(since_s)} "
            f"({incident.severity} expects one every {format_duration(every_s)}). Post one: "
            f"`/incident status {incident.status} <what we know now>`.")


def no_service_schedule(service: str | None) -> str:
    """Why `{schedule: by_service}` found no schedule (kept in the page order, said in the channel)."""
    if not service:
        return "the incident names no service, and ONCALL_FILE has no `default_schedule`"
    return (f"ONCALL_FILE's `services:` gives service `{inert(one_line(service, 60))}` no schedule, and it has no "
            f"`default_schedule`")


def unpaged_line(level: int, why: str) -> str:
    return f":warning: Level {level} paged nobody from an on-call schedule: {why}."


def page_failed_line(error: str) -> str:
    return f":warning: {inert(one_line(error, 600))}"


def targets_text(targets: list[tuple[str, str | None]]) -> list[str]:
    """Human names for page targets: Slack ids as mentions, providers by name."""
    out = []
    for provider, target in targets:
        if provider == "slack" and target:
            out.append(f"<!subteam^{target}>" if target.startswith("S") else f"<@{target}>")
        elif target:
            out.append(f"{escape(provider)} {escape(target)}")
        else:
            out.append({"pagerduty": "PagerDuty on-call", "opsgenie": "Opsgenie on-call"}.get(
                provider, f"{escape(provider)} on-call"))
    return list(dict.fromkeys(out))


LIST_SHOWN = 15  # rows of `/incident list`: what fits Slack's 3,000 characters with long titles


def list_text(incidents: list[Incident], now: float | None = None, *, total: int | None = None) -> str:
    """The open incidents shown (at most LIST_SHOWN, most severe and oldest first) of `total` open ones."""
    if not incidents:
        return "No open incidents. Declare one with `/incident <title> [P0|P1|P2|P3] [service]`."
    now = now or time.time()
    total = max(total or 0, len(incidents))
    more = f"; the {len(incidents)} most severe shown, oldest first" if total > len(incidents) else ""
    rows = [f"*Open incidents ({total:,}{more}):*"]
    for inc in sorted(incidents, key=lambda i: (i.severity, i.declared_at)):
        where = f"<#{inc.channel}>" if inc.channel and inc.mode == "channel" else "thread"
        rows.append(f"{SEVERITY_ICON[inc.severity]} *{escape(inc.id)}* {inc.severity} {inc.status} · "
                    f"{title_line(inc, 120)} · {format_duration(inc.elapsed_s(now))} · "
                    f"commander {who(inc.commander)} · {where}")
    return truncate("\n".join(rows), 3000)


def _rank(severity: str) -> int:
    return int(severity[1])
