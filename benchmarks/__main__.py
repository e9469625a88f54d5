"""Run every benchmark, one process each (so one's leftovers cannot colour another's figures), and print them.

    .venv/bin/python -m benchmarks            # all
    .venv/bin/python -m benchmarks queue aws  # some of: diagnose, charts, aws, queue, incidents, recovery, hardening,
                                              #   postmortem, redis, startup, lists, timers
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time

ORDER = ["startup", "lists", "diagnose", "charts", "aws", "queue", "incidents", "recovery", "hardening", "postmortem",
         "redis", "timers"]


def main(names: list[str]) -> int:
    failed = 0
    for name in names or ORDER:
        module = f"benchmarks.bench_{name}"
        if importlib.util.find_spec(module) is None:
            print(f"== {name}: no such benchmark ({module})")
            failed += 1
            continue
        print(f"== {name}", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, "-m", module])
        print(f"   ({time.monotonic() - started:.0f} s{'' if code == 0 else f', exit {code}'})", flush=True)
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
