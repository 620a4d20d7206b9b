"""Tests for calico_vpp_driver.sim.packet (and the probe CLI): what the simulated VPP does
with a packet.

Table tests for every npol matching rule of npol_match.c (categories, negation, the
port OR group, filters, ALLOW/DENY/PASS/LOG, defaults, profiles, invert_rx_tx, freed
objects), the acl plugin (first match, implicit deny, empty list, reflexive sessions,
proto 0, port ranges, ICMP type/code), cnat DNAT/SNAT and session caching, FIB lookup,
and the conditions under which npol does not run at all. The node is built through the
API handlers, as the driver would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Interface, ip_network
from typing import Any

import pytest

from calico_vpp_driver.sim.cli import run_cli
from calico_vpp_driver.sim.handlers import HANDLERS
from calico_vpp_driver.sim.packet import Packet, evaluate, match_rule
from calico_vpp_driver.sim.state import U32_MAX, NpolEntry, NpolFilter, NpolRule, Tuple5, VppState

ALLOW, DENY, LOG, PASS = 0, 1, 2, 3
D_ALLOW, D_DENY, D_PASS = 0, 1, 2
POD_A, POD_B, REMOTE, SVC = "10.0.0.1", "10.0.0.2", "8.8.8.8", "10.96.0.10"


def call(state: VppState, name: str, **req: Any) -> Any:
    reply = HANDLERS[name](state, req)
    if isinstance(reply, dict) and "retval" in reply:
        assert reply["retval"] == 0, (name, req, reply)
    return reply


@dataclass
class Node:
    """An uplink (host-eth0, 192.168.0.11/24, default route) and two pods on taps, all
    with the cnat feature, pods unnumbered to the uplink with /32 routes."""

    state: VppState = field(default_factory=VppState)
    uplink: int = 0
    pod_a: int = 0
    pod_b: int = 0

    def __post_init__(self) -> None:
        s = self.state
        self.uplink = call(s, "af_packet_create_v3", mode=1, host_if_name="eth0", use_random_hw_addr=True)[
            "sw_if_index"
        ]
        call(
            s,
            "sw_interface_add_del_address",
            sw_if_index=self.uplink,
            is_add=True,
            prefix=IPv4Interface("192.168.0.11/24"),
        )
        call(s, "sw_interface_set_flags", sw_if_index=self.uplink, flags=1)
        call(s, "feature_cnat_enable_disable", sw_if_index=self.uplink, enable_disable=True)
        self.route("0.0.0.0/0", self.uplink, nh="192.168.0.1")
        self.pod_a = self.pod(POD_A)
        self.pod_b = self.pod(POD_B)

    def pod(self, addr: str) -> int:
        s = self.state
        sw = int(call(s, "tap_create_v3", id=U32_MAX)["sw_if_index"])
        call(
            s, "sw_interface_set_unnumbered", sw_if_index=self.uplink, unnumbered_sw_if_index=sw, is_add=True
        )
        call(s, "sw_interface_set_flags", sw_if_index=sw, flags=1)
        call(s, "feature_cnat_enable_disable", sw_if_index=sw, enable_disable=True)
        self.route(f"{addr}/32", sw)
        return sw

    def route(self, prefix: str, sw: int, nh: str | None = None, table_id: int = 0) -> None:
        path: dict[str, Any] = {"sw_if_index": sw, "proto": 0}
        if nh:
            path["nh"] = {"address": {"ip4": IPv4Address(nh)}}
        route = {"table_id": table_id, "prefix": ip_network(prefix), "n_paths": 1, "paths": [path]}
        call(self.state, "ip_route_add_del", is_add=True, route=route)

    # npol builders
    def ipset(self, kind: int, members: list[Any]) -> int:
        sid = int(call(self.state, "npol_ipset_create", type=kind)["set_id"])
        vals: list[dict[str, Any]] = []
        for m in members:
            if kind == 0:
                vals.append({"val": {"address": IPv4Address(m)}})
            elif kind == 2:
                vals.append({"val": {"prefix": ip_network(m)}})
            else:
                addr, proto, port = m
                vals.append(
                    {"val": {"tuple": {"address": IPv4Address(addr), "l4_proto": proto, "port": port}}}
                )
        call(self.state, "npol_ipset_add_del_members", set_id=sid, is_add=True, len=len(vals), members=vals)
        return sid

    def rule(self, action: int, *entries: dict[str, Any], filters: list[dict[str, int]] | None = None) -> int:
        rule = {
            "action": action,
            "filters": filters or [],
            "num_entries": len(entries),
            "matches": list(entries),
        }
        return int(call(self.state, "npol_rule_create", rule=rule)["rule_id"])

    def policy(self, *rule_ids: int, inbound: bool = False) -> int:
        items = [{"is_inbound": inbound, "rule_id": r} for r in rule_ids]
        return int(call(self.state, "npol_policy_create", num_items=len(items), rules=items)["policy_id"])

    def configure(
        self,
        sw: int,
        rx: list[int] | None = None,
        tx: list[int] | None = None,
        profiles: list[int] | None = None,
        *,
        policy_default: int = D_DENY,
        profile_default: int = D_DENY,
        invert: int = 0,
    ) -> None:
        rx, tx, profiles = rx or [], tx or [], profiles or []
        call(
            self.state,
            "npol_configure_policies",
            sw_if_index=sw,
            num_rx_policies=len(rx),
            num_tx_policies=len(tx),
            total_ids=len(rx) + len(tx) + len(profiles),
            invert_rx_tx=invert,
            policy_default_rx=policy_default,
            policy_default_tx=policy_default,
            profile_default_rx=profile_default,
            profile_default_tx=profile_default,
            policy_ids=rx + tx + profiles,
        )

    def probe(
        self, src: str, dst: str, proto: str = "tcp", sport: int = 40000, dport: int = 80, **kw: Any
    ) -> str:
        pkt = {"src": src, "dst": dst, "proto": proto, "sport": sport, "dport": dport, **kw}
        verdict, trace = evaluate(self.state, pkt, use_sessions=False)
        assert trace and trace[-1].upper().startswith(verdict.upper()), trace
        return verdict


def cidr(prefix: str, *, src: bool = True, neg: bool = False) -> dict[str, Any]:
    return {"is_src": src, "is_not": neg, "type": 0, "data": {"cidr": ip_network(prefix)}}


def ports(start: int, end: int, *, src: bool = False, neg: bool = False) -> dict[str, Any]:
    return {"is_src": src, "is_not": neg, "type": 1, "data": {"port_range": {"start": start, "end": end}}}


def ipset(set_id: int, *, src: bool = True, neg: bool = False) -> dict[str, Any]:
    return {"is_src": src, "is_not": neg, "type": 3, "data": {"set_id": {"set_id": set_id}}}


def portset(set_id: int, *, src: bool = False, neg: bool = False) -> dict[str, Any]:
    return {"is_src": src, "is_not": neg, "type": 2, "data": {"set_id": {"set_id": set_id}}}


def proto_filter(proto: int, match: bool = True) -> dict[str, int]:
    return {"type": 3, "value": proto, "should_match": int(match)}


# ---------------------------------------------------------------------------------------
# When npol runs at all


def test_unconfigured_interface_allows_everything() -> None:
    node = Node()
    assert node.probe(REMOTE, POD_A) == "allow"
    verdict, trace = evaluate(node.state, {"src": REMOTE, "dst": POD_A, "proto": "udp", "dport": 53})
    assert verdict == "allow"
    assert any("no npol configuration" in line for line in trace)


def test_npol_only_applies_where_the_cnat_feature_is_enabled() -> None:
    node = Node()
    node.configure(node.pod_a, profile_default=D_DENY)  # deny everything, both directions
    assert node.probe(REMOTE, POD_A) == "deny"
    call(node.state, "feature_cnat_enable_disable", sw_if_index=node.pod_a, enable_disable=False)
    assert node.probe(REMOTE, POD_A) == "allow"
    # pod egress (rx on the pod interface) is not evaluated either
    assert node.probe(POD_A, REMOTE) == "allow"


def test_packets_not_looked_up_by_cnat_skip_the_output_hooks() -> None:
    node = Node()
    node.configure(node.pod_a, profile_default=D_DENY)
    call(node.state, "feature_cnat_enable_disable", sw_if_index=node.uplink, enable_disable=False)
    verdict, trace = evaluate(node.state, {"src": REMOTE, "dst": POD_A, "proto": "tcp", "dport": 80})
    assert verdict == "allow"
    assert any("not looked up by cnat" in line for line in trace)


@pytest.mark.parametrize(
    ("proto", "extra"),
    [("gre", {}), ("4", {}), ("icmp", {"icmp_type": 13}), ("icmp", {"icmp_type": 3})],
    ids=["gre", "ipip", "icmp-timestamp", "icmp-unreachable"],
)
def test_protocols_cnat_does_not_track_bypass_npol(proto: str, extra: dict[str, int]) -> None:
    node = Node()
    node.configure(node.pod_a, profile_default=D_DENY)
    verdict, trace = evaluate(node.state, {"src": POD_A, "dst": REMOTE, "proto": proto, **extra})
    assert verdict == "allow"
    assert any("IS_ERR" in line for line in trace)


# ---------------------------------------------------------------------------------------
# Rule matching (npol_match_rule), on the pod's ingress (VPP tx on the pod interface)


RULE_CASES: list[tuple[str, list[Any], dict[str, Any], bool]] = [
    # name, entries (callables of the set ids), packet overrides, expected match
    ("no entries match all", [], {}, True),
    ("src cidr in", [cidr("8.8.0.0/16")], {}, True),
    ("src cidr out", [cidr("9.9.0.0/16")], {}, False),
    ("src cidrs OR-ed", [cidr("9.9.0.0/16"), cidr("8.8.8.8/32")], {}, True),
    ("src and dst AND-ed: dst fails", [cidr("8.8.0.0/16"), cidr("10.9.0.0/16", src=False)], {}, False),
    ("src and dst AND-ed: both", [cidr("8.8.0.0/16"), cidr("10.0.0.0/24", src=False)], {}, True),
    ("negated src: in", [cidr("8.8.8.0/24", neg=True)], {}, False),
    ("negated src: none of", [cidr("9.9.9.0/24", neg=True), cidr("7.0.0.0/8", neg=True)], {}, True),
    ("negated one of several", [cidr("9.9.9.0/24", neg=True), cidr("8.0.0.0/8", neg=True)], {}, False),
    ("positive and negated", [cidr("8.0.0.0/8"), cidr("8.8.8.8/32", neg=True)], {}, False),
    ("other-family cidr only", [cidr("fd00::/8")], {}, False),
    ("dst port in range", [ports(80, 90)], {}, True),
    ("dst port out of range", [ports(81, 90)], {}, False),
    ("dst port ranges OR-ed", [ports(1, 2), ports(80, 80)], {}, True),
    ("negated dst port", [ports(80, 80, neg=True)], {}, False),
    ("src port range", [ports(40000, 40000, src=True)], {}, True),
    ("src port range miss", [ports(1, 1, src=True)], {}, False),
]


@pytest.mark.parametrize(
    ("name", "entries", "overrides", "expected"), RULE_CASES, ids=[c[0] for c in RULE_CASES]
)
def test_rule_criteria(name: str, entries: list[Any], overrides: dict[str, Any], expected: bool) -> None:
    node = Node()
    rid = node.rule(ALLOW, *entries)
    node.configure(node.pod_a, tx=[node.policy(rid)], policy_default=D_DENY)
    pkt = {"sport": 40000, "dport": 80, **overrides}
    assert node.probe(REMOTE, POD_A, **pkt) == ("allow" if expected else "deny")


def test_ip_sets_are_or_ed_and_negated_sets_must_not_contain() -> None:
    node = Node()
    other = node.ipset(0, ["1.1.1.1"])
    remote = node.ipset(0, [REMOTE])
    nets = node.ipset(2, ["8.8.0.0/16"])
    cases = [
        ([ipset(other)], False),
        ([ipset(other), ipset(remote)], True),  # npol OR-s the sets of one category
        ([ipset(nets)], True),
        ([ipset(remote, neg=True)], False),
        ([ipset(other, neg=True)], True),
        ([ipset(nets), ipset(remote, neg=True)], False),
    ]
    for entries, expected in cases:
        node.configure(node.pod_a, tx=[node.policy(node.rule(ALLOW, *entries))])
        assert node.probe(REMOTE, POD_A) == ("allow" if expected else "deny"), entries


def test_port_ranges_and_ip_port_sets_form_one_or_group() -> None:
    node = Node()
    svc = node.ipset(1, [(POD_A, 6, 8080)])
    cases: list[tuple[list[dict[str, Any]], dict[str, Any], bool]] = [
        ([ports(9000, 9000), portset(svc)], {"dport": 8080}, True),  # in the set, not in the range
        ([ports(9000, 9000), portset(svc)], {"dport": 9000}, True),  # in the range, not in the set
        ([ports(9000, 9000), portset(svc)], {"dport": 80}, False),
        ([portset(svc)], {"dport": 8080, "proto": "udp"}, False),  # the protocol is part of the member
        ([portset(svc, neg=True)], {"dport": 8080}, False),
        ([portset(svc, neg=True)], {"dport": 8081}, True),
    ]
    for entries, pkt, expected in cases:
        node.configure(node.pod_a, tx=[node.policy(node.rule(ALLOW, *entries))])
        assert node.probe(REMOTE, POD_A, **pkt) == ("allow" if expected else "deny"), (entries, pkt)


def test_filters() -> None:
    node = Node()
    cases: list[tuple[list[dict[str, int]], dict[str, Any], bool]] = [
        ([proto_filter(6)], {}, True),
        ([proto_filter(17)], {}, False),
        ([proto_filter(6, match=False)], {}, False),
        ([proto_filter(17, match=False)], {}, True),
        # an ICMP filter never matches a non-ICMP packet
        ([{"type": 1, "value": 8, "should_match": 1}], {}, False),
        ([{"type": 1, "value": 8, "should_match": 0}], {}, False),
    ]
    for filters, pkt, expected in cases:
        node.configure(node.pod_a, tx=[node.policy(node.rule(ALLOW, filters=filters))])
        assert node.probe(REMOTE, POD_A, **pkt) == ("allow" if expected else "deny"), filters


def test_icmp_type_filters_compare_the_echo_identifier() -> None:
    """cnat's 5-tuple carries the echo identifier in both ports; npol reads type/code there."""
    node = Node()
    rid = node.rule(ALLOW, filters=[{"type": 1, "value": 8, "should_match": 1}])
    node.configure(node.pod_a, tx=[node.policy(rid)])
    assert node.probe(REMOTE, POD_A, proto="icmp", icmp_type=8, icmp_id=1234) == "deny"
    assert node.probe(REMOTE, POD_A, proto="icmp", icmp_type=8, icmp_id=8) == "allow"
    code = node.rule(ALLOW, filters=[{"type": 2, "value": 0, "should_match": 1}])
    node.configure(node.pod_a, tx=[node.policy(code)])
    assert node.probe(REMOTE, POD_A, proto="icmp", icmp_type=8, icmp_id=0) == "allow"
    assert node.probe(REMOTE, POD_A, proto="icmp", icmp_type=8, icmp_id=3) == "deny"


