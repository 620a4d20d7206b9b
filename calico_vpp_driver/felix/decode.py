"""Felix's ToDataplane messages -> validated updates of the desired-state model.

One handler per payload. Content that does not validate (an invalid CIDR, an
unknown action or protocol, a malformed IP set member) never raises out of
here: the object is stored carrying an `error`, which makes every endpoint that
depends on it report "error" and be rendered fail-closed, and the problem is
returned to the caller to log with the object's ID. Removes of unknown IDs and
payloads this schema does not know are ignored. Messages the driver stores but
does not act on are reported once per payload type as unsupported.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..model.state import DesiredState
from ..model.types import (
    ACTIONS,
    PROTOCOL_NUMBERS,
    VTEP,
    Encapsulation,
    HostEndpoint,
    HostEndpointID,
    HostMetadata,
    IcmpMatch,
    IPNetwork,
    IPPool,
    NatInfo,
    Policy,
    PolicyID,
    PortRange,
    Profile,
    Route,
    Rule,
    Service,
    ServicePort,
    TierInfo,
    WorkloadEndpoint,
    WorkloadEndpointID,
)
from . import felixbackend_pb2 as pb


class ContentError(ValueError):
    """A field of a message has a value the driver cannot accept."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What applying one message did, for the caller to log.

    `kind` is the payload name; `obj` the object's ID (formatted only when
    logged: most messages are never logged); `problem` a
    content error (the object was stored with it); `ignored` a reason the
    message changed nothing (unknown payload, remove of an unknown ID).
    """

    kind: str
    obj: object = ""
    problem: str | None = None
    ignored: str | None = None


# Payloads stored in the model but not (yet) acted on by any renderer.
UNSUPPORTED_PAYLOADS = frozenset(
    {
        "wireguard_endpoint_update",
        "wireguard_endpoint_remove",
        "wireguard_endpoint_v6_update",
        "wireguard_endpoint_v6_remove",
        "global_bgp_config_update",
        "service_update",
        "service_remove",
    }
)

# ----------------------------------------------------------------------------- field parsers


def _net(text: str, what: str) -> IPNetwork:
    try:
        return _parse_net(text)
    except ValueError:
        raise ContentError(f"{what}: invalid CIDR {text!r}") from None


def _nets(texts: Iterable[str], what: str) -> tuple[IPNetwork, ...]:
    return tuple([_cached_net(t, what) for t in texts])


@functools.lru_cache(maxsize=1 << 14)
def _cached_net(text: str, what: str) -> IPNetwork:
    """Rules repeat the same CIDRs across policies: parse each once."""
    return _net(text, what)


def _parse_net(text: str) -> IPNetwork:
    """A CIDR (host bits masked) or a bare address, as `ip_network(strict=False)`
    accepts them, at a fraction of the cost: `inet_pton` is strict and runs in C."""
    addr, slash, plen = text.partition("/")
    if slash and not plen.isdigit():
        raise ValueError(text)
    try:
        if ":" in addr:
            value = int.from_bytes(socket.inet_pton(socket.AF_INET6, addr), "big")
            return ipaddress.IPv6Network((value, int(plen) if slash else 128), strict=False)
        value = int.from_bytes(socket.inet_pton(socket.AF_INET, addr), "big")
        return ipaddress.IPv4Network((value, int(plen) if slash else 32), strict=False)
    except OSError:
        raise ValueError(text) from None


def _addr(text: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        if ":" in text:
            return ipaddress.IPv6Address(socket.inet_pton(socket.AF_INET6, text))
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, text))
    except (OSError, ValueError):
        raise ContentError(f"{what}: invalid IP address {text!r}") from None


def _addr_or_none(text: str, what: str) -> Any:
    return _addr(text, what) if text else None


def _ports(ranges: Iterable[pb.PortRange], what: str) -> tuple[PortRange, ...]:
    out = []
    for r in ranges:
        first, last = r.first, r.last
        if last == 0 and first != 0:
            last = first
        if not (0 <= first <= last <= 65535):
            raise ContentError(f"{what}: invalid port range {first}..{last}")
        out.append(PortRange(first, last))
    return tuple(out)


def _protocol(proto: pb.Protocol, field: str) -> int | None:
    which = proto.WhichOneof("number_or_name")
    if which == "number":
        if not 0 <= proto.number <= 255:
            raise ContentError(f"{field}: protocol number {proto.number} out of range")
        return int(proto.number)
    if which == "name":
        name = proto.name.lower()
        if name in PROTOCOL_NUMBERS:
            return PROTOCOL_NUMBERS[name]
        if name.isdigit() and int(name) <= 255:
            return int(name)
        raise ContentError(f"{field}: unknown protocol {proto.name!r}")
    return None


_ID_FIELDS = frozenset(
    {
        "src_named_port_ip_set_ids",
        "not_src_named_port_ip_set_ids",
        "dst_named_port_ip_set_ids",
        "not_dst_named_port_ip_set_ids",
        "src_ip_set_ids",
        "not_src_ip_set_ids",
        "dst_ip_set_ids",
        "not_dst_ip_set_ids",
        "dst_ip_port_set_ids",
    }
)
_NET_FIELDS = frozenset({"src_net", "not_src_net", "dst_net", "not_dst_net"})
_PORT_FIELDS = frozenset({"src_ports", "not_src_ports", "dst_ports", "not_dst_ports"})
# Informational fields: Felix already compiled what they say into the others.
_INFO_FIELDS = frozenset(
    {
        "original_src_selector",
        "original_dst_selector",
        "original_src_namespace_selector",
        "original_dst_namespace_selector",
        "original_not_src_selector",
        "original_not_dst_selector",
        "original_src_service",
        "original_src_service_namespace",
        "original_dst_service",
        "original_dst_service_namespace",
        "src_service_account_match",
        "dst_service_account_match",
        "metadata",
    }
)


# Rules are built positionally from a defaults list: NamedTuple keyword
# construction runs a Python-level __new__ with 25 parameters, _make does not.
_RULE_DEFAULTS: tuple[Any, ...] = tuple(Rule._field_defaults[f] for f in Rule._fields)
_RULE_INDEX = {name: i for i, name in enumerate(Rule._fields)}
_I_ACTION = _RULE_INDEX["action"]
_I_RULE_ID = _RULE_INDEX["rule_id"]
_I_IP_VERSION = _RULE_INDEX["ip_version"]
_I_HTTP = _RULE_INDEX["has_http_match"]
_make_rule = Rule._make


def decode_rule(msg: pb.Rule) -> Rule:
    """Validate and normalize one rule; raises ContentError naming the field.

    Walks only the fields present on the wire (`ListFields`): a typical rule
    sets three or four of its thirty-odd fields, and this runs for every rule
    of every policy at startup.
    """
    kw = list(_RULE_DEFAULTS)
    for desc, value in msg.ListFields():
        name = desc.name
        # Ordered by how often each field appears in real policy.
        if name == "action":
            action = value.lower()
            if action == "next-tier":
                action = "pass"
            if action not in ACTIONS:
                raise ContentError(f"unknown action {value!r}")
            kw[_I_ACTION] = action
        elif name == "rule_id":
            kw[_I_RULE_ID] = value
        elif name in _ID_FIELDS:
            kw[_RULE_INDEX[name]] = tuple(value)
        elif name == "protocol" or name == "not_protocol":
            kw[_RULE_INDEX[name]] = _protocol(value, name)
        elif name in _PORT_FIELDS:
            kw[_RULE_INDEX[name]] = _ports(value, name)
        elif name in _INFO_FIELDS:
            continue
        elif name in _NET_FIELDS:
            kw[_RULE_INDEX[name]] = _nets(value, name)
        elif name == "ip_version":
            if value not in (4, 6):
                raise ContentError(f"ip_version: invalid value {value}")
            kw[_I_IP_VERSION] = int(value)
        elif name == "icmp_type" or name == "not_icmp_type":
            if not 0 <= value <= 255:
                raise ContentError(f"{name}: ICMP type {value} out of range")
            kw[_RULE_INDEX[name[:-5]]] = IcmpMatch(int(value))
        elif name == "icmp_type_code" or name == "not_icmp_type_code":
            if not (0 <= value.type <= 255 and 0 <= value.code <= 255):
                raise ContentError(f"{name}: ICMP type/code {value.type}/{value.code} out of range")
            kw[_RULE_INDEX[name[:-10]]] = IcmpMatch(int(value.type), int(value.code))
        elif name == "http_match":
            kw[_I_HTTP] = True
        else:
            raise ContentError(f"field {name} is not understood by this driver")
    return _make_rule(kw)


def _rules(msgs: Iterable[pb.Rule], direction: str) -> tuple[tuple[Rule, ...], str | None]:
    rules = []
    for i, r in enumerate(msgs):
        try:
            rules.append(decode_rule(r))
        except ContentError as exc:
            rid = f" ({r.rule_id})" if r.rule_id else ""
            return (), f"{direction} rule {i}{rid}: {exc}"
    return tuple(rules), None


# PolicyID's NamedTuple __new__ is Python-level; endpoints list tens of
# thousands of policies, so build them with tuple.__new__ directly.
_new_pid = tuple.__new__


# Endpoints reference the same policies over and over (every pod of a
# namespace lists the same ones): a policy ID is looked up by its wire bytes,
# one C call, instead of reading three string fields each time.
_PID_CACHE: dict[bytes, PolicyID] = {}
_PID_CACHE_MAX = 1 << 16


def _policy_ids(msgs: Iterable[pb.PolicyID]) -> tuple[PolicyID, ...]:
    cache = _PID_CACHE
    out = []
    for p in msgs:
        key = p.SerializeToString()
        pid = cache.get(key)
        if pid is None:
            if len(cache) >= _PID_CACHE_MAX:
                cache.clear()
            pid = cache[key] = _new_pid(PolicyID, (p.name, p.namespace, p.kind))
        out.append(pid)
    return tuple(out)


def policy_id(msg: pb.PolicyID) -> PolicyID:
    return PolicyID(msg.name, msg.namespace, msg.kind)


def _tiers(msgs: Iterable[pb.TierInfo], what: str) -> tuple[tuple[TierInfo, ...], str | None]:
    tiers = []
    problem = None
    for t in msgs:
        default = t.default_action or "Deny"
        if default.lower() not in ("deny", "pass"):
            problem = f"{what} tier {t.name}: unknown default_action {t.default_action!r}"
            default = "Deny"  # fail closed
        tiers.append(
            TierInfo(
                name=t.name,
                ingress_policies=_policy_ids(t.ingress_policies),
                egress_policies=_policy_ids(t.egress_policies),
                default_action="Pass" if default.lower() == "pass" else "Deny",
            )
        )
    return tuple(tiers), problem


def workload_endpoint_id(msg: pb.WorkloadEndpointID) -> WorkloadEndpointID:
    return WorkloadEndpointID(msg.orchestrator_id, msg.workload_id, msg.endpoint_id)


def _nat(msgs: Iterable[pb.NatInfo], what: str) -> tuple[NatInfo, ...]:
    return tuple(NatInfo(_addr(n.ext_ip, what), _addr(n.int_ip, what)) for n in msgs)


def decode_workload_endpoint(ep_id: WorkloadEndpointID, msg: pb.WorkloadEndpoint) -> WorkloadEndpoint:
    """Never raises: content errors are kept in the endpoint's `error`."""
    tiers, problem = _tiers(msg.tiers, "tiers")
    fields: dict[str, Any] = {}
    try:
        v4 = _nets(msg.ipv4_nets, "ipv4_nets")
        v6 = _nets(msg.ipv6_nets, "ipv6_nets")
        if any(n.version != 4 for n in v4) or any(n.version != 6 for n in v6):
            raise ContentError("ipv4_nets/ipv6_nets: address of the wrong family")
        fields.update(
            ipv4_nets=v4,
            ipv6_nets=v6,
            ipv4_nat=_nat(msg.ipv4_nat, "ipv4_nat"),
            ipv6_nat=_nat(msg.ipv6_nat, "ipv6_nat"),
            allow_spoofed_source_prefixes=_nets(
                msg.allow_spoofed_source_prefixes, "allow_spoofed_source_prefixes"
            ),
        )
    except ContentError as exc:
        problem = str(exc)
    if not msg.name:
        problem = "name (the host-side interface name) is empty"
    return WorkloadEndpoint(
        id=ep_id,
        name=msg.name,
        state=msg.state,
        mac=msg.mac,
        profile_ids=tuple(msg.profile_ids),
        tiers=tiers,
        annotations=tuple(sorted(msg.annotations.items())),
        error=f"workload endpoint {ep_id}: {problem}" if problem else None,
        **fields,
    )


