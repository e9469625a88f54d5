"""The trends report against a hand-computed set of incidents: counts by severity and service, MTTA and MTTR
(median, nearest-rank p90, within target), pages and escalations per target, recurring findings, open
follow-ups — from the records in Redis, through `/incident report` and `chatops report`."""

from __future__ import annotations

import json
import time

import pytest

from bot.incidents.model import Incident, PageOrder, Paging
from bot.incidents.timeline import EntryKind
from bot.writeup.report import SEVERITIES, build_report, compute, markdown, p90, parse_since, record_recurring
from bot.writeup.trackers.export import export
from checks.schema import dump, replace
from tests.test_diagnose_charts import png_size
from tests.writeup_harness import writeup_bot

DAY = 86400.0


def order(level: int, routes: dict, reason: str = "policy") -> PageOrder:
    return PageOrder(dedup_key=f"k{level}{reason}{sorted(routes)}", severity="P0", level=level, routes=routes,
                     reason=reason)


def incidents(now: float) -> list[Incident]:
    def make(n: int, severity: str, service: str, ago_d: float, *, ack: float | None = None,
             resolve: float | None = None, orders: tuple = (), private: bool = False) -> Incident:
        declared = now - ago_d * DAY
        paging = Paging(first_paged_at=declared if orders else None, acked_at=declared + ack if ack else None,
                        orders=list(orders))
        return Incident(id=f"INC-{n}", number=n, title=f"incident {n}", severity=severity, service=service,
                        reporter="U1", origin_channel="C1", declared_at=declared, paging=paging, private=private,
                        status="resolved" if resolve else "investigating",
                        resolved_at=declared + resolve if resolve else None)

    return [
        make(1, "P0", "api", 10, ack=300, resolve=1800,
             orders=(order(1, {"slack": ["U1"]}), order(2, {"slack": ["U2"]}, "timer"))),
        make(2, "P0", "api", 5, ack=900, resolve=7200, orders=(order(1, {"pagerduty": []}),)),
        make(3, "P0", "db", 3, ack=60, resolve=600, orders=(  # its level 2 acknowledged before its turn: no page
            order(1, {"slack": ["U1"]}), replace(order(2, {"slack": ["U2"]}, "timer"),
                                                 done=True, withheld="acknowledged"))),
        make(4, "P1", "db", 2, ack=1200, orders=(order(1, {"slack": ["U2"], "opsgenie": ["team-a"]}),)),
        make(5, "P2", "api", 40, ack=10, resolve=100, orders=(order(1, {"slack": ["U1"]}),)),  # outside 30d
        make(6, "P3", "web", 1, resolve=3600),
    ]


FAIL = {"check": "http.health", "target": "https://api/pay", "status": "fail"}


