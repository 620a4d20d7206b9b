"""The cluster objects a scenario describes, after loading and before Felix's calculation.

Two producers meet here: the scenario loader (pods, namespaces, nodes, pools,
tiers, Calico policy manifests) and the Kubernetes NetworkPolicy converter
(`k8s.py`), which turns each Kubernetes policy into a `PolicyResource` the way
Calico's own converter does. The Felix calculation (`calc.py`) consumes only
these types, so it treats Kubernetes and Calico policy alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: dict[str, str] = field(default_factory=dict)  # includes kubernetes.io/metadata.name


@dataclass(frozen=True)
class ContainerPort:
    name: str
    port: int
    protocol: str = "TCP"  # TCP, UDP or SCTP


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    ips: tuple[str, ...]  # bare addresses, one per family
    node: str
    labels: dict[str, str] = field(default_factory=dict)
    service_account: str = "default"
    ports: tuple[ContainerPort, ...] = ()
    floating_ips: tuple[str, ...] = ()  # cni.projectcalico.org/floatingIPs, as written


@dataclass(frozen=True)
class Node:
    name: str
    ip: str  # bare IPv4 (or IPv6) address of the node
    pod_cidr: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IPPoolSpec:
    cidr: str
    nat_outgoing: bool = True
    vxlan_mode: str = "Never"  # Never, Always, CrossSubnet
    ipip_mode: str = "Never"


@dataclass(frozen=True)
class Tier:
    name: str
    order: float | None = None  # None = last
    default_action: str = "Deny"  # Deny or Pass


@dataclass(frozen=True)
class PolicyResource:
    """One policy as Felix's calculation graph sees it.

    `felix_kind` is the PolicyID kind Felix sends (KubernetesNetworkPolicy,
    NetworkPolicy, GlobalNetworkPolicy, StagedNetworkPolicy,
    StagedGlobalNetworkPolicy, StagedKubernetesNetworkPolicy); `spec` is a
    projectcalico.org/v3 policy spec as a plain dict (selector, order, tier,
    types, ingress, egress, namespaceSelector, serviceAccountSelector,
    doNotTrack, preDNAT, applyOnForward, ...), with Kubernetes policy already
    converted to that shape.
    """

    felix_kind: str
    name: str
    namespace: str  # "" for global policies
    spec: dict[str, Any]

    @property
    def tier(self) -> str:
        return str(self.spec.get("tier") or "default")

    @property
    def staged(self) -> bool:
        return self.felix_kind.startswith("Staged")


class ScenarioError(ValueError):
    """A scenario (or a manifest in it) cannot be read; the message names the field."""
