"""Routes and tunnels (vpp/routes.py) against the VPP simulator over its real socket: what the
FIB holds, where packets go (the packet model's trace), what each change costs in API messages,
and what a restarted driver does."""

from __future__ import annotations

import ipaddress
import json
import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import pytest

from calico_vpp_driver.config import Config
from calico_vpp_driver.felix.status import StatusBoard
from calico_vpp_driver.model.state import DesiredState, Dirty
from calico_vpp_driver.model.types import (
    VTEP,
    HostMetadata,
    Profile,
    Route,
    Rule,
    WorkloadEndpoint,
    WorkloadEndpointID,
)
from calico_vpp_driver.sim.node import SimNode
from calico_vpp_driver.sim.packet import evaluate
from calico_vpp_driver.vpp.errors import VppConnectionError, VppRestartedError
from calico_vpp_driver.vpp.npol_store import RenderError
from calico_vpp_driver.vpp.routes import (
    POOL_IPIP,
    POOL_NO_ENCAP,
    POOL_VXLAN,
    RECORD_FILE,
    RT_LOCAL_WORKLOAD,
    RT_REMOTE_HOST,
    RT_REMOTE_TUNNEL,
    RT_REMOTE_WORKLOAD,
    RouteProgrammer,
    TunnelSpec,
)

ME = "node-1"
IP = ipaddress.ip_address
NET = ipaddress.ip_network
U32_MAX = 0xFFFFFFFF
# node -> (IPv4 address, IPv6 address, VTEP IPv4 tunnel address, VTEP IPv6 tunnel address)
NODES = {
    ME: ("172.31.0.1", "fd10::1", "10.65.1.0", "fd00:65:1::"),
    "node-2": ("172.31.0.2", "fd10::2", "10.65.2.0", "fd00:65:2::"),  # our subnet
    "node-3": ("192.168.5.3", "fd20::3", "10.65.3.0", "fd00:65:3::"),  # another subnet
    "node-4": ("192.168.5.4", "fd20::4", "10.65.4.0", "fd00:65:4::"),
}
ROUTE_MESSAGES = ("ip_route_add_del", "vxlan_add_del_tunnel_v3", "ipip_add_tunnel", "ipip_del_tunnel")


class Sim:
    """A simulated node (uplink 172.31.0.1/24 + fd10::1/64, default routes via .254) and a
    RouteProgrammer on it, with every API message the simulator executes counted."""

    def __init__(self, node: SimNode, config: Config) -> None:
        self.node = node
        self.config = config
        self.sent: Counter[str] = Counter()
        node.server.after_request = lambda name, _req: self.sent.update([name])
        self.routes = RouteProgrammer(node.client, config)
        self.routes.adopt()

    def apply(self, st: DesiredState, *, full: bool = False) -> list[str]:
        self.sent.clear()
        problems = self.routes.apply(st, st.take_dirty(), full)
        assert not self.node.server.errors, self.node.server.errors
        return problems

    def restart(self) -> None:
        """A new driver process on the same VPP."""
        self.routes = RouteProgrammer(self.node.client, self.config)
        self.sent.clear()
        self.routes.adopt()

    # -- what VPP has ---------------------------------------------------------------------

    def fib(self, prefix: str) -> list[Any] | None:
        """The paths of `prefix` in table 0, None when absent."""
        net = NET(prefix)
        for d in self.node.client.dump("ip_route_dump", table={"table_id": 0, "is_ip6": net.version == 6}):
            if NET(d.route.prefix) == net:
                return list(d.route.paths)
        return None

    def tunnels(self) -> dict[str, Any]:
        """Tag -> the simulator's interface, for the driver's tunnels."""
        state = self.node.server.state
        return {itf.tag: itf for _, itf in state.interfaces.items() if itf.kind in ("vxlan", "ipip")}

    def send(self, dst: str, src: str | None = None, *, rx: int | None = None) -> tuple[str, list[str]]:
        """A UDP packet from a local pod (or `src` on the uplink) to `dst`."""
        if src is None:
            src = "10.65.1.10" if IP(dst).version == 4 else "fd00:65:1::10"
            rx = self.node.pods["pod"].sw_if_index if rx is None else rx
        elif rx is None:
            rx = self.node.uplink
        with self.node.server.lock:
            return evaluate(
                self.node.server.state,
                {"src": src, "dst": dst, "proto": "udp", "sport": 1000, "dport": 53},
                rx,
                use_sessions=False,
            )


@pytest.fixture
def sim(tmp_path: Any) -> Iterator[Sim]:
    node = SimNode(backend="acl", state_dir=str(tmp_path / "state"))
    add_open_pod(node, "pod", "10.65.1.10", "fd00:65:1::10")
    config = replace(node.config, felix_hostname=ME)
    yield Sim(node, config)
    node.close()


def add_open_pod(node: SimNode, name: str, *addresses: str) -> Any:
    """A pod made by the CNI code, without its deny-all ACLs: these tests are about routing."""
    pod = node.add_pod(name, addresses, register=False)
    with node.server.lock:
        node.server.state.acl_input.pop(pod.sw_if_index, None)
        node.server.state.acl_output.pop(pod.sw_if_index, None)
    return pod


def host(st: DesiredState, name: str) -> None:
    v4, v6, _t4, _t6 = NODES[name]
    st.update_host_metadata("v4v6", HostMetadata(name, ipv4_addr=IP(v4), ipv6_addr=IP(v6)))  # type: ignore[arg-type]


def vtep(st: DesiredState, name: str, **over: Any) -> VTEP:
    v4, v6, t4, t6 = NODES[name]
    v = VTEP(
        name,
        mac="66:00:00:00:00:01",
        ipv4_addr=IP(t4),  # type: ignore[arg-type]
        parent_device_ip=IP(v4),  # type: ignore[arg-type]
        ipv6_addr=IP(t6),  # type: ignore[arg-type]
        parent_device_ipv6=IP(v6),  # type: ignore[arg-type]
    )
    v = replace(v, **over)
    st.update_vtep(v)
    return v


def route(
    st: DesiredState, dst: str, node: str, pool: int, *, types: int = RT_REMOTE_WORKLOAD, **over: Any
) -> Route:
    net = NET(dst)
    node_ip = IP(NODES[node][0 if net.version == 4 else 1]) if node in NODES else None
    r = Route(net, types=types, ip_pool_type=pool, dst_node_name=node, dst_node_ip=node_ip)
    r = replace(r, **over)
    st.update_route(r)
    return r


def cluster(*nodes: str) -> DesiredState:
    st = DesiredState()
    for name in (ME, *nodes):
        host(st, name)
        vtep(st, name)
    return st


def path_of(paths: list[Any] | None) -> tuple[int, str]:
    """(sw_if_index, next hop) of a one-path route."""
    assert paths is not None and len(paths) == 1, paths
    p = paths[0]
    nh = p.nh.address.ip6 if int(p.proto) == 1 else p.nh.address.ip4
    return int(p.sw_if_index), str(nh)


