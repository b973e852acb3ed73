"""rbac.EXECUTOR_RULES lists exactly the pod calls the installed KubernetesExecutor makes.

Reads the installed cncf-kubernetes provider's source; nothing is faked.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from airflow_ha.lint.checks import rbac

PROVIDER_EXECUTORS = "airflow/providers/cncf/kubernetes/executors"


def test_executor_rules_match_the_provider_code() -> None:
    provider = metadata.distribution("apache-airflow-providers-cncf-kubernetes")
    executors = Path(str(provider.locate_file(PROVIDER_EXECUTORS)))
    source = "\n".join(path.read_text() for path in executors.glob("kubernetes_executor*.py"))
    assert source, f"no executor code in {executors}"
    verbs = {"create": "create", "delete": "delete", "read": "get", "list": "list", "patch": "patch"}
    used: dict[str, set[str]] = {}
    for action, resource in re.findall(r"\.(\w+?)_namespaced_(\w+)\(", source):
        name = "pods/log" if resource == "pod_log" else f"{resource}s"
        used.setdefault(name, set()).add(verbs[action])
    if re.search(r"watcher\.stream\(kube_client\.list_namespaced_pod", source):
        used["pods"].add("watch")

    assert used == {resource: set(verbs) for resource, verbs in rbac.EXECUTOR_RULES.items()}
