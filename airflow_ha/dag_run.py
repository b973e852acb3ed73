"""A DAG run that succeeded, and how its task instances are told apart.

Smoke makes one from the REST API; worker_pods checks its task instances' pods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Run:
    dag_id: str
    run_id: str
    task_instances: list[dict[str, Any]]


def instance_key(task_instance: dict[str, Any]) -> tuple[str, int, int]:
    """A mapped task has one instance per map index, and each try is a run of its own."""
    return task_instance["task_id"], task_instance["map_index"], task_instance["try_number"]


def describe(key: tuple[str, int, int]) -> str:
    task_id, map_index, try_number = key
    mapped = f" [{map_index}]" if map_index >= 0 else ""
    return f"{task_id!r}{mapped} (try {try_number})"
