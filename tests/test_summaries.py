"""Summaries: a long thread gets one summary reply that is updated (not repeated) as it grows, listing its open
questions and action items; incidents get catch-ups on demand and on their cadence; an optional summariser adds
an overview from a local fake OpenAI-compatible server; user text stays inert."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bot.incidents.timeline import Entry
from bot.writeup.capture import derive
from bot.writeup.context import CaptureRules
from bot.writeup.summaries import digest
from tests.incident_harness import default_policy
from tests.writeup_harness import declare, react, say, writeup_bot


def summary_replies(local, channel: str, thread_ts: str) -> list:
    return [m for m in local.replies(channel, thread_ts) if m.user == "UBOT" and "Thread summary" in m.text]


def blocks_text(message) -> str:
    return "\n".join(b["text"]["text"] if b["type"] == "section" else b["elements"][0]["text"]
                     for b in message.blocks or [])


async def chat(bot, channel: str, thread_ts: str, lines: list[tuple[str, str]]) -> list[str]:
    return [await say(bot, channel, user, text, thread_ts=thread_ts) for user, text in lines]


# ------------------------------------------------------------------------------------------------ the digest

def message(ts: float, user: str, text: str, **data: object) -> Entry:
    entry = Entry(id=f"msg:C1:{ts}", incident_id="INC-1", at=ts, kind="reply" if ts > 1 else "message",
                  actor=user, text=text, ts=str(ts), thread_ts="1.0", channel="C1", data=dict(data))
    return derive(entry, CaptureRules())


def test_open_questions_are_the_unanswered_ones():
    rules = CaptureRules()
    entries = [
        message(1.0, "U1", "api is down"),
        message(2.0, "U1", "is the db ok?"),
        message(3.0, "U2", "yes, replica lag is 0"),  # starts like an answer
        message(4.0, "U2", "who owns the LB config?"),
        message(5.0, "U3", "no idea, <@U2> ask netops"),  # mentions the asker
        message(6.0, "U3", "did the deploy finish?", reactions={"white_check_mark": ["U3"]}),  # marked done
        message(7.0, "U1", "can we fail over to eu-west?"),
        message(8.0, "U1", "also: should we page the DBA?"),
        message(9.0, "U1", "never mind the DBA, found it"),  # the asker says it is solved
        message(10.0, "U4", "action: <@U3> write the failover runbook"),
    ]
    d = digest(entries, rules, {"U3": "carol"})
    assert [q.text for q in d.questions] == ["can we fail over to eu-west?"]
    assert [(a.text, a.owner) for a in d.actions] == [("@carol write the failover runbook", "U3")]


# ------------------------------------------------------------------------------------------------ threads

async def test_a_long_thread_gets_one_summary_that_is_updated_as_it_grows(
        local_slack, redis_url, tmp_path, monkeypatch):
    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, SUMMARY_THRESHOLD="5") as bot:
        incident = await declare(bot, "Checkout errors P3")
        channel = incident.channel
        root = await say(bot, channel, "U2", "500s on /pay since 14:02")
        await chat(bot, channel, root, [("U1", "is the db ok?"), ("U2", "checking"),
                                        ("U1", "who deployed last?"), ("U2", "TODO: <@U1> check the deploy log")])
        await bot.settle()
        assert summary_replies(local_slack, channel, root) == []  # 4 replies: below the threshold

        await chat(bot, channel, root, [("U2", "we decided to roll back 4512")])
        await bot.settle()
        [summary] = summary_replies(local_slack, channel, root)
        text = blocks_text(summary)
        assert "5 replies from 2 people" in text
        assert "*Participants:* bob (4), alice (2)" in text
        assert "“is the db ok?” — alice" in text and "“who deployed last?” — alice" in text
        assert "☐ @alice check the deploy log — owner: alice" in text
        assert "“we decided to roll back 4512” — bob" in section_of(text, "Decisions")

        await chat(bot, channel, root, [("U2", "yes, the db is fine"), ("U1", "is the CDN caching errors?")])
        await react(bot, channel, root, "U1", "pushpin")
        await bot.settle()
        [updated] = summary_replies(local_slack, channel, root)
        assert updated.ts == summary.ts  # the same reply, edited
        text = blocks_text(updated)
        assert "7 replies" in text
        open_questions = section_of(text, "Open questions")
        assert "is the db ok" not in open_questions and "“is the CDN caching errors?” — alice" in open_questions
        assert "“who deployed last?”" in open_questions
        assert [c.params["ts"] for c in local_slack.calls_to("chat.update")].count(summary.ts) >= 1


def section_of(text: str, title: str) -> str:
    start = text.index(f"*{title}")
    rest = text[start + 1:]
    end = rest.find("\n*")
    return rest if end == -1 else rest[:end]


async def test_updates_are_debounced(local_slack, redis_url, tmp_path, monkeypatch):
    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, SUMMARY_THRESHOLD="3",
                           SUMMARY_MIN_INTERVAL_S="120") as bot:
        incident = await declare(bot, "Slow search P3")
        root = await say(bot, incident.channel, "U2", "p99 4s")
        await chat(bot, incident.channel, root, [("U1", "a"), ("U2", "b"), ("U1", "c")])
        await bot.settle()
        assert len(summary_replies(local_slack, incident.channel, root)) == 1
        updates = len(local_slack.calls_to("chat.update"))
        await chat(bot, incident.channel, root, [("U1", "d"), ("U2", "e"), ("U1", "f")])
        await bot.settle()
        assert len(local_slack.calls_to("chat.update")) == updates  # not yet: at most one update per 120 s
        due = await bot.rt.redis.zrange(bot.rt.queue.delayed_key, 0, -1, withscores=True)
        assert len(due) >= 1 and max(score for _, score in due) / 1000 > time.time() + 100


async def test_threads_elsewhere_are_summarised_only_when_enabled(local_slack, redis_url, tmp_path, monkeypatch):
    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, SUMMARY_THRESHOLD="3") as bot:
        root = await say(bot, "C1", "U2", "lunch options?")
        await chat(bot, "C1", root, [("U1", "tacos"), ("U2", "pho"), ("U1", "both?")])
        await bot.settle()
        assert summary_replies(local_slack, "C1", root) == []
    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, SUMMARY_THRESHOLD="3",
                           SUMMARY_ALL_CHANNELS="true") as bot:
        root = await say(bot, "C1", "U2", "deploy freeze this week?")
        await chat(bot, "C1", root, [("U1", "yes until friday"), ("U2", "who approves exceptions?"),
                                     ("U1", "action: <@U2> post the freeze calendar")])
        await bot.settle()
        [summary] = summary_replies(local_slack, "C1", root)
        text = blocks_text(summary)
        assert "“who approves exceptions?” — bob" in section_of(text, "Open questions")
        assert "post the freeze calendar — owner: bob" in text


async def test_markup_in_the_thread_stays_inert_in_the_summary(local_slack, redis_url, tmp_path, monkeypatch):
    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, SUMMARY_THRESHOLD="3") as bot:
        incident = await declare(bot, "declare Injection P3")  # one word alone is previewed, not declared
        root = await say(bot, incident.channel, "U2", "<!channel> *bold* `code` | # Heading &lt;!here&gt;?")
        await chat(bot, incident.channel, root, [("U1", "x" * 10_000 + "?"), ("U2", "<@U1|alice> *look*?"),
                                                 ("U1", "TODO: `rm -rf` <https://evil.example|click> ~now~")])
        await bot.settle()
        [summary] = summary_replies(local_slack, incident.channel, root)
        everything = summary.text + json.dumps(summary.blocks)
        assert "<!channel>" not in everything and "<!here>" not in everything and "<https://" not in everything
        assert "&lt;!here&gt;" in blocks_text(summary)  # what the person typed, shown literally
        assert "*\u200bbold*\u200b" in blocks_text(summary)  # emphasis markers cannot pair up
        assert all(len(b["text"]["text"]) <= 3000 for b in summary.blocks if b["type"] == "section")
        assert len(summary.text) <= 4000


# ------------------------------------------------------------------------------------------------ summariser

@contextmanager
def fake_openai(reply: str | None, status: int = 200) -> Iterator[dict]:
    seen: dict = {"requests": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen["requests"].append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            payload = {"choices": [{"message": {"role": "assistant", "content": reply}}]} if status == 200 else {}
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    seen["url"] = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()


async def test_an_optional_summariser_adds_an_overview_and_its_failure_changes_nothing(
        local_slack, redis_url, tmp_path, monkeypatch):
    with fake_openai("Checkout fails since a deploy; <!channel> rollback *decided*.") as api:
        async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, SUMMARY_THRESHOLD="3",
                               SUMMARIZER_URL=api["url"], SUMMARIZER_API_KEY="sk-test-123",
                               SUMMARIZER_MODEL="test-model") as bot:
            incident = await declare(bot, "declare Checkout P3")
            root = await say(bot, incident.channel, "U2", "500s since the deploy")
            await chat(bot, incident.channel, root, [("U1", "roll back?"), ("U2", "yes, rolling back"),
                                                     ("U1", "done")])
            await bot.settle()
            [summary] = summary_replies(local_slack, incident.channel, root)
    text = blocks_text(summary)
    assert "*Overview* (written by test-model from the thread's text)" in text
    assert "&lt;!channel&gt;" in text and "<!channel>" not in text
    [request] = api["requests"]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sk-test-123"
    assert "bob: 500s since the deploy" in request["body"]["messages"][1]["content"]

    with fake_openai(None, status=500) as api:
        async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, SUMMARY_THRESHOLD="3",
                               SUMMARIZER_URL=api["url"]) as bot:
            incident = await declare(bot, "Checkout again P3")
            root = await say(bot, incident.channel, "U2", "500s again")
            await chat(bot, incident.channel, root, [("U1", "a"), ("U2", "b"), ("U1", "c")])
            await bot.settle()
            [summary] = summary_replies(local_slack, incident.channel, root)
    assert "Overview" not in blocks_text(summary) and "3 replies" in blocks_text(summary)


# ------------------------------------------------------------------------------------------------ catch-ups

async def test_incident_summary_on_demand_ephemeral_or_posted(local_slack, redis_url, tmp_path, monkeypatch):
    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch) as bot:
        incident = await declare(bot, "Payments slow P2")
        await bot.settle()  # the declaration's page to on-call is news too; let it land before the first catch-up
        channel = incident.channel
        await say(bot, channel, "U2", "action: <@U2> add a latency SLO alert")
        await say(bot, channel, "U2", "can we shed load?")
        await bot.command("/incident", "status identified connection pool too small", user="U1", channel=channel)
        answer = await bot.command("/incident", "summary", user="U2", channel=channel)
        assert "Catch-up on INC-1" in answer and "*P2* · identified" in answer
        assert "Status investigating → identified: connection pool too small" in answer
        assert "*Who is on it:* alice, bob" in answer
        assert "☐ @bob add a latency SLO alert — owner: bob" in answer
        assert "“can we shed load?” — bob" in answer
        before = len(local_slack.messages(channel))
        assert "Posting a catch-up summary" in await bot.command("/incident", "summary --post", channel=channel)
        await bot.settle()
        posted = local_slack.messages(channel)[before:]
        assert len(posted) == 1 and "Catch-up on INC-1" in posted[0].text
        # The next catch-up starts from this one: the status change is no longer news.
        again = await bot.command("/incident", "summary INC-1", user="U2", channel="C1")
        assert "identified: connection pool" not in again and "nothing: no status changes" in again


async def test_catch_ups_follow_the_severity_cadence_while_something_happens(
        local_slack, redis_url, tmp_path, monkeypatch):
    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch,
                           policy=default_policy(None, update_every_s=1)) as bot:
        incident = await declare(bot, "declare Cadence P3")
        await say(bot, incident.channel, "U2", "still broken")
        await bot.wait_for(lambda: [m for m in local_slack.messages(incident.channel) if "Catch-up" in m.text],
                           timeout_s=6, what="a cadence catch-up")
        await bot.command("/incident", "resolve fixed", user="U1", channel=incident.channel)
        await bot.settle()
        count = len([m for m in local_slack.messages(incident.channel) if "Catch-up" in m.text])
        await asyncio.sleep(1.5)  # past the next cadence: a resolved incident gets no more catch-ups
        await bot.settle()
        assert len([m for m in local_slack.messages(incident.channel) if "Catch-up" in m.text]) == count
