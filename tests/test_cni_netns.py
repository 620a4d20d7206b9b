"""The veth fallback: exact commands against a fake `ip`, and once for real when root."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from ipaddress import IPv4Network, IPv6Network, ip_interface
from typing import Any

import pytest

from calico_vpp_driver.cni.netns import (
    GATEWAY_MAC,
    TX_CSUM_OFF,
    CommandResult,
    VethPlumber,
    has_vhost_net,
    pod_routes,
    run_command,
)
from calico_vpp_driver.cni.types import PodError, PodRequest, WorkloadIdentity

PY = "/usr/bin/python3"
HOST = "cali1234567890a"
IDENTITY = WorkloadIdentity(orchestrator="k8s", workload="default/nginx", endpoint="eth0")


class FakeIp:
    """Just enough of `ip` and `nsenter` to answer what VethPlumber asks: links per namespace
    (with veth peering by ifindex) and addresses; every other command succeeds. Records argv."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.links: dict[tuple[str, str], dict[str, Any]] = {}
        self.addrs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.fail: dict[str, CommandResult] = {}  # shlex-joined argv prefix -> result
        self._next_index = 10

    def veth(self, host: str, ns: str, ifname: str) -> None:
        h, p = self._next_index, self._next_index + 1
        self._next_index += 2
        self.links[("", host)] = {"ifindex": h, "link_index": p, "linkinfo": {"info_kind": "veth"}}
        self.links[(ns, ifname)] = {
            "ifindex": p,
            "link_index": h,
            "address": f"0a:58:00:00:00:{p:02x}",
            "linkinfo": {"info_kind": "veth"},
        }

    def __call__(self, argv: Sequence[str]) -> CommandResult:
        argv = list(argv)
        self.calls.append(argv)
        text = " ".join(argv)
        for prefix, result in self.fail.items():
            if text.startswith(prefix):
                return result
        ns = ""
        if argv[0] == "nsenter":
            ns, argv = argv[1].removeprefix("--net="), argv[2:]
        if argv[0] != "ip":
            return CommandResult(0, "", "")
        args = [a for a in argv[1:] if a not in ("-j", "-d")]
        if args[:2] == ["link", "show"]:
            link = self.links.get((ns, args[3]))
            if link is None:
                return CommandResult(1, "", f'Device "{args[3]}" does not exist.\n')
            return CommandResult(0, json.dumps([{"ifname": args[3], **link}]), "")
        if args[:2] == ["link", "add"]:
            self.veth(args[1], args[args.index("netns") + 1], args[args.index("name") + 1])
        elif args[:2] == ["link", "del"]:
            self._delete(ns, args[3])
        elif args[:2] == ["addr", "show"]:
            return CommandResult(0, json.dumps([{"addr_info": self.addrs.get((ns, args[3]), [])}]), "")
        return CommandResult(0, "", "")

    def _delete(self, ns: str, name: str) -> None:
        link = self.links.pop((ns, name))
        peer = [k for k, v in self.links.items() if v["ifindex"] == link.get("link_index")]
        for k in peer:
            del self.links[k]


@pytest.fixture
def fake() -> FakeIp:
    return FakeIp()


@pytest.fixture
def ns(tmp_path: pathlib.Path) -> str:
    path = tmp_path / "cni-1234"  # stands in for /var/run/netns/cni-1234: it only has to exist
    path.touch()
    return str(path)


def request(ns: str, *addresses: str, routes: Sequence[str] = ()) -> PodRequest:
    return PodRequest(
        netns=ns,
        interface_name="eth0",
        host_interface_name=HOST,
        identity=IDENTITY,
        addresses=tuple(ip_interface(a) for a in addresses or ("10.65.0.5/32",)),
        routes=tuple(IPv4Network(r) if ":" not in r else IPv6Network(r) for r in routes),
    )


def plumber(fake: FakeIp, **kw: Any) -> VethPlumber:
    return VethPlumber(fake, python=PY, **kw)


