"""The schema in proto/ is Felix's wire contract; the generated code must match it."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from calico_vpp_driver.felix import felixbackend_pb2 as pb

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Oneof field numbers of Calico v3.33 (felix-protocol.md, checked against
# felix/proto/felixbackend.proto), plus v3.32's host metadata messages 35-38.
TO_DATAPLANE = {
    "in_sync": 1,
    "ipset_update": 2,
    "ipset_delta_update": 3,
    "ipset_remove": 4,
    "active_profile_update": 5,
    "active_profile_remove": 6,
    "active_policy_update": 7,
    "active_policy_remove": 8,
    "host_endpoint_update": 9,
    "host_endpoint_remove": 10,
    "workload_endpoint_update": 11,
    "workload_endpoint_remove": 12,
    "config_update": 13,
    "host_metadata_update": 14,
    "ipam_pool_update": 16,
    "ipam_pool_remove": 17,
    "host_metadata_remove": 18,
    "service_account_update": 19,
    "service_account_remove": 20,
    "namespace_update": 21,
    "namespace_remove": 22,
    "route_update": 23,
    "route_remove": 24,
    "vtep_update": 25,
    "vtep_remove": 26,
    "wireguard_endpoint_update": 27,
    "wireguard_endpoint_remove": 28,
    "global_bgp_config_update": 29,
    "encapsulation": 30,
    "service_update": 31,
    "service_remove": 32,
    "wireguard_endpoint_v6_update": 33,
    "wireguard_endpoint_v6_remove": 34,
    "host_metadata_v6_update": 35,
    "host_metadata_v6_remove": 36,
    "host_metadata_v4v6_update": 37,
    "host_metadata_v4v6_remove": 38,
}
FROM_DATAPLANE = {
    "process_status_update": 3,
    "host_endpoint_status_update": 4,
    "host_endpoint_status_remove": 5,
    "workload_endpoint_status_update": 6,
    "workload_endpoint_status_remove": 7,
    "wireguard_status_update": 9,
    "dataplane_in_sync": 10,
}

# (message, field, number): fields where one wrong number would silently lose data.
FIELDS = [
    ("ToDataplane", "sequence_number", 15),
    ("FromDataplane", "sequence_number", 8),
    ("PolicyID", "name", 2),
    ("PolicyID", "namespace", 3),
    ("PolicyID", "kind", 4),
    ("Policy", "namespace", 5),
    ("Policy", "tier", 8),
    ("Rule", "dst_ip_port_set_ids", 15),
    ("Rule", "src_named_port_ip_set_ids", 12),
    ("Rule", "dst_named_port_ip_set_ids", 13),
    ("Rule", "not_protocol", 102),
    ("Rule", "not_src_ip_set_ids", 109),
    ("Rule", "not_dst_named_port_ip_set_ids", 113),
    ("Rule", "http_match", 122),
    ("Rule", "rule_id", 201),
    ("WorkloadEndpointID", "orchestrator_id", 2),
    ("WorkloadEndpointUpdate", "endpoint", 5),
    ("WorkloadEndpoint", "allow_spoofed_source_prefixes", 10),
    ("WorkloadEndpoint", "live_migration_vmi_name", 19),
    ("HostEndpointID", "endpoint_id", 2),
    ("HostEndpointUpdate", "endpoint", 3),
    ("HostEndpoint", "untracked_tiers", 6),
    ("HostEndpoint", "forward_tiers", 8),
    ("TierInfo", "default_action", 4),
    ("WorkloadEndpointStatusUpdate", "endpoint", 3),
    ("RouteUpdate", "types", 12),
    ("RouteUpdate", "borrowed", 11),
    ("RouteRemove", "dst", 2),
    ("Encapsulation", "no_encap_enabled", 4),
    ("ServiceUpdate", "loadbalancer_ingress_ips", 8),
    ("HostMetadataUpdate", "labels", 5),
]


def test_payload_numbers() -> None:
    payload = pb.ToDataplane.DESCRIPTOR.oneofs_by_name["payload"]
    assert {f.name: f.number for f in payload.fields} == TO_DATAPLANE
    out = pb.FromDataplane.DESCRIPTOR.oneofs_by_name["payload"]
    assert {f.name: f.number for f in out.fields} == FROM_DATAPLANE


@pytest.mark.parametrize(("message", "field", "number"), FIELDS)
def test_field_numbers(message: str, field: str, number: int) -> None:
    desc = getattr(pb, message).DESCRIPTOR
    assert desc.fields_by_name[field].number == number


def test_rule_types_are_repeated_policy_ids() -> None:
    # v3.32+ sends policy lists as PolicyID messages; strings would not decode.
    f = pb.TierInfo.DESCRIPTOR.fields_by_name["ingress_policies"]
    assert f.message_type is pb.PolicyID.DESCRIPTOR


@pytest.mark.parametrize(("proto", "package"), [("felixbackend", "felix"), ("cnibackend", "cni")])
def test_generated_code_is_current(tmp_path: pathlib.Path, proto: str, package: str) -> None:
    pytest.importorskip("grpc_tools")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'proto'}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            str(ROOT / "proto" / f"{proto}.proto"),
        ],
        check=True,
    )
    for name in (f"{proto}_pb2.py", f"{proto}_pb2.pyi"):
        fresh = (tmp_path / name).read_text()
        checked_in = (ROOT / "calico_vpp_driver" / package / name).read_text()
        assert fresh == checked_in, f"{name} is stale: run `make proto`"


def test_v332_host_metadata_decodes() -> None:
    # A v3.32 Felix sends payload 37 (HostMetadataV4V6Update) and 35 (V6 only).
    raw = pb.ToDataplane(
        sequence_number=3,
        host_metadata_v4v6_update=pb.HostMetadataV4V6Update(
            hostname="n1", ipv4_addr="10.0.0.1/24", ipv6_addr="fd00::1/64", asnumber="64512"
        ),
    ).SerializeToString()
    msg = pb.ToDataplane.FromString(raw)
    assert msg.WhichOneof("payload") == "host_metadata_v4v6_update"
    assert raw[:2] == b"\x78\x03"  # field 15 varint: sequence number
    assert b"\xaa\x02" in raw  # field 37, wire type 2
