"""The e2e tests run wherever a Docker daemon answers; without one they skip, naming it.

Everything else the product provisions itself (kind, kubectl, checkov), so a preflight
failure here is a failure, not a skip: the product's own preflight (airflow_ha.preflight)
prints the line `invoke deploy` would print, and the session fails with it.
"""

from __future__ import annotations

import subprocess

import pytest

from airflow_ha import preflight
from airflow_ha.console import Failure

KIND_CLUSTER = "airflow-ha"


def docker_daemon_answers() -> bool:
    try:
        return (
            subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def blocker() -> tuple[str, str] | None:
    """("skip" or "fail", why) when the e2e tests cannot run here; None when they can."""
    if not docker_daemon_answers():
        return "skip", "the e2e tests need a running Docker daemon (`docker info` failed): start one"
    try:
        preflight.run(None, KIND_CLUSTER, quiet=True)
    except Failure as missing:
        return "fail", f"preflight failed, as `invoke deploy` would:\n{missing}"
    return None


@pytest.fixture(scope="session", autouse=True)
def kind_tools() -> None:
    verdict = blocker()
    if verdict and verdict[0] == "skip":
        pytest.skip(verdict[1])
    if verdict:
        pytest.fail(verdict[1], pytrace=False)