def test_fresh_dual_stack_add_runs_exactly_these_commands(fake: FakeIp, ns: str) -> None:
    mac = plumber(fake).add(request(ns, "10.65.0.5/32", "fd00:65::5/128"), 1410)
    n = ["nsenter", f"--net={ns}"]
    gw6 = "fe80::ecee:eeff:feee:eeee"
    assert fake.calls == [
        ["ip", "-j", "-d", "link", "show", "dev", HOST],
        [*n, "ip", "-j", "-d", "link", "show", "dev", "eth0"],
        ["ip", "link", "add", HOST, "mtu", "1410", "type", "veth",
         "peer", "name", "eth0", "mtu", "1410", "netns", ns],
        ["ip", "link", "set", "dev", HOST, "mtu", "1410", "up"],
        [*n, "ip", "link", "set", "dev", "eth0", "mtu", "1410", "up"],
        [*n, "ip", "-j", "addr", "show", "dev", "eth0"],
        [*n, "ip", "addr", "replace", "10.65.0.5/32", "dev", "eth0"],
        [*n, "ip", "addr", "replace", "fd00:65::5/128", "dev", "eth0", "nodad"],
        [*n, "ip", "neigh", "replace", "169.254.1.1", "lladdr", GATEWAY_MAC, "dev", "eth0",
         "nud", "permanent"],
        [*n, "ip", "neigh", "replace", gw6, "lladdr", GATEWAY_MAC, "dev", "eth0", "nud", "permanent"],
        [*n, "ip", "route", "replace", "0.0.0.0/0", "via", "169.254.1.1", "dev", "eth0", "onlink"],
        [*n, "ip", "-6", "route", "replace", "::/0", "via", gw6, "dev", "eth0"],
        [*n, PY, "-I", "-S", "-c", TX_CSUM_OFF, "eth0"],
        [*n, "ip", "-j", "-d", "link", "show", "dev", "eth0"],
    ]  # fmt: skip
    assert mac == "0a:58:00:00:00:0b"


def test_existing_pair_is_reused(fake: FakeIp, ns: str) -> None:
    fake.veth(HOST, ns, "eth0")
    fake.addrs[(ns, "eth0")] = [
        {"local": "10.65.0.5", "prefixlen": 32, "scope": "global"},
        {"local": "10.65.0.9", "prefixlen": 32, "scope": "global"},  # from an earlier ADD
        {"local": "fe80::1", "prefixlen": 64, "scope": "link"},
    ]
    plumber(fake).add(request(ns, "10.65.0.5/32"), 1410)
    verbs = [c[c.index("ip") + 1 :] if "ip" in c else c for c in fake.calls]
    assert not any(v[:2] == ["link", "add"] or v[:2] == ["link", "del"] for v in verbs)
    assert ["nsenter", f"--net={ns}", "ip", "addr", "del", "10.65.0.9/32", "dev", "eth0"] in fake.calls
    assert not any("fe80::1/64" in c for c in fake.calls)


def test_stale_host_end_is_replaced(fake: FakeIp, ns: str, tmp_path: pathlib.Path) -> None:
    fake.veth(HOST, "/proc/999/ns/net", "eth0")  # an old pod's pair with the same host name
    plumber(fake).add(request(ns), 1500)
    assert fake.calls[2] == ["ip", "link", "del", "dev", HOST]
    assert fake.calls[3][:4] == ["ip", "link", "add", HOST]
    assert (ns, "eth0") in fake.links


def test_foreign_devices_are_not_touched(fake: FakeIp, ns: str) -> None:
    fake.links[("", HOST)] = {"ifindex": 3, "linkinfo": {"info_kind": "dummy"}}
    with pytest.raises(PodError, match=f"host interface {HOST} exists and is a dummy device"):
        plumber(fake).add(request(ns), 1500)
    assert len(fake.calls) == 2  # looked, changed nothing
    fake.links.clear()
    fake.links[(ns, "eth0")] = {"ifindex": 2, "linkinfo": {"info_kind": "veth"}, "link_index": 77}
    with pytest.raises(PodError, match="eth0 already exists in the pod's namespace"):
        plumber(fake).add(request(ns), 1500)


