"""The scheduler's Role grants exactly what KubernetesExecutor uses, the api-server's only reads
pods and their logs, and no one else gets API rights. No ClusterRole."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ...manifests import Manifest
from ..fields import pod
from ..problems import Problem, at
from ..render import Rendered, Target, per_overlay

NAME = "rbac"
RULES = {
    "rbac/cluster-role": "a ClusterRole or ClusterRoleBinding: a Role in the namespace is enough",
    "rbac/binds-cluster-role": "a RoleBinding whose roleRef is a ClusterRole",
    "rbac/missing-role": "a RoleBinding to a Role that does not exist",
    "rbac/missing-service-account": "a RoleBinding to a ServiceAccount that does not exist",
    "rbac/no-scheduler": "no scheduler Deployment whose rights to check",
    "rbac/missing-verb": "a verb on pods or pods/log that KubernetesExecutor uses and the scheduler may not",
    "rbac/extra-verb": "a verb the scheduler or the api-server may use and never does",
    "rbac/needless-grant": "a RoleBinding that grants API rights to a ServiceAccount which needs none",
}

# The Kubernetes API calls KubernetesExecutor makes in its own namespace, read from
# airflow/providers/cncf/kubernetes/executors/ (cncf-kubernetes 10.25.0):
#   create_namespaced_pod                       pods      create  launch a worker pod
#   delete_namespaced_pod                       pods      delete  delete_worker_pods
#   read_namespaced_pod                         pods      get     find the task of an adopted pod
#   list_namespaced_pod, DynamicClient.get      pods      list    adopt or clear pods, find a task's pod
#   watch.Watch().stream(list_namespaced_pod)   pods      watch   the pod watcher
#   patch_namespaced_pod                        pods      patch   adopt pods by relabelling them
#   read_namespaced_pod_log                     pods/log  get     the log of a running task
# list_pod_for_all_namespaces is for multi_namespace_mode only, which needs a ClusterRole.
# tests/lint/test_executor_rules.py reads the provider's code to keep this table true.
EXECUTOR_RULES: dict[str, frozenset[str]] = {
    "pods": frozenset({"create", "delete", "get", "list", "patch", "watch"}),
    "pods/log": frozenset({"get"}),
}
# The api-server shows the logs of running task pods: it reads pods and logs, nothing else.
LOG_READER_RESOURCES = frozenset({"pods", "pods/log"})
READ_VERBS = frozenset({"get", "list", "watch"})


def run(target: Target) -> Iterator[Problem]:
    return per_overlay(target, _rbac)


def _rbac(rendered: Rendered) -> Iterator[Problem]:
    for m in rendered.objects:
        if m.kind in {"ClusterRole", "ClusterRoleBinding"}:
            message = (
                f"no {m.kind}: the executor launches pods in its own namespace (multi_namespace_mode is "
                "off), so a Role and a RoleBinding are enough"
            )
            yield at("rbac/cluster-role", m, "kind", message)
        elif m.kind == "RoleBinding" and (m.obj.get("roleRef") or {}).get("kind") == "ClusterRole":
            message = "binds a ClusterRole: bind a Role of this namespace instead"
            yield at("rbac/binds-cluster-role", m, "roleRef.kind", message)
    roles = {m.name: m for m in rendered.objects if m.kind == "Role"}
    accounts = {m.name for m in rendered.objects if m.kind == "ServiceAccount"} | {"default"}
    bound: dict[str, list[Manifest]] = {}  # ServiceAccount -> the Roles bound to it
    dangling = False  # a RoleBinding refers to nothing: its consequences are not reported apart
    for binding in (m for m in rendered.objects if m.kind == "RoleBinding"):
        role_ref = binding.obj.get("roleRef") or {}
        role = roles.get(str(role_ref.get("name")))
        if role is None and role_ref.get("kind") == "Role":
            dangling = True
            message = f"Role {role_ref.get('name')!r} does not exist (there are: {', '.join(sorted(roles))})"
            yield at("rbac/missing-role", binding, "roleRef.name", message)
        for index, subject in enumerate(binding.obj.get("subjects") or []):
            if subject.get("kind") != "ServiceAccount":
                continue
            if subject.get("name") not in accounts:
                dangling = True
                message = (
                    f"ServiceAccount {subject.get('name')!r} does not exist "
                    f"(there are: {', '.join(sorted(accounts))})"
                )
                yield at("rbac/missing-service-account", binding, f"subjects[{index}].name", message)
            elif role is not None:
                bound.setdefault(subject["name"], []).append(role)
    if rendered.component("scheduler") is None:
        message = "no scheduler Deployment (label app.kubernetes.io/component: scheduler)"
        yield Problem("rbac/no-scheduler", "kube/base", message)
    talkers = set()  # the ServiceAccounts that may talk to the Kubernetes API
    for component in ("scheduler", "api-server"):
        workload = rendered.component(component)
        if workload is None:
            continue
        account = pod(workload).get("serviceAccountName") or "default"
        talkers.add(account)
        roles_bound = bound.get(account, [])
        granted = _granted(roles_bound)
        where = roles_bound[0] if roles_bound else workload
        field = "rules" if roles_bound else "spec.template.spec.serviceAccountName"
        who = f"ServiceAccount {account} of {workload.ref}"
        if component == "scheduler":
            for resource, verbs in EXECUTOR_RULES.items():
                covered = granted.get(resource, set()) | granted.get("*", set())
                lacking = "" if "*" in covered else ", ".join(sorted(verbs - covered))
                if lacking and not (dangling and not roles_bound):
                    message = f"{who} may not {lacking} {resource}, which KubernetesExecutor does: grant it"
                    yield at("rbac/missing-verb", where, field, message)
            allowed, needs = EXECUTOR_RULES, "exactly what KubernetesExecutor uses"
        else:
            allowed = dict.fromkeys(LOG_READER_RESOURCES, READ_VERBS)
            needs = "to read pods and their logs"
        for resource, granted_verbs in sorted(granted.items()):
            extra = ", ".join(sorted(granted_verbs - allowed.get(resource, frozenset())))
            if extra:
                message = f"{who} may {extra} {resource}, which it never does: remove it (it needs {needs})"
                yield at("rbac/extra-verb", where, field, message)
    for binding in (m for m in rendered.objects if m.kind == "RoleBinding"):
        for index, subject in enumerate(binding.obj.get("subjects") or []):
            name = subject.get("name")
            if subject.get("kind") == "ServiceAccount" and name in accounts and name not in talkers:
                message = (
                    f"grants API rights to ServiceAccount {name}, which needs none: only the scheduler and "
                    "the api-server talk to the Kubernetes API"
                )
                yield at("rbac/needless-grant", binding, f"subjects[{index}]", message)


def _granted(roles: Iterable[Manifest]) -> dict[str, set[str]]:
    """Verbs per core-group resource (other groups named with theirs); '*' stays '*'."""
    granted: dict[str, set[str]] = {}
    for role in roles:
        for rule in role.obj.get("rules") or []:
            groups = rule.get("apiGroups") or []
            for resource in rule.get("resources") or []:
                name = resource if groups == [""] else f"{resource} (apiGroups {', '.join(groups) or 'none'})"
                granted.setdefault(name, set()).update(rule.get("verbs") or [])
    return granted
