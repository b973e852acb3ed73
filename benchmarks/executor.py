"""Time the KubernetesExecutor path through the rehearsal: `python -m benchmarks.executor [--runs N]`.

Brings up the `nox -s stack` rehearsal (the deployment in Docker, the Kubernetes API emulator
of tests/emulator, the Docker pod runner), then triggers the smoke DAG N times, one run after
the other, and prints:
- trigger to success of each run (target: at most 90 s);
- per task, median and max from queued to running (task-instance `queued_when` to
  `start_date`; target: median at most 15 s);
- per task, from pod created (the emulator saw it) to container started, and to task started.
Also prints the load average, since the machine is shared. Needs the images that the test
fixtures build (run `nox -s stack` once first, or this builds them the same way).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from airflow_ha import REPO_ROOT, image

sys.path.insert(0, str(REPO_ROOT / "tests"))

DAG_ID = "smoke_kubernetes_executor"
POSTGRES_IMAGE = "airflow-ha-postgres:15"
BASE_IMAGE = "airflow-ha-base:bookworm"


def images(given: str = "") -> tuple[str, str]:
    """The images of this revision (or --image), built as the test fixtures build them when missing."""
    from docker.client import DockerClient
    from docker.errors import ImageNotFound

    client = DockerClient.from_env()
    settings = yaml.safe_load((REPO_ROOT / "invoke.yaml").read_text())["image"]
    reference = given or f"{settings['repository']}:{image.image_tag(settings['airflow_version'])}"
    try:
        client.images.get(reference)
    except ImageNotFound:
        image.build_image(reference, base_image=BASE_IMAGE, ca_bundle=None)
    try:
        client.images.get(POSTGRES_IMAGE)
    except ImageNotFound:
        with image.build_context(REPO_ROOT / "docker" / "postgres", "Dockerfile") as context:
            image.build(context, POSTGRES_IMAGE, buildargs={"BASE_IMAGE": BASE_IMAGE})
    return reference, POSTGRES_IMAGE


def when(value: str | None) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else float("nan")


def run_once(client: httpx.Client, runner: Any, timeout: float = 600) -> tuple[float, list[dict[str, Any]]]:
    client.patch(f"/api/v2/dags/{DAG_ID}", json={"is_paused": False}).raise_for_status()
    triggered = time.time()
    body = {"logical_date": datetime.now(UTC).isoformat(), "conf": {"require_executor_pods": True}}
    run = client.post(f"/api/v2/dags/{DAG_ID}/dagRuns", json=body)
    run.raise_for_status()
    run_id = run.json()["dag_run_id"]
    while True:
        state = client.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}").json()["state"]
        if state in ("success", "failed"):
            break
        if time.time() - triggered > timeout:
            raise SystemExit(f"run {run_id} did not finish within {timeout:.0f} s")
        time.sleep(0.5)
    took = time.time() - triggered
    if state != "success":
        raise SystemExit(f"run {run_id} failed")
    tasks = client.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
    from airflow_ha.worker_pods import safe_label

    rows = []
    for ti in tasks:
        pod = next(
            (
                name
                for name in runner.created_at
                if name.startswith(safe_label(DAG_ID).replace("_", "-")[:10])
                and ti["task_id"].replace("_", "-") in name
                and runner.created_at[name] >= triggered
            ),
            None,
        )
        rows.append(
            {
                "task": ti["task_id"],
                "queued_to_running": when(ti["start_date"]) - when(ti["queued_when"]),
                "pod_to_container": (runner.started_at.get(pod, float("nan")) - runner.created_at[pod])
                if pod
                else float("nan"),
                "pod_to_task": when(ti["start_date"]) - runner.created_at[pod] if pod else float("nan"),
            }
        )
    return took, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--image", default="", help="Airflow image to use. Default: this revision's tag")
    args = parser.parse_args()
    from stack.conftest import api_client, rehearsal_stack

    airflow_image, postgres_image = images(args.image)
    print(f"load average before the stack: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="executor-bench-") as folder:
        started = time.time()
        with rehearsal_stack(airflow_image, postgres_image, Path(folder)) as stack:
            print(f"stack up in {time.time() - started:.0f} s; load average {os.getloadavg()}")
            durations, rows = [], []
            with api_client(stack) as client:
                for number in range(1, args.runs + 1):
                    took, tasks = run_once(client, stack.runner)
                    durations.append(took)
                    rows.extend(tasks)
                    print(f"run {number}: trigger to success {took:.1f} s; load average {os.getloadavg()}")
            print("\nfigure                              median    max")
            print(
                f"trigger to success (target <= 90 s)   "
                f"{statistics.median(durations):6.1f}  {max(durations):6.1f}"
            )
            for task in sorted({row["task"] for row in rows}):
                mine = [row for row in rows if row["task"] == task]
                for key, label in (
                    ("queued_to_running", "queued to running"),
                    ("pod_to_container", "pod created to container started"),
                    ("pod_to_task", "pod created to task started"),
                ):
                    values = [row[key] for row in mine if row[key] == row[key]]
                    if values:
                        print(f"{task}: {label:34} {statistics.median(values):6.1f}  {max(values):6.1f}")
            every = [row["queued_to_running"] for row in rows]
            print(
                f"all tasks: queued to running (target median <= 15 s) "
                f"{statistics.median(every):6.1f}  {max(every):6.1f}"
            )
            print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
