"""Tests for calico_vpp_driver.scenario.k8s: Kubernetes NetworkPolicy -> Calico v3 policy.

Expected Calico specs come from libcalico-go's own tests wherever a case exists there
(libcalico-go/lib/backend/k8s/conversion/conversion_test.go in projectcalico/calico
release-v3.33; each such test names the upstream ``It(...)``/``Entry(...)`` in a comment marked
"upstream").  Upstream asserts on Go structs; here the same facts are written as the v3 JSON the
struct marshals to (``omitempty``/``omitzero`` fields absent, ports as 80 / "80:90" / "name").
Cases marked "derived" have no upstream counterpart and were worked out from conversion.go
(K8sNetworkPolicyToCalico, k8sRuleToCalico, SimplifyPorts, k8sPeerToCalicoFields) and from the
Kubernetes API server's defaulting and validation (pkg/apis/networking/v1/defaults.go,
pkg/apis/networking/validation/validation.go).
"""

from __future__ import annotations

import copy
import ipaddress
import itertools
from collections.abc import Mapping
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from calico_vpp_driver.scenario.k8s import (
    FELIX_KIND,
    CalicoPort,
    LabelSelector,
    LabelSelectorRequirement,
    convert_network_policy,
    k8s_selector_to_calico,
    simplify_ports,
)
from calico_vpp_driver.scenario.resources import PolicyResource, ScenarioError
from calico_vpp_driver.scenario.selector import parse_selector

K8S = "projectcalico.org/orchestrator == 'k8s'"


def manifest(spec: Any, name: str = "test.policy", namespace: str | None = "default") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta, "spec": spec}


def convert(spec: Any, **kwargs: Any) -> dict[str, Any]:
    return convert_network_policy(manifest(spec, **kwargs)).spec


def calico(
    selector: str = K8S,
    types: tuple[str, ...] = ("Ingress",),
    ingress: list[dict[str, Any]] | None = None,
    egress: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The v3 spec Calico produces (JSON form): empty rule lists are omitted, like Go's omitempty."""
    spec: dict[str, Any] = {"tier": "default", "order": 1000.0}
    if ingress:
        spec["ingress"] = ingress
    if egress:
        spec["egress"] = egress
    spec["selector"] = selector
    spec["types"] = list(types)
    return spec


def allow(
    protocol: str | None = None,
    source: dict[str, Any] | None = None,
    destination: dict[str, Any] | None = None,
) -> dict[str, Any]:
    rule: dict[str, Any] = {"action": "Allow"}
    if protocol:
        rule["protocol"] = protocol
    if source:
        rule["source"] = source
    if destination:
        rule["destination"] = destination
    return rule


def pods(**labels: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": labels}}


# ---------------------------------------------------------------------------------------------
# The PolicyResource itself.
# ---------------------------------------------------------------------------------------------


def test_resource_identity() -> None:
    # upstream: "should parse a default-deny egress NetworkPolicy" checks key name and namespace
    # (its name "testPolicy" is not a valid Kubernetes name, see test_upstream_name_is_rejected).
    res = convert_network_policy(manifest({"podSelector": {}, "policyTypes": ["Egress"]}, name="test-policy"))
    assert isinstance(res, PolicyResource)
    assert res.felix_kind == FELIX_KIND == "KubernetesNetworkPolicy"
    assert (res.name, res.namespace) == ("test-policy", "default")
    assert res.tier == "default" and not res.staged
    assert res.spec == calico(types=("Egress",))


def test_namespace_defaults_like_kubectl() -> None:
    # derived: kubectl puts a manifest without metadata.namespace into "default".
    res = convert_network_policy(manifest({}, namespace=None))
    assert res.namespace == "default"
    res = convert_network_policy(manifest({}, namespace="x"))
    assert res.namespace == "x"


def test_policy_name_is_kept_as_is() -> None:
    # upstream: "should parse a NetworkPolicy with multiple peers" (Key/Value name "test.policy").
    assert convert_network_policy(manifest({}, name="test.policy")).name == "test.policy"


def test_rules_do_not_share_lists() -> None:
    # derived: the same peer and ports appear in several rules; they must be independent values.
    spec = convert(
        {
            "ingress": [
                {
                    "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}],
                    "from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                }
            ]
        }
    )
    first, second = spec["ingress"]
    first["source"]["nets"].append("1.2.3.4/32")
    first["source"]["notNets"].clear()
    first["destination"]["ports"].append(1)
    assert second["source"] == {"nets": ["10.0.0.0/8"], "notNets": ["10.1.0.0/16"]}
    assert second["destination"] == {"ports": [53]}


# ---------------------------------------------------------------------------------------------
# Upstream "Test NetworkPolicy conversion" cases.
# ---------------------------------------------------------------------------------------------


def test_basic_policy() -> None:
    # upstream: "should parse a basic k8s NetworkPolicy to a NetworkPolicy" (selector terms sorted,
    # protocol defaulted to TCP, ports [80, "foo"] kept in order).
    spec = convert(
        {
            "podSelector": {"matchLabels": {"label2": "value2", "label": "value"}},
            "ingress": [
                {
                    "ports": [{"port": 80}, {"port": "foo"}],
                    "from": [pods(k2="v2", k="v")],
                }
            ],
            "policyTypes": ["Ingress"],
        }
    )
    assert spec == calico(
        selector=f"{K8S} && label == 'value' && label2 == 'value2'",
        ingress=[
            allow(
                "TCP",
                source={"selector": f"{K8S} && k == 'v' && k2 == 'v2'"},
                destination={"ports": [80, "foo"]},
            )
        ],
    )


def test_no_ports_means_no_protocol() -> None:
    # upstream: "should parse a k8s NetworkPolicy with no ports" (Protocol nil, Destination empty).
    spec = convert(
        {
            "podSelector": {"matchLabels": {"label": "value", "label2": "value2"}},
            "ingress": [{"from": [pods(k="v", k2="v2")]}],
            "policyTypes": ["Ingress"],
        }
    )
    assert spec["ingress"] == [allow(source={"selector": f"{K8S} && k == 'v' && k2 == 'v2'"})]


def test_blank_port_allows_every_tcp_port() -> None:
    # upstream: "should parse a k8s NetworkPolicy with blank ports" ([80, {}] -> TCP, no ports).
    spec = convert(
        {
            "podSelector": {"matchLabels": {"label": "value", "label2": "value2"}},
            "ingress": [{"ports": [{"port": 80}, {}], "from": [pods(k="v", k2="v2")]}],
            "policyTypes": ["Ingress"],
        }
    )
    assert spec["ingress"] == [allow("TCP", source={"selector": f"{K8S} && k == 'v' && k2 == 'v2'"})]


def test_egress_blank_ports() -> None:
    # upstream: "should parse a k8s egress NetworkPolicy with blank ports".
    spec = convert(
        {
            "podSelector": {"matchLabels": {"label": "value", "label2": "value2"}},
            "egress": [
                {"ports": [{}, {"port": 80}], "to": [pods(k="v", k2="v2")]},
                {"ports": [{"port": 53, "protocol": "UDP"}]},
            ],
            "policyTypes": ["Egress"],
        }
    )
    assert spec == calico(
        selector=f"{K8S} && label == 'value' && label2 == 'value2'",
        types=("Egress",),
        egress=[
            allow("TCP", destination={"selector": f"{K8S} && k == 'v' && k2 == 'v2'"}),
            allow("UDP", destination={"ports": [53]}),
        ],
    )


def test_invalid_port_rule_is_rejected_by_the_api_server() -> None:
    # upstream: "should drop rules with invalid ports in a k8s NetworkPolicy".  Calico drops a rule
    # whose port it cannot parse ("-50:-1"); such a port never gets past the API server, whose
    # named-port validation rejects it first.
    with pytest.raises(ScenarioError, match=r'spec\.ingress\[1\]\.ports\[1\]\.port: Invalid value: "-50:-1"'):
        convert(
            {
                "ingress": [
                    {"ports": [{"port": 80}, {"port": "foo"}], "from": [pods(k="v")]},
                    {"ports": [{"port": 80}, {"port": "-50:-1"}], "from": [pods(k="v")]},
                ]
            }
        )


def test_default_deny_ingress() -> None:
    # upstream: "should parse a NetworkPolicy with no rules".
    spec = convert({"podSelector": {"matchLabels": {"label": "value"}}, "policyTypes": ["Ingress"]})
    assert spec == calico(selector=f"{K8S} && label == 'value'")


def test_default_deny_egress() -> None:
    # upstream: "should parse a default-deny egress NetworkPolicy".
    spec = convert({"podSelector": {}, "policyTypes": ["Egress"]})
    assert spec == calico(types=("Egress",))


def test_default_deny_both() -> None:
    # derived: both types, no rules.
    spec = convert({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    assert spec == calico(types=("Ingress", "Egress"))


def test_separate_peers_make_separate_rules() -> None:
    # upstream: "should parse a NetworkPolicy with multiple peers" (ports [{}] -> TCP, every port).
    spec = convert(
        {
            "podSelector": {"matchLabels": {"label": "value"}},
            "ingress": [{"ports": [{}], "from": [pods(k="v"), pods(k2="v2")]}],
            "policyTypes": ["Ingress"],
        }
    )
    assert spec == calico(
        selector=f"{K8S} && label == 'value'",
        ingress=[
            allow("TCP", source={"selector": f"{K8S} && k == 'v'"}),
            allow("TCP", source={"selector": f"{K8S} && k2 == 'v2'"}),
        ],
    )


def test_does_not_exist_expression() -> None:
    # upstream: "should parse a k8s NetworkPolicy with a DoesNotExist expression ".
    spec = convert(
        {
            "podSelector": {"matchLabels": {"label": "value", "label2": "value2"}},
            "ingress": [
                {
                    "ports": [{"port": 80}, {"port": "foo"}],
                    "from": [
                        {"podSelector": {"matchExpressions": [{"key": "toast", "operator": "DoesNotExist"}]}}
                    ],
                }
            ],
            "policyTypes": ["Ingress"],
        }
    )
    assert spec["ingress"] == [
        allow("TCP", source={"selector": f"{K8S} && ! has(toast)"}, destination={"ports": [80, "foo"]})
    ]


def test_multiple_peers_and_ports() -> None:
    # upstream: "should parse a NetworkPolicy with multiple peers and ports" (protocols sorted, TCP
    # before UDP, then peers in order).
    spec = convert(
        {
            "podSelector": {"matchLabels": {"label": "value"}},
            "ingress": [
                {
                    "ports": [{"port": 90, "protocol": "UDP"}, {"port": 80, "protocol": "TCP"}],
                    "from": [pods(k="v"), pods(k2="v2")],
                }
            ],
            "policyTypes": ["Ingress"],
        }
    )
    assert spec["ingress"] == [
        allow("TCP", source={"selector": f"{K8S} && k == 'v'"}, destination={"ports": [80]}),
        allow("TCP", source={"selector": f"{K8S} && k2 == 'v2'"}, destination={"ports": [80]}),
        allow("UDP", source={"selector": f"{K8S} && k == 'v'"}, destination={"ports": [90]}),
        allow("UDP", source={"selector": f"{K8S} && k2 == 'v2'"}, destination={"ports": [90]}),
    ]
    assert "egress" not in spec


def test_empty_pod_selector() -> None:
    # upstream: "should parse a NetworkPolicy with empty podSelector".
    assert convert({"podSelector": {}, "policyTypes": ["Ingress"]}) == calico()


def test_absent_pod_selector_is_empty() -> None:
    # derived: podSelector is optional in v1 and not a pointer; absent and null mean {}.
    assert convert({}) == calico()
    assert convert({"podSelector": None}) == calico()
    assert convert(None) == calico()


def test_allow_from_namespace() -> None:
    # upstream: "should parse a NetworkPolicy with a namespaceSelector" (the rule's pod selector is
    # still the orchestrator term; namespace labels are written unprefixed).
    spec = convert(
        {
            "podSelector": {"matchLabels": {"label": "value"}},
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"namespaceRole": "dev", "namespaceFoo": "bar"}
                            }
                        }
                    ]
                }
            ],
            "policyTypes": ["Ingress"],
        }
    )
    assert spec == calico(
        selector=f"{K8S} && label == 'value'",
        ingress=[
            allow(
                source={
                    "selector": K8S,
                    "namespaceSelector": "namespaceFoo == 'bar' && namespaceRole == 'dev'",
                }
            )
        ],
    )


