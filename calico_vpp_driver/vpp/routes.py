"""Routes and tunnels to the other nodes' pods, from Felix's routing messages.

What Felix asks (``RouteUpdate``, ``VXLANTunnelEndpointUpdate``, ``HostMetadata``) and what VPP
gets, all in FIB table 0 of the route's family (Felix's ``route_mgr.go``, ``vxlan_mgr.go`` and
``ipip_mgr.go`` are the reference; ``l3_route_resolver.go`` computes the messages):

* **Remote workload blocks** (``REMOTE_WORKLOAD``, borrowed or not: a pod address borrowed by
  another node arrives as its own /32 or /128 and longest-prefix match does the rest):

  - pool type ``NO_ENCAP``, or a cross-subnet pool with ``same_subnet``: straight to the other
    node, a path with no interface and next hop ``dst_node_ip``, which VPP resolves recursively
    through table 0 (the uplink's attached prefix, or its default route when the node is in
    another subnet);
  - ``VXLAN``: through an L3 VXLAN tunnel to the remote VTEP (outer source this node's address,
    outer destination the VTEP's ``parent_device_ip``/``parent_device_ipv6``, VNI and UDP port
    from ``VXLANVNI``/``VXLANPort``), next hop the VTEP's tunnel address. Until the node's VTEP is
    known the route is not programmed and reported, as Felix leaves it out.
  - ``IPIP``: through an IP-in-IP tunnel to ``dst_node_ip`` (from the node's host metadata when
    the route has none), no next hop (the tunnel is point to point).

  A route that is also ``REMOTE_TUNNEL`` (the other node's tunnel address itself) has no next hop:
  it is the far end of the tunnel (Felix's ``isRemoteTunnelRoute``/``isBorrowedRoute``).
* **Local IPAM blocks** (``LOCAL_WORKLOAD`` without ``local_workload``, not a /32 or /128, in an
  IP pool): a drop route, as Felix's blackhole routes, so that packets to the block's unused
  addresses are dropped here instead of following the default route out (and back). The pods'
  own /32 and /128 (``local_workload``) belong to the CNI pod code and are never touched.
* ``REMOTE_HOST``, ``LOCAL_HOST`` and pool-only routes: nothing. Felix programs no route for them
  either (its route managers only take remote workload and tunnel routes): remote hosts are
  reached through the uplink. WireGuard is not supported: logged once, routes go by pool type.

Tunnels: one per (kind, peer, addresses, VNI, port), created when a route first needs it, set up
(tag; unnumbered from the interface holding this node's address, else from the default route's
interface, because VPP drops what a tunnel decapsulates unless IP is enabled on it; its MTU when
Felix's config sets one; admin up) and deleted when no route uses it. VXLAN tunnels are L3
(``is_l3``) and hand what they decapsulate to ip4-input/ip6-input, whose arc index VPP gives with
``add_node_next``. A change of VNI, port or address makes a new tunnel; the routes move to it
(replaced in place) before the old one is deleted. Each tunnel is tagged
``cvd-vxlan:<node>#<fingerprint>`` (``cvd-vxlan6``, ``cvd-ipip``, ``cvd-ipip6``), the fingerprint
being a hash of those parameters, so that a restarted driver finds it with ``sw_interface_dump``
and knows whether it is still wanted.

MTU: ``VXLANMTU`` for VXLAN tunnels over IPv4, ``VXLANMTUV6`` over IPv6, ``IpInIpMtu`` for IP-in-IP
over either family (Felix has no IPv6 IP-in-IP MTU), sent as the tunnel's L3 MTU
(``sw_interface_set_mtu`` ``[mtu, 0, 0, 0]``: the per-protocol 0s mean "the L3 MTU"). 0, Felix's
default (Felix then derives the MTU from the host's interfaces), leaves VPP's default alone. The
MTU is not part of a tunnel's identity: VPP keys tunnels by addresses, VNI and port and would
refuse a second tunnel that differed only in its MTU. So a changed MTU is set on the existing
tunnel in place (no route moves, no gap); going back to 0 restores VPP's default on tunnels the
driver had set an MTU on. The MTU is not in the tag either, so tags and records of tunnels made
before MTUs were applied stay valid, and a restart compares the recorded and dumped MTU with the
config instead of replacing tunnels.

Ownership and restart: a record file, not mark-and-sweep. The routes live in table 0, next to
routes the driver did not make (the uplink's default route, the pods' /32s added by the CNI
code, attached prefixes), and ``ip_table_replace_begin/end`` on table 0 would sweep every API
route not re-added, including the CNI's. So the driver records what it made in
``<vpp_state_dir>/routes.json``: the VPP instance id (a record of another VPP is void), the
prefixes of its routes and the parameters of its tunnels (by tag). The record is written
*ahead*: before a batch adds a prefix or creates a tunnel, so it always holds a superset of what
the driver made, and a crash can leave no unrecorded route. After a restart, ``adopt`` reads it,
dumps the interfaces (tunnels by tag) and table 0, and takes over every recorded route whose
path still has the driver's shape (recursive via a next hop, through one of its tunnels, or
drop); a recorded prefix now held by someone else's path is forgotten, not deleted. The first
apply then compares the model with what was adopted: equal routes cost nothing, changed ones
are replaced in place, stale ones deleted. Deletes name the driver's own path (multipath
delete), so a prefix someone else re-added with another path keeps that path. A tunnel VPP
already has with the same addresses is taken over only if the record says the driver was
creating it (a crash between its creation and its tag); any other is left alone and reported.
Without the record (file lost) tunnels are still found by tag and the model's routes re-added
in place, but stale routes cannot be told from others' and stay, and a stale VXLAN tunnel
(deleted by its parameters, which only the record had) is logged for an operator.

Costs: a ``RouteUpdate`` is one ``ip_route_add_del`` (plus, for a node's first route, four
messages to create and set up its tunnel, five with an MTU; for a new prefix, one small file
write); a full resync is three pipelined batches (tunnels, their setup, routes) and nothing at all
for what is already right; an MTU change is one ``sw_interface_set_mtu`` per tunnel.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import structlog

from ..config import Config
from ..model.state import DesiredState, Dirty
from ..model.types import VTEP, IPAddress, IPNetwork, Route
from .client import Request, Result
from .errors import VppApiError, VppEncodeError
from .npol_store import RenderError
from .records import read_record, write_record

log = structlog.get_logger("calico_vpp_driver.vpp.routes")

RECORD_FILE = "routes.json"
U32_MAX = 0xFFFFFFFF
TAG_MAX = 63
TAG_PREFIX = "cvd-"

# felixbackend.proto RouteType (bit flags) and IPPoolType.
RT_REMOTE_WORKLOAD = 1
RT_REMOTE_HOST = 2
RT_LOCAL_WORKLOAD = 4
RT_LOCAL_HOST = 8
RT_REMOTE_TUNNEL = 16
RT_LOCAL_TUNNEL = 32
POOL_NONE = 0
POOL_NO_ENCAP = 1
POOL_VXLAN = 2
POOL_IPIP = 3
POOL_NAMES = {POOL_NONE: "NONE", POOL_NO_ENCAP: "NO_ENCAP", POOL_VXLAN: "VXLAN", POOL_IPIP: "IPIP"}

# fib_types.api
_PATH_NORMAL = 0
_PATH_DROP = 2
_ADMIN_UP = 1
# vnet/error.h
_TUNNEL_EXIST = -75
_IF_ALREADY_EXISTS = -79
# The L3 MTU VPP gives a new tunnel, put back when the config's MTU goes back to 0 (not set):
# ipip.c sets 9000 itself; a VXLAN tunnel keeps the 0 vnet_register_interface leaves, which
# vnet_sw_interface_get_mtu reads as 9000.
_DEFAULT_L3_MTU = {"vxlan": 0, "ipip": 9000}


class TunnelSpec(NamedTuple):
    """Everything the driver wants of a tunnel. A change of any field but ``mtu`` is another
    tunnel; ``mtu`` (0: VPP's default) is set on the tunnel in place, since VPP tells tunnels
    apart by their addresses, VNI and port only and would refuse a second one that differs in
    its MTU alone."""

    kind: str  # "vxlan" | "ipip"
    node: str
    src: IPAddress
    dst: IPAddress
    vni: int = 0
    port: int = 0
    mtu: int = 0

    @property
    def family(self) -> int:
        return self.dst.version

    @property
    def tag(self) -> str:
        """``cvd-<kind>[6]:<node>#<fingerprint>``, at most 63 characters (long node names are
        cut and completed with a hash of the whole name). The MTU is not in the fingerprint:
        it is not part of the tunnel's identity (class docstring)."""
        fp = hashlib.sha256(repr(tuple(self._identity().items())).encode()).hexdigest()[:8]
        head = f"{TAG_PREFIX}{self.kind}{'6' if self.family == 6 else ''}:"
        node = self.node
        room = TAG_MAX - len(head) - len(fp) - 1
        if len(node) > room:
            node = node[: room - 13] + "~" + hashlib.sha256(node.encode()).hexdigest()[:12]
        return f"{head}{node}#{fp}"

    def _identity(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "node": self.node,
            "src": str(self.src),
            "dst": str(self.dst),
            "vni": self.vni,
            "port": self.port,
        }

    def _json(self) -> dict[str, Any]:
        """The record's form: the identity, and the MTU only when one is set (records written
        before MTUs were applied read back the same)."""
        data = self._identity()
        if self.mtu:
            data["mtu"] = self.mtu
        return data

    def to_json(self) -> dict[str, Any]:
        return self._json()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TunnelSpec:
        return cls(
            str(data["kind"]),
            str(data["node"]),
            ipaddress.ip_address(data["src"]),
            ipaddress.ip_address(data["dst"]),
            int(data.get("vni", 0)),
            int(data.get("port", 0)),
            int(data.get("mtu", 0)),
        )

    def __str__(self) -> str:
        extra = f" vni {self.vni} port {self.port}" if self.kind == "vxlan" else ""
        if self.mtu:
            extra += f" mtu {self.mtu}"
        return f"{self.kind} tunnel to node {self.node} ({self.src} -> {self.dst}{extra})"


