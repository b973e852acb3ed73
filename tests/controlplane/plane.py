"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager
and kube-scheduler, built from source by binaries.py, with a CA of their own.

As controller-runtime's envtest runs one, with the controllers and the scheduler too. There
are no nodes: pods are created, admitted and scheduled (to nowhere), never run. The API
server writes an audit log, so a test can see every request a command made.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import binaries, pki

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 60.0
LOG_TAIL = 25
# On by default already; named, so that no release can turn one of them off unseen.
ADMISSION_PLUGINS = "NamespaceLifecycle,ServiceAccount,LimitRanger,ResourceQuota,PodSecurity"
# Each request once, when its response is complete; no bodies, so no Secret is logged.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived", "ResponseStarted", "Panic"],
    "rules": [{"level": "Metadata"}],
}
# No kubelet renews a node's lease here, so the node lifecycle controller has nothing to do;
# the rest run as in a cluster.
CONTROLLERS = "*,-node-lifecycle-controller"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


class StartFailure(RuntimeError):
    pass


@dataclass
class Component:
    name: str
    command: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def tail(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(lines[-LOG_TAIL:])

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@dataclass
class ControlPlane:
    root: Path
    components: list[Component] = field(default_factory=list)
    url: str = ""
    startup_seconds: float = 0.0

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit.log"

    def start(self) -> None:
        """Start every component, or stop those started and raise: nothing outlives a failure."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        paths = binaries.ensure()
        started = time.monotonic()
        self.pki.mkdir(parents=True)
        authority = pki.Authority(self.pki)
        serving = authority.issue(
            "apiserver",
            "kube-apiserver",
            server_names=(LOOPBACK, "10.0.0.1", "localhost", "kubernetes", "kubernetes.default.svc"),
        )
        signing_key, signing_public = pki.signing_key_pair(self.pki)
        etcd_port, etcd_peer_port = free_port(), free_port()
        policy = self.root / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))

        etcd = f"http://{LOOPBACK}:{etcd_port}"
        peer = f"http://{LOOPBACK}:{etcd_peer_port}"
        self._run(
            "etcd",
            [
                str(paths["etcd"]),
                "--name=test",
                f"--data-dir={self.root / 'etcd'}",
                "--unsafe-no-fsync",
                f"--listen-client-urls={etcd}",
                f"--advertise-client-urls={etcd}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=test={peer}",
            ],
            ready=lambda: _http_ok(f"{etcd}/health"),
        )
        # Picked once etcd listens, so that nothing it opens meanwhile can take the port.
        api_port = free_port()
        self.url = f"https://{LOOPBACK}:{api_port}"
        self._run(
            "kube-apiserver",
            [
                str(paths["kube-apiserver"]),
                f"--etcd-servers={etcd}",
                f"--bind-address={LOOPBACK}",
                f"--advertise-address={LOOPBACK}",
                f"--secure-port={api_port}",
                f"--cert-dir={self.pki}",
                f"--tls-cert-file={serving[0]}",
                f"--tls-private-key-file={serving[1]}",
                f"--client-ca-file={authority.cert_path}",
                "--authorization-mode=RBAC",
                f"--enable-admission-plugins={ADMISSION_PLUGINS}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={signing_public}",
                f"--service-account-signing-key-file={signing_key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",
            ],
            ready=self._api_ready,
        )
        self._write_kubeconfig(
            self.admin_kubeconfig, authority, "admin", "airflow-ha-test-admin", "system:masters"
        )
        for name, user in (
            ("kube-controller-manager", "system:kube-controller-manager"),
            ("kube-scheduler", "system:kube-scheduler"),
        ):
            self._write_kubeconfig(self.root / f"{name}.kubeconfig", authority, name, user)
        self._run(
            "kube-controller-manager",
            [
                str(paths["kube-controller-manager"]),
                f"--kubeconfig={self.root / 'kube-controller-manager.kubeconfig'}",
                "--secure-port=0",  # nothing listens: its health is judged by its lease
                f"--controllers={CONTROLLERS}",
                "--use-service-account-credentials",
                f"--service-account-private-key-file={signing_key}",
                f"--root-ca-file={authority.cert_path}",
                f"--flex-volume-plugin-dir={self.root / 'volume-plugins'}",
                "--leader-elect",
            ],
            # Its controllers start after it leads; the ServiceAccount one makes `default`.
            ready=lambda: (
                self._holds_lease("kube-controller-manager") and self._exists("serviceaccount", "default")
            ),
        )
        self._run(
            "kube-scheduler",
            [
                str(paths["kube-scheduler"]),
                f"--kubeconfig={self.root / 'kube-scheduler.kubeconfig'}",
                f"--authentication-kubeconfig={self.root / 'kube-scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={self.root / 'kube-scheduler.kubeconfig'}",
                "--secure-port=0",
                "--leader-elect",
            ],
            ready=lambda: self._holds_lease("kube-scheduler"),
        )
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        for component in reversed(self.components):
            component.stop()

    def _run(self, name: str, command: list[str], ready: Callable[[], bool]) -> None:
        component = Component(name, command, self.root / f"{name}.log")
        self.components.append(component)
        component.start()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert component.process is not None
            if component.process.poll() is not None:
                self.stop()
                code = component.process.returncode
                raise StartFailure(f"{name} exited with {code} on start; its log ends:\n{component.tail()}")
            if ready():
                return
            time.sleep(0.1)
        self.stop()
        raise StartFailure(
            f"{name} was not ready after {START_TIMEOUT:.0f} s; its log ends:\n{component.tail()}"
        )

    def _api_ready(self) -> bool:
        return _http_ok(f"{self.url}/readyz", ca=self.pki / "ca.crt")

    def _exists(self, kind: str, name: str, namespace: str = "default") -> bool:
        return self.kubectl("get", kind, name, "-n", namespace, check=False).returncode == 0

    def _holds_lease(self, name: str) -> bool:
        found = self.kubectl("get", "lease", name, "-n", "kube-system", "-o", "json", check=False)
        if found.returncode != 0:
            return False
        return bool(json.loads(found.stdout).get("spec", {}).get("holderIdentity"))

    def _write_kubeconfig(
        self, path: Path, authority: pki.Authority, name: str, user: str, organization: str | None = None
    ) -> None:
        cert, key = authority.issue(name, user, organization=organization)
        self.write_kubeconfig(path, {name: {"client-certificate": str(cert), "client-key": str(key)}})

    def write_kubeconfig(
        self, path: Path, users: dict[str, dict[str, str]], namespaces: dict[str, str] | None = None
    ) -> Path:
        """One context per user, named after it, each in its namespace if one is given."""
        namespaces = namespaces or {}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {"server": self.url, "certificate-authority": str(self.pki / "ca.crt")},
                }
            ],
            "users": [{"name": name, "user": credentials} for name, credentials in users.items()],
            "contexts": [
                {
                    "name": name,
                    "context": {
                        "cluster": "test",
                        "user": name,
                        **({"namespace": namespaces[name]} if name in namespaces else {}),
                    },
                }
                for name in users
            ],
            "current-context": next(iter(users)),
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def admin_credentials(self) -> dict[str, str]:
        config = yaml.safe_load(self.admin_kubeconfig.read_text())
        return dict(config["users"][0]["user"])

    def kubeconfig_for(self, namespace: str, service_account: str) -> Path:
        """A kubeconfig whose one context, named after the account, holds the account's token."""
        return self.write_kubeconfig(
            self.root / f"{namespace}-{service_account}.kubeconfig",
            {service_account: {"token": self.token_for(namespace, service_account)}},
            {service_account: namespace},
        )

    def token_for(self, namespace: str, service_account: str, *, seconds: int = 3600) -> str:
        """A bound token of the ServiceAccount, from the TokenRequest API."""
        return self.kubectl(
            "create", "token", service_account, "-n", namespace, f"--duration={seconds}s"
        ).stdout.strip()

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(binaries.ensure(["kubectl"])["kubectl"]), "--kubeconfig", str(self.admin_kubeconfig), *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def apply(self, *objects: dict[str, Any]) -> None:
        self.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(objects))

    def audit_events(self) -> list[dict[str, Any]]:
        """Every request answered so far, oldest first (blocking mode: logged before the answer)."""
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line.strip()]


def _die_with_parent() -> None:
    """Ask Linux to stop this component when the test process dies, however it dies."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _http_ok(url: str, ca: Path | None = None) -> bool:
    import ssl
    import urllib.request

    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False