def decode_host_endpoint(ep_id: HostEndpointID, msg: pb.HostEndpoint) -> HostEndpoint:
    """Never raises: content errors are kept in the endpoint's `error`."""
    problems = []
    tier_fields: dict[str, tuple[TierInfo, ...]] = {}
    for name in ("tiers", "untracked_tiers", "pre_dnat_tiers", "forward_tiers"):
        tiers, problem = _tiers(getattr(msg, name), name)
        tier_fields[name] = tiers
        if problem:
            problems.append(problem)
    v4: tuple[Any, ...] = ()
    v6: tuple[Any, ...] = ()
    try:
        v4 = tuple(_addr(a, "expected_ipv4_addrs") for a in msg.expected_ipv4_addrs)
        v6 = tuple(_addr(a, "expected_ipv6_addrs") for a in msg.expected_ipv6_addrs)
    except ContentError as exc:
        problems.append(str(exc))
    return HostEndpoint(
        id=ep_id,
        name=msg.name,
        profile_ids=tuple(msg.profile_ids),
        expected_ipv4_addrs=v4,
        expected_ipv6_addrs=v6,
        error=f"host endpoint {ep_id}: {'; '.join(problems)}" if problems else None,
        **tier_fields,
    )


def _host_address(text: str, version: int, what: str) -> tuple[Any, Any]:
    """(address, network) from Felix's bare (v3.32) or CIDR (v3.33) form."""
    if not text:
        return None, None
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        raise ContentError(f"{what}: invalid address {text!r}") from None
    if iface.version != version:
        raise ContentError(f"{what}: {text!r} is not IPv{version}")
    net = iface.network if "/" in text else None
    return iface.ip, net


