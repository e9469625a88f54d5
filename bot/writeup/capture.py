"""Slack events → the incident timeline, as they happen.

Registered as an event recorder (`rt.hooks.event_recorders`); handlers/events.py has already dropped Slack's
retries (same `event_id`). What is recorded, for a channel that is an incident channel (or a thread-mode
incident's thread):

    message / thread reply    an entry `msg:<channel>:<ts>` (kind message | reply) with the text as Slack sent it
    message_changed           the same entry gets the new text, `edited`, and keeps the first text in data.original
    message_deleted           the same entry is marked `removed` (kept, so a back-fill cannot bring it back)
    reaction_added/_removed   an entry `reaction:<channel>:<ts>:<name>:<user>`, and the message's data.reactions
    pin_added/_removed        an entry `pin:<channel>:<ts>`, and the message's data.pinned
    member_joined_channel     an entry `joined:<channel>:<user>` (the bot itself joining late starts a back-fill)

Derived flags are recomputed from the message's own state after every change (`derive`), so the live path and
the back-fill path (bot/writeup/backfill.py), which sees only the final state, agree:

    key event     pinned, or carrying the KEY_EVENT_REACTION (default 📌 `pushpin`)
    action item   text starting with `action:` or `TODO:`, or carrying ACTION_ITEM_REACTION; its owner is the
                  first mentioned user, else the author; ACTION_DONE_REACTION (✅) marks it done

Events may arrive out of order: an edit before its message records the message as edited, and a reaction before
its message waits (an hour) in `wu:pending:…` for it. The bot's own messages are not recorded here: Bolt drops them, and the incident feature writes its actions to
the timeline itself.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from msgspec.structs import replace

from bot.incidents.timeline import Entry, EntryKind, message_entry_id
from bot.queue.replies import as_text
from bot.runtime import Runtime
from bot.writeup.context import CaptureRules, Writeup, bot_identity, writeup_of
from bot.writeup.requests import request_backfill
from bot.writeup.slacktext import mentioned_users
from bot.writeup.view import POST_MARK, incident_for

log = logging.getLogger("bot.capture")

# Message subtypes that are something a person (or another app) said; the rest are channel housekeeping.
SPOKEN_SUBTYPES = {None, "", "thread_broadcast", "file_share", "me_message", "bot_message"}
_LEADING_MARKUP = re.compile(r"^[\s*_~>`•-]+")
PENDING_TTL_S = 3600


# ------------------------------------------------------------------------------------------------ messages

def is_spoken(message: dict) -> bool:
    return message.get("subtype") in SPOKEN_SUBTYPES and not message.get("hidden")


def is_own(message: dict, identity: tuple[str, str]) -> bool:
    """The bot's own post (its user, its bot id, or the incident feature's metadata mark)."""
    user_id, bot_id = identity
    if user_id and message.get("user") == user_id:
        return True
    if bot_id and message.get("bot_id") == bot_id:
        return True
    return ((message.get("metadata") or {}).get("event_type")) == POST_MARK


def message_entry(incident_id: str, channel: str, message: dict, rules: CaptureRules) -> Entry:
    """A Slack message (an event's or an API answer's) as a timeline entry, with its derived flags."""
    ts = str(message["ts"])
    thread_ts = message.get("thread_ts") or None
    reply = bool(thread_ts) and thread_ts != ts
    actor = message.get("user") or (f"bot:{message['bot_id']}" if message.get("bot_id") else None)
    data: dict[str, Any] = {"reactions": _reactions(message)}
    if message.get("pinned_to"):
        data["pinned"] = True
    if message.get("files"):
        data["files"] = [str(f.get("name") or f.get("title") or "file") for f in message["files"]][:20]
    entry = Entry(id=message_entry_id(channel, ts), incident_id=incident_id, at=float(ts),
                  kind=EntryKind.REPLY if reply else EntryKind.MESSAGE, actor=actor, text=str(message.get("text") or ""),
                  ts=ts, thread_ts=thread_ts, channel=channel, data=data,
                  edited=bool(message.get("edited")))
    return derive(entry, rules)


def _reactions(message: dict) -> dict[str, list[str]]:
    return {str(r["name"]): [str(u) for u in r.get("users") or []] for r in message.get("reactions") or []
            if r.get("name") and r.get("users")}


def derive(entry: Entry, rules: CaptureRules) -> Entry:
    """Recompute key event and action item from the message's text, reactions and pin (idempotent)."""
    reactions: dict[str, list[str]] = entry.data.get("reactions") or {}
    entry.key_event = bool(entry.data.get("pinned")) or bool(reactions.get(rules.key_reaction))
    action = action_item_of(entry.text, entry.actor, reactions, rules)
    if action is None:
        entry.data.pop("action", None)
    else:
        entry.data["action"] = action
    return entry


