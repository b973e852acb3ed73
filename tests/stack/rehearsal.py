"""Run the rendered manifests' pods as Docker containers: a rehearsal of the deployment.

Everything a container gets comes from the rendered objects and the generated
secrets: image, command and args, env and envFrom, volumes, user, read-only root
filesystem, dropped capabilities, init containers, probes, and the memory limit (Docker
sets the same cgroup limit a kubelet does; CPU limits and requests are not applied). Service names become
network aliases, so the URLs in the Airflow config resolve as they do in a cluster.
The same translation runs the worker pods the KubernetesExecutor creates (see
tests/emulator/runner.py), so components and workers cannot drift apart.

With a `Kubelet` (the Kubernetes API emulator's address, CA and tokens), containers get
what a kubelet gives them: KUBERNETES_SERVICE_HOST/PORT, and a ServiceAccount token with
ca.crt and namespace at /var/run/secrets/kubernetes.io/serviceaccount unless the pod or
its ServiceAccount turns automounting off; ConfigMaps and Secrets are then read from the
API, as applied. Images that no registry can provide here (PostgreSQL) are swapped for
local builds that keep the same contract.
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docker.client import DockerClient
from docker.models.containers import Container
from kubernetes.utils.quantity import parse_quantity

from airflow_ha.manifests import Manifest, containers, pod_specs

NAMESPACE = "airflow"
SERVICE_ACCOUNT_FOLDER = "/var/run/secrets/kubernetes.io/serviceaccount"
OOM_KILLED = "OOMKilled: over its memory limit"


class RehearsalError(AssertionError):
    """A pod of the rehearsal did not do what its manifest promises."""


@dataclass(frozen=True)
class Kubelet:
    """What a kubelet hands pods: the API's address and CA, tokens, ConfigMaps and Secrets."""

    host: str
    port: int
    ca_pem: str
    token: Callable[[str, str], str]  # (namespace, service account) -> bearer token
    config_map: Callable[[str], dict[str, str]]
    secret: Callable[[str], dict[str, str]]


@dataclass
class Pod:
    """One replica of a workload, or one bare pod, run as containers that share its volumes."""

    manifest: Manifest
    replica: int
    spec: dict[str, Any]
    containers: list[Container] = field(default_factory=list)

    @property
    def name(self) -> str:
        if self.manifest.kind == "Pod":
            return self.manifest.name
        return f"{self.manifest.name}-{self.replica}"

    @property
    def labels(self) -> dict[str, str]:
        if self.manifest.kind == "Pod":
            return self.manifest.labels
        template = (self.manifest.obj.get("spec") or {}).get("template") or {}
        return (template.get("metadata") or {}).get("labels") or {}


