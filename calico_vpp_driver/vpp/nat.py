"""NAT-outgoing (IP pool masquerade) and floating IPs, programmed with VPP's cnat plugin.

What Felix asks for
-------------------
* **NAT-outgoing** (felix/rules/nat.go, felix/dataplane/linux/masq_mgr.go): a packet whose
  *source* is in an IP pool with ``masquerade`` and whose destination is in no IP pool
  (LoadBalancer-only pools do not count) is source-NATed to the node's address
  (``NATOutgoingAddress`` for IPv4 when set). With ``NATOutgoingExclusions=IPPoolsAndHostIPs``
  destinations in the all-hosts set (every node's address, plus ``ExternalNodesCIDRList`` for
  IPv4) are not NATed either. As Calico/VPP does, this driver also never NATs towards the
  service cluster CIDRs (``GlobalBGPConfigUpdate.service_cluster_cidrs``) and towards this
  node's own addresses (Felix never masquerades what is delivered to the local host).
* **Floating IPs** (``WorkloadEndpoint.ipv4_nat``/``ipv6_nat``; Felix's cali-fip-dnat chain):
  traffic to ``ext_ip`` is DNATed to ``int_ip``; the pod's replies leave from ``ext_ip``
  (conntrack). Connections the pod opens itself are not NATed to ``ext_ip``.

The cnat policy chosen: IF_PFX
------------------------------
cnat's SNAT decision runs in ``cnat-output`` on the tx interface for the first packet of a
flow, through the policy of the SNAT entry of the forwarding VRF (cnat_snat_policy.c). No policy
looks at the packet's *source*: the exclude-prefix table that the API fills
(``cnat_snat_policy_add_del_exclude_pfx``) is keyed by destination only (``is_src`` 0), and
the interface maps are keyed by the packet's rx interface.

* ``IF_PFX`` source-NATs exactly when the rx interface is in the INCLUDE map of the packet's
  family (``interface_maps[af]``) and the destination matches no excluded prefix. Nothing else.
* ``K8S`` does that too, but also source-NATs every flow where neither the rx nor the tx
  interface is in the POD map (transit and host traffic), and a pod reaching itself; it needs
  every pod interface in the POD map, or traffic from outside *to* pods gets NATed. Those extra
  NATs serve Kubernetes services, which this driver does not program.
* ``NONE`` NATs everything; ``DNAT``/``DNAT_ONLY`` rewrite prefixes with values the API
  cannot set (an API-added prefix carries the placeholder 0xdeadbeef as its rewrite).

So IF_PFX, with: excluded prefixes = every non-LoadBalancer-only pool CIDR (both families),
the service cluster CIDRs, this node's addresses, and with IPPoolsAndHostIPs every node's
address and ExternalNodesCIDRList. Per-pool masquerade -- the subtle part -- cannot be a
prefix (prefixes are destinations), so it is the INCLUDE map: a pod's interface is in
INCLUDE_V4 when its IPv4 address lies in a masquerading pool, in INCLUDE_V6 likewise for IPv6.
That is Felix's "source in a masquerading pool" for every pod whose addresses of one family
all lie in pools of the same masquerade setting (the normal case: one address per family). A
pod with addresses of one family in both kinds of pool cannot be expressed; it is included
(its NAT-outgoing traffic keeps working) and reported. A pool change re-evaluates only the
include bits and prefixes that differ: one message per changed interface bit or prefix.

The SNAT entry is the one of forwarding VRF 0 (which cnat's API calls the default: its
``..._get_default`` looks up VRF 0 first), created with ``cnat_set_snat_addresses_v2`` flag
``NO_CLIENT``: without NO_CLIENT cnat installs a return-only *exclusive* FIB entry for the node
address, which drops every packet to the node that is not a reply to a NATed flow. With
NO_CLIENT the replies are un-NATed by the ``cnat-lookup`` input feature, so cnat's feature must
be on every interface (pods: their flows must be looked up on input for ``cnat-output`` to act;
uplinks and tunnels: SNAT and the un-NAT of replies). The programmer enables it once per
interface while there is anything to NAT, and never disables it (npol relies on it too): share
``cnat_enabled`` with the npol store, since enabling a feature twice adds its node twice
(vnet/config.c does not deduplicate).

Not ``USE_AS_DEFAULT`` (what Calico/VPP passes): that makes the entry VPP's fallback for every
VRF, and ``cnat_snat_cleanup`` frees such an entry without clearing the fallback pointer, so an
entry deleted and created again (below: a fresh entry whose policy is refused) would be written
into freed memory, with no port allocator. Without the flag VPP finds the entry per family
(setting a family's address registers it), so an existing entry is updated one family per
message: both addresses for an entry holding one family trip an ASSERT in ``cnat_set_snat``.

A fresh entry's policy is NONE until ``cnat_set_snat_policy`` (VPP cannot create it with
another): both messages go in one batch, but a flow that starts between them is NATed (and
its session keeps that) -- only when the entry is first created.

Floating IPs: what cnat can and cannot express
----------------------------------------------
A translation is keyed by (VIP address, destination port, IP protocol) and looked up by exact
match (cnat_translation.h ``cnat_find_translation``): there is no wildcard port and no
address-only translation. A floating IP is therefore one translation per protocol and port:
VIP ``ext_ip:port``, one path to ``int_ip`` with port 0 (keep the port) and no source rewrite;
the session's return rewrite makes the pod's replies leave from ``ext_ip``. Which ports is the
operator's choice, ``VPPFloatingIPPorts`` (Felix config, passed through: e.g.
``tcp:1-65535,udp:53``; default ``tcp:1-1023,udp:1-1023``, 2046 translations per floating IP):
all 65535 ports of TCP and UDP are 131070 translations per floating IP, which VPP can hold but
costs memory and time to program. The VIP is exclusive (``is_real_ip`` 0): traffic to
``ext_ip`` on a port or protocol without a translation is dropped. Not expressible: ICMP (cnat
reads the ICMP checksum where a port would be, so no translation ever matches ICMP: a ping to
the floating IP is dropped), protocols other than TCP/UDP/SCTP, and a pod reaching its own
floating IP (Felix source-NATs that hairpin to ``ext_ip``; IF_PFX has no such rule).
Removing a floating IP leaves existing sessions translated until they expire (cnat keeps
their rewrite, and the VIP's exclusive FIB entry while sessions use it); sessions are never
purged (``cnat_session_purge`` is global).

NAT-outgoing limits: cnat tracks TCP, UDP, SCTP and ICMP echo (ICMP errors go with the flow
they quote, cnat_node.h ``cnat_make_buffer_5tuple``); other protocols and other ICMP get no
session, so they are never source-NATed. ``NATPortRange`` is not supported
(cnat allocates source ports from its own range) and is reported. A pod spoofing another
source is NATed by its interface, where Felix looks at the source address.

Ownership and restart
---------------------
Translations are found again with ``cnat_translation_dump``; the SNAT addresses with
``cnat_snat_addresses_dump``. cnat has no dump for the policy, the excluded prefixes, the
interface maps or the cnat feature, so these, and which translations are ours, are kept in a
record (``nat-objects.json`` in ``VPPStateDir``, tagged with the VPP instance). The record is
written ahead of adds (it always lists at least what VPP has of ours: deleting an absent prefix
or interface bit is a no-op in cnat) and after deletes. A restarted driver keeps what is still
wanted untouched and deletes only what is stale; a translation that is not in the record is
someone else's and is left alone unless its key is wanted. VPP does not clear an interface's
SNAT map bits when the interface is deleted (cnat registers no interface callback), so
``forget_interface`` removes them before a pod interface goes, and a bit that could not be
removed is removed when VPP hands the index out again. Without a record (lost state directory)
the wanted translations are still adopted by dump and nothing is deleted that might not be
ours, but the policy, prefixes and include bits are sent again (idempotent in cnat) and the
cnat feature is enabled again on interfaces the npol store does not know: a duplicate feature
node, which the record exists to avoid.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any, NamedTuple

import structlog

from ..config import Config
from ..model.state import DesiredState, Dirty
from ..model.types import IPAddress, IPNetwork, IPPool, WorkloadEndpoint, WorkloadEndpointID
from .errors import VppApiError
from .records import read_record, write_record

log = structlog.get_logger("calico_vpp_driver.vpp.nat")

RECORD_FILE = "nat-objects.json"
FLOATING_PORTS_PARAM = "VPPFloatingIPPorts"
DEFAULT_FLOATING_PORTS = "tcp:1-1023,udp:1-1023"
U32_MAX = 0xFFFFFFFF
VRF = 0  # the forwarding / return FIB index of the SNAT entry (cnat's CNAT_FIB_TABLE)
CNAT_POLICY_IF_PFX = 1
CNAT_SNAT_F_NO_CLIENT = 2
INCLUDE_MAP = {4: 0, 6: 1}  # family -> cnat_snat_policy_table (INCLUDE_V4 / INCLUDE_V6)
NO_SUCH_ENTRY = -6
INVALID_SW_IF_INDEX = -2
PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOLS.items()}
LOAD_BALANCER_USE = "LoadBalancer"


class PortRange(NamedTuple):
    """Floating IP ports of one protocol (inclusive)."""

    proto: int
    first: int
    last: int


class FipKey(NamedTuple):
    """One cnat translation: (VIP, protocol, port)."""

    ext_ip: IPAddress
    proto: int
    port: int


def parse_floating_ports(raw: str) -> tuple[PortRange, ...]:
    """``tcp:1-1023,udp:53,sctp:5000-5010`` -> merged, sorted ranges. Raises ValueError naming
    the bad item."""
    by_proto: dict[int, list[tuple[int, int]]] = {}
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        name, sep, ports = item.partition(":")
        proto = PROTOCOLS.get(name.strip().lower())
        if not sep or proto is None:
            raise ValueError(f"{item!r}: expected <tcp|udp|sctp>:<port>[-<port>]")
        first_s, _, last_s = ports.partition("-")
        try:
            first, last = int(first_s), int(last_s or first_s)
        except ValueError:
            raise ValueError(f"{item!r}: ports must be integers") from None
        if not 1 <= first <= last <= 65535:
            raise ValueError(f"{item!r}: ports must be 1-65535, first <= last")
        by_proto.setdefault(proto, []).append((first, last))
    out: list[PortRange] = []
    for proto in sorted(by_proto):
        for first, last in _merge(by_proto[proto]):
            out.append(PortRange(proto, first, last))
    return tuple(out)


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def floating_ports(config: Config) -> tuple[tuple[PortRange, ...], str | None]:
    """The floating IP ports (``VPPFloatingIPPorts``); a bad value is reported and the default
    used."""
    value = config.vpp_floating_ip_ports
    try:
        return parse_floating_ports(value), None
    except ValueError as exc:
        problem = f"config parameter {FLOATING_PORTS_PARAM}={value!r}: {exc}; using the default"
        return parse_floating_ports(DEFAULT_FLOATING_PORTS), problem


# ---------------------------------------------------------------------------------------------
# What Felix wants (pure)


@dataclass(frozen=True, slots=True)
class SnatAddresses:
    """This node's SNAT address per family (None: unknown, so that family is not NATed)."""

    ip4: IPv4Address | None
    ip6: IPv6Address | None

    def get(self, family: int) -> IPAddress | None:
        return self.ip4 if family == 4 else self.ip6


