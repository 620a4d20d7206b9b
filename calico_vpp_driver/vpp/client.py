"""The VPP API client: the only module of the driver that imports vpp_papi.

What it does
------------
* Connects to VPP's API socket (``Config.vpp_api_socket``) with ``bootstrapapi=True``, so the
  message definitions always come from the running VPP. While VPP is not up yet it retries with
  exponential backoff, bounded by ``connect_timeout``, logging why each attempt failed.
* Right after every connect, checks that every message the configured features need exists
  (:data:`FEATURES`: feature -> message -> plugin) and fails with one
  :class:`~.errors.MissingMessagesError` naming each missing message and its plugin.
* Checks every reply's ``retval`` in one place (vpp_papi never does) and raises
  :class:`~.errors.VppApiError` naming the message, VPP's error name and the driver object the
  caller said the message was about (``obj=``).
* Pipelines: :meth:`VppClient.batch` keeps up to ``max_in_flight`` requests outstanding, matches
  replies by context, and returns one :class:`Result` per request in request order; one failed
  request never loses the others. :meth:`VppClient.call` and :meth:`VppClient.dump` are the
  synchronous forms.
* Encodes values for vpp_papi: ``ipaddress`` objects for addresses and prefixes, enums as ints,
  variable-length array counts filled in from the list, fixed arrays of structs padded (the
  ``label_stack[16]`` trap of ``ip_route_add_del``), unknown field names rejected instead of
  silently packed as zeros.
* Detects a lost connection (socket closed, or no reply for ``read_timeout`` while requests are
  outstanding), reconnects, and detects a VPP restart (see below).

Threading: one owner thread
---------------------------
vpp_papi is not thread-safe, and pipelining needs one place that knows every outstanding
context. So a single owner thread ("vpp-client") holds the connection; every public method
packages its work as a job, hands it to the owner through one queue and waits for the result.
(A lock around vpp_papi would serialise callers just as well, but then nobody would notice a
dead VPP while the driver is idle, and reconnecting would happen on whichever caller thread
came next, in the middle of its own work. The owner thread watches the connection all the
time, reconnects on its own, and fires ``on_vpp_restart`` promptly.) A reader thread per
connection decodes what VPP sends and drops it into the same queue, so the owner waits on one
thing. Thread safety is by confinement: only the owner touches the connection's state, other
threads only put jobs into the queue (and read published facts such as ``generation``).
Jobs from several threads are interleaved request by request (round robin), so a call from the
CNI server is not stuck behind a 20,000-request batch from the apply loop. Calls made from the
owner thread itself (from a callback) run inline.

VPP restarts and object indexes
-------------------------------
VPP objects (sw_if_index, npol set/rule/policy ids, ACL indexes) are indexes into VPP's memory:
after a VPP restart they are gone or, worse, reused for different objects. To tell a restart
from a mere reconnect, the client keeps a *sentinel*: a loopback interface tagged
``cvd-vpp-instance:<random id>``, created on the first connection to a VPP that has none, and
looked up by tag on every connect. A different (or no) sentinel means VPP's state is gone. (The
vpe pid alone is not reliable: VPP in a container restarts with the same pid.) The id is
exposed as :attr:`VppClient.instance_id` so that the dataplane layer can store it next to any
persisted map of VPP objects and discard that map when it differs (npol has no dump API).

Each VPP instance seen by this client has a *generation* (1, 2, ...). Every job carries the
generation it was submitted for (the current one, or ``_generation=`` / ``generation=`` given by
the caller); a job for an older generation is never sent and fails with
:class:`~.errors.VppRestartedError`. ``on_vpp_restart(info)`` is called in the owner thread once
the new VPP is connected and checked, before any queued job runs.

How the dataplane layer is meant to use it: read ``client.generation`` at the start of an apply
pass and pass it on every call of that pass; in ``on_vpp_restart`` only drop the maps of VPP
indexes and mark "full reprogram needed" (then return: it runs in the owner thread, and every
call it would make is serialised with all other traffic); the apply loop then sees the flag,
or gets ``VppRestartedError`` for its stale calls, and reprograms everything from the model
under the new generation. Requests that were in flight when the connection broke fail with
:class:`~.errors.VppConnectionLost` (``sent=True``: VPP may or may not have executed them);
requests not sent yet wait for the next connection and then go through the generation check
(sent if VPP merely reconnected, refused if it restarted). While VPP stays unreachable for
longer than ``connect_timeout``, requests fail at once with ``VppConnectionError``.

Events (messages without a context, e.g. ``sw_interface_event``) go to ``on_event(name, msg)``
in the owner thread; subscriptions (``want_interface_events``) are per connection, so renew them
in ``on_connected``.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import dataclasses
import logging
import queue
import socket
import struct
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import structlog
from vpp_papi import VPPApiClient
from vpp_papi import vpp_format as _fmt
from vpp_papi import vpp_serializer as _ser

from ..config import Config
from .errors import (
    MissingMessage,
    MissingMessagesError,
    VppApiError,
    VppClientClosed,
    VppConnectionError,
    VppConnectionLost,
    VppEncodeError,
    VppError,
    VppRestartedError,
    VppTimeoutError,
)

log = structlog.get_logger("calico_vpp_driver.vpp")

# --------------------------------------------------------------------------------------------
# Features -> the messages they need -> the plugin (or core API module) each belongs to

_CORE_MEMCLNT = "core (vlibmemory memclnt.api)"
_CORE_VPE = "core (vpe.api)"
_CORE_IF = "core (vnet interface.api)"
_CORE_IP = "core (vnet ip.api)"
_NPOL = "npol_plugin.so"
_ACL = "acl_plugin.so"
_CNAT = "cnat_plugin.so"

#: Every feature the driver may use: message -> plugin that provides it. "core" is always
#: required (the connection check and the restart sentinel use it).
FEATURES: Mapping[str, Mapping[str, str]] = {
    "core": {
        "control_ping": _CORE_MEMCLNT,
        "show_version": _CORE_VPE,
        "sw_interface_dump": _CORE_IF,
        "create_loopback": _CORE_IF,
        "sw_interface_tag_add_del": _CORE_IF,
    },
    "interfaces": {
        "sw_interface_dump": _CORE_IF,
        "sw_interface_set_flags": _CORE_IF,
        "sw_interface_add_del_address": _CORE_IF,
        "sw_interface_set_table": _CORE_IF,
        "sw_interface_set_unnumbered": _CORE_IF,
        "sw_interface_set_mtu": _CORE_IF,
        "sw_interface_ip6_enable_disable": _CORE_IP,
        "sw_interface_tag_add_del": _CORE_IF,
        "want_interface_events": _CORE_IF,
        "create_loopback": _CORE_IF,
        "delete_loopback": _CORE_IF,
    },
    "npol": {
        "npol_ipset_create": _NPOL,
        "npol_ipset_add_del_members": _NPOL,
        "npol_ipset_delete": _NPOL,
        "npol_rule_create": _NPOL,
        "npol_rule_update": _NPOL,
        "npol_rule_delete": _NPOL,
        "npol_policy_create": _NPOL,
        "npol_policy_update": _NPOL,
        "npol_policy_delete": _NPOL,
        "npol_configure_policies": _NPOL,
        # npol only sees packets where cnat's feature is enabled (it runs as a cnat hook).
        "feature_cnat_enable_disable": _CNAT,
    },
    "acl": {
        "acl_add_replace": _ACL,
        "acl_del": _ACL,
        "acl_dump": _ACL,
        "acl_interface_set_acl_list": _ACL,
    },
    "cnat": {
        "cnat_translation_update": _CNAT,
        "cnat_translation_del": _CNAT,
        "cnat_translation_dump": _CNAT,
        "cnat_set_snat_addresses_v2": _CNAT,
        "cnat_set_snat_policy": _CNAT,
        "cnat_snat_policy_add_del_exclude_pfx": _CNAT,
        "cnat_snat_policy_add_del_if": _CNAT,
        "cnat_session_purge": _CNAT,
        "cnat_session_dump": _CNAT,
        "cnat_snat_addresses_dump": _CNAT,
        "feature_cnat_enable_disable": _CNAT,
    },
    "fib": {
        "ip_table_add_del": _CORE_IP,
        "ip_route_add_del": _CORE_IP,
        "ip_route_dump": _CORE_IP,
        "ip_table_replace_begin": _CORE_IP,
        "ip_table_replace_end": _CORE_IP,
    },
    "tunnels": {
        "vxlan_add_del_tunnel_v3": "vxlan_plugin.so",
        "ipip_add_tunnel": "ipip_plugin.so",
        "ipip_del_tunnel": "ipip_plugin.so",
        "add_node_next": "core (vlib.api)",
    },
    "urpf": {"urpf_update": "urpf_plugin.so"},
    "tap": {"tap_create_v3": "tap_plugin.so", "tap_delete_v2": "tap_plugin.so"},
    "af_packet": {"af_packet_create_v3": "af_packet_plugin.so", "af_packet_delete": "af_packet_plugin.so"},
}


def features_for_config(cfg: Config) -> tuple[str, ...]:
    """The features the driver needs for ``cfg`` (checked on every connect).

    Interfaces, routes and af_packet (the pod attachment that works everywhere) always; the
    policy backend when one is forced (with ``auto`` the dataplane picks the backend after
    connecting, with :meth:`VppClient.supports`); tunnels when VXLAN or IP-in-IP is enabled.
    tap, urpf and cnat stay optional: probe them with :meth:`VppClient.supports`.
    """
    out = ["interfaces", "fib", "af_packet"]
    if cfg.vpp_policy_backend in ("npol", "acl"):
        out.append(cfg.vpp_policy_backend)
    if cfg.vxlan_enabled or cfg.ipip_enabled:
        out.append("tunnels")
    return tuple(out)


def missing_messages(features: Iterable[str], present: Callable[[str], bool]) -> list[MissingMessage]:
    """The messages of ``features`` for which ``present(name)`` is false, each once, with its
    plugin and every feature (of those asked) that needs it."""
    needed: dict[str, tuple[str, list[str]]] = {}
    for feature in features:
        try:
            table = FEATURES[feature]
        except KeyError:
            raise ValueError(f"unknown VPP feature {feature!r} (known: {', '.join(FEATURES)})") from None
        for message, plugin in table.items():
            needed.setdefault(message, (plugin, []))[1].append(feature)
    return [
        MissingMessage(message, plugin, tuple(feats))
        for message, (plugin, feats) in needed.items()
        if not present(message)
    ]


# --------------------------------------------------------------------------------------------
# Results and connection facts


class Request(NamedTuple):
    """One request of a batch: message name, its fields, and the driver object it concerns."""

    message: str
    fields: Mapping[str, Any]
    obj: str | None = None


class WireArray(NamedTuple):
    """A variable-length array field given in VPP's wire form: `elements` elements of type
    `type_name` (as the API definitions name it, e.g. ``vl_api_npol_ipset_member_t``) packed back
    to back in `data`. For bulk messages whose elements the caller packs far faster than the
    per-element dicts it would otherwise pass; the client checks the type and the size against
    the API it loaded, so an API whose element changed is refused, never sent garbled."""

    type_name: str
    elements: int
    data: bytes

    def __repr__(self) -> str:
        return f"WireArray({self.type_name}, {self.elements} elements)"


class Result(NamedTuple):
    """The outcome of one request: the decoded reply (a list of details for a dump) or the
    error (``VppApiError`` for a non-zero retval, ``VppEncodeError``, ``VppConnectionLost``...)."""

    message: str
    obj: str | None
    reply: Any
    error: VppError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> Any:
        """The reply, or raise the error."""
        if self.error is not None:
            raise self.error
        return self.reply


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """What the client learnt on a successful connect."""

    socket_path: str
    instance_id: str
    generation: int
    restarted: bool  # VPP's state is gone since the previous connection of this client
    previous_instance_id: str | None
    vpe_pid: int
    version: str
    sentinel_sw_if_index: int | None = None  # the sentinel loopback (None: no sentinel kept)


class Service(NamedTuple):
    """How VPP answers a request: the message that ends the answer, the details message of a
    dump (None for a single reply), and whether a control_ping must follow (old-style dumps)."""

    terminator: str
    details: str | None
    ping: bool


# --------------------------------------------------------------------------------------------
# Transport: the vpp_papi connection (or, in unit tests, a fake)

OnMessages = Callable[[list[tuple[str, Any]]], None]


class Connection(Protocol):
    """One connected session. ``on_messages([(name, msg), ...])`` (given to
    ``Transport.connect``) is called, from any thread, with the messages VPP sent, in order."""

    def has_message(self, name: str) -> bool: ...

    def service(self, name: str) -> Service | None: ...

    def encode(self, name: str, context: int, fields: Mapping[str, Any]) -> bytes:
        """The framed request; raises ``VppEncodeError``."""
        ...

    def send(self, frames: Sequence[bytes]) -> None:
        """Write the frames in order; raises ``OSError`` when the connection is gone."""
        ...

    def alive(self) -> bool: ...

    def close(self, graceful: bool) -> None: ...


class Transport(Protocol):
    def connect(
        self, socket_path: str, client_name: str, read_timeout: float, on_messages: OnMessages
    ) -> Connection: ...


_FRAME = struct.Struct(">QII")  # the socket transport's frame header: 0, length, 0
_RESERVED = frozenset(("_vl_msg_id", "client_index", "context"))
_EAGAIN = -165  # VNET_ERR_EAGAIN: "retry stream call with cursor"


class _Plan(NamedTuple):
    known: frozenset[str]
    steps: tuple[tuple[Any, ...], ...]
    needs_default: bool


_PLANS: dict[Any, _Plan] = {}
_DEFAULTS: dict[Any, Any] = {}


class _Bad(Exception):
    """An encoding problem found while normalising fields; ``where`` is the field path,
    innermost last (filled in while the exception travels up)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.where: list[str] = []

    def __str__(self) -> str:
        return f"{''.join(reversed(self.where)).lstrip('.')}: {self.detail}" if self.where else self.detail


