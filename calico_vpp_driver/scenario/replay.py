"""Replay a scenario through the driver's own path and judge every probe with the policy oracle.

For a loaded `Scenario` (`loader.load_scenario`):

1. Felix's calculation for the start (`FelixCalc`) renders the stream a fresh Felix sends
   (``startup_stream``); every message goes through `felix.decode.apply_message` into one
   `DesiredState`, exactly as the driver applies Felix's stream.  A message the model stores with
   a content problem (or ignores) is a failure of the replay: the calculation and the decoder
   disagree.
2. The probes of the start are judged by `policy.verdict.connection_verdict` on that state, with
   the config the driver would build from Felix's ``ConfigUpdate`` (`config.load`).
3. For each step: the new cluster's calculation, ``diff_stream(old, new, next_seq)`` applied to
   the same state, then that step's probes.

A probe's sides: a local pod is its workload endpoint ``(k8s, <ns>/<pod>, eth0)``; the local
node's own address is ``LOCAL_HOST``; a remote pod or any other address is outside the node
(``None``), so only the local side's policy applies.  The source port of TCP/UDP/SCTP probes is
`EPHEMERAL_PORT`.

With a VPP (`--vpp sim`, the default, or the path of a real VPP's API socket), the driver's own
`VppDataplane` programs it after each stage, exactly as after Felix's InSync and each batch;
the local pods' interfaces are created the way the CNI plugin would (`sim.node.SimNode.add_pod`),
and each probe between pods and the outside is judged by VPP itself (the simulator's packet
model on what the driver programmed). Probes to or from the node itself are judged by the oracle
alone (the host interface is not modelled yet), and the table says which judged each probe. The
oracle judges every probe too: a probe where VPP and the oracle disagree is a replay failure.
With `--vpp oracle` only the oracle judges.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TextIO

from .. import config as config_mod
from ..felix import felixbackend_pb2 as pb
from ..felix.decode import apply_message
from ..felix.status import Health, StatusBoard
from ..model.state import DesiredState
from ..model.types import WorkloadEndpointID
from ..policy.verdict import LOCAL_HOST, Packet, Side, Verdict, connection_verdict
from ..sim.node import SimNode
from ..sim.packet import Egress
from .calc import FelixCalc, diff_stream
from .loader import Probe, ProbeEnd, Scenario, load_scenario
from .resources import ScenarioError

__all__ = [
    "EPHEMERAL_PORT",
    "ProbeResult",
    "ReplayResult",
    "StreamSummary",
    "check_vpp_target",
    "format_result",
    "replay",
    "run",
]

EPHEMERAL_PORT = 40000
BACKENDS = ("auto", "npol", "acl")

_PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132, "ICMP": 1, "ICMPv6": 58}
_RULE_ID = re.compile(r" \(id [^)]*\)")


@dataclass(frozen=True)
class ProbeResult:
    stage: str
    probe: Probe
    packet: Packet
    verdict: Verdict  # the oracle's
    vpp_allow: bool | None = None  # VPP's verdict; None when VPP did not judge this probe
    vpp_trace: tuple[str, ...] = ()
    path: str | None = None  # how VPP sent it on (see Probe.expect_via), when it did
    source: str | None = None  # the source it left with (see Probe.expect_source), when it did

    @property
    def judged_by(self) -> str:
        return "oracle" if self.vpp_allow is None else "vpp"

    @property
    def disagrees(self) -> bool:
        return self.vpp_allow is not None and self.vpp_allow != self.verdict.allow

    @property
    def actual(self) -> str:
        allow = self.verdict.allow if self.vpp_allow is None else self.vpp_allow
        return "allow" if allow else "deny"

    @property
    def ok(self) -> bool | None:
        """None when the probe has no expectation (and VPP agrees with the oracle)."""
        if self.disagrees:
            return False
        if self.path_problem:
            return False
        if self.probe.expect is None and not (self.probe.expect_via or self.probe.expect_source):
            return None
        return self.probe.expect in (None, self.actual)

    @property
    def path_problem(self) -> str:
        """What contradicts the probe's expectVia/expectSource ("" when nothing does)."""
        p = self.probe
        if not (p.expect_via or p.expect_source):
            return ""
        if self.vpp_allow is None:
            return "expectVia/expectSource need VPP to forward the probe (--vpp sim, not to or from the node)"
        if not self.vpp_allow:
            return "VPP dropped it, so it is not forwarded"
        wrong = []
        if p.expect_via and p.expect_via != self.path:
            wrong.append(f"sent via {self.path}, expected {p.expect_via}")
        if p.expect_source and p.expect_source != self.source:
            wrong.append(f"leaves with source {self.source}, expected {p.expect_source}")
        return "; ".join(wrong)

    @property
    def why(self) -> str:
        """What decided, per policed side (egress of the sender, ingress of the receiver)."""
        v = self.verdict
        sides = []
        if self.probe.src.endpoint_key is not None:
            sides.append("egress")
        if self.probe.dst.endpoint_key is not None:
            sides.append("ingress")
        steps = v.steps or (v,)
        logged: tuple[str, ...] = v.logged
        if sides and len(steps) == len(sides):
            parts = []
            logged = ()
            for side, step in zip(sides, steps, strict=True):
                parts.append(f"{side}: {_short(step)}")
                logged += step.logged
                if not step.allow:
                    break  # the first deny on the path decides; the packet goes no further
            text = "; ".join(parts)
        else:
            text = _short(v)
        if logged:
            text += f" [logged by {len(logged)} log rule{'s' if len(logged) > 1 else ''}]"
        if v.notes:
            text += " [" + "; ".join(v.notes) + "]"
        return text


