"""What the cluster rules share beside the workload model (``airflow_ha.manifests.Workload``):
the pods' ports, Secrets and identities, and who talks to the Kubernetes API.

Pure functions of the rendered objects (``airflow_ha.manifests.Manifest``), so the rules
that use them stay fast and testable without rendering anything.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

from .. import manifests
from ..manifests import Manifest, Workload, containers, items, mapping
from .problems import Problem, at

EXECUTOR_KEY = "AIRFLOW__CORE__EXECUTOR"
TRIGGER_LOG_PORT_KEY = "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"
# The triggerer's own fallback (airflow/cli/commands/triggerer_command.py), used only when
# the installed Airflow's config.yml cannot be read.
TRIGGER_LOG_PORT_FALLBACK = 8794


def worker(items: Iterable[Workload]) -> Workload | None:
    return next((w for w in items if w.manifest.kind == "Pod" and "kubernetes_executor" in w.labels), None)


def named_ports(pod: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """name -> (containerPort, protocol) of every named port of a pod's containers."""
    found: dict[str, tuple[int, str]] = {}
    for _, container in containers(pod):
        for port in items(container.get("ports")):
            if port.get("name") and isinstance(port.get("containerPort"), int):
                found.setdefault(
                    str(port["name"]), (port["containerPort"], str(port.get("protocol") or "TCP"))
                )
    return found


def secrets_read(pod: dict[str, Any]) -> set[str]:
    """The Secrets a pod reads, as environment or files."""
    names: set[str] = set()
    for _, container in containers(pod):
        for source in items(container.get("envFrom")):
            if reference := mapping(source.get("secretRef")):
                names.add(str(reference.get("name")))
        for variable in items(container.get("env")):
            reference = mapping(mapping(variable.get("valueFrom")).get("secretKeyRef"))
            if reference:
                names.add(str(reference.get("name")))
    for volume in items(pod.get("volumes")):
        if secret := mapping(volume.get("secret")):
            names.add(str(secret.get("secretName")))
        for source in items(mapping(volume.get("projected")).get("sources")):
            if secret := mapping(source.get("secret")):
                names.add(str(secret.get("name")))
    return names


def service_account(workload: Workload) -> str:
    pod = workload.pod
    return str(pod.get("serviceAccountName") or pod.get("serviceAccount") or "default")


def api_callers(objects: Iterable[Manifest]) -> dict[str, list[Manifest]]:
    """ServiceAccount name -> the (Cluster)RoleBindings that grant it rights in the Kubernetes API.

    Only a binding to a role that exists and grants something counts: an account with
    rights is one whose pods call the API.
    """
    objects = list(objects)
    roles = {(m.kind, m.name): m for m in objects if m.kind in {"Role", "ClusterRole"}}
    bound: dict[str, list[Manifest]] = {}
    for binding in (m for m in objects if m.kind in {"RoleBinding", "ClusterRoleBinding"}):
        ref = mapping(binding.obj.get("roleRef"))
        role = roles.get((str(ref.get("kind")), str(ref.get("name"))))
        if role is None or not role.obj.get("rules"):
            continue
        for subject in items(binding.obj.get("subjects")):
            if subject.get("kind") == "ServiceAccount":
                bound.setdefault(str(subject.get("name")), []).append(binding)
    return bound


def airflow_config(objects: Iterable[Manifest]) -> dict[str, str]:
    """The Airflow settings of the airflow-config ConfigMap, whatever the shape of its data."""
    config_map = manifests.find(objects, "ConfigMap", manifests.AIRFLOW_CONFIG_MAP)
    data = mapping(config_map.obj.get("data")) if config_map else {}
    return {str(key): str(value) for key, value in data.items()}


def executor_workloads(items: Iterable[Workload], config: dict[str, str]) -> list[Workload]:
    """The scheduler's workloads when the configured executor launches pods through the API."""
    if "KubernetesExecutor" not in str(config.get(EXECUTOR_KEY) or ""):
        return []
    return [w for w in items if w.component == "scheduler"]


def trigger_log_port(config: dict[str, str]) -> int:
    """[logging] trigger_log_server_port: the manifests' setting, else the installed Airflow's default."""
    value = config.get(TRIGGER_LOG_PORT_KEY)
    if value is not None and str(value).strip().isdigit():
        return int(value)
    return airflow_default_trigger_log_port()


@cache
def airflow_default_trigger_log_port() -> int:
    """The default from the installed Airflow's config.yml, read without importing Airflow (slow)."""
    spec = importlib.util.find_spec("airflow")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "config_templates" / "config.yml"
        if path.is_file():
            found = re.search(
                r"^    trigger_log_server_port:\n(?:      .*\n|\s*\n)*?      default: \"?(\d+)\"?$",
                path.read_text(),
                re.M,
            )
            if found:
                return int(found.group(1))
    return TRIGGER_LOG_PORT_FALLBACK


Finding = tuple[str, Manifest, str, str]  # (rule, object, field, message), before it is a Problem


def as_problems(found: Iterable[Finding]) -> Iterator[Problem]:
    for rule, manifest, field, message in found:
        yield at(rule, manifest, field, message)
