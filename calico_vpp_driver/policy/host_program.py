"""Host endpoint policy compiled into backend-neutral `Program`s (pure; see `policy.program`).

A host endpoint's policy is four decisions, one per path a packet can take through the
interface (`policy.verdict.host_endpoint_verdict` is the specification; `vpp/host_policy.py`
says where VPP makes each decision):

* `to_host` (ingress, traffic to the host itself): failsafe-in allows; untracked tiers (*);
  pre-DNAT tiers; normal tiers; profiles; then deny.
* `from_host` (egress, traffic from the host itself): failsafe-out allows; untracked tiers
  (*); normal tiers; profiles; then deny.
* `forward_in` (ingress, forwarded): untracked tiers (**); pre-DNAT tiers (***); forward
  tiers; then allow.
* `forward_out` (egress, forwarded): forward tiers; then allow.

How each Calico stage maps onto blocks (each built from `program.tier_block` /
`program.profile_block`, so the rules are the same interned objects as workload programs'):

* **normal** tiers keep their block (end-of-tier drop unless the tier's default action is
  Pass), then the profiles (`end="next"`), then the program's final deny.
* **untracked** and **pre-DNAT** tiers never end-of-tier drop and have no profiles: their
  blocks are re-made with `end="next"`; an allow or deny in them is final, a pass goes to
  the next tier, falling through goes on to the next stage.
* **forward** tiers keep their end-of-tier drop; there are no profiles and the final is
  allow (no forward tiers at all: everything is allowed).
* **failsafes**: traffic to/from the host itself whose (protocol, destination port, CIDR)
  is a failsafe entry is allowed by a first block, even when the endpoint's policy is in
  error. Felix's raw-table failsafe chain also lets those packets, and "responses" (source
  port in the *other* direction's failsafe list), skip the untracked stage, and its mangle
  chain lets inbound failsafe packets skip pre-DNAT; (*) / (**) / (***) mark the stages
  that start with `pass` rules for exactly those packets (a pass leaves the block, and every
  skipped block starts with the same pass rules, so the packet leaves the whole stage).
  Forwarded traffic is never allowed by a failsafe.
* an endpoint whose policy cannot be evaluated exactly (`DesiredState.endpoint_problems`):
  `to_host`/`from_host` keep only the failsafe block (then deny), `forward_*` deny all;
  an unknown endpoint denies everything.

The workload-to-host decision (`DefaultEndpointToHostAction`, applied after the workload's
own egress policy) is `workload_to_host_program`: the ICMPv6 MLD/RS/NS/NA allows, then the
action as the final verdict. The oracle's `workload_to_host_verdict` is exactly
``icmpv6_nd(p) or (workload egress allows p and program allows p)`` -- the VPP placement
judges the egress part on the pod's interface first, so there the ICMPv6 exception cannot
bypass a workload egress policy that denies it (documented in `vpp/host_policy.py`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from ..config import Config, ProtoPort
from ..model.state import DesiredState
from ..model.types import (
    PROTOCOL_NUMBERS,
    Action,
    HostEndpoint,
    HostEndpointID,
    IcmpMatch,
    PortRange,
    Rule,
    TierInfo,
)
from .program import Block, BlockKey, Program, family_rules, profile_block, tier_block
from .verdict import PROTO_ICMPV6, WORKLOAD_TO_HOST_ICMPV6_TYPES, Direction

__all__ = [
    "HOST_PATHS",
    "PATH_DIRECTION",
    "HostPath",
    "HostPrograms",
    "endpoint_to_host_allows",
    "failsafe_block",
    "host_path_program",
    "host_programs",
    "stage_blocks",
    "workload_to_host_program",
]

HostPath = Literal["to_host", "from_host", "forward_in", "forward_out"]
HOST_PATHS: Final[tuple[HostPath, ...]] = ("to_host", "from_host", "forward_in", "forward_out")
Stage = Literal["untracked", "pre_dnat", "normal", "forward"]

# path -> (direction, forwarded)
PATH_DIRECTION: Final[dict[HostPath, tuple[Direction, bool]]] = {
    "to_host": ("ingress", False),
    "from_host": ("egress", False),
    "forward_in": ("ingress", True),
    "forward_out": ("egress", True),
}


@dataclass(frozen=True, slots=True)
class HostPrograms:
    """The four programs of one host endpoint (see the module docstring)."""

    to_host: Program
    from_host: Program
    forward_in: Program
    forward_out: Program
    # Why the endpoint's policy is in error (failsafes only / deny); empty when it is fine.
    problems: tuple[str, ...] = ()

    def of(self, path: HostPath) -> Program:
        program: Program = getattr(self, path)
        return program


# ------------------------------------------------------------------------------------ failsafes


def _failsafe_rule(entry: ProtoPort, action: Action, port_side: str, net_side: str) -> tuple[Rule, ...]:
    """One failsafe entry as rules (per family when it has a CIDR); () when Felix would skip it
    (unknown protocol, unparsable CIDR)."""
    proto = PROTOCOL_NUMBERS.get(entry.protocol)
    if proto is None or not 0 <= entry.port <= 65535:
        return ()
    nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    if entry.net:
        try:
            nets = (ipaddress.ip_network(entry.net, strict=False),)
        except ValueError:
            return ()
    ports = (PortRange(entry.port, entry.port),)
    rule = Rule(
        action=action,
        protocol=proto,
        src_ports=ports if port_side == "src" else (),
        dst_ports=ports if port_side == "dst" else (),
        src_net=nets if net_side == "src" else (),
        dst_net=nets if net_side == "dst" else (),
    )
    return family_rules(rule)


def _failsafe_rules(
    entries: Iterable[ProtoPort], action: Action, port_side: str, net_side: str
) -> tuple[Rule, ...]:
    out: list[Rule] = []
    for entry in entries:
        for rule in _failsafe_rule(entry, action, port_side, net_side):
            if rule not in out:
                out.append(rule)
    return tuple(out)


def failsafe_block(config: Config, direction: Direction) -> Block | None:
    """Felix's filter failsafe chain for traffic to (ingress) / from (egress) the host: allow
    the failsafe (protocol, destination port); a CIDR restricts the remote side (the source
    inbound, the destination outbound)."""
    if direction == "ingress":
        entries, net_side = config.failsafe_inbound_host_ports, "src"
    else:
        entries, net_side = config.failsafe_outbound_host_ports, "dst"
    rules = _failsafe_rules(entries, "allow", "dst", net_side)
    if not rules:
        return None
    return Block(("host-failsafe", direction, entries), rules, "next")


def _skip_rules(config: Config, direction: Direction, stage: Stage, forwarded: bool) -> tuple[Rule, ...]:
    """`pass` rules for the packets Felix's raw / mangle failsafe chains let skip `stage`.

    Raw (untracked): the direction's own failsafe entries (destination port) and "responses"
    (the other direction's entries as a source port); for traffic to/from the host the first
    kind is already allowed by the failsafe block, so only responses need skipping. Mangle
    (pre-DNAT, ingress only): inbound failsafe entries, relevant to forwarded traffic only."""
    inbound, outbound = config.failsafe_inbound_host_ports, config.failsafe_outbound_host_ports
    own, other = (inbound, outbound) if direction == "ingress" else (outbound, inbound)
    net_side = "src" if direction == "ingress" else "dst"
    rules: list[Rule] = []
    if stage == "untracked":
        if forwarded:
            rules.extend(_failsafe_rules(own, "pass", "dst", net_side))
        rules.extend(_failsafe_rules(other, "pass", "src", net_side))
    elif stage == "pre_dnat" and forwarded:
        rules.extend(_failsafe_rules(own, "pass", "dst", net_side))
    return tuple(dict.fromkeys(rules))


# ------------------------------------------------------------------------------------ stages


def _stage_tiers(ep: HostEndpoint, stage: Stage) -> tuple[TierInfo, ...]:
    if stage == "untracked":
        return ep.untracked_tiers
    if stage == "pre_dnat":
        return ep.pre_dnat_tiers
    if stage == "forward":
        return ep.forward_tiers
    return ep.tiers


def stage_blocks(
    state: DesiredState,
    config: Config,
    ep: HostEndpoint,
    stage: Stage,
    direction: Direction,
    *,
    forwarded: bool = False,
    memo: dict[BlockKey, Block] | None = None,
) -> tuple[Block, ...]:
    """One stage's tier blocks for a direction (no failsafe block, no profiles, no final).

    Untracked / pre-DNAT blocks end in "next" (no end-of-tier drop) and start with the
    failsafe skip rules of that stage; normal and forward tiers keep their end-of-tier drop.
    """
    if stage == "pre_dnat" and direction == "egress":
        return ()
    skip = _skip_rules(config, direction, stage, forwarded) if stage in ("untracked", "pre_dnat") else ()
    out: list[Block] = []
    for tier in _stage_tiers(ep, stage):
        block = tier_block(state, tier, direction, memo)
        if block is None:
            continue
        if stage in ("untracked", "pre_dnat"):
            key: BlockKey = ("host-" + stage, direction, skip, block.key)
            block = Block(key, skip + block.rules, "next")
        out.append(block)
    return tuple(out)


def host_path_program(
    state: DesiredState,
    config: Config,
    key: HostEndpointID,
    path: HostPath,
    problems: list[str] | None = None,
    memo: dict[BlockKey, Block] | None = None,
) -> Program:
    """The program judging one path through a host endpoint's interface (module docstring)."""
    direction, forwarded = PATH_DIRECTION[path]
    ep = state.host_endpoints.get(key)
    if ep is None:
        return Program((), denied_because=(f"unknown host endpoint {key}",))
    if problems is None:
        problems = state.endpoint_problems(key)
    failsafe = None if forwarded else failsafe_block(config, direction)
    head = (failsafe,) if failsafe is not None else ()
    if problems:
        if forwarded:
            return Program((), denied_because=tuple(problems))
        # Failsafes stay open (operators must not be locked out by a broken policy).
        return Program(head, "deny", denied_because=tuple(problems))
    blocks: list[Block] = list(head)
    if not (forwarded and direction == "egress"):
        blocks.extend(stage_blocks(state, config, ep, "untracked", direction, forwarded=forwarded, memo=memo))
    if direction == "ingress":
        blocks.extend(stage_blocks(state, config, ep, "pre_dnat", direction, forwarded=forwarded, memo=memo))
    if forwarded:
        blocks.extend(stage_blocks(state, config, ep, "forward", direction, memo=memo))
        return Program(tuple(blocks), "allow")
    blocks.extend(stage_blocks(state, config, ep, "normal", direction, memo=memo))
    blocks.extend(profile_block(state, name, direction) for name in ep.profile_ids)
    return Program(tuple(blocks), "deny")


def host_programs(
    state: DesiredState, config: Config, key: HostEndpointID, memo: dict[BlockKey, Block] | None = None
) -> HostPrograms:
    """All four programs of a host endpoint (problems computed once)."""
    if key not in state.host_endpoints:
        why = (f"unknown host endpoint {key}",)
        deny = Program((), denied_because=why)
        return HostPrograms(deny, deny, deny, deny, why)
    problems = state.endpoint_problems(key)
    to_host, from_host, forward_in, forward_out = (
        host_path_program(state, config, key, path, problems, memo) for path in HOST_PATHS
    )
    return HostPrograms(to_host, from_host, forward_in, forward_out, tuple(problems))


# ------------------------------------------------------------------------------------ workload to host

ICMPV6_TO_HOST_RULES: Final = tuple(
    rule
    for t in sorted(WORKLOAD_TO_HOST_ICMPV6_TYPES)
    for rule in family_rules(
        Rule(action="allow", ip_version=6, protocol=PROTO_ICMPV6, icmp=IcmpMatch(t, None))
    )
)


def endpoint_to_host_allows(config: Config) -> bool:
    """DefaultEndpointToHostAction: ACCEPT and RETURN let the packet reach the host (RETURN
    hands it to the host's own INPUT rules, which Calico does not program), DROP/REJECT and
    anything unknown (fail closed) drop it."""
    return config.default_endpoint_to_host_action.upper() in ("ACCEPT", "RETURN")


def workload_to_host_program(config: Config) -> Program:
    """What follows a workload's egress policy for packets to the host itself: the ICMPv6
    MLD/RS/NS/NA allows (Felix's ICMPv6Filter), then DefaultEndpointToHostAction."""
    block = Block(("workload-to-host-icmpv6",), ICMPV6_TO_HOST_RULES, "next")
    return Program((block,), "allow" if endpoint_to_host_allows(config) else "deny")
