"""The KubernetesExecutor's worker pods of one DAG: watched during a run, checked afterwards.

A thread lists the pods, then watches them from that list's resourceVersion. After a
watch error (410 Gone, a dropped connection) it lists again; a pod that the new list no
longer holds was deleted while nobody watched, so it counts as deleted.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from . import PART_OF, PART_OF_LABEL, kubeapi
from .console import Failure, console, progress
from .dag_run import Run, describe, instance_key
from .kubeapi import Kube
from .polling import poll

POLL_SECONDS = 2
WATCH_SECONDS = 5  # each watch request ends after this, so stopping the watch never waits long
LIST_TIMEOUT = 60


@dataclass
class WorkerPod:
    name: str
    labels: dict[str, str]
    phase: str
    deleted: bool = False


@dataclass
class PodWatch:
    """Records the worker pods of one DAG through the Kubernetes watch API, in a thread."""

    kube: Kube
    namespace: str
    dag_id: str
    pods: dict[str, WorkerPod] = field(default_factory=dict)
    error: str = ""

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._listed = threading.Event()
        self._refused: kubeapi.Forbidden | None = None
        self._thread = threading.Thread(target=self._run, name="worker-pod-watch", daemon=True)
        self.labels = {"kubernetes_executor": "True", "dag_id": safe_label(self.dag_id)}
        self.selector = ",".join(f"{k}={v}" for k, v in self.labels.items())

    def __enter__(self) -> PodWatch:
        self._thread.start()
        if not self._listed.wait(timeout=LIST_TIMEOUT) or self._refused:
            self._stop.set()
            if self._refused:
                raise self._refused
            raise Failure(
                f"cannot list the worker pods in namespace {self.namespace!r}: {self.error or 'timed out'}"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * WATCH_SECONDS)

    def pod_for(self, task_instance: dict[str, Any], run_id: str) -> WorkerPod | None:
        wanted = expected_labels(self.dag_id, run_id, task_instance)
        matches = [p for p in list(self.pods.values()) if wanted.items() <= p.labels.items()]
        # A pod that failed to start is followed by another for the same try: the one that ran.
        ran = [p for p in matches if p.phase != "Failed"]
        return (ran or matches)[-1] if matches else None

    def _run(self) -> None:
        from kubernetes import watch

        resource = kubeapi.resource_of(self.kube, "v1", "Pod")
        version = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._relist(resource)
                    self._listed.set()
                with kubeapi.refused_as_failure(self.kube, "watch", resource, self.namespace):
                    for event in resource.watch(
                        namespace=self.namespace,
                        label_selector=self.selector,
                        resource_version=version,
                        timeout=WATCH_SECONDS,
                        watcher=watch.Watch(),
                    ):
                        pod = event["raw_object"]
                        version = pod["metadata"]["resourceVersion"]
                        self._record(event["type"], pod)
                        if self._stop.is_set():
                            break
            except kubeapi.Forbidden as refused:  # no retry brings a missing right
                self.error = str(refused)
                self._refused = refused
                self._listed.set()
                return
            except Exception as error:  # 410 Gone, a dropped connection: list again and go on
                self.error = f"{type(error).__name__}: {error}"
                version = None
                self._stop.wait(POLL_SECONDS)

    def _relist(self, resource: Any) -> str:
        """List the pods; a known pod missing from the list was deleted unseen. Returns its version."""
        listed = kubeapi.list_objects(self.kube, resource, self.namespace, label_selector=self.selector)
        present = set()
        for pod in listed.get("items") or []:
            present.add(pod["metadata"]["name"])
            self._record("ADDED", pod)
        for name, known in list(self.pods.items()):
            if name not in present:
                known.deleted = True
        return str(listed["metadata"]["resourceVersion"])

    def _record(self, event_type: str, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        phase = _phase(pod)
        known = self.pods.get(name)
        self.pods[name] = WorkerPod(
            name,
            dict(pod["metadata"].get("labels") or {}),
            phase,
            deleted=event_type == "DELETED" or bool(known and known.deleted),
        )


def safe_label(value: str) -> str:
    """A label value as KubernetesExecutor writes it (it shortens and hashes unsafe ones)."""
    from airflow.providers.cncf.kubernetes.pod_generator import make_safe_label_value

    return str(make_safe_label_value(value))


def expected_labels(dag_id: str, run_id: str, task_instance: dict[str, Any]) -> dict[str, str]:
    """The labels KubernetesExecutor puts on the worker pod of one task instance."""
    labels = {
        "kubernetes_executor": "True",
        "dag_id": safe_label(dag_id),
        "task_id": safe_label(task_instance["task_id"]),
        "run_id": safe_label(run_id),
        "try_number": str(task_instance["try_number"]),
    }
    if task_instance["map_index"] >= 0:
        labels["map_index"] = str(task_instance["map_index"])
    return labels


def require_worker_pods(kube: Kube, namespace: str, pods: PodWatch, run: Run, timeout: float) -> None:
    """One executor-made pod per task instance, seen during the run, and all of them gone afterwards."""
    run_id, dag_id = run.run_id, run.dag_id
    mine: dict[tuple[str, int, int], WorkerPod] = {}
    for ti in run.task_instances:
        pod = pods.pod_for(ti, run_id)
        if pod is None:
            watch_error = f" Watch error: {pods.error}" if pods.error else ""
            raise Failure(
                f"task {describe(instance_key(ti))} succeeded, but no worker pod with the "
                f"labels {expected_labels(dag_id, run_id, ti)} was seen in namespace {namespace!r}: "
                f"did the scheduler run KubernetesExecutor?{watch_error}"
            )
        if "airflow-worker" not in pod.labels:
            raise Failure(
                f"pod {pod.name} lacks the airflow-worker label: KubernetesExecutor did not create it"
            )
        shared = [key for key, other in mine.items() if other.name == pod.name]
        if shared:
            raise Failure(
                f"task instances {describe(shared[0])} and {describe(instance_key(ti))} both map to "
                f"worker pod {pod.name}: each task instance must run in its own pod"
            )
        mine[instance_key(ti)] = pod
    console.print(
        f"[green]✓[/] each task ran in its own worker pod: {', '.join(p.name for p in mine.values())}"
    )

    selector = {**pods.labels, "run_id": safe_label(run_id)}
    ran = {pod.name for pod in mine.values()}
    left: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []

    def all_deleted() -> bool | None:
        listed = kubeapi.list_pods(kube, namespace, selector)
        # Failed pods that ran none of the run's task instances stay, as
        # [kubernetes_executor] delete_worker_pods_on_failure=False keeps them for inspection.
        kept[:] = [p for p in listed if _phase(p) == "Failed" and p["metadata"]["name"] not in ran]
        left[:] = [p for p in listed if p not in kept]
        # The watch replaces a pod's record on each event: read the latest, not the one held above.
        mine.update({key: pods.pods.get(pod.name, pod) for key, pod in mine.items()})
        return True if all(pod.deleted for pod in mine.values()) and not left else None

    def still_there() -> Failure:
        remaining = [f"{p['metadata']['name']} ({(p.get('status') or {}).get('phase')})" for p in left]
        return Failure(
            f"worker pods of run {run_id} still exist after {timeout:.0f} s: "
            f"{', '.join(remaining) or ', '.join(p.name for p in mine.values() if not p.deleted)}. "
            "Is [kubernetes_executor] delete_worker_pods on?"
        )

    with progress("waiting for the worker pods to be deleted"):
        poll(all_deleted, timeout=timeout, every=POLL_SECONDS, timed_out=still_there)
    console.print("[green]✓[/] every worker pod was deleted after its task")
    for kept_pod in kept:
        labels = kept_pod["metadata"].get("labels") or {}
        console.print(
            f"[yellow]![/] kept failed pod {kept_pod['metadata']['name']} (task {labels.get('task_id')}, "
            f"try {labels.get('try_number')}): {failure_reason(kept_pod)}; Airflow ran that task in another "
            "pod. delete_worker_pods_on_failure=False keeps such pods for inspection; delete them when done",
            highlight=False,
        )


def _phase(pod: dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "Unknown")


def failure_reason(pod: dict[str, Any]) -> str:
    """Why a pod failed, as its containers' last states say, in one line."""
    status = pod.get("status") or {}
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        ended = (container.get("state") or {}).get("terminated") or {}
        if ended.get("exitCode"):
            said = f"{container['name']} {ended.get('reason')} (exit {ended['exitCode']})"
            message = " ".join(str(ended.get("message") or "").split())
            return f"{said}: {message}" if message else said
    return str(status.get("reason") or status.get("message") or "no container says why")


