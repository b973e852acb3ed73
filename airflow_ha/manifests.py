"""Render the kustomize overlays and find things in the rendered objects.

Rendering is `kubectl kustomize`, the reference implementation. Per-deploy values
(namespace, image) go through a throwaway kustomization that includes the overlay,
as `kustomize edit set image` would, so Python never edits manifest text.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import REPO_ROOT
from .console import Failure

KUBE_DIR = REPO_ROOT / "kube"
BASE_DIR = KUBE_DIR / "base"
OVERLAYS = ("kind", "okteto")
# An overlay's kustomize replacements that depend on the namespace deployed to.
PER_NAMESPACE = "per-namespace.yaml"

ORIGIN_ANNOTATION = "config.kubernetes.io/origin"
# The project image as the manifests name it; deploy swaps in the built tag.
PROJECT_IMAGE_NAME = "airflow-ha"
AIRFLOW_CONFIG_MAP = "airflow-config"
POD_TEMPLATE_CONFIG_MAP = "airflow-pod-template"
POD_TEMPLATE_KEY = "pod-template.yaml"
WORKER_REPOSITORY_KEY = "AIRFLOW__KUBERNETES_EXECUTOR__WORKER_CONTAINER_REPOSITORY"
WORKER_TAG_KEY = "AIRFLOW__KUBERNETES_EXECUTOR__WORKER_CONTAINER_TAG"
# Pod template annotation "checksum/<ConfigMap name>", the name Airflow's Helm chart uses.
CHECKSUM_PREFIX = "checksum/"


@dataclass
class Manifest:
    """One Kubernetes object and the file it was written in (relative to the repo)."""

    source: str
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", "?"))

    @property
    def name(self) -> str:
        return str((self.obj.get("metadata") or {}).get("name", "?"))

    @property
    def namespace(self) -> str | None:
        return (self.obj.get("metadata") or {}).get("namespace")

    @property
    def ref(self) -> str:
        """kind/name, as kubectl prints it."""
        return f"{self.kind}/{self.name}"

    @property
    def labels(self) -> dict[str, str]:
        return (self.obj.get("metadata") or {}).get("labels") or {}


def relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def kubectl() -> str:
    found = shutil.which("kubectl")
    if not found:
        raise Failure(
            "kubectl not found: it renders the kustomize overlays. "
            "Install it: https://kubernetes.io/docs/tasks/tools/#kubectl"
        )
    return found


def render(
    overlay: str | Path,
    *,
    namespace: str | None = None,
    image: str | None = None,
    kube_dir: Path = KUBE_DIR,
) -> list[Manifest]:
    """Render an overlay (a name under kube/overlays, or a folder) into objects.

    ``image`` ("repository:tag") replaces the project image everywhere, worker pods
    included; ``namespace`` replaces the namespace. Each object remembers its source file.
    """
    overlay_dir = Path(overlay) if isinstance(overlay, Path) else kube_dir / "overlays" / overlay
    if not (overlay_dir / "kustomization.yaml").is_file():
        raise Failure(f"{relative(overlay_dir)}: no kustomization.yaml; overlays are: {', '.join(OVERLAYS)}")
    with tempfile.TemporaryDirectory(prefix="airflow-ha-render-") as tmp:
        wrapper: dict[str, Any] = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [_relpath(overlay_dir, Path(tmp))],
            "buildMetadata": ["originAnnotations"],
        }
        if namespace:
            wrapper["namespace"] = namespace
        per_namespace = overlay_dir / PER_NAMESPACE
        if per_namespace.is_file():
            # Replacements in the wrapper run after its namespace is set, which is how
            # cluster-scoped names can follow the namespace; the overlay cannot do that.
            wrapper["replacements"] = [{"path": _relpath(per_namespace, Path(tmp))}]
        if image:
            repository, _, tag = image.rpartition(":")
            if not repository or "/" in tag:
                raise Failure(f"image {image!r} must be REPOSITORY:TAG")
            wrapper["images"] = [{"name": PROJECT_IMAGE_NAME, "newName": repository, "newTag": tag}]
            # The pod template is a file inside a ConfigMap, out of reach of the
            # images transformer; the executor's override settings carry the image.
            wrapper["configMapGenerator"] = [
                {
                    "name": AIRFLOW_CONFIG_MAP,
                    "behavior": "merge",
                    "literals": [f"{WORKER_REPOSITORY_KEY}={repository}", f"{WORKER_TAG_KEY}={tag}"],
                }
            ]
        (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump(wrapper))
        result = subprocess.run(
            [kubectl(), "kustomize", "--load-restrictor", "LoadRestrictionsNone", tmp],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise Failure(f"{relative(overlay_dir)}: kustomize failed: {_kustomize_error(result.stderr)}")
        try:
            objects = [obj for obj in yaml.safe_load_all(result.stdout) if obj]
        except yaml.YAMLError as error:
            raise Failure(f"{relative(overlay_dir)}: kustomize produced invalid YAML: {error}") from error
        return [Manifest(_pop_origin(obj, Path(tmp), overlay_dir), obj) for obj in objects]


def find(manifests: Iterable[Manifest], kind: str, name: str) -> Manifest | None:
    return next((m for m in manifests if m.kind == kind and m.name == name), None)


def airflow_config(manifests: Iterable[Manifest]) -> dict[str, str]:
    """The Airflow settings every component gets from the airflow-config ConfigMap."""
    config_map = find(manifests, "ConfigMap", AIRFLOW_CONFIG_MAP)
    return dict((config_map.obj.get("data") or {}) if config_map else {})


def pod_template(manifests: Iterable[Manifest]) -> Manifest | None:
    """The worker pod template, parsed out of its ConfigMap, with the template's own file.

    The file sits beside the kustomization that generated the ConfigMap: kube/base, or an
    overlay that replaces the template (kube/overlays/okteto).
    """
    config_map = find(manifests, "ConfigMap", POD_TEMPLATE_CONFIG_MAP)
    data = config_map.obj.get("data") if config_map else None
    text = data.get(POD_TEMPLATE_KEY) if isinstance(data, dict) else None
    if config_map is None or text is None:
        return None
    source = str(Path(config_map.source).parent / POD_TEMPLATE_KEY)
    template = yaml.safe_load(text) or {}
    if not isinstance(template, dict):
        raise yaml.YAMLError(f"{POD_TEMPLATE_KEY} holds a {type(template).__name__}, not a Pod")
    return Manifest(source, template)


COMPONENT_LABEL = "app.kubernetes.io/component"
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"})
# The labels KubernetesExecutor adds to every worker pod, beside the template's own.
EXECUTOR_LABELS = {"kubernetes_executor": "True", "airflow-worker": "0"}
# apps/v1's default for a Deployment's maxSurge and maxUnavailable.
DEFAULT_ROLLING = "25%"


def mapping(value: Any) -> dict[str, Any]:
    """A field that should be an object, or {} when it is not: kubernetes-validate reports the shape."""
    return value if isinstance(value, dict) else {}


def items(value: Any) -> list[dict[str, Any]]:
    """The objects of a field that should be a list of objects, ignoring what is not one."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def strings(value: Any) -> list[str]:
    """A field that should be a list of strings, as strings."""
    return [str(item) for item in value] if isinstance(value, list) else []


