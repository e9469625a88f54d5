"""`/incident` — declare an incident, or run one: status, sev, commander, role, note, ack, resolve, join, list,
help. Who may do each is the paging policy's `permissions:` (Incidents.authorize), checked here server-side.

Every answer is ephemeral and says what happened or what to type instead; the public record (the header, the
lines in the channel, the timeline) is written by bot/incidents, mostly from the queue, after the ack.
"""

from __future__ import annotations

import difflib
import inspect
import re
import uuid
from typing import Any

from bot.errors import UserError
from bot.incidents import escalation, lifecycle, messages, roles
from bot.incidents.model import (
    SEVERITIES,
    STATUSES,
    channel_name,
    parse_incident_id,
)
from bot.incidents.service import GROUP_MENTION, MENTION, Incidents, incidents_of, parse_person
from bot.runtime import Runtime
from bot.slack.mrkdwn import escape, one_line
from bot.writeup.context import Writeup
from handlers.commands import incident_writeup
from handlers.errors import answers_errors

TITLE_MAX = 200
SEVERITY_TOKEN = re.compile(r"^(?:p|sev)-?(\d+)$", re.IGNORECASE)
DECLARE_USAGE = ("`/incident <title> [P0|P1|P2|P3] [service] [private]`, for example "
                 "`/incident Checkout errors P1 api`")
PRIVATE_WORD = "private"  # the last word of a declaration: the incident gets a private channel
SEVERITY_HELP = "P0 (critical), P1 (high), P2 (medium) or P3 (low)"


def severity_of(token: str) -> str | None:
    """`P1`/`p1`/`sev1` → "P1"; None when the token is not severity-shaped; UserError for `P7`."""
    match = SEVERITY_TOKEN.match(token)
    if not match:
        return None
    severity = f"P{int(match.group(1))}"
    if severity not in SEVERITIES:
        raise UserError(f"Unknown severity `{escape(one_line(token, 10))}`: use {SEVERITY_HELP}.")
    return severity


def parse_declaration(words: list[str], known_services: list[str]) -> tuple[str, str, str | None]:
    """`<title> [P0-P3] [service]` → (title, severity, service). A trailing word is the service only when the
    services file knows it; after a severity, an unknown word is an error (a typo'd service, not a title)."""
    words = list(words)
    service = severity = None
    if len(words) >= 2 and words[-1].lower() in known_services:
        service = words.pop().lower()
    elif len(words) >= 3 and severity_of(words[-2]) and not severity_of(words[-1]):
        guess = difflib.get_close_matches(words[-1].lower(), known_services, n=1, cutoff=0.6)
        hint = f' Did you mean "{guess[0]}"?' if guess else ""
        raise UserError(f'Unknown service "{escape(one_line(words[-1], 40))}".{hint} Known services: '
                        f"{', '.join(sorted(known_services)) or 'none are configured'}.")
    if words and (found := severity_of(words[-1])):
        severity = found
        words.pop()
    title = " ".join(words).strip()
    if not title:
        raise UserError(f"Give the incident a title: {DECLARE_USAGE}.")
    if len(title) > TITLE_MAX:
        raise UserError(f"Keep the title under {TITLE_MAX} characters (this one has {len(title)}); put the detail "
                        f"in `/incident note <text>` once it is declared.")
    return title, severity or "P2", service


def split_private(words: list[str]) -> tuple[list[str], bool]:
    """A trailing `private` is the option, not the title's last word (`… private P2` keeps it in the title)."""
    if len(words) >= 2 and words[-1].lower() == PRIVATE_WORD:
        return words[:-1], True
    return words, False


