"""The postmortem draft: a scripted incident through the real app gives a document holding exactly its facts,
in time order, with the right durations; published as a canvas (or a file, or to S3), linked in the channel and
under the announcement; and no user text can break the document."""

from __future__ import annotations

import re

import boto3
import pytest

from bot.incidents.timeline import Entry
from bot.slack.local import slack_error
from bot.writeup.postmortem.assemble import (
    gather_facts,
    postmortem_markdown,
    render_markdown,
)
from bot.writeup.postmortem.facts import build_facts, fmt_duration
from bot.writeup.view import IncidentView
from tests.servers import Reply, local_http_server
from tests.writeup_harness import declare, delete, edit, react, say, writeup_bot

HEADINGS = {"# Postmortem:", "## Summary", "### Impact", "### Discussion", "### Time at each severity", "## Timeline", "## Metrics", "## Root cause",
            "## Resolution", "## Action items", "## Lessons learned", "### What went well", "### What went wrong",
            "### Where we got lucky", "## Responders and roles", "### Roles", "## Supporting data", "### Checks run",
            "### Pages and acknowledgements"}


def section(markdown: str, heading: str) -> str:
    """The text under `heading` up to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    start = markdown.index(heading + "\n") + len(heading) + 1
    rest = markdown[start:]
    stop = re.search(rf"^#{{1,{len(level)}}} ", rest, re.MULTILINE)
    return rest[: stop.start()] if stop else rest


def event_lines(markdown: str) -> list[str]:
    timeline = section(markdown, "## Timeline").split("### Discussion")[0]
    return [line for line in timeline.splitlines() if line.startswith("- 2")]


def structure_is_intact(markdown: str) -> None:
    """What user text must never do: add a heading, change a table's columns, open HTML or a link."""
    for line in markdown.splitlines():
        if line.startswith("#"):
            assert any(line.startswith(h) for h in HEADINGS), f"a heading appeared: {line[:80]!r}"
    rows: list[str] = []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            rows.append(line)
            continue
        if rows:
            columns = {len(re.findall(r"(?<!\\)\|", row)) for row in rows}
            assert len(columns) == 1, f"a table changed shape: {rows}"
            rows = []
    assert not re.search(r"(?<!\\)<", markdown), "raw < (HTML, autolink or Slack mention) in the document"
    for label in re.findall(r"(?<!\\)\[([^\]]*)\]\(", markdown):
        assert label in {"message", "link", "results", "timeline chart"} or label.endswith("header message") or \
            re.fullmatch(r"\\?#\d+|[A-Z][A-Z0-9]+-\d+", label), label  # or a ticket: #12, OPS-7


# ------------------------------------------------------------------------------------------------ pure facts

T0 = 1_790_000_000.0  # 2026-09-21 14:13:20 UTC


def incident_view(**overrides: object) -> IncidentView:
    values: dict = {"id": "INC-9", "title": "Payments failing", "severity": "P1", "status": "resolved",
                    "declared_at": T0, "reporter": "U1", "commander": "U2", "service": "payments", "channel": "C9",
                    "link": "https://acme.slack.com/archives/C9/p1790000000000100", "resolved_at": T0 + 7200,
                    "resolved_by": "U2", "resolution": "Rolled back the deploy.",
                    "posted": {"status:s1": "1790001800.000200", "resolved": "1790007200.000300"}}
    values.update(overrides)
    return IncidentView(**values)  # type: ignore[arg-type]


def entry(id: str, at: float, kind: str, **fields: object) -> Entry:
    return Entry(id=id, incident_id="INC-9", at=T0 + at, kind=kind, **fields)  # type: ignore[arg-type]