def _short(v: Verdict) -> str:
    """One endpoint's verdict in a few words: which tier/policy rule, profile or default decided."""
    action = "allow" if v.allow else "deny"
    if v.decided_by == "rule" and v.policy is not None:
        ns = f"{v.policy.namespace}/" if v.policy.namespace else ""
        return f"tier {v.tier}, {ns}{v.policy.name} rule {v.rule_index}: {action}"
    if v.decided_by == "profile-rule":
        return f"profile {v.profile}: {action}"
    if v.decided_by == "end-of-tier":
        return f"end of tier {v.tier}: deny"
    return _RULE_ID.sub("", v.reason)


@dataclass(frozen=True)
class StreamSummary:
    stage: str
    first_seq: int
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class ReplayResult:
    scenario: Scenario
    results: list[ProbeResult] = field(default_factory=list)
    streams: list[StreamSummary] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the replay itself went wrong
    backend: str = ""  # the policy backend VPP was programmed with ("" = oracle only)

    @property
    def failures(self) -> list[ProbeResult]:
        return [r for r in self.results if r.ok is False]

    @property
    def ok(self) -> bool:
        return not self.failures and not self.problems


# ---------------------------------------------------------------------------------------------
# Replay.
# ---------------------------------------------------------------------------------------------


def _side(end: ProbeEnd) -> Side:
    key = end.endpoint_key
    if key is not None:
        return WorkloadEndpointID(*key)
    if end.host:
        return LOCAL_HOST
    return None


def probe_packet(probe: Probe) -> Packet:
    """The first packet of the probe's connection."""
    ports = probe.port is not None
    return Packet(
        src=probe.src.ip,  # type: ignore[arg-type]  # Packet parses strings
        dst=probe.dst.ip,  # type: ignore[arg-type]
        protocol=_PROTOCOL_NUMBERS[probe.protocol],
        src_port=EPHEMERAL_PORT if ports else None,
        dst_port=probe.port,
        icmp_type=probe.icmp_type,
        icmp_code=probe.icmp_code,
    )


def _feed(state: DesiredState, msgs: Iterable[pb.ToDataplane], stage: str, out: ReplayResult) -> None:
    msgs = list(msgs)
    counts: Counter[str] = Counter()
    for msg in msgs:
        outcome = apply_message(state, msg)
        counts[msg.WhichOneof("payload") or "unknown"] += 1
        if outcome.problem or outcome.ignored:
            what = outcome.problem or f"ignored: {outcome.ignored}"
            out.problems.append(
                f"{stage}: message seq {msg.sequence_number} {outcome.kind} {outcome.obj}: {what}"
            )
    first = msgs[0].sequence_number if msgs else 0
    out.streams.append(StreamSummary(stage, first, dict(counts)))


