"""Deploy and tear down: secrets, server-side apply in phases, rollout waits, prune.

Every object is applied with server-side apply under the field manager ``airflow-ha``,
so applying the same content again changes nothing (its resourceVersion stays put).
Only objects with the project label are ever listed, pruned or deleted.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from rich.status import Status
from rich.table import Table

from . import PART_OF, PART_OF_LABEL, cluster, image, manifests
from . import secrets as generated
from .console import Failure, console
from .lint import gate
from .manifests import Manifest

FIELD_MANAGER = "airflow-ha"
SELECTOR = f"{PART_OF_LABEL}={PART_OF}"
# (connect, read) seconds for each API call, so that no call can hang a deploy.
REQUEST_TIMEOUT = (10, 60)
POLL_SECONDS = 2
LOG_LINES = 20

# The kinds this project renders or leaves behind, listed by label for prune, teardown
# and its verification: kubectl's default prune allowlist plus RBAC, NetworkPolicy and PDB.
LABELLED_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "Namespace"),
    ("v1", "PersistentVolume"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("storage.k8s.io/v1", "StorageClass"),
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
PULL_ERRORS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName"})

Key = tuple[str, str, str, str]  # (API group, kind, namespace or "", name)


@dataclass
class Report:
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
) -> Report:
    """Preflight, lint gate, image, kind cluster, secrets, phased apply, prune, summary."""
    target = cluster.preflight(context, kind_cluster, build=build)
    on_kind = cluster.is_kind(target, kind_cluster)
    if not on_kind and build and not registry:
        raise Failure(
            f"context {target!r} is not the project's kind cluster, so its nodes cannot see an image built "
            "here: pass --registry HOST:PORT to push it, or --skip-build --tag TAG for an image they can pull"
        )
    # The gate runs before anything is built or touched.
    with console.status(f"lint gate: checking overlay {overlay!r}"):
        gate.lint(overlays=[overlay], kubernetes_versions=kubernetes_versions)
    console.print(f"[green]✓[/] lint gate passed for overlay {overlay!r}")
    if build:
        image.build_image(reference=reference, base_image=base_image, no_cache=False, ca_bundle=None)
    if registry:
        image.push_image(reference=reference, registry=registry)
        reference = f"{registry}/{reference}"
    if on_kind:
        if cluster.ensure_kind_cluster(kind_cluster, kind_config, timeout):
            console.print(f"[green]✓[/] created kind cluster {kind_cluster!r}")
        else:
            console.print(f"[green]✓[/] kind cluster {kind_cluster!r} exists")
        if not registry:
            cluster.load_image(reference, kind_cluster, timeout)
            console.print(f"[green]✓[/] image {reference} is on every kind node")
    rendered = manifests.render(overlay, namespace=namespace, image=reference)
    kube = cluster.kube_clients(target)
    report = install(kube, rendered, namespace=namespace, timeout=timeout)
    print_summary(kube, rendered, namespace=namespace, on_kind=on_kind, explicit_context=context)
    return report


def install(kube: cluster.Kube, rendered: list[Manifest], *, namespace: str, timeout: int) -> Report:
    """Secrets, then server-side apply phase by phase with a wait after each, then prune."""
    report = Report()
    workload_kinds = {kind for _, kind in WORKLOAD_PHASES}
    foundation = [m for m in rendered if m.kind not in workload_kinds]
    if not any(m.kind == "Namespace" and m.name == namespace for m in rendered):
        require_namespace(kube, namespace)
    before = inventory(kube, namespace, extra_kinds={(m.obj["apiVersion"], m.kind) for m in rendered})

    with console.status("applying namespace, RBAC, config, storage and services"):
        actions = [(apply(kube, manifest, before), manifest.ref) for manifest in foundation]
        report.secrets_created = ensure_secrets(kube, namespace)
    for action, ref in actions:
        report.add(action, ref)
        if action != "unchanged":
            console.print(f"  {action:<10} {ref}")
    console.print(
        f"[green]✓[/] namespace, RBAC, config, storage and services: {len(foundation)} objects applied"
    )
    print_secrets(report.secrets_created, kube.context, namespace)

    for phase, kind in WORKLOAD_PHASES:
        for manifest in (m for m in rendered if m.kind == kind):
            with console.status(f"{phase}: applying {manifest.ref}") as status:
                if kind == "Job":
                    action = apply_job(kube, manifest, before, timeout)
                else:
                    action = apply(kube, manifest, before)
                report.add(action, manifest.ref)
                wait_ready(kube, manifest, namespace, timeout, status)
            console.print(f"[green]✓[/] {phase}: {manifest.ref} {action}, ready")

    with console.status("pruning objects no longer in kube/"):
        for ref in prune(kube, rendered, before, namespace):
            report.add("pruned", ref)
            console.print(f"  {'pruned':<10} {ref}")
    counts = ", ".join(f"{len(refs)} {action}" for action, refs in report.actions.items())
    console.print(f"[green]✓[/] server-side applied as field manager {FIELD_MANAGER!r}: {counts}")
    return report


def inventory(
    kube: cluster.Kube, namespace: str, extra_kinds: Iterable[tuple[str, str]] = ()
) -> dict[Key, dict[str, Any]]:
    """Every object with the project label: namespaced ones in ``namespace``, and cluster-scoped ones."""
    found: dict[Key, dict[str, Any]] = {}
    for api_version, kind in dict.fromkeys([*LABELLED_KINDS, *extra_kinds]):
        try:
            resource = kube.dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            continue  # not served by this cluster, so nothing of this kind can exist
        scope = {"namespace": namespace} if resource.namespaced else {}
        listed = as_dict(resource.get(label_selector=SELECTOR, _request_timeout=REQUEST_TIMEOUT, **scope))
        for item in listed.get("items") or []:
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
            found[key(item)] = item
    return found


def key(obj: dict[str, Any]) -> Key:
    metadata = obj.get("metadata") or {}
    group = obj["apiVersion"].rpartition("/")[0]
    return group, obj["kind"], metadata.get("namespace") or "", metadata["name"]


def ref(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def apply(kube: cluster.Kube, manifest: Manifest, before: dict[Key, dict[str, Any]]) -> str:
    """Server-side apply one object; say whether it was created, configured or unchanged."""
    previous = before.get(key(manifest.obj)) or read(kube, manifest.obj)
    try:
        applied = _server_side_apply(kube, manifest.obj)
    except ApiException as error:
        raise Failure(refused(manifest, error)) from None
    return _outcome(previous, applied)


def apply_job(kube: cluster.Kube, manifest: Manifest, before: dict[Key, dict[str, Any]], timeout: int) -> str:
    """Jobs are immutable: recreate one whose spec changed (a new image) or that failed; else leave it."""
    existing = before.get(key(manifest.obj)) or read(kube, manifest.obj)
    if existing is None:
        return apply(kube, manifest, before)
    if _condition(existing, "Failed"):
        console.print(f"  {manifest.ref} failed before: running it again")
    else:
        try:
            return _outcome(existing, _server_side_apply(kube, manifest.obj))
        except ApiException as error:
            if "immutable" not in api_message(error):
                raise Failure(refused(manifest, error)) from None
    _delete(kube, manifest.obj)
    _wait_gone(kube, manifest.obj, timeout)
    apply(kube, manifest, {})
    return "recreated"


def _outcome(previous: dict[str, Any] | None, applied: dict[str, Any]) -> str:
    if previous is None:
        return "created"
    same = previous["metadata"].get("resourceVersion") == applied["metadata"].get("resourceVersion")
    return "unchanged" if same else "configured"


# Refusals of a kind as such: forbidden to this user, or not served by this cluster.
KIND_REFUSALS = frozenset({403, 404, 405})


def refused(manifest: Manifest, error: ApiException) -> str:
    """The API server's reason; for a kind the cluster refuses, how an overlay drops that kind."""
    message = f"{manifest.source}: {manifest.ref}: the API server refused it: {api_message(error)}"
    if error.status not in KIND_REFUSALS:
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


