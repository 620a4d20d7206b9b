"""NAT-outgoing and floating IPs with cnat (vpp/nat.py) over the simulator's socket.

Packets are judged by the simulator's packet model on the VPP state the driver programmed. The
pods' policy is the dataplane's (both backends), with a profile allowing everything, so a
verdict "allow" is the NAT result and the trace shows cnat's DNAT/SNAT rewrites.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

import pytest

from calico_vpp_driver.config import Config
from calico_vpp_driver.felix.status import StatusBoard
from calico_vpp_driver.model.state import DesiredState
from calico_vpp_driver.model.types import (
    HostMetadata,
    IPPool,
    NatInfo,
    Profile,
    Rule,
    WorkloadEndpoint,
    WorkloadEndpointID,
)
from calico_vpp_driver.sim.node import SimNode
from calico_vpp_driver.sim.packet import Packet, evaluate
from calico_vpp_driver.vpp import nat
from calico_vpp_driver.vpp.nat import FipKey, NatProgrammer, PortRange, parse_floating_ports

HOST = "node-a"
NODE_IP, NODE_IP6 = "172.31.0.1", "fd10::1"
OTHER_NODE, OUTSIDE, OUTSIDE6 = "172.31.0.2", "198.51.100.7", "2001:db8::7"
SERVICE_CIDR, SERVICE_IP = "10.96.0.0/12", "10.96.0.10"
MASQ = IPPool("masq", ip_network("10.0.0.0/24"), masquerade=True)
PLAIN = IPPool("plain", ip_network("10.1.0.0/24"))
REMOTE = IPPool("remote", ip_network("10.2.0.0/16"))
LB_ONLY = IPPool("lb", ip_network("10.3.0.0/24"), allowed_uses=("LoadBalancer",))
MASQ6 = IPPool("masq6", ip_network("fd00:10::/64"), masquerade=True)
A = WorkloadEndpointID("k8s", "ns/a", "eth0")
B = WorkloadEndpointID("k8s", "ns/b", "eth0")
A_IP, A_IP6, B_IP = "10.0.0.5", "fd00:10::5", "10.1.0.5"
FIP, FIP6 = "203.0.113.10", "2001:db8:f::10"
PORTS = "tcp:80,udp:53"
CFG = Config(felix_hostname=HOST, vpp_floating_ip_ports=PORTS)


def endpoint(
    key: WorkloadEndpointID, name: str, *addrs: str, fips: tuple[NatInfo, ...] = ()
) -> WorkloadEndpoint:
    nets = [ip_network(a) for a in addrs]
    return WorkloadEndpoint(
        key,
        name=name,
        profile_ids=("allow",),
        ipv4_nets=tuple(n for n in nets if isinstance(n, IPv4Network)),
        ipv6_nets=tuple(n for n in nets if isinstance(n, IPv6Network)),
        ipv4_nat=tuple(f for f in fips if f.ext_ip.version == 4),
        ipv6_nat=tuple(f for f in fips if f.ext_ip.version == 6),
    )


def fip(ext: str, internal: str) -> NatInfo:
    return NatInfo(ip_address(ext), ip_address(internal))


class Harness:
    """A simulated node; its dataplane programs the pods' policy and NAT (its NatProgrammer)."""

    def __init__(self, backend: str, config: Config = CFG) -> None:
        self.node = SimNode(
            backend=backend, config=config, node_ip=f"{NODE_IP}/24", node_ip6=f"{NODE_IP6}/64"
        )
        self.st = DesiredState()
        self.st.update_profile(Profile("allow", (Rule(action="allow"),), (Rule(action="allow"),)))
        self.st.update_host_metadata(
            "v4v6", HostMetadata(HOST, ipv4_addr=IPv4Address(NODE_IP), ipv6_addr=IPv6Address(NODE_IP6))
        )
        self.st.update_host_metadata("v4v6", HostMetadata("node-b", ipv4_addr=IPv4Address(OTHER_NODE)))
        for pool in (MASQ, PLAIN, REMOTE, LB_ONLY, MASQ6):
            self.st.update_ip_pool(pool)
        self.st.set_bgp_config({"service_cluster_cidrs": (SERVICE_CIDR,)})
        self.messages: list[str] = []
        self.node.server.after_request = lambda name, _req: self.messages.append(name)

    @property
    def nat(self) -> NatProgrammer:
        assert self.node.dataplane.nat is not None
        return self.node.dataplane.nat

    def new_programmer(self) -> NatProgrammer:
        """A restarted driver process (a new dataplane, which adopts what it finds)."""
        self.node.dataplane = self.node.new_dataplane()
        return self.nat

    def configure(self, config: Config) -> None:
        self.node.dataplane.configure(config)

    def pod(self, key: WorkloadEndpointID, name: str, *addrs: str, fips: tuple[NatInfo, ...] = ()) -> None:
        if name not in self.node.pods:
            self.node.add_pod(name, addrs)
        self.st.update_workload_endpoint(endpoint(key, name, *addrs, fips=fips))

    def apply(self, full: bool = False) -> list[str]:
        if not self.st.in_sync:
            self.st.mark_in_sync()
        if full:
            self.node.dataplane.new_felix_session()
        self.messages.clear()
        self.node.dataplane.apply(self.st, self.st.take_dirty(), StatusBoard())
        assert not self.node.server.errors, self.node.server.errors
        return self.node.dataplane.problems("nat")

    def nat_messages(self) -> list[str]:
        """The cnat messages sent (the dataplane's interface dumps are its own, not counted)."""
        return [m for m in self.messages if m.startswith(("cnat", "feature_cnat"))]

    def send(self, pkt: Packet, rx: int, *, sessions: bool = False) -> tuple[str, list[str]]:
        with self.node.server.lock:
            return evaluate(self.node.server.state, pkt, rx, use_sessions=sessions)

    def from_pod(
        self, name: str, src: str, dst: str, dport: int = 443, proto: int = 6
    ) -> tuple[str, list[str]]:
        pkt = Packet(ip_address(src), ip_address(dst), proto, sport=40000, dport=dport)
        return self.send(pkt, self.node.pods[name].sw_if_index)

    def reached(self, trace: list[str], pod: str) -> bool:
        """The packet was forwarded to the pod's interface."""
        name = self.node.server.state.if_name(self.node.pods[pod].sw_if_index)
        return trace[-1].startswith(f"ALLOW: forwarded out {name} as")

    def close(self) -> None:
        self.node.server.after_request = None
        self.node.close()