def snat_addresses(state: DesiredState, config: Config) -> SnatAddresses:
    """NATOutgoingAddress, else this node's HostMetadata address (IPv4); HostMetadata (IPv6)."""
    meta = state.host_metadata.get(config.felix_hostname)
    ip4 = meta.ipv4_addr if meta is not None else None
    if config.nat_outgoing_address:
        ip4 = IPv4Address(config.nat_outgoing_address)
    ip6 = meta.ipv6_addr if meta is not None and config.ipv6_support else None
    return SnatAddresses(ip4, ip6)


def exclusions(state: DesiredState, config: Config) -> frozenset[IPNetwork]:
    """Destinations never source-NATed (see the module docstring)."""
    out: set[IPNetwork] = set()
    for pool in state.ip_pools.values():
        if tuple(pool.allowed_uses) != (LOAD_BALANCER_USE,):
            out.add(pool.cidr)
    bgp = state.bgp_config or {}
    for cidr in bgp.get("service_cluster_cidrs", ()):
        try:
            out.add(ip_network(str(cidr), strict=False))
        except ValueError:
            log.warning("nat_bad_service_cidr", cidr=cidr)
    own = state.host_metadata.get(config.felix_hostname)
    hosts = state.host_metadata.values() if config.nat_outgoing_exclusions == "IPPoolsAndHostIPs" else ()
    for meta in [own, *hosts]:
        if meta is None:
            continue
        for addr in (meta.ipv4_addr, meta.ipv6_addr):
            if addr is not None:
                out.add(ip_network(f"{addr}/{addr.max_prefixlen}"))
    if config.nat_outgoing_exclusions == "IPPoolsAndHostIPs":
        out.update(ip_network(c, strict=False) for c in config.external_nodes_cidr_list if ":" not in c)
    if not config.ipv6_support:
        out = {n for n in out if n.version == 4}
    return frozenset(out)


