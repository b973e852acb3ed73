"""The real thing on kind: deploy, smoke, NetworkPolicies, an HA drill, a redeploy that changes
nothing, a config change, teardown.

Written after Airflow's own kind tests (kubernetes-tests/ in apache/airflow): the same
REST flow, 300 s per phase, and a drill (`invoke drill`) that breaks the deployment mid-run
and still expects success with no worker pods left behind. The
tests run in file order and share one deployment; `invoke` runs as a user would run it,
with the kind cluster, node image and images `nox -s e2e` prepared (tests/e2e/prepare.py).
The last test deletes the cluster.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import watch

from airflow_ha import REPO_ROOT, cluster, kubeapi, manifests, port_forward, rollout, smoke
from airflow_ha import deploy as deploying
from airflow_ha import drill as drilling
from airflow_ha.polling import poll

from . import flows
from .conftest import KIND_CLUSTER

NAMESPACE = "airflow"
CONTEXT = cluster.kind_context(KIND_CLUSTER)
DAG_ID = "smoke_kubernetes_executor"
PHASE_TIMEOUT = 300
WORKLOADS = frozenset({"Deployment", "StatefulSet", "Job"})
AIRFLOW_ENV = REPO_ROOT / "kube" / "base" / "airflow.env"
CONFIG_CHANGE = "AIRFLOW__CORE__PARALLELISM=33"  # the default is 32
OUTSIDER_NAMESPACE = "airflow-e2e-outsider"
OKTETO_NAMESPACE = "airflow-okteto"


def invoke(*args: str, timeout: int = 4 * PHASE_TIMEOUT) -> None:
    """Run an invoke task as a user would, showing its output; fail on a non-zero exit."""
    command = [sys.executable, "-m", "invoke", *args]
    result = subprocess.run(command, cwd=REPO_ROOT, timeout=timeout, check=False)
    assert result.returncode == 0, f"`invoke {' '.join(args)}` exited {result.returncode}"


@pytest.fixture(scope="module")
def kind_cluster() -> Iterator[None]:
    """The project's kind cluster, made by the first deploy and deleted at the end, whatever happens."""
    if KIND_CLUSTER in cluster.kind_clusters():
        pytest.fail(
            f"the e2e tests make the kind cluster {KIND_CLUSTER!r} and delete it; it exists already, "
            "so they will not touch it: `invoke teardown --cluster` first, if it can go",
            pytrace=False,
        )
    yield
    invoke("teardown", "--cluster")


@pytest.fixture(scope="module")
def kube(kind_cluster: None) -> kubeapi.Kube:
    invoke("deploy", "--timeout", str(PHASE_TIMEOUT))
    return kubeapi.kube_clients(CONTEXT)


def expected_objects() -> set[kubeapi.Key]:
    """What deploy applies to the kind cluster, from the manifests themselves."""
    return {kubeapi.key(m.obj) for m in manifests.render("kind", namespace=NAMESPACE)}


def deployed_inventory(kube: kubeapi.Kube) -> dict[kubeapi.Key, dict[str, Any]]:
    """The labelled objects in the namespace; fails when any rendered object is not among them.

    A listing that sees nothing (a wrong namespace, label or context) would make every check
    over it pass; this makes it fail instead.
    """
    found = deploying.inventory(kube, NAMESPACE, kind_overlay_kinds())
    missing = expected_objects() - set(found)
    assert not missing, f"not in the cluster's inventory: {sorted(missing)}"
    return found


def worker_pods(kube: kubeapi.Kube) -> list[dict[str, Any]]:
    """The worker pods left, but failed ones that ran no task: delete_worker_pods_on_failure=False
    keeps those, and smoke and the drill name them (airflow_ha.worker_pods.require_worker_pods)."""
    pods = kubeapi.list_pods(kube, NAMESPACE, {"kubernetes_executor": "True"})
    return [p for p in pods if (p.get("status") or {}).get("phase") != "Failed"]


@functools.cache
def kind_overlay_kinds() -> frozenset[tuple[str, str]]:
    """What the kind overlay renders: deploy and teardown list these cluster-scoped kinds too."""
    return frozenset(deploying.kinds_of(manifests.render("kind", namespace=NAMESPACE)))


def applied_state(kube: kubeapi.Kube) -> dict[kubeapi.Key, Any]:
    """What deploy decides about each object: controllers' status updates do not count."""
    state: dict[kubeapi.Key, Any] = {}
    for key, obj in deployed_inventory(kube).items():
        if deploying.owned(obj) or obj["kind"] == "Pod":
            continue
        metadata = obj["metadata"]
        ours = [m for m in metadata.get("managedFields") or [] if m.get("manager") == deploying.FIELD_MANAGER]
        secret = metadata["resourceVersion"] if deploying.generated_secret(obj) else None
        state[key] = (metadata.get("generation"), ours, secret)
    return state


