"""The rehearsal stack, shared by every scenario of `nox -s stack`.

The deployment runs with its own configuration, KubernetesExecutor included. Its pods are
Docker containers (rehearsal.py); the Kubernetes API they reach, in-cluster, is the emulator
of tests/emulator, listening on the rehearsal network's gateway, and the worker pods the
executor creates there are run by the emulator's Docker pod runner. The emulator is NOT
Kubernetes: this proves the executor's configuration, pod template, RBAC and API calls, not
scheduling, requests, CPU limits, NetworkPolicy or a real kubelet (only kind or a cluster prove
those). Memory limits hold: Docker sets each container's cgroup limit as a kubelet would.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from airflow_ha import REPO_ROOT, generated_secrets, manifests

from .rehearsal import NAMESPACE, Kubelet, Rehearsal, RehearsalError

COMPONENTS = ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
SMOKE_DAG_ID = "smoke_kubernetes_executor"
CONTEXT = "executor-emulator"  # the kube context smoke gets: it names the emulator
SMOKE_ACCOUNT = "airflow-smoke"  # the test's own ServiceAccount: what `invoke smoke` may read
NOT_PROVEN = (
    "EMULATED Kubernetes API (tests/emulator), not kind and not a cluster: this does not prove "
    "scheduling, requests, CPU limits, NetworkPolicy, PodDisruptionBudgets or a real kubelet "
    "(`nox -s e2e` does); memory limits are Docker's cgroup limits."
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--dag-id", default=SMOKE_DAG_ID, help="DAG the cluster-mode smoke scenario runs")
    parser.addoption("--conf", default="", help="run conf (a JSON object) for --dag-id")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The okteto rehearsal first, whatever the order asked: its module-scoped stack is then
    torn down before the session's kind stack starts, so two never run at once."""
    items.sort(key=lambda item: item.path.name != "test_okteto_stack.py")


def emulator_types() -> Any:
    """tests/emulator, imported by its folder: pytest puts tests/ on sys.path."""
    from emulator import runner, server

    return server, runner


@dataclass
class Stack:
    rehearsal: Rehearsal
    emulator: Any  # emulator.server.Emulator
    runner: Any  # emulator.runner.PodRunner
    kubeconfig: Path
    api_url: str = ""

    @property
    def admin(self) -> tuple[str, str]:
        generated = self.rehearsal.secrets[generated_secrets.ADMIN_SECRET]
        return generated["username"], generated["password"]

    def pods(self, name: str) -> list[Any]:
        return [pod for pod in self.rehearsal.pods if pod.manifest.name == name]

    def smoke(self, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
        """`invoke smoke` in cluster mode: the context names the emulator, --api-url the api-server."""
        username, password = self.admin
        invoke = shutil.which("invoke")
        assert invoke, "invoke is not installed in this environment"
        command = [invoke, "smoke", "--context", CONTEXT, "--api-url", self.api_url, "--username", username]
        command += ["--password", password, "--timeout", str(timeout), *args]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout * 3 + 120,
            check=False,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
        )
        print(result.stdout[-6000:], result.stderr[-6000:])
        assert password not in result.stdout + result.stderr, "invoke smoke printed the admin password"
        return result

    def diagnostics(self) -> str:
        lines = ["forbidden requests seen by the emulator:"]
        lines += [f"  {a.user} {a.verb} {a.path}: {a.message}" for a in self.emulator.forbidden()[-10:]]
        lines += [f"worker pods that could not start: {self.runner.failures}"] if self.runner.failures else []
        lines += [f"pod runner errors: {self.runner.errors}"] if self.runner.errors else []
        lines += [f"memory limit reached: {hit}" for hit in self.rehearsal.memory_limit_hits()]
        from emulator.store import BY_PLURAL, Selector

        pods, version = self.emulator.store.list(BY_PLURAL["", "pods"], NAMESPACE, Selector([], []))
        lines.append(f"pods in the emulator at resourceVersion {version}:")
        for pod in pods:
            metadata = pod["metadata"]
            lines.append(
                f"  {metadata['name']} {pod['status'].get('phase')} rv={metadata['resourceVersion']} "
                f"deletionTimestamp={metadata.get('deletionTimestamp')} "
                f"worker={metadata['labels'].get('airflow-worker')}"
            )
            lines += [
                f"    {a.user} {a.verb} {a.code} {a.path.split('?')[0]}"
                for a in self.emulator.audit
                if metadata["name"] in a.path
            ]
        for pod in self.pods("airflow-scheduler"):
            lines.append(f"--- {pod.name}\n{self.rehearsal.logs(pod, 60)}")
        return "\n".join(lines)


