"""Tests for calico_vpp_driver.sim.handlers: the simulator's API handlers, called directly.

Each message's happy path and the errors VPP answers with (VNET_API_ERROR_* values and
VPP's occasional positive retvals), ACL replace-in-place, refusal (or not, as in VPP) to
delete objects in use, FIB mark-and-sweep, pool index reuse and interface events.
Requests use both the codec's decoded forms (dicts, bytes) and ipaddress objects.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calico_vpp_driver.sim.codec import Codec, WireElements
from calico_vpp_driver.sim.handlers import DUMPS, HANDLERS, REPLIES, handle
from calico_vpp_driver.sim.state import U32_MAX, E, VppState

API_DIR = Path(__file__).resolve().parents[2] / "shared" / "vpp-api"


def call(state: VppState, name: str, **req: Any) -> dict[str, Any]:
    result = HANDLERS[name](state, req)
    assert isinstance(result, dict), name
    return result


def dump(state: VppState, name: str, **req: Any) -> list[dict[str, Any]]:
    result = HANDLERS[name](state, req)
    assert isinstance(result, list), name
    return result


def raw_addr(addr: str) -> dict[str, Any]:
    """A vl_api_address_t as the codec decodes it (every union member present)."""
    ip = IPv4Address(addr) if "." in addr else IPv6Address(addr)
    if ip.version == 4:
        return {"af": 0, "un": {"ip4": ip.packed, "ip6": ip.packed + bytes(12)}}
    return {"af": 1, "un": {"ip4": ip.packed[:4], "ip6": ip.packed}}


def raw_prefix(prefix: str) -> dict[str, Any]:
    addr, length = prefix.split("/")
    return {"address": raw_addr(addr), "len": int(length)}


def tap(state: VppState, **extra: Any) -> int:
    reply = call(state, "tap_create_v3", id=U32_MAX, **extra)
    assert reply["retval"] == 0
    return int(reply["sw_if_index"])


def up(state: VppState, sw_if_index: int) -> None:
    assert call(state, "sw_interface_set_flags", sw_if_index=sw_if_index, flags=1)["retval"] == 0


# ---------------------------------------------------------------------------------------
# registry


def test_every_handler_has_a_reply_name_and_dumps_return_lists() -> None:
    assert set(REPLIES) == set(HANDLERS)
    state = VppState()
    for name in DUMPS:
        assert REPLIES[name].endswith("_details")
        assert isinstance(HANDLERS[name](state, {}), list)
    assert REPLIES["vxlan_add_del_tunnel_v3"] == "vxlan_add_del_tunnel_v3_reply"
    assert REPLIES["npol_rule_create"] == "npol_rule_create_reply"


@pytest.mark.skipif(not API_DIR.is_dir(), reason="VPP's API definitions are not available")
def test_message_names_match_vpps_definitions() -> None:
    names: set[str] = set()
    for path in API_DIR.glob("*/*.api.json"):
        names.update(m[0] for m in json.loads(path.read_text())["messages"])
    not_in_reference = {"urpf_update", "urpf_update_reply"}  # the urpf plugin's .api is not in the set
    for request, reply in REPLIES.items():
        assert request in names or request in not_in_reference, request
        assert reply in names or reply in not_in_reference, reply


def test_handle_turns_uninterpretable_values_into_invalid_value() -> None:
    state = VppState()
    assert handle(state, "sw_interface_set_flags", {"sw_if_index": "zero"}) == {"retval": E.INVALID_VALUE}
    assert handle(state, "acl_dump", {"acl_index": object()}) == []


# ---------------------------------------------------------------------------------------
# vpe, interfaces


def test_fresh_state_is_a_restarted_vpp() -> None:
    state = VppState()
    details = dump(state, "sw_interface_dump", sw_if_index=U32_MAX)
    assert [(d["sw_if_index"], d["interface_name"], d["flags"]) for d in details] == [(0, "local0", 0)]
    version = call(state, "show_version")
    assert version["retval"] == 0 and version["version"] == "26.10-rc0~sim" and version["program"] == "vpe"
    assert state.events == []


def test_sw_interface_dump_filters() -> None:
    state = VppState()
    tap(state)
    call(state, "create_loopback", mac_address=bytes(6))

    def names(details: list[dict[str, Any]]) -> list[str]:
        return [d["interface_name"] for d in details]

    assert names(dump(state, "sw_interface_dump", name_filter_valid=True, name_filter="TAP")) == ["tap0"]
    assert names(dump(state, "sw_interface_dump", name_filter_valid=True, name_filter="")) == [
        "local0",
        "tap0",
        "loop0",
    ]
    assert names(dump(state, "sw_interface_dump", sw_if_index=2)) == ["loop0"]
    # sw_if_index 0 (the old default) dumps everything, like ~0
    assert len(dump(state, "sw_interface_dump", sw_if_index=0)) == 3
    assert dump(state, "sw_interface_dump", sw_if_index=9) == []


def test_set_flags_brings_link_up_and_emits_events() -> None:
    state = VppState()
    sw = tap(state)
    assert state.events[-1] == (
        "sw_interface_event",
        {"client_index": 0, "pid": 0, "sw_if_index": sw, "flags": 2, "deleted": False},
    )
    loop = call(state, "create_loopback")["sw_if_index"]
    state.events.clear()
    up(state, loop)
    assert state.events == [
        (
            "sw_interface_event",
            {"client_index": 0, "pid": 0, "sw_if_index": loop, "flags": 3, "deleted": False},
        )
    ]
    (details,) = dump(state, "sw_interface_dump", sw_if_index=loop)
    assert details["flags"] == 3 and details["interface_dev_type"] == "Loopback"
    call(state, "sw_interface_set_flags", sw_if_index=loop, flags=0)
    assert state.events[-1][1]["flags"] == 0
    assert dump(state, "sw_interface_dump", sw_if_index=loop)[0]["flags"] == 0
    assert call(state, "sw_interface_set_flags", sw_if_index=77, flags=1)["retval"] == E.INVALID_SW_IF_INDEX


def test_want_interface_events_registration() -> None:
    state = VppState()
    assert call(state, "want_interface_events", enable_disable=1, pid=7, client_index=3)["retval"] == 0
    assert call(state, "want_interface_events", enable_disable=1, pid=7, client_index=3)["retval"] == -31
    assert call(state, "want_interface_events", enable_disable=0, pid=7, client_index=3)["retval"] == 0
    assert call(state, "want_interface_events", enable_disable=0, pid=7, client_index=3)["retval"] == -31


def test_tags() -> None:
    state = VppState()
    sw = tap(state, tag="created-with-tag")
    assert dump(state, "sw_interface_dump", sw_if_index=sw)[0]["tag"] == "created-with-tag"
    assert call(state, "sw_interface_tag_add_del", is_add=True, sw_if_index=sw, tag="x" * 70)["retval"] == 0
    assert dump(state, "sw_interface_dump", sw_if_index=sw)[0]["tag"] == "x" * 63
    assert (
        call(state, "sw_interface_tag_add_del", is_add=True, sw_if_index=sw, tag="")["retval"]
        == E.INVALID_VALUE
    )
    assert call(state, "sw_interface_tag_add_del", is_add=False, sw_if_index=sw)["retval"] == 0
    assert dump(state, "sw_interface_dump", sw_if_index=sw)[0]["tag"] == ""
    assert call(state, "sw_interface_tag_add_del", is_add=True, sw_if_index=9, tag="t")["retval"] == -2


def test_set_mtu_stores_the_per_protocol_mtus_and_dump_reports_them() -> None:
    state = VppState()
    sw = tap(state)
    (before,) = dump(state, "sw_interface_dump", sw_if_index=sw)
    assert before["mtu"] == [before["link_mtu"], 0, 0, 0]  # never set: the hardware MTU as L3
    assert call(state, "sw_interface_set_mtu", sw_if_index=sw, mtu=[1400, 0, 1380, 0])["retval"] == 0
    (after,) = dump(state, "sw_interface_dump", sw_if_index=sw)
    assert after["mtu"] == [1400, 0, 1380, 0] and after["link_mtu"] == before["link_mtu"]
    # VPP stores the values verbatim: zeros too (a 0 slot defers to L3; an L3 of 0 to VPP's 9000).
    assert call(state, "sw_interface_set_mtu", sw_if_index=sw, mtu=[0, 0, 0, 0])["retval"] == 0
    assert dump(state, "sw_interface_dump", sw_if_index=sw)[0]["mtu"] == [0, 0, 0, 0]
    show = call(state, "cli_inband", cmd="show interface")["reply"]
    assert "0/0/0/0" in next(line for line in show.splitlines() if line.startswith("tap0"))
    call(state, "sw_interface_set_mtu", sw_if_index=sw, mtu=[1450, 0, 0, 0])
    show = call(state, "cli_inband", cmd="show interface")["reply"]
    assert "1450/0/0/0" in next(line for line in show.splitlines() if line.startswith("tap0"))
    # An unknown (or deleted) interface is VALIDATE_SW_IF_INDEX's answer, and changes nothing.
    assert call(state, "sw_interface_set_mtu", sw_if_index=9, mtu=[1400, 0, 0, 0])["retval"] == (
        E.INVALID_SW_IF_INDEX
    )
    assert call(state, "sw_interface_set_mtu", sw_if_index=U32_MAX, mtu=[1400, 0, 0, 0])["retval"] == (
        E.INVALID_SW_IF_INDEX
    )
    assert handle(state, "sw_interface_set_mtu", {"sw_if_index": sw, "mtu": 1400}) == {
        "retval": E.INVALID_VALUE
    }
    assert dump(state, "sw_interface_dump", sw_if_index=sw)[0]["mtu"] == [1450, 0, 0, 0]


def test_addresses() -> None:
    state = VppState()
    a, b = tap(state), tap(state)
    add = "sw_interface_add_del_address"
    assert call(state, add, sw_if_index=a, is_add=True, prefix=IPv4Interface("10.0.0.1/24"))["retval"] == 0
    # a second address of the same subnet on the same interface is fine
    assert call(state, add, sw_if_index=a, is_add=True, prefix=raw_prefix("10.0.0.2/24"))["retval"] == 0
    # the same address again, or an overlapping subnet elsewhere in the table, is ADDRESS_IN_USE
    assert call(state, add, sw_if_index=a, is_add=True, prefix=IPv4Interface("10.0.0.1/24"))["retval"] == -105
    assert call(state, add, sw_if_index=b, is_add=True, prefix=IPv4Interface("10.0.0.9/16"))["retval"] == -105
    assert call(state, add, sw_if_index=b, is_add=False, prefix=IPv4Interface("10.9.9.9/24"))["retval"] == -60
    assert call(state, add, sw_if_index=a, is_add=False, prefix=IPv4Interface("10.0.0.2/24"))["retval"] == 0
    assert call(state, add, sw_if_index=a, del_all=True)["retval"] == 0
    assert state.interfaces.get(a) is not None and state.interfaces.get(a).addresses == []  # type: ignore[union-attr]
    assert call(state, add, sw_if_index=42, is_add=True, prefix=IPv4Interface("1.1.1.1/32"))["retval"] == -2


def test_set_table_and_unnumbered() -> None:
    state = VppState()
    a, b = tap(state), tap(state)
    assert (
        call(state, "sw_interface_set_table", sw_if_index=a, is_ipv6=False, vrf_id=5)["retval"]
        == E.NO_SUCH_FIB
    )
    assert call(state, "ip_table_add_del", is_add=True, table={"table_id": 5, "is_ip6": False})["retval"] == 0
    call(
        state, "sw_interface_add_del_address", sw_if_index=a, is_add=True, prefix=IPv4Interface("10.0.0.1/24")
    )
    assert call(state, "sw_interface_set_table", sw_if_index=a, is_ipv6=False, vrf_id=5)["retval"] == -114
    assert call(state, "sw_interface_set_table", sw_if_index=b, is_ipv6=False, vrf_id=5)["retval"] == 0
    assert call(state, "sw_interface_get_table", sw_if_index=b, is_ipv6=False) == {"retval": 0, "vrf_id": 5}
    unnum = "sw_interface_set_unnumbered"
    assert call(state, unnum, sw_if_index=a, unnumbered_sw_if_index=99, is_add=True)["retval"] == -2
    assert call(state, unnum, sw_if_index=99, unnumbered_sw_if_index=b, is_add=True)["retval"] == -10
    assert call(state, unnum, sw_if_index=a, unnumbered_sw_if_index=b, is_add=True)["retval"] == -74
    assert call(state, "sw_interface_set_table", sw_if_index=b, is_ipv6=False, vrf_id=0)["retval"] == 0
    assert call(state, unnum, sw_if_index=a, unnumbered_sw_if_index=b, is_add=True)["retval"] == 0
    # b now has (borrowed) addresses: it cannot change table
    assert call(state, "sw_interface_set_table", sw_if_index=b, is_ipv6=False, vrf_id=5)["retval"] == -114
    assert call(state, unnum, sw_if_index=a, unnumbered_sw_if_index=b, is_add=False)["retval"] == 0


def test_tap_create_and_delete() -> None:
    state = VppState()
    assert tap(state) == 1
    second = call(state, "tap_create_v3", id=U32_MAX, tap_flags=16)  # TUN
    assert second == {"retval": 0, "sw_if_index": 2}
    assert dump(state, "sw_interface_dump", sw_if_index=2)[0]["interface_name"] == "tun1"
    assert call(state, "tap_create_v3", id=0)["retval"] == E.INVALID_INTERFACE
    assert call(state, "tap_create_v3", id=U32_MAX, tap_flags=8)["retval"] == E.NO_MATCHING_INTERFACE
    assert call(state, "tap_delete_v2", sw_if_index=0)["retval"] == E.INVALID_SW_IF_INDEX
    state.events.clear()
    assert call(state, "tap_delete_v2", sw_if_index=1)["retval"] == 0
    assert state.events[-1][1] == {"client_index": 0, "pid": 0, "sw_if_index": 1, "flags": 0, "deleted": True}
    # sw_if_index 1 and tap id 0 are free again and reused
    assert tap(state) == 1
    assert dump(state, "sw_interface_dump", sw_if_index=1)[0]["interface_name"] == "tap0"


def test_tap_create_without_vhost_net_fails_with_minus_11() -> None:
    state = VppState(vhost_net=False)
    assert call(state, "tap_create_v3", id=U32_MAX) == {"retval": -11, "sw_if_index": U32_MAX}
    assert len(state.interfaces) == 1


def test_af_packet() -> None:
    state = VppState(host_interfaces={"veth-a", "eth0"})
    create = "af_packet_create_v3"
    reply = call(state, create, mode=1, host_if_name="veth-a", use_random_hw_addr=True)
    assert reply == {"retval": 0, "sw_if_index": 1}
    (details,) = dump(state, "sw_interface_dump", sw_if_index=1)
    assert details["interface_name"] == "host-veth-a" and details["flags"] == 2
    assert details["interface_dev_type"] == "af-packet" and len(details["l2_address"]) == 6
    assert call(state, create, mode=1, host_if_name="veth-a") == {"retval": -79, "sw_if_index": 1}
    assert call(state, create, mode=1, host_if_name="nope")["retval"] == E.INVALID_INTERFACE
    assert call(state, create, mode=7, host_if_name="eth0")["retval"] == E.INVALID_VALUE
    assert call(state, "af_packet_delete", host_if_name="nope")["retval"] == -11
    assert call(state, "af_packet_delete", host_if_name="veth-a")["retval"] == 0
    assert dump(state, "sw_interface_dump", sw_if_index=1) == []


def test_loopbacks() -> None:
    state = VppState()
    reply = call(state, "create_loopback", mac_address=bytes(6))
    (details,) = dump(state, "sw_interface_dump", sw_if_index=reply["sw_if_index"])
    assert details["interface_name"] == "loop0"
    assert details["l2_address"] == bytes([0xDE, 0xAD, 0, 0, 0, 0])
    second = call(state, "create_loopback", mac_address="02:00:00:00:00:05")["sw_if_index"]
    assert dump(state, "sw_interface_dump", sw_if_index=second)[0]["l2_address"] == bytes([2, 0, 0, 0, 0, 5])
    assert call(state, "delete_loopback", sw_if_index=0)["retval"] == -2
    assert call(state, "delete_loopback", sw_if_index=reply["sw_if_index"])["retval"] == 0
    assert (
        dump(state, "sw_interface_dump", sw_if_index=call(state, "create_loopback")["sw_if_index"])[0][
            "interface_name"
        ]
        == "loop0"
    )


def test_vxlan_tunnels() -> None:
    state = VppState()
    req = {"src_address": raw_addr("192.168.0.1"), "dst_address": IPv4Address("192.168.0.2"), "vni": 4096}
    reply = call(state, "vxlan_add_del_tunnel_v3", is_add=True, instance=U32_MAX, **req)
    assert reply["retval"] == 0
    (details,) = dump(state, "sw_interface_dump", sw_if_index=reply["sw_if_index"])
    assert details["interface_name"] == "vxlan_tunnel0"
    assert call(state, "vxlan_add_del_tunnel_v3", is_add=True, instance=U32_MAX, **req)["retval"] == -75
    other = {**req, "vni": 5}
    assert call(state, "vxlan_add_del_tunnel_v3", is_add=True, instance=0, **other)["retval"] == -147
    same = {**req, "dst_address": IPv4Address("192.168.0.1")}
    assert call(state, "vxlan_add_del_tunnel_v3", is_add=True, **same)["retval"] == E.SAME_SRC_DST
    mixed = {**req, "dst_address": IPv6Address("fd00::1")}
    assert call(state, "vxlan_add_del_tunnel_v3", is_add=True, **mixed)["retval"] == E.INVALID_VALUE
    assert (
        call(state, "vxlan_add_del_tunnel_v3", is_add=True, encap_vrf_id=3, **other)["retval"]
        == E.NO_SUCH_FIB
    )
    assert call(state, "vxlan_add_del_tunnel_v3", is_add=False, **other)["retval"] == E.NO_SUCH_ENTRY
    deleted = call(state, "vxlan_add_del_tunnel_v3", is_add=False, **req)
    assert deleted == {"retval": 0, "sw_if_index": reply["sw_if_index"]}


def test_ipip_tunnels() -> None:
    state = VppState()
    tunnel = {
        "instance": U32_MAX,
        "src": IPv4Address("192.168.0.1"),
        "dst": raw_addr("192.168.0.2"),
        "table_id": 0,
    }
    reply = call(state, "ipip_add_tunnel", tunnel=tunnel)
    assert reply["retval"] == 0
    assert dump(state, "sw_interface_dump", sw_if_index=reply["sw_if_index"])[0]["interface_name"] == "ipip0"
    assert call(state, "ipip_add_tunnel", tunnel=tunnel) == {
        "retval": -79,
        "sw_if_index": reply["sw_if_index"],
    }
    same = {**tunnel, "dst": IPv4Address("192.168.0.1")}
    assert call(state, "ipip_add_tunnel", tunnel=same)["retval"] == E.SAME_SRC_DST
    mixed = {**tunnel, "dst": IPv6Address("fd00::2")}
    assert call(state, "ipip_add_tunnel", tunnel=mixed)["retval"] == E.INVALID_PROTOCOL
    assert call(state, "ipip_add_tunnel", tunnel={**tunnel, "table_id": 9})["retval"] == E.NO_SUCH_FIB
    assert call(state, "ipip_del_tunnel", sw_if_index=0)["retval"] == E.NO_SUCH_ENTRY
    assert call(state, "ipip_del_tunnel", sw_if_index=reply["sw_if_index"])["retval"] == 0


def test_urpf_and_cnat_feature() -> None:
    state = VppState()
    sw = tap(state)
    assert call(state, "urpf_update", sw_if_index=9, mode=1, af=0, is_input=True)["retval"] == -2
    assert (
        call(state, "urpf_update", sw_if_index=sw, mode=5, af=0, is_input=True)["retval"] == E.INVALID_VALUE
    )
    assert call(state, "urpf_update", sw_if_index=sw, mode=1, af=3, is_input=True)["retval"] == -97
    assert call(state, "urpf_update", sw_if_index=sw, mode=2, af=0, is_input=True)["retval"] == 0
    assert state.interfaces.get(sw).urpf == {(True, 0): 2}  # type: ignore[union-attr]
    assert call(state, "feature_cnat_enable_disable", sw_if_index=9, enable_disable=True)["retval"] == -2
    assert call(state, "feature_cnat_enable_disable", sw_if_index=sw, enable_disable=True)["retval"] == 0
    assert state.interfaces.get(sw).cnat_feature  # type: ignore[union-attr]


def test_urpf_mode_is_kept_per_index_and_outlives_the_interface() -> None:
    """urpf.c: the mode lives in a table by sw_if_index that nothing clears on delete, and asking
    for the mode it holds changes nothing; the feature itself goes with the interface."""
    state = VppState()
    sw = tap(state)
    assert call(state, "urpf_update", sw_if_index=sw, mode=2, af=1, is_input=True)["retval"] == 0
    assert call(state, "tap_delete_v2", sw_if_index=sw)["retval"] == 0
    assert tap(state) == sw  # the index is reused
    itf = state.interfaces.get(sw)
    assert itf is not None and itf.urpf == {}  # the feature went with the deleted interface
    assert call(state, "urpf_update", sw_if_index=sw, mode=2, af=1, is_input=True)["retval"] == 0
    assert itf.urpf == {}  # VPP's table already said strict: nothing happened
    assert state.urpf_cfgs[(1, True, sw)] == 2
    call(state, "urpf_update", sw_if_index=sw, mode=1, af=1, is_input=True)
    assert itf.urpf == {(True, 1): 1}
    call(state, "urpf_update", sw_if_index=sw, mode=2, af=1, is_input=True)
    assert itf.urpf == {(True, 1): 2}
    call(state, "urpf_update", sw_if_index=sw, mode=0, af=1, is_input=True)
    assert itf.urpf == {} and state.urpf_cfgs[(1, True, sw)] == 0
    assert call(state, "urpf_update", sw_if_index=sw, mode=0, af=1, is_input=True)["retval"] == 0


def test_ip6_link_is_a_lock_count_taken_by_the_api_and_by_ipv6_addresses() -> None:
    state = VppState()
    sw = call(
        state, "af_packet_create_v3", mode=1, host_if_name="veth-a", hw_addr=bytes.fromhex("eeeeeeeeeeee")
    )["sw_if_index"]
    itf = state.interfaces.get(sw)
    assert itf is not None and not state.ip_enabled(itf, True)
    ip6 = "sw_interface_ip6_enable_disable"
    assert call(state, ip6, sw_if_index=99, enable=True)["retval"] == E.INVALID_SW_IF_INDEX
    assert call(state, ip6, sw_if_index=sw, enable=False)["retval"] == E.IP6_NOT_ENABLED
    assert call(state, ip6, sw_if_index=sw, enable=True)["retval"] == 0
    assert state.ip_enabled(itf, True) and not state.ip_enabled(itf, False)
    assert state.ip6_link_local(itf) == IPv6Address("fe80::ecee:eeff:feee:eeee")
    assert call(state, ip6, sw_if_index=sw, enable=True)["retval"] == E.VALUE_EXIST
    assert call(state, ip6, sw_if_index=sw, enable=False)["retval"] == 0
    assert state.ip6_link_local(itf) is not None  # one lock left
    assert call(state, ip6, sw_if_index=sw, enable=False)["retval"] == 0
    assert state.ip6_link_local(itf) is None
    # An IPv6 address takes a lock and its deletion drops it (ip6_forward.c).
    prefix = {"address": raw_addr("fd00::1"), "len": 64}
    assert (
        call(state, "sw_interface_add_del_address", sw_if_index=sw, is_add=True, prefix=prefix)["retval"] == 0
    )
    assert itf.ip6_link_locks == 1
    assert call(state, ip6, sw_if_index=sw, enable=True)["retval"] == E.VALUE_EXIST
    assert (
        call(state, "sw_interface_add_del_address", sw_if_index=sw, is_add=False, prefix=prefix)["retval"]
        == 0
    )
    assert itf.ip6_link_locks == 1


def test_route_delete_needs_no_path_and_one_naming_a_deleted_interface_is_refused() -> None:
    """fib_api.c decodes a delete's paths too: a path through an interface VPP no longer has is
    -54 and the route stays; a delete without paths removes it (ip_api.c, fib_table_entry_delete)."""
    state = VppState()
    sw = tap(state)
    add = "ip_route_add_del"
    path = {"sw_if_index": sw, "proto": 0}
    prefix = IPv4Network("10.0.0.5/32")
    assert call(state, add, is_add=True, route=_route(prefix, [path]))["retval"] == 0
    assert call(state, "tap_delete_v2", sw_if_index=sw)["retval"] == 0
    reply = call(state, add, is_add=False, route=_route(prefix, [path]))
    assert reply["retval"] == E.NO_MATCHING_INTERFACE
    assert "10.0.0.5/32" in _prefixes(state)
    assert call(state, add, is_add=False, route=_route(prefix, []))["retval"] == 0
    assert "10.0.0.5/32" not in _prefixes(state)


# ---------------------------------------------------------------------------------------
# FIB


def _route(prefix: Any, paths: list[dict[str, Any]], table_id: int = 0) -> dict[str, Any]:
    return {"table_id": table_id, "prefix": prefix, "n_paths": len(paths), "paths": paths}


def _prefixes(state: VppState, table_id: int = 0, is_ip6: bool = False) -> dict[str, Any]:
    return {
        str(d["route"]["prefix"]): d["route"]
        for d in dump(state, "ip_route_dump", table={"table_id": table_id, "is_ip6": is_ip6})
    }


def test_default_tables_have_vpps_special_entries() -> None:
    state = VppState()
    assert set(_prefixes(state)) == {
        "0.0.0.0/0",
        "0.0.0.0/32",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "255.255.255.255/32",
    }
    assert _prefixes(state)["0.0.0.0/0"]["paths"][0]["type"] == 2  # drop
    assert {"::/0", "fe80::/10"} <= set(_prefixes(state, is_ip6=True))
    tables = dump(state, "ip_table_dump")
    assert [(t["table"]["table_id"], t["table"]["is_ip6"]) for t in tables] == [(0, False), (0, True)]


def test_route_add_dump_delete_and_errors() -> None:
    state = VppState()
    sw = tap(state)
    add = "ip_route_add_del"
    path = {"sw_if_index": sw, "proto": 0, "nh": {"address": {"ip4": IPv4Address("10.1.0.1")}}}
    reply = call(state, add, is_add=True, route=_route(raw_prefix("10.0.0.0/24"), [path]))
    assert reply["retval"] == 0 and reply["stats_index"] != U32_MAX
    route = _prefixes(state)["10.0.0.0/24"]
    assert route["n_paths"] == 1 and route["paths"][0]["sw_if_index"] == sw
    assert route["paths"][0]["nh"]["address"] == {"ip4": IPv4Address("10.1.0.1")}
    assert len(route["paths"][0]["label_stack"]) == 16
    bad_if = {"sw_if_index": 77, "proto": 0}
    assert call(state, add, is_add=True, route=_route(IPv4Network("10.1.0.0/24"), [bad_if]))["retval"] == -54
    recursive_bad_table = {"sw_if_index": U32_MAX, "table_id": 8, "proto": 0}
    route_req = _route(IPv4Network("10.1.0.0/24"), [recursive_bad_table])
    assert call(state, add, is_add=True, route=route_req)["retval"] == E.NO_SUCH_FIB
    assert call(state, add, is_add=True, route=_route(IPv4Network("10.1.0.0/24"), [path], 3))["retval"] == -3
    assert call(state, add, is_add=True, route=_route(IPv4Network("10.1.0.0/24"), []))["retval"] == -52
    too_long = {"address": raw_addr("10.0.0.0"), "len": 33}
    assert call(state, add, is_add=True, route=_route(too_long, [path]))["retval"] == -171
    assert call(state, add, is_add=False, route=_route(IPv4Network("10.0.0.0/24"), []))["retval"] == 0
    assert "10.0.0.0/24" not in _prefixes(state)
    # deleting what does not exist is not an error
    assert call(state, add, is_add=False, route=_route(IPv4Network("10.9.0.0/24"), []))["retval"] == 0


def test_multipath_adds_and_removes_paths() -> None:
    state = VppState()
    a, b = tap(state), tap(state)
    pa, pb = {"sw_if_index": a, "proto": 0}, {"sw_if_index": b, "proto": 0}
    add = "ip_route_add_del"
    prefix = IPv4Network("10.0.0.0/24")
    call(state, add, is_add=True, is_multipath=True, route=_route(prefix, [pa]))
    call(state, add, is_add=True, is_multipath=True, route=_route(prefix, [pb]))
    assert _prefixes(state)["10.0.0.0/24"]["n_paths"] == 2
    call(state, add, is_add=False, is_multipath=True, route=_route(prefix, [pa]))
    assert [p["sw_if_index"] for p in _prefixes(state)["10.0.0.0/24"]["paths"]] == [b]
    call(state, add, is_add=False, is_multipath=True, route=_route(prefix, [pb]))
    assert "10.0.0.0/24" not in _prefixes(state)
    # a non-multipath add replaces the paths
    call(state, add, is_add=True, route=_route(prefix, [pa]))
    call(state, add, is_add=True, route=_route(prefix, [pb]))
    assert [p["sw_if_index"] for p in _prefixes(state)["10.0.0.0/24"]["paths"]] == [b]


def test_interface_routes_follow_admin_state() -> None:
    state = VppState()
    sw = tap(state)
    call(
        state,
        "sw_interface_add_del_address",
        sw_if_index=sw,
        is_add=True,
        prefix=IPv4Interface("10.0.0.1/24"),
    )
    assert "10.0.0.0/24" not in _prefixes(state)
    up(state, sw)
    routes = _prefixes(state)
    assert routes["10.0.0.0/24"]["paths"][0]["sw_if_index"] == sw
    assert routes["10.0.0.1/32"]["paths"][0]["type"] == 1  # local
    assert routes["10.0.0.255/32"]["paths"][0]["type"] == 2  # broadcast: drop


def test_table_replace_mark_and_sweep() -> None:
    state = VppState()
    sw = tap(state)
    up(state, sw)
    call(
        state,
        "sw_interface_add_del_address",
        sw_if_index=sw,
        is_add=True,
        prefix=IPv4Interface("10.0.0.1/24"),
    )
    table = {"table_id": 0, "is_ip6": False}
    path = {"sw_if_index": sw, "proto": 0}
    for prefix in ("10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"):
        call(state, "ip_route_add_del", is_add=True, route=_route(IPv4Network(prefix), [path]))
    assert call(state, "ip_table_replace_begin", table=table)["retval"] == 0
    call(state, "ip_route_add_del", is_add=True, route=_route(IPv4Network("10.1.0.0/16"), [path]))
    call(
        state,
        "ip_route_add_del",
        is_add=True,
        is_multipath=True,
        route=_route(IPv4Network("10.4.0.0/16"), [path]),
    )
    assert call(state, "ip_table_replace_end", table=table)["retval"] == 0
    routes = _prefixes(state)
    assert {"10.1.0.0/16", "10.4.0.0/16"} <= set(routes)
    assert "10.2.0.0/16" not in routes and "10.3.0.0/16" not in routes
    # the sweep only touches API routes: interface and special entries stay
    assert {"10.0.0.0/24", "10.0.0.1/32", "0.0.0.0/0"} <= set(routes)
    missing = {"table_id": 42, "is_ip6": False}
    assert call(state, "ip_table_replace_begin", table=missing)["retval"] == E.NO_SUCH_FIB
    assert call(state, "ip_table_replace_end", table=missing)["retval"] == E.NO_SUCH_FIB
    assert call(state, "ip_table_flush", table=table)["retval"] == 0
    assert "10.1.0.0/16" not in _prefixes(state)


def test_ip_tables_lifecycle() -> None:
    state = VppState()
    sw = tap(state)
    t7 = {"table_id": 7, "is_ip6": True, "name": "pods"}
    assert call(state, "ip_table_add_del", is_add=True, table=t7)["retval"] == 0
    assert call(state, "ip_table_add_del", is_add=True, table=t7)["retval"] == 0  # idempotent
    prefix = IPv6Network("fd00::/64")
    route = _route(prefix, [{"sw_if_index": sw, "proto": 1}], table_id=7)
    assert call(state, "ip_route_add_del", is_add=True, route=route)["retval"] == 0
    assert "fd00::/64" in _prefixes(state, 7, True)
    assert call(state, "sw_interface_set_table", sw_if_index=sw, is_ipv6=True, vrf_id=7)["retval"] == 0
    # the API's delete drops its lock; the bound interface keeps the table alive
    assert call(state, "ip_table_add_del", is_add=False, table=t7)["retval"] == 0
    assert "fd00::/64" in _prefixes(state, 7, True)
    assert call(state, "sw_interface_set_table", sw_if_index=sw, is_ipv6=True, vrf_id=0)["retval"] == 0
    assert dump(state, "ip_route_dump", table=t7) == []
    # table 0 cannot be deleted
    assert (
        call(state, "ip_table_add_del", is_add=False, table={"table_id": 0, "is_ip6": False})["retval"] == 0
    )
    assert _prefixes(state)


# ---------------------------------------------------------------------------------------
# npol


def _rule(action: int = 0, matches: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    matches = matches or []
    return {"action": action, "filters": [], "num_entries": len(matches), "matches": matches}


def test_npol_ipsets() -> None:
    state = VppState()
    assert call(state, "npol_get_version") == {"major": 0, "minor": 0}
    ip_set = call(state, "npol_ipset_create", type=0)
    assert ip_set == {"retval": 0, "set_id": 0}
    members = [{"val": {"address": raw_addr("10.0.0.1")}}, {"val": {"address": IPv4Address("10.0.0.2")}}]
    reply = call(state, "npol_ipset_add_del_members", set_id=0, is_add=True, len=2, members=members)
    assert reply["retval"] == 0
    assert state.npol_ipsets.get(0).members == [IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")]  # type: ignore[union-attr]
    call(state, "npol_ipset_add_del_members", set_id=0, is_add=False, len=1, members=members[:1])
    assert state.npol_ipsets.get(0).members == [IPv4Address("10.0.0.2")]  # type: ignore[union-attr]
    assert call(state, "npol_ipset_add_del_members", set_id=5, is_add=True, len=0, members=[])["retval"] == -6
    net_set = call(state, "npol_ipset_create", type=2)["set_id"]
    bad = [{"val": {"prefix": raw_prefix("10.0.0.1/24")}}]
    assert (
        call(state, "npol_ipset_add_del_members", set_id=net_set, is_add=True, len=1, members=bad)["retval"]
        == -88
    )
    assert call(state, "npol_ipset_delete", set_id=net_set)["retval"] == 0
    assert call(state, "npol_ipset_delete", set_id=net_set)["retval"] == -6
    # the freed id is the next one handed out
    assert call(state, "npol_ipset_create", type=1)["set_id"] == net_set


def test_npol_ip_and_port_member_delete_reproduces_vpps_comparison() -> None:
    state = VppState()
    sid = call(state, "npol_ipset_create", type=1)["set_id"]

    def member(addr: str, proto: int, port: int) -> dict[str, Any]:
        return {"val": {"tuple": {"address": raw_addr(addr), "l4_proto": proto, "port": port}}}

    all_members = [member("10.0.0.1", 6, 80), member("10.0.0.2", 6, 80), member("10.0.0.3", 17, 53)]
    call(state, "npol_ipset_add_del_members", set_id=sid, is_add=True, len=3, members=all_members)
    call(state, "npol_ipset_add_del_members", set_id=sid, is_add=False, len=1, members=all_members[:1])
    # VPP also deletes every member with another port or protocol (udp/53 goes too)
    assert state.npol_ipsets.get(sid).members == [(IPv4Address("10.0.0.2"), 6, 80)]  # type: ignore[union-attr]
    state.npol_ipport_delete_bug = False
    call(state, "npol_ipset_add_del_members", set_id=sid, is_add=True, len=3, members=all_members)
    call(state, "npol_ipset_add_del_members", set_id=sid, is_add=False, len=1, members=all_members[:1])
    assert len(state.npol_ipsets.get(sid).members) == 3  # type: ignore[union-attr]


def test_npol_rules() -> None:
    state = VppState()
    matches = [
        {"is_src": True, "is_not": False, "type": 0, "data": {"cidr": raw_prefix("10.0.0.0/8")}},
        {"is_src": False, "is_not": False, "type": 1, "data": {"port_range": {"start": 80, "end": 90}}},
        {"is_src": False, "is_not": True, "type": 3, "data": {"set_id": {"set_id": 4}}},
    ]
    reply = call(state, "npol_rule_create", rule=_rule(1, matches))
    assert reply == {"retval": 0, "rule_id": 0}
    rule = state.npol_rules.get(0)
    assert rule is not None and rule.action == 1 and len(rule.entries) == 3 and len(rule.filters) == 3
    assert rule.entries[0].cidr == IPv4Network("10.0.0.0/8") and rule.entries[2].set_id == 4
    bad_type = [{"is_src": True, "is_not": False, "type": 9, "data": {}}]
    assert call(state, "npol_rule_create", rule=_rule(0, bad_type)) == {"retval": -1, "rule_id": U32_MAX}
    bad_cidr = [{"is_src": True, "is_not": False, "type": 0, "data": {"cidr": raw_prefix("10.0.0.1/8")}}]
    assert call(state, "npol_rule_create", rule=_rule(0, bad_cidr))["retval"] == -88
    assert call(state, "npol_rule_update", rule_id=0, rule=_rule(0))["retval"] == 0
    assert state.npol_rules.get(0).action == 0 and state.npol_rules.get(0).entries == []  # type: ignore[union-attr]
    # VPP does not check the id of an update: an unknown one allocates a new rule
    assert call(state, "npol_rule_update", rule_id=40, rule=_rule(1))["retval"] == 0
    assert 1 in state.npol_rules and 40 not in state.npol_rules
    assert call(state, "npol_rule_delete", rule_id=40)["retval"] == -6
    assert call(state, "npol_rule_delete", rule_id=1)["retval"] == 0


def test_npol_policies_and_configuration() -> None:
    state = VppState()
    sw = tap(state)
    r0 = call(state, "npol_rule_create", rule=_rule(0))["rule_id"]
    items = [{"is_inbound": True, "rule_id": r0}, {"is_inbound": False, "rule_id": r0}]
    pid = call(state, "npol_policy_create", num_items=2, rules=items)["policy_id"]
    policy = state.npol_policies.get(pid)
    assert policy is not None and policy.rx == [r0] and policy.tx == [r0]
    assert call(state, "npol_policy_update", policy_id=pid, num_items=1, rules=items[:1])["retval"] == 0
    assert state.npol_policies.get(pid).tx == []  # type: ignore[union-attr]
    conf = {
        "num_rx_policies": 1,
        "num_tx_policies": 0,
        "total_ids": 2,
        "invert_rx_tx": 0,
        "policy_default_rx": 1,
        "policy_default_tx": 1,
        "profile_default_rx": 1,
        "profile_default_tx": 1,
    }
    assert (
        call(state, "npol_configure_policies", sw_if_index=99, policy_ids=[pid, pid], **conf)["retval"] == -2
    )
    # an unknown policy id: VPP answers 1 (a positive retval) and keeps the old configuration
    assert call(state, "npol_configure_policies", sw_if_index=sw, policy_ids=[pid, 9], **conf)["retval"] == 1
    assert sw not in state.npol_if
    assert (
        call(state, "npol_configure_policies", sw_if_index=sw, policy_ids=[pid, pid], **conf)["retval"] == 0
    )
    assert state.npol_if[sw].rx_policies == [pid] and state.npol_if[sw].profiles == [pid]
    assert call(state, "npol_policy_delete", policy_id=77)["retval"] == -6


def test_npol_deletes_referenced_objects_as_vpp_does() -> None:
    """npol never checks references: deleting a rule, policy or set in use succeeds."""
    state = VppState()
    sw = tap(state)
    sid = call(state, "npol_ipset_create", type=0)["set_id"]
    rid = call(
        state,
        "npol_rule_create",
        rule=_rule(0, [{"is_src": True, "is_not": False, "type": 3, "data": {"set_id": sid}}]),
    )["rule_id"]
    pid = call(state, "npol_policy_create", num_items=1, rules=[{"is_inbound": True, "rule_id": rid}])[
        "policy_id"
    ]
    conf = {"num_rx_policies": 1, "num_tx_policies": 0, "total_ids": 1, "policy_ids": [pid]}
    assert call(state, "npol_configure_policies", sw_if_index=sw, **conf)["retval"] == 0
    assert call(state, "npol_ipset_delete", set_id=sid)["retval"] == 0
    assert call(state, "npol_rule_delete", rule_id=rid)["retval"] == 0
    assert call(state, "npol_policy_delete", policy_id=pid)["retval"] == 0
    assert sorted(state.npol_dangling()) == [
        f"interface {sw} references deleted policy {pid}",
    ]
    # the freed rule keeps its action for the matcher (a release build's freed slot)
    assert state.npol_rule_view(rid)[1] == "freed"
    # deleting the interface drops its npol configuration
    call(state, "tap_delete_v2", sw_if_index=sw)
    assert sw not in state.npol_if


# ---------------------------------------------------------------------------------------
# acl


def _acl_rule(
    permit: int, src: str = "0.0.0.0/0", dst: str = "0.0.0.0/0", proto: int = 0, **ports: int
) -> dict[str, Any]:
    return {
        "is_permit": permit,
        "src_prefix": raw_prefix(src),
        "dst_prefix": IPv4Network(dst),
        "proto": proto,
        "srcport_or_icmptype_first": ports.get("sf", 0),
        "srcport_or_icmptype_last": ports.get("sl", 65535),
        "dstport_or_icmpcode_first": ports.get("df", 0),
        "dstport_or_icmpcode_last": ports.get("dl", 65535),
        "tcp_flags_mask": 0,
        "tcp_flags_value": 0,
    }


def test_acl_add_replace_in_place_and_dump() -> None:
    state = VppState()
    assert call(state, "acl_plugin_get_version") == {"major": 1, "minor": 4}
    reply = call(state, "acl_add_replace", acl_index=U32_MAX, tag="pod-a", count=1, r=[_acl_rule(1, proto=6)])
    assert reply == {"retval": 0, "acl_index": 0}
    second = call(state, "acl_add_replace", acl_index=U32_MAX, tag="pod-b", count=0, r=[])
    assert second["acl_index"] == 1
    rules = [_acl_rule(0), _acl_rule(2, "10.0.0.0/8")]
    replaced = call(state, "acl_add_replace", acl_index=0, tag="pod-a2", count=2, r=rules)
    assert replaced == {"retval": 0, "acl_index": 0}
    (details,) = dump(state, "acl_dump", acl_index=0)
    assert details["tag"] == "pod-a2" and details["count"] == 2
    assert details["r"][1]["is_permit"] == 2 and details["r"][1]["src_prefix"] == IPv4Network("10.0.0.0/8")
    assert [d["acl_index"] for d in dump(state, "acl_dump", acl_index=U32_MAX)] == [0, 1]
    assert dump(state, "acl_dump", acl_index=5) == []


def test_acl_add_replace_errors() -> None:
    state = VppState()
    add = "acl_add_replace"
    assert call(state, add, acl_index=3, tag="", count=0, r=[]) == {"retval": -6, "acl_index": 3}
    host_bits = _acl_rule(1)
    host_bits["src_prefix"] = raw_prefix("10.0.0.1/8")
    assert call(state, add, acl_index=U32_MAX, tag="", count=1, r=[host_bits])["retval"] == -57
    host_bits = _acl_rule(1)
    host_bits["dst_prefix"] = raw_prefix("10.0.0.1/8")
    assert call(state, add, acl_index=U32_MAX, tag="", count=1, r=[host_bits])["retval"] == -58
    mixed = _acl_rule(1)
    mixed["dst_prefix"] = IPv6Network("::/0")
    assert call(state, add, acl_index=U32_MAX, tag="", count=1, r=[mixed])["retval"] == -57
    backwards = _acl_rule(1, proto=6, df=90, dl=80)
    assert call(state, add, acl_index=U32_MAX, tag="", count=1, r=[backwards])["retval"] == E.INVALID_VALUE_2
    assert call(state, add, acl_index=U32_MAX, tag="t" * 64, count=0, r=[])["retval"] == E.INVALID_VALUE
    assert len(state.acls) == 0


def test_acl_interface_lists_and_deletion_in_use() -> None:
    state = VppState()
    sw = tap(state)
    a = call(state, "acl_add_replace", acl_index=U32_MAX, tag="a", count=1, r=[_acl_rule(1)])["acl_index"]
    b = call(state, "acl_add_replace", acl_index=U32_MAX, tag="b", count=1, r=[_acl_rule(0)])["acl_index"]
    set_list = "acl_interface_set_acl_list"
    assert call(state, set_list, sw_if_index=99, count=0, n_input=0, acls=[])["retval"] == -2
    assert call(state, set_list, sw_if_index=sw, count=1, n_input=1, acls=[7])["retval"] == -6
    assert call(state, set_list, sw_if_index=sw, count=256, n_input=0, acls=[a] * 256)["retval"] == -7
    assert call(state, set_list, sw_if_index=sw, count=2, n_input=1, acls=[a, b])["retval"] == 0
    listing = dump(state, "acl_interface_list_dump", sw_if_index=U32_MAX)
    assert [d["sw_if_index"] for d in listing] == [0, sw]
    assert listing[1] == {"sw_if_index": sw, "count": 2, "n_input": 1, "acls": [a, b]}
    assert call(state, "acl_del", acl_index=a)["retval"] == E.ACL_IN_USE_INBOUND
    assert call(state, "acl_del", acl_index=b)["retval"] == E.ACL_IN_USE_OUTBOUND
    # a duplicate within one direction: VPP answers 1 and leaves that direction alone
    assert call(state, set_list, sw_if_index=sw, count=2, n_input=2, acls=[a, a])["retval"] == 1
    assert call(state, set_list, sw_if_index=sw, count=0, n_input=0, acls=[])["retval"] == 0
    assert dump(state, "acl_interface_list_dump", sw_if_index=sw)[0]["count"] == 0
    assert call(state, "acl_del", acl_index=a)["retval"] == 0
    assert call(state, "acl_del", acl_index=a)["retval"] == -6
    add_del = "acl_interface_add_del"
    assert call(state, add_del, is_add=True, is_input=False, sw_if_index=sw, acl_index=b)["retval"] == 0
    assert call(state, add_del, is_add=True, is_input=False, sw_if_index=sw, acl_index=b)["retval"] == -143
    assert call(state, add_del, is_add=False, is_input=True, sw_if_index=sw, acl_index=b)["retval"] == -6
    assert call(state, add_del, is_add=False, is_input=False, sw_if_index=sw, acl_index=b)["retval"] == 0


# ---------------------------------------------------------------------------------------
# cnat


def _translation(vip: str, port: int, backends: list[tuple[str, int]], proto: int = 6) -> dict[str, Any]:
    return {
        "vip": {"addr": raw_addr(vip), "sw_if_index": U32_MAX, "if_af": 0, "port": port},
        "id": 0,
        "ip_proto": proto,
        "is_real_ip": 0,
        "flags": 0,
        "lb_type": 0,
        "n_paths": len(backends),
        "flow_hash_config": 0,
        "paths": [
            {
                "dst_ep": {"addr": IPv4Address(addr), "sw_if_index": U32_MAX, "if_af": 0, "port": p},
                "src_ep": {"addr": raw_addr("0.0.0.0"), "sw_if_index": U32_MAX, "if_af": 0, "port": 0},
                "flags": 0,
            }
            for addr, p in backends
        ],
    }


def test_cnat_translations() -> None:
    state = VppState()
    first = call(
        state, "cnat_translation_update", translation=_translation("10.96.0.10", 80, [("10.0.0.5", 8080)])
    )
    assert first == {"retval": 0, "id": 0}
    other = call(state, "cnat_translation_update", translation=_translation("10.96.0.10", 443, []))
    assert other["id"] == 1
    # same VIP, port and protocol: updated in place
    two = [("10.0.0.5", 8080), ("10.0.0.6", 8080)]
    assert call(state, "cnat_translation_update", translation=_translation("10.96.0.10", 80, two))["id"] == 0
    details = dump(state, "cnat_translation_dump")
    assert [d["translation"]["id"] for d in details] == [0, 1]
    assert details[0]["translation"]["n_paths"] == 2
    assert details[0]["translation"]["vip"]["addr"] == IPv4Address("10.96.0.10")
    assert details[0]["translation"]["paths"][1]["dst_ep"]["port"] == 8080
    assert call(state, "cnat_translation_del", id=5)["retval"] == -6
    assert call(state, "cnat_translation_del", id=1)["retval"] == 0
    assert len(dump(state, "cnat_translation_dump")) == 1


def test_cnat_snat_configuration() -> None:
    state = VppState()
    sw = tap(state)
    assert call(state, "cnat_set_snat_policy", policy=2)["retval"] == E.FEATURE_DISABLED
    exclude = "cnat_snat_policy_add_del_exclude_pfx"
    assert call(state, exclude, is_add=1, prefix=IPv4Network("10.0.0.0/8"))["retval"] == E.FEATURE_DISABLED
    assert call(state, "cnat_get_snat_addresses")["retval"] == E.FEATURE_DISABLED
    reply = call(
        state,
        "cnat_set_snat_addresses_v2",
        fwd_fib_index=0,
        ret_fib_index=0,
        snat_ip4=IPv4Address("192.168.0.11").packed,
        snat_ip6=bytes(16),
        sw_if_index=U32_MAX,
        flags=0,
    )
    assert reply["retval"] == 0
    got = call(state, "cnat_get_snat_addresses")
    assert got["retval"] == 0 and got["snat_ip4"] == IPv4Address("192.168.0.11")
    assert call(state, "cnat_set_snat_policy", policy=9)["retval"] == E.INVALID_VALUE
    assert call(state, "cnat_set_snat_policy", policy=2)["retval"] == 0
    assert call(state, exclude, is_add=1, prefix=raw_prefix("10.0.0.0/8"))["retval"] == 0
    assert state.snat[0].exclude == {IPv4Network("10.0.0.0/8")}
    add_if = "cnat_snat_policy_add_del_if"
    assert call(state, add_if, sw_if_index=sw, is_add=1, table=7)["retval"] == E.INVALID_VALUE
    assert call(state, add_if, sw_if_index=99, is_add=1, table=2)["retval"] == -2
    assert call(state, add_if, sw_if_index=sw, is_add=1, table=2)["retval"] == 0
    assert state.snat[0].if_maps == {2: {sw}}
    (addresses,) = dump(state, "cnat_snat_addresses_dump")
    assert addresses["fwd_table_id4"] == 0 and addresses["snat_ip4"] == IPv4Address("192.168.0.11")
    # neither address nor interface deletes the entry
    assert (
        call(state, "cnat_set_snat_addresses", snat_ip4=bytes(4), snat_ip6=bytes(16), sw_if_index=U32_MAX)[
            "retval"
        ]
        == 0
    )
    assert state.default_snat() is None


def test_cnat_snat_interface_bit_survives_interface_deletion_and_passes_to_the_reused_index() -> None:
    """cnat registers no interface add/del callback: the bitmap keeps the bit."""
    state = VppState()
    sw = tap(state)
    call(
        state,
        "cnat_set_snat_addresses_v2",
        fwd_fib_index=0,
        ret_fib_index=0,
        snat_ip4=IPv4Address("192.168.0.11").packed,
        snat_ip6=bytes(16),
        sw_if_index=U32_MAX,
        flags=6,
    )
    add_if = "cnat_snat_policy_add_del_if"
    assert call(state, add_if, sw_if_index=sw, is_add=1, table=0)["retval"] == 0
    assert call(state, "tap_delete_v2", sw_if_index=sw)["retval"] == 0
    assert state.snat[0].if_maps[0] == {sw}
    assert call(state, add_if, sw_if_index=sw, is_add=0, table=0)["retval"] == E.INVALID_SW_IF_INDEX
    assert tap(state) == sw  # the next interface gets the index, and the bit with it
    assert call(state, add_if, sw_if_index=sw, is_add=0, table=0)["retval"] == 0
    assert state.snat[0].if_maps[0] == set()


def test_cnat_session_purge_and_dump_byte_swaps_ports() -> None:
    from calico_vpp_driver.sim.packet import evaluate

    state = VppState()
    sw = tap(state)
    up(state, sw)
    call(
        state,
        "sw_interface_add_del_address",
        sw_if_index=sw,
        is_add=True,
        prefix=IPv4Interface("10.0.0.1/24"),
    )
    call(state, "feature_cnat_enable_disable", sw_if_index=sw, enable_disable=True)
    pkt = {"src": "10.0.0.7", "dst": "10.0.0.8", "proto": "tcp", "sport": 0x1234, "dport": 80}
    assert evaluate(state, pkt)[0] == "allow"
    sessions = dump(state, "cnat_session_dump")
    assert len(sessions) == 2  # forward + return
    forward = sessions[0]["session"]
    assert forward["tuple"]["addr"] == [IPv4Address("10.0.0.7"), IPv4Address("10.0.0.8")]
    assert forward["tuple"]["port"] == [0x3412, 0x5000] and forward["tuple"]["ip_proto"] == 6
    assert sessions[1]["session"]["flags"] == 16  # CNAT_SESSION_IS_RETURN
    assert call(state, "cnat_session_purge")["retval"] == 0
    assert dump(state, "cnat_session_dump") == []


def test_cli_inband_is_registered() -> None:
    state = VppState()
    reply = call(state, "cli_inband", cmd="show version")
    assert reply["retval"] == 0 and "26.10-rc0~sim" in reply["reply"]
    assert call(state, "cli_inband", cmd="frobnicate")["reply"].startswith("unknown input")


def decoded_with_array(
    codec: Codec, name: str, fields: dict[str, Any], elements: list[bytes]
) -> dict[str, Any]:
    """Message `name` as the simulator decodes it, whose last fields are a u32 count and the
    counted array: `fields` give the rest (count 0, array empty), `elements` the array's raw
    elements, whatever bytes they hold. The array must arrive in wire form."""
    body = codec.encode(name, fields)[:-4] + len(elements).to_bytes(4, "big") + b"".join(elements)
    req = codec.decode(name, body)
    assert isinstance(list(req.values())[-1], WireElements)
    return req


_MEMBER_BYTES = st.builds(
    lambda af, addr, plen, tail: bytes([af]) + addr + bytes([plen]) + tail,
    st.sampled_from([0, 0, 0, 1, 1, 2]),
    st.one_of(
        st.binary(min_size=16, max_size=16),
        st.builds(lambda a: a + bytes(12), st.binary(min_size=4, max_size=4)),
    ),
    st.one_of(st.sampled_from([0, 8, 24, 32, 64, 128]), st.integers(0, 255)),
    st.binary(min_size=2, max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(
    set_type=st.sampled_from([0, 1, 2]),
    first=st.lists(_MEMBER_BYTES, max_size=8),
    second=st.lists(_MEMBER_BYTES, max_size=8),
    count_cut=st.integers(0, 2),
)
def test_npol_members_in_wire_form_act_as_decoded_members(
    set_type: int, first: list[bytes], second: list[bytes], count_cut: int
) -> None:
    """The members array arrives in wire form (WireElements, read straight from its bytes for a
    NET set); the result must be the decoded elements' result: same members, same retval,
    members before an error kept, for adds and deletes, with `len` shorter than the array too."""
    codec = Codec()
    results = []
    for wire in (True, False):
        state = VppState()
        sid = call(state, "npol_ipset_create", type=set_type)["set_id"]
        replies = []
        for is_add, members in ((True, first + second), (False, first), (True, second)):
            fields = {"set_id": sid, "is_add": is_add, "len": 0, "members": []}
            req = decoded_with_array(codec, "npol_ipset_add_del_members", fields, members)
            req["len"] = max(0, len(members) - count_cut)
            if not wire:
                req["members"] = list(req["members"])
            req.pop("_vl_msg_id", None)
            replies.append(handle(state, "npol_ipset_add_del_members", req)["retval"])
        results.append((replies, state.npol_ipsets.get(sid).members))  # type: ignore[union-attr]
    assert results[0] == results[1]


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(st.tuples(st.integers(0, 255), st.integers(0, 2**32 - 1)), max_size=12),
    count_cut=st.integers(0, 3),
)
def test_npol_policy_items_in_wire_form_act_as_decoded_items(
    items: list[tuple[int, int]], count_cut: int
) -> None:
    codec = Codec()
    raw = [bytes([b]) + r.to_bytes(4, "big") for b, r in items]
    results = []
    for wire in (True, False):
        req = decoded_with_array(codec, "npol_policy_create", {"num_items": 0, "rules": []}, raw)
        req["num_items"] = max(0, len(items) - count_cut)
        if not wire:
            req["rules"] = list(req["rules"])
        req.pop("_vl_msg_id", None)
        state = VppState()
        pid = handle(state, "npol_policy_create", req)["policy_id"]
        policy = state.npol_policies.get(pid)
        results.append((policy.rx, policy.tx))  # type: ignore[union-attr]
    assert results[0] == results[1]


def test_cnat_snat_entry_hazards_are_recorded() -> None:
    # VPP's cnat_snat_cleanup frees a USE_AS_DEFAULT entry but keeps snat_default_policy
    # pointing at it, so a new entry is written into freed memory; the server reports the
    # hazards a handler records as errors naming the request.
    state = VppState()

    def snat(ip4: str, flags: int, fib: int = 0, ip6: str = "::") -> None:
        reply = call(
            state,
            "cnat_set_snat_addresses_v2",
            fwd_fib_index=fib,
            ret_fib_index=fib,
            snat_ip4=IPv4Address(ip4),
            snat_ip6=IPv6Address(ip6),
            sw_if_index=U32_MAX,
            flags=flags,
        )
        assert reply["retval"] == 0

    snat("10.0.0.1", 2)  # NO_CLIENT: deleting and making it again is safe
    snat("0.0.0.0", 0)
    snat("10.0.0.1", 2)
    snat("0.0.0.0", 0)
    assert state.hazards == []
    snat("10.0.0.1", 2 | 4)  # USE_AS_DEFAULT
    snat("0.0.0.0", 0)
    assert state.hazards == []
    snat("10.0.0.1", 2)
    assert len(state.hazards) == 1 and "freed" in state.hazards[0], state.hazards

    # Both families for an entry that has only IPv4 and is no default: a debug-build ASSERT.
    state = VppState()
    snat("10.0.0.2", 2, fib=1)
    snat("0.0.0.0", 2, fib=1, ip6="fd00::2")  # one family per message: fine
    snat("10.0.0.3", 2, fib=2)
    assert state.hazards == []
    snat("10.0.0.3", 2, fib=2, ip6="fd00::3")
    assert len(state.hazards) == 1 and "ASSERT" in state.hazards[0], state.hazards
