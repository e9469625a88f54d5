"""Builds the Bolt app for a runtime. The same app serves HTTP mode, Socket Mode and the terminal chat."""

from __future__ import annotations

import contextlib
import copy
import logging
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.app.slack_gate import InstallationAuth, OncePerClick, QuietVerification
from bot.runtime import Runtime

log = logging.getLogger(__name__)


def create_app(rt: Runtime, *, verify_requests: bool = True) -> AsyncApp:
    settings = rt.settings
    secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
    auth = InstallationAuth(rt.slack.web)
    rt.hooks.closers.append(auth.aclose)
    with contextlib.suppress(RuntimeError):  # no running loop: the first request starts it
        auth.start()
    client = copy.copy(rt.slack.web)
    client.token = None  # the token comes with `auth`'s answer; Bolt would otherwise warn that it ignores it
    app = AsyncApp(
        name="chatops",  # without a name Bolt takes its caller's file name from inspect.stack(), which resolves the
        # path of every loaded module: ~50 ms of a start with the bot's thousand modules
        client=client,
        authorize=auth.authorize(),
        signing_secret=secret or "socket-mode-has-no-signing-secret",
        request_verification_enabled=False,  # verified once, by QuietVerification, before authorization
        before_authorize=QuietVerification(secret) if verify_requests and secret else None,
        attaching_function_token_enabled=False,  # no workflow functions here: one middleware less per request
        raise_error_for_unhandled_request=False,
        # Listeners do their quick work (validate, queue) and ack at the end; slow work is on the queue. Running
        # them inline avoids Bolt polling every 10 ms for the ack, which dominated ack latency under load.
        process_before_response=True,
        logger=logging.getLogger("slack_bolt"),
    )
    app.use(OncePerClick(rt))

    @app.error
    async def on_error(error: Exception, body: dict, **_: Any) -> None:
        log.error("unhandled error in a Slack listener: %s", type(error).__name__, exc_info=error)

    from handlers import register

    register(app, rt)
    return app
