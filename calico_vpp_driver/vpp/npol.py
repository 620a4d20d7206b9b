"""Lowering a `policy.program.Program` to npol objects (pure: no I/O).

What npol can and cannot say, and how each Calico construct is made exact
(`sim/README.md` "npol" has the VPP source behind each fact):

* npol only sees what cnat hands it: TCP, UDP and SCTP flows, and ICMP echo with the echo
  identifier in place of the ICMP type and code. Every other protocol (IP-in-IP, GRE, ICMP
  errors...) never reaches it, and its ICMP type/code filters compare the identifier. So the
  npol backend renders here only what TCP/UDP/SCTP packets see, and the acl plugin judges
  everything else on the same interface (`acl_rules.lower_program(delegate=NPOL_PROTOCOLS)`).
  Every npol direction starts with the `OTHER_PROTOCOLS_ALLOW` rule, which hands every
  non-TCP/UDP/SCTP packet that does reach npol (ICMP echo) to that ACL.
* A block (tier or profile) is one npol policy. Calico's pass leaves the block: npol's LOG
  action ends the evaluation of the current policy and continues with the next one, which
  is exactly that (npol's PASS would jump to the profiles). The end-of-tier drop is a final
  rule without criteria and action DENY. The program's final deny is the interface's
  policy default. npol's own profile stage is not used.
* A rule for one IP family without an address criterion gets a positive CIDR of the whole
  family (npol has no family filter; a CIDR of the other family never matches).
* Several `src_ip_set_ids` (AND in Calico, OR in npol) become one derived set holding their
  intersection; so do several `dst_ip_set_ids`. `dst_ip_port_set_ids` (AND) together with
  destination ports or named ports (which npol would OR with them) become one derived
  IP_AND_PORT set: the intersection, kept to the members whose port is in a range or whose
  (address, protocol, port) is in a named-port set.
* Rules that cannot match a TCP/UDP/SCTP packet (another protocol, an ICMP criterion) are
  left out of npol.

Sets are named by `SetKey`s: ("felix", id) mirrors a Felix set; ("and", type, ids) and
("ipport", ids, ranges, named ids) are derived. Rules are `NpolRuleSpec`s, values that name
sets by key (the renderer turns keys into npol ids when it sends them).
"""

from __future__ import annotations

import bisect
import ipaddress
import socket
import struct
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, TypeAlias

from ..model.types import IPSET_IP_AND_PORT, IPNetwork, IPSet, PortRange, Rule
from ..policy.program import Block, IdentityMemo, Program

# npol enums (npol.api).
NPOL_IP = 0
NPOL_IP_AND_PORT = 1
NPOL_NET = 2
ACTION_ALLOW = 0
ACTION_DENY = 1
ACTION_LOG = 2
ENTRY_CIDR = 0
ENTRY_PORT_RANGE = 1
ENTRY_PORT_IP_SET = 2
ENTRY_IP_SET = 3
FILTER_NONE = 0
FILTER_L4_PROTO = 3
DEFAULT_ALLOW = 0
DEFAULT_DENY = 1

PROTO_TCP = 6
PROTO_UDP = 17
PROTO_SCTP = 132
#: What npol judges; the acl plugin judges every other protocol on npol-backed interfaces.
NPOL_PROTOCOLS: frozenset[int] = frozenset({PROTO_TCP, PROTO_UDP, PROTO_SCTP})
_PROTO_BY_NAME = {"tcp": PROTO_TCP, "udp": PROTO_UDP, "sctp": PROTO_SCTP}

SetKey: TypeAlias = tuple[Any, ...]
# A member of an npol set: (family, packed address, prefix length) for NET sets,
# (family, packed address, protocol, port) for IP_AND_PORT sets.
Member: TypeAlias = tuple[Any, ...]


class Filter(NamedTuple):
    type: int
    value: int
    should_match: bool


class Entry(NamedTuple):
    is_src: bool
    is_not: bool
    type: int
    # ENTRY_CIDR: a network; ENTRY_PORT_RANGE: (start, end); ENTRY_*SET: a SetKey.
    data: Any