def route_msgs(sent: Mapping[str, int]) -> dict[str, int]:
    return {k: v for k, v in sent.items() if k in ROUTE_MESSAGES or k.startswith("sw_interface_set")}


# ------------------------------------------------------------------------------ encapsulations


def test_no_encap_routes_go_straight_to_the_node(sim: Sim) -> None:
    st = cluster("node-2", "node-3")
    route(st, "10.65.2.0/26", "node-2", POOL_NO_ENCAP)
    route(st, "10.65.3.0/26", "node-3", POOL_NO_ENCAP)  # another subnet: via the default route
    assert sim.apply(st, full=True) == []
    assert path_of(sim.fib("10.65.2.0/26")) == (U32_MAX, "172.31.0.2")
    verdict, trace = sim.send("10.65.2.7")
    assert verdict == "allow", trace
    assert any("recursive lookup of 172.31.0.2" in t for t in trace)
    assert "fib: path attached on host-eth0" in trace and "ALLOW: forwarded out host-eth0" in trace[-1]
    verdict, trace = sim.send("10.65.3.7")
    assert verdict == "allow" and "fib: path next hop 172.31.0.254 on host-eth0" in trace, trace
    assert sim.tunnels() == {}


def test_vxlan_route_through_a_tunnel_to_the_remote_vtep(sim: Sim) -> None:
    st = cluster("node-3")
    route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
    assert sim.apply(st, full=True) == []
    (tag, itf), *others = sim.tunnels().items()
    assert not others and tag.startswith("cvd-vxlan:node-3#")
    info = itf.info
    assert (str(info["src"]), str(info["dst"]), info["vni"], info["dst_port"], info["is_l3"]) == (
        "172.31.0.1",
        "192.168.5.3",
        4096,
        4789,
        True,
    )
    assert itf.admin_up and itf.unnumbered_to == sim.node.uplink  # it can receive: ip4 enabled
    assert path_of(sim.fib("10.65.3.0/26")) == (itf.sw_if_index, "10.65.3.0")
    verdict, trace = sim.send("10.65.3.9")
    assert verdict == "allow", trace
    assert f"tx {itf.name}" in " ".join(trace)
    assert "encap on vxlan_tunnel0: vxlan vni 4096 udp dport 4789, outer 172.31.0.1 -> 192.168.5.3" in trace
    assert any(t.startswith("outer: tx host-eth0") for t in trace), trace


def test_vxlan_tunnel_asks_vpp_for_the_ip_input_arc(sim: Sim) -> None:
    st = cluster("node-3")
    route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
    sim.apply(st, full=True)
    (itf,) = sim.tunnels().values()
    assert sim.sent["add_node_next"] == 1
    assert itf.info["decap_next_index"] == sim.node.server.state.node_next("vxlan4-input", "ip4-input")


def test_ipip_route_through_a_tunnel_to_the_node(sim: Sim) -> None:
    st = cluster("node-4")
    route(st, "10.66.4.0/26", "node-4", POOL_IPIP)
    assert sim.apply(st, full=True) == []
    (tag, itf), *others = sim.tunnels().items()
    assert not others and tag.startswith("cvd-ipip:node-4#")
    assert (str(itf.info["src"]), str(itf.info["dst"])) == ("172.31.0.1", "192.168.5.4")
    assert itf.admin_up and itf.unnumbered_to == sim.node.uplink
    assert path_of(sim.fib("10.66.4.0/26")) == (itf.sw_if_index, "0.0.0.0")
    verdict, trace = sim.send("10.66.4.1")
    assert verdict == "allow" and "encap on ipip0: ip-in-ip, outer 172.31.0.1 -> 192.168.5.4" in trace, trace


def test_ipip_takes_the_node_address_from_host_metadata_when_the_route_has_none(sim: Sim) -> None:
    st = cluster("node-4")
    route(st, "10.66.4.0/26", "node-4", POOL_IPIP, dst_node_ip=None)
    assert sim.apply(st, full=True) == []
    (itf,) = sim.tunnels().values()
    assert str(itf.info["dst"]) == "192.168.5.4"


@pytest.mark.parametrize("pool", [POOL_VXLAN, POOL_IPIP])
def test_cross_subnet_same_subnet_goes_direct_other_subnet_tunnels(sim: Sim, pool: int) -> None:
    st = cluster("node-2", "node-3")
    route(st, "10.65.2.0/26", "node-2", pool, same_subnet=True)
    route(st, "10.65.3.0/26", "node-3", pool, same_subnet=False)
    assert sim.apply(st, full=True) == []
    assert path_of(sim.fib("10.65.2.0/26")) == (U32_MAX, "172.31.0.2")
    (itf,) = sim.tunnels().values()
    assert path_of(sim.fib("10.65.3.0/26"))[0] == itf.sw_if_index
    # node-2 leaves our subnet: its route moves into a tunnel, replaced in place (make before break)
    route(st, "10.65.2.0/26", "node-2", pool, same_subnet=False)
    sim.apply(st)
    assert len(sim.tunnels()) == 2
    sent = route_msgs(sim.sent)
    assert sim.sent["ip_route_add_del"] == 1  # one add that replaces, no delete
    assert sent.get("ipip_del_tunnel", 0) == 0
    tunnel2 = next(i for t, i in sim.tunnels().items() if ":node-2#" in t)
    assert path_of(sim.fib("10.65.2.0/26"))[0] == tunnel2.sw_if_index
    # ...and back: the direct route replaces the tunnel's, and the unused tunnel goes.
    route(st, "10.65.2.0/26", "node-2", pool, same_subnet=True)
    sim.apply(st)
    assert path_of(sim.fib("10.65.2.0/26")) == (U32_MAX, "172.31.0.2")
    assert [t for t in sim.tunnels() if t] == [t for t in sim.tunnels() if ":node-3#" in t]


def test_ipv6_routes(sim: Sim) -> None:
    st = cluster("node-2", "node-3", "node-4")
    route(st, "fd00:65:2::/122", "node-2", POOL_NO_ENCAP)
    route(st, "fd00:65:3::/122", "node-3", POOL_VXLAN)
    route(st, "fd00:66:4::/122", "node-4", POOL_IPIP)
    assert sim.apply(st, full=True) == []
    assert path_of(sim.fib("fd00:65:2::/122")) == (U32_MAX, "fd10::2")
    tunnels = sim.tunnels()
    vx = next(i for t, i in tunnels.items() if t.startswith("cvd-vxlan6:node-3#"))
    ipip = next(i for t, i in tunnels.items() if t.startswith("cvd-ipip6:node-4#"))
    assert (str(vx.info["src"]), str(vx.info["dst"])) == ("fd10::1", "fd20::3")
    assert path_of(sim.fib("fd00:65:3::/122")) == (vx.sw_if_index, "fd00:65:3::")
    assert (str(ipip.info["src"]), str(ipip.info["dst"])) == ("fd10::1", "fd20::4")
    for dst, out in (("fd00:65:2::5", "host-eth0"), ("fd00:65:3::5", vx.name), ("fd00:66:4::5", ipip.name)):
        verdict, trace = sim.send(dst)
        assert verdict == "allow" and f"ALLOW: forwarded out {out}" in trace[-1], trace


