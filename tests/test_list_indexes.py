"""The indexes the lists read (issue #20's "costs that stay flat"): a report reads its window by declaration time,
the follow-ups list reads the page it shows, and the timeline names the incidents holding an action item. Each
index is also built once from what a deployment stored before it existed."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from bot.incidents.model import Incident, incident_id
from bot.incidents.store import READ_BATCH, IncidentStore
from bot.incidents.timeline import EntryKind
from bot.runtime import Runtime, create_runtime
from bot.settings import Settings
from bot.writeup.config import WriteupSettings
from bot.writeup.context import writeup_of
from bot.writeup.install import install
from bot.writeup.report import build_report
from bot.writeup.trackers import followups as index
from bot.writeup.trackers.export import followups, followups_page
from bot.writeup.trackers.followups import FollowUp
from checks.schema import Secret, dump_json

DAY = 86_400.0


@pytest.fixture
async def rt(redis_url: str) -> AsyncIterator[Runtime]:
    settings = Settings.from_env(slack_bot_token=Secret("xoxb-test-token"), redis_url=redis_url)
    runtime = create_runtime(settings, redis_url=redis_url, queue_name=f"lists{uuid.uuid4().hex[:8]}")
    await install(runtime, settings=WriteupSettings.from_env())
    yield runtime
    await runtime.aclose()


def incident(number: int, declared_at: float, **fields: object) -> Incident:
    return Incident(id=incident_id(number), number=number, title=f"t{number}", severity="P2", reporter="U1",
                    origin_channel="C1", declared_at=declared_at, **fields)


def item(number: int, *, done: bool = False, owner: str = "U2", private: bool = False) -> FollowUp:
    return FollowUp(incident_id(number), "i1", f"item {number}", owner, 1000.0 + number, None, done,
                    private=private)


async def public(_: Incident) -> bool:
    return True


async def test_a_report_reads_its_window_in_batches_and_indexes_incidents_stored_before_the_index(rt):
    store, now = IncidentStore(rt.redis, rt.namespace), time.time()
    for number in range(1, READ_BATCH + 3):  # stored as a deployment without the declaration index did
        record = incident(number, now - 40 * DAY if number > 2 else now - number * DAY, status="resolved",
                          resolved_at=now)
        await rt.redis.set(store.incident_key(record.id), dump_json(record))
        await rt.redis.zadd(store.key("all"), {record.id: number})
    assert await store.create(incident(READ_BATCH + 10, now - 3600))  # declared after the index existed

    batches = [len(b) for b in [batch async for batch in store.declared_since(now - 90 * DAY)]]
    window = [json.loads(r)["id"] async for batch in store.declared_since(now - 30 * DAY) for r in batch]
    report = await build_report(rt, since_s=30 * DAY, now=now)

    assert batches == [READ_BATCH, 3]
    assert sorted(window) == ["INC-1", "INC-2", incident_id(READ_BATCH + 10)]
    assert report.incidents == 3 and report.open_incidents == 1


async def test_the_followups_page_reads_the_open_items_counts_the_rest_and_keeps_private_ones_to_their_people(rt):
    store = IncidentStore(rt.redis, rt.namespace)
    assert await store.create(incident(99, time.time(), private=True))
    await index.write(rt, [item(n, done=n % 2 == 0) for n in range(1, 41)])  # 20 open, 20 done
    await index.write(rt, [item(99, private=True)])
    await index.write(rt, [item(3, owner="U7")])  # handed over: U2's list loses it, U7's gains it

    shown, total = await followups_page(rt, public, 5)
    hidden, hidden_total = await followups_page(rt, lambda _: _refuse(), 5)
    mine, mine_total = await followups_page(rt, public, 50, owner="U7")
    twos, twos_total = await followups_page(rt, public, 50, owner="U2")
    await index.write(rt, [item(1, done=True)])
    after, after_total = await followups_page(rt, public, 5)

    assert [f.incident for f in shown] == ["INC-1", "INC-3", "INC-5", "INC-7", "INC-9"] and total == 21
    assert hidden_total == 20 and "INC-99" not in {f.incident for f in hidden}
    assert [f.incident for f in mine] == ["INC-3"] and mine_total == 1
    assert "INC-3" not in {f.incident for f in twos} and twos_total == 19 + 1  # and INC-99's, private
    assert after[0].incident == "INC-3" and after_total == 20


async def _refuse() -> bool:
    return False


async def test_followups_stored_before_the_open_index_are_indexed_once_with_their_incident_privacy(rt):
    store = IncidentStore(rt.redis, rt.namespace)
    assert await store.create(incident(1, time.time(), private=True, status="resolved", resolved_at=time.time()))
    old = {f.key: json.dumps({k: v for k, v in f.__dict__.items() if k != "private"})
           for f in (item(1), item(2), item(3, done=True))}
    await rt.redis.hset(rt.key("wu", "followups"), mapping=old)

    everyone, total = await followups_page(rt, public, 10)
    outsiders, outsider_total = await followups_page(rt, lambda _: _refuse(), 10)

    assert [f.incident for f in everyone] == ["INC-1", "INC-2"] and total == 2
    assert [f.incident for f in outsiders] == ["INC-2"] and outsider_total == 1


async def test_only_open_incidents_whose_timeline_holds_an_action_item_are_read_live(rt):
    store, timeline, now = IncidentStore(rt.redis, rt.namespace), writeup_of(rt).timeline, time.time()
    for number in (1, 2, 3):
        assert await store.create(incident(number, now))
    await timeline.record("INC-1", EntryKind.ACTION_ITEM, entry_id="action_item:a", actor="U1",
                          text="raise the pool limit", data={"owner": "U2", "done": False})
    message = await timeline.record("INC-2", EntryKind.MESSAGE, entry_id="msg:C1:1.0", actor="U1",
                                    text="we should add a runbook")
    assert await timeline.incidents_with_actions() == ["INC-1"]  # INC-2's message is no action item (yet)
    await timeline.update("INC-2", message.id, data={"action": {"text": "add a runbook", "owner": "U1",
                                                                "source": "reaction", "done": False}})

    listed = await followups(rt)
    async with store.mutate("INC-1") as changed:
        changed.status, changed.resolved_at = "resolved", now
    await followups(rt)

    assert await timeline.incidents_with_actions() == ["INC-2"]  # INC-1 resolved: its export indexes it
    assert [(f.incident, f.text) for f in listed] == [("INC-1", "raise the pool limit"), ("INC-2", "add a runbook")]


async def test_a_report_reads_the_findings_of_its_window_including_those_recorded_before_their_index(rt):
    from bot.writeup.report import _finding_key, record_recurring

    store, now = IncidentStore(rt.redis, rt.namespace), time.time()
    for number, declared in ((1, now - 400 * DAY), (2, now - 2 * DAY), (3, now - DAY), (4, now - 3600)):
        assert await store.create(incident(number, declared))
    finding = "aws.lambda_errors\tfn-1"  # recorded in INC-1..3 by a deployment without the per-incident sets
    await rt.redis.sadd(rt.key("wu", "findings"), finding)
    await rt.redis.sadd(_finding_key(rt, finding), "INC-1", "INC-2", "INC-3")
    await record_recurring(rt, "INC-4", [{"check": "aws.lambda_errors", "target": "fn-1", "status": "fail"}])

    report = await build_report(rt, since_s=30 * DAY, now=now)

    assert report.recurring == [{"check": "aws.lambda_errors", "target": "fn-1",
                                 "incidents": ["INC-2", "INC-3", "INC-4"]}]


async def test_after_an_upgrade_an_open_incidents_action_items_still_show_in_followups(
        local_slack, redis_url, tmp_path, monkeypatch):
    from tests.writeup_harness import declare, writeup_bot

    async with writeup_bot(local_slack, redis_url, tmp_path, monkeypatch) as bot:
        first = await declare(bot, "Checkout errors P2")
        await bot.command("/incident", "action raise the pool limit <@U2|bob>", user="U1", channel=first.channel)
        second = await declare(bot, "Search slow P3")
        await bot.command("/incident", "action add a search runbook", user="U1", channel=second.channel)
        await bot.command("/incident", "resolve reindexed", user="U1", channel=second.channel)
        await bot.settle()
        timeline = writeup_of(bot.rt).timeline  # as a deployment left them: no note of which timelines hold items
        await bot.rt.redis.delete(timeline.actions_key(), *await bot.rt.redis.keys(bot.rt.key("wu", "followups*")))

        answers = await asyncio.gather(*(bot.command("/incident", "followups", user=user, channel="C1")
                                         for user in ("U1", "U2")))  # two lists at once both fill the note
        noted = await timeline.incidents_with_actions()

    assert all("raise the pool limit — <@U2>" in answer for answer in answers)
    assert noted == [first.id]  # the resolved incident's items come from its export, not read live


async def test_a_list_skips_and_drops_entries_left_by_racing_writes(rt):
    await index.write(rt, [item(1), item(2), item(3, owner="U8")])
    await followups_page(rt, public, 10)  # the one-time build is done
    done, moved = json.dumps(item(1, done=True).__dict__), json.dumps(item(2, owner="U8").__dict__)
    await rt.redis.hset(rt.key("wu", "followups"), mapping={item(1).key: done, item(2).key: moved})
    # what the races leave: an export marked INC-1's item done while the build put it back in the open set; two
    # writers moved INC-2's item to U7 and to U8 at once, and U8's record won while U7's set kept it
    await rt.redis.zadd(rt.key("wu", "followups", "open", "@U7"), {item(2).key: 1002.0})
    await rt.redis.zrem(rt.key("wu", "followups", "open", "@U2"), item(2).key)

    shown, total = await followups_page(rt, public, 10)
    sevens, sevens_total = await followups_page(rt, public, 10, owner="U7")
    twos, twos_total = await followups_page(rt, public, 10, owner="U2")
    again, again_total = await followups_page(rt, public, 10)

    assert [f.incident for f in shown] == ["INC-2", "INC-3"] and total == 2 == again_total
    assert sevens == [] and sevens_total == 0
    assert twos == [] and twos_total == 0  # INC-1's item is done
    assert await rt.redis.zscore(rt.key("wu", "followups", "open"), item(1).key) is None
    assert await rt.redis.zscore(rt.key("wu", "followups", "open", "@U7"), item(2).key) is None
    assert [f.incident for f in again] == ["INC-2", "INC-3"]
