"""The failure modes of `invoke build` and `invoke push`: a message that says what to do, and exit 1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from docker.client import DockerClient
from docker.errors import ImageNotFound

from airflow_ha import REPO_ROOT, image
from airflow_ha.console import Failure


def invoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def test_build_without_a_docker_daemon_says_how_to_start_one(tmp_path: Path) -> None:
    """Needs no daemon: DOCKER_HOST points at a socket that does not exist."""
    bogus = f"unix://{tmp_path}/docker.sock"
    ran = invoke("build", "--tag", "never-built", env={"DOCKER_HOST": bogus})
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert ran.stderr.startswith(f"error: cannot reach the Docker daemon at {bogus}"), ran.stderr
    assert "systemctl start docker" in ran.stderr
    assert "https://docs.docker.com/engine/install/" in ran.stderr
    assert "Traceback" not in ran.stderr


def test_push_to_an_unreachable_registry_exits_1_naming_it(airflow_image: str) -> None:
    tag = airflow_image.rsplit(":", 1)[1]
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
        nowhere = f"127.0.0.1:{reserved.getsockname()[1]}"
        ran = invoke("push", "--registry", nowhere, "--tag", tag)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert ran.stderr.startswith(f"error: cannot reach the registry {nowhere}"), ran.stderr
    assert "Traceback" not in ran.stderr


def test_a_failing_run_step_names_the_step_and_its_last_output(
    docker_client: DockerClient, base_image: str, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text(
        f"FROM {base_image}\n"
        "RUN echo this step passes\n"
        "RUN echo first line of the failing step && echo last words >&2 && exit 3\n"
        "RUN echo never runs\n"
    )
    reference = "airflow-ha-test-broken:latest"
    with image.build_context(tmp_path, "Dockerfile") as context, pytest.raises(Failure) as failure:
        image.build(context, reference, client=docker_client)
    message = str(failure.value)
    assert f"docker build of {reference} failed at Step 3/4 : RUN echo first line" in message
    assert "returned a non-zero code: 3" in message
    # stdout and stderr reach the daemon as separate streams, in either order.
    last_output = message.split("\nlast output:\n", 1)[1].splitlines()
    assert {"  | first line of the failing step", "  | last words"} <= set(last_output), message
    assert "  | this step passes" not in last_output  # only the failing step's output
    with pytest.raises(ImageNotFound):
        docker_client.images.get(reference)
