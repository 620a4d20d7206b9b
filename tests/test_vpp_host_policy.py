"""Host endpoint policy in VPP, over the simulator's real socket.

A simulated node (`SimNode`, acl backend for the pods) whose uplink is tagged `main-eth0` as
Calico/VPP's manager does, plus a host tap `host-eth0` (unnumbered to the uplink) to which the
Linux host's own address HOST_IP4/HOST_IP6 is routed (VPP's punt to the host). The uplink's
own address (VPP_IP4) is a local address of VPP. Packets are judged by `sim.packet.evaluate`
on what the driver programmed and compared with the oracle's `connection_verdict` for every
path: outside <-> host, outside <-> pod (forwarded), pod <-> host.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import replace
from random import Random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calico_vpp_driver.config import Config, ProtoPort
from calico_vpp_driver.felix.status import Health, StatusBoard
from calico_vpp_driver.model.state import DesiredState
from calico_vpp_driver.model.types import (
    IPSET_NET,
    HostEndpoint,
    HostEndpointID,
    HostMetadata,
    IcmpMatch,
    Policy,
    PolicyID,
    PortRange,
    Profile,
    Rule,
    TierInfo,
    WorkloadEndpoint,
    WorkloadEndpointID,
)
from calico_vpp_driver.policy.verdict import LOCAL_HOST, Packet, Side, connection_verdict
from calico_vpp_driver.sim.node import SimNode, to_sim_packet
from calico_vpp_driver.sim.packet import evaluate
from calico_vpp_driver.vpp.host_policy import (
    HOST_TAG_PREFIX,
    HostInterface,
    HostPolicyProgrammer,
    bind_endpoints,
    find_host_interfaces,
    parse_host_interfaces,
    restrict_acl,
)

U32_MAX = 0xFFFFFFFF
HEP = HostEndpointID("node1.eth0")
POD = WorkloadEndpointID("k8s", "ns/pod", "eth0")
VPP_IP4, VPP_IP6 = "172.31.0.1", "fd10::1"  # SimNode's uplink addresses
HOST_IP4, HOST_IP6 = "172.31.0.9", "fd10::9"  # the Linux host's, punted to the tap
POD_IP4, POD_IP6 = "10.244.0.2", "fd20::2"
OUTSIDE4, OUTSIDE6 = "198.51.100.7", "2001:db8::7"
FRIEND4 = "198.51.100.8"
CFG = replace(
    Config(felix_hostname="node1"),
    failsafe_inbound_host_ports=(ProtoPort("tcp", 22), ProtoPort("tcp", 179, "198.51.100.0/24")),
    failsafe_outbound_host_ports=(ProtoPort("udp", 53), ProtoPort("tcp", 179)),
    default_endpoint_to_host_action="DROP",
)
DENY = PolicyID("deny-all", "", "GlobalNetworkPolicy")
WEB = PolicyID("web", "", "GlobalNetworkPolicy")
FWD = PolicyID("forward-80-friends", "", "GlobalNetworkPolicy")


class HostNode:
    """A SimNode with a host tap; its dataplane programs workload and host endpoint policy."""

    def __init__(self, config: Config = CFG, backend: str = "acl") -> None:
        self.node = SimNode(backend=backend, config=config)
        self.config = self.node.config
        self._topology()
        self.board = StatusBoard()

    @property
    def programmer(self) -> HostPolicyProgrammer:
        """The dataplane's own host policy programmer."""
        assert self.node.dataplane.host is not None
        return self.node.dataplane.host

    def _topology(self) -> None:
        """Tag the uplink as Calico/VPP does, add the host tap, route the host's addresses to
        it, add a pod."""
        c = self.node.client
        c.call("sw_interface_tag_add_del", is_add=True, sw_if_index=self.node.uplink, tag="main-eth0")
        self.tap = int(
            c.call(
                "tap_create_v3",
                id=U32_MAX,
                use_random_mac=True,
                host_if_name_set=True,
                host_if_name="eth0",
                tag="host-eth0",
            ).sw_if_index
        )
        c.call(
            "sw_interface_set_unnumbered",
            sw_if_index=self.node.uplink,
            unnumbered_sw_if_index=self.tap,
            is_add=True,
        )
        c.call("sw_interface_set_flags", sw_if_index=self.tap, flags=1)
        for addr in (HOST_IP4, HOST_IP6):
            net = ipaddress.ip_network(addr)
            path = {
                "sw_if_index": self.tap,
                "table_id": 0,
                "weight": 1,
                "preference": 0,
                "type": 0,
                "flags": 0,
                "proto": 0 if net.version == 4 else 1,
            }
            c.call("ip_route_add_del", is_add=True, route={"table_id": 0, "prefix": net, "paths": [path]})
        self.pod = self.node.add_pod("calipod", [POD_IP4, POD_IP6])

    def apply(self, state: DesiredState, full: bool = False) -> None:
        if full:
            self.node.dataplane.new_felix_session()  # the next apply is a full one
        if not state.in_sync:
            state.mark_in_sync()
        self.node.dataplane.apply(state, state.take_dirty(), self.board)
        assert not self.node.server.errors, self.node.server.errors

    def judge(self, packet: Packet, rx: int, *, sessions: bool = False) -> tuple[bool, list[str]]:
        with self.node.server.lock:
            verdict, trace = evaluate(
                self.node.server.state, to_sim_packet(packet), rx, use_sessions=sessions
            )
        return verdict == "allow", trace

    def lists(self, sw: int) -> tuple[list[int], list[int]]:
        st = self.node.server.state
        return list(st.acl_input.get(sw, [])), list(st.acl_output.get(sw, []))

    def host_acl_tags(self) -> list[str]:
        st = self.node.server.state
        return sorted(a.tag for _i, a in st.acls.items() if a.tag.startswith(HOST_TAG_PREFIX))


