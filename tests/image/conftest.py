"""Run the session's Airflow image the way the pods run it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from docker.client import DockerClient
from docker.models.containers import Container

# The test configuration: SQLite in the writable /tmp, no example DAGs.
AIRFLOW_ENV = {
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlite:////tmp/airflow.db",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
}
# As in the pods: read-only root filesystem, emptyDirs at /tmp and the logs folder,
# no capabilities, no privilege escalation.
POD_LIKE: dict[str, Any] = {
    "read_only": True,
    "tmpfs": {"/tmp": "mode=1777", "/opt/airflow/logs": "mode=1777"},
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
}


@dataclass(frozen=True)
class Ran:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def last_line(self) -> str:
        """Airflow logs warnings to stdout too; a command's own output comes last."""
        lines = self.stdout.strip().splitlines()
        return lines[-1] if lines else ""


def execute(container: Container, *command: str, user: str = "") -> Ran:
    result = container.exec_run(list(command), demux=True, user=user)
    stdout, stderr = result.output
    return Ran(result.exit_code, (stdout or b"").decode(), (stderr or b"").decode())


@pytest.fixture(scope="session")
def run_image(docker_client: DockerClient, airflow_image: str) -> Callable[..., Ran]:
    """Run the image's entrypoint with ARGS in a new pod-like container, as a manifest's `args` do."""

    def run(
        *args: str,
        environment: dict[str, str] | None = None,
        network: str | None = None,
        volumes: dict[str, dict[str, str]] | None = None,
    ) -> Ran:
        container = docker_client.containers.create(
            airflow_image,
            list(args),
            environment={**AIRFLOW_ENV, **(environment or {})},
            network=network,
            volumes=volumes,
            **POD_LIKE,
        )
        try:
            container.start()
            exit_code = container.wait(timeout=600)["StatusCode"]
            stdout = container.logs(stdout=True, stderr=False).decode()
            stderr = container.logs(stdout=False, stderr=True).decode()
            return Ran(exit_code, stdout, stderr)
        finally:
            container.remove(force=True)

    return run


@pytest.fixture(scope="module")
def sandbox(docker_client: DockerClient, airflow_image: str) -> Iterator[Container]:
    """One long-lived pod-like container with a migrated SQLite database, to run commands in."""
    container = docker_client.containers.run(
        airflow_image, ["sleep", "infinity"], detach=True, environment=AIRFLOW_ENV, **POD_LIKE
    )
    try:
        migrated = execute(container, "airflow", "db", "migrate")
        assert migrated.exit_code == 0, migrated.stdout + migrated.stderr
        yield container
    finally:
        container.remove(force=True)
