"""Set the project up from a fresh clone with whatever `python3` comes first, then run a tool.

    python3 -m airflow_ha.bootstrap invoke deploy smoke
    python3 -m airflow_ha.bootstrap nox

Nothing is installed into that Python: a PEP 668 system Python (Debian, Ubuntu, Homebrew)
refuses it, and a pyenv one should not be touched either. Virtual environments are made with
`python3 -m venv` and filled from hashed locks:

- ``.cache/bootstrap``: nox and uv, from requirements/bootstrap.lock (the test command);
- ``.venv``: the project, from docker/deployer/requirements.lock, installed by that uv (invoke).

Each lock is installed exactly, with no resolution, and checked complete (airflow_ha/locks.py).

Each one is built again only when its inputs change. The standard library only: this runs
before anything is installed, on any Python from 3.9.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from airflow_ha import locks

ROOT = Path(__file__).resolve().parent.parent
TOOLS_ENV = ROOT / ".cache" / "bootstrap"
PROJECT_ENV = ROOT / ".venv"
TOOLS_LOCK = ROOT / "requirements" / "bootstrap.lock"
# Every dependency of the project, Airflow pinned as in the image, with hashes.
PROJECT_LOCK = ROOT / "docker" / "deployer" / "requirements.lock"
PROJECT_INPUTS = (PROJECT_LOCK, ROOT / "pyproject.toml")
# The image runs Python 3.11 and docker/requirements.lock is compiled for it.
PROJECT_PYTHON = (3, 11)
OLDEST_PYTHON = (3, 9)
MARKER = "airflow-ha-inputs"
PROGRAMS = {"invoke": "deploy, smoke, lint and the other tasks", "nox": "the test sessions"}
USAGE = (
    "usage: python3 -m airflow_ha.bootstrap PROGRAM [ARGS...]\n"
    "  PROGRAM is invoke (the tasks: `invoke deploy smoke`) or nox (the tests)"
)


class BootstrapError(Exception):
    """One line that says what is missing and how to get it."""


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in PROGRAMS:
        print(USAGE, file=sys.stderr)
        return 2
    program, args = argv[0], argv[1:]
    try:
        executable = set_up(program)
    except BootstrapError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        return subprocess.run([str(executable), *args], cwd=ROOT, check=False).returncode
    except KeyboardInterrupt:
        return 130


def set_up(program: str) -> Path:
    """Make the environments ``program`` needs; return the path of its executable."""
    if sys.version_info < OLDEST_PYTHON:
        raise BootstrapError(
            f"{sys.executable} is Python {version(sys.version_info)}; the set-up needs "
            f"{version(OLDEST_PYTHON)} or later (the project itself runs on {version(PROJECT_PYTHON)})"
        )
    tools = ensure_env(TOOLS_ENV, [TOOLS_LOCK], install_tools, "nox and uv")
    if program == "nox":
        return bin_dir(tools) / "nox"
    ensure_env(PROJECT_ENV, PROJECT_INPUTS, install_project, "the project")
    return bin_dir(PROJECT_ENV) / "invoke"


def ensure_env(env: Path, inputs: Sequence[Path], install: Callable[[Path], None], what: str) -> Path:
    """A virtual environment holding what ``inputs`` pin, rebuilt only when they change."""
    digest = inputs_digest(inputs)
    marker = env / MARKER
    if marker.is_file() and marker.read_text().strip() == digest and python_of(env).exists():
        return env
    print(f"setting up {relative(env)} ({what}, from {', '.join(relative(p) for p in inputs)})", flush=True)
    if env.exists():
        shutil.rmtree(env)
    try:
        install(env)
    except BaseException:
        # A half-built environment would look usable next time.
        shutil.rmtree(env, ignore_errors=True)
        raise
    marker.write_text(digest + "\n")
    return env


def install_tools(env: Path) -> None:
    create_venv(env)
    install_lock(python_of(env), TOOLS_LOCK)


def install_project(env: Path) -> None:
    uv = str(bin_dir(TOOLS_ENV) / "uv")
    if sys.version_info[:2] == PROJECT_PYTHON:
        create_venv(env)
    else:
        # The lock holds wheels for one Python; uv finds that one, or fetches it.
        wanted = version(PROJECT_PYTHON)
        print(f"  {sys.executable} is Python {version(sys.version_info)}: asking uv for Python {wanted}")
        run(
            [uv, "venv", "--quiet", "--python", wanted, str(env)],
            f"creating {relative(env)} with Python {wanted}",
        )
    install_lock(python_of(env), PROJECT_LOCK, uv=uv)
    run(
        [uv, "pip", "install", "--python", str(python_of(env)), "--no-deps", "-e", str(ROOT)],
        f"installing the project into {relative(env)}",
    )
    try:
        locks.check(python_of(env), f"{relative(PROJECT_LOCK)} for the project")
    except locks.LockError as error:
        raise BootstrapError(str(error)) from None


def install_lock(python: Path, lock: Path, uv: str | None = None) -> None:
    print(f"  installing {relative(lock)} into {relative(python.parent.parent)}", flush=True)
    try:
        locks.install(python, [lock], uv=uv)
    except locks.LockError as error:
        raise BootstrapError(str(error)) from None


def create_venv(env: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "venv", str(env)], capture_output=True, text=True, check=False
    )
    if result.returncode == 0 and python_of(env).exists():
        return
    output = (result.stderr + result.stdout).strip()
    if "ensurepip" in output:
        package = f"python{version(sys.version_info)}-venv"
        raise BootstrapError(
            f"{sys.executable} cannot create virtual environments (no ensurepip): install the "
            f"python3-venv package (`sudo apt install python3-venv`, or {package}) and run again"
        )
    last = output.splitlines()[-1] if output else f"exit status {result.returncode}"
    raise BootstrapError(f"`{sys.executable} -m venv {relative(env)}` failed: {last}")


def run(command: list[str], doing: str) -> None:
    try:
        result = subprocess.run(command, cwd=ROOT, check=False)
    except OSError as error:
        raise BootstrapError(f"{doing}: {error}") from error
    if result.returncode != 0:
        raise BootstrapError(f"{doing} failed (exit status {result.returncode}); its output is above")


def inputs_digest(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256(f"{sys.executable} {version(sys.version_info)}".encode())
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def bin_dir(env: Path) -> Path:
    return env / ("Scripts" if os.name == "nt" else "bin")


def python_of(env: Path) -> Path:
    return bin_dir(env) / ("python.exe" if os.name == "nt" else "python")


def version(info: Sequence[Any]) -> str:
    return f"{info[0]}.{info[1]}"


def relative(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
