"""Tests for calico_vpp_driver.vpp.acl_rules: a policy Program lowered to one acl-plugin ACL.

A table of cases, one per Calico construct (each packet's expected verdict is checked against
both the reference `program_allows` and the lowered ACL), then the knobs (delegate, stateful,
limit), the documented fail-closed cases (SCTP/UDPLITE ports), and hypothesis properties:
on random states, programs and packets the ACL agrees with the program, except that for
SCTP/UDPLITE it may only deny more. A sample of ACLs also goes through the VPP simulator's
acl_add_replace and its rule matcher, so `to_api` and `acl_allows` are held to the simulator.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policy_strategies import (
    IPSET_TYPES,
    V4_ADDRS,
    V6_ADDRS,
    ipset_members,
    packets,
    policy_cases,
    rules,
)

from calico_vpp_driver.model.state import DesiredState
from calico_vpp_driver.model.types import (
    IPSET_IP,
    IPSET_IP_AND_PORT,
    IPSET_NET,
    IcmpMatch,
    IPNetwork,
    PortRange,
    Rule,
)
from calico_vpp_driver.policy.program import (
    Block,
    BlockEnd,
    Program,
    family_rules,
    program_allows,
    workload_program,
)
from calico_vpp_driver.policy.verdict import Packet, PolicyError
from calico_vpp_driver.sim import packet as simpacket
from calico_vpp_driver.sim.handlers import HANDLERS
from calico_vpp_driver.sim.state import U32_MAX, VppState
from calico_vpp_driver.vpp import acl_rules
from calico_vpp_driver.vpp.acl_rules import AclRule, AclTooLarge, acl_allows, lower_program

TCP, UDP, ICMP, ICMP6, SCTP, UDPLITE, IPIP, GRE = 6, 17, 1, 58, 132, 136, 4, 47

# ---------------------------------------------------------------------------------------------
# Builders.
# ---------------------------------------------------------------------------------------------


def nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


def ports(*spec: int | tuple[int, int]) -> tuple[PortRange, ...]:
    return tuple(PortRange(s, s) if isinstance(s, int) else PortRange(*s) for s in spec)


def make_state(sets: dict[str, tuple[int, Sequence[str]]] | None = None) -> DesiredState:
    state = DesiredState()
    for set_id, (set_type, members) in (sets or {}).items():
        state.update_ipset(set_id, set_type, list(members))
    return state


def block(*rules_: Rule, end: BlockEnd = "deny", key: str = "t") -> Block:
    """A block as the program compiler makes it: rules split per family the way Felix does."""
    out: list[Rule] = []
    for rule in rules_:
        out.extend(family_rules(rule))
    return Block(("tier", "ingress", key), tuple(out), end)


def tcp(src: str, dst: str, dport: int, sport: int = 40000) -> Packet:
    return Packet.tcp(src, dst, dport, sport)


def udp(src: str, dst: str, dport: int, sport: int = 40000) -> Packet:
    return Packet.udp(src, dst, dport, sport)


def icmp(src: str, dst: str, itype: int = 8, code: int = 0) -> Packet:
    return Packet.icmp(src, dst, itype, code)


def pkt(src: str, dst: str, proto: int, sport: int | None = None, dport: int | None = None) -> Packet:
    return Packet(ipaddress.ip_address(src), ipaddress.ip_address(dst), proto, sport, dport)


A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"
OUT = "11.0.0.1"  # outside 10/8
A6, B6, OUT6 = "fd00::1", "fd00::2", "fd01::1"

# ---------------------------------------------------------------------------------------------
# The table: one case per construct.
# ---------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    blocks: tuple[Block, ...]
    expect: list[tuple[Packet, bool]]
    sets: dict[str, tuple[int, Sequence[str]]] = field(default_factory=dict)
    final: str = "deny"
    max_rules: int | None = None  # a bound on the ACL's size where the lowering should be tight


SETS: dict[str, tuple[int, Sequence[str]]] = {
    "s:a": (IPSET_NET, ["10.0.0.0/24", "fd00::/64"]),
    "s:b": (IPSET_NET, ["10.0.0.128/25", "192.168.0.1/32", "fd00::1/128"]),
    "s:ip": (IPSET_IP, ["10.0.0.1", "10.1.0.1"]),
    "n:np": (IPSET_IP_AND_PORT, ["10.0.0.1,tcp:8080", "10.0.0.2,udp:53", "fd00::1,tcp:8080"]),
    "svc:1": (IPSET_IP_AND_PORT, ["10.0.0.1,tcp:80", "10.0.0.1,tcp:443", "10.0.0.2,udp:53"]),
    "svc:2": (IPSET_IP_AND_PORT, ["10.0.0.1,tcp:80", "10.0.0.2,udp:53", "10.0.0.3,tcp:80"]),
}

CASES = [
    Case(
        "cidr",
        (block(Rule(src_net=nets("10.0.0.0/8"))),),
        [(tcp(A, B, 80), True), (udp(C, B, 53), True), (tcp(OUT, B, 80), False), (tcp(A6, B6, 80), False)],
        max_rules=1,
    ),
    Case(
        "cidr list of both families",
        (block(Rule(src_net=nets("10.0.0.0/8", "192.168.0.0/16", "fd00::/64"))),),
        [(tcp(A6, B6, 80), True), (tcp(OUT6, B6, 80), False), (icmp("192.168.3.4", A), True)],
        max_rules=3,
    ),
    Case(
        "dst cidr",
        (block(Rule(dst_net=nets("10.0.0.2/32"))),),
        [(tcp(A, B, 80), True), (tcp(A, C, 80), False)],
    ),
    Case(
        "negated cidr (rule only exists for its family)",
        (block(Rule(not_src_net=nets("10.0.0.0/8"))),),
        [(tcp(OUT, A, 80), True), (tcp(A, B, 80), False), (tcp(A6, B6, 80), False)],
    ),
    Case(
        "negated cidr: the excluded packets reach the next rule",
        (block(Rule(not_src_net=nets("10.0.0.0/8")), Rule(protocol=TCP, dst_ports=ports(22))),),
        [(tcp(A, B, 22), True), (tcp(A, B, 80), False), (udp(OUT, A, 53), True), (tcp(A6, B6, 22), True)],
    ),
    Case(
        "negated dst cidr and positive cidr",
        (block(Rule(src_net=nets("10.0.0.0/8"), not_dst_net=nets("10.0.0.0/30"))),),
        [(tcp(A, "10.0.0.9", 80), True), (tcp(A, B, 80), False), (tcp(OUT, "10.0.0.9", 80), False)],
    ),
    Case(
        "ports",
        (block(Rule(protocol=TCP, dst_ports=ports(80, (8000, 8080)))),),
        [
            (tcp(A, B, 80), True),
            (tcp(A, B, 8080), True),
            (tcp(A, B, 8081), False),
            (udp(A, B, 80), False),
            (tcp(A6, B6, 8000), True),
        ],
        max_rules=4,
    ),
    Case(
        "ports without a protocol: only packets with ports",
        (block(Rule(dst_ports=ports(53))),),
        [
            (udp(A, B, 53), True),
            (tcp(A, B, 53), True),
            (icmp(A, B), False),
            (pkt(A, B, GRE), False),
            (udp(A, B, 54), False),
        ],
    ),
    Case(
        "source ports",
        (block(Rule(protocol=UDP, src_ports=ports((1000, 2000)))),),
        [(udp(A, B, 53, 1500), True), (udp(A, B, 53, 999), False), (tcp(A, B, 53, 1500), False)],
    ),
    Case(
        "negated ports",
        (block(Rule(protocol=TCP, not_dst_ports=ports(22, 23))),),
        [
            (tcp(A, B, 80), True),
            (tcp(A, B, 22), False),
            (tcp(A, B, 23), False),
            (tcp(A, B, 0), True),
            (udp(A, B, 80), False),
            (icmp(A, B), False),
        ],
        max_rules=4,
    ),
    Case(
        "negated ports without a protocol: only packets with ports",
        (block(Rule(not_src_ports=ports((0, 1023)))),),
        [
            (udp(A, B, 53, 40000), True),
            (udp(A, B, 53, 53), False),
            (icmp(A, B), False),
            (pkt(A, B, GRE), False),
        ],
    ),
    Case(
        "named ports ORed with port ranges",
        (block(Rule(protocol=TCP, dst_ports=ports(80), dst_named_port_ip_set_ids=("n:np",))),),
        [
            (tcp(C, A, 8080), True),
            (tcp(C, B, 8080), False),
            (tcp(C, "10.9.9.9", 80), True),
            (udp(C, B, 53), False),
            (tcp(B6, A6, 8080), True),
        ],
    ),
    Case(
        "named ports without a protocol",
        (block(Rule(dst_named_port_ip_set_ids=("n:np",))),),
        [(udp(C, B, 53), True), (tcp(C, B, 53), False), (tcp(C, A, 8080), True), (tcp(C, A, 80), False)],
    ),
    Case(
        "source named ports",
        (block(Rule(src_named_port_ip_set_ids=("n:np",))),),
        [(udp(B, C, 9999, 53), True), (udp(A, C, 9999, 53), False), (tcp(A, C, 1, 8080), True)],
    ),
    Case(
        "negated named ports",
        (block(Rule(protocol=TCP, not_dst_named_port_ip_set_ids=("n:np",))),),
        [(tcp(C, A, 8080), False), (tcp(C, A, 80), True), (tcp(C, B, 8080), True), (udp(C, A, 1), False)],
    ),
    Case(
        "IP sets are ANDed (and cut by CIDRs)",
        (block(Rule(src_ip_set_ids=("s:a", "s:b"))),),
        [
            (tcp("10.0.0.200", A, 80), True),
            (tcp(A, B, 80), False),
            (tcp("192.168.0.1", A, 80), False),
            (tcp(A6, B6, 80), True),
            (tcp(B6, A6, 80), False),
        ],
        max_rules=2,
    ),
    Case(
        "dst IP set and dst CIDR",
        (block(Rule(dst_net=nets("10.0.0.0/16"), dst_ip_set_ids=("s:ip",))),),
        [(tcp(C, A, 80), True), (tcp(C, "10.1.0.1", 80), False), (tcp(C, B, 80), False)],
        max_rules=1,
    ),
    Case(
        "negated IP sets: in none of them",
        (block(Rule(not_src_ip_set_ids=("s:a", "s:b"))),),
        [
            (tcp(A, B, 80), False),
            (tcp("192.168.0.1", B, 80), False),
            (tcp(OUT, B, 80), True),
            (tcp(OUT6, A6, 80), True),
            (tcp(A6, B6, 80), False),
        ],
    ),
    Case(
        "negated dst IP set with a following allow",
        (block(Rule(action="deny", not_dst_ip_set_ids=("s:ip",)), Rule(protocol=TCP)),),
        [(tcp(B, A, 80), True), (udp(B, A, 80), False), (tcp(A, B, 80), False)],
    ),
    Case(
        "dst IP-and-port sets: in every set",
        (block(Rule(dst_ip_port_set_ids=("svc:1", "svc:2"))),),
        [
            (tcp(C, A, 80), True),
            (tcp(C, A, 443), False),
            (udp(C, B, 53), True),
            (tcp(C, B, 53), False),
            (tcp(A, C, 80), False),
        ],
        max_rules=2,
    ),
    Case(
        "dst IP-and-port sets cut by dst ports",
        (block(Rule(protocol=TCP, dst_ports=ports(443), dst_ip_port_set_ids=("svc:1",))),),
        [(tcp(C, A, 443), True), (tcp(C, A, 80), False)],
        max_rules=1,
    ),
    Case(
        "protocol",
        (block(Rule(protocol=UDP)),),
        [(udp(A, B, 1), True), (tcp(A, B, 1), False), (pkt(A, B, GRE), False), (udp(A6, B6, 1), True)],
        max_rules=2,
    ),
    Case(
        "negated protocol (not enumerated)",
        (block(Rule(not_protocol=TCP)),),
        [
            (tcp(A, B, 80), False),
            (udp(A, B, 80), True),
            (pkt(A, B, GRE), True),
            (icmp(A, B), True),
            (tcp(A6, B6, 80), False),
        ],
        max_rules=4,
    ),
    Case(
        "negated protocol with a following allow",
        (block(Rule(not_protocol=TCP, src_net=nets("10.0.0.0/8")), Rule(protocol=TCP, dst_ports=ports(22))),),
        [(tcp(A, B, 22), True), (tcp(A, B, 80), False), (udp(A, B, 80), True), (udp(OUT, B, 80), False)],
    ),
    Case(
        "negated protocol with ports: left out of the enumeration",
        (block(Rule(not_protocol=UDP, dst_ports=ports(53))),),
        [(tcp(A, B, 53), True), (udp(A, B, 53), False)],
    ),
    Case(
        "icmp type and code (per family)",
        (block(Rule(icmp=IcmpMatch(8, 0))),),
        [
            (icmp(A, B, 8, 0), True),
            (icmp(A, B, 8, 1), False),
            (icmp(A, B, 0, 0), False),
            (tcp(A, B, 8), False),
            (icmp(A6, B6, 8, 0), True),
            (pkt(A6, B6, ICMP), False),
        ],
        max_rules=2,
    ),
    Case(
        "icmp type, any code",
        (block(Rule(protocol=ICMP, icmp=IcmpMatch(3))),),
        [
            (icmp(A, B, 3, 0), True),
            (icmp(A, B, 3, 13), True),
            (icmp(A, B, 8, 0), False),
            (icmp(A6, B6, 3), False),
        ],
    ),
    Case(
        "negated icmp type",
        (block(Rule(protocol=ICMP, not_icmp=IcmpMatch(8))),),
        [
            (icmp(A, B, 0, 0), True),
            (icmp(A, B, 8, 0), False),
            (icmp(A, B, 8, 1), False),
            (tcp(A, B, 80), False),
        ],
        max_rules=2,
    ),
    Case(
        "negated icmp type and code",
        (block(Rule(not_icmp=IcmpMatch(3, 1))),),
        [
            (icmp(A, B, 3, 0), True),
            (icmp(A, B, 3, 1), False),
            (icmp(A6, B6, 3, 1), False),
            (udp(A, B, 3), False),
        ],
    ),
    Case(
        "icmp and negated icmp",
        (block(Rule(icmp=IcmpMatch(3), not_icmp=IcmpMatch(3, 4))),),
        [
            (icmp(A, B, 3, 0), True),
            (icmp(A, B, 3, 4), False),
            (icmp(A, B, 3, 5), True),
            (icmp(A, B, 0, 0), False),
        ],
    ),
    Case(
        "pass goes to the next block",
        (
            block(Rule(action="pass", src_net=nets("10.0.0.0/8")), key="t1"),
            block(Rule(protocol=TCP, dst_ports=ports(80)), key="t2"),
        ),
        [(tcp(A, B, 80), True), (udp(A, B, 80), False), (tcp(OUT, B, 80), False)],
    ),
    Case(
        "pass with a negation, then the block's own rules",
        (
            block(Rule(action="pass", not_src_net=nets("10.0.0.0/8")), Rule(protocol=UDP), key="t1"),
            block(Rule(protocol=TCP), key="t2"),
        ),
        [(tcp(OUT, A, 1), True), (udp(OUT, A, 1), False), (udp(A, B, 1), True), (tcp(A, B, 1), False)],
    ),
    Case(
        "pass over several blocks",
        (
            block(Rule(action="pass", protocol=TCP), Rule(action="deny"), key="t1"),
            block(Rule(action="pass", dst_ports=ports(80)), key="t2"),
            block(Rule(src_net=nets("10.0.0.0/8")), key="t3"),
        ),
        [(tcp(A, B, 80), True), (tcp(OUT, B, 80), False), (tcp(A, B, 81), False), (udp(A, B, 80), False)],
    ),
    Case(
        "block end deny",
        (block(Rule(action="deny", protocol=TCP, dst_ports=ports(22))), block(Rule(), key="profile")),
        [(tcp(A, B, 22), False), (tcp(A, B, 80), False)],
    ),
    Case(
        "block end next",
        (
            block(Rule(action="deny", protocol=TCP, dst_ports=ports(22)), end="next"),
            block(Rule(), end="next", key="profile"),
        ),
        [(tcp(A, B, 22), False), (tcp(A, B, 80), True), (icmp(A6, B6), True)],
    ),
    Case(
        "final allow",
        (block(Rule(action="deny", protocol=TCP), end="next"),),
        [(tcp(A, B, 22), False), (udp(A, B, 80), True), (icmp(A6, B6), True)],
        final="allow",
    ),
    Case("no blocks: deny everything", (), [(tcp(A, B, 22), False), (icmp(A6, B6), False)]),
    Case(
        "deny before allow",
        (block(Rule(action="deny", src_net=nets("10.0.0.1/32")), Rule(src_net=nets("10.0.0.0/8"))),),
        [(tcp(A, B, 22), False), (tcp(B, A, 22), True)],
        max_rules=2,
    ),
    Case(
        "IPIP and GRE (protocols without ports)",
        (block(Rule(protocol=IPIP), Rule(action="deny", protocol=GRE), end="next"),),
        [(pkt(A, B, IPIP), True), (pkt(A, B, GRE), False), (udp(A, B, 1), True)],
        final="allow",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_construct(case: Case) -> None:
    state = make_state({**SETS, **case.sets})
    program = Program(case.blocks, final=case.final)  # type: ignore[arg-type]
    acl = lower_program(state, program)
    check_well_formed(acl)
    for packet, want in case.expect:
        assert program_allows(state, program, packet) == want, f"bad table entry: {packet}"
        assert acl_allows(acl, packet) == want, f"{packet}\n" + "\n".join(map(str, acl))
    if case.max_rules is not None:
        assert len(acl) <= case.max_rules, "\n".join(map(str, acl))


def check_well_formed(acl: Sequence[AclRule]) -> None:
    """What VPP's acl_add_list accepts, and what the lowering promises about its rules."""
    assert acl, "an ACL is never empty (deny-all is explicit)"
    for rule in acl:
        assert rule.is_permit in (0, 1, 2)
        assert rule.src.version == rule.dst.version
        assert 0 <= rule.proto <= 255
        assert 0 <= rule.sport_first <= rule.sport_last <= 65535
        assert 0 <= rule.dport_first <= rule.dport_last <= 65535
        if rule.proto == 0:
            assert (rule.sport_first, rule.sport_last, rule.dport_first, rule.dport_last) == (
                0,
                65535,
                0,
                65535,
            )
        if rule.proto in (SCTP, UDPLITE):  # acl sees ports 0 there: only full ranges are honest
            assert (rule.sport_first, rule.sport_last, rule.dport_first, rule.dport_last) == (
                0,
                65535,
                0,
                65535,
            )
    assert len({r[1:] for r in acl}) == len(acl), "no two rules with the same match"


