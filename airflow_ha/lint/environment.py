"""The Python subprocesses of the slow checks: Airflow's interpreter and checkov, and what they reuse."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from .. import REPO_ROOT
from ..console import Failure

# What the slow checks reuse between runs (gitignored): a migrated metadata database
# per Airflow version, bytecode, and the results of the slow checks.
CACHE_DIR = REPO_ROOT / ".cache"
DATABASE_URL_KEY = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"


def python_env(package: Path) -> dict[str, str]:
    """The environment for a Python subprocess of the installed Airflow, or of checkov
    (``package``: the __init__.py of its main package).

    A package installed with its bytecode (pip does it, `uv pip install --compile-bytecode`
    too) runs from it. Otherwise Python keeps the bytecode under .cache/, even where
    PYTHONDONTWRITEBYTECODE is set or site-packages is read-only: else every start compiles
    thousands of modules again, which doubles the time Airflow takes to start.
    """
    env = dict(os.environ)
    if not has_bytecode(package):
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(CACHE_DIR / "pycache")
    return env


def has_bytecode(source: Path) -> bool:
    """Whether the module ``source`` was compiled where Python looks without a pycache prefix."""
    return (source.parent / "__pycache__" / f"{source.stem}.{sys.implementation.cache_tag}.pyc").is_file()


def airflow_package() -> Path:
    """The installed Airflow's __init__.py, found without importing Airflow."""
    spec = importlib.util.find_spec("airflow")
    return Path(spec.origin if spec and spec.origin else "")


def airflow_env(home: Path) -> dict[str, str]:
    """A clean environment for the installed Airflow, at AIRFLOW_HOME=home: no AIRFLOW* of the user's."""
    env = python_env(airflow_package())
    env = {key: value for key, value in env.items() if not key.startswith("AIRFLOW")}
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env | {"AIRFLOW_HOME": str(home), "PYTHONPATH": pythonpath}


def database_cache() -> Path:
    """Where the SQLite metadata database migrated by the installed Airflow is kept."""
    return CACHE_DIR / f"airflow-{metadata.version('apache-airflow')}" / "airflow.db"


def migrated_database() -> Path:
    """A SQLite metadata database migrated by the installed Airflow: made once, copied per use."""
    cached = database_cache()
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
        env = airflow_env(Path(tmp)) | {DATABASE_URL_KEY: f"sqlite:///{Path(tmp) / 'airflow.db'}"}
        command = [sys.executable, "-m", "airflow", "db", "migrate"]
        result = subprocess.run(command, env=env, cwd=tmp, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise Failure(f"`airflow db migrate` of a SQLite database failed: {tail(result.stderr)}")
        os.replace(Path(tmp) / "airflow.db", cached)  # atomic: a concurrent run sees all or nothing
    return cached


def tail(output: str, lines: int = 3) -> str:
    """The last meaningful lines of a tool's output, on one line."""
    meaningful = [line.strip() for line in output.strip().splitlines() if line.strip()]
    return " | ".join(meaningful[-lines:]) or "no output"
