"""Progress of long steps, off a terminal (CI, Okteto's runner, a pipe) and in one."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from airflow_ha import console as console_module
from airflow_ha.console import progress


def lines(output: io.StringIO) -> list[str]:
    return output.getvalue().splitlines()


def test_off_a_terminal_each_change_is_a_line_at_most_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(console_module.time, "monotonic", lambda: clock[0])
    output = io.StringIO()
    target = Console(file=output, force_terminal=False, width=200)

    with progress("waiting for Deployment/airflow-scheduler", target) as status:
        status.update("waiting for Deployment/airflow-scheduler: 1 of 2 replicas ready")  # too soon
        clock[0] += console_module.PROGRESS_EVERY
        status.update("waiting for Deployment/airflow-scheduler: 1 of 2 replicas ready")
        clock[0] += console_module.PROGRESS_EVERY
        status.update("waiting for Deployment/airflow-scheduler: 1 of 2 replicas ready")  # unchanged

    assert lines(output) == [
        "… waiting for Deployment/airflow-scheduler",
        "… waiting for Deployment/airflow-scheduler: 1 of 2 replicas ready",
    ]


def test_in_a_terminal_it_is_a_spinner_that_leaves_no_line() -> None:
    output = io.StringIO()
    target = Console(file=output, force_terminal=True, width=200)

    with progress("loading the image", target) as status:
        status.update("still loading the image")

    assert "… loading the image" not in output.getvalue()
    assert status.status is not None


def test_off_a_terminal_a_message_is_printed_as_it_is() -> None:
    """Pod events and tool output may hold brackets that rich would read as markup."""
    output = io.StringIO()
    target = Console(file=output, force_terminal=False, width=200)

    with progress("debootstrap: I: Retrieving [/var/lib] [bold]", target):
        pass

    assert lines(output) == ["… debootstrap: I: Retrieving [/var/lib] [bold]"]
