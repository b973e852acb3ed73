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
from .store import BY_PLURAL, ApiError, Selector

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


def test_watch_replays_from_zero_streams_after_a_version_and_says_410_when_expired(
    emulator: Emulator,
) -> None:
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

    emulator.store.compact()
    # The client raises the in-stream ERROR event; the executor's own watcher reads it as an event.
    with pytest.raises(ApiException) as expired:
        list(
            watch.Watch().stream(
                api.list_namespaced_pod, NAMESPACE, resource_version=version, timeout_seconds=1
            )
        )
    assert expired.value.status == 410 and "too old resource version" in str(expired.value.reason)
    events = list(emulator.store.watch(PODS, NAMESPACE, Selector([], []), version, timeout=1))
    assert [(kind, obj["code"]) for kind, obj in events] == [("ERROR", 410)]


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


def test_patches_strategic_merge_of_maps_json_and_merge_and_refuses_lists(emulator: Emulator) -> None:
    api = admin(emulator)
    created = api.create_namespaced_pod(NAMESPACE, pod("p", keep="1", drop="2"))
    patched = api.patch_namespaced_pod(
        "p", NAMESPACE, {"metadata": {"labels": {"drop": None, "airflow-worker": "9"}}}
    )
    assert patched.metadata.labels == {"keep": "1", "airflow-worker": "9"}
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)
    assert patched.metadata.uid == created.metadata.uid
    json_patched = emulator.store.patch(
        PODS,
        NAMESPACE,
        "p",
        [{"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}],
        "application/json-patch+json",
    )
    assert json_patched["metadata"]["annotations"] == {"a": "b"}
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


def test_the_log_tail_deploy_shows_is_the_log_text(emulator: Emulator) -> None:
    """kubeapi.pod_log_tail through the real client and the emulator's HTTP, not a fake."""
    from airflow_ha import kubeapi

    api = admin(emulator)
    api.create_namespaced_pod(NAMESPACE, pod("t"))
    emulator.store.log_readers[NAMESPACE, "t"] = lambda container, tail: "first line\nlast line\n"
    kube = kubeapi.Kube(context="emulator", dynamic=None, core=api)

    assert kubeapi.pod_log_tail(kube, NAMESPACE, "t", "base") == "  | first line\n  | last line"


# server-side apply, access reviews, the stand-in controllers, and the kinds deploy lists,
# through the kubernetes client's DynamicClient, as airflow_ha.kubeapi calls them

APPLY = "application/apply-patch+yaml"


def dynamic(emulator: Emulator, token: str | None = None) -> Any:
    from kubernetes import dynamic as kubernetes_dynamic

    configuration = client.Configuration()
    configuration.host = emulator.url
    configuration.ssl_ca_cert = str(emulator.ca_file)
    configuration.api_key = {"authorization": f"Bearer {token or emulator.rbac.token(ADMIN)}"}
    return kubernetes_dynamic.DynamicClient(client.ApiClient(configuration))


def config_map(name: str, data: dict[str, str], **labels: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": NAMESPACE}
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def deployment(name: str, image: str, replicas: int = 2) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": image}, {"name": "side", "image": "s:1"}]},
            },
        },
    }


def apply(api: Any, obj: dict[str, Any], manager: str = "deployer", force: bool = False) -> dict[str, Any]:
    resource = api.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    applied = resource.server_side_apply(
        body=obj, field_manager=manager, force_conflicts=force or None, namespace=NAMESPACE
    )
    return dict(applied.to_dict())


def status_message(error: pytest.ExceptionInfo[ApiException]) -> str:
    return str(json.loads(error.value.body)["message"])


def service_account_with(emulator: Emulator, name: str, rules: list[dict[str, list[str]]]) -> str:
    """A ServiceAccount bound to a Role with these rules in NAMESPACE; returns its token."""
    rbac = "rbac.authorization.k8s.io"
    store = emulator.store
    store.create(
        BY_PLURAL["", "serviceaccounts"],
        NAMESPACE,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
    )
    store.create(
        BY_PLURAL[rbac, "roles"],
        NAMESPACE,
        {"apiVersion": f"{rbac}/v1", "kind": "Role", "metadata": {"name": name}, "rules": rules},
    )
    store.create(
        BY_PLURAL[rbac, "rolebindings"],
        NAMESPACE,
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": rbac, "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}],
        },
    )
    return emulator.rbac.service_account_token(NAMESPACE, name)


