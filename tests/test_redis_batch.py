"""Script calls and reads batched into one pipelined round trip per loop turn, against a real Redis: each caller still
gets exactly its own answer or its own error."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from bot.queue.batch import Batcher, packed
from tests.app_harness import free_port

ECHO = """
if ARGV[1] == 'boom' then return redis.error_reply('boom requested') end
redis.call('INCR', KEYS[1])
return ARGV[1]
"""


def counting(batcher: Batcher) -> list[int]:
    sizes: list[int] = []
    send = batcher._send

    async def counted(batch):  # type: ignore[no-untyped-def]
        sizes.append(len(batch))
        return await send(batch)

    batcher._send = counted  # type: ignore[method-assign]
    return sizes


async def test_a_burst_of_calls_shares_a_few_round_trips_and_each_caller_gets_its_own_answer(
        redis: aioredis.Redis, unique_name: str) -> None:
    batcher = Batcher(redis)
    script = redis.register_script(ECHO)
    await redis.script_load(ECHO)  # a script Redis does not know yet costs one batch more (the test below)
    sizes = counting(batcher)

    answers = await asyncio.gather(*(batcher.call(script, [f"{unique_name}:n"], [f"v{i}"]) for i in range(200)))

    assert answers == [f"v{i}" for i in range(200)]
    assert await redis.get(f"{unique_name}:n") == "200"  # every call ran exactly once
    assert sum(sizes) == 200 and len(sizes) <= 3, sizes


async def test_a_script_error_stays_with_its_own_call(redis: aioredis.Redis, unique_name: str) -> None:
    batcher = Batcher(redis)
    script = redis.register_script(ECHO)

    answers = await asyncio.gather(*(batcher.call(script, [f"{unique_name}:n"], [arg])
                                     for arg in ("a", "boom", "c")), return_exceptions=True)

    assert answers[0] == "a" and answers[2] == "c"
    assert isinstance(answers[1], ResponseError) and "boom requested" in str(answers[1])


async def test_a_script_redis_forgot_is_loaded_again(redis: aioredis.Redis, unique_name: str) -> None:
    """After a Redis restart (or SCRIPT FLUSH) the cached sha is unknown: the calls still run, once each, and the
    burst still costs a couple of round trips."""
    batcher = Batcher(redis)
    script = redis.register_script(ECHO)
    assert await batcher.call(script, [f"{unique_name}:n"], ["warm"]) == "warm"
    await redis.script_flush()
    sizes = counting(batcher)

    answers = await asyncio.gather(*(batcher.call(script, [f"{unique_name}:n"], [f"v{i}"]) for i in range(20)))

    assert answers == [f"v{i}" for i in range(20)]
    assert await redis.get(f"{unique_name}:n") == "21"
    assert sizes == [20, 20]  # sent, refused with NOSCRIPT, the script loaded, sent again: not 20 round trips


async def test_a_connection_error_reaches_every_caller_of_the_batch() -> None:
    # Nothing listens there; no retries, so the test does not wait out redis-py's default backoff.
    client = aioredis.Redis(port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    batcher = Batcher(client)
    script = client.register_script(ECHO)
    try:
        answers = await asyncio.gather(*(batcher.call(script, ["k"], [str(i)]) for i in range(5)),
                                       return_exceptions=True)
    finally:
        await client.aclose()

    assert all(isinstance(a, RedisConnectionError) for a in answers), answers


async def test_a_cancelled_caller_does_not_disturb_the_rest_of_its_batch(redis: aioredis.Redis,
                                                                           unique_name: str) -> None:
    batcher = Batcher(redis)
    script = redis.register_script(ECHO)
    calls = [asyncio.create_task(batcher.call(script, [f"{unique_name}:n"], [f"v{i}"])) for i in range(3)]
    await asyncio.sleep(0)  # all three are in the pending batch
    calls[1].cancel()

    with pytest.raises(asyncio.CancelledError):
        await calls[1]
    assert [await calls[0], await calls[2]] == ["v0", "v2"]


async def test_reads_and_script_calls_of_one_turn_share_a_round_trip_and_answer_like_the_client(
        redis: aioredis.Redis, unique_name: str) -> None:
    """A burst of /diagnose reads "whose channel is this?" before it queues: those reads join the same batches."""
    batcher = Batcher(redis)
    script = redis.register_script(ECHO)
    await redis.set(f"{unique_name}:chan:C1", "INC-7")
    await redis.script_load(ECHO)
    sizes = counting(batcher)

    reads = [batcher.command("GET", f"{unique_name}:chan:C{i}") for i in range(100)]
    calls = [batcher.call(script, [f"{unique_name}:n"], [f"v{i}"]) for i in range(100)]
    answers = await asyncio.gather(*reads, *calls)

    assert answers[:100] == [await redis.get(f"{unique_name}:chan:C{i}") for i in range(100)]
    assert answers[1] == "INC-7" and answers[0] is None
    assert answers[100:] == [f"v{i}" for i in range(100)]
    assert sum(sizes) == 200 and len(sizes) <= 3, sizes


def test_the_batch_is_packed_byte_for_byte_as_redis_py_packs_it() -> None:
    commands = [("EVALSHA", "a" * 40, 2, "{q}:stream", "{q}:id:é", "héllo", 0, -12, 86_400_000, b"\x00raw\r\n"),
                ("GET", "chan:C1"), ("GET", "")]

    assert packed(commands) == b"".join(Connection().pack_commands(commands))


async def test_a_batch_whose_connection_was_dropped_is_sent_again_on_a_fresh_one(redis_url: str,
                                                                                 unique_name: str) -> None:
    """The client's bounded retry covers a batch as it covers a command (a Redis restart drops every pooled
    connection): each call still runs exactly once and answers."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True, retry=Retry(NoBackoff(), 1))
    batcher = Batcher(client)
    script = client.register_script(ECHO)
    try:
        assert await batcher.call(script, [f"{unique_name}:n"], ["warm"]) == "warm"  # a pooled connection now
        killer = aioredis.Redis.from_url(redis_url)
        await killer.client_kill_filter(_type="normal", skipme=True)
        await killer.aclose()

        answers = await asyncio.gather(*(batcher.call(script, [f"{unique_name}:n"], [f"v{i}"]) for i in range(20)))

        assert answers == [f"v{i}" for i in range(20)]
        assert await client.get(f"{unique_name}:n") == "21"
    finally:
        await client.aclose()
