"""The simulator's VPP: the object model the API handlers mutate and the packet model reads.

`VppState()` is a freshly started VPP (the equivalent of a VPP restart): `local0` at
sw_if_index 0, the default IPv4 and IPv6 FIB tables (id 0) with VPP's special entries,
nothing else. Everything here is plain data plus small helpers that more than one module
needs (interface lifecycle, FIB resolution, name formatting). No locking: the socket
server serialises calls.

Where a behaviour comes from VPP's source it says so (paths relative to `FDio/vpp`,
`src/`, at the 26.10-rc0 reference commit). `calico_vpp_driver/sim/README.md` lists every
modelled behaviour and every deliberate simplification.

Conventions kept from VPP because the driver can observe them:

* Objects live in pools (`vppinfra/pool.h`): an index is a slot, and a freed slot is
  reused by the next allocation, last freed first. sw_if_index, ACL indexes, npol
  object ids and cnat translation ids all behave like this.
* A freed npol slot that is still referenced keeps what a release build of VPP leaves
  in it (`Pool.ghosts`): npol never checks references, and its matcher reads the freed
  element (see `packet.py`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
    ip_network,
)
from typing import Any, Generic, NamedTuple, TypeVar

U32_MAX = 0xFFFFFFFF
"""`~0`: "no index" / "all" in VPP's API."""

IPAddr = IPv4Address | IPv6Address
IPNet = IPv4Network | IPv6Network
IPIface = IPv4Interface | IPv6Interface


class E:
    """`VNET_API_ERROR_*` values used by the simulator (vnet/error.h)."""

    UNSPECIFIED = -1
    INVALID_SW_IF_INDEX = -2
    NO_SUCH_FIB = -3
    NO_SUCH_ENTRY = -6
    INVALID_VALUE = -7
    INVALID_VALUE_2 = -8
    INVALID_SW_IF_INDEX_2 = -10
    SYSCALL_ERROR_1 = -11
    SYSCALL_ERROR_2 = -12
    FEATURE_DISABLED = -30
    INVALID_REGISTRATION = -31
    NO_PATHS_IN_ROUTE = -52
    NO_MATCHING_INTERFACE = -54
    INVALID_SRC_ADDRESS = -57
    INVALID_DST_ADDRESS = -58
    ADDRESS_NOT_FOUND_FOR_INTERFACE = -60
    INVALID_INTERFACE = -71
    IP6_NOT_ENABLED = -62
    NO_SUCH_NODE = -63
    NO_SUCH_NODE2 = -64
    UNEXPECTED_INTF_STATE = -74
    TUNNEL_EXIST = -75
    INVALID_DECAP_NEXT = -76
    IF_ALREADY_EXISTS = -79
    VALUE_EXIST = -81
    SAME_SRC_DST = -82
    IP_PREFIX_INVALID = -88
    INVALID_ADDRESS_FAMILY = -97
    ADDRESS_IN_USE = -105
    ADDRESS_FOUND_FOR_INTERFACE = -114
    ENTRY_ALREADY_EXISTS = -116
    ACL_IN_USE_INBOUND = -142
    ACL_IN_USE_OUTBOUND = -143
    INSTANCE_IN_USE = -147
    INVALID_PROTOCOL = -153
    INVALID_PREFIX_LENGTH = -171


# IP protocol numbers.
PROTO_ICMP = 1
PROTO_IPIP = 4
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMP6 = 58
PROTO_SCTP = 132
PROTO_NAMES = {
    0: "hopopt",
    PROTO_ICMP: "icmp",
    2: "igmp",
    PROTO_IPIP: "ipip",
    PROTO_TCP: "tcp",
    PROTO_UDP: "udp",
    41: "ipv6",
    47: "gre",
    50: "esp",
    51: "ah",
    PROTO_ICMP6: "icmp6",
    89: "ospf",
    PROTO_SCTP: "sctp",
    136: "udplite",
}
PROTO_NUMBERS = {name: num for num, name in PROTO_NAMES.items()} | {"icmpv6": PROTO_ICMP6}

# Interface status flags (interface_types.api).
IF_ADMIN_UP = 1
IF_LINK_UP = 2

# fib_types.api enums.
PATH_TYPE_NORMAL = 0
PATH_TYPE_LOCAL = 1
PATH_TYPE_DROP = 2
PATH_TYPE_ICMP_UNREACH = 5
PATH_TYPE_ICMP_PROHIBIT = 6
NH_PROTO_IP4 = 0
NH_PROTO_IP6 = 1

# FIB sources, best first (vnet/fib/fib_source.h; cnat registers priority 0x02).
SOURCE_PRIORITY = {"special": 0, "cnat": 1, "interface": 3, "api": 7, "default-route": 19}

# npol enums (npol.api).
NPOL_IP, NPOL_IP_AND_PORT, NPOL_NET = 0, 1, 2
NPOL_ALLOW, NPOL_DENY, NPOL_LOG, NPOL_PASS = 0, 1, 2, 3
NPOL_CIDR, NPOL_PORT_RANGE, NPOL_PORT_IP_SET, NPOL_IP_SET = 0, 1, 2, 3
NPOL_DEFAULT_ALLOW, NPOL_DEFAULT_DENY, NPOL_DEFAULT_PASS = 0, 1, 2
NPOL_FILTER_NONE, NPOL_FILTER_ICMP_TYPE, NPOL_FILTER_ICMP_CODE, NPOL_FILTER_L4_PROTO = 0, 1, 2, 3

