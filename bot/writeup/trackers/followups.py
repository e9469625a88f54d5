"""The follow-ups index: action items across incidents, with the open ones ordered so that `/incident followups` and
a handoff DM read the page they show, not every item ever recorded.

Redis (under the bot's namespace):
    wu:followups                 hash: `<incident>|<item>` → FollowUp JSON, done ones too (the report, an export)
    wu:followups:open            zset `<incident>|<item>` → when recorded, the items not done of public incidents
    wu:followups:open:private    the same for private incidents (few; each is read to ask who may see it)
    wu:followups:open:@<user>    the items not done that `<user>` owns, public and private
    wu:followups:open:built      set once the sorted sets were filled from the hash (deployments that predate them)

Every write is idempotent (each item is put in the sets it belongs to and taken out of the others), so the
export's write and a list's refresh of an open incident may run in any order. A write is not atomic, though: two
writers moving an item to different owners at once may leave it in the set of the one that lost, and the one-time
build may put back an item an export marked done meanwhile. The hash holds the truth, so a list reads each item it
shows from the hash anyway, skips one that no longer belongs to the set it was listed in, and takes it out of it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from bot.queue.replies import as_text
from bot.runtime import Runtime

Visible = Callable[[Any], Awaitable[bool]]  # may the reader see this incident record


@dataclass
class FollowUp:
    incident: str
    item: str
    text: str
    owner: str | None  # Slack user id
    at: float
    due: str | None
    done: bool
    ticket: dict[str, Any] | None = None  # Ticket fields
    private: bool = False  # of a private incident: listed only to someone who may see it

    def age_s(self, now: float) -> float:
        return max(now - self.at, 0.0)

    @property
    def key(self) -> str:
        return f"{self.incident}|{self.item}"


def _key(rt: Runtime, *parts: str) -> str:
    return rt.key("wu", "followups", *parts)


def _owner_key(rt: Runtime, owner: str | None) -> str:
    return _key(rt, "open", f"@{owner or ''}")


async def write(rt: Runtime, items: list[FollowUp]) -> None:
    """Store the items and put each open one in its sorted sets (out of the others, and out of a previous owner's)."""
    if not items:
        return
    before = await rt.redis.hmget(_key(rt), [f.key for f in items])
    changed = [(item, raw) for item, raw in zip(items, before, strict=True)
               if raw is None or _load(raw) != item]  # a list's refresh of an unchanged incident writes nothing
    if not changed:
        return
    pipe = rt.redis.pipeline(transaction=False)
    pipe.hset(_key(rt), mapping={item.key: json.dumps(asdict(item)) for item, _ in changed})
    for item, raw in changed:
        _place(pipe, rt, item, _load(raw) if raw is not None else None)
    await pipe.execute()


def _place(pipe: Any, rt: Runtime, item: FollowUp, previous: FollowUp | None) -> None:
    keep = set() if item.done else {_key(rt, "open", "private") if item.private else _key(rt, "open"),
                                    _owner_key(rt, item.owner)}
    drop = {_key(rt, "open"), _key(rt, "open", "private"), _owner_key(rt, item.owner)}
    if previous is not None:
        drop.add(_owner_key(rt, previous.owner))
    for index in sorted(drop - keep):
        pipe.zrem(index, item.key)
    for index in sorted(keep):
        pipe.zadd(index, {item.key: item.at})


async def every(rt: Runtime) -> list[FollowUp]:
    """Every item in the hash, done ones too (an export's or a report's view, not a list's)."""
    return [_load(v) for v in (await rt.redis.hgetall(_key(rt))).values()]


async def open_items(rt: Runtime) -> list[FollowUp]:
    """Every item not done, oldest first, through the open indexes (the done ones piling up are not read)."""
    await _ensure_built(rt)
    public = await _ranked(rt, _key(rt, "open"), _open_public)
    return sorted(public + await _ranked(rt, _key(rt, "open", "private"), _open_private), key=lambda f: f.at)


async def page(rt: Runtime, visible: Visible, limit: int, *, owner: str | None = None) -> tuple[list[FollowUp], int]:
    """The first `limit` open items the reader may see, oldest first, and how many they may see in all: public
    items are counted by their index and only the shown ones are read; private ones (few) are all read. With an
    `owner`, that person's items (all read: one person's open items)."""
    await _ensure_built(rt)
    if owner is not None:
        mine = await _visible(rt, await _ranked(rt, _owner_key(rt, owner), _owns(owner)), visible)
        return mine[:limit], len(mine)
    private = await _visible(rt, await _ranked(rt, _key(rt, "open", "private"), _open_private), visible)
    public = await _ranked(rt, _key(rt, "open"), _open_public, limit)
    total = int(await rt.redis.zcard(_key(rt, "open"))) + len(private)
    return sorted(public + private, key=lambda f: f.at)[:limit], total


def _open_public(item: FollowUp) -> bool:
    return not item.done and not item.private


def _open_private(item: FollowUp) -> bool:
    return not item.done and item.private


def _owns(owner: str) -> Callable[[FollowUp], bool]:
    return lambda item: not item.done and item.owner == owner


async def _ranked(rt: Runtime, index: str, belongs: Callable[[FollowUp], bool], limit: int = 0) -> list[FollowUp]:
    """The first `limit` items of a sorted set (0: all) that still belong to it by their record. An entry a racing
    write left behind is taken out, and the page read again without it."""
    while True:
        keys = [as_text(k) for k in await rt.redis.zrange(index, 0, limit - 1)]
        raws = await rt.redis.hmget(_key(rt), keys) if keys else []
        found = [_load(raw) if raw is not None else None for raw in raws]
        stale = [key for key, item in zip(keys, found, strict=True) if item is None or not belongs(item)]
        if not stale:
            return [item for item in found if item is not None]
        await _unlist(rt, index, stale, belongs)


async def _unlist(rt: Runtime, index: str, keys: list[str], belongs: Callable[[FollowUp], bool]) -> None:
    """Take `keys` out of the set, then read their records again: a write that made one belong meanwhile stored
    its record before it added it, so it is seen here and added back."""
    await rt.redis.zrem(index, *keys)
    again = [_load(raw) for raw in await rt.redis.hmget(_key(rt), keys) if raw is not None]
    back = {item.key: item.at for item in again if belongs(item)}
    if back:
        await rt.redis.zadd(index, back)


async def _visible(rt: Runtime, items: list[FollowUp], visible: Visible) -> list[FollowUp]:
    """The items of public incidents, and of private ones the reader may see (each incident read once)."""
    from bot.writeup.view import store_of

    asked = sorted({f.incident for f in items if f.private})
    records = await store_of(rt).records(asked)
    seen = {i: r is not None and await visible(r) for i, r in zip(asked, records, strict=True)}
    return [f for f in items if not f.private or seen[f.incident]]


async def _ensure_built(rt: Runtime) -> None:
    """Items stored before the sorted sets existed are placed once, from the hash (privacy read from each
    incident's record); writes keep the sets since."""
    built = _key(rt, "open", "built")
    if await rt.redis.exists(built):
        return
    items = [f for f in await every(rt) if not f.done]
    await _mark_private(rt, items)
    pipe = rt.redis.pipeline(transaction=False)
    private = {item.key: json.dumps(asdict(item)) for item in items if item.private}
    if private:  # the list reads an item's privacy from the item
        pipe.hset(_key(rt), mapping=private)
    for item in items:
        _place(pipe, rt, item, None)
    pipe.set(built, 1)
    await pipe.execute()


async def _mark_private(rt: Runtime, items: list[FollowUp]) -> None:
    from bot.writeup.view import store_of

    ids = sorted({f.incident for f in items})
    private = {i for i, r in zip(ids, await store_of(rt).records(ids), strict=True) if r is not None and r.private}
    for item in items:
        item.private = item.incident in private


def _load(raw: bytes | str) -> FollowUp:
    return FollowUp(**json.loads(raw))


__all__ = ["FollowUp", "every", "open_items", "page", "write"]
