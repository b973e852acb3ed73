"""Stand-in workload controllers, opt-in (`Emulator(controllers=True)`): NOT Kubernetes' controllers.

After each write of a Deployment, StatefulSet or Job, its status says what the real
controllers say once every pod is up: observedGeneration = generation and every replica
ready and updated (a StatefulSet's currentRevision = updateRevision, named from a hash of
its pod template); a Job gets a `Complete` condition. It marks workloads ready WITHOUT
running their pods: no Pod or ReplicaSet is created, nothing is scheduled, no container
starts. So it lets a test prove the API calls, RBAC, idempotence and teardown of whatever
waits for rollouts (`invoke deploy`), never that pods start, fit their resources or pass
their probes (the rehearsal `nox -s stack` and kind prove that). The executor rehearsal
runs real containers for its pods and must not use it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .store import ApiError, Obj, Resource, Store, now

WORKLOADS = frozenset({"Deployment", "StatefulSet", "Job"})


def reconcile(store: Store, resource: Resource, namespace: str, name: str) -> None:
    """Write the ready status of one workload, unless it has it already (then nothing is stored)."""
    if resource.kind not in WORKLOADS:
        return
    try:
        obj = store.get(resource, namespace, name)
    except ApiError:
        return  # deleted meanwhile
    current = obj.get("status") or {}
    wanted = {**current, **ready_status(obj)}
    if wanted != current:
        store.update(resource, namespace, name, {"metadata": {}, "status": wanted}, "status")


def ready_status(obj: Obj) -> dict[str, Any]:
    spec = obj.get("spec") or {}
    if obj["kind"] == "Job":
        if any(c.get("type") == "Complete" for c in (obj.get("status") or {}).get("conditions") or []):
            return {}
        at = now()
        complete = {"type": "Complete", "status": "True", "lastProbeTime": at, "lastTransitionTime": at}
        return {
            "conditions": [complete],
            "succeeded": spec.get("completions", 1),
            "startTime": at,
            "completionTime": at,
        }
    replicas = spec.get("replicas", 1)
    status: dict[str, Any] = {
        "observedGeneration": obj["metadata"]["generation"],
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
    }
    if obj["kind"] == "StatefulSet":
        template = json.dumps(spec.get("template") or {}, sort_keys=True).encode()
        revision = f"{obj['metadata']['name']}-{hashlib.sha256(template).hexdigest()[:10]}"
        status.update(currentReplicas=replicas, currentRevision=revision, updateRevision=revision)
    return status