def _structlike(p: Any) -> Any:
    """The VPPType (struct) behind packer ``p`` (directly or through an alias), else None."""
    if isinstance(p, _ser.VPPType):
        return p
    if isinstance(p, _ser.VPPTypeAlias) and isinstance(p.packer, _ser.VPPType):
        return p.packer
    return None


def _conv(*type_names: str | None) -> frozenset[str]:
    """Names of the Python types vpp_papi converts itself into these VPP types
    (``IPv4Network`` for ``vl_api_prefix_t``, ``str`` for most address types...)."""
    out: set[str] = set()
    for name in type_names:
        if name is not None:
            out.update(_fmt.conversion_table.get(name, ()))
    return frozenset(out)


def _plan(t: Any) -> _Plan:
    """What normalising a value of struct type ``t`` involves (computed once per type)."""
    plan = _PLANS.get(t)
    if plan is not None:
        return plan
    steps: list[tuple[Any, ...]] = []
    needs_default = False
    for name, p in zip(t.fields, t.packers, strict=True):
        if isinstance(p, _ser.VPPTypeAlias) and isinstance(p.packer, _ser.FixedList):
            p = p.packer
        sub = _structlike(p)
        if sub is not None:
            steps.append(("struct", name, sub, _conv(sub.name, p.name)))
            needs_default = needs_default or _plan(sub).needs_default
        elif isinstance(p, _ser.VPPUnionType):
            arms = {}
            for arm, ap in p.packers.items():
                arm_t = _structlike(ap)
                arms[arm] = (arm_t, _conv(arm_t.name, ap.name) if arm_t is not None else frozenset())
            steps.append(("union", name, arms))
        elif isinstance(p, _ser.FixedList):
            elem = p.packer
            sub = _structlike(elem)
            zero: Any = {} if isinstance(elem, _ser.VPPUnionType) else 0
            steps.append(
                ("fixed", name, p.num, sub, zero, _conv(sub.name) if sub is not None else frozenset())
            )
            needs_default = True
        elif isinstance(p, _ser.VLAList) and not isinstance(p, _ser.VLAList_legacy):
            sub = _structlike(p.packer)
            steps.append(
                ("vla", name, p.length_field, sub, _conv(sub.name) if sub is not None else frozenset())
            )
    plan = _Plan(frozenset(t.fields), tuple(steps), needs_default)
    _PLANS[t] = plan
    return plan


def _default(t: Any) -> Any:
    """The all-zero value of struct ``t`` that vpp_papi can pack (fixed arrays filled)."""
    d = _DEFAULTS.get(t)
    if d is None:
        d = _norm_struct(t, {}, frozenset())
        _DEFAULTS[t] = d
    return d