@pytest.fixture
def host() -> Iterator[HostNode]:
    h = HostNode()
    yield h
    h.node.close()


def base_state(hep: HostEndpoint | None = None) -> DesiredState:
    st = DesiredState()
    st.update_ipset("friends", IPSET_NET, [f"{FRIEND4}/32", "2001:db8::8/128"])
    st.update_profile(Profile("allow-all", (Rule(),), (Rule(),)))
    st.update_policy(Policy(DENY, (Rule(action="deny"),), (Rule(action="deny"),)))
    tcp80 = Rule(action="allow", protocol=6, dst_ports=(PortRange(80, 80),))
    ping = Rule(action="allow", protocol=1, icmp=IcmpMatch(8, None))
    st.update_policy(Policy(WEB, (tcp80, ping), (Rule(action="allow", protocol=17),)))
    st.update_policy(
        Policy(FWD, (tcp80._replace(src_ip_set_ids=("friends",)),), (Rule(action="allow", protocol=6),))
    )
    st.update_workload_endpoint(
        WorkloadEndpoint(
            POD,
            name="calipod",
            profile_ids=("allow-all",),
            ipv4_nets=(ipaddress.IPv4Network(f"{POD_IP4}/32"),),
            ipv6_nets=(ipaddress.IPv6Network(f"{POD_IP6}/128"),),
        )
    )
    # Felix's HostMetadata names the node's addresses (those of the Linux host).
    st.update_host_metadata(
        "main",
        HostMetadata(
            "node1", ipv4_addr=ipaddress.IPv4Address(HOST_IP4), ipv6_addr=ipaddress.IPv6Address(HOST_IP6)
        ),
    )
    if hep is not None:
        st.update_host_endpoint(hep)
    return st


def tiers(*pids: PolicyID) -> tuple[TierInfo, ...]:
    return (TierInfo("default", pids, pids),)


