"""What Felix's calculation graph sends a dataplane driver on one node, from a scenario's cluster.

`FelixCalc` takes the cluster a scenario describes (namespaces, pods, nodes, IP pools, tiers,
policies already in projectcalico.org/v3 shape, Felix config) and computes the state Felix
(Calico v3.33) would have sent the driver on node N once in sync; `FelixCalc.startup_stream`
renders it as the message stream of a fresh Felix, and `diff_stream` as the incremental
messages Felix sends when the cluster changes from one state to another.  The code follows
Felix and libcalico-go; the facts it relies on, and where they come from:

* **Endpoints** (libcalico-go ``k8s/conversion/workload_endpoint_default.go`` and
  ``updateprocessors/workloadendpointprocessor.go``): a pod with at least one IP is a workload
  endpoint ``(k8s, <ns>/<pod>, eth0)`` whose interface is ``cali`` + the first 11 hex digits of
  ``sha1("<ns>.<pod>")`` (``VethNameForWorkload``; the prefix is ``InterfacePrefix``'s first
  entry), state ``active``, ``/32``/``/128`` nets, profiles ``kns.<ns>`` then
  ``ksa.<ns>.<sa>``.  Its own labels are the pod's (minus any ``pcns.``/``pcsa.`` keys) plus
  ``projectcalico.org/namespace``, ``projectcalico.org/orchestrator: k8s`` and
  ``projectcalico.org/serviceaccount``; the namespace profile contributes ``pcns.<k>`` and
  ``pcns.projectcalico.org/name``, the service-account profile ``pcsa.projectcalico.org/name``.
  Selectors see own labels first, then the profiles' in order (Felix ``labelindex``).
* **Policies** (``updateprocessors/networkpolicyprocessor.go``,
  ``globalnetworkpolicyprocessor.go``, the staged variants, ``api/pkg/defaults``): namespaced
  kinds get ``(sel) && projectcalico.org/namespace == '<ns>'``; global ones fold in
  ``namespaceSelector`` as ``pcns.`` labels; both fold ``serviceAccountSelector`` in as ``pcsa.``
  labels.  Missing ``types`` default from the rules present.  A staged policy with
  ``stagedAction: Delete`` is not sent.  The PolicyID is (name, namespace, kind).
* **Activity** (Felix ``calc/active_rules_calculator.go``): a policy is active when its
  selector matches a local endpoint (or it has the ``AssumeNeededOnEveryNode`` hint); a profile
  when a local endpoint lists it; a listed profile that does not exist becomes deny-all.
  Rules of active policies/profiles are scanned for IP sets (`rules`), whose members are the
  matching endpoints cluster-wide.
* **Ordering** (``calc/policy_sorter.go``, ``policy_resolver.go``, ``event_sequencer.go``):
  tiers by order (none = last) then name; policies by order (none = last) then
  ``name/namespace/kind``.  An endpoint lists, per tier with a matching policy, the matching
  policies that govern ingress/egress; ``doNotTrack``/``preDNAT`` policies go to host-endpoint
  tier lists and so never appear on a workload.  The flush order is: IP set updates, deltas,
  policies, profiles, endpoint updates, endpoint removes, profile removes, policy removes, IP
  set removes, service accounts, namespaces, routes (removes, VTEP removes, VTEP adds, adds),
  hosts, IP pools, encapsulation; ``InSync`` after the first complete flush.
* **Passthrough**: ``HostMetadataUpdate`` per node (v3.33 shape, CIDR-form addresses: the node's
  ``ip`` as given if it has a prefix, else ``/32``/``/128``), ``IPAMPoolUpdate`` per pool (id is
  the CIDR with ``-`` for ``/``, allowed uses default ``[Workload, Tunnel]``),
  ``NamespaceUpdate``/``ServiceAccountUpdate`` with the original labels plus
  ``projectcalico.org/name``, and ``Encapsulation`` computed from the pools.
* **Routes** (``calc/l3_route_resolver.go``), only when Felix would run the resolver (VXLAN or
  BPF or WireGuard on, no-encap pools with ``ProgramClusterRoutes`` Enabled/EnabledNoEncapOnly,
  or IPIP pools with it Enabled/EnabledIPIPOnly, the default): one route per pool, per node pod
  CIDR (treated as that node's IPAM block), per borrowed pod address (an address inside another
  node's block), per node address and per local workload address (per every workload address
  with ``RouteSource: WorkloadIPs``), each resolved along its enclosing CIDRs as Felix does.

* **Tunnel addresses and VTEPs**: calico-node's IPIP/VXLAN tunnel addresses, taken from the
  node's ``podCIDR`` (see `FelixCalc._tunnel_addresses`), each a ``LOCAL_TUNNEL`` or
  ``REMOTE_TUNNEL`` route with its ``tunnel_type``; with VXLAN on, a
  ``VXLANTunnelEndpointUpdate`` per node (``calc/vxlan_resolver.go``, MAC derived from the node
  name).

Not reproduced (documented limits): tunnel addresses of nodes without a pod CIDR in an
encapsulated pool, WireGuard endpoints, Services, host
endpoints, global BGP config, QoS/floating-IP/spoofing annotations, KubeVirt live-migration
computed data, and Felix restarting itself when config or encapsulation changes (`diff_stream`
just reports the new values).  Every service account referenced by a pod exists, and so does
each namespace's ``default`` one; a pod IP outside every node's pod CIDR has no IPAM block.
Messages of one type are sorted by ID (Felix's own order among them is random).
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from ..felix import felixbackend_pb2 as pb
from .resources import IPPoolSpec, Namespace, Node, Pod, PolicyResource, ScenarioError, Tier
from .rules import (
    LABEL_NAMESPACE,
    LABEL_ORCHESTRATOR,
    LABEL_SERVICE_ACCOUNT,
    NAMESPACE_LABEL_PREFIX,
    SERVICE_ACCOUNT_LABEL_PREFIX,
    BackendRule,
    IPSetSpec,
    backend_rules,
    prefix_selector,
    proto_rules,
)
from .selector import Selector, SelectorError, normalise_selector, parse_selector

__all__ = [
    "DEFAULT_TIERS",
    "GLOBAL_KINDS",
    "NAMESPACED_KINDS",
    "EndpointKey",
    "FelixCalc",
    "ModelPolicy",
    "PolicyKey",
    "convert_policy",
    "diff_stream",
    "veth_name",
]

#: (orchestrator_id, workload_id, endpoint_id) of a workload endpoint.
EndpointKey: TypeAlias = tuple[str, str, str]
IPNet: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddr: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

NAMESPACED_KINDS = frozenset(
    {"NetworkPolicy", "KubernetesNetworkPolicy", "StagedNetworkPolicy",
     "StagedKubernetesNetworkPolicy"}
)
GLOBAL_KINDS = frozenset({"GlobalNetworkPolicy", "StagedGlobalNetworkPolicy"})

#: The tiers Calico creates itself (api/pkg/apis/projectcalico/v3/tier.go orders).
DEFAULT_TIERS = (
    Tier("kube-admin", 1_000.0, "Pass"),
    Tier("default", 1_000_000.0, "Deny"),
    Tier("kube-baseline", 10_000_000.0, "Pass"),
)

_NAMESPACED_FIELDS = frozenset(
    {"tier", "order", "selector", "types", "ingress", "egress", "serviceAccountSelector",
     "performanceHints"}
)
_GLOBAL_FIELDS = _NAMESPACED_FIELDS | {"namespaceSelector", "doNotTrack", "preDNAT",
                                       "applyOnForward"}
_STAGED_ACTIONS = ("Set", "Delete", "Learn", "Ignore")
_PERF_HINTS = ("AssumeNeededOnEveryNode",)
_NAME_LABEL = "projectcalico.org/name"
_DEFAULT_ALLOWED_USES = ("Workload", "Tunnel")
_ENCAP_MODES = {"never": "", "": "", "always": "always", "crosssubnet": "cross-subnet"}
_TRUE = frozenset({"true", "1", "yes", "y", "t"})
_FALSE = frozenset({"false", "0", "no", "n", "f"})

# RouteTrie reference types (l3_route_resolver.go RefType), in Felix's order.
_REF_WEP = 0
_REF_WIREGUARD = 1
_REF_IPIP = 2
_REF_VXLAN = 3

# The profile Felix substitutes for a listed profile that does not exist (DummyDropRules).
_DROP_RULES = (BackendRule(action="deny"),)
_ALLOW_RULES = (BackendRule(action="allow"),)


# ---------------------------------------------------------------------------------------------
# Policies.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class PolicyKey:
    """Felix's policy identity (``model.PolicyKey`` / ``proto.PolicyID``)."""

    name: str
    namespace: str
    kind: str

    def to_proto(self) -> pb.PolicyID:
        return pb.PolicyID(name=self.name, namespace=self.namespace, kind=self.kind)

    def __str__(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {ns}{self.name}"


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    """A policy as Felix's calculation graph holds it (libcalico-go ``model.Policy``).

    Equal values mean Felix would see no change (and send no update).
    """

    key: PolicyKey
    tier: str
    order: float | None
    selector: str  # the combined selector string, as the v3->v1 conversion writes it
    types: tuple[str, ...]  # lowercased ("ingress", "egress")
    inbound: tuple[BackendRule, ...]
    outbound: tuple[BackendRule, ...]
    do_not_track: bool = False
    pre_dnat: bool = False
    apply_on_forward: bool = False
    perf_hints: tuple[str, ...] = ()
    staged_action: str = ""

    @property
    def namespace(self) -> str:
        return self.key.namespace

    @property
    def parsed_selector(self) -> Selector:
        return parse_selector(self.selector)

    @property
    def governs_ingress(self) -> bool:
        return not self.types or "ingress" in self.types

    @property
    def governs_egress(self) -> bool:
        return not self.types or "egress" in self.types

    @property
    def force_programmed(self) -> bool:
        """``AssumeNeededOnEveryNode``: active even with no local endpoint."""
        return "AssumeNeededOnEveryNode" in self.perf_hints

    def metadata(self) -> tuple[Any, ...]:
        """What the policy sorter keeps (``policyMetadata``): a change re-sends endpoints."""
        return (self.tier, self.order, self.do_not_track, self.pre_dnat,
                self.apply_on_forward, self.governs_ingress, self.governs_egress)

    def sort_key(self) -> tuple[float, str]:
        """``PolKVLess``: order (none = +Inf), then "name/namespace/kind"."""
        order = math.inf if self.order is None else self.order
        return order, f"{self.key.name}/{self.key.namespace}/{self.key.kind}"


def _spec_str(spec: Mapping[str, Any], key: str, path: str) -> str:
    value = spec.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ScenarioError(f"{path}.{key}: expected a string, got {value!r}")
    return value


def _spec_bool(spec: Mapping[str, Any], key: str, path: str) -> bool:
    value = spec.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ScenarioError(f"{path}.{key}: expected true or false, got {value!r}")
    return value


def _spec_selector(spec: Mapping[str, Any], key: str, path: str) -> str:
    text = _spec_str(spec, key, path)
    try:
        parse_selector(text)
    except SelectorError as exc:
        raise ScenarioError(f"{path}.{key}: {exc}") from None
    return text


def _prefix_and_append(current: str, new: str, prefix: str) -> str:
    """libcalico-go ``prefixAndAppendSelector``."""
    if not new:
        return current
    prefixed = prefix_selector(new, prefix)
    return f"({current}) && {prefixed}" if current else prefixed


def convert_policy(res: PolicyResource) -> ModelPolicy | None:
    """A v3 policy -> Felix's model policy; None for a staged policy with ``stagedAction: Delete``.

    Raises `ScenarioError` for unknown kinds, fields this project does not support and values
    Calico's API would refuse.
    """
    kind, ns = res.felix_kind, res.namespace
    path = f"policies[{kind} {ns + '/' if ns else ''}{res.name}].spec"
    if not res.name:
        raise ScenarioError(f"{path}: policy has no name")
    if kind in NAMESPACED_KINDS:
        allowed = _NAMESPACED_FIELDS
        if not ns:
            raise ScenarioError(f"{path}: a {kind} needs a namespace")
    elif kind in GLOBAL_KINDS:
        allowed = _GLOBAL_FIELDS
        if ns:
            raise ScenarioError(f"{path}: a {kind} is not namespaced (got namespace {ns!r})")
    else:
        raise ScenarioError(
            f"{path}: unknown policy kind {kind!r} "
            f"(one of {', '.join(sorted(NAMESPACED_KINDS | GLOBAL_KINDS))})"
        )
    staged = kind.startswith("Staged")
    if staged:
        allowed = allowed | {"stagedAction"}
    spec = res.spec
    if not isinstance(spec, Mapping):
        raise ScenarioError(f"{path}: expected a mapping")
    for key in spec:
        if key not in allowed:
            raise ScenarioError(f"{path}.{key}: unknown or unsupported field for {kind}")

    staged_action = ""
    if staged:
        staged_action = _spec_str(spec, "stagedAction", path)
        if staged_action and staged_action not in _STAGED_ACTIONS:
            raise ScenarioError(
                f"{path}.stagedAction: must be one of {', '.join(_STAGED_ACTIONS)}"
            )
        if staged_action == "Delete":
            return None  # the syncer does not pass it to Felix

    tier = _spec_str(spec, "tier", path) or "default"
    order = spec.get("order")
    if order is not None:
        if isinstance(order, bool) or not isinstance(order, (int, float)):
            raise ScenarioError(f"{path}.order: expected a number, got {order!r}")
        order = float(order)

    ingress = backend_rules(spec.get("ingress"), namespace=ns, path=f"{path}.ingress")
    egress = backend_rules(spec.get("egress"), namespace=ns, path=f"{path}.egress")

    raw_types = spec.get("types")
    types: list[str] = []
    if raw_types is not None:
        if isinstance(raw_types, (str, bytes)) or not isinstance(raw_types, Sequence):
            raise ScenarioError(f"{path}.types: expected a list of Ingress/Egress")
        for i, t in enumerate(raw_types):
            if not isinstance(t, str) or t.lower() not in ("ingress", "egress"):
                raise ScenarioError(f"{path}.types[{i}]: must be Ingress or Egress, got {t!r}")
            if t.lower() not in types:
                types.append(t.lower())
    if not types:
        # api/pkg/defaults defaultPolicyTypesField: from the rules present.
        if not egress:
            types = ["ingress"]
        elif not ingress:
            types = ["egress"]
        else:
            types = ["ingress", "egress"]

    selector = _spec_selector(spec, "selector", path)
    sa_selector = _spec_selector(spec, "serviceAccountSelector", path)
    if kind in NAMESPACED_KINDS:
        ns_sel = f"{LABEL_NAMESPACE} == '{ns}'"
        selector = f"({selector}) && {ns_sel}" if selector else ns_sel
        selector = _prefix_and_append(selector, sa_selector, SERVICE_ACCOUNT_LABEL_PREFIX)
    else:
        ns_selector = _spec_selector(spec, "namespaceSelector", path)
        if ns_selector:
            selector = _prefix_and_append(selector, ns_selector, NAMESPACE_LABEL_PREFIX)
            selector = selector.replace("all()", f"has({LABEL_NAMESPACE})")
        if sa_selector:
            selector = _prefix_and_append(selector, sa_selector, SERVICE_ACCOUNT_LABEL_PREFIX)
            selector = selector.replace("all()", f"has({LABEL_SERVICE_ACCOUNT})")
    try:
        parse_selector(selector)
    except SelectorError as exc:  # only a replaced all() inside a quoted value could do this
        raise ScenarioError(f"{path}: combined selector is invalid: {exc}") from None

    do_not_track = _spec_bool(spec, "doNotTrack", path)
    pre_dnat = _spec_bool(spec, "preDNAT", path)
    apply_on_forward = _spec_bool(spec, "applyOnForward", path)
    if do_not_track and pre_dnat:
        raise ScenarioError(f"{path}: preDNAT and doNotTrack cannot both be true")
    if (do_not_track or pre_dnat) and not apply_on_forward:
        raise ScenarioError(f"{path}.applyOnForward: must be true if preDNAT or doNotTrack is")
    if pre_dnat and (egress or "egress" in types):
        raise ScenarioError(f"{path}: a preDNAT policy cannot have egress rules or type Egress")

    hints_raw = spec.get("performanceHints") or []
    if isinstance(hints_raw, (str, bytes)) or not isinstance(hints_raw, Sequence):
        raise ScenarioError(f"{path}.performanceHints: expected a list")
    for i, hint in enumerate(hints_raw):
        if hint not in _PERF_HINTS:
            raise ScenarioError(f"{path}.performanceHints[{i}]: unknown hint {hint!r}")

    return ModelPolicy(
        key=PolicyKey(res.name, ns, kind),
        tier=tier,
        order=order,
        selector=selector,
        types=tuple(types),
        inbound=ingress,
        outbound=egress,
        do_not_track=do_not_track,
        pre_dnat=pre_dnat,
        apply_on_forward=apply_on_forward,
        perf_hints=tuple(hints_raw),
        staged_action=staged_action,
    )


# ---------------------------------------------------------------------------------------------
# Endpoints.
# ---------------------------------------------------------------------------------------------


def veth_name(namespace: str, pod: str, prefix: str = "cali") -> str:
    """Calico's ``VethNameForWorkload``: prefix + first 11 hex chars of sha1("<ns>.<pod>")."""
    return prefix + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]


