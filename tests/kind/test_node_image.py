"""The product's kind cluster (kube/kind-cluster.yaml: a control plane, two workers) on the node
image nodeimage.py builds from source, with no registry and no change to the config.

What it proves: kind makes the three-node cluster from that image and all nodes go Ready with
the image's own add-ons (kube-router as CNI, kube-proxy, CoreDNS, local-path-provisioner); a
pod on one worker reaches a pod on the other through a Service by its DNS name (routes between
nodes, kube-proxy, CoreDNS); a PVC binds through the default StorageClass, a pod writes to it,
and the PV is pinned to its node; a default-deny ingress NetworkPolicy makes a new TCP
connection to a pod fail, and a policy allowing it makes it succeed again (so it fails when
nothing enforces policies); the config's failCgroupV1 patch reaches every node's kubelet.

What it does not: the Airflow deployment on it (`invoke deploy`), the NodePort on host port
30080 (the test never calls it, and drops the mapping when that port is taken, e.g. by the
product's own cluster), egress policies, connections open before a policy (kube-router lets
established ones live on). `nox -s nodeimage` runs it; CI does not yet.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.controlplane import binaries
from tests.kind import nodeimage

CLUSTER = "airflow-ha-nodeimage-test"
PRODUCT_CONFIG = binaries.REPO_ROOT / "kube" / "kind-cluster.yaml"
HOST_PORT = 30080
WORKER_A, WORKER_B = f"{CLUSTER}-worker", f"{CLUSTER}-worker2"
# A server on worker B behind a Service, one in a fenced namespace, a client on worker A and a
# writer on a claim: applied at once so that they start together.
WORKLOAD = """\
apiVersion: v1
kind: Namespace
metadata: {{name: fenced}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {worker_a}}}
  containers:
  - {{name: c, image: {image}, imagePullPolicy: Never, command: [sleep, "600"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: server, labels: {{app: server}}}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {worker_b}}}
  containers:
  - {{name: s, image: {image}, imagePullPolicy: Never, command: [nc, -ll, -p, "8080", -e, echo, reached]}}
---
apiVersion: v1
kind: Service
metadata: {{name: server}}
spec:
  selector: {{app: server}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: server, namespace: fenced}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {worker_b}}}
  containers:
  - {{name: s, image: {image}, imagePullPolicy: Never, command: [nc, -ll, -p, "8080", -e, echo, reached]}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 10Mi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: writer}}
