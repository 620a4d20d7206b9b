"""Issue 6 on a real VPP: two pods created through CNI ADD reach each other through VPP, and a
deny policy that arrives later stops new flows to one of them.

Preconditions; without any of them the test is skipped and says which one is missing:

* ``VPP_API_SOCKET`` names the API socket of a running VPP (``socksvr { socket-name ... }``)
  with the acl and af_packet plugins (npol and cnat too for the npol backend, tap for tap pods);
* the test runs as root with ``ip``, ``nsenter`` and ``ping`` on PATH: it creates two network
  namespaces, and the driver runs ``ip`` and ``nsenter`` in them;
* VPP shares the test's network and mount namespaces: it opens ``/var/run/netns/<name>`` to make
  a pod's tap, and attaches to the host end of a pod's veth pair by its name.

::

    sudo VPP_API_SOCKET=/run/vpp/api.sock .venv/bin/python -m pytest tests/test_vpp_real_pods.py

The driver runs as Felix spawns it (``tests/felixsim.FelixSim``), with its CNI server on a
socket in a temporary directory. Pods get TUN taps where VPP can make them (``/dev/vhost-net``),
veth pairs attached with af_packet elsewhere (``CALICO_VPP_POD_INTERFACE``, default ``auto``;
``CALICO_VPP_POLICY_BACKEND`` is passed on too). Everything the test made is removed at the
end, failed or not; the driver's shared objects stay in VPP (the pods' loopback, the deny-all
ACL, the instance sentinel), as a restarted driver would find them.

The probes are chosen around VPP's per-flow verdict caches:

* the acl plugin judges ICMP with both backends (npol hands it over), and its reflexive sessions
  key ICMP by addresses, type and code, not by the echo identifier (``acl/public_inlines.h``,
  ``acl/session_inlines.h``), idle for 600 s, and are not re-checked when an ACL changes
  (``reclassify sessions`` is off by default). Once one echo request from A has passed B's
  interface, every later ping from A to B passes it too, deny or not. So before the deny only
  B pings A (request and reply both cross VPP), and A's first echo request to B comes after
  the deny;
* npol's verdicts are cached in cnat sessions, per 5-tuple: every TCP probe uses a new source
  port, so each one is a new flow for cnat, npol and the acl plugin alike.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import grpc
import pytest
from felixsim import FelixSim, policy_id, tier, wep_id, wep_key

from calico_vpp_driver.cni import cnibackend_pb2 as cpb
from calico_vpp_driver.cni.links import LinuxPodLinks
from calico_vpp_driver.config import Config
from calico_vpp_driver.felix import felixbackend_pb2 as pb
from calico_vpp_driver.vpp.client import VppClient
from calico_vpp_driver.vpp.pods import PodInterfaces

SOCKET = os.environ.get("VPP_API_SOCKET", "")
TOOLS = ("ip", "nsenter", "ping")


def _vpp_listening(path: str) -> bool:
    """Whether something accepts connections on the unix socket `path` (a stale socket file of
    a VPP that is gone does not)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2.0)
        try:
            s.connect(path)
        except OSError:
            return False
    return True


_missing_tools = [t for t in TOOLS if shutil.which(t) is None]

