"""Deploy's dry run against the REAL Kubernetes API server's admission (tests/controlplane).

Before its first write, deploy tries every object and a Pod of every pod template with
dryRun=All, so admission is proven by Kubernetes itself: ResourceQuota, PodSecurity and the
rest. No node runs the pods; admission is all these tests ask of them.
"""

from __future__ import annotations

import json
import time

import pytest
from controlplane.cli import deploy_args as deploy_args_of
from controlplane.cli import invoke
from controlplane.plane import ControlPlane

from airflow_ha import PART_OF, PART_OF_LABEL, kubeapi, manifests
from airflow_ha import deploy as deploying
from airflow_ha.console import Failure

TAG = "3.3.2-admission"
QUOTA = "team-quota"
RESTRICTED = "team-restricted"
KIND_FIRST, KIND_SECOND = "kind-first", "kind-second"
NODE_PORT_SERVICE = "airflow-api-server-nodeport"


def deploy_args(namespace: str) -> tuple[str, ...]:
    return deploy_args_of("okteto", namespace, "admin", TAG)


def kind_deploy(namespace: str) -> tuple[str, ...]:
    return deploy_args_of("kind", namespace, "admin", TAG)


def namespace(plane: ControlPlane, name: str, labels: dict[str, str] | None = None) -> None:
    plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}})


def ours(plane: ControlPlane, name: str) -> list[str]:
    listed = plane.kubectl(
        "get",
        "all,configmaps,secrets,persistentvolumeclaims",
        "-n",
        name,
        "-l",
        f"{PART_OF_LABEL}={PART_OF}",
        "-o",
        "json",
    )
    return [f"{o['kind']}/{o['metadata']['name']}" for o in json.loads(listed.stdout)["items"]]


def test_an_object_over_the_namespace_quota_stops_deploy_before_any_write(
    control_plane: ControlPlane,
) -> None:
    """The logs claim asks 2Gi of a namespace allowed 1Gi of storage: the dry run finds it."""
    namespace(control_plane, QUOTA)
    control_plane.apply(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "storage", "namespace": QUOTA},
            "spec": {"hard": {"requests.storage": "1Gi"}},
        }
    )
    refused = invoke(control_plane, control_plane.admin_kubeconfig, *deploy_args(QUOTA))

    assert refused.returncode != 0, refused.stdout + refused.stderr
    last = refused.stderr.strip().splitlines()
    assert "Traceback" not in refused.stderr, refused.stderr
    assert last[-1] == "Nothing was applied.", refused.stderr
    claim = next(m for m in manifests.render("okteto", namespace=QUOTA) if m.kind == "PersistentVolumeClaim")
    assert last[-2].startswith(f"error: {claim.source}: {claim.ref}: the API server refused it: "), (
        refused.stderr
    )
    assert "exceeded quota: storage, requested: requests.storage=2Gi" in last[-2], refused.stderr
    assert "drop every" not in refused.stderr  # a quota is not the kind's refusal
    assert refused.stored_by("airflow-ha-test-admin") == []
    assert ours(control_plane, QUOTA) == []


def test_every_pod_the_overlays_render_is_admitted_where_podsecurity_enforces_restricted(
    control_plane: ControlPlane,
) -> None:
    """The hardening claims, held to the real PodSecurity admission plugin: in a namespace that
    enforces `restricted`, deploy's dry run admits every pod template, the worker pods' too, and
    the real controllers then create every pod of every workload, refused none."""
    namespace(
        control_plane,
        RESTRICTED,
        {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "v1.35",
        },
    )
    rendered = manifests.render("okteto", namespace=RESTRICTED, image=f"airflow-ha:{TAG}")
    workloads = [m for m in rendered if m.kind in ("Deployment", "StatefulSet", "Job")]
    expected = sum(m.obj["spec"].get("replicas", m.obj["spec"].get("parallelism", 1)) for m in workloads)

    deployed = invoke(control_plane, control_plane.admin_kubeconfig, *deploy_args(RESTRICTED))

    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert f"dry run: the API server admits all {len(rendered)} objects and their pods" in deployed.stdout
    pods: list[str] = []
    for _ in range(60):
        pods = [p for p in ours(control_plane, RESTRICTED) if p.startswith("Pod/")]
        if len(pods) >= expected:
            break
        time.sleep(1)
    refusals = control_plane.kubectl(
        "get", "events", "-n", RESTRICTED, "--field-selector", "reason=FailedCreate", "-o", "name"
    )
    assert refusals.stdout.strip() == "", control_plane.kubectl("get", "events", "-n", RESTRICTED).stdout
    assert len(pods) == expected, pods


