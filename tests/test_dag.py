"""The smoke DAG imports cleanly, runs under `airflow dags test` with its assertion relaxed, and
asks no worker pod for more than an overlay budgets.

Airflow runs in subprocesses with a temporary AIRFLOW_HOME and a SQLite database, so
nothing here touches the user's Airflow setup.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes.utils import parse_quantity

from airflow_ha import REPO_ROOT, manifests
from airflow_ha.lint import environment

DAG_ID = "smoke_kubernetes_executor"
FAILOVER_DAG_ID = "failover_long_task"  # the scheduler step of `invoke drill`


@pytest.fixture
def airflow_home(tmp_path: Path) -> dict[str, str]:
    """The environment of an Airflow with a migrated SQLite database and the repository's DAGs."""
    shutil.copy(environment.migrated_database(), tmp_path / "airflow.db")
    return environment.airflow_env(tmp_path) | {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }


def airflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True, check=False
    )


def test_the_dag_imports_without_errors(airflow_home: dict[str, str]) -> None:
    script = (
        "import json; from airflow.dag_processing.dagbag import DagBag; "
        "bag = DagBag(); "
        "print(json.dumps({'dags': sorted(bag.dag_ids), 'errors': bag.import_errors}, default=str))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=airflow_home, capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr
    bag = json.loads(result.stdout.strip().splitlines()[-1])
    assert bag == {"dags": [FAILOVER_DAG_ID, DAG_ID], "errors": {}}


def test_the_dag_runs_locally_with_the_relaxed_conf(airflow_home: dict[str, str]) -> None:
    result = airflow(airflow_home, "dags", "test", DAG_ID, "-c", '{"require_executor_pods": false}')

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "tasks ran in:" in output


def test_the_dag_fails_outside_executor_pods_without_it(airflow_home: dict[str, str]) -> None:
    result = airflow(airflow_home, "dags", "test", DAG_ID)

    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "DagRun failed" in output
    assert "tasks shared a host" in output


TASK_RESOURCES = """
import json
from airflow.models.dagbag import DagBag

found = {}
for dag_id, dag in DagBag().dags.items():
    for task in dag.tasks:
        override = (task.executor_config or {}).get("pod_override")
        for container in (override.spec.containers or []) if override and override.spec else []:
            if container.resources and container.resources.limits:
                found[f"{dag_id}.{task.task_id} container {container.name}"] = container.resources.limits
print(json.dumps(found))
"""


@pytest.mark.parametrize("overlay", sorted(p.name for p in (REPO_ROOT / "kube" / "overlays").iterdir()))
def test_task_pod_overrides_fit_the_worker_pod_of_every_overlay(
    airflow_home: dict[str, str], overlay: str
) -> None:
    """The lint gate budgets each worker pod by the overlay's template; a task's pod_override
    replaces the template's resources, so it must ask for no more, or a namespace quota refuses
    the task's pod (as Okteto's did, on kind, before this test)."""
    result = subprocess.run(
        [sys.executable, "-c", TASK_RESOURCES], env=airflow_home, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    overrides = json.loads(result.stdout.strip().splitlines()[-1])
    assert overrides, "no task of dags/ overrides its pod's resources: the test would prove nothing"
    template = manifests.pod_template(manifests.render(overlay))
    assert template is not None
    base = next(c for c in template.obj["spec"]["containers"] if c["name"] == "base")
    allowed = base["resources"]["limits"]

    too_big = [
        f"{where}: limits.{name} {value} > the {overlay} template's {allowed.get(name)}"
        for where, limits in overrides.items()
        for name, value in limits.items()
        if name not in allowed or parse_quantity(value) > parse_quantity(allowed[name])
    ]
    assert too_big == []
