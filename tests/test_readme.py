"""The README's two fresh-machine commands stay true, even under a PEP 668 system Python.

The set-up check runs the commands for real, in a copy of the working tree, with Debian's
/usr/bin/python3 first on PATH and no other Python there: real venv, real PyPI installs,
the real Docker daemon. Nothing is faked; kind's download fails here, where only PyPI and
Debian's mirrors are reachable, and the check accepts exactly that stop.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from airflow_ha import REPO_ROOT, tools

SYSTEM_PYTHON = Path("/usr/bin/python3")
# Where Debian keeps its own Python and Docker's CLI; no pyenv shims, no ~/.local/bin.
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
SETUP_TIMEOUT = 900  # a fresh machine downloads Airflow and checkov once


def fresh_machine_commands() -> list[str]:
    first_block = re.search(r"```sh\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.S)
    assert first_block, "README.md must begin with a sh block of the fresh-machine commands"
    return [line for line in first_block.group(1).splitlines() if line and not line.startswith("#")]


def test_readme_begins_with_a_deploy_and_a_test_command() -> None:
    deploy, test = fresh_machine_commands()
    assert "invoke deploy" in deploy
    assert test.split()[-1] == "nox"
    for command in (deploy, test):
        assert "pip install" not in command, "a PEP 668 Python refuses pip installs into itself"


def test_ci_runs_the_readme_test_command() -> None:
    _, test = fresh_machine_commands()
    ci_commands = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()]
    assert test in ci_commands, f".ci/run must run the README's test command: {test}"


def working_tree_copy(destination: Path) -> Path:
    """What a fresh clone of this working tree holds: tracked and new files, nothing ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in listed)):
        source = REPO_ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def system_python_env() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYENV", "VIRTUAL_ENV", "PYTHON", "NOX", "CONDA"))
    }
    env["PATH"] = SYSTEM_PATH
    return env


@pytest.mark.docker
def test_the_readme_commands_set_up_under_debians_system_python(tmp_path):
    """Both commands get past installation with the system Python, which refuses pip installs."""
    if not SYSTEM_PYTHON.is_file():
        pytest.skip("no Debian system Python at /usr/bin/python3 here")
    found = shutil.which("python3", path=SYSTEM_PATH)
    assert found and Path(found).resolve() == SYSTEM_PYTHON.resolve(), (
        f"{SYSTEM_PATH} must find only {SYSTEM_PYTHON}"
    )
    clone = working_tree_copy(tmp_path / "clone")
    deploy, test = fresh_machine_commands()
    # The deploy command's set-up, then `invoke doctor`, which provisions what deploy would
    # and stops before any cluster: where kind cannot be downloaded, it stops there.
    set_up_and_check = re.sub(r"invoke deploy.*$", "invoke doctor", deploy)

    deployed = run_as_on_a_fresh_machine(set_up_and_check, clone)
    output = deployed.stdout + deployed.stderr
    assert "externally-managed-environment" not in output
    assert (clone / ".venv" / "bin" / "invoke").is_file(), output[-3000:]
    assert re.search(r"python\s+│ ok\s+│ 3\.11", output), output[-3000:]
    assert re.search(r"checkov\s+│ ok", output), output[-3000:]
    if deployed.returncode != 0:
        kind_url = tools.KIND.url_for(tools.host_platform())
        assert (
            f"error: kind missing: kind {tools.KIND.version} is not installed and the download failed: "
            in (output)
        ), output[-3000:]
        assert f"tried {kind_url}: " in output
        assert "Install it by hand (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)" in output
        assert "checkov missing" not in output and "checkov not found" not in output

    listed = run_as_on_a_fresh_machine(f"{test} --list", clone)
    assert listed.returncode == 0, (listed.stdout + listed.stderr)[-3000:]
    assert "* tests -> " in listed.stdout


def run_as_on_a_fresh_machine(command: str, clone: Path) -> subprocess.CompletedProcess[str]:
    """A README command in the clone, under the system Python's PATH; never raises on failure."""
    return subprocess.run(
        command,
        shell=True,
        cwd=clone,
        env=system_python_env(),
        capture_output=True,
        text=True,
        timeout=SETUP_TIMEOUT,
        check=False,
    )


README = " ".join((REPO_ROOT / "README.md").read_text().split())


def test_the_deploy_line_lists_its_steps_in_the_order_deploy_runs_them():
    """tests/test_deploy.py holds deploy to this order: the gate before the build and the cluster."""
    line = README.split("invoke deploy # ", 1)[1]
    steps = ("preflight", "lint gate", "image build", "kind cluster", "secrets", "apply", "rollout")
    positions = [line.index(step) for step in steps]
    assert positions == sorted(positions), f"the README's deploy steps are out of order: {line[:120]}"


def test_smoke_reaches_the_api_server_without_kubectl_and_the_readme_says_so():
    for module in ("smoke.py", "port_forward.py"):
        assert "subprocess" not in (REPO_ROOT / "airflow_ha" / module).read_text(), module
    assert "kubectl port-forward" not in README


def test_the_readme_names_the_postgresql_that_is_deployed_and_the_one_that_is_tested():
    manifest = (REPO_ROOT / "kube" / "base" / "postgres.yaml").read_text()
    deployed = re.search(r"image: (postgres:(\d+)\.\S+)", manifest)
    tested = re.search(r"ARG PG_MAJOR=(\d+)", (REPO_ROOT / "docker" / "postgres" / "Dockerfile").read_text())
    assert deployed and tested
    assert f"| PostgreSQL {deployed[2]} (`{deployed[1]}`) |" in README
    assert (
        f"installs Debian bookworm's PostgreSQL {tested[1]}, while the manifests deploy PostgreSQL "
        f"{deployed[2]} (`{deployed[1]}`)" in README
    )
