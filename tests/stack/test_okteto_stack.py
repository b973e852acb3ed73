"""The okteto overlay rehearsed: its pod template, one task slot and its task logs on one disk.

The same rehearsal as test_stack.py (Docker containers for the pods, the Kubernetes API
emulator of tests/emulator, the Docker pod runner; NOT Kubernetes, see conftest.py for what
it does not prove), with the okteto overlay's own objects. Its logs claim is ReadWriteOnce,
and every pod that mounts it is held to the disk's node by required pod affinity. Here one
Docker volume stands for that disk, so this proves that the components and the worker pods
share the claim and that smoke reads each task's log after its worker pod is gone; that the
affinity places them on one node only a cluster proves (the lint gate checks the rules).

It runs first (conftest.py orders it) and tears its stack down at its end, so the two
rehearsals never run at once. With `--dag-id`, it is skipped: that option asks for one DAG on
the kind rehearsal.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from .conftest import NOT_PROVEN, SMOKE_DAG_ID, Stack, rehearsal_stack

LOGS_NODE_LABEL = "airflow-ha/logs-node"


@pytest.fixture(scope="module")
def okteto_stack(
    airflow_image: str,
    postgres_image: str,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Stack]:
    if request.config.getoption("--dag-id") != SMOKE_DAG_ID:
        pytest.skip("--dag-id runs one DAG on the kind rehearsal; the okteto scenario runs the smoke DAG")
    folder = tmp_path_factory.mktemp("okteto")
    with rehearsal_stack(airflow_image, postgres_image, folder, "okteto") as running:
        yield running


@pytest.fixture(scope="module")
def okteto_smoke(okteto_stack: Stack) -> subprocess.CompletedProcess[str]:
    """Cluster-mode `invoke smoke` on the okteto rehearsal, run once for the tests below."""
    print(NOT_PROVEN)
    result = okteto_stack.smoke()
    if result.returncode != 0:
        print(okteto_stack.diagnostics())
    return result


def test_okteto_smoke_reads_every_task_log_after_its_worker_pod_is_gone(
    okteto_stack: Stack, okteto_smoke: subprocess.CompletedProcess[str]
) -> None:
    """One worker pod per try, each deleted, each task's log read through the API after."""
    assert okteto_smoke.returncode == 0, "invoke smoke failed on the okteto overlay's rehearsal"
    assert "ran in its own KubernetesExecutor worker pod" in " ".join(okteto_smoke.stdout.split())
    assert not okteto_stack.runner.failures, okteto_stack.runner.failures


def test_okteto_worker_pods_follow_the_logs_disk(
    okteto_stack: Stack, okteto_smoke: subprocess.CompletedProcess[str]
) -> None:
    """The executor built each worker pod from the okteto template: on the logs disk's node, claim mounted."""
    specs = okteto_stack.rehearsal.worker_specs
    assert specs, f"no worker pod ran; smoke exited {okteto_smoke.returncode}"
    for pod_name, spec in specs.items():
        terms = spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        selectors = [term["labelSelector"]["matchLabels"] for term in terms]
        assert {LOGS_NODE_LABEL: "airflow-logs"} in selectors, f"{pod_name}: {terms}"
        claims = [
            v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v
        ]
        assert claims == ["airflow-logs"], f"{pod_name} mounts {claims}"
        assert "/opt/airflow/logs" in okteto_stack.rehearsal.worker_mounts[pod_name]
    print(f"{len(specs)} worker pods ran with the okteto template, on the logs disk's node: {sorted(specs)}")
