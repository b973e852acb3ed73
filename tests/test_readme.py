"""The README's two fresh-machine commands stay true."""

from __future__ import annotations

import re

from airflow_ha import REPO_ROOT


def fresh_machine_commands() -> list[str]:
    first_block = re.search(r"```sh\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.S)
    assert first_block, "README.md must begin with a sh block of the fresh-machine commands"
    return [line for line in first_block.group(1).splitlines() if line and not line.startswith("#")]


def test_readme_begins_with_a_deploy_and_a_test_command() -> None:
    deploy, test = fresh_machine_commands()
    assert "invoke deploy" in deploy
    assert test.endswith("&& nox")


def test_ci_runs_the_readme_test_command() -> None:
    _, test = fresh_machine_commands()
    ci_commands = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()]
    assert test in ci_commands, f".ci/run must run the README's test command: {test}"
