"""A simulated node: the VPP simulator, the driver's VPP client and dataplane, and pods on it.

Used by `replay` / `make demo` (the default `--vpp sim`), by the end-to-end tests and by the
benchmarks. `add_pod` creates a pod's VPP interface with the driver's own CNI code
(`vpp.pods.PodInterfaces`, what a CNI ADD runs): a TUN tap tagged with the pod's identity and
its host-side interface name, the deny-all ACL until Felix's endpoint is programmed, its /32
and /128 routes. Packets are judged by the simulator's packet model (`sim.packet.evaluate`) on
the VPP state the driver programmed.

Topology: an uplink `host-eth0` (the node's address, default routes) carries everything that
is not a local pod; pods borrow the addresses of the pods' loopback (unnumbered).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..cni.types import PodRequest, WorkloadIdentity
from ..config import Config
from ..model.types import WorkloadEndpointID
from ..policy.verdict import Packet as OraclePacket
from ..vpp.client import VppClient
from ..vpp.dataplane import STATE_FILE, VppDataplane
from ..vpp.pods import PodInterfaces
from .packet import Outcome, Packet, forward
from .server import SimServer
from .state import VppState

U32_MAX = 0xFFFFFFFF
ADMIN_UP = 1


def to_sim_packet(p: OraclePacket, icmp_id: int = 0) -> Packet:
    """The simulator's form of an oracle packet (ICMP: type/code; others: ports or none)."""
    return Packet(
        src=p.src,
        dst=p.dst,
        proto=p.protocol,
        sport=p.src_port or 0,
        dport=p.dst_port or 0,
        icmp_type=p.icmp_type,
        icmp_code=p.icmp_code or 0,
        icmp_id=icmp_id,
    )


@dataclass
class Pod:
    name: str
    sw_if_index: int
    addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]


