"""The node-at-scale profile: one node's Felix startup stream, generated deterministically.

Every benchmark feeds the driver this stream. It is what Felix (Calico v3.33) would send to its
external dataplane driver on a node of a large cluster, from the first ``ConfigUpdate`` to
``InSync``:

- 500 nodes; this node (``node-1``) runs 250 workload endpoints, the 499 others 20,000 pods that
  exist for this node only as IP set members (Felix sends no endpoint message for remote pods);
- 2,000 active policies (about 5 rules each) in 3 tiers, and the profiles of the local namespaces
  and service accounts;
- 2,000 IP sets holding 200,000 members (selector sets of pod addresses and network sets, plus
  named-port sets of type IP_AND_PORT), and one 100,000-member NET set of CIDRs (a threat feed);
- host metadata, a VTEP and routes for every node, the IPAM pools, the encapsulation, and the
  namespace and service account updates.

Messages come in the order of Felix's ``EventSequencer.Flush()`` (``felix/calc/event_sequencer.go``):
config; IP sets; policies; profiles; endpoints; service accounts; namespaces; VTEPs before routes;
host metadata; IPAM pools; encapsulation; then ``InSync``. Within one type the order is shuffled
(Felix iterates Go maps). ``sequence_number`` counts up from 0 (the ``ConfigUpdate``).

Same seed, same bytes: every choice comes from one ``random.Random(seed)`` and every ID from
hashlib, never from Python's randomised ``hash()``.

Usage: ``python benchmarks/profile.py [--seed N] [--small] [--out FILE]`` prints the counts (and
writes the encoded stream). From code: ``generate(seed)``, ``encode_stream(msgs)``,
``profile_summary(msgs)``.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import ipaddress
import json
import random
import struct
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from calico_vpp_driver.felix import felixbackend_pb2 as pb  # noqa: E402

__all__ = [
    "NODE_AT_SCALE",
    "SMALL",
    "Sizes",
    "decode_stream",
    "encode_stream",
    "generate",
    "iter_frames",
    "profile_summary",
]


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big the generated cluster is. ``NODE_AT_SCALE`` is the profile; others are for tests."""

    nodes: int = 500
    local_endpoints: int = 250
    remote_endpoints: int = 20_000
    namespaces: int = 100
    local_namespaces: int = 25
    policies: int = 2_000
    rules_per_policy: int = 5  # mean; each policy gets 3..7
    ip_sets: int = 2_000
    ip_set_members: int = 200_000  # total over the ip_sets above
    named_port_sets: int = 200  # of ip_sets, type IP_AND_PORT
    network_sets: int = 100  # of ip_sets, CIDRs of outside networks
    big_net_set_members: int = 100_000  # the one extra NET set (threat feed)
    pools: int = 2


NODE_AT_SCALE = Sizes()
SMALL = Sizes(
    nodes=12,
    local_endpoints=20,
    remote_endpoints=400,
    namespaces=10,
    local_namespaces=4,
    policies=60,
    ip_sets=50,
    ip_set_members=2_000,
    named_port_sets=6,
    network_sets=4,
    big_net_set_members=1_000,
    pools=2,
)

LOCAL_NODE = "node-1"
POD_POOL = ipaddress.IPv4Network("10.65.0.0/16")
SECOND_POOL = ipaddress.IPv4Network("10.66.0.0/16")
BLOCK_PREFIX = 26
ZONES = (
    ("eu-west-1a", ipaddress.IPv4Network("10.0.0.0/20")),
    ("eu-west-1b", ipaddress.IPv4Network("10.0.16.0/20")),
    ("eu-west-1c", ipaddress.IPv4Network("10.0.32.0/20")),
)
TIERS = (("security", "Deny"), ("platform", "Pass"), ("default", "Deny"))

_TEAMS = tuple(
    "payments checkout catalog search accounts billing shipping orders inventory reviews ads "
    "analytics auth notifications media pricing loyalty fraud support reporting messaging gateway "
    "profile ledger".split()
)
_ENVS = ("prod", "staging", "dev", "qa")
_SYSTEM_NAMESPACES = ("default", "kube-system", "monitoring", "ingress-nginx", "cert-manager")
_APPS = tuple(
    "api web worker frontend backend db cache queue scheduler proxy redis postgres kafka consumer "
    "producer exporter cron grpc admin indexer ingest router auth batch stream".split()
)
_NAMED_PORTS = (
    ("http", "tcp", 8080),
    ("https", "tcp", 8443),
    ("metrics", "tcp", 9090),
    ("grpc", "tcp", 50051),
    ("postgres", "tcp", 5432),
    ("redis", "tcp", 6379),
    ("dns", "udp", 53),
    ("kafka", "tcp", 9092),
    ("admin", "tcp", 9000),
    ("sctp-sig", "sctp", 3868),
)
_PORTS = (80, 443, 8080, 8443, 9090, 5432, 6379, 3306, 9092, 27017, 11211, 2379, 50051)
_OUTSIDE_NETS = tuple(
    "192.168.0.0/16 172.16.0.0/12 100.64.0.0/10 203.0.113.0/24 198.51.100.0/24 10.0.0.0/8 "
    "169.254.169.254/32 52.94.0.0/22 35.190.0.0/17".split()
)
_B36 = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' pod-name suffix alphabet


# --------------------------------------------------------------------------------------------
# Small helpers


