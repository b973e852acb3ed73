"""Every flow `invoke lint --flows` judges, tried for real on the cluster.

One probe pod per source stands in for it: the source's labels, in its namespace (a
namespace of its own for "pods of other namespaces"), running the deployed image. It opens
a TCP connection to each destination: a live pod's address for a pod, the ``kubernetes``
Service for the API. UDP has no connection to open, so UDP ports are not tried.

A probe pod carries the labels Services select on, so it has a readiness gate that nothing
sets: it never becomes a Service endpoint. NetworkPolicy engines program a new pod a moment
after it starts, so required flows are retried for a while, and forbidden flows are tried
only after that start-up time.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from kubernetes.dynamic.exceptions import NotFoundError

from airflow_ha import kubeapi
from airflow_ha.lint.checks import reachability
from airflow_ha.lint.netpol import Endpoint
from airflow_ha.polling import poll

SETTLE_SECONDS = 5
RETRY_SECONDS = 30
NEVER_READY = "airflow-ha.e2e/never-ready"

PROBE = """
import json, socket, sys, time
targets, settle, retry = json.loads(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
time.sleep(settle)
def connects(host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return True
    except OSError:
        return False
results = {}
for key, (host, port, required) in targets.items():
    deadline = time.monotonic() + (retry if required else 0)
    results[key] = connects(host, port)
    while required and not results[key] and time.monotonic() < deadline:
        time.sleep(1)
        results[key] = connects(host, port)
print("RESULTS " + json.dumps(results))
"""


@dataclass(frozen=True)
class Outcome:
    """One flow on one TCP port: what the lint gate says, and what the cluster did."""

    source: str
    destination: str
    port: int
    purpose: str
    required: bool
    lint_allows: bool
    cluster_allows: bool

    def line(self) -> str:
        word = {True: "allowed", False: "denied"}
        return (
            f"{self.source} -> {self.destination}:{self.port} ({self.purpose}): must be "
            f"{word[self.required]}; lint says {word[self.lint_allows]}, "
            f"the cluster {word[self.cluster_allows]}"
        )


def address(kube: kubeapi.Kube, destination: Endpoint, port: int) -> tuple[str, int]:
    if not destination.is_pod:
        return "kubernetes.default.svc", 443  # the API server, as in-cluster clients reach it
    running = [
        pod
        for pod in kubeapi.list_pods(kube, str(destination.namespace), dict(destination.labels))
        if pod["status"].get("phase") == "Running" and pod["status"].get("podIP")
    ]
    assert running, f"no running pod of {destination.name} to connect to"
    return running[0]["status"]["podIP"], port


def probe_pod(name: str, source: Endpoint, image: str, targets: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": source.namespace, "labels": dict(source.labels)},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "readinessGates": [{"conditionType": NEVER_READY}],
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 50000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "probe",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": [
                        "python",
                        "-c",
                        PROBE,
                        json.dumps(targets),
                        str(SETTLE_SECONDS),
                        str(RETRY_SECONDS),
                    ],
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "32Mi"},
                        "limits": {"cpu": "200m", "memory": "64Mi"},
                    },
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def finish(kube: kubeapi.Kube, pod: dict[str, Any], timeout: float) -> dict[str, bool]:
    """Wait for a probe pod to end; its results, by target key."""
    pods = kube.dynamic.resources.get(api_version="v1", kind="Pod")
    name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]

    def finished() -> str | None:
        phase = pods.get(name=name, namespace=namespace).status.phase
        return phase if phase in ("Succeeded", "Failed") else None

    phase = poll(
        finished, timeout=timeout, every=1, timed_out=lambda: AssertionError(f"{name} did not finish")
    )
    # Unparsed: the client would turn a log that is not JSON into the repr of its bytes.
    log = kube.core.read_namespaced_pod_log(name, namespace, _preload_content=False).data.decode()
    assert phase == "Succeeded", f"probe pod {name} {phase}: {log[-2000:]}"
    line = next(line for line in log.splitlines() if line.startswith("RESULTS "))
    return dict(json.loads(line.removeprefix("RESULTS ")))


def outcomes(
    kube: kubeapi.Kube, objects: list[Any], template: Any, image: str, outsider_namespace: str
) -> list[Outcome]:
    """Every TCP flow the lint gate judges for these rendered objects, tried on the cluster."""
    by_source: dict[str, tuple[Endpoint, list[tuple[reachability.Judged, int, bool]]]] = {}
    for judged in reachability.judge(objects, template):
        for (port, protocol), verdict in zip(judged.flow.ports, judged.verdicts, strict=True):
            if protocol == "TCP":
                tried_from = by_source.setdefault(judged.flow.source.name, (judged.flow.source, []))[1]
                tried_from.append((judged, port, verdict.allowed))
    started = time.monotonic()
    pods = kube.dynamic.resources.get(api_version="v1", kind="Pod")
    probes = []
    found = []
    try:
        for index, (source, tried) in enumerate(by_source.values()):
            if source.namespace == reachability.OTHER_NAMESPACE:
                source = Endpoint(source.name, outsider_namespace, source.labels)
            targets = {}
            for number, (judged, port, _) in enumerate(tried):
                host, real_port = address(kube, judged.flow.destination, port)
                targets[str(number)] = (host, real_port, judged.flow.required)
            pod = probe_pod(f"flow-probe-{index}", source, image, targets)
            pods.create(body=pod, namespace=source.namespace)
            probes.append((pod, tried))
        for pod, tried in probes:
            results = finish(kube, pod, timeout=180)
            for number, (judged, port, lint_allows) in enumerate(tried):
                found.append(
                    Outcome(
                        judged.flow.source.name,
                        judged.flow.destination.name,
                        port,
                        judged.flow.purpose,
                        judged.flow.required,
                        lint_allows,
                        results[str(number)],
                    )
                )
    finally:
        for pod, _ in probes:  # a probe pod carries a component's labels: none may outlive the test
            name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
            with contextlib.suppress(NotFoundError):
                pods.delete(name=name, namespace=namespace, body={"gracePeriodSeconds": 0})
    print(
        f"  {len(found)} flows from {len(probes)} probe pods in {time.monotonic() - started:.0f} s",
        flush=True,
    )
    return found
