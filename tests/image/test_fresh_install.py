"""Under CI, a layer cached by an earlier run never stands in for a lock install of this run.

Real builds with the classic builder, as `invoke build` makes them: the same run's value
reuses the cache, a new run's value runs the install step again. The Dockerfiles declare the
build argument before their first install step.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from docker.client import DockerClient

from airflow_ha import REPO_ROOT, image

DOCKERFILES = ("docker/Dockerfile", "docker/deployer/Dockerfile", "docker/postgres/Dockerfile")


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_each_dockerfile_declares_the_run_argument_before_it_installs(dockerfile: str) -> None:
    text = (REPO_ROOT / dockerfile).read_text()
    declared = text.find(f"ARG {image.FRESH_INSTALL_ARG}")
    first_install = text.index("\nRUN ")
    assert 0 <= declared < first_install, (
        f"{dockerfile} installs before it declares {image.FRESH_INSTALL_ARG}"
    )


def build_id(docker_client: DockerClient, folder: Path, monkeypatch: pytest.MonkeyPatch, run: str) -> str:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv(image.FRESH_INSTALL_ARG, run)
    with image.build_context(folder, "Dockerfile") as context:
        return image.build(context, "airflow-ha-test:fresh-install", client=docker_client).image_id


def test_a_new_run_installs_again_and_the_same_run_reuses_its_layers(
    docker_client: DockerClient, base_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = [
        f"FROM {base_image}",
        f'ARG {image.FRESH_INSTALL_ARG}=""',
        "RUN cat /proc/sys/kernel/random/uuid > /x",
    ]
    (tmp_path / "Dockerfile").write_text("\n".join(steps) + "\n")
    first = build_id(docker_client, tmp_path, monkeypatch, "run-1")
    assert build_id(docker_client, tmp_path, monkeypatch, "run-1") == first
    assert build_id(docker_client, tmp_path, monkeypatch, "run-2") != first
    docker_client.images.remove("airflow-ha-test:fresh-install", force=True)