# ---------------------------------------------------------------------------------------------
# Knobs: stateful, delegate, limit.
# ---------------------------------------------------------------------------------------------


def test_stateful_allows_reflect() -> None:
    state = make_state()
    program = Program((block(Rule(action="deny", protocol=TCP, dst_ports=ports(22)), Rule(protocol=TCP)),))
    reflect = lower_program(state, program)
    plain = lower_program(state, program, stateful=False)
    assert {r.is_permit for r in reflect} == {0, 2}
    assert {r.is_permit for r in plain} == {0, 1}
    assert [r._replace(is_permit=0) for r in reflect] == [r._replace(is_permit=0) for r in plain]


def test_delegate_permits_first_and_nothing_else_about_them() -> None:
    state = make_state(SETS)
    program = Program(
        (
            block(Rule(protocol=TCP, dst_ports=ports(80)), Rule(action="deny", not_protocol=UDP), key="t1"),
            block(Rule(src_ip_set_ids=("s:a",)), Rule(protocol=UDP, dst_named_port_ip_set_ids=("n:np",))),
        )
    )
    acl = lower_program(state, program, delegate=frozenset({TCP, UDP}))
    head = acl[:4]
    assert {(r.proto, r.src.version, r.is_permit) for r in head} == {
        (p, v, 1) for p in (TCP, UDP) for v in (4, 6)
    }
    assert all(r.src.prefixlen == 0 and r.dst.prefixlen == 0 for r in head)
    assert all(r.proto not in (TCP, UDP) for r in acl[4:])
    assert acl_allows(acl, tcp(OUT, A, 22)) and acl_allows(acl, udp(OUT6, A6, 1))
    assert not acl_allows(acl, icmp(A, B)) and not program_allows(state, program, icmp(A, B))
    assert not acl_allows(acl, pkt(A, B, GRE))


