"""The Felix calculation (`scenario.calc`) and rule conversion (`scenario.rules`).

Expected values are taken from Calico v3.33's own tests where they exist, cited per test:
libcalico-go ``updateprocessors/rules_test.go``, ``networkpolicyprocessor_test.go`` and
``globalnetworkpolicyprocessor_test.go`` (v3 -> backend model), Felix ``calc/rule_scanner_test.go``
(backend rule -> IP set IDs), ``calc/rule_convert_test.go`` (-> proto, rule IDs),
``calc/states_for_test.go`` (named-port member format) and libcalico-go
``k8s/conversion/conversion_test.go`` (interface names).  Every stream is also fed through the
driver's own model to prove it is self-consistent.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import random
from collections.abc import Iterable
from typing import Any

import pytest

from calico_vpp_driver.felix import felixbackend_pb2 as pb
from calico_vpp_driver.felix.decode import apply_message
from calico_vpp_driver.model.state import DesiredState
from calico_vpp_driver.scenario.calc import (
    FelixCalc,
    PolicyKey,
    convert_policy,
    diff_stream,
    veth_name,
    vtep_mac,
)
from calico_vpp_driver.scenario.resources import (
    ContainerPort,
    IPPoolSpec,
    Namespace,
    Node,
    Pod,
    PolicyResource,
    ScenarioError,
    Tier,
)
from calico_vpp_driver.scenario.rules import (
    backend_rule,
    convert_rule,
    fill_rule_ids,
    prefix_selector,
    proto_rules,
)
from calico_vpp_driver.scenario.selector import (
    make_unique_id,
    named_port_ipset_id,
    selector_ipset_id,
)

NODE = "node-1"


# ---------------------------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------------------------


def ns(name: str, **labels: str) -> Namespace:
    return Namespace(name, {"kubernetes.io/metadata.name": name, **labels})


def pod(name: str, namespace: str, ip: str | tuple[str, ...], node: str = NODE, sa: str = "default",
        ports: tuple[ContainerPort, ...] = (), **labels: str) -> Pod:
    ips = (ip,) if isinstance(ip, str) else ip
    return Pod(name, namespace, ips, node, labels, sa, ports)


def np(name: str, namespace: str, spec: dict[str, Any], kind: str = "NetworkPolicy") -> PolicyResource:
    return PolicyResource(kind, name, namespace, spec)


def gnp(name: str, spec: dict[str, Any], kind: str = "GlobalNetworkPolicy") -> PolicyResource:
    return PolicyResource(kind, name, "", spec)


def calc(
    namespaces: Iterable[Namespace] = (),
    pods: Iterable[Pod] = (),
    policies: Iterable[PolicyResource] = (),
    *,
    nodes: Iterable[Node] = (),
    pools: Iterable[IPPoolSpec] = (IPPoolSpec("10.65.0.0/16"),),
    tiers: Iterable[Tier] = (),
    config: dict[str, str] | None = None,
    node: str = NODE,
) -> FelixCalc:
    return FelixCalc(node, list(namespaces), list(pods), list(nodes), list(pools), list(tiers),
                     list(policies), config or {})


def payloads(msgs: Iterable[pb.ToDataplane]) -> list[str]:
    return [m.WhichOneof("payload") or "" for m in msgs]


def feed(state: DesiredState, msgs: Iterable[pb.ToDataplane]) -> None:
    """Apply messages to the driver's model; no message may be reported as a problem."""
    for m in msgs:
        outcome = apply_message(state, m)
        assert outcome.problem is None, (m, outcome)
        assert outcome.ignored is None, (m, outcome)


def assert_consistent(state: DesiredState) -> None:
    assert state.in_sync
    for key in state.workload_endpoints:
        assert state.endpoint_problems(key) == [], key


def snapshot(state: DesiredState) -> dict[str, Any]:
    """Everything the driver knows, in comparable form."""
    return {
        "ipsets": {k: (v.type, frozenset(v.members)) for k, v in state.ipsets.items()},
        "policies": dict(state.policies),
        "profiles": dict(state.profiles),
        "endpoints": dict(state.workload_endpoints),
        "namespaces": dict(state.namespaces),
        "service_accounts": dict(state.service_accounts),
        "hosts": dict(state.host_metadata),
        "pools": dict(state.ip_pools),
        "routes": dict(state.routes),
        "vteps": dict(state.vteps),
        "encap": state.encapsulation,
    }


def started(c: FelixCalc) -> DesiredState:
    state = DesiredState()
    feed(state, c.startup_stream())
    assert_consistent(state)
    return state


def rule(**kw: Any) -> dict[str, Any]:
    return {"action": "Allow", **kw}


# ---------------------------------------------------------------------------------------------
# Rules: v3 -> backend model (libcalico-go updateprocessors/rules_test.go).
# ---------------------------------------------------------------------------------------------


def test_rule_selectors_are_namespaced_in_a_namespaced_policy() -> None:
    # rules_test.go "should handle the conversion of rules" (with a valid selector): a rule
    # selector is ANDed with the policy's namespace; a notSelector alone still limits the
    # positive side to the namespace, and itself passes through untouched.
    r = backend_rule(
        rule(
            ipVersion=4,
            protocol="TCP",
            source={"nets": ["10.100.10.1/32"], "selector": "mylabel == 'value1'", "ports": [80],
                    "notNets": ["192.168.40.1/32"], "notSelector": "has(label1)"},
            destination={"nets": ["10.100.1.1/32"], "ports": [443],
                         "notNets": ["192.168.80.1/32"], "notSelector": "has(label2)"},
        ),
        namespace="namespace2",
    )
    assert r.action == "allow"
    assert r.protocol == "tcp"
    assert r.src_selector == "(projectcalico.org/namespace == 'namespace2') && (mylabel == 'value1')"
    assert r.dst_selector == "projectcalico.org/namespace == 'namespace2'"
    assert r.not_src_selector == "has(label1)"
    assert r.not_dst_selector == "has(label2)"
    assert r.original_src_selector == "mylabel == 'value1'"
    assert r.original_not_dst_selector == "has(label2)"
    assert r.src_nets == ("10.100.10.1/32",)


def test_rule_namespace_selector_replaces_the_policy_namespace() -> None:
    # rules_test.go "should parse a rule with both a selector and namespace selector".
    er = {"selector": "projectcalico.org/orchestrator == 'k8s'", "namespaceSelector": "key == 'value'"}
    r = backend_rule(rule(source=er, destination=er), namespace="namespace")
    expected = "(pcns.key == \"value\") && (projectcalico.org/orchestrator == 'k8s')"
    assert r.src_selector == expected
    assert r.dst_selector == expected
    assert r.original_src_namespace_selector == "key == 'value'"


def test_rule_complex_namespace_selector_is_prefixed() -> None:
    # rules_test.go "should parse a complex namespace selector".
    s = "!has(key) || (has(key) && !key in {'value'})"
    r = backend_rule(rule(source={"namespaceSelector": s}), namespace="namespace")
    assert r.src_selector == '(!has(pcns.key) || (has(pcns.key) && !pcns.key in {"value"}))'


