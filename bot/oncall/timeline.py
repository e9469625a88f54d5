"""Who is on call when: pure functions of a schedule, an instant and the overrides, computed with zoneinfo.

Every rule is turned into instants first (handoffs, restriction window edges, override edges), each a local
wall-clock time resolved in the schedule's zone (`fold=0`: a time skipped by a spring-forward lands after the
gap, an autumn time that happens twice means its first occurrence). Between two consecutive instants nothing
changes, so the answer at any instant is the answer at the boundary before it, and the shifts tile the range
with no gap and no overlap by construction. A rotation's handoffs are wall-clock times in its zone (the
schedule's unless it names its own): a weekly 09:00 handoff stays at 09:00 across a DST change (that shift is an
hour shorter or longer), while a rotation in UTC hands over at the same UTC time all year.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Annotated

import msgspec

from bot.oncall.schedule import Layer, Rotation, Schedule, Window
from checks.schema import Meta, Record

UTC = dt.timezone.utc
LOOK_AROUND = dt.timedelta(days=8)  # besides the longest shift: how far on_call looks for its shift's edges


class Override(Record):
    """`user` is on call for `schedule` during [start, end), whoever the rotation says; the latest made wins."""

    id: str
    schedule: str
    user: str
    start: float  # epoch seconds
    end: float
    made_by: str
    made_at: float
    kind: str = "override"  # override | swap
    replaces: str | None = None  # for a swap: whose shift it covers
    note: Annotated[str, Meta(max_length=200)] = ""

    def __post_init__(self) -> None:
        # Whole seconds convert to datetimes and back exactly, so an override's edge is a boundary it agrees with.
        self.start, self.end = float(round(self.start)), float(round(self.end))

    def covers(self, instant: float) -> bool:
        return self.start <= instant < self.end


class Shift(msgspec.Struct, frozen=True):
    schedule: str
    user: str | None  # None: no layer applies (every layer restricted) — nobody is on call
    start: dt.datetime  # aware, UTC
    end: dt.datetime
    layer: str  # the layer's name, or "override"
    override: Override | None = None


def _aware(instant: dt.datetime) -> dt.datetime:
    if instant.tzinfo is None:
        raise ValueError("instants must be timezone-aware")
    return instant.astimezone(UTC)


def _local_to_utc(schedule: Schedule, local: dt.datetime) -> dt.datetime:
    return local.replace(tzinfo=schedule.tz, fold=0).astimezone(UTC)


# ------------------------------------------------------------------------------------------------ rotations

def handoff_at(schedule: Schedule, rotation: Rotation, k: int) -> dt.datetime:
    """Handoff number k (0 = the first at or after `start`; negative ones came before)."""
    local = rotation.first_handoff() + k * rotation.every
    return local.replace(tzinfo=rotation.zone(schedule.tz), fold=0).astimezone(UTC)


def shift_index(schedule: Schedule, rotation: Rotation, instant: dt.datetime) -> int:
    """The k with handoff(k) ≤ instant < handoff(k+1), skipping zero-length shifts (a handoff in a DST gap)."""
    first = handoff_at(schedule, rotation, 0)
    k = int((instant - first) / rotation.every)
    while handoff_at(schedule, rotation, k) > instant:
        k -= 1
    while handoff_at(schedule, rotation, k + 1) <= instant:
        k += 1
    return k


def rotation_person(schedule: Schedule, rotation: Rotation, instant: dt.datetime) -> str:
    return rotation.people[shift_index(schedule, rotation, instant) % len(rotation.people)]


def _handoffs_between(schedule: Schedule, rotation: Rotation, start: dt.datetime,
                      end: dt.datetime) -> list[dt.datetime]:
    k = shift_index(schedule, rotation, start) + 1
    out = []
    while (at := handoff_at(schedule, rotation, k)) < end:
        out.append(at)
        k += 1
    return out


# ------------------------------------------------------------------------------------------------ restrictions

def _windows(schedule: Schedule, window: Window, start: dt.datetime,
             end: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
    """The instants a restriction window is open, for every local day that can touch [start, end)."""
    tz = schedule.tz
    day, last = start.astimezone(tz).date() - dt.timedelta(days=1), end.astimezone(tz).date()
    spans = []
    while day <= last:
        if day.weekday() in window.days:
            end_day = day if window.end > window.start else day + dt.timedelta(days=1)
            opens = _local_to_utc(schedule, dt.datetime.combine(day, window.start))
            closes = _local_to_utc(schedule, dt.datetime.combine(end_day, window.end))
            if opens < closes:
                spans.append((opens, closes))
        day += dt.timedelta(days=1)
    return spans


class _LayerPlan(msgspec.Struct, frozen=True):
    layer: Layer
    spans: tuple[tuple[dt.datetime, dt.datetime], ...] | None  # None: always applies

    def applies(self, instant: dt.datetime) -> bool:
        return self.spans is None or any(s <= instant < e for s, e in self.spans)


def _plan(schedule: Schedule, start: dt.datetime, end: dt.datetime) -> list[_LayerPlan]:
    plans = []
    for layer in schedule.all_layers():
        spans = None
        if layer.restrictions:
            spans = tuple(sorted(span for w in layer.restrictions for span in _windows(schedule, w, start, end)))
        plans.append(_LayerPlan(layer, spans))
    return plans


# ------------------------------------------------------------------------------------------------ answers

def layer_shifts(schedule: Schedule, layer: Layer, start: dt.datetime, end: dt.datetime) -> list[Shift]:
    """One layer on its own (restrictions ignored): its rotation's shifts cut to [start, end)."""
    start, end = _aware(start), _aware(end)
    edges = [start, *_handoffs_between(schedule, layer.rotation, start, end), end]
    return [Shift(schedule.name, rotation_person(schedule, layer.rotation, a), a, b, layer.name)
            for a, b in zip(edges, edges[1:]) if a < b]