def apply(emulator: Any, obj: dict[str, Any]) -> None:
    """Create one object through the API, as `invoke deploy` would; fail on a refusal."""
    from emulator.store import BY_KIND

    resource = BY_KIND[obj["apiVersion"], obj["kind"]]
    prefix = f"/apis/{resource.group}/v1" if resource.group else "/api/v1"
    scope = f"/namespaces/{NAMESPACE}" if resource.namespaced else ""
    response = httpx.post(
        f"{emulator.url}{prefix}{scope}/{resource.plural}",
        json=obj,
        headers={"Authorization": f"Bearer {emulator.admin_token}"},
        verify=ssl.create_default_context(cafile=str(emulator.ca_file)),
        timeout=30,
    )
    if response.status_code != 201:
        name = obj["metadata"]["name"]
        raise RehearsalError(f"the emulator refused {obj['kind']}/{name}: {response.json()['message']}")


def secret_object(name: str, data: dict[str, str]) -> dict[str, Any]:
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "data": encoded,
    }


def smoke_access() -> list[dict[str, Any]]:
    """A ServiceAccount for `invoke smoke`: read pods, their logs and events, nothing else."""
    rbac = "rbac.authorization.k8s.io/v1"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SMOKE_ACCOUNT}},
        {
            "apiVersion": rbac,
            "kind": "Role",
            "metadata": {"name": SMOKE_ACCOUNT},
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["pods/log", "services"], "verbs": ["get", "list"]},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
            ],
        },
        {
            "apiVersion": rbac,
            "kind": "RoleBinding",
            "metadata": {"name": SMOKE_ACCOUNT},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SMOKE_ACCOUNT},
            "subjects": [{"kind": "ServiceAccount", "name": SMOKE_ACCOUNT, "namespace": NAMESPACE}],
        },
    ]


