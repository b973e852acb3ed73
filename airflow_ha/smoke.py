"""Prove that a DAG runs end to end: through the REST API, and in a cluster through worker pods.

The REST flow is the one Airflow's own kind tests use: POST /auth/token, unpause the
DAG (retrying while it is parsed), trigger a run, poll its task instances. In a cluster
a Kubernetes watch records the executor's worker pods during the run, and afterwards
the smoke test requires one pod per task instance, all of them deleted, and every
task's log still readable through the API.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from rich.live import Live
from rich.table import Table

from . import PART_OF, PART_OF_LABEL, cluster, kubeapi, port_forward
from . import generated_secrets as generated
from .console import Failure, console, progress
from .dag_run import Run
from .kubeapi import Kube
from .polling import poll
from .worker_pods import PodWatch, cluster_diagnostics, component_logs, require_worker_pods

FAILED_STATES = frozenset({"failed", "upstream_failed"})
# Outside a cluster no task runs in a worker pod, so the DAG's last task must not require it.
CLUSTER_CONF = {"require_executor_pods": True}
RELAXED_CONF = {"require_executor_pods": False}
POLL_SECONDS = 2
PARSE_RETRY_SECONDS = 5
LOG_TAIL = 15
REQUEST_TIMEOUT = 30


class DagNotFound(Failure):
    """The api-server does not know the DAG: it was never parsed."""


class RunFailed(Failure):
    """The DAG run failed or timed out; carries the run for cluster diagnostics."""

    def __init__(self, message: str, run_id: str, task_instances: list[dict[str, Any]]):
        super().__init__(message)
        self.run_id = run_id
        self.task_instances = task_instances


class AirflowAPI:
    """A REST client of one api-server: Bearer token from /auth/token, renewed on 401.

    A request that fails to connect or gets a 502/503/504 is retried once after a
    second; ``retried`` counts those, and a second failure raises Failure.
    """

    def __init__(self, url: str, username: str, password: str):
        self.url = url.rstrip("/")
        self.username = username
        self._password = password
        self._token: str | None = None
        self.retried = 0
        self.http = httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT)

    def __enter__(self) -> AirflowAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def login(self) -> None:
        response = self._send(
            "POST", "/auth/token", json={"username": self.username, "password": self._password}
        )
        if response.status_code == 401:
            raise Failure(
                f"wrong credentials: POST {self.url}/auth/token answered 401 for user {self.username!r}. "
                "Check --username and --password (in a cluster they come from the airflow-admin Secret)"
            )
        self._token = self._json(response, "POST", "/auth/token")["access_token"]

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        if self._token is None:
            self.login()
        response = self._send(method, path, headers={**(headers or {}), **self._authorization()}, **kwargs)
        if response.status_code == 401:  # the token expired: take a new one, once
            self.login()
            response = self._send(
                method, path, headers={**(headers or {}), **self._authorization()}, **kwargs
            )
        return response

    def _authorization(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def get(self, path: str, **kwargs: Any) -> Any:
        return self._json(self.request("GET", path, **kwargs), "GET", path)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in (1, 2):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as error:
                problem = f"{type(error).__name__}: {error}"
            else:
                if response.status_code not in (502, 503, 504):
                    return response
                problem = f"HTTP {response.status_code}"
            if attempt == 1:
                self.retried += 1
                time.sleep(1)
        raise Failure(f"cannot reach the api-server: {method} {self.url}{path} failed twice ({problem})")

    def _json(self, response: httpx.Response, method: str, path: str) -> Any:
        if not response.is_success:
            raise Failure(
                f"{method} {self.url}{path} answered HTTP {response.status_code}: {response.text[:300]}"
            )
        try:
            return response.json()
        except ValueError:
            raise Failure(f"{method} {self.url}{path} answered with no JSON: {response.text[:300]}") from None

    # The smoke flow

    def unpause(self, dag_id: str, timeout: float) -> None:
        """Unpause the DAG, retrying while the dag-processor has not parsed it yet."""
        path = f"/api/v2/dags/{dag_id}"

        def unpaused() -> bool | None:
            response = self.request("PATCH", path, json={"is_paused": False})
            if response.status_code == 404:
                return None
            self._json(response, "PATCH", path)
            return True

        def never_parsed() -> DagNotFound:
            return DagNotFound(
                f"DAG {dag_id!r} not found at {self.url} (404): it was never parsed within "
                f"{timeout:.0f} s. Check that dags/ holds it and that the dag-processor runs."
                f"{self.import_errors()}"
            )

        with progress(f"unpausing {dag_id} (waiting for it to be parsed)"):
            poll(unpaused, timeout=timeout, every=PARSE_RETRY_SECONDS, timed_out=never_parsed)

    def import_errors(self) -> str:
        errors = self.get("/api/v2/importErrors").get("import_errors") or []
        return "".join(
            f"\nimport error in {e['filename']}:\n{e['stack_trace'].strip()[-800:]}" for e in errors
        )

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        body = {"logical_date": datetime.now(UTC).isoformat(), "conf": conf}
        response = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)
        return str(self._json(response, "POST", f"/api/v2/dags/{dag_id}/dagRuns")["dag_run_id"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        found = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return sorted(found, key=lambda ti: (ti["task_id"], ti["map_index"]))

    def log(self, dag_id: str, run_id: str, task_instance: dict[str, Any]) -> list[dict[str, Any]]:
        """The task's log events, as the UI reads them; the first ones name the log's sources."""
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_instance['task_id']}"
            f"/logs/{task_instance['try_number']}"
        )
        params = {"map_index": task_instance["map_index"], "full_content": True}
        content = self.get(path, params=params, headers={"Accept": "application/json"})["content"]
        return [event if isinstance(event, dict) else {"event": str(event)} for event in content]


def run_dag(
    api: AirflowAPI, dag_id: str, conf: dict[str, Any], timeout: float, pods: PodWatch | None = None
) -> Run:
    """Unpause, trigger and follow one run with a live table; RunFailed on a failed task or timeout."""
    api.unpause(dag_id, timeout)
    run_id = api.trigger(dag_id, conf)
    console.print(f"triggered {dag_id} run {run_id} with conf {json.dumps(conf)}")
    return follow_run(api, dag_id, run_id, timeout, pods)


def follow_run(
    api: AirflowAPI, dag_id: str, run_id: str, timeout: float, pods: PodWatch | None = None
) -> Run:
    """Poll a run's task instances until it succeeds; RunFailed early on a failed task, or at the timeout."""
    task_instances: list[dict[str, Any]] = []
    state = "unknown"
    with task_display(pods, run_id) as show:

        def finished() -> Run | None:
            nonlocal task_instances, state
            task_instances = api.task_instances(dag_id, run_id)
            show(task_instances)
            failed = [ti for ti in task_instances if ti["state"] in FAILED_STATES]
            if failed:
                raise RunFailed(failure_message(api, dag_id, run_id, failed), run_id, task_instances)
            state = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state == "failed":
                raise RunFailed(
                    f"run {run_id} of {dag_id} failed: {states(task_instances)}", run_id, task_instances
                )
            return Run(dag_id, run_id, task_instances) if state == "success" else None

        def late() -> RunFailed:
            detail = f"did not finish within {timeout:.0f} s (run state {state}): {states(task_instances)}"
            return RunFailed(f"run {run_id} of {dag_id} {detail}", run_id, task_instances)

        return poll(finished, timeout=timeout, every=POLL_SECONDS, timed_out=late)