def _config(state: DesiredState, stage: str, out: ReplayResult) -> config_mod.Config:
    cfg, problems = config_mod.load(state.raw_config, environ={})
    out.problems.extend(f"{stage}: {p}" for p in problems)
    return cfg


def replay(scenario: Scenario, *, vpp: str = "sim", backend: str = "auto") -> ReplayResult:
    """Run the scenario; raises `ScenarioError` only for problems `load_scenario` lets through."""
    out = ReplayResult(scenario)
    state = DesiredState()
    old: FelixCalc | None = None
    seq = 0
    node = None if vpp == "oracle" else _start_node(scenario, vpp, backend)
    board = StatusBoard()
    try:
        for stage in scenario.stages:
            new = scenario.calc(stage)
            msgs = new.startup_stream() if old is None else diff_stream(old, new, seq)
            _feed(state, msgs, stage.label, out)
            seq += len(msgs)
            if old is None and not state.in_sync:
                out.problems.append("start: the startup stream did not end in InSync")
            cfg = _config(state, stage.label, out)
            if node is not None:
                _program(node, state, cfg, board, stage.label, out)
            for probe in stage.probes:
                packet = probe_packet(probe)
                verdict = connection_verdict(state, cfg, _side(probe.src), _side(probe.dst), packet)
                vpp_allow, trace, egress = _vpp_verdict(node, probe, packet)
                path, source = _path(scenario, node, probe, egress) if node and egress else (None, None)
                out.results.append(
                    ProbeResult(stage.label, probe, packet, verdict, vpp_allow, tuple(trace), path, source)
                )
            old = new
    finally:
        if node is not None:
            node.close()
    if node is not None:
        out.backend = node.dataplane.backend
    return out


# The simulated uplink's addresses when the scenario does not give the local node's.
_SIM_UPLINK = ("172.31.0.1/24", "fd10::1/64")


def _start_node(scenario: Scenario, vpp: str, backend: str) -> SimNode:
    if vpp != "sim":
        raise ScenarioError(
            f"--vpp {vpp}: replay judges each probe by tracing it through the simulator's tables, "
            "which a real VPP cannot be asked to do; use --vpp sim or --vpp oracle (the real-VPP "
            "tests send real traffic instead)"
        )
    v4, v6 = _uplink_addresses(scenario)
    return SimNode(backend=backend, node_ip=v4, node_ip6=v6)


def _uplink_addresses(scenario: Scenario) -> tuple[str, str]:
    """The simulated uplink carries the local node's own address (tunnels take it as their outer
    source and borrow it to receive); a bare address is given the usual /24 or /64."""
    v4, v6 = _SIM_UPLINK
    me = next((n for n in scenario.nodes if n.name == scenario.node and n.ip), None)
    try:
        iface = ipaddress.ip_interface(me.ip) if me is not None else None
    except ValueError:
        iface = None  # the calculation reports it, naming the node
    if me is None or iface is None:
        return v4, v6
    if "/" not in me.ip:
        iface = ipaddress.ip_interface(f"{iface.ip}/{24 if iface.version == 4 else 64}")
    return (str(iface), v6) if iface.version == 4 else (v4, str(iface))


def _program(
    node: SimNode,
    state: DesiredState,
    cfg: config_mod.Config,
    board: StatusBoard,
    stage: str,
    out: ReplayResult,
) -> None:
    """Create the interfaces of new local pods (as CNI would), then let the dataplane apply."""
    for ep in state.workload_endpoints.values():
        if ep.name not in node.pods:
            node.add_pod(ep.name, [n.network_address for n in ep.ipv4_nets + ep.ipv6_nets])
    node.dataplane.configure(replace(cfg, vpp_api_socket=node.socket, vpp_state_dir=node.state_dir))
    node.dataplane.apply(state, state.take_dirty(), board)
    for key in state.workload_endpoints:
        health, reason = board.health(key)
        if health is not Health.UP:
            out.problems.append(f"{stage}: endpoint {key} is {health.felix_name} in VPP: {reason}")
    out.problems.extend(f"{stage}: VPP simulator: {e}" for e in node.server.errors)
    node.server.errors.clear()