def write_kubeconfig(folder: Path, emulator: Any) -> Path:
    path = folder / "kubeconfig"
    token = emulator.rbac.service_account_token(NAMESPACE, SMOKE_ACCOUNT)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {
                    "server": emulator.url,
                    "certificate-authority-data": base64.b64encode(emulator.ca_pem.encode()).decode(),
                },
            }
        ],
        "users": [{"name": SMOKE_ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": SMOKE_ACCOUNT}}],
        "current-context": CONTEXT,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def kubernetes_version() -> str:
    return str(yaml.safe_load((REPO_ROOT / "invoke.yaml").read_text())["lint"]["kubernetes_newest"])


@pytest.fixture(scope="session")
def stack(
    airflow_image: str, postgres_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with rehearsal_stack(airflow_image, postgres_image, tmp_path_factory.mktemp("kube")) as running:
        yield running


@contextmanager
def rehearsal_stack(
    airflow_image: str, postgres_image: str, folder: Path, overlay: str = "kind"
) -> Iterator[Stack]:
    """The whole deployment of one overlay, up and healthy, with the emulator and the pod runner;
    removed after."""
    server, runner = emulator_types()
    rendered = manifests.render(overlay, image=airflow_image)
    postgres = manifests.find(rendered, "StatefulSet", "airflow-postgres")
    assert postgres, f"the {overlay} overlay has no StatefulSet/airflow-postgres"
    manifest_postgres_image = postgres.obj["spec"]["template"]["spec"]["containers"][0]["image"]
    print(
        f"\nREHEARSAL of the {overlay} overlay with its own configuration (KubernetesExecutor).\n{NOT_PROVEN}"
    )
    print(f"No registry is reachable, so {manifest_postgres_image} runs as {postgres_image}.")
    generated = generated_secrets.generate_missing({})
    rehearsal = Rehearsal(rendered, generated, {manifest_postgres_image: postgres_image})
    emulator = server.Emulator(host=rehearsal.gateway, version=kubernetes_version())
    pods_runner = None
    try:
        if not manifests.find(rendered, "Namespace", NAMESPACE):  # it exists already (okteto)
            apply(emulator, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        for manifest in sorted(rendered, key=lambda m: m.kind != "Namespace"):
            apply(emulator, manifest.obj)
        for name, data in generated.items():
            apply(emulator, secret_object(name, data))
        for obj in smoke_access():
            apply(emulator, obj)
        from emulator.store import BY_PLURAL

        def read(plural: str, name: str) -> dict[str, str]:
            return dict(emulator.store.get(BY_PLURAL["", plural], NAMESPACE, name).get("data") or {})

        rehearsal.kubelet = Kubelet(
            host=rehearsal.gateway,
            port=emulator.port,
            ca_pem=emulator.ca_pem,
            token=emulator.rbac.service_account_token,
            config_map=lambda name: read("configmaps", name),
            secret=lambda name: {k: base64.b64decode(v).decode() for k, v in read("secrets", name).items()},
        )
        pods_runner = runner.PodRunner(
            emulator.store, NAMESPACE, rehearsal.client, rehearsal.network.name, rehearsal.worker_run_options
        ).start()
        stack = Stack(rehearsal, emulator, pods_runner, write_kubeconfig(folder, emulator))
        rehearsal.start(postgres)
        for pod in rehearsal.pods:
            rehearsal.wait_until_probes_pass(pod, timeout=120)
        migrate = manifests.find(rendered, "Job", "airflow-migrate")
        assert migrate, f"the {overlay} overlay has no Job/airflow-migrate"
        print(rehearsal.run_job(migrate).strip().splitlines()[-1])
        for name in COMPONENTS:
            workload = manifests.find(rendered, "Deployment", name)
            assert workload, f"the {overlay} overlay has no Deployment/{name}"
            rehearsal.start(workload)
        api_server = stack.pods("airflow-api-server")[0]
        rehearsal.wait_until_probes_pass(api_server)
        stack.api_url = f"http://127.0.0.1:{rehearsal.host_port(api_server, 8080)}"
        yield stack
    except RehearsalError:
        for pod in rehearsal.pods:
            print(f"--- {pod.name}\n{rehearsal.logs(pod) if pod.containers else '(not started)'}")
        raise
    finally:
        left_running = pods_runner.close() if pods_runner else []
        emulator.close()
        run_id = rehearsal.run_id
        rehearsal.close()
        leftovers = rehearsal.client.containers.list(
            all=True, filters={"label": f"airflow-ha-stack={run_id}"}
        )
        assert not leftovers, f"rehearsal containers left behind: {[c.name for c in leftovers]}"
        if left_running:
            print(f"worker pods still running at the end, removed: {left_running}")


@contextmanager
def api_client(stack: Stack) -> Iterator[httpx.Client]:
    """A REST client of the rehearsal's api-server, signed in as the generated admin."""
    username, password = stack.admin
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        token = client.post("/auth/token", json={"username": username, "password": password})
        token.raise_for_status()
        client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        yield client


def wait_for(condition: Any, timeout: float, what: str, every: float = 2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def dump(value: Any) -> str:
    return json.dumps(value, indent=1, default=str)[:3000]
