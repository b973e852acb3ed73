"""The drill's drain against the REAL API server (tests/controlplane): the Eviction API, with
the disruption controller judging a PodDisruptionBudget.

There is no kubelet. The pods are bound to a Node object by name and their Running and Ready
status is written through the status subresource, as a kubelet would; an evicted pod then
stays terminating, which is what a PodDisruptionBudget counts as gone.

The budgets here say ``minAvailable: 1`` over pods that no controller owns; the deployment's
say ``maxUnavailable: 1``, for which the disruption controller reads the owning controller's
scale. That lookup is not exercised here: e2e drains the real Deployments on kind.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from controlplane.plane import ControlPlane

from airflow_ha import drill, kubeapi
from airflow_ha.console import Failure
from airflow_ha.polling import poll

NAMESPACE = "team-drain"
LABELS = {"app.kubernetes.io/component": "api-server"}


def node(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}


def ready_pod(kube: kubeapi.Kube, name: str, node_name: str, labels: dict[str, str] = LABELS) -> None:
    """A pod on ``node_name``, Running and Ready as its kubelet would report it."""
    pods = kubeapi.resource_of(kube, "v1", "Pod")
    pods.create(
        namespace=NAMESPACE,
        body={
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "nodeName": node_name,
                "containers": [{"name": "api-server", "image": "airflow-ha:test"}],
            },
        },
    )
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    ready = {"type": "Ready", "status": "True", "lastTransitionTime": now}
    kube.core.patch_namespaced_pod_status(
        name, NAMESPACE, {"status": {"phase": "Running", "conditions": [ready]}}
    )


def healthy(kube: kubeapi.Kube, budget: str) -> int:
    live = kubeapi.read(
        kube,
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": budget, "namespace": NAMESPACE},
        },
    )
    return int(((live or {}).get("status") or {}).get("currentHealthy", 0))


def wait_for(check: Any, what: str, seconds: float = 30) -> None:
    poll(
        lambda: check() or None,
        timeout=seconds,
        every=0.2,
        timed_out=lambda: AssertionError(f"not within {seconds:.0f} s: {what}"),
    )


@pytest.fixture
def kube(control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> kubeapi.Kube:
    control_plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    control_plane.apply(node("drained"), node("spare"), node("stuck"))
    path = control_plane.write_kubeconfig(
        control_plane.root / "drill.kubeconfig", {"drill": control_plane.admin_credentials()}
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    return kubeapi.kube_clients("drill")


def test_a_refused_eviction_is_retried_until_the_budget_allows_it(control_plane: ControlPlane, kube):
    """Two Ready pods on the drained node, a budget of one: the first eviction goes through,
    the second is refused (429) until a replacement is Ready elsewhere, then goes through."""
    control_plane.apply(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "api-server", "namespace": NAMESPACE},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": LABELS}},
        }
    )
    ready_pod(kube, "api-server-a", "drained")
    ready_pod(kube, "api-server-b", "drained")
    wait_for(lambda: healthy(kube, "api-server") == 2, "the disruption controller counting both pods")

    def replace_once_refused() -> None:
        pods = kubeapi.resource_of(kube, "v1", "Pod")
        wait_for(
            lambda: pods.get(name="api-server-a", namespace=NAMESPACE).metadata.deletionTimestamp, "eviction"
        )
        time.sleep(3)  # the second eviction is refused meanwhile
        ready_pod(kube, "api-server-c", "spare")

    replacer = threading.Thread(target=replace_once_refused, daemon=True)
    replacer.start()
    refused = drill.evict_all(kube, "drained", timeout=60)
    replacer.join()

    assert refused >= 1
    pods = kubeapi.list_pods(kube, NAMESPACE, LABELS)
    terminating = sorted(p["metadata"]["name"] for p in pods if p["metadata"].get("deletionTimestamp"))
    assert terminating == ["api-server-a", "api-server-b"]


def test_a_budget_that_never_allows_the_eviction_fails_naming_the_pod(control_plane: ControlPlane, kube):
    labels = {"app.kubernetes.io/component": "scheduler"}
    control_plane.apply(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "scheduler", "namespace": NAMESPACE},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}},
        }
    )
    ready_pod(kube, "scheduler-a", "stuck", labels)
    wait_for(lambda: healthy(kube, "scheduler") == 1, "the disruption controller counting the pod")

    with pytest.raises(Failure) as failed:
        drill.evict_all(kube, "stuck", timeout=3)

    assert str(failed.value) == (
        f"{NAMESPACE}/scheduler-a could not be evicted within 3 s: its PodDisruptionBudget never "
        "allowed it (are its other replicas Ready elsewhere?)"
    )
