"""The CNI gRPC server over a real unix socket, called the way Calico's CNI plugin calls it."""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_interface
from typing import Any

import grpc
import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from calico_vpp_driver.cni import cnibackend_pb2 as pb
from calico_vpp_driver.cni.server import (
    ADD_METHOD,
    DEL_METHOD,
    CniServer,
    CniServerError,
    _socket_path,
    parse_add,
    split_wep_name,
)
from calico_vpp_driver.cni.types import (
    TUN_CONTAINER_MAC,
    PodError,
    PodRequest,
    PodResult,
    WorkloadIdentity,
    is_go_mac,
)

NETNS = "/var/run/netns/cni-1b2c"


class FakeHandler:
    """Records what the server hands over; its behaviour is set per test."""

    def __init__(self) -> None:
        self.added: list[PodRequest] = []
        self.deleted: list[tuple[str, str]] = []
        self.add_error: Exception | None = None
        self.delete_error: Exception | None = None
        self.delay = 0.0
        self.lock = threading.Lock()
        self.running: dict[str, int] = {}
        self.max_running: dict[str, int] = {}

    def _enter(self, key: str) -> None:
        with self.lock:
            self.running[key] = self.running.get(key, 0) + 1
            self.running["*"] = self.running.get("*", 0) + 1
            for k in (key, "*"):
                self.max_running[k] = max(self.max_running.get(k, 0), self.running[k])

    def _leave(self, key: str) -> None:
        with self.lock:
            self.running[key] -= 1
            self.running["*"] -= 1

    def add(self, request: PodRequest) -> PodResult:
        self._enter(request.netns)
        try:
            time.sleep(self.delay)
            with self.lock:
                self.added.append(request)
            if self.add_error is not None:
                raise self.add_error
            return PodResult(
                host_interface_name=request.host_interface_name, container_mac="02:00:00:00:00:01"
            )
        finally:
            self._leave(request.netns)

    def delete(self, netns: str, interface_name: str) -> None:
        self._enter(netns)
        try:
            time.sleep(self.delay)
            with self.lock:
                self.deleted.append((netns, interface_name))
            if self.delete_error is not None:
                raise self.delete_error
        finally:
            self._leave(netns)