def test_pairing_needs_both_directions(fake: FakeIp, ns: str) -> None:
    # Every pod's eth0 is ifindex 2 in its own namespace, so a stale host end whose peer was
    # another pod's eth0 points at "2" too; only the pod end's link_index tells them apart.
    fake.links[("", HOST)] = {"ifindex": 40, "link_index": 2, "linkinfo": {"info_kind": "veth"}}
    fake.links[(ns, "eth0")] = {"ifindex": 2, "link_index": 41, "linkinfo": {"info_kind": "veth"}}
    with pytest.raises(PodError, match="is not the peer of"):
        plumber(fake).add(request(ns), 1500)


def test_mtu_must_be_resolved(fake: FakeIp, ns: str) -> None:
    with pytest.raises(PodError, match="MTU 0 is below 68"):
        plumber(fake).add(request(ns), 0)
    assert fake.calls == []


def test_missing_netns(fake: FakeIp, tmp_path: pathlib.Path) -> None:
    with pytest.raises(PodError, match=r"network namespace .* does not exist"):
        plumber(fake).add(request(str(tmp_path / "gone")), 1500)
    assert fake.calls == []


def test_failing_command_is_named_with_its_stderr(fake: FakeIp, ns: str) -> None:
    fake.fail[f"nsenter --net={ns} ip addr replace"] = CommandResult(
        2, "", "RTNETLINK answers: Permission denied\n"
    )
    with pytest.raises(PodError) as info:
        plumber(fake).add(request(ns), 1500)
    msg = str(info.value)
    assert f"veth eth0 in netns {ns}, host end {HOST}" in msg
    assert f"`nsenter --net={ns} ip addr replace 10.65.0.5/32 dev eth0` failed (exit 2)" in msg
    assert msg.endswith("RTNETLINK answers: Permission denied")


def test_unexpected_show_failure_is_an_error(fake: FakeIp, ns: str) -> None:
    fake.fail["ip -j -d link show"] = CommandResult(255, "", "Cannot open netlink socket")
    with pytest.raises(PodError, match="Cannot open netlink socket"):
        plumber(fake).add(request(ns), 1500)
    fake.fail.clear()
    fake.fail["ip -j -d link show"] = CommandResult(0, "not json", "")
    with pytest.raises(PodError, match="cannot parse"):
        plumber(fake).add(request(ns), 1500)


def test_helper_failure_stops_the_add(fake: FakeIp, ns: str) -> None:
    fake.fail[f"nsenter --net={ns} {PY}"] = CommandResult(
        1, "", "cannot turn off tx checksum offload on eth0"
    )
    with pytest.raises(
        PodError, match=rf"`nsenter --net={ns} {PY} -I -S -c <tx-csum-off script> eth0` failed \(exit 1\)"
    ):
        plumber(fake).add(request(ns), 1500)


def test_no_gateway_mac_means_no_static_neighbours(fake: FakeIp, ns: str) -> None:
    plumber(fake, gateway_mac=None).add(request(ns), 1500)
    assert not any("neigh" in c for c in fake.calls)


def test_routes_follow_the_pods_families(ns: str) -> None:
    dual = request(ns, "10.65.0.5/32", "fd00::5/128", routes=["10.96.0.0/12"])
    assert pod_routes(dual) == [IPv4Network("10.96.0.0/12"), IPv6Network("::/0")]
    v4_only = request(ns, "10.65.0.5/32", routes=["0.0.0.0/0", "::/0"])
    assert pod_routes(v4_only) == [IPv4Network("0.0.0.0/0")]


def test_delete(fake: FakeIp, ns: str) -> None:
    fake.veth(HOST, ns, "eth0")
    plumber(fake).delete(ns, "eth0")
    assert fake.calls[-1] == ["nsenter", f"--net={ns}", "ip", "link", "del", "dev", "eth0"]
    assert fake.links == {}
    fake.calls.clear()
    plumber(fake).delete(ns, "eth0")  # already gone: looks, does nothing
    assert fake.calls == [["nsenter", f"--net={ns}", "ip", "-j", "-d", "link", "show", "dev", "eth0"]]