SCRIPT = [
    entry("declared", 0, "declared", actor="U1", text="Payments failing",
          data={"severity": "P2", "service": "payments", "source": "slack"}),
    entry("page:k|pagerduty", 30, "page_sent", actor="bot",
          data={"delivery": "pagerduty", "severity": "P2", "level": 1, "reason": "policy"}),
    entry("msg:C9:1790000060.000001", 60, "message", actor="U3", text="card auth 502s, 40% of requests",
          ts="1790000060.000001", channel="C9", key_event=True, data={"reactions": {"pushpin": ["U1"]}}),
    entry("page_acked:0", 330, "page_acked", actor="U3", text="acknowledged after 5m",
          data={"via": "button", "after_s": 300.0}),
    entry("severity:s0", 900, "severity", actor="U2", text="all regions", data={"from": "P2", "to": "P1"}),
    entry("status:s1", 1800, "status", actor="U2", text="bad deploy 4512 changed the auth timeout",
          data={"from": "investigating", "to": "identified"}),
    entry("status:s2", 3600, "status", actor="U2", text="rolled back", data={"from": "identified", "to": "monitoring"}),
    entry("msg:C9:1790003700.000001", 3700, "message", actor="U3", text="action: <@U4> alert on auth 5xx ratio",
          ts="1790003700.000001", channel="C9", data={"action": {"text": "<@U4> alert on auth 5xx ratio",
                                                                   "owner": "U4", "source": "prefix", "done": False}}),
    entry("msg:C9:1790003800.000001", 3800, "message", actor="U1", text="luckily it was off-peak",
          ts="1790003800.000001", channel="C9"),
    entry("resolved", 7200, "resolved", actor="U2", text="Rolled back the deploy.", data={"from": "monitoring"}),
]


def test_durations_metrics_and_severity_time_come_from_the_timeline():
    facts = build_facts(incident_view(), SCRIPT, names={"U1": "alice", "U2": "bob", "U3": "carol", "U4": "dave"},
                        now=T0 + 9000)
    assert facts.duration_s == 7200
    assert [(s.severity, s.duration_s) for s in facts.severity_spans] == [("P2", 900), ("P1", 6300)]
    metrics = {m.name: (m.seconds, m.start) for m in facts.metrics}
    assert metrics.pop("Time to detect")[0] is None  # no alert, no first error: unknown, with the reason
    assert metrics == {"Time to acknowledge": (300.0, "first page sent"), "Time to mitigate": (3600, "declaration"),
                       "Time to resolve": (7200, "declaration")}
    markdown = render_markdown(facts)
    assert "| Duration | 2h 00m (declaration to resolution) |" in markdown
    assert "| P2 | 2026-09-21 14:13:20 | 2026-09-21 14:28:20 | 15m 00s |" in markdown
    assert "| P1 | 2026-09-21 14:28:20 | 2026-09-21 16:13:20 | 1h 45m |" in markdown
    assert "| Time to acknowledge | 5m 00s | first page sent | first acknowledgement |" in markdown
    assert "| Time to mitigate | 1h 00m | declaration |" in markdown
    assert "| Time to resolve | 2h 00m | declaration | resolved |" in markdown
    lines = event_lines(markdown)
    assert [line.split(" — ")[1] for line in lines] == [
        "Incident declared as P2, service payments", "Page sent to pagerduty (P2, level 1)", "**Key event**",
        "Page acknowledged after 5m 00s via button", "Severity P2 → P1", "Status investigating → identified",
        "Status identified → monitoring", "Resolved"]
    assert "[message](https://acme.slack.com/archives/C9/p1790001800000200)" in lines[5]  # the status post
    assert "@carol: “card auth 502s, 40% of requests” — [message](https://acme.slack.com/archives/C9/p1790000060000001)" \
        in lines[2]
    root = section(markdown, "## Root cause")
    assert "@bob: “bad deploy 4512 changed the auth timeout”" in root
    actions = section(markdown, "## Action items")
    assert "- [ ] @dave alert on auth 5xx ratio — owner: @dave" in actions
    assert "Said in the channel: “luckily it was off-peak”" in section(markdown, "### Where we got lucky")
    assert "The page was acknowledged after 5m 00s (P1 target: 1h 00m)" in section(markdown, "### What went well")
    assert "Severity was raised from P2 to P1 15m 00s after declaration" in section(markdown, "### What went wrong")
    responders = section(markdown, "## Responders and roles")
    assert "| @alice | declared, in the channel | 1 |" in responders
    assert "| @bob | incident commander, resolved | 0 |" in responders
    assert "| @carol | acknowledged the page, in the channel | 2 |" in responders
    structure_is_intact(markdown)


