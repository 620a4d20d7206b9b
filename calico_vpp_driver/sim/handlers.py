"""The simulator's API handlers: one function per VPP request message, VPP's behaviour.

Contract with the socket server (`server.py`), which decodes each request, calls
`HANDLERS[name](state, request)` under its lock, encodes what comes back and then drains
`state.events`:

Requests (what handlers accept)
    * A dict keyed by VPP's field names (the `.api` files). `_vl_msg_id`, `context` and
      `client_index` may be present; only `want_interface_events` reads `client_index`.
      Missing fields read as 0 (or the field's API default where it matters: `is_add`,
      `id`/`instance`/`acl_index`/`sw_if_index` of ~0 where the API says so).
    * Integers (u8..u64, i32, enums, enumflags) as `int`; `bool` as `bool` or int.
    * Every value form the codec decodes to, and the `ipaddress` forms a test would write:
      - `vl_api_address_t`: `{"af": 0|1, "un": {"ip4": bytes4, "ip6": bytes16}}` (the codec
        decodes every union member; `af` picks) or `IPv4Address`/`IPv6Address`/`str`.
      - `vl_api_prefix_t`, `vl_api_address_with_prefix_t`, ip4/ip6 (address_with_)prefix:
        `{"address": <address>, "len": N}` or `IPv4Network`/`IPv6Network`/`IPv4Interface`/
        `IPv6Interface`/`str`. The dict form keeps host bits and out-of-range lengths, so
        handlers can answer IP_PREFIX_INVALID / INVALID_PREFIX_LENGTH where VPP does; a
        Network cannot carry host bits, an Interface can.
      - `vl_api_ip4_address_t` / `vl_api_ip6_address_t`: 4/16 `bytes` or ipaddress objects.
      - `vl_api_mac_address_t`: 6 `bytes` or "aa:bb:cc:dd:ee:ff".
      - strings (`string x[N]`, `string x[]`): `str` (or NUL-padded `bytes`).
      - arrays: lists; nested types: dicts; unions: a dict with every member (as the codec
        decodes) or only the one that applies. Without a discriminator the member is chosen
        from context: npol ipset member `val` by the set's type, fib_path `nh.address` by
        the path's `proto`, npol `data` by the entry's `type`. `npol_entry_data` has no case
        for NPOL_IP_SET (3): VPP reads its `set_id` member for types 2 and 3
        (`{"set_id": {"set_id": N}}`; a bare int is accepted).
    * A value that cannot be interpreted answers INVALID_VALUE (-7), or nothing for a dump.

Replies (what handlers return)
    * A dict of the reply's fields: addresses as `IPv4Address`/`IPv6Address`, prefixes as
      `IPv4Network`/`IPv6Network`, `vl_api_ip4_address_t` as `IPv4Address`, MACs as 6
      `bytes`, strings as `str`, unions as a one-member dict (`{"ip4": IPv4Address(...)}`).
      `retval` is included where the reply has one (`npol_get_version_reply` and
      `acl_plugin_get_version_reply` have none). `_vl_msg_id`, `context` and `client_index`
      are left to the server.
    * A `*_dump` returns the list of its details dicts (possibly empty); fixed-size arrays
      are returned in full (16 `label_stack` entries, 4 `mtu` values).
    * `REPLIES[request]` names the reply or details message of every handler; `DUMPS` is
      the set of dump requests.

Events
    * Handlers queue `("sw_interface_event", {"client_index": 0, "pid": 0, "sw_if_index",
      "flags", "deleted"})` in `state.events` on interface creation (flags: LINK_UP for
      taps/af_packet, whose link is up at creation), admin up/down and deletion
      (`deleted` true), whether or not anyone subscribed: the server delivers them to the
      clients registered with `want_interface_events` and fills in their client_index and
      pid. (`want_interface_events` here keeps VPP's registration retvals for in-process
      use; the server answers it itself.)

Error codes are VPP's (`state.E`, from vnet/error.h), including VPP's positive retvals
where VPP returns them (npol_configure_policies with an unknown policy: 1; an ACL list
with a duplicate ACL: 1). Every modelled behaviour and its source is listed in
sim/README.md.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
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
from typing import Any

from .codec import WireElements
from .state import (
    CNAT_IF_HOST,
    CNAT_POLICY_DNAT,
    CNAT_SESSION_IS_RETURN,
    CNAT_SNAT_F_USE_AS_DEFAULT,
    NH_PROTO_IP4,
    NH_PROTO_IP6,
    NPOL_CIDR,
    NPOL_FILTER_NONE,
    NPOL_IP,
    NPOL_IP_AND_PORT,
    NPOL_IP_SET,
    NPOL_NET,
    NPOL_PORT_IP_SET,
    NPOL_PORT_RANGE,
    PATH_TYPE_DROP,
    PATH_TYPE_LOCAL,
    PATH_TYPE_NORMAL,
    U32_MAX,
    Acl,
    AclRule,
    ApiRoute,
    CnatEndpoint,
    CnatPath,
    CnatTranslation,
    E,
    FibEntry,
    FibPath,
    FibTable,
    Interface,
    IPAddr,
    IPIface,
    IPNet,
    NpolEntry,
    NpolFilter,
    NpolIfConfig,
    NpolIpset,
    NpolMember,
    NpolPolicy,
    NpolRule,
    SnatEntry,
    VppState,
)

Request = dict[str, Any]
Reply = dict[str, Any]
Handler = Callable[[VppState, Request], Reply | list[Reply]]

VERSION = "26.10-rc0~sim"
BUILD_DATE = "2026-08-22T03:00:55"
BUILD_DIRECTORY = "/simulator"


class BadValue(Exception):
    """A request value the handlers cannot interpret (reported as INVALID_VALUE)."""


# ---------------------------------------------------------------------------------------
# Value helpers


def _int(value: Any, default: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise BadValue(f"not an integer: {value!r}") from exc


def _get(req: Request, key: str, default: int = 0) -> int:
    return _int(req.get(key), default)


def _bool(value: Any) -> bool:
    return bool(_int(value))


def _str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).split(b"\0", 1)[0].decode("utf-8", "replace")
    return str(value).split("\0", 1)[0]


def _addr(value: Any, af: int | None = None) -> IPAddr:
    """Decode any accepted form of an address (see the module docstring)."""
    if type(value) is dict:  # the codec's vl_api_address_t, the common case, taken at once
        un = value.get("un")
        if type(un) is dict and "un" not in un:
            family = value.get("af")
            raw = un.get("ip4") if family is None or family == 0 else un.get("ip6") if family == 1 else None
            if type(raw) is bytes:
                if len(raw) == 4:
                    return IPv4Address(raw)
                if len(raw) == 16:
                    return IPv6Address(raw)
    try:
        return _addr_inner(value, af)
    except ValueError as exc:  # ipaddress's AddressValueError and friends
        raise BadValue(str(exc)) from exc


def _addr_inner(value: Any, af: int | None) -> IPAddr:
    if isinstance(value, IPv4Address | IPv6Address):
        return value
    if isinstance(value, IPv4Interface | IPv6Interface):
        return value.ip
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
        if len(raw) == 16 and af == 0:
            return IPv4Address(raw[:4])
        return ip_address(raw)
    if isinstance(value, str):
        return ip_address(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return IPv6Address(value) if af == 1 else IPv4Address(value)
    if isinstance(value, dict):
        if "un" in value:
            return _addr(value["un"], _int(value.get("af"), 0))
        if af == 1 and "ip6" in value:
            return _addr(value["ip6"])
        if af == 0 and "ip4" in value:
            return _addr(value["ip4"])
        for key in ("ip4", "ip6", "address", "addr"):
            if key in value:
                return _addr(value[key], af)
    if hasattr(value, "packed"):
        return ip_address(value.packed)
    raise BadValue(f"not an address: {value!r}")


def _zero(is_ip6: bool) -> IPAddr:
    return IPv6Address(0) if is_ip6 else IPv4Address(0)


def _prefix(value: Any) -> tuple[IPNet, bool]:
    """Decode a prefix; returns (the masked network, whether it was valid as given).

    "Valid" is ip_prefix_validate (vnet/ip/ip_types.c): length in range and no host
    bits set.
    """
    try:
        return _prefix_inner(value)
    except ValueError as exc:
        raise BadValue(str(exc)) from exc


def _prefix_inner(value: Any) -> tuple[IPNet, bool]:
    if isinstance(value, IPv4Network | IPv6Network):
        return value, True
    if isinstance(value, IPv4Interface | IPv6Interface):
        return value.network, value.ip == value.network.network_address
    if isinstance(value, str):
        iface = ip_interface(value)
        return iface.network, iface.ip == iface.network.network_address
    if isinstance(value, dict):
        addr = _addr(value.get("address", value.get("addr")))
        length = _int(value.get("len"), addr.max_prefixlen)
        if length > addr.max_prefixlen:
            return ip_network(f"{addr}/{addr.max_prefixlen}", strict=False), False
        iface = ip_interface(f"{addr}/{length}")
        return iface.network, iface.ip == iface.network.network_address
    raise BadValue(f"not a prefix: {value!r}")


def _prefix_len_raw(value: Any) -> int:
    if isinstance(value, dict):
        return _int(value.get("len"))
    if isinstance(value, IPv4Network | IPv6Network):
        return value.prefixlen
    if isinstance(value, IPv4Interface | IPv6Interface):
        return value.network.prefixlen
    return 0


def _iface_addr(value: Any) -> IPIface:
    """vl_api_address_with_prefix_t: address and length, host bits allowed."""
    try:
        return _iface_addr_inner(value)
    except ValueError as exc:
        raise BadValue(str(exc)) from exc


def _iface_addr_inner(value: Any) -> IPIface:
    if isinstance(value, IPv4Interface | IPv6Interface):
        return value
    if isinstance(value, IPv4Network | IPv6Network):
        return ip_interface(f"{value.network_address}/{value.prefixlen}")
    if isinstance(value, str):
        return ip_interface(value)
    if isinstance(value, dict):
        addr = _addr(value.get("address", value.get("addr")))
        return ip_interface(f"{addr}/{_int(value.get('len'), addr.max_prefixlen)}")
    raise BadValue(f"not an address with prefix: {value!r}")


def _mac(value: Any) -> bytes:
    try:
        return _mac_inner(value)
    except ValueError as exc:
        raise BadValue(str(exc)) from exc


def _mac_inner(value: Any) -> bytes:
    if value is None:
        return bytes(6)
    if isinstance(value, bytes | bytearray):
        return bytes(value)[:6].ljust(6, b"\0")
    if isinstance(value, str):
        return bytes(int(part, 16) for part in value.replace("-", ":").split(":"))[:6].ljust(6, b"\0")
    if hasattr(value, "packed"):
        return bytes(value.packed)[:6]
    if isinstance(value, list | tuple):
        return bytes(_int(x) for x in value)[:6].ljust(6, b"\0")
    raise BadValue(f"not a MAC address: {value!r}")


def _member(value: Any, *names: str) -> Any:
    """Pick a union member: the first of `names` present, or the value itself."""
    if isinstance(value, dict):
        for name in names:
            if name in value:
                return value[name]
    return value


def _ok(**fields: Any) -> Reply:
    return {"retval": 0, **fields}


def _rv(retval: int, **fields: Any) -> Reply:
    return {"retval": retval, **fields}


def _valid_if(state: VppState, sw_if_index: int) -> Interface | None:
    """VALIDATE_SW_IF_INDEX (vlibapi/api_helper_macros.h)."""
    return state.interface(sw_if_index)


# ---------------------------------------------------------------------------------------
# vpe / vlib / memclnt


def show_version(state: VppState, req: Request) -> Reply:
    """vpp/api/api.c vl_api_show_version_t_handler."""
    return _ok(program="vpe", version=VERSION, build_date=BUILD_DATE, build_directory=BUILD_DIRECTORY)


def control_ping(state: VppState, req: Request) -> Reply:
    """Ends a dump for vpp_papi (memclnt); the server may answer it itself."""
    return _ok(client_index=_get(req, "client_index"), vpe_pid=4242)


def cli_inband(state: VppState, req: Request) -> Reply:
    """vlib/cli: the reply carries the output (errors too); retval stays 0."""
    from .cli import run_cli

    return _ok(reply=run_cli(state, _str(req.get("cmd"))))


# ---------------------------------------------------------------------------------------
# Interfaces (vnet/interface_api.c)


def _details(state: VppState, itf: Interface) -> Reply:
    """send_sw_interface_details."""
    return {
        "sw_if_index": itf.sw_if_index,
        "sup_sw_if_index": itf.sw_if_index,
        "l2_address": itf.mac,
        "flags": itf.flags,
        "type": 0,  # IF_API_TYPE_HARDWARE
        "link_duplex": 2 if itf.link_up and itf.kind in ("tap", "af_packet") else 0,
        "link_speed": 0,
        "link_mtu": itf.mtu,
        "mtu": list(itf.sw_mtu) if itf.sw_mtu is not None else [itf.mtu, 0, 0, 0],
        "sub_id": 0,
        "sub_number_of_tags": 0,
        "sub_outer_vlan_id": 0,
        "sub_inner_vlan_id": 0,
        "sub_if_flags": 0,
        "vtr_op": 0,
        "vtr_push_dot1q": 0,
        "vtr_tag1": 0,
        "vtr_tag2": 0,
        "outer_tag": 0,
        "b_dmac": bytes(6),
        "b_smac": bytes(6),
        "b_vlanid": 0,
        "i_sid": 0,
        "interface_name": itf.name,
        "interface_dev_type": itf.dev_type,
        "tag": itf.tag,
    }


def sw_interface_dump(state: VppState, req: Request) -> list[Reply]:
    """vl_api_sw_interface_dump_t_handler.

    Without a name filter, a sw_if_index other than ~0 and 0 selects that interface
    (nothing if it does not exist); 0 and ~0 dump everything. The name filter is a
    case-insensitive substring match (strcasestr).
    """
    sw_if_index = _get(req, "sw_if_index", U32_MAX)
    filter_valid = _bool(req.get("name_filter_valid"))
    if not filter_valid and sw_if_index not in (U32_MAX, 0):
        itf = state.interface(sw_if_index)
        return [_details(state, itf)] if itf else []
    needle = _str(req.get("name_filter")).lower() if filter_valid else ""
    return [_details(state, itf) for _, itf in state.interfaces.items() if needle in itf.name.lower()]


def sw_interface_set_flags(state: VppState, req: Request) -> Reply:
    """Only IF_STATUS_API_FLAG_ADMIN_UP is configuration; link follows for our devices."""
    itf = _valid_if(state, _get(req, "sw_if_index"))
    if itf is None:
        return _rv(E.INVALID_SW_IF_INDEX)
    state.set_admin(itf, bool(_get(req, "flags") & 1))
    return _ok()


def sw_interface_tag_add_del(state: VppState, req: Request) -> Reply:
    """An empty tag on add is INVALID_VALUE; tags are cut to 63 characters."""
    itf = _valid_if(state, _get(req, "sw_if_index"))
    if itf is None:
        return _rv(E.INVALID_SW_IF_INDEX)
    if _bool(req.get("is_add")):
        tag = _str(req.get("tag"))
        if not tag:
            return _rv(E.INVALID_VALUE)
        itf.tag = tag[:63]
    else:
        itf.tag = ""
    return _ok()


def sw_interface_set_mtu(state: VppState, req: Request) -> Reply:
    """interface_api.c: the four per-protocol MTUs [L3, IP4, IP6, MPLS] are stored as given
    (vnet_sw_interface_set_protocol_mtu does no range check; a 0 slot defers to L3)."""
    itf = _valid_if(state, _get(req, "sw_if_index"))
    if itf is None:
        return _rv(E.INVALID_SW_IF_INDEX)
    raw = req.get("mtu") or []
    if not isinstance(raw, list | tuple) or len(raw) > 4:
        raise BadValue(f"not four MTUs: {raw!r}")
    values = [_int(v) for v in raw]
    if any(v < 0 or v > U32_MAX for v in values):
        raise BadValue(f"not four u32 MTUs: {raw!r}")
    itf.sw_mtu = values + [0] * (4 - len(values))
    return _ok()


def _addresses_conflict(state: VppState, itf: Interface, new: IPIface) -> bool:
    """ip4_add_del_interface_address_internal: no overlapping subnets in one table."""
    is_ip6 = new.version == 6
    table_id = itf.table(is_ip6)
    for _, other in state.interfaces.items():
        if other.table(is_ip6) != table_id:
            continue
        for addr in other.addresses:
            if addr.version != new.version:
                continue
            if new.ip in addr.network or addr.ip in new.network:
                if (
                    other.sw_if_index == itf.sw_if_index
                    and addr.network.prefixlen == new.network.prefixlen
                    and addr.ip != new.ip
                ):
                    continue
                return True
    return False


def sw_interface_add_del_address(state: VppState, req: Request) -> Reply:
    """Addresses; their FIB entries exist while the interface is admin up."""
    itf = _valid_if(state, _get(req, "sw_if_index"))
    if itf is None:
        return _rv(E.INVALID_SW_IF_INDEX)
    if _bool(req.get("del_all")):
        itf.ip6_link_locks = max(0, itf.ip6_link_locks - sum(a.version == 6 for a in itf.addresses))
        itf.addresses.clear()
        return _ok()
    new = _iface_addr(req.get("prefix"))
    if _bool(req.get("is_add")):
        if _addresses_conflict(state, itf, new):
            return _rv(E.ADDRESS_IN_USE)
        itf.addresses.append(new)
        if new.version == 6:  # ip6_forward.c: an IPv6 address enables the IPv6 link
            itf.ip6_link_locks += 1
        return _ok()
    for addr in itf.addresses:
        if addr.ip == new.ip and addr.network.prefixlen == new.network.prefixlen:
            itf.addresses.remove(addr)
            if addr.version == 6:
                itf.ip6_link_locks = max(0, itf.ip6_link_locks - 1)
            return _ok()
    return _rv(E.ADDRESS_NOT_FOUND_FOR_INTERFACE)


def ip_address_dump(state: VppState, req: Request) -> list[Reply]:
    """vl_api_ip_address_dump_t_handler (`vnet/ip/ip_api.c`): the interface's own addresses of
    one family (`is_ipv6`), as address_with_prefix; addresses borrowed through unnumbered are
    not listed (foreach_ip_interface_address without loop); an invalid sw_if_index answers no
    details (VALIDATE_SW_IF_INDEX)."""
    itf = _valid_if(state, _get(req, "sw_if_index", U32_MAX))
    if itf is None:
        return []
    version = 6 if _bool(req.get("is_ipv6")) else 4
    return [
        {"sw_if_index": itf.sw_if_index, "prefix": addr} for addr in itf.addresses if addr.version == version
    ]


def sw_interface_set_table(state: VppState, req: Request) -> Reply:
    """ip_table_bind: the table must exist and the interface must have no address."""
    itf = _valid_if(state, _get(req, "sw_if_index"))
    if itf is None:
        return _rv(E.INVALID_SW_IF_INDEX)
    is_ip6 = _bool(req.get("is_ipv6"))
    table_id = _get(req, "vrf_id")
    if state.table(is_ip6, table_id) is None:
        return _rv(E.NO_SUCH_FIB)
    if state.effective_addresses(itf, is_ip6):
        return _rv(E.ADDRESS_FOUND_FOR_INTERFACE)
    old = itf.table(is_ip6)
    if is_ip6:
        itf.table6 = table_id
    else:
        itf.table4 = table_id
    if old != table_id:
        state.maybe_destroy_table(is_ip6, old)
    return _ok()


def sw_interface_get_table(state: VppState, req: Request) -> Reply:
    itf = _valid_if(state, _get(req, "sw_if_index"))
    if itf is None:
        return _rv(E.INVALID_SW_IF_INDEX, vrf_id=U32_MAX)
    return _ok(vrf_id=itf.table(_bool(req.get("is_ipv6"))))


def sw_interface_set_unnumbered(state: VppState, req: Request) -> Reply:
    """The field names are backwards: `unnumbered_sw_if_index` borrows `sw_if_index`'s
    addresses. Both interfaces must be in the same tables (UNEXPECTED_INTF_STATE)."""
    ip_index = _get(req, "sw_if_index")
    unnum = state.interface(_get(req, "unnumbered_sw_if_index"))
    if unnum is None:
        return _rv(E.INVALID_SW_IF_INDEX)
    is_add = _bool(req.get("is_add"))
    ip_itf = state.interface(ip_index)
    if is_add:
        if ip_itf is None:
            return _rv(E.INVALID_SW_IF_INDEX_2)
        if unnum.table4 != ip_itf.table4 or unnum.table6 != ip_itf.table6:
            return _rv(E.UNEXPECTED_INTF_STATE)
        unnum.unnumbered_to = ip_index
    else:
        unnum.unnumbered_to = None
    return _ok()


def want_interface_events(state: VppState, req: Request) -> Reply:
    """pub_sub_handler: registration keyed by client_index; enabling twice or disabling
    when not registered is INVALID_REGISTRATION."""
    client_index = _get(req, "client_index")
    enable = _bool(req.get("enable_disable"))
    if client_index in state.event_clients:
        if enable:
            return _rv(E.INVALID_REGISTRATION)
        del state.event_clients[client_index]
        return _ok()
    if not enable:
        return _rv(E.INVALID_REGISTRATION)
    state.event_clients[client_index] = _get(req, "pid")
    return _ok()


def create_loopback(state: VppState, req: Request) -> Reply:
    """vnet_create_loopback_interface: loopN with the lowest free N; MAC de:ad:00:00:00:N
    unless one is given. Link follows admin state."""
    instance = 0
    while instance in state.loop_instances:
        instance += 1
    state.loop_instances.add(instance)
    mac = _mac(req.get("mac_address"))
    if mac == bytes(6):
        mac = bytes([0xDE, 0xAD, 0, 0, 0, instance & 0xFF])
    itf = Interface(sw_if_index=0, name=f"loop{instance}", kind="loopback", dev_type="Loopback", mac=mac)
    itf.info["instance"] = instance
    state.add_interface(itf)
    return _ok(sw_if_index=itf.sw_if_index)


def delete_loopback(state: VppState, req: Request) -> Reply:
    itf = state.interface(_get(req, "sw_if_index"))
    if itf is None or itf.kind != "loopback":
        return _rv(E.INVALID_SW_IF_INDEX)
    state.loop_instances.discard(itf.info["instance"])
    state.delete_interface(itf.sw_if_index)
    return _ok()


TAP_FLAG_ATTACH = 8
TAP_FLAG_TUN = 16
TAP_MAX_INSTANCE = 8192


def tap_create_v3(state: VppState, req: Request) -> Reply:
    """tap.c tap_create_if: id check, then the host side; no /dev/vhost-net -> -11."""
    tap_id = _get(req, "id", U32_MAX)
    if tap_id != U32_MAX:
        if tap_id in state.tap_ids:
            return _rv(E.INVALID_INTERFACE, sw_if_index=U32_MAX)
    else:
        tap_id = 0
        while tap_id in state.tap_ids:
            tap_id += 1
    if tap_id > TAP_MAX_INSTANCE:
        return _rv(E.UNSPECIFIED, sw_if_index=U32_MAX)
    flags = _get(req, "tap_flags")
    host_if_name = _str(req.get("host_if_name")) if _bool(req.get("host_if_name_set")) else ""
    if flags & TAP_FLAG_ATTACH and not host_if_name:
        return _rv(E.NO_MATCHING_INTERFACE, sw_if_index=U32_MAX)
    if not state.vhost_net:
        return _rv(E.SYSCALL_ERROR_1, sw_if_index=U32_MAX)
    is_tun = bool(flags & TAP_FLAG_TUN)
    if is_tun:
        mac = bytes(6)
    elif req.get("use_random_mac", True) in (False, 0):
        mac = _mac(req.get("mac_address"))
    else:
        mac = state.next_mac()
    mtu = _get(req, "host_mtu_size") if _bool(req.get("host_mtu_set")) else 1500
    itf = Interface(
        sw_if_index=0,
        name=f"{'tun' if is_tun else 'tap'}{tap_id}",
        kind="tap",
        dev_type="tap",
        mac=mac,
        mtu=mtu,
    )
    itf.info.update(
        id=tap_id,
        tun=is_tun,
        host_if_name=host_if_name or f"tap{tap_id}",
        host_namespace=_str(req.get("host_namespace")) if _bool(req.get("host_namespace_set")) else "",
        host_ip4_prefix=req.get("host_ip4_prefix") if _bool(req.get("host_ip4_prefix_set")) else None,
        host_ip6_prefix=req.get("host_ip6_prefix") if _bool(req.get("host_ip6_prefix_set")) else None,
        tap_flags=flags,
    )
    state.tap_ids.add(tap_id)
    state.add_interface(itf, link_up=True)
    tag = _str(req.get("tag"))
    if tag:
        itf.tag = tag[:63]
    return _ok(sw_if_index=itf.sw_if_index)


def tap_delete_v2(state: VppState, req: Request) -> Reply:
    """tap_delete_if: anything but a tap is INVALID_SW_IF_INDEX."""
    itf = state.interface(_get(req, "sw_if_index"))
    if itf is None or itf.kind != "tap":
        return _rv(E.INVALID_SW_IF_INDEX)
    state.tap_ids.discard(itf.info["id"])
    state.delete_interface(itf.sw_if_index)
    return _ok()


def af_packet_create_v3(state: VppState, req: Request) -> Reply:
    """af_packet_create_if: host-<name>; an existing one is IF_ALREADY_EXISTS (with its
    sw_if_index), an unknown host interface INVALID_INTERFACE."""
    mode = _get(req, "mode")
    if mode not in (1, 2):
        return _rv(E.INVALID_VALUE, sw_if_index=U32_MAX)
    host = _str(req.get("host_if_name"))
    for _, itf in state.interfaces.items():
        if itf.kind == "af_packet" and itf.info.get("host_if_name") == host:
            return _rv(E.IF_ALREADY_EXISTS, sw_if_index=itf.sw_if_index)
    if state.host_interfaces is not None and host not in state.host_interfaces:
        return _rv(E.INVALID_INTERFACE, sw_if_index=U32_MAX)
    if mode == 2:
        mac = bytes(6)
    elif _bool(req.get("use_random_hw_addr")):
        mac = state.next_mac()
    else:
        mac = _mac(req.get("hw_addr"))
        if mac == bytes(6):
            mac = state.next_mac()
    itf = Interface(
        sw_if_index=0, name=f"host-{host}", kind="af_packet", dev_type="af-packet", mac=mac, mtu=1500
    )
    itf.info.update(host_if_name=host, mode=mode)
    state.add_interface(itf, link_up=True)
    return _ok(sw_if_index=itf.sw_if_index)


def af_packet_delete(state: VppState, req: Request) -> Reply:
    """af_packet_delete_if: an unknown host_if_name is SYSCALL_ERROR_1."""
    host = _str(req.get("host_if_name"))
    for _, itf in state.interfaces.items():
        if itf.kind == "af_packet" and itf.info.get("host_if_name") == host:
            state.delete_interface(itf.sw_if_index)
            return _ok()
    return _rv(E.SYSCALL_ERROR_1)


def vxlan_add_del_tunnel_v3(state: VppState, req: Request) -> Reply:
    """vxlan_api.c / vxlan.c vnet_vxlan_add_del_tunnel."""
    is_add = _bool(req.get("is_add", True))
    src = _addr(req.get("src_address"))
    dst = _addr(req.get("dst_address"))
    is_ip6 = src.version == 6
    table = state.table(is_ip6, _get(req, "encap_vrf_id"))
    if table is None:
        return _rv(E.NO_SUCH_FIB, sw_if_index=U32_MAX)
    if src.version != dst.version:
        return _rv(E.INVALID_VALUE, sw_if_index=U32_MAX)
    if src == dst:
        return _rv(E.SAME_SRC_DST, sw_if_index=U32_MAX)
    if dst.is_multicast and state.interface(_get(req, "mcast_sw_if_index")) is None:
        return _rv(E.INVALID_SW_IF_INDEX, sw_if_index=U32_MAX)
    src_port = _get(req, "src_port") or 4789
    dst_port = _get(req, "dst_port") or 4789
    vni = _get(req, "vni")
    # vxlan.c: an IPv4 tunnel is keyed with its local address (unless multicast), an IPv6 one
    # without it.
    key = (src if not dst.is_multicast and not is_ip6 else None, dst, src_port, table.fib_index, vni)
    existing = None
    for _, itf in state.interfaces.items():
        if itf.kind == "vxlan" and itf.info["key"] == key:
            existing = itf
    if is_add:
        if existing is not None:
            return _rv(E.TUNNEL_EXIST, sw_if_index=U32_MAX)
        # vnet_vxlan_add_del_tunnel: ~0 means l2-input; any other index must be an arc of
        # vxlan4-input/vxlan6-input (vxlan_decap_next_is_valid)
        decap_next = _get(req, "decap_next_index", U32_MAX)
        if decap_next == U32_MAX:
            decap_next = 1  # VXLAN_INPUT_NEXT_L2_INPUT
        if decap_next >= len(state.node_nexts[f"vxlan{6 if is_ip6 else 4}-input"]):
            return _rv(E.INVALID_DECAP_NEXT, sw_if_index=U32_MAX)
        dev = state.vxlan_dev.next_index()
        instance = _get(req, "instance", U32_MAX)
        if instance == U32_MAX:
            instance = dev
        if instance in state.vxlan_instances:
            return _rv(E.INSTANCE_IN_USE, sw_if_index=U32_MAX)
        state.vxlan_dev.alloc(0)
        state.vxlan_instances.add(instance)
        is_l3 = _bool(req.get("is_l3"))
        itf = Interface(
            sw_if_index=0,
            name=f"vxlan_tunnel{instance}",
            kind="vxlan",
            dev_type="VXLAN",
            mac=bytes(6) if is_l3 else state.next_mac(),
        )
        itf.info.update(
            key=key,
            dev=dev,
            instance=instance,
            src=src,
            dst=dst,
            vni=vni,
            src_port=src_port,
            dst_port=dst_port,
            encap_vrf_id=table.table_id,
            is_l3=is_l3,
            decap_next_index=decap_next,
        )
        state.add_interface(itf)
        return _ok(sw_if_index=itf.sw_if_index)
    if existing is None:
        return _rv(E.NO_SUCH_ENTRY, sw_if_index=U32_MAX)
    sw_if_index = existing.sw_if_index
    state.vxlan_instances.discard(existing.info["instance"])
    state.vxlan_dev.free(existing.info["dev"])
    state.delete_interface(sw_if_index)
    return _ok(sw_if_index=sw_if_index)


def ipip_add_tunnel(state: VppState, req: Request) -> Reply:
    """ipip_api.c / ipip.c ipip_add_tunnel."""
    tunnel = req.get("tunnel") or {}
    src = _addr(tunnel.get("src"))
    dst = _addr(tunnel.get("dst"))
    if src.version != dst.version:
        return _rv(E.INVALID_PROTOCOL, sw_if_index=U32_MAX)
    if src == dst:
        return _rv(E.SAME_SRC_DST, sw_if_index=U32_MAX)
    mode = _get(tunnel, "mode")
    if mode not in (0, 1):
        return _rv(E.INVALID_VALUE, sw_if_index=U32_MAX)
    is_ip6 = src.version == 6
    table = state.table(is_ip6, _get(tunnel, "table_id"))
    if table is None:
        return _rv(E.NO_SUCH_FIB, sw_if_index=U32_MAX)
    if mode == 1 and int(dst) != 0:
        return _rv(E.INVALID_DST_ADDRESS, sw_if_index=U32_MAX)
    key = (is_ip6, mode, src, dst, table.fib_index)
    for _, itf in state.interfaces.items():
        if itf.kind == "ipip" and itf.info["key"] == key:
            return _rv(E.IF_ALREADY_EXISTS, sw_if_index=itf.sw_if_index)
    dev = state.ipip_dev.next_index()
    instance = _get(tunnel, "instance", U32_MAX)
    if instance == U32_MAX:
        instance = dev
    if instance in state.ipip_instances:
        return _rv(E.INSTANCE_IN_USE, sw_if_index=U32_MAX)
    state.ipip_dev.alloc(0)
    state.ipip_instances.add(instance)
    itf = Interface(sw_if_index=0, name=f"ipip{instance}", kind="ipip", dev_type="IPIP tunnel device")
    itf.info.update(key=key, dev=dev, instance=instance, src=src, dst=dst, table_id=table.table_id, mode=mode)
    state.add_interface(itf)
    return _ok(sw_if_index=itf.sw_if_index)


def ipip_del_tunnel(state: VppState, req: Request) -> Reply:
    itf = state.interface(_get(req, "sw_if_index"))
    if itf is None or itf.kind != "ipip":
        return _rv(E.NO_SUCH_ENTRY)
    state.ipip_instances.discard(itf.info["instance"])
    state.ipip_dev.free(itf.info["dev"])
    state.delete_interface(itf.sw_if_index)
    return _ok()


def add_node_next(state: VppState, req: Request) -> Reply:
    """vlibmemory/vlib_api.c: unknown node -63, unknown next -64; the arc is added once
    (vlib_node_add_next answers the existing index)."""
    node, next_node = _str(req.get("node_name")), _str(req.get("next_name"))
    if node not in state.graph_nodes:
        return _rv(E.NO_SUCH_NODE, next_index=U32_MAX)
    if next_node not in state.graph_nodes:
        return _rv(E.NO_SUCH_NODE2, next_index=U32_MAX)
    nexts = state.node_nexts.setdefault(node, [])
    if next_node not in nexts:
        nexts.append(next_node)
    return _ok(next_index=nexts.index(next_node))


def urpf_update(state: VppState, req: Request) -> Reply:
    """urpf_api.c + urpf.c urpf_update: mode OFF | LOOSE | STRICT per interface, direction and
    family, kept in a table by index (`state.urpf_cfgs`). When the mode asked is the one the
    table holds nothing happens; otherwise the old mode's feature is disabled and the new one's
    enabled. The table outlives the interface while the feature does not: an interface that
    reuses a deleted one's index and is asked for the mode the table still holds gets no check.
    (The table's fib index is 0 for every entry the v1 message makes, so only modes differ.)"""
    itf = _valid_if(state, _get(req, "sw_if_index"))
    if itf is None:
        return _rv(E.INVALID_SW_IF_INDEX)
    mode = _get(req, "mode")
    if mode not in (0, 1, 2):
        return _rv(E.INVALID_VALUE)
    af = _get(req, "af")
    if af not in (0, 1):
        return _rv(E.INVALID_ADDRESS_FAMILY)
    is_input = _bool(req.get("is_input", True))
    cfg_key = (af, is_input, itf.sw_if_index)
    old = state.urpf_cfgs.get(cfg_key, 0)
    state.urpf_cfgs[cfg_key] = mode
    if mode != old:
        key = (is_input, af)
        # Disabling a feature the interface does not have changes nothing (feature.c).
        if old != 0 and itf.urpf.get(key) == old:
            del itf.urpf[key]
        if mode != 0:
            itf.urpf[key] = mode
    return _ok()


def sw_interface_ip6_enable_disable(state: VppState, req: Request) -> Reply:
    """ip_api.c -> ip6_link.c: enable takes a lock on the interface's IPv6 link (made on the
    first, with its link-local address) and answers VALUE_EXIST (-81) when the link already
    exists; disable drops a lock, IP6_NOT_ENABLED (-62) when there is no link."""
    itf = _valid_if(state, _get(req, "sw_if_index"))
    if itf is None:
        return _rv(E.INVALID_SW_IF_INDEX)
    if _bool(req.get("enable")):
        existed = itf.ip6_link_locks > 0
        itf.ip6_link_locks += 1
        return _rv(E.VALUE_EXIST) if existed else _ok()
    if itf.ip6_link_locks <= 0:
        return _rv(E.IP6_NOT_ENABLED)
    itf.ip6_link_locks -= 1
    return _ok()


# ---------------------------------------------------------------------------------------
# FIB (vnet/ip/ip_api.c, vnet/fib/fib_api.c)


def _table_arg(req: Request) -> tuple[bool, int, str]:
    table = req.get("table") or {}
    return _bool(table.get("is_ip6")), _get(table, "table_id"), _str(table.get("name"))


def ip_table_add_del(state: VppState, req: Request) -> Reply:
    """Table 0 always exists and cannot be added or deleted. The API holds one lock: a
    table deleted by the API stays while an interface is bound to it."""
    is_ip6, table_id, name = _table_arg(req)
    if table_id == 0:
        return _ok()
    if _bool(req.get("is_add", True)):
        table = state.create_table(is_ip6, table_id, name or f"ipv{6 if is_ip6 else 4}-VRF:{table_id}")
        table.api_locked = True
    else:
        existing = state.table(is_ip6, table_id)
        if existing is not None:
            existing.api_locked = False
            state.maybe_destroy_table(is_ip6, table_id)
    return _ok()


def ip_table_dump(state: VppState, req: Request) -> list[Reply]:
    return [
        {"table": {"table_id": t.table_id, "is_ip6": t.is_ip6, "name": t.name}}
        for t in sorted(state.tables.values(), key=lambda t: (t.is_ip6, t.fib_index))
    ]


def _decode_path(state: VppState, raw: dict[str, Any], is_ip6: bool) -> tuple[int, FibPath]:
    """fib_api_path_decode: returns (retval, path)."""
    proto = _get(raw, "proto", NH_PROTO_IP6 if is_ip6 else NH_PROTO_IP4)
    path_type = _get(raw, "type")
    nh_raw = _member(raw.get("nh") or {}, "address")
    nh: IPAddr | None = None
    if nh_raw not in (None, {}):
        try:
            nh = _addr(nh_raw, 1 if proto == NH_PROTO_IP6 else 0)
        except (BadValue, ValueError):
            nh = None
    if nh is not None and int(nh) == 0:
        nh = None
    path = FibPath(
        sw_if_index=_get(raw, "sw_if_index", U32_MAX),
        table_id=_get(raw, "table_id"),
        rpf_id=_get(raw, "rpf_id"),
        weight=_get(raw, "weight") or 1,
        preference=_get(raw, "preference"),
        type=path_type,
        flags=_get(raw, "flags"),
        proto=proto,
        nh=nh,
    )
    if path_type in (PATH_TYPE_DROP, 5, 6):
        path.sw_if_index = U32_MAX
        return 0, path
    if path_type in (0, 7) and proto in (NH_PROTO_IP4, NH_PROTO_IP6):
        if path.sw_if_index == U32_MAX:
            if state.table(proto == NH_PROTO_IP6, path.table_id) is None:
                return E.NO_SUCH_FIB, path
        elif path.sw_if_index not in state.interfaces:
            return E.NO_MATCHING_INTERFACE, path
    return 0, path


def ip_route_add_del(state: VppState, req: Request) -> Reply:
    """ip_route_add_del_t_handler + fib_api_route_add_del, source API.

    Not multipath: add replaces the route's API paths, delete removes the API route.
    Multipath: add/remove the given paths. A missing route deletes without error.
    """
    route = req.get("route") or {}
    prefix_raw = route.get("prefix")
    if _prefix_len_raw(prefix_raw) > (128 if _addr_of_prefix(prefix_raw).version == 6 else 32):
        return _rv(E.INVALID_PREFIX_LENGTH, stats_index=U32_MAX)
    prefix, _valid = _prefix(prefix_raw)
    is_ip6 = prefix.version == 6
    table = state.table(is_ip6, _get(route, "table_id"))
    if table is None:
        return _rv(E.NO_SUCH_FIB, stats_index=U32_MAX)
    paths: list[FibPath] = []
    for raw in route.get("paths") or []:
        rv, path = _decode_path(state, raw, is_ip6)
        if rv:
            return _rv(rv, stats_index=U32_MAX)
        if (
            prefix.prefixlen == prefix.max_prefixlen
            and path.nh is None
            and path.sw_if_index != U32_MAX
            and path.type == PATH_TYPE_NORMAL
        ):
            # fib_table_route_path_fixup: a host route out of an interface without a next hop
            # is attached to the prefix's own address (and dumped with it as next hop).
            path.nh = prefix.network_address
        paths.append(path)
    is_add = _bool(req.get("is_add", True))
    existing = table.routes.get(prefix)
    if _bool(req.get("is_multipath")):
        if not paths:
            return _rv(E.NO_PATHS_IN_ROUTE, stats_index=U32_MAX)
        if is_add:
            if existing is None:
                existing = table.routes[prefix] = ApiRoute(paths=[])
            existing.stale = False
            for path in paths:
                if not any(p.same_path(path) for p in existing.paths):
                    existing.paths.append(path)
        elif existing is not None:
            existing.paths = [p for p in existing.paths if not any(p.same_path(q) for q in paths)]
            if not existing.paths:
                del table.routes[prefix]
    elif is_add:
        if not paths:
            return _rv(E.NO_PATHS_IN_ROUTE, stats_index=U32_MAX)
        table.routes[prefix] = ApiRoute(paths=paths)
    else:
        table.routes.pop(prefix, None)
    if is_add:
        return _ok(stats_index=state.stats_index_for(table, prefix))
    return _ok(stats_index=U32_MAX)


def _addr_of_prefix(value: Any) -> IPAddr:
    if isinstance(value, dict):
        return _addr(value.get("address", value.get("addr")))
    if isinstance(value, IPv4Network | IPv6Network):
        return value.network_address
    if isinstance(value, IPv4Interface | IPv6Interface):
        return value.ip
    return _prefix(value)[0].network_address


def _encode_path(path: FibPath, is_ip6: bool) -> Reply:
    nh = path.nh if path.nh is not None else _zero(is_ip6)
    return {
        "sw_if_index": path.sw_if_index,
        "table_id": path.table_id,
        "rpf_id": path.rpf_id,
        "weight": path.weight,
        "preference": path.preference,
        "type": path.type,
        "flags": path.flags,
        "proto": path.proto,
        "nh": {
            "address": {"ip6": nh} if nh.version == 6 else {"ip4": nh},
            "via_label": 0,
            "obj_id": 0,
            "classify_table_index": 0,
        },
        "n_labels": 0,
        "label_stack": [{"is_uniform": 0, "label": 0, "ttl": 0, "exp": 0} for _ in range(16)],
    }


def _entry_paths(entry: FibEntry, is_ip6: bool) -> list[FibPath]:
    proto = NH_PROTO_IP6 if is_ip6 else NH_PROTO_IP4
    if entry.kind == "drop" and not entry.paths:
        return [FibPath(type=PATH_TYPE_DROP, proto=proto)]
    if entry.kind == "local" and not entry.paths:
        return [FibPath(type=PATH_TYPE_LOCAL, proto=proto)]
    return list(entry.paths)


def ip_route_dump(state: VppState, req: Request) -> list[Reply]:
    """Every entry of the table (all sources: special, interface, cnat, API), each with
    the paths of its best source, ordered by prefix length then address."""
    is_ip6, table_id, _name = _table_arg(req)
    table = state.table(is_ip6, table_id)
    if table is None:
        return []
    out: list[Reply] = []
    entries = state.fib_entries(table)
    for prefix in sorted(entries, key=lambda p: (p.prefixlen, int(p.network_address))):
        entry = entries[prefix]
        paths = _entry_paths(entry, is_ip6)
        out.append(
            {
                "route": {
                    "table_id": table.table_id,
                    "stats_index": state.stats_index_for(table, prefix),
                    "prefix": prefix,
                    "n_paths": len(paths),
                    "paths": [_encode_path(p, is_ip6) for p in paths],
                }
            }
        )
    return out


def _table_or_fail(state: VppState, req: Request) -> FibTable | None:
    is_ip6, table_id, _name = _table_arg(req)
    return state.table(is_ip6, table_id)


def ip_table_replace_begin(state: VppState, req: Request) -> Reply:
    """fib_table_mark: every API-sourced route becomes stale."""
    table = _table_or_fail(state, req)
    if table is None:
        return _rv(E.NO_SUCH_FIB)
    for route in table.routes.values():
        route.stale = True
    return _ok()


def ip_table_replace_end(state: VppState, req: Request) -> Reply:
    """fib_table_sweep: API routes not re-added since the mark are deleted."""
    table = _table_or_fail(state, req)
    if table is None:
        return _rv(E.NO_SUCH_FIB)
    for prefix in [p for p, r in table.routes.items() if r.stale]:
        del table.routes[prefix]
    return _ok()


def ip_table_flush(state: VppState, req: Request) -> Reply:
    """fib_table_flush(FIB_SOURCE_API): every API route of the table goes."""
    table = _table_or_fail(state, req)
    if table is None:
        return _rv(E.NO_SUCH_FIB)
    table.routes.clear()
    return _ok()


# ---------------------------------------------------------------------------------------
# npol (plugins/npol/npol_api.c, npol_ipset.c, npol_rule.c, npol_policy.c,
# npol_interface.c)


def npol_get_version(state: VppState, req: Request) -> Reply:
    return {"major": 0, "minor": 0}


def npol_ipset_create(state: VppState, req: Request) -> Reply:
    """npol_ipset_create: any type value is accepted; ids come from a pool."""
    set_id = state.npol_ipsets.alloc(NpolIpset(type=_get(req, "type")))
    return _ok(set_id=set_id)


def _decode_member(set_type: int, raw: Any) -> tuple[int, NpolMember | None]:
    """npol_ipset_member_decode: the union member is chosen by the set's type."""
    val = raw.get("val", raw) if isinstance(raw, dict) else raw
    if set_type == NPOL_IP:
        return 0, _addr(_member(val, "address"))
    if set_type == NPOL_IP_AND_PORT:
        tup = _member(val, "tuple")
        if not isinstance(tup, dict):
            raise BadValue(f"not a three_tuple: {tup!r}")
        return 0, (_addr(tup.get("address")), _get(tup, "l4_proto"), _get(tup, "port"))
    if set_type == NPOL_NET:
        prefix, valid = _prefix(_member(val, "prefix"))
        if not valid:
            return E.IP_PREFIX_INVALID, None
        return 0, prefix
    return 0, None


def _member_cmp_equal(state: VppState, set_type: int, stored: NpolMember, given: NpolMember) -> bool:
    """True if npol_ipset_del_member would delete `stored` when asked to delete `given`.

    npol_ipset_member_cmp returns, for IP_AND_PORT sets,
    `port == port && proto == proto && ip_address_cmp (a, b)` and npol_ipset_del_member
    deletes a member when that is 0: the member asked for (equal address) goes, and so
    does every member with another port or protocol. Only members with the same port
    and protocol and another address survive. `state.npol_ipport_delete_bug = False`
    makes it an exact comparison.
    """
    if set_type == NPOL_IP_AND_PORT and isinstance(stored, tuple) and isinstance(given, tuple):
        if not state.npol_ipport_delete_bug:
            return stored == given
        same_port_proto = stored[1] == given[1] and stored[2] == given[2]
        addr_differs = stored[0] != given[0]
        return not (same_port_proto and addr_differs)
    return stored == given


def npol_ipset_add_del_members(state: VppState, req: Request) -> Reply:
    """Members are applied in order; the first error stops (earlier ones stay).

    Adding does not deduplicate (members are a pool); deleting removes every member
    that compares equal (see `_member_cmp_equal` for IP_AND_PORT sets).
    """
    set_id = _get(req, "set_id")
    ipset = state.npol_ipsets.get(set_id)
    if ipset is None:
        return _rv(E.NO_SUCH_ENTRY)
    is_add = _bool(req.get("is_add"))
    members = req.get("members") or []
    count = min(_get(req, "len", len(members)), len(members))
    if isinstance(members, WireElements) and ipset.type == NPOL_NET:
        decoded, rv = _net_members_from_wire(members, count)
    else:
        decoded, rv = [], 0
        for raw in members[:count]:
            rv, member = _decode_member(ipset.type, raw)
            if rv:
                break
            if member is not None:
                decoded.append(member)
    if is_add:
        ipset.members.extend(decoded)
    elif ipset.type == NPOL_IP_AND_PORT and state.npol_ipport_delete_bug:
        for member in decoded:
            ipset.members = [m for m in ipset.members if not _member_cmp_equal(state, ipset.type, m, member)]
    else:  # equality: deleting each in turn is deleting them all at once
        gone = set(decoded)
        ipset.members = [m for m in ipset.members if m not in gone]
    return _rv(rv) if rv else _ok()


def _net_members_from_wire(members: WireElements, count: int) -> tuple[list[NpolMember], int]:
    """The first `count` NET members read straight from their bytes (address family, 16 address
    bytes, prefix length), as `_decode_member` reads them; an element this cannot read that way
    (an unknown family, a bad prefix) goes through `_decode_member`, which has the last word.
    Returns the members before the first error, and the error (0: none)."""
    data, size = members.data, members.size
    out: list[NpolMember] = []
    for i in range(count):
        off = i * size
        af = data[off]
        try:
            if af == 0:
                out.append(IPv4Network((data[off + 1 : off + 5], data[off + 17])))
            elif af == 1:
                out.append(IPv6Network((data[off + 1 : off + 17], data[off + 17])))
            else:
                raise ValueError(af)
        except ValueError:  # host bits set, a length out of range, an unknown family
            rv, member = _decode_member(NPOL_NET, members[i])
            if rv:
                return out, rv
            if member is not None:
                out.append(member)
    return out, 0


def npol_ipset_delete(state: VppState, req: Request) -> Reply:
    """npol_ipset_delete: no reference check (rules may still point at the set; the
    freed slot reads as an empty set until reused)."""
    set_id = _get(req, "set_id")
    ipset = state.npol_ipsets.get(set_id)
    if ipset is None:
        return _rv(E.NO_SUCH_ENTRY)
    state.npol_ipsets.free(set_id, ghost=NpolIpset(type=ipset.type))
    return _ok()


def _decode_rule(raw: dict[str, Any]) -> tuple[int, NpolRule | None]:
    """vl_api_npol_rule_update_create_handler's decoding: 3 filters, then the entries.

    An entry type beyond NPOL_IP_SET is -1 (npol_rule_entry_decode); an invalid CIDR is
    IP_PREFIX_INVALID.
    """
    filters: list[NpolFilter] = []
    raw_filters = list(raw.get("filters") or [])
    while len(raw_filters) < 3:
        raw_filters.append({"type": NPOL_FILTER_NONE, "value": 0, "should_match": 0})
    for f in raw_filters[:3]:
        filters.append(
            NpolFilter(type=_get(f, "type"), value=_get(f, "value"), should_match=_get(f, "should_match"))
        )
    entries: list[NpolEntry] = []
    matches = list(raw.get("matches") or [])
    count = min(_get(raw, "num_entries", len(matches)), len(matches))
    for m in matches[:count]:
        etype = _get(m, "type")
        is_src = _bool(m.get("is_src"))
        is_not = _bool(m.get("is_not"))
        data = m.get("data")
        if etype == NPOL_CIDR:
            prefix, valid = _prefix(_member(data, "cidr"))
            if not valid:
                return E.IP_PREFIX_INVALID, None
            entries.append(NpolEntry(is_src, is_not, etype, cidr=prefix))
        elif etype == NPOL_PORT_RANGE:
            pr = _member(data, "port_range")
            if not isinstance(pr, dict):
                raise BadValue(f"not a port range: {pr!r}")
            entries.append(NpolEntry(is_src, is_not, etype, port_range=(_get(pr, "start"), _get(pr, "end"))))
        elif etype in (NPOL_PORT_IP_SET, NPOL_IP_SET):
            sid = _member(data, "set_id")
            if isinstance(sid, dict):
                sid = sid.get("set_id")
            entries.append(NpolEntry(is_src, is_not, etype, set_id=_int(sid)))
        else:
            return -1, None
    return 0, NpolRule(action=_get(raw, "action"), filters=filters, entries=entries)


def npol_rule_create(state: VppState, req: Request) -> Reply:
    rv, rule = _decode_rule(req.get("rule") or {})
    if rv or rule is None:
        return _rv(rv, rule_id=U32_MAX)
    return _ok(rule_id=state.npol_rules.alloc(rule))


def npol_rule_update(state: VppState, req: Request) -> Reply:
    """npol_rule_update: an id that is not a live rule ALLOCATES a new rule (at the next
    free index, not at rule_id) and still answers 0 - VPP does not check."""
    rv, rule = _decode_rule(req.get("rule") or {})
    if rv or rule is None:
        return _rv(rv)
    rule_id = _get(req, "rule_id")
    if rule_id in state.npol_rules:
        state.npol_rules.replace(rule_id, rule)
    else:
        state.npol_rules.alloc(rule)
    return _ok()


def npol_rule_delete(state: VppState, req: Request) -> Reply:
    """No reference check: a policy may still list the rule. A release VPP then reads the
    freed rule: no filters and no entries, its last action (see packet.py)."""
    rule_id = _get(req, "rule_id")
    rule = state.npol_rules.get(rule_id)
    if rule is None:
        return _rv(E.NO_SUCH_ENTRY)
    state.npol_rules.free(rule_id, ghost=NpolRule(action=rule.action))
    return _ok()


def _decode_policy(req: Request) -> NpolPolicy:
    items = req.get("rules") or []
    count = min(_get(req, "num_items", len(items)), len(items))
    policy = NpolPolicy()
    if isinstance(items, WireElements) and items.size == _POLICY_ITEM.size:
        # Straight from the bytes (bool is_inbound, u32 rule_id), as the codec decodes them.
        for is_inbound, rule_id in _POLICY_ITEM.iter_unpack(items.data[: count * items.size]):
            (policy.rx if is_inbound else policy.tx).append(rule_id)
        return policy
    for item in list(items)[:count]:
        (policy.rx if _bool(item.get("is_inbound")) else policy.tx).append(_get(item, "rule_id"))
    return policy


_POLICY_ITEM = struct.Struct(">?I")


def npol_policy_create(state: VppState, req: Request) -> Reply:
    """Rule ids are not checked."""
    return _ok(policy_id=state.npol_policies.alloc(_decode_policy(req)))


def npol_policy_update(state: VppState, req: Request) -> Reply:
    """Like npol_rule_update: an unknown id allocates a new policy and answers 0."""
    policy = _decode_policy(req)
    policy_id = _get(req, "policy_id")
    if policy_id in state.npol_policies:
        state.npol_policies.replace(policy_id, policy)
    else:
        state.npol_policies.alloc(policy)
    return _ok()


def npol_policy_delete(state: VppState, req: Request) -> Reply:
    """No reference check; a freed policy still configured on an interface reads as a
    policy without rules."""
    policy_id = _get(req, "policy_id")
    if policy_id not in state.npol_policies:
        return _rv(E.NO_SUCH_ENTRY)
    state.npol_policies.free(policy_id, ghost=NpolPolicy())
    return _ok()


def npol_configure_policies(state: VppState, req: Request) -> Reply:
    """npol_configure_policies: INVALID_SW_IF_INDEX for an unknown interface; any policy id
    that is not live makes it answer **1** (a positive retval) and change nothing."""
    sw_if_index = _get(req, "sw_if_index")
    ids = [_int(x) for x in (req.get("policy_ids") or [])]
    n_rx = _get(req, "num_rx_policies")
    n_tx = _get(req, "num_tx_policies")
    total = min(_get(req, "total_ids", len(ids)), len(ids))
    if state.interface(sw_if_index) is None:
        return _rv(E.INVALID_SW_IF_INDEX)
    if n_rx + n_tx > total:
        # VPP computes total - rx - tx in u32 and reads past the message; the simulator refuses.
        return _rv(E.INVALID_VALUE)
    ids = ids[:total]
    conf = NpolIfConfig(
        rx_policies=ids[:n_rx],
        tx_policies=ids[n_rx : n_rx + n_tx],
        profiles=ids[n_rx + n_tx :],
        invert_rx_tx=_get(req, "invert_rx_tx"),
        policy_default_rx=_get(req, "policy_default_rx"),
        policy_default_tx=_get(req, "policy_default_tx"),
        profile_default_rx=_get(req, "profile_default_rx"),
        profile_default_tx=_get(req, "profile_default_tx"),
    )
    if any(pid not in state.npol_policies for pid in ids):
        return _rv(1)
    state.npol_if[sw_if_index] = conf
    return _ok()


# ---------------------------------------------------------------------------------------
# acl (plugins/acl/acl.c)


def acl_plugin_get_version(state: VppState, req: Request) -> Reply:
    return {"major": 1, "minor": 4}


def _decode_acl_rule(raw: dict[str, Any]) -> tuple[int, AclRule | None]:
    """acl_add_list's consistency checks, in VPP's order."""
    src_raw, dst_raw = raw.get("src_prefix"), raw.get("dst_prefix")
    src, src_ok = _prefix(src_raw)
    if not src_ok:
        return E.INVALID_SRC_ADDRESS, None
    dst, dst_ok = _prefix(dst_raw)
    if not dst_ok:
        return E.INVALID_DST_ADDRESS, None
    if src.version != dst.version:
        return E.INVALID_SRC_ADDRESS, None
    rule = AclRule(
        is_permit=_get(raw, "is_permit"),
        src=src,
        dst=dst,
        proto=_get(raw, "proto"),
        sport_first=_get(raw, "srcport_or_icmptype_first"),
        sport_last=_get(raw, "srcport_or_icmptype_last"),
        dport_first=_get(raw, "dstport_or_icmpcode_first"),
        dport_last=_get(raw, "dstport_or_icmpcode_last"),
        tcp_flags_mask=_get(raw, "tcp_flags_mask"),
        tcp_flags_value=_get(raw, "tcp_flags_value"),
    )
    if rule.sport_first > rule.sport_last or rule.dport_first > rule.dport_last:
        return E.INVALID_VALUE_2, None
    return 0, rule


def acl_add_replace(state: VppState, req: Request) -> Reply:
    """acl_add_list: acl_index ~0 creates, anything else replaces that ACL in place
    (NO_SUCH_ENTRY if it does not exist). A 64-character tag is INVALID_VALUE."""
    acl_index = _get(req, "acl_index", U32_MAX)
    tag = _str(req.get("tag"))
    if len(tag.encode()) >= 64:
        return _rv(E.INVALID_VALUE, acl_index=acl_index)
    rules_raw = list(req.get("r") or [])
    count = _get(req, "count", len(rules_raw))
    if count != len(rules_raw):
        return _rv(E.INVALID_VALUE, acl_index=acl_index)
    rules: list[AclRule] = []
    for raw in rules_raw:
        rv, rule = _decode_acl_rule(raw)
        if rv or rule is None:
            return _rv(rv, acl_index=acl_index)
        rules.append(rule)
    if acl_index != U32_MAX:
        existing = state.acls.get(acl_index)
        if existing is None:
            return _rv(E.NO_SUCH_ENTRY, acl_index=acl_index)
        existing.rules = rules
        existing.tag = tag
        return _ok(acl_index=acl_index)
    return _ok(acl_index=state.acls.alloc(Acl(tag=tag, rules=rules)))


def acl_del(state: VppState, req: Request) -> Reply:
    """acl_del_list: refused while any interface uses the ACL (inbound checked first)."""
    acl_index = _get(req, "acl_index")
    if acl_index not in state.acls:
        return _rv(E.NO_SUCH_ENTRY)
    inbound, outbound = state.acl_in_use(acl_index)
    if inbound:
        return _rv(E.ACL_IN_USE_INBOUND)
    if outbound:
        return _rv(E.ACL_IN_USE_OUTBOUND)
    state.acls.free(acl_index)
    return _ok()


def _acl_rule_details(rule: AclRule) -> Reply:
    return {
        "is_permit": rule.is_permit,
        "src_prefix": rule.src,
        "dst_prefix": rule.dst,
        "proto": rule.proto,
        "srcport_or_icmptype_first": rule.sport_first,
        "srcport_or_icmptype_last": rule.sport_last,
        "dstport_or_icmpcode_first": rule.dport_first,
        "dstport_or_icmpcode_last": rule.dport_last,
        "tcp_flags_mask": rule.tcp_flags_mask,
        "tcp_flags_value": rule.tcp_flags_value,
    }


def _acl_details(acl_index: int, acl: Acl) -> Reply:
    return {
        "acl_index": acl_index,
        "tag": acl.tag,
        "count": len(acl.rules),
        "r": [_acl_rule_details(r) for r in acl.rules],
    }


def acl_dump(state: VppState, req: Request) -> list[Reply]:
    """~0 dumps all ACLs; an unknown index dumps nothing."""
    acl_index = _get(req, "acl_index", U32_MAX)
    if acl_index == U32_MAX:
        return [_acl_details(i, acl) for i, acl in state.acls.items()]
    acl = state.acls.get(acl_index)
    return [_acl_details(acl_index, acl)] if acl else []


def _set_inout(
    state: VppState, sw_if_index: int, is_input: bool, acls: list[int], may_clear: list[bool]
) -> int:
    """acl_interface_set_inout_acl_list."""
    for acl_index in acls:
        if acl_index not in state.acls:
            return E.NO_SUCH_ENTRY
    if len(set(acls)) != len(acls):
        return E.ENTRY_ALREADY_EXISTS
    table = state.acl_input if is_input else state.acl_output
    old = table.get(sw_if_index, [])
    changed = set(old) ^ set(acls)
    if acls:
        table[sw_if_index] = list(acls)
    else:
        table.pop(sw_if_index, None)
    if may_clear[0] and changed:
        # no reclassify-sessions: a changed set of ACLs clears the interface's sessions
        state.acl_sessions = {s for s in state.acl_sessions if s.sw_if_index != sw_if_index}
        may_clear[0] = False
    return 0


def acl_interface_set_acl_list(state: VppState, req: Request) -> Reply:
    """The first n_input ACLs are input, the rest output; output is set first. Any
    failure of either half answers **1** (VPP's `rv = rv || ...`)."""
    sw_if_index = _get(req, "sw_if_index")
    if state.interface(sw_if_index) is None:
        return _rv(E.INVALID_SW_IF_INDEX)
    acls = [_int(a) for a in (req.get("acls") or [])]
    count = _get(req, "count", len(acls))
    if count > 255 or count != len(acls):
        # `count` is a u8 on the wire; the simulator refuses what no codec can carry.
        return _rv(E.INVALID_VALUE)
    n_input = _get(req, "n_input")
    if any(a not in state.acls for a in acls):
        return _rv(E.NO_SUCH_ENTRY)
    may_clear = [True]
    rv = _set_inout(state, sw_if_index, False, acls[n_input:], may_clear)
    if rv:
        return _rv(1)
    rv = _set_inout(state, sw_if_index, True, acls[:n_input], may_clear)
    return _rv(1 if rv else 0)


def acl_interface_add_del(state: VppState, req: Request) -> Reply:
    """acl_interface_add_del_inout_acl: append or remove one ACL of one direction."""
    sw_if_index = _get(req, "sw_if_index")
    if state.interface(sw_if_index) is None:
        return _rv(E.INVALID_SW_IF_INDEX)
    is_input = _bool(req.get("is_input"))
    acl_index = _get(req, "acl_index")
    current = list((state.acl_input if is_input else state.acl_output).get(sw_if_index, []))
    if _bool(req.get("is_add")):
        if acl_index in current:
            return _rv(E.ACL_IN_USE_INBOUND if is_input else E.ACL_IN_USE_OUTBOUND)
        current.append(acl_index)
    else:
        if acl_index not in current:
            return _rv(E.NO_SUCH_ENTRY)
        current.remove(acl_index)
    return _rv(_set_inout(state, sw_if_index, is_input, current, [True]))


def _acl_list_details(state: VppState, sw_if_index: int) -> Reply:
    inputs = state.acl_input.get(sw_if_index, [])
    outputs = state.acl_output.get(sw_if_index, [])
    return {
        "sw_if_index": sw_if_index,
        "count": len(inputs) + len(outputs),
        "n_input": len(inputs),
        "acls": inputs + outputs,
    }


def acl_interface_list_dump(state: VppState, req: Request) -> list[Reply]:
    """~0: one details per interface (also those without ACLs); else that interface."""
    sw_if_index = _get(req, "sw_if_index", U32_MAX)
    if sw_if_index == U32_MAX:
        return [_acl_list_details(state, i) for i, _ in state.interfaces.items()]
    if state.interface(sw_if_index) is None:
        return []
    return [_acl_list_details(state, sw_if_index)]


# ---------------------------------------------------------------------------------------
# cnat (plugins/cnat/cnat_api.c, cnat_translation.c, cnat_snat_policy.c)


def _decode_endpoint(raw: dict[str, Any]) -> tuple[int, CnatEndpoint]:
    """cnat_endpoint_decode: an address, or an interface (its address resolved later)."""
    sw_if_index = _get(raw, "sw_if_index", U32_MAX)
    port = _get(raw, "port")
    if sw_if_index == U32_MAX:
        addr_raw = raw.get("addr")
        addr = _addr(addr_raw) if addr_raw is not None else IPv4Address(0)
        return 0, CnatEndpoint(addr=addr, sw_if_index=U32_MAX, if_af=1 if addr.version == 6 else 0, port=port)
    if_af = _get(raw, "if_af")
    if if_af not in (0, 1):
        return E.INVALID_ADDRESS_FAMILY, CnatEndpoint(None)
    return 0, CnatEndpoint(addr=None, sw_if_index=sw_if_index, if_af=if_af, port=port)


def _same_vip(a: CnatEndpoint, b: CnatEndpoint) -> bool:
    if a.sw_if_index != U32_MAX or b.sw_if_index != U32_MAX:
        return a.sw_if_index == b.sw_if_index and a.port == b.port and a.if_af == b.if_af
    return a.addr == b.addr and a.port == b.port


def cnat_translation_update(state: VppState, req: Request) -> Reply:
    """One translation per (VIP, port, protocol): updating an existing one keeps its id and
    replaces flags and paths (lb_type and flow hash are kept from creation)."""
    tr = req.get("translation") or {}
    proto = _get(tr, "ip_proto")
    if not 0 <= proto <= 255:
        return _rv(E.INVALID_PROTOCOL, id=U32_MAX)
    paths: list[CnatPath] = []
    raw_paths = list(tr.get("paths") or [])
    for raw in raw_paths[: min(_get(tr, "n_paths", len(raw_paths)), len(raw_paths))]:
        rv, src = _decode_endpoint(raw.get("src_ep") or {})
        if rv:
            return _rv(rv, id=U32_MAX)
        rv, dst = _decode_endpoint(raw.get("dst_ep") or {})
        if rv:
            return _rv(rv, id=U32_MAX)
        paths.append(CnatPath(dst=dst, src=src, flags=_get(raw, "flags")))
    rv, vip = _decode_endpoint(tr.get("vip") or {})
    if rv:
        return _rv(rv, id=U32_MAX)
    flags = _get(tr, "flags")
    for tid, existing in state.translations.items():
        if _same_vip(existing.vip, vip) and existing.proto == proto:
            existing.flags = flags
            existing.is_real_ip = _get(tr, "is_real_ip")
            existing.paths = paths
            return _ok(id=tid)
    new = CnatTranslation(
        vip=vip,
        proto=proto,
        is_real_ip=_get(tr, "is_real_ip"),
        flags=flags,
        lb_type=_get(tr, "lb_type"),
        flow_hash_config=_get(tr, "flow_hash_config"),
        paths=paths,
    )
    return _ok(id=state.translations.alloc(new))


def cnat_translation_del(state: VppState, req: Request) -> Reply:
    """Existing sessions keep their rewrite (VPP does not purge them)."""
    tid = _get(req, "id")
    if tid not in state.translations:
        return _rv(E.NO_SUCH_ENTRY)
    state.translations.free(tid)
    return _ok()


def _encode_endpoint(state: VppState, ep: CnatEndpoint) -> Reply:
    """cnat_endpoint_encode: the address only if resolved, else zeros."""
    addr = state.endpoint_address(ep)
    return {
        "addr": addr if addr is not None else _zero(ep.if_af == 1),
        "sw_if_index": ep.sw_if_index,
        "if_af": ep.if_af,
        "port": ep.port,
    }


def cnat_translation_dump(state: VppState, req: Request) -> list[Reply]:
    """cnat_translation_send_details: is_real_ip, flags and flow_hash_config are not
    encoded (they read 0)."""
    out: list[Reply] = []
    for tid, tr in state.translations.items():
        out.append(
            {
                "translation": {
                    "vip": _encode_endpoint(state, tr.vip),
                    "id": tid,
                    "ip_proto": tr.proto,
                    "is_real_ip": 0,
                    "flags": 0,
                    "lb_type": tr.lb_type,
                    "n_paths": len(tr.paths),
                    "flow_hash_config": 0,
                    "paths": [
                        {
                            "dst_ep": _encode_endpoint(state, p.dst),
                            "src_ep": _encode_endpoint(state, p.src),
                            "flags": p.flags,
                        }
                        for p in tr.paths
                    ],
                }
            }
        )
    return out


def cnat_session_purge(state: VppState, req: Request) -> Reply:
    """Global: every cnat session on the node goes (NAT-ed flows included)."""
    state.cnat_sessions.clear()
    return _ok()


def _swap16(value: int) -> int:
    return ((value & 0xFF) << 8) | (value >> 8)


def cnat_session_dump(state: VppState, req: Request) -> list[Reply]:
    """cnat_5tuple_encode writes the ports with clib_net_to_host_u16 into the message: a
    client sees them byte-swapped (as observed on a real VPP of this version)."""
    out: list[Reply] = []
    for (_fib, tup), session in sorted(state.cnat_sessions.items(), key=lambda kv: kv[1].index):
        out.append(
            {
                "session": {
                    "tuple": {
                        "addr": [tup.src, tup.dst],
                        "port": [_swap16(tup.sport), _swap16(tup.dport)],
                        "ip_proto": tup.proto,
                    },
                    "ts_index": session.index,
                    "flags": CNAT_SESSION_IS_RETURN if session.is_return else 0,
                }
            }
        )
    return out


def _v4(value: Any) -> IPv4Address:
    if value is None:
        return IPv4Address(0)
    addr = _addr(value)
    return addr if isinstance(addr, IPv4Address) else IPv4Address(0)


def _v6(value: Any) -> IPv6Address:
    if value is None:
        return IPv6Address(0)
    addr = _addr(value)
    return addr if isinstance(addr, IPv6Address) else IPv6Address(0)


def _set_snat(
    state: VppState, fwd: int, ret: int, ip4: IPv4Address, ip6: IPv6Address, sw_if_index: int, flags: int
) -> int:
    """cnat_set_snat: create/update the entry of a forwarding FIB, or delete it when
    neither address nor interface is given (FEATURE_DISABLED if there is none)."""
    sw_if_set = sw_if_index != U32_MAX
    ip4_set = int(ip4) != 0
    ip6_set = int(ip6) != 0
    entry = state.snat.get(fwd)
    # What VPP's per-family lookups return: the fib's entry once that family was set on it, else
    # the default entry (a freed one, once cnat_snat_cleanup has left the pointer dangling).
    default: SnatEntry | str | None = next(
        (e for e in state.snat.values() if e.flags & CNAT_SNAT_F_USE_AS_DEFAULT), None
    )
    if state.snat_default_freed:
        default = "freed"
    cpe4 = entry if entry is not None and entry.has4 else default
    cpe6 = entry if entry is not None and entry.has6 else default
    if not (cpe4 is cpe6 or (not sw_if_set and not (ip4_set and ip6_set))):
        state.hazards.append(
            "both addresses for an entry that has only one family set and is not the default: "
            "cnat_set_snat's ASSERT (cpe4 == cpe6 || ...) aborts a debug build of VPP"
        )
    if not (sw_if_set or ip4_set or ip6_set):
        if entry is None:
            return E.FEATURE_DISABLED
        if entry.flags & CNAT_SNAT_F_USE_AS_DEFAULT:
            state.snat_default_freed = True
        del state.snat[fwd]
        return 0
    if entry is None:
        if state.snat_default_freed:
            state.hazards.append(
                "a new SNAT entry after the default one was deleted: VPP updates the freed entry "
                "snat_default_policy still points at (no port allocator; the dump no longer lists "
                "it), so the first source-NATed flow uses freed memory"
            )
        entry = state.snat[fwd] = SnatEntry(fwd_fib_index=fwd, ret_fib_index=ret, flags=flags)
    entry.ret_fib_index = ret
    if sw_if_set or ip4_set:
        entry.has4 = True
        entry.snat_ip4 = ip4
        entry.sw_if_index4 = sw_if_index
    if sw_if_set or ip6_set:
        entry.has6 = True
        entry.snat_ip6 = ip6
        entry.sw_if_index6 = sw_if_index
    return 0


def cnat_set_snat_addresses(state: VppState, req: Request) -> Reply:
    ip4, ip6 = _v4(req.get("snat_ip4")), _v6(req.get("snat_ip6"))
    rv = _set_snat(state, 0, 0, ip4, ip6, _get(req, "sw_if_index", U32_MAX), 0)
    return _rv(rv)


def cnat_set_snat_addresses_v2(state: VppState, req: Request) -> Reply:
    rv = _set_snat(
        state,
        _get(req, "fwd_fib_index"),
        _get(req, "ret_fib_index"),
        _v4(req.get("snat_ip4")),
        _v6(req.get("snat_ip6")),
        _get(req, "sw_if_index", U32_MAX),
        _get(req, "flags"),
    )
    return _rv(rv)


def cnat_get_snat_addresses(state: VppState, req: Request) -> Reply:
    entry = state.default_snat()
    if entry is None:
        return _rv(E.FEATURE_DISABLED, id=0, snat_ip4=IPv4Address(0), snat_ip6=IPv6Address(0), sw_if_index=0)
    return _ok(
        id=0,
        snat_ip4=entry.snat_ip4,
        snat_ip6=entry.snat_ip6,
        sw_if_index=entry.sw_if_index6 if entry.has6 else 0,
    )


def cnat_snat_addresses_dump(state: VppState, req: Request) -> list[Reply]:
    out: list[Reply] = []
    for fwd in sorted(state.snat):
        entry = state.snat[fwd]
        t4 = state.table_by_fib_index(False, entry.fwd_fib_index)
        t6 = state.table_by_fib_index(True, entry.fwd_fib_index)
        r4 = state.table_by_fib_index(False, entry.ret_fib_index)
        r6 = state.table_by_fib_index(True, entry.ret_fib_index)
        out.append(
            {
                "retval": 0,
                "fwd_table_id4": t4.table_id if t4 else U32_MAX,
                "fwd_table_id6": t6.table_id if t6 else U32_MAX,
                "ret_table_id4": r4.table_id if r4 else U32_MAX,
                "ret_table_id6": r6.table_id if r6 else U32_MAX,
                "snat_ip4": entry.snat_ip4,
                "snat_ip6": entry.snat_ip6,
                "sw_if_index": entry.sw_if_index6 if entry.has6 else 0,
            }
        )
    return out


def cnat_set_snat_policy(state: VppState, req: Request) -> Reply:
    """NONE | IF_PFX | K8S | DNAT (| DNAT_ONLY, 4, in the source); others INVALID_VALUE.
    Needs the default SNAT entry (cnat_set_snat_addresses first): else FEATURE_DISABLED."""
    entry = state.default_snat()
    if entry is None:
        return _rv(E.FEATURE_DISABLED)
    policy = _get(req, "policy")
    if policy not in (0, 1, 2, CNAT_POLICY_DNAT, 4):
        return _rv(E.INVALID_VALUE)
    entry.policy = policy
    return _ok()


def cnat_snat_policy_add_del_exclude_pfx(state: VppState, req: Request) -> Reply:
    """Prefixes whose destinations are never source-NATed (normalised; deleting an
    absent one is a no-op)."""
    entry = state.default_snat()
    if entry is None:
        return _rv(E.FEATURE_DISABLED)
    prefix, _valid = _prefix(req.get("prefix"))
    if _bool(req.get("is_add")):
        _snat_entry_init(entry)
        entry.exclude.add(prefix)
    elif entry.initialized:
        entry.exclude.discard(prefix)
    return _ok()


def cnat_snat_policy_add_del_if(state: VppState, req: Request) -> Reply:
    """Interface maps INCLUDE_V4 / INCLUDE_V6 / POD / HOST of the default SNAT entry."""
    sw_if_index = _get(req, "sw_if_index")
    if state.interface(sw_if_index) is None:
        return _rv(E.INVALID_SW_IF_INDEX)
    table = _get(req, "table")
    if table > CNAT_IF_HOST:
        return _rv(E.INVALID_VALUE)
    entry = state.default_snat()
    if entry is None:
        return _rv(E.FEATURE_DISABLED)
    is_add = _bool(req.get("is_add"))
    if not is_add and not entry.initialized:
        return _ok()
    _snat_entry_init(entry)
    members = entry.if_maps.setdefault(table, set())
    if is_add:
        members.add(sw_if_index)
    else:
        members.discard(sw_if_index)
        if table == 0 and not members:
            # clib_bitmap_set trims trailing zero words: the INCLUDE_V4 map is left with length 0,
            # which is how cnat_snat_policy_entry_is_init tells an entry never initialised.
            entry.initialized = False
    return _ok()


def _snat_entry_init(entry: SnatEntry) -> None:
    """cnat_snat_policy_entry_init: on an entry that reads as not initialised, the excluded
    prefix table is made anew (clib_bihash_init zeroes it: its prefixes are gone); the
    interface maps keep their bits."""
    if not entry.initialized:
        entry.exclude.clear()
        entry.initialized = True


def feature_cnat_enable_disable(state: VppState, req: Request) -> Reply:
    """cnat_sw_interface_enable_disable: the cnat input/output features (and with them the
    npol hooks) on one interface. Always 0 for a valid interface."""
    itf = _valid_if(state, _get(req, "sw_if_index"))
    if itf is None:
        return _rv(E.INVALID_SW_IF_INDEX)
    itf.cnat_feature = _bool(req.get("enable_disable"))
    return _ok()


# ---------------------------------------------------------------------------------------
# The tables the server uses


_RAW_HANDLERS: dict[str, Handler] = {
    "show_version": show_version,
    "control_ping": control_ping,
    "cli_inband": cli_inband,
    # interfaces
    "sw_interface_dump": sw_interface_dump,
    "sw_interface_set_flags": sw_interface_set_flags,
    "sw_interface_tag_add_del": sw_interface_tag_add_del,
    "sw_interface_set_mtu": sw_interface_set_mtu,
    "sw_interface_add_del_address": sw_interface_add_del_address,
    "ip_address_dump": ip_address_dump,
    "sw_interface_set_table": sw_interface_set_table,
    "sw_interface_get_table": sw_interface_get_table,
    "sw_interface_set_unnumbered": sw_interface_set_unnumbered,
    "want_interface_events": want_interface_events,
    "create_loopback": create_loopback,
    "delete_loopback": delete_loopback,
    "tap_create_v3": tap_create_v3,
    "tap_delete_v2": tap_delete_v2,
    "af_packet_create_v3": af_packet_create_v3,
    "af_packet_delete": af_packet_delete,
    "vxlan_add_del_tunnel_v3": vxlan_add_del_tunnel_v3,
    "ipip_add_tunnel": ipip_add_tunnel,
    "ipip_del_tunnel": ipip_del_tunnel,
    "urpf_update": urpf_update,
    "sw_interface_ip6_enable_disable": sw_interface_ip6_enable_disable,
    "add_node_next": add_node_next,
    # FIB
    "ip_table_add_del": ip_table_add_del,
    "ip_table_dump": ip_table_dump,
    "ip_route_add_del": ip_route_add_del,
    "ip_route_dump": ip_route_dump,
    "ip_table_replace_begin": ip_table_replace_begin,
    "ip_table_replace_end": ip_table_replace_end,
    "ip_table_flush": ip_table_flush,
    # npol
    "npol_get_version": npol_get_version,
    "npol_ipset_create": npol_ipset_create,
    "npol_ipset_add_del_members": npol_ipset_add_del_members,
    "npol_ipset_delete": npol_ipset_delete,
    "npol_rule_create": npol_rule_create,
    "npol_rule_update": npol_rule_update,
    "npol_rule_delete": npol_rule_delete,
    "npol_policy_create": npol_policy_create,
    "npol_policy_update": npol_policy_update,
    "npol_policy_delete": npol_policy_delete,
    "npol_configure_policies": npol_configure_policies,
    # acl
    "acl_plugin_get_version": acl_plugin_get_version,
    "acl_add_replace": acl_add_replace,
    "acl_del": acl_del,
    "acl_dump": acl_dump,
    "acl_interface_set_acl_list": acl_interface_set_acl_list,
    "acl_interface_add_del": acl_interface_add_del,
    "acl_interface_list_dump": acl_interface_list_dump,
    # cnat
    "cnat_translation_update": cnat_translation_update,
    "cnat_translation_del": cnat_translation_del,
    "cnat_translation_dump": cnat_translation_dump,
    "cnat_session_purge": cnat_session_purge,
    "cnat_session_dump": cnat_session_dump,
    "cnat_set_snat_addresses": cnat_set_snat_addresses,
    "cnat_set_snat_addresses_v2": cnat_set_snat_addresses_v2,
    "cnat_get_snat_addresses": cnat_get_snat_addresses,
    "cnat_snat_addresses_dump": cnat_snat_addresses_dump,
    "cnat_set_snat_policy": cnat_set_snat_policy,
    "cnat_snat_policy_add_del_exclude_pfx": cnat_snat_policy_add_del_exclude_pfx,
    "cnat_snat_policy_add_del_if": cnat_snat_policy_add_del_if,
    "feature_cnat_enable_disable": feature_cnat_enable_disable,
}

_DETAILS = {
    "sw_interface_dump": "sw_interface_details",
    "ip_address_dump": "ip_address_details",
    "ip_table_dump": "ip_table_details",
    "ip_route_dump": "ip_route_details",
    "acl_dump": "acl_details",
    "acl_interface_list_dump": "acl_interface_list_details",
    "cnat_translation_dump": "cnat_translation_details",
    "cnat_session_dump": "cnat_session_details",
    "cnat_snat_addresses_dump": "cnat_snat_addresses_details",
}
_SHARED_REPLY = {
    # messages whose reply is not "<name>_reply" (vxlan v3 has its own; update/create share)
    "vxlan_add_del_tunnel_v3": "vxlan_add_del_tunnel_v3_reply",
}

DUMPS: frozenset[str] = frozenset(_DETAILS)
"""The handlers that return a list of details."""


def _guard(name: str, handler: Handler) -> Handler:
    """A value the handler cannot interpret answers INVALID_VALUE (a dump: nothing).

    Only `BadValue` is caught: any other exception is a simulator bug and reaches the
    server (which answers -1 and records it).
    """

    def guarded(state: VppState, request: Request) -> Reply | list[Reply]:
        state.version += 1
        try:
            return handler(state, request)
        except BadValue:
            return [] if name in DUMPS else _rv(E.INVALID_VALUE)
        finally:
            state.version += 1  # whatever it changed, derived caches are stale

    guarded.__name__ = handler.__name__
    guarded.__doc__ = handler.__doc__
    return guarded


HANDLERS: dict[str, Handler] = {name: _guard(name, fn) for name, fn in _RAW_HANDLERS.items()}
"""Request message name -> handler(state, request) -> reply fields | list of details."""

REPLIES: dict[str, str] = {
    name: _DETAILS.get(name) or _SHARED_REPLY.get(name) or f"{name}_reply" for name in HANDLERS
}
"""Request message -> the reply (or, for dumps, details) message each handler answers with."""


def handle(state: VppState, name: str, request: Request) -> Reply | list[Reply]:
    """Call a handler by message name (KeyError for an unknown one)."""
    return HANDLERS[name](state, request)


__all__ = ["DUMPS", "HANDLERS", "REPLIES", "VERSION", "BadValue", "handle"]