def test_borrowed_address_inside_a_remote_block_goes_to_its_borrower(sim: Sim) -> None:
    st = cluster("node-2", "node-3")
    route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
    route(st, "10.65.3.7/32", "node-2", POOL_VXLAN, borrowed=True)
    assert sim.apply(st, full=True) == []
    by_node = {t.split(":")[1].split("#")[0]: i for t, i in sim.tunnels().items()}
    _v, trace = sim.send("10.65.3.7")
    assert f"ALLOW: forwarded out {by_node['node-2'].name}" in trace[-1], trace
    _v, trace = sim.send("10.65.3.8")
    assert f"ALLOW: forwarded out {by_node['node-3'].name}" in trace[-1], trace


def test_remote_tunnel_address_route_has_no_next_hop(sim: Sim) -> None:
    st = cluster("node-3")
    route(st, "10.65.3.0/32", "node-3", POOL_VXLAN, types=RT_REMOTE_WORKLOAD | RT_REMOTE_TUNNEL)
    assert sim.apply(st, full=True) == []
    (itf,) = sim.tunnels().values()
    # Sent without a next hop; VPP stores a host route out of an interface attached to the
    # prefix's own address (fib_table_route_path_fixup), and dumps it so.
    assert path_of(sim.fib("10.65.3.0/32")) == (itf.sw_if_index, "10.65.3.0")
    assert sim.routes.routes[NET("10.65.3.0/32")].nh is None
    sim.restart()  # adoption reads that back as the driver's path: nothing re-added
    assert sim.apply(st, full=True) == []
    assert route_msgs(sim.sent) == {}


def test_local_block_is_a_blackhole_and_pod_routes_are_left_to_the_cni(sim: Sim) -> None:
    st = cluster()
    route(st, "10.65.1.0/26", ME, POOL_VXLAN, types=RT_LOCAL_WORKLOAD)
    route(st, "10.65.1.10/32", ME, POOL_VXLAN, types=RT_LOCAL_WORKLOAD, local_workload=True)
    route(st, "172.31.0.2/32", "node-2", 0, types=RT_REMOTE_HOST)
    cni_route = sim.fib("10.65.1.10/32")
    assert sim.apply(st, full=True) == []
    assert int(sim.fib("10.65.1.0/26")[0].type) == 2  # type: ignore[index]  # drop
    assert sim.fib("10.65.1.10/32") == cni_route  # the pod's own route: untouched
    assert sim.fib("172.31.0.2/32") is None  # remote host: nothing
    verdict, trace = sim.send("10.65.1.10", "172.31.0.9")
    pod = sim.node.pods["pod"]
    assert (
        verdict == "allow"
        and f"ALLOW: forwarded out {sim.node.server.state.if_name(pod.sw_if_index)}" in trace[-1]
    ), trace
    verdict, trace = sim.send("10.65.1.11", "172.31.0.9")
    assert verdict == "deny" and "the FIB drops 10.65.1.11" in trace[-1], trace
    assert set(route_msgs(sim.sent)) == {"ip_route_add_del"} and sim.sent["ip_route_add_del"] == 1


# ------------------------------------------------------------------------------ changes


def test_one_route_update_costs_one_message(sim: Sim) -> None:
    st = cluster("node-2", "node-3")
    route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
    sim.apply(st, full=True)
    route(st, "10.65.3.64/26", "node-3", POOL_VXLAN)  # the node's tunnel exists
    sim.apply(st)
    assert dict(sim.sent) == {"ip_route_add_del": 1}
    route(st, "10.65.3.64/26", "node-2", POOL_NO_ENCAP)  # moved to another node, no tunnel
    sim.apply(st)
    assert dict(sim.sent) == {"ip_route_add_del": 1}
    st.remove_route(NET("10.65.3.64/26"))
    sim.apply(st)
    assert dict(sim.sent) == {"ip_route_add_del": 1}
    assert sim.fib("10.65.3.64/26") is None


def test_route_removed_and_unused_tunnel_deleted(sim: Sim) -> None:
    st = cluster("node-3", "node-4")
    route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
    route(st, "10.65.3.64/26", "node-3", POOL_VXLAN)
    route(st, "10.66.4.0/26", "node-4", POOL_IPIP)
    sim.apply(st, full=True)
    assert len(sim.tunnels()) == 2
    st.remove_route(NET("10.65.3.0/26"))
    sim.apply(st)
    assert sim.fib("10.65.3.0/26") is None and len(sim.tunnels()) == 2  # still used by .64/26
    st.remove_route(NET("10.65.3.64/26"))
    st.remove_route(NET("10.66.4.0/26"))
    sim.apply(st)
    assert sim.fib("10.65.3.64/26") is None and sim.fib("10.66.4.0/26") is None
    assert sim.tunnels() == {}
    assert sim.sent["vxlan_add_del_tunnel_v3"] == 1 and sim.sent["ipip_del_tunnel"] == 1
    verdict, trace = sim.send("10.65.3.9")
    assert verdict == "allow" and "ALLOW: forwarded out host-eth0" in trace[-1]  # the default route


def test_vtep_changed_moves_routes_to_a_new_tunnel_before_deleting_the_old(sim: Sim) -> None:
    st = cluster("node-3")
    route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
    sim.apply(st, full=True)
    (old,) = sim.tunnels().values()
    seen: list[tuple[str, int]] = []
    # Every message, the route must resolve to a live tunnel: no gap.
    state = sim.node.server.state

    def check(name: str, _req: Any) -> None:
        sim.sent.update([name])
        entry = state.lookup(False, 0, IP("10.65.3.9"))
        assert entry is not None and entry.prefix == NET("10.65.3.0/26")
        assert entry.paths[0].sw_if_index in state.interfaces
        seen.append((name, entry.paths[0].sw_if_index))

    sim.node.server.after_request = check
    vtep(st, "node-3", parent_device_ip=IP("192.168.5.33"))
    assert sim.apply(st) == []
    (new,) = sim.tunnels().values()
    assert str(new.info["dst"]) == "192.168.5.33" and new.sw_if_index != old.sw_if_index
    assert path_of(sim.fib("10.65.3.0/26"))[0] == new.sw_if_index
    assert sim.sent["ip_route_add_del"] == 1 and sim.sent["vxlan_add_del_tunnel_v3"] == 2  # add, delete
    names = [name for name, _sw in seen if name in ROUTE_MESSAGES]
    assert names == [
        "vxlan_add_del_tunnel_v3",
        "ip_route_add_del",
        "vxlan_add_del_tunnel_v3",
    ]  # old goes last
    assert seen[-1][1] == new.sw_if_index


