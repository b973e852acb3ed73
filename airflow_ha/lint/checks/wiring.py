"""What no schema sees: selectors that select, references that resolve, ports that exist, and
the Services behind the URLs of the Airflow config.

A reference that resolves to nothing is reported at the object that makes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ... import generated_secrets as generated
from ... import manifests
from ...manifests import Manifest
from ..fields import field_path, get, pods
from ..problems import Problem, at
from ..render import REPLICATED_KINDS, Rendered, Target, per_overlay, relative

NAME = "wiring"
RULES = {
    "wiring/workload-selector": "a Deployment, StatefulSet or Job whose selector does not match its own "
    "pod template",
    "wiring/selects-nothing": "a Service, PodDisruptionBudget or NetworkPolicy selector that matches no pods",
    "wiring/target-port": "a Service targetPort, named or numeric, that no container of the pods it "
    "selects declares",
    "wiring/missing-object": "a ConfigMap, Secret, PersistentVolumeClaim or ServiceAccount that a pod names "
    "and that does not exist (the Secrets `invoke deploy` generates count)",
    "wiring/missing-key": "a key of a ConfigMap or Secret that a pod reads and that it does not have",
    "wiring/undefined-volume": "a volumeMount of a volume the pod does not define",
    "wiring/no-airflow-config": "no airflow-config ConfigMap, which every Airflow component reads",
    "wiring/execution-api-unset": "AIRFLOW__CORE__EXECUTION_API_SERVER_URL not set",
    "wiring/execution-api-unreachable": "an execution API URL whose host:port no Service exposes",
    "wiring/database-unreachable": "a database host:port (airflow_ha/generated_secrets.py) that no Service "
    "exposes",
    "wiring/worker-image": "a pod template image that differs from worker_container_repository:_tag, "
    "which override it",
}

EXECUTION_API_KEY = "AIRFLOW__CORE__EXECUTION_API_SERVER_URL"
DATABASE_URL_KEY = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
SELECTORS = {
    "Service": "spec.selector",
    "PodDisruptionBudget": "spec.selector.matchLabels",
    "NetworkPolicy": "spec.podSelector.matchLabels",
}


def run(target: Target) -> Iterator[Problem]:
    def wiring_problems(rendered: Rendered) -> Iterator[Problem]:
        yield from _selectors(rendered)
        yield from _references(rendered)
        yield from _airflow_endpoints(target.root, rendered)
        yield from _worker_image(rendered)

    yield from per_overlay(target, wiring_problems)


def _selectors(rendered: Rendered) -> Iterator[Problem]:
    """Every selector picks some pods (worker pods included); workloads select their own pods."""
    all_pods = [(spec, labels) for manifest in rendered.all for _, spec, labels in pods(manifest)]
    for manifest in rendered.objects:
        spec = manifest.obj.get("spec") or {}
        if manifest.kind in REPLICATED_KINDS | {"Job"} and spec.get("selector"):
            own = spec["selector"].get("matchLabels") or {}
            labels = next((labels for _, _, labels in pods(manifest)), {})
            if not own.items() <= labels.items():
                message = "the selector does not match the labels of the object's own pod template"
                yield at("wiring/workload-selector", manifest, "spec.selector.matchLabels", message)
        field = SELECTORS.get(manifest.kind, "-")
        selector = get(manifest.obj, field)
        if not selector:
            continue
        selected = [pod for pod, labels in all_pods if selector.items() <= labels.items()]
        if not selected:
            message = f"selects no pods: no pod template has the labels {_labels(selector)}"
            yield at("wiring/selects-nothing", manifest, field, message)
        elif manifest.kind == "Service":
            yield from _target_ports(manifest, selected)


def _target_ports(service: Manifest, selected: list[dict[str, Any]]) -> Iterator[Problem]:
    """Each targetPort (the port itself when there is none) is a port the selected containers declare."""
    declared = [
        port
        for pod in selected
        for _, container in manifests.containers(pod)
        for port in container.get("ports") or []
    ]
    names = {port.get("name") for port in declared} - {None}
    numbers = {port.get("containerPort") for port in declared} - {None}
    for index, port in enumerate((service.obj.get("spec") or {}).get("ports") or []):
        target_port = port.get("targetPort", port.get("port"))
        if isinstance(target_port, str) and not target_port.isdigit():
            if target_port in names:
                continue
            message = (
                f"targetPort {target_port!r} is not a named port of the pods it selects "
                f"({', '.join(sorted(names)) or 'none'})"
            )
        elif target_port is not None and int(target_port) not in numbers:
            message = (
                f"targetPort {target_port} is no containerPort of the pods it selects "
                f"({', '.join(map(str, sorted(numbers))) or 'none'}): traffic would reach a closed port"
            )
        else:
            continue
        field = field_path(service.obj, ["spec", "ports", index, "targetPort"])
        yield at("wiring/target-port", service, field, message)


def _labels(labels: dict[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in labels.items())


def _references(rendered: Rendered) -> Iterator[Problem]:
    """Every ConfigMap, Secret, key, claim, volume and ServiceAccount that a pod names exists.

    The Secrets are not in the manifests: `invoke deploy` generates them, so the names
    and keys of airflow_ha.generated_secrets.GENERATED_SECRETS exist. References resolve within the
    one namespace an overlay deploys to.
    """
    existing: dict[str, dict[str, set[str]]] = {
        "ConfigMap": {},
        "Secret": {name: set(keys) for name, keys in generated.GENERATED_SECRETS.items()},
        "PersistentVolumeClaim": {},
        "ServiceAccount": {"default": set()},
    }
    for m in rendered.objects:
        if m.kind in existing:
            existing[m.kind][m.name] = {
                key for part in ("data", "binaryData", "stringData") for key in m.obj.get(part) or {}
            }
    for manifest in rendered.all:
        for pod_path, pod, _ in pods(manifest):
            for field, kind, name, key in _pod_references(pod):
                there = existing[kind]
                if name not in there:
                    rule = "wiring/missing-object"
                    message = f"{kind} {name!r} does not exist (there are: {', '.join(sorted(there))})"
                elif key is not None and key not in there[name]:
                    rule = "wiring/missing-key"
                    message = f"{kind} {name!r} has no key {key!r} (it has: {', '.join(sorted(there[name]))})"
                else:
                    continue
                yield at(rule, manifest, f"{pod_path}.{field}", message)
            volumes = {volume.get("name") for volume in pod.get("volumes") or []}
            claim_templates = (manifest.obj.get("spec") or {}).get("volumeClaimTemplates") or []
            volumes |= {(claim.get("metadata") or {}).get("name") for claim in claim_templates}
            for container_path, container in manifests.containers(pod):
                for mount in container.get("volumeMounts") or []:
                    if mount.get("name") not in volumes:
                        message = f"mounts volume {mount.get('name')!r}, which the pod does not define"
                        field = f"{pod_path}.{container_path}.volumeMounts[{mount.get('name')}]"
                        yield at("wiring/undefined-volume", manifest, field, message)


def _pod_references(pod: dict[str, Any]) -> Iterator[tuple[str, str, str, str | None]]:
    """(field, kind, name, key) of what a pod spec names, optional references left out."""
    yield "serviceAccountName", "ServiceAccount", pod.get("serviceAccountName") or "default", None
    for volume in pod.get("volumes") or []:
        where = f"volumes[{volume.get('name')}]"
        for kind, source_field, name_field in (
            ("ConfigMap", "configMap", "name"),
            ("Secret", "secret", "secretName"),
        ):
            source = volume.get(source_field) or {}
            if source and not source.get("optional"):
                yield f"{where}.{source_field}.{name_field}", kind, str(source.get(name_field)), None
                for item in source.get("items") or []:
                    yield f"{where}.{source_field}.items", kind, str(source.get(name_field)), item.get("key")
        claim = volume.get("persistentVolumeClaim")
        if claim:
            yield (
                f"{where}.persistentVolumeClaim.claimName",
                "PersistentVolumeClaim",
                claim.get("claimName"),
                None,
            )
    for path, container in manifests.containers(pod):
        for variable in container.get("env") or []:
            for kind, ref_field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                ref = (variable.get("valueFrom") or {}).get(ref_field)
                if ref and not ref.get("optional"):
                    where = f"{path}.env[{variable.get('name')}].valueFrom.{ref_field}"
                    yield where, kind, ref.get("name"), ref.get("key")
        for index, env_from in enumerate(container.get("envFrom") or []):
            for kind, ref_field in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                ref = env_from.get(ref_field)
                if ref and not ref.get("optional"):
                    yield f"{path}.envFrom[{index}].{ref_field}.name", kind, ref.get("name"), None


def _airflow_endpoints(root: Path, rendered: Rendered) -> Iterator[Problem]:
    """The execution API URL and the database URL name a Service and a port it exposes."""
    config_map = manifests.find(rendered.objects, "ConfigMap", manifests.AIRFLOW_CONFIG_MAP)
    if config_map is None:
        message = (
            f"no ConfigMap {manifests.AIRFLOW_CONFIG_MAP}: every Airflow component reads its config from it"
        )
        yield Problem("wiring/no-airflow-config", "kube/base/kustomization.yaml", message)
        return
    url = manifests.airflow_config(rendered.objects).get(EXECUTION_API_KEY)
    file = config_file(root, EXECUTION_API_KEY, url) or config_map.source
    field = f"data.{EXECUTION_API_KEY}"
    if url is None:
        message = (
            f"{EXECUTION_API_KEY} is not set, so worker pods would report to "
            "http://localhost:8080/execution/: point it at the api-server Service"
        )
        yield Problem("wiring/execution-api-unset", file, message, config_map.ref, field)
        return
    services = {m.name: m for m in rendered.objects if m.kind == "Service"}
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if unreachable := _unreachable(services, parts.hostname or "", port):
        yield Problem("wiring/execution-api-unreachable", file, unreachable, config_map.ref, field)
    # deploy writes the database URL from these constants; an overlay that drops the
    # bundled PostgreSQL (for an external database) brings its own URL.
    bundled = any(
        m.kind == "StatefulSet" and m.labels.get("app.kubernetes.io/name") == "postgresql"
        for m in rendered.objects
    )
    if bundled and (unreachable := _unreachable(services, generated.DATABASE_HOST, generated.DATABASE_PORT)):
        secret = f"Secret/{generated.METADATA_SECRET}"
        yield Problem(
            "wiring/database-unreachable",
            "airflow_ha/generated_secrets.py",
            unreachable,
            secret,
            f"data.{DATABASE_URL_KEY}",
        )


def _unreachable(services: dict[str, Manifest], host: str, port: int) -> str | None:
    """Why host:port is not a Service's port, if it is not."""
    service = services.get(host.split(".")[0])
    if service is None:
        return f"host {host!r} is not a Service (there are: {', '.join(sorted(services))})"
    ports = [p.get("port") for p in get(service.obj, "spec.ports") or []]
    if port in ports:
        return None
    return (
        f"port {port} of {host}: {service.ref} ({service.source}) exposes only {', '.join(map(str, ports))}"
    )