def test_rule_service_accounts() -> None:
    # rules_test.go "should parse a serviceaccount match" and "... with selector and namespace".
    r = backend_rule(
        rule(
            source={"serviceAccounts": {"names": ["sa1", "sa2"], "selector": "key == 'value1'"}},
            destination={"namespaceSelector": "nskey == 'nsvalue'",
                         "serviceAccounts": {"names": ["sa3"], "selector": "key == 'value2'"}},
        ),
        namespace="namespace",
    )
    assert r.src_selector == (
        "(projectcalico.org/namespace == 'namespace') && ((pcsa.key == \"value1\") && "
        '(projectcalico.org/serviceaccount in {"sa1", "sa2"}))'
    )
    assert r.dst_selector == (
        '(pcns.nskey == "nsvalue") && ((pcsa.key == "value2") && '
        '(projectcalico.org/serviceaccount in {"sa3"}))'
    )
    assert r.src_service_account_selector == "key == 'value1'"
    assert r.src_service_account_names == ("sa1", "sa2")

    r = backend_rule(
        rule(destination={"namespaceSelector": "nskey == 'nsvalue'", "selector": "has(label1)",
                          "serviceAccounts": {"names": ["sa3"], "selector": "key == 'value2'"}}),
        namespace="namespace",
    )
    assert r.dst_selector == (
        '(pcns.nskey == "nsvalue") && (((pcsa.key == "value2") && '
        '(projectcalico.org/serviceaccount in {"sa3"})) && (has(label1)))'
    )


def test_rule_service_accounts_global_and_empty() -> None:
    # rules_test.go "... with global namespace and no namespace selector", "... empty ... match".
    r = backend_rule(rule(source={"serviceAccounts": {"names": ["sa1", "sa2"],
                                                      "selector": "key == 'value1'"}}))
    assert r.src_selector == (
        '(pcsa.key == "value1") && (projectcalico.org/serviceaccount in {"sa1", "sa2"})'
    )
    assert backend_rule(rule(source={"serviceAccounts": {}})).src_selector == ""


def test_rule_namespace_selector_all_and_global() -> None:
    r = backend_rule(rule(source={"namespaceSelector": "all()"}), namespace="x")
    assert r.src_selector == "has(projectcalico.org/namespace)"
    r = backend_rule(rule(source={"namespaceSelector": "global()"}), namespace="x")
    assert r.src_selector == "!has(projectcalico.org/namespace)"


def test_rule_without_selectors_in_a_namespaced_policy_has_none() -> None:
    # rules_test.go "should parse a rule with ports but no selectors".
    r = backend_rule(rule(protocol="TCP", source={"ports": [80]}, destination={"ports": [443]}),
                     namespace="namespace")
    assert (r.src_selector, r.dst_selector) == ("", "")


def test_prefix_selector() -> None:
    assert prefix_selector("k == 'v'", "pcns.") == 'pcns.k == "v"'
    assert prefix_selector("all()", "pcns.") == "all()"
    assert prefix_selector("a in {'x'} && !has(b)", "pcsa.") == '(pcsa.a in {"x"} && !has(pcsa.b))'


@pytest.mark.parametrize(
    ("action", "expected"),
    [("Allow", "allow"), ("Deny", "deny"), ("Log", "log"), ("Pass", "next-tier")],
)
def test_actions(action: str, expected: str) -> None:
    # ruleActionAPIV3ToBackend: lowercase, except Pass -> next-tier.
    msg, _ = convert_rule({"action": action})
    assert msg.action == expected


# ---------------------------------------------------------------------------------------------
# Rules: backend -> IP sets -> proto (Felix rule_scanner_test.go, rule_convert_test.go).
# ---------------------------------------------------------------------------------------------


def test_positive_selector_absorbs_negative_one() -> None:
    # rule_scanner_test.go "positive selectors should be combined with negative ones".
    msg, sets = convert_rule(rule(
        source={"selector": "a == 'b'", "notSelector": "has(foo3)"},
        destination={"selector": "b == 'c'", "notSelector": "d in {'a', 'b'}"},
    ))
    assert list(msg.src_ip_set_ids) == [selector_ipset_id("(a == 'b') && !(has(foo3))")]
    assert list(msg.dst_ip_set_ids) == [selector_ipset_id("(b == 'c') && !(d in {'a', 'b'})")]
    assert not msg.not_src_ip_set_ids and not msg.not_dst_ip_set_ids
    assert {s.id for s in sets} == set(msg.src_ip_set_ids) | set(msg.dst_ip_set_ids)
    assert all(s.ipset_type == pb.IPSetUpdate.NET for s in sets)


def test_only_negative_selectors() -> None:
    # rule_scanner_test.go "only negative selectors".
    msg, _ = convert_rule(rule(source={"notSelector": "has(foo3)"},
                               destination={"notSelector": "d in {'a', 'b'}"}))
    assert list(msg.not_src_ip_set_ids) == [selector_ipset_id("has(foo3)")]
    assert list(msg.not_dst_ip_set_ids) == [selector_ipset_id("d in {'a', 'b'}")]
    assert not msg.src_ip_set_ids


def test_named_ports_become_ip_and_port_sets() -> None:
    # rule_scanner.go: named ports are filtered by the side's positive selector and take the
    # rule's protocol; the selector set is dropped when only named ports were given.
    msg, sets = convert_rule(rule(protocol="TCP", destination={"selector": "app == 'web'",
                                                               "ports": ["http"]}))
    sel = "app == 'web'"
    assert list(msg.dst_named_port_ip_set_ids) == [named_port_ipset_id(sel, "tcp", "http")]
    assert not msg.dst_ip_set_ids
    assert [(s.named_port, s.protocol, s.ipset_type) for s in sets] == [
        ("http", "tcp", pb.IPSetUpdate.IP_AND_PORT)
    ]

    # Numeric and named ports together: the selector set stays, numeric ports are ranges.
    msg, _ = convert_rule(rule(protocol="UDP", destination={"selector": sel,
                                                            "ports": ["dns", 53, "1000:2000"]}))
    assert list(msg.dst_named_port_ip_set_ids) == [named_port_ipset_id(sel, "udp", "dns")]
    assert list(msg.dst_ip_set_ids) == [selector_ipset_id(sel)]
    assert [(p.first, p.last) for p in msg.dst_ports] == [(53, 53), (1000, 2000)]

    # No protocol: a named port matches any protocol, against all() when no selector.
    msg, _ = convert_rule(rule(destination={"ports": ["http"], "notPorts": ["metrics"]}))
    assert list(msg.dst_named_port_ip_set_ids) == [named_port_ipset_id(None, "any", "http")]
    assert list(msg.not_dst_named_port_ip_set_ids) == [named_port_ipset_id(None, "any", "metrics")]


def test_protocols_and_ip_version() -> None:
    # numorstring ToV1 + rule_convert ipVersionToProtoIPVersion.
    def conv(**kw: Any) -> pb.Rule:
        return convert_rule(rule(**kw))[0]

    assert conv(protocol="TCP").protocol.name == "tcp"
    assert conv(protocol="tcp").protocol.name == "tcp"  # leniency: any letter case
    assert conv(protocol=6).protocol.number == 6
    assert conv(protocol="17").protocol.number == 17  # a quoted number is a number
    assert conv(notProtocol="UDPLite").not_protocol.name == "udplite"
    assert conv(protocol="ICMP").ip_version == pb.IPV4
    assert conv(protocol="ICMPv6").ip_version == pb.IPV6
    assert conv(protocol="ICMPv6").protocol.name == "icmpv6"
    assert conv(protocol=1).ip_version == pb.ANY  # only names imply a version
    assert conv(ipVersion=6).ip_version == pb.IPV6
    assert not conv().HasField("protocol")


