"""Smoke DAG: proves that KubernetesExecutor ran every task in its own worker pod.

Each task records where it ran: its hostname (the pod name) and whether Airflow marked
the process as a KubernetesExecutor worker pod (``AIRFLOW_IS_K8S_EXECUTOR_POD``, which
the executor sets on every pod it creates). The last task asserts that every task ran
in a distinct host carrying that mark.

Outside a cluster, for example ``airflow dags test``, there are no executor pods, so
the assertion is relaxed by the ``require_executor_pods`` param::

    airflow dags test smoke_kubernetes_executor -c '{"require_executor_pods": false}'
"""

from __future__ import annotations

import os
import socket
from datetime import datetime
from typing import Any

from airflow.sdk import Param, dag, task
from kubernetes.client import models as k8s

# A per-task pod override, as a user would give one: this task asks for less. It replaces the
# template's whole resources, so its limits must still fit every overlay's worker pod budget
# (tests/test_dag.py): the okteto namespace's quota refuses a pod whose limits exceed it.
SMALL_WORKER = {
    "pod_override": k8s.V1Pod(
        spec=k8s.V1PodSpec(
            containers=[
                k8s.V1Container(
                    name="base",
                    resources=k8s.V1ResourceRequirements(
                        requests={"cpu": "100m", "memory": "192Mi"},
                        limits={"cpu": "400m", "memory": "384Mi"},
                    ),
                )
            ]
        )
    )
}


def where_this_runs() -> dict[str, str]:
    return {
        "hostname": socket.gethostname(),
        "executor_pod": os.environ.get("AIRFLOW_IS_K8S_EXECUTOR_POD", ""),
    }


@dag(
    dag_id="smoke_kubernetes_executor",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["smoke"],
    params={"require_executor_pods": Param(True, type="boolean")},
)
def smoke_kubernetes_executor() -> None:
    @task
    def produce() -> dict[str, Any]:
        return {"value": 21, "ran_in": where_this_runs()}

    @task(executor_config=SMALL_WORKER)
    def double(produced: dict[str, Any]) -> dict[str, Any]:
        return {"value": produced["value"] * 2, "ran_in": [produced["ran_in"], where_this_runs()]}

    @task
    def assert_ran_in_executor_pods(doubled: dict[str, Any], params: dict[str, Any] | None = None) -> None:
        assert doubled["value"] == 42, f"XCom did not pass between tasks: {doubled!r}"
        hosts = [*doubled["ran_in"], where_this_runs()]
        print("tasks ran in:", hosts)
        if not (params or {}).get("require_executor_pods", True):
            return
        hostnames = [host["hostname"] for host in hosts]
        assert len(set(hostnames)) == len(hostnames), f"tasks shared a host: {hostnames}"
        not_pods = [host["hostname"] for host in hosts if host["executor_pod"] != "True"]
        assert not not_pods, f"not KubernetesExecutor worker pods: {not_pods}"

    assert_ran_in_executor_pods(double(produce()))


smoke_kubernetes_executor()
