"""`nox -s stack`: the rendered manifests rehearsed in Docker, then `invoke smoke --api-url`.

PostgreSQL, the migration Job and every Airflow component run as containers built
from the kind overlay's own objects and the generated secrets (see rehearsal.py).
This is NOT a KubernetesExecutor test: the executor is overridden to LocalExecutor,
because KubernetesExecutor needs a cluster. `nox -s e2e` is the KubernetesExecutor test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from airflow_ha import generated_secrets, manifests

from .rehearsal import EXECUTOR_OVERRIDE, Rehearsal, RehearsalError, component_pods

COMPONENTS = ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
DAG_ID = "smoke_kubernetes_executor"


@pytest.fixture(scope="module")
def stack(airflow_image: str, postgres_image: str) -> Iterator[Rehearsal]:
    rendered = manifests.render("kind", image=airflow_image)
    postgres = manifests.find(rendered, "StatefulSet", "airflow-postgres")
    assert postgres, "the kind overlay has no StatefulSet/airflow-postgres"
    manifest_postgres_image = postgres.obj["spec"]["template"]["spec"]["containers"][0]["image"]
    print(
        f"\nREHEARSAL, not a KubernetesExecutor test: executor overridden to {EXECUTOR_OVERRIDE}."
        f"\nNo registry is reachable, so {manifest_postgres_image} runs as {postgres_image}."
    )
    rehearsal = Rehearsal(
        rendered, generated_secrets.generate_missing({}), {manifest_postgres_image: postgres_image}
    )
    try:
        rehearsal.start(postgres)
        for pod in rehearsal.pods:
            rehearsal.wait_until_probes_pass(pod, timeout=120)
        migrate = manifests.find(rendered, "Job", "airflow-migrate")
        assert migrate, "the kind overlay has no Job/airflow-migrate"
        print(rehearsal.run_job(migrate).strip().splitlines()[-1])
        for name in COMPONENTS:
            workload = manifests.find(rendered, "Deployment", name)
            assert workload, f"the kind overlay has no Deployment/{name}"
            rehearsal.start(workload)
        yield rehearsal
    except RehearsalError:
        for pod in rehearsal.pods:
            print(f"--- {pod.name}\n{rehearsal.logs(pod) if pod.containers else '(not started)'}")
        raise
    finally:
        run_id = rehearsal.run_id
        rehearsal.close()
        leftovers = rehearsal.client.containers.list(
            all=True, filters={"label": f"airflow-ha-stack={run_id}"}
        )
        assert not leftovers, f"rehearsal containers left behind: {[c.name for c in leftovers]}"


@pytest.fixture(scope="module")
def api_url(stack: Rehearsal) -> str:
    api_server = next(pod for pod in stack.pods if pod.manifest.name == "airflow-api-server")
    return f"http://127.0.0.1:{stack.host_port(api_server, 8080)}"


def admin_credentials(stack: Rehearsal) -> tuple[str, str]:
    generated = stack.secrets[generated_secrets.ADMIN_SECRET]
    return generated["username"], generated["password"]


def test_every_component_replica_passes_its_own_probes(stack: Rehearsal) -> None:
    pods = list(component_pods(stack))
    assert {pod.manifest.name for pod in pods} == {"airflow-postgres", *COMPONENTS}
    replicas = {pod.manifest.name: 0 for pod in pods}
    for pod in pods:
        results = stack.wait_until_probes_pass(pod)
        replicas[pod.manifest.name] += 1
        print(f"{pod.name}: " + "; ".join(f"{probe} ok" for probe in results))
    # The HA layout itself is rehearsed: two api-servers, schedulers and triggerers at once.
    assert (
        replicas["airflow-api-server"] == replicas["airflow-scheduler"] == replicas["airflow-triggerer"] == 2
    )


def test_api_servers_answer_behind_the_service_name(stack: Rehearsal) -> None:
    """The execution API URL in the config resolves to the api-servers, as it must for workers."""
    scheduler = next(pod for pod in stack.pods if pod.manifest.name == "airflow-scheduler")
    url = stack.config_map("airflow-config")["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
    health = url.replace("/execution/", "/api/v2/monitor/health")
    probe = f"import urllib.request; print(urllib.request.urlopen({health!r}, timeout=10).status)"
    result = scheduler.containers[-1].exec_run(["python", "-c", probe])
    assert result.exit_code == 0 and result.output.decode().strip() == "200", result.output.decode()


def test_smoke_dag_runs_through_invoke_smoke(stack: Rehearsal, api_url: str) -> None:
    username, password = admin_credentials(stack)
    invoke = shutil.which("invoke")
    assert invoke, "invoke is not installed in this environment"
    result = subprocess.run(
        [
            invoke,
            "smoke",
            "--api-url",
            api_url,
            "--username",
            username,
            "--password",
            password,
            "--timeout",
            "300",
        ],
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    print(result.stdout[-4000:], result.stderr[-4000:])
    if result.returncode != 0:
        for pod in stack.pods:
            if pod.manifest.name == "airflow-scheduler":
                print(f"--- {pod.name}\n{stack.logs(pod, 80)}")
    assert result.returncode == 0, "invoke smoke failed against the rehearsal"
    assert password not in result.stdout + result.stderr, "invoke smoke printed the admin password"


def test_task_log_is_readable_through_the_api(stack: Rehearsal, api_url: str) -> None:
    username, password = admin_credentials(stack)
    with httpx.Client(base_url=api_url, timeout=30) as client:
        token = client.post("/auth/token", json={"username": username, "password": password})
        token.raise_for_status()
        client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        runs = client.get(f"/api/v2/dags/{DAG_ID}/dagRuns", params={"order_by": "-start_date", "limit": 1})
        runs.raise_for_status()
        (run,) = runs.json()["dag_runs"]
        assert run["state"] == "success", run
        log = client.get(
            f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances/assert_ran_in_executor_pods/logs/1",
            headers={"Accept": "application/json"},
        )
        log.raise_for_status()
    text = json.dumps(log.json())
    # The final task prints where every task ran; its log on the shared volume says so.
    assert "tasks ran in" in text, text[:2000]
