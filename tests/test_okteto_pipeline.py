"""okteto-pipeline.yml: an Okteto Manifest whose commands run in the deployer image, install
nothing, parse as POSIX sh, and whose every `invoke` command is an existing task with existing flags.

The `invoke` commands are parsed by invoke's own Program and Parser against the real `tasks.ns`
collection, as `invoke` itself would parse them, so a renamed task or flag fails here
instead of in an Okteto pipeline. No Okteto and no Kubernetes API are involved.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
import yaml
from invoke import Program
from invoke.exceptions import ParseError

import tasks
from airflow_ha import REPO_ROOT

PIPELINE = REPO_ROOT / "okteto-pipeline.yml"
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def pipeline() -> dict:
    return yaml.safe_load(PIPELINE.read_text())


def commands() -> list[str]:
    sections = (pipeline().get(section) or {} for section in ("deploy", "destroy"))
    return [step["command"] for section in sections for step in section.get("commands") or []]


def invoke_argv(command: str) -> list[str] | None:
    """The argv of an `invoke` command (after any VAR=value prefixes), else None."""
    words = shlex.split(command)
    while words and ASSIGNMENT.match(words[0]):
        words.pop(0)
    return words if words and words[0] == "invoke" else None


def parse(argv: list[str]) -> Program:
    program = Program(namespace=tasks.ns, binary="invoke")
    # Program.run's parsing steps, without update_config and execute.
    program.create_config()
    program.parse_core(argv)
    program.parse_collection()
    program.parse_tasks()
    return program


INVOKE_COMMANDS = [argv for argv in map(invoke_argv, commands()) if argv]


def test_okteto_builds_the_airflow_and_the_deployer_image_and_runs_every_command_in_the_deployer():
    manifest = pipeline()

    assert manifest["build"]["airflow"]["dockerfile"] == "docker/Dockerfile"
    assert manifest["build"]["deployer"]["dockerfile"] == "docker/deployer/Dockerfile"
    for name in ("airflow", "deployer"):
        assert manifest["build"][name]["context"] == "."
        assert (REPO_ROOT / manifest["build"][name]["dockerfile"]).is_file()
    assert manifest["deploy"]["image"] == manifest["destroy"]["image"] == "${OKTETO_BUILD_DEPLOYER_IMAGE}"


INSTALLS = re.compile(r"\b(pip|pip3|uv|venv|apt|apt-get|curl|wget|dnf|apk)\b")


def test_no_command_installs_anything_at_run_time():
    assert [command for command in commands() if INSTALLS.search(command)] == []


def test_the_check_for_installs_finds_one():
    assert INSTALLS.search("python3 -m venv .venv && .venv/bin/pip install uv")


@pytest.mark.parametrize("command", commands())
def test_every_command_parses_as_posix_sh(command):
    """Okteto's remote runner runs each command with `sh -c`."""
    checked = subprocess.run(["sh", "-n", "-c", command], capture_output=True, text=True, check=False)

    assert checked.returncode == 0, checked.stderr


def test_the_deploy_deploys_the_image_okteto_built_under_its_commit_tag():
    deploy = next(argv for argv in INVOKE_COMMANDS if argv[1] == "deploy")
    command = next(c for c in commands() if " deploy " in c)

    assert pipeline()["build"]["airflow"]["image"].endswith(":${OKTETO_GIT_COMMIT}")
    assert deploy[deploy.index("--tag") + 1] == "$OKTETO_GIT_COMMIT"
    assert "--skip-build" in deploy
    assert (
        'INVOKE_IMAGE_REPOSITORY="$OKTETO_BUILD_AIRFLOW_REGISTRY/$OKTETO_BUILD_AIRFLOW_REPOSITORY"' in command
    )


def test_the_pipeline_deploys_and_smoke_tests_with_invoke():
    tasks_run = [argv[1] for argv in INVOKE_COMMANDS]

    assert tasks_run == ["deploy", "smoke", "teardown"]
    deploy = INVOKE_COMMANDS[0]
    assert deploy[deploy.index("--overlay") + 1] == "okteto"
    assert deploy[deploy.index("--namespace") + 1] == "$OKTETO_NAMESPACE"


@pytest.mark.parametrize("argv", INVOKE_COMMANDS, ids=[" ".join(argv[:2]) for argv in INVOKE_COMMANDS])
def test_invoke_command_parses_against_tasks_py(argv, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", sys.dont_write_bytecode)  # parse_core sets it

    program = parse(argv)

    assert [context.name for context in program.tasks] == [argv[1]]
    for flag in (word for word in argv[2:] if word.startswith("--")):
        assert program.tasks[0].flags[flag].got_value, f"{flag} parsed without a value"


@pytest.mark.parametrize(
    "argv",
    [
        ["invoke", "deploy", "--no-such-flag"],
        ["invoke", "no-such-task"],
        ["invoke", "smoke", "--overlay", "okteto"],
    ],
)
def test_the_parser_rejects_what_tasks_py_does_not_have(argv, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", sys.dont_write_bytecode)

    with pytest.raises(ParseError):
        parse(argv)
