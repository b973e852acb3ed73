"""RBAC on the rehearsal stack: the scheduler's Role as applied is what the emulator enforces.

The Kubernetes API is the emulator of tests/emulator (NOT Kubernetes); its authorizer reads
the Roles and RoleBindings applied from the rendered overlay on every request. This file runs
last: it breaks the scheduler's Role, then puts the rendered one back.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from .conftest import Stack
from .rehearsal import NAMESPACE

ROLE = "airflow-pod-launcher"
SCHEDULER_ACCOUNT = "system:serviceaccount:airflow:airflow-scheduler"


def role(stack: Stack) -> dict[str, Any]:
    from emulator.store import BY_PLURAL

    return stack.emulator.store.get(BY_PLURAL["rbac.authorization.k8s.io", "roles"], NAMESPACE, ROLE)


def put_role(stack: Stack, obj: dict[str, Any]) -> None:
    from emulator.store import BY_PLURAL

    stack.emulator.store.update(BY_PLURAL["rbac.authorization.k8s.io", "roles"], NAMESPACE, ROLE, obj)


@pytest.mark.parametrize("verb", ["watch"])
def test_a_scheduler_role_without_a_verb_fails_the_rehearsal_with_the_403(stack: Stack, verb: str) -> None:
    """Without `watch` on pods the executor never sees its pods finish: smoke fails, the 403 is shown."""
    applied = role(stack)
    broken = copy.deepcopy(applied)
    for rule in broken["rules"]:
        if rule["resources"] == ["pods"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != verb]
    put_role(stack, broken)
    stack.emulator.end_watches()  # open watches were authorized before: make the executor ask again
    seen_before = len(stack.emulator.forbidden())
    try:
        result = stack.smoke("--dag-id", "failover_long_task", "--conf", '{"seconds": 0}', timeout=90)
    finally:
        put_role(stack, {**applied, "metadata": {**applied["metadata"], "resourceVersion": ""}})
    report = stack.diagnostics()
    print(report)
    assert result.returncode != 0, f"the rehearsal passed although the scheduler may not {verb} pods"
    refused = [a for a in list(stack.emulator.forbidden())[seen_before:] if a.user == SCHEDULER_ACCOUNT]
    assert refused, "the emulator refused nothing to the scheduler"
    wanted = f'User "{SCHEDULER_ACCOUNT}" cannot {verb} resource "pods"'
    assert any(wanted in a.message for a in refused), [a.message for a in refused]
    # The schedulers' own output names the 403 with the verb, the resource and the ServiceAccount.
    logs = "".join(stack.rehearsal.logs(pod, 400) for pod in stack.pods("airflow-scheduler"))
    logs = logs.replace('\\"', '"')
    assert "403" in logs and f'{SCHEDULER_ACCOUNT}" cannot {verb} resource "pods"' in logs, logs[-3000:]
