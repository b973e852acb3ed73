"""Time of the cluster rules (reachability, admission, availability, identity) within `invoke lint`.

    python benchmarks/cluster_rules.py [RUNS]

Renders every overlay once, as the gate does, then runs each check on it RUNS times (default
20) and prints the median and the maximum per check, warm (after one untimed run, which reads
Airflow's default config once).
"""

from __future__ import annotations

import statistics
import sys
import time

from airflow_ha import REPO_ROOT
from airflow_ha.lint.checks import admission, availability, identity, reachability
from airflow_ha.lint.render import render_target


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    target = render_target(REPO_ROOT, None, ())
    for check in (reachability, admission, availability, identity):
        list(check.run(target))
        seconds = []
        for _ in range(runs):
            started = time.perf_counter()
            list(check.run(target))
            seconds.append(time.perf_counter() - started)
        overlays = ", ".join(rendered.overlay for rendered in target.rendered)
        print(
            f"{check.NAME:<13} median {statistics.median(seconds) * 1000:6.1f} ms   "
            f"max {max(seconds) * 1000:6.1f} ms   ({runs} runs, overlays {overlays})"
        )


if __name__ == "__main__":
    main()
