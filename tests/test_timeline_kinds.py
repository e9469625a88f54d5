"""Timeline entry kinds are one list: the catch-up and the postmortem each say what they do with every kind, and
the timeline refuses a kind nobody knows (a typo would otherwise record entries that no summary shows)."""

from __future__ import annotations

import uuid

import pytest

from bot.incidents.store import incident_key
from bot.incidents.timeline import EntryKind, Timeline
from bot.writeup.postmortem.facts import POSTMORTEM, InPostmortem
from bot.writeup.summaries import CATCH_UP


def ns() -> str:
    return f"tlk{uuid.uuid4().hex[:8]}"


def test_the_catch_up_classifies_every_kind_and_nothing_else() -> None:
    assert set(CATCH_UP) == set(EntryKind)


def test_the_postmortem_classifies_every_kind_and_nothing_else() -> None:
    assert set(POSTMORTEM) == set(EntryKind)
    assert POSTMORTEM[EntryKind.MESSAGE] is InPostmortem.TALK
    assert POSTMORTEM[EntryKind.DIAGNOSIS_FINDINGS] is InPostmortem.FINDINGS


def test_what_people_said_is_digested_and_the_bots_own_summaries_are_no_news() -> None:
    assert CATCH_UP[EntryKind.NOTE].quoted and CATCH_UP[EntryKind.PAGE_SENT].listed
    assert not CATCH_UP[EntryKind.SUMMARY].news and not CATCH_UP[EntryKind.MESSAGE].listed


async def test_recording_an_unknown_kind_raises_and_stores_nothing(redis) -> None:
    timeline = Timeline(redis, ns())

    with pytest.raises(ValueError, match="unknown timeline entry kind 'pagesent'; expected one of message, reply"):
        await timeline.record("INC-1", "pagesent", entry_id="page:1", actor="bot")

    assert await timeline.count("INC-1") == 0


async def test_kinds_are_stored_as_their_old_strings(redis) -> None:
    timeline = Timeline(redis, ns())
    await timeline.record("INC-1", EntryKind.PAGE_SENT, entry_id="page:1", at=10.0, actor="bot")
    await timeline.record("INC-1", "note", entry_id="note:1", at=20.0, actor="U1", text="a plain string still works")

    raw = await redis.hget(incident_key(timeline.namespace, "INC-1", "tl"), "page:1")
    assert '"kind":"page_sent"' in raw
    assert [e.kind for e in await timeline.entries("INC-1")] == ["page_sent", EntryKind.NOTE]
