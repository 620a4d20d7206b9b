"""What a CNI request asks of the dataplane, independent of gRPC and of VPP.

The gRPC server (`cni/server.py`) turns `cni.AddRequest` / `cni.DelRequest` into these values
(validating them), and hands them to a `PodHandler` (`vpp/pods.py` on a real node). Keeping
the boundary plain data lets both sides be tested alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
    ip_address,
    ip_interface,
    ip_network,
)
from typing import Any, Protocol

IPInterface = IPv4Interface | IPv6Interface
IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


@dataclass(frozen=True, slots=True)
class WorkloadIdentity:
    """Who the pod is, as Felix names its workload endpoint (`WorkloadEndpointID`)."""

    orchestrator: str  # "k8s"
    workload: str  # "<namespace>/<pod>" for Kubernetes
    endpoint: str  # "eth0"

    def __str__(self) -> str:
        return f"{self.orchestrator}/{self.workload}/{self.endpoint}"


@dataclass(frozen=True, slots=True)
class PodRequest:
    """A CNI ADD: give the pod in `netns` an interface `interface_name` with these addresses."""

    netns: str  # path of the pod's network namespace, e.g. /var/run/netns/cni-1234
    interface_name: str  # inside the pod, e.g. "eth0"
    host_interface_name: str  # the name Felix's WorkloadEndpoint.name will carry (cali...)
    identity: WorkloadIdentity
    addresses: tuple[IPInterface, ...]  # the pod's addresses, with their prefix lengths
    gateways: tuple[IPAddress, ...] = ()  # as the IPAM result gave them (may be empty)
    routes: tuple[IPNetwork, ...] = ()  # routes to install in the pod (default routes usually)
    mtu: int = 0  # 0 = the driver's configured pod MTU
    allow_ip_forwarding: bool = False
    options: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # dataplane_options

    def to_json(self) -> dict[str, Any]:
        """The request as JSON values (kept so that pods VPP lost can be made again)."""
        return {
            "netns": self.netns,
            "interface_name": self.interface_name,
            "host_interface_name": self.host_interface_name,
            "identity": [self.identity.orchestrator, self.identity.workload, self.identity.endpoint],
            "addresses": [str(a) for a in self.addresses],
            "gateways": [str(g) for g in self.gateways],
            "routes": [str(r) for r in self.routes],
            "mtu": self.mtu,
            "allow_ip_forwarding": self.allow_ip_forwarding,
            "options": [list(o) for o in self.options],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PodRequest:
        """`to_json`'s inverse; raises KeyError, TypeError or ValueError on anything else."""
        orchestrator, workload, endpoint = (str(x) for x in data["identity"])
        return cls(
            netns=str(data["netns"]),
            interface_name=str(data["interface_name"]),
            host_interface_name=str(data["host_interface_name"]),
            identity=WorkloadIdentity(orchestrator, workload, endpoint),
            addresses=tuple(ip_interface(a) for a in data["addresses"]),
            gateways=tuple(ip_address(g) for g in data["gateways"]),
            routes=tuple(ip_network(r) for r in data["routes"]),
            mtu=int(data["mtu"]),
            allow_ip_forwarding=bool(data["allow_ip_forwarding"]),
            options=tuple((str(k), str(v)) for k, v in data["options"]),
        )


#: The MAC a TUN pod's reply carries (as Calico/VPP answers): the interface has none, but the
#: Calico CNI plugin parses the reply's MAC with Go's net.ParseMAC and fails the ADD (releasing
#: the pod's addresses) when it cannot.
TUN_CONTAINER_MAC = "02:00:00:00:00:00"

_HEX = frozenset("0123456789abcdefABCDEF")


def is_go_mac(text: str) -> bool:
    """Whether Go's `net.ParseMAC` accepts `text`: 6, 8 or 20 groups of two hex digits all
    separated by ':' or all by '-', or groups of four hex digits separated by '.'."""
    if len(text) < 14:
        return False
    if text[2] in ":-":
        sep, width = text[2], 2
    elif text[4] == ".":
        sep, width = ".", 4
    else:
        return False
    groups = text.split(sep)
    octets = len(groups) * width // 2
    return octets in (6, 8, 20) and all(len(g) == width and set(g) <= _HEX for g in groups)


@dataclass(frozen=True, slots=True)
class PodResult:
    """What the CNI plugin gets back: the host-side interface name (it becomes the workload
    endpoint's interface name) and the pod-side MAC, which must be one Go's net.ParseMAC reads
    (`is_go_mac`; TUN pods, which have none, answer `TUN_CONTAINER_MAC`)."""

    host_interface_name: str
    container_mac: str = TUN_CONTAINER_MAC


class PodError(Exception):
    """A request that cannot be done; the message is what the operator reads in the CNI
    plugin's error (name the pod, the interface and what to do)."""


class PodHandler(Protocol):
    """What the CNI server needs from the node's dataplane. Both calls are idempotent: the CNI
    plugin retries, and kubelet repeats DELs."""

    def add(self, request: PodRequest) -> PodResult:
        """Create (or find, when it already exists) the pod's interface; raise PodError."""

    def delete(self, netns: str, interface_name: str) -> None:
        """Remove the pod's interface and everything the driver made for it; nothing to
        delete is not an error. An empty `netns` (the runtime had already removed the
        namespace) removes the pods with that interface name whose namespace is gone. Raise
        PodError when it cannot be done."""
