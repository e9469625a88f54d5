"""Each service's previous run, per incident (or per channel outside incidents), so a run can say what changed.

    <namespace>:diag:last:<scope>:<service>        RunRecord of the latest finished run   (TTL HISTORY_TTL_S)
    <namespace>:diag:firstfail:<scope>:<service>   RunRecord of the first run with failures (TTL HISTORY_TTL_S)
    <namespace>:diag:failed:<scope>:<service>      set of every check+target that failed in any run since
                                                   (JSON `[check, target]`; TTL HISTORY_TTL_S)

`<scope>` is the incident id when the run belongs to one, else the channel. The diff of a run is stored with the
run (field `diff` of its state hash, "" when there was nothing to compare with) before the run's record replaces
the previous one, so a finish job that runs twice compares with the same previous run both times.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from bot.runtime import Runtime
from checks.compare import RunDiff, RunRecord, compare, parse_record, record_of
from checks.model import CheckResult
from checks.registry import PreviousSample

HISTORY_TTL_S = 14 * 86400  # longer than any incident is expected to stay open


def scope_of(state: dict[str, str]) -> str:
    return state.get("incident_id") or state["channel"]


def _key(rt: Runtime, kind: str, state: dict[str, str]) -> str:
    return rt.key("diag", kind, scope_of(state), state["service"])


async def previous_run(rt: Runtime, state: dict[str, str]) -> RunRecord | None:
    return parse_record(await rt.redis.get(_key(rt, "last", state)))


async def previous_sample(rt: Runtime, state: dict[str, str], check: str, target: str) -> PreviousSample | None:
    """What `check` reported on `target` in the service's previous run in this scope (its numbers), and when."""
    record = await previous_run(rt, state)
    outcome = next((o for o in record.outcomes if o.key == (check, target)), None) if record else None
    if record is None or outcome is None:
        return None
    return PreviousSample(at=datetime.fromtimestamp(record.at, UTC), numbers=outcome.numbers)


async def first_failing_run(rt: Runtime, state: dict[str, str]) -> RunRecord | None:
    return parse_record(await rt.redis.get(_key(rt, "firstfail", state)))


async def failed_since_first(rt: Runtime, state: dict[str, str]) -> set[tuple[str, str]]:
    """Every check+target that failed in any run of the service in this scope since its first failing run: what
    recovery must see pass, not only what the first failing run happened to catch."""
    members = await rt.redis.smembers(_key(rt, "failed", state))
    return {tuple(json.loads(m)) for m in members}  # type: ignore[misc]


async def diff_and_remember(rt: Runtime, run_id: str, state: dict[str, str], results: list[CheckResult],
                            run_key: str) -> RunDiff | None:
    """The run's diff against the previous run of its service in its scope (None for the first run), stored in
    the run's state; then this run becomes the previous one."""
    stored = await rt.redis.hget(run_key, "diff")
    current = record_of(run_id, state["service"], float(state.get("finished_at") or time.time()), results)
    if stored is None:
        previous = await previous_run(rt, state)
        diff = compare(previous, current) if previous and previous.run_id != run_id else None
        # Two finish jobs can run at once (the last two checks each queue one). The first diff stored is the run's:
        # the other may have read "the previous run" after the first made this run the previous one.
        if not await rt.redis.hsetnx(run_key, "diff", diff.to_json() if diff else ""):
            stored = await rt.redis.hget(run_key, "diff")
    if stored is not None:
        diff = RunDiff.from_json(stored) if stored else None
    # Not a transaction: the two keys hash to different Redis Cluster slots, and a finish job that runs again
    # writes both again, so a crash in between is repaired.
    async with rt.redis.pipeline(transaction=False) as pipe:
        pipe.set(_key(rt, "last", state), current.to_json(), ex=HISTORY_TTL_S)
        if current.failing:
            pipe.set(_key(rt, "firstfail", state), current.to_json(), ex=HISTORY_TTL_S, nx=True)
            pipe.sadd(_key(rt, "failed", state), *(json.dumps(o.key) for o in current.failing))
            pipe.expire(_key(rt, "failed", state), HISTORY_TTL_S)
        await pipe.execute()
    return diff


def stored_diff(state: dict[str, str]) -> RunDiff | None:
    raw = state.get("diff")
    return RunDiff.from_json(raw) if raw else None
