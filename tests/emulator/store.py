"""Objects, resource versions, selectors, patches, server-side apply and watches (in memory).

Every mutation goes through admission (a callable that raises ApiError 422) and bumps one
global resourceVersion, recorded in a bounded event history that watches replay from. A
write that changes nothing (a server-side apply of what is already there) stores nothing.
"""

from __future__ import annotations

import copy
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

Obj = dict[str, Any]


class ApiError(Exception):
    """An error the API answers with a Status object."""

    REASONS: ClassVar[dict[int, str]] = {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        405: "MethodNotAllowed",
        409: "AlreadyExists",
        410: "Expired",
        415: "UnsupportedMediaType",
        422: "Invalid",
    }

    def __init__(self, code: int, message: str, reason: str = ""):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or self.REASONS.get(code, "InternalError")

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    status: bool = False  # has a status subresource
    stored: bool = True  # False for a review: only created, answered at once, never stored

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


# The kinds the overlays render, pods, events (smoke's diagnostics list them), every kind
# deploy's inventory lists (deploy.LABELLED_KINDS), and the access review deploy asks.
RESOURCES = [
    Resource("", "v1", "Namespace", "namespaces", namespaced=False, status=True),
    Resource("", "v1", "Pod", "pods", status=True),
    Resource("", "v1", "ConfigMap", "configmaps"),
    Resource("", "v1", "Secret", "secrets"),
    Resource("", "v1", "Service", "services", status=True),
    Resource("", "v1", "ServiceAccount", "serviceaccounts"),
    Resource("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", status=True),
    Resource("", "v1", "PersistentVolume", "persistentvolumes", namespaced=False, status=True),
    Resource("", "v1", "Event", "events"),
    Resource("apps", "v1", "Deployment", "deployments", status=True),
    Resource("apps", "v1", "StatefulSet", "statefulsets", status=True),
    Resource("batch", "v1", "Job", "jobs", status=True),
    Resource("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", status=True),
    Resource("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies"),
    Resource("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    Resource("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    Resource("networking.k8s.io", "v1", "Ingress", "ingresses", status=True),
    Resource("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", status=True),
    Resource("apps", "v1", "DaemonSet", "daemonsets", status=True),
    Resource("apps", "v1", "ReplicaSet", "replicasets", status=True),
    Resource("batch", "v1", "CronJob", "cronjobs", status=True),
    Resource(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        namespaced=False,
        stored=False,
    ),
]
BY_PLURAL = {(r.group, r.plural): r for r in RESOURCES}
BY_KIND = {(r.api_version, r.kind): r for r in RESOURCES}
DEFAULT_GRACE_SECONDS = 30


def now(offset: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- selectors -----------------------------------------------------------------------

Requirement = tuple[str, str, frozenset[str]]  # key, operator, values
LABEL_TERM = re.compile(
    r"^\s*(?P<neg>!)?(?P<key>[A-Za-z0-9_./-]+)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9_.-]*)|\s+(?P<set>in|notin)\s*\((?P<values>[^)]*)\))?\s*$"
)


def split_terms(selector: str) -> list[str]:
    """Split on commas outside parentheses."""
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    return [t for t in [*terms, current] if t.strip()]


def parse_label_selector(selector: str) -> list[Requirement]:
    requirements: list[Requirement] = []
    for term in split_terms(selector or ""):
        found = LABEL_TERM.match(term)
        if not found:
            raise ApiError(400, f"unable to parse requirement: {term!r} in label selector {selector!r}")
        key = found["key"]
        if found["neg"]:
            if found["op"] or found["set"]:
                raise ApiError(400, f"unable to parse requirement: {term!r}")
            requirements.append((key, "!", frozenset()))
        elif found["op"]:
            op = "!=" if found["op"] == "!=" else "="
            requirements.append((key, op, frozenset({found["value"]})))
        elif found["set"]:
            values = frozenset(v.strip() for v in found["values"].split(",") if v.strip())
            requirements.append((key, found["set"], values))
        else:
            requirements.append((key, "exists", frozenset()))
    return requirements


def labels_match(requirements: list[Requirement], labels: dict[str, str]) -> bool:
    for key, op, values in requirements:
        present = key in labels
        value = labels.get(key)
        if op == "=" and value not in values:
            return False
        # As in Kubernetes, != and notin also match objects without the label.
        if op in ("!=", "notin") and present and value in values:
            return False
        if op == "in" and value not in values:
            return False
        if (op == "exists" and not present) or (op == "!" and present):
            return False
    return True


FIELD_LABELS = {
    "pods": {"metadata.name", "metadata.namespace", "status.phase", "spec.nodeName", "spec.restartPolicy"},
    "events": {
        "metadata.name",
        "metadata.namespace",
        "involvedObject.kind",
        "involvedObject.name",
        "involvedObject.namespace",
        "reason",
        "type",
    },
}


def parse_field_selector(plural: str, selector: str) -> list[Requirement]:
    supported = FIELD_LABELS.get(plural, {"metadata.name", "metadata.namespace"})
    requirements: list[Requirement] = []
    for term in split_terms(selector or ""):
        found = re.match(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not found:
            raise ApiError(400, f"invalid field selector term {term!r}")
        field, op, value = found.groups()
        if field not in supported:
            raise ApiError(400, f'field label not supported: "{field}" for {plural}')
        requirements.append((field, "!=" if op == "!=" else "=", frozenset({value})))
    return requirements


def field_value(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def fields_match(requirements: list[Requirement], obj: Obj) -> bool:
    return labels_match(requirements, {path: field_value(obj, path) for path, _, _ in requirements})


@dataclass(frozen=True)
class Selector:
    labels: list[Requirement]
    fields: list[Requirement]

    @classmethod
    def parse(cls, plural: str, label_selector: str = "", field_selector: str = "") -> Selector:
        return cls(parse_label_selector(label_selector), parse_field_selector(plural, field_selector))

    def matches(self, obj: Obj) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return labels_match(self.labels, labels) and fields_match(self.fields, obj)


# -- patches ---------------------------------------------------------------------------


def require_version(resource: Resource, current: Obj, sent: str | None) -> None:
    """Optimistic concurrency: a write that names a resourceVersion must name the current one."""
    if sent and sent != current["metadata"]["resourceVersion"]:
        raise ApiError(
            409,
            f'Operation cannot be fulfilled on {resource.plural} "{current["metadata"]["name"]}": the object '
            "has been modified; please apply your changes to the latest version and try again",
            reason="Conflict",
        )


def refuse_immutable_job_change(current: Obj, wanted: Obj) -> None:
    """A Job's pod template and selector are immutable once it exists (422, as Kubernetes says)."""
    for field in ("template", "selector"):
        if (wanted.get("spec") or {}).get(field) != (current.get("spec") or {}).get(field):
            name = current["metadata"]["name"]
            raise ApiError(
                422, f'Job.batch "{name}" is invalid: spec.{field}: Invalid value: ...: field is immutable'
            )


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Obj, patch: Any) -> Obj:
    """Strategic merge patch of maps only: for maps it is exactly a merge patch.

    Lists (merged by key in Kubernetes) and $-directives would need each field's patch
    strategy; they are refused rather than guessed.
    """

    def refuse_unsupported(value: Any, path: str) -> None:
        if isinstance(value, list):
            raise ApiError(415, f"the emulator supports strategic merge patch of maps only; list at {path}")
        if isinstance(value, dict):
            for key, item in value.items():
                if key.startswith("$"):
                    raise ApiError(415, f"the emulator does not support the directive {key} at {path}")
                refuse_unsupported(item, f"{path}.{key}")

    if not isinstance(patch, dict):
        raise ApiError(400, "a strategic merge patch must be a JSON object")
    refuse_unsupported(patch, "")
    result: Obj = merge_patch(target, patch)
    return result


def json_patch(target: Obj, operations: Any) -> Obj:
    """RFC 6902 JSON patch: add, remove, replace and test."""
    if not isinstance(operations, list):
        raise ApiError(400, "a JSON patch must be a list of operations")
    document: Any = copy.deepcopy(target)
    for operation in operations:
        op, path = operation.get("op"), operation.get("path", "")
        parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
        if not parts or op not in ("add", "remove", "replace", "test"):
            raise ApiError(422, f"unsupported JSON patch operation {operation}")
        parent = document
        try:
            for part in parts[:-1]:
                parent = parent[int(part)] if isinstance(parent, list) else parent[part]
            last: Any = parts[-1]
            if isinstance(parent, list):
                last = len(parent) if last == "-" else int(last)
            if op == "test":
                if parent[last] != operation.get("value"):
                    raise ApiError(422, f"JSON patch test failed at {path}")
            elif op == "remove":
                del parent[last]
            elif op == "add" and isinstance(parent, list):
                parent.insert(last, operation["value"])
            else:
                if op == "replace" and (last not in parent if isinstance(parent, dict) else False):
                    raise ApiError(422, f"JSON patch replace: {path} does not exist")
                parent[last] = operation["value"]
        except (KeyError, IndexError, ValueError, TypeError) as error:
            raise ApiError(422, f"JSON patch {op} at {path}: {error}") from None
    if not isinstance(document, dict):
        raise ApiError(422, "a JSON patch must leave an object")
    return document


PATCHES: dict[str, Callable[[Obj, Any], Obj]] = {
    "application/json-patch+json": json_patch,
    "application/merge-patch+json": merge_patch,
    "application/strategic-merge-patch+json": strategic_merge_patch,
}


# -- server-side apply ---------------------------------------------------------------------

APPLY_PATCH = "application/apply-patch+yaml"
FieldPath = tuple[str, ...]
IDENTITY: frozenset[FieldPath] = frozenset(
    {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace")}
)
SERVER_SET_METADATA = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
)
_ABSENT = object()


def applied_fields(config: Obj) -> frozenset[FieldPath]:
    """The fields an apply configuration sets: maps are walked; a list, a scalar or an empty
    map is one field (lists are atomic here: see Store.apply)."""

    def walk(value: Any, path: FieldPath) -> Iterator[FieldPath]:
        if isinstance(value, dict) and value:
            for name, item in value.items():
                yield from walk(item, (*path, str(name)))
        else:
            yield path

    return frozenset(walk(config, ())) - IDENTITY


def value_at(obj: Any, path: FieldPath) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return _ABSENT
        obj = obj[part]
    return obj


def remove_field(obj: Obj, path: FieldPath) -> None:
    """Remove one field, and the maps that held only it."""
    parents: list[Obj] = [obj]
    for part in path[:-1]:
        child = parents[-1].get(part)
        if not isinstance(child, dict):
            return
        parents.append(child)
    parents[-1].pop(path[-1], None)
    for depth in range(len(path) - 1, 0, -1):
        if parents[depth]:
            break
        parents[depth - 1].pop(path[depth - 1], None)


def merge_applied(live: Obj, config: Obj) -> None:
    """Set every field of the configuration on the live object: maps merge, the rest replaces."""
    for name, value in config.items():
        if isinstance(value, dict) and isinstance(live.get(name), dict):
            merge_applied(live[name], value)
        else:
            live[name] = copy.deepcopy(value)


# -- the store -------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    version: int
    type: str  # ADDED, MODIFIED, DELETED
    plural: str
    namespace: str
    obj: Obj
    old: Obj | None


Key = tuple[str, str, str]  # plural, namespace, name


class Store:
    """All objects, one resourceVersion counter, and the recent events watches replay."""

    def __init__(self, admit: Callable[[Obj], None] = lambda obj: None, history: int = 2000):
        self.admit = admit
        self._changed = threading.Condition()
        self._objects: dict[Key, Obj] = {}
        self._version = 0
        self._events: deque[Event] = deque(maxlen=history)
        self._compacted = 0  # watches from a version below this get 410 Gone
        # What each field manager applied last, per object: the fields it owns (see apply).
        self._owners: dict[Key, dict[str, frozenset[FieldPath]]] = {}
        # pod (namespace, name) -> reads a container's log: (container, tail lines) -> text
        self.log_readers: dict[tuple[str, str], Callable[[str, int | None], str]] = {}

    @property
    def version(self) -> int:
        return self._version

    # reads

    def get(self, resource: Resource, namespace: str, name: str) -> Obj:
        with self._changed:
            found = self._objects.get((resource.plural, namespace, name))
            if found is None:
                raise ApiError(404, f'{resource.plural} "{name}" not found')
            return copy.deepcopy(found)

    def list(self, resource: Resource, namespace: str, selector: Selector) -> tuple[list[Obj], int]:
        with self._changed:
            items = [
                copy.deepcopy(obj)
                for (plural, ns, _), obj in sorted(self._objects.items())
                if plural == resource.plural and (not namespace or ns == namespace) and selector.matches(obj)
            ]
            return items, self._version

    # writes

    def create(self, resource: Resource, namespace: str, body: Obj) -> Obj:
        obj = copy.deepcopy(body)
        metadata = obj.setdefault("metadata", {})
        if (obj.get("apiVersion"), obj.get("kind")) != (resource.api_version, resource.kind):
            raise ApiError(
                400, f"the body is {obj.get('apiVersion')}/{obj.get('kind')}, the URL names {resource.kind}"
            )
        if resource.namespaced:
            if metadata.get("namespace", namespace) != namespace:
                raise ApiError(400, "the namespace of the provided object does not match the namespace sent")
            metadata["namespace"] = namespace
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
        name = metadata.get("name")
        if not name:
            raise ApiError(422, f"{resource.kind}: metadata.name: Required value: name or generateName")
        for server_set in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "generation"):
            metadata.pop(server_set, None)
        if resource.status:
            obj.pop("status", None)
        if resource.kind == "Pod":
            obj["status"] = {"phase": "Pending", "qosClass": "Burstable"}
        metadata.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        with self._changed:
            key = (resource.plural, namespace if resource.namespaced else "", name)
            if key in self._objects:
                raise ApiError(409, f'{resource.plural} "{name}" already exists')
            self.admit(obj)
            return self._commit(key, "ADDED", obj, None)

    def update(self, resource: Resource, namespace: str, name: str, body: Obj, subresource: str = "") -> Obj:
        with self._changed:
            current = self.get(resource, namespace, name)
            require_version(resource, current, (body.get("metadata") or {}).get("resourceVersion"))
            return self._replace(resource, current, body, subresource)

    def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: Any,
        content_type: str,
        subresource: str = "",
    ) -> Obj:
        apply = PATCHES.get(content_type)
        if apply is None:
            raise ApiError(415, f"the emulator does not support the patch type {content_type!r}")
        with self._changed:
            current = self.get(resource, namespace, name)
            return self._replace(resource, current, apply(current, patch), subresource)

    def apply(
        self, resource: Resource, namespace: str, name: str, config: Any, manager: str, force: bool
    ) -> tuple[Obj, bool]:
        """Server-side apply of ``config`` as field manager ``manager``: (the object, whether created).

        As in Kubernetes: an upsert (an absent object is created from the configuration); on
        an existing object the configuration's fields are set, and the fields this manager
        applied last time and omits now are removed, unless another manager applied them too;
        setting a field another manager applied, to another value, is a 409 Conflict unless
        ``force``, which takes the field over; a result equal to the live object is not
        stored, so resourceVersion and generation stay put; status is ignored on the main
        resource; admission validates the result.

        Simplified: lists are atomic (replaced whole, where Kubernetes merges keyed lists such
        as containers item by item); ownership is recorded for appliers only, so a field that
        a create, update or patch changed still belongs to the manager that applied it; the
        owned fields are kept beside the object, not in ``metadata.managedFields`` (which is
        never set), so a change of ownership alone stores nothing; no defaulting.
        """
        if not isinstance(config, dict):
            raise ApiError(400, "an apply configuration must be an object")
        if (config.get("apiVersion"), config.get("kind")) != (resource.api_version, resource.kind):
            raise ApiError(
                400,
                f"the body is {config.get('apiVersion')}/{config.get('kind')}, the URL names {resource.kind}",
            )
        config = copy.deepcopy(config)
        metadata = config.get("metadata")
        if not isinstance(metadata, dict) or metadata.get("name") != name:
            sent = metadata.get("name") if isinstance(metadata, dict) else None
            raise ApiError(
                400, f"the name of the object ({sent}) does not match the name on the URL ({name})"
            )
        if resource.namespaced and metadata.get("namespace", namespace) != namespace:
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent")
        if "managedFields" in metadata:
            raise ApiError(400, "metadata.managedFields must be nil in an apply configuration")
        expected_version = metadata.get("resourceVersion")
        for server_set in SERVER_SET_METADATA:
            metadata.pop(server_set, None)
        if resource.status:
            config.pop("status", None)
        fields = applied_fields(config)
        key = (resource.plural, namespace if resource.namespaced else "", name)
        with self._changed:
            current = self._objects.get(key)
            if current is None:
                created = self.create(resource, namespace, config)
                self._owners[key] = {manager: fields}
                return created, True
            require_version(resource, current, expected_version)
            owners = self._owners.setdefault(key, {})
            taken: dict[str, set[FieldPath]] = {}
            for other, owned in owners.items():
                if other == manager:
                    continue
                for path in fields & owned:
                    if value_at(current, path) != value_at(config, path):
                        taken.setdefault(other, set()).add(path)
            if taken and not force:
                conflicts = "; ".join(
                    f'conflict with "{other}": .{".".join(path)}'
                    for other, paths in sorted(taken.items())
                    for path in sorted(paths)
                )
                raise ApiError(
                    409,
                    f"Apply failed with {sum(map(len, taken.values()))} conflicts: {conflicts}",
                    "Conflict",
                )
            others: set[FieldPath] = set()
            for other, owned in owners.items():
                if other != manager:
                    others |= owned - taken.get(other, set())
            result = copy.deepcopy(current)
            for path in sorted(owners.get(manager, frozenset()) - fields, key=len, reverse=True):
                if path not in others:
                    remove_field(result, path)
            merge_applied(result, config)
            stored = current if result == current else self._replace(resource, current, result, "")
            for other, paths in taken.items():
                owners[other] = owners[other] - paths
            owners[manager] = fields
            return copy.deepcopy(stored), False

    def exists(self, resource: Resource, namespace: str, name: str) -> bool:
        with self._changed:
            return (resource.plural, namespace if resource.namespaced else "", name) in self._objects

    def _replace(self, resource: Resource, current: Obj, wanted: Obj, subresource: str) -> Obj:
        if subresource not in ("", "status") or (subresource == "status" and not resource.status):
            raise ApiError(404, f"{resource.plural} has no subresource {subresource!r}")
        if subresource == "status":  # only the status changes
            obj = copy.deepcopy(current)
            obj["status"] = copy.deepcopy(wanted.get("status") or {})
        else:
            obj = copy.deepcopy(wanted)
            if resource.status:  # the status is changed only through its subresource
                obj["status"] = copy.deepcopy(current.get("status"))
                if obj["status"] is None:
                    del obj["status"]
        metadata, before = obj.setdefault("metadata", {}), current["metadata"]
        for immutable in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp"):
            if immutable in before:
                metadata[immutable] = before[immutable]
            else:
                metadata.pop(immutable, None)
        if subresource == "" and resource.kind == "Job":
            refuse_immutable_job_change(current, obj)
        metadata["generation"] = before.get("generation", 1)
        if subresource == "" and {k: v for k, v in obj.items() if k not in ("metadata", "status")} != {
            k: v for k, v in current.items() if k not in ("metadata", "status")
        }:
            metadata["generation"] += 1
        key = (resource.plural, before.get("namespace", ""), before["name"])
        self.admit(obj)
        return self._commit(key, "MODIFIED", obj, current)

    def delete(self, resource: Resource, namespace: str, name: str, grace_seconds: int | None) -> Obj:
        """Pods terminate gracefully: a deletionTimestamp now, removal by the runner later."""
        with self._changed:
            current = self.get(resource, namespace, name)
            key = (resource.plural, namespace if resource.namespaced else "", name)
            if resource.kind != "Pod" or grace_seconds == 0:
                return self._remove(key, current)
            if current["metadata"].get("deletionTimestamp"):
                return current
            if grace_seconds is None:
                grace_seconds = int(
                    current["spec"].get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
                )
            obj = copy.deepcopy(current)
            obj["metadata"]["deletionTimestamp"] = now(grace_seconds)
            obj["metadata"]["deletionGracePeriodSeconds"] = grace_seconds
            return self._commit(key, "MODIFIED", obj, current)

    def remove(self, resource: Resource, namespace: str, name: str) -> Obj:
        """Take an object away for good, as the kubelet does after a pod terminated."""
        with self._changed:
            current = self.get(resource, namespace, name)
            return self._remove((resource.plural, namespace if resource.namespaced else "", name), current)

    def _remove(self, key: Key, current: Obj) -> Obj:
        del self._objects[key]
        self._owners.pop(key, None)
        self.log_readers.pop((key[1], key[2]), None)
        self._version += 1
        gone = copy.deepcopy(current)
        gone["metadata"]["resourceVersion"] = str(self._version)
        self._record(Event(self._version, "DELETED", key[0], key[1], gone, current))
        return copy.deepcopy(gone)

    def _commit(self, key: Key, event_type: str, obj: Obj, old: Obj | None) -> Obj:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        self._objects[key] = obj
        self._record(Event(self._version, event_type, key[0], key[1], copy.deepcopy(obj), old))
        return copy.deepcopy(obj)

    def _record(self, event: Event) -> None:
        if len(self._events) == self._events.maxlen:
            self._compacted = self._events[0].version
        self._events.append(event)
        self._changed.notify_all()

    def compact(self) -> None:
        """Forget the event history, as etcd compaction does: older watches get 410 Gone."""
        with self._changed:
            self._events.clear()
            self._compacted = self._version

    # watches

    def watch(
        self,
        resource: Resource,
        namespace: str,
        selector: Selector,
        since: str,
        timeout: float,
        stopped: Callable[[], bool] = lambda: False,
    ) -> Iterator[tuple[str, Obj]]:
        """(type, object) events after `since`; "" or "0" first replays what exists now as ADDED.

        A watch from a version older than the history yields one ERROR event with a 410
        Status, as the API server does; it ends after `timeout` seconds.
        """
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.daemon = True
        timer.start()
        try:
            with self._changed:
                if since in ("", "0"):
                    items, cursor = self.list(resource, namespace, selector)
                    replay = [("ADDED", item) for item in items]
                else:
                    cursor = int(since)
                    if cursor < self._compacted:
                        gone = ApiError(
                            410, f"too old resource version: {cursor} ({self._compacted})", reason="Expired"
                        )
                        replay, cursor = [("ERROR", gone.status())], -1
                    else:
                        replay = []
            yield from replay
            while cursor >= 0 and not deadline.is_set() and not stopped():
                with self._changed:
                    if self._version <= cursor:
                        self._changed.wait(timeout=1)
                    events = [e for e in self._events if e.version > cursor]
                    cursor = max(cursor, self._version)
                for event in events:
                    shown = self._as_seen(event, resource, namespace, selector)
                    if shown:
                        yield shown
        finally:
            timer.cancel()

    @staticmethod
    def _as_seen(
        event: Event, resource: Resource, namespace: str, selector: Selector
    ) -> tuple[str, Obj] | None:
        """The event as this watcher sees it: objects entering or leaving its selector are ADDED/DELETED."""
        if event.plural != resource.plural or (namespace and event.namespace != namespace):
            return None
        now_matches = selector.matches(event.obj)
        was_matching = event.old is not None and selector.matches(event.old)
        if event.type == "DELETED":
            return ("DELETED", event.obj) if was_matching else None
        if event.type == "ADDED":
            return ("ADDED", event.obj) if now_matches else None
        if now_matches:
            return ("MODIFIED" if was_matching else "ADDED", event.obj)
        return ("DELETED", event.obj) if was_matching else None
