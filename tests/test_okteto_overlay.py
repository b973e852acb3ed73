"""The okteto overlay: its worker pod template stays the base template plus two declared changes,
and its api-server is reached through Okteto's ingress, never a NodePort.

The overlay is rendered by kustomize (`kubectl kustomize`); no Kubernetes API is involved.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from airflow_ha import REPO_ROOT, manifests

BASE_TEMPLATE = REPO_ROOT / "kube/base/pod-template.yaml"
OKTETO_TEMPLATE = REPO_ROOT / "kube/overlays/okteto/pod-template.yaml"
LOGS_NODE_LABEL = "airflow-ha/logs-node"


def without_okteto_changes(template: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The okteto template with its declared changes undone: logs-node label and affinity, CPU limit."""
    undone = copy.deepcopy(template)
    undone["metadata"]["labels"].pop(LOGS_NODE_LABEL, None)
    undone["spec"].pop("affinity", None)
    base_limits = base["spec"]["containers"][0]["resources"]["limits"]
    undone["spec"]["containers"][0]["resources"]["limits"]["cpu"] = base_limits["cpu"]
    return undone


def test_the_okteto_worker_template_is_the_base_template_plus_its_declared_changes():
    base = yaml.safe_load(BASE_TEMPLATE.read_text())
    okteto = yaml.safe_load(OKTETO_TEMPLATE.read_text())

    assert okteto["metadata"]["labels"][LOGS_NODE_LABEL] == "airflow-logs"
    assert okteto["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert without_okteto_changes(okteto, base) == base, (
        "kube/overlays/okteto/pod-template.yaml drifted from kube/base/pod-template.yaml: "
        "make the same change in both"
    )


@pytest.mark.parametrize(
    "drift",
    [
        lambda t: t["spec"]["containers"][0].update(image="airflow-ha:old"),
        lambda t: t["spec"]["volumes"].pop(),
        lambda t: t["spec"]["containers"][0]["resources"]["limits"].update(memory="2Gi"),
    ],
)
def test_the_comparison_catches_a_drift(drift):
    base = yaml.safe_load(BASE_TEMPLATE.read_text())
    drifted = yaml.safe_load(OKTETO_TEMPLATE.read_text())
    drift(drifted)

    assert without_okteto_changes(drifted, base) != base


def test_the_rendered_okteto_overlay_ships_its_own_worker_template():
    rendered = manifests.render("okteto")

    template = manifests.pod_template(rendered)

    assert template is not None
    assert template.source == "kube/overlays/okteto/pod-template.yaml"
    assert template.obj == yaml.safe_load(OKTETO_TEMPLATE.read_text())


def test_the_api_server_is_reached_through_okteto_ingress_and_no_service_is_a_node_port():
    rendered = manifests.render("okteto")
    services = {m.name: m.obj for m in rendered if m.kind == "Service"}

    annotations = services["airflow-api-server"]["metadata"].get("annotations") or {}
    assert annotations.get("dev.okteto.com/auto-ingress") == "true"
    # Okteto would convert a NodePort or LoadBalancer Service into an endpoint of its own.
    assert {name: s["spec"].get("type", "ClusterIP") for name, s in services.items()} == dict.fromkeys(
        services, "ClusterIP"
    )


def test_every_pod_that_mounts_the_okteto_logs_claim_is_required_onto_its_node():
    """Pod affinity, not ReadWriteMany: the claim is ReadWriteOnce on Okteto's disks."""
    rendered = manifests.render("okteto")
    claim = manifests.find(rendered, "PersistentVolumeClaim", "airflow-logs")
    assert claim is not None and claim.obj["spec"]["accessModes"] == ["ReadWriteOnce"]
    template = manifests.pod_template(rendered)
    assert template is not None

    mounting = []
    for manifest in [*rendered, template]:
        for _, spec in manifests.pod_specs(manifest):
            if any(
                (v.get("persistentVolumeClaim") or {}).get("claimName") == "airflow-logs"
                for v in spec.get("volumes") or []
            ):
                labels = (
                    manifest.labels
                    if manifest.kind == "Pod"
                    else manifest.obj["spec"]["template"]["metadata"]["labels"]
                )
                mounting.append((manifest.ref, labels, spec))

    assert sorted(ref for ref, _, _ in mounting) == [
        "Deployment/airflow-api-server",
        "Deployment/airflow-dag-processor",
        "Deployment/airflow-scheduler",
        "Deployment/airflow-triggerer",
        "Pod/airflow-worker",
    ]
    for ref, labels, spec in mounting:
        assert labels.get(LOGS_NODE_LABEL) == "airflow-logs", ref
        (term,) = spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term == {
            "topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": {LOGS_NODE_LABEL: "airflow-logs"}},
        }, ref