def _norm_struct(t: Any, data: Any, conv: frozenset[str]) -> Any:
    """``data`` made packable as struct ``t``; ``conv``: the Python types vpp_papi converts
    into ``t`` itself (passed through). Copies a dict only when something changes."""
    if type(data) is not dict:
        if type(data).__name__ in conv:
            return data  # an ipaddress object or a string vpp_papi converts itself
        if not isinstance(data, Mapping):
            raise _Bad(f"expected a mapping for {t.name}, got {type(data).__name__} {data!r}")
    plan = _PLANS.get(t) or _plan(t)
    if not data.keys() <= plan.known:
        unknown = sorted(data.keys() - plan.known)
        raise _Bad(f"unknown field(s) {unknown} (fields of {t.name}: {', '.join(t.fields)})")
    out: dict[str, Any] | None = None
    for step in plan.steps:
        kind, name = step[0], step[1]
        value = data.get(name)
        new: Any = value
        try:
            if kind == "struct":
                if value is None:
                    if _plan(step[2]).needs_default:
                        new = _default(step[2])
                else:
                    new = _norm_struct(step[2], value, step[3])
            elif kind == "union":
                if value is None:
                    continue
                arms = step[2]
                if type(value) is not dict or len(value) != 1:
                    raise _Bad(f"a union takes exactly one of {list(arms)}, got {value!r}")
                ((arm, v),) = value.items()
                spec = arms.get(arm)
                if spec is None:
                    raise _Bad(f"unknown union member {arm!r} (one of {list(arms)})")
                if spec[0] is not None:
                    nv = _norm_struct(spec[0], v, spec[1])
                    if nv is not v:
                        new = {arm: nv}
            elif kind == "fixed":
                num, sub, zero = step[2], step[3], step[4]
                items = [] if value is None else list(value)
                if len(items) > num:
                    raise _Bad(f"at most {num} elements, got {len(items)}")
                if sub is not None:
                    items = [_norm_elem(sub, e, i, step[5]) for i, e in enumerate(items)]
                    items.extend([_default(sub)] * (num - len(items)))
                else:
                    items.extend([zero] * (num - len(items)))
                new = items
            else:  # vla
                length_field, sub = step[2], step[3]
                if value is None:
                    if length_field not in data:
                        if out is None:
                            out = dict(data)
                        out[length_field] = 0
                    continue
                if type(value) is WireArray:
                    _check_wire_array(sub, value, data.get(length_field))
                    if length_field not in data:
                        if out is None:
                            out = dict(data)
                        out[length_field] = value.elements
                    continue
                if sub is not None and isinstance(value, (str, bytes, Mapping)):
                    raise _Bad(f"expected a list, got {type(value).__name__}")
                if length_field not in data:
                    if out is None:
                        out = dict(data)
                    out[length_field] = len(value)
                if sub is not None:
                    conv_e = step[4]
                    items = [_norm_elem(sub, e, i, conv_e) for i, e in enumerate(value)]
                    if any(a is not b for a, b in zip(items, value, strict=True)):
                        new = items
        except _Bad as exc:
            exc.where.append(f".{name}")
            raise
        if new is not value:
            if out is None:
                out = dict(data)
            out[name] = new
    return data if out is None else out


def _check_wire_array(t: Any, value: WireArray, count: Any) -> None:
    """A `WireArray` must hold whole elements of the field's own type, as many as its count."""
    if t is None or value.type_name != t.name:
        raise _Bad(f"wire-form elements of {value.type_name}, but the field holds {getattr(t, 'name', t)}")
    if value.elements < 0 or len(value.data) != value.elements * t.size:
        raise _Bad(f"{len(value.data)} bytes are not {value.elements} elements of {t.size} bytes ({t.name})")
    if count is not None and count != value.elements:
        raise _Bad(f"count field says {count}, the wire-form array holds {value.elements}")


def _norm_elem(t: Any, data: Any, index: int, conv: frozenset[str]) -> Any:
    try:
        return _norm_struct(t, data, conv)
    except _Bad as exc:
        exc.where.append(f"[{index}]")
        raise


