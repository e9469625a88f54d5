"""Action items become tickets: `action:` lines, the ☑ reaction and `/incident action` reach GitHub Issues or Jira
Cloud (local servers speaking their REST shapes) on resolve, once — a retried job, a create that stored the
issue but answered 502, and a worker SIGKILLed between the tracker's create and Redis all leave one ticket; the
tickets link back to the incident and the postmortem, and their state shows in `/incident summary`, the
postmortem and `/incident followups`."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from bot.writeup.trackers.export import export, followups, request_tickets
from bot.writeup.trackers.model import marker
from bot.writeup.trackers.store import stored_tickets, tickets_key
from handlers.commands.incident_writeup import parse_action, parse_due
from tests.tracker_servers import FakeGitHub, FakeJira, serving
from tests.writeup_harness import declare, react, say, writeup_bot


def github_env(fake: FakeGitHub) -> dict[str, str]:
    return {"GITHUB_TOKEN": fake.token, "GITHUB_REPOSITORY": fake.repo, "GITHUB_API_URL": fake.url,
            "TRACKER_LABELS": "incident-action,postmortem"}


def jira_env(fake: FakeJira) -> dict[str, str]:
    return {"TRACKER": "jira", "JIRA_URL": fake.url, "JIRA_USER": "bot@example.com", "JIRA_API_TOKEN": "jira-token",
            "JIRA_PROJECT": fake.project, "TRACKER_LABELS": "incident"}


async def three_action_items(bot, channel: str) -> None:
    """One of each kind: an `action:` line, the ☑ reaction, and the subcommand with owner and due date."""
    await say(bot, channel, "U1", "action: <@U2> alert on pool saturation")
    ts = await say(bot, channel, "U2", "we should add a runbook for the pool")
    await react(bot, channel, ts, "U1", "ballot_box_with_check")
    answer = await bot.command("/incident", "action raise the pool limit <@U2|bob> 2026-12-24", user="U1",
                               channel=channel)
    assert "Action item recorded in INC-1 for <@U2>, due 2026-12-24" in answer


async def test_action_items_become_github_issues_on_resolve_once_and_their_state_comes_back(
        local_slack, redis_url, tmp_path, monkeypatch):
    with serving(FakeGitHub()) as gh:
        async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, **github_env(gh)) as bot:
            incident = await declare(bot, "Checkout errors P2")
            await three_action_items(bot, incident.channel)
            await bot.command("/incident", "resolve rolled back", user="U1", channel=incident.channel)
            await bot.wait_for(lambda: len(gh.issues) == 3, what="three issues")
            await bot.settle()
            pm = local_slack.canvases()[0]["markdown"]
            summary = await bot.command("/incident", "summary", user="U1", channel=incident.channel)
            gh.close(2)
            await bot.command("/incident", "tickets", user="U1", channel=incident.channel)
            await bot.settle()
            after_close = await bot.command("/incident", "summary", user="U1", channel=incident.channel)
            left = await bot.command("/incident", "followups", user="U1", channel="C1")
            bobs = await bot.command("/incident", "followups <@U2|bob>", user="U1", channel="C1")
            pm_after = local_slack.canvases()[0]["markdown"]
            incident = await bot.incident("INC-1")

    assert gh.creates() == 3
    titles = sorted(i["title"] for i in gh.issues)
    assert titles == ["[INC-1] @bob alert on pool saturation", "[INC-1] raise the pool limit",
                      "[INC-1] we should add a runbook for the pool"]
    for issue in gh.issues:
        assert {label["name"] for label in issue["labels"]} == {"incident-action", "postmortem"}
        assert f"Incident: {incident.link}" in issue["body"] and "Postmortem: https://" in issue["body"]
        assert "<!-- chatops-action-" in issue["body"]
    limit = next(i for i in gh.issues if "limit" in i["title"])
    assert "Owner: bob" in limit["body"] and "Due: 2026-12-24" in limit["body"]
    for n in (1, 2, 3):  # the postmortem links each ticket
        assert f"ticket: [\\#{n}](https://github.com/acme/ops/issues/{n}) (open)" in pm
    assert "Tickets: <https://github.com/acme/ops/issues/1|#1> (open)" in summary and "0 of 3 done" in summary
    assert "(closed)" in after_close and "1 of 3 done" in after_close
    assert "(closed)" in pm_after
    assert left.startswith("*Open action items* (2):") and "INC-1" in left
    assert "alert on pool saturation" in bobs and "raise the pool limit" in bobs and "runbook" not in bobs


async def test_a_retried_job_and_a_create_that_answered_502_make_one_ticket_each(
        local_slack, redis_url, tmp_path, monkeypatch):
    with serving(FakeGitHub()) as gh:
        async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, TRACKER_ON_RESOLVE="false",
                               **github_env(gh)) as bot:
            incident = await declare(bot, "Search slow P3")
            await say(bot, incident.channel, "U1", "TODO: shard the index")
            gh.fail_creates_after_storing = 1  # stored, but the answer is a 502: the job fails and is retried
            await request_tickets(bot.rt, incident.id, reason="test")
            await bot.wait_for(lambda: gh.creates() == 1, what="the create that answered 502")
            await bot.settle()
            assert len(gh.issues) == 1 and len(await stored_tickets(bot.rt, incident.id)) == 1
            await bot.rt.redis.delete(tickets_key(bot.rt, incident.id))  # Redis forgot it: a job retried later
            again = await export(bot.rt, incident.id)
            twice = await export(bot.rt, incident.id)

    assert gh.creates() == 1 and len(gh.issues) == 1
    assert (again.created, again.found) == (0, 1) and (twice.created, twice.refreshed) == (0, 1)


async def test_jira_cloud_tickets_found_by_marker_label_and_done_by_status_category(
        local_slack, redis_url, tmp_path, monkeypatch):
    with serving(FakeJira()) as jira:
        async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, **jira_env(jira)) as bot:
            incident = await declare(bot, "Payments failing P1")
            await three_action_items(bot, incident.channel)
            await bot.command("/incident", "resolve fixed", user="U1", channel=incident.channel)
            await bot.wait_for(lambda: len(jira.issues) == 3, what="three Jira issues")
            await bot.settle()
            await bot.rt.redis.delete(tickets_key(bot.rt, incident.id))
            jira.resolve("OPS-1")
            report = await export(bot.rt, incident.id)
            summary = await bot.command("/incident", "summary", user="U1", channel=incident.channel)

    assert jira.creates() == 3 and (report.created, report.found) == (0, 3)
    fields = jira.issues[0]["fields"]
    assert fields["issuetype"] == {"name": "Task"} and fields["project"] == {"key": "OPS"}
    assert fields["labels"][0] == "incident" and fields["labels"][1].startswith("chatops-action-")
    assert fields["description"]["type"] == "doc" and fields["description"]["version"] == 1
    links = [n["marks"][0]["attrs"]["href"] for p in fields["description"]["content"] for n in p["content"]
             if n.get("marks")]
    assert len(links) == 2 and "/archives/" in links[0]  # the incident, then the postmortem
    assert f"<{jira.url}/browse/OPS-1|OPS-1> (Done)" in summary and "1 of 3 done" in summary


async def test_a_worker_sigkilled_after_the_tracker_created_the_issue_leaves_one_ticket(
        local_slack, redis_url, tmp_path, monkeypatch):
    with serving(FakeGitHub()) as gh:
        async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, TRACKER_ON_RESOLVE="false",
                               **github_env(gh)) as bot:
            incident = await declare(bot, "Queue backlog P2")
            await say(bot, incident.channel, "U1", "action: add a DLQ alarm")
            await bot.settle()
            await bot.stop_workers()  # only the child process consumes the queue now
            child = bot.worker_process(tmp_path)
            killed: list[int] = []

            def kill_the_worker(issue: dict) -> None:  # stored by the tracker, the answer not yet sent
                os.kill(child.pid, signal.SIGKILL)
                killed.append(issue["number"])

            gh.on_create = kill_the_worker
            try:
                await request_tickets(bot.rt, incident.id, reason="test")
                await bot.wait_for(lambda: killed, timeout_s=30, what="the worker killed in the create")
                assert await asyncio.to_thread(child.wait, 10) == -signal.SIGKILL
            finally:
                if child.poll() is None:
                    child.kill()
            gh.on_create = None
            assert await stored_tickets(bot.rt, incident.id) == {}  # Redis never heard of it
            bot.start_worker()  # takes over the dead worker's job
            await bot.wait_for(lambda: gh.requests.count(("GET", "/repos/acme/ops/issues")) >= 2, timeout_s=30,
                               what="the job run again")
            deadline = time.monotonic() + 20
            while not (tickets := await stored_tickets(bot.rt, incident.id)) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)

    assert gh.creates() == 1 and len(gh.issues) == 1
    [ticket] = tickets.values()
    assert ticket.key == "#1" and ticket.url.endswith("/issues/1")


async def test_followups_across_incidents_with_their_age_and_owner(local_slack, redis_url, tmp_path, monkeypatch):
    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch) as bot:
        first = await declare(bot, "DB failover P1")
        await say(bot, first.channel, "U1", "action: <@U2> document the failover")
        await bot.command("/incident", "resolve done", user="U1", channel=first.channel)
        second = await declare(bot, "Cache misses P3", channel="C1")
        await bot.command("/incident", "action tune the TTL 3d", user="U1", channel=second.channel)
        await bot.settle()
        items = await followups(bot.rt)
        answer = await bot.command("/incident", "followups", user="U1", channel="C1")
        none_yet = await bot.command("/incident", "tickets", user="U1", channel=second.channel)

    assert [(f.incident, f.owner) for f in items] == [("INC-1", "U2"), ("INC-2", "U1")]
    assert items[1].due == parse_due("3d")
    assert "*INC-1*" in answer and "document the failover — <@U2>" in answer and "s old)" in answer
    assert "No tracker is configured" in none_yet


def test_action_arguments_and_markers():
    assert parse_action(["fix", "it", "<@U9|x>", "2w"]) == ("fix it", "U9", parse_due("2w"))
    assert parse_action(["fix", "it", "2026-01-02", "<@U9|x>"]) == ("fix it", "U9", "2026-01-02")
    assert parse_due("2026-02-30") is None and parse_due("3d", now=0) == "1970-01-04"
    with pytest.raises(Exception, match="What should be done"):
        parse_action([])
    assert marker("INC-1", "msg:C1:1.2") == marker("INC-1", "msg:C1:1.2") != marker("INC-2", "msg:C1:1.2")


async def test_a_private_incident_keeps_its_action_items_and_title_out_of_the_tracker_and_the_announcement(
        local_slack, redis_url, tmp_path, monkeypatch):
    announcements = local_slack.add_channel("incidents", members=["U1"])
    with serving(FakeGitHub()) as gh:
        async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, **github_env(gh),
                               incident={"incidents_channel": announcements}) as bot:
            incident = await declare(bot, "Payroll export leaking salaries P1 private")
            assert incident.private
            await say(bot, incident.channel, "U1", "action: rotate the payroll bucket keys")
            await bot.command("/incident", "resolve contained", user="U1", channel=incident.channel)
            await bot.wait_for(lambda: len(gh.issues) == 1, what="the private incident's issue")
            await bot.settle()
            channel, ts = (await bot.incident(incident.id)).announcement
            under_announcement = [m.text for m in local_slack.replies(channel, ts)]
            in_channel = [m.text for m in local_slack.messages(incident.channel)]

    [issue] = gh.issues
    assert "payroll" not in (issue["title"] + issue["body"]).lower()
    assert issue["title"] == "[INC-1] Action item of a private incident (its text is in the incident's channel)"
    ready = [t for t in under_announcement if "postmortem draft" in t]
    assert ready and all("Payroll" not in t and "<http" not in t and "|" not in t for t in ready)
    assert any("postmortem draft" in t and "<" in t for t in in_channel)  # its people get the link


async def test_private_action_item_text_reaches_the_tracker_when_the_setting_allows_it(
        local_slack, redis_url, tmp_path, monkeypatch):
    with serving(FakeJira()) as jira:
        async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, TRACKER_ON_RESOLVE="false",
                               TRACKER_PRIVATE_TEXT="true", **jira_env(jira)) as bot:
            incident = await declare(bot, "Payroll export P2 private")
            await say(bot, incident.channel, "U1", "action: rotate the payroll bucket keys")
            await bot.settle()
            report = await export(bot.rt, incident.id)

    assert report.created == 1 and jira.issues[0]["fields"]["summary"] == "[INC-1] rotate the payroll bucket keys"


async def test_rate_limits_are_waited_out_as_each_tracker_asks_and_a_long_wait_goes_back_to_the_queue(
        local_slack, redis_url, tmp_path, monkeypatch):
    from bot.queue import Retry
    from bot.writeup.trackers.export import tickets_job

    with serving(FakeGitHub()) as gh, serving(FakeJira()) as jira:
        async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, TRACKER_ON_RESOLVE="false",
                               **github_env(gh)) as bot:
            incident = await declare(bot, "Search slow P3")
            await say(bot, incident.channel, "U1", "TODO: shard the index")
            await bot.settle()
            gh.rate_limited, gh.rate_limit_wait_s = 1, 2  # 403, x-ratelimit-remaining 0, reset in ≤ 2 s: wait here
            started = time.monotonic()
            first = await export(bot.rt, incident.id)
            waited = time.monotonic() - started
            await bot.rt.redis.delete(tickets_key(bot.rt, incident.id))
            gh.rate_limited, gh.rate_limit_wait_s = 1, 600  # too long to sleep in a job: the queue runs it later
            with pytest.raises(Retry) as later:
                await tickets_job(bot.rt, _job(incident.id))
        async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, TRACKER_ON_RESOLVE="false",
                               **jira_env(jira)) as bot:
            incident = await declare(bot, "Search slow P3")
            await say(bot, incident.channel, "U1", "TODO: shard the index")
            await bot.settle()
            jira.rate_limited, jira.rate_limit_wait_s = 1, 1  # 429 + Retry-After: 1 on the search
            jira_report = await export(bot.rt, incident.id)
            await bot.rt.redis.delete(tickets_key(bot.rt, incident.id))
            jira.rate_limited, jira.rate_limit_wait_s = 1, 900
            with pytest.raises(Retry) as jira_later:
                await tickets_job(bot.rt, _job(incident.id))

    assert first.created == 1 and waited >= 0.9 and len(gh.issues) == 1
    assert 500 <= later.value.delay_s <= 600 and len(gh.issues) == 1  # nothing made while limited
    assert jira_report.created == 1 and jira_later.value.delay_s == 900 and len(jira.issues) == 1


async def test_github_pages_are_followed_by_the_link_header_to_find_an_older_ticket(
        local_slack, redis_url, tmp_path, monkeypatch):
    with serving(FakeGitHub()) as gh:
        async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, TRACKER_ON_RESOLVE="false",
                               **github_env(gh)) as bot:
            incident = await declare(bot, "Search slow P3")
            await say(bot, incident.channel, "U1", "TODO: shard the index")
            await bot.settle()
            await export(bot.rt, incident.id)
            for n in range(150):  # newer issues with the same labels push ours to the second page
                gh.issues.append({**gh.issues[0], "number": n + 2, "body": "another", "title": f"other {n}"})
            await bot.rt.redis.delete(tickets_key(bot.rt, incident.id))
            again = await export(bot.rt, incident.id)

    lists = [p for m, p in gh.requests if m == "GET" and p == "/repos/acme/ops/issues"]
    assert (again.created, again.found) == (0, 1) and gh.creates() == 1 and len(lists) == 3


def test_the_fake_jira_refuses_a_plain_string_description_as_jira_cloud_v3_does():
    import httpx

    with serving(FakeJira()) as jira:
        fields = {"project": {"key": "OPS"}, "summary": "x", "issuetype": {"name": "Task"}, "description": "text"}
        answer = httpx.post(f"{jira.url}/rest/api/3/issue", json={"fields": fields},
                            auth=("bot@example.com", "jira-token"), timeout=5)
    assert answer.status_code == 400 and "Atlassian Document" in answer.json()["errors"]["description"]
    assert jira.issues == []


def _job(incident_id: str):
    from bot.queue import Job

    return Job(id="t", kind="writeup.tickets", payload={"incident": incident_id, "reason": "test"}, attempt=1,
               enqueued_at=time.time())


@pytest.mark.parametrize("login_readable", [True, False], ids=["personal token", "app token without /user"])
async def test_github_finds_its_issue_again_when_it_dropped_the_labels_for_lack_of_push_access(
        local_slack, redis_url, tmp_path, monkeypatch, login_readable):
    with serving(FakeGitHub()) as gh:
        gh.no_push_access, gh.user_forbidden = True, not login_readable
        async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch, TRACKER_ON_RESOLVE="false",
                               **github_env(gh)) as bot:
            incident = await declare(bot, "Search slow P3")
            await say(bot, incident.channel, "U1", "TODO: shard the index")
            await say(bot, incident.channel, "U1", "TODO: alert on slow queries")
            gh.fail_creates_after_storing = 1  # stored, but the answer is a 502: the job fails and is retried
            await request_tickets(bot.rt, incident.id, reason="test")
            await bot.wait_for(lambda: len(gh.issues) == 2, what="two issues")
            await bot.settle()
            other = {**gh.issues[0], "number": 3, "body": "unrelated", "user": {"login": "someone"}}
            gh.issues.append(other)  # a person's newer issue: not the bot's
            await bot.rt.redis.delete(tickets_key(bot.rt, incident.id))  # Redis forgot them: a job retried later
            asked_before = gh.requests.count(("GET", "/user"))
            again = await export(bot.rt, incident.id)

    assert gh.creates() == 2 and len(gh.issues) == 3
    assert [i["labels"] for i in gh.issues[:2]] == [[], []]  # GitHub dropped them silently
    assert (again.created, again.found) == (0, 2)
    assert all("labels" not in q for q in gh.queries)
    assert all(q.get("creator") == (["chatops-bot"] if login_readable else None) for q in gh.queries)
    assert gh.requests.count(("GET", "/user")) - asked_before == 1  # once per export, for both items


def test_jira_labels_with_spaces_stop_the_start_naming_the_setting_while_github_takes_them(monkeypatch):
    from bot.settings import ConfigError
    from bot.writeup.trackers.config import load_tracker_settings

    jira_site = {"JIRA_URL": "https://acme.atlassian.net", "JIRA_USER": "bot@example.com",
                 "JIRA_API_TOKEN": "jira-token", "JIRA_PROJECT": "OPS"}  # no TRACKER: Jira is the one configured
    for name, value in {**jira_site, "TRACKER_LABELS": "incident, needs review,ops"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as refused:
        load_tracker_settings()
    monkeypatch.setenv("TRACKER", "github")
    for name, value in {"GITHUB_TOKEN": "ghp_x", "GITHUB_REPOSITORY": "acme/ops"}.items():
        monkeypatch.setenv(name, value)
    github = load_tracker_settings()  # GitHub labels may hold spaces ("good first issue")
    monkeypatch.setenv("TRACKER", "jira")
    monkeypatch.setenv("TRACKER_LABELS", "incident,needs-review")
    jira = load_tracker_settings()

    assert str(refused.value) == ('TRACKER_LABELS: Jira labels cannot contain spaces: "needs review" '
                                  '(write needs-review instead)')
    assert "\n" not in str(refused.value)
    assert github.chosen == "github" and github.labels == ["incident", "needs review", "ops"]
    assert jira.chosen == "jira" and jira.labels == ["incident", "needs-review"]
