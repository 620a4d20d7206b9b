"""Tests for calico_vpp_driver.policy.verdict: the policy oracle.

One named table case per clause of docs/policy-semantics.md (plus the places where the
oracle follows Felix's code), then hypothesis properties over random models.
Models are built directly from the model value objects with the small builders below.
"""

from __future__ import annotations

import copy
import ipaddress
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from calico_vpp_driver.config import Config, ProtoPort
from calico_vpp_driver.felix import felixbackend_pb2 as pb
from calico_vpp_driver.felix.decode import decode_rule
from calico_vpp_driver.model.state import DesiredState
from calico_vpp_driver.model.types import (
    IPSET_IP,
    IPSET_IP_AND_PORT,
    IPSET_NET,
    HostEndpoint,
    HostEndpointID,
    IcmpMatch,
    IPNetwork,
    Policy,
    PolicyID,
    PortRange,
    Profile,
    Rule,
    TierInfo,
    WorkloadEndpoint,
    WorkloadEndpointID,
)
from calico_vpp_driver.policy import (
    LOCAL_HOST,
    LocalHost,
    Packet,
    PolicyError,
    Verdict,
    connection_verdict,
    endpoint_problems,
    endpoint_verdict,
    host_endpoint_verdict,
    rule_exists_for_family,
    rule_matches,
    workload_to_host_verdict,
)

# ---------------------------------------------------------------------------------------------
# Builders.
# ---------------------------------------------------------------------------------------------

CFG = Config(felix_hostname="node1")
WEP_A = WorkloadEndpointID("k8s", "ns1/pod-a", "eth0")
WEP_B = WorkloadEndpointID("k8s", "ns1/pod-b", "eth0")
HEP = HostEndpointID("node1-eth0")
HEP2 = HostEndpointID("node1-eth1")

A4, B4, C4 = "10.0.0.1", "10.0.0.2", "10.0.0.3"
A6, B6 = "fd00::1", "fd00::2"

ALLOW_ALL = Rule(action="allow")
DENY_ALL = Rule(action="deny")


def nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


def ports(*spec: int | tuple[int, int]) -> tuple[PortRange, ...]:
    return tuple(PortRange(s, s) if isinstance(s, int) else PortRange(*s) for s in spec)


def pid(name: str, kind: str = "GlobalNetworkPolicy", namespace: str = "") -> PolicyID:
    return PolicyID(name, namespace, kind)


def staged(name: str) -> PolicyID:
    return PolicyID(name, "", "StagedGlobalNetworkPolicy")


def tier(
    name: str,
    ingress: Sequence[PolicyID] = (),
    egress: Sequence[PolicyID] = (),
    default: str = "Deny",
) -> TierInfo:
    return TierInfo(name, tuple(ingress), tuple(egress), default)


@dataclass
class Model:
    """Collects objects, then builds a DesiredState through its public update methods."""

    policies: dict[PolicyID, Policy] = field(default_factory=dict)
    profiles: dict[str, Profile] = field(default_factory=dict)
    ipsets: dict[str, tuple[int, list[str]]] = field(default_factory=dict)
    weps: list[WorkloadEndpoint] = field(default_factory=list)
    heps: list[HostEndpoint] = field(default_factory=list)

    def policy(
        self,
        policy_id: PolicyID | str,
        inbound: Iterable[Rule] = (),
        outbound: Iterable[Rule] = (),
        error: str | None = None,
    ) -> PolicyID:
        p = pid(policy_id) if isinstance(policy_id, str) else policy_id
        self.policies[p] = Policy(p, tuple(inbound), tuple(outbound), error=error)
        return p

    def profile(
        self, name: str, inbound: Iterable[Rule] = (), outbound: Iterable[Rule] = (), error: str | None = None
    ) -> str:
        self.profiles[name] = Profile(name, tuple(inbound), tuple(outbound), error=error)
        return name

    def ipset(self, set_id: str, set_type: int, members: Iterable[str]) -> str:
        self.ipsets[set_id] = (set_type, list(members))
        return set_id

    def wep(
        self,
        key: WorkloadEndpointID = WEP_A,
        tiers: Sequence[TierInfo] = (),
        profiles: Sequence[str] = (),
        state: str = "active",
        error: str | None = None,
    ) -> WorkloadEndpointID:
        self.weps.append(
            WorkloadEndpoint(
                key,
                name="cali" + key.workload_id.replace("/", "")[:11],
                state=state,
                profile_ids=tuple(profiles),
                tiers=tuple(tiers),
                error=error,
            )
        )
        return key

    def hep(
        self,
        key: HostEndpointID = HEP,
        tiers: Sequence[TierInfo] = (),
        profiles: Sequence[str] = (),
        untracked: Sequence[TierInfo] = (),
        pre_dnat: Sequence[TierInfo] = (),
        forward: Sequence[TierInfo] = (),
        error: str | None = None,
    ) -> HostEndpointID:
        self.heps.append(
            HostEndpoint(
                key,
                name="eth0",
                profile_ids=tuple(profiles),
                tiers=tuple(tiers),
                untracked_tiers=tuple(untracked),
                pre_dnat_tiers=tuple(pre_dnat),
                forward_tiers=tuple(forward),
                error=error,
            )
        )
        return key

    def build(self) -> DesiredState:
        state = DesiredState()
        for set_id, (set_type, members) in self.ipsets.items():
            state.update_ipset(set_id, set_type, members)
        for p in self.policies.values():
            state.update_policy(p)
        for prof in self.profiles.values():
            state.update_profile(prof)
        for w in self.weps:
            state.update_workload_endpoint(w)
        for h in self.heps:
            state.update_host_endpoint(h)
        return state


def one_policy(
    inbound: Iterable[Rule] = (),
    outbound: Iterable[Rule] = (),
    ipsets: dict[str, tuple[int, list[str]]] | None = None,
    default: str = "Deny",
) -> DesiredState:
    """WEP_A with one tier holding one policy (listed for both directions)."""
    m = Model(ipsets=dict(ipsets or {}))
    p = m.policy("pol", inbound, outbound)
    m.wep(tiers=[tier("default", [p], [p], default)])
    return m.build()


def ingress(state: DesiredState, packet: Packet, key: WorkloadEndpointID = WEP_A) -> Verdict:
    return endpoint_verdict(state, CFG, key, "ingress", packet)


def egress(
    state: DesiredState, packet: Packet, key: WorkloadEndpointID = WEP_A, cfg: Config = CFG
) -> Verdict:
    return endpoint_verdict(state, cfg, key, "egress", packet)


def matches(rule: Rule, packet: Packet, ipsets: dict[str, tuple[int, list[str]]] | None = None) -> bool:
    """Whether the rule (made an allow rule) matches, through the whole endpoint verdict."""
    state = one_policy([rule._replace(action="allow")], ipsets=ipsets)
    verdict = ingress(state, packet)
    assert verdict.decided_by in ("rule", "end-of-tier"), verdict
    # The direct rule API must agree with the endpoint-level answer.
    assert rule_matches(state, rule, packet) == verdict.allow
    return verdict.allow


TCP80 = Packet.tcp(A4, B4, 80)
TCP80_V6 = Packet.tcp(A6, B6, 80)


# ---------------------------------------------------------------------------------------------
# Per endpoint and direction.
# ---------------------------------------------------------------------------------------------


def test_unknown_endpoint_is_denied() -> None:
    v = ingress(DesiredState(), TCP80)
    assert not v.allow and v.decided_by == "unknown-endpoint"


def test_endpoint_not_active_is_denied_even_with_allow_all() -> None:
    m = Model()
    p = m.policy("allow-all", [ALLOW_ALL], [ALLOW_ALL])
    m.wep(
        tiers=[tier("default", [p], [p])],
        profiles=[m.profile("kns.ns1", [ALLOW_ALL], [ALLOW_ALL])],
        state="down",
    )
    state = m.build()
    for v in (ingress(state, TCP80), egress(state, TCP80)):
        assert not v.allow and v.decided_by == "inactive" and "'down'" in v.reason


def test_active_endpoint_allowed_by_allow_rule_names_the_rule() -> None:
    m = Model()
    p = m.policy(pid("knp", "KubernetesNetworkPolicy", "ns1"), [Rule(action="allow", rule_id="r-1")])
    m.wep(tiers=[tier("default", [p])])
    v = ingress(m.build(), TCP80)
    assert v.allow and v.decided_by == "rule"
    assert (v.tier, v.policy, v.rule_index, v.rule_id) == ("default", p, 0, "r-1")
    assert "default" in v.reason and "knp" in v.reason and "rule 0" in v.reason and "r-1" in v.reason


def test_tiers_are_evaluated_in_order_first_tier_decides() -> None:
    m = Model()
    deny = m.policy("deny", [DENY_ALL])
    allow = m.policy("allow", [ALLOW_ALL])
    m.wep(tiers=[tier("security", [deny]), tier("default", [allow])])
    v = ingress(m.build(), TCP80)
    assert not v.allow and v.tier == "security" and v.policy == deny

    m2 = Model()
    deny = m2.policy("deny", [DENY_ALL])
    allow = m2.policy("allow", [ALLOW_ALL])
    m2.wep(tiers=[tier("default", [allow]), tier("security", [deny])])
    assert ingress(m2.build(), TCP80).allow


