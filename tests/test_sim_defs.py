"""The simulator's API definitions and codec.

* Every module, message, type, enum, union and alias the simulator serves matches VPP's own generated
  ``*.api.json`` (names, field order, types, array lengths, options, CRCs, services), read from
  ``../shared/vpp-api`` (or ``$VPP_API_JSON_DIR``); skipped when that directory is absent, and per
  module when VPP's file for it is not there.
* vpp_papi can build every message from the ``get_api_json`` document the simulator serves.
* The simulator's own codec agrees byte for byte with vpp_papi's serializer, both ways, on generated
  values of every message.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
from vpp_papi.vpp_papi import VPPApiJSONFiles

from calico_vpp_driver.sim.codec import (
    Codec,
    CodecError,
    address_to_ip,
    ip_to_address,
    network_to_prefix,
    prefix_to_interface,
    prefix_to_network,
)
from calico_vpp_driver.sim.defs import AliasDef, EnumDef, StructDef, api_defs

REF_DIR = Path(os.environ.get("VPP_API_JSON_DIR", Path(__file__).resolve().parents[2] / "shared" / "vpp-api"))
DEFS = api_defs()
MODULE_NAMES = [m.name for m in DEFS.modules]

#: What the issue asks the simulator to serve (request messages).
REQUIRED = """
sockclnt_create get_api_json control_ping memclnt_keepalive sockclnt_delete
sw_interface_dump sw_interface_set_flags sw_interface_tag_add_del sw_interface_add_del_address
sw_interface_set_table sw_interface_set_unnumbered want_interface_events tap_create_v3 tap_delete_v2
af_packet_create_v3 af_packet_delete create_loopback
npol_ipset_create npol_ipset_add_del_members npol_ipset_delete npol_rule_create npol_rule_update
npol_rule_delete npol_policy_create npol_policy_update npol_policy_delete npol_configure_policies
acl_add_replace acl_del acl_dump acl_interface_set_acl_list acl_interface_list_dump
cnat_translation_update cnat_translation_del cnat_translation_dump cnat_set_snat_addresses_v2
cnat_set_snat_policy cnat_snat_policy_add_del_exclude_pfx cnat_snat_policy_add_del_if
feature_cnat_enable_disable cnat_session_purge cnat_session_dump
ip_table_add_del ip_route_add_del ip_route_dump ip_table_replace_begin ip_table_replace_end
vxlan_add_del_tunnel_v3 ipip_add_tunnel ipip_del_tunnel urpf_update show_version cli_inband
""".split()


# --------------------------------------------------------------------------------------------------
# Against VPP's own definitions
# --------------------------------------------------------------------------------------------------


def _strip(items: list[Any]) -> list[Any]:
    """A definition without its comment-only dicts."""
    return [x for x in items if not (isinstance(x, dict) and set(x) <= {"comment"})]


def _load_reference() -> dict[str, dict[str, Any]]:
    modules: dict[str, dict[str, Any]] = {}
    for path in sorted(REF_DIR.rglob("*.api.json")):
        doc = json.loads(path.read_text())
        modules[doc.get("module") or path.name.split(".")[0]] = doc
    return modules


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, Any]]:
    if not REF_DIR.is_dir():
        pytest.skip(f"VPP's API definitions not found at {REF_DIR}")
    return _load_reference()


def test_required_messages_are_served() -> None:
    missing = [m for m in REQUIRED if m not in DEFS.services]
    assert not missing
    for name in REQUIRED:
        reply = DEFS.reply_of(name)
        assert reply in DEFS.messages, name


@pytest.mark.parametrize("module", MODULE_NAMES)
def test_module_matches_vpp(reference: dict[str, dict[str, Any]], module: str) -> None:
    if module not in reference:
        pytest.skip(f"no {module}.api.json in {REF_DIR}")
    ref = reference[module]
    ours = DEFS.module_json(module)
    assert ours["options"]["version"] == ref["options"]["version"]
    assert ours["vl_api_version"] == ref["vl_api_version"]

    ref_msgs = {m[0]: m for m in ref["messages"]}
    for msg in ours["messages"]:
        name = msg[0]
        assert name in ref_msgs, f"{module}: VPP has no message {name}"
        ref_fields = [f for f in ref_msgs[name][1:] if isinstance(f, list)]
        our_fields = [f for f in msg[1:] if isinstance(f, list)]
        assert our_fields == ref_fields, name
        assert msg[-1]["crc"] == ref_msgs[name][-1]["crc"], name

    # The same relative order as VPP's, so the message ids ascend within a module as VPP's do.
    order = [m[0] for m in ref["messages"]]
    served = [m[0] for m in ours["messages"]]
    assert served == sorted(served, key=order.index)

    for name, svc in ours["services"].items():
        assert ref["services"][name] == svc, name

    for kind in ("types", "unions", "enums", "enumflags"):
        ref_defs = {t[0]: _strip(t) for t in ref[kind]}
        for tdef in ours[kind]:
            assert tdef[0] in ref_defs, f"{module}: VPP has no {kind[:-1]} {tdef[0]}"
            assert tdef == ref_defs[tdef[0]], tdef[0]
    for name, alias in ours["aliases"].items():
        assert ref["aliases"].get(name) == alias, name


def test_memclnt_is_complete_and_first(reference: dict[str, dict[str, Any]]) -> None:
    # vpp_papi sends sockclnt_create as id 15 and expects its reply as 16: memclnt must be numbered
    # exactly as VPP numbers it, from 1, in definition order.
    ref_names = [m[0] for m in reference["memclnt"]["messages"]]
    assert list(DEFS.messages)[: len(ref_names)] == ref_names
    assert ref_names.index("sockclnt_create") + 1 == 15


def test_npol_is_complete(reference: dict[str, dict[str, Any]]) -> None:
    assert DEFS.module_messages["npol"] == [m[0] for m in reference["npol"]["messages"]]


def test_every_served_type_is_vpps(reference: dict[str, dict[str, Any]]) -> None:
    known: dict[tuple[str, str], Any] = {}
    for doc in reference.values():
        for kind in ("types", "unions", "enums", "enumflags"):
            for t in doc[kind]:
                known[(kind, t[0])] = _strip(t)
        for name, alias in doc["aliases"].items():
            known[("aliases", name)] = alias
    urpf_only = {"urpf_mode"}  # the urpf plugin is not in the reference directory
    for name, tdef in DEFS.types.items():
        if name in urpf_only:
            continue
        if isinstance(tdef, AliasDef):
            assert known[("aliases", name)] == tdef.to_json(), name
        elif isinstance(tdef, EnumDef):
            assert known[("enumflags" if tdef.is_flag else "enums", name)] == tdef.to_json(), name
        else:
            assert isinstance(tdef, StructDef)
            assert known[("unions" if tdef.is_union else "types", name)] == tdef.to_json(), name


# --------------------------------------------------------------------------------------------------
# What vpp_papi makes of the served document
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def papi_messages() -> dict[str, Any]:
    messages, services = VPPApiJSONFiles.process_json_array_str(DEFS.api_json())
    assert services == DEFS.services
    return dict(messages)


def test_vpp_papi_builds_every_message(papi_messages: dict[str, Any]) -> None:
    assert set(papi_messages) == set(DEFS.messages)
    for name, msg in papi_messages.items():
        assert msg.crc == DEFS.messages[name].crc
        assert list(msg.fields) == list(DEFS.messages[name].field_names())


def test_variable_strings_come_last_in_what_the_server_sends() -> None:
    # vpp_papi unpacks an empty `string x[]` as 0 bytes instead of 4: any field after one would be
    # misread.  VPP's definitions avoid it; make sure ours do for everything the server sends.
    requests = set(DEFS.services)
    for name, msg in DEFS.messages.items():
        if name in requests:
            continue
        for f in msg.fields[:-1]:
            assert not (f.type == "string" and f.length == 0), f"{name}.{f.name}"


# --------------------------------------------------------------------------------------------------
# The codec against vpp_papi's serializer
# --------------------------------------------------------------------------------------------------


def _sample(type_name: str, rng: random.Random, depth: int = 0) -> Any:
    """A random value of a named type, in the form both codecs accept (unions name one member)."""
    tdef = DEFS.type(type_name)
    if isinstance(tdef, EnumDef):
        return rng.choice(tdef.values)[1]
    if isinstance(tdef, AliasDef):
        if tdef.length is not None:
            return _sample_array(tdef.type, tdef.length, rng, depth)
        return _sample_scalar(tdef.type, rng, depth)
    if tdef.is_union:
        member = rng.choice(tdef.fields)
        return {member.name: _sample_field(member, rng, depth + 1)}
    return _sample_struct(tdef.fields, rng, depth + 1)


def _sample_scalar(type_name: str, rng: random.Random, depth: int) -> Any:
    bits = {"u8": 8, "u16": 16, "u32": 32, "u64": 64}
    if type_name in bits:
        return rng.randrange(1 << bits[type_name])
    sbits = {"i8": 8, "i16": 16, "i32": 32, "i64": 64}
    if type_name in sbits:
        half = 1 << (sbits[type_name] - 1)
        return rng.randrange(-half, half)
    if type_name == "bool":
        return rng.random() < 0.5
    if type_name == "f64":
        return rng.random() * 1e6
    if type_name == "string":
        return "".join(rng.choice("abcdefghij-_/0123456789") for _ in range(rng.randint(1, 20)))
    return _sample(type_name, rng, depth)


def _sample_array(elem: str, n: int, rng: random.Random, depth: int) -> Any:
    if elem == "u8":
        return bytes(rng.randrange(256) for _ in range(n))
    if elem == "string":
        return "".join(rng.choice("abcdefghij") for _ in range(rng.randint(1, n - 1)))
    return [_sample_scalar(elem, rng, depth) for _ in range(n)]


def _sample_field(f: Any, rng: random.Random, depth: int) -> Any:
    if f.length is None:
        return _sample_scalar(f.type_name, rng, depth)
    if f.length:
        return _sample_array(f.type_name, f.length, rng, depth)
    if f.type == "string":
        return _sample_scalar("string", rng, depth)
    n = rng.randint(1, 3) if depth < 3 else 0
    return (
        _sample_array(f.type_name, n, rng, depth)
        if f.type == "u8"
        else [_sample_scalar(f.type_name, rng, depth) for _ in range(n)]
    )


def _sample_struct(fields: Any, rng: random.Random, depth: int) -> dict[str, Any]:
    value = {f.name: _sample_field(f, rng, depth) for f in fields}
    for f in fields:
        if f.length_field is not None:
            value[f.length_field] = len(value[f.name])
    return value


def _plain(value: Any) -> Any:
    """vpp_papi's unpacked value (no type conversion) as dicts and lists."""
    if hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    return value