class NpolRuleSpec(NamedTuple):
    action: int
    filters: tuple[Filter, ...] = ()
    entries: tuple[Entry, ...] = ()

    def set_keys(self) -> tuple[SetKey, ...]:
        return tuple(e.data for e in self.entries if e.type in (ENTRY_IP_SET, ENTRY_PORT_IP_SET))

    def to_api(self, set_ids: Mapping[SetKey, int]) -> dict[str, Any]:
        """The `npol_rule` fields, with set keys resolved to npol set ids."""
        filters = [
            {"type": f.type, "value": f.value, "should_match": int(f.should_match)} for f in self.filters
        ]
        while len(filters) < 3:
            filters.append({"type": FILTER_NONE, "value": 0, "should_match": 0})
        matches = []
        for e in self.entries:
            if e.type == ENTRY_CIDR:
                data: dict[str, Any] = {"cidr": e.data}
            elif e.type == ENTRY_PORT_RANGE:
                data = {"port_range": {"start": e.data[0], "end": e.data[1]}}
            else:
                data = {"set_id": {"set_id": set_ids[e.data]}}
            matches.append({"is_src": e.is_src, "is_not": e.is_not, "type": e.type, "data": data})
        return {"action": self.action, "filters": filters, "matches": matches}


#: First rule of every npol direction: packets other than TCP/UDP/SCTP are the ACL's to judge.
OTHER_PROTOCOLS_ALLOW = NpolRuleSpec(
    ACTION_ALLOW, tuple(Filter(FILTER_L4_PROTO, p, False) for p in sorted(NPOL_PROTOCOLS))
)
#: The end-of-tier drop.
DENY_ALL = NpolRuleSpec(ACTION_DENY)

_FAMILY_ALL = {4: ipaddress.ip_network("0.0.0.0/0"), 6: ipaddress.ip_network("::/0")}


def _ranges(is_src: bool, is_not: bool, ranges: tuple[PortRange, ...]) -> list[Entry]:
    return [Entry(is_src, is_not, ENTRY_PORT_RANGE, (r.first, r.last)) for r in ranges]


def _nets(is_src: bool, is_not: bool, nets: tuple[IPNetwork, ...]) -> list[Entry]:
    return [Entry(is_src, is_not, ENTRY_CIDR, n) for n in nets]


def _sets(is_src: bool, is_not: bool, etype: int, ids: tuple[str, ...]) -> list[Entry]:
    """One entry per Felix set (npol ORs entries of a category, or, negated, needs all missed)."""
    return [Entry(is_src, is_not, etype, ("felix", s)) for s in sorted(set(ids))]


def _addr_sets(is_src: bool, ids: tuple[str, ...]) -> list[Entry]:
    """Calico ANDs the sets; npol ORs entries: one set, or the derived intersection."""
    if not ids:
        return []
    uniq = tuple(sorted(set(ids)))
    key: SetKey = ("felix", uniq[0]) if len(uniq) == 1 else ("and", NPOL_NET, uniq)
    return [Entry(is_src, False, ENTRY_IP_SET, key)]


