"""End to end: the driver as Felix spawns it (fd 3/4), its CNI gRPC server on a unix socket
driven by a real gRPC client as the Calico CNI plugin drives it, and the VPP simulator behind
its real socket. Pods are created through CNI ADD, bound to Felix's endpoints in both orders,
reported "up" to Felix, policed as Felix says, and removed through CNI DEL; a restarted driver
takes its pods over."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from ipaddress import ip_address, ip_network

import grpc
import pytest
from felixsim import FelixSim, policy_id, tcp_rule, tier, wep_id, wep_key

from calico_vpp_driver.cni import cnibackend_pb2 as cpb
from calico_vpp_driver.cni.types import is_go_mac
from calico_vpp_driver.felix import felixbackend_pb2 as pb
from calico_vpp_driver.sim.packet import Packet, evaluate
from calico_vpp_driver.sim.server import SimServer
from calico_vpp_driver.vpp.pods import parse_pod_tag

# What the stand-in `ip -j -d link show` prints: the two ends of a pod's veth pair.
POD_END_MAC = "02:00:00:aa:bb:01"
POD_END = json.dumps(
    [
        {
            "ifindex": 2,
            "link_index": 1,
            "ifname": "eth0",
            "address": POD_END_MAC,
            "linkinfo": {"info_kind": "veth"},
        }
    ]
)
HOST_END = json.dumps(
    [
        {
            "ifindex": 1,
            "link_index": 2,
            "ifname": "cali",
            "address": "02:00:00:aa:bb:02",
            "linkinfo": {"info_kind": "veth"},
        }
    ]
)


class Cluster:
    """One node: the simulator, and the driver with its CNI server (restartable)."""

    def __init__(self, tmp: str) -> None:
        self.tmp = tmp
        self.sim = SimServer(os.path.join(tmp, "api.sock")).start()
        self.cni_socket = os.path.join(tmp, "cni", "cni.sock")
        self.felix: FelixSim | None = None
        # The simulated VPP makes no Linux namespaces: `ip` and `nsenter` are stand-ins that
        # record what the driver ran in the pods' namespaces (and succeed). `nsenter` runs the
        # `ip` it is given (nothing else); `ip -j` shows a veth pair eth0 <-> any host name.
        self.bin = os.path.join(tmp, "bin")
        self.commands = os.path.join(tmp, "commands.log")
        os.makedirs(self.bin)
        scripts = {
            "nsenter": f'echo "nsenter $*" >> {self.commands}\n'
            'if [ "$2" = "ip" ]; then shift; exec "$@"; fi\n',
            "ip": f'echo "ip $*" >> {self.commands}\n'
            'case "$*" in\n'
            f"  '-j -d link show dev eth0') echo '{POD_END}' ;;\n"
            f"  '-j -d link show dev '*) echo '{HOST_END}' ;;\n"
            "  '-j addr show dev '*) echo '[]' ;;\n"
            "esac\n",
        }
        for tool, script in scripts.items():
            path = os.path.join(self.bin, tool)
            with open(path, "w") as f:
                f.write("#!/bin/sh\n" + script)
            os.chmod(path, 0o755)

    def ran(self) -> list[str]:
        try:
            with open(self.commands) as f:
                return [line.strip() for line in f]
        except FileNotFoundError:
            return []

    def start_driver(self, pod_interface: str = "tap") -> FelixSim:
        self.felix = FelixSim(
            extra_env={
                "CALICO_VPP_API_SOCKET": self.sim.socket_path,
                "CALICO_VPP_CNI_SOCKET": self.cni_socket,
                "CALICO_VPP_STATE_DIR": os.path.join(self.tmp, "state"),
                "CALICO_VPP_POD_INTERFACE": pod_interface,
                "PATH": self.bin + os.pathsep + os.environ.get("PATH", ""),
            }
        ).start()
        self.felix.send_config({"FelixHostname": "node-1"})
        deadline = time.monotonic() + 20
        while not os.path.exists(self.cni_socket) and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.felix

    def stop_driver(self) -> None:
        if self.felix is not None:
            self.felix.close_input()
            self.felix.wait_exit(10)
            self.felix.stop()
            self.felix = None

    def close(self) -> None:
        self.stop_driver()
        self.sim.stop()

    # ------------------------------------------------------------------ CNI plugin side

    def _call(self, method: str, request: object, reply_type: type) -> object:
        with grpc.insecure_channel(f"unix:{self.cni_socket}") as channel:
            fn = channel.unary_unary(
                f"/cni.CniDataplane/{method}",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=reply_type.FromString,
            )
            return fn(request, timeout=10)

    def netns(self, pod: str) -> str:
        """A network namespace path that exists (a file) for the pods that need one."""
        path = os.path.join(self.tmp, f"netns-{pod}")
        with open(path, "w"):
            pass
        return path

    def cni_add(self, pod: str, ip: str, host_name: str, netns: str | None = None) -> cpb.AddReply:
        req = cpb.AddRequest(
            interface_name="eth0",
            netns=netns or f"/var/run/netns/cni-{pod}",
            desired_host_interface_name=host_name,
            settings=cpb.ContainerSettings(mtu=1410),
            container_ips=[cpb.IPConfig(address=f"{ip}/32", gateway="<nil>")],
            container_routes=["0.0.0.0/0"],
            workload=cpb.WorkloadIDs(
                name=f"node--1-k8s-{pod}-eth0",
                namespace="default",
                endpoint="eth0",
                node="node-1",
                orchestrator="k8s",
                pod=pod,
            ),
        )
        reply = self._call("Add", req, cpb.AddReply)
        assert isinstance(reply, cpb.AddReply)
        return reply

    def cni_del(self, pod: str, netns: str | None = None) -> cpb.DelReply:
        """A DEL; `netns=""` is one without a netns (the runtime had removed it)."""
        ns = f"/var/run/netns/cni-{pod}" if netns is None else netns
        reply = self._call("Del", cpb.DelRequest(interface_name="eth0", netns=ns), cpb.DelReply)
        assert isinstance(reply, cpb.DelReply)
        return reply

    # ------------------------------------------------------------------ VPP side

    def pod_sw(self, host_name: str) -> int | None:
        with self.sim.lock:
            for sw, itf in self.sim.state.interfaces.items():
                tag = parse_pod_tag(itf.tag)
                if tag is not None and tag.name == host_name:
                    return sw
        return None

    def allowed(self, src: str, dst: str, dport: int, src_name: str) -> bool:
        sw = self.pod_sw(src_name)
        assert sw is not None
        with self.sim.lock:
            verdict, _trace = evaluate(
                self.sim.state,
                Packet(src=ip_address(src), dst=ip_address(dst), proto=6, sport=40000, dport=dport),
                sw,
                use_sessions=False,
            )
        return verdict == "allow"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with tempfile.TemporaryDirectory(prefix="cvd-cni-e2e-") as tmp:
        c = Cluster(tmp)
        try:
            yield c
        finally:
            c.close()


A_IP, B_IP = "10.65.0.1", "10.65.0.2"
WEB = policy_id("web", "NetworkPolicy", "default")


def endpoint(name: str, ip: str, *tiers: pb.TierInfo) -> pb.WorkloadEndpoint:
    return pb.WorkloadEndpoint(
        state="active", name=name, profile_ids=["kns.default"], ipv4_nets=[f"{ip}/32"], tiers=list(tiers)
    )


def send_base(felix: FelixSim) -> None:
    felix.send(
        active_profile_update=pb.ActiveProfileUpdate(
            id=pb.ProfileID(name="kns.default"),
            profile=pb.Profile(
                inbound_rules=[pb.Rule(action="allow")], outbound_rules=[pb.Rule(action="allow")]
            ),
        )
    )
    felix.send(
        active_policy_update=pb.ActivePolicyUpdate(
            id=WEB, policy=pb.Policy(tier="default", inbound_rules=[tcp_rule("allow", 80)])
        )
    )


def test_pods_through_cni_bound_in_both_orders_policed_and_deleted(cluster: Cluster) -> None:
    felix = cluster.start_driver()
    send_base(felix)
    # Pod a: CNI first, then Felix's endpoint. Pod b: Felix's endpoint first.
    reply = cluster.cni_add("a", A_IP, "calia0000000000")
    assert reply.successful, reply.error_message
    assert reply.host_interface_name == "calia0000000000"
    # VPP made the TUN interface in the pod's namespace; the driver routed the pod through it.
    assert "nsenter --net=/var/run/netns/cni-a ip route replace 0.0.0.0/0 dev eth0" in cluster.ran()
    felix.send(in_sync=pb.InSync())
    a, b = wep_id("a"), wep_id("b")
    felix.send(
        workload_endpoint_update=pb.WorkloadEndpointUpdate(id=a, endpoint=endpoint("calia0000000000", A_IP))
    )
    felix.send(
        workload_endpoint_update=pb.WorkloadEndpointUpdate(
            id=b, endpoint=endpoint("calib0000000000", B_IP, tier(WEB))
        )
    )
    felix.wait_wep_statuses({wep_key(a): "up", wep_key(b): "down"}, timeout=20)
    reply = cluster.cni_add("b", B_IP, "calib0000000000")
    assert reply.successful, reply.error_message
    felix.wait_wep_statuses({wep_key(b): "up"}, timeout=10)
    # Policy as Felix says: b admits TCP 80 only.
    assert cluster.allowed(A_IP, B_IP, 80, "calia0000000000") is True
    assert cluster.allowed(A_IP, B_IP, 22, "calia0000000000") is False
    # Idempotent ADD: the same interface.
    sw_b = cluster.pod_sw("calib0000000000")
    assert cluster.cni_add("b", B_IP, "calib0000000000").successful
    assert cluster.pod_sw("calib0000000000") == sw_b
    # DEL: the interface goes, the endpoint is "down" until Felix removes it.
    assert cluster.cni_del("b").successful
    assert cluster.pod_sw("calib0000000000") is None
    felix.wait_wep_statuses({wep_key(b): "down"}, timeout=10)
    assert cluster.cni_del("b").successful  # repeated DEL


def test_bad_request_is_refused_with_a_message_naming_the_pod(cluster: Cluster) -> None:
    cluster.start_driver()
    reply = cluster.cni_add("a", "10.65.0.300", "calia0000000000")
    assert not reply.successful
    assert "a" in reply.error_message and "10.65.0.300" in reply.error_message


def test_a_restarted_driver_keeps_its_pods(cluster: Cluster) -> None:
    felix = cluster.start_driver()
    send_base(felix)
    assert cluster.cni_add("a", A_IP, "calia0000000000").successful
    felix.send(in_sync=pb.InSync())
    a = wep_id("a")
    felix.send(
        workload_endpoint_update=pb.WorkloadEndpointUpdate(id=a, endpoint=endpoint("calia0000000000", A_IP))
    )
    felix.wait_wep_statuses({wep_key(a): "up"}, timeout=20)
    sw = cluster.pod_sw("calia0000000000")
    cluster.stop_driver()
    felix = cluster.start_driver()
    send_base(felix)
    felix.send(
        workload_endpoint_update=pb.WorkloadEndpointUpdate(id=a, endpoint=endpoint("calia0000000000", A_IP))
    )
    felix.send(in_sync=pb.InSync())
    felix.wait_wep_statuses({wep_key(a): "up"}, timeout=20)
    assert cluster.pod_sw("calia0000000000") == sw  # the same interface, found by its tag
    assert cluster.cni_del("a").successful
    assert cluster.pod_sw("calia0000000000") is None


@pytest.mark.parametrize("pod_interface", ["tap", "veth"])
def test_the_add_reply_carries_a_mac_the_plugin_parses_also_after_a_driver_restart(
    cluster: Cluster, pod_interface: str
) -> None:
    """Calico's plugin fails the ADD unless Go's net.ParseMAC reads the reply's MAC: a TUN pod
    answers Calico/VPP's placeholder, a veth pod its pod end's MAC, also when a restarted driver
    answers the plugin's retry for a pod it learnt from VPP's tags."""
    expected = "02:00:00:00:00:00" if pod_interface == "tap" else POD_END_MAC
    cluster.start_driver(pod_interface)
    netns = cluster.netns("a")
    reply = cluster.cni_add("a", A_IP, "calia0000000000", netns)
    assert reply.successful, reply.error_message
    assert reply.container_mac == expected and is_go_mac(reply.container_mac)
    sw = cluster.pod_sw("calia0000000000")
    cluster.stop_driver()
    cluster.start_driver(pod_interface)
    reply = cluster.cni_add("a", A_IP, "calia0000000000", netns)  # the plugin's retry
    assert reply.successful, reply.error_message
    assert reply.container_mac == expected
    assert cluster.pod_sw("calia0000000000") == sw
    with cluster.sim.lock:
        kind = cluster.sim.state.interfaces.get(sw).kind  # type: ignore[union-attr]
    assert kind == ("tap" if pod_interface == "tap" else "af_packet")


def test_a_del_without_netns_removes_the_pod_whose_namespace_is_gone(cluster: Cluster) -> None:
    """Calico's plugin passes the runtime's empty netns on: the DEL names only "eth0"."""
    cluster.start_driver()
    gone = cluster.netns("a")
    assert cluster.cni_add("a", A_IP, "calia0000000000", gone).successful
    assert cluster.cni_add("b", B_IP, "calib0000000000", cluster.netns("b")).successful
    os.remove(gone)  # the runtime removed pod a's namespace, then asks for the DEL
    assert cluster.cni_del("a", netns="").successful
    assert cluster.pod_sw("calia0000000000") is None
    assert cluster.pod_sw("calib0000000000") is not None
    with open(os.path.join(cluster.tmp, "state", "pods.json")) as f:
        recorded = json.load(f)["pods"]
    assert [p["host_interface_name"] for p in recorded.values()] == ["calib0000000000"]
    with cluster.sim.lock:
        routes = cluster.sim.state.table(False, 0).routes  # type: ignore[union-attr]
        assert ip_network(f"{A_IP}/32") not in routes and ip_network(f"{B_IP}/32") in routes