def test_delete_without_a_namespace_does_nothing(fake: FakeIp, tmp_path: pathlib.Path) -> None:
    plumber(fake).delete("", "eth0")
    plumber(fake).delete(str(tmp_path / "gone"), "eth0")
    assert fake.calls == []


def test_delete_refuses_foreign_and_reports_failures(fake: FakeIp, ns: str) -> None:
    fake.links[(ns, "eth0")] = {"ifindex": 2, "linkinfo": {"info_kind": "tun"}}
    with pytest.raises(PodError, match="is a tun device, not a veth"):
        plumber(fake).delete(ns, "eth0")
    assert not any("del" in c for c in fake.calls)
    fake.veth(HOST, ns, "eth1")
    fake.fail[f"nsenter --net={ns} ip link del"] = CommandResult(2, "", 'Cannot find device "eth1"')
    plumber(fake).delete(ns, "eth1")  # raced with someone else's delete: fine
    fake.fail[f"nsenter --net={ns} ip link del"] = CommandResult(
        2, "", "RTNETLINK answers: Device or resource busy"
    )
    with pytest.raises(PodError, match="Device or resource busy"):
        plumber(fake).delete(ns, "eth1")


def test_has_vhost_net(tmp_path: pathlib.Path) -> None:
    assert has_vhost_net(str(tmp_path / "missing")) is False
    (tmp_path / "file").touch()
    assert has_vhost_net(str(tmp_path / "file")) is False
    assert has_vhost_net("/dev/null") is True  # a character device that opens
    assert has_vhost_net() == (os.path.exists("/dev/vhost-net") and _opens("/dev/vhost-net"))


def _opens(path: str) -> bool:
    try:
        os.close(os.open(path, os.O_RDWR))
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def test_run_command_never_raises() -> None:
    assert run_command(["/nonexistent/ip"]).returncode == 127
    out = run_command(
        [sys.executable, "-c", "import sys; print('o'); print('e', file=sys.stderr); sys.exit(3)"]
    )
    assert out == CommandResult(3, "o\n", "e\n")


def test_helper_usage_and_errors() -> None:
    def helper(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-I", "-S", "-c", TX_CSUM_OFF, *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=False)

    assert helper().returncode == 1 and "usage" in helper().stderr
    missing = helper("nosuchif0")
    assert missing.returncode == 1
    assert "cannot turn off tx checksum offload on nosuchif0: No such device" in missing.stderr


# --- real, as root ------------------------------------------------------------------------------

ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nsenter") is None,
    reason="needs root with iproute2 and util-linux",
)


def _sh(*argv: str) -> str:
    return subprocess.run(list(argv), capture_output=True, text=True, check=True).stdout


@pytest.fixture
def real_netns() -> Iterator[str]:
    name = f"cnitest-{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    except subprocess.CalledProcessError as e:
        pytest.skip(f"cannot create a network namespace: {e.stderr.strip()}")
    yield f"/var/run/netns/{name}"
    subprocess.run(["ip", "netns", "del", name], check=False)


