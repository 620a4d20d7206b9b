"""Encoder and decoder of VPP's binary API messages, driven by :mod:`calico_vpp_driver.sim.defs`.

The wire format is C's packed structs in network byte order: integers big-endian, ``bool`` one
byte, ``string x[N]`` N bytes NUL-padded, ``string x[]`` a u32 length and the bytes, fixed arrays
their elements back to back, variable arrays their elements with the count in an earlier sibling
field, structs their fields in order, unions as many bytes as their largest member, enums their
storage type.  ``f64`` goes in the host's byte order, as vpp_papi packs it.

Decoded values are plain Python: int (enums too), bool, float, str, bytes (``u8`` arrays and aliases
of them such as ``ip4_address`` and ``mac_address``), list (other arrays), dict (structs).  A union
decodes to a dict holding *every* member read from the same bytes (as vpp_papi does); the reader
picks the member the discriminator names.  For encoding, missing fields are zero (or the field's
``default`` option), a variable array's count field is filled in from the list when left out, a
union takes a dict naming one member (with several, the largest one present is used, so a decoded
union re-encodes to the same bytes), and the address types accept :mod:`ipaddress` objects and
strings (``"10.0.0.1"``, ``"fd00::/64"``), ``mac_address`` accepts ``"aa:bb:cc:dd:ee:ff"``.

Counted arrays of the element types in :data:`WIRE_FORM_ELEMENTS` (a bulk message's hundreds of
members) decode to :class:`WireElements`: a sequence that decodes an element when it is read, and
whose bytes a handler may read itself, so a message of 1,000 members costs no 1,000 dicts.

This module must not import vpp_papi: the simulator is an independent implementation that the
driver's vpp_papi client is tested against.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from calico_vpp_driver.sim.defs import (
    BASE_TYPES,
    AliasDef,
    ApiDefs,
    EnumDef,
    FieldDef,
    MessageDef,
    api_defs,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

ADDRESS_IP4 = 0
ADDRESS_IP6 = 1


class CodecError(ValueError):
    """A value does not fit its field, or a buffer does not hold a whole message."""


_SCALARS: dict[str, struct.Struct] = {
    "u8": struct.Struct(">B"),
    "i8": struct.Struct(">b"),
    "u16": struct.Struct(">H"),
    "i16": struct.Struct(">h"),
    "u32": struct.Struct(">I"),
    "i32": struct.Struct(">i"),
    "u64": struct.Struct(">Q"),
    "i64": struct.Struct(">q"),
    "f64": struct.Struct("=d"),
    "bool": struct.Struct(">?"),
}
_U32 = _SCALARS["u32"]
_MSG_ID = struct.Struct(">H")


class Node:
    """Encoder/decoder of one field type; ``size`` is its fixed wire size, None if variable."""

    size: int | None = None

    def encode(self, value: Any, out: bytearray) -> None:
        raise NotImplementedError

    def decode(self, buf: bytes, off: int) -> tuple[Any, int]:
        raise NotImplementedError


class Scalar(Node):
    def __init__(self, type_name: str, default: Any = None) -> None:
        self.st = _SCALARS[type_name]
        self.size = self.st.size
        self.is_bool = type_name == "bool"
        self.is_float = type_name == "f64"
        self.default = _default_value(default, type_name) if default is not None else None

    def encode(self, value: Any, out: bytearray) -> None:
        if value is None:
            value = self.default if self.default is not None else 0
        try:
            out += self.st.pack(bool(value) if self.is_bool else value)
        except struct.error as e:
            raise CodecError(f"{value!r}: {e}") from None

    def decode(self, buf: bytes, off: int) -> tuple[Any, int]:
        return self.st.unpack_from(buf, off)[0], off + self.st.size


class Enum(Scalar):
    """An enum: its storage type; encodes ints or member names, decodes to int."""

    def __init__(self, edef: EnumDef, default: Any = None) -> None:
        super().__init__(edef.size_type)
        self.values = dict(edef.values)
        self.default = self._value(default) if default is not None else None

    def _value(self, value: Any) -> int:
        if isinstance(value, str):
            try:
                return self.values[value]
            except KeyError:
                raise CodecError(f"unknown enum member {value!r}") from None
        return int(value)

    def encode(self, value: Any, out: bytearray) -> None:
        super().encode(None if value is None else self._value(value), out)


class FixedBytes(Node):
    """``u8 x[N]`` and aliases of it: bytes, zero-padded on encode."""

    def __init__(self, n: int) -> None:
        self.size = n

    def encode(self, value: Any, out: bytearray) -> None:
        n = self.size
        assert n is not None
        if value is None:
            out += bytes(n)
            return
        try:
            data = bytes(value)
        except (TypeError, ValueError):
            raise CodecError(f"{value!r} is not bytes") from None
        if len(data) > n:
            raise CodecError(f"{len(data)} bytes do not fit in u8[{n}]")
        out += data.ljust(n, b"\x00")

    def decode(self, buf: bytes, off: int) -> tuple[Any, int]:
        n = self.size
        assert n is not None
        end = off + n
        if end > len(buf):
            raise CodecError("message truncated")
        return bytes(buf[off:end]), end


class FixedString(Node):
    """``string x[N]``: NUL-padded; at most N-1 characters, as VPP's C side needs the NUL."""

    def __init__(self, n: int) -> None:
        self.size = n

    def encode(self, value: Any, out: bytearray) -> None:
        n = self.size
        assert n is not None
        data = _str_bytes(value)
        if len(data) > n - 1:
            raise CodecError(f"string of {len(data)} bytes does not fit in string[{n}]")
        out += data.ljust(n, b"\x00")

    def decode(self, buf: bytes, off: int) -> tuple[Any, int]:
        n = self.size
        assert n is not None
        end = off + n
        if end > len(buf):
            raise CodecError("message truncated")
        raw = bytes(buf[off:end]).split(b"\x00", 1)[0]
        return raw.decode("utf-8", errors="replace"), end