class Path(NamedTuple):
    """The one path of a route the driver makes.

    ``via``: no interface, next hop ``nh`` resolved through table 0; ``tunnel``: through the
    tunnel tagged ``tunnel``, next hop ``nh`` or none; ``drop``: a blackhole.
    """

    kind: str
    nh: IPAddress | None = None
    tunnel: str = ""

    def __str__(self) -> str:
        if self.kind == "drop":
            return "drop"
        nh = f" via {self.nh}" if self.nh is not None else ""
        return f"tunnel {self.tunnel}{nh}" if self.kind == "tunnel" else f"direct{nh}"


@dataclass(slots=True)
class _Tunnel:
    sw_if_index: int
    spec: TunnelSpec | None  # None: adopted from VPP, parameters unknown (record lost)
    # The L3 MTU VPP has for it, when known: dumped at adoption, or set by this process.
    # None: created by this process and left at VPP's default.
    mtu: int | None = None


@dataclass(slots=True)
class _Plan:
    """One apply's work."""

    changes: dict[IPNetwork, tuple[Path, TunnelSpec | None]] = field(default_factory=dict)
    deletes: list[IPNetwork] = field(default_factory=list)
    problems: dict[IPNetwork, str] = field(default_factory=dict)
    # The tunnel every route of this apply wants, changed or not (by tag): an MTU change
    # moves no route, so existing tunnels' MTUs are compared against these.
    tunnels: dict[str, TunnelSpec] = field(default_factory=dict)
    users: dict[str, list[IPNetwork]] = field(default_factory=dict)  # tag -> those routes


class _Own(NamedTuple):
    """This node's addresses (outer source of its tunnels), per family."""

    v4: IPAddress | None
    v6: IPAddress | None

    def get(self, family: int) -> IPAddress | None:
        return self.v4 if family == 4 else self.v6