spec:
  restartPolicy: Never
  containers:
  - name: w
    image: {image}
    imagePullPolicy: Never
    command: [sh, -c, "echo written > /data/file && cat /data/file"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes: [{{name: data, persistentVolumeClaim: {{claimName: data}}}}]
"""
DENY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: fenced}
spec: {podSelector: {}, policyTypes: [Ingress]}
"""
ALLOW = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow, namespace: fenced}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress: [{from: [{namespaceSelector: {}}]}]
"""

Cluster = tuple[dict[str, str], str]


def run(*command: str, env: dict[str, str], input: str | None = None, check: bool = True) -> str:
    started = time.monotonic()
    result = subprocess.run(
        command,
        env=env,
        input=input,
        cwd=binaries.REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    print(f"  {' '.join(command[:4])}: {time.monotonic() - started:.0f} s", flush=True)
    if check:
        assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout if result.returncode == 0 else ""


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _config(folder: Path) -> Path:
    """The product's config; a copy without the host port mapping when that port is taken."""
    if not _port_taken(HOST_PORT):
        return PRODUCT_CONFIG
    lines = PRODUCT_CONFIG.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.strip() == "extraPortMappings:")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].strip().startswith("extraMounts:"))
    print(f"  host port {HOST_PORT} is taken: the cluster gets no extraPortMappings", flush=True)
    (folder / "kind-cluster.yaml").write_text("".join(lines[:start] + lines[end:]))
    return folder / "kind-cluster.yaml"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The three-node cluster, deleted afterwards with its own Docker network."""
    node, busybox, tools = nodeimage.ensure()
    folder: Path = tmp_path_factory.mktemp("kind")
    env = {
        **os.environ,
        "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}",
        "KUBECONFIG": str(folder / "kubeconfig"),
        # Its own network, not the "kind" network other clusters on this host share.
        "KIND_EXPERIMENTAL_DOCKER_NETWORK": CLUSTER,
    }
    config = _config(folder)
    try:
        # Relative hostPaths (.kind/airflow-logs) are taken from kind's working directory: the repository's.
        run("kind", "create", "cluster", "--name", CLUSTER, "--image", node, "--config", str(config), env=env)
        run("kubectl", "wait", "--for=condition=Ready", "node", "--all", "--timeout=180s", env=env)
        run("kubectl", "-n", "kube-system", "rollout", "status", "ds/kube-router", "--timeout=120s", env=env)
        run(
            "kubectl",
            "apply",
            "-f",
            "-",
            env=env,
            input=WORKLOAD.format(image=busybox, worker_a=WORKER_A, worker_b=WORKER_B),
        )
        run("kubectl", "-n", "kube-system", "rollout", "status", "deploy/coredns", "--timeout=120s", env=env)
        run(
            "kubectl",
            "-n",
            "local-path-storage",
            "rollout",
            "status",
            "deploy/local-path-provisioner",
            "--timeout=120s",
            env=env,
        )
        for namespace in ("default", "fenced"):
            run(
                "kubectl",
                "-n",
                namespace,
                "wait",
                "--for=condition=Ready",
                "pod/server",
                "--timeout=120s",
                env=env,
            )
        run("kubectl", "wait", "--for=condition=Ready", "pod/client", "--timeout=120s", env=env)
        yield env, busybox
    finally:
        subprocess.run(["kind", "delete", "cluster", "--name", CLUSTER], env=env, check=False)
        subprocess.run(["docker", "network", "rm", CLUSTER], capture_output=True, check=False)


def connect(env: dict[str, str], address: str) -> bool:
    """Whether the client on worker A opens a new TCP connection to address:port and reads the reply."""
    script = f"timeout 5 nc -w 3 {address} </dev/null"
    return "reached" in run("kubectl", "exec", "client", "--", "sh", "-c", script, env=env, check=False)


def eventually(env: dict[str, str], address: str, expected: bool, seconds: float = 40) -> None:
    deadline = time.monotonic() + seconds
    while connect(env, address) != expected:
        assert time.monotonic() < deadline, (
            f"{address}: still {'refused' if expected else 'reached'} after {seconds} s"
        )
        time.sleep(1)


def test_three_nodes_are_ready(cluster: Cluster) -> None:
    env, _ = cluster
    nodes = run("kubectl", "get", "nodes", "-o", "name", env=env).split()
    assert len(nodes) == 3, nodes
    for node in (f"{CLUSTER}-control-plane", WORKER_A, WORKER_B):
        config = run("docker", "exec", node, "cat", "/var/lib/kubelet/config.yaml", env=env)
        assert "failCgroupV1: false" in config, f"{node}: the KubeletConfiguration patch did not reach it"


def test_a_pod_reaches_a_pod_on_the_other_worker_through_a_service_name(cluster: Cluster) -> None:
    env, _ = cluster
    lookup = run("kubectl", "exec", "client", "--", "nslookup", "server.default.svc.cluster.local", env=env)
    service_ip = lookup.split("Name:", 1)[1].split("Address:", 1)[1].split()[0]
    assert service_ip == run("kubectl", "get", "svc/server", "-o", "jsonpath={.spec.clusterIP}", env=env)
    eventually(env, f"{service_ip} 80", True, seconds=20)


def test_a_claim_binds_through_the_default_storage_class(cluster: Cluster) -> None:
    env, _ = cluster
    run(
        "kubectl", "wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/writer", "--timeout=120s", env=env
    )
    assert run("kubectl", "logs", "writer", env=env).strip() == "written"
    volume = run(
        "kubectl", "get", "pvc/data", "-o", "jsonpath={.status.phase} {.spec.volumeName}", env=env
    ).split()
    assert volume[0] == "Bound", volume
    affinity = run("kubectl", "get", "pv", volume[1], "-o", "jsonpath={.spec.nodeAffinity.required}", env=env)
    writer_node = run("kubectl", "get", "pod/writer", "-o", "jsonpath={.spec.nodeName}", env=env)
    assert writer_node and writer_node in affinity, affinity


def test_a_default_deny_policy_refuses_new_connections_and_an_allow_policy_lets_them(
    cluster: Cluster,
) -> None:
    env, _ = cluster
    server = run("kubectl", "-n", "fenced", "get", "pod/server", "-o", "jsonpath={.status.podIP}", env=env)
    address = f"{server} 8080"
    eventually(env, address, True, seconds=20)
    run("kubectl", "apply", "-f", "-", env=env, input=DENY)
    eventually(env, address, False)
    run("kubectl", "apply", "-f", "-", env=env, input=ALLOW)
    eventually(env, address, True)