@pytest.fixture
def sockdir() -> Iterator[pathlib.Path]:
    # Short on purpose: a unix socket path must fit in 107 bytes (pytest's tmp_path may not).
    d = pathlib.Path(tempfile.mkdtemp(prefix="cni", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def handler() -> FakeHandler:
    return FakeHandler()


@pytest.fixture
def server(sockdir: pathlib.Path, handler: FakeHandler) -> Iterator[CniServer]:
    srv = CniServer("unix://" + str(sockdir / "run" / "cni.sock"), handler).start()
    yield srv
    srv.stop(0)


class Client:
    """What the plugin does: a gRPC channel to unix:<path>, unary calls with a 5 s deadline."""

    def __init__(self, path: str) -> None:
        self.channel = grpc.insecure_channel("unix:" + path)
        self._add = self.channel.unary_unary(
            ADD_METHOD,
            request_serializer=pb.AddRequest.SerializeToString,
            response_deserializer=pb.AddReply.FromString,
        )
        self._del = self.channel.unary_unary(
            DEL_METHOD,
            request_serializer=pb.DelRequest.SerializeToString,
            response_deserializer=pb.DelReply.FromString,
        )

    def add(self, req: pb.AddRequest) -> pb.AddReply:
        reply: pb.AddReply = self._add(req, timeout=5)
        return reply

    def delete(self, req: pb.DelRequest) -> pb.DelReply:
        reply: pb.DelReply = self._del(req, timeout=5)
        return reply


@pytest.fixture
def client(server: CniServer) -> Iterator[Client]:
    c = Client(server.path)
    yield c
    c.channel.close()


def k8s_request(**overrides: Any) -> pb.AddRequest:
    """An AddRequest as grpc_dataplane.go fills it for a Kubernetes pod."""
    fields: dict[str, Any] = {
        "interface_name": "eth0",
        "netns": NETNS,
        "desired_host_interface_name": "cali1234567890a",
        "settings": pb.ContainerSettings(allow_ip_forwarding=False, mtu=1410),
        "container_ips": [pb.IPConfig(address="10.65.0.5/32", gateway="<nil>")],
        "container_routes": ["0.0.0.0/0"],
        "workload": pb.WorkloadIDs(
            name="node1-k8s-nginx--7d9-eth0",
            namespace="default",
            labels={"app": "nginx"},
            annotations={"cni.projectcalico.org/podIP": "10.65.0.5/32"},
            endpoint="eth0",
            node="node1",
            orchestrator="k8s",
            pod="nginx-7d9",
            ports=[pb.Port(name="http", protocol="TCP", port=80)],
        ),
        "dataplane_options": {"type": "grpc", "socket": "unix:///var/run/calico/cni-server.sock"},
    }
    fields.update(overrides)
    return pb.AddRequest(**fields)


# --- over the socket ----------------------------------------------------------------------------


def test_add_converts_every_field(client: Client, handler: FakeHandler) -> None:
    req = k8s_request(
        settings=pb.ContainerSettings(allow_ip_forwarding=True, mtu=1410),
        container_ips=[
            pb.IPConfig(address="10.65.0.5/32", gateway="<nil>"),
            pb.IPConfig(address="fd00:65::5/128", gateway=""),
            pb.IPConfig(address="10.65.0.5/32", gateway="10.65.0.1"),
        ],
        container_routes=["0.0.0.0/0", "::/0", "10.96.0.1/12"],
    )
    reply = client.add(req)
    assert reply.successful, reply.error_message
    assert reply.host_interface_name == "cali1234567890a"
    assert reply.container_mac == "02:00:00:00:00:01"
    assert reply.error_message == ""
    assert handler.added == [
        PodRequest(
            netns=NETNS,
            interface_name="eth0",
            host_interface_name="cali1234567890a",
            identity=WorkloadIdentity(orchestrator="k8s", workload="default/nginx-7d9", endpoint="eth0"),
            addresses=(ip_interface("10.65.0.5/32"), ip_interface("fd00:65::5/128")),
            gateways=(ip_address("10.65.0.1"),),
            routes=(IPv4Network("0.0.0.0/0"), IPv6Network("::/0"), IPv4Network("10.96.0.0/12")),
            mtu=1410,
            allow_ip_forwarding=True,
            options=(("socket", "unix:///var/run/calico/cni-server.sock"), ("type", "grpc")),
        )
    ]


def test_add_ipv6_only(client: Client, handler: FakeHandler) -> None:
    req = k8s_request(
        container_ips=[pb.IPConfig(address="fd00:65::a:5/128", gateway="<nil>")],
        container_routes=["::/0"],
        settings=None,
    )
    with structlog.testing.capture_logs() as logs:
        assert client.add(req).successful
    events = {e["event"]: e for e in logs}
    assert events["cni_add_request"]["addresses"] == ["fd00:65::a:5/128"]
    done = events["cni_add_done"]
    assert done["pod"] == f"pod default/nginx-7d9 (netns {NETNS}, interface eth0)"
    assert done["workload"] == "k8s/default/nginx-7d9/eth0"
    assert done["mac"] == "02:00:00:00:00:01" and 0 <= done["duration_ms"] < 5000
    got = handler.added[0]
    assert got.addresses == (ip_interface("fd00:65::a:5/128"),)
    assert got.routes == (IPv6Network("::/0"),)
    assert got.mtu == 0  # no settings: the driver's configured pod MTU
    assert got.gateways == ()


def test_bad_address_is_refused_with_the_pod_named(client: Client, handler: FakeHandler) -> None:
    reply = client.add(k8s_request(container_ips=[pb.IPConfig(address="10.65.0.300/32")]))
    assert not reply.successful
    assert "pod default/nginx-7d9" in reply.error_message
    assert f"netns {NETNS}" in reply.error_message
    assert "container_ips[0].address '10.65.0.300/32'" in reply.error_message
    assert reply.host_interface_name == ""
    assert handler.added == []


def test_handler_pod_error_is_reported(client: Client, handler: FakeHandler) -> None:
    handler.add_error = PodError("VPP refused af_packet_create_v3 on cali1234567890a: retval -2")
    with structlog.testing.capture_logs() as logs:
        reply = client.add(k8s_request())
    assert not reply.successful
    assert reply.error_message == (
        f"pod default/nginx-7d9 (netns {NETNS}, interface eth0): "
        "VPP refused af_packet_create_v3 on cali1234567890a: retval -2"
    )
    failed = [e for e in logs if e["event"] == "cni_add_failed"]
    assert len(failed) == 1 and failed[0]["duration_ms"] >= 0


def test_unexpected_exception_does_not_kill_the_server(client: Client, handler: FakeHandler) -> None:
    handler.add_error = RuntimeError("boom")
    with structlog.testing.capture_logs() as logs:
        reply = client.add(k8s_request())
    assert not reply.successful
    assert "pod default/nginx-7d9" in reply.error_message
    assert "internal error" in reply.error_message and "RuntimeError: boom" in reply.error_message
    internal = [e for e in logs if e["event"] == "cni_add_internal_error"]
    assert len(internal) == 1 and internal[0]["exc_info"] is True
    handler.add_error = None
    assert client.add(k8s_request()).successful  # still serving
    assert client.delete(pb.DelRequest(netns=NETNS, interface_name="eth0")).successful


def test_handler_returning_no_interface_is_an_internal_error(client: Client, handler: FakeHandler) -> None:
    handler.add = lambda request: PodResult(host_interface_name="")  # type: ignore[method-assign]
    reply = client.add(k8s_request())
    assert not reply.successful and "internal error" in reply.error_message


@pytest.mark.parametrize(
    "mac",
    ["", "02:00:00:00:00", "02:00:00:00:00:0g", "02-00:00:00:00:00", "0200.0000.00", "02:00:00:00:00:00:00"],
)
def test_an_add_never_succeeds_with_a_mac_the_plugin_cannot_parse(
    client: Client, handler: FakeHandler, mac: str
) -> None:
    """The plugin runs net.ParseMAC on a successful reply's MAC and fails the ADD (after
    releasing the pod's addresses) when it cannot: such a reply is refused here, with a reason."""
    handler.add = lambda request: PodResult(request.host_interface_name, mac)  # type: ignore[method-assign]
    reply = client.add(k8s_request())
    assert not reply.successful and "internal error" in reply.error_message
    assert "cannot parse" in reply.error_message and repr(mac) in reply.error_message


def test_a_tun_pods_reply_carries_the_placeholder_mac(client: Client, handler: FakeHandler) -> None:
    handler.add = lambda request: PodResult(request.host_interface_name)  # type: ignore[method-assign]
    reply = client.add(k8s_request())
    assert reply.successful and reply.container_mac == TUN_CONTAINER_MAC == "02:00:00:00:00:00"


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        # Go's net.ParseMAC examples and boundaries (net/mac.go).
        ("00:00:5e:00:53:01", True),
        ("02:00:5e:10:00:00:00:01", True),
        ("00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", True),
        ("00-00-5e-00-53-01", True),
        ("0000.5e00.5301", True),
        ("0200.5e10.0000.0001", True),
        ("AA:BB:CC:DD:EE:FF", True),
        ("", False),
        ("00:00:5e:00:53", False),
        ("00:00:5e:00:53:01:02", False),
        ("00:00:5e:00:53-01", False),
        ("00:00:5e:00:53:0", False),
        ("0000.5e00.530", False),
        ("00005e005301", False),
        ("zz:00:5e:00:53:01", False),
    ],
)
def test_is_go_mac_accepts_what_go_parses(text: str, ok: bool) -> None:
    assert is_go_mac(text) is ok


