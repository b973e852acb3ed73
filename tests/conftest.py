"""Shared fixtures."""

from __future__ import annotations

# ----------------------------------------------------------------------------------
# The real Kubernetes API server: tests that talk to the API use it.
#   control_plane    etcd, kube-apiserver, kube-controller-manager and kube-scheduler
#                    built from tests/controlplane/go.mod, on 127.0.0.1, started once
#                    per session (no nodes: pods are admitted, never run)
# ----------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------
# Docker fixtures. tests/image uses them:
#   docker_client    a client of a running daemon; every test using it skips, with
#                    the reason, when there is no daemon
#   base_image       "airflow-ha-base:bookworm", built by debootstrap when missing
#   airflow_image    the Airflow image, built once per session the way `invoke build`
#                    builds it (same code, same tag), on base_image, with a CA bundle
#                    that carries ca_bundle_marker
#   postgres_image   PostgreSQL 15 from Debian on base_image (docker/postgres)
#   docker_network   a user-defined network, so containers resolve each other's aliases
#   postgres_server  a running PostgreSQL on docker_network, reachable as
#                    airflow-postgres:5432 (a PostgresServer: .url for Airflow)
#   registry         "127.0.0.1:<port>" of Debian's docker-registry, started here
# ----------------------------------------------------------------------------------
import secrets as token
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import certifi
import httpx
import pytest
import yaml
from controlplane.plane import ControlPlane, StartFailure
from docker.client import DockerClient
from docker.errors import DockerException, ImageNotFound
from docker.models.containers import Container
from docker.models.networks import Network

from airflow_ha import REPO_ROOT, image
from airflow_ha import generated_secrets as airflow_secrets
from airflow_ha.polling import poll

BASE_IMAGE = "airflow-ha-base:bookworm"
POSTGRES_IMAGE = "airflow-ha-postgres:15"
# Appended to the CA bundle of the session's build: no layer of the image may contain it.
CA_BUNDLE_MARKER = "# airflow-ha test marker: this CA bundle line must not reach any image layer"


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("control-plane"))
    try:
        plane.start()
    except (StartFailure, RuntimeError) as error:
        pytest.fail(f"the control plane did not start: {error}", pytrace=False)
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def docker_client() -> DockerClient:
    try:
        client = DockerClient.from_env()
        client.ping()
    except DockerException as error:
        pytest.skip(f"no Docker daemon ({error}): these tests run containers; .ci/run installs Docker Engine")
    return client


@pytest.fixture(scope="session")
def base_image(docker_client: DockerClient) -> str:
    try:
        docker_client.images.get(BASE_IMAGE)
    except ImageNotFound:
        image.build_base_image(name=BASE_IMAGE, suite="bookworm", mirror=None)
    return BASE_IMAGE


@pytest.fixture(scope="session")
def ca_bundle_marker() -> str:
    return CA_BUNDLE_MARKER


@pytest.fixture(scope="session")
def marked_ca_bundle(tmp_path_factory: pytest.TempPathFactory, ca_bundle_marker: str) -> Path:
    """The host's CA bundle (certifi's where there is none), plus the marker line.

    The marker is fixed, so that the build cache still serves the next session.
    """
    host_bundle = image.ca_bundle_path(None) or Path(certifi.where())
    bundle = tmp_path_factory.mktemp("ca") / "bundle.pem"
    bundle.write_text(f"{host_bundle.read_text().rstrip()}\n{ca_bundle_marker}\n")
    return bundle


@pytest.fixture(scope="session")
def airflow_image(docker_client: DockerClient, base_image: str, marked_ca_bundle: Path) -> str:
    settings = yaml.safe_load((REPO_ROOT / "invoke.yaml").read_text())["image"]
    reference = f"{settings['repository']}:{image.image_tag(settings['airflow_version'])}"
    image.build_image(reference, base_image=base_image, ca_bundle=str(marked_ca_bundle))
    return reference