def test_limit() -> None:
    members = [f"10.{i // 200}.{i % 200}.1" for i in range(300)]
    state = make_state(
        {"s:many": (IPSET_IP, members), "s:many2": (IPSET_IP, [m[:-1] + "2" for m in members])}
    )
    program = Program((block(Rule(protocol=TCP, src_ip_set_ids=("s:many",), dst_ip_set_ids=("s:many2",))),))
    with pytest.raises(AclTooLarge) as err:
        lower_program(state, program, limit=1000)
    assert err.value.limit == 1000 and err.value.count > 1000
    assert len(lower_program(state, program, limit=90_000)) == 90_000
    with pytest.raises(AclTooLarge):
        lower_program(state, program, limit=89_999)


def test_limit_stops_early() -> None:
    # 40,000 x 40,000 sources and destinations: 1.6 billion rules if built.
    members = [
        f"10.{i // 250}.{i % 250}.{j}" for i in range(4000) for j in (1, 3, 5, 7, 9, 11, 13, 15, 17, 19)
    ]
    state = make_state({"s:huge": (IPSET_IP, members)})
    program = Program((block(Rule(protocol=TCP, src_ip_set_ids=("s:huge",), dst_ip_set_ids=("s:huge",))),))
    start = time.monotonic()
    with pytest.raises(AclTooLarge):
        lower_program(state, program)
    assert time.monotonic() - start < 10


