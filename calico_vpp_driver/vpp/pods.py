"""Pods' VPP interfaces, created and removed on the Calico CNI plugin's requests.

`cni/server.py` turns the plugin's gRPC calls into `PodRequest`s and calls `PodInterfaces.add`
/ `delete` from its worker threads. The VPP client is thread-safe (one owner thread, jobs
interleaved request by request), so a CNI request is never stuck behind a long policy apply;
this module's own state is guarded by one lock.

ADD, in an order that never lets an unpoliced pod interface carry a packet:

1. the interface: a TUN tap that VPP creates directly inside the pod's network namespace
   (`tap_create_v3`: pod-side name, addresses and MTU set by VPP), or, where VPP cannot make
   taps (no `/dev/vhost-net`: `VPPPodInterface=veth`, or detected when VPP refuses a tap with
   -11), a veth pair made by `PodLinks` whose host end VPP attaches with `af_packet_create_v3`
   (an af_packet VPP already has for that host name, -79, is this pod's when it carries its
   tag, else a leftover of a driver stopped before tagging it or of an earlier sandbox whose
   host end this pod's veth replaced: it is deleted and made again);
2. its tag (`pod_tag`): the pod's workload identity, its netns and the host-side interface
   name Felix's endpoint will carry. The tags are the record: a restarted driver finds its
   pods with one `sw_interface_dump`, and the dataplane binds Felix's workload endpoints with
   them;
3. the deny-all ACL on input and output, until Felix's endpoint is programmed on it;
4. IPv4/IPv6 enabled by borrowing the addresses of the pods' loopback (unnumbered); for veth
   pods also the IPv6 link (`sw_interface_ip6_enable_disable`): unnumbered enables IPv6
   forwarding only, and without the link (its link-local address) VPP never resolves the pod's
   IPv6 address on an Ethernet interface. Strict uRPF for both families whatever the pod's
   addresses (unnumbered enables both; a family without a route to the pod is dropped
   whole), set as loose then strict (`_urpf`); admin up;
5. a /32 or /128 route per pod address;
6. the dataplane is told (`PodNotifier.pod_interface_added`): it binds the endpoint and
   programs its policy at its next apply, which the notification triggers.

The reply carries the pod-side MAC: the veth's pod end, or `TUN_CONTAINER_MAC` for a TUN
(Calico's plugin fails the ADD on anything Go's net.ParseMAC rejects).

A repeated ADD of a pod this process made returns it as it is. A pod learnt from its tag after
a driver restart may be half made (the tap carries its tag from the start), so a repeated ADD
redoes steps 3-5 and the Linux side, all idempotent in VPP, without touching an interface the
dataplane already polices (its ACLs and uRPF are the dataplane's then).

DEL: the dataplane forgets the interface first (so nothing is programmed on an index VPP is
about to reuse), then routes (deleted by prefix: a path naming an interface VPP no longer has
is refused), then the interface. A DEL without a netns removes the recorded pods with that
interface name whose namespace is gone. Both calls are idempotent (the plugin retries, kubelet
repeats DELs). After a VPP restart the pods' interfaces are gone; the module notices (the
client's generation) and starts afresh: those pods need recreating.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from ..cni.netns import GATEWAY_MAC, pod_routes
from ..cni.types import TUN_CONTAINER_MAC, IPNetwork, PodError, PodRequest, PodResult, is_go_mac
from ..config import Config
from .errors import VppApiError, VppError
from .records import read_record, write_record

log = structlog.get_logger("calico_vpp_driver.vpp.pods")

U32_MAX = 0xFFFFFFFF
ADMIN_UP = 1
TAP_API_FLAG_TUN = 16  # tapv2.api tap_flags
AF_PACKET_API_MODE_ETHERNET = 1  # af_packet.api af_packet_mode
URPF_OFF, URPF_LOOSE, URPF_STRICT = 0, 1, 2  # urpf.api urpf_mode
ERR_SYSCALL_ERROR_1 = -11  # tap_create_v3 without /dev/vhost-net
ERR_IF_ALREADY_EXISTS = -79  # af_packet_create_v3: VPP has one for the host name (its index answered)
ERR_VALUE_EXIST = -81  # sw_interface_ip6_enable_disable: the IPv6 link exists already

POD_TAG_PREFIX = "cvdpod:"
LOOPBACK_TAG = "cvd-pods-loopback"
#: The CNI ADDs in force, under `VPPStateDir`: VPP loses every pod interface when it restarts, and
#: the CNI plugin will not ask again, so the driver makes them again from this record.
RECORD_FILE = "pods.json"
# The pods' loopback: its addresses are what pod interfaces borrow (and, for veth pods, the
# gateway their default route points at; VPP answers ARP for it on the unnumbered interface).
LOOPBACK_ADDRESSES = ("169.254.1.1/32", "fd00:cafe:169:254::1/128")
# veth pods: VPP's end carries the gateway MAC the pod's neighbour entries pin (so the link-local
# address VPP derives from it when the IPv6 link is enabled is the pod's IPv6 gateway,
# fe80::ecee:eeff:feee:eeee).
VETH_VPP_MAC = GATEWAY_MAC


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def identity_key(orchestrator: str, workload: str, endpoint: str) -> str:
    """A short stable digest of a workload identity (Felix's `WorkloadEndpointID` fields)."""
    return _short_hash(f"{orchestrator}/{workload}/{endpoint}")


def netns_key(netns: str, interface_name: str) -> str:
    """A short stable digest of where the pod's interface lives (what a CNI DEL names)."""
    return _short_hash(f"{netns}\0{interface_name}")


@dataclass(frozen=True, slots=True)
class PodTag:
    identity: str  # identity_key
    netns: str  # netns_key
    name: str  # host-side interface name, Felix's WorkloadEndpoint.name

    def __str__(self) -> str:
        return f"{POD_TAG_PREFIX}{self.identity}:{self.netns}:{self.name}"


def parse_pod_tag(tag: str) -> PodTag | None:
    """The `PodTag` in an interface tag, or None for interfaces that are not pods."""
    if not tag.startswith(POD_TAG_PREFIX):
        return None
    parts = tag[len(POD_TAG_PREFIX) :].split(":", 2)
    if len(parts) != 3 or not all(parts):
        return None
    return PodTag(*parts)


class PodNotifier(Protocol):
    """The dataplane's side: it binds endpoints to pod interfaces."""

    def pod_interface_added(self, sw_if_index: int, tag: str) -> None:
        """A pod interface exists (deny-all on it); bind and program its endpoint soon."""

    def pod_interface_removed(self, sw_if_index: int, delete: Callable[[], None]) -> None:
        """Forget the interface and run `delete()` (which deletes it from VPP) atomically with
        respect to the dataplane's applies (VPP reuses the index)."""

    def deny_all_acl(self) -> int:
        """The index of the deny-all ACL the dataplane shares with new pod interfaces."""


class PodLinks(Protocol):
    """What happens inside Linux for a pod (`cni/netns.py`); absent in the simulator."""

    def tun_configure(self, request: PodRequest, routes: Sequence[IPNetwork]) -> None:
        """The pod's side of its TUN interface beyond what VPP sets: every address (VPP sets one
        per family), forwarding if the request allows it, and `routes` through the interface
        (no gateway: an L3 link)."""

    def create_veth(self, request: PodRequest, mtu: int) -> str:
        """A veth pair: host end `request.host_interface_name`, pod end configured; returns
        the pod end's MAC."""

    def delete_veth(self, netns: str, interface_name: str, host_interface_name: str) -> None:
        """Remove the veth pair (gone already is fine)."""


@dataclass
class _Pod:
    sw_if_index: int
    tag: PodTag
    kind: str  # "tap" or "veth"
    addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] | None  # None: unknown
    mac: str = TUN_CONTAINER_MAC
    adopted: bool = False  # learnt from its tag: whether its ADD got to the end is unknown