def test_nil_namespace_selector() -> None:
    # upstream: "should parse a NetworkPolicy with a nil namespace selector".
    spec = convert(
        {
            "podSelector": {"matchLabels": {"label": "value"}},
            "ingress": [{"from": [{"namespaceSelector": None, "podSelector": {}}]}],
            "policyTypes": ["Ingress"],
        }
    )
    assert spec["ingress"] == [allow(source={"selector": K8S})]


def test_empty_namespace_selector_is_all() -> None:
    # upstream: "should parse a NetworkPolicy with an empty namespaceSelector".
    spec = convert(
        {
            "podSelector": {"matchLabels": {"label": "value"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {}}}]}],
            "policyTypes": ["Ingress"],
        }
    )
    assert spec["ingress"] == [allow(source={"selector": K8S, "namespaceSelector": "all()"})]


def test_pod_and_namespace_selector_in_one_peer() -> None:
    # upstream: "should parse a NetworkPolicy with pod and namespace selectors".
    spec = convert(
        {
            "podSelector": {"matchLabels": {"label": "value"}},
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"namespaceRole": "dev", "namespaceFoo": "bar"}
                            },
                            "podSelector": {"matchLabels": {"podA": "B", "podC": "D"}},
                        }
                    ]
                }
            ],
            "policyTypes": ["Ingress"],
        }
    )
    assert spec["ingress"] == [
        allow(
            source={
                "selector": f"{K8S} && podA == 'B' && podC == 'D'",
                "namespaceSelector": "namespaceFoo == 'bar' && namespaceRole == 'dev'",
            }
        )
    ]


def test_pod_and_namespace_selector_in_separate_peers() -> None:
    # derived: two peers are two rules (OR), unlike one peer carrying both selectors (AND).
    spec = convert(
        {
            "ingress": [
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"team": "a"}}},
                        {"podSelector": {"matchLabels": {"role": "client"}}},
                    ]
                }
            ],
        }
    )
    assert spec["ingress"] == [
        allow(source={"selector": K8S, "namespaceSelector": "team == 'a'"}),
        allow(source={"selector": f"{K8S} && role == 'client'"}),
    ]


