"""A small PNG of the series a check judged: the metric over the window, the threshold, and the markers.

Drawn with Pillow's ImageDraw, not a plotting library: the chart is one line, one dashed line and a few labelled
verticals, and matplotlib's import alone (about 0.4 s and 47 MB once per worker process) broke the budget of
≤ 150 ms and ≤ 30 MB per chart for the first chart a worker draws. Pillow is imported here, when a chart is drawn,
and nowhere else, so the HTTP ack path does not pay for it either. Fonts are made per chart (Pillow's built-in
scalable font, a fraction of a millisecond), so concurrent charts in threads share nothing. Drawing is synchronous
CPU work; callers run it in a thread.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from checks.model import CheckResult, Marker, Series

SIZE = (640, 260)  # px: readable in a Slack thread preview, a few KB
PLOT = (60, 28, 628, 236)  # left, top, right, bottom of the plotting area; labels go around it
FONT_PX = {"label": 11, "title": 13}
COLOURS = {"background": (255, 255, 255), "frame": (200, 200, 200), "text": (50, 50, 50),
           "series": (31, 119, 180), "threshold": (214, 39, 40)}
MARKER_COLOURS = {"first_error": (140, 86, 75), "deploy": (148, 103, 189), "first_breach": (255, 127, 14),
                  "milestone": (44, 160, 44)}
MARKER_NAMES = {"first_error": "first error", "deploy": "deploy", "first_breach": "first breach",
                "milestone": "milestone"}  # said by the alt text before each marker's label
THRESHOLD_DASH = (6, 4)  # px on, px off
MARKER_DOTS = (2, 3)
MAX_DOTTED_POINTS = 120  # above this many points, dots on each point would only thicken the line
MARKER_LABEL_CHARS = 24
MARKER_LABEL_ROWS = 3  # marker labels stack in this many rows under the top edge, so neighbours do not overlap
NICE_STEPS = (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10)  # the y axis tops out at one of these × a power of ten


def chart_filename(result: CheckResult) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{result.check}-{result.target}")
    return f"{safe[:80]}.png"


def chart_title(result: CheckResult) -> str:
    assert result.series is not None
    return f"{result.check} {result.target}: {result.series.metric}"[:200]


def alt_text(series: Series) -> str:
    """What a screen reader says instead: the peak, the threshold and the marked moments."""
    peak = max((v for _, v in series.points), default=0.0)
    limit = f", threshold {series.threshold:g}{series.unit}" if series.threshold is not None else ""
    marked = "; ".join(f"{_named(m)} at {_utc(m.at):%H:%M} UTC" for m in series.markers)
    return (f"{series.metric}: {len(series.points)} points, peak {peak:g}{series.unit}{limit}"
            + (f"; marked: {marked}" if marked else ""))[:1000]


def _named(marker: Marker) -> str:
    """A marker's label, led by what kind of moment it is unless the label says so already."""
    name = MARKER_NAMES[marker.kind]
    return marker.label if marker.label.startswith(name) else f"{name}: {marker.label}"


def render_png(series: Series) -> bytes:
    """The chart as PNG bytes. Needs at least one point (callers skip empty series)."""
    return canvas_png(lambda draw: _draw(draw, series))


def canvas_png(paint: Callable[[Any], None]) -> bytes:
    """A blank chart of SIZE, painted by `paint(ImageDraw)`, as PNG bytes: the diagnosis and report charts."""
    from PIL import Image, ImageDraw  # lazily: see the module docstring

    image = Image.new("RGB", SIZE, COLOURS["background"])
    paint(ImageDraw.Draw(image))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@dataclass(frozen=True)
class _Scale:
    """Maps the data (seconds since the epoch, values) onto the plotting area's pixels."""

    t0: float
    t1: float
    y0: float
    y1: float

    def x(self, at: datetime) -> float:
        return PLOT[0] + (_utc(at).timestamp() - self.t0) / (self.t1 - self.t0) * (PLOT[2] - PLOT[0])

    def y(self, value: float) -> float:
        return PLOT[3] - (value - self.y0) / (self.y1 - self.y0) * (PLOT[3] - PLOT[1])


def _draw(draw: Any, series: Series) -> None:
    faces = fonts()
    points = [(t, v) for t, v in series.points if math.isfinite(v)]
    scale = _scale(series, points)
    draw.rectangle(PLOT, outline=COLOURS["frame"])
    if series.threshold is not None:
        _dashed_row(draw, round(scale.y(series.threshold)), COLOURS["threshold"], THRESHOLD_DASH)
    for row, marker in enumerate(series.markers):
        _draw_marker(draw, scale, marker, row % MARKER_LABEL_ROWS, faces["label"])
    _draw_series(draw, scale, points)
    if series.threshold is not None:
        _threshold_label(draw, scale, series, faces["label"])
    _axis_labels(draw, scale, series, faces)


