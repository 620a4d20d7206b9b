"""Value objects of the desired state, in the driver's own terms (no protobuf).

Felix's messages are decoded into these by `calico_vpp_driver.felix.decode`, so
everything downstream (renderers, the policy oracle, scenario replay) works on
validated, normalized, immutable values: CIDRs are `ipaddress` networks,
protocols are numbers, actions are one of `ACTIONS`. An object whose content
could not be validated still exists in the model, carrying `error`, so that
the endpoints depending on it can be reported "error" and rendered fail-closed.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, TypeAlias

IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

# Rule actions after normalization: Felix's "" means allow, "next-tier" means pass.
Action = Literal["allow", "deny", "log", "pass"]
ACTIONS: frozenset[str] = frozenset({"allow", "deny", "log", "pass"})

# IP set types as Felix numbers them (IPSetUpdate.IPSetType).
IPSET_IP = 0
IPSET_IP_AND_PORT = 1
IPSET_NET = 2
IPSET_TYPE_NAMES = {IPSET_IP: "IP", IPSET_IP_AND_PORT: "IP_AND_PORT", IPSET_NET: "NET"}

# Protocol names Felix may send, and their IANA numbers.
PROTOCOL_NUMBERS: dict[str, int] = {
    "icmp": 1,
    "tcp": 6,
    "udp": 17,
    "icmpv6": 58,
    "sctp": 132,
    "udplite": 136,
}


class PortRange(NamedTuple):
    """Inclusive port range; a single port has first == last."""

    first: int
    last: int

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last


class IcmpMatch(NamedTuple):
    """ICMP type and optional code (None = any code)."""

    type: int
    code: int | None = None


class Rule(NamedTuple):
    """One Calico rule, validated. Field meanings follow policy-semantics.md.

    A NamedTuple rather than a frozen dataclass: a node decodes tens of
    thousands of rules at startup, and tuple construction and hashing run in C.
    """

    action: Action = "allow"
    ip_version: int = 0  # 0 = any, 4, 6
    protocol: int | None = None
    not_protocol: int | None = None
    src_net: tuple[IPNetwork, ...] = ()
    not_src_net: tuple[IPNetwork, ...] = ()
    dst_net: tuple[IPNetwork, ...] = ()
    not_dst_net: tuple[IPNetwork, ...] = ()
    src_ports: tuple[PortRange, ...] = ()
    not_src_ports: tuple[PortRange, ...] = ()
    dst_ports: tuple[PortRange, ...] = ()
    not_dst_ports: tuple[PortRange, ...] = ()
    src_named_port_ip_set_ids: tuple[str, ...] = ()
    not_src_named_port_ip_set_ids: tuple[str, ...] = ()
    dst_named_port_ip_set_ids: tuple[str, ...] = ()
    not_dst_named_port_ip_set_ids: tuple[str, ...] = ()
    src_ip_set_ids: tuple[str, ...] = ()
    not_src_ip_set_ids: tuple[str, ...] = ()
    dst_ip_set_ids: tuple[str, ...] = ()
    not_dst_ip_set_ids: tuple[str, ...] = ()
    dst_ip_port_set_ids: tuple[str, ...] = ()
    icmp: IcmpMatch | None = None
    not_icmp: IcmpMatch | None = None
    # An HTTP criterion is not enforced at L3/L4; like Felix's own renderers,
    # the rule matches on its other criteria (see policy/verdict.py).
    has_http_match: bool = False
    rule_id: str = ""

    def ip_set_ids(self) -> frozenset[str]:
        """Every IP set this rule refers to, in any role."""
        return frozenset(
            self.src_named_port_ip_set_ids
            + self.not_src_named_port_ip_set_ids
            + self.dst_named_port_ip_set_ids
            + self.not_dst_named_port_ip_set_ids
            + self.src_ip_set_ids
            + self.not_src_ip_set_ids
            + self.dst_ip_set_ids
            + self.not_dst_ip_set_ids
            + self.dst_ip_port_set_ids
        )


class PolicyID(NamedTuple):
    """Felix's policy identity. Kinds starting with "Staged" are never enforced.

    A NamedTuple: endpoints reference policies tens of thousands of times, so
    hashing must be cheap.
    """

    name: str
    namespace: str = ""
    kind: str = ""

    @property
    def staged(self) -> bool:
        return self.kind.startswith("Staged")

    def __str__(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        kind = f"{self.kind}:" if self.kind else ""
        return f"{kind}{ns}{self.name}"


@dataclass(frozen=True)
class Policy:
    id: PolicyID
    inbound_rules: tuple[Rule, ...] = ()
    outbound_rules: tuple[Rule, ...] = ()
    tier: str = ""
    namespace: str = ""
    untracked: bool = False
    pre_dnat: bool = False
    original_selector: str = ""
    error: str | None = None

    def ip_set_ids(self) -> frozenset[str]:
        """Every IP set the policy's rules refer to (computed once per object)."""
        return self._ip_set_ids

    @functools.cached_property
    def _ip_set_ids(self) -> frozenset[str]:
        return _rules_ip_set_ids(self.inbound_rules + self.outbound_rules)

    def ip_set_roles(self) -> frozenset[tuple[str, bool]]:
        """(IP set ID, used as an address-and-port set?) for every reference (computed once)."""
        return self._ip_set_roles

    @functools.cached_property
    def _ip_set_roles(self) -> frozenset[tuple[str, bool]]:
        return _rules_ip_set_roles(self.inbound_rules + self.outbound_rules)


