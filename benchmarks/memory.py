"""Memory of every container, measured in the rehearsal.

    python -m benchmarks.memory [--overlay kind] [--idle 180] [--runs 3]   # from the repository root

Brings up the `nox -s stack` rehearsal of an overlay (the deployment's own containers in Docker,
the Kubernetes API emulator of tests/emulator, the Docker pod runner for worker pods), and
samples `docker stats` of every running container once a second:
- idle: for --idle seconds once every probe has passed;
- busy: while --runs smoke DAG runs go one after the other, worker pods included.
In both phases every liveness and readiness probe runs at its periodSeconds, as a kubelet runs
it: an exec probe starts a Python process inside the container, and that memory counts
against the container's limit like the rest.

The figure is the working set, as the kubelet computes it for evictions and `kubectl top`:
usage less the inactive file cache (cgroup v1 `total_inactive_file`, v2 `inactive_file`).
For each container it prints the start-up peak (init containers and the migration included),
the idle median, the idle and busy peaks, the manifest's request and limit, and what the sizing
rule gives (SIZING below). Docker on this machine, not a kubelet: the containers run under the
manifests' memory limits as the rehearsal sets them, sampled once a second (a shorter spike can
be missed); a container too brief to sample (the api-server's password copy) has no row. Prints
figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from docker.client import DockerClient
from docker.errors import NotFound

from airflow_ha import REPO_ROOT, capacity, manifests
from airflow_ha.manifests import Manifest, containers, pod_specs
from benchmarks.executor import images, run_once

sys.path.insert(0, str(REPO_ROOT / "tests"))

MIB = 1024 * 1024
REQUEST_STEP_MIB = 32
# Headroom of a limit over the peak: half again, for heaps that grow with more DAGs and users,
# and at least one more Airflow CLI process (an exec probe costs about 110 MiB).
LIMIT_FACTOR = 1.5
LIMIT_EXTRA_MIB = 128
LIMIT_STEP_MIB = 64
SIZING = (
    f"request = peak working set rounded up to {REQUEST_STEP_MIB} MiB; limit = the larger of "
    f"{LIMIT_FACTOR} x peak and peak + {LIMIT_EXTRA_MIB} MiB, rounded up to {LIMIT_STEP_MIB} MiB"
)
PROBES = ("readinessProbe", "livenessProbe")
PHASES = ("start-up", "idle", "busy")


def working_set(stats: dict[str, Any]) -> int | None:
    memory = stats.get("memory_stats") or {}
    if "usage" not in memory:
        return None  # the container stopped between the listing and the read
    details = memory.get("stats") or {}
    inactive = details.get("total_inactive_file", details.get("inactive_file", 0))
    return max(int(memory["usage"]) - int(inactive), 0)


def round_up(mib: float, step: int) -> int:
    return max(step, math.ceil(mib / step) * step)


Row = tuple[str, str]  # (workload, container), or ("worker pod", "base")
WORKER: Row = ("worker pod", "base")


def rows_of(rendered: list[Manifest]) -> dict[Row, dict[str, Any]]:
    """Every container of every workload, init containers and the Job's included, with its resources."""
    rows: dict[Row, dict[str, Any]] = {}
    for manifest in rendered:
        for _, spec in pod_specs(manifest):
            for _, container in containers(spec):
                rows[manifest.name, container["name"]] = container.get("resources") or {}
    template = manifests.pod_template(rendered)
    assert template, "the overlay has no worker pod template"
    rows[WORKER] = template.obj["spec"]["containers"][0].get("resources") or {}
    return rows