def flows(h: HostNode) -> list[tuple[str, Side, Side, int, Packet]]:
    """(name, oracle src, oracle dst, rx interface, packet) for every path, both families."""
    out: list[tuple[str, Side, Side, int, Packet]] = []
    pod_rx = h.pod.sw_if_index
    for v, (outside, hostip, vppip, podip) in {
        4: (OUTSIDE4, HOST_IP4, VPP_IP4, POD_IP4),
        6: (OUTSIDE6, HOST_IP6, VPP_IP6, POD_IP6),
    }.items():
        friend = FRIEND4 if v == 4 else "2001:db8::8"
        for port in (22, 53, 80, 81, 179):
            for proto in (Packet.tcp, Packet.udp):
                for src in (outside, friend):
                    out.append(("outside->host", HEP, LOCAL_HOST, h.node.uplink, proto(src, hostip, port)))
                    out.append(("outside->vpp", HEP, LOCAL_HOST, h.node.uplink, proto(src, vppip, port)))
                    out.append(("outside->pod", HEP, POD, h.node.uplink, proto(src, podip, port)))
                out.append(("host->outside", LOCAL_HOST, HEP, h.tap, proto(hostip, outside, port)))
                out.append(("pod->outside", POD, HEP, pod_rx, proto(podip, outside, port)))
                out.append(("pod->host", POD, LOCAL_HOST, pod_rx, proto(podip, hostip, port)))
                out.append(("host->pod", LOCAL_HOST, POD, h.tap, proto(hostip, podip, port)))
        out.append(("outside->host", HEP, LOCAL_HOST, h.node.uplink, Packet.icmp(outside, hostip)))
        out.append(("pod->host", POD, LOCAL_HOST, pod_rx, Packet.icmp(podip, hostip, 135 if v == 6 else 8)))
    return out


def check_flows(h: HostNode, state: DesiredState) -> dict[str, int]:
    seen: dict[str, int] = {}
    for name, src, dst, rx, packet in flows(h):
        expected = connection_verdict(state, h.config, src, dst, packet)
        got, trace = h.judge(packet, rx)
        assert got == expected.allow, (
            f"{name} {packet}: VPP {'allows' if got else 'denies'}, oracle "
            f"{'allows' if expected.allow else 'denies'} ({expected.reason})\n" + "\n".join(trace)
        )
        outcome = f"{name}:{'allow' if got else 'deny'}"
        seen[outcome] = seen.get(outcome, 0) + 1
    return seen


# ---------------------------------------------------------------------------------------------
# Table tests
# ---------------------------------------------------------------------------------------------


def test_no_host_endpoint_touches_no_host_interface(host: HostNode) -> None:
    host.apply(base_state(), full=True)
    assert host.lists(host.node.uplink) == ([], [])
    assert host.lists(host.tap) == ([], [])
    assert host.host_acl_tags() == []
    # Forwarded and host traffic flows (nothing polices it).
    assert host.judge(Packet.tcp(OUTSIDE4, HOST_IP4, 80), host.node.uplink)[0]
    assert host.judge(Packet.tcp(OUTSIDE4, POD_IP4, 80), host.node.uplink)[0]


def test_failsafe_ports_stay_open_with_a_deny_all_policy(host: HostNode) -> None:
    state = base_state(HostEndpoint(HEP, name="eth0", tiers=tiers(DENY)))
    host.apply(state, full=True)
    assert host.board.health(HEP) == (Health.UP, "")
    up = host.node.uplink
    for dst in (HOST_IP4, VPP_IP4):
        assert host.judge(Packet.tcp(OUTSIDE4, dst, 22), up)[0]
        assert not host.judge(Packet.tcp(OUTSIDE4, dst, 80), up)[0]
        assert host.judge(Packet.tcp(OUTSIDE4, dst, 179), up)[0]  # from 198.51.100.0/24
        assert not host.judge(Packet.tcp("192.0.2.1", dst, 179), up)[0]
    assert host.judge(Packet.udp(HOST_IP4, OUTSIDE4, 53), host.tap)[0]
    assert not host.judge(Packet.udp(HOST_IP4, OUTSIDE4, 54), host.tap)[0]
    assert host.judge(Packet.tcp(HOST_IP6, OUTSIDE6, 179), host.tap)[0]
    # Forwarded traffic: no forward tiers -> allowed.
    assert host.judge(Packet.tcp(OUTSIDE4, POD_IP4, 80), up)[0]
    check_flows(host, state)