def test_icmp_fields() -> None:
    # rule_convert_test.go "ICMP type-only rule" and the type+code oneof member.
    msg = convert_rule(rule(protocol="ICMP", icmp={"type": 10}, notICMP={"type": 11}))[0]
    assert msg.WhichOneof("icmp") == "icmp_type" and msg.icmp_type == 10
    assert msg.WhichOneof("not_icmp") == "not_icmp_type" and msg.not_icmp_type == 11
    msg = convert_rule(rule(protocol="ICMP", icmp={"type": 10, "code": 12},
                            notICMP={"type": 11, "code": 13}))[0]
    assert (msg.icmp_type_code.type, msg.icmp_type_code.code) == (10, 12)
    assert (msg.not_icmp_type_code.type, msg.not_icmp_type_code.code) == (11, 13)
    msg = convert_rule(rule(protocol="ICMP", icmp={"type": 0}))[0]
    assert msg.WhichOneof("icmp") == "icmp_type" and msg.icmp_type == 0


def test_nets_are_masked_and_passed_through() -> None:
    msg = convert_rule(rule(source={"nets": ["10.1.2.3/8"], "notNets": ["10.9.0.0/16"]},
                            destination={"nets": ["11.0.0.0/16"]}))[0]
    assert list(msg.src_net) == ["10.0.0.0/8"]
    assert list(msg.not_src_net) == ["10.9.0.0/16"]
    assert list(msg.dst_net) == ["11.0.0.0/16"]
    msg = convert_rule(rule(destination={"nets": ["fd00::1/64"]}))[0]
    assert list(msg.dst_net) == ["fd00::/64"]


def test_service_account_match_and_metadata_pass_through() -> None:
    msg = convert_rule(rule(
        source={"serviceAccounts": {"names": ["src-1"], "selector": "has(sa-src)"}},
        metadata={"annotations": {"key": "value"}},
    ))[0]
    assert msg.src_service_account_match.selector == "has(sa-src)"
    assert list(msg.src_service_account_match.names) == ["src-1"]
    assert not msg.HasField("dst_service_account_match")
    assert dict(msg.metadata.annotations) == {"key": "value"}


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        (rule(http={"methods": ["GET"]}), "rule.http"),
        (rule(destination={"services": {"name": "kube-dns"}}), "rule.destination.services"),
        (rule(bogus=1), "rule.bogus"),
        (rule(source={"bogus": 1}), "rule.source.bogus"),
        ({"action": "Accept"}, "rule.action"),
        ({}, "rule.action"),
        (rule(destination={"ports": [80]}), "rule.destination.ports"),
        (rule(protocol="ICMP", destination={"ports": [80]}), "rule.destination.ports"),
        (rule(protocol="TCP", icmp={"type": 8}), "rule.icmp"),
        (rule(protocol="ICMP", icmp={"code": 1}), "rule.icmp.code"),
        (rule(protocol="ICMP", icmp={"type": 255}), "rule.icmp.type"),
        (rule(protocol="ICMP", ipVersion=6), "rule.protocol"),
        (rule(protocol="foo"), "rule.protocol"),
        (rule(protocol=0), "rule.protocol"),
        (rule(source={"nets": ["10.0.0.1"]}), "rule.source.nets[0]"),
        (rule(source={"nets": ["10.0.0.0/8"]}, destination={"nets": ["fd00::/64"]}),
         "rule.destination.nets"),
        (rule(ipVersion=6, source={"nets": ["10.0.0.0/8"]}), "rule.source.nets"),
        (rule(source={"notNets": ["0.0.0.0/0"]}), "rule.source.notNets"),
        (rule(source={"selector": "a ="}), "rule.source.selector"),
        (rule(source={"selector": "global()"}), "rule.source.selector"),
        (rule(source={"namespaceSelector": "global() && has(a)"}), "rule.source.namespaceSelector"),
        (rule(protocol="TCP", destination={"ports": ["2000:1000"]}), "rule.destination.ports[0]"),
        (rule(protocol="TCP", destination={"ports": ["bad name!"]}), "rule.destination.ports[0]"),
    ],
)
def test_invalid_or_unsupported_rules_name_the_field(bad: dict[str, Any], where: str) -> None:
    with pytest.raises(ScenarioError) as err:
        convert_rule(bad)
    assert str(err.value).startswith(where), str(err.value)


def test_rule_ids() -> None:
    # rule_convert_test.go "rule ID tests": 16 URL-safe characters, deterministic, depending on
    # the seed and on the rule's position in the chain.
    r1 = backend_rule(rule(protocol="TCP", destination={"ports": [80]}))
    r2 = backend_rule({"action": "Deny"})
    a, _ = proto_rules([r1, r2], "pol-in-default/p")
    b, _ = proto_rules([r1, r2], "pol-in-default/p")
    c, _ = proto_rules([r1, r2], "pol-in-default/q")
    d, _ = proto_rules([r2, r2], "pol-in-default/p")
    assert [r.rule_id for r in a] == [r.rule_id for r in b]
    assert all(len(r.rule_id) == 16 and r.rule_id.replace("-", "").replace("_", "").isalnum()
               for r in a)
    assert a[0].rule_id != c[0].rule_id
    assert a[1].rule_id != d[1].rule_id  # the hash chains in the previous rules

    # The chain, written out: sha224(sha224(seed) + marshal(rule without its ID)).
    msg = convert_rule({"action": "Deny"})[0]
    expected = hashlib.sha224(
        hashlib.sha224(b"seed").digest() + msg.SerializeToString()
    ).digest()
    fill_rule_ids([msg], "seed")
    assert msg.rule_id == base64.urlsafe_b64encode(expected).decode()[:16]


def _field_numbers(data: bytes) -> list[int]:
    """Top-level field numbers of a serialized message, in wire order."""
    out, i = [], 0
    while i < len(data):
        key, i = _varint(data, i)
        out.append(key >> 3)
        wire = key & 7
        if wire == 0:
            _, i = _varint(data, i)
        elif wire == 2:
            n, i = _varint(data, i)
            i += n
        else:  # pragma: no cover - Rule has no fixed-width fields
            raise AssertionError(wire)
    return out


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def test_rule_serialization_is_in_field_number_order() -> None:
    # Rule IDs hash the serialized rule; Go's marshaller writes fields in field-number order, so
    # ours must too (the .proto declares e.g. src_named_port_ip_set_ids=12 before dst_net=6).
    msg, _ = convert_rule(rule(
        protocol="ICMP", icmp={"type": 8, "code": 0}, notProtocol=6, ipVersion=4,
        source={"nets": ["10.0.0.0/8"], "selector": "a == 'b'", "notSelector": "has(c)",
                "notNets": ["10.1.0.0/16"], "serviceAccounts": {"names": ["x"]}},
        destination={"nets": ["11.0.0.0/8"], "notSelector": "has(d)"},
        metadata={"annotations": {"k": "v"}},
    ), seed="s")
    numbers = _field_numbers(msg.SerializeToString(deterministic=True))
    assert numbers == sorted(numbers)


# ---------------------------------------------------------------------------------------------
# Policies: v3 -> model (networkpolicyprocessor_test.go, globalnetworkpolicyprocessor_test.go).
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, "projectcalico.org/namespace == 'namespace1'"),
        ({"selector": "mylabel == 'selectme'"},
         "(mylabel == 'selectme') && projectcalico.org/namespace == 'namespace1'"),
        ({"selector": "mylabel == 'selectme'", "serviceAccountSelector": "role == 'development'"},
         "((mylabel == 'selectme') && projectcalico.org/namespace == 'namespace1') && "
         'pcsa.role == "development"'),
        ({"selector": "mylabel == 'selectme'", "serviceAccountSelector": "all()"},
         "((mylabel == 'selectme') && projectcalico.org/namespace == 'namespace1') && all()"),
    ],
)
def test_namespaced_policy_selector(spec: dict[str, Any], expected: str) -> None:
    mp = convert_policy(np("p", "namespace1", spec))
    assert mp is not None
    assert mp.selector == expected
    assert mp.tier == "default"
    assert mp.key == PolicyKey("p", "namespace1", "NetworkPolicy")


