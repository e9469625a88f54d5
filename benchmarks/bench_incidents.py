"""Incident figures: time from `/incident … P0` to the paging provider receiving the page, over 50 incidents
declared at once; how late escalation timers fire (due time → the next level's page at the provider); and, for 50
CloudWatch alarms sent at once through `POST /hooks/sns` (signed SNS messages, a fake SNS host serving the signing
certificate), the time from the alarm to its incident channel and to the first diagnosis verdict posted there;
then, in a storm of 300 declarations whose channels wait minutes for Slack's conversations.create limit, how soon
their pages and their escalation timers' pages reach PagerDuty; and the same for 20 declarations queued behind a
backlog of 1,000 slow diagnosis checks (an alert storm's), which the queue's urgent lane lets them pass; and 50
declarations paged by Slack DM alone, to three people, against the floor Slack's per-channel pace sets.

    .venv/bin/python -m benchmarks.bench_incidents [PART ...]
    # parts: report alert_report storm_report backlog_report dm_report

Set-up: a private Redis with AOF (as deployed), LocalSlack, the fake PagerDuty (a real HTTP server), the Bolt app
served through the real ASGI app in this process, and 2 worker processes (tests/incident_harness.py builds the
same bot in both). Targets (issue #4): page p99 < 1 s after the command (issue #20: ≤ 500 ms); timer lateness p99 < 2 s; (issue #14)
alert → first verdict p99 ≤ 2 s plus the slowest check. Prints figures; not a test.

The local Slack enforces Slack's rate limits, so each part runs in a workspace of its own (a fresh local Slack and
Redis), and the alarms' figures are printed beside the floor Slack's limit sets: conversations.create is Tier 2,
20 a minute, so of 50 channels opened at once the 21st cannot exist before the next minute's budget (the bot paces
at it, in a window MARGIN_S longer than Slack's).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from benchmarks import pct, summarize, summarize_limit
from bot.app.redis_server import RedisServer
from bot.queue.pacing import MARGIN_S
from bot.slack.local import LocalSlack
from bot.slack.local.rate_limits import POST_BURST, POSTS_PER_SECOND
from bot.slack.tiers import METHOD_TIERS, PER_MINUTE
from tests.fixtures.paging import FakePagerDuty
from tests.fixtures.sns import T1, FakeSns, fake_sns, sns_headers
from tests.incident_harness import BOT_TOKEN, IncidentBot, default_policy, incident_bot
from tests.servers import Reply, local_http_server

INCIDENTS = 50
ALARMS = 50
STORM = 300  # declarations at once, far past what Slack's conversations.create limit lets open in a minute
NO_DECLARE_LIMITS = {"incident_declare_per_user": 1000, "incident_declare_per_workspace": 1000}  # one user declares all
ACK_TIMEOUT_S = 3.0
WORKER_PROCESSES = 2
TIER_2 = PER_MINUTE[METHOD_TIERS["conversations.create"]]
WORKER_CONCURRENCY = 32  # tests/incident_harness.make_worker's
BACKLOG_RUNS = 20  # `/diagnose slow` at once: each queues SLOW_CHECKS checks that hold a worker slot SLOW_CHECK_S
SLOW_CHECKS = 50
SLOW_CHECK_S = 2.0
BACKLOG_INCIDENTS = 20
DM_INCIDENTS = 50
DM_PEOPLE = (("UONCALL", "oncall"), ("UMGR1", "manager1"), ("UMGR2", "manager2"))  # default_policy's P0


def policy(events_url: str, limit: tuple[int, float] | None = None) -> dict:
    """P0 pages PagerDuty at once and again (level 2, its own dedup key) when nobody acknowledges in time. The
    bot paces at `limit` (events, window s), as the fake PagerDuty enforces it; None: an unthrottled key, so the
    figures are the bot's own."""
    data = default_policy(events_url, ack_timeout_s=ACK_TIMEOUT_S)
    data["severities"]["P0"].update(first="pagerduty", then=["pagerduty"], repeat=0)
    data["providers"]["pagerduty"].update(rate_limit=limit[0] if limit else None,
                                          rate_window_s=limit[1] if limit else 60.0)
    return data


async def declare_many(bot: IncidentBot, n: int, label: str) -> dict[str, float]:
    """n signed `/incident` commands at once; returns incident id → monotonic time the command was sent."""
    async def one(i: int) -> tuple[str, float]:
        started = time.monotonic()
        answer = await bot.command("/incident", f"{label} outage {i} P0")
        found = re.search(r"INC-\d+", answer)
        assert found, answer
        return found.group(0), started

    return dict(await asyncio.gather(*(one(i) for i in range(n))))