def _narrow(decoded: Any, sample: Any) -> Any:
    """Our decoded value reduced to the union members the sample names."""
    if isinstance(sample, dict) and isinstance(decoded, dict):
        return {k: _narrow(decoded[k], v) for k, v in sample.items()}
    if isinstance(sample, list) and isinstance(decoded, list):
        return [_narrow(d, s) for d, s in zip(decoded, sample, strict=True)]
    return decoded


@pytest.mark.parametrize("name", list(DEFS.messages))
def test_codec_agrees_with_vpp_papi(papi_messages: dict[str, Any], name: str) -> None:
    codec = Codec()
    papi = papi_messages[name]
    rng = random.Random(name)
    for _ in range(5):
        sample = _sample_struct(DEFS.messages[name].fields, rng, 0)
        ours = codec.encode(name, sample)
        theirs = papi.pack(dict(sample))
        assert ours == theirs
        # vpp_papi reads our bytes back as the sample...
        unpacked, size = papi.unpack(ours, ntc=True)
        assert size == len(ours)
        plain = _plain(unpacked)
        plain["_vl_msg_id"] = plain.pop("_0")  # vpp_papi's namedtuple renames the leading-underscore field
        assert _narrow(plain, sample) == sample
        # ...and we read them as vpp_papi does, and re-encode them to the same bytes.
        decoded = codec.decode(name, theirs)
        assert decoded == plain
        assert codec.encode(name, decoded) == theirs