def test_negation_of_a_huge_set_stops_early() -> None:
    members = [
        f"10.{i // 250}.{i % 250}.{j}" for i in range(8000) for j in (1, 3, 5, 7, 9, 11, 13, 15, 17, 19)
    ]
    state = make_state({"s:huge": (IPSET_IP, members)})
    program = Program((block(Rule(not_src_ip_set_ids=("s:huge",))),))
    start = time.monotonic()
    with pytest.raises(AclTooLarge):
        lower_program(state, program)
    assert time.monotonic() - start < 10


# ---------------------------------------------------------------------------------------------
# The fail-closed exceptions: SCTP and UDPLITE ports (acl reads them as 0).
# ---------------------------------------------------------------------------------------------


def test_sctp_port_allow_is_dropped() -> None:
    state = make_state()
    program = Program(
        (block(Rule(protocol=SCTP, dst_ports=ports(80)), Rule(protocol=SCTP, src_net=nets(A + "/32"))),)
    )
    acl = lower_program(state, program)
    check_well_formed(acl)
    assert program_allows(state, program, pkt(B, C, SCTP, 1, 80))
    assert not acl_allows(acl, pkt(B, C, SCTP, 1, 80))  # fail closed
    assert acl_allows(acl, pkt(A, C, SCTP, 1, 80))  # a later exact allow still applies


