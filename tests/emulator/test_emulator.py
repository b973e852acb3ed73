"""The emulator's strict parts, in process, through the real kubernetes client over HTTPS.

Only the Kubernetes API is emulated here (tests/emulator); nothing runs in Docker.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from .rbac import ADMIN
from .server import Emulator
from .store import BY_PLURAL, ApiError, Selector, Store

NAMESPACE = "airflow"
PODS = BY_PLURAL["", "pods"]


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    api = Emulator()
    try:
        yield api
    finally:
        api.close()


def core(emulator: Emulator, token: str) -> client.CoreV1Api:
    configuration = client.Configuration()
    configuration.host = emulator.url
    configuration.ssl_ca_cert = str(emulator.ca_file)
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.CoreV1Api(client.ApiClient(configuration))


def admin(emulator: Emulator) -> client.CoreV1Api:
    return core(emulator, emulator.rbac.token(ADMIN))


def pod(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "base", "image": "airflow-ha:test"}], "restartPolicy": "Never"},
    }


def message(error: pytest.ExceptionInfo[ApiException]) -> str:
    return str(json.loads(error.value.body)["message"])


def set_phase(emulator: Emulator, name: str, phase: str) -> None:
    status = {
        "phase": phase,
        "containerStatuses": [
            {"name": "base", "ready": False, "restartCount": 0, "image": "i", "imageID": "docker://sha256:1"}
        ],
    }
    emulator.store.patch(PODS, NAMESPACE, name, {"status": status}, "application/merge-patch+json", "status")


def test_label_and_field_selectors_as_the_executor_uses_them(emulator: Emulator) -> None:
    api = admin(emulator)
    api.create_namespaced_pod(NAMESPACE, pod("a", kubernetes_executor="True", **{"airflow-worker": "7"}))
    api.create_namespaced_pod(
        NAMESPACE,
        pod("b", kubernetes_executor="True", airflow_executor_done="True", **{"airflow-worker": "7"}),
    )
    api.create_namespaced_pod(NAMESPACE, pod("c", kubernetes_executor="True", **{"airflow-worker": "8"}))
    set_phase(emulator, "c", "Succeeded")

    def names(**query: str) -> list[str]:
        return [p.metadata.name for p in api.list_namespaced_pod(NAMESPACE, **query).items]

    assert names(label_selector="airflow-worker=7,airflow_executor_done!=True") == ["a"]
    assert names(label_selector="kubernetes_executor=True", field_selector="status.phase=Succeeded") == ["c"]
    assert names(field_selector="status.phase!=Succeeded") == ["a", "b"]
    assert names(label_selector="airflow-worker notin (7),!airflow_executor_done") == ["c"]
    with pytest.raises(ApiException) as refused:
        names(field_selector="spec.schedulerName=x")
    assert refused.value.status == 400 and "field label not supported" in message(refused)


def test_watch_replays_from_zero_and_streams_after_a_version(emulator: Emulator) -> None:
    api = admin(emulator)
    api.create_namespaced_pod(NAMESPACE, pod("old", app="x"))
    listed = api.list_namespaced_pod(NAMESPACE, label_selector="app=x")
    version = listed.metadata.resource_version

    replay = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            api.list_namespaced_pod, NAMESPACE, resource_version="0", timeout_seconds=1
        )
    ]
    assert replay == [("ADDED", "old")]

    api.create_namespaced_pod(NAMESPACE, pod("new", app="x"))
    # A pod leaving the selector is DELETED for this watcher, as the API server's watch cache does.
    api.patch_namespaced_pod("old", NAMESPACE, {"metadata": {"labels": {"app": "y"}}})
    later = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            api.list_namespaced_pod,
            NAMESPACE,
            label_selector="app=x",
            resource_version=version,
            timeout_seconds=1,
        )
    ]
    assert later == [("ADDED", "new"), ("DELETED", "old")]


def test_a_watch_from_before_the_history_gets_410_gone() -> None:
    """The history is bounded: once it has moved on, a watch from an older version gets one
    ERROR event with a 410 Status, as the API server says after etcd compaction."""
    store = Store(history=2)
    for name in ("a", "b", "c", "d"):  # resourceVersions 1 to 4; the history keeps 3 and 4
        store.create(PODS, NAMESPACE, pod(name))
    events = list(store.watch(PODS, NAMESPACE, Selector([], []), "1", timeout=1))
    assert [(kind, obj["code"], obj["reason"]) for kind, obj in events] == [("ERROR", 410, "Expired")]
    assert "too old resource version: 1" in events[0][1]["message"]
    resumed = list(store.watch(PODS, NAMESPACE, Selector([], []), "2", timeout=1))
    assert [(kind, obj["metadata"]["name"]) for kind, obj in resumed] == [("ADDED", "c"), ("ADDED", "d")]


def test_a_watch_ends_after_timeout_seconds(emulator: Emulator) -> None:
    api = admin(emulator)
    done = threading.Event()

    def follow() -> None:
        for _ in watch.Watch().stream(api.list_namespaced_pod, NAMESPACE, timeout_seconds=1):
            pass
        done.set()

    threading.Thread(target=follow, daemon=True).start()
    assert done.wait(10), "the watch did not end after timeoutSeconds"


def test_rbac_forbids_what_the_applied_role_does_not_allow(emulator: Emulator) -> None:
    store = emulator.store
    store.create(
        BY_PLURAL["", "serviceaccounts"],
        NAMESPACE,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "airflow-scheduler"}},
    )
    store.create(
        BY_PLURAL["rbac.authorization.k8s.io", "roles"],
        NAMESPACE,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "launcher"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "list"]}],
        },
    )
    store.create(
        BY_PLURAL["rbac.authorization.k8s.io", "rolebindings"],
        NAMESPACE,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "launcher"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "launcher"},
            "subjects": [{"kind": "ServiceAccount", "name": "airflow-scheduler", "namespace": NAMESPACE}],
        },
    )
    scheduler = core(emulator, emulator.rbac.service_account_token(NAMESPACE, "airflow-scheduler"))

    scheduler.create_namespaced_pod(NAMESPACE, pod("w"))
    assert [p.metadata.name for p in scheduler.list_namespaced_pod(NAMESPACE).items] == ["w"]
    with pytest.raises(ApiException) as refused:
        scheduler.patch_namespaced_pod("w", NAMESPACE, {"metadata": {"labels": {"a": "b"}}})
    assert refused.value.status == 403
    assert (
        'pods "w" is forbidden: User "system:serviceaccount:airflow:airflow-scheduler" cannot patch '
        'resource "pods" in API group "" in the namespace "airflow"'
    ) in message(refused)
    with pytest.raises(ApiException) as no_log:
        scheduler.read_namespaced_pod_log("w", NAMESPACE, container="base")
    assert no_log.value.status == 403 and 'cannot get resource "pods/log"' in message(no_log)
    with pytest.raises(ApiException) as unknown:
        core(emulator, "not-a-token").list_namespaced_pod(NAMESPACE)
    assert unknown.value.status == 401


def test_admission_refuses_invalid_objects_with_422_naming_the_field(emulator: Emulator) -> None:
    api = admin(emulator)
    bad = pod("bad")
    bad["spec"]["containers"][0]["imagePullPolicy"] = 3
    with pytest.raises(ApiException) as refused:
        api.create_namespaced_pod(NAMESPACE, bad)
    assert refused.value.status == 422 and "spec.containers.0.imagePullPolicy" in message(refused)
    api.create_namespaced_pod(NAMESPACE, pod("ok"))
    # The executor's watcher crashes on a null imageID, so the status subresource refuses one.
    status = {
        "containerStatuses": [
            {"name": "base", "ready": True, "restartCount": 0, "image": "i", "imageID": None}
        ]
    }
    with pytest.raises(ApiError) as null_image:
        emulator.store.patch(
            PODS, NAMESPACE, "ok", {"status": status}, "application/merge-patch+json", "status"
        )
    assert null_image.value.code == 422 and "status.containerStatuses.0.imageID" in null_image.value.message


def test_patches_strategic_merge_of_maps_and_merge_and_refuses_lists(emulator: Emulator) -> None:
    api = admin(emulator)
    created = api.create_namespaced_pod(NAMESPACE, pod("p", keep="1", drop="2"))
    patched = api.patch_namespaced_pod(
        "p", NAMESPACE, {"metadata": {"labels": {"drop": None, "airflow-worker": "9"}}}
    )
    assert patched.metadata.labels == {"keep": "1", "airflow-worker": "9"}
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)
    assert patched.metadata.uid == created.metadata.uid
    merged = emulator.store.patch(
        PODS, NAMESPACE, "p", {"metadata": {"annotations": {"a": "b"}}}, "application/merge-patch+json"
    )
    assert merged["metadata"]["annotations"] == {"a": "b"}
    assert merged["metadata"]["labels"] == {"keep": "1", "airflow-worker": "9"}
    with pytest.raises(ApiException) as refused:
        api.patch_namespaced_pod("p", NAMESPACE, {"spec": {"containers": [{"name": "base", "image": "x"}]}})
    assert refused.value.status == 415 and "maps only" in message(refused)
    # Status changes only through the status subresource.
    api.patch_namespaced_pod("p", NAMESPACE, {"status": {"phase": "Succeeded"}})
    assert api.read_namespaced_pod("p", NAMESPACE).status.phase == "Pending"


def test_delete_with_a_grace_period_marks_the_pod_then_removal_deletes_it(emulator: Emulator) -> None:
    api = admin(emulator)
    api.create_namespaced_pod(NAMESPACE, pod("g"))
    version = api.list_namespaced_pod(NAMESPACE).metadata.resource_version
    deleting = api.delete_namespaced_pod("g", NAMESPACE, body=client.V1DeleteOptions(grace_period_seconds=7))
    assert deleting.metadata.deletion_timestamp is not None
    assert deleting.metadata.deletion_grace_period_seconds == 7
    assert api.read_namespaced_pod("g", NAMESPACE).metadata.deletion_timestamp is not None
    emulator.store.remove(PODS, NAMESPACE, "g")
    with pytest.raises(ApiException) as gone:
        api.read_namespaced_pod("g", NAMESPACE)
    assert gone.value.status == 404
    events = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            api.list_namespaced_pod, NAMESPACE, resource_version=version, timeout_seconds=1
        )
    ]
    assert events == [("MODIFIED", "g"), ("DELETED", "g")]


def test_pod_log_needs_a_container_of_the_pod_and_a_started_container(emulator: Emulator) -> None:
    api = admin(emulator)
    api.create_namespaced_pod(NAMESPACE, pod("l"))
    with pytest.raises(ApiException) as waiting:
        api.read_namespaced_pod_log("l", NAMESPACE, container="base")
    assert waiting.value.status == 400 and "waiting to start" in message(waiting)
    emulator.store.log_readers[NAMESPACE, "l"] = lambda container, tail: "line 1\nline 2\n"
    # As the executor reads it: unparsed (this client turns a parsed log into the repr of bytes).
    log = api.read_namespaced_pod_log("l", NAMESPACE, container="base", _preload_content=False)
    assert log.data.decode() == "line 1\nline 2\n"
    with pytest.raises(ApiException) as wrong:
        api.read_namespaced_pod_log("l", NAMESPACE, container="sidecar")
    assert wrong.value.status == 400


def test_the_log_tail_smoke_shows_is_the_log_text(emulator: Emulator) -> None:
    """kubeapi.pod_log_tail through the real client and the emulator's HTTP, not a fake."""
    from airflow_ha import kubeapi

    api = admin(emulator)
    api.create_namespaced_pod(NAMESPACE, pod("t"))
    emulator.store.log_readers[NAMESPACE, "t"] = lambda container, tail: "first line\nlast line\n"
    kube = kubeapi.Kube(context="emulator", dynamic=None, core=api)

    assert kubeapi.pod_log_tail(kube, NAMESPACE, "t", "base") == "  | first line\n  | last line"