class RouteProgrammer:
    """Makes VPP's routes and tunnels to other nodes match Felix's model (module docstring).

    Runs on the dataplane's single apply thread; ``client`` is a ``VppClient``-like object
    (``call``, ``dump``, ``batch``, ``generation``, optionally ``instance_id``).
    """

    def __init__(
        self,
        client: Any,
        config: Config,
        *,
        enable_cnat: Callable[[Sequence[int]], set[int]] | None = None,
        interface_deleted: Callable[[int], None] | None = None,
    ) -> None:
        """``enable_cnat(indexes)``: put cnat's feature on new tunnels before they carry
        traffic (npol's hooks run only for flows cnat looked up on the interface they came in
        by); returns the indexes it could not. ``interface_deleted(index)``: a tunnel is gone
        and VPP will hand its index to the next interface, so what is known of it must go."""
        self._client = client
        self._config = config
        self._enable_cnat = enable_cnat
        self._interface_deleted = interface_deleted
        self._routes: dict[IPNetwork, Path] = {}  # in VPP, made (or adopted) by the driver
        self._tunnels: dict[str, _Tunnel] = {}  # by tag
        # Tunnels recorded (written ahead) but not seen in VPP: a crash (or a lost reply) may
        # have left one created but untagged; only these may be taken over by their parameters.
        self._unseen: dict[str, TunnelSpec] = {}
        self._users: Counter[str] = Counter()  # tunnel tag -> routes through it
        self._problems: dict[IPNetwork, str] = {}  # outstanding; re-evaluated on every apply
        self._by_node: dict[str, set[IPNetwork]] = {}  # model routes by dst_node_name
        self._node_of: dict[IPNetwork, str] = {}
        self._addr_owner: dict[IPAddress, int | None] = {}
        self._decap_next: dict[int, int] = {}
        self._recorded: dict[str, Any] | None = None
        self._record_stale = True  # what the driver has changed since the record was written
        self._generation: int | None = None
        self._own: _Own | None = None
        self._need_full = True
        self._wireguard_logged = False

    # ------------------------------------------------------------------ public API

    def configure(self, config: Config) -> None:
        """A changed VNI, port, MTU or hostname changes tunnels: the next apply recomputes all."""
        if config != self._config:
            self._config = config
            self._need_full = True

    @property
    def problems(self) -> list[str]:
        """Every outstanding problem (routes not programmed as Felix asked)."""
        return sorted(self._problems.values())

    @property
    def routes(self) -> Mapping[IPNetwork, Path]:
        """The routes the driver has in VPP (read-only view, for tests and status)."""
        return dict(self._routes)

    @property
    def tunnels(self) -> Mapping[str, int]:
        """Tunnel tag -> sw_if_index of the driver's tunnels."""
        return {tag: t.sw_if_index for tag, t in self._tunnels.items()}

    def adopt(self) -> None:
        """Learn what a previous driver process (or this one, before a reconnect) left in VPP:
        its tunnels by tag, its routes from the record file checked against table 0. Nothing
        is changed in VPP here; the next apply is a full one."""
        self._routes.clear()
        self._tunnels.clear()
        self._users.clear()
        self._problems.clear()
        self._addr_owner.clear()
        self._decap_next.clear()
        self._generation = self._client.generation
        self._need_full = True
        record = self._load_record()
        specs: dict[str, TunnelSpec] = {}
        for tag, raw in record.get("tunnels", {}).items():
            try:
                specs[tag] = TunnelSpec.from_json(raw)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("route_record_bad_tunnel", tag=tag, error=str(exc))
        for d in self._client.dump("sw_interface_dump", sw_if_index=U32_MAX):
            tag = str(d.tag).rstrip("\x00")
            if tag.startswith((f"{TAG_PREFIX}vxlan", f"{TAG_PREFIX}ipip")):
                self._tunnels[tag] = _Tunnel(int(d.sw_if_index), specs.get(tag), int(d.mtu[0]))
        self._unseen = {tag: spec for tag, spec in specs.items() if tag not in self._tunnels}
        by_index = {t.sw_if_index: tag for tag, t in self._tunnels.items()}
        recorded: set[IPNetwork] = set()
        for raw in record.get("routes", ()):
            try:
                recorded.add(ipaddress.ip_network(raw))
            except ValueError:
                log.warning("route_record_bad_prefix", prefix=raw)
        foreign = 0
        if recorded:
            for is_ip6 in (False, True):
                for d in self._client.dump("ip_route_dump", table={"table_id": 0, "is_ip6": is_ip6}):
                    prefix = ipaddress.ip_network(d.route.prefix)
                    if prefix not in recorded:
                        continue
                    path = _path_from_dump(d.route.paths, by_index, prefix)
                    if path is None:
                        foreign += 1
                        continue
                    self._routes[prefix] = path
                    if path.tunnel:
                        self._users[path.tunnel] += 1
        # What the record says now: only what is really there (the rest went with VPP or others).
        self._recorded = None
        self._record_stale = True
        log.info(
            "routes_adopted",
            routes=len(self._routes),
            tunnels=len(self._tunnels),
            recorded=len(recorded),
            foreign=foreign,
        )

    def apply(self, state: DesiredState, dirty: Dirty, full: bool) -> list[str]:
        """Make VPP's routes and tunnels match the model; returns this pass's problems.

        ``full``: everything is compared (first apply after InSync, reconnect); otherwise only
        what ``dirty`` names (routes, VTEPs, host metadata, pools, encapsulation). Raises
        ``RenderError`` (or the client's connection errors) only when VPP as a whole fails.
        """
        if self._generation != self._client.generation:
            self.adopt()
        own = self._own_addresses(state)
        full = (
            full
            or self._need_full
            or own != self._own
            or bool(dirty.ip_pools)
            or "encapsulation" in dirty.other
        )
        self._own = own
        self._note_wireguard(state)
        if full:
            self._reindex(state)
            prefixes: set[IPNetwork] = set(state.routes) | set(self._routes) | set(self._problems)
        else:
            prefixes = set(dirty.routes) | set(self._problems)
            for dst in dirty.routes:
                self._index(dst, state.routes.get(dst))
            for node in dirty.vteps | dirty.host_metadata:
                prefixes |= self._by_node.get(node, set())
        plan = self._plan(state, own, prefixes)
        self._need_full = True  # should this raise, the retry compares everything (dirty is spent)
        self._execute(plan)
        if full and self._unseen:
            self._sweep_unseen()
        self._need_full = False
        for dst in prefixes:
            self._problems.pop(dst, None)
        self._problems.update(plan.problems)
        return sorted(plan.problems.values())

    # ------------------------------------------------------------------ the model -> paths

    def _own_addresses(self, state: DesiredState) -> _Own:
        """This node's addresses: its host metadata, else its own VTEP's parent device."""
        host = self._config.felix_hostname
        meta = state.host_metadata.get(host)
        vtep = state.vteps.get(host)
        v4 = (meta.ipv4_addr if meta else None) or (vtep.parent_device_ip if vtep else None)
        v6 = (meta.ipv6_addr if meta else None) or (vtep.parent_device_ipv6 if vtep else None)
        return _Own(v4, v6)

    def _note_wireguard(self, state: DesiredState, route: Route | None = None) -> None:
        if self._wireguard_logged:
            return
        if state.wireguard_endpoints or state.wireguard_endpoints_v6 or (route and route.tunnel_wireguard):
            self._wireguard_logged = True
            log.warning(
                "wireguard_not_supported",
                detail="WireGuard endpoints are ignored; routes follow their IP pool's encapsulation",
            )

    def _reindex(self, state: DesiredState) -> None:
        self._by_node.clear()
        self._node_of.clear()
        for dst, route in state.routes.items():
            self._index(dst, route)

    def _index(self, dst: IPNetwork, route: Route | None) -> None:
        old = self._node_of.pop(dst, None)
        if old is not None:
            users = self._by_node.get(old)
            if users is not None:
                users.discard(dst)
                if not users:
                    del self._by_node[old]
        if route is not None and route.dst_node_name:
            self._node_of[dst] = route.dst_node_name
            self._by_node.setdefault(route.dst_node_name, set()).add(dst)

    def _plan(self, state: DesiredState, own: _Own, prefixes: Iterable[IPNetwork]) -> _Plan:
        plan = _Plan()
        for dst in prefixes:
            route = state.routes.get(dst)
            want: tuple[Path, TunnelSpec | None] | None = None
            if route is not None:
                got = self.desired(route, state, own)
                if isinstance(got, str):
                    plan.problems[dst] = got
                else:
                    want = got
            if want is not None and want[1] is not None:
                tag = want[0].tunnel  # the spec's tag, already hashed by `desired`
                plan.tunnels[tag] = want[1]
                plan.users.setdefault(tag, []).append(dst)
            if want is None:
                if dst in self._routes:
                    plan.deletes.append(dst)
            elif self._routes.get(dst) != want[0]:
                plan.changes[dst] = want
        return plan

    def desired(
        self, route: Route, state: DesiredState, own: _Own
    ) -> tuple[Path, TunnelSpec | None] | str | None:
        """The path (and tunnel) Felix's route asks for; None: nothing to program; a string:
        why it cannot be programmed (names the route)."""
        dst = route.dst
        if route.local_workload:
            return None  # the pod's own route: the CNI pod code makes it
        if route.types & RT_LOCAL_WORKLOAD:
            if dst.prefixlen == dst.max_prefixlen or route.ip_pool_type not in (
                POOL_NO_ENCAP,
                POOL_VXLAN,
                POOL_IPIP,
            ):
                return None
            return Path("drop"), None
        if not route.types & RT_REMOTE_WORKLOAD:
            return None  # remote/local hosts, pools: the uplink's routes cover them
        what = f"route {dst} to node {route.dst_node_name or '?'}"
        self._note_wireguard(state, route)
        pool = route.ip_pool_type
        if pool == POOL_NONE:
            return None  # not in any pool: Felix's managers program nothing either
        if pool not in POOL_NAMES:
            return f"{what}: unknown IP pool type {pool}; not programmed"
        if pool == POOL_NO_ENCAP or route.same_subnet:
            if route.dst_node_ip is None:
                return f"{what}: no node IP (dst_node_ip) to route it to; not programmed"
            if route.dst_node_ip.version != dst.version:
                return f"{what}: node IP {route.dst_node_ip} is not IPv{dst.version}; not programmed"
            return Path("via", route.dst_node_ip), None
        src = own.get(dst.version)
        if src is None:
            return (
                f"{what}: this node's IPv{dst.version} address ({self._config.felix_hostname}) "
                f"is unknown, no tunnel source; not programmed"
            )
        no_nh = bool(route.types & RT_REMOTE_TUNNEL)
        if pool == POOL_VXLAN:
            return self._vxlan_path(route, state.vteps.get(route.dst_node_name), src, no_nh, what)
        peer = route.dst_node_ip
        if peer is None:
            meta = state.host_metadata.get(route.dst_node_name)
            if meta is not None:
                peer = meta.ipv4_addr if dst.version == 4 else meta.ipv6_addr
        if peer is None:
            return f"{what}: no node IP (dst_node_ip) for its IP-in-IP tunnel; not programmed"
        if peer.version != dst.version:
            return f"{what}: node IP {peer} is not IPv{dst.version}; not programmed"
        if peer == src:
            return f"{what}: node IP {peer} is this node's own address; not programmed"
        spec = TunnelSpec("ipip", route.dst_node_name, src, peer, mtu=self._config.ipip_mtu)
        return Path("tunnel", None, spec.tag), spec

    def _vxlan_path(
        self, route: Route, vtep: VTEP | None, src: IPAddress, no_nh: bool, what: str
    ) -> tuple[Path, TunnelSpec] | str:
        if vtep is None:
            return f"{what}: no VTEP for node {route.dst_node_name or '?'} yet; not programmed"
        v6 = route.dst.version == 6
        outer = vtep.parent_device_ipv6 if v6 else vtep.parent_device_ip
        inner = vtep.ipv6_addr if v6 else vtep.ipv4_addr
        fam = "IPv6" if v6 else "IPv4"
        if outer is None or inner is None:
            return (
                f"{what}: the VTEP of node {vtep.node} has no {fam} "
                f"{'parent device address' if outer is None else 'tunnel address'}; not programmed"
            )
        if outer == src:
            return f"{what}: the VTEP of node {vtep.node} has this node's address {outer}; not programmed"
        mtu = self._config.vxlan_mtu_v6 if outer.version == 6 else self._config.vxlan_mtu
        spec = TunnelSpec(
            "vxlan", vtep.node, src, outer, self._config.vxlan_vni, self._config.vxlan_port, mtu
        )
        return Path("tunnel", None if no_nh else inner, spec.tag), spec

    # ------------------------------------------------------------------ programming

    def _execute(self, plan: _Plan) -> None:
        """Tunnels first (new ones made, existing ones' MTUs set), then routes (replaced in
        place), then deletes, then unused tunnels."""
        mtus = self._mtu_changes(plan)
        new_specs: dict[str, TunnelSpec] = {}
        for _path, spec in plan.changes.values():
            if spec is None:
                continue
            adopted = self._tunnels.get(spec.tag)
            if adopted is None:
                new_specs[spec.tag] = spec
            elif adopted.spec is None:
                adopted.spec = spec  # the tag's fingerprint says these are its parameters
                self._record_stale = True
        new_prefixes = [p for p in plan.changes if p not in self._routes]
        if new_specs or new_prefixes or mtus:
            extra_tunnels = [*new_specs.values(), *(plan.tunnels[tag] for tag in mtus)]
            self._save_record(extra_routes=new_prefixes, extra_tunnels=extra_tunnels)
        failed_tags = self._create_tunnels(new_specs, plan)
        self._set_mtus(mtus, plan)
        routes = {dst: path for dst, (path, _spec) in plan.changes.items() if path.tunnel not in failed_tags}
        self._add_routes(routes, plan)
        self._delete_routes(plan.deletes, plan)
        self._collect_tunnels(plan)
        self._save_record()

    def _create_tunnels(self, specs: Mapping[str, TunnelSpec], plan: _Plan) -> set[str]:
        """Create and set up the tunnels; returns the tags that could not be made (their routes
        stay as they are, and are reported)."""
        if not specs:
            return set()
        failed: dict[str, str] = {}
        pending = dict(specs)
        for tag, spec in specs.items():
            if spec.kind == "vxlan" and self._decap_next_index(spec.family) == U32_MAX:
                # ~0 would mean l2-input, where an L3 tunnel drops everything it decapsulates.
                failed[tag] = (
                    f"{spec}: VPP did not say which arc of vxlan{spec.family}-input leads to "
                    f"ip{spec.family}-input (add_node_next), without which it would drop all it receives"
                )
                del pending[tag]
        for attempt in range(2):
            if not pending:
                break
            leftovers = set(self._unseen) if attempt == 0 else set()
            self._unseen.update(pending)  # recorded ahead; seen once VPP answers with it
            results = self._batch([self._create_request(spec) for spec in pending.values()])
            retry: dict[str, TunnelSpec] = {}
            for (tag, spec), res in zip(pending.items(), results, strict=True):
                err = res.error
                ours = tag in leftovers
                if res.ok:
                    self._tunnels[tag] = _Tunnel(int(res.reply.sw_if_index), spec)
                elif isinstance(err, VppApiError) and err.retval == _IF_ALREADY_EXISTS and err.reply and ours:
                    # IP-in-IP answers with the tunnel it has: the untagged leftover of a crash.
                    self._tunnels[tag] = _Tunnel(int(err.reply.sw_if_index), spec)
                elif (
                    isinstance(err, VppApiError)
                    and err.retval == _TUNNEL_EXIST
                    and (holder := self._owned_with_key(spec, tag)) is not None
                    and attempt == 0
                ):
                    # An IPv6 VXLAN key has no local address: the tunnel made for this node's
                    # previous address holds it, so that one goes first (its routes with it).
                    self._break_tunnel(holder, plan)
                    retry[tag] = spec
                    continue
                elif isinstance(err, VppApiError) and err.retval == _TUNNEL_EXIST and ours:
                    # The untagged leftover of a crash: delete it by its key, then create again.
                    self._forget_deleted(self._batch([self._vxlan_request(spec, is_add=False)]))
                    retry[tag] = spec
                    continue
                elif isinstance(err, VppApiError) and err.retval in (_TUNNEL_EXIST, _IF_ALREADY_EXISTS):
                    failed[tag] = (
                        f"{spec}: VPP already has a tunnel with these addresses that is not this one "
                        "(another node's, or not the driver's)"
                    )
                else:
                    failed[tag] = f"{spec}: VPP refused it: {err}"
                self._unseen.pop(tag, None)
                self._record_stale = True
            pending = retry
        made = [tag for tag in specs if tag in self._tunnels and tag not in failed]
        for tag, reason in self._setup_tunnels(made).items():
            failed[tag] = reason
        for dst, (path, _spec) in plan.changes.items():
            if path.tunnel in failed:
                plan.problems[dst] = f"route {dst}: {failed[path.tunnel]}; not programmed"
        for tag, reason in failed.items():
            log.error("tunnel_not_made", tag=tag, reason=reason)
        return set(failed)

    def _mtu_changes(self, plan: _Plan) -> dict[str, int]:
        """Existing tunnels whose MTU is not the one the config asks: tag -> the L3 MTU to send.

        A set MTU is compared with what VPP has (dumped at adoption, or set since); going back
        to 0 restores VPP's default only where the driver had set one (its record says so), so
        an MTU set by someone else on a tunnel adopted without the record is left alone."""
        changes: dict[str, int] = {}
        for tag, want in plan.tunnels.items():
            tunnel = self._tunnels.get(tag)
            if tunnel is None:
                continue  # made with its MTU by _create_tunnels
            if want.mtu:
                if tunnel.mtu != want.mtu:
                    changes[tag] = want.mtu
                    continue
            elif tunnel.spec is not None and tunnel.spec.mtu:
                changes[tag] = _DEFAULT_L3_MTU[want.kind]
                continue
            if tunnel.spec is not None and tunnel.spec != want:
                tunnel.spec = want  # VPP already has this MTU; the record did not say so
                self._record_stale = True
        return changes

    def _set_mtus(self, mtus: Mapping[str, int], plan: _Plan) -> None:
        """Set existing tunnels' MTUs in place. A refusal leaves the tunnel and its routes as
        they were (they still carry traffic) and is reported on those routes, so that the next
        apply tries again."""
        requests = [
            Request(
                "sw_interface_set_mtu",
                {"sw_if_index": self._tunnels[tag].sw_if_index, "mtu": [mtu, 0, 0, 0]},
                tag,
            )
            for tag, mtu in mtus.items()
        ]
        for req, res in zip(requests, self._batch(requests), strict=True):
            tag = str(req.obj)
            tunnel, want = self._tunnels[tag], plan.tunnels[tag]
            if res.ok:
                tunnel.mtu = mtus[tag]
                tunnel.spec = want
                self._record_stale = True
                continue
            what = f"MTU {want.mtu}" if want.mtu else f"default MTU {mtus[tag]}"
            reason = f"{want}: VPP refused its {what} (sw_interface_set_mtu): {res.error}"
            log.error("tunnel_mtu_not_set", tag=tag, reason=reason)
            for dst in plan.users.get(tag, ()):
                plan.problems.setdefault(dst, f"route {dst}: {reason}; the tunnel keeps its previous MTU")

    def _owned_with_key(self, spec: TunnelSpec, tag: str) -> str | None:
        """Another of the driver's tunnels that VPP would take for this one (same key)."""
        key = _key(spec)
        for other, tunnel in self._tunnels.items():
            if other != tag and tunnel.spec is not None and _key(tunnel.spec) == key:
                return other
        return None

    def _break_tunnel(self, tag: str, plan: _Plan) -> None:
        """Delete a tunnel and its routes now, so that its replacement can be made: a gap for
        those routes until the replacement's are added in this same apply (logged)."""
        prefixes = [dst for dst, path in self._routes.items() if path.tunnel == tag]
        log.warning("tunnel_replaced_with_gap", tag=tag, routes=len(prefixes))
        self._delete_routes(prefixes, plan)
        self._delete_tunnels([tag])

    def _create_request(self, spec: TunnelSpec) -> Request:
        if spec.kind == "vxlan":
            return self._vxlan_request(spec, is_add=True)
        tunnel = {
            "instance": U32_MAX,
            "src": spec.src,
            "dst": spec.dst,
            "sw_if_index": U32_MAX,
            "table_id": 0,
            "flags": 0,
            "mode": 0,  # point to point
            "dscp": 0,
        }
        return Request("ipip_add_tunnel", {"tunnel": tunnel}, str(spec))

    def _vxlan_request(self, spec: TunnelSpec, *, is_add: bool) -> Request:
        return Request(
            "vxlan_add_del_tunnel_v3",
            {
                "is_add": is_add,
                "instance": U32_MAX,
                "src_address": spec.src,
                "dst_address": spec.dst,
                "src_port": spec.port,
                "dst_port": spec.port,
                "mcast_sw_if_index": U32_MAX,
                "encap_vrf_id": 0,
                "decap_next_index": self._decap_next_index(spec.family),
                "vni": spec.vni,
                "is_l3": True,
            },
            str(spec),
        )

    def _decap_next_index(self, family: int) -> int:
        """An L3 VXLAN tunnel hands decapsulated packets to ip4-input/ip6-input: that node's
        next index from vxlan4-input/vxlan6-input (VPP adds the arc on demand, as its CLI does
        for ``vxlan tunnel ... l3``). ~0 if VPP will not say (no tunnel is made then)."""
        index = self._decap_next.get(family)
        if index is not None:
            return index
        ip = "ip6" if family == 6 else "ip4"
        try:
            reply = self._client.call(
                "add_node_next",
                obj=f"vxlan{family}",
                node_name=f"vxlan{family}-input",
                next_name=f"{ip}-input",
            )
            index = int(reply.next_index)
        except (VppApiError, VppEncodeError) as exc:
            log.error("vxlan_decap_next_unknown", family=family, error=str(exc))
            return U32_MAX  # not kept: asked again for the next tunnel
        self._decap_next[family] = index
        return index

    def _setup_tunnels(self, tags: Sequence[str]) -> dict[str, str]:
        """Tag, unnumbered, MTU (when the config sets one), admin up. Returns tag -> reason for
        those that failed (deleted again when they could not even be tagged: an untagged tunnel
        is nobody's)."""
        requests: list[Request] = []
        owners: dict[str, int | None] = {}
        for tag in tags:
            tunnel = self._tunnels[tag]
            assert tunnel.spec is not None
            sw = tunnel.sw_if_index
            owner = self._owner_of(tunnel.spec.src)
            owners[tag] = owner
            requests.append(
                Request("sw_interface_tag_add_del", {"is_add": True, "sw_if_index": sw, "tag": tag}, tag)
            )
            if owner is not None:
                requests.append(
                    Request(
                        "sw_interface_set_unnumbered",
                        {"sw_if_index": owner, "unnumbered_sw_if_index": sw, "is_add": True},
                        tag,
                    )
                )
            if tunnel.spec.mtu:
                # [L3, IP4, IP6, MPLS]: the protocols' 0 means "the L3 MTU".
                mtu = [tunnel.spec.mtu, 0, 0, 0]
                requests.append(Request("sw_interface_set_mtu", {"sw_if_index": sw, "mtu": mtu}, tag))
        failed: dict[str, str] = {}
        untagged: list[str] = []
        for req, res in zip(requests, self._batch(requests), strict=True):
            tag = str(req.obj)
            if res.ok:
                if req.message == "sw_interface_set_mtu":
                    self._tunnels[tag].mtu = req.fields["mtu"][0]
                continue
            if tag in failed:
                continue
            spec = self._tunnels[tag].spec
            if req.message == "sw_interface_set_mtu":
                failed[tag] = (
                    f"{spec}: VPP refused its MTU {req.fields['mtu'][0]} (sw_interface_set_mtu): {res.error}"
                )
            else:
                failed[tag] = f"{spec}: VPP refused {req.message}: {res.error}"
            if req.message == "sw_interface_tag_add_del":
                untagged.append(tag)
        for tag, owner in owners.items():
            if owner is None and tag not in failed:
                failed[tag] = (
                    f"{self._tunnels[tag].spec}: no VPP interface has an address to lend it, it could "
                    "send but not receive"
                )
        if untagged:
            self._delete_tunnels(untagged)
        # cnat's feature once the tunnel is tagged (so that a crash leaves no untagged tunnel
        # carrying it) and before it is up: a flow arriving through it must be looked up by cnat
        # for npol's hooks on the pods it reaches to run.
        ready = [tag for tag in tags if tag not in failed]
        if self._enable_cnat is not None and ready:
            refused = self._enable_cnat([self._tunnels[tag].sw_if_index for tag in ready])
            for tag in ready:
                if self._tunnels[tag].sw_if_index in refused:
                    failed[tag] = (
                        f"{self._tunnels[tag].spec}: VPP refused cnat's feature on it (npol's policy "
                        "would not see what arrives through it)"
                    )
        up = [
            Request(
                "sw_interface_set_flags", {"sw_if_index": self._tunnels[t].sw_if_index, "flags": _ADMIN_UP}, t
            )
            for t in tags
            if t not in failed
        ]
        for req, res in zip(up, self._batch(up), strict=True):
            if not res.ok:
                tag = str(req.obj)
                failed[tag] = f"{self._tunnels[tag].spec}: VPP refused {req.message}: {res.error}"
        return failed

    def _owner_of(self, addr: IPAddress) -> int | None:
        """The interface a tunnel borrows its address from: the one holding this node's
        address (its local /32 or /128 in table 0), else the default route's interface (any
        interface with an address of the family enables IP on the tunnel; logged)."""
        if addr in self._addr_owner:
            return self._addr_owner[addr]
        owner = default = None
        host = ipaddress.ip_network(f"{addr}/{addr.max_prefixlen}")
        for d in self._client.dump("ip_route_dump", table={"table_id": 0, "is_ip6": addr.version == 6}):
            prefix = ipaddress.ip_network(d.route.prefix)
            if prefix == host or prefix.prefixlen == 0:
                for p in d.route.paths:
                    sw = int(p.sw_if_index)
                    if sw == U32_MAX or sw in {t.sw_if_index for t in self._tunnels.values()}:
                        continue
                    if prefix == host and int(p.type) == 1:  # LOCAL: the address's own entry
                        owner = sw
                    elif prefix.prefixlen == 0 and int(p.type) == _PATH_NORMAL:
                        default = sw
        if owner is None:
            log.warning(
                "tunnel_source_not_in_vpp",
                address=str(addr),
                borrowed_from=default,
                detail="this node's address is on no VPP interface: tunnels borrow the default route's "
                "interface's address to receive; their outer source may be unroutable back",
            )
            owner = default
        self._addr_owner[addr] = owner
        return owner

    def _add_routes(self, routes: Mapping[IPNetwork, Path], plan: _Plan) -> None:
        """Add or replace (not multipath: VPP swaps the paths in place, no gap)."""
        items = list(routes.items())
        requests = [
            Request(
                "ip_route_add_del",
                {"is_add": True, "is_multipath": False, "route": self._route(dst, path)},
                str(dst),
            )
            for dst, path in items
        ]
        for (dst, path), res in zip(items, self._batch(requests), strict=True):
            if not res.ok:
                plan.problems[dst] = f"route {dst} ({path}): VPP refused it: {res.error}"
                continue
            old = self._routes.get(dst)
            if old is not None and old.tunnel:
                self._users[old.tunnel] -= 1
            if path.tunnel:
                self._users[path.tunnel] += 1
            if old is None:
                self._record_stale = True
            self._routes[dst] = path

    def _delete_routes(self, prefixes: Sequence[IPNetwork], plan: _Plan) -> None:
        """Delete the driver's path only (multipath delete): a route someone else put on the
        same prefix meanwhile keeps its own paths."""
        items = [(dst, self._routes[dst]) for dst in prefixes]
        requests = [
            Request(
                "ip_route_add_del",
                {"is_add": False, "is_multipath": True, "route": self._route(dst, path)},
                str(dst),
            )
            for dst, path in items
        ]
        for (dst, path), res in zip(items, self._batch(requests), strict=True):
            if not res.ok:
                plan.problems[dst] = f"route {dst} ({path}): VPP refused its deletion: {res.error}"
                continue
            if path.tunnel:
                self._users[path.tunnel] -= 1
            del self._routes[dst]
            self._record_stale = True

    def _sweep_unseen(self) -> None:
        """Tunnels the record says were being created but VPP has under no tag, and that no
        route wants any more: if one exists (created, untagged, before a crash), it is the
        driver's; delete it by its parameters. (IP-in-IP answers an add with the existing one.)"""
        unwanted = {tag: spec for tag, spec in self._unseen.items() if tag not in self._tunnels}
        owned = {t.sw_if_index for t in self._tunnels.values()}
        owned_keys = {_key(t.spec) for t in self._tunnels.values() if t.spec is not None}
        vxlan = [
            self._vxlan_request(s, is_add=False)._replace(obj=t)
            for t, s in unwanted.items()
            if s.kind == "vxlan" and _key(s) not in owned_keys  # not another tag's tunnel
        ]
        ipip = [self._create_request(s)._replace(obj=t) for t, s in unwanted.items() if s.kind == "ipip"]
        self._forget_deleted(self._batch(vxlan))  # NO_SUCH_ENTRY when there is none: fine
        doomed = []
        for req, res in zip(ipip, self._batch(ipip), strict=True):
            err = res.error
            if isinstance(err, VppApiError) and err.retval == _IF_ALREADY_EXISTS:
                reply = err.reply
            else:
                reply = res.reply if res.ok else None
            if reply is not None and int(reply.sw_if_index) not in owned:  # made now, or the leftover
                doomed.append(Request("ipip_del_tunnel", {"sw_if_index": int(reply.sw_if_index)}, req.obj))
        for req, res in zip(doomed, self._batch(doomed), strict=True):
            if res.ok:
                self._forget(int(req.fields["sw_if_index"]))
        for tag in unwanted:
            self._unseen.pop(tag, None)
        self._record_stale = True
        self._save_record()

    def _collect_tunnels(self, plan: _Plan) -> None:
        unused = [tag for tag in self._tunnels if self._users.get(tag, 0) <= 0]
        if unused:
            self._delete_tunnels(unused)

    def _delete_tunnels(self, tags: Sequence[str]) -> None:
        requests: list[Request] = []
        kept: list[str] = []
        for tag in tags:
            tunnel = self._tunnels[tag]
            if tag.startswith(f"{TAG_PREFIX}ipip"):
                requests.append(Request("ipip_del_tunnel", {"sw_if_index": tunnel.sw_if_index}, tag))
            elif tunnel.spec is not None:
                requests.append(self._vxlan_request(tunnel.spec, is_add=False)._replace(obj=tag))
            else:
                kept.append(tag)
        for tag in kept:
            # VXLAN tunnels are deleted by their parameters, which only the (lost) record had.
            log.error(
                "tunnel_not_deleted",
                tag=tag,
                sw_if_index=self._tunnels[tag].sw_if_index,
                detail="VXLAN tunnel of unknown parameters (route record lost): delete it by hand",
            )
            del self._tunnels[tag]
            self._record_stale = True
        for req, res in zip(requests, self._batch(requests), strict=True):
            tag = str(req.obj)
            if res.ok:
                gone = self._tunnels.pop(tag, None)
                self._record_stale = True
                self._users.pop(tag, None)
                if gone is not None:
                    self._forget(gone.sw_if_index)
            else:
                log.error("tunnel_not_deleted", tag=tag, error=str(res.error))

    def _forget(self, sw: int) -> None:
        if self._interface_deleted is not None and sw != U32_MAX:
            self._interface_deleted(sw)

    def _forget_deleted(self, results: Sequence[Result]) -> None:
        """Deletes by parameters: VPP's reply names the index it freed."""
        for res in results:
            if res.ok and getattr(res.reply, "sw_if_index", None) is not None:
                self._forget(int(res.reply.sw_if_index))

    def _route(self, dst: IPNetwork, path: Path) -> dict[str, Any]:
        fib_path: dict[str, Any] = {
            "sw_if_index": U32_MAX,
            "table_id": 0,
            "weight": 1,
            "preference": 0,
            "type": _PATH_DROP if path.kind == "drop" else _PATH_NORMAL,
            "flags": 0,
            "proto": 0 if dst.version == 4 else 1,
        }
        if path.kind == "tunnel":
            fib_path["sw_if_index"] = self._tunnels[path.tunnel].sw_if_index
        if path.nh is not None:
            fib_path["nh"] = {"address": {("ip4" if path.nh.version == 4 else "ip6"): path.nh}}
        return {"table_id": 0, "prefix": dst, "paths": [fib_path]}

    def _batch(self, requests: Sequence[Request]) -> list[Result]:
        """Run a batch; a per-request refusal is the caller's to report, anything else (the
        connection, a VPP restart) means VPP as a whole is unusable: raise."""
        if not requests:
            return []
        results: list[Result] = self._client.batch(requests, generation=self._generation)
        for res in results:
            if res.error is not None and not isinstance(res.error, VppApiError | VppEncodeError):
                raise res.error
        return results

    # ------------------------------------------------------------------ the record

    def _record_path(self) -> str:
        return os.path.join(self._config.vpp_state_dir, RECORD_FILE)

    def _load_record(self) -> dict[str, Any]:
        record = read_record(self._record_path(), getattr(self._client, "instance_id", None), "route")
        return record or {}

    def _save_record(
        self, extra_routes: Iterable[IPNetwork] = (), extra_tunnels: Iterable[TunnelSpec] = ()
    ) -> None:
        """Write what the driver has in VPP plus what it is about to add (write-ahead)."""
        extra_routes, extra_tunnels = list(extra_routes), list(extra_tunnels)
        if not (self._record_stale or extra_routes or extra_tunnels):
            return
        tunnels = {tag: spec.to_json() for tag, spec in self._unseen.items()}
        tunnels.update({tag: t.spec.to_json() for tag, t in self._tunnels.items() if t.spec is not None})
        tunnels.update({spec.tag: spec.to_json() for spec in extra_tunnels})
        routes = sorted({str(p) for p in self._routes} | {str(p) for p in extra_routes})
        instance: str | None = getattr(self._client, "instance_id", None)
        record = {"vpp_instance": instance, "routes": routes, "tunnels": dict(sorted(tunnels.items()))}
        if record == self._recorded:
            self._record_stale = False
            return
        path = self._record_path()
        try:
            write_record(path, instance, {"routes": routes, "tunnels": record["tunnels"]})
        except OSError as exc:
            # Without the record a restarted driver cannot tell its routes: refuse to add any.
            raise RenderError(f"cannot write the route record {path}: {exc}") from exc
        self._recorded = record
        self._record_stale = bool(extra_routes or extra_tunnels)  # until the adds are done


