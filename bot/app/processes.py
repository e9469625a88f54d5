"""What every long-running process does the same way: find its Redis (REDIS_URL, or a private one it starts),
warm up before the first request, stop on signals, and run queue workers until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from bot.settings import ConfigError, Settings

log = logging.getLogger("chatops")


@contextlib.asynccontextmanager
async def redis_for(settings: Settings) -> AsyncIterator[str | None]:
    """`REDIS_URL`, or a private Redis with AOF under CHATOPS_DATA_DIR that lives as long as this process.
    None under Sentinel without REDIS_URL: the client finds the primary through REDIS_SENTINELS."""
    if settings.redis_url or settings.redis_sentinels:
        yield settings.redis_url
        return
    from bot.app.redis_server import RedisServer

    server = RedisServer(settings.chatops_data_dir / "redis", aof=True)
    await asyncio.to_thread(server.start)
    log.info("no REDIS_URL: started a private Redis at %s (AOF under %s)", server.url, server.data_dir)
    url_file = private_redis_url_file(settings)
    url_file.write_text(server.url + "\n")  # so `chatops postmortem` / `chatops worker` on this machine find it
    try:
        yield server.url
    finally:
        url_file.unlink(missing_ok=True)
        await asyncio.to_thread(server.stop)
        log.info("private Redis stopped")


def private_redis_url_file(settings: Settings) -> Path:
    return settings.chatops_data_dir / "redis.url"


def shared_redis_url(settings: Settings, command: str) -> str | None:
    """REDIS_URL (or None under Sentinel), else the private Redis of a `chatops run` using the same
    CHATOPS_DATA_DIR on this machine."""
    if settings.redis_url or settings.redis_sentinels:
        return settings.redis_url
    url_file = private_redis_url_file(settings)
    if url_file.exists():
        return url_file.read_text().strip()
    raise ConfigError(f"REDIS_URL or REDIS_SENTINELS is required for `chatops {command}` (or run it beside a `chatops run` that "
                      f"uses the same CHATOPS_DATA_DIR, {settings.chatops_data_dir})")


def hold_collection() -> None:
    """While a server or worker starts, the cyclic collector is off; warm_up() turns it back on. The start
    allocates ~100k objects that live as long as the process: collecting while they piled up ran ~160 times, found
    almost nothing and cost ~80 ms of CPU in every start (the ~2,000 unreachable objects it leaves go into the
    frozen start-up heap, once)."""
    gc.disable()


def warm_up() -> None:
    """Before the first request, set the start-up heap aside. Imports leave ~100k long-lived objects, and a full
    collection walking them took ~50 ms here — met by a burst of slash commands as a p99 spike. gc.freeze() moves
    them to a generation the collector never scans; they live as long as the process anyway. No collection first:
    it found a few dozen unreachable objects among the 100k and cost ~40 ms of every start. Then the collector is
    on again (hold_collection() turned it off for the start). Checks are not imported here: a worker imports a
    check's module (and boto3, psycopg or google-auth with it) when it first runs that check (checks/catalog.py);
    planning a `/diagnose` reads the catalog alone, so an HTTP process imports none."""
    gc.freeze()
    gc.enable()


def stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def run_workers(rt: object, stop: asyncio.Event, concurrency: int) -> None:
    """Run a worker until `stop`; then stop taking work and let in-flight jobs finish or be released."""
    from bot.app.jobs import job_handlers
    from bot.queue import Worker

    worker = Worker(rt.queue, job_handlers(rt), concurrency=concurrency)  # type: ignore[attr-defined]
    rt.worker = worker  # type: ignore[attr-defined]
    task = asyncio.create_task(worker.run())
    await stop.wait()
    worker.stop()
    await task
