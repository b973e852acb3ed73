"""`invoke drill`: prove the deployment highly available by breaking it while tasks run.

Three steps, each timed and judged on its own, against the deployment as it runs:

- scheduler: while a long task runs, force-delete the scheduler pod whose executor launched
  that task's worker pod (grace period 0); the other scheduler must adopt the worker pod,
  and the run must succeed;
- api-server: while the smoke DAG runs, delete one api-server pod; the tasks must keep
  reaching the Execution API through the Service, the REST API must keep answering
  (one retry allowed per request), and the run must succeed;
- drain: cordon the worker node that runs the most Airflow pods (not the database's: see
  busiest_node) and evict its pods through the Eviction API, so that PodDisruptionBudgets
  decide; the API must keep answering, the Deployments must be whole again elsewhere, and a
  run must succeed; the node is uncordoned afterwards, whatever happened.

A step that fails says why and the drill goes on to the next; the drill then exits non-zero,
naming the steps that failed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from . import PART_OF, PART_OF_LABEL, cluster, kubeapi, rollout, smoke
from .console import Failure, console, progress
from .kubeapi import Kube
from .polling import poll
from .worker_pods import PodWatch, require_worker_pods, safe_label

STEPS = ("scheduler", "api-server", "drain")
LONG_DAG_ID = "failover_long_task"
POLL_SECONDS = 0.5
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
COMPONENT_LABEL = "app.kubernetes.io/component"


@dataclass
class StepResult:
    step: str
    passed: bool
    seconds: float
    detail: str


class ApiPoller(threading.Thread):
    """Asks the REST API for a DAG twice a second; records the requests that failed after their retry."""

    def __init__(self, api: smoke.AirflowAPI, dag_id: str):
        super().__init__(name="api-poller", daemon=True)
        self.api, self.dag_id = api, dag_id
        self.requests = 0
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(POLL_SECONDS):
            self.requests += 1
            try:
                response = self.api.request("GET", f"/api/v2/dags/{self.dag_id}")
                if not response.is_success:
                    self.failures.append(f"HTTP {response.status_code}: {response.text[:200]}")
            except Failure as failure:
                self.failures.append(str(failure))

    def summary(self) -> str:
        return f"{self.requests} API requests, {len(self.failures)} failed after one retry"


@contextmanager
def polling(url: str, username: str, password: str, dag_id: str) -> Iterator[ApiPoller]:
    with smoke.AirflowAPI(url, username, password) as api:
        poller = ApiPoller(api, dag_id)
        poller.start()
        try:
            yield poller
        finally:
            poller.done.set()
            poller.join()


@dataclass
class LabelHistory:
    """(monotonic time, phase, airflow-worker label) of one task's worker pod, as it changes."""

    kube: Kube
    namespace: str
    labels: dict[str, str]
    changes: list[tuple[float, str, str]] = field(default_factory=list)

    def follow(self, stop: threading.Event) -> None:
        while not stop.wait(1):
            try:
                pods = kubeapi.list_pods(self.kube, self.namespace, self.labels)
            except Failure:
                continue
            for pod in pods:
                entry = (pod["status"].get("phase", ""), pod["metadata"]["labels"].get("airflow-worker", ""))
                if not self.changes or self.changes[-1][1:] != entry:
                    self.changes.append((time.monotonic(), *entry))


def drill(
    *,
    context: str | None,
    kind_cluster: str,
    namespace: str,
    dag_id: str,
    timeout: int,
    long_task_seconds: int,
    steps: list[str],
) -> list[StepResult]:
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        raise Failure(f"no drill step {', '.join(unknown)}: the steps are {', '.join(STEPS)}")
    target = cluster.check_context(context, kind_cluster)
    kube = kubeapi.kube_clients(target)
    username, password = smoke.admin_credentials(kube, namespace)
    on_kind = cluster.is_kind(target, kind_cluster)
    results = []
    with (
        smoke.api_server(kube, namespace, on_kind=on_kind) as url,
        smoke.AirflowAPI(url, username, password) as api,
    ):
        for step in (s for s in STEPS if s in steps):
            console.print(f"[bold]drill: {step}[/]")
            started = time.monotonic()
            try:
                if step == "scheduler":
                    detail = kill_launching_scheduler(kube, api, namespace, timeout, long_task_seconds)
                elif step == "api-server":
                    detail = delete_an_api_server(
                        kube, api, url, (username, password), namespace, dag_id, timeout
                    )
                else:
                    detail = drain_a_node(kube, api, url, (username, password), namespace, dag_id, timeout)
                result = StepResult(step, True, time.monotonic() - started, detail)
            except Failure as failure:
                result = StepResult(step, False, time.monotonic() - started, str(failure))
            results.append(result)
            mark = "[green]PASS[/]" if result.passed else "[red]FAIL[/]"
            console.print(
                f"{mark} {step} ({result.seconds:.0f} s): {result.detail}", markup=True, highlight=False
            )
    failed = [r.step for r in results if not r.passed]
    if failed:
        raise Failure(f"drill failed at: {', '.join(failed)}")
    return results