def test_sctp_port_deny_is_widened() -> None:
    state = make_state()
    program = Program((block(Rule(action="deny", protocol=UDPLITE, dst_ports=ports(80)), Rule()),))
    acl = lower_program(state, program)
    check_well_formed(acl)
    assert program_allows(state, program, pkt(A, B, UDPLITE, 1, 81))
    assert not acl_allows(acl, pkt(A, B, UDPLITE, 1, 81))  # fail closed
    assert not acl_allows(acl, pkt(A, B, UDPLITE, 1, 80))
    assert acl_allows(acl, tcp(A, B, 80)) and acl_allows(acl, pkt(A, B, SCTP, 1, 80))


def test_sctp_without_ports_is_exact() -> None:
    state = make_state()
    program = Program(
        (block(Rule(action="deny", protocol=SCTP, src_net=nets(A + "/32")), Rule(protocol=SCTP)),)
    )
    acl = lower_program(state, program)
    assert acl_allows(acl, pkt(B, C, SCTP, 1, 80)) and not acl_allows(acl, pkt(A, C, SCTP, 1, 80))


def test_sctp_named_port_allow_is_dropped() -> None:
    state = make_state({"n:s": (IPSET_IP_AND_PORT, ["10.0.0.1,sctp:9", "10.0.0.1,tcp:9"])})
    program = Program((block(Rule(dst_named_port_ip_set_ids=("n:s",))),))
    acl = lower_program(state, program)
    assert acl_allows(acl, tcp(B, A, 9))
    assert program_allows(state, program, pkt(B, A, SCTP, 1, 9)) and not acl_allows(
        acl, pkt(B, A, SCTP, 1, 9)
    )