def test_match_rule_directly() -> None:
    state = VppState()
    rule = NpolRule(
        action=ALLOW,
        filters=[NpolFilter(3, 6, 1)],
        entries=[NpolEntry(True, False, 0, cidr=IPv4Network("10.0.0.0/8"))],
    )
    tup = Tuple5(IPv4Address("10.1.2.3"), IPv4Address("10.9.9.9"), 6, 1, 2)
    assert match_rule(state, rule, tup, []) == (True, "")
    matched, why = match_rule(state, rule, tup._replace(proto=17), [])
    assert not matched and "proto" in why


# ---------------------------------------------------------------------------------------
# Policy evaluation (npol_match_func)


def test_first_allow_or_deny_ends_the_evaluation() -> None:
    node = Node()
    deny = node.policy(node.rule(DENY, cidr("8.8.8.8/32")))
    allow = node.policy(node.rule(ALLOW))
    node.configure(node.pod_a, tx=[deny, allow], policy_default=D_ALLOW)
    assert node.probe(REMOTE, POD_A) == "deny"
    node.configure(node.pod_a, tx=[allow, deny], policy_default=D_DENY)
    assert node.probe(REMOTE, POD_A) == "allow"
    # within a policy, rules in order: the first match decides
    node.configure(node.pod_a, tx=[node.policy(node.rule(ALLOW), node.rule(DENY))])
    assert node.probe(REMOTE, POD_A) == "allow"