@dataclass(frozen=True, slots=True)
class _Workload:
    """A pod as Felix's ``model.WorkloadEndpoint`` (the parts this project fills)."""

    key: EndpointKey
    node: str
    namespace: str
    pod: str
    iface: str
    labels: tuple[tuple[str, str], ...]
    profile_ids: tuple[str, ...]
    ipv4: tuple[str, ...]  # bare addresses
    ipv6: tuple[str, ...]
    ports: tuple[tuple[str, str, int], ...]  # (name, tcp|udp|sctp, port)
    nats: tuple[tuple[str, str], ...] = ()  # floating IPs: (external, the pod's address)

    @property
    def addresses(self) -> tuple[str, ...]:
        return self.ipv4 + self.ipv6


def _workload(pod: Pod, iface_prefix: str) -> _Workload | None:
    path = f"pods[{pod.namespace}/{pod.name}]"
    v4: list[str] = []
    v6: list[str] = []
    for i, text in enumerate(pod.ips):
        try:
            addr = ipaddress.ip_interface(text).ip
        except ValueError:
            raise ScenarioError(f"{path}.ips[{i}]: invalid IP address {text!r}") from None
        (v4 if addr.version == 4 else v6).append(str(addr))
    if not v4 and not v6:
        return None  # the syncer filters out endpoints with no IPNetworks
    labels = {
        k: v for k, v in pod.labels.items()
        if not k.startswith((NAMESPACE_LABEL_PREFIX, SERVICE_ACCOUNT_LABEL_PREFIX))
    }
    labels[LABEL_NAMESPACE] = pod.namespace
    labels[LABEL_ORCHESTRATOR] = "k8s"
    profiles = [f"kns.{pod.namespace}"]
    if pod.service_account:
        labels[LABEL_SERVICE_ACCOUNT] = pod.service_account
        profiles.append(f"ksa.{pod.namespace}.{pod.service_account}")
    ports = []
    for j, cp in enumerate(pod.ports):
        proto = (cp.protocol or "TCP").upper()
        if proto not in ("TCP", "UDP", "SCTP"):
            continue  # appendEndpointPorts skips other protocols
        if not cp.name or not cp.port:
            continue  # unnamed ports never reach Felix
        if not 1 <= cp.port <= 65535:
            raise ScenarioError(f"{path}.ports[{j}]: invalid port {cp.port}")
        ports.append((cp.name, proto.lower(), int(cp.port)))
    return _Workload(
        key=("k8s", f"{pod.namespace}/{pod.name}", "eth0"),
        node=pod.node,
        namespace=pod.namespace,
        pod=pod.name,
        iface=veth_name(pod.namespace, pod.name, iface_prefix),
        labels=tuple(sorted(labels.items())),
        profile_ids=tuple(profiles),
        ipv4=tuple(v4),
        ipv6=tuple(v6),
        ports=tuple(ports),
        nats=_floating_ip_nats(pod.floating_ips, v4, v6),
    )


