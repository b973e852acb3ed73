"""Deploy and teardown logic against an in-memory Kubernetes API.

The Kubernetes API is faked in-process in this file because no cluster can run here:
FakeCluster keeps objects in memory behind the slice of the dynamic client (resources.get,
get, list, server_side_apply, create, delete) and CoreV1Api (read_namespaced_pod_log) that
airflow_ha.kubeapi uses. Like the real API server it bumps resourceVersion only when an
apply changes something, refuses a changed Job spec as immutable, needs the namespace
before namespaced objects, and deletes dependants with their owner. Its RBAC can limit
every request to one namespace, or deny one verb on one kind, answering 403 as the API
server does. Its controllers make a workload ready one poll after it was written, unless
a test holds it back, and a namespace's `default` ServiceAccount exists with it. A dry run
(`dry_run="All"`) checks as a write does and keeps nothing.
The manifests are the real ones, rendered by kustomize.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import itertools
import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from airflow_ha import PART_OF, PART_OF_LABEL, cluster, kubeapi, manifests, preflight, rollout, tools
from airflow_ha import deploy as deploying
from airflow_ha import generated_secrets as generated
from airflow_ha.console import Failure

NAMESPACE = "airflow"
IMAGE = "airflow-ha:3.3.2-test"
CLUSTER_SCOPED = {
    "Namespace",
    "PersistentVolume",
    "ClusterRole",
    "ClusterRoleBinding",
    "StorageClass",
    "SelfSubjectAccessReview",
}
WORKLOADS = {"Deployment", "StatefulSet", "Job"}
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"
CONFIG_CHECKSUM = "checksum/airflow-config"
TEMPLATE_CHECKSUM = "checksum/airflow-pod-template"
KIND_KINDS = {("v1", "Namespace"), ("v1", "PersistentVolume")}  # what the kind overlay renders cluster-scoped


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


def plural(kind: str) -> str:
    lower = kind.lower()
    if lower.endswith("y"):
        return f"{lower[:-1]}ies"
    return f"{lower}es" if lower.endswith("s") else f"{lower}s"


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
        # RBAC: when set, only requests inside this namespace are allowed (as for an Okteto user)...
        self.only_namespace: str | None = None
        self.denied: set[tuple[str, str]] = set()  # ...and never these (verb, kind)
        self.requests: list[tuple[str, str, str]] = []  # (verb, kind, namespace or "") as authorized
        self.reviews = True  # whether it answers SelfSubjectAccessReview

    # the dynamic client surface

    @property
    def resources(self) -> FakeCluster:
        return self

    def get(self, api_version: str, kind: str) -> FakeResource:  # resources.get(api_version=, kind=)
        if kind == "HorizontalPodAutoscaler" or (kind == "SelfSubjectAccessReview" and not self.reviews):
            raise ResourceNotFoundError(f"No matches found for {kind}")  # as on a cluster that lacks a kind
        return FakeResource(self, api_version, kind)

    def allowed(self, verb: str, resource: str, namespace: str) -> bool:
        """The fake's RBAC, by resource plural, as a SelfSubjectAccessReview asks."""
        if self.only_namespace is not None and namespace != self.only_namespace:
            return False
        return not any(verb == v and resource == plural(kind) for v, kind in self.denied)

    def read_namespaced_pod_log(self, name: str, namespace: str, previous: bool = False, **_: Any) -> Any:
        """As the client answers with _preload_content=False: the raw response, bytes in .data."""
        if (name, previous) not in self.pod_logs:
            raise api_error(400, f"previous terminated container in pod {name} not found")
        return SimpleNamespace(data=self.pod_logs[name, previous].encode())

    def kube(self, context: str = "kind-airflow-ha") -> kubeapi.Kube:
        return kubeapi.Kube(context=context, dynamic=self, core=self)

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

    def authorize(self, verb: str, resource: FakeResource, namespace: str | None) -> None:
        """A 403 as the API server sends it when RBAC does not allow the request."""
        scope = (namespace or "") if resource.namespaced else ""
        self.requests.append((verb, resource.kind, scope))
        if not self.allowed(verb, resource.name, scope):
            where = f' in the namespace "{scope}"' if scope else " at the cluster scope"
            raise api_error(
                403,
                f'{resource.name} is forbidden: User "dev" cannot {verb} resource "{resource.name}" '
                f'in API group "{resource.group}"{where}',
            )

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
        self.name = plural(kind)  # as the dynamic client's Resource: the plural and the API group
        self.group = api_version.rpartition("/")[0]

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
        self.fake.authorize("get" if name is not None else "list", self, namespace)
        if name is not None:
            obj = self.fake.objects.get(self._key(name, namespace))
            made_by_its_controller = ("Namespace", "", namespace) in self.fake.objects
            if obj is None and (self.kind, name) == ("ServiceAccount", "default") and made_by_its_controller:
                return FakeInstance({"kind": "ServiceAccount", "metadata": {"name": name}})
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
        self,
        body: dict[str, Any],
        field_manager: str,
        namespace: str | None = None,
        dry_run: str | None = None,
        **_: Any,
    ):
        if dry_run != "All":
            return self._server_side_apply(body, field_manager, namespace)
        # As the API server's dry run: every check of a write, and nothing kept.
        kept = copy.deepcopy((self.fake.objects, self.fake.applied, self.fake.log))
        try:
            return self._server_side_apply(body, field_manager, namespace)
        finally:
            self.fake.objects, self.fake.applied, self.fake.log = kept

    def _server_side_apply(self, body: dict[str, Any], field_manager: str, namespace: str | None):
        assert field_manager == deploying.FIELD_MANAGER
        self.fake.authorize("patch", self, namespace)
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
            same_spec = self.fake.applied.get(key, {}).get("spec") == body.get("spec")
            stored["metadata"]["generation"] = existing["metadata"]["generation"] + (0 if same_spec else 1)
            stored["status"] = existing.get("status", {})
        self.fake.applied[key] = copy.deepcopy(body)
        self.fake.log.append(("update" if existing else "create", f"{self.kind}/{key[2]}"))
        return FakeInstance(self.fake.put(stored))

    def create(
        self, body: dict[str, Any], namespace: str | None = None, dry_run: str | None = None, **_: Any
    ) -> FakeInstance:
        if self.kind == "SelfSubjectAccessReview":  # allowed to everyone, and writes nothing
            asked = body["spec"]["resourceAttributes"]
            allowed = self.fake.allowed(asked["verb"], asked["resource"], asked.get("namespace", ""))
            return FakeInstance({**body, "status": {"allowed": allowed}})
        self.fake.authorize("create", self, namespace)
        if dry_run == "All":
            name = body["metadata"].get("name") or body["metadata"]["generateName"] + "dry"
            return FakeInstance({**body, "metadata": {**body["metadata"], "name": name}})
        key = self._key(body["metadata"]["name"], namespace)
        if key in self.fake.objects:
            raise api_error(409, f'{self.kind.lower()}s "{key[2]}" already exists')
        self.fake.log.append(("create", f"{self.kind}/{key[2]}"))
        return FakeInstance(self.fake.put(body))

    def delete(
        self, name: str, namespace: str | None = None, propagation_policy: str | None = None, **_: Any
    ):
        assert propagation_policy == "Background"
        self.fake.authorize("delete", self, namespace)
        key = self._key(name, namespace)
        if key not in self.fake.objects:
            raise api_error(404, f'{self.kind.lower()}s "{name}" not found')
        self.fake.delete(key)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    monkeypatch.setattr(rollout, "POLL_SECONDS", 0.01)
    return FakeCluster()


