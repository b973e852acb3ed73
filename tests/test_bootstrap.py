"""The stdlib bootstrap behind the README's commands: its errors and its reuse of environments.

Debian's Python without python3-venv is played by a shell script that answers `-m venv` as
Debian's does; environments are folders in a temporary folder.
tests/test_readme.py runs the whole thing under the real /usr/bin/python3.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from airflow_ha import bootstrap

# What Debian's python3 prints for `-m venv` when python3-venv is not installed.
DEBIAN_WITHOUT_VENV = """#!/bin/sh
echo 'The virtual environment was not created successfully because ensurepip is not
available.  On Debian/Ubuntu systems, you need to install the python3-venv
package using the following command.

    apt install python3.11-venv' >&2
exit 1
"""


def test_a_python_without_ensurepip_gets_one_line_naming_the_package(tmp_path, monkeypatch, capsys):
    fake_python = tmp_path / "python3"
    fake_python.write_text(DEBIAN_WITHOUT_VENV)
    fake_python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake_python))
    monkeypatch.setattr(bootstrap, "TOOLS_ENV", tmp_path / "env")

    assert bootstrap.main(["nox", "--list"]) == 1

    errors = capsys.readouterr().err.strip().splitlines()
    versioned = f"python{sys.version_info[0]}.{sys.version_info[1]}-venv"
    assert errors == [
        f"error: {fake_python} cannot create virtual environments (no ensurepip): install the python3-venv "
        f"package (`sudo apt install python3-venv`, or {versioned}) and run again"
    ]
    assert not (tmp_path / "env").exists(), "a half-made environment would look usable next time"


def test_an_environment_is_rebuilt_only_when_its_inputs_change(tmp_path):
    lock = tmp_path / "some.lock"
    lock.write_text("one\n")
    built: list[Path] = []

    def install(env: Path) -> None:  # what counts is that an interpreter is there afterwards
        bootstrap.python_of(env).parent.mkdir(parents=True)
        bootstrap.python_of(env).write_text("")
        built.append(env)

    env = tmp_path / "env"
    bootstrap.ensure_env(env, [lock], install, "a test")
    bootstrap.ensure_env(env, [lock], install, "a test")
    assert built == [env]
    assert bootstrap.python_of(env).exists()

    lock.write_text("two\n")
    bootstrap.ensure_env(env, [lock], install, "a test")
    assert built == [env, env]


def test_an_unknown_program_shows_the_usage(capsys):
    assert bootstrap.main(["pip", "install", "nox"]) == 2
    assert "usage: python3 -m airflow_ha.bootstrap PROGRAM" in capsys.readouterr().err


@pytest.mark.parametrize("program", ["invoke", "nox"])
def test_each_program_comes_from_its_own_environment(program, monkeypatch, tmp_path):
    monkeypatch.setattr(bootstrap, "ensure_env", lambda env, inputs, install, what: env)

    assert (
        bootstrap.set_up(program)
        == {
            "invoke": bootstrap.PROJECT_ENV / "bin" / "invoke",
            "nox": bootstrap.TOOLS_ENV / "bin" / "nox",
        }[program]
    )
