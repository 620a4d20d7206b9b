"""The Linux half of pod interfaces for `vpp.pods.PodInterfaces` (its `PodLinks`).

A TUN tap is made by VPP inside the pod's namespace with its name, MTU and one address per
family; the pod's other addresses, its forwarding sysctls (`allow_ip_forwarding`) and its routes
are added here, the routes as plain device routes (a TUN link is point to point: no gateway, no
neighbour). Veth pairs (the fallback where VPP cannot
make taps) are entirely `cni/netns.py`'s.
"""

from __future__ import annotations

from collections.abc import Sequence

from .netns import Runner, VethPlumber, command_error, forwarding_sysctls, run_command
from .types import IPNetwork, PodRequest


class LinuxPodLinks:
    """`PodLinks` on this host, through `ip` and `nsenter` run by `runner`."""

    def __init__(
        self,
        runner: Runner = run_command,
        *,
        ip: str = "ip",
        nsenter: str = "nsenter",
        sysctl: str = "sysctl",
    ) -> None:
        self._run = runner
        self._ip = ip
        self._nsenter = nsenter
        self._sysctl = sysctl
        self.veth = VethPlumber(runner, ip=ip, nsenter=nsenter, sysctl=sysctl)

    def tun_configure(self, request: PodRequest, routes: Sequence[IPNetwork]) -> None:
        netns, ifname = request.netns, request.interface_name
        where = f"pod netns {netns}, interface {ifname}"
        # VPP gave the tap the first address of each family (`vpp.pods`); the others go here.
        firsts = {a.version: a for a in reversed(request.addresses)}
        for address in request.addresses:
            if firsts[address.version] is address:
                continue
            cmd = [self._ip, "addr", "replace", str(address), "dev", ifname]
            if address.version == 6:
                cmd.append("nodad")
            self._check(where, [self._nsenter, f"--net={netns}", *cmd])
        for argv in forwarding_sysctls(request, self._sysctl):
            self._check(where, [self._nsenter, f"--net={netns}", *argv])
        for route in routes:
            family = [] if route.version == 4 else ["-6"]
            cmd = [self._ip, *family, "route", "replace", str(route), "dev", ifname]
            self._check(where, [self._nsenter, f"--net={netns}", *cmd])

    def _check(self, where: str, argv: list[str]) -> None:
        out = self._run(argv)
        if out.returncode != 0:
            raise command_error(where, argv, out)

    def create_veth(self, request: PodRequest, mtu: int) -> str:
        return self.veth.add(request, mtu)

    def delete_veth(self, netns: str, interface_name: str, host_interface_name: str) -> None:
        self.veth.delete(netns, interface_name)