def kill_launching_scheduler(
    kube: Kube, api: smoke.AirflowAPI, namespace: str, timeout: int, hold: int
) -> str:
    api.unpause(LONG_DAG_ID, timeout)
    run_id = api.trigger(LONG_DAG_ID, {"seconds": hold})
    labels = {"kubernetes_executor": "True", "dag_id": safe_label(LONG_DAG_ID), "task_id": "hold"}
    history = LabelHistory(kube, namespace, {**labels, "run_id": safe_label(run_id)})
    stop = threading.Event()
    follower = threading.Thread(target=history.follow, args=(stop,), daemon=True)
    follower.start()
    try:
        with progress(f"waiting for the hold task of run {run_id} to run in its worker pod"):
            running = poll(
                lambda: (
                    [p for p in kubeapi.list_pods(kube, namespace, history.labels) if _running(p)] or None
                ),
                timeout=timeout,
                every=1,
                timed_out=lambda: Failure(f"the hold task of run {run_id} did not start within {timeout} s"),
            )
        launcher = running[0]["metadata"]["labels"].get("airflow-worker", "")
        host = scheduler_hosts(api).get(launcher)
        if host is None:
            raise Failure(
                f"worker pod {running[0]['metadata']['name']}: airflow-worker={launcher} is no live scheduler"
            )
        delete_pod(kube, namespace, host, grace_period=0)
        killed_at = time.monotonic()
        console.print(
            f"  force-deleted scheduler pod {host} (job {launcher}), "
            f"which launched {running[0]['metadata']['name']}"
        )
        run = smoke.follow_run(api, LONG_DAG_ID, run_id, timeout + hold)
        succeeded = time.monotonic() - killed_at
    finally:
        stop.set()
        follower.join()
    adopted = next((t for t, _, label in history.changes if label and label != launcher), None)
    if adopted is None:
        raise Failure(f"no other scheduler adopted the worker pod: {history.changes}")
    wait_rolled_out(kube, namespace, "scheduler", timeout)
    return (
        f"the other scheduler adopted the worker pod {adopted - killed_at:.0f} s after the kill "
        f"(within a second); run {run.run_id} succeeded {succeeded:.0f} s after it"
    )


def delete_an_api_server(
    kube: Kube,
    api: smoke.AirflowAPI,
    url: str,
    credentials: tuple[str, str],
    namespace: str,
    dag_id: str,
    timeout: int,
) -> str:
    with polling(url, *credentials, dag_id) as poller, PodWatch(kube, namespace, dag_id) as pods:
        api.unpause(dag_id, timeout)
        run_id = api.trigger(dag_id, smoke.CLUSTER_CONF)
        poll(
            lambda: bool(pods.pods) or None,
            timeout=timeout,
            every=1,
            timed_out=lambda: Failure(f"no worker pod of run {run_id} within {timeout} s"),
        )
        victim = component_pods(kube, namespace, "api-server")[-1]["metadata"]["name"]
        delete_pod(kube, namespace, victim)
        deleted_at = time.monotonic()
        console.print(f"  deleted api-server pod {victim} while run {run_id} ran")
        run = smoke.follow_run(api, dag_id, run_id, timeout, pods)
        require_worker_pods(kube, namespace, pods, run, timeout)
        recovered = wait_rolled_out(kube, namespace, "api-server", timeout) - deleted_at
    if poller.failures:
        raise Failure(f"{poller.summary()}: {poller.failures[:3]}")
    return (
        f"run {run.run_id} succeeded; the api-server Deployment was whole {recovered:.0f} s after; "
        f"{poller.summary()}"
    )


def drain_a_node(
    kube: Kube,
    api: smoke.AirflowAPI,
    url: str,
    credentials: tuple[str, str],
    namespace: str,
    dag_id: str,
    timeout: int,
) -> str:
    node = busiest_node(kube, namespace)
    nodes = kube.dynamic.resources.get(api_version="v1", kind="Node")
    nodes.patch(
        body={"spec": {"unschedulable": True}}, name=node, content_type="application/merge-patch+json"
    )
    started = time.monotonic()
    try:
        with polling(url, *credentials, dag_id) as poller:
            refusals = evict_all(kube, node, timeout)
            drained = time.monotonic() - started
            for component in ("api-server", "scheduler", "triggerer", "dag-processor"):
                wait_rolled_out(kube, namespace, component, timeout)
            whole = time.monotonic() - started
            with PodWatch(kube, namespace, dag_id) as pods:
                run = smoke.run_dag(api, dag_id, smoke.CLUSTER_CONF, timeout, pods)
                require_worker_pods(kube, namespace, pods, run, timeout)
    finally:
        nodes.patch(
            body={"spec": {"unschedulable": False}}, name=node, content_type="application/merge-patch+json"
        )
    if poller.failures:
        raise Failure(f"while draining {node}: {poller.summary()}: {poller.failures[:3]}")
    return (
        f"drained {node} in {drained:.0f} s ({refusals} evictions refused by a PodDisruptionBudget first), "
        f"every Deployment whole after {whole:.0f} s, run {run.run_id} succeeded; {poller.summary()}"
    )


