"""Kubernetes ``networking.k8s.io/v1`` NetworkPolicy -> the Calico policy Felix receives.

In a cluster a NetworkPolicy manifest goes through two programs before Felix sees it, and this module
reproduces both so that a scenario's Kubernetes policies reach the Felix calculation exactly as they
would in a real cluster:

1. **The Kubernetes API server** decodes the manifest strictly (unknown fields and wrongly typed
   values are rejected), applies the defaults of ``pkg/apis/networking/v1/defaults.go`` (a port's
   ``protocol`` defaults to ``TCP``; an empty ``policyTypes`` becomes ``[Ingress]``, plus ``Egress``
   when there are egress rules) and validates the result as ``pkg/apis/networking/validation``
   does.  Anything the API server would refuse raises ``ScenarioError`` naming the offending field
   path (``spec.ingress[0].ports[1].endPort``), with every problem found, as the API server lists
   them.  CIDRs are checked the way the API server does with its ``StrictIPCIDRValidation``
   feature gate off (its default, alpha since Kubernetes 1.33): host bits, leading zeros and
   IPv4-mapped IPv6 addresses are accepted.

2. **Calico v3.33's converter** (``libcalico-go/lib/backend/k8s/conversion/conversion.go``,
   ``K8sNetworkPolicyToCalico``) turns the stored object into a ``projectcalico.org/v3``
   NetworkPolicy spec: tier ``default``, order 1000, endpoint selector
   ``projectcalico.org/orchestrator == 'k8s' && <pod selector>``, and, per Kubernetes rule, one
   ``Allow`` rule for every (protocol, peer) pair, protocols in sorted order and each rule carrying
   all of that protocol's ports (merged into ranges by ``SimplifyPorts``).  The result is a plain
   dict with Calico's v3 JSON field names and Go's ``omitempty``/``omitzero`` behaviour: empty
   fields are absent.  Selector strings are written character for character as Calico writes them
   (``k in { 'a', 'b' }``, ``! has(k)``), since Felix hashes the normalised form of what they
   become into IP set IDs.

What this module deliberately does *not* do, because Calico does it later (in the Felix syncer's
update processor, ``libcalico-go/lib/backend/syncersv1/updateprocessors``), and the Felix
calculation must therefore do it for Kubernetes and Calico policies alike: ANDing the endpoint
selector with ``projectcalico.org/namespace == '<ns>'``, prefixing namespace-selector labels with
``pcns.`` (and turning ``all()`` into ``has(projectcalico.org/namespace)``), and restricting a rule
selector without a namespace selector to the policy's own namespace.

Two Calico behaviours are reproduced even though they look surprising:

* An ``ipBlock`` whose ``cidr`` the API server accepts but Go's ``net.ParseCIDR`` rejects (an IPv4
  address with a leading zero such as ``010.0.0.0/8``) becomes a peer with no criteria at all, i.e.
  the rule matches every address; an ``except`` entry that fails to parse drops it and every later
  entry.  Calico only logs an error; this module logs a warning.
* ``policyTypes: [Egress]`` with ingress rules keeps the ingress rules in the spec (only ``types``
  says they do not apply).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import structlog

from calico_vpp_driver.scenario.resources import PolicyResource, ScenarioError

__all__ = [
    "API_VERSION",
    "DEFAULT_TIER",
    "FELIX_KIND",
    "KIND",
    "ORCHESTRATOR_SELECTOR",
    "POLICY_ORDER",
    "CalicoPort",
    "IPBlock",
    "LabelSelector",
    "LabelSelectorRequirement",
    "NetworkPolicy",
    "NetworkPolicyPeer",
    "NetworkPolicyPort",
    "NetworkPolicyRule",
    "NetworkPolicySpec",
    "apply_defaults",
    "convert_network_policy",
    "decode_network_policy",
    "k8s_selector_to_calico",
    "network_policy_to_calico_spec",
    "simplify_ports",
    "validate_network_policy",
]

log = structlog.get_logger("calico_vpp_driver.scenario.k8s")

API_VERSION = "networking.k8s.io/v1"
KIND = "NetworkPolicy"
#: The PolicyID kind Felix uses for a converted Kubernetes policy (model.KindKubernetesNetworkPolicy).
FELIX_KIND = "KubernetesNetworkPolicy"
#: Every converted Kubernetes policy sits at this order in the default tier.
POLICY_ORDER = 1000.0
DEFAULT_TIER = "default"
#: The term Calico puts in front of every pod selector it converts (apiv3.LabelOrchestrator).
ORCHESTRATOR_SELECTOR = "projectcalico.org/orchestrator == 'k8s'"

_PROTOCOLS = ("TCP", "UDP", "SCTP")
_POLICY_TYPES = ("Ingress", "Egress")
_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


# ---------------------------------------------------------------------------------------------
# The decoded object: networking.k8s.io/v1 types, with Go's "absent" (nil) kept as None.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelSelectorRequirement:
    """One ``matchExpressions`` entry."""

    key: str
    operator: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSelector:
    """A metav1.LabelSelector; ``match_labels`` keeps the manifest's key order."""

    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.match_expressions