def require_namespace(kube: cluster.Kube, namespace: str) -> None:
    """Overlays that do not create the namespace (okteto) need it to exist already."""
    if read(kube, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}) is None:
        raise Failure(
            f"namespace {namespace!r} does not exist and this overlay does not create it: create it "
            f"(kubectl --context {kube.context} create namespace {namespace}) or pick another --namespace"
        )


# secrets


def ensure_secrets(kube: cluster.Kube, namespace: str) -> list[str]:
    """Create the generated Secrets that are missing; never touch existing ones. Returns the names created."""
    resource = kube.dynamic.resources.get(api_version="v1", kind="Secret")
    existing: dict[str, dict[str, str]] = {}
    for name, keys in generated.GENERATED_SECRETS.items():
        secret = read(
            kube, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace}}
        )
        if secret is None:
            continue
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        lacking = [k for k in keys if k not in data]
        if lacking:
            raise Failure(
                f"Secret/{name} in namespace {namespace!r} lacks the keys {', '.join(lacking)}. Add them, or "
                f"delete the Secret to generate a new one (a new value breaks what used the old one)"
            )
        existing[name] = data
    created = []
    for name, values in generated.generate_missing(existing).items():
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {
                    "app.kubernetes.io/name": "airflow",
                    "app.kubernetes.io/component": "secrets",
                    PART_OF_LABEL: PART_OF,
                },
            },
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
        }
        try:
            resource.create(body=body, namespace=namespace, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as error:
            raise Failure(
                f"cannot create Secret/{name} in namespace {namespace!r}: {api_message(error)}"
            ) from None
        created.append(name)
    return created


def print_secrets(created: list[str], context: str, namespace: str) -> None:
    if created:
        console.print(f"[green]✓[/] generated Secrets {', '.join(created)} (values are never printed)")
    else:
        console.print("[green]✓[/] generated Secrets exist; kept as they are")
    console.print(
        "  admin password: "
        f"kubectl --context {context} -n {namespace} get secret {generated.ADMIN_SECRET} "
        "-o jsonpath='{.data.password}' | base64 -d",
        soft_wrap=True,
    )


# waiting


def wait_ready(kube: cluster.Kube, manifest: Manifest, namespace: str, timeout: int, status: Status) -> None:
    """Wait until a workload is ready, failing early on what will not fix itself."""
    deadline = time.monotonic() + timeout
    while True:
        live = read(kube, manifest.obj)
        if live is None:
            raise Failure(f"{manifest.ref} disappeared while waiting for it to become ready")
        state, progress = rollout_status(live)
        selector = (live.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
        if state == "done":
            return
        if state == "failed":
            raise Failure(
                f"{manifest.ref} in namespace {namespace!r}: {progress}{job_logs(kube, namespace, selector)}"
            )
        fatal, problems = diagnose_pods(kube, namespace, selector)
        if fatal:
            raise Failure(f"{manifest.ref} in namespace {namespace!r}: {fatal}")
        if time.monotonic() > deadline:
            detail = "; ".join([progress, *problems])
            raise Failure(
                f"{manifest.ref} in namespace {namespace!r} was not ready after {timeout} s: {detail}. "
                "Fix the cause, or raise --timeout if the cluster is only slow"
            )
        status.update(f"waiting for {manifest.ref}: {'; '.join([progress, *problems])}")
        time.sleep(POLL_SECONDS)


def rollout_status(obj: dict[str, Any]) -> tuple[str, str]:
    """("done" | "waiting" | "failed", detail), by kubectl's rollout status rules."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    generation = obj["metadata"].get("generation", 0)
    observed = status.get("observedGeneration", 0)
    desired = spec.get("replicas", 1)
    ready = status.get("readyReplicas", 0)
    kind = obj["kind"]
    if kind == "Job":
        if _condition(obj, "Complete"):
            return "done", "complete"
        failed = _condition(obj, "Failed")
        if failed:
            return "failed", f"failed: {failed.get('reason', '')} {failed.get('message', '')}".strip()
        return "waiting", f"{status.get('active', 0)} running, {status.get('failed', 0)} failed attempts"
    if observed == 0 or observed < generation:
        return "waiting", "waiting for the controller to observe the new spec"
    if kind == "Deployment":
        progressing = _condition(obj, "Progressing", status_value=None)
        if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
            return "failed", f"exceeded its progress deadline: {progressing.get('message', '')}"
        updated = status.get("updatedReplicas", 0)
        available = status.get("availableReplicas", 0)
        if updated < desired:
            return "waiting", f"{updated} of {desired} replicas updated"
        if status.get("replicas", 0) > updated:
            return "waiting", f"{status['replicas'] - updated} old replicas pending termination"
        if available < updated or ready < desired:
            return "waiting", f"{min(available, ready)} of {desired} replicas ready and available"
        return "done", f"{ready}/{desired}"
    if kind == "StatefulSet":
        if (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") != "RollingUpdate":
            return "done", "OnDelete strategy: not tracked"
        if ready < desired:
            return "waiting", f"{ready} of {desired} replicas ready"
        partition = ((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get("partition")
        if partition:
            if status.get("updatedReplicas", 0) < desired - partition:
                return "waiting", "waiting for the partitioned rollout"
        elif status.get("updateRevision") != status.get("currentRevision"):
            return "waiting", "rolling update in progress"
        return "done", f"{ready}/{desired}"
    return "done", "not a workload"


def diagnose_pods(kube: cluster.Kube, namespace: str, match_labels: dict[str, str]) -> tuple[str, list[str]]:
    """(a fatal problem or "", other problems) of the pods a workload selects."""
    problems: list[str] = []
    for pod in list_pods(kube, namespace, match_labels):
        name = pod["metadata"]["name"]
        status = pod.get("status") or {}
        for container in [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason", "")
            message = waiting.get("message", "")
            if reason in PULL_ERRORS:
                return (
                    f"pod {name}: container {container['name']} cannot pull image {container.get('image')} "
                    f"({reason}: {message}). On kind the image must be loaded (`kind load docker-image`); "
                    "elsewhere push it to a registry the nodes can reach (--registry)"
                ), problems
            if reason == "CrashLoopBackOff":
                logs = pod_log_tail(kube, namespace, name, container["name"], previous=True)
                return (
                    f"pod {name}: container {container['name']} is in CrashLoopBackOff "
                    f"({container.get('restartCount', 0)} restarts); its last log lines:\n{logs}"
                ), problems
            if reason == "CreateContainerConfigError":
                return f"pod {name}: container {container['name']} cannot start: {message}", problems
        if status.get("phase") == "Pending" and not _condition(pod, "PodScheduled"):
            problems.append(f"pod {name} Pending: {scheduling_problem(kube, namespace, pod)}")
    return "", problems


def scheduling_problem(kube: cluster.Kube, namespace: str, pod: dict[str, Any]) -> str:
    events = [
        e
        for e in pod_events(kube, namespace, pod["metadata"]["name"])
        if e.get("reason") == "FailedScheduling"
    ]
    if events:
        return f"FailedScheduling: {events[-1].get('message', '').strip()}"
    scheduled = _condition(pod, "PodScheduled", status_value=None) or {}
    return scheduled.get("message") or "not scheduled yet"


def job_logs(kube: cluster.Kube, namespace: str, match_labels: dict[str, str]) -> str:
    """The last log lines of a Job's most recent failed pod, to show why it failed."""
    failed = [
        p
        for p in list_pods(kube, namespace, match_labels)
        if (p.get("status") or {}).get("phase") == "Failed"
    ]
    if not failed:
        return ""
    pod = max(failed, key=lambda p: p["metadata"].get("creationTimestamp") or "")
    name = pod["metadata"]["name"]
    tail = pod_log_tail(kube, namespace, name, pod["spec"]["containers"][0]["name"])
    return f"\nlast log lines of pod {name}:\n{tail}"


def list_pods(kube: cluster.Kube, namespace: str, match_labels: dict[str, str]) -> list[dict[str, Any]]:
    if not match_labels:
        return []
    selector = ",".join(f"{k}={v}" for k, v in match_labels.items())
    pods = kube.dynamic.resources.get(api_version="v1", kind="Pod")
    listed = as_dict(pods.get(namespace=namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT))
    return list(listed.get("items") or [])


def pod_events(kube: cluster.Kube, namespace: str, pod_name: str) -> list[dict[str, Any]]:
    """The events of one pod, oldest first."""
    events = kube.dynamic.resources.get(api_version="v1", kind="Event")
    selector = f"involvedObject.kind=Pod,involvedObject.name={pod_name}"
    listed = as_dict(
        events.get(namespace=namespace, field_selector=selector, _request_timeout=REQUEST_TIMEOUT)
    )
    return sorted(listed.get("items") or [], key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


def pod_log_tail(
    kube: cluster.Kube,
    namespace: str,
    pod: str,
    container: str,
    *,
    previous: bool = False,
    lines: int = LOG_LINES,
) -> str:
    """The last lines of a container's log; of the previous instance for a crashed one."""
    reason = "not found"
    for attempt in (True, False) if previous else (False,):
        try:
            text = kube.core.read_namespaced_pod_log(
                name=pod,
                namespace=namespace,
                container=container,
                tail_lines=lines,
                previous=attempt,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as error:
            reason = api_message(error)
            continue
        return "\n".join(f"  | {line}" for line in str(text).rstrip().splitlines()) or "  (empty log)"
    return f"  (no log: {reason})"


# prune and teardown


def prune(
    kube: cluster.Kube, rendered: list[Manifest], before: dict[Key, dict[str, Any]], namespace: str
) -> list[str]:
    """Delete labelled objects in the namespace that the manifests no longer describe."""
    wanted = {key(m.obj) for m in rendered}
    stale = [
        obj
        for k, obj in before.items()
        if k not in wanted
        and obj["metadata"].get("namespace") == namespace  # cluster-scoped objects may serve other namespaces
        and obj["kind"] not in NEVER_PRUNED
        and not owned(obj)
        and not generated_secret(obj)
    ]
    for obj in stale:
        _delete(kube, obj)
    return [ref(obj) for obj in stale]


def teardown(
    *, context: str | None, kind_cluster: str, namespace: str, purge: bool, delete_cluster: bool, timeout: int
) -> list[str]:
    """Delete what deploy created, keeping the data unless purge; verify nothing else is left."""
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
        console.print("  kept: the host folder .kind/airflow-logs (task logs); delete it by hand if unwanted")
        return []
    kube = cluster.kube_clients(cluster.check_context(context, kind_cluster))
    return remove(kube, namespace, purge=purge, timeout=timeout)


def remove(kube: cluster.Kube, namespace: str, *, purge: bool, timeout: int) -> list[str]:
    """Delete every labelled object of the namespace (and its cluster-scoped ones); return what was kept."""
    found = belonging(inventory(kube, namespace), namespace)
    kept = {k for k, obj in found.items() if not purge and _is_data(obj)}
    doomed = [obj for k, obj in found.items() if k not in kept and not owned(obj)]
    # The namespace goes last, so that everything in it is deleted by name first.
    doomed.sort(key=lambda obj: obj["kind"] == "Namespace")
    with console.status(f"deleting {len(doomed)} objects from namespace {namespace!r}") as status:
        for obj in doomed:
            _delete(kube, obj)
        deadline = time.monotonic() + timeout
        while True:
            left = {
                k: obj for k, obj in belonging(inventory(kube, namespace), namespace).items() if k not in kept
            }
            if not left:
                break
            if time.monotonic() > deadline:
                leftovers = ", ".join(_describe(obj) for obj in left.values())
                raise Failure(f"after {timeout} s these objects are still there: {leftovers}")
            status.update(
                f"waiting for {len(left)} objects to go: {', '.join(ref(o) for o in list(left.values())[:5])}"
            )
            time.sleep(POLL_SECONDS)
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
    kube: cluster.Kube,
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
        live = read(kube, manifest.obj) or manifest.obj
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


# API helpers


def api_message(error: ApiException) -> str:
    """The Status message the API server sent, or the HTTP reason."""
    try:
        return str(json.loads(error.body)["message"])
    except (TypeError, ValueError, KeyError):
        return f"HTTP {error.status} {error.reason}"


def as_dict(value: Any) -> dict[str, Any]:
    """A dynamic client ResourceInstance as a plain dict."""
    return value.to_dict() if hasattr(value, "to_dict") else dict(value)


def _resource(kube: cluster.Kube, obj: dict[str, Any]) -> Any:
    return kube.dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])


def _scope(resource: Any, obj: dict[str, Any]) -> dict[str, str]:
    namespace = obj["metadata"].get("namespace")
    return {"namespace": namespace} if resource.namespaced and namespace else {}


def read(kube: cluster.Kube, obj: dict[str, Any]) -> dict[str, Any] | None:
    """The live object named like ``obj``, or None."""
    resource = _resource(kube, obj)
    try:
        found = resource.get(
            name=obj["metadata"]["name"], _request_timeout=REQUEST_TIMEOUT, **_scope(resource, obj)
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise Failure(f"cannot read {ref(obj)}: {api_message(error)}") from None
    return as_dict(found)


def _server_side_apply(kube: cluster.Kube, obj: dict[str, Any]) -> dict[str, Any]:
    resource = _resource(kube, obj)
    # force_conflicts: deploy is the source of truth for every field its manifests set.
    return as_dict(
        resource.server_side_apply(
            body=obj,
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
            _request_timeout=REQUEST_TIMEOUT,
            **_scope(resource, obj),
        )
    )


def _delete(kube: cluster.Kube, obj: dict[str, Any]) -> None:
    resource = _resource(kube, obj)
    try:
        resource.delete(
            name=obj["metadata"]["name"],
            propagation_policy="Background",
            _request_timeout=REQUEST_TIMEOUT,
            **_scope(resource, obj),
        )
    except ApiException as error:
        if error.status != 404:
            raise Failure(f"cannot delete {ref(obj)}: {api_message(error)}") from None


def _wait_gone(kube: cluster.Kube, obj: dict[str, Any], timeout: int) -> None:
    deadline = time.monotonic() + timeout
    while read(kube, obj) is not None:
        if time.monotonic() > deadline:
            raise Failure(f"{ref(obj)} was still being deleted after {timeout} s")
        time.sleep(POLL_SECONDS)


def _condition(obj: dict[str, Any], kind: str, status_value: str | None = "True") -> dict[str, Any] | None:
    """The condition of that type, if it has the wanted status (any status when None)."""
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and (
            status_value is None or condition.get("status") == status_value
        ):
            return dict(condition)
    return None
