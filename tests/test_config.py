"""Felix parameters parsed the way Felix parses them, with Felix's defaults."""

from __future__ import annotations

import pytest

from calico_vpp_driver.config import Config, ProtoPort, load, parse_port_list


def test_defaults_match_felix() -> None:
    cfg, problems = load({}, environ={})
    assert problems == []
    assert cfg.default_endpoint_to_host_action == "DROP"
    assert cfg.reporting_interval_secs == 30
    assert cfg.vxlan_vni == 4096 and cfg.vxlan_port == 4789
    assert cfg.interface_prefix == ("cali",)
    assert cfg.max_ipset_size == 1048576
    assert cfg.ipv6_support is True
    assert not cfg.allow_vxlan_packets_from_workloads and not cfg.allow_ipip_packets_from_workloads
    assert [(p.protocol, p.port) for p in cfg.failsafe_inbound_host_ports] == [
        ("tcp", 22),
        ("udp", 68),
        ("tcp", 179),
        ("tcp", 2379),
        ("tcp", 2380),
        ("tcp", 5473),
        ("tcp", 6443),
        ("tcp", 6666),
        ("tcp", 6667),
    ]
    assert [(p.protocol, p.port) for p in cfg.failsafe_outbound_host_ports] == [
        ("udp", 53),
        ("udp", 67),
        ("tcp", 179),
        ("tcp", 2379),
        ("tcp", 2380),
        ("tcp", 5473),
        ("tcp", 6443),
        ("tcp", 6666),
        ("tcp", 6667),
    ]
    assert cfg.vpp_api_socket == "/run/vpp/api.sock" and cfg.vpp_policy_backend == "auto"


@pytest.mark.parametrize(
    ("raw", "attr", "value"),
    [
        ({"DefaultEndpointToHostAction": "Accept"}, "default_endpoint_to_host_action", "ACCEPT"),
        ({"defaultendpointtohostaction": "return"}, "default_endpoint_to_host_action", "RETURN"),
        ({"ReportingIntervalSecs": "0"}, "reporting_interval_secs", 0.0),
        ({"ReportingIntervalSecs": "2.5"}, "reporting_interval_secs", 2.5),
        ({"IPv6Support": "no"}, "ipv6_support", False),
        ({"Ipv6Support": "F"}, "ipv6_support", False),
        ({"AllowVXLANPacketsFromWorkloads": "yes"}, "allow_vxlan_packets_from_workloads", True),
        ({"VXLANVNI": "0x10"}, "vxlan_vni", 16),
        ({"InterfacePrefix": "cali,tap"}, "interface_prefix", ("cali", "tap")),
        ({"FailsafeInboundHostPorts": "none"}, "failsafe_inbound_host_ports", ()),
        (
            {"FailsafeInboundHostPorts": ""},
            "failsafe_inbound_host_ports",
            Config().failsafe_inbound_host_ports,
        ),
        ({"FelixHostname": "node-7"}, "felix_hostname", "node-7"),
        ({"NATPortRange": "32768:65535"}, "nat_port_range", (32768, 65535)),
        ({"vppapisocket": "/tmp/vpp.sock"}, "vpp_api_socket", "/tmp/vpp.sock"),
        ({"VPPPolicyBackend": "ACL"}, "vpp_policy_backend", "acl"),
    ],
)
def test_values(raw: dict[str, str], attr: str, value: object) -> None:
    cfg, problems = load(raw, environ={})
    assert problems == []
    assert getattr(cfg, attr) == value


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ({"DefaultEndpointToHostAction": "Allow"}, "DefaultEndpointToHostAction"),
        ({"Ipv6Support": "maybe"}, "Ipv6Support"),
        ({"VXLANPort": "70000"}, "VXLANPort"),
        ({"ReportingIntervalSecs": "soon"}, "ReportingIntervalSecs"),
        ({"FailsafeInboundHostPorts": "icmp:1"}, "FailsafeInboundHostPorts"),
        ({"VPPPolicyBackend": "ebpf"}, "VPPPolicyBackend"),
        ({"NATOutgoingAddress": "300.1.1.1"}, "NATOutgoingAddress"),
    ],
)
def test_bad_values_fall_back_to_default_and_name_the_parameter(raw: dict[str, str], name: str) -> None:
    cfg, problems = load(raw, environ={})
    assert [p.name for p in problems] == [name]
    assert name in str(problems[0]) and next(iter(raw.values())) in str(problems[0])
    default = getattr(Config(), _attr(name))
    assert getattr(cfg, _attr(name)) == default


def _attr(name: str) -> str:
    from calico_vpp_driver.config import _snake

    return _snake(name)


def test_port_list_forms() -> None:
    assert parse_port_list("22, udp:68,tcp:10.0.0.0/8:443,udp:[fd00::/64]:53") == (
        ProtoPort("tcp", 22),
        ProtoPort("udp", 68),
        ProtoPort("tcp", 443, "10.0.0.0/8"),
        ProtoPort("udp", 53, "fd00::/64"),
    )


def test_precedence_felix_then_env_then_default() -> None:
    env = {"CALICO_VPP_API_SOCKET": "/env.sock", "CALICO_VPP_POLICY_BACKEND": "npol"}
    cfg, _ = load({"VPPAPISocket": "/felix.sock"}, environ=env)
    assert cfg.vpp_api_socket == "/felix.sock"
    assert cfg.vpp_policy_backend == "npol"


def test_unknown_parameters_are_kept_as_passthrough() -> None:
    cfg, problems = load({"SomethingNew": "1", "BPFEnabled": "false"}, environ={})
    assert problems == []
    assert dict(cfg.passthrough) == {"SomethingNew": "1", "BPFEnabled": "false"}
