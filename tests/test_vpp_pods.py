"""Pod interfaces made the way a CNI ADD makes them (`vpp.pods.PodInterfaces`), over the
simulator's socket: what VPP ends up with, deny-all from the first message on, idempotence,
binding to Felix's endpoints in both orders, index reuse after a DEL, driver restarts, and the
veth fallback where VPP cannot make taps."""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog

from calico_vpp_driver.cni.netns import GATEWAY_V6
from calico_vpp_driver.cni.types import (
    TUN_CONTAINER_MAC,
    IPNetwork,
    PodError,
    PodRequest,
    WorkloadIdentity,
    is_go_mac,
)
from calico_vpp_driver.config import Config
from calico_vpp_driver.felix.status import Health, StatusBoard
from calico_vpp_driver.model.state import DesiredState
from calico_vpp_driver.model.types import Profile, Rule, WorkloadEndpoint, WorkloadEndpointID
from calico_vpp_driver.policy.verdict import Packet
from calico_vpp_driver.sim.node import Pod, SimNode
from calico_vpp_driver.sim.state import U32_MAX, VppState
from calico_vpp_driver.vpp.dataplane import DENY_ALL_TAG, VppDataplane
from calico_vpp_driver.vpp.pods import (
    LOOPBACK_TAG,
    PodInterfaces,
    PodTag,
    identity_key,
    netns_key,
    parse_pod_tag,
)

A = WorkloadEndpointID("k8s", "ns/a", "eth0")
B = WorkloadEndpointID("k8s", "ns/b", "eth0")
A_IP, A_IP6, B_IP = "10.0.0.1", "fd00::1", "10.0.0.2"
OUTSIDE = "198.51.100.7"


def request(
    key: WorkloadEndpointID, name: str, *addrs: str, netns: str | None = None, mtu: int = 0
) -> PodRequest:
    return PodRequest(
        netns=netns or f"/var/run/netns/{name}",
        interface_name="eth0",
        host_interface_name=name,
        identity=WorkloadIdentity(key.orchestrator_id, key.workload_id, key.endpoint_id),
        addresses=tuple(
            ipaddress.ip_interface(f"{a}/{ipaddress.ip_address(a).max_prefixlen}") for a in addrs
        ),
        mtu=mtu,
    )


def allow_all_state(*eps: tuple[WorkloadEndpointID, str, str]) -> DesiredState:
    st = DesiredState()
    st.update_profile(Profile("open", (Rule(action="allow"),), (Rule(action="allow"),)))
    for key, name, ip in eps:
        st.update_workload_endpoint(
            WorkloadEndpoint(
                key, name=name, profile_ids=("open",), ipv4_nets=(ipaddress.IPv4Network(f"{ip}/32"),)
            )
        )
    return st


def apply(node: SimNode, st: DesiredState, board: StatusBoard) -> None:
    if not st.in_sync:
        st.mark_in_sync()
    node.dataplane.apply(st, st.take_dirty(), board)
    assert not node.server.errors, node.server.errors


@pytest.fixture(params=("npol", "acl"))
def node(request: pytest.FixtureRequest) -> Iterator[SimNode]:
    n = SimNode(backend=request.param)
    yield n
    n.close()


def pods_of(node: SimNode) -> PodInterfaces:
    return PodInterfaces(lambda: node.client, node.config, notifier=node.dataplane)


def acl_tags(node: SimNode, sw: int) -> tuple[list[str], list[str]]:
    vpp = node.server.state
    ins = [vpp.acls.get(i).tag for i in vpp.acl_input.get(sw, [])]
    outs = [vpp.acls.get(i).tag for i in vpp.acl_output.get(sw, [])]
    return ins, outs


def host_routes(node: SimNode, sw: int) -> set[str]:
    vpp = node.server.state
    found = set()
    for is_ip6 in (False, True):
        table = vpp.table(is_ip6, 0)
        assert table is not None
        for prefix, route in table.routes.items():
            if any(p.sw_if_index == sw for p in route.paths) and prefix.prefixlen == prefix.max_prefixlen:
                found.add(str(prefix.network_address))
    return found


# ---------------------------------------------------------------------------------- what ADD makes


