"""The smallest Bolt app that does the bot's job on the ack path, in a process of its own: the baseline for the
bot's start-up, memory and ack figures (`python -m benchmarks startup`).

    python -m benchmarks.minimal_bolt PORT

Bolt's AsyncApp with the bot's Bolt settings (`process_before_response=True`, one workspace token), its ASGI
adapter on /slack/events, a `/diagnose` and `/incident` listener that ack with a fixed text, and GET /healthz
answering 200 — served by uvicorn on uvloop with the options bot.app.http_server.serve uses. It imports nothing
from the bot, so what it costs is what Bolt, uvicorn and the interpreter cost.

Environment: SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, SLACK_API_URL (the local Slack emulator's). With
MINIMAL_BOLT_REDIS_URL, each command is first written to a Redis stream (one XADD through redis-py's client and
pool, as a plain Bolt app that queued its work durably would, each on its own round trip) and /healthz pings Redis:
the cost of making every command durable the straightforward way, not a floor (the bot pipelines a burst).
"""

from __future__ import annotations

import os
import sys


def build_app():  # type: ignore[no-untyped-def]
    from slack_bolt.adapter.asgi.async_handler import AsyncSlackRequestHandler
    from slack_bolt.async_app import AsyncApp
    from slack_sdk.web.async_client import AsyncWebClient

    client = AsyncWebClient(token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["SLACK_API_URL"])
    app = AsyncApp(client=client, signing_secret=os.environ["SLACK_SIGNING_SECRET"], process_before_response=True)

    queue = _redis_queue(os.environ.get("MINIMAL_BOLT_REDIS_URL"))

    async def command(ack, command):  # type: ignore[no-untyped-def]
        if queue is not None:
            await queue.xadd("minimal-bolt:commands", {"text": command.get("text", ""),
                                                       "channel": command.get("channel_id", "")})
        await ack(text=f"Queued 1 checks for `{command.get('text', '')}`.")

    app.command("/diagnose")(command)
    app.command("/incident")(command)
    slack = AsyncSlackRequestHandler(app, path="/slack/events")

    async def asgi(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http" and scope["path"] == "/healthz":
            if queue is not None:  # as the bot's /healthz: ready means Redis answers
                await queue.ping()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b'{"ok": true}'})
            return
        await slack(scope, receive, send)

    return asgi


def _redis_queue(url: str | None):  # type: ignore[no-untyped-def]
    if not url:
        return None
    import redis.asyncio as aioredis

    return aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(url, max_connections=64))


def main() -> None:
    import uvicorn
    import uvloop

    config = uvicorn.Config(build_app(), host="127.0.0.1", port=int(sys.argv[1]), log_config=None, lifespan="off",
                            access_log=False)
    uvloop.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