@ROOT_ONLY
def test_real_veth_round_trip(real_netns: str) -> None:
    host = f"cvt{uuid.uuid4().hex[:8]}"
    req = PodRequest(
        netns=real_netns,
        interface_name="eth0",
        host_interface_name=host,
        identity=IDENTITY,
        addresses=(ip_interface("10.199.0.5/32"), ip_interface("fd00:199::5/128")),
    )
    p = VethPlumber()
    try:
        mac = p.add(req, 1410)
        inside = ["nsenter", f"--net={real_netns}"]
        link = json.loads(_sh(*inside, "ip", "-j", "link", "show", "dev", "eth0"))[0]
        assert link["address"] == mac and link["mtu"] == 1410 and "UP" in link["flags"]
        host_link = json.loads(_sh("ip", "-j", "link", "show", "dev", host))[0]
        assert host_link["mtu"] == 1410 and "UP" in host_link["flags"]
        addrs = _sh(*inside, "ip", "addr", "show", "dev", "eth0")
        assert "10.199.0.5/32" in addrs and "fd00:199::5/128" in addrs
        assert "default via 169.254.1.1 dev eth0 onlink" in _sh(*inside, "ip", "route")
        assert "default via fe80::ecee:eeff:feee:eeee dev eth0" in _sh(*inside, "ip", "-6", "route")
        neigh = _sh(*inside, "ip", "neigh", "show", "dev", "eth0")
        assert f"169.254.1.1 lladdr {GATEWAY_MAC} PERMANENT" in neigh
        # The helper's own ioctl, reading instead of writing: prints ETHTOOL_GTXCSUM's value.
        check = TX_CSUM_OFF.split("if len(sys.argv)")[0] + "print(ethtool('eth0', ETHTOOL_GTXCSUM))"
        assert _sh(*inside, sys.executable, "-c", check).strip() == "0"  # tx checksum offload off
        assert p.add(req, 1410) == mac  # reused, same pair
        p.delete(real_netns, "eth0")
        assert subprocess.run(["ip", "link", "show", "dev", host], capture_output=True).returncode != 0
        p.delete(real_netns, "eth0")  # nothing left: fine
    finally:
        subprocess.run(["ip", "link", "del", "dev", host], capture_output=True, check=False)


@ROOT_ONLY
def test_real_proc_pid_netns_path() -> None:
    holder = subprocess.Popen(["unshare", "--net", "sleep", "30"])
    host = f"cvt{uuid.uuid4().hex[:8]}"
    try:
        path = f"/proc/{holder.pid}/ns/net"
        for _ in range(100):  # until unshare has switched namespaces
            if os.readlink(path) != os.readlink("/proc/self/ns/net"):
                break
            subprocess.run(["sleep", "0.01"], check=False)
        req = PodRequest(
            netns=path,
            interface_name="eth0",
            host_interface_name=host,
            identity=IDENTITY,
            addresses=(ip_interface("10.199.0.6/32"),),
        )
        mac = VethPlumber().add(req, 1500)
        shown = json.loads(_sh("nsenter", f"--net={path}", "ip", "-j", "link", "show", "dev", "eth0"))
        assert mac == shown[0]["address"]
        VethPlumber().delete(path, "eth0")
    finally:
        holder.kill()
        holder.wait()
        subprocess.run(["ip", "link", "del", "dev", host], capture_output=True, check=False)


@ROOT_ONLY
def test_real_pod_reaches_a_gateway_answering_as_gateway_mac(real_netns: str) -> None:
    """The routes and pinned neighbours lead out of the pod: a kernel namespace standing in for
    VPP (the host end moved into it, given GATEWAY_MAC, hence fe80::ecee:eeff:feee:eeee) accepts
    TCP from the pod over IPv4 and IPv6 without the pod ever resolving the gateway."""
    host = f"cvt{uuid.uuid4().hex[:8]}"
    gw = f"{real_netns}-gw"
    subprocess.run(["ip", "netns", "add", os.path.basename(gw)], check=True)
    try:
        req = PodRequest(
            netns=real_netns,
            interface_name="eth0",
            host_interface_name=host,
            identity=IDENTITY,
            addresses=(ip_interface("10.199.0.7/32"), ip_interface("fd00:199::7/128")),
        )
        pod_mac = VethPlumber().add(req, 1500)
        g = ["nsenter", f"--net={gw}"]
        _sh("ip", "link", "set", host, "netns", gw)
        # arp off: the stand-in answers no ARP/ND, as VPP without proxy-ARP would not.
        _sh(*g, "ip", "link", "set", host, "address", GATEWAY_MAC, "arp", "off", "up")
        _sh(*g, "ip", "link", "set", "lo", "up")
        _sh(*g, "ip", "addr", "add", "10.200.0.1/32", "dev", "lo")
        _sh(*g, "ip", "addr", "add", "fd00:200::1/128", "dev", "lo")
        _sh(*g, "ip", "route", "add", "10.199.0.7/32", "dev", host)
        _sh(*g, "ip", "-6", "route", "add", "fd00:199::7/128", "dev", host)
        for pod_ip in ("10.199.0.7", "fd00:199::7"):  # the stand-in cannot resolve either
            _sh(*g, "ip", "neigh", "replace", pod_ip, "lladdr", pod_mac, "dev", host, "nud", "permanent")
        server = (
            "import socket, sys\n"
            "for fam, a in ((socket.AF_INET, '10.200.0.1'), (socket.AF_INET6, 'fd00:200::1')):\n"
            "    s = socket.socket(fam); s.bind((a, 8080)); s.listen(); print('ready', flush=True)\n"
            "    c, peer = s.accept(); c.sendall(peer[0].encode()); c.close(); s.close()\n"
        )
        srv = subprocess.Popen([*g, sys.executable, "-c", server], stdout=subprocess.PIPE, text=True)
        try:
            for family, addr in (("AF_INET", "10.200.0.1"), ("AF_INET6", "fd00:200::1")):
                assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
                client = (
                    f"import socket; s = socket.socket(socket.{family}); s.settimeout(5); "
                    f"s.connect(('{addr}', 8080)); print(s.recv(100).decode())"
                )
                got = _sh("nsenter", f"--net={real_netns}", sys.executable, "-c", client).strip()
                assert got == ("10.199.0.7" if family == "AF_INET" else "fd00:199::7")
        finally:
            srv.kill()
            srv.wait()
    finally:
        subprocess.run(["ip", "netns", "del", os.path.basename(gw)], check=False)


