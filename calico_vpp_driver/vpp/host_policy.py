"""Host endpoint policy in VPP: which interfaces, which ACLs, in which direction.

On a Calico/VPP node VPP owns the NIC. The manager (vpp-manager) tags the NIC's VPP interface
`main-<linux name>` (the *uplink*) and creates a tap towards the Linux host tagged
`host-<linux name>` (the *host tap*; Linux sees it as `<linux name>` with the node's
addresses; traffic to the host's addresses is punted to it). `Config.vpp_host_interfaces`
("eth0=<uplink tag>[+<tap tag>],...") overrides the tags per Linux name.

Binding. A host endpoint names an interface (`eth0`: that pair), `*` (every pair) or nothing
(the pairs whose VPP addresses include one of its expected addresses). A pair is policed by
one endpoint: a named one before an address-matched one before `*`, the smallest ID among
equals. An endpoint that polices no pair is reported "error" with the reason.

Placement. Policy is compiled by `policy.host_program` into four programs per endpoint and
lowered to classic ACLs (`acl_rules.lower_program`, stateful: allows are permit+reflect),
whatever the workload policy backend (npol has no notion of host traffic). VPP's order on
the rx interface is cnat-input (DNAT) then acl-plugin-in; on the tx interface acl-plugin-out
then cnat-output (SNAT). Each interface has one input and one output ACL list, first match
across the list, no match = deny:

* host tap output (towards Linux): [W2H] + [TO_HOST]. W2H decides the packets from local
  workloads (by their addresses, from the model): ICMPv6 MLD/RS/NS/NA allowed, then
  DefaultEndpointToHostAction (ACCEPT/RETURN allow, anything else denies); TO_HOST judges
  everything else (failsafe-in, untracked, pre-DNAT, normal tiers, profiles, deny).
* host tap input (from Linux): [HTW] + [FROM_HOST]. HTW allows anything to local workloads
  (Felix does not police host -> workload; its reflexive session also lets the workloads'
  replies pass W2H); FROM_HOST: failsafe-out, untracked, normal tiers, profiles, deny.
* uplink input: [TO_HOST restricted to destinations in H] + [FORWARD_IN]. H = the host's
  addresses: the uplink's and tap's own VPP addresses, the endpoint's expected addresses and
  the node's HostMetadata addresses. Packets to H get TO_HOST here as well (which also covers
  what VPP answers itself and never sends to the tap); everything else is forwarded traffic:
  untracked, pre-DNAT, forward tiers, allow.
* uplink output: [FROM_HOST restricted to sources in H] + [FORWARD_OUT] (forward tiers, allow).

Both directions of a flow are judged on the same interfaces, so the acl plugin's reflexive
sessions let replies through as conntrack does in Felix (a reply of an allowed inbound flow to
the host leaves by the tap input and the uplink output, where the request created sessions).
"Restricted to H" is exact: each rule's address is intersected with each host address (a
prefix meets a host address in the address or not at all), and an explicit deny per address
ends the ACL, so packets to/from H never fall through to the forward ACL. The ACLs are tagged
`cvd-acl-host-<digest of (path, endpoint)>`, rewritten in place when their rules change, and
shared with nothing else. Programming is make-before-break (ACLs ensured, then lists set,
then unused host ACLs deleted); an interface that carried host policy and is no longer policed
gets empty lists back; with no host endpoint and no such interface nothing is touched.

Approximations:

* pre-DNAT and untracked policy run after cnat's DNAT (cnat-input precedes acl-plugin-in):
  they see the translated destination of service traffic, where Felix's raw and mangle
  PREROUTING chains see the original one.
* Untracked allows are lowered like the others, as permit+reflect: replies of an untracked
  flow are allowed by the session, where Felix (no conntrack entry) would judge them by the
  reverse direction's policy. Untracked denies are exact.
* Failsafes: inbound ports are allowed on TO_HOST (uplink input and tap output), outbound ports
  on FROM_HOST, with Felix's skip of untracked (and pre-DNAT) for failsafe packets and
  responses; this holds with the endpoint in error or its ACL too large (then only the
  failsafes are allowed towards/from the host and forwarded traffic is denied). They are not
  applied to interfaces no host endpoint polices (nothing is enforced there anyway).
* Workload to host: the workload's egress is judged by its own interface's ACL first, so the
  ICMPv6 neighbour discovery exception cannot bypass a workload egress policy that denies it
  (Felix allows those before any policy). Local workloads are recognised by source address:
  a spoofed workload source arriving from outside would get DefaultEndpointToHostAction on the
  tap (it was judged by TO_HOST on the uplink first). Host-to-workload traffic is allowed on
  the tap; on the workload's interface its ingress program starts by allowing the node's own
  addresses (`policy.program.host_to_workload`).
* H must name the host's addresses (on Calico/VPP the uplink carries them, and Felix's
  HostMetadata names the node's): a packet to a host address outside H is judged as forwarded
  on the uplink (FORWARD_IN, which denies everything while the endpoint is in error, failsafe
  ports included) and then by TO_HOST on the tap; a packet from a host address outside H is
  judged by FROM_HOST on the tap and then by FORWARD_OUT on the uplink. Packets the Linux host
  routes (not its own) enter by the tap and are judged by FROM_HOST, not as forwarded.
* Workload traffic to an address VPP consumes itself (never sent to the tap) gets no
  DefaultEndpointToHostAction here; the workload's own ACL would have to judge it.
* SCTP/UDPLITE port criteria and protocol 0 follow `acl_rules`' fail-closed rules.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

from ..config import Config
from ..felix.status import Health, StatusBoard
from ..model.state import DesiredState, Dirty
from ..model.types import HostEndpoint, HostEndpointID, IPAddress, IPNetwork
from ..policy.host_program import (
    HOST_PATHS,
    HostPath,
    host_path_program,
    workload_to_host_program,
)
from ..policy.program import Block, BlockKey, Program
from ..policy.verdict import PolicyError
from . import acl_rules
from .acl_rules import ACL_DENY, ACL_PERMIT_REFLECT, AclRule, AclTooLarge
from .acl_store import TAG_PREFIX, AclStore
from .errors import VppError
from .npol_store import RenderError

log = structlog.get_logger("calico_vpp_driver.vpp.host_policy")

STATUS_FAMILY: Final = "vpp"
HOST_TAG_PREFIX: Final = TAG_PREFIX + "host-"
UPLINK_TAG_PREFIX: Final = "main-"
TAP_TAG_PREFIX: Final = "host-"
U32_MAX: Final = 0xFFFFFFFF
_ANY_NET: Final = {4: ipaddress.ip_network("0.0.0.0/0"), 6: ipaddress.ip_network("::/0")}

__all__ = [
    "HOST_TAG_PREFIX",
    "HostInterface",
    "HostPolicyProgrammer",
    "bind_endpoints",
    "find_host_interfaces",
    "host_tag",
    "host_to_workload_acl",
    "parse_host_interfaces",
    "restrict_acl",
]


def host_tag(identity: Hashable) -> str:
    """The tag of a host ACL: found by `AclStore.adopt` (TAG_PREFIX) and told apart from
    workload ACLs (HOST_TAG_PREFIX); 53 characters, within VPP's 64."""
    return HOST_TAG_PREFIX + hashlib.sha1(repr(identity).encode()).hexdigest()[:40]