def test_policies_within_a_tier_are_evaluated_in_order() -> None:
    m = Model()
    first = m.policy("first", [Rule(action="deny", protocol=6)])
    second = m.policy("second", [ALLOW_ALL])
    m.wep(tiers=[tier("default", [first, second])])
    state = m.build()
    assert not ingress(state, TCP80).allow
    assert ingress(state, Packet.udp(A4, B4, 53)).allow  # first policy no match -> next policy


def test_empty_policy_list_for_direction_skips_the_tier() -> None:
    m = Model()
    egress_only = m.policy("egress-only", outbound=[DENY_ALL])
    m.wep(tiers=[tier("t1", egress=[egress_only])], profiles=[m.profile("kns.ns1", [ALLOW_ALL])])
    state = m.build()
    v = ingress(state, TCP80)
    assert v.allow and v.decided_by == "profile-rule"  # no end-of-tier drop for an empty list
    assert not egress(state, TCP80).allow


def test_staged_policy_is_never_enforced() -> None:
    m = Model()
    st_allow = m.policy(staged("try-allow"), [ALLOW_ALL])
    deny = m.policy("deny", [DENY_ALL])
    m.wep(tiers=[tier("default", [st_allow, deny])])
    v = ingress(m.build(), TCP80)
    assert not v.allow and v.policy == deny


def test_staged_deny_policy_does_not_deny() -> None:
    m = Model()
    st_deny = m.policy(staged("try-deny"), [DENY_ALL])
    allow = m.policy("allow", [ALLOW_ALL])
    m.wep(tiers=[tier("default", [st_deny, allow])])
    assert ingress(m.build(), TCP80).allow


def test_action_deny() -> None:
    v = ingress(one_policy([DENY_ALL, ALLOW_ALL]), TCP80)
    assert not v.allow and v.decided_by == "rule" and v.rule_index == 0


def test_model_normalizes_empty_action_to_allow_and_next_tier_to_pass() -> None:
    assert decode_rule(pb.Rule(action="")).action == "allow"
    assert decode_rule(pb.Rule(action="next-tier")).action == "pass"
    state = one_policy([decode_rule(pb.Rule(action=""))])
    assert ingress(state, TCP80).allow


def test_log_rule_records_and_continues_with_next_rule() -> None:
    v = ingress(one_policy([Rule(action="log"), Rule(action="deny", protocol=6)]), TCP80)
    assert not v.allow and v.rule_index == 1
    assert len(v.logged) == 1 and "rule 0" in v.logged[0]


def test_log_only_policy_ends_in_end_of_tier_drop() -> None:
    v = ingress(one_policy([Rule(action="log")]), TCP80)
    assert not v.allow and v.decided_by == "end-of-tier" and len(v.logged) == 1


def test_pass_leaves_the_tier_skipping_its_remaining_policies() -> None:
    m = Model()
    passer = m.policy("passer", [Rule(action="pass")])
    denier = m.policy("denier", [DENY_ALL])
    allower = m.policy("allower", [ALLOW_ALL])
    m.wep(tiers=[tier("t1", [passer, denier]), tier("t2", [allower])])
    v = ingress(m.build(), TCP80)
    assert v.allow and v.tier == "t2" and v.policy == allower


def test_pass_skips_remaining_rules_of_the_policy_too() -> None:
    m = Model()
    passer = m.policy("passer", [Rule(action="pass"), DENY_ALL])
    m.wep(tiers=[tier("t1", [passer])], profiles=[m.profile("p", [ALLOW_ALL])])
    assert ingress(m.build(), TCP80).allow


def test_pass_in_last_tier_goes_to_profiles() -> None:
    m = Model()
    passer = m.policy("passer", [Rule(action="pass")])
    m.wep(tiers=[tier("t1", [passer])], profiles=[m.profile("kns.ns1", [DENY_ALL])])
    v = ingress(m.build(), TCP80)
    assert not v.allow and v.decided_by == "profile-rule" and v.profile == "kns.ns1"


def test_end_of_tier_drop_when_no_rule_matches() -> None:
    m = Model()
    p = m.policy("only-udp", [Rule(action="allow", protocol=17)])
    m.wep(tiers=[tier("default", [p])], profiles=[m.profile("kns.ns1", [ALLOW_ALL])])
    v = ingress(m.build(), TCP80)
    assert not v.allow and v.decided_by == "end-of-tier" and v.tier == "default"


def test_tier_default_action_pass_does_not_drop_at_end_of_tier() -> None:
    m = Model()
    p = m.policy("only-udp", [Rule(action="allow", protocol=17)])
    m.wep(tiers=[tier("default", [p], default="Pass")], profiles=[m.profile("kns.ns1", [ALLOW_ALL])])
    v = ingress(m.build(), TCP80)
    assert v.allow and v.decided_by == "profile-rule"


def test_tier_with_only_staged_policies_does_not_drop_at_end_of_tier() -> None:
    m = Model()
    s1 = m.policy(staged("s1"), [Rule(action="allow", protocol=17)])
    s2 = m.policy(staged("s2"), [])
    m.wep(tiers=[tier("default", [s1, s2])], profiles=[m.profile("kns.ns1", [ALLOW_ALL])])
    v = ingress(m.build(), TCP80)
    assert v.allow and v.decided_by == "profile-rule"


def test_no_tiers_profiles_decide() -> None:
    m = Model()
    m.wep(profiles=[m.profile("kns.ns1", [ALLOW_ALL], [DENY_ALL])])
    state = m.build()
    assert ingress(state, TCP80).allow
    assert not egress(state, TCP80).allow


def test_profiles_in_order_first_match_decides() -> None:
    m = Model()
    m.wep(profiles=[m.profile("p1", [Rule(action="deny", protocol=6)]), m.profile("p2", [ALLOW_ALL])])
    state = m.build()
    assert not ingress(state, TCP80).allow
    assert ingress(state, Packet.udp(A4, B4, 53)).allow  # no match in p1 -> next profile


def test_profile_pass_continues_with_next_profile() -> None:
    m = Model()
    m.wep(profiles=[m.profile("p1", [Rule(action="pass"), DENY_ALL]), m.profile("p2", [ALLOW_ALL])])
    v = ingress(m.build(), TCP80)
    assert v.allow and v.profile == "p2"


def test_profile_log_continues_with_next_rule() -> None:
    m = Model()
    m.wep(profiles=[m.profile("p1", [Rule(action="log"), ALLOW_ALL])])
    v = ingress(m.build(), TCP80)
    assert v.allow and v.rule_index == 1 and len(v.logged) == 1


def test_default_deny_when_no_profile_allows() -> None:
    m = Model()
    m.wep(
        profiles=[
            m.profile("p1", [Rule(action="pass")]),
            m.profile("p2", [Rule(action="allow", protocol=17)]),
        ]
    )
    v = ingress(m.build(), TCP80)
    assert not v.allow and v.decided_by == "no-profile"


def test_default_deny_with_no_tiers_and_no_profiles() -> None:
    m = Model()
    m.wep()
    v = ingress(m.build(), TCP80)
    assert not v.allow and v.decided_by == "no-profile"


def test_kubernetes_network_policy_and_namespace_profile() -> None:
    """A pod selected by a KNP allowing TCP 80 from a selector; others fall to kns.<ns> (allow all)."""
    m = Model()
    m.ipset("s:frontend", IPSET_NET, [f"{A4}/32"])
    knp = m.policy(
        pid("allow-frontend", "KubernetesNetworkPolicy", "ns1"),
        [Rule(action="allow", protocol=6, src_ip_set_ids=("s:frontend",), dst_ports=ports(80))],
    )
    kns = m.profile("kns.ns1", [ALLOW_ALL], [ALLOW_ALL])
    m.wep(WEP_A, tiers=[tier("default", [knp])], profiles=[kns])
    m.wep(WEP_B, profiles=[kns])
    state = m.build()
    assert ingress(state, Packet.tcp(A4, B4, 80)).allow
    assert not ingress(state, Packet.tcp(C4, B4, 80)).allow
    assert not ingress(state, Packet.tcp(A4, B4, 443)).allow
    assert ingress(state, Packet.tcp(C4, B4, 443), WEP_B).allow
    assert egress(state, Packet.tcp(B4, C4, 443)).allow  # KNP has no egress policy -> profile


# ---------------------------------------------------------------------------------------------
# Rule matching.
# ---------------------------------------------------------------------------------------------


def test_ip_version_restricts_family() -> None:
    assert matches(Rule(ip_version=4), TCP80)
    assert not matches(Rule(ip_version=4), TCP80_V6)
    assert matches(Rule(ip_version=6), TCP80_V6)
    assert not matches(Rule(ip_version=6), TCP80)


def test_mixed_family_cidr_list_is_filtered_to_packet_family() -> None:
    rule = Rule(src_net=nets("10.0.0.0/8", "fd00::/8"))
    assert matches(rule, TCP80)
    assert matches(rule, TCP80_V6)
    assert not matches(rule, Packet.tcp("192.168.0.1", B4, 80))


