"""Benchmarks: they measure and print figures (ratios against a baseline in the same run where the issue asks for
one); they are not tests and assert nothing about speed. Run all with `python -m benchmarks`."""


def pct(values: list[float], q: float) -> float:
    """The q-th percentile by nearest rank (p99 of 200 values is the 2nd-largest)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]
