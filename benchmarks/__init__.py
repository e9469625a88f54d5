"""Benchmarks: they measure and print figures (ratios against a baseline in the same run where the issue asks for
one); they are not tests and assert nothing about speed. Run all with `python -m benchmarks`."""

import json
import os


def pct(values: list[float], q: float) -> float:
    """The q-th percentile: the value at the rounded rank q % of the way from the smallest to the largest (p99
    of 200 values is at rank round(0.99 × 199) = 197 of 0..199, the 3rd-largest; of 100 values, the 2nd-largest)."""
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


def summarize_ratio(figure: str, value: float, baseline: float, unit: str, *, limit: float,
                    baseline_name: str) -> None:
    """A figure whose target is at most `limit` × its baseline measured in the same run."""
    summarize(figure, value, unit, baseline=baseline, baseline_name=baseline_name,
              target=f"≤ {limit:g} × {baseline_name}", met=value <= limit * baseline)


def summarize_limit(figure: str, value: float, unit: str, limit: float | None, **baseline: object) -> None:
    """A figure whose target is an absolute bound (`None`: printed for its growth, no target)."""
    summarize(figure, value, unit, target=f"≤ {limit:g} {unit}" if limit is not None else "",
              met=value <= limit if limit is not None else None, **baseline)  # type: ignore[arg-type]


def summarize_startup(start_ms: float, bolt_start_ms: float, rss_mib: float, bolt_rss_mib: float) -> None:
    """An HTTP process's start-up and memory beside the minimal Bolt app's (targets ≤ 1.3 × each)."""
    summarize_ratio("HTTP process start → first 200 on /healthz", start_ms, bolt_start_ms, "ms", limit=1.3,
                    baseline_name="minimal Bolt")
    summarize_ratio("HTTP process RSS after acks", rss_mib, bolt_rss_mib, "MiB", limit=1.3,
                    baseline_name="minimal Bolt")