# ---------------------------------------------------------------------------------------------
# Errors, API shape, the evaluator.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule",
    [
        Rule(src_ip_set_ids=("s:missing",)),
        Rule(src_ip_set_ids=("n:np",)),
        Rule(protocol=TCP, dst_named_port_ip_set_ids=("s:a",)),
        Rule(dst_ip_port_set_ids=("s:ip",)),
    ],
)
def test_unusable_ip_sets_raise_policy_error(rule: Rule) -> None:
    state = make_state(SETS)
    program = Program((block(rule),))
    with pytest.raises(PolicyError):
        program_allows(state, program, tcp(A, B, 80))
    with pytest.raises(PolicyError):
        lower_program(state, program)


def test_malformed_member_raises_policy_error() -> None:
    state = make_state({"s:bad": (IPSET_NET, ["10.0.0.0/8", "10.0.0.1/33"])})
    with pytest.raises(PolicyError):
        lower_program(state, Program((block(Rule(src_ip_set_ids=("s:bad",))),)))


def test_log_rules_are_not_program_rules() -> None:
    with pytest.raises(ValueError, match="log"):
        lower_program(make_state(), Program((Block(("t",), (Rule(action="log"),), "deny"),)))


def test_to_api() -> None:
    rule = AclRule(
        2, ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("0.0.0.0/0"), TCP, 0, 65535, 80, 80
    )
    assert rule.to_api() == {
        "is_permit": 2,
        "src_prefix": ipaddress.IPv4Network("10.0.0.0/8"),
        "dst_prefix": ipaddress.IPv4Network("0.0.0.0/0"),
        "proto": 6,
        "srcport_or_icmptype_first": 0,
        "srcport_or_icmptype_last": 65535,
        "dstport_or_icmpcode_first": 80,
        "dstport_or_icmpcode_last": 80,
        "tcp_flags_mask": 0,
        "tcp_flags_value": 0,
    }
    assert str(rule) == "permit+reflect 10.0.0.0/8 -> 0.0.0.0/0 proto 6 sport 0-65535 dport 80-80"