@dataclass(frozen=True)
class Profile:
    name: str
    inbound_rules: tuple[Rule, ...] = ()
    outbound_rules: tuple[Rule, ...] = ()
    error: str | None = None

    def ip_set_ids(self) -> frozenset[str]:
        """Every IP set the profile's rules refer to (computed once per object)."""
        return self._ip_set_ids

    @functools.cached_property
    def _ip_set_ids(self) -> frozenset[str]:
        return _rules_ip_set_ids(self.inbound_rules + self.outbound_rules)

    def ip_set_roles(self) -> frozenset[tuple[str, bool]]:
        """(IP set ID, used as an address-and-port set?) for every reference (computed once)."""
        return self._ip_set_roles

    @functools.cached_property
    def _ip_set_roles(self) -> frozenset[tuple[str, bool]]:
        return _rules_ip_set_roles(self.inbound_rules + self.outbound_rules)


def _rules_ip_set_roles(rules: tuple[Rule, ...]) -> frozenset[tuple[str, bool]]:
    """Address sets (IP or NET members) vs address-and-port sets (IP_AND_PORT members):
    a set of the wrong type for its role cannot be rendered exactly."""
    roles: set[tuple[str, bool]] = set()
    for r in rules:
        for set_id in r.src_ip_set_ids + r.not_src_ip_set_ids + r.dst_ip_set_ids + r.not_dst_ip_set_ids:
            roles.add((set_id, False))
        for set_id in (
            r.src_named_port_ip_set_ids
            + r.not_src_named_port_ip_set_ids
            + r.dst_named_port_ip_set_ids
            + r.not_dst_named_port_ip_set_ids
            + r.dst_ip_port_set_ids
        ):
            roles.add((set_id, True))
    return frozenset(roles)


def _rules_ip_set_ids(rules: tuple[Rule, ...]) -> frozenset[str]:
    ids: set[str] = set()
    for rule in rules:
        ids.update(rule.ip_set_ids())
    return frozenset(ids)


@dataclass(frozen=True, slots=True)
class TierInfo:
    name: str
    ingress_policies: tuple[PolicyID, ...] = ()
    egress_policies: tuple[PolicyID, ...] = ()
    default_action: str = "Deny"  # "Deny" or "Pass"


@dataclass(frozen=True, slots=True)
class NatInfo:
    ext_ip: IPAddress
    int_ip: IPAddress


class WorkloadEndpointID(NamedTuple):
    """A NamedTuple: it keys every index of endpoints, so hashing runs in C."""

    orchestrator_id: str
    workload_id: str
    endpoint_id: str

    def __str__(self) -> str:
        return f"{self.orchestrator_id}/{self.workload_id}/{self.endpoint_id}"


