"""The smoke client against a real Airflow 3.3.2 api-server.

One `airflow standalone` per session (api-server, scheduler with LocalExecutor,
dag-processor, triggerer, SQLite) in a temporary AIRFLOW_HOME, with this repository's
dags/ and SimpleAuthManager reading a password file written here. These tests are the
slowest of the unit suite, so they are few: one success, and the three failures users
must understand (a missing DAG, wrong credentials, a failing task).

The cluster half of the smoke test (worker pods) needs Kubernetes, which cannot run
here: tests/e2e covers it on kind. Below, its label matching is checked against the
provider's own pod generator, its pod assertions against a Kubernetes API mocked by a
list of pods, and its port-forward against a real kubectl and a refused connection.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets as token
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_ha import REPO_ROOT, cluster, smoke
from airflow_ha.console import Failure

DAG_ID = "smoke_kubernetes_executor"
START_TIMEOUT = 240
RUN_TIMEOUT = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(url: str) -> bool:
    try:
        health = httpx.get(f"{url}/api/v2/monitor/health", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return False
    components = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return all((health.get(name) or {}).get("status") == "healthy" for name in components)


@pytest.fixture(scope="session")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(URL, admin password) of a running Airflow with this repository's DAGs."""
    home = tmp_path_factory.mktemp("airflow-home")
    password = token.token_urlsafe(16)
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({"admin": password}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent  # standalone starts each component as `airflow ...`
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
    }
    output = home / "standalone.log"
    with output.open("w") as log:
        process = subprocess.Popen(
            [str(bin_dir / "airflow"), "standalone"],
            env=env,
            cwd=home,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so that every component stops with it
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(output.read_text().splitlines()[-40:])
                pytest.fail(f"airflow standalone did not become healthy at {url}:\n{tail}")
            time.sleep(2)
        yield url, password
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        # Whatever of its process group outlived it (an api-server worker can).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def run_smoke(url: str, password: str, dag_id: str = DAG_ID, timeout: int = RUN_TIMEOUT) -> smoke.Run:
    return smoke.smoke(
        context=None,
        kind_cluster="airflow-ha",
        namespace="airflow",
        api_url=url,
        username="admin",
        password=password,
        dag_id=dag_id,
        timeout=timeout,
    )


def test_smoke_succeeds_and_reads_every_task_log(airflow, capsys):
    url, password = airflow

    run = run_smoke(url, password)

    assert {ti["task_id"]: ti["state"] for ti in run.task_instances} == {
        "produce": "success",
        "double": "success",
        "assert_ran_in_executor_pods": "success",
    }
    output = " ".join(capsys.readouterr().out.split())
    assert 'the run gets conf {"require_executor_pods": false}' in output
    assert "the cluster assertions are skipped" in output
    assert "the logs of all 3 tasks are readable through the API" in output


def test_a_missing_dag_is_named(airflow):
    url, password = airflow

    with pytest.raises(
        Failure, match=r"DAG 'no_such_dag' not found at .* \(404\): it was never parsed within 5 s"
    ):
        run_smoke(url, password, dag_id="no_such_dag", timeout=5)


def test_wrong_credentials_are_named(airflow):
    url, _ = airflow

    with pytest.raises(Failure, match=r"wrong credentials: POST .*/auth/token answered 401 for user 'admin'"):
        run_smoke(url, "not-the-password")


def test_a_failing_task_is_named_with_its_state_and_log(airflow):
    url, password = airflow

    # Without the relaxed conf the DAG's last task requires worker pods, and fails outside a cluster.
    with smoke.AirflowAPI(url, "admin", password) as api, pytest.raises(Failure) as failed:
        smoke.run_dag(api, DAG_ID, {}, RUN_TIMEOUT)
    message = str(failed.value)
    assert "assert_ran_in_executor_pods=failed" in message
    assert "task 'assert_ran_in_executor_pods' failed (try 1); the end of its log:" in message
    assert "AssertionError: tasks shared a host" in message


def test_invoke_smoke_exits_non_zero_with_the_error(airflow):
    url, _ = airflow

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "invoke",
            "smoke",
            "--api-url",
            url,
            "--username",
            "admin",
            "--password",
            "wrong",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 1
    assert "error: wrong credentials: POST" in result.stderr + result.stdout


# worker pod matching, with the Kubernetes API mocked


def test_expected_labels_match_the_labels_the_executor_writes():
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator

    run_id = "manual__2026-01-01T00:00:00.123456+00:00"  # ':' and '+' are not allowed in label values
    task = {"task_id": "assert_ran_in_executor_pods", "try_number": 2, "map_index": -1}
    written = PodGenerator.build_labels_for_k8s_executor_pod(
        dag_id=DAG_ID, task_id=task["task_id"], try_number=2, airflow_worker=41, run_id=run_id
    )

    expected = smoke.expected_labels(DAG_ID, run_id, task)

    assert expected.items() <= written.items()
    assert expected["run_id"] != run_id  # sanitized, as the executor does


class PodList:
    """The Kubernetes API mocked as a fixed list of pods behind dynamic.resources.get(...).get(...)."""

    namespaced = True

    def __init__(self, pods: list[dict[str, Any]]):
        self.pods = pods
        self.resources = self

    def get(
        self, api_version: str | None = None, kind: str | None = None, label_selector: str = "", **_: Any
    ):
        if kind is not None:
            return self
        wanted = dict(term.split("=", 1) for term in label_selector.split(","))
        items = [p for p in self.pods if wanted.items() <= p["metadata"]["labels"].items()]
        return {"items": items}


def watched(run: smoke.Run, deleted: bool) -> smoke.PodWatch:
    """A PodWatch that saw one worker pod per task instance, without starting its thread."""
    pods = smoke.PodWatch(cluster.Kube("kind-airflow-ha", PodList([]), None), "airflow", run.dag_id)
    for index, ti in enumerate(run.task_instances):
        labels = {**smoke.expected_labels(run.dag_id, run.run_id, ti), "airflow-worker": "7"}
        pods.pods[f"worker-{index}"] = smoke.WorkerPod(
            f"worker-{index}", labels, "Succeeded", deleted=deleted
        )
    return pods


RUN = smoke.Run(
    DAG_ID,
    "manual__2026-01-01T00:00:00+00:00",
    [{"task_id": task, "try_number": 1, "map_index": -1} for task in ("produce", "double")],
)


def test_worker_pods_one_per_task_and_deleted_pass():
    pods = watched(RUN, deleted=True)

    smoke.require_worker_pods(pods.kube, "airflow", pods, RUN, timeout=5)


def test_a_task_without_a_worker_pod_fails():
    pods = watched(RUN, deleted=True)
    pods.pods.popitem()

    with pytest.raises(
        Failure, match=r"task 'double' \(try 1\) succeeded, but no worker pod with the labels"
    ):
        smoke.require_worker_pods(pods.kube, "airflow", pods, RUN, timeout=5)


def test_a_pod_the_executor_did_not_make_fails():
    pods = watched(RUN, deleted=True)
    del pods.pods["worker-0"].labels["airflow-worker"]

    with pytest.raises(Failure, match=r"pod worker-0 lacks the airflow-worker label"):
        smoke.require_worker_pods(pods.kube, "airflow", pods, RUN, timeout=5)


def test_worker_pods_left_behind_fail(monkeypatch):
    monkeypatch.setattr(smoke, "POLL_SECONDS", 0.1)
    pods = watched(RUN, deleted=False)

    with pytest.raises(
        Failure, match=r"still exist after 1 s: worker-0, worker-1\. Is \[kubernetes_executor\]"
    ):
        smoke.require_worker_pods(pods.kube, "airflow", pods, RUN, timeout=1)


def test_a_port_forward_that_cannot_start_is_named(tmp_path, monkeypatch):
    """kubectl is real; the cluster is a kubeconfig entry that refuses connections."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed here")
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "gone", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "gone", "user": {"token": "not-a-secret"}}],
                "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "gone"}}],
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))

    with (
        pytest.raises(
            Failure, match=r"port-forward svc/airflow-api-server :8080` did not start forwarding: "
        ),
        smoke.port_forward("gone", "airflow", "svc/airflow-api-server", 8080),
    ):
        pass