# ------------------------------------------------------------------------------------ interfaces


@dataclass(frozen=True, slots=True)
class HostInterface:
    """One Linux interface of the host as VPP has it: its uplink and/or its host tap."""

    name: str
    uplink: int | None
    tap: int | None
    addresses: frozenset[IPAddress] = frozenset()  # the VPP addresses of both

    def sw_if_indexes(self) -> tuple[int, ...]:
        return tuple(sw for sw in (self.uplink, self.tap) if sw is not None)


def parse_host_interfaces(spec: str) -> dict[str, tuple[str, str | None]]:
    """`Config.vpp_host_interfaces`: "eth0=<uplink tag>[+<tap tag>],..." -> name -> tags.

    Malformed entries are logged and skipped (the default tags still apply to that name)."""
    out: dict[str, tuple[str, str | None]] = {}
    for item in (p.strip() for p in spec.split(",")):
        if not item:
            continue
        name, eq, tags = item.partition("=")
        uplink, plus, tap = tags.partition("+")
        name, uplink, tap = name.strip(), uplink.strip(), tap.strip()
        if not eq or not name or not (uplink or tap) or (plus and not tap):
            log.warning("host_interface_mapping_ignored", entry=item, expected="name=uplink_tag[+tap_tag]")
            continue
        out[name] = (uplink, tap or None) if uplink else ("", tap)
    return out