def test_apply_creates_then_stores_only_changes_and_drops_what_the_manager_omits(emulator: Emulator) -> None:
    api = dynamic(emulator)

    created = apply(api, config_map("c", {"keep": "1", "drop": "2"}))
    again = apply(api, config_map("c", {"keep": "1", "drop": "2"}))
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert emulator.store.version == int(created["metadata"]["resourceVersion"])  # nothing written

    # Another manager's field survives this manager's next apply; the one this manager omits goes.
    apply(api, {**config_map("c", {}, team="a"), "data": {"theirs": "x"}}, manager="someone-else")
    changed = apply(api, config_map("c", {"keep": "1"}))
    assert changed["data"] == {"keep": "1", "theirs": "x"}
    assert changed["metadata"]["labels"] == {"team": "a"}
    assert int(changed["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert "managedFields" not in changed["metadata"]


def test_apply_needs_a_field_manager_and_conflicts_unless_forced(emulator: Emulator) -> None:
    api = dynamic(emulator)
    configmaps = api.resources.get(api_version="v1", kind="ConfigMap")
    with pytest.raises(ApiException) as no_manager:
        configmaps.patch(body=config_map("c", {"a": "1"}), namespace=NAMESPACE, content_type=APPLY)
    assert no_manager.value.status == 400 and "fieldManager" in status_message(no_manager)
    assert not emulator.store.exists(BY_PLURAL["", "configmaps"], NAMESPACE, "c")

    apply(api, config_map("c", {"a": "1"}), manager="first")
    with pytest.raises(ApiException) as conflict:
        apply(api, config_map("c", {"a": "2"}), manager="second")
    assert conflict.value.status == 409 and 'conflict with "first": .data.a' in status_message(conflict)
    assert apply(api, config_map("c", {"a": "2"}), manager="second", force=True)["data"] == {"a": "2"}
    # "first" lost the field to "second", so omitting it now removes nothing.
    assert apply(api, config_map("c", {}), manager="first")["data"] == {"a": "2"}


def test_apply_bumps_generation_on_spec_changes_only_replaces_lists_and_validates(emulator: Emulator) -> None:
    api = dynamic(emulator)
    first = apply(api, deployment("web", "web:1"))
    assert first["metadata"]["generation"] == 1

    labelled = deployment("web", "web:1")
    labelled["metadata"]["labels"] = {"tier": "front"}
    relabelled = apply(api, labelled)
    assert relabelled["metadata"]["generation"] == 1
    assert relabelled["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]

    one_container = deployment("web", "web:2")
    one_container["spec"]["template"]["spec"]["containers"] = [{"name": "main", "image": "web:2"}]
    rolled = apply(api, one_container)
    assert rolled["metadata"]["generation"] == 2
    assert rolled["spec"]["template"]["spec"]["containers"] == [{"name": "main", "image": "web:2"}]
    assert "labels" not in rolled["metadata"]  # omitted by its only manager

    invalid = deployment("web", "web:2")
    invalid["spec"]["replicas"] = "two"
    with pytest.raises(ApiException) as refused:
        apply(api, invalid)
    assert refused.value.status == 422 and "spec.replicas" in status_message(refused)
    assert emulator.store.get(BY_PLURAL["apps", "deployments"], NAMESPACE, "web")["spec"]["replicas"] == 2


def test_apply_that_creates_needs_create_as_well_as_patch(emulator: Emulator) -> None:
    patch_only = dynamic(
        emulator,
        service_account_with(
            emulator, "patcher", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "patch"]}]
        ),
    )
    with pytest.raises(ApiException) as refused:
        apply(patch_only, config_map("new", {"a": "1"}))
    assert refused.value.status == 403
    assert 'cannot create resource "configmaps" in API group "" in the namespace "airflow"' in (
        status_message(refused)
    )
    apply(dynamic(emulator), config_map("new", {"a": "1"}))
    assert apply(patch_only, config_map("new", {"a": "2"}))["data"] == {"a": "2"}

    create_only = dynamic(
        emulator,
        service_account_with(
            emulator, "creator", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}]
        ),
    )
    with pytest.raises(ApiException) as no_patch:
        apply(create_only, config_map("other", {"a": "1"}))
    assert no_patch.value.status == 403 and 'cannot patch resource "configmaps"' in status_message(no_patch)


