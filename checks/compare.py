"""What changed between two runs of the same service's checks: fixed, new, still failing, and evidence that moved.

A run is kept as a compact `RunRecord` (one `Outcome` per check and target: its status, summary and top-level
numbers), small enough to store per service for the length of an incident. `compare(previous, current)` returns a
`RunDiff` — data only; bot/diagnosis/render presents it ("since the last run (4 min ago): 1 fixed, 0 new, 0 still
failing").

"Failing" means `fail` or `error` (the check did not pass, or could not look); a warning is not a failure, but a
check that moves into or out of `warn` shows up as changed evidence.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from checks.model import CheckResult, Status
from checks.schema import dump

FAILING = frozenset({Status.fail.value, Status.error.value})
SUMMARY_MAX = 300  # characters of a summary kept per outcome
NUMBERS_MAX = 12  # top-level numeric evidence values kept per outcome
LATENCY_RATIO = 2.0  # a latency is notably different at twice (or half) the previous value ...
LATENCY_MIN_MS = 100.0  # ... and at least this far from it
COUNT_RATIO = 1.5  # a count is notably different at 1.5× (or 2/3 of) the previous value, and at least 1 apart


class Outcome(msgspec.Struct, frozen=True):
    check: str
    target: str
    status: str
    summary: str
    numbers: dict[str, float] = msgspec.field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return self.check, self.target

    @property
    def failing(self) -> bool:
        return self.status in FAILING


class RunRecord(msgspec.Struct, frozen=True):
    run_id: str
    service: str
    at: float  # when the run finished (epoch seconds)
    outcomes: tuple[Outcome, ...]

    @property
    def failing(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.failing]

    def to_json(self) -> str:
        # json.dumps of plain dicts, as before msgspec: stored records keep their spelling (floats, NaN)
        return json.dumps(dump(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> RunRecord:
        data = json.loads(raw)
        return cls(data["run_id"], data["service"], float(data["at"]),
                   tuple(Outcome(**o) for o in data["outcomes"]))


def record_of(run_id: str, service: str, at: float, results: list[CheckResult]) -> RunRecord:
    return RunRecord(run_id, service, at, tuple(_outcome(r) for r in results))


def _outcome(result: CheckResult) -> Outcome:
    numbers = {k: float(v) for k, v in result.evidence.items()
               if isinstance(v, int | float) and not isinstance(v, bool)}
    return Outcome(result.check, result.target, result.status.value, result.summary[:SUMMARY_MAX],
                   dict(list(numbers.items())[:NUMBERS_MAX]))


class Change(msgspec.Struct, frozen=True):
    """One check and target, as it was and as it is; `notes` say how its evidence moved."""

    check: str
    target: str
    before: str | None  # its status in the previous run (None: it did not run then)
    after: str | None
    summary: str  # what the current run says (the previous one's, for a check that no longer runs)
    notes: tuple[str, ...] = ()


class RunDiff(msgspec.Struct, frozen=True):
    previous_run: str
    previous_at: float
    at: float
    fixed: tuple[Change, ...]
    new: tuple[Change, ...]
    still_failing: tuple[Change, ...]
    changed: tuple[Change, ...]  # not fixed, new or failing, but its evidence moved notably

    @property
    def elapsed_s(self) -> float:
        return max(self.at - self.previous_at, 0.0)

    @property
    def regressed(self) -> bool:
        return bool(self.new)

    def to_json(self) -> str:
        return json.dumps(dump(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> RunDiff:
        data = json.loads(raw)
        lists = {k: tuple(Change(**{**c, "notes": tuple(c["notes"])}) for c in data[k])
                 for k in ("fixed", "new", "still_failing", "changed")}
        return cls(data["previous_run"], float(data["previous_at"]), float(data["at"]), **lists)


def compare(previous: RunRecord, current: RunRecord) -> RunDiff:
    before = {o.key: o for o in previous.outcomes}
    after = {o.key: o for o in current.outcomes}
    fixed, new, still, changed = [], [], [], []
    for key, now in after.items():
        was = before.get(key)
        change = _change(was, now)
        if now.failing and (was is None or not was.failing):
            new.append(change)
        elif now.failing:
            still.append(change)
        elif was is not None and was.failing:
            fixed.append(change)
        elif change.notes:
            changed.append(change)
    for key, was in before.items():  # a check that failed and no longer runs is not "fixed": say so
        if key not in after and was.failing:
            still.append(Change(was.check, was.target, was.status, None, was.summary, ("not run this time",)))
    return RunDiff(previous.run_id, previous.at, current.at, tuple(fixed), tuple(new), tuple(still),
                   tuple(changed))


def _change(was: Outcome | None, now: Outcome) -> Change:
    notes = _notes(was, now) if was is not None else ()
    return Change(now.check, now.target, was.status if was else None, now.status, now.summary, notes)


def _notes(was: Outcome, now: Outcome) -> tuple[str, ...]:
    notes = []
    if was.status != now.status and was.failing == now.failing:  # fixed and new say so already
        notes.append(f"status {was.status} → {now.status}")
    elif now.failing and was.summary != now.summary:
        notes.append(f"was: {was.summary}")  # the same check failing differently: a new error signature
    for name, value in now.numbers.items():
        old = was.numbers.get(name)
        if old is not None and _notable(name, old, value):
            notes.append(f"{name} {_number(old)} → {_number(value)}")
    return tuple(notes)


def _notable(name: str, old: float, new: float) -> bool:
    low, high = sorted((abs(old), abs(new)))
    if name.endswith("_ms"):
        return high - low >= LATENCY_MIN_MS and (low == 0 or high / low >= LATENCY_RATIO)
    if name.endswith("_s") or old == new:
        return False  # a configured timeout, not a measurement
    return high - low >= 1 and (low == 0 or high / low >= COUNT_RATIO)


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.1f}"


def parse_record(raw: Any) -> RunRecord | None:
    """A stored record, or None when there is none (or it was written by an incompatible version)."""
    if raw is None:
        return None
    try:
        return RunRecord.from_json(raw)
    except (ValueError, KeyError, TypeError):
        return None