def test_replies_of_allowed_flows_pass_by_the_reflexive_sessions(host: HostNode) -> None:
    state = base_state(HostEndpoint(HEP, name="eth0", tiers=tiers(DENY)))
    host.apply(state, full=True)
    ssh = Packet.tcp(OUTSIDE4, HOST_IP4, 22, src_port=40001)
    assert host.judge(ssh, host.node.uplink, sessions=True)[0]
    reply = Packet.tcp(HOST_IP4, OUTSIDE4, 40001, src_port=22)
    assert not host.judge(reply, host.tap)[0]  # as a new flow: egress deny-all
    allowed, trace = host.judge(reply, host.tap, sessions=True)
    assert allowed, "\n".join(trace)
    dns = Packet.udp(HOST_IP4, OUTSIDE4, 53, src_port=40002)
    assert host.judge(dns, host.tap, sessions=True)[0]
    answer = Packet.udp(OUTSIDE4, HOST_IP4, 40002, src_port=53)
    allowed, trace = host.judge(answer, host.node.uplink, sessions=True)
    assert allowed, "\n".join(trace)


def test_policies_and_profiles_match_the_oracle_on_every_path(host: HostNode) -> None:
    hep = HostEndpoint(
        HEP,
        name="eth0",
        tiers=tiers(WEB),
        forward_tiers=tiers(FWD),
        profile_ids=("allow-all",),
        expected_ipv4_addrs=(ipaddress.IPv4Address(HOST_IP4),),
        expected_ipv6_addrs=(ipaddress.IPv6Address(HOST_IP6),),
    )
    state = base_state(hep)
    host.apply(state, full=True)
    seen = check_flows(host, state)
    for outcome in ("outside->host:allow", "outside->host:deny", "outside->pod:allow", "outside->pod:deny"):
        assert seen.get(outcome), seen
    assert seen.get("pod->host:deny") and seen.get("host->pod:allow"), seen
    # ICMPv6 neighbour discovery from the pod reaches the host in spite of DROP.
    nd = Packet.icmp(POD_IP6, HOST_IP6, 135)
    assert host.judge(nd, host.pod.sw_if_index)[0]


@pytest.mark.parametrize("action", ["ACCEPT", "RETURN", "DROP"])
def test_default_endpoint_to_host_action(action: str) -> None:
    h = HostNode(replace(CFG, default_endpoint_to_host_action=action))
    try:
        state = base_state(HostEndpoint(HEP, name="eth0", tiers=tiers(DENY)))
        h.apply(state, full=True)
        allowed = h.judge(Packet.tcp(POD_IP4, HOST_IP4, 80), h.pod.sw_if_index)[0]
        assert allowed is (action != "DROP")
        check_flows(h, state)
    finally:
        h.node.close()


def test_host_policy_is_acl_whatever_the_workload_backend() -> None:
    h = HostNode(backend="npol")
    try:
        assert h.node.dataplane.backend == "npol"
        hep = HostEndpoint(
            HEP, name="eth0", tiers=tiers(WEB), forward_tiers=tiers(FWD), untracked_tiers=tiers(FWD)
        )
        state = base_state(hep)
        h.apply(state, full=True)
        seen = check_flows(h, state)
        assert seen.get("outside->pod:deny") and seen.get("outside->host:allow"), seen
    finally:
        h.node.close()


def test_broken_policy_keeps_failsafes_and_denies_the_rest(host: HostNode) -> None:
    missing = PolicyID("missing", "", "GlobalNetworkPolicy")
    state = base_state(HostEndpoint(HEP, name="eth0", tiers=tiers(missing), profile_ids=("allow-all",)))
    host.apply(state, full=True)
    health, reason = host.board.health(HEP)
    assert health == Health.ERROR and "missing" in reason, reason
    assert host.judge(Packet.tcp(OUTSIDE4, HOST_IP4, 22), host.node.uplink)[0]
    assert not host.judge(Packet.tcp(OUTSIDE4, HOST_IP4, 80), host.node.uplink)[0]
    assert not host.judge(Packet.tcp(OUTSIDE4, POD_IP4, 80), host.node.uplink)[0]  # forwarded: denied
    check_flows(host, state)