def test_deploy_rolls_out_every_component(kube):
    workloads = {
        k: o for k, o in deployed_inventory(kube).items() if o["kind"] in WORKLOADS and not deploying.owned(o)
    }
    assert {k for k in expected_objects() if k[1] in WORKLOADS} <= set(workloads)
    for key, obj in workloads.items():
        assert rollout.rollout_status(obj)[0] == "done", f"{key}: {rollout.rollout_status(obj)}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "dag_id" in metafunc.fixturenames:
        extra = metafunc.config.getoption("--dag-id")
        metafunc.parametrize("dag_id", [DAG_ID, *([extra] if extra and extra != DAG_ID else [])])


def secrets_and_tokens(pod: dict[str, Any]) -> list[str]:
    """What of a pod spec hands it a Secret or an API token."""
    spec, found = pod["spec"], []
    for container in [*(spec.get("initContainers") or []), *spec["containers"]]:
        found += [
            f"env {e['name']}"
            for e in container.get("env") or []
            if "secretKeyRef" in (e.get("valueFrom") or {})
        ]
        found += [
            f"envFrom {e['secretRef']['name']}" for e in container.get("envFrom") or [] if e.get("secretRef")
        ]
    for volume in spec.get("volumes") or []:
        sources = [volume, *((volume.get("projected") or {}).get("sources") or [])]
        found += [
            f"volume {volume['name']}"
            for source in sources
            if {"secret", "serviceAccountToken"} & set(source)
        ]
    return found


@dataclass
class SeenWorkerPods:
    created: list[dict[str, Any]] = field(default_factory=list)  # each as the executor created it
    nodes: dict[str, str] = field(default_factory=dict)  # pod name -> the node it was bound to
    error: str = ""  # why the watch ended before the block did: it may have missed pods


@contextmanager
def watching_worker_pods(kube: kubeapi.Kube, namespace: str) -> Iterator[SeenWorkerPods]:
    """Every worker pod created in the namespace while the block runs."""
    seen, watcher = SeenWorkerPods(), watch.Watch()

    stopped = threading.Event()

    def record() -> None:
        try:
            for event in watcher.stream(
                kube.core.list_namespaced_pod,
                namespace,
                label_selector="kubernetes_executor=True",
                timeout_seconds=900,
            ):
                pod = kube.core.api_client.sanitize_for_serialization(event["object"])
                if event["type"] == "ADDED":
                    seen.created.append(pod)
                if pod["spec"].get("nodeName"):
                    seen.nodes[pod["metadata"]["name"]] = pod["spec"]["nodeName"]
        except Exception as error:  # stopping closes the stream under it, which is no error
            if not stopped.is_set():
                seen.error = f"{type(error).__name__}: {error}"

    recorder = threading.Thread(target=record, daemon=True)
    recorder.start()
    try:
        yield seen
    finally:
        stopped.set()
        watcher.stop()
    assert not seen.error, f"the worker pod watch ended early: {seen.error}"


def test_smoke(kube, dag_id):
    """The smoke run, while a watch keeps every worker pod the executor creates, as it created it."""
    with watching_worker_pods(kube, NAMESPACE) as seen:
        invoke("smoke", "--dag-id", dag_id, "--timeout", str(PHASE_TIMEOUT))
    assert worker_pods(kube) == []
    assert seen.created, "the watch saw no worker pod"
    for pod in seen.created:
        assert pod["spec"].get("automountServiceAccountToken") is False, pod["metadata"]["name"]
        assert secrets_and_tokens(pod) == [], pod["metadata"]["name"]


@pytest.fixture
def outsider_namespace(kube: kubeapi.Kube) -> Iterator[str]:
    namespaces = kube.dynamic.resources.get(api_version="v1", kind="Namespace")
    namespaces.create(
        body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OUTSIDER_NAMESPACE}}
    )
    yield OUTSIDER_NAMESPACE
    namespaces.delete(name=OUTSIDER_NAMESPACE)