def _host_metadata(
    hostname: str, v4: str = "", v6: str = "", asnumber: str = "", labels: Any = None
) -> HostMetadata:
    a4, n4 = _host_address(v4, 4, "ipv4_addr")
    a6, n6 = _host_address(v6, 6, "ipv6_addr")
    return HostMetadata(
        hostname=hostname,
        ipv4_addr=a4,
        ipv4_net=n4,
        ipv6_addr=a6,
        ipv6_net=n6,
        asnumber=asnumber,
        labels=tuple(sorted((labels or {}).items())),
    )


# ----------------------------------------------------------------------------- handlers

Handler = Callable[[DesiredState, Any], Outcome]


def _ipset_update(state: DesiredState, m: pb.IPSetUpdate) -> Outcome:
    if m.type not in (0, 1, 2):
        state.update_ipset(m.id, 2, ())
        ipset = state.ipsets[m.id]
        ipset.bad_members.add(f"<unknown IP set type {m.type}>")
        return Outcome("ipset_update", m.id, problem=f"unknown IP set type {m.type}")
    ipset = state.update_ipset(m.id, m.type, m.members)
    return Outcome("ipset_update", m.id, problem=ipset.error)


def _ipset_delta(state: DesiredState, m: pb.IPSetDeltaUpdate) -> Outcome:
    if m.id not in state.ipsets:
        return Outcome("ipset_delta_update", m.id, problem="delta for an unknown IP set; ignored")
    had_error = state.ipsets[m.id].error is not None
    ipset = state.delta_ipset(m.id, m.added_members, m.removed_members)
    problem = ipset.error if ipset.error and not had_error else None
    return Outcome("ipset_delta_update", m.id, problem=problem)


