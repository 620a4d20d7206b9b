"""Felix parameters the driver honours, with Felix's own defaults, plus the driver's knobs.

Felix's `ConfigUpdate.config` carries only parameters that were explicitly set,
as raw strings under their canonical names; the driver applies Felix's defaults
itself (from felix/config/config_params.go, Calico v3.33) and parses values the
way Felix does: names match case-insensitively, booleans accept
true/1/yes/y/t and false/0/no/n/f, "none" forces a parameter's zero value, an
empty string means "not set". Unknown parameters are passed through by Felix
(env `FELIX_FOO=bar` arrives as `foo`), which is how the driver's own knobs
(`VPP*` below) can be set the Felix way; environment variables
`CALICO_VPP_*` are the alternative. Precedence: Felix config, then the
environment, then the default.

A value that does not parse is reported (by name, with the raw value) and the
default is used instead, so a typo never takes the dataplane down.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any


class ConfigError(ValueError):
    """A parameter's raw value does not parse; names the parameter and the value."""


@dataclass(frozen=True, slots=True)
class ProtoPort:
    """One failsafe port: protocol, port and an optional CIDR restriction."""

    protocol: str
    port: int
    net: str = ""


def _parse_bool(raw: str) -> bool:
    low = raw.lower()
    if low in ("true", "1", "yes", "y", "t"):
        return True
    if low in ("false", "0", "no", "n", "f"):
        return False
    raise ConfigError("invalid boolean")


def _parse_int(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw, 0)
        except ValueError:
            raise ConfigError("invalid int") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(f"value must be in [{lo}, {hi}]")
        return value

    return parse


def _parse_seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError("invalid float") from None
    if value < 0:
        raise ConfigError("value must be at least 0")
    return value


def _parse_oneof(*options: str) -> Callable[[str], str]:
    canonical = {o.lower(): o for o in options}

    def parse(raw: str) -> str:
        try:
            return canonical[raw.lower()]
        except KeyError:
            raise ConfigError(f"unknown option (expected one of {', '.join(options)})") from None

    return parse


def _parse_string(raw: str) -> str:
    return raw


def _parse_iface_list(raw: str) -> tuple[str, ...]:
    items = tuple(p.strip() for p in raw.split(",") if p.strip())
    if not items:
        raise ConfigError("empty interface list")
    return items


def _parse_ipv4(raw: str) -> str:
    try:
        ipaddress.IPv4Address(raw)
    except ValueError:
        raise ConfigError("invalid IPv4 address") from None
    return raw


def _parse_cidr_list(raw: str) -> tuple[str, ...]:
    out = []
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ConfigError(f"invalid CIDR {item!r}") from None
    return tuple(out)


def _parse_port_range(raw: str) -> tuple[int, int]:
    first, _, last = raw.partition(":")
    try:
        lo, hi = int(first), int(last or first)
    except ValueError:
        raise ConfigError("not a port range (n or n:m)") from None
    if not 0 <= lo <= hi <= 65535:
        raise ConfigError("port range out of bounds")
    return lo, hi


def parse_port_list(raw: str) -> tuple[ProtoPort, ...]:
    """Felix's port-list: `(tcp|udp):<cidr>:<port>`, `(tcp|udp):<port>` or `<port>`;
    IPv6 CIDRs in square brackets."""
    out: list[ProtoPort] = []
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        net = ""
        if "[" in item and "]:" in item:
            start, end = item.index("["), item.index("]:")
            net = item[start + 1 : end]
            item = item[:start] + item[end + 2 :]
        parts = item.split(":")
        if len(parts) > 3:
            raise ConfigError("ports should be <protocol>:<net>:<number>, <protocol>:<number> or <number>")
        proto = "tcp"
        if len(parts) == 3:
            proto, net, port_s = parts[0].lower(), parts[1], parts[2]
        elif len(parts) == 2:
            proto, port_s = parts[0].lower(), parts[1]
        else:
            port_s = parts[0]
        if proto not in ("tcp", "udp"):
            raise ConfigError(f"unknown protocol: {proto}")
        try:
            port = int(port_s)
        except ValueError:
            raise ConfigError("ports should be integers") from None
        if not 0 <= port <= 65535:
            raise ConfigError("ports must be in range 0-65535")
        if net:
            try:
                net = str(ipaddress.ip_network(net, strict=False))
            except ValueError:
                raise ConfigError(f"invalid CIDR or IP {net}") from None
        out.append(ProtoPort(proto, port, net))
    return tuple(out)


def _default_hostname() -> str:
    return os.environ.get("NODENAME") or socket.gethostname().lower()


_FAILSAFE_IN = "tcp:22,udp:68,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667"
_FAILSAFE_OUT = "udp:53,udp:67,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667"