# cnat enums (cnat.api).
CNAT_POLICY_NONE, CNAT_POLICY_IF_PFX, CNAT_POLICY_K8S, CNAT_POLICY_DNAT = 0, 1, 2, 3
CNAT_IF_INCLUDE_V4, CNAT_IF_INCLUDE_V6, CNAT_IF_POD, CNAT_IF_HOST = 0, 1, 2, 3
CNAT_SESSION_IS_RETURN = 1 << 4
CNAT_SNAT_F_NO_CLIENT = 2  # cnat_snat_policy_flags (cnat.api)
CNAT_SNAT_F_USE_AS_DEFAULT = 4

# urpf modes (urpf.api).
URPF_OFF, URPF_LOOSE, URPF_STRICT = 0, 1, 2

T = TypeVar("T")


class Pool(Generic[T]):
    """A VPP pool: stable indexes, freed slots reused last-freed-first (vppinfra/pool.h).

    `ghosts` keeps, for freed slots only, what a release build leaves in the freed
    element (`pool_put` does not clear memory outside ASAN builds). The next
    allocation of that slot replaces it.
    """

    def __init__(self) -> None:
        self._slots: list[T | None] = []
        self._free: list[int] = []
        self.ghosts: dict[int, T] = {}

    def alloc(self, item: T) -> int:
        if self._free:
            index = self._free.pop()
            self._slots[index] = item
        else:
            index = len(self._slots)
            self._slots.append(item)
        self.ghosts.pop(index, None)
        return index

    def replace(self, index: int, item: T) -> None:
        """Overwrite a live slot in place (an update keeps its index)."""
        if self._slots[index] is None:
            raise KeyError(index)
        self._slots[index] = item

    def next_index(self) -> int:
        """The index the next `alloc` returns."""
        return self._free[-1] if self._free else len(self._slots)

    def free(self, index: int, ghost: T | None = None) -> T:
        item = self._slots[index]
        if item is None:
            raise KeyError(index)
        self._slots[index] = None
        self._free.append(index)
        if ghost is not None:
            self.ghosts[index] = ghost
        return item

    def get(self, index: int) -> T | None:
        if 0 <= index < len(self._slots):
            return self._slots[index]
        return None

    def ever_allocated(self, index: int) -> bool:
        """True if the slot exists in the pool's vector (live or freed)."""
        return 0 <= index < len(self._slots)

    def __contains__(self, index: object) -> bool:
        return isinstance(index, int) and self.get(index) is not None

    def __len__(self) -> int:
        return sum(1 for item in self._slots if item is not None)

    def items(self) -> Iterator[tuple[int, T]]:
        for index, item in enumerate(self._slots):
            if item is not None:
                yield index, item


def addr_is_ip6(addr: IPAddr | IPNet | IPIface) -> bool:
    return addr.version == 6


def stable_hash(*parts: object) -> int:
    """A deterministic flow hash (the simulator's stand-in for VPP's flow hash)."""
    return zlib.crc32(repr(parts).encode())


# ---------------------------------------------------------------------------------------
# Interfaces


@dataclass
class Interface:
    """A software interface (vnet_sw_interface_t plus what the simulator needs of its device)."""

    sw_if_index: int
    name: str
    kind: str  # local | tap | af_packet | loopback | vxlan | ipip
    dev_type: str  # interface_dev_type in sw_interface_details (the device class name)
    mac: bytes = bytes(6)
    admin_up: bool = False
    link_up: bool = False
    tag: str = ""
    mtu: int = 9000
    # The sw interface's per-protocol MTUs [L3, IP4, IP6, MPLS] as sw_interface_set_mtu stored
    # them (0 in a protocol slot: the L3 value applies); None until set: VPP then reports the
    # hardware MTU as the L3 one.
    sw_mtu: list[int] | None = None
    table4: int = 0
    table6: int = 0
    addresses: list[IPIface] = field(default_factory=list)
    unnumbered_to: int | None = None
    cnat_feature: bool = False
    # The uRPF feature active on the interface's arcs, (is_input, af) -> mode. VPP's configuration
    # table is `VppState.urpf_cfgs` (kept per index across deletes); this is the feature, which
    # goes with the interface (feature.c vnet_feature_add_del_sw_interface).
    urpf: dict[tuple[bool, int], int] = field(default_factory=dict)
    # ip6_link.c: the link's lock count (an IPv6 address added and every API enable take one).
    # Above 0 the interface has a link-local address and does IPv6 neighbour discovery.
    ip6_link_locks: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def flags(self) -> int:
        return (IF_ADMIN_UP if self.admin_up else 0) | (IF_LINK_UP if self.link_up else 0)

    def table(self, is_ip6: bool) -> int:
        return self.table6 if is_ip6 else self.table4


# ---------------------------------------------------------------------------------------
# FIB