def _count(value: Any, default: int = 1) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def scaled(value: Any, total: int, *, round_up: bool) -> int | None:
    """An IntOrString resolved against ``total`` as Kubernetes does, or None if it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.endswith("%") and value[:-1].isdigit():
        share = int(value[:-1]) * total / 100
        return math.ceil(share) if round_up else math.floor(share)
    return None


@dataclass(frozen=True)
class Workload:
    """An object that makes pods: where its pod template is, what its pods are labelled, how
    many run at once, and what a rolling update adds. The lint checks and the budget share it."""

    manifest: Manifest
    pod_path: str  # field path of the pod spec, e.g. spec.template.spec
    pod: dict[str, Any]
    labels: dict[str, str]  # the labels its pods get

    @property
    def component(self) -> str:
        return self.labels.get(COMPONENT_LABEL) or self.manifest.name

    @property
    def labels_path(self) -> str:
        if self.pod_path == "spec":
            return "metadata.labels"
        return f"{self.pod_path.removesuffix('.spec')}.metadata.labels"

    @property
    def spec(self) -> dict[str, Any]:
        return mapping(self.manifest.obj.get("spec"))

    @property
    def replicas(self) -> int:
        """The replica count the object renders (the API server's default of 1 when it names none)."""
        if self.manifest.kind not in {"Deployment", "StatefulSet", "ReplicaSet"}:
            return 1
        return _count(self.spec.get("replicas"))

    @property
    def temporary(self) -> bool:
        """A Job: its pods go away once it completes."""
        return self.manifest.kind == "Job"

    @property
    def pods(self) -> int:
        """Its pods at once: the replicas, or a Job's parallelism up to its completions."""
        if not self.temporary:
            return self.replicas
        parallelism = _count(self.spec.get("parallelism"))
        completions = self.spec.get("completions")
        return min(parallelism, _count(completions)) if completions is not None else parallelism

    def rolling_update(self) -> tuple[int, int] | None:
        """A Deployment's (maxSurge, maxUnavailable) resolved at its replicas, as the controller
        does; None for strategy Recreate, which takes every pod down first."""
        strategy = mapping(self.spec.get("strategy"))
        if strategy.get("type") == "Recreate":
            return None
        rolling, replicas = mapping(strategy.get("rollingUpdate")), self.replicas
        surge = scaled(rolling.get("maxSurge", DEFAULT_ROLLING), replicas, round_up=True) or 0
        unavailable = scaled(rolling.get("maxUnavailable", DEFAULT_ROLLING), replicas, round_up=False) or 0
        if surge == 0 and unavailable == 0:
            unavailable = 1  # ResolveFenceposts
        return surge, unavailable

    @property
    def surge(self) -> int:
        """How many pods a rollout adds at most: a Deployment's maxSurge; none for other kinds."""
        resolved = self.rolling_update() if self.manifest.kind == "Deployment" else None
        return resolved[0] if resolved else 0


def workloads(objects: Iterable[Manifest], template: Manifest | None = None) -> Iterator[Workload]:
    """Every object that makes pods; the worker pod template with the executor's labels."""
    for manifest in objects:
        spec = mapping(manifest.obj.get("spec"))
        if manifest.kind == "Pod":
            labels = mapping(mapping(manifest.obj.get("metadata")).get("labels"))
            yield Workload(manifest, "spec", spec, {str(k): str(v) for k, v in labels.items()})
            continue
        if manifest.kind not in WORKLOAD_KINDS:
            continue
        path = "spec"
        if manifest.kind == "CronJob":
            spec, path = mapping(mapping(spec.get("jobTemplate")).get("spec")), "spec.jobTemplate.spec"
        pod_template = mapping(spec.get("template"))
        labels = mapping(mapping(pod_template.get("metadata")).get("labels"))
        pod = mapping(pod_template.get("spec"))
        yield Workload(manifest, f"{path}.template.spec", pod, {str(k): str(v) for k, v in labels.items()})
    if template is not None:
        labels = {**{str(k): str(v) for k, v in mapping(template.labels).items()}, **EXECUTOR_LABELS}
        yield Workload(template, "spec", mapping(template.obj.get("spec")), labels)


def pod_specs(manifest: Manifest) -> Iterator[tuple[str, dict[str, Any]]]:
    """(field path, pod spec) of every pod an object describes."""
    for workload in workloads([manifest]):
        yield workload.pod_path, workload.pod


def containers(pod_spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(field path relative to the pod spec, container) of every container, init ones included."""
    for field in ("initContainers", "containers"):
        for index, container in enumerate(items(pod_spec.get(field))):
            yield f"{field}[{container.get('name', index)}]", container


def images(rendered: Iterable[Manifest]) -> set[str]:
    """Every image the rendered objects' pods run, worker pods' included."""
    rendered = list(rendered)
    return {
        str(container["image"])
        for workload in workloads(rendered, pod_template(rendered))
        for _, container in containers(workload.pod)
        if container.get("image")
    }


def with_config_checksums(rendered: Iterable[Manifest]) -> list[Manifest]:
    """Copies of the objects; each workload's pod template carries the SHA-256 of every rendered
    ConfigMap its pods read, as ``checksum/<name>``.

    ConfigMap names carry no hash suffix, so without this a changed airflow.env would reach
    new worker pods but never restart the components. With it, a change rolls exactly the
    workloads that read the changed ConfigMap, and an unchanged redeploy changes nothing.
    """
    objects = list(rendered)
    digests = {
        m.name: hashlib.sha256(
            json.dumps([m.obj.get("data") or {}, m.obj.get("binaryData") or {}], sort_keys=True).encode()
        ).hexdigest()
        for m in objects
        if m.kind == "ConfigMap"
    }
    stamped = []
    for manifest in objects:
        obj = copy.deepcopy(manifest.obj)
        template = _pod_template(obj)
        if template is not None:
            read = sorted(config_maps_read(template.get("spec") or {}) & digests.keys())
            if read:
                annotations = template.setdefault("metadata", {}).setdefault("annotations", {})
                annotations.update({f"{CHECKSUM_PREFIX}{name}": digests[name] for name in read})
        stamped.append(Manifest(manifest.source, obj))
    return stamped


def _pod_template(obj: dict[str, Any]) -> dict[str, Any] | None:
    spec = obj.get("spec") or {}
    if obj.get("kind") in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return spec.get("template")
    if obj.get("kind") == "CronJob":
        return ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
    return None


def config_maps_read(pod_spec: dict[str, Any]) -> set[str]:
    """Names of the ConfigMaps a pod reads: volumes, projected volumes, envFrom and env."""
    found: list[str | None] = []
    for volume in pod_spec.get("volumes") or []:
        sources = [volume, *((volume.get("projected") or {}).get("sources") or [])]
        found.extend((source.get("configMap") or {}).get("name") for source in sources)
    for _, container in containers(pod_spec):
        found.extend((ref.get("configMapRef") or {}).get("name") for ref in container.get("envFrom") or [])
        found.extend(
            ((env.get("valueFrom") or {}).get("configMapKeyRef") or {}).get("name")
            for env in container.get("env") or []
        )
    return {name for name in found if name}


def strip_build_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as it should reach the cluster: without kustomize's origin annotation."""
    annotations = (obj.get("metadata") or {}).get("annotations")
    if annotations:
        annotations.pop(ORIGIN_ANNOTATION, None)
        if not annotations:
            del obj["metadata"]["annotations"]
    return obj


def _pop_origin(obj: dict[str, Any], wrapper_dir: Path, overlay_dir: Path) -> str:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    origin = yaml.safe_load(annotations.get(ORIGIN_ANNOTATION) or "{}") or {}
    strip_build_metadata(obj)
    if "path" in origin:
        return relative(wrapper_dir / origin["path"])
    # Generated objects (ConfigMaps) have no file of their own: name the kustomization.
    generated_by = (origin.get("configuredIn") or "").strip()
    if generated_by:
        return relative(wrapper_dir / generated_by)
    return relative(overlay_dir / "kustomization.yaml")


def _relpath(target: Path, start: Path) -> str:
    import os

    return os.path.relpath(target.resolve(), start.resolve())


def _kustomize_error(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