def test_pass_jumps_straight_to_the_profiles() -> None:
    node = Node()
    passing = node.policy(node.rule(PASS, cidr("8.8.8.8/32")))
    deny_all = node.policy(node.rule(DENY))
    profile_allow = node.policy(node.rule(ALLOW))
    node.configure(node.pod_a, tx=[passing, deny_all], profiles=[profile_allow])
    assert node.probe(REMOTE, POD_A) == "allow"  # the deny policy after the pass is skipped
    node.configure(node.pod_a, tx=[passing, deny_all], profiles=[], profile_default=D_DENY)
    assert node.probe(REMOTE, POD_A) == "deny"


def test_a_log_match_ends_that_policy_only() -> None:
    node = Node()
    log_then_deny = node.policy(node.rule(LOG), node.rule(DENY))
    allow = node.policy(node.rule(ALLOW))
    node.configure(node.pod_a, tx=[log_then_deny, allow])
    verdict, trace = evaluate(node.state, {"src": REMOTE, "dst": POD_A, "proto": "tcp", "dport": 80})
    assert verdict == "allow"
    assert any("log" in line and "skipped" in line for line in trace)


@pytest.mark.parametrize(
    ("policy_default", "profile_default", "profile_action", "expected"),
    [
        (D_ALLOW, D_DENY, None, "allow"),
        (D_DENY, D_ALLOW, None, "deny"),
        (D_PASS, D_ALLOW, None, "allow"),
        (D_PASS, D_DENY, None, "deny"),
        (D_PASS, D_DENY, ALLOW, "allow"),
        (D_PASS, D_ALLOW, DENY, "deny"),
        (D_PASS, D_ALLOW, PASS, "deny"),  # a PASS in a profile leaves the action at DENY
        (D_PASS, D_PASS, None, "deny"),  # so does a profile default of PASS
    ],
)
def test_defaults_and_profiles(
    policy_default: int, profile_default: int, profile_action: int | None, expected: str
) -> None:
    node = Node()
    unrelated = node.policy(node.rule(ALLOW, cidr("1.2.3.4/32")))
    profiles = [] if profile_action is None else [node.policy(node.rule(profile_action))]
    node.configure(
        node.pod_a,
        tx=[unrelated],
        profiles=profiles,
        policy_default=policy_default,
        profile_default=profile_default,
    )
    assert node.probe(REMOTE, POD_A) == expected


