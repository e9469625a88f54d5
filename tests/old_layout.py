"""What a deployment of the old key layout (commit 7f64d10, before hash tags) leaves in Redis, as data.

tests/data/old_layout_7f64d10.json holds the Redis commands that commit's queue, incident store and timeline sent
to seed a small deployment (a dead letter, a job a dead worker held, a queued job, a timer due 2 s later, an incident
with a step, a page record and a timeline). `replay` sends them again, so the upgrade tests need no git history
(a shallow clone has none) and no old code. In the data:

    $NS          the namespace, given at replay
    $ID<n>       the n-th stream entry id a reply returned at recording; bound again from the replay's replies
    $T<offset>   an epoch time, as seconds relative to the start of the recording; the replay's clock is added
    $SCRIPT:<n>  EVALSHA of a script is sent as EVAL of its source, kept under "scripts"

Due times of timers come from the scripts' own TIME and the delay they were given, so they stay relative too.

Recording again (needs the commit in git history and a redis-server): `python -m tests.old_layout`.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

DATA = Path(__file__).parent / "data" / "old_layout_7f64d10.json"
OLD_LAYOUT_COMMIT = "7f64d10"  # the last commit that wrote untagged keys
NAMESPACE = "$NS"
TIMER_DELAY_S = 2.0  # the seeded timer's delay

_ID = re.compile(r"^\d+-\d+$")
_ID_REF = re.compile(r"\$ID(\d+)")
_TIME_REF = re.compile(r"\$T([+-]\d+\.\d+)")
_SCRIPT_REF = "$SCRIPT:"


async def replay(redis: aioredis.Redis, namespace: str) -> float:
    """Send the recorded commands under `namespace`, on one connection; returns when the timer's enqueue was sent
    (epoch seconds, this host's clock): it is due TIMER_DELAY_S after that."""
    data = json.loads(DATA.read_text())
    start, ids, timer_sent = time.time(), [], 0.0
    async with redis.client() as conn:
        for n, args in enumerate(data["commands"]):
            if n == data["timer_command"]:
                timer_sent = time.time()
            reply = await conn.execute_command(*_bind(args, data["scripts"], namespace, start, ids))
            ids.extend(_stream_ids(reply))
    return timer_sent


def _bind(args: list[str], scripts: dict[str, str], namespace: str, start: float, ids: list[str]) -> list[str]:
    bound = []
    for arg in args:
        if arg.startswith(_SCRIPT_REF):
            bound.append(scripts[arg.removeprefix(_SCRIPT_REF)])
            continue
        arg = arg.replace(NAMESPACE, namespace)
        arg = _ID_REF.sub(lambda m: ids[int(m[1])], arg)
        bound.append(_TIME_REF.sub(lambda m: repr(start + float(m[1])), arg))
    return bound


def _stream_ids(reply: Any) -> list[str]:
    """Stream entry ids in a reply, in the order they appear (the same walk at recording and at replay)."""
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    if isinstance(reply, str):
        return [reply] if _ID.match(reply) else []
    if isinstance(reply, dict):
        reply = [x for pair in reply.items() for x in pair]
    if isinstance(reply, (list, tuple)):
        return [found for item in reply for found in _stream_ids(item)]
    return []


# -- recording (run by hand; imports the old code from git) ------------------------------------------------------

_SKIPPED = {"HELLO", "CLIENT", "AUTH", "SELECT", "PING", "SCRIPT"}  # connection set-up and script loading
_EPOCH = re.compile(r"(?<![\d.])(1[5-9]\d{8}(?:\.\d+)?)(?![\d.-])")  # epoch seconds, 2017..2033


def _record() -> None:  # pragma: no cover - a tool, run once per old layout
    import asyncio
    import tempfile

    from bot.app.redis_server import RedisServer

    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp), aof=False, die_with_parent=True) as server:
        DATA.parent.mkdir(exist_ok=True)
        DATA.write_text(json.dumps(asyncio.run(_record_against(server.url, Path(tmp))), indent=1) + "\n")
    print(f"wrote {DATA}")