def _unique_id(prefix: str, content: str) -> str:
    """Felix's hash.MakeUniqueID: prefix, ':', 27 chars of base64url(SHA-224(content))."""
    digest = hashlib.sha224(content.encode()).digest()
    return prefix + ":" + base64.urlsafe_b64encode(digest).decode()[:27]


def _rule_id(seed: str) -> str:
    """A rule ID shaped like Felix's (16 chars of base64url of a hash)."""
    digest = hashlib.sha224(seed.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:16]


def _ip(n: int) -> str:
    return f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def _mac(rng: random.Random, first: int) -> str:
    return ":".join(f"{b:02x}" for b in [first, *(rng.randrange(256) for _ in range(5))])


@dataclasses.dataclass
class _Node:
    name: str
    ip: int
    zone: str
    prefixlen: int
    blocks: list[int] = dataclasses.field(default_factory=list)  # /26 network addresses
    vtep_mac: str = ""
    next_offset: int = 1  # offset 0 of the first block is the VXLAN tunnel address


@dataclasses.dataclass
class _Pod:
    ns: str
    name: str
    app: str
    sa: str
    node: int
    ip: int


@dataclasses.dataclass
class _IPSet:
    id: str
    type: Any  # pb.IPSetUpdate.IPSetType
    selector: str
    members: list[str]


@dataclasses.dataclass
class _Pol:
    name: str
    namespace: str
    kind: str
    tier: str
    order: int
    selector: str
    inbound: list[Any]
    outbound: list[Any]
    endpoints: list[int]


def _seq(msgs: list[pb.ToDataplane]) -> list[pb.ToDataplane]:
    for i, m in enumerate(msgs):
        m.sequence_number = i
    return msgs


# --------------------------------------------------------------------------------------------
# The generator


