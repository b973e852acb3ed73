"""Wall time of `invoke lint`, run as a user runs it, on a fresh checkout and then warm.

    python benchmarks/lint.py [RUNS]

It copies the repository's files (tracked and untracked, not ignored: no .cache/) into a
temporary folder, as a fresh clone has them, and runs `invoke lint` there: the first run
builds the caches under .cache/ (a migrated SQLite database, bytecode, the results of the
checks). Then it runs it RUNS more times (default 7) and prints their median, min and max.
The targets on a 2-core machine: a warm median of at most 5 s, a first run of at most 20 s.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
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


def fresh_checkout(destination: Path) -> Path:
    """The repository's files as a clone has them, uncommitted changes included, no caches."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def run_lint(checkout: Path) -> tuple[float, float]:
    """Wall time, and CPU time (user and system, of every process it started), of one run.

    On a shared machine the CPU time says what the run costs whatever else is running.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(invoke(), cwd=checkout, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"`invoke lint` failed, so its time means nothing:\n{result.stdout}{result.stderr}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    with tempfile.TemporaryDirectory(prefix="airflow-ha-lint-benchmark-") as tmp:
        checkout = fresh_checkout(Path(tmp))
        load = os.getloadavg()[0]
        first, first_cpu = run_lint(checkout)
        if not (checkout / ".cache").is_dir():
            raise SystemExit("the run did not use the checkout's own .cache/: it timed another copy")
        warm = [run_lint(checkout) for _ in range(runs)]
    times, cpu = [wall for wall, _ in warm], [used for _, used in warm]
    print(f"invoke lint on {os.cpu_count()} cores (load average {load:.1f} before the first run)")
    print(f"first run on a fresh checkout: {first:.1f} s ({first_cpu:.1f} s of CPU)")
    print(
        f"{runs} warm runs: median {statistics.median(times):.1f} s, min {min(times):.1f} s, "
        f"max {max(times):.1f} s (median {statistics.median(cpu):.1f} s of CPU; "
        f"load average {os.getloadavg()[0]:.1f} at the end)"
    )


if __name__ == "__main__":
    main()