def test_profiles_first_allow_or_deny_then_profile_default() -> None:
    node = Node()
    p_none = node.policy(node.rule(ALLOW, cidr("1.2.3.4/32")))
    p_deny = node.policy(node.rule(DENY, cidr("8.8.8.8/32")))
    p_allow = node.policy(node.rule(ALLOW))
    node.configure(node.pod_a, profiles=[p_none, p_deny, p_allow], policy_default=D_PASS)
    assert node.probe(REMOTE, POD_A) == "deny"
    node.configure(node.pod_a, profiles=[p_none, p_allow, p_deny], policy_default=D_PASS)
    assert node.probe(REMOTE, POD_A) == "allow"
    node.configure(node.pod_a, profiles=[p_none], policy_default=D_PASS, profile_default=D_ALLOW)
    assert node.probe(REMOTE, POD_A) == "allow"


def test_directions_and_invert_rx_tx() -> None:
    node = Node()
    deny_inbound = node.policy(node.rule(DENY), inbound=True)  # rules for VPP rx
    allow_outbound = node.policy(node.rule(ALLOW), inbound=False)
    # pod egress = VPP rx on the pod interface: rx policies with inbound rules
    node.configure(node.pod_a, rx=[deny_inbound], tx=[allow_outbound])
    assert node.probe(POD_A, REMOTE) == "deny"
    assert node.probe(REMOTE, POD_A) == "allow"
    node.configure(node.pod_a, rx=[deny_inbound], tx=[allow_outbound], invert=1)
    # inverted: the rx list and the policies' rx rules now judge packets the pod receives
    assert node.probe(REMOTE, POD_A) == "deny"
    assert node.probe(POD_A, REMOTE) == "allow"


def test_between_two_local_pods_both_directions_apply() -> None:
    node = Node()
    allow_all = node.policy(node.rule(ALLOW), node.rule(ALLOW), inbound=True)
    node.configure(node.pod_a, rx=[allow_all])  # pod A may send
    node.configure(node.pod_b, tx=[node.policy(node.rule(ALLOW, cidr(f"{POD_A}/32")))])
    assert node.probe(POD_A, POD_B) == "allow"
    node.configure(node.pod_a, rx=[], policy_default=D_DENY)  # pod A may not send
    assert node.probe(POD_A, POD_B) == "deny"


def test_deleted_rule_still_referenced_matches_everything_with_its_old_action() -> None:
    node = Node()
    rid = node.rule(ALLOW, cidr("1.2.3.4/32"))
    node.configure(node.pod_a, tx=[node.policy(rid)])
    assert node.probe(REMOTE, POD_A) == "deny"
    call(node.state, "npol_rule_delete", rule_id=rid)
    verdict, trace = evaluate(node.state, {"src": REMOTE, "dst": POD_A, "proto": "tcp", "dport": 80})
    assert verdict == "allow"
    assert any("is deleted" in line for line in trace)
    # the slot is reused by the next rule: the policy now runs that rule
    assert node.rule(DENY, cidr("9.9.9.9/32")) == rid
    assert node.probe(REMOTE, POD_A) == "deny"


def test_deleted_ipset_reads_as_empty_and_deleted_policy_as_no_rules() -> None:
    node = Node()
    sid = node.ipset(0, [REMOTE])
    pid = node.policy(node.rule(ALLOW, ipset(sid)))
    node.configure(node.pod_a, tx=[pid], policy_default=D_DENY)
    assert node.probe(REMOTE, POD_A) == "allow"
    call(node.state, "npol_ipset_delete", set_id=sid)
    assert node.probe(REMOTE, POD_A) == "deny"
    node.configure(node.pod_a, tx=[pid], policy_default=D_ALLOW)
    call(node.state, "npol_policy_delete", policy_id=pid)
    assert node.probe(REMOTE, POD_A) == "allow"


# ---------------------------------------------------------------------------------------
# acl plugin


def _acl(node: Node, *rules: dict[str, Any]) -> int:
    return int(
        call(node.state, "acl_add_replace", acl_index=U32_MAX, tag="t", count=len(rules), r=list(rules))[
            "acl_index"
        ]
    )


def acl_rule(
    permit: int, src: str = "0.0.0.0/0", dst: str = "0.0.0.0/0", proto: int = 0, **p: int
) -> dict[str, Any]:
    return {
        "is_permit": permit,
        "src_prefix": IPv4Network(src),
        "dst_prefix": IPv4Network(dst),
        "proto": proto,
        "srcport_or_icmptype_first": p.get("sf", 0),
        "srcport_or_icmptype_last": p.get("sl", 65535),
        "dstport_or_icmpcode_first": p.get("df", 0),
        "dstport_or_icmpcode_last": p.get("dl", 65535),
        "tcp_flags_mask": 0,
        "tcp_flags_value": 0,
    }


def _set_acls(node: Node, sw: int, inputs: list[int], outputs: list[int]) -> None:
    acls = inputs + outputs
    call(
        node.state,
        "acl_interface_set_acl_list",
        sw_if_index=sw,
        count=len(acls),
        n_input=len(inputs),
        acls=acls,
    )


def test_acl_first_match_across_the_list_and_implicit_deny() -> None:
    node = Node()
    permit_web = _acl(node, acl_rule(1, proto=6, df=80, dl=80))
    deny_all = _acl(node, acl_rule(0))
    _set_acls(node, node.pod_a, [], [permit_web, deny_all])
    assert node.probe(REMOTE, POD_A, dport=80) == "allow"
    assert node.probe(REMOTE, POD_A, dport=81) == "deny"
    _set_acls(node, node.pod_a, [], [deny_all, permit_web])
    assert node.probe(REMOTE, POD_A, dport=80) == "deny"
    _set_acls(node, node.pod_a, [], [permit_web])
    verdict, trace = evaluate(node.state, {"src": REMOTE, "dst": POD_A, "proto": "udp", "dport": 53})
    assert verdict == "deny" and "implicit deny" in trace[-2]


def test_acl_empty_list_means_no_filtering() -> None:
    node = Node()
    _set_acls(node, node.pod_a, [], [])
    assert node.probe(REMOTE, POD_A, proto="udp", dport=9) == "allow"


