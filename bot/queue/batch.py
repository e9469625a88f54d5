"""Script calls and commands made in the same turn of the event loop go to Redis together, as one pipelined
round trip.

Why: a burst of slash commands (200 at once is the figure we hold ourselves to) makes one queue script call per
command, and a `/diagnose` one read before it (is this channel an incident's?). Sent one by one, each call checks
a connection out of the pool, writes, wakes Redis and waits for its own answer; on a 2-core machine those round
trips, not Python, were most of the ack time (p99 ~150 ms against ~70 ms with Redis stubbed out). Pipelined, the
burst costs a handful of round trips. A lone call pays one extra loop turn, which is nothing next to the round trip
itself.

Semantics are a plain call's: each caller gets its own result or its own exception (a script error stays with
its call), a connection error or a refused write (READONLY, NOREPLICAS) sends the batch again within the client's
bounded retry, and a script Redis has forgotten (after a restart or SCRIPT FLUSH) is loaded again and its calls
sent again. Arguments are str, bytes or int.

On a single Redis or under Sentinel the batch is packed here (`packed`) and sent on a pooled redis-py connection
with the client's own retry and reply parser, as redis-py's pipeline would; its pure-Python packer, which checks
and frames each argument in several steps, was ~40% of a /diagnose ack's Redis client CPU (a claim-and-enqueue
has 19 arguments). On Redis Cluster the batch goes through redis-py's cluster pipeline: it sends each call to the
node that owns the slot of its keys (one round trip per node), so a batch spanning several queues still costs a
round trip per shard. Each call's keys share one slot (bot/queue/keys.py). redis-py refuses `pipe.evalsha()` in a
cluster pipeline (redis/redis-py#2914), but routes the same command sent as a plain EVALSHA by its first key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

from bot.queue.connection import REFUSED_WRITES

Call = tuple[Sequence[Any], AsyncScript | None, asyncio.Future]  # (the command sent, its script if any, its answer)


class Batcher:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._pending: list[Call] = []
        self._flushing: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()  # the loop holds tasks weakly; a flush must not be collected

    async def call(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        return await self._join(("EVALSHA", script.sha, len(keys), *keys, *args), script)

    async def command(self, *command: Any) -> Any:
        """A read (`command("GET", key)`), sent with whatever else this turn sends."""
        return await self._join(command, None)

    async def _join(self, command: Sequence[Any], script: AsyncScript | None) -> Any:
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending.append((command, script, future))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())
            self._running.add(self._flushing)
            self._flushing.add_done_callback(self._running.discard)
        return await future

    async def _flush(self) -> None:
        # A task's first step runs in the loop's next turn: every call made in this turn has joined by then.
        # (Waiting one more turn did not batch a burst of acks any better, and cost every enqueue a turn.)
        batch, self._pending, self._flushing = self._pending, [], None
        try:
            forgotten = await self._answer(batch)
            # After a Redis restart (or SCRIPT FLUSH) a whole burst meets NOSCRIPT: each script is loaded once and
            # those calls go again as one batch, not one round trip each.
            if forgotten and await self._loaded([call for call, _ in forgotten]):
                for (_, _, future), error in await self._answer([call for call, _ in forgotten]):
                    future.set_exception(error)  # forgotten again at once: not worth a third try
        finally:
            for *_, future in batch:  # this flush was cancelled (shutdown) before every caller had its answer
                if not future.done():
                    future.cancel()

    async def _answer(self, batch: list[Call]) -> list[tuple[Call, NoScriptError]]:
        """Send the batch and give each caller its answer; the script calls Redis had no script for are returned."""
        try:
            results = await self._send(batch)
        except Exception as exc:  # each caller gets the error, as its own call would have
            _fail(batch, exc)
            return []
        forgotten = []
        for call, result in zip(batch, results, strict=True):
            future = call[2]
            if future.done():  # the caller was cancelled meanwhile; its call has still run
                continue
            if isinstance(result, NoScriptError) and call[1] is not None:
                forgotten.append((call, result))
            elif isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        return forgotten

    async def _loaded(self, calls: list[Call]) -> bool:
        try:
            for source in {script.script for _, script, _ in calls if script is not None}:
                await self.redis.script_load(source)  # on a cluster, on every primary
        except Exception as exc:
            _fail(calls, exc)
            return False
        return True

    async def _send(self, batch: list[Call]) -> list[Any]:
        if isinstance(self.redis, RedisCluster):  # one round trip per node: redis-py's cluster pipeline routes
            async with self.redis.pipeline(transaction=False) as pipe:
                for command, _, _ in batch:
                    pipe.execute_command(*command)
                return await pipe.execute(raise_on_error=False)
        return await self._send_packed(packed(command for command, _, _ in batch), len(batch))

    async def _send_packed(self, data: bytes, count: int) -> list[Any]:
        """What redis-py's pipeline does for a single Redis or Sentinel, packed cheaper: one connection from the
        pool, its retry, its reads. A command's reply gets no redis-py response callback: callers send EVALSHA and
        plain reads whose replies need none.

        A connection error sends the batch again on a fresh connection, and so does a refused write (READONLY from
        a node that turned replica, NOREPLICAS), as for a plain call: a refused write did nothing (a script is
        refused at its first write, before it has written anything) and the batch's reads run again harmlessly.
        A write that went through before the node turned replica mid-batch runs again on the new primary, as it
        would in redis-py's pipeline: the demoted node's copy of it is likely gone with its data set, claims answer
        "held" the second time and jobs carry ids, and jobs may run more than once anyway.
        When the retry gives up on refusals, each call gets its own reply of the last try."""
        pool = self.redis.connection_pool
        conn = await pool.get_connection()
        replies: list[Any] = []
        try:
            return await conn.retry.call_with_retry(lambda: _round_trip(conn, data, count, replies),
                                                    lambda _error: conn.disconnect())
        except REFUSED_WRITES:
            return replies
        finally:
            await pool.release(conn)


def _fail(calls: list[Call], exc: BaseException) -> None:
    for *_, future in calls:
        if not future.done():
            future.set_exception(exc)


async def _round_trip(conn: Connection, data: bytes, count: int, replies: list[Any]) -> list[Any]:
    """Send the batch and read its replies into `replies`; a refused write among them is raised (for the retry)
    once every reply is read."""
    replies.clear()
    await conn.send_packed_command(data)  # it and read_response disconnect on any error, cancellation included
    for _ in range(count):
        try:
            replies.append(await conn.read_response())
        except ResponseError as exc:  # the command's own error (NOSCRIPT among them): the rest still answer
            replies.append(exc)
    for reply in replies:
        if isinstance(reply, REFUSED_WRITES):  # the node's refusal, not the command's error
            raise reply
    return replies


def packed(commands: Iterable[Sequence[Any]]) -> bytes:
    """Commands in the Redis protocol, as redis-py packs str, bytes and int arguments (UTF-8; int as its digits)."""
    out = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)
