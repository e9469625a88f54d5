"""A small PNG of the series a check judged: the metric over the window, the threshold, and the markers.

matplotlib is imported here, when a chart is drawn, and nowhere else: the HTTP ack path and the workers that never
draw do not pay its import (about a third of a second and tens of MB). The Agg backend draws into memory, without a
display. Drawing is synchronous CPU work; callers run it in a thread.
"""

from __future__ import annotations

import io
import threading
from typing import Any

from checks.model import CheckResult, Series

SIZE_IN = (6.4, 2.6)
DPI = 100  # 640 × 260 px: readable in a Slack thread preview, a few tens of KB
MARGINS = {"left": 0.08, "right": 0.98, "top": 0.9, "bottom": 0.12}
MARKER_COLOURS = {"first_error": "tab:red", "deploy": "tab:purple", "first_breach": "tab:orange"}
_PYPLOT_LOCK = threading.Lock()  # pyplot's figure registry is global state; the OO API below avoids it, but be safe


def chart_filename(result: CheckResult) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{result.check}-{result.target}")
    return f"{safe[:80]}.png"


def chart_title(result: CheckResult) -> str:
    assert result.series is not None
    return f"{result.check} {result.target}: {result.series.metric}"[:200]


def alt_text(series: Series) -> str:
    """What a screen reader says instead: the peak and the threshold."""
    peak = max((v for _, v in series.points), default=0.0)
    limit = f", threshold {series.threshold:g}{series.unit}" if series.threshold is not None else ""
    return f"{series.metric}: {len(series.points)} points, peak {peak:g}{series.unit}{limit}"[:1000]


def render_png(series: Series) -> bytes:
    """The chart as PNG bytes. Needs at least one point (callers skip empty series)."""
    from matplotlib.figure import Figure  # lazily: see the module docstring

    with _PYPLOT_LOCK:
        figure = Figure(figsize=SIZE_IN, dpi=DPI)
        # Fixed margins: tight_layout measures every label with an extra draw, which doubled the drawing time.
        figure.subplots_adjust(**MARGINS)
        axes = figure.add_subplot()
        _draw(axes, series)
        out = io.BytesIO()
        figure.savefig(out, format="png", dpi=DPI)
    return out.getvalue()


def _draw(axes: Any, series: Series) -> None:
    import matplotlib.dates as mdates

    times = [t for t, _ in series.points]
    axes.plot(times, [v for _, v in series.points], color="tab:blue", linewidth=1.5, marker=".",
              label=_plain(series.metric))
    if series.threshold is not None:
        axes.axhline(series.threshold, color="tab:red", linestyle="--", linewidth=1,
                     label=_plain(f"threshold {series.threshold:g}{series.unit}"))
    for marker in series.markers:
        axes.axvline(marker.at, color=MARKER_COLOURS[marker.kind], linestyle=":", linewidth=1.2,
                     label=_plain(f"{marker.label} ({marker.at:%H:%M})"))
    axes.set_ylabel(_plain(series.unit or series.metric))
    axes.set_ylim(bottom=0)
    axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize=7, framealpha=0.8)
    axes.set_title(_plain(series.metric), fontsize=9)


def _plain(text: str) -> str:
    """Text matplotlib draws as typed: `$…$` would be mathtext (and malformed mathtext raises)."""
    return text.replace("$", r"\$")