def config_file(root: Path, key: str, value: str | None = None, overlay: str = "") -> str | None:
    """The file under kube/ that sets an Airflow variable (to ``value``, when given): a .env file,
    or a kustomization whose generator has it as a literal, the overlay's own first. The file to
    name in messages; None when none is found, and the ConfigMap's source is named instead."""
    for path in sorted((root / "kube").rglob("*.env")):
        for line in path.read_text().splitlines():
            name, _, given = line.partition("=")
            if name.strip() == key and (value is None or given.strip() == value):
                return relative(root, path)
    own = root / "kube" / "overlays" / overlay / "kustomization.yaml"
    for path in sorted((root / "kube").rglob("kustomization.yaml"), key=lambda path: (path != own, path)):
        kustomization = yaml.safe_load(path.read_text()) or {}
        for generator in kustomization.get("configMapGenerator") or []:
            for literal in generator.get("literals") or []:
                name, _, given = str(literal).partition("=")
                if name.strip() == key and (value is None or given.strip() == value):
                    return relative(root, path)
    return None


def _worker_image(rendered: Rendered) -> Iterator[Problem]:
    """worker_container_repository and _tag override the template's image: the two must agree."""
    config = manifests.airflow_config(rendered.objects)
    repository, tag = config.get(manifests.WORKER_REPOSITORY_KEY), config.get(manifests.WORKER_TAG_KEY)
    template = rendered.template
    if not (repository and tag and template):
        return
    image = ((template.obj.get("spec") or {}).get("containers") or [{}])[0].get("image")
    if image != f"{repository}:{tag}":
        message = (
            f"image {image!r}, but worker_container_repository and worker_container_tag in the Airflow "
            f"config give {repository}:{tag}, which override it: make them the same"
        )
        field = field_path(template.obj, ["spec", "containers", 0, "image"])
        yield at("wiring/worker-image", template, field, message)
