"""Run inside the installed Airflow, as a subprocess of the airflow check:

    python -m airflow_ha.lint.airflow_process REQUEST.json

On the first run it migrates the empty SQLite database first and keeps a copy of it for the
next runs. It judges every AIRFLOW__* setting the manifests make, writes the verdicts to the
report file the request names, then runs the Airflow CLI command of the request
(generate-dag-yaml). One process does all, so that Airflow starts once. It imports nothing
of the lint gate.
"""

from __future__ import annotations

import difflib
import importlib
import json
import os
import sqlite3
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

AIRFLOW_ENV_PREFIX = "AIRFLOW__"
AUTH_MANAGER_KEY = "AIRFLOW__CORE__AUTH_MANAGER"


def main(request_file: str) -> None:
    request = json.loads(Path(request_file).read_text())
    if keep := request.get("migrate_and_keep"):
        importlib.import_module("airflow.utils.db").upgradedb()
        _keep(Path(request["database"]), Path(keep))
    conf = importlib.import_module("airflow.configuration").conf
    changes = importlib.import_module("airflow.cli.commands.config_command").CONFIGS_CHANGES
    version = importlib.import_module("airflow").__version__
    report = {
        key: verdict for key in request["keys"] if (verdict := option_problem(conf, changes, version, key))
    }
    if AUTH_MANAGER_KEY not in report and (verdict := auth_manager_problem(conf)):
        report[AUTH_MANAGER_KEY] = verdict
    Path(request["report"]).write_text(json.dumps(report))
    sys.argv = ["airflow", *request["cli"]]
    importlib.import_module("airflow.__main__").main()


def _keep(database: Path, kept: Path) -> None:
    """A copy of the migrated database at ``kept``, made whole before anyone can read it.

    SQLite's backup copies what is committed, including what is still in a write-ahead log.
    """
    kept.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=kept.parent, suffix=".tmp", delete=False) as copy:
        pass
    source, destination = sqlite3.connect(database), sqlite3.connect(copy.name)
    with source, destination:
        source.backup(destination)
    source.close()
    destination.close()
    os.replace(copy.name, kept)


def option_problem(conf: Any, changes: Iterable[Any], version: str, key: str) -> tuple[str, str] | None:
    """(rule, message) of why Airflow would not take AIRFLOW__SECTION__KEY, if it would not."""
    section, _, option = key.removeprefix(AIRFLOW_ENV_PREFIX).lower().partition("__")
    for suffix in ("_cmd", "_secret"):  # the command and secrets-backend forms of sensitive options
        if option.endswith(suffix) and (section, option.removesuffix(suffix)) in conf.sensitive_config_values:
            option = option.removesuffix(suffix)
    for change in changes:
        same = (change.config.section, change.config.option) == (section, option)
        if same and not change.default_change and (message := change.message):
            return "airflow/removed-option", str(message)
    if (section, option) in conf.inversed_deprecated_options:
        new_section, new_option = conf.inversed_deprecated_options[(section, option)]
        message = f"deprecated: use {AIRFLOW_ENV_PREFIX}{new_section.upper()}__{new_option.upper()} instead"
        return "airflow/renamed-option", message
    described = conf.configuration_description
    options = (described.get(section) or {}).get("options") or {}
    if option not in options:
        known = [
            f"{s}__{o}" for s, description in described.items() for o in description.get("options") or {}
        ]
        close = difflib.get_close_matches(f"{section}__{option}", known, n=1)
        hint = f": did you mean {AIRFLOW_ENV_PREFIX}{close[0].upper()}?" if close else ""
        message = f"[{section}] {option} is not an option of Airflow {version} or of its providers{hint}"
        return "airflow/unknown-option", message
    if deprecated := options[option].get("version_deprecated"):
        reason = " ".join((options[option].get("deprecation_reason") or "").split())
        return "airflow/deprecated-option", f"deprecated since Airflow {deprecated}" + (
            f": {reason}" if reason else ""
        )
    return None


def auth_manager_problem(conf: Any) -> tuple[str, str] | None:
    """(rule, message) of why the configured auth manager cannot serve, or is for development only.

    The gate runs in an environment installed from the image's lock, so what imports here
    imports in the image.
    """
    path = conf.get("core", "auth_manager")
    module, _, name = path.rpartition(".")
    try:
        manager = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as error:
        return "airflow/auth-manager", (
            f"{path} cannot be imported ({error}): add the provider that has it to docker/requirements.in "
            "and the lock, or fix the class path"
        )
    base = importlib.import_module("airflow.api_fastapi.auth.managers.base_auth_manager").BaseAuthManager
    if not (isinstance(manager, type) and issubclass(manager, base)):
        return "airflow/auth-manager", f"{path} is not an auth manager (a subclass of BaseAuthManager)"
    simple = importlib.import_module("airflow.api_fastapi.auth.managers.simple.simple_auth_manager")
    if issubclass(manager, simple.SimpleAuthManager):
        return "airflow/dev-auth-manager", (
            "SimpleAuthManager (Airflow's default when no auth manager is set) is for development and "
            "testing only: use airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager, or "
            "name the overlay for development (dev-..., ...-dev)"
        )
    return None


if __name__ == "__main__":
    main(sys.argv[1])
