"""Benchmarks: they measure and print figures (ratios against a baseline in the same run where the issue asks for
one); they are not tests and assert nothing about speed. Run all with `python -m benchmarks`."""

import json
import os


def pct(values: list[float], q: float) -> float:
    """The q-th percentile by nearest rank (p99 of 200 values is the 2nd-largest)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summarize(figure: str, value: float, unit: str, *, baseline: float | None = None, baseline_name: str = "",
              target: str = "", met: bool | None = None) -> None:
    """Add one figure to the summary `python -m benchmarks` prints at the end (a JSON line in the file named by
    BENCH_SUMMARY; nothing when a benchmark runs alone). `baseline`, in the same unit, measured in the same run."""
    path = os.environ.get("BENCH_SUMMARY")
    if not path:
        return
    line = {"figure": figure, "value": value, "unit": unit, "baseline": baseline, "baseline_name": baseline_name,
            "target": target, "met": met}
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")