@dataclass(frozen=True)
class IPBlock:
    cidr: str
    except_: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetworkPolicyPeer:
    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class NetworkPolicyPort:
    """``port`` is an int (numeric port) or a str (named port), as intstr.IntOrString."""

    protocol: str | None = None
    port: int | str | None = None
    end_port: int | None = None


@dataclass(frozen=True)
class NetworkPolicyRule:
    """An ingress or egress rule; ``peers`` is ``from`` for ingress and ``to`` for egress."""

    ports: tuple[NetworkPolicyPort, ...] = ()
    peers: tuple[NetworkPolicyPeer, ...] = ()


@dataclass(frozen=True)
class NetworkPolicySpec:
    pod_selector: LabelSelector = field(default_factory=LabelSelector)
    ingress: tuple[NetworkPolicyRule, ...] = ()
    egress: tuple[NetworkPolicyRule, ...] = ()
    policy_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetworkPolicy:
    name: str
    namespace: str
    spec: NetworkPolicySpec
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Strict decoding, as the API server's JSON decoder with fieldValidation=Strict (kubectl's
# default): unknown fields and values of the wrong type are errors, null means "absent".
# ---------------------------------------------------------------------------------------------

_OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)


class _Decoder:
    """Reads a manifest into the dataclasses above, collecting every problem it meets."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, path: str, problem: str) -> None:
        self.errors.append(f"{path}: {problem}")

    def type_error(self, path: str, expected: str, value: object) -> None:
        self.fail(path, f"Invalid type: expected {expected}, got {_type_name(value)}")

    def obj(
        self, value: object, path: str, allowed: frozenset[str] | tuple[str, ...]
    ) -> dict[str, Any] | None:
        """A JSON object with only ``allowed`` keys; None when absent or wrong."""
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.type_error(path, "object", value)
            return None
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                self.type_error(f"{path}", "string keys", key)
                continue
            if key not in allowed:
                where = f"{path}.{key}" if path else key
                self.errors.append(f'unknown field "{where}"')
                continue
            out[key] = item
        return out

    def string(self, value: object, path: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.type_error(path, "string", value)
            return None
        return value

    def int32(self, value: object, path: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.type_error(path, "integer", value)
            return None
        if not _INT32_MIN <= value <= _INT32_MAX:
            self.fail(path, f"Invalid value: {value}: does not fit in a 32-bit integer")
            return None
        return value

    def int_or_string(self, value: object, path: str) -> int | str | None:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return self.int32(value, path)
        self.type_error(path, "integer or string", value)
        return None

    def items(self, value: object, path: str) -> list[tuple[str, Any]]:
        """The elements of a JSON array with their paths; [] when absent or wrong."""
        if value is None:
            return []
        if not isinstance(value, list | tuple):
            self.type_error(path, "array", value)
            return []
        return [(f"{path}[{i}]", item) for i, item in enumerate(value)]

    def string_list(self, value: object, path: str) -> tuple[str, ...]:
        out: list[str] = []
        for item_path, item in self.items(value, path):
            # A JSON null inside a []string decodes to "" in Go.
            text = "" if item is None else self.string(item, item_path)
            if text is not None:
                out.append(text)
        return tuple(out)

    def string_map(self, value: object, path: str) -> dict[str, str]:
        raw = self.obj_any(value, path)
        out: dict[str, str] = {}
        for key, item in raw.items():
            if not isinstance(key, str):
                self.type_error(path, "string keys", key)
                continue
            text = "" if item is None else self.string(item, f"{path}.{key}")
            if text is not None:
                out[key] = text
        return out

    def obj_any(self, value: object, path: str) -> Mapping[Any, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.type_error(path, "object", value)
            return {}
        return value

    # -- the NetworkPolicy types ---------------------------------------------------------------

    def label_selector(self, value: object, path: str) -> LabelSelector | None:
        raw = self.obj(value, path, ("matchLabels", "matchExpressions"))
        if raw is None:
            return None
        exprs: list[LabelSelectorRequirement] = []
        for item_path, item in self.items(raw.get("matchExpressions"), f"{path}.matchExpressions"):
            req = self.obj(item, item_path, ("key", "operator", "values"))
            if req is None:
                if item is None:  # Go decodes a null element to the zero value, which then fails validation
                    exprs.append(LabelSelectorRequirement("", ""))
                continue
            exprs.append(
                LabelSelectorRequirement(
                    key=self.string(req.get("key"), f"{item_path}.key") or "",
                    operator=self.string(req.get("operator"), f"{item_path}.operator") or "",
                    values=self.string_list(req.get("values"), f"{item_path}.values"),
                )
            )
        return LabelSelector(
            match_labels=self.string_map(raw.get("matchLabels"), f"{path}.matchLabels"),
            match_expressions=tuple(exprs),
        )

    def peer(self, value: object, path: str) -> NetworkPolicyPeer:
        raw = self.obj(value, path, ("podSelector", "namespaceSelector", "ipBlock")) or {}
        ip_block: IPBlock | None = None
        block = self.obj(raw.get("ipBlock"), f"{path}.ipBlock", ("cidr", "except"))
        if block is not None:
            ip_block = IPBlock(
                cidr=self.string(block.get("cidr"), f"{path}.ipBlock.cidr") or "",
                except_=self.string_list(block.get("except"), f"{path}.ipBlock.except"),
            )
        return NetworkPolicyPeer(
            pod_selector=self.label_selector(raw.get("podSelector"), f"{path}.podSelector"),
            namespace_selector=self.label_selector(raw.get("namespaceSelector"), f"{path}.namespaceSelector"),
            ip_block=ip_block,
        )

    def port(self, value: object, path: str) -> NetworkPolicyPort:
        raw = self.obj(value, path, ("protocol", "port", "endPort")) or {}
        return NetworkPolicyPort(
            protocol=self.string(raw.get("protocol"), f"{path}.protocol"),
            port=self.int_or_string(raw.get("port"), f"{path}.port"),
            end_port=self.int32(raw.get("endPort"), f"{path}.endPort"),
        )

    def rule(self, value: object, path: str, peers_key: str) -> NetworkPolicyRule:
        raw = self.obj(value, path, ("ports", peers_key)) or {}
        return NetworkPolicyRule(
            ports=tuple(self.port(v, p) for p, v in self.items(raw.get("ports"), f"{path}.ports")),
            peers=tuple(self.peer(v, p) for p, v in self.items(raw.get(peers_key), f"{path}.{peers_key}")),
        )

    def spec(self, value: object) -> NetworkPolicySpec:
        raw = self.obj(value, "spec", ("podSelector", "ingress", "egress", "policyTypes")) or {}
        return NetworkPolicySpec(
            # podSelector is not a pointer in Go: absent or null is the empty selector.
            pod_selector=self.label_selector(raw.get("podSelector"), "spec.podSelector") or LabelSelector(),
            ingress=tuple(self.rule(v, p, "from") for p, v in self.items(raw.get("ingress"), "spec.ingress")),
            egress=tuple(self.rule(v, p, "to") for p, v in self.items(raw.get("egress"), "spec.egress")),
            policy_types=self.string_list(raw.get("policyTypes"), "spec.policyTypes"),
        )


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _describe(manifest: object) -> str:
    name = "?"
    if isinstance(manifest, Mapping):
        meta = manifest.get("metadata")
        if isinstance(meta, Mapping) and isinstance(meta.get("name"), str):
            name = meta["name"]
    return f'NetworkPolicy.networking.k8s.io "{name}"'


def _raise(manifest: object, what: str, errors: Sequence[str]) -> NoReturn:
    # The API server writes "[a, b]"; its messages contain commas, so "; " separates them here.
    body = errors[0] if len(errors) == 1 else "[" + "; ".join(errors) + "]"
    raise ScenarioError(f"{_describe(manifest)} {what}: {body}")


def decode_network_policy(manifest: Mapping[str, Any]) -> NetworkPolicy:
    """Decode a manifest strictly, as the API server does; no defaults, no validation yet.

    A missing ``metadata.namespace`` becomes ``default``, which is what ``kubectl apply`` does
    with a manifest that names none (and no ``-n``).
    """
    dec = _Decoder()
    top = dec.obj(manifest, "", ("apiVersion", "kind", "metadata", "spec"))
    if top is None:
        raise ScenarioError(f"a NetworkPolicy manifest must be a mapping, not {_type_name(manifest)}")
    api_version = dec.string(top.get("apiVersion"), "apiVersion")
    kind = dec.string(top.get("kind"), "kind")
    if api_version is None:
        dec.fail("apiVersion", "Required value")
    elif api_version != API_VERSION:
        dec.fail("apiVersion", f'Unsupported value: "{api_version}": supported values: "{API_VERSION}"')
    if kind is None:
        dec.fail("kind", "Required value")
    elif kind != KIND:
        dec.fail("kind", f'Unsupported value: "{kind}": supported values: "{KIND}"')
    meta = dec.obj(top.get("metadata"), "metadata", _OBJECT_META_FIELDS) or {}
    name = dec.string(meta.get("name"), "metadata.name") or ""
    namespace = dec.string(meta.get("namespace"), "metadata.namespace")
    labels = dec.string_map(meta.get("labels"), "metadata.labels")
    annotations = dec.string_map(meta.get("annotations"), "metadata.annotations")
    spec = dec.spec(top.get("spec"))
    if dec.errors:
        _raise(manifest, "could not be decoded (strict decoding error)", dec.errors)
    return NetworkPolicy(
        name=name,
        namespace="default" if namespace is None else namespace,
        spec=spec,
        labels=labels,
        annotations=annotations,
    )


# ---------------------------------------------------------------------------------------------
# API-server defaulting (pkg/apis/networking/v1/defaults.go).
# ---------------------------------------------------------------------------------------------


def apply_defaults(np: NetworkPolicy) -> NetworkPolicy:
    """The API server's defaults: TCP for a port without protocol; policyTypes from the rules."""

    def rules(rs: tuple[NetworkPolicyRule, ...]) -> tuple[NetworkPolicyRule, ...]:
        return tuple(
            NetworkPolicyRule(
                ports=tuple(
                    NetworkPolicyPort(
                        protocol="TCP" if p.protocol is None else p.protocol,
                        port=p.port,
                        end_port=p.end_port,
                    )
                    for p in r.ports
                ),
                peers=r.peers,
            )
            for r in rs
        )

    spec = np.spec
    types = spec.policy_types
    if not types:
        # Every policy is at least an ingress policy; an egress section makes it an egress one too.
        types = ("Ingress", "Egress") if spec.egress else ("Ingress",)
    new_spec = NetworkPolicySpec(
        pod_selector=spec.pod_selector,
        ingress=rules(spec.ingress),
        egress=rules(spec.egress),
        policy_types=types,
    )
    return NetworkPolicy(np.name, np.namespace, new_spec, np.labels, np.annotations)