def _ipset_remove(state: DesiredState, m: pb.IPSetRemove) -> Outcome:
    return _removed("ipset_remove", m.id, state.remove_ipset(m.id))


def _policy_update(state: DesiredState, m: pb.ActivePolicyUpdate) -> Outcome:
    pid = policy_id(m.id)
    inbound, p1 = _rules(m.policy.inbound_rules, "inbound")
    outbound, p2 = _rules(m.policy.outbound_rules, "outbound")
    problem = p1 or p2
    state.update_policy(
        Policy(
            id=pid,
            inbound_rules=() if problem else inbound,
            outbound_rules=() if problem else outbound,
            tier=m.policy.tier,
            namespace=m.policy.namespace,
            untracked=m.policy.untracked,
            pre_dnat=m.policy.pre_dnat,
            original_selector=m.policy.original_selector,
            error=f"policy {pid}: {problem}" if problem else None,
        )
    )
    return Outcome("active_policy_update", pid, problem=problem)


def _policy_remove(state: DesiredState, m: pb.ActivePolicyRemove) -> Outcome:
    pid = policy_id(m.id)
    return _removed("active_policy_remove", pid, state.remove_policy(pid))


def _profile_update(state: DesiredState, m: pb.ActiveProfileUpdate) -> Outcome:
    inbound, p1 = _rules(m.profile.inbound_rules, "inbound")
    outbound, p2 = _rules(m.profile.outbound_rules, "outbound")
    problem = p1 or p2
    state.update_profile(
        Profile(
            name=m.id.name,
            inbound_rules=() if problem else inbound,
            outbound_rules=() if problem else outbound,
            error=f"profile {m.id.name}: {problem}" if problem else None,
        )
    )
    return Outcome("active_profile_update", m.id.name, problem=problem)