class PodInterfaces:
    """`PodHandler` for the CNI server, on a VPP client (`call`, `dump`, `generation`, `supports`)."""

    def __init__(
        self,
        client_source: Callable[[], Any],
        config: Config,
        *,
        notifier: PodNotifier | None = None,
        links: PodLinks | None = None,
    ) -> None:
        self._client_source = client_source
        self.config = config
        self.notifier = notifier
        self.links = links
        self._lock = threading.Lock()
        self._generation = -1
        self._client: Any = None
        self.loopback = -1
        self._pods: dict[str, _Pod] = {}  # netns_key -> pod
        self._veth = config.vpp_pod_interface == "veth"
        self._record = os.path.join(config.vpp_state_dir, RECORD_FILE) if config.vpp_state_dir else None
        self._requests: dict[str, PodRequest] = self._read_requests()  # netns_key -> its ADD
        self._no_urpf_logged = -1  # the client generation the missing urpf plugin was logged for

    # ------------------------------------------------------------------ CNI

    def add(self, request: PodRequest) -> PodResult:
        started = time.monotonic()
        where = f"pod {request.identity} (netns {request.netns}, interface {request.interface_name})"
        with self._lock:
            c = self._ready(where)
            key = netns_key(request.netns, request.interface_name)
            tag = PodTag(
                identity_key(
                    request.identity.orchestrator, request.identity.workload, request.identity.endpoint
                ),
                key,
                request.host_interface_name,
            )
            existing = self._pods.get(key)
            if existing is not None and existing.tag == tag:
                if existing.adopted:
                    self._complete(c, request, existing, where)
                    self._requests[key] = request
                    self._write_requests()
                    if self.notifier is not None:
                        self.notifier.pod_interface_added(existing.sw_if_index, str(tag))
                    log.info(
                        "pod_interface_setup_redone",
                        pod=str(request.identity),
                        sw_if_index=existing.sw_if_index,
                        detail="learnt from its tag after a restart; its setup was made again",
                    )
                else:
                    log.info(
                        "pod_interface_exists", pod=str(request.identity), sw_if_index=existing.sw_if_index
                    )
                return PodResult(request.host_interface_name, existing.mac)
            if existing is not None:  # the same netns/interface for another workload: replace it
                self._remove(c, key, existing, request.netns, request.interface_name)
            pod = self._create(c, request, tag, where)
            self._pods[key] = pod
            self._requests[key] = request
            self._write_requests()
            # Under the lock: the dataplane sees adds and removes of an index in VPP's order (a
            # late "added" after a DEL would bind the next pod's reused index to this identity).
            if self.notifier is not None:
                self.notifier.pod_interface_added(pod.sw_if_index, str(tag))
        log.info(
            "pod_interface_added",
            pod=str(request.identity),
            interface=request.host_interface_name,
            sw_if_index=pod.sw_if_index,
            kind=pod.kind,
            addresses=[str(a) for a in request.addresses],
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        return PodResult(request.host_interface_name, pod.mac)

    def delete(self, netns: str, interface_name: str) -> None:
        if not netns:
            self._delete_where_netns_gone(interface_name)
            return
        with self._lock:
            c = self._ready(f"netns {netns}, interface {interface_name}")
            key = netns_key(netns, interface_name)
            pod = self._pods.get(key)
            if self._requests.pop(key, None) is not None:
                self._write_requests()
            if pod is None:
                log.info("pod_interface_absent", netns=netns, interface=interface_name)
                return
            self._remove(c, key, pod, netns, interface_name)
        log.info("pod_interface_deleted", netns=netns, interface=interface_name, sw_if_index=pod.sw_if_index)

    def _delete_where_netns_gone(self, interface_name: str) -> None:
        """A DEL that names no netns (the runtime had removed it) identifies nothing but the
        interface name, the same in every pod: remove the recorded pods with that name whose
        namespace no longer exists (which is what such a DEL is about)."""
        with self._lock:
            c = self._ready(f"interface {interface_name} (no netns)")
            gone = [
                (key, r)
                for key, r in sorted(self._requests.items())
                if r.interface_name == interface_name and self._netns_gone(r)
            ]
            for key, request in gone:
                pod = self._pods.get(key)
                if pod is not None:
                    self._remove(c, key, pod, request.netns, interface_name)
                del self._requests[key]  # only once its interface is gone: a retry finds it again
                self._write_requests()
                log.info(
                    "pod_interface_deleted",
                    netns=request.netns,
                    interface=interface_name,
                    pod=str(request.identity),
                    sw_if_index=pod.sw_if_index if pod is not None else None,
                    detail="the DEL named no netns; this pod's namespace is gone",
                )
            if not gone:
                unrecorded = sorted(p.tag.name for k, p in self._pods.items() if k not in self._requests)
                log.info(
                    "pod_interface_absent",
                    netns="",
                    interface=interface_name,
                    detail="the DEL named no netns and no recorded pod with this interface has lost "
                    "its namespace",
                    unrecorded_pods=unrecorded,
                )

    def restore(self) -> list[str]:
        """Make again the pod interfaces of recorded ADDs that VPP does not have (it restarted,
        maybe while the driver was down), as the CNI plugin asked for them; returns the pods
        made. A pod whose network namespace is gone is forgotten; other failures are logged and
        tried again at the next restore."""
        with self._lock:
            try:
                self._ready("restoring pod interfaces")
            except PodError as exc:
                log.warning("pods_not_restored", error=str(exc))
                return []
            missing = [r for k, r in sorted(self._requests.items()) if k not in self._pods]
        made = []
        for request in missing:
            if self._netns_gone(request):
                log.info("pod_gone", pod=str(request.identity), netns=request.netns)
                with self._lock:
                    if self._requests.pop(netns_key(request.netns, request.interface_name), None):
                        self._write_requests()
                continue
            try:
                self.add(request)
            except PodError as exc:
                log.error("pod_not_restored", pod=str(request.identity), error=str(exc))
                continue
            made.append(str(request.identity))
        if made:
            log.warning("pods_restored", pods=made, detail="VPP had lost their interfaces; made again")
        return made

    def _netns_gone(self, request: PodRequest) -> bool:
        """Whether the pod's network namespace no longer exists. Only known on a node with a
        Linux side (`links`): without one (the simulator) the paths are names, not files."""
        return self.links is not None and not os.path.exists(request.netns)

    def _read_requests(self) -> dict[str, PodRequest]:
        if self._record is None:
            return {}
        data = read_record(self._record, None, "pods") or {}
        out: dict[str, PodRequest] = {}
        for key, item in (data.get("pods") or {}).items():
            try:
                out[str(key)] = PodRequest.from_json(item)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("pod_record_entry_unreadable", path=self._record, key=key, error=str(exc))
        return out

    def _write_requests(self) -> None:
        if self._record is None:
            return
        try:
            write_record(self._record, None, {"pods": {k: r.to_json() for k, r in self._requests.items()}})
        except OSError as exc:  # the pods work; only a restore after a VPP restart would miss them
            log.error("pod_record_not_written", path=self._record, error=str(exc))

    def pods(self) -> dict[str, int]:
        """Host-side interface name -> sw_if_index of every pod interface (for tests and show)."""
        with self._lock:
            return {p.tag.name: p.sw_if_index for p in self._pods.values()}

    # ------------------------------------------------------------------ setup

    def _ready(self, where: str) -> Any:
        """The client, with this module's VPP objects found or made (again after a VPP restart)."""
        try:
            c = self._client_source()
        except Exception as exc:
            raise PodError(f"{where}: VPP is not reachable ({exc}); retry when VPP is up") from exc
        if c is not self._client or c.generation != self._generation:
            try:
                self._start(c)
            except VppError as exc:
                raise PodError(f"{where}: VPP refused the pods' setup: {exc}") from exc
        return c

    def _start(self, c: Any) -> None:
        """Find (after a driver restart) or make the loopback and the deny-all ACL, and learn the
        pods created before from their tags."""
        if self._client is not None and c.generation != self._generation and self._pods:
            log.warning(
                "vpp_restarted_pods_lost",
                pods=sorted(p.tag.name for p in self._pods.values()),
                detail="VPP restarted: its pod interfaces are gone; the recorded pods are made again",
            )
        self._pods.clear()
        self.loopback = -1
        for d in c.dump("sw_interface_dump", sw_if_index=U32_MAX):
            tag = str(d.tag).rstrip("\x00")
            sw = int(d.sw_if_index)
            if tag == LOOPBACK_TAG:
                self.loopback = sw
            pod_tag = parse_pod_tag(tag)
            if pod_tag is not None:
                kind = "veth" if str(d.interface_dev_type).rstrip("\x00").startswith("af") else "tap"
                mac = TUN_CONTAINER_MAC if kind == "tap" else ""  # a veth's: read on its next ADD
                self._pods[pod_tag.netns] = _Pod(sw, pod_tag, kind, None, mac, adopted=True)
        if self.loopback < 0:
            self.loopback = int(c.call("create_loopback").sw_if_index)
            c.call("sw_interface_tag_add_del", is_add=True, sw_if_index=self.loopback, tag=LOOPBACK_TAG)
            c.call("sw_interface_set_flags", sw_if_index=self.loopback, flags=ADMIN_UP)
            for addr in LOOPBACK_ADDRESSES:
                c.call(
                    "sw_interface_add_del_address",
                    sw_if_index=self.loopback,
                    is_add=True,
                    prefix=ipaddress.ip_interface(addr),
                )
        self._client, self._generation = c, c.generation
        if self._pods:
            log.info("pod_interfaces_adopted", pods=len(self._pods))
        if not c.supports("urpf"):
            self._log_no_urpf(c)

    def _deny_all(self, c: Any) -> int:
        if self.notifier is not None:
            return self.notifier.deny_all_acl()
        from .dataplane import find_or_make_deny_all  # no dataplane here (tests, benchmarks)

        return find_or_make_deny_all(c)

    # ------------------------------------------------------------------ create / remove

    def _mtu(self, req: PodRequest) -> int:
        return req.mtu if req.mtu > 0 else self.config.vpp_pod_mtu

    def _create(self, c: Any, req: PodRequest, tag: PodTag, where: str) -> _Pod:
        mtu = self._mtu(req)
        addresses = tuple(a.ip for a in req.addresses)
        sw = -1
        kind = "veth" if self._veth else "tap"
        mac = TUN_CONTAINER_MAC
        fresh = True
        try:
            if kind == "tap":
                sw = self._create_tap(c, req, tag, mtu)
                if sw < 0:  # VPP cannot make taps here: veth from now on
                    self._veth, kind = True, "veth"
            if kind == "veth":
                if self.links is None:
                    raise PodError(f"{where}: VPP cannot create taps here and no veth support is configured")
                mac = _pod_mac(self.links.create_veth(req, mtu), where)
                sw, fresh = self._create_af_packet(c, req, tag, where)
                c.call("sw_interface_tag_add_del", is_add=True, sw_if_index=sw, tag=str(tag), obj=where)
            self._setup(c, req, sw, kind, addresses, where, fresh=fresh)
            return _Pod(sw, tag, kind, addresses, mac)
        except VppError as exc:
            self._undo(c, sw, kind, req, addresses)
            raise PodError(f"{where}: VPP refused to create the pod's interface: {exc}") from exc
        except PodError:
            self._undo(c, sw, kind, req, addresses)
            raise

    def _complete(self, c: Any, req: PodRequest, pod: _Pod, where: str) -> None:
        """Steps 3-5 and the Linux side again for a pod learnt from its tag (a driver stopped in
        the middle of its ADD leaves it tagged but, say, admin down without routes)."""
        addresses = tuple(a.ip for a in req.addresses)
        try:
            if pod.kind == "veth":
                if self.links is None:
                    raise PodError(f"{where}: the pod has a veth and no veth support is configured")
                # The pair exists: it is checked and configured again; the pod end's MAC is
                # what the reply needs.
                pod.mac = _pod_mac(self.links.create_veth(req, self._mtu(req)), where)
            self._setup(c, req, pod.sw_if_index, pod.kind, addresses, where, fresh=False)
        except VppError as exc:
            raise PodError(f"{where}: VPP refused to complete the pod's interface: {exc}") from exc
        pod.addresses = addresses
        pod.adopted = False

    def _setup(
        self,
        c: Any,
        req: PodRequest,
        sw: int,
        kind: str,
        addresses: Sequence[Any],
        where: str,
        *,
        fresh: bool,
    ) -> None:
        """Everything after the tag, in the order that keeps the interface fail-closed; every
        step is idempotent in VPP. On an interface that is not `fresh` (made by an earlier
        process) ACLs other than the deny-all mean the dataplane polices it already: its ACLs
        and its uRPF (off for endpoints allowed to spoof) are then left to the dataplane."""
        deny = self._deny_all(c)
        policed = False
        if not fresh:
            ins, outs = self._acl_lists(c, sw, where)
            policed = bool(ins and outs) and (ins, outs) != ([deny], [deny])
        if not policed:  # deny-all before the interface can carry anything
            c.call("acl_interface_set_acl_list", sw_if_index=sw, n_input=1, acls=[deny, deny], obj=where)
        c.call(
            "sw_interface_set_unnumbered",
            sw_if_index=self.loopback,
            unnumbered_sw_if_index=sw,
            is_add=True,
            obj=where,
        )
        if kind == "veth":
            try:
                c.call("sw_interface_ip6_enable_disable", sw_if_index=sw, enable=True, obj=where)
            except VppApiError as exc:
                if exc.retval != ERR_VALUE_EXIST:
                    raise
        if not policed:
            self._urpf(c, sw, where)
        c.call("sw_interface_set_flags", sw_if_index=sw, flags=ADMIN_UP, obj=where)
        for result in c.batch(
            [("ip_route_add_del", {"is_add": True, "route": _pod_route(a, sw)}, where) for a in addresses]
        ):
            result.unwrap()
        if kind == "tap" and self.links is not None:
            self.links.tun_configure(req, pod_routes(req))

    @staticmethod
    def _acl_lists(c: Any, sw: int, where: str) -> tuple[list[int], list[int]]:
        for d in c.dump("acl_interface_list_dump", sw_if_index=sw, obj=where):
            if int(d.sw_if_index) == sw:
                acls = [int(a) for a in list(d.acls)[: d.count]]
                return acls[: d.n_input], acls[d.n_input :]
        return [], []

    def _create_tap(self, c: Any, req: PodRequest, tag: PodTag, mtu: int) -> int:
        """The tap's sw_if_index, or -1 when VPP cannot make taps on this host."""
        fields: dict[str, Any] = {
            "id": U32_MAX,
            "use_random_mac": True,
            "tap_flags": TAP_API_FLAG_TUN,
            "host_namespace_set": True,
            "host_namespace": req.netns,
            "host_if_name_set": True,
            "host_if_name": req.interface_name,
            "host_mtu_set": True,
            "host_mtu_size": mtu,
            "tag": str(tag),
        }
        v4 = [a for a in req.addresses if a.version == 4]
        v6 = [a for a in req.addresses if a.version == 6]
        if v4:
            fields.update(host_ip4_prefix_set=True, host_ip4_prefix=v4[0])
        if v6:
            fields.update(host_ip6_prefix_set=True, host_ip6_prefix=v6[0])
        try:
            return int(c.call("tap_create_v3", **fields, obj=f"pod {req.identity}").sw_if_index)
        except VppError as exc:
            if (
                getattr(exc, "retval", None) == ERR_SYSCALL_ERROR_1
                and self.config.vpp_pod_interface == "auto"
            ):
                log.warning(
                    "pod_taps_unavailable",
                    detail="VPP cannot create taps (no /dev/vhost-net?): pods get veth pairs attached "
                    "with af_packet from now on",
                    error=str(exc),
                )
                return -1
            raise

    def _create_af_packet(self, c: Any, req: PodRequest, tag: PodTag, where: str) -> tuple[int, bool]:
        """VPP's end of the veth: (sw_if_index, whether VPP made it just now). VPP keys
        af_packet interfaces by host name and answers -79 with the index of the one it has: this
        pod's (tagged so) is used as it is; an untagged one (a driver stopped between making and
        tagging it) or another pod's (an earlier sandbox of the pod, whose host end this pod's
        veth has just replaced) is deleted and made again; anything else is not touched."""
        name = req.host_interface_name
        fields = {
            "mode": AF_PACKET_API_MODE_ETHERNET,
            "hw_addr": VETH_VPP_MAC,
            "use_random_hw_addr": False,
            "host_if_name": name,
        }
        try:
            return int(c.call("af_packet_create_v3", **fields, obj=where).sw_if_index), True
        except VppApiError as exc:
            if exc.retval != ERR_IF_ALREADY_EXISTS or exc.reply is None:
                raise
            sw = int(exc.reply.sw_if_index)
        current = self._interface_tag(c, sw)
        owner = parse_pod_tag(current)
        if owner == tag:
            log.info("pod_af_packet_adopted", pod=str(req.identity), sw_if_index=sw)
            return sw, False
        if current and owner is None:
            raise PodError(
                f"{where}: VPP already attaches host interface {name} as sw_if_index {sw} with tag "
                f"{current!r}, which is not a pod of this driver; not touching it"
            )
        log.warning(
            "pod_af_packet_stale_replaced",
            pod=str(req.identity),
            interface=name,
            sw_if_index=sw,
            tag=current,
            detail="VPP had an af_packet interface for this host name left by an unfinished ADD or "
            "an earlier sandbox of the pod; deleted and made again",
        )
        key = next((k for k, p in self._pods.items() if p.sw_if_index == sw), None)
        stale = self._pods.get(key) if key is not None else None
        if stale is None:
            stale = _Pod(sw, owner or PodTag("", "", name), "veth", None)
        # VPP's side only: the Linux host end is already this pod's.
        self._remove(c, key, stale, "", "", linux=False)
        if key is not None and self._requests.pop(key, None) is not None:
            self._write_requests()  # a restore must not bring the superseded sandbox back
        return int(c.call("af_packet_create_v3", **fields, obj=where).sw_if_index), True

    @staticmethod
    def _interface_tag(c: Any, sw: int) -> str:
        for d in c.dump("sw_interface_dump", sw_if_index=sw):
            if int(d.sw_if_index) == sw:
                return str(d.tag).rstrip("\x00")
        return ""

    def _urpf(self, c: Any, sw: int, where: str) -> None:
        """Strict uRPF on input for both families. urpf_update changes nothing when the mode
        asked is the one VPP's per-index table holds, and that table outlives interfaces
        (urpf.c): an interface on a deleted one's index asked for "strict" again would get no
        check. Asking loose first always changes the mode, so strict then enables its feature.
        (Loose lasts one message, while the interface carries the deny-all ACL.)"""
        if not c.supports("urpf"):
            self._log_no_urpf(c, sw)
            return
        for result in c.batch(urpf_requests(sw, strict=True, obj=where)):
            result.unwrap()

    def _log_no_urpf(self, c: Any, sw: int | None = None) -> None:
        """Once per VPP instance: without the urpf plugin nothing checks pods' source addresses."""
        if self._no_urpf_logged == c.generation:
            return
        self._no_urpf_logged = c.generation
        log.error(
            "pod_source_addresses_unchecked",
            plugin="urpf_plugin.so",
            sw_if_index=sw,
            detail="VPP has no urpf plugin: pods can send with any source address (no anti-spoofing); "
            "load urpf_plugin.so in VPP's startup.conf",
        )

    def _undo(self, c: Any, sw: int, kind: str, req: PodRequest, addresses: Sequence[Any]) -> None:
        """Best effort after a failed ADD: leave nothing half made."""
        pod = _Pod(sw, PodTag("", "", req.host_interface_name), kind, tuple(addresses))
        try:
            self._delete_vpp(c, pod, req.netns, req.interface_name)
        except Exception:
            log.exception("pod_cleanup_failed", pod=str(req.identity), sw_if_index=sw)

    def _remove(
        self, c: Any, key: str | None, pod: _Pod, netns: str, interface_name: str, *, linux: bool = True
    ) -> None:
        def delete() -> None:
            self._delete_vpp(c, pod, netns, interface_name, linux=linux)

        try:
            if self.notifier is not None:
                self.notifier.pod_interface_removed(pod.sw_if_index, delete)
            else:
                delete()
        except VppError as exc:
            raise PodError(f"pod interface {pod.tag.name} (sw_if_index {pod.sw_if_index}): {exc}") from exc
        if key is not None:
            self._pods.pop(key, None)

    def _delete_vpp(self, c: Any, pod: _Pod, netns: str, interface_name: str, *, linux: bool = True) -> None:
        sw = pod.sw_if_index
        if sw >= 0:
            addresses = pod.addresses if pod.addresses is not None else self._routed_to(c, sw)
            # By prefix alone: VPP decodes a delete's paths too, and refuses one naming an
            # interface it no longer has (-54), which would leave the route as a drop.
            routes = [
                ("ip_route_add_del", {"is_add": False, "route": _pod_route(a, None)}, pod.tag.name)
                for a in addresses
            ]
            for result in c.batch(routes):
                if result.error is not None:
                    log.warning("pod_route_not_deleted", interface=pod.tag.name, error=str(result.error))
            try:
                if pod.kind == "tap":
                    c.call("tap_delete_v2", sw_if_index=sw, obj=pod.tag.name)
                else:
                    c.call("af_packet_delete", host_if_name=pod.tag.name, obj=pod.tag.name)
            except VppApiError as exc:
                if exc.name not in ("INVALID_SW_IF_INDEX", "SYSCALL_ERROR_1"):
                    raise
                log.info("pod_interface_already_gone", interface=pod.tag.name, sw_if_index=sw)
        if linux and pod.kind == "veth" and self.links is not None:
            self.links.delete_veth(netns, interface_name, pod.tag.name)

    @staticmethod
    def _routed_to(c: Any, sw: int) -> list[Any]:
        """The host routes through `sw` (a pod adopted after a restart: its addresses unknown)."""
        found = []
        for is_ip6 in (False, True):
            for d in c.dump("ip_route_dump", table={"table_id": 0, "is_ip6": is_ip6}):
                route = d.route
                prefix = ipaddress.ip_network(route.prefix)
                if prefix.prefixlen != prefix.max_prefixlen:
                    continue
                paths = list(route.paths)[: route.n_paths]
                if paths and all(int(p.sw_if_index) == sw for p in paths):
                    found.append(prefix.network_address)
        return found


def urpf_requests(sw: int, *, strict: bool, obj: str) -> list[tuple[str, dict[str, Any], str]]:
    """uRPF on input, both families: strict (a pod sends only from the addresses routed to it)
    asked as loose then strict, or off. VPP keeps each index's mode in a table that outlives the
    interface (urpf.c) and does nothing when asked for the mode it holds, so an interface on a
    deleted one's index asked "strict" alone could keep no check; loose always changes the mode
    (and still drops sources without a route) for the one message it lasts."""
    modes = (URPF_LOOSE, URPF_STRICT) if strict else (URPF_OFF,)
    return [
        ("urpf_update", {"is_input": True, "mode": mode, "af": af, "sw_if_index": sw}, obj)
        for af in (0, 1)
        for mode in modes
    ]


def _pod_mac(mac: str, where: str) -> str:
    """The veth's pod-end MAC for the CNI reply, which the plugin parses with net.ParseMAC."""
    if not is_go_mac(mac):
        raise PodError(f"{where}: the pod end of the veth has no usable MAC address ({mac!r})")
    return mac


def _pod_route(addr: Any, sw: int | None) -> dict[str, Any]:
    """The host route to one pod address through `sw`; with `sw` None, without paths (a
    delete, which names only the prefix)."""
    net = ipaddress.ip_network(f"{addr}/{addr.max_prefixlen}")
    if sw is None:
        return {"table_id": 0, "prefix": net, "paths": []}
    path = {
        "sw_if_index": sw,
        "table_id": 0,
        "weight": 1,
        "preference": 0,
        "type": 0,
        "flags": 0,
        "proto": 0 if net.version == 4 else 1,
    }
    return {"table_id": 0, "prefix": net, "paths": [path]}