@pytest.mark.parametrize("kind", ["page_withheld", "page_failed"])  # page_failed + withheld: the older entries
def test_a_page_withheld_after_the_acknowledgement_is_not_a_failed_delivery(kind: str) -> None:
    withheld = entry("page:k2|pagerduty", 400, kind, actor="bot",
                     text="Not sent: INC-9 was acknowledged before this page's turn at pagerduty.",
                     data={"delivery": "pagerduty", "severity": "P2", "level": 2, "reason": "timer",
                           "withheld": "acknowledged"})
    failed = entry("page:k3|opsgenie", 410, "page_failed", actor="bot", text="Opsgenie answered 503",
                   data={"delivery": "opsgenie", "severity": "P2", "level": 2, "reason": "timer"})
    markdown = render_markdown(build_facts(incident_view(), sorted([*SCRIPT, withheld, failed], key=lambda e: e.at),
                                           now=T0 + 9000))
    pages = section(markdown, "### Pages and acknowledgements")
    assert "| pagerduty | P2 | 2 | not sent: acknowledged first |" in pages
    assert "| opsgenie | P2 | 2 | failed: Opsgenie answered 503 |" in pages
    assert "Page to pagerduty not sent: the incident was acknowledged first" in markdown
    assert "1 page(s) could not be delivered (opsgenie)" in section(markdown, "### What went wrong")
    structure_is_intact(markdown)


def test_an_open_incident_gets_a_draft_so_far():
    open_ = incident_view(status="monitoring", resolved_at=None, resolved_by=None, resolution=None)
    facts = build_facts(open_, SCRIPT[:-1], now=T0 + 4000)
    markdown = render_markdown(facts)
    assert "Draft (the incident is still monitoring)" in markdown
    assert "| Resolved | _not recorded_ |" in markdown and "_Not resolved yet._" in markdown
    assert "| Time to resolve | _not recorded_ |" in markdown
    assert "(still open)" in section(markdown, "### Time at each severity")


def test_user_text_cannot_break_the_document():
    nasty = ("<!channel> *bold* _it_ `code` ``` fence | col | # Heading\n## Another\n> quote\n- item\n"
             "[click](javascript:alert(1)) ![](@U999) <script>alert(1)</script> &amp; ~strike~ 1. list")
    huge = "x" * 10_000
    entries = [*SCRIPT[:2],
               entry("msg:C9:1790000070.000001", 70, "message", actor="U3", text=nasty, ts="1790000070.000001",
                     channel="C9", key_event=True),
               entry("msg:C9:1790000080.000001", 80, "message", actor="U3", text=f"action: {nasty}",
                     ts="1790000080.000001", channel="C9",
                     data={"action": {"text": nasty, "owner": "U3", "source": "prefix", "done": False}}),
               entry("msg:C9:1790000090.000001", 90, "message", actor="U3", text=huge, ts="1790000090.000001",
                     channel="C9", key_event=True),
               entry("status:x", 100, "status", actor="U2", text=nasty, data={"from": "investigating",
                                                                               "to": "identified"}),
               entry("resolved", 7200, "resolved", actor="U2", text=nasty + "\n" + huge)]
    facts = build_facts(incident_view(title=nasty), entries, names={"U3": "| evil # name <!here>"}, now=T0 + 7200)
    markdown = render_markdown(facts)
    structure_is_intact(markdown)
    assert "<!channel>" not in markdown and "<script>" not in markdown
    assert "\\<!channel\\>" in markdown and "\\*bold\\*" in markdown and "\\`code\\`" in markdown
    assert "\\| col \\|" in markdown
    assert "x" * 4001 not in markdown  # 10 kB of text is cut, with an ellipsis
    assert all(len(line) < 1200 for line in event_lines(markdown))
    assert len(markdown) < 40_000