def test_acl_allows_follows_the_acl_plugin() -> None:
    any4, any6 = ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")
    # ICMP: type in the source range, code in the destination range.
    echo = [AclRule(1, any4, any4, ICMP, 8, 8, 0, 0)]
    assert acl_allows(echo, icmp(A, B, 8, 0)) and not acl_allows(echo, icmp(A, B, 8, 1))
    # Protocols other than TCP/UDP/ICMP are matched with ports 0.
    sctp0 = [AclRule(1, any4, any4, SCTP, 0, 0, 0, 0)]
    assert acl_allows(sctp0, pkt(A, B, SCTP, 5, 80))
    assert not acl_allows([AclRule(1, any4, any4, SCTP, 0, 65535, 80, 80)], pkt(A, B, SCTP, 5, 80))
    # Proto 0 matches anything, whatever the ports say; families never mix; no match = deny.
    assert acl_allows([AclRule(1, any4, any4, 0, 5, 5, 5, 5)], tcp(A, B, 80))
    assert not acl_allows([AclRule(1, any4, any4, 0)], tcp(A6, B6, 80))
    assert not acl_allows([AclRule(1, any6, any6, TCP, 0, 65535, 81, 81)], tcp(A6, B6, 80))
    # First match decides.
    assert not acl_allows([AclRule(0, any4, any4, TCP), AclRule(2, any4, any4, 0)], tcp(A, B, 80))


# ---------------------------------------------------------------------------------------------
# Properties.
# ---------------------------------------------------------------------------------------------

EXAMPLES = int(os.environ.get("ACL_EXAMPLES", "1000"))
PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
INEXACT = frozenset({SCTP, UDPLITE})
delegates = st.one_of(
    st.just(frozenset[int]()), st.frozensets(st.sampled_from([TCP, UDP, ICMP, ICMP6, SCTP]))
)


def check_against_program(
    state: DesiredState,
    program: Program,
    packets_: Sequence[Packet],
    stateful: bool,
    delegate: frozenset[int],
) -> tuple[AclRule, ...]:
    acl = lower_program(state, program, stateful=stateful, delegate=delegate)
    check_well_formed(acl)
    allow_codes = {0, 1, 2} if stateful else {0, 1}
    assert {r.is_permit for r in acl} <= allow_codes
    for packet in packets_:
        got = acl_allows(acl, packet)
        if packet.protocol in delegate:
            assert got, f"delegated protocol not permitted: {packet}"
            continue
        want = program_allows(state, program, packet)
        if packet.protocol in INEXACT:
            assert want or not got, f"ACL allows what the program denies: {packet}\n" + describe(acl)
        else:
            assert got == want, f"{packet}: program {want}, ACL {got}\n" + describe(acl)
    return acl


