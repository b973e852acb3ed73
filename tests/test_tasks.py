"""tasks.py as users meet it: every task answers `-h` and `--help`, and documents every flag.

invoke's own Program and parser read the real tasks.py; nothing runs beyond the help printer.
Each test loads tasks.py afresh: invoke consumes a task's help as it parses it, and other tests
parse the module's shared ``tasks.ns``.
"""

from __future__ import annotations

import importlib.util

import pytest
from invoke import Collection, Program

from airflow_ha import REPO_ROOT


def fresh_namespace() -> Collection:
    spec = importlib.util.spec_from_file_location("tasks_fresh", REPO_ROOT / "tasks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ns


TASKS = sorted(fresh_namespace().task_names)


@pytest.mark.parametrize("name", TASKS)
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_every_task_prints_its_help(name, flag, capsys):
    program = Program(namespace=fresh_namespace(), binary="invoke")

    with pytest.raises(SystemExit) as exited:
        program.run(["invoke", name, flag])

    assert exited.value.code in (0, None), capsys.readouterr().err
    assert capsys.readouterr().out.startswith(f"Usage: invoke [--core-opts] {name} ")


def test_every_flag_has_help():
    undocumented = [
        f"{context.name} --{flag.name.replace('_', '-')}"
        for context in fresh_namespace().to_contexts()
        for flag in context.args.values()
        if not flag.help
    ]

    assert undocumented == []
