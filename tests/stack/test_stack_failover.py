"""HA drills on the rehearsal stack: an api-server stops, then a scheduler is killed mid-task.

Real Airflow components in Docker; only the Kubernetes API is the emulator of tests/emulator
(NOT Kubernetes: no controller recreates a stopped pod here, so the drill restarts the
container itself afterwards, as a Deployment would).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from typing import Any

from .conftest import CONTEXT, SMOKE_DAG_ID, Stack, api_client, dump, wait_for

FAILOVER_DAG_ID = "failover_long_task"
HOLD_SECONDS = 120  # long enough to be still running when the other scheduler adopts its pod
SCHEDULER_ACCOUNT = "system:serviceaccount:airflow:airflow-scheduler"


def start_smoke(stack: Stack, *args: str, timeout: int = 420) -> subprocess.Popen[str]:
    username, password = stack.admin
    invoke = shutil.which("invoke")
    assert invoke
    command = [invoke, "smoke", "--context", CONTEXT, "--api-url", stack.api_url, "--username", username]
    return subprocess.Popen(
        [*command, "--password", password, "--timeout", str(timeout), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "KUBECONFIG": str(stack.kubeconfig)},
    )


def finish(stack: Stack, smoke: subprocess.Popen[str], timeout: float = 900) -> str:
    output, _ = smoke.communicate(timeout=timeout)
    print(output[-6000:])
    if smoke.returncode != 0:
        print(stack.diagnostics())
    return output


def worker_pods(stack: Stack, **labels: str) -> list[dict[str, Any]]:
    from emulator.store import BY_PLURAL, Selector

    selector = Selector.parse(
        "pods", ",".join(f"{k}={v}" for k, v in {"kubernetes_executor": "True", **labels}.items())
    )
    items, _ = stack.emulator.store.list(BY_PLURAL["", "pods"], "airflow", selector)
    return items


def test_tasks_reach_the_execution_api_through_the_service_while_one_api_server_is_stopped(
    stack: Stack,
) -> None:
    """Stop one api-server while the smoke DAG runs: later tasks reach the Service name, the run succeeds."""
    stopped = stack.pods("airflow-api-server")[1]  # the other one serves this test's --api-url
    before = set(stack.runner.started)
    smoke = start_smoke(stack, "--dag-id", SMOKE_DAG_ID)
    try:
        wait_for(lambda: set(stack.runner.started) - before, 300, "the first worker pod of the run")
        # From SIGTERM on the api-server takes no new connection; the stop itself may take its
        # whole grace period, during which the next task's pod can start.
        stopped_at = time.monotonic()
        stopped.containers[-1].stop(timeout=10)
        print(f"stopped {stopped.name} while the first task ran")
        output = finish(stack, smoke)
    finally:
        smoke.kill()
        stopped.containers[-1].start()
    assert smoke.returncode == 0, "the run did not survive one api-server stopping"
    after = [
        name for name, started in stack.runner.started.items() if name not in before and started > stopped_at
    ]
    assert after, (
        f"no worker pod started after {stopped.name} stopped, so nothing was proven: {output[-500:]}"
    )
    print(f"worker pods started after the stop, through the Service name: {after}")
    stack.rehearsal.wait_until_probes_pass(stopped)


def scheduler_jobs(stack: Stack) -> dict[str, str]:
    """Running SchedulerJob id -> hostname (the rehearsal pod name)."""
    with api_client(stack) as client:
        found = client.get(
            "/api/v2/jobs", params={"job_type": "SchedulerJob", "is_alive": True, "limit": 100}
        )
        found.raise_for_status()
    return {str(job["id"]): job["hostname"] for job in found.json()["jobs"]}


def test_the_other_scheduler_adopts_the_pod_of_a_killed_scheduler(stack: Stack) -> None:
    """SIGKILL the scheduler that launched a running task's pod: the other adopts it, the run succeeds."""
    from emulator.store import BY_PLURAL, Selector

    smoke = start_smoke(stack, "--dag-id", FAILOVER_DAG_ID, "--conf", f'{{"seconds": {HOLD_SECONDS}}}')
    history: list[tuple[str, str, str]] = []  # (phase, airflow-worker label, deletion)
    stop = threading.Event()

    def follow_hold_pod() -> None:
        selector = Selector.parse("pods", f"dag_id={FAILOVER_DAG_ID},task_id=hold")
        for _, pod in stack.emulator.store.watch(
            BY_PLURAL["", "pods"], "airflow", selector, "0", timeout=900, stopped=stop.is_set
        ):
            entry = (pod["status"].get("phase", ""), pod["metadata"]["labels"].get("airflow-worker", ""), "")
            if not history or history[-1] != entry:
                history.append(entry)

    threading.Thread(target=follow_hold_pod, daemon=True).start()
    killed = None
    try:
        running = wait_for(
            lambda: [
                p
                for p in worker_pods(stack, dag_id=FAILOVER_DAG_ID, task_id="hold")
                if p["status"]["phase"] == "Running"
            ],
            300,
            "the hold task's worker pod to run",
        )
        launcher = running[0]["metadata"]["labels"]["airflow-worker"]
        jobs = scheduler_jobs(stack)
        assert launcher in jobs, f"the pod's airflow-worker={launcher} is no running scheduler job: {jobs}"
        host = jobs[launcher].split(".")[0]
        killed = next(pod for pod in stack.pods("airflow-scheduler") if pod.name == host)
        killed.containers[-1].kill(signal="SIGKILL")
        print(
            f"SIGKILLed {killed.name} (scheduler job {launcher}), "
            f"which launched {running[0]['metadata']['name']}"
        )
        output = finish(stack, smoke)
    finally:
        smoke.kill()
        stop.set()
        if killed is not None:
            killed.containers[-1].start()  # as its Deployment would recreate it
    print(f"hold pod (phase, airflow-worker) over time: {history}")
    assert smoke.returncode == 0, f"the run did not survive the scheduler's death: {output[-800:]}"
    adopters = {label for phase, label, _ in history if label and label != launcher}
    assert adopters, f"no other scheduler relabelled (adopted) the pod: {dump(history)}"
    assert any(phase == "Running" and label in adopters for phase, label, _ in history), (
        f"the pod was adopted only after it finished, not while it ran: {history}"
    )
    assert not worker_pods(stack, dag_id=FAILOVER_DAG_ID), "worker pods of the drill were left behind"
