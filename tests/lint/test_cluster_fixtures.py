"""Each fixture of the cluster rules breaks a copy of the repository the way its rule catches.

Real kustomize renders the broken copy; no Kubernetes API is involved (nothing is faked).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from airflow_ha import REPO_ROOT
from airflow_ha.console import Failure, console
from airflow_ha.lint import gate
from airflow_ha.lint.checks import reachability

FIXTURES = Path(__file__).parent / "fixtures"
CHECKS = ("reachability", "admission", "availability", "identity")
LINTED = ("kube", "dags", "schemas", "docker/Dockerfile", ".yamllint", "invoke.yaml")


def findings(root: Path, check: str) -> list[tuple[str, str, str, str, str]]:
    """(rule, file, resource, field, message) of what the gate reports, running only ``check``."""
    report = gate.check(root=root, only=[check])
    return [(p.rule, p.file, p.resource, p.field, p.message) for p, _ in report.problems]


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


@pytest.fixture
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Table cells on one line each, whatever the terminal of the test run."""
    monkeypatch.setattr(console, "width", 200)


@pytest.mark.usefixtures("wide_console")
def test_lint_flows_prints_each_flow_and_its_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    reachability.show_flows(root=REPO_ROOT)

    output = capsys.readouterr().out
    assert "worker pods" in output and "Execution API" in output
    assert "DENIED" not in output and "ALLOWED" not in output


@pytest.mark.usefixtures("wide_console")
def test_lint_flows_fails_on_a_denied_flow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = copy(tmp_path)
    policies = "kube/base/network-policies.yaml"
    apply(root, [{"file": policies, "replace": "- port: 8080", "with": "- port: 8081"}])

    with pytest.raises(Failure, match="a flow above is wrong"):
        reachability.show_flows(root=root)

    assert "DENIED by NetworkPolicy/airflow-api-server" in capsys.readouterr().out
