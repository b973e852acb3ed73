"""The Docker pod runner: a stand-in kubelet for the pods created in the emulator.

Each pod becomes one Docker container, built by the rehearsal's translation of a pod spec
(the same code that runs the deployment's components), on the rehearsal's network. The
runner reports a kubelet-like status (Pending, Running, then Succeeded or Failed from the
exit code, with complete containerStatuses), serves the container's log as pods/log, and on
deletion sends SIGTERM, waits out the grace period, kills, removes the container, then
removes the pod. It is no kubelet: no probes, no restarts, no resource limits, no scheduling.
Pods with more than one container are refused (the worker pod template has one).
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from docker.client import DockerClient
from docker.errors import DockerException, NotFound
from docker.models.containers import Container

from .store import BY_PLURAL, ApiError, Selector, Store, now

PODS = BY_PLURAL["", "pods"]
MERGE = "application/merge-patch+json"


def timestamp(docker_time: str) -> str:
    """Docker's nanosecond RFC 3339 time as Kubernetes writes it, to the second."""
    return f"{docker_time[:19]}Z" if docker_time and not docker_time.startswith("0001") else now()


class PodRunner:
    def __init__(
        self,
        store: Store,
        namespace: str,
        client: DockerClient,
        network: str,
        run_options: Callable[[dict[str, Any]], dict[str, Any]],
    ):
        self.store = store
        self.namespace = namespace
        self.client = client
        self.network = network
        self.run_options = run_options
        self.containers: dict[str, Container] = {}
        self.started: dict[str, float] = {}  # pod name -> when its container started (monotonic)
        self.failures: dict[str, str] = {}  # pod name -> why its container could not start
        # Wall-clock times (epoch seconds) per pod, for the benchmark: seen created, container started.
        self.created_at: dict[str, float] = {}
        self.started_at: dict[str, float] = {}
        self.errors: list[str] = []  # a pod's start or termination that raised
        self._terminating: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="pod-runner", daemon=True)

    def start(self) -> PodRunner:
        self._thread.start()
        return self

    def _follow(self) -> None:
        events = self.store.watch(
            PODS, self.namespace, Selector([], []), "0", timeout=24 * 3600, stopped=self._stop.is_set
        )
        for event_type, pod in events:
            name = pod["metadata"]["name"]
            if event_type == "DELETED":
                continue
            with self._lock:
                if pod["metadata"].get("deletionTimestamp"):
                    if name not in self._terminating:
                        self._terminating.add(name)
                        self._spawn(self._terminate, pod)
                elif name not in self.started and name not in self.failures:
                    self.started[name] = 0.0
                    self.created_at[name] = time.time()
                    self._spawn(self._run, pod)

    def _spawn(self, work: Callable[[dict[str, Any]], None], pod: dict[str, Any]) -> None:
        """Run one pod's work in a thread; an error is recorded against the pod, never lost."""

        def guarded() -> None:
            try:
                work(pod)
            except Exception as error:
                self.errors.append(
                    f"{work.__name__} {pod['metadata']['name']}: {type(error).__name__}: {error}"
                )
                traceback.print_exc()

        threading.Thread(target=guarded, daemon=True).start()

    def _status(self, name: str, status: dict[str, Any]) -> None:
        try:
            self.store.patch(PODS, self.namespace, name, {"status": status}, MERGE, "status")
        except ApiError as error:
            if error.code != 404:  # a pod removed meanwhile needs no status
                raise

    def _run(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        spec = pod["spec"]
        try:
            if len(spec["containers"]) != 1 or spec.get("initContainers"):
                raise ValueError("the pod runner runs pods of exactly one container and no init containers")
            options = self.run_options(pod)
            with self._lock:
                if name in self._terminating:
                    return
                container = self.client.containers.create(**options, network=self.network)
                self.containers[name] = container
        except (DockerException, ValueError, KeyError) as error:
            self.failures[name] = f"{type(error).__name__}: {error}"
            base = spec["containers"][0]
            waiting = {"reason": "CreateContainerConfigError", "message": self.failures[name][:500]}
            self._status(
                name,
                {
                    "phase": "Pending",
                    "containerStatuses": [self._container_status(base, "", waiting=waiting)],
                },
            )
            return
        self.store.log_readers[self.namespace, name] = lambda _, tail: container.logs(
            tail=tail if tail else "all"
        ).decode(errors="replace")
        container.start()
        self.started[name] = time.monotonic()
        self.started_at[name] = time.time()
        container.reload()
        state = container.attrs["State"]
        base = spec["containers"][0]
        running = self._container_status(
            base, container, running={"startedAt": timestamp(state["StartedAt"])}
        )
        address = container.attrs["NetworkSettings"]["Networks"][self.network]["IPAddress"]
        self._status(
            name,
            {
                "phase": "Running",
                "startTime": timestamp(state["StartedAt"]),
                "podIP": address,
                "podIPs": [{"ip": address}],
                "hostIP": address,
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now()}],
                "containerStatuses": [running],
            },
        )
        try:
            exit_code = int(container.wait()["StatusCode"])
            container.reload()
        except (DockerException, NotFound):
            return  # removed while it ran: the pod is being deleted
        finished = container.attrs["State"]
        terminated = {
            "exitCode": exit_code,
            "reason": "Completed"
            if exit_code == 0
            else "OOMKilled"
            if finished.get("OOMKilled")
            else "Error",
            "startedAt": timestamp(finished["StartedAt"]),
            "finishedAt": timestamp(finished["FinishedAt"]),
            "containerID": f"docker://{container.id}",
        }
        self._status(
            name,
            {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now()}],
                "containerStatuses": [self._container_status(base, container, terminated=terminated)],
            },
        )

    @staticmethod
    def _container_status(
        base: dict[str, Any], container: Container | str, **state: dict[str, Any]
    ) -> dict[str, Any]:
        """A complete status: the executor's watcher refuses a null imageID."""
        started = bool(container) and "running" in state
        status: dict[str, Any] = {
            "name": base["name"],
            "image": base["image"],
            "imageID": f"docker://{container.attrs['Image']}" if isinstance(container, Container) else "",
            "ready": started,
            "started": started,
            "restartCount": 0,
            "state": state,
        }
        if isinstance(container, Container):
            status["containerID"] = f"docker://{container.id}"
        return status

    def _terminate(self, pod: dict[str, Any]) -> None:
        """SIGTERM, the grace period, SIGKILL, remove: then the pod is gone from the API."""
        name = pod["metadata"]["name"]
        grace = int(pod["metadata"].get("deletionGracePeriodSeconds") or 0)
        with self._lock:
            container = self.containers.pop(name, None)
        if container is not None:
            try:
                container.stop(timeout=grace)
                container.remove(v=True, force=True)
            except NotFound:
                pass
        with contextlib.suppress(ApiError):  # removed already
            self.store.remove(PODS, self.namespace, name)

    def close(self) -> list[str]:
        """Stop following and remove every container still running; returns their pod names."""
        self._stop.set()
        with self._lock:
            self._terminating.update(self.containers)
            left = dict(self.containers)
            self.containers.clear()
        for container in left.values():
            with contextlib.suppress(NotFound):
                container.remove(v=True, force=True)
        self._thread.join(timeout=5)
        return sorted(left)
