"""The NetworkPolicy evaluator against Kubernetes' semantics, one rule of the API docs per test.

Pure: policies are in-memory objects, no cluster and no Kubernetes API (nothing is faked).
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_ha.lint import netpol
from airflow_ha.lint.netpol import Endpoint
from airflow_ha.manifests import Manifest

NS = {netpol.NAMESPACE_NAME_LABEL: "airflow", "team": "data"}
WORKER = Endpoint("worker", "airflow", {"component": "worker"}, NS)
API = Endpoint("api", "airflow", {"component": "api"}, NS, {"http": (8080, "TCP")})
DB = Endpoint("db", "airflow", {"component": "db"}, NS, {"postgres": (5432, "TCP")})
ELSEWHERE = Endpoint("other", "other", {"component": "worker"}, {netpol.NAMESPACE_NAME_LABEL: "other"})
OUTSIDE = Endpoint("api server", None)


def policy(name: str, spec: dict[str, Any], namespace: str = "airflow") -> Manifest:
    obj = {"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    return Manifest("kube/base/network-policies.yaml", obj)


DENY_INGRESS = policy("deny", {"podSelector": {}, "policyTypes": ["Ingress"]})
DENY_EGRESS = policy("deny-egress", {"podSelector": {}, "policyTypes": ["Egress"]})


def allowed(
    policies: list[Manifest], source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP"
) -> bool:
    return netpol.evaluate(policies, source, destination, port, protocol).allowed


def test_no_policy_allows_everything() -> None:
    assert allowed([], WORKER, DB, 5432)


def test_a_policy_isolates_only_the_pods_it_selects() -> None:
    only_db = policy("db", {"podSelector": {"matchLabels": {"component": "db"}}, "policyTypes": ["Ingress"]})
    assert not allowed([only_db], WORKER, DB, 5432)
    assert allowed([only_db], WORKER, API, 8080)


def test_a_policy_of_another_namespace_selects_nothing_here() -> None:
    assert allowed([policy("deny", {"podSelector": {}}, namespace="other")], WORKER, DB, 5432)


def test_ingress_rules_add_up_across_policies() -> None:
    opens = policy("open", {"podSelector": {"matchLabels": {"component": "api"}}, "ingress": [{}]})
    verdict = netpol.evaluate([DENY_INGRESS, opens], WORKER, API, 8080, "TCP")
    assert verdict.allowed
    assert verdict.ingress.allowing == ((opens, "spec.ingress[0]"),)


def test_an_empty_ingress_list_denies_and_blames_the_policy() -> None:
    verdict = netpol.evaluate([DENY_INGRESS], WORKER, API, 8080, "TCP")
    assert not verdict.allowed
    assert verdict.ingress.blame == (DENY_INGRESS, "spec.podSelector")


def test_policy_types_default_to_ingress_plus_egress_when_there_are_egress_rules() -> None:
    egress_only_rules = policy(
        "e", {"podSelector": {}, "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}
    )
    assert netpol.policy_types(egress_only_rules) == {"Ingress", "Egress"}
    assert netpol.policy_types(DENY_INGRESS) == {"Ingress"}
    # It isolates ingress too, with no ingress rule: everything in is denied.
    assert not allowed([egress_only_rules], API, WORKER, 1234)


def test_ingress_and_egress_isolation_are_independent() -> None:
    # Egress denied at the source although the destination admits everything.
    assert not allowed([DENY_EGRESS], WORKER, API, 8080)
    # Ingress-only policies leave egress open.
    assert allowed([DENY_INGRESS], WORKER, OUTSIDE, 443)
    verdict = netpol.evaluate([DENY_EGRESS], WORKER, API, 8080, "TCP")
    assert verdict.ingress.allowed and not verdict.egress.allowed


def test_pod_selector_peer_is_in_the_policys_namespace_only() -> None:
    rule = {"from": [{"podSelector": {"matchLabels": {"component": "worker"}}}]}
    opens = policy("api", {"podSelector": {"matchLabels": {"component": "api"}}, "ingress": [rule]})
    assert allowed([opens], WORKER, API, 8080)
    assert not allowed([opens], ELSEWHERE, API, 8080)


def test_namespace_selector_alone_and_with_pod_selector() -> None:
    everywhere: dict[str, Any] = {"from": [{"namespaceSelector": {}}]}
    assert allowed([policy("a", {"podSelector": {}, "ingress": [everywhere]})], ELSEWHERE, API, 8080)
    both = {
        "from": [
            {
                "namespaceSelector": {"matchLabels": {"team": "data"}},
                "podSelector": {"matchLabels": {"component": "worker"}},
            }
        ]
    }
    assert allowed([policy("b", {"podSelector": {}, "ingress": [both]})], WORKER, API, 8080)
    assert not allowed([policy("b", {"podSelector": {}, "ingress": [both]})], ELSEWHERE, API, 8080)


def test_match_expressions() -> None:
    labels = {"component": "api", "tier": "web"}
    assert netpol.selector_matches(
        {"matchExpressions": [{"key": "component", "operator": "In", "values": ["api", "db"]}]}, labels
    )
    assert not netpol.selector_matches(
        {"matchExpressions": [{"key": "component", "operator": "NotIn", "values": ["api"]}]}, labels
    )
    assert netpol.selector_matches({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, labels)
    assert not netpol.selector_matches(
        {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, labels
    )
    assert not netpol.selector_matches({"matchLabels": {"component": "db"}}, labels)


def test_ports_by_number_range_name_and_protocol() -> None:
    def with_port(port: dict[str, Any]) -> list[Manifest]:
        return [policy("p", {"podSelector": {}, "ingress": [{"ports": [port]}]})]

    assert allowed(with_port({"port": 8080}), WORKER, API, 8080)
    assert not allowed(with_port({"port": 8081}), WORKER, API, 8080)
    assert allowed(with_port({"port": 8000, "endPort": 8100}), WORKER, API, 8080)
    assert not allowed(with_port({"port": 8000, "endPort": 8079}), WORKER, API, 8080)
    assert allowed(with_port({"port": "http"}), WORKER, API, 8080)
    assert not allowed(with_port({"port": "http"}), WORKER, DB, 5432)  # DB has no port named http
    assert not allowed(with_port({"port": 8080, "protocol": "UDP"}), WORKER, API, 8080)
    assert allowed(with_port({"protocol": "TCP"}), WORKER, API, 8080)  # no port: every TCP port


def test_a_near_miss_is_blamed_on_the_field_to_fix() -> None:
    wrong_port = policy("api", {"podSelector": {}, "ingress": [{"ports": [{"port": 8081}]}]})
    assert netpol.evaluate([DENY_INGRESS, wrong_port], WORKER, API, 8080, "TCP").ingress.blame == (
        wrong_port,
        "spec.ingress[0].ports",
    )
    wrong_peer = policy(
        "api",
        {"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"component": "db"}}}]}]},
    )
    assert netpol.evaluate([wrong_peer], WORKER, API, 8080, "TCP").ingress.blame == (
        wrong_peer,
        "spec.ingress[0].from",
    )


@pytest.mark.parametrize(
    ("block", "pod_matches", "outside_matches"),
    [
        ({"cidr": "0.0.0.0/0"}, True, True),
        ({"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}, False, True),
        ({"cidr": "172.18.0.0/16"}, False, True),
    ],
)
def test_ip_blocks(block: dict[str, Any], pod_matches: bool, outside_matches: bool) -> None:
    egress = [
        policy("e", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": block}]}]})
    ]
    assert allowed(egress, WORKER, API, 8080) is pod_matches
    assert allowed(egress, WORKER, OUTSIDE, 443) is outside_matches
    known = Endpoint("known", None, address="192.168.1.1")
    assert allowed(egress, WORKER, known, 443) is (block["cidr"] == "0.0.0.0/0")
