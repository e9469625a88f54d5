"""The baseline for the ack figures: the bot's own HTTP stack (`bot.http_server.serve`: uvicorn, uvloop, the same
socket options) with an app that answers every request with a fixed ack and does nothing else. What the server
stack and the machine cost on their own, measured in the same run as the bot.

    python -m benchmarks.bare_asgi PORT
"""

from __future__ import annotations

import asyncio
import sys

from bot.http_server import serve

ACK = b'{"text": "Queued 1 checks for `api`.", "response_type": "ephemeral"}'


async def app(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": ACK})


def main() -> None:
    import uvloop

    uvloop.run(serve(app, host="127.0.0.1", port=int(sys.argv[1]), stop=asyncio.Event()))


if __name__ == "__main__":
    main()
