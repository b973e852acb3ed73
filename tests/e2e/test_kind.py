"""The real thing on kind: deploy, smoke, an HA drill, a redeploy that changes nothing, teardown.

Written after Airflow's own kind tests (kubernetes-tests/ in apache/airflow): the same
REST flow, 300 s per phase (500 s for the run that loses its scheduler), and a drill that
deletes pods mid-run and still expects success with no worker pods left behind. The
tests run in file order and share one deployment; `invoke` runs as a user would run it.
If this session created the kind cluster, it deletes it at the end.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_ha import REPO_ROOT, cluster, kubeapi, manifests, rollout, smoke
from airflow_ha import deploy as deploying
from airflow_ha.console import Failure
from airflow_ha.polling import poll

from .conftest import KIND_CLUSTER

NAMESPACE = "airflow"
CONTEXT = cluster.kind_context(KIND_CLUSTER)
DAG_ID = "smoke_kubernetes_executor"
PHASE_TIMEOUT = 300
SCHEDULER_FAILURE_TIMEOUT = 500
WORKLOADS = frozenset({"Deployment", "StatefulSet", "Job"})


def invoke(*args: str, timeout: int = 4 * PHASE_TIMEOUT) -> None:
    """Run an invoke task as a user would, showing its output; fail on a non-zero exit."""
    command = [sys.executable, "-m", "invoke", *args]
    result = subprocess.run(command, cwd=REPO_ROOT, timeout=timeout, check=False)
    assert result.returncode == 0, f"`invoke {' '.join(args)}` exited {result.returncode}"


@pytest.fixture(scope="module")
def kind_cluster() -> Iterator[None]:
    existed = KIND_CLUSTER in cluster.kind_clusters()
    yield
    if not existed:
        invoke("teardown", "--cluster")


@pytest.fixture(scope="module")
def kube(kind_cluster: None) -> kubeapi.Kube:
    invoke("deploy", "--timeout", str(PHASE_TIMEOUT))
    return kubeapi.kube_clients(CONTEXT)


@pytest.fixture(scope="module")
def api(kube: kubeapi.Kube) -> Iterator[smoke.AirflowAPI]:
    username, password = smoke.admin_credentials(kube, NAMESPACE)
    with (
        smoke.api_server(kube, NAMESPACE, on_kind=True) as url,
        smoke.AirflowAPI(url, username, password) as client,
    ):
        yield client


def expected_objects() -> set[kubeapi.Key]:
    """What deploy applies to the kind cluster, from the manifests themselves."""
    return {kubeapi.key(m.obj) for m in manifests.render("kind", namespace=NAMESPACE)}


def deployed_inventory(kube: kubeapi.Kube) -> dict[kubeapi.Key, dict[str, Any]]:
    """The labelled objects in the namespace; fails when any rendered object is not among them.

    A listing that sees nothing (a wrong namespace, label or context) would make every check
    over it pass; this makes it fail instead.
    """
    found = deploying.inventory(kube, NAMESPACE, kind_overlay_kinds())
    missing = expected_objects() - set(found)
    assert not missing, f"not in the cluster's inventory: {sorted(missing)}"
    return found


def worker_pods(kube: kubeapi.Kube) -> list[dict[str, Any]]:
    return kubeapi.list_pods(kube, NAMESPACE, {"kubernetes_executor": "True"})


@functools.cache
def kind_overlay_kinds() -> frozenset[tuple[str, str]]:
    """What the kind overlay renders: deploy and teardown list these cluster-scoped kinds too."""
    return frozenset(deploying.kinds_of(manifests.render("kind", namespace=NAMESPACE)))


def applied_state(kube: kubeapi.Kube) -> dict[kubeapi.Key, Any]:
    """What deploy decides about each object: controllers' status updates do not count."""
    state: dict[kubeapi.Key, Any] = {}
    for key, obj in deployed_inventory(kube).items():
        if deploying.owned(obj) or obj["kind"] == "Pod":
            continue
        metadata = obj["metadata"]
        ours = [m for m in metadata.get("managedFields") or [] if m.get("manager") == deploying.FIELD_MANAGER]
        secret = metadata["resourceVersion"] if deploying.generated_secret(obj) else None
        state[key] = (metadata.get("generation"), ours, secret)
    return state


