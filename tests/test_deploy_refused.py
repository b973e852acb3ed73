"""When the API server refuses an object, the error names it, and for a kind the cluster refuses
says how to drop that kind in an overlay. The refusals are ApiExceptions built here; the
suggested patch is rendered by kustomize (`kubectl kustomize`) to prove that it works.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from airflow_ha import REPO_ROOT, deploy, manifests
from airflow_ha.manifests import Manifest

PDB = Manifest(
    "kube/base/api-server.yaml",
    {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "airflow-api-server"}},
)


# As the RBAC authorizer words it.
RBAC_REFUSAL = (
    'poddisruptionbudgets.policy is forbidden: User "dev" cannot patch resource "poddisruptionbudgets" '
    'in API group "policy" in the namespace "team-a"'
)


def api_error(status: int, message: str) -> ApiException:
    error = ApiException(status=status, reason="Refused")
    error.body = json.dumps({"kind": "Status", "message": message})
    return error


@pytest.mark.parametrize("status", [403, 404])
def test_a_refused_kind_is_named_with_the_patch_that_drops_it(status):
    message = deploy.refused(PDB, api_error(status, RBAC_REFUSAL))

    assert message.startswith(
        "kube/base/api-server.yaml: PodDisruptionBudget/airflow-api-server: the API server refused it: "
        "poddisruptionbudgets.policy is forbidden"
    )
    assert "drop every PodDisruptionBudget in your overlay's kustomization.yaml" in message
    assert "kind: PodDisruptionBudget" in message


def test_an_invalid_object_gets_no_advice_to_drop_its_kind():
    message = deploy.refused(PDB, api_error(422, "spec.maxUnavailable: Invalid value"))

    assert "drop every" not in message
    assert message.endswith("spec.maxUnavailable: Invalid value")


def test_the_suggested_patch_drops_the_kind_from_an_overlay(tmp_path: Path):
    message = deploy.refused(PDB, api_error(403, RBAC_REFUSAL))
    suggested = yaml.safe_load(message[message.index("  patches:") :])
    kube = tmp_path / "kube"
    shutil.copytree(REPO_ROOT / "kube", kube)
    overlay = kube / "overlays" / "okteto"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    kustomization["patches"] += suggested["patches"]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))

    before = manifests.render("okteto")
    after = manifests.render("okteto", kube_dir=kube)

    assert [m.ref for m in before if m.kind == "PodDisruptionBudget"]
    assert [m.ref for m in after if m.kind == "PodDisruptionBudget"] == []
    assert len(after) == len(before) - len([m for m in before if m.kind == "PodDisruptionBudget"])
    assert not re.search(r"\$patch", yaml.safe_dump([m.obj for m in after]))


@pytest.mark.parametrize(
    "reason",
    [
        'persistentvolumeclaims "airflow-logs" is forbidden: exceeded quota: storage',
        'poddisruptionbudgets "airflow-api-server" is forbidden: unable to create new content in '
        "namespace team-a because it is being terminated",
    ],
)
def test_a_403_that_any_object_of_the_kind_could_meet_suggests_no_patch(reason):
    message = deploy.refused(PDB, api_error(403, reason))

    assert message.endswith(f"the API server refused it: {reason}")
