"""The Linux half of pod interfaces for `vpp.pods.PodInterfaces` (its `PodLinks`).

A TUN tap is made by VPP inside the pod's namespace with its name, MTU and addresses; what VPP
does not do is route through it, so the pod's routes are added here, as plain device routes (a
TUN link is point to point: no gateway, no neighbour). Veth pairs (the fallback where VPP cannot
make taps) are entirely `cni/netns.py`'s.
"""

from __future__ import annotations

from collections.abc import Sequence

from .netns import Runner, VethPlumber, command_error, run_command
from .types import IPNetwork, PodRequest


class LinuxPodLinks:
    """`PodLinks` on this host, through `ip` and `nsenter` run by `runner`."""

    def __init__(self, runner: Runner = run_command, *, ip: str = "ip", nsenter: str = "nsenter") -> None:
        self._run = runner
        self._ip = ip
        self._nsenter = nsenter
        self.veth = VethPlumber(runner, ip=ip, nsenter=nsenter)

    def tun_routes(self, netns: str, interface_name: str, routes: Sequence[IPNetwork]) -> None:
        for route in routes:
            family = [] if route.version == 4 else ["-6"]
            argv = [
                self._nsenter,
                f"--net={netns}",
                self._ip,
                *family,
                "route",
                "replace",
                str(route),
                "dev",
                interface_name,
            ]
            out = self._run(argv)
            if out.returncode != 0:
                raise command_error(f"pod netns {netns}, interface {interface_name}", argv, out)

    def create_veth(self, request: PodRequest, mtu: int) -> str:
        return self.veth.add(request, mtu)

    def delete_veth(self, netns: str, interface_name: str, host_interface_name: str) -> None:
        self.veth.delete(netns, interface_name)