def test_kubernetes_network_policy_selector() -> None:
    # networkpolicyprocessor_test.go expectedKNP1.
    mp = convert_policy(np("test.policy", "default", {
        "tier": "default", "order": 1000, "selector": "projectcalico.org/orchestrator == 'k8s'",
        "types": ["Egress"],
        "egress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [80]}}],
    }, kind="KubernetesNetworkPolicy"))
    assert mp is not None
    assert mp.selector == (
        "(projectcalico.org/orchestrator == 'k8s') && projectcalico.org/namespace == 'default'"
    )
    assert mp.types == ("egress",)
    assert mp.order == 1000.0


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"selector": "mylabel == 'selectme'"}, "mylabel == 'selectme'"),
        ({"selector": "mylabel == 'selectme'", "serviceAccountSelector": "role == 'development'"},
         "(mylabel == 'selectme') && pcsa.role == \"development\""),
        ({"selector": "mylabel == 'selectme'", "serviceAccountSelector": "all()"},
         "(mylabel == 'selectme') && has(projectcalico.org/serviceaccount)"),
        ({"selector": "mylabel == 'selectme'", "namespaceSelector": "name == 'testing'"},
         "(mylabel == 'selectme') && pcns.name == \"testing\""),
        ({"selector": "mylabel == 'selectme'", "namespaceSelector": "all()"},
         "(mylabel == 'selectme') && has(projectcalico.org/namespace)"),
        ({"selector": "mylabel == 'selectme'", "namespaceSelector": "name == 'testing'",
          "serviceAccountSelector": "role == 'development'"},
         "((mylabel == 'selectme') && pcns.name == \"testing\") && pcsa.role == \"development\""),
        ({"namespaceSelector": "name == 'testing'", "serviceAccountSelector": "role == 'development'"},
         "(pcns.name == \"testing\") && pcsa.role == \"development\""),
    ],
)
def test_global_policy_selector(spec: dict[str, Any], expected: str) -> None:
    mp = convert_policy(gnp("p", spec))
    assert mp is not None and mp.selector == expected


def test_policy_types_default_from_rules() -> None:
    # api/pkg/defaults defaultPolicyTypesField.
    def types(spec: dict[str, Any]) -> tuple[str, ...]:
        mp = convert_policy(np("p", "x", spec))
        assert mp is not None
        return mp.types

    deny = [{"action": "Deny"}]
    assert types({}) == ("ingress",)
    assert types({"ingress": deny}) == ("ingress",)
    assert types({"egress": deny}) == ("egress",)
    assert types({"ingress": deny, "egress": deny}) == ("ingress", "egress")
    assert types({"types": ["Egress"], "ingress": deny}) == ("egress",)


def test_staged_delete_is_not_sent() -> None:
    assert convert_policy(np("p", "x", {"stagedAction": "Delete"}, kind="StagedNetworkPolicy")) is None
    mp = convert_policy(np("p", "x", {"stagedAction": "Set"}, kind="StagedNetworkPolicy"))
    assert mp is not None and mp.key.kind == "StagedNetworkPolicy"


@pytest.mark.parametrize(
    ("res", "where"),
    [
        (np("p", "x", {"doNotTrack": True}), ".spec.doNotTrack"),
        (np("p", "x", {"namespaceSelector": "a == 'b'"}), ".spec.namespaceSelector"),
        (np("p", "x", {"stagedAction": "Set"}), ".spec.stagedAction"),
        (np("p", "x", {"selector": "a =="}), ".spec.selector"),
        (np("p", "x", {"order": "first"}), ".spec.order"),
        (np("p", "x", {"types": ["Sideways"]}), ".spec.types[0]"),
        (np("p", "x", {"ingress": [{"action": "Allow", "http": {}}]}), ".spec.ingress[0].http"),
        (gnp("p", {"doNotTrack": True}), ".spec.applyOnForward"),
        (np("p", "", {}), ".spec"),
        (PolicyResource("AdminNetworkPolicy", "p", "", {}), ".spec"),
    ],
)
def test_invalid_policies_name_the_field(res: PolicyResource, where: str) -> None:
    with pytest.raises(ScenarioError) as err:
        convert_policy(res)
    assert where in str(err.value)


def test_policy_in_a_missing_tier_is_an_error() -> None:
    with pytest.raises(ScenarioError, match="tier 'nope' does not exist"):
        calc([ns("x")], [], [np("p", "x", {"tier": "nope"})])


# ---------------------------------------------------------------------------------------------
# Endpoints, labels, profiles.
# ---------------------------------------------------------------------------------------------


def test_veth_names_match_calico() -> None:
    # conversion_test.go: default/podA -> cali7f94ce7c295; prefix "eni" -> eni82111e10a96.
    assert veth_name("default", "podA") == "cali7f94ce7c295"
    assert veth_name("namespace", "podname", "eni") == "eni82111e10a96"
    c = calc([ns("default")], [pod("podA", "default", "10.65.0.1")],
             config={"InterfacePrefix": "eni,veth"})
    assert c.endpoints[("k8s", "default/podA", "eth0")].name == veth_name("default", "podA", "eni")


def test_workload_endpoint_fields() -> None:
    c = calc([ns("x")], [pod("a", "x", ("10.65.0.10", "fd00::a"), sa="web"),
                         pod("r", "x", "10.65.2.1", node="node-2")])
    assert list(c.endpoints) == [("k8s", "x/a", "eth0")]  # local endpoints only
    ep = c.endpoints[("k8s", "x/a", "eth0")]
    assert ep.state == "active"
    assert ep.name == "cali" + hashlib.sha1(b"x.a").hexdigest()[:11]
    assert list(ep.ipv4_nets) == ["10.65.0.10/32"]
    assert list(ep.ipv6_nets) == ["fd00::a/128"]
    assert list(ep.profile_ids) == ["kns.x", "ksa.x.web"]
    assert not ep.tiers and not ep.mac


def test_pod_without_ips_is_not_an_endpoint() -> None:
    c = calc([ns("x")], [Pod("a", "x", (), NODE)])
    assert c.endpoints == {}


def test_endpoint_labels_inherit_from_profiles() -> None:
    c = calc([ns("x", team="blue")],
             [Pod("a", "x", ("10.65.0.1",), NODE, {"app": "a", "pcns.team": "spoofed"}, "web")])
    assert c.endpoint_labels("x", "a") == {
        "app": "a",
        "projectcalico.org/namespace": "x",
        "projectcalico.org/orchestrator": "k8s",
        "projectcalico.org/serviceaccount": "web",
        "pcns.kubernetes.io/metadata.name": "x",
        "pcns.team": "blue",  # a pod cannot fake its namespace's labels
        "pcns.projectcalico.org/name": "x",
        "pcsa.projectcalico.org/name": "web",
    }


def test_profiles() -> None:
    c = calc([ns("x")], [pod("a", "x", "10.65.0.1"), pod("b", "gone", "10.65.0.2")])
    assert sorted(c.profiles) == ["kns.gone", "kns.x", "ksa.gone.default", "ksa.x.default"]
    allow = c.profiles["kns.x"]
    assert [r.action for r in allow.inbound_rules] == ["allow"]
    assert [r.action for r in allow.outbound_rules] == ["allow"]
    expected = pb.Rule(action="allow")
    fill_rule_ids([expected], "prof-in-kns.x")
    assert allow.inbound_rules[0].rule_id == expected.rule_id
    assert not c.profiles["ksa.x.default"].inbound_rules
    # A profile an endpoint lists but that does not exist becomes deny-all (DummyDropRules).
    assert [r.action for r in c.profiles["kns.gone"].inbound_rules] == ["deny"]
    assert [r.action for r in c.profiles["ksa.gone.default"].outbound_rules] == ["deny"]


