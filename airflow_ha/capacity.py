"""What an overlay's pods take from a cluster, against the budget the overlay declares.

Each overlay declares its budget in kube/overlays/<overlay>/budget.yaml (not a Kubernetes
object): the sum of CPU and memory limits and the number of pods its cluster gives the
deployment, optional per-pod caps, and how many worker pods run at once. The lint gate's
budget check and preflight read it.

The sums follow what a namespace ResourceQuota and a LimitRange count:
- a pod's value is the larger of its containers' sum and its largest init container (init
  containers run one after another, before the containers); sidecar init containers
  (restartPolicy: Always) run beside the containers, so they join the sum;
- long-running pods: the replicas of every Deployment and StatefulSet;
- worker pods: the budget's worker_pods, each shaped by the worker pod template;
- the pods a deploy adds for a while: `invoke deploy` runs the migration Job to completion
  before it rolls the Deployments, and rolls them one at a time (airflow_ha/deploy.py), so
  at most one of these exists at once: a Job's pods, or one Deployment's rolling-update
  surge (maxSurge of its replicas, rounded up; none for Recreate), as the workload model
  (``airflow_ha.manifests.Workload``) that the lint checks share resolves it. The largest counts.
Quantities are parsed by the Kubernetes client's own parser.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from kubernetes.utils import parse_quantity

from . import manifests
from .manifests import Manifest

BUDGET_FILE = "budget.yaml"
RESOURCES = ("cpu", "memory")


class BudgetError(ValueError):
    """A budget.yaml that cannot be read: the field at fault and why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Budget:
    cpu: Decimal
    memory: Decimal
    pods: int
    worker_pods: int
    pod_cpu: Decimal | None = None
    pod_memory: Decimal | None = None
    docker_memory: Decimal | None = None


QUANTITY_FIELDS = {"cpu": True, "memory": True, "pod_cpu": False, "pod_memory": False, "docker_memory": False}
COUNT_FIELDS = ("pods", "worker_pods")


def read_budget(path: Path) -> Budget:
    """The budget in a budget.yaml; BudgetError names the field of any mistake."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise BudgetError("", f"cannot read it: {error}") from None
    return parse_budget(data)


def parse_budget(data: object) -> Budget:
    if not isinstance(data, Mapping):
        raise BudgetError("", "must be a mapping of cpu, memory, pods, worker_pods and optional caps")
    unknown = sorted(set(data) - set(QUANTITY_FIELDS) - set(COUNT_FIELDS))
    if unknown:
        known = ", ".join([*QUANTITY_FIELDS, *COUNT_FIELDS])
        raise BudgetError(str(unknown[0]), f"unknown field {unknown[0]!r}: the fields are {known}")
    values: dict[str, Any] = {}
    for name, required in QUANTITY_FIELDS.items():
        if name not in data:
            if required:
                raise BudgetError(name, f"{name} is required, as a Kubernetes quantity")
            continue
        values[name] = quantity(data[name], name)
    for name in COUNT_FIELDS:
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BudgetError(name, f"{name} must be a whole number of pods, not {value!r}")
        values[name] = value
    return Budget(**values)


def quantity(value: object, name: str) -> Decimal:
    """A Kubernetes quantity ("500m", "1.5", "768Mi"), or BudgetError naming the field."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BudgetError(name, f"{name} must be a Kubernetes quantity such as 500m or 768Mi, not {value!r}")
    try:
        parsed: Decimal = parse_quantity(value)
    except ValueError:
        raise BudgetError(
            name, f"{name}: {value!r} is not a Kubernetes quantity (500m, 2, 768Mi, 8Gi)"
        ) from None
    return parsed


@dataclass(frozen=True)
class Resources:
    cpu: Decimal = Decimal(0)
    memory: Decimal = Decimal(0)

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory + other.memory)

    def __mul__(self, count: int) -> Resources:
        return Resources(self.cpu * count, self.memory * count)

    def most(self, other: Resources) -> Resources:
        return Resources(max(self.cpu, other.cpu), max(self.memory, other.memory))

    def get(self, resource: str) -> Decimal:
        value: Decimal = getattr(self, resource)
        return value