def shifts(schedule: Schedule, start: dt.datetime, end: dt.datetime,
           overrides: Sequence[Override] = ()) -> list[Shift]:
    """Who is on call from `start` to `end`: consecutive shifts that tile the range exactly, with layers and
    overrides applied; neighbours with the same person (and the same layer/override) are merged."""
    start, end = _aware(start), _aware(end)
    if end <= start:
        return []
    plans = _plan(schedule, start, end)
    mine = [o for o in overrides if o.schedule == schedule.name]
    edges = _edges(schedule, plans, mine, start, end)
    out: list[Shift] = []
    for a, b in zip(edges, edges[1:]):
        shift = _at(schedule, plans, mine, a, b)
        if out and (out[-1].user, out[-1].layer, out[-1].override) == (shift.user, shift.layer, shift.override):
            out[-1] = Shift(schedule.name, shift.user, out[-1].start, b, shift.layer, shift.override)
        else:
            out.append(shift)
    return out


def _edges(schedule: Schedule, plans: list[_LayerPlan], overrides: Iterable[Override], start: dt.datetime,
           end: dt.datetime) -> list[dt.datetime]:
    points = {start, end}
    for plan in plans:
        points.update(_handoffs_between(schedule, plan.layer.rotation, start, end))
        for s, e in plan.spans or ():
            points.update((s, e))
    for o in overrides:
        points.update((dt.datetime.fromtimestamp(o.start, UTC), dt.datetime.fromtimestamp(o.end, UTC)))
    return sorted(p for p in points if start <= p <= end)


def _at(schedule: Schedule, plans: list[_LayerPlan], overrides: list[Override], a: dt.datetime,
        b: dt.datetime) -> Shift:
    covering = [o for o in overrides if o.covers(a.timestamp())]
    if covering:
        latest = max(covering, key=lambda o: o.made_at)
        return Shift(schedule.name, latest.user, a, b, "override", latest)
    for plan in reversed(plans):  # later layers win where they apply
        if plan.applies(a):
            return Shift(schedule.name, rotation_person(schedule, plan.layer.rotation, a), a, b, plan.layer.name)
    return Shift(schedule.name, None, a, b, "")


def on_call(schedule: Schedule, instant: dt.datetime, overrides: Sequence[Override] = ()) -> Shift:
    """The shift in effect at `instant`, with its real start and end (the next handoff is `end`)."""
    instant = _aware(instant)
    around = shifts(schedule, *_around(schedule, instant, overrides), overrides)
    starts = [s.start for s in around]
    return around[bisect.bisect_right(starts, instant) - 1]


def _around(schedule: Schedule, instant: dt.datetime,
            overrides: Sequence[Override]) -> tuple[dt.datetime, dt.datetime]:
    """A window that holds the whole shift at `instant`: the longest rotation shift either side, widened to an
    override in force then (up to 31 days), so an override's shift is not cut at the window's edge."""
    reach = max(layer.rotation.every for layer in schedule.all_layers()) + LOOK_AROUND
    start, end = instant - reach, instant + reach
    for o in overrides:
        if o.covers(instant.timestamp()):
            start = min(start, dt.datetime.fromtimestamp(o.start, UTC))
            end = max(end, dt.datetime.fromtimestamp(o.end, UTC))
    return start, end