class SimNode:
    """Start with `SimNode(backend=...)`; `close()` (or use as a context manager) stops it."""

    def __init__(
        self,
        *,
        backend: str = "auto",
        config: Config | None = None,
        node_ip: str = "172.31.0.1/24",
        node_ip6: str = "fd10::1/64",
        state_dir: str | None = None,
        socket_dir: str | None = None,
        server: SimServer | None = None,
        vpp_state: VppState | None = None,
        acl_limit: int = 65536,
        external_socket: str | None = None,
    ) -> None:
        """`external_socket`: drive a simulator (or VPP) running in another process; packets
        cannot be judged then (`verdict` needs the simulator's state)."""
        self._tmp = tempfile.TemporaryDirectory(prefix="cvd-simnode-", dir=socket_dir)
        self.state_dir = state_dir or os.path.join(self._tmp.name, "state")
        self.socket = external_socket or os.path.join(self._tmp.name, "api.sock")
        if server is None and external_socket is None:
            factory = (lambda: vpp_state) if vpp_state is not None else None
            server = SimServer(self.socket, state_factory=factory).start()
        elif server is not None:
            self.socket = server.socket_path
        self._server = server
        base = config or Config()
        self.config = _with(base, vpp_api_socket=self.socket, vpp_state_dir=self.state_dir)
        self.client = VppClient(
            self.socket, features=("interfaces", "fib"), connect_timeout=10, read_timeout=60
        )
        self.client.start()
        self._backend, self._acl_limit = backend, acl_limit
        self._node_ips = (node_ip, node_ip6)
        self.pods: dict[str, Pod] = {}
        self.cni = PodInterfaces(lambda: self.client, self.config)
        self.dataplane = self.new_dataplane()
        self._setup_uplink(node_ip, node_ip6)

    def new_dataplane(self) -> VppDataplane:
        """A driver dataplane on this node's VPP (a new one = a restarted driver process)."""
        dp = VppDataplane(
            lambda _cfg: self.client, backend=self._backend, config=self.config, acl_limit=self._acl_limit
        )
        dp.connect()
        self.cni.notifier = dp
        return dp

    def reset(self, config: Config | None = None) -> None:
        """A freshly started VPP and driver (fast: the connection is kept)."""
        if config is not None:
            self.config = _with(config, vpp_api_socket=self.socket, vpp_state_dir=self.state_dir)
        with self.server.lock:
            self.server.state = self.server.state_factory()
        with contextlib.suppress(FileNotFoundError):  # that VPP's objects are gone
            os.remove(os.path.join(self.state_dir, STATE_FILE))
        self.pods = {}
        self.cni = PodInterfaces(lambda: self.client, self.config)
        self.dataplane = self.new_dataplane()
        self._setup_uplink(*self._node_ips)

    # ------------------------------------------------------------------ topology

    def _setup_uplink(self, node_ip: str, node_ip6: str) -> None:
        c = self.client
        existing = {
            str(d.tag).rstrip("\x00"): int(d.sw_if_index)
            for d in c.dump("sw_interface_dump", sw_if_index=U32_MAX)
        }
        if "uplink" in existing:  # a restarted driver on the same simulated VPP
            self.uplink = existing["uplink"]
            return
        self.uplink = int(
            c.call("af_packet_create_v3", mode=1, use_random_hw_addr=True, host_if_name="eth0").sw_if_index
        )
        c.call("sw_interface_tag_add_del", is_add=True, sw_if_index=self.uplink, tag="uplink")
        c.call("sw_interface_set_flags", sw_if_index=self.uplink, flags=ADMIN_UP)
        for addr in (node_ip, node_ip6):
            c.call(
                "sw_interface_add_del_address",
                sw_if_index=self.uplink,
                is_add=True,
                prefix=ipaddress.ip_interface(addr),
            )
        for prefix, gw in (("0.0.0.0/0", _gateway(node_ip)), ("::/0", _gateway(node_ip6))):
            c.call("ip_route_add_del", is_add=True, route=_route(prefix, self.uplink, gw))

    def add_pod(
        self,
        name: str,
        addresses: Iterable[str | ipaddress.IPv4Address | ipaddress.IPv6Address],
        *,
        register: bool = True,
        identity: WorkloadEndpointID | None = None,
    ) -> Pod:
        """Create a pod's interface as a CNI ADD does; it denies everything until Felix's
        endpoint for it (`WorkloadEndpoint.name == name`, or the endpoint `identity`) is
        programmed. `register=False`: the dataplane is not told (a driver in another process
        finds the interface by its tag)."""
        addrs = tuple(ipaddress.ip_address(str(a).split("/")[0]) for a in addresses)
        ident = identity or WorkloadEndpointID("sim", name, "eth0")
        request = PodRequest(
            netns=f"/var/run/netns/{name}",
            interface_name="eth0",
            host_interface_name=name,
            identity=WorkloadIdentity(ident.orchestrator_id, ident.workload_id, ident.endpoint_id),
            addresses=tuple(ipaddress.ip_interface(f"{a}/{a.max_prefixlen}") for a in addrs),
        )
        notifier, self.cni.notifier = self.cni.notifier, (self.cni.notifier if register else None)
        try:
            self.cni.add(request)
        finally:
            self.cni.notifier = notifier
        pod = Pod(name, self.cni.pods()[name], addrs)
        self.pods[name] = pod
        return pod

    def delete_pod(self, name: str) -> None:
        """A CNI DEL of the pod made by `add_pod`."""
        self.cni.delete(f"/var/run/netns/{name}", "eth0")
        self.pods.pop(name, None)

    # ------------------------------------------------------------------ packets

    def verdict(
        self, packet: OraclePacket, src_pod: str | None = None, *, icmp_id: int = 0
    ) -> tuple[bool, list[str]]:
        """Whether VPP lets the first packet of a new flow through: from `src_pod` (or from
        outside, entering on the uplink) to wherever the FIB sends it."""
        outcome = self.forward(packet, src_pod, icmp_id=icmp_id)
        return outcome.verdict == "allow", outcome.trace

    def forward(self, packet: OraclePacket, src_pod: str | None = None, *, icmp_id: int = 0) -> Outcome:
        """`verdict`, with how VPP sends the packet on when it lets it through."""
        rx = self.pods[src_pod].sw_if_index if src_pod is not None else self.uplink
        with self.server.lock:
            return forward(self.server.state, to_sim_packet(packet, icmp_id), rx, use_sessions=False)

    @property
    def server(self) -> SimServer:
        if self._server is None:
            raise RuntimeError("the simulator runs in another process: its state is not here")
        return self._server

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self.dataplane.close()
        if self._server is not None:
            self._server.stop()
        self._tmp.cleanup()

    def __enter__(self) -> SimNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _gateway(addr: str) -> Any:
    """The default gateway: the subnet's address 254, or 253 when that is the node's own."""
    iface = ipaddress.ip_interface(addr)
    gw = iface.network.network_address + 254
    return gw - 1 if gw == iface.ip else gw


def _route(prefix: str, sw_if_index: int, gw: Any) -> dict[str, Any]:
    net = ipaddress.ip_network(prefix)
    path: dict[str, Any] = {
        "sw_if_index": sw_if_index,
        "table_id": 0,
        "weight": 1,
        "preference": 0,
        "type": 0,
        "flags": 0,
        "proto": 0 if net.version == 4 else 1,
    }
    if gw is not None:
        path["nh"] = {"address": {("ip4" if net.version == 4 else "ip6"): gw}}
    return {"table_id": 0, "prefix": net, "paths": [path]}


def _with(cfg: Config, **changes: Any) -> Config:
    from dataclasses import replace

    return replace(cfg, **changes)