def _floating_ip_nats(
    floating: Iterable[str], v4: Sequence[str], v6: Sequence[str]
) -> tuple[tuple[str, str], ...]:
    """Calico's pod conversion: each floating IP maps to the pod's address of its family, and one
    of a family the pod has no address of is dropped."""
    out = []
    for ext in floating:
        inner = v6 if ":" in ext else v4
        if inner:
            out.append((ext, inner[-1]))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _TierDef:
    name: str
    order: float | None
    default_action: str  # "Deny" or "Pass"

    def sort_key(self) -> tuple[bool, float, str]:
        """``TierLess``: order (none last), then name."""
        return (self.order is None, 0.0 if self.order is None else self.order, self.name)


def _tier_def(tier: Tier) -> _TierDef:
    path = f"tiers[{tier.name}]"
    if not tier.name:
        raise ScenarioError("tiers: a tier has no name")
    action = (tier.default_action or "Deny").lower()
    if action not in ("deny", "pass"):
        raise ScenarioError(f"{path}.defaultAction: must be Deny or Pass")
    order = tier.order
    if order is not None:
        if isinstance(order, bool) or not isinstance(order, (int, float)):
            raise ScenarioError(f"{path}.order: expected a number, got {order!r}")
        order = float(order)
    for builtin in DEFAULT_TIERS:
        if tier.name == builtin.name and (
            order != builtin.order or action != builtin.default_action.lower()
        ):
            raise ScenarioError(
                f"{path}: the {builtin.name} tier must have order {builtin.order:g} and "
                f"defaultAction {builtin.default_action}"
            )
    return _TierDef(tier.name, order, "Pass" if action == "pass" else "Deny")


# ---------------------------------------------------------------------------------------------
# Small helpers.
# ---------------------------------------------------------------------------------------------