def test_a_pod_that_breaks_restricted_is_refused_by_the_dry_run_with_the_reason(
    control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same check, watched failing: one container allowed to escalate its privileges."""
    namespace(control_plane, RESTRICTED, {"pod-security.kubernetes.io/enforce": "restricted"})
    monkeypatch.setenv("KUBECONFIG", str(control_plane.admin_kubeconfig))
    kube = kubeapi.kube_clients("admin")
    rendered = manifests.render("okteto", namespace=RESTRICTED, image=f"airflow-ha:{TAG}")
    scheduler = next(m for m in rendered if m.ref == "Deployment/airflow-scheduler")
    container = scheduler.obj["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["allowPrivilegeEscalation"] = True

    with pytest.raises(Failure) as refused:
        deploying.dry_run(kube, rendered, deploying.inventory(kube, RESTRICTED, deploying.kinds_of(rendered)))

    message = str(refused.value)
    assert message.startswith(
        "kube/base/scheduler.yaml: Deployment/airflow-scheduler: the API server would refuse"
    )
    assert 'violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false' in message
    assert message.endswith("Nothing was applied.")


def test_the_kind_overlay_creates_its_namespace_then_tries_and_applies_everything(
    control_plane: ControlPlane,
) -> None:
    """The namespace the overlay renders is created first, empty, so that what goes in it can be
    tried; the pods are tried with the namespace's own ServiceAccount while theirs is unwritten."""
    deployed = invoke(control_plane, control_plane.admin_kubeconfig, *kind_deploy(KIND_FIRST))

    assert deployed.returncode == 0, deployed.output
    assert "dry run: the API server admits all" in deployed.stdout, deployed.output
    assert control_plane.kubectl("get", "namespace", KIND_FIRST).returncode == 0
    assert f"Service/{NODE_PORT_SERVICE}" in ours(control_plane, KIND_FIRST)


def test_a_second_namespace_on_kind_is_refused_before_any_write_but_its_empty_namespace(
    control_plane: ControlPlane,
) -> None:
    """kind publishes the api-server's NodePort on the laptop, and a cluster has one of each port:
    the second namespace's dry run meets the first's Service."""
    refused = invoke(control_plane, control_plane.admin_kubeconfig, *kind_deploy(KIND_SECOND))

    assert refused.returncode != 0, refused.output
    lines = refused.stderr.strip().splitlines()
    assert f"Service/{NODE_PORT_SERVICE}: the API server refused it: " in lines[-2], refused.stderr
    assert "30080: provided port is already allocated" in lines[-2], refused.stderr
    assert lines[-1] == (
        f"Nothing else was applied: Namespace/{KIND_SECOND} was created, empty, so that the objects "
        "in it could be tried."
    ), refused.stderr
    assert [r for r in refused.stored_by("airflow-ha-test-admin") if r.resource != "namespaces"] == []
    assert ours(control_plane, KIND_SECOND) == []


def test_a_pod_whose_service_account_nothing_makes_is_refused(
    control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stand-in account is only for accounts this deploy writes: a misspelt one is refused."""
    namespace(control_plane, RESTRICTED)
    monkeypatch.setenv("KUBECONFIG", str(control_plane.admin_kubeconfig))
    kube = kubeapi.kube_clients("admin")
    rendered = manifests.render("okteto", namespace=RESTRICTED, image=f"airflow-ha:{TAG}")
    scheduler = next(m for m in rendered if m.ref == "Deployment/airflow-scheduler")
    scheduler.obj["spec"]["template"]["spec"]["serviceAccountName"] = "airflow-shceduler"

    with pytest.raises(Failure) as refused:
        deploying.dry_run(kube, rendered, deploying.inventory(kube, RESTRICTED, deploying.kinds_of(rendered)))

    assert 'serviceaccount "airflow-shceduler" not found' in str(refused.value)