def test_acl_proto_zero_matches_any_protocol_and_ignores_ports() -> None:
    node = Node()
    any_from_remote = _acl(node, acl_rule(1, src="8.8.8.8/32", proto=0, df=1, dl=1))
    _set_acls(node, node.pod_a, [], [any_from_remote])
    assert node.probe(REMOTE, POD_A, proto="udp", dport=5353) == "allow"
    assert node.probe(REMOTE, POD_A, proto="gre") == "allow"
    assert node.probe("9.9.9.9", POD_A) == "deny"


def test_acl_port_ranges_and_icmp_type_code() -> None:
    node = Node()
    acl = _acl(
        node,
        acl_rule(1, proto=6, sf=1024, sl=65535, df=8000, dl=8100),
        acl_rule(1, proto=1, sf=8, sl=8, df=0, dl=0),  # ICMP echo request, code 0
    )
    _set_acls(node, node.pod_a, [], [acl])
    assert node.probe(REMOTE, POD_A, sport=5000, dport=8050) == "allow"
    assert node.probe(REMOTE, POD_A, sport=80, dport=8050) == "deny"
    assert node.probe(REMOTE, POD_A, sport=5000, dport=8101) == "deny"
    assert node.probe(REMOTE, POD_A, proto="icmp", icmp_type=8) == "allow"
    assert node.probe(REMOTE, POD_A, proto="icmp", icmp_type=13) == "deny"
    assert node.probe(REMOTE, POD_A, proto="icmp", icmp_type=8, icmp_code=1) == "deny"


def test_acl_reflexive_session_lets_the_return_packet_in() -> None:
    node = Node()
    s = node.state
    reflect = _acl(node, acl_rule(2, src="8.8.8.8/32", proto=6, df=80, dl=80))
    deny_all = _acl(node, acl_rule(0))
    # pod ingress = output ACL of the pod interface; pod egress = input ACL
    _set_acls(node, node.pod_a, [deny_all], [reflect])
    forward = {"src": REMOTE, "dst": POD_A, "proto": "tcp", "sport": 40000, "dport": 80}
    back = {"src": POD_A, "dst": REMOTE, "proto": "tcp", "sport": 80, "dport": 40000}
    assert evaluate(s, back)[0] == "deny"  # no session yet
    assert evaluate(s, forward)[0] == "allow"
    verdict, trace = evaluate(s, back)
    assert verdict == "allow" and any("reflexive session" in line for line in trace)
    # a plain permit creates no session
    s.expire_sessions()
    plain = _acl(node, acl_rule(1, src="8.8.8.8/32", proto=6, df=80, dl=80))
    _set_acls(node, node.pod_a, [deny_all], [plain])
    assert evaluate(s, forward)[0] == "allow"
    assert evaluate(s, back)[0] == "deny"


def test_acl_icmp_reflexive_session_maps_echo_request_to_reply() -> None:
    node = Node()
    s = node.state
    reflect = _acl(node, acl_rule(2, proto=1, sf=8, sl=8))
    deny_all = _acl(node, acl_rule(0))
    _set_acls(node, node.pod_a, [reflect], [deny_all])
    assert evaluate(s, {"src": POD_A, "dst": REMOTE, "proto": "icmp", "icmp_type": 8})[0] == "allow"
    assert evaluate(s, {"src": REMOTE, "dst": POD_A, "proto": "icmp", "icmp_type": 0})[0] == "allow"
    assert evaluate(s, {"src": REMOTE, "dst": POD_A, "proto": "icmp", "icmp_type": 8})[0] == "deny"


def test_changing_an_interfaces_acls_clears_its_sessions() -> None:
    node = Node()
    s = node.state
    reflect = _acl(node, acl_rule(2, proto=6))
    deny_all = _acl(node, acl_rule(0))
    _set_acls(node, node.pod_a, [deny_all], [reflect])
    evaluate(s, {"src": REMOTE, "dst": POD_A, "proto": "tcp", "sport": 1, "dport": 80})
    assert s.acl_sessions
    other = _acl(node, acl_rule(1, proto=17))
    _set_acls(node, node.pod_a, [deny_all], [reflect, other])
    assert not s.acl_sessions


def test_acl_and_npol_both_apply() -> None:
    node = Node()
    _set_acls(node, node.pod_a, [], [_acl(node, acl_rule(1))])
    node.configure(node.pod_a, tx=[node.policy(node.rule(DENY))])
    verdict, trace = evaluate(
        node.state, {"src": REMOTE, "dst": POD_A, "proto": "tcp", "dport": 80}, use_sessions=False
    )
    assert verdict == "deny"
    # VPP's order on output: acl-plugin-out, then cnat-output (npol tx)
    acl_line = next(i for i, line in enumerate(trace) if line.startswith("acl-plugin-out"))
    npol_line = next(i for i, line in enumerate(trace) if line.startswith("npol tx"))
    assert acl_line < npol_line


# ---------------------------------------------------------------------------------------
# cnat


def _service(node: Node, backends: list[tuple[str, int]], vip: str = SVC, port: int = 80) -> int:
    translation = {
        "vip": {"addr": IPv4Address(vip), "sw_if_index": U32_MAX, "if_af": 0, "port": port},
        "ip_proto": 6,
        "is_real_ip": 0,
        "flags": 0,
        "lb_type": 0,
        "n_paths": len(backends),
        "flow_hash_config": 0,
        "paths": [
            {
                "dst_ep": {"addr": IPv4Address(a), "sw_if_index": U32_MAX, "if_af": 0, "port": p},
                "src_ep": {"addr": IPv4Address("0.0.0.0"), "sw_if_index": U32_MAX, "if_af": 0, "port": 0},
                "flags": 0,
            }
            for a, p in backends
        ],
    }
    return int(call(node.state, "cnat_translation_update", translation=translation)["id"])


def test_cnat_dnat_sends_service_traffic_to_a_backend_and_npol_sees_the_backend() -> None:
    node = Node()
    _service(node, [(POD_B, 8080)])
    allow_8080 = node.policy(node.rule(ALLOW, ports(8080, 8080)))
    node.configure(node.pod_b, tx=[allow_8080])
    verdict, trace = evaluate(
        node.state, {"src": POD_A, "dst": SVC, "proto": "tcp", "sport": 1000, "dport": 80}
    )
    assert verdict == "allow"
    assert any("DNAT" in line and "10.0.0.2;8080" in line for line in trace)
    assert "out tap1" in trace[-1]
    # the VIP on another port, or with another protocol, is not translated: the exclusive VIP drops it
    assert node.probe(POD_A, SVC, dport=443) == "deny"
    assert node.probe(POD_A, SVC, proto="udp", dport=80) == "deny"