def test_a_replaced_template_is_used_and_still_escapes(tmp_path):
    template = tmp_path / "pm.md.j2"
    template.write_text("# {{ pm.incident_id }}: {{ pm.title }}\n{% for a in pm.action_items %}* {{ a.text }}\n"
                        "{% endfor %}Resolved in {{ pm.duration_s|duration }}\n")
    facts = build_facts(incident_view(title="<!here> *now*"), SCRIPT, now=T0 + 7200)
    assert render_markdown(facts, template) == ("# INC-9: \\<!here\\> \\*now\\*\n* @U4 alert on auth 5xx ratio\n"
                                                "Resolved in 2h 00m\n")


# ------------------------------------------------------------------------------------------------ end to end

def probe(url: str) -> dict:
    return {"url": url, "samples": 1, "timeout_s": 1}


async def run_scripted_incident(bot) -> dict:
    """Declare, talk (messages, a thread, 📌, an edit, a deletion, an action item), change status and severity,
    acknowledge the page, resolve — everything through signed requests and events, as in Slack."""
    incident = await declare(bot, "Checkout errors P2 api")
    channel = incident.channel
    await bot.settle()  # the declaration's diagnosis finishes
    said = {}
    said["first"] = await say(bot, channel, "U2", "seeing 500s on /pay since 14:02")
    said["question"] = await say(bot, channel, "U1", "is the db ok?", thread_ts=said["first"])
    said["answer"] = await say(bot, channel, "U2", "yes, db is fine", thread_ts=said["first"])
    await react(bot, channel, said["first"], "U1", "pushpin")
    said["typo"] = await say(bot, channel, "U1", "wrong window, ignore")
    await delete(bot, channel, said["typo"])
    assert "acknowledged" in await bot.command("/incident", "ack", user="U1", channel=channel)
    await bot.command("/incident", "status identified deploy 4512 broke the pool config", user="U1", channel=channel)
    said["edited"] = await say(bot, channel, "U2", "rollback started at 14:20")
    await edit(bot, channel, said["edited"], "rollback started at 14:21")
    await react(bot, channel, said["edited"], "U2", "pushpin")
    said["action"] = await say(bot, channel, "U1", "action: <@U2> alert on pool saturation")
    await bot.command("/incident", "sev P1 customers see errors", user="U1", channel=channel)
    await bot.command("/incident", "status monitoring error rate back to normal", user="U1", channel=channel)
    await bot.command("/incident", "resolve rolled back deploy 4512", user="U1", channel=channel)
    await bot.settle()
    return said