def test_endpoint_without_an_interface_is_in_error_and_touches_nothing(host: HostNode) -> None:
    state = base_state(HostEndpoint(HEP, name="eth7", tiers=tiers(DENY)))
    host.apply(state, full=True)
    health, reason = host.board.health(HEP)
    assert health == Health.ERROR and "eth7" in reason and "main-eth7" in reason, reason
    assert host.lists(host.node.uplink) == ([], []) and host.lists(host.tap) == ([], [])
    other = HostEndpointID("by-address")
    state.update_host_endpoint(
        HostEndpoint(other, expected_ipv4_addrs=(ipaddress.IPv4Address("192.0.2.99"),))
    )
    host.apply(state)
    health, reason = host.board.health(other)
    assert health == Health.ERROR and "192.0.2.99" in reason, reason


def test_removal_restores_the_interfaces_and_deletes_the_acls(host: HostNode) -> None:
    state = base_state(HostEndpoint(HEP, name="eth0", tiers=tiers(DENY), forward_tiers=tiers(DENY)))
    host.apply(state, full=True)
    assert host.lists(host.node.uplink) != ([], []) and host.lists(host.tap) != ([], [])
    assert not host.judge(Packet.tcp(OUTSIDE4, POD_IP4, 80), host.node.uplink)[0]
    pod_lists = host.lists(host.pod.sw_if_index)
    state.remove_host_endpoint(HEP)
    host.apply(state)
    assert host.lists(host.node.uplink) == ([], []) and host.lists(host.tap) == ([], [])
    assert host.host_acl_tags() == []
    assert host.lists(host.pod.sw_if_index) == pod_lists  # workload ACLs untouched
    assert host.judge(Packet.tcp(OUTSIDE4, POD_IP4, 80), host.node.uplink)[0]
    assert host.judge(Packet.tcp(OUTSIDE4, HOST_IP4, 80), host.node.uplink)[0]
    assert host.programmer.policed_interfaces() == frozenset()


def test_binding_by_address_and_precedence(host: HostNode) -> None:
    star = HostEndpointID("all")
    by_addr = HostEndpointID("by-address")
    state = base_state(HostEndpoint(star, name="*", tiers=tiers(DENY)))
    host.apply(state, full=True)
    assert host.board.health(star) == (Health.UP, "")
    state.update_host_endpoint(
        HostEndpoint(
            by_addr, expected_ipv4_addrs=(ipaddress.IPv4Address(VPP_IP4),), profile_ids=("allow-all",)
        )
    )
    host.apply(state)
    assert host.board.health(by_addr) == (Health.UP, "")
    health, reason = host.board.health(star)
    assert health == Health.ERROR and "by-address" in reason, reason
    assert host.judge(Packet.tcp(OUTSIDE4, HOST_IP4, 80), host.node.uplink)[0]  # allow-all profile
    state.update_host_endpoint(HostEndpoint(HEP, name="eth0", tiers=tiers(DENY)))
    host.apply(state)
    assert host.board.health(HEP) == (Health.UP, "")
    assert not host.judge(Packet.tcp(OUTSIDE4, HOST_IP4, 80), host.node.uplink)[0]
    check_flows(host, state)


def test_explicit_interface_mapping() -> None:
    h = HostNode(replace(CFG, vpp_host_interfaces="bond0=main-eth0+host-eth0"))
    try:
        state = base_state(HostEndpoint(HEP, name="bond0", tiers=tiers(DENY)))
        h.apply(state, full=True)
        assert h.board.health(HEP) == (Health.UP, "")
        assert not h.judge(Packet.tcp(OUTSIDE4, HOST_IP4, 80), h.node.uplink)[0]
        check_flows(h, state)
    finally:
        h.node.close()