class VarString(Node):
    """``string x[]``: u32 length, then the bytes (no NUL)."""

    def encode(self, value: Any, out: bytearray) -> None:
        data = _str_bytes(value)
        out += _U32.pack(len(data))
        out += data

    def decode(self, buf: bytes, off: int) -> tuple[Any, int]:
        (n,) = _U32.unpack_from(buf, off)
        start = off + 4
        end = start + n
        if end > len(buf):
            raise CodecError("message truncated")
        return bytes(buf[start:end]).decode("utf-8", errors="replace"), end


class FixedArray(Node):
    """``T x[N]`` for a T other than u8: a list of N (shorter lists are padded with zero elements)."""

    def __init__(self, elem: Node, n: int) -> None:
        self.elem = elem
        self.n = n
        self.size = None if elem.size is None else elem.size * n

    def encode(self, value: Any, out: bytearray) -> None:
        items = list(value) if value is not None else []
        if len(items) > self.n:
            raise CodecError(f"{len(items)} elements do not fit in [{self.n}]")
        items += [None] * (self.n - len(items))
        for item in items:
            self.elem.encode(item, out)

    def decode(self, buf: bytes, off: int) -> tuple[Any, int]:
        items = []
        for _ in range(self.n):
            item, off = self.elem.decode(buf, off)
            items.append(item)
        return items, off


class VarArray(Node):
    """``T x[count]``: elements only; the count lives in a sibling field."""

    def __init__(self, elem: Node, is_bytes: bool) -> None:
        self.elem = elem
        self.is_bytes = is_bytes

    def encode(self, value: Any, out: bytearray) -> None:
        if value is None:
            return
        if self.is_bytes:
            out += bytes(value)
            return
        for item in value:
            self.elem.encode(item, out)

    def decode_n(self, buf: bytes, off: int, n: int) -> tuple[Any, int]:
        if self.is_bytes:
            end = off + n
            if end > len(buf):
                raise CodecError("message truncated")
            return bytes(buf[off:end]), end
        items = []
        for _ in range(n):
            item, off = self.elem.decode(buf, off)
            items.append(item)
        return items, off


#: Element types whose counted arrays decode lazily (see :class:`WireElements`).
WIRE_FORM_ELEMENTS = frozenset({"npol_ipset_member", "npol_policy_item"})