def test_namespace_and_service_account_updates() -> None:
    c = calc([ns("x", team="blue"), ns("y")], [pod("a", "x", "10.65.0.1", sa="web")])
    assert c.namespaces["x"] == {"kubernetes.io/metadata.name": "x", "team": "blue",
                                 "projectcalico.org/name": "x"}
    assert sorted(c.service_accounts) == [("x", "default"), ("x", "web"), ("y", "default")]
    assert c.service_accounts[("x", "web")] == {"projectcalico.org/name": "web"}


# ---------------------------------------------------------------------------------------------
# Active policies, IP sets and ordering.
# ---------------------------------------------------------------------------------------------


def test_only_policies_selecting_local_endpoints_are_active() -> None:
    c = calc(
        [ns("x"), ns("y")],
        [pod("a", "x", "10.65.0.1", app="a"), pod("r", "y", "10.65.2.1", node="node-2", app="r")],
        [np("local", "x", {"selector": "app == 'a'", "ingress": [rule(source={"selector": "app == 'q'"})]}),
         np("remote", "y", {"selector": "app == 'r'", "ingress": [rule(source={"selector": "app == 'z'"})]}),
         np("wrong-ns", "y", {"selector": "app == 'a'"}),
         gnp("hinted", {"selector": "app == 'nobody'", "performanceHints": ["AssumeNeededOnEveryNode"],
                        "ingress": [rule(source={"selector": "app == 'h'"})]})],
    )
    assert sorted(k.name for k in c.policies) == ["hinted", "local"]
    # Only active policies' rules produce IP sets.
    active_sets = {
        selector_ipset_id("(projectcalico.org/namespace == 'x') && (app == 'q')"),
        selector_ipset_id("app == 'h'"),
    }
    assert set(c.ipsets) == active_sets
    p = c.policies[PolicyKey("local", "x", "NetworkPolicy")]
    assert p.namespace == "x" and p.tier == "default"
    assert p.original_selector == '(app == "a" && projectcalico.org/namespace == "x")'
    assert [r.action for r in p.inbound_rules] == ["allow"]
    assert c.policies[PolicyKey("hinted", "", "GlobalNetworkPolicy")].perf_hints == [
        "AssumeNeededOnEveryNode"
    ]


def test_ip_set_members_cover_the_whole_cluster() -> None:
    c = calc(
        [ns("x", team="blue"), ns("y")],
        [pod("a", "x", ("10.65.0.1", "fd00::1"), app="db", ports=(ContainerPort("sql", 5432),)),
         pod("b", "x", "10.65.2.1", node="node-2", app="db",
             ports=(ContainerPort("sql", 5433), ContainerPort("sql", 5434, "UDP"))),
         pod("c", "y", "10.65.3.1", node="node-3", app="db"),
         pod("w", "x", "10.65.0.9", app="web")],
        [np("p", "x", {"selector": "app == 'web'", "egress": [
            rule(destination={"selector": "app == 'db'"}),
            rule(protocol="TCP", destination={"selector": "app == 'db'", "ports": ["sql"]}),
            rule(destination={"namespaceSelector": "team == 'blue'", "ports": ["sql"]}),
        ]})],
    )
    same_ns = "(projectcalico.org/namespace == 'x') && (app == 'db')"
    assert c.ipsets[selector_ipset_id(same_ns)] == (
        pb.IPSetUpdate.NET, frozenset({"10.65.0.1/32", "fd00::1/128", "10.65.2.1/32"}))
    # states_for_test.go: named-port members are "<ip>,<proto>:<port>", one per address.
    assert c.ipsets[named_port_ipset_id(same_ns, "tcp", "sql")] == (
        pb.IPSetUpdate.IP_AND_PORT,
        frozenset({"10.65.0.1,tcp:5432", "fd00::1,tcp:5432", "10.65.2.1,tcp:5433"}))
    # Without a protocol the set takes every protocol, each member with its own.
    assert c.ipsets[named_port_ipset_id('pcns.team == "blue"', "any", "sql")][1] == frozenset(
        {"10.65.0.1,tcp:5432", "fd00::1,tcp:5432", "10.65.2.1,tcp:5433", "10.65.2.1,udp:5434"})


def test_tier_and_policy_ordering() -> None:
    tiers = [Tier("security", 100, "Deny"), Tier("platform", 100, "Pass"), Tier("last", None, "Deny")]
    deny = [{"action": "Deny"}]
    pols = [
        gnp("platform.a", {"tier": "platform", "selector": "all()", "ingress": deny}),
        gnp("last.a", {"tier": "last", "selector": "all()", "ingress": deny}),
        np("z-first", "x", {"order": 1, "ingress": deny}),
        np("b-noorder", "x", {"ingress": deny}),
        np("a-noorder", "x", {"ingress": deny}),
        gnp("y-same-order", {"order": 5, "selector": "all()", "ingress": deny, "egress": deny}),
        np("y-same-order", "x", {"order": 5, "egress": deny}),
        gnp("security.a", {"tier": "security", "order": 10, "selector": "all()", "ingress": deny}),
        gnp("untracked", {"doNotTrack": True, "applyOnForward": True, "selector": "all()",
                          "ingress": deny}),
    ]
    c = calc([ns("x")], [pod("a", "x", "10.65.0.1")], pols, tiers=tiers)
    ep = c.endpoints[("k8s", "x/a", "eth0")]
    # Tiers by order then name; a tier without order is last.
    assert [(t.name, t.default_action) for t in ep.tiers] == [
        ("platform", "Pass"), ("security", "Deny"), ("default", "Deny"), ("last", "Deny")]
    default = ep.tiers[2]
    # Policies by order (none = last), then "name/namespace/kind".
    assert [(p.name, p.namespace) for p in default.ingress_policies] == [
        ("z-first", "x"), ("y-same-order", ""), ("a-noorder", "x"), ("b-noorder", "x")]
    assert [(p.name, p.kind) for p in default.egress_policies] == [
        ("y-same-order", "GlobalNetworkPolicy"), ("y-same-order", "NetworkPolicy")]
    # An untracked policy is active but never listed on a workload endpoint.
    assert PolicyKey("untracked", "", "GlobalNetworkPolicy") in c.policies
    assert c.policies[PolicyKey("untracked", "", "GlobalNetworkPolicy")].untracked


def test_staged_policies_are_sent_and_listed() -> None:
    c = calc([ns("x")], [pod("a", "x", "10.65.0.1")],
             [np("s", "x", {"ingress": [{"action": "Deny"}]}, kind="StagedNetworkPolicy")])
    key = PolicyKey("s", "x", "StagedNetworkPolicy")
    assert key in c.policies
    ep = c.endpoints[("k8s", "x/a", "eth0")]
    assert [p.kind for p in ep.tiers[0].ingress_policies] == ["StagedNetworkPolicy"]


# ---------------------------------------------------------------------------------------------
# Hosts, pools, encapsulation, routes.
# ---------------------------------------------------------------------------------------------