def _profile_remove(state: DesiredState, m: pb.ActiveProfileRemove) -> Outcome:
    return _removed("active_profile_remove", m.id.name, state.remove_profile(m.id.name))


def _wep_update(state: DesiredState, m: pb.WorkloadEndpointUpdate) -> Outcome:
    ep_id = workload_endpoint_id(m.id)
    ep = decode_workload_endpoint(ep_id, m.endpoint)
    state.update_workload_endpoint(ep)
    return Outcome("workload_endpoint_update", ep_id, problem=ep.error)


def _wep_remove(state: DesiredState, m: pb.WorkloadEndpointRemove) -> Outcome:
    ep_id = workload_endpoint_id(m.id)
    return _removed("workload_endpoint_remove", ep_id, state.remove_workload_endpoint(ep_id))


def _hep_update(state: DesiredState, m: pb.HostEndpointUpdate) -> Outcome:
    ep_id = HostEndpointID(m.id.endpoint_id)
    ep = decode_host_endpoint(ep_id, m.endpoint)
    state.update_host_endpoint(ep)
    return Outcome("host_endpoint_update", ep_id, problem=ep.error)


def _hep_remove(state: DesiredState, m: pb.HostEndpointRemove) -> Outcome:
    ep_id = HostEndpointID(m.id.endpoint_id)
    return _removed("host_endpoint_remove", ep_id, state.remove_host_endpoint(ep_id))


def _config_update(state: DesiredState, m: pb.ConfigUpdate) -> Outcome:
    state.raw_config = dict(m.config)
    state.dirty.other.add("config")
    return Outcome("config_update")


def _in_sync(state: DesiredState, m: pb.InSync) -> Outcome:
    state.mark_in_sync()
    return Outcome("in_sync")


def _host_meta(family: str, kind: str) -> Handler:
    def handle(state: DesiredState, m: Any) -> Outcome:
        try:
            if family == "v6":
                meta = _host_metadata(m.hostname, v6=m.ipv6_addr)
            elif family == "main":
                # v3.32 sends a bare IPv4 address here; v3.33 the full record.
                meta = _host_metadata(m.hostname, m.ipv4_addr, m.ipv6_addr, m.asnumber, dict(m.labels))
            else:
                meta = _host_metadata(m.hostname, m.ipv4_addr, m.ipv6_addr, m.asnumber, dict(m.labels))
        except ContentError as exc:
            return Outcome(kind, m.hostname, problem=f"{exc}; host metadata not stored")
        state.update_host_metadata(family, meta)
        return Outcome(kind, m.hostname)

    return handle


def _host_meta_remove(family: str, kind: str) -> Handler:
    def handle(state: DesiredState, m: Any) -> Outcome:
        return _removed(kind, m.hostname, state.remove_host_metadata(family, m.hostname))

    return handle


def _pool_update(state: DesiredState, m: pb.IPAMPoolUpdate) -> Outcome:
    try:
        cidr = _net(m.pool.cidr, "pool.cidr")
    except ContentError as exc:
        return Outcome("ipam_pool_update", m.id, problem=f"{exc}; pool not stored")
    state.update_ip_pool(
        IPPool(
            id=m.id,
            cidr=cidr,
            masquerade=m.pool.masquerade,
            ipip_mode=m.pool.ipip_mode,
            vxlan_mode=m.pool.vxlan_mode,
            allowed_uses=tuple(m.pool.allowed_uses),
        )
    )
    return Outcome("ipam_pool_update", m.id)


