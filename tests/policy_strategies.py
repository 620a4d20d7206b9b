"""Hypothesis strategies for differential tests of policy renderings.

`policy_cases()` draws a small but rich desired state (IP sets, tiers of policies, profiles,
workload endpoints), a `Config` and a list of packets; a test then checks that a rendering of
each endpoint's policy (the compiled `Program`, npol, acl, a VPP simulator, ...) agrees with
the oracle `policy.verdict.endpoint_verdict` on every packet. `PolicyCase` has `state`,
`config`, `endpoints` (WorkloadEndpointIDs, all in `state`), `packets` and `broken` (what was
broken on purpose, "" for nothing); its repr (`describe()`) lists everything, one rule a line.

Everything is drawn from small pools so that rules, IP sets and packets actually meet:

* IPv4 addresses: 10.0.0.0/29, 10.1.0.0/30, 192.168.0.0/30; IPv6: fd00::/126, fd01::/127;
* CIDRs: those addresses as /32 and /128, and prefixes over the pools (/0 up to /30, /126);
* ports: `PORTS` and ranges between two of them;
* protocols: tcp, udp, icmp, icmpv6, sctp, udplite, 4 (IP-in-IP), 47 (GRE).

Sizes stay small (a VPP simulator must program them): six IP sets (`IPSET_TYPES`: two NET,
two IP, two IP_AND_PORT) of 0-6 valid members, 0-3 tiers of 0-3 policies, 0-4 rules per
policy and direction, 0-2 profiles, 1-3 endpoints, 10-30 packets. About half the packets are
aimed at a rule of the case (made to meet its criteria, sometimes nudged off them), the rest
are random, usually with an endpoint's address on one side. About one case in ten breaks
something (`BREAKAGES`: a dangling reference, a set of the wrong type for its role, an object
carrying `error`, a malformed IP set member), so endpoints in error are covered too. Nothing
is filtered: every draw builds a case.

Smaller strategies and plain generators (from a `random.Random`) are public for reuse:
`rules()`, `rule_lists()`, `ipset_members(type)`, `configs()`, `packets(local)`,
`packet_lists(local, state, aim)`, `random_rule`, `random_packet`, `aimed_packet`, ...
`EXAMPLES` (env `POLICY_EXAMPLES`, default 2000) and `POLICY_SETTINGS` are for the tests.

Shrinking goes towards the plain case: no breakage, active endpoints, fewer rules, members
and packets, simpler rules.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from random import Random
from typing import Final, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from calico_vpp_driver.config import Config
from calico_vpp_driver.model.state import DesiredState
from calico_vpp_driver.model.types import (
    IPSET_IP,
    IPSET_IP_AND_PORT,
    IPSET_NET,
    IPSET_TYPE_NAMES,
    IcmpMatch,
    IPAddress,
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
from calico_vpp_driver.policy.verdict import Packet, rule_exists_for_family

T = TypeVar("T")

EXAMPLES: Final = int(os.environ.get("POLICY_EXAMPLES", "2000"))

# For the differential tests: no deadline (the first examples warm caches), and the generation
# of a whole state per example is legitimately "slow" and "large" for hypothesis.
POLICY_SETTINGS: Final = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ------------------------------------------------------------------------------------- pools


def _hosts(cidr: str) -> list[str]:
    net = ipaddress.ip_network(cidr)
    return [str(a) for a in net]


V4_ADDRS: Final = _hosts("10.0.0.0/29") + _hosts("10.1.0.0/30") + _hosts("192.168.0.0/30")
V6_ADDRS: Final = _hosts("fd00::/126") + _hosts("fd01::/127")
ADDRS: Final = V4_ADDRS + V6_ADDRS

V4_PREFIXES: Final = [
    "0.0.0.0/0",
    "10.0.0.0/8",
    "192.0.0.0/8",
    "10.0.0.0/16",
    "10.1.0.0/16",
    "10.0.0.0/24",
    "192.168.0.0/24",
    "10.0.0.0/29",
    "10.0.0.0/30",
    "10.0.0.4/30",
    "10.1.0.0/30",
    "192.168.0.0/30",
]
V6_PREFIXES: Final = ["::/0", "fd00::/8", "fd00::/64", "fd01::/64", "fd00::/126", "fd01::/127"]
V4_HOST_CIDRS: Final = [f"{a}/32" for a in V4_ADDRS]
V6_HOST_CIDRS: Final = [f"{a}/128" for a in V6_ADDRS]
CIDRS: Final = V4_PREFIXES + V6_PREFIXES + V4_HOST_CIDRS + V6_HOST_CIDRS

PORTS: Final = (0, 1, 22, 53, 79, 80, 81, 443, 4789, 65535)

PROTO_ICMP: Final = 1
PROTO_IPIP: Final = 4
PROTO_TCP: Final = 6
PROTO_UDP: Final = 17
PROTO_GRE: Final = 47
PROTO_ICMPV6: Final = 58
PROTO_SCTP: Final = 132
PROTO_UDPLITE: Final = 136
PROTOCOLS: Final = (
    PROTO_TCP,
    PROTO_UDP,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_SCTP,
    PROTO_UDPLITE,
    PROTO_IPIP,
    PROTO_GRE,
)
PORT_PROTOCOLS: Final = (PROTO_TCP, PROTO_UDP, PROTO_SCTP, PROTO_UDPLITE)
ICMP_PROTOCOLS: Final = (PROTO_ICMP, PROTO_ICMPV6)
ICMP_TYPES: Final = (0, 3, 8, 11, 128, 129, 1)
ICMP_CODES: Final = (0, 1)

# The IP sets every case defines (members drawn per case), by role.
NET_SET_IDS: Final = ("s:net0", "s:net1")
IP_SET_IDS: Final = ("s:ip0", "s:ip1")
PORT_SET_IDS: Final = ("n:port0", "svc:port1")
ADDR_SET_IDS: Final = NET_SET_IDS + IP_SET_IDS
IPSET_TYPES: Final = {
    **dict.fromkeys(NET_SET_IDS, IPSET_NET),
    **dict.fromkeys(IP_SET_IDS, IPSET_IP),
    **dict.fromkeys(PORT_SET_IDS, IPSET_IP_AND_PORT),
}
MISSING_SET_ID: Final = "s:missing"

NAMESPACE: Final = "ns1"

# ------------------------------------------------------------------------------------- values
#
# Hypothesis's cost is per draw (about 0.1 ms each on a slow machine), so what is many small
# choices (a rule's criteria, a packet, a set's members) is made by plain functions from a
# `random.Random` seeded by one draw, and hypothesis draws the shape around them: how many
# tiers, policies, rules, members, packets, and caps on how complex rules may be. Leaves are
# made so that lowering a count or a cap keeps a prefix of what was there, so shrinking still
# removes trailing rules, members and packets and simplifies rules.

SEEDS: Final = st.integers(0, 2**32 - 1)


def with_seed(options: Sequence[T]) -> st.SearchStrategy[tuple[T, Random]]:
    """One of `options` (shrinking towards the first) and a seeded `Random`: two draws."""
    return st.tuples(st.sampled_from(options), SEEDS.map(Random))


_NETS: Final[dict[str, IPNetwork]] = {c: ipaddress.ip_network(c) for c in CIDRS}
_CATCH_ALL: Final = {4: _NETS["0.0.0.0/0"], 6: _NETS["::/0"]}
_PREFIXES: Final = {4: V4_PREFIXES[1:], 6: V6_PREFIXES[1:]}
_HOST_CIDRS: Final = {4: V4_HOST_CIDRS, 6: V6_HOST_CIDRS}
_ADDRS: Final = {4: V4_ADDRS, 6: V6_ADDRS}


def random_cidr(rng: Random, version: int) -> IPNetwork:
    """A CIDR of the pools: the catch-all now and then, else a prefix or a host, equally."""
    roll = rng.random()
    if roll < 0.08:
        return _CATCH_ALL[version]
    pool = _PREFIXES[version] if roll < 0.54 else _HOST_CIDRS[version]
    return _NETS[rng.choice(pool)]


def random_cidrs(rng: Random) -> tuple[IPNetwork, ...]:
    """1-3 CIDRs, usually of one family, sometimes mixed."""
    version = 4 if rng.random() < 0.55 else 6
    out = [random_cidr(rng, version)]
    for _ in range(rng.choice((0, 0, 0, 1, 1, 2))):
        out.append(random_cidr(rng, version if rng.random() < 0.7 else 10 - version))
    return tuple(dict.fromkeys(out))


def random_port_range(rng: Random) -> PortRange:
    first = rng.choice(PORTS)
    if rng.random() < 0.7:
        return PortRange(first, first)
    second = rng.choice(PORTS)
    return PortRange(min(first, second), max(first, second))


def random_port_ranges(rng: Random) -> tuple[PortRange, ...]:
    return tuple(random_port_range(rng) for _ in range(rng.choice((1, 1, 1, 2, 3))))


def random_icmp(rng: Random) -> IcmpMatch:
    return IcmpMatch(rng.choice(ICMP_TYPES), None if rng.random() < 0.5 else rng.choice(ICMP_CODES))


def _random_set_ids(pool: Sequence[str]) -> Callable[[Random], tuple[str, ...]]:
    def pick(rng: Random) -> tuple[str, ...]:
        return tuple(rng.sample(pool, 1 if rng.random() < 0.6 else 2))  # two: the sets are ANDed

    return pick


# ------------------------------------------------------------------------------------- rules

_PORT_FIELDS: Final = (
    "src_ports",
    "not_src_ports",
    "dst_ports",
    "not_dst_ports",
    "src_named_port_ip_set_ids",
    "not_src_named_port_ip_set_ids",
    "dst_named_port_ip_set_ids",
    "not_dst_named_port_ip_set_ids",
    "dst_ip_port_set_ids",
)
_ICMP_FIELDS: Final = ("icmp", "not_icmp")

# Rule criteria: (relative weight, value maker).
CRITERIA: Final[dict[str, tuple[int, Callable[[Random], object]]]] = {
    "ip_version": (2, lambda rng: rng.choice((4, 6))),
    "protocol": (4, lambda rng: rng.choice(PROTOCOLS)),
    "not_protocol": (2, lambda rng: rng.choice(PROTOCOLS)),
    "src_net": (4, random_cidrs),
    "not_src_net": (2, random_cidrs),
    "dst_net": (4, random_cidrs),
    "not_dst_net": (2, random_cidrs),
    "src_ports": (2, random_port_ranges),
    "not_src_ports": (2, random_port_ranges),
    "dst_ports": (4, random_port_ranges),
    "not_dst_ports": (2, random_port_ranges),
    "src_named_port_ip_set_ids": (1, _random_set_ids(PORT_SET_IDS)),
    "not_src_named_port_ip_set_ids": (1, _random_set_ids(PORT_SET_IDS)),
    "dst_named_port_ip_set_ids": (2, _random_set_ids(PORT_SET_IDS)),
    "not_dst_named_port_ip_set_ids": (1, _random_set_ids(PORT_SET_IDS)),
    "src_ip_set_ids": (3, _random_set_ids(ADDR_SET_IDS)),
    "not_src_ip_set_ids": (2, _random_set_ids(ADDR_SET_IDS)),
    "dst_ip_set_ids": (3, _random_set_ids(ADDR_SET_IDS)),
    "not_dst_ip_set_ids": (2, _random_set_ids(ADDR_SET_IDS)),
    "dst_ip_port_set_ids": (2, _random_set_ids(PORT_SET_IDS)),
    "icmp": (2, random_icmp),
    "not_icmp": (2, random_icmp),
    "has_http_match": (1, lambda rng: True),
}
_CRITERIA_NAMES: Final = tuple(CRITERIA)
_CRITERIA_WEIGHTS: Final = tuple(w for w, _ in CRITERIA.values())
# Actions and criteria counts (repeats weigh), the first of each being where shrinking goes.
ACTIONS: Final = ("allow", "deny", "pass", "log", "allow", "deny", "allow")
CRITERIA_COUNTS: Final = (0, 1, 1, 1, 2, 2, 3, 4)
# Protocols given to rules with port criteria (Calico's validation: TCP, UDP, SCTP; UDP-Lite rarely).
_RULE_PORT_PROTOCOLS: Final = (PROTO_TCP, PROTO_TCP, PROTO_UDP, PROTO_UDP, PROTO_SCTP, PROTO_UDPLITE)
MAX_RULES: Final = 4
MAX_CRITERIA: Final = max(CRITERIA_COUNTS)


def random_rule(
    rng: Random,
    action: str | None = None,
    n_criteria: int | None = None,
    *,
    actions: Sequence[str] = ACTIONS,
    max_criteria: int = MAX_CRITERIA,
) -> Rule:
    """A rule with `n_criteria` distinct criteria (plus, usually, a protocol that fits them).

    Unset `action` / `n_criteria` are drawn from `rng` (`actions`, `CRITERIA_COUNTS`); at most
    `max_criteria` criteria are kept, the first ones drawn (a lower cap simplifies the rule).
    """
    if action is None:
        action = rng.choice(actions)
    if n_criteria is None:
        n_criteria = rng.choice(CRITERIA_COUNTS)
    n_criteria = min(n_criteria, max_criteria)
    chosen: dict[str, object] = {}
    while len(chosen) < n_criteria:
        name = rng.choices(_CRITERIA_NAMES, _CRITERIA_WEIGHTS)[0]
        if name not in chosen:
            chosen[name] = CRITERIA[name][1](rng)
    if "protocol" not in chosen and rng.random() < 0.85:
        # Calico's validation wants a protocol with ports and ICMP; leave it out now and then.
        if any(name in chosen for name in _PORT_FIELDS):
            chosen["protocol"] = rng.choice(_RULE_PORT_PROTOCOLS)
        elif any(name in chosen for name in _ICMP_FIELDS):
            version = chosen.get("ip_version", 0)
            icmp = (PROTO_ICMP,) if version == 4 else (PROTO_ICMPV6,) if version == 6 else ICMP_PROTOCOLS
            chosen["protocol"] = rng.choice(icmp)
    rule_id = rng.choice(("", "", "rid-a", "rid-b"))
    return Rule(action=action, rule_id=rule_id, **chosen)  # type: ignore[arg-type]


def random_rules(rng: Random, count: int, max_criteria: int = MAX_CRITERIA) -> tuple[Rule, ...]:
    """`count` (at most MAX_RULES) rules, each from its own seed: a lower count keeps a prefix."""
    seeds = [rng.getrandbits(32) for _ in range(MAX_RULES)]
    return tuple(random_rule(Random(seed), max_criteria=max_criteria) for seed in seeds[:count])


def _rule_shapes(actions: tuple[str, ...]) -> st.SearchStrategy[tuple[tuple[int, str], Random]]:
    # (criteria count, action), simplest first.
    return with_seed([(n, action) for n in CRITERIA_COUNTS for action in actions])


_RULE_SHAPES: Final[dict[tuple[str, ...], st.SearchStrategy[tuple[tuple[int, str], Random]]]] = {
    ACTIONS: _rule_shapes(ACTIONS)
}


@st.composite
def rules(draw: st.DrawFn, actions: Sequence[str] = ACTIONS) -> Rule:
    """One rule: any action of `actions` (repeats weigh), 0-4 criteria of all kinds (two draws)."""
    key = tuple(actions)
    if key not in _RULE_SHAPES:
        _RULE_SHAPES[key] = _rule_shapes(key)
    (n_criteria, action), rng = draw(_RULE_SHAPES[key])
    return random_rule(rng, action, n_criteria)


# (rule count, criteria cap), the simplest first; a cap of 0 (all rules match-all) is rare.
_CRITERIA_CAPS: Final = (0, 1, 2, 3, 4, 4, 4, 4)
_LIST_SHAPES: Final = with_seed([(n, cap) for n in range(MAX_RULES + 1) for cap in _CRITERIA_CAPS])


@st.composite
def rule_lists(draw: st.DrawFn) -> tuple[Rule, ...]:
    """0-4 rules (two draws: shrinking drops trailing rules and caps every rule's criteria)."""
    (count, cap), rng = draw(_LIST_SHAPES)
    return random_rules(rng, count, cap)


@st.composite
def profile_rule_lists(draw: st.DrawFn) -> tuple[Rule, ...]:
    """Like `rule_lists`, but ending now and then in an allow-all (like projectcalico-default-allow)."""
    (count, cap), rng = draw(_LIST_SHAPES)
    out = random_rules(rng, count, cap)
    return (*out, Rule()) if rng.random() < 0.4 else out


# ------------------------------------------------------------------------------------- IP sets

_NET_MEMBERS: Final = (
    [c for c in V4_PREFIXES if not c.endswith("/0")]
    + [c for c in V6_PREFIXES if not c.endswith("/0")]
    + V4_HOST_CIDRS * 2
    + V6_HOST_CIDRS * 2
    + ADDRS  # a bare address is a full-length prefix
)
_PORT_PROTOCOL_NAMES: Final = ("tcp", "tcp", "udp", "sctp")
MAX_MEMBERS: Final = 6


def random_member(rng: Random, set_type: int) -> str:
    """A valid member of an IP set of the type, in Felix's syntax."""
    if set_type == IPSET_NET:
        return rng.choice(_NET_MEMBERS)
    if set_type == IPSET_IP:
        return rng.choice(ADDRS)
    return f"{rng.choice(ADDRS)},{rng.choice(_PORT_PROTOCOL_NAMES)}:{rng.choice(PORTS)}"


def random_members(rng: Random, set_type: int, cap: int = MAX_MEMBERS) -> list[str]:
    """0-6 distinct valid members (at most `cap`: a lower cap keeps a prefix), families mixed."""
    count = min(cap, rng.randint(0, MAX_MEMBERS))
    return list(dict.fromkeys(random_member(rng, set_type) for _ in range(count)))


_MEMBER_CAPS: Final = with_seed((0, 1, 2, 3, 6, 6, 6, 6))  # empty sets stay possible, not common


@st.composite
def ipset_members(draw: st.DrawFn, set_type: int) -> list[str]:
    """0-6 valid members of the type, families mixed (two draws)."""
    cap, rng = draw(_MEMBER_CAPS)
    return random_members(rng, set_type, cap)


@st.composite
def ipsets_members(draw: st.DrawFn) -> dict[str, list[str]]:
    """Members for every set of IPSET_TYPES (two draws: a size cap for all, a seed).

    The second set of each type often shares members with the first, so that rules ANDing
    two sets can match.
    """
    cap, rng = draw(_MEMBER_CAPS)
    seeds = {set_id: rng.getrandbits(32) for set_id in IPSET_TYPES}
    out = {
        set_id: random_members(Random(seeds[set_id]), set_type, cap)
        for set_id, set_type in IPSET_TYPES.items()
    }
    for first, second in (NET_SET_IDS, IP_SET_IDS, PORT_SET_IDS):
        shared = Random(seeds[second] + 1)
        if out[first] and shared.random() < 0.5:
            extra = shared.sample(out[first], min(len(out[first]), shared.randint(1, 2)))
            out[second] = list(dict.fromkeys(out[second] + extra))
    return out


# ------------------------------------------------------------------------------------- config

_KNOBS: Final = st.sampled_from([(False, False), (True, False), (False, True), (True, True)])


@st.composite
def configs(draw: st.DrawFn) -> Config:
    """The default config (VXLAN port 4789), with the two Allow*PacketsFromWorkloads knobs drawn."""
    vxlan, ipip = draw(_KNOBS)
    return replace(
        Config(felix_hostname="node1"),
        allow_vxlan_packets_from_workloads=vxlan,
        allow_ipip_packets_from_workloads=ipip,
    )


# ------------------------------------------------------------------------------------- packets

# TCP/UDP and the family's own ICMP more likely; the other family's ICMP stays possible.
_PACKET_PROTOCOLS: Final = {
    version: (PROTO_TCP, PROTO_TCP, PROTO_UDP, PROTO_UDP, icmp, icmp, *PROTOCOLS[2:])
    for version, icmp in ((4, PROTO_ICMP), (6, PROTO_ICMPV6))
}
_IP: Final[dict[str, IPAddress]] = {a: ipaddress.ip_address(a) for a in ADDRS}


def random_packet(rng: Random, local: Sequence[str] = ()) -> Packet:
    """A packet of the pools, usually with one of the `local` addresses on one side.

    TCP, UDP, SCTP and UDP-Lite packets carry ports of PORTS, ICMP ones a type and a code,
    others (IP-in-IP, GRE) nothing.
    """
    if local and rng.random() < 0.8:
        mine = rng.choice(local)
        other = rng.choice(_ADDRS[_IP[mine].version])
        src, dst = (mine, other) if rng.random() < 0.5 else (other, mine)
    else:
        pool = _ADDRS[4 if rng.random() < 0.55 else 6]
        src, dst = rng.choice(pool), rng.choice(pool)
    protocol = rng.choice(_PACKET_PROTOCOLS[_IP[src].version])
    if protocol in PORT_PROTOCOLS:
        # The VXLAN port as destination a little more often.
        dport = 4789 if protocol == PROTO_UDP and rng.random() < 0.15 else rng.choice(PORTS)
        return Packet(_IP[src], _IP[dst], protocol, rng.choice(PORTS), dport)
    if protocol in ICMP_PROTOCOLS:
        icmp_type, icmp_code = rng.choice(ICMP_TYPES), rng.choice(ICMP_CODES)
        return Packet(_IP[src], _IP[dst], protocol, icmp_type=icmp_type, icmp_code=icmp_code)
    return Packet(_IP[src], _IP[dst], protocol)


def packets(local: Sequence[str] = ()) -> st.SearchStrategy[Packet]:
    """One packet (one draw), usually with one of the `local` addresses on one side."""
    local = tuple(local)
    return SEEDS.map(lambda seed: random_packet(Random(seed), local))


# Packets aimed at a rule: built to meet its positive criteria (address in its CIDRs or IP sets,
# address/protocol/port of a named-port or service set member, port in its ranges, its ICMP type
# and protocol), so that set and port matches are exercised and not left to chance; then, now
# and then, one field changed to another value of the pools, to probe the edges.

_PROTO_BY_NAME: Final = {"tcp": PROTO_TCP, "udp": PROTO_UDP, "sctp": PROTO_SCTP}
_POOL_IN: dict[str, list[str]] = {}
# (address, protocol, port) that a side of a packet may take; None: anything.
_Target = tuple[str, int | None, int | None]


def _pool_in(cidr: str) -> list[str]:
    """The pool addresses inside a CIDR (or equal to a bare address)."""
    out = _POOL_IN.get(cidr)
    if out is None:
        net = ipaddress.ip_network(cidr, strict=False)
        out = _POOL_IN[cidr] = [a for a in ADDRS if _IP[a] in net]
    return out


def _set_targets(state: DesiredState, set_id: str, version: int) -> list[_Target]:
    ipset = state.ipsets.get(set_id)
    if ipset is None:
        return []
    out: list[_Target] = []
    for member in sorted(ipset.members):  # sorted: str hashing is randomized, draws must not be
        if ipset.type == IPSET_IP_AND_PORT:
            addr, _, proto_port = member.rpartition(",")
            proto, _, port = proto_port.partition(":")
            if _IP[addr].version == version:
                out.append((addr, _PROTO_BY_NAME[proto], int(port)))
        else:
            out.extend((a, None, None) for a in _pool_in(member) if _IP[a].version == version)
    return out


def _aim_side(
    rng: Random, state: DesiredState, rule: Rule, side: str, version: int, protocol: int | None
) -> tuple[bool, _Target | None]:
    """What one side (src / dst) should be to meet the rule's positive criteria of that side.

    (True, None): the side is unconstrained; (False, None): nothing of the family meets them.
    """
    named = getattr(rule, f"{side}_named_port_ip_set_ids")
    ip_ports = rule.dst_ip_port_set_ids if side == "dst" else ()
    addr_sets = getattr(rule, f"{side}_ip_set_ids")
    nets = [n for n in getattr(rule, f"{side}_net") if n.version == version]
    if not (named or ip_ports or addr_sets or nets):
        return True, None
    if ip_ports:  # ANDed
        found = [set(_set_targets(state, set_id, version)) for set_id in ip_ports]
        targets = sorted(set.intersection(*found))
    elif named and rng.random() < 0.8:  # ORed (with the port ranges)
        targets = _set_targets(state, rng.choice(named), version)
    else:
        targets = [(a, None, None) for a in _ADDRS[version]]
    # Narrow down by the other criteria as far as something is left (best effort).
    filters: list[Callable[[_Target], bool]] = [lambda t: protocol is None or t[1] in (None, protocol)]
    for set_id in addr_sets:  # ANDed
        members = frozenset(a for a, _, _ in _set_targets(state, set_id, version))
        filters.append(lambda t, members=members: t[0] in members)  # type: ignore[misc]
    if nets:
        filters.append(lambda t: any(_IP[t[0]] in n for n in nets))
    for keep in filters:
        narrowed = [t for t in targets if keep(t)]
        if narrowed:
            targets = narrowed
    return (True, rng.choice(targets)) if targets else (False, None)


def _port_in(rng: Random, ranges: tuple[PortRange, ...]) -> int:
    r = rng.choice(ranges)
    return rng.choice([p for p in PORTS if r.first <= p <= r.last])


def aimed_packet(rng: Random, state: DesiredState, rule: Rule, local: Sequence[str] = ()) -> Packet:
    """A packet that meets `rule`'s positive criteria, most of the time (see above)."""
    versions = [rule.ip_version] if rule.ip_version else rng.sample((4, 6), 2)
    if rule.protocol in ICMP_PROTOCOLS:  # ICMP criteria need the family's own ICMP
        versions.sort(key=lambda v: v != (4 if rule.protocol == PROTO_ICMP else 6))
    versions = [v for v in versions if rule_exists_for_family(rule, v)] or versions
    for version in versions:  # the first family in which both sides can be met, else the last
        src_ok, src_t = _aim_side(rng, state, rule, "src", version, rule.protocol)
        dst_ok, dst_t = _aim_side(rng, state, rule, "dst", version, rule.protocol)
        if src_ok and dst_ok:
            break
    mine = [a for a in local if _IP[a].version == version]

    def address(target: _Target | None) -> str:
        if target is not None:
            return target[0]
        return rng.choice(mine if mine and rng.random() < 0.5 else _ADDRS[version])

    src, dst = address(src_t), address(dst_t)
    protocol = rule.protocol
    if protocol is None:
        from_sets = [t[1] for t in (dst_t, src_t) if t is not None and t[1] is not None]
        if from_sets:
            protocol = from_sets[0]
        elif rule.icmp or rule.not_icmp:
            protocol = PROTO_ICMP if version == 4 else PROTO_ICMPV6
        elif rule.src_ports or rule.dst_ports or rule.not_src_ports or rule.not_dst_ports:
            protocol = rng.choice(PORT_PROTOCOLS)
        else:
            protocol = rng.choice(_PACKET_PROTOCOLS[version])
    sport = dport = icmp_type = icmp_code = None
    if protocol in PORT_PROTOCOLS:
        sport = src_t[2] if src_t is not None else None
        dport = dst_t[2] if dst_t is not None else None
        if sport is None:
            sport = _port_in(rng, rule.src_ports) if rule.src_ports else rng.choice(PORTS)
        if dport is None:
            dport = _port_in(rng, rule.dst_ports) if rule.dst_ports else rng.choice(PORTS)
    elif protocol in ICMP_PROTOCOLS:
        icmp_type = rule.icmp.type if rule.icmp else rng.choice(ICMP_TYPES)
        icmp_code = rule.icmp.code if rule.icmp and rule.icmp.code is not None else rng.choice(ICMP_CODES)
    packet = Packet(_IP[src], _IP[dst], protocol, sport, dport, icmp_type, icmp_code)
    if rng.random() < 0.3:
        packet = _nudge(rng, packet)
    return packet


def _nudge(rng: Random, packet: Packet) -> Packet:
    """The packet with one field changed to another value of the pools."""
    pool = _ADDRS[packet.version]
    field = rng.choice(("src", "dst", "port", "icmp"))
    if field == "src":
        return replace(packet, src=_IP[rng.choice(pool)])
    if field == "dst":
        return replace(packet, dst=_IP[rng.choice(pool)])
    if field == "port" and packet.dst_port is not None:
        if rng.random() < 0.5:
            return replace(packet, src_port=rng.choice(PORTS))
        return replace(packet, dst_port=rng.choice(PORTS))
    if field == "icmp" and packet.icmp_type is not None:
        return replace(packet, icmp_type=rng.choice(ICMP_TYPES), icmp_code=rng.choice(ICMP_CODES))
    return random_packet(rng, [str(packet.src)])  # another protocol, same source family


_PACKET_COUNTS: Final = with_seed(range(10, 31))


@st.composite
def packet_lists(
    draw: st.DrawFn, local: Sequence[str] = (), state: DesiredState | None = None, aim: Sequence[Rule] = ()
) -> list[Packet]:
    """10-30 packets (two draws; fewer packets keep the first ones); half aimed at `aim`'s rules."""
    count, rng = draw(_PACKET_COUNTS)
    out = []
    for _ in range(count):
        seed = rng.getrandbits(32)  # one per packet: each packet's draws leave the others alone
        prng = Random(seed)
        if aim and state is not None and prng.random() < 0.5:
            out.append(aimed_packet(prng, state, prng.choice(aim), local))
        else:
            out.append(random_packet(prng, local))
    return out


# ------------------------------------------------------------------------------------- cases


@dataclass
class PolicyCase:
    """A desired state, a config, the workload endpoints to check, and packets to try."""

    state: DesiredState
    config: Config
    endpoints: list[WorkloadEndpointID]
    packets: list[Packet]
    # What was broken on purpose ("" = nothing); endpoints using it are in error.
    broken: str = ""

    def describe(self) -> str:
        s = self.state
        lines = [
            f"config: allow_vxlan={self.config.allow_vxlan_packets_from_workloads} "
            f"allow_ipip={self.config.allow_ipip_packets_from_workloads} vxlan_port={self.config.vxlan_port}",
            f"broken: {self.broken or '-'}",
        ]
        for ipset in s.ipsets.values():
            bad = f" bad={sorted(ipset.bad_members)}" if ipset.bad_members else ""
            lines.append(f"ipset {ipset.id} {IPSET_TYPE_NAMES[ipset.type]} {sorted(ipset.members)}{bad}")
        for pol in s.policies.values():
            err = f" error={pol.error!r}" if pol.error else ""
            lines.append(f"policy {pol.id}{err}")
            lines.extend(f"  in  {rule_str(r)}" for r in pol.inbound_rules)
            lines.extend(f"  out {rule_str(r)}" for r in pol.outbound_rules)
        for prof in s.profiles.values():
            err = f" error={prof.error!r}" if prof.error else ""
            lines.append(f"profile {prof.name}{err}")
            lines.extend(f"  in  {rule_str(r)}" for r in prof.inbound_rules)
            lines.extend(f"  out {rule_str(r)}" for r in prof.outbound_rules)
        for key in self.endpoints:
            ep = s.workload_endpoints[key]
            nets = [str(n) for n in ep.ipv4_nets + ep.ipv6_nets]
            err = f" error={ep.error!r}" if ep.error else ""
            lines.append(f"endpoint {key} state={ep.state} nets={nets}{err} profiles={list(ep.profile_ids)}")
            for t in ep.tiers:
                lines.append(
                    f"  tier {t.name} ({t.default_action}) in={[str(p) for p in t.ingress_policies]} "
                    f"out={[str(p) for p in t.egress_policies]}"
                )
        lines.extend(f"packet {p}" for p in self.packets)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"PolicyCase(\n{self.describe()}\n)"


def _value_str(value: object) -> str:
    if isinstance(value, PortRange):
        return str(value.first) if value.first == value.last else f"{value.first}-{value.last}"
    if isinstance(value, IcmpMatch):
        return f"type {value.type}" + ("" if value.code is None else f" code {value.code}")
    if isinstance(value, tuple):
        return ",".join(_value_str(v) for v in value)
    return str(value)


_DEFAULT_RULE: Final = Rule()


def rule_str(rule: Rule) -> str:
    """A rule on one line, only its set fields: `deny protocol=6 dst_ports=80,1-22`."""
    parts: list[str] = [rule.action]
    for name, value, default in zip(Rule._fields[1:], rule[1:], _DEFAULT_RULE[1:], strict=True):
        if value != default:
            parts.append(f"{name}={_value_str(value)}")
    return " ".join(parts)


_KINDS: Final = (
    "GlobalNetworkPolicy",
    "NetworkPolicy",
    "GlobalNetworkPolicy",
    "NetworkPolicy",
    "StagedGlobalNetworkPolicy",
    "StagedNetworkPolicy",
)
# What a broken case breaks (drawn only when a case is broken, one case in ten).
BREAKAGES: Final = (
    "unknown-policy",
    "unknown-profile",
    "unknown-staged-policy",  # benign: staged policies are never looked up
    "missing-set",  # a rule uses an IP set that does not exist
    "addr-set-as-port-set",  # an IP or NET set where an IP_AND_PORT set is needed
    "port-set-as-addr-set",
    "policy-error",
    "profile-error",
    "endpoint-error",
    "bad-member",  # an IP set with a malformed member
)
_BAD_MEMBERS: Final = ("10.0.0.1/33", "bogus", "fd00::1,icmp:1")


_EP_STATES: Final = ("active",) * 9 + ("down",)


def _endpoint(
    i: int,
    ep_state: str,
    rng: Random,
    v4: str,
    v6: str,
    tiers: list[tuple[str, str, list[PolicyID]]],
    profiles: dict[str, Profile],
) -> WorkloadEndpoint:
    infos = []
    for name, default, ids in tiers:
        if rng.random() < 0.15:
            continue  # the endpoint is not in this tier
        ingress = tuple(pid for pid in ids if rng.random() < 0.75)
        egress = tuple(pid for pid in ids if rng.random() < 0.75)
        infos.append(TierInfo(name, ingress, egress, default))
    names = sorted(profiles)
    profile_ids = tuple(rng.sample(names, min(len(names), rng.choice((1, 1, 2, 0)))))
    has_v4, has_v6 = rng.choice(((True, True), (True, True), (True, False), (False, True)))
    return WorkloadEndpoint(
        WorkloadEndpointID("k8s", f"{NAMESPACE}/pod{i}", "eth0"),
        name=f"calitestpod{i}",
        state=ep_state,
        profile_ids=profile_ids,
        ipv4_nets=(ipaddress.IPv4Network(f"{v4}/32"),) if has_v4 else (),
        ipv6_nets=(ipaddress.IPv6Network(f"{v6}/128"),) if has_v6 else (),
        tiers=tuple(infos),
    )


_ZERO_TO_TWO: Final = st.integers(0, 2)
_ZERO_TO_THREE: Final = st.integers(0, 3)
_ONE_TO_THREE: Final = st.integers(1, 3)
# (number of policies, default action), the simplest first.
_TIER_SHAPES: Final = st.sampled_from([(n, default) for n in range(4) for default in ("Deny", "Pass")])
_KIND: Final = st.sampled_from(_KINDS)
_EP_STATES_AND_SEEDS: Final = with_seed(_EP_STATES)
_TENTH: Final = st.sampled_from((False,) * 9 + (True,))
_BREAKAGES: Final = with_seed(BREAKAGES)


@st.composite
def policy_cases(draw: st.DrawFn) -> PolicyCase:
    """A whole case; see the module docstring. About 30 hypothesis draws."""
    config = draw(configs())
    members = draw(ipsets_members())

    # Tiers of policies: (name, default action, policy IDs).
    policies: dict[PolicyID, Policy] = {}
    tiers: list[tuple[str, str, list[PolicyID]]] = []
    for ti in range(draw(_ZERO_TO_THREE)):
        name = f"tier{ti}"
        n_policies, default = draw(_TIER_SHAPES)
        ids = []
        for pi in range(n_policies):
            kind = draw(_KIND)
            namespace = "" if "Global" in kind else NAMESPACE
            pid = PolicyID(f"{name}.p{pi}", namespace, kind)
            policies[pid] = Policy(pid, draw(rule_lists()), draw(rule_lists()), tier=name)
            ids.append(pid)
        tiers.append((name, default, ids))
    profiles = {}
    for i in range(draw(_ZERO_TO_TWO)):
        name = f"kns.prof{i}"
        profiles[name] = Profile(name, draw(profile_rule_lists()), draw(profile_rule_lists()))

    # Endpoints: unique addresses, a selection of the tiers' policies per direction, profiles.
    n_eps = draw(_ONE_TO_THREE)
    layout = Random(draw(SEEDS))
    v4 = layout.sample(V4_ADDRS, n_eps)
    v6 = layout.sample(V6_ADDRS, n_eps)
    endpoints = []
    for i in range(n_eps):
        ep_state, rng = draw(_EP_STATES_AND_SEEDS)
        endpoints.append(_endpoint(i, ep_state, rng, v4[i], v6[i], tiers, profiles))

    broken = ""
    if draw(_TENTH):
        broken, rng = draw(_BREAKAGES)
        _break(rng, broken, members, policies, profiles, endpoints)

    state = DesiredState()
    for set_id, set_members in members.items():
        state.update_ipset(set_id, IPSET_TYPES[set_id], set_members)
    for policy in policies.values():
        state.update_policy(policy)
    for profile in profiles.values():
        state.update_profile(profile)
    for ep in endpoints:
        state.update_workload_endpoint(ep)

    local = [str(n.network_address) for ep in endpoints for n in ep.ipv4_nets + ep.ipv6_nets]
    owners: list[Policy | Profile] = [*policies.values(), *profiles.values()]
    aim = [r for o in owners for r in o.inbound_rules + o.outbound_rules]
    pkts = draw(packet_lists(local, state, aim))
    return PolicyCase(state, config, [ep.id for ep in endpoints], pkts, broken)


def _break(
    rng: Random,
    what: str,
    members: dict[str, list[str]],
    policies: dict[PolicyID, Policy],
    profiles: dict[str, Profile],
    endpoints: list[WorkloadEndpoint],
) -> None:
    """Break one thing (in place); see BREAKAGES."""
    idx = rng.randrange(len(endpoints))
    ep = endpoints[idx]
    if what in ("unknown-policy", "unknown-staged-policy"):
        kind = "StagedGlobalNetworkPolicy" if what == "unknown-staged-policy" else "GlobalNetworkPolicy"
        pid = PolicyID("missing", "", kind)
        tiers = ep.tiers or (TierInfo("tier-extra"),)
        first = replace(tiers[0], ingress_policies=(*tiers[0].ingress_policies, pid))
        endpoints[idx] = replace(ep, tiers=(first, *tiers[1:]))
    elif what == "unknown-profile":
        endpoints[idx] = replace(ep, profile_ids=(*ep.profile_ids, "kns.missing"))
    elif what == "bad-member":
        set_id = rng.choice(sorted(members))
        members[set_id] = [*members[set_id], rng.choice(_BAD_MEMBERS)]
    elif what == "profile-error" and profiles:
        name = rng.choice(sorted(profiles))
        profiles[name] = replace(profiles[name], error="profile did not validate")
    elif what == "policy-error" and policies:
        pid = rng.choice(sorted(policies))
        policies[pid] = replace(policies[pid], error="policy did not validate")
    elif what in ("missing-set", "addr-set-as-port-set", "port-set-as-addr-set") and (policies or profiles):
        if what == "missing-set":
            rule = Rule(action="allow", src_ip_set_ids=(MISSING_SET_ID,))
        elif what == "addr-set-as-port-set":
            rule = Rule(action="allow", protocol=PROTO_TCP, dst_ip_port_set_ids=(rng.choice(ADDR_SET_IDS),))
        else:
            rule = Rule(action="deny", dst_ip_set_ids=(rng.choice(PORT_SET_IDS),))
        pids, names = sorted(policies), sorted(profiles)
        which = rng.randrange(len(pids) + len(names))
        if which < len(pids):
            pol = policies[pids[which]]
            policies[pol.id] = replace(pol, outbound_rules=(*pol.outbound_rules, rule))
        else:
            prof = profiles[names[which - len(pids)]]
            profiles[prof.name] = replace(prof, inbound_rules=(rule, *prof.inbound_rules))
    else:  # "endpoint-error", or nothing of the kind to break: break the endpoint itself
        endpoints[idx] = replace(ep, error=f"{what}: bad ipv4_nets")