@dataclass(frozen=True)
class Pod:
    """One pod's effective requests and limits, and the containers that declare none."""

    requests: Resources
    limits: Resources
    unlimited: tuple[str, ...] = ()  # "<container>: cpu" for each missing limit


def container_resources(container: Mapping[str, Any], section: str) -> tuple[Resources, list[str]]:
    declared = (container.get("resources") or {}).get(section) or {}
    missing = [resource for resource in RESOURCES if resource not in declared]
    values = {resource: parse_quantity(declared[resource]) for resource in RESOURCES if resource in declared}
    return Resources(**values), missing


def pod(spec: Mapping[str, Any]) -> Pod:
    """The effective requests and limits of a pod spec, as the scheduler and quotas count them."""
    containers = list(spec.get("containers") or [])
    sidecars = [c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
    sequential = [c for c in spec.get("initContainers") or [] if c.get("restartPolicy") != "Always"]
    totals: dict[str, Resources] = {}
    unlimited: list[str] = []
    for section in ("requests", "limits"):
        running = Resources()
        for container in [*containers, *sidecars]:
            values, missing = container_resources(container, section)
            running += values
            if section == "limits":
                unlimited += [f"{container.get('name')}: {resource}" for resource in missing]
        for container in sequential:
            values, missing = container_resources(container, section)
            running = running.most(values)
            if section == "limits":
                unlimited += [f"{container.get('name')}: {resource}" for resource in missing]
        totals[section] = running
    return Pod(totals["requests"], totals["limits"], tuple(unlimited))


# The kinds whose pods the budget counts; the worker pods come from the budget's worker_pods.
COUNTED_KINDS = ("Deployment", "StatefulSet", "Job")


@dataclass(frozen=True)
class Usage:
    """The most an overlay's pods hold at once during a deploy, and how it adds up."""

    pods: int
    requests: Resources
    limits: Resources
    long_running: int
    worker_pods: int
    extra_pods: int  # the migration Job's pods or one Deployment's surge, whichever is more
    extra_from: str  # which workload the extra pods belong to
    shapes: dict[str, Pod] = field(default_factory=dict)


def usage(objects: Iterable[Manifest], worker: Manifest | None, worker_pods: int) -> Usage:
    """The sums for rendered objects plus ``worker_pods`` pods of the worker pod template (a Pod)."""
    found = [w for w in manifests.workloads(objects) if w.manifest.kind in COUNTED_KINDS]
    shapes = {w.manifest.ref: pod(w.pod) for w in found}
    steady = [w for w in found if not w.temporary]
    requests = sum((shapes[w.manifest.ref].requests * w.pods for w in steady), Resources())
    limits = sum((shapes[w.manifest.ref].limits * w.pods for w in steady), Resources())
    if worker is not None and worker_pods:
        worker_shape = pod(manifests.mapping(worker.obj.get("spec")))
        shapes[f"Pod/{worker.name}"] = worker_shape
        requests += worker_shape.requests * worker_pods
        limits += worker_shape.limits * worker_pods
    # Only one of these exists at once (see the module docstring), so each figure takes the most.
    extras = [(w.pods if w.temporary else w.surge, w) for w in found if w.temporary or w.surge]
    extra_requests, extra_limits, extra_pods, extra_from = Resources(), Resources(), 0, ""
    for count, w in extras:
        shape = shapes[w.manifest.ref]
        extra_requests = extra_requests.most(shape.requests * count)
        extra_limits = extra_limits.most(shape.limits * count)
        if count > extra_pods:
            extra_pods, extra_from = count, w.manifest.ref
    long_running = sum(w.pods for w in steady)
    return Usage(
        pods=long_running + worker_pods + extra_pods,
        requests=requests + extra_requests,
        limits=limits + extra_limits,
        long_running=long_running,
        worker_pods=worker_pods,
        extra_pods=extra_pods,
        extra_from=extra_from,
        shapes=shapes,
    )


def cpu_text(value: Decimal) -> str:
    return f"{value.normalize():f} CPU"


def memory_text(value: Decimal) -> str:
    return f"{value / 2**30:.2f} GiB"