def _pool_remove(state: DesiredState, m: pb.IPAMPoolRemove) -> Outcome:
    return _removed("ipam_pool_remove", m.id, state.remove_ip_pool(m.id))


def _route_update(state: DesiredState, m: pb.RouteUpdate) -> Outcome:
    try:
        route = Route(
            dst=_net(m.dst, "dst"),
            types=int(m.types),
            ip_pool_type=int(m.ip_pool_type),
            dst_node_name=m.dst_node_name,
            dst_node_ip=_addr_or_none(m.dst_node_ip, "dst_node_ip"),
            same_subnet=m.same_subnet,
            nat_outgoing=m.nat_outgoing,
            local_workload=m.local_workload,
            tunnel_ipip=m.tunnel_type.ipip,
            tunnel_vxlan=m.tunnel_type.vxlan,
            tunnel_wireguard=m.tunnel_type.wireguard,
            borrowed=m.borrowed,
        )
    except ContentError as exc:
        return Outcome("route_update", m.dst, problem=f"{exc}; route not stored")
    state.update_route(route)
    return Outcome("route_update", m.dst)


def _route_remove(state: DesiredState, m: pb.RouteRemove) -> Outcome:
    try:
        dst = _net(m.dst, "dst")
    except ContentError:
        return Outcome("route_remove", m.dst, ignored="not a CIDR")
    return _removed("route_remove", m.dst, state.remove_route(dst))


def _vtep_update(state: DesiredState, m: pb.VXLANTunnelEndpointUpdate) -> Outcome:
    try:
        vtep = VTEP(
            node=m.node,
            mac=m.mac,
            ipv4_addr=_addr_or_none(m.ipv4_addr, "ipv4_addr"),
            parent_device_ip=_addr_or_none(m.parent_device_ip, "parent_device_ip"),
            mac_v6=m.mac_v6,
            ipv6_addr=_addr_or_none(m.ipv6_addr, "ipv6_addr"),
            parent_device_ipv6=_addr_or_none(m.parent_device_ipv6, "parent_device_ipv6"),
        )
    except ContentError as exc:
        return Outcome("vtep_update", m.node, problem=f"{exc}; VTEP not stored")
    state.update_vtep(vtep)
    return Outcome("vtep_update", m.node)


def _vtep_remove(state: DesiredState, m: pb.VXLANTunnelEndpointRemove) -> Outcome:
    return _removed("vtep_remove", m.node, state.remove_vtep(m.node))


def _encapsulation(state: DesiredState, m: pb.Encapsulation) -> Outcome:
    state.set_encapsulation(
        Encapsulation(m.ipip_enabled, m.vxlan_enabled, m.vxlan_enabled_v6, m.no_encap_enabled)
    )
    return Outcome("encapsulation")


def _service_update(state: DesiredState, m: pb.ServiceUpdate) -> Outcome:
    state.update_service(
        Service(
            name=m.name,
            namespace=m.namespace,
            type=m.type,
            cluster_ips=tuple(m.cluster_ips),
            loadbalancer_ip=m.loadbalancer_ip,
            external_ips=tuple(m.external_ips),
            ports=tuple(ServicePort(p.Protocol, p.Port, p.NodePort) for p in m.ports),
            loadbalancer_ingress_ips=tuple(m.loadbalancer_ingress_ips),
        )
    )
    return Outcome("service_update", f"{m.namespace}/{m.name}")


def _service_remove(state: DesiredState, m: pb.ServiceRemove) -> Outcome:
    obj = f"{m.namespace}/{m.name}"
    return _removed("service_remove", obj, state.remove_service(m.namespace, m.name))


def _info(table: str, kind: str, key: Callable[[Any], Any], value: Callable[[Any], Any] | None) -> Handler:
    def handle(state: DesiredState, m: Any) -> Outcome:
        k = key(m)
        changed = state.set_info(table, k, value(m) if value else None)
        return _removed(kind, k, changed) if value is None else Outcome(kind, k)

    return handle