def test_network_policies_do_on_the_cluster_what_the_lint_gate_says(kube, outsider_namespace):
    rendered = manifests.render("kind", namespace=NAMESPACE)
    deployed_image = deployed_inventory(kube)[("apps", "Deployment", NAMESPACE, "airflow-api-server")]
    image = deployed_image["spec"]["template"]["spec"]["containers"][0]["image"]

    outcomes = flows.outcomes(kube, rendered, manifests.pod_template(rendered), image, outsider_namespace)

    for outcome in outcomes:
        print(f"  {outcome.line()}")
    assert any(not o.required for o in outcomes), "no forbidden flow was tried"
    wrong = [o.line() for o in outcomes if o.cluster_allows != o.required]
    assert not wrong, "the cluster does not keep the deployment's flows:\n" + "\n".join(wrong)
    disagree = [o.line() for o in outcomes if o.cluster_allows != o.lint_allows]
    assert not disagree, "the lint gate and the cluster disagree:\n" + "\n".join(disagree)


def test_off_kind_the_port_forward_outlives_the_api_server_pod_it_used(kube):
    """On another cluster smoke and the drill reach the API by port-forward, not kind's NodePort:
    like the Service, the relay must leave the pod it used once that pod is deleted, while it
    terminates and after it is gone."""
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "airflow-api-server"}}
    service["metadata"]["namespace"] = NAMESPACE
    pods_answered = []
    try:
        with smoke.api_server(kube, NAMESPACE, on_kind=False) as url:
            assert httpx.get(f"{url}/api/v2/monitor/health", timeout=30).is_success
            used, _ = port_forward.serving_pod(kube, NAMESPACE, kubeapi.read(kube, service) or {})
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": used, "namespace": NAMESPACE}}
            drilling.delete_pod(kube, NAMESPACE, used)
            pods_answered.append(httpx.get(f"{url}/api/v2/monitor/health", timeout=30))
            poll(
                lambda: kubeapi.read(kube, pod) is None or None,
                timeout=PHASE_TIMEOUT,
                every=1,
                timed_out=lambda: AssertionError(f"pod {used} was not deleted within {PHASE_TIMEOUT} s"),
            )
            pods_answered.append(httpx.get(f"{url}/api/v2/monitor/health", timeout=30))
    finally:
        drilling.wait_rolled_out(kube, NAMESPACE, "api-server", PHASE_TIMEOUT)

    answers = [f"HTTP {a.status_code} {a.text[:100]}" for a in pods_answered]
    assert all(a.is_success for a in pods_answered), f"while {used} terminated, then after: {answers}"


def test_drill_a_scheduler_killed_an_api_server_deleted_and_a_node_drained_mid_run(kube):
    invoke("drill", "--timeout", str(PHASE_TIMEOUT), timeout=6 * PHASE_TIMEOUT)

    assert worker_pods(kube) == []


def test_redeploy_changes_nothing(kube):
    before = applied_state(kube)

    invoke("deploy", "--timeout", str(PHASE_TIMEOUT))

    assert applied_state(kube) == before


def readers_of(config_map: str) -> set[kubeapi.Key]:
    rendered = manifests.render("kind", namespace=NAMESPACE)
    return {
        kubeapi.key(m.obj)
        for m in rendered
        if m.kind in WORKLOADS
        and any(config_map in manifests.config_maps_read(pod) for _, pod in manifests.pod_specs(m))
    }


def rollout_marks(kube: kubeapi.Kube) -> dict[kubeapi.Key, tuple[Any, Any]]:
    """Per workload: its uid (a Job is recreated) and generation (a pod template change bumps it)."""
    return {
        key: (obj["metadata"]["uid"], obj["metadata"].get("generation"))
        for key, obj in deployed_inventory(kube).items()
        if obj["kind"] in WORKLOADS and not deploying.owned(obj)
    }


def test_a_change_to_airflow_env_restarts_exactly_the_workloads_that_read_it(kube):
    readers = readers_of("airflow-config")
    assert readers, "nothing reads airflow-config: the test would prove nothing"
    before = rollout_marks(kube)
    # The edit makes the tree dirty, which gives a build a new tag: deploy the image that runs,
    # so that only the config changes.
    deployed = deployed_inventory(kube)[("apps", "Deployment", NAMESPACE, "airflow-api-server")]
    tag = deployed["spec"]["template"]["spec"]["containers"][0]["image"].rpartition(":")[2]
    original = AIRFLOW_ENV.read_text()
    try:
        AIRFLOW_ENV.write_text(f"{original.rstrip()}\n{CONFIG_CHANGE}\n")
        invoke("deploy", "--skip-build", "--tag", tag, "--timeout", str(PHASE_TIMEOUT))
    finally:
        AIRFLOW_ENV.write_text(original)
    after = rollout_marks(kube)

    restarted = {key for key in before if after.get(key) != before[key]}
    assert restarted == readers


