"""Incidents in Redis. Works with a bytes client (the runtime's) or a decoding one (the tests').

Keys, each under the runtime's namespace (`chatops:inc:seq`, ...). An incident's own keys share the hash tag
`{<namespace>:inc:<id>}` (bot/queue/keys.py): on Redis Cluster they live in one slot, and incidents spread over the
shards. The indexes over all incidents (open, all, chan, threads) are keys of their own, written with the record
(after it on one node; a cluster's nodes apply theirs concurrently) in idempotent commands, never in one
transaction with it; every save writes them again.

    inc:seq                       INCR → the next incident number
    {inc:<id>}                    the Incident as JSON
    inc:open                      set of open incident ids
    inc:all                       zset id → number (every incident ever declared)
    inc:declared                  zset id → declaration time (every incident): the window a report reads
    inc:declared:built            set once `inc:declared` was filled from `inc:all` (deployments that predate it)
    inc:open:rank                 zset id → severity, then declaration time, of the open public incidents: what
                                  `/incident list` pages through, so it reads only the records it shows
    inc:open:rank:private         the same for the open private ones (few; each is read to ask who may see it)
    inc:open:rank:built           set once both were filled from `inc:open` (deployments that predate them)
    inc:chan:<channel>            incident id of an incident channel
    inc:threads:<channel>         set of ids of thread-mode incidents living in <channel>
    inc:trigger:<trigger_id>      id declared by that slash-command invocation (a Slack retry finds it)
    inc:cmd:<trigger_id>          a change command (status, sev, /escalate…) already handled
    inc:alert:<group hash>        id opened by that Alertmanager groupKey (cleared when it resolves)
    inc:alert:<group hash>:owners hash: `<fingerprint>|<startsAt>` → the incident that recorded that alert firing
    inc:alert:<group hash>:<id>   hash: `<fingerprint>|<startsAt>` → firing | resolved, as that incident saw it
    {inc:<id>}:steps              hash: declaration step → its result ("channel" → C123, "header" → ts, ...)
    {inc:<id>}:posted             hash: message key → ts, so a retried job never posts the same message twice
    {inc:<id>}:pages              hash: `<dedup key>|<delivery>` → PageRecord JSON (one per provider or Slack user)
    {inc:<id>}:pagelease:<field>  held while one worker sends that delivery
    {inc:<id>}:lock               the mutation lock: a short lease renewed while held (bot/queue/lease.py)
    {inc:<id>}:tl, {inc:<id>}:tl:order  the timeline (bot/incidents/timeline.py)

Every change to an incident is a read-modify-write under its lock (`store.mutate(id)`), so a button press, a
command and an escalation timer racing on one incident see each other's writes.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from bot.incidents.model import SEVERITIES, Incident, PageRecord, incident_id
from bot.queue import lease
from bot.queue.batch import Batcher
from bot.queue.connection import durable
from bot.queue.keys import tagged
from bot.queue.replies import as_text
from checks.schema import dump_json, parse_json

LOCK_WAIT_S = 10.0  # a live holder renews its short lease; a dead one's is free within lease.LEASE_TTL_S
TRIGGER_TTL_S = 86_400
ALERT_OWNERS_TTL_S = 90 * 86_400  # how long a group remembers which incident an alert belonged to (replays)
RANKED, RANKED_PRIVATE, RANKED_BUILT = ("open", "rank"), ("open", "rank", "private"), ("open", "rank", "built")
DECLARED, DECLARED_BUILT = ("declared",), ("declared", "built")
READ_BATCH = 500  # records per pipelined read: a long window is read in bounded replies

class IncidentNotFound(LookupError):
    pass


class LockTimeout(TimeoutError):
    pass


class IncidentStore:
    def __init__(self, redis: aioredis.Redis, namespace: str = "chatops") -> None:
        self.redis = redis
        self.namespace = namespace
        self._reads = Batcher(redis)  # a burst of /diagnose asks "whose channel is this?" in one round trip
        self._ranked = False  # this process saw the list index built (bot/incidents/store.py _ensure_ranked)
        self._declared = False  # ... and the declaration index (_ensure_declared)

    def key(self, *parts: object) -> str:
        """A key of no one incident: an index, a trigger, a proposal."""
        return ":".join([self.namespace, "inc", *(str(p) for p in parts)])

    def incident_key(self, incident: str, *parts: object) -> str:
        """One incident's key, in that incident's hash slot: `{chatops:inc:INC-7}:steps`."""
        return incident_key(self.namespace, incident, *parts)

    # -- identity ---------------------------------------------------------------------------------------------

    async def next_number(self) -> int:
        return int(await self.redis.incr(self.key("seq")))

    async def claim_trigger(self, trigger_id: str, incident: str) -> str:
        """Bind a slash-command invocation to an incident id; returns the id it was already bound to, if any."""
        key = self.key("trigger", trigger_id)
        if await self.redis.set(key, incident, nx=True, ex=TRIGGER_TTL_S):
            return incident
        return as_text(await self.redis.get(key))

    async def claim_command(self, trigger_id: str) -> bool:
        """True the first time a slash-command invocation is seen (a Slack retry of it is then refused)."""
        return bool(await self.redis.set(self.key("cmd", trigger_id), 1, nx=True, ex=TRIGGER_TTL_S))

    async def by_trigger(self, trigger_id: str) -> str | None:
        raw = await self.redis.get(self.key("trigger", trigger_id))
        return as_text(raw) if raw is not None else None

    # -- records ----------------------------------------------------------------------------------------------

    async def create(self, incident: Incident) -> bool:
        """Store a new incident; False if the id exists (it never overwrites)."""
        created = await self.redis.set(self.incident_key(incident.id), dump_json(incident), nx=True)
        if not created:
            return False
        await self._index(incident)
        await durable(self.redis, self.incident_key(incident.id, "durable"), f"incident {incident.id}")
        return True

    async def get(self, incident: str) -> Incident | None:
        raw = await self.redis.get(self.incident_key(incident))
        return parse_json(Incident, raw) if raw is not None else None

    async def require(self, incident: str) -> Incident:
        found = await self.get(incident)
        if found is None:
            raise IncidentNotFound(incident)
        return found

    async def save(self, incident: Incident) -> None:
        incident.updated_at = time.time()
        await self._index(incident, record=dump_json(incident))  # one round trip: every job saves
        await durable(self.redis, self.incident_key(incident.id, "durable"), f"incident {incident.id}")

    async def _index(self, incident: Incident, *, record: str | None = None) -> None:
        """The indexes over incidents, sent after the record (`record`: written first in the same pipeline; on
        one node they land in that order, on a cluster each node applies its part concurrently): each write is
        idempotent, so a save cut short (a failover) is repaired by the next one, and no transaction spans two
        hash slots."""
        pipe = self.redis.pipeline(transaction=False)
        if record is not None:
            pipe.set(self.incident_key(incident.id), record)
        pipe.zadd(self.key("all"), {incident.id: incident.number})
        pipe.zadd(self.key(*DECLARED), {incident.id: incident.declared_at})
        if incident.is_open:
            pipe.sadd(self.key("open"), incident.id)
        else:
            pipe.srem(self.key("open"), incident.id)
        self._rank(pipe, incident)
        if incident.mode == "channel" and incident.channel:
            pipe.set(self.key("chan", incident.channel), incident.id)
        if incident.mode == "thread" and incident.channel:
            pipe.sadd(self.key("threads", incident.channel), incident.id)
        await pipe.execute()

    @contextlib.asynccontextmanager
    async def mutate(self, incident: str) -> AsyncIterator[Incident]:
        """Read under the incident's lock, let the caller change it, save it (not when the body raises)."""
        async with self.lock(incident):
            current = await self.require(incident)
            yield current
            await self.save(current)

    @contextlib.asynccontextmanager
    async def lock(self, incident: str, *, wait_s: float = LOCK_WAIT_S) -> AsyncIterator[None]:
        key, token = self.incident_key(incident, "lock"), uuid.uuid4().hex
        try:
            await lease.acquire(self.redis, key, token, wait_s=wait_s)
        except lease.LeaseBusy:
            raise LockTimeout(f"{incident} is locked by another worker") from None
        async with lease.kept_alive(self.redis, key, token):
            yield

    # -- lookups ----------------------------------------------------------------------------------------------

    async def by_channel(self, channel: str) -> str | None:
        raw = await self._reads.command("GET", self.key("chan", channel))
        return as_text(raw) if raw is not None else None

    async def open_in_thread_channel(self, channel: str) -> list[str]:
        """The open thread-mode incidents of a channel: its own set, each asked whether it is open (not every open
        incident read, once per message in that channel)."""
        ids = [as_text(i) for i in await self.redis.smembers(self.key("threads", channel))]
        flags = await self.redis.smismember(self.key("open"), ids) if ids else []
        return sorted((i for i, is_open in zip(ids, flags, strict=True) if is_open), key=_number)

    async def open_ids(self) -> list[str]:
        return sorted((as_text(i) for i in await self.redis.smembers(self.key("open"))), key=_number)

    async def list_open(self) -> list[Incident]:
        """Every open incident (the audit's and the trackers' view; `/incident list` uses `list_page`)."""
        return [incident for incident in await self.records(await self.open_ids()) if incident is not None]

    async def list_page(self, visible: Callable[[Incident], Awaitable[bool]],
                        limit: int) -> tuple[list[Incident], int]:
        """The first `limit` open incidents by severity, then age, that `visible` lets the reader see, and how many
        they may see in all. Public ones are counted by their index and only the shown ones are read; the private
        ones (few) are all read, to ask `visible`. Flat in the number of incidents stored."""
        await self._ensure_ranked()
        private = [i for i in await self._open_records(await self._ranked_ids(RANKED_PRIVATE)) if await visible(i)]
        public = await self._open_records(await self._ranked_ids(RANKED, limit))
        total = int(await self.redis.zcard(self.key(*RANKED))) + len(private)
        return sorted(public + private, key=list_rank)[:limit], total

    async def _ranked_ids(self, index: tuple[str, ...], limit: int = 0) -> list[str]:
        return [as_text(i) for i in await self.redis.zrange(self.key(*index), 0, limit - 1)]

    async def _open_records(self, ids: list[str]) -> list[Incident]:
        """The records of `ids` that are still open; an index entry whose incident closed or vanished in a race
        with a rebuild is dropped from the index here."""
        found = await self.records(ids)
        stale = [i for i, incident in zip(ids, found, strict=True) if incident is None or not incident.is_open]
        if stale:
            await self.redis.zrem(self.key(*RANKED), *stale)
            await self.redis.zrem(self.key(*RANKED_PRIVATE), *stale)
        return [incident for incident in found if incident is not None and incident.is_open]

    async def records(self, ids: list[str]) -> list[Incident | None]:
        """The records of `ids`, in order (None for one that does not exist), in one pipelined read."""
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:  # not MGET: the records live in many slots
            for incident in ids:
                pipe.get(self.incident_key(incident))
            raws = await pipe.execute()
        return [parse_json(Incident, raw) if raw is not None else None for raw in raws]

    def _rank(self, pipe: Any, incident: Incident) -> None:
        """Keep an open incident in the list index for its visibility, and out of the other; a closed one in
        neither. Idempotent, so every save may write it again."""
        ranked, private = self.key(*RANKED), self.key(*RANKED_PRIVATE)
        keep = (private if incident.private else ranked) if incident.is_open else None
        if keep:
            pipe.zadd(keep, {incident.id: list_rank(incident)})
        for index in (ranked, private):
            if index != keep:
                pipe.zrem(index, incident.id)

    async def _ensure_ranked(self) -> None:
        """Incidents saved before the list index existed are ranked once, from `inc:open`; saves keep it since."""
        if self._ranked or await self.redis.exists(self.key(*RANKED_BUILT)):
            self._ranked = True
            return
        pipe = self.redis.pipeline(transaction=False)
        for incident in await self.list_open():
            self._rank(pipe, incident)
        pipe.set(self.key(*RANKED_BUILT), 1)
        await pipe.execute()
        self._ranked = True

    async def all_ids(self) -> list[str]:
        return [as_text(i) for i in await self.redis.zrange(self.key("all"), 0, -1)]

    async def declared_since(self, start: float) -> AsyncIterator[list[bytes | str]]:
        """The stored JSON of the incidents declared at or after `start`, oldest first, READ_BATCH at a time: a
        report reads its window, never every incident ever declared."""
        await self._ensure_declared()
        ids = [as_text(i) for i in await self.redis.zrangebyscore(self.key(*DECLARED), start, "+inf")]
        for at in range(0, len(ids), READ_BATCH):
            async with self.redis.pipeline(transaction=False) as pipe:  # not MGET: the records live in many slots
                for incident in ids[at:at + READ_BATCH]:
                    pipe.get(self.incident_key(incident))
                yield [raw for raw in await pipe.execute() if raw is not None]

    async def _ensure_declared(self) -> None:
        """Incidents saved before the declaration index existed are indexed once, from `inc:all`."""
        if self._declared or await self.redis.exists(self.key(*DECLARED_BUILT)):
            self._declared = True
            return
        ids = await self.all_ids()
        for at in range(0, len(ids), READ_BATCH):
            found = [i for i in await self.records(ids[at:at + READ_BATCH]) if i is not None]
            if found:
                await self.redis.zadd(self.key(*DECLARED), {i.id: i.declared_at for i in found})
        await self.redis.set(self.key(*DECLARED_BUILT), 1)
        self._declared = True

    # -- declaration steps and idempotent posts -------------------------------------------------------------------

    async def step(self, incident: str, name: str) -> str | None:
        raw = await self.redis.hget(self.incident_key(incident, "steps"), name)
        return as_text(raw) if raw is not None else None

    async def mark_step(self, incident: str, name: str, value: str = "1") -> None:
        await self.redis.hset(self.incident_key(incident, "steps"), name, value)

    async def steps(self, incident: str) -> dict[str, str]:
        raw = await self.redis.hgetall(self.incident_key(incident, "steps"))
        return {as_text(k): as_text(v) for k, v in raw.items()}

    # -- page records ---------------------------------------------------------------------------------------------

    async def page_record(self, incident: str, field: str) -> PageRecord | None:
        raw = await self.redis.hget(self.incident_key(incident, "pages"), field)
        return parse_json(PageRecord, raw) if raw is not None else None

    async def record_page(self, incident: str, field: str, record: PageRecord) -> bool:
        """Record a delivery's outcome; False (and nothing changed) if one is recorded already."""
        recorded = await self.redis.hsetnx(self.incident_key(incident, "pages"), field, dump_json(record))
        await durable(self.redis, self.incident_key(incident, "durable"), f"page record of {incident}")
        return bool(recorded)

    async def page_records(self, incident: str) -> dict[str, PageRecord]:
        """`<dedup key>|<delivery>` → outcome, for every page of the incident."""
        raw = await self.redis.hgetall(self.incident_key(incident, "pages"))
        return {as_text(k): parse_json(PageRecord, v) for k, v in raw.items()}

    # -- alerts ---------------------------------------------------------------------------------------------------

    async def claim_alert(self, group_hash: str, incident: str) -> str:
        key = self.key("alert", group_hash)
        if await self.redis.set(key, incident, nx=True):
            return incident
        return as_text(await self.redis.get(key))

    async def alert_incident(self, group_hash: str) -> str | None:
        raw = await self.redis.get(self.key("alert", group_hash))
        return as_text(raw) if raw is not None else None

    async def release_alert(self, group_hash: str, incident: str) -> None:
        key = self.key("alert", group_hash)
        if as_text(await self.redis.get(key) or b"") == incident:
            await self.redis.delete(key)

    async def alert_owners(self, group_hash: str, instances: list[str]) -> list[str | None]:
        """For each alert instance, the incident of the group that recorded it firing (None: never seen)."""
        return await self._fields(self.key("alert", group_hash, "owners"), instances)

    async def alert_states(self, group_hash: str, incident: str, instances: list[str]) -> list[str | None]:
        """For each alert instance, `firing` or `resolved` as the incident recorded it (None: not recorded)."""
        return await self._fields(self.key("alert", group_hash, incident), instances)

    async def record_alerts(self, group_hash: str, incident: str, states: dict[str, str]) -> None:
        """Record alert instances' states for the incident, owner first: a retry after a crash in between finds
        the owner without a state and records it again. Two commands, no transaction: the keys may live on two
        Redis Cluster shards."""
        if not states:
            return
        owners = self.key("alert", group_hash, "owners")
        await self.redis.hset(owners, mapping=dict.fromkeys(states, incident))
        await self.redis.expire(owners, ALERT_OWNERS_TTL_S)
        await self.redis.hset(self.key("alert", group_hash, incident), mapping=states)

    async def alert_tally(self, group_hash: str, incident: str) -> tuple[int, int]:
        """(still firing, recorded) alert instances of the incident."""
        states = [as_text(v) for v in await self.redis.hvals(self.key("alert", group_hash, incident))]
        return states.count("firing"), len(states)

    async def _fields(self, key: str, fields: list[str]) -> list[str | None]:
        if not fields:
            return []
        return [None if v is None else as_text(v) for v in await self.redis.hmget(key, fields)]


def incident_key(namespace: str, incident: str, *parts: object) -> str:
    return ":".join([tagged(namespace, "inc", incident), *(str(p) for p in parts)])


def list_rank(incident: Incident) -> float:
    """Where `/incident list` shows an open incident: by severity (P0 first), then oldest first."""
    return SEVERITIES.index(incident.severity) * 1e10 + incident.declared_at


def _number(incident: str) -> int:
    try:
        return int(incident.split("-", 1)[1])
    except (IndexError, ValueError):
        return 0


__all__ = ["IncidentNotFound", "IncidentStore", "LockTimeout", "incident_id"]