def describe(acl: Sequence[AclRule]) -> str:
    return "\n".join(f"  {i}: {r}" for i, r in enumerate(acl))


_sim_checks = {"n": 0}


def check_in_simulator(acl: Sequence[AclRule], packets_: Sequence[Packet]) -> None:
    """The ACL as VPP (the simulator) would take it from acl_add_replace, and its matching."""
    state = VppState()
    reply = HANDLERS["acl_add_replace"](
        state, {"acl_index": U32_MAX, "tag": "t", "count": len(acl), "r": [r.to_api() for r in acl]}
    )
    assert isinstance(reply, dict) and reply["retval"] == 0, reply
    sim_acl = state.acls.get(reply["acl_index"])
    assert sim_acl is not None
    sim_rules = sim_acl.rules
    for p in packets_:
        sp = simpacket.Packet(
            p.src,
            p.dst,
            p.protocol,
            sport=p.src_port or 0,
            dport=p.dst_port or 0,
            icmp_type=p.icmp_type,
            icmp_code=p.icmp_code or 0,
        )
        ports_ = simpacket.acl_ports(sp)
        hit = next((r for r in sim_rules if simpacket._acl_rule_matches(r, sp, ports_)), None)
        assert (hit is not None and hit.is_permit in (1, 2)) == acl_allows(acl, p), p


@pytest.mark.long_running
@PROPERTY_SETTINGS
@given(case=policy_cases(), stateful=st.booleans(), delegate=delegates, sim=st.integers(0, 9))
def test_acl_equals_program_on_policy_cases(
    case: Any, stateful: bool, delegate: frozenset[int], sim: int
) -> None:
    for key in case.endpoints:
        for direction in ("ingress", "egress"):
            program = workload_program(case.state, case.config, key, direction)
            acl = check_against_program(case.state, program, case.packets, stateful, delegate)
            if sim == 0:
                check_in_simulator(acl, case.packets)


@st.composite
def direct_programs(draw: st.DrawFn) -> tuple[DesiredState, Program, list[Packet]]:
    """Programs built directly from random rules, not split per family (the lowering must
    follow Calico's family rules itself), with random block ends and final verdicts."""
    state = DesiredState()
    for set_id, set_type in IPSET_TYPES.items():
        state.update_ipset(set_id, set_type, draw(ipset_members(set_type)))
    blocks = []
    for i in range(draw(st.integers(0, 3))):
        block_rules = draw(st.lists(rules(("allow", "deny", "pass")), max_size=4))
        end: BlockEnd = draw(st.sampled_from(["deny", "next"]))
        blocks.append(Block(("b", i), tuple(block_rules), end))
    final: Literal["allow", "deny"] = draw(st.sampled_from(["allow", "deny"]))
    local = draw(st.lists(st.sampled_from(V4_ADDRS + V6_ADDRS), min_size=1, max_size=3))
    pkts = draw(st.lists(packets(local), min_size=10, max_size=30))
    return state, Program(tuple(blocks), final=final), pkts


# The lowering's optional shortcuts have work limits; small programs never reach them, so
# some examples run with them forced: shields cut to the hull of P (instead of fitted to
# each negated box), and no search for rules the rest of the list already implies.
PATHS = {
    "default": {},
    "hull-shields": {"_SHIELD_PAIRS": 0},
    "no-redundancy-search": {"_REDUNDANCY_STEPS": 0, "_DEAD_DENY_STEPS": 0},
}


@pytest.mark.long_running
@PROPERTY_SETTINGS
@given(
    drawn=direct_programs(),
    stateful=st.booleans(),
    delegate=delegates,
    path=st.sampled_from(sorted(PATHS)),
)
def test_acl_equals_program_on_direct_programs(
    drawn: tuple[DesiredState, Program, list[Packet]], stateful: bool, delegate: frozenset[int], path: str
) -> None:
    state, program, pkts = drawn
    with contextlib.ExitStack() as stack:
        for name, value in PATHS[path].items():
            stack.enter_context(mock.patch.object(acl_rules, name, value))
        check_against_program(state, program, pkts, stateful, delegate)
