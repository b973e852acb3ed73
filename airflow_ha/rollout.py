"""Waiting for workloads to roll out, and saying why one does not.

The rollout rules are kubectl's `rollout status`; the diagnosis reads the pods a
workload selects and fails early on what will not fix itself (an image that cannot be
pulled, a crash loop, a config error), with the pod's events or last log lines.
"""

from __future__ import annotations

from typing import Any

from . import kubeapi
from .console import Failure, Progress
from .kubeapi import Kube, condition
from .manifests import Manifest
from .polling import poll

POLL_SECONDS = 2
PULL_ERRORS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName"})


def wait_ready(kube: Kube, manifest: Manifest, namespace: str, timeout: int, status: Progress) -> None:
    """Wait until a workload is ready, failing early on what will not fix itself."""
    last: list[str] = []

    def ready() -> bool | None:
        live = kubeapi.read(kube, manifest.obj)
        if live is None:
            raise Failure(f"{manifest.ref} disappeared while waiting for it to become ready")
        state, progress = rollout_status(live)
        selector = (live.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
        if state == "done":
            return True
        if state == "failed":
            raise Failure(
                f"{manifest.ref} in namespace {namespace!r}: {progress}{job_logs(kube, namespace, selector)}"
            )
        fatal, problems = diagnose_pods(kube, namespace, selector)
        if fatal:
            raise Failure(f"{manifest.ref} in namespace {namespace!r}: {fatal}")
        last[:] = [progress, *problems]
        status.update(f"waiting for {manifest.ref}: {'; '.join(last)}")
        return None

    poll(
        ready,
        timeout=timeout,
        every=POLL_SECONDS,
        timed_out=lambda: Failure(
            f"{manifest.ref} in namespace {namespace!r} was not ready after {timeout} s: {'; '.join(last)}. "
            "Fix the cause, or raise --timeout if the cluster is only slow"
        ),
    )


def wait_gone(kube: Kube, obj: dict[str, Any], timeout: int) -> None:
    poll(
        lambda: True if kubeapi.read(kube, obj) is None else None,
        timeout=timeout,
        every=POLL_SECONDS,
        timed_out=lambda: Failure(f"{kubeapi.ref(obj)} was still being deleted after {timeout} s"),
    )


def rollout_status(obj: dict[str, Any]) -> tuple[str, str]:
    """("done" | "waiting" | "failed", detail), by kubectl's rollout status rules."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    generation = obj["metadata"].get("generation", 0)
    observed = status.get("observedGeneration", 0)
    desired = spec.get("replicas", 1)
    ready = status.get("readyReplicas", 0)
    kind = obj["kind"]
    if kind == "Job":
        if condition(obj, "Complete"):
            return "done", "complete"
        failed = condition(obj, "Failed")
        if failed:
            return "failed", f"failed: {failed.get('reason', '')} {failed.get('message', '')}".strip()
        return "waiting", f"{status.get('active', 0)} running, {status.get('failed', 0)} failed attempts"
    if observed == 0 or observed < generation:
        return "waiting", "waiting for the controller to observe the new spec"
    if kind == "Deployment":
        progressing = condition(obj, "Progressing", status_value=None)
        if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
            return "failed", f"exceeded its progress deadline: {progressing.get('message', '')}"
        updated = status.get("updatedReplicas", 0)
        available = status.get("availableReplicas", 0)
        if updated < desired:
            return "waiting", f"{updated} of {desired} replicas updated"
        if status.get("replicas", 0) > updated:
            return "waiting", f"{status['replicas'] - updated} old replicas pending termination"
        if available < updated or ready < desired:
            return "waiting", f"{min(available, ready)} of {desired} replicas ready and available"
        return "done", f"{ready}/{desired}"
    if kind == "StatefulSet":
        if (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") != "RollingUpdate":
            return "done", "OnDelete strategy: not tracked"
        if ready < desired:
            return "waiting", f"{ready} of {desired} replicas ready"
        partition = ((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get("partition")
        if partition:
            if status.get("updatedReplicas", 0) < desired - partition:
                return "waiting", "waiting for the partitioned rollout"
        elif status.get("updateRevision") != status.get("currentRevision"):
            return "waiting", "rolling update in progress"
        return "done", f"{ready}/{desired}"
    return "done", "not a workload"


def diagnose_pods(kube: Kube, namespace: str, match_labels: dict[str, str]) -> tuple[str, list[str]]:
    """(a fatal problem or "", other problems) of the pods a workload selects."""
    problems: list[str] = []
    for pod in kubeapi.list_pods(kube, namespace, match_labels):
        name = pod["metadata"]["name"]
        status = pod.get("status") or {}
        for container in [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason", "")
            message = waiting.get("message", "")
            if reason in PULL_ERRORS:
                return (
                    f"pod {name}: container {container['name']} cannot pull image {container.get('image')} "
                    f"({reason}: {message}). On kind the image must be loaded (`kind load docker-image`); "
                    "elsewhere push it to a registry the nodes can reach (--registry)"
                ), problems
            if reason == "CrashLoopBackOff":
                logs = kubeapi.pod_log_tail(kube, namespace, name, container["name"], previous=True)
                return (
                    f"pod {name}: container {container['name']} is in CrashLoopBackOff "
                    f"({container.get('restartCount', 0)} restarts); its last log lines:\n{logs}"
                ), problems
            if reason == "CreateContainerConfigError":
                return f"pod {name}: container {container['name']} cannot start: {message}", problems
        if status.get("phase") == "Pending" and not condition(pod, "PodScheduled"):
            problems.append(f"pod {name} Pending: {scheduling_problem(kube, namespace, pod)}")
    return "", problems


def scheduling_problem(kube: Kube, namespace: str, pod: dict[str, Any]) -> str:
    events = [
        e
        for e in kubeapi.pod_events(kube, namespace, pod["metadata"]["name"])
        if e.get("reason") == "FailedScheduling"
    ]
    if events:
        return f"FailedScheduling: {events[-1].get('message', '').strip()}"
    scheduled = condition(pod, "PodScheduled", status_value=None) or {}
    return scheduled.get("message") or "not scheduled yet"


def job_logs(kube: Kube, namespace: str, match_labels: dict[str, str]) -> str:
    """The last log lines of a Job's most recent failed pod, to show why it failed."""
    failed = [
        p
        for p in kubeapi.list_pods(kube, namespace, match_labels)
        if (p.get("status") or {}).get("phase") == "Failed"
    ]
    if not failed:
        return ""
    pod = max(failed, key=lambda p: p["metadata"].get("creationTimestamp") or "")
    name = pod["metadata"]["name"]
    tail = kubeapi.pod_log_tail(kube, namespace, name, pod["spec"]["containers"][0]["name"])
    return f"\nlast log lines of pod {name}:\n{tail}"
