"""Whether NetworkPolicies let one endpoint reach another: Kubernetes' semantics, no cluster.

A connection is allowed when the source may send it (egress) and the destination may
receive it (ingress). Each direction is judged on its own: a pod is isolated for a
direction only when some policy of its namespace selects it with that direction in its
policyTypes; an isolated pod gets exactly what the union of those policies' rules allows.

Addresses are not known before deploying, so ipBlock peers are judged conservatively:
a pod matches only a catch-all block (prefix length 0, no `except`), because ipBlock is
meant for addresses outside the pod network; an endpoint outside the pod network whose
address is unknown (the Kubernetes API server) matches any block.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..manifests import Manifest, items, mapping, strings

INGRESS, EGRESS = "Ingress", "Egress"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Endpoint:
    """Pods that share labels (or an address outside the pod network), as a connection end."""

    name: str
    namespace: str | None  # None: outside the pod network (the API server, the internet)
    labels: Mapping[str, str] = field(default_factory=dict)
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    # Named container ports: name -> (port, protocol).
    ports: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    address: str | None = None

    @property
    def is_pod(self) -> bool:
        return self.namespace is not None


@dataclass(frozen=True)
class Side:
    """One direction's verdict: allowed or not, and the policies that decided it."""

    allowed: bool
    isolating: tuple[Manifest, ...] = ()  # the policies that select the pod for this direction
    allowing: tuple[tuple[Manifest, str], ...] = ()  # (policy, rule field) that let it through
    blame: tuple[Manifest, str] | None = None  # (policy, field) to fix when it is denied


@dataclass(frozen=True)
class Verdict:
    egress: Side
    ingress: Side

    @property
    def allowed(self) -> bool:
        return self.egress.allowed and self.ingress.allowed


def policy_types(policy: Manifest) -> set[str]:
    """spec.policyTypes, or the API server's default: Ingress, plus Egress if there are egress rules."""
    spec = mapping(policy.obj.get("spec"))
    if spec.get("policyTypes"):
        return set(strings(spec["policyTypes"]))
    return {INGRESS, EGRESS} if spec.get("egress") else {INGRESS}


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector against labels; an empty selector matches everything."""
    selector = mapping(selector)
    if any(labels.get(key) != str(value) for key, value in mapping(selector.get("matchLabels")).items()):
        return False
    for expression in items(selector.get("matchExpressions")):
        key, operator = str(expression.get("key")), expression.get("operator")
        values = strings(expression.get("values"))
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
        if operator not in {"In", "NotIn", "Exists", "DoesNotExist"}:
            return False  # the API server rejects it; nothing matches
    return True


def selects(policy: Manifest, endpoint: Endpoint) -> bool:
    """The policy applies to the endpoint's pods: same namespace, podSelector matches."""
    if not endpoint.is_pod or (policy.namespace or "default") != endpoint.namespace:
        return False
    return selector_matches(mapping(policy.obj.get("spec")).get("podSelector"), endpoint.labels)


def peer_matches(peer: Mapping[str, Any], policy_namespace: str, other: Endpoint) -> bool:
    """A NetworkPolicyPeer (of a policy in ``policy_namespace``) covers the other end."""
    if "ipBlock" in peer:
        return _block_matches(mapping(peer.get("ipBlock")), other)
    if not other.is_pod:
        return False
    if "namespaceSelector" in peer:
        if not selector_matches(peer.get("namespaceSelector"), other.namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return "podSelector" not in peer or selector_matches(peer.get("podSelector"), other.labels)


def _block_matches(block: Mapping[str, Any], other: Endpoint) -> bool:
    try:
        network = ipaddress.ip_network(str(block.get("cidr")), strict=False)
        excepted = [ipaddress.ip_network(str(cidr), strict=False) for cidr in strings(block.get("except"))]
    except ValueError:
        return False  # the API server rejects it
    if other.address is not None:
        address = ipaddress.ip_address(other.address)
        return address in network and not any(address in cidr for cidr in excepted)
    if other.is_pod:
        return network.prefixlen == 0 and not excepted
    return True


def port_matches(rule_port: Mapping[str, Any], port: int, protocol: str, destination: Endpoint) -> bool:
    """A NetworkPolicyPort covers the destination's port; named ports resolve on the destination."""
    if str(rule_port.get("protocol") or "TCP") != protocol:
        return False
    wanted = rule_port.get("port")
    if wanted is None:
        return True
    if isinstance(wanted, int):
        end = rule_port.get("endPort")
        return wanted <= port <= end if isinstance(end, int) else wanted == port
    return destination.ports.get(str(wanted)) == (port, protocol)


def _rule_matches(
    rule: Mapping[str, Any],
    peers_field: str,
    namespace: str,
    other: Endpoint,
    port: int,
    protocol: str,
    destination: Endpoint,
) -> tuple[bool, bool]:
    """(peers match, ports match) of one rule; an empty or missing list matches everything."""
    peers = items(rule.get(peers_field))
    ports = items(rule.get("ports"))
    peers_ok = not peers or any(peer_matches(peer, namespace, other) for peer in peers)
    ports_ok = not ports or any(port_matches(p, port, protocol, destination) for p in ports)
    return peers_ok, ports_ok


def judge(
    policies: Iterable[Manifest], direction: str, pod: Endpoint, other: Endpoint, port: int, protocol: str
) -> Side:
    """Whether ``pod`` may receive from (Ingress) or send to (Egress) ``other`` on port/protocol."""
    isolating = tuple(p for p in policies if selects(p, pod) and direction in policy_types(p))
    if not isolating:
        return Side(True)
    rules_field, peers_field = ("ingress", "from") if direction == INGRESS else ("egress", "to")
    destination = pod if direction == INGRESS else other
    allowing: list[tuple[Manifest, str]] = []
    near: list[tuple[int, Manifest, str]] = []
    for policy in isolating:
        namespace = policy.namespace or "default"
        rules = items(mapping(policy.obj.get("spec")).get(rules_field))
        for index, rule in enumerate(rules):
            peers_ok, ports_ok = _rule_matches(
                rule, peers_field, namespace, other, port, protocol, destination
            )
            where = f"spec.{rules_field}[{index}]"
            if peers_ok and ports_ok:
                allowing.append((policy, where))
            elif peers_ok:
                near.append((0, policy, f"{where}.ports"))
            elif ports_ok:
                near.append((1, policy, f"{where}.{peers_field}"))
        if not rules:
            near.append((2, policy, "spec.podSelector"))
    if allowing:
        return Side(True, isolating, tuple(allowing))
    _rank, policy, where = min(near, key=lambda found: found[0]) if near else (3, isolating[0], "spec")
    return Side(False, isolating, (), (policy, where))


def evaluate(
    policies: Iterable[Manifest], source: Endpoint, destination: Endpoint, port: int, protocol: str
) -> Verdict:
    """Both directions of one connection; ends outside the pod network are not isolated here."""
    policies = [p for p in policies if p.kind == "NetworkPolicy"]
    egress = judge(policies, EGRESS, source, destination, port, protocol) if source.is_pod else Side(True)
    ingress = (
        judge(policies, INGRESS, destination, source, port, protocol) if destination.is_pod else Side(True)
    )
    return Verdict(egress, ingress)
