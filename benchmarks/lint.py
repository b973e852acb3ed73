"""Wall time of `invoke lint`, run as a user runs it: prints the median, min and max.

    python benchmarks/lint.py [RUNS]

The first run may build the caches under .cache/ (a migrated SQLite database, bytecode);
it runs once before the timed runs, so the figures are those of a warm checkout. The
issue's target is a median of at most 15 s on a 2-core machine.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def invoke() -> list[str]:
    """The invoke of this Python environment first, as `.venv/bin/invoke lint` would run."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which("invoke", path=search)
    if found is None:
        raise SystemExit("invoke is not installed in this Python environment")
    return [found, "lint"]


def run_lint() -> float:
    started = time.perf_counter()
    result = subprocess.run(invoke(), cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"`invoke lint` failed, so its time means nothing:\n{result.stdout}{result.stderr}")
    return seconds


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    run_lint()  # warm the caches
    times = [run_lint() for _ in range(runs)]
    load = os.getloadavg()[0]
    print(
        f"invoke lint, {runs} runs on {os.cpu_count()} cores: median {statistics.median(times):.1f} s, "
        f"min {min(times):.1f} s, max {max(times):.1f} s (load average {load:.1f} at the end)"
    )


if __name__ == "__main__":
    main()
