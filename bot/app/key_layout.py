"""Start-up key migration: a deployment's Redis keys from before the Cluster-ready layout, renamed once.

Until layout 2 no key had a hash tag (`chatops:stream`, `chatops:inc:INC-7:tl`); now a queue's keys share `{chatops}`
and an incident's share `{chatops:inc:INC-7}` (bot/queue/keys.py). A process of this version started on the old keys
would see no queued jobs, no escalation timers and no incidents. So every process calls `ensure_layout` before it
uses Redis (bot/app/features.py):

    <ns>:layout         "2" once the keys are in this layout: a process that reads it does nothing more
    <ns>:layout:lease   held, and renewed, by the one process renaming; the others wait for it, then read "2"

Each old key is renamed with RENAMENX: it keeps its value, its TTL and (a stream) its consumer group and pending
entries, and a new key that exists already is never overwritten (the old one is then left and counted). Cut short,
the next start carries on where it stopped.

Only a single Redis (or Sentinel's primary) can hold old keys: the old layout's scripts could not run on a Cluster.
On a Cluster the marker is set when no old key exists, and start-up is refused when one does: RENAME cannot move a
key to another slot.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from bot.incidents.limits import limits_prefix
from bot.incidents.store import incident_key
from bot.queue import lease
from bot.settings import ConfigError

log = logging.getLogger("chatops")

LAYOUT = 2
LEASE_TTL_S = 10.0
WAIT_S = 300.0  # how long a starting process waits for another one that is renaming
SCAN_COUNT = 1000
RENAME_BATCH = 500

# What renamed, after `<ns>:` (the names bot/queue/stream.py, bot/incidents/store.py, timeline.py and limits.py used).
_QUEUE = re.compile(r"stream|delayed|delayed:jobs|dead|(?:id|alive|diag:active):.+", re.DOTALL)
_INCIDENT = re.compile(r"inc:(INC-\d+)(?::(.+))?", re.DOTALL)
_LIMITS = re.compile(r"declare-limit:(.+)", re.DOTALL)


class LayoutReport(msgspec.Struct):
    renamed: Counter[str] = msgspec.field(default_factory=Counter)  # family → keys renamed
    kept: list[str] = msgspec.field(default_factory=list)  # old keys left alone: their new name exists already

    def summary(self) -> str:
        families = ", ".join(f"{n} {family}" for family, n in sorted(self.renamed.items())) or "none"
        line = f"Redis keys renamed to layout {LAYOUT}: {families}"
        if self.kept:
            line += f"; {len(self.kept)} old key(s) kept because the new name exists, e.g. {self.kept[0]!r}"
        return line


class Names(msgspec.Struct, frozen=True):
    """Old name → new name for one namespace (the queue's name, which is also the incidents' namespace)."""

    namespace: str
    queue_key: Callable[[str], str]  # Queue.key

    def new_name(self, old: str) -> tuple[str, str] | None:
        """(family, new name) of an old-layout key; None for a key that kept its name."""
        prefix = self.namespace + ":"
        if not old.startswith(prefix):
            return None
        found = self._family(old[len(prefix):])
        return found if found and found[1] != old else None  # a namespace with its own tag kept every name

    def _family(self, rest: str) -> tuple[str, str] | None:
        if _QUEUE.fullmatch(rest):
            return "queue", self.queue_key(rest)
        if match := _INCIDENT.fullmatch(rest):
            return "incident", incident_key(self.namespace, match[1], *filter(None, [match[2]]))
        if match := _LIMITS.fullmatch(rest):
            return "declaration limit", f"{limits_prefix(self.namespace)}:{match[1]}"
        return None

    @property
    def pattern(self) -> str:
        """SCAN MATCH for every key under `<ns>:`, glob characters in the namespace escaped."""
        return re.sub(r"([*?\[\]\\])", r"\\\1", self.namespace) + ":*"


async def ensure_layout(redis: aioredis.Redis, names: Names) -> LayoutReport | None:
    """Bring the keys to layout 2 unless the marker says they are; None when there was nothing to do."""
    marker = f"{names.namespace}:layout"
    if await _layout(redis, marker) >= LAYOUT:
        return None
    async with lease.held(redis, f"{marker}:lease", wait_s=WAIT_S, ttl_s=LEASE_TTL_S):
        if await _layout(redis, marker) >= LAYOUT:  # another process finished while we waited
            return None
        report = await _upgrade(redis, names)
        await redis.set(marker, LAYOUT)
    if report.kept:
        log.warning("%s", report.summary())
    elif report.renamed:
        log.info("%s", report.summary())
    return report


async def _layout(redis: aioredis.Redis, marker: str) -> int:
    raw = await redis.get(marker)
    return int(raw) if raw is not None else 0


async def _upgrade(redis: aioredis.Redis, names: Names) -> LayoutReport:
    if isinstance(redis, RedisCluster):
        await _refuse_old_keys_on_cluster(redis, names)
        return LayoutReport()
    report, batch = LayoutReport(), []
    async for old, (family, new) in _old_keys(redis, names):
        batch.append((old, family, new))
        if len(batch) >= RENAME_BATCH:
            await _rename(redis, batch, report)
            batch = []
    await _rename(redis, batch, report)
    return report


async def _refuse_old_keys_on_cluster(redis: RedisCluster, names: Names) -> None:
    async for old, _ in _old_keys(redis, names):
        raise ConfigError(
            f"REDIS_URL is a Redis Cluster holding keys of the layout before {LAYOUT} (such as {old!r}), which a "
            f"cluster cannot rename across slots: start this version once on the single Redis they came from (it "
            f"renames them at start-up), then copy the keys to the cluster")


async def _old_keys(redis: aioredis.Redis, names: Names) -> AsyncIterator[tuple[str, tuple[str, str]]]:
    """(old name, (family, new name)) for every old-layout key, found by SCAN (all primaries on a cluster)."""
    async for raw in redis.scan_iter(match=names.pattern, count=SCAN_COUNT):
        old = _text(raw)
        if (found := names.new_name(old)) is not None:
            yield old, found


async def _rename(redis: aioredis.Redis, batch: Iterable[tuple[str, str, str]], report: LayoutReport) -> None:
    batch = list(batch)
    if not batch:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for old, _, new in batch:
            pipe.renamenx(_raw(old), _raw(new))
        results = await pipe.execute(raise_on_error=False)
    for (old, family, _), result in zip(batch, results, strict=True):
        if result is True or result == 1:
            report.renamed[family] += 1
        elif result is False or result == 0:
            report.kept.append(old)
        # else: "no such key" — gone since the SCAN saw it (it expired, a lease or an id key): nothing to move


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw


def _raw(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")