def test_add_makes_a_tun_tap_in_the_pod_namespace_denying_everything(node: SimNode) -> None:
    pods = pods_of(node)
    result = pods.add(request(A, "calia", A_IP, A_IP6, mtu=1400))
    assert result.host_interface_name == "calia"
    sw = pods.pods()["calia"]
    vpp = node.server.state
    itf = vpp.interfaces.get(sw)
    assert itf is not None
    assert itf.info["tun"] and itf.info["host_namespace"] == "/var/run/netns/calia"
    assert itf.info["host_if_name"] == "eth0" and itf.mtu == 1400
    assert itf.admin_up
    tag = parse_pod_tag(itf.tag)
    assert tag is not None and tag.name == "calia"
    loop = [i for _, i in vpp.interfaces.items() if i.tag == LOOPBACK_TAG]
    assert len(loop) == 1 and itf.unnumbered_to == loop[0].sw_if_index
    assert host_routes(node, sw) == {A_IP, A_IP6}
    assert itf.urpf == {(True, 0): 2, (True, 1): 2}  # strict, both families
    assert acl_tags(node, sw) == ([DENY_ALL_TAG], [DENY_ALL_TAG])
    # Nothing crosses it before Felix's endpoint is programmed.
    assert node.verdict(Packet.tcp(OUTSIDE, A_IP, 80))[0] is False


def test_the_interface_is_never_up_without_the_deny_all(node: SimNode) -> None:
    seen: list[str] = []

    def check(name: str, fields: Mapping[str, Any]) -> None:
        vpp = node.server.state
        for sw, itf in vpp.interfaces.items():
            if parse_pod_tag(itf.tag) is None or not itf.admin_up:
                continue
            ins = vpp.acl_input.get(sw, [])
            outs = vpp.acl_output.get(sw, [])
            if not ins or not outs:
                seen.append(f"after {name}: {itf.name} up without ACLs")

    node.server.after_request = check
    pods_of(node).add(request(A, "calia", A_IP))
    node.server.after_request = None
    assert seen == []


def test_add_is_idempotent_and_del_removes_everything(node: SimNode) -> None:
    pods = pods_of(node)
    req = request(A, "calia", A_IP)
    pods.add(req)
    sw = pods.pods()["calia"]
    node.server.calls.clear()
    pods.add(req)  # the plugin retried
    assert pods.pods() == {"calia": sw}
    assert not node.server.calls.get("tap_create_v3")
    pods.delete(req.netns, "eth0")
    assert pods.pods() == {}
    assert node.server.state.interfaces.get(sw) is None
    assert host_routes(node, sw) == set()
    pods.delete(req.netns, "eth0")  # kubelet repeats DELs


# ---------------------------------------------------------------------------------- binding


@pytest.mark.parametrize("order", ["interface-first", "endpoint-first"])
def test_endpoint_binds_by_workload_identity_in_both_orders(node: SimNode, order: str) -> None:
    # The CNI request's host-side name differs from the endpoint's name: identity binds them.
    st = allow_all_state((A, "cali-felix-name", A_IP))
    board = StatusBoard()
    if order == "interface-first":
        node.add_pod("cni-name", [A_IP], identity=A)
        apply(node, st, board)
    else:
        apply(node, st, board)
        assert board.health(A)[0] == Health.DOWN
        node.add_pod("cni-name", [A_IP], identity=A)
        assert node.dataplane.wants_apply()
        apply(node, st, board)
    assert board.health(A)[0] == Health.UP
    assert node.verdict(Packet.tcp(OUTSIDE, A_IP, 80))[0] is True
    assert node.verdict(Packet.tcp(A_IP, OUTSIDE, 80), "cni-name")[0] is True


def test_endpoint_binds_by_name_to_an_interface_made_elsewhere(node: SimNode) -> None:
    # An interface tagged with the endpoint's name (not by this driver's CNI code).
    node.add_pod("calib", [B_IP])  # the pods' loopback exists
    c = node.client
    sw = int(
        c.call("tap_create_v3", id=0xFFFFFFFF, use_random_mac=True, tap_flags=16, tag="calia").sw_if_index
    )
    c.call(
        "sw_interface_set_unnumbered", sw_if_index=node.cni.loopback, unnumbered_sw_if_index=sw, is_add=True
    )
    c.call("sw_interface_set_flags", sw_if_index=sw, flags=1)
    st = allow_all_state((A, "calia", A_IP))
    board = StatusBoard()
    apply(node, st, board)
    assert board.health(A)[0] == Health.UP
    assert acl_tags(node, sw)[0] != [DENY_ALL_TAG]


def test_a_deleted_pods_index_never_carries_its_policy_to_the_next_pod(node: SimNode) -> None:
    st = allow_all_state((A, "calia", A_IP))
    board = StatusBoard()
    pod_a = node.add_pod("calia", [A_IP], identity=A)
    apply(node, st, board)
    assert node.verdict(Packet.tcp(OUTSIDE, A_IP, 80))[0] is True
    node.delete_pod("calia")  # Felix has not removed A's endpoint yet
    pod_b = node.add_pod("calib", [B_IP], identity=B)
    assert pod_b.sw_if_index == pod_a.sw_if_index  # VPP reused the index
    apply(node, st, board)
    assert acl_tags(node, pod_b.sw_if_index) == ([DENY_ALL_TAG], [DENY_ALL_TAG])
    assert node.verdict(Packet.tcp(OUTSIDE, B_IP, 80))[0] is False
    assert node.verdict(Packet.tcp(B_IP, OUTSIDE, 80), "calib")[0] is False
    assert board.health(A)[0] == Health.DOWN
    if node.dataplane.npol is not None:
        assert pod_b.sw_if_index not in node.dataplane.npol.interfaces