def test_cnat_translation_without_backends_drops() -> None:
    node = Node()
    _service(node, [])
    verdict, trace = evaluate(node.state, {"src": POD_A, "dst": SVC, "proto": "tcp", "dport": 80})
    assert verdict == "deny" and "no resolved backend" in trace[-1]


def test_return_traffic_of_a_translated_flow_is_un_natted() -> None:
    node = Node()
    _service(node, [(POD_B, 8080)])
    s = node.state
    assert evaluate(s, {"src": POD_A, "dst": SVC, "proto": "tcp", "sport": 1000, "dport": 80})[0] == "allow"
    node.configure(node.pod_a, tx=[], policy_default=D_DENY)  # pod A accepts nothing new
    verdict, trace = evaluate(s, {"src": POD_B, "dst": POD_A, "proto": "tcp", "sport": 8080, "dport": 1000})
    assert verdict == "allow"
    assert "10.96.0.10:80 -> 10.0.0.1:1000" in trace[-1]


def test_cnat_sessions_cache_a_deny_until_purged() -> None:
    node = Node()
    s = node.state
    node.configure(node.pod_a, tx=[], policy_default=D_DENY)
    ping = {"src": REMOTE, "dst": POD_A, "proto": "icmp", "icmp_type": 8, "icmp_id": 7}
    assert evaluate(s, ping)[0] == "deny"
    node.configure(node.pod_a, tx=[], policy_default=D_ALLOW)  # relaxed
    verdict, trace = evaluate(s, ping)
    assert verdict == "deny" and "cached" in trace[-1]
    assert evaluate(s, ping, use_sessions=False)[0] == "allow"
    call(s, "cnat_session_purge")
    assert evaluate(s, ping)[0] == "allow"


def test_cnat_sessions_keep_an_allowed_flow_after_the_policy_tightens() -> None:
    node = Node()
    s = node.state
    flow = {"src": REMOTE, "dst": POD_A, "proto": "tcp", "sport": 5555, "dport": 80}
    assert evaluate(s, flow)[0] == "allow"
    node.configure(node.pod_a, tx=[], policy_default=D_DENY)
    assert evaluate(s, flow)[0] == "allow"
    assert evaluate(s, {**flow, "sport": 5556})[0] == "deny"


def test_snat_k8s_policy_source_nats_pod_traffic_leaving_the_node() -> None:
    node = Node()
    s = node.state
    call(
        s,
        "cnat_set_snat_addresses",
        snat_ip4=IPv4Address("192.168.0.11").packed,
        snat_ip6=bytes(16),
        sw_if_index=U32_MAX,
    )
    call(s, "cnat_set_snat_policy", policy=2)
    call(s, "cnat_snat_policy_add_del_if", sw_if_index=node.pod_a, is_add=1, table=0)  # include-v4
    call(s, "cnat_snat_policy_add_del_exclude_pfx", is_add=1, prefix=IPv4Network("10.0.0.0/16"))
    for sw in (node.pod_a, node.pod_b):
        call(s, "cnat_snat_policy_add_del_if", sw_if_index=sw, is_add=1, table=2)  # pod
    verdict, trace = evaluate(s, {"src": POD_A, "dst": REMOTE, "proto": "tcp", "sport": 1000, "dport": 443})
    assert verdict == "allow" and "as 192.168.0.11:" in trace[-1]
    # to an excluded prefix (another pod): no source NAT
    verdict, trace = evaluate(s, {"src": POD_A, "dst": POD_B, "proto": "tcp", "sport": 1000, "dport": 443})
    assert verdict == "allow" and "as 10.0.0.1:1000" in trace[-1]
    # the return traffic of the NATed flow is un-NATed back to the pod
    verdict, trace = evaluate(s, {"src": POD_A, "dst": REMOTE, "proto": "tcp", "sport": 1000, "dport": 443})
    snat_port = int(trace[-1].split("as 192.168.0.11:")[1].split()[0])
    back = {"src": REMOTE, "dst": "192.168.0.11", "proto": "tcp", "sport": 443, "dport": snat_port}
    verdict, trace = evaluate(s, back)
    assert verdict == "allow" and trace[-1].endswith("as 8.8.8.8:443 -> 10.0.0.1:1000 tcp")


@pytest.mark.parametrize(("flags", "reachable"), [(0, False), (2, True)])
def test_snat_address_client_drops_what_is_not_a_reply_unless_no_client(flags: int, reachable: bool) -> None:
    node = Node()
    s = node.state
    call(
        s,
        "cnat_set_snat_addresses_v2",
        fwd_fib_index=0,
        ret_fib_index=0,
        snat_ip4=IPv4Address("192.168.0.11").packed,  # the uplink's own address
        snat_ip6=bytes(16),
        sw_if_index=U32_MAX,
        flags=flags,
    )
    call(s, "cnat_set_snat_policy", policy=1)
    call(s, "cnat_snat_policy_add_del_if", sw_if_index=node.pod_a, is_add=1, table=0)
    ssh = {"src": REMOTE, "dst": "192.168.0.11", "proto": "tcp", "sport": 5000, "dport": 22}
    verdict, trace = evaluate(s, ssh, use_sessions=False)
    assert (verdict == "allow") == reachable, trace
    if not reachable:
        assert any("SNAT address client" in line for line in trace)
    # replies to a NATed flow are un-NATed by cnat-lookup on the uplink either way
    out = {"src": POD_A, "dst": REMOTE, "proto": "tcp", "sport": 1000, "dport": 443}
    verdict, trace = evaluate(s, out)
    port = int(trace[-1].split("as 192.168.0.11:")[1].split()[0])
    back = {"src": REMOTE, "dst": "192.168.0.11", "proto": "tcp", "sport": 443, "dport": port}
    verdict, trace = evaluate(s, back)
    assert verdict == "allow" and trace[-1].endswith("-> 10.0.0.1:1000 tcp"), trace


def test_snat_without_an_address_drops() -> None:
    node = Node()
    s = node.state
    tap = int(call(s, "tap_create_v3", id=U32_MAX)["sw_if_index"])
    call(s, "cnat_set_snat_addresses", snat_ip4=bytes(4), snat_ip6=bytes(16), sw_if_index=tap)
    verdict, trace = evaluate(s, {"src": POD_A, "dst": REMOTE, "proto": "udp", "sport": 1, "dport": 53})
    assert verdict == "deny" and "SNAT address is unset" in trace[-1]