def test_policy_change_rewrites_in_place_and_restart_adopts(host: HostNode) -> None:
    state = base_state(HostEndpoint(HEP, name="eth0", tiers=tiers(DENY)))
    host.apply(state, full=True)
    before = host.lists(host.node.uplink), host.lists(host.tap)
    state.update_policy(Policy(DENY, (Rule(action="allow", protocol=6),), (Rule(action="deny"),)))
    host.apply(state)
    assert (host.lists(host.node.uplink), host.lists(host.tap)) == before  # same ACL indexes
    assert host.judge(Packet.tcp(OUTSIDE4, HOST_IP4, 80), host.node.uplink)[0]
    check_flows(host, state)
    # A restarted driver: adopt, then the endpoint is gone -> interfaces restored.
    dp = host.node.new_dataplane()
    assert dp.acls is not None
    lists = dp._dump_acl_lists()
    programmer = HostPolicyProgrammer(host.node.client, dp.acls, host.config)
    programmer.adopt(lists)
    assert programmer.policed_interfaces() == {host.node.uplink, host.tap}
    state.remove_host_endpoint(HEP)
    programmer.apply(state, state.take_dirty(), True, host.board)
    assert host.lists(host.node.uplink) == ([], []) and host.lists(host.tap) == ([], [])
    assert host.host_acl_tags() == []


def test_vpp_restart_reprograms_everything(host: HostNode) -> None:
    state = base_state(HostEndpoint(HEP, name="eth0", tiers=tiers(DENY)))
    host.apply(state, full=True)
    host.node.reset()  # a fresh VPP (and workload dataplane with a new AclStore)
    host._topology()
    assert host.node.dataplane.acls is not None
    host.programmer.reset(host.node.dataplane.acls)
    state.update_workload_endpoint(replace(state.workload_endpoints[POD], name="calipod"))
    host.apply(state, full=True)
    assert host.board.health(HEP) == (Health.UP, "")
    assert not host.judge(Packet.tcp(OUTSIDE4, HOST_IP4, 80), host.node.uplink)[0]
    check_flows(host, state)


def test_host_metadata_addresses_count_as_the_host(host: HostNode) -> None:
    state = base_state(HostEndpoint(HEP, name="eth0", tiers=tiers(DENY)))
    other = "172.31.0.77"  # another address of the host, known from the endpoint
    state.update_host_endpoint(
        HostEndpoint(HEP, name="eth0", tiers=tiers(DENY), expected_ipv4_addrs=(ipaddress.IPv4Address(other),))
    )
    host.apply(state, full=True)
    # Routed out the uplink in the simulator, but judged as traffic to the host on the way in.
    assert not host.judge(Packet.tcp(OUTSIDE4, other, 80), host.node.uplink)[0]
    assert host.judge(Packet.tcp(OUTSIDE4, other, 22), host.node.uplink)[0]


# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------


def test_parse_host_interfaces() -> None:
    assert parse_host_interfaces("eth0=main-eth0+host-eth0, eth1=up1,bad,x=,y=a+") == {
        "eth0": ("main-eth0", "host-eth0"),
        "eth1": ("up1", None),
    }


def test_find_and_bind() -> None:
    tags = {"main-eth0": 1, "host-eth0": 2, "main-eth1": 3, "uplink": 4, "host-": 5}
    addrs = {1: frozenset({ipaddress.ip_address("10.0.0.1")})}
    found = find_host_interfaces(tags, addrs, "")
    assert found == {
        "eth0": HostInterface("eth0", 1, 2, frozenset({ipaddress.ip_address("10.0.0.1")})),
        "eth1": HostInterface("eth1", 3, None),
    }
    a, b, c = HostEndpointID("a"), HostEndpointID("b"), HostEndpointID("c")
    eps = {
        a: HostEndpoint(a, name="*"),
        b: HostEndpoint(b, expected_ipv4_addrs=(ipaddress.IPv4Address("10.0.0.1"),)),
        c: HostEndpoint(c, name="eth9"),
    }
    winners, unmatched = bind_endpoints(eps, found)
    assert winners == {"eth0": b, "eth1": a}
    assert set(unmatched) == {c}


