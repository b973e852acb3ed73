"""Admission: what the API server rejects with 422 although the OpenAPI schema allows it.

kubernetes-validate checks the schema only; these are the rules of the API server's own
validation (k8s.io/kubernetes pkg/apis/*/validation) that users of Kubernetes hit most,
for every kind the overlays render. An object that breaks one is refused halfway through
`kubectl apply`, leaving the deployment half-applied. Quantities are parsed with the
Kubernetes client's parse_quantity, after Kubernetes' own stricter format check.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from ... import manifests
from ...manifests import Manifest, items, mapping
from .. import netpol, workloads
from ..fields import get
from ..problems import Problem
from ..render import Rendered, Target, per_overlay
from ..workloads import Finding

NAME = "admission"
QUANTITY = f"{NAME}/quantity"
LIMIT_BELOW_REQUEST = f"{NAME}/limit-below-request"
INVALID_NAME = f"{NAME}/name"
INVALID_LABEL = f"{NAME}/label"
DUPLICATE = f"{NAME}/duplicate"
SELECTOR = f"{NAME}/selector"
ENV_NAME = f"{NAME}/env-name"
RESTART_POLICY = f"{NAME}/restart-policy"
DISRUPTION_BUDGET = f"{NAME}/disruption-budget"
SERVICE_PORTS = f"{NAME}/service-ports"
ROLLOUT_STRATEGY = f"{NAME}/rollout-strategy"
RULES = {
    QUANTITY: "a resource quantity (requests, limits, storage, sizeLimit) that does not parse, or is "
    "negative",
    LIMIT_BELOW_REQUEST: "a container's limit below its request",
    INVALID_NAME: "a name the API server refuses for its kind: objects (DNS-1123 subdomain or label, "
    "DNS-1035 for Services, path segment for RBAC), containers, volumes, ports",
    INVALID_LABEL: "a label key or value that is not a valid qualified name / label value",
    DUPLICATE: "two containers, volumes, port names of one container, or mountPaths of one container "
    "with the same name or path",
    SELECTOR: "a Deployment, StatefulSet, DaemonSet, ReplicaSet or Job selector that is empty or does not "
    "match its own pod template's labels",
    ENV_NAME: "an environment variable name Kubernetes 1.30 refuses",
    RESTART_POLICY: "a restartPolicy the kind does not allow (Always for workloads; Never or OnFailure "
    "for Jobs)",
    DISRUPTION_BUDGET: "a PodDisruptionBudget with both minAvailable and maxUnavailable, or a value out "
    "of range",
    SERVICE_PORTS: "Service ports: unnamed when there are several, duplicate names or port/protocol, a "
    "nodePort out of 30000-32767 or on a type that has none",
    ROLLOUT_STRATEGY: "a Deployment rollout with maxSurge and maxUnavailable both 0, over 100%, or "
    "rollingUpdate under type Recreate",
}

DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1123_SUBDOMAIN = re.compile(rf"{DNS1123_LABEL.pattern}(\.{DNS1123_LABEL.pattern})*")
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
IANA_SERVICE_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
LABEL_VALUE = re.compile(rf"({QUALIFIED_NAME.pattern})?")
# Kubernetes 1.30's rule; later versions relax it, but the manifests must pass 1.30 too.
ENV_VAR_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
# resource.ParseQuantity's format: parse_quantity alone also takes "500mi", "1 Gi" and "1K".
QUANTITY_FORMAT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?")
NODE_PORT_RANGE = range(30000, 32768)  # the API server's default --service-node-port-range

SUBDOMAIN_KINDS = {
    "ConfigMap",
    "Secret",
    "ServiceAccount",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Pod",
    "PersistentVolumeClaim",
    "PersistentVolume",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "Ingress",
    "StorageClass",
    "PriorityClass",
    "HorizontalPodAutoscaler",
}
RBAC_KINDS = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
NAME_LIMITS = {"Job": 63, "CronJob": 52}  # a Job's name becomes a label value; CronJob adds 11 characters
WORKLOAD_SELECTOR_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}


def run(target: Target) -> Iterator[Problem]:
    def admission(rendered: Rendered) -> Iterator[Problem]:
        return workloads.as_problems(findings(rendered.all))

    return per_overlay(target, admission)


def findings(objects: list[Manifest]) -> Iterator[Finding]:
    for manifest in objects:
        yield from _object_name(manifest)
        yield from _labels(manifest, "metadata.labels", mapping(manifest.obj.get("metadata")).get("labels"))
        for path, pod in manifests.pod_specs(manifest):
            template_labels = f"{path.removesuffix('.spec')}.metadata.labels" if path != "spec" else ""
            if template_labels:
                yield from _labels(manifest, template_labels, get(manifest.obj, template_labels))
            yield from _pod(manifest, path, pod)
        yield from _storage(manifest)
        if manifest.kind in WORKLOAD_SELECTOR_KINDS | {"Job"}:
            yield from _selector(manifest)
        if manifest.kind == "PodDisruptionBudget":
            yield from _disruption_budget(manifest)
        if manifest.kind == "Service":
            yield from _service(manifest)
        if manifest.kind == "Deployment":
            yield from _strategy(manifest)


def _pattern_error(value: str, pattern: re.Pattern[str], what: str, limit: int) -> str | None:
    if len(value) > limit:
        return f"{value!r} is longer than {limit} characters, the limit for {what}"
    if not pattern.fullmatch(value):
        return f"{value!r} is not a valid {what}"
    return None


def name_error(kind: str, name: str) -> str | None:
    """Why the API server refuses ``name`` for an object of ``kind``, if it does."""
    if kind in RBAC_KINDS:
        if name in {".", ".."} or "/" in name or "%" in name:
            return f"{name!r} is not a valid {kind} name: it may not be '.' or '..' or hold '/' or '%'"
        return None
    if kind == "Namespace":
        rule = (DNS1123_LABEL, "DNS-1123 label (lower-case letters, digits and '-')", 63)
    elif kind == "Service":
        rule = (DNS1035_LABEL, "DNS-1035 label (a lower-case letter, then letters, digits and '-')", 63)
    else:
        limit = NAME_LIMITS.get(kind, 253)
        rule = (DNS1123_SUBDOMAIN, "DNS-1123 subdomain (lower-case letters, digits, '-' and '.')", limit)
    pattern, what, limit = rule
    return _pattern_error(name, pattern, f"{kind} name, a {what}", limit)


def _object_name(manifest: Manifest) -> Iterator[Finding]:
    name = mapping(manifest.obj.get("metadata")).get("name")
    if not isinstance(name, str):
        return  # the schema requires it
    named_kinds = SUBDOMAIN_KINDS | RBAC_KINDS | {"Namespace", "Service", "Job", "CronJob"}
    if manifest.kind in named_kinds and (message := name_error(manifest.kind, name)):
        yield INVALID_NAME, manifest, "metadata.name", message


def label_error(key: str, value: Any) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.fullmatch(prefix)):
        return f"label key {key!r}: its prefix {prefix!r} is not a DNS-1123 subdomain"
    if len(name) > 63 or not QUALIFIED_NAME.fullmatch(name):
        return (
            f"label key {key!r}: the name part must be at most 63 characters, alphanumerics, '-', '_' "
            "or '.', starting and ending with an alphanumeric"
        )
    text = "" if value is None else str(value)
    if len(text) > 63 or not LABEL_VALUE.fullmatch(text):
        return (
            f"label {key}: value {text!r} must be at most 63 characters, alphanumerics, '-', '_' or '.', "
            "starting and ending with an alphanumeric"
        )
    return None


def _labels(manifest: Manifest, field: str, labels: Any) -> Iterator[Finding]:
    for key, value in mapping(labels).items():
        if message := label_error(str(key), value):
            yield INVALID_LABEL, manifest, f"{field}.{key}", message


def quantity_error(value: Any) -> str | None:
    """Why Kubernetes refuses a resource quantity, if it does."""
    text = str(value).strip() if isinstance(value, int | float) else value
    if not isinstance(text, str) or not QUANTITY_FORMAT.fullmatch(text):
        return (
            f"{value!r} is not a quantity: a number with an optional suffix (m, k, M, G, Ki, Mi, Gi, ...), "
            "no space; memory in Mi is 'Mi', not 'mi' or 'MB'"
        )
    try:
        parsed = parse_quantity(text)
    except ValueError as error:
        return f"{value!r} is not a quantity: {error}"
    if parsed < 0:
        return f"{value!r} is negative: it must be at least 0"
    return None


def _quantities(values: Any) -> Iterator[tuple[str, Decimal]]:
    """(resource, value) of the quantities that parse."""
    for resource, value in mapping(values).items():
        if quantity_error(value) is None:
            yield str(resource), Decimal(str(parse_quantity(value)))


def _pod(manifest: Manifest, path: str, pod: dict[str, Any]) -> Iterator[Finding]:
    containers = list(manifests.containers(pod))
    seen_containers: set[str] = set()
    for container_path, container in containers:
        where = f"{path}.{container_path}"
        name = str(container.get("name", ""))
        if message := _pattern_error(name, DNS1123_LABEL, "container name, a DNS-1123 label", 63):
            yield INVALID_NAME, manifest, f"{where}.name", message
        if name in seen_containers:
            yield DUPLICATE, manifest, f"{where}.name", f"two containers of the pod are named {name!r}"
        seen_containers.add(name)
        yield from _resources(manifest, where, mapping(container.get("resources")))
        port_names: set[str] = set()
        for port in items(container.get("ports")):
            port_name = port.get("name")
            if port_name is None:
                continue
            port_field = f"{where}.ports[{port_name}]"
            if message := _port_name_error(str(port_name)):
                yield INVALID_NAME, manifest, port_field, message
            if str(port_name) in port_names:
                yield DUPLICATE, manifest, port_field, f"two ports of the container are named {port_name!r}"
            port_names.add(str(port_name))
        mount_paths: set[str] = set()
        for mount in items(container.get("volumeMounts")):
            mount_path = str(mount.get("mountPath", ""))
            if mount_path in mount_paths:
                message = f"two volumeMounts of the container use mountPath {mount_path!r}: it must be unique"
                yield DUPLICATE, manifest, f"{where}.volumeMounts[{mount.get('name')}]", message
            mount_paths.add(mount_path)
        for variable in items(container.get("env")):
            env_name = str(variable.get("name", ""))
            if not ENV_VAR_NAME.fullmatch(env_name):
                message = (
                    f"{env_name!r} is not a valid environment variable name for Kubernetes 1.30: letters, "
                    "digits, '_', '-' and '.', not starting with a digit"
                )
                yield ENV_NAME, manifest, f"{where}.env[{env_name}]", message
    volume_names: set[str] = set()
    for volume in items(pod.get("volumes")):
        volume_name = str(volume.get("name", ""))
        field = f"{path}.volumes[{volume_name}]"
        if message := _pattern_error(volume_name, DNS1123_LABEL, "volume name, a DNS-1123 label", 63):
            yield INVALID_NAME, manifest, field, message
        if volume_name in volume_names:
            yield DUPLICATE, manifest, field, f"two volumes of the pod are named {volume_name!r}"
        volume_names.add(volume_name)
        size = mapping(volume.get("emptyDir")).get("sizeLimit")
        if size is not None and (message := quantity_error(size)):
            yield QUANTITY, manifest, f"{field}.emptyDir.sizeLimit", message
    yield from _restart_policy(manifest, path, pod)


def _port_name_error(name: str) -> str | None:
    if (
        len(name) > 15
        or not IANA_SERVICE_NAME.fullmatch(name)
        or "--" in name
        or not re.search("[a-z]", name)
    ):
        return (
            f"port name {name!r} is not an IANA service name: at most 15 lower-case letters, digits and "
            "'-', with a letter, no '--', not starting or ending with '-'"
        )
    return None


def _resources(manifest: Manifest, where: str, resources: dict[str, Any]) -> Iterator[Finding]:
    parsed: dict[str, dict[str, Decimal]] = {}
    for kind in ("requests", "limits"):
        values = resources.get(kind) or {}
        for resource, value in values.items() if isinstance(values, dict) else ():
            if message := quantity_error(value):
                yield QUANTITY, manifest, f"{where}.resources.{kind}.{resource}", message
        parsed[kind] = dict(_quantities(values))
    for resource, request in parsed["requests"].items():
        limit = parsed["limits"].get(resource)
        if limit is not None and limit < request:
            limit_text, request_text = resources["limits"][resource], resources["requests"][resource]
            message = (
                f"the {resource} limit {limit_text} is below the request {request_text}: the API server "
                "refuses it; raise the limit or lower the request"
            )
            yield LIMIT_BELOW_REQUEST, manifest, f"{where}.resources.limits.{resource}", message


def _storage(manifest: Manifest) -> Iterator[Finding]:
    spec = mapping(manifest.obj.get("spec"))
    places: list[tuple[str, Any]] = []
    if manifest.kind == "PersistentVolumeClaim":
        places.append(("spec.resources.requests", get(spec, "resources.requests")))
        places.append(("spec.resources.limits", get(spec, "resources.limits")))
    elif manifest.kind == "PersistentVolume":
        places.append(("spec.capacity", spec.get("capacity")))
    elif manifest.kind == "StatefulSet":
        for claim in items(spec.get("volumeClaimTemplates")):
            name = mapping(claim.get("metadata")).get("name")
            places.append(
                (
                    f"spec.volumeClaimTemplates[{name}].spec.resources.requests",
                    get(claim, "spec.resources.requests"),
                )
            )
    for field, values in places:
        for resource, value in mapping(values).items():
            if message := quantity_error(value):
                yield QUANTITY, manifest, f"{field}.{resource}", message


def _restart_policy(manifest: Manifest, path: str, pod: dict[str, Any]) -> Iterator[Finding]:
    policy = pod.get("restartPolicy")
    policy = policy if policy is None else str(policy)
    field = f"{path}.restartPolicy"
    if manifest.kind in {"Job", "CronJob"}:
        if policy not in {"Never", "OnFailure"}:
            message = f"restartPolicy {policy!r}: a Job's pods need Never or OnFailure (there is no default)"
            yield RESTART_POLICY, manifest, field, message
    elif manifest.kind in WORKLOAD_SELECTOR_KINDS and policy not in {None, "Always"}:
        message = f"restartPolicy {policy!r}: a {manifest.kind}'s pods only take Always"
        yield RESTART_POLICY, manifest, field, message


def _selector(manifest: Manifest) -> Iterator[Finding]:
    spec = mapping(manifest.obj.get("spec"))
    selector = mapping(spec.get("selector"))
    labels = mapping(get(manifest.obj, "spec.template.metadata.labels"))
    if manifest.kind == "Job" and not spec.get("manualSelector"):
        return  # the Job controller generates its selector
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        message = f"a {manifest.kind} needs a non-empty selector that matches its pod template's labels"
        yield SELECTOR, manifest, "spec.selector", message
    elif not netpol.selector_matches(selector, {str(k): str(v) for k, v in labels.items()}):
        message = (
            "the selector does not match the labels of the pod template (spec.template.metadata.labels): "
            "the API server refuses it"
        )
        yield SELECTOR, manifest, "spec.selector", message


def _percent_or_int(value: Any) -> tuple[int, bool] | None:
    """(number, is a percentage) of an IntOrString, or None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value, False
    if isinstance(value, str) and re.fullmatch(r"\d+%", value):
        return int(value[:-1]), True
    return None


