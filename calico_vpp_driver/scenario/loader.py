"""Scenario files (docs/scenario-format.md) -> a validated `Scenario`: one cluster per stage, probes resolved.

`load_scenario` reads the YAML, checks every field (an unknown or unsupported field anywhere is a
`ScenarioError` naming its path, e.g. ``pods[2].hostNetwork`` or
``policies[1]: ... unknown field "spec.ingress[0].form"``; nothing is silently ignored), applies
the defaults below, and computes the cluster at every stage: the start, then after each step.
Every stage is checked by building its `FelixCalc` (the authority on Calico policy specs and
tiers), and every probe is resolved against the cluster of its stage (pods, addresses, address
family, named port), so `replay` cannot meet a scenario error half-way through.

Defaults and rules the format leaves to this module:

* ``node`` defaults to ``node-1``.  If the local node is not listed in ``nodes`` it is added with
  address `DEFAULT_LOCAL_NODE_IP` (192.168.0.11), so Felix's host metadata for it exists; list
  the node to choose its address.
* ``ipPools`` defaults to one pool ``10.65.0.0/16`` with ``natOutgoing: true``; a listed pool has
  ``cidr``, ``natOutgoing`` (default false, as in Calico's API), ``vxlanMode`` and ``ipipMode``
  (default Never).
* ``config`` values are raw strings; other scalars become strings (booleans ``true``/``false``).
  Values are parsed as the driver parses Felix's config: one that does not parse is an error.
* Every namespace gets the label ``kubernetes.io/metadata.name: <name>`` (as the API server sets
  it).  A pod or namespaced policy in a namespace that is not listed is an error naming it;
  a Kubernetes or Calico NetworkPolicy manifest without ``metadata.namespace`` is in ``default``
  (what ``kubectl apply`` does), which must then be listed like any other.
* Pods: ``namespace/name`` unique; ``ips`` one or two bare addresses of different families,
  unique across pods; ``node`` defaults to the scenario's node and must be a known node;
  ``serviceAccount`` defaults to ``default``; ``ports`` entries have ``containerPort``, optional
  ``name`` and ``protocol`` (TCP, UDP or SCTP; default TCP); ``annotations`` (this project's
  extension) may hold ``cni.projectcalico.org/floatingIPs`` (`_floating_ips`), and a probe to a
  local pod's floating IP is resolved to that pod (`ProbeEnd.floating_ip`).
* Policies are manifests, verbatim: ``networking.k8s.io/v1`` NetworkPolicy (checked and converted
  as the API server and Calico do, `k8s.convert_network_policy`); ``projectcalico.org/v3``
  NetworkPolicy, GlobalNetworkPolicy, StagedNetworkPolicy, StagedGlobalNetworkPolicy (their spec
  goes to Felix's calculation as is) and StagedKubernetesNetworkPolicy (its Kubernetes-shaped spec
  is converted like a Kubernetes policy, keeping ``stagedAction``, as libcalico-go's
  ``stagedkubernetesnetworkpolicyprocessor.go`` does).  Names follow libcalico-go's validator:
  since Calico v3.32 a policy in a non-default tier needs no tier prefix, so ``security.block-db``
  and ``block-db`` are both valid names for a policy with ``spec.tier: security``.
* ``tiers`` entries are ``{name, order, defaultAction}`` (a Tier's metadata.name and spec).
* Steps: ``delete`` is applied first, then ``apply``.  ``apply`` takes policy manifests, and pods,
  namespaces and tiers written as in ``pods``/``namespaces``/``tiers`` plus ``kind: Pod`` /
  ``kind: Namespace`` / ``kind: Tier``; an object with the same identity is replaced.  ``delete``
  entries are ``{kind, name, namespace?, apiVersion?}``; ``kind: NetworkPolicy`` means the
  Kubernetes or the Calico one, whichever exists (``apiVersion`` chooses when both do).  Deleting
  something that does not exist is an error; deleting a namespace deletes its pods and policies
  (as Kubernetes does); a tier can only be deleted once no policy uses it.  Nodes, pools and config
  cannot change in a step (Felix would restart).  A step may have a ``description``.
* Probes: ``from``/``to`` are ``namespace/pod`` or an IP address.  An address that belongs to a pod
  is that pod (the dataplane knows addresses, not names); the local node's own address is the host
  itself; any other address is outside the node.  ``protocol`` is TCP, UDP, SCTP, ICMP or ICMPv6
  (default TCP); TCP/UDP/SCTP need ``port`` (a number, or a named port of the destination pod with
  that protocol); ICMP takes ``icmpType`` (default 8, echo request; 128 for ICMPv6) and
  ``icmpCode`` (default 0).  The address family is the one both ends have, IPv4 first, or
  ``ipVersion`` (4 or 6); ICMP on IPv6 is ICMPv6.  ``expect`` is ``allow`` or ``deny`` (optional);
  ``name`` labels the probe in the output.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from .. import config as config_mod
from . import k8s
from .calc import GLOBAL_KINDS, NAMESPACED_KINDS, FelixCalc, convert_policy
from .resources import (
    ContainerPort,
    IPPoolSpec,
    Namespace,
    Node,
    Pod,
    PolicyResource,
    ScenarioError,
    Tier,
)

__all__ = [
    "DEFAULT_LOCAL_NODE_IP",
    "DEFAULT_NODE",
    "DEFAULT_POOL",
    "Cluster",
    "Probe",
    "ProbeEnd",
    "Scenario",
    "Stage",
    "load_scenario",
]

DEFAULT_NODE = "node-1"
#: The address given to the local node when the scenario does not list it.
DEFAULT_LOCAL_NODE_IP = "192.168.0.11"
DEFAULT_POOL = IPPoolSpec("10.65.0.0/16", nat_outgoing=True, vxlan_mode="Never", ipip_mode="Never")
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

CALICO_API_VERSION = "projectcalico.org/v3"
CALICO_POLICY_KINDS = frozenset(
    {"NetworkPolicy", "GlobalNetworkPolicy", "StagedNetworkPolicy", "StagedGlobalNetworkPolicy",
     "StagedKubernetesNetworkPolicy"}
)
K8S_POLICY_KIND = k8s.FELIX_KIND  # KubernetesNetworkPolicy

_TOP_KEYS = ("description", "node", "config", "ipPools", "nodes", "namespaces", "pods", "tiers",
             "policies", "probes", "steps")
_POOL_KEYS = ("cidr", "natOutgoing", "vxlanMode", "ipipMode")
_NODE_KEYS = ("name", "ip", "podCIDR", "labels")
_NAMESPACE_KEYS = ("name", "labels")
_POD_KEYS = ("name", "namespace", "labels", "ips", "node", "serviceAccount", "ports", "annotations")
FLOATING_IPS_ANNOTATION = "cni.projectcalico.org/floatingIPs"
_CALICO_ANNOTATION_PREFIX = "cni.projectcalico.org/"
_PORT_KEYS = ("name", "containerPort", "protocol")
_TIER_KEYS = ("name", "order", "defaultAction")
_STEP_KEYS = ("description", "apply", "delete", "probes")
_DELETE_KEYS = ("kind", "name", "namespace", "apiVersion")
_PROBE_KEYS = ("name", "from", "to", "protocol", "port", "icmpType", "icmpCode", "ipVersion",
               "expect", "expectVia", "expectSource")
_CALICO_TOP_KEYS = ("apiVersion", "kind", "metadata", "spec")
_CALICO_META_KEYS = ("name", "namespace", "labels", "annotations")
_STAGED_K8S_SPEC_KEYS = ("stagedAction", "podSelector", "ingress", "egress", "policyTypes")

# libcalico-go validator/v3 name formats.
_NAME_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_NAME_SUBDOMAIN = _NAME_LABEL + r"(\." + _NAME_LABEL + r")*"
_DNS_LABEL_RE = re.compile(f"^{_NAME_LABEL}$")
_SUBDOMAIN_RE = re.compile(f"^{_NAME_SUBDOMAIN}$")
_NP_NAME_RE = re.compile(
    rf"^(({_NAME_LABEL})(\.{_NAME_LABEL})?|((?:knp|ossg)\.default\.({_NAME_SUBDOMAIN})))$"
)
_GNP_NAME_RE = re.compile(rf"^({_NAME_LABEL}\.)?{_NAME_LABEL}$")

_PROBE_PROTOCOLS = {"tcp": "TCP", "udp": "UDP", "sctp": "SCTP", "icmp": "ICMP", "icmpv6": "ICMPv6"}
_PORT_PROTOCOLS = ("TCP", "UDP", "SCTP")


# ---------------------------------------------------------------------------------------------
# The result.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    """What changes between stages: namespaces, pods, tiers and policies."""

    namespaces: Mapping[str, Namespace]
    pods: Mapping[str, Pod]  # "namespace/name" -> pod
    tiers: Mapping[str, Tier]
    policies: Mapping[tuple[str, str, str], PolicyResource]  # (felix kind, namespace, name)


@dataclass(frozen=True)
class ProbeEnd:
    """One side of a probe, resolved: the address used and what owns it on this node."""

    text: str  # as written
    ip: str
    pod: str | None = None  # "namespace/name" when the address is a pod's
    local: bool = False  # a pod on the scenario's node
    host: bool = False  # the scenario's node itself
    # Sent to this floating IP of a local pod: VPP translates it to ``ip``, the pod's address,
    # which is what policy sees (Felix's floating-IP DNAT comes before its filter chains).
    floating_ip: str | None = None

    @property
    def endpoint_key(self) -> tuple[str, str, str] | None:
        """The local workload endpoint's ID, as Felix's calculation builds it."""
        if self.local and self.pod is not None:
            return ("k8s", self.pod, "eth0")
        return None


@dataclass(frozen=True)
class Probe:
    where: str  # "probes[3]" or "steps[0].probes[1]"
    name: str
    src: ProbeEnd
    dst: ProbeEnd
    family: int  # 4 or 6
    protocol: str  # TCP, UDP, SCTP, ICMP or ICMPv6
    port: int | None = None
    port_name: str | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    expect: str | None = None  # "allow", "deny" or None
    # How VPP forwards an allowed probe (this project's extension of the format): "local" (to a pod
    # on this node), "uplink" (out of the node, not to a known node), a node's name (a route via
    # its address), "vxlan:<node>" or "ipip:<node>"; and the source address it leaves with:
    # "own" (unchanged), "node" (SNATed to this node's address) or an address.
    expect_via: str | None = None
    expect_source: str | None = None

    @property
    def service(self) -> str:
        """The probe's protocol and port as the table shows it: ``tcp/80``, ``tcp/http=8080``."""
        proto = self.protocol.lower()
        if self.port is not None:
            return f"{proto}/{self.port_name}={self.port}" if self.port_name else f"{proto}/{self.port}"
        if self.icmp_type is not None:
            return f"{proto} type {self.icmp_type}" + (f" code {self.icmp_code}" if self.icmp_code else "")
        return proto

    @property
    def label(self) -> str:
        """How messages name the probe: ``steps[0].probes[1] 'name' (x/a -> x/b tcp/80)``."""
        name = f" {self.name!r}" if self.name else ""
        return f"{self.where}{name} ({self.src.text} -> {self.dst.text} {self.service})"


