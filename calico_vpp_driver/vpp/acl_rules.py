"""Lowering a policy `Program` to one ACL of VPP's acl plugin: a first-match rule list.

The acl plugin is the engine that can hold any Calico policy without interpretation at
packet time, but its rules are poor: one source prefix, one destination prefix, one protocol
or any, one source-port (ICMP type) range and one destination-port (ICMP code) range, and
the first matching rule decides (no match: deny). Calico rules have lists of CIDRs, IP sets
ANDed together, negations of everything, named ports, several blocks with `pass` jumping
between them. `lower_program` builds an ACL that gives every packet the same verdict as
`policy.program.program_allows`; the differential tests check that on random states.

How (see `_Lowering`):

* Every match is a union of *boxes*: (family, source prefix, destination prefix, protocol or
  any, source-port range, destination-port range). Two boxes intersect into a box, never
  into pieces, so intersecting is cheap and exact. A box is exactly one ACL rule.
* A rule's region is R = P - N: P a union of positive boxes (the product of its positive
  criteria: CIDR lists, IP sets ANDed by prefix intersection, port ranges, named ports,
  ICMP), N the negated address parts (negated CIDRs and IP sets, negated named ports, a
  negated protocol when the protocol is otherwise free). Negated port ranges and negated
  ICMP type/code are cut out of the boxes directly (at most a few pieces per box).
* The list is built back to front. What follows the rule being lowered (the rest of its
  block, the block's end, the later blocks, `program.final`) is itself an already lowered,
  *total* list L (it ends with catch-alls). Packets in N must get what L gives them, so the
  rule becomes [L restricted to N (only where N meets P)] + [P -> action]; `pass` makes the
  target of P the lowered list of the next block instead of a single verdict. A total list
  restricted to a box is again total on that box, which is what makes the copies exact.
* A negated protocol is never enumerated (255 protocols): it is a negated box like the others.
* Clean-up: boxes that only hold delegated protocols are dropped (the ACL starts with
  permits for them), identical later matches and everything after a family's catch-all are
  dropped, and so are denies that no later permit overlaps (no match is a deny anyway).

Exactness limits: the lowering errs only towards denying more (fail closed), never towards
allowing more, and only in these cases:

* SCTP (132) and UDPLITE (136) port criteria. The acl plugin reads ports of TCP and UDP
  only (ICMP type/code too); every other protocol is matched with ports 0. An allow whose
  box needs specific SCTP/UDPLITE ports is dropped (those packets fall through to later
  rules: maybe allowed there, maybe denied), and a deny with such ports is widened to all
  ports of that protocol (which may also shadow later allows of it). Named ports with
  `sctp` members and copies of such boxes are treated the same way.
* Protocol number 0 in a rule (Calico does not accept it; acl reads 0 as "any protocol"):
  an allow of protocol 0 is dropped, a deny of protocol 0 is widened to any protocol.

Anything else (CIDRs, IP sets, negations, ICMP type/code, TCP/UDP ports, named ports,
`pass`, block ends, `final`) is exact. `AclTooLarge` is raised rather than building more
than `limit` rules; the check runs while building, on the list being built (an intermediate
list that is larger than the final one, which `pass` copies or dead rules can cause, also
counts).

Pure: no I/O; IP sets are read from the given `DesiredState` and parsed once per call.
A missing IP set, one of the wrong type for its role, one carrying `error`, or a malformed
member raises `policy.verdict.PolicyError`, as `program_allows` does (programs of endpoints
in error have no blocks and never get there).
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from typing import Final, NamedTuple

from ..model.state import DesiredState
from ..model.types import IPSET_IP, IPSET_IP_AND_PORT, IPSET_NET, IPSET_TYPE_NAMES, IPNetwork, PortRange, Rule
from ..policy.program import Program
from ..policy.verdict import (
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_SCTP,
    PROTO_TCP,
    PROTO_UDP,
    PROTO_UDPLITE,
    Packet,
    PolicyError,
    rule_exists_for_family,
)

__all__ = ["DEFAULT_LIMIT", "AclRule", "AclTooLarge", "acl_allows", "estimate_rules", "lower_program"]

DEFAULT_LIMIT: Final = 65536

# is_permit values of VPP's acl_rule.
ACL_DENY: Final = 0
ACL_PERMIT: Final = 1
ACL_PERMIT_REFLECT: Final = 2

_PORT_MAX: Final = 65535
_BITS: Final = {4: 32, 6: 128}
_ICMP_OF: Final = {4: PROTO_ICMP, 6: PROTO_ICMPV6}
# Protocols whose packets carry ports for Calico (verdict.PORT_PROTOCOLS) ...
_PORT_PROTOCOLS: Final = frozenset({PROTO_TCP, PROTO_UDP, PROTO_SCTP, PROTO_UDPLITE})
# ... and those of them whose ports the acl plugin cannot see (it matches them with ports 0).
_BLIND_PORT_PROTOCOLS: Final = frozenset({PROTO_SCTP, PROTO_UDPLITE})
_MEMBER_PROTOCOLS: Final = {"tcp": PROTO_TCP, "udp": PROTO_UDP, "sctp": PROTO_SCTP}
_ADDR_SET_TYPES: Final = frozenset({IPSET_NET, IPSET_IP})

# Work limits of the optional optimizations (exactness never depends on them).
_SHIELD_PAIRS: Final = 5_000  # |P| x |N| up to which shields are fitted to each negated box
_REDUNDANCY_STEPS: Final = 500  # per rule: list entries walked to find allows/denies already implied
_DEAD_DENY_STEPS: Final = 20_000  # box intersections spent looking for denies no permit follows


# ------------------------------------------------------------------------------------- public types


class AclRule(NamedTuple):
    """One rule of an ACL, in acl_add_replace's terms (TCP flags are never matched: 0/0).

    `src` and `dst` are of one family. `proto` 0 means any protocol, and then the port
    ranges are ignored by VPP; they are always full here. For ICMP the source range holds
    the type and the destination range the code.
    """

    is_permit: int  # 0 deny, 1 permit, 2 permit and create a reflexive session
    src: IPNetwork
    dst: IPNetwork
    proto: int
    sport_first: int = 0
    sport_last: int = _PORT_MAX
    dport_first: int = 0
    dport_last: int = _PORT_MAX

    def to_api(self) -> dict[str, int | IPNetwork]:
        """The `acl_rule` of VPP's acl_add_replace (prefixes as ipaddress networks)."""
        return {
            "is_permit": self.is_permit,
            "src_prefix": self.src,
            "dst_prefix": self.dst,
            "proto": self.proto,
            "srcport_or_icmptype_first": self.sport_first,
            "srcport_or_icmptype_last": self.sport_last,
            "dstport_or_icmpcode_first": self.dport_first,
            "dstport_or_icmpcode_last": self.dport_last,
            "tcp_flags_mask": 0,
            "tcp_flags_value": 0,
        }

    def __str__(self) -> str:
        action = {ACL_DENY: "deny", ACL_PERMIT: "permit", ACL_PERMIT_REFLECT: "permit+reflect"}.get(
            self.is_permit, f"action {self.is_permit}"
        )
        text = f"{action} {self.src} -> {self.dst}"
        if not self.proto:
            return text + " any"
        return (
            f"{text} proto {self.proto} sport {self.sport_first}-{self.sport_last}"
            f" dport {self.dport_first}-{self.dport_last}"
        )