def masquerade_families(
    ep: WorkloadEndpoint, pools: Iterable[IPPool], ipv6: bool = True
) -> tuple[frozenset[int], list[str]]:
    """The families in which the endpoint's addresses are in masquerading pools, and problems
    (addresses of one family in both masquerading and other pools: included, reported)."""
    pools = list(pools)
    fams: set[int] = set()
    problems: list[str] = []
    nets: list[IPNetwork] = [*ep.ipv4_nets, *(ep.ipv6_nets if ipv6 else ())]
    for family in (4, 6):
        verdicts: dict[bool, list[str]] = {}
        for net in (n for n in nets if n.version == family):
            pool = _pool_of(net, pools)
            masq = pool is not None and pool.masquerade
            verdicts.setdefault(masq, []).append(f"{net} ({'pool ' + pool.id if pool else 'no pool'})")
        if True in verdicts:
            fams.add(family)
            if False in verdicts:
                problems.append(
                    f"endpoint {ep.id}: IPv{family} addresses in masquerading and other pools "
                    f"({', '.join(verdicts[True] + verdicts[False])}): cnat decides by interface, "
                    f"so all its IPv{family} traffic leaving the cluster is source-NATed"
                )
    return frozenset(fams), problems


def _pool_of(net: IPNetwork, pools: list[IPPool]) -> IPPool | None:
    best: IPPool | None = None
    for pool in pools:
        if pool.cidr.version == net.version and net.subnet_of(pool.cidr):  # type: ignore[arg-type]
            if best is None or pool.cidr.prefixlen > best.cidr.prefixlen:
                best = pool
    return best


def translation_keys(ext_ip: IPAddress, ports: Iterable[PortRange]) -> Iterable[FipKey]:
    for r in ports:
        for port in range(r.first, r.last + 1):
            yield FipKey(ext_ip, r.proto, port)


# ---------------------------------------------------------------------------------------------
# The programmer


@dataclass(slots=True)
class _Endpoint:
    """What one endpoint wants: its interface, masquerade families, floating IPs."""

    sw: int | None
    families: frozenset[int]
    fips: dict[IPAddress, IPAddress]  # ext_ip -> int_ip
    problems: list[str] = field(default_factory=list)


Translation = tuple[int, IPAddress | None]  # (cnat translation id, int_ip; None: not ours in shape)


class _Translations:
    """Translations by VIP, so a floating IP's are found without scanning everyone's."""

    def __init__(self) -> None:
        self.by_vip: dict[IPAddress, dict[tuple[int, int], Translation]] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_vip.values())

    def get(self, k: FipKey) -> Translation | None:
        return self.by_vip.get(k.ext_ip, {}).get((k.proto, k.port))

    def set(self, k: FipKey, value: Translation) -> None:
        self.by_vip.setdefault(k.ext_ip, {})[(k.proto, k.port)] = value

    def pop(self, k: FipKey) -> Translation | None:
        mine = self.by_vip.get(k.ext_ip)
        if mine is None:
            return None
        value = mine.pop((k.proto, k.port), None)
        if not mine:
            del self.by_vip[k.ext_ip]
        return value

    def keys_of(self, ext: IPAddress) -> list[FipKey]:
        return [FipKey(ext, proto, port) for proto, port in self.by_vip.get(ext, {})]

    def keys(self) -> list[FipKey]:
        return [k for ext in self.by_vip for k in self.keys_of(ext)]


@dataclass(slots=True)
class _Vpp:
    """What VPP has of ours (learnt by dump and from the record)."""

    snat: SnatAddresses | None = None  # None: no default SNAT entry
    policy_set: bool = False
    placeholder: int | None = None  # the INCLUDE_V4 bit that keeps the entry initialised
    exclude: set[IPNetwork] = field(default_factory=set)
    include: dict[int, set[int]] = field(default_factory=lambda: {4: set(), 6: set()})
    dead_include: dict[int, set[int]] = field(default_factory=lambda: {4: set(), 6: set()})
    translations: _Translations = field(default_factory=_Translations)
    foreign: _Translations = field(default_factory=_Translations)  # not ours (not in the record)


Request = tuple[str, dict[str, Any], str]


