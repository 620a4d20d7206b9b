"""Scenario files: the loader, the replay, the `replay`/`demo` commands and the scenario suite.

Every file in tests/scenarios/ carries expectations derived by hand from the Kubernetes and Calico
specifications (see the comments in the files); the replay must meet all of them, through the
driver's own path (Felix's stream -> `apply_message` -> the model -> the policy oracle).
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from calico_vpp_driver import cli
from calico_vpp_driver.felix.decode import Outcome
from calico_vpp_driver.scenario import loader as loader_mod
from calico_vpp_driver.scenario import replay as replay_mod
from calico_vpp_driver.scenario.loader import DEFAULT_LOCAL_NODE_IP, load_scenario
from calico_vpp_driver.scenario.resources import ScenarioError

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("*.yaml"))
DEMO = ROOT / "calico_vpp_driver" / "scenario" / "demo.yaml"


def run(text_or_path: str | Path, **kw: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    if isinstance(text_or_path, str):
        text_or_path = textwrap.dedent(text_or_path)
    code = replay_mod.run(text_or_path, out=out, err=err, **kw)
    return code, out.getvalue(), err.getvalue()


BASE = """\
namespaces:
  - {name: x, labels: {ns: x}}
pods:
  - {name: a, namespace: x, labels: {pod: a}, ips: [10.65.0.10]}
  - {name: b, namespace: x, labels: {pod: b}, ips: [10.65.0.11], ports: [{name: http, containerPort: 80}]}
"""


# ---------------------------------------------------------------------------------------------
# The suite.
# ---------------------------------------------------------------------------------------------


def test_the_suite_covers_what_it_should() -> None:
    names = {p.stem for p in SCENARIOS}
    assert len(SCENARIOS) >= 10, names
    texts = "\n".join(p.read_text() for p in SCENARIOS)
    for needle in ("except:", "endPort", "policyTypes: [Egress]", "action: Pass", "defaultAction: Pass",
                   "StagedNetworkPolicy", "GlobalNetworkPolicy", "action: Log", "notNets", "icmpType",
                   "namespaceSelector", "steps:", "kind: Pod", "kind: Namespace"):
        assert needle in texts, needle
    for path in SCENARIOS:
        sc = load_scenario(path)
        assert all(p.expect is not None for p in sc.probes), path  # every probe has an expectation


@pytest.mark.parametrize("backend", ["npol", "acl"])
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_replays_with_every_expectation_met(path: Path, backend: str) -> None:
    """Through the driver's VPP dataplane on the simulator, each backend; VPP and the oracle agree."""
    code, out, err = run(path, backend=backend)
    assert code == 0, out + err
    assert "FAIL" not in out and "REPLAY PROBLEM" not in out
    assert f"programmed by the driver with the {backend} backend" in out
    sc = load_scenario(path)
    result = replay_mod.replay(sc, backend=backend)
    assert result.ok and not result.problems
    assert result.backend == backend
    assert len(result.results) == len(sc.probes) > 0
    judged = [r for r in result.results if r.judged_by == "vpp"]
    assert judged and not any(r.disagrees for r in result.results)
    # Only probes to or from the node itself are left to the oracle.
    assert all(r.probe.src.host or r.probe.dst.host for r in result.results if r.judged_by == "oracle")
    assert [s.stage for s in result.streams] == [s.label for s in sc.stages]


def test_oracle_only_replay() -> None:
    path = next(p for p in SCENARIOS if p.stem == "k8s-allow-from-namespace")
    code, out, err = run(path, vpp="oracle")
    assert code == 0, out + err
    assert "--vpp oracle: no VPP programmed" in out
    result = replay_mod.replay(load_scenario(path), vpp="oracle")
    assert all(r.judged_by == "oracle" for r in result.results) and result.ok