# --- TUN taps: what VPP does not set -------------------------------------------------------------


def test_tun_configure_adds_every_address_forwarding_and_routes(fake: FakeIp, ns: str) -> None:
    from dataclasses import replace

    from calico_vpp_driver.cni.links import LinuxPodLinks

    req = replace(request(ns, "10.65.0.5/32", "10.65.9.9/32", "fd00:65::5/128"), allow_ip_forwarding=True)
    LinuxPodLinks(fake).tun_configure(req, pod_routes(req))
    n = ["nsenter", f"--net={ns}"]
    assert fake.calls == [  # VPP set 10.65.0.5 and fd00:65::5 itself
        [*n, "ip", "addr", "replace", "10.65.9.9/32", "dev", "eth0"],
        [*n, "sysctl", "-w", "net.ipv4.ip_forward=1"],
        [*n, "sysctl", "-w", "net.ipv6.conf.all.forwarding=1"],
        [*n, "ip", "route", "replace", "0.0.0.0/0", "dev", "eth0"],
        [*n, "ip", "-6", "route", "replace", "::/0", "dev", "eth0"],
    ]
    fake.calls.clear()
    LinuxPodLinks(fake).tun_configure(request(ns, "10.65.0.5/32"), [IPv4Network("0.0.0.0/0")])
    assert not any("sysctl" in c for c in fake.calls)  # forwarding stays off unless allowed


def test_a_failed_tun_command_names_the_pod_and_the_command(fake: FakeIp, ns: str) -> None:
    from calico_vpp_driver.cni.links import LinuxPodLinks

    fake.fail[f"nsenter --net={ns} ip addr replace"] = CommandResult(
        2, "", "RTNETLINK answers: Permission denied"
    )
    with pytest.raises(PodError, match=f"pod netns {ns}, interface eth0.*Permission denied"):
        LinuxPodLinks(fake).tun_configure(request(ns, "10.65.0.5/32", "10.65.9.9/32"), [])


def test_a_veth_pod_allowed_to_forward_gets_the_sysctl(fake: FakeIp, ns: str) -> None:
    from dataclasses import replace

    plumber(fake).add(replace(request(ns, "10.65.0.5/32"), allow_ip_forwarding=True), 1410)
    assert ["nsenter", f"--net={ns}", "sysctl", "-w", "net.ipv4.ip_forward=1"] in fake.calls
    assert not any("net.ipv6" in " ".join(c) for c in fake.calls)  # no IPv6 address, no IPv6 sysctl