class _Gen:
    def __init__(self, seed: int, sizes: Sizes) -> None:
        self.rng = random.Random(seed)
        self.sizes = sizes
        self.nodes: list[_Node] = []
        self.namespaces: list[str] = []
        self.ns_labels: dict[str, dict[str, str]] = {}
        self.ns_apps: dict[str, list[str]] = {}
        self.ns_sas: dict[str, list[str]] = {}
        self.pods: list[_Pod] = []  # local pods first
        self.pods_by_ns: dict[str, list[int]] = {}
        self.local_namespaces: list[str] = []
        self.sets: list[_IPSet] = []
        self.big_set: _IPSet | None = None
        self.policies: list[_Pol] = []
        self._unref_net: list[int] = []
        self._unref_np: list[int] = []
        self._net_sets: list[int] = []
        self._np_sets: list[int] = []
        self._pod_member_set: frozenset[str] = frozenset()

    # -- cluster ------------------------------------------------------------------------------

    def make_cluster(self) -> None:
        rng, sz = self.rng, self.sizes
        names: list[str] = list(_SYSTEM_NAMESPACES)
        combos = [f"{t}-{e}" for t in _TEAMS for e in _ENVS]
        rng.shuffle(combos)
        names += combos
        i = 0
        while len(names) < sz.namespaces:
            names.append(f"tenant-{i:04d}")
            i += 1
        self.namespaces = names[: sz.namespaces]
        for ns in self.namespaces:
            team, _, env = ns.partition("-")
            labels = {"kubernetes.io/metadata.name": ns}
            if ns not in _SYSTEM_NAMESPACES:
                labels |= {"team": team, "environment": env or "prod"}
            if rng.random() < 0.3:
                labels["istio-injection"] = "enabled"
            self.ns_labels[ns] = labels
            apps = rng.sample(_APPS, rng.randint(2, 8))
            self.ns_apps[ns] = apps
            self.ns_sas[ns] = ["default"] + [a for a in apps if rng.random() < 0.5]

        # Nodes: node-1 is this node. Node IPs are spread over three zones (subnets).
        per_zone = [0, 0, 0]
        for n in range(sz.nodes):
            z = n % len(ZONES)
            zone, subnet = ZONES[z]
            per_zone[z] += 1
            ip = int(subnet.network_address) + 9 + per_zone[z]
            node = _Node(f"node-{n + 1}", ip, zone, subnet.prefixlen)
            node.vtep_mac = _mac(rng, 0x66)
            self.nodes.append(node)

        # Pods: the local ones in a few namespaces, the remote ones over every namespace and
        # node with a skewed spread (a few busy namespaces, many quiet ones).
        self.local_namespaces = rng.sample(self.namespaces, sz.local_namespaces)
        ns_weights = [rng.paretovariate(1.3) for _ in self.namespaces]
        local_ns_weights = [rng.paretovariate(2.0) for _ in self.local_namespaces]
        block_size = 1 << (32 - BLOCK_PREFIX)
        next_block = [int(POD_POOL.network_address)]

        def alloc(node_idx: int) -> int:
            node = self.nodes[node_idx]
            if not node.blocks or node.next_offset >= block_size:
                if next_block[0] >= int(POD_POOL.broadcast_address):
                    raise ValueError("pod pool exhausted: too many pods for 10.65.0.0/16")
                node.blocks.append(next_block[0])
                next_block[0] += block_size
                node.next_offset = 0 if len(node.blocks) > 1 else 1
            ip = node.blocks[-1] + node.next_offset
            node.next_offset += 1
            return ip

        local_ns = rng.choices(self.local_namespaces, local_ns_weights, k=sz.local_endpoints)
        remote_ns = rng.choices(self.namespaces, ns_weights, k=sz.remote_endpoints)
        remote_nodes = [rng.randrange(1, sz.nodes) for _ in range(sz.remote_endpoints)]
        # Allocate the local node's blocks first, then the others node by node, like IPAM.
        pod_specs = [(ns, 0) for ns in local_ns] + sorted(
            zip(remote_ns, remote_nodes, strict=True), key=lambda t: t[1]
        )
        for ns, node_idx in pod_specs:
            app = rng.choice(self.ns_apps[ns])
            sa = app if app in self.ns_sas[ns] else "default"
            suffix = "".join(rng.choice(_B36) for _ in range(5))
            name = f"{app}-{rng.getrandbits(40):010x}-{suffix}"
            self.pods.append(_Pod(ns, name, app, sa, node_idx, alloc(node_idx)))
        for node in self.nodes:  # every node has a block, for its tunnel address at least
            if not node.blocks:
                node.blocks.append(next_block[0])
                next_block[0] += block_size
        for i, p in enumerate(self.pods):
            self.pods_by_ns.setdefault(p.ns, []).append(i)

    # -- IP sets ------------------------------------------------------------------------------

    def _sizes_summing_to(self, count: int, total: int, cap: int) -> list[int]:
        rng = self.rng
        if count == 0:
            return []
        if total < count:
            raise ValueError("fewer members than IP sets")
        weights = [rng.paretovariate(1.1) for _ in range(count)]
        scale = (total - count) / sum(weights)
        out = [min(cap, 1 + int(w * scale)) for w in weights]
        diff = total - sum(out)
        i = 0
        while diff != 0:  # spread the rounding (and the capped excess) over the sets
            j = i % count
            if diff > 0 and out[j] < cap:
                add = min(diff, cap - out[j], max(1, diff // count))
                out[j] += add
                diff -= add
            elif diff < 0 and out[j] > 1:
                out[j] -= 1
                diff += 1
            i += 1
        return out

    def make_ip_sets(self) -> None:
        rng, sz = self.rng, self.sizes
        n_pods = len(self.pods)
        kinds = (
            ["np"] * sz.named_port_sets
            + ["netset"] * sz.network_sets
            + ["pods"] * (sz.ip_sets - sz.named_port_sets - sz.network_sets)
        )
        rng.shuffle(kinds)
        netset_cap = 4_000
        sizes = self._sizes_summing_to(len(kinds), sz.ip_set_members, n_pods)
        # Network sets cannot be huge in practice; trade members with pod sets to keep the total.
        for i, k in enumerate(kinds):
            if k == "netset" and sizes[i] > netset_cap:
                extra = sizes[i] - netset_cap
                sizes[i] = netset_cap
                for j, k2 in enumerate(kinds):
                    if k2 != "netset" and extra:
                        add = min(extra, n_pods - sizes[j])
                        sizes[j] += add
                        extra -= add
        seen_selectors: dict[str, None] = {}
        pod_members = [f"{_ip(p.ip)}/32" for p in self.pods]
        self._pod_member_set = frozenset(pod_members)
        for i, (kind, size) in enumerate(zip(kinds, sizes, strict=True)):
            ns = rng.choice(self.namespaces)
            app = rng.choice(self.ns_apps[ns])
            if kind == "netset":
                sel = f"projectcalico.org/name == 'netset-{ns}-{i}' || role == 'external-{app}'"
            elif rng.random() < 0.5 and size <= len(self.pods_by_ns.get(ns, [])):
                sel = f"projectcalico.org/namespace == '{ns}' && app == '{app}'"
            else:
                key, val = rng.choice(
                    [
                        ("app", app),
                        ("team", ns.split("-")[0]),
                        ("tier", "backend"),
                        ("role", app),
                        ("environment", "prod"),
                    ]
                )
                sel = f"{key} == '{val}'"
                if rng.random() < 0.4:
                    sel = f"({sel}) && has(projectcalico.org/namespace)"
            if sel in seen_selectors:
                sel = f"{sel} && !has(exclude-{i})"
            seen_selectors[sel] = None

            # Pod-address members: mostly from one namespace when it is big enough.
            ns_pods = self.pods_by_ns.get(ns, [])
            if size <= len(ns_pods) and rng.random() < 0.7:
                idx = rng.sample(ns_pods, size)
            else:
                idx = rng.sample(range(n_pods), size)
            if kind == "np":
                port_name, proto, port = rng.choice(_NAMED_PORTS)
                sid = _unique_id("n", f"{_unique_id('s', sel)},{proto},{port_name}")
                members = [f"{_ip(self.pods[j].ip)},{proto}:{port}" for j in idx]
                s = _IPSet(sid, pb.IPSetUpdate.IP_AND_PORT, sel, members)
                self._np_sets.append(len(self.sets))
            elif kind == "netset":
                s = _IPSet(_unique_id("s", sel), pb.IPSetUpdate.NET, sel, self._cidrs(size))
                self._net_sets.append(len(self.sets))
            else:
                s = _IPSet(_unique_id("s", sel), pb.IPSetUpdate.NET, sel, [pod_members[j] for j in idx])
                self._net_sets.append(len(self.sets))
            self.sets.append(s)

        self._cover_every_pod(pod_members)

        sel = "threatfeed.projectcalico.org/name == 'blocklist'"
        self.big_set = _IPSet(
            _unique_id("s", sel), pb.IPSetUpdate.NET, sel, self._cidrs(sz.big_net_set_members)
        )
        self._unref_net = list(self._net_sets)
        self._unref_np = list(self._np_sets)
        rng.shuffle(self._unref_net)
        rng.shuffle(self._unref_np)

    def _cover_every_pod(self, pod_members: list[str]) -> None:
        """Make every pod a member of some selector set (a remote pod Felix tells this node
        about exists only as IP set members), keeping every set's size."""
        count: Counter[str] = Counter()
        pod_sets = [
            s
            for s in self.sets
            if s.type == pb.IPSetUpdate.NET and s.members and s.members[0] in self._pod_member_set
        ]
        for s in pod_sets:
            count.update(s.members)
        missing = [m for m in pod_members if m not in count]
        for s in sorted(pod_sets, key=lambda s: -len(s.members)):
            if not missing:
                break
            for k, mem in enumerate(s.members):
                if not missing:
                    break
                if count[mem] > 1:
                    count[mem] -= 1
                    s.members[k] = missing.pop()

    def _cidrs(self, count: int) -> list[str]:
        """``count`` distinct outside CIDRs (mostly /32 and /24), in random order."""
        rng = self.rng
        seen: dict[tuple[int, int], None] = {}
        out: list[str] = []
        while len(out) < count:
            r = rng.random()
            plen = 32 if r < 0.6 else 24 if r < 0.85 else rng.randint(16, 23)
            addr = rng.getrandbits(32)
            first = addr >> 24
            if first in (0, 10, 100, 127, 169, 172, 192) or first >= 224:
                continue
            addr &= (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
            if (addr, plen) in seen:
                continue
            seen[(addr, plen)] = None
            out.append(f"{_ip(addr)}/{plen}")
        return out

    def _pick(self, named_port: bool) -> _IPSet:
        """An IP set for a rule to reference: unreferenced ones first, so that every set is used."""
        queue = self._unref_np if named_port else self._unref_net
        pool = self._np_sets if named_port else self._net_sets
        i = queue.pop() if queue else self.rng.choice(pool)
        return self.sets[i]

    # -- rules and policies ---------------------------------------------------------------------

    def _rule(self, inbound: bool, tier: str, k8s: bool, seed: str) -> pb.Rule:
        rng = self.rng
        r = pb.Rule(action="allow")
        peer_ids = r.src_ip_set_ids if inbound else r.dst_ip_set_ids
        peer_nets = r.src_net if inbound else r.dst_net
        # Kubernetes NetworkPolicy has no ICMP, negation, deny or log: only the first kinds.
        choice = rng.random() * (0.78 if k8s else 1.0)
        if choice < 0.40:  # from/to pods selected by labels, on a port
            s = self._pick(False)
            peer_ids.append(s.id)
            if inbound:
                r.original_src_selector = s.selector
            else:
                r.original_dst_selector = s.selector
            if rng.random() < 0.15:  # namespaceSelector and selector: two sets, AND-ed
                s2 = self._pick(False)
                peer_ids.append(s2.id)
            if rng.random() < 0.8:
                r.protocol.name = rng.choice(("tcp", "tcp", "tcp", "udp"))
                r.dst_ports.add(first=(p := rng.choice(_PORTS)), last=p)
                if rng.random() < 0.2:
                    r.dst_ports.add(first=(p := rng.choice(_PORTS)), last=p)
        elif choice < 0.52:  # named port of the destination pods
            s = self._pick(True)
            r.protocol.name = (
                "udp" if ",udp:" in s.members[0] else ("sctp" if ",sctp:" in s.members[0] else "tcp")
            )
            r.dst_named_port_ip_set_ids.append(s.id)
            if rng.random() < 0.5:
                src = self._pick(False)
                r.src_ip_set_ids.append(src.id)
                r.original_src_selector = src.selector
        elif choice < 0.64:  # ipBlock with except
            r.ip_version = pb.IPV4
            peer_nets.append(rng.choice(_OUTSIDE_NETS))
            if rng.random() < 0.4:
                (r.not_src_net if inbound else r.not_dst_net).append(
                    f"{rng.choice(('192.168', '172.16', '10.0'))}.{rng.randrange(256)}.0/24"
                )
            if rng.random() < 0.6:
                r.protocol.name = "tcp"
                r.dst_ports.add(first=(p := rng.choice(_PORTS)), last=p)
        elif choice < 0.72:  # DNS
            r.protocol.name = "udp"
            r.dst_ports.add(first=53, last=53)
            if not inbound:
                s = self._pick(False)
                r.dst_ip_set_ids.append(s.id)
                r.original_dst_selector = s.selector
        elif choice < 0.78:  # port range (node ports, ephemeral)
            r.protocol.number = rng.choice((6, 17))
            lo = rng.choice((30000, 8000, 1024))
            r.dst_ports.add(first=lo, last=lo + rng.choice((99, 999, 2767)))
        elif choice < 0.83:  # ICMP echo
            r.protocol.name = "icmp"
            if rng.random() < 0.5:
                r.icmp_type = 8
            else:
                r.icmp_type_code.type = 3
                r.icmp_type_code.code = 4
        elif choice < 0.88:  # negated match
            r.protocol.name = "tcp"
            s = self._pick(False)
            if inbound:
                r.not_src_ip_set_ids.append(s.id)
                r.original_not_src_selector = s.selector
            else:
                r.not_dst_ip_set_ids.append(s.id)
                r.original_not_dst_selector = s.selector
            r.not_dst_ports.add(first=22, last=22)
        elif choice < 0.95:  # deny an outside range (Calico policies only)
            r.action = "deny"
            peer_nets.append(rng.choice(_OUTSIDE_NETS))
            if rng.random() < 0.3:
                r.not_protocol.name = "icmp"
        else:  # allow from everything in a namespace
            s = self._pick(False)
            peer_ids.append(s.id)
            r.original_src_namespace_selector = (
                f"kubernetes.io/metadata.name == '{self.rng.choice(self.namespaces)}'"
            )
        if k8s and r.action == "deny":
            r.action = "allow"  # Kubernetes NetworkPolicy only allows
        if not k8s and rng.random() < 0.02:
            r.action = "log"
        if not k8s and rng.random() < 0.05:
            r.metadata.annotations["owner"] = rng.choice(_TEAMS)
        r.rule_id = _rule_id(seed)
        return r

    def make_policies(self) -> None:
        rng, sz = self.rng, self.sizes
        n_local = sz.local_endpoints
        local_by_ns: dict[str, list[int]] = {}
        for i in range(n_local):
            local_by_ns.setdefault(self.pods[i].ns, []).append(i)
        local_ns = sorted(local_by_ns)
        n_sec = max(1, sz.policies // 20)
        n_plat = max(1, sz.policies * 3 // 20)
        n_def = sz.policies - n_sec - n_plat
        plan: list[tuple[str, str]] = []
        plan += [("security", "GlobalNetworkPolicy")] * n_sec
        plan += [("platform", rng.choice(("GlobalNetworkPolicy", "NetworkPolicy"))) for _ in range(n_plat)]
        plan += [
            ("default", "KubernetesNetworkPolicy" if rng.random() < 0.6 else "NetworkPolicy")
            for _ in range(n_def)
        ]
        used_names: dict[tuple[str, str, str], None] = {}
        for idx, (tier, kind) in enumerate(plan):
            if kind == "GlobalNetworkPolicy":
                ns = ""
                frac = rng.uniform(0.3, 1.0) if tier == "security" else rng.uniform(0.05, 0.6)
                eps = sorted(rng.sample(range(n_local), max(1, int(n_local * frac))))
                selector = rng.choice(
                    (
                        "all()",
                        "has(projectcalico.org/namespace)",
                        f"team == '{rng.choice(_TEAMS)}'",
                        "projectcalico.org/orchestrator == 'k8s'",
                    )
                )
            else:
                ns = rng.choice(local_ns)
                cand = local_by_ns[ns]
                app = rng.choice(self.ns_apps[ns])
                matching = [e for e in cand if self.pods[e].app == app]
                if not matching or rng.random() < 0.2:
                    matching, app = cand, ""
                eps = matching
                selector = f"projectcalico.org/namespace == '{ns}'" + (f" && app == '{app}'" if app else "")
            stem = {
                "security": ("block", "quarantine", "baseline", "compliance", "egress-guard"),
                "platform": ("allow-monitoring", "allow-dns", "allow-ingress", "mesh", "logging"),
                "default": ("allow", "deny", "default-deny", "allow-from", "restrict"),
            }[tier]
            name = f"{rng.choice(stem)}-{rng.choice(_APPS)}-{idx:04d}"
            used_names[(name, ns, kind)] = None
            r = rng.random()
            types = "both" if r < 0.3 else "in" if r < 0.8 else "out"
            n_rules = rng.randint(max(1, sz.rules_per_policy - 2), sz.rules_per_policy + 2)
            n_in = n_rules if types == "in" else 0 if types == "out" else max(1, n_rules // 2)
            n_out = n_rules - n_in
            k8s = kind == "KubernetesNetworkPolicy"
            key = f"{kind}/{ns}/{name}"
            inbound = [self._rule(True, tier, k8s, f"{key}/in/{j}") for j in range(n_in)]
            outbound = [self._rule(False, tier, k8s, f"{key}/out/{j}") for j in range(n_out)]
            if tier == "security":  # hand over to the next tier at the end
                if inbound:
                    inbound.append(pb.Rule(action="next-tier", rule_id=_rule_id(f"{key}/in/pass")))
                if outbound:
                    outbound.append(pb.Rule(action="next-tier", rule_id=_rule_id(f"{key}/out/pass")))
            self.policies.append(_Pol(name, ns, kind, tier, idx, selector, inbound, outbound, eps))
        # The threat feed: first policy of the security tier, both directions, every endpoint.
        assert self.big_set is not None
        sec = self.policies[0]
        sec.name = "block-threat-feed"
        sec.endpoints = list(range(n_local))
        sec.selector = "all()"
        big = self.big_set
        sec.inbound.insert(
            0,
            pb.Rule(
                action="deny",
                src_ip_set_ids=[big.id],
                original_src_selector=big.selector,
                rule_id=_rule_id("threat/in"),
            ),
        )
        sec.outbound.insert(
            0,
            pb.Rule(
                action="deny",
                dst_ip_set_ids=[big.id],
                original_dst_selector=big.selector,
                rule_id=_rule_id("threat/out"),
            ),
        )
        if len(sec.inbound) == 1:
            sec.inbound.append(pb.Rule(action="next-tier", rule_id=_rule_id("threat/in/pass")))
        if len(sec.outbound) == 1:
            sec.outbound.append(pb.Rule(action="next-tier", rule_id=_rule_id("threat/out/pass")))
        # Any set not referenced yet gets a rule of its own in a random policy.
        while self._unref_net or self._unref_np:
            pol = rng.choice(self.policies[1:] or self.policies)
            if self._unref_np:
                s = self._pick(True)
                rule = pb.Rule(
                    action="allow", protocol=pb.Protocol(name="tcp"), dst_named_port_ip_set_ids=[s.id]
                )
            else:
                s = self._pick(False)
                rule = pb.Rule(action="allow", src_ip_set_ids=[s.id], original_src_selector=s.selector)
            n = len(pol.inbound)
            rule.rule_id = _rule_id(f"{pol.kind}/{pol.namespace}/{pol.name}/in/{n}")
            if pol.tier == "security" and pol.inbound:
                pol.inbound.insert(len(pol.inbound) - 1, rule)
            else:
                pol.inbound.append(rule)

    # -- messages -----------------------------------------------------------------------------

    def messages(self) -> list[pb.ToDataplane]:
        rng, sz = self.rng, self.sizes
        local = self.nodes[0]
        out: list[pb.ToDataplane] = []

        # ConfigUpdate (seq 0): explicitly set parameters only, raw strings.
        env = {
            "FelixHostname": LOCAL_NODE,
            "DatastoreType": "kubernetes",
            "UseInternalDataplaneDriver": "false",
            "DataplaneDriver": "/usr/local/bin/calico-vpp-driver",
            "DefaultEndpointToHostAction": "Accept",
            "IPv6Support": "false",
            "ReportingIntervalSecs": "0",
            "LogSeverityScreen": "info",
            "HealthEnabled": "true",
            "LogFilePath": "None",
            "MetadataAddr": "None",
            "ClusterType": "k8s,bgp,kubeadm,kdd",
        }
        glob = {
            "CalicoVersion": "v3.33.0",
            "ClusterGUID": f"{rng.getrandbits(128):032x}",
            "ClusterType": "k8s,bgp,kubeadm,kdd",
            "VXLANVNI": "4096",
            "BPFLogLevel": "",
            "LogSeverityScreen": "Info",
        }
        cu = pb.ConfigUpdate(message="Initial config")
        cu.config.update(glob | env)
        cu.source_to_raw_config[1].source = "datastore (global)"
        cu.source_to_raw_config[1].config.update(glob)
        cu.source_to_raw_config[4].source = "environment variable"
        cu.source_to_raw_config[4].config.update(env)
        out.append(pb.ToDataplane(config_update=cu))

        # IP sets.
        assert self.big_set is not None
        ipsets = [*self.sets, self.big_set]
        rng.shuffle(ipsets)
        for s in ipsets:
            out.append(pb.ToDataplane(ipset_update=pb.IPSetUpdate(id=s.id, members=s.members, type=s.type)))

        # Policies.
        pols = list(self.policies)
        rng.shuffle(pols)
        for q in pols:
            out.append(
                pb.ToDataplane(
                    active_policy_update=pb.ActivePolicyUpdate(
                        id=pb.PolicyID(name=q.name, namespace=q.namespace, kind=q.kind),
                        policy=pb.Policy(
                            namespace=q.namespace,
                            inbound_rules=q.inbound,
                            outbound_rules=q.outbound,
                            original_selector=q.selector,
                            tier=q.tier,
                        ),
                    )
                )
            )

        # Profiles of the local namespaces and service accounts.
        local_pods = self.pods[: sz.local_endpoints]
        prof_names: dict[str, None] = {}
        for p in local_pods:
            prof_names[f"kns.{p.ns}"] = None
            prof_names[f"ksa.{p.ns}.{p.sa}"] = None
        profs = list(prof_names)
        rng.shuffle(profs)
        for name in profs:
            prof = pb.Profile()
            if name.startswith("kns."):
                prof.inbound_rules.add(action="allow", rule_id=_rule_id(f"prof-in-{name}"))
                prof.outbound_rules.add(action="allow", rule_id=_rule_id(f"prof-out-{name}"))
            out.append(
                pb.ToDataplane(
                    active_profile_update=pb.ActiveProfileUpdate(id=pb.ProfileID(name=name), profile=prof)
                )
            )

        # Workload endpoints, with their tiers (policies ordered by tier, then policy order).
        ep_pols: list[list[_Pol]] = [[] for _ in local_pods]
        for pol in self.policies:
            for e in pol.endpoints:
                ep_pols[e].append(pol)
        eps = list(range(len(local_pods)))
        rng.shuffle(eps)
        for e in eps:
            p = local_pods[e]
            wep = pb.WorkloadEndpoint(
                state="active",
                name="cali" + hashlib.sha1(f"{p.ns}.{p.name}".encode()).hexdigest()[:11],
                mac=_mac(rng, 0x0A),
                profile_ids=[f"kns.{p.ns}", f"ksa.{p.ns}.{p.sa}"],
                ipv4_nets=[f"{_ip(p.ip)}/32"],
            )
            for tier, default_action in TIERS:
                in_tier = [q for q in ep_pols[e] if q.tier == tier]
                if not in_tier:
                    continue
                ti = wep.tiers.add(name=tier, default_action=default_action)
                for q in in_tier:
                    pol_id = pb.PolicyID(name=q.name, namespace=q.namespace, kind=q.kind)
                    if q.inbound:
                        ti.ingress_policies.append(pol_id)
                    if q.outbound:
                        ti.egress_policies.append(pol_id)
            out.append(
                pb.ToDataplane(
                    workload_endpoint_update=pb.WorkloadEndpointUpdate(
                        id=pb.WorkloadEndpointID(
                            orchestrator_id="k8s", workload_id=f"{p.ns}/{p.name}", endpoint_id="eth0"
                        ),
                        endpoint=wep,
                    )
                )
            )

        # Service accounts and namespaces (every one in the cluster).
        sas = [(ns, sa) for ns in self.namespaces for sa in self.ns_sas[ns]]
        rng.shuffle(sas)
        for ns, sa in sas:
            upd = pb.ServiceAccountUpdate(id=pb.ServiceAccountID(namespace=ns, name=sa))
            if sa != "default":
                upd.labels["app.kubernetes.io/name"] = sa
            out.append(pb.ToDataplane(service_account_update=upd))
        nss = list(self.namespaces)
        rng.shuffle(nss)
        for ns in nss:
            out.append(
                pb.ToDataplane(
                    namespace_update=pb.NamespaceUpdate(id=pb.NamespaceID(name=ns), labels=self.ns_labels[ns])
                )
            )

        # VTEPs (one per node, this one included), then routes.
        nodes = list(self.nodes)
        rng.shuffle(nodes)
        for n in nodes:
            out.append(
                pb.ToDataplane(
                    vtep_update=pb.VXLANTunnelEndpointUpdate(
                        node=n.name, mac=n.vtep_mac, ipv4_addr=_ip(n.blocks[0]), parent_device_ip=_ip(n.ip)
                    )
                )
            )
        routes: list[pb.RouteUpdate] = []
        for pool in self._pools():
            routes.append(
                pb.RouteUpdate(
                    types=pb.CIDR_INFO, ip_pool_type=pb.VXLAN, dst=pool.cidr, nat_outgoing=pool.masquerade
                )
            )
        for n in self.nodes:
            is_local = n is local
            same = n.zone == local.zone
            host_type = pb.LOCAL_HOST if is_local else pb.REMOTE_HOST
            routes.append(
                pb.RouteUpdate(
                    types=host_type,
                    ip_pool_type=pb.NONE,
                    dst=f"{_ip(n.ip)}/32",
                    dst_node_name=n.name,
                    dst_node_ip=_ip(n.ip),
                    same_subnet=same,
                )
            )
            for b in n.blocks:
                rt = pb.RouteUpdate(
                    types=pb.LOCAL_WORKLOAD if is_local else pb.REMOTE_WORKLOAD,
                    ip_pool_type=pb.VXLAN,
                    dst=f"{_ip(b)}/{BLOCK_PREFIX}",
                    dst_node_name=n.name,
                    dst_node_ip=_ip(n.ip),
                    same_subnet=same,
                    nat_outgoing=True,
                )
                rt.tunnel_type.vxlan = True
                routes.append(rt)
            # The tunnel address: a bitmask of two route types (an open enum on the wire).
            tunnel_types: Any = (pb.LOCAL_TUNNEL if is_local else pb.REMOTE_TUNNEL) | (
                pb.LOCAL_WORKLOAD if is_local else pb.REMOTE_WORKLOAD
            )
            routes.append(
                pb.RouteUpdate(
                    types=tunnel_types,
                    ip_pool_type=pb.VXLAN,
                    dst=f"{_ip(n.blocks[0])}/32",
                    dst_node_name=n.name,
                    dst_node_ip=_ip(n.ip),
                    same_subnet=same,
                    nat_outgoing=True,
                    tunnel_type=pb.TunnelType(vxlan=True),
                )
            )
        for p in local_pods:
            routes.append(
                pb.RouteUpdate(
                    types=pb.LOCAL_WORKLOAD,
                    ip_pool_type=pb.VXLAN,
                    dst=f"{_ip(p.ip)}/32",
                    dst_node_name=LOCAL_NODE,
                    dst_node_ip=_ip(local.ip),
                    local_workload=True,
                    nat_outgoing=True,
                    same_subnet=True,
                )
            )
        rng.shuffle(routes)
        out += [pb.ToDataplane(route_update=r) for r in routes]

        # Host metadata (v3.33 shape: CIDR-form address, AS number, labels).
        for n in nodes:
            hm = pb.HostMetadataUpdate(hostname=n.name, ipv4_addr=f"{_ip(n.ip)}/{n.prefixlen}")
            hm.labels.update(
                {
                    "kubernetes.io/hostname": n.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "topology.kubernetes.io/zone": n.zone,
                    "node.kubernetes.io/instance-type": "m6i.4xlarge",
                }
            )
            out.append(pb.ToDataplane(host_metadata_update=hm))

        # IPAM pools, encapsulation, and InSync.
        for pool in self._pools():
            pid = pool.cidr.replace("/", "-")
            out.append(pb.ToDataplane(ipam_pool_update=pb.IPAMPoolUpdate(id=pid, pool=pool)))
        out.append(pb.ToDataplane(encapsulation=pb.Encapsulation(vxlan_enabled=True)))
        out.append(pb.ToDataplane(in_sync=pb.InSync()))
        return _seq(out)

    def _pools(self) -> list[pb.IPAMPool]:
        pools = [
            pb.IPAMPool(
                cidr=str(POD_POOL), masquerade=True, vxlan_mode="always", allowed_uses=["Workload", "Tunnel"]
            )
        ]
        if self.sizes.pools > 1:
            pools.append(
                pb.IPAMPool(
                    cidr=str(SECOND_POOL),
                    masquerade=True,
                    vxlan_mode="cross-subnet",
                    allowed_uses=["Workload"],
                )
            )
        return pools


# --------------------------------------------------------------------------------------------
# Public API


def generate(seed: int = 0, sizes: Sizes = NODE_AT_SCALE) -> list[pb.ToDataplane]:
    """The profile as Felix's startup stream: ConfigUpdate (seq 0) ... InSync."""
    g = _Gen(seed, sizes)
    g.make_cluster()
    g.make_ip_sets()
    g.make_policies()
    return g.messages()


def iter_frames(msgs: Iterable[pb.ToDataplane]) -> Iterator[bytes]:
    """Each message as one frame: 8-byte little-endian length, then the serialized envelope."""
    pack = struct.Struct("<Q").pack
    for m in msgs:
        body = m.SerializeToString(deterministic=True)  # map fields in key order
        yield pack(len(body)) + body


def encode_stream(msgs: Iterable[pb.ToDataplane]) -> bytes:
    """The whole stream as Felix writes it to the driver's fd 3."""
    return b"".join(iter_frames(msgs))


def decode_stream(data: bytes | memoryview) -> list[pb.ToDataplane]:
    """Inverse of ``encode_stream``; raises ValueError on a truncated frame."""
    view = memoryview(data)
    out: list[pb.ToDataplane] = []
    pos = 0
    while pos < len(view):
        if pos + 8 > len(view):
            raise ValueError(f"truncated length at offset {pos}")
        (n,) = struct.unpack_from("<Q", view, pos)
        pos += 8
        if pos + n > len(view):
            raise ValueError(f"truncated frame at offset {pos - 8}")
        m = pb.ToDataplane()
        m.ParseFromString(view[pos : pos + n].tobytes())
        out.append(m)
        pos += n
    return out


def profile_summary(msgs: Sequence[pb.ToDataplane]) -> dict[str, Any]:
    """Counts of what the stream holds (all derived from the messages themselves)."""
    by_payload: Counter[str] = Counter()
    members_by_type: Counter[str] = Counter()
    set_types: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    tiers: Counter[str] = Counter()
    rules = 0
    largest = 0
    pod_ips: dict[str, None] = {}
    local_ips: dict[str, None] = {}
    hosts: dict[str, None] = {}
    for m in msgs:
        which = m.WhichOneof("payload") or "<unknown>"
        by_payload[which] += 1
        if which == "ipset_update":
            u = m.ipset_update
            tname = pb.IPSetUpdate.IPSetType.Name(u.type)
            set_types[tname] += 1
            members_by_type[tname] += len(u.members)
            largest = max(largest, len(u.members))
            for mem in u.members:
                if mem.startswith("10.65."):
                    pod_ips[mem.split(",", 1)[0].split("/", 1)[0]] = None
        elif which == "active_policy_update":
            p = m.active_policy_update
            kinds[p.id.kind] += 1
            tiers[p.policy.tier] += 1
            rules += len(p.policy.inbound_rules) + len(p.policy.outbound_rules)
        elif which == "workload_endpoint_update":
            for net in m.workload_endpoint_update.endpoint.ipv4_nets:
                local_ips[net.split("/", 1)[0]] = None
        elif which == "host_metadata_update":
            hosts[m.host_metadata_update.hostname] = None
    n_pol = by_payload["active_policy_update"]
    return {
        "messages": len(msgs),
        "by_payload": dict(sorted(by_payload.items())),
        "ip_sets": sum(set_types.values()),
        "ip_sets_by_type": dict(sorted(set_types.items())),
        "ip_set_members": sum(members_by_type.values()),
        "ip_set_members_by_type": dict(sorted(members_by_type.items())),
        "largest_ip_set": largest,
        "policies": n_pol,
        "policies_by_kind": dict(sorted(kinds.items())),
        "policies_by_tier": dict(sorted(tiers.items())),
        "rules": rules,
        "rules_per_policy": round(rules / n_pol, 2) if n_pol else 0.0,
        "local_endpoints": by_payload["workload_endpoint_update"],
        "remote_endpoints": len(pod_ips.keys() - local_ips.keys()),
        "nodes": len(hosts),
        "routes": by_payload["route_update"],
        "vteps": by_payload["vtep_update"],
        "pools": by_payload["ipam_pool_update"],
        "namespaces": by_payload["namespace_update"],
        "service_accounts": by_payload["service_account_update"],
        "profiles": by_payload["active_profile_update"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--small", action="store_true", help="a small profile, for trying things")
    ap.add_argument("--out", type=Path, help="write the encoded stream to this file")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    msgs = generate(args.seed, SMALL if args.small else NODE_AT_SCALE)
    t1 = time.perf_counter()
    data = encode_stream(msgs)
    t2 = time.perf_counter()
    summary = profile_summary(msgs)
    summary["bytes"] = len(data)
    summary["sha256"] = hashlib.sha256(data).hexdigest()
    summary["generate_s"] = round(t1 - t0, 3)
    summary["encode_s"] = round(t2 - t1, 3)
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
