"""What a fixture cannot express: the report's format, the rule list, and diagnoses that must
name the cause and not its consequences.

Nothing is faked: the gate renders and checks a temporary copy of the repository for real.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_ha import REPO_ROOT
from airflow_ha.console import Failure
from airflow_ha.lint import gate, registry
from airflow_ha.lint.problems import Problem

from .repo import copy_repository, edit


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return copy_repository(tmp_path)


def problems(root: Path, *only: str) -> list[Problem]:
    return [problem for problem, _ in gate.check(root=root, only=only).problems]


def test_lint_fails_with_a_report_naming_file_object_field_and_rule(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(repo / "kube/base/scheduler.yaml", "  replicas: 2", "  replicas: 1")

    with pytest.raises(Failure, match=r"found \d+ problem"):
        gate.lint(root=repo)

    output = capsys.readouterr().out
    line = next(line for line in output.splitlines() if line.startswith("✗"))
    assert line.startswith("✗ kube/base/scheduler.yaml  Deployment/airflow-scheduler  spec.replicas  ")
    assert line.endswith("[schemas/component]")
    assert re.search(r"schemas\s+│\s+1 │", output)
    for name in registry.names():
        assert re.search(rf"{name}\s+│\s+\d+ │", output), f"no row for {name} in the summary table:\n{output}"


def test_a_problem_of_one_overlay_names_it(repo: Path) -> None:
    edit(repo / "kube/overlays/kind/api-server-nodeport.yaml", "targetPort: http", "targetPort: 8081")

    merged = gate.check(root=repo, only=["wiring"]).problems

    assert [(problem.rule, overlays) for problem, overlays in merged] == [("wiring/target-port", ["kind"])]
    assert merged[0][0].text(merged[0][1]).plain.endswith("[wiring/target-port] (overlay kind only)")


def test_a_yaml_syntax_error_names_its_line(repo: Path) -> None:
    path = repo / "kube/base/dag-processor.yaml"
    edit(path, "  replicas: 1\n", "  replicas: 1\n bad: [\n")
    line = path.read_text().splitlines().index(" bad: [") + 1

    found = problems(repo, "yamllint")

    syntax = next(problem for problem in found if problem.rule == "yamllint/syntax")
    assert (syntax.file, syntax.line) == ("kube/base/dag-processor.yaml", line)
    assert f"kube/base/dag-processor.yaml:{line}" in syntax.text().plain
    refused = next(problem for problem in found if problem.rule == "kustomize/render-failed")
    assert "dag-processor.yaml" in refused.message


def test_a_missing_role_is_reported_on_the_binding_and_not_as_verbs_to_grant(repo: Path) -> None:
    role_ref = "  kind: Role\n  name: airflow-pod-launcher"
    edit(repo / "kube/base/rbac.yaml", role_ref, role_ref.replace("airflow-pod-launcher", "nope"))

    found = problems(repo, "rbac")

    assert [(p.rule, p.resource, p.field) for p in found] == [
        ("rbac/missing-role", "RoleBinding/airflow-pod-launcher", "roleRef.name")
    ]
    assert "Role 'nope' does not exist" in found[0].message


def test_a_duplicate_is_one_problem_naming_both_files(repo: Path) -> None:
    scheduler = (repo / "kube/base/scheduler.yaml").read_text()
    with (repo / "kube/base/triggerer.yaml").open("a") as triggerer:
        triggerer.write(f"---\n{scheduler[scheduler.index('apiVersion: apps/v1') :]}")

    found = problems(repo)

    assert [(p.rule, p.file, p.resource) for p in found] == [
        ("kustomize/duplicate-object", "kube/base/triggerer.yaml", "Deployment/airflow-scheduler")
    ]


def test_a_missing_okteto_pipeline_is_nothing_to_check(repo: Path) -> None:
    (repo / "okteto-pipeline.yml").unlink()

    assert problems(repo, "schemas") == []


def test_list_rules_prints_every_rule_with_its_line() -> None:
    listed = subprocess.run(
        [str(Path(sys.executable).parent / "invoke"), "lint", "--list-rules"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    rules = registry.rules()
    lines = [line for line in listed.splitlines() if line.strip()]
    assert [line.split()[0] for line in lines] == list(rules)
    for line, (rule, what) in zip(lines, rules.items(), strict=True):
        assert line.split(None, 1)[1] == what, f"{rule} is listed without its line"