@pytest.fixture(params=("npol", "acl"))
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    harness = Harness(request.param)
    yield harness
    harness.close()


def snat_line(trace: list[str]) -> str:
    return next((line for line in trace if line.startswith("cnat SNAT")), "")


def snatted_to(trace: list[str], addr: str) -> bool:
    line = snat_line(trace)
    return line.startswith("cnat SNAT: policy if_pfx") and f"-> {addr};" in line


# ------------------------------------------------------------------ pure parts


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("tcp:80", (PortRange(6, 80, 80),)),
        ("udp:53, tcp:1-1023 ,TCP:1000-2000", (PortRange(6, 1, 2000), PortRange(17, 53, 53))),
        ("tcp:1-10,tcp:11-20,sctp:5", (PortRange(6, 1, 20), PortRange(132, 5, 5))),
        ("", ()),
    ],
)
def test_floating_ports_parse_and_merge(raw: str, expected: tuple[PortRange, ...]) -> None:
    assert parse_floating_ports(raw) == expected


@pytest.mark.parametrize("raw", ["icmp:1", "tcp", "tcp:0", "tcp:10-5", "tcp:x", "udp:1-65536"])
def test_bad_floating_ports_are_refused_and_reported_with_the_default(raw: str) -> None:
    with pytest.raises(ValueError, match=raw.split(",")[0][:3]):
        parse_floating_ports(raw)
    ports, problem = nat.floating_ports(Config(vpp_floating_ip_ports=raw))
    assert ports == parse_floating_ports(nat.DEFAULT_FLOATING_PORTS)
    assert problem is not None and nat.FLOATING_PORTS_PARAM in problem and raw in problem