def find_host_interfaces(
    tags: Mapping[str, int], addresses: Mapping[int, frozenset[IPAddress]], spec: str
) -> dict[str, HostInterface]:
    """The host's interfaces by Linux name: Calico/VPP's tags (main-<name>, host-<name>), with
    `spec` (`parse_host_interfaces`) overriding them per name."""
    names: dict[str, tuple[int | None, int | None]] = {}
    for tag, sw in tags.items():
        for prefix, slot in ((UPLINK_TAG_PREFIX, 0), (TAP_TAG_PREFIX, 1)):
            if tag.startswith(prefix) and len(tag) > len(prefix):
                pair = list(names.get(tag[len(prefix) :], (None, None)))
                pair[slot] = sw
                names[tag[len(prefix) :]] = (pair[0], pair[1])
    for name, (uplink_tag, tap_tag) in parse_host_interfaces(spec).items():
        names[name] = (tags.get(uplink_tag) if uplink_tag else None, tags.get(tap_tag) if tap_tag else None)
    out = {}
    for name, (uplink, tap) in sorted(names.items()):
        if uplink is None and tap is None:
            continue
        addrs = frozenset().union(*(addresses.get(sw, frozenset()) for sw in (uplink, tap) if sw is not None))
        out[name] = HostInterface(name, uplink, tap, addrs)
    return out


def _expected(ep: HostEndpoint) -> frozenset[IPAddress]:
    return frozenset((*ep.expected_ipv4_addrs, *ep.expected_ipv6_addrs))


def bind_endpoints(
    endpoints: Mapping[HostEndpointID, HostEndpoint], interfaces: Mapping[str, HostInterface]
) -> tuple[dict[str, HostEndpointID], dict[HostEndpointID, str]]:
    """Which endpoint polices each interface (by name), and why each other endpoint polices none.

    Precedence per interface: an endpoint naming it, then one whose expected addresses are
    among its VPP addresses, then `*`; the smallest endpoint ID among equals."""
    claims: dict[str, list[tuple[int, str, HostEndpointID]]] = {}
    unmatched: dict[HostEndpointID, str] = {}
    for key, ep in endpoints.items():
        if ep.name == "*":
            hits, rank = list(interfaces), 2
            why = "no VPP interface is tagged main-<name> or host-<name>"
        elif ep.name:
            hits, rank = ([ep.name] if ep.name in interfaces else []), 0
            why = (
                f"interface {ep.name!r}: no VPP interface tagged {UPLINK_TAG_PREFIX}{ep.name} or "
                f"{TAP_TAG_PREFIX}{ep.name} (nor mapped by VPPHostInterfaces)"
            )
        else:
            expected = _expected(ep)
            hits = [name for name, itf in interfaces.items() if itf.addresses & expected]
            rank = 1
            shown = ", ".join(sorted(str(a) for a in expected)) or "none"
            why = f"no host VPP interface has one of its expected addresses ({shown})"
        if not hits:
            unmatched[key] = why
        for name in hits:
            claims.setdefault(name, []).append((rank, key.endpoint_id, key))
    winners = {name: min(found)[2] for name, found in claims.items()}
    for name, found in claims.items():
        for _rank, _id, key in found:
            if key not in winners.values() and key not in unmatched:
                unmatched[key] = f"interface {name!r} is policed by host endpoint {winners[name]}"
    return winners, unmatched


# ------------------------------------------------------------------------------------ ACL shapes


