"""Reachability: the NetworkPolicies let through every connection the deployment needs, and no other.

The connections are derived from the manifests, not listed by hand:
  - worker pods to the pods behind the Execution API URL of the Airflow config;
  - every pod that reads the database Secret to the pods behind the database Service;
  - the api-server to the triggerer's log server ([logging] trigger_log_server_port);
  - every pod that makes those connections to the cluster DNS (UDP and TCP 53);
  - every pod whose ServiceAccount has RBAC rights (and the scheduler, when it runs
    KubernetesExecutor) to the Kubernetes API: the Service's 443 and the API server's own
    6443, because policies see the port after the Service's translation, and which one
    that is depends on the cluster.
And the ones that must stay closed: PostgreSQL from any pod that holds no database
credentials (worker pods among them), and from pods of other namespaces.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from rich.table import Table
from rich.text import Text

from ... import REPO_ROOT, manifests
from ... import generated_secrets as generated
from ...console import Failure, console
from ...manifests import Manifest, Workload, items, mapping
from .. import netpol, workloads
from ..netpol import Endpoint, Verdict
from ..problems import Problem
from ..render import Rendered, Target, per_overlay, render_target
from ..workloads import Finding

NAME = "reachability"
DENIED = f"{NAME}/required-flow-denied"
ALLOWED = f"{NAME}/forbidden-flow-allowed"
RULES = {
    DENIED: (
        "a connection the deployment needs (workers to the Execution API, components to PostgreSQL, "
        "api-server to the triggerer log server, DNS, the Kubernetes API) is denied by a NetworkPolicy"
    ),
    ALLOWED: (
        "a connection that must stay closed (PostgreSQL from pods without database credentials or "
        "from other namespaces) is allowed"
    ),
}

EXECUTION_API_KEY = "AIRFLOW__CORE__EXECUTION_API_SERVER_URL"
DNS = Endpoint(
    "cluster DNS",
    "kube-system",
    {"k8s-app": "kube-dns"},
    {netpol.NAMESPACE_NAME_LABEL: "kube-system"},
    {"dns": (53, "UDP"), "dns-tcp": (53, "TCP")},
)
DNS_PORTS = ((53, "UDP"), (53, "TCP"))
KUBERNETES_API = Endpoint("Kubernetes API", None)
KUBERNETES_API_PORTS = ((443, "TCP"), (6443, "TCP"))
OTHER_NAMESPACE = "another-namespace"


def run(target: Target) -> Iterator[Problem]:
    def reachability(rendered: Rendered) -> Iterator[Problem]:
        return workloads.as_problems(findings(rendered.objects, rendered.template))

    return per_overlay(target, reachability)


@dataclass(frozen=True)
class Flow:
    source: Endpoint
    destination: Endpoint
    ports: tuple[tuple[int, str], ...]
    purpose: str
    required: bool  # False: it must be denied
    destination_workload: Workload | None = None


@dataclass(frozen=True)
class Judged:
    flow: Flow
    verdicts: tuple[Verdict, ...]  # one per port

    @property
    def allowed(self) -> bool:
        return all(verdict.allowed for verdict in self.verdicts)

    @property
    def ok(self) -> bool:
        return self.allowed if self.flow.required else not any(v.allowed for v in self.verdicts)


def namespace_of(objects: list[Manifest]) -> str:
    """The namespace the overlay deploys to: the one most of its objects name."""
    counted = Counter(m.namespace for m in objects if isinstance(m.namespace, str) and m.namespace)
    return counted.most_common(1)[0][0] if counted else "default"


def _namespace_labels(objects: list[Manifest], namespace: str) -> dict[str, str]:
    found = manifests.find(objects, "Namespace", namespace)
    labels = {str(k): str(v) for k, v in (found.labels if found else {}).items()}
    return {**labels, netpol.NAMESPACE_NAME_LABEL: namespace}


def endpoint(workload: Workload, namespace: str, namespace_labels: dict[str, str]) -> Endpoint:
    name = "worker pods" if workload.manifest.kind == "Pod" else workload.component
    return Endpoint(
        name,
        workload.manifest.namespace or namespace,
        workload.labels,
        namespace_labels,
        workloads.named_ports(workload.pod),
    )


def _behind_service(
    objects: list[Manifest], pod_makers: list[Workload], host: str, port: int
) -> tuple[list[Workload], int, str] | None:
    """The workloads a Service host:port sends to, and the pod port it sends to."""
    service = manifests.find(objects, "Service", host.split(".")[0])
    if service is None:
        return None
    spec = mapping(service.obj.get("spec"))
    selector = mapping(spec.get("selector"))
    service_port = next((p for p in items(spec.get("ports")) if p.get("port") == port), None)
    if not selector or service_port is None:
        return None  # the wiring check reports both
    behind = [w for w in pod_makers if w.manifest.kind != "Pod" and selector.items() <= w.labels.items()]
    if not behind:
        return None
    target = service_port.get("targetPort", port)
    protocol = str(service_port.get("protocol") or "TCP")
    if isinstance(target, str):
        named = workloads.named_ports(behind[0].pod).get(target)
        if named is None:
            return None  # wiring: targetPort is not a named port
        target = named[0]
    if not isinstance(target, int):
        return None  # kubernetes-validate reports its type
    return behind, target, protocol


def flows(objects: list[Manifest], template: Manifest | None) -> list[Flow]:
    """Every connection that must be allowed, then every one that must be denied."""
    namespace = namespace_of(objects)
    namespace_labels = _namespace_labels(objects, namespace)
    pod_makers = list(manifests.workloads(objects, template))
    ends = {id(w): endpoint(w, namespace, namespace_labels) for w in pod_makers}
    config = workloads.airflow_config(objects)
    required: list[Flow] = []
    resolves_names: list[Workload] = []

    worker = workloads.worker(pod_makers)
    url = urlsplit(config.get(EXECUTION_API_KEY) or "")
    execution_api = (
        _behind_service(objects, pod_makers, url.hostname, url.port or (443 if url.scheme == "https" else 80))
        if url.hostname
        else None
    )
    if worker and execution_api:
        behind, port, protocol = execution_api
        for target in behind:
            required.append(
                Flow(ends[id(worker)], ends[id(target)], ((port, protocol),), "Execution API", True, target)
            )
        resolves_names.append(worker)

    database = _behind_service(objects, pod_makers, generated.DATABASE_HOST, generated.DATABASE_PORT)
    forbidden: list[Flow] = []
    if database:
        behind, port, protocol = database
        other = Endpoint(
            "pods of other namespaces",
            OTHER_NAMESPACE,
            {},
            {netpol.NAMESPACE_NAME_LABEL: OTHER_NAMESPACE},
        )
        for target in behind:
            for source in pod_makers:
                if source in behind:
                    continue
                uses_database = generated.METADATA_SECRET in workloads.secrets_read(source.pod)
                flow = Flow(
                    ends[id(source)],
                    ends[id(target)],
                    ((port, protocol),),
                    "database" if uses_database else "database, without credentials",
                    uses_database,
                    target,
                )
                (required if uses_database else forbidden).append(flow)
                if uses_database and source not in resolves_names:
                    resolves_names.append(source)
            forbidden.append(
                Flow(other, ends[id(target)], ((port, protocol),), "database, from outside", False, target)
            )

    api_servers = [w for w in pod_makers if w.component == "api-server" and w.manifest.kind != "Pod"]
    triggerers = [w for w in pod_makers if w.component == "triggerer" and w.manifest.kind != "Pod"]
    log_port = workloads.trigger_log_port(config)
    for source in api_servers:
        for target in triggerers:
            flow = Flow(
                ends[id(source)], ends[id(target)], ((log_port, "TCP"),), "triggerer logs", True, target
            )
            required.append(flow)
        if triggerers and source not in resolves_names:
            resolves_names.append(source)

    for source in resolves_names:
        required.append(Flow(ends[id(source)], DNS, DNS_PORTS, "DNS", True))

    callers = workloads.api_callers(objects)
    talkers = [w for w in pod_makers if workloads.service_account(w) in callers]
    talkers += [w for w in workloads.executor_workloads(pod_makers, config) if w not in talkers]
    for source in talkers:
        required.append(Flow(ends[id(source)], KUBERNETES_API, KUBERNETES_API_PORTS, "Kubernetes API", True))
    return required + forbidden


def judge(objects: list[Manifest], template: Manifest | None) -> list[Judged]:
    policies = [m for m in objects if m.kind == "NetworkPolicy"]
    return [
        Judged(
            flow,
            tuple(
                netpol.evaluate(policies, flow.source, flow.destination, p, proto) for p, proto in flow.ports
            ),
        )
        for flow in flows(objects, template)
    ]


def _ports(flow: Flow) -> str:
    return ", ".join(f"{protocol} {port}" for port, protocol in flow.ports)


def describe(judged: Judged) -> str:
    """The verdict as the flow table shows it."""
    flow = judged.flow
    if flow.required:
        denied = _first_denied(judged)
        if denied is None:
            return f"allowed ({_why_allowed(judged)})"
        side, _ = denied
        assert side.blame is not None
        return f"DENIED by {side.blame[0].ref} ({side.blame[1]})"
    allowing = _first_allowing(judged)
    if allowing is None:
        return "denied, as it must be"
    return f"ALLOWED by {allowing}, must be denied"


def _why_allowed(judged: Judged) -> str:
    """The rules that let a flow through: ingress first, then egress; or that nothing restricts it."""
    verdict = judged.verdicts[0]
    rules = [f"{policy.name} {where}" for policy, where in verdict.ingress.allowing + verdict.egress.allowing]
    return ", ".join(dict.fromkeys(rules)) or "no policy restricts it"


def _first_denied(judged: Judged) -> tuple[netpol.Side, tuple[int, str]] | None:
    for verdict, port in zip(judged.verdicts, judged.flow.ports, strict=True):
        for side in (verdict.ingress, verdict.egress):
            if not side.allowed:
                return side, port
    return None


def _first_allowing(judged: Judged) -> str | None:
    for verdict in judged.verdicts:
        if not verdict.allowed:
            continue
        if verdict.ingress.allowing:
            policy, where = verdict.ingress.allowing[0]
            return f"{policy.ref} {where}"
        return "no NetworkPolicy selecting the destination pods for ingress"
    return None


def findings(objects: list[Manifest], template: Manifest | None) -> Iterator[Finding]:
    for judged in judge(objects, template):
        if judged.ok:
            continue
        flow = judged.flow
        what = f"{flow.source.name} -> {flow.destination.name} ({flow.purpose}, {_ports(flow)})"
        if flow.required:
            denied = _first_denied(judged)
            assert denied is not None
            side, (port, protocol) = denied
            assert side.blame is not None
            policy, where = side.blame
            deciders = ", ".join(p.name for p in side.isolating)
            if side in (v.ingress for v in judged.verdicts):
                why = (
                    f"it selects the {flow.destination.name} pods for ingress, and no ingress rule of "
                    f"the policies that do ({deciders}) admits {flow.source.name} on {protocol} {port}"
                )
            else:
                why = (
                    f"it restricts the egress of the {flow.source.name} pods, and no egress rule of the "
                    f"policies that do ({deciders}) lets them reach {flow.destination.name} on "
                    f"{protocol} {port}"
                )
            yield DENIED, policy, where, f"denies {what}, which the deployment needs: {why}; allow it"
            continue
        for verdict in judged.verdicts:
            if not verdict.allowed:
                continue
            if verdict.ingress.allowing:
                for policy, where in verdict.ingress.allowing:
                    message = (
                        f"allows {what}, which must stay closed: only the components that hold the database "
                        "credentials may reach it; narrow the rule"
                    )
                    yield ALLOWED, policy, where, message
            elif flow.destination_workload is not None:
                target = flow.destination_workload
                message = (
                    f"no NetworkPolicy selects these pods for ingress, so {what} is open: it must stay "
                    "closed; add a policy that admits only the components that hold the database credentials"
                )
                yield ALLOWED, target.manifest, target.labels_path, message
            break


def flow_table(judged: Iterable[Judged]) -> list[tuple[str, str, str, str, str, bool]]:
    """(source, destination, ports, purpose, verdict, ok) rows, required flows first."""
    return [
        (j.flow.source.name, j.flow.destination.name, _ports(j.flow), j.flow.purpose, describe(j), j.ok)
        for j in judged
    ]


def show_flows(overlays: list[str] | None = None, root: Path = REPO_ROOT) -> None:
    """`invoke lint --flows`: the flow table of every overlay (or those named); fails if one is wrong."""
    if not print_flows(render_target(root, overlays, ())):
        raise Failure("a flow above is wrong: `invoke lint` names the NetworkPolicy to fix, field and all")


def print_flows(target: Target) -> bool:
    """Print every flow with the NetworkPolicies' verdict, merged across overlays; True if all are right."""
    rows: dict[tuple[str, str, str, str, str, bool], list[str]] = {}
    for rendered in target.rendered:
        for row in flow_table(judge(rendered.objects, rendered.template)):
            rows.setdefault(row, []).append(rendered.overlay)
    every = [rendered.overlay for rendered in target.rendered]
    table = Table(title="network flows (invoke lint --flows)")
    for column in ("from", "to", "ports", "for", "verdict"):
        table.add_column(column)
    if any(overlays != every for overlays in rows.values()):
        table.add_column("overlays")
    for (source, destination, ports, purpose, verdict, ok), overlays in rows.items():
        cells: list[str | Text] = [source, destination, ports, purpose]
        cells.append(Text(verdict, style="green" if ok else "red"))
        if len(table.columns) > len(cells):
            cells.append(", ".join(overlays))
        table.add_row(*cells)
    console.print(table)
    for overlay, error in target.unrendered.items():
        console.print(f"overlay {overlay} does not render, so its flows are unknown: {error}", style="red")
    return all(ok for *_, ok in rows) and not target.unrendered