def normalize_fields(msgdef: Any, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The request fields vpp_papi can pack for message definition ``msgdef`` (a copy):
    unknown names rejected, variable-length counts filled in, fixed arrays padded, nested
    structs defaulted. Raises ``_Bad``."""
    if not _RESERVED.isdisjoint(fields):
        raise _Bad(f"field(s) {sorted(_RESERVED.intersection(fields))} are set by the client")
    out = _norm_struct(msgdef, fields, frozenset())
    return dict(out) if out is fields else out


# --------------------------------------------------------------------------------------------
# Packing: vpp_papi's serializer, compiled
#
# vpp_papi's ``pack`` walks its type objects field by field (an isinstance, a try and a bytes
# concatenation per field; a union even formats its value for a debug log that is off). For
# each type the packers below are straight-line code generated from those same type objects:
# VPPType.pack unrolled, runs of scalars packed with one struct, nested structs, unions, lists,
# u8 arrays and vpp_papi's own value conversions (an ``IPv4Address`` for an address...) done
# the way vpp_papi does them, and anything else handed to vpp_papi's packer for that field.
# Whenever a value is not one they handle exactly as vpp_papi would (or is wrong), they give up
# and vpp_papi packs the whole message itself (and reports the error, if any): the bytes are
# always vpp_papi's.


class _Slow(Exception):
    """A value the compiled packer leaves to vpp_papi."""


_PACKERS: dict[Any, Callable[[Any], bytes]] = {}
_BUILDING = threading.RLock()


def _raise_slow(_value: Any = None) -> bytes:
    raise _Slow


def _fast_pack(msgdef: Any, kwargs: Mapping[str, Any]) -> bytes:
    """``msgdef.pack(kwargs)``: the same bytes, usually much sooner."""
    packer = _PACKERS.get(msgdef) or _value_packer(msgdef)
    try:
        return packer(kwargs)
    except Exception:  # _Slow, or a value vpp_papi may refuse: let vpp_papi decide
        if any(type(v) is WireArray for v in kwargs.values()):
            raise  # vpp_papi cannot take elements in wire form
        return bytes(msgdef.pack(kwargs))


class _Gen:
    """Objects a generated function refers to, by the names it uses for them."""

    def __init__(self) -> None:
        self.env: dict[str, Any] = {"_Slow": _Slow, "_bytes": bytes, "_join": b"".join, "_map": map}

    def ref(self, obj: Any) -> str:
        name = f"_o{len(self.env)}"
        self.env[name] = obj
        return name

    def function(self, lines: list[str]) -> Any:
        exec("\n".join(lines), self.env)  # built from vpp_papi's type objects
        return self.env["_f"]


def _default_of(p: Any) -> Any:
    opts = getattr(p, "options", None)
    return opts["default"] if opts and "default" in opts else 0


def _scalar_code(p: Any) -> tuple[str, Any] | None:
    """(struct code, value packed for None) of a packer that packs one big-endian scalar."""
    if type(p) is _ser.BaseTypes:
        fmt = p.packer.format
        if p._elements == 0 and p._type not in ("string", "header", "f64") and fmt[0] == ">":
            return fmt[1:], _default_of(p)
        return None
    if isinstance(p, _ser.VPPEnumType):
        return _ser.types[p.enumtype].packer.format[1:], _default_of(p)
    if type(p) is _ser.VPPTypeAlias and p.name not in _fmt.conversion_table:
        inner = _scalar_code(p.packer)
        return None if inner is None else (inner[0], _default_of(p))
    return None


def _uses_kwargs(p: Any, seen: frozenset[int] = frozenset()) -> bool:
    """Whether packing with ``p`` looks at the ``kwargs`` it is given (a VLA's count, anywhere
    below a struct): such a packer cannot be called with a value alone."""
    if id(p) in seen:
        return True
    seen = seen | {id(p)}
    if isinstance(p, _ser.VLAList) and not isinstance(p, _ser.VLAList_legacy):
        return True
    if isinstance(p, _ser.VPPType):
        return any(_uses_kwargs(q, seen) for q in p.packers)
    if isinstance(p, _ser.VPPUnionType):
        return any(_uses_kwargs(q, seen) for q in p.packers.values())
    if isinstance(p, _ser.VPPTypeAlias):
        return _uses_kwargs(p.packer, seen)
    return False


def _value_packer(p: Any) -> Callable[[Any], bytes]:
    """``value -> bytes`` equal to vpp_papi's ``p.pack(value)`` (raises where it may differ)."""
    fn = _PACKERS.get(p)
    if fn is not None:
        return fn
    with _BUILDING:
        fn = _PACKERS.get(p)
        if fn is not None:
            return fn
        _PACKERS[p] = _raise_slow  # while building (types are not recursive, but never loop)
        try:
            fn = _build_packer(p)
        except Exception:  # a shape this compiler does not know: vpp_papi packs it
            fn = _raise_slow
        _PACKERS[p] = fn
        return fn


def _build_packer(p: Any) -> Callable[[Any], bytes]:
    g = _Gen()
    if isinstance(p, _ser.VPPType):
        return _struct_packer(p, g)
    if isinstance(p, _ser.VPPUnionType):
        if _uses_kwargs(p):  # a member would look at the struct around the union
            return _raise_slow
        members = {k: _value_packer(q) for k, q in p.packers.items()}
        zero = bytes(p.size)
        lines = [
            "def _f(v):",
            "    if not v:",
            f"        return {g.ref(zero)}",
            "    if type(v) is not dict:",
            "        raise _Slow",
            "    for k, x in v.items():",
            f"        b = {g.ref(members)}[k](x)",
            "        break",
            f"    if len(b) > {p.size}:",
            "        raise _Slow",
            f"    return b + _bytes({p.size} - len(b))",
        ]
        fn: Callable[[Any], bytes] = g.function(lines)
        return fn
    if isinstance(p, _ser.VPPTypeAlias):
        inner = _raise_slow if _uses_kwargs(p.packer) else _value_packer(p.packer)
        lines = ["def _f(v):"]
        conv = _fmt.conversion_table.get(p.name)
        if conv:
            lines += [
                "    if v and type(v) is not dict and type(v) is not bytes and type(v).__name__ in "
                f"{g.ref(conv)}:",
                f"        return {g.ref(_converted)}({g.ref(p.name)}, {g.ref(conv)}, v)",
            ]
        lines += [
            "    if v is None:",
            f"        v = {g.ref(_default_of(p))}",
            f"    return {g.ref(inner)}(v)",
        ]
        fn = g.function(lines)
        return fn
    if isinstance(p, _ser.FixedList_u8):
        lines = [
            "def _f(v):",
            "    if not v:",
            f"        return {g.ref(bytes(p.size))}",
            f"    if len(v) > {p.num}:",
            "        raise _Slow",
            f"    return {g.ref(p.packer.packer.pack)}(v)",
        ]
        fn = g.function(lines)
        return fn
    if isinstance(p, _ser.FixedList):
        elem = _value_packer(p.packer)
        lines = [
            "def _f(v):",
            f"    if len(v) != {p.num}:",
            "        raise _Slow",
            f"    return _join(_map({g.ref(elem)}, v))",
        ]
        fn = g.function(lines)
        return fn
    scalar = _scalar_code(p)
    if scalar is not None or type(p) is _ser.BaseTypes:
        st = p.packer if type(p) is _ser.BaseTypes else struct.Struct(">" + scalar[0])  # type: ignore[index]
        lines = [
            "def _f(v):",
            f"    return {g.ref(st.pack)}({g.ref(_default_of(p))} if v is None else v)",
        ]
        fn = g.function(lines)
        return fn
    if isinstance(p, (_ser.String, _ser.VLAList_legacy)):  # they ignore kwargs
        return lambda v: bytes(p.pack(v))
    return _raise_slow


def _converted(type_name: str, table: Mapping[str, Callable[[Any], Any]], value: Any) -> bytes:
    """vpp_papi's ``conversion_packer``: the value converted, packed as ``types[type_name]``."""
    try:
        converted = table[type(value).__name__](value)
    except Exception:
        raise _Slow from None  # vpp_papi may carry on with the value unconverted
    return _value_packer(_ser.types[type_name])(converted)


def _struct_packer(t: Any, g: _Gen) -> Callable[[Any], bytes]:
    """VPPType.pack unrolled (``kwargs`` is the value itself at every level it is used)."""
    try:
        zero: bytes | None = bytes(t.pack(None))
    except Exception:
        zero = None
    conv = _fmt.conversion_table.get(t.name) or {}
    parts: list[str] = []
    run: list[tuple[str, str, Any]] = []

    def close_run() -> None:
        if run:
            st = struct.Struct(">" + "".join(code for _, code, _ in run))
            # A None packs as vpp_papi's default: for "?" (which would take None for False) here,
            # for the others by pack refusing it (then vpp_papi packs the message).
            args = ", ".join(
                f"({g.ref(default)} if (v := g({name!r})) is None else v)"
                if code == "?"
                else f"g({name!r}, {g.ref(default)})"
                for name, code, default in run
            )
            parts.append(f"{g.ref(st.pack)}({args})")
            run.clear()

    for name, p in zip(t.fields, t.packers, strict=True):
        scalar = _scalar_code(p)
        if scalar is not None:
            run.append((name, scalar[0], scalar[1]))
            continue
        close_run()
        if isinstance(p, _ser.VLAList) and not isinstance(p, _ser.VLAList_legacy):
            u8 = p.packer.size == 1 and p.field_type == "u8"
            vla = p.pack if u8 else _vla_packer(p.length_field, _value_packer(p.packer))
            parts.append(f"{g.ref(vla)}(g({name!r}), data)")
        elif isinstance(p, _ser.VPPType):
            parts.append(f"{g.ref(_value_packer(p))}(g({name!r}))")
        elif _uses_kwargs(p):
            parts.append(f"{g.ref(p.pack)}(g({name!r}), data)")
        else:
            parts.append(f"{g.ref(_value_packer(p))}(g({name!r}))")
    close_run()
    lines = [
        "def _f(data):",
        "    if type(data) is not dict:",
        f"        return {g.ref(_other)}({g.ref(t.name)}, {g.ref(zero)}, {g.ref(conv)}, data)",
        "    g = data.get",
        f"    return _join(({', '.join(parts)}{',' if len(parts) == 1 else ''}))",
    ]
    fn: Callable[[Any], bytes] = g.function(lines)
    return fn


def _other(type_name: str, zero: bytes | None, conv: Mapping[str, Any], data: Any) -> bytes:
    """VPPType.pack of a value that is not a dict: nothing (zeros), or one vpp_papi converts."""
    if not data:
        if zero is None:
            raise _Slow
        return zero
    if type(data) is bytes or type(data).__name__ not in conv:
        raise _Slow
    return _converted(type_name, conv, data)


def _vla_packer(length_field: str, elem: Callable[[Any], bytes]) -> Callable[[Any, Any], bytes]:
    def pack(lst: Any, data: Mapping[str, Any]) -> bytes:
        if type(lst) is WireArray:  # checked against the type by normalize_fields
            if lst.elements != data[length_field]:
                raise ValueError(f"count {data[length_field]} but {lst.elements} wire-form elements")
            return lst.data
        if not lst:
            return b""
        if len(lst) != data[length_field]:
            raise _Slow
        return b"".join(map(elem, lst))

    return pack


def _describe(exc: BaseException) -> str:
    """vpp_papi wraps packing errors; show the innermost cause too."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        text += f" <- {type(cause).__name__}: {cause}"
        cause = cause.__cause__ or cause.__context__
    return text


_PAPI_LOGGER = logging.getLogger("vpp_papi.calico_vpp_driver")
_PAPI_LOGGER.addHandler(logging.NullHandler())
_PAPI_LOGGER.propagate = False


class PapiConnection:
    """A vpp_papi ``VPPApiClient`` connected with ``bootstrapapi=True``.

    vpp_papi connects and bootstraps (``get_api_json``) with its own machinery. Then its reader
    thread is stopped and this connection reads the socket itself: one thread receiving in
    large chunks, splitting frames, decoding each with vpp_papi's definitions and handing them
    to ``on_messages`` a chunk at a time (vpp_papi's reader makes two system calls, a header
    object and a callback per message). Requests are packed as vpp_papi's serializer packs
    them (by :func:`_fast_pack`: compiled from its type objects, vpp_papi itself as the fallback)
    and written by the owner thread, many frames per ``sendall``.
    """

    def __init__(self, vpp: Any, on_messages: OnMessages) -> None:
        self._vpp = vpp
        t = self._t = vpp.transport
        self._defs: dict[str, Any] = vpp.messages
        self._services: dict[str, Any] = vpp.services
        self._ids: dict[str, int] = {}
        for name, msgdef in self._defs.items():
            index = t.get_msg_index(f"{name}_{msgdef.crc[2:]}")
            if index > 0:
                self._ids[name] = index
        self._by_id: dict[int, tuple[str, Any]] = {i: (n, self._defs[n]) for n, i in self._ids.items()}
        self._client_index: int = t.socket_index
        self._sock: socket.socket = t.socket
        self._service_cache: dict[str, Service | None] = {}
        self._on_messages = on_messages
        self._closed = threading.Event()
        self.error: str | None = None
        # Take the socket over from vpp_papi's reader thread.
        t.sque.put(True)
        if t.message_thread is not None:
            t.message_thread.join(5)
        t.message_thread = None
        self._reader = threading.Thread(target=self._read_loop, name="vpp-client-rx", daemon=True)
        self._reader.start()
        # Runs before vpp_papi's own exit hook (registered earlier), which would otherwise
        # try a synchronous sockclnt_delete and wait out its read timeout.
        atexit.register(_close_at_exit, weakref.ref(self))

    @property
    def message_count(self) -> int:
        return len(self._ids)

    def has_message(self, name: str) -> bool:
        return name in self._ids

    def service(self, name: str) -> Service | None:
        try:
            return self._service_cache[name]
        except KeyError:
            pass
        svc = self._services.get(name)
        out: Service | None = None
        if svc is not None and name in self._ids:
            reply = svc["reply"]
            if svc.get("stream"):
                if "stream_msg" in svc:
                    out = Service(reply, svc["stream_msg"], False)
                else:
                    out = Service("control_ping_reply", reply, True)
            else:
                out = Service(reply, None, False)
        self._service_cache[name] = out
        return out

    def encode(self, name: str, context: int, fields: Mapping[str, Any]) -> bytes:
        msgdef = self._defs.get(name)
        index = self._ids.get(name)
        if msgdef is None or index is None:
            raise VppEncodeError(name, "VPP does not know this message")
        try:
            kwargs = normalize_fields(msgdef, fields)
        except _Bad as exc:
            raise VppEncodeError(name, str(exc)) from None
        kwargs["_vl_msg_id"] = index
        kwargs["client_index"] = self._client_index
        kwargs["context"] = context
        try:
            body = _fast_pack(msgdef, kwargs)
        except Exception as exc:
            raise VppEncodeError(name, _describe(exc)) from None
        return _FRAME.pack(0, len(body), 0) + body

    def send(self, frames: Sequence[bytes]) -> None:
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        self._sock.sendall(data)

    def alive(self) -> bool:
        return not self._closed.is_set() and self._reader.is_alive()

    def _read_loop(self) -> None:
        sock = self._sock
        by_id = self._by_id
        frame = _FRAME
        buf = bytearray()
        try:
            while not self._closed.is_set():
                try:
                    chunk = sock.recv(1 << 18)
                except TimeoutError:
                    continue
                if not chunk:
                    self.error = "VPP closed the connection"
                    return
                buf += chunk
                pos, end, out = 0, len(buf), []
                while end - pos >= 16:
                    length = frame.unpack_from(buf, pos)[1]
                    if end - pos - 16 < length:
                        break
                    payload = bytes(buf[pos + 16 : pos + 16 + length])
                    pos += 16 + length
                    msgid = int.from_bytes(payload[:2], "big")
                    known = by_id.get(msgid)
                    if known is None:
                        self.error = f"VPP sent message id {msgid}, which is not in its message table"
                        return
                    out.append((known[0], known[1].unpack(payload)[0]))
                del buf[:pos]
                if out:
                    self._on_messages(out)
        except Exception as exc:
            if not self._closed.is_set():
                self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._closed.set()

    def close(self, graceful: bool) -> None:
        if self._t.socket is None:
            return
        if graceful and self.alive():
            with contextlib.suppress(Exception):  # tell VPP to free the registration
                msgdef = self._defs["sockclnt_delete"]
                body = msgdef.pack(
                    {
                        "_vl_msg_id": self._ids["sockclnt_delete"],
                        "client_index": self._client_index,
                        "context": 0,
                        "index": self._client_index,
                    }
                )
                self._sock.sendall(_FRAME.pack(0, len(body), 0) + body)
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the reader thread at once
        if self._reader is not threading.current_thread():
            self._reader.join(5)
        _papi_release(self._vpp)


def _close_at_exit(ref: weakref.ReferenceType[PapiConnection]) -> None:
    conn = ref()
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close(graceful=False)


def _papi_release(vpp: Any) -> None:
    """Close a VPPApiClient's socket and pipes and mark it disconnected, in any state,
    without talking to VPP (vpp_papi's own disconnect() waits for a reply on its reader)."""
    t = vpp.transport
    if t.message_thread is not None and t.message_thread.is_alive():
        with contextlib.suppress(Exception):
            t.sque.put(True)
            if t.socket is not None:
                t.socket.shutdown(socket.SHUT_RDWR)
            t.message_thread.join(5)
    t.connected = False
    if t.socket is not None:
        with contextlib.suppress(OSError):
            t.socket.close()
    t.socket = None
    t.message_thread = None
    t.message_table = {}
    for q in (t.q, t.sque):
        with contextlib.suppress(Exception):
            q.close()


class PapiTransport:
    """Connections through vpp_papi (the production transport)."""

    def connect(
        self, socket_path: str, client_name: str, read_timeout: float, on_messages: OnMessages
    ) -> Connection:
        vpp = VPPApiClient(
            server_address=socket_path,
            bootstrapapi=True,
            read_timeout=read_timeout,
            async_thread=False,
            logger=_PAPI_LOGGER,
        )
        try:
            vpp.connect(client_name, do_async=False)
        except BaseException:
            _papi_release(vpp)
            raise
        try:
            return PapiConnection(vpp, on_messages)
        except BaseException:
            _papi_release(vpp)
            raise


# --------------------------------------------------------------------------------------------
# The owner thread's bookkeeping


class _Req:
    __slots__ = ("context", "details", "fields", "index", "job", "name", "obj", "service")

    def __init__(self, job: _Job, index: int, name: str, fields: Mapping[str, Any], obj: str | None) -> None:
        self.job = job
        self.index = index
        self.name = name
        self.fields = fields
        self.obj = obj
        self.context = 0
        self.service: Service | None = None
        self.details: list[Any] = []


class _Job:
    __slots__ = (
        "cancelled",
        "dump_only",
        "future",
        "generation",
        "in_flight",
        "limit",
        "next",
        "remaining",
        "reqs",
        "results",
    )

    def __init__(
        self, requests: Sequence[Request], limit: int, generation: int | None, dump_only: bool = False
    ) -> None:
        self.dump_only = dump_only
        self.reqs = [_Req(self, i, r.message, r.fields, r.obj) for i, r in enumerate(requests)]
        self.results: list[Result | None] = [None] * len(self.reqs)
        self.next = 0
        self.in_flight = 0
        self.remaining = len(self.reqs)
        self.limit = max(1, limit)
        self.generation = generation
        self.cancelled = False
        self.future: concurrent.futures.Future[list[Result]] = concurrent.futures.Future()


_STOP = object()
_QUANTUM = 32  # requests one job may send before the next job's turn
_FLUSH_FRAMES = 64  # frames per sendall


class PendingBatch:
    """A submitted batch (`VppClient.submit`) whose results are collected later."""

    def __init__(self, client: VppClient, job: _Job | None) -> None:
        self._client = client
        self._job = job

    def results(self, timeout: float | None = None) -> list[Result]:
        """One `Result` per request, in request order, once VPP answered them all."""
        return [] if self._job is None else self._client._wait(self._job, timeout)


def backoff_delays(initial: float, maximum: float) -> Iterable[float]:
    """The waits between connection attempts: ``initial``, doubling, capped at ``maximum``."""
    delay = initial
    while True:
        yield delay
        delay = min(delay * 2, maximum)


class VppClient:
    """The driver's one connection to VPP (see the module docstring).

    ``features``: names from :data:`FEATURES` whose messages must exist (checked on every
    connect). ``connect_timeout``: how long :meth:`start` (and each reconnect) keeps retrying,
    with waits from :func:`backoff_delays` (``initial_backoff`` .. ``max_backoff``); after that a
    reconnect keeps trying every ``max_backoff`` but fails requests at once. ``read_timeout``:
    with requests outstanding, this long without any message from VPP means VPP is hung (the
    connection is dropped and re-made). ``max_in_flight``: the most requests outstanding at
    once. ``sentinel``: keep the tagged loopback that identifies the VPP instance (without it,
    the vpe pid is the identity, which misses restarts that keep the pid).
    """

    def __init__(
        self,
        socket_path: str = "/run/vpp/api.sock",
        *,
        features: Iterable[str] = (),
        client_name: str = "calico-vpp-driver",
        connect_timeout: float = 30.0,
        initial_backoff: float = 0.1,
        max_backoff: float = 2.0,
        read_timeout: float = 5.0,
        max_in_flight: int = 256,
        sentinel: bool = True,
        on_vpp_restart: Callable[[ConnectionInfo], None] | None = None,
        on_connected: Callable[[ConnectionInfo], None] | None = None,
        on_event: Callable[[str, Any], None] | None = None,
        transport: Transport | None = None,
        poll_interval: float = 0.1,
    ) -> None:
        self.socket_path = socket_path
        self.features = tuple(dict.fromkeys(features))
        missing_messages(self.features, lambda _n: True)  # validates the names
        self._client_name = client_name
        self._connect_timeout = connect_timeout
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._read_timeout = read_timeout
        self._max_in_flight = max(1, max_in_flight)
        self._sentinel = sentinel
        self._on_vpp_restart = on_vpp_restart
        self._on_connected = on_connected
        self._on_event = on_event
        self._transport: Transport = transport if transport is not None else PapiTransport()
        self._poll = poll_interval

        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._submit_lock = threading.Lock()
        self._closed = False
        self._started = False
        self._thread: threading.Thread | None = None
        self._owner_ident = -1
        self._ready: concurrent.futures.Future[ConnectionInfo] = concurrent.futures.Future()

        # Owner-thread state.
        self._conn: Connection | None = None
        self._conn_id = 0
        self._context = 0
        self._window: dict[int, _Req] = {}
        self._active: deque[_Job] = deque()
        self._held: deque[_Job] = deque()
        self._setting_up = False
        self._stopping = False
        self._unavailable: VppError | None = None
        self._last_rx = 0.0

        # Published facts (read from any thread).
        self._generation = 0
        self._info: ConnectionInfo | None = None
        self._supported: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, cfg: Config, **kwargs: Any) -> VppClient:
        """A client for ``cfg.vpp_api_socket`` needing :func:`features_for_config` (``features``
        in ``kwargs`` overrides)."""
        kwargs.setdefault("features", features_for_config(cfg))
        return cls(cfg.vpp_api_socket, **kwargs)

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> ConnectionInfo:
        """Start the owner thread and connect (retrying up to ``connect_timeout``).

        Raises ``VppConnectionError`` when VPP did not come up in time and
        ``MissingMessagesError`` when it lacks messages; the client is closed then.
        """
        with self._submit_lock:
            if self._started:
                raise VppError("VppClient.start() called twice")
            self._started = True
        self._thread = threading.Thread(target=self._owner_main, name="vpp-client", daemon=True)
        self._thread.start()
        try:
            return self._ready.result()
        except BaseException:
            self._thread.join()
            raise

    def close(self, timeout: float | None = None) -> None:
        """Fail whatever is pending with ``VppClientClosed``, disconnect, stop the owner."""
        with self._submit_lock:
            if self._closed:
                return
            if not self._started:
                self._closed = True
                return
            self._inbox.put(_STOP)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout if timeout is not None else self._read_timeout + 5)

    def __enter__(self) -> VppClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- facts

    @property
    def generation(self) -> int:
        """The VPP instance generation (1 after start, +1 per detected VPP restart)."""
        return self._generation

    @property
    def instance_id(self) -> str | None:
        """The identity of the VPP instance (its sentinel's id), None before the first connect."""
        info = self._info
        return info.instance_id if info else None

    @property
    def info(self) -> ConnectionInfo | None:
        """Facts of the current (or last) connection."""
        return self._info

    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and not self._setting_up and conn.alive()

    def supports(self, feature: str) -> bool:
        """Whether the connected VPP has every message of ``feature`` (from :data:`FEATURES`)."""
        if feature not in FEATURES:
            raise ValueError(f"unknown VPP feature {feature!r}")
        return feature in self._supported

    def encode(self, message: str, /, **fields: Any) -> bytes:
        """Pack ``message`` as it would be sent (for measuring the serializer; no I/O)."""
        conn = self._conn
        if conn is None:
            raise VppConnectionError("not connected", message=message)
        return conn.encode(message, 1, fields)

    # ---------------------------------------------------------------- calls

    def call(
        self,
        message: str,
        /,
        obj: str | None = None,
        *,
        _timeout: float | None = None,
        _generation: int | None = None,
        **fields: Any,
    ) -> Any:
        """Send one request and return its reply (a list of details for a dump).

        Raises ``VppApiError`` (non-zero retval, naming ``message``, the error and ``obj``),
        ``VppEncodeError``, ``VppConnectionLost``, ``VppRestartedError``, ``VppTimeoutError``.
        """
        job = self._submit([Request(message, fields, obj)], 1, _generation)
        return self._wait(job, _timeout)[0].unwrap()

    def dump(
        self,
        message: str,
        /,
        obj: str | None = None,
        *,
        _timeout: float | None = None,
        _generation: int | None = None,
        **fields: Any,
    ) -> list[Any]:
        """Send a dump request and return the list of details (a message that is not a dump is
        refused before anything is sent)."""
        job = self._submit([Request(message, fields, obj)], 1, _generation, dump_only=True)
        reply: list[Any] = self._wait(job, _timeout)[0].unwrap()
        return reply

    def batch(
        self,
        requests: Iterable[
            Request | tuple[str, Mapping[str, Any]] | tuple[str, Mapping[str, Any], str | None]
        ],
        *,
        max_in_flight: int | None = None,
        generation: int | None = None,
        timeout: float | None = None,
    ) -> list[Result]:
        """Send every request, at most ``max_in_flight`` outstanding, and return one
        :class:`Result` per request, in request order. Requests are sent in order and VPP
        executes them in order; a failed one does not stop the others (make dependent
        requests a separate batch)."""
        return self.submit(requests, max_in_flight=max_in_flight, generation=generation).results(timeout)

    def submit(
        self,
        requests: Iterable[
            Request | tuple[str, Mapping[str, Any]] | tuple[str, Mapping[str, Any], str | None]
        ],
        *,
        max_in_flight: int | None = None,
        generation: int | None = None,
    ) -> PendingBatch:
        """`batch` without the wait: the requests are queued behind those submitted before
        (VPP runs them in submission order) and the caller collects the results later, so it
        can prepare the next batch while VPP works on this one."""
        reqs: list[Request] = []
        for r in requests:
            if isinstance(r, Request):
                reqs.append(r)
            elif len(r) == 2:
                reqs.append(Request(r[0], r[1]))
            else:
                reqs.append(Request(*r))
        if not reqs:
            return PendingBatch(self, None)
        limit = self._max_in_flight if max_in_flight is None else min(max_in_flight, self._max_in_flight)
        return PendingBatch(self, self._submit(reqs, limit, generation))

    # ---------------------------------------------------------------- submitting (any thread)

    def _submit(
        self, requests: Sequence[Request], limit: int, generation: int | None, dump_only: bool = False
    ) -> _Job:
        job = _Job(requests, limit, self._generation if generation is None else generation, dump_only)
        if threading.get_ident() == self._owner_ident:
            self._run_inline(job)
            return job
        with self._submit_lock:
            if self._closed or not self._started:
                raise VppClientClosed(
                    "VPP client is closed" if self._closed else "VPP client not started",
                    message=requests[0].message,
                )
            self._inbox.put(job)
        return job

    def _wait(self, job: _Job, timeout: float | None) -> list[Result]:
        try:
            return job.future.result(timeout)
        except concurrent.futures.TimeoutError:
            job.cancelled = True
            raise VppTimeoutError(
                f"VPP {job.reqs[0].name}: no answer within {timeout} s",
                message=job.reqs[0].name,
                obj=job.reqs[0].obj,
            ) from None

    # ---------------------------------------------------------------- the owner thread

    def _owner_main(self) -> None:
        self._owner_ident = threading.get_ident()
        try:
            try:
                info = self._connect_phase(initial=True)
            except BaseException as exc:
                self._ready.set_exception(exc)
                return
            if info is None:
                self._ready.set_exception(VppClientClosed("VPP client closed while connecting"))
                return
            self._ready.set_result(info)
            while not self._stopping:
                if self._conn is None:
                    self._connect_phase(initial=False)
                else:
                    self._step()
        except BaseException as exc:  # a bug: never leave callers waiting forever
            log.exception("vpp_client_crashed", error=repr(exc))
            if not self._ready.done():
                self._ready.set_exception(exc)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        with self._submit_lock:
            self._closed = True
        closed = "VPP client closed"
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Job):
                self._held.append(item)
        for job in self._held:
            for req in job.reqs:
                self._fail(
                    req,
                    VppClientClosed(f"{closed} before {req.name} was sent", message=req.name, obj=req.obj),
                )
        self._held.clear()
        self._drop_outstanding(lambda req, sent: VppClientClosed(closed, message=req.name, obj=req.obj))
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close(graceful=True)
            log.info("vpp_disconnected", socket=self.socket_path)

    # -- connecting

    def _connect_phase(self, initial: bool) -> ConnectionInfo | None:
        """Connect (with backoff) and set up; None when stopped meanwhile."""
        started = time.monotonic()
        deadline = started + self._connect_timeout
        delays = iter(backoff_delays(self._initial_backoff, self._max_backoff))
        attempt = 0
        last: BaseException | None = None
        while not self._stopping:
            attempt += 1
            try:
                info = self._try_connect()
            except MissingMessagesError as exc:
                if initial:
                    raise
                last = exc
                log.error("vpp_missing_messages", socket=self.socket_path, error=str(exc))
            except Exception as exc:
                last = exc
            else:
                self._unavailable = None
                return info
            now = time.monotonic()
            if self._unavailable is None and now >= deadline:
                error = VppConnectionError(
                    f"VPP API at {self.socket_path} not usable after {attempt} attempt(s) in "
                    f"{now - started:.1f} s: {last}"
                )
                if initial:
                    raise error from last
                self._unavailable = error
                log.error("vpp_unavailable", socket=self.socket_path, attempts=attempt, error=str(last))
                self._fail_held(error)
            delay = next(delays)
            if self._unavailable is None:
                delay = max(0.0, min(delay, deadline - now))
            log.info(
                "vpp_connect_retry",
                socket=self.socket_path,
                attempt=attempt,
                error=f"{type(last).__name__}: {last}",
                retry_in_s=round(delay, 3),
                elapsed_s=round(now - started, 3),
            )
            self._sleep_holding(delay)
        return None

    def _sleep_holding(self, seconds: float) -> None:
        """Wait, holding jobs that arrive (or failing them while VPP is unavailable)."""
        end = time.monotonic() + seconds
        while not self._stopping:
            left = end - time.monotonic()
            if left <= 0:
                return
            try:
                item = self._inbox.get(timeout=left)
            except queue.Empty:
                return
            self._hold(item)

    def _hold(self, item: Any) -> None:
        if item is _STOP:
            self._stopping = True
        elif isinstance(item, _Job):
            if self._unavailable is not None:
                for req in item.reqs:
                    self._fail(req, self._unavailable)
            else:
                self._held.append(item)
        # anything else: a message of a connection that is gone

    def _fail_held(self, error: VppError) -> None:
        held, self._held = self._held, deque()
        for job in held:
            for req in job.reqs:
                self._fail(req, error)

    def _try_connect(self) -> ConnectionInfo:
        self._conn_id += 1
        conn_id = self._conn_id
        inbox = self._inbox

        def on_messages(msgs: list[tuple[str, Any]]) -> None:
            inbox.put((conn_id, msgs))

        conn = self._transport.connect(self.socket_path, self._client_name, self._read_timeout, on_messages)
        self._conn = conn
        self._context = 0
        self._last_rx = time.monotonic()
        self._setting_up = True
        try:
            core = ("core",) if self._sentinel else ()
            missing = missing_messages(core + self.features, conn.has_message)
            if missing:
                raise MissingMessagesError(missing, self.socket_path)
            if not self._sentinel and not conn.has_message("control_ping"):
                raise MissingMessagesError(missing_messages(("core",), conn.has_message), self.socket_path)
            version = self._setup_call("show_version") if conn.has_message("show_version") else None
            ping = self._setup_call("control_ping")
            vpe_pid = int(getattr(ping, "vpe_pid", 0))
            instance, sentinel = (
                self._find_or_make_sentinel() if self._sentinel else (f"vpe-pid:{vpe_pid}", None)
            )
        except BaseException:
            self._setting_up = False
            if self._conn is conn:
                self._conn = None
                self._conn_id += 1
            with contextlib.suppress(Exception):
                conn.close(graceful=False)
            raise
        supported = frozenset(f for f in FEATURES if not missing_messages((f,), conn.has_message))
        previous = self._info.instance_id if self._info else None
        restarted = previous is not None and previous != instance
        if previous is None or restarted:
            self._generation += 1
        info = ConnectionInfo(
            socket_path=self.socket_path,
            instance_id=instance,
            generation=self._generation,
            restarted=restarted,
            previous_instance_id=previous,
            vpe_pid=vpe_pid,
            version=str(getattr(version, "version", "")),
            sentinel_sw_if_index=sentinel,
        )
        self._info = info
        self._supported = supported
        self._setting_up = False
        log.info(
            "vpp_connected",
            socket=self.socket_path,
            vpp_version=info.version,
            vpe_pid=vpe_pid,
            instance=instance,
            generation=info.generation,
            restarted=restarted,
            features=sorted(supported),
        )
        if restarted:
            log.warning(
                "vpp_restarted",
                socket=self.socket_path,
                previous_instance=previous,
                instance=instance,
                generation=info.generation,
                detail="VPP's state is gone; requests for the previous generation are refused",
            )
        if self._on_connected is not None:
            self._run_callback("on_connected", self._on_connected, info)
        if restarted and self._on_vpp_restart is not None:
            self._run_callback("on_vpp_restart", self._on_vpp_restart, info)
        held, self._held = self._held, deque()
        for job in held:
            self._admit(job)
        return info

    def _run_callback(self, name: str, fn: Callable[[ConnectionInfo], None], info: ConnectionInfo) -> None:
        try:
            fn(info)
        except Exception as exc:
            log.exception("vpp_callback_failed", callback=name, error=repr(exc))

    def _setup_call(self, message: str, **fields: Any) -> Any:
        job = _Job([Request(message, fields, "vpp client setup")], 1, None)
        self._run_inline(job)
        return job.future.result()[0].unwrap()

    def _find_or_make_sentinel(self) -> tuple[str, int]:
        """The VPP instance's id and its sentinel loopback's sw_if_index."""
        prefix = SENTINEL_TAG_PREFIX
        found = sorted(
            (str(d.tag), int(d.sw_if_index))
            for d in self._setup_call("sw_interface_dump")
            if str(getattr(d, "tag", "")).startswith(prefix)
        )
        if found:
            return found[0][0][len(prefix) :], found[0][1]
        instance = uuid.uuid4().hex
        reply = self._setup_call("create_loopback")
        try:
            self._setup_call(
                "sw_interface_tag_add_del", is_add=True, sw_if_index=reply.sw_if_index, tag=prefix + instance
            )
        except VppApiError:
            with contextlib.suppress(VppError):
                self._setup_call("delete_loopback", sw_if_index=reply.sw_if_index)
            raise
        log.info(
            "vpp_sentinel_created", socket=self.socket_path, sw_if_index=reply.sw_if_index, instance=instance
        )
        return instance, int(reply.sw_if_index)

    # -- running jobs

    def _admit(self, job: _Job) -> None:
        if self._conn is None or self._setting_up:
            self._hold(job)
            return
        if job.generation is not None and job.generation != self._generation:
            for req in job.reqs:
                self._fail(req, VppRestartedError(req.name, job.generation, self._generation, req.obj))
            return
        self._active.append(job)

    def _run_inline(self, job: _Job) -> None:
        """Run ``job`` to completion from the owner thread itself."""
        if self._conn is None:
            for req in job.reqs:
                self._fail(req, VppConnectionLost(req.name, False, "not connected", req.obj))
            return
        if not self._setting_up and job.generation is not None and job.generation != self._generation:
            self._admit(job)  # fails it
            return
        self._active.appendleft(job)
        while not job.future.done():
            if self._conn is None:
                # _lost() failed everything outstanding, this job included
                break
            self._step()

    def _next_context(self) -> int:
        self._context = self._context + 1 if self._context < 0xFFFFFFFF else 1
        while self._context in self._window:
            self._context = self._context + 1 if self._context < 0xFFFFFFFF else 1
        return self._context

    def _step(self) -> None:
        """Send what may be sent, then wait for and dispatch what arrives."""
        if self._active:
            self._pump()
        if self._conn is None:
            return
        timeout = self._poll
        if self._window:
            timeout = min(timeout, max(0.0, self._last_rx + self._read_timeout - time.monotonic()))
        try:
            item = self._inbox.get(timeout=timeout) if timeout > 0 else self._inbox.get_nowait()
        except queue.Empty:
            item = None
        while item is not None:
            self._dispatch(item)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                item = None
        conn = self._conn
        if conn is None:
            return
        if not conn.alive():
            # The reader hands over everything it read before it stops: take that first.
            while self._conn is conn:
                try:
                    self._dispatch(self._inbox.get_nowait())
                except queue.Empty:
                    break
            if self._conn is conn:
                self._lost(getattr(conn, "error", None) or "connection closed")
        elif self._window and time.monotonic() - self._last_rx > self._read_timeout:
            self._lost(
                f"no message from VPP for {self._read_timeout} s "
                f"with {len(self._window)} request(s) outstanding"
            )

    def _pump(self) -> None:
        conn = self._conn
        assert conn is not None
        window = self._window
        budget = self._max_in_flight - len(window)
        frames: list[bytes] = []
        idle = 0
        try:
            while budget > 0 and self._active and idle < len(self._active):
                job = self._active.popleft()
                if job.cancelled:
                    self._cancel_unsent(job)
                    continue
                quota = min(budget, job.limit - job.in_flight, _QUANTUM)
                sent = 0
                reqs = job.reqs
                while sent < quota and job.next < len(reqs):
                    req = reqs[job.next]
                    job.next += 1
                    svc = req.service = conn.service(req.name)
                    if svc is None:
                        self._fail(req, VppEncodeError(req.name, "VPP does not know this message", req.obj))
                        continue
                    if job.dump_only and svc.details is None:
                        self._fail(
                            req,
                            VppEncodeError(req.name, "not a dump: VPP answers it with one reply", req.obj),
                        )
                        continue
                    ctx = self._next_context()
                    try:
                        frames.append(conn.encode(req.name, ctx, req.fields))
                        if svc.ping:
                            frames.append(conn.encode("control_ping", ctx, {}))
                    except VppEncodeError as exc:
                        self._fail(req, VppEncodeError(req.name, exc.detail, req.obj))
                        continue
                    if not window:
                        self._last_rx = time.monotonic()  # the read timeout runs from here
                    req.context = ctx
                    window[ctx] = req
                    job.in_flight += 1
                    sent += 1
                    if len(frames) >= _FLUSH_FRAMES:
                        conn.send(frames)
                        frames = []
                budget -= sent
                idle = 0 if sent else idle + 1
                if job.next < len(reqs):
                    self._active.append(job)
            if frames:
                conn.send(frames)
        except OSError as exc:
            self._lost(f"send failed: {exc}")

    def _cancel_unsent(self, job: _Job) -> None:
        while job.next < len(job.reqs):
            req = job.reqs[job.next]
            job.next += 1
            self._fail(
                req,
                VppTimeoutError(
                    f"VPP {req.name} not sent: the caller gave up", message=req.name, obj=req.obj
                ),
            )

    def _dispatch(self, item: Any) -> None:
        if type(item) is tuple:
            conn_id, msgs = item
            if conn_id != self._conn_id:
                return  # from a connection that is gone
            self._last_rx = time.monotonic()
            window = self._window
            for name, msg in msgs:
                ctx = getattr(msg, "context", 0)
                req = window.get(ctx) if ctx else None
                if req is None:
                    self._event(name, msg)
                    continue
                svc = req.service
                assert svc is not None
                if name == svc.terminator:
                    del window[ctx]
                    self._complete(req, msg)
                elif name == svc.details:
                    req.details.append(msg)
                else:
                    del window[ctx]
                    req.job.in_flight -= 1
                    self._fail(
                        req, VppError(f"VPP answered {req.name} with {name}", message=req.name, obj=req.obj)
                    )
        elif isinstance(item, _Job):
            self._admit(item)
        elif item is _STOP:
            self._stopping = True

    def _event(self, name: str, msg: Any) -> None:
        if self._on_event is None:
            log.debug("vpp_unsolicited_message", message=name, context=getattr(msg, "context", None))
            return
        try:
            self._on_event(name, msg)
        except Exception as exc:
            log.exception("vpp_callback_failed", callback="on_event", message=name, error=repr(exc))

    def _complete(self, req: _Req, msg: Any) -> None:
        job = req.job
        job.in_flight -= 1
        retval = getattr(msg, "retval", 0)
        svc = req.service
        assert svc is not None
        if svc.details is not None and retval == _EAGAIN and hasattr(msg, "cursor"):
            # A cursor stream with more to come: ask again from the cursor.
            req.fields = {**req.fields, "cursor": msg.cursor}
            self._resend(req)
            return
        error: VppError | None = None
        if retval:
            error = VppApiError(req.name, int(retval), req.obj, msg)
        reply = req.details if svc.details is not None else msg
        self._settle(req, Result(req.name, req.obj, None if error else reply, error))

    def _resend(self, req: _Req) -> None:
        conn = self._conn
        assert conn is not None
        ctx = self._next_context()
        try:
            conn.send([conn.encode(req.name, ctx, req.fields)])
        except VppEncodeError as exc:
            self._fail(req, VppEncodeError(req.name, exc.detail, req.obj))
            return
        except OSError as exc:
            req.context = ctx
            self._window[ctx] = req
            req.job.in_flight += 1
            self._lost(f"send failed: {exc}")
            return
        req.context = ctx
        self._window[ctx] = req
        req.job.in_flight += 1

    def _fail(self, req: _Req, error: VppError) -> None:
        self._settle(req, Result(req.name, req.obj, None, error))

    def _settle(self, req: _Req, result: Result) -> None:
        job = req.job
        if job.results[req.index] is not None:
            return
        job.results[req.index] = result
        job.remaining -= 1
        if job.remaining == 0 and not job.future.done():
            job.future.set_result(job.results)  # type: ignore[arg-type]  # all set now

    def _drop_outstanding(self, make_error: Callable[[_Req, bool], VppError]) -> tuple[int, int]:
        """Fail every request in flight (sent) and not yet sent of the active jobs."""
        in_flight = self._fail_in_flight(make_error)
        unsent = 0
        active, self._active = self._active, deque()
        for job in active:
            while job.next < len(job.reqs):
                req = job.reqs[job.next]
                job.next += 1
                unsent += 1
                self._fail(req, make_error(req, False))
        return in_flight, unsent

    def _fail_in_flight(self, make_error: Callable[[_Req, bool], VppError]) -> int:
        window, self._window = self._window, {}
        for req in window.values():
            req.job.in_flight -= 1
            self._fail(req, make_error(req, True))
        return len(window)

    def _lost(self, reason: str) -> None:
        """The connection is gone: what was in flight fails (outcome unknown); what was not
        sent yet waits for the next connection (and its generation check)."""
        conn, self._conn = self._conn, None
        self._conn_id += 1
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close(graceful=False)
        in_flight = self._fail_in_flight(lambda req, sent: VppConnectionLost(req.name, sent, reason, req.obj))
        active, self._active = self._active, deque()
        waiting = [job for job in active if job.next < len(job.reqs) and not job.future.done()]
        self._held.extendleft(reversed(waiting))
        log.warning(
            "vpp_connection_lost",
            socket=self.socket_path,
            reason=reason,
            failed_in_flight=in_flight,
            requeued_jobs=len(waiting),
        )


#: Tag of the loopback interface that identifies a VPP instance (see the module docstring).
SENTINEL_TAG_PREFIX = "cvd-vpp-instance:"