# Words that start something meant for the bot rather than an incident's title: roles, and verbs people type
# for a subcommand. A text starting with one is only previewed (declaring pages someone at 3 a.m.); the value
# is the command probably meant, offered when it exists. The one list of such words.
COMMAND_WORDS: dict[str, str | None] = {
    "acknowledge": "ack", "acked": "ack", "close": "resolve", "closed": "resolve", "fixed": "resolve",
    "update": "status", "state": "status", "show": "list", "open": "list", "escalate": "/escalate",
    "page": "/escalate", "oncall": "/escalate", "on-call": "/escalate", "summarise": "summary",
    "summarize": "summary", "pm": "postmortem", "retro": "postmortem", "role": "role", "roles": "role",
    "scribe": "role", "liaison": "role", "comms": "role", "lead": "role", "tech": "role", "tech_lead": "role",
    "owner": "commander", "ic": "commander", "assign": "role", "invite": "join", "join": "join", "leave": None,
    "mute": None, "unmute": None, "subscribe": None, "unsubscribe": None, "cancel": None, "reopen": None,
    "set": None, "add": None, "remove": None, "start": None, "stop": None, PRIVATE_WORD: None, "public": None,
}


def accidental(words: list[str], known: list[str]) -> str | None:
    """Why `/incident <words>` looks typed by accident (a command word, a mention, a subcommand typo), or None."""
    first, shown = words[0].lower().strip(":,."), escape(one_line(words[0], 30))
    if first in COMMAND_WORDS:
        meant = COMMAND_WORDS[first]
        hint = f" Did you mean `{_command(meant)}`?" if meant and (meant.startswith("/") or meant in known) else ""
        return f'"{shown}" reads like a command, not an incident title.{hint}'
    if MENTION.match(words[0]) or GROUP_MENTION.match(words[0]):
        return "That starts with a mention, not an incident title."
    guess = next((name for name in known if _mistyped(first, name)), None)
    return f'Unknown subcommand "{shown}". Did you mean `{_command(guess)}`?' if guess else None


def _mistyped(word: str, name: str) -> bool:
    """One slip away from a subcommand (a letter missing, extra, wrong, or two swapped): `stats`, `resolv`, `stauts`.
    Not a word of its own that merely looks alike — "Repo went private", "Reports slow" are titles."""
    if len(word) < 3 or word == name or word == name + "s":
        return False
    if len(word) == len(name):
        diffs = [i for i, (a, b) in enumerate(zip(word, name)) if a != b]
        swapped = len(diffs) == 2 and diffs[1] == diffs[0] + 1 and word[diffs[0]] == name[diffs[1]] \
            and word[diffs[1]] == name[diffs[0]]
        return len(diffs) == 1 or swapped
    short, long_ = sorted((word, name), key=len)
    return len(long_) - len(short) == 1 and any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def _command(name: str) -> str:
    return name if name.startswith("/") else f"/incident {name}"


def split_explicit(args: list[str]) -> tuple[str | None, list[str]]:
    """An optional leading `INC-12`."""
    if args and parse_incident_id(args[0]):
        return args[0], args[1:]
    return None, args


def register(app: Any, rt: Runtime) -> None:
    @app.command("/incident")
    @answers_errors
    async def incident(ack: Any, command: dict, **_: Any) -> None:
        ctx = incidents_of(rt)
        words = (command.get("text") or "").split()
        sub = words[0].lower() if words else ""
        if not words:
            raise UserError(f"Give the incident a title: {DECLARE_USAGE}. `/incident help` lists the rest.")
        if sub in READ_SUBCOMMANDS:
            await ack(text=await READ_SUBCOMMANDS[sub](ctx, command, words[1:]), response_type="ephemeral")
            return
        handler = subcommands(rt).get(sub)
        if handler is None:
            await ack(**await declare_or_preview(ctx, command, words), response_type="ephemeral")
            return
        if not await first_time(ctx, command):
            text = ALREADY_DONE
        else:
            text = await handler(ctx, command, words[1:])
        await ack(text=text, response_type="ephemeral")