def test_vtep_removed_withdraws_its_routes_and_reports_them(sim: Sim) -> None:
    st = cluster("node-3")
    route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
    sim.apply(st, full=True)
    st.remove_vtep("node-3")
    problems = sim.apply(st)
    assert problems == ["route 10.65.3.0/26 to node node-3: no VTEP for node node-3 yet; not programmed"]
    assert sim.fib("10.65.3.0/26") is None and sim.tunnels() == {}
    vtep(st, "node-3")  # back: the waiting route is programmed
    assert sim.apply(st) == []
    assert sim.fib("10.65.3.0/26") is not None and len(sim.tunnels()) == 1


def test_route_before_its_vtep_is_programmed_when_the_vtep_comes(sim: Sim) -> None:
    st = cluster()
    host(st, "node-3")
    route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
    assert len(sim.apply(st, full=True)) == 1
    assert sim.routes.problems and sim.fib("10.65.3.0/26") is None
    vtep(st, "node-3")
    assert sim.apply(st) == [] and sim.routes.problems == []
    assert sim.fib("10.65.3.0/26") is not None


def test_vni_change_makes_new_tunnels(sim: Sim) -> None:
    st = cluster("node-3")
    route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
    sim.apply(st, full=True)
    (old_tag,) = sim.tunnels()
    sim.routes.configure(replace(sim.config, vxlan_vni=5000, vxlan_port=8472))
    assert sim.apply(st) == []
    ((tag, itf),) = sim.tunnels().items()
    assert tag != old_tag and (itf.info["vni"], itf.info["dst_port"]) == (5000, 8472)
    assert path_of(sim.fib("10.65.3.0/26"))[0] == itf.sw_if_index
    assert sim.sent["ip_route_add_del"] == 1


def test_own_address_change_rebuilds_tunnels(sim: Sim) -> None:
    st = cluster("node-3")
    route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
    sim.apply(st, full=True)
    st.update_host_metadata("v4v6", HostMetadata(ME, ipv4_addr=IP("172.31.0.100"), ipv6_addr=IP("fd10::1")))  # type: ignore[arg-type]
    assert sim.apply(st) == []
    (itf,) = sim.tunnels().values()
    assert str(itf.info["src"]) == "172.31.0.100"
    # The address is on no VPP interface (logged): the tunnel borrows the default route's
    # interface's, so that it receives at all.
    assert itf.unnumbered_to == sim.node.uplink


def test_bad_routes_are_reported_and_the_others_programmed(sim: Sim) -> None:
    st = cluster("node-2", "node-3")
    route(st, "10.65.2.0/26", "node-2", POOL_NO_ENCAP)
    route(st, "10.65.5.0/26", "node-5", 9)
    route(st, "10.65.6.0/26", "node-6", POOL_NO_ENCAP)  # unknown node: no dst_node_ip
    route(st, "10.65.7.0/26", "node-7", POOL_IPIP)  # no IP at all for the tunnel
    route(st, "10.65.3.0/26", "node-3", POOL_NO_ENCAP, dst_node_ip=IP("fd20::3"))
    vtep(st, "node-2", parent_device_ip=None)
    route(st, "10.65.2.64/26", "node-2", POOL_VXLAN)
    problems = sim.apply(st, full=True)
    assert problems == [
        "route 10.65.2.64/26 to node node-2: the VTEP of node node-2 has no IPv4 parent device address;"
        " not programmed",
        "route 10.65.3.0/26 to node node-3: node IP fd20::3 is not IPv4; not programmed",
        "route 10.65.5.0/26 to node node-5: unknown IP pool type 9; not programmed",
        "route 10.65.6.0/26 to node node-6: no node IP (dst_node_ip) to route it to; not programmed",
        "route 10.65.7.0/26 to node node-7: no node IP (dst_node_ip) for its IP-in-IP tunnel; not programmed",
    ]
    assert path_of(sim.fib("10.65.2.0/26")) == (U32_MAX, "172.31.0.2")
    for bad in ("10.65.5.0/26", "10.65.6.0/26", "10.65.7.0/26", "10.65.3.0/26", "10.65.2.64/26"):
        assert sim.fib(bad) is None


def test_tunnel_vpp_refuses_is_reported_and_the_old_route_kept(sim: Sim) -> None:
    st = cluster("node-3")
    route(st, "10.65.3.0/26", "node-3", POOL_NO_ENCAP)
    sim.apply(st, full=True)
    vtep(st, "node-3", parent_device_ip=IP("224.0.0.5"))  # multicast without an interface: -2
    route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
    problems = sim.apply(st)
    assert len(problems) == 1 and problems[0].startswith("route 10.65.3.0/26: vxlan tunnel to node node-3")
    assert path_of(sim.fib("10.65.3.0/26")) == (U32_MAX, "192.168.5.3")  # kept
    assert sim.tunnels() == {}


# ------------------------------------------------------------------------------ restarts


def test_restart_adopts_without_touching_routes_and_removes_stale_ones(sim: Sim) -> None:
    st = cluster("node-2", "node-3", "node-4")
    route(st, "10.65.2.0/26", "node-2", POOL_NO_ENCAP)
    route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
    route(st, "fd00:65:3::/122", "node-3", POOL_VXLAN)
    route(st, "10.66.4.0/26", "node-4", POOL_IPIP)
    route(st, "10.65.1.0/26", ME, POOL_VXLAN, types=RT_LOCAL_WORKLOAD)
    sim.apply(st, full=True)
    before = {p: sim.fib(p) for p in ("0.0.0.0/0", "::/0", "10.65.1.10/32", "fd00:65:1::10/128")}
    tunnels = {t: i.sw_if_index for t, i in sim.tunnels().items()}
    # The new driver process gets the whole model again; meanwhile one route went away.
    sim.restart()
    assert set(sim.routes.routes) == {
        NET(p) for p in ("10.65.2.0/26", "10.65.3.0/26", "fd00:65:3::/122", "10.66.4.0/26", "10.65.1.0/26")
    }
    st.remove_route(NET("10.66.4.0/26"))
    fresh = DesiredState()
    for name in (ME, "node-2", "node-3", "node-4"):
        host(fresh, name)
        vtep(fresh, name)
    for r in st.routes.values():
        fresh.update_route(r)
    assert sim.apply(fresh, full=True) == []
    assert dict(route_msgs(sim.sent)) == {
        "ip_route_add_del": 1,
        "ipip_del_tunnel": 1,
    }  # the stale route, its tunnel
    assert sim.fib("10.66.4.0/26") is None
    assert {t: i.sw_if_index for t, i in sim.tunnels().items()} == {
        t: s for t, s in tunnels.items() if not t.startswith("cvd-ipip")
    }
    assert {p: sim.fib(p) for p in before} == before  # not the driver's: untouched