def test_deploy_rolls_out_every_component(kube):
    workloads = {
        k: o for k, o in deployed_inventory(kube).items() if o["kind"] in WORKLOADS and not deploying.owned(o)
    }
    assert {k for k in expected_objects() if k[1] in WORKLOADS} <= set(workloads)
    for key, obj in workloads.items():
        assert rollout.rollout_status(obj)[0] == "done", f"{key}: {rollout.rollout_status(obj)}"


def test_smoke(kube):
    invoke("smoke", "--timeout", str(PHASE_TIMEOUT))

    assert worker_pods(kube) == []


class Poller(threading.Thread):
    """Asks the API for the DAG every half second; records requests that failed even after a retry."""

    def __init__(self, api: smoke.AirflowAPI):
        super().__init__(daemon=True)
        self.api = api
        self.requests = 0
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.requests += 1
            try:
                response = self.api.request("GET", f"/api/v2/dags/{DAG_ID}")
                if not response.is_success:
                    self.failures.append(f"HTTP {response.status_code}: {response.text[:200]}")
            except Failure as failure:
                self.failures.append(str(failure))


def delete_one_pod(kube: kubeapi.Kube, component: str) -> str:
    pods = kubeapi.list_pods(kube, NAMESPACE, {"app.kubernetes.io/component": component})
    assert pods, f"no {component} pod to delete"
    name = pods[0]["metadata"]["name"]
    kube.dynamic.resources.get(api_version="v1", kind="Pod").delete(name=name, namespace=NAMESPACE)
    return name


def wait_rolled_out(kube: kubeapi.Kube, name: str) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
    }
    state = ("waiting", "not read yet")

    def recovered() -> bool | None:
        nonlocal state
        live = kubeapi.read(kube, deployment)
        state = rollout.rollout_status(live) if live else ("waiting", "missing")
        return state[0] == "done" or None

    poll(
        recovered,
        timeout=PHASE_TIMEOUT,
        every=2,
        timed_out=lambda: AssertionError(f"Deployment/{name} did not recover: {state}"),
    )


def test_ha_drill_a_run_survives_losing_a_scheduler_and_an_api_server(kube, api):
    username, password = smoke.admin_credentials(kube, NAMESPACE)
    with smoke.AirflowAPI(api.url, username, password) as polling:
        poller = Poller(polling)
        poller.start()
        try:
            with smoke.PodWatch(kube, NAMESPACE, DAG_ID) as pods:
                api.unpause(DAG_ID, PHASE_TIMEOUT)
                run_id = api.trigger(DAG_ID, smoke.CLUSTER_CONF)
                scheduler = delete_one_pod(kube, "scheduler")
                api_server = delete_one_pod(kube, "api-server")
                print(f"deleted pods {scheduler} and {api_server} during run {run_id}")
                run = smoke.follow_run(api, DAG_ID, run_id, SCHEDULER_FAILURE_TIMEOUT, pods)
                smoke.require_worker_pods(kube, NAMESPACE, pods, run, PHASE_TIMEOUT)
            wait_rolled_out(kube, "airflow-scheduler")
            wait_rolled_out(kube, "airflow-api-server")
        finally:
            poller.done.set()
            poller.join()
    print(f"{poller.requests} polls; {polling.retried + api.retried} requests needed their one retry")
    assert poller.failures == [], "the API failed requests even after one retry"
    assert worker_pods(kube) == []
    smoke.require_logs(api, run)


def test_redeploy_changes_nothing(kube):
    before = applied_state(kube)

    invoke("deploy", "--timeout", str(PHASE_TIMEOUT))

    assert applied_state(kube) == before


def test_teardown_leaves_nothing(kube):
    deployed_inventory(kube)  # an empty listing before would prove nothing after

    invoke("teardown", "--purge", "--timeout", str(PHASE_TIMEOUT))

    left = deploying.belonging(deploying.inventory(kube, NAMESPACE, kind_overlay_kinds()), NAMESPACE)
    assert left == {}, f"left behind: {sorted(kubeapi.ref(obj) for obj in left.values())}"