def review(api: Any, **attributes: str) -> bool:
    reviews = api.resources.get(api_version="authorization.k8s.io/v1", kind="SelfSubjectAccessReview")
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    return bool(reviews.create(body=body).to_dict()["status"]["allowed"])


def test_access_reviews_answer_from_the_roles_and_anyone_may_ask(emulator: Emulator) -> None:
    reader = dynamic(
        emulator,
        service_account_with(
            emulator,
            "reader",
            [
                {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]},
                {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
            ],
        ),
    )
    assert review(reader, verb="list", group="apps", resource="deployments", namespace=NAMESPACE)
    assert not review(reader, verb="patch", group="apps", resource="deployments", namespace=NAMESPACE)
    assert not review(reader, verb="list", group="apps", resource="deployments", namespace="elsewhere")
    assert not review(reader, verb="list", resource="namespaces")  # cluster scope: no Role reaches it
    assert review(reader, verb="get", resource="pods", subresource="log", namespace=NAMESPACE)
    assert not review(reader, verb="get", resource="pods", namespace=NAMESPACE)
    assert review(dynamic(emulator), verb="delete", resource="namespaces")  # the harness may do anything
    assert emulator.store.version == 3  # the reader's three RBAC objects; reviews store nothing


def test_a_namespace_object_is_authorized_in_its_own_namespace(emulator: Emulator) -> None:
    """As the API server's request info has it: a RoleBinding can grant reading its own Namespace."""
    emulator.store.create(
        BY_PLURAL["", "namespaces"],
        "",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
    )
    token = service_account_with(
        emulator, "ns-reader", [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list"]}]
    )
    api = core(emulator, token)
    assert api.read_namespace(NAMESPACE).metadata.name == NAMESPACE
    with pytest.raises(ApiException) as listing:
        api.list_namespace()
    assert listing.value.status == 403 and "at the cluster scope" in message(listing)
    assert [
        (a.verb, a.resource, a.namespace, a.code) for a in emulator.audit if a.resource == "namespaces"
    ] == [
        ("get", "namespaces", NAMESPACE, 200),
        ("list", "namespaces", "", 403),
    ]


def test_controllers_are_opt_in_and_mark_workloads_ready_without_pods() -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "once", "namespace": NAMESPACE},
        "spec": {
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "m:1"}]}}
        },
    }
    stateful = deployment("db", "db:1", replicas=1)
    stateful.update(kind="StatefulSet")
    stateful["spec"]["serviceName"] = "db"
    plain, controlled = Emulator(), Emulator(controllers=True)
    try:
        applied = apply(dynamic(plain), deployment("web", "web:1"))
        assert "status" not in plain.store.get(BY_PLURAL["apps", "deployments"], NAMESPACE, "web")
        assert applied["metadata"]["generation"] == 1

        api = dynamic(controlled)
        apply(api, deployment("web", "web:1"))
        apply(api, stateful)
        apply(api, job)
        web = controlled.store.get(BY_PLURAL["apps", "deployments"], NAMESPACE, "web")
        assert web["status"] == {
            "observedGeneration": 1,
            "replicas": 2,
            "updatedReplicas": 2,
            "readyReplicas": 2,
            "availableReplicas": 2,
        }
        db = controlled.store.get(BY_PLURAL["apps", "statefulsets"], NAMESPACE, "db")["status"]
        assert db["currentRevision"] == db["updateRevision"] and db["currentRevision"].startswith("db-")
        conditions = controlled.store.get(BY_PLURAL["batch", "jobs"], NAMESPACE, "once")["status"][
            "conditions"
        ]
        assert [(c["type"], c["status"]) for c in conditions] == [("Complete", "True")]
        assert not controlled.store.list(PODS, NAMESPACE, Selector([], []))[0]  # no pod ever runs

        version = controlled.store.version
        apply(api, deployment("web", "web:1"))  # unchanged: neither the apply nor the controller writes
        assert controlled.store.version == version
        rolled = apply(api, deployment("web", "web:2"))
        assert rolled["metadata"]["generation"] == 2
        status = controlled.store.get(BY_PLURAL["apps", "deployments"], NAMESPACE, "web")["status"]
        assert status["observedGeneration"] == 2
    finally:
        plain.close()
        controlled.close()


