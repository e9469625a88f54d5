"""The postmortem's picture: the incident's key metric over the window, with declared / acknowledged /
escalated / mitigated / resolved marked — drawn by the diagnosis charts' renderer (Pillow), not a second one.

The key metric is the first measured of KEY_METRICS (errors before traffic), else the first measured figure; with
no measured series there is no chart (the Impact section says why).
"""

from __future__ import annotations

from datetime import UTC, datetime

from checks.model import Marker, Series

KEY_METRICS = ("5xx from the load balancer", "5xx from the targets", "API 5xx", "Lambda errors",
               "messages in the dead-letter queue (deepest)", "Lambda throttles")
MAX_ESCALATION_MARKERS = 3


def timeline_series(facts: object) -> Series | None:
    impact = getattr(facts, "impact", None)
    measured = [f for f in (impact.measured if impact else []) if f.points]
    if not measured:
        return None
    key = next((f for label in KEY_METRICS for f in measured if f.label == label), measured[0])
    return Series(metric=f"{key.label} ({key.resource})", unit="",
                  points=[(_at(t), v) for t, v in key.points], markers=_milestones(facts))


def _milestones(facts: object) -> list[Marker]:
    found = [(m.name.split(" (")[0], m.at) for m in getattr(facts, "milestones", []) if m.at]
    found += [("Escalated", e.at) for e in getattr(facts, "escalations", [])[:MAX_ESCALATION_MARKERS]]
    return [Marker(at=_at(at), label=label, kind="milestone") for label, at in sorted(found, key=lambda p: p[1])]


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def timeline_png(facts: object) -> bytes | None:
    """PNG bytes, or None without a series. CPU work: callers run it in a thread."""
    from bot.diagnosis.render.chart import render_png

    series = timeline_series(facts)
    return render_png(series) if series is not None else None
