"""The draft a human only has to judge: an incident opened by an alert, with metrics in CloudWatch (moto), a
finding that fails in two runs and then passes, talk in threads and bot reminders, gives a postmortem with time
to detect from the alert's startsAt, impact numbers with their peak minute from the seeded metrics, each finding
once with when it failed and passed again, the discussion quoted, reminders counted, and at most three gaps."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import boto3

from bot.incidents.timeline import EntryKind
from bot.writeup.postmortem.assemble import gather_facts, render_markdown
from bot.writeup.postmortem.chart import timeline_png, timeline_series
from bot.writeup.postmortem.publish import publish_postmortem
from bot.writeup.postmortem.draft import candidates, chatter, detection, discussion, parse_time
from bot.writeup.postmortem.facts import CheckRun, Finding, build_facts
from bot.writeup.postmortem.impact import period_for
from tests.incident_harness import ALERTMANAGER_TOKEN
from tests.servers import Reply, local_http_server
from tests.test_postmortem import T0, entry, section, structure_is_intact
from tests.writeup_harness import react, say, writeup_bot

GAP = re.compile(r"_To fill in\b")


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def seed_aws(now: datetime) -> dict:
    """A load balancer, a Lambda function's metrics and a queue with a dead-letter queue; minute values whose
    sums and peaks the test knows."""
    ec2, elb = boto3.client("ec2", region_name="us-east-1"), boto3.client("elbv2", region_name="us-east-1")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"us-east-1{z}")
               ["Subnet"]["SubnetId"] for i, z in ((1, "a"), (2, "b"))]
    arn = elb.create_load_balancer(Name="api-lb", Subnets=subnets)["LoadBalancers"][0]["LoadBalancerArn"]
    sqs = boto3.client("sqs", region_name="us-east-1")
    dlq = sqs.create_queue(QueueName="jobs-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.create_queue(QueueName="jobs", Attributes={"RedrivePolicy": json.dumps(
        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"})})
    lb_dim = arn.split(":loadbalancer/", 1)[1]
    series = {  # minutes before now → value
        ("AWS/ApplicationELB", "RequestCount", "LoadBalancer", lb_dim): {8: 1000, 6: 1200, 4: 900},
        ("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", "LoadBalancer", lb_dim): {8: 10, 6: 300, 4: 40},
        ("AWS/Lambda", "Errors", "FunctionName", "api-worker"): {7: 5, 5: 25},
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", "jobs-dlq"): {7: 3, 5: 12, 3: 9},
        ("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", "LoadBalancer", "app/other/1"): {6: 99999},
    }
    cw = boto3.client("cloudwatch", region_name="us-east-1")
    base = now.replace(second=0, microsecond=0)
    for (namespace, metric, dim, value), points in series.items():
        for minutes, v in points.items():
            cw.put_metric_data(Namespace=namespace, MetricData=[{
                "MetricName": metric, "Dimensions": [{"Name": dim, "Value": value}],
                "Timestamp": base - timedelta(minutes=minutes), "Value": v}])
    return {"base": base, "lb": "api-lb"}


async def test_an_alerted_incident_gives_a_draft_with_impact_detection_findings_and_few_gaps(
        local_slack, redis_url, tmp_path, monkeypatch, pd, aws):
    now = datetime.now(UTC)
    seeded = seed_aws(now)
    starts_at = now - timedelta(minutes=9)
    announcements = local_slack.add_channel("incidents", members=["U1"])
    services = {"api": {"http": [{"url": "", "samples": 1, "timeout_s": 1}],
                        "aws": {"region": "us-east-1", "load_balancers": ["api-lb"],
                                "lambda_functions": ["api-worker"], "queues": ["jobs"]}}}
    with local_http_server({"/pay": Reply(500)}) as server:
        services["api"]["http"][0]["url"] = server.url("/pay")
        async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, pagerduty=pd, services=services,
                               incident={"incidents_channel": announcements}) as bot:
            body = {"version": "4", "groupKey": '{}:{alertname="ApiDown"}', "status": "firing",
                    "receiver": "chatops", "groupLabels": {"alertname": "ApiDown"},
                    "commonLabels": {"alertname": "ApiDown", "severity": "critical", "service": "api"},
                    "commonAnnotations": {"summary": "API returns 502"}, "externalURL": "http://am.local",
                    "alerts": [{"status": "firing", "labels": {"alertname": "ApiDown", "service": "api",
                                                               "severity": "critical"},
                                "annotations": {"summary": "api 502"}, "startsAt": _iso(starts_at),
                                "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom.local/g",
                                "fingerprint": "f1"}]}
            answer = await bot.hook("/hooks/alertmanager", body, {"Authorization": f"Bearer {ALERTMANAGER_TOKEN}"})
            assert answer.status_code == 200, answer.text
            incident_id = answer.json()["incident"]
            incident = await bot.wait_incident(incident_id, lambda i: i.ready)
            channel = incident.channel
            await bot.settle()
            ws = bot.local._ws
            with ws.lock:  # the responders open the channel the alert made, as they would in Slack
                for user in ("U1", "U2"):
                    ws.join(ws.find_channel(channel), user)
            assert "acknowledged" in await bot.command("/incident", "ack", user="U1", channel=channel)
            await bot.command("/incident", "commander <@U1|alice>", user="U1", channel=channel)
            first = await say(bot, channel, "U2", "502s from the LB since the deploy")
            await react(bot, channel, first, "U1", "pushpin")
            await say(bot, channel, "U2", "it is the pool size, see the deploy", thread_ts=first)
            await say(bot, channel, "U2", "ok")  # too short to be discussion
            await say(bot, channel, "U2", "lunch anyone? going out now")  # nobody's role, no link, no thread
            await say(bot, channel, "U2", "rolling back per https://ci.example.com/deploy/4512 now")
            await bot.command("/diagnose", "api", user="U1", channel=channel)  # the same finding again
            await bot.settle()
            for n in range(4):  # the bot's nagging, as the reminder timer records it
                await bot.ctx.timeline.record(incident_id, EntryKind.REMINDER, entry_id=f"reminder:t{n}",
                                              actor="bot", text="Reminder: a status update is due")
            server.routes["/pay"] = [Reply(200)]
            await bot.command("/diagnose", "api", user="U1", channel=channel)  # fixed: the check passes again
            await bot.settle()
            await bot.command("/incident", "status monitoring rolled back", user="U1", channel=channel)
            await bot.settle()
            await bot.command("/incident", "resolve rolled back deploy 4512", user="U1", channel=channel)
            await bot.settle()
            incident = await bot.incident(incident_id)
            facts = await gather_facts(bot.rt, incident_id, now=incident.resolved_at)
            markdown = render_markdown(facts)
            runs = [e for e in await bot.timeline(incident_id) if e.kind == "diagnosis_findings"]
            published = local_slack.canvases()[0]["markdown"]
            await publish_postmortem(bot.rt, incident_id)  # again: the same chart is not shared twice
            charts = [f for f in local_slack.files(channel) if f.get("name") == f"{incident_id}-timeline.png"]

    # Time to detect: from the alert's startsAt to the declaration
    detect = next(m for m in facts.metrics if m.name == "Time to detect")
    assert detect.seconds == incident.declared_at - int(starts_at.timestamp())
    assert "alert startsAt" in detect.start
    # Impact: the seeded numbers, their peak minute, their source; the other load balancer's data is not ours
    figures = {f.label: f for f in facts.impact.figures}
    assert figures["requests at the load balancer"].total == 3100
    five = figures["5xx from the load balancer"]
    assert (five.total, five.peak) == (350, 300)
    assert five.peak_at == (seeded["base"] - timedelta(minutes=6)).timestamp()
    assert five.source == "CloudWatch AWS/ApplicationELB HTTPCode_ELB_5XX_Count (Sum per 1 min)"
    assert (figures["Lambda errors"].total, figures["Lambda errors"].peak) == (30, 25)
    assert figures["Lambda throttles"].total is None and "no data points" in figures["Lambda throttles"].note
    dlq = figures["messages in the dead-letter queue (deepest)"]
    assert (dlq.total, dlq.resource) == (12, "jobs-dlq")
    impact = section(markdown, "### Impact")
    peak_minute = (seeded["base"] - timedelta(minutes=6)).strftime("%Y-%m-%d %H:%M:%S")
    assert f"| 5xx from the load balancer | `api-lb` | 350 | 300 | {peak_minute} |" in impact
    assert "99,999" not in markdown
    # Root cause: the failing HTTP check once, although two runs reported it; it passed again while monitoring
    assert len(runs) >= 3
    http = [c for c in facts.candidates if c.check == "http.health"]
    assert len(http) == 1 and http[0].runs >= 2 and http[0].passed_again is not None
    root = section(markdown, "## Root cause")
    assert root.count("**http.health**") == 1 and "passed again" in root
    assert "Checks that could not run (not candidates): `aws.lambda_config` on `api-worker`" in root
    # Discussion: the reply to the pinned message and the deploy link; not the chatter of people or the bot
    said = section(markdown, "### Discussion")
    assert "“it is the pool size, see the deploy”" in said and "ci.example.com/deploy/4512" in said
    assert "lunch" not in said and "“ok”" not in said
    assert facts.chatter["status-update reminder"] == 4
    assert "4 status-update reminders" in markdown
    assert "Reminder: a status update" not in section(markdown, "## Timeline")
    # Roles and owner filled in; only judgement left
    assert "| Owner | @" in markdown
    assert len(GAP.findall(markdown)) <= 3, GAP.findall(markdown)
    structure_is_intact(markdown)
    # The picture: shared once in the channel (republishing an unchanged chart shares nothing), linked in the draft
    assert len(charts) == 1 and "[timeline chart](" in published
    series = timeline_series(facts)
    assert series.metric == "5xx from the load balancer (api-lb)" and max(v for _, v in series.points) == 300
    assert [m.label for m in series.markers] == ["Detected", "Acknowledged", "Mitigated", "Resolved"]
    assert timeline_png(facts)[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------ pure parts

def test_detection_takes_the_earliest_start_before_the_declaration_and_says_why_when_there_is_none():
    entries = [entry("alert:a", -300, "alert", actor="alertmanager", text="api down",
                     data={"status": "firing", "starts_at": _iso(datetime.fromtimestamp(1_790_000_000 - 600, UTC))}),
               entry("alert:later", 60, "alert", data={"status": "firing", "starts_at": "2030-01-01T00:00:00Z"}),
               entry("f", 30, "diagnosis_findings", data={"findings": [
                   {"check": "aws.logs", "target": "/aws/lambda/x",
                    "evidence": {"first_error_at": 1_790_000_000 - 900}}]})]
    found = detection(entries, 1_790_000_000)
    assert found.seconds == 900 and "first error in the logs (aws.logs on /aws/lambda/x)" == found.source
    none = detection([], 1_790_000_000)
    assert none.seconds is None and "no alert start time" in none.reason
    assert parse_time("0001-01-01T00:00:00Z") is None and parse_time("2026-09-21T14:13:20+00:00") == 1_790_000_000


def test_each_finding_once_with_first_failure_and_recovery():
    f = Finding("http.health", "https://x/pay", "fail", "500")
    g = Finding("aws.sqs_dlq", "jobs", "warn", "12 dead letters")
    runs = [CheckRun(10, "api", "fail", "", {}, [f, g]), CheckRun(20, "api", "fail", "", {}, [f, g]),
            CheckRun(25, "db", "ok", "", {}, []), CheckRun(30, "api", "warn", "", {}, [g]),
            CheckRun(40, "api", "error", "", {}, [])]
    found = candidates(runs)
    assert [(c.check, c.first_failed, c.passed_again, c.runs) for c in found] == [
        ("http.health", 10, 30, 2), ("aws.sqs_dlq", 10, None, 3)]


def test_remediation_entries_are_listed_with_their_result_when_the_timeline_has_them():
    from tests.test_postmortem import SCRIPT, incident_view

    fix = entry("remediation:1", 3000, "remediation", actor="U2", text="rolled back api-worker to v41",
                data={"action": "lambda.rollback api-worker → v41", "result": "succeeded"})
    markdown = render_markdown(build_facts(incident_view(), [*SCRIPT[:-1], fix, SCRIPT[-1]], now=T0 + 7200))
    assert "Remediation actions taken:" in markdown
    assert "@U2: lambda.rollback api-worker → v41 → succeeded" in section(markdown, "## Root cause")


def test_discussion_heuristic_and_chatter_counts():
    def msg(n: int, text: str, actor: str = "U9", thread: str | None = None, **kw: object):
        ts = f"1790000{n:03d}.000001"
        return entry(f"msg:C9:{ts}", n, "reply" if thread else "message", actor=actor, text=text, ts=ts,
                     thread_ts=thread, channel="C9", **kw)

    pinned = msg(1, "the LB returns 502", key_event=True)
    entries = [pinned, msg(2, "is it the pool config?", thread=pinned.ts), msg(3, "I will page the DBA now",
                                                                              actor="U2"),
               msg(4, "see https://grafana.example.com/d/abc for latency"), msg(5, "coffee break for me"),
               msg(6, "action: add an alarm for it", data={"action": {"text": "x"}}),
               msg(7, "yes", thread=pinned.ts),
               entry("r1", 8, "reminder"), entry("r2", 9, "reminder"), entry("s1", 10, "summary")]
    quotes = discussion(entries, {pinned.ts}, {"U2"}, lambda e: None)
    assert [q.text for q in quotes] == ["is it the pool config?", "I will page the DBA now",
                                        "see https://grafana.example.com/d/abc for latency"]
    assert chatter(entries) == {"status-update reminder": 2, "catch-up summary": 1}
    assert period_for(0, 3600) == 60 and period_for(0, 86_400 * 3) == 180


async def test_time_to_detect_from_the_first_error_the_cloudwatch_log_check_found(aws):
    """The real aws.log_errors check over moto's CloudWatch Logs, its evidence stored as record_findings stores it,
    gives the draft its time to detect; errors already there when the scan began are said to be a lower bound."""
    from checks.aws.logs import log_errors
    from tests.aws_lambda_scenarios import put_log_lines, wall_clock
    from tests.test_checks_aws_compute import context
    from bot.writeup.install import _jsonable

    now = wall_clock()
    started = now - timedelta(minutes=25)
    put_log_lines(aws, "api-prod", [(started + timedelta(minutes=m), f"ERROR upstream 502 from payments #{m}")
                                    for m in range(0, 20, 2)])
    put_log_lines(aws, "busy", [(now - timedelta(seconds=s), "ERROR disk full") for s in range(3570, 0, -60)])
    declared = started.replace(microsecond=0).timestamp() + 15 * 60  # the evidence keeps whole seconds

    def findings_entry(result, target: str):
        finding = {"check": "aws.log_errors", "target": target, "status": result.status.value,
                   "evidence": _jsonable(result.evidence)}
        return entry(f"diagnosis_findings:{target}", 0, "diagnosis_findings", data={"findings": [finding]})

    fresh = await log_errors("api-prod", context(aws, now, log_groups=["api-prod"]))
    found = detection([findings_entry(fresh, "api-prod")], declared)
    old = await log_errors("busy", context(aws, now, log_groups=["busy"]))
    edge = detection([findings_entry(old, "busy")], now.timestamp())

    assert found.impact_start == started.replace(microsecond=0).timestamp() and found.seconds == 15 * 60
    assert found.source == "first error in the logs (aws.log_errors on api-prod)"
    assert edge.seconds is not None and edge.seconds >= 58 * 60 and "may have begun earlier" in edge.source
