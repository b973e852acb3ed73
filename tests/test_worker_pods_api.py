"""What `invoke smoke` asks of the Kubernetes API, against the REAL API server (tests/controlplane):
the pod watch, and the one-line 403s of the watch and of the port-forward.

There are no nodes: the pods here are created and deleted, never run, which is all the watch
sees of them. A watch that fails (a dropped connection; 410 Gone, which a watch from
resourceVersion 1 did not draw from this API server) stays in tests/test_smoke.py, faked
in-process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from controlplane.plane import ControlPlane

from airflow_ha import kubeapi, port_forward, worker_pods
from airflow_ha.console import Failure

DAG_ID = "airflow_ha_smoke"
WATCHED = "team-watch"
NO_RIGHTS = "team-no-rights"


def kube_for(
    plane: ControlPlane, monkeypatch: pytest.MonkeyPatch, name: str, user: dict[str, str]
) -> kubeapi.Kube:
    path = plane.write_kubeconfig(plane.root / f"{name}.kubeconfig", {name: user})
    monkeypatch.setenv("KUBECONFIG", str(path))
    return kubeapi.kube_clients(name)


def worker_pod(name: str) -> dict[str, Any]:
    labels = {"kubernetes_executor": "True", "dag_id": DAG_ID, "task_id": "hello", "try_number": "1"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": WATCHED, "labels": labels},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "base", "image": "airflow-ha:test"}]},
    }


def eventually(check: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds:.0f} s: {what}"
        time.sleep(0.05)


def test_the_watch_sees_a_worker_pod_come_and_go(
    control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """List, then watch from the list's resourceVersion: the pod's creation and its deletion
    arrive as the real API server sends them, selected by the executor's labels."""
    control_plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": WATCHED}})
    control_plane.apply(worker_pod("worker-0"))
    kube = kube_for(control_plane, monkeypatch, "admin", control_plane.admin_credentials())

    with worker_pods.PodWatch(kube, WATCHED, DAG_ID) as pods:
        assert "worker-0" in pods.pods  # from the list
        control_plane.apply(worker_pod("worker-1"))
        eventually(lambda: "worker-1" in pods.pods, "the watch seeing worker-1 created")
        assert pods.pods["worker-1"].labels["task_id"] == "hello"
        control_plane.kubectl("delete", "pod", "worker-0", "worker-1", "-n", WATCHED, "--wait=false")
        eventually(
            lambda: all(pods.pods[name].deleted for name in ("worker-0", "worker-1")),
            "the watch seeing both pods deleted",
        )
        assert pods.error == ""


def no_rights(plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> kubeapi.Kube:
    """A ServiceAccount bound to nothing, as a context short of every right."""
    plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NO_RIGHTS}})
    plane.apply(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "nobody", "namespace": NO_RIGHTS}}
    )
    monkeypatch.setenv("KUBECONFIG", str(plane.kubeconfig_for(NO_RIGHTS, "nobody")))
    return kubeapi.kube_clients("nobody")


def test_a_watch_without_the_right_to_list_pods_is_one_line(
    control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube = no_rights(control_plane, monkeypatch)

    with pytest.raises(Failure) as failed, worker_pods.PodWatch(kube, NO_RIGHTS, DAG_ID):
        pass

    assert str(failed.value) == (
        f"forbidden: cannot list pods in namespace '{NO_RIGHTS}' (kube context 'nobody'): "
        f"it lacks the RBAC right \"list pods\" in namespace '{NO_RIGHTS}'"
    )


def test_a_port_forward_without_the_right_is_one_line(
    control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API server authorizes `create pods/portforward` before it would need a kubelet."""
    kube = no_rights(control_plane, monkeypatch)
    connect = port_forward.pod_connector(kube, NO_RIGHTS, "airflow-api-server-1", 8080)

    with pytest.raises(Failure) as failed:
        connect()

    assert str(failed.value) == (
        f"forbidden: cannot create Pod/airflow-api-server-1 in namespace '{NO_RIGHTS}' "
        "(kube context 'nobody'): it lacks the RBAC right \"create pods/portforward\" "
        f"in namespace '{NO_RIGHTS}'"
    )