@pytest.fixture(scope="module")
def rendered() -> list[manifests.Manifest]:
    return manifests.render("kind", namespace=NAMESPACE, image=IMAGE)


def fresh(rendered: list[manifests.Manifest]) -> list[manifests.Manifest]:
    return [manifests.Manifest(m.source, copy.deepcopy(m.obj)) for m in rendered]


def install(
    fake: FakeCluster, rendered: list[manifests.Manifest], timeout: int = 30
) -> deploying.DeployReport:
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
    # Unchanged although every component carries the config checksums.
    assert {CONFIG_CHECKSUM, TEMPLATE_CHECKSUM} <= pod_annotations(
        fake, "Deployment/airflow-scheduler"
    ).keys()


def test_an_airflow_config_change_rolls_the_workloads_that_read_it(fake, rendered):
    """A changed airflow.env changes the checksum on the pod template of every workload that
    reads airflow-config, so their pods restart; the database does not read it and stays."""
    install(fake, rendered)
    components = sorted(m.ref for m in rendered if m.kind == "Deployment")
    checksums = {ref: pod_annotations(fake, ref)[CONFIG_CHECKSUM] for ref in components}
    changed = fresh(rendered)
    config = manifests.find(changed, "ConfigMap", "airflow-config")
    config.obj["data"]["AIRFLOW__API__WORKERS"] = "2"  # type: ignore[union-attr]

    report = deploying.install(fake.kube(), changed, namespace=NAMESPACE, timeout=30)

    assert sorted(report.actions["configured"]) == sorted(["ConfigMap/airflow-config", *components])
    assert report.actions["recreated"] == ["Job/airflow-migrate"]  # its pod reads the config too
    assert "StatefulSet/airflow-postgres" in report.actions["unchanged"]
    assert CONFIG_CHECKSUM not in pod_annotations(fake, "StatefulSet/airflow-postgres")
    for ref in components:
        assert pod_annotations(fake, ref)[CONFIG_CHECKSUM] != checksums[ref], ref
    assert fake.named("Deployment", "airflow-scheduler")["metadata"]["generation"] == 2  # type: ignore[index]


