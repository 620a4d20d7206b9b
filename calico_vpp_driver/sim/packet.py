"""What the simulated VPP does with one packet: `evaluate(state, packet) -> (verdict, trace)`.

The packet enters on an interface (given, or the one the FIB of table 0 routes its
SOURCE address to) and goes through the nodes VPP would run, in VPP's order:

    rx interface: admin up? ip4/ip6 enabled?      (else dropped)
      uRPF (if configured on the rx interface)
      cnat-lookup -> cnat-input                    (only where the cnat feature is enabled)
          session hit: the cached rewrite and verdict; new flow: DNAT, then the npol rx hook
      acl-plugin-in                                (if the interface has input ACLs)
    ip4-lookup / ip6-lookup in the rx interface's table (longest prefix match)
    tx interface: admin up? IPv6 out of an Ethernet af_packet: its IPv6 link enabled?
      acl-plugin-out                               (if the interface has output ACLs)
      cnat-output -> cnat-writeback               (only where the cnat feature is enabled)
          new flow: the npol tx hook, then SNAT; the writeback adds the return session

(`cnat_node_feature.c`: cnat-input runs before acl-plugin-in-ip4-fa, cnat-output after
acl-plugin-out-ip4-fa; `npol_interface.c`: npol's input hook is appended after DNAT, its
output hook prepended before SNAT.)

npol's matcher is a transcription of `npol_match.c`, including what it does with the
5-tuple cnat builds (`cnat_node.h cnat_make_buffer_5tuple`): for ICMP echo both "ports"
are the echo identifier, so npol's ICMP type/code filters compare against the
identifier; for other ICMP types and for protocols other than TCP/UDP/SCTP the tuple's
protocol is 0, cnat-lookup answers IS_ERR and no hook (neither DNAT nor npol) runs.

State changes, as on a real VPP (unless `use_sessions=False`):

* cnat sessions (`state.cnat_sessions`): every new flow looked up where cnat is enabled
  gets one, holding its DNAT/SNAT rewrites and the npol verdicts; later packets of the
  flow reuse them (a denied flow stays denied after the policy is relaxed, until
  `cnat_session_purge` or `state.expire_sessions()`), and return packets bypass npol.
* acl reflexive sessions (`state.acl_sessions`) from permit+reflect rules.

The trace lists every decision in order; the last line says what decided the verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any, NamedTuple

from .state import (
    CNAT_IF_HOST,
    CNAT_IF_POD,
    CNAT_POLICY_DNAT,
    CNAT_POLICY_IF_PFX,
    CNAT_POLICY_K8S,
    CNAT_POLICY_NONE,
    NPOL_ALLOW,
    NPOL_CIDR,
    NPOL_DEFAULT_ALLOW,
    NPOL_DEFAULT_DENY,
    NPOL_DEFAULT_PASS,
    NPOL_DENY,
    NPOL_FILTER_ICMP_CODE,
    NPOL_FILTER_ICMP_TYPE,
    NPOL_FILTER_L4_PROTO,
    NPOL_FILTER_NONE,
    NPOL_IP,
    NPOL_IP_AND_PORT,
    NPOL_IP_SET,
    NPOL_LOG,
    NPOL_NET,
    NPOL_PASS,
    NPOL_PORT_IP_SET,
    NPOL_PORT_RANGE,
    PROTO_ICMP,
    PROTO_ICMP6,
    PROTO_NAMES,
    PROTO_NUMBERS,
    PROTO_SCTP,
    PROTO_TCP,
    PROTO_UDP,
    U32_MAX,
    URPF_LOOSE,
    URPF_STRICT,
    AclRule,
    AclSessionKey,
    CnatFlow,
    CnatSession,
    Interface,
    IPAddr,
    NpolRule,
    SnatEntry,
    Tuple5,
    VppState,
    stable_hash,
)

ALLOW = "allow"
DENY = "deny"

ACTION_NAMES = {NPOL_ALLOW: "allow", NPOL_DENY: "deny", NPOL_LOG: "log", NPOL_PASS: "pass"}
DEFAULT_NAMES = {NPOL_DEFAULT_ALLOW: "allow", NPOL_DEFAULT_DENY: "deny", NPOL_DEFAULT_PASS: "pass"}
ACL_ACTIONS = {0: "deny", 1: "permit", 2: "permit+reflect"}

ICMP4_ECHO = {0, 8}
ICMP6_ECHO = {128, 129}
ICMP4_ERRORS = {3, 4, 5, 6, 11, 12}  # cnat_node.h icmp_type_is_error_message
ICMP6_ERRORS = {1, 2, 3, 4}
# acl plugin (session_inlines.h): request type -> reply type of a reflexive session
ICMP4_REVERSE = {8: 0, 13: 14, 15: 16, 17: 18}
ICMP6_REVERSE = {128: 129, 139: 140}


@dataclass(frozen=True)
class Packet:
    """The first packet of a flow, as a probe describes it.

    `icmp_type` defaults to echo request (8, or 128 for ICMPv6) for ICMP packets;
    `icmp_id` is the echo identifier; `tcp_flags` defaults to SYN.
    """

    src: IPAddr
    dst: IPAddr
    proto: int
    sport: int = 0
    dport: int = 0
    icmp_type: int | None = None
    icmp_code: int = 0
    icmp_id: int = 0
    tcp_flags: int = 0x02

    @property
    def is_ip6(self) -> bool:
        return self.src.version == 6

    @property
    def is_icmp(self) -> bool:
        return self.proto == (PROTO_ICMP6 if self.is_ip6 else PROTO_ICMP)

    @property
    def itype(self) -> int:
        if self.icmp_type is not None:
            return self.icmp_type
        return 128 if self.is_ip6 else 8

    def describe(self) -> str:
        proto = PROTO_NAMES.get(self.proto, str(self.proto))
        if self.is_icmp:
            return (
                f"{self.src} -> {self.dst} {proto} type {self.itype} code {self.icmp_code} id {self.icmp_id}"
            )
        if self.proto in (PROTO_TCP, PROTO_UDP, PROTO_SCTP):
            return f"{self.src}:{self.sport} -> {self.dst}:{self.dport} {proto}"
        return f"{self.src} -> {self.dst} {proto}"


def parse_proto(value: str | int) -> int:
    if isinstance(value, int):
        return value
    text = value.strip().lower()
    if text.isdigit():
        return int(text)
    if text not in PROTO_NUMBERS:
        raise ValueError(f"unknown protocol {value!r}")
    return PROTO_NUMBERS[text]


def as_packet(packet: Packet | Mapping[str, Any]) -> Packet:
    """A Packet from a Packet or a mapping with the same keys (addresses may be strings,
    the protocol a name)."""
    if isinstance(packet, Packet):
        return packet
    icmp_type = packet.get("icmp_type")
    return Packet(
        src=ip_address(packet["src"]),
        dst=ip_address(packet["dst"]),
        proto=parse_proto(packet["proto"]),
        sport=int(packet.get("sport", 0)),
        dport=int(packet.get("dport", 0)),
        icmp_type=None if icmp_type is None else int(icmp_type),
        icmp_code=int(packet.get("icmp_code", 0)),
        icmp_id=int(packet.get("icmp_id", 0)),
        tcp_flags=int(packet.get("tcp_flags", 0x02)),
    )


def cnat_tuple(pkt: Packet) -> tuple[Tuple5 | None, str]:
    """cnat_make_buffer_5tuple: the flow key cnat (and npol) use, or None when its protocol
    stays 0 (cnat-lookup then answers IS_ERR)."""
    if pkt.proto in (PROTO_TCP, PROTO_UDP, PROTO_SCTP):
        return Tuple5(pkt.src, pkt.dst, pkt.proto, pkt.sport, pkt.dport), ""
    if pkt.is_icmp:
        echo = ICMP6_ECHO if pkt.is_ip6 else ICMP4_ECHO
        errors = ICMP6_ERRORS if pkt.is_ip6 else ICMP4_ERRORS
        if pkt.itype in echo:
            return Tuple5(pkt.src, pkt.dst, pkt.proto, pkt.icmp_id, pkt.icmp_id), (
                f"ICMP echo: both tuple ports are the echo identifier ({pkt.icmp_id})"
            )
        if pkt.itype in errors:
            return None, (
                f"ICMP error type {pkt.itype}: cnat keys it by the embedded packet, which a probe "
                "does not carry (the simulator treats it as untracked)"
            )
        return None, f"ICMP type {pkt.itype} is neither echo nor error: cnat leaves the tuple protocol 0"
    return None, f"protocol {pkt.proto} is not TCP/UDP/SCTP/ICMP echo: cnat leaves the tuple protocol 0"


def acl_ports(pkt: Packet) -> tuple[int, int]:
    """acl_fill_5tuple: TCP/UDP ports, ICMP type/code, zeros for anything else."""
    if pkt.is_icmp:
        return pkt.itype, pkt.icmp_code
    if pkt.proto in (PROTO_TCP, PROTO_UDP):
        return pkt.sport, pkt.dport
    return 0, 0


def _apply(pkt: Packet, tup: Tuple5) -> Packet:
    """The packet after a cnat rewrite to `tup` (ICMP keeps its type; the id follows sport)."""
    if pkt.is_icmp:
        return replace(pkt, src=tup.src, dst=tup.dst, icmp_id=tup.sport)
    return replace(pkt, src=tup.src, dst=tup.dst, sport=tup.sport, dport=tup.dport)


def _ifname(state: VppState, sw_if_index: int | None) -> str:
    if sw_if_index is None:
        return "VPP itself"
    return f"{state.if_name(sw_if_index)} ({sw_if_index})"


# ---------------------------------------------------------------------------------------
# npol (plugins/npol/npol_match.c)


def _addr_in_set(state: VppState, set_id: int, addr: IPAddr, trace: list[str], where: str) -> bool:
    """ipset_contains_ip4/6 for an IP_SET entry."""
    ipset, status = state.npol_ipset_view(set_id)
    if ipset is None:
        trace.append(
            f"    ! {where}: ipset {set_id} was never allocated (VPP reads past its pool); sim: empty"
        )
        return False
    if status == "freed":
        trace.append(f"    ! {where}: ipset {set_id} is deleted; its freed slot has no members")
    if ipset.type == NPOL_IP:
        return any(isinstance(m, IPv4Address | IPv6Address) and m == addr for m in ipset.members)
    if ipset.type == NPOL_NET:
        return any(
            isinstance(m, IPv4Network | IPv6Network) and m.version == addr.version and addr in m
            for m in ipset.members
        )
    trace.append(
        f"    ! {where}: ipset {set_id} has type {ipset.type}, not ip/net: npol says 'Wrong ipset type'"
    )
    return False


def _tuple_in_set(
    state: VppState, set_id: int, addr: IPAddr, proto: int, port: int, trace: list[str], where: str
) -> bool:
    """ipport_ipset_contains_ip4/6 for a PORT_IP_SET entry."""
    ipset, status = state.npol_ipset_view(set_id)
    if ipset is None:
        trace.append(
            f"    ! {where}: ipset {set_id} was never allocated (VPP reads past its pool); sim: empty"
        )
        return False
    if status == "freed":
        trace.append(f"    ! {where}: ipset {set_id} is deleted; its freed slot has no members")
    if ipset.type != NPOL_IP_AND_PORT:
        trace.append(
            f"    ! {where}: ipset {set_id} (type {ipset.type}) used as ip+port set: undefined in VPP;"
            " sim: no match"
        )
        return False
    return any(isinstance(m, tuple) and m == (addr, proto, port) for m in ipset.members)


def match_rule(state: VppState, rule: NpolRule, tup: Tuple5, trace: list[str]) -> tuple[bool, str]:
    """npol_match_rule: (matched, why not). Criteria are checked in VPP's order."""
    proto = tup.proto
    src_port, dst_port = tup.sport, tup.dport
    icmp_type, icmp_code = tup.sport, tup.dport  # port[0], port[1]
    is_icmp = proto in (PROTO_ICMP, PROTO_ICMP6)
    for f in rule.filters:
        if f.type == NPOL_FILTER_NONE:
            continue
        if f.type == NPOL_FILTER_L4_PROTO:
            if f.should_match and f.value != proto:
                return False, f"proto=={f.value} but packet proto {proto}"
            if not f.should_match and f.value == proto:
                return False, f"proto!={f.value}"
        elif f.type in (NPOL_FILTER_ICMP_TYPE, NPOL_FILTER_ICMP_CODE):
            name = "icmp-type" if f.type == NPOL_FILTER_ICMP_TYPE else "icmp-code"
            seen = icmp_type if f.type == NPOL_FILTER_ICMP_TYPE else icmp_code
            if not is_icmp:
                return False, f"{name} filter on a non-ICMP packet"
            if f.should_match and f.value != seen:
                return (
                    False,
                    f"{name}=={f.value} but the tuple's port[{0 if name == 'icmp-type' else 1}] is {seen}",
                )
            if not f.should_match and f.value == seen:
                return False, f"{name}!={f.value}"
    by_flag: dict[tuple[int, int], list[Any]] = {}
    for e in rule.entries:
        by_flag.setdefault((e.type, e.flags), []).append(e)

    def entries(etype: int, is_src: bool, is_not: bool) -> list[Any]:
        return by_flag.get((etype, (1 if is_src else 0) | (2 if is_not else 0)), [])

    for is_src in (True, False):
        side = "src" if is_src else "dst"
        addr = tup.src if is_src else tup.dst
        pos = entries(NPOL_CIDR, is_src, False)
        if pos and not any(e.cidr.version == addr.version and addr in e.cidr for e in pos):
            return False, f"{side} {addr} in none of {[str(e.cidr) for e in pos]}"
        for e in entries(NPOL_CIDR, is_src, True):
            if e.cidr.version == addr.version and addr in e.cidr:
                return False, f"{side} {addr} in negated {e.cidr}"
    for is_src in (True, False):
        side = "src" if is_src else "dst"
        addr = tup.src if is_src else tup.dst
        pos = entries(NPOL_IP_SET, is_src, False)
        if pos and not any(_addr_in_set(state, e.set_id, addr, trace, f"{side} set") for e in pos):
            return False, f"{side} {addr} in none of ipsets {[e.set_id for e in pos]}"
        for e in entries(NPOL_IP_SET, is_src, True):
            if _addr_in_set(state, e.set_id, addr, trace, f"{side} !set"):
                return False, f"{side} {addr} in negated ipset {e.set_id}"
    found = {True: False, False: False}
    for is_src in (True, False):
        side = "src" if is_src else "dst"
        port = src_port if is_src else dst_port
        for e in entries(NPOL_PORT_RANGE, is_src, False):
            if e.port_range[0] <= port <= e.port_range[1]:
                found[is_src] = True
        for e in entries(NPOL_PORT_RANGE, is_src, True):
            if e.port_range[0] <= port <= e.port_range[1]:
                return False, f"{side} port {port} in negated range {e.port_range[0]}-{e.port_range[1]}"
    for is_src in (True, False):
        side = "src" if is_src else "dst"
        addr = tup.src if is_src else tup.dst
        port = src_port if is_src else dst_port
        for e in entries(NPOL_PORT_IP_SET, is_src, False):
            if _tuple_in_set(state, e.set_id, addr, proto, port, trace, f"{side} port set"):
                found[is_src] = True
        for e in entries(NPOL_PORT_IP_SET, is_src, True):
            if _tuple_in_set(state, e.set_id, addr, proto, port, trace, f"{side} !port set"):
                return False, f"{side} ({addr}, {proto}, {port}) in negated ip+port set {e.set_id}"
    for is_src in (True, False):
        side = "src" if is_src else "dst"
        port = src_port if is_src else dst_port
        ranges = entries(NPOL_PORT_RANGE, is_src, False)
        sets = entries(NPOL_PORT_IP_SET, is_src, False)
        if (ranges or sets) and not found[is_src]:
            return False, (
                f"{side} port {port} in none of the port ranges"
                f" {[f'{a}-{b}' for a, b in (e.port_range for e in ranges)]}"
                f" or ip+port sets {[e.set_id for e in sets]}"
            )
    return True, ""