def test_del(client: Client, handler: FakeHandler) -> None:
    reply = client.delete(
        pb.DelRequest(netns=NETNS, interface_name="eth0", dataplane_options={"type": "grpc"})
    )
    assert reply.successful and reply.error_message == ""
    # CNI allows a DEL whose netns is already gone: the handler still gets it (and removes the
    # pods whose namespace is gone).
    assert client.delete(pb.DelRequest(netns="", interface_name="eth0")).successful
    assert handler.deleted == [(NETNS, "eth0"), ("", "eth0")]


def test_del_failures(client: Client, handler: FakeHandler) -> None:
    handler.delete_error = PodError("VPP is not answering")
    reply = client.delete(pb.DelRequest(netns=NETNS, interface_name="eth0"))
    assert not reply.successful
    assert reply.error_message == f"pod (netns {NETNS}, interface eth0): VPP is not answering"
    handler.delete_error = KeyError("x")
    reply = client.delete(pb.DelRequest(netns=NETNS, interface_name="eth0"))
    assert not reply.successful and "internal error" in reply.error_message
    handler.delete_error = None
    reply = client.delete(pb.DelRequest(netns="relative", interface_name="eth0"))
    assert not reply.successful and "is not a path" in reply.error_message
    reply = client.delete(pb.DelRequest(netns=NETNS, interface_name=""))
    assert not reply.successful and "interface_name" in reply.error_message
    assert len(handler.deleted) == 2