def test_exclusions_follow_felix() -> None:
    st = DesiredState()
    for pool in (MASQ, PLAIN, LB_ONLY, MASQ6):
        st.update_ip_pool(pool)
    st.update_host_metadata("v4v6", HostMetadata(HOST, ipv4_addr=IPv4Address(NODE_IP)))
    st.update_host_metadata("v4v6", HostMetadata("node-b", ipv4_addr=IPv4Address(OTHER_NODE)))
    st.set_bgp_config({"service_cluster_cidrs": (SERVICE_CIDR,)})
    base = {MASQ.cidr, PLAIN.cidr, MASQ6.cidr, ip_network(SERVICE_CIDR), ip_network(f"{NODE_IP}/32")}
    assert nat.exclusions(st, CFG) == base  # LoadBalancer-only pools are NATed towards (masq_mgr.go)
    hosts = replace(
        CFG, nat_outgoing_exclusions="IPPoolsAndHostIPs", external_nodes_cidr_list=("192.0.2.0/24",)
    )
    assert nat.exclusions(st, hosts) == base | {ip_network(f"{OTHER_NODE}/32"), ip_network("192.0.2.0/24")}


def test_masquerade_is_per_family_and_mixed_pools_are_reported() -> None:
    pools = [MASQ, PLAIN, MASQ6]
    ep = endpoint(A, "calia", f"{A_IP}/32", f"{A_IP6}/128")
    assert nat.masquerade_families(ep, pools) == (frozenset({4, 6}), [])
    assert nat.masquerade_families(ep, pools, ipv6=False)[0] == frozenset({4})
    assert nat.masquerade_families(endpoint(B, "calib", f"{B_IP}/32"), pools) == (frozenset(), [])
    fams, problems = nat.masquerade_families(endpoint(A, "calia", f"{A_IP}/32", f"{B_IP}/32"), pools)
    assert fams == {4} and len(problems) == 1 and str(A) in problems[0] and "pool plain" in problems[0]


# ------------------------------------------------------------------ NAT-outgoing


def test_masquerade_pool_is_snatted_to_the_node_address_and_nothing_else_is(h: Harness) -> None:
    h.pod(A, "calia", A_IP)
    h.pod(B, "calib", B_IP)
    assert h.apply(full=True) == []
    verdict, trace = h.from_pod("calia", A_IP, OUTSIDE)
    assert verdict == "allow" and snatted_to(trace, NODE_IP), trace
    for dst in (B_IP, "10.2.3.4", SERVICE_IP, NODE_IP):  # other pools (local, remote), services, self
        verdict, trace = h.from_pod("calia", A_IP, dst)
        assert verdict == "allow" and "-> " + NODE_IP + ";" not in snat_line(trace), (dst, trace)
    verdict, trace = h.from_pod("calia", A_IP, OTHER_NODE)
    assert verdict == "allow" and snatted_to(trace, NODE_IP), trace  # IPPoolsOnly: nodes are NATed to
    verdict, trace = h.from_pod("calia", A_IP, "10.3.0.9")
    assert snatted_to(trace, NODE_IP), trace  # a LoadBalancer-only pool is not "inside"
    verdict, trace = h.from_pod("calib", B_IP, OUTSIDE)
    assert verdict == "allow" and not snat_line(trace).endswith(NODE_IP), trace
    assert "not included" in snat_line(trace)


def test_reply_to_a_snatted_flow_is_un_natted_back_to_the_pod(h: Harness) -> None:
    h.pod(A, "calia", A_IP)
    h.apply(full=True)
    out = Packet(ip_address(A_IP), ip_address(OUTSIDE), 6, sport=40000, dport=443)
    verdict, trace = h.send(out, h.node.pods["calia"].sw_if_index, sessions=True)
    assert verdict == "allow" and snatted_to(trace, NODE_IP)
    port = int(snat_line(trace).rsplit(";", 1)[1].split()[0])
    back = Packet(ip_address(OUTSIDE), ip_address(NODE_IP), 6, sport=443, dport=port, tcp_flags=0x12)
    verdict, trace = h.send(back, h.node.uplink, sessions=True)
    assert verdict == "allow" and h.reached(trace, "calia") and f"{A_IP}:40000" in trace[-1], trace