@dataclass
class FibPath:
    """One path of a route as the API carries it (fib_types.api fib_path), decoded."""

    sw_if_index: int = U32_MAX
    table_id: int = 0
    rpf_id: int = 0
    weight: int = 1
    preference: int = 0
    type: int = PATH_TYPE_NORMAL
    flags: int = 0
    proto: int = NH_PROTO_IP4
    nh: IPAddr | None = None

    def same_path(self, other: FibPath) -> bool:
        return (
            self.sw_if_index == other.sw_if_index
            and self.table_id == other.table_id
            and self.type == other.type
            and self.proto == other.proto
            and (self.nh or None) == (other.nh or None)
        )


@dataclass
class ApiRoute:
    paths: list[FibPath]
    stale: bool = False  # marked by ip_table_replace_begin, swept by ip_table_replace_end


@dataclass
class FibTable:
    table_id: int
    is_ip6: bool
    fib_index: int
    name: str = ""
    api_locked: bool = True
    routes: dict[IPNet, ApiRoute] = field(default_factory=dict)


@dataclass(frozen=True)
class FibEntry:
    """A FIB entry as the lookup sees it: the best source's contribution for a prefix."""

    prefix: IPNet
    source: str
    kind: str  # drop | local | paths | cnat-vip
    paths: tuple[FibPath, ...] = ()
    note: str = ""


def special_entries(is_ip6: bool) -> list[FibEntry]:
    """The entries every new FIB table starts with (fib_table.c / ip4_fib.c / ip6_fib.c)."""
    if not is_ip6:
        return [
            FibEntry(IPv4Network("0.0.0.0/0"), "default-route", "drop", note="default route"),
            FibEntry(IPv4Network("0.0.0.0/32"), "special", "drop"),
            FibEntry(IPv4Network("224.0.0.0/4"), "special", "drop", note="multicast"),
            FibEntry(IPv4Network("240.0.0.0/4"), "special", "drop", note="class E"),
            FibEntry(IPv4Network("255.255.255.255/32"), "special", "drop", note="broadcast"),
        ]
    return [
        FibEntry(IPv6Network("::/0"), "default-route", "drop", note="default route"),
        FibEntry(IPv6Network("fe80::/10"), "special", "local", note="link-local"),
    ]


# ---------------------------------------------------------------------------------------
# npol


NpolMember = IPAddr | IPNet | tuple[IPAddr, int, int]  # address | prefix | (address, proto, port)


@dataclass
class NpolIpset:
    type: int
    members: list[NpolMember] = field(default_factory=list)


@dataclass(frozen=True)
class NpolFilter:
    type: int
    value: int
    should_match: int


@dataclass(frozen=True)
class NpolEntry:
    is_src: bool
    is_not: bool
    type: int
    cidr: IPNet | None = None
    port_range: tuple[int, int] | None = None
    set_id: int | None = None

    @property
    def flags(self) -> int:
        """npol_rule_key_flag_t: bit 0 src, bit 1 not (npol_rule.h)."""
        return (1 if self.is_src else 0) | (2 if self.is_not else 0)


@dataclass
class NpolRule:
    action: int
    filters: list[NpolFilter] = field(default_factory=list)
    entries: list[NpolEntry] = field(default_factory=list)


@dataclass
class NpolPolicy:
    rx: list[int] = field(default_factory=list)  # rule ids of items with is_inbound = 1
    tx: list[int] = field(default_factory=list)


@dataclass
class NpolIfConfig:
    rx_policies: list[int]
    tx_policies: list[int]
    profiles: list[int]
    invert_rx_tx: int = 0
    policy_default_rx: int = 0
    policy_default_tx: int = 0
    profile_default_rx: int = 0
    profile_default_tx: int = 0


# ---------------------------------------------------------------------------------------
# acl


@dataclass(frozen=True)
class AclRule:
    is_permit: int
    src: IPNet
    dst: IPNet
    proto: int
    sport_first: int
    sport_last: int
    dport_first: int
    dport_last: int
    tcp_flags_mask: int = 0
    tcp_flags_value: int = 0


@dataclass
class Acl:
    tag: str
    rules: list[AclRule]


class AclSessionKey(NamedTuple):
    """A reflexive session's forward key (acl plugin, session_inlines.h)."""

    sw_if_index: int
    is_input: bool
    src: IPAddr
    dst: IPAddr
    proto: int
    port0: int  # sport, or ICMP type
    port1: int  # dport, or ICMP code


# ---------------------------------------------------------------------------------------
# cnat


@dataclass(frozen=True)
class CnatEndpoint:
    addr: IPAddr | None
    sw_if_index: int = U32_MAX
    if_af: int = 0
    port: int = 0


@dataclass(frozen=True)
class CnatPath:
    dst: CnatEndpoint
    src: CnatEndpoint
    flags: int = 0


@dataclass
class CnatTranslation:
    vip: CnatEndpoint
    proto: int
    is_real_ip: int
    flags: int
    lb_type: int
    flow_hash_config: int
    paths: list[CnatPath]