def vtep_mac(name: str) -> str:
    """The MAC Felix gives a node's VTEP when the node sets none (``vtepMACForHost``): ``f``
    then the first five bytes of the SHA-1 of the node name (``<name>-v6`` for IPv6)."""
    raw = b"f" + hashlib.sha1(name.encode()).digest()[:5]
    return ":".join(f"{b:02x}" for b in raw)


def _host_cidr(addr: str) -> str:
    return f"{addr}/{32 if ':' not in addr else 128}"


def _node_address(node: Node) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    """The node's address; a bare one is a host-length prefix (``cnet.ParseCIDROrIP``)."""
    if not node.ip:
        return None
    try:
        return ipaddress.ip_interface(node.ip)
    except ValueError:
        raise ScenarioError(f"nodes[{node.name}].ip: invalid address {node.ip!r}") from None


def _encap_mode(value: str, path: str) -> str:
    mode = _ENCAP_MODES.get((value or "").replace("-", "").replace("_", "").lower())
    if mode is None:
        raise ScenarioError(f"{path}: must be Never, Always or CrossSubnet, got {value!r}")
    return mode


def _msg(**payload: Any) -> pb.ToDataplane:
    return pb.ToDataplane(**payload)


# ---------------------------------------------------------------------------------------------
# The calculation.
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _RouteInfo:
    pools: list[tuple[int, bool, bool]] = field(default_factory=list)  # (type, nat, cross)
    blocks: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    refs: list[tuple[str, int]] = field(default_factory=list)  # (node, ref type)


@dataclass(frozen=True, slots=True)
class _NodeInfo:
    v4_addr: ipaddress.IPv4Address | None
    v4_cidr: ipaddress.IPv4Network | None
    v6_addr: ipaddress.IPv6Address | None
    v6_cidr: ipaddress.IPv6Network | None