def test_host_metadata_pools_and_encapsulation() -> None:
    c = calc(nodes=[Node("node-1", "192.168.0.11/24", labels={"zone": "a"}), Node("node-2", "192.168.0.12"),
                    Node("node-6", "fd00::12")],
             pools=[IPPoolSpec("10.65.0.0/16", nat_outgoing=True, vxlan_mode="CrossSubnet"),
                    IPPoolSpec("fd10::/64", nat_outgoing=False)])
    assert c.hosts["node-1"] == pb.HostMetadataUpdate(hostname="node-1", ipv4_addr="192.168.0.11/24",
                                                      labels={"zone": "a"})
    assert c.hosts["node-2"].ipv4_addr == "192.168.0.12/32"
    assert c.hosts["node-6"].ipv6_addr == "fd00::12/128"
    assert c.pools["10.65.0.0-16"] == pb.IPAMPool(cidr="10.65.0.0/16", masquerade=True,
                                                  vxlan_mode="cross-subnet",
                                                  allowed_uses=["Workload", "Tunnel"])
    assert c.pools["fd10::-64"].ipip_mode == "" and not c.pools["fd10::-64"].masquerade
    assert c.encapsulation == pb.Encapsulation(vxlan_enabled=True)
    assert calc(config={"ProgramClusterRoutes": "Enabled"}).encapsulation.no_encap_enabled


def test_no_routes_without_the_route_resolver() -> None:
    # Default pool (no encapsulation) and ProgramClusterRoutes=EnabledIPIPOnly: no resolver.
    c = calc(nodes=[Node("node-2", "192.168.0.12", "10.65.2.0/26")])
    assert not c.route_resolver_enabled and c.routes == {}


def test_routes_with_vxlan() -> None:
    c = calc(
        [ns("x")],
        [pod("a", "x", "10.65.0.10"), pod("b", "x", "10.65.2.7", node="node-2"),
         pod("borrowed", "x", "10.65.2.60", node="node-3")],
        nodes=[Node("node-1", "192.168.0.11/24", "10.65.0.0/26"),
               Node("node-2", "192.168.0.12/24", "10.65.2.0/26"),
               Node("node-3", "192.168.1.13/24", "10.65.3.0/26")],
        pools=[IPPoolSpec("10.65.0.0/16", vxlan_mode="CrossSubnet")],
    )
    assert c.route_resolver_enabled
    r = c.routes
    assert r["10.65.0.0/16"] == pb.RouteUpdate(dst="10.65.0.0/16", ip_pool_type=pb.VXLAN,
                                               nat_outgoing=True)
    assert r["10.65.2.0/26"] == pb.RouteUpdate(
        dst="10.65.2.0/26", types=pb.REMOTE_WORKLOAD, ip_pool_type=pb.VXLAN, dst_node_name="node-2",
        dst_node_ip="192.168.0.12", same_subnet=True, nat_outgoing=True)
    assert r["10.65.3.0/26"].same_subnet is False  # node-3 is not in our /24
    # Felix does not exclude its own node from the same-subnet test.
    assert r["10.65.0.10/32"] == pb.RouteUpdate(
        dst="10.65.0.10/32", types=pb.LOCAL_WORKLOAD, ip_pool_type=pb.VXLAN, dst_node_name="node-1",
        dst_node_ip="192.168.0.11", same_subnet=True, nat_outgoing=True, local_workload=True)
    # An address from node-2's block used on node-3: a borrowed /32 to node-3.
    assert r["10.65.2.60/32"].borrowed and r["10.65.2.60/32"].dst_node_name == "node-3"
    assert r["10.65.2.60/32"].types == pb.REMOTE_WORKLOAD
    assert "10.65.2.7/32" not in r  # remote affine addresses ride on the block route
    assert r["192.168.0.12/32"].types == pb.REMOTE_HOST
    assert r["192.168.0.11/32"].types == pb.LOCAL_HOST
    # calico-node's tunnel addresses: each block's first address no pod uses.
    assert {n: [str(a) for _k, a in v] for n, v in c.tunnel_addrs.items()} == {
        "node-1": ["10.65.0.0"], "node-2": ["10.65.2.0"], "node-3": ["10.65.3.0"]}
    assert r["10.65.3.0/32"] == pb.RouteUpdate(
        dst="10.65.3.0/32", types=pb.REMOTE_TUNNEL, ip_pool_type=pb.VXLAN, dst_node_name="node-3",
        dst_node_ip="192.168.1.13", nat_outgoing=True, tunnel_type=pb.TunnelType(vxlan=True))
    assert r["10.65.0.0/32"].types == pb.LOCAL_TUNNEL
    assert c.vteps["node-2"] == pb.VXLANTunnelEndpointUpdate(
        node="node-2", mac=vtep_mac("node-2"), ipv4_addr="10.65.2.0", parent_device_ip="192.168.0.12")
    assert set(c.vteps) == {"node-1", "node-2", "node-3"}


def test_vtep_mac_as_felix_derives_it() -> None:
    # felix/calc/states_for_test.go: the VTEP of node "remotehostname" has this MAC.
    assert vtep_mac("remotehostname") == "66:3e:ca:a4:db:65"


def test_tunnel_addresses_skip_used_addresses_and_follow_calico_node_order() -> None:
    c = calc(
        [ns("x")],
        [pod("a", "x", "10.65.2.0", node="node-2"), pod("b", "x", "10.65.2.1", node="node-2")],
        nodes=[Node("node-1", "192.168.0.11/24"),  # no pod CIDR: its block is unknown
               Node("node-2", "192.168.0.12/24", "10.65.2.0/26"),
               Node("node-3", "192.168.0.13/24", "10.66.3.0/26")],
        pools=[IPPoolSpec("10.65.0.0/16", ipip_mode="Always"),
               IPPoolSpec("10.66.0.0/16", vxlan_mode="Always")],
    )
    assert {n: [str(a) for _k, a in v] for n, v in c.tunnel_addrs.items()} == {
        "node-2": ["10.65.2.2"], "node-3": ["10.66.3.0"]}
    # IPIP tunnel address: a REMOTE_TUNNEL route with tunnel type ipip, no block type (it
    # lies inside node-2's block but is not the block).
    rt = c.routes["10.65.2.2/32"]
    assert rt.types == pb.REMOTE_TUNNEL and rt.tunnel_type == pb.TunnelType(ipip=True)
    assert rt.ip_pool_type == pb.IPIP and rt.dst_node_ip == "192.168.0.12"
    # Only VXLAN tunnel addresses make VTEPs.
    assert set(c.vteps) == {"node-3"}


def test_vteps_ipv6_and_none_without_vxlan() -> None:
    nodes = [Node("node-2", "fd00::12/64", "fd10::200/122")]
    c = calc([ns("x")], [], nodes=nodes, pools=[IPPoolSpec("fd10::/64", vxlan_mode="Always")])
    assert c.encapsulation.vxlan_enabled_v6
    assert c.vteps["node-2"] == pb.VXLANTunnelEndpointUpdate(
        node="node-2", mac_v6=vtep_mac("node-2-v6"), ipv6_addr="fd10::200",
        parent_device_ipv6="fd00::12")
    assert calc([ns("x")], [], nodes=nodes, pools=[IPPoolSpec("fd10::/64")]).vteps == {}


def test_diff_changed_vtep_is_removed_then_sent() -> None:
    # A pod now holds node-2's old tunnel address, so node-2 gets the next one.
    old = variant()
    new = variant(pods=[*variant_pods(), pod("z", "y", "10.65.2.0", node="node-2")])
    msgs = diff_and_check(old, new)
    kinds = payloads(msgs)
    assert kinds.index("vtep_remove") < kinds.index("vtep_update")
    assert [m.vtep_update.ipv4_addr for m in msgs if m.HasField("vtep_update")] == ["10.65.2.1"]


def test_routes_from_workload_ips() -> None:
    c = calc([ns("x")], [pod("b", "x", "10.65.2.7", node="node-2")],
             nodes=[Node("node-2", "192.168.0.12", "10.65.2.0/26")],
             config={"RouteSource": "WorkloadIPs", "BPFEnabled": "true"})
    assert set(c.routes) == {"10.65.0.0/16", "10.65.2.7/32", "192.168.0.12/32"}
    assert c.routes["10.65.2.7/32"].types == pb.REMOTE_WORKLOAD
    assert c.routes["10.65.2.7/32"].ip_pool_type == pb.NO_ENCAP