def test_status_up_once_bound_down_after_the_pod_is_deleted(node: SimNode) -> None:
    st = allow_all_state((A, "calia", A_IP))
    board = StatusBoard()
    node.add_pod("calia", [A_IP], identity=A)
    apply(node, st, board)
    assert board.health(A)[0] == Health.UP
    node.delete_pod("calia")
    st.update_workload_endpoint(st.workload_endpoints[A])  # any change brings A round
    apply(node, st, board)
    assert board.health(A)[0] == Health.DOWN


# ---------------------------------------------------------------------------------- restarts


def test_a_restarted_driver_finds_its_pods_by_tag_and_can_delete_them(node: SimNode) -> None:
    st = allow_all_state((A, "calia", A_IP))
    board = StatusBoard()
    node.add_pod("calia", [A_IP, A_IP6], identity=A)
    apply(node, st, board)
    sw = node.pods["calia"].sw_if_index
    # A new driver process: new dataplane, new CNI side, same VPP.
    node.dataplane = node.new_dataplane()
    fresh = PodInterfaces(lambda: node.client, node.config, notifier=node.dataplane)
    st2 = allow_all_state((A, "calia", A_IP))
    board2 = StatusBoard()
    apply(node, st2, board2)
    assert board2.health(A)[0] == Health.UP
    assert fresh.pods() == {}  # learnt lazily, on the first request
    fresh.delete("/var/run/netns/calia", "eth0")
    assert fresh.pods() == {}
    assert host_routes(node, sw) == set()
    assert not any(parse_pod_tag(i.tag) for _, i in node.server.state.interfaces.items())


# ---------------------------------------------------------------------------------- veth fallback


class FakeLinks:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def tun_configure(self, request: PodRequest, routes: Sequence[IPNetwork]) -> None:
        self.calls.append(
            ("tun_configure", request.netns, request.interface_name, tuple(str(r) for r in routes))
        )

    def create_veth(self, request: PodRequest, mtu: int) -> str:
        self.calls.append(("create_veth", request.host_interface_name, mtu))
        return "02:00:00:00:00:01"

    def delete_veth(self, netns: str, interface_name: str, host_interface_name: str) -> None:
        self.calls.append(("delete_veth", netns, interface_name, host_interface_name))


def test_without_vhost_net_pods_get_a_veth_attached_with_af_packet() -> None:
    with SimNode(backend="acl", vpp_state=VppState(vhost_net=False)) as node:
        links = FakeLinks()
        pods = PodInterfaces(lambda: node.client, node.config, notifier=node.dataplane, links=links)
        result = pods.add(request(A, "calia", A_IP))
        assert result.container_mac == "02:00:00:00:00:01"
        sw = pods.pods()["calia"]
        itf = node.server.state.interfaces.get(sw)
        assert itf is not None
        assert itf.kind == "af_packet" and itf.info["host_if_name"] == "calia"
        assert itf.mac == bytes.fromhex("eeeeeeeeeeee")
        assert acl_tags(node, sw) == ([DENY_ALL_TAG], [DENY_ALL_TAG])
        assert host_routes(node, sw) == {A_IP}
        assert links.calls[0] == ("create_veth", "calia", Config().vpp_pod_mtu)
        pods.delete("/var/run/netns/calia", "eth0")
        assert links.calls[-1] == ("delete_veth", "/var/run/netns/calia", "eth0", "calia")
        assert pods.pods() == {}


def test_taps_forced_where_vpp_cannot_make_them_is_an_error_naming_the_pod() -> None:
    with SimNode(backend="acl", vpp_state=VppState(vhost_net=False)) as node:
        cfg = Config(vpp_pod_interface="tap")
        pods = PodInterfaces(lambda: node.client, cfg, notifier=node.dataplane)
        with pytest.raises(PodError, match="k8s/ns/a/eth0"):
            pods.add(request(A, "calia", A_IP))
        assert pods.pods() == {}


