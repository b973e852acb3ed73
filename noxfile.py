"""Test sessions: `nox` runs lint, tests, image and e2e.

The tests session builds Kubernetes from source, so it needs Go; the image and e2e sessions
need a Docker daemon, and e2e builds a kind cluster from source too. .ci/run installs and
starts what they need.
"""

from __future__ import annotations

import os
import sys

import nox

# The project is not installed where nox runs; its lock installer is standard library only.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from airflow_ha import locks
from tests.controlplane import binaries

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "tests", "image", "e2e"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
# Every package is pinned by hash: the image's (Airflow) and the tools' (requirements/dev.in).
LOCKS = ("docker/requirements.lock", "requirements/dev.lock")


def install_project(session: nox.Session) -> None:
    """The locks exactly, then the project; then every requirement, the project's too, must be met."""
    session.install(*locks.INSTALL_OPTIONS, *locks.requirements(LOCKS))
    session.install("--no-deps", "-e", ".")
    session.run(*locks.check_command("python"), silent=True)


def provision(session: nox.Session, *names: str) -> None:
    """kind, kubectl and checkov as `invoke deploy` gets them, pinned and verified; put on PATH."""
    output = session.run("python", "-m", "airflow_ha.tools", "provision", *names, silent=True)
    # It prints each tool's folder after its progress lines; those on PATH already are there.
    cache = os.path.abspath(".cache") + os.sep
    folders = [line for line in str(output).splitlines() if line.startswith(cache) and os.path.isdir(line)]
    session.env["PATH"] = os.pathsep.join([*folders, session.env.get("PATH") or os.environ["PATH"]])


def control_plane(session: nox.Session) -> None:
    """Kubernetes and etcd built from tests/controlplane (minutes, once); first on PATH, so that
    kubectl is the cluster's own version."""
    session.run("python", "-m", "tests.controlplane.binaries", "build")
    session.env["PATH"] = os.pathsep.join(
        [str(binaries.bin_dir()), session.env.get("PATH") or os.environ["PATH"]]
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """The manifest gate, then ruff, mypy, yamllint, hadolint, shellcheck, gofmt and go vet."""
    install_project(session)
    provision(session, "kubectl", "checkov")  # kustomize renders, checkov scans
    session.run("invoke", "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    session.run("yamllint", "--strict", ".")
    session.run("hadolint", "docker/Dockerfile", "docker/deployer/Dockerfile", "docker/postgres/Dockerfile")
    session.run(
        "shellcheck",
        "docker/bootstrap.sh",
        "docker/postgres/entrypoint.sh",
        ".ci/run",
        ".ci/install-runc-wrapper",
        "tests/kind/assemble-node-image.sh",
    )
    unformatted = session.run("gofmt", "-l", ".ci/runc-wrapper", silent=True, external=True)
    if unformatted:
        session.error(f"gofmt would change: {unformatted}")
    session.run("go", "-C", ".ci/runc-wrapper", "vet", "./...", external=True, env={"GOTOOLCHAIN": "local"})


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit tests, and deploy and teardown against a real control plane built from source."""
    install_project(session)
    provision(session, "kubectl", "checkov")  # kustomize renders, checkov scans
    control_plane(session)
    session.run(
        "pytest",
        "tests",
        "--ignore=tests/image",
        "--ignore=tests/e2e",
        "--ignore=tests/kind",
        *session.posargs,
    )


@nox.session(python=PYTHON)
def image(session: nox.Session) -> None:
    """Build the base and the Airflow image, then prove the image in real containers."""
    install_project(session)
    session.run("pytest", "tests/image", *session.posargs)


@nox.session(python=PYTHON)
def e2e(session: nox.Session) -> None:
    """The real thing on a kind cluster built from source: deploy, smoke, NetworkPolicies, HA drill,
    a config change, redeploy, teardown.

    First builds what a machine with no registry cannot pull (tests/e2e/prepare.py: the node
    image, the Airflow image's base, PostgreSQL 17), which needs root, Docker, Go, gcc and
    libseccomp-dev. `nox -s e2e -- --dag-id ID` runs another DAG of dags/ through the cluster.
    """
    install_project(session)
    output = session.run("python", "-m", "tests.e2e.prepare", silent=True)
    settings = dict(line.split("=", 1) for line in str(output).splitlines() if "=" in line)
    session.env["PATH"] = os.pathsep.join(
        [settings.pop("PATH_PREFIX"), session.env.get("PATH") or os.environ["PATH"]]
    )
    session.env.update(settings)
    provision(session, "kind", "kubectl", "checkov")  # kind and kubectl: the ones just built
    session.run("pytest", "-s", "-rs", "tests/kind", "tests/e2e", *session.posargs)