# ---------------------------------------------------------------------------------------------
# Streams.
# ---------------------------------------------------------------------------------------------

ORDER = [
    "config_update", "ipset_update", "ipset_delta_update", "active_policy_update",
    "active_profile_update", "workload_endpoint_update", "workload_endpoint_remove",
    "active_profile_remove", "active_policy_remove", "ipset_remove", "service_account_remove",
    "service_account_update", "namespace_remove", "namespace_update", "route_remove",
    "vtep_remove", "vtep_update", "route_update", "host_metadata_remove", "host_metadata_update",
    "ipam_pool_remove", "ipam_pool_update", "encapsulation", "in_sync",
]


def assert_flush_order(msgs: list[pb.ToDataplane]) -> None:
    ranks = [ORDER.index(p) for p in payloads(msgs)]
    assert ranks == sorted(ranks), payloads(msgs)


def demo() -> FelixCalc:
    return calc(
        [ns("x", team="blue"), ns("y")],
        [pod("a", "x", "10.65.0.10", app="web", ports=(ContainerPort("http", 80),)),
         pod("b", "x", ("10.65.0.11", "fd00::b"), app="db"),
         pod("c", "y", "10.65.2.5", node="node-2", app="client")],
        [np("allow-http", "x", {"selector": "app == 'web'", "ingress": [
            rule(protocol="TCP", source={"namespaceSelector": "all()"},
                 destination={"ports": ["http"]})]}),
         gnp("security.db", {"tier": "security", "order": 10, "selector": "app == 'db'",
                             "types": ["Ingress"],
                             "ingress": [{"action": "Pass",
                                          "source": {"namespaceSelector": "team == 'blue'"}}]})],
        nodes=[Node("node-1", "192.168.0.11/24", "10.65.0.0/26"),
               Node("node-2", "192.168.0.12/24", "10.65.2.0/26")],
        pools=[IPPoolSpec("10.65.0.0/16", vxlan_mode="Always")],
        tiers=[Tier("security", 100, "Deny")],
        config={"DefaultEndpointToHostAction": "Accept"},
    )


def test_startup_stream_order_and_numbering() -> None:
    c = demo()
    msgs = c.startup_stream()
    assert [m.sequence_number for m in msgs] == list(range(len(msgs)))
    assert msgs[0].WhichOneof("payload") == "config_update"
    assert dict(msgs[0].config_update.config) == {"FelixHostname": NODE,
                                                  "DefaultEndpointToHostAction": "Accept"}
    raw = {v.source: dict(v.config) for v in msgs[0].config_update.source_to_raw_config.values()}
    assert raw == {"environment variable": {"FelixHostname": NODE},
                   "datastore (global)": {"DefaultEndpointToHostAction": "Accept"}}
    assert msgs[-1].WhichOneof("payload") == "in_sync"
    assert_flush_order(msgs)
    kinds = payloads(msgs)
    for kind in ("ipset_update", "active_policy_update", "active_profile_update",
                 "workload_endpoint_update", "namespace_update", "service_account_update",
                 "route_update", "host_metadata_update", "ipam_pool_update", "encapsulation"):
        assert kind in kinds
    assert kinds.count("workload_endpoint_update") == 2
    assert kinds.count("host_metadata_update") == 2


def test_startup_stream_is_consistent_in_the_driver_model() -> None:
    c = demo()
    state = started(c)
    assert set(state.ipsets) == set(c.ipsets)
    for set_id, (set_type, members) in c.ipsets.items():
        assert (state.ipsets[set_id].type, state.ipsets[set_id].members) == (set_type, set(members))
    assert {(p.name, p.namespace, p.kind) for p in state.policies} == {
        (k.name, k.namespace, k.kind) for k in c.policies}
    assert set(state.profiles) == set(c.profiles)
    assert len(state.workload_endpoints) == 2
    assert state.raw_config["FelixHostname"] == NODE
    assert state.encapsulation.vxlan_enabled


def diff_and_check(old: FelixCalc, new: FelixCalc) -> list[pb.ToDataplane]:
    """diff_stream, checked: ordered, numbered, and old + diff == a fresh start of new."""
    state = started(old)
    first = len(old.startup_stream())
    msgs = diff_stream(old, new, first)
    assert [m.sequence_number for m in msgs] == list(range(first, first + len(msgs)))
    assert_flush_order(msgs)
    feed(state, msgs)
    assert_consistent(state)
    assert snapshot(state) == snapshot(started(new))
    return msgs


def test_diff_of_identical_states_is_empty() -> None:
    assert diff_stream(demo(), demo(), 10) == []


def test_diff_remote_pod_gives_ip_set_delta_only() -> None:
    old = demo()
    base = [ns("x", team="blue"), ns("y")]
    pods = [pod("a", "x", "10.65.0.10", app="web", ports=(ContainerPort("http", 80),)),
            pod("b", "x", ("10.65.0.11", "fd00::b"), app="db"),
            pod("c", "y", "10.65.2.5", node="node-2", app="client")]
    new = calc(base, [*pods, pod("d", "x", "10.65.2.9", node="node-2", app="web",
                                 ports=(ContainerPort("http", 8080),))],
               old_policies(), nodes=old_nodes(), pools=[IPPoolSpec("10.65.0.0/16", vxlan_mode="Always")],
               tiers=[Tier("security", 100, "Deny")], config={"DefaultEndpointToHostAction": "Accept"})
    msgs = diff_and_check(old, new)
    # The new pod joins three sets: namespaceSelector all(), the named port, team == 'blue'.
    assert payloads(msgs) == ["ipset_delta_update"] * 3
    delta = {m.ipset_delta_update.id: m.ipset_delta_update for m in msgs}
    assert list(delta[selector_ipset_id("has(projectcalico.org/namespace)")].added_members) == [
        "10.65.2.9/32"]
    np_id = named_port_ipset_id(None, "tcp", "http")
    assert list(delta[np_id].added_members) == ["10.65.2.9,tcp:8080"]
    assert not delta[np_id].removed_members


def old_policies() -> list[PolicyResource]:
    return [
        np("allow-http", "x", {"selector": "app == 'web'", "ingress": [
            rule(protocol="TCP", source={"namespaceSelector": "all()"},
                 destination={"ports": ["http"]})]}),
        gnp("security.db", {"tier": "security", "order": 10, "selector": "app == 'db'",
                            "types": ["Ingress"],
                            "ingress": [{"action": "Pass",
                                         "source": {"namespaceSelector": "team == 'blue'"}}]}),
    ]


def old_nodes() -> list[Node]:
    return [Node("node-1", "192.168.0.11/24", "10.65.0.0/26"),
            Node("node-2", "192.168.0.12/24", "10.65.2.0/26")]


def variant_pods() -> list[Pod]:
    return [pod("a", "x", "10.65.0.10", app="web", ports=(ContainerPort("http", 80),)),
            pod("b", "x", ("10.65.0.11", "fd00::b"), app="db"),
            pod("c", "y", "10.65.2.5", node="node-2", app="client")]


def variant(**changes: Any) -> FelixCalc:
    args: dict[str, Any] = {
        "namespaces": [ns("x", team="blue"), ns("y")],
        "pods": variant_pods(),
        "policies": old_policies(),
        "nodes": old_nodes(),
        "pools": [IPPoolSpec("10.65.0.0/16", vxlan_mode="Always")],
        "tiers": [Tier("security", 100, "Deny")],
        "config": {"DefaultEndpointToHostAction": "Accept"},
    }
    args.update(changes)
    return calc(args.pop("namespaces"), args.pop("pods"), args.pop("policies"), **args)


