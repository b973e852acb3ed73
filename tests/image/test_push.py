"""`invoke push` against a real registry: Debian's docker-registry on loopback.

The digest check goes through the Docker daemon (the SDK's get_registry_data); the test
asks the registry's HTTP API itself, so the two are independent.
"""

from __future__ import annotations

import socket

import httpx
import pytest
from docker.client import DockerClient

from airflow_ha import image
from airflow_ha.console import Failure


def test_push_then_the_registry_serves_the_manifest(
    docker_client: DockerClient, airflow_image: str, registry: str
) -> None:
    try:
        digest = image.push_image(airflow_image, registry)
    finally:
        docker_client.images.remove(f"{registry}/{airflow_image}")  # the tag the push added

    repository, tag = airflow_image.rsplit(":", 1)
    response = httpx.get(
        f"http://{registry}/v2/{repository}/manifests/{tag}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["Docker-Content-Digest"] == digest
    # The manifest is the one of the image that was built: its config is the image's ID.
    assert response.json()["config"]["digest"] == docker_client.images.get(airflow_image).id


def test_push_to_an_unreachable_registry_names_it(airflow_image: str) -> None:
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
        nowhere = f"127.0.0.1:{reserved.getsockname()[1]}"
        with pytest.raises(Failure, match=f"cannot reach the registry {nowhere} .*connection refused"):
            image.push_image(airflow_image, nowhere)


def test_a_registry_serving_another_digest_is_named(
    docker_client: DockerClient, airflow_image: str, registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's answer is real; the digest the push reported is replaced by a wrong one."""
    real_push = docker_client.api.push

    def push_reporting_a_wrong_digest(*args, **kwargs):
        for chunk in real_push(*args, **kwargs):
            if "Digest" in chunk.get("aux", {}):
                chunk["aux"]["Digest"] = "sha256:" + "0" * 64
            yield chunk

    monkeypatch.setattr(image, "docker_client", lambda: docker_client)
    monkeypatch.setattr(docker_client.api, "push", push_reporting_a_wrong_digest)
    try:
        wrong = r"the registry .* serves .* as sha256:[0-9a-f]{64}, not sha256:0{64}"
        with pytest.raises(Failure, match=wrong):
            image.push_image(airflow_image, registry)
    finally:
        docker_client.images.remove(f"{registry}/{airflow_image}")
