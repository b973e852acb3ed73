"""Objects, resource versions, selectors, patches and watches (in memory).

Every mutation goes through admission (a callable that raises ApiError 422) and bumps one
global resourceVersion, recorded in a bounded event history that watches replay from; a
watch from before that history gets 410 Gone. The store serves the rehearsal's pods
(tests/stack) only: the API-level tests run on the real API server (tests/controlplane).
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

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


# The kinds the kind and okteto overlays render, the Secrets and the Namespace the rehearsal
# creates, pods, and events (smoke's diagnostics list them).
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


PATCHES: dict[str, Callable[[Obj, Any], Obj]] = {
    "application/merge-patch+json": merge_patch,
    "application/strategic-merge-patch+json": strategic_merge_patch,
}


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
        # pod (namespace, name) -> reads a container's log: (container, tail lines) -> text
        self.log_readers: dict[tuple[str, str], Callable[[str, int | None], str]] = {}

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
