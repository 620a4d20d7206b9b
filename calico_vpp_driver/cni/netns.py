"""The Linux side of a pod's interface when VPP cannot make a tap: a veth pair.

VPP's tap interfaces need /dev/vhost-net (`has_vhost_net`). Where it is missing, the pod gets a
veth pair instead: the pod end, inside the pod's network namespace, is named as the CNI asked
("eth0") and carries the pod's addresses and routes; the host end is named as Calico wants the
workload endpoint's interface ("cali...") and VPP attaches to it with af_packet. This module does
only the Linux half, by running `ip` (iproute2) and `nsenter` (util-linux) through an injectable
runner, so the exact commands are unit-tested without root; every failure raises PodError with
the command and its stderr. Both directions are idempotent: an existing pair that is already
correct is reused (and brought back to the requested state), deleting what is gone is fine.

Gateway choice. The pod routes everything to one next hop per family that only VPP answers
for, as Calico's own Linux dataplane does (cni-plugin dataplane_linux.go): 169.254.1.1 for IPv4
(a link-local address no pod or host uses; `onlink` because no pod subnet contains it), and
fe80::ecee:eeff:feee:eeee for IPv6, the EUI-64 link-local address of MAC ee:ee:ee:ee:ee:ee.
Both are pinned as permanent neighbours with that MAC, so the pod never has to ARP or solicit:
VPP's af_packet interface on the host end must use `GATEWAY_MAC` as its hardware address, and no
proxy-ARP is needed. VPP gets a link-local address only when its IPv6 link is enabled
(`sw_interface_ip6_enable_disable`, which `vpp.pods` sends for veth pods: unnumbered alone does
not); it derives it from that MAC, the same fe80::ecee:eeff:feee:eeee, and needs it to resolve
the pod's IPv6 address (neighbour solicitations go out from it). The kernel host end keeps its
own random MAC on purpose: frames the pod sends to the gateway MAC are then "other host" for the
host kernel, which ignores them, while af_packet still reads them.
IPAM's own gateways are not used, as in Calico.

Inside the pod, transmit checksum offload is turned off: a veth hands the peer packets with
partial checksums, which VPP's af_packet input does not complete, so TCP from the pod is dropped
(vpp.md: "TCP over veth needed ethtool -K <veth> tx off"). It is done with the ETHTOOL_STXCSUM
ioctl by a few lines of stdlib-only Python (`TX_CSUM_OFF`) run under nsenter as
`python -I -S -c TX_CSUM_OFF IFNAME`, so nodes need no ethtool; without `-S` and this package's
imports the interpreter starts in tens of milliseconds instead of half a second.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import stat
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from calico_vpp_driver.cni.types import IPNetwork, PodError, PodRequest

log = structlog.get_logger("calico_vpp_driver.cni.netns")

GATEWAY_V4 = ipaddress.IPv4Address("169.254.1.1")
GATEWAY_MAC = "ee:ee:ee:ee:ee:ee"
GATEWAY_V6 = ipaddress.IPv6Address("fe80::ecee:eeff:feee:eeee")  # EUI-64 of GATEWAY_MAC
DEFAULT_ROUTES: dict[int, IPNetwork] = {
    4: ipaddress.IPv4Network("0.0.0.0/0"),
    6: ipaddress.IPv6Network("::/0"),
}
COMMAND_TIMEOUT_S = 10.0
_MIN_MTU = 68  # the kernel's minimum for an Ethernet device carrying IPv4
VHOST_NET = "/dev/vhost-net"

# `ethtool -K IFNAME tx off`, for the current network namespace: read the transmit checksum
# setting, clear it if set (struct ethtool_value {u32 cmd; u32 data;} through SIOCETHTOOL in a
# struct ifreq of 40 bytes on 64-bit Linux; numbers from linux/sockios.h and linux/ethtool.h).
TX_CSUM_OFF = """
import array, fcntl, socket, struct, sys
SIOCETHTOOL, ETHTOOL_GTXCSUM, ETHTOOL_STXCSUM = 0x8946, 0x16, 0x17
def ethtool(name, cmd, data=0):
    value = array.array("I", [cmd, data])
    ifreq = struct.pack("16sP", name.encode(), value.buffer_info()[0]).ljust(40, b"\\0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)
    return value[1]
if len(sys.argv) != 2:
    sys.exit("usage: python -c TX_CSUM_OFF IFNAME")
try:
    if ethtool(sys.argv[1], ETHTOOL_GTXCSUM):
        ethtool(sys.argv[1], ETHTOOL_STXCSUM, 0)
except OSError as e:
    sys.exit(f"cannot turn off tx checksum offload on {sys.argv[1]}: {e.strerror or e}")
"""


@dataclass(frozen=True, slots=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[[Sequence[str]], CommandResult]


def run_command(argv: Sequence[str]) -> CommandResult:
    """The real runner: run `argv` without a shell, capture its output, never raise."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except FileNotFoundError:
        return CommandResult(127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return CommandResult(-1, "", f"timed out after {COMMAND_TIMEOUT_S:g} s")
    return CommandResult(done.returncode, done.stdout, done.stderr)


def has_vhost_net(path: str = VHOST_NET) -> bool:
    """Whether VPP can create tap interfaces here: /dev/vhost-net is a character device that
    opens. A device node whose driver is not loaded fails to open (ENODEV/ENXIO): no taps. When
    only permission is refused (the driver is not root), VPP, which runs as root, can still open
    it."""
    try:
        if not stat.S_ISCHR(os.stat(path).st_mode):
            return False
        os.close(os.open(path, os.O_RDWR))
    except PermissionError:
        return True
    except OSError:
        return False
    return True


class VethPlumber:
    """Creates and deletes pods' veth pairs. Thread-safe (it keeps no state); the CNI server
    already serialises requests for the same pod."""

    def __init__(
        self,
        runner: Runner = run_command,
        *,
        ip: str = "ip",
        nsenter: str = "nsenter",
        python: str = sys.executable,
        gateway_mac: str | None = GATEWAY_MAC,
        sysctl: str = "sysctl",
    ) -> None:
        self._run = runner
        self._ip = ip
        self._nsenter = nsenter
        self._python = python
        self._sysctl = sysctl
        self._gateway_mac = gateway_mac

    # --- add ---------------------------------------------------------------------------------

    def add(self, request: PodRequest, mtu: int) -> str:
        """Make the pod's veth pair match `request` (the MTU already resolved) and return the
        pod end's MAC."""
        where = _where(request.netns, request.interface_name, request.host_interface_name)
        if not os.path.exists(request.netns):
            raise PodError(f"{where}: the network namespace {request.netns} does not exist")
        if mtu < _MIN_MTU:
            raise PodError(f"{where}: MTU {mtu} is below {_MIN_MTU}; set the pod MTU")
        self._ensure_pair(request, mtu, where)
        self._configure_host_end(request, mtu, where)
        self._configure_pod_end(request, mtu, where)
        link = self._link(request.netns, request.interface_name, where)
        if link is None:
            raise PodError(f"{where}: interface {request.interface_name} vanished while being configured")
        return str(link.get("address", ""))

    def _ensure_pair(self, request: PodRequest, mtu: int, where: str) -> None:
        host = self._link(None, request.host_interface_name, where)
        pod = self._link(request.netns, request.interface_name, where)
        if host is not None and pod is not None and _paired(host, pod):
            log.info(
                "veth_reused",
                netns=request.netns,
                interface=request.interface_name,
                host=request.host_interface_name,
            )
            return
        if pod is not None:
            raise PodError(
                f"{where}: interface {request.interface_name} already exists in the pod's namespace and "
                f"is not the peer of {request.host_interface_name}; remove it or delete the pod"
            )
        if host is not None:
            # A leftover from an earlier pod that had the same host name (Calico does the same).
            if _kind(host) != "veth":
                raise PodError(
                    f"{where}: host interface {request.host_interface_name} exists and is a "
                    f"{_kind(host) or 'non-veth'} device, not a veth this driver made; not touching it"
                )
            log.warning("veth_stale_host_end_deleted", host=request.host_interface_name, netns=request.netns)
            self._check(where, [self._ip, "link", "del", "dev", request.host_interface_name])
        self._check(
            where,
            [
                self._ip, "link", "add", request.host_interface_name, "mtu", str(mtu), "type", "veth",
                "peer", "name", request.interface_name, "mtu", str(mtu), "netns", request.netns,
            ],
        )  # fmt: skip
        log.info(
            "veth_created",
            netns=request.netns,
            interface=request.interface_name,
            host=request.host_interface_name,
        )

    def _configure_host_end(self, request: PodRequest, mtu: int, where: str) -> None:
        self._check(
            where, [self._ip, "link", "set", "dev", request.host_interface_name, "mtu", str(mtu), "up"]
        )

    def _configure_pod_end(self, request: PodRequest, mtu: int, where: str) -> None:
        ns, ifname = request.netns, request.interface_name
        self._check(where, self._in(ns, [self._ip, "link", "set", "dev", ifname, "mtu", str(mtu), "up"]))
        self._remove_stale_addresses(request, where)
        for address in request.addresses:
            cmd = [self._ip, "addr", "replace", str(address), "dev", ifname]
            if address.version == 6:
                cmd.append("nodad")  # usable at once; VPP is the only other node on the link
            self._check(where, self._in(ns, cmd))
        families = sorted({a.version for a in request.addresses})
        if self._gateway_mac is not None:
            for family in families:
                gw = str(GATEWAY_V4 if family == 4 else GATEWAY_V6)
                pin = ["lladdr", self._gateway_mac, "dev", ifname, "nud", "permanent"]
                self._check(where, self._in(ns, [self._ip, "neigh", "replace", gw, *pin]))
        for argv in forwarding_sysctls(request, self._sysctl):
            self._check(where, self._in(ns, argv))
        for route in pod_routes(request):
            self._check(where, self._in(ns, _route_cmd(self._ip, route, ifname)))
        self._check(where, self._in(ns, [self._python, "-I", "-S", "-c", TX_CSUM_OFF, ifname]))

    def _remove_stale_addresses(self, request: PodRequest, where: str) -> None:
        """On a reused pair, drop global addresses an earlier ADD gave the pod and this one does
        not (the kernel's own link-local addresses stay)."""
        out = self._check(
            where, self._in(request.netns, [self._ip, "-j", "addr", "show", "dev", request.interface_name])
        )
        wanted = {str(a) for a in request.addresses}
        for info in _json_list(out.stdout, where):
            for addr in info.get("addr_info", []):
                if addr.get("scope") != "global":
                    continue
                have = f"{addr.get('local')}/{addr.get('prefixlen')}"
                if have not in wanted:
                    cmd = [self._ip, "addr", "del", have, "dev", request.interface_name]
                    self._check(where, self._in(request.netns, cmd))

    # --- delete ------------------------------------------------------------------------------

    def delete(self, netns: str, interface_name: str) -> None:
        """Delete the pod's veth pair (deleting the pod end takes the host end with it). A gone
        namespace or interface is not an error; an interface that is not a veth is not
        touched."""
        where = _where(netns, interface_name, None)
        if not netns or not os.path.exists(netns):
            log.info("veth_delete_netns_gone", netns=netns, interface=interface_name)
            return
        link = self._link(netns, interface_name, where)
        if link is None:
            log.info("veth_delete_absent", netns=netns, interface=interface_name)
            return
        if _kind(link) != "veth":
            raise PodError(
                f"{where}: interface {interface_name} is a {_kind(link) or 'non-veth'} device, not a veth "
                "this driver made; not deleting it"
            )
        out = self._run(self._in(netns, [self._ip, "link", "del", "dev", interface_name]))
        if out.returncode != 0 and not _is_missing(out.stderr):
            raise command_error(where, self._in(netns, [self._ip, "link", "del", "dev", interface_name]), out)
        log.info("veth_deleted", netns=netns, interface=interface_name)

    # --- helpers -----------------------------------------------------------------------------

    def _in(self, netns: str, argv: list[str]) -> list[str]:
        return [self._nsenter, f"--net={netns}", *argv]

    def _link(self, netns: str | None, name: str, where: str) -> dict[str, Any] | None:
        """`ip -j -d link show` of one interface, in the host or in `netns`; None when absent."""
        argv = [self._ip, "-j", "-d", "link", "show", "dev", name]
        if netns is not None:
            argv = self._in(netns, argv)
        out = self._run(argv)
        if out.returncode != 0:
            if _is_missing(out.stderr):
                return None
            raise command_error(where, argv, out)
        links = _json_list(out.stdout, where)
        return links[0] if links else None

    def _check(self, where: str, argv: list[str]) -> CommandResult:
        out = self._run(argv)
        if out.returncode != 0:
            raise command_error(where, argv, out)
        return out


def forwarding_sysctls(request: PodRequest, sysctl: str = "sysctl") -> list[list[str]]:
    """The commands (to run in the pod's namespace) that let the pod forward packets, for the
    families it has addresses in, when the CNI request allows it (`allow_ip_forwarding`, from
    the plugin's container settings); none otherwise (the namespace's default: off)."""
    if not request.allow_ip_forwarding:
        return []
    families = {a.version for a in request.addresses}
    keys = [k for f, k in ((4, "net.ipv4.ip_forward"), (6, "net.ipv6.conf.all.forwarding")) if f in families]
    return [[sysctl, "-w", f"{k}=1"] for k in keys]


def pod_routes(request: PodRequest) -> list[IPNetwork]:
    """The routes to install in the pod: the request's routes for the families the pod has an
    address in, or a default route for a family with no route given. Routes of a family the
    pod has no address in are skipped (the kernel would refuse them without a source)."""
    families = sorted({a.version for a in request.addresses})
    out: list[IPNetwork] = []
    for family in families:
        given = [r for r in request.routes if r.version == family]
        out.extend(given or [DEFAULT_ROUTES[family]])
    skipped = [str(r) for r in request.routes if r.version not in families]
    if skipped:
        log.info(
            "pod_routes_skipped", netns=request.netns, routes=skipped, reason="no address of that family"
        )
    return out


def _route_cmd(ip: str, route: IPNetwork, ifname: str) -> list[str]:
    if route.version == 4:
        return [ip, "route", "replace", str(route), "via", str(GATEWAY_V4), "dev", ifname, "onlink"]
    return [ip, "-6", "route", "replace", str(route), "via", str(GATEWAY_V6), "dev", ifname]


def _where(netns: str, interface_name: str, host_interface_name: str | None) -> str:
    host = f", host end {host_interface_name}" if host_interface_name else ""
    return f"veth {interface_name} in netns {netns or '<none>'}{host}"


def _paired(host: dict[str, Any], pod: dict[str, Any]) -> bool:
    """Both ends are veths and each names the other as its peer (by ifindex across the two
    namespaces, which `ip -j` prints as link_index)."""
    return (
        _kind(host) == "veth"
        and _kind(pod) == "veth"
        and host.get("link_index") == pod.get("ifindex")
        and pod.get("link_index") == host.get("ifindex")
    )


def _kind(link: dict[str, Any]) -> str:
    return str(link.get("linkinfo", {}).get("info_kind", ""))


def _is_missing(stderr: str) -> bool:
    return "does not exist" in stderr or "Cannot find device" in stderr


def _json_list(text: str, where: str) -> list[dict[str, Any]]:
    try:
        value = json.loads(text or "[]")
    except json.JSONDecodeError as e:
        raise PodError(f"{where}: cannot parse `ip -j` output: {e}") from e
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def command_error(where: str, argv: Sequence[str], out: CommandResult) -> PodError:
    detail = out.stderr.strip() or out.stdout.strip() or "no output"
    shown = shlex.join(argv).replace(shlex.quote(TX_CSUM_OFF), "<tx-csum-off script>")
    return PodError(f"{where}: `{shown}` failed (exit {out.returncode}): {detail}")