def test_restrict_acl_is_exact() -> None:
    from calico_vpp_driver.vpp.acl_rules import AclRule, acl_allows

    rules = (
        AclRule(
            2, ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("10.0.0.0/24"), 6, 0, 65535, 80, 80
        ),
        AclRule(0, ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("0.0.0.0/0"), 0),
        AclRule(2, ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("0.0.0.0/0"), 17),
    )
    nets = [ipaddress.ip_network("10.0.0.5/32"), ipaddress.ip_network("10.9.0.0/16")]
    cut = restrict_acl(rules, "dst", nets)
    rng = Random(7)
    for _ in range(2000):
        src = rng.choice(["192.0.2.1", "198.51.100.1"])
        dst = rng.choice(["10.0.0.5", "10.0.0.6", "10.9.3.3", "172.16.0.1"])
        p = Packet(
            ipaddress.ip_address(src),
            ipaddress.ip_address(dst),
            rng.choice([6, 17]),
            1000,
            rng.choice([80, 81]),
        )
        inside = any(p.dst in n for n in nets)
        matched = any(
            p.src in r.src and p.dst in r.dst and (not r.proto or r.proto == p.protocol) for r in cut
        )
        assert matched == inside, p
        if inside:
            assert acl_allows(cut, p) == acl_allows(rules, p), p


# ---------------------------------------------------------------------------------------------
# Differential: random host endpoint policies, every path, vs the oracle
# ---------------------------------------------------------------------------------------------

_PORTS = (22, 53, 80, 81, 179)


def _random_rules(rng: Random) -> tuple[Rule, ...]:
    out = []
    for _ in range(rng.randint(0, 3)):
        kw: dict[str, object] = {"action": rng.choice(("allow", "allow", "deny", "pass"))}
        if rng.random() < 0.6:
            kw["protocol"] = rng.choice((6, 17))
            if rng.random() < 0.7:
                first = rng.choice(_PORTS)
                kw["dst_ports"] = (PortRange(first, max(first, rng.choice(_PORTS))),)
        if rng.random() < 0.3:
            kw["src_net"] = (
                ipaddress.ip_network(rng.choice(("198.51.100.0/24", "198.51.100.8/32", "2001:db8::/64"))),
            )
        if rng.random() < 0.2:
            kw["src_ip_set_ids"] = ("friends",)
        if rng.random() < 0.2:
            kw["not_dst_net"] = (ipaddress.ip_network(rng.choice((f"{POD_IP4}/32", f"{HOST_IP6}/128"))),)
        out.append(Rule(**kw))  # type: ignore[arg-type]
    return tuple(out)


_host_node: HostNode | None = None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_random_host_policies_match_the_oracle(seed: int) -> None:
    global _host_node
    if _host_node is None:
        _host_node = HostNode()
    h = _host_node
    rng = Random(seed)
    state = base_state()
    pids = []
    for i in range(3):
        pid = PolicyID(f"p{i}", "", "GlobalNetworkPolicy")
        state.update_policy(Policy(pid, _random_rules(rng), _random_rules(rng)))
        pids.append(pid)

    def pick() -> tuple[TierInfo, ...]:
        if rng.random() < 0.3:
            return ()
        chosen = tuple(rng.sample(pids, rng.randint(1, 2)))
        return (TierInfo("t", chosen, chosen, rng.choice(("Deny", "Pass"))),)

    hep = HostEndpoint(
        HEP,
        name="eth0",
        tiers=pick(),
        untracked_tiers=pick(),
        pre_dnat_tiers=pick(),
        forward_tiers=pick(),
        profile_ids=("allow-all",) if rng.random() < 0.4 else (),
        error="broken" if rng.random() < 0.05 else None,
    )
    state.update_host_endpoint(hep)
    h.node.dataplane.configure(
        replace(h.config, default_endpoint_to_host_action=rng.choice(("ACCEPT", "DROP", "RETURN")))
    )
    h.config = h.node.dataplane.config
    h.apply(state, full=True)
    check_flows(h, state)


def teardown_module() -> None:
    global _host_node
    if _host_node is not None:
        _host_node.node.close()
        _host_node = None