def test_nat_outgoing_exclusions_with_host_ips(h: Harness) -> None:
    h.configure(replace(h.node.config, nat_outgoing_exclusions="IPPoolsAndHostIPs"))
    h.pod(A, "calia", A_IP)
    h.apply()
    assert not snatted_to(h.from_pod("calia", A_IP, OTHER_NODE)[1], NODE_IP)
    assert snatted_to(h.from_pod("calia", A_IP, OUTSIDE)[1], NODE_IP)


def test_pool_flipped_at_runtime_costs_one_message_per_interface_bit(h: Harness) -> None:
    h.pod(A, "calia", A_IP)
    h.pod(B, "calib", B_IP)
    h.apply(full=True)
    h.st.update_ip_pool(replace(MASQ, masquerade=False))
    assert h.apply() == []
    assert h.nat_messages() == ["cnat_snat_policy_add_del_if"]
    assert not snatted_to(h.from_pod("calia", A_IP, OUTSIDE)[1], NODE_IP)
    h.st.update_ip_pool(replace(PLAIN, masquerade=True))
    h.st.update_ip_pool(MASQ)
    h.apply()
    assert h.nat_messages() == ["cnat_snat_policy_add_del_if"] * 2
    assert snatted_to(h.from_pod("calia", A_IP, OUTSIDE)[1], NODE_IP)
    assert snatted_to(h.from_pod("calib", B_IP, OUTSIDE)[1], NODE_IP)
    # A pool removed: its prefix is no longer excluded, its pods no longer NATed.
    h.st.remove_ip_pool(PLAIN.id)
    h.apply()
    assert sorted(h.nat_messages()) == ["cnat_snat_policy_add_del_exclude_pfx", "cnat_snat_policy_add_del_if"]
    assert snatted_to(h.from_pod("calia", A_IP, B_IP)[1], NODE_IP)
    assert not snatted_to(h.from_pod("calib", B_IP, OUTSIDE)[1], NODE_IP)


def test_unrelated_changes_cost_nothing(h: Harness) -> None:
    h.pod(A, "calia", A_IP)
    h.apply(full=True)
    h.st.update_profile(Profile("allow", (Rule(action="allow"),), (Rule(action="allow"),)))
    h.apply()
    assert h.nat_messages() == []


def test_nat_outgoing_address_overrides_the_node_address(h: Harness) -> None:
    h.configure(replace(h.node.config, nat_outgoing_address="192.0.2.99"))
    h.pod(A, "calia", A_IP)
    h.apply()
    assert snatted_to(h.from_pod("calia", A_IP, OUTSIDE)[1], "192.0.2.99")
    h.configure(h.node.config)
    h.apply()
    assert h.nat_messages() == ["cnat_set_snat_addresses_v2"]
    assert snatted_to(h.from_pod("calia", A_IP, OUTSIDE)[1], NODE_IP)


def test_ipv6_masquerade(h: Harness) -> None:
    h.pod(A, "calia", A_IP, A_IP6)
    h.apply()
    verdict, trace = h.from_pod("calia", A_IP6, OUTSIDE6, proto=17)
    assert verdict == "allow" and snatted_to(trace, NODE_IP6), trace
    assert not snatted_to(h.from_pod("calia", A_IP6, "fd00:10::9")[1], NODE_IP6)


def test_without_a_node_address_nothing_is_natted_and_it_is_reported(h: Harness) -> None:
    h.st.remove_host_metadata("v4v6", HOST)
    h.pod(A, "calia", A_IP)
    problems = h.apply()
    assert any(str(A) in p and "IPv4 address" in p for p in problems), problems
    assert h.node.server.state.default_snat() is None
    verdict, trace = h.from_pod("calia", A_IP, OUTSIDE)
    assert verdict == "allow" and not snatted_to(trace, NODE_IP)


def test_snat_entry_has_no_client_so_the_node_address_stays_reachable(h: Harness) -> None:
    h.pod(A, "calia", A_IP)
    h.apply()
    entry = h.node.server.state.default_snat()
    # Not USE_AS_DEFAULT: VPP frees such an entry without clearing its fallback pointer.
    assert entry is not None and entry.flags == nat.CNAT_SNAT_F_NO_CLIENT
    assert entry.policy == nat.CNAT_POLICY_IF_PFX
    # Without NO_CLIENT cnat would own the node address in the FIB and drop all but replies.
    ssh = Packet(ip_address(OTHER_NODE), ip_address(NODE_IP), 6, 51000, 22)
    verdict, trace = h.send(ssh, h.node.uplink)
    assert verdict == "allow" and "local delivery" in trace[-1], trace