def _vpp_verdict(
    node: SimNode | None, probe: Probe, packet: Packet
) -> tuple[bool | None, list[str], Egress | None]:
    """VPP's verdict for a probe between local pods and the outside (None: not judged by VPP),
    its trace, and how VPP sent the packet on if it did."""
    if node is None or probe.dst.host or (probe.src.host and probe.dst.endpoint_key is None):
        # Packets to the node itself go to the Linux host, which the simulator does not have.
        # The node's own packets to its pods are sent in by the uplink: without a host tap, the
        # uplink carries the node's address (the pods' ingress programs judge by source).
        return None, [], None
    src_pod = None
    if probe.src.endpoint_key is not None:
        src_pod = _pod_name(node, probe.src.ip)
        if src_pod is None:
            return None, [], None
    if probe.dst.floating_ip is not None:  # VPP sees the address it was sent to
        packet = replace(packet, dst=ipaddress.ip_address(probe.dst.floating_ip))
    outcome = node.forward(packet, src_pod)
    return outcome.verdict == "allow", outcome.trace, outcome.egress


def _path(scenario: Scenario, node: SimNode, probe: Probe, egress: Egress) -> tuple[str, str]:
    """The egress in the probe expectations' terms: (expectVia form, expectSource form)."""
    node_names = {ipaddress.ip_interface(n.ip).ip: n.name for n in scenario.nodes}
    if any(pod.sw_if_index == egress.sw_if_index for pod in node.pods.values()):
        via = "local"
    elif egress.via is not None and egress.via in node_names:
        via = node_names[egress.via]
        via = f"{egress.encap}:{via}" if egress.encap else via
    elif egress.encap is not None:
        via = f"{egress.encap}:{egress.via}"  # a tunnel to an address that is no node's
    else:
        via = "uplink"
    if str(egress.source) == probe.src.ip:
        source = "own"
    elif node_names.get(egress.source) == scenario.node:
        source = "node"
    else:
        source = str(egress.source)
    return via, source


def _pod_name(node: SimNode, ip: str) -> str | None:
    addr = ipaddress.ip_address(ip)
    for pod in node.pods.values():
        if addr in pod.addresses:
            return pod.name
    return None


# ---------------------------------------------------------------------------------------------
# Output.
# ---------------------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = []
    for row in (headers, *rows):
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return lines


def _end(end: ProbeEnd, pod_nodes: dict[str, str], node_ips: dict[str, str]) -> str:
    """A probe side for the table: remote pods carry their node, addresses say what they are."""
    if end.pod is not None:
        text = end.text if end.text == end.pod else f"{end.text} ({end.pod})"
        return text if end.local else f"{text} @{pod_nodes.get(end.pod, 'remote')}"
    if end.host:
        return f"{end.text} (this node)"
    if end.ip in node_ips:
        return f"{end.text} (node {node_ips[end.ip]})"
    return f"{end.text} (outside)"