class FelixCalc:
    """Felix's view for one node, computed from a scenario's cluster.

    Attributes (all computed in the constructor; treat them as read-only):

    * ``ipsets``: IP set ID -> (``IPSetUpdate`` type, members); ``ipset_specs`` says what each is.
    * ``policies``: active policies, `PolicyKey` -> ``felix.Policy``; ``model_policies`` has
      every policy (active or not) as `ModelPolicy`; ``policy_matches`` the local endpoints
      each policy selects.
    * ``profiles``: active profiles, name -> ``felix.Profile``.
    * ``endpoints``: local workload endpoints, `EndpointKey` -> ``felix.WorkloadEndpoint``.
    * ``namespaces`` / ``service_accounts``: labels as ``NamespaceUpdate`` /
      ``ServiceAccountUpdate`` carry them.
    * ``hosts``: node name -> ``HostMetadataUpdate``; ``pools``: pool ID -> ``IPAMPool``;
      ``encapsulation``; ``tunnel_addrs``: node -> its tunnel addresses; ``routes``: dst ->
      ``RouteUpdate``; ``vteps``: node -> ``VXLANTunnelEndpointUpdate``; ``config``: the ``ConfigUpdate`` map.
    """

    def __init__(
        self,
        node: str,
        namespaces: Iterable[Namespace],
        pods: Iterable[Pod],
        nodes: Iterable[Node],
        pools: Iterable[IPPoolSpec],
        tiers: Iterable[Tier],
        policies: Iterable[PolicyResource],
        config: Mapping[str, Any] | None = None,
        pod_ips_ever: Iterable[str] = (),
    ) -> None:
        """``pod_ips_ever``: pod addresses of the cluster's other states (a scenario's other
        stages), which its nodes' tunnel addresses must avoid too, so that these stay put."""
        if not node:
            raise ScenarioError("node: the local node needs a name")
        self.node = node
        self.scenario_config = {str(k): _raw_config_value(v) for k, v in (config or {}).items()}
        self.config: dict[str, str] = {"FelixHostname": node, **self.scenario_config}

        self._namespaces: dict[str, Namespace] = _unique(namespaces, "namespaces", lambda n: n.name)
        pod_list = list(pods)
        _unique(pod_list, "pods", lambda p: f"{p.namespace}/{p.name}")
        node_list = list(nodes)
        self._nodes: dict[str, Node] = _unique(node_list, "nodes", lambda n: n.name)
        self._pool_specs = list(pools)

        # Tiers: the scenario's plus the ones Calico always has.
        self._tiers: dict[str, _TierDef] = {}
        for tier in list(tiers):
            if tier.name in self._tiers:
                raise ScenarioError(f"tiers[{tier.name}]: defined twice")
            self._tiers[tier.name] = _tier_def(tier)
        for builtin in DEFAULT_TIERS:
            self._tiers.setdefault(builtin.name, _tier_def(builtin))

        # Policies as Felix's model holds them.
        self.model_policies: dict[PolicyKey, ModelPolicy] = {}
        for res in policies:
            mp = convert_policy(res)
            if mp is None:
                continue
            if mp.key in self.model_policies:
                raise ScenarioError(f"policies[{mp.key}]: defined twice")
            if mp.tier not in self._tiers:
                raise ScenarioError(f"policies[{mp.key}].spec.tier: tier {mp.tier!r} does not exist")
            self.model_policies[mp.key] = mp

        iface_prefix = (self._cfg("InterfacePrefix") or "cali").split(",")[0] or "cali"

        # Profiles that exist: one per namespace and per service account.
        self.namespaces: dict[str, dict[str, str]] = {}
        self._profile_labels: dict[str, dict[str, str]] = {}
        self._profile_rules: dict[str, tuple[tuple[BackendRule, ...], tuple[BackendRule, ...]]] = {}
        for ns in self._namespaces.values():
            decoded = {**ns.labels, _NAME_LABEL: ns.name}
            self.namespaces[ns.name] = decoded
            name = f"kns.{ns.name}"
            self._profile_labels[name] = {NAMESPACE_LABEL_PREFIX + k: v for k, v in decoded.items()}
            self._profile_rules[name] = (_ALLOW_RULES, _ALLOW_RULES)
        sa_keys = {(ns, "default") for ns in self._namespaces}
        sa_keys |= {(p.namespace, p.service_account) for p in pod_list
                    if p.service_account and p.namespace in self._namespaces}
        self.service_accounts: dict[tuple[str, str], dict[str, str]] = {}
        for ns_name, sa in sorted(sa_keys):
            decoded = {_NAME_LABEL: sa}
            self.service_accounts[(ns_name, sa)] = decoded
            name = f"ksa.{ns_name}.{sa}"
            self._profile_labels[name] = {
                SERVICE_ACCOUNT_LABEL_PREFIX + k: v for k, v in decoded.items()
            }
            self._profile_rules[name] = ((), ())

        # Workload endpoints, everywhere, with the labels selectors see.
        self._workloads: dict[EndpointKey, _Workload] = {}
        for pod in pod_list:
            wl = _workload(pod, iface_prefix)
            if wl is not None:
                self._workloads[wl.key] = wl
        self._effective_labels: dict[EndpointKey, dict[str, str]] = {
            key: self._inherit(wl) for key, wl in self._workloads.items()
        }
        self._local = {k: wl for k, wl in self._workloads.items() if wl.node == node}

        # Which policies select which local endpoints; which are active.
        self.policy_matches: dict[PolicyKey, frozenset[EndpointKey]] = {}
        for key, mp in self.model_policies.items():
            sel = mp.parsed_selector
            self.policy_matches[key] = frozenset(
                ek for ek in self._local if sel.evaluate(self._effective_labels[ek])
            )
        self._matches_by_endpoint: dict[EndpointKey, frozenset[PolicyKey]] = {
            ek: frozenset(pk for pk, eps in self.policy_matches.items() if ek in eps)
            for ek in self._local
        }
        active = sorted(
            pk for pk, mp in self.model_policies.items()
            if self.policy_matches[pk] or mp.force_programmed
        )

        # Rules -> proto, collecting the IP sets they need.
        self.ipset_specs: dict[str, IPSetSpec] = {}
        self.policies: dict[PolicyKey, pb.Policy] = {}
        for pk in active:
            mp = self.model_policies[pk]
            inbound, s1 = proto_rules(mp.inbound, f"pol-in-default/{pk.name}")
            outbound, s2 = proto_rules(mp.outbound, f"pol-out-default/{pk.name}")
            self.ipset_specs.update(s1)
            self.ipset_specs.update(s2)
            self.policies[pk] = pb.Policy(
                namespace=mp.namespace,
                tier=mp.tier,
                inbound_rules=inbound,
                outbound_rules=outbound,
                untracked=mp.do_not_track,
                pre_dnat=mp.pre_dnat,
                original_selector=normalise_selector(mp.selector),
                perf_hints=list(mp.perf_hints),
            )
        self.active_profile_rules: dict[str, tuple[tuple[BackendRule, ...], tuple[BackendRule, ...]]] = {}
        for wl in self._local.values():
            for name in wl.profile_ids:
                self.active_profile_rules[name] = self._profile_rules.get(
                    name, (_DROP_RULES, _DROP_RULES)
                )
        self.profiles: dict[str, pb.Profile] = {}
        for name in sorted(self.active_profile_rules):
            rin, rout = self.active_profile_rules[name]
            inbound, s1 = proto_rules(rin, f"prof-in-{name}")
            outbound, s2 = proto_rules(rout, f"prof-out-{name}")
            self.ipset_specs.update(s1)
            self.ipset_specs.update(s2)
            self.profiles[name] = pb.Profile(inbound_rules=inbound, outbound_rules=outbound)

        self.ipsets: dict[str, tuple[int, frozenset[str]]] = {
            set_id: (spec.ipset_type, self._members(spec))
            for set_id, spec in sorted(self.ipset_specs.items())
        }

        self.endpoints: dict[EndpointKey, pb.WorkloadEndpoint] = {
            key: self._endpoint_proto(self._local[key]) for key in sorted(self._local)
        }

        self._node_infos = {n.name: info for n in node_list if (info := _node_info(n)) is not None}
        self.hosts: dict[str, pb.HostMetadataUpdate] = {
            n.name: _host_metadata(n) for n in sorted(node_list, key=lambda n: n.name)
        }
        self.pools: dict[str, pb.IPAMPool] = {}
        self._pool_nets: dict[str, tuple[IPNet, str, str, bool]] = {}
        for i, spec in enumerate(self._pool_specs):
            self._add_pool(spec, i)
        self.encapsulation = self._encapsulation()
        self.tunnel_addrs: dict[str, list[tuple[int, IPAddr]]] = self._tunnel_addresses(pod_ips_ever)
        self.route_resolver_enabled = self._route_resolver_enabled()
        self.routes: dict[str, pb.RouteUpdate] = self._routes() if self.route_resolver_enabled else {}
        self.vteps: dict[str, pb.VXLANTunnelEndpointUpdate] = self._vteps()

    # ------------------------------------------------------------------------- public helpers

    @classmethod
    def empty(cls, node: str, config: Mapping[str, Any] | None = None) -> FelixCalc:
        """A cluster with nothing in it: what a driver knows before Felix's first flush."""
        return cls(node, [], [], [], [], [], [], config)

    def endpoint_labels(self, namespace: str, pod: str) -> dict[str, str]:
        """The labels Felix's selectors see on a pod's endpoint (own, then inherited)."""
        return dict(self._effective_labels[("k8s", f"{namespace}/{pod}", "eth0")])

    def startup_stream(self) -> list[pb.ToDataplane]:
        """The whole stream a fresh Felix sends: ConfigUpdate (seq 0), one flush, InSync."""
        msgs = [self.config_update()]
        msgs += _flush(FelixCalc.empty(self.node, self.scenario_config), self, startup=True)
        msgs.append(_msg(in_sync=pb.InSync()))
        return _numbered(msgs, 0)

    def config_update(self) -> pb.ToDataplane:
        """``ConfigUpdate`` with explicitly set parameters (FelixHostname as calico-node's
        ``FELIX_FELIXHOSTNAME`` sets it, then the scenario's, as global datastore config)."""
        update = pb.ConfigUpdate(config=self.config)
        if "FelixHostname" not in self.scenario_config:
            update.source_to_raw_config[5].source = "environment variable"
            update.source_to_raw_config[5].config["FelixHostname"] = self.node
        if self.scenario_config:
            update.source_to_raw_config[1].source = "datastore (global)"
            update.source_to_raw_config[1].config.update(self.scenario_config)
        return _msg(config_update=update)

    # ------------------------------------------------------------------------- internals

    def _cfg(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.config.items():
            if key.lower() == lname:
                return value
        return None

    def _cfg_bool(self, name: str) -> bool | None:
        raw = self._cfg(name)
        if raw is None or raw == "":
            return None
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ScenarioError(f"config.{name}: invalid boolean {raw!r}")

    def _inherit(self, wl: _Workload) -> dict[str, str]:
        labels: dict[str, str] = {}
        for profile in reversed(wl.profile_ids):
            labels.update(self._profile_labels.get(profile, {}))
        labels.update(wl.labels)
        return labels

    def _members(self, spec: IPSetSpec) -> frozenset[str]:
        """Felix's ``SelectorAndNamedPortIndex`` contribution of every endpoint in the cluster."""
        members: set[str] = set()
        for key, wl in self._workloads.items():
            if not spec.selector.evaluate(self._effective_labels[key]):
                continue
            if not spec.protocol:
                members.update(_host_cidr(a) for a in wl.addresses)
                continue
            for name, proto, port in wl.ports:
                if name == spec.named_port and spec.protocol in ("any", proto):
                    members.update(f"{a},{proto}:{port}" for a in wl.addresses)
        return frozenset(members)

    def _endpoint_proto(self, wl: _Workload) -> pb.WorkloadEndpoint:
        ep = pb.WorkloadEndpoint(
            state="active",
            name=wl.iface,
            profile_ids=list(wl.profile_ids),
            ipv4_nets=[_host_cidr(a) for a in wl.ipv4],
            ipv6_nets=[_host_cidr(a) for a in wl.ipv6],
            tiers=self._tier_infos(wl.key),
            ipv4_nat=[pb.NatInfo(ext_ip=e, int_ip=i) for e, i in wl.nats if ":" not in e],
            ipv6_nat=[pb.NatInfo(ext_ip=e, int_ip=i) for e, i in wl.nats if ":" in e],
        )
        labels = dict(wl.labels)
        if labels.get("kubevirt.io") == "virt-launcher":
            ep.skip_redir.Ingress = True
        vmi = labels.get("vmi.kubevirt.io/id") or labels.get("vm.kubevirt.io/name")
        if vmi:
            ep.live_migration_vmi_name = vmi
        return ep

    def _tier_infos(self, key: EndpointKey) -> list[pb.TierInfo]:
        """``PolicyResolver.sendEndpointUpdate`` + ``tierInfoToProtoTierInfo`` (normal tiers)."""
        matched = self._matches_by_endpoint.get(key, frozenset())
        out = []
        for tier in sorted(self._tiers.values(), key=_TierDef.sort_key):
            pols = sorted(
                (self.model_policies[pk] for pk in matched if self.model_policies[pk].tier == tier.name),
                key=ModelPolicy.sort_key,
            )
            info = pb.TierInfo(name=tier.name, default_action=tier.default_action)
            for mp in pols:
                if mp.do_not_track or mp.pre_dnat:
                    continue  # untracked / pre-DNAT tiers: host endpoints only
                if mp.governs_ingress:
                    info.ingress_policies.append(mp.key.to_proto())
                if mp.governs_egress:
                    info.egress_policies.append(mp.key.to_proto())
            if info.ingress_policies or info.egress_policies:
                out.append(info)
        return out

    def _add_pool(self, spec: IPPoolSpec, index: int) -> None:
        path = f"ipPools[{index}]"
        try:
            net = ipaddress.ip_network(spec.cidr, strict=False)
        except ValueError:
            raise ScenarioError(f"{path}.cidr: invalid CIDR {spec.cidr!r}") from None
        pool_id = str(net).replace("/", "-", 1)
        if pool_id in self.pools:
            raise ScenarioError(f"{path}.cidr: pool {net} defined twice")
        ipip = _encap_mode(spec.ipip_mode, f"{path}.ipipMode")
        vxlan = _encap_mode(spec.vxlan_mode, f"{path}.vxlanMode")
        self.pools[pool_id] = pb.IPAMPool(
            cidr=str(net),
            masquerade=bool(spec.nat_outgoing),
            ipip_mode=ipip,
            vxlan_mode=vxlan,
            allowed_uses=list(_DEFAULT_ALLOWED_USES),
        )
        self._pool_nets[pool_id] = (net, ipip, vxlan, bool(spec.nat_outgoing))

    def _encapsulation(self) -> pb.Encapsulation:
        """``EncapsulationCalculator``: config overrides, else whether any pool uses the encap."""
        nets = list(self._pool_nets.values())
        ipip = self._cfg_bool("IpInIpEnabled")
        if ipip is None:
            ipip = any(p[1] for p in nets)
        vxlan = self._cfg_bool("VXLANEnabled")
        if vxlan is None:
            vxlan = any(p[2] and p[0].version == 4 for p in nets)
        vxlan6 = any(p[2] and p[0].version == 6 for p in nets)
        no_encap = self._program_cluster_routes() in ("Enabled", "EnabledNoEncapOnly") and any(
            not p[1] and not p[2] for p in nets
        )
        return pb.Encapsulation(
            ipip_enabled=ipip, vxlan_enabled=vxlan, vxlan_enabled_v6=vxlan6,
            no_encap_enabled=no_encap,
        )

    def _tunnel_addresses(self, pod_ips_ever: Iterable[str]) -> dict[str, list[tuple[int, IPAddr]]]:
        """Node -> (reference type, address) of the tunnel addresses calico-node gives it
        (``node/pkg/allocateip``, in its order: IPIP, VXLAN, VXLAN IPv6): one per kind whose
        encapsulation a pool of that family turns on (IPIP: IPv4 pools only).

        IPAM takes them from the node's own block, which a scenario writes as the node's
        ``podCIDR``; the address is the block's lowest one that no pod uses (a block hands out
        its addresses in order) in any state of the cluster. A node whose pod CIDR lies in no
        such pool would get one from a block the scenario does not describe, so it gets none here
        (and so no VTEP).
        """
        used: set[IPAddr] = {ipaddress.ip_address(a) for a in pod_ips_ever}
        for wl in self._workloads.values():
            used.update(ipaddress.ip_address(a) for a in wl.addresses)
        out: dict[str, list[tuple[int, IPAddr]]] = {}
        for name in sorted(self._nodes):
            block = self._pod_block(self._nodes[name])
            if block is None:
                continue
            kinds: set[int] = set()
            for net, ipip, vxlan, _nat in self._pool_nets.values():
                if net.version == block.version and block.subnet_of(net):  # type: ignore[arg-type]
                    if ipip and block.version == 4:
                        kinds.add(_REF_IPIP)
                    if vxlan:
                        kinds.add(_REF_VXLAN)
            addrs: list[tuple[int, IPAddr]] = []
            for kind in sorted(kinds):
                free = next((a for a in block if a not in used), None)
                if free is not None:
                    used.add(free)
                    addrs.append((kind, free))
            if addrs:
                out[name] = addrs
        return out

    @staticmethod
    def _pod_block(node: Node) -> IPNet | None:
        if not node.pod_cidr:
            return None
        try:
            return ipaddress.ip_network(node.pod_cidr, strict=False)
        except ValueError:
            raise ScenarioError(f"nodes[{node.name}].podCIDR: invalid CIDR {node.pod_cidr!r}") from None

    def _vteps(self) -> dict[str, pb.VXLANTunnelEndpointUpdate]:
        """``VXLANResolver`` (only when VXLAN is on): a VTEP per node with a VXLAN tunnel address
        and a node address of the same family, the MAC derived from the node's name as Felix
        derives it when the node sets none."""
        e = self.encapsulation
        if not (e.vxlan_enabled or e.vxlan_enabled_v6):
            return {}
        out: dict[str, pb.VXLANTunnelEndpointUpdate] = {}
        for name, addrs in self.tunnel_addrs.items():
            info = self._node_infos.get(name)
            if info is None:
                continue
            vtep = pb.VXLANTunnelEndpointUpdate(node=name)
            for kind, addr in addrs:
                if kind != _REF_VXLAN:
                    continue
                if addr.version == 4 and info.v4_addr is not None:
                    vtep.ipv4_addr, vtep.parent_device_ip = str(addr), str(info.v4_addr)
                    vtep.mac = vtep_mac(name)
                elif addr.version == 6 and info.v6_addr is not None:
                    vtep.ipv6_addr, vtep.parent_device_ipv6 = str(addr), str(info.v6_addr)
                    vtep.mac_v6 = vtep_mac(name + "-v6")
            if vtep.ipv4_addr or vtep.ipv6_addr:
                out[name] = vtep
        return out

    def _program_cluster_routes(self) -> str:
        raw = self._cfg("ProgramClusterRoutes") or "EnabledIPIPOnly"
        for value in ("Enabled", "Disabled", "EnabledIPIPOnly", "EnabledNoEncapOnly"):
            if raw.lower() == value.lower():
                return value
        raise ScenarioError(f"config.ProgramClusterRoutes: invalid value {raw!r}")

    def _route_resolver_enabled(self) -> bool:
        """calc_graph.go: when Felix creates the L3 route resolver."""
        e = self.encapsulation
        return bool(
            self._cfg_bool("BPFEnabled")
            or e.vxlan_enabled
            or e.vxlan_enabled_v6
            or self._cfg_bool("WireguardEnabled")
            or self._cfg_bool("WireguardEnabledV6")
            or e.no_encap_enabled
            or (e.ipip_enabled and self._program_cluster_routes() in ("Enabled", "EnabledIPIPOnly"))
        )

    def _routes(self) -> dict[str, pb.RouteUpdate]:
        """The routes Felix's ``L3RouteResolver`` has sent once it has seen everything."""
        entries: dict[IPNet, _RouteInfo] = {}

        def entry(net: IPNet) -> _RouteInfo:
            return entries.setdefault(net, _RouteInfo())

        for net, ipip, vxlan, nat in self._pool_nets.values():
            ptype = pb.VXLAN if vxlan else pb.IPIP if ipip else pb.NO_ENCAP
            cross = "cross-subnet" in (ipip, vxlan)
            entry(net).pools[:] = [(ptype, nat, cross)]

        route_source = (self._cfg("RouteSource") or "CalicoIPAM").lower()
        if route_source == "workloadips":
            for wl in self._workloads.values():
                for addr in wl.addresses:
                    entry(ipaddress.ip_network(_host_cidr(addr))).refs.append((wl.node, _REF_WEP))
        elif route_source == "calicoipam":
            blocks: dict[IPNet, str] = {}
            for n in self._nodes.values():
                block = self._pod_block(n)
                if block is not None:
                    blocks[block] = n.name
                    entry(block).blocks[:] = [n.name]
            for wl in self._workloads.values():
                for addr in wl.addresses:
                    ip = ipaddress.ip_address(addr)
                    owners = [b for b in blocks if b.version == ip.version and ip in b]
                    if owners:
                        block = max(owners, key=lambda b: b.prefixlen)
                        if blocks[block] != wl.node:
                            # A non-affine ("borrowed") allocation: its own /32 block route.
                            entry(ipaddress.ip_network(_host_cidr(addr))).blocks[:] = [wl.node]
            for wl in self._local.values():
                for addr in wl.addresses:
                    entry(ipaddress.ip_network(_host_cidr(addr))).refs.append((wl.node, _REF_WEP))
        else:
            raise ScenarioError(
                f"config.RouteSource: must be WorkloadIPs or CalicoIPAM, got {route_source!r}"
            )

        for name, node_info in self._node_infos.items():
            for host_addr in (node_info.v4_addr, node_info.v6_addr):
                if host_addr is not None:
                    hosts = entry(ipaddress.ip_network(_host_cidr(str(host_addr)))).hosts
                    hosts.append(name)
                    hosts.sort()
        for name, tunnels in self.tunnel_addrs.items():
            for kind, tunnel_ip in tunnels:
                entry(ipaddress.ip_network(tunnel_ip)).refs.append((name, kind))
        for route_info in entries.values():
            route_info.refs.sort()

        routes: dict[str, pb.RouteUpdate] = {}
        for cidr in entries:
            rt = self._resolve_route(cidr, entries)
            if rt.dst not in ("0.0.0.0/32", "::/128"):
                routes[rt.dst] = rt
        return dict(sorted(routes.items()))

    def _resolve_route(self, cidr: IPNet, entries: Mapping[IPNet, _RouteInfo]) -> pb.RouteUpdate:
        """``L3RouteResolver.flush`` for one CIDR: walk the enclosing CIDRs, widest first."""
        path = sorted(
            (net for net in entries if net.version == cidr.version and cidr.subnet_of(net)),  # type: ignore[arg-type]
            key=lambda n: n.prefixlen,
        )
        rt = pb.RouteUpdate(ip_pool_type=pb.NONE, dst=str(cidr))
        types = 0
        cross_subnet = False
        block_seen = False
        block_node = ""
        block_types = 0
        block_matches = False
        has_tunnel_ref = False
        has_host_ref = False
        for net in path:
            info = entries[net]
            if info.pools:
                ptype, nat, cross = info.pools[0]
                if ptype != pb.NONE:
                    rt.ip_pool_type = ptype  # type: ignore[assignment]
                if nat:
                    rt.nat_outgoing = True
                if cross:
                    cross_subnet = True
            if info.blocks:
                if block_seen and block_node != info.blocks[0]:
                    rt.borrowed = True
                else:
                    block_seen = True
                    block_node = info.blocks[0]
                rt.dst_node_name = info.blocks[0]
                if net == cidr:
                    block_matches = True
                block_types |= pb.LOCAL_WORKLOAD if info.blocks[0] == self.node else pb.REMOTE_WORKLOAD
            if info.hosts:
                rt.dst_node_name = info.hosts[0]
                has_host_ref = True
                types |= pb.LOCAL_HOST if info.hosts[0] == self.node else pb.REMOTE_HOST
            if info.refs:
                ref_node, ref_type = info.refs[0]
                rt.dst_node_name = ref_node
                if block_seen and block_node != ref_node:
                    rt.borrowed = True
                if ref_type == _REF_WEP:
                    if ref_node == self.node:
                        rt.local_workload = True
                        types |= pb.LOCAL_WORKLOAD
                    else:
                        types |= pb.REMOTE_WORKLOAD
                else:
                    has_tunnel_ref = True
                    types |= pb.LOCAL_TUNNEL if ref_node == self.node else pb.REMOTE_TUNNEL
                    kinds = {t for n, t in info.refs if n == ref_node}
                    rt.tunnel_type.CopyFrom(
                        pb.TunnelType(
                            ipip=_REF_IPIP in kinds,
                            vxlan=_REF_VXLAN in kinds,
                            wireguard=_REF_WIREGUARD in kinds,
                        )
                    )
        if block_seen and not has_host_ref and (block_matches or not has_tunnel_ref):
            types |= block_types
        rt.types = types  # type: ignore[assignment]
        family = 0
        if rt.dst_node_name and rt.dst_node_name in self._node_infos:
            family = cidr.version
            dst_info = self._node_infos[rt.dst_node_name]
            addr = dst_info.v4_addr if family == 4 else dst_info.v6_addr
            if addr is not None:
                rt.dst_node_ip = str(addr)
        rt.same_subnet = cross_subnet and self._node_in_our_subnet(rt.dst_node_name, family)
        return rt

    def _node_in_our_subnet(self, name: str, family: int) -> bool:
        mine = self._node_infos.get(self.node)
        theirs = self._node_infos.get(name)
        if mine is None or theirs is None:
            return False
        if family == 4:
            return bool(mine.v4_cidr and theirs.v4_addr and theirs.v4_addr in mine.v4_cidr)
        if family == 6:
            return bool(mine.v6_cidr and theirs.v6_addr and theirs.v6_addr in mine.v6_cidr)
        return False


def _raw_config_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _unique(items: Iterable[Any], what: str, key: Callable[[Any], str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        k = key(item)
        if k in out:
            raise ScenarioError(f"{what}[{k}]: defined twice")
        out[k] = item
    return out


def _node_info(node: Node) -> _NodeInfo | None:
    """The L3 route resolver's view of a node's address (BGP address, else InternalIP)."""
    iface = _node_address(node)
    if iface is None:
        return None
    if iface.version == 4:
        return _NodeInfo(iface.ip, iface.network, None, None)
    return _NodeInfo(None, None, iface.ip, iface.network)


def _host_metadata(node: Node) -> pb.HostMetadataUpdate:
    """``DataplanePassthru``: v3.33 HostMetadataUpdate, addresses in CIDR form."""
    iface = _node_address(node)
    v4 = v6 = ""
    if iface is not None:
        text = f"{iface.ip}/{iface.network.prefixlen}"
        if iface.version == 4:
            v4 = text
        else:
            v6 = text
    return pb.HostMetadataUpdate(
        hostname=node.name, ipv4_addr=v4, ipv6_addr=v6, labels=dict(node.labels)
    )


# ---------------------------------------------------------------------------------------------
# Streams.
# ---------------------------------------------------------------------------------------------


def _numbered(msgs: list[pb.ToDataplane], first_seq: int) -> list[pb.ToDataplane]:
    for i, m in enumerate(msgs):
        m.sequence_number = first_seq + i
    return msgs


def _dirty_endpoints(old: FelixCalc, new: FelixCalc) -> set[EndpointKey]:
    """Endpoints Felix's policy resolver would re-send between the two states."""
    dirty: set[EndpointKey] = set()
    for key, wl in new._local.items():
        if old._local.get(key) != wl:
            dirty.add(key)  # new endpoint, or its WorkloadEndpoint changed
        elif old._matches_by_endpoint.get(key) != new._matches_by_endpoint.get(key):
            dirty.add(key)  # a policy started or stopped matching it
    for pk in old.model_policies.keys() & new.model_policies.keys():
        if old.model_policies[pk].metadata() != new.model_policies[pk].metadata():
            dirty |= old.policy_matches.get(pk, frozenset()) | new.policy_matches.get(pk, frozenset())
    if old._tiers != new._tiers:
        dirty |= {k for k, m in old._matches_by_endpoint.items() if m}
        dirty |= {k for k, m in new._matches_by_endpoint.items() if m}
    return {k for k in dirty if k in new.endpoints}


def _flush(old: FelixCalc, new: FelixCalc, *, startup: bool = False) -> list[pb.ToDataplane]:
    """One flush of Felix's ``EventSequencer`` taking the driver from ``old`` to ``new``."""
    out: list[pb.ToDataplane] = []

    # IP sets: new sets in full, then member deltas of existing ones.
    for set_id in sorted(new.ipsets.keys() - old.ipsets.keys()):
        set_type, members = new.ipsets[set_id]
        out.append(_msg(ipset_update=pb.IPSetUpdate(
            id=set_id, members=sorted(members), type=set_type)))  # type: ignore[arg-type]
    for set_id in sorted(new.ipsets.keys() & old.ipsets.keys()):
        before, after = old.ipsets[set_id][1], new.ipsets[set_id][1]
        if before != after:
            out.append(_msg(ipset_delta_update=pb.IPSetDeltaUpdate(
                id=set_id, added_members=sorted(after - before),
                removed_members=sorted(before - after))))

    for pk in sorted(new.policies):
        if pk not in old.policies or old.model_policies[pk] != new.model_policies[pk]:
            out.append(_msg(active_policy_update=pb.ActivePolicyUpdate(
                id=pk.to_proto(), policy=new.policies[pk])))
    for name in sorted(new.profiles):
        if old.active_profile_rules.get(name) != new.active_profile_rules[name]:
            out.append(_msg(active_profile_update=pb.ActiveProfileUpdate(
                id=pb.ProfileID(name=name), profile=new.profiles[name])))
    for key in sorted(_dirty_endpoints(old, new)):
        out.append(_msg(workload_endpoint_update=pb.WorkloadEndpointUpdate(
            id=_wep_id(key), endpoint=new.endpoints[key])))

    # Removals, in reverse dependency order.
    for key in sorted(old.endpoints.keys() - new.endpoints.keys()):
        out.append(_msg(workload_endpoint_remove=pb.WorkloadEndpointRemove(id=_wep_id(key))))
    for name in sorted(old.profiles.keys() - new.profiles.keys()):
        out.append(_msg(active_profile_remove=pb.ActiveProfileRemove(id=pb.ProfileID(name=name))))
    for pk in sorted(old.policies.keys() - new.policies.keys()):
        out.append(_msg(active_policy_remove=pb.ActivePolicyRemove(id=pk.to_proto())))
    for set_id in sorted(old.ipsets.keys() - new.ipsets.keys()):
        out.append(_msg(ipset_remove=pb.IPSetRemove(id=set_id)))

    # Service accounts and namespaces: removes first, then updates.
    for ns, sa in sorted(old.service_accounts.keys() - new.service_accounts.keys()):
        out.append(_msg(service_account_remove=pb.ServiceAccountRemove(
            id=pb.ServiceAccountID(namespace=ns, name=sa))))
    for (ns, sa), labels in sorted(new.service_accounts.items()):
        if old.service_accounts.get((ns, sa)) != labels:
            out.append(_msg(service_account_update=pb.ServiceAccountUpdate(
                id=pb.ServiceAccountID(namespace=ns, name=sa), labels=labels)))
    for name in sorted(old.namespaces.keys() - new.namespaces.keys()):
        out.append(_msg(namespace_remove=pb.NamespaceRemove(id=pb.NamespaceID(name=name))))
    for name, labels in sorted(new.namespaces.items()):
        if old.namespaces.get(name) != labels:
            out.append(_msg(namespace_update=pb.NamespaceUpdate(
                id=pb.NamespaceID(name=name), labels=labels)))

    # Routes: never a route before its VTEP.
    for dst in sorted(old.routes.keys() - new.routes.keys()):
        out.append(_msg(route_remove=pb.RouteRemove(dst=dst)))
    # A changed VTEP is withdrawn before its new form is sent (sendVTEPUpdateOrRemove).
    for node in sorted(old.vteps.keys() - new.vteps.keys()):
        out.append(_msg(vtep_remove=pb.VXLANTunnelEndpointRemove(node=node)))
    for node, vtep in sorted(new.vteps.items()):
        if node in old.vteps and old.vteps[node] != vtep:
            out.append(_msg(vtep_remove=pb.VXLANTunnelEndpointRemove(node=node)))
    for node, vtep in sorted(new.vteps.items()):
        if old.vteps.get(node) != vtep:
            out.append(_msg(vtep_update=vtep))
    for dst, route in new.routes.items():
        if old.routes.get(dst) != route:
            out.append(_msg(route_update=route))

    # Cluster-wide passthrough.
    for name in sorted(old.hosts.keys() - new.hosts.keys()):
        out.append(_msg(host_metadata_remove=pb.HostMetadataRemove(hostname=name)))
    for name, host in new.hosts.items():
        if old.hosts.get(name) != host:
            out.append(_msg(host_metadata_update=host))
    pools_changed = False
    for pool_id in sorted(old.pools.keys() - new.pools.keys()):
        out.append(_msg(ipam_pool_remove=pb.IPAMPoolRemove(id=pool_id)))
        pools_changed = True
    for pool_id, pool in sorted(new.pools.items()):
        if old.pools.get(pool_id) != pool:
            out.append(_msg(ipam_pool_update=pb.IPAMPoolUpdate(id=pool_id, pool=pool)))
            pools_changed = True
    if startup or pools_changed:
        # The encapsulation resolver recalculates after the initial sync and on pool changes.
        out.append(_msg(encapsulation=new.encapsulation))
    return out


def _wep_id(key: EndpointKey) -> pb.WorkloadEndpointID:
    return pb.WorkloadEndpointID(orchestrator_id=key[0], workload_id=key[1], endpoint_id=key[2])


def diff_stream(old: FelixCalc, new: FelixCalc, first_seq: int) -> list[pb.ToDataplane]:
    """The messages Felix sends when the cluster goes from ``old`` to ``new`` (one flush).

    A ``ConfigUpdate`` comes first if the config changed (real Felix would restart for most
    parameters).  Sequence numbers start at ``first_seq``.
    """
    if old.node != new.node:
        raise ValueError(f"diff between different nodes ({old.node!r} -> {new.node!r})")
    msgs: list[pb.ToDataplane] = []
    if old.config != new.config:
        msgs.append(new.config_update())
    msgs += _flush(old, new)
    return _numbered(msgs, first_seq)