def test_socket_is_0600_in_a_created_directory(server: CniServer, sockdir: pathlib.Path) -> None:
    st_ = os.lstat(server.path)
    assert stat.S_ISSOCK(st_.st_mode)
    assert stat.S_IMODE(st_.st_mode) == 0o600
    assert server.path == str(sockdir / "run" / "cni.sock")
    assert os.listdir(sockdir / "run") == ["cni.sock"]  # the staging directory is gone


def test_stop_removes_the_socket(sockdir: pathlib.Path, handler: FakeHandler) -> None:
    srv = CniServer(str(sockdir / "a.sock"), handler).start()
    srv.stop(0)
    assert not os.path.exists(sockdir / "a.sock")
    srv.stop(0)  # twice is harmless


def test_stale_socket_is_replaced(sockdir: pathlib.Path, handler: FakeHandler) -> None:
    path = str(sockdir / "cni.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)  # a crashed server leaves its socket file behind
    dead.close()
    srv = CniServer(path, handler).start()
    try:
        c = Client(path)
        assert c.add(k8s_request()).successful
        c.channel.close()
    finally:
        srv.stop(0)


def test_live_socket_or_other_file_is_not_replaced(sockdir: pathlib.Path, handler: FakeHandler) -> None:
    first = CniServer(str(sockdir / "cni.sock"), handler).start()
    try:
        with pytest.raises(CniServerError, match="another server is listening"):
            CniServer(str(sockdir / "cni.sock"), handler).start()
        c = Client(first.path)
        assert c.add(k8s_request()).successful  # the first one still owns it
        c.channel.close()
    finally:
        first.stop(0)
    regular = sockdir / "file"
    regular.write_text("keep me")
    with pytest.raises(CniServerError, match="is not a socket"):
        CniServer(str(regular), handler).start()
    assert regular.read_text() == "keep me"
    assert sorted(os.listdir(sockdir)) == ["file"]


def test_stop_leaves_a_newer_servers_socket(sockdir: pathlib.Path, handler: FakeHandler) -> None:
    path = str(sockdir / "cni.sock")
    old = CniServer(path, handler).start()
    old_server = old._server
    assert old_server is not None
    old_server.stop(0).wait()  # old one stops listening without cleaning up (as if wedged)
    new = CniServer(path, handler).start()  # replaces the now stale socket
    old.stop(0)
    assert os.path.exists(path)
    new.stop(0)
    assert not os.path.exists(path)


def test_concurrent_calls(sockdir: pathlib.Path, handler: FakeHandler) -> None:
    handler.delay = 0.2
    srv = CniServer(str(sockdir / "cni.sock"), handler, max_workers=4).start()
    c = Client(srv.path)
    try:
        start = time.monotonic()
        with futures.ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda i: c.add(k8s_request(netns=f"/var/run/netns/cni-{i}")), range(8)))
        elapsed = time.monotonic() - start
        assert all(r.successful for r in replies)
        assert len(handler.added) == 8
        assert handler.max_running["*"] > 1
        assert elapsed < 8 * 0.2  # overlapped, not one after another
        # The same pod's ADD and DEL never overlap.
        handler.max_running.clear()
        calls: list[Callable[[], Any]] = [
            lambda: c.add(k8s_request()),
            lambda: c.delete(pb.DelRequest(netns=NETNS, interface_name="eth0")),
        ] * 2
        with futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda f: f(), calls))
        assert all(r.successful for r in results)
        assert handler.max_running[NETNS] == 1
    finally:
        c.channel.close()
        srv.stop(0)