def format_result(
    result: ReplayResult, *, vpp: str = "sim", backend: str = "auto", name: str | None = None
) -> str:
    """The probe table, then the Felix messages per stage, then the verdict on the expectations."""
    sc = result.scenario
    lines = [f"scenario {name or sc.source}" + (f": {sc.description}" if sc.description else "")]
    if vpp == "oracle":
        judge = "the policy oracle on the driver's model (--vpp oracle: no VPP programmed)"
    else:
        judge = (
            f"VPP ({'the simulator' if vpp == 'sim' else vpp}, programmed by the driver with the "
            f"{result.backend or backend} backend), checked against the policy oracle; probes to "
            "the node itself: the oracle alone"
        )
    lines.append(f"node {sc.node}; probes judged by {judge}")
    for stage in sc.stages[1:]:
        if stage.description:
            lines.append(f"  {stage.label}: {stage.description}")
    lines.append("")
    rows = []
    pods = {key: pod.node for stage in sc.stages for key, pod in stage.cluster.pods.items()}
    node_ips = {str(ipaddress.ip_interface(n.ip).ip): n.name for n in sc.nodes}
    for i, r in enumerate(result.results, 1):
        p = r.probe
        mark = {True: "ok", False: "FAIL", None: "-"}[r.ok]
        step = "start" if r.stage == "start" else r.stage.removeprefix("step ")
        src, dst = _end(p.src, pods, node_ips), _end(p.dst, pods, node_ips)
        why = r.why
        if r.path:
            why = f"{why} [via {r.path}, source {r.source}]"
        if r.disagrees:
            why = f"VPP {r.actual} but the oracle {'allows' if r.verdict.allow else 'denies'}: {why}"
        rows.append(
            [str(i), step, p.name, src, dst, p.service, p.expect or "-", r.actual, r.judged_by, mark, why]
        )
    headers = ["#", "step", "probe", "from", "to", "proto/port", "expect", "actual", "by", "ok", "why"]
    if not any(p.name for p in sc.probes):
        headers = headers[:2] + headers[3:]
        rows = [row[:2] + row[3:] for row in rows]
    lines += _table(headers, rows)
    lines.append("")
    lines.append("Felix messages fed to the driver's model (apply_message), per stage:")
    for s in result.streams:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(s.counts.items(), key=lambda kv: (-kv[1], kv[0])))
        last = s.first_seq + s.total - 1
        if s.total:
            lines.append(f"  {s.stage:<7} {s.total:>4} (seq {s.first_seq}-{last}): {counts}")
        else:
            lines.append(f"  {s.stage:<7} {s.total:>4} (nothing changed for this node)")
    lines.append("")
    checked = [r for r in result.results if r.ok is not None]
    for problem in result.problems:
        lines.append(f"REPLAY PROBLEM: {problem}")
    for r in result.failures:
        if r.disagrees:
            lines.append(
                f"FAILED {r.probe.label}: VPP says {r.actual}, the oracle the opposite; VPP's trace:"
            )
            lines.extend(f"    {t}" for t in r.vpp_trace)
        elif r.path_problem:
            lines.append(f"FAILED {r.probe.label}: {r.path_problem}")
        else:
            lines.append(f"FAILED {r.probe.label}: expected {r.probe.expect}, got {r.actual} ({r.why})")
    if result.ok:
        lines.append(f"OK: {len(checked)} of {len(result.results)} probes had an expectation; all held")
    else:
        lines.append(
            f"FAILED: {len(result.failures)} of {len(checked)} expectations did not hold"
            + (f"; {len(result.problems)} replay problem(s)" if result.problems else "")
        )
    return "\n".join(lines) + "\n"


def check_vpp_target(vpp: str) -> str | None:
    """``--vpp``: ``sim``, ``oracle`` or the path of VPP's API socket; a message if none."""
    if vpp in ("sim", "oracle"):
        return None
    try:
        mode = os.stat(vpp).st_mode
    except OSError as exc:
        return f"--vpp {vpp}: not 'sim' and not a VPP API socket ({exc.strerror})"
    if not stat.S_ISSOCK(mode):
        return f"--vpp {vpp}: not 'sim' and not a unix socket"
    return None


def run(
    path_or_text: str | os.PathLike[str],
    *,
    vpp: str = "sim",
    backend: str = "auto",
    out: TextIO | None = None,
    err: TextIO | None = None,
    name: str | None = None,
) -> int:
    """The ``replay`` command: 0 if every expectation holds, 1 if not, 2 if the scenario is unusable."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    problem = check_vpp_target(vpp)
    if problem is None and backend not in BACKENDS:
        problem = f"--backend {backend}: must be one of {', '.join(BACKENDS)}"
    if problem is not None:
        print(f"error: {problem}", file=err)
        return 2
    try:
        scenario = load_scenario(path_or_text)
        result = replay(scenario, vpp=vpp, backend=backend)
    except ScenarioError as exc:
        print(f"error: {exc}", file=err)
        return 2
    out.write(format_result(result, vpp=vpp, backend=backend, name=name))
    out.flush()
    return 0 if result.ok else 1