# ---------------------------------------------------------------------------------------
# FIB and interfaces


def test_fib_longest_prefix_match_and_rx_from_the_source() -> None:
    node = Node()
    s = node.state
    node.route("10.10.0.0/16", node.pod_a)
    node.route("10.10.1.0/24", node.pod_b)
    verdict, trace = evaluate(s, {"src": REMOTE, "dst": "10.10.1.5", "proto": "udp", "dport": 1})
    assert verdict == "allow" and "tap1" in trace[-1]
    verdict, trace = evaluate(s, {"src": REMOTE, "dst": "10.10.2.5", "proto": "udp", "dport": 1})
    assert verdict == "allow" and "tap0" in trace[-1]
    assert "rx host-eth0 (1) (the interface the FIB routes the source to)" in trace
    # no route at all: the default drop entry of a table without a default route
    call(s, "ip_table_add_del", is_add=True, table={"table_id": 9, "is_ip6": False})
    extra = int(call(s, "tap_create_v3", id=U32_MAX)["sw_if_index"])
    call(s, "sw_interface_set_table", sw_if_index=extra, is_ipv6=False, vrf_id=9)
    call(
        s,
        "sw_interface_add_del_address",
        sw_if_index=extra,
        is_add=True,
        prefix=IPv4Interface("172.16.0.1/24"),
    )
    call(s, "sw_interface_set_flags", sw_if_index=extra, flags=1)
    verdict, trace = evaluate(s, {"src": "172.16.0.9", "dst": POD_A, "proto": "udp", "dport": 1}, extra)
    assert verdict == "deny" and "FIB drops" in trace[-1]  # the rx interface's table (9) has no route
    node.route("10.0.0.0/8", node.pod_a, table_id=9)
    assert evaluate(s, {"src": "172.16.0.9", "dst": POD_A, "proto": "udp", "dport": 1}, extra)[0] == "allow"


def test_fib_recursive_routes_local_delivery_and_drops() -> None:
    node = Node()
    s = node.state
    recursive = {
        "sw_if_index": U32_MAX,
        "table_id": 0,
        "proto": 0,
        "nh": {"address": {"ip4": IPv4Address(POD_B)}},
    }
    call(
        s,
        "ip_route_add_del",
        is_add=True,
        route={"table_id": 0, "prefix": IPv4Network("10.20.0.0/16"), "n_paths": 1, "paths": [recursive]},
    )
    verdict, trace = evaluate(s, {"src": REMOTE, "dst": "10.20.0.1", "proto": "udp", "dport": 1})
    assert verdict == "allow" and "tap1" in trace[-1]
    verdict, trace = evaluate(s, {"src": REMOTE, "dst": "192.168.0.11", "proto": "udp", "dport": 1})
    assert verdict == "allow" and "local delivery" in trace[-1]
    drop = {"sw_if_index": U32_MAX, "type": 2, "proto": 0}
    call(
        s,
        "ip_route_add_del",
        is_add=True,
        route={"table_id": 0, "prefix": IPv4Network("10.30.0.0/16"), "n_paths": 1, "paths": [drop]},
    )
    assert node.probe(REMOTE, "10.30.0.1") == "deny"
    assert node.probe(REMOTE, "224.0.0.5") == "deny"


def test_interface_state_checks() -> None:
    node = Node()
    s = node.state
    call(s, "sw_interface_set_flags", sw_if_index=node.pod_b, flags=0)
    assert node.probe(REMOTE, POD_B) == "deny"
    assert node.probe(POD_B, REMOTE) == "deny"
    call(s, "sw_interface_set_flags", sw_if_index=node.pod_b, flags=1)
    call(
        s,
        "sw_interface_set_unnumbered",
        sw_if_index=node.uplink,
        unnumbered_sw_if_index=node.pod_b,
        is_add=False,
    )
    verdict, trace = evaluate(s, {"src": POD_B, "dst": REMOTE, "proto": "tcp", "dport": 1})
    assert verdict == "deny" and "ip4-not-enabled" in trace[-1]
    assert evaluate(s, {"src": POD_A, "dst": REMOTE, "proto": "tcp", "dport": 1}, 99)[0] == "deny"


def test_urpf_strict_drops_spoofed_sources() -> None:
    node = Node()
    s = node.state
    call(s, "urpf_update", sw_if_index=node.pod_a, is_input=True, mode=2, af=0)
    assert evaluate(s, {"src": POD_A, "dst": REMOTE, "proto": "udp", "dport": 1}, node.pod_a)[0] == "allow"
    verdict, trace = evaluate(s, {"src": POD_B, "dst": REMOTE, "proto": "udp", "dport": 1}, node.pod_a)
    assert verdict == "deny" and "uRPF strict" in trace[-1]


def test_packets_can_be_given_as_packet_objects() -> None:
    node = Node()
    pkt = Packet(src=IPv4Address(REMOTE), dst=IPv4Address(POD_A), proto=17, sport=1, dport=53)
    assert evaluate(node.state, pkt, use_sessions=False)[0] == "allow"
    assert node.state.cnat_sessions == {}


# ---------------------------------------------------------------------------------------
# The probe CLI command


def test_probe_cli_reply_starts_with_the_verdict() -> None:
    node = Node()
    node.configure(node.pod_a, tx=[node.policy(node.rule(ALLOW, ports(80, 80)))])
    out = run_cli(node.state, "probe from 8.8.8.8 to 10.0.0.1 proto tcp sport 1234 dport 80")
    assert out.splitlines()[0] == "allow"
    assert "ALLOW by policy" in out and out.splitlines()[-1].startswith("  ALLOW: forwarded out tap0")
    out = run_cli(node.state, "probe from 8.8.8.8 to 10.0.0.1 proto 6 sport 1234 dport 81 new-flow")
    assert out.splitlines()[0] == "deny"
    out = run_cli(
        node.state, "probe from 10.0.0.2 to 10.0.0.1 proto icmp icmp-type 8 icmp-code 0 icmp-id 3 rx tap1"
    )
    assert out.splitlines()[0] == "deny" and "rx tap1 (3) (given)" in out
    assert run_cli(
        node.state, f"probe from 10.0.0.2 to 10.0.0.1 proto udp dport 82 rx {node.pod_b}"
    ).startswith("deny\n")
    assert run_cli(node.state, "probe from 10.0.0.2 to 10.0.0.1").startswith("probe: missing proto")
    assert run_cli(node.state, "probe from 10.0.0.2 to 10.0.0.1 proto bogus").startswith("probe:")


