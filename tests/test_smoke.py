"""The smoke client against a real Airflow 3.3.2 api-server.

One Airflow per session (api-server, scheduler with LocalExecutor, dag-processor,
triggerer, SQLite) in a temporary AIRFLOW_HOME, with this repository's dags/ and the FAB
auth manager, as in the pods. These tests are the
slowest of the unit suite, so they are few: one success, and the three failures users
must understand (a missing DAG, wrong credentials, a failing task).

The cluster half of the smoke test (worker pods) runs end to end on kind in tests/e2e; its API
calls and their 403s run against the real API server in tests/test_worker_pods_api.py. Below,
its label matching is checked against the provider's own pod generator; the pod assertions
and a watch that fails on purpose against a Kubernetes API mocked in-process (a list of
pods); the port-forward relay against a real HTTP server on loopback, standing in for the pod.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import secrets as token
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_ha import REPO_ROOT, dag_run, kubeapi, port_forward, smoke, worker_pods
from airflow_ha.console import Failure
from airflow_ha.polling import poll

DAG_ID = "smoke_kubernetes_executor"
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
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


COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


@pytest.fixture(scope="session")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(URL, admin password) of a running Airflow with this repository's DAGs and the FAB auth manager.

    What `airflow standalone` starts, started one by one: standalone forces SimpleAuthManager,
    and the pods run FAB. The admin is made the way the migration Job makes it, by
    docker/sync_admin.py, with the password on standard input.
    """
    home = tmp_path_factory.mktemp("airflow-home")
    password = token.token_urlsafe(16)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
    }
    for command, stdin in (
        (["airflow", "db", "migrate"], ""),
        (
            [sys.executable, str(REPO_ROOT / "docker" / "sync_admin.py"), "--password-file", "-"],
            password + "\n",
        ),
    ):
        done = subprocess.run(command, env=env, cwd=home, input=stdin, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    processes: list[subprocess.Popen[bytes]] = []
    output = home / "components.log"
    with output.open("w") as log:
        for component in COMPONENTS:
            processes.append(
                subprocess.Popen(
                    [str(bin_dir / "airflow"), component],
                    env=env,
                    cwd=home,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, so that its children stop with it
                )
            )
    try:

        def started() -> bool | None:
            for component, process in zip(COMPONENTS, processes, strict=True):
                if process.poll() is not None:
                    raise AssertionError(f"airflow {component} exited:\n{tail()}")
            return healthy(url) or None

        def tail() -> str:
            return "\n".join(output.read_text().splitlines()[-40:])

        poll(
            started,
            timeout=START_TIMEOUT,
            every=2,
            timed_out=lambda: AssertionError(f"Airflow is not healthy at {url}:\n{tail()}"),
        )
        yield url, password
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
            # Whatever of its process group outlived it (an api-server worker can).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def run_smoke(url: str, password: str, dag_id: str = DAG_ID, timeout: int = RUN_TIMEOUT) -> dag_run.Run:
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


def test_wrong_credentials_are_named_after_one_sign_in(airflow, monkeypatch):
    url, _ = airflow
    sent = []
    request = httpx.Client.request

    def counted(self, method, url, **kwargs):
        response = request(self, method, url, **kwargs)
        sent.append((method, str(url), response.status_code))
        return response

    monkeypatch.setattr(httpx.Client, "request", counted)  # every request on the wire

    with pytest.raises(Failure, match=r"wrong credentials: POST .*/auth/token answered 401 for user 'admin'"):
        run_smoke(url, "not-the-password")
    # One try, no retry storm: FAB's sign-in rate limit counts every failed attempt.
    assert sent == [("POST", "/auth/token", 401)]


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

    expected = worker_pods.expected_labels(DAG_ID, run_id, task)

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


def watched(run: dag_run.Run, deleted: bool) -> worker_pods.PodWatch:
    """A PodWatch that saw one worker pod per task instance, without starting its thread."""
    pods = worker_pods.PodWatch(kubeapi.Kube("kind-airflow-ha", PodList([]), None), "airflow", run.dag_id)
    for index, ti in enumerate(run.task_instances):
        labels = worker_labels(run, ti)
        pods.pods[f"worker-{index}"] = worker_pods.WorkerPod(
            f"worker-{index}", labels, "Succeeded", deleted=deleted
        )
    return pods


def worker_labels(run: dag_run.Run, task_instance: dict[str, Any]) -> dict[str, str]:
    """The labels KubernetesExecutor gives the worker pod of one task instance."""
    return {**worker_pods.expected_labels(run.dag_id, run.run_id, task_instance), "airflow-worker": "7"}


RUN = dag_run.Run(
    DAG_ID,
    "manual__2026-01-01T00:00:00+00:00",
    [{"task_id": task, "try_number": 1, "map_index": -1} for task in ("produce", "double")],
)


def test_worker_pods_one_per_task_and_deleted_pass():
    pods = watched(RUN, deleted=True)

    worker_pods.require_worker_pods(pods.kube, "airflow", pods, RUN, timeout=5)


def test_a_task_without_a_worker_pod_fails():
    pods = watched(RUN, deleted=True)
    pods.pods.popitem()

    with pytest.raises(
        Failure, match=r"task 'double' \(try 1\) succeeded, but no worker pod with the labels"
    ):
        worker_pods.require_worker_pods(pods.kube, "airflow", pods, RUN, timeout=5)


def test_a_pod_the_executor_did_not_make_fails():
    pods = watched(RUN, deleted=True)
    del pods.pods["worker-0"].labels["airflow-worker"]

    with pytest.raises(Failure, match=r"pod worker-0 lacks the airflow-worker label"):
        worker_pods.require_worker_pods(pods.kube, "airflow", pods, RUN, timeout=5)


def test_worker_pods_left_behind_fail(monkeypatch):
    monkeypatch.setattr(worker_pods, "POLL_SECONDS", 0.1)
    pods = watched(RUN, deleted=False)

    with pytest.raises(
        Failure, match=r"still exist after 1 s: worker-0, worker-1\. Is \[kubernetes_executor\]"
    ):
        worker_pods.require_worker_pods(pods.kube, "airflow", pods, RUN, timeout=1)


MAPPED = dag_run.Run(
    DAG_ID,
    RUN.run_id,
    [{"task_id": "double", "try_number": 1, "map_index": index} for index in range(3)],
)


def test_each_mapped_instance_needs_its_own_deleted_pod(monkeypatch):
    """The last instance's pod was deleted, the first two were not: smoke must not pass."""
    monkeypatch.setattr(worker_pods, "POLL_SECONDS", 0.1)
    pods = watched(MAPPED, deleted=False)
    pods.pods["worker-2"].deleted = True

    with pytest.raises(Failure, match=r"still exist after 1 s: worker-0, worker-1\. Is"):
        worker_pods.require_worker_pods(pods.kube, "airflow", pods, MAPPED, timeout=1)


def test_mapped_instances_with_their_pods_deleted_pass():
    pods = watched(MAPPED, deleted=True)

    worker_pods.require_worker_pods(pods.kube, "airflow", pods, MAPPED, timeout=5)


def test_two_task_instances_in_one_pod_fail():
    """An unmapped instance's labels are a subset of a mapped one's: both find worker-0."""
    run = dag_run.Run(
        DAG_ID, RUN.run_id, [{**MAPPED.task_instances[0], "map_index": -1}, MAPPED.task_instances[0]]
    )
    pods = watched(dag_run.Run(DAG_ID, RUN.run_id, MAPPED.task_instances[:1]), deleted=True)

    with pytest.raises(
        Failure,
        match=r"task instances 'double' \(try 1\) and 'double' \[0\] \(try 1\) both map to worker pod "
        r"worker-0: each task instance must run in its own pod",
    ):
        worker_pods.require_worker_pods(pods.kube, "airflow", pods, run, timeout=5)


def test_a_worker_pod_the_list_still_holds_fails(monkeypatch):
    """Every pod the watch saw was deleted, but the API still lists one of the run's pods."""
    monkeypatch.setattr(worker_pods, "POLL_SECONDS", 0.1)
    pods = watched(RUN, deleted=True)
    pods.kube.dynamic.pods.append(worker_pod(RUN, RUN.task_instances[0], "worker-9", "Running"))

    with pytest.raises(Failure, match=r"still exist after 1 s: worker-9 \(Running\)\. Is"):
        worker_pods.require_worker_pods(pods.kube, "airflow", pods, RUN, timeout=1)


def test_a_pod_that_failed_to_start_and_was_replaced_is_kept_and_named(monkeypatch, capsys):
    """As on kind once: runc could not start a worker pod, Airflow ran the same try in another
    pod, and delete_worker_pods_on_failure=False kept the failed one. The watch holds the
    failed pod last, as a list after a watch error may, by name."""
    monkeypatch.setattr(worker_pods, "POLL_SECONDS", 0.1)
    pods = watched(RUN, deleted=True)
    failed = worker_pod(RUN, RUN.task_instances[1], "worker-failed", "Failed")
    failed["status"]["containerStatuses"] = [
        {
            "name": "base",
            "state": {
                "terminated": {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": "runc create failed: unable to start container process:\n unable to freeze",
                }
            },
        }
    ]
    pods.kube.dynamic.pods.append(failed)
    pods.pods["worker-failed"] = worker_pods.WorkerPod(
        "worker-failed", worker_labels(RUN, RUN.task_instances[1]), "Failed"
    )

    worker_pods.require_worker_pods(pods.kube, "airflow", pods, RUN, timeout=1)

    said = " ".join(capsys.readouterr().out.split())
    assert "each task ran in its own worker pod: worker-0, worker-1" in said
    assert (
        "kept failed pod worker-failed (task double, try 1): base StartError (exit 128): runc create failed: "
        "unable to start container process: unable to freeze; Airflow ran that task in another pod."
    ) in said


def test_a_failed_pod_that_ran_the_task_must_still_go(monkeypatch):
    monkeypatch.setattr(worker_pods, "POLL_SECONDS", 0.1)
    pods = watched(RUN, deleted=False)
    pods.pods["worker-0"].phase = "Failed"
    pods.kube.dynamic.pods.append(worker_pod(RUN, RUN.task_instances[0], "worker-0", "Failed"))

    with pytest.raises(Failure, match=r"still exist after 1 s: worker-0 \(Failed\)"):
        worker_pods.require_worker_pods(pods.kube, "airflow", pods, RUN, timeout=1)


class Logs:
    """The REST API's log endpoint mocked in-process: each task's events, by task id."""

    url = "http://api-server:8080"

    def __init__(self, events: dict[str, list[dict[str, Any]]]):
        self.events = events

    def log(self, dag_id: str, run_id: str, task_instance: dict[str, Any]) -> list[dict[str, Any]]:
        return self.events[task_instance["task_id"]]


SOURCES_ONLY = [
    {"event": "::group::Log message source details"},
    {"event": "file not found: /opt/airflow/logs/dag_id=smoke/attempt=1.log"},
    {"event": "::endgroup::"},
]


def test_a_task_log_that_holds_only_its_sources_fails():
    logs = Logs({"produce": [*SOURCES_ONLY, {"event": "produced 21"}], "double": SOURCES_ONLY})

    with pytest.raises(
        Failure,
        match=r"the log of task 'double' \(try 1\) cannot be read through http://api-server:8080: its "
        r"sources say: file not found: /opt/airflow/logs/dag_id=smoke/attempt=1.log\. Task logs must",
    ):
        smoke.require_logs(logs, RUN)  # type: ignore[arg-type]


def test_task_logs_with_events_pass(capsys):
    logs = Logs({task: [*SOURCES_ONLY, {"event": f"{task} ran"}] for task in ("produce", "double")})

    smoke.require_logs(logs, RUN)  # type: ignore[arg-type]

    assert "the logs of all 2 tasks are readable" in capsys.readouterr().out


def worker_pod(run: dag_run.Run, task_instance: dict[str, Any], name: str, phase: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": "1", "labels": worker_labels(run, task_instance)},
        "status": {"phase": phase},
    }


class FailingWatch(PodList):
    """The pod API mocked in-process: list, and a watch that streams ``events``, then loses
    ``vanish`` (deleted with no DELETED event) and fails, as a dropped connection does."""

    def __init__(self, pods: list[dict[str, Any]], events: list[tuple[str, dict[str, Any]]], vanish: str):
        super().__init__(pods)
        self.events, self.vanish = events, vanish
        self.watches = 0

    def get(self, api_version: str | None = None, kind: str | None = None, **kwargs: Any):
        listed = super().get(api_version, kind, **kwargs)
        if kind is None:
            listed["metadata"] = {"resourceVersion": "2"}
        return listed

    def watch(self, **_: Any) -> Iterator[dict[str, Any]]:
        self.watches += 1
        if self.watches > 1:
            time.sleep(0.01)  # an idle watch that ends at its timeout
            return
        for event_type, pod in self.events:
            yield {"type": event_type, "raw_object": pod}
        self.pods[:] = [p for p in self.pods if p["metadata"]["name"] != self.vanish]
        raise ConnectionResetError("the watch connection dropped")


def test_a_pod_deleted_while_the_watch_was_down_counts_as_deleted(monkeypatch):
    """After an injected watch error the relist no longer holds worker-0: it was deleted unseen."""
    monkeypatch.setattr(worker_pods, "POLL_SECONDS", 0.01)
    run = dag_run.Run(DAG_ID, RUN.run_id, RUN.task_instances[:1])
    running = worker_pod(run, run.task_instances[0], "worker-0", "Running")
    succeeded = {**running, "status": {"phase": "Succeeded"}}
    api = FailingWatch([running], [("MODIFIED", succeeded)], vanish="worker-0")
    kube = kubeapi.Kube("kind-airflow-ha", api, None)

    with worker_pods.PodWatch(kube, "airflow", DAG_ID) as pods:
        for _ in range(3000):  # until the watch thread has failed and listed again
            if "worker-0" in pods.pods and pods.pods["worker-0"].deleted:
                break
            time.sleep(0.01)
        seen = pods.pods["worker-0"]
        assert (seen.phase, seen.deleted) == ("Succeeded", True)
        assert "ConnectionResetError: the watch connection dropped" in pods.error
        worker_pods.require_worker_pods(kube, "airflow", pods, run, timeout=5)


def test_a_recorded_pod_keeps_its_labels_so_its_task_finds_it():
    pods = worker_pods.PodWatch(kubeapi.Kube("kind-airflow-ha", PodList([]), None), "airflow", DAG_ID)
    task = RUN.task_instances[0]

    pods._record("ADDED", worker_pod(RUN, task, "worker-0", "Pending"))

    found = pods.pod_for(task, RUN.run_id)
    assert found is not None
    assert (found.name, found.labels["airflow-worker"]) == ("worker-0", "7")
    assert pods.pod_for(RUN.task_instances[1], RUN.run_id) is None


# the port-forward relay, with a real HTTP server on loopback standing in for the pod


@pytest.fixture
def pod_http() -> Iterator[tuple[str, int]]:
    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"pod says {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield "127.0.0.1", server.server_address[1]
    server.shutdown()
    server.server_close()


def test_the_relay_carries_each_connection_to_a_new_stream(pod_http):
    streams = []

    def connect() -> socket.socket:
        streams.append(socket.create_connection(pod_http))
        return streams[-1]

    with port_forward.Relay(connect) as relay:
        first = httpx.get(f"{relay.url}/api/v2/monitor/health", timeout=10)
        second = httpx.get(f"{relay.url}/again", timeout=10)

    assert (first.status_code, first.text) == (200, "pod says /api/v2/monitor/health")
    assert second.text == "pod says /again"
    assert len(streams) == 2
    assert relay.errors == []


def test_a_stream_that_cannot_open_is_recorded():
    def connect() -> socket.socket:
        raise Failure("cannot port-forward to pod airflow-api-server-1 port 8080: Handshake status 500")

    with port_forward.Relay(connect) as relay, pytest.raises(httpx.TransportError):
        httpx.get(f"{relay.url}/api/v2/monitor/health", timeout=10)

    assert relay.errors == ["cannot port-forward to pod airflow-api-server-1 port 8080: Handshake status 500"]


def api_server_pod(name: str, ready: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"app.kubernetes.io/component": "api-server"}},
        "spec": {"containers": [{"name": "api-server", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": ready}]},
    }


SERVICE = {
    "metadata": {"name": "airflow-api-server"},
    "spec": {
        "selector": {"app.kubernetes.io/component": "api-server"},
        "ports": [{"name": "http", "port": 8080, "targetPort": "http"}],
    },
}


def test_the_port_forward_goes_to_a_ready_pod_and_its_named_port():
    pods = PodList([api_server_pod("not-ready", "False"), api_server_pod("ready", "True")])

    assert port_forward.serving_pod(kubeapi.Kube("c", pods, None), "airflow", SERVICE) == ("ready", 8080)


def test_no_ready_pod_to_forward_to_is_named():
    pods = PodList([api_server_pod("not-ready", "False")])

    with pytest.raises(
        Failure, match=r"no ready pod behind Service/airflow-api-server in namespace 'airflow'"
    ):
        port_forward.serving_pod(kubeapi.Kube("c", pods, None), "airflow", SERVICE)


def test_each_stream_goes_to_a_pod_ready_when_it_opens_as_through_the_service():
    """A deleted pod is still Running and Ready for a while; the relay leaves it as the
    EndpointSlice controller does, by its deletionTimestamp."""
    first, second = api_server_pod("api-server-a", "True"), api_server_pod("api-server-b", "True")
    opened: list[tuple[str, int]] = []

    def to_pod(kube: kubeapi.Kube, namespace: str, pod: str, port: int) -> Callable[[], Any]:
        return lambda: opened.append((pod, port))

    kube = kubeapi.Kube("c", PodList([first, second]), None)
    connect = port_forward.service_connector(kube, "airflow", SERVICE, to_pod)
    connect()
    first["metadata"]["deletionTimestamp"] = "2026-12-06T20:00:00Z"
    connect()
    connect()

    assert opened == [("api-server-a", 8080), ("api-server-b", 8080), ("api-server-b", 8080)]


def test_the_relay_leans_on_the_kubernetes_client_internals_it_was_written_for():
    """port_forward.py relies on three things the client does not promise; a new client must
    be checked against each before this pin moves: portforward() swaps the request method of
    the ApiClient it is given while it connects (so the relay gives it one of its own), its
    PortForward hands out one socket per port, and a refused handshake ends as an ApiException
    along the exception chain (handshake_failure, tested against the real client above)."""
    import importlib
    import inspect

    import kubernetes
    from kubernetes.stream import ws_client

    stream = importlib.import_module("kubernetes.stream.stream")  # the package re-exports a function

    assert kubernetes.__version__.split(".")[0] == "36", (
        f"kubernetes {kubernetes.__version__}: re-check port_forward.py against its internals, then this pin"
    )
    assert "api_client.request = " in inspect.getsource(stream._websocket_request)
    assert stream.portforward.args[0] is ws_client.portforward_call
    assert callable(ws_client.PortForward.socket)


def test_a_port_forward_to_an_unreachable_api_is_named():
    from kubernetes import client

    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{reserved.getsockname()[1]}"
        kube = kubeapi.Kube("gone", PodList([]), client.CoreV1Api(client.ApiClient(configuration)))
        connect = port_forward.pod_connector(kube, "airflow", "airflow-api-server-1", 8080)

        with pytest.raises(
            Failure, match=r"cannot port-forward to pod airflow-api-server-1 port 8080: .*refused"
        ):
            connect()