def test_a_pod_template_change_rolls_only_the_scheduler(fake, rendered):
    """The worker pod template is read by the scheduler alone (KubernetesExecutor)."""
    install(fake, rendered)
    changed = fresh(rendered)
    template = manifests.find(changed, "ConfigMap", "airflow-pod-template")
    template.obj["data"]["pod-template.yaml"] += "\n# edited\n"  # type: ignore[union-attr]

    report = deploying.install(fake.kube(), changed, namespace=NAMESPACE, timeout=30)

    assert sorted(report.actions["configured"]) == [
        "ConfigMap/airflow-pod-template",
        "Deployment/airflow-scheduler",
    ]


def pod_annotations(fake: FakeCluster, ref: str) -> dict[str, str]:
    kind, name = ref.split("/")
    live = fake.named(kind, name)
    assert live is not None, ref
    return dict(live["spec"]["template"]["metadata"].get("annotations") or {})


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
        ("PersistentVolume", "airflow-logs-airflow", ""),
        ("Namespace", NAMESPACE, ""),
        ("Pod", "worker-1", NAMESPACE),
        ("ConfigMap", "someone-elses", NAMESPACE),
        ("ConfigMap", "ours-elsewhere", "other"),
        *[("Secret", name, NAMESPACE) for name in generated.GENERATED_SECRETS],
    ]:
        assert fake.named(kind, name, namespace) is not None, f"{kind}/{name}"


UNLABELLED_CONFIG = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "airflow-config", "namespace": NAMESPACE},
}


def test_a_same_named_object_without_the_label_is_refused_before_any_write(fake, rendered):
    fake.put(copy.deepcopy(UNLABELLED_CONFIG))
    writes = len(fake.log)

    with pytest.raises(Failure) as refused:
        install(fake, rendered)

    assert str(refused.value).startswith(
        f"refusing to take over ConfigMap/airflow-config in namespace {NAMESPACE}: it exists without the "
        f"label {PART_OF_LABEL}={PART_OF}, so something else made it; nothing was applied."
    )
    assert "`invoke deploy --adopt`" in str(refused.value)
    assert fake.log[writes:] == []
    assert PART_OF_LABEL not in (
        fake.named("ConfigMap", "airflow-config", NAMESPACE)["metadata"].get("labels") or {}
    )


def test_adopt_takes_the_object_over_and_teardown_then_removes_it(fake, rendered):
    fake.put(copy.deepcopy(UNLABELLED_CONFIG))

    deploying.install(fake.kube(), fresh(rendered), namespace=NAMESPACE, timeout=30, adopt=True)

    labels = fake.named("ConfigMap", "airflow-config", NAMESPACE)["metadata"]["labels"]
    assert labels[PART_OF_LABEL] == PART_OF
    deploying.remove(fake.kube(), NAMESPACE, rendered_kinds=KIND_KINDS, purge=False, timeout=30)
    assert fake.named("ConfigMap", "airflow-config", NAMESPACE) is None