@pytest.fixture(scope="session")
def postgres_image(docker_client: DockerClient, base_image: str) -> str:
    with image.build_context(REPO_ROOT / "docker" / "postgres", "Dockerfile") as context:
        image.build(context, POSTGRES_IMAGE, buildargs={"BASE_IMAGE": base_image}, client=docker_client)
    return POSTGRES_IMAGE


@pytest.fixture(scope="session")
def docker_network(docker_client: DockerClient) -> Iterator[Network]:
    network = docker_client.networks.create(f"airflow-ha-test-{token.token_hex(4)}", driver="bridge")
    yield network
    network.reload()
    for container in network.containers:
        network.disconnect(container, force=True)
    network.remove()


@dataclass(frozen=True)
class PostgresServer:
    container: Container
    network: str
    host: str
    port: int
    user: str
    password: str
    database: str

    @property
    def url(self) -> str:
        """The SQLAlchemy URL, for containers on the same network."""
        return airflow_secrets.database_url(self.password, host=self.host, port=self.port)


def wait_for_postgres(container: Container, timeout: float = 60) -> None:
    def ready() -> bool | None:
        container.reload()
        if container.status != "running":
            raise AssertionError(f"PostgreSQL exited: {container.logs().decode()[-2000:]}")
        return container.exec_run(["pg_isready", "--host", "127.0.0.1", "--quiet"]).exit_code == 0 or None

    poll(
        ready,
        timeout=timeout,
        every=0.5,
        timed_out=lambda: AssertionError(
            f"PostgreSQL not ready after {timeout} s: {container.logs().decode()[-2000:]}"
        ),
    )


def create_postgres(
    docker_client: DockerClient, postgres_image: str, network: str, host: str, password: str, **options: Any
) -> Container:
    """A PostgreSQL container, not started, with the official image's contract, reached as ``host``
    on ``network`` by Airflow's database user and name."""
    return docker_client.containers.create(
        postgres_image,
        environment={
            "POSTGRES_USER": airflow_secrets.DATABASE_USER,
            "POSTGRES_DB": airflow_secrets.DATABASE_NAME,
            "POSTGRES_PASSWORD": password,
        },
        network=network,
        networking_config={network: docker_client.api.create_endpoint_config(aliases=[host])},
        **options,
    )


@pytest.fixture(scope="session")
def postgres_server(
    docker_client: DockerClient, postgres_image: str, docker_network: Network
) -> Iterator[PostgresServer]:
    password = token.token_urlsafe(24)
    container = create_postgres(
        docker_client,
        postgres_image,
        docker_network.name,
        airflow_secrets.DATABASE_HOST,
        password,
        name=f"airflow-ha-test-postgres-{token.token_hex(4)}",
    )
    try:
        container.start()
        wait_for_postgres(container)
        yield PostgresServer(
            container=container,
            network=docker_network.name,
            host=airflow_secrets.DATABASE_HOST,
            port=airflow_secrets.DATABASE_PORT,
            user=airflow_secrets.DATABASE_USER,
            password=password,
            database=airflow_secrets.DATABASE_NAME,
        )
    finally:
        container.remove(force=True, v=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def registry(docker_client: DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's docker-registry on loopback, which Docker lets a push use over plain HTTP."""
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    if not Path(binary).is_file():
        pytest.fail("docker-registry is not installed: `sudo apt-get install docker-registry` (Debian)")
    address = f"127.0.0.1:{free_port()}"
    folder = tmp_path_factory.mktemp("registry")
    config = folder / "config.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 0.1,
                "log": {"level": "warn"},
                "storage": {"filesystem": {"rootdirectory": str(folder / "data")}},
                "http": {"addr": address},
            }
        )
    )
    log = (folder / "registry.log").open("w")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:

        def serving() -> bool | None:
            if process.poll() is not None:
                raise AssertionError(f"docker-registry exited: {(folder / 'registry.log').read_text()}")
            try:
                return httpx.get(f"http://{address}/v2/", timeout=2).status_code == 200 or None
            except httpx.TransportError:
                return None

        poll(
            serving,
            timeout=30,
            every=0.2,
            timed_out=lambda: AssertionError(
                f"docker-registry did not start: {(folder / 'registry.log').read_text()}"
            ),
        )
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