def _match_policy(
    state: VppState, policy_id: int, direction_rx: bool, tup: Tuple5, trace: list[str], label: str
) -> tuple[int, int | None]:
    """npol_match_policy: (action of the first matching rule, rule id) or (-1, None)."""
    policy, status = state.npol_policy_view(policy_id)
    if policy is None:
        trace.append(f"  ! {label} {policy_id} was never allocated (VPP reads past its pool); sim: no rules")
        return -1, None
    if status == "freed":
        trace.append(f"  ! {label} {policy_id} is deleted; its freed slot has no rules")
    rule_ids = policy.rx if direction_rx else policy.tx
    if not rule_ids:
        trace.append(f"  {label} {policy_id}: no {'rx' if direction_rx else 'tx'} rules")
    for rule_id in rule_ids:
        rule, rstatus = state.npol_rule_view(rule_id)
        if rule is None:
            trace.append(f"  ! {label} {policy_id} rule {rule_id}: never allocated; sim: skipped")
            continue
        if rstatus == "freed":
            trace.append(
                f"  ! {label} {policy_id} rule {rule_id} is deleted; a release VPP reads its"
                f" freed slot: no filters, no entries, action {ACTION_NAMES.get(rule.action, rule.action)}"
                " (matches everything)"
            )
        matched, why = match_rule(state, rule, tup, trace)
        action = ACTION_NAMES.get(rule.action, str(rule.action))
        if matched:
            trace.append(f"  {label} {policy_id} rule {rule_id} ({action}): match")
            return rule.action, rule_id
        trace.append(f"  {label} {policy_id} rule {rule_id} ({action}): no match: {why}")
    return -1, None