def test_cidr_list_without_entry_of_packet_family_removes_rule() -> None:
    # src_net only IPv4: the rule does not exist for IPv6 (even though nothing else restricts it).
    assert not matches(Rule(src_net=nets("10.0.0.0/8")), TCP80_V6)
    assert not matches(Rule(dst_net=nets("fd00::/8")), TCP80)
    # Same for negated lists: "not in 10/8" would be true for any IPv6 address, but the rule is gone.
    assert not matches(Rule(not_src_net=nets("10.0.0.0/8")), TCP80_V6)
    assert not matches(Rule(not_dst_net=nets("192.168.0.0/16")), TCP80_V6)
    assert not rule_exists_for_family(Rule(not_dst_net=nets("192.168.0.0/16")), 6)
    assert rule_exists_for_family(Rule(not_dst_net=nets("192.168.0.0/16")), 4)


def test_cidr_family_filter_applies_even_with_explicit_ip_version() -> None:
    """Felix's FilterRuleToIPVersion filters CIDRs whatever the rule's ip_version."""
    assert not matches(Rule(ip_version=4, src_net=nets("fd00::/8")), TCP80)


def test_negated_catch_all_removes_rule_for_that_family() -> None:
    rule = Rule(action="deny", not_src_net=nets("0.0.0.0/0", "fd00:1::/64"))
    assert not rule_exists_for_family(rule, 4)
    assert rule_exists_for_family(rule, 6)
    # IPv4: the deny rule is gone, so the allow after it decides.
    state = one_policy([rule, ALLOW_ALL])
    assert ingress(state, TCP80).allow
    # IPv6: the rule exists as "not in fd00:1::/64".
    assert not ingress(state, TCP80_V6).allow
    assert ingress(state, Packet.tcp("fd00:1::5", B6, 80)).allow
    assert not rule_exists_for_family(Rule(not_dst_net=nets("::/0")), 6)


def test_protocol_equal_and_not_protocol() -> None:
    assert matches(Rule(protocol=6), TCP80)
    assert not matches(Rule(protocol=17), TCP80)
    assert not matches(Rule(not_protocol=6), TCP80)
    assert matches(Rule(not_protocol=17), TCP80)
    assert matches(Rule(protocol=132), Packet(ipaddress.ip_address(A4), ipaddress.ip_address(B4), 132, 1, 2))


def test_src_and_dst_nets_any_of() -> None:
    rule = Rule(src_net=nets("10.0.0.1/32", "10.0.0.3/32"), dst_net=nets("10.0.0.0/30"))
    assert matches(rule, Packet.tcp(A4, B4, 80))
    assert matches(rule, Packet.tcp(C4, B4, 80))
    assert not matches(rule, Packet.tcp(B4, A4, 80))
    assert not matches(rule, Packet.tcp(A4, "10.0.0.9", 80))


def test_not_nets_none_of() -> None:
    rule = Rule(not_src_net=nets("10.0.0.1/32", "10.0.0.3/32"), not_dst_net=nets("10.0.0.8/29"))
    assert not matches(rule, Packet.tcp(A4, B4, 80))
    assert not matches(rule, Packet.tcp(C4, B4, 80))
    assert matches(rule, Packet.tcp(B4, A4, 80))
    assert not matches(rule, Packet.tcp(B4, "10.0.0.9", 80))


def test_dst_port_ranges_inclusive() -> None:
    rule = Rule(protocol=6, dst_ports=ports(22, (8000, 8080)))
    for port, want in ((22, True), (8000, True), (8080, True), (8081, False), (7999, False), (23, False)):
        assert matches(rule, Packet.tcp(A4, B4, port)) is want, port


def test_src_ports_and_not_src_ports() -> None:
    assert matches(Rule(protocol=6, src_ports=ports((1000, 2000))), Packet.tcp(A4, B4, 80, src_port=1500))
    assert not matches(Rule(protocol=6, src_ports=ports((1000, 2000))), Packet.tcp(A4, B4, 80, src_port=999))
    assert not matches(Rule(protocol=6, not_src_ports=ports(1500)), Packet.tcp(A4, B4, 80, src_port=1500))
    assert matches(Rule(protocol=6, not_src_ports=ports(1500)), Packet.tcp(A4, B4, 80, src_port=1501))


def test_not_dst_ports_none_of() -> None:
    rule = Rule(protocol=6, not_dst_ports=ports(22, (8000, 8080)))
    assert not matches(rule, Packet.tcp(A4, B4, 22))
    assert not matches(rule, Packet.tcp(A4, B4, 8042))
    assert matches(rule, Packet.tcp(A4, B4, 80))


def test_port_criteria_need_a_packet_with_ports() -> None:
    icmp = Packet.icmp(A4, B4)
    assert not matches(Rule(dst_ports=ports(80)), icmp)
    assert not matches(Rule(not_dst_ports=ports(80)), icmp)
    assert not matches(Rule(not_src_ports=ports(80)), icmp)


NAMED = {"n:web": (IPSET_IP_AND_PORT, [f"{B4},tcp:8080", f"{B6},tcp:8080", f"{C4},udp:53"])}


def test_named_port_set_or_port_range() -> None:
    rule = Rule(protocol=6, dst_ports=ports(80), dst_named_port_ip_set_ids=("n:web",))
    assert matches(rule, Packet.tcp(A4, B4, 80), NAMED)  # numeric range
    assert matches(rule, Packet.tcp(A4, B4, 8080), NAMED)  # named port set
    assert matches(rule, Packet.tcp(A6, B6, 8080), NAMED)  # IPv6 member
    assert not matches(rule, Packet.tcp(A4, B4, 9090), NAMED)
    assert not matches(rule, Packet.tcp(A4, C4, 8080), NAMED)  # address not in the set


def test_named_port_set_only_matches_member_protocol() -> None:
    rule = Rule(dst_named_port_ip_set_ids=("n:web",))
    assert matches(rule, Packet.udp(A4, C4, 53), NAMED)
    assert not matches(rule, Packet.tcp(A4, C4, 53), NAMED)
    assert not matches(rule, Packet.udp(A4, B4, 8080), NAMED)


def test_src_named_port_set() -> None:
    rule = Rule(protocol=6, src_named_port_ip_set_ids=("n:web",))
    assert matches(rule, Packet.tcp(B4, A4, 1234, src_port=8080), NAMED)
    assert not matches(rule, Packet.tcp(A4, B4, 8080, src_port=8080), NAMED)


def test_not_named_port_sets_and_not_ports_none_of() -> None:
    rule = Rule(protocol=6, not_dst_ports=ports(80), not_dst_named_port_ip_set_ids=("n:web",))
    assert not matches(rule, Packet.tcp(A4, B4, 80), NAMED)
    assert not matches(rule, Packet.tcp(A4, B4, 8080), NAMED)
    assert matches(rule, Packet.tcp(A4, C4, 8080), NAMED)
    assert matches(rule, Packet.tcp(A4, B4, 443), NAMED)
    not_src = Rule(protocol=6, not_src_named_port_ip_set_ids=("n:web",))
    assert not matches(not_src, Packet.tcp(B4, A4, 1, src_port=8080), NAMED)
    assert matches(not_src, Packet.tcp(B4, A4, 1, src_port=8081), NAMED)


SETS = {
    "s:x": (IPSET_NET, ["10.0.0.0/30", "fd00::/126"]),  # 10.0.0.0-3
    "s:y": (IPSET_NET, ["10.0.0.2/31", "10.0.0.9"]),  # 10.0.0.2-3 and a bare address
    "s:ip": (IPSET_IP, ["10.0.0.1", "10.0.0.5/32", "fd00::2/128"]),
}


def test_src_ip_sets_all_must_contain_the_address() -> None:
    rule = Rule(src_ip_set_ids=("s:x", "s:y"))
    assert matches(rule, Packet.tcp(B4, A4, 80), SETS)  # .2 in both
    assert not matches(rule, Packet.tcp(A4, B4, 80), SETS)  # .1 only in s:x
    assert not matches(rule, Packet.tcp("10.0.0.9", B4, 80), SETS)  # .9 only in s:y


def test_not_src_ip_sets_none_may_contain_the_address() -> None:
    rule = Rule(not_src_ip_set_ids=("s:x", "s:y"))
    assert not matches(rule, Packet.tcp(A4, B4, 80), SETS)
    assert not matches(rule, Packet.tcp("10.0.0.9", B4, 80), SETS)
    assert matches(rule, Packet.tcp("10.0.0.7", B4, 80), SETS)


def test_dst_ip_sets_and_not_dst_ip_sets() -> None:
    assert matches(Rule(dst_ip_set_ids=("s:x", "s:y")), Packet.tcp(C4, "10.0.0.3", 80), SETS)
    assert not matches(Rule(dst_ip_set_ids=("s:x", "s:y")), Packet.tcp(C4, A4, 80), SETS)
    assert not matches(Rule(not_dst_ip_set_ids=("s:y",)), Packet.tcp(C4, "10.0.0.9", 80), SETS)
    assert matches(Rule(not_dst_ip_set_ids=("s:y",)), Packet.tcp(C4, A4, 80), SETS)