def test_an_address_family_learnt_later_goes_to_the_entry_on_its_own(h: Harness) -> None:
    # The node's IPv6 address comes after the entry was made with IPv4 alone. VPP finds the
    # entry per family, so both addresses in one message would trip cnat_set_snat's ASSERT (the
    # simulator reports it, and apply() fails on any simulator error).
    h.st.update_host_metadata("v4v6", HostMetadata(HOST, ipv4_addr=IPv4Address(NODE_IP)))
    h.pod(A, "calia", A_IP, A_IP6)
    h.apply()
    entry = h.node.server.state.default_snat()
    assert entry is not None and entry.has4 and not entry.has6
    assert snatted_to(h.from_pod("calia", A_IP, OUTSIDE)[1], NODE_IP)
    h.st.update_host_metadata(
        "v4v6", HostMetadata(HOST, ipv4_addr=IPv4Address(NODE_IP), ipv6_addr=IPv6Address(NODE_IP6))
    )
    assert h.apply() == []
    assert h.messages.count("cnat_set_snat_addresses_v2") == 1
    assert h.node.server.state.default_snat() is entry and entry.snat_ip6 == IPv6Address(NODE_IP6)
    verdict, trace = h.from_pod("calia", A_IP6, OUTSIDE6, proto=17)
    assert verdict == "allow" and snatted_to(trace, NODE_IP6), trace


def test_the_last_ipv4_pod_leaving_keeps_the_excluded_prefixes(h: Harness) -> None:
    # cnat reads an empty INCLUDE_V4 map as an entry never initialised, and initialising it
    # again empties its excluded prefixes: a permanent bit (the instance sentinel's) prevents it.
    h.pod(A, "calia", A_IP, A_IP6)
    assert h.apply() == []
    entry = h.node.server.state.default_snat()
    excluded = set(entry.exclude)
    h.st.remove_workload_endpoint(A)
    h.node.dataplane.pod_interface_removed(
        h.node.pods.pop("calia").sw_if_index, lambda: None
    )
    assert h.apply() == []
    assert entry.initialized and entry.exclude == excluded
    h.pod(B, "calib", "10.0.0.6")  # in the masquerading pool too
    assert h.apply() == []
    assert entry.exclude == excluded
    assert snatted_to(h.from_pod("calib", "10.0.0.6", OUTSIDE)[1], NODE_IP)
    assert not snatted_to(h.from_pod("calib", "10.0.0.6", B_IP)[1], NODE_IP)  # a pool: not NATed


# ------------------------------------------------------------------ floating IPs


def test_floating_ip_reaches_the_pod_and_the_reply_leaves_from_it(h: Harness) -> None:
    h.pod(A, "calia", A_IP, fips=(fip(FIP, A_IP),))
    assert h.apply(full=True) == []
    inbound = Packet(ip_address(OUTSIDE), ip_address(FIP), 6, sport=51000, dport=80)
    verdict, trace = h.send(inbound, h.node.uplink, sessions=True)
    assert verdict == "allow" and any("cnat DNAT" in t and f"backend {A_IP};80" in t for t in trace), trace
    assert h.reached(trace, "calia")
    reply = Packet(ip_address(A_IP), ip_address(OUTSIDE), 6, sport=80, dport=51000, tcp_flags=0x12)
    verdict, trace = h.send(reply, h.node.pods["calia"].sw_if_index, sessions=True)
    assert verdict == "allow" and f"{FIP}:80 -> {OUTSIDE}:51000" in trace[-1], trace
    verdict, trace = h.send(Packet(ip_address(OUTSIDE), ip_address(FIP), 17, 5000, 53), h.node.uplink)
    assert verdict == "allow" and h.reached(trace, "calia")