def npol_verdict(state: VppState, sw_if_index: int, is_inbound: bool, tup: Tuple5, trace: list[str]) -> str:
    """npol_match_func as called by npol_cnat_slow_path_input/output: "allow" or "deny".

    An interface without npol configuration is not evaluated (allow). The hook's action
    starts at 0 = NPOL_ACTION_DENY, so every path that returns without setting it (a
    PASS in a profile, a profile default of PASS or of an unknown value) denies.
    """
    where = f"npol {'rx' if is_inbound else 'tx'} on {_ifname(state, sw_if_index)}"
    conf = state.npol_if.get(sw_if_index)
    if conf is None:
        trace.append(f"{where}: interface has no npol configuration: not evaluated (allow)")
        return ALLOW
    d = is_inbound != bool(conf.invert_rx_tx)
    policies = conf.rx_policies if d else conf.tx_policies
    policy_default = conf.policy_default_rx if d else conf.policy_default_tx
    profile_default = conf.profile_default_rx if d else conf.profile_default_tx
    lists = "rx" if d else "tx"
    trace.append(
        f"{where}: {lists} policies {policies}"
        + (" (invert_rx_tx)" if conf.invert_rx_tx else "")
        + f", policy default {DEFAULT_NAMES.get(policy_default, policy_default)}, profiles {conf.profiles},"
        f" profile default {DEFAULT_NAMES.get(profile_default, profile_default)}; tuple {tup}"
    )
    go_profiles = False
    for policy_id in policies:
        action, rule_id = _match_policy(state, policy_id, d, tup, trace, "policy")
        if action == NPOL_ALLOW:
            trace.append(f"{where}: ALLOW by policy {policy_id} rule {rule_id}")
            return ALLOW
        if action == NPOL_DENY:
            trace.append(f"{where}: DENY by policy {policy_id} rule {rule_id}")
            return DENY
        if action == NPOL_PASS:
            trace.append(f"{where}: PASS by policy {policy_id} rule {rule_id}: straight to the profiles")
            go_profiles = True
            break
        if action >= 0:
            trace.append(
                f"  log (or unknown action {action}) matched: the rest of policy {policy_id} is skipped"
            )
    if not go_profiles:
        if policy_default == NPOL_DEFAULT_ALLOW:
            trace.append(f"{where}: no policy decided: policy default ALLOW")
            return ALLOW
        if policy_default == NPOL_DEFAULT_DENY:
            trace.append(f"{where}: no policy decided: policy default DENY")
            return DENY
        trace.append(
            f"{where}: no policy decided: policy default {DEFAULT_NAMES.get(policy_default, policy_default)}"
            " -> profiles"
        )
    for policy_id in conf.profiles:
        action, rule_id = _match_policy(state, policy_id, d, tup, trace, "profile")
        if action == NPOL_ALLOW:
            trace.append(f"{where}: ALLOW by profile {policy_id} rule {rule_id}")
            return ALLOW
        if action == NPOL_DENY:
            trace.append(f"{where}: DENY by profile {policy_id} rule {rule_id}")
            return DENY
        if action == NPOL_PASS:
            trace.append(
                f"{where}: PASS in profile {policy_id} rule {rule_id}: VPP logs an error and leaves the"
                " action unset"
                " (0 = NPOL_ACTION_DENY): DENY"
            )
            return DENY
        if action >= 0:
            trace.append(
                f"  log (or unknown action {action}) matched: the rest of profile {policy_id} is skipped"
            )
    if profile_default == NPOL_DEFAULT_ALLOW:
        trace.append(f"{where}: no profile decided: profile default ALLOW")
        return ALLOW
    if profile_default == NPOL_DEFAULT_DENY:
        trace.append(f"{where}: no profile decided: profile default DENY")
        return DENY
    trace.append(
        f"{where}: no profile decided: profile default {DEFAULT_NAMES.get(profile_default, profile_default)}"
        " leaves the action unset (0 = NPOL_ACTION_DENY): DENY"
    )
    return DENY