def test_variant_is_demo() -> None:
    assert diff_stream(demo(), variant(), 0) == []


def test_diff_new_policy() -> None:
    extra = np("deny-egress", "x", {"selector": "app == 'db'", "egress": [
        {"action": "Deny", "destination": {"selector": "app == 'client'"}}]})
    msgs = diff_and_check(variant(), variant(policies=[*old_policies(), extra]))
    assert payloads(msgs) == ["ipset_update", "active_policy_update", "workload_endpoint_update"]
    assert msgs[0].ipset_update.id == selector_ipset_id(
        "(projectcalico.org/namespace == 'x') && (app == 'client')")
    assert list(msgs[0].ipset_update.members) == []  # client is in namespace y
    assert msgs[2].workload_endpoint_update.id.workload_id == "x/b"


def test_diff_policy_removed() -> None:
    msgs = diff_and_check(variant(), variant(policies=old_policies()[1:]))
    # allow-http used two sets: namespaceSelector all() and the named port "http".
    assert payloads(msgs) == ["workload_endpoint_update", "active_policy_remove", "ipset_remove",
                              "ipset_remove"]
    assert msgs[1].active_policy_remove.id.name == "allow-http"


def test_diff_policy_order_change_resends_policy_and_endpoint() -> None:
    pols = old_policies()
    pols[1] = gnp("security.db", {**pols[1].spec, "order": 20})
    msgs = diff_and_check(variant(), variant(policies=pols))
    assert payloads(msgs) == ["active_policy_update", "workload_endpoint_update"]


def test_diff_namespace_label_change() -> None:
    msgs = diff_and_check(variant(), variant(namespaces=[ns("x"), ns("y", team="blue")]))
    assert payloads(msgs) == ["ipset_delta_update", "namespace_update", "namespace_update"]
    d = msgs[0].ipset_delta_update
    assert set(d.removed_members) == {"10.65.0.10/32", "10.65.0.11/32", "fd00::b/128"}
    assert list(d.added_members) == ["10.65.2.5/32"]


def test_diff_local_pod_removed_and_added() -> None:
    pods = [pod("b", "x", ("10.65.0.11", "fd00::b"), app="db"),
            pod("c", "y", "10.65.2.5", node="node-2", app="client"),
            pod("e", "y", "10.65.0.20", sa="robot")]
    msgs = diff_and_check(variant(), variant(pods=pods))
    kinds = payloads(msgs)
    assert kinds.count("workload_endpoint_remove") == 1
    assert "active_policy_remove" in kinds  # allow-http selected only pod a
    assert "service_account_update" in kinds  # y/robot is new
    assert any(m.active_profile_update.id.name == "ksa.y.robot" for m in msgs
               if m.WhichOneof("payload") == "active_profile_update")


def test_diff_tier_change_resends_endpoints_with_policies() -> None:
    msgs = diff_and_check(variant(), variant(tiers=[Tier("security", 100, "Pass")]))
    assert payloads(msgs) == ["workload_endpoint_update", "workload_endpoint_update"]


def test_diff_nodes_and_pools() -> None:
    msgs = diff_and_check(
        variant(),
        variant(nodes=[Node("node-1", "192.168.0.11/24", "10.65.0.0/26"),
                       Node("node-3", "192.168.0.13/24", "10.65.3.0/26")],
                pools=[IPPoolSpec("10.65.0.0/16", vxlan_mode="Always", nat_outgoing=False)]),
    )
    kinds = payloads(msgs)
    assert "route_remove" in kinds and "host_metadata_remove" in kinds
    assert kinds[-2:] == ["ipam_pool_update", "encapsulation"]


def test_diff_config_change() -> None:
    msgs = diff_and_check(variant(), variant(config={"DefaultEndpointToHostAction": "Drop"}))
    assert payloads(msgs) == ["config_update"]


def test_random_changes_replay_to_the_same_state() -> None:
    """Random clusters and random edits: old start + diff is always a fresh start of new."""
    rng = random.Random(4242)
    apps = ["web", "db", "client", "cache"]
    selectors = ["app == 'web'", "app == 'db'", "all()", "app in {'db', 'cache'}", "!has(app)"]

    def random_cluster() -> FelixCalc:
        namespaces = [ns(n, team=rng.choice(["blue", "red"])) for n in ("x", "y", "z")
                      if rng.random() < 0.9]
        pods = []
        for i in range(rng.randint(0, 8)):
            ports = (ContainerPort("http", rng.choice([80, 8080]), rng.choice(["TCP", "UDP"])),)
            ip = f"10.65.{rng.choice([0, 2])}.{i + 1}"
            pods.append(pod(f"p{i}", rng.choice(["x", "y", "z"]), ip,
                            node=rng.choice([NODE, "node-2"]), sa=rng.choice(["default", "bot"]),
                            ports=ports if rng.random() < 0.5 else (), app=rng.choice(apps)))
        policies: list[PolicyResource] = []
        for i in range(rng.randint(0, 4)):
            r = rule(protocol=rng.choice([None, "TCP", "UDP"]),
                     source={"selector": rng.choice(selectors)},
                     destination={"ports": ["http"]} if rng.random() < 0.5 else {})
            if r["protocol"] is None:
                del r["protocol"]
            spec = {"selector": rng.choice(selectors), "order": rng.choice([None, 1, 2]),
                    "ingress": [r], "egress": [rule(destination={"namespaceSelector": "team == 'red'"})]}
            if rng.random() < 0.5:
                policies.append(np(f"np{i}", rng.choice(["x", "y"]), spec))
            else:
                policies.append(gnp(f"gnp{i}", {**spec, "tier": rng.choice(["default", "security"])}))
        return calc(namespaces, pods, policies,
                    nodes=[Node(NODE, "192.168.0.11/24", "10.65.0.0/26"),
                           Node("node-2", "192.168.0.12/24", "10.65.2.0/26")][: rng.randint(0, 2)],
                    pools=[IPPoolSpec("10.65.0.0/16", vxlan_mode=rng.choice(["Never", "Always"]))],
                    tiers=[Tier("security", rng.choice([10, 2_000_000]), rng.choice(["Deny", "Pass"]))])

    clusters = [random_cluster() for _ in range(12)]
    for old, new in itertools.pairwise(clusters):
        diff_and_check(old, new)
        diff_and_check(new, old)


def test_svc_unique_id_matches_felix() -> None:
    # rule_scanner_test.go "dest service" / "src service": the same hash makes every set ID.
    assert make_unique_id("svc", "default/svc") == "svc:Jhwii46PCMT5NlhWsUqZmv7al8TeHFbNQMhoVg"
    assert make_unique_id("svcnoport", "default/svc") == "svcnoport:T03S_6hogdrGKrNFBcbKTFsH_uKwDHEo8JddOg"


def test_floating_ips_become_the_endpoints_nat_entries() -> None:
    # libcalico-go's pod conversion: each floating IP maps to the pod's address of its family;
    # one of a family the pod has no address of is dropped.
    fips = ("203.0.113.10", "2001:db8::10", "203.0.113.11")
    c = calc([ns("x")], [Pod("a", "x", ("10.65.0.10",), NODE, {}, "default", (), fips)])
    ep = c.endpoints[("k8s", "x/a", "eth0")]
    assert list(ep.ipv4_nat) == [pb.NatInfo(ext_ip="203.0.113.10", int_ip="10.65.0.10"),
                                 pb.NatInfo(ext_ip="203.0.113.11", int_ip="10.65.0.10")]
    assert list(ep.ipv6_nat) == []
