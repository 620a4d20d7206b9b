"""projectcalico.org/v3 rules -> the `felix.Rule` messages Felix sends, plus the IP sets they need.

Felix never sees a v3 rule.  Between the API and the dataplane driver a rule takes three shapes,
and this module reproduces each step as Calico v3.33 does it:

1. **v3 rule -> backend rule** (libcalico-go ``updateprocessors/rules.go``,
   ``RuleAPIV3ToBackend``).  The rule's ``selector``, ``namespaceSelector`` and
   ``serviceAccounts`` are folded into one selector per direction: namespace selectors and
   service-account selectors get their labels prefixed (``pcns.`` / ``pcsa.``), service-account
   names become ``projectcalico.org/serviceaccount in {...}``, and inside a namespaced policy a
   rule that uses any selector is limited to the policy's namespace with
   ``projectcalico.org/namespace == '<ns>'``.  ``notSelector`` is passed through untouched.  The
   action is lowercased, except ``Pass`` which becomes ``next-tier``; protocol names are
   lowercased (numbers, including numeric strings, stay numbers); CIDRs are masked.

2. **backend rule -> parsed rule** (Felix ``calc/rule_scanner.go``, ``ruleToParsedRule``).
   Selectors become IP set IDs.  A positive selector absorbs the negative one
   (``(sel) && (!(notSel))``); named ports are split from numeric ports and each becomes an
   ``IP_AND_PORT`` set filtered by the positive selector (or ``all()``) with the protocol taken
   from the rule (``any`` when the rule has none); the selector's own ``NET`` set is dropped when
   only named ports were given, because the named-port set already applies the selector.

3. **parsed rule -> proto** (Felix ``calc/rule_convert.go``, ``parsedRuleToProtoRule``): an
   ICMP-only protocol implies the IP version, ICMP type/code pick the oneof member, and rule IDs
   are chained SHA-224 hashes of each rule's serialized protobuf (``fillInRuleIDs``).

Validation follows what Calico's API would refuse (libcalico-go ``validator/v3`` and the CRD
rules on ``Rule``/``EntityRule``/``ICMPFields``): ports without a port-carrying protocol, ICMP
fields without an ICMP protocol, bare addresses or mixed IPv4/IPv6 CIDRs, a negated catch-all
CIDR, bad selectors.  Fields this project does not model (``http``, ``services``) and unknown
fields raise `ScenarioError` naming the field path, never silently dropped.  Leniency, stated:
action and protocol names are accepted in any letter case (Calico wants ``Allow``/``TCP``...).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..felix import felixbackend_pb2 as pb
from .resources import ScenarioError
from .selector import (
    ALL,
    AllNode,
    AndNode,
    GlobalNode,
    HasNode,
    LabelContainsNode,
    LabelEndsWithNode,
    LabelEqNode,
    LabelInNode,
    LabelNeNode,
    LabelNotInNode,
    LabelStartsWithNode,
    Node,
    NotNode,
    OrNode,
    Selector,
    SelectorError,
    named_port_ipset_id,
    named_port_protocol,
    parse_selector,
)

__all__ = [
    "LABEL_NAMESPACE",
    "LABEL_ORCHESTRATOR",
    "LABEL_SERVICE_ACCOUNT",
    "NAMESPACE_LABEL_PREFIX",
    "SERVICE_ACCOUNT_LABEL_PREFIX",
    "BackendRule",
    "IPSetSpec",
    "PortSpec",
    "backend_rule",
    "backend_rules",
    "convert_rule",
    "fill_rule_ids",
    "prefix_selector",
    "proto_rules",
    "scan_rule",
]

#: Label libcalico-go puts on every workload endpoint: its namespace.
LABEL_NAMESPACE = "projectcalico.org/namespace"
#: Label libcalico-go puts on every workload endpoint: "k8s".
LABEL_ORCHESTRATOR = "projectcalico.org/orchestrator"
#: Label Felix's syncer puts on every workload endpoint with a service account.
LABEL_SERVICE_ACCOUNT = "projectcalico.org/serviceaccount"
#: Prefix of namespace labels inherited from the ``kns.<ns>`` profile.
NAMESPACE_LABEL_PREFIX = "pcns."
#: Prefix of service-account labels inherited from the ``ksa.<ns>.<sa>`` profile.
SERVICE_ACCOUNT_LABEL_PREFIX = "pcsa."

# v3 protocol names (numorstring.allProtocolNames), indexed case-insensitively.
_PROTOCOL_NAMES = {n.lower(): n for n in ("TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite")}
_PORT_PROTOCOLS = frozenset({"TCP", "UDP", "SCTP", 6, 17, 132})
_ICMP_PROTOCOLS = frozenset({"ICMP", "ICMPv6", 1, 58})
_ACTIONS = {a.lower(): a for a in ("Allow", "Deny", "Log", "Pass")}
_NAMED_PORT = re.compile(r"^[a-zA-Z0-9_.-]{1,128}$")
_PORT_RANGE = re.compile(r"^(\d+):(\d+)$")

_RULE_FIELDS = frozenset(
    {"action", "ipVersion", "protocol", "notProtocol", "icmp", "notICMP", "source",
     "destination", "metadata", "http"}
)
_ENTITY_FIELDS = frozenset(
    {"nets", "notNets", "selector", "notSelector", "namespaceSelector", "ports", "notPorts",
     "serviceAccounts", "services"}
)
_UNSUPPORTED = {
    "http": "HTTP matches need an L7 proxy (Dikastes); this project does not model them",
    "services": "Kubernetes Service matches need Services and EndpointSlices, which scenarios "
    "do not describe",
}


# ---------------------------------------------------------------------------------------------
# Value types.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PortSpec:
    """One entry of a ports list: a range ``first..last`` (inclusive) or a named port."""

    first: int = 0
    last: int = 0
    name: str = ""


@dataclass(frozen=True, slots=True)
class IPSetSpec:
    """An IP set a rule needs (Felix's ``IPSetData``).

    ``protocol`` is "" for a selector set (type NET, members are the selected endpoints'
    addresses) or one of tcp/udp/sctp/any for a named-port set (type IP_AND_PORT, members
    ``<ip>,<proto>:<port>`` for each selected endpoint's port of that name).
    """

    id: str
    selector: Selector
    named_port: str = ""
    protocol: str = ""

    @property
    def ipset_type(self) -> int:
        """The `IPSetUpdate.IPSetType` Felix sends for this set."""
        return pb.IPSetUpdate.IP_AND_PORT if self.protocol else pb.IPSetUpdate.NET


@dataclass(frozen=True, slots=True)
class BackendRule:
    """A rule in libcalico-go's backend model (``model.Rule``), as the v3 conversion fills it.

    Selectors here are the combined strings the conversion writes (not yet normalised);
    protocols are in v1 form (lowercase name or number); nets are masked CIDR strings.
    Two rules are equal exactly when Felix would see equal ``model.Rule`` values.
    """

    action: str
    ip_version: int | None = None
    protocol: int | str | None = None
    not_protocol: int | str | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    not_icmp_type: int | None = None
    not_icmp_code: int | None = None
    src_nets: tuple[str, ...] = ()
    not_src_nets: tuple[str, ...] = ()
    dst_nets: tuple[str, ...] = ()
    not_dst_nets: tuple[str, ...] = ()
    src_selector: str = ""
    not_src_selector: str = ""
    dst_selector: str = ""
    not_dst_selector: str = ""
    src_ports: tuple[PortSpec, ...] = ()
    not_src_ports: tuple[PortSpec, ...] = ()
    dst_ports: tuple[PortSpec, ...] = ()
    not_dst_ports: tuple[PortSpec, ...] = ()
    original_src_selector: str = ""
    original_src_namespace_selector: str = ""
    original_dst_selector: str = ""
    original_dst_namespace_selector: str = ""
    original_not_src_selector: str = ""
    original_not_dst_selector: str = ""
    src_service_account_names: tuple[str, ...] = ()
    src_service_account_selector: str = ""
    dst_service_account_names: tuple[str, ...] = ()
    dst_service_account_selector: str = ""
    # None: no metadata; otherwise the annotations (possibly empty), sorted.
    annotations: tuple[tuple[str, str], ...] | None = None


# ---------------------------------------------------------------------------------------------
# Selector helpers.
# ---------------------------------------------------------------------------------------------


def _prefixed(node: Node, prefix: str) -> Node:
    """``node`` with every label name prefixed (libcalico-go ``parser.PrefixVisitor``)."""
    if isinstance(node, NotNode):
        return NotNode(_prefixed(node.operand, prefix))
    if isinstance(node, AndNode):
        return AndNode(tuple(_prefixed(n, prefix) for n in node.operands))
    if isinstance(node, OrNode):
        return OrNode(tuple(_prefixed(n, prefix) for n in node.operands))
    if isinstance(node, HasNode):
        return HasNode(prefix + node.label)
    if isinstance(node, (LabelInNode, LabelNotInNode)):
        return type(node)(prefix + node.label, node.values)
    if isinstance(
        node,
        (LabelEqNode, LabelNeNode, LabelContainsNode, LabelStartsWithNode, LabelEndsWithNode),
    ):
        return type(node)(prefix + node.label, node.value)
    if isinstance(node, (AllNode, GlobalNode)):
        return node
    raise TypeError(f"unknown selector node {node!r}")


def prefix_selector(text: str, prefix: str) -> str:
    """libcalico-go ``parseSelectorAttachPrefix``: parse, prefix every label, normalise.

    ``prefix_selector("k == 'v'", "pcns.")`` is ``'pcns.k == "v"'``.  Raises `SelectorError`
    for an invalid selector (Calico logs and drops it; its API would have refused it).
    """
    return Selector(_prefixed(parse_selector(text).root, prefix)).canonical()


def _check_selector(text: str, path: str) -> str:
    try:
        parse_selector(text)
    except SelectorError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    return text


# ---------------------------------------------------------------------------------------------
# Field parsers (v3 YAML values -> validated values).
# ---------------------------------------------------------------------------------------------


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ScenarioError(f"{path}: expected a mapping, got {type(value).__name__}")
    return value


def _check_fields(obj: Mapping[str, Any], allowed: frozenset[str], path: str) -> None:
    for key in obj:
        if key not in allowed:
            raise ScenarioError(f"{path}.{key}: unknown or unsupported field")
        if key in _UNSUPPORTED and obj[key] is not None:
            raise ScenarioError(f"{path}.{key}: not supported ({_UNSUPPORTED[key]})")


def _string(value: Any, path: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ScenarioError(f"{path}: expected a string, got {value!r}")
    return value


def _strings(value: Any, path: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ScenarioError(f"{path}: expected a list of strings, got {value!r}")
    return [_string(v, f"{path}[{i}]") for i, v in enumerate(value)]


def _int(value: Any, path: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScenarioError(f"{path}: expected an integer, got {value!r}")
    if not low <= value <= high:
        raise ScenarioError(f"{path}: {value} is outside {low}..{high}")
    return value


def _protocol(value: Any, path: str) -> int | str | None:
    """A v3 protocol: a number 1-255 (a numeric string counts as a number) or a name.

    Returns the number, or the name in Calico's spelling (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite).
    """
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        # numorstring.Uint8OrString: a quoted number unmarshals as a number.
        num = int(value)
        if num > 255:
            raise ScenarioError(f"{path}: protocol name invalid: {value!r}")
        value = num
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= 255:
            raise ScenarioError(f"{path}: protocol number {value} invalid (1-255)")
        return value
    if isinstance(value, str) and value.lower() in _PROTOCOL_NAMES:
        return _PROTOCOL_NAMES[value.lower()]
    raise ScenarioError(
        f"{path}: protocol name invalid: {value!r} "
        "(TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255)"
    )


def _v1_protocol(proto: int | str | None) -> int | str | None:
    """numorstring ``Protocol.ToV1``: names lowercased, numbers unchanged."""
    return proto.lower() if isinstance(proto, str) else proto


def _icmp(value: Any, path: str) -> tuple[int | None, int | None] | None:
    if value is None:
        return None
    fields = _mapping(value, path)
    _check_fields(fields, frozenset({"type", "code"}), path)
    icmp_type = fields.get("type")
    icmp_code = fields.get("code")
    if icmp_type is not None:
        icmp_type = _int(icmp_type, f"{path}.type", 0, 254)
    if icmp_code is not None:
        icmp_code = _int(icmp_code, f"{path}.code", 0, 255)
        if icmp_type is None:
            raise ScenarioError(f"{path}.code: ICMP code specified without an ICMP type")
    return icmp_type, icmp_code


def _port(value: Any, path: str) -> PortSpec:
    """numorstring.Port: an int, "<digits>", "<min>:<max>" or a port name."""
    if isinstance(value, bool):
        raise ScenarioError(f"{path}: invalid port {value!r}")
    if isinstance(value, int):
        port = _int(value, path, 0, 65535)
        return PortSpec(port, port)
    if isinstance(value, str):
        if value.isdigit():
            port = _int(int(value), path, 0, 65535)
            return PortSpec(port, port)
        m = _PORT_RANGE.match(value)
        if m:
            low = _int(int(m.group(1)), path, 0, 65535)
            high = _int(int(m.group(2)), path, 0, 65535)
            if low > high:
                raise ScenarioError(
                    f"{path}: minimum port number ({low}) is greater than maximum port "
                    f"number ({high}) in port range"
                )
            return PortSpec(low, high)
        if _NAMED_PORT.match(value):
            return PortSpec(name=value)
    raise ScenarioError(f"{path}: invalid port {value!r} (a number, 'min:max' or a port name)")


def _ports(value: Any, path: str) -> tuple[PortSpec, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ScenarioError(f"{path}: expected a list of ports, got {value!r}")
    return tuple(_port(v, f"{path}[{i}]") for i, v in enumerate(value))


def _nets(value: Any, path: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """CIDRs as Calico's validator wants them (``cnet.ParseCIDR``: a prefix length is required)."""
    out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for i, text in enumerate(_strings(value, path)):
        if "/" not in text:
            raise ScenarioError(
                f"{path}[{i}]: invalid CIDR {text!r} (Calico requires a prefix length, "
                "e.g. 10.0.0.1/32)"
            )
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ScenarioError(f"{path}[{i}]: invalid CIDR {text!r}") from None
    return out


# ---------------------------------------------------------------------------------------------
# Step 1: v3 rule -> backend rule.
# ---------------------------------------------------------------------------------------------


def _service_account_selector(sam: Mapping[str, Any], path: str) -> tuple[str, list[str], str]:
    """``parseServiceAccounts``: (combined selector, names, raw selector)."""
    _check_fields(sam, frozenset({"names", "selector"}), path)
    names = _strings(sam.get("names"), f"{path}.names")
    raw = _check_selector(_string(sam.get("selector"), f"{path}.selector"), f"{path}.selector")
    updated = prefix_selector(raw, SERVICE_ACCOUNT_LABEL_PREFIX) if raw else ""
    if not names:
        return updated, names, raw
    # Calico writes the names into a selector with single quotes and normalises it.
    names_sel = "{} in {{ '{}' }}".format(LABEL_SERVICE_ACCOUNT, "', '".join(names))
    try:
        combined = parse_selector(names_sel).canonical()
    except SelectorError as exc:
        raise ScenarioError(f"{path}.names: {exc}") from None
    if updated:
        combined = f"({updated}) && ({combined})"
    return combined, names, raw


def _endpoint_selector(
    namespace_selector: str, selector: str, sa_selector: str, not_selector: str, namespace: str
) -> str:
    """libcalico-go ``getEndpointSelector``: one selector for an entity rule."""
    ns_selector = ""
    if namespace_selector:
        ns_selector = prefix_selector(namespace_selector, NAMESPACE_LABEL_PREFIX)
        # all() means "every namespace", i.e. every namespaced endpoint; global() means none.
        ns_selector = ns_selector.replace("all()", f"has({LABEL_NAMESPACE})")
        ns_selector = ns_selector.replace("global()", f"!has({LABEL_NAMESPACE})")
    elif namespace:
        ns_selector = f"{LABEL_NAMESPACE} == '{namespace}'"

    parts = [s for s in (sa_selector, selector) if s]
    combined = ""
    if len(parts) == 1:
        combined = parts[0]
    elif parts:
        combined = "(" + ") && (".join(parts) + ")"

    if ns_selector and (combined or not_selector or namespace_selector):
        combined = f"({ns_selector}) && ({combined})" if combined else ns_selector
    return combined


@dataclass(frozen=True, slots=True)
class _Entity:
    nets: tuple[str, ...]
    not_nets: tuple[str, ...]
    selector: str  # combined
    not_selector: str
    ports: tuple[PortSpec, ...]
    not_ports: tuple[PortSpec, ...]
    original_selector: str
    original_namespace_selector: str
    sa_names: tuple[str, ...]
    sa_selector: str


def _entity(value: Any, namespace: str, path: str, seen_families: set[int],
            ip_version: int | None) -> _Entity:
    er = _mapping(value, path)
    _check_fields(er, _ENTITY_FIELDS, path)

    selector = _check_selector(_string(er.get("selector"), f"{path}.selector"), f"{path}.selector")
    if "global(" in selector:
        raise ScenarioError(
            f"{path}.selector: global() can only be used in an EntityRule namespaceSelector"
        )
    not_selector = _check_selector(
        _string(er.get("notSelector"), f"{path}.notSelector"), f"{path}.notSelector"
    )
    ns_selector = _check_selector(
        _string(er.get("namespaceSelector"), f"{path}.namespaceSelector"),
        f"{path}.namespaceSelector",
    )
    if "global(" in ns_selector and ns_selector.strip() != "global()":
        raise ScenarioError(
            f"{path}.namespaceSelector: global() must be the whole namespace selector"
        )

    sa_selector, sa_raw = "", ""
    sa_names: list[str] = []
    if er.get("serviceAccounts") is not None:
        sa_selector, sa_names, sa_raw = _service_account_selector(
            _mapping(er["serviceAccounts"], f"{path}.serviceAccounts"), f"{path}.serviceAccounts"
        )

    nets_out: dict[str, tuple[str, ...]] = {}
    for field in ("nets", "notNets"):
        nets = _nets(er.get(field), f"{path}.{field}")
        families = {n.version for n in nets}
        if ip_version is not None and families - {ip_version}:
            raise ScenarioError(f"{path}.{field}: rule IP version doesn't match CIDR version")
        seen_families |= families
        if len(seen_families) > 1:
            raise ScenarioError(f"{path}.{field}: rule contains both IPv4 and IPv6 CIDRs")
        if field == "notNets":
            # validateRule's check, literally: "0.0.0.0/0" as written, or any IPv6 /0.
            texts = _strings(er.get(field), f"{path}.{field}")
            for text, n in zip(texts, nets, strict=True):
                if text == "0.0.0.0/0" or (n.version == 6 and n.prefixlen == 0):
                    raise ScenarioError(
                        f"{path}.notNets: catch-all CIDR {text} in negation creates a logical "
                        "contradiction (matches no traffic)"
                    )
        nets_out[field] = tuple(str(n) for n in nets)

    return _Entity(
        nets=nets_out["nets"],
        not_nets=nets_out["notNets"],
        selector=_endpoint_selector(ns_selector, selector, sa_selector, not_selector, namespace),
        not_selector=not_selector,
        ports=_ports(er.get("ports"), f"{path}.ports"),
        not_ports=_ports(er.get("notPorts"), f"{path}.notPorts"),
        original_selector=selector,
        original_namespace_selector=ns_selector,
        sa_names=tuple(sa_names),
        sa_selector=sa_raw,
    )


def backend_rule(rule: Any, *, namespace: str = "", path: str = "rule") -> BackendRule:
    """Convert one v3 rule (a dict as in YAML) the way libcalico-go's ``RuleAPIV3ToBackend`` does.

    ``namespace`` is the policy's namespace ("" for global policies and profiles).  Raises
    `ScenarioError` naming ``path`` plus the offending field.
    """
    r = _mapping(rule, path)
    _check_fields(r, _RULE_FIELDS, path)

    raw_action = r.get("action")
    if not isinstance(raw_action, str) or raw_action.lower() not in _ACTIONS:
        raise ScenarioError(f"{path}.action: must be one of Allow, Deny, Log, Pass, got {raw_action!r}")
    action = _ACTIONS[raw_action.lower()]

    ip_version = r.get("ipVersion")
    if ip_version is not None:
        if isinstance(ip_version, bool) or ip_version not in (4, 6):
            raise ScenarioError(f"{path}.ipVersion: must be 4 or 6, got {ip_version!r}")

    protocol = _protocol(r.get("protocol"), f"{path}.protocol")
    not_protocol = _protocol(r.get("notProtocol"), f"{path}.notProtocol")
    icmp = _icmp(r.get("icmp"), f"{path}.icmp")
    not_icmp = _icmp(r.get("notICMP"), f"{path}.notICMP")

    # CRD rules on Rule: ICMP needs an ICMP protocol; ICMP/ICMPv6 pin the IP version.
    if icmp is not None and protocol not in _ICMP_PROTOCOLS:
        raise ScenarioError(f"{path}.icmp: ICMP fields require protocol to be ICMP or ICMPv6")
    for field, proto in (("protocol", protocol), ("notProtocol", not_protocol)):
        if proto in ("ICMP", 1) and ip_version not in (None, 4):
            raise ScenarioError(f"{path}.{field}: protocol ICMP requires ipVersion 4")
        if proto in ("ICMPv6", 58) and ip_version not in (None, 6):
            raise ScenarioError(f"{path}.{field}: protocol ICMPv6 requires ipVersion 6")

    families: set[int] = set()
    src = _entity(r.get("source"), namespace, f"{path}.source", families, ip_version)
    dst = _entity(r.get("destination"), namespace, f"{path}.destination", families, ip_version)

    # validateRule: numeric ports need TCP/UDP/SCTP; a protocol without ports allows no ports.
    for side, ent in (("source", src), ("destination", dst)):
        for field, ports in (("ports", ent.ports), ("notPorts", ent.not_ports)):
            if not ports:
                continue
            if protocol is None:
                if any(not p.name for p in ports):
                    raise ScenarioError(
                        f"{path}.{side}.{field}: rules that specify ports must set protocol "
                        "to TCP, UDP or SCTP"
                    )
            elif protocol not in _PORT_PROTOCOLS:
                raise ScenarioError(
                    f"{path}.{side}.{field}: protocol {protocol} does not support ports"
                )

    annotations: tuple[tuple[str, str], ...] | None = None
    if r.get("metadata") is not None:
        meta = _mapping(r["metadata"], f"{path}.metadata")
        _check_fields(meta, frozenset({"annotations"}), f"{path}.metadata")
        if meta.get("annotations") is not None:
            ann = _mapping(meta["annotations"], f"{path}.metadata.annotations")
            annotations = tuple(
                sorted(
                    (_string(k, f"{path}.metadata.annotations"),
                     _string(v, f"{path}.metadata.annotations.{k}"))
                    for k, v in ann.items()
                )
            )

    icmp_type, icmp_code = icmp if icmp is not None else (None, None)
    not_icmp_type, not_icmp_code = not_icmp if not_icmp is not None else (None, None)
    return BackendRule(
        action="next-tier" if action == "Pass" else action.lower(),
        ip_version=ip_version,
        protocol=_v1_protocol(protocol),
        not_protocol=_v1_protocol(not_protocol),
        icmp_type=icmp_type,
        icmp_code=icmp_code,
        not_icmp_type=not_icmp_type,
        not_icmp_code=not_icmp_code,
        src_nets=src.nets,
        not_src_nets=src.not_nets,
        dst_nets=dst.nets,
        not_dst_nets=dst.not_nets,
        src_selector=src.selector,
        not_src_selector=src.not_selector,
        dst_selector=dst.selector,
        not_dst_selector=dst.not_selector,
        src_ports=src.ports,
        not_src_ports=src.not_ports,
        dst_ports=dst.ports,
        not_dst_ports=dst.not_ports,
        original_src_selector=src.original_selector,
        original_src_namespace_selector=src.original_namespace_selector,
        original_dst_selector=dst.original_selector,
        original_dst_namespace_selector=dst.original_namespace_selector,
        original_not_src_selector=src.not_selector,
        original_not_dst_selector=dst.not_selector,
        src_service_account_names=src.sa_names,
        src_service_account_selector=src.sa_selector,
        dst_service_account_names=dst.sa_names,
        dst_service_account_selector=dst.sa_selector,
        annotations=annotations,
    )


def backend_rules(rules: Any, *, namespace: str = "", path: str = "rules") -> tuple[BackendRule, ...]:
    """`backend_rule` over a list (None or absent means no rules)."""
    if rules is None:
        return ()
    if isinstance(rules, (str, bytes, Mapping)) or not isinstance(rules, Sequence):
        raise ScenarioError(f"{path}: expected a list of rules, got {type(rules).__name__}")
    return tuple(
        backend_rule(r, namespace=namespace, path=f"{path}[{i}]") for i, r in enumerate(rules)
    )


# ---------------------------------------------------------------------------------------------
# Step 2: backend rule -> parsed rule (IP sets), and step 3: -> proto.
# ---------------------------------------------------------------------------------------------


def _combine(positive: str, negative: str) -> tuple[str, str]:
    """rule_scanner ``combineMatchesIfPossible``: fold the negative selector into the positive."""
    if positive and negative:
        return f"({positive}) && (!({negative}))", ""
    return positive, negative


def _parse(text: str) -> list[Selector]:
    return [parse_selector(text)] if text else []


def _split_ports(ports: Iterable[PortSpec]) -> tuple[list[PortSpec], list[str]]:
    numeric = [p for p in ports if not p.name]
    named = [p.name for p in ports if p.name]
    return numeric, named


def _named_port_sets(names: list[str], positive: list[Selector], proto: str) -> list[IPSetSpec]:
    sel = positive[0] if positive else ALL
    return [
        IPSetSpec(named_port_ipset_id(sel, proto, name), sel, named_port=name, protocol=proto)
        for name in names
    ]


def _selector_sets(selectors: list[Selector]) -> list[IPSetSpec]:
    return [IPSetSpec(s.unique_id(), s) for s in selectors]


def _ip_version(rule: BackendRule) -> int:
    """rule_convert ``ipVersionToProtoIPVersion``: explicit, or implied by icmp/icmpv6."""
    if rule.ip_version is None:
        if rule.protocol == "icmp":
            return pb.IPV4
        if rule.protocol == "icmpv6":
            return pb.IPV6
        return pb.ANY
    return pb.IPV4 if rule.ip_version == 4 else pb.IPV6


def _set_protocol(msg: pb.Protocol, proto: int | str) -> None:
    if isinstance(proto, int):
        msg.number = proto
    else:
        msg.name = proto


def _port_ranges(ports: Iterable[PortSpec]) -> list[pb.PortRange]:
    return [pb.PortRange(first=p.first, last=p.last) for p in ports]


def scan_rule(rule: BackendRule) -> tuple[pb.Rule, tuple[IPSetSpec, ...]]:
    """Felix's ``ruleToParsedRule`` + ``parsedRuleToProtoRule``: the proto rule (no rule ID yet)
    and every IP set it references (named-port sets first, as Felix lists them)."""
    src_raw, not_src_raw = _combine(rule.src_selector, rule.not_src_selector)
    dst_raw, not_dst_raw = _combine(rule.dst_selector, rule.not_dst_selector)
    src_sel, dst_sel = _parse(src_raw), _parse(dst_raw)
    not_src_sel, not_dst_sel = _parse(not_src_raw), _parse(not_dst_raw)

    src_numeric, src_named = _split_ports(rule.src_ports)
    dst_numeric, dst_named = _split_ports(rule.dst_ports)
    not_src_numeric, not_src_named = _split_ports(rule.not_src_ports)
    not_dst_numeric, not_dst_named = _split_ports(rule.not_dst_ports)

    proto = named_port_protocol(rule.protocol)
    # Named ports (negated ones too) are filtered by the positive selector of their side.
    src_np = _named_port_sets(src_named, src_sel, proto)
    dst_np = _named_port_sets(dst_named, dst_sel, proto)
    not_src_np = _named_port_sets(not_src_named, src_sel, proto)
    not_dst_np = _named_port_sets(not_dst_named, dst_sel, proto)

    # The selector's own set is redundant when only named ports (already filtered) were given.
    src_sets = _selector_sets(src_sel) if src_numeric or not src_named else []
    dst_sets = _selector_sets(dst_sel) if dst_numeric or not dst_named else []
    not_src_sets = _selector_sets(not_src_sel)
    not_dst_sets = _selector_sets(not_dst_sel)

    out = pb.Rule(action=rule.action, ip_version=_ip_version(rule))  # type: ignore[arg-type]
    if rule.protocol is not None:
        _set_protocol(out.protocol, rule.protocol)
    if rule.not_protocol is not None:
        _set_protocol(out.not_protocol, rule.not_protocol)
    out.src_net.extend(rule.src_nets)
    out.src_ports.extend(_port_ranges(src_numeric))
    out.src_named_port_ip_set_ids.extend(s.id for s in src_np)
    out.dst_net.extend(rule.dst_nets)
    out.dst_ports.extend(_port_ranges(dst_numeric))
    out.dst_named_port_ip_set_ids.extend(s.id for s in dst_np)
    out.src_ip_set_ids.extend(s.id for s in src_sets)
    out.dst_ip_set_ids.extend(s.id for s in dst_sets)
    out.not_src_net.extend(rule.not_src_nets)
    out.not_src_ports.extend(_port_ranges(not_src_numeric))
    out.not_src_named_port_ip_set_ids.extend(s.id for s in not_src_np)
    out.not_dst_net.extend(rule.not_dst_nets)
    out.not_dst_ports.extend(_port_ranges(not_dst_numeric))
    out.not_dst_named_port_ip_set_ids.extend(s.id for s in not_dst_np)
    out.not_src_ip_set_ids.extend(s.id for s in not_src_sets)
    out.not_dst_ip_set_ids.extend(s.id for s in not_dst_sets)

    if rule.icmp_type is not None:
        if rule.icmp_code is not None:
            out.icmp_type_code.type = rule.icmp_type
            out.icmp_type_code.code = rule.icmp_code
        else:
            out.icmp_type = rule.icmp_type
    if rule.not_icmp_type is not None:
        if rule.not_icmp_code is not None:
            out.not_icmp_type_code.type = rule.not_icmp_type
            out.not_icmp_type_code.code = rule.not_icmp_code
        else:
            out.not_icmp_type = rule.not_icmp_type

    out.original_src_selector = rule.original_src_selector
    out.original_dst_selector = rule.original_dst_selector
    out.original_src_namespace_selector = rule.original_src_namespace_selector
    out.original_dst_namespace_selector = rule.original_dst_namespace_selector
    out.original_not_src_selector = rule.original_not_src_selector
    out.original_not_dst_selector = rule.original_not_dst_selector
    if rule.src_service_account_names or rule.src_service_account_selector:
        out.src_service_account_match.selector = rule.src_service_account_selector
        out.src_service_account_match.names.extend(rule.src_service_account_names)
    if rule.dst_service_account_names or rule.dst_service_account_selector:
        out.dst_service_account_match.selector = rule.dst_service_account_selector
        out.dst_service_account_match.names.extend(rule.dst_service_account_names)
    if rule.annotations is not None:
        out.metadata.SetInParent()
        out.metadata.annotations.update(dict(rule.annotations))

    ipsets = (
        src_np + dst_np + not_src_np + not_dst_np + src_sets + dst_sets + not_src_sets + not_dst_sets
    )
    return out, tuple(ipsets)


#: Length of a rule ID (calc.RuleIDLength).
RULE_ID_LENGTH = 16


def fill_rule_ids(rules: Sequence[pb.Rule], seed: str) -> None:
    """Felix's ``fillInRuleIDs``: chained SHA-224 over the seed and each rule's serialization.

    ``hash_0 = sha224(seed)``; ``hash_i = sha224(hash_{i-1} + marshal(rule_i without rule_id))``;
    the ID is the first 16 characters of ``hash_i`` in unpadded URL-safe base64.  Go's marshaller
    and Python's both write known fields in field-number order; map entries (rule annotations)
    are written sorted here, where Go's order is unspecified.
    """
    digest = hashlib.sha224(seed.encode("utf-8", "surrogateescape")).digest()
    for rule in rules:
        rule.rule_id = ""
        data = rule.SerializeToString(deterministic=True)
        digest = hashlib.sha224(digest + data).digest()
        rule.rule_id = base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")[:RULE_ID_LENGTH]


def proto_rules(
    rules: Sequence[BackendRule], seed: str
) -> tuple[list[pb.Rule], dict[str, IPSetSpec]]:
    """Felix's ``parsedRulesToProtoRules`` for one list: proto rules with IDs, and their IP sets.

    Seeds, as Felix's event sequencer uses them: ``pol-in-default/<policy name>``,
    ``pol-out-default/<policy name>``, ``prof-in-<profile>``, ``prof-out-<profile>``.
    """
    out: list[pb.Rule] = []
    ipsets: dict[str, IPSetSpec] = {}
    for rule in rules:
        msg, sets = scan_rule(rule)
        out.append(msg)
        for s in sets:
            ipsets.setdefault(s.id, s)
    fill_rule_ids(out, seed)
    return out, ipsets


def convert_rule(
    rule: Any, *, namespace: str = "", path: str = "rule", seed: str | None = None
) -> tuple[pb.Rule, tuple[IPSetSpec, ...]]:
    """One v3 rule (dict) -> (proto ``felix.Rule``, the IP sets it needs), in one call.

    With ``seed`` the rule gets the ID it would have as the first rule of a list with that seed;
    without, ``rule_id`` is left empty.
    """
    msg, sets = scan_rule(backend_rule(rule, namespace=namespace, path=path))
    if seed is not None:
        fill_rule_ids([msg], seed)
    return msg, sets