# ---------------------------------------------------------------------------------------
# acl plugin (public_inlines.h single_acl_match_5tuple, dataplane_node.c, session_inlines.h)


def _acl_rule_matches(rule: AclRule, pkt: Packet, ports: tuple[int, int]) -> bool:
    if rule.src.version != pkt.src.version:
        return False
    if pkt.dst not in rule.dst or pkt.src not in rule.src:
        return False
    if rule.proto:
        if rule.proto != pkt.proto:
            return False
        if not rule.sport_first <= ports[0] <= rule.sport_last:
            return False
        if not rule.dport_first <= ports[1] <= rule.dport_last:
            return False
        if pkt.proto == PROTO_TCP and (pkt.tcp_flags & rule.tcp_flags_mask) != rule.tcp_flags_value:
            return False
    return True


def _reverse_ports(pkt_is_ip6: bool, proto: int, ports: tuple[int, int]) -> tuple[int, int] | None:
    """The ports of the reverse key of a session (None: no reverse session)."""
    if proto == (PROTO_ICMP6 if pkt_is_ip6 else PROTO_ICMP):
        table = ICMP6_REVERSE if pkt_is_ip6 else ICMP4_REVERSE
        reply = table.get(ports[0])
        return None if reply is None else (reply, ports[1])
    return ports[1], ports[0]