def test_floating_ip_ports_and_protocols_cnat_cannot_cover_are_dropped(h: Harness) -> None:
    h.pod(A, "calia", A_IP, fips=(fip(FIP, A_IP),))
    h.apply()
    for pkt in (
        Packet(ip_address(OUTSIDE), ip_address(FIP), 6, 51000, 22),  # a port not configured
        Packet(ip_address(OUTSIDE), ip_address(FIP), 1, icmp_id=7),  # ICMP: never a translation
    ):
        verdict, trace = h.send(pkt, h.node.uplink)
        assert verdict == "deny" and "cnat VIP" in trace[-1], trace
    vpp = h.node.server.state
    assert len(vpp.translations) == 2  # tcp/80 and udp/53


def test_ipv6_floating_ip(h: Harness) -> None:
    h.pod(A, "calia", A_IP, A_IP6, fips=(fip(FIP6, A_IP6),))
    h.apply()
    verdict, trace = h.send(Packet(ip_address(OUTSIDE6), ip_address(FIP6), 6, 51000, 80), h.node.uplink)
    assert verdict == "allow" and any(f"backend {A_IP6};80" in t for t in trace), trace


def test_floating_ip_removed_with_its_entry_or_endpoint(h: Harness) -> None:
    h.pod(A, "calia", A_IP, fips=(fip(FIP, A_IP), fip("203.0.113.11", A_IP)))
    h.apply()
    vpp = h.node.server.state
    assert len(vpp.translations) == 4
    h.pod(A, "calia", A_IP, fips=(fip(FIP, A_IP),))
    h.apply()
    assert h.nat_messages() == ["cnat_translation_del"] * 2 and len(vpp.translations) == 2
    h.st.remove_workload_endpoint(A)
    h.apply()
    assert sorted(h.nat_messages()) == ["cnat_snat_policy_add_del_if"] + ["cnat_translation_del"] * 2
    assert len(vpp.translations) == 0
    _verdict, trace = h.send(Packet(ip_address(OUTSIDE), ip_address(FIP), 6, 51000, 80), h.node.uplink)
    assert not any("cnat DNAT" in t for t in trace), trace  # routed as any address, no longer NATed


def test_floating_ip_moved_to_another_pod_is_repathed_in_place(h: Harness) -> None:
    h.pod(A, "calia", A_IP, fips=(fip(FIP, A_IP),))
    h.pod(B, "calib", B_IP)
    h.apply()
    ids = {tid for tid, _tr in h.node.server.state.translations.items()}
    h.pod(A, "calia", A_IP)
    h.pod(B, "calib", B_IP, fips=(fip(FIP, B_IP),))
    assert h.apply() == []
    assert h.nat_messages() == ["cnat_translation_update"] * 2
    assert {tid for tid, _tr in h.node.server.state.translations.items()} == ids
    verdict, trace = h.send(Packet(ip_address(OUTSIDE), ip_address(FIP), 6, 51000, 80), h.node.uplink)
    assert verdict == "allow" and h.reached(trace, "calib")


def test_conflicting_and_unsafe_floating_ips_are_reported_not_programmed(h: Harness) -> None:
    h.pod(A, "calia", A_IP, fips=(fip(FIP, A_IP), fip(NODE_IP, A_IP)))
    h.pod(B, "calib", B_IP, fips=(fip(FIP, B_IP),))
    problems = h.apply()
    assert any(str(B) in p and FIP in p and str(A) in p for p in problems), problems
    assert any(NODE_IP in p and "own address" in p for p in problems), problems
    vpp = h.node.server.state
    assert {str(tr.vip.addr) for _i, tr in vpp.translations.items()} == {FIP}
    verdict, trace = h.send(Packet(ip_address(OTHER_NODE), ip_address(NODE_IP), 6, 51000, 22), h.node.uplink)
    assert verdict == "allow" and "local delivery" in trace[-1]  # the node address is untouched


# ------------------------------------------------------------------ ownership and restart