def test_every_kind_deploy_lists_is_served(emulator: Emulator) -> None:
    """deploy's inventory skips a kind the cluster does not serve; here none may be skipped."""
    from airflow_ha import deploy

    api = dynamic(emulator)
    for api_version, kind in deploy.LABELLED_KINDS:
        resource = api.resources.get(api_version=api_version, kind=kind)
        assert resource.namespaced
        assert resource.get(namespace=NAMESPACE).to_dict()["items"] == []


def test_delete_takes_a_propagation_policy_and_refuses_an_unknown_one(emulator: Emulator) -> None:
    api = dynamic(emulator)
    apply(api, config_map("c", {"a": "1"}))
    configmaps = api.resources.get(api_version="v1", kind="ConfigMap")
    with pytest.raises(ApiException) as refused:
        configmaps.delete(name="c", namespace=NAMESPACE, propagation_policy="Sometimes")
    assert refused.value.status == 400 and "propagationPolicy" in status_message(refused)
    configmaps.delete(name="c", namespace=NAMESPACE, propagation_policy="Background")
    assert not emulator.store.exists(BY_PLURAL["", "configmaps"], NAMESPACE, "c")


def test_a_role_grants_and_a_binding_binds_only_rights_the_writer_holds(emulator: Emulator) -> None:
    """Kubernetes' RBAC escalation prevention, unless the writer may `escalate` or `bind`."""
    rbac = "rbac.authorization.k8s.io"
    writer = dynamic(
        emulator,
        service_account_with(
            emulator,
            "writer",
            [
                {"apiGroups": [rbac], "resources": ["roles", "rolebindings"], "verbs": ["create", "patch"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
            ],
        ),
    )

    def role(name: str, verbs: list[str]) -> dict[str, Any]:
        rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": verbs}]
        return {"apiVersion": f"{rbac}/v1", "kind": "Role", "metadata": {"name": name}, "rules": rules}

    def binding(name: str, role_name: str) -> dict[str, Any]:
        return {
            "apiVersion": f"{rbac}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": rbac, "kind": "Role", "name": role_name},
            "subjects": [{"kind": "ServiceAccount", "name": "someone", "namespace": NAMESPACE}],
        }

    apply(writer, role("reader", ["get", "list"]))
    apply(writer, binding("reader", "reader"))
    with pytest.raises(ApiException) as escalated:
        apply(writer, role("reader", ["get", "list", "delete"]))
    assert escalated.value.status == 403
    assert "attempting to grant RBAC permissions not currently held" in status_message(escalated)
    assert "Verbs:['delete']" in status_message(escalated)
    roles = writer.resources.get(api_version=f"{rbac}/v1", kind="Role")
    with pytest.raises(ApiException) as created:  # a plain create is held to the same rule
        roles.create(body=role("deleter", ["delete"]), namespace=NAMESPACE)
    assert created.value.status == 403 and "Verbs:['delete']" in status_message(created)

    emulator.store.create(BY_PLURAL[rbac, "roles"], NAMESPACE, role("deleter", ["delete"]))
    with pytest.raises(ApiException) as bound:
        apply(writer, binding("deleter", "deleter"))
    assert bound.value.status == 403 and "Verbs:['delete']" in status_message(bound)
    # Changing no rule is no escalation: Kubernetes lets the same Role be applied again.
    version = emulator.store.get(BY_PLURAL[rbac, "roles"], NAMESPACE, "deleter")["metadata"][
        "resourceVersion"
    ]
    apply(writer, role("deleter", ["delete"]))
    assert (
        emulator.store.get(BY_PLURAL[rbac, "roles"], NAMESPACE, "deleter")["metadata"]["resourceVersion"]
        == version
    )

    trusted = dynamic(
        emulator,
        service_account_with(
            emulator,
            "trusted",
            [
                {
                    "apiGroups": [rbac],
                    "resources": ["roles", "rolebindings"],
                    "verbs": ["create", "patch", "escalate", "bind"],
                }
            ],
        ),
    )
    apply(trusted, role("deleter", ["delete"]))
    apply(trusted, binding("deleter", "deleter"))