def test_show_commands_render_vpp_style_output() -> None:
    node = Node()
    sid = node.ipset(0, [REMOTE])
    node.configure(
        node.pod_a, tx=[node.policy(node.rule(ALLOW, ipset(sid), ports(80, 90), filters=[proto_filter(6)]))]
    )
    s = node.state
    interfaces = run_cli(s, "sh int")
    assert interfaces.splitlines()[1].startswith("local0") and "host-eth0" in interfaces
    rules = run_cli(s, "show npol rules")
    assert rules.strip() == "[rule#0;allow][proto==tcp,dst==[80-90],src==[ipset#0;ip;8.8.8.8,],]"
    assert "[tap0 sw_if_index=2" in run_cli(s, "show npol interfaces")
    assert run_cli(s, "show npol ipsets").strip() == "[ipset#0;ip;8.8.8.8,]"
    assert "[policy#0] rx-rules:0 tx-rules:1" in run_cli(s, "show npol policies")
    acl = _acl(node, acl_rule(2, "10.0.0.0/8", proto=6, df=80, dl=80))
    _set_acls(node, node.pod_a, [acl], [])
    text = run_cli(s, "show acl-plugin acl")
    assert "acl-index 0 count 1 tag {t}" in text
    assert "0: ipv4 permit+reflect src 10.0.0.0/8 dst 0.0.0.0/0 proto 6 sport 0-65535 dport 80" in text
    assert f"applied inbound on sw_if_index: {node.pod_a}" in text
    fib = run_cli(s, "show ip fib")
    assert fib.startswith("ipv4-VRF:0, fib_index:0") and "10.0.0.1/32" in fib
    _service(node, [(POD_B, 8080)])
    assert "[0] 10.96.0.10;80 TCP lb:default" in run_cli(s, "show cnat translation")
    assert run_cli(s, "show version").startswith("vpp v26.10-rc0~sim")
    assert run_cli(s, "show nonsense").startswith("unknown input")


def test_ipv6_npol_and_icmpv6_echo() -> None:
    node = Node()
    s = node.state
    node.route("fd00::1/128", node.pod_a)
    route = {
        "table_id": 0,
        "prefix": ip_network("::/0"),
        "n_paths": 1,
        "paths": [{"sw_if_index": node.uplink, "proto": 1}],
    }
    call(s, "ip_route_add_del", is_add=True, route=route)
    ping = {"src": "2001:db8::5", "dst": "fd00::1", "proto": "icmpv6", "icmp_id": 9}
    verdict, trace = evaluate(s, ping, use_sessions=False)
    assert verdict == "deny" and "ip6-not-enabled" in trace[-1]  # the uplink has no IPv6 address yet
    uplink_v6 = IPv6Interface("2001:db8:ff::11/64")
    call(s, "sw_interface_add_del_address", sw_if_index=node.uplink, is_add=True, prefix=uplink_v6)
    allow_v6 = node.rule(ALLOW, cidr("2001:db8::/32"), filters=[proto_filter(58)])
    node.configure(node.pod_a, tx=[node.policy(allow_v6)], policy_default=D_DENY)
    verdict, trace = evaluate(s, ping, use_sessions=False)
    assert verdict == "allow" and "type 128" in trace[0]
    assert evaluate(s, {**ping, "src": "2001:db9::5"}, use_sessions=False)[0] == "deny"
    # an IPv4 CIDR never matches an IPv6 packet
    node.configure(node.pod_a, tx=[node.policy(node.rule(ALLOW, cidr("0.0.0.0/0")))], policy_default=D_DENY)
    assert evaluate(s, ping, use_sessions=False)[0] == "deny"


def test_tunnel_output_encapsulates_and_routes_the_outer_packet() -> None:
    node = Node()
    s = node.state
    vx = call(
        s,
        "vxlan_add_del_tunnel_v3",
        src_address=IPv4Address("192.168.0.11"),
        dst_address=IPv4Address("203.0.113.5"),
        vni=77,
        dst_port=8472,
        is_l3=True,
    )["sw_if_index"]
    call(s, "sw_interface_set_flags", sw_if_index=vx, flags=1)
    node.route("10.65.3.0/26", vx, nh="10.65.3.0")
    verdict, trace = evaluate(s, {"src": POD_A, "dst": "10.65.3.9", "proto": "udp", "dport": 53}, node.pod_a)
    assert verdict == "allow", trace
    assert "fib: path next hop 10.65.3.0 on vxlan_tunnel0" in trace
    assert "encap on vxlan_tunnel0: vxlan vni 77 udp dport 8472, outer 192.168.0.11 -> 203.0.113.5" in trace
    assert "outer: fib: path next hop 192.168.0.1 on host-eth0" in trace
    assert any(t.startswith("outer: tx host-eth0") for t in trace)
    assert trace[-1].startswith("ALLOW: forwarded out vxlan_tunnel0")
    # An outer destination the FIB drops: the packet goes nowhere.
    drop = {"table_id": 0, "prefix": ip_network("203.0.113.0/24"), "paths": [{"type": 2, "proto": 0}]}
    call(s, "ip_route_add_del", is_add=True, route=drop)
    verdict, trace = evaluate(s, {"src": POD_A, "dst": "10.65.3.9", "proto": "udp", "dport": 53}, node.pod_a)
    assert verdict == "deny", trace
    assert "outer destination 203.0.113.5 of vxlan_tunnel0 is not reachable" in trace[-1]


def test_ipip_tunnel_whose_outer_packet_would_enter_a_tunnel_is_refused() -> None:
    node = Node()
    s = node.state
    tunnel = {"src": IPv4Address("192.168.0.11"), "dst": IPv4Address("10.9.9.9")}
    ipip = call(s, "ipip_add_tunnel", tunnel=tunnel)
    call(s, "sw_interface_set_flags", sw_if_index=ipip["sw_if_index"], flags=1)
    node.route("10.9.0.0/16", ipip["sw_if_index"])  # the tunnel's own destination through itself
    verdict, trace = evaluate(s, {"src": POD_A, "dst": "10.9.1.1", "proto": "tcp", "dport": 80}, node.pod_a)
    assert "encap on ipip0: ip-in-ip, outer 192.168.0.11 -> 10.9.9.9" in trace
    assert verdict == "deny" and "would enter tunnel ipip0" in trace[-1], trace
