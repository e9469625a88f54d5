"""A worker process for the fault tests: `python -m tests.queue_worker_proc --url ... --queue ... --consumer ...`.

Its handlers leave a trail in Redis that the tests read (keys under the queue name):
    <queue>:log          "start <job id> <attempt> <consumer>" when a handler starts
    <queue>:completions  one entry per handler run that reached its end (not guarded: shows double runs)
    <queue>:effects      counter of the guarded effect, incremented under `once()`

SIGTERM stops the worker the way the CLI does: `worker.stop()`, then `run()` returns.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

import redis.asyncio as aioredis

from bot.queue import Job, Queue, Worker, once
from bot.retry import RetryPolicy


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--consumer", required=True)
    parser.add_argument("--visibility", type=float, default=30.0)
    parser.add_argument("--dead-after", type=float, default=10.0)
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--max-deliveries", type=int, default=5)
    parser.add_argument("--retry-base", type=float, default=1.0)
    return parser.parse_args()


def handlers_for(redis: aioredis.Redis, name: str, consumer: str) -> dict:
    async def slow(job: Job) -> None:
        await redis.rpush(f"{name}:log", f"start {job.id} {job.attempt} {consumer}")
        await asyncio.sleep(float(job.payload["seconds"]))
        await redis.rpush(f"{name}:completions", f"{job.id} {consumer}")
        if await once(redis, f"{name}:once:{job.id}"):
            await redis.incr(f"{name}:effects")

    async def fail(job: Job) -> None:
        await redis.rpush(f"{name}:log", f"start {job.id} {job.attempt} {consumer}")
        raise RuntimeError(f"SMTP relay refused the message (attempt {job.attempt})")

    async def crash(job: Job) -> None:
        await redis.rpush(f"{name}:log", f"start {job.id} {job.attempt} {consumer}")
        os.kill(os.getpid(), signal.SIGKILL)

    return {"slow": slow, "fail": fail, "crash": crash}


async def main() -> None:
    args = parse_args()
    redis = aioredis.Redis.from_url(args.url, decode_responses=True)
    queue = Queue(redis, args.queue, visibility_timeout_s=args.visibility, max_deliveries=args.max_deliveries,
                  retry=RetryPolicy(base_s=args.retry_base, max_s=args.retry_base * 4))
    worker = Worker(queue, handlers_for(redis, args.queue, args.consumer), consumer=args.consumer,
                    reclaim_interval_s=0.25, mover_interval_s=0.05, block_ms=500, stop_grace_s=args.grace,
                    dead_worker_after_s=args.dead_after)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.stop)
    try:
        await worker.run()
    finally:
        await redis.aclose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(message)s")
    asyncio.run(main())