def test_ip_set_types_net_ip_and_ipv6() -> None:
    assert matches(Rule(src_ip_set_ids=("s:ip",)), Packet.tcp(A4, B4, 80), SETS)
    assert matches(Rule(src_ip_set_ids=("s:ip",)), Packet.tcp("10.0.0.5", B4, 80), SETS)
    assert not matches(Rule(src_ip_set_ids=("s:ip",)), Packet.tcp(B4, A4, 80), SETS)
    assert matches(Rule(src_ip_set_ids=("s:ip",)), Packet.tcp(B6, A6, 80), SETS)
    assert matches(Rule(src_ip_set_ids=("s:x",)), Packet.tcp("fd00::3", A6, 80), SETS)
    assert not matches(Rule(src_ip_set_ids=("s:x",)), Packet.tcp("fd00::4", A6, 80), SETS)


def test_dst_ip_port_sets_all_must_contain_address_protocol_port() -> None:
    sets = {
        "svc:a": (IPSET_IP_AND_PORT, ["10.96.0.10,tcp:53", "10.96.0.10,udp:53"]),
        "svc:b": (IPSET_IP_AND_PORT, ["10.96.0.10,udp:53"]),
    }
    rule = Rule(dst_ip_port_set_ids=("svc:a", "svc:b"))
    assert matches(rule, Packet.udp(A4, "10.96.0.10", 53), sets)
    assert not matches(rule, Packet.tcp(A4, "10.96.0.10", 53), sets)  # not in svc:b
    assert not matches(rule, Packet.udp(A4, "10.96.0.11", 53), sets)
    assert not matches(rule, Packet.icmp(A4, "10.96.0.10"), sets)


def test_icmp_type_and_code() -> None:
    ping, reply = Packet.icmp(A4, B4, 8, 0), Packet.icmp(A4, B4, 0, 0)
    unreachable = Packet.icmp(A4, B4, 3, 4)
    assert matches(Rule(protocol=1, icmp=IcmpMatch(8)), ping)
    assert not matches(Rule(protocol=1, icmp=IcmpMatch(8)), reply)
    assert matches(Rule(protocol=1, icmp=IcmpMatch(3, 4)), unreachable)
    assert not matches(Rule(protocol=1, icmp=IcmpMatch(3, 1)), unreachable)


def test_not_icmp_type_and_code() -> None:
    ping, unreachable = Packet.icmp(A4, B4, 8, 0), Packet.icmp(A4, B4, 3, 4)
    assert not matches(Rule(protocol=1, not_icmp=IcmpMatch(8)), ping)
    assert matches(Rule(protocol=1, not_icmp=IcmpMatch(8)), unreachable)
    assert not matches(Rule(protocol=1, not_icmp=IcmpMatch(3, 4)), unreachable)
    assert matches(Rule(protocol=1, not_icmp=IcmpMatch(3, 1)), unreachable)


def test_icmpv6_type_for_ipv6_and_icmp_criteria_need_icmp_packets() -> None:
    assert matches(Rule(protocol=58, icmp=IcmpMatch(128)), Packet.icmp(A6, B6, 128, 0))
    assert not matches(Rule(icmp=IcmpMatch(8)), TCP80)
    assert not matches(Rule(not_icmp=IcmpMatch(8)), TCP80)
    # An ICMP (v4) type match is not an ICMPv6 match.
    assert not matches(
        Rule(icmp=IcmpMatch(8)),
        Packet(ipaddress.ip_address(A6), ipaddress.ip_address(B6), 1, None, None, 8, 0),
    )


def test_http_match_is_ignored_like_felix_and_noted() -> None:
    # Felix's renderers ignore the HTTP criterion and match on L3/L4 alone.
    state = one_policy([Rule(action="allow", protocol=6, has_http_match=True)])
    v = ingress(state, TCP80)
    assert v.allow and v.decided_by == "rule"
    assert any("HTTP" in n for n in v.notes)
    deny_http = one_policy([Rule(action="deny", has_http_match=True), ALLOW_ALL])
    assert not ingress(deny_http, TCP80).allow
    # The rest of the rule still has to match.
    udp_only = one_policy([Rule(action="allow", protocol=17, has_http_match=True)])
    assert not ingress(udp_only, TCP80).allow


def test_informational_fields_do_not_affect_matching() -> None:
    assert matches(Rule(rule_id="abcdef"), TCP80)


def test_all_criteria_are_anded() -> None:
    rule = Rule(protocol=6, src_net=nets("10.0.0.0/24"), dst_ports=ports(80), not_dst_net=nets("10.0.0.3/32"))
    assert matches(rule, Packet.tcp(A4, B4, 80))
    assert not matches(rule, Packet.tcp(A4, C4, 80))
    assert not matches(rule, Packet.udp(A4, B4, 80))
    assert not matches(rule, Packet.tcp(A4, B4, 81))


# ---------------------------------------------------------------------------------------------
# IP set membership: in-place deltas and large sets.
# ---------------------------------------------------------------------------------------------


def test_ip_set_delta_in_place_is_seen_even_with_same_member_count() -> None:
    state = one_policy([Rule(src_ip_set_ids=("s:a",))], ipsets={"s:a": (IPSET_NET, [f"{A4}/32"])})
    assert ingress(state, Packet.tcp(A4, B4, 80)).allow
    state.delta_ipset("s:a", added=[f"{C4}/32"], removed=[f"{A4}/32"])
    assert not ingress(state, Packet.tcp(A4, B4, 80)).allow
    assert ingress(state, Packet.tcp(C4, B4, 80)).allow


def test_large_ip_sets_are_fast() -> None:
    members = [f"10.{i // 256}.{i % 256}.0/24" for i in range(5000)] + [
        f"fd00:{i:x}::/64" for i in range(5000)
    ]
    state = one_policy([Rule(src_ip_set_ids=("s:big",))], ipsets={"s:big": (IPSET_NET, members)})
    start = time.perf_counter()
    for i in range(200):
        assert ingress(state, Packet.tcp(f"10.{i % 19}.{i}.7", B4, 80)).allow
        assert not ingress(state, Packet.tcp(f"11.0.{i}.7", B4, 80)).allow
    assert time.perf_counter() - start < 5.0


# ---------------------------------------------------------------------------------------------
# Workload egress: VXLAN / IPIP.
# ---------------------------------------------------------------------------------------------


def allow_all_state() -> DesiredState:
    m = Model()
    p = m.policy("allow-all", [ALLOW_ALL], [ALLOW_ALL])
    m.wep(WEP_A, tiers=[tier("default", [p], [p])])
    m.wep(WEP_B, tiers=[tier("default", [p], [p])])
    return m.build()


def test_workload_vxlan_egress_is_dropped() -> None:
    state = allow_all_state()
    v = egress(state, Packet.udp(A4, B4, 4789))
    assert not v.allow and v.decided_by == "vxlan"
    assert egress(state, Packet.udp(A4, B4, 4790)).allow
    assert egress(state, Packet.tcp(A4, B4, 4789)).allow  # only UDP
    assert ingress(state, Packet.udp(A4, B4, 4789)).allow  # only egress
    assert egress(
        state, Packet.udp(A4, B4, 4789), cfg=replace(CFG, allow_vxlan_packets_from_workloads=True)
    ).allow
    custom = replace(CFG, vxlan_port=8472)
    assert not egress(state, Packet.udp(A4, B4, 8472), cfg=custom).allow
    assert egress(state, Packet.udp(A4, B4, 4789), cfg=custom).allow


def test_workload_ipip_egress_is_dropped() -> None:
    state = allow_all_state()
    ipip = Packet(ipaddress.ip_address(A4), ipaddress.ip_address(B4), 4)
    v = egress(state, ipip)
    assert not v.allow and v.decided_by == "ipip"
    assert ingress(state, ipip).allow
    assert egress(state, ipip, cfg=replace(CFG, allow_ipip_packets_from_workloads=True)).allow
    ipip6 = Packet(ipaddress.ip_address(A6), ipaddress.ip_address(B6), 4)
    assert not egress(state, ipip6).allow


# ---------------------------------------------------------------------------------------------
# Host endpoints.
# ---------------------------------------------------------------------------------------------


def deny_all_hep() -> DesiredState:
    m = Model()
    deny = m.policy("hep-deny", [DENY_ALL], [DENY_ALL])
    m.hep(tiers=[tier("default", [deny], [deny])])
    return m.build()


def test_host_endpoint_failsafe_inbound_ports_always_allowed() -> None:
    state = deny_all_hep()
    for pkt in (
        Packet.tcp("192.0.2.1", "192.0.2.10", 22),
        Packet.udp("192.0.2.1", "192.0.2.10", 68),
        Packet.tcp("192.0.2.1", "192.0.2.10", 2380),
        Packet.tcp("2001:db8::1", "2001:db8::2", 6443),
    ):
        v = endpoint_verdict(state, CFG, HEP, "ingress", pkt)
        assert v.allow and v.decided_by == "failsafe", pkt
    assert not endpoint_verdict(state, CFG, HEP, "ingress", Packet.tcp("192.0.2.1", "192.0.2.10", 80)).allow
    assert not endpoint_verdict(state, CFG, HEP, "ingress", Packet.udp("192.0.2.1", "192.0.2.10", 22)).allow
    # Inbound failsafes are not outbound ones: udp 68 out is denied, udp 53 out allowed.
    assert not endpoint_verdict(state, CFG, HEP, "egress", Packet.udp("192.0.2.10", "192.0.2.1", 68)).allow


