"""Every `invoke` command in okteto-pipeline.yml parses as an existing task with existing flags.

The commands are parsed by invoke's own Program and Parser against the real `tasks.ns`
collection, as `invoke` itself would parse them, so a renamed task or flag fails here
instead of in an Okteto pipeline.
"""

from __future__ import annotations

import re
import shlex
import sys

import pytest
import yaml
from invoke import Program
from invoke.exceptions import ParseError

import tasks
from airflow_ha import REPO_ROOT

PIPELINE = REPO_ROOT / "okteto-pipeline.yml"
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def commands() -> list[str]:
    pipeline = yaml.safe_load(PIPELINE.read_text())
    return [command for section in ("deploy", "destroy") for command in pipeline.get(section) or []]


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


def test_the_pipeline_deploys_and_smoke_tests_with_invoke():
    tasks_run = [argv[1] for argv in INVOKE_COMMANDS]

    assert tasks_run[:2] == ["deploy", "smoke"]
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
