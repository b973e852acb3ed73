"""Availability: node drains finish, rollouts proceed, and HA components survive losing a node.

At the replica counts the overlay renders:
  - every PodDisruptionBudget allows at least one eviction, or `kubectl drain` waits forever;
  - a Deployment's rollout never takes more pods down than its budget allows, and can place
    its surge pods (required anti-affinity with no free node and no unavailable pod allowed
    leaves the new pod Pending, and the rollout stuck);
  - a component under a budget (meant to be HA) runs at least two replicas, spread over
    nodes, on a cluster with at least two nodes that take pods.

Preferred anti-affinity and ScheduleAnyway spread constraints count as a spread: the
scheduler honours them on a cluster with room, though it does not promise to.
The overlay's cluster is kube/<overlay>-cluster.yaml when there is one (a kind config); the
node rules are skipped for an overlay whose cluster the repository does not describe.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from ... import manifests
from ...manifests import Manifest, Workload, items, mapping
from .. import netpol, workloads
from ..problems import Problem
from ..render import Rendered, Target, per_overlay
from ..workloads import Finding

NAME = "availability"
DRAIN_BLOCKED = f"{NAME}/drain-blocked"
ROLLOUT_EXCEEDS_BUDGET = f"{NAME}/rollout-exceeds-budget"
ROLLOUT_STUCK = f"{NAME}/rollout-stuck"
NODE_LOSS = f"{NAME}/node-loss"
RULES = {
    DRAIN_BLOCKED: "a PodDisruptionBudget that allows no eviction at the rendered replica count: "
    "`kubectl drain` hangs",
    ROLLOUT_EXCEEDS_BUDGET: "a Deployment whose rollout takes down more pods than its PodDisruptionBudget "
    "allows (Recreate, or maxUnavailable above the budget)",
    ROLLOUT_STUCK: "a Deployment whose pods or surge pods cannot all be placed under its required "
    "anti-affinity on the overlay's nodes",
    NODE_LOSS: "a component under a PodDisruptionBudget that loses every replica with one node: fewer than "
    "2 replicas, no spread over nodes, or a cluster with fewer than 2 nodes that take pods",
}

HOSTNAME = "kubernetes.io/hostname"


def run(target: Target) -> Iterator[Problem]:
    def availability(rendered: Rendered) -> Iterator[Problem]:
        cluster = cluster_nodes(target.root, rendered.overlay)
        return workloads.as_problems(findings(rendered.objects, cluster))

    return per_overlay(target, availability)


def cluster_nodes(root: Path, overlay: str) -> tuple[Manifest, int] | None:
    """The overlay's kind cluster config and how many of its nodes take pods, if the repository has one.

    kind keeps the control-plane taint when a cluster has workers, so only workers take pods then.
    """
    path = root / "kube" / f"{overlay}-cluster.yaml"
    try:
        config = yaml.safe_load(path.read_text()) if path.is_file() else None
    except yaml.YAMLError:
        return None  # yamllint names the line
    if not isinstance(config, dict) or config.get("kind") != "Cluster":
        return None
    nodes = config.get("nodes") or [{"role": "control-plane"}]
    workers = sum(1 for node in nodes if mapping(node).get("role") == "worker")
    # Named like an object in reports: Cluster/<its name, or the overlay's>.
    named = {**config, "metadata": {"name": config.get("name") or overlay}}
    manifest = Manifest(f"kube/{overlay}-cluster.yaml", named)
    return manifest, workers or len(nodes)


def allowed_disruptions(budget: Manifest, expected: int) -> int | None:
    """Evictions the budget allows with every pod healthy (the disruption controller's arithmetic)."""
    spec = mapping(budget.obj.get("spec"))
    if "maxUnavailable" in spec:
        value = manifests.scaled(spec["maxUnavailable"], expected, round_up=True)
        return None if value is None else min(value, expected)
    if "minAvailable" in spec:
        value = manifests.scaled(spec["minAvailable"], expected, round_up=True)
        return None if value is None else expected - value
    return None


def _own_pods_term(workload: Workload, term: dict[str, Any]) -> bool:
    return (
        term.get("topologyKey") == HOSTNAME
        and netpol.selector_matches(term.get("labelSelector"), workload.labels)
        and bool(term.get("labelSelector"))
    )


def spread(workload: Workload) -> str | None:
    """'required' or 'preferred' if the pods keep apart per node, else None."""
    affinity = mapping(mapping(workload.pod.get("affinity")).get("podAntiAffinity"))
    if any(
        _own_pods_term(workload, t)
        for t in items(affinity.get("requiredDuringSchedulingIgnoredDuringExecution"))
    ):
        return "required"
    constraints = [
        c for c in items(workload.pod.get("topologySpreadConstraints")) if _own_pods_term(workload, c)
    ]
    if any(c.get("whenUnsatisfiable") == "DoNotSchedule" and c.get("maxSkew") == 1 for c in constraints):
        return "spread"
    preferred = items(affinity.get("preferredDuringSchedulingIgnoredDuringExecution"))
    if constraints or any(_own_pods_term(workload, mapping(t.get("podAffinityTerm"))) for t in preferred):
        return "preferred"
    return None


def findings(objects: list[Manifest], cluster: tuple[Manifest, int] | None) -> Iterator[Finding]:
    pod_makers = [
        w
        for w in manifests.workloads(objects)
        if w.manifest.kind in {"Deployment", "StatefulSet", "ReplicaSet"}
    ]
    nodes = cluster[1] if cluster else None
    for budget in (m for m in objects if m.kind == "PodDisruptionBudget"):
        selector = mapping(budget.obj.get("spec")).get("selector")
        covered = [w for w in pod_makers if selector and netpol.selector_matches(selector, w.labels)]
        if not covered:
            continue  # wiring reports a budget that selects nothing
        expected = sum(w.replicas for w in covered)
        allowed = allowed_disruptions(budget, expected)
        spec = mapping(budget.obj.get("spec"))
        field = "spec.maxUnavailable" if "maxUnavailable" in spec else "spec.minAvailable"
        names = ", ".join(w.manifest.ref for w in covered)
        if allowed is not None and allowed <= 0:
            message = (
                f"allows {allowed} evictions of the {expected} pod(s) of {names}: `kubectl drain` of their "
                "node would wait forever; allow at least one (maxUnavailable: 1), or add replicas"
            )
            yield DRAIN_BLOCKED, budget, field, message
        for workload in covered:
            yield from _rollout(workload, budget, allowed, nodes)
            yield from _node_loss(workload, budget, cluster)


def _rollout(
    workload: Workload, budget: Manifest, allowed: int | None, nodes: int | None
) -> Iterator[Finding]:
    if workload.manifest.kind != "Deployment":
        return
    manifest = workload.manifest
    resolved = workload.rolling_update()
    replicas = workload.replicas
    if resolved is None:
        message = (
            f"strategy Recreate takes all {replicas} pods down at once, but {budget.ref} allows "
            f"{allowed} unavailable: use RollingUpdate"
        )
        yield ROLLOUT_EXCEEDS_BUDGET, manifest, "spec.strategy.type", message
        return
    surge, unavailable = resolved
    if allowed is not None and allowed > 0 and unavailable > allowed:
        message = (
            f"a rollout takes up to {unavailable} pods down (maxUnavailable at {replicas} replicas), "
            f"more than the {allowed} that {budget.ref} allows: lower maxUnavailable, or raise maxSurge"
        )
        yield ROLLOUT_EXCEEDS_BUDGET, manifest, "spec.strategy.rollingUpdate.maxUnavailable", message
    if nodes is None or spread(workload) != "required":
        return
    affinity = "spec.template.spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    if replicas > nodes:
        message = (
            f"required anti-affinity puts one pod per node, and the cluster has {nodes} node(s) that take "
            f"pods for {replicas} replicas: the rest stay Pending"
        )
        yield ROLLOUT_STUCK, manifest, affinity, message
    elif unavailable == 0 and replicas + surge > nodes:
        message = (
            f"a rollout adds {surge} pod(s) before taking one down (maxUnavailable 0), but required "
            f"anti-affinity leaves no free node among {nodes}: the new pod stays Pending and the rollout "
            "never ends; set maxUnavailable: 1 or use preferred anti-affinity"
        )
        yield ROLLOUT_STUCK, manifest, "spec.strategy.rollingUpdate", message


def _node_loss(
    workload: Workload, budget: Manifest, cluster: tuple[Manifest, int] | None
) -> Iterator[Finding]:
    manifest = workload.manifest
    replicas = workload.replicas
    meant = f"{budget.ref} marks it as highly available"
    if replicas < 2:
        message = f"{replicas} replica: losing its node loses the component, but {meant}; run at least 2"
        yield NODE_LOSS, manifest, "spec.replicas", message
        return
    if spread(workload) is None:
        message = (
            f"nothing keeps its {replicas} replicas on different nodes, so one node can hold them all "
            f"({meant}): add pod anti-affinity or a topology spread on {HOSTNAME}"
        )
        yield NODE_LOSS, manifest, "spec.template.spec.affinity", message
    if cluster is not None and cluster[1] < 2:
        config, nodes = cluster
        message = (
            f"the cluster has {nodes} node(s) that take pods, so losing one loses {manifest.ref} ({meant}): "
            "add a worker node"
        )
        yield NODE_LOSS, config, "nodes", message
