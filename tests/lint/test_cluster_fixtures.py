"""Each fixture of the cluster rules breaks a copy of the repository the way its rule catches.

Real kustomize renders the broken copy; no Kubernetes API is involved (nothing is faked).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from airflow_ha import REPO_ROOT, manifests
from airflow_ha.lint.checks import admission, availability, identity, reachability

FIXTURES = Path(__file__).parent / "fixtures"
CHECKS = ("reachability", "admission", "availability", "identity")
LINTED = ("kube", "dags", "schemas", "docker/Dockerfile", ".yamllint", "invoke.yaml")


def findings(root: Path, check: str) -> Iterator[tuple[str, str, str, str, str]]:
    for overlay_dir in sorted((root / "kube" / "overlays").glob("*/kustomization.yaml")):
        overlay = overlay_dir.parent.name
        objects = manifests.render(overlay_dir.parent, kube_dir=root / "kube")
        objects = [manifests.Manifest(_relative(root, m.source), m.obj) for m in objects]
        template = manifests.pod_template(objects)
        if check == "reachability":
            found = reachability.findings(objects, template)
        elif check == "admission":
            found = admission.findings([*objects, *([template] if template else [])])
        elif check == "availability":
            found = availability.findings(objects, availability.cluster_nodes(root, overlay))
        else:
            found = identity.findings(objects, template)
        for rule, manifest, field, message in found:
            yield rule, manifest.source, manifest.ref, field, message


def _relative(root: Path, source: str) -> str:
    path = Path(source)
    path = path if path.is_absolute() else REPO_ROOT / path
    for base in (root.resolve(), REPO_ROOT):
        if path.resolve().is_relative_to(base):
            return str(path.resolve().relative_to(base))
    return source


def copy(tmp_path: Path) -> Path:
    for name in LINTED:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name)
        elif source.is_file():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, tmp_path / name)
    return tmp_path


def apply(root: Path, edits: list[dict[str, str]]) -> None:
    for edit in edits:
        path = root / edit["file"]
        if "replace" in edit:
            text = path.read_text()
            assert text.count(edit["replace"]) == 1, f"{edit['replace']!r} is not in {path} exactly once"
            path.write_text(text.replace(edit["replace"], edit["with"]))
        elif "append" in edit:
            path.write_text(path.read_text() + edit["append"])
        elif "write" in edit:
            path.write_text(edit["write"])
        elif edit.get("delete"):
            path.unlink()


@pytest.mark.parametrize("check", CHECKS)
def test_the_repository_triggers_no_cluster_rule(check: str) -> None:
    assert list(findings(REPO_ROOT, check)) == []


@pytest.mark.parametrize(
    "fixture", sorted(p for check in CHECKS for p in (FIXTURES / check).glob("*.yaml")), ids=lambda p: p.stem
)
def test_fixture(fixture: Path, tmp_path: Path) -> None:
    spec = yaml.safe_load(fixture.read_text())
    root = copy(tmp_path)
    apply(root, spec["edits"])
    check = fixture.parent.name
    expect = spec["expect"]
    found = list(findings(root, check))
    matching = [
        f
        for f in found
        if f[0] == spec["rule"]
        and f[1] == expect["file"]
        and f[2] == expect.get("resource", "")
        and f[3].startswith(expect.get("field", ""))
        and expect["message"] in f[4]
    ]
    assert matching, f"{spec['rule']} not found at {expect}; found: {found}"