def test_restart_never_deletes_a_recorded_prefix_someone_else_took(sim: Sim) -> None:
    st = cluster("node-2")
    route(st, "10.65.1.11/32", "node-2", POOL_NO_ENCAP, borrowed=True)
    sim.apply(st, full=True)
    # The address comes back to this node: the CNI code routes it to a new pod first.
    pod = add_open_pod(sim.node, "pod2", "10.65.1.11")
    assert path_of(sim.fib("10.65.1.11/32"))[0] == pod.sw_if_index
    sim.restart()
    assert NET("10.65.1.11/32") not in sim.routes.routes
    st.remove_route(NET("10.65.1.11/32"))
    sim.apply(st, full=True)
    assert path_of(sim.fib("10.65.1.11/32"))[0] == pod.sw_if_index


def test_route_delete_keeps_a_path_someone_else_put_on_the_prefix(sim: Sim) -> None:
    st = cluster("node-2")
    route(st, "10.65.1.11/32", "node-2", POOL_NO_ENCAP, borrowed=True)
    sim.apply(st, full=True)
    pod = add_open_pod(sim.node, "pod2", "10.65.1.11")
    route(st, "10.65.1.11/32", ME, POOL_NO_ENCAP, types=RT_LOCAL_WORKLOAD, local_workload=True)
    sim.apply(st)
    assert path_of(sim.fib("10.65.1.11/32"))[0] == pod.sw_if_index


def test_record_is_written_ahead_and_matches_vpp(sim: Sim) -> None:
    st = cluster("node-3")
    route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
    path = os.path.join(sim.config.vpp_state_dir, RECORD_FILE)
    snapshots: list[dict[str, Any]] = []

    def check(name: str, req: Any) -> None:
        if name in ("ip_route_add_del", "vxlan_add_del_tunnel_v3") and req.get("is_add", True):
            with open(path) as f:
                snapshots.append(json.load(f))

    sim.node.server.after_request = check
    sim.routes.apply(st, st.take_dirty(), True)
    assert snapshots and all("10.65.3.0/26" in s["routes"] and len(s["tunnels"]) == 1 for s in snapshots)
    with open(path) as f:
        record = json.load(f)
    assert record["vpp_instance"] == sim.node.client.instance_id
    (tag,) = record["tunnels"]
    assert TunnelSpec.from_json(record["tunnels"][tag]).tag == tag


def test_recorded_routes_vpp_no_longer_has_are_forgotten_and_reprogrammed(sim: Sim) -> None:
    st = cluster("node-3")
    route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
    sim.apply(st, full=True)
    sim.node.reset(sim.node.config)  # a fresh VPP state behind the same connection
    add_open_pod(sim.node, "pod", "10.65.1.10", "fd00:65:1::10")
    sim.restart()
    assert sim.routes.routes == {} and sim.routes.tunnels == {}
    st2 = cluster("node-3")
    route(st2, "10.65.3.0/26", "node-3", POOL_VXLAN)
    assert sim.apply(st2, full=True) == []
    (itf,) = sim.tunnels().values()
    assert path_of(sim.fib("10.65.3.0/26"))[0] == itf.sw_if_index


def test_record_lost_tunnels_are_adopted_by_tag_and_routes_replaced_in_place(sim: Sim) -> None:
    st = cluster("node-3", "node-4")
    route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
    route(st, "10.66.4.0/26", "node-4", POOL_IPIP)
    sim.apply(st, full=True)
    tunnels = {t: i.sw_if_index for t, i in sim.tunnels().items()}
    os.remove(os.path.join(sim.config.vpp_state_dir, RECORD_FILE))
    sim.restart()
    assert sim.routes.routes == {} and set(sim.routes.tunnels) == set(tunnels)
    again = DesiredState()
    for name in (ME, "node-3", "node-4"):
        host(again, name)
        vtep(again, name)
    for r in st.routes.values():
        again.update_route(r)
    assert sim.apply(again, full=True) == []
    # The routes are unknown without the record: added again (an in-place replace), no delete.
    assert route_msgs(sim.sent) == {"ip_route_add_del": 2}
    assert {t: i.sw_if_index for t, i in sim.tunnels().items()} == tunnels
    with open(os.path.join(sim.config.vpp_state_dir, RECORD_FILE)) as f:
        assert set(json.load(f)["tunnels"]) == set(tunnels)  # parameters known again


def test_tags_fit_vpp(sim: Sim) -> None:
    spec = TunnelSpec("vxlan", "n" * 250, IP("fd10::1"), IP("fd20::3"), 4096, 4789)  # type: ignore[arg-type]
    other = spec._replace(node="n" * 249 + "m")
    assert len(spec.tag) <= 63 and spec.tag != other.tag and spec.tag.startswith("cvd-vxlan6:nnn")
    assert spec.tag != spec._replace(vni=1).tag


def test_dirty_kinds_that_matter(sim: Sim) -> None:
    st = cluster("node-3")
    route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
    sim.apply(st, full=True)
    for dirty in (Dirty(ip_pools={"p"}), Dirty(other={"encapsulation"}), Dirty(host_metadata={"node-3"})):
        sim.sent.clear()
        assert sim.routes.apply(st, dirty, False) == []
        assert route_msgs(sim.sent) == {}  # compared, nothing to change


@pytest.mark.parametrize(("pool", "node"), [(POOL_VXLAN, "node-3"), (POOL_IPIP, "node-4")])
def test_untagged_leftover_of_a_crash_is_taken_over(sim: Sim, pool: int, node: str) -> None:
    st = cluster(node)
    route(st, "10.65.9.0/26", node, pool)
    sim.apply(st, full=True)
    ((tag, itf),) = sim.tunnels().items()
    # As if the driver had died between creating the tunnel (recorded ahead) and tagging it.
    sim.node.client.call("sw_interface_tag_add_del", is_add=False, sw_if_index=itf.sw_if_index, tag=tag)
    sim.restart()
    assert sim.routes.tunnels == {}
    assert sim.apply(st, full=True) == []
    ((tag2, itf2),) = sim.tunnels().items()
    assert tag2 == tag and path_of(sim.fib("10.65.9.0/26"))[0] == itf2.sw_if_index


def test_a_tunnel_that_is_not_the_drivers_is_never_taken_over(sim: Sim) -> None:
    st = cluster("node-3")
    route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
    foreign = sim.node.client.call(
        "vxlan_add_del_tunnel_v3",
        is_add=True,
        src_address=IP("172.31.0.1"),
        dst_address=IP("192.168.5.3"),
        src_port=4789,
        dst_port=4789,
        vni=4096,
        mcast_sw_if_index=U32_MAX,
        decap_next_index=U32_MAX,
    ).sw_if_index
    problems = sim.apply(st, full=True)
    assert len(problems) == 1 and "VPP already has a tunnel with these addresses" in problems[0], problems
    assert sim.node.server.state.interface(foreign) is not None and sim.fib("10.65.3.0/26") is None