def lower_rule(rule: Rule) -> NpolRuleSpec | None:
    """The npol rule for a program rule, as TCP/UDP/SCTP packets see it (None: never matches)."""
    if rule.protocol is not None and rule.protocol not in NPOL_PROTOCOLS:
        return None
    if rule.icmp is not None or rule.not_icmp is not None:
        return None  # needs an ICMP packet
    filters: list[Filter] = []
    if rule.protocol is not None:
        filters.append(Filter(FILTER_L4_PROTO, rule.protocol, True))
    if rule.not_protocol is not None and rule.not_protocol in NPOL_PROTOCOLS:
        if rule.protocol is None:
            filters.append(Filter(FILTER_L4_PROTO, rule.not_protocol, False))
        elif rule.protocol == rule.not_protocol:
            return None
    entries: list[Entry] = []
    entries += _nets(True, False, rule.src_net)
    entries += _nets(True, True, rule.not_src_net)
    entries += _nets(False, False, rule.dst_net)
    entries += _nets(False, True, rule.not_dst_net)
    if rule.ip_version and not rule.src_net and not rule.dst_net:
        entries.append(Entry(True, False, ENTRY_CIDR, _FAMILY_ALL[rule.ip_version]))
    entries += _addr_sets(True, rule.src_ip_set_ids)
    entries += _addr_sets(False, rule.dst_ip_set_ids)
    entries += _sets(True, True, ENTRY_IP_SET, rule.not_src_ip_set_ids)
    entries += _sets(False, True, ENTRY_IP_SET, rule.not_dst_ip_set_ids)
    # Source ports: ranges OR named-port sets (npol's own OR group), negations must miss all.
    entries += _ranges(True, False, rule.src_ports)
    entries += _sets(True, False, ENTRY_PORT_IP_SET, rule.src_named_port_ip_set_ids)
    entries += _ranges(True, True, rule.not_src_ports)
    entries += _sets(True, True, ENTRY_PORT_IP_SET, rule.not_src_named_port_ip_set_ids)
    # Destination ports, possibly folded with the service sets into one derived set.
    if rule.dst_ip_port_set_ids:
        ids = tuple(sorted(set(rule.dst_ip_port_set_ids)))
        named = tuple(sorted(set(rule.dst_named_port_ip_set_ids)))
        if len(ids) == 1 and not rule.dst_ports and not named:
            key: SetKey = ("felix", ids[0])
        else:
            key = ("ipport", ids, tuple(rule.dst_ports), named)
        entries.append(Entry(False, False, ENTRY_PORT_IP_SET, key))
    else:
        entries += _ranges(False, False, rule.dst_ports)
        entries += _sets(False, False, ENTRY_PORT_IP_SET, rule.dst_named_port_ip_set_ids)
    entries += _ranges(False, True, rule.not_dst_ports)
    entries += _sets(False, True, ENTRY_PORT_IP_SET, rule.not_dst_named_port_ip_set_ids)
    action = {"allow": ACTION_ALLOW, "deny": ACTION_DENY, "pass": ACTION_LOG}[rule.action]
    return NpolRuleSpec(action, tuple(filters), tuple(entries))


_lowered = IdentityMemo(lower_rule, 200_000)
_BLOCK_RULES: dict[Any, tuple[Block, tuple[NpolRuleSpec, ...]]] = {}


def block_rules(block: Block) -> tuple[NpolRuleSpec, ...]:
    """The npol policy's rules for a block (the end-of-tier drop included)."""
    hit = _BLOCK_RULES.get(block.key)
    if hit is not None and hit[0] is block:
        return hit[1]
    out = _block_rules(block)
    if len(_BLOCK_RULES) > 50_000:
        _BLOCK_RULES.clear()
    _BLOCK_RULES[block.key] = (block, out)
    return out


def _block_rules(block: Block) -> tuple[NpolRuleSpec, ...]:
    out: list[NpolRuleSpec] = []
    for rule in block.rules:
        spec = _lowered(rule)
        if spec is not None:
            out.append(spec)
    if block.end == "deny":
        out.append(DENY_ALL)
    return tuple(out)


# ------------------------------------------------------------------------------- the ACL's share

PROTO_UDPLITE = 136
_PORT_FIELDS = ("src_ports", "not_src_ports", "dst_ports", "not_dst_ports")


def _other_protocols_rule(rule: Rule) -> Rule | None:
    """The rule as packets other than TCP/UDP/SCTP see it (None: it never matches them).

    A port criterion needs a packet that carries ports: of those, only UDP-Lite is not npol's.
    Named-port and service sets hold TCP/UDP/SCTP members only, so for UDP-Lite a positive one
    never matches and a negated one always holds.
    """
    if rule.protocol is not None and rule.protocol in NPOL_PROTOCOLS:
        return None
    needs_port = any(getattr(rule, f) for f in _PORT_FIELDS) or bool(
        rule.src_named_port_ip_set_ids
        or rule.dst_named_port_ip_set_ids
        or rule.not_src_named_port_ip_set_ids
        or rule.not_dst_named_port_ip_set_ids
        or rule.dst_ip_port_set_ids
    )
    if not needs_port:
        if rule.not_protocol is not None and rule.not_protocol in NPOL_PROTOCOLS:
            return rule._replace(not_protocol=None)
        return rule
    if rule.protocol not in (None, PROTO_UDPLITE) or rule.not_protocol == PROTO_UDPLITE:
        return None
    if rule.src_named_port_ip_set_ids or rule.dst_named_port_ip_set_ids or rule.dst_ip_port_set_ids:
        # A positive named-port set is OR-ed with the ranges of its side; for UDP-Lite only the
        # ranges can match, so the side's ranges alone decide (a side with a set and no range
        # never matches).
        if rule.src_named_port_ip_set_ids and not rule.src_ports:
            return None
        if (rule.dst_named_port_ip_set_ids and not rule.dst_ports) or rule.dst_ip_port_set_ids:
            return None
    return rule._replace(
        protocol=PROTO_UDPLITE,
        not_protocol=None,
        src_named_port_ip_set_ids=(),
        dst_named_port_ip_set_ids=(),
        not_src_named_port_ip_set_ids=(),
        not_dst_named_port_ip_set_ids=(),
    )