@dataclass
class SnatEntry:
    """A cnat SNAT policy entry (cnat_snat_policy_entry_t)."""

    fwd_fib_index: int
    ret_fib_index: int
    flags: int
    snat_ip4: IPv4Address = field(default_factory=lambda: IPv4Address(0))
    snat_ip6: IPv6Address = field(default_factory=lambda: IPv6Address(0))
    sw_if_index4: int = U32_MAX
    sw_if_index6: int = U32_MAX
    has4: bool = False
    has6: bool = False
    policy: int = CNAT_POLICY_NONE
    initialized: bool = False  # interface maps / prefix table allocated on first add
    exclude: set[IPNet] = field(default_factory=set)
    if_maps: dict[int, set[int]] = field(default_factory=dict)


class Tuple5(NamedTuple):
    """The flow key as cnat sees it (cnat_5tuple_t)."""

    src: IPAddr
    dst: IPAddr
    proto: int
    sport: int
    dport: int

    def reversed(self) -> Tuple5:
        return Tuple5(self.dst, self.src, self.proto, self.dport, self.sport)

    def __str__(self) -> str:
        return f"{self.src};{self.sport} -> {self.dst};{self.dport} {PROTO_NAMES.get(self.proto, self.proto)}"


@dataclass
class CnatFlow:
    """What a cnat session caches about its flow (the cnat_timestamp_t rewrites)."""

    fwd: Tuple5
    rx_sw_if_index: int
    dnat: Tuple5 | None = None  # tuple after the input rewrite
    input_drop: str | None = None
    output_evaluated: bool = False
    output_drop: str | None = None
    snat: Tuple5 | None = None  # tuple after the output rewrite
    npol_rx: str | None = None
    npol_tx: str | None = None


@dataclass
class CnatSession:
    index: int
    key: tuple[int, Tuple5]  # (fib table id, 5-tuple)
    is_return: bool
    flow: CnatFlow


# ---------------------------------------------------------------------------------------
# The whole VPP