def test_pod_selector_match_expressions() -> None:
    # upstream: "should parse a NetworkPolicy with podSelector.MatchExpressions".
    spec = convert(
        {
            "podSelector": {"matchExpressions": [{"key": "k", "operator": "In", "values": ["v1", "v2"]}]},
            "policyTypes": ["Ingress"],
        }
    )
    assert spec == calico(selector=f"{K8S} && k in {{ 'v1', 'v2' }}")


@pytest.mark.parametrize("direction", ["ingress", "egress"])
def test_ports_only(direction: str) -> None:
    # upstream: "should parse a NetworkPolicy with Ports only" and "... (egress)".
    types = "Ingress" if direction == "ingress" else "Egress"
    spec = convert(
        {"podSelector": {}, direction: [{"ports": [{"protocol": "TCP", "port": 80}]}], "policyTypes": [types]}
    )
    rules = [allow("TCP", destination={"ports": [80]})]
    assert spec == calico(
        types=(types,),
        ingress=rules if direction == "ingress" else None,
        egress=rules if direction == "egress" else None,
    )


@pytest.mark.parametrize("direction", ["ingress", "egress"])
def test_port_range_only(direction: str) -> None:
    # upstream: "should parse a NetworkPolicy with Port Range only" and "... (egress)".
    types = "Ingress" if direction == "ingress" else "Egress"
    spec = convert(
        {
            "podSelector": {},
            direction: [{"ports": [{"protocol": "TCP", "port": 32000, "endPort": 32768}]}],
            "policyTypes": [types],
        }
    )
    rules = [allow("TCP", destination={"ports": ["32000:32768"]})]
    assert spec == calico(
        types=(types,),
        ingress=rules if direction == "ingress" else None,
        egress=rules if direction == "egress" else None,
    )


def test_ingress_ip_block() -> None:
    # upstream: "should parse a NetworkPolicy with an Ingress rule with an IPBlock Peer".
    spec = convert(
        {
            "podSelector": {},
            "ingress": [
                {
                    "from": [
                        {
                            "ipBlock": {
                                "cidr": "192.168.0.0/16",
                                "except": ["192.168.3.0/24", "192.168.4.0/24"],
                            }
                        }
                    ]
                }
            ],
            "policyTypes": ["Ingress"],
        }
    )
    assert spec == calico(
        ingress=[allow(source={"nets": ["192.168.0.0/16"], "notNets": ["192.168.3.0/24", "192.168.4.0/24"]})]
    )


def test_egress_ip_block() -> None:
    # upstream: "should parse a NetworkPolicy with an Egress rule with an IPBlock Peer".
    excepts = ["192.168.3.0/24", "192.168.4.0/24", "192.168.5.0/24"]
    spec = convert(
        {
            "podSelector": {},
            "egress": [{"to": [{"ipBlock": {"cidr": "192.168.0.0/16", "except": excepts}}]}],
            "policyTypes": ["Egress"],
        }
    )
    assert spec == calico(
        types=("Egress",), egress=[allow(destination={"nets": ["192.168.0.0/16"], "notNets": excepts})]
    )


def test_egress_ip_block_and_ports() -> None:
    # upstream: "should parse a NetworkPolicy with an Egress rule with IPBlock and Ports".
    excepts = ["192.168.3.0/24", "192.168.4.0/24", "192.168.5.0/24"]
    spec = convert(
        {
            "podSelector": {},
            "egress": [
                {
                    "ports": [{"port": 90, "protocol": "UDP"}, {"port": 80, "protocol": "TCP"}],
                    "to": [{"ipBlock": {"cidr": "192.168.0.0/16", "except": excepts}}],
                }
            ],
            "policyTypes": ["Egress"],
        }
    )
    assert spec["egress"] == [
        allow("TCP", destination={"nets": ["192.168.0.0/16"], "ports": [80], "notNets": excepts}),
        allow("UDP", destination={"nets": ["192.168.0.0/16"], "ports": [90], "notNets": excepts}),
    ]


def test_ip_block_without_except() -> None:
    # upstream: "should parse a NetworkPolicyPeer with an IPBlock Peer and no Except field" (NotNets
    # nil, no selectors) and "should parse a NetworkPolicyPeer with an CIDR and Except field".
    spec = convert({"ingress": [{"from": [{"ipBlock": {"cidr": "192.168.0.0/16"}}]}]})
    assert spec["ingress"] == [allow(source={"nets": ["192.168.0.0/16"]})]
    spec = convert({"ingress": [{"from": [{"ipBlock": {"cidr": "192.168.0.0/16", "except": []}}]}]})
    assert spec["ingress"] == [allow(source={"nets": ["192.168.0.0/16"]})]


def test_invalid_ip_block_is_rejected_by_the_api_server() -> None:
    # upstream: "should have empty and Nil NetworkPolicyPeerfields when an IPBlock is invalid".
    # Calico would turn "192.168.0.0/55" into a peer without criteria; the API server never lets
    # it through.
    with pytest.raises(
        ScenarioError,
        match=r'spec\.ingress\[0\]\.from\[0\]\.ipBlock\.cidr: Invalid value: "192\.168\.0\.0/55"',
    ):
        convert({"ingress": [{"from": [{"ipBlock": {"cidr": "192.168.0.0/55"}}]}]})


def test_ingress_and_egress() -> None:
    # upstream: "should parse a NetworkPolicy with both an Egress and an Ingress rule" (Types come
    # out as [Ingress, Egress] whatever order policyTypes lists them in).  Upstream's egress
    # except entries (192.168.13.0/24, ...) lie outside its cidr 10.10.0.0/16, which the API
    # server rejects (see the next test), so they are moved inside the cidr here.
    excepts = ["10.10.13.0/24", "10.10.14.0/24", "10.10.15.0/24"]
    spec = convert(
        {
            "podSelector": {},
            "ingress": [
                {
                    "from": [
                        {
                            "ipBlock": {
                                "cidr": "192.168.0.0/16",
                                "except": ["192.168.3.0/24", "192.168.4.0/24"],
                            }
                        }
                    ]
                }
            ],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.10.0.0/16", "except": excepts}}]}],
            "policyTypes": ["Egress", "Ingress"],
        }
    )
    assert spec == calico(
        types=("Ingress", "Egress"),
        ingress=[allow(source={"nets": ["192.168.0.0/16"], "notNets": ["192.168.3.0/24", "192.168.4.0/24"]})],
        egress=[allow(destination={"nets": ["10.10.0.0/16"], "notNets": excepts})],
    )


def test_upstream_except_outside_cidr_is_rejected() -> None:
    # upstream: the egress fixture of "should parse a NetworkPolicy with both an Egress and an
    # Ingress rule", as the API server sees it.
    with pytest.raises(ScenarioError) as info:
        convert(
            {
                "egress": [
                    {
                        "to": [
                            {
                                "ipBlock": {
                                    "cidr": "10.10.0.0/16",
                                    "except": ["192.168.13.0/24", "192.168.14.0/24", "192.168.15.0/24"],
                                }
                            }
                        ]
                    }
                ],
                "policyTypes": ["Egress", "Ingress"],
            }
        )
    for i in range(3):
        assert f"spec.egress[0].to[0].ipBlock.except[{i}]" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Upstream "Test NetworkPolicy conversion (k8s <= 1.7, no policyTypes)": with the API server in
# front, policyTypes is never empty by the time Calico sees the policy.
# ---------------------------------------------------------------------------------------------