def test_a_route_vpp_refuses_is_reported_and_retried(sim: Sim) -> None:
    st = cluster("node-2")
    route(st, "10.65.2.0/26", "node-2", POOL_NO_ENCAP)
    route(st, "10.65.2.64/26", "node-2", POOL_NO_ENCAP)
    sim.node.server.fail_nth("ip_route_add_del", 2, -54)
    problems = sim.apply(st, full=True)
    assert len(problems) == 1 and "NO_MATCHING_INTERFACE" in problems[0], problems
    refused = NET(problems[0].split()[1])
    assert sim.fib(str(refused)) is None and len(sim.routes.routes) == 1
    assert sim.apply(st) == [] and sim.routes.problems == []  # retried without being dirty
    assert sim.fib(str(refused)) is not None


def test_nothing_is_added_when_the_record_cannot_be_written(sim: Sim, tmp_path: Any) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    sim.routes.configure(replace(sim.config, vpp_state_dir=str(blocker / "state")))
    st = cluster("node-2")
    route(st, "10.65.2.0/26", "node-2", POOL_NO_ENCAP)
    with pytest.raises(RenderError, match="cannot write the route record"):
        sim.routes.apply(st, st.take_dirty(), True)
    assert sim.fib("10.65.2.0/26") is None
    sim.routes.configure(sim.config)  # writable again: the retry (a full one) programs it
    assert sim.routes.apply(st, Dirty(), False) == []
    assert sim.fib("10.65.2.0/26") is not None


def test_vpp_restart_reprograms_everything(sim: Sim) -> None:
    st = cluster("node-3")
    route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
    sim.apply(st, full=True)
    generation = sim.node.client.generation
    sim.node.server.restart()
    for _ in range(50):  # the first call may meet the dropped connection; then it reconnects
        try:
            sim.node.client.call("show_version")
            break
        except (VppConnectionError, VppRestartedError):
            time.sleep(0.05)
    assert sim.node.client.generation == generation + 1
    sim.node._setup_uplink(*sim.node._node_ips)  # the node's own setup, as after any VPP start
    assert sim.apply(st) == []  # nothing dirty: the new generation alone makes it adopt and resync
    (itf,) = sim.tunnels().values()
    assert path_of(sim.fib("10.65.3.0/26")) == (itf.sw_if_index, "10.65.3.0")


@pytest.mark.parametrize(("pool", "node"), [(POOL_VXLAN, "node-3"), (POOL_IPIP, "node-4")])
def test_untagged_leftover_of_a_crash_no_route_wants_is_deleted(sim: Sim, pool: int, node: str) -> None:
    st = cluster(node)
    route(st, "10.65.9.0/26", node, pool)
    sim.apply(st, full=True)
    ((tag, itf),) = sim.tunnels().items()
    sim.node.client.call("sw_interface_tag_add_del", is_add=False, sw_if_index=itf.sw_if_index, tag=tag)
    sim.restart()
    st.remove_route(NET("10.65.9.0/26"))
    assert sim.apply(st, full=True) == []
    state = sim.node.server.state
    assert [i for _, i in state.interfaces.items() if i.kind in ("vxlan", "ipip")] == []
    with open(os.path.join(sim.config.vpp_state_dir, RECORD_FILE)) as f:
        assert json.load(f)["tunnels"] == {}


# ------------------------------------------------------------------------------ tunnel MTUs


def with_config(sim: Sim, **over: Any) -> None:
    """Felix's config changes (the dataplane calls configure): also what a restart starts with."""
    sim.config = replace(sim.config, **over)
    sim.routes.configure(sim.config)


def dumped_mtu(sim: Sim, sw_if_index: int) -> list[int]:
    (d,) = sim.node.client.dump("sw_interface_dump", sw_if_index=sw_if_index)
    return list(d.mtu)


def tunnel_to(sim: Sim, prefix: str) -> Any:
    sw = path_of(sim.fib(prefix))[0]
    return next(i for i in sim.tunnels().values() if i.sw_if_index == sw)


MTU_CONFIG = {"vxlan_mtu": 1410, "vxlan_mtu_v6": 1390, "ipip_mtu": 1480}


@pytest.mark.parametrize(
    ("prefix", "node", "pool", "mtu"),
    [
        ("10.65.3.0/26", "node-3", POOL_VXLAN, 1410),  # VXLANMTU
        ("fd00:65:3::/122", "node-3", POOL_VXLAN, 1390),  # VXLANMTUV6: the outer header is IPv6
        ("10.66.4.0/26", "node-4", POOL_IPIP, 1480),  # IpInIpMtu
        ("fd00:66:4::/122", "node-4", POOL_IPIP, 1480),  # IpInIpMtu (Felix has no IPv6 one)
    ],
)
def test_felix_tunnel_mtus_are_the_tunnels_l3_mtus(
    sim: Sim, prefix: str, node: str, pool: int, mtu: int
) -> None:
    with_config(sim, **MTU_CONFIG)
    st = cluster(node)
    route(st, prefix, node, pool)
    assert sim.apply(st, full=True) == []
    itf = tunnel_to(sim, prefix)
    assert dumped_mtu(sim, itf.sw_if_index) == [mtu, 0, 0, 0]
    assert sim.sent["sw_interface_set_mtu"] == 1
    assert itf.admin_up and itf.unnumbered_to == sim.node.uplink
    # The tag is the tunnel's identity without its MTU: the same as with no MTU configured.
    with open(os.path.join(sim.config.vpp_state_dir, RECORD_FILE)) as f:
        spec = TunnelSpec.from_json(json.load(f)["tunnels"][itf.tag])
    assert spec.mtu == mtu and itf.tag == spec._replace(mtu=0).tag
    assert f" mtu {mtu})" in str(spec)


def test_no_mtu_configured_sends_none_and_keeps_todays_tags(sim: Sim) -> None:
    st = cluster("node-3", "node-4")
    route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
    route(st, "fd00:65:3::/122", "node-3", POOL_VXLAN)
    route(st, "10.66.4.0/26", "node-4", POOL_IPIP)
    assert sim.apply(st, full=True) == []
    assert sim.sent["sw_interface_set_mtu"] == 0
    # The tags (and record entries) the driver made before it applied MTUs, pinned.
    assert set(sim.tunnels()) == {
        "cvd-vxlan:node-3#544739e1",
        "cvd-vxlan6:node-3#138e7980",
        "cvd-ipip:node-4#c05733d1",
    }
    for itf in sim.tunnels().values():
        assert dumped_mtu(sim, itf.sw_if_index) == [itf.mtu, 0, 0, 0]  # VPP's default, untouched
    spec = TunnelSpec("vxlan", "node-3", IP("172.31.0.1"), IP("192.168.5.3"), 4096, 4789)  # type: ignore[arg-type]
    assert spec.tag == "cvd-vxlan:node-3#544739e1" == spec._replace(mtu=1400).tag
    assert spec.to_json() == {
        "kind": "vxlan",
        "node": "node-3",
        "src": "172.31.0.1",
        "dst": "192.168.5.3",
        "vni": 4096,
        "port": 4789,
    }
    assert TunnelSpec.from_json(spec.to_json()) == spec  # an old record reads as "no MTU"
    with_mtu = spec._replace(mtu=1400)
    assert with_mtu.to_json() == {**spec.to_json(), "mtu": 1400}
    assert TunnelSpec.from_json(with_mtu.to_json()) == with_mtu