def test_prune_never_touches_another_namespace(fake, rendered):
    """Another namespace's deploy left a labelled StorageClass, a kind this deploy renders too:
    the inventory lists it, and prune must leave it alone."""
    ours = manifests.Manifest(
        "kube/overlays/kind/storage-class.yaml",
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": "airflow-logs-hostpath", "labels": {PART_OF_LABEL: PART_OF}},
            "provisioner": "kubernetes.io/no-provisioner",
        },
    )
    theirs = copy.deepcopy(ours.obj)
    theirs["metadata"]["name"] = "team-b-logs"
    fake.put(theirs)

    report = install(fake, [*rendered, ours])

    assert "pruned" not in report.actions
    assert fake.named("StorageClass", "team-b-logs") is not None
    assert ("list", "StorageClass", "") in fake.requests  # it was listed, so the guard decided


def test_prune_skips_what_an_inventory_found_in_another_namespace(fake, rendered):
    """Even if a listing returned them, objects of another namespace are never pruned."""
    install(fake, rendered)
    elsewhere = fake.put(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "airflow-config", "namespace": "team-b", "labels": {PART_OF_LABEL: PART_OF}},
        }
    )
    before = {kubeapi.key(elsewhere): elsewhere}

    assert deploying.prune(fake.kube(), fresh(rendered)[:1], before, NAMESPACE) == []
    assert fake.named("ConfigMap", "airflow-config", "team-b") is not None


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

    assert rollout.rollout_status(deployment) == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"currentRevision": "r1", "updateRevision": "r2"}, ("waiting", "rolling update in progress")),
        ({"currentRevision": "r2", "updateRevision": "r2"}, ("done", "1/1")),
    ],
)
def test_statefulset_rollout_waits_for_its_update_revision(status, expected):
    """Ready pods of the old revision are not a finished rollout (kubectl's rule)."""
    statefulset = {
        "kind": "StatefulSet",
        "metadata": {"generation": 2},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 2, "replicas": 1, "readyReplicas": 1, **status},
    }

    assert rollout.rollout_status(statefulset) == expected


# teardown


def test_teardown_keeps_the_data_and_verifies_the_rest_is_gone(fake, rendered, capsys):
    install(fake, rendered)
    fake.put(pod("leftover-worker", {PART_OF_LABEL: PART_OF}, {"phase": "Failed"}))

    kept = deploying.remove(fake.kube(), NAMESPACE, rendered_kinds=KIND_KINDS, purge=False, timeout=30)

    expected = sorted(
        [
            "Namespace/airflow",
            "PersistentVolume/airflow-logs-airflow",
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

    kept = deploying.remove(fake.kube(), NAMESPACE, rendered_kinds=KIND_KINDS, purge=True, timeout=30)

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

    deploying.remove(fake.kube(), NAMESPACE, rendered_kinds=KIND_KINDS, purge=False, timeout=30)

    assert fake.named("ConfigMap", "someone-elses") is not None


def test_teardown_purge_never_deletes_a_claim_or_volume_of_another_namespace(fake, rendered):
    """team-b deployed too: its labelled claim, and the labelled volume bound to that claim, stay."""
    install(fake, rendered)
    fake.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-b"}})
    labels = {PART_OF_LABEL: PART_OF}
    fake.put(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "airflow-logs", "namespace": "team-b", "labels": labels},
        }
    )
    fake.put(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": "team-b-logs", "labels": labels},
            "spec": {"claimRef": {"namespace": "team-b", "name": "airflow-logs"}},
        }
    )

    deploying.remove(fake.kube(), NAMESPACE, rendered_kinds=KIND_KINDS, purge=True, timeout=30)

    assert fake.named("PersistentVolume", "team-b-logs") is not None
    assert fake.named("PersistentVolumeClaim", "airflow-logs", "team-b") is not None
    assert fake.named("PersistentVolume", "airflow-logs") is None  # ours went


# rights that stop at one namespace (RBAC enforced by the in-process fake)


def test_a_namespace_limited_user_deploys_and_tears_down_the_okteto_overlay(fake):
    """The fake refuses every request outside team-a, as for an Okteto developer. The okteto
    overlay renders nothing cluster-scoped, so deploy and teardown stay inside the namespace."""
    fake.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    fake.only_namespace = "team-a"
    okteto = manifests.render("okteto", namespace="team-a", image=IMAGE)
    kube = fake.kube("okteto")

    report = deploying.install(kube, okteto, namespace="team-a", timeout=30)
    kept = deploying.remove(kube, "team-a", rendered_kinds=deploying.kinds_of(okteto), purge=True, timeout=30)

    assert len(report.actions["created"]) == len(okteto)
    assert kept == []
    assert list(fake.objects) == [("Namespace", "", "team-a")]
    # The one request outside: whether the namespace exists, whose 403 is taken as "it does".
    assert [r for r in fake.requests if r[2] != "team-a"] == [("get", "Namespace", "")]