_other_cut = IdentityMemo(_other_protocols_rule, 200_000)


_OTHER_BLOCKS: dict[Any, tuple[Block, Block]] = {}


def other_protocols_program(program: Program) -> Program:
    """The program cut to what the ACL judges on an npol interface: every rule as packets
    other than TCP/UDP/SCTP see it. Equal for every packet the ACL decides; smaller to lower,
    and unchanged by edits of TCP/UDP/SCTP rules (so the ACL is not rewritten for them)."""
    return Program(
        tuple(other_protocols_block(b) for b in program.blocks), program.final, program.denied_because
    )


def other_protocols_block(block: Block) -> Block:
    """One block as packets other than TCP/UDP/SCTP see it; the same object as long as the cut
    does not change (callers compare cuts by identity)."""
    hit = _OTHER_BLOCKS.get(block.key)
    if hit is not None and hit[0] is block:
        return hit[1]
    rules = []
    for rule in block.rules:
        cut = _other_cut(rule)
        if cut is not None:
            rules.append(cut)
    cut_block = Block(block.key, tuple(rules), block.end)
    if hit is not None and hit[1].rules == cut_block.rules and hit[1].end == cut_block.end:
        cut_block = hit[1]  # the same object as before: caches keyed by identity still hit
    if len(_OTHER_BLOCKS) > 50_000:
        _OTHER_BLOCKS.clear()
    _OTHER_BLOCKS[block.key] = (block, cut_block)
    return cut_block


# ------------------------------------------------------------------------------------ set members


def set_type(state_set: IPSet | None, key: SetKey) -> int:
    """The npol type of the set a key names."""
    if key[0] == "felix":
        return NPOL_IP_AND_PORT if state_set is not None and state_set.type == IPSET_IP_AND_PORT else NPOL_NET
    return NPOL_NET if key[0] == "and" else NPOL_IP_AND_PORT


def felix_sets(key: SetKey) -> tuple[str, ...]:
    """The Felix sets whose members a set key depends on."""
    if key[0] == "felix":
        return (key[1],)
    if key[0] == "and":
        return tuple(key[2])
    return tuple(key[1]) + tuple(key[3])


_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
_BITS = {4: 32, 6: 128}
_UNION = {4: "ip4", 6: "ip6"}