def test_no_policy_types_basic() -> None:
    # upstream: "should parse a basic NetworkPolicy to a Policy" (no policyTypes -> [Ingress]).
    spec = convert(
        {
            "podSelector": {"matchLabels": {"label": "value", "label2": "value2"}},
            "ingress": [{"ports": [{"port": 80}], "from": [pods(k="v", k2="v2")]}],
        }
    )
    assert spec == calico(
        selector=f"{K8S} && label == 'value' && label2 == 'value2'",
        ingress=[
            allow("TCP", source={"selector": f"{K8S} && k == 'v' && k2 == 'v2'"}, destination={"ports": [80]})
        ],
    )


def test_no_policy_types_no_rules() -> None:
    # upstream: "should parse a NetworkPolicy with no rules" (k8s <= 1.7 suite).
    assert convert({"podSelector": {"matchLabels": {"label": "value"}}}) == calico(
        selector=f"{K8S} && label == 'value'"
    )


def test_policy_types_defaulting_with_egress_rules() -> None:
    # derived: the API server adds Egress when egress rules exist (defaults.go); Calico's own
    # fallback (Ingress only, with a warning) is therefore never reached.
    spec = convert({"egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]})
    assert spec["types"] == ["Ingress", "Egress"]
    assert spec["egress"] == [allow("UDP", destination={"ports": [53]})]


def test_policy_types_defaulting_edge_cases() -> None:
    # derived: an empty egress list is "no egress rules"; an explicit empty policyTypes is defaulted.
    assert convert({"egress": []})["types"] == ["Ingress"]
    assert convert({"egress": [{}], "policyTypes": []})["types"] == ["Ingress", "Egress"]
    assert convert({"ingress": [{}], "policyTypes": None})["types"] == ["Ingress"]


def test_egress_only_policy_keeps_ingress_rules() -> None:
    # derived: Calico converts every rule and lets Types say which direction applies.
    spec = convert({"ingress": [{}], "egress": [{}], "policyTypes": ["Egress"]})
    assert spec == calico(types=("Egress",), ingress=[allow()], egress=[allow()])


def test_duplicate_policy_types() -> None:
    # derived: the API server accepts ["Egress", "Egress"] (at most two entries, each valid).
    assert convert({"policyTypes": ["Egress", "Egress"]})["types"] == ["Egress"]


# ---------------------------------------------------------------------------------------------
# Peers and ports: empty vs absent, protocols, named ports, ranges.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule",
    [{}, {"from": []}, {"from": None}, {"ports": []}, {"ports": [], "from": []}, None],
    ids=["empty-rule", "empty-from", "null-from", "empty-ports", "both-empty", "null-rule"],
)
def test_empty_and_absent_from_allow_everything(rule: Any) -> None:
    # derived: Go cannot tell an empty list from an absent one; both mean "any peer / any port".
    assert convert({"ingress": [rule]})["ingress"] == [allow()]
    egress_rule = None if rule is None else {("to" if k == "from" else k): v for k, v in rule.items()}
    assert convert({"egress": [egress_rule], "policyTypes": ["Egress"]})["egress"] == [allow()]


def test_empty_ingress_list_denies() -> None:
    # derived: `ingress: []` has no rules, exactly like an absent ingress.
    assert convert({"ingress": []}) == calico()
    assert convert({"ingress": None}) == calico()


def test_udp_and_sctp_ports() -> None:
    # derived: one rule per protocol, protocols in Go string order (SCTP < TCP < UDP).
    spec = convert(
        {
            "ingress": [
                {
                    "ports": [
                        {"port": 53, "protocol": "UDP"},
                        {"port": 53},
                        {"port": 9000, "protocol": "SCTP"},
                        {"port": 5353, "protocol": "UDP"},
                    ],
                    "from": [pods(app="dns")],
                }
            ]
        }
    )
    source = {"selector": f"{K8S} && app == 'dns'"}
    assert spec["ingress"] == [
        allow("SCTP", source=source, destination={"ports": [9000]}),
        allow("TCP", source=source, destination={"ports": [53]}),
        allow("UDP", source=source, destination={"ports": [53, 5353]}),
    ]


def test_named_ports() -> None:
    # derived: a named port is passed through by name, with its protocol (UDP here).
    spec = convert(
        {
            "egress": [{"ports": [{"port": "dns", "protocol": "UDP"}, {"port": "http"}]}],
            "policyTypes": ["Egress"],
        }
    )
    assert spec["egress"] == [
        allow("TCP", destination={"ports": ["http"]}),
        allow("UDP", destination={"ports": ["dns"]}),
    ]


def test_ports_of_one_protocol_are_merged() -> None:
    # derived: SimplifyPorts puts named ports first and merges adjacent numbers and ranges, as soon
    # as a protocol has more than one numeric port.
    spec = convert(
        {
            "ingress": [
                {
                    "ports": [
                        {"port": 81},
                        {"port": "http"},
                        {"port": 80},
                        {"port": 8000, "endPort": 8080},
                        {"port": 8081},
                        {"port": 443, "protocol": "UDP"},
                    ]
                }
            ]
        }
    )
    assert spec["ingress"] == [
        allow("TCP", destination={"ports": ["http", "80:81", "8000:8081"]}),
        allow("UDP", destination={"ports": [443]}),
    ]


@pytest.mark.parametrize(
    "ports",
    [
        [{"port": 80}, {"protocol": "TCP"}],
        [{}, {"port": 80}],
        [{"port": 80}, {}, {"port": 81}],
    ],
)
def test_a_port_without_number_opens_the_whole_protocol(ports: list[dict[str, Any]]) -> None:
    # derived: k8sRuleToCalico keeps "every port" (nil) for a protocol once any entry has no port.
    assert convert({"ingress": [{"ports": ports}]})["ingress"] == [allow("TCP")]


def test_end_port_equal_to_port_is_a_single_port() -> None:
    # derived: "80:80" parses to MinPort == MaxPort, which Calico writes as 80.
    spec = convert({"ingress": [{"ports": [{"port": 80, "endPort": 80}]}]})
    assert spec["ingress"] == [allow("TCP", destination={"ports": [80]})]


def test_end_port_with_udp_and_sctp() -> None:
    # derived: ranges keep their protocol.
    spec = convert(
        {
            "ingress": [
                {
                    "ports": [
                        {"port": 30000, "endPort": 30010, "protocol": "UDP"},
                        {"port": 1, "endPort": 65535, "protocol": "SCTP"},
                    ]
                }
            ]
        }
    )
    assert spec["ingress"] == [
        allow("SCTP", destination={"ports": ["1:65535"]}),
        allow("UDP", destination={"ports": ["30000:30010"]}),
    ]


# ---------------------------------------------------------------------------------------------
# Selectors.
# ---------------------------------------------------------------------------------------------


def req(key: str, operator: str, *values: str) -> LabelSelectorRequirement:
    return LabelSelectorRequirement(key, operator, values)


@pytest.mark.parametrize(
    ("selector", "pod", "expected"),
    [
        # upstream: "Test selector conversion" table, every entry.
        (LabelSelector(), True, "projectcalico.org/orchestrator == 'k8s'"),  # empty pod selector
        (LabelSelector(), False, "all()"),  # empty namespace selector
        (LabelSelector(match_expressions=(req("toast", "DoesNotExist"),)), False, "! has(toast)"),
        (LabelSelector(match_expressions=(req("toast", "Exists"),)), False, "has(toast)"),
        (
            LabelSelector(match_expressions=(req("toast", "In", "butter", "jam"),)),
            False,
            "toast in { 'butter', 'jam' }",
        ),
        (
            LabelSelector(match_expressions=(req("toast", "NotIn", "marmite", "milk"),)),
            False,
            "toast not in { 'marmite', 'milk' }",
        ),
        (
            LabelSelector(match_expressions=(req("toast", "DoesNotExist"),)),
            True,
            "projectcalico.org/orchestrator == 'k8s' && ! has(toast)",
        ),
        (None, True, "projectcalico.org/orchestrator == 'k8s'"),  # nil pod selector
        (None, False, ""),  # nil namespace selector
    ],
)
def test_upstream_selector_table(selector: LabelSelector | None, pod: bool, expected: str) -> None:
    assert k8s_selector_to_calico(selector, pod=pod) == expected


def test_match_expressions_in_manifest() -> None:
    # derived: matchLabels (sorted) come before matchExpressions (in manifest order); set values
    # are written as given, unsorted and with duplicates; Calico's parser normalises them later.
    spec = convert(
        {
            "podSelector": {
                "matchLabels": {"b": "2", "a": "1"},
                "matchExpressions": [
                    {"key": "z", "operator": "NotIn", "values": ["y", "x", "y"]},
                    {"key": "e", "operator": "Exists"},
                    {"key": "d", "operator": "DoesNotExist", "values": []},
                ],
            },
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.io/metadata.name",
                                        "operator": "In",
                                        "values": ["x", "y"],
                                    }
                                ]
                            },
                            "podSelector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]},
                        }
                    ]
                }
            ],
        }
    )
    selector = f"{K8S} && a == '1' && b == '2' && z not in {{ 'y', 'x', 'y' }} && has(e) && ! has(d)"
    assert spec["selector"] == selector
    assert parse_selector(selector).canonical() == (
        '(projectcalico.org/orchestrator == "k8s" && a == "1" && b == "2" && z not in {"x", "y"} '
        "&& has(e) && !has(d))"
    )
    assert spec["ingress"] == [
        allow(
            source={
                "selector": f"{K8S} && has(tier)",
                "namespaceSelector": "kubernetes.io/metadata.name in { 'x', 'y' }",
            }
        )
    ]


