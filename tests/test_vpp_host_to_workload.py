"""Host -> local workload traffic in VPP (both policy backends, the simulator over its socket).

Felix does not police what the host sends to its local workloads (filter OUTPUT returns for
workload interfaces), so kubelet's probes reach a pod whatever its ingress policy says; the
oracle allows it (`policy.verdict`). The driver's ingress programs start by allowing this
node's own addresses (`policy.program.host_to_workload`)."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address, ip_network
from typing import Any

import pytest

from calico_vpp_driver.config import Config
from calico_vpp_driver.felix.status import Health, StatusBoard
from calico_vpp_driver.model.state import DesiredState
from calico_vpp_driver.model.types import HostMetadata, Profile, WorkloadEndpoint, WorkloadEndpointID
from calico_vpp_driver.policy.verdict import LOCAL_HOST, Packet, connection_verdict
from calico_vpp_driver.sim.node import SimNode
from calico_vpp_driver.sim.packet import evaluate

NODE = "node-1"
POD = WorkloadEndpointID("k8s", "ns/a", "eth0")


@pytest.fixture(params=["npol", "acl"])
def node(request: Any) -> Iterator[SimNode]:
    n = SimNode(backend=request.param, config=Config(felix_hostname=NODE))
    yield n
    n.close()


def state(v4: str, v6: str) -> DesiredState:
    st = DesiredState()
    st.update_profile(Profile("deny", (), ()))  # no rules: ingress and egress denied
    st.update_host_metadata("v4v6", HostMetadata(NODE, ipv4_addr=IPv4Address(v4), ipv6_addr=IPv6Address(v6)))
    st.update_workload_endpoint(
        WorkloadEndpoint(
            POD,
            name="a",
            profile_ids=("deny",),
            ipv4_nets=(ip_network("10.65.1.10/32"),),
            ipv6_nets=(ip_network("fd00:65:1::10/128"),),
        )
    )
    st.mark_in_sync()
    return st


def send(node: SimNode, src: str, dst: str) -> tuple[str, list[str]]:
    with node.server.lock:
        return evaluate(
            node.server.state,
            {"src": src, "dst": dst, "proto": "tcp", "sport": 40000, "dport": 8080},
            node.uplink,
            use_sessions=False,
        )


def test_the_host_reaches_a_pod_whose_ingress_denies_everything(node: SimNode) -> None:
    node.add_pod("a", ["10.65.1.10", "fd00:65:1::10"])
    st = state("172.31.0.1", "fd10::1")
    board = StatusBoard()
    node.dataplane.apply(st, st.take_dirty(), board)
    assert board.health(POD)[0] is Health.UP
    cfg = Config(felix_hostname=NODE)
    for src, dst in (("172.31.0.1", "10.65.1.10"), ("fd10::1", "fd00:65:1::10")):
        oracle = connection_verdict(st, cfg, LOCAL_HOST, POD, Packet(src, dst, 6, 40000, 8080))  # type: ignore[arg-type]
        assert oracle.allow
        verdict, trace = send(node, src, dst)
        assert verdict == "allow", trace
    for src, dst in (("172.31.0.9", "10.65.1.10"), ("fd10::9", "fd00:65:1::10")):  # not the node's
        verdict, trace = send(node, src, dst)
        assert verdict == "deny", trace


def test_a_new_node_address_moves_the_allowance(node: SimNode) -> None:
    node.add_pod("a", ["10.65.1.10", "fd00:65:1::10"])
    st = state("172.31.0.1", "fd10::1")
    node.dataplane.apply(st, st.take_dirty(), StatusBoard())
    st.update_host_metadata(
        "v4v6", HostMetadata(NODE, ipv4_addr=IPv4Address("172.31.0.7"), ipv6_addr=IPv6Address("fd10::1"))
    )
    node.dataplane.apply(st, st.take_dirty(), StatusBoard())
    assert send(node, "172.31.0.7", "10.65.1.10")[0] == "allow"
    assert send(node, "172.31.0.1", "10.65.1.10")[0] == "deny"
    assert not node.server.errors