def test_host_endpoint_failsafe_outbound_ports_always_allowed() -> None:
    state = deny_all_hep()
    v = endpoint_verdict(state, CFG, HEP, "egress", Packet.udp("192.0.2.10", "192.0.2.53", 53))
    assert v.allow and v.decided_by == "failsafe"
    assert not endpoint_verdict(state, CFG, HEP, "ingress", Packet.udp("192.0.2.53", "192.0.2.10", 53)).allow


def test_failsafe_net_restriction() -> None:
    cfg = replace(
        CFG,
        failsafe_inbound_host_ports=(ProtoPort("tcp", 22, "192.0.2.0/24"),),
        failsafe_outbound_host_ports=(ProtoPort("udp", 53, "198.51.100.0/24"),),
    )
    state = deny_all_hep()
    assert host_endpoint_verdict(state, cfg, HEP, "ingress", Packet.tcp("192.0.2.1", "203.0.113.1", 22)).allow
    assert not host_endpoint_verdict(
        state, cfg, HEP, "ingress", Packet.tcp("10.9.9.9", "203.0.113.1", 22)
    ).allow
    # A net of the other family means no failsafe for this family.
    assert not host_endpoint_verdict(
        state, cfg, HEP, "ingress", Packet.tcp("2001:db8::1", "2001:db8::2", 22)
    ).allow
    assert host_endpoint_verdict(
        state, cfg, HEP, "egress", Packet.udp("203.0.113.1", "198.51.100.7", 53)
    ).allow
    assert not host_endpoint_verdict(
        state, cfg, HEP, "egress", Packet.udp("203.0.113.1", "8.8.8.8", 53)
    ).allow


def test_failsafe_survives_policy_in_error() -> None:
    m = Model()
    broken = m.policy("broken", [DENY_ALL], error="bad rule")
    m.hep(tiers=[tier("default", [broken])])
    state = m.build()
    assert host_endpoint_verdict(state, CFG, HEP, "ingress", Packet.tcp("192.0.2.1", "192.0.2.2", 22)).allow
    v = host_endpoint_verdict(state, CFG, HEP, "ingress", Packet.tcp("192.0.2.1", "192.0.2.2", 80))
    assert not v.allow and v.decided_by == "error"


def test_host_endpoint_tiers_and_profiles_apply_to_host_traffic() -> None:
    m = Model()
    web = m.policy("hep-web", [Rule(action="allow", protocol=6, dst_ports=ports(443))])
    m.hep(
        tiers=[tier("default", [web])],
        profiles=[m.profile("projectcalico-default-allow", [ALLOW_ALL], [ALLOW_ALL])],
    )
    state = m.build()
    assert host_endpoint_verdict(state, CFG, HEP, "ingress", Packet.tcp("192.0.2.1", "192.0.2.2", 443)).allow
    v = host_endpoint_verdict(state, CFG, HEP, "ingress", Packet.tcp("192.0.2.1", "192.0.2.2", 80))
    assert not v.allow and v.decided_by == "end-of-tier"
    # No egress policy in the tier: profile decides.
    v = host_endpoint_verdict(state, CFG, HEP, "egress", Packet.tcp("192.0.2.2", "192.0.2.1", 80))
    assert v.allow and v.decided_by == "profile-rule"


def test_host_endpoint_without_policy_denies_except_failsafe() -> None:
    m = Model()
    m.hep()
    state = m.build()
    assert not host_endpoint_verdict(
        state, CFG, HEP, "ingress", Packet.tcp("192.0.2.1", "192.0.2.2", 80)
    ).allow
    assert host_endpoint_verdict(state, CFG, HEP, "ingress", Packet.tcp("192.0.2.1", "192.0.2.2", 22)).allow


def test_forwarded_traffic_without_forward_tiers_is_allowed() -> None:
    state = deny_all_hep()
    v = host_endpoint_verdict(state, CFG, HEP, "ingress", Packet.tcp("192.0.2.1", A4, 80), forwarded=True)
    assert v.allow and v.decided_by == "forward-default"


def test_forward_tiers_apply_to_forwarded_traffic_without_failsafes() -> None:
    m = Model()
    deny = m.policy("fwd-deny", [DENY_ALL])
    m.hep(forward=[tier("default", [deny])])
    state = m.build()
    for port in (80, 22):
        v = host_endpoint_verdict(
            state, CFG, HEP, "ingress", Packet.tcp("192.0.2.1", A4, port), forwarded=True
        )
        assert not v.allow and v.stage == "forward"
    # Forward tiers with no policy for this direction: no end-of-tier drop, no profiles -> allowed.
    v = host_endpoint_verdict(state, CFG, HEP, "egress", Packet.tcp(A4, "192.0.2.1", 80), forwarded=True)
    assert v.allow and v.decided_by == "forward-default"
    # Host traffic is governed by `tiers` (none here), not forward tiers: default deny.
    assert not host_endpoint_verdict(
        state, CFG, HEP, "ingress", Packet.tcp("192.0.2.1", "192.0.2.2", 80)
    ).allow


def test_forward_tier_end_of_tier_drop() -> None:
    m = Model()
    udp = m.policy("fwd-udp", [Rule(action="allow", protocol=17)])
    m.hep(forward=[tier("default", [udp])])
    state = m.build()
    v = host_endpoint_verdict(state, CFG, HEP, "ingress", Packet.tcp("192.0.2.1", A4, 80), forwarded=True)
    assert not v.allow and v.decided_by == "end-of-tier"
    assert host_endpoint_verdict(
        state, CFG, HEP, "ingress", Packet.udp("192.0.2.1", A4, 80), forwarded=True
    ).allow


def test_untracked_allow_bypasses_later_policy_and_deny_is_final() -> None:
    m = Model()
    notrack = m.policy("notrack", [Rule(action="allow", protocol=17)], [Rule(action="deny", protocol=6)])
    deny = m.policy("deny", [DENY_ALL], [DENY_ALL])
    allow = m.policy("allow", [ALLOW_ALL], [ALLOW_ALL])
    m.hep(
        HEP,
        untracked=[tier("default", [notrack], [notrack], "Pass")],
        tiers=[tier("default", [deny], [deny])],
    )
    m.hep(
        HEP2,
        untracked=[tier("default", [notrack], [notrack], "Pass")],
        tiers=[tier("default", [allow], [allow])],
    )
    state = m.build()
    v = host_endpoint_verdict(state, CFG, HEP, "ingress", Packet.udp("192.0.2.1", "192.0.2.2", 5000))
    assert v.allow and v.stage == "untracked"
    # No match in the untracked tier: no end-of-tier drop there; normal policy decides.
    assert not host_endpoint_verdict(
        state, CFG, HEP, "ingress", Packet.tcp("192.0.2.1", "192.0.2.2", 80)
    ).allow
    assert host_endpoint_verdict(state, CFG, HEP2, "ingress", Packet.tcp("192.0.2.1", "192.0.2.2", 80)).allow
    v = host_endpoint_verdict(state, CFG, HEP2, "egress", Packet.tcp("192.0.2.2", "192.0.2.1", 80))
    assert not v.allow and v.stage == "untracked"
    # Untracked ingress policy also applies to forwarded traffic.
    v = host_endpoint_verdict(state, CFG, HEP, "ingress", Packet.udp("192.0.2.1", A4, 5000), forwarded=True)
    assert v.allow and v.stage == "untracked"


def test_untracked_tier_with_deny_default_still_does_not_drop() -> None:
    m = Model()
    notrack = m.policy("notrack", [Rule(action="allow", protocol=17)])
    allow = m.policy("allow", [ALLOW_ALL])
    m.hep(untracked=[tier("default", [notrack], default="Deny")], tiers=[tier("default", [allow])])
    assert host_endpoint_verdict(
        m.build(), CFG, HEP, "ingress", Packet.tcp("192.0.2.1", "192.0.2.2", 80)
    ).allow


def test_raw_failsafe_response_rule_skips_untracked_policy_only() -> None:
    """Felix's raw failsafe-in chain accepts source port 53 (outbound failsafe udp 53) before
    untracked policy; the filter table then judges the packet normally."""
    m = Model()
    notrack_deny = m.policy("notrack-deny", [DENY_ALL])
    allow = m.policy("allow", [ALLOW_ALL])
    m.hep(untracked=[tier("default", [notrack_deny], default="Pass")], tiers=[tier("default", [allow])])
    state = m.build()
    response = Packet.udp("192.0.2.53", "192.0.2.2", 40000, src_port=53)
    v = host_endpoint_verdict(state, CFG, HEP, "ingress", response)
    assert v.allow and v.stage == "normal"
    assert not host_endpoint_verdict(
        state, CFG, HEP, "ingress", Packet.udp("192.0.2.53", "192.0.2.2", 40000)
    ).allow


def test_pre_dnat_ingress_policy() -> None:
    m = Model()
    pre = m.policy(
        "pre", [Rule(action="deny", dst_net=nets("192.0.2.100/32")), Rule(action="allow", protocol=17)]
    )
    deny = m.policy("deny", [DENY_ALL], [DENY_ALL])
    m.hep(pre_dnat=[tier("default", [pre], default="Pass")], tiers=[tier("default", [deny], [deny])])
    state = m.build()
    v = host_endpoint_verdict(
        state, CFG, HEP, "ingress", Packet.tcp("192.0.2.1", "192.0.2.100", 80), forwarded=True
    )
    assert not v.allow and v.stage == "pre-dnat"
    v = host_endpoint_verdict(state, CFG, HEP, "ingress", Packet.udp("192.0.2.1", "192.0.2.2", 80))
    assert v.allow and v.stage == "pre-dnat"
    v = host_endpoint_verdict(state, CFG, HEP, "ingress", Packet.tcp("192.0.2.1", "192.0.2.2", 80))
    assert not v.allow and v.stage == "normal"