class WireElements(Sequence[Any]):
    """A counted array's elements, kept in wire form.

    Reading an element (by index, slice or iteration) decodes it as the array's element node
    would; `data` and `size` let a handler parse the bytes itself.  Equal to any sequence of the
    same decoded elements.
    """

    __slots__ = ("data", "elem", "size")

    def __init__(self, elem: Node, data: bytes, size: int) -> None:
        self.elem = elem
        self.data = data
        self.size = size

    def __len__(self) -> int:
        return len(self.data) // self.size

    def __getitem__(self, index: Any) -> Any:
        n = len(self)
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(n))]
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("element index out of range")
        return self.elem.decode(self.data, index * self.size)[0]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"WireElements({list(self)!r})"


class WireVarArray(VarArray):
    """A counted array of fixed-size elements that decodes to :class:`WireElements`."""

    def decode_n(self, buf: bytes, off: int, n: int) -> tuple[Any, int]:
        size = self.elem.size
        assert size is not None
        end = off + n * size
        if end > len(buf):
            raise CodecError("message truncated")
        return WireElements(self.elem, bytes(buf[off:end]), size), end


class LegacyVarArray(VarArray):
    """VPP's old count-less ``T x[0]``: the elements run to the end of the message."""

    def decode(self, buf: bytes, off: int) -> tuple[Any, int]:
        size = self.elem.size or 1
        return self.decode_n(buf, off, (len(buf) - off) // size)


#: The kinds of step of a struct's encoding plan (see :meth:`Struct._compile_encode`).
_RUN, _FIELD, _COUNTED = 0, 1, 2


def _scalar_of(node: Node) -> Scalar | None:
    """The scalar (or enum) behind ``node`` when encoding it is just packing that scalar."""
    if isinstance(node, Alias) and node.convert is None:
        node = node.target
    return node if isinstance(node, Scalar) and not node.is_float else None


class Struct(Node):
    """A struct or message: a dict of its fields.

    Both directions follow plans made once per struct.  Decoding runs a function generated for
    it (:func:`_struct_decoder`): each run of fixed-size fields, nested structs and fixed arrays
    included, is read with one ``unpack_from`` and the dicts are built from the values.  Encoding
    packs each run of plain scalars with one ``pack``; a value ``pack`` refuses (an enum given by
    name, a bad value) sends the run through the fields' own encoders, which convert it or raise
    the error.
    """

    def __init__(self, name: str, fields: list[tuple[str, Node, str | None]]) -> None:
        self.name = name
        self.fields = fields
        self.names = frozenset(f[0] for f in fields)
        #: count field -> the variable array it counts
        self.counted: dict[str, str] = {lf: fname for fname, _, lf in fields if lf is not None}
        sizes = [node.size for _, node, lf in fields]
        fixed = all(s is not None for s in sizes) and not self.counted
        self.size = sum(s for s in sizes if s is not None) if fixed else None
        self.convert: Callable[[Any], Any] | None = None
        self._dec: Callable[[bytes, int], tuple[Any, int]] | None = None
        self._encode_plan: list[tuple[Any, ...]] | None = None

    # -- plans -------------------------------------------------------------------------------------

    def _compile_encode(self) -> list[tuple[Any, ...]]:
        plan: list[tuple[Any, ...]] = []
        run: list[tuple[str, Scalar, Node]] = []

        def close_run() -> None:
            if run:
                plan.append((_RUN, _run_packer(run), tuple((n, nd) for n, _, nd in run), None))
                run.clear()

        for fname, node, _ in self.fields:
            array = self.counted.get(fname)
            scalar = _scalar_of(node) if array is None else None
            if scalar is not None:
                run.append((fname, scalar, node))
                continue
            close_run()
            plan.append((_COUNTED, fname, node, array) if array is not None else (_FIELD, fname, node, None))
        close_run()
        return plan

    # -- encoding ----------------------------------------------------------------------------------

    def encode(self, value: Any, out: bytearray) -> None:
        if type(value) is not dict:
            if value is not None and not isinstance(value, Mapping) and self.convert is not None:
                value = self.convert(value)
            if value is None:
                value = {}
            elif not isinstance(value, Mapping):
                raise CodecError(f"{self.name}: expected a dict, got {type(value).__name__}")
        if not value.keys() <= self.names:
            raise CodecError(f"{self.name}: unknown field(s) {sorted(set(value) - self.names)}")
        plan = self._encode_plan
        if plan is None:
            plan = self._encode_plan = self._compile_encode()
        get = value.get
        for kind, a, b, c in plan:
            if kind == _RUN:
                try:
                    out += a(get)
                except struct.error:  # let each field convert its value, or say what is wrong
                    for fname, node in b:
                        self._encode_field(fname, node, get(fname), out)
                continue
            v = get(a)
            if kind == _COUNTED:
                items = get(c)
                n = 0 if items is None else len(items)
                if v is None:
                    v = n
                elif v != n:
                    raise CodecError(f"{self.name}.{a} is {v} but {c} has {n} element(s)")
            self._encode_field(a, b, v, out)

    def _encode_field(self, fname: str, node: Node, v: Any, out: bytearray) -> None:
        try:
            node.encode(v, out)
        except CodecError as e:
            raise CodecError(f"{self.name}.{fname}: {e}") from None

    # -- decoding ----------------------------------------------------------------------------------

    def decode(self, buf: bytes, off: int) -> tuple[Any, int]:
        dec = self._dec
        if dec is None:
            dec = self._dec = _struct_decoder(self)
        try:
            return dec(buf, off)
        except struct.error:
            raise CodecError(f"{self.name}: message truncated") from None


class Union(Node):
    """A union: as many bytes as its largest member; decodes every member from the same bytes."""

    def __init__(self, name: str, members: list[tuple[str, Node]]) -> None:
        self.name = name
        self.members = dict(members)
        sizes = [node.size for _, node in members]
        if any(s is None for s in sizes):
            raise ValueError(f"union {name} has a variable-size member")
        self.size = max(s for s in sizes if s is not None)
        self.convert: Callable[[Any], Any] | None = None
        self._from_raw: Callable[[bytes], dict[str, Any]] | None = None

    def encode(self, value: Any, out: bytearray) -> None:
        size = self.size
        assert size is not None
        start = len(out)
        if self.convert is not None and value is not None and not isinstance(value, Mapping):
            value = self.convert(value)
        if isinstance(value, bytes | bytearray):
            if len(value) > size:
                raise CodecError(f"{self.name}: {len(value)} bytes do not fit in {size}")
            out += bytes(value)
        elif value:
            if not isinstance(value, Mapping):
                raise CodecError(f"{self.name}: expected a dict naming one member")
            unknown = set(value) - set(self.members)
            if unknown:
                raise CodecError(f"{self.name}: unknown member(s) {sorted(unknown)}")
            present = [k for k in self.members if k in value and value[k] is not None]
            if present:
                key = max(present, key=lambda k: self.members[k].size or 0)
                self.members[key].encode(value[key], out)
        out += bytes(size - (len(out) - start))

    def decode(self, buf: bytes, off: int) -> tuple[Any, int]:
        size = self.size
        assert size is not None
        end = off + size
        if end > len(buf):
            raise CodecError(f"{self.name}: message truncated")
        return self.from_raw(bytes(buf[off:end])), end

    def from_raw(self, raw: bytes) -> dict[str, Any]:
        """Every member decoded from the union's ``size`` bytes."""
        dec = self._from_raw
        if dec is None:
            dec = self._from_raw = _union_decoder(self)
        return dec(raw)


class Alias(Node):
    """An alias with a value converter (ipaddress objects, MAC strings) in front of its target."""

    def __init__(self, target: Node, convert: Callable[[Any], Any] | None) -> None:
        self.target = target
        self.convert = convert
        self.size = target.size

    def encode(self, value: Any, out: bytearray) -> None:
        if self.convert is not None and value is not None and not isinstance(value, bytes | Mapping):
            value = self.convert(value)
        self.target.encode(value, out)

    def decode(self, buf: bytes, off: int) -> tuple[Any, int]:
        return self.target.decode(buf, off)


# --------------------------------------------------------------------------------------------------
# Generated decoders
# --------------------------------------------------------------------------------------------------

#: Past this many values, a fixed array is read as bytes and decoded element by element.
_MAX_FLAT_VALUES = 64
_F64 = struct.Struct("=d")


def _fixed_str(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace")


class _Source:
    """A generated function (named ``_fn``) and the objects it refers to, by the names it uses."""

    def __init__(self) -> None:
        self.env: dict[str, Any] = {}

    def ref(self, obj: Any) -> str:
        name = f"_o{len(self.env)}"
        self.env[name] = obj
        return name

    def function(self, lines: list[str]) -> Any:
        exec("\n".join(lines), self.env)  # our own code, built from the definitions
        return self.env["_fn"]


#: A value's expression, built from the expressions of the struct values it takes (in order).
_Template = Callable[[Iterator[str]], str]


def _flat(node: Node, src: _Source) -> tuple[str, int, _Template] | None:
    """How ``node`` reads as part of one ``unpack_from``: its format, how many values it takes,
    and its value's expression; None for a variable-size node."""
    if isinstance(node, Alias):
        return _flat(node.target, src)
    if isinstance(node, Scalar):
        if node.is_float:
            f64 = src.ref(_F64.unpack)
            return "8s", 1, lambda it: f"{f64}({next(it)})[0]"
        return node.st.format[1:], 1, lambda it: next(it)
    if isinstance(node, FixedBytes):
        return f"{node.size}s", 1, lambda it: next(it)
    if isinstance(node, FixedString):
        fs = src.ref(_fixed_str)
        return f"{node.size}s", 1, lambda it: f"{fs}({next(it)})"
    if isinstance(node, Union):
        dec = src.ref(node.from_raw)
        return f"{node.size}s", 1, lambda it: f"{dec}({next(it)})"
    if isinstance(node, Struct) and node.size is not None:
        parts = [(fname, _flat(child, src)) for fname, child, _ in node.fields]
        if any(p is None for _, p in parts):
            return None
        fields = [(fname, p) for fname, p in parts if p is not None]
        count = sum(p[1] for _, p in fields)
        if count > _MAX_FLAT_VALUES:
            dec = src.ref(node.decode)
            return f"{node.size}s", 1, lambda it: f"{dec}({next(it)}, 0)[0]"

        def struct_expr(it: Iterator[str]) -> str:
            return "{" + ", ".join(f"{fname!r}: {p[2](it)}" for fname, p in fields) + "}"

        return "".join(p[0] for _, p in fields), count, struct_expr
    if isinstance(node, FixedArray) and node.size is not None:
        elem = _flat(node.elem, src)
        if elem is None or elem[1] * node.n > _MAX_FLAT_VALUES:
            dec = src.ref(node.decode)
            return f"{node.size}s", 1, lambda it: f"{dec}({next(it)}, 0)[0]"
        elem_t, n = elem[2], node.n
        return elem[0] * n, elem[1] * n, lambda it: "[" + ", ".join(elem_t(it) for _ in range(n)) + "]"
    return None


def _run_packer(run: list[tuple[str, Scalar, Node]]) -> Callable[[Callable[..., Any]], bytes]:
    """``pack(get) -> bytes`` of a run of scalar fields, ``get`` being the value's ``dict.get``
    (a missing field packs as its default; a None makes ``pack`` fail, and the caller then
    encodes the run field by field)."""
    src = _Source()
    st = struct.Struct(">" + "".join(sc.st.format[1:] for _, sc, _ in run))
    fills = [sc.default if sc.default is not None else 0 for _, sc, _ in run]
    args = ", ".join(f"get({n!r}, {src.ref(fill)})" for (n, _, _), fill in zip(run, fills, strict=True))
    fn: Callable[[Callable[..., Any]], bytes] = src.function(
        ["def _fn(get):", f"    return {src.ref(st.pack)}({args})"]
    )
    return fn


def _struct_decoder(node: Struct) -> Callable[[bytes, int], tuple[Any, int]]:
    """``decode(buf, off) -> (dict, off)`` for ``node``, as straight-line code."""
    src = _Source()
    lines = ["def _fn(buf, off):"]
    have_dict = False
    run: list[tuple[str, tuple[str, int, _Template]]] = []

    def close_run() -> None:
        nonlocal have_dict
        if not run:
            return
        st = struct.Struct(">" + "".join(p[0] for _, p in run))
        lines.append(f"    v = {src.ref(st)}.unpack_from(buf, off)")
        values = iter([f"v[{i}]" for i in range(sum(p[1] for _, p in run))])
        exprs = [(fname, p[2](values)) for fname, p in run]
        if have_dict:
            lines.extend(f"    r[{fname!r}] = {expr}" for fname, expr in exprs)
        else:
            lines.append("    r = {" + ", ".join(f"{fname!r}: {expr}" for fname, expr in exprs) + "}")
            have_dict = True
        lines.append(f"    off += {st.size}")
        run.clear()

    for fname, child, lf in node.fields:
        flat = _flat(child, src) if lf is None else None
        if flat is not None:
            run.append((fname, flat))
            continue
        close_run()
        if not have_dict:
            lines.append("    r = {}")
            have_dict = True
        if lf is not None:
            assert isinstance(child, VarArray)
            lines.append(f"    r[{fname!r}], off = {src.ref(child.decode_n)}(buf, off, int(r[{lf!r}]))")
        else:
            lines.append(f"    r[{fname!r}], off = {src.ref(child.decode)}(buf, off)")
    close_run()
    if not have_dict:
        lines.append("    r = {}")
    lines.append("    return r, off")
    fn: Callable[[bytes, int], tuple[Any, int]] = src.function(lines)
    return fn


def _union_decoder(node: Union) -> Callable[[bytes], dict[str, Any]]:
    """``decode(raw) -> dict`` of every member of ``node`` from its bytes, as straight-line code."""
    src = _Source()
    lines = ["def _fn(raw):"]
    exprs: list[tuple[str, str]] = []
    for k, (name, member) in enumerate(node.members.items()):
        flat = _flat(member, src)
        assert flat is not None  # members are fixed-size
        fmt, count, template = flat
        if fmt.endswith("s") and fmt[:-1].isdigit() and isinstance(_bare(member), FixedBytes):
            exprs.append((name, f"raw[:{fmt[:-1]}]"))
            continue
        st = struct.Struct(">" + fmt)
        lines.append(f"    m{k} = {src.ref(st)}.unpack_from(raw, 0)")
        exprs.append((name, template(iter([f"m{k}[{i}]" for i in range(count)]))))
    lines.append("    return {" + ", ".join(f"{name!r}: {expr}" for name, expr in exprs) + "}")
    fn: Callable[[bytes], dict[str, Any]] = src.function(lines)
    return fn


def _bare(node: Node) -> Node:
    return _bare(node.target) if isinstance(node, Alias) else node


# --------------------------------------------------------------------------------------------------
# Conversions between ipaddress objects and VPP's address types, for handlers and for encoding
# --------------------------------------------------------------------------------------------------


def ip_to_address(ip: IPAddress | str) -> dict[str, Any]:
    """``vl_api_address_t`` of an IP address."""
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if addr.version == 4:
        return {"af": ADDRESS_IP4, "un": {"ip4": addr.packed}}
    return {"af": ADDRESS_IP6, "un": {"ip6": addr.packed}}


def address_to_ip(address: Mapping[str, Any]) -> IPAddress:
    """The IP address in a decoded ``vl_api_address_t``."""
    un = address["un"]
    if address["af"] == ADDRESS_IP6:
        return ipaddress.IPv6Address(bytes(_member(un, "ip6"))[:16].ljust(16, b"\x00"))
    return ipaddress.IPv4Address(bytes(_member(un, "ip4"))[:4].ljust(4, b"\x00"))


def network_to_prefix(net: IPNetwork | IPInterface | str) -> dict[str, Any]:
    """``vl_api_prefix_t`` of a network, or of an interface address (host bits kept)."""
    if isinstance(net, str):
        net = ipaddress.ip_interface(net)
    if isinstance(net, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return {"address": ip_to_address(net.ip), "len": net.network.prefixlen}
    return {"address": ip_to_address(net.network_address), "len": net.prefixlen}


def prefix_to_network(prefix: Mapping[str, Any]) -> IPNetwork:
    """The network of a decoded ``vl_api_prefix_t`` (host bits dropped)."""
    return ipaddress.ip_network(f"{address_to_ip(prefix['address'])}/{prefix['len']}", strict=False)


def prefix_to_interface(prefix: Mapping[str, Any]) -> IPInterface:
    """A decoded ``vl_api_prefix_t`` as an interface address (host bits kept)."""
    return ipaddress.ip_interface(f"{address_to_ip(prefix['address'])}/{prefix['len']}")


def mac_to_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def str_to_mac(mac: str) -> bytes:
    parts = mac.replace("-", ":").split(":")
    if len(parts) != 6:
        raise CodecError(f"bad MAC address {mac!r}")
    return bytes(int(p, 16) for p in parts)


def _member(union: Any, name: str) -> Any:
    return union[name] if isinstance(union, Mapping) else union


def _ip_bytes(version: int) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, str | ipaddress.IPv4Address | ipaddress.IPv6Address):
            addr = ipaddress.ip_address(value) if isinstance(value, str) else value
            if addr.version != version:
                raise CodecError(f"{value} is not an IPv{version} address")
            return addr.packed
        return value

    return convert


def _to_address(value: Any) -> Any:
    if isinstance(value, str | ipaddress.IPv4Address | ipaddress.IPv6Address):
        return ip_to_address(value)
    return value


def _to_address_union(value: Any) -> Any:
    if isinstance(value, str | ipaddress.IPv4Address | ipaddress.IPv6Address):
        return ip_to_address(value)["un"]
    return value


def _to_prefix(value: Any) -> Any:
    if isinstance(value, str | ipaddress.IPv4Network | ipaddress.IPv6Network | IPInterface):
        return network_to_prefix(value)
    return value


def _to_ip_prefix(version: int) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, str):
            value = ipaddress.ip_interface(value)
        if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
            if value.version != version:
                raise CodecError(f"{value} is not an IPv{version} prefix")
            return {"address": value.network_address.packed, "len": value.prefixlen}
        if isinstance(value, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
            if value.version != version:
                raise CodecError(f"{value} is not an IPv{version} prefix")
            return {"address": value.ip.packed, "len": value.network.prefixlen}
        return value

    return convert


def _to_mac(value: Any) -> Any:
    return str_to_mac(value) if isinstance(value, str) else value


#: Converters applied (on encode) to values of these types that are not already dicts or bytes.
CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "ip4_address": _ip_bytes(4),
    "ip6_address": _ip_bytes(6),
    "address": _to_address,
    "address_union": _to_address_union,
    "prefix": _to_prefix,
    "address_with_prefix": _to_prefix,
    "ip4_prefix": _to_ip_prefix(4),
    "ip6_prefix": _to_ip_prefix(6),
    "ip4_address_with_prefix": _to_ip_prefix(4),
    "ip6_address_with_prefix": _to_ip_prefix(6),
    "mac_address": _to_mac,
}


def _str_bytes(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return str(value).encode("utf-8")


def _default_value(default: Any, type_name: str) -> Any:
    if type_name == "bool" and isinstance(default, str):
        return default.lower() == "true"
    return default


# --------------------------------------------------------------------------------------------------
# The codec
# --------------------------------------------------------------------------------------------------


class Codec:
    """Builds a node tree per type and message from :class:`ApiDefs`, then packs and unpacks."""

    def __init__(self, defs: ApiDefs | None = None) -> None:
        self.defs = defs if defs is not None else api_defs()
        self._types: dict[str, Node] = {}
        self._messages: dict[str, Struct] = {}

    # -- building --------------------------------------------------------------------------------

    def _type_node(self, type_name: str) -> Node:
        """The node of a named (bare) type, built once."""
        node = self._types.get(type_name)
        if node is not None:
            return node
        tdef = self.defs.type(type_name)
        if isinstance(tdef, EnumDef):
            node = Enum(tdef)
        elif isinstance(tdef, AliasDef):
            if tdef.length is None:
                target = self._field_node(FieldDef(tdef.type, tdef.name))
            else:
                target = self._field_node(FieldDef(tdef.type, tdef.name, tdef.length))
            node = Alias(target, CONVERTERS.get(type_name))
        elif tdef.is_union:
            node = Union(tdef.name, [(f.name, self._field_node(f)) for f in tdef.fields])
            node.convert = CONVERTERS.get(type_name)
        else:
            node = self._struct(tdef.name, tdef.fields)
            node.convert = CONVERTERS.get(type_name)
        self._types[type_name] = node
        return node

    def _struct(self, name: str, fields: tuple[FieldDef, ...]) -> Struct:
        return Struct(name, [(f.name, self._field_node(f), f.length_field) for f in fields])

    def _field_node(self, f: FieldDef) -> Node:
        default = f.options.get("default")
        base = f.type if f.type in BASE_TYPES else None
        if f.length is None:
            if base == "string":
                return VarString()
            if base is not None:
                return Scalar(base, default)
            node = self._type_node(f.type_name)
            return node if default is None else _with_default(node, default)
        if base == "string":
            return FixedString(f.length) if f.length else VarString()
        if base == "u8" and f.length:
            return FixedBytes(f.length)
        elem = Scalar(base) if base is not None else self._type_node(f.type_name)
        if f.length:
            return FixedArray(elem, f.length)
        if f.length_field is None:
            return LegacyVarArray(elem, base == "u8")
        if f.type_name in WIRE_FORM_ELEMENTS and elem.size:
            return WireVarArray(elem, False)
        return VarArray(elem, base == "u8")

    def message(self, name: str) -> Struct:
        """The node of a message (``_vl_msg_id`` included)."""
        node = self._messages.get(name)
        if node is None:
            mdef: MessageDef = self.defs.messages[name]
            node = self._struct(name, mdef.fields)
            self._messages[name] = node
        return node

    # -- packing ---------------------------------------------------------------------------------

    def encode(self, name: str, fields: Mapping[str, Any], msg_id: int | None = None) -> bytes:
        """Pack message ``name``; ``msg_id``, if given, overrides ``fields['_vl_msg_id']``."""
        if msg_id is not None:
            fields = {**fields, "_vl_msg_id": msg_id}
        out = bytearray()
        self.message(name).encode(fields, out)
        return bytes(out)

    def decode(self, name: str, data: bytes) -> dict[str, Any]:
        """Unpack message ``name`` (trailing bytes are ignored, as VPP does)."""
        value, _ = self.message(name).decode(data if type(data) is bytes else bytes(data), 0)
        result: dict[str, Any] = value
        return result

    def encode_type(self, type_name: str, value: Any) -> bytes:
        """Pack a value of a named type (``prefix``, ``vl_api_fib_path_t``...)."""
        out = bytearray()
        self._type_node(self.defs.type(type_name).name).encode(value, out)
        return bytes(out)

    def decode_type(self, type_name: str, data: bytes) -> tuple[Any, int]:
        """Unpack a value of a named type; returns it and the bytes consumed."""
        return self._type_node(self.defs.type(type_name).name).decode(data, 0)

    @staticmethod
    def msg_id(data: bytes) -> int:
        """The message id: the first u16 of every message."""
        if len(data) < 2:
            raise CodecError("message shorter than its id")
        return int(_MSG_ID.unpack_from(data, 0)[0])


def _with_default(node: Node, default: Any) -> Node:
    """A copy of an enum or scalar node (or an alias of one) whose missing value encodes as ``default``."""
    if isinstance(node, Alias):
        return Alias(_with_default(node.target, default), node.convert)
    if isinstance(node, Enum):
        clone = Enum.__new__(Enum)
        clone.__dict__.update(node.__dict__)
        clone.default = clone._value(default)
        return clone
    if isinstance(node, Scalar):
        clone_s = Scalar.__new__(Scalar)
        clone_s.__dict__.update(node.__dict__)
        clone_s.default = _default_value(default, "bool" if node.is_bool else "")
        return clone_s
    raise ValueError(f"a default ({default!r}) on a field of a composite type")