def acl_stage(
    state: VppState, itf: Interface, is_input: bool, pkt: Packet, trace: list[str], use_sessions: bool
) -> str | None:
    """acl-plugin-in/out on one interface: None if the node does not run there, else the
    verdict. First match across the interface's list wins; no match is a deny."""
    direction = "in" if is_input else "out"
    acls = (state.acl_input if is_input else state.acl_output).get(itf.sw_if_index, [])
    if not acls:
        return None
    ports = acl_ports(pkt)
    where = f"acl-plugin-{direction} on {_ifname(state, itf.sw_if_index)}"
    key = AclSessionKey(itf.sw_if_index, is_input, pkt.src, pkt.dst, pkt.proto, ports[0], ports[1])
    if use_sessions:
        if key in state.acl_sessions:
            trace.append(f"{where}: existing reflexive session (same direction): permit")
            return ALLOW
        for s in state.acl_sessions:
            if s.sw_if_index != itf.sw_if_index or s.is_input == is_input or s.proto != pkt.proto:
                continue
            if s.src != pkt.dst or s.dst != pkt.src:
                continue
            if _reverse_ports(pkt.is_ip6, s.proto, (s.port0, s.port1)) == ports:
                trace.append(
                    f"{where}: return traffic of the reflexive session created on "
                    f"{'input' if s.is_input else 'output'}: permit"
                )
                return ALLOW
    for pos, acl_index in enumerate(acls):
        acl = state.acls.get(acl_index)
        if acl is None:
            trace.append(f"  ! {where}: ACL {acl_index} does not exist: it matches nothing")
            continue
        for i, rule in enumerate(acl.rules):
            if _acl_rule_matches(rule, pkt, ports):
                action = ACL_ACTIONS.get(rule.is_permit, f"action {rule.is_permit}")
                trace.append(
                    f"{where}: ACL {acl_index} (list position {pos}, tag {acl.tag!r}) rule {i}"
                    f" matches: {action}"
                )
                if rule.is_permit == 2:
                    if use_sessions:
                        state.acl_sessions.add(key)
                    trace.append(f"{where}: reflexive session created; return packets on this interface pass")
                return ALLOW if rule.is_permit in (1, 2) else DENY
    trace.append(f"{where}: no rule of ACLs {acls} matches: implicit deny")
    return DENY


# ---------------------------------------------------------------------------------------
# cnat


def _find_translation(state: VppState, pkt: Packet) -> tuple[int, Any] | None:
    """cnat_find_translation by (VIP address, destination port, protocol)."""
    if pkt.proto not in (PROTO_TCP, PROTO_UDP, PROTO_SCTP):
        return None
    for tid, tr in state.translations.items():
        if tr.proto != pkt.proto or tr.vip.port != pkt.dport:
            continue
        if state.endpoint_address(tr.vip) == pkt.dst:
            return tid, tr
    return None


def _dnat(state: VppState, pkt: Packet, tup: Tuple5, trace: list[str]) -> tuple[Tuple5 | None, str | None]:
    """cnat_input_feature_new_flow_inline: (new tuple, None) / (None, drop reason) /
    (None, None) when no translation applies."""
    found = _find_translation(state, pkt)
    if found is None:
        return None, None
    tid, tr = found
    backends = []
    for path in tr.paths:
        addr = state.endpoint_address(path.dst)
        if addr is not None and addr.version == pkt.dst.version:
            backends.append((addr, path.dst.port))
    if not backends:
        return None, f"cnat translation {tid} for {pkt.dst}:{pkt.dport} has no resolved backend: drop"
    addr, port = backends[stable_hash(*tup) % len(backends)]
    new = Tuple5(tup.src, addr, tup.proto, tup.sport, port or tup.dport)
    trace.append(
        f"cnat DNAT: translation {tid} {pkt.dst};{pkt.dport} -> backend {addr};{port or tup.dport}"
        + (f" (flow hash picks 1 of {len(backends)})" if len(backends) > 1 else "")
    )
    return new, None


def _snat_address(state: VppState, entry: SnatEntry, is_ip6: bool) -> IPAddr | None:
    if is_ip6:
        if int(entry.snat_ip6):
            return entry.snat_ip6
        sw = entry.sw_if_index6
    else:
        if int(entry.snat_ip4):
            return entry.snat_ip4
        sw = entry.sw_if_index4
    if sw == U32_MAX:
        return None
    itf = state.interface(sw)
    if itf is None:
        return None
    addrs = state.effective_addresses(itf, is_ip6)
    return addrs[0].ip if addrs else None


def _snat(
    state: VppState, tup: Tuple5, rx: int | None, tx: int, fwd_table: int, trace: list[str]
) -> tuple[Tuple5 | None, str | None]:
    """cnat_output_feature_new_flow_inline with the SNAT policies of cnat_snat_policy.c."""
    is_ip6 = tup.src.version == 6
    table = state.table(is_ip6, fwd_table)
    entry = state.snat.get(table.fib_index) if table else None
    if entry is None:
        trace.append("cnat SNAT: no SNAT policy entry for this VRF: no source NAT")
        return None, None
    af = 1 if is_ip6 else 0

    def in_map(table_id: int, sw: int | None) -> bool:
        return entry.initialized and sw is not None and sw in entry.if_maps.get(table_id, set())

    def excluded(addr: IPAddr) -> bool:
        return entry.initialized and any(addr.version == p.version and addr in p for p in entry.exclude)

    policy = entry.policy
    do_snat = False
    why = ""
    if policy == CNAT_POLICY_NONE:
        do_snat, why = True, "policy none: source NAT everything"
    elif policy == CNAT_POLICY_IF_PFX:
        if in_map(af, rx) and not excluded(tup.dst):
            do_snat, why = True, "policy if_pfx: rx interface included and destination not excluded"
        else:
            why = "policy if_pfx: rx interface not included or destination excluded"
    elif policy == CNAT_POLICY_K8S:
        if in_map(CNAT_IF_HOST, tx):
            why = "policy k8s: tx interface is a host interface: never source NAT"
        elif in_map(af, rx) and not excluded(tup.dst):
            do_snat, why = True, "policy k8s: rx interface included and destination not excluded"
        elif not in_map(CNAT_IF_POD, rx) and not in_map(CNAT_IF_POD, tx):
            snat_addr = entry.snat_ip6 if is_ip6 else entry.snat_ip4
            if tup.src == snat_addr:
                why = "policy k8s: neither side is a pod and the source is already the SNAT address"
            else:
                do_snat, why = True, "policy k8s: neither rx nor tx is a pod interface"
        elif tup.src == tup.dst:
            do_snat, why = True, "policy k8s: a pod reaching itself through a service"
        else:
            why = "policy k8s: pod traffic from an interface not included: no source NAT"
    elif policy == CNAT_POLICY_DNAT:
        do_snat, why = True, "policy dnat (prefix rewrites not modelled): source NAT"
    else:
        why = f"policy {policy} (dnat-only): keep the source"
    if not do_snat:
        trace.append(f"cnat SNAT: {why}")
        return None, None
    addr = _snat_address(state, entry, is_ip6)
    if addr is None or int(addr) == 0:
        return None, f"cnat SNAT: {why}, but the SNAT address is unset: drop"
    port = 1024 + stable_hash("snat", *tup) % 64511
    new = Tuple5(
        addr, tup.dst, tup.proto, port, port if tup.proto in (PROTO_ICMP, PROTO_ICMP6) else tup.dport
    )
    trace.append(f"cnat SNAT: {why}: source {tup.src};{tup.sport} -> {addr};{port}")
    return new, None


