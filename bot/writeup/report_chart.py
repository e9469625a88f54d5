"""The report's picture: incidents per week over the window, stacked by severity, as a small PNG.

Drawn like the diagnosis charts (bot/diagnosis/render/chart.py: the same size, plotting area, fonts, frame and
y-axis steps) with Pillow imported only when a chart is drawn, so the ack path never pays for it. CPU work:
callers run it in a thread.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bot.diagnosis.render.chart import COLOURS, PLOT, canvas_png, fonts, nice_ceiling
from bot.writeup.report import SEVERITIES, WEEK_S, Report, period

SEVERITY_COLOURS = {"P0": (214, 39, 40), "P1": (255, 127, 14), "P2": (188, 189, 34), "P3": (31, 119, 180)}
BAR_SHARE = 0.7  # of each week's slot; the rest is the gap between bars
MAX_DATE_LABELS = 13  # under the bars; more weeks than this label every n-th


def report_filename(report: Report) -> str:
    service = "".join(c if c.isalnum() or c in "-_" else "-" for c in report.service or "")[:40]
    return f"incident-report-{period(report.since_s)}{'-' + service if service else ''}.png"


def chart_title(report: Report) -> str:
    return f"Incidents per week by severity, last {period(report.since_s)}" + (
        f", {report.service}" if report.service else "")


def alt_text(report: Report) -> str:
    """What a screen reader says instead: the totals per severity and the busiest week."""
    busiest = max((sum(w.values()) for w in report.by_week), default=0)
    counts = ", ".join(f"{s} {report.by_severity.get(s, 0)}" for s in SEVERITIES)
    return (f"{chart_title(report)}: {report.incidents} incidents ({counts}) in {len(report.by_week)} weeks, "
            f"at most {busiest} in one week")[:1000]


def report_png(report: Report) -> bytes:
    """The chart as PNG bytes; an empty window still gets its axes and a zero line."""
    return canvas_png(lambda draw: _draw(draw, report))


def _draw(draw: Any, report: Report) -> None:
    faces = fonts()
    top = nice_ceiling(max((sum(w.values()) for w in report.by_week), default=0)) or 1
    draw.rectangle(PLOT, outline=COLOURS["frame"])
    slot = (PLOT[2] - PLOT[0]) / max(len(report.by_week), 1)
    for index, week in enumerate(report.by_week):
        _stack(draw, PLOT[0] + index * slot + slot * (1 - BAR_SHARE) / 2, slot * BAR_SHARE, week, top)
    _labels(draw, report, top, slot, faces)


def _y(value: float, top: float) -> float:
    return PLOT[3] - value / top * (PLOT[3] - PLOT[1])


def _stack(draw: Any, left: float, width: float, week: dict[str, int], top: float) -> None:
    """One week's bar: P0 at the bottom, each severity's count stacked above the last."""
    below = 0
    for severity in SEVERITIES:
        count = week.get(severity, 0)
        if count:
            draw.rectangle((left, _y(below + count, top), left + width, _y(below, top) - 1),
                           fill=SEVERITY_COLOURS[severity])
            below += count


def _labels(draw: Any, report: Report, top: float, slot: float, faces: dict[str, Any]) -> None:
    label, ink = faces["label"], COLOURS["text"]
    draw.text((PLOT[0], 6), chart_title(report)[:90], font=faces["title"], fill=ink)
    for value in (0, top):
        text = f"{value:g}"
        draw.text((PLOT[0] - 4 - draw.textlength(text, font=label), _y(value, top) - label.size // 2), text,
                  font=label, fill=ink)
    every = -(-len(report.by_week) // MAX_DATE_LABELS)
    for index in range(0, len(report.by_week), every):
        text = datetime.fromtimestamp(report.start + index * WEEK_S, UTC).strftime("%d %b")
        centre = PLOT[0] + (index + 0.5) * slot
        draw.text((centre - draw.textlength(text, font=label) / 2, PLOT[3] + 5), text, font=label, fill=ink)
    _legend(draw, label)


def _legend(draw: Any, font: Any) -> None:
    """The severities' colours, right-aligned above the plot."""
    x = PLOT[2]
    for severity in reversed(SEVERITIES):
        x -= draw.textlength(severity, font=font) + 4
        draw.text((x + 2, 8), severity, font=font, fill=COLOURS["text"])
        x -= 10
        draw.rectangle((x, 10, x + 8, 18), fill=SEVERITY_COLOURS[severity])
        x -= 6
