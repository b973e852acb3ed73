"""Test sessions. `nox` runs lint, tests, image and stack; `nox -s e2e` needs kind.

The image, stack and e2e sessions need a Docker daemon; .ci/run installs and starts one.
"""

from __future__ import annotations

import os
import shutil

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "tests", "image", "stack"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
LOCK = "docker/requirements.lock"
CHECKOV = "checkov==3.3.30"


def install_project(session: nox.Session, *extras: str) -> None:
    """The project with Airflow pinned exactly as the image has it."""
    spec = f".[{','.join(extras)}]" if extras else "."
    session.install("-r", LOCK, "-e", spec)


def install_checkov(session: nox.Session) -> None:
    """checkov's pins clash with Airflow's, so it lives in a tool environment of its own."""
    tools = os.path.abspath(os.path.join(session.cache_dir, "tools"))
    session.run(
        "uv",
        "tool",
        "install",
        "--quiet",
        CHECKOV,
        env={"UV_TOOL_DIR": tools, "UV_TOOL_BIN_DIR": os.path.join(tools, "bin")},
        external=True,
    )
    session.env["PATH"] = os.pathsep.join(
        [os.path.join(tools, "bin"), session.env.get("PATH") or os.environ["PATH"]]
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """The manifest gate, then ruff, mypy, yamllint, hadolint and shellcheck."""
    install_project(session, "lint")
    install_checkov(session)
    session.run("invoke", "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    session.run("yamllint", "--strict", ".")
    session.run("hadolint", "docker/Dockerfile", "docker/postgres/Dockerfile")
    session.run("shellcheck", "docker/bootstrap.sh", "docker/postgres/entrypoint.sh", ".ci/run")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit tests: every lint check against broken manifests, the DAG, deploy and smoke logic."""
    install_project(session, "test")
    install_checkov(session)
    session.run(
        "pytest",
        "tests",
        "--ignore=tests/image",
        "--ignore=tests/stack",
        "--ignore=tests/e2e",
        *session.posargs,
    )


@nox.session(python=PYTHON)
def image(session: nox.Session) -> None:
    """Build the base and the Airflow image, then prove the image in real containers."""
    install_project(session, "test")
    session.run("pytest", "tests/image", *session.posargs)


@nox.session(python=PYTHON)
def stack(session: nox.Session) -> None:
    """Rehearse the deployment in Docker with its own KubernetesExecutor against the Kubernetes API emulator.

    Then its scenarios: cluster-mode `invoke smoke`, worker isolation, api-server and scheduler
    failover, RBAC. `nox -s stack -- --dag-id ID [--conf JSON]` smoke-tests another DAG.
    """
    install_project(session, "test")
    session.run("pytest", "-s", "tests/stack", *session.posargs)


@nox.session(python=PYTHON)
def e2e(session: nox.Session) -> None:
    """The real thing on kind: deploy, smoke, HA drill, redeploy, teardown.

    Skips naming the first missing piece, and how to get it, before installing anything.
    """
    import subprocess

    needs = {
        "docker": "the docker CLI: install Docker Engine, https://docs.docker.com/engine/install/",
        "kind": "kind: install it, https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
        "kubectl": "kubectl: install it, https://kubernetes.io/docs/tasks/tools/#kubectl",
    }
    for tool, need in needs.items():
        if shutil.which(tool) is None:
            session.skip(f"e2e needs {need} (`{tool}` is not on PATH)")
        if tool == "docker":
            try:
                info = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
                daemon_answers = info.returncode == 0
            except subprocess.TimeoutExpired:
                daemon_answers = False
            if not daemon_answers:
                session.skip("e2e needs a running Docker daemon: start one, or set DOCKER_HOST")
    install_project(session, "test")
    session.run("pytest", "-s", "-rs", "tests/e2e", *session.posargs)