def test_teardown_keeps_the_database_logs_and_secrets(kube):
    logs = REPO_ROOT / ".kind" / "airflow-logs" / NAMESPACE
    task_logs = {p for p in logs.rglob("*.log") if "dag_id=" in str(p)}
    assert task_logs, f"no task log under {logs} before teardown"

    invoke("teardown", "--timeout", str(PHASE_TIMEOUT))

    left = deploying.belonging(deploying.inventory(kube, NAMESPACE, kind_overlay_kinds()), NAMESPACE)
    kinds = {(obj["kind"], obj["metadata"]["name"]) for obj in left.values()}
    assert ("PersistentVolumeClaim", "data-airflow-postgres-0") in kinds
    assert ("PersistentVolumeClaim", "airflow-logs") in kinds
    assert {("Secret", name) for name in ("airflow-admin", "airflow-metadata", "airflow-postgres")} <= kinds
    assert not {kind for kind, _ in kinds} & WORKLOADS, f"workloads left: {sorted(kinds)}"
    assert task_logs <= set(logs.rglob("*.log"))


def test_teardown_purge_leaves_nothing(kube):
    invoke("teardown", "--purge", "--timeout", str(PHASE_TIMEOUT))

    left = deploying.belonging(deploying.inventory(kube, NAMESPACE, kind_overlay_kinds()), NAMESPACE)
    assert left == {}, f"left behind: {sorted(kubeapi.ref(obj) for obj in left.values())}"


@pytest.fixture
def okteto_like_namespace(kube: kubeapi.Kube) -> Iterator[str]:
    """A namespace that exists before the deploy, with an Okteto Cloud namespace's quota."""
    quota = yaml.safe_load((REPO_ROOT / "kube" / "overlays" / "okteto" / "budget.yaml").read_text())
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OKTETO_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "okteto-quota", "namespace": OKTETO_NAMESPACE},
            "spec": {
                "hard": {
                    "pods": str(quota["pods"]),
                    "limits.cpu": quota["cpu"],
                    "limits.memory": quota["memory"],
                }
            },
        },
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "okteto-pod-limits", "namespace": OKTETO_NAMESPACE},
            "spec": {
                "limits": [{"type": "Pod", "max": {"cpu": quota["pod_cpu"], "memory": quota["pod_memory"]}}]
            },
        },
    ]
    for obj in objects:
        kubeapi.server_side_apply(kube, obj, "airflow-ha-e2e")
    yield OKTETO_NAMESPACE
    kubeapi.resource_of(kube, "v1", "Namespace").delete(name=OKTETO_NAMESPACE)


def test_the_okteto_overlay_runs_in_a_namespace_with_okteto_quotas(kube, okteto_like_namespace):
    """The okteto overlay as it deploys into a developer namespace: no NodePort (smoke goes
    through the port-forward), pods within the quota and the per-pod limits, and every pod
    that mounts the ReadWriteOnce logs disk, worker pods too, on the disk's node."""
    namespace = okteto_like_namespace
    options = ("--overlay", "okteto", "--namespace", namespace, "--timeout", str(PHASE_TIMEOUT))

    invoke("deploy", *options)
    with watching_worker_pods(kube, namespace) as seen:
        invoke("smoke", "--namespace", namespace, "--timeout", str(PHASE_TIMEOUT))

    logs_writers = kubeapi.list_pods(kube, namespace, {"airflow-ha/logs-node": "airflow-logs"})
    nodes = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in logs_writers}
    replicas = sum(
        m.obj["spec"].get("replicas", 1)
        for m in manifests.render("okteto", namespace=namespace)
        if m.kind == "Deployment"
    )
    assert len(nodes) == replicas, f"not every Deployment pod is running: {nodes}"
    assert seen.nodes, "the watch saw no worker pod bound to a node"
    nodes.update(seen.nodes)
    assert len(set(nodes.values())) == 1, f"not all on the logs disk's node: {nodes}"
    # A pod the quota or the limits refuse is retried by its controller and may start later:
    # only the events say it was refused.
    events = kubeapi.list_objects(kube, kubeapi.resource_of(kube, "v1", "Event"), namespace)
    refused = [
        f"{e['involvedObject']['kind']}/{e['involvedObject']['name']}: {e.get('message')}"
        for e in events.get("items") or []
        if e.get("reason") == "FailedCreate"
    ]
    assert refused == []
    invoke("teardown", "--purge", *options)


def test_teardown_cluster_deletes_the_cluster_and_the_logs_folder():
    invoke("teardown", "--purge", "--cluster", "--timeout", str(PHASE_TIMEOUT))

    assert KIND_CLUSTER not in cluster.kind_clusters()
    assert not (REPO_ROOT / ".kind" / "airflow-logs").exists()
