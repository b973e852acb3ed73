"""The arithmetic and the derivations behind the cluster rules, on in-memory objects.

Pure functions: the manifests are the repository's own, rendered by real kustomize once, or
small objects built here; no cluster and no Kubernetes API (nothing is faked).
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest

from airflow_ha import REPO_ROOT, manifests
from airflow_ha.console import Failure, console
from airflow_ha.lint import workloads
from airflow_ha.lint.checks import admission, availability, identity, reachability
from airflow_ha.manifests import Manifest

from .repo import copy_repository, edit


@pytest.fixture(scope="module")
def rendered() -> list[Manifest]:
    return manifests.render("kind")


@pytest.fixture
def objects(rendered: list[Manifest]) -> list[Manifest]:
    return [Manifest(m.source, copy.deepcopy(m.obj)) for m in rendered]


def find(objects: list[Manifest], kind: str, name: str) -> Manifest:
    found = manifests.find(objects, kind, name)
    assert found is not None
    return found


def set_env(objects: list[Manifest], key: str, value: str) -> None:
    find(objects, "ConfigMap", manifests.AIRFLOW_CONFIG_MAP).obj["data"][key] = value


def flow_rows(objects: list[Manifest]) -> dict[tuple[str, str, str], str]:
    template = manifests.pod_template(objects)
    return {
        (source, destination, purpose): verdict
        for source, destination, _, purpose, verdict, _ in reachability.flow_table(
            reachability.judge(objects, template)
        )
    }


def test_the_required_flows_are_derived_and_allowed_today(objects: list[Manifest]) -> None:
    rows = flow_rows(objects)
    expected_allowed = {
        ("worker pods", "api-server", "Execution API"),
        ("api-server", "triggerer", "triggerer logs"),
        ("scheduler", "Kubernetes API", "Kubernetes API"),
        ("api-server", "Kubernetes API", "Kubernetes API"),
    }
    expected_allowed |= {
        (c, "database", "database")
        for c in ("api-server", "scheduler", "dag-processor", "triggerer", "migrate")
    }
    expected_allowed |= {
        (c, "cluster DNS", "DNS")
        for c in ("worker pods", "api-server", "scheduler", "dag-processor", "triggerer", "migrate")
    }
    assert {key for key, verdict in rows.items() if verdict.startswith("allowed (")} == expected_allowed
    execution_api = rows[("worker pods", "api-server", "Execution API")]
    assert execution_api == "allowed (airflow-api-server spec.ingress[0])"
    assert rows[("scheduler", "cluster DNS", "DNS")] == "allowed (no policy restricts it)"
    assert rows[("worker pods", "database", "database, without credentials")] == "denied, as it must be"


def test_database_users_are_the_pods_that_read_the_database_secret(objects: list[Manifest]) -> None:
    """A dag-processor that no longer reads the database URL must no longer reach PostgreSQL."""
    pod = find(objects, "Deployment", "airflow-dag-processor").obj["spec"]["template"]["spec"]
    for container in pod["initContainers"] + pod["containers"]:
        container["envFrom"] = [e for e in container["envFrom"] if "airflow-metadata" not in str(e)]
    found = list(reachability.findings(objects, manifests.pod_template(objects)))
    assert [(rule, m.ref, field) for rule, m, field, _ in found] == [
        (reachability.ALLOWED, "NetworkPolicy/airflow-postgres", "spec.ingress[0]")
    ]
    assert "dag-processor -> database" in found[0][3]


def test_the_triggerer_log_port_comes_from_the_airflow_config(objects: list[Manifest]) -> None:
    assert workloads.trigger_log_port({}) == 8794  # the installed Airflow's default
    set_env(objects, workloads.TRIGGER_LOG_PORT_KEY, "8795")
    found = list(reachability.findings(objects, manifests.pod_template(objects)))
    assert [(m.ref, field) for _, m, field, _ in found] == [
        ("NetworkPolicy/airflow-triggerer", "spec.ingress[0].ports")
    ]
    assert "TCP 8795" in found[0][3]


def test_api_callers_follow_the_rbac_bindings(objects: list[Manifest]) -> None:
    binding = find(objects, "RoleBinding", "airflow-pod-log-reader")
    binding.obj["subjects"][0]["name"] = "airflow"  # the triggerer's account, by mistake
    template = manifests.pod_template(objects)
    callers = {source for source, destination, _ in flow_rows(objects) if destination == "Kubernetes API"}
    assert callers == {"scheduler", "dag-processor", "triggerer", "migrate"}
    found = {(rule, m.ref) for rule, m, _, _ in identity.findings(objects, template)}
    assert (identity.NO_TOKEN, "Deployment/airflow-triggerer") in found
    assert (identity.NEEDLESS_TOKEN, "Deployment/airflow-api-server") in found


def test_the_executor_setting_alone_makes_the_scheduler_an_api_caller(objects: list[Manifest]) -> None:
    objects = [m for m in objects if m.ref != "RoleBinding/airflow-pod-launcher"]
    find(objects, "Deployment", "airflow-scheduler").obj["spec"]["template"]["spec"][
        "automountServiceAccountToken"
    ] = False
    found = list(identity.findings(objects, manifests.pod_template(objects)))
    assert [(rule, m.ref) for rule, m, _, _ in found] == [(identity.NO_TOKEN, "Deployment/airflow-scheduler")]
    assert "KubernetesExecutor" in found[0][3]


def _workload(pod: dict[str, Any], service_account: Manifest | None = None) -> list[Manifest]:
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "app"},
        "spec": {"template": {"metadata": {"labels": {"app": "x"}}, "spec": pod}},
    }
    return [Manifest("app.yaml", deployment), *([service_account] if service_account else [])]


@pytest.mark.parametrize(
    ("pod_setting", "account_setting", "gets_token", "decided_by"),
    [
        (None, None, True, "Deployment/app"),
        (None, False, False, "ServiceAccount/sa"),
        (True, False, True, "Deployment/app"),
        (False, True, False, "Deployment/app"),
    ],
)
def test_the_pod_setting_overrides_the_service_account(
    pod_setting: bool | None, account_setting: bool | None, gets_token: bool, decided_by: str
) -> None:
    pod: dict[str, Any] = {"serviceAccountName": "sa"}
    if pod_setting is not None:
        pod["automountServiceAccountToken"] = pod_setting
    account: dict[str, Any] = {"kind": "ServiceAccount", "metadata": {"name": "sa"}}
    if account_setting is not None:
        account["automountServiceAccountToken"] = account_setting
    objects = _workload(pod, Manifest("sa.yaml", account))
    (item,) = list(manifests.workloads(objects))
    token, where, _, _ = identity.token(item, {"sa": objects[1]})
    assert (token, where.ref) == (gets_token, decided_by)


@pytest.mark.parametrize(
    ("budget", "replicas", "allowed"),
    [
        ({"maxUnavailable": 1}, 2, 1),
        ({"maxUnavailable": 0}, 2, 0),
        ({"minAvailable": 1}, 2, 1),
        ({"minAvailable": 2}, 2, 0),
        ({"minAvailable": "50%"}, 3, 1),  # 1.5 rounds up to 2 available
        ({"minAvailable": "60%"}, 2, 0),
        ({"maxUnavailable": "50%"}, 3, 2),  # rounds up too
        ({"maxUnavailable": "10%"}, 2, 1),
    ],
)
def test_allowed_disruptions(budget: dict[str, Any], replicas: int, allowed: int) -> None:
    pdb = Manifest("pdb.yaml", {"kind": "PodDisruptionBudget", "metadata": {"name": "b"}, "spec": budget})
    assert availability.allowed_disruptions(pdb, replicas) == allowed


@pytest.mark.parametrize(
    ("strategy", "replicas", "resolved"),
    [
        ({}, 2, (1, 0)),  # 25% surge rounds up, 25% unavailable rounds down
        ({}, 4, (1, 1)),
        ({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "10%"}}, 2, (0, 1)),  # both 0: one unavailable
        ({"type": "Recreate"}, 2, None),
    ],
)
def test_rollout_fenceposts(
    strategy: dict[str, Any], replicas: int, resolved: tuple[int, int] | None
) -> None:
    (item,) = list(manifests.workloads(_workload({})))
    item.manifest.obj["spec"].update({"replicas": replicas, "strategy": strategy})
    assert item.rolling_update() == resolved


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("500m", True),
        ("1.5Gi", True),
        (2, True),
        (0.5, True),
        ("1e3", True),
        ("500mi", False),
        ("1 Gi", False),
        ("1GB", False),
        ("1K", False),
        ("-1", False),
        ("", False),
    ],
)
def test_quantities(value: Any, valid: bool) -> None:
    assert (admission.quantity_error(value) is None) is valid


@pytest.mark.parametrize(
    ("kind", "name", "valid"),
    [
        ("Deployment", "airflow.scheduler", True),
        ("Deployment", "Airflow", False),
        ("Service", "airflow.api", False),  # a DNS-1035 label: no dots
        ("Service", "1-api", False),  # must start with a letter
        ("Namespace", "a.b", False),
        ("Job", "j" * 64, False),  # the name becomes a label value
        ("Role", "pods:reader", True),  # RBAC names are path segments
        ("Role", "a/b", False),
    ],
)
def test_names_per_kind(kind: str, name: str, valid: bool) -> None:
    assert (admission.name_error(kind, name) is None) is valid


@pytest.mark.parametrize(
    ("key", "value", "valid"),
    [
        ("app.kubernetes.io/name", "airflow", True),
        ("app.kubernetes.io/name", "", True),
        ("app.kubernetes.io/name", "air flow", False),
        ("app.kubernetes.io/name", "-airflow", False),
        ("Example.com/name", "x", False),
        ("name", "v" * 64, False),
    ],
)
def test_labels(key: str, value: str, valid: bool) -> None:
    assert (admission.label_error(key, value) is None) is valid


def _paths(node: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found = [prefix] if prefix else []
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in children:
        found += _paths(child, (*prefix, key))
    return found


def test_a_field_of_the_wrong_shape_never_crashes_a_cluster_rule(rendered: list[Manifest]) -> None:
    """Whatever field holds whatever type, the rules report or stay silent: kubernetes-validate names
    the field; a crash would take the whole gate down with a traceback."""
    every = [(i, path) for i, m in enumerate(rendered) for path in _paths(m.obj) if path != ("metadata",)]
    chooser = random.Random(0)
    cluster = availability.cluster_nodes(REPO_ROOT, "kind")
    template_text = ("data", manifests.POD_TEMPLATE_KEY)
    for _ in range(300):
        index, path = chooser.choice(every)
        broken = list(rendered)  # the rules never modify objects: only the broken one is a copy
        broken[index] = Manifest(rendered[index].source, copy.deepcopy(rendered[index].obj))
        node = broken[index].obj
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = chooser.choice(["x", 3, -1, "1%", True, None, [], [1], {}, {"a": 1}])
        template = None if path[:2] == template_text else manifests.pod_template(broken)
        list(reachability.findings(broken, template))
        list(admission.findings([*broken, *([template] if template else [])]))
        list(availability.findings(broken, cluster))
        list(identity.findings(broken, template))


@pytest.fixture
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Table cells on one line each, whatever the terminal of the test run."""
    monkeypatch.setattr(console, "width", 200)


@pytest.mark.usefixtures("wide_console")
def test_lint_flows_prints_each_flow_and_its_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    """`invoke lint --flows` on the repository (real kustomize)."""
    reachability.show_flows(root=REPO_ROOT)

    output = capsys.readouterr().out
    assert "worker pods" in output and "Execution API" in output
    assert "DENIED" not in output and "ALLOWED" not in output


@pytest.mark.usefixtures("wide_console")
def test_lint_flows_fails_on_a_denied_flow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`invoke lint --flows` on a copy whose api-server policy opens the wrong port."""
    root = copy_repository(tmp_path)
    edit(root / "kube/base/network-policies.yaml", "- port: 8080", "- port: 8081")

    with pytest.raises(Failure, match="a flow above is wrong"):
        reachability.show_flows(root=root)

    assert "DENIED by NetworkPolicy/airflow-api-server" in capsys.readouterr().out