def test_a_refused_route_leaves_nothing_behind(node: SimNode) -> None:
    pods = pods_of(node)
    before = {sw for sw, _ in node.server.state.interfaces.items()}
    pods.add(request(B, "calib", B_IP))  # loopback and deny-all exist
    before = {sw for sw, _ in node.server.state.interfaces.items()}
    node.server.fail_nth("ip_route_add_del", 1, -1)
    with pytest.raises(PodError, match="ns/a"):
        pods.add(request(A, "calia", A_IP))
    after = {sw for sw, _ in node.server.state.interfaces.items()}
    assert after == before
    assert set(pods.pods()) == {"calib"}


# ---------------------------------------------------------------------------------- spoofing


def test_spoofing_allowances_replace_strict_urpf_by_a_source_check(node: SimNode) -> None:
    """A pod sends only from its own addresses (strict uRPF), or also from its
    `allow_spoofed_source_prefixes` when Felix allows spoofing: then uRPF goes off and the
    endpoint's egress program denies every other source (never both off at once)."""
    from dataclasses import replace

    cfg = replace(node.config, workload_source_spoofing="Any")
    node.dataplane.configure(cfg)
    st = allow_all_state((A, "calia", A_IP))
    board = StatusBoard()
    pod = node.add_pod("calia", [A_IP], identity=A)
    apply(node, st, board)
    itf = node.server.state.interfaces.get(pod.sw_if_index)
    assert itf is not None and itf.urpf[(True, 0)] == 2
    own, allowed = Packet.tcp(A_IP, OUTSIDE, 80), Packet.tcp("10.7.0.9", OUTSIDE, 80)
    other = Packet.tcp("10.6.0.9", OUTSIDE, 80)
    assert node.verdict(own, "calia")[0] is True
    assert node.verdict(allowed, "calia")[0] is False  # uRPF: not its address

    def with_allowances(*nets: str) -> None:
        ep = st.workload_endpoints[A]
        st.update_workload_endpoint(
            replace(ep, allow_spoofed_source_prefixes=tuple(ipaddress.ip_network(n) for n in nets))
        )
        apply(node, st, board)

    with_allowances("10.7.0.0/16")
    assert itf.urpf.get((True, 0), 0) == 0 and itf.urpf.get((True, 1), 0) == 0
    assert node.verdict(own, "calia")[0] is True
    assert node.verdict(allowed, "calia")[0] is True
    assert node.verdict(other, "calia")[0] is False  # the program's source check
    assert node.verdict(Packet.tcp("fd00::9", "2001:db8::1", 80), "calia")[0] is False
    with_allowances()
    assert itf.urpf[(True, 0)] == 2
    assert node.verdict(allowed, "calia")[0] is False
    # Without WorkloadSourceSpoofing=Any (Felix would not have sent them), allowances are ignored.
    node.dataplane.configure(replace(cfg, workload_source_spoofing="Disabled"))
    with_allowances("10.7.0.0/16")
    assert itf.urpf[(True, 0)] == 2 and node.verdict(allowed, "calia")[0] is False


# ---------------------------------------------------------------------------------- VPP restarts


def recorded_pods(node: SimNode, links: Any = None) -> PodInterfaces:
    cfg = replace(node.config, vpp_state_dir=node.state_dir)
    return PodInterfaces(lambda: node.client, cfg, notifier=node.dataplane, links=links)


def restart_vpp(node: SimNode) -> None:
    """VPP restarts; returns once the driver's client is connected to the new one."""
    generation = node.client.generation
    node.server.restart()
    deadline = time.monotonic() + 10
    while node.client.generation == generation:
        assert time.monotonic() < deadline, "the client did not reconnect"
        time.sleep(0.01)


def pod_tags(node: SimNode) -> dict[str, int]:
    out = {}
    for sw, itf in node.server.state.interfaces.items():
        tag = parse_pod_tag(itf.tag)
        if tag is not None:
            out[tag.name] = sw
    return out


def test_pods_vpp_lost_when_it_restarted_are_made_again_and_bound(node: SimNode) -> None:
    st = allow_all_state((A, "calia", A_IP), (B, "calib", B_IP))
    board = StatusBoard()
    pods = recorded_pods(node)
    connections = threading.Event()
    node.dataplane.on_vpp_restart(connections.set)
    pods.add(request(A, "calia", A_IP, A_IP6))
    pods.add(request(B, "calib", B_IP))
    apply(node, st, board)
    assert board.health(A)[0] == board.health(B)[0] == Health.UP
    assert pods.restore() == []  # nothing lost

    restart_vpp(node)
    apply(node, st, board)  # the dataplane notices the restart and runs its hooks
    assert connections.wait(5)
    assert pod_tags(node) == {}
    assert sorted(pods.restore()) == [str(request(A, "calia").identity), str(request(B, "calib").identity)]
    assert set(pod_tags(node)) == {"calia", "calib"}
    assert host_routes(node, pod_tags(node)["calia"]) == {A_IP, A_IP6}
    apply(node, st, board)
    assert board.health(A) == (Health.UP, "") and board.health(B) == (Health.UP, "")

    # A DEL leaves the record: after the next restart only A comes back.
    pods.delete("/var/run/netns/calib", "eth0")
    restart_vpp(node)
    assert pods.restore() == [str(request(A, "calia").identity)]
    assert set(pod_tags(node)) == {"calia"}