async def declare_or_preview(ctx: Incidents, command: dict, words: list[str]) -> dict[str, Any]:
    """`/incident declare <title>` and a real title declare at once; text that looks typed by accident only
    gets a preview with a Declare button (`lifecycle.propose`): it declares nothing and pages nobody."""
    direct = words[0].lower() == "declare"
    words = words[1:] if direct else words
    why = None if direct else accidental(words, sorted({*subcommands(ctx.rt), *READ_SUBCOMMANDS}))
    declared, private = split_private(words)
    title, severity, service = parse_declaration(declared, list(ctx.rt.services().services))
    if not direct and why is None and len(title.split()) == 1:
        why = f'A one-word title ("{escape(one_line(title, 30))}") is more likely a command typed by accident.'
    if why is None:
        return {"text": await declare_now(ctx, command, title, severity, service, private)}
    token = await lifecycle.propose(ctx, title=title, severity=severity, service=service,  # type: ignore
                                    reporter=command["user_id"], origin_channel=command["channel_id"],
                                    private=private)
    targets = messages.level_targets(ctx.policy.levels_for(severity))
    text, blocks = messages.declare_preview(why, title, severity, service, targets, " ".join(words), token,
                                            private=private)
    return {"text": text, "blocks": blocks}


async def declare_now(ctx: Incidents, command: dict, title: str, severity: str, service: str | None,
                      private: bool) -> str:
    incident, created = await lifecycle.declare(
        ctx, title=title, severity=severity, service=service, reporter=command["user_id"],  # type: ignore
        origin_channel=command["channel_id"], trigger_id=command.get("trigger_id"), private=private)
    return declared_answer(ctx, incident, created)


def declared_answer(ctx: Incidents, incident: Any, created: bool) -> str:
    """`/incident <title>` and the preview's Declare button answer alike."""
    if not created:
        return f"*{incident.id}* was already declared for this command; nothing new was opened."
    if ctx.settings.incident_create_channels:
        name = channel_name(ctx.settings.incident_channel_prefix, incident.number, incident.title,
                            incident.declared_at)
        kind = "private channel" if incident.private else "channel"
        where = f"its {kind} `#{name}` is being opened and you will be invited"
    else:
        where = "it runs in a thread under its header in this channel"
    paging = messages.declare_paging(ctx.policy.levels_for(incident.severity), incident.severity)
    diagnosing = f"; diagnosing `{escape(incident.service)}`" if incident.service else ""
    return (f"Declaring *{incident.id}* ({incident.severity}): {messages.title_line(incident)} — {where}; "
            f"{paging}{diagnosing}.")


ALREADY_DONE = "Already done: this was Slack repeating the same command."


async def first_time(ctx: Incidents, command: dict) -> bool:
    """A Slack retry of a change (X-Slack-Retry-Num, same trigger_id) must not escalate or page twice."""
    trigger = command.get("trigger_id")
    return not trigger or await ctx.store.claim_command(str(trigger))


def _key(command: dict) -> str:
    return str(command.get("trigger_id") or uuid.uuid4().hex)


async def status_command(ctx: Incidents, command: dict, args: list[str]) -> str:
    """`/incident status investigating|identified|monitoring|resolved [note]` post a status update"""
    explicit, args = split_explicit(args)
    example = "/incident status INC-12 monitoring"
    if not args:
        raise UserError(f"Which status? Use one of {', '.join(STATUSES)}, for example "
                        f"`/incident status monitoring error rate back to normal`.")
    new = args[0].lower()
    if new not in STATUSES:
        guess = difflib.get_close_matches(new, STATUSES, n=1, cutoff=0.5)
        hint = f' Did you mean "{guess[0]}"?' if guess else ""
        raise UserError(f'Unknown status "{escape(one_line(args[0], 30))}".{hint} Use one of '
                        f"{', '.join(STATUSES)}.")
    incident = await ctx.find_for_command(command["channel_id"], explicit, example)
    note = " ".join(args[1:]).strip() or None
    user = command["user_id"]
    await ctx.authorize(incident, user, "resolve" if new == "resolved" else "status")
    incident = await lifecycle.change_status(ctx, incident.id, user, new, note, key=_key(command))  # type: ignore
    return f"{incident.id} is now *{new}*." + ("" if note else " Tip: add a note next time, it goes in the record.")