def action_item_of(text: str, author: str | None, reactions: dict[str, list[str]],
                   rules: CaptureRules) -> dict[str, Any] | None:
    body = _LEADING_MARKUP.sub("", text or "")
    lowered = body.lower()
    prefix = next((p for p in rules.action_prefixes if lowered.startswith(p)), None)
    if prefix is None and not reactions.get(rules.action_reaction):
        return None
    what = body[len(prefix):].strip() if prefix else body.strip()
    mentioned = mentioned_users(what)
    return {"text": what, "owner": mentioned[0] if mentioned else author,
            "source": "prefix" if prefix else "reaction", "done": bool(reactions.get(rules.done_reaction))}


def merge_backfilled(stored: Entry, fresh: Entry, rules: CaptureRules) -> Entry | None:
    """A back-filled copy of a message we may already hold: the API's text, reactions and pin are the current
    state; a deletion we saw live stays (history no longer lists the message). None when nothing changed."""
    if stored.removed:
        return None
    merged = replace(stored, data=dict(stored.data))
    if fresh.text != stored.text:
        merged.data.setdefault("original", stored.text)
        merged.text, merged.edited = fresh.text, True
    merged.data["reactions"] = fresh.data.get("reactions", {})
    merged.data.pop("pinned", None)
    if fresh.data.get("pinned"):
        merged.data["pinned"] = True
    if fresh.data.get("files"):
        merged.data["files"] = fresh.data["files"]
    merged = derive(merged, rules)
    return merged if merged != stored else None


# ------------------------------------------------------------------------------------------------ events

async def record_event(rt: Runtime, event: dict, envelope: dict) -> None:
    """The event recorder: route one Slack event to the timeline of the incident it belongs to."""
    w = rt.feature(Writeup)
    if w is None:
        return
    kind = event.get("type")
    handler = _HANDLERS.get(str(kind))
    if handler is not None:
        await handler(w, event)


async def _on_message(w: Writeup, event: dict) -> None:
    subtype = event.get("subtype")
    if subtype == "message_changed":
        await _on_edit(w, event)
    elif subtype == "message_deleted":
        await _on_delete(w, event)
    elif is_spoken(event) and event.get("ts"):
        if is_own(event, await bot_identity(w)):
            return
        channel = str(event.get("channel") or "")
        incident_id = await incident_for(w.rt, channel, event.get("thread_ts"))
        if incident_id:
            added = await w.timeline.add(message_entry(incident_id, channel, event, w.rules))
            if added is not None:
                await _apply_pending(w, added)


async def _on_edit(w: Writeup, event: dict) -> None:
    message = event.get("message") or {}
    previous = event.get("previous_message") or {}
    channel = str(event.get("channel") or "")
    if not message.get("ts") or is_own(message, await bot_identity(w)):
        return
    incident_id = await incident_for(w.rt, channel, message.get("thread_ts"))
    if not incident_id:
        return
    fresh = message_entry(incident_id, channel, message, w.rules)
    rules = w.rules

    def edit(stored: Entry) -> Entry | None:
        if stored.text == fresh.text:
            return None  # Slack also sends message_changed when a reply changes the parent's reply count
        stored.data.setdefault("original", stored.text)
        stored.text, stored.edited = fresh.text, True
        return derive(stored, rules)

    if await w.timeline.transform(incident_id, fresh.id, edit) is None:
        # We never saw the original (the bot was away): record the message as it is now.
        fresh.edited = True
        if previous.get("text") and previous.get("text") != fresh.text:
            fresh.data["original"] = previous["text"]
        await w.timeline.add(fresh)


async def _on_delete(w: Writeup, event: dict) -> None:
    channel = str(event.get("channel") or "")
    ts = event.get("deleted_ts") or (event.get("previous_message") or {}).get("ts")
    if not ts:
        return
    previous = event.get("previous_message") or {"ts": ts}
    incident_id = await incident_for(w.rt, channel, previous.get("thread_ts"))
    if not incident_id:
        return
    entry_id = message_entry_id(channel, str(ts))
    if await w.timeline.update(incident_id, entry_id, removed=True) is None:
        stub = message_entry(incident_id, channel, {**previous, "ts": ts}, w.rules)
        stub.removed = True  # remembered, so a later back-fill of a tombstone or a stale copy cannot revive it
        await w.timeline.add(stub)


async def _on_reaction(w: Writeup, event: dict) -> None:
    item = event.get("item") or {}
    if item.get("type") != "message" or not item.get("ts"):
        return
    channel, ts, user, name = str(item.get("channel") or ""), str(item["ts"]), event.get("user"), event.get("reaction")
    if not user or not name:
        return
    incident_id = await incident_for(w.rt, channel, await _thread_of(w, channel, ts))
    if not incident_id:
        return
    added = event.get("type") == "reaction_added"
    entry_id = f"reaction:{channel}:{ts}:{name}:{user}"
    at = float(event.get("event_ts") or ts)
    recorded = await w.timeline.record(incident_id, EntryKind.REACTION, entry_id=entry_id, at=at, actor=user,
                                       text=str(name), ts=ts, channel=channel, removed=not added)
    if recorded.removed == added:
        await w.timeline.update(incident_id, entry_id, removed=not added)
    rules = w.rules

    def react(stored: Entry) -> Entry | None:
        return derive(_with_reactions(stored, [((name, user), added)]), rules)

    if await w.timeline.transform(incident_id, message_entry_id(channel, ts), react) is None:
        # Events can arrive out of order: keep the reaction for its message, which applies it when it comes.
        key = _pending_key(w, incident_id, channel, ts)
        pipe = w.rt.redis.pipeline(transaction=False)
        pipe.hset(key, f"{name}\t{user}", "1" if added else "0")
        pipe.expire(key, PENDING_TTL_S)
        await pipe.execute()