def _key(spec: TunnelSpec) -> tuple[Any, ...]:
    """What VPP tells tunnels apart by (a second tunnel with the same key is refused): an IPv6
    VXLAN tunnel's key has no local address (vxlan.c ``key6``), an IPv4 one has."""
    src = None if spec.kind == "vxlan" and spec.family == 6 else spec.src
    return (spec.kind, src, spec.dst, spec.vni, spec.port)


def _path_from_dump(
    paths: Sequence[Any], tunnel_by_index: Mapping[int, str], prefix: IPNetwork
) -> Path | None:
    """The driver's `Path` for a dumped route, or None when its paths are not of a shape the
    driver makes (then someone else owns the prefix now). A host route through an interface
    without a next hop is stored with the prefix's own address as its next hop
    (``fib_table_route_path_fixup``): that is the driver's "no next hop"."""
    if len(paths) != 1:
        return None
    p = paths[0]
    kind, sw = int(p.type), int(p.sw_if_index)
    if kind == _PATH_DROP:
        return Path("drop")
    if kind != _PATH_NORMAL:
        return None
    nh = _nh(p)
    if sw == U32_MAX:
        return Path("via", nh) if nh is not None else None
    tag = tunnel_by_index.get(sw)
    if nh is not None and prefix.prefixlen == prefix.max_prefixlen and nh == prefix.network_address:
        nh = None
    return Path("tunnel", nh, tag) if tag is not None else None


def _nh(p: Any) -> IPAddress | None:
    union = p.nh.address
    raw = union.ip6 if int(p.proto) == 1 else union.ip4
    addr = ipaddress.ip_address(raw)
    return None if int(addr) == 0 else addr


__all__ = ["POOL_IPIP", "POOL_NO_ENCAP", "POOL_VXLAN", "Path", "RouteProgrammer", "TunnelSpec"]