class NatProgrammer:
    """Programs NAT-outgoing and floating IPs into cnat; see the module docstring.

    Called on the dataplane's apply thread only (``forget_interface`` under its apply lock).
    ``cnat_enabled``: the interfaces with cnat's feature on; pass (or assign) the npol store's
    set so that each interface gets the feature once.
    """

    def __init__(self, client: Any, config: Config, *, cnat_enabled: set[int] | None = None) -> None:
        self.client = client
        self.config = config
        self.cnat_enabled: set[int] = cnat_enabled if cnat_enabled is not None else set()
        self.calls: dict[str, int] = {}
        self._ports, self._config_problem = floating_ports(config)
        self._vpp = _Vpp()
        self._generation: int | None = None
        self._eps: dict[WorkloadEndpointID, _Endpoint] = {}
        # Indexes kept with _eps, so that an apply costs what changed: family -> interface ->
        # masquerading endpoints on it; endpoints with problems of their own.
        self._bits: dict[int, dict[int, set[WorkloadEndpointID]]] = {4: {}, 6: {}}
        self._ep_problems: dict[WorkloadEndpointID, list[str]] = {}
        self._claims: dict[IPAddress, dict[WorkloadEndpointID, IPAddress]] = {}
        self._fips: dict[IPAddress, IPAddress] = {}  # ext_ip -> int_ip (the claim that won)
        self._fip_problems: dict[IPAddress, list[str]] = {}
        self._snat_want = SnatAddresses(None, None)
        self._exclude_want: frozenset[IPNetwork] = frozenset()
        self._last_sw: dict[WorkloadEndpointID, int] = {}
        self._recompute = True  # everything is recomputed (and diffed) at the next apply
        self._dump_interfaces = True  # look for interfaces needing cnat's feature
        self._recorded: dict[str, Any] | None = None
        self._changed = False  # something the record lists changed since it was written
        self._failures: list[str] = []

    # ------------------------------------------------------------------ lifecycle

    def configure(self, config: Config) -> None:
        if config != self.config:
            self.config = config
            self._ports, self._config_problem = floating_ports(config)
            self._recompute = True

    def adopt(self) -> None:
        """Learn what VPP has of ours: SNAT addresses and translations by dump, the rest from the
        record (if it was written for this VPP instance)."""
        self._generation = getattr(self.client, "generation", None)
        self._vpp = _Vpp()
        self._recompute = True
        self._dump_interfaces = True
        if not self._cnat_loaded():
            log.warning("nat_cnat_plugin_missing", detail="NAT-outgoing and floating IPs are not programmed")
            return
        self._vpp.snat = self._dump_snat()
        record = self._load_record()
        owned: set[FipKey] = set()
        if record is not None:
            try:
                owned = self._adopt_record(record)
            except (TypeError, ValueError, AttributeError) as exc:
                log.error("nat_record_malformed", path=self._record_path(), error=str(exc))
                self._vpp = _Vpp(snat=self._vpp.snat)
                record = None
        for key, value in self._dump_translations().items():
            (self._vpp.translations if key in owned else self._vpp.foreign).set(key, value)
        log.info(
            "nat_adopted",
            record=record is not None,
            translations=len(self._vpp.translations),
            foreign_translations=len(self._vpp.foreign),
            snat_entry=self._vpp.snat is not None,
        )

    def _adopt_record(self, record: Mapping[str, Any]) -> set[FipKey]:
        """Take the record's facts; returns the translation keys that are ours."""
        if self._vpp.snat is not None:  # else its policy, prefixes and bits went with it
            self._vpp.policy_set = bool(record.get("policy_set"))
            placeholder = record.get("placeholder")
            self._vpp.placeholder = int(placeholder) if placeholder is not None else None
            self._vpp.exclude = {ip_network(p) for p in record.get("exclude", ())}
            for fam in (4, 6):
                self._vpp.include[fam] = {int(sw) for sw in record.get("include", {}).get(str(fam), ())}
        self.cnat_enabled.update(int(sw) for sw in record.get("cnat_enabled", ()))
        self._recorded = dict(record)
        return {
            FipKey(ip_address(ext), int(proto), port)
            for ext, by_proto in record.get("translations", {}).items()
            for proto, ranges in by_proto.items()
            for first, last in ranges
            for port in range(int(first), int(last) + 1)
        }

    def forget_interface(self, sw: int) -> None:
        """The interface is about to be deleted and VPP will reuse its index: its SNAT map bits
        go now (VPP would keep them for the next interface), its cnat feature goes with it."""
        self.cnat_enabled.discard(sw)
        self._changed = True
        fams = [fam for fam in (4, 6) if sw in self._vpp.include[fam]]
        try:
            results = self._send([self._include_request(fam, sw, False) for fam in fams])
        except Exception as exc:  # VPP unreachable: removed when the index is bound again
            log.warning("nat_forget_interface_failed", sw_if_index=sw, error=str(exc))
            results = [None] * len(fams)
        for fam, res in zip(fams, results, strict=True):
            self._vpp.include[fam].discard(sw)
            if res is None or res.error is not None:
                self._vpp.dead_include[fam].add(sw)
        for key in [k for k, s in self._last_sw.items() if s == sw]:
            del self._last_sw[key]
            ep = self._eps.get(key)
            if ep is not None and ep.sw == sw:
                self._index(key, ep, False)
                ep.sw = None
        self._save_record()

    @property
    def pending(self) -> bool:
        """The next apply has work of its own: a retry after a failed request (it recomputes and
        diffs everything), or the first pass after adopting."""
        return self._recompute

    # ------------------------------------------------------------------ apply

    def apply(
        self,
        state: DesiredState,
        dirty: Dirty,
        full: bool,
        pod_interfaces: Mapping[WorkloadEndpointID, int],
    ) -> list[str]:
        """Bring cnat in line with `state`; returns the current problems."""
        if self._generation is None or getattr(self.client, "generation", None) != self._generation:
            self.adopt()
        everything = full or self._recompute
        self._recompute = False
        self._failures = []
        if everything or dirty.ip_pools or dirty.host_metadata or "bgp_config" in dirty.other:
            self._snat_want = snat_addresses(state, self.config)
            self._exclude_want = exclusions(state, self.config)
        changed_fips = self._update_endpoints(
            state, dirty, pod_interfaces, everything or bool(dirty.ip_pools)
        )
        # This node's addresses decide which floating IPs may be programmed.
        all_fips = everything or self.config.felix_hostname in dirty.host_metadata
        self._update_fips(state, changed_fips, all_fips)
        include_want = self._include_want()
        if not self._cnat_loaded():
            problems = self._problems(include_want)
            if include_want[4] or include_want[6] or self._fips:
                problems.append("VPP has no cnat plugin: NAT-outgoing and floating IPs are not programmed")
            return problems
        try:
            if include_want[4] or include_want[6] or self._fips:
                self._enable_cnat(pod_interfaces, full or self._dump_interfaces)
            self._program_snat(include_want)
            self._program_translations(changed_fips, all_fips)
            if self._vpp.snat is not None:
                self._send_exclude(sorted(self._vpp.exclude - self._exclude_want, key=_net_key), False)
        except BaseException:
            self._recompute = True  # VPP unreachable or restarted: the next apply starts over
            raise
        finally:
            self._save_record()
        if self._failures:
            self._recompute = True
        return self._problems(include_want)

    # ------------------------------------------------------------------ desired state

    def _update_endpoints(
        self,
        state: DesiredState,
        dirty: Dirty,
        pod_interfaces: Mapping[WorkloadEndpointID, int],
        everything: bool,
    ) -> set[IPAddress]:
        """Recompute the endpoints that may have changed; returns the floating IPs touched."""
        if everything:
            keys = set(state.workload_endpoints) | set(self._eps)
        else:
            keys = set(dirty.workload_endpoints)
            keys.update(k for k, sw in pod_interfaces.items() if self._last_sw.get(k) != sw)
            keys.update(k for k in self._last_sw if k not in pod_interfaces)
        self._last_sw = dict(pod_interfaces)
        pools = list(state.ip_pools.values())
        touched: set[IPAddress] = set()
        for key in keys:
            old = self._eps.pop(key, None)
            if old is not None:
                self._index(key, old, False)
                for ext in old.fips:
                    self._claims.get(ext, {}).pop(key, None)
                touched.update(old.fips)
            ep = state.workload_endpoints.get(key)
            if ep is None:
                continue
            fams, problems = masquerade_families(ep, pools, self.config.ipv6_support)
            fips, fip_problems = _endpoint_fips(ep, self.config.ipv6_support)
            new = _Endpoint(pod_interfaces.get(key), fams, fips, problems + fip_problems)
            self._eps[key] = new
            self._index(key, new, True)
            for ext, int_ip in fips.items():
                self._claims.setdefault(ext, {})[key] = int_ip
            touched.update(fips)
        return touched

    def _index(self, key: WorkloadEndpointID, ep: _Endpoint, add: bool) -> None:
        if add and ep.problems:
            self._ep_problems[key] = ep.problems
        elif not add:
            self._ep_problems.pop(key, None)
        if ep.sw is None:
            return
        for fam in ep.families:
            users = self._bits[fam].setdefault(ep.sw, set())
            if add:
                users.add(key)
            else:
                users.discard(key)
                if not users:
                    del self._bits[fam][ep.sw]

    def _update_fips(self, state: DesiredState, touched: set[IPAddress], everything: bool) -> None:
        """Pick the owner of each touched floating IP (the lowest endpoint id wins a conflict)."""
        own = state.host_metadata.get(self.config.felix_hostname)
        own_addrs = {a for a in ((own.ipv4_addr, own.ipv6_addr) if own else ()) if a is not None}
        for ext in set(self._claims) | set(self._fips) if everything else touched:
            claims = self._claims.get(ext)
            self._fips.pop(ext, None)
            self._fip_problems.pop(ext, None)
            if not claims:
                self._claims.pop(ext, None)
                continue
            winner = min(claims)
            if ext in own_addrs:
                self._fip_problems[ext] = [
                    f"floating IP {ext} of endpoint {k}: it is this node's own address, not programmed "
                    "(an exclusive cnat VIP would drop all other traffic to the node)"
                    for k in sorted(claims)
                ]
                continue
            self._fips[ext] = claims[winner]
            losers = sorted(k for k in claims if k != winner)
            if losers:
                self._fip_problems[ext] = [
                    f"floating IP {ext} of endpoint {k}: also claimed by endpoint {winner}, which has it"
                    for k in losers
                ]

    def _include_want(self) -> dict[int, set[int]]:
        return {f: set(self._bits[f]) if self._snat_want.get(f) is not None else set() for f in (4, 6)}

    def _problems(self, include_want: dict[int, set[int]]) -> list[str]:
        out: list[str] = []
        if self._config_problem:
            out.append(self._config_problem)
        if self.config.nat_port_range is not None and (include_want[4] or include_want[6]):
            lo, hi = self.config.nat_port_range
            out.append(
                f"config parameter NATPortRange={lo}:{hi}: not supported by cnat (it picks source ports)"
            )
        for key in sorted(self._ep_problems):
            out.extend(self._ep_problems[key])
        for fam in (4, 6):
            if self._snat_want.get(fam) is not None or not self._bits[fam]:
                continue
            users = {k for keys in self._bits[fam].values() for k in keys}
            if users:
                some = ", ".join(str(k) for k in heapq.nsmallest(3, users))
                out.append(
                    f"NAT-outgoing of {len(users)} endpoint(s) ({some}{', ...' if len(users) > 3 else ''}) "
                    f"needs this node's IPv{fam} address (HostMetadata of {self.config.felix_hostname!r}), "
                    "which is unknown: not source-NATed"
                )
        for ext in sorted(self._fip_problems, key=_addr_key):
            out.extend(self._fip_problems[ext])
        return out + self._failures

    # ------------------------------------------------------------------ programming

    def _enable_cnat(self, pod_interfaces: Mapping[WorkloadEndpointID, int], dump: bool) -> None:
        """cnat's feature on every interface (see the module docstring), once each."""
        targets = set(pod_interfaces.values())
        if dump:
            self._dump_interfaces = False
            targets.update(
                int(d.sw_if_index)
                for d in self.client.dump(
                    "sw_interface_dump", sw_if_index=U32_MAX, **self._gen("_generation")
                )
                if int(d.sw_if_index) != 0
            )
        todo = sorted(targets - self.cnat_enabled)
        requests = [
            ("feature_cnat_enable_disable", {"sw_if_index": sw, "enable_disable": True}, f"interface {sw}")
            for sw in todo
        ]
        for (_n, fields, obj), res in zip(requests, self._send(requests), strict=True):
            if res.error is None:
                self.cnat_enabled.add(fields["sw_if_index"])
            else:
                self._fail(f"cnat feature on {obj}", res.error)

    def _program_snat(self, include_want: dict[int, set[int]]) -> None:
        """The SNAT entry, its policy and excluded prefixes, then the include bits."""
        have = self._vpp
        want = self._snat_want
        needed = bool(include_want[4] or include_want[6])
        if have.snat is None and not needed:
            return
        # A new entry gets both families in one message; an existing one gets each changed family
        # in a message of its own (see the module docstring on the SNAT entry).
        updates: list[SnatAddresses] = []
        if have.snat is None:
            if want.ip4 is not None or want.ip6 is not None:
                updates.append(want)
        else:
            if want.ip4 is not None and want.ip4 != have.snat.ip4:
                updates.append(SnatAddresses(want.ip4, None))
            if want.ip6 is not None and want.ip6 != have.snat.ip6:
                updates.append(SnatAddresses(None, want.ip6))
        requests = [self._snat_request(u) for u in updates]
        if not have.policy_set or have.snat is None:
            requests.append(("cnat_set_snat_policy", {"policy": CNAT_POLICY_IF_PFX}, "SNAT policy IF_PFX"))
        results = self._send(requests)
        for (name, _f, obj), res in zip(requests, results, strict=True):
            if res.error is not None:
                self._fail(obj, res.error)
            elif name == "cnat_set_snat_policy":
                have.policy_set = True
        for update, res in zip(updates, results[: len(updates)], strict=True):
            if res.error is None:
                old = have.snat or SnatAddresses(None, None)
                have.snat = SnatAddresses(update.ip4 or old.ip4, update.ip6 or old.ip6)
        if have.snat is None:
            return
        if not have.policy_set:
            self._drop_entry()  # its policy would still be NONE: NAT everything
            return
        if have.placeholder is None and not self._set_placeholder():
            return  # removing a last IPv4 bit now would lose the excluded prefixes: retried
        excluded = self._send_exclude(sorted(self._exclude_want - have.exclude, key=_net_key), True)
        self._retry_dead_includes(include_want)
        for fam in (4, 6):
            gone = sorted(have.include[fam] - include_want[fam])
            new = sorted(include_want[fam] - have.include[fam])
            self._send_include(fam, gone, False)
            if excluded:  # else pods would be NATed towards a prefix that should be excluded
                self._send_include(fam, new, True)

    def _set_placeholder(self) -> bool:
        """Keep a bit that is never cleared in the entry's INCLUDE_V4 map: the client's instance
        sentinel (a loopback without addresses, admin down, never deleted: nothing arrives by it,
        so nothing is NATed for it). cnat reads an empty INCLUDE_V4 map as an entry never
        initialised (clearing the last bit trims the bitmap to length 0), and the next add
        initialises it again, which empties its table of excluded prefixes: without this bit, the
        last IPv4 pod leaving would make the next one NATed towards pools, services and nodes."""
        info = getattr(self.client, "info", None)
        sentinel = info.sentinel_sw_if_index if info is not None else None
        if sentinel is None:
            self._fail("SNAT entry's permanent include bit", RuntimeError("the VPP client keeps no sentinel"))
            return False
        (res,) = self._send([self._include_request(4, sentinel, True)])
        if res.error is not None:
            self._fail("SNAT entry's permanent include bit", res.error)
            return False
        self._vpp.placeholder = sentinel
        return True

    def _drop_entry(self) -> None:
        """Delete the SNAT entry (neither address nor interface), with its prefixes and bits."""
        request = self._snat_request(SnatAddresses(None, None))
        (res,) = self._send([request])
        if res.error is None:
            self._vpp = _Vpp(translations=self._vpp.translations, foreign=self._vpp.foreign)
        else:
            self._fail("SNAT entry without its policy (delete)", res.error)

    def _snat_request(self, want: SnatAddresses) -> Request:
        fields = {
            "fwd_fib_index": VRF,
            "ret_fib_index": VRF,
            "snat_ip4": want.ip4 or IPv4Address(0),
            "snat_ip6": want.ip6 or IPv6Address(0),
            "sw_if_index": U32_MAX,
            "flags": CNAT_SNAT_F_NO_CLIENT,
        }
        return ("cnat_set_snat_addresses_v2", fields, f"SNAT addresses {want.ip4} {want.ip6}")

    def _send_exclude(self, prefixes: list[IPNetwork], is_add: bool) -> bool:
        """Add or delete excluded prefixes; whether all went through."""
        if not prefixes:
            return True
        if is_add:
            self._vpp.exclude.update(prefixes)
            self._changed = True
            self._save_record()  # written ahead: the record lists at least what VPP has
        requests = [
            (
                "cnat_snat_policy_add_del_exclude_pfx",
                {"is_add": is_add, "prefix": p},
                f"excluded prefix {p}",
            )
            for p in prefixes
        ]
        ok = True
        for p, res in zip(prefixes, self._send(requests), strict=True):
            if res.error is not None:
                ok = False
                self._fail(f"excluded prefix {p}", res.error)
                if is_add:
                    self._vpp.exclude.discard(p)
            elif not is_add:
                self._vpp.exclude.discard(p)
        return ok

    def _include_request(self, fam: int, sw: int, is_add: bool) -> Request:
        return (
            "cnat_snat_policy_add_del_if",
            {"sw_if_index": sw, "is_add": is_add, "table": INCLUDE_MAP[fam]},
            f"NAT-outgoing IPv{fam} of interface {sw}",
        )

    def _send_include(self, fam: int, sws: list[int], is_add: bool) -> None:
        if not sws:
            return
        have = self._vpp.include[fam]
        if is_add:
            have.update(sws)
            self._changed = True
            self._save_record()
        requests = [self._include_request(fam, sw, is_add) for sw in sws]
        for sw, (_n, _f, obj), res in zip(sws, requests, self._send(requests), strict=True):
            err = res.error
            if err is None:
                if not is_add:
                    have.discard(sw)
                continue
            if not is_add and isinstance(err, VppApiError) and err.retval == INVALID_SW_IF_INDEX:
                # The interface is gone but VPP keeps its bit: clear it when the index is reused.
                have.discard(sw)
                self._vpp.dead_include[fam].add(sw)
                continue
            self._fail(obj, err)
            if is_add:
                have.discard(sw)

    def _retry_dead_includes(self, include_want: dict[int, set[int]]) -> None:
        """A bit VPP kept for a deleted interface whose index is in use again (bound to an
        endpoint) and not wanted: remove it now."""
        if not (self._vpp.dead_include[4] or self._vpp.dead_include[6]):
            return
        bound = set(self._last_sw.values())
        for fam in (4, 6):
            dead = self._vpp.dead_include[fam]
            back = sorted((dead & bound) - include_want[fam])
            dead -= dead & bound
            if back:
                self._vpp.include[fam].update(back)
                self._send_include(fam, back, False)

    def _program_translations(self, touched: set[IPAddress], everything: bool) -> None:
        """Floating IPs: updates (create or re-path) first, then deletes."""
        have, foreign = self._vpp.translations, self._vpp.foreign
        exts = set(self._fips) | set(have.by_vip) if everything else touched
        updates: list[tuple[FipKey, IPAddress]] = []
        stale: list[FipKey] = []
        for ext in exts:
            int_ip = self._fips.get(ext)
            wanted = set(translation_keys(ext, self._ports)) if int_ip is not None else set()
            stale.extend(k for k in have.keys_of(ext) if k not in wanted)
            if int_ip is None:
                continue
            for k in wanted:
                adopted = foreign.pop(k)
                if adopted is not None:  # someone else's, but its key is ours now
                    have.set(k, adopted)
                current = have.get(k)
                if current is None or current[1] != int_ip:
                    updates.append((k, int_ip))
        if updates:
            for k, _ip in updates:
                if have.get(k) is None:
                    have.set(k, (U32_MAX, None))  # recorded before it exists
            self._changed = True
            self._save_record()
            requests = [self._translation_request(k, int_ip) for k, int_ip in updates]
            self._collect_translation_results(updates, self._send(requests))
        if stale:
            self._delete_translations(stale)

    def _delete_translations(self, stale: list[FipKey]) -> None:
        have = self._vpp.translations
        self._changed = True
        dels = []
        for k in stale:
            value = have.get(k)
            if value is None or value[0] == U32_MAX:  # never created
                have.pop(k)
            else:
                dels.append((k, value[0]))
        requests = [("cnat_translation_del", {"id": tid}, _describe_key(k)) for k, tid in dels]
        for (k, _tid), res in zip(dels, self._send(requests), strict=True):
            err = res.error
            if err is None or (isinstance(err, VppApiError) and err.retval == NO_SUCH_ENTRY):
                have.pop(k)
            else:
                self._fail(_describe_key(k), err)

    def _collect_translation_results(
        self, updates: list[tuple[FipKey, IPAddress]], results: list[Any]
    ) -> None:
        have = self._vpp.translations
        failed: dict[IPAddress, list[str]] = {}
        per_fip = sum(r.last - r.first + 1 for r in self._ports)
        for (k, int_ip), res in zip(updates, results, strict=True):
            if res.error is None:
                have.set(k, (int(res.reply.id), int_ip))
            else:
                current = have.get(k)
                if current is not None and current[0] == U32_MAX:
                    have.pop(k)
                failed.setdefault(k.ext_ip, []).append(str(res.error))
        for ext, errors in failed.items():
            self._failures.append(
                f"floating IP {ext}: {len(errors)} of its {per_fip} translations failed, e.g. {errors[0]}"
            )

    def _translation_request(self, key: FipKey, int_ip: IPAddress) -> Request:
        af = 0 if key.ext_ip.version == 4 else 1
        zero: IPAddress = IPv4Address(0) if af == 0 else IPv6Address(0)
        translation = {
            "vip": {"addr": key.ext_ip, "sw_if_index": U32_MAX, "if_af": af, "port": key.port},
            "id": 0,
            "ip_proto": key.proto,
            "is_real_ip": 0,  # exclusive VIP: ports without a translation are dropped
            "flags": 0,
            "lb_type": 0,
            "flow_hash_config": 0,
            "paths": [
                {
                    "dst_ep": {"addr": int_ip, "sw_if_index": U32_MAX, "if_af": af, "port": 0},
                    "src_ep": {"addr": zero, "sw_if_index": U32_MAX, "if_af": af, "port": 0},
                    "flags": 0,
                }
            ],
        }
        return ("cnat_translation_update", {"translation": translation}, _describe_key(key))

    # ------------------------------------------------------------------ VPP I/O

    def _cnat_loaded(self) -> bool:
        """Whether VPP has the cnat messages (a client without `supports` is assumed to)."""
        supports = getattr(self.client, "supports", None)
        return supports is None or bool(supports("cnat"))

    def _gen(self, name: str) -> dict[str, Any]:
        return {name: self._generation} if self._generation is not None else {}

    def _send(self, requests: list[Request]) -> list[Any]:
        if not requests:
            return []
        self._changed = True  # what VPP has may change: the record is compared and written after
        for name, _f, _o in requests:
            self.calls[name] = self.calls.get(name, 0) + 1
        results: list[Any] = self.client.batch(requests, **self._gen("generation"))
        return results

    def _fail(self, obj: str, error: BaseException) -> None:
        log.error("nat_request_failed", object=obj, error=str(error))
        self._failures.append(f"{obj}: {error}")

    def _dump_snat(self) -> SnatAddresses | None:
        for d in self.client.dump("cnat_snat_addresses_dump", **self._gen("_generation")):
            if VRF in (int(d.fwd_table_id4), int(d.fwd_table_id6)):
                ip4 = IPv4Address(str(d.snat_ip4))
                ip6 = IPv6Address(str(d.snat_ip6))
                return SnatAddresses(ip4 if int(ip4) else None, ip6 if int(ip6) else None)
        return None

    def _dump_translations(self) -> dict[FipKey, tuple[int, IPAddress | None]]:
        out: dict[FipKey, tuple[int, IPAddress | None]] = {}
        for d in self.client.dump("cnat_translation_dump", **self._gen("_generation")):
            tr = d.translation
            if int(tr.vip.sw_if_index) != U32_MAX:
                continue
            key = FipKey(ip_address(str(tr.vip.addr)), int(tr.ip_proto), int(tr.vip.port))
            out[key] = (int(tr.id), _single_backend(tr))
        return out

    # ------------------------------------------------------------------ the record

    def _record_path(self) -> str:
        return os.path.join(self.config.vpp_state_dir, RECORD_FILE)

    def _load_record(self) -> dict[str, Any] | None:
        data = read_record(self._record_path(), getattr(self.client, "instance_id", None), "nat")
        if data is None:
            return None
        nat: dict[str, Any] = data.get("nat", {})
        return nat

    def _record(self) -> dict[str, Any]:
        v = self._vpp
        return {
            "policy_set": v.policy_set,
            "placeholder": v.placeholder,
            "exclude": sorted(str(p) for p in v.exclude),
            "include": {str(f): sorted(v.include[f] | v.dead_include[f]) for f in (4, 6)},
            "cnat_enabled": sorted(self.cnat_enabled),
            "translations": {
                str(ext): _port_ranges(ports)
                for ext, ports in sorted(v.translations.by_vip.items(), key=_vip_key)
            },
        }

    def _save_record(self) -> None:
        """Write the record if anything it lists changed (building it costs a pass over every
        translation, so not on every apply)."""
        if not self._changed:
            return
        self._changed = False
        record = self._record()
        if record == self._recorded:
            return
        path = self._record_path()
        try:
            write_record(path, getattr(self.client, "instance_id", None), {"nat": record})
            self._recorded = record
        except OSError as exc:
            log.error("nat_record_not_written", path=path, error=str(exc))