@pytest.mark.parametrize(
    "name", [n for n, m in DEFS.messages.items() if any("default" in f.options for f in m.fields)]
)
def test_defaults_as_vpp_papi(papi_messages: dict[str, Any], name: str) -> None:
    codec = Codec()
    sample = _sample_struct(DEFS.messages[name].fields, random.Random(name), 0)
    for f in DEFS.messages[name].fields:
        if "default" in f.options:
            del sample[f.name]
    assert codec.encode(name, sample) == papi_messages[name].pack(sample)


def test_route_with_path_round_trip(papi_messages: dict[str, Any]) -> None:
    codec = Codec()
    route = {
        "table_id": 7,
        "prefix": ipaddress.ip_network("10.1.0.0/16"),
        "n_paths": 1,
        "paths": [
            {
                "sw_if_index": 5,
                "weight": 1,
                "proto": 0,
                "nh": {"address": {"ip4": ipaddress.ip_address("10.0.0.1")}},
                # vpp_papi packs a fixed array of structs only when given in full.
                "label_stack": [{}] * 16,
            }
        ],
    }
    header = {"_vl_msg_id": 9, "context": 3, "is_add": True}
    wire = papi_messages["ip_route_add_del"].pack({**header, "route": route})
    decoded = codec.decode("ip_route_add_del", wire)
    assert prefix_to_network(decoded["route"]["prefix"]) == ipaddress.ip_network("10.1.0.0/16")
    path = decoded["route"]["paths"][0]
    assert path["nh"]["address"]["ip4"] == ipaddress.ip_address("10.0.0.1").packed
    assert codec.encode("ip_route_add_del", decoded) == wire
    # Our encoder takes the same ipaddress forms and fills the missing label_stack itself.
    del route["paths"][0]["label_stack"]  # type: ignore[attr-defined]
    ours = codec.encode("ip_route_add_del", {**header, "route": route})
    assert ours == wire


