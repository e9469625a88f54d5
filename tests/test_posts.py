"""post_once against the local Slack and a real Redis: a job that dies between Slack's "ok" and recording the ts
does not post twice when it runs again; one that died before posting still posts."""

from __future__ import annotations

import pytest

from bot.slack import posts
from bot.slack.posts import post_once
from tests.app_harness import running_bot


class Died(Exception):
    """The worker running the job was killed here."""


async def test_a_post_made_just_before_the_worker_died_is_found_not_repeated(local_slack, redis_url, tmp_path,
                                                                               monkeypatch) -> None:
    async with running_bot(local_slack, redis_url, tmp_path, services={}, workers=0) as bot:
        parent = await bot.rt.slack.post_message(bot.channel, "parent")
        key = bot.rt.key("test", "replies")
        record = posts._record

        async def dies_after_slack_answered(redis, key_, field, value, ttl_s):  # type: ignore[no-untyped-def]
            if value != posts.PENDING:
                raise Died
            return await record(redis, key_, field, value, ttl_s)

        monkeypatch.setattr(posts, "_record", dies_after_slack_answered)
        with pytest.raises(Died):
            await post_once(bot.rt.redis, bot.rt.slack, key, "check#0", bot.channel, "the result",
                            thread_ts=parent["ts"], ttl_s=60)
        monkeypatch.setattr(posts, "_record", record)

        ts = await post_once(bot.rt.redis, bot.rt.slack, key, "check#0", bot.channel, "the result",
                             thread_ts=parent["ts"], ttl_s=60)

        replies = [m for m in local_slack.replies(bot.channel, parent["ts"]) if m.ts != parent["ts"]]
        assert [(m.text, m.ts) for m in replies] == [("the result", ts)]
        assert await bot.rt.redis.hget(key, "check#0") == ts.encode()
        assert 0 < await bot.rt.redis.ttl(key) <= 60


async def test_a_worker_that_died_before_posting_leaves_the_post_to_the_next_delivery(local_slack, redis_url, tmp_path,
                                                                                     monkeypatch) -> None:
    async with running_bot(local_slack, redis_url, tmp_path, services={}, workers=0) as bot:
        key = bot.rt.key("test", "replies")

        async def dies_before_posting(*args, **kwargs):  # type: ignore[no-untyped-def]
            raise Died

        real_post = bot.rt.slack.post_message
        monkeypatch.setattr(bot.rt.slack, "post_message", dies_before_posting)
        with pytest.raises(Died):
            await post_once(bot.rt.redis, bot.rt.slack, key, "_parent", bot.channel, "Diagnosing api", ttl_s=60)
        monkeypatch.setattr(bot.rt.slack, "post_message", real_post)

        ts = await post_once(bot.rt.redis, bot.rt.slack, key, "_parent", bot.channel, "Diagnosing api", ttl_s=60)
        again = await post_once(bot.rt.redis, bot.rt.slack, key, "_parent", bot.channel, "Diagnosing api", ttl_s=60)

        assert ts == again
        assert [m.text for m in local_slack.messages(bot.channel)] == ["Diagnosing api"]
