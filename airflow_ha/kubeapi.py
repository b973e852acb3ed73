"""The Kubernetes API as deploy, teardown and smoke use it: clients, reads, writes, pods.

Every call goes through here, so every call has a timeout and every refusal reads
the same way. A 403 becomes a one-line Failure naming the verb, the resource, the
namespace and the RBAC right that is missing (see ``forbidden``), never a traceback.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from .cluster import kubeconfig_for
from .console import Failure

# (connect, read) seconds for each API call, so that no call can hang a deploy.
REQUEST_TIMEOUT = (10, 60)
LOG_LINES = 20

RBAC_GROUP = "rbac.authorization.k8s.io"

Key = tuple[str, str, str, str]  # (API group, kind, namespace or "", name)


@dataclass
class Kube:
    """The API clients for one kube context."""

    context: str
    dynamic: Any  # kubernetes.dynamic.DynamicClient: get, list, apply, delete, watch
    core: Any  # kubernetes.client.CoreV1Api: pod logs, which the dynamic client cannot stream


def kube_clients(context: str) -> Kube:
    """Clients for one named context; fails clearly when the cluster cannot be reached."""
    from kubernetes import client, config, dynamic

    try:
        api = config.new_client_from_config(config_file=kubeconfig_for(context), context=context)
    except (config.ConfigException, OSError) as error:
        raise Failure(f"kube context {context!r}: {error}") from error
    try:
        dynamic_client = dynamic.DynamicClient(api)
    except Exception as error:  # discovery is the first call: any error means no usable API
        raise Failure(
            f"cannot reach the Kubernetes API of context {context!r} at {api.configuration.host}: {error}"
        ) from error
    return Kube(context=context, dynamic=dynamic_client, core=client.CoreV1Api(api))


# errors


class Forbidden(Failure):
    """The API server answered 403: the kube context lacks an RBAC right."""


def api_message(error: ApiException) -> str:
    """The Status message the API server sent, or the HTTP reason."""
    try:
        return str(json.loads(error.body)["message"])
    except (TypeError, ValueError, KeyError):
        return f"HTTP {error.status} {error.reason}"


def forbidden(
    kube: Kube, verb: str, resource: Any, namespace: str | None, name: str = "", subresource: str = ""
) -> str:
    """The one line a 403 becomes. Its wording is stable: tests and users match on it.

    forbidden: cannot VERB WHAT in namespace 'NS' (kube context 'CTX'): it lacks the RBAC right
    "VERB RESOURCE[.GROUP]" in namespace 'NS'
    """
    right = rbac_right(verb, resource, subresource)
    what = f"{resource.kind}/{name}" if name else _plural(resource)
    if namespace:
        where = scope = f"in namespace {namespace!r}"
    else:
        where, scope = "at cluster scope", "cluster-wide (granted by a ClusterRoleBinding)"
    return (
        f"forbidden: cannot {verb} {what} {where} (kube context {kube.context!r}): "
        f'it lacks the RBAC right "{right}" {scope}'
    )


def rbac_right(verb: str, resource: Any, subresource: str = "") -> str:
    """A right as RBAC rules spell it: "VERB RESOURCE[/SUBRESOURCE][.GROUP]"."""
    group = getattr(resource, "group", "") or ""
    plural = f"{_plural(resource)}/{subresource}" if subresource else _plural(resource)
    return f"{verb} {plural}{'.' + group if group else ''}"


def _plural(resource: Any) -> str:
    return getattr(resource, "name", None) or f"{resource.kind.lower()}s"


@contextmanager
def refused_as_failure(
    kube: Kube, verb: str, resource: Any, namespace: str | None, name: str = "", subresource: str = ""
) -> Iterator[None]:
    """Turn RBAC's 403 from the calls inside into Forbidden, worded by ``forbidden``; other errors
    pass, the 403s of admission (quota, PodSecurity, webhooks) among them, with their own reason."""
    try:
        yield
    except ApiException as error:
        if error.status == 403 and rbac_denied(error):
            raise Forbidden(forbidden(kube, verb, resource, namespace, name, subresource)) from None
        raise


# How the RBAC authorizer words a refusal: `pods is forbidden: User "x" cannot create resource ...`.
RBAC_DENIAL = re.compile(r'\bUser "[^"]*" cannot ')


def rbac_denied(error: ApiException) -> bool:
    """Whether a 403 came from authorization; admission plugins word theirs differently."""
    return bool(RBAC_DENIAL.search(api_message(error))) or not error.body


def require_rights(
    kube: Kube,
    requests: Iterable[tuple[str, str, str, str | None, str]],
    roles: Iterable[dict[str, Any]] = (),
) -> None:
    """Ask the API server, with SelfSubjectAccessReview, whether each request would be allowed,
    before anything is written: a missing right then stops a deploy before it is half-applied.

    ``requests`` are (verb, apiVersion, kind, namespace, name). ``roles`` are the Roles the
    deploy creates, changes or newly binds: Kubernetes lets a Role grant, and a RoleBinding
    bind, only rights its writer holds (RBAC escalation prevention), unless the writer may
    escalate and bind Roles, so each right they grant is asked too.
    Raises Forbidden naming the first refused request, and the other missing rights, on one
    line. An API server that does not serve SelfSubjectAccessReview is not asked; each call
    then reports its own 403.
    """
    try:
        review = resource_of(kube, "authorization.k8s.io/v1", "SelfSubjectAccessReview")
    except ResourceNotFoundError:
        return
    refused: dict[str, str] = {}  # right -> the forbidden() line of its first refusal
    asked: set[tuple[str, str, str | None]] = set()
    for verb, api_version, kind, namespace, name in requests:
        try:
            resource = resource_of(kube, api_version, kind)
        except ResourceNotFoundError:
            continue  # the apply names a kind the cluster does not serve
        namespace = namespace if resource.namespaced else None
        if (verb, kind, namespace) in asked:
            continue
        asked.add((verb, kind, namespace))
        attributes = {"verb": verb, "group": resource.group or "", "resource": resource.name, "name": name}
        if namespace:
            attributes["namespace"] = namespace
        if not _allowed(review, attributes):
            refused.setdefault(rbac_right(verb, resource), forbidden(kube, verb, resource, namespace, name))
    trusted: dict[str, bool] = {}  # namespace -> may escalate and bind Roles there
    granted: set[tuple[str, str]] = set()  # (namespace, right) already asked for a Role
    for role in roles:
        namespace, name = role["metadata"].get("namespace") or "", role["metadata"]["name"]
        if namespace not in trusted:
            trusted[namespace] = all(
                _allowed(
                    review, {"verb": verb, "group": RBAC_GROUP, "resource": "roles", "namespace": namespace}
                )
                for verb in ("escalate", "bind")
            )
        if trusted[namespace]:
            continue  # these let their holder grant, and bind, rights it does not hold itself
        for rule in role.get("rules") or []:
            for group, plural, verb in itertools.product(
                rule.get("apiGroups") or [], rule.get("resources") or [], rule.get("verbs") or []
            ):
                right = f"{verb} {plural}{'.' + group if group else ''}"
                if (namespace, right) in granted:
                    continue
                granted.add((namespace, right))
                resource_name, _, subresource = plural.partition("/")
                attributes = {"verb": verb, "group": group, "resource": resource_name, "namespace": namespace}
                if subresource:
                    attributes["subresource"] = subresource
                if not _allowed(review, attributes):
                    refused.setdefault(
                        right,
                        f"forbidden: cannot apply Role/{name} in namespace {namespace!r} (kube context "
                        f"{kube.context!r}): a Role may grant only rights its writer holds, and it lacks the "
                        f'RBAC right "{right}" in namespace {namespace!r}',
                    )
    if refused:
        first, *others = refused.values()
        also = "; also missing: " + ", ".join(f'"{right}"' for right in list(refused)[1:]) if others else ""
        raise Forbidden(f"{first}{also}")


def _allowed(review: Any, attributes: dict[str, str]) -> bool:
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    answer = as_dict(review.create(body=body, _request_timeout=REQUEST_TIMEOUT))
    return bool((answer.get("status") or {}).get("allowed"))


# objects


def as_dict(value: Any) -> dict[str, Any]:
    """A dynamic client ResourceInstance as a plain dict."""
    return value.to_dict() if hasattr(value, "to_dict") else dict(value)


def key(obj: dict[str, Any]) -> Key:
    metadata = obj.get("metadata") or {}
    group = obj["apiVersion"].rpartition("/")[0]
    return group, obj["kind"], metadata.get("namespace") or "", metadata["name"]


def ref(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def condition(obj: dict[str, Any], kind: str, status_value: str | None = "True") -> dict[str, Any] | None:
    """The condition of that type, if it has the wanted status (any status when None)."""
    for found in (obj.get("status") or {}).get("conditions") or []:
        if found.get("type") == kind and (status_value is None or found.get("status") == status_value):
            return dict(found)
    return None


def resource_of(kube: Kube, api_version: str, kind: str) -> Any:
    return kube.dynamic.resources.get(api_version=api_version, kind=kind)


def _scope(resource: Any, namespace: str | None) -> dict[str, str]:
    return {"namespace": namespace} if resource.namespaced and namespace else {}


def _namespace_of(resource: Any, obj: dict[str, Any]) -> str | None:
    return obj["metadata"].get("namespace") if resource.namespaced else None


def read(kube: Kube, obj: dict[str, Any]) -> dict[str, Any] | None:
    """The live object named like ``obj``, or None."""
    resource = resource_of(kube, obj["apiVersion"], obj["kind"])
    namespace, name = _namespace_of(resource, obj), obj["metadata"]["name"]
    try:
        with refused_as_failure(kube, "get", resource, namespace, name):
            found = resource.get(name=name, _request_timeout=REQUEST_TIMEOUT, **_scope(resource, namespace))
    except ApiException as error:
        if error.status == 404:
            return None
        raise Failure(f"cannot read {ref(obj)}: {api_message(error)}") from None
    return as_dict(found)


def list_objects(
    kube: Kube, resource: Any, namespace: str | None, *, label_selector: str = "", field_selector: str = ""
) -> dict[str, Any]:
    """The list of one kind: in ``namespace`` when namespaced, else across the cluster."""
    namespace = namespace if resource.namespaced else None
    selectors = {"label_selector": label_selector} if label_selector else {}
    if field_selector:
        selectors["field_selector"] = field_selector
    with refused_as_failure(kube, "list", resource, namespace):
        return as_dict(
            resource.get(_request_timeout=REQUEST_TIMEOUT, **selectors, **_scope(resource, namespace))
        )


def server_side_apply(
    kube: Kube, obj: dict[str, Any], field_manager: str, *, dry_run: bool = False
) -> dict[str, Any]:
    """Apply ``obj``; force_conflicts, because the caller is the source of truth for what it sets.

    A ``dry_run`` passes every admission step a write would, and stores nothing.
    """
    resource = resource_of(kube, obj["apiVersion"], obj["kind"])
    namespace = _namespace_of(resource, obj)
    with refused_as_failure(kube, "patch", resource, namespace, obj["metadata"]["name"]):
        return as_dict(
            resource.server_side_apply(
                body=obj,
                field_manager=field_manager,
                force_conflicts=True,
                _request_timeout=REQUEST_TIMEOUT,
                **_dry_run(dry_run),
                **_scope(resource, namespace),
            )
        )


def create(kube: Kube, obj: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
    resource = resource_of(kube, obj["apiVersion"], obj["kind"])
    namespace = _namespace_of(resource, obj)
    name = obj["metadata"].get("name") or obj["metadata"].get("generateName", "")
    with refused_as_failure(kube, "create", resource, namespace, name):
        return as_dict(
            resource.create(
                body=obj, _request_timeout=REQUEST_TIMEOUT, **_dry_run(dry_run), **_scope(resource, namespace)
            )
        )


def _dry_run(dry_run: bool) -> dict[str, str]:
    return {"dry_run": "All"} if dry_run else {}


def delete(kube: Kube, obj: dict[str, Any]) -> None:
    """Delete in the background (dependants follow their owner); gone already is fine."""
    resource = resource_of(kube, obj["apiVersion"], obj["kind"])
    namespace, name = _namespace_of(resource, obj), obj["metadata"]["name"]
    try:
        with refused_as_failure(kube, "delete", resource, namespace, name):
            resource.delete(
                name=name,
                propagation_policy="Background",
                _request_timeout=REQUEST_TIMEOUT,
                **_scope(resource, namespace),
            )
    except ApiException as error:
        if error.status != 404:
            raise Failure(f"cannot delete {ref(obj)}: {api_message(error)}") from None


# pods


def list_pods(kube: Kube, namespace: str, match_labels: dict[str, str]) -> list[dict[str, Any]]:
    if not match_labels:
        return []
    selector = ",".join(f"{k}={v}" for k, v in match_labels.items())
    listed = list_objects(kube, resource_of(kube, "v1", "Pod"), namespace, label_selector=selector)
    return list(listed.get("items") or [])


def pod_events(kube: Kube, namespace: str, pod_name: str) -> list[dict[str, Any]]:
    """The events of one pod, oldest first."""
    selector = f"involvedObject.kind=Pod,involvedObject.name={pod_name}"
    listed = list_objects(kube, resource_of(kube, "v1", "Event"), namespace, field_selector=selector)
    return sorted(listed.get("items") or [], key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


def pod_log_tail(
    kube: Kube, namespace: str, pod: str, container: str, *, previous: bool = False, lines: int = LOG_LINES
) -> str:
    """The last lines of a container's log; of the previous instance for a crashed one."""
    reason = "not found"
    for attempt in (True, False) if previous else (False,):
        try:
            # Unparsed: the client would turn a log that is not JSON into the repr of its bytes.
            response = kube.core.read_namespaced_pod_log(
                name=pod,
                namespace=namespace,
                container=container,
                tail_lines=lines,
                previous=attempt,
                _request_timeout=REQUEST_TIMEOUT,
                _preload_content=False,
            )
        except ApiException as error:
            reason = api_message(error)
            continue
        text = response.data.decode(errors="replace")
        return "\n".join(f"  | {line}" for line in text.rstrip().splitlines()) or "  (empty log)"
    return f"  (no log: {reason})"