def test_a_driver_started_after_vpp_restarted_makes_the_recorded_pods_again(node: SimNode) -> None:
    recorded_pods(node).add(request(A, "calia", A_IP))
    restart_vpp(node)
    node.dataplane = node.new_dataplane()  # a new driver process, same state directory
    fresh = recorded_pods(node)
    assert fresh.restore() == [str(request(A, "calia").identity)]
    st, board = allow_all_state((A, "calia", A_IP)), StatusBoard()
    apply(node, st, board)
    assert board.health(A)[0] == Health.UP


def test_a_pod_whose_netns_is_gone_is_forgotten_not_restored(node: SimNode) -> None:
    tmp_path = Path(node.state_dir).parent  # short: VPP takes netns paths of up to 63 bytes
    live = tmp_path / "netns-a"
    live.write_text("")
    links = FakeLinks()
    pods = recorded_pods(node, links)
    pods.add(request(A, "calia", A_IP, netns=str(live)))
    pods.add(request(B, "calib", B_IP, netns=str(tmp_path / "netns-b")))  # its pod is about to go
    restart_vpp(node)
    assert pods.restore() == [str(request(A, "calia").identity)]
    assert set(pod_tags(node)) == {"calia"}
    record = json.loads((Path(node.state_dir) / "pods.json").read_text())
    assert [p["host_interface_name"] for p in record["pods"].values()] == ["calia"]


def test_an_unreadable_pod_record_is_logged_and_ignored(node: SimNode) -> None:
    Path(node.state_dir).mkdir(parents=True, exist_ok=True)
    (Path(node.state_dir) / "pods.json").write_text("{not json")
    pods = recorded_pods(node)
    assert pods.restore() == []
    pods.add(request(A, "calia", A_IP))  # and it is written anew
    assert json.loads((Path(node.state_dir) / "pods.json").read_text())["pods"]


# ---------------------------------------------------------------------------------- anti-spoofing


def _open_endpoint(key: WorkloadEndpointID, name: str, *addrs: str) -> WorkloadEndpoint:
    nets = [ipaddress.ip_network(a) for a in addrs]
    return WorkloadEndpoint(
        key,
        name=name,
        profile_ids=("open",),
        ipv4_nets=tuple(n for n in nets if isinstance(n, ipaddress.IPv4Network)),
        ipv6_nets=tuple(n for n in nets if isinstance(n, ipaddress.IPv6Network)),
    )


def _denied_by_urpf(node: SimNode, packet: Packet, pod: str) -> bool:
    allowed, trace = node.verdict(packet, pod)
    return not allowed and "uRPF strict" in trace[-1]


def test_a_pod_on_a_deleted_pods_index_drops_spoofed_sources(node: SimNode) -> None:
    """VPP keeps uRPF modes per sw_if_index across interface deletes and ignores a request for
    the mode it holds: a pod on a reused index must still get the strict check."""
    st = allow_all_state((A, "calia", A_IP), (B, "calib", B_IP))
    board = StatusBoard()
    pod_a = node.add_pod("calia", [A_IP], identity=A)
    apply(node, st, board)
    node.delete_pod("calia")
    pod_b = node.add_pod("calib", [B_IP], identity=B)
    assert pod_b.sw_if_index == pod_a.sw_if_index  # VPP reused the index (and its uRPF table entry)
    apply(node, st, board)
    assert board.health(B)[0] == Health.UP
    assert node.verdict(Packet.tcp(B_IP, OUTSIDE, 80), "calib")[0] is True
    assert _denied_by_urpf(node, Packet.tcp("10.9.9.9", OUTSIDE, 80), "calib")
    assert _denied_by_urpf(node, Packet.tcp("fd00::99", "2001:db8::1", 80), "calib")


def test_a_single_stack_pod_cannot_send_the_other_family(node: SimNode) -> None:
    """Unnumbered to the loopback enables both families on an IPv4-only pod: strict uRPF for
    IPv6 too (no IPv6 route leads to the pod, so all its IPv6 is dropped)."""
    st = allow_all_state((B, "calib", B_IP))
    board = StatusBoard()
    node.add_pod("calib", [B_IP], identity=B)
    apply(node, st, board)  # the dataplane's first full apply is over
    node.add_pod("calia", [A_IP], identity=A)
    st.update_workload_endpoint(_open_endpoint(A, "calia", f"{A_IP}/32"))
    apply(node, st, board)
    assert board.health(A)[0] == Health.UP
    assert node.verdict(Packet.tcp(A_IP, OUTSIDE, 80), "calia")[0] is True
    assert _denied_by_urpf(node, Packet.tcp("fd00::99", "2001:db8::1", 80), "calia")