def _bgp(state: DesiredState, m: pb.GlobalBGPConfigUpdate) -> Outcome:
    state.set_bgp_config(
        {
            "service_cluster_cidrs": tuple(m.service_cluster_cidrs),
            "service_external_cidrs": tuple(m.service_external_cidrs),
            "service_loadbalancer_cidrs": tuple(m.service_loadbalancer_cidrs),
            "local_workload_peering_ip_v4": m.local_workload_peering_ip_v4,
            "local_workload_peering_ip_v6": m.local_workload_peering_ip_v6,
        }
    )
    return Outcome("global_bgp_config_update")


def _removed(kind: str, obj: object, changed: bool) -> Outcome:
    return Outcome(kind, obj) if changed else Outcome(kind, obj, ignored="remove of an unknown ID")


def _ns_key(m: Any) -> str:
    return str(m.id.name)


def _sa_key(m: Any) -> tuple[str, str]:
    return (m.id.namespace, m.id.name)


def _labels(m: Any) -> dict[str, str]:
    return dict(m.labels)


def _hostname(m: Any) -> str:
    return str(m.hostname)


HANDLERS: dict[str, Handler] = {
    "in_sync": _in_sync,
    "ipset_update": _ipset_update,
    "ipset_delta_update": _ipset_delta,
    "ipset_remove": _ipset_remove,
    "active_profile_update": _profile_update,
    "active_profile_remove": _profile_remove,
    "active_policy_update": _policy_update,
    "active_policy_remove": _policy_remove,
    "host_endpoint_update": _hep_update,
    "host_endpoint_remove": _hep_remove,
    "workload_endpoint_update": _wep_update,
    "workload_endpoint_remove": _wep_remove,
    "config_update": _config_update,
    "host_metadata_update": _host_meta("main", "host_metadata_update"),
    "host_metadata_remove": _host_meta_remove("main", "host_metadata_remove"),
    "host_metadata_v6_update": _host_meta("v6", "host_metadata_v6_update"),
    "host_metadata_v6_remove": _host_meta_remove("v6", "host_metadata_v6_remove"),
    "host_metadata_v4v6_update": _host_meta("v4v6", "host_metadata_v4v6_update"),
    "host_metadata_v4v6_remove": _host_meta_remove("v4v6", "host_metadata_v4v6_remove"),
    "ipam_pool_update": _pool_update,
    "ipam_pool_remove": _pool_remove,
    "service_account_update": _info("service_accounts", "service_account_update", _sa_key, _labels),
    "service_account_remove": _info("service_accounts", "service_account_remove", _sa_key, None),
    "namespace_update": _info("namespaces", "namespace_update", _ns_key, _labels),
    "namespace_remove": _info("namespaces", "namespace_remove", _ns_key, None),
    "route_update": _route_update,
    "route_remove": _route_remove,
    "vtep_update": _vtep_update,
    "vtep_remove": _vtep_remove,
    "wireguard_endpoint_update": _info(
        "wireguard_endpoints",
        "wireguard_endpoint_update",
        _hostname,
        lambda m: {"public_key": m.public_key, "interface_ipv4_addr": m.interface_ipv4_addr},
    ),
    "wireguard_endpoint_remove": _info("wireguard_endpoints", "wireguard_endpoint_remove", _hostname, None),
    "wireguard_endpoint_v6_update": _info(
        "wireguard_endpoints_v6",
        "wireguard_endpoint_v6_update",
        _hostname,
        lambda m: {"public_key_v6": m.public_key_v6, "interface_ipv6_addr": m.interface_ipv6_addr},
    ),
    "wireguard_endpoint_v6_remove": _info(
        "wireguard_endpoints_v6", "wireguard_endpoint_v6_remove", _hostname, None
    ),
    "global_bgp_config_update": _bgp,
    "encapsulation": _encapsulation,
    "service_update": _service_update,
    "service_remove": _service_remove,
}


def apply_message(state: DesiredState, msg: pb.ToDataplane, which: str | None = None) -> Outcome:
    """Apply one ToDataplane message to the model. Never raises for content.

    `which` is the payload name when the caller already has it.
    """
    if which is None:
        which = msg.WhichOneof("payload")
        if which is None:
            return Outcome("unknown", ignored="payload unknown to this schema")
    return HANDLERS[which](state, getattr(msg, which))