@pytest.mark.parametrize(
    ("prefix", "node", "pool", "key", "default"),
    [
        ("10.65.3.0/26", "node-3", POOL_VXLAN, "vxlan_mtu", [0, 0, 0, 0]),
        ("fd00:65:3::/122", "node-3", POOL_VXLAN, "vxlan_mtu_v6", [0, 0, 0, 0]),
        ("10.66.4.0/26", "node-4", POOL_IPIP, "ipip_mtu", [9000, 0, 0, 0]),
    ],
)
def test_changed_mtu_is_set_on_the_tunnel_in_place(
    sim: Sim, prefix: str, node: str, pool: int, key: str, default: list[int]
) -> None:
    """VPP keys a tunnel by its addresses, VNI and port: a second tunnel differing only in its
    MTU would be refused. So the MTU changes on the live tunnel, and no route moves."""
    with_config(sim, **{key: 1400})
    st = cluster(node)
    route(st, prefix, node, pool)
    route(st, str(NET(prefix).network_address + 64) + f"/{NET(prefix).prefixlen}", node, pool)
    assert sim.apply(st, full=True) == []
    ((tag, itf),) = sim.tunnels().items()
    with_config(sim, **{key: 1350})
    assert sim.apply(st) == []
    assert sim.tunnels() == {tag: itf} and dumped_mtu(sim, itf.sw_if_index) == [1350, 0, 0, 0]
    assert route_msgs(sim.sent) == {"sw_interface_set_mtu": 1}  # one per tunnel, whatever its routes
    assert path_of(sim.fib(prefix))[0] == itf.sw_if_index
    with open(os.path.join(sim.config.vpp_state_dir, RECORD_FILE)) as f:
        assert json.load(f)["tunnels"][tag]["mtu"] == 1350
    # Back to "not set": VPP's own default for the kind of tunnel, and the record says so.
    with_config(sim, **{key: 0})
    assert sim.apply(st) == []
    assert dumped_mtu(sim, itf.sw_if_index) == default and route_msgs(sim.sent) == {"sw_interface_set_mtu": 1}
    with open(os.path.join(sim.config.vpp_state_dir, RECORD_FILE)) as f:
        assert "mtu" not in json.load(f)["tunnels"][tag]
    assert sim.apply(st, full=True) == [] and route_msgs(sim.sent) == {}  # settled


def test_configure_with_a_new_mtu_makes_the_next_apply_full(sim: Sim) -> None:
    st = cluster("node-3")
    route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
    sim.apply(st, full=True)
    (itf,) = sim.tunnels().values()
    with_config(sim, vxlan_mtu=1410)
    assert sim.routes.apply(st, Dirty(), False) == []  # nothing dirty: the config alone
    assert dumped_mtu(sim, itf.sw_if_index) == [1410, 0, 0, 0]


def test_restart_with_the_same_mtu_changes_nothing(sim: Sim) -> None:
    with_config(sim, **MTU_CONFIG)
    st = cluster("node-3", "node-4")
    route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
    route(st, "fd00:65:3::/122", "node-3", POOL_VXLAN)
    route(st, "10.66.4.0/26", "node-4", POOL_IPIP)
    sim.apply(st, full=True)
    tunnels = {t: i.sw_if_index for t, i in sim.tunnels().items()}
    sim.restart()
    assert set(sim.routes.tunnels) == set(tunnels)
    assert sim.apply(st, full=True) == []
    assert route_msgs(sim.sent) == {}  # no tunnel, route or MTU message
    assert {t: i.sw_if_index for t, i in sim.tunnels().items()} == tunnels
    # Without the record, the MTUs VPP reports are the ones wanted: still nothing to do but
    # re-adding the routes it cannot tell are its own.
    os.remove(os.path.join(sim.config.vpp_state_dir, RECORD_FILE))
    sim.restart()
    assert sim.apply(st, full=True) == []
    assert route_msgs(sim.sent) == {"ip_route_add_del": 3}
    assert {t: i.sw_if_index for t, i in sim.tunnels().items()} == tunnels


def test_restart_with_another_mtu_sets_it_in_place(sim: Sim) -> None:
    with_config(sim, ipip_mtu=1480)
    st = cluster("node-4")
    route(st, "10.66.4.0/26", "node-4", POOL_IPIP)
    sim.apply(st, full=True)
    ((tag, itf),) = sim.tunnels().items()
    sim.config = replace(sim.config, ipip_mtu=1440)  # Felix's config changed while the driver was down
    sim.restart()
    assert sim.apply(st, full=True) == []
    assert route_msgs(sim.sent) == {"sw_interface_set_mtu": 1}
    assert sim.tunnels() == {tag: itf} and dumped_mtu(sim, itf.sw_if_index) == [1440, 0, 0, 0]
    sim.config = replace(sim.config, ipip_mtu=0)  # ...and then unset: the record says it was set
    sim.restart()
    assert sim.apply(st, full=True) == []
    assert dumped_mtu(sim, itf.sw_if_index) == [9000, 0, 0, 0]


def test_mtu_vpp_refuses_on_a_new_tunnel_is_that_tunnels_failure(sim: Sim) -> None:
    with_config(sim, vxlan_mtu=1410)
    st = cluster("node-3")
    route(st, "10.65.3.0/26", "node-3", POOL_NO_ENCAP)
    sim.apply(st, full=True)
    route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
    sim.node.server.fail_nth("sw_interface_set_mtu", 1, -7)
    problems = sim.apply(st)
    assert len(problems) == 1, problems
    assert problems[0].startswith(
        "route 10.65.3.0/26: vxlan tunnel to node node-3 (172.31.0.1 -> 192.168.5.3"
    )
    assert "VPP refused its MTU 1410 (sw_interface_set_mtu)" in problems[0]
    assert path_of(sim.fib("10.65.3.0/26")) == (U32_MAX, "192.168.5.3")  # kept
    assert sim.tunnels() == {}  # the half-made tunnel is gone
    assert sim.apply(st) == []  # retried
    itf = tunnel_to(sim, "10.65.3.0/26")
    assert dumped_mtu(sim, itf.sw_if_index) == [1410, 0, 0, 0]


def test_mtu_vpp_refuses_on_an_existing_tunnel_keeps_its_routes_and_is_retried(sim: Sim) -> None:
    st = cluster("node-4")
    route(st, "10.66.4.0/26", "node-4", POOL_IPIP)
    sim.apply(st, full=True)
    (itf,) = sim.tunnels().values()
    with_config(sim, ipip_mtu=1480)
    sim.node.server.fail_nth("sw_interface_set_mtu", 1, -7)
    problems = sim.apply(st)
    assert len(problems) == 1 and "VPP refused its MTU 1480" in problems[0], problems
    assert problems[0].startswith("route 10.66.4.0/26: ipip tunnel to node node-4")
    assert path_of(sim.fib("10.66.4.0/26"))[0] == itf.sw_if_index  # still through it
    assert dumped_mtu(sim, itf.sw_if_index) == [9000, 0, 0, 0]
    assert sim.apply(st) == [] and sim.routes.problems == []  # retried without being dirty
    assert dumped_mtu(sim, itf.sw_if_index) == [1480, 0, 0, 0]