def test_a_restarted_dataplane_repairs_urpf_on_an_interface_on_a_reused_index(node: SimNode) -> None:
    """An interface made elsewhere (bound by name) on a deleted pod's index: VPP's table says
    strict, the interface has no check; the restarted dataplane's first apply turns it on."""
    node.add_pod("calib", [B_IP], identity=B)
    pods = pods_of(node)
    pods.add(request(A, "calia", A_IP))
    sw = pods.pods()["calia"]
    pods.delete("/var/run/netns/calia", "eth0")
    c = node.client
    made = int(
        c.call("tap_create_v3", id=U32_MAX, use_random_mac=True, tap_flags=16, tag="calix").sw_if_index
    )
    assert made == sw
    c.call("sw_interface_set_unnumbered", sw_if_index=pods.loopback, unnumbered_sw_if_index=sw, is_add=True)
    c.call("sw_interface_set_flags", sw_if_index=sw, flags=1)
    c.call("ip_route_add_del", is_add=True, route=_host_route(A_IP, sw))
    _register(node, "calix", sw)
    node.dataplane = node.new_dataplane()
    st, board = allow_all_state((A, "calix", A_IP)), StatusBoard()
    apply(node, st, board)
    assert board.health(A)[0] == Health.UP
    assert node.verdict(Packet.tcp(A_IP, OUTSIDE, 80), "calix")[0] is True
    assert _denied_by_urpf(node, Packet.tcp("10.9.9.9", OUTSIDE, 80), "calix")


def _register(node: SimNode, name: str, sw: int) -> None:
    """Let `node.verdict` send from a pod made without `node.add_pod`."""
    node.pods[name] = Pod(name, sw, ())


def _host_route(addr: str, sw: int) -> dict[str, Any]:
    net = ipaddress.ip_network(addr)
    return {
        "table_id": 0,
        "prefix": net,
        "paths": [{"sw_if_index": sw, "proto": 0 if net.version == 4 else 1}],
    }