def fonts() -> dict[str, Any]:
    """The label and title fonts, made per chart (see the module docstring); other charts draw with them too."""
    from PIL import ImageFont

    return {role: ImageFont.load_default(size=px) for role, px in FONT_PX.items()}


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _scale(series: Series, points: list[tuple[datetime, float]]) -> _Scale:
    """The window spans every point and marker; the y axis starts at 0 (or the lowest value) and has headroom."""
    times = [_utc(t).timestamp() for t, _ in points] + [_utc(m.at).timestamp() for m in series.markers]
    values = [v for _, v in points] + ([series.threshold] if series.threshold is not None else [])
    t0, t1 = min(times, default=0.0), max(times, default=0.0)
    if t1 == t0:  # one point: a two-minute window around it
        t0, t1 = t0 - 60, t1 + 60
    y0 = min([0.0, *values])
    y1 = nice_ceiling(max(values, default=0.0))
    return _Scale(t0, t1, y0, y1 if y1 > y0 else y0 + 1)


def nice_ceiling(value: float) -> float:
    if value <= 0:
        return value
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in NICE_STEPS if step * power >= value)


def _dashed_row(draw: Any, y: int, colour: tuple[int, int, int], pattern: tuple[int, int]) -> None:
    on, off = pattern
    for x in range(PLOT[0] + 1, PLOT[2], on + off):
        draw.line([(x, y), (min(x + on - 1, PLOT[2] - 1), y)], fill=colour)


def _draw_marker(draw: Any, scale: _Scale, marker: Marker, row: int, font: Any) -> None:
    x, colour = round(scale.x(marker.at)), MARKER_COLOURS[marker.kind]
    on, off = MARKER_DOTS
    for y in range(PLOT[1] + 1, PLOT[3], on + off):
        draw.line([(x, y), (x, min(y + on - 1, PLOT[3] - 1))], fill=colour)
    text = f"{_short(marker.label)} {_utc(marker.at):%H:%M}"
    width = draw.textlength(text, font=font)
    left = x + 3 if x + 3 + width <= PLOT[2] else x - 3 - width  # flip left of the line at the right edge
    draw.text((left, PLOT[1] + 2 + row * (font.size + 2)), text, font=font, fill=colour)


def _short(label: str) -> str:
    return label if len(label) <= MARKER_LABEL_CHARS else label[:MARKER_LABEL_CHARS - 1] + "…"


def _draw_series(draw: Any, scale: _Scale, points: list[tuple[datetime, float]]) -> None:
    xy = [(scale.x(t), scale.y(v)) for t, v in points]
    if len(xy) > 1:
        draw.line(xy, fill=COLOURS["series"], width=2, joint="curve")
    if len(xy) <= MAX_DOTTED_POINTS:
        for x, y in xy:
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=COLOURS["series"])


def _threshold_label(draw: Any, scale: _Scale, series: Series, font: Any) -> None:
    assert series.threshold is not None
    text = f"threshold {series.threshold:g}{series.unit}"
    y = scale.y(series.threshold)
    top = y - font.size - 3 if y - font.size - 3 >= PLOT[1] else y + 3  # above the line unless at the top edge
    draw.text((PLOT[2] - 3 - draw.textlength(text, font=font), top), text, font=font, fill=COLOURS["threshold"])


def _axis_labels(draw: Any, scale: _Scale, series: Series, fonts: dict[str, Any]) -> None:
    label, ink = fonts["label"], COLOURS["text"]
    draw.text((PLOT[0], 6), series.metric[:90], font=fonts["title"], fill=ink)
    for value in (scale.y0, scale.y1):
        text = _value_text(value, series.unit)
        draw.text((PLOT[0] - 4 - draw.textlength(text, font=label), scale.y(value) - label.size // 2), text,
                  font=label, fill=ink)
    start, end = _window_texts(scale)
    draw.text((PLOT[0], PLOT[3] + 5), start, font=label, fill=ink)
    draw.text((PLOT[2] - draw.textlength(end, font=label), PLOT[3] + 5), end, font=label, fill=ink)


def _value_text(value: float, unit: str) -> str:
    return f"{value:g}{unit}" if unit in ("", "%") else f"{value:g} {unit}"


def _window_texts(scale: _Scale) -> tuple[str, str]:
    """The window's start and end times in UTC; with the date when it crosses midnight."""
    start, end = (datetime.fromtimestamp(t, UTC) for t in (scale.t0, scale.t1))
    shape = "%H:%M" if start.date() == end.date() else "%d %b %H:%M"
    return start.strftime(shape), f"{end.strftime(shape)} UTC"
