"""Run every benchmark, one process each (so one's leftovers cannot colour another's figures), and print them; then
a summary of issue #20's figures: each beside its baseline from the same run, the ratio, the target, met or not.
Each benchmark adds its figures with `benchmarks.summarize` to the file named by BENCH_SUMMARY, set here.

    .venv/bin/python -m benchmarks            # all
    .venv/bin/python -m benchmarks queue aws  # some of: diagnose, charts, aws, queue, incidents, recovery, hardening,
                                              #   postmortem, redis, startup, lists, timers
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ORDER = ["startup", "lists", "diagnose", "charts", "aws", "queue", "incidents", "recovery", "hardening", "postmortem",
         "redis", "timers"]


def main(names: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-summary-") as tmp:
        summary = Path(tmp) / "summary.jsonl"
        failed = sum(run(name, summary) for name in names or ORDER)
        print_summary(summary)
    return 1 if failed else 0


def run(name: str, summary: Path) -> bool:
    """Run one benchmark in its own process; True when it failed."""
    module = f"benchmarks.bench_{name}"
    if importlib.util.find_spec(module) is None:
        print(f"== {name}: no such benchmark ({module})")
        return True
    print(f"== {name}", flush=True)
    started = time.monotonic()
    code = subprocess.call([sys.executable, "-m", module], env={**os.environ, "BENCH_SUMMARY": str(summary)})
    print(f"   ({time.monotonic() - started:.0f} s{'' if code == 0 else f', exit {code}'})", flush=True)
    return code != 0


def print_summary(path: Path) -> None:
    figures = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    if not figures:
        return
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n== summary (issue #20; load average {load} at the end)")
    print(f"  {'figure':<52} {'now':>11} {'baseline':>24} {'ratio':>7}  {'target':<28} met")
    for f in figures:
        print("  " + summary_row(f))


def summary_row(f: dict) -> str:
    base = f.get("baseline")
    baseline = f"{_value(base, f['unit'])} {f.get('baseline_name') or ''}".strip() if base is not None else "—"
    ratio = "—" if not base else f"{f['value'] / base:.2f} ×" if f["value"] >= base / 10 else \
        f"÷{base / max(f['value'], 1e-9):,.0f}"  # far below its baseline: how many times less
    met = {True: "yes", False: "NO", None: "—"}[f.get("met")]
    return (f"{f['figure'][:52]:<52} {_value(f['value'], f['unit']):>11} {baseline[:24]:>24} {ratio:>7}  "
            f"{(f.get('target') or '—')[:28]:<28} {met}")


def _value(value: float, unit: str) -> str:
    return f"{value:.2f} {unit}" if abs(value) < 10 else f"{value:,.0f} {unit}"


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
