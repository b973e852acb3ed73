"""The Airflow image in real containers, with a read-only root filesystem as in the pods."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
import yaml
from docker.client import DockerClient
from docker.models.containers import Container

from airflow_ha import REPO_ROOT

from .conftest import Ran, execute

DAG_ID = "smoke_kubernetes_executor"


def pinned(package: str) -> str:
    match = re.search(
        rf"^{re.escape(package)}==(\S+)$", (REPO_ROOT / "docker/requirements.in").read_text(), re.M
    )
    assert match, f"docker/requirements.in pins no {package}"
    return match[1]


def test_airflow_version_is_the_pinned_one(sandbox: Container) -> None:
    expected = yaml.safe_load((REPO_ROOT / "invoke.yaml").read_text())["image"]["airflow_version"]
    assert expected == pinned("apache-airflow")
    ran = execute(sandbox, "airflow", "version")
    assert ran.exit_code == 0, ran.stderr
    assert ran.last_line == expected


def test_cncf_kubernetes_provider_is_installed(sandbox: Container) -> None:
    provider = "apache-airflow-providers-cncf-kubernetes"
    ran = execute(sandbox, "airflow", "providers", "get", provider, "--output", "json")
    assert ran.exit_code == 0, ran.stdout + ran.stderr
    assert json.loads(ran.last_line) == [{"Provider": provider, "Version": pinned(provider)}]
    executor = "airflow.providers.cncf.kubernetes.executors.kubernetes_executor"
    imported = execute(sandbox, "python", "-c", f"import {executor}")
    assert imported.exit_code == 0, imported.stderr


def test_dags_import_without_errors(sandbox: Container) -> None:
    errors = execute(sandbox, "airflow", "dags", "list-import-errors", "--local", "--output", "json")
    assert errors.exit_code == 0, errors.stdout + errors.stderr
    assert json.loads(errors.last_line) == []
    # Not vacuous: the DAGs of dags/ are in the image and parse.
    listed = execute(sandbox, "airflow", "dags", "list", "--local", "--output", "json")
    dag_ids = {dag["dag_id"] for dag in json.loads(listed.last_line)}
    assert DAG_ID in dag_ids, listed.stdout


def test_smoke_dag_succeeds_against_sqlite(sandbox: Container) -> None:
    ran = execute(sandbox, "airflow", "dags", "test", DAG_ID, "-c", '{"require_executor_pods": false}')
    assert ran.exit_code == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert "tasks ran in:" in ran.stdout
    assert "state=success" in ran.stdout


def test_processes_run_as_uid_50000_gid_0(sandbox: Container) -> None:
    status = execute(sandbox, "cat", "/proc/1/status").stdout
    assert re.search(r"^Uid:\s+50000\s+50000\s+50000\s+50000$", status, re.M), status
    assert re.search(r"^Gid:\s+0\s+0\s+0\s+0$", status, re.M), status


def test_airflow_cfg_is_shipped_empty(sandbox: Container) -> None:
    """Airflow would write a default airflow.cfg into the read-only root filesystem otherwise."""
    ran = execute(sandbox, "stat", "--format", "%s %U", "/opt/airflow/airflow.cfg")
    assert ran.stdout.split() == ["0", "root"]


@pytest.mark.parametrize(
    ("role", "usage"),
    [
        ("api-server", "Usage: airflow api-server"),
        ("scheduler", "Usage: airflow scheduler"),
        ("dag-processor", "Usage: airflow dag-processor"),
        ("triggerer", "Usage: airflow triggerer"),
        ("migrate", "Usage: airflow db migrate"),
        ("sync-admin", "usage: sync-admin"),
    ],
)
def test_role_starts_its_airflow_command(run_image: Callable[..., Ran], role: str, usage: str) -> None:
    ran = run_image(role, "--help")
    assert ran.exit_code == 0, ran.stderr
    assert usage in ran.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # The wait-for-migrations init containers.
        (["airflow", "db", "check-migrations", "--help"], "Usage: airflow db check-migrations"),
        # What users run through `kubectl exec` to add people.
        (["airflow", "users", "create", "--help"], "Usage: airflow users create"),
    ],
)
def test_other_commands_pass_through(run_image: Callable[..., Ran], args: list[str], expected: str) -> None:
    ran = run_image(*args)
    assert ran.exit_code == 0, ran.stderr
    assert expected in ran.stdout


def test_the_command_replaces_the_entrypoint_shell(run_image: Callable[..., Ran]) -> None:
    """PID 1 is the command itself, so it receives the SIGTERM that Kubernetes sends."""
    ran = run_image("python", "-c", "import os; print(os.getpid())")
    assert ran.stdout.strip() == "1"


def test_unknown_role_fails_with_the_list_of_roles(run_image: Callable[..., Ran]) -> None:
    ran = run_image("webserver")
    assert ran.exit_code != 0
    assert "unknown role or command 'webserver'" in ran.stderr
    assert "api-server scheduler dag-processor triggerer migrate" in ran.stderr


def test_dags_are_the_last_layer(docker_client: DockerClient, airflow_image: str) -> None:
    layers = [entry for entry in docker_client.api.history(airflow_image) if entry["Size"] > 0]
    assert "/opt/airflow/dags" in layers[0]["CreatedBy"], layers[0]["CreatedBy"]


def test_final_stage_has_no_build_leftovers(sandbox: Container) -> None:
    """No compilers, no pip in the venv, no pip cache, no apt lists, nothing of the build stage."""
    leftovers = execute(
        sandbox,
        "sh",
        "-c",
        "command -v gcc cc g++ make;"
        "ls -d /opt/venv/bin/pip* /tmp/build /root/.cache /var/lib/apt/lists/*_Packages*;"
        "find /opt/venv -type d -name tests",
        user="0",
    )
    assert leftovers.stdout.strip() == ""
