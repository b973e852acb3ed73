"""The result cache of the slow checks never hides a problem: editing any input they read
gives another key, and a cached result is served only for the inputs it was computed from.

Nothing is faked: kustomize renders the copy, and Airflow runs for real where a check runs.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from airflow_ha.lint import cache
from airflow_ha.lint.checks import airflow, checkov
from airflow_ha.lint.render import render_target

from .repo import copy_repository, edit

VERSIONS = ("1.30", "1.35")
# One edit per input the airflow check reads: (file, old, new).
AIRFLOW_INPUTS = [
    ("dags/smoke_kubernetes_executor.py", '    tags=["smoke"],', '    tags=["smoke", "edited"],'),
    ("docker/Dockerfile", "COPY dags/ /opt/airflow/dags/", "COPY dags/ /opt/airflow/dag/"),
    ("invoke.yaml", "dag_id: smoke_kubernetes_executor", "dag_id: another_dag"),
    ("kube/base/airflow.env", "DELETE_WORKER_PODS=True", "DELETE_WORKER_POD=True"),
    ("kube/base/pod-template.yaml", "    runAsUser: 50000\n", "    runAsUser: 0\n"),
    ("kube/base/logs.yaml", "storage: 2Gi", "storage: 3Gi"),
]


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(cache, "LINT_CACHE", tmp_path / "cache")
    return copy_repository(tmp_path / "repo")


@pytest.mark.parametrize(("file", "old", "new"), AIRFLOW_INPUTS, ids=[file for file, _, _ in AIRFLOW_INPUTS])
def test_editing_an_input_of_the_airflow_check_changes_its_key(
    repo: Path, file: str, old: str, new: str
) -> None:
    before = airflow.cache_key(render_target(repo, None, VERSIONS))

    edit(repo / file, old, new)

    assert airflow.cache_key(render_target(repo, None, VERSIONS)) != before
    assert airflow.cache_key(render_target(repo, None, ("1.31", "1.35"))) != before


def test_editing_a_rendered_object_changes_the_checkov_key(repo: Path) -> None:
    tool = str(Path(__file__))  # any file stands for the executable: only its identity is read
    before = checkov.cache_key(render_target(repo, None, VERSIONS), tool)

    edit(repo / "kube/base/migrate.yaml", "skip3: CKV_K8S_35=", "skip3: CKV_K8S_36=")

    assert checkov.cache_key(render_target(repo, None, VERSIONS), tool) != before


def test_a_cached_result_is_served_for_its_inputs_only(repo: Path) -> None:
    target = render_target(repo, None, VERSIONS)
    stored = {"rule": "airflow/worker-root", "file": "stored", "message": "from the cache"}
    entry = cache.LINT_CACHE / f"airflow-{airflow.cache_key(target)}.json"
    entry.parent.mkdir(parents=True)
    entry.write_text(json.dumps([stored]))

    assert [problem.message for problem in airflow.run(target)] == ["from the cache"]

    edit(repo / "kube/base/airflow.env", "DELETE_WORKER_PODS=True", "DELETE_WORKER_POD=True")
    edited = render_target(repo, None, VERSIONS)
    found = list(airflow.run(edited))

    assert {problem.rule for problem in found} == {"airflow/unknown-option"}
    assert (cache.LINT_CACHE / f"airflow-{airflow.cache_key(edited)}.json").is_file()
    assert list(airflow.run(edited)) == found


def test_the_first_run_keeps_a_migrated_database_for_the_next(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = tmp_path / "database" / "airflow.db"
    monkeypatch.setattr(airflow, "database_cache", lambda: kept)
    target = render_target(repo, None, VERSIONS)

    assert list(airflow.run(target)) == []  # Airflow migrates a database, then keeps a copy

    with sqlite3.connect(kept) as database:
        assert database.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0] > 50
    migrated = kept.stat().st_mtime_ns
    (cache.LINT_CACHE / f"airflow-{airflow.cache_key(target)}.json").unlink()

    assert list(airflow.run(target)) == []  # Airflow runs on a copy of the kept one
    assert kept.stat().st_mtime_ns == migrated