def test_unknown_method_is_unimplemented(client: Client) -> None:
    other = client.channel.unary_unary("/cni.CniDataplane/Check")
    with pytest.raises(grpc.RpcError) as info:
        other(b"", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_garbage_request_gets_an_error_status(client: Client, handler: FakeHandler) -> None:
    raw = client.channel.unary_unary(ADD_METHOD)
    with pytest.raises(grpc.RpcError):
        raw(b"\xff\xff\xff", timeout=5)
    assert client.add(k8s_request()).successful


# --- parse_add, pure ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"container_ips": [pb.IPConfig(address="10.65.0.5")]},
            "container_ips[0].address '10.65.0.5' has no prefix",
        ),
        ({"container_ips": [pb.IPConfig(address="nonsense/32")]}, "container_ips[0].address 'nonsense/32'"),
        ({"container_ips": [pb.IPConfig(address="10.0.0.1/33")]}, "container_ips[0].address '10.0.0.1/33'"),
        (
            {
                "container_ips": [
                    pb.IPConfig(address="10.0.0.1/32"),
                    pb.IPConfig(address="fd00::1/128", gateway="x"),
                ]
            },
            "container_ips[1].gateway 'x'",
        ),
        ({"container_ips": [pb.IPConfig(address="10.0.0.1/32", gateway="fe80::1")]}, "not of the family"),
        ({"container_ips": []}, "no container_ips"),
        ({"container_routes": ["0.0.0.0"]}, "container_routes[0] '0.0.0.0' has no prefix"),
        ({"container_routes": ["::/0", "default/0"]}, "container_routes[1] 'default/0'"),
        ({"settings": pb.ContainerSettings(mtu=70000)}, "settings.mtu 70000"),
        ({"settings": pb.ContainerSettings(mtu=40)}, "settings.mtu 40"),
        ({"interface_name": ""}, "interface_name ''"),
        ({"interface_name": "eth/0"}, "interface_name 'eth/0'"),
        (
            {"desired_host_interface_name": "cali1234567890ab"},
            "desired_host_interface_name 'cali1234567890ab'",
        ),
        ({"desired_host_interface_name": "cali 1"}, "desired_host_interface_name"),
        ({"netns": ""}, "netns '' is not a path"),
        ({"netns": "cni-1234"}, "netns 'cni-1234' is not a path"),
        (
            {"workload": pb.WorkloadIDs(orchestrator="", namespace="default", pod="p")},
            "orchestrator is empty",
        ),
        ({"workload": pb.WorkloadIDs(orchestrator="k8s", namespace="default")}, "workload.pod"),
        (
            {"workload": pb.WorkloadIDs(orchestrator="cni", name="node1-cni-eth0")},
            "workload.name 'node1-cni-eth0'",
        ),
    ],
)
def test_parse_add_refuses(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(PodError) as info:
        parse_add(k8s_request(**overrides))
    assert message in str(info.value)
    assert str(info.value).startswith("pod ") or str(info.value).startswith("workload endpoint ")


def test_parse_add_lenient_parts() -> None:
    req = parse_add(
        k8s_request(
            settings=pb.ContainerSettings(mtu=-1),
            container_routes=["10.96.0.1/12", "10.96.0.0/12"],
            container_ips=[pb.IPConfig(address="10.65.0.5/26", gateway="<nil>")],
        )
    )
    assert req.mtu == 0
    assert req.routes == (IPv4Network("10.96.0.0/12"),)  # normalised, then deduplicated
    assert req.addresses == (ip_interface("10.65.0.5/26"),)  # the host address, prefix kept


def test_identity_of_non_k8s_workloads() -> None:
    # Plain CNI: the workload ID is the container ID, found only in the endpoint's name.
    w = pb.WorkloadIDs(name="node--1-cni-abc--def-eth0", namespace="ns", orchestrator="cni", endpoint="")
    req = parse_add(k8s_request(workload=w))
    assert req.identity == WorkloadIdentity(orchestrator="cni", workload="ns/abc-def", endpoint="eth0")
    # k8s with no endpoint field: the endpoint part of the name.
    w = pb.WorkloadIDs(name="n-k8s-p-eth1", namespace="ns", orchestrator="k8s", pod="p")
    assert parse_add(k8s_request(workload=w)).identity.endpoint == "eth1"


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("node1-k8s-nginx-eth0", ["node1", "k8s", "nginx", "eth0"]),
        ("node--1-k8s-my--pod-eth0", ["node-1", "k8s", "my-pod", "eth0"]),
        ("a-b", ["a", "b"]),
        ("abc", ["abc"]),
        ("", []),
        ("n-k8s-p--", ["n", "k8s", "p-"]),
    ],
)
def test_split_wep_name(name: str, parts: list[str]) -> None:
    assert split_wep_name(name) == parts


