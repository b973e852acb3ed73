"""`invoke deploy` and `invoke teardown` of the okteto overlay with rights that stop at one
namespace, as Okteto gives its developers, run as the real CLI against the REAL Kubernetes
API server (tests/controlplane: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler, built from source), with its audit log for what each run asked.

RBAC, escalation prevention, SelfSubjectAccessReview, server-side apply, admission, Job
immutability and garbage collection are Kubernetes' own. There are no nodes, so pods are
created and admitted but never run, and deploy runs with --no-wait: this proves deploy's API
calls, its rights, idempotence, teardown and the one-line 403s; it does NOT prove rollouts,
probes, storage or NetworkPolicy (tests/e2e proves those on kind).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane.cli import WRITES, Run, invoke
from controlplane.cli import deploy_args as deploy_args_of
from controlplane.plane import ControlPlane

from airflow_ha import PART_OF, PART_OF_LABEL, generated_secrets, manifests

NAMESPACE = "team-a"  # the developer's namespace: deploy, redeploy, teardown
# Namespaces whose Role lacks one right: (verb, resource) removed, and the first line deploy
# must stop at. A Role may grant only rights its writer holds, so `get pods/log`, which the
# scheduler's Role grants, is needed to deploy, though deploy itself never reads a log.
SHORT_OF_ONE_RIGHT = {
    "team-b": (
        ("patch", "configmaps"),
        "cannot patch ConfigMap/{config_map} in namespace 'team-b' (kube context 'okteto-team-b'): "
        "it lacks the RBAC right \"patch configmaps\" in namespace 'team-b'",
    ),
    "team-c": (
        ("get", "pods/log"),
        "cannot apply Role/{role} in namespace 'team-c' (kube context 'okteto-team-c'): a Role may grant "
        "only rights its writer holds, and it lacks the RBAC right \"get pods/log\" in namespace 'team-c'",
    ),
}
# A namespace whose Role lacks `get pods/log` but may escalate and bind Roles: Kubernetes then
# lets it write Roles granting rights it does not hold, so deploy must not refuse.
ESCALATING = "team-d"
# A namespace an admin deployed into, whose developer lacks `get pods/log`: re-applying the
# unchanged Roles escalates nothing, so the developer's redeploy must go through.
REDEPLOYED = "team-e"
ADMIN_CONTEXT = "okteto-admin"
TAG = "3.3.2-namespaced"
NEW_TAG = "3.3.2-namespaced-2"  # a new image: the immutable Job is recreated, the Deployments roll
EVERY_VERB = ["get", "list", "watch", "create", "patch", "update", "delete"]
# What an Okteto developer may do in their own namespace (the ClusterRole `admin`, bound by a
# RoleBinding there), for the kinds deploy writes or lists: everything namespaced, nothing
# cluster-scoped. SelfSubjectAccessReview needs no rule: Kubernetes allows it to everyone.
DEVELOPER_RULES: list[dict[str, list[str]]] = [
    {
        "apiGroups": [""],
        "resources": [
            "configmaps",
            "secrets",
            "services",
            "serviceaccounts",
            "persistentvolumeclaims",
            "pods",
            "events",
        ],
        "verbs": EVERY_VERB,
    },
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["get", "create"]},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"],
        "verbs": EVERY_VERB,
    },
    {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": EVERY_VERB},
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": EVERY_VERB},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies", "ingresses"], "verbs": EVERY_VERB},
    {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": EVERY_VERB},
    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": EVERY_VERB},
]
# Requests of any user that are not about the namespace's objects.
NOT_IN_A_NAMESPACE = frozenset({"", "selfsubjectaccessreviews"})  # discovery, access reviews


def context_of(namespace: str) -> str:
    return f"okteto-{namespace}"


def developer_of(namespace: str) -> str:
    return f"system:serviceaccount:{namespace}:developer"


def without(rules: list[dict[str, list[str]]], verb: str, resource: str) -> list[dict[str, list[str]]]:
    """The rules with one right removed."""
    changed = []
    for rule in rules:
        if resource in rule["resources"] and verb in rule["verbs"]:
            others = [r for r in rule["resources"] if r != resource]
            changed.append(
                {**rule, "resources": [resource], "verbs": [v for v in rule["verbs"] if v != verb]}
            )
            if others:
                changed.append({**rule, "resources": others})
        else:
            changed.append(rule)
    return changed


def give_namespace(plane: ControlPlane, namespace: str, rules: list[dict[str, list[str]]]) -> str:
    """What Okteto does for a developer: the namespace, a Role there bound to them; their token."""
    rbac = "rbac.authorization.k8s.io/v1"
    plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    plane.apply(
        *(
            {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
            for obj in (
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "developer"}},
                {"apiVersion": rbac, "kind": "Role", "metadata": {"name": "developer"}, "rules": rules},
                {
                    "apiVersion": rbac,
                    "kind": "RoleBinding",
                    "metadata": {"name": "developer"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "developer"},
                    "subjects": [{"kind": "ServiceAccount", "name": "developer", "namespace": namespace}],
                },
            )
        )
    )
    return plane.token_for(namespace, "developer")


def write_kubeconfig(path: Path, plane: ControlPlane, tokens: dict[str, str]) -> Path:
    """One context per namespace, each with that namespace's developer token; and the admin's."""
    cluster = {"server": plane.url, "certificate-authority": str(plane.pki / "ca.crt")}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": ns, "user": {"token": token}} for ns, token in tokens.items()]
        + [{"name": "admin", "user": plane.admin_credentials()}],
        "contexts": [
            {"name": context_of(ns), "context": {"cluster": "test", "user": ns, "namespace": ns}}
            for ns in tokens
        ]
        + [{"name": ADMIN_CONTEXT, "context": {"cluster": "test", "user": "admin"}}],
        "current-context": context_of(NAMESPACE),
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


# What deploy writes, and the Secrets it generates: the kinds `labelled` lists.
KINDS = (
    "serviceaccounts,roles.rbac.authorization.k8s.io,rolebindings.rbac.authorization.k8s.io,configmaps,"
    "secrets,services,persistentvolumeclaims,deployments.apps,statefulsets.apps,"
    "poddisruptionbudgets.policy,jobs.batch,networkpolicies.networking.k8s.io"
)


@dataclass
class Cluster:
    plane: ControlPlane
    kubeconfig: Path

    def invoke(self, *args: str) -> Run:
        return invoke(self.plane, self.kubeconfig, *args)

    def labelled(self, namespace: str) -> dict[str, dict[str, Any]]:
        """Every object of the kinds deploy writes with the project label in the namespace, by Kind/name."""
        listed = self.plane.kubectl(
            "get", KINDS, "-n", namespace, "-l", f"{PART_OF_LABEL}={PART_OF}", "-o", "json"
        )
        return {f"{obj['kind']}/{obj['metadata']['name']}": obj for obj in json.loads(listed.stdout)["items"]}

    def versions(self, namespace: str) -> dict[str, str]:
        return {ref: obj["metadata"]["resourceVersion"] for ref, obj in self.labelled(namespace).items()}

    def settled_versions(self, namespace: str, quiet: int = 3) -> dict[str, str]:
        """The versions once the controllers have made what they make from deploy's objects
        (the database's claim among them) and stopped writing status: the same ``quiet``
        reads in a row, a second apart. Pods never start here, so nothing moves after that."""
        seen = [self.versions(namespace)]
        for _ in range(60):
            time.sleep(1)
            seen.append(self.versions(namespace))
            if len(seen) > quiet and all(versions == seen[-1] for versions in seen[-quiet - 1 :]):
                return seen[-1]
        raise AssertionError(f"the objects in {namespace} kept changing: {seen[-1]}")


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    tokens = {NAMESPACE: give_namespace(control_plane, NAMESPACE, DEVELOPER_RULES)}
    for namespace, ((verb, resource), _) in SHORT_OF_ONE_RIGHT.items():
        tokens[namespace] = give_namespace(control_plane, namespace, without(DEVELOPER_RULES, verb, resource))
    escalating = without(DEVELOPER_RULES, "get", "pods/log")
    escalating.append(
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["escalate", "bind"]}
    )
    tokens[ESCALATING] = give_namespace(control_plane, ESCALATING, escalating)
    tokens[REDEPLOYED] = give_namespace(
        control_plane, REDEPLOYED, without(DEVELOPER_RULES, "get", "pods/log")
    )
    kubeconfig = write_kubeconfig(tmp_path_factory.mktemp("okteto") / "kubeconfig", control_plane, tokens)
    return Cluster(control_plane, kubeconfig)


def deploy_args(namespace: str, context: str = "", tag: str = TAG) -> tuple[str, ...]:
    return deploy_args_of("okteto", namespace, context or context_of(namespace), tag)


def teardown_args(*extra: str) -> tuple[str, ...]:
    return (
        "teardown",
        "--overlay",
        "okteto",
        "--context",
        context_of(NAMESPACE),
        "--namespace",
        NAMESPACE,
        *extra,
    )


@dataclass
class Lifecycle:
    rendered: list[manifests.Manifest]
    first: Run
    after_first: dict[str, str]
    before_second: dict[str, str]
    second: Run
    after_second: dict[str, str]
    new_image: Run
    teardown: Run
    after_teardown: dict[str, dict[str, Any]]
    purge: Run
    after_purge: dict[str, dict[str, Any]]

    @property
    def runs(self) -> list[Run]:
        return [self.first, self.second, self.new_image, self.teardown, self.purge]


@pytest.fixture(scope="module")
def lifecycle(cluster: Cluster) -> Lifecycle:
    """deploy, deploy again, teardown, teardown --purge: each step once, for the tests below."""
    rendered = manifests.render("okteto", namespace=NAMESPACE, image=f"airflow-ha:{TAG}")
    first = cluster.invoke(*deploy_args(NAMESPACE))
    after_first = before_second = cluster.settled_versions(NAMESPACE)
    second = cluster.invoke(*deploy_args(NAMESPACE))
    after_second = cluster.versions(NAMESPACE)
    new_image = cluster.invoke(*deploy_args(NAMESPACE, tag=NEW_TAG))
    teardown = cluster.invoke(*teardown_args())
    after_teardown = cluster.labelled(NAMESPACE)
    purge = cluster.invoke(*teardown_args("--purge"))
    return Lifecycle(
        rendered,
        first,
        after_first,
        before_second,
        second,
        after_second,
        new_image,
        teardown,
        after_teardown,
        purge,
        cluster.labelled(NAMESPACE),
    )


def refs(rendered: list[manifests.Manifest]) -> set[str]:
    return {m.ref for m in rendered}


def claims_of_stateful_sets(rendered: list[manifests.Manifest]) -> set[str]:
    """The PersistentVolumeClaims the StatefulSet controller makes from the claim templates."""
    return {
        f"PersistentVolumeClaim/{claim['metadata']['name']}-{m.name}-{ordinal}"
        for m in rendered
        if m.kind == "StatefulSet"
        for claim in m.obj["spec"].get("volumeClaimTemplates") or []
        for ordinal in range(m.obj["spec"].get("replicas", 1))
    }


def test_deploy_applies_every_object_of_the_overlay(lifecycle: Lifecycle) -> None:
    first = lifecycle.first

    assert first.returncode == 0, first.output
    assert re.search(r"docker daemon\s+│\s+absent", first.stdout), first.output  # and not needed
    generated = {f"Secret/{name}" for name in generated_secrets.GENERATED_SECRETS}
    assert set(lifecycle.after_first) == refs(lifecycle.rendered) | generated | claims_of_stateful_sets(
        lifecycle.rendered
    )
    assert f"{len(lifecycle.rendered)} created" in first.stdout, first.output
    writes = [
        a
        for a in first.audit
        if a.user == developer_of(NAMESPACE)
        and a.verb in ("create", "patch")
        and a.resource != "selfsubjectaccessreviews"
    ]
    assert writes and all(a.code in (200, 201) for a in writes), [a for a in writes if a.code >= 300]
    # Every object, and a pod of each template, was tried before the first real write.
    first_real = next(i for i, a in enumerate(writes) if not a.dry_run)
    tried = [a for a in writes[:first_real] if a.dry_run]
    templates = sum(m.kind in ("Deployment", "StatefulSet", "Job") for m in lifecycle.rendered) + 1  # workers
    assert len([a for a in tried if a.resource == "pods"]) == templates
    # A RoleBinding is not tried before its new Role exists: the server resolves the Role.
    bindings = sum(m.kind == "RoleBinding" for m in lifecycle.rendered)
    assert len([a for a in tried if a.resource != "pods"]) == len(lifecycle.rendered) - bindings


def test_a_second_deploy_changes_nothing(lifecycle: Lifecycle) -> None:
    second = lifecycle.second

    assert second.returncode == 0, second.output
    assert f"server-side applied as field manager 'airflow-ha': {len(lifecycle.rendered)} unchanged" in (
        second.stdout
    ), second.output
    for action in ("created", "configured", "recreated", "pruned"):
        assert f" {action}" not in second.stdout, second.output
    assert "generated Secrets exist; kept as they are" in second.stdout
    assert lifecycle.after_second == lifecycle.before_second  # no resourceVersion moved
    assert second.stored_by(developer_of(NAMESPACE)) == []  # the dry run found nothing to change
    # No template changes, so no pod is tried: a namespace at its pod quota must not refuse it.
    assert [a for a in second.audit if a.resource == "pods" and a.dry_run] == []


def test_a_new_image_recreates_the_migration_job_and_rolls_the_components(lifecycle: Lifecycle) -> None:
    """A Job's template is immutable (Kubernetes refuses the change with 422), so deploy deletes
    and recreates it; the Deployments are configured in place."""
    run = lifecycle.new_image
    assert run.returncode == 0, run.output
    assert re.search(r"migration: Job/airflow-migrate recreated", run.stdout), run.output
    for manifest in lifecycle.rendered:
        if manifest.kind == "Deployment":
            assert f"{manifest.ref} configured" in run.stdout, run.output


def test_teardown_keeps_only_the_data_and_purge_leaves_nothing(lifecycle: Lifecycle) -> None:
    assert lifecycle.teardown.returncode == 0, lifecycle.teardown.output
    data = {m.ref for m in lifecycle.rendered if m.kind == "PersistentVolumeClaim"}
    data |= claims_of_stateful_sets(lifecycle.rendered)  # the database's own volume
    data |= {f"Secret/{name}" for name in generated_secrets.GENERATED_SECRETS}
    assert set(lifecycle.after_teardown) == data
    assert "kept (data):" in lifecycle.teardown.stdout

    assert lifecycle.purge.returncode == 0, lifecycle.purge.output
    assert lifecycle.after_purge == {}


def test_no_request_leaves_the_namespace(lifecycle: Lifecycle) -> None:
    """The token has no right at cluster scope: nothing may be listed or read there."""
    for run in lifecycle.runs:
        mine = [a for a in run.audit if a.user == developer_of(NAMESPACE)]
        assert mine, run.output
        outside = [a for a in mine if a.resource not in NOT_IN_A_NAMESPACE and a.namespace != NAMESPACE]
        assert outside == [], run.output
        # The one request on a cluster-scoped kind: its own Namespace object, which RBAC
        # evaluates inside that namespace (deploy asks whether it exists; 403 means "maybe").
        cluster_scoped = {(a.verb, a.resource) for a in mine if a.resource in ("namespaces", "nodes")}
        assert cluster_scoped <= {("get", "namespaces")}, cluster_scoped
        assert not [a for a in mine if a.code == 403 and a.resource != "namespaces"], run.output


@pytest.mark.parametrize("namespace", sorted(SHORT_OF_ONE_RIGHT))
def test_a_missing_right_stops_deploy_with_one_line_before_any_change(
    cluster: Cluster, namespace: str
) -> None:
    """The Role lacks one right; deploy's access reviews find it before the first write."""
    rendered = manifests.with_config_checksums(
        manifests.render("okteto", namespace=namespace, image=f"airflow-ha:{TAG}")
    )
    first = {kind: next(m.name for m in rendered if m.kind == kind) for kind in ("ConfigMap", "Role")}
    expected = SHORT_OF_ONE_RIGHT[namespace][1].format(config_map=first["ConfigMap"], role=first["Role"])

    refused = cluster.invoke(*deploy_args(namespace))

    assert refused.returncode != 0, refused.output
    assert "Traceback" not in refused.stdout + refused.stderr, refused.output
    assert refused.stderr.strip().splitlines()[-1] == f"error: forbidden: {expected}", refused.output
    writes = [
        a
        for a in refused.audit
        if a.user == developer_of(namespace) and a.verb in WRITES and a.resource != "selfsubjectaccessreviews"
    ]
    assert writes == [], writes
    assert cluster.labelled(namespace) == {}


def test_the_rights_to_escalate_and_bind_stand_in_for_the_rights_a_role_grants(cluster: Cluster) -> None:
    """Lacking `get pods/log` but allowed to escalate and bind Roles, deploy succeeds, as in Kubernetes."""
    result = cluster.invoke(*deploy_args(ESCALATING))

    assert result.returncode == 0, result.output
    assert "Role/airflow-pod-launcher" in cluster.labelled(ESCALATING), result.output


def test_a_redeploy_needs_no_right_that_the_unchanged_roles_grant(cluster: Cluster) -> None:
    """An admin deployed; the developer, short of `get pods/log`, redeploys: nothing escalates."""
    first = cluster.invoke(*deploy_args(REDEPLOYED, context=ADMIN_CONTEXT))
    assert first.returncode == 0, first.output

    again = cluster.invoke(*deploy_args(REDEPLOYED))

    assert again.returncode == 0, again.output
    rendered = manifests.render("okteto", namespace=REDEPLOYED, image=f"airflow-ha:{TAG}")
    assert f"{len(rendered)} unchanged" in again.stdout and "forbidden" not in again.output, again.output
