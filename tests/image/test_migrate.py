"""The migrate role against a PostgreSQL that starts after it, as on a cluster where the
database pod, or the NetworkPolicy rules for the new migration pod, are not ready yet."""

from __future__ import annotations

import secrets as token
from collections.abc import Iterator

import pytest
from conftest import create_postgres  # tests/conftest.py
from docker.client import DockerClient
from docker.models.containers import Container
from docker.models.networks import Network

from airflow_ha import generated_secrets as airflow_secrets
from airflow_ha.polling import poll

from .conftest import AIRFLOW_ENV, POD_LIKE

TIMEOUT = 240


@pytest.fixture
def late_database_host(docker_client: DockerClient) -> Iterator[str]:
    host = f"late-postgres-{token.token_hex(4)}"
    yield host
    for container in docker_client.containers.list(all=True, filters={"label": f"airflow-ha-test={host}"}):
        container.remove(force=True, v=True)


def logs(container: Container) -> str:
    return container.logs().decode(errors="replace")


def test_migrate_waits_for_a_database_that_starts_after_it(
    docker_client: DockerClient,
    airflow_image: str,
    postgres_image: str,
    docker_network: Network,
    late_database_host: str,
) -> None:
    password = token.token_urlsafe(24)
    url = airflow_secrets.database_url(password, host=late_database_host)
    label = {"airflow-ha-test": late_database_host}
    migrate = docker_client.containers.run(
        airflow_image,
        ["migrate"],
        detach=True,
        environment={**AIRFLOW_ENV, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url},
        network=docker_network.name,
        labels=label,
        **POD_LIKE,
    )

    def waiting() -> bool | None:
        migrate.reload()
        assert migrate.status != "exited", (
            f"migrate gave up on the database at once:\n{logs(migrate)[-3000:]}"
        )
        return "retries remain" in logs(migrate) or None

    poll(waiting, timeout=TIMEOUT, every=1, timed_out=lambda: AssertionError(logs(migrate)[-3000:]))
    create_postgres(
        docker_client, postgres_image, docker_network.name, late_database_host, password, labels=label
    ).start()
    exit_code = migrate.wait(timeout=TIMEOUT)["StatusCode"]

    assert exit_code == 0, logs(migrate)[-3000:]
    assert "Database migration done!" in logs(migrate), logs(migrate)[-3000:]
