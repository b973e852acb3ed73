"""Deploy and tear down: secrets, server-side apply in phases, rollout waits, prune.

Every object is applied with server-side apply under the field manager ``airflow-ha``,
so applying the same content again changes nothing (its resourceVersion stays put).
Only objects with the project label are ever listed, pruned or deleted. Cluster-scoped
kinds are listed only when the overlay renders them, so a kube context whose rights stop
at its namespace can deploy an overlay that renders nothing cluster-scoped (okteto).

Pruning is done here, by label, rather than with kubectl's ApplySet (`kubectl apply
--prune --applyset`): ApplySet is still alpha behind KUBECTL_APPLYSET=true, it would
replace the phased apply with its waits by one kubectl call, and it prunes whatever its
parent lists, while deploy must never prune data or another namespace's objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from rich.table import Table

from . import PART_OF, PART_OF_LABEL, cluster, cluster_secrets, image, kubeapi, manifests, preflight, rollout
from . import generated_secrets as generated
from .console import Failure, console, progress
from .kubeapi import Key, Kube, api_message, condition, ref
from .lint import gate
from .manifests import Manifest
from .polling import poll

FIELD_MANAGER = "airflow-ha"
SELECTOR = f"{PART_OF_LABEL}={PART_OF}"

# The namespaced kinds this project renders or leaves behind, listed by label in the
# deploy's namespace for prune, teardown and its verification: kubectl's default prune
# allowlist plus RBAC, NetworkPolicy and PDB. Cluster-scoped kinds come from the overlay.
LABELLED_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("v1", "PersistentVolumeClaim"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("networking.k8s.io/v1", "Ingress"),
    ("policy/v1", "PodDisruptionBudget"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "DaemonSet"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
    # Made by controllers and the executor from labelled templates; teardown waits for them.
    ("apps/v1", "ReplicaSet"),
    ("v1", "Pod"),
)
# Data, kept by teardown unless --purge. Deleting the Namespace would delete the rest.
DATA_KINDS = frozenset({"Namespace", "PersistentVolume", "PersistentVolumeClaim"})
# Never pruned by deploy: data, and runtime objects that no manifest describes (worker pods).
NEVER_PRUNED = DATA_KINDS | {"Pod", "ReplicaSet"}
# Apply order after the foundation (namespace, RBAC, config, storage, services):
# the database, then the migration, then the Airflow components.
WORKLOAD_PHASES = (("database", "StatefulSet"), ("migration", "Job"), ("components", "Deployment"))


@dataclass
class DeployReport:
    """What one deploy did, object by object."""

    actions: dict[str, list[str]] = field(default_factory=dict)  # action -> kind/name
    secrets_created: list[str] = field(default_factory=list)

    def add(self, action: str, ref: str) -> None:
        self.actions.setdefault(action, []).append(ref)

    @property
    def changed(self) -> bool:
        return any(action != "unchanged" for action in self.actions) or bool(self.secrets_created)


# deploy


def deploy(
    *,
    context: str | None,
    kind_cluster: str,
    kind_config: str,
    overlay: str,
    namespace: str,
    reference: str,
    base_image: str,
    registry: str | None,
    build: bool,
    kubernetes_versions: tuple[str, str],
    timeout: int,
    adopt: bool = False,
    wait: bool = True,
    node_image: str | None = None,
) -> DeployReport:
    """Preflight, lint gate, image, kind cluster, secrets, phased apply, prune, summary."""
    target = preflight.run(context, kind_cluster, build=build)
    on_kind = cluster.is_kind(target, kind_cluster)
    if not on_kind and build and not registry:
        raise Failure(
            f"context {target!r} is not the project's kind cluster, so its nodes cannot see an image built "
            "here: pass --registry HOST:PORT to push it, or --skip-build --tag TAG for an image they can pull"
        )
    # The gate runs before anything is built or touched.
    with progress(f"lint gate: checking overlay {overlay!r}"):
        gate.lint(overlays=[overlay], kubernetes_versions=kubernetes_versions)
    console.print(f"[green]✓[/] lint gate passed for overlay {overlay!r}")
    if build:
        image.build_image(reference=reference, base_image=base_image, no_cache=False, ca_bundle=None)
    if registry:
        image.push_image(reference=reference, registry=registry)
        reference = f"{registry}/{reference}"
    rendered = manifests.render(overlay, namespace=namespace, image=reference)
    if on_kind:
        if cluster.ensure_kind_cluster(
            kind_cluster, kind_config, timeout, namespace=namespace, node_image=node_image
        ):
            console.print(f"[green]✓[/] created kind cluster {kind_cluster!r}")
        else:
            console.print(f"[green]✓[/] kind cluster {kind_cluster!r} exists")
        if not registry:
            cluster.load_image(reference, kind_cluster, timeout)
            console.print(f"[green]✓[/] image {reference} is on every kind node")
        # The nodes pull the other images themselves, unless this machine has them: a site
        # without a registry loads them here first, and so does anyone who pulled them already.
        others = {
            i for i in manifests.images(rendered) if i.rpartition(":")[0] != manifests.PROJECT_IMAGE_NAME
        }
        for other in image.local_images(others):
            cluster.load_image(other, kind_cluster, timeout)
            console.print(f"[green]✓[/] image {other}, found on this machine, is on every kind node")
    kube = kubeapi.kube_clients(target)
    report = install(kube, rendered, namespace=namespace, timeout=timeout, adopt=adopt, wait=wait)
    print_summary(kube, rendered, namespace=namespace, on_kind=on_kind, explicit_context=context)
    return report


def install(
    kube: Kube,
    rendered: list[Manifest],
    *,
    namespace: str,
    timeout: int,
    adopt: bool = False,
    wait: bool = True,
) -> DeployReport:
    """A dry run of everything, then secrets, then server-side apply phase by phase with a wait
    after each (unless not ``wait``), then prune.

    An object of the same name that exists without the project label is refused before the
    first write, unless ``adopt``: applying would make it ours, and teardown would delete it.
    """
    report = DeployReport()
    rendered = manifests.with_config_checksums(rendered)
    workload_kinds = {kind for _, kind in WORKLOAD_PHASES}
    foundation = [m for m in rendered if m.kind not in workload_kinds]
    if not any(m.kind == "Namespace" and m.name == namespace for m in rendered):
        require_namespace(kube, namespace)
    before = inventory(kube, namespace, kinds_of(rendered))
    kubeapi.require_rights(
        kube, planned_requests(rendered, before, namespace), roles_to_confirm(rendered, before)
    )
    foreign = not_ours(kube, rendered, before)
    if foreign and not adopt:
        they, exist, them = ("it", "exists", "it") if len(foreign) == 1 else ("they", "exist", "them")
        raise Failure(
            f"refusing to take over {', '.join(foreign)}: {they} {exist} without the label {SELECTOR}, "
            f"so something else made {them}; nothing was applied. Rename or delete {them}, or run "
            f"`invoke deploy --adopt` to make {them} part of this deployment (teardown then deletes {them})"
        )
    for adopted in foreign:
        console.print(f"  adopting  {adopted}")
    # Namespaced objects can be tried only in a namespace that exists: one the overlay makes
    # is created first, empty.
    first_writes = {
        m.ref: apply(kube, m, before)
        for m in rendered
        if m.kind == "Namespace" and m.name == namespace and kubeapi.read(kube, m.obj) is None
    }
    with progress("dry run: the API server admits each object and each pod template"):
        try:
            unchanged = dry_run(kube, rendered, before)
        except Failure as refused:
            if not first_writes:
                raise
            raise Failure(
                str(refused).replace(
                    NOTHING_APPLIED,
                    f"Nothing else was applied: {', '.join(first_writes)} was "
                    "created, empty, so that the objects in it could be tried.",
                )
            ) from None
    console.print(f"[green]✓[/] dry run: the API server admits all {len(rendered)} objects and their pods")

    with progress("applying namespace, RBAC, config, storage and services"):
        actions = [
            (first_writes.get(manifest.ref) or apply(kube, manifest, before, unchanged), manifest.ref)
            for manifest in foundation
        ]
        report.secrets_created = cluster_secrets.ensure(kube, namespace)
    for action, ref_ in actions:
        report.add(action, ref_)
        if action != "unchanged":
            console.print(f"  {action:<10} {ref_}")
    kept = sum(action == "unchanged" for action, _ in actions)
    console.print(
        f"[green]✓[/] namespace, RBAC, config, storage and services: {len(foundation) - kept} applied, "
        f"{kept} unchanged"
    )
    cluster_secrets.print_created(report.secrets_created, kube.context, namespace)

    for phase, kind in WORKLOAD_PHASES:
        for manifest in (m for m in rendered if m.kind == kind):
            with progress(f"{phase}: applying {manifest.ref}") as status:
                if kind == "Job":
                    action = apply_job(kube, manifest, before, timeout, unchanged)
                else:
                    action = apply(kube, manifest, before, unchanged)
                report.add(action, manifest.ref)
                if wait:
                    rollout.wait_ready(kube, manifest, namespace, timeout, status)
            console.print(f"[green]✓[/] {phase}: {manifest.ref} {action}{', ready' if wait else ''}")

    with progress("pruning objects no longer in kube/"):
        for pruned in prune(kube, rendered, before, namespace):
            report.add("pruned", pruned)
            console.print(f"  {'pruned':<10} {pruned}")
    counts = ", ".join(f"{len(refs)} {action}" for action, refs in report.actions.items())
    console.print(f"[green]✓[/] server-side applied as field manager {FIELD_MANAGER!r}: {counts}")
    if not wait:
        console.print(
            f"not waiting for rollouts: kubectl --context {kube.context} -n {namespace} get pods -w"
        )
    return report


def dry_run(kube: Kube, rendered: list[Manifest], before: dict[Key, dict[str, Any]]) -> set[str]:
    """Each object, then a Pod of each pod template that would change, as the API server would
    admit them; none stored. Returns the objects that applying would leave as they are.

    A dry run passes every admission step of a write: validation beyond the schema, quota,
    webhooks. PodSecurity and LimitRange judge pods, which controllers and the scheduler create
    after deploy returns, so each template is tried as a Pod too, the worker pods' included.
    A template that stays as it is makes no new pod, so it is not tried: on a namespace at its
    pod quota, a redeploy that changes nothing must not be refused for a pod it never makes.
    """
    unchanged: set[str] = set()
    new_roles = {m.name for m in rendered if m.kind == "Role" and kubeapi.key(m.obj) not in before}
    for manifest in rendered:
        role = manifest.obj.get("roleRef") or {}
        if manifest.kind == "RoleBinding" and role.get("kind") == "Role" and role.get("name") in new_roles:
            # The API server resolves the Role a binding names, and this one is not written
            # yet; the access review has asked for each right it grants.
            continue
        try:
            planned = kubeapi.server_side_apply(kube, manifest.obj, FIELD_MANAGER, dry_run=True)
        except ApiException as error:
            if manifest.kind == "Job" and "immutable" in api_message(error):
                continue  # it is recreated, and its pod is tried below
            raise Failure(f"{refused(manifest, error)}\n{NOTHING_APPLIED}") from None
        live = before.get(kubeapi.key(manifest.obj))
        if live is not None and _content(live) == _content(planned):
            unchanged.add(manifest.ref)
    accounts = {m.name for m in rendered if m.kind == "ServiceAccount"}
    for manifest, pod in pods_of(kube, [m for m in rendered if m.ref not in unchanged], accounts):
        try:
            kubeapi.create(kube, pod, dry_run=True)
        except ApiException as error:
            raise Failure(
                f"{manifest.source}: {manifest.ref}: the API server would refuse its pods: "
                f"{api_message(error)}\n{NOTHING_APPLIED}"
            ) from None
    return unchanged


NOTHING_APPLIED = "Nothing was applied."


def _content(obj: dict[str, Any]) -> dict[str, Any]:
    """The object but for the bookkeeping of who wrote it when: an apply that would change only
    that is not made (a first re-apply after a create can rewrite managedFields alone)."""
    metadata = {k: v for k, v in obj["metadata"].items() if k not in ("managedFields", "resourceVersion")}
    return {**obj, "metadata": metadata}


def pods_of(
    kube: Kube, rendered: list[Manifest], accounts: Set[str] = frozenset()
) -> list[tuple[Manifest, dict[str, Any]]]:
    """A Pod for each pod template: the workloads', and the worker pods' from their ConfigMap.
    ``accounts`` are the ServiceAccounts this deploy writes."""
    pods = []
    for workload in manifests.workloads(rendered):
        manifest = workload.manifest
        if manifest.kind == "Pod":
            continue  # applied, and so tried, as itself
        pod_spec = {**workload.pod}
        # The StatefulSet controller adds a volume per claim template, in place of one so named.
        claims = {
            str(claim["metadata"]["name"])
            for claim in manifests.items(workload.spec.get("volumeClaimTemplates"))
        }
        pod_spec["volumes"] = [
            *(v for v in manifests.items(pod_spec.get("volumes")) if v.get("name") not in claims),
            *({"name": name, "persistentVolumeClaim": {"claimName": name}} for name in sorted(claims)),
        ]
        template = manifests.mapping(manifests.mapping(workload.spec.get("template")).get("metadata"))
        metadata = {"labels": workload.labels, "annotations": manifests.mapping(template.get("annotations"))}
        pods.append(
            (manifest, _dry_run_pod(kube, manifest.name, manifest.namespace, metadata, pod_spec, accounts))
        )
    worker = manifests.pod_template(rendered)
    config_map = manifests.find(rendered, "ConfigMap", manifests.POD_TEMPLATE_CONFIG_MAP)
    if worker and config_map:
        pod_spec = manifests.mapping(worker.obj.get("spec"))
        metadata = {
            "labels": worker.labels,
            "annotations": manifests.mapping(worker.obj["metadata"].get("annotations")),
        }
        pods.append(
            (worker, _dry_run_pod(kube, worker.name, config_map.namespace, metadata, pod_spec, accounts))
        )
    return pods


def _dry_run_pod(
    kube: Kube,
    name: str,
    namespace: str | None,
    metadata: dict[str, Any],
    pod_spec: dict[str, Any],
    accounts: Set[str],
) -> dict[str, Any]:
    service_account = pod_spec.get("serviceAccountName") or "default"
    if (
        service_account in accounts
        and kubeapi.read(kube, service_account_object(service_account, namespace)) is None
    ):
        # Admission refuses a pod whose ServiceAccount does not exist, and this deploy has not
        # written this one yet: the namespace's own account stands in, which its controller makes.
        pod_spec = {**pod_spec, "serviceAccountName": "default"}
        wait_for_default_account(kube, namespace)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**metadata, "generateName": f"{name}-dry-run-", "namespace": namespace},
        "spec": pod_spec,
    }


def service_account_object(name: str, namespace: str | None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}


def wait_for_default_account(kube: Kube, namespace: str | None, timeout: float = 30) -> None:
    account = service_account_object("default", namespace)
    poll(
        lambda: kubeapi.read(kube, account),
        timeout=timeout,
        every=0.2,
        timed_out=lambda: Failure(
            f"namespace {namespace!r} has no ServiceAccount 'default' after {timeout:.0f} s: "
            "is the cluster's kube-controller-manager running?"
        ),
    )


def not_ours(kube: Kube, rendered: list[Manifest], before: dict[Key, dict[str, Any]]) -> list[str]:
    """The rendered objects that exist already without the project label (the inventory has the rest)."""
    return [
        f"{m.ref} in namespace {m.namespace}" if m.namespace else m.ref
        for m in rendered
        if kubeapi.key(m.obj) not in before and kubeapi.read(kube, m.obj)
    ]


def planned_requests(
    rendered: list[Manifest], before: dict[Key, dict[str, Any]], namespace: str
) -> list[tuple[str, str, str, str | None, str]]:
    """(verb, apiVersion, kind, namespace, name) of every write this deploy may make."""
    requests: list[tuple[str, str, str, str | None, str]] = []
    for manifest in rendered:
        where = (manifest.obj["apiVersion"], manifest.kind, manifest.namespace, manifest.name)
        requests.append(("patch", *where))
        if kubeapi.key(manifest.obj) not in before:
            requests.extend([("get", *where), ("create", *where)])
        elif manifest.kind == "Job":  # a Job is recreated when its spec changed
            requests.extend([("delete", *where), ("create", *where)])
    for name in generated.GENERATED_SECRETS:
        requests.append(("get", "v1", "Secret", namespace, name))
        if ("", "Secret", namespace, name) not in before:
            requests.append(("create", "v1", "Secret", namespace, name))
    # The dry run of each pod template, and the ServiceAccounts it looks for.
    requests.extend([("create", "v1", "Pod", namespace, ""), ("get", "v1", "ServiceAccount", namespace, "")])
    for obj in stale_objects(rendered, before, namespace):
        requests.append(("delete", obj["apiVersion"], obj["kind"], namespace, obj["metadata"]["name"]))
    return requests


def roles_to_confirm(rendered: list[Manifest], before: dict[Key, dict[str, Any]]) -> list[dict[str, Any]]:
    """The Roles whose rights this deploy's writer must hold: RBAC's escalation check covers a
    Role created or changed, and the Role a RoleBinding created or changed binds; the API server
    skips it for an unchanged one, so a redeploy needs no more rights than its other writes."""

    def changed(manifest: Manifest) -> bool:
        live = before.get(kubeapi.key(manifest.obj))
        fields = ("rules",) if manifest.kind == "Role" else ("roleRef", "subjects")
        return live is None or any(live.get(f) != manifest.obj.get(f) for f in fields)

    names = {m.name for m in rendered if m.kind == "Role" and changed(m)}
    names |= {m.obj["roleRef"]["name"] for m in rendered if m.kind == "RoleBinding" and changed(m)}
    return [m.obj for m in rendered if m.kind == "Role" and m.name in names]


def kinds_of(rendered: Iterable[Manifest]) -> set[tuple[str, str]]:
    """(apiVersion, kind) of every rendered object."""
    return {(m.obj["apiVersion"], m.kind) for m in rendered}


def inventory(
    kube: Kube, namespace: str, rendered_kinds: Iterable[tuple[str, str]] = ()
) -> dict[Key, dict[str, Any]]:
    """Every object with the project label: of the namespaced kinds, those in ``namespace``;
    of the cluster-scoped kinds, only those the overlay renders (``rendered_kinds``)."""
    rendered_kinds = set(rendered_kinds)
    found: dict[Key, dict[str, Any]] = {}
    for api_version, kind in dict.fromkeys([*LABELLED_KINDS, *sorted(rendered_kinds)]):
        try:
            resource = kubeapi.resource_of(kube, api_version, kind)
        except ResourceNotFoundError:
            continue  # not served by this cluster, so nothing of this kind can exist
        if not resource.namespaced and (api_version, kind) not in rendered_kinds:
            continue
        listed = kubeapi.list_objects(kube, resource, namespace, label_selector=SELECTOR)
        for item in listed.get("items") or []:
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
            found[kubeapi.key(item)] = item
    return found


def apply(
    kube: Kube, manifest: Manifest, before: dict[Key, dict[str, Any]], unchanged: Set[str] = frozenset()
) -> str:
    """Server-side apply one object unless the dry run found nothing to change; say whether it
    was created, configured or unchanged."""
    if manifest.ref in unchanged and still_as_before(kube, manifest, before):
        return "unchanged"
    previous = before.get(kubeapi.key(manifest.obj)) or kubeapi.read(kube, manifest.obj)
    try:
        applied = kubeapi.server_side_apply(kube, manifest.obj, FIELD_MANAGER)
    except ApiException as error:
        raise Failure(refused(manifest, error)) from None
    return _outcome(previous, applied)


def still_as_before(kube: Kube, manifest: Manifest, before: dict[Key, dict[str, Any]]) -> bool:
    """Whether the object is the one the dry run compared: minutes of rollouts may lie between,
    and an object scaled, edited or deleted meanwhile is applied after all."""
    live = kubeapi.read(kube, manifest.obj)
    known = before.get(kubeapi.key(manifest.obj))
    return bool(
        live and known and live["metadata"].get("resourceVersion") == known["metadata"].get("resourceVersion")
    )


def apply_job(
    kube: Kube,
    manifest: Manifest,
    before: dict[Key, dict[str, Any]],
    timeout: int,
    unchanged: Set[str] = frozenset(),
) -> str:
    """Jobs are immutable: recreate one whose spec changed (a new image) or that failed; else leave it."""
    existing = before.get(kubeapi.key(manifest.obj)) or kubeapi.read(kube, manifest.obj)
    if existing is None:
        return apply(kube, manifest, before)
    if condition(existing, "Failed"):
        console.print(f"  {manifest.ref} failed before: running it again")
    elif manifest.ref in unchanged and still_as_before(kube, manifest, before):
        return "unchanged"
    else:
        try:
            return _outcome(existing, kubeapi.server_side_apply(kube, manifest.obj, FIELD_MANAGER))
        except ApiException as error:
            if "immutable" not in api_message(error):
                raise Failure(refused(manifest, error)) from None
    kubeapi.delete(kube, manifest.obj)
    rollout.wait_gone(kube, manifest.obj, timeout)
    apply(kube, manifest, {})
    return "recreated"


def _outcome(previous: dict[str, Any] | None, applied: dict[str, Any]) -> str:
    if previous is None:
        return "created"
    same = previous["metadata"].get("resourceVersion") == applied["metadata"].get("resourceVersion")
    return "unchanged" if same else "configured"


# Refusals of a kind as such: not served by this cluster; or a 403 of RBAC or of a policy webhook
# (some managed namespaces refuse PodDisruptionBudgets or NetworkPolicies), but not of a quota.
KIND_REFUSALS = frozenset({404, 405})


def refused(manifest: Manifest, error: ApiException) -> str:
    """The API server's reason; for a kind the cluster refuses, how an overlay drops that kind."""
    reason = api_message(error)
    message = f"{manifest.source}: {manifest.ref}: the API server refused it: {reason}"
    about_the_kind = error.status == 403 and (kubeapi.rbac_denied(error) or "admission webhook" in reason)
    if error.status not in KIND_REFUSALS and not about_the_kind:
        return message
    kind, api_version = manifest.kind, manifest.obj.get("apiVersion", "v1")
    return (
        f"{message}\nIf this cluster does not allow {kind} objects here (some managed namespaces refuse "
        f"PodDisruptionBudgets or NetworkPolicies), drop every {kind} in your overlay's kustomization.yaml "
        f"and deploy again:\n"
        f"  patches:\n"
        f"    - target:\n"
        f"        kind: {kind}\n"
        f"      patch: |-\n"
        f"        $patch: delete\n"
        f"        apiVersion: {api_version}\n"
        f"        kind: {kind}\n"
        f"        metadata:\n"
        f"          name: any"
    )