def test_npol_rule_unions(papi_messages: dict[str, Any]) -> None:
    codec = Codec()
    rule = {
        "action": 1,
        "filters": [{"value": 6, "type": 3, "should_match": 1}, {}, {}],
        "num_entries": 3,
        "matches": [
            {"is_src": True, "is_not": False, "type": 0, "data": {"cidr": ipaddress.ip_network("fd00::/64")}},
            {"is_src": False, "is_not": False, "type": 1, "data": {"port_range": {"start": 80, "end": 443}}},
            {"is_src": True, "is_not": True, "type": 3, "data": {"set_id": {"set_id": 12}}},
        ],
    }
    wire = papi_messages["npol_rule_create"].pack({"_vl_msg_id": 1, "context": 1, "rule": rule})
    assert codec.encode("npol_rule_create", {"_vl_msg_id": 1, "context": 1, "rule": rule}) == wire
    matches = codec.decode("npol_rule_create", wire)["rule"]["matches"]
    assert prefix_to_network(matches[0]["data"]["cidr"]) == ipaddress.ip_network("fd00::/64")
    assert matches[1]["data"]["port_range"] == {"start": 80, "end": 443}
    assert matches[2]["data"]["set_id"] == {"set_id": 12}


def test_address_helpers() -> None:
    for text in ("10.0.0.1", "fd00::1"):
        ip = ipaddress.ip_address(text)
        assert address_to_ip(ip_to_address(ip)) == ip
    iface = ipaddress.ip_interface("10.0.0.1/24")
    prefix = network_to_prefix(iface)
    assert prefix_to_interface(prefix) == iface
    assert prefix_to_network(prefix) == ipaddress.ip_network("10.0.0.0/24")
    codec = Codec()
    assert codec.encode_type("mac_address", "02:00:00:00:00:01") == bytes([2, 0, 0, 0, 0, 1])
    assert codec.encode_type("address", "fd00::1") == codec.encode_type("address", ip_to_address("fd00::1"))


def test_codec_errors() -> None:
    codec = Codec()
    with pytest.raises(CodecError):
        codec.encode("sw_interface_tag_add_del", {"tag": "x" * 64})  # no room for the NUL
    with pytest.raises(CodecError):
        codec.encode("sw_interface_tag_add_del", {"no_such_field": 1})
    with pytest.raises(CodecError):
        codec.encode("acl_interface_set_acl_list", {"count": 2, "acls": [1]})
    with pytest.raises(CodecError):
        codec.encode("create_loopback_reply", {"retval": 1 << 40})
    whole = codec.encode("acl_add_replace", {"_vl_msg_id": 1, "count": 1, "r": [{}]})
    with pytest.raises(CodecError):
        codec.decode("acl_add_replace", whole[:-3])
    # A count field left out is filled in from its list.
    wire = codec.encode("acl_interface_set_acl_list", {"acls": [1, 2, 3], "n_input": 1})
    assert codec.decode("acl_interface_set_acl_list", wire)["count"] == 3