def test_restart_adopts_everything_and_deletes_only_what_is_stale(h: Harness) -> None:
    h.pod(A, "calia", A_IP, fips=(fip(FIP, A_IP), fip("203.0.113.11", A_IP)))
    h.pod(B, "calib", B_IP)
    h.apply(full=True)
    vpp = h.node.server.state
    # A translation that is not ours (another component's service VIP) must survive.
    h.node.client.call(
        "cnat_translation_update",
        translation=h.nat._translation_request(FipKey(ip_address("10.96.0.20"), 6, 443), ip_address(B_IP))[1][
            "translation"
        ],
    )
    ids_before = {tid for tid, _t in vpp.translations.items()}
    # Same model: a new driver process sends dumps only.
    h.messages.clear()
    h.new_programmer()
    adoption = list(h.messages)
    assert h.apply(full=True) == []
    assert sorted(m for m in adoption + h.messages if m.startswith("cnat")) == [
        "cnat_snat_addresses_dump",
        "cnat_translation_dump",
    ]
    assert {tid for tid, _t in vpp.translations.items()} == ids_before
    # Changed model while the driver was down: only the stale floating IP and bit go.
    h.pod(A, "calia", A_IP, fips=(fip(FIP, A_IP),))
    h.st.update_ip_pool(replace(MASQ, masquerade=False))
    h.st.take_dirty()
    h.new_programmer()
    h.messages.clear()
    assert h.apply(full=True) == []
    assert sorted(h.nat_messages()) == ["cnat_snat_policy_add_del_if"] + ["cnat_translation_del"] * 2
    assert len(vpp.translations) == 3  # FIP tcp/80 + udp/53, and the foreign one
    assert not snatted_to(h.from_pod("calia", A_IP, OUTSIDE)[1], NODE_IP)


def test_restart_without_a_record_keeps_what_matches_and_never_deletes_foreign(h: Harness) -> None:
    h.pod(A, "calia", A_IP, fips=(fip(FIP, A_IP),))
    h.apply(full=True)
    os.remove(os.path.join(h.node.config.vpp_state_dir, nat.RECORD_FILE))
    h.new_programmer()
    h.st.remove_workload_endpoint(A)
    h.pod(B, "calib", B_IP, fips=(fip("203.0.113.12", B_IP),))
    h.messages.clear()
    h.apply(full=True)
    vpp = h.node.server.state
    vips = sorted(str(tr.vip.addr) for _i, tr in vpp.translations.items())
    assert vips == [FIP, FIP, "203.0.113.12", "203.0.113.12"]  # unknown ones are left alone
    assert "cnat_translation_del" not in h.messages


def test_a_deleted_pod_interface_loses_its_snat_bit_before_its_index_is_reused(h: Harness) -> None:
    h.pod(A, "calia", A_IP)
    h.apply()
    sw = h.node.pods["calia"].sw_if_index
    vpp = h.node.server.state
    assert sw in vpp.default_snat().if_maps[0]
    h.nat.forget_interface(sw)  # the CNI side is about to delete the interface
    assert sw not in vpp.default_snat().if_maps[0]
    assert sw not in h.nat.cnat_enabled


def test_vpp_refusing_a_request_is_reported_and_retried(h: Harness) -> None:
    h.pod(A, "calia", A_IP, fips=(fip(FIP, A_IP),))
    h.node.server.fail_nth("cnat_translation_update", 1, -7)
    problems = h.apply(full=True)
    assert any(FIP in p and "1 of its 2 translations failed" in p for p in problems), problems
    assert h.nat.pending
    assert h.apply() == []
    assert len(h.node.server.state.translations) == 2 and not h.nat.pending


def test_a_refused_excluded_prefix_holds_back_new_include_bits(h: Harness) -> None:
    h.pod(A, "calia", A_IP)
    h.node.server.fail_nth("cnat_snat_policy_add_del_exclude_pfx", 1, -7)
    problems = h.apply(full=True)
    assert any("excluded prefix" in p for p in problems), problems
    # Not NATed towards a pool: no pod's bit (only the sentinel's permanent one).
    assert h.node.server.state.default_snat().if_maps.get(0) == {h.nat._vpp.placeholder}
    assert not snatted_to(h.from_pod("calia", A_IP, B_IP)[1], NODE_IP)
    assert h.apply() == []
    assert snatted_to(h.from_pod("calia", A_IP, OUTSIDE)[1], NODE_IP)
    assert not snatted_to(h.from_pod("calia", A_IP, B_IP)[1], NODE_IP)


