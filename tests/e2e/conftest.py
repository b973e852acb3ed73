"""The e2e tests need what `invoke deploy` needs; a missing piece is a failure, never a skip.

`nox -s e2e` builds what a machine with no registry cannot pull first (prepare.py). The
product's own preflight (airflow_ha.preflight) then prints the line `invoke deploy` would.
"""

from __future__ import annotations

import pytest

from airflow_ha import preflight
from airflow_ha.console import Failure

KIND_CLUSTER = "airflow-ha"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--dag-id", default=None, help="Also run this DAG of dags/ through the cluster.")


@pytest.fixture(scope="session", autouse=True)
def kind_tools() -> None:
    try:
        preflight.run(None, KIND_CLUSTER, quiet=True)
    except Failure as missing:
        pytest.fail(f"preflight failed, as `invoke deploy` would:\n{missing}", pytrace=False)