def _meet(a: IPNetwork, b: IPNetwork) -> IPNetwork | None:
    """The intersection of two prefixes (one contains the other, or they are disjoint)."""
    if a.version != b.version:
        return None
    inner, outer = (a, b) if a.prefixlen >= b.prefixlen else (b, a)
    shift = inner.max_prefixlen - outer.prefixlen
    same = int(inner.network_address) >> shift == int(outer.network_address) >> shift
    return inner if same else None


def restrict_acl(rules: Sequence[AclRule], side: str, nets: Iterable[IPNetwork]) -> tuple[AclRule, ...]:
    """An ACL deciding the packets whose `side` ("src"/"dst") address is in `nets` exactly as
    `rules` (no match = deny) do, and matching no other packet: each rule cut to each net (the
    nets must not overlap), then an explicit deny for the net."""
    out: list[AclRule] = []
    for net in nets:
        for rule in rules:
            cut = _meet(rule.src if side == "src" else rule.dst, net)
            if cut is not None:
                out.append(rule._replace(src=cut) if side == "src" else rule._replace(dst=cut))
        other = _ANY_NET[net.version]
        deny = AclRule(ACL_DENY, net, other, 0) if side == "src" else AclRule(ACL_DENY, other, net, 0)
        out.append(deny)
    return tuple(out)


def _collapse(nets: Iterable[IPNetwork]) -> tuple[IPNetwork, ...]:
    """Non-overlapping prefixes covering `nets` (what `restrict_acl` needs), IPv4 first."""
    nets = list(nets)
    v4 = [n for n in nets if n.version == 4]
    v6 = [n for n in nets if n.version == 6]
    out: list[IPNetwork] = []
    out.extend(ipaddress.collapse_addresses(v4))
    out.extend(ipaddress.collapse_addresses(v6))
    return tuple(out)


def _host_nets(addrs: Iterable[IPAddress]) -> tuple[IPNetwork, ...]:
    return _collapse(ipaddress.ip_network(a) for a in addrs)


def _workload_nets(state: DesiredState) -> list[IPNetwork]:
    out: list[IPNetwork] = []
    for ep in state.workload_endpoints.values():
        out.extend(ep.ipv4_nets)
        out.extend(ep.ipv6_nets)
    return out


def host_to_workload_acl(workload_nets: Sequence[IPNetwork]) -> tuple[AclRule, ...]:
    """Tap input: the host may reach every local workload (permit+reflect: the workload's
    replies pass the tap's output ACL by the session)."""
    return tuple(AclRule(ACL_PERMIT_REFLECT, _ANY_NET[n.version], n, 0) for n in workload_nets)


# ------------------------------------------------------------------------------------ programmer


@dataclass(slots=True)
class _Lowered:
    program: Program
    sets: frozenset[str]
    rules: tuple[AclRule, ...] | None  # None: could not be lowered (reason in `error`)
    error: str = ""


@dataclass(slots=True)
class _EndpointResult:
    interfaces: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Plan:
    """What one apply programs: ACLs by tag, lists by interface, per-endpoint results."""

    wanted: dict[str, tuple[AclRule, ...]] = field(default_factory=dict)
    lists: dict[int, tuple[list[str], list[str]]] = field(default_factory=dict)
    results: dict[HostEndpointID, _EndpointResult] = field(default_factory=dict)
    w2h_tag: str = ""
    htw_tag: str = ""


def _program_sets(program: Program) -> frozenset[str]:
    return frozenset(s for block in program.blocks for rule in block.rules for s in rule.ip_set_ids())