def busiest_node(kube: Kube, namespace: str) -> str:
    """The worker node that runs the most Airflow pods, the database's node excepted.

    PostgreSQL is one replica on a volume of its node (local-path on kind): drained, it could
    run nowhere else, and Airflow would stop until the node came back. That is a limit of a
    single database, which a drill cannot change, so the drill drains another node.
    """
    pods = kubeapi.list_pods(kube, namespace, {PART_OF_LABEL: PART_OF})
    nodes = kube.dynamic.resources.get(api_version="v1", kind="Node").get().to_dict()["items"]
    workers = {
        n["metadata"]["name"]
        for n in nodes
        if CONTROL_PLANE_LABEL not in (n["metadata"].get("labels") or {})
        and not n["spec"].get("unschedulable")
    }
    database = {
        p["spec"].get("nodeName") for p in pods if p["metadata"]["labels"].get(COMPONENT_LABEL) == "database"
    }
    candidates = workers - database
    if len(workers) < 2 or not candidates:
        raise Failure(
            f"draining needs a worker node without the database and another one for its pods to go to; "
            f"this cluster has {len(workers)} worker nodes, {len(workers & database)} of them with the "
            "database"
        )
    counts = {name: sum(p["spec"].get("nodeName") == name for p in pods) for name in candidates}
    return max(sorted(counts), key=lambda name: counts[name])


def evict_all(kube: Kube, node: str, timeout: int) -> int:
    """Evict every pod on the node but DaemonSet and mirror pods, as `kubectl drain` does; the
    number of evictions a PodDisruptionBudget refused (and that were retried)."""
    listed = kube.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
    pods = [
        p
        for p in listed
        if not any(o.kind == "DaemonSet" for o in p.metadata.owner_references or [])
        and "kubernetes.io/config.mirror" not in (p.metadata.annotations or {})
        and p.status.phase not in ("Succeeded", "Failed")
    ]
    refused = 0
    deadline = time.monotonic() + timeout
    with progress(f"evicting {len(pods)} pods from {node}") as status:
        pending = list(pods)
        while pending:
            pod = pending.pop(0)
            body = {"metadata": {"name": pod.metadata.name, "namespace": pod.metadata.namespace}}
            try:
                kube.core.create_namespaced_pod_eviction(pod.metadata.name, pod.metadata.namespace, body)
                console.print(f"  evicted {pod.metadata.namespace}/{pod.metadata.name}")
            except ApiException as error:
                if error.status == 404:
                    continue
                if error.status != 429:
                    raise Failure(
                        f"cannot evict {pod.metadata.name}: {error.status} {error.reason}"
                    ) from None
                refused += 1
                if time.monotonic() > deadline:
                    raise Failure(
                        f"{pod.metadata.namespace}/{pod.metadata.name} could not be evicted within "
                        f"{timeout} s: its PodDisruptionBudget never allowed it (are its other replicas "
                        "Ready elsewhere?)"
                    ) from None
                status.update(f"{pod.metadata.name}: a PodDisruptionBudget refuses its eviction for now")
                pending.append(pod)
                time.sleep(2)
    return refused


def scheduler_hosts(api: smoke.AirflowAPI) -> dict[str, str]:
    """Live SchedulerJob id -> its hostname's first label (the pod name)."""
    jobs = api.get("/api/v2/jobs", params={"job_type": "SchedulerJob", "is_alive": True, "limit": 100})
    return {str(job["id"]): str(job["hostname"]).split(".")[0] for job in jobs["jobs"]}


def component_pods(kube: Kube, namespace: str, component: str) -> list[dict[str, Any]]:
    labelled = kubeapi.list_pods(kube, namespace, {PART_OF_LABEL: PART_OF, COMPONENT_LABEL: component})
    # The Deployment's pods only: anything else may carry its labels.
    pods = [
        p
        for p in labelled
        if any(o["kind"] == "ReplicaSet" for o in p["metadata"].get("ownerReferences") or [])
    ]
    if not pods:
        raise Failure(f"no {component} pod in namespace {namespace!r}: run `invoke deploy` first")
    return sorted(pods, key=lambda p: p["metadata"]["name"])


def delete_pod(kube: Kube, namespace: str, name: str, grace_period: int | None = None) -> None:
    body = {} if grace_period is None else {"gracePeriodSeconds": grace_period}
    kube.dynamic.resources.get(api_version="v1", kind="Pod").delete(name=name, namespace=namespace, body=body)


def wait_rolled_out(kube: Kube, namespace: str, component: str, timeout: int) -> float:
    """Wait until the component's Deployment is whole again; the time it was."""
    name = f"airflow-{component}"
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
    }
    state = ("waiting", "not read yet")

    def whole() -> bool | None:
        nonlocal state
        live = kubeapi.read(kube, deployment)
        state = rollout.rollout_status(live) if live else ("waiting", "missing")
        return state[0] == "done" or None

    poll(
        whole,
        timeout=timeout,
        every=2,
        timed_out=lambda: Failure(f"Deployment/{name} is not whole again: {state}"),
    )
    return time.monotonic()


def _running(pod: dict[str, Any]) -> bool:
    return pod["status"].get("phase") == "Running"