# ---------------------------------------------------------------------------------------------
# API-server validation (pkg/apis/networking/validation, apimachinery's label and name checks).
# ---------------------------------------------------------------------------------------------

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_PORT_NAME_CHARS = re.compile(r"[-a-z0-9]+")


def _go_quote(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def _invalid(path: str, value: object, detail: str) -> str:
    return f"{path}: Invalid value: {_go_quote(value)}: {detail}"


def _dns1123_subdomain_problems(value: str) -> list[str]:
    problems = []
    if len(value) > 253:
        problems.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        problems.append(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
            "'-' or '.', and must start and end with an alphanumeric character"
        )
    return problems


def _qualified_name_problems(value: str) -> list[str]:
    problems: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            problems.append("prefix part must be non-empty")
        else:
            problems.extend("prefix part " + p for p in _dns1123_subdomain_problems(prefix))
    else:
        return [
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character, with an optional DNS subdomain prefix "
            "and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        problems.append("name part must be non-empty")
    elif len(name) > 63:
        problems.append("name part must be no more than 63 characters")
    if not _QUALIFIED_NAME.fullmatch(name):
        problems.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start "
            "and end with an alphanumeric character"
        )
    return problems


def _label_value_problems(value: str) -> list[str]:
    problems = []
    if len(value) > 63:
        problems.append("must be no more than 63 characters")
    if not _LABEL_VALUE.fullmatch(value):
        problems.append(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', "
            "'_' or '.', and must start and end with an alphanumeric character"
        )
    return problems


def _port_name_problems(value: str) -> list[str]:
    # IANA_SVC_NAME (validation.IsValidPortName).
    problems = []
    if len(value) > 15:
        problems.append("must be no more than 15 characters")
    if not _PORT_NAME_CHARS.fullmatch(value):
        problems.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search(r"[a-z]", value):
        problems.append("must contain at least one letter (a-z)")
    if "--" in value:
        problems.append("must not contain consecutive hyphens")
    if value and (value[0] == "-" or value[-1] == "-"):
        problems.append("must not begin or end with a hyphen")
    return problems


def _validate_labels(labels: Mapping[str, str], path: str) -> list[str]:
    errs: list[str] = []
    for key, value in labels.items():
        errs.extend(_invalid(path, key, p) for p in _qualified_name_problems(key))
        errs.extend(_invalid(f"{path}[{key}]", value, p) for p in _label_value_problems(value))
    return errs


def _validate_label_selector(sel: LabelSelector | None, path: str) -> list[str]:
    if sel is None:
        return []
    errs = _validate_labels(sel.match_labels, f"{path}.matchLabels")
    for i, req in enumerate(sel.match_expressions):
        rpath = f"{path}.matchExpressions[{i}]"
        if req.operator in ("In", "NotIn"):
            if not req.values:
                errs.append(
                    f"{rpath}.values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
                )
        elif req.operator in ("Exists", "DoesNotExist"):
            if req.values:
                errs.append(
                    f"{rpath}.values: Forbidden: may not be specified when `operator` is "
                    "'Exists' or 'DoesNotExist'"
                )
        else:
            errs.append(_invalid(f"{rpath}.operator", req.operator, "not a valid selector operator"))
        errs.extend(_invalid(f"{rpath}.key", req.key, p) for p in _qualified_name_problems(req.key))
        for j, value in enumerate(req.values):
            errs.extend(_invalid(f"{rpath}.values[{j}]", value, p) for p in _label_value_problems(value))
    return errs


def _validate_port(port: NetworkPolicyPort, path: str) -> list[str]:
    errs = []
    if port.protocol is not None and port.protocol not in _PROTOCOLS:
        errs.append(
            f"{path}.protocol: Unsupported value: {_go_quote(port.protocol)}: supported values: "
            '"TCP", "UDP", "SCTP"'
        )
    in_range = "must be between 1 and 65535, inclusive"
    if isinstance(port.port, int):
        if not 1 <= port.port <= 65535:
            errs.append(_invalid(f"{path}.port", port.port, in_range))
        if port.end_port is not None:
            if port.end_port < port.port:
                errs.append(
                    _invalid(f"{path}.endPort", port.end_port, "must be greater than or equal to `port`")
                )
            if not 1 <= port.end_port <= 65535:
                errs.append(_invalid(f"{path}.endPort", port.end_port, in_range))
    elif isinstance(port.port, str):
        if port.end_port is not None:
            errs.append(
                _invalid(f"{path}.endPort", port.end_port, "may not be specified when `port` is non-numeric")
            )
        errs.extend(_invalid(f"{path}.port", port.port, p) for p in _port_name_problems(port.port))
    elif port.end_port is not None:
        errs.append(
            _invalid(f"{path}.endPort", port.end_port, "may not be specified when `port` is not specified")
        )
    return errs


def _validate_ip_block(block: IPBlock, path: str) -> list[str]:
    if not block.cidr:
        return [f"{path}.cidr: Required value"]
    bad_cidr = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
    cidr = _k8s_parse_cidr(block.cidr)
    if cidr is None:
        return [_invalid(f"{path}.cidr", block.cidr, bad_cidr)]
    errs = []
    for i, text in enumerate(block.except_):
        epath = f"{path}.except[{i}]"
        exc = _k8s_parse_cidr(text)
        if exc is None:
            errs.append(_invalid(epath, text, bad_cidr))
        elif not cidr.contains(exc.ip) or cidr.prefix_len >= exc.prefix_len:
            errs.append(_invalid(epath, text, "must be a strict subset of `cidr`"))
    return errs


def _validate_peer(peer: NetworkPolicyPeer, path: str) -> list[str]:
    errs: list[str] = []
    count = 0
    if peer.pod_selector is not None:
        count += 1
        errs.extend(_validate_label_selector(peer.pod_selector, f"{path}.podSelector"))
    if peer.namespace_selector is not None:
        count += 1
        errs.extend(_validate_label_selector(peer.namespace_selector, f"{path}.namespaceSelector"))
    if peer.ip_block is not None:
        count += 1
        errs.extend(_validate_ip_block(peer.ip_block, f"{path}.ipBlock"))
    if count == 0:
        errs.append(f"{path}: Required value: must specify a peer")
    elif count > 1 and peer.ip_block is not None:
        errs.append(f"{path}: Forbidden: may not specify both ipBlock and another peer")
    return errs


def validate_network_policy(np: NetworkPolicy) -> list[str]:
    """Every error the API server would report for this (defaulted) policy, in its order."""
    errs: list[str] = []
    if not np.name:
        errs.append("metadata.name: Required value: name or generateName is required")
    else:
        errs.extend(_invalid("metadata.name", np.name, p) for p in _dns1123_subdomain_problems(np.name))
    if not np.namespace:
        errs.append("metadata.namespace: Required value")
    else:
        problems = []
        if len(np.namespace) > 63:
            problems.append("must be no more than 63 characters")
        if not _DNS1123_LABEL.fullmatch(np.namespace):
            problems.append(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
                "'-', and must start and end with an alphanumeric character"
            )
        errs.extend(_invalid("metadata.namespace", np.namespace, p) for p in problems)
    errs.extend(_validate_labels(np.labels, "metadata.labels"))
    for key in np.annotations:
        errs.extend(_invalid("metadata.annotations", key, p) for p in _qualified_name_problems(key.lower()))
    if sum(len(k) + len(v) for k, v in np.annotations.items()) > 256 * 1024:
        errs.append("metadata.annotations: Too long: must have at most 262144 bytes")

    spec = np.spec
    errs.extend(_validate_label_selector(spec.pod_selector, "spec.podSelector"))
    for direction, peers_key, rules in (("ingress", "from", spec.ingress), ("egress", "to", spec.egress)):
        for i, rule in enumerate(rules):
            rpath = f"spec.{direction}[{i}]"
            for j, port in enumerate(rule.ports):
                errs.extend(_validate_port(port, f"{rpath}.ports[{j}]"))
            for j, peer in enumerate(rule.peers):
                errs.extend(_validate_peer(peer, f"{rpath}.{peers_key}[{j}]"))
    if len(spec.policy_types) > len(_POLICY_TYPES):
        errs.append(
            _invalid("spec.policyTypes", list(spec.policy_types), "may not specify more than two policyTypes")
        )
    else:
        for i, ptype in enumerate(spec.policy_types):
            if ptype not in _POLICY_TYPES:
                errs.append(
                    f"spec.policyTypes[{i}]: Unsupported value: {_go_quote(ptype)}: supported values: "
                    '"Ingress", "Egress"'
                )
    return errs


# ---------------------------------------------------------------------------------------------
# Go's address parsing.  Two parsers matter: the API server validates with k8s.io/utils/net's
# ParseCIDRSloppy (the pre-Go-1.17 parser, which accepts leading zeros in IPv4 octets), while
# Calico converts with Go's current net.ParseCIDR (netip-based, which does not).  Networks are kept
# as Go keeps them: 4-byte IP and mask for IPv4, 16-byte for IPv6 (including IPv4-mapped IPv6).
# ---------------------------------------------------------------------------------------------

_V4_IN_V6_PREFIX = bytes(10) + b"\xff\xff"
_DTOI_BIG = 0xFFFFFF


def _dtoi(s: str) -> tuple[int, int, bool]:
    """Go's net.dtoi: a leading decimal number, how many characters it used, and whether any."""
    n = i = 0
    while i < len(s) and "0" <= s[i] <= "9":
        n = n * 10 + ord(s[i]) - ord("0")
        if n >= _DTOI_BIG:
            return _DTOI_BIG, i, False
        i += 1
    return (n, i, True) if i else (0, 0, False)


def _parse_ipv4_sloppy(s: str) -> bytes | None:
    """The old Go parser kept by Kubernetes: octets are decimal, leading zeros allowed."""
    out = bytearray()
    for i in range(4):
        if i:
            if not s.startswith("."):
                return None
            s = s[1:]
        n, used, ok = _dtoi(s)
        if not ok or n > 0xFF:
            return None
        s = s[used:]
        out.append(n)
    return bytes(out) if not s else None


def _parse_ipv4_strict(s: str) -> bytes | None:
    """netip.ParseAddr's IPv4 rule: four octets of 1-3 digits, no leading zero, at most 255."""
    parts = s.split(".")
    if len(parts) != 4:
        return None
    out = bytearray()
    for part in parts:
        if not part or len(part) > 3 or not all("0" <= c <= "9" for c in part):
            return None
        if len(part) > 1 and part[0] == "0":
            return None
        value = int(part)
        if value > 0xFF:
            return None
        out.append(value)
    return bytes(out)


def _parse_ipv6(s: str, *, sloppy: bool) -> bytes | None:
    """An IPv6 address without zone; a trailing dotted IPv4 part is parsed by the IPv4 rule."""
    if "%" in s or not s.isascii():
        return None
    head, colon, tail = s.rpartition(":")
    if "." in tail:
        v4 = (_parse_ipv4_sloppy if sloppy else _parse_ipv4_strict)(tail)
        if not colon or v4 is None:
            return None
        s = f"{head}:{v4[0] << 8 | v4[1]:x}:{v4[2] << 8 | v4[3]:x}"
    try:
        return ipaddress.IPv6Address(s).packed
    except ValueError:
        return None


def _cidr_mask(ones: int, bits: int) -> bytes:
    value = ((1 << ones) - 1) << (bits - ones) if ones else 0
    return value.to_bytes(bits // 8, "big")


def _to4(ip: bytes) -> bytes | None:
    if len(ip) == 4:
        return ip
    if len(ip) == 16 and ip[:12] == _V4_IN_V6_PREFIX:
        return ip[12:]
    return None


def _ip_mask(ip: bytes, mask: bytes) -> bytes:
    """Go's IP.Mask for the shapes ParseCIDR produces."""
    if len(mask) == 4 and len(ip) == 16 and ip[:12] == _V4_IN_V6_PREFIX:
        ip = ip[12:]
    return bytes(a & b for a, b in zip(ip, mask, strict=True))


def _format_ipv6(ip: bytes) -> str:
    """RFC 5952, as Go writes IPv6: lowercase, the first longest run of 2+ zero groups as '::'."""
    groups = [ip[i] << 8 | ip[i + 1] for i in range(0, 16, 2)]
    best_start, best_len = -1, 0
    i = 0
    while i < 8:
        j = i
        while j < 8 and groups[j] == 0:
            j += 1
        if j - i >= 2 and j - i > best_len:
            best_start, best_len = i, j - i
        i = j + 1 if j > i else i + 1
    text = [f"{g:x}" for g in groups]
    if best_start < 0:
        return ":".join(text)
    return ":".join(text[:best_start]) + "::" + ":".join(text[best_start + best_len :])


@dataclass(frozen=True)
class _GoIPNet:
    """A Go net.IPNet as ParseCIDR returns it (IP already masked)."""

    ip: bytes
    mask: bytes

    def _number_and_mask(self) -> tuple[bytes, bytes]:
        # Go's networkNumberAndMask: an IPv4(-mapped) network is looked at as IPv4.
        ip = _to4(self.ip) or self.ip
        mask = self.mask
        if len(mask) == 16 and len(ip) == 4:
            mask = mask[12:]
        return ip, mask

    @property
    def prefix_len(self) -> int:
        """Go's IPMask.Size() ones count (masks from ParseCIDR are always canonical)."""
        return int.from_bytes(self.mask, "big").bit_count()

    def contains(self, ip: bytes) -> bool:
        net, mask = self._number_and_mask()
        ip = _to4(ip) or ip
        if len(ip) != len(net):
            return False
        return all(n & m == a & m for n, m, a in zip(net, mask, ip, strict=True))

    def __str__(self) -> str:
        net, mask = self._number_and_mask()
        ones = int.from_bytes(mask, "big").bit_count()
        text = ".".join(str(b) for b in net) if len(net) == 4 else _format_ipv6(net)
        return f"{text}/{ones}"


def _finish_cidr(ip16: bytes, bits: int, mask_text: str) -> _GoIPNet | None:
    n, used, ok = _dtoi(mask_text)
    if not ok or used != len(mask_text) or n > bits:
        return None
    mask = _cidr_mask(n, bits)
    return _GoIPNet(_ip_mask(ip16, mask), mask)


def _k8s_parse_cidr(text: str) -> _GoIPNet | None:
    """k8s.io/utils/net ParseCIDRSloppy, what the API server validates ipBlock CIDRs with."""
    addr, slash, mask_text = text.partition("/")
    if not slash:
        return None
    v4 = _parse_ipv4_sloppy(addr)
    if v4 is not None:
        return _finish_cidr(_V4_IN_V6_PREFIX + v4, 32, mask_text)
    v6 = _parse_ipv6(addr, sloppy=True)
    return None if v6 is None else _finish_cidr(v6, 128, mask_text)


def _go_parse_cidr(text: str) -> _GoIPNet | None:
    """Go's net.ParseCIDR (netip-based), what Calico's cnet.ParseCIDR calls."""
    addr, slash, mask_text = text.partition("/")
    if not slash:
        return None
    v4 = _parse_ipv4_strict(addr)
    if v4 is not None:
        return _finish_cidr(_V4_IN_V6_PREFIX + v4, 32, mask_text)
    v6 = _parse_ipv6(addr, sloppy=False)
    # An IPv4-mapped IPv6 address stays a 128-bit prefix here, as in Go.
    return None if v6 is None else _finish_cidr(v6, 128, mask_text)


# ---------------------------------------------------------------------------------------------
# Calico's conversion (libcalico-go/lib/backend/k8s/conversion/conversion.go).
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalicoPort:
    """A Calico numorstring.Port: a range ``min_port..max_port`` or a named port."""

    min_port: int = 0
    max_port: int = 0
    name: str = ""

    @classmethod
    def parse(cls, text: str) -> CalicoPort:
        """numorstring.PortFromString for the forms Kubernetes can produce: "80", "80:90", "http"."""
        if text.isdigit() and text.isascii():
            if int(text) > 65535:
                raise ValueError(f"invalid port format ({text})")
            return cls(int(text), int(text))
        first, colon, last = text.partition(":")
        if colon and first.isdigit() and last.isdigit() and first.isascii() and last.isascii():
            if int(first) > int(last) or int(last) > 65535:
                raise ValueError(f"invalid port range {text!r}")
            return cls(int(first), int(last))
        if not re.fullmatch(r"[a-zA-Z0-9_.-]{1,128}", text):
            raise ValueError(f"invalid name for named port ({text})")
        return cls(name=text)

    def to_json(self) -> int | str:
        """The v3 JSON value: the name, a single number, or "first:last"."""
        if self.name:
            return self.name
        if self.min_port == self.max_port:
            return self.min_port
        return f"{self.min_port}:{self.max_port}"

    def __str__(self) -> str:
        return str(self.to_json())


def simplify_ports(ports: Sequence[CalicoPort]) -> list[CalicoPort]:
    """Calico's SimplifyPorts: the fewest ranges covering the numeric ports, named ports first.

    Calico expands every range into single ports, sorts them and merges neighbours and
    duplicates.  With at most one numeric port in total (counting every port of a range) the
    input is returned as it is, order and duplicates included.
    """
    if len(ports) <= 1:
        return list(ports)
    named = [p for p in ports if p.name]
    numeric = sorted((p.min_port, p.max_port) for p in ports if not p.name)
    if sum(last - first + 1 for first, last in numeric) <= 1:
        return list(ports)
    merged: list[list[int]] = []
    for first, last in numeric:
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return named + [CalicoPort(first, last) for first, last in merged]


def k8s_selector_to_calico(selector: LabelSelector | None, *, pod: bool) -> str:
    """Calico's k8sSelectorToCalico, character for character.

    A pod selector always starts with ``projectcalico.org/orchestrator == 'k8s'`` (even when
    absent); an absent namespace selector is "" and an empty one ``all()``.  matchLabels come in
    sorted key order, then matchExpressions in the manifest's order, values as written.
    """
    terms = [ORCHESTRATOR_SELECTOR] if pod else []
    if selector is None:
        return " && ".join(terms)
    if not pod and selector.empty:
        return "all()"
    for key in sorted(selector.match_labels):
        terms.append(f"{key} == '{selector.match_labels[key]}'")
    for req in selector.match_expressions:
        values = "', '".join(req.values)
        if req.operator == "In":
            terms.append(f"{req.key} in {{ '{values}' }}")
        elif req.operator == "NotIn":
            terms.append(f"{req.key} not in {{ '{values}' }}")
        elif req.operator == "Exists":
            terms.append(f"has({req.key})")
        elif req.operator == "DoesNotExist":
            terms.append(f"! has({req.key})")
    return " && ".join(terms)


def _peer_fields(peer: NetworkPolicyPeer | None, where: str) -> dict[str, Any]:
    """k8sPeerToCalicoFields, as v3 EntityRule JSON fields (empty ones left out)."""
    if peer is None:
        return {}
    if peer.ip_block is not None:
        cidr = _go_parse_cidr(peer.ip_block.cidr)
        if cidr is None:
            # Calico logs and returns no criteria at all: the peer then matches everything.
            log.warning(
                "Calico cannot parse this ipBlock CIDR; like Calico, the peer is left without criteria",
                policy=where,
                cidr=peer.ip_block.cidr,
            )
            return {}
        fields: dict[str, Any] = {"nets": [str(cidr)]}
        not_nets: list[str] = []
        for text in peer.ip_block.except_:
            exc = _go_parse_cidr(text)
            if exc is None:
                # Calico stops at the first except entry it cannot parse, keeping what it had.
                log.warning(
                    "Calico cannot parse this ipBlock except CIDR; like Calico, it and later ones are "
                    "dropped",
                    policy=where,
                    cidr=text,
                )
                break
            not_nets.append(str(exc))
        if not_nets:
            fields["notNets"] = not_nets
        return fields
    fields = {}
    selector = k8s_selector_to_calico(peer.pod_selector, pod=True)
    ns_selector = k8s_selector_to_calico(peer.namespace_selector, pod=False)
    if selector:
        fields["selector"] = selector
    if ns_selector:
        fields["namespaceSelector"] = ns_selector
    return fields


def _port_to_calico(port: NetworkPolicyPort) -> list[CalicoPort] | None:
    """k8sPortToCalico: None (all ports) without ``port``, else the port or range."""
    if port.port is None:
        return None
    text = str(port.port)
    if port.end_port is not None:
        text = f"{text}:{port.end_port}"
    return [CalicoPort.parse(text)]


def _rule_to_calico(rule: NetworkPolicyRule, *, ingress: bool, where: str) -> list[dict[str, Any]]:
    """k8sRuleToCalico: one Allow rule per (protocol, peer), protocols in sorted order."""
    # protocol -> its ports, None meaning every port; "" (no protocol) only when `ports` is empty.
    by_protocol: dict[str, list[CalicoPort] | None] = {}
    if not rule.ports:
        by_protocol[""] = None
    for port in rule.ports:
        protocol = port.protocol or "TCP"
        calico_ports = _port_to_calico(port)
        if calico_ports is None:
            by_protocol[protocol] = None
        elif protocol not in by_protocol:
            by_protocol[protocol] = list(calico_ports)
        else:
            existing = by_protocol[protocol]
            if existing is not None:  # once "every port", always "every port"
                existing.extend(calico_ports)
    peers: Sequence[NetworkPolicyPeer | None] = rule.peers or (None,)
    # Calico recomputes a peer's fields for every protocol; they are the same each time.
    peer_fields_list = [_peer_fields(peer, where) for peer in peers]
    out: list[dict[str, Any]] = []
    for protocol in sorted(by_protocol):
        ports = by_protocol[protocol]
        port_json = [p.to_json() for p in simplify_ports(ports)] if ports else []
        for peer_fields in peer_fields_list:
            calico_rule: dict[str, Any] = {"action": "Allow"}
            if protocol:
                calico_rule["protocol"] = protocol
            # The peer goes to the source for ingress and to the destination for egress; the
            # ports always go to the destination.
            source = _entity_rule(peer_fields if ingress else {}, [])
            destination = _entity_rule({} if ingress else peer_fields, port_json)
            if source:
                calico_rule["source"] = source
            if destination:
                calico_rule["destination"] = destination
            out.append(calico_rule)
    return out


def _entity_rule(peer_fields: Mapping[str, Any], ports: list[int | str]) -> dict[str, Any]:
    """A fresh v3 EntityRule dict (no list shared between rules), in the Go struct's field order."""
    out: dict[str, Any] = {}
    for key in ("nets", "selector", "namespaceSelector"):
        if key in peer_fields:
            value = peer_fields[key]
            out[key] = list(value) if isinstance(value, list) else value
    if ports:
        out["ports"] = list(ports)
    if "notNets" in peer_fields:
        out["notNets"] = list(peer_fields["notNets"])
    return out


def network_policy_to_calico_spec(np: NetworkPolicy) -> dict[str, Any]:
    """K8sNetworkPolicyToCalico's spec, as v3 JSON, for a decoded, defaulted, valid policy."""
    where = f"{np.namespace}/{np.name}"
    ingress = [r for rule in np.spec.ingress for r in _rule_to_calico(rule, ingress=True, where=where)]
    egress = [r for rule in np.spec.egress for r in _rule_to_calico(rule, ingress=False, where=where)]
    types = [t for t in _POLICY_TYPES if t in np.spec.policy_types] or ["Ingress"]
    spec: dict[str, Any] = {"tier": DEFAULT_TIER, "order": POLICY_ORDER}
    if ingress:
        spec["ingress"] = ingress
    if egress:
        spec["egress"] = egress
    spec["selector"] = k8s_selector_to_calico(np.spec.pod_selector, pod=True)
    spec["types"] = types
    return spec


def convert_network_policy(manifest: Mapping[str, Any]) -> PolicyResource:
    """A ``networking.k8s.io/v1`` NetworkPolicy manifest -> the Calico policy Felix would get.

    Decodes strictly, applies the API server's defaults, validates like the API server (raising
    ``ScenarioError`` with every problem, each naming its field path), then converts like Calico
    v3.33.  The result is a ``KubernetesNetworkPolicy`` named after the Kubernetes policy, in its
    namespace, whose ``spec`` is the projectcalico.org/v3 NetworkPolicySpec as JSON.
    """
    np = apply_defaults(decode_network_policy(manifest))
    errors = validate_network_policy(np)
    if errors:
        _raise(manifest, "is invalid", errors)
    return PolicyResource(
        felix_kind=FELIX_KIND,
        name=np.name,
        namespace=np.namespace,
        spec=network_policy_to_calico_spec(np),
    )
