"""`nox -s stack`: the deployment rehearsed in Docker with its own KubernetesExecutor.

The Kubernetes API is the emulator of tests/emulator (NOT Kubernetes; see conftest.py for what
it does not prove); everything else is real: PostgreSQL, the migration, two api-servers, two
schedulers, the dag-processor, two triggerers, and one Docker container per worker pod.
Scenarios: cluster-mode `invoke smoke` with one pod per task-instance try (any DAG with
`nox -s stack -- --dag-id ID`), worker isolation, then, in the files after this one, the
api-server and scheduler failovers and RBAC.
"""

from __future__ import annotations

import json

import pytest

from airflow_ha import generated_secrets

from .conftest import COMPONENTS, NOT_PROVEN, SMOKE_DAG_ID, Stack, api_client
from .rehearsal import SERVICE_ACCOUNT_FOLDER, component_pods

# What no worker pod may hold: it reaches the Execution API with its workload's own token.
COMPONENT_SECRETS = (generated_secrets.AIRFLOW_SECRETS, generated_secrets.METADATA_SECRET)


def test_every_component_replica_passes_its_own_probes(stack: Stack) -> None:
    print(NOT_PROVEN)
    pods = list(component_pods(stack.rehearsal))
    assert {pod.manifest.name for pod in pods} == {"airflow-postgres", *COMPONENTS}
    replicas = {pod.manifest.name: 0 for pod in pods}
    for pod in pods:
        results = stack.rehearsal.wait_until_probes_pass(pod)
        replicas[pod.manifest.name] += 1
        print(f"{pod.name}: " + "; ".join(f"{probe} ok" for probe in results))
    # The HA layout itself is rehearsed: two api-servers, schedulers and triggerers at once.
    assert (
        replicas["airflow-api-server"] == replicas["airflow-scheduler"] == replicas["airflow-triggerer"] == 2
    )


def test_api_servers_answer_behind_the_service_name(stack: Stack) -> None:
    """The execution API URL in the config resolves to the api-servers, as it must for workers."""
    scheduler = stack.pods("airflow-scheduler")[0]
    url = stack.rehearsal.config_map("airflow-config")["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
    health = url.replace("/execution/", "/api/v2/monitor/health")
    probe = f"import urllib.request; print(urllib.request.urlopen({health!r}, timeout=10).status)"
    result = scheduler.containers[-1].exec_run(["python", "-c", probe])
    assert result.exit_code == 0 and result.output.decode().strip() == "200", result.output.decode()


def test_cluster_mode_smoke_runs_one_worker_pod_per_task_instance(
    stack: Stack, request: pytest.FixtureRequest
) -> None:
    """`invoke smoke` in cluster mode against the emulator: the executor's pods, PodWatch, pod deletion, logs.

    Its kube context names the emulator (a kubeconfig with the test ServiceAccount's token);
    the api-server is the rehearsal's. Smoke requires one worker pod per task-instance try,
    each deleted, and each task's log readable through the API after its pod is gone.
    """
    dag_id, conf = request.config.getoption("--dag-id"), request.config.getoption("--conf")
    result = stack.smoke("--dag-id", dag_id, *(["--conf", conf] if conf else []))
    if result.returncode != 0:
        print(stack.diagnostics())
    assert result.returncode == 0, f"invoke smoke failed in cluster mode against the emulator for {dag_id}"
    # rich wraps long lines to the terminal width
    assert "ran in its own KubernetesExecutor worker pod" in " ".join(result.stdout.split())
    created = [a for a in stack.emulator.audit if a.verb == "create" and a.path.endswith("/pods")]
    assert created and all(a.user == "system:serviceaccount:airflow:airflow-scheduler" for a in created), (
        created
    )
    assert not stack.runner.failures, stack.runner.failures


def test_worker_pods_hold_no_component_secret_and_no_api_token(stack: Stack) -> None:
    """Isolation of the worker pods the smoke run used: only the airflow-config ConfigMap, no token.

    Reads what the pod runner gave each worker container (the emulator's pods are gone by now).
    """
    workers = stack.rehearsal.worker_environments
    assert workers, "no worker pod ran: run the cluster-mode smoke scenario first"
    forbidden_values = {
        value for name in COMPONENT_SECRETS for value in stack.rehearsal.secrets[name].values()
    } | {stack.admin[1]}
    forbidden_keys = {key for name in COMPONENT_SECRETS for key in stack.rehearsal.secrets[name]}
    for pod_name, environment in workers.items():
        assert not forbidden_keys & environment.keys(), (
            f"{pod_name} got {forbidden_keys & environment.keys()}"
        )
        leaked = [key for key, value in environment.items() if value in forbidden_values]
        assert not leaked, f"{pod_name} got a component secret in {leaked}"
        assert SERVICE_ACCOUNT_FOLDER not in stack.rehearsal.worker_mounts[pod_name], (
            f"{pod_name} got an API token"
        )
        assert environment.get("AIRFLOW_IS_K8S_EXECUTOR_POD") == "True", sorted(environment)
    print(f"{len(workers)} worker pods ran with config only: {sorted(workers)}")


def test_task_log_is_readable_through_the_api(stack: Stack, request: pytest.FixtureRequest) -> None:
    if request.config.getoption("--dag-id") != SMOKE_DAG_ID:
        pytest.skip("reads the smoke DAG's last log; smoke itself read every task's log of --dag-id")
    with api_client(stack) as client:
        runs = client.get(
            f"/api/v2/dags/{SMOKE_DAG_ID}/dagRuns", params={"order_by": "-start_date", "limit": 1}
        )
        runs.raise_for_status()
        (run,) = runs.json()["dag_runs"]
        assert run["state"] == "success", run
        log = client.get(
            f"/api/v2/dags/{SMOKE_DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances/assert_ran_in_executor_pods/logs/1",
            headers={"Accept": "application/json"},
        )
        log.raise_for_status()
    text = json.dumps(log.json())
    # The final task prints where every task ran; its log on the shared volume says so.
    assert "tasks ran in" in text, text[:2000]