def parse_member(text: str, ip_and_port: bool) -> Member:
    """A Felix member string as an npol member value (the model validated it already):
    (family, packed address, prefix length) or (family, packed address, protocol, port).

    Host bits of a prefix are cleared (npol refuses them; Calico matches the network)."""
    if ip_and_port:
        addr, _, proto_port = text.rpartition(",")
        proto, _, port = proto_port.partition(":")
        v = 6 if ":" in addr else 4
        return (v, socket.inet_pton(_AF[v], addr), _PROTO_BY_NAME[proto], int(port))
    addr, slash, plen_text = text.partition("/")
    v = 6 if ":" in addr else 4
    bits = _BITS[v]
    packed = socket.inet_pton(_AF[v], addr)
    plen = int(plen_text) if slash else bits
    if plen < bits:
        value = int.from_bytes(packed, "big") >> (bits - plen) << (bits - plen)
        packed = value.to_bytes(bits // 8, "big")
    return (v, packed, plen)


_PROTO_NAMES: dict[int, str] = {number: name for name, number in _PROTO_BY_NAME.items()}


def member_forms(member: Member) -> tuple[str, ...]:
    """The plain texts Felix uses for this member value ("10.0.0.4" and "10.0.0.4/32",
    "10.0.0.0/24", "10.0.0.4,tcp:80"). Other texts of the same value (host bits set, IPv6
    written otherwise) are "odd": rare, but they alias a plain one."""
    v, packed = member[0], member[1]
    addr = socket.inet_ntop(_AF[v], packed)
    if len(member) == 4:
        return (f"{addr},{_PROTO_NAMES[member[2]]}:{member[3]}",)
    plen = member[2]
    return (addr, f"{addr}/{plen}") if plen == _BITS[v] else (f"{addr}/{plen}",)


def parse_members(texts: Iterable[str], ip_and_port: bool) -> tuple[list[Member], int]:
    """The member values of Felix member texts, and how many texts were odd (not a plain form
    of their value): while a set holds none, two texts of one value can only be the two
    plain forms, which `member_wanted` checks in O(1)."""
    values = []
    odd = 0
    pton, af4, plens = socket.inet_pton, socket.AF_INET, _V4_PLEN
    for text in texts:
        if not ip_and_port:
            # IPv4, the common case, without the round trip through text: inet_pton takes
            # only the four plain decimal octets, so the text is plain unless its length is
            # written oddly or it has host bits set.
            addr, slash, plen_text = text.partition("/")
            plen = plens.get(plen_text) if slash else 32
            if plen is not None and ":" not in addr:
                packed = pton(af4, addr)
                if plen < 32:
                    bits = int.from_bytes(packed, "big") >> (32 - plen) << (32 - plen)
                    network = bits.to_bytes(4, "big")
                    if network != packed:
                        odd += 1
                        packed = network
                values.append((4, packed, plen))
                continue
        member = parse_member(text, ip_and_port)
        values.append(member)
        if text not in member_forms(member):
            odd += 1
    return values, odd


_V4_PLEN = {str(n): n for n in range(33)}


def member_wanted(value: Member, texts: frozenset[str], odd: int, ip_and_port: bool) -> bool:
    """Whether a set whose member texts are `texts` (`odd` of them odd) still holds `value`
    under some text: npol's delete removes every copy of a value, so a value is deleted only
    when no remaining text maps to it. O(1) unless the set holds odd texts."""
    if any(form in texts for form in member_forms(value)):
        return True
    return bool(odd) and any(parse_member(t, ip_and_port) == value for t in texts)


def member_api(member: Member) -> dict[str, Any]:
    v, packed = member[0], member[1]
    address = {"af": 0 if v == 4 else 1, "un": {_UNION[v]: packed}}
    if len(member) == 4:
        return {"val": {"tuple": {"address": address, "l4_proto": member[2], "port": member[3]}}}
    return {"val": {"prefix": {"address": address, "len": member[2]}}}


#: vl_api_npol_ipset_member_t on the wire: the union npol_ipset_member_val, as long as its
#: largest arm (npol_three_tuple: a 17-byte vl_api_address_t, u8 l4_proto, u16 port).
MEMBER_WIRE_TYPE = "vl_api_npol_ipset_member_t"
MEMBER_WIRE_SIZE = 20
_AF_BYTE = {4: b"\x00", 6: b"\x01"}  # vl_api_address_family_t: ADDRESS_IP4, ADDRESS_IP6
_PAD_IP4 = bytes(12)  # an IPv4 address fills the first 4 of the address union's 16 bytes
_PREFIX_TAIL = [bytes((plen, 0, 0)) for plen in range(129)]  # prefix length, then the union's padding


def members_wire(members: Iterable[Member]) -> bytes:
    """`member_api` of each member, packed as VPP packs it (the `prefix` arm for a prefix, the
    `tuple` arm for an address, protocol and port), back to back: the hot path of a set's
    first programming, where hundreds of thousands of members go out."""
    v4_head, v4_tail = _AF_BYTE[4], _V4_PREFIX_TAIL
    wire: bytes = b"".join(
        [v4_head + m[1] + v4_tail[m[2]] if m[0] == 4 and len(m) == 3 else _member_wire(m) for m in members]
    )
    return wire


def _member_wire(m: Member) -> bytes:
    v, packed = m[0], m[1]
    tail = _PREFIX_TAIL[m[2]] if len(m) == 3 else bytes((m[2], m[3] >> 8, m[3] & 0xFF))
    wire: bytes = _AF_BYTE[v] + packed + (_PAD_IP4 if v == 4 else b"") + tail
    return wire


_V4_PREFIX_TAIL = [_PAD_IP4 + tail for tail in _PREFIX_TAIL[:33]]


#: vl_api_npol_policy_item_t on the wire: bool is_inbound, u32 rule_id.
POLICY_ITEM_WIRE_TYPE = "vl_api_npol_policy_item_t"
_POLICY_ITEM = struct.Struct(">?I")


def policy_items_wire(is_inbound: bool, rule_ids: Iterable[int]) -> bytes:
    """A policy's rule list (``{"is_inbound": ..., "rule_id": ...}`` each) packed as VPP packs
    it: a node's policies hold a hundred thousand items in all."""
    pack = _POLICY_ITEM.pack
    return b"".join([pack(is_inbound, rule_id) for rule_id in rule_ids])


def _span(member: Member) -> tuple[int, int, int]:
    """(family, first, last) address of a prefix member, as integers."""
    v, packed, plen = member[0], member[1], member[2]
    first = int.from_bytes(packed, "big")
    return v, first, first + (1 << (_BITS[v] - plen)) - 1


def _covered(a_set: set[Any], b_set: set[Any]) -> set[Any]:
    """The prefixes of A lying inside the union of B (sorted merged intervals, bisect)."""
    merged: dict[int, tuple[list[int], list[int]]] = {4: ([], []), 6: ([], [])}
    for v, first, last in sorted(_span(b) for b in b_set):
        starts, ends = merged[v]
        if ends and first <= ends[-1] + 1:
            ends[-1] = max(ends[-1], last)
        else:
            starts.append(first)
            ends.append(last)
    out = set()
    for a in a_set:
        v, first, last = _span(a)
        starts, ends = merged[v]
        i = bisect.bisect_right(starts, first) - 1
        if i >= 0 and last <= ends[i]:
            out.add(a)
    return out


def _intersect_nets(groups: list[set[Any]]) -> set[Any]:
    """Prefixes covering exactly the addresses in every group. Two prefixes are nested or
    disjoint, so A AND B is the prefixes of either inside the other's union."""
    result = groups[0]
    for other in groups[1:]:
        result = _covered(result, other) | _covered(other, result)
    return result


def _members_of(ipsets: Mapping[str, IPSet], set_id: str, ip_and_port: bool) -> set[Any]:
    ipset = ipsets.get(set_id)
    if ipset is None:
        return set()
    return {parse_member(m, ip_and_port) for m in ipset.members}


def derived_members(ipsets: Mapping[str, IPSet], key: SetKey) -> frozenset[Any]:
    """The members of a derived set, computed from the Felix sets it depends on."""
    if key[0] == "and":
        groups = [_members_of(ipsets, s, False) for s in key[2]]
        return frozenset(_intersect_nets(groups))
    ids, ranges, named = key[1], key[2], key[3]
    inter: set[Any] = _members_of(ipsets, ids[0], True)
    for s in ids[1:]:
        inter &= _members_of(ipsets, s, True)
    if ranges or named:
        named_members: set[Any] = set()
        for s in named:
            named_members |= _members_of(ipsets, s, True)
        inter = {m for m in inter if any(r.first <= m[3] <= r.last for r in ranges) or m in named_members}
    return frozenset(inter)


def sort_members(members: Iterable[Any]) -> list[Any]:
    """A stable order for sending (tests compare what was sent)."""
    return sorted(members)


__all__ = [
    "DENY_ALL",
    "NPOL_PROTOCOLS",
    "OTHER_PROTOCOLS_ALLOW",
    "Entry",
    "Filter",
    "NpolRuleSpec",
    "SetKey",
    "block_rules",
    "derived_members",
    "felix_sets",
    "lower_rule",
    "member_api",
    "members_wire",
    "other_protocols_block",
    "other_protocols_program",
    "parse_member",
    "policy_items_wire",
    "set_type",
    "sort_members",
]