@contextmanager
def task_display(pods: PodWatch | None, run_id: str) -> Iterator[Callable[[list[dict[str, Any]]], None]]:
    """A live table of task states on a terminal; elsewhere (CI logs) one line per state change."""
    if console.is_terminal:
        with Live(task_table([], pods, run_id), console=console, refresh_per_second=4) as live:
            yield lambda task_instances: live.update(task_table(task_instances, pods, run_id))
        return
    seen: dict[tuple[str, int], str] = {}

    def show(task_instances: list[dict[str, Any]]) -> None:
        for ti in task_instances:
            state = ti["state"]
            if state and seen.get((ti["task_id"], ti["map_index"])) != state:
                seen[ti["task_id"], ti["map_index"]] = state
                console.print(f"  {ti['task_id']}: {state} (try {ti['try_number']})")

    yield show


def task_table(task_instances: list[dict[str, Any]], pods: PodWatch | None, run_id: str) -> Table:
    table = Table(title="task instances", title_justify="left")
    table.add_column("task")
    table.add_column("state")
    table.add_column("try", justify="right")
    if pods is not None:
        table.add_column("worker pod")
    colours = {"success": "green", "failed": "red", "upstream_failed": "red", "running": "yellow"}
    for ti in task_instances:
        state = ti["state"] or "none"
        row = [ti["task_id"], f"[{colours.get(state, 'default')}]{state}[/]", str(ti["try_number"])]
        if pods is not None:
            pod = pods.pod_for(ti, run_id)
            row.append(f"{pod.name} ({pod.phase}{', deleted' if pod.deleted else ''})" if pod else "-")
        table.add_row(*row)
    return table