_part = st.text(alphabet="ab-", min_size=1, max_size=6).filter(
    lambda s: not s.startswith("-") and not s.endswith("-")
)


@given(st.lists(_part, min_size=1, max_size=5))
def test_split_wep_name_inverts_calicos_escaping(parts: list[str]) -> None:
    # CalculateWorkloadEndpointName: each part's dashes doubled, parts joined with "-".
    assert split_wep_name("-".join(p.replace("-", "--") for p in parts)) == parts


@pytest.mark.parametrize(
    ("given_path", "path"),
    [
        ("unix:///var/run/calico/cni-server.sock", "/var/run/calico/cni-server.sock"),
        ("unix:/var/run/x.sock", "/var/run/x.sock"),
        ("/var/run/x.sock", "/var/run/x.sock"),
        ("/var/run//x.sock", "/var/run/x.sock"),
    ],
)
def test_socket_path_forms(given_path: str, path: str) -> None:
    assert _socket_path(given_path) == path


@pytest.mark.parametrize("bad", ["relative.sock", "unix:relative", "unix://host/x", "/" + "x" * 120])
def test_socket_path_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        _socket_path(bad)


# --- the wire contract, pinned byte by byte -----------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: bytes | int | bool) -> bytes:
    """One protobuf field: wire type 0 (varint) for ints/bools, 2 (length-delimited) for bytes."""
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    return _varint(number << 3) + _varint(int(value))