async def test_a_scripted_incident_gives_a_postmortem_with_exactly_its_facts_in_order(
        local_slack, redis_url, tmp_path, monkeypatch, pd):
    announcements = local_slack.add_channel("incidents", members=["U1"])
    with local_http_server({"/pay": Reply(500)}) as server:
        async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, pagerduty=pd,
                               services={"api": {"http": [probe(server.url("/pay"))]}},
                               incident={"incidents_channel": announcements}) as bot:
            await run_scripted_incident(bot)
            incident = await bot.incident("INC-1")
            [canvas] = local_slack.canvases()
            markdown = canvas["markdown"]
            assert canvas["channel"] == incident.channel and canvas["title"].startswith("Postmortem INC-1")
            entries = await bot.ctx.timeline.entries("INC-1")
            facts = await gather_facts(bot.rt, "INC-1", now=incident.resolved_at)

    at = {e.kind if e.kind not in ("status",) else f"status:{e.data['to']}": e.at for e in entries}
    # Summary: UTC times, duration, severity time
    assert facts.duration_s == incident.resolved_at - incident.declared_at
    assert [s.severity for s in facts.severity_spans] == ["P2", "P1"]
    assert facts.severity_spans[0].end == at["severity"] and facts.severity_spans[1].end == incident.resolved_at
    assert sum(s.duration_s for s in facts.severity_spans) == facts.duration_s
    assert facts.services == ["api"]
    assert "| Users impacted | unknown: the services file names no AWS resources" in markdown
    # Metrics, each from the right start
    metrics = {m.name: m.seconds for m in facts.metrics}
    first_page = min(e.at for e in entries if e.kind == "page_sent")
    assert metrics["Time to acknowledge"] == at["page_acked"] - first_page
    assert metrics["Time to mitigate"] == at["status:monitoring"] - incident.declared_at
    assert metrics["Time to resolve"] == incident.resolved_at - incident.declared_at
    assert f"| Time to resolve | {fmt_duration(metrics['Time to resolve'])} | declaration | resolved |" in markdown

    # Timeline: exactly the key events and the bot's actions, in time order, each with a link
    lines = event_lines(markdown)
    kinds = [e.kind for e in entries if not e.removed and (e.key_event or e.kind in (
        "declared", "page_sent", "page_acked", "severity", "status", "diagnosis", "diagnosis_requested",
        "resolved", "escalated", "commander", "note"))]
    assert len(lines) == len(kinds)
    stamps = [line[2:21] for line in lines]
    assert stamps == sorted(stamps)
    key_lines = [line for line in lines if "**Key event**" in line]
    assert len(key_lines) == 2
    assert "“seeing 500s on /pay since 14:02”" in key_lines[0] and "/archives/" in key_lines[0]
    assert "“rollback started at 14:21” _(edited)_" in key_lines[1]
    assert "14:20" not in markdown  # the text before the edit is gone
    assert "wrong window" not in markdown  # the deleted message left no trace
    assert not any("is the db ok" in line for line in lines)  # not a key event...
    discussion = section(markdown, "### Discussion")  # ...but a reply in a key event's thread: discussion
    assert "@alice: “is the db ok?”" in discussion and "@bob: “yes, db is fine”" in discussion
    assert any("Status investigating → identified — @alice: “deploy 4512 broke the pool config”" in line
               and "[message](" in line for line in lines)
    assert any("Resolved — @alice: “rolled back deploy 4512” — [message](" in line for line in lines)
    assert all("[message](" in line or "[results](" in line for line in lines if "Page sent" not in line)
    # Root cause, resolution, action items, supporting data
    root = section(markdown, "## Root cause")
    assert "deploy 4512 broke the pool config" in root
    assert "**http.health**" in root and "500" in root  # the diagnosis finding, with its evidence
    assert "> rolled back deploy 4512" in section(markdown, "## Resolution")
    assert "- [ ] @bob alert on pool saturation — owner: @bob" in section(markdown, "## Action items")
    pages = section(markdown, "### Pages and acknowledgements")
    assert "| page (policy) | pagerduty | P2 | 1 | sent |" in pages and "| acknowledged | @alice |" in pages
    assert "`api`: fail" in section(markdown, "### Checks run")
    assert "| @alice | declared, incident commander, acknowledged the page, resolved, in the channel |" in markdown
    structure_is_intact(markdown)
    # Link posted once in the channel and under the announcement
    link_posts = [m for m in local_slack.messages(incident.channel) if "postmortem draft" in m.text]
    assert len(link_posts) == 1 and canvas["canvas_id"] in link_posts[0].text or "/docs/" in link_posts[0].text
    announcement_channel, announcement_ts = incident.announcement
    assert any("postmortem draft" in m.text for m in local_slack.replies(announcement_channel, announcement_ts))