def states(task_instances: list[dict[str, Any]]) -> str:
    return (
        ", ".join(f"{ti['task_id']}={ti['state'] or 'none'}" for ti in task_instances)
        or "no task instances yet"
    )


def failure_message(api: AirflowAPI, dag_id: str, run_id: str, failed: list[dict[str, Any]]) -> str:
    lines = [f"run {run_id} of {dag_id} failed: {states(failed)}"]
    for ti in failed:
        if ti["state"] == "failed":
            lines.append(f"task {ti['task_id']!r} failed (try {ti['try_number']}); the end of its log:")
            lines.append(log_tail(api.log(dag_id, run_id, ti)))
    return "\n".join(lines)


def log_tail(events: list[dict[str, Any]], lines: int = LOG_TAIL) -> str:
    text = []
    for event in task_events(events)[-lines:]:
        line = f"  | {event.get('level', '')} {event['event']}".rstrip()
        for error in event.get("error_detail") or []:
            line += f"\n  | {error.get('exc_type')}: {error.get('exc_value')}"
        text.append(line)
    return "\n".join(text) or "  (the log is empty)"


def task_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events the task itself logged: everything after the log-sources group."""
    names = [str(event.get("event", "")) for event in events]
    start = names.index("::endgroup::") + 1 if "::endgroup::" in names else 0
    return events[start:]


def require_logs(api: AirflowAPI, run: Run) -> None:
    """Every task's log must be readable through the REST API."""
    for ti in run.task_instances:
        events = api.log(run.dag_id, run.run_id, ti)
        if not task_events(events):
            sources = "; ".join(str(e.get("event")) for e in events[1:-1]) or "none"
            raise Failure(
                f"the log of task {ti['task_id']!r} (try {ti['try_number']}) cannot be read through "
                f"{api.url}: its sources say: {sources}. Task logs must outlive worker pods: "
                "the airflow-logs volume must be shared by every component and worker pod"
            )
    console.print(f"[green]✓[/] the logs of all {len(run.task_instances)} tasks are readable through the API")


# smoke