def test_demo_is_packaged_and_realistic() -> None:
    assert "calico_vpp_driver.scenario = demo.yaml" in (ROOT / "setup.cfg").read_text()
    sc = load_scenario(DEMO)
    assert 15 <= len(sc.probes) <= 25
    assert all(p.expect for p in sc.probes)
    namespaces = set(sc.stages[0].cluster.namespaces)
    assert {"shop-frontend", "shop-backend", "shop-data", "monitoring"} <= namespaces
    assert any(not pod.node == sc.node for pod in sc.stages[0].cluster.pods.values())
    assert len(sc.stages) >= 2
    assert "security" in sc.stages[0].cluster.tiers


def test_demo_command_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "demo.yaml (bundled)" in out
    assert "probes judged by VPP (the simulator, programmed by the driver with the npol backend)" in out
    table = out.index("proto/port")
    summary = out.index("Felix messages fed to the driver's model")
    assert table < summary
    assert "OK: 22 of 22" in out
    assert captured.err == ""


def test_replay_as_a_real_subprocess() -> None:
    path = next(p for p in SCENARIOS if p.stem == "k8s-allow-from-namespace")
    proc = subprocess.run(
        [sys.executable, "-m", "calico_vpp_driver", "replay", str(path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK: 11 of 11" in proc.stdout
    assert proc.stderr == ""  # logs stay quiet (WARNING) and on stderr


def test_replay_subprocess_failure_and_unsupported_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE + "probes:\n  - {from: x/a, to: x/b, port: 80, expect: deny, "
                   "name: wrong-on-purpose}\n")
    proc = subprocess.run([sys.executable, "-m", "calico_vpp_driver", "replay", str(bad)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 1
    assert "FAILED probes[0] 'wrong-on-purpose'" in proc.stdout
    unsupported = tmp_path / "unsupported.yaml"
    unsupported.write_text(BASE.replace("ips: [10.65.0.10]}", "ips: [10.65.0.10], hostNetwork: true}"))
    proc = subprocess.run([sys.executable, "-m", "calico_vpp_driver", "replay", str(unsupported)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert "pods[0].hostNetwork" in proc.stderr
    assert proc.stdout == ""


# ---------------------------------------------------------------------------------------------
# Expectations that fail, and scenarios that cannot be read.
# ---------------------------------------------------------------------------------------------


def test_a_failed_expectation_exits_1_and_names_the_probe() -> None:
    code, out, _ = run(BASE + """\
probes:
  - {from: x/a, to: x/b, port: 80, expect: allow}
steps:
  - apply:
      - apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: deny, namespace: x}
        spec: {podSelector: {}, policyTypes: [Ingress]}
    probes:
      - {from: x/a, to: x/b, port: http, expect: allow}
""")
    assert code == 1
    assert "FAILED steps[0].probes[0] (x/a -> x/b tcp/http=80): expected allow, got deny" in out
    assert "FAILED: 1 of 2 expectations did not hold" in out


def test_probes_without_expect_are_reported_only() -> None:
    code, out, _ = run(BASE + "probes:\n  - {from: x/a, to: x/b, port: 80}\n")
    assert code == 0
    assert "OK: 0 of 1 probes had an expectation" in out


@pytest.mark.parametrize(
    ("snippet", "field"),
    [
        # In a pod.
        ("pods:\n  - {name: a, namespace: x, ips: [10.65.0.10], hostNetwork: true}\n", "pods[0].hostNetwork"),
        ("pods:\n  - {name: a, namespace: x, ips: [10.65.0.10], "
         "ports: [{containerPort: 80, hostPort: 80}]}\n",
         "pods[0].ports[0].hostPort"),
        # In a Kubernetes policy.
        ("""policies:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: p, namespace: x}
    spec: {podSelector: {}, ingress: [{from: [{podSelektor: {}}]}]}
""", 'unknown field "spec.ingress[0].from[0].podSelektor"'),
        ("""policies:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: p, namespace: x}
    spec: {podSelector: {}, ingress: [{ports: [{port: 80, endPort: 70}]}]}
""", "spec.ingress[0].ports[0].endPort"),
        # In a Calico rule.
        ("""policies:
  - apiVersion: projectcalico.org/v3
    kind: NetworkPolicy
    metadata: {name: p, namespace: x}
    spec: {selector: all(), ingress: [{action: Allow, source: {selektor: all()}}]}
""", "spec.ingress[0].source.selektor"),
        ("""policies:
  - apiVersion: projectcalico.org/v3
    kind: GlobalNetworkPolicy
    metadata: {name: p}
    spec: {selector: all(), ingress: [{action: Allow, http: {methods: [GET]}}]}
""", "spec.ingress[0].http"),
        ("""policies:
  - apiVersion: projectcalico.org/v3
    kind: GlobalNetworkPolicy
    metadata: {name: p}
    spec: {selector: all(), frobnicate: true}
""", "spec.frobnicate"),
        ("""policies:
  - apiVersion: projectcalico.org/v3
    kind: GlobalNetworkPolicy
    metadata: {name: p, uid: "1"}
    spec: {selector: all()}
""", "policies[0].metadata.uid"),
        # Scenario, namespace, probe, step, node, pool keys.
        ("podz: []\n", "podz"),
        ("namespaces:\n  - {name: y, annotations: {}}\n", "namespaces[0].annotations"),
        ("probes:\n  - {from: 1.2.3.4, to: 5.6.7.8, port: 1, expected: allow}\n", "probes[0].expected"),
        ("steps:\n  - {apply: [], wait: 3}\n", "steps[0].wait"),
        ("nodes:\n  - {name: n2, ip: 192.168.0.12, asNumber: 64512}\n", "nodes[0].asNumber"),
        ("ipPools:\n  - {cidr: 10.66.0.0/16, blockSize: 26}\n", "ipPools[0].blockSize"),
        ("tiers:\n  - {name: t, order: 1, selector: all()}\n", "tiers[0].selector"),
        ("steps:\n  - delete: [{kind: Pod, name: a, namespace: x, force: true}]\n",
         "steps[0].delete[0].force"),
    ],
)
def test_unsupported_fields_exit_2_naming_the_field(snippet: str, field: str) -> None:
    text = "namespaces:\n  - {name: x}\n" + snippet if not snippet.startswith("namespaces") else snippet
    code, out, err = run(text)
    assert code == 2, out + err
    assert field in err
    assert out == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pods: [", "not valid YAML"),
        ("node: a\nnode: b\n", "duplicate key 'node'"),
        ("- 1\n- 2\n", "expected a mapping"),
        (BASE.replace("namespace: x, labels: {pod: a}", "namespace: nowhere, labels: {pod: a}"),
         "pods[0].namespace: pod nowhere/a is in namespace 'nowhere', which is not listed"),
        (BASE + "  - {name: c, namespace: x, ips: [10.65.0.10]}\n", "address 10.65.0.10 is also pod x/a's"),
        (BASE + "  - {name: a, namespace: x, ips: [10.65.0.12]}\n", "pod x/a is defined twice"),
        ("namespaces: [{name: x}]\npods:\n  - {name: a, namespace: x, ips: [10.65.0.1, 10.65.0.2]}\n",
         "two addresses of the same family"),
        ("namespaces: [{name: x}]\npods:\n  - {name: a, namespace: x, ips: []}\n", "one or two addresses"),
        ("namespaces: [{name: x}]\npods:\n  - {name: a, namespace: x, ips: [10.65.0.1],\n"
         "     annotations: {cni.projectcalico.org/floatingIPs: '[1.2.3.4]'}}\n",
         "pods[0].annotations[cni.projectcalico.org/floatingIPs]: not JSON"),
        ("namespaces: [{name: x}]\npods:\n  - {name: a, namespace: x, ips: [10.65.0.1],\n"
         "     annotations: {cni.projectcalico.org/floatingIPs: '\"1.2.3.4\"'}}\n",
         "expected a JSON list of addresses"),
        ("namespaces: [{name: x}]\npods:\n  - {name: a, namespace: x, ips: [10.65.0.1],\n"
         "     annotations: {cni.projectcalico.org/floatingIPs: '[\"1.2.3\"]'}}\n",
         "pods[0].annotations[cni.projectcalico.org/floatingIPs][0]"),
        ("namespaces: [{name: x}]\npods:\n  - {name: a, namespace: x, ips: [10.65.0.1],\n"
         "     annotations: {cni.projectcalico.org/ipAddrs: '[\"10.65.0.1\"]'}}\n",
         "pods[0].annotations[cni.projectcalico.org/ipAddrs]: not modelled by scenarios"),
        ("namespaces: [{name: x}]\npods:\n  - {name: a, namespace: x, ips: [10.65.0.1], node: node-9}\n",
         "node 'node-9', which is not listed"),
        ("namespaces: [{name: x, labels: {kubernetes.io/metadata.name: y}}]\n",
         "kubernetes.io/metadata.name"),
        ("namespaces: [{name: x, labels: {v: 2}}]\n", "namespaces[0].labels[v]: expected a string"),
        ("config: {DefaultEndpointToHostAction: Maybe}\n", "config.DefaultEndpointToHostAction"),
        ("config: {FelixHostname: other}\n", "config.FelixHostname"),
        (BASE + "probes:\n  - {from: x/zz, to: x/b, port: 80}\n", "probes[0].from: pod x/zz does not exist"),
        (BASE + "probes:\n  - {from: x/a, to: x/b, port: https}\n", "pod x/b has no TCP port named 'https'"),
        (BASE + "probes:\n  - {from: x/a, to: x/b, protocol: UDP, port: http}\n", "no UDP port named 'http'"),
        (BASE + "probes:\n  - {from: x/a, to: 1.2.3.4, port: http}\n", "needs a pod as the destination"),
        (BASE + "probes:\n  - {from: x/a, to: x/b}\n", "probes[0].port: required for a TCP probe"),
        (BASE + "probes:\n  - {from: x/a, to: x/b, protocol: ICMP, port: 80}\n",
         "probes[0].port: not for ICMP"),
        (BASE + "probes:\n  - {from: x/a, to: x/b, protocol: GRE}\n", "probes[0].protocol"),
        (BASE + "probes:\n  - {from: x/a, to: 'fd00::1', port: 80}\n", "no address family in common"),
        (BASE + "probes:\n  - {from: x/a, to: x/b, port: 80, expect: maybe}\n", "probes[0].expect"),
        (BASE + "steps:\n  - delete: [{kind: NetworkPolicy, namespace: x, name: nope}]\n",
         "steps[0].delete[0]: no NetworkPolicy x/nope exists"),
        (BASE + "steps:\n  - apply: [{kind: Deployment, name: d}]\n", "steps[0].apply[0].kind"),
        (BASE + "steps:\n  - probes: [{from: x/a, to: x/b, port: 1}]\n"
         "    delete: [{kind: Pod, namespace: x, name: b}]\n",
         "steps[0].probes[0].to: pod x/b does not exist"),
        (BASE + """policies:
  - apiVersion: projectcalico.org/v3
    kind: GlobalNetworkPolicy
    metadata: {name: p}
    spec: {tier: nope, selector: all()}
""", "tier 'nope' does not exist"),
        (BASE + """policies:
  - apiVersion: projectcalico.org/v3
    kind: GlobalNetworkPolicy
    metadata: {name: a.b.c}
    spec: {selector: all()}
""", "policies[0].metadata.name: invalid GlobalNetworkPolicy name 'a.b.c'"),
        (BASE + """policies:
  - apiVersion: projectcalico.org/v3
    kind: NetworkPolicy
    metadata: {name: p}
    spec: {selector: all()}
""", "namespace 'default', which is not listed"),
        (BASE + """policies:
  - apiVersion: projectcalico.org/v2
    kind: NetworkPolicy
    metadata: {name: p, namespace: x}
""", "policies[0].apiVersion"),
    ],
)
def test_unusable_scenarios_are_errors_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(text if "\n" in text else text + "\n")
    assert message in str(info.value)
    code, out, err = run(text if "\n" in text else text + "\n")
    assert code == 2 and out == "" and message in err


def test_unreadable_file_exits_2(tmp_path: Path) -> None:
    code, _, err = run(tmp_path / "missing.yaml")
    assert code == 2
    assert "missing.yaml" in err and "No such file" in err


def test_vpp_and_backend_options_are_validated(tmp_path: Path) -> None:
    path = SCENARIOS[0]
    code, _, err = run(path, vpp=str(tmp_path / "nope.sock"))
    assert code == 2 and "--vpp" in err
    plain = tmp_path / "plain"
    plain.write_text("")
    code, _, err = run(path, vpp=str(plain))
    assert code == 2 and "not a unix socket" in err
    code, _, err = run(path, backend="bpf")
    assert code == 2 and "--backend" in err
    sock_path = tmp_path / "api.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        code, out, err = run(path, vpp=str(sock_path), backend="acl")
    # Probes are judged by tracing them through the simulator's tables; a real VPP cannot be.
    assert code == 2 and "cannot be asked" in err and out == ""
    with pytest.raises(SystemExit):
        cli.main(["replay", str(path), "--backend", "bpf"])


# ---------------------------------------------------------------------------------------------
# Loader details.
# ---------------------------------------------------------------------------------------------


def test_defaults() -> None:
    sc = load_scenario(BASE)
    assert sc.node == "node-1"
    assert [(p.cidr, p.nat_outgoing) for p in sc.pools] == [("10.65.0.0/16", True)]
    assert [(n.name, n.ip) for n in sc.nodes] == [("node-1", DEFAULT_LOCAL_NODE_IP)]
    ns = sc.stages[0].cluster.namespaces["x"]
    assert ns.labels == {"ns": "x", "kubernetes.io/metadata.name": "x"}
    pod = sc.stages[0].cluster.pods["x/a"]
    assert pod.node == "node-1" and pod.service_account == "default"
    calc = sc.calc(sc.stages[0])
    assert calc.hosts["node-1"].ipv4_addr == f"{DEFAULT_LOCAL_NODE_IP}/32"


def test_listed_local_node_and_config_scalars() -> None:
    sc = load_scenario("""\
node: n1
config: {DefaultEndpointToHostAction: Accept, VXLANPort: 4790, AllowIPIPPacketsFromWorkloads: true}
nodes: [{name: n1, ip: 192.168.9.1/24}]
""")
    assert [(n.name, n.ip) for n in sc.nodes] == [("n1", "192.168.9.1/24")]
    assert sc.config == {"DefaultEndpointToHostAction": "Accept", "VXLANPort": "4790",
                         "AllowIPIPPacketsFromWorkloads": "true"}


def test_an_address_resolves_to_its_pod_or_the_node() -> None:
    sc = load_scenario(BASE + """\
probes:
  - {from: 10.65.0.10, to: 10.65.0.11, port: 80}
  - {from: 192.168.0.11, to: x/b, port: 80}
  - {from: x/a, to: 192.168.0.11, port: 80}
""")
    p0, p1, p2 = sc.probes
    assert p0.src.pod == "x/a" and p0.src.endpoint_key == ("k8s", "x/a", "eth0")
    assert p0.dst.pod == "x/b"
    assert p1.src.host and p1.src.endpoint_key is None
    assert p2.dst.host


def test_family_icmp_and_named_port_resolution() -> None:
    sc = load_scenario("""\
namespaces: [{name: x}]
pods:
  - {name: a, namespace: x, ips: [10.65.0.10, "fd00::10"]}
  - {name: b, namespace: x, ips: ["fd00::11"], ports: [{name: dns, containerPort: 53, protocol: UDP}]}
  - {name: c, namespace: x, ips: [10.65.0.12, "fd00::12"]}
probes:
  - {from: x/a, to: x/b, protocol: UDP, port: dns}
  - {from: x/a, to: x/c, protocol: ICMP}
  - {from: x/a, to: x/c, protocol: ICMP, ipVersion: 6}
  - {from: x/a, to: x/c, port: 80, ipVersion: 6}
""")
    p0, p1, p2, p3 = sc.probes
    assert (p0.family, p0.src.ip, p0.dst.ip, p0.port, p0.port_name) == (6, "fd00::10", "fd00::11", 53, "dns")
    assert (p1.family, p1.protocol, p1.icmp_type, p1.icmp_code) == (4, "ICMP", 8, 0)
    assert (p2.family, p2.protocol, p2.icmp_type) == (6, "ICMPv6", 128)
    assert (p3.src.ip, p3.dst.ip) == ("fd00::10", "fd00::12")
    packet = replay_mod.probe_packet(p0)
    assert (packet.protocol, packet.src_port, packet.dst_port) == (17, replay_mod.EPHEMERAL_PORT, 53)


def test_staged_kubernetes_policy_is_converted_and_never_enforced() -> None:
    text = BASE + """\
policies:
  - apiVersion: projectcalico.org/v3
    kind: StagedKubernetesNetworkPolicy
    metadata: {name: staged-deny, namespace: x}
    spec: {stagedAction: Set, podSelector: {}, policyTypes: [Ingress]}
probes:
  - {from: x/a, to: x/b, port: 80, expect: allow}
"""
    sc = load_scenario(text)
    (res,) = sc.stages[0].cluster.policies.values()
    assert res.felix_kind == "StagedKubernetesNetworkPolicy"
    assert res.spec["stagedAction"] == "Set"
    assert res.spec["selector"] == "projectcalico.org/orchestrator == 'k8s'"
    assert run(text)[0] == 0
    code, _, err = run(text.replace("podSelector: {}", "podSelector: {}, egres: []"))
    assert code == 2 and "spec.egres" in err


def test_policy_names_need_no_tier_prefix() -> None:
    # Since Calico v3.32 (projectcalico/calico#11232) a tiered policy's name is free.
    sc = load_scenario(BASE + """\
tiers: [{name: security, order: 100}]
policies:
  - apiVersion: projectcalico.org/v3
    kind: GlobalNetworkPolicy
    metadata: {name: block-db}
    spec: {tier: security, selector: all()}
  - apiVersion: projectcalico.org/v3
    kind: GlobalNetworkPolicy
    metadata: {name: security.block-db}
    spec: {tier: security, selector: all()}
""")
    assert {k[2] for k in sc.stages[0].cluster.policies} == {"block-db", "security.block-db"}


def test_delete_rules() -> None:
    both = BASE + """\
policies:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: p, namespace: x}
    spec: {podSelector: {}}
  - apiVersion: projectcalico.org/v3
    kind: NetworkPolicy
    metadata: {name: p, namespace: x}
    spec: {selector: all()}
"""
    with pytest.raises(ScenarioError, match="say which with apiVersion"):
        load_scenario(both + "steps:\n  - delete: [{kind: NetworkPolicy, namespace: x, name: p}]\n")
    sc = load_scenario(both + "steps:\n  - delete: [{kind: NetworkPolicy, namespace: x, name: p, "
                       "apiVersion: projectcalico.org/v3}]\n")
    assert list(sc.stages[1].cluster.policies) == [("KubernetesNetworkPolicy", "x", "p")]
    # Deleting a namespace deletes its pods and policies.
    sc = load_scenario(both + "steps:\n  - delete: [{kind: Namespace, name: x}]\n")
    assert not sc.stages[1].cluster.pods and not sc.stages[1].cluster.policies
    # A tier with policies cannot go.
    with pytest.raises(ScenarioError, match="still has policies"):
        load_scenario(BASE + """\
tiers: [{name: t, order: 1}]
policies:
  - {apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: g}, spec: {tier: t}}
steps:
  - delete: [{kind: Tier, name: t}]
""")


def test_pod_relabel_is_an_ip_set_delta() -> None:
    sc = load_scenario(BASE + """\
  - {name: c, namespace: x, labels: {pod: c}, ips: [10.65.0.12]}
policies:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: b-from-a, namespace: x}
    spec:
      podSelector: {matchLabels: {pod: b}}
      ingress: [{from: [{podSelector: {matchLabels: {pod: a}}}]}]
probes:
  - {from: x/c, to: x/b, port: 80, expect: deny}
steps:
  - apply: [{kind: Pod, name: c, namespace: x, labels: {pod: a}, ips: [10.65.0.12]}]
    probes: [{from: x/c, to: x/b, port: 80, expect: allow}]
  - apply: [{kind: Pod, name: c, namespace: x, labels: {pod: c}, ips: [10.65.0.12]}]
    probes: [{from: x/c, to: x/b, port: 80, expect: deny}]
""")
    result = replay_mod.replay(sc)
    assert result.ok, replay_mod.format_result(result)
    start, step1, step2 = result.streams
    assert start.counts["in_sync"] == 1 and start.first_seq == 0
    assert step1.counts.get("ipset_delta_update") == 1
    assert step2.counts.get("ipset_delta_update") == 1
    assert step1.first_seq == start.total and step2.first_seq == start.total + step1.total
    # c's own endpoint is re-sent too: its labels changed.
    assert step1.counts.get("workload_endpoint_update") == 1


def test_a_model_problem_fails_the_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    real = replay_mod.apply_message

    def broken(state: object, msg: object) -> Outcome:
        outcome = real(state, msg)  # type: ignore[arg-type]
        if outcome.kind == "active_profile_update":
            return Outcome(outcome.kind, outcome.obj, problem="simulated content error")
        return outcome

    monkeypatch.setattr(replay_mod, "apply_message", broken)
    code, out, _ = run(BASE + "probes:\n  - {from: x/a, to: x/b, port: 80, expect: allow}\n")
    assert code == 1
    assert "REPLAY PROBLEM: start: message seq" in out and "simulated content error" in out


def test_path_or_text() -> None:
    assert load_scenario(SCENARIOS[0]).source == str(SCENARIOS[0])
    assert load_scenario(str(SCENARIOS[0])).source == str(SCENARIOS[0])
    assert load_scenario(BASE).source == "<text>"
    assert loader_mod.DEFAULT_NODE == "node-1"
    assert os.path.exists(DEMO)


def test_workload_to_its_own_host_follows_default_endpoint_to_host_action() -> None:
    # Felix's DefaultEndpointToHostAction defaults to Drop; the host reaching a local pod is never
    # policed by Calico (kubelet probes).
    probes = """\
probes:
  - {from: x/a, to: 192.168.0.11, port: 10250, expect: deny}
  - {from: 192.168.0.11, to: x/b, port: 80, expect: allow}
"""
    assert run(BASE + probes)[0] == 0
    code, out, _ = run("config: {DefaultEndpointToHostAction: Accept}\n" + BASE + probes)
    assert code == 1 and "FAILED probes[0]" in out
    assert run("config: {DefaultEndpointToHostAction: Accept}\n" + BASE
               + probes.replace("expect: deny", "expect: allow"))[0] == 0


def test_log_rules_past_the_first_deny_are_not_reported() -> None:
    sc = load_scenario(next(p for p in SCENARIOS if p.stem == "calico-order-staged-log"))
    result = replay_mod.replay(sc)
    denied_at_egress = next(r for r in result.results
                            if r.probe.src.text == "app/good" and r.probe.port == 22)
    assert denied_at_egress.why == "egress: tier default, app/good-egress rule 0: deny"
    bad = next(r for r in result.results if r.probe.src.text == "app/bad" and r.probe.port == 80)
    assert bad.why.endswith("[logged by 2 log rules]")


# ---------------------------------------------------------------------------------------------
# Where VPP sends a probe (expectVia / expectSource, this project's extension of the format).
# ---------------------------------------------------------------------------------------------

ROUTED = """\
ipPools:
  - {cidr: 10.65.0.0/16, natOutgoing: true, ipipMode: Always, vxlanMode: Never}
nodes:
  - {name: node-1, ip: 192.168.0.11, podCIDR: 10.65.1.0/26}
  - {name: node-2, ip: 192.168.0.12, podCIDR: 10.65.2.0/26}
namespaces:
  - {name: x}
pods:
  - {name: a, namespace: x, ips: [10.65.1.10]}
  - {name: c, namespace: x, ips: [10.65.2.10], node: node-2}
"""


def test_a_path_expectation_that_fails_names_the_probe_and_what_happened() -> None:
    code, out, _ = run(ROUTED + """\
probes:
  - {from: x/a, to: x/c, port: 80, expectVia: node-2, expectSource: node}
  - {from: x/a, to: 8.8.8.8, port: 80, expectVia: uplink, expectSource: own}
""")
    assert code == 1, out
    assert (
        "FAILED probes[0] (x/a -> x/c tcp/80): sent via ipip:node-2, expected node-2; "
        "leaves with source own, expected node" in out
    )
    assert "FAILED probes[1] (x/a -> 8.8.8.8 tcp/80): leaves with source node, expected own" in out


def test_a_path_expectation_needs_vpp_to_forward_the_probe() -> None:
    text = ROUTED + "probes:\n  - {from: x/a, to: x/c, port: 80, expectVia: 'ipip:node-2'}\n"
    assert run(text)[0] == 0
    code, out, _ = run(text, vpp="oracle")
    assert code == 1 and "need VPP to forward the probe" in out
    denied = ROUTED + """\
policies:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: deny, namespace: x}
    spec: {podSelector: {}, policyTypes: [Egress]}
probes:
  - {from: x/a, to: x/c, port: 80, expectVia: 'ipip:node-2'}
"""
    code, out, _ = run(denied)
    assert code == 1 and "VPP dropped it, so it is not forwarded" in out


@pytest.mark.parametrize(
    ("probe", "message"),
    [
        ("expectVia: node-9", "probes[0].expectVia: 'node-9': expected local, uplink, a node's name"),
        ("expectVia: 'vxlan:uplink'", "probes[0].expectVia: 'vxlan:uplink': a tunnel goes to a node"),
        ("expectSource: somewhere", "probes[0].expectSource: 'somewhere': expected own, node or an IP"),
        ("expect: deny, expectVia: local", "probes[0]: expectVia/expectSource describe a forwarded packet"),
    ],
)
def test_bad_path_expectations_are_errors_naming_the_field(probe: str, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(ROUTED + f"probes:\n  - {{from: x/a, to: x/c, port: 80, {probe}}}\n")
    assert message in str(info.value)


def test_tunnel_addresses_stay_put_when_a_later_pod_takes_the_first_block_address() -> None:
    # IPAM handed node-2's tunnel address out before any step: a pod that a later step adds
    # cannot have had it, so the tunnel address avoids every stage's pods and the VTEP stays.
    scenario = load_scenario(textwrap.dedent("""\
        ipPools: [{cidr: 10.65.0.0/16, vxlanMode: Always}]
        nodes:
          - {name: node-1, ip: 192.168.0.11/24, podCIDR: 10.65.1.0/26}
          - {name: node-2, ip: 192.168.0.12/24, podCIDR: 10.65.2.0/26}
        namespaces: [{name: x}]
        pods: [{name: a, namespace: x, ips: [10.65.1.10]}]
        steps:
          - apply: [{kind: Pod, name: b, namespace: x, ips: [10.65.2.0], node: node-2}]
        """))
    first, later = (scenario.calc(stage) for stage in scenario.stages)
    assert first.vteps["node-2"].ipv4_addr == "10.65.2.1"
    assert later.vteps == first.vteps
