"""A server that answers every request with a fixed body and does nothing else, on the bot's own HTTP stack
(`bot.app.http_server.serve`: uvicorn, uvloop, the same socket options), in a process of its own.

    python -m benchmarks.bare_asgi PORT [DELAY_S]

Two uses: the baseline for the ack figures (what the server stack and the machine cost on their own, measured
in the same run as the bot), and, with DELAY_S, the probed service whose checks "each take 300 ms", kept off the
benchmark's own event loop and GIL. Even so, ten concurrent requests to it take ~310-330 ms on this 2-core
machine with a bare httpx client, so the benchmark also prints what a check measures itself.
"""

from __future__ import annotations

import asyncio
import sys

from bot.app.http_server import serve

ACK = b'{"text": "Queued 1 checks for `api`.", "response_type": "ephemeral"}'


DELAY_S = 0.0


async def app(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if DELAY_S:
        await asyncio.sleep(DELAY_S)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": ACK})


def main() -> None:
    import uvloop

    global DELAY_S
    DELAY_S = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0

    uvloop.run(serve(app, host="127.0.0.1", port=int(sys.argv[1]), stop=asyncio.Event()))


if __name__ == "__main__":
    main()