pytestmark = [
    pytest.mark.skipif(not SOCKET, reason="VPP_API_SOCKET is not set (no real VPP to test against)"),
    pytest.mark.skipif(bool(SOCKET) and not _vpp_listening(SOCKET), reason=f"no VPP listening on {SOCKET}"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: it creates network namespaces"),
    pytest.mark.skipif(bool(_missing_tools), reason=f"needs {', '.join(_missing_tools)} on PATH"),
    pytest.mark.filterwarnings("ignore:open_text is deprecated:DeprecationWarning"),
]

# A range no cluster is expected to use, so the pods' /32 routes cannot shadow real ones.
A_IP, B_IP = "10.213.0.1", "10.213.0.2"
HOST_A, HOST_B = "cvdtest-pod-a", "cvdtest-pod-b"  # Felix's endpoint names; veth host ends
PROFILE = "kns.cvd-test"
DENY_B = policy_id("cvd-test-deny-ingress", "GlobalNetworkPolicy")
TIER = "cvd-test"
TCP_PORT = 18080
PROBE_TIMEOUT_S = 2.0  # room for one SYN retransmission (Linux's first RTO is 1 s)

# Run inside a pod's namespace with `python -I -S -c`: accept and close connections forever.
TCP_SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(64)
print("listening", flush=True)
while True:
    s.accept()[0].close()
"""
# One TCP connection from a given source port: exit 0 when it is established.
TCP_CLIENT = """
import socket, sys
dst, port, sport, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", sport))
s.settimeout(timeout)
try:
    s.connect((dst, port))
except OSError as e:
    sys.exit(f"no connection to {dst}:{port} from port {sport}: {e}")
s.close()
"""


# --------------------------------------------------------------------------- Linux side


def _run(argv: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def _in_ns(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def _pings(ns: str, dst: str) -> bool:
    """A new ping process (so a new ICMP identifier) in `ns` gets at least one reply from `dst`."""
    argv = _in_ns(ns, "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", str(int(PROBE_TIMEOUT_S)), dst)
    return _run(argv).returncode == 0


_source_ports = itertools.count(41000)


def _connects(ns: str, dst: str) -> bool:
    """A TCP connection from `ns` to `dst`:TCP_PORT, from a source port never used before."""
    sport = str(next(_source_ports))
    argv = _in_ns(ns, sys.executable, "-I", "-S", "-c", TCP_CLIENT, dst, str(TCP_PORT), sport)
    return _run([*argv, str(PROBE_TIMEOUT_S)]).returncode == 0


def _eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.2)


def _start_tcp_server(ns: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        _in_ns(ns, sys.executable, "-I", "-S", "-c", TCP_SERVER, str(TCP_PORT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "" if it died
    assert line.strip() == "listening", f"TCP server in {ns} did not start: {line!r}"
    return proc


# --------------------------------------------------------------------------- the CNI plugin's side


def _cni(socket_path: str, method: str, request: object, reply_type: type) -> object:
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        call = channel.unary_unary(
            f"/cni.CniDataplane/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=reply_type.FromString,
        )
        return call(request, timeout=30)


def _cni_add(socket_path: str, pod: str, netns: str, ip: str, host_name: str) -> cpb.AddReply:
    request = cpb.AddRequest(
        interface_name="eth0",
        netns=netns,
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
    reply = _cni(socket_path, "Add", request, cpb.AddReply)
    assert isinstance(reply, cpb.AddReply)
    return reply


def _cni_del(socket_path: str, netns: str) -> cpb.DelReply:
    reply = _cni(socket_path, "Del", cpb.DelRequest(interface_name="eth0", netns=netns), cpb.DelReply)
    assert isinstance(reply, cpb.DelReply)
    return reply


def _endpoint(name: str, ip: str, *tiers: pb.TierInfo) -> pb.WorkloadEndpoint:
    return pb.WorkloadEndpoint(
        state="active", name=name, profile_ids=[PROFILE], ipv4_nets=[f"{ip}/32"], tiers=list(tiers)
    )


def _start_driver(tmp: str, cni_socket: str) -> FelixSim:
    """The driver as Felix spawns it, in sync with an allow-all profile, its CNI server up."""
    felix = FelixSim(
        extra_env={
            "CALICO_VPP_API_SOCKET": SOCKET,
            "CALICO_VPP_CNI_SOCKET": cni_socket,
            "CALICO_VPP_STATE_DIR": os.path.join(tmp, "state"),
            "CALICO_VPP_POD_INTERFACE": os.environ.get("CALICO_VPP_POD_INTERFACE", "auto"),
        }
    ).start()
    try:
        felix.send_config({"FelixHostname": "node-1"})
        felix.wait_for(lambda: os.path.exists(cni_socket), 20, "the CNI socket")
        allow = [pb.Rule(action="allow")]
        felix.send(
            active_profile_update=pb.ActiveProfileUpdate(
                id=pb.ProfileID(name=PROFILE), profile=pb.Profile(inbound_rules=allow, outbound_rules=allow)
            )
        )
        felix.send(in_sync=pb.InSync())
    except BaseException:
        felix.stop()
        raise
    return felix


# --------------------------------------------------------------------------- clean-up


def _remove_leftover_pods(netns_paths: list[str]) -> None:
    """Best effort, after a failure: the pods' VPP interfaces and routes (found by their tags, as
    a restarted driver finds them) and their veth pairs."""
    client = VppClient(SOCKET, features=("interfaces", "fib"), connect_timeout=10.0, read_timeout=10.0)
    try:
        client.start()
        pods = PodInterfaces(lambda: client, Config(), links=LinuxPodLinks())
        for path in netns_paths:
            pods.delete(path, "eth0")
    except Exception as exc:
        print(f"could not remove the test pods from VPP: {exc}")
    finally:
        client.close()


# --------------------------------------------------------------------------- the test


def test_pods_reach_each_other_through_vpp_until_a_deny_policy() -> None:
    tag = f"cvdt{os.getpid()}"
    ns_a, ns_b = f"{tag}-a", f"{tag}-b"
    path_a, path_b = f"/var/run/netns/{ns_a}", f"/var/run/netns/{ns_b}"
    a, b = wep_id("pod-a"), wep_id("pod-b")
    made: list[str] = []
    pods_deleted = False
    felix: FelixSim | None = None
    server: subprocess.Popen[str] | None = None
    with tempfile.TemporaryDirectory(prefix="cvd-real-pods-") as tmp:
        cni_socket = os.path.join(tmp, "cni.sock")
        try:
            for ns in (ns_a, ns_b):
                out = _run(["ip", "netns", "add", ns])
                assert out.returncode == 0, f"ip netns add {ns}: {out.stderr}"
                made.append(ns)
                _run(_in_ns(ns, "ip", "link", "set", "lo", "up"))

            felix = _start_driver(tmp, cni_socket)

            # The pods, as the CNI plugin creates them, then Felix's endpoints for them.
            for pod, path, ip, host in (("pod-a", path_a, A_IP, HOST_A), ("pod-b", path_b, B_IP, HOST_B)):
                reply = _cni_add(cni_socket, pod, path, ip, host)
                assert reply.successful, f"CNI ADD of {pod}: {reply.error_message}\n{felix.describe()}"
            felix.send(
                workload_endpoint_update=pb.WorkloadEndpointUpdate(id=a, endpoint=_endpoint(HOST_A, A_IP))
            )
            felix.send(
                workload_endpoint_update=pb.WorkloadEndpointUpdate(id=b, endpoint=_endpoint(HOST_B, B_IP))
            )
            felix.wait_wep_statuses({wep_key(a): "up", wep_key(b): "up"}, timeout=30)
            added = [r for r in felix.logs if r.get("event") == "pod_interface_added"]
            print("pod interfaces:", {r.get("interface"): r.get("kind") for r in added})

            # Allowed: B pings A (no echo request from A to B yet: see the module docstring), and
            # A opens TCP connections to B. The first packets may be lost while VPP resolves the
            # pods' neighbours (veth pods).
            server = _start_tcp_server(ns_b)
            _eventually(lambda: _pings(ns_b, A_IP), 15, f"B ({B_IP}) pings A ({A_IP}) through VPP")
            _eventually(lambda: _connects(ns_a, B_IP), 15, f"A connects to B ({B_IP}:{TCP_PORT}) over TCP")

            # A tier whose only policy denies all ingress to B; B's egress is untouched.
            felix.send(
                active_policy_update=pb.ActivePolicyUpdate(
                    id=DENY_B, policy=pb.Policy(tier=TIER, inbound_rules=[pb.Rule(action="deny")])
                )
            )
            felix.send(
                workload_endpoint_update=pb.WorkloadEndpointUpdate(
                    id=b, endpoint=_endpoint(HOST_B, B_IP, tier(DENY_B, name=TIER))
                )
            )
            # New TCP flows from A to B stop once the policy is in VPP (no status tells when).
            _eventually(lambda: not _connects(ns_a, B_IP), 20, "new TCP connections from A to B are refused")
            # With npol, TCP is npol's and the ACL judging ICMP is set right after it, in the
            # same apply: give it a moment before A's first echo request to B.
            time.sleep(1.0)
            assert not _pings(ns_a, B_IP), "A still pings B after the deny (a new ICMP flow)"
            # B's own flows still work: its egress is allowed and replies come back (stateful).
            assert _pings(ns_b, A_IP), "B no longer pings A, though only B's ingress is denied"
            statuses = felix.wep_statuses()
            assert statuses[wep_key(b)] == "up", (
                f"B is {statuses[wep_key(b)]} after the deny\n{felix.describe()}"
            )

            # Delete the pods as the CNI plugin does, then Felix forgets them.
            for path in (path_a, path_b):
                reply = _cni_del(cni_socket, path)
                assert reply.successful, f"CNI DEL of {path}: {reply.error_message}"
            pods_deleted = True
            felix.wait_wep_statuses({wep_key(a): "down", wep_key(b): "down"}, timeout=15)
            felix.send(workload_endpoint_remove=pb.WorkloadEndpointRemove(id=a))
            felix.send(workload_endpoint_remove=pb.WorkloadEndpointRemove(id=b))
            felix.send(active_policy_remove=pb.ActivePolicyRemove(id=DENY_B))
            felix.send(active_profile_remove=pb.ActiveProfileRemove(id=pb.ProfileID(name=PROFILE)))
            felix.wait_wep_statuses({wep_key(a): None, wep_key(b): None}, timeout=15)
        finally:
            if server is not None:
                server.kill()
                server.wait(5)
            if felix is not None:
                if not pods_deleted and felix.alive() and os.path.exists(cni_socket):
                    for path in (path_a, path_b):
                        with contextlib.suppress(Exception):
                            _cni_del(cni_socket, path)
                felix.close_input()
                felix.wait_exit(10)
                felix.stop()
                if not pods_deleted:
                    _remove_leftover_pods([f"/var/run/netns/{ns}" for ns in made])
            for ns in made:
                _run(["ip", "netns", "del", ns])
            for host in (HOST_A, HOST_B):  # veth host ends, if a namespace outlived its pair
                if _run(["ip", "link", "show", "dev", host]).returncode == 0:
                    _run(["ip", "link", "del", "dev", host])