async def test_the_report_matches_the_hand_computed_figures(local_slack, redis_url, tmp_path, monkeypatch, capsys):
    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch,
                           services={"api": {}, "db": {}, "web": {}}) as bot:
        now = time.time()
        for incident in incidents(now):
            assert await bot.ctx.store.create(incident)
        for incident_id in ("INC-1", "INC-2", "INC-5"):
            await record_recurring(bot.rt, incident_id, [FAIL])
        await record_recurring(bot.rt, "INC-3", [{"check": "aws.rds", "target": "db1", "status": "warn"}])
        await record_recurring(bot.rt, "INC-4", [{"check": "aws.rds", "target": "db1", "status": "error"}])
        for incident_id in ("INC-1", "INC-4"):
            await bot.ctx.timeline.record(incident_id, EntryKind.ACTION_ITEM, entry_id="action_item:a", actor="U1",
                                          text=f"follow up {incident_id}", data={"owner": "U2"})
        await export(bot.rt, "INC-1")  # a resolved incident's items reach the follow-ups index by its export
        report = await build_report(bot.rt, since_s=parse_since("30d"), now=now)
        only_db = await build_report(bot.rt, since_s=parse_since("30d"), service="db", now=now)
        answer = await bot.command("/incident", "report 30d", user="U1", channel="C1")
        [shared] = await bot.wait_for(lambda: bot.local.files("C1"), what="the report's chart")
        [posted] = [m for m in bot.local.messages("C1") if m.files]
        bad = await bot.command("/incident", "report 30x", user="U1", channel="C1")
        ack_target = bot.ctx.policy.ack_timeout_s("P0")

    assert report.incidents == 5 and report.open_incidents == 1
    assert report.by_severity == {"P0": 3, "P1": 1, "P2": 0, "P3": 1}
    assert report.by_service == {"api": 2, "db": 2, "web": 1}
    p0a, p0r = report.mtta["P0"], report.mttr["P0"]
    assert (p0a.count, p0a.median_s, p0a.p90_s, p0a.target_s) == (3, 300, 900, ack_target)
    assert p0a.within_target == sum(1 for v in (300, 900, 60) if v <= ack_target)
    assert (p0r.count, p0r.median_s, p0r.p90_s, p0r.target_s, p0r.within_target) == (3, 1800, 7200, 900, 1)
    assert (report.mtta["P1"].median_s, report.mttr["P1"].count) == (1200, 0)
    assert (report.mttr["P3"].median_s, report.mttr["P3"].within_target) == (3600, 1)
    assert report.pages == {"U1": 2, "U2": 2, "pagerduty": 1, "opsgenie:team-a": 1}
    assert report.escalations == {"U2": 1}
    assert report.recurring == [{"check": "http.health", "target": "https://api/pay", "incidents": ["INC-1", "INC-2"]}]
    assert [f["incident"] for f in report.followups] == ["INC-1", "INC-4"] and report.open_followups == 2
    assert (only_db.incidents, only_db.recurring, only_db.open_followups) == (2, [], 1)
    assert report.by_week == [dict.fromkeys(SEVERITIES, 0), dict.fromkeys(SEVERITIES, 0),
                              {"P0": 1, "P1": 0, "P2": 0, "P3": 0}, {"P0": 2, "P1": 0, "P2": 0, "P3": 0},
                              {"P0": 0, "P1": 1, "P2": 0, "P3": 1}]  # 4 weeks from the start, and 2 days
    assert answer == "Posting the incident report for the last 30d here, with a chart, in a moment."
    text = posted.text  # the report is the text of the message that carries the chart
    assert "*Incident report* (last 30d): 5 incidents, 1 open, 2 open follow-ups" in text
    assert "• *P0* × 3: MTTA 5m 00s median, 15m 00s p90" in text and "<@U1> 2 (0)" in text
    assert "Recurring: `http.health` on `https://api/pay` in INC-1, INC-2" in text
    assert shared["name"] == "incident-report-30d.png" and shared["mimetype"] == "image/png"
    assert png_size(shared["content"]) == (640, 260) and 1_000 < len(shared["content"]) < 100_000
    # (the job's window ends a moment after `now`, so INC-4, two days old, may fall in the week before: no "at most")
    assert "5 incidents (P0 3, P1 1, P2 0, P3 1) in 5 weeks" in shared["alt_txt"]
    assert "Unknown period or service `30x`" in bad
    text = markdown(report)
    assert "| P0 | 3 | 5m 00s | 15m 00s |" in text and "| U2 | 2 | 1 |" in text
    assert json.loads(report.to_json())["mttr"]["P0"]["p90_s"] == 7200


def test_percentiles_and_periods():
    assert p90([]) is None and p90([5]) == 5 and p90(list(range(1, 11))) == 9 and p90(list(range(1, 12))) == 10
    assert parse_since("90d") == 90 * DAY and parse_since("12h") == 43200 and parse_since("2w") == 14 * DAY
    for bad in ("0d", "30", "d30", "30y"):
        with pytest.raises(ValueError):
            parse_since(bad)
    empty = compute([], since_s=DAY, now=1000.0)
    assert empty.incidents == 0 and empty.mtta["P0"].median_s is None


async def test_chatops_report_prints_json_or_markdown_from_a_shell(redis_url):
    import uuid

    import redis.asyncio as aioredis

    from bot.incidents.store import IncidentStore
    from tests.test_cli import chatops

    namespace = f"cli-{uuid.uuid4().hex[:8]}"
    client = aioredis.Redis.from_url(redis_url)
    store = IncidentStore(client, namespace)
    for incident in incidents(time.time())[:3]:
        await store.create(incident)
    await client.aclose()
    env = {"REDIS_URL": redis_url, "REDIS_NAMESPACE": namespace}
    as_json = chatops("report", "--since", "30d", "--format", "json", env=env)
    as_markdown = chatops("report", "--service", "db", env=env)
    wrong = chatops("report", "--since", "3x", env=env)

    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["incidents"] == 3 and data["mtta"]["P0"]["median_s"] == 300 and data["pages"]["U1"] == 2
    assert as_markdown.returncode == 0 and "# Incident report (last 30d, service `db`)" in as_markdown.stdout
    assert wrong.returncode == 2 and "not a period" in wrong.stderr


