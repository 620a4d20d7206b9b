"""The policy compiler: one endpoint's Calico policy as a backend-neutral program.

A `Program` is what a VPP backend lowers (npol in `vpp/npol.py`, acl in `vpp/acl.py`). It is
equivalent to `policy.verdict` for the endpoint and direction, and shaped so that both of VPP's
engines can express it without interpretation:

    for block in program.blocks (in order):
        the first rule of the block that matches decides:
            allow -> ALLOW, deny -> DENY, pass -> continue with the next block
        no rule matched: block.end == "deny" -> DENY, "next" -> the next block
    no block decided: program.final

Every Calico construct maps onto that:

* a tier is one block (its enforced policies' rules concatenated in order; staged policies
  left out); Calico's pass / next-tier is `pass`; the end-of-tier drop is `end="deny"`
  unless the tier's default action is Pass; a tier whose list is empty for the direction,
  or holds only staged policies, produces no block;
* a profile is one block with `end="next"` (a profile's pass also goes to the next profile);
* `log` rules are dropped: they never change a verdict;
* the workload egress drops of VXLAN and IP-in-IP come first, as one block; an ingress program
  starts by allowing this node's own addresses (Felix does not police host -> workload);
* an endpoint that is not active, or whose policy cannot be evaluated exactly
  (`DesiredState.endpoint_problems`), gets no blocks at all: deny everything.

Rules are normalized per IP family the way Felix renders them (`FilterRuleToIPVersion`):
a rule is kept for a family only if it exists for it (`verdict.rule_exists_for_family`),
its CIDR lists are cut to that family, and `ip_version` says which family it is for. A
rule that is the same for both families (no CIDRs, no `ip_version`) stays one rule with
`ip_version` 0. Rules are interned: equal rules are the same object, so backends can share
what they render for them across endpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import ip_network
from typing import Any, Generic, Literal, TypeAlias, TypeVar

from ..config import Config
from ..model.state import DesiredState
from ..model.types import (
    PortRange,
    Rule,
    TierInfo,
    WorkloadEndpoint,
    WorkloadEndpointID,
)
from .verdict import PROTO_IPIP, PROTO_UDP, Direction, Packet, rule_exists_for_family, rule_matches

BlockEnd: TypeAlias = Literal["deny", "next"]

# A block's identity, for sharing what a backend renders for it across endpoints:
# ("tier", direction, tier name, enforced policy IDs, end) / ("profile", direction, name)
# / ("workload-egress-drops", vxlan port or None, ipip?).
BlockKey: TypeAlias = tuple[object, ...]


@dataclass(frozen=True, slots=True)
class Block:
    key: BlockKey
    rules: tuple[Rule, ...]  # actions: allow, deny, pass
    end: BlockEnd

    def __str__(self) -> str:
        return "/".join(str(k) for k in self.key[:3])


@dataclass(frozen=True, slots=True)
class Program:
    blocks: tuple[Block, ...]
    final: Literal["allow", "deny"] = "deny"
    # Why everything is denied (endpoint in error or not active); empty when the blocks apply.
    denied_because: tuple[str, ...] = ()

    @property
    def deny_all(self) -> bool:
        return not self.blocks and self.final == "deny"


DENY_ALL = Program(())

K = TypeVar("K")
V = TypeVar("V")


class IdentityMemo(Generic[K, V]):
    """`fn(obj)`, remembered by the object's identity rather than its value: rules and blocks
    are shared objects, and hashing one by value would hash every network in it (a node's
    programs look up hundreds of thousands). Each entry holds its object, so the id cannot be
    reused while it is remembered; past `limit` entries the memo starts over (`on_clear`)."""

    def __init__(self, fn: Callable[[K], V], limit: int, on_clear: Callable[[], None] | None = None) -> None:
        self._fn = fn
        self._limit = limit
        self._on_clear = on_clear
        self._memo: dict[int, tuple[K, V]] = {}

    def __call__(self, obj: K) -> V:
        hit = self._memo.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        value = self._fn(obj)
        if len(self._memo) > self._limit:
            self._memo.clear()
            if self._on_clear is not None:
                self._on_clear()
        self._memo[id(obj)] = (obj, value)
        return value


_INTERN: dict[Rule, Rule] = {}


def _intern(rule: Rule) -> Rule:
    return _INTERN.setdefault(rule, rule)


def _family_rules(rule: Rule) -> tuple[Rule, ...]:
    """The rule as Felix renders it per family: zero, one or two rules (log rules: none)."""
    out: tuple[Rule, ...]
    if rule.action == "log":
        out = ()
    elif (
        rule.ip_version == 0
        and not rule.src_net
        and not rule.not_src_net
        and not rule.dst_net
        and not rule.not_dst_net
    ):
        out = (_intern(rule._replace(rule_id="", has_http_match=False)),)
    else:
        kept = []
        for version in (4, 6):
            if not rule_exists_for_family(rule, version):
                continue
            kept.append(
                _intern(
                    rule._replace(
                        ip_version=version,
                        src_net=tuple(n for n in rule.src_net if n.version == version),
                        not_src_net=tuple(n for n in rule.not_src_net if n.version == version),
                        dst_net=tuple(n for n in rule.dst_net if n.version == version),
                        not_dst_net=tuple(n for n in rule.not_dst_net if n.version == version),
                        rule_id="",
                        has_http_match=False,
                    )
                )
            )
        out = tuple(kept)
    return out


family_rules = IdentityMemo(_family_rules, 200_000, on_clear=_INTERN.clear)


def _rules_of(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    out: list[Rule] = []
    for rule in rules:
        out.extend(family_rules(rule))
    return tuple(out)


# Blocks already built, by key, with the policy/profile objects they were built from: endpoints
# share tiers and profiles, and a block is rebuilt only when one of its objects was replaced.
_BLOCKS: dict[BlockKey, tuple[tuple[object, ...], Block]] = {}


def _cached(key: BlockKey, objs: tuple[object, ...]) -> Block | None:
    hit = _BLOCKS.get(key)
    if (
        hit is not None
        and len(hit[0]) == len(objs)
        and all(a is b for a, b in zip(hit[0], objs, strict=True))
    ):
        return hit[1]
    return None


def _remember(key: BlockKey, objs: tuple[object, ...], block: Block) -> Block:
    if len(_BLOCKS) > 50_000:
        _BLOCKS.clear()
    _BLOCKS[key] = (objs, block)
    return block


_ENFORCED: dict[tuple[int, str], tuple[TierInfo, BlockKey | None]] = {}


def _tier_key(tier: TierInfo, direction: Direction) -> BlockKey | None:
    """The block key of a tier and direction (None: no enforced policy), cached per TierInfo."""
    hit = _ENFORCED.get((id(tier), direction))
    if hit is not None and hit[0] is tier:
        return hit[1]
    ids = tier.ingress_policies if direction == "ingress" else tier.egress_policies
    enforced = tuple(pid for pid in ids if not pid.staged)
    end: BlockEnd = "next" if tier.default_action == "Pass" else "deny"
    key: BlockKey | None = ("tier", direction, tier.name, enforced, end) if enforced else None
    if len(_ENFORCED) > 200_000:
        _ENFORCED.clear()
    _ENFORCED[(id(tier), direction)] = (tier, key)
    return key


def tier_block(
    state: DesiredState, tier: TierInfo, direction: Direction, memo: dict[BlockKey, Block] | None = None
) -> Block | None:
    """A tier's block for one direction (None: the tier does not apply to it).

    `memo`: blocks already checked against this same state (one apply), by key."""
    key = _tier_key(tier, direction)
    if key is None:
        return None
    if memo is not None and key in memo:
        return memo[key]
    enforced: tuple[Any, ...] = key[3]  # type: ignore[assignment]
    end: BlockEnd = key[4]  # type: ignore[assignment]
    policies = tuple(state.policies[pid] for pid in enforced)
    block = _cached(key, policies)
    if block is None:
        rules: list[Rule] = []
        for policy in policies:
            rules.extend(_rules_of(policy.inbound_rules if direction == "ingress" else policy.outbound_rules))
        block = _remember(key, policies, Block(key, tuple(rules), end))
    if memo is not None:
        memo[key] = block
    return block


def profile_block(state: DesiredState, name: str, direction: Direction) -> Block:
    profile = state.profiles[name]
    key: BlockKey = ("profile", direction, name)
    block = _cached(key, (profile,))
    if block is not None:
        return block
    rules = profile.inbound_rules if direction == "ingress" else profile.outbound_rules
    return _remember(key, (profile,), Block(key, _rules_of(rules), "next"))


def rebuild_block(state: DesiredState, block: Block) -> Block:
    """The block with the same key, from the current policies or profile (after one of them
    changed; the key, made of policy IDs, stays the same)."""
    key = block.key
    if key[0] == "profile":
        return profile_block(state, str(key[2]), key[1])  # type: ignore[arg-type]
    if key[0] != "tier":
        return block
    direction: Direction = key[1]  # type: ignore[assignment]
    enforced: tuple[Any, ...] = key[3]  # type: ignore[assignment]
    policies = tuple(state.policies[pid] for pid in enforced)
    cached = _cached(key, policies)
    if cached is not None:
        return cached
    rules: list[Rule] = []
    for policy in policies:
        rules.extend(_rules_of(policy.inbound_rules if direction == "ingress" else policy.outbound_rules))
    return _remember(key, policies, Block(key, tuple(rules), block.end))


def workload_egress_drops(config: Config) -> Block | None:
    """Felix drops VXLAN and IP-in-IP packets from workloads before any policy (unless allowed)."""
    rules: list[Rule] = []
    vxlan = None if config.allow_vxlan_packets_from_workloads else config.vxlan_port
    if vxlan is not None:
        rules.append(_intern(Rule(action="deny", protocol=PROTO_UDP, dst_ports=(PortRange(vxlan, vxlan),))))
    ipip = not config.allow_ipip_packets_from_workloads
    if ipip:
        rules.append(_intern(Rule(action="deny", protocol=PROTO_IPIP)))
    if not rules:
        return None
    return Block(("workload-egress-drops", vxlan, ipip), tuple(rules), "next")


def workload_source_check(config: Config, ep: WorkloadEndpoint) -> Block | None:
    """For an endpoint allowed to send from other sources (`allow_spoofed_source_prefixes`,
    honoured only with `WorkloadSourceSpoofing=Any`, as Felix's validation does): deny every
    source that is neither its own address nor an allowed prefix. The dataplane then turns off
    the interface's strict uRPF, which would drop the allowed ones (without allowances, uRPF alone
    keeps a pod to its own addresses and no block is needed)."""
    if not ep.allow_spoofed_source_prefixes or config.workload_source_spoofing != "Any":
        return None
    rules = []
    for version in (4, 6):
        own = ep.ipv4_nets if version == 4 else ep.ipv6_nets
        allowed = tuple(n for n in (*own, *ep.allow_spoofed_source_prefixes) if n.version == version)
        rule = Rule(action="deny", ip_version=version, not_src_net=allowed) if allowed else None
        rules.append(_intern(rule or Rule(action="deny", ip_version=version)))
    key = ("workload-source-check", tuple(str(r.not_src_net) for r in rules))
    return Block(key, tuple(rules), "next")


def host_to_workload(state: DesiredState, config: Config) -> Block | None:
    """Felix does not police traffic from the host to its local workloads (its filter OUTPUT
    chain returns for workload interfaces), so kubelet's probes reach a pod whatever its ingress
    policy says. In VPP the pod's ingress program judges that traffic too, so it starts by
    allowing this node's own addresses (HostMetadata), as Calico/VPP does."""
    meta = state.host_metadata.get(config.felix_hostname)
    if meta is None:
        return None
    rules = tuple(
        _intern(Rule(action="allow", ip_version=addr.version, src_net=(ip_network(addr),)))
        for addr in (meta.ipv4_addr, meta.ipv6_addr)
        if addr is not None
    )
    if not rules:
        return None
    return Block(("host-to-workload", tuple(str(r.src_net[0]) for r in rules)), rules, "next")