class Rehearsal:
    """The manifests' pods on a private Docker network; `close()` removes everything."""

    def __init__(
        self,
        manifests: list[Manifest],
        secrets: dict[str, dict[str, str]],
        image_substitutes: dict[str, str] | None = None,
        run_id: str = "",
    ):
        self.client = DockerClient.from_env()
        self.manifests = manifests
        self.secrets = secrets
        self.image_substitutes = image_substitutes or {}
        self.run_id = run_id or uuid.uuid4().hex[:8]
        self.network = self.client.networks.create(f"airflow-ha-stack-{self.run_id}", driver="bridge")
        self.network.reload()
        # The host's address on this network: where a Kubernetes API emulator listens for the pods.
        self.gateway: str = self.network.attrs["IPAM"]["Config"][0]["Gateway"]
        self.kubelet: Kubelet | None = None
        # What each worker pod's container was given, kept after the container is gone.
        self.worker_environments: dict[str, dict[str, str]] = {}
        self.worker_specs: dict[str, dict[str, Any]] = {}
        self.worker_mounts: dict[str, list[str]] = {}
        self.files = tempfile.TemporaryDirectory(prefix="airflow-ha-stack-")
        self.volumes: dict[str, str] = {}
        self.pods: list[Pod] = []
        self.published: dict[str, list[tuple[Pod, int]]] = {}

    # -- objects -----------------------------------------------------------------

    def find(self, kind: str, name: str) -> Manifest:
        for manifest in self.manifests:
            if manifest.kind == kind and manifest.name == name:
                return manifest
        raise RehearsalError(f"the manifests have no {kind}/{name}")

    def config_map(self, name: str) -> dict[str, str]:
        if self.kubelet:
            return self.kubelet.config_map(name)
        return dict(self.find("ConfigMap", name).obj.get("data") or {})

    def secret(self, name: str) -> dict[str, str]:
        if self.kubelet:
            return self.kubelet.secret(name)
        if name not in self.secrets:
            raise RehearsalError(f"Secret/{name} is neither generated nor in the manifests")
        return self.secrets[name]

    def service_aliases(self, labels: dict[str, str]) -> list[str]:
        """Names of the Services whose selector picks these pod labels."""
        aliases = []
        for manifest in self.manifests:
            selector = (manifest.obj.get("spec") or {}).get("selector") or {}
            if manifest.kind == "Service" and selector and selector.items() <= labels.items():
                aliases.append(manifest.name)
        return aliases

    # -- translation ---------------------------------------------------------------

    def environment(self, pod: Pod, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                env.update(self.config_map(source["configMapRef"]["name"]))
            if "secretRef" in source:
                env.update(self.secret(source["secretRef"]["name"]))
        for variable in container.get("env") or []:
            env[variable["name"]] = self.env_value(pod, variable)
        if self.kubelet:  # every container in a cluster gets the API's Service address
            env.update(
                KUBERNETES_SERVICE_HOST=self.kubelet.host, KUBERNETES_SERVICE_PORT=str(self.kubelet.port)
            )
        return env

    def env_value(self, pod: Pod, variable: dict[str, Any]) -> str:
        if "value" in variable:
            return str(variable["value"])
        source = variable.get("valueFrom") or {}
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            return self.secret(ref["name"])[ref["key"]]
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            return self.config_map(ref["name"])[ref["key"]]
        field_path = (source.get("fieldRef") or {}).get("fieldPath")
        if field_path == "metadata.namespace":
            return NAMESPACE
        if field_path == "metadata.name":
            return pod.name
        raise RehearsalError(f"{pod.manifest.ref}: env {variable['name']} uses {source}, not rehearsed")

    def mounts(self, pod: Pod, container: dict[str, Any]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
        """Docker volumes and tmpfs mounts for the container's volumeMounts."""
        volumes = {volume["name"]: volume for volume in pod.spec.get("volumes") or []}
        for claim in (pod.manifest.obj.get("spec") or {}).get("volumeClaimTemplates") or []:
            volumes[claim["metadata"]["name"]] = {
                "persistentVolumeClaim": {"claimName": f"{claim['metadata']['name']}-{pod.name}"}
            }
        binds: dict[str, dict[str, str]] = {}
        tmpfs: dict[str, str] = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            mode = "ro" if mount.get("readOnly") else "rw"
            if "emptyDir" in volume and mount["mountPath"] == "/tmp":
                tmpfs["/tmp"] = "rw,exec,mode=1777"
            elif "emptyDir" in volume:
                volume_name = self.empty_dir(f"{pod.name}-{mount['name']}", self.image(container))
                binds[volume_name] = {"bind": mount["mountPath"], "mode": mode}
            elif "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                binds[self.volume(claim)] = {"bind": mount["mountPath"], "mode": mode}
            elif "configMap" in volume or "secret" in volume:
                folder = self.projected_files(pod, volume)
                binds[str(folder)] = {"bind": mount["mountPath"], "mode": "ro"}
            else:
                raise RehearsalError(f"{pod.manifest.ref}: volume {mount['name']} is not rehearsed: {volume}")
        token_folder = self.service_account_files(pod)
        if token_folder:
            binds[str(token_folder)] = {"bind": SERVICE_ACCOUNT_FOLDER, "mode": "ro"}
        return binds, tmpfs

    def service_account_files(self, pod: Pod) -> Path | None:
        """The token, ca.crt and namespace a kubelet mounts, unless the pod or its account opts out."""
        if not self.kubelet:
            return None
        account = pod.spec.get("serviceAccountName") or "default"
        automount = pod.spec.get("automountServiceAccountToken")
        if automount is None:
            found = [m for m in self.manifests if m.kind == "ServiceAccount" and m.name == account]
            automount = found[0].obj.get("automountServiceAccountToken", True) if found else True
        if not automount:
            return None
        folder = Path(self.files.name) / pod.name / "serviceaccount"
        folder.mkdir(parents=True, exist_ok=True)
        files = {
            "token": self.kubelet.token(NAMESPACE, account),
            "ca.crt": self.kubelet.ca_pem,
            "namespace": NAMESPACE,
        }
        for file_name, text in files.items():
            (folder / file_name).write_text(text)
            (folder / file_name).chmod(0o644)  # the container user is not this user
        folder.chmod(0o755)
        return folder

    def image(self, container: dict[str, Any]) -> str:
        return self.image_substitutes.get(container["image"], container["image"])

    def volume(self, name: str) -> str:
        """A named Docker volume; a new one copies the image's folder, owner included."""
        if name not in self.volumes:
            self.volumes[name] = self.client.volumes.create(f"airflow-ha-stack-{self.run_id}-{name}").name
        return self.volumes[name]

    def empty_dir(self, name: str, image: str) -> str:
        """Like an emptyDir: empty, writable by any user, shared by the pod's containers.

        A named volume outlives each container (a tmpfs volume would not), and starts
        root-owned, so one short root container opens it up as the kubelet does (0777).
        """
        if name not in self.volumes:
            volume = self.client.volumes.create(f"airflow-ha-stack-{self.run_id}-{name}").name
            self.client.containers.run(
                image,
                ["chmod", "1777", "/volume"],
                entrypoint=[],
                user="0",
                volumes={volume: {"bind": "/volume"}},
                remove=True,
            )
            self.volumes[name] = volume
        return self.volumes[name]

    def projected_files(self, pod: Pod, volume: dict[str, Any]) -> Path:
        """A ConfigMap or Secret volume as files in a folder, like the kubelet writes them."""
        if "configMap" in volume:
            data, items = self.config_map(volume["configMap"]["name"]), volume["configMap"].get("items")
        else:
            data, items = self.secret(volume["secret"]["secretName"]), volume["secret"].get("items")
        folder = Path(self.files.name) / pod.name / volume["name"]
        folder.mkdir(parents=True, exist_ok=True)
        for key, path in [(item["key"], item["path"]) for item in items] if items else [(k, k) for k in data]:
            target = folder / path
            target.write_text(data[key])
            # The container user is not this user; the kubelet's default mode is 0644 too.
            target.chmod(0o644)
        folder.chmod(0o755)
        return folder

    def run_options(self, pod: Pod, container: dict[str, Any]) -> dict[str, Any]:
        security = {**(pod.spec.get("securityContext") or {}), **(container.get("securityContext") or {})}
        if security.get("privileged"):
            raise RehearsalError(f"{pod.manifest.ref}: container {container['name']} is privileged")
        binds, tmpfs = self.mounts(pod, container)
        options: dict[str, Any] = {
            "image": self.image(container),
            "name": f"airflow-ha-stack-{self.run_id}-{pod.name}-{container['name']}",
            "hostname": pod.name,
            "environment": self.environment(pod, container),
            "volumes": binds,
            "tmpfs": tmpfs,
            "read_only": bool(security.get("readOnlyRootFilesystem")),
            "cap_drop": (security.get("capabilities") or {}).get("drop") or [],
            "security_opt": [] if security.get("allowPrivilegeEscalation", True) else ["no-new-privileges"],
            "labels": {"airflow-ha-stack": self.run_id},
        }
        memory_limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
        if memory_limit:  # the cgroup limit a kubelet sets, swap included: over it, the OOM killer
            options["mem_limit"] = options["memswap_limit"] = int(parse_quantity(memory_limit))
        if "runAsUser" in security:
            options["user"] = f"{security['runAsUser']}:{security.get('runAsGroup', 0)}"
        if container.get("command"):
            options["entrypoint"] = container["command"]
        if container.get("args"):
            options["command"] = container["args"]
        return options

    # -- running ---------------------------------------------------------------------

    def run_to_completion(self, pod: Pod, container: dict[str, Any], timeout: float) -> str:
        """Run a container like an init container or a Job: it must exit 0 in time."""
        runner = self.client.containers.create(**self.run_options(pod, container), network=self.network.name)
        pod.containers.append(runner)
        runner.start()
        try:
            status = runner.wait(timeout=timeout)
        except Exception as error:
            raise RehearsalError(
                f"{pod.manifest.ref}: {container['name']} did not finish in {timeout:.0f}s"
            ) from error
        output = runner.logs().decode(errors="replace")
        if status.get("StatusCode") != 0:
            tail = "\n".join(output.splitlines()[-30:])
            why = f" ({OOM_KILLED})" if oom_killed(runner) else ""
            raise RehearsalError(
                f"{pod.manifest.ref}: {container['name']} exited {status['StatusCode']}{why}:\n{tail}"
            )
        return output

    def start(self, manifest: Manifest, timeout: float = 300) -> list[Pod]:
        """Start every replica: init containers to completion, then the long-running containers."""
        started = []
        for path, spec in pod_specs(manifest):
            assert path.endswith("template.spec"), path
            replicas = int((manifest.obj.get("spec") or {}).get("replicas", 1))
            for replica in range(replicas):
                pod = Pod(manifest, replica, spec)
                self.pods.append(pod)
                for _, init in [(p, c) for p, c in containers(spec) if p.startswith("initContainers")]:
                    self.run_to_completion(pod, init, timeout)
                for container in spec.get("containers") or []:
                    self.start_container(pod, container)
                started.append(pod)
        return started

    def start_container(self, pod: Pod, container: dict[str, Any]) -> None:
        options = self.run_options(pod, container)
        ports = {f"{port['containerPort']}/tcp": ("127.0.0.1", None) for port in container.get("ports") or []}
        runner = self.client.containers.create(**options, ports=ports)
        # Attach with the Service names as aliases before start, as a Service would route.
        self.client.api.disconnect_container_from_network(runner.id, "bridge")
        self.network.connect(runner, aliases=self.service_aliases(pod.labels))
        pod.containers.append(runner)
        runner.start()

    def worker_run_options(self, pod_object: dict[str, Any]) -> dict[str, Any]:
        """Docker run options for a bare pod from the API (a worker pod): the same translation."""
        pod = Pod(Manifest("Kubernetes API", pod_object), 0, pod_object["spec"])
        options = self.run_options(pod, pod.spec["containers"][0])
        self.worker_environments[pod.name] = dict(options["environment"])
        self.worker_specs[pod.name] = pod.spec
        self.worker_mounts[pod.name] = sorted(m["bind"] for m in options["volumes"].values())
        return options

    def run_job(self, manifest: Manifest, timeout: float = 300) -> str:
        (_, spec), *_ = pod_specs(manifest)
        pod = Pod(manifest, 0, spec)
        self.pods.append(pod)
        steps = [*spec.get("initContainers", []), *spec["containers"]]
        return "\n".join(self.run_to_completion(pod, container, timeout) for container in steps)

    def host_port(self, pod: Pod, container_port: int) -> int:
        runner = pod.containers[-1]
        runner.reload()
        binding = runner.attrs["NetworkSettings"]["Ports"][f"{container_port}/tcp"][0]
        return int(binding["HostPort"])

    def probe(self, pod: Pod, container: dict[str, Any], kind: str) -> tuple[bool, str]:
        """Run one of the container's probes the way the kubelet would; (passed, output)."""
        probe = container.get(kind)
        if not probe:
            return True, "no probe"
        runner = next(c for c in pod.containers if c.name.endswith(f"-{container['name']}"))
        if "exec" in probe:
            result = runner.exec_run(
                probe["exec"]["command"], user=self.run_options(pod, container).get("user", "")
            )
            return result.exit_code == 0, result.output.decode(errors="replace")[-2000:]
        if "httpGet" in probe:
            port = probe["httpGet"]["port"]
            if isinstance(port, str):
                port = next(p["containerPort"] for p in container.get("ports") or [] if p.get("name") == port)
            url = f"http://127.0.0.1:{self.host_port(pod, port)}{probe['httpGet'].get('path', '/')}"
            try:
                with urllib.request.urlopen(url, timeout=probe.get("timeoutSeconds", 5)) as response:
                    return 200 <= response.status < 400, response.read().decode(errors="replace")[:2000]
            except OSError as error:
                return False, f"GET {url}: {error}"
        raise RehearsalError(f"{pod.manifest.ref}: {kind} {probe} is not rehearsed")

    def wait_until_probes_pass(self, pod: Pod, timeout: float = 300) -> dict[str, str]:
        """Every probe of every container passes, retried as a startup would be."""
        results: dict[str, str] = {}
        for container in pod.spec.get("containers") or []:
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                deadline = time.monotonic() + timeout
                while True:
                    self.require_running(pod)
                    passed, output = self.probe(pod, container, kind)
                    if passed:
                        results[f"{container['name']} {kind}"] = (
                            output.strip().splitlines()[-1:][0] if output.strip() else ""
                        )
                        break
                    if time.monotonic() > deadline:
                        raise RehearsalError(
                            f"{pod.name}: {kind} of {container['name']} still failing:\n{output}"
                        )
                    time.sleep(3)
        return results

    def require_running(self, pod: Pod) -> None:
        runner = pod.containers[-1]
        if oom_killed(runner) or runner.status != "running":
            tail = "\n".join(runner.logs().decode(errors="replace").splitlines()[-40:])
            why = OOM_KILLED if runner.attrs["State"].get("OOMKilled") else runner.status
            raise RehearsalError(f"{pod.name} stopped ({why}):\n{tail}")

    def memory_limit_hits(self) -> list[str]:
        """Containers that reached their memory limit: the OOM killer may have ended a process in one."""
        hits = []
        for pod in self.pods:
            for runner in pod.containers:
                if oom_killed(runner):
                    hits.append(f"{runner.name}: {OOM_KILLED}")
                elif runner.status == "running":
                    hit = self.memory_limit_reached(runner)
                    hits += [f"{runner.name}: {hit}"] if hit else []
        return hits

    @staticmethod
    def memory_limit_reached(runner: Container) -> str:
        """What the container's memory cgroup says: processes the OOM killer ended (cgroup v2
        memory.events, v1 memory.oom_control), or a peak at the limit (v1's max_usage)."""
        read = runner.exec_run(
            [
                "sh",
                "-c",
                "cat /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control 2>/dev/null",
            ]
        )
        counts = dict(
            line.split()[:2] for line in read.output.decode().splitlines() if len(line.split()) >= 2
        )
        if int(counts.get("oom_kill", 0)):
            return f"the OOM killer ended {counts['oom_kill']} of its processes"
        memory = runner.stats(stream=False, one_shot=True).get("memory_stats") or {}
        if memory.get("limit") and memory.get("max_usage", 0) >= memory["limit"]:
            return f"its memory use reached its {memory['limit'] >> 20} MiB limit"
        return ""

    def logs(self, pod: Pod, lines: int = 40) -> str:
        return pod.containers[-1].logs(tail=lines).decode(errors="replace")

    def close(self) -> None:
        for pod in self.pods:
            for runner in pod.containers:
                runner.remove(force=True, v=True)
        for name in self.volumes.values():
            self.client.volumes.get(name).remove(force=True)
        self.network.remove()
        self.files.cleanup()

    def __enter__(self) -> Rehearsal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def oom_killed(runner: Container) -> bool:
    """Whether the kernel's OOM killer ended the container's main process; refreshes its state."""
    runner.reload()
    return bool(runner.attrs["State"].get("OOMKilled"))


def component_pods(rehearsal: Rehearsal) -> Iterator[Pod]:
    return (pod for pod in rehearsal.pods if pod.manifest.kind in {"Deployment", "StatefulSet"})


def describe(options: dict[str, Any]) -> str:
    """A container's run options with every env value hidden: the test output shows wiring, not secrets."""
    shown = {key: value for key, value in options.items() if key != "environment"}
    shown["environment"] = sorted(options.get("environment", {}))
    return json.dumps(shown, default=str)