def smoke(
    *,
    context: str | None,
    kind_cluster: str,
    namespace: str,
    api_url: str | None,
    username: str | None,
    password: str | None,
    dag_id: str,
    timeout: int,
    conf: str = "",
) -> Run:
    """Run a DAG; in a cluster, prove each task instance ran in its own KubernetesExecutor worker pod.

    With ``api_url`` and no ``context`` only the REST flow is checked. With both, the cluster
    assertions run against ``context`` while the api-server is reached at ``api_url``.
    """
    extra_conf = parse_conf(conf)
    if api_url and not context:
        if not (username and password):
            raise Failure("--api-url needs --username and --password")
        console.print(
            f"checking the Airflow API at {api_url}: the cluster assertions are skipped, and the run gets "
            f"conf {json.dumps(RELAXED_CONF)} because outside a cluster no task runs in a worker pod"
        )
        with AirflowAPI(api_url, username, password) as api:
            run = run_dag(api, dag_id, {**RELAXED_CONF, **extra_conf}, timeout)
            require_logs(api, run)
        console.print(f"[green]✓[/] smoke run {run.run_id} of {dag_id} succeeded")
        return run

    target = cluster.check_context(context, kind_cluster)
    kube = kubeapi.kube_clients(target)
    if not (username and password):
        username, password = admin_credentials(kube, namespace)
    with (
        given_or_found_api_server(
            api_url, kube, namespace, on_kind=cluster.is_kind(target, kind_cluster)
        ) as url,
        AirflowAPI(url, username, password) as api,
        PodWatch(kube, namespace, dag_id) as pods,
    ):
        try:
            run = run_dag(api, dag_id, {**CLUSTER_CONF, **extra_conf}, timeout, pods)
            require_worker_pods(kube, namespace, pods, run, timeout)
            require_logs(api, run)
        except kubeapi.Forbidden:
            raise  # one line; diagnostics would only meet the same missing right
        except DagNotFound as failure:
            raise Failure(f"{failure}{component_logs(kube, namespace, 'dag-processor')}") from None
        except Failure as failure:
            raise Failure(f"{failure}{cluster_diagnostics(kube, namespace, pods)}") from None
    console.print(
        f"[green]✓[/] smoke run {run.run_id} of {dag_id} succeeded: each of its {len(run.task_instances)} "
        "tasks ran in its own KubernetesExecutor worker pod, since deleted"
    )
    return run


def parse_conf(conf: str) -> dict[str, Any]:
    """The run conf given with --conf: a JSON object."""
    if not conf:
        return {}
    try:
        parsed = json.loads(conf)
    except ValueError as error:
        raise Failure(f"--conf must be a JSON object: {error}") from None
    if not isinstance(parsed, dict):
        raise Failure(f"--conf must be a JSON object, not {type(parsed).__name__}: {conf}")
    return parsed


@contextmanager
def given_or_found_api_server(
    api_url: str | None, kube: Kube, namespace: str, *, on_kind: bool
) -> Iterator[str]:
    if api_url:
        yield api_url
        return
    with api_server(kube, namespace, on_kind=on_kind) as url:
        yield url


def admin_credentials(kube: Kube, namespace: str) -> tuple[str, str]:
    secret = kubeapi.read(
        kube,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": generated.ADMIN_SECRET, "namespace": namespace},
        },
    )
    data = (secret or {}).get("data") or {}
    if "username" not in data or "password" not in data:
        raise Failure(
            f"Secret/{generated.ADMIN_SECRET} with username and password not found in namespace "
            f"{namespace!r}: run `invoke deploy` first, or pass --username and --password"
        )
    return base64.b64decode(data["username"]).decode(), base64.b64decode(data["password"]).decode()


@contextmanager
def api_server(kube: Kube, namespace: str, *, on_kind: bool) -> Iterator[str]:
    """The api-server's URL: kind's NodePort on localhost, else a port-forward to the Service's pods."""
    selector = f"{PART_OF_LABEL}={PART_OF},app.kubernetes.io/component=api-server"
    found = kubeapi.list_objects(
        kube, kubeapi.resource_of(kube, "v1", "Service"), namespace, label_selector=selector
    )
    items = found.get("items") or []
    if not items:
        raise Failure(f"no api-server Service in namespace {namespace!r}: run `invoke deploy` first")
    if on_kind:
        for service in items:
            for port in (service.get("spec") or {}).get("ports") or []:
                if port.get("nodePort"):
                    url = f"http://localhost:{port['nodePort']}"
                    if _healthy(url):
                        yield url
                        return
    service = next(
        (s for s in items if (s.get("spec") or {}).get("type", "ClusterIP") == "ClusterIP"), items[0]
    )
    with port_forward.to_service(kube, namespace, service) as relay:
        if not _healthy(relay.url) and relay.errors:
            problem = relay.errors[-1]
            if problem.startswith("forbidden:"):
                raise Failure(problem)
            raise Failure(
                f"port-forward to Service/{service['metadata']['name']} in namespace {namespace!r} "
                f"failed: {problem}"
            )
        yield relay.url


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/v2/monitor/health", timeout=5).is_success
    except httpx.HTTPError:
        return False
