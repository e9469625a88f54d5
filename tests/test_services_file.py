"""The services file is read off the request path: an edit is parsed in a thread and swapped in whole; a bad edit
keeps the last good file, is logged once, and `/diagnose list` says so; fixing the file clears the note."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest
import yaml

from bot import runtime
from bot.runtime import ServicesWatch
from bot.settings import ConfigError
from tests.app_harness import running_bot


def write(path, services: dict) -> None:  # type: ignore[no-untyped-def]
    path.write_text(yaml.safe_dump({"services": services}))
    stamp = path.stat().st_mtime_ns + 1_000_000  # a new version even within the file system's timestamp tick
    os.utime(path, ns=(stamp, stamp))


async def settled(watch: ServicesWatch) -> None:
    for _ in range(200):
        watch.current()
        if watch._reloading is None and watch._version == watch._stat():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the services file was not re-read")


async def test_an_edit_is_swapped_in_and_a_bad_one_keeps_the_last_good_file(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(runtime, "SERVICES_CHECK_S", 0.0)
    path = tmp_path / "services.yml"
    write(path, {"api": {}})
    watch = ServicesWatch(path)
    assert list(watch.current().services) == ["api"]

    write(path, {"api": {}, "web": {}})
    assert list(watch.current().services) == ["api"]  # the request that noticed the edit does not wait for it
    await settled(watch)
    assert sorted(watch.current().services) == ["api", "web"] and watch.problem is None

    path.write_text("services: [unclosed\n")
    with caplog.at_level(logging.ERROR, logger="bot.runtime"):
        await settled(watch)
        for _ in range(5):
            assert sorted(watch.current().services) == ["api", "web"]
    assert watch.problem and "not valid YAML" in watch.problem and "still using" in watch.problem
    assert len([r for r in caplog.records if "last edit was not used" in r.getMessage()]) == 1

    write(path, {"db": {}})
    await settled(watch)
    assert list(watch.current().services) == ["db"] and watch.problem is None


def test_a_broken_file_still_stops_the_start(tmp_path) -> None:
    path = tmp_path / "services.yml"
    path.write_text("services: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        ServicesWatch(path).current()


async def test_diagnose_list_says_a_bad_edit_was_not_used(local_slack, redis_url, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(runtime, "SERVICES_CHECK_S", 0.0)
    async with running_bot(local_slack, redis_url, tmp_path, services={"api": {}}) as bot:
        assert "`api`" in (await bot.command("/diagnose", "list")).json()["text"]
        bot.rt.services_path.write_text("services:\n  api: {http: 7}\n")
        await settled(bot.rt._services)  # type: ignore[arg-type]
        answer = (await bot.command("/diagnose", "list")).json()
        assert "`api`" in answer["text"] and "last edit was not used" in answer["text"]
        assert answer["blocks"][0]["type"] == "context" and "still using" in answer["blocks"][0]["elements"][0]["text"]


@pytest.mark.parametrize("collector_on", [True, False])
def test_the_parse_pauses_the_collector_and_leaves_it_as_it_found_it(tmp_path, monkeypatch, collector_on) -> None:
    """Parsing pauses the cyclic collector (its new objects are acyclic); it must come back on after a reload, even a
    bad one, and stay off when the start held it off."""
    import gc

    from bot import settings

    seen = []
    real = settings.parse_services
    monkeypatch.setattr(settings, "parse_services", lambda *a, **k: (seen.append(gc.isenabled()), real(*a, **k))[1])
    good, bad = tmp_path / "good.yml", tmp_path / "bad.yml"
    write(good, {"api": {}})
    bad.write_text("services: [unclosed\n")
    (gc.enable if collector_on else gc.disable)()
    try:
        assert list(settings.load_services(good).services) == ["api"]
        with pytest.raises(ConfigError):
            settings.load_services(bad)
        assert seen == [False] and gc.isenabled() is collector_on
    finally:
        gc.enable()


def test_overlapping_parses_turn_the_collector_back_on_when_the_last_one_ends() -> None:
    import gc

    from bot.settings import _collection_paused

    gc.enable()
    try:
        first, second = _collection_paused(), _collection_paused()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert not gc.isenabled()  # the other parse still runs
        second.__exit__(None, None, None)
        assert gc.isenabled()
    finally:
        gc.enable()