def _disruption_budget(manifest: Manifest) -> Iterator[Finding]:
    spec = mapping(manifest.obj.get("spec"))
    if "minAvailable" in spec and "maxUnavailable" in spec:
        message = "minAvailable and maxUnavailable cannot both be set: keep one"
        yield DISRUPTION_BUDGET, manifest, "spec.maxUnavailable", message
    for key in ("minAvailable", "maxUnavailable"):
        if key not in spec:
            continue
        parsed = _percent_or_int(spec[key])
        if parsed is None or parsed[0] < 0 or (parsed[1] and parsed[0] > 100):
            message = f"{key} {spec[key]!r} must be a whole number at least 0, or a percentage up to 100%"
            yield DISRUPTION_BUDGET, manifest, f"spec.{key}", message


def _service(manifest: Manifest) -> Iterator[Finding]:
    spec = mapping(manifest.obj.get("spec"))
    ports = items(spec.get("ports"))
    service_type = str(spec.get("type") or "ClusterIP")
    names: set[str] = set()
    numbers: set[tuple[Any, str]] = set()
    for index, port in enumerate(ports):
        name = port.get("name")
        field = f"spec.ports[{name if name else index}]"
        if name is None and len(ports) > 1:
            yield SERVICE_PORTS, manifest, field, "a Service with several ports must name each of them"
        if name is not None:
            if message := _pattern_error(str(name), DNS1123_LABEL, "Service port name, a DNS-1123 label", 63):
                yield INVALID_NAME, manifest, f"{field}.name", message
            if str(name) in names:
                yield SERVICE_PORTS, manifest, f"{field}.name", f"two ports are named {name!r}"
            names.add(str(name))
        key = (str(port.get("port")), str(port.get("protocol") or "TCP"))
        if key in numbers:
            yield SERVICE_PORTS, manifest, f"{field}.port", f"port {key[0]}/{key[1]} is listed twice"
        numbers.add(key)
        target = port.get("targetPort")
        if isinstance(target, str) and (message := _port_name_error(target)):
            yield INVALID_NAME, manifest, f"{field}.targetPort", message
        node_port = port.get("nodePort")
        if node_port is None:
            continue
        if service_type not in {"NodePort", "LoadBalancer"}:
            message = f"nodePort may only be set on type NodePort or LoadBalancer, not {service_type}"
            yield SERVICE_PORTS, manifest, f"{field}.nodePort", message
        elif node_port not in NODE_PORT_RANGE:
            message = (
                f"nodePort {node_port} is outside the API server's default range "
                f"{NODE_PORT_RANGE.start}-{NODE_PORT_RANGE.stop - 1}"
            )
            yield SERVICE_PORTS, manifest, f"{field}.nodePort", message
    if spec.get("clusterIP") == "None" and service_type != "ClusterIP":
        message = f"a headless Service (clusterIP: None) must be type ClusterIP, not {service_type}"
        yield SERVICE_PORTS, manifest, "spec.clusterIP", message


