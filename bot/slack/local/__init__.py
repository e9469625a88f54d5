"""A local stand-in for the Slack Web API: a real HTTP server on 127.0.0.1 that keeps workspace state.

Two users: the test suite (point the app and workers at `LocalSlack.url` through SLACK_API_URL, assert on
`calls` and state, script failures) and the terminal chat mode (the bot talks to it exactly as to Slack; a
renderer `subscribe`s to changes).

    with LocalSlack(bot_token="xoxb-test") as slack:
        client = AsyncWebClient(token="xoxb-test", base_url=slack.url)
        slack.script("chat.postMessage", http_error(429, retry_after=1))

Subscriber events, `callback(name, data)`:
    message, update, delete   data = the Message's fields as a dict (channel, ts, user, text, blocks,
                              thread_ts, edited, deleted, reactions, pinned, files, metadata, ...)
    ephemeral                 data = the ephemerals() entry
    reaction_added/_removed   {channel, ts, user, name}
    pin_added/pin_removed     {channel, ts, user}
    channel_created           {channel, id (both the channel id), name, is_private, created, creator}
    channel_archived          {channel, user};  channel_renamed {channel, name}
    member_joined             {channel, user, inviter}
    topic / purpose           {channel, topic | purpose, user}
    canvas                    {canvas_id, title, markdown, channel, kind, created, action: created|edited|deleted}
    file                      {file: <Slack file object>, content: bytes, channel, thread_ts}
    view                      {method, view, trigger_id, user_id}
"""

from bot.slack.local.emulator import LocalSlack, Subscriber
from bot.slack.local.model import (
    Call,
    Message,
    Scripted,
    delay,
    http_error,
    slack_error,
)

__all__ = ["Call", "LocalSlack", "Message", "Scripted", "Subscriber", "delay", "http_error", "slack_error"]