async def sev_command(ctx: Incidents, command: dict, args: list[str]) -> str:
    """`/incident sev P1` change the severity (a raise pages whoever the new severity adds)"""
    explicit, args = split_explicit(args)
    new = severity_of(args[0]) if args else None
    if new is None:
        raise UserError(f"Which severity? `/incident sev P1` — use {SEVERITY_HELP}.")
    incident = await ctx.find_for_command(command["channel_id"], explicit, "/incident sev INC-12 P1")
    await ctx.authorize(incident, command["user_id"], "severity")
    reason = " ".join(args[1:]).strip() or None
    change = await escalation.change_severity(ctx, incident.id, command["user_id"], new,  # type: ignore
                                              key=_key(command), reason=reason)
    return f"{incident.id} is now *{new}* (was {change.old}).{messages.paged_note(change.incident, change.paged)}"


async def commander_command(ctx: Incidents, command: dict, args: list[str]) -> str:
    """`/incident commander @user` hand over the commander role"""
    explicit, args = split_explicit(args)
    if not args:
        raise UserError("Who? `/incident commander @user` — mention them so Slack sends their id.")
    person = parse_person(args[0])
    incident = await ctx.find_for_command(command["channel_id"], explicit, "/incident commander INC-12 @user")
    await ctx.authorize(incident, command["user_id"], "commander")
    await lifecycle.set_commander(ctx, incident.id, command["user_id"], person, key=_key(command))
    return f"<@{person}> is now the commander of {incident.id}."


async def note_command(ctx: Incidents, command: dict, args: list[str]) -> str:
    """`/incident note <text>` add a note to the timeline"""
    explicit, args = split_explicit(args)
    text = " ".join(args).strip()
    if not text:
        raise UserError("What should the note say? `/incident note restarted the primary at 14:05`.")
    incident = await ctx.find_for_command(command["channel_id"], explicit, "/incident note INC-12 <text>")
    await ctx.authorize(incident, command["user_id"], "note")
    await lifecycle.add_note(ctx, incident.id, command["user_id"], text, key=_key(command))
    return f"Noted in {incident.id}'s timeline."


async def ack_command(ctx: Incidents, command: dict, args: list[str]) -> str:
    """`/incident ack` acknowledge the page (stops the escalation)"""
    explicit, _ = split_explicit(args)
    incident = await ctx.find_for_command(command["channel_id"], explicit, "/incident ack INC-12")
    await ctx.authorize(incident, command["user_id"], "ack")
    result = await escalation.acknowledge(ctx, incident.id, command["user_id"], "command")
    if result.already:
        paging = result.incident.paging
        return f"{incident.id} was already acknowledged by {messages.who(paging.acked_by)}."
    return messages.ack_answer(result.incident)


async def resolve_command(ctx: Incidents, command: dict, args: list[str]) -> str:
    """`/incident resolve <what fixed it>` resolve"""
    explicit, args = split_explicit(args)
    fix = " ".join(args).strip()
    if not fix:
        raise UserError("Say what fixed it: `/incident resolve rolled back deploy 4512`. It goes in the record.")
    incident = await ctx.find_for_command(command["channel_id"], explicit, "/incident resolve INC-12 <what fixed it>")
    await ctx.authorize(incident, command["user_id"], "resolve")
    resolved = await lifecycle.resolve(ctx, incident.id, command["user_id"], fix, key=_key(command))
    return messages.resolve_answer(resolved)