def workload_program(
    state: DesiredState,
    config: Config,
    key: WorkloadEndpointID,
    direction: Direction,
    problems: list[str] | None = None,
    memo: dict[BlockKey, Block] | None = None,
) -> Program:
    """The program for a workload endpoint's ingress (to the pod) or egress (from it).

    `problems`: the endpoint's `DesiredState.endpoint_problems`, when the caller has them."""
    ep = state.workload_endpoints.get(key)
    if ep is None:
        return Program((), denied_because=(f"unknown workload endpoint {key}",))
    if problems is None:
        problems = state.endpoint_problems(key)
    if problems:
        return Program((), denied_because=tuple(problems))
    if not ep.active:
        return Program((), denied_because=(f"endpoint state {ep.state!r} is not active",))
    return _workload_blocks(state, config, ep, direction, memo)


def _workload_blocks(
    state: DesiredState,
    config: Config,
    ep: WorkloadEndpoint,
    direction: Direction,
    memo: dict[BlockKey, Block] | None = None,
) -> Program:
    blocks: list[Block] = []
    if direction == "ingress":
        host = host_to_workload(state, config)
        if host is not None:
            blocks.append(host)
    if direction == "egress":
        check = workload_source_check(config, ep)
        if check is not None:
            blocks.append(check)
        drops = workload_egress_drops(config)
        if drops is not None:
            blocks.append(drops)
    for tier in ep.tiers:
        block = tier_block(state, tier, direction, memo)
        if block is not None:
            blocks.append(block)
    for name in ep.profile_ids:
        blocks.append(profile_block(state, name, direction))
    return Program(tuple(blocks))


def program_allows(state: DesiredState, program: Program, packet: Packet) -> bool:
    """Run the program on one packet (the reference the backends' lowerings are tested against).

    Raises `verdict.PolicyError` when a rule uses an IP set that is missing or of the wrong type.
    """
    for block in program.blocks:
        for rule in block.rules:
            if not rule_matches(state, rule, packet):
                continue
            if rule.action == "pass":
                break
            return rule.action == "allow"
        else:
            if block.end == "deny":
                return False
    return program.final == "allow"
