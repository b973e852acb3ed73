"""The CA bundle that `invoke build` hands to pip never reaches the image.

The session's image is built with the host's bundle plus a marker line (tests/conftest.py);
`docker save` gives every layer and the image config, and none may contain the marker.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import IO

from docker.client import DockerClient

from airflow_ha import image

CHUNK = 1 << 20


def contains(stream: IO[bytes], needle: bytes) -> bool:
    previous = b""
    while chunk := stream.read(CHUNK):
        if needle in previous + chunk:
            return True
        previous = chunk[-len(needle) :]
    return False


def files_containing(client: DockerClient, reference: str, needle: bytes, folder: Path) -> list[str]:
    """Names of the files of `docker save` (layer tars, image config) that contain the needle."""
    saved = folder / "image.tar"
    with saved.open("wb") as archive:
        for chunk in client.images.get(reference).save():
            archive.write(chunk)
    found = []
    with tarfile.open(saved) as archive:
        for member in archive:
            stream = archive.extractfile(member) if member.isfile() else None
            if stream and contains(stream, needle):
                found.append(member.name)
    return found


def test_ca_bundle_is_in_no_layer_of_the_image(
    docker_client: DockerClient,
    airflow_image: str,
    marked_ca_bundle: Path,
    ca_bundle_marker: str,
    tmp_path: Path,
) -> None:
    assert ca_bundle_marker in marked_ca_bundle.read_text()
    assert files_containing(docker_client, airflow_image, ca_bundle_marker.encode(), tmp_path) == []
    history = [entry["CreatedBy"] for entry in docker_client.api.history(airflow_image)]
    assert not [line for line in history if "ca-bundle" in line or ca_bundle_marker in line], history


def test_the_scan_finds_a_bundle_that_a_layer_keeps(
    docker_client: DockerClient,
    base_image: str,
    marked_ca_bundle: Path,
    ca_bundle_marker: str,
    tmp_path: Path,
) -> None:
    """The check above can fail: a Dockerfile that copies the bundle into the image is caught."""
    (tmp_path / "context").mkdir()
    (tmp_path / "context/Dockerfile").write_text(
        f"FROM {base_image}\nCOPY {image.CA_BUNDLE_IN_CONTEXT} /etc/\n"
    )
    extra = {image.CA_BUNDLE_IN_CONTEXT: marked_ca_bundle.read_text()}
    reference = "airflow-ha-test-leaky:latest"
    with image.build_context(tmp_path / "context", "Dockerfile", extra) as context:
        image.build(context, reference, client=docker_client)
    try:
        leaked = files_containing(docker_client, reference, ca_bundle_marker.encode(), tmp_path)
        assert len(leaked) == 1 and leaked[0].endswith("layer.tar"), leaked
    finally:
        docker_client.images.remove(reference, force=True)
