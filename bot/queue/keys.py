"""Hash tags: which Redis keys must live in one Redis Cluster slot, decided in one place.

Redis Cluster runs a script or a MULTI/EXEC only when every key it touches hashes to one slot, and only the text
inside a key's first `{…}` is hashed. So the keys one script or transaction touches share a tag:

    {<namespace>}:stream, {<namespace>}:id:<job>, ...   a queue (its scripts touch stream, delayed set, id keys)
    {<namespace>:inc:<id>}, {<namespace>:inc:<id>}:tl   one incident: record, steps, pages, timeline

Everything else (global indexes, caches, single-key records) is left untagged and spreads over the shards.

A namespace that already carries a tag (`REDIS_NAMESPACE={chatops}`) is kept as it is: every key then hashes
to that one slot, which is what asking for it means (a cluster shared with other apps, one slot for this bot).
"""

from __future__ import annotations

import re

# The text between the first "{" and the next "}", when not empty: what Redis Cluster hashes.
_TAG = re.compile(r"\{([^}]+)\}")

__all__ = ["has_tag", "tagged"]


def has_tag(name: str) -> bool:
    """True when Redis Cluster hashes only a part of `name`: its first `{…}` is closed and not empty."""
    start = name.find("{")
    return start >= 0 and bool(_TAG.match(name, start))


def tagged(namespace: str, *entity: object) -> str:
    """The tagged prefix of an entity's keys: `tagged("chatops", "inc", "INC-7")` → `{chatops:inc:INC-7}`.

    Keys built as `tagged(...) + ":<suffix>"` share one slot. Under a namespace that has its own tag the prefix is
    untagged text after it, so that tag still decides (every key in one slot)."""
    name = ":".join([namespace, *(str(p) for p in entity)])
    return name if has_tag(namespace) else "{" + name + "}"