class VppState:
    """Everything a running VPP holds that the simulator models. `VppState()` = VPP restart.

    Configuration knobs (attributes; set them before use):

    * `vhost_net` (default True): whether `/dev/vhost-net` exists. False makes
      `tap_create_v3` fail with -11 (SYSCALL_ERROR_1), as it does on hosts without it.
    * `host_interfaces` (default None = every name exists): the Linux interface names
      `af_packet_create_v3` can bind to; other names fail with -71 (INVALID_INTERFACE).
    * `npol_ipport_delete_bug` (default True): reproduce npol's member comparison for
      IP_AND_PORT sets (see handlers.npol_ipset_add_del_members).
    """

    def __init__(self, *, vhost_net: bool = True, host_interfaces: set[str] | None = None) -> None:
        # Bumped after every API request (handlers._guard): FIB contents derived from the state
        # (`fib_entries`) are cached per table until the next request.
        self.version = 0
        self._fib_cache: dict[tuple[bool, int], tuple[int, dict[IPNet, FibEntry]]] = {}
        self.vhost_net = vhost_net
        self.host_interfaces = host_interfaces
        self.npol_ipport_delete_bug = True
        self.interfaces: Pool[Interface] = Pool()
        self.interfaces.alloc(Interface(sw_if_index=0, name="local0", kind="local", dev_type="local", mtu=0))
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.event_clients: dict[int, int] = {}  # client_index -> pid
        self.tap_ids: set[int] = set()
        self.loop_instances: set[int] = set()
        self.vxlan_instances: set[int] = set()
        self.vxlan_dev: Pool[int] = Pool()  # dev instances (index) -> sw_if_index
        self.ipip_instances: set[int] = set()
        self.ipip_dev: Pool[int] = Pool()
        # Graph arcs the tunnels' decap_next_index refers to: node -> its next nodes, in
        # index order (vxlan.h foreach_vxlan_input_next); add_node_next appends.
        self.node_nexts: dict[str, list[str]] = {
            "vxlan4-input": ["error-drop", "l2-input"],
            "vxlan6-input": ["error-drop", "l2-input"],
        }
        self.graph_nodes: set[str] = {
            "vxlan4-input", "vxlan6-input", "ip4-input", "ip6-input", "ip4-lookup", "ip6-lookup",
            "l2-input", "error-drop",
        }  # fmt: skip
        self.mac_counter = 0
        # urpf.c urpf_cfgs[af][dir][sw_if_index]: what urpf_update last configured for an index.
        # Nothing clears it when an interface is deleted, so the next interface given that index
        # starts with it: (af, is_input, sw_if_index) -> mode.
        self.urpf_cfgs: dict[tuple[int, bool, int], int] = {}
        # FIB
        self.tables: dict[tuple[bool, int], FibTable] = {}
        self.fib_index_pool: dict[bool, Pool[int]] = {False: Pool(), True: Pool()}
        self.stats_index: dict[tuple[int, bool, IPNet], int] = {}
        self.create_table(False, 0, "ipv4-VRF:0")
        self.create_table(True, 0, "ipv6-VRF:0")
        # npol
        self.npol_ipsets: Pool[NpolIpset] = Pool()
        self.npol_rules: Pool[NpolRule] = Pool()
        self.npol_policies: Pool[NpolPolicy] = Pool()
        self.npol_if: dict[int, NpolIfConfig] = {}
        # acl
        self.acls: Pool[Acl] = Pool()
        self.acl_input: dict[int, list[int]] = {}
        self.acl_output: dict[int, list[int]] = {}
        self.acl_sessions: set[AclSessionKey] = set()
        # cnat
        self.translations: Pool[CnatTranslation] = Pool()
        self.snat: dict[int, SnatEntry] = {}  # fwd_fib_index -> entry
        # cnat_snat_cleanup frees an entry made with USE_AS_DEFAULT but leaves
        # snat_default_policy pointing at it: from then on VPP "finds" the freed entry.
        self.snat_default_freed = False
        #: Requests VPP accepts but that leave it broken (VPP bugs a driver must steer clear
        #: of); the server reports each one in its errors, naming the request.
        self.hazards: list[str] = []
        self.cnat_sessions: dict[tuple[int, Tuple5], CnatSession] = {}
        self.cnat_session_counter = 0

    # -- interfaces -------------------------------------------------------------------

    def interface(self, sw_if_index: int) -> Interface | None:
        return self.interfaces.get(sw_if_index)

    def if_name(self, sw_if_index: int) -> str:
        itf = self.interfaces.get(sw_if_index)
        return itf.name if itf else f"sw_if_index {sw_if_index} (deleted)"

    def next_mac(self, prefix: bytes = b"\x02\xfe") -> bytes:
        self.mac_counter += 1
        return prefix + self.mac_counter.to_bytes(6 - len(prefix), "big")

    def add_interface(self, itf: Interface, *, link_up: bool = False) -> Interface:
        """Create an interface at the next free sw_if_index and announce it."""
        index = self.interfaces.alloc(itf)
        itf.sw_if_index = index
        itf.link_up = link_up
        self.emit_interface_event(index, IF_LINK_UP if link_up else 0, deleted=False)
        return itf

    def delete_interface(self, sw_if_index: int) -> None:
        """vnet_delete_sw_interface: tag cleared, flags down, add/del callbacks run."""
        itf = self.interfaces.get(sw_if_index)
        if itf is None:
            return
        itf.admin_up = False
        itf.link_up = False
        itf.tag = ""
        # npol_sw_interface_add_del -> npol_unconfigure_policies
        self.npol_if.pop(sw_if_index, None)
        # acl_sw_interface_add_del: ACL lists reset, sessions of the interface deleted
        for table in (self.acl_input, self.acl_output):
            table.pop(sw_if_index, None)
        self.acl_sessions = {s for s in self.acl_sessions if s.sw_if_index != sw_if_index}
        # cnat registers no interface add/del callback (plugins/cnat: no
        # VNET_SW_INTERFACE_ADD_DEL_FUNCTION): the SNAT interface maps keep the deleted
        # interface's bit, and the next interface given this index inherits it.
        for _, other in self.interfaces.items():
            if other.unnumbered_to == sw_if_index:
                other.unnumbered_to = None
        self.interfaces.free(sw_if_index)
        for is_ip6, table_id in ((False, itf.table4), (True, itf.table6)):
            self.maybe_destroy_table(is_ip6, table_id)
        self.emit_interface_event(sw_if_index, 0, deleted=True)

    def emit_interface_event(self, sw_if_index: int, flags: int, *, deleted: bool) -> None:
        """Queue one sw_interface_event (interface_api.c link_state_process).

        VPP batches the events of one interface; the flags carry the "up" events seen in
        the batch (admin up -> ADMIN_UP bit, link up -> LINK_UP bit), so a down transition
        is an event with flags 0. The simulator batches per API call. The event is
        queued whoever subscribed: the server delivers it to the clients registered
        with want_interface_events and fills in their client_index and pid.
        """
        self.events.append(
            (
                "sw_interface_event",
                {"client_index": 0, "pid": 0, "sw_if_index": sw_if_index, "flags": flags, "deleted": deleted},
            )
        )

    def forget_client(self, client_index: int) -> None:
        """The API reaper: a client that went away loses its event registration (only
        used when `want_interface_events` is handled here rather than by the server)."""
        self.event_clients.pop(client_index, None)

    def node_next(self, node: str, next_node: str) -> int | None:
        """The index of the arc node -> next_node, None if there is none (yet)."""
        nexts = self.node_nexts.get(node, [])
        return nexts.index(next_node) if next_node in nexts else None

    def set_admin(self, itf: Interface, up: bool) -> None:
        """vnet_sw_interface_set_flags plus the device's admin_up_down function.

        tap (tap.c tap_interface_admin_up_down), af_packet (device.c), loopback
        (ethernet/interface.c simulated_ethernet_admin_up_down) and the tunnels bring
        the link up with admin up and down with admin down.
        """
        if itf.admin_up == up:
            return
        itf.admin_up = up
        if itf.kind != "local":
            itf.link_up = up
        flags = (IF_ADMIN_UP | (IF_LINK_UP if itf.link_up else 0)) if up else 0
        self.emit_interface_event(itf.sw_if_index, flags, deleted=False)

    def ip_enabled(self, itf: Interface, is_ip6: bool) -> bool:
        """ip4/ip6 is enabled on an interface with an address of the family, or unnumbered;
        ip6 also with its IPv6 link enabled (ip6_link_enable enables ip6 forwarding)."""
        if itf.unnumbered_to is not None:
            return True
        if is_ip6 and itf.ip6_link_locks > 0:
            return True
        return any(a.version == (6 if is_ip6 else 4) for a in itf.addresses)

    @staticmethod
    def needs_ip6_link(itf: Interface) -> bool:
        """Whether IPv6 leaving by this interface needs neighbour discovery, which needs the
        interface's IPv6 link (ip6-discover-neighbor drops without it, ip6_neighbor.c). Modelled
        for af_packet interfaces in ETHERNET mode; TUN taps, IP-mode af_packet and tunnels are
        point to point."""
        return itf.kind == "af_packet" and itf.info.get("mode") == 1

    @staticmethod
    def ip6_link_local(itf: Interface) -> IPv6Address | None:
        """The interface's link-local address while its IPv6 link is enabled: EUI-64 of its MAC
        for an Ethernet MAC (ip6_link.c ip6_link_local_address_from_mac), None otherwise (VPP
        picks a random one for interfaces without a MAC)."""
        if itf.ip6_link_locks <= 0 or itf.mac == bytes(6):
            return None
        m = itf.mac
        eui = bytes([m[0] ^ 0x02, m[1], m[2], 0xFF, 0xFE, m[3], m[4], m[5]])
        return IPv6Address(b"\xfe\x80" + bytes(6) + eui)

    def effective_addresses(self, itf: Interface, is_ip6: bool) -> list[IPIface]:
        source = itf
        if itf.unnumbered_to is not None:
            other = self.interfaces.get(itf.unnumbered_to)
            if other is not None:
                source = other
        return [a for a in source.addresses if a.version == (6 if is_ip6 else 4)]

    # -- FIB ---------------------------------------------------------------------------

    def create_table(self, is_ip6: bool, table_id: int, name: str = "") -> FibTable:
        key = (is_ip6, table_id)
        table = self.tables.get(key)
        if table is None:
            fib_index = self.fib_index_pool[is_ip6].alloc(table_id)
            table = FibTable(table_id=table_id, is_ip6=is_ip6, fib_index=fib_index, name=name)
            self.tables[key] = table
        return table

    def table(self, is_ip6: bool, table_id: int) -> FibTable | None:
        return self.tables.get((is_ip6, table_id))

    def table_by_fib_index(self, is_ip6: bool, fib_index: int) -> FibTable | None:
        for table in self.tables.values():
            if table.is_ip6 == is_ip6 and table.fib_index == fib_index:
                return table
        return None

    def interfaces_bound(self, is_ip6: bool, table_id: int) -> list[Interface]:
        return [itf for _, itf in self.interfaces.items() if itf.table(is_ip6) == table_id]

    def maybe_destroy_table(self, is_ip6: bool, table_id: int) -> None:
        """fib_table_unlock: a table goes when neither the API nor an interface holds it."""
        if table_id == 0:
            return
        table = self.tables.get((is_ip6, table_id))
        if table is None or table.api_locked or self.interfaces_bound(is_ip6, table_id):
            return
        del self.tables[(is_ip6, table_id)]
        self.fib_index_pool[is_ip6].free(table.fib_index)

    def stats_index_for(self, table: FibTable, prefix: IPNet) -> int:
        key = (table.fib_index, table.is_ip6, prefix)
        if key not in self.stats_index:
            self.stats_index[key] = len(self.stats_index)
        return self.stats_index[key]

    def interface_entries(self, table: FibTable) -> list[FibEntry]:
        """Connected/local entries of admin-up interfaces bound to the table.

        ip4_forward.c ip4_add_interface_routes / ip4_add_interface_prefix_routes (and the
        ip6 equivalents): the address /32 (/128) is local (receive), the prefix is
        attached to the interface, and for IPv4 prefixes up to /30 the network and
        broadcast addresses are drop entries; a /31 makes the peer address attached.
        Routes exist only while the interface is admin up.
        """
        entries: list[FibEntry] = []
        for _, itf in self.interfaces.items():
            if not itf.admin_up or itf.table(table.is_ip6) != table.table_id:
                continue
            for addr in itf.addresses:
                if addr.version != (6 if table.is_ip6 else 4):
                    continue
                host = ip_network(f"{addr.ip}/{addr.max_prefixlen}")
                proto = NH_PROTO_IP6 if table.is_ip6 else NH_PROTO_IP4
                entries.append(
                    FibEntry(
                        host,
                        "interface",
                        "local",
                        (FibPath(itf.sw_if_index, type=PATH_TYPE_LOCAL, proto=proto, nh=addr.ip),),
                        note=f"local address of {itf.name}",
                    )
                )
                if addr.network.prefixlen == addr.max_prefixlen:
                    continue
                entries.append(
                    FibEntry(
                        addr.network,
                        "interface",
                        "paths",
                        (FibPath(itf.sw_if_index, proto=proto),),
                        note=f"attached to {itf.name}",
                    )
                )
                if not table.is_ip6 and addr.network.prefixlen <= 30:
                    for special in (addr.network.network_address, addr.network.broadcast_address):
                        if special != addr.ip:
                            entries.append(
                                FibEntry(
                                    ip_network(f"{special}/32"),
                                    "interface",
                                    "drop",
                                    note=f"network/broadcast address of {itf.name}'s subnet",
                                )
                            )
                elif not table.is_ip6 and addr.network.prefixlen == 31:
                    peer = IPv4Address(int(addr.ip) ^ 1)
                    entries.append(
                        FibEntry(
                            ip_network(f"{peer}/32"),
                            "interface",
                            "paths",
                            (FibPath(itf.sw_if_index, proto=proto, nh=peer),),
                            note=f"/31 peer on {itf.name}",
                        )
                    )
        return entries

    def cnat_entries(self, table: FibTable) -> list[FibEntry]:
        """cnat clients: a /32 (/128) per VIP address in table 0 (cnat_client.c).

        A VIP that is not a real IP is EXCLUSIVE (its parent is drop); a real IP is
        interposed (its parent is whatever the FIB says).
        """
        if table.table_id != 0:
            return []
        entries: list[FibEntry] = []
        seen: set[IPAddr] = set()
        for _, tr in self.translations.items():
            addr = tr.vip.addr
            if tr.vip.sw_if_index != U32_MAX or addr is None or addr in seen:
                continue
            if addr.version != (6 if table.is_ip6 else 4) or tr.is_real_ip:
                continue
            seen.add(addr)
            entries.append(
                FibEntry(
                    ip_network(f"{addr}/{addr.max_prefixlen}"),
                    "cnat",
                    "cnat-vip",
                    note="cnat VIP (exclusive: drop unless a translation matches)",
                )
            )
        # cnat_set_snat without the NO_CLIENT flag (cnat_snat_policy.c) adds a client for each
        # SNAT address given as an address, in the return FIB: EXCLUSIVE | RETURN_ONLY; its node
        # (ip4-cnat-return, cnat_node_vip.c) drops every packet that is not a reply to a NATed
        # flow, so the address is unreachable for anything else.
        for snat in self.snat.values():
            addr = snat.snat_ip6 if table.is_ip6 else snat.snat_ip4
            if snat.flags & CNAT_SNAT_F_NO_CLIENT or snat.ret_fib_index != table.fib_index:
                continue
            if not int(addr) or addr in seen:
                continue
            seen.add(addr)
            entries.append(
                FibEntry(
                    ip_network(f"{addr}/{addr.max_prefixlen}"),
                    "cnat",
                    "cnat-vip",
                    note="cnat SNAT address client (exclusive, return only: drop unless a reply"
                    " to a NATed flow)",
                )
            )
        return entries

    def fib_entries(self, table: FibTable) -> dict[IPNet, FibEntry]:
        """Every prefix of the table with the contribution of its best source."""
        key = (table.is_ip6, table.table_id)
        cached = self._fib_cache.get(key)
        if cached is not None and cached[0] == self.version:
            return cached[1]
        best = self._fib_entries(table)
        self._fib_cache[key] = (self.version, best)
        return best

    def _fib_entries(self, table: FibTable) -> dict[IPNet, FibEntry]:
        candidates: list[FibEntry] = list(special_entries(table.is_ip6))
        candidates += self.cnat_entries(table)
        candidates += self.interface_entries(table)
        for prefix, route in table.routes.items():
            kind = "paths"
            if route.paths and all(p.type == PATH_TYPE_DROP for p in route.paths):
                kind = "drop"
            candidates.append(FibEntry(prefix, "api", kind, tuple(route.paths)))
        best: dict[IPNet, FibEntry] = {}
        for entry in candidates:
            current = best.get(entry.prefix)
            if current is None or SOURCE_PRIORITY[entry.source] < SOURCE_PRIORITY[current.source]:
                best[entry.prefix] = entry
        return best

    def lookup(self, is_ip6: bool, table_id: int, addr: IPAddr) -> FibEntry | None:
        """Longest prefix match in a table (None if the table does not exist)."""
        table = self.tables.get((is_ip6, table_id))
        if table is None:
            return None
        found: FibEntry | None = None
        for prefix, entry in self.fib_entries(table).items():
            if addr in prefix and (found is None or prefix.prefixlen > found.prefix.prefixlen):
                found = entry
        return found

    def resolve(
        self,
        is_ip6: bool,
        table_id: int,
        addr: IPAddr,
        flow_hash: int,
        depth: int = 0,
        hops: list[IPAddr] | None = None,
    ) -> tuple[str, int | None, list[str]]:
        """Where the FIB sends `addr`: ("tx", sw_if_index) | ("local", sw_if_index) |
        ("drop", None) | ("cnat-vip", None), with the lookup steps for a trace. `hops`, if
        given, gets the next hops of the paths followed, outermost first."""
        steps: list[str] = []
        entry = self.lookup(is_ip6, table_id, addr)
        if entry is None:
            return "drop", None, [f"table {table_id} does not exist"]
        steps.append(
            f"fib: {addr} in table {table_id} matches {entry.prefix} ({entry.source}"
            + (f", {entry.note}" if entry.note else "")
            + ")"
        )
        if entry.kind in ("drop", "local", "cnat-vip"):
            local_if = entry.paths[0].sw_if_index if entry.paths else None
            return entry.kind, local_if, steps
        paths = list(entry.paths)
        if not paths:
            return "drop", None, [*steps, "fib: entry has no paths: drop"]
        best_pref = min(p.preference for p in paths)
        paths = [p for p in paths if p.preference == best_pref]
        path = paths[flow_hash % len(paths)] if len(paths) > 1 else paths[0]
        if len(paths) > 1:
            steps.append(f"fib: {len(paths)} equal paths, flow hash picks one")
        if path.type in (PATH_TYPE_DROP, PATH_TYPE_ICMP_UNREACH, PATH_TYPE_ICMP_PROHIBIT):
            return "drop", None, [*steps, f"fib: path type {path.type} drops"]
        if path.type == PATH_TYPE_LOCAL:
            return "local", path.sw_if_index if path.sw_if_index != U32_MAX else None, steps
        if hops is not None and path.nh is not None and int(path.nh) != 0:
            hops.append(path.nh)
        if path.sw_if_index != U32_MAX:
            if path.sw_if_index not in self.interfaces:
                return "drop", None, [*steps, f"fib: path via deleted sw_if_index {path.sw_if_index}"]
            via = f"next hop {path.nh}" if path.nh is not None else "attached"
            steps.append(f"fib: path {via} on {self.if_name(path.sw_if_index)}")
            return "tx", path.sw_if_index, steps
        if depth >= 8:
            return "drop", None, [*steps, "fib: recursion too deep"]
        target = addr if path.nh is None or int(path.nh) == 0 else path.nh
        kind = "deag" if target is addr else "recursive"
        steps.append(f"fib: {kind} lookup of {target} in table {path.table_id}")
        result, sw_if_index, more = self.resolve(is_ip6, path.table_id, target, flow_hash, depth + 1, hops)
        return result, sw_if_index, steps + more

    # -- npol --------------------------------------------------------------------------

    def npol_rule_view(self, rule_id: int) -> tuple[NpolRule | None, str]:
        """The rule npol's matcher reads at an index: live, freed (ghost) or never allocated."""
        rule = self.npol_rules.get(rule_id)
        if rule is not None:
            return rule, "live"
        ghost = self.npol_rules.ghosts.get(rule_id)
        if ghost is not None:
            return ghost, "freed"
        return None, "invalid"

    def npol_policy_view(self, policy_id: int) -> tuple[NpolPolicy | None, str]:
        policy = self.npol_policies.get(policy_id)
        if policy is not None:
            return policy, "live"
        ghost = self.npol_policies.ghosts.get(policy_id)
        if ghost is not None:
            return ghost, "freed"
        return None, "invalid"

    def npol_ipset_view(self, set_id: int) -> tuple[NpolIpset | None, str]:
        ipset = self.npol_ipsets.get(set_id)
        if ipset is not None:
            return ipset, "live"
        ghost = self.npol_ipsets.ghosts.get(set_id)
        if ghost is not None:
            return ghost, "freed"
        return None, "invalid"

    def npol_dangling(self) -> list[str]:
        """References npol holds to deleted objects (VPP accepts them; see README)."""
        problems: list[str] = []
        for rule_id, rule in self.npol_rules.items():
            for entry in rule.entries:
                if entry.set_id is not None and entry.set_id not in self.npol_ipsets:
                    problems.append(f"rule {rule_id} references deleted ipset {entry.set_id}")
        for policy_id, policy in self.npol_policies.items():
            for rule_id in policy.rx + policy.tx:
                if rule_id not in self.npol_rules:
                    problems.append(f"policy {policy_id} references deleted rule {rule_id}")
        for sw_if_index, conf in self.npol_if.items():
            for policy_id in conf.rx_policies + conf.tx_policies + conf.profiles:
                if policy_id not in self.npol_policies:
                    problems.append(f"interface {sw_if_index} references deleted policy {policy_id}")
        return problems

    # -- acl ---------------------------------------------------------------------------

    def acl_in_use(self, acl_index: int) -> tuple[bool, bool]:
        inbound = any(acl_index in acls for acls in self.acl_input.values())
        outbound = any(acl_index in acls for acls in self.acl_output.values())
        return inbound, outbound

    # -- cnat --------------------------------------------------------------------------

    def endpoint_address(self, ep: CnatEndpoint) -> IPAddr | None:
        """The address a cnat endpoint resolves to now: its own, or its interface's first
        address of its family (None: an interface without one)."""
        if ep.sw_if_index == U32_MAX:
            return ep.addr
        itf = self.interfaces.get(ep.sw_if_index)
        if itf is None:
            return None
        addrs = self.effective_addresses(itf, ep.if_af == 1)
        return addrs[0].ip if addrs else None

    def default_snat(self) -> SnatEntry | None:
        """cnat_snat_policy_entry_get_default: the entry of fwd fib index 0."""
        return self.snat.get(0)

    def new_cnat_session_index(self) -> int:
        self.cnat_session_counter += 1
        return self.cnat_session_counter

    def expire_sessions(self) -> None:
        """Let time pass: every cnat and acl session expires (the simulator has no clock)."""
        self.cnat_sessions.clear()
        self.acl_sessions.clear()
