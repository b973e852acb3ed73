"""One kind node from the node image nodeimage.py builds from source, with no registry.

What it proves: kind (built from source) makes a cluster from that image; kubeadm's control
plane, kube-proxy, the kubelet with containerd and runc, the bridge CNI and CoreDNS all come
up from the images baked into the node; the node goes Ready, CoreDNS is available, and a pod
resolves kubernetes.default.svc.cluster.local through it to the API's service address.

What it does not: more than one node (the image's pod network is a single-node bridge), any
NetworkPolicy engine (none is in the image yet), or the Airflow deployment on it. `nox -s
nodeimage` runs it; CI does not yet.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kind import nodeimage

CLUSTER = "airflow-ha-nodeimage-test"
SERVICE_SUBNET = "10.96.0.0/16"
API_SERVICE_ADDRESS = "10.96.0.1"  # the first address of SERVICE_SUBNET
# kubeadm refuses cgroup v1 from 1.35 on unless told otherwise; these hosts have it.
CONFIG = f"""\
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: {CLUSTER}
networking:
  disableDefaultCNI: true
  podSubnet: 10.244.0.0/16
  serviceSubnet: {SERVICE_SUBNET}
nodes:
- role: control-plane
kubeadmConfigPatches:
- |
  kind: KubeletConfiguration
  failCgroupV1: false
"""
DNS_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: dns-test
spec:
  restartPolicy: Never
  containers:
  - name: lookup
    image: {image}
    imagePullPolicy: Never
    command: ["nslookup", "kubernetes.default.svc.cluster.local"]
"""


def run(*command: str, env: dict[str, str], input: str | None = None) -> str:
    started = time.monotonic()
    result = subprocess.run(command, env=env, input=input, capture_output=True, text=True, check=False)
    print(f"  {' '.join(command[:4])}: {time.monotonic() - started:.0f} s", flush=True)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], str]]:
    """A one-node cluster of the node image, deleted afterwards with its own Docker network."""
    node, busybox, tools = nodeimage.ensure()
    folder: Path = tmp_path_factory.mktemp("kind")
    (folder / "cluster.yaml").write_text(CONFIG)
    env = {
        **os.environ,
        "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}",
        "KUBECONFIG": str(folder / "kubeconfig"),
        # Its own network, not the "kind" network other clusters on this host share.
        "KIND_EXPERIMENTAL_DOCKER_NETWORK": CLUSTER,
    }
    try:
        run("kind", "create", "cluster", "--image", node, "--config", str(folder / "cluster.yaml"), env=env)
        run("kind", "load", "docker-image", "--name", CLUSTER, busybox, env=env)
        yield env, busybox
    finally:
        subprocess.run(["kind", "delete", "cluster", "--name", CLUSTER], env=env, check=False)
        subprocess.run(["docker", "network", "rm", CLUSTER], capture_output=True, check=False)


def test_a_pod_resolves_the_api_service_through_coredns(cluster: tuple[dict[str, str], str]) -> None:
    env, busybox = cluster
    run("kubectl", "wait", "--for=condition=Ready", "node", "--all", "--timeout=300s", env=env)
    run("kubectl", "-n", "kube-system", "rollout", "status", "deploy/coredns", "--timeout=300s", env=env)
    run("kubectl", "apply", "-f", "-", env=env, input=DNS_POD.format(image=busybox))
    run(
        "kubectl",
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/dns-test",
        "--timeout=120s",
        env=env,
    )
    answer = run("kubectl", "logs", "dns-test", env=env)
    print(answer)
    assert f"Address: {API_SERVICE_ADDRESS}" in answer.split("Name:", 1)[-1]