def cluster_diagnostics(kube: Kube, namespace: str, pods: PodWatch) -> str:
    """Worker pods with their phase and events, then the schedulers' last log lines."""
    lines = ["", "worker pods of this DAG seen during the run:"]
    for pod in list(pods.pods.values()):
        state = f"{pod.phase}{', deleted' if pod.deleted else ''}"
        lines.append(f"  {pod.name} task={pod.labels.get('task_id')} run={pod.labels.get('run_id')}: {state}")
        try:
            events = kubeapi.pod_events(kube, namespace, pod.name)
        except (ApiException, Failure):
            events = []
        lines.extend(
            f"    {e.get('type')} {e.get('reason')}: {(e.get('message') or '').strip()}" for e in events
        )
    if len(lines) == 2:
        lines.append("  none: the executor created no worker pod for it")
    if pods.error:
        lines.append(f"  (last watch error: {pods.error})")
    return "\n".join(lines) + component_logs(kube, namespace, "scheduler")


def component_logs(kube: Kube, namespace: str, component: str) -> str:
    """The last log lines of every pod of one component, for diagnostics."""
    selector = {PART_OF_LABEL: PART_OF, "app.kubernetes.io/component": component}
    try:
        found = kubeapi.list_pods(kube, namespace, selector)
    except ApiException as error:
        return f"\n(cannot list the {component} pods: {kubeapi.api_message(error)})"
    except Failure as failure:
        return f"\n(cannot list the {component} pods: {failure})"
    parts = []
    for pod in found:
        name = pod["metadata"]["name"]
        container = pod["spec"]["containers"][0]["name"]
        tail = kubeapi.pod_log_tail(kube, namespace, name, container)
        parts.append(f"\nlast log lines of {component} pod {name}:\n{tail}")
    return "".join(parts)