def require_namespace(kube: Kube, namespace: str) -> None:
    """Overlays that do not create the namespace (okteto) need it to exist already."""
    try:
        found = kubeapi.read(kube, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    except kubeapi.Forbidden:
        # Rights that stop at the namespace may not cover the Namespace object itself;
        # if it is missing after all, the first apply into it says so.
        return
    if found is None:
        raise Failure(
            f"namespace {namespace!r} does not exist and this overlay does not create it: create it "
            f"(kubectl --context {kube.context} create namespace {namespace}) or pick another --namespace"
        )


# prune and teardown


def prune(
    kube: Kube, rendered: list[Manifest], before: dict[Key, dict[str, Any]], namespace: str
) -> list[str]:
    """Delete labelled objects in the namespace that the manifests no longer describe."""
    stale = stale_objects(rendered, before, namespace)
    for obj in stale:
        kubeapi.delete(kube, obj)
    return [ref(obj) for obj in stale]


def stale_objects(
    rendered: list[Manifest], before: dict[Key, dict[str, Any]], namespace: str
) -> list[dict[str, Any]]:
    wanted = {kubeapi.key(m.obj) for m in rendered}
    return [
        obj
        for k, obj in before.items()
        if k not in wanted
        and obj["metadata"].get("namespace") == namespace  # cluster-scoped objects may serve other namespaces
        and obj["kind"] not in NEVER_PRUNED
        and not owned(obj)
        and not generated_secret(obj)
    ]


def teardown(
    *,
    context: str | None,
    kind_cluster: str,
    overlay: str,
    namespace: str,
    purge: bool,
    delete_cluster: bool,
    timeout: int,
    kind_config: str = "kube/kind-cluster.yaml",
    node_image: str | None = None,
) -> list[str]:
    """Delete what deploy created, keeping the data unless purge; verify nothing else is left.

    The overlay says which cluster-scoped kinds to look at: no other is ever listed.
    """
    if delete_cluster:
        target = cluster.target_context(context, kind_cluster)
        if not cluster.is_kind(target, kind_cluster):
            raise Failure(
                f"--cluster deletes the project's kind cluster {kind_cluster!r}; {target!r} is not it"
            )
        if cluster.delete_kind_cluster(kind_cluster, timeout):
            console.print(f"[green]✓[/] deleted kind cluster {kind_cluster!r} and everything in it")
        else:
            console.print(f"kind cluster {kind_cluster!r} does not exist: nothing to delete")
        if kind_cluster in cluster.kind_clusters():
            raise Failure(f"kind cluster {kind_cluster!r} still exists after `kind delete cluster`")
        if purge:
            for folder in cluster.purge_host_mounts(kind_config, node_image):
                console.print(f"[green]✓[/] deleted the host folder {folder} (task logs)")
        else:
            console.print("  kept: the host folder .kind/airflow-logs (task logs); --purge deletes it too")
        return []
    rendered_kinds = kinds_of(manifests.render(overlay, namespace=namespace))
    kube = kubeapi.kube_clients(cluster.check_context(context, kind_cluster))
    return remove(kube, namespace, rendered_kinds=rendered_kinds, purge=purge, timeout=timeout)


def remove(
    kube: Kube, namespace: str, *, rendered_kinds: Iterable[tuple[str, str]], purge: bool, timeout: int
) -> list[str]:
    """Delete every labelled object of the namespace (and its cluster-scoped ones); return what was kept."""
    rendered_kinds = set(rendered_kinds)
    found = belonging(inventory(kube, namespace, rendered_kinds), namespace)
    kept = {k for k, obj in found.items() if not purge and _is_data(obj)}
    doomed = [obj for k, obj in found.items() if k not in kept and not owned(obj)]
    # The namespace goes last, so that everything in it is deleted by name first.
    doomed.sort(key=lambda obj: obj["kind"] == "Namespace")
    with progress(f"deleting {len(doomed)} objects from namespace {namespace!r}") as status:
        for obj in doomed:
            kubeapi.delete(kube, obj)
        left: dict[Key, dict[str, Any]] = {}

        def all_gone() -> bool | None:
            left.clear()
            listed = belonging(inventory(kube, namespace, rendered_kinds), namespace)
            left.update((k, obj) for k, obj in listed.items() if k not in kept)
            if not left:
                return True
            some = ", ".join(ref(o) for o in list(left.values())[:5])
            status.update(f"waiting for {len(left)} objects to go: {some}")
            return None

        poll(
            all_gone,
            timeout=timeout,
            every=rollout.POLL_SECONDS,
            timed_out=lambda: Failure(
                f"after {timeout} s these objects are still there: {', '.join(map(_describe, left.values()))}"
            ),
        )
    console.print(f"[green]✓[/] deleted {len(doomed)} objects; nothing else with {SELECTOR} is left")
    kept_refs = sorted(ref(found[k]) for k in kept)
    if kept_refs:
        console.print(f"  kept (data): {', '.join(kept_refs)}; `invoke teardown --purge` deletes them too")
    return kept_refs


def belonging(found: dict[Key, dict[str, Any]], namespace: str) -> dict[Key, dict[str, Any]]:
    """Drop the cluster-scoped objects that clearly belong to another namespace's deploy."""

    def ours(obj: dict[str, Any]) -> bool:
        if obj["kind"] == "Namespace":
            return bool(obj["metadata"]["name"] == namespace)
        if obj["kind"] == "PersistentVolume":
            claim = (obj.get("spec") or {}).get("claimRef") or {}
            return claim.get("namespace") in (None, namespace)
        return True

    return {k: obj for k, obj in found.items() if ours(obj)}


def _is_data(obj: dict[str, Any]) -> bool:
    return obj["kind"] in DATA_KINDS or generated_secret(obj)


def generated_secret(obj: dict[str, Any]) -> bool:
    return obj["kind"] == "Secret" and obj["metadata"]["name"] in generated.GENERATED_SECRETS


def owned(obj: dict[str, Any]) -> bool:
    """Made by a controller from one of ours; the garbage collector deletes it with its owner."""
    return bool(obj["metadata"].get("ownerReferences"))


def _describe(obj: dict[str, Any]) -> str:
    metadata = obj["metadata"]
    if metadata.get("finalizers"):
        return f"{ref(obj)} (finalizers: {', '.join(metadata['finalizers'])})"
    return ref(obj)


# summary


def print_summary(
    kube: Kube,
    rendered: list[Manifest],
    *,
    namespace: str,
    on_kind: bool,
    explicit_context: str | None,
) -> None:
    table = Table(title=f"Airflow in namespace {namespace} (context {kube.context})", title_justify="left")
    table.add_column("component")
    table.add_column("kind")
    table.add_column("ready/desired", justify="right")
    for manifest in rendered:
        if manifest.kind not in ("Deployment", "StatefulSet"):
            continue
        live = kubeapi.read(kube, manifest.obj) or manifest.obj
        ready = (live.get("status") or {}).get("readyReplicas", 0)
        table.add_row(manifest.name, manifest.kind, f"{ready}/{(live.get('spec') or {}).get('replicas', 1)}")
    console.print(table)
    console.print(
        f"api-server: {api_server_url(rendered, namespace=namespace, context=kube.context, on_kind=on_kind)}"
    )
    flags = f" --context {explicit_context}" if explicit_context else ""
    console.print(f"next: [bold]invoke smoke{flags} --namespace {namespace}[/]", soft_wrap=True)


def api_server_url(rendered: Iterable[Manifest], *, namespace: str, context: str, on_kind: bool) -> str:
    """kind maps the api-server's NodePort to the same port on localhost; elsewhere, port-forward."""
    if on_kind:
        for manifest in rendered:
            spec = manifest.obj.get("spec") or {}
            if manifest.kind == "Service" and spec.get("type") == "NodePort":
                for port in spec.get("ports") or []:
                    if port.get("nodePort"):
                        return f"http://localhost:{port['nodePort']}"
    return (
        f"kubectl --context {context} -n {namespace} port-forward svc/airflow-api-server 8080:8080, "
        "then http://localhost:8080"
    )