def test_a_cluster_scoped_kind_without_the_right_is_one_line_and_nothing_is_applied(fake, rendered):
    """The kind overlay renders a Namespace and a PersistentVolume: listing them needs cluster rights."""
    fake.only_namespace = NAMESPACE

    with pytest.raises(Failure) as failed:
        install(fake, rendered)

    assert str(failed.value) == (
        "forbidden: cannot list namespaces at cluster scope (kube context 'kind-airflow-ha'): "
        'it lacks the RBAC right "list namespaces" cluster-wide (granted by a ClusterRoleBinding)'
    )
    assert fake.writes() == []


@pytest.mark.parametrize(
    ("denied", "message"),
    [
        (("create", "Secret"), 'cannot create Secret/airflow-secrets in namespace \'team-a\' (kube context '
         '\'okteto\'): it lacks the RBAC right "create secrets" in namespace \'team-a\''),
        (("patch", "Deployment"), 'cannot patch Deployment/airflow-api-server in namespace \'team-a\' (kube '
         'context \'okteto\'): it lacks the RBAC right "patch deployments.apps" in namespace \'team-a\''),
        (("list", "PodDisruptionBudget"), 'cannot list poddisruptionbudgets in namespace \'team-a\' (kube '
         'context \'okteto\'): it lacks the RBAC right "list poddisruptionbudgets.policy" in namespace '
         '\'team-a\''),
    ],
)  # fmt: skip
def test_a_missing_right_in_the_namespace_is_one_line_and_nothing_is_applied(fake, denied, message):
    """The fake's RBAC denies one verb on one kind inside team-a; SelfSubjectAccessReview tells
    deploy so before its first write."""
    fake.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    fake.only_namespace = "team-a"
    fake.denied.add(denied)
    okteto = manifests.render("okteto", namespace="team-a", image=IMAGE)

    with pytest.raises(Failure) as failed:
        deploying.install(fake.kube("okteto"), okteto, namespace="team-a", timeout=30)

    assert str(failed.value) == f"forbidden: {message}"
    assert fake.writes() == []


def test_every_missing_right_is_named_on_the_one_line(fake):
    fake.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    fake.only_namespace = "team-a"
    fake.denied |= {("create", "Secret"), ("patch", "NetworkPolicy"), ("create", "NetworkPolicy")}
    okteto = manifests.render("okteto", namespace="team-a", image=IMAGE)

    with pytest.raises(Failure) as failed:
        deploying.install(fake.kube("okteto"), okteto, namespace="team-a", timeout=30)

    message = str(failed.value)
    assert message.startswith("forbidden: cannot patch NetworkPolicy/")
    assert message.endswith('; also missing: "create networkpolicies.networking.k8s.io", "create secrets"')
    assert "\n" not in message
    assert fake.writes() == []


def test_without_access_reviews_the_refused_call_itself_is_one_line(fake):
    """An API server that does not serve SelfSubjectAccessReview: the 403 of the apply is the error."""
    fake.reviews = False
    fake.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    fake.only_namespace = "team-a"
    fake.denied.add(("patch", "Deployment"))
    okteto = manifests.render("okteto", namespace="team-a", image=IMAGE)

    with pytest.raises(Failure) as failed:
        deploying.install(fake.kube("okteto"), okteto, namespace="team-a", timeout=30)

    assert str(failed.value) == (
        "forbidden: cannot patch Deployment/airflow-api-server in namespace 'team-a' (kube context "
        "'okteto'): it lacks the RBAC right \"patch deployments.apps\" in namespace 'team-a'"
    )


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
            (image, "local_images"),
            (kubeapi, "kube_clients"),
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