def test_a_fresh_entry_whose_policy_is_refused_is_deleted_not_left_natting_everything(h: Harness) -> None:
    h.pod(A, "calia", A_IP)
    h.pod(B, "calib", B_IP)
    h.node.server.fail_nth("cnat_set_snat_policy", 1, -7)
    problems = h.apply(full=True)
    assert any("SNAT policy" in p for p in problems), problems
    assert h.node.server.state.default_snat() is None
    assert not snatted_to(h.from_pod("calib", B_IP, OUTSIDE)[1], NODE_IP)
    assert h.apply() == []
    assert snatted_to(h.from_pod("calia", A_IP, OUTSIDE)[1], NODE_IP)
    assert not snatted_to(h.from_pod("calib", B_IP, OUTSIDE)[1], NODE_IP)


def test_restart_after_the_snat_entry_went_programs_it_all_again(h: Harness) -> None:
    h.pod(A, "calia", A_IP)
    h.apply(full=True)
    h.node.client.call(  # someone deleted the entry
        "cnat_set_snat_addresses", snat_ip4=IPv4Address(0), snat_ip6=IPv6Address(0), sw_if_index=0xFFFFFFFF
    )
    h.new_programmer()
    assert h.apply(full=True) == []
    assert snatted_to(h.from_pod("calia", A_IP, OUTSIDE)[1], NODE_IP)
    assert not snatted_to(h.from_pod("calia", A_IP, B_IP)[1], NODE_IP)


def test_a_pod_interface_deleted_unannounced_does_not_pass_its_snat_bit_on(h: Harness) -> None:
    h.pod(A, "calia", A_IP)
    h.apply()
    sw = h.node.pods.pop("calia").sw_if_index
    nat_programmer, h.node.dataplane.nat = h.node.dataplane.nat, None
    # Deleted with nobody telling the NatProgrammer.
    h.node.dataplane.pod_interface_removed(sw, lambda: h.node.client.call("tap_delete_v2", sw_if_index=sw))
    h.node.dataplane.nat = nat_programmer
    h.st.remove_workload_endpoint(A)
    assert h.apply() == []  # its bit cannot be removed now (VPP: no such interface) ...
    vpp = h.node.server.state
    assert sw in vpp.default_snat().if_maps[0]
    h.pod(B, "calib", B_IP)  # ... and VPP hands the index to the next pod
    assert h.node.pods["calib"].sw_if_index == sw
    assert h.apply() == []
    assert sw not in vpp.default_snat().if_maps[0]
    assert not snatted_to(h.from_pod("calib", B_IP, OUTSIDE)[1], NODE_IP)


def test_a_malformed_record_is_ignored_and_foreign_translations_kept(h: Harness) -> None:
    h.pod(A, "calia", A_IP, fips=(fip(FIP, A_IP),))
    h.apply(full=True)
    with open(os.path.join(h.node.config.vpp_state_dir, nat.RECORD_FILE), "w", encoding="utf-8") as f:
        f.write(f'{{"vpp_instance": "{h.node.client.instance_id}", "nat": {{"translations": [1, 2]}}}}')
    h.new_programmer()
    assert h.apply(full=True) == []
    # The wanted translations are adopted as they are; settings cnat cannot dump are sent again.
    sent = set(h.nat_messages())
    assert not sent & {"cnat_translation_update", "cnat_translation_del"}, sent
    assert len(h.node.server.state.translations) == 2
    assert snatted_to(h.from_pod("calia", A_IP, OUTSIDE)[1], NODE_IP)


def test_without_the_cnat_plugin_nothing_is_sent_and_it_is_reported() -> None:
    class NoCnat:
        generation, instance_id = 1, "vpp-without-cnat"

        def supports(self, feature: str) -> bool:
            return feature != "cnat"

        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"{name} called on a VPP without cnat")

    st = DesiredState()
    st.update_ip_pool(MASQ)
    st.update_host_metadata("v4v6", HostMetadata(HOST, ipv4_addr=IPv4Address(NODE_IP)))
    st.update_workload_endpoint(endpoint(A, "calia", f"{A_IP}/32", fips=(fip(FIP, A_IP),)))
    programmer = NatProgrammer(NoCnat(), CFG)
    programmer.adopt()
    problems = programmer.apply(st, st.take_dirty(), True, {A: 5})
    assert any("no cnat plugin" in p for p in problems), problems
