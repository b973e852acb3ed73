"""The one registry of the lint gate: its checks, in the order they start.

Adding a check is a module in checks/ (NAME, RULES, run), one line here, and a fixture per rule
under tests/lint/fixtures/<check>/. kustomize comes first: rendering happens before every
check, and it reports what went wrong there. The subprocesses (airflow, checkov) start next,
so that they run while the threads of the quick checks work.
"""

from __future__ import annotations

from types import ModuleType

from .checks import (
    admission,
    airflow,
    availability,
    budget,
    checkov,
    identity,
    kubernetes_validate,
    kustomize,
    rbac,
    reachability,
    schemas,
    wiring,
    yamllint,
)

CHECKS: tuple[ModuleType, ...] = (
    kustomize,
    airflow,
    checkov,
    kubernetes_validate,
    schemas,
    wiring,
    rbac,
    reachability,
    admission,
    availability,
    identity,
    budget,
    yamllint,
)


def names() -> list[str]:
    return [check.NAME for check in CHECKS]


def rules() -> dict[str, str]:
    """Every rule ID of every check, with the line that says what it catches."""
    return {rule: line for check in CHECKS for rule, line in check.RULES.items()}