class NoUrpf:
    """The driver's client on a VPP without the urpf plugin."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def supports(self, feature: str) -> bool:
        return feature != "urpf" and bool(self._client.supports(feature))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_without_the_urpf_plugin_the_missing_source_check_is_an_error_in_the_log(node: SimNode) -> None:
    client = NoUrpf(node.client)
    with structlog.testing.capture_logs() as logs:
        pods = PodInterfaces(lambda: client, node.config, notifier=node.dataplane)
        pods.add(request(A, "calia", A_IP))
        pods.add(request(B, "calib", B_IP))
        dataplane = VppDataplane(lambda _cfg: client, backend=node.dataplane.backend, config=node.config)
        dataplane.connect()
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["event"] for e in errors] == ["pod_source_addresses_unchecked", "urpf_plugin_missing"]
    assert all(e["plugin"] == "urpf_plugin.so" for e in errors)
    assert "any source address" in errors[0]["detail"] and "any source address" in errors[1]["detail"]
    assert node.server.state.interfaces.get(pods.pods()["calia"]).urpf == {}  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------- the CNI reply's MAC


def test_the_reply_mac_is_one_the_plugin_parses_also_after_a_driver_restart(node: SimNode) -> None:
    req = request(A, "calia", A_IP)
    assert pods_of(node).add(req).container_mac == TUN_CONTAINER_MAC == "02:00:00:00:00:00"
    assert is_go_mac(TUN_CONTAINER_MAC)
    node.dataplane = node.new_dataplane()
    assert pods_of(node).add(req).container_mac == TUN_CONTAINER_MAC  # learnt from the tag


def test_a_veth_pods_mac_is_read_again_after_a_driver_restart() -> None:
    with SimNode(backend="acl", vpp_state=VppState(vhost_net=False)) as node:
        req = request(A, "calia", A_IP)
        first = PodInterfaces(lambda: node.client, node.config, notifier=node.dataplane, links=FakeLinks())
        assert first.add(req).container_mac == "02:00:00:00:00:01"
        links = FakeLinks()
        again = PodInterfaces(lambda: node.client, node.config, notifier=node.dataplane, links=links)
        assert again.add(req).container_mac == "02:00:00:00:00:01"
        assert links.calls == [("create_veth", "calia", Config().vpp_pod_mtu)]  # checked again, reused
        assert not node.server.calls.get("af_packet_delete")


# ---------------------------------------------------------------------------------- veth pods


def _open_state(*eps: WorkloadEndpoint) -> DesiredState:
    st = allow_all_state()
    for ep in eps:
        st.update_workload_endpoint(ep)
    return st


def test_ipv6_reaches_a_veth_pod_through_its_ipv6_link() -> None:
    """Unnumbered enables IPv6 forwarding only: VPP resolves the pod's IPv6 address (neighbour
    discovery) only with the IPv6 link enabled, whose link-local address (from the gateway MAC)
    is the gateway the pod routes to."""
    with SimNode(backend="acl", vpp_state=VppState(vhost_net=False)) as node:
        pods = PodInterfaces(lambda: node.client, node.config, notifier=node.dataplane, links=FakeLinks())
        pods.add(request(A, "calia", A_IP, A_IP6))
        _register(node, "calia", pods.pods()["calia"])
        board = StatusBoard()
        apply(node, _open_state(_open_endpoint(A, "calia", f"{A_IP}/32", f"{A_IP6}/128")), board)
        assert board.health(A)[0] == Health.UP
        vpp = node.server.state
        itf = vpp.interfaces.get(pods.pods()["calia"])
        assert itf is not None and vpp.ip6_link_local(itf) == GATEWAY_V6
        allowed, trace = node.verdict(Packet.tcp("2001:db8::7", A_IP6, 80))
        assert allowed, trace
        assert node.verdict(Packet.tcp(A_IP6, "2001:db8::7", 80), "calia")[0] is True
        assert node.verdict(Packet.tcp(OUTSIDE, A_IP, 80))[0] is True


@pytest.mark.parametrize("leftover", ["untagged", "earlier sandbox", "this pod's", "not a pod"])
def test_an_af_packet_vpp_already_has_for_the_host_name(leftover: str) -> None:
    """VPP answers -79 with the index of the af_packet it has for the host name."""
    with SimNode(backend="acl", vpp_state=VppState(vhost_net=False)) as node:
        pods = recorded_pods(node, FakeLinks())
        pods.add(request(B, "calib", B_IP))  # the pods' setup exists
        req = request(A, "calia", A_IP)
        c = node.client
        if leftover == "earlier sandbox":
            pods.add(request(A, "calia", A_IP, netns="/var/run/netns/old"))
            stale = pods.pods()["calia"]
        else:
            stale = int(
                c.call(
                    "af_packet_create_v3", mode=1, use_random_hw_addr=False, hw_addr="ee:ee:ee:ee:ee:ee",
                    host_if_name="calia",
                ).sw_if_index
            )  # fmt: skip
            tag = {
                "untagged": "",
                "this pod's": str(
                    PodTag(identity_key("k8s", "ns/a", "eth0"), netns_key(req.netns, "eth0"), "calia")
                ),
                "not a pod": "someone-elses",
            }[leftover]
            if tag:
                c.call("sw_interface_tag_add_del", is_add=True, sw_if_index=stale, tag=tag)
        if leftover == "not a pod":
            with pytest.raises(PodError, match="not a pod of this driver"):
                pods.add(req)
            assert node.server.state.interfaces.get(stale).tag == "someone-elses"  # type: ignore[union-attr]
            return
        assert pods.add(req).container_mac == "02:00:00:00:00:01"
        vpp = node.server.state
        found = [
            i
            for _, i in vpp.interfaces.items()
            if i.kind == "af_packet" and i.info["host_if_name"] == "calia"
        ]
        assert len(found) == 1
        itf = found[0]
        tag_now = parse_pod_tag(itf.tag)
        assert tag_now is not None and tag_now.netns == netns_key(req.netns, "eth0")
        assert itf.admin_up and acl_tags(node, itf.sw_if_index) == ([DENY_ALL_TAG], [DENY_ALL_TAG])
        assert host_routes(node, itf.sw_if_index) == {A_IP}
        assert pods.pods() == {"calib": pods.pods()["calib"], "calia": itf.sw_if_index}
        record = json.loads((Path(node.state_dir) / "pods.json").read_text())
        assert sorted(p["netns"] for p in record["pods"].values()) == [req.netns, "/var/run/netns/calib"]


# ---------------------------------------------------------------------------------- repeated ADDs, DELs


def test_a_half_made_pod_found_after_a_driver_restart_is_completed_by_the_repeated_add(node: SimNode) -> None:
    """tap_create_v3 tags the tap itself: a driver stopped right after it leaves a tagged tap
    with no ACL, no uRPF, admin down and no routes. The plugin's retry completes it."""
    req = request(A, "calia", A_IP, A_IP6)
    tag = PodTag(identity_key("k8s", "ns/a", "eth0"), netns_key(req.netns, "eth0"), "calia")
    node.add_pod("calib", [B_IP], identity=B)  # the pods' loopback exists
    sw = int(
        node.client.call(
            "tap_create_v3", id=U32_MAX, use_random_mac=True, tap_flags=16, host_namespace_set=True,
            host_namespace=req.netns, host_if_name_set=True, host_if_name="eth0", tag=str(tag),
        ).sw_if_index
    )  # fmt: skip
    node.dataplane = node.new_dataplane()  # the restarted driver
    pods = pods_of(node)
    assert pods.add(req).container_mac == TUN_CONTAINER_MAC
    assert pods.pods()["calia"] == sw
    itf = node.server.state.interfaces.get(sw)
    assert itf is not None and itf.admin_up and itf.unnumbered_to == pods.loopback
    assert itf.urpf == {(True, 0): 2, (True, 1): 2}
    assert acl_tags(node, sw) == ([DENY_ALL_TAG], [DENY_ALL_TAG])
    assert host_routes(node, sw) == {A_IP, A_IP6}
    st, board = allow_all_state((A, "calia", A_IP)), StatusBoard()
    apply(node, st, board)
    assert board.health(A)[0] == Health.UP
    assert node.verdict(Packet.tcp(OUTSIDE, A_IP, 80))[0] is True


