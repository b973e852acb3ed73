"""The laptop figures, measured on a real kind cluster: `python -m benchmarks.cluster [--runs N]`.

Runs the user path with the settings `nox -s e2e` uses (tests/e2e/prepare.py builds what a
machine without a registry cannot pull), and prints:

- `invoke deploy` cold (no cluster; the image and lint caches as they are) and warm (nothing
  changed);
- `invoke smoke`, the whole command, and each run from trigger to success;
- per task, queued to running (task instance `queued_when` to `start_date`);
- per worker pod, created to running (`creationTimestamp` to the container's `startedAt`);
- the scheduler failover, from `invoke drill --step scheduler`;
- the working set of every container of the deployment, from the kubelets' stats/summary:
  the peak while the runs go (sampled every 2 s), and idle, a minute after them.

It deletes the kind cluster it made at the end. The load average is printed beside each
figure: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from typing import Any

from airflow_ha import REPO_ROOT, cluster, kubeapi, smoke
from airflow_ha.worker_pods import PodWatch

KIND_CLUSTER = "airflow-ha"
NAMESPACE = "airflow"
DAG_ID = "smoke_kubernetes_executor"
IDLE_SECONDS = 60


def prepared_env() -> dict[str, str]:
    output = subprocess.run(
        [sys.executable, "-m", "tests.e2e.prepare"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    settings = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    path = f"{settings.pop('PATH_PREFIX')}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, **settings, "PATH": path}


def timed(env: dict[str, str], *args: str) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO_ROOT, env=env, check=True)
    took = time.monotonic() - started
    print(f"FIGURE invoke {' '.join(args)}: {took:.1f} s (load average {os.getloadavg()[0]:.1f})", flush=True)
    return took


def when(value: str | None) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else float("nan")


def run_figures(kube: kubeapi.Kube, api: smoke.AirflowAPI, runs: int) -> None:
    queued, pods_started, totals = [], [], []
    for _ in range(runs):
        started = time.monotonic()
        with PodWatch(kube, NAMESPACE, DAG_ID) as pods:
            run = smoke.run_dag(api, DAG_ID, smoke.CLUSTER_CONF, 600, pods)
        totals.append(time.monotonic() - started)
        for ti in api.task_instances(DAG_ID, run.run_id):
            queued.append(when(ti.get("start_date")) - when(ti.get("queued_when")))
        # The pods are deleted after the run; their events outlive them.
        events = kube.core.list_namespaced_event(NAMESPACE).items
        moments: dict[tuple[str, str], Any] = {
            (e.involved_object.name, e.reason): e.first_timestamp or e.event_time
            for e in events
            if e.involved_object.name in pods.pods and e.reason in ("Scheduled", "Started")
        }
        pods_started += [
            (moments[name, "Started"] - moments[name, "Scheduled"]).total_seconds()
            for name in pods.pods
            if (name, "Started") in moments and (name, "Scheduled") in moments
        ]
    print(f"FIGURE smoke run, trigger to success: {summary(totals)}")
    print(f"FIGURE task queued to running: {summary(queued)}")
    print(f"FIGURE worker pod scheduled to container started: {summary(pods_started)}")


def summary(values: list[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "no values"
    return f"median {statistics.median(values):.1f} s, max {max(values):.1f} s, n={len(values)}"


def working_sets(kube: kubeapi.Kube) -> dict[tuple[str, str], float]:
    """MiB per (pod's component or name, container) of the deployment, from every kubelet's stats/summary."""
    found: dict[tuple[str, str], float] = {}
    for node in kube.core.list_node().items:
        stats: Any = kube.core.connect_get_node_proxy_with_path(
            node.metadata.name, "stats/summary", _preload_content=False
        )
        for pod in json.loads(stats.data).get("pods", []):
            if pod["podRef"]["namespace"] != NAMESPACE:
                continue
            owner = pod["podRef"]["name"]
            for container in pod.get("containers", []):
                mib = container.get("memory", {}).get("workingSetBytes", 0) / 2**20
                found[owner, container["name"]] = mib
    return found


class PeakSampler(threading.Thread):
    """The highest working set of each container, sampled every 2 s (a shorter spike can pass unseen)."""

    def __init__(self, kube: kubeapi.Kube):
        super().__init__(daemon=True)
        self.kube, self.peaks, self.done = kube, dict[tuple[str, str], float](), threading.Event()
        self.peak_total = 0.0  # of one sample: the deployment's peak, worker pods included

    def run(self) -> None:
        while not self.done.wait(2):
            sample = working_sets(self.kube)
            self.peak_total = max(self.peak_total, sum(sample.values()))
            for key, mib in sample.items():
                self.peaks[key] = max(self.peaks.get(key, 0.0), mib)


def print_memory(title: str, sets: dict[tuple[str, str], float], total: float) -> None:
    for (pod, container), mib in sorted(sets.items()):
        print(f"FIGURE {title} {pod}/{container}: {mib:.0f} MiB")
    print(f"FIGURE {title}, whole deployment at once: {total:.0f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if KIND_CLUSTER in cluster.kind_clusters():
        print(f"the kind cluster {KIND_CLUSTER!r} exists: the cold figure needs none; delete it first")
        return 2
    env = prepared_env()
    try:
        timed(env, "deploy")
        timed(env, "deploy")
        timed(env, "smoke")
        kube = kubeapi.kube_clients(cluster.kind_context(KIND_CLUSTER))
        username, password = smoke.admin_credentials(kube, NAMESPACE)
        sampler = PeakSampler(kube)
        sampler.start()
        with (
            smoke.api_server(kube, NAMESPACE, on_kind=True) as url,
            smoke.AirflowAPI(url, username, password) as api,
        ):
            run_figures(kube, api, args.runs)
        sampler.done.set()
        print_memory("peak working set during the runs", sampler.peaks, sampler.peak_total)
        time.sleep(IDLE_SECONDS)
        idle = working_sets(kube)
        print_memory("idle working set", idle, sum(idle.values()))
        timed(env, "drill", "--step", "scheduler")
    finally:
        subprocess.run(
            [sys.executable, "-m", "invoke", "teardown", "--purge", "--cluster"],
            cwd=REPO_ROOT,
            env=env,
            check=False,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