def test_the_slack_report_stays_within_an_answer_and_says_what_it_left_out():
    from bot.slack.mrkdwn import FALLBACK_TEXT_MAX
    from bot.writeup.report import slack_text

    now = time.time()
    many = [Incident(id=f"INC-{n}", number=n, title="t", severity="P1", service=f"service-{n:03d}-" + "x" * 40,
                     reporter="U1", origin_channel="C1", declared_at=now - 60, paging=Paging())
            for n in range(1, 201)]
    findings = {f"aws.check_{k}\t" + "arn:aws:lambda:eu-west-1:123456789012:function:" + "f" * 60:
                {f"INC-{n}" for n in range(1, 201)} for k in range(30)}
    report = compute([dump(i) for i in many], since_s=DAY, now=now, findings=findings)
    text = slack_text(report, note="_Private incidents are left out._")

    assert len(text) <= FALLBACK_TEXT_MAX and text.endswith("_Private incidents are left out._")
    assert "…and 190 more" in text  # services beyond the first ten, and incidents of each recurring finding
    assert "…and 20 more recurring findings (`chatops report` lists them)" in text


async def test_followups_answer_fits_a_message_and_counts_the_rest(local_slack, redis_url, tmp_path, monkeypatch):
    from bot.slack.mrkdwn import FALLBACK_TEXT_MAX
    from bot.writeup.trackers.export import FollowUp
    from tests.writeup_harness import declare

    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch) as bot:
        incident = await declare(bot, "Checkout errors P2")
        items = {f"{incident.id}|i{n}": json.dumps(FollowUp(incident.id, f"i{n}", f"item {n} " + "words " * 40,
                                                            "U2", time.time() - n, None, False).__dict__)
                 for n in range(60)}
        await bot.rt.redis.hset(bot.rt.key("wu", "followups"), mapping=items)
        answer = await bot.command("/incident", "followups", user="U1", channel="C1")

    shown = [line for line in answer.splitlines() if line.startswith("• ")]
    assert len(answer) <= FALLBACK_TEXT_MAX and answer.startswith("*Open action items* (60):")
    assert answer.splitlines()[-1] == f"…and {60 - len(shown)} more" and 5 <= len(shown) < 60


async def test_a_report_typed_where_the_bot_cannot_post_reaches_the_dm_once_without_private_incidents(
        local_slack, redis_url, tmp_path, monkeypatch):
    from bot.queue.stream import Job
    from bot.writeup.report_post import JOB, report_job

    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch,
                           services={"api": {}, "db": {}, "web": {}}) as bot:
        now = time.time()
        for incident in incidents(now):
            incident.private = incident.id == "INC-6"
            assert await bot.ctx.store.create(incident)
        war_room = bot.local.add_channel("war-room", members=["U1"], is_private=True, bot_member=False)
        await bot.command("/incident", "report 30d", user="U1", channel=war_room, trigger_id="T-report")
        [dm] = await bot.wait_for(lambda: [m for m in bot.dms_to("U1") if m.files], what="the report in the DM")
        await bot.settle()
        again = Job(id="report:T-report", kind=JOB, attempt=2, enqueued_at=now,
                    payload={"channel": war_room, "user": "U1", "since_s": 30 * DAY, "service": None, "at": now,
                             "request": "T-report"})
        await report_job(bot.rt, again)  # a redelivery of the same job

    assert "*Incident report* (last 30d): 4 incidents" in dm.text  # INC-6 is private: left out
    assert "Private incidents are left out" in dm.text
    assert len(local_slack.files()) == 1 and local_slack.messages(war_room) == []


def test_the_chart_stacks_each_week_by_severity_with_heights_in_proportion():
    import io

    from PIL import Image

    from bot.diagnosis.render.chart import PLOT
    from bot.writeup.report_chart import SEVERITY_COLOURS, report_png

    now = time.time()
    records = [dump(i) for i in incidents(now)]
    png = report_png(compute(records, since_s=30 * DAY, now=now))
    image = Image.open(io.BytesIO(png)).convert("RGB")
    left, top, right, bottom = PLOT  # the bars' area; the legend's swatches are above it
    painted = {s: [(x, y) for x in range(left, right) for y in range(top, bottom + 1)
                   if image.getpixel((x, y)) == colour] for s, colour in SEVERITY_COLOURS.items()}
    rows = {s: len({y for _, y in points}) for s, points in painted.items()}

    assert png_size(png) == (640, 260)
    assert min(x for x, _ in painted["P1"]) > min(x for x, _ in painted["P0"])  # P1 in the last week, P0 before
    # The busiest week has 2 incidents, so the axis tops at 2: one incident is half the plot's height.
    assert rows["P0"] == 2 * rows["P1"] == 2 * rows["P3"] == bottom - top
    assert painted["P2"] == []  # no P2 incident in the window