# ------------------------------------------------------------------------------ in the dataplane


def test_the_dataplane_programs_routes_and_removes_them(sim: Sim) -> None:
    """The same through the driver's own dataplane (what Felix's messages reach): routes follow
    the model at every apply, including removals."""
    dp = sim.node.dataplane
    dp.configure(sim.config)
    st = cluster("node-2", "node-3")
    route(st, "10.65.2.0/26", "node-2", POOL_NO_ENCAP)
    route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
    st.update_profile(Profile("open", (Rule(action="allow"),), (Rule(action="allow"),)))
    endpoint(st, "pod", "open", "10.65.1.10")
    st.mark_in_sync()
    dp.apply(st, st.take_dirty(), StatusBoard())
    assert dp.problems("routes") == []
    assert path_of(sim.fib("10.65.2.0/26")) == (U32_MAX, "172.31.0.2")
    verdict, trace = sim.send("10.65.3.7")
    assert verdict == "allow" and any("vxlan" in t.lower() for t in trace), trace
    st.remove_route(NET("10.65.3.0/26"))
    dp.apply(st, st.take_dirty(), StatusBoard())
    assert sim.fib("10.65.3.0/26") is None
    assert sim.tunnels() == {}


# ------------------------------------------------------------------------------ tunnels and policy


def endpoint(st: DesiredState, name: str, profile: str, ip: str) -> None:
    """A workload endpoint `ns/<name>` bound to the pod interface tagged `name`."""
    st.update_workload_endpoint(
        WorkloadEndpoint(
            WorkloadEndpointID("k8s", f"ns/{name}", "eth0"),
            name=name,
            profile_ids=(profile,),
            ipv4_nets=(NET(f"{ip}/32"),),  # type: ignore[arg-type]
        )
    )


def npol_node(tmp_path: Any) -> tuple[SimNode, DesiredState, list[tuple[str, int]]]:
    """A node with the npol backend, a VXLAN route to node-3 and a pod whose profile denies
    everything; returns the node, the state and the (message, sw_if_index) log."""
    node = SimNode(backend="npol", state_dir=str(tmp_path / "state"), config=Config(felix_hostname=ME))
    sent: list[tuple[str, int]] = []
    node.server.after_request = lambda name, req: sent.append((name, int(req.get("sw_if_index", -1) or 0)))
    st = cluster("node-3")
    st.update_profile(Profile("deny", (), ()))
    node.add_pod("a", ["10.65.1.10"])
    endpoint(st, "a", "deny", "10.65.1.10")
    st.mark_in_sync()
    return node, st, sent


def test_a_tunnel_gets_cnat_before_it_is_up_so_npol_sees_what_arrives_through_it(tmp_path: Any) -> None:
    # npol runs as cnat's hook: a flow entering by an interface without cnat's feature is never
    # looked up, and the hooks of the pod it reaches never run.
    node, st, sent = npol_node(tmp_path)
    try:
        node.dataplane.apply(st, st.take_dirty(), StatusBoard())
        route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)  # the tunnel comes after the first apply
        node.dataplane.apply(st, st.take_dirty(), StatusBoard())
        assert not node.server.errors and node.dataplane.problems("routes") == []
        state = node.server.state
        (tun,) = [sw for sw, itf in state.interfaces.items() if itf.kind == "vxlan"]
        assert state.interfaces.get(tun).cnat_feature
        assert sent.index(("feature_cnat_enable_disable", tun)) < sent.index(("sw_interface_set_flags", tun))
        with node.server.lock:
            verdict, trace = evaluate(
                state,
                {"src": "10.65.3.7", "dst": "10.65.1.10", "proto": "tcp", "sport": 40000, "dport": 80},
                tun,
                use_sessions=False,
            )
        assert verdict == "deny", trace
    finally:
        node.close()


def test_a_pod_on_a_deleted_tunnels_index_gets_cnat(tmp_path: Any) -> None:
    # VPP hands a deleted tunnel's index to the next interface, without any feature on it.
    node, st, _sent = npol_node(tmp_path)
    try:
        route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
        node.dataplane.apply(st, st.take_dirty(), StatusBoard())
        state = node.server.state
        (tun,) = [sw for sw, itf in state.interfaces.items() if itf.kind == "vxlan"]
        st.remove_route(NET("10.65.3.0/26"))  # type: ignore[arg-type]
        node.dataplane.apply(st, st.take_dirty(), StatusBoard())
        assert state.interfaces.get(tun) is None
        pod = node.add_pod("b", ["10.65.1.11"])
        assert pod.sw_if_index == tun
        endpoint(st, "b", "deny", "10.65.1.11")
        node.dataplane.apply(st, st.take_dirty(), StatusBoard())
        assert state.interfaces.get(tun).cnat_feature
        with node.server.lock:
            verdict, trace = evaluate(
                state,
                {"src": "198.51.100.7", "dst": "10.65.1.11", "proto": "tcp", "sport": 40000, "dport": 80},
                node.uplink,
                use_sessions=False,
            )
        assert verdict == "deny", trace
    finally:
        node.close()


def test_ipv6_vxlan_tunnel_of_an_old_source_address_is_replaced(sim: Sim) -> None:
    # VPP keys an IPv6 VXLAN tunnel without its local address: a new tunnel for this node's new
    # address would be refused while the old one exists, so the old one (and its routes) go first.
    st = cluster("node-3")
    route(st, "fd00:65:3::/122", "node-3", POOL_VXLAN)
    assert sim.apply(st, full=True) == []
    st.update_host_metadata("v4v6", HostMetadata(ME, ipv4_addr=IP("172.31.0.1"), ipv6_addr=IP("fd10::100")))  # type: ignore[arg-type]
    assert sim.apply(st) == []
    (itf,) = sim.tunnels().values()
    assert str(itf.info["src"]) == "fd10::100"
    assert path_of(sim.fib("fd00:65:3::/122"))[0] == itf.sw_if_index


def test_no_vxlan_tunnel_while_vpp_will_not_give_the_ip_input_arc(sim: Sim) -> None:
    # ~0 would make it hand what it decapsulates to l2-input, where an L3 tunnel drops it all.
    st = cluster("node-3")
    route(st, "10.65.3.0/26", "node-3", POOL_VXLAN)
    sim.node.server.fail_nth("add_node_next", 1, -7)
    problems = sim.apply(st, full=True)
    assert any("add_node_next" in p for p in problems), problems
    assert sim.tunnels() == {} and sim.fib("10.65.3.0/26") is None
    assert sim.apply(st, full=True) == []
    (itf,) = sim.tunnels().values()
    assert itf.info["decap_next_index"] != U32_MAX