def test_pre_dnat_policy_does_not_apply_on_egress() -> None:
    m = Model()
    pre = m.policy("pre", [ALLOW_ALL], [ALLOW_ALL])
    m.hep(pre_dnat=[tier("default", [pre], [pre], default="Pass")])
    v = host_endpoint_verdict(m.build(), CFG, HEP, "egress", Packet.tcp("192.0.2.2", "192.0.2.1", 80))
    assert not v.allow and v.decided_by == "no-profile"


# ---------------------------------------------------------------------------------------------
# Workload to host.
# ---------------------------------------------------------------------------------------------


def test_workload_to_host_default_endpoint_to_host_action() -> None:
    state = allow_all_state()
    pkt = Packet.tcp(A4, "192.0.2.2", 10250)
    drop = workload_to_host_verdict(state, replace(CFG, default_endpoint_to_host_action="DROP"), WEP_A, pkt)
    assert not drop.allow and drop.decided_by == "endpoint-to-host" and "DROP" in drop.reason
    accept = workload_to_host_verdict(
        state, replace(CFG, default_endpoint_to_host_action="ACCEPT"), WEP_A, pkt
    )
    assert accept.allow and accept.steps[0].allow
    ret = workload_to_host_verdict(state, replace(CFG, default_endpoint_to_host_action="RETURN"), WEP_A, pkt)
    assert ret.allow and "RETURN" in ret.reason and "host's own firewall" in ret.reason


def test_workload_to_host_egress_policy_applies_first() -> None:
    m = Model()
    deny = m.policy("deny-out", outbound=[DENY_ALL])
    m.wep(tiers=[tier("default", egress=[deny])])
    state = m.build()
    accept = replace(CFG, default_endpoint_to_host_action="ACCEPT")
    v = workload_to_host_verdict(state, accept, WEP_A, Packet.tcp(A4, "192.0.2.2", 10250))
    assert not v.allow and v.policy == deny
    assert not workload_to_host_verdict(
        allow_all_state(), accept, WEP_A, Packet.udp(A4, "192.0.2.2", 4789)
    ).allow


def test_workload_to_host_icmpv6_neighbour_discovery_always_allowed() -> None:
    m = Model()
    m.wep()  # no policy at all: egress would be denied
    state = m.build()
    for t in (130, 131, 132, 133, 135, 136):
        assert workload_to_host_verdict(state, CFG, WEP_A, Packet.icmp(A6, "fe80::1", t, 0)).allow
    assert not workload_to_host_verdict(state, CFG, WEP_A, Packet.icmp(A6, "fe80::1", 128, 0)).allow


# ---------------------------------------------------------------------------------------------
# Fail closed.
# ---------------------------------------------------------------------------------------------


def test_missing_ip_set_denies_with_reason() -> None:
    state = one_policy([Rule(action="deny", src_ip_set_ids=("s:gone",)), ALLOW_ALL])
    v = ingress(state, TCP80)
    assert not v.allow and v.decided_by == "error" and "s:gone" in v.reason
    with pytest.raises(PolicyError):
        rule_matches(state, Rule(src_ip_set_ids=("s:gone",)), TCP80)


def test_ip_set_with_malformed_members_denies() -> None:
    state = one_policy(
        [ALLOW_ALL, Rule(src_ip_set_ids=("s:bad",))], ipsets={"s:bad": (IPSET_NET, ["10.0.0.300/32"])}
    )
    v = ingress(state, TCP80)
    assert not v.allow and v.decided_by == "error" and "s:bad" in v.reason


def test_ip_set_of_wrong_type_for_its_role_denies() -> None:
    state = one_policy(
        [Rule(dst_named_port_ip_set_ids=("s:net",))], ipsets={"s:net": (IPSET_NET, ["10.0.0.0/8"])}
    )
    v = ingress(state, TCP80)
    assert not v.allow and "s:net" in v.reason and "IP_AND_PORT" in v.reason


def test_policy_in_error_denies_even_from_the_other_direction() -> None:
    m = Model()
    p = m.policy("p", [ALLOW_ALL], error="egress rule 0: unknown action 'bogus'")
    m.wep(tiers=[tier("default", [p])])
    v = ingress(m.build(), TCP80)
    assert not v.allow and v.decided_by == "error" and "bogus" in v.reason


def test_missing_policy_profile_and_endpoint_error_deny() -> None:
    m = Model()
    m.wep(WEP_A, tiers=[tier("default", [pid("never-sent")])])
    m.wep(WEP_B, profiles=["kns.missing"])
    state = m.build()
    v = ingress(state, TCP80, WEP_A)
    assert not v.allow and "never-sent" in v.reason
    v = ingress(state, TCP80, WEP_B)
    assert not v.allow and "kns.missing" in v.reason
    m2 = Model()
    m2.wep(profiles=[m2.profile("kns.ns1", [ALLOW_ALL])], error="bad ipv4_nets")
    v = ingress(m2.build(), TCP80)
    assert not v.allow and "bad ipv4_nets" in v.reason


def test_profile_in_error_denies() -> None:
    m = Model()
    m.wep(profiles=[m.profile("kns.ns1", [ALLOW_ALL], error="broken")])
    assert not ingress(m.build(), TCP80).allow


def test_missing_or_broken_staged_policy_is_ignored() -> None:
    m = Model()
    broken = m.policy(staged("broken"), [Rule(src_ip_set_ids=("s:gone",))], error="whatever")
    m.wep(tiers=[tier("default", [staged("absent"), broken])], profiles=[m.profile("kns.ns1", [ALLOW_ALL])])
    state = m.build()
    assert endpoint_problems(state, state.workload_endpoints[WEP_A]) == []
    assert ingress(state, TCP80).allow


# ---------------------------------------------------------------------------------------------
# connection_verdict.
# ---------------------------------------------------------------------------------------------


def test_connection_between_local_pods_needs_both_egress_and_ingress() -> None:
    m = Model()
    allow = m.policy("allow", [ALLOW_ALL], [ALLOW_ALL])
    deny_in = m.policy("deny-in", [DENY_ALL])
    m.wep(WEP_A, tiers=[tier("default", [allow], [allow])])
    m.wep(WEP_B, tiers=[tier("default", [deny_in], [allow])])
    state = m.build()
    v = connection_verdict(state, CFG, WEP_A, WEP_B, Packet.tcp(A4, B4, 80))
    assert not v.allow and v.policy == deny_in and len(v.steps) == 2 and v.steps[0].allow
    v = connection_verdict(state, CFG, WEP_B, WEP_A, Packet.tcp(B4, A4, 80))
    assert v.allow and v.decided_by == "connection" and all(s.allow for s in v.steps)


def test_connection_with_remote_side() -> None:
    m = Model()
    deny_out = m.policy("deny-out", outbound=[DENY_ALL])
    m.wep(WEP_A, tiers=[tier("default", egress=[deny_out])], profiles=[m.profile("kns.ns1", [ALLOW_ALL])])
    state = m.build()
    assert connection_verdict(state, CFG, None, WEP_A, Packet.tcp("198.51.100.1", A4, 80)).allow
    assert not connection_verdict(state, CFG, WEP_A, None, Packet.tcp(A4, "198.51.100.1", 80)).allow
    v = connection_verdict(state, CFG, None, None, TCP80)
    assert v.allow and v.decided_by == "unpoliced"


def test_connection_involving_the_host() -> None:
    state = allow_all_state()
    v = connection_verdict(state, CFG, LOCAL_HOST, WEP_A, Packet.tcp("192.0.2.2", A4, 80))
    assert v.allow and v.decided_by == "host-to-workload"
    v = connection_verdict(state, CFG, WEP_A, LOCAL_HOST, Packet.tcp(A4, "192.0.2.2", 80))
    assert not v.allow and v.decided_by == "endpoint-to-host"  # default DROP


def test_connection_through_host_endpoint() -> None:
    m = Model()
    fwd = m.policy("fwd-deny-ssh", [Rule(action="deny", protocol=6, dst_ports=ports(22)), ALLOW_ALL])
    m.hep(forward=[tier("default", [fwd])], tiers=[tier("default", [fwd])])
    allow = m.policy("allow", [ALLOW_ALL], [ALLOW_ALL])
    m.wep(WEP_A, tiers=[tier("default", [allow], [allow])])
    state = m.build()
    assert connection_verdict(state, CFG, HEP, WEP_A, Packet.tcp("198.51.100.1", A4, 80)).allow
    v = connection_verdict(state, CFG, HEP, WEP_A, Packet.tcp("198.51.100.1", A4, 22))
    assert not v.allow and v.stage == "forward"  # no failsafe for forwarded traffic
    v = connection_verdict(state, CFG, HEP, LOCAL_HOST, Packet.tcp("198.51.100.1", "192.0.2.2", 22))
    assert v.allow and v.decided_by == "failsafe"
    assert connection_verdict(state, CFG, WEP_A, HEP, Packet.tcp(A4, "198.51.100.1", 22)).allow