# ---------------------------------------------------------------------------------------
# The pipeline


class Egress(NamedTuple):
    """How an allowed packet leaves VPP: the interface, the node it is sent to (a tunnel's
    remote end, else the route's next hop; None when the destination is attached), the
    encapsulation (None, "vxlan", "ipip") and its source address as it leaves (after SNAT)."""

    sw_if_index: int
    interface: str
    via: IPAddr | None
    encap: str | None
    source: IPAddr


class Outcome(NamedTuple):
    verdict: str
    trace: list[str]
    egress: Egress | None  # None unless the packet was forwarded


class _Eval:
    def __init__(self, state: VppState, pkt: Packet, use_sessions: bool) -> None:
        self.state = state
        self.pkt = pkt
        self.hops: list[IPAddr] = []  # next hops of the forwarding lookup
        self.egress: Egress | None = None
        self.trace: list[str] = []
        self.use_sessions = use_sessions
        self.flow: CnatFlow | None = None
        self.cnat_state: str | None = None  # new | ok | return | err | None (not looked up)
        self.tuple: Tuple5 | None = None

    def deny(self, why: str) -> str:
        self.trace.append(f"DENY: {why}")
        return DENY

    def run(self, rx_sw_if_index: int | None) -> str:
        state, pkt, trace = self.state, self.pkt, self.trace
        trace.append(f"packet {pkt.describe()}")
        if pkt.src.version != pkt.dst.version:
            return self.deny("source and destination are of different address families")
        is_ip6 = pkt.is_ip6
        flow_hash = stable_hash(pkt.src, pkt.dst, pkt.proto, pkt.sport, pkt.dport, pkt.icmp_id)
        rx: Interface | None = None
        if rx_sw_if_index is not None:
            rx = state.interface(rx_sw_if_index)
            if rx is None:
                return self.deny(f"rx sw_if_index {rx_sw_if_index} does not exist")
            trace.append(f"rx {_ifname(state, rx.sw_if_index)} (given)")
        else:
            kind, sw, steps = state.resolve(is_ip6, 0, pkt.src, flow_hash)
            trace.extend(f"rx lookup: {s}" for s in steps)
            if kind == "tx" and sw is not None:
                rx = state.interface(sw)
                trace.append(f"rx {_ifname(state, sw)} (the interface the FIB routes the source to)")
            elif kind == "local":
                trace.append(
                    "rx: the source is a local address: the packet originates in VPP (no input features)"
                )
            else:
                return self.deny(f"cannot tell the rx interface: table 0 sends {pkt.src} to {kind}; give rx")
        table_id = 0
        if rx is not None:
            verdict = self.input_stage(rx)
            if verdict is not None:
                return verdict
            table_id = rx.table(is_ip6)
        return self.route_and_output(rx, table_id, flow_hash)

    # -- input ---------------------------------------------------------------------------

    def input_stage(self, rx: Interface) -> str | None:
        state, trace = self.state, self.trace
        is_ip6 = self.pkt.is_ip6
        if not rx.admin_up:
            return self.deny(f"rx interface {rx.name} is admin down: VPP does not receive on it")
        if not state.ip_enabled(rx, is_ip6):
            return self.deny(
                f"ip{6 if is_ip6 else 4} is not enabled on {rx.name} (no address, not unnumbered):"
                f" ip{6 if is_ip6 else 4}-not-enabled drops it"
            )
        mode = rx.urpf.get((True, 1 if is_ip6 else 0))
        if mode in (URPF_LOOSE, URPF_STRICT):
            kind, sw, _steps = state.resolve(is_ip6, rx.table(is_ip6), self.pkt.src, 0)
            ok = kind != "drop" if mode == URPF_LOOSE else (kind == "tx" and sw == rx.sw_if_index)
            name = "loose" if mode == URPF_LOOSE else "strict"
            if not ok:
                return self.deny(f"uRPF {name} on {rx.name}: source {self.pkt.src} fails ({kind} via {sw})")
            trace.append(f"uRPF {name} on {rx.name}: source {self.pkt.src} passes")
        if rx.cnat_feature:
            verdict = self.cnat_input(rx)
            if verdict is not None:
                return verdict
        else:
            trace.append(
                f"cnat: feature not enabled on {rx.name}: no cnat-lookup, no DNAT hook, no npol rx hook"
            )
        verdict = acl_stage(state, rx, True, self.pkt, trace, self.use_sessions)
        if verdict == DENY:
            return self.deny(f"acl-plugin-in on {rx.name}")
        return None

    def cnat_input(self, rx: Interface) -> str | None:
        state, trace, pkt = self.state, self.trace, self.pkt
        tup, note = cnat_tuple(pkt)
        if note:
            trace.append(f"cnat-lookup on {rx.name}: {note}")
        if tup is None:
            self.cnat_state = "err"
            trace.append(f"cnat-lookup on {rx.name}: IS_ERR: no session; DNAT and npol hooks do not run")
            return None
        key = (rx.table(pkt.is_ip6), tup)
        session = state.cnat_sessions.get(key) if self.use_sessions else None
        if session is not None and not session.is_return:
            self.cnat_state = "ok"
            self.flow = session.flow
            trace.append(f"cnat-lookup on {rx.name}: existing session {session.index} for {tup}")
            if session.flow.input_drop:
                return self.deny(
                    f"cached in cnat session {session.index}: {session.flow.input_drop}"
                    " (the verdict stays until"
                    " cnat_session_purge or expiry)"
                )
            if session.flow.dnat is not None:
                self.tuple = session.flow.dnat
                self.pkt = _apply(pkt, session.flow.dnat)
                trace.append(f"cnat-input: cached rewrite to {session.flow.dnat}")
            else:
                self.tuple = tup
            trace.append(f"cnat-input: cached npol rx verdict: {session.flow.npol_rx or 'not evaluated'}")
            return None
        if session is not None:
            self.cnat_state = "return"
            self.flow = session.flow
            trace.append(
                f"cnat-lookup on {rx.name}: return traffic of session {session.index}:"
                " no hooks (npol not evaluated)"
            )
            flow = session.flow
            if flow.snat is not None:
                pre_snat = flow.dnat or flow.fwd
                new = Tuple5(tup.src, pre_snat.src, tup.proto, tup.sport, pre_snat.sport)
                self.pkt = _apply(pkt, new)
                trace.append(
                    f"cnat-input: return rewrite (undo SNAT): destination -> {pre_snat.src};{pre_snat.sport}"
                )
                self.tuple = new
            else:
                self.tuple = tup
            return None
        self.cnat_state = "new"
        flow = CnatFlow(fwd=tup, rx_sw_if_index=rx.sw_if_index)
        self.flow = flow
        if self.use_sessions:
            index = state.new_cnat_session_index()
            state.cnat_sessions[key] = CnatSession(index=index, key=key, is_return=False, flow=flow)
            trace.append(f"cnat-lookup on {rx.name}: new flow {tup}: session {index} created")
        else:
            trace.append(f"cnat-lookup on {rx.name}: new flow {tup} (sessions not recorded)")
        rewritten, drop = _dnat(state, pkt, tup, trace)
        if drop:
            flow.input_drop = drop
            return self.deny(drop)
        if rewritten is not None:
            flow.dnat = rewritten
            self.pkt = _apply(pkt, rewritten)
            tup = rewritten
        self.tuple = tup
        verdict = npol_verdict(state, rx.sw_if_index, True, tup, trace)
        flow.npol_rx = verdict
        if verdict == DENY:
            flow.input_drop = f"npol rx on {rx.name} denied"
            return self.deny(f"npol rx on {rx.name}")
        return None

    # -- routing and output --------------------------------------------------------------

    def route_and_output(self, rx: Interface | None, table_id: int, flow_hash: int) -> str:
        state, trace = self.state, self.trace
        pkt = self.pkt
        self.hops = []
        kind, sw, steps = state.resolve(pkt.is_ip6, table_id, pkt.dst, flow_hash, hops=self.hops)
        trace.extend(steps)
        if kind == "cnat-vip":
            if rx is not None and rx.cnat_feature and self.cnat_state != "err":
                return self.deny(
                    f"{pkt.dst} is a cnat VIP without a translation for this port/protocol: drop"
                )
            found = _find_translation(state, pkt)
            tup = Tuple5(pkt.src, pkt.dst, pkt.proto, pkt.sport, pkt.dport)
            new, drop = _dnat(state, pkt, tup, trace) if found else (None, None)
            if drop:
                return self.deny(drop)
            if new is None:
                return self.deny(
                    f"{pkt.dst} is a cnat VIP without a translation for this port/protocol: drop"
                )
            trace.append("cnat-vip (FIB-attached VIP, no cnat feature on rx): DNAT without npol")
            self.pkt = pkt = _apply(pkt, new)
            self.hops = []
            kind, sw, steps = state.resolve(pkt.is_ip6, table_id, pkt.dst, flow_hash, hops=self.hops)
            trace.extend(steps)
        if kind == "drop":
            return self.deny(f"the FIB drops {pkt.dst}")
        if kind == "local":
            trace.append(f"delivered to VPP itself ({pkt.dst} is a local address): no output features")
            trace.append("ALLOW: local delivery")
            return ALLOW
        if sw is None:
            return self.deny("no tx interface")
        tx = state.interface(sw)
        if tx is None:
            return self.deny(f"tx sw_if_index {sw} does not exist")
        trace.append(f"tx {_ifname(state, tx.sw_if_index)}")
        if not tx.admin_up:
            return self.deny(f"tx interface {tx.name} is admin down")
        if pkt.is_ip6 and state.needs_ip6_link(tx) and tx.ip6_link_locks <= 0:
            return self.deny(
                f"ip6-discover-neighbor on {tx.name}: its IPv6 link is not enabled (no link-local"
                " address: no address of its own, no sw_interface_ip6_enable_disable), so the"
                " neighbour is never solicited"
            )
        verdict = acl_stage(state, tx, False, self.pkt, trace, self.use_sessions)
        if verdict == DENY:
            return self.deny(f"acl-plugin-out on {tx.name}")
        if tx.cnat_feature:
            out = self.cnat_output(rx, tx, table_id)
            if out is not None:
                return out
        else:
            trace.append(f"cnat: feature not enabled on {tx.name}: no npol tx hook, no SNAT")
        encap = tx.kind if tx.kind in ("vxlan", "ipip") else None
        via = self.hops[0] if self.hops else None  # the next hop the route names
        if encap is not None:
            denied = self.encapsulate(tx, flow_hash)
            if denied is not None:
                return denied
            via = tx.info["dst"]
        trace.append(f"ALLOW: forwarded out {tx.name} as {self.pkt.describe()}")
        self.egress = Egress(tx.sw_if_index, tx.name, via, encap, self.pkt.src)
        return ALLOW

    def encapsulate(self, tx: Interface, flow_hash: int) -> str | None:
        """A tunnel's output node wraps the packet and sends it by the outer destination's
        route in the tunnel's encap table (plugins/vxlan/encap.c vxlan_encap_inline,
        plugins/ipip/ipip.c ipip_build_rewrite + the midchain's stacking on the FIB entry of
        the destination). The outer packet is VPP's own: no input features; output features
        of the interface it leaves by are not modelled."""
        state, trace = self.state, self.trace
        info = tx.info
        src, dst = info["src"], info["dst"]
        if tx.kind == "vxlan":
            what, table = f"vxlan vni {info['vni']} udp dport {info['dst_port']}", info["encap_vrf_id"]
        else:
            what, table = "ip-in-ip", info["table_id"]
        trace.append(f"encap on {tx.name}: {what}, outer {src} -> {dst}")
        kind, sw, steps = state.resolve(dst.version == 6, table, dst, flow_hash)
        trace.extend(f"outer: {s}" for s in steps)
        out = state.interface(sw) if kind == "tx" and sw is not None else None
        if out is None:
            return self.deny(f"the outer destination {dst} of {tx.name} is not reachable (FIB: {kind})")
        if out.kind in ("vxlan", "ipip"):
            return self.deny(f"the outer packet of {tx.name} would enter tunnel {out.name} (recursion)")
        if not out.admin_up:
            return self.deny(f"the outer packet of {tx.name} leaves by {out.name}, which is admin down")
        trace.append(f"outer: tx {_ifname(state, out.sw_if_index)}")
        return None

    def cnat_output(self, rx: Interface | None, tx: Interface, fwd_table: int) -> str | None:
        state, trace = self.state, self.trace
        where = f"cnat-output on {tx.name}"
        if self.cnat_state is None:
            trace.append(
                f"{where}: the packet was not looked up by cnat (no cnat feature on its rx interface):"
                " VPP reads"
                " an unset session state (undefined); the simulator runs no output hook (npol tx NOT applied)"
            )
            return None
        if self.cnat_state == "err":
            trace.append(f"{where}: IS_ERR: no output hook runs (npol tx not evaluated)")
            return None
        flow = self.flow
        assert flow is not None and self.tuple is not None
        if self.cnat_state == "return":
            if flow.dnat is not None:
                vip = flow.fwd
                new = Tuple5(vip.dst, self.tuple.dst, self.tuple.proto, vip.dport, self.tuple.dport)
                self.pkt = _apply(self.pkt, new)
                trace.append(f"{where}: return rewrite (undo DNAT): source -> {vip.dst};{vip.dport}")
            else:
                trace.append(f"{where}: return traffic: no hooks")
            return None
        if self.cnat_state == "ok":
            if not flow.output_evaluated:
                trace.append(f"{where}: existing session whose output location was never set: no hook runs")
                return None
            if flow.output_drop:
                return self.deny(
                    f"cached in the cnat session: {flow.output_drop} (the verdict stays until"
                    " cnat_session_purge"
                    " or expiry)"
                )
            if flow.snat is not None:
                self.pkt = _apply(self.pkt, flow.snat)
                trace.append(f"{where}: cached SNAT rewrite to {flow.snat}")
            trace.append(f"{where}: cached npol tx verdict: {flow.npol_tx or 'not evaluated'}")
            return None
        # new flow: npol tx hook, then SNAT, then the writeback's return session
        flow.output_evaluated = True
        verdict = npol_verdict(state, tx.sw_if_index, False, self.tuple, trace)
        flow.npol_tx = verdict
        if verdict == DENY:
            flow.output_drop = f"npol tx on {tx.name} denied"
            return self.deny(f"npol tx on {tx.name}")
        snatted, drop = _snat(
            state, self.tuple, rx.sw_if_index if rx else None, tx.sw_if_index, fwd_table, trace
        )
        if drop:
            flow.output_drop = drop
            return self.deny(drop)
        final = self.tuple
        if snatted is not None:
            flow.snat = snatted
            self.pkt = _apply(self.pkt, snatted)
            final = snatted
        if self.use_sessions:
            rkey = (tx.table(self.pkt.is_ip6), final.reversed())
            index = state.new_cnat_session_index()
            state.cnat_sessions[rkey] = CnatSession(index=index, key=rkey, is_return=True, flow=flow)
            trace.append(f"cnat-writeback on {tx.name}: return session {index} for {final.reversed()}")
        return None


