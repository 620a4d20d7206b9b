"""Tests for calico_vpp_driver.policy.host_program: host endpoint policy as programs.

Differential: each of a host endpoint's four programs decides every packet exactly as the
oracle (`host_endpoint_verdict`, forwarded or not), on states drawn by `policy_cases()` with
a host endpoint whose stages take their tiers from the case's endpoints, and failsafe lists
drawn so that packets hit them (with and without CIDRs, unusable entries, responses). The
workload-to-host program is checked against `workload_to_host_verdict`. Table tests pin the
shapes: failsafes before everything, skip rules, error programs.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from dataclasses import dataclass, replace
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from policy_strategies import POLICY_SETTINGS, PolicyCase, policy_cases, rule_str

from calico_vpp_driver.config import Config, ProtoPort
from calico_vpp_driver.model.state import DesiredState
from calico_vpp_driver.model.types import (
    HostEndpoint,
    HostEndpointID,
    Policy,
    PolicyID,
    PortRange,
    Profile,
    Rule,
    TierInfo,
    WorkloadEndpointID,
)
from calico_vpp_driver.policy.host_program import (
    HOST_PATHS,
    PATH_DIRECTION,
    HostPath,
    failsafe_block,
    host_path_program,
    host_programs,
    stage_blocks,
    workload_to_host_program,
)
from calico_vpp_driver.policy.program import Program, program_allows
from calico_vpp_driver.policy.verdict import (
    PROTO_ICMPV6,
    WORKLOAD_TO_HOST_ICMPV6_TYPES,
    Packet,
    endpoint_verdict,
    host_endpoint_verdict,
    workload_to_host_verdict,
)

HEP = HostEndpointID("hep-eth0")
HOST_EXAMPLES = 500

# Failsafe entries over the strategies' pools: ports packets carry (PORTS), CIDRs of both
# families, a CIDR with host bits, one Felix skips (unparsable), one of an unknown protocol.
_FAILSAFE_POOL = (
    ProtoPort("tcp", 22),
    ProtoPort("udp", 53),
    ProtoPort("tcp", 80, "10.0.0.0/30"),
    ProtoPort("tcp", 443, "fd00::/126"),
    ProtoPort("udp", 80, "10.1.0.1/24"),
    ProtoPort("tcp", 81, "bogus"),
    ProtoPort("sctp", 22),
    ProtoPort("udp", 22, "192.168.0.0/30"),
    ProtoPort("tcp", 0),
)
_ACTIONS = ("DROP", "ACCEPT", "RETURN", "REJECT", "weird")


@dataclass
class HostCase:
    base: PolicyCase
    state: DesiredState
    config: Config
    packets: list[Packet]

    def __repr__(self) -> str:
        ep = self.state.host_endpoints[HEP]
        lines = [self.base.describe(), f"host endpoint error={ep.error!r} profiles={ep.profile_ids}"]
        for stage in ("tiers", "untracked_tiers", "pre_dnat_tiers", "forward_tiers"):
            for t in getattr(ep, stage):
                lines.append(
                    f"  {stage} {t.name} ({t.default_action}) in={[str(p) for p in t.ingress_policies]} "
                    f"out={[str(p) for p in t.egress_policies]}"
                )
        lines.append(f"failsafe in={self.config.failsafe_inbound_host_ports}")
        lines.append(f"failsafe out={self.config.failsafe_outbound_host_ports}")
        lines.extend(f"host packet {p}" for p in self.packets)
        return "HostCase(\n" + "\n".join(lines) + "\n)"


def _failsafe_packets(rng: Random, config: Config, count: int) -> list[Packet]:
    """Packets meeting a failsafe entry (as destination or source port), inside or outside
    its CIDR, of either family."""
    entries = config.failsafe_inbound_host_ports + config.failsafe_outbound_host_ports
    out = []
    addrs = {4: ["10.0.0.1", "10.1.0.2", "192.168.0.1", "10.0.0.6"], 6: ["fd00::1", "fd01::1", "fd00::3"]}
    for _ in range(count):
        if not entries:
            break
        e = rng.choice(entries)
        version = rng.choice((4, 6))
        src, dst = rng.choice(addrs[version]), rng.choice(addrs[version])
        proto = {"tcp": 6, "udp": 17, "sctp": 132}.get(e.protocol, 6)
        other = rng.choice((22, 53, 80, 40000))
        sport, dport = (other, e.port) if rng.random() < 0.6 else (e.port, other)
        out.append(Packet(ipaddress.ip_address(src), ipaddress.ip_address(dst), proto, sport, dport))
    return out


@st.composite
def host_cases(draw: st.DrawFn) -> HostCase:
    """A policy case plus one host endpoint (stages' tiers taken from the case's workload
    endpoints, sometimes none), failsafe lists and DefaultEndpointToHostAction."""
    base = draw(policy_cases())
    rng = Random(draw(st.integers(0, 2**32 - 1)))
    eps = [base.state.workload_endpoints[k] for k in base.endpoints]

    def tiers() -> tuple[TierInfo, ...]:
        return rng.choice(eps).tiers if rng.random() < 0.75 else ()

    source = rng.choice(eps)
    hep = HostEndpoint(
        HEP,
        name="eth0",
        profile_ids=source.profile_ids if rng.random() < 0.8 else (),
        tiers=tiers(),
        untracked_tiers=tiers(),
        pre_dnat_tiers=tiers(),
        forward_tiers=tiers(),
        error=source.error,
    )
    state = base.state
    state.update_host_endpoint(hep)
    config = replace(
        base.config,
        failsafe_inbound_host_ports=tuple(rng.sample(_FAILSAFE_POOL, rng.randint(0, 4))),
        failsafe_outbound_host_ports=tuple(rng.sample(_FAILSAFE_POOL, rng.randint(0, 4))),
        default_endpoint_to_host_action=rng.choice(_ACTIONS),
    )
    packets = list(base.packets) + _failsafe_packets(rng, config, rng.randint(0, 8))
    return HostCase(base, state, config, packets)


def _show(program: Program) -> str:
    lines = [f"final={program.final} denied_because={program.denied_because}"]
    for block in program.blocks:
        lines.append(f"  block {block.key[0]} {block.key[1:2]} end={block.end}")
        lines.extend(f"    {rule_str(rule)}" for rule in block.rules)
    return "\n".join(lines)


def check_host_case(case: HostCase) -> Counter[str]:
    seen: Counter[str] = Counter()
    programs = host_programs(case.state, case.config, HEP)
    for path in HOST_PATHS:
        direction, forwarded = PATH_DIRECTION[path]
        program = programs.of(path)
        assert program == host_path_program(case.state, case.config, HEP, path)
        for packet in case.packets:
            expected = host_endpoint_verdict(
                case.state, case.config, HEP, direction, packet, forwarded=forwarded
            )
            got = program_allows(case.state, program, packet)
            assert got == expected.allow, (
                f"{path} {packet}: program {'allows' if got else 'denies'}, oracle "
                f"{'allows' if expected.allow else 'denies'} ({expected.reason})\n{_show(program)}"
            )
            seen[
                f"{path}:{expected.stage or expected.decided_by}:{'allow' if expected.allow else 'deny'}"
            ] += 1
    # Workload to host: the workload's egress (judged on its own interface), then this program.
    w2h = workload_to_host_program(case.config)
    for key in case.base.endpoints:
        ep = case.state.workload_endpoints[key]
        for packet in case.packets:
            if not any(packet.src in net for net in ep.ipv4_nets + ep.ipv6_nets):
                continue
            expected = workload_to_host_verdict(case.state, case.config, key, packet)
            nd = packet.protocol == PROTO_ICMPV6 and packet.icmp_type in WORKLOAD_TO_HOST_ICMPV6_TYPES
            egress = endpoint_verdict(case.state, case.config, key, "egress", packet).allow
            got = program_allows(case.state, w2h, packet) and (egress or nd)
            assert got == expected.allow, (key, str(packet), expected.reason, _show(w2h))
            seen[f"w2h:{expected.decided_by}:{expected.allow}"] += 1
    return seen


@pytest.mark.long_running
@settings(POLICY_SETTINGS, max_examples=HOST_EXAMPLES)
@given(case=host_cases())
def test_host_programs_decide_as_the_oracle(case: HostCase) -> None:
    check_host_case(case)


def test_host_cases_reach_every_stage_and_outcome() -> None:
    """The strategy is worth its time: every path sees every way of deciding, both ways."""
    seen: Counter[str] = Counter()
    start = time.monotonic()

    @settings(POLICY_SETTINGS, max_examples=200, database=None, derandomize=True)
    @given(case=host_cases())
    def run(case: HostCase) -> None:
        seen.update(check_host_case(case))

    run()
    assert time.monotonic() - start < 60
    for outcome in (
        "to_host:failsafe:allow",
        "to_host:untracked:allow",
        "to_host:untracked:deny",
        "to_host:pre-dnat:allow",
        "to_host:pre-dnat:deny",
        "to_host:normal:allow",
        "to_host:normal:deny",
        "to_host:error:deny",
        "from_host:failsafe:allow",
        "from_host:untracked:deny",
        "from_host:normal:allow",
        "from_host:normal:deny",
        "forward_in:untracked:deny",
        "forward_in:pre-dnat:allow",
        "forward_in:forward:allow",
        "forward_in:forward:deny",
        "forward_in:error:deny",
        "forward_out:forward:allow",
        "forward_out:forward:deny",
        "w2h:endpoint-to-host:True",
        "w2h:endpoint-to-host:False",
    ):
        assert seen[outcome] > 0, (outcome, sorted(seen.items()))


# ---------------------------------------------------------------------------------------------
# Table tests.
# ---------------------------------------------------------------------------------------------

PID = PolicyID("deny-all", "", "GlobalNetworkPolicy")
ALLOW_80 = PolicyID("allow-80", "", "GlobalNetworkPolicy")


def _state(**hep: object) -> DesiredState:
    state = DesiredState()
    state.update_policy(Policy(PID, (Rule(action="deny"),), (Rule(action="deny"),)))
    tcp80 = Rule(action="allow", protocol=6, dst_ports=(PortRange(80, 80),))
    state.update_policy(Policy(ALLOW_80, (tcp80,), (tcp80,)))
    state.update_profile(Profile("allow-all", (Rule(),), (Rule(),)))
    state.update_host_endpoint(HostEndpoint(HEP, name="eth0", **hep))  # type: ignore[arg-type]
    return state


CFG = replace(
    Config(),
    failsafe_inbound_host_ports=(ProtoPort("tcp", 22), ProtoPort("tcp", 179, "10.0.0.0/8")),
    failsafe_outbound_host_ports=(ProtoPort("udp", 53),),
)


def _allows(state: DesiredState, path: HostPath, packet: Packet, config: Config = CFG) -> bool:
    return program_allows(state, host_path_program(state, config, HEP, path), packet)


def test_failsafes_come_first_even_for_a_deny_all_or_broken_policy() -> None:
    deny_all = (TierInfo("default", (PID,), (PID,)),)
    for broken, state in (
        (False, _state(tiers=deny_all, untracked_tiers=deny_all, pre_dnat_tiers=deny_all)),
        (True, _state(error="bad interface name")),
        (True, _state(tiers=(TierInfo("default", (PolicyID("missing", "", "GlobalNetworkPolicy"),)),))),
    ):
        ssh = Packet.tcp("192.0.2.1", "10.0.0.1", 22)
        assert _allows(state, "to_host", ssh)
        assert not _allows(state, "to_host", Packet.tcp("192.0.2.1", "10.0.0.1", 80))
        # 179 only from 10.0.0.0/8.
        assert _allows(state, "to_host", Packet.tcp("10.9.9.9", "10.0.0.1", 179))
        assert not _allows(state, "to_host", Packet.tcp("192.0.2.1", "10.0.0.1", 179))
        assert not _allows(state, "to_host", Packet.tcp("fd00::9", "fd00::1", 179))
        assert _allows(state, "from_host", Packet.udp("10.0.0.1", "192.0.2.53", 53))
        # Forwarded traffic has no failsafes: a broken policy denies it; a failsafe port only
        # skips the untracked and pre-DNAT stages (then no forward tiers: allowed).
        assert _allows(state, "forward_in", ssh) is not broken
        assert not _allows(state, "forward_in", Packet.tcp("192.0.2.1", "10.0.0.1", 23))
        program = host_path_program(state, CFG, HEP, "to_host")
        block = failsafe_block(CFG, "ingress")
        assert block is not None and program.blocks[0] is not None
        assert program.blocks[0].key == block.key


def test_empty_host_endpoint_denies_host_traffic_and_allows_forwarded() -> None:
    state = _state()
    pkt = Packet.tcp("192.0.2.1", "10.0.0.1", 80)
    assert not _allows(state, "to_host", pkt)
    assert not _allows(state, "from_host", pkt)
    assert _allows(state, "forward_in", pkt)
    assert _allows(state, "forward_out", pkt)
    assert host_path_program(state, CFG, HEP, "forward_in") == Program((), "allow")


def test_untracked_allow_is_final_and_failsafe_responses_skip_it() -> None:
    allow80 = (TierInfo("default", (ALLOW_80,), (ALLOW_80,)),)
    deny_all = (TierInfo("default", (PID,), (PID,)),)
    state = _state(untracked_tiers=allow80, tiers=deny_all)
    assert _allows(state, "to_host", Packet.tcp("192.0.2.1", "10.0.0.1", 80))
    assert not _allows(state, "to_host", Packet.tcp("192.0.2.1", "10.0.0.1", 81))
    # Untracked deny-all: a DNS response (source port 53, outbound failsafe) skips it, and the
    # normal tiers (allow-all profile, no tiers) then allow it.
    state = _state(untracked_tiers=deny_all, profile_ids=("allow-all",))
    response = Packet.udp("192.0.2.53", "10.0.0.1", 40000, src_port=53)
    assert _allows(state, "to_host", response)
    assert not _allows(state, "to_host", Packet.udp("192.0.2.53", "10.0.0.1", 40000, src_port=54))
    blocks = stage_blocks(state, CFG, state.host_endpoints[HEP], "untracked", "ingress")
    assert len(blocks) == 1 and blocks[0].end == "next" and blocks[0].rules[0].action == "pass"


def test_forward_tiers_end_of_tier_drop_and_no_profiles() -> None:
    allow80 = (TierInfo("default", (ALLOW_80,), ()),)
    state = _state(forward_tiers=allow80, profile_ids=("allow-all",))
    assert _allows(state, "forward_in", Packet.tcp("192.0.2.1", "10.0.5.5", 80))
    assert not _allows(state, "forward_in", Packet.tcp("192.0.2.1", "10.0.5.5", 81))
    assert _allows(state, "forward_out", Packet.tcp("10.0.5.5", "192.0.2.1", 81))  # no egress policy


def test_pre_dnat_is_skipped_by_inbound_failsafes_on_forwarded_traffic() -> None:
    deny_all = (TierInfo("default", (PID,), ()),)
    state = _state(pre_dnat_tiers=deny_all)
    assert _allows(state, "forward_in", Packet.tcp("192.0.2.1", "10.0.5.5", 22))
    assert not _allows(state, "forward_in", Packet.tcp("192.0.2.1", "10.0.5.5", 23))
    assert stage_blocks(state, CFG, state.host_endpoints[HEP], "pre_dnat", "egress") == ()


def test_workload_to_host_actions() -> None:
    nd = Packet.icmp("fd00::5", "fd10::1", 135)
    ping = Packet.icmp("fd00::5", "fd10::1", 128)
    for action, allows in (
        ("ACCEPT", True),
        ("RETURN", True),
        ("DROP", False),
        ("REJECT", False),
        ("x", False),
    ):
        program = workload_to_host_program(replace(CFG, default_endpoint_to_host_action=action))
        assert program_allows(DesiredState(), program, nd)
        assert program_allows(DesiredState(), program, ping) is allows


def test_unknown_host_endpoint_denies_everything() -> None:
    programs = host_programs(DesiredState(), CFG, HostEndpointID("nope"))
    for path in HOST_PATHS:
        assert programs.of(path).deny_all
    assert programs.problems


def test_identical_tiers_share_blocks_with_workload_programs() -> None:
    from calico_vpp_driver.policy.program import tier_block

    tier = TierInfo("default", (ALLOW_80,), (ALLOW_80,))
    state = _state(tiers=(tier,))
    program = host_path_program(state, CFG, HEP, "to_host")
    assert tier_block(state, tier, "ingress") in program.blocks
    _ = WorkloadEndpointID  # (workload programs use the same tier_block cache)