def _endpoint_fips(ep: WorkloadEndpoint, ipv6: bool) -> tuple[dict[IPAddress, IPAddress], list[str]]:
    fips: dict[IPAddress, IPAddress] = {}
    problems: list[str] = []
    for nat in (*ep.ipv4_nat, *(ep.ipv6_nat if ipv6 else ())):
        if nat.ext_ip.version != nat.int_ip.version:
            problems.append(
                f"endpoint {ep.id}: NAT entry {nat.ext_ip} -> {nat.int_ip} mixes families: skipped"
            )
        elif nat.ext_ip in fips and fips[nat.ext_ip] != nat.int_ip:
            problems.append(
                f"endpoint {ep.id}: NAT entry {nat.ext_ip} -> {nat.int_ip} conflicts with "
                f"{nat.ext_ip} -> {fips[nat.ext_ip]}: skipped"
            )
        else:
            fips[nat.ext_ip] = nat.int_ip
    return fips, problems


def _single_backend(tr: Any) -> IPAddress | None:
    """The int_ip of a translation of ours (one path to an address, port kept, no source
    rewrite), or None for anything else (it is rewritten if wanted)."""
    paths = list(tr.paths)[: int(tr.n_paths)]
    if len(paths) != 1:
        return None
    dst, src = paths[0].dst_ep, paths[0].src_ep
    if int(dst.sw_if_index) != U32_MAX or int(dst.port) != 0 or int(src.port) != 0:
        return None
    if int(ip_address(str(src.addr))) != 0:
        return None
    addr = ip_address(str(dst.addr))
    return addr if int(addr) else None


def _port_ranges(ports: Mapping[tuple[int, int], Translation]) -> dict[str, list[list[int]]]:
    """A VIP's translations as port ranges per protocol (the record stays small)."""
    by_proto: dict[int, list[tuple[int, int]]] = {}
    for proto, port in ports:
        by_proto.setdefault(proto, []).append((port, port))
    return {str(proto): [[a, b] for a, b in _merge(ranges)] for proto, ranges in sorted(by_proto.items())}


def _vip_key(item: tuple[IPAddress, object]) -> tuple[int, int]:
    return _addr_key(item[0])


def _describe_key(k: FipKey) -> str:
    return f"floating IP {k.ext_ip} {PROTOCOL_NAMES.get(k.proto, k.proto)}/{k.port}"


def _net_key(n: IPNetwork) -> tuple[int, int, int]:
    return (n.version, int(n.network_address), n.prefixlen)


def _addr_key(a: IPAddress) -> tuple[int, int]:
    return (a.version, int(a))