def first_trigger_at(pd: FakePagerDuty, key: str) -> float | None:
    times = [r.at for r in pd.requests if r.status == 202 and (r.json or {}).get("dedup_key") == key
             and (r.json or {}).get("event_action") == "trigger"]
    return min(times) if times else None


async def wait_for_keys(pd: FakePagerDuty, keys: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(first_trigger_at(pd, k) is not None for k in keys):
            return
        await asyncio.sleep(0.05)
    missing = [k for k in keys if first_trigger_at(pd, k) is None]
    raise TimeoutError(f"{len(missing)} pages never reached PagerDuty: {missing[:5]}")


@contextlib.asynccontextmanager
async def bot_with_worker_processes(tmp: Path, procs: list[subprocess.Popen], *, processes: int,
                                    dead_worker_after_s: float, pd_limit: tuple[int, float] | None = None,
                                    paging: dict | None = None,
                                    **options: Any) -> AsyncIterator[tuple[IncidentBot, FakePagerDuty]]:
    """The bot as deployed for these figures: AOF Redis, LocalSlack, the fake PagerDuty (enforcing `pd_limit`,
    events per window s, and the bot pacing at it), no in-process worker and `processes` worker processes in
    `procs` (the caller may add more; all are stopped on the way out). `paging`: a policy of its own instead."""
    with RedisServer(tmp / "redis", aof=True, die_with_parent=True) as redis, FakePagerDuty(limit=pd_limit) as pd:
        local = LocalSlack(bot_token=BOT_TOKEN).start()
        for user, name in (("U1", "alice"), *DM_PEOPLE):
            local.add_user(user, name)
        try:
            async with incident_bot(local, redis.url, tmp, pagerduty=pd,
                                    policy=paging or policy(pd.events_url, pd_limit),
                                    workers=0, **options) as bot:
                procs += [bot.worker_process(tmp, dead_worker_after_s=dead_worker_after_s) for _ in range(processes)]
                try:
                    await asyncio.sleep(3.0)  # the worker processes import and join the group
                    yield bot, pd
                finally:
                    for proc in procs:
                        proc.terminate()
                    for proc in procs:
                        proc.wait(30)
        finally:
            local.stop()


async def run(tmp: Path, only: list[str]) -> None:
    # every alarm's service is `api`, whose one check is an HTTP probe of a local server (the slowest check)
    with fake_sns(tmp, rules=[{"source": "cloudwatch", "service": "api"}]) as sns, \
            local_http_server({"/health": Reply(200), "/slow": Reply(200, delay_s=SLOW_CHECK_S)}) as site:
        services = {"api": {"description": "bench API", "http": [{"url": site.url("/health"), "samples": 1}]},
                    "slow": {"description": "checks that each hold a worker slot",
                             "http": [{"url": site.url(f"/slow?{i}"), "samples": 1, "timeout_s": SLOW_CHECK_S + 3}
                                      for i in range(SLOW_CHECKS)]}}
        # a workspace each: each starts with a whole budget
        for part in (report, alert_report, storm_report, backlog_report, dm_report):
            if only and part.__name__ not in only:
                continue
            (tmp / part.__name__).mkdir()
            async with bot_with_worker_processes(tmp / part.__name__, [], processes=WORKER_PROCESSES,
                                                 dead_worker_after_s=10, alerts=sns.settings, services=services,
                                                 incident=NO_DECLARE_LIMITS,
                                                 paging=default_policy(None) if part is dm_report else None) \
                    as (bot, pd):
                await part(bot, sns if part is alert_report else pd)


async def report(bot: IncidentBot, pd: FakePagerDuty) -> None:
    warm = await declare_many(bot, 5, "warm-up")  # connection pools, Lua scripts, imports
    await wait_for_keys(pd, [f"{i}:P0:L1" for i in warm], 30)
    for inc in warm:
        await bot.command("/incident", f"ack {inc}")

    sent, latency = await paged_at_once(bot, pd, INCIDENTS, "bench", 60)

    fired, received = await timer_lateness(bot, pd, list(sent))

    print(f"   /incident … P0 → PagerDuty received the page, {INCIDENTS} declared at once: "
          f"p50 {statistics.median(latency) * 1000:.0f} ms, p99 {pct(latency, 99) * 1000:.0f} ms, "
          f"max {max(latency) * 1000:.0f} ms  (target p99 ≤ 500 ms)")
    summarize_limit(f"/incident … P0 → page at PagerDuty, {INCIDENTS} at once, p99", pct(latency, 99) * 1000, "ms", 500)
    print(f"   escalation timers, due → next level received by PagerDuty: p50 {statistics.median(received) * 1000:.0f}"
          f" ms, p99 {pct(received, 99) * 1000:.0f} ms (timer job started: p99 {pct(fired, 99) * 1000:.0f} ms)"
          f"  (target p99 < 2000 ms)")
    linked = sum(1 for inc in sent if (pd.alert(f"{inc}:P0:L1").body.get("links") or [{}])[0].get("href"))
    print(f"   first pages that carried the channel link: {linked} of {INCIDENTS} (a page is sent without waiting "
          f"for the channel; it links to it only if it already exists)")
    print(f"   PagerDuty: {len(pd.alerts)} alerts for {len(pd.events)} events "
          f"(expected {2 * (INCIDENTS + 5) - 5} alerts: 5 warm-up + {INCIDENTS} × 2 levels)")


async def paged_at_once(bot: IncidentBot, pd: FakePagerDuty, n: int, label: str,
                        timeout_s: float) -> tuple[dict[str, float], list[float]]:
    """n `/incident … P0` at once; (incident → when its command was sent, seconds until PagerDuty had each page)."""
    sent = await declare_many(bot, n, label)
    keys = {inc: f"{inc}:P0:L1" for inc in sent}
    await wait_for_keys(pd, list(keys.values()), timeout_s)
    return sent, [first_trigger_at(pd, keys[inc]) - started for inc, started in sent.items()]


async def timer_lateness(bot: IncidentBot, pd: FakePagerDuty, incidents: list[str],
                         timeout_s: float = 60) -> tuple[list[float], list[float]]:
    """Nobody acknowledges: every incident's level-2 timer comes due ACK_TIMEOUT_S after its first page. Returns
    (seconds from due to the timer job starting, seconds from due to PagerDuty receiving the level-2 page)."""
    await wait_for_keys(pd, [f"{inc}:P0:L2" for inc in incidents], ACK_TIMEOUT_S + timeout_s)
    offset = time.time() - time.monotonic()
    fired, received = [], []
    for inc in incidents:
        escalated = [e for e in await bot.timeline(inc, "escalated") if e.data.get("level") == 2]
        fired.append(escalated[0].data["lateness_s"])
        received.append(first_trigger_at(pd, f"{inc}:P0:L2") + offset - escalated[0].data["due"])
    return fired, received


async def send_alarms(bot: IncidentBot, sns: FakeSns, n: int, label: str) -> dict[str, float]:
    """n signed CloudWatch ALARM notifications at once; incident id → monotonic time the alarm was sent."""
    async def one(i: int) -> tuple[str, float]:
        message = sns.alarm("ALARM", T1, name=f"{label}-{i}")
        started = time.monotonic()
        answer = await bot.hook("/hooks/sns", message, sns_headers(message))
        assert answer.json().get("action") == "opened", answer.text
        return answer.json()["incident"], started

    return dict(await asyncio.gather(*(one(i) for i in range(n))))


def channel_floor_s(nth: int) -> float:
    """The earliest the `nth` channel opened in a fresh workspace can exist, under Slack's Tier 2 limit as paced."""
    return (nth - 1) // TIER_2 * (60 + MARGIN_S)


async def wait_for_verdicts(bot: IncidentBot, sent: dict[str, float],
                            timeout_s: float = 300) -> tuple[dict[str, float], dict[str, float]]:
    """(incident → monotonic time its channel was seen, incident → when its first verdict was recorded). The
    channel is polled (a few tens of ms of resolution); the verdict's time is its timeline entry's."""
    offset, channel_at, verdict_at = time.time() - time.monotonic(), {}, {}
    deadline = time.monotonic() + timeout_s
    while len(verdict_at) < len(sent) and time.monotonic() < deadline:
        for inc in sent:
            if inc not in channel_at and (await bot.incident(inc)).channel:
                channel_at[inc] = time.monotonic()
            verdicts = [] if inc in verdict_at else await bot.timeline(inc, "diagnosis")
            if verdicts:
                verdict_at[inc] = verdicts[0].at - offset
        await asyncio.sleep(0.02)
    if len(verdict_at) < len(sent):
        raise TimeoutError(f"{len(sent) - len(verdict_at)} incidents got no verdict in {timeout_s:.0f} s")
    return channel_at, verdict_at


async def alert_report(bot: IncidentBot, sns: FakeSns) -> None:
    warm = 3
    await wait_for_verdicts(bot, await send_alarms(bot, sns, warm, "warm-up"))  # the certificate fetch, imports
    sent = await send_alarms(bot, sns, ALARMS, "bench")
    channel_at, verdict_at = await wait_for_verdicts(bot, sent)
    to_channel = sorted(channel_at[inc] - started for inc, started in sent.items())
    to_verdict = sorted(verdict_at[inc] - started for inc, started in sent.items())
    floors = [channel_floor_s(warm + n) for n in range(1, ALARMS + 1)]
    within = sum(1 for got, floor in zip(to_channel, floors, strict=True) if got - floor <= 2.0)
    print(f"   CloudWatch alarm via /hooks/sns → incident channel, {ALARMS} at once, Slack's conversations.create "
          f"limit applied ({TIER_2} a minute): p50 {statistics.median(to_channel):.1f} s, p99 "
          f"{pct(to_channel, 99):.1f} s, last {to_channel[-1]:.1f} s (the limit's floor for the last: "
          f"{floors[-1]:.0f} s); {within} of {ALARMS} within 2 s of their floor; "
          f"{bot.local.rate_limits.refused} calls refused by Slack")
    print(f"   CloudWatch alarm via /hooks/sns → first verdict posted, {ALARMS} at once: p50 "
          f"{statistics.median(to_verdict):.1f} s, p99 {pct(to_verdict, 99):.1f} s, max {max(to_verdict):.1f} s; "
          f"the first {TIER_2 - warm}, whose channels Slack's limit lets open at once: p99 "
          f"{pct(to_verdict[:TIER_2 - warm], 99) * 1000:.0f} ms (target p99 ≤ 2000 ms + the slowest check, here a "
          f"local probe)")


async def storm_report(bot: IncidentBot, pd: FakePagerDuty) -> None:
    """STORM declarations at once: their channel set-ups wait minutes for conversations.create's turn, and each
    worker holds the waiting ones; the pages queued among them must not wait behind them."""
    warm = await declare_many(bot, 3, "warm-up")
    await wait_for_keys(pd, [f"{i}:P0:L1" for i in warm], 30)
    sent, latency = await paged_at_once(bot, pd, STORM, "storm", 120)
    opened = sum([1 for inc in sent if (await bot.incident(inc)).channel])
    _fired, received = await timer_lateness(bot, pd, list(sent))
    print(f"   /incident … P0 → PagerDuty received the page, {STORM} declared at once while their channels wait for "
          f"Slack's conversations.create limit ({TIER_2} a minute; {opened} of {STORM} open when the last page "
          f"arrived): p50 {statistics.median(latency) * 1000:.0f} ms, p99 {pct(latency, 99) * 1000:.0f} ms, max "
          f"{max(latency) * 1000:.0f} ms; their escalation timers, due → next level at PagerDuty: p50 "
          f"{statistics.median(received) * 1000:.0f} ms, p99 {pct(received, 99) * 1000:.0f} ms; "
          f"{bot.local.rate_limits.refused} calls refused by Slack")
    summarize_limit(f"escalation timer due → page at PagerDuty, during a storm of {STORM} declarations, p99",
                    pct(received, 99) * 1000, "ms", 2000)


async def backlog_report(bot: IncidentBot, pd: FakePagerDuty) -> None:
    """A backlog of slow checks (an alert storm's diagnoses) queued first, then P0s declared: their pages and
    their escalation timers' pages must not wait for the checks queued ahead of them."""
    warm = await declare_many(bot, 3, "warm-up")
    await wait_for_keys(pd, [f"{i}:P0:L1" for i in warm], 30)
    channels = [bot.local.add_channel(f"slow-{i}", members=["U1"]) for i in range(BACKLOG_RUNS)]
    answers = await asyncio.gather(*(bot.command("/diagnose", "slow", channel=c) for c in channels))
    assert all("Queued" in a for a in answers), answers[:2]
    await asyncio.sleep(2.0)  # the start jobs have queued their checks
    stats = await bot.rt.queue.stats()
    backlog = f"{stats.depth} queued, {stats.pending} running"
    sent, latency = await paged_at_once(bot, pd, BACKLOG_INCIDENTS, "backlog", 600)
    _fired, received = await timer_lateness(bot, pd, list(sent), timeout_s=600)
    drain_s = BACKLOG_RUNS * SLOW_CHECKS * SLOW_CHECK_S / (WORKER_PROCESSES * WORKER_CONCURRENCY)
    print(f"   behind a backlog of {BACKLOG_RUNS * SLOW_CHECKS} checks of {SLOW_CHECK_S:.0f} s each ({backlog}; "
          f"~{drain_s:.0f} s of work for the workers' slots): {BACKLOG_INCIDENTS} × /incident … P0 → page at "
          f"PagerDuty p50 {statistics.median(latency) * 1000:.0f} ms, p99 {pct(latency, 99) * 1000:.0f} ms; their "
          f"escalation timers, due → next level at PagerDuty p99 {pct(received, 99) * 1000:.0f} ms")
    summarize_limit(f"/incident … P0 → page, behind {BACKLOG_RUNS * SLOW_CHECKS} queued checks, p99",
                    pct(latency, 99) * 1000, "ms", 500)
    summarize_limit(f"escalation timer due → page, behind {BACKLOG_RUNS * SLOW_CHECKS} queued checks, p99",
                    pct(received, 99) * 1000, "ms", 2000)


async def dm_report(bot: IncidentBot, _pd: FakePagerDuty) -> None:
    """DM_INCIDENTS × /incident … P0 at once, paging by Slack DM alone (tests/incident_harness.default_policy:
    on-call and two managers): command → each person's DM posted, beside what Slack's limits allow. Every DM to
    one person shares their DM channel, which chat.postMessage's per-channel pace (about one a second, with a
    burst) spreads out: that pace, not the bot, sets the floor."""
    sent = await declare_many(bot, DM_INCIDENTS, "dm")
    people = [user for user, _name in DM_PEOPLE]
    posted = await wait_for_dms(bot, sent, people, timeout_s=600)
    latency = [at - sent[inc] for (_channel, inc), at in posted.items()]
    first, last = min(posted.values()) - min(sent.values()), max(posted.values()) - min(sent.values())
    floor_s = first + (DM_INCIDENTS - POST_BURST) / POSTS_PER_SECOND
    print(f"   {DM_INCIDENTS} × /incident … P0 at once, paged by Slack DM to {len(people)} people → each DM posted: "
          f"p50 {statistics.median(latency):.1f} s, p99 {pct(latency, 99):.1f} s; the last {last:.1f} s after the "
          f"first command (floor {floor_s:.1f} s: the first DM at {first:.1f} s, then {DM_INCIDENTS} posts into "
          f"each person's DM channel at Slack's per-channel pace); "
          f"{len(bot.local.calls_to('conversations.open'))} conversations.open; "
          f"{bot.local.rate_limits.refused} calls refused by Slack")
    summarize(f"{DM_INCIDENTS} × /incident … P0 → last Slack DM page", last, "s", baseline=floor_s,
              baseline_name="Slack's per-channel pace")


async def wait_for_dms(bot: IncidentBot, sent: dict[str, float], people: list[str],
                       timeout_s: float) -> dict[tuple[str, str], float]:
    """(DM channel, incident) → when its DM was posted (monotonic); the Acknowledge button names the incident."""
    offset = time.time() - time.monotonic()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        posts = _dm_posts(bot, set(sent))
        if len(posts) >= len(sent) * len(people):
            break
        await asyncio.sleep(0.2)
    else:
        raise TimeoutError(f"{len(sent) * len(people) - len(posts)} Slack DM pages never posted")
    await asyncio.sleep(2.0)  # a second DM to someone would be a duplicate page: let any such arrive
    posts = _dm_posts(bot, set(sent))
    posted = {key: at - offset for key, at in posts}
    assert len(posted) == len(posts), f"{len(posts) - len(posted)} people were DM'd twice for one page"
    return posted


def _dm_posts(bot: IncidentBot, incidents: set[str]) -> list[tuple[tuple[str, str], float]]:
    """Every DM page posted for `incidents`: ((DM channel, incident), when), duplicates included."""
    dms = {c.response["channel"]["id"] for c in bot.local.calls_to("conversations.open") if c.status == 200}
    return [((c.params["channel"], _acked_incident(c.params)), c.at) for c in bot.local.calls_to("chat.postMessage")
            if c.status == 200 and c.params.get("channel") in dms and _acked_incident(c.params) in incidents]


def _acked_incident(params: dict) -> str:
    return next((e.get("value", "") for b in params.get("blocks") or [] if b.get("type") == "actions"
                 for e in b.get("elements", []) if e.get("action_id") == "incident_ack"), "")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-incidents-") as tmp:
        asyncio.run(run(Path(tmp), sys.argv[1:]))


if __name__ == "__main__":
    main()