_KEYS = ["app", "tier", "example.com/team", "kubernetes.io/metadata.name", "a.b_c-d"]
_VALUES = ["", "a", "b", "web", "x.y-z_1"]


@st.composite
def label_selectors(draw: st.DrawFn) -> LabelSelector:
    labels = draw(st.dictionaries(st.sampled_from(_KEYS), st.sampled_from(_VALUES), max_size=3))
    exprs = []
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(_KEYS))
        op = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]))
        values: tuple[str, ...] = ()
        if op in ("In", "NotIn"):
            values = tuple(draw(st.lists(st.sampled_from(_VALUES), min_size=1, max_size=3)))
        exprs.append(LabelSelectorRequirement(key, op, values))
    return LabelSelector(labels, tuple(exprs))


def k8s_matches(sel: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics (apimachinery labels.Selector)."""
    if any(labels.get(k) != v for k, v in sel.match_labels.items()):
        return False
    for r in sel.match_expressions:
        present = r.key in labels
        ok = {
            "In": present and labels.get(r.key) in r.values,
            "NotIn": not present or labels.get(r.key) not in r.values,
            "Exists": present,
            "DoesNotExist": not present,
        }[r.operator]
        if not ok:
            return False
    return True


@settings(max_examples=300, deadline=None)
@given(label_selectors(), st.dictionaries(st.sampled_from(_KEYS), st.sampled_from(_VALUES), max_size=4))
def test_converted_selectors_parse_and_match_like_kubernetes(
    sel: LabelSelector, labels: dict[str, str]
) -> None:
    # derived: whatever Calico writes must parse with Calico's selector grammar, and select exactly
    # what the Kubernetes selector selects (pods also carry the orchestrator label).
    pod_sel = parse_selector(k8s_selector_to_calico(sel, pod=True))
    assert pod_sel.evaluate({**labels, "projectcalico.org/orchestrator": "k8s"}) == k8s_matches(sel, labels)
    assert not pod_sel.evaluate(labels)  # a non-Kubernetes endpoint never matches a pod selector
    ns_sel = parse_selector(k8s_selector_to_calico(sel, pod=False))
    assert ns_sel.evaluate(labels) == k8s_matches(sel, labels)


# ---------------------------------------------------------------------------------------------
# SimplifyPorts.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_ports", "expected"),
    [
        # upstream: "Test port simplification" table, every entry.
        ("", ""),
        ("0", "0"),
        ("1", "1"),
        ("65535", "65535"),
        ("0:65535", "0:65535"),
        ("1,2", "1:2"),
        ("2,1", "1:2"),
        ("1,2,4", "1:2,4"),
        ("1,2,3,4,80:81,81:90,9090", "1:4,80:90,9090"),
        ("81:90,4,2,80:81,3,1,9090", "1:4,80:90,9090"),
        ("81:90,4,2,foo,80:81,3,1,9090,http", "foo,http,1:4,80:90,9090"),
        ("foo", "foo"),
    ],
)
def test_upstream_port_simplification(given_ports: str, expected: str) -> None:
    ports = [CalicoPort.parse(p) for p in given_ports.split(",") if p]
    assert ",".join(str(p) for p in simplify_ports(ports)) == expected


def test_simplify_ports_short_circuit_keeps_order() -> None:
    # derived: with at most one numeric port the input comes back untouched, order included.
    ports = [CalicoPort.parse(p) for p in ("80", "foo", "foo")]
    assert simplify_ports(ports) == ports
    ports = [CalicoPort.parse(p) for p in ("80:81", "foo")]
    assert [str(p) for p in simplify_ports(ports)] == ["foo", "80:81"]


_port_strategy = st.one_of(
    st.sampled_from(["http", "dns", "metrics"]).map(lambda n: CalicoPort(name=n)),
    st.tuples(st.integers(1, 40), st.integers(0, 5)).map(lambda t: CalicoPort(t[0], t[0] + t[1])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_port_strategy, max_size=8))
def test_simplify_ports_covers_the_same_ports(ports: list[CalicoPort]) -> None:
    # derived: same numbers and names; ranges sorted, disjoint and not adjacent.
    out = simplify_ports(ports)

    def numbers(ps: list[CalicoPort]) -> set[int]:
        return {n for p in ps if not p.name for n in range(p.min_port, p.max_port + 1)}

    assert numbers(out) == numbers(ports)
    assert sorted(p.name for p in out if p.name) == sorted(p.name for p in ports if p.name)
    if sum(p.max_port - p.min_port + 1 for p in ports if not p.name) > 1:
        ranges = [p for p in out if not p.name]
        assert all(a.max_port + 1 < b.min_port for a, b in itertools.pairwise(ranges))
        assert [p for p in out if p.name] == out[: len([p for p in out if p.name])]


# ---------------------------------------------------------------------------------------------
# ipBlock CIDRs: what the API server accepts and how Calico writes it.
# ---------------------------------------------------------------------------------------------


def ingress_source(cidr: str, *excepts: str) -> dict[str, Any]:
    block: dict[str, Any] = {"cidr": cidr}
    if excepts:
        block["except"] = list(excepts)
    rules = convert({"ingress": [{"from": [{"ipBlock": block}]}]})["ingress"]
    assert len(rules) == 1
    return dict(rules[0].get("source", {}))


@pytest.mark.parametrize(
    ("cidr", "nets"),
    [
        ("192.168.1.5/16", "192.168.0.0/16"),  # host bits: accepted (StrictIPCIDRValidation off), masked
        ("10.0.0.1/32", "10.0.0.1/32"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("10.0.0.0/08", "10.0.0.0/8"),  # a leading zero in the prefix length is fine for both parsers
        ("2001:DB8:0:0:1::/64", "2001:db8::/64"),  # IPv6 written in RFC 5952 form
        ("fd00::1:0:0:1/128", "fd00::1:0:0:1/128"),
        ("::/0", "::/0"),
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),  # IPv4-mapped IPv6 comes out as IPv4
    ],
)
def test_ip_block_cidr_normalisation(cidr: str, nets: str) -> None:
    # derived: Calico writes cnet.ParseCIDR(cidr).String(), i.e. Go's masked IPNet.String().
    assert ingress_source(cidr) == {"nets": [nets]}


def test_ipv6_ip_block_with_except() -> None:
    # derived: IPv6 behaves like IPv4.
    assert ingress_source("fd00::/48", "fd00:0:0:1::/64") == {
        "nets": ["fd00::/48"],
        "notNets": ["fd00:0:0:1::/64"],
    }


def test_leading_zero_cidr_matches_everything() -> None:
    # derived: the API server accepts "010.0.0.0/8" (it reads 10.0.0.0/8), Go's net.ParseCIDR
    # refuses it, and k8sPeerToCalicoFields then returns a peer with no criteria at all.
    assert ingress_source("010.0.0.0/8") == {}


def test_leading_zero_except_truncates_not_nets() -> None:
    # derived: k8sPeerToCalicoFields returns at the first except it cannot parse, keeping the nets
    # and the except entries parsed so far.
    assert ingress_source("10.0.0.0/8", "10.1.0.0/16", "10.02.0.0/16", "10.3.0.0/16") == {
        "nets": ["10.0.0.0/8"],
        "notNets": ["10.1.0.0/16"],
    }


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32), st.just(4)),
        st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 128), st.just(6)),
    )
)
def test_cidr_string_matches_python(net: tuple[int, int, int]) -> None:
    # derived: for ordinary (non-mapped) addresses Go's IPNet.String() equals Python's compressed
    # network text, so the Go emulation can be checked against the standard library.
    value, prefix, family = net
    if family == 4:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(value)
    else:
        address = ipaddress.IPv6Address(value)
        if address.ipv4_mapped is not None:
            return
    text = f"{address}/{prefix}"
    expected = str(ipaddress.ip_network(text, strict=False))
    assert ingress_source(text) == {"nets": [expected]}


# ---------------------------------------------------------------------------------------------
# A manifest as users write it.
# ---------------------------------------------------------------------------------------------


def test_yaml_manifest() -> None:
    # derived: the allow-from-namespace pattern of the Kubernetes documentation.
    doc = yaml.safe_load(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: test-network-policy
          namespace: default
          labels: {team: net}
        spec:
          podSelector:
            matchLabels:
              role: db
          policyTypes: [Ingress, Egress]
          ingress:
            - from:
                - ipBlock:
                    cidr: 172.17.0.0/16
                    except: [172.17.1.0/24]
                - namespaceSelector:
                    matchLabels:
                      project: myproject
                - podSelector:
                    matchLabels:
                      role: frontend
              ports:
                - protocol: TCP
                  port: 6379
          egress:
            - to:
                - ipBlock:
                    cidr: 10.0.0.0/24
              ports:
                - protocol: TCP
                  port: 5978
        """
    )
    res = convert_network_policy(doc)
    assert res.name == "test-network-policy"
    assert res.spec == calico(
        selector=f"{K8S} && role == 'db'",
        types=("Ingress", "Egress"),
        ingress=[
            allow(
                "TCP",
                source={"nets": ["172.17.0.0/16"], "notNets": ["172.17.1.0/24"]},
                destination={"ports": [6379]},
            ),
            allow(
                "TCP",
                source={"selector": K8S, "namespaceSelector": "project == 'myproject'"},
                destination={"ports": [6379]},
            ),
            allow("TCP", source={"selector": f"{K8S} && role == 'frontend'"}, destination={"ports": [6379]}),
        ],
        egress=[allow("TCP", destination={"nets": ["10.0.0.0/24"], "ports": [5978]})],
    )