async def role_command(ctx: Incidents, command: dict, args: list[str]) -> str:
    """`/incident role scribe|comms|tech_lead @user` assign a role (`/incident role` lists them)"""
    explicit, args = split_explicit(args)
    if not args:
        raise UserError(roles.roles_help(ctx.settings))
    role = roles.parse_role(args[0], ctx.settings)
    if len(args) != 2:
        raise UserError(f"Who? `/incident role {role} @user` — one person, mentioned so Slack sends their id.")
    person = parse_person(args[1])
    incident = await ctx.find_for_command(command["channel_id"], explicit, f"/incident role INC-12 {role} @user")
    return await roles.give(ctx, incident, command["user_id"], role, person, key=_key(command))


async def join_command(ctx: Incidents, command: dict, args: list[str]) -> str:
    """`/incident join INC-12` ask to take part in an incident (its commander is told)"""
    explicit, rest = split_explicit(args)
    if not explicit or rest:
        raise UserError("Which incident? `/incident join INC-12`; `/incident list` shows the open ones.")
    incident = await ctx.find_for_command(command["channel_id"], explicit, "/incident join INC-12")
    return await roles.ask_to_join(ctx, incident, command["user_id"])


def subcommands(rt: Runtime) -> dict[str, Any]:
    """This command's own subcommands, and the write-up's when that feature is installed."""
    if rt.feature(Writeup) is None:
        return SUBCOMMAND_HANDLERS
    return {**incident_writeup.SUBCOMMANDS, **SUBCOMMAND_HANDLERS}


SUBCOMMAND_HANDLERS = {"status": status_command, "sev": sev_command, "severity": sev_command,
                       "commander": commander_command, "note": note_command, "ack": ack_command,
                       "resolve": resolve_command, "role": role_command, "join": join_command}


async def list_command(ctx: Incidents, command: dict, args: list[str]) -> str:
    """`/incident list` open incidents (a private one only to the people in it)"""
    shown, total = await ctx.open_for(command["user_id"], messages.LIST_SHOWN)
    return messages.list_text(shown, total=total)


async def help_command(ctx: Incidents, command: dict, args: list[str]) -> str:
    """`/incident help` this list"""
    return help_text(ctx.rt)


# Subcommands that change nothing: they answer a Slack retry again rather than "Already done".
READ_SUBCOMMANDS = {"list": list_command, "help": help_command}
HELP_HEAD = ("*`/incident` — declare and run incidents*\n"
             "• `/incident <title> [P0|P1|P2|P3] [service]` declare (default P2); with a service its diagnosis "
             "starts. A title that reads like a command (or one word, or a mention) is shown to you first, "
             "with a Declare button\n"
             "• `/incident <title> P1 private` declare a private incident: its channel is private, and outside "
             "it only its commander, role holders and incident admins see it; its commander adds people")
HELP_FOOT = ("• `/incident declare <title> …` declare at once, whatever the title starts with\n"
             "Inside an incident channel the incident is implied; elsewhere name it: "
             "`/incident status INC-12 monitoring`.")


def help_text(rt: Runtime) -> str:
    """Built from the subcommand tables, each line the first line of its handler's docstring, so a new
    subcommand is listed the moment it exists (one without a docstring is listed by name)."""
    names: dict[Any, list[str]] = {}
    for name, handler in {**SUBCOMMAND_HANDLERS, **subcommands(rt), **READ_SUBCOMMANDS}.items():
        names.setdefault(handler, []).append(name)
    lines = [HELP_HEAD, *(f"• {_help_line(handler, aliases)}" for handler, aliases in names.items()), HELP_FOOT]
    return "\n".join([*lines, messages.ESCALATE_USAGE])


def _help_line(handler: Any, aliases: list[str]) -> str:
    doc = (inspect.getdoc(handler) or "").strip().splitlines()
    line = doc[0] if doc and doc[0].startswith("`/incident") else f"`/incident {aliases[0]}`"
    return line + (f" (or `{'`, `'.join(aliases[1:])}`)" if len(aliases) > 1 else "")
