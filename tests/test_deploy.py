"""Deploy and teardown logic against an in-memory Kubernetes API.

The Kubernetes API is mocked in this file because no cluster can run here: FakeCluster
keeps objects in memory behind the slice of the dynamic client (resources.get, get, list,
server_side_apply, create, delete) and CoreV1Api (read_namespaced_pod_log) that
airflow_ha.deploy uses. Like the real API server it bumps resourceVersion only when an
apply changes something, refuses a changed Job spec as immutable, needs the namespace
before namespaced objects, and deletes dependants with their owner. Its controllers make
a workload ready one poll after it was written, unless a test holds it back.
The manifests are the real ones, rendered by kustomize.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from airflow_ha import PART_OF, PART_OF_LABEL, cluster, manifests
from airflow_ha import deploy as deploying
from airflow_ha import secrets as generated
from airflow_ha.console import Failure

NAMESPACE = "airflow"
IMAGE = "airflow-ha:3.3.2-test"
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "ClusterRole", "ClusterRoleBinding", "StorageClass"}
WORKLOADS = {"Deployment", "StatefulSet", "Job"}
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"


class FakeInstance:
    """What the dynamic client returns: an object with to_dict()."""

    def __init__(self, obj: dict[str, Any]):
        self._obj = copy.deepcopy(obj)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._obj)


def api_error(status: int, message: str) -> ApiException:
    error = ApiException(status=status, reason=message)
    error.body = json.dumps({"kind": "Status", "message": message, "code": status})
    return error


def matches(labels: dict[str, str], selector: str | None) -> bool:
    for term in filter(None, (selector or "").split(",")):
        name, _, value = term.partition("=")
        if name not in labels or (value and labels[name] != value):
            return False
    return True


class FakeCluster:
    """In-memory API server plus just enough controller behaviour for deploy's waits."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (kind, namespace, name)
        self.applied: dict[tuple[str, str, str], dict[str, Any]] = {}  # last applied body, as SSA remembers
        self.log: list[tuple[str, str]] = []  # (what happened, Kind/name), in order
        self.versions = itertools.count(1)
        self.pod_logs: dict[tuple[str, bool], str] = {}  # (pod, previous) -> text
        self.held: set[str] = set()  # Kind/name of workloads whose controller never makes them ready
        self.pending_ready: set[str] = set()
        self.job_outcome = "Complete"

    # the dynamic client surface

    @property
    def resources(self) -> FakeCluster:
        return self

    def get(self, api_version: str, kind: str) -> FakeResource:  # resources.get(api_version=, kind=)
        if kind == "HorizontalPodAutoscaler":
            raise ResourceNotFoundError(f"No matches found for {kind}")  # as on a cluster that lacks a kind
        return FakeResource(self, api_version, kind)

    def read_namespaced_pod_log(self, name: str, namespace: str, previous: bool = False, **_: Any) -> str:
        if (name, previous) not in self.pod_logs:
            raise api_error(400, f"previous terminated container in pod {name} not found")
        return self.pod_logs[name, previous]

    def kube(self, context: str = "kind-airflow-ha") -> cluster.Kube:
        return cluster.Kube(context=context, dynamic=self, core=self)

    # state

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object as the API server would, with the server-side metadata."""
        obj = copy.deepcopy(obj)
        metadata = obj.setdefault("metadata", {})
        metadata.setdefault("uid", f"uid-{next(self.versions)}")
        metadata["resourceVersion"] = str(next(self.versions))
        metadata.setdefault("generation", 1)
        self.objects[self.key(obj)] = obj
        return obj

    @staticmethod
    def key(obj: dict[str, Any]) -> tuple[str, str, str]:
        namespace = "" if obj["kind"] in CLUSTER_SCOPED else obj["metadata"].get("namespace", "")
        return obj["kind"], namespace, obj["metadata"]["name"]

    def named(self, kind: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
        return self.objects.get((kind, "" if kind in CLUSTER_SCOPED else namespace, name))

    def versions_now(self) -> dict[tuple[str, str, str], str]:
        return {k: obj["metadata"]["resourceVersion"] for k, obj in self.objects.items()}

    def writes(self) -> list[tuple[str, str]]:
        return [entry for entry in self.log if entry[0] in ("create", "update", "delete")]

    def delete(self, key: tuple[str, str, str]) -> None:
        obj = self.objects.pop(key, None)
        self.applied.pop(key, None)
        if obj is None:
            return
        self.log.append(("delete", f"{key[0]}/{key[2]}"))
        uid = obj["metadata"]["uid"]
        for other_key, other in list(self.objects.items()):
            owners = [owner["uid"] for owner in other["metadata"].get("ownerReferences") or []]
            if uid in owners or (key[0] == "Namespace" and other_key[1] == key[2]):
                self.delete(other_key)

    def observe(self, obj: dict[str, Any]) -> None:
        """The controllers: a written workload becomes ready on the next read, unless held."""
        ref = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] not in WORKLOADS or ref in self.held:
            return
        if ref not in self.pending_ready:
            self.pending_ready.add(ref)
            return
        self.pending_ready.discard(ref)
        status: dict[str, Any]
        if obj["kind"] == "Job":
            status = {"conditions": [{"type": self.job_outcome, "status": "True", "reason": "Test"}]}
            if self.job_outcome == "Failed":
                status["failed"] = 4
        else:
            replicas = obj["spec"].get("replicas", 1)
            status = {
                "observedGeneration": obj["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "currentRevision": "r1",
                "updateRevision": "r1",
            }
        if obj.get("status") != status:
            obj["status"] = status
            obj["metadata"]["resourceVersion"] = str(next(self.versions))
            self.log.append(("ready", ref))


class FakeResource:
    def __init__(self, fake: FakeCluster, api_version: str, kind: str):
        self.fake = fake
        self.api_version = api_version
        self.kind = kind
        self.namespaced = kind not in CLUSTER_SCOPED

    def _key(self, name: str, namespace: str | None) -> tuple[str, str, str]:
        return self.kind, (namespace or "") if self.namespaced else "", name

    def get(
        self,
        name: str | None = None,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        **_: Any,
    ) -> FakeInstance:
        if name is not None:
            obj = self.fake.objects.get(self._key(name, namespace))
            if obj is None:
                raise api_error(404, f'{self.kind.lower()}s "{name}" not found')
            self.fake.observe(obj)
            return FakeInstance(obj)
        items = []
        for (kind, in_namespace, _name), item in self.fake.objects.items():
            if kind != self.kind or (self.namespaced and namespace and in_namespace != namespace):
                continue
            if not matches(item["metadata"].get("labels") or {}, label_selector):
                continue
            fields = {"metadata.name": item["metadata"]["name"]}
            for field_name, value in (item.get("involvedObject") or {}).items():
                fields[f"involvedObject.{field_name}"] = value
            if not matches(fields, field_selector):
                continue
            items.append(item)
        return FakeInstance({"items": items, "metadata": {"resourceVersion": str(next(self.fake.versions))}})

    def server_side_apply(
        self, body: dict[str, Any], field_manager: str, namespace: str | None = None, **_: Any
    ):
        assert field_manager == deploying.FIELD_MANAGER
        key = self._key(body["metadata"]["name"], namespace or body["metadata"].get("namespace"))
        if self.namespaced and ("Namespace", "", key[1]) not in self.fake.objects:
            raise api_error(404, f'namespaces "{key[1]}" not found')
        existing = self.fake.objects.get(key)
        if existing is not None and self.fake.applied.get(key) == body:
            return FakeInstance(existing)  # the same content: nothing changes, not even resourceVersion
        if existing is not None and self.kind == "Job" and self.fake.applied[key]["spec"] != body["spec"]:
            raise api_error(
                422, f'Job.batch "{key[2]}" is invalid: spec.template: Invalid value: field is immutable'
            )
        stored = copy.deepcopy(body)
        if existing is None and self.kind == "Job":  # the API server selects a Job's pods by its uid
            uid = f"uid-{next(self.fake.versions)}"
            stored["metadata"]["uid"] = uid
            stored["spec"]["selector"] = {"matchLabels": {JOB_UID_LABEL: uid}}
        if existing is not None:
            stored["metadata"]["uid"] = existing["metadata"]["uid"]
            same_spec = self.fake.applied[key].get("spec") == body.get("spec")
            stored["metadata"]["generation"] = existing["metadata"]["generation"] + (0 if same_spec else 1)
            stored["status"] = existing.get("status", {})
        self.fake.applied[key] = copy.deepcopy(body)
        self.fake.log.append(("update" if existing else "create", f"{self.kind}/{key[2]}"))
        return FakeInstance(self.fake.put(stored))

    def create(self, body: dict[str, Any], namespace: str, **_: Any) -> FakeInstance:
        key = self._key(body["metadata"]["name"], namespace)
        if key in self.fake.objects:
            raise api_error(409, f'{self.kind.lower()}s "{key[2]}" already exists')
        self.fake.log.append(("create", f"{self.kind}/{key[2]}"))
        return FakeInstance(self.fake.put(body))

    def delete(
        self, name: str, namespace: str | None = None, propagation_policy: str | None = None, **_: Any
    ):
        assert propagation_policy == "Background"
        key = self._key(name, namespace)
        if key not in self.fake.objects:
            raise api_error(404, f'{self.kind.lower()}s "{name}" not found')
        self.fake.delete(key)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    monkeypatch.setattr(deploying, "POLL_SECONDS", 0.01)
    return FakeCluster()


@pytest.fixture(scope="module")
def rendered() -> list[manifests.Manifest]:
    return manifests.render("kind", namespace=NAMESPACE, image=IMAGE)


def fresh(rendered: list[manifests.Manifest]) -> list[manifests.Manifest]:
    return [manifests.Manifest(m.source, copy.deepcopy(m.obj)) for m in rendered]


def install(fake: FakeCluster, rendered: list[manifests.Manifest], timeout: int = 30) -> deploying.Report:
    return deploying.install(fake.kube(), fresh(rendered), namespace=NAMESPACE, timeout=timeout)


def position(fake: FakeCluster, entry: tuple[str, str]) -> int:
    assert entry in fake.log, f"{entry} never happened: {fake.log}"
    return fake.log.index(entry)


def pod(
    name: str,
    labels: dict[str, str],
    status: dict[str, Any],
    containers: tuple[str, ...] = ("main",),
    owner: str | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": NAMESPACE, "labels": labels}
    if owner:
        metadata["ownerReferences"] = [{"uid": owner}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": c} for c in containers]},
        "status": status,
    }


def selector_of(fake: FakeCluster, kind: str, name: str) -> dict[str, str]:
    return dict(fake.named(kind, name)["spec"]["selector"]["matchLabels"])  # type: ignore[index]


# apply ordering


def test_apply_goes_foundation_secrets_database_migration_components(fake, rendered):
    install(fake, rendered)

    namespace = position(fake, ("create", "Namespace/airflow"))
    secrets = [position(fake, ("create", f"Secret/{name}")) for name in generated.GENERATED_SECRETS]
    config = position(fake, ("create", "ConfigMap/airflow-config"))
    database = position(fake, ("create", "StatefulSet/airflow-postgres"))
    database_ready = position(fake, ("ready", "StatefulSet/airflow-postgres"))
    migration = position(fake, ("create", "Job/airflow-migrate"))
    migration_done = position(fake, ("ready", "Job/airflow-migrate"))
    components = [
        position(fake, ("create", m.ref)) for m in rendered if m.kind == "Deployment"
    ]  # every component
    assert namespace < config < min(secrets)
    assert max(secrets) < database < database_ready < migration < migration_done < min(components)
    assert len(components) == 4


def test_every_rendered_object_is_applied_with_the_project_label(fake, rendered):
    install(fake, rendered)

    for manifest in rendered:
        live = fake.named(manifest.kind, manifest.name)
        assert live is not None, manifest.ref
        assert live["metadata"]["labels"][PART_OF_LABEL] == PART_OF
    for name in generated.GENERATED_SECRETS:
        assert fake.named("Secret", name)["metadata"]["labels"][PART_OF_LABEL] == PART_OF  # type: ignore[index]


def test_okteto_overlay_needs_an_existing_namespace(fake):
    okteto = manifests.render("okteto", namespace="team-a", image=IMAGE)

    with pytest.raises(
        Failure, match=r"namespace 'team-a' does not exist and this overlay does not create it"
    ):
        deploying.install(fake.kube(), okteto, namespace="team-a", timeout=30)


# idempotency and secrets


def test_second_deploy_changes_nothing(fake, rendered):
    install(fake, rendered)
    versions = fake.versions_now()
    writes = len(fake.writes())

    report = install(fake, rendered)

    assert fake.versions_now() == versions
    assert fake.writes()[writes:] == []
    assert not report.changed
    assert set(report.actions) == {"unchanged"}
    assert len(report.actions["unchanged"]) == len(rendered)


def test_a_changed_manifest_is_reported_as_configured(fake, rendered):
    install(fake, rendered)
    changed = fresh(rendered)
    config = manifests.find(changed, "ConfigMap", "airflow-config")
    config.obj["data"]["AIRFLOW__API__WORKERS"] = "2"  # type: ignore[union-attr]

    report = deploying.install(fake.kube(), changed, namespace=NAMESPACE, timeout=30)

    assert report.actions["configured"] == ["ConfigMap/airflow-config"]


def test_secrets_are_generated_once_and_never_rotated(fake, rendered):
    first = install(fake, rendered)
    values = {name: fake.named("Secret", name)["data"] for name in generated.GENERATED_SECRETS}  # type: ignore[index]

    second = install(fake, rendered)

    assert sorted(first.secrets_created) == sorted(generated.GENERATED_SECRETS)
    assert second.secrets_created == []
    assert {name: fake.named("Secret", name)["data"] for name in generated.GENERATED_SECRETS} == values  # type: ignore[index]


def test_a_missing_secret_is_generated_from_the_ones_that_exist(fake, rendered):
    install(fake, rendered)
    postgres = fake.named("Secret", generated.POSTGRES_SECRET)["data"]["password"]  # type: ignore[index]
    fake.delete(("Secret", NAMESPACE, generated.METADATA_SECRET))

    report = install(fake, rendered)

    assert report.secrets_created == [generated.METADATA_SECRET]
    url = fake.named("Secret", generated.METADATA_SECRET)["data"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]  # type: ignore[index]
    assert base64.b64decode(postgres).decode() in base64.b64decode(url).decode()


def test_secret_values_are_never_printed(fake, rendered, capsys):
    install(fake, rendered)

    output = capsys.readouterr().out
    for name in generated.GENERATED_SECRETS:
        for field, value in fake.named("Secret", name)["data"].items():  # type: ignore[index]
            if field != "username":
                assert base64.b64decode(value).decode() not in output
    assert "get secret airflow-admin -o jsonpath='{.data.password}' | base64 -d" in output


def test_a_secret_missing_a_key_stops_the_deploy(fake, rendered):
    install(fake, rendered)
    fake.named("Secret", generated.ADMIN_SECRET)["data"].pop("password")  # type: ignore[index]

    with pytest.raises(Failure, match=r"Secret/airflow-admin in namespace 'airflow' lacks the keys password"):
        install(fake, rendered)


# the migration Job


def test_a_new_image_recreates_the_migration_job(fake, rendered):
    install(fake, rendered)
    old_uid = fake.named("Job", "airflow-migrate")["metadata"]["uid"]  # type: ignore[index]
    del fake.log[:]

    report = deploying.install(
        fake.kube(),
        manifests.render("kind", namespace=NAMESPACE, image="airflow-ha:new"),
        namespace=NAMESPACE,
        timeout=30,
    )

    job = fake.named("Job", "airflow-migrate")
    assert report.actions["recreated"] == ["Job/airflow-migrate"]
    assert job["metadata"]["uid"] != old_uid  # type: ignore[index]
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "airflow-ha:new"  # type: ignore[index]
    assert position(fake, ("delete", "Job/airflow-migrate")) < position(
        fake, ("ready", "Deployment/airflow-scheduler")
    )


def test_a_failed_migration_shows_its_log_and_a_rerun_retries_it(fake, rendered):
    fake.job_outcome = "Failed"
    fake.pod_logs["airflow-migrate-x1", False] = "alembic says no\nFATAL: password authentication failed"
    install_until(fake, "Job", "airflow-migrate", lambda labels: [
        pod("airflow-migrate-x1", labels, {"phase": "Failed"}, owner=labels.get(JOB_UID_LABEL)),
    ])  # fmt: skip

    with pytest.raises(Failure) as failed:
        install(fake, rendered)
    message = str(failed.value)
    assert "Job/airflow-migrate in namespace 'airflow': failed" in message
    assert "| FATAL: password authentication failed" in message

    fake.job_outcome = "Complete"
    report = install(fake, rendered)
    assert report.actions["recreated"] == ["Job/airflow-migrate"]
    assert position(fake, ("delete", "Job/airflow-migrate")) < position(
        fake, ("delete", "Pod/airflow-migrate-x1")
    )


# prune


def test_objects_removed_from_the_manifests_are_pruned(fake, rendered):
    install(fake, rendered)
    without = [
        m
        for m in fresh(rendered)
        if m.ref not in ("NetworkPolicy/airflow-api-server", "Deployment/airflow-triggerer")
    ]

    report = deploying.install(fake.kube(), without, namespace=NAMESPACE, timeout=30)

    assert sorted(report.actions["pruned"]) == [
        "Deployment/airflow-triggerer",
        "NetworkPolicy/airflow-api-server",
    ]
    assert fake.named("Deployment", "airflow-triggerer") is None
    assert fake.named("NetworkPolicy", "airflow-api-server") is None


def test_prune_spares_data_secrets_worker_pods_and_unlabelled_objects(fake, rendered):
    install(fake, rendered)
    labels = {PART_OF_LABEL: PART_OF, "kubernetes_executor": "True"}
    fake.put(pod("worker-1", labels, {"phase": "Succeeded"}))
    fake.put(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "someone-elses", "namespace": NAMESPACE},
        }
    )
    fake.put(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "ours-elsewhere", "namespace": "other", "labels": {PART_OF_LABEL: PART_OF}},
        }
    )
    keep = {"PersistentVolumeClaim", "PersistentVolume", "Namespace"}
    without_data = [m for m in fresh(rendered) if m.kind not in keep]

    report = deploying.install(fake.kube(), without_data, namespace=NAMESPACE, timeout=30)

    assert "pruned" not in report.actions
    for kind, name, namespace in [
        ("PersistentVolumeClaim", "airflow-logs", NAMESPACE),
        ("PersistentVolume", "airflow-logs", ""),
        ("Namespace", NAMESPACE, ""),
        ("Pod", "worker-1", NAMESPACE),
        ("ConfigMap", "someone-elses", NAMESPACE),
        ("ConfigMap", "ours-elsewhere", "other"),
        *[("Secret", name, NAMESPACE) for name in generated.GENERATED_SECRETS],
    ]:
        assert fake.named(kind, name, namespace) is not None, f"{kind}/{name}"


# failure diagnosis


def test_image_pull_backoff_names_the_pod_and_the_image(fake, rendered):
    fake.held.add("Deployment/airflow-scheduler")
    install_until(fake, "Deployment", "airflow-scheduler", lambda labels: [
        pod("airflow-scheduler-abc", labels, {"phase": "Pending", "containerStatuses": [{
            "name": "scheduler", "image": IMAGE, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": f"Back-off pulling {IMAGE}"}},
        }]}),
    ])  # fmt: skip

    with pytest.raises(Failure) as failed:
        install(fake, rendered)
    message = str(failed.value)
    assert "Deployment/airflow-scheduler" in message
    assert (
        f"pod airflow-scheduler-abc: container scheduler cannot pull image {IMAGE} (ImagePullBackOff"
        in message
    )
    assert "kind load docker-image" in message


def test_crash_loop_shows_the_last_log_lines(fake, rendered):
    fake.held.add("Deployment/airflow-api-server")
    fake.pod_logs["airflow-api-server-abc", True] = "starting\nsqlalchemy.exc.OperationalError: no such host"
    install_until(fake, "Deployment", "airflow-api-server", lambda labels: [
        pod("airflow-api-server-abc", labels, {"phase": "Running", "containerStatuses": [{
            "name": "api-server", "image": IMAGE, "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s"}},
        }]}, containers=("api-server",)),
    ])  # fmt: skip

    with pytest.raises(Failure) as failed:
        install(fake, rendered)
    message = str(failed.value)
    assert "pod airflow-api-server-abc: container api-server is in CrashLoopBackOff (4 restarts)" in message
    assert "| sqlalchemy.exc.OperationalError: no such host" in message


def test_a_pending_pod_fails_at_the_timeout_with_its_scheduling_event(fake, rendered):
    fake.held.add("StatefulSet/airflow-postgres")
    reason = "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available"
    install_until(fake, "StatefulSet", "airflow-postgres", lambda labels: [
        pod("airflow-postgres-0", labels, {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": reason}]}),
        {"apiVersion": "v1", "kind": "Event", "reason": "FailedScheduling", "message": reason,
         "metadata": {"name": "airflow-postgres-0.1", "namespace": NAMESPACE},
         "involvedObject": {"kind": "Pod", "name": "airflow-postgres-0"}},
    ])  # fmt: skip

    with pytest.raises(Failure) as failed:
        install(fake, rendered, timeout=1)
    message = str(failed.value)
    assert "StatefulSet/airflow-postgres in namespace 'airflow' was not ready after 1 s" in message
    assert f"pod airflow-postgres-0 Pending: FailedScheduling: {reason}" in message
    assert "raise --timeout" in message


def test_a_workload_that_never_gets_ready_fails_at_the_timeout(fake, rendered):
    fake.held.add("Deployment/airflow-dag-processor")

    with pytest.raises(
        Failure, match=r"Deployment/airflow-dag-processor in namespace 'airflow' was not ready after 1 s"
    ):
        install(fake, rendered, timeout=1)


def install_until(
    fake: FakeCluster,
    kind: str,
    name: str,
    make: Callable[[dict[str, str]], list[dict[str, Any]]],
) -> None:
    """Arrange for ``make(selector labels)`` objects to appear once the workload exists."""
    observe = fake.observe

    def observe_then_add(obj: dict[str, Any]) -> None:
        observe(obj)
        workload = fake.named(kind, name)
        if workload is not None and fake.named("Pod", make({})[0]["metadata"]["name"]) is None:
            for extra in make(selector_of(fake, kind, name)):
                fake.put(extra)

    fake.observe = observe_then_add  # type: ignore[method-assign]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"observedGeneration": 1}, ("waiting", "waiting for the controller to observe the new spec")),
        ({"observedGeneration": 2}, ("waiting", "0 of 2 replicas updated")),
        (
            {
                "observedGeneration": 2,
                "conditions": [
                    {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
                ],
            },
            ("failed", "exceeded its progress deadline: "),
        ),
        (
            {
                "observedGeneration": 2,
                "replicas": 3,
                "updatedReplicas": 2,
                "readyReplicas": 2,
                "availableReplicas": 2,
            },
            ("waiting", "1 old replicas pending termination"),
        ),
        (
            {
                "observedGeneration": 2,
                "replicas": 2,
                "updatedReplicas": 2,
                "readyReplicas": 2,
                "availableReplicas": 1,
            },
            ("waiting", "1 of 2 replicas ready and available"),
        ),
        (
            {
                "observedGeneration": 2,
                "replicas": 2,
                "updatedReplicas": 2,
                "readyReplicas": 2,
                "availableReplicas": 2,
            },
            ("done", "2/2"),
        ),
    ],
)
def test_deployment_rollout_follows_kubectl(status, expected):
    deployment = {
        "kind": "Deployment",
        "metadata": {"generation": 2},
        "spec": {"replicas": 2},
        "status": status,
    }

    assert deploying.rollout_status(deployment) == expected


# teardown


def test_teardown_keeps_the_data_and_verifies_the_rest_is_gone(fake, rendered, capsys):
    install(fake, rendered)
    fake.put(pod("leftover-worker", {PART_OF_LABEL: PART_OF}, {"phase": "Failed"}))

    kept = deploying.remove(fake.kube(), NAMESPACE, purge=False, timeout=30)

    expected = sorted(
        [
            "Namespace/airflow",
            "PersistentVolume/airflow-logs",
            "PersistentVolumeClaim/airflow-logs",
            *[f"Secret/{name}" for name in generated.GENERATED_SECRETS],
        ]
    )
    assert kept == expected
    left = sorted(f"{kind}/{name}" for kind, _, name in fake.objects)
    assert left == expected
    assert "kept (data)" in capsys.readouterr().out


def test_teardown_purge_leaves_nothing(fake, rendered):
    install(fake, rendered)

    kept = deploying.remove(fake.kube(), NAMESPACE, purge=True, timeout=30)

    assert kept == []
    assert fake.objects == {}


def test_teardown_touches_nothing_without_the_project_label(fake, rendered):
    install(fake, rendered)
    fake.put(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "someone-elses", "namespace": NAMESPACE},
        }
    )

    deploying.remove(fake.kube(), NAMESPACE, purge=False, timeout=30)

    assert fake.named("ConfigMap", "someone-elses") is not None


# the context-safety rule and the order of deploy's steps


class Recorder:
    """Stands in for the steps around the install, recording which ones ran and in what order.

    A step named in ``results`` returns that value; any other step stops the deploy.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, results: dict[str, Any] | None = None):
        from airflow_ha import image
        from airflow_ha.lint import gate

        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.results = results or {}
        for module, name in [
            (gate, "lint"),
            (image, "build_image"),
            (image, "push_image"),
            (cluster, "ensure_kind_cluster"),
            (cluster, "load_image"),
            (cluster, "kube_clients"),
        ]:
            monkeypatch.setattr(module, name, self.record(name))

    @property
    def steps(self) -> list[str]:
        return [name for name, _, _ in self.calls]

    def record(self, name: str) -> Callable[..., Any]:
        def called(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            if name in self.results:
                return self.results[name]
            raise Failure(f"{name} reached")

        return called


def deploy(**overrides: Any) -> deploying.Report:
    arguments: dict[str, Any] = {
        "context": None,
        "kind_cluster": "airflow-ha",
        "kind_config": "kube/kind-cluster.yaml",
        "overlay": "kind",
        "namespace": NAMESPACE,
        "reference": IMAGE,
        "base_image": "python:3.11-slim-bookworm",
        "registry": None,
        "build": True,
        "kubernetes_versions": ("1.30", "1.35"),
        "timeout": 30,
    }
    return deploying.deploy(**{**arguments, **overrides})


def test_deploy_stops_at_preflight_when_tools_are_missing(monkeypatch, tmp_path):
    recorder = Recorder(monkeypatch)
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker CLI, kind or kubectl

    with pytest.raises(Failure) as failed:
        deploy()
    message = str(failed.value)
    assert (
        "kind not found: install it: https://kind.sigs.k8s.io/docs/user/quick-start/#installation" in message
    )
    assert "kubectl not found" in message
    assert recorder.steps == []


def test_deploy_runs_the_lint_gate_before_building_or_touching_a_cluster(monkeypatch):
    recorder = Recorder(monkeypatch)
    monkeypatch.setattr(cluster, "preflight", lambda context, kind_cluster, build: "kind-airflow-ha")

    with pytest.raises(Failure, match="lint reached"):
        deploy()
    assert recorder.steps == ["lint"]


def test_deploy_on_kind_builds_loads_then_installs(monkeypatch, fake, capsys):
    recorder = Recorder(
        monkeypatch,
        {
            "lint": None,
            "build_image": None,
            "ensure_kind_cluster": True,
            "load_image": None,
            "kube_clients": fake.kube(),
        },
    )
    monkeypatch.setattr(cluster, "preflight", lambda context, kind_cluster, build: "kind-airflow-ha")

    deploy()

    assert recorder.steps == ["lint", "build_image", "ensure_kind_cluster", "load_image", "kube_clients"]
    assert recorder.calls[3][1] == (IMAGE, "airflow-ha", 30)
    assert (
        fake.named("Deployment", "airflow-scheduler")["spec"]["template"]["spec"]["containers"][0]["image"]
        == IMAGE
    )  # type: ignore[index]
    output = " ".join(capsys.readouterr().out.split())
    assert "api-server: http://localhost:30080" in output
    assert "next: invoke smoke --namespace airflow" in output


def test_deploy_with_a_registry_pushes_and_deploys_the_pushed_image(monkeypatch, fake, capsys):
    recorder = Recorder(
        monkeypatch,
        {"lint": None, "build_image": None, "push_image": "sha256:0", "kube_clients": fake.kube("prod")},
    )
    monkeypatch.setattr(cluster, "preflight", lambda context, kind_cluster, build: context)

    deploy(context="prod", registry="registry.example:5000")

    assert recorder.steps == ["lint", "build_image", "push_image", "kube_clients"]
    pushed = f"registry.example:5000/{IMAGE}"
    assert (
        fake.named("Deployment", "airflow-scheduler")["spec"]["template"]["spec"]["containers"][0]["image"]
        == pushed
    )  # type: ignore[index]
    output = " ".join(capsys.readouterr().out.split())
    assert "kubectl --context prod -n airflow port-forward svc/airflow-api-server 8080:8080" in output
    assert "next: invoke smoke --context prod --namespace airflow" in output


def test_deploy_to_another_context_without_a_registry_is_refused(monkeypatch):
    recorder = Recorder(monkeypatch)
    monkeypatch.setattr(cluster, "preflight", lambda context, kind_cluster, build: context)

    with pytest.raises(Failure, match=r"context 'prod' is not the project's kind cluster.*--registry"):
        deploy(context="prod")
    assert recorder.steps == []


def test_teardown_ignores_the_current_context(monkeypatch, tmp_path):
    recorder = Recorder(monkeypatch)
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "prod", "cluster": {"server": "https://prod.example:6443"}}],
                "users": [{"name": "prod", "user": {"token": "t"}}],
                "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "prod"}}],
                "current-context": "prod",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))

    with pytest.raises(
        Failure, match=r"current context 'prod' is never used implicitly: pass --context prod"
    ):
        deploying.teardown(
            context=None,
            kind_cluster="airflow-ha",
            namespace=NAMESPACE,
            purge=True,
            delete_cluster=False,
            timeout=30,
        )
    assert recorder.steps == []


def test_teardown_of_the_cluster_refuses_another_context(monkeypatch):
    with pytest.raises(
        Failure, match=r"--cluster deletes the project's kind cluster 'airflow-ha'; 'prod' is not it"
    ):
        deploying.teardown(
            context="prod",
            kind_cluster="airflow-ha",
            namespace=NAMESPACE,
            purge=False,
            delete_cluster=True,
            timeout=30,
        )