def _with_reactions(stored: Entry, changes: list[tuple[list[str] | tuple[str, str], bool]]) -> Entry:
    """Apply ((emoji, user), added) changes to a message entry's reactions; an emoji nobody uses any more goes."""
    reactions = dict(stored.data.get("reactions") or {})
    for (name, user), added in changes:
        users = [u for u in reactions.get(name, []) if u != user] + ([user] if added else [])
        if users:
            reactions[name] = users
        else:
            reactions.pop(name, None)
    stored.data["reactions"] = reactions
    return stored


def _pending_key(w: Writeup, incident_id: str, channel: str, ts: str) -> str:
    return w.rt.key("wu", "pending", incident_id, channel, ts)


async def _apply_pending(w: Writeup, entry: Entry) -> None:
    """Reactions that arrived before this message (see _on_reaction)."""
    key = _pending_key(w, entry.incident_id, str(entry.channel), str(entry.ts))
    raw = await w.rt.redis.hgetall(key)
    if not raw:
        return
    changes = [(as_text(k).split("\t", 1), as_text(v) == "1") for k, v in raw.items()]
    rules = w.rules

    def react(stored: Entry) -> Entry:
        return derive(_with_reactions(stored, changes), rules)

    await w.timeline.transform(entry.incident_id, entry.id, react)
    await w.rt.redis.delete(key)


async def _on_pin(w: Writeup, event: dict) -> None:
    item = event.get("item") or {}
    message = item.get("message") or {}
    channel = str(item.get("channel") or event.get("channel_id") or "")
    ts = str(message.get("ts") or item.get("ts") or "")
    if item.get("type") not in (None, "message") or not ts:
        return
    incident_id = await incident_for(w.rt, channel, message.get("thread_ts") or await _thread_of(w, channel, ts))
    if not incident_id:
        return
    pinned = event.get("type") == "pin_added"
    entry_id = f"pin:{channel}:{ts}"
    at = float(event.get("event_ts") or ts)
    recorded = await w.timeline.record(incident_id, EntryKind.PIN, entry_id=entry_id, at=at, actor=event.get("user"),
                                       ts=ts, channel=channel, removed=not pinned)
    if recorded.removed == pinned:
        await w.timeline.update(incident_id, entry_id, removed=not pinned, at=at)
    rules = w.rules

    def pin(stored: Entry) -> Entry | None:
        if bool(stored.data.get("pinned")) == pinned:
            return None
        if pinned:
            stored.data["pinned"] = True
        else:
            stored.data.pop("pinned", None)
        return derive(stored, rules)

    known = await w.timeline.transform(incident_id, message_entry_id(channel, ts), pin)
    if known is None and message and is_spoken(message) and not is_own(message, await bot_identity(w)):
        # A pin event carries the whole message: record one we never saw.
        pinned_message = {**message, "pinned_to": [channel] if pinned else []}
        await w.timeline.add(message_entry(incident_id, channel, pinned_message, w.rules))


async def _on_member_joined(w: Writeup, event: dict) -> None:
    channel, user = str(event.get("channel") or ""), event.get("user")
    if not user:
        return
    incident_id = await incident_for(w.rt, channel)
    if not incident_id:
        return
    at = float(event.get("event_ts") or 0) or None
    await w.timeline.record(incident_id, EntryKind.MEMBER_JOINED, entry_id=f"joined:{channel}:{user}", at=at, actor=user,
                            channel=channel, data={"inviter": event.get("inviter")})
    user_id, _ = await bot_identity(w)
    if user_id and user == user_id:
        await request_backfill(w.rt, incident_id, reason="bot joined")  # the bot arrives late: read what it missed


async def _thread_of(w: Writeup, channel: str, ts: str) -> str | None:
    """The thread a message we recorded belongs to (a reaction event does not say)."""
    from bot.writeup.view import store_of

    store = store_of(w.rt)
    incident_id = await store.by_channel(channel)
    if incident_id:
        return None  # channel mode: any message in the channel counts, no need to look further
    for candidate in await store.open_in_thread_channel(channel):
        entry = await w.timeline.get(candidate, message_entry_id(channel, ts))
        if entry is not None:
            return entry.thread_ts
    return None


_HANDLERS = {
    "message": _on_message,
    "reaction_added": _on_reaction,
    "reaction_removed": _on_reaction,
    "pin_added": _on_pin,
    "pin_removed": _on_pin,
    "member_joined_channel": _on_member_joined,
}


__all__ = ["action_item_of", "derive", "is_own", "is_spoken", "merge_backfilled", "message_entry",
           "record_event", "writeup_of"]