def test_a_repeated_add_after_a_restart_leaves_what_the_dataplane_programmed(node: SimNode) -> None:
    """The repeated ADD of a pod learnt from its tag leaves a policed interface's ACLs and uRPF to
    the dataplane (here uRPF is off: the endpoint may spoof, its program checks sources)."""
    cfg = replace(node.config, workload_source_spoofing="Any")
    node.dataplane.configure(cfg)
    ep = replace(
        _open_endpoint(A, "calia", f"{A_IP}/32"),
        allow_spoofed_source_prefixes=(ipaddress.ip_network("10.7.0.0/16"),),
    )
    req = request(A, "calia", A_IP)
    pods_of(node).add(req)
    apply(node, _open_state(ep), StatusBoard())
    spoofed = Packet.tcp("10.7.0.9", OUTSIDE, 80)
    node.dataplane = node.new_dataplane()  # a restarted driver
    node.dataplane.configure(cfg)
    board = StatusBoard()
    apply(node, _open_state(ep), board)
    assert board.health(A)[0] == Health.UP
    pods = pods_of(node)
    pods.add(req)  # the plugin's retry
    sw = pods.pods()["calia"]
    _register(node, "calia", sw)
    itf = node.server.state.interfaces.get(sw)
    assert itf is not None and itf.urpf == {}
    assert acl_tags(node, sw)[0] != [DENY_ALL_TAG]
    assert node.verdict(spoofed, "calia")[0] is True
    assert node.verdict(Packet.tcp("10.6.0.9", OUTSIDE, 80), "calia")[0] is False


def test_a_pods_routes_go_even_when_its_interface_went_first(node: SimNode) -> None:
    """A delete naming the gone interface in its path is refused by VPP (-54); the driver deletes
    routes by prefix."""
    pods = pods_of(node)
    req = request(A, "calia", A_IP, A_IP6)
    pods.add(req)
    sw = pods.pods()["calia"]
    node.client.call("tap_delete_v2", sw_if_index=sw)  # gone behind the driver's back
    pods.delete(req.netns, "eth0")
    vpp = node.server.state
    for addr in (A_IP, A_IP6):
        net = ipaddress.ip_network(addr)
        table = vpp.table(net.version == 6, 0)
        assert table is not None and net not in table.routes
    assert not node.server.errors


def test_a_del_without_netns_removes_the_pods_whose_namespace_is_gone(node: SimNode) -> None:
    tmp_path = Path(node.state_dir).parent
    live = tmp_path / "netns-b"
    live.write_text("")
    links = FakeLinks()
    pods = recorded_pods(node, links)
    gone = request(A, "calia", A_IP, netns=str(tmp_path / "netns-a"))
    (tmp_path / "netns-a").write_text("")
    pods.add(gone)
    pods.add(request(B, "calib", B_IP, netns=str(live)))
    sw = pods.pods()["calia"]
    (tmp_path / "netns-a").unlink()  # the runtime removed the pod's namespace
    pods.delete("", "eth0")
    assert set(pods.pods()) == {"calib"}
    assert node.server.state.interfaces.get(sw) is None
    assert host_routes(node, sw) == set()
    record = json.loads((Path(node.state_dir) / "pods.json").read_text())
    assert [p["host_interface_name"] for p in record["pods"].values()] == ["calib"]
    pods.delete("", "eth0")  # repeated: nothing more to do
    assert set(pods.pods()) == {"calib"}