class Sampler:
    """Working sets of the rehearsal's containers once a second, by phase, from before it starts.

    The rehearsal names each container airflow-ha-stack-RUN-POD-CONTAINER, where POD is the
    workload's name and the replica's number; any other container it labels is a worker pod's.
    """

    def __init__(self, rows: dict[Row, dict[str, Any]]):
        self.client = DockerClient.from_env()
        self.patterns = [
            (re.compile(rf"airflow-ha-stack-[0-9a-f]+-{re.escape(w)}-[0-9]+-{re.escape(c)}"), (w, c))
            for w, c in rows
            if (w, c) != WORKER
        ]
        self.earlier = {
            c.id for c in self.client.containers.list(all=True, filters={"label": "airflow-ha-stack"})
        }
        self.phase = "start-up"
        self.samples: dict[tuple[str, Row], list[int]] = defaultdict(list)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def row(self, container_name: str) -> Row:
        return next((row for pattern, row in self.patterns if pattern.fullmatch(container_name)), WORKER)

    def loop(self) -> None:
        # dockerd answers a stats request at its next collection, once a second, so the
        # containers are asked all at once: one sample of each per second.
        with ThreadPoolExecutor(max_workers=32) as pool:
            while not self.stop.is_set():
                started = time.monotonic()
                listed = self.client.containers.list(filters={"label": "airflow-ha-stack"})
                ours = [container for container in listed if container.id not in self.earlier]
                phase = self.phase
                for container, value in zip(ours, pool.map(self.read, ours), strict=True):
                    if value is not None:
                        self.samples[phase, self.row(container.name)].append(value)
                self.stop.wait(max(0.0, 1 - (time.monotonic() - started)))

    def read(self, container: Any) -> int | None:
        try:
            return working_set(self.client.api.stats(container.id, stream=False, one_shot=True))
        except NotFound:  # gone since the listing: a worker pod, an init container
            return None

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def run_probes_periodically(stack: Any, stop: threading.Event) -> None:
    """Every readiness and liveness probe of every component, each at its own period."""
    for pod in stack.rehearsal.pods:
        if pod.manifest.kind not in ("Deployment", "StatefulSet"):
            continue
        for container in pod.spec.get("containers") or []:
            for kind in PROBES:
                probe = container.get(kind)
                if not probe:
                    continue

                def loop(
                    pod: Any = pod, container: Any = container, kind: str = kind, period: int = 10
                ) -> None:
                    while not stop.wait(period):
                        stack.rehearsal.probe(pod, container, kind)

                period = int(probe.get("periodSeconds", 10))
                threading.Thread(target=loop, kwargs={"period": period}, daemon=True).start()


def mib(quantity: str | None) -> str:
    return f"{capacity.quantity(quantity, 'memory') / MIB:.0f}" if quantity else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overlay", default="kind")
    parser.add_argument("--idle", type=int, default=180, help="seconds of idle sampling")
    parser.add_argument("--runs", type=int, default=3, help="smoke DAG runs while sampling")
    parser.add_argument("--image", default="", help="Airflow image to use. Default: this revision's tag")
    args = parser.parse_args()
    from stack.conftest import api_client, rehearsal_stack

    airflow_image, postgres_image = images(args.image)
    rows = rows_of(manifests.render(args.overlay, image=airflow_image))
    stop = threading.Event()
    with (
        Sampler(rows) as sampler,
        tempfile.TemporaryDirectory(prefix="memory-bench-") as folder,
        rehearsal_stack(airflow_image, postgres_image, Path(folder), args.overlay) as stack,
    ):
        sampler.phase = "idle"
        run_probes_periodically(stack, stop)
        print(f"idle for {args.idle} s; load average {os.getloadavg()}")
        time.sleep(args.idle)
        sampler.phase = "busy"
        with api_client(stack) as client:
            for number in range(1, args.runs + 1):
                took, _ = run_once(client, stack.runner)
                print(f"run {number}: {took:.0f} s; load average {os.getloadavg()}")
        stop.set()
    print_table(sampler.samples, rows, args.overlay)


def print_table(
    samples: dict[tuple[str, Row], list[int]], rows: dict[Row, dict[str, Any]], overlay: str
) -> None:
    """A Markdown table, as the README quotes it: MiB of working set, and of the manifests."""
    counts = {phase: sum(len(v) for (p, _), v in samples.items() if p == phase) for phase in PHASES}
    print(f"\nworking set in MiB, overlay {overlay}; samples: {counts}")
    print(f"sizing rule: {SIZING}\n")
    columns = ["start-up peak", "idle median", "idle peak", "busy peak", "request", "limit", "sized request"]
    print(f"| container | {' | '.join(columns)} | sized limit |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in [r for r in rows if any((phase, r) in samples for phase in PHASES)]:
        seen = {phase: samples.get((phase, row), []) for phase in PHASES}
        peak = max(max(values) for values in seen.values() if values) / MIB
        declared = rows[row]
        cells = [
            "/".join(row),
            *(f"{max(seen[phase]) / MIB:.0f}" if seen[phase] else "-" for phase in ("start-up",)),
            f"{statistics.median(seen['idle']) / MIB:.0f}" if seen["idle"] else "-",
            *(f"{max(seen[phase]) / MIB:.0f}" if seen[phase] else "-" for phase in ("idle", "busy")),
            mib((declared.get("requests") or {}).get("memory")),
            mib((declared.get("limits") or {}).get("memory")),
            str(round_up(peak, REQUEST_STEP_MIB)),
            str(round_up(max(peak * LIMIT_FACTOR, peak + LIMIT_EXTRA_MIB), LIMIT_STEP_MIB)),
        ]
        print(f"| {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