def test_input_is_not_modified() -> None:
    doc = manifest({"ingress": [{"ports": [{"port": 80}]}]})
    before = copy.deepcopy(doc)
    convert_network_policy(doc)
    assert doc == before


# ---------------------------------------------------------------------------------------------
# What the API server rejects.
# ---------------------------------------------------------------------------------------------


def ingress_ports(*ports: Any) -> dict[str, Any]:
    return {"ingress": [{"ports": list(ports)}]}


def ingress_peer(peer: Any) -> dict[str, Any]:
    return {"ingress": [{"from": [peer]}]}


def block(cidr: Any, *excepts: Any) -> dict[str, Any]:
    return {"ipBlock": {"cidr": cidr, "except": list(excepts)}}


INVALID_SPECS: list[tuple[str, Any, str]] = [
    # Ports (ValidateNetworkPolicyPort).
    (
        "endport-without-port",
        ingress_ports({"endPort": 90}),
        "spec.ingress[0].ports[0].endPort: Invalid value: 90: "
        "may not be specified when `port` is not specified",
    ),
    (
        "endport-below-port",
        ingress_ports({"port": 80}, {"port": 90, "endPort": 89}),
        "spec.ingress[0].ports[1].endPort: Invalid value: 89: must be greater than or equal to `port`",
    ),
    (
        "endport-named-port",
        {"egress": [{"ports": [{"port": "http", "endPort": 90}]}]},
        "spec.egress[0].ports[0].endPort: Invalid value: 90: may not be specified when `port` is non-numeric",
    ),
    (
        "endport-too-big",
        ingress_ports({"port": 80, "endPort": 65536}),
        "spec.ingress[0].ports[0].endPort: Invalid value: 65536: must be between 1 and 65535",
    ),
    (
        "port-zero",
        ingress_ports({"port": 0}),
        "spec.ingress[0].ports[0].port: Invalid value: 0: must be between 1 and 65535",
    ),
    ("port-too-big", ingress_ports({"port": 65536}), "spec.ingress[0].ports[0].port: Invalid value: 65536"),
    ("port-negative", ingress_ports({"port": -1}), "spec.ingress[0].ports[0].port: Invalid value: -1"),
    (
        "port-name-upper",
        ingress_ports({"port": "HTTP"}),
        'spec.ingress[0].ports[0].port: Invalid value: "HTTP"',
    ),
    (
        "port-name-digits",
        ingress_ports({"port": "80"}),
        'spec.ingress[0].ports[0].port: Invalid value: "80": must contain at least one letter',
    ),
    ("port-name-hyphens", ingress_ports({"port": "a--b"}), "must not contain consecutive hyphens"),
    ("port-name-edge-hyphen", ingress_ports({"port": "-ab"}), "must not begin or end with a hyphen"),
    ("port-name-long", ingress_ports({"port": "abcdefghijklmnop"}), "must be no more than 15 characters"),
    ("port-name-empty", ingress_ports({"port": ""}), 'spec.ingress[0].ports[0].port: Invalid value: ""'),
    (
        "protocol-icmp",
        ingress_ports({"port": 80, "protocol": "ICMP"}),
        'spec.ingress[0].ports[0].protocol: Unsupported value: "ICMP"',
    ),
    (
        "protocol-lowercase",
        ingress_ports({"protocol": "tcp"}),
        'spec.ingress[0].ports[0].protocol: Unsupported value: "tcp"',
    ),
    (
        "protocol-empty",
        ingress_ports({"protocol": ""}),
        'spec.ingress[0].ports[0].protocol: Unsupported value: ""',
    ),
    # Peers and ipBlocks (ValidateNetworkPolicyPeer, ValidateIPBlock).
    ("empty-peer", {"egress": [{"to": [{}]}]}, "spec.egress[0].to[0]: Required value: must specify a peer"),
    ("null-peer", ingress_peer(None), "spec.ingress[0].from[0]: Required value: must specify a peer"),
    (
        "ipblock-and-pods",
        ingress_peer({**block("10.0.0.0/8"), "podSelector": {}}),
        "spec.ingress[0].from[0]: Forbidden: may not specify both ipBlock and another peer",
    ),
    (
        "ipblock-and-namespaces",
        ingress_peer({**block("10.0.0.0/8"), "namespaceSelector": {}}),
        "spec.ingress[0].from[0]: Forbidden",
    ),
    (
        "cidr-missing",
        ingress_peer({"ipBlock": {"except": []}}),
        "spec.ingress[0].from[0].ipBlock.cidr: Required value",
    ),
    ("cidr-empty", ingress_peer(block("")), "spec.ingress[0].from[0].ipBlock.cidr: Required value"),
    (
        "cidr-no-prefix",
        ingress_peer(block("10.0.0.1")),
        'spec.ingress[0].from[0].ipBlock.cidr: Invalid value: "10.0.0.1": must be a valid CIDR value',
    ),
    (
        "cidr-prefix-too-long",
        ingress_peer(block("10.0.0.0/33")),
        'spec.ingress[0].from[0].ipBlock.cidr: Invalid value: "10.0.0.0/33"',
    ),
    ("cidr-v6-prefix-too-long", ingress_peer(block("fd00::/129")), "spec.ingress[0].from[0].ipBlock.cidr"),
    ("cidr-garbage", ingress_peer(block("not-a-cidr/8")), "spec.ingress[0].from[0].ipBlock.cidr"),
    ("cidr-zone", ingress_peer(block("fe80::1%eth0/64")), "spec.ingress[0].from[0].ipBlock.cidr"),
    ("cidr-octet-too-big", ingress_peer(block("256.0.0.0/8")), "spec.ingress[0].from[0].ipBlock.cidr"),
    (
        "except-outside",
        ingress_peer(block("10.0.0.0/8", "11.0.0.0/24")),
        'spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: "11.0.0.0/24": '
        "must be a strict subset of `cidr`",
    ),
    (
        "except-equal",
        ingress_peer(block("10.0.0.0/8", "10.1.0.0/16", "10.0.0.0/8")),
        'spec.ingress[0].from[0].ipBlock.except[1]: Invalid value: "10.0.0.0/8": must be a strict subset',
    ),
    (
        "except-larger",
        ingress_peer(block("10.0.0.0/8", "10.0.0.0/7")),
        "spec.ingress[0].from[0].ipBlock.except[0]",
    ),
    (
        "except-other-family",
        ingress_peer(block("10.0.0.0/8", "fd00::/64")),
        "spec.ingress[0].from[0].ipBlock.except[0]",
    ),
    (
        "except-invalid",
        {"egress": [{"to": [block("10.0.0.0/8", "10.0.0.0/40")]}]},
        'spec.egress[0].to[0].ipBlock.except[0]: Invalid value: "10.0.0.0/40": must be a valid CIDR value',
    ),
    # policyTypes.
    (
        "policy-types-three",
        {"policyTypes": ["Ingress", "Egress", "Ingress"]},
        "spec.policyTypes: Invalid value",
    ),
    (
        "policy-type-lowercase",
        {"policyTypes": ["Ingress", "egress"]},
        'spec.policyTypes[1]: Unsupported value: "egress"',
    ),
    ("policy-type-empty", {"policyTypes": [""]}, "spec.policyTypes[0]: Unsupported value"),
    # Label selectors (ValidateLabelSelector).
    (
        "operator-lowercase",
        {"podSelector": {"matchExpressions": [{"key": "a", "operator": "in", "values": ["x"]}]}},
        'spec.podSelector.matchExpressions[0].operator: Invalid value: "in": not a valid selector operator',
    ),
    (
        "operator-missing",
        {"podSelector": {"matchExpressions": [{"key": "a"}]}},
        "spec.podSelector.matchExpressions[0].operator",
    ),
    (
        "in-without-values",
        {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
        "spec.podSelector.matchExpressions[0].values: Required value",
    ),
    (
        "notin-empty-values",
        ingress_peer(
            {"podSelector": {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": []}]}}
        ),
        "spec.ingress[0].from[0].podSelector.matchExpressions[0].values: Required value",
    ),
    (
        "exists-with-values",
        ingress_peer(
            {"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}}
        ),
        "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values: Forbidden",
    ),
    (
        "expression-key-space",
        {"podSelector": {"matchExpressions": [{"key": "a b", "operator": "Exists"}]}},
        'spec.podSelector.matchExpressions[0].key: Invalid value: "a b"',
    ),
    (
        "expression-key-two-slashes",
        {"podSelector": {"matchExpressions": [{"key": "a/b/c", "operator": "Exists"}]}},
        "spec.podSelector.matchExpressions[0].key",
    ),
    (
        "expression-key-empty-prefix",
        {"podSelector": {"matchExpressions": [{"key": "/b", "operator": "Exists"}]}},
        "spec.podSelector.matchExpressions[0].key",
    ),
    (
        "expression-key-bad-prefix",
        {"podSelector": {"matchExpressions": [{"key": "Example.com/b", "operator": "Exists"}]}},
        "prefix part",
    ),
    (
        "expression-value-invalid",
        {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In", "values": ["ok", "not ok"]}]}},
        'spec.podSelector.matchExpressions[0].values[1]: Invalid value: "not ok"',
    ),
    (
        "match-labels-bad-key",
        {"podSelector": {"matchLabels": {"-a": "x"}}},
        'spec.podSelector.matchLabels: Invalid value: "-a"',
    ),
    (
        "match-labels-bad-value",
        ingress_peer({"namespaceSelector": {"matchLabels": {"team": "a b"}}}),
        'spec.ingress[0].from[0].namespaceSelector.matchLabels[team]: Invalid value: "a b"',
    ),
    (
        "match-labels-long-value",
        {"podSelector": {"matchLabels": {"a": "x" * 64}}},
        "spec.podSelector.matchLabels[a]",
    ),
]


@pytest.mark.parametrize(
    ("spec", "message"), [c[1:] for c in INVALID_SPECS], ids=[c[0] for c in INVALID_SPECS]
)
def test_validation_errors_name_the_field(spec: Any, message: str) -> None:
    # derived: ValidateNetworkPolicySpec and the apimachinery validators it calls.
    with pytest.raises(ScenarioError) as info:
        convert(spec)
    assert message in str(info.value)
    assert str(info.value).startswith('NetworkPolicy.networking.k8s.io "test.policy" is invalid: ')


def test_all_errors_are_reported_together() -> None:
    # derived: the API server lists every problem, not just the first.
    with pytest.raises(ScenarioError) as info:
        convert(
            {
                "ingress": [{"ports": [{"port": 80, "endPort": 79}, {"protocol": "ICMP"}], "from": [{}]}],
                "policyTypes": ["Sideways"],
            }
        )
    text = str(info.value)
    for path in (
        "spec.ingress[0].ports[0].endPort",
        "spec.ingress[0].ports[1].protocol",
        "spec.ingress[0].from[0]",
        "spec.policyTypes[0]",
    ):
        assert path in text


@pytest.mark.parametrize(
    ("name", "namespace", "message"),
    [
        # upstream's "testPolicy" ("should parse a default-deny egress NetworkPolicy") is no valid name.
        ("testPolicy", "default", 'metadata.name: Invalid value: "testPolicy"'),
        ("", "default", "metadata.name: Required value"),
        ("a_b", "default", 'metadata.name: Invalid value: "a_b"'),
        ("x" * 254, "default", "must be no more than 253 characters"),
        ("ok", "Bad", 'metadata.namespace: Invalid value: "Bad"'),
        ("ok", "a.b", 'metadata.namespace: Invalid value: "a.b"'),
        ("ok", "", "metadata.namespace: Required value"),
    ],
)
def test_metadata_errors(name: str, namespace: str, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        convert_network_policy(manifest({}, name=name, namespace=namespace))
    assert message in str(info.value)


def test_metadata_label_errors() -> None:
    doc = manifest({})
    doc["metadata"]["labels"] = {"ok": "a b"}
    with pytest.raises(ScenarioError, match=r"metadata\.labels\[ok\]"):
        convert_network_policy(doc)


# ---------------------------------------------------------------------------------------------
# What strict decoding rejects: unknown fields and wrong types, each named.
# ---------------------------------------------------------------------------------------------

DECODE_ERRORS: list[tuple[str, Any, str]] = [
    ("spec-typo", {"podselector": {}}, 'unknown field "spec.podselector"'),
    ("rule-typo", {"ingress": [{"form": []}]}, 'unknown field "spec.ingress[0].form"'),
    ("egress-with-from", {"egress": [{"from": []}]}, 'unknown field "spec.egress[0].from"'),
    ("ingress-with-to", {"ingress": [{"to": []}]}, 'unknown field "spec.ingress[0].to"'),
    (
        "peer-calico-field",
        ingress_peer({"serviceAccountSelector": "x"}),
        'unknown field "spec.ingress[0].from[0].serviceAccountSelector"',
    ),
    ("port-field", ingress_ports({"portName": "http"}), 'unknown field "spec.ingress[0].ports[0].portName"'),
    (
        "ipblock-field",
        ingress_peer({"ipBlock": {"cidr": "10.0.0.0/8", "excepts": []}}),
        'unknown field "spec.ingress[0].from[0].ipBlock.excepts"',
    ),
    (
        "selector-field",
        {"podSelector": {"matchLabel": {"a": "b"}}},
        'unknown field "spec.podSelector.matchLabel"',
    ),
    (
        "requirement-field",
        {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In", "value": ["b"]}]}},
        'unknown field "spec.podSelector.matchExpressions[0].value"',
    ),
    ("calico-spec-field", {"order": 10}, 'unknown field "spec.order"'),
    (
        "port-float",
        ingress_ports({"port": 80.5}),
        "spec.ingress[0].ports[0].port: Invalid type: expected integer or string, got number",
    ),
    ("port-bool", ingress_ports({"port": True}), "spec.ingress[0].ports[0].port: Invalid type"),
    ("port-int64", ingress_ports({"port": 2**40}), "spec.ingress[0].ports[0].port: Invalid value"),
    (
        "endport-string",
        ingress_ports({"port": 80, "endPort": "81"}),
        "spec.ingress[0].ports[0].endPort: Invalid type: expected integer, got string",
    ),
    (
        "protocol-number",
        ingress_ports({"protocol": 6}),
        "spec.ingress[0].ports[0].protocol: Invalid type: expected string, got integer",
    ),
    (
        "policy-types-string",
        {"policyTypes": "Ingress"},
        "spec.policyTypes: Invalid type: expected array, got string",
    ),
    (
        "from-object",
        {"ingress": [{"from": {"podSelector": {}}}]},
        "spec.ingress[0].from: Invalid type: expected array",
    ),
    (
        "ports-object",
        {"egress": [{"ports": {"port": 80}}]},
        "spec.egress[0].ports: Invalid type: expected array",
    ),
    ("ingress-object", {"ingress": {"from": []}}, "spec.ingress: Invalid type: expected array"),
    (
        "match-labels-int",
        {"podSelector": {"matchLabels": {"a": 1}}},
        "spec.podSelector.matchLabels.a: Invalid type: expected string, got integer",
    ),
    (
        "match-labels-bool",
        {"podSelector": {"matchLabels": {"enabled": True}}},
        "spec.podSelector.matchLabels.enabled: Invalid type",
    ),
    (
        "values-int",
        {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In", "values": [1]}]}},
        "spec.podSelector.matchExpressions[0].values[0]: Invalid type",
    ),
    (
        "cidr-int",
        ingress_peer({"ipBlock": {"cidr": 10}}),
        "spec.ingress[0].from[0].ipBlock.cidr: Invalid type",
    ),
    (
        "except-string",
        ingress_peer({"ipBlock": {"cidr": "10.0.0.0/8", "except": "10.1.0.0/16"}}),
        "spec.ingress[0].from[0].ipBlock.except: Invalid type: expected array",
    ),
    ("spec-list", [], "spec: Invalid type: expected object, got array"),
    ("peer-string", ingress_peer("10.0.0.0/8"), "spec.ingress[0].from[0]: Invalid type: expected object"),
]


@pytest.mark.parametrize(
    ("spec", "message"), [c[1:] for c in DECODE_ERRORS], ids=[c[0] for c in DECODE_ERRORS]
)
def test_decode_errors_name_the_field(spec: Any, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        convert(spec)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"status": {}}, 'unknown field "status"'),
        (
            {"apiVersion": "networking.k8s.io/v1beta1"},
            'apiVersion: Unsupported value: "networking.k8s.io/v1beta1"',
        ),
        ({"apiVersion": None}, "apiVersion: Required value"),
        ({"kind": "GlobalNetworkPolicy"}, 'kind: Unsupported value: "GlobalNetworkPolicy"'),
        ({"metadata": {"name": "x", "nmespace": "y"}}, 'unknown field "metadata.nmespace"'),
        ({"metadata": {"name": 5}}, "metadata.name: Invalid type"),
        ({"metadata": "x"}, "metadata: Invalid type: expected object"),
    ],
)
def test_top_level_decode_errors(change: dict[str, Any], message: str) -> None:
    doc = {**manifest({}), **change}
    doc = {k: v for k, v in doc.items() if v is not None}
    with pytest.raises(ScenarioError) as info:
        convert_network_policy(doc)
    assert message in str(info.value)


def test_known_metadata_fields_are_accepted() -> None:
    doc = manifest({})
    doc["metadata"].update(
        {
            "uid": "30316465-6365-4463-ad63-3564622d3638",
            "resourceVersion": "12",
            "labels": {"app": "x"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "creationTimestamp": None,
        }
    )
    assert convert_network_policy(doc).spec == calico()


def test_manifest_must_be_a_mapping() -> None:
    with pytest.raises(ScenarioError, match="must be a mapping"):
        convert_network_policy([])  # type: ignore[arg-type]
