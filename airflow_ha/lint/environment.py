"""The Python subprocesses of the slow checks: Airflow's interpreter and checkov, and what they reuse."""

from __future__ import annotations

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


def python_env() -> dict[str, str]:
    """The environment for a Python subprocess of the installed Airflow, or of checkov.

    Python keeps their bytecode under .cache/ even where PYTHONDONTWRITEBYTECODE is set or
    site-packages is read-only: otherwise every start compiles thousands of modules again,
    which doubles the time Airflow takes to start.
    """
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    return env | {"PYTHONPYCACHEPREFIX": str(CACHE_DIR / "pycache")}


def airflow_env(home: Path) -> dict[str, str]:
    """A clean environment for the installed Airflow, at AIRFLOW_HOME=home: no AIRFLOW* of the user's."""
    env = {key: value for key, value in python_env().items() if not key.startswith("AIRFLOW")}
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env | {"AIRFLOW_HOME": str(home), "PYTHONPATH": pythonpath}


def migrated_database() -> Path:
    """A SQLite metadata database migrated by the installed Airflow: made once, copied per use."""
    cached = CACHE_DIR / f"airflow-{metadata.version('apache-airflow')}" / "airflow.db"
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
