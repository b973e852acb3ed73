"""A loopback port that reaches a Service's pods through the Kubernetes API (no kubectl).

The kubernetes client's port-forward gives one socket per forwarding stream, not a
local port, so a small relay listens on a free loopback port and pipes each accepted
connection to a new stream. Unlike `kubectl port-forward svc/NAME`, which picks one pod and
fails when it goes, each stream goes to a pod ready behind the Service when it opens: the
drill deletes and evicts api-server pods through this relay outside kind.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from . import kubeapi
from .console import Failure
from .kubeapi import Kube

ACCEPT_SECONDS = 0.5  # how often the relay looks whether it should stop
CHUNK = 65536


class Relay:
    """Listens on 127.0.0.1 at a free port; pipes each connection to a socket from ``connect()``."""

    def __init__(self, connect: Callable[[], Any]):
        self._connect = connect
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(ACCEPT_SECONDS)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.errors: list[str] = []  # why connect() failed, newest last
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="port-forward-relay", daemon=True)

    def __enter__(self) -> Relay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5 * ACCEPT_SECONDS)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                local, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(local,), daemon=True).start()

    def _serve(self, local: socket.socket) -> None:
        try:
            remote = self._connect()
        except Exception as error:  # the client closes the connection; errors says why
            self.errors.append(str(error) or type(error).__name__)
            local.close()
            return
        pipe(local, remote)


def pipe(one: Any, other: Any) -> None:
    """Copy both ways until both sides have finished sending, then close both."""

    def copy(source: Any, target: Any) -> None:
        try:
            while data := source.recv(CHUNK):
                target.sendall(data)
        except OSError:
            pass
        finally:
            with suppress(OSError):
                target.shutdown(socket.SHUT_WR)

    back = threading.Thread(target=copy, args=(other, one), daemon=True)
    back.start()
    copy(one, other)
    back.join()
    for side in (one, other):
        with suppress(OSError):
            side.close()


def pod_connector(kube: Kube, namespace: str, pod: str, port: int) -> Callable[[], Any]:
    """A function that opens one forwarding stream to ``pod``:``port`` per call."""
    from kubernetes import client
    from kubernetes.stream import portforward

    # portforward() swaps the request method of the ApiClient it is given while it
    # connects, so it gets an ApiClient of its own (the pod watch shares the main one),
    # and one connection at a time.
    core = client.CoreV1Api(client.ApiClient(kube.core.api_client.configuration))
    lock = threading.Lock()
    pods = kubeapi.resource_of(kube, "v1", "Pod")

    def connect() -> Any:
        with lock:
            try:
                forward = portforward(
                    core.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port)
                )
            except Exception as error:
                reason = handshake_failure(error)
                if reason.startswith("Handshake status 403"):
                    raise kubeapi.Forbidden(
                        kubeapi.forbidden(kube, "create", pods, namespace, pod, subresource="portforward")
                    ) from None
                raise Failure(f"cannot port-forward to pod {pod} port {port}: {reason}") from None
        remote = forward.socket(port)
        remote.setblocking(True)
        return remote

    return connect


def handshake_failure(error: BaseException) -> str:
    """Why the port-forward's websocket could not open.

    The client wraps the handshake error in an ApiException with no body, and then fails
    on that missing body with an AttributeError (kubernetes 36), so the reason is found
    along the chain of exceptions rather than on the one raised.
    """
    from kubernetes.client.exceptions import ApiException

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ApiException) and seen.reason:
            return str(seen.reason).split(" -+-+- ")[0]
        seen = seen.__cause__ or seen.__context__
    return f"{type(error).__name__}: {error}"


def serving_pod(kube: Kube, namespace: str, service: dict[str, Any]) -> tuple[str, int]:
    """A ready pod behind the Service, and the container port its first port targets."""
    spec = service.get("spec") or {}
    service_port = (spec.get("ports") or [{}])[0]
    target = service_port.get("targetPort", service_port.get("port"))
    for pod in kubeapi.list_pods(kube, namespace, spec.get("selector") or {}):
        status = pod.get("status") or {}
        terminating = pod["metadata"].get("deletionTimestamp")
        if status.get("phase") != "Running" or terminating or not kubeapi.condition(pod, "Ready"):
            continue
        if isinstance(target, int) or str(target).isdigit():
            return pod["metadata"]["name"], int(target)
        for container in (pod.get("spec") or {}).get("containers") or []:
            for port in container.get("ports") or []:
                if port.get("name") == target:
                    return pod["metadata"]["name"], int(port["containerPort"])
    raise Failure(
        f"no ready pod behind Service/{service['metadata']['name']} in namespace {namespace!r} "
        f"serves its port {target}: check the api-server pods (`invoke deploy` waits for them)"
    )


def service_connector(
    kube: Kube,
    namespace: str,
    service: dict[str, Any],
    to_pod: Callable[[Kube, str, str, int], Callable[[], Any]] = pod_connector,
) -> Callable[[], Any]:
    """Opens each stream to the first pod, by name, that is ready behind the Service and not
    terminating when the stream opens, as the Service's endpoints would list it: a deleted or
    evicted pod loses its open connections, not the relay. Unlike a Service, no load balancing."""
    connectors: dict[tuple[str, int], Callable[[], Any]] = {}
    lock = threading.Lock()  # the Relay serves each connection on a thread of its own

    def connect() -> Any:
        target = serving_pod(kube, namespace, service)
        with lock:
            if target not in connectors:
                connectors[target] = to_pod(kube, namespace, *target)
            connector = connectors[target]
        return connector()

    return connect


@contextmanager
def to_service(kube: Kube, namespace: str, service: dict[str, Any]) -> Iterator[Relay]:
    """A Relay to the Service's pods for as long as the block runs; its ``url`` is http://127.0.0.1:PORT.

    Fails at once when no pod behind the Service is ready."""
    serving_pod(kube, namespace, service)
    with Relay(service_connector(kube, namespace, service)) as relay:
        yield relay