# ---------------------------------------------------------------------------------------------
# Packet / API validation.
# ---------------------------------------------------------------------------------------------


def test_packet_validation() -> None:
    with pytest.raises(ValueError):
        Packet.tcp(A4, B6, 80)
    with pytest.raises(ValueError):
        Packet.tcp(A4, B4, 70000)
    with pytest.raises(ValueError):
        endpoint_verdict(allow_all_state(), CFG, WEP_A, "inbound", TCP80)  # type: ignore[arg-type]
    assert Packet.tcp(A4, B4, 80).src == ipaddress.ip_address(A4)


# ---------------------------------------------------------------------------------------------
# Properties.
# ---------------------------------------------------------------------------------------------

V4_ADDRS = [f"10.0.0.{i}" for i in range(8)]
V6_ADDRS = [f"fd00::{i}" for i in range(8)]
CIDRS = [
    "10.0.0.0/8", "10.0.0.0/30", "10.0.0.4/30", "10.0.0.1/32", "0.0.0.0/0",
    "fd00::/64", "fd00::/126", "fd00::4/126", "::/0",
]  # fmt: skip
PORT_SPECS = [PortRange(79, 79), PortRange(80, 80), PortRange(80, 82), PortRange(1000, 2000)]
NET_SET_IDS = ["s:a", "s:b"]
PORT_SET_IDS = ["n:a"]
PROPERTY_SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

addresses = st.sampled_from(V4_ADDRS + V6_ADDRS)
cidr_lists = st.lists(
    st.sampled_from(CIDRS).map(ipaddress.ip_network), min_size=1, max_size=2, unique=True
).map(tuple)
port_lists = st.lists(st.sampled_from(PORT_SPECS), min_size=1, max_size=2, unique=True).map(tuple)


@st.composite
def packets(draw: st.DrawFn) -> Packet:
    six = draw(st.booleans())
    pool = V6_ADDRS if six else V4_ADDRS
    src, dst = draw(st.sampled_from(pool)), draw(st.sampled_from(pool))
    proto = draw(st.sampled_from([6, 17, 1 if not six else 58, 132]))
    if proto in (1, 58):
        return Packet.icmp(src, dst, draw(st.sampled_from([0, 3, 8, 128])), draw(st.sampled_from([0, 1])))
    return Packet(
        ipaddress.ip_address(src),
        ipaddress.ip_address(dst),
        proto,
        draw(st.sampled_from([79, 80, 1500, 40000])),
        draw(st.sampled_from([79, 80, 81, 82, 443, 4789])),
    )


# Each random rule sets only a few criteria (cheap to generate, and matches often enough).
CRITERIA: dict[str, st.SearchStrategy[object]] = {
    "ip_version": st.sampled_from([4, 6]),
    "protocol": st.sampled_from([1, 6, 17, 58]),
    "not_protocol": st.sampled_from([6, 17]),
    "src_net": cidr_lists,
    "not_src_net": cidr_lists,
    "dst_net": cidr_lists,
    "not_dst_net": cidr_lists,
    "src_ports": port_lists,
    "dst_ports": port_lists,
    "not_dst_ports": port_lists,
    "dst_named_port_ip_set_ids": st.just(("n:a",)),
    "not_dst_named_port_ip_set_ids": st.just(("n:a",)),
    "src_ip_set_ids": st.lists(st.sampled_from(NET_SET_IDS), min_size=1, max_size=2, unique=True).map(tuple),
    "not_src_ip_set_ids": st.just(("s:a",)),
    "dst_ip_set_ids": st.just(("s:b",)),
    "not_dst_ip_set_ids": st.just(("s:b",)),
    "dst_ip_port_set_ids": st.just(("n:a",)),
    "icmp": st.builds(IcmpMatch, st.sampled_from([0, 8, 128]), st.none() | st.just(0)),
    "not_icmp": st.builds(IcmpMatch, st.sampled_from([3, 8])),
    "has_http_match": st.just(True),
}


@st.composite
def rules(draw: st.DrawFn, actions: Sequence[str] = ("allow", "deny", "pass", "log")) -> Rule:
    chosen = draw(st.lists(st.sampled_from(sorted(CRITERIA)), max_size=3, unique=True))
    fields = {name: draw(CRITERIA[name]) for name in chosen}
    return Rule(action=draw(st.sampled_from(list(actions))), **fields)  # type: ignore[arg-type]


@st.composite
def ipset_contents(draw: st.DrawFn) -> dict[str, tuple[int, list[str]]]:
    net_members = st.lists(
        st.sampled_from(
            [f"{a}/32" for a in V4_ADDRS] + [f"{a}/128" for a in V6_ADDRS] + CIDRS[:3] + CIDRS[5:7]
        ),
        max_size=4,
    )
    port_members = st.lists(
        st.builds(
            lambda a, p, n: f"{a},{p}:{n}",
            addresses,
            st.sampled_from(["tcp", "udp"]),
            st.sampled_from([80, 81, 443]),
        ),
        max_size=4,
    )
    out = {sid: (IPSET_NET, draw(net_members)) for sid in NET_SET_IDS}
    out.update({sid: (IPSET_IP_AND_PORT, draw(port_members)) for sid in PORT_SET_IDS})
    return out


@dataclass
class Spec:
    """A random endpoint model: tiers of policies (rule lists) and profiles, for WEP_A."""

    tiers: list[tuple[str, list[list[Rule]]]]  # default action, policies' inbound rules
    profiles: list[list[Rule]]
    ipsets: dict[str, tuple[int, list[str]]]
    state: str = "active"

    def build(self) -> DesiredState:
        m = Model(ipsets=dict(self.ipsets))
        infos = []
        for ti, (default, pols) in enumerate(self.tiers):
            ids = [m.policy(f"t{ti}-p{pi}", rs, rs) for pi, rs in enumerate(pols)]
            infos.append(tier(f"tier{ti}", ids, ids, default))
        profs = [m.profile(f"prof{i}", rs, rs) for i, rs in enumerate(self.profiles)]
        m.wep(tiers=infos, profiles=profs, state=self.state)
        return m.build()


rule_lists = st.lists(rules(), max_size=3)
specs = st.builds(
    Spec,
    tiers=st.lists(
        st.tuples(st.sampled_from(["Deny", "Pass"]), st.lists(rule_lists, max_size=3)), max_size=3
    ),
    profiles=st.lists(rule_lists, max_size=2),
    ipsets=ipset_contents(),
)
directions = st.sampled_from(["ingress", "egress"])
OPEN_CFG = replace(CFG, allow_vxlan_packets_from_workloads=True, allow_ipip_packets_from_workloads=True)


def verdict_of(spec: Spec, direction: str, packet: Packet, cfg: Config = CFG) -> Verdict:
    return endpoint_verdict(spec.build(), cfg, WEP_A, direction, packet)  # type: ignore[arg-type]


@PROPERTY_SETTINGS
@given(
    spec=specs,
    deny_rules=st.lists(rules(actions=("deny", "log")), max_size=5),
    direction=directions,
    packet=packets(),
)
def test_property_first_tier_policy_of_only_deny_rules_never_allows(
    spec: Spec, deny_rules: list[Rule], direction: str, packet: Packet
) -> None:
    spec.tiers.insert(0, ("Deny", [deny_rules]))
    spec.profiles.append([ALLOW_ALL])
    assert not verdict_of(spec, direction, packet, OPEN_CFG).allow


@PROPERTY_SETTINGS
@given(
    spec=specs,
    staged_rules=rule_lists,
    where=st.integers(min_value=0, max_value=10),
    direction=directions,
    packet=packets(),
)
def test_property_adding_a_staged_policy_never_changes_the_verdict(
    spec: Spec, staged_rules: list[Rule], where: int, direction: str, packet: Packet
) -> None:
    before = verdict_of(spec, direction, packet)
    state = spec.build()
    sp = PolicyID("staged-extra", "", "StagedNetworkPolicy")
    state.update_policy(Policy(sp, tuple(staged_rules), tuple(staged_rules)))
    ep = state.workload_endpoints[WEP_A]
    tiers = list(ep.tiers) or [tier("new")]
    ti = where % len(tiers)
    t = tiers[ti]
    ing, eg = list(t.ingress_policies), list(t.egress_policies)
    ing.insert(where % (len(ing) + 1), sp)
    eg.insert(where % (len(eg) + 1), sp)
    tiers[ti] = replace(t, ingress_policies=tuple(ing), egress_policies=tuple(eg))
    state.update_workload_endpoint(replace(ep, tiers=tuple(tiers)))
    after = endpoint_verdict(state, CFG, WEP_A, direction, packet)  # type: ignore[arg-type]
    assert after == before


