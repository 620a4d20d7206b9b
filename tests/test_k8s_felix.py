"""End to end: a Kubernetes NetworkPolicy manifest -> what Felix sends the driver on node-1.

Each test builds the same small cluster (two labelled namespaces, four labelled pods with IPs and
named container ports, two nodes), converts one NetworkPolicy with `convert_network_policy`, runs
`FelixCalc` for node-1 and checks the ``ActivePolicyUpdate`` (PolicyID, tier, namespace, every
inbound/outbound ``felix.Rule`` field), the ``IPSetUpdate`` messages (IDs, types and exact members)
and the endpoint's tier lists in the startup stream.

The expected values are worked out by hand from Calico's own pipeline, not from this project's
output.  Each step and the file it comes from (projectcalico/calico; line numbers are those of the
mirror's HEAD, v3.34.0-0.dev-67-g87c15906f2, whose code for these paths is the v3.33 code):

1. ``libcalico-go/lib/backend/k8s/conversion/conversion.go``: ``k8sSelectorToCalico`` (l. 386)
   writes a pod selector as ``projectcalico.org/orchestrator == 'k8s' && k == 'v'`` (matchLabels
   sorted), a namespace selector without the orchestrator term, ``{}`` as ``all()``;
   ``k8sRuleToCalico`` (l. 436) makes one ``Allow`` rule per (protocol, peer), protocols sorted
   by name (l. 519), each with all of that protocol's ports merged by ``SimplifyPorts`` (l. 572);
   the peer goes to ``source`` for ingress and ``destination`` for egress, ports always to
   ``destination``; ``k8sPeerToCalicoFields`` (l. 661) parses ipBlock CIDRs with Go's
   ``net.ParseCIDR`` (so they come out masked); ``endPort`` makes ``"port:endPort"`` (l. 697).
   ``K8sNetworkPolicyToCalico`` (l. 278) keeps ingress rules whatever ``policyTypes`` says.
2. ``libcalico-go/lib/backend/syncersv1/updateprocessors/networkpolicyprocessor.go`` (l. 60-70):
   the policy selector becomes ``(<sel>) && projectcalico.org/namespace == '<ns>'``; the key is
   (name, namespace, ``KubernetesNetworkPolicy``) (felixsyncerv1.go l. 113).
   ``rules.go`` ``getEndpointSelector`` (l. 60): a namespace selector is prefixed with ``pcns.``
   and re-printed by the selector parser (``pcns.team == "frontend"``), ``all()`` becomes
   ``has(projectcalico.org/namespace)``; without one, a namespaced policy's rule selector is
   limited to ``projectcalico.org/namespace == '<ns>'``; the result is ``(<ns part>) && (<sel>)``,
   and a side with no selector at all (e.g. the destination of an ingress rule) stays empty.
   Actions are lowercased, protocols lowercased (``ToV1``).
3. ``felix/calc/rule_scanner.go`` ``ruleToParsedRule`` (l. 369): each selector is one ``NET`` IP set
   whose ID is the selector's ``UniqueID()``; a named port becomes an ``IP_AND_PORT`` set
   ``hash("n", selID + "," + proto + "," + name)`` over the side's selector or ``all()`` when
   the side has none (``namedPortsToIPSets``, l. 508), with the protocol from the rule; the
   side's own selector set is left out when it has only named ports (l. 415-420).
   ``felix/calc/rule_convert.go`` ``parsedRuleToProtoRule`` fills the proto (``ip_version`` ANY
   unless ICMP, protocol by name, nets as strings, ``original_*`` selectors passed through);
   ``event_sequencer.go`` (l. 316) sends the PolicyID (name, namespace, kind) and the
   normalised policy selector as ``original_selector`` (rule_scanner.go l. 171).
4. IP set members (``felix/labelindex/named_port_index.go`` ``CalculateEndpointContribution``,
   l. 819, and ``LookupNamedPorts`` l. 98; format as in ``felix/calc/states_for_test.go`` l. 606):
   every matching endpoint in the cluster, local or not, as ``<ip>/32``, or for a named-port set
   ``<ip>,<proto>:<port>`` for each of its ports with that name and protocol.  Pods' named
   container ports reach the endpoint as ``appendEndpointPorts`` keeps them
   (``k8s/conversion/workload_endpoint_default.go`` l. 283).

For the IP set IDs the selector text is written here the way step 2 writes it, and the ID is
computed with ``selector_ipset_id(parse_selector(text))`` / ``named_port_ipset_id``; so these tests
check the selector text each step produces, independently of how the implementation builds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from calico_vpp_driver.felix import felixbackend_pb2 as pb
from calico_vpp_driver.scenario.calc import FelixCalc
from calico_vpp_driver.scenario.k8s import convert_network_policy
from calico_vpp_driver.scenario.resources import ContainerPort, IPPoolSpec, Namespace, Node, Pod
from calico_vpp_driver.scenario.selector import named_port_ipset_id, parse_selector, selector_ipset_id

NODE = "node-1"
NET = pb.IPSetUpdate.NET
IP_AND_PORT = pb.IPSetUpdate.IP_AND_PORT
KIND = "KubernetesNetworkPolicy"

# ---------------------------------------------------------------------------------------------
# The cluster.
# ---------------------------------------------------------------------------------------------

NAMESPACES = (
    # The API server adds kubernetes.io/metadata.name to every namespace.
    Namespace("prod", {"kubernetes.io/metadata.name": "prod", "team": "backend", "env": "prod"}),
    Namespace("dev", {"kubernetes.io/metadata.name": "dev", "team": "frontend", "env": "dev"}),
)

DB_0 = "10.65.1.10"  # prod, node-1 (local), app=db
API_0 = "10.65.1.11"  # prod, node-1 (local), app=api
API_1 = "10.65.2.11"  # prod, node-2 (remote), app=api
DEV_API = "10.65.2.20"  # dev, node-2 (remote), app=api

PODS = (
    Pod(
        "db-0",
        "prod",
        (DB_0,),
        NODE,
        {"app": "db", "tier": "data"},
        ports=(ContainerPort("sql", 5432), ContainerPort("metrics", 9100)),
    ),
    Pod(
        "api-0",
        "prod",
        (API_0,),
        NODE,
        {"app": "api", "tier": "web"},
        ports=(ContainerPort("http", 8080), ContainerPort("dns", 53, "UDP")),
    ),
    Pod(
        "api-1",
        "prod",
        (API_1,),
        "node-2",
        {"app": "api", "tier": "web"},
        ports=(ContainerPort("http", 8081), ContainerPort("dns", 5353, "UDP")),
    ),
    Pod(
        "api-0",
        "dev",
        (DEV_API,),
        "node-2",
        {"app": "api", "tier": "web"},
        ports=(
            ContainerPort("http", 80),
            ContainerPort("sql", 15432),
            ContainerPort("dns", 53, "TCP"),
            ContainerPort("sig", 3868, "SCTP"),
        ),
    ),
)

NODES = (
    Node("node-1", "192.0.2.1", "10.65.1.0/24"),
    Node("node-2", "192.0.2.2", "10.65.2.0/24"),
)

# Selector texts as the converter writes them (conversion.go k8sSelectorToCalico).
K8S = "projectcalico.org/orchestrator == 'k8s'"
DB_SELECTOR = {"matchLabels": {"app": "db"}}
API_PODS = {"podSelector": {"matchLabels": {"app": "api"}}}

# The rule selector for "app=api pods in this (prod) namespace" as rules.go getEndpointSelector
# writes it: (<namespace part>) && (<converted pod selector>).
PROD_API = (
    "(projectcalico.org/namespace == 'prod') && (projectcalico.org/orchestrator == 'k8s' && app == 'api')"
)
# The policy selector (networkpolicyprocessor.go): (<converted pod selector>) && <namespace>.
DB_POLICY_SELECTOR = (
    "(projectcalico.org/orchestrator == 'k8s' && app == 'db') && projectcalico.org/namespace == 'prod'"
)


def set_id(selector_text: str) -> str:
    return selector_ipset_id(parse_selector(selector_text))


def port_set_id(selector_text: str, proto: str, name: str) -> str:
    return named_port_ipset_id(parse_selector(selector_text), proto, name)


def tcp(*ranges: int | tuple[int, int]) -> dict[str, Any]:
    return {"protocol": pb.Protocol(name="tcp"), "dst_ports": port_ranges(ranges)}


def port_ranges(ranges: tuple[int | tuple[int, int], ...]) -> list[pb.PortRange]:
    out = []
    for r in ranges:
        first, last = r if isinstance(r, tuple) else (r, r)
        out.append(pb.PortRange(first=first, last=last))
    return out


def allow(**fields: Any) -> pb.Rule:
    """The proto rule Felix sends for a converted Kubernetes rule (no rule ID)."""
    return pb.Rule(action="allow", ip_version=pb.ANY, **fields)


# ---------------------------------------------------------------------------------------------
# Running the pipeline.
# ---------------------------------------------------------------------------------------------


def manifest(spec: dict[str, Any], name: str = "test-policy", namespace: str = "prod") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


@dataclass
class Sent:
    """What the startup stream carried for the cluster plus one policy."""

    policies: dict[tuple[str, str, str], pb.Policy]  # (name, namespace, kind) -> policy
    ipsets: dict[str, tuple[int, frozenset[str]]]
    endpoints: dict[str, pb.WorkloadEndpoint]  # by workload id ("prod/db-0")

    @property
    def policy(self) -> pb.Policy:
        assert len(self.policies) == 1, self.policies
        return next(iter(self.policies.values()))

    def inbound(self) -> list[pb.Rule]:
        return rules_without_ids(self.policy.inbound_rules)

    def outbound(self) -> list[pb.Rule]:
        return rules_without_ids(self.policy.outbound_rules)

    def tiers(self, workload: str) -> list[tuple[str, list[str], list[str]]]:
        """(tier, ingress policy names, egress policy names) for a local endpoint."""
        return [
            (t.name, [p.name for p in t.ingress_policies], [p.name for p in t.egress_policies])
            for t in self.endpoints[workload].tiers
        ]


def rules_without_ids(rules: Any) -> list[pb.Rule]:
    out = []
    for r in rules:
        assert len(r.rule_id) == 16, r
        copy = pb.Rule()
        copy.CopyFrom(r)
        copy.rule_id = ""
        out.append(copy)
    return out


def run(
    spec: dict[str, Any], name: str = "test-policy", namespace: str = "prod", extra_pods: tuple[Pod, ...] = ()
) -> Sent:
    policy = convert_network_policy(manifest(spec, name, namespace))
    pools = [IPPoolSpec("10.65.0.0/16"), IPPoolSpec("fd00:65::/48")]
    calc = FelixCalc(NODE, NAMESPACES, PODS + extra_pods, NODES, pools, [], [policy], {})
    sent = Sent({}, {}, {})
    for msg in calc.startup_stream():
        kind = msg.WhichOneof("payload")
        if kind == "active_policy_update":
            pid = msg.active_policy_update.id
            sent.policies[(pid.name, pid.namespace, pid.kind)] = msg.active_policy_update.policy
        elif kind == "ipset_update":
            u = msg.ipset_update
            assert u.id not in sent.ipsets
            sent.ipsets[u.id] = (u.type, frozenset(u.members))
        elif kind == "workload_endpoint_update":
            wep = msg.workload_endpoint_update
            sent.endpoints[wep.id.workload_id] = wep.endpoint
        assert kind not in ("ipset_delta_update", "ipset_remove", "active_policy_remove")
    return sent


def assert_db_policy(sent: Sent, name: str = "test-policy") -> None:
    """The policy is sent under its Kubernetes identity, in the default tier, with its selector."""
    assert list(sent.policies) == [(name, "prod", KIND)]
    pol = sent.policy
    assert pol.namespace == "prod"
    assert pol.tier == "default"
    assert pol.original_selector == parse_selector(DB_POLICY_SELECTOR).canonical()
    assert not pol.untracked and not pol.pre_dnat


# ---------------------------------------------------------------------------------------------
# Peers.
# ---------------------------------------------------------------------------------------------


def test_pod_selector_peer() -> None:
    # conversion_test.go "should parse a basic k8s NetworkPolicy to a NetworkPolicy" (selector
    # text), rules.go getEndpointSelector (namespace limit), rule_scanner.go (one NET set).
    sent = run({"podSelector": DB_SELECTOR, "ingress": [{"from": [API_PODS]}]})
    assert_db_policy(sent)
    assert sent.inbound() == [
        allow(
            src_ip_set_ids=[set_id(PROD_API)],
            original_src_selector=f"{K8S} && app == 'api'",
        )
    ]
    assert sent.outbound() == []
    # Only the prod app=api pods, local and remote; not dev's app=api pod.
    assert sent.ipsets == {set_id(PROD_API): (NET, frozenset({f"{API_0}/32", f"{API_1}/32"}))}
    # policyTypes defaults to [Ingress]: the policy governs ingress only.
    assert sent.tiers("prod/db-0") == [("default", ["test-policy"], [])]
    assert sent.tiers("prod/api-0") == []


def test_empty_pod_selector_peer_selects_the_policy_namespace() -> None:
    # conversion_test.go "should parse a NetworkPolicy with a nil namespace selector": an empty
    # podSelector is the bare orchestrator term; rules.go limits it to the policy's namespace.
    sent = run({"podSelector": DB_SELECTOR, "ingress": [{"from": [{"podSelector": {}}]}]})
    selector = f"(projectcalico.org/namespace == 'prod') && ({K8S})"
    assert sent.inbound() == [allow(src_ip_set_ids=[set_id(selector)], original_src_selector=K8S)]
    assert sent.ipsets == {set_id(selector): (NET, frozenset({f"{DB_0}/32", f"{API_0}/32", f"{API_1}/32"}))}


def test_pod_selector_match_expressions() -> None:
    # conversion.go k8sSelectorToCalico: matchLabels (sorted) then matchExpressions, "in { 'a' }",
    # "! has(k)"; the whole text is then wrapped by getEndpointSelector.
    peer = {
        "podSelector": {
            "matchLabels": {"tier": "web"},
            "matchExpressions": [
                {"key": "app", "operator": "In", "values": ["api", "cache"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        }
    }
    sent = run({"podSelector": DB_SELECTOR, "ingress": [{"from": [peer]}]})
    converted = f"{K8S} && tier == 'web' && app in {{ 'api', 'cache' }} && ! has(canary)"
    selector = f"(projectcalico.org/namespace == 'prod') && ({converted})"
    assert sent.inbound() == [allow(src_ip_set_ids=[set_id(selector)], original_src_selector=converted)]
    assert sent.ipsets == {set_id(selector): (NET, frozenset({f"{API_0}/32", f"{API_1}/32"}))}


@pytest.mark.parametrize(
    ("ns_selector", "converted", "prefixed", "members"),
    [
        pytest.param(
            {"matchLabels": {"team": "frontend"}},
            "team == 'frontend'",
            'pcns.team == "frontend"',
            {DEV_API},
            id="label",
        ),
        pytest.param(
            {"matchLabels": {"kubernetes.io/metadata.name": "dev"}},
            "kubernetes.io/metadata.name == 'dev'",
            'pcns.kubernetes.io/metadata.name == "dev"',
            {DEV_API},
            id="metadata-name",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "env", "operator": "In", "values": ["dev", "prod"]}]},
            "env in { 'dev', 'prod' }",
            'pcns.env in {"dev", "prod"}',
            {DB_0, API_0, API_1, DEV_API},
            id="expression",
        ),
        pytest.param(
            # conversion_test.go "should parse a NetworkPolicy with an empty namespaceSelector":
            # {} is all(), which rules.go turns into has(projectcalico.org/namespace).
            {},
            "all()",
            "has(projectcalico.org/namespace)",
            {DB_0, API_0, API_1, DEV_API},
            id="empty",
        ),
    ],
)
def test_namespace_selector_peer(
    ns_selector: dict[str, Any], converted: str, prefixed: str, members: set[str]
) -> None:
    # conversion_test.go "should parse a NetworkPolicy with a namespaceSelector": the peer's
    # selector is the bare orchestrator term and namespaceSelector carries the labels; rules.go
    # prefixes them with pcns. (rules_test.go "should parse a rule with both a selector and
    # namespace selector": "(pcns.key == \"value\") && (projectcalico.org/orchestrator == 'k8s')").
    sent = run({"podSelector": DB_SELECTOR, "ingress": [{"from": [{"namespaceSelector": ns_selector}]}]})
    selector = f"({prefixed}) && ({K8S})"
    assert sent.inbound() == [
        allow(
            src_ip_set_ids=[set_id(selector)],
            original_src_selector=K8S,
            original_src_namespace_selector=converted,
        )
    ]
    assert sent.ipsets == {set_id(selector): (NET, frozenset(f"{ip}/32" for ip in members))}


def test_pod_and_namespace_selector_in_one_peer() -> None:
    # conversion_test.go "should parse a NetworkPolicy with pod and namespace selectors": both
    # in one rule; rules.go ANDs them: the pods matching app=api in namespaces with env=dev.
    peer = {"namespaceSelector": {"matchLabels": {"env": "dev"}}, **API_PODS}
    sent = run({"podSelector": DB_SELECTOR, "ingress": [{"from": [peer]}]})
    selector = f"(pcns.env == \"dev\") && ({K8S} && app == 'api')"
    assert sent.inbound() == [
        allow(
            src_ip_set_ids=[set_id(selector)],
            original_src_selector=f"{K8S} && app == 'api'",
            original_src_namespace_selector="env == 'dev'",
        )
    ]
    assert sent.ipsets == {set_id(selector): (NET, frozenset({f"{DEV_API}/32"}))}


def test_pod_and_namespace_selector_in_separate_peers() -> None:
    # k8sRuleToCalico: one rule per peer, in the peers' order (an OR of the two).
    peers = [API_PODS, {"namespaceSelector": {"matchLabels": {"env": "dev"}}}]
    sent = run({"podSelector": DB_SELECTOR, "ingress": [{"from": peers}]})
    dev_all = f'(pcns.env == "dev") && ({K8S})'
    assert sent.inbound() == [
        allow(src_ip_set_ids=[set_id(PROD_API)], original_src_selector=f"{K8S} && app == 'api'"),
        allow(
            src_ip_set_ids=[set_id(dev_all)],
            original_src_selector=K8S,
            original_src_namespace_selector="env == 'dev'",
        ),
    ]
    assert sent.ipsets == {
        set_id(PROD_API): (NET, frozenset({f"{API_0}/32", f"{API_1}/32"})),
        set_id(dev_all): (NET, frozenset({f"{DEV_API}/32"})),
    }


@pytest.mark.parametrize(
    "rule", [{}, {"from": []}, {"from": None}], ids=["empty-rule", "empty-from", "null-from"]
)
def test_empty_from_allows_any_source(rule: dict[str, Any]) -> None:
    # conversion_test.go "should parse a k8s NetworkPolicy with no ports": no peers and no ports
    # make one Allow rule with no protocol and no match criteria at all.
    sent = run({"podSelector": DB_SELECTOR, "ingress": [rule]})
    assert_db_policy(sent)
    assert sent.inbound() == [allow()]
    assert sent.ipsets == {}


def test_empty_from_with_a_port() -> None:
    sent = run({"podSelector": DB_SELECTOR, "ingress": [{"ports": [{"port": 5432}]}]})
    assert sent.inbound() == [allow(**tcp(5432))]
    assert sent.ipsets == {}


@pytest.mark.parametrize("extra", [{}, {"ingress": []}], ids=["absent", "empty-list"])
def test_absent_ingress_rules_deny_everything(extra: dict[str, Any]) -> None:
    # conversion_test.go "should parse a NetworkPolicy with no rules": Types [Ingress], no rules;
    # the policy still applies (so the tier's default deny drops all ingress).
    sent = run({"podSelector": DB_SELECTOR, "policyTypes": ["Ingress"], **extra})
    assert_db_policy(sent)
    assert sent.inbound() == []
    assert sent.outbound() == []
    assert sent.ipsets == {}
    assert sent.tiers("prod/db-0") == [("default", ["test-policy"], [])]


def test_ip_block_with_except() -> None:
    # conversion_test.go "should parse a NetworkPolicy with an Ingress rule with an IPBlock Peer":
    # nets + notNets in the source; Go's ParseCIDR masks host bits (k8sPeerToCalicoFields).
    block = {"cidr": "192.168.7.9/16", "except": ["192.168.3.0/24", "192.168.4.1/32"]}
    sent = run({"podSelector": DB_SELECTOR, "ingress": [{"from": [{"ipBlock": block}]}]})
    assert sent.inbound() == [
        allow(src_net=["192.168.0.0/16"], not_src_net=["192.168.3.0/24", "192.168.4.1/32"])
    ]
    assert sent.ipsets == {}


def test_ip_block_and_pods_in_one_rule() -> None:
    # Two peers, one port: one rule per peer, each with the port.
    peers = [{"ipBlock": {"cidr": "172.16.0.0/12"}}, API_PODS]
    sent = run({"podSelector": DB_SELECTOR, "ingress": [{"from": peers, "ports": [{"port": 5432}]}]})
    assert sent.inbound() == [
        allow(src_net=["172.16.0.0/12"], **tcp(5432)),
        allow(src_ip_set_ids=[set_id(PROD_API)], original_src_selector=f"{K8S} && app == 'api'", **tcp(5432)),
    ]


# ---------------------------------------------------------------------------------------------
# Ports.
# ---------------------------------------------------------------------------------------------


def test_numeric_tcp_ports() -> None:
    # TCP is the default protocol; one rule per protocol with all its ports, merged into ranges
    # and sorted by SimplifyPorts (conversion_test.go "should parse a NetworkPolicy with multiple
    # peers and ports", SimplifyPorts table).
    ports = [{"port": 9000}, {"port": 5433, "protocol": "TCP"}, {"port": 5432}]
    sent = run({"podSelector": DB_SELECTOR, "ingress": [{"from": [API_PODS], "ports": ports}]})
    assert sent.inbound() == [
        allow(
            src_ip_set_ids=[set_id(PROD_API)],
            original_src_selector=f"{K8S} && app == 'api'",
            **tcp((5432, 5433), 9000),
        ),
    ]
    assert sent.ipsets == {set_id(PROD_API): (NET, frozenset({f"{API_0}/32", f"{API_1}/32"}))}


def test_a_protocol_without_port_opens_it_entirely() -> None:
    # k8sRuleToCalico: a port entry with no port number is "all ports" of that protocol and
    # wins over any port numbers given for it.
    ports = [{"port": 5432}, {"protocol": "TCP"}]
    sent = run({"podSelector": DB_SELECTOR, "ingress": [{"ports": ports}]})
    assert sent.inbound() == [allow(protocol=pb.Protocol(name="tcp"))]


def test_udp_and_sctp_ports() -> None:
    # One rule per protocol, protocols sorted by name (SCTP < TCP < UDP), lowercased by the
    # syncer (Protocol.ToV1).
    ports = [
        {"protocol": "UDP", "port": 53},
        {"protocol": "SCTP", "port": 3868},
        {"port": 5432},
        {"protocol": "UDP", "port": 54},
    ]
    sent = run({"podSelector": DB_SELECTOR, "ingress": [{"from": [API_PODS], "ports": ports}]})
    src = {"src_ip_set_ids": [set_id(PROD_API)], "original_src_selector": f"{K8S} && app == 'api'"}
    assert sent.inbound() == [
        allow(protocol=pb.Protocol(name="sctp"), dst_ports=port_ranges((3868,)), **src),
        allow(**tcp(5432), **src),
        allow(protocol=pb.Protocol(name="udp"), dst_ports=port_ranges(((53, 54),)), **src),
    ]
    assert sent.ipsets == {set_id(PROD_API): (NET, frozenset({f"{API_0}/32", f"{API_1}/32"}))}


def test_named_port_ingress() -> None:
    # The destination of an ingress rule has no selector (getEndpointSelector adds the namespace
    # only when some selector is set), so Felix filters the named port by all() (rule_scanner.go
    # namedPortsToIPSets): every endpoint in the cluster with a TCP port named "sql".
    sent = run({"podSelector": DB_SELECTOR, "ingress": [{"from": [API_PODS], "ports": [{"port": "sql"}]}]})
    sql = port_set_id("all()", "tcp", "sql")
    assert sent.inbound() == [
        allow(
            protocol=pb.Protocol(name="tcp"),
            dst_named_port_ip_set_ids=[sql],
            src_ip_set_ids=[set_id(PROD_API)],
            original_src_selector=f"{K8S} && app == 'api'",
        )
    ]
    assert sent.ipsets == {
        sql: (IP_AND_PORT, frozenset({f"{DB_0},tcp:5432", f"{DEV_API},tcp:15432"})),
        set_id(PROD_API): (NET, frozenset({f"{API_0}/32", f"{API_1}/32"})),
    }


def test_named_port_with_numeric_ports() -> None:
    # Named and numeric ports of one protocol share a rule: SimplifyPorts puts named ports first;
    # the rule scanner splits them again (numeric -> dst_ports, named -> IP sets).
    ports = [{"port": 9100}, {"port": "metrics"}, {"port": 9101}]
    sent = run({"podSelector": DB_SELECTOR, "ingress": [{"ports": ports}]})
    metrics = port_set_id("all()", "tcp", "metrics")
    assert sent.inbound() == [
        allow(dst_named_port_ip_set_ids=[metrics], **tcp((9100, 9101))),
    ]
    assert sent.ipsets == {metrics: (IP_AND_PORT, frozenset({f"{DB_0},tcp:9100"}))}


def test_named_udp_port() -> None:
    # The set's protocol comes from the rule (ipsetmember.ProtocolFrom); only container ports of
    # that protocol are members (LookupNamedPorts): dev's TCP "dns" port is not.
    ports = [{"protocol": "UDP", "port": "dns"}]
    sent = run({"podSelector": DB_SELECTOR, "ingress": [{"ports": ports}]})
    dns = port_set_id("all()", "udp", "dns")
    assert sent.inbound() == [allow(protocol=pb.Protocol(name="udp"), dst_named_port_ip_set_ids=[dns])]
    assert sent.ipsets == {dns: (IP_AND_PORT, frozenset({f"{API_0},udp:53", f"{API_1},udp:5353"}))}


def test_named_port_egress_to_pods() -> None:
    # Egress: the peer and the named port are both on the destination, so the named-port set is
    # filtered by the peer's selector, and the selector's own NET set is left out because the
    # side has only named ports (rule_scanner.go ruleToParsedRule).
    spec = {
        "podSelector": DB_SELECTOR,
        "policyTypes": ["Egress"],
        "egress": [{"to": [API_PODS], "ports": [{"port": "http"}]}],
    }
    sent = run(spec)
    http = port_set_id(PROD_API, "tcp", "http")
    assert sent.inbound() == []
    assert sent.outbound() == [
        allow(
            protocol=pb.Protocol(name="tcp"),
            dst_named_port_ip_set_ids=[http],
            original_dst_selector=f"{K8S} && app == 'api'",
        )
    ]
    # prod's app=api pods with their own port numbers; dev's app=api pod is not selected.
    assert sent.ipsets == {http: (IP_AND_PORT, frozenset({f"{API_0},tcp:8080", f"{API_1},tcp:8081"}))}
    assert sent.tiers("prod/db-0") == [("default", [], ["test-policy"])]


def test_named_sctp_port_egress_to_namespace() -> None:
    spec = {
        "podSelector": DB_SELECTOR,
        "policyTypes": ["Egress"],
        "egress": [
            {
                "to": [{"namespaceSelector": {"matchLabels": {"team": "frontend"}}}],
                "ports": [{"protocol": "SCTP", "port": "sig"}],
            }
        ],
    }
    sent = run(spec)
    selector = f'(pcns.team == "frontend") && ({K8S})'
    sig = port_set_id(selector, "sctp", "sig")
    assert sent.outbound() == [
        allow(
            protocol=pb.Protocol(name="sctp"),
            dst_named_port_ip_set_ids=[sig],
            original_dst_selector=K8S,
            original_dst_namespace_selector="team == 'frontend'",
        )
    ]
    assert sent.ipsets == {sig: (IP_AND_PORT, frozenset({f"{DEV_API},sctp:3868"}))}


def test_end_port_range() -> None:
    # conversion_test.go "should parse a NetworkPolicy with Port Range only": port..endPort is
    # one Calico port range; SimplifyPorts merges it with an adjacent port.
    ports = [
        {"port": 32000, "endPort": 32767},
        {"port": 8000, "endPort": 8080},
        {"port": 8081},
        {"protocol": "UDP", "port": 5000, "endPort": 5010},
    ]
    sent = run({"podSelector": DB_SELECTOR, "ingress": [{"ports": ports}]})
    assert sent.inbound() == [
        allow(**tcp((8000, 8081), (32000, 32767))),
        allow(protocol=pb.Protocol(name="udp"), dst_ports=port_ranges(((5000, 5010),))),
    ]


def test_dual_stack_members() -> None:
    # Members are per address: "<ip>/128" for IPv6 NET sets, "<ipv6>,tcp:<port>" (no brackets)
    # for named-port sets (states_for_test.go l. 606-609, "fc00:fe11::1,tcp:8080").
    dual = Pod(
        "api-2",
        "prod",
        ("10.65.2.12", "fd00:65:2::12"),
        "node-2",
        {"app": "api"},
        ports=(ContainerPort("http", 8082),),
    )
    spec = {
        "podSelector": DB_SELECTOR,
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [API_PODS]}],
        "egress": [{"to": [API_PODS], "ports": [{"port": "http"}]}],
    }
    sent = run(spec, extra_pods=(dual,))
    http = port_set_id(PROD_API, "tcp", "http")
    assert sent.ipsets == {
        set_id(PROD_API): (
            NET,
            frozenset({f"{API_0}/32", f"{API_1}/32", "10.65.2.12/32", "fd00:65:2::12/128"}),
        ),
        http: (
            IP_AND_PORT,
            frozenset(
                {f"{API_0},tcp:8080", f"{API_1},tcp:8081", "10.65.2.12,tcp:8082", "fd00:65:2::12,tcp:8082"}
            ),
        ),
    }
    assert sent.tiers("prod/db-0") == [("default", ["test-policy"], ["test-policy"])]


def test_ipv6_ip_block() -> None:
    block = {"cidr": "fd00:99::1/64", "except": ["fd00:99:0:0:1::/80"]}
    sent = run({"podSelector": DB_SELECTOR, "ingress": [{"from": [{"ipBlock": block}]}]})
    assert sent.inbound() == [allow(src_net=["fd00:99::/64"], not_src_net=["fd00:99:0:0:1::/80"])]


# ---------------------------------------------------------------------------------------------
# Egress and policy types.
# ---------------------------------------------------------------------------------------------


def test_egress_to_ip_block_and_to_pods() -> None:
    # conversion_test.go "should parse a NetworkPolicy with an Egress rule with IPBlock and
    # Ports": the peer goes to the destination with the ports.
    spec = {
        "podSelector": DB_SELECTOR,
        "policyTypes": ["Egress"],
        "egress": [
            {
                "to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.65.0.0/16"]}}],
                "ports": [{"port": 443}, {"protocol": "UDP", "port": 53}],
            },
            {"to": [API_PODS]},
        ],
    }
    sent = run(spec)
    assert_db_policy(sent)
    assert sent.inbound() == []
    assert sent.outbound() == [
        allow(dst_net=["10.0.0.0/8"], not_dst_net=["10.65.0.0/16"], **tcp(443)),
        allow(
            protocol=pb.Protocol(name="udp"),
            dst_ports=port_ranges((53,)),
            dst_net=["10.0.0.0/8"],
            not_dst_net=["10.65.0.0/16"],
        ),
        allow(dst_ip_set_ids=[set_id(PROD_API)], original_dst_selector=f"{K8S} && app == 'api'"),
    ]
    assert sent.ipsets == {set_id(PROD_API): (NET, frozenset({f"{API_0}/32", f"{API_1}/32"}))}
    assert sent.tiers("prod/db-0") == [("default", [], ["test-policy"])]


def test_egress_only_policy_sends_no_inbound_rules() -> None:
    # conversion_test.go "should parse a default-deny egress NetworkPolicy": Types [Egress];
    # the endpoint lists the policy for egress only (policy_sorter.go governs by Types).
    sent = run({"podSelector": DB_SELECTOR, "policyTypes": ["Egress"], "egress": [{"to": [API_PODS]}]})
    assert sent.inbound() == []
    assert len(sent.outbound()) == 1
    assert sent.tiers("prod/db-0") == [("default", [], ["test-policy"])]


def test_egress_only_policy_keeps_ingress_rules() -> None:
    # conversion.go K8sNetworkPolicyToCalico (l. 286-296) converts spec.ingress whatever
    # policyTypes says, the syncer converts them (networkpolicyprocessor.go l. 79) and Felix's
    # rule scanner sends every rule it gets: the inbound rules are sent, but the endpoint does not
    # list the policy for ingress, so they never apply.
    spec = {"podSelector": DB_SELECTOR, "policyTypes": ["Egress"], "ingress": [{"from": [API_PODS]}]}
    sent = run(spec)
    assert sent.inbound() == [
        allow(src_ip_set_ids=[set_id(PROD_API)], original_src_selector=f"{K8S} && app == 'api'")
    ]
    assert sent.outbound() == []
    assert sent.tiers("prod/db-0") == [("default", [], ["test-policy"])]


def test_policy_types_default_from_the_rules() -> None:
    # The API server defaults an empty policyTypes to [Ingress], plus Egress when there are
    # egress rules (kubernetes pkg/apis/networking/v1/defaults.go); Calico copies them
    # (conversion.go l. 311-340): an egress-only manifest without policyTypes also denies ingress.
    sent = run({"podSelector": DB_SELECTOR, "egress": [{"to": [API_PODS]}]})
    assert sent.inbound() == []
    assert sent.outbound() == [
        allow(dst_ip_set_ids=[set_id(PROD_API)], original_dst_selector=f"{K8S} && app == 'api'")
    ]
    assert sent.tiers("prod/db-0") == [("default", ["test-policy"], ["test-policy"])]


def test_default_deny_all() -> None:
    # conversion_test.go "should parse a NetworkPolicy with empty podSelector" + "no rules":
    # selector is just the orchestrator term; every local prod pod gets the policy both ways.
    sent = run({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, name="default-deny")
    assert list(sent.policies) == [("default-deny", "prod", KIND)]
    pol = sent.policy
    assert (pol.namespace, pol.tier) == ("prod", "default")
    expected_selector = f"({K8S}) && projectcalico.org/namespace == 'prod'"
    assert pol.original_selector == parse_selector(expected_selector).canonical()
    assert sent.inbound() == []
    assert sent.outbound() == []
    assert sent.ipsets == {}
    for workload in ("prod/db-0", "prod/api-0"):
        assert sent.tiers(workload) == [("default", ["default-deny"], ["default-deny"])]


def test_policy_without_local_pods_is_not_sent() -> None:
    # active_rules_calculator.go: a policy is active only where it selects a local endpoint;
    # every dev pod runs on node-2, so node-1 gets neither the policy nor its IP sets.
    sent = run({"podSelector": {}, "ingress": [{"from": [API_PODS]}]}, namespace="dev")
    assert sent.policies == {}
    assert sent.ipsets == {}
