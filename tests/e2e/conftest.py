"""The e2e tests need Docker, kind and kubectl; without one of them they skip, naming it.

The check is the product's own preflight (airflow_ha.cluster), so the reason given is
the line `invoke deploy` would print: the missing tool and how to install it.
"""

from __future__ import annotations

import pytest

from airflow_ha import cluster
from airflow_ha.console import Failure

KIND_CLUSTER = "airflow-ha"


@pytest.fixture(scope="session", autouse=True)
def kind_tools() -> None:
    try:
        cluster.preflight(None, KIND_CLUSTER, quiet=True)
    except Failure as missing:
        pytest.skip(f"the e2e tests need a kind cluster here: {missing}")