def test_add_request_field_numbers_are_calicos() -> None:
    # Hand-encoded with the numbers of cni-plugin/pkg/dataplane/grpc/proto/cnibackend.proto.
    port = _field(1, b"http") + _field(2, b"TCP") + _field(3, 80) + _field(4, 8080) + _field(5, b"0.0.0.0")
    workload = (
        _field(1, b"n1-k8s-p-eth0")
        + _field(2, b"default")
        + _field(3, _field(1, b"app") + _field(2, b"web"))  # map entry: key 1, value 2
        + _field(4, _field(1, b"a") + _field(2, b"b"))
        + _field(5, b"eth0")
        + _field(6, b"n1")
        + _field(7, b"k8s")
        + _field(8, b"p")
        + _field(9, port)
    )
    raw = (
        _field(1, b"eth0")
        + _field(2, NETNS.encode())
        + _field(3, b"cali0123456789a")
        + _field(4, _field(1, True) + _field(2, 1400))
        + _field(5, _field(1, b"10.65.0.5/32") + _field(2, b"<nil>"))
        + _field(6, b"0.0.0.0/0")
        + _field(7, workload)
        + _field(8, _field(1, b"type") + _field(2, b"grpc"))
    )
    req = pb.AddRequest.FromString(raw)
    assert req.interface_name == "eth0"
    assert req.netns == NETNS
    assert req.desired_host_interface_name == "cali0123456789a"
    assert req.settings.allow_ip_forwarding is True and req.settings.mtu == 1400
    assert [(ip.address, ip.gateway) for ip in req.container_ips] == [("10.65.0.5/32", "<nil>")]
    assert list(req.container_routes) == ["0.0.0.0/0"]
    w = req.workload
    assert (w.name, w.namespace, w.endpoint, w.node, w.orchestrator, w.pod) == (
        "n1-k8s-p-eth0",
        "default",
        "eth0",
        "n1",
        "k8s",
        "p",
    )
    assert dict(w.labels) == {"app": "web"} and dict(w.annotations) == {"a": "b"}
    assert [(p.name, p.protocol, p.port, p.host_port, p.host_ip) for p in w.ports] == [
        ("http", "TCP", 80, 8080, "0.0.0.0")
    ]
    assert dict(req.dataplane_options) == {"type": "grpc"}
    assert req.SerializeToString() == raw  # and we encode exactly as Go's plugin would read


def test_settings_mtu_is_a_signed_int32() -> None:
    # int32 -1 is a 10-byte varint on the wire; a uint32 field would decode 4294967295.
    raw = _field(4, _field(2, (1 << 64) - 1))
    assert pb.AddRequest.FromString(raw).settings.mtu == -1


def test_replies_and_del_field_numbers() -> None:
    reply = pb.AddReply(successful=True, error_message="e", host_interface_name="cali1", container_mac="m")
    wire = _field(1, True) + _field(2, b"e") + _field(3, b"cali1") + _field(4, b"m")
    assert reply.SerializeToString() == wire
    raw = _field(1, b"eth0") + _field(2, NETNS.encode()) + _field(3, _field(1, b"k") + _field(2, b"v"))
    d = pb.DelRequest.FromString(raw)
    assert (d.interface_name, d.netns, dict(d.dataplane_options)) == ("eth0", NETNS, {"k": "v"})
    assert pb.DelReply(successful=False, error_message="x").SerializeToString() == _field(2, b"x")


def test_service_and_method_paths() -> None:
    service = pb.DESCRIPTOR.services_by_name["CniDataplane"]
    assert service.full_name == "cni.CniDataplane"
    assert {m.name: (m.input_type.full_name, m.output_type.full_name) for m in service.methods} == {
        "Add": ("cni.AddRequest", "cni.AddReply"),
        "Del": ("cni.DelRequest", "cni.DelReply"),
    }
    assert (ADD_METHOD, DEL_METHOD) == ("/cni.CniDataplane/Add", "/cni.CniDataplane/Del")