async def _record_against(url: str, tmp: Path) -> dict[str, Any]:
    from redis.asyncio.connection import Connection

    sent: list[list[Any]] = []  # [args, reply] in the order the commands were sent

    class Recording(Connection):
        def pack_command(self, *args: Any) -> list[bytes]:
            entry = [[a.decode() if isinstance(a, bytes) else str(a) for a in args], None]
            sent.append(entry)
            self.__dict__.setdefault("waiting", []).append(entry)
            return super().pack_command(*args)

        async def read_response(self, *args: Any, **kwargs: Any) -> Any:
            entry = self.__dict__["waiting"].pop(0)
            try:
                entry[1] = await super().read_response(*args, **kwargs)
            except Exception as exc:
                entry[1] = exc
                raise
            return entry[1]

    redis = aioredis.Redis.from_url(url, connection_class=Recording)
    try:
        start = time.time()
        scripts = await _seed_with_old_code(redis, tmp)
    finally:
        await redis.aclose()
    commands = _rewrite(sent, {s.sha: name for name, s in scripts.items()}, start)
    [timer] = [n for n, args in enumerate(commands) if args[:2] == ["EVAL", _SCRIPT_REF + "enqueue"]
               and "timer" in args]
    used = {a.removeprefix(_SCRIPT_REF) for args in commands for a in args if a.startswith(_SCRIPT_REF)}
    return {"recorded_from": OLD_LAYOUT_COMMIT, "timer_command": timer,
            "scripts": {name: s.script for name, s in scripts.items() if name in used}, "commands": commands}


def _rewrite(sent: list[list[Any]], shas: dict[str, str], start: float) -> list[list[str]]:
    commands, ids = [], {}
    for args, reply in sent:
        name = args[0].split()[0].upper()  # redis-py sends "SCRIPT LOAD" as one argument
        if name in _SKIPPED or isinstance(reply, NoScriptError):  # run again after the script was loaded
            continue
        if name == "EVALSHA":
            args = ["EVAL", _SCRIPT_REF + shas[args[1]], *args[2:]]
        commands.append([_placeholders(a, ids, start) for a in args])
        for found in _stream_ids(reply):
            ids.setdefault(found, f"$ID{len(ids)}")
    return commands


def _placeholders(arg: str, ids: dict[str, str], start: float) -> str:
    if arg.startswith(_SCRIPT_REF):
        return arg
    if arg in ids:
        return ids[arg]
    arg = arg.replace(_RECORDED_NS, NAMESPACE)
    return _EPOCH.sub(lambda m: f"$T{float(m[1]) - start:+.6f}", arg)


_RECORDED_NS = "oldlayoutns"


async def _seed_with_old_code(redis: aioredis.Redis, tmp: Path) -> dict[str, Any]:
    """The old code's calls that seed the deployment; returns its queue's scripts."""
    from bot.incidents.model import Incident, PageRecord

    ns = _RECORDED_NS
    stream = _old_module("bot/queue/stream.py", tmp)
    store = _old_module("bot/incidents/store.py", tmp).IncidentStore(redis, ns)
    timeline = _old_module("bot/incidents/timeline.py", tmp).Timeline(redis, ns)
    queue = stream.Queue(redis, ns, max_deliveries=3)
    await queue.ensure_group()
    await queue.enqueue("work", {"n": "doomed"}, job_id="doomed")
    [(entry, _)] = await queue.read("old-worker", 1, 100)
    assert await queue.fail(entry, "RuntimeError: boom", delay_s=0, permanent=True) == "dead"
    await queue.enqueue("work", {"n": "inflight"}, job_id="inflight")
    assert len(await queue.read("old-worker", 1, 100)) == 1  # held by a worker that then died, never acked
    await queue.enqueue("work", {"n": "queued"}, job_id="queued")
    await queue.enqueue("work", {"n": "timer"}, job_id="timer", delay_s=TIMER_DELAY_S)

    number = await store.next_number()
    incident = Incident(id=f"INC-{number}", number=number, title="checkout 500s", reporter="U1",
                        origin_channel="C1", channel="C9")
    assert await store.create(incident)
    await store.mark_step(incident.id, "channel", "C9")
    assert await store.record_page(incident.id, "pd|pagerduty",
                                   PageRecord(dedup_key="pd", delivery="pagerduty", severity="P2", level=1, ok=True))
    await timeline.record(incident.id, "declared", actor="U1", text="declared P2")
    await timeline.record(incident.id, "message", entry_id="msg:C9:1.0", actor="U2", text="rolling back")
    return queue._scripts


def _old_module(path: str, tmp: Path) -> Any:
    """`path` as it was at OLD_LAYOUT_COMMIT, imported under a name of its own (its imports are today's modules)."""
    import importlib.util
    import subprocess
    import sys

    source = subprocess.run(["git", "show", f"{OLD_LAYOUT_COMMIT}:{path}"], cwd=Path(__file__).parents[1],
                            capture_output=True, text=True, check=True, timeout=10).stdout
    name = "old_" + path.replace("/", "_").removesuffix(".py")
    file = tmp / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    _record()