# name -> (parser, default raw value or None for a computed/zero default, zero value for "none")
_FELIX_PARAMS: dict[str, tuple[Callable[[str], Any], str | None, Any]] = {
    "FelixHostname": (_parse_string, None, ""),
    "DefaultEndpointToHostAction": (_parse_oneof("DROP", "RETURN", "ACCEPT"), "DROP", "DROP"),
    "FailsafeInboundHostPorts": (parse_port_list, _FAILSAFE_IN, ()),
    "FailsafeOutboundHostPorts": (parse_port_list, _FAILSAFE_OUT, ()),
    "Ipv6Support": (_parse_bool, "true", False),
    "ReportingIntervalSecs": (_parse_seconds, "30", 0.0),
    "EndpointReportingEnabled": (_parse_bool, "false", False),
    "EndpointReportingDelaySecs": (_parse_seconds, "1", 0.0),
    "InterfacePrefix": (_parse_iface_list, "cali", ("cali",)),
    "VXLANEnabled": (_parse_bool, None, None),
    "VXLANVNI": (_parse_int(0, 2**24 - 1), "4096", 0),
    "VXLANPort": (_parse_int(0, 65535), "4789", 0),
    "VXLANMTU": (_parse_int(0), "0", 0),
    "VXLANMTUV6": (_parse_int(0), "0", 0),
    "IpInIpEnabled": (_parse_bool, None, None),
    "IpInIpMtu": (_parse_int(0), "0", 0),
    "AllowVXLANPacketsFromWorkloads": (_parse_bool, "false", False),
    "AllowIPIPPacketsFromWorkloads": (_parse_bool, "false", False),
    "MaxIpsetSize": (_parse_int(1), "1048576", 1048576),
    "WorkloadSourceSpoofing": (_parse_oneof("Disabled", "Any"), "Disabled", "Disabled"),
    "NATOutgoingAddress": (_parse_ipv4, None, ""),
    "NATPortRange": (_parse_port_range, None, None),
    "NATOutgoingExclusions": (
        _parse_oneof("IPPoolsOnly", "IPPoolsAndHostIPs"),
        "IPPoolsOnly",
        "IPPoolsOnly",
    ),
    "ServiceLoopPrevention": (_parse_oneof("Drop", "Reject", "Disabled"), "Drop", "Drop"),
    "ExternalNodesCIDRList": (_parse_cidr_list, None, ()),
    "IPForwarding": (_parse_oneof("Enabled", "Disabled"), "Enabled", "Enabled"),
    "LogSeverityScreen": (
        _parse_oneof("TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "FATAL"),
        "INFO",
        "INFO",
    ),
    "ClusterGUID": (_parse_string, "baddecaf", ""),
    "ClusterType": (_parse_string, "", ""),
    "CalicoVersion": (_parse_string, "", ""),
}

# The driver's own knobs: name -> (parser, default, environment variable).
_DRIVER_PARAMS: dict[str, tuple[Callable[[str], Any], str, str]] = {
    "VPPAPISocket": (_parse_string, "/run/vpp/api.sock", "CALICO_VPP_API_SOCKET"),
    "VPPPolicyBackend": (_parse_oneof("auto", "npol", "acl"), "auto", "CALICO_VPP_POLICY_BACKEND"),
    "VPPMetricsListen": (_parse_string, "", "CALICO_VPP_METRICS_LISTEN"),
    "VPPStateDir": (_parse_string, "/var/lib/calico-vpp-driver", "CALICO_VPP_STATE_DIR"),
    "VPPCNISocket": (_parse_string, "", "CALICO_VPP_CNI_SOCKET"),
    "VPPPodInterface": (_parse_oneof("auto", "tap", "veth"), "auto", "CALICO_VPP_POD_INTERFACE"),
    "VPPPodMTU": (_parse_int(0, 65535), "1450", "CALICO_VPP_POD_MTU"),
    "VPPHostInterfaces": (_parse_string, "", "CALICO_VPP_HOST_INTERFACES"),
    "VPPFloatingIPPorts": (_parse_string, "tcp:1-1023,udp:1-1023", "CALICO_VPP_FLOATING_IP_PORTS"),
}


def _snake(name: str) -> str:
    special = {
        "FelixHostname": "felix_hostname",
        "Ipv6Support": "ipv6_support",
        "VXLANEnabled": "vxlan_enabled",
        "VXLANVNI": "vxlan_vni",
        "VXLANPort": "vxlan_port",
        "VXLANMTU": "vxlan_mtu",
        "VXLANMTUV6": "vxlan_mtu_v6",
        "IpInIpEnabled": "ipip_enabled",
        "IpInIpMtu": "ipip_mtu",
        "AllowVXLANPacketsFromWorkloads": "allow_vxlan_packets_from_workloads",
        "AllowIPIPPacketsFromWorkloads": "allow_ipip_packets_from_workloads",
        "NATOutgoingAddress": "nat_outgoing_address",
        "NATPortRange": "nat_port_range",
        "NATOutgoingExclusions": "nat_outgoing_exclusions",
        "ExternalNodesCIDRList": "external_nodes_cidr_list",
        "IPForwarding": "ip_forwarding",
        "ClusterGUID": "cluster_guid",
        "VPPAPISocket": "vpp_api_socket",
        "VPPPolicyBackend": "vpp_policy_backend",
        "VPPMetricsListen": "vpp_metrics_listen",
        "VPPStateDir": "vpp_state_dir",
        "VPPCNISocket": "vpp_cni_socket",
        "VPPPodInterface": "vpp_pod_interface",
        "VPPPodMTU": "vpp_pod_mtu",
        "VPPHostInterfaces": "vpp_host_interfaces",
        "VPPFloatingIPPorts": "vpp_floating_ip_ports",
    }
    if name in special:
        return special[name]
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Config:
    """Every parameter the driver uses, typed, with Felix's defaults applied."""

    felix_hostname: str = field(default_factory=_default_hostname)
    default_endpoint_to_host_action: str = "DROP"
    failsafe_inbound_host_ports: tuple[ProtoPort, ...] = parse_port_list(_FAILSAFE_IN)
    failsafe_outbound_host_ports: tuple[ProtoPort, ...] = parse_port_list(_FAILSAFE_OUT)
    ipv6_support: bool = True
    reporting_interval_secs: float = 30.0
    endpoint_reporting_enabled: bool = False
    endpoint_reporting_delay_secs: float = 1.0
    interface_prefix: tuple[str, ...] = ("cali",)
    vxlan_enabled: bool | None = None
    vxlan_vni: int = 4096
    vxlan_port: int = 4789
    vxlan_mtu: int = 0
    vxlan_mtu_v6: int = 0
    ipip_enabled: bool | None = None
    ipip_mtu: int = 0
    allow_vxlan_packets_from_workloads: bool = False
    allow_ipip_packets_from_workloads: bool = False
    max_ipset_size: int = 1048576
    workload_source_spoofing: str = "Disabled"
    nat_outgoing_address: str = ""
    nat_port_range: tuple[int, int] | None = None
    nat_outgoing_exclusions: str = "IPPoolsOnly"
    service_loop_prevention: str = "Drop"
    external_nodes_cidr_list: tuple[str, ...] = ()
    ip_forwarding: str = "Enabled"
    log_severity_screen: str = "INFO"
    cluster_guid: str = "baddecaf"
    cluster_type: str = ""
    calico_version: str = ""
    vpp_api_socket: str = "/run/vpp/api.sock"
    vpp_policy_backend: str = "auto"
    vpp_metrics_listen: str = ""
    vpp_state_dir: str = "/var/lib/calico-vpp-driver"
    # CNI gRPC server socket ("" = no CNI server); pod interface kind; pod MTU when the CNI
    # request gives none.
    vpp_cni_socket: str = ""
    vpp_pod_interface: str = "auto"
    vpp_pod_mtu: int = 1450
    # Host endpoint interface names -> VPP interface tags ("eth0=main-eth0,..."; "" = the tags
    # Calico/VPP's manager sets: main-<name> for the uplink, host-<name> for the host tap).
    vpp_host_interfaces: str = ""
    # The ports a floating IP forwards (cnat translations match exact ports: one per port).
    vpp_floating_ip_ports: str = "tcp:1-1023,udp:1-1023"
    # Parameters Felix passed that the driver does not use, kept for operators.
    passthrough: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    name: str
    raw: str
    reason: str

    def __str__(self) -> str:
        return f"config parameter {self.name}={self.raw!r}: {self.reason}; using the default"


def load(
    felix_raw: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> tuple[Config, list[ConfigProblem]]:
    """Build the typed config from Felix's raw map and the environment.

    Returns the config and the problems found (each names the parameter); the
    caller logs them. Never raises for bad values.
    """
    env = os.environ if environ is None else environ
    by_lower = {k.lower(): (k, v) for k, v in felix_raw.items() if v != ""}
    values: dict[str, Any] = {}
    problems: list[ConfigProblem] = []

    def parse(name: str, parser: Callable[[str], Any], raw: str, zero: Any) -> None:
        if raw.lower() == "none":
            values[_snake(name)] = zero
            return
        try:
            values[_snake(name)] = parser(raw.strip())
        except ConfigError as exc:
            problems.append(ConfigProblem(name, raw, str(exc)))

    known = set()
    for name, (parser, _default, zero) in _FELIX_PARAMS.items():
        known.add(name.lower())
        if name.lower() in by_lower:
            parse(name, parser, by_lower[name.lower()][1], zero)
    for name, (parser, _default, env_name) in _DRIVER_PARAMS.items():
        known.add(name.lower())
        if name.lower() in by_lower:
            parse(name, parser, by_lower[name.lower()][1], "")
        elif env.get(env_name):
            parse(name, parser, env[env_name], "")
    values["passthrough"] = tuple(sorted((k, v) for low, (k, v) in by_lower.items() if low not in known))
    names = {f.name for f in fields(Config)}
    assert set(values) <= names, set(values) - names
    return Config(**values), problems


DRIVER_KNOBS = {name: (default, env) for name, (_p, default, env) in _DRIVER_PARAMS.items()}