class HostPolicyProgrammer:
    """Programs host endpoint policy into VPP's acl plugin (see the module docstring).

    Called from the dataplane's apply thread only; shares the `AclStore` with workload policy
    (its ACLs carry HOST_TAG_PREFIX; it deletes only those)."""

    def __init__(self, client: Any, acls: AclStore, config: Config, *, acl_limit: int = 65536) -> None:
        self.client = client
        self.acls = acls
        self.config = config
        self.acl_limit = acl_limit
        self._full = True
        self._policed: set[int] = set()  # interfaces whose lists hold host ACLs
        self._interfaces: dict[str, HostInterface] = {}
        self._lowered: dict[Hashable, _Lowered] = {}
        self._waiting = False  # endpoints without an interface: look again on every apply
        self.last_lists: dict[int, tuple[list[str], list[str]]] = {}  # what the last apply set

    # ------------------------------------------------------------------ lifecycle

    def configure(self, config: Config) -> None:
        """New config (failsafe ports, DefaultEndpointToHostAction, VPPHostInterfaces...):
        everything is recomputed on the next apply."""
        if config != self.config:
            self.config = config
            self._full = True

    def adopt(self, interfaces_with_acls: Mapping[int, tuple[list[int], list[int]]]) -> None:
        """After a driver restart (`AclStore.adopt` and `adopt_interfaces` done): remember the
        interfaces whose lists hold host ACLs, so that the first apply restores those no host
        endpoint polices any more."""
        host_indexes = {acl.index for tag, acl in self.acls.acls.items() if tag.startswith(HOST_TAG_PREFIX)}
        for sw, (ins, outs) in interfaces_with_acls.items():
            if host_indexes.intersection(ins) or host_indexes.intersection(outs):
                self._policed.add(sw)
        self._full = True

    def reset(self, acls: AclStore) -> None:
        """VPP restarted (the dataplane made a new `AclStore`): forget every VPP index, program
        everything again on the next apply (call `adopt` after the store adopted its ACLs)."""
        self.acls = acls
        self._policed.clear()
        self._interfaces.clear()
        self._lowered.clear()
        self.last_lists = {}
        self._full = True

    def policed_interfaces(self) -> frozenset[int]:
        """Interfaces carrying host policy (not pod interfaces: the workload side must leave
        them alone)."""
        return frozenset(self._policed)

    # ------------------------------------------------------------------ apply

    def apply(self, state: DesiredState, dirty: Dirty, full: bool, board: StatusBoard) -> None:
        """Bind, compile, lower and program every host endpoint; report each one's status."""
        if not state.host_endpoints and not self._policed:
            return  # nothing to police and nothing to restore: touch no interface
        full = full or self._full
        if not full and not self._relevant(state, dirty):
            return
        try:
            self._full = False
            self._apply(state, dirty, full, board)
        except (RenderError, VppError) as exc:
            # Whatever was set stays (make-before-break: never a gap); retry in full next time.
            self._full = True
            log.error("host_policy_programming_failed", error=str(exc))
            for key in state.host_endpoints:
                board.report(key, STATUS_FAMILY, Health.ERROR, f"VPP refused host policy: {exc}")

    def _relevant(self, state: DesiredState, dirty: Dirty) -> bool:
        if self._waiting or dirty.host_endpoints or dirty.workload_endpoints or dirty.host_metadata:
            return True
        if dirty.other:
            return True
        if not (dirty.policies or dirty.profiles or dirty.ipsets):
            return False
        return any(isinstance(k, HostEndpointID) for k in state.endpoints_affected(dirty))

    def _refresh_interfaces(self) -> None:
        tags: dict[str, int] = {}
        for d in self.client.dump("sw_interface_dump", sw_if_index=U32_MAX):
            tag = str(d.tag).rstrip("\x00")
            if tag:
                tags[tag] = int(d.sw_if_index)
        candidates = find_host_interfaces(tags, {}, self.config.vpp_host_interfaces)
        addresses: dict[int, frozenset[IPAddress]] = {}
        for itf in candidates.values():
            for sw in itf.sw_if_indexes():
                found: set[IPAddress] = set()
                for is_ipv6 in (False, True):
                    for d in self.client.dump("ip_address_dump", sw_if_index=sw, is_ipv6=is_ipv6):
                        try:
                            found.add(ipaddress.ip_interface(str(d.prefix)).ip)
                        except ValueError:
                            log.warning(
                                "host_interface_address_unreadable", sw_if_index=sw, prefix=str(d.prefix)
                            )
                addresses[sw] = frozenset(found)
        self._interfaces = find_host_interfaces(tags, addresses, self.config.vpp_host_interfaces)

    def _lower(
        self, identity: Hashable, state: DesiredState, program: Program, full: bool, dirty: Dirty
    ) -> _Lowered:
        """Lowered once per program content and IP set contents (kept across applies)."""
        cached = self._lowered.get(identity)
        if (
            cached is not None
            and not full
            and cached.program == program
            and cached.sets.isdisjoint(dirty.ipsets)
        ):
            return cached
        sets = _program_sets(program)
        try:
            rules = acl_rules.lower_program(state, program, limit=self.acl_limit)
            result = _Lowered(program, sets, rules)
        except AclTooLarge as exc:
            result = _Lowered(program, sets, None, f"its policy needs more ACL rules than the limit ({exc})")
        except PolicyError as exc:
            result = _Lowered(program, sets, None, f"its policy cannot be rendered: {exc}")
        self._lowered[identity] = result
        return result

    def _forget_lowered(self, state: DesiredState) -> None:
        """Drop the lowered ACLs of endpoints that are gone (identities end in the endpoint ID)."""
        live = {key.endpoint_id for key in state.host_endpoints}
        for identity in list(self._lowered):
            if isinstance(identity, tuple) and len(identity) == 3 and identity[2] not in live:
                del self._lowered[identity]

    def _endpoint_acls(
        self,
        state: DesiredState,
        key: HostEndpointID,
        full: bool,
        dirty: Dirty,
        memo: dict[BlockKey, Block],
    ) -> tuple[dict[HostPath, tuple[str, tuple[AclRule, ...]]], list[str]]:
        """(tag, rules) per path, falling back to the fail-closed programs (failsafes only
        towards/from the host, deny for forwarded traffic) when a path cannot be lowered."""
        problems = state.endpoint_problems(key)
        out: dict[HostPath, tuple[str, tuple[AclRule, ...]]] = {}
        errors: list[str] = []
        if problems:
            shown = "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else "")
            errors.append(f"policy in error, failing closed (failsafe ports stay open): {shown}")
        for path in HOST_PATHS:
            identity = ("host", path, key.endpoint_id)
            program = host_path_program(state, self.config, key, path, problems, memo)
            got = self._lower(identity, state, program, full, dirty)
            if got.rules is None:
                errors.append(f"{path.replace('_', ' ')}: {got.error}")
                fallback = host_path_program(state, self.config, key, path, [got.error], memo)
                got = self._lower(("host-fallback", path, key.endpoint_id), state, fallback, full, dirty)
            assert got.rules is not None  # the fallback is failsafes only: always small
            out[path] = (host_tag(identity), got.rules)
        return out, errors

    def _apply(self, state: DesiredState, dirty: Dirty, full: bool, board: StatusBoard) -> None:
        if full or dirty.host_endpoints or self._waiting or not self._interfaces:
            self._refresh_interfaces()
        winners, unmatched = bind_endpoints(state.host_endpoints, self._interfaces)
        self._waiting = bool(unmatched)
        plan = _Plan()
        self._plan_workload_acls(state, winners, full, dirty, plan)
        memo: dict[BlockKey, Block] = {}
        per_endpoint: dict[HostEndpointID, dict[HostPath, tuple[str, tuple[AclRule, ...]]]] = {}
        for name, key in sorted(winners.items()):
            result = plan.results.setdefault(key, _EndpointResult())
            if key not in per_endpoint:
                per_endpoint[key], errors = self._endpoint_acls(state, key, full, dirty, memo)
                result.errors.extend(errors)
            result.interfaces.append(name)
            self._plan_interface(state, self._interfaces[name], key, per_endpoint[key], plan)
        for sw in self._policed:
            plan.lists.setdefault(sw, ([], []))  # no longer policed: its (empty) lists back
        failed = self._program(plan)
        if failed:
            self._full = True  # set the refused lists again on the next apply
        self._forget_lowered(state)
        self._report(state, plan, unmatched, failed, board)
        log.info(
            "host_policy_applied",
            endpoints=len(state.host_endpoints),
            interfaces=sorted(plan.lists),
            unmatched=len(unmatched),
        )

    def _plan_workload_acls(
        self,
        state: DesiredState,
        winners: Mapping[str, HostEndpointID],
        full: bool,
        dirty: Dirty,
        plan: _Plan,
    ) -> None:
        """W2H and HTW, shared by every policed host tap (only when there are local workloads)."""
        nets = _collapse(_workload_nets(state))
        if not nets or all(self._interfaces[name].tap is None for name in winners):
            return
        w2h = self._lower(
            ("host", "workload-to-host"), state, workload_to_host_program(self.config), full, dirty
        )
        assert w2h.rules is not None  # a handful of rules, no IP sets
        plan.w2h_tag = host_tag(("host", "workload-to-host"))
        plan.htw_tag = host_tag(("host", "host-to-workload"))
        plan.wanted[plan.w2h_tag] = restrict_acl(w2h.rules, "src", nets)
        plan.wanted[plan.htw_tag] = host_to_workload_acl(nets)

    def _plan_interface(
        self,
        state: DesiredState,
        itf: HostInterface,
        key: HostEndpointID,
        acls: Mapping[HostPath, tuple[str, tuple[AclRule, ...]]],
        plan: _Plan,
    ) -> None:
        """The ACL lists of one host interface pair (module docstring's table)."""
        for tag, rules in acls.values():
            plan.wanted[tag] = rules
        if itf.tap is not None:
            ins = [t for t in (plan.htw_tag, acls["from_host"][0]) if t]
            outs = [t for t in (plan.w2h_tag, acls["to_host"][0]) if t]
            plan.lists[itf.tap] = (ins, outs)
        if itf.uplink is None:
            return
        metadata = state.host_metadata.get(self.config.felix_hostname)
        node = {a for a in (metadata.ipv4_addr, metadata.ipv6_addr) if a is not None} if metadata else set()
        host = _host_nets(itf.addresses | _expected(state.host_endpoints[key]) | node)
        ins, outs = [acls["forward_in"][0]], [acls["forward_out"][0]]
        if host:
            tin = host_tag(("host", "to_host@", key.endpoint_id, itf.uplink))
            tout = host_tag(("host", "from_host@", key.endpoint_id, itf.uplink))
            plan.wanted[tin] = restrict_acl(acls["to_host"][1], "dst", host)
            plan.wanted[tout] = restrict_acl(acls["from_host"][1], "src", host)
            ins, outs = [tin, *ins], [tout, *outs]
        plan.lists[itf.uplink] = (ins, outs)

    def _program(self, plan: _Plan) -> set[int]:
        """Make-before-break: ACLs, then lists, then the host ACLs nothing lists any more.
        Returns the interfaces whose lists VPP refused."""
        self.acls.ensure(plan.wanted)
        failed = set(self.acls.set_interfaces(plan.lists))
        keep = frozenset(tag for tag in self.acls.acls if not tag.startswith(HOST_TAG_PREFIX))
        self.acls.collect(keep=keep)
        for sw, (ins, outs) in plan.lists.items():
            if sw in failed:
                continue
            if ins or outs:
                self._policed.add(sw)
            else:
                self._policed.discard(sw)
        self.last_lists = plan.lists
        return failed

    def _report(
        self,
        state: DesiredState,
        plan: _Plan,
        unmatched: Mapping[HostEndpointID, str],
        failed: set[int],
        board: StatusBoard,
    ) -> None:
        for key in state.host_endpoints:
            found = plan.results.get(key)
            if found is None:
                board.report(key, STATUS_FAMILY, Health.ERROR, unmatched.get(key, "no VPP interface matches"))
                continue
            errors = list(found.errors)
            refused = [
                name
                for name in found.interfaces
                if failed.intersection(self._interfaces[name].sw_if_indexes())
            ]
            if refused:
                errors.append(f"VPP refused the ACL lists of interface(s) {', '.join(refused)}")
            if errors:
                board.report(key, STATUS_FAMILY, Health.ERROR, "; ".join(errors))
            else:
                board.report(key, STATUS_FAMILY, Health.UP)