async def test_on_demand_postmortem_and_the_cli_hook_and_republishing_edits_the_same_canvas(
        local_slack, redis_url, tmp_path, monkeypatch):
    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch) as bot:
        incident = await declare(bot, "Search slow P3")
        ts = await say(bot, incident.channel, "U2", "p99 4s <!channel> &lt;b&gt;")
        await react(bot, incident.channel, ts, "U1", "pushpin")
        answer = await bot.command("/incident", "postmortem", user="U1", channel=incident.channel)
        assert "Writing the postmortem draft so far of *INC-1*" in answer
        await bot.settle()
        [canvas] = local_slack.canvases()
        assert canvas["kind"] == "channel" and "still investigating" in canvas["markdown"]
        await bot.command("/incident", "resolve reindexed", user="U1", channel=incident.channel)
        await bot.settle()
        assert len(local_slack.canvases()) == 1  # edited, not a second canvas
        assert "reindexed" in local_slack.canvases()[0]["markdown"]
        assert len(local_slack.calls_to("canvases.edit")) == 1
        posts = [m for m in local_slack.messages(incident.channel) if "postmortem draft" in m.text]
        assert len(posts) == 1  # the link is not posted again for the same canvas
        printed = await postmortem_markdown(bot.rt, "inc-1")
        assert printed.startswith("# Postmortem: INC-1 — Search slow")
        assert "“p99 4s @channel \\<b\\>”" in printed and "<!channel>" not in printed


async def test_without_canvases_the_draft_is_a_markdown_file_and_a_copy_goes_to_s3(
        local_slack, redis_url, tmp_path, monkeypatch, aws):
    boto3.client("s3").create_bucket(Bucket="postmortems")
    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, POSTMORTEM_S3_BUCKET="postmortems",
                           POSTMORTEM_S3_PREFIX="team-a") as bot:
        local_slack.script("conversations.canvases.create", slack_error("not_allowed_token_type"))
        local_slack.script("canvases.create", slack_error("not_allowed_token_type"))
        incident = await declare(bot, "Login broken P3")
        await bot.command("/incident", "resolve restarted auth", user="U1", channel=incident.channel)
        await bot.settle()
        assert local_slack.canvases() == []
        [upload] = local_slack.files(incident.channel)
        assert upload["name"] == "INC-1-postmortem.md" and upload["content"].startswith(b"# Postmortem: INC-1")
        stored = boto3.client("s3").get_object(Bucket="postmortems", Key="team-a/INC-1/postmortem.md")
        assert stored["Body"].read() == upload["content"]
        assert stored["ContentType"].startswith("text/markdown")
        [post] = [m for m in local_slack.messages(incident.channel) if "postmortem draft" in m.text]
        assert upload["permalink"] in post.text and "s3://postmortems/team-a/INC-1/postmortem.md" in post.text


async def test_thread_mode_incident_gets_a_standalone_canvas_shared_in_its_channel(
        local_slack, redis_url, tmp_path, monkeypatch):
    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch,
                           incident={"incident_create_channels": False}) as bot:
        incident = await declare(bot, "Cache misses P3", channel="C1")
        await bot.command("/incident", "resolve warmed the cache", user="U1", channel="C1")
        await bot.settle()
        [canvas] = local_slack.canvases()
        assert canvas["kind"] == "standalone" and canvas["channel"] == "C1"
        link = [m for m in local_slack.replies("C1", incident.thread_ts) if "postmortem draft" in m.text]
        assert len(link) == 1


async def test_a_broken_team_template_falls_back_to_the_built_in_one(local_slack, redis_url, tmp_path, monkeypatch):
    broken = tmp_path / "broken.md.j2"
    broken.write_text("# {{ pm.no_such_field }}\n")
    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, POSTMORTEM_TEMPLATE=str(broken)) as bot:
        incident = await declare(bot, "Template typo P3")
        await bot.command("/incident", "resolve fixed", user="U1", channel=incident.channel)
        await bot.settle()
        [canvas] = local_slack.canvases()
        assert canvas["markdown"].startswith("# Postmortem: INC-1 — Template typo")