@dataclass(frozen=True)
class Stage:
    label: str  # "start" or "step N"
    description: str
    cluster: Cluster
    probes: tuple[Probe, ...]


@dataclass(frozen=True)
class Scenario:
    source: str
    description: str
    node: str
    config: Mapping[str, str]
    pools: tuple[IPPoolSpec, ...]
    nodes: tuple[Node, ...]  # including the local node
    stages: tuple[Stage, ...] = field(default=())

    def calc(self, stage: Stage) -> FelixCalc:
        """Felix's calculation for the cluster of one stage."""
        c = stage.cluster
        return FelixCalc(
            self.node,
            c.namespaces.values(),
            c.pods.values(),
            self.nodes,
            self.pools,
            c.tiers.values(),
            c.policies.values(),
            self.config,
            pod_ips_ever=sorted({ip for st in self.stages for p in st.cluster.pods.values() for ip in p.ips}),
        )

    @property
    def probes(self) -> tuple[Probe, ...]:
        return tuple(p for s in self.stages for p in s.probes)


# ---------------------------------------------------------------------------------------------
# YAML.
# ---------------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML keeps the last one silently)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    loader.flatten_mapping(node)
    seen: dict[Any, yaml.Node] = {}
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:
            duplicate = False
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"found duplicate key {key!r}", key_node.start_mark,
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read(path_or_text: str | os.PathLike[str]) -> tuple[Any, str]:
    """Parse a file (a path, or a string without newlines) or YAML text (a string with newlines)."""
    if isinstance(path_or_text, os.PathLike) or "\n" not in path_or_text:
        source = os.fspath(path_or_text)
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ScenarioError(f"cannot read scenario {source}: {reason}") from None
    else:
        source, text = "<text>", path_or_text
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{source}: not valid YAML: {exc}") from None
    return data, source