@dataclass(frozen=True)
class WorkloadEndpoint:
    id: WorkloadEndpointID
    name: str  # host-side interface name, e.g. cali1234abcd5678
    state: str = "active"
    mac: str = ""
    profile_ids: tuple[str, ...] = ()
    ipv4_nets: tuple[ipaddress.IPv4Network, ...] = ()
    ipv6_nets: tuple[ipaddress.IPv6Network, ...] = ()
    tiers: tuple[TierInfo, ...] = ()
    ipv4_nat: tuple[NatInfo, ...] = ()
    ipv6_nat: tuple[NatInfo, ...] = ()
    allow_spoofed_source_prefixes: tuple[IPNetwork, ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    error: str | None = None

    @property
    def active(self) -> bool:
        return self.state == "active"

    def policy_ids(self) -> frozenset[PolicyID]:
        """Every policy listed in the endpoint's tiers (computed once per object)."""
        return self._policy_ids

    @functools.cached_property
    def _policy_ids(self) -> frozenset[PolicyID]:
        return _tier_policy_ids(self.tiers)


@dataclass(frozen=True, slots=True)
class HostEndpointID:
    endpoint_id: str

    def __str__(self) -> str:
        return self.endpoint_id


@dataclass(frozen=True, slots=True)
class ProfileID:
    name: str

    def __str__(self) -> str:
        return f"profile:{self.name}"


EndpointKey: TypeAlias = "WorkloadEndpointID | HostEndpointID"
RuleOwner: TypeAlias = "PolicyID | ProfileID"


@dataclass(frozen=True)
class HostEndpoint:
    id: HostEndpointID
    name: str = ""  # interface name, "*" for all, "" = select by expected addresses
    profile_ids: tuple[str, ...] = ()
    tiers: tuple[TierInfo, ...] = ()
    untracked_tiers: tuple[TierInfo, ...] = ()
    pre_dnat_tiers: tuple[TierInfo, ...] = ()
    forward_tiers: tuple[TierInfo, ...] = ()
    expected_ipv4_addrs: tuple[ipaddress.IPv4Address, ...] = ()
    expected_ipv6_addrs: tuple[ipaddress.IPv6Address, ...] = ()
    error: str | None = None

    def policy_ids(self) -> frozenset[PolicyID]:
        return _tier_policy_ids(self.tiers + self.untracked_tiers + self.pre_dnat_tiers + self.forward_tiers)


def _tier_policy_ids(tiers: tuple[TierInfo, ...]) -> frozenset[PolicyID]:
    ids: set[PolicyID] = set()
    for tier in tiers:
        ids.update(tier.ingress_policies)
        ids.update(tier.egress_policies)
    return frozenset(ids)


@dataclass(frozen=True, slots=True)
class HostMetadata:
    """A node's addresses. Each field is None when unknown."""

    hostname: str
    ipv4_addr: ipaddress.IPv4Address | None = None
    ipv4_net: ipaddress.IPv4Network | None = None  # the CIDR form, when Felix sent one
    ipv6_addr: ipaddress.IPv6Address | None = None
    ipv6_net: ipaddress.IPv6Network | None = None
    asnumber: str = ""
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class IPPool:
    id: str
    cidr: IPNetwork
    masquerade: bool = False
    ipip_mode: str = ""  # "", "always", "cross-subnet"
    vxlan_mode: str = ""
    allowed_uses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    dst: IPNetwork
    types: int = 0  # RouteType bit flags
    ip_pool_type: int = 0  # NONE 0, NO_ENCAP 1, VXLAN 2, IPIP 3
    dst_node_name: str = ""
    dst_node_ip: IPAddress | None = None
    same_subnet: bool = False
    nat_outgoing: bool = False
    local_workload: bool = False
    tunnel_ipip: bool = False
    tunnel_vxlan: bool = False
    tunnel_wireguard: bool = False
    borrowed: bool = False


@dataclass(frozen=True, slots=True)
class VTEP:
    node: str
    mac: str = ""
    ipv4_addr: ipaddress.IPv4Address | None = None
    parent_device_ip: ipaddress.IPv4Address | None = None
    mac_v6: str = ""
    ipv6_addr: ipaddress.IPv6Address | None = None
    parent_device_ipv6: ipaddress.IPv6Address | None = None


@dataclass(frozen=True, slots=True)
class Encapsulation:
    ipip_enabled: bool = False
    vxlan_enabled: bool = False
    vxlan_enabled_v6: bool = False
    no_encap_enabled: bool = False


@dataclass(frozen=True, slots=True)
class ServicePort:
    protocol: str
    port: int
    node_port: int = 0


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    namespace: str
    type: str = ""
    cluster_ips: tuple[str, ...] = ()
    loadbalancer_ip: str = ""
    external_ips: tuple[str, ...] = ()
    ports: tuple[ServicePort, ...] = ()
    loadbalancer_ingress_ips: tuple[str, ...] = ()


@dataclass(slots=True)
class IPSet:
    """An IP set. Mutable: deltas change `members` in place (sets are large).

    Members keep Felix's string form (`10.0.0.1/32`, `10.0.0.1,tcp:80`);
    `bad_members` holds those that failed validation, which makes the set
    (and everything that uses it) an error until they are removed.
    """

    id: str
    type: int
    members: set[str] = field(default_factory=set)
    bad_members: set[str] = field(default_factory=set)

    @property
    def error(self) -> str | None:
        if not self.bad_members:
            return None
        sample = sorted(self.bad_members)[:3]
        return (
            f"IP set {self.id} ({IPSET_TYPE_NAMES.get(self.type, self.type)}) has "
            f"{len(self.bad_members)} malformed member(s), e.g. {sample}"
        )
