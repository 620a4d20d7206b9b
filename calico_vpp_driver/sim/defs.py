"""VPP binary-API definitions served by the simulator, written as compact Python data.

Every message, type, enum, union and alias below carries VPP's own name, field names, field types,
array lengths, options (defaults, union cases) and message CRC, so that a client built against a
real VPP (vpp_papi with ``bootstrapapi=True``, or a client that pins name+CRC pairs) cannot tell
the simulator's API from VPP's.  ``tests/test_sim_defs.py`` compares all of it with VPP's generated
``*.api.json`` files when they are available (``../shared/vpp-api``).  The reference version is FD.io
VPP master of August 2026 (26.10-rc0); the urpf plugin is absent from the shared reference directory
and was taken from ``src/plugins/urpf/urpf.api`` of that same tree.

Notation
--------
* A field is ``"<type> <name>"``, optionally followed by an array suffix and a JSON object of options:
  ``"u32 sw_if_index"``, ``"string tag[64]"`` (fixed size), ``"string json[]"`` (variable-length,
  u32 length prefix), ``"fib_path paths[n_paths]"`` (variable-length, count in field ``n_paths``),
  ``'bool is_add {"default": "true"}'``.  Base types are u8..u64, i8..i64, f64, bool and string;
  any other type name ``x`` is VPP's ``vl_api_x_t``.
* A struct or union is a ``"; "``-separated list of fields; an enum is ``(size type, "NAME=value ...")``;
  an alias is ``"<type>"`` or ``"<type>[N]"``.
* A message is ``(name, crc without 0x, fields)``; the leading ``u16 _vl_msg_id`` every message starts
  with is implied.  Messages are grouped by the VPP API module (``.api`` file) that defines them.

Services (which reply answers which request) are derived from the names the way VPP names them
(``x`` -> ``x_reply``; ``x_dump`` -> stream of ``x_details``), plus the event list of
``want_interface_events``; the test checks the result against VPP's own service tables.

:func:`api_defs` parses all of it once into :class:`ApiDefs`; :meth:`ApiDefs.api_json` renders the
document VPP returns for ``get_api_json`` (a JSON array with one object per module, each holding the
types its messages use, in dependency order).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final, NamedTuple

#: Size in bytes of each base type (``string`` counts its characters).
BASE_TYPES: Final[Mapping[str, int]] = {
    "u8": 1, "i8": 1, "u16": 2, "i16": 2, "u32": 4, "i32": 4, "u64": 8, "i64": 8, "f64": 8, "bool": 1,
    "string": 1,
}  # fmt: skip

#: Requests whose service also lists the events a subscriber receives.
SERVICE_EVENTS: Final[Mapping[str, tuple[str, ...]]] = {
    "want_interface_events": ("sw_interface_event",),
}


class Module(NamedTuple):
    """One VPP API module (``.api`` file): its name, version option, CRC and messages."""

    name: str
    version: str
    vl_api_version: str
    messages: tuple[tuple[str, str, str], ...]


# fmt: off
# --------------------------------------------------------------------------------------------------
# Types shared by the modules (VPP defines them in ip_types, interface_types, fib_types,
# ethernet_types, tunnel_types, acl_types and the plugins' own .api files).
# --------------------------------------------------------------------------------------------------

ALIASES: Final[dict[str, str]] = {
    "interface_index": "u32",
    "mac_address": "u8[6]",
    "ip4_address": "u8[4]",
    "ip6_address": "u8[16]",
    "address_with_prefix": "prefix",
    "ip4_address_with_prefix": "ip4_prefix",
    "ip6_address_with_prefix": "ip6_prefix",
}
ENUMS: Final[dict[str, tuple[str, str]]] = {
    "if_status_flags": ("u32", "IF_STATUS_API_FLAG_ADMIN_UP=1 IF_STATUS_API_FLAG_LINK_UP=2"),
    "if_type": ("u32", "IF_API_TYPE_HARDWARE=0 IF_API_TYPE_SUB=1 IF_API_TYPE_P2P=2 IF_API_TYPE_PIPE=3"),
    "link_duplex": ("u32", "LINK_DUPLEX_API_UNKNOWN=0 LINK_DUPLEX_API_HALF=1 LINK_DUPLEX_API_FULL=2"),
    "sub_if_flags": (
        "u32",
        "SUB_IF_API_FLAG_NO_TAGS=1 SUB_IF_API_FLAG_ONE_TAG=2 SUB_IF_API_FLAG_TWO_TAGS=4 "
        "SUB_IF_API_FLAG_DOT1AD=8 SUB_IF_API_FLAG_EXACT_MATCH=16 SUB_IF_API_FLAG_DEFAULT=32 "
        "SUB_IF_API_FLAG_OUTER_VLAN_ID_ANY=64 SUB_IF_API_FLAG_INNER_VLAN_ID_ANY=128 "
        "SUB_IF_API_FLAG_MASK_VNET=254 SUB_IF_API_FLAG_DOT1AH=256",
    ),
    "address_family": ("u8", "ADDRESS_IP4=0 ADDRESS_IP6=1"),
    "fib_path_type": (
        "u32",
        "FIB_API_PATH_TYPE_NORMAL=0 FIB_API_PATH_TYPE_LOCAL=1 FIB_API_PATH_TYPE_DROP=2 "
        "FIB_API_PATH_TYPE_UDP_ENCAP=3 FIB_API_PATH_TYPE_BIER_IMP=4 "
        "FIB_API_PATH_TYPE_ICMP_UNREACH=5 FIB_API_PATH_TYPE_ICMP_PROHIBIT=6 "
        "FIB_API_PATH_TYPE_SOURCE_LOOKUP=7 FIB_API_PATH_TYPE_DVR=8 "
        "FIB_API_PATH_TYPE_INTERFACE_RX=9 FIB_API_PATH_TYPE_CLASSIFY=10",
    ),
    "fib_path_flags": (
        "u32",
        "FIB_API_PATH_FLAG_NONE=0 FIB_API_PATH_FLAG_RESOLVE_VIA_ATTACHED=1 "
        "FIB_API_PATH_FLAG_RESOLVE_VIA_HOST=2 FIB_API_PATH_FLAG_POP_PW_CW=4",
    ),
    "fib_path_nh_proto": (
        "u32",
        "FIB_API_PATH_NH_PROTO_IP4=0 FIB_API_PATH_NH_PROTO_IP6=1 FIB_API_PATH_NH_PROTO_MPLS=2 "
        "FIB_API_PATH_NH_PROTO_ETHERNET=3 FIB_API_PATH_NH_PROTO_BIER=4",
    ),
    "ip_neighbor_flags": (
        "u8",
        "IP_API_NEIGHBOR_FLAG_NONE=0 IP_API_NEIGHBOR_FLAG_STATIC=1 "
        "IP_API_NEIGHBOR_FLAG_NO_FIB_ENTRY=2",
    ),
    "tap_flags": (
        "u32",
        "TAP_API_FLAG_GSO=1 TAP_API_FLAG_CSUM_OFFLOAD=2 TAP_API_FLAG_PERSIST=4 "
        "TAP_API_FLAG_ATTACH=8 TAP_API_FLAG_TUN=16 TAP_API_FLAG_GRO_COALESCE=32 "
        "TAP_API_FLAG_PACKED=64 TAP_API_FLAG_IN_ORDER=128 TAP_API_FLAG_CONSISTENT_QP=256",
    ),
    "af_packet_mode": ("u32", "AF_PACKET_API_MODE_ETHERNET=1 AF_PACKET_API_MODE_IP=2"),
    "af_packet_flags": (
        "u32",
        "AF_PACKET_API_FLAG_QDISC_BYPASS=1 AF_PACKET_API_FLAG_CKSUM_GSO=2 "
        "AF_PACKET_API_FLAG_VERSION_2=8",
    ),
    "acl_action": ("u8", "ACL_ACTION_API_DENY=0 ACL_ACTION_API_PERMIT=1 ACL_ACTION_API_PERMIT_REFLECT=2"),
    "ip_proto": (
        "u8",
        "IP_API_PROTO_HOPOPT=0 IP_API_PROTO_ICMP=1 IP_API_PROTO_IGMP=2 IP_API_PROTO_TCP=6 "
        "IP_API_PROTO_UDP=17 IP_API_PROTO_GRE=47 IP_API_PROTO_ESP=50 IP_API_PROTO_AH=51 "
        "IP_API_PROTO_ICMP6=58 IP_API_PROTO_EIGRP=88 IP_API_PROTO_OSPF=89 IP_API_PROTO_SCTP=132 "
        "IP_API_PROTO_RESERVED=255",
    ),
    "cnat_lb_type": ("u8", "CNAT_LB_TYPE_DEFAULT=0 CNAT_LB_TYPE_MAGLEV=1"),
    "cnat_snat_policy_flags": (
        "u8",
        "CNAT_SNAT_POLICY_F_NONE=0 CNAT_SNAT_POLICY_F_BUFFER_NEXT=1 CNAT_SNAT_POLICY_F_NO_CLIENT=2 "
        "CNAT_SNAT_POLICY_F_USE_AS_DEFAULT=4",
    ),
    "cnat_snat_policy_table": (
        "u8",
        "CNAT_POLICY_INCLUDE_V4=0 CNAT_POLICY_INCLUDE_V6=1 CNAT_POLICY_POD=2 CNAT_POLICY_HOST=3",
    ),
    "cnat_snat_policies": (
        "u8",
        "CNAT_POLICY_NONE=0 CNAT_POLICY_IF_PFX=1 CNAT_POLICY_K8S=2 CNAT_POLICY_DNAT=3",
    ),
    "npol_ipset_type": ("u8", "NPOL_IP=0 NPOL_IP_AND_PORT=1 NPOL_NET=2"),
    "npol_rule_action": ("u8", "NPOL_ALLOW=0 NPOL_DENY=1 NPOL_LOG=2 NPOL_PASS=3"),
    "npol_rule_filter_type": (
        "u8",
        "NPOL_RULE_FILTER_NONE_TYPE=0 NPOL_RULE_FILTER_ICMP_TYPE=1 NPOL_RULE_FILTER_ICMP_CODE=2 "
        "NPOL_RULE_FILTER_L4_PROTO=3",
    ),
    "npol_entry_type": ("u8", "NPOL_CIDR=0 NPOL_PORT_RANGE=1 NPOL_PORT_IP_SET=2 NPOL_IP_SET=3"),
    "npol_policy_default": ("u8", "NPOL_DEFAULT_ALLOW=0 NPOL_DEFAULT_DENY=1 NPOL_DEFAULT_PASS=2"),
    "tunnel_encap_decap_flags": (
        "u8",
        "TUNNEL_API_ENCAP_DECAP_FLAG_NONE=0 TUNNEL_API_ENCAP_DECAP_FLAG_ENCAP_COPY_DF=1 "
        "TUNNEL_API_ENCAP_DECAP_FLAG_ENCAP_SET_DF=2 TUNNEL_API_ENCAP_DECAP_FLAG_ENCAP_COPY_DSCP=4 "
        "TUNNEL_API_ENCAP_DECAP_FLAG_ENCAP_COPY_ECN=8 "
        "TUNNEL_API_ENCAP_DECAP_FLAG_DECAP_COPY_ECN=16 "
        "TUNNEL_API_ENCAP_DECAP_FLAG_ENCAP_INNER_HASH=32 "
        "TUNNEL_API_ENCAP_DECAP_FLAG_ENCAP_COPY_HOP_LIMIT=64 "
        "TUNNEL_API_ENCAP_DECAP_FLAG_ENCAP_COPY_FLOW_LABEL=128",
    ),
    "tunnel_mode": ("u8", "TUNNEL_API_MODE_P2P=0 TUNNEL_API_MODE_MP=1"),
    "ip_dscp": (
        "u8",
        "IP_API_DSCP_CS0=0 IP_API_DSCP_CS1=8 IP_API_DSCP_AF11=10 IP_API_DSCP_AF12=12 "
        "IP_API_DSCP_AF13=14 IP_API_DSCP_CS2=16 IP_API_DSCP_AF21=18 IP_API_DSCP_AF22=20 "
        "IP_API_DSCP_AF23=22 IP_API_DSCP_CS3=24 IP_API_DSCP_AF31=26 IP_API_DSCP_AF32=28 "
        "IP_API_DSCP_AF33=30 IP_API_DSCP_CS4=32 IP_API_DSCP_AF41=34 IP_API_DSCP_AF42=36 "
        "IP_API_DSCP_AF43=38 IP_API_DSCP_CS5=40 IP_API_DSCP_EF=46 IP_API_DSCP_CS6=48 "
        "IP_API_DSCP_CS7=50",
    ),
    "urpf_mode": ("u8", "URPF_API_MODE_OFF=0 URPF_API_MODE_LOOSE=1 URPF_API_MODE_STRICT=2"),
}
ENUMFLAGS: Final[dict[str, tuple[str, str]]] = {
    "ip_flow_hash_config_v2": (
        "u32",
        "IP_API_V2_FLOW_HASH_SRC_IP=1 IP_API_V2_FLOW_HASH_DST_IP=2 IP_API_V2_FLOW_HASH_SRC_PORT=4 "
        "IP_API_V2_FLOW_HASH_DST_PORT=8 IP_API_V2_FLOW_HASH_PROTO=16 "
        "IP_API_V2_FLOW_HASH_REVERSE=32 IP_API_V2_FLOW_HASH_SYMETRIC=64 "
        "IP_API_V2_FLOW_HASH_FLOW_LABEL=128 IP_API_V2_FLOW_HASH_GTPV1_TEID=256",
    ),
}
UNIONS: Final[dict[str, str]] = {
    "address_union":
        'ip4_address ip4 {"case": "ADDRESS_IP4"}; ip6_address ip6 {"case": "ADDRESS_IP6"}',
    "npol_ipset_member_val":
        'address address {"case": "NPOL_IP"}; prefix prefix {"case": "NPOL_NET"}; '
        'npol_three_tuple tuple {"case": "NPOL_IP_AND_PORT"}',
    "npol_entry_data":
        'prefix cidr {"case": "NPOL_CIDR"}; '
        'npol_port_range port_range {"case": "NPOL_PORT_RANGE"}; '
        'npol_entry_set_id set_id {"case": "NPOL_PORT_IP_SET"}',
}
TYPES: Final[dict[str, str]] = {
    "module_version": "u32 major; u32 minor; u32 patch; string name[64]",
    "message_table_entry": "u16 index; string name[64]",
    "address": 'address_family af; address_union un {"discriminator": "af"}',
    "prefix": "address address; u8 len",
    "ip_table": "u32 table_id; bool is_ip6; string name[64]",
    "fib_path_nh": "address_union address; u32 via_label; u32 obj_id; u32 classify_table_index",
    "fib_mpls_label": "u8 is_uniform; u32 label; u8 ttl; u8 exp",
    "fib_path":
        "u32 sw_if_index; u32 table_id; u32 rpf_id; u8 weight; u8 preference; fib_path_type type; "
        "fib_path_flags flags; fib_path_nh_proto proto; fib_path_nh nh; u8 n_labels; "
        "fib_mpls_label label_stack[16]",
    "ip_route": "u32 table_id; u32 stats_index; prefix prefix; u8 n_paths; fib_path paths[n_paths]",
    "ip_neighbor":
        "interface_index sw_if_index; ip_neighbor_flags flags; mac_address mac_address; "
        "address ip_address",
    "ip4_prefix": "ip4_address address; u8 len",
    "ip6_prefix": "ip6_address address; u8 len",
    "acl_rule":
        "acl_action is_permit; prefix src_prefix; prefix dst_prefix; ip_proto proto; "
        "u16 srcport_or_icmptype_first; u16 srcport_or_icmptype_last; u16 dstport_or_icmpcode_first; "
        "u16 dstport_or_icmpcode_last; u8 tcp_flags_mask; u8 tcp_flags_value",
    "cnat_endpoint": "address addr; interface_index sw_if_index; address_family if_af; u16 port",
    "cnat_endpoint_tuple": "cnat_endpoint dst_ep; cnat_endpoint src_ep; u8 flags",
    "cnat_translation":
        "cnat_endpoint vip; u32 id; ip_proto ip_proto; u8 is_real_ip; u8 flags; cnat_lb_type lb_type; "
        "u32 n_paths; ip_flow_hash_config_v2 flow_hash_config; cnat_endpoint_tuple paths[n_paths]",
    "cnat_5tuple": "address addr[2]; u16 port[2]; ip_proto ip_proto",
    "cnat_session": "cnat_5tuple tuple; u32 ts_index; u32 flags",
    "npol_three_tuple": "address address; u8 l4_proto; u16 port",
    "npol_ipset_member": "npol_ipset_member_val val",
    "npol_rule_filter": "u32 value; npol_rule_filter_type type; u8 should_match",
    "npol_port_range": "u16 start; u16 end",
    "npol_entry_set_id": "u32 set_id",
    "npol_rule_entry":
        "bool is_src; bool is_not; npol_entry_type type; "
        'npol_entry_data data {"discriminator": "type"}',
    "npol_rule":
        "npol_rule_action action; npol_rule_filter filters[3]; u32 num_entries; "
        "npol_rule_entry matches[num_entries]",
    "npol_policy_item": "bool is_inbound; u32 rule_id",
    "ipip_tunnel":
        "u32 instance; address src; address dst; interface_index sw_if_index; u32 table_id; "
        "tunnel_encap_decap_flags flags; tunnel_mode mode; ip_dscp dscp",
}
# --------------------------------------------------------------------------------------------------
# Messages, by module, in VPP's message-table order.  memclnt comes first and is complete: vpp_papi
# hard-codes sockclnt_create = 15 and its reply = 16, VPP's ids for them with memclnt numbered from 1.
# Other modules list the messages the driver uses with their replies, details and events (npol: all).
# --------------------------------------------------------------------------------------------------

MODULES: Final[tuple[Module, ...]] = (
    Module("memclnt", "2.1.0", "0xb197c551", (
        ("memclnt_create", "9c5e1c2f",
            "u32 context; i32 ctx_quota; u64 input_queue; string name[64]; u32 api_versions[8]"),
        ("memclnt_create_reply", "42ec4560",
            "u32 context; i32 response; u64 handle; u32 index; u64 message_table"),
        ("memclnt_delete", "7e1c04e3", "u32 index; u64 handle; bool do_cleanup"),
        ("memclnt_delete_reply", "3d3b6312", "i32 response; u64 handle"),
        ("rx_thread_exit", "c3a3a452", "u8 dummy"),
        ("memclnt_rx_thread_suspend", "c3a3a452", "u8 dummy"),
        ("memclnt_read_timeout", "c3a3a452", "u8 dummy"),
        ("rpc_call", "7e8a2c95",
            "u32 client_index; u32 context; u64 function; u8 multicast; u8 need_barrier_sync; "
            "u8 send_reply; u32 data_len; u8 data[data_len]"),
        ("rpc_call_reply", "e8d4e804", "u32 context; i32 retval"),
        ("get_first_msg_id", "ebf79a66", "u32 client_index; u32 context; string name[64]"),
        ("get_first_msg_id_reply", "7d337472", "u32 context; i32 retval; u16 first_msg_id"),
        ("api_versions", "51077d14", "u32 client_index; u32 context"),
        ("api_versions_reply", "5f0d99d6",
            "u32 context; i32 retval; u32 count; module_version api_versions[count]"),
        ("trace_plugin_msg_ids", "f476d3ce",
            "u32 client_index; u32 context; string plugin_name[128]; u16 first_msg_id; u16 last_msg_id"),
        ("sockclnt_create", "455fb9c4", "u32 context; string name[64]"),
        ("sockclnt_create_reply", "35166268",
            "u32 client_index; u32 context; i32 response; u32 index; u16 count; "
            "message_table_entry message_table[count]"),
        ("sockclnt_delete", "8ac76db6", "u32 client_index; u32 context; u32 index"),
        ("sockclnt_delete_reply", "8f38b1ee", "u32 context; i32 response"),
        ("sock_init_shm", "51646d92",
            "u32 client_index; u32 context; u32 requested_size; u8 nitems; u64 configs[nitems]"),
        ("sock_init_shm_reply", "e8d4e804", "u32 context; i32 retval"),
        ("memclnt_keepalive", "51077d14", "u32 client_index; u32 context"),
        ("memclnt_keepalive_reply", "e8d4e804", "u32 context; i32 retval"),
        ("control_ping", "51077d14", "u32 client_index; u32 context"),
        ("control_ping_reply", "f6b0b8ca", "u32 context; i32 retval; u32 client_index; u32 vpe_pid"),
        ("memclnt_create_v2", "c4bd4882",
            "u32 context; i32 ctx_quota; u64 input_queue; string name[64]; u32 api_versions[8]; "
            'bool keepalive {"default": "true"}'),
        ("memclnt_create_v2_reply", "42ec4560",
            "u32 context; i32 response; u64 handle; u32 index; u64 message_table"),
        ("get_api_json", "51077d14", "u32 client_index; u32 context"),
        ("get_api_json_reply", "ea715b59", "u32 context; i32 retval; string json[]"),
    )),
    Module("vlib", "1.0.0", "0x9a9e84e4", (
        ("cli_inband", "f8377302", "u32 client_index; u32 context; string cmd[]"),
        ("cli_inband_reply", "05879051", "u32 context; i32 retval; string reply[]"),
        ("add_node_next", "2457116d",
            "u32 client_index; u32 context; string node_name[64]; string next_name[64]"),
        ("add_node_next_reply", "2ed75f32", "u32 context; i32 retval; u32 next_index"),
    )),
    Module("vpe", "1.7.0", "0xbbfa7484", (
        ("show_version", "51077d14", "u32 client_index; u32 context"),
        ("show_version_reply", "c919bde1",
            "u32 context; i32 retval; string program[32]; string version[32]; string build_date[32]; "
            "string build_directory[256]"),
    )),
    Module("interface", "3.2.5", "0x98d849f6", (
        ("sw_interface_set_flags", "f5aec1b8",
            "u32 client_index; u32 context; interface_index sw_if_index; if_status_flags flags"),
        ("sw_interface_set_flags_reply", "e8d4e804", "u32 context; i32 retval"),
        ("sw_interface_set_mtu", "5cbe85e5",
            "u32 client_index; u32 context; interface_index sw_if_index; u32 mtu[4]"),
        ("sw_interface_set_mtu_reply", "e8d4e804", "u32 context; i32 retval"),
        ("sw_interface_event", "2d3d95a7",
            "u32 client_index; u32 pid; interface_index sw_if_index; if_status_flags flags; "
            "bool deleted"),
        ("want_interface_events", "476f5a08", "u32 client_index; u32 context; u32 enable_disable; u32 pid"),
        ("want_interface_events_reply", "e8d4e804", "u32 context; i32 retval"),
        ("sw_interface_details", "6c221fc7",
            "u32 context; interface_index sw_if_index; u32 sup_sw_if_index; mac_address l2_address; "
            "if_status_flags flags; if_type type; link_duplex link_duplex; u32 link_speed; u16 link_mtu; "
            "u32 mtu[4]; u32 sub_id; u8 sub_number_of_tags; u16 sub_outer_vlan_id; "
            "u16 sub_inner_vlan_id; sub_if_flags sub_if_flags; u32 vtr_op; u32 vtr_push_dot1q; "
            "u32 vtr_tag1; u32 vtr_tag2; u16 outer_tag; mac_address b_dmac; mac_address b_smac; "
            "u16 b_vlanid; u32 i_sid; string interface_name[64]; string interface_dev_type[64]; "
            "string tag[64]"),
        ("sw_interface_dump", "aa610c27",
            'u32 client_index; u32 context; interface_index sw_if_index {"default": 4294967295}; '
            "bool name_filter_valid; string name_filter[]"),
        ("sw_interface_add_del_address", "5463d73b",
            "u32 client_index; u32 context; interface_index sw_if_index; bool is_add; bool del_all; "
            "address_with_prefix prefix"),
        ("sw_interface_add_del_address_reply", "e8d4e804", "u32 context; i32 retval"),
        ("sw_interface_set_table", "df42a577",
            "u32 client_index; u32 context; interface_index sw_if_index; bool is_ipv6; u32 vrf_id"),
        ("sw_interface_set_table_reply", "e8d4e804", "u32 context; i32 retval"),
        ("sw_interface_get_table", "2d033de4",
            "u32 client_index; u32 context; interface_index sw_if_index; bool is_ipv6"),
        ("sw_interface_get_table_reply", "a6eb0109", "u32 context; i32 retval; u32 vrf_id"),
        ("sw_interface_set_unnumbered", "154a6439",
            "u32 client_index; u32 context; interface_index sw_if_index; "
            "interface_index unnumbered_sw_if_index; bool is_add"),
        ("sw_interface_set_unnumbered_reply", "e8d4e804", "u32 context; i32 retval"),
        ("sw_interface_tag_add_del", "426f8bc1",
            "u32 client_index; u32 context; bool is_add; interface_index sw_if_index; string tag[64]"),
        ("sw_interface_tag_add_del_reply", "e8d4e804", "u32 context; i32 retval"),
        ("create_loopback", "42bb5d22", "u32 client_index; u32 context; mac_address mac_address"),
        ("create_loopback_reply", "5383d31f", "u32 context; i32 retval; interface_index sw_if_index"),
        ("delete_loopback", "f9e6675e", "u32 client_index; u32 context; interface_index sw_if_index"),
        ("delete_loopback_reply", "e8d4e804", "u32 context; i32 retval"),
    )),
    Module("ip", "3.2.0", "0xc55aec44", (
        ("ip_table_add_del", "0ffdaec0",
            'u32 client_index; u32 context; bool is_add {"default": "true"}; ip_table table'),
        ("ip_table_add_del_reply", "e8d4e804", "u32 context; i32 retval"),
        ("ip_table_dump", "51077d14", "u32 client_index; u32 context"),
        ("ip_table_replace_begin", "b9d2e09e", "u32 client_index; u32 context; ip_table table"),
        ("ip_table_replace_begin_reply", "e8d4e804", "u32 context; i32 retval"),
        ("ip_table_replace_end", "b9d2e09e", "u32 client_index; u32 context; ip_table table"),
        ("ip_table_replace_end_reply", "e8d4e804", "u32 context; i32 retval"),
        ("ip_table_flush", "b9d2e09e", "u32 client_index; u32 context; ip_table table"),
        ("ip_table_flush_reply", "e8d4e804", "u32 context; i32 retval"),
        ("ip_table_details", "c79fca0f", "u32 context; ip_table table"),
        ("ip_route_add_del", "b8ecfe0d",
            'u32 client_index; u32 context; bool is_add {"default": "true"}; bool is_multipath; '
            "ip_route route"),
        ("ip_route_add_del_reply", "1992deab", "u32 context; i32 retval; u32 stats_index"),
        ("ip_route_dump", "b9d2e09e", "u32 client_index; u32 context; ip_table table"),
        ("ip_route_details", "bda8f315", "u32 context; ip_route route"),
        ("sw_interface_ip6_enable_disable", "ae6cfcfb",
            "u32 client_index; u32 context; interface_index sw_if_index; bool enable"),
        ("sw_interface_ip6_enable_disable_reply", "e8d4e804", "u32 context; i32 retval"),
        ("ip_address_details", "ee29b797",
            "u32 context; interface_index sw_if_index; address_with_prefix prefix"),
        ("ip_address_dump", "2d033de4",
            "u32 client_index; u32 context; interface_index sw_if_index; bool is_ipv6"),
    )),
    Module("ip_neighbor", "1.0.1", "0x36db39bd", (
        ("ip_neighbor_add_del", "0607c257",
            "u32 client_index; u32 context; bool is_add; ip_neighbor neighbor"),
        ("ip_neighbor_add_del_reply", "1992deab", "u32 context; i32 retval; u32 stats_index"),
    )),
    Module("tapv2", "4.0.0", "0xc2f80dc7", (
        ("tap_create_v3", "3f3fd1df",
            'u32 client_index; u32 context; u32 id {"default": 4294967295}; '
            'bool use_random_mac {"default": "true"}; mac_address mac_address; '
            'u16 num_rx_queues {"default": 1}; u16 num_tx_queues {"default": 1}; '
            'u16 tx_ring_sz {"default": 256}; u16 rx_ring_sz {"default": 256}; bool host_mtu_set; '
            "u32 host_mtu_size; bool host_mac_addr_set; mac_address host_mac_addr; "
            "bool host_ip4_prefix_set; ip4_address_with_prefix host_ip4_prefix; "
            "bool host_ip6_prefix_set; ip6_address_with_prefix host_ip6_prefix; bool host_ip4_gw_set; "
            "ip4_address host_ip4_gw; bool host_ip6_gw_set; ip6_address host_ip6_gw; "
            "tap_flags tap_flags; bool host_namespace_set; string host_namespace[64]; "
            "bool host_if_name_set; string host_if_name[64]; bool host_bridge_set; "
            "string host_bridge[64]; string tag[]"),
        ("tap_create_v3_reply", "5383d31f", "u32 context; i32 retval; interface_index sw_if_index"),
        ("tap_delete_v2", "f9e6675e", "u32 client_index; u32 context; interface_index sw_if_index"),
        ("tap_delete_v2_reply", "e8d4e804", "u32 context; i32 retval"),
    )),
    Module("af_packet", "2.0.0", "0x5b12de21", (
        ("af_packet_create_v3", "b3a809d4",
            "u32 client_index; u32 context; af_packet_mode mode; mac_address hw_addr; "
            "bool use_random_hw_addr; string host_if_name[64]; u32 rx_frame_size; u32 tx_frame_size; "
            "u32 rx_frames_per_block; u32 tx_frames_per_block; af_packet_flags flags; "
            'u16 num_rx_queues {"default": 1}; u16 num_tx_queues {"default": 1}'),
        ("af_packet_create_v3_reply", "5383d31f", "u32 context; i32 retval; interface_index sw_if_index"),
        ("af_packet_delete", "863fa648", "u32 client_index; u32 context; string host_if_name[64]"),
        ("af_packet_delete_reply", "e8d4e804", "u32 context; i32 retval"),
    )),
    Module("acl", "2.0.1", "0x5133bba0", (
        ("acl_plugin_get_version", "51077d14", "u32 client_index; u32 context"),
        ("acl_plugin_get_version_reply", "9b32cf86", "u32 context; u32 major; u32 minor"),
        ("acl_add_replace", "ee5c2f18",
            "u32 client_index; u32 context; u32 acl_index; string tag[64]; u32 count; acl_rule r[count]"),
        ("acl_add_replace_reply", "ac407b0c", "u32 context; u32 acl_index; i32 retval"),
        ("acl_del", "ef34fea4", "u32 client_index; u32 context; u32 acl_index"),
        ("acl_del_reply", "e8d4e804", "u32 context; i32 retval"),
        ("acl_interface_add_del", "4b54bebd",
            'u32 client_index; u32 context; bool is_add {"default": "true"}; bool is_input; '
            "interface_index sw_if_index; u32 acl_index"),
        ("acl_interface_add_del_reply", "e8d4e804", "u32 context; i32 retval"),
        ("acl_interface_set_acl_list", "473982bd",
            "u32 client_index; u32 context; interface_index sw_if_index; u8 count; u8 n_input; "
            "u32 acls[count]"),
        ("acl_interface_set_acl_list_reply", "e8d4e804", "u32 context; i32 retval"),
        ("acl_dump", "ef34fea4", "u32 client_index; u32 context; u32 acl_index"),
        ("acl_details", "95babae0",
            "u32 context; u32 acl_index; string tag[64]; u32 count; acl_rule r[count]"),
        ("acl_interface_list_dump", "f9e6675e",
            'u32 client_index; u32 context; interface_index sw_if_index {"default": 4294967295}'),
        ("acl_interface_list_details", "e695d256",
            "u32 context; interface_index sw_if_index; u8 count; u8 n_input; u32 acls[count]"),
    )),
    Module("cnat", "1.0.0", "0xc121e90a", (
        ("cnat_translation_update", "f8d40bc5",
            "u32 client_index; u32 context; cnat_translation translation"),
        ("cnat_translation_update_reply", "e2fc8294", "u32 context; i32 retval; u32 id"),
        ("cnat_translation_del", "3a91bde5", "u32 client_index; u32 context; u32 id"),
        ("cnat_translation_del_reply", "e8d4e804", "u32 context; i32 retval"),
        ("cnat_translation_details", "1a5140b7", "u32 context; cnat_translation translation"),
        ("cnat_translation_dump", "51077d14", "u32 client_index; u32 context"),
        ("cnat_session_purge", "51077d14", "u32 client_index; u32 context"),
        ("cnat_session_purge_reply", "e8d4e804", "u32 context; i32 retval"),
        ("cnat_session_details", "7a78bf3f", "u32 context; cnat_session session"),
        ("cnat_session_dump", "51077d14", "u32 client_index; u32 context"),
        ("cnat_set_snat_addresses", "d997e96c",
            "u32 client_index; u32 context; ip4_address snat_ip4; ip6_address snat_ip6; "
            "interface_index sw_if_index"),
        ("cnat_set_snat_addresses_reply", "e8d4e804", "u32 context; i32 retval"),
        ("cnat_set_snat_addresses_v2", "c0125c26",
            "u32 client_index; u32 context; u32 fwd_fib_index; u32 ret_fib_index; ip4_address snat_ip4; "
            "ip6_address snat_ip6; interface_index sw_if_index; cnat_snat_policy_flags flags"),
        ("cnat_set_snat_addresses_v2_reply", "e8d4e804", "u32 context; i32 retval"),
        ("cnat_get_snat_addresses", "51077d14", "u32 client_index; u32 context"),
        ("cnat_get_snat_addresses_reply", "879513c1",
            "u32 context; i32 retval; u32 id; ip4_address snat_ip4; ip6_address snat_ip6; "
            "interface_index sw_if_index"),
        ("cnat_snat_addresses_dump", "51077d14", "u32 client_index; u32 context"),
        ("cnat_snat_addresses_details", "09ae6b38",
            "u32 context; i32 retval; u32 fwd_table_id4; u32 fwd_table_id6; u32 ret_table_id4; "
            "u32 ret_table_id6; ip4_address snat_ip4; ip6_address snat_ip6; interface_index sw_if_index"),
        ("cnat_snat_policy_add_del_exclude_pfx", "e26dd79a",
            "u32 client_index; u32 context; u8 is_add; prefix prefix"),
        ("cnat_snat_policy_add_del_exclude_pfx_reply", "e8d4e804", "u32 context; i32 retval"),
        ("cnat_snat_policy_add_del_if", "4ebb8d02",
            "u32 client_index; u32 context; interface_index sw_if_index; u8 is_add; "
            "cnat_snat_policy_table table"),
        ("cnat_snat_policy_add_del_if_reply", "e8d4e804", "u32 context; i32 retval"),
        ("cnat_set_snat_policy", "37a3ce23", "u32 client_index; u32 context; cnat_snat_policies policy"),
        ("cnat_set_snat_policy_reply", "e8d4e804", "u32 context; i32 retval"),
        ("feature_cnat_enable_disable", "5501adee",
            "u32 client_index; u32 context; interface_index sw_if_index; bool enable_disable"),
        ("feature_cnat_enable_disable_reply", "e8d4e804", "u32 context; i32 retval"),
    )),
    Module("npol", "0.1.0", "0x4d281077", (
        ("npol_get_version", "51077d14", "u32 client_index; u32 context"),
        ("npol_get_version_reply", "9b32cf86", "u32 context; u32 major; u32 minor"),
        ("npol_ipset_create", "f948b404", "u32 client_index; u32 context; npol_ipset_type type"),
        ("npol_ipset_create_reply", "6a43f193", "u32 context; i32 retval; u32 set_id"),
        ("npol_ipset_add_del_members", "8ad1b2ed",
            "u32 client_index; u32 context; u32 set_id; bool is_add; u32 len; "
            "npol_ipset_member members[len]"),
        ("npol_ipset_add_del_members_reply", "e8d4e804", "u32 context; i32 retval"),
        ("npol_ipset_delete", "ceacdbcb", "u32 client_index; u32 context; u32 set_id"),
        ("npol_ipset_delete_reply", "e8d4e804", "u32 context; i32 retval"),
        ("npol_rule_create", "f113de45", "u32 client_index; u32 context; npol_rule rule"),
        ("npol_rule_update", "e38bffe2", "u32 client_index; u32 context; u32 rule_id; npol_rule rule"),
        ("npol_rule_update_reply", "e8d4e804", "u32 context; i32 retval"),
        ("npol_rule_create_reply", "b48f8052", "u32 context; i32 retval; u32 rule_id"),
        ("npol_rule_delete", "d19bb6be", "u32 client_index; u32 context; u32 rule_id"),
        ("npol_rule_delete_reply", "e8d4e804", "u32 context; i32 retval"),
        ("npol_policy_create", "3441bb97",
            "u32 client_index; u32 context; u32 num_items; npol_policy_item rules[num_items]"),
        ("npol_policy_create_reply", "90f27405", "u32 context; i32 retval; u32 policy_id"),
        ("npol_policy_update", "21a5f7ef",
            "u32 client_index; u32 context; u32 policy_id; u32 num_items; "
            "npol_policy_item rules[num_items]"),
        ("npol_policy_update_reply", "e8d4e804", "u32 context; i32 retval"),
        ("npol_policy_delete", "ad833868", "u32 client_index; u32 context; u32 policy_id"),
        ("npol_policy_delete_reply", "e8d4e804", "u32 context; i32 retval"),
        ("npol_configure_policies", "66fe1335",
            "u32 client_index; u32 context; u32 sw_if_index; u32 num_rx_policies; u32 num_tx_policies; "
            "u32 total_ids; u8 invert_rx_tx; npol_policy_default policy_default_rx; "
            "npol_policy_default policy_default_tx; npol_policy_default profile_default_rx; "
            "npol_policy_default profile_default_tx; u32 policy_ids[total_ids]"),
        ("npol_configure_policies_reply", "e8d4e804", "u32 context; i32 retval"),
    )),
    Module("vxlan", "2.1.0", "0x95381587", (
        ("vxlan_add_del_tunnel_v3", "0072b037",
            'u32 client_index; u32 context; bool is_add {"default": "true"}; '
            'u32 instance {"default": 4294967295}; address src_address; address dst_address; '
            "u16 src_port; u16 dst_port; interface_index mcast_sw_if_index; u32 encap_vrf_id; "
            'u32 decap_next_index; u32 vni; bool is_l3 {"default": false}'),
        ("vxlan_add_del_tunnel_v3_reply", "5383d31f", "u32 context; i32 retval; interface_index sw_if_index"),
    )),
    Module("ipip", "2.0.2", "0x4609caba", (
        ("ipip_add_tunnel", "2ac399f5", "u32 client_index; u32 context; ipip_tunnel tunnel"),
        ("ipip_add_tunnel_reply", "5383d31f", "u32 context; i32 retval; interface_index sw_if_index"),
        ("ipip_del_tunnel", "f9e6675e", "u32 client_index; u32 context; interface_index sw_if_index"),
        ("ipip_del_tunnel_reply", "e8d4e804", "u32 context; i32 retval"),
    )),
    Module("urpf", "1.0.0", "0x88759016", (
        ("urpf_update", "cc274cd1",
            'u32 client_index; u32 context; bool is_input {"default": "true"}; urpf_mode mode; '
            "address_family af; interface_index sw_if_index"),
        ("urpf_update_reply", "e8d4e804", "u32 context; i32 retval"),
        ("urpf_update_v2", "b873d028",
            'u32 client_index; u32 context; bool is_input {"default": "true"}; urpf_mode mode; '
            'address_family af; interface_index sw_if_index; u32 table_id {"default": 4294967295}'),
        ("urpf_update_v2_reply", "e8d4e804", "u32 context; i32 retval"),
        ("urpf_interface_dump", "f9e6675e",
            'u32 client_index; u32 context; interface_index sw_if_index {"default": 4294967295}'),
        ("urpf_interface_details", "f94b5374",
            "u32 context; interface_index sw_if_index; bool is_input; urpf_mode mode; address_family af; "
            "u32 table_id"),
    )),
)

# fmt: on

# --------------------------------------------------------------------------------------------------
# Parsed form
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldDef:
    """A field of a message, struct or union.

    ``type`` is spelled as in VPP's JSON (``u32``, ``string``, ``vl_api_prefix_t``); ``length`` is
    None for a scalar, N for a fixed array (``string[N]`` included) and 0 for a variable-length array
    or string, whose element count is in the sibling field ``length_field`` (None for ``string x[]``
    and for VPP's legacy count-less arrays).
    """

    type: str
    name: str
    length: int | None = None
    length_field: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def type_name(self) -> str:
        """The type without VPP's ``vl_api_``/``_t`` decoration (base types unchanged)."""
        return _bare(self.type)

    def to_json(self) -> list[Any]:
        """The field as VPP's JSON spells it."""
        out: list[Any] = [self.type, self.name]
        if self.length is not None:
            out.append(self.length)
        if self.length_field is not None:
            out.append(self.length_field)
        if self.options:
            out.append(dict(self.options))
        return out


@dataclass(frozen=True)
class MessageDef:
    """A message: its module, name, CRC (``0x...``) and fields, ``_vl_msg_id`` first."""

    module: str
    name: str
    crc: str
    fields: tuple[FieldDef, ...]

    @property
    def name_crc(self) -> str:
        """The key of VPP's message table, e.g. ``control_ping_51077d14``."""
        return f"{self.name}_{self.crc[2:]}"

    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def to_json(self) -> list[Any]:
        return [self.name, *(f.to_json() for f in self.fields), {"crc": self.crc, "options": {}}]


@dataclass(frozen=True)
class StructDef:
    """A struct (VPP ``typedef``) or a union."""

    name: str
    fields: tuple[FieldDef, ...]
    is_union: bool = False

    def to_json(self) -> list[Any]:
        return [self.name, *(f.to_json() for f in self.fields)]


@dataclass(frozen=True)
class EnumDef:
    """An enum or enumflag with its storage type (``u8``, ``u16``, ``u32``...)."""

    name: str
    size_type: str
    values: tuple[tuple[str, int], ...]
    is_flag: bool = False

    def to_json(self) -> list[Any]:
        return [self.name, *([k, v] for k, v in self.values), {"enumtype": self.size_type}]


@dataclass(frozen=True)
class AliasDef:
    """An alias: another type, or a fixed array of one (``ip4_address`` = ``u8[4]``)."""

    name: str
    type: str
    length: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.length is not None:
            out["length"] = self.length
        return out


TypeDef = StructDef | EnumDef | AliasDef

_FIELD_RE = re.compile(r"^(\w+) (\w+)(?:\[(\w*)\])?(?: (\{.*\}))?$")
_ALIAS_RE = re.compile(r"^(\w+)(?:\[(\d+)\])?$")


def _decorate(type_name: str) -> str:
    return type_name if type_name in BASE_TYPES else f"vl_api_{type_name}_t"


def _bare(type_name: str) -> str:
    if type_name.startswith("vl_api_") and type_name.endswith("_t"):
        return type_name[len("vl_api_") : -len("_t")]
    return type_name


def parse_field(spec: str) -> FieldDef:
    """Parse one field of the notation above."""
    m = _FIELD_RE.match(spec.strip())
    if m is None:
        raise ValueError(f"bad field spec {spec!r}")
    ftype, name, dim, opts = m.groups()
    options: dict[str, Any] = json.loads(opts) if opts else {}
    if dim is None:
        return FieldDef(_decorate(ftype), name, options=options)
    if dim == "":
        return FieldDef(_decorate(ftype), name, 0, options=options)
    if dim.isdigit():
        return FieldDef(_decorate(ftype), name, int(dim), options=options)
    return FieldDef(_decorate(ftype), name, 0, dim, options=options)


def parse_fields(spec: str) -> tuple[FieldDef, ...]:
    """Parse a ``"; "``-separated field list."""
    return tuple(parse_field(part) for part in spec.split(";") if part.strip())


def _parse_enum(name: str, spec: tuple[str, str], is_flag: bool) -> EnumDef:
    size_type, values = spec
    pairs = []
    for item in values.split():
        key, _, val = item.partition("=")
        pairs.append((key, int(val)))
    return EnumDef(name, size_type, tuple(pairs), is_flag)


def _parse_alias(name: str, spec: str) -> AliasDef:
    m = _ALIAS_RE.match(spec)
    if m is None:
        raise ValueError(f"bad alias spec {spec!r}")
    return AliasDef(name, _decorate(m.group(1)), int(m.group(2)) if m.group(2) else None)


def _services(names: list[str]) -> dict[str, dict[str, Any]]:
    present = set(names)
    events = {e for evs in SERVICE_EVENTS.values() for e in evs}
    services: dict[str, dict[str, Any]] = {}
    for name in names:
        if name.endswith(("_reply", "_details")) or name in events:
            continue
        if f"{name}_reply" in present:
            svc: dict[str, Any] = {"reply": f"{name}_reply"}
            if name in SERVICE_EVENTS:
                svc["events"] = list(SERVICE_EVENTS[name])
        elif name.endswith("_dump") and f"{name[:-5]}_details" in present:
            svc = {"reply": f"{name[:-5]}_details", "stream": True}
        else:
            svc = {"reply": "null"}
        services[name] = svc
    return services


class ApiDefs:
    """All definitions, parsed: lookups by name and the ``get_api_json`` document."""

    def __init__(self, modules: Iterable[Module]) -> None:
        self.modules: tuple[Module, ...] = tuple(modules)
        self.types: dict[str, TypeDef] = {}
        for name, spec in ALIASES.items():
            self.types[name] = _parse_alias(name, spec)
        for name, espec in ENUMS.items():
            self.types[name] = _parse_enum(name, espec, False)
        for name, espec in ENUMFLAGS.items():
            self.types[name] = _parse_enum(name, espec, True)
        for name, spec in UNIONS.items():
            self.types[name] = StructDef(name, parse_fields(spec), is_union=True)
        for name, spec in TYPES.items():
            self.types[name] = StructDef(name, parse_fields(spec))
        #: Every message, in message-table order (memclnt first, as VPP numbers them).
        self.messages: dict[str, MessageDef] = {}
        #: Request name -> VPP service entry (``{"reply": ..., "stream": True, "events": [...]}``).
        self.services: dict[str, dict[str, Any]] = {}
        self.module_messages: dict[str, list[str]] = {}
        msg_id_field = FieldDef("u16", "_vl_msg_id")
        for mod in self.modules:
            names = []
            for name, crc, spec in mod.messages:
                if name in self.messages:
                    raise ValueError(f"message {name} defined twice")
                fields = (msg_id_field, *parse_fields(spec))
                self.messages[name] = MessageDef(mod.name, name, f"0x{crc}", fields)
                names.append(name)
            self.module_messages[mod.name] = names
            self.services.update(_services(names))
        for msg in self.messages.values():
            self._check_fields(msg.name, msg.fields)
        for tdef in self.types.values():
            if isinstance(tdef, StructDef):
                self._check_fields(tdef.name, tdef.fields)

    def _check_fields(self, owner: str, fields: tuple[FieldDef, ...]) -> None:
        seen: set[str] = set()
        for f in fields:
            if f.type not in BASE_TYPES and _bare(f.type) not in self.types:
                raise ValueError(f"{owner}.{f.name}: unknown type {f.type}")
            if f.length_field is not None and f.length_field not in seen:
                raise ValueError(f"{owner}.{f.name}: length field {f.length_field} must come first")
            seen.add(f.name)

    def type(self, name: str) -> TypeDef:
        """A type by bare (``prefix``) or decorated (``vl_api_prefix_t``) name."""
        return self.types[_bare(name)]

    def reply_of(self, request: str) -> str | None:
        """The reply (or, for a dump, details) message answering ``request``; None if none."""
        svc = self.services.get(request)
        if svc is None or svc["reply"] == "null":
            return None
        return str(svc["reply"])

    def is_dump(self, request: str) -> bool:
        return bool(self.services.get(request, {}).get("stream"))

    def event_subscriptions(self) -> dict[str, str]:
        """Event message -> the ``want_*`` request that subscribes to it."""
        return {ev: want for want, svc in self.services.items() for ev in svc.get("events", ())}

    def type_closure(self, type_names: Iterable[str]) -> list[str]:
        """The named types and everything they use, dependencies before dependents."""
        order: list[str] = []
        seen: set[str] = set()

        def visit(tname: str) -> None:
            if tname in BASE_TYPES:
                return
            bare = _bare(tname)
            if bare in seen:
                return
            seen.add(bare)
            tdef = self.types[bare]
            if isinstance(tdef, StructDef):
                for f in tdef.fields:
                    visit(f.type)
            elif isinstance(tdef, AliasDef):
                visit(tdef.type)
            order.append(bare)

        for t in type_names:
            visit(t)
        return order

    def module_json(self, module: str) -> dict[str, Any]:
        """One module's object in the ``get_api_json`` array, shaped like VPP's ``.api.json``."""
        mod = next(m for m in self.modules if m.name == module)
        msgs = [self.messages[n] for n in self.module_messages[module]]
        used = self.type_closure(f.type for m in msgs for f in m.fields)
        doc: dict[str, Any] = {
            "module": module,
            "types": [],
            "messages": [m.to_json() for m in msgs],
            "unions": [],
            "enums": [],
            "enumflags": [],
            "services": {n: dict(s) for n, s in self.services.items() if n in self.module_messages[module]},
            "options": {"version": mod.version},
            "aliases": {},
            "vl_api_version": mod.vl_api_version,
            "imports": [],
            "counters": [],
            "paths": [],
        }
        for name in used:
            tdef = self.types[name]
            if isinstance(tdef, AliasDef):
                doc["aliases"][name] = tdef.to_json()
            elif isinstance(tdef, EnumDef):
                doc["enumflags" if tdef.is_flag else "enums"].append(tdef.to_json())
            else:
                doc["unions" if tdef.is_union else "types"].append(tdef.to_json())
        return doc

    def api_json(self) -> str:
        """The text of ``get_api_json_reply.json``: a JSON array of every module's document."""
        return json.dumps([self.module_json(m.name) for m in self.modules], separators=(",", ":"))


@cache
def api_defs() -> ApiDefs:
    """The simulator's definitions, parsed once."""
    return ApiDefs(MODULES)
