"""Each overlay's pods fit the budget it declares in kube/overlays/<overlay>/budget.yaml.

The sums are airflow_ha.budget's: replicas of every Deployment and StatefulSet, the
budget's worker pods shaped by the worker pod template, and the most that a deploy adds
for a while (the migration Job's pods, or one Deployment's rolling-update surge), each pod
counted as a ResourceQuota counts it. A problem names the overlay and the figures.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

from ... import capacity
from ...manifests import Manifest
from ..fields import pods
from ..problems import Problem, at
from ..render import Rendered, Target, relative

NAME = "budget"
RULES = {
    "budget/missing": "an overlay without a budget.yaml",
    "budget/invalid": "a budget.yaml with an unknown field or a value that is no quantity or count",
    "budget/no-limit": "a container without a CPU or memory limit, so its pod cannot be counted",
    "budget/cpu": "CPU limits that add up to more than the overlay's budget",
    "budget/memory": "memory limits that add up to more than the overlay's budget",
    "budget/pods": "more pods at once than the overlay's budget",
    "budget/pod-cpu": "a pod whose CPU limits exceed the overlay's per-pod cap",
    "budget/pod-memory": "a pod whose memory limits exceed the overlay's per-pod cap",
}
FIX = "lower the limits or replicas in the overlay, or raise the budget if the cluster gives more"


def run(target: Target) -> Iterator[Problem]:
    directories = {path.name: path for path in target.overlay_dirs}
    for rendered in target.rendered:
        for problem in _budget(target, rendered, directories[rendered.overlay] / capacity.BUDGET_FILE):
            yield replace(problem, overlay=rendered.overlay)


def _budget(target: Target, rendered: Rendered, path: Path) -> Iterator[Problem]:
    file = relative(target.root, path)
    overlay = rendered.overlay
    if not path.is_file():
        message = (
            f"overlay {overlay} declares no budget: write {file} with cpu, memory, pods and worker_pods "
            "(the README's budget section shows the format)"
        )
        yield Problem("budget/missing", file, message)
        return
    try:
        declared = capacity.read_budget(path)
    except capacity.BudgetError as error:
        yield Problem("budget/invalid", file, f"overlay {overlay}: {error.message}", field=error.field)
        return

    counted = [m for m in rendered.objects if m.kind in capacity.COUNTED_KINDS]
    template = rendered.template
    for manifest in [*counted, *([template] if template and declared.worker_pods else [])]:
        yield from _unlimited(manifest)
        yield from _pod_caps(overlay, manifest, declared)

    usage = capacity.usage(counted, template, declared.worker_pods)
    pods_text = (
        f"{usage.long_running} long-running + {usage.worker_pods} worker + {usage.extra_pods} during a deploy"
        + (f" ({usage.extra_from})" if usage.extra_from else "")
    )
    if usage.limits.cpu > declared.cpu:
        message = (
            f"overlay {overlay}: CPU limits add up to {capacity.cpu_text(usage.limits.cpu)} (requests "
            f"{capacity.cpu_text(usage.requests.cpu)}; pods: {pods_text}), over its budget of "
            f"{capacity.cpu_text(declared.cpu)}: {_largest(usage, 'cpu')}; {FIX}"
        )
        yield Problem("budget/cpu", file, message, field="cpu")
    if usage.limits.memory > declared.memory:
        message = (
            f"overlay {overlay}: memory limits add up to {capacity.memory_text(usage.limits.memory)} "
            f"(requests {capacity.memory_text(usage.requests.memory)}; pods: {pods_text}), over its "
            f"budget of {capacity.memory_text(declared.memory)}: {_largest(usage, 'memory')}; {FIX}"
        )
        yield Problem("budget/memory", file, message, field="memory")
    if usage.pods > declared.pods:
        message = (
            f"overlay {overlay}: {usage.pods} pods at once ({pods_text}), over its budget of {declared.pods}"
        )
        yield Problem("budget/pods", file, f"{message}; {FIX}", field="pods")


def _unlimited(manifest: Manifest) -> Iterator[Problem]:
    for path, spec, _ in pods(manifest):
        for missing in capacity.pod(spec).unlimited:
            container, _, resource = missing.partition(": ")
            message = (
                f"container {container} sets no {resource} limit, so the budget cannot count its pod: set one"
            )
            yield at("budget/no-limit", manifest, f"{path}.containers", message)


def _pod_caps(overlay: str, manifest: Manifest, declared: capacity.Budget) -> Iterator[Problem]:
    caps: list[tuple[str, str, Decimal | None]] = [
        ("budget/pod-cpu", "cpu", declared.pod_cpu),
        ("budget/pod-memory", "memory", declared.pod_memory),
    ]
    for path, spec, _ in pods(manifest):
        limits = capacity.pod(spec).limits
        for rule, resource, cap in caps:
            if cap is not None and limits.get(resource) > cap:
                show = capacity.cpu_text if resource == "cpu" else capacity.memory_text
                message = (
                    f"overlay {overlay}: this pod's {resource} limits come to {show(limits.get(resource))}, "
                    f"over the per-pod cap of {show(cap)} (pod_{resource} in budget.yaml): lower them"
                )
                yield at(rule, manifest, f"{path}.containers", message)


def _largest(usage: capacity.Usage, resource: str) -> str:
    """The three biggest pods by this resource, so the message says where to cut."""
    show = capacity.cpu_text if resource == "cpu" else capacity.memory_text
    ranked = sorted(usage.shapes.items(), key=lambda item: item[1].limits.get(resource), reverse=True)
    return "largest pods " + ", ".join(
        f"{ref} {show(shape.limits.get(resource))}" for ref, shape in ranked[:3]
    )