class AclTooLarge(Exception):
    """The program needs more ACL rules than allowed (the caller must use another engine
    or fail closed). `count` is the size reached when the lowering stopped, so at least that."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"the ACL needs at least {count} rules; the limit is {limit}")
        self.count = count
        self.limit = limit


# ------------------------------------------------------------------------------------- boxes

# Internal verdicts of list entries (mapped to is_permit at the end).
_DENY: Final = 0
_ALLOW: Final = 1


class _Box(NamedTuple):
    """A set of packets one ACL rule can match. Addresses are inclusive integer intervals
    that are always CIDR-aligned prefixes. `proto` None = any protocol, and then the port
    ranges are always full (the acl plugin ignores ports for proto 0, so a box with "any
    protocol" but restricted ports could not be written as one rule; none is ever built).

    Ports are those Calico sees: real SCTP/UDPLITE ports included. Only the final clean-up
    maps boxes to what acl can see (see the module docstring)."""

    v: int
    slo: int
    shi: int
    dlo: int
    dhi: int
    proto: int | None
    splo: int
    sphi: int
    dplo: int
    dphi: int


_Entry = tuple[_Box, int]  # (box, _ALLOW / _DENY)


def _any(v: int, proto: int | None = None) -> _Box:
    top = (1 << _BITS[v]) - 1
    return _Box(v, 0, top, 0, top, proto, 0, _PORT_MAX, 0, _PORT_MAX)


_ANY: Final = {4: _any(4), 6: _any(6)}


def _meet(a: _Box, b: _Box) -> _Box | None:
    """The intersection of two boxes (None: empty). Prefix intervals either nest or are
    disjoint, so the interval intersection is again a prefix."""
    if a.v != b.v:
        return None
    slo = a.slo if a.slo > b.slo else b.slo
    shi = a.shi if a.shi < b.shi else b.shi
    if slo > shi:
        return None
    dlo = a.dlo if a.dlo > b.dlo else b.dlo
    dhi = a.dhi if a.dhi < b.dhi else b.dhi
    if dlo > dhi:
        return None
    if a.proto is None:
        proto = b.proto
    elif b.proto is None or b.proto == a.proto:
        proto = a.proto
    else:
        return None
    splo = a.splo if a.splo > b.splo else b.splo
    sphi = a.sphi if a.sphi < b.sphi else b.sphi
    if splo > sphi:
        return None
    dplo = a.dplo if a.dplo > b.dplo else b.dplo
    dphi = a.dphi if a.dphi < b.dphi else b.dphi
    if dplo > dphi:
        return None
    return _Box(a.v, slo, shi, dlo, dhi, proto, splo, sphi, dplo, dphi)


def _prefix_hull(lo: int, hi: int) -> tuple[int, int]:
    """The smallest prefix containing [lo, hi]."""
    k = (lo ^ hi).bit_length()
    base = lo >> k << k
    return base, base | ((1 << k) - 1)


def _hull(boxes: Sequence[_Box]) -> _Box:
    """The smallest box containing all of `boxes` (one family)."""
    first = boxes[0]
    slo, shi = _prefix_hull(min(b.slo for b in boxes), max(b.shi for b in boxes))
    dlo, dhi = _prefix_hull(min(b.dlo for b in boxes), max(b.dhi for b in boxes))
    proto = first.proto
    if any(b.proto != proto for b in boxes):
        return _Box(first.v, slo, shi, dlo, dhi, None, 0, _PORT_MAX, 0, _PORT_MAX)
    return _Box(
        first.v,
        slo,
        shi,
        dlo,
        dhi,
        proto,
        min(b.splo for b in boxes),
        max(b.sphi for b in boxes),
        min(b.dplo for b in boxes),
        max(b.dphi for b in boxes),
    )


def _full_ports(box: _Box) -> bool:
    return box.splo == 0 and box.sphi == _PORT_MAX and box.dplo == 0 and box.dphi == _PORT_MAX


def _inexact(box: _Box) -> bool:
    """A box acl cannot match as such: SCTP/UDPLITE ports, or protocol 0 (acl's "any")."""
    return box.proto == 0 or (box.proto in _BLIND_PORT_PROTOCOLS and not _full_ports(box))


def _widen(box: _Box) -> _Box:
    """The smallest box acl can match that contains an `_inexact` one (for denies)."""
    proto = None if box.proto == 0 else box.proto
    return box._replace(proto=proto, splo=0, sphi=_PORT_MAX, dplo=0, dphi=_PORT_MAX)


def _cut_ports(box: _Box, srange: tuple[int, int], drange: tuple[int, int]) -> list[_Box]:
    """`box` minus the port rectangle srange x drange (same addresses and protocol): at most
    four boxes. Only for boxes of one protocol (their ports mean something)."""
    if box.splo > srange[1] or box.sphi < srange[0] or box.dplo > drange[1] or box.dphi < drange[0]:
        return [box]
    out = []
    if box.splo < srange[0]:
        out.append(box._replace(sphi=srange[0] - 1))
    if box.sphi > srange[1]:
        out.append(box._replace(splo=srange[1] + 1))
    inner = box._replace(splo=max(box.splo, srange[0]), sphi=min(box.sphi, srange[1]))
    if box.dplo < drange[0]:
        out.append(inner._replace(dphi=drange[0] - 1))
    if box.dphi > drange[1]:
        out.append(inner._replace(dplo=drange[1] + 1))
    return out


# ------------------------------------------------------------------------------------- prefixes

_Interval = tuple[int, int]
_BIG: Final = 1 << 130  # larger than any address: bisect key for "any interval starting here"


def _interval(net: IPNetwork) -> _Interval:
    lo = int(net.network_address)
    return lo, lo | ((1 << (net.max_prefixlen - net.prefixlen)) - 1)


def _collapse(intervals: Iterable[_Interval]) -> list[_Interval]:
    """Sorted, disjoint prefixes covering the same addresses, siblings merged (fewer rules)."""
    out: list[_Interval] = []
    for lo, hi in sorted(intervals, key=lambda iv: (iv[0], -iv[1])):
        if out and hi <= out[-1][1]:
            continue  # inside the previous prefix
        out.append((lo, hi))
        while len(out) >= 2:
            (alo, ahi), (blo, bhi) = out[-2], out[-1]
            size = ahi - alo + 1
            if blo == ahi + 1 and bhi - blo + 1 == size and alo % (2 * size) == 0:
                out[-2:] = [(alo, bhi)]
            else:
                break
    return out


def _intersect(a: list[_Interval], b: list[_Interval]) -> list[_Interval]:
    """Both sorted and disjoint: the addresses in both (a sweep; overlapping prefixes nest)."""
    out: list[_Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _contains(intervals: list[_Interval], addr: int) -> bool:
    i = bisect_right(intervals, (addr, _BIG))
    return i > 0 and intervals[i - 1][1] >= addr


def _to_network(v: int, lo: int, hi: int) -> IPNetwork:
    plen = _BITS[v] - (hi - lo + 1).bit_length() + 1
    if v == 4:
        return ipaddress.IPv4Network((lo, plen))
    return ipaddress.IPv6Network((lo, plen))


def _merge_ranges(ranges: Iterable[PortRange]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for first, last in sorted((r.first, r.last) for r in ranges):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out


# ------------------------------------------------------------------------------------- lowering


class _Term(NamedTuple):
    """One alternative of a port criterion: a protocol (None = any), a port range, and for
    named ports the exact address it belongs to (None = the side's prefixes)."""

    proto: int | None
    lo: int
    hi: int
    addr: int | None


_NO_PORT_CRITERION: Final = (_Term(None, 0, _PORT_MAX, None),)


class _View(NamedTuple):
    """A lowered list, stored back to front: the entries rev[n-1], ..., rev[0] in order.

    Lists are built by appending to `rev` (prepending to the ACL), so a view taken earlier
    stays valid while the list grows; a block ending in "next" shares the list of the
    blocks after it."""

    rev: list[_Entry]
    n: int

    def forward(self) -> Iterator[_Entry]:
        rev = self.rev
        for i in range(self.n - 1, -1, -1):
            yield rev[i]


class _Lowering:
    def __init__(self, state: DesiredState, delegate: frozenset[int], limit: int) -> None:
        self.state = state
        self.delegate = delegate
        self.limit = limit
        # Intermediate lists may hold the two deny catch-alls that the clean-up removes.
        self.cap = limit + 2
        self._addr_sets: dict[str, dict[int, list[_Interval]]] = {}
        self._port_sets: dict[str, dict[int, list[tuple[int, int, int]]]] = {}

    # ------------------------------------------------------------------ IP sets

    def _ipset(self, set_id: str, allowed: frozenset[int]) -> set[str]:
        ipset = self.state.ipsets.get(set_id)
        if ipset is None:
            raise PolicyError(f"unknown IP set {set_id}")
        if ipset.error:
            raise PolicyError(ipset.error)
        if ipset.type not in allowed:
            wanted = "/".join(sorted(IPSET_TYPE_NAMES[t] for t in allowed))
            got = IPSET_TYPE_NAMES.get(ipset.type, str(ipset.type))
            raise PolicyError(f"IP set {set_id} has type {got}, rule needs {wanted}")
        return ipset.members

    def addr_set(self, set_id: str) -> dict[int, list[_Interval]]:
        """An IP or NET set as collapsed prefixes per family."""
        cached = self._addr_sets.get(set_id)
        if cached is not None:
            return cached
        members = self._ipset(set_id, _ADDR_SET_TYPES)
        strict_host = self.state.ipsets[set_id].type == IPSET_IP
        by_family: dict[int, list[_Interval]] = {4: [], 6: []}
        for member in members:
            try:
                net = ipaddress.ip_network(member, strict=False)  # host bits ignored, as verdict does
            except ValueError:
                raise PolicyError(f"IP set {set_id}: bad member {member!r}") from None
            if strict_host and net.prefixlen != net.max_prefixlen:
                raise PolicyError(f"IP set {set_id}: bad prefix length in {member!r}")
            by_family[net.version].append(_interval(net))
        out = {v: _collapse(ivs) for v, ivs in by_family.items()}
        self._addr_sets[set_id] = out
        return out

    def port_set(self, set_id: str) -> dict[int, list[tuple[int, int, int]]]:
        """An IP_AND_PORT set as sorted (address, protocol, port) per family."""
        cached = self._port_sets.get(set_id)
        if cached is not None:
            return cached
        members = self._ipset(set_id, frozenset({IPSET_IP_AND_PORT}))
        by_family: dict[int, set[tuple[int, int, int]]] = {4: set(), 6: set()}
        for member in members:
            addr_text, comma, proto_port = member.rpartition(",")
            proto, colon, port_text = proto_port.partition(":")
            try:
                if not comma or not colon or proto not in _MEMBER_PROTOCOLS:
                    raise ValueError
                addr = ipaddress.ip_address(addr_text)
                port = int(port_text)
                if not 0 <= port <= _PORT_MAX:
                    raise ValueError
            except ValueError:
                raise PolicyError(f"IP set {set_id}: bad IP_AND_PORT member {member!r}") from None
            by_family[addr.version].add((int(addr), _MEMBER_PROTOCOLS[proto], port))
        out = {v: sorted(s) for v, s in by_family.items()}
        self._port_sets[set_id] = out
        return out

    # ------------------------------------------------------------------ one rule's region

    def _positive_addrs(
        self, nets: tuple[IPNetwork, ...], set_ids: tuple[str, ...], v: int
    ) -> list[_Interval]:
        """CIDRs ORed, then ANDed with every IP set: as prefix intersections."""
        out = [(0, (1 << _BITS[v]) - 1)]
        if nets:
            out = _collapse(_interval(n) for n in nets if n.version == v)
        for set_id in set_ids:
            out = _intersect(out, self.addr_set(set_id)[v])
        return out

    def _negative_addrs(
        self, nets: tuple[IPNetwork, ...], set_ids: tuple[str, ...], v: int
    ) -> list[_Interval]:
        """Negated CIDRs and negated IP sets: the address must be in none, so one union."""
        ivs = [_interval(n) for n in nets if n.version == v]
        for set_id in set_ids:
            ivs.extend(self.addr_set(set_id)[v])
        return _collapse(ivs)

    def _port_terms(
        self,
        ranges: tuple[PortRange, ...],
        named: tuple[str, ...],
        v: int,
        protos: frozenset[int],
        side: list[_Interval],
    ) -> tuple[_Term, ...]:
        """A side's positive port criterion: its ranges ORed with its named ports."""
        if not ranges and not named:
            return _NO_PORT_CRITERION
        terms: set[_Term] = set()
        merged = _merge_ranges(ranges)
        for proto in protos:
            terms.update(_Term(proto, lo, hi, None) for lo, hi in merged)
        for set_id in named:
            for addr, proto, port in self.port_set(set_id)[v]:
                if proto in protos and _contains(side, addr):
                    terms.add(_Term(proto, port, port, addr))
        return tuple(sorted(terms, key=lambda t: (t.proto or 0, t.lo, t.hi, t.addr or 0)))

    def _service_terms(
        self, rule: Rule, v: int, protos: frozenset[int], dst: list[_Interval], dterms: tuple[_Term, ...]
    ) -> tuple[_Term, ...]:
        """dst_ip_port_set_ids: (destination, protocol, port) in every set, and in the
        destination port criterion if there is one."""
        common: set[tuple[int, int, int]] | None = None
        for set_id in rule.dst_ip_port_set_ids:
            members = set(self.port_set(set_id)[v])
            common = members if common is None else common & members
        terms: list[_Term] = []
        for addr, proto, port in sorted(common or ()):
            if proto not in protos or not _contains(dst, addr):
                continue
            if dterms is not _NO_PORT_CRITERION and not any(
                t.proto == proto and t.lo <= port <= t.hi and (t.addr is None or t.addr == addr)
                for t in dterms
            ):
                continue
            terms.append(_Term(proto, port, port, addr))
        return tuple(terms)

    def region(self, rule: Rule, v: int, drop_inexact: bool) -> tuple[Iterator[_Box], list[_Box]] | None:
        """The rule's match for family v as (positive boxes P, negated boxes N): R = P - N.

        P is generated lazily (it can be a large product; the caller stops at the limit).
        Mirrors `verdict._Matcher.matches` criterion by criterion. With `drop_inexact` (an
        allow), boxes acl cannot match exactly are left out (fail closed)."""
        if not rule_exists_for_family(rule, v):
            return None
        src = self._positive_addrs(rule.src_net, rule.src_ip_set_ids, v)
        dst = self._positive_addrs(rule.dst_net, rule.dst_ip_set_ids, v)
        if not src or not dst:
            return None

        # The protocols the rule can match (None: any). Port criteria, positive or negated,
        # only match packets with ports; ICMP criteria only the family's ICMP.
        protos: frozenset[int] | None = None if rule.protocol is None else frozenset({rule.protocol})
        src_ports = bool(
            rule.src_ports
            or rule.not_src_ports
            or rule.src_named_port_ip_set_ids
            or rule.not_src_named_port_ip_set_ids
        )
        dst_ports = bool(
            rule.dst_ports
            or rule.not_dst_ports
            or rule.dst_named_port_ip_set_ids
            or rule.not_dst_named_port_ip_set_ids
            or rule.dst_ip_port_set_ids
        )
        if src_ports or dst_ports:
            protos = _PORT_PROTOCOLS if protos is None else protos & _PORT_PROTOCOLS
        icmp_proto = _ICMP_OF[v]
        if rule.icmp is not None or rule.not_icmp is not None:
            protos = frozenset({icmp_proto}) if protos is None else protos & {icmp_proto}
        if protos is not None:
            # With the protocols enumerated, a negated protocol and the delegated ones are
            # simply left out; otherwise the negated protocol becomes a negated box below.
            protos = protos - self.delegate
            if rule.not_protocol is not None:
                protos = protos - {rule.not_protocol}
            if not protos:
                return None

        if rule.icmp is not None:
            itype, code = rule.icmp
            sterms: tuple[_Term, ...] = (_Term(icmp_proto, itype, itype, None),)
            dterms: tuple[_Term, ...] = (
                _Term(icmp_proto, code, code, None)
                if code is not None
                else _Term(icmp_proto, 0, _PORT_MAX, None),
            )
        else:
            port_protos = protos if protos is not None else _PORT_PROTOCOLS
            sterms = self._port_terms(rule.src_ports, rule.src_named_port_ip_set_ids, v, port_protos, src)
            dterms = self._port_terms(rule.dst_ports, rule.dst_named_port_ip_set_ids, v, port_protos, dst)
            if rule.dst_ip_port_set_ids:
                dterms = self._service_terms(rule, v, port_protos, dst, dterms)

        # Negated port ranges and ICMP: cut out of each box (rectangles in the port plane).
        cuts: list[tuple[tuple[int, int], tuple[int, int]]] = []
        cuts.extend(((lo, hi), (0, _PORT_MAX)) for lo, hi in _merge_ranges(rule.not_src_ports))
        cuts.extend(((0, _PORT_MAX), (lo, hi)) for lo, hi in _merge_ranges(rule.not_dst_ports))
        if rule.not_icmp is not None:
            itype, code = rule.not_icmp
            cuts.append(((itype, itype), (code, code) if code is not None else (0, _PORT_MAX)))

        # The port/protocol part of each alternative first (cut, and checked for exactness,
        # once), then its address prefixes: a dropped alternative never walks the addresses.
        shapes: list[tuple[_Box, list[_Interval], list[_Interval]]] = []
        for st in sterms:
            for dt in dterms:
                if st.proto is None:
                    proto = dt.proto
                elif dt.proto is None or dt.proto == st.proto:
                    proto = st.proto
                else:
                    continue
                choices: Sequence[int | None]
                if proto is not None:
                    choices = (proto,) if protos is None or proto in protos else ()
                else:
                    choices = (None,) if protos is None else sorted(protos)
                srcs = src if st.addr is None else [(st.addr, st.addr)]
                dsts = dst if dt.addr is None else [(dt.addr, dt.addr)]
                for p in choices:
                    pieces = [_Box(v, 0, 0, 0, 0, p, st.lo, st.hi, dt.lo, dt.hi)]
                    for srange, drange in cuts:
                        pieces = [q for b in pieces for q in _cut_ports(b, srange, drange)]
                    shapes.extend(
                        (piece, srcs, dsts) for piece in pieces if not (drop_inexact and _inexact(piece))
                    )

        def positive() -> Iterator[_Box]:
            for shape, srcs, dsts in shapes:
                for slo, shi in srcs:
                    for dlo, dhi in dsts:
                        yield shape._replace(slo=slo, shi=shi, dlo=dlo, dhi=dhi)

        full = (0, (1 << _BITS[v]) - 1)
        negative: list[_Box] = []
        for lo, hi in self._negative_addrs(rule.not_src_net, rule.not_src_ip_set_ids, v):
            negative.append(_Box(v, lo, hi, *full, None, 0, _PORT_MAX, 0, _PORT_MAX))
        for lo, hi in self._negative_addrs(rule.not_dst_net, rule.not_dst_ip_set_ids, v):
            negative.append(_Box(v, *full, lo, hi, None, 0, _PORT_MAX, 0, _PORT_MAX))
        for set_id in rule.not_src_named_port_ip_set_ids:
            for addr, proto, port in self.port_set(set_id)[v]:
                negative.append(_Box(v, addr, addr, *full, proto, port, port, 0, _PORT_MAX))
        for set_id in rule.not_dst_named_port_ip_set_ids:
            for addr, proto, port in self.port_set(set_id)[v]:
                negative.append(_Box(v, *full, addr, addr, proto, 0, _PORT_MAX, port, port))
        if rule.not_protocol is not None and any(shape.proto is None for shape, _, _ in shapes):
            negative.append(_any(v, rule.not_protocol))
        return positive(), negative

    # ------------------------------------------------------------------ lists

    def restrict(self, view: _View, box: _Box) -> list[_Entry]:
        """The list `view` restricted to `box`: decides every packet of `box` as `view` does
        (views are total), stopping at the first entry that covers the whole box."""
        out: list[_Entry] = []
        delegate = self.delegate
        for entry_box, action in view.forward():
            m = _meet(entry_box, box)
            if m is None:
                continue
            if m == box:
                out.append((m, action))
                break
            if m.proto is not None and m.proto in delegate:
                continue  # decided by the delegated permits at the head of the ACL
            out.append((m, action))
        return out

    def _decides_all(self, view: _View, box: _Box, action: int, budget: list[int]) -> bool:
        """Whether `view` gives `action` to every packet of `box` (False when unsure)."""
        delegate = self.delegate
        for entry_box, entry_action in view.forward():
            budget[0] -= 1
            if budget[0] < 0:
                return False
            m = _meet(entry_box, box)
            if m is None or (m != box and m.proto is not None and m.proto in delegate):
                continue
            if entry_action != action:
                return False
            if m == box:
                return True
        return False

    def _shields(self, emitted: list[_Box], negative: list[_Box]) -> Iterator[_Box]:
        """Boxes Y with N ∩ P ⊆ Y ⊆ N, one per negated box that meets P: the places where the
        continuation must be copied in front of P. Fitted to the actual intersections when
        that is cheap, else cut to the hull of P."""
        if not emitted or not negative:
            return
        delegate = self.delegate
        if len(emitted) * len(negative) <= _SHIELD_PAIRS:
            for n in negative:
                hits = [m for p in emitted if (m := _meet(p, n)) is not None]
                if hits:
                    y = _hull(hits)
                    if y.proto is None or y.proto not in delegate:
                        yield y
        else:
            hull = _hull(emitted)
            for n in negative:
                cut = _meet(n, hull)
                if cut is not None and (cut.proto is None or cut.proto not in delegate):
                    yield cut

    def rule(self, rule: Rule, cur: _View, nxt: _View) -> list[_Entry]:
        """The entries that lowering `rule` puts in front of `cur` (the rest of the program
        after the rule); `nxt` is the lowered list after the rule's block (target of pass)."""
        if rule.action not in ("allow", "deny", "pass"):
            raise ValueError(f"a program holds allow, deny and pass rules, not {rule.action!r}")
        action = _ALLOW if rule.action == "allow" else _DENY
        passes = rule.action == "pass"
        out: list[_Entry] = []
        budget = [_REDUNDANCY_STEPS]
        base = len(cur.rev)
        for v in (4, 6):
            found = self.region(rule, v, drop_inexact=rule.action == "allow")
            if found is None:
                continue
            positive, negative = found
            # P -> target, leaving out boxes where the rest already gives the same verdict.
            targets: list[_Entry] = []
            emitted: list[_Box] = []
            for p in positive:
                if passes:
                    targets.extend(self.restrict(nxt, p))
                elif not self._decides_all(cur, p, action, budget):
                    targets.append((p, action))
                else:
                    continue
                emitted.append(p)
                if base + len(out) + len(targets) > self.cap:
                    raise AclTooLarge(base + len(out) + len(targets), self.limit)
            # Packets of N that P would catch get the continuation's verdict first.
            for y in self._shields(emitted, negative):
                piece = self.restrict(cur, y)
                if not passes and all(a == action for _, a in piece):
                    continue  # the continuation agrees with the rule there: no shield needed
                out.extend(piece)
                if base + len(out) > self.cap:
                    raise AclTooLarge(base + len(out), self.limit)
            out.extend(targets)
        return out

    def program(self, program: Program) -> list[_Entry]:
        """The whole program as a total list (program space: before the clean-up)."""
        # Blocks after one that ends in "deny" and has no pass rule are never reached.
        blocks = []
        for block in program.blocks:
            blocks.append(block)
            if block.end == "deny" and not any(r.action == "pass" for r in block.rules):
                break
        final = _ALLOW if program.final == "allow" else _DENY
        after = _View([(_ANY[6], final), (_ANY[4], final)], 2)
        for block in reversed(blocks):
            nxt = after
            if block.end == "deny":
                rev: list[_Entry] = [(_ANY[6], _DENY), (_ANY[4], _DENY)]
            else:
                rev = nxt.rev  # the block falls through: its list continues with the next's
            for rule in reversed(block.rules):
                entries = self.rule(rule, _View(rev, len(rev)), nxt)
                rev.extend(reversed(entries))
            after = _View(rev, len(rev))
        return list(after.forward())


def _drop_dead_denies(boxes: list[tuple[_Box, int]]) -> list[tuple[_Box, int]]:
    """Without the denies that no later permit overlaps: what they match is denied anyway
    (by a later deny or by no match). Trailing denies (the block-end and final catch-alls)
    are the common case. Removing one never makes another needed (only permits count)."""
    kept: list[tuple[_Box, int]] = []
    later_permits: list[_Box] = []
    budget = _DEAD_DENY_STEPS
    for box, code in reversed(boxes):
        if code == ACL_DENY:
            if budget >= len(later_permits):
                budget -= len(later_permits)
                if not any(_meet(box, p) is not None for p in later_permits):
                    continue
        else:
            later_permits.append(box)
        kept.append((box, code))
    kept.reverse()
    return kept


def _clean(entries: list[_Entry], stateful: bool, delegate: frozenset[int], limit: int) -> list[AclRule]:
    """Program space to acl: delegated permits first, inexact boxes dropped/widened, dead
    entries and denies without a later permit removed, boxes written as rules."""
    permit = ACL_PERMIT_REFLECT if stateful else ACL_PERMIT
    boxes: list[tuple[_Box, int]] = [
        (_any(v, proto), ACL_PERMIT) for proto in sorted(delegate) for v in (4, 6)
    ]
    seen = {box for box, _ in boxes}
    closed: set[int] = set()  # families already decided by a catch-all
    for box, action in entries:
        if box.proto is not None and box.proto in delegate:
            continue
        if _inexact(box):
            if action == _ALLOW:
                continue  # fail closed: the packets fall through to later entries
            box = _widen(box)
        if box.v in closed or box in seen:
            continue  # an earlier entry with the same match (or a catch-all) already decides
        seen.add(box)
        boxes.append((box, permit if action == _ALLOW else ACL_DENY))
        if box == _ANY[box.v]:
            closed.add(box.v)
    boxes = _drop_dead_denies(boxes)
    if not boxes:
        # Deny everything, explicitly: an ACL with no rules says the same, but an explicit rule
        # cannot be mistaken for "nothing to enforce" by anyone reading `show acl-plugin acl`.
        boxes = [(_ANY[4], ACL_DENY), (_ANY[6], ACL_DENY)]
    if len(boxes) > limit:
        raise AclTooLarge(len(boxes), limit)
    nets: dict[tuple[int, int, int], IPNetwork] = {}

    def net(v: int, lo: int, hi: int) -> IPNetwork:
        key = (v, lo, hi)
        found = nets.get(key)
        if found is None:
            found = nets[key] = _to_network(v, lo, hi)
        return found

    return [
        AclRule(
            action,
            net(b.v, b.slo, b.shi),
            net(b.v, b.dlo, b.dhi),
            b.proto or 0,
            b.splo,
            b.sphi,
            b.dplo,
            b.dphi,
        )
        for b, action in boxes
    ]


# ------------------------------------------------------------------------------------- public API


def lower_program(
    state: DesiredState,
    program: Program,
    *,
    stateful: bool = True,
    delegate: frozenset[int] = frozenset(),
    limit: int = DEFAULT_LIMIT,
) -> tuple[AclRule, ...]:
    """One ACL (first match, no match = deny) equivalent to `program` for every packet.

    Allows become permit+reflect (2) when `stateful` (return traffic of an allowed flow must
    pass, as with Calico's conntrack), plain permits (1) otherwise; denies are 0.
    `delegate`: protocols another engine decides (e.g. npol for TCP/UDP); the ACL starts with
    plain permits for them (both families) and says nothing else about them.
    Raises `AclTooLarge` past `limit` rules, `PolicyError` for unusable IP sets.
    Exact except for the fail-closed cases of the module docstring.
    """
    lowering = _Lowering(state, frozenset(delegate), limit)
    entries = lowering.program(program)
    return tuple(_clean(entries, stateful, frozenset(delegate), limit))


def estimate_rules(state: DesiredState, program: Program) -> int:
    """A quick guess of the ACL's size, without lowering: the sum over rules of the product of
    their positive address expansions (an AND of sets counted as its smallest set), plus the
    negated entries. Not a bound in either direction (prefixes collapse, negations copy the
    rest of the list); it exists so that programs far beyond a limit are refused in
    microseconds instead of after seconds of set algebra."""
    ipsets = state.ipsets

    def side(nets: tuple[IPNetwork, ...], sets: tuple[str, ...]) -> int:
        n = max(1, len(nets))
        if sets:
            n *= max(1, min(len(ipsets[s].members) if s in ipsets else 0 for s in sets))
        return n

    total = 0
    for block in program.blocks:
        for r in block.rules:
            src = side(r.src_net, r.src_ip_set_ids + r.src_named_port_ip_set_ids)
            dst = side(r.dst_net, r.dst_ip_set_ids + r.dst_named_port_ip_set_ids + r.dst_ip_port_set_ids)
            negs = len(r.not_src_net) + len(r.not_dst_net)
            negs += sum(
                len(ipsets[s].members) for s in r.not_src_ip_set_ids + r.not_dst_ip_set_ids if s in ipsets
            )
            total += src * dst + negs
    return total


def _acl_ports(packet: Packet) -> tuple[int, int]:
    """What acl_fill_5tuple puts in the port fields: TCP/UDP ports, the family's ICMP type
    and code, zeros for every other protocol (SCTP and UDPLITE included)."""
    if packet.protocol in (PROTO_TCP, PROTO_UDP):
        return packet.src_port or 0, packet.dst_port or 0
    if packet.protocol == _ICMP_OF[packet.version]:
        return packet.icmp_type or 0, packet.icmp_code or 0
    return 0, 0


def acl_allows(rules: Iterable[AclRule], packet: Packet) -> bool:
    """Evaluate an ACL the way the acl plugin does (first match; proto 0 matches any protocol
    and ignores ports; no match = deny). For tests: the reference is `program_allows`.

    A packet should be physical: TCP/UDP with ports, ICMP with type and code (a missing one
    reads as 0 here, where Calico's matcher would see no ICMP type at all)."""
    sport, dport = _acl_ports(packet)
    version = packet.version
    for rule in rules:
        if rule.src.version != version or packet.src not in rule.src or packet.dst not in rule.dst:
            continue
        if rule.proto:
            if rule.proto != packet.protocol:
                continue
            if not (
                rule.sport_first <= sport <= rule.sport_last and rule.dport_first <= dport <= rule.dport_last
            ):
                continue
        return rule.is_permit != ACL_DENY
    return False
