"""Identity: the pods that call the Kubernetes API get a token to authenticate, and no other pod does.

Who calls the API is read from the manifests: the pods whose ServiceAccount a RoleBinding
grants rights (the scheduler launching worker pods, the api-server reading their logs), and
the scheduler whenever the configured executor is KubernetesExecutor.

Whether a pod gets a token is Kubernetes' rule: the pod's automountServiceAccountToken if set,
else its ServiceAccount's, else true. A projected serviceAccountToken volume is a token too.
"""

from __future__ import annotations

from collections.abc import Iterator

from ... import manifests
from ...manifests import Manifest, Workload, items, mapping
from .. import workloads
from ..problems import Problem
from ..render import Rendered, Target, per_overlay
from ..workloads import Finding

NAME = "identity"
NO_TOKEN = f"{NAME}/no-token"
NEEDLESS_TOKEN = f"{NAME}/needless-token"
RULES = {
    NO_TOKEN: "a pod that calls the Kubernetes API (its ServiceAccount has RBAC rights, or it runs "
    "KubernetesExecutor) but gets no ServiceAccount token, from the pod or its ServiceAccount",
    NEEDLESS_TOKEN: "a pod that never calls the Kubernetes API but gets a ServiceAccount token "
    "(automountServiceAccountToken defaults to true)",
}


def run(target: Target) -> Iterator[Problem]:
    def identity(rendered: Rendered) -> Iterator[Problem]:
        return workloads.as_problems(findings(rendered.objects, rendered.template))

    return per_overlay(target, identity)


def token(workload: Workload, accounts: dict[str, Manifest]) -> tuple[bool, Manifest, str, str]:
    """(gets a token, object and field that decide it, why) for a workload's pods."""
    pod = workload.pod
    field = f"{workload.pod_path}.automountServiceAccountToken"
    projected = any(
        source.get("serviceAccountToken")
        for volume in items(pod.get("volumes"))
        for source in items(mapping(volume.get("projected")).get("sources"))
    )
    if projected:
        return (
            True,
            workload.manifest,
            f"{workload.pod_path}.volumes",
            "a projected serviceAccountToken volume",
        )
    if isinstance(pod.get("automountServiceAccountToken"), bool):
        value = pod["automountServiceAccountToken"]
        return (
            value,
            workload.manifest,
            field,
            f"the pod sets automountServiceAccountToken: {str(value).lower()}",
        )
    name = workloads.service_account(workload)
    account = accounts.get(name)
    if account is not None and isinstance(account.obj.get("automountServiceAccountToken"), bool):
        value = account.obj["automountServiceAccountToken"]
        why = f"its ServiceAccount {name} sets automountServiceAccountToken: {str(value).lower()}"
        return value, account, "automountServiceAccountToken", why
    return (
        True,
        workload.manifest,
        field,
        "automountServiceAccountToken is set neither on the pod nor on its ServiceAccount, and defaults "
        "to true",
    )


def findings(objects: list[Manifest], template: Manifest | None) -> Iterator[Finding]:
    pod_makers = list(manifests.workloads(objects, template))
    accounts = {m.name: m for m in objects if m.kind == "ServiceAccount"}
    bound = workloads.api_callers(objects)
    executors = workloads.executor_workloads(pod_makers, workloads.airflow_config(objects))
    for workload in pod_makers:
        account = workloads.service_account(workload)
        reasons = []
        if account in bound:
            names = ", ".join(binding.ref for binding in bound[account])
            reasons.append(f"{names} grant(s) its ServiceAccount {account} API rights")
        if workload in executors:
            reasons.append("it runs KubernetesExecutor, which launches worker pods through the API")
        gets_token, where, field, why = token(workload, accounts)
        who = "worker pods" if workload.manifest.kind == "Pod" else f"the pods of {workload.manifest.ref}"
        if reasons and not gets_token:
            message = (
                f"{who} call the Kubernetes API ({'; '.join(reasons)}) but get no token to authenticate: "
                f"{why}; set it to true"
            )
            yield NO_TOKEN, where, field, message
        elif not reasons and gets_token:
            message = (
                f"{who} get a Kubernetes API token ({why}) but never call the API: a token in a pod that "
                "does not need it is a credential to steal; set automountServiceAccountToken: false"
            )
            yield NEEDLESS_TOKEN, where, field, message