# ---------------------------------------------------------------------------------------------
# Field helpers.
# ---------------------------------------------------------------------------------------------


def _fail(path: str, problem: str) -> NoReturn:
    raise ScenarioError(f"{path}: {problem}" if path else problem)


def _type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, Sequence):
        return "a list"
    return type(value).__name__


def _mapping(value: Any, path: str, allowed: Sequence[str], what: str = "field") -> dict[str, Any]:
    if not isinstance(value, Mapping):
        _fail(path, f"expected a mapping, got {_type(value)}")
    for key in value:
        if not isinstance(key, str):
            _fail(path, f"keys must be strings, got {key!r}")
        if key not in allowed:
            _fail(f"{path}.{key}" if path else key,
                  f"unknown or unsupported {what} (known: {', '.join(allowed)})")
    return dict(value)


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        _fail(path, f"expected a list, got {_type(value)}")
    return list(value)


def _str(value: Any, path: str, *, required: bool = False) -> str:
    if value is None:
        if required:
            _fail(path, "required")
        return ""
    if not isinstance(value, str):
        _fail(path, f"expected a string, got {_type(value)} ({value!r}); quote it")
    if required and not value:
        _fail(path, "must not be empty")
    return value


def _int(value: Any, path: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(path, f"expected an integer, got {_type(value)} ({value!r})")
    if not low <= value <= high:
        _fail(path, f"{value} is outside {low}..{high}")
    return value


def _bool(value: Any, path: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        _fail(path, f"expected true or false, got {_type(value)} ({value!r})")
    return value


def _labels(value: Any, path: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        _fail(path, f"expected a mapping of strings, got {_type(value)}")
    out: dict[str, str] = {}
    for key, val in value.items():
        if not isinstance(key, str):
            _fail(path, f"label keys must be strings, got {key!r}")
        out[key] = _str(val, f"{path}[{key}]", required=False)
    problems = k8s._validate_labels(out, path)
    if problems:
        _fail("", problems[0])
    return out


def _name(value: Any, path: str, regex: re.Pattern[str], what: str) -> str:
    name = _str(value, path, required=True)
    if len(name) > 253 or not regex.match(name):
        _fail(path, f"invalid {what} {name!r} (regex: {regex.pattern})")
    return name


def _address(text: str, path: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        _fail(path, f"not an IP address: {text!r}")


# ---------------------------------------------------------------------------------------------
# Sections.
# ---------------------------------------------------------------------------------------------


def _config(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        _fail("config", f"expected a mapping of Felix parameters, got {_type(value)}")
    out: dict[str, str] = {}
    for key, raw in value.items():
        if not isinstance(key, str) or not key:
            _fail("config", f"parameter names must be strings, got {key!r}")
        if isinstance(raw, bool):
            out[key] = "true" if raw else "false"
        elif isinstance(raw, (str, int, float)):
            out[key] = str(raw)
        else:
            _fail(f"config.{key}", f"expected a string or a scalar, got {_type(raw)}")
    _, problems = config_mod.load(out, environ={})
    if problems:
        p = problems[0]
        _fail(f"config.{p.name}", f"{p.reason} (got {p.raw!r})")
    return out


def _pools(value: Any) -> tuple[IPPoolSpec, ...]:
    if value is None:
        return (DEFAULT_POOL,)
    out = []
    for i, item in enumerate(_list(value, "ipPools")):
        path = f"ipPools[{i}]"
        m = _mapping(item, path, _POOL_KEYS)
        cidr = _str(m.get("cidr"), f"{path}.cidr", required=True)
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            _fail(f"{path}.cidr", f"invalid CIDR {cidr!r}")
        out.append(IPPoolSpec(
            cidr=cidr,
            nat_outgoing=_bool(m.get("natOutgoing"), f"{path}.natOutgoing", False),
            vxlan_mode=_str(m.get("vxlanMode"), f"{path}.vxlanMode") or "Never",
            ipip_mode=_str(m.get("ipipMode"), f"{path}.ipipMode") or "Never",
        ))
    return tuple(out)


def _nodes(value: Any, local: str) -> tuple[Node, ...]:
    out: dict[str, Node] = {}
    for i, item in enumerate(_list(value, "nodes")):
        path = f"nodes[{i}]"
        m = _mapping(item, path, _NODE_KEYS)
        name = _name(m.get("name"), f"{path}.name", _SUBDOMAIN_RE, "node name")
        if name in out:
            _fail(f"{path}.name", f"node {name!r} is listed twice")
        ip = _str(m.get("ip"), f"{path}.ip", required=True)
        try:
            ipaddress.ip_interface(ip)
        except ValueError:
            _fail(f"{path}.ip", f"invalid address {ip!r}")
        pod_cidr = _str(m.get("podCIDR"), f"{path}.podCIDR")
        if pod_cidr:
            try:
                ipaddress.ip_network(pod_cidr, strict=False)
            except ValueError:
                _fail(f"{path}.podCIDR", f"invalid CIDR {pod_cidr!r}")
        out[name] = Node(name, ip, pod_cidr, _labels(m.get("labels"), f"{path}.labels"))
    if local not in out:
        taken = {str(ipaddress.ip_interface(n.ip).ip): n.name for n in out.values()}
        if DEFAULT_LOCAL_NODE_IP in taken:
            _fail("nodes", f"the local node {local!r} is not listed and its default address "
                  f"{DEFAULT_LOCAL_NODE_IP} is node {taken[DEFAULT_LOCAL_NODE_IP]!r}'s; list it")
        out[local] = Node(local, DEFAULT_LOCAL_NODE_IP)
    return tuple(out.values())


def _namespace(item: Any, path: str) -> Namespace:
    m = _mapping(item, path, _NAMESPACE_KEYS)
    name = _name(m.get("name"), f"{path}.name", _DNS_LABEL_RE, "namespace name")
    labels = _labels(m.get("labels"), f"{path}.labels")
    if labels.get(NAMESPACE_NAME_LABEL, name) != name:
        _fail(f"{path}.labels[{NAMESPACE_NAME_LABEL}]",
              f"the API server sets it to the namespace's name ({name!r})")
    labels[NAMESPACE_NAME_LABEL] = name
    return Namespace(name, labels)


def _pod(item: Any, path: str, local: str) -> Pod:
    m = _mapping(item, path, _POD_KEYS)
    name = _name(m.get("name"), f"{path}.name", _SUBDOMAIN_RE, "pod name")
    namespace = _name(m.get("namespace"), f"{path}.namespace", _DNS_LABEL_RE, "namespace name")
    ips_raw = _list(m.get("ips"), f"{path}.ips")
    if not 1 <= len(ips_raw) <= 2:
        _fail(f"{path}.ips", f"a pod has one or two addresses (one per family), got {len(ips_raw)}")
    ips: list[str] = []
    families: set[int] = set()
    for j, raw in enumerate(ips_raw):
        text = _str(raw, f"{path}.ips[{j}]", required=True)
        addr = _address(text, f"{path}.ips[{j}]")
        if addr.version in families:
            _fail(f"{path}.ips", "two addresses of the same family (one IPv4 and/or one IPv6)")
        families.add(addr.version)
        ips.append(str(addr))
    ports = []
    for j, raw in enumerate(_list(m.get("ports"), f"{path}.ports")):
        ppath = f"{path}.ports[{j}]"
        pm = _mapping(raw, ppath, _PORT_KEYS)
        if "containerPort" not in pm:
            _fail(f"{ppath}.containerPort", "required")
        number = _int(pm["containerPort"], f"{ppath}.containerPort", 1, 65535)
        pname = _str(pm.get("name"), f"{ppath}.name")
        if pname:
            problems = k8s._port_name_problems(pname)
            if problems:
                _fail(f"{ppath}.name", f"invalid port name {pname!r}: {problems[0]}")
        proto = _str(pm.get("protocol"), f"{ppath}.protocol") or "TCP"
        if proto not in _PORT_PROTOCOLS:
            _fail(f"{ppath}.protocol", f"must be one of {', '.join(_PORT_PROTOCOLS)}, got {proto!r}")
        ports.append(ContainerPort(pname, number, proto))
    named = [(p.name, p.protocol) for p in ports if p.name]
    if len(set(named)) != len(named):
        _fail(f"{path}.ports", "a port name is used twice for the same protocol")
    return Pod(
        name=name,
        namespace=namespace,
        ips=tuple(ips),
        node=_name(m.get("node"), f"{path}.node", _SUBDOMAIN_RE, "node name") if m.get("node") is not None
        else local,
        labels=_labels(m.get("labels"), f"{path}.labels"),
        service_account=(
            _name(m.get("serviceAccount"), f"{path}.serviceAccount", _SUBDOMAIN_RE, "service account name")
            if m.get("serviceAccount") is not None else "default"
        ),
        ports=tuple(ports),
        floating_ips=_floating_ips(m.get("annotations"), f"{path}.annotations"),
    )


def _floating_ips(value: Any, path: str) -> tuple[str, ...]:
    """A pod's ``cni.projectcalico.org/floatingIPs``: a JSON list of addresses, as Calico's
    Kubernetes conversion reads it. Other Calico CNI annotations are not modelled (an error);
    annotations of anything else mean nothing to Felix and are ignored, as by Calico."""
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        _fail(path, f"expected a mapping of strings, got {_type(value)}")
    out: list[str] = []
    for key, raw in value.items():
        if not isinstance(key, str):
            _fail(path, f"annotation keys must be strings, got {key!r}")
        if key == FLOATING_IPS_ANNOTATION:
            apath = f"{path}[{key}]"
            text = _str(raw, apath, required=True)
            try:
                items = json.loads(text)
            except ValueError as exc:
                _fail(apath, f"not JSON: {exc}")
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                _fail(apath, f"expected a JSON list of addresses, got {text!r}")
            out.extend(str(_address(i, f"{apath}[{j}]")) for j, i in enumerate(items))
        elif key.startswith(_CALICO_ANNOTATION_PREFIX):
            _fail(f"{path}[{key}]", f"not modelled by scenarios (only {FLOATING_IPS_ANNOTATION} is)")
        else:
            _str(raw, f"{path}[{key}]")
    return tuple(out)


def _tier(item: Any, path: str) -> Tier:
    m = _mapping(item, path, _TIER_KEYS)
    name = _name(m.get("name"), f"{path}.name", _DNS_LABEL_RE, "tier name")
    order = m.get("order")
    if order is not None and (isinstance(order, bool) or not isinstance(order, (int, float))):
        _fail(f"{path}.order", f"expected a number, got {_type(order)}")
    action = _str(m.get("defaultAction"), f"{path}.defaultAction") or "Deny"
    if action not in ("Deny", "Pass"):
        _fail(f"{path}.defaultAction", f"must be Deny or Pass, got {action!r}")
    return Tier(name, None if order is None else float(order), action)


def _policy(item: Any, path: str) -> PolicyResource:
    """A policy manifest -> the `PolicyResource` Felix's calculation takes."""
    if not isinstance(item, Mapping):
        _fail(path, f"a policy manifest must be a mapping, got {_type(item)}")
    api_version, kind = item.get("apiVersion"), item.get("kind")
    if api_version == k8s.API_VERSION:
        try:
            return k8s.convert_network_policy(item)
        except ScenarioError as exc:
            _fail(path, str(exc))
    if api_version != CALICO_API_VERSION:
        _fail(f"{path}.apiVersion", f"expected {k8s.API_VERSION} (NetworkPolicy) or "
              f"{CALICO_API_VERSION} (Calico policies), got {api_version!r}")
    if kind not in CALICO_POLICY_KINDS:
        _fail(f"{path}.kind", f"expected one of {', '.join(sorted(CALICO_POLICY_KINDS))}, got {kind!r}")
    m = _mapping(item, path, _CALICO_TOP_KEYS)
    meta = _mapping(m.get("metadata"), f"{path}.metadata", _CALICO_META_KEYS)
    _labels(meta.get("labels"), f"{path}.metadata.labels")
    _annotations(meta.get("annotations"), f"{path}.metadata.annotations")
    spec = m.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        _fail(f"{path}.spec", f"expected a mapping, got {_type(spec)}")
    if kind in GLOBAL_KINDS:
        if meta.get("namespace") is not None:
            _fail(f"{path}.metadata.namespace", f"a {kind} is not namespaced")
        name = _name(meta.get("name"), f"{path}.metadata.name", _GNP_NAME_RE, f"{kind} name")
        namespace = ""
    else:
        regex = _SUBDOMAIN_RE if kind == "StagedKubernetesNetworkPolicy" else _NP_NAME_RE
        name = _name(meta.get("name"), f"{path}.metadata.name", regex, f"{kind} name")
        namespace = _name(meta.get("namespace") if meta.get("namespace") is not None else "default",
                          f"{path}.metadata.namespace", _DNS_LABEL_RE, "namespace name")
    if kind == "StagedKubernetesNetworkPolicy":
        return _staged_k8s(name, namespace, dict(spec), path)
    res = PolicyResource(kind, name, namespace, dict(spec))
    try:
        convert_policy(res)
    except ScenarioError as exc:
        _fail(path, str(exc))
    return res


def _annotations(value: Any, path: str) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        _fail(path, f"expected a mapping of strings, got {_type(value)}")
    for key, val in value.items():
        _str(val, f"{path}[{key}]")


def _staged_k8s(name: str, namespace: str, spec: dict[str, Any], path: str) -> PolicyResource:
    """libcalico-go: ConvertStagedKubernetesPolicyToK8SEnforced, then K8sNetworkPolicyToCalico."""
    _mapping(spec, f"{path}.spec", _STAGED_K8S_SPEC_KEYS)
    action = _str(spec.pop("stagedAction", None), f"{path}.spec.stagedAction") or "Set"
    if action not in ("Set", "Delete", "Learn", "Ignore"):
        _fail(f"{path}.spec.stagedAction", f"must be Set, Delete, Learn or Ignore, got {action!r}")
    manifest = {
        "apiVersion": k8s.API_VERSION,
        "kind": k8s.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    try:
        converted = k8s.convert_network_policy(manifest)
    except ScenarioError as exc:
        _fail(path, f"(as a Kubernetes NetworkPolicy) {exc}")
    return PolicyResource("StagedKubernetesNetworkPolicy", name, namespace,
                          {**converted.spec, "stagedAction": action})


def _policy_key(res: PolicyResource) -> tuple[str, str, str]:
    return (res.felix_kind, res.namespace, res.name)


def _describe_key(key: tuple[str, str, str]) -> str:
    kind, ns, name = key
    if kind == K8S_POLICY_KIND:
        kind = "NetworkPolicy (networking.k8s.io/v1)"
    return f"{kind} {ns + '/' if ns else ''}{name}"


# ---------------------------------------------------------------------------------------------
# Stages.
# ---------------------------------------------------------------------------------------------


class _Builder:
    """The cluster being built, with the invariants checked after each change."""

    def __init__(self, node: str, nodes: Iterable[Node]) -> None:
        self.node = node
        self.node_names = {n.name for n in nodes}
        self.node_ips = {str(ipaddress.ip_interface(n.ip).ip): n.name for n in nodes}
        self.namespaces: dict[str, Namespace] = {}
        self.pods: dict[str, Pod] = {}
        self.tiers: dict[str, Tier] = {}
        self.policies: dict[tuple[str, str, str], PolicyResource] = {}
        self.origin: dict[object, str] = {}  # object identity -> where it was defined

    def snapshot(self) -> Cluster:
        return Cluster(dict(self.namespaces), dict(self.pods), dict(self.tiers), dict(self.policies))

    def put_namespace(self, ns: Namespace, path: str, *, replace: bool) -> None:
        if not replace and ns.name in self.namespaces:
            _fail(f"{path}.name", f"namespace {ns.name!r} is listed twice")
        self.namespaces[ns.name] = ns
        self.origin[("Namespace", ns.name)] = path

    def put_pod(self, pod: Pod, path: str, *, replace: bool) -> None:
        key = f"{pod.namespace}/{pod.name}"
        if not replace and key in self.pods:
            _fail(f"{path}.name", f"pod {key} is defined twice")
        self.pods[key] = pod
        self.origin[("Pod", key)] = path

    def put_tier(self, tier: Tier, path: str, *, replace: bool) -> None:
        if not replace and tier.name in self.tiers:
            _fail(f"{path}.name", f"tier {tier.name!r} is defined twice")
        self.tiers[tier.name] = tier
        self.origin[("Tier", tier.name)] = path

    def put_policy(self, res: PolicyResource, path: str, *, replace: bool) -> None:
        key = _policy_key(res)
        if not replace and key in self.policies:
            _fail(path, f"{_describe_key(key)} is defined twice")
        self.policies[key] = res
        self.origin[key] = path

    def delete(self, item: Any, path: str) -> None:
        m = _mapping(item, path, _DELETE_KEYS)
        kind = _str(m.get("kind"), f"{path}.kind", required=True)
        name = _str(m.get("name"), f"{path}.name", required=True)
        namespace = _str(m.get("namespace"), f"{path}.namespace")
        api_version = _str(m.get("apiVersion"), f"{path}.apiVersion")
        if kind == "Namespace":
            if namespace:
                _fail(f"{path}.namespace", "a Namespace is not namespaced")
            if name not in self.namespaces:
                _fail(f"{path}.name", f"namespace {name!r} does not exist")
            del self.namespaces[name]
            # Kubernetes deletes everything in a namespace with it.
            for key in [k for k, p in self.pods.items() if p.namespace == name]:
                del self.pods[key]
            for pkey in [k for k in self.policies if k[1] == name]:
                del self.policies[pkey]
            return
        if kind == "Pod":
            key = f"{namespace or 'default'}/{name}"
            if key not in self.pods:
                _fail(path, f"pod {key} does not exist")
            del self.pods[key]
            return
        if kind == "Tier":
            if name not in self.tiers:
                _fail(f"{path}.name", f"tier {name!r} does not exist (built-in tiers cannot be deleted)")
            users = [k for k, p in self.policies.items() if p.tier == name]
            if users:
                _fail(path, f"tier {name!r} still has policies ({_describe_key(users[0])})")
            del self.tiers[name]
            return
        if kind in GLOBAL_KINDS:
            if namespace:
                _fail(f"{path}.namespace", f"a {kind} is not namespaced")
            candidates = [(kind, "", name)]
        elif kind == "NetworkPolicy":
            ns = namespace or "default"
            if api_version == k8s.API_VERSION:
                candidates = [(K8S_POLICY_KIND, ns, name)]
            elif api_version == CALICO_API_VERSION:
                candidates = [("NetworkPolicy", ns, name)]
            elif api_version:
                _fail(f"{path}.apiVersion", f"expected {k8s.API_VERSION} or {CALICO_API_VERSION}")
            else:
                candidates = [k for k in ((K8S_POLICY_KIND, ns, name), ("NetworkPolicy", ns, name))
                              if k in self.policies]
                if len(candidates) == 2:
                    _fail(path, f"both a Kubernetes and a Calico NetworkPolicy {ns}/{name} exist; "
                          "say which with apiVersion")
                if not candidates:
                    _fail(path, f"no NetworkPolicy {ns}/{name} exists")
        elif kind in NAMESPACED_KINDS:
            candidates = [(kind, namespace or "default", name)]
        else:
            _fail(f"{path}.kind", "expected NetworkPolicy, GlobalNetworkPolicy, a staged policy kind, "
                  f"Pod, Namespace or Tier, got {kind!r}")
        pkey = candidates[0]
        if pkey not in self.policies:
            _fail(path, f"{_describe_key(pkey)} does not exist")
        del self.policies[pkey]

    def check(self, where: str) -> None:
        """Cross-object rules: namespaces, nodes and unique addresses."""
        seen_ips: dict[str, str] = {}
        for key, pod in self.pods.items():
            origin = self.origin.get(("Pod", key), where)
            if pod.namespace not in self.namespaces:
                _fail(f"{origin}.namespace",
                      f"pod {key} is in namespace {pod.namespace!r}, which is not listed in namespaces")
            if pod.node not in self.node_names:
                _fail(f"{origin}.node", f"pod {key} is on node {pod.node!r}, which is not listed in nodes")
            for ip in pod.ips:
                if ip in seen_ips:
                    _fail(f"{origin}.ips", f"address {ip} is also pod {seen_ips[ip]}'s")
                if ip in self.node_ips:
                    _fail(f"{origin}.ips", f"address {ip} is node {self.node_ips[ip]}'s")
                seen_ips[ip] = key
        for pkey, res in self.policies.items():
            origin = self.origin.get(pkey, where)
            if res.namespace and res.namespace not in self.namespaces:
                _fail(origin, f"{_describe_key(pkey)} is in namespace {res.namespace!r}, "
                      "which is not listed in namespaces")

    def apply(self, item: Any, path: str, local: str) -> None:
        if not isinstance(item, Mapping):
            _fail(path, f"expected a manifest (a mapping), got {_type(item)}")
        kind = item.get("kind")
        if "apiVersion" in item:
            self.put_policy(_policy(item, path), path, replace=True)
            return
        body = {k: v for k, v in item.items() if k != "kind"}
        if kind == "Pod":
            self.put_pod(_pod(body, path, local), path, replace=True)
        elif kind == "Namespace":
            self.put_namespace(_namespace(body, path), path, replace=True)
        elif kind == "Tier":
            self.put_tier(_tier(body, path), path, replace=True)
        else:
            _fail(f"{path}.kind", "expected a policy manifest (with apiVersion), or kind Pod, "
                  f"Namespace or Tier written as in pods/namespaces/tiers, got {kind!r}")


# ---------------------------------------------------------------------------------------------
# Probes.
# ---------------------------------------------------------------------------------------------


def _probe_end(value: Any, path: str, cluster: Cluster, node: str, node_ips: Mapping[str, str],
               *, to: bool = False) -> tuple[ProbeEnd, Pod | None]:
    """Resolve ``ns/pod`` or an address (for ``to``, also a local pod's floating IP); returns the
    end (address filled in later) and its pod."""
    if value is None:
        _fail(path, "required")
    text = _str(value, path, required=True)
    if "/" in text:
        if text not in cluster.pods:
            _fail(path, f"pod {text} does not exist at this point of the scenario")
        pod = cluster.pods[text]
        return ProbeEnd(text, "", text, pod.node == node), pod
    addr = _address(text, path)
    for key, pod in cluster.pods.items():
        if str(addr) in pod.ips:
            return ProbeEnd(text, str(addr), key, pod.node == node), pod
    if to:
        for key, pod in cluster.pods.items():
            if pod.node == node and str(addr) in pod.floating_ips:
                inner = [ip for ip in pod.ips if ipaddress.ip_address(ip).version == addr.version]
                if inner:  # a floating IP of a family the pod lacks is dropped by Calico
                    return ProbeEnd(text, inner[0], key, True, floating_ip=str(addr)), pod
    host = node_ips.get(str(addr)) == node
    return ProbeEnd(text, str(addr), host=host), None


def _pick_ip(end: ProbeEnd, pod: Pod | None, family: int) -> str:
    if pod is None or end.ip:
        return end.ip
    return next(ip for ip in pod.ips if ipaddress.ip_address(ip).version == family)


def _families(end: ProbeEnd, pod: Pod | None) -> set[int]:
    if end.ip:
        return {ipaddress.ip_address(end.ip).version}
    assert pod is not None
    return {ipaddress.ip_address(ip).version for ip in pod.ips}


def _probe(item: Any, path: str, cluster: Cluster, node: str, node_ips: Mapping[str, str]) -> Probe:
    m = _mapping(item, path, _PROBE_KEYS)
    src, src_pod = _probe_end(m.get("from"), f"{path}.from", cluster, node, node_ips)
    dst, dst_pod = _probe_end(m.get("to"), f"{path}.to", cluster, node, node_ips, to=True)

    proto_raw = _str(m.get("protocol"), f"{path}.protocol") or "TCP"
    protocol = _PROBE_PROTOCOLS.get(proto_raw.lower())
    if protocol is None:
        _fail(f"{path}.protocol", f"must be TCP, UDP, SCTP, ICMP or ICMPv6, got {proto_raw!r}")

    common = _families(src, src_pod) & _families(dst, dst_pod)
    if m.get("ipVersion") is not None:
        family = _int(m["ipVersion"], f"{path}.ipVersion", 4, 6)
        if family not in (4, 6):
            _fail(f"{path}.ipVersion", "must be 4 or 6")
        if family not in common:
            _fail(f"{path}.ipVersion", f"{src.text} and {dst.text} do not both have an IPv{family} address")
    elif protocol == "ICMPv6":
        family = 6
        if 6 not in common:
            _fail(f"{path}.protocol", f"ICMPv6 needs IPv6 on both {src.text} and {dst.text}")
    elif not common:
        _fail(path, f"{src.text} and {dst.text} have no address family in common")
    else:
        family = 4 if 4 in common else 6
    if protocol == "ICMPv6" and family != 6:
        _fail(f"{path}.protocol", "ICMPv6 is IPv6 only")
    if protocol == "ICMP" and family == 6:
        protocol = "ICMPv6"
    src = dataclasses.replace(src, ip=_pick_ip(src, src_pod, family))
    dst = dataclasses.replace(dst, ip=_pick_ip(dst, dst_pod, family))

    port: int | None = None
    port_name: str | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    if protocol in _PORT_PROTOCOLS:
        for key in ("icmpType", "icmpCode"):
            if m.get(key) is not None:
                _fail(f"{path}.{key}", f"only for ICMP probes (this one is {protocol})")
        raw = m.get("port")
        if raw is None:
            _fail(f"{path}.port", f"required for a {protocol} probe")
        if isinstance(raw, str) and not raw.isdigit():
            if dst_pod is None:
                _fail(f"{path}.port", f"named port {raw!r} needs a pod as the destination")
            matches = [p for p in dst_pod.ports if p.name == raw and p.protocol == protocol]
            if not matches:
                _fail(f"{path}.port", f"pod {dst.pod} has no {protocol} port named {raw!r}")
            port, port_name = matches[0].port, raw
        else:
            port = _int(int(raw) if isinstance(raw, str) else raw, f"{path}.port", 1, 65535)
    else:
        if m.get("port") is not None:
            _fail(f"{path}.port", f"not for {protocol} probes")
        icmp_type = _int(m["icmpType"], f"{path}.icmpType", 0, 255) if m.get("icmpType") is not None \
            else (8 if protocol == "ICMP" else 128)
        icmp_code = _int(m["icmpCode"], f"{path}.icmpCode", 0, 255) if m.get("icmpCode") is not None else 0

    expect = m.get("expect")
    if expect is not None:
        expect = _str(expect, f"{path}.expect").lower()
        if expect not in ("allow", "deny"):
            _fail(f"{path}.expect", f"must be allow or deny, got {m['expect']!r}")
    expect_via = _str(m.get("expectVia"), f"{path}.expectVia") or None
    if expect_via is not None:
        target = expect_via.split(":", 1)[1] if expect_via.startswith(("vxlan:", "ipip:")) else expect_via
        names = set(node_ips.values())
        if target not in ("local", "uplink") and target not in names:
            _fail(
                f"{path}.expectVia",
                f"{expect_via!r}: expected local, uplink, a node's name or vxlan:/ipip:<node name>"
                f" (nodes: {', '.join(sorted(names)) or 'none'})",
            )
        if target in ("local", "uplink") and target != expect_via:
            _fail(f"{path}.expectVia", f"{expect_via!r}: a tunnel goes to a node")
    expect_source = _str(m.get("expectSource"), f"{path}.expectSource") or None
    if expect_source not in (None, "own", "node"):
        try:
            ipaddress.ip_address(expect_source)
        except ValueError:
            _fail(f"{path}.expectSource", f"{expect_source!r}: expected own, node or an IP address")
    if (expect_via or expect_source) and expect == "deny":
        _fail(path, "expectVia/expectSource describe a forwarded packet: not with expect: deny")
    return Probe(
        where=path,
        name=_str(m.get("name"), f"{path}.name"),
        src=src,
        dst=dst,
        family=family,
        protocol=protocol,
        port=port,
        port_name=port_name,
        icmp_type=icmp_type,
        icmp_code=icmp_code,
        expect=expect,
        expect_via=expect_via,
        expect_source=expect_source,
    )


# ---------------------------------------------------------------------------------------------
# Entry point.
# ---------------------------------------------------------------------------------------------


def load_scenario(path_or_text: str | os.PathLike[str]) -> Scenario:
    """Read and validate a scenario (a file path, or YAML text containing a newline).

    Raises `ScenarioError` naming the field for anything unreadable, unknown or unsupported.
    """
    data, source = _read(path_or_text)
    try:
        return _build(data, source)
    except ScenarioError as exc:
        raise ScenarioError(f"{source}: {exc}") from None


def _build(data: Any, source: str) -> Scenario:
    if data is None:
        data = {}
    top = _mapping(data, "", _TOP_KEYS, what="scenario key")
    node = _name(top.get("node", DEFAULT_NODE), "node", _SUBDOMAIN_RE, "node name")
    config = _config(top.get("config"))
    for key, value in config.items():
        if key.lower() == "felixhostname" and value != node:
            _fail(f"config.{key}", f"must be the scenario's node {node!r} (or left out)")
    pools = _pools(top.get("ipPools"))
    nodes = _nodes(top.get("nodes"), node)
    node_ips = {str(ipaddress.ip_interface(n.ip).ip): n.name for n in nodes}

    b = _Builder(node, nodes)
    for i, item in enumerate(_list(top.get("namespaces"), "namespaces")):
        b.put_namespace(_namespace(item, f"namespaces[{i}]"), f"namespaces[{i}]", replace=False)
    for i, item in enumerate(_list(top.get("tiers"), "tiers")):
        b.put_tier(_tier(item, f"tiers[{i}]"), f"tiers[{i}]", replace=False)
    for i, item in enumerate(_list(top.get("pods"), "pods")):
        b.put_pod(_pod(item, f"pods[{i}]", node), f"pods[{i}]", replace=False)
    for i, item in enumerate(_list(top.get("policies"), "policies")):
        b.put_policy(_policy(item, f"policies[{i}]"), f"policies[{i}]", replace=False)

    stages: list[Stage] = []
    scenario = Scenario(source, _str(top.get("description"), "description"), node, config, pools, nodes)

    def finish(label: str, description: str, probes_raw: Any, probes_path: str) -> None:
        b.check(label)
        cluster = b.snapshot()
        stage = Stage(label, description, cluster, ())
        try:
            scenario.calc(stage)  # Felix's calculation is the authority on policies and tiers
        except ScenarioError as exc:
            _fail("" if label == "start" else probes_path.rsplit(".", 1)[0], str(exc))
        probes = tuple(
            _probe(p, f"{probes_path}[{i}]", cluster, node, node_ips)
            for i, p in enumerate(_list(probes_raw, probes_path))
        )
        stages.append(Stage(label, description, cluster, probes))

    finish("start", "", top.get("probes"), "probes")
    for i, raw in enumerate(_list(top.get("steps"), "steps")):
        path = f"steps[{i}]"
        step = _mapping(raw, path, _STEP_KEYS)
        for j, item in enumerate(_list(step.get("delete"), f"{path}.delete")):
            b.delete(item, f"{path}.delete[{j}]")
        for j, item in enumerate(_list(step.get("apply"), f"{path}.apply")):
            b.apply(item, f"{path}.apply[{j}]", node)
        finish(f"step {i + 1}", _str(step.get("description"), f"{path}.description"),
               step.get("probes"), f"{path}.probes")
    return Scenario(source, scenario.description, node, config, pools, nodes, tuple(stages))