def deploy(**overrides: Any) -> deploying.DeployReport:
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
    (tmp_path / "checkov").write_text("#!/bin/sh\n")  # present, so nothing is installed
    (tmp_path / "checkov").chmod(0o755)
    monkeypatch.setattr(tools, "REPO_ROOT", tmp_path)  # nothing provisioned yet
    for name in ("KIND", "KUBECTL"):  # and nothing can be downloaded: a closed port on loopback
        monkeypatch.setattr(
            tools, name, dataclasses.replace(getattr(tools, name), url="http://127.0.0.1:9/x")
        )

    with pytest.raises(Failure) as failed:
        deploy()
    message = str(failed.value)
    assert (
        "kind missing: kind v0.33.0 is not installed and the download failed: tried http://127.0.0.1:9/x"
        in (message)
    )
    assert "Install it by hand (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)" in message
    assert "kubectl missing: kubectl v1.35.8 is not installed" in message
    assert recorder.steps == []


def test_deploy_runs_the_lint_gate_before_building_or_touching_a_cluster(monkeypatch):
    recorder = Recorder(monkeypatch)
    monkeypatch.setattr(preflight, "run", lambda context, kind_cluster, build: "kind-airflow-ha")

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
            "local_images": [],
            "kube_clients": fake.kube(),
        },
    )
    monkeypatch.setattr(preflight, "run", lambda context, kind_cluster, build: "kind-airflow-ha")

    deploy()

    assert recorder.steps == [
        "lint",
        "build_image",
        "ensure_kind_cluster",
        "load_image",
        "local_images",
        "kube_clients",
    ]
    assert recorder.calls[3][1] == (IMAGE, "airflow-ha", 30)
    assert recorder.calls[4][1] == ({"postgres:17.6-bookworm"},)  # the project image is loaded already
    assert (
        fake.named("Deployment", "airflow-scheduler")["spec"]["template"]["spec"]["containers"][0]["image"]
        == IMAGE
    )  # type: ignore[index]
    output = " ".join(capsys.readouterr().out.split())
    assert "api-server: http://localhost:30080" in output
    assert "next: invoke smoke --namespace airflow" in output


def test_deploy_on_kind_loads_the_other_images_this_machine_has_and_passes_the_node_image(monkeypatch, fake):
    recorder = Recorder(
        monkeypatch,
        {
            "lint": None,
            "build_image": None,
            "ensure_kind_cluster": False,
            "load_image": None,
            "local_images": ["postgres:17.6-bookworm"],
            "kube_clients": fake.kube(),
        },
    )
    monkeypatch.setattr(preflight, "run", lambda context, kind_cluster, build: "kind-airflow-ha")

    deploy(node_image="airflow-ha-kind-node:v1.35.8-local")

    loaded = [args[0] for name, args, _ in recorder.calls if name == "load_image"]
    assert loaded == [IMAGE, "postgres:17.6-bookworm"]
    assert recorder.calls[2][2]["node_image"] == "airflow-ha-kind-node:v1.35.8-local"


def test_deploy_with_a_registry_pushes_and_deploys_the_pushed_image(monkeypatch, fake, capsys):
    recorder = Recorder(
        monkeypatch,
        {"lint": None, "build_image": None, "push_image": "sha256:0", "kube_clients": fake.kube("prod")},
    )
    monkeypatch.setattr(preflight, "run", lambda context, kind_cluster, build: context)

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
    monkeypatch.setattr(preflight, "run", lambda context, kind_cluster, build: context)

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
            overlay="kind",
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
            overlay="kind",
            namespace=NAMESPACE,
            purge=False,
            delete_cluster=True,
            timeout=30,
        )


def test_a_skip_the_dry_run_decided_yields_to_an_object_changed_since(fake, rendered):
    """Minutes of rollouts lie between the dry run and a component's apply: a Deployment scaled
    by hand meanwhile is applied after all, not left as the dry run saw it."""
    install(fake, rendered)
    kube = fake.kube()
    checked = manifests.with_config_checksums(fresh(rendered))
    scheduler = next(m for m in checked if m.ref == "Deployment/airflow-scheduler")
    before = deploying.inventory(kube, NAMESPACE, deploying.kinds_of(checked))
    scaled = copy.deepcopy(fake.objects["Deployment", NAMESPACE, scheduler.name])
    scaled["spec"]["replicas"] = 5
    fake.put(scaled)
    fake.requests.clear()

    deploying.apply(kube, scheduler, before, {scheduler.ref})

    assert ("patch", "Deployment", NAMESPACE) in fake.requests