def evaluate(
    state: VppState,
    packet: Packet | Mapping[str, Any],
    rx_sw_if_index: int | None = None,
    *,
    use_sessions: bool = True,
) -> tuple[str, list[str]]:
    """What VPP does with `packet` entering on `rx_sw_if_index` (default: the interface the
    FIB of table 0 routes the source address to): ("allow" | "deny", trace).

    With `use_sessions` (the default, as on VPP) existing cnat/acl sessions decide for
    packets of known flows, and new flows create sessions. `use_sessions=False` judges
    the packet as the first of a new flow and leaves the state untouched.
    """
    outcome = forward(state, packet, rx_sw_if_index, use_sessions=use_sessions)
    return outcome.verdict, outcome.trace


def forward(
    state: VppState,
    packet: Packet | Mapping[str, Any],
    rx_sw_if_index: int | None = None,
    *,
    use_sessions: bool = True,
) -> Outcome:
    """`evaluate`, with how the packet leaves when it is forwarded."""
    ev = _Eval(state, as_packet(packet), use_sessions)
    verdict = ev.run(rx_sw_if_index)
    return Outcome(verdict, ev.trace, ev.egress if verdict == ALLOW else None)


__all__ = [
    "ALLOW",
    "DENY",
    "Egress",
    "Outcome",
    "Packet",
    "acl_stage",
    "as_packet",
    "cnat_tuple",
    "evaluate",
    "forward",
    "match_rule",
    "npol_verdict",
    "parse_proto",
]
