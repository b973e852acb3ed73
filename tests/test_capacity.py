"""The budget arithmetic of airflow_ha.capacity, on pod specs and budget files written here.

No Kubernetes API is involved: the sums are computed from objects as kustomize renders them.
The budget check's rules run against the real overlays through tests/lint/fixtures/budget/.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from airflow_ha import capacity
from airflow_ha.lint import gate
from airflow_ha.manifests import Manifest, workloads

MI = 2**20


def container(name: str, cpu: str, memory: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}},
        **extra,
    }


def deployment(
    name: str, replicas: int, *containers: dict[str, Any], strategy: Any = None, init: Any = ()
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "template": {"spec": {"containers": list(containers), "initContainers": list(init)}},
    }
    if strategy is not None:
        spec["strategy"] = strategy
    return {"kind": "Deployment", "metadata": {"name": name}, "spec": spec}


def test_a_pod_counts_the_larger_of_its_containers_and_its_largest_init_container():
    spec = {
        "containers": [container("a", "200m", "256Mi"), container("b", "100m", "128Mi")],
        "initContainers": [container("wait", "500m", "128Mi"), container("copy", "10m", "64Mi")],
    }

    limits = capacity.pod(spec).limits

    assert limits.cpu == Decimal("0.5")  # the init container wins on CPU
    assert limits.memory == 384 * MI  # the containers' sum wins on memory


def test_a_sidecar_init_container_adds_to_the_containers():
    spec = {
        "containers": [container("a", "200m", "256Mi")],
        "initContainers": [container("proxy", "100m", "64Mi", restartPolicy="Always")],
    }

    assert capacity.pod(spec).limits == capacity.Resources(Decimal("0.3"), 320 * MI)


def test_a_missing_limit_is_named_with_its_container():
    spec = {"containers": [{"name": "bare", "resources": {"limits": {"cpu": "1"}}}]}

    assert capacity.pod(spec).unlimited == ("bare: memory",)


@pytest.mark.parametrize(
    ("replicas", "strategy", "expected"),
    [
        (2, None, 1),  # the default 25% of 2, rounded up
        (1, None, 1),
        (8, None, 2),
        (2, {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}, 0),
        (3, {"rollingUpdate": {"maxSurge": "50%"}}, 2),
        (2, {"type": "Recreate"}, 0),
    ],
)
def test_surge_follows_the_deployment_strategy(replicas, strategy, expected):
    obj = deployment("d", replicas, container("c", "1", "1Gi"), strategy=strategy)
    (workload,) = workloads([Manifest("test", obj)])
    assert workload.surge == expected


def test_usage_adds_replicas_and_workers_and_only_the_largest_temporary_extra():
    objects = [
        deployment("api", 2, container("api", "500m", "512Mi")),  # surge 1 x 512Mi
        deployment("big", 1, container("big", "1", "1Gi"), strategy={"type": "Recreate"}),
        {
            "kind": "StatefulSet",
            "metadata": {"name": "db"},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [container("db", "250m", "256Mi")]}}},
        },
        {
            "kind": "Job",
            "metadata": {"name": "migrate"},
            "spec": {"template": {"spec": {"containers": [container("m", "1", "768Mi")]}}},
        },
        {"kind": "ConfigMap", "metadata": {"name": "ignored"}},
    ]
    worker = {"metadata": {"name": "worker"}, "spec": {"containers": [container("base", "400m", "512Mi")]}}

    usage = capacity.usage([Manifest("test", o) for o in objects], Manifest("test", worker), worker_pods=2)

    assert (usage.long_running, usage.worker_pods, usage.extra_pods) == (4, 2, 1)
    assert usage.pods == 7
    # 2 x 0.5 + 1 + 0.25 + 2 x 0.4, plus the larger extra: the Job's 1 CPU, not the surge's 0.5.
    assert usage.limits.cpu == Decimal("4.05")
    # 2 x 512 + 1024 + 256 + 2 x 512, plus the Job's 768 (more than one api pod's 512).
    assert usage.limits.memory == (1024 + 1024 + 256 + 1024 + 768) * MI


def test_no_worker_pods_means_the_template_is_not_counted():
    worker = {"spec": {"containers": [container("base", "1", "1Gi")]}}

    assert capacity.usage([], Manifest("test", worker), worker_pods=0).limits == capacity.Resources()


def test_a_budget_file_reads_every_field(tmp_path: Path):
    path = tmp_path / "capacity.yaml"
    path.write_text('cpu: "4"\nmemory: 8Gi\npods: 10\npod_cpu: 1\npod_memory: 3Gi\nworker_pods: 1\n')

    read = capacity.read_budget(path)

    assert read == capacity.Budget(Decimal(4), Decimal(8 * 2**30), 10, 1, Decimal(1), Decimal(3 * 2**30))


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("memory: 8Gi\npods: 10\nworker_pods: 1\n", "cpu", "cpu is required"),
        (
            'cpu: "4"\nmemory: lots\npods: 10\nworker_pods: 1\n',
            "memory",
            "'lots' is not a Kubernetes quantity",
        ),
        ('cpu: "4"\nmemory: 8Gi\npods: ten\nworker_pods: 1\n', "pods", "pods must be a whole number"),
        ('cpu: "4"\nmemory: 8Gi\npods: 10\nworker_pods: 1\nnodes: 3\n', "nodes", "unknown field 'nodes'"),
        ("- cpu\n", "", "must be a mapping"),
    ],
)
def test_a_bad_budget_file_names_the_field(tmp_path: Path, text: str, field: str, message: str):
    path = tmp_path / "capacity.yaml"
    path.write_text(text)

    with pytest.raises(capacity.BudgetError) as raised:
        capacity.read_budget(path)

    assert raised.value.field == field
    assert message in raised.value.message


def test_every_overlay_of_the_repository_fits_its_budget():
    """The real overlays, rendered by kustomize and summed by the budget check: no problem."""
    report = gate.check(only=["budget"])

    assert [problem.message for problem, _ in report.problems] == []
    assert set(report.overlays) >= {"kind", "okteto"}
