"""tasks.py as users meet it: every task answers `-h` and `--help`, and documents every flag.

invoke's own Program and parser read the real ``tasks.ns``; nothing runs beyond the help
printer. Each test takes a copy, because invoke consumes a task's help as it parses it.
"""

from __future__ import annotations

import copy

import pytest
from invoke import Program

import tasks

TASKS = sorted(tasks.ns.task_names)


@pytest.mark.parametrize("name", TASKS)
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_every_task_prints_its_help(name, flag, capsys):
    program = Program(namespace=copy.deepcopy(tasks.ns), binary="invoke")

    with pytest.raises(SystemExit) as exited:
        program.run(["invoke", name, flag])

    assert exited.value.code in (0, None), capsys.readouterr().err
    assert capsys.readouterr().out.startswith(f"Usage: invoke [--core-opts] {name} ")


def test_every_flag_has_help():
    undocumented = [
        f"{context.name} --{flag.name.replace('_', '-')}"
        for context in copy.deepcopy(tasks.ns).to_contexts()
        for flag in context.args.values()
        if not flag.help
    ]

    assert undocumented == []