@PROPERTY_SETTINGS
@given(spec=specs, order=st.randoms(use_true_random=False), direction=directions, packet=packets())
def test_property_reordering_pass_tiers_without_matching_rules_keeps_verdict(
    spec: Spec, order: object, direction: str, packet: Packet
) -> None:
    state = spec.build()
    # Keep only rules that do not match this packet, and make every tier default to Pass.
    spec.tiers = [
        ("Pass", [[r for r in pol if not rule_matches(state, r, packet)] for pol in pols])
        for _, pols in spec.tiers
    ]
    before = verdict_of(spec, direction, packet, OPEN_CFG)
    order.shuffle(spec.tiers)  # type: ignore[attr-defined]
    after = verdict_of(spec, direction, packet, OPEN_CFG)
    assert (after.allow, after.decided_by, after.profile, after.rule_index) == (
        before.allow,
        before.decided_by,
        before.profile,
        before.rule_index,
    )


@PROPERTY_SETTINGS
@given(spec=specs, direction=directions, packet=packets())
def test_property_allow_all_first_rule_in_first_tier_always_allows(
    spec: Spec, direction: str, packet: Packet
) -> None:
    if spec.tiers:
        default, pols = spec.tiers[0]
        spec.tiers[0] = (default, [[ALLOW_ALL, *(pols[0] if pols else [])], *pols[1:]])
    else:
        spec.tiers = [("Deny", [[ALLOW_ALL]])]
    v = verdict_of(spec, direction, packet, OPEN_CFG)
    assert v.allow and v.tier == "tier0" and v.rule_index == 0


@PROPERTY_SETTINGS
@given(spec=specs, direction=directions, packet=packets())
def test_property_verdict_is_deterministic(spec: Spec, direction: str, packet: Packet) -> None:
    state = spec.build()
    first = endpoint_verdict(state, CFG, WEP_A, direction, packet)  # type: ignore[arg-type]
    again = endpoint_verdict(state, CFG, WEP_A, direction, packet)  # type: ignore[arg-type]
    fresh = endpoint_verdict(copy.deepcopy(state), CFG, WEP_A, direction, packet)  # type: ignore[arg-type]
    assert first == again == fresh


@PROPERTY_SETTINGS
@given(
    spec=specs,
    positions=st.lists(st.integers(0, 50), max_size=6),
    log_rules=st.data(),
    direction=directions,
    packet=packets(),
)
def test_property_log_rules_never_change_the_verdict(
    spec: Spec, positions: list[int], log_rules: st.DataObject, direction: str, packet: Packet
) -> None:
    before = verdict_of(spec, direction, packet)
    all_lists = [pol for _, pols in spec.tiers for pol in pols] + spec.profiles
    assume(all_lists)
    for pos in positions:
        target = all_lists[pos % len(all_lists)]
        target.insert(pos % (len(target) + 1), log_rules.draw(rules(actions=("log",))))
    after = verdict_of(spec, direction, packet)
    assert (after.allow, after.decided_by, after.tier, after.policy, after.profile) == (
        before.allow,
        before.decided_by,
        before.tier,
        before.policy,
        before.profile,
    )


@PROPERTY_SETTINGS
@given(rule=rules(), sets=ipset_contents(), packet=packets())
def test_property_ip_version_6_rules_never_match_ipv4(
    rule: Rule, sets: dict[str, tuple[int, list[str]]], packet: Packet
) -> None:
    assume(packet.version == 4)
    state = one_policy([], ipsets=sets)
    assert not rule_matches(state, rule._replace(ip_version=6), packet)
    assert not rule_matches(state, rule._replace(ip_version=4), Packet.tcp("fd00::1", "fd00::2", 80))


@PROPERTY_SETTINGS
@given(spec=specs, direction=directions, packet=packets())
def test_property_inactive_endpoint_never_allows(spec: Spec, direction: str, packet: Packet) -> None:
    spec.state = "down"
    assert not verdict_of(spec, direction, packet).allow


@PROPERTY_SETTINGS
@given(
    members=st.lists(
        st.builds(
            lambda a, b, plen: f"10.{a}.{b}.0/{plen}",
            st.integers(0, 3),
            st.integers(0, 255),
            st.integers(8, 32),
        ),
        max_size=40,
    ),
    addr=st.builds(
        lambda a, b, c: f"10.{a}.{b}.{c}", st.integers(0, 3), st.integers(0, 255), st.integers(0, 255)
    ),
)
def test_property_net_set_membership_agrees_with_ipaddress(members: list[str], addr: str) -> None:
    state = one_policy([], ipsets={"s:n": (IPSET_NET, members)})
    expected = any(ipaddress.ip_address(addr) in ipaddress.ip_network(m, strict=False) for m in members)
    assert rule_matches(state, Rule(src_ip_set_ids=("s:n",)), Packet.tcp(addr, "10.9.9.9", 80)) is expected


@PROPERTY_SETTINGS
@given(
    spec_a=specs,
    spec_b=specs,
    packet=packets(),
)
def test_property_connection_allows_only_if_every_step_allows(
    spec_a: Spec, spec_b: Spec, packet: Packet
) -> None:
    m = Model(ipsets=dict(spec_a.ipsets))
    for key, spec in ((WEP_A, spec_a), (WEP_B, spec_b)):
        infos = []
        for ti, (default, pols) in enumerate(spec.tiers):
            ids = [m.policy(f"{key.workload_id}-t{ti}-p{pi}", rs, rs) for pi, rs in enumerate(pols)]
            infos.append(tier(f"tier{ti}", ids, ids, default))
        profs = [m.profile(f"{key.workload_id}-prof{i}", rs, rs) for i, rs in enumerate(spec.profiles)]
        m.wep(key, tiers=infos, profiles=profs)
    state = m.build()
    v = connection_verdict(state, CFG, WEP_A, WEP_B, packet)
    out = endpoint_verdict(state, CFG, WEP_A, "egress", packet)
    inn = endpoint_verdict(state, CFG, WEP_B, "ingress", packet)
    assert v.allow == (out.allow and inn.allow)


Side = WorkloadEndpointID | HostEndpointID | LocalHost | None

# (src, dst) -> allowed, for allow-all workloads and a host endpoint without any policy.
SIDE_PAIRS: dict[tuple[Side, Side], bool] = {
    (WEP_A, WEP_B): True,
    (WEP_A, HEP): True,  # workload egress + forward egress (no forward tiers)
    (WEP_A, LOCAL_HOST): False,  # DefaultEndpointToHostAction DROP
    (WEP_A, None): True,
    (HEP, WEP_A): True,  # forward ingress (no forward tiers) + workload ingress
    (HEP, HEP2): True,
    (HEP, LOCAL_HOST): False,  # host endpoint without policy: default deny (port 80 is no failsafe)
    (HEP, None): True,
    (LOCAL_HOST, WEP_A): True,  # not policed by Felix
    (LOCAL_HOST, HEP): False,
    (LOCAL_HOST, LOCAL_HOST): True,
    (LOCAL_HOST, None): True,
    (None, WEP_A): True,
    (None, HEP): True,
    (None, LOCAL_HOST): True,
    (None, None): True,
}


@pytest.mark.parametrize(("src", "dst"), list(SIDE_PAIRS), ids=lambda s: repr(s))
def test_connection_verdict_for_every_side_pair(src: Side, dst: Side) -> None:
    m = Model()
    allow = m.policy("allow", [ALLOW_ALL], [ALLOW_ALL])
    m.wep(WEP_A, tiers=[tier("default", [allow], [allow])])
    m.wep(WEP_B, tiers=[tier("default", [allow], [allow])])
    m.hep(HEP)
    m.hep(HEP2)
    v = connection_verdict(m.build(), CFG, src, dst, Packet.tcp(A4, B4, 80))
    assert v.allow is SIDE_PAIRS[(src, dst)], v


def test_connection_logs_only_stages_the_packet_reached() -> None:
    # Sender's egress denies: the receiver's ingress log rule never sees the packet.
    from calico_vpp_driver.config import Config
    from calico_vpp_driver.model.state import DesiredState
    from calico_vpp_driver.model.types import (
        Policy,
        PolicyID,
        Rule,
        TierInfo,
        WorkloadEndpoint,
        WorkloadEndpointID,
    )
    from calico_vpp_driver.policy.verdict import Packet, connection_verdict

    s = DesiredState()
    deny = PolicyID("deny-out", "ns", "NetworkPolicy")
    log_in = PolicyID("log-in", "ns", "NetworkPolicy")
    s.update_policy(Policy(deny, outbound_rules=(Rule(action="deny"),)))
    s.update_policy(Policy(log_in, inbound_rules=(Rule(action="log"), Rule(action="allow"))))
    a = WorkloadEndpointID("k8s", "ns/a", "eth0")
    b = WorkloadEndpointID("k8s", "ns/b", "eth0")
    s.update_workload_endpoint(
        WorkloadEndpoint(a, "calia", tiers=(TierInfo("default", egress_policies=(deny,)),))
    )
    s.update_workload_endpoint(
        WorkloadEndpoint(b, "calib", tiers=(TierInfo("default", ingress_policies=(log_in,)),))
    )
    pkt = Packet.tcp("10.65.0.1", "10.65.0.2", 80)
    v = connection_verdict(s, Config(), a, b, pkt)
    assert not v.allow and v.logged == ()
    # With the egress allowing, the receiver's log rule is reported.
    s.update_policy(Policy(deny, outbound_rules=(Rule(action="allow"),)))
    v2 = connection_verdict(s, Config(), a, b, pkt)
    assert v2.allow and len(v2.logged) == 1