def _strategy(manifest: Manifest) -> Iterator[Finding]:
    strategy = mapping(get(manifest.obj, "spec.strategy"))
    rolling = strategy.get("rollingUpdate")
    if strategy.get("type") == "Recreate":
        if rolling is not None:
            message = "rollingUpdate may not be set when the strategy type is Recreate"
            yield ROLLOUT_STRATEGY, manifest, "spec.strategy.rollingUpdate", message
        return
    rolling = mapping(rolling)
    surge = _percent_or_int(rolling.get("maxSurge", "25%"))
    unavailable = _percent_or_int(rolling.get("maxUnavailable", "25%"))
    for key, parsed in (("maxSurge", surge), ("maxUnavailable", unavailable)):
        if parsed is None or (key == "maxUnavailable" and parsed[1] and parsed[0] > 100):
            message = f"{key} {rolling.get(key)!r} must be a whole number at least 0, or a percentage"
            yield ROLLOUT_STRATEGY, manifest, f"spec.strategy.rollingUpdate.{key}", message
    if surge is not None and unavailable is not None and surge[0] == 0 and unavailable[0] == 0:
        message = "maxUnavailable and maxSurge are both 0: no rollout could ever start; allow one of them"
        yield ROLLOUT_STRATEGY, manifest, "spec.strategy.rollingUpdate.maxUnavailable", message
