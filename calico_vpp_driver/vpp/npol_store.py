"""The npol objects the driver owns in VPP, and the incremental, make-before-break updates to them.

`NpolStore.configure` takes the programs of the interfaces that changed and the Felix IP sets
that changed, and sends only what differs from what VPP already has, in an order that never
leaves an interface pointing at something missing:

    1. member changes of sets already in VPP (one add/del message per set and direction);
    2. new sets (create, then their members), new rules, new policies, changed policies
       (`npol_policy_update`: one message, whatever the policy's size);
    3. interfaces whose policy list changed (`npol_configure_policies`, one message each;
       the cnat feature is enabled once, since npol runs only as a cnat hook);
    4. only then deletes: policies no interface lists, rules no policy lists, sets no rule uses.

Sharing: a rule is keyed by its content (`NpolRuleSpec`), so equal rules exist once; a policy
is keyed by its block (tier with its policy list, or profile) and direction, so endpoints with
the same tier share it, and a changed Calico rule costs one `npol_rule_create`, one
`npol_policy_update` per distinct block that holds it, and one `npol_rule_delete`.

npol deletes never check references (a deleted rule still listed by a policy matches every
packet in a release VPP): the ordering above is what keeps that from ever happening.

npol's IP_AND_PORT member delete removes more than asked (`sim/README.md`): such a set is
rebuilt instead (new set, `npol_rule_update` of each rule using it, delete of the old set).
The old set stays known until the rules are confirmed on the new one: a rebuild cut short is
finished by the next sync (the rules resent), so no rule is left on a set the store forgot.

A request whose outcome never came (a timeout, a connection lost after it was sent) is not
taken as refused: the policy or interface it concerned is resent by the next write whatever the
model says then, and everything VPP may reference meanwhile stays (never deleted under it).

npol has no dump API, so the store records what it created (`record()` / `adopt()`): a driver
that restarts against the same VPP builds its objects anew, swaps every interface to them
(one atomic `npol_configure_policies` each) and then deletes the recorded ones.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from ..model.types import IPSet
from ..policy.program import Block, BlockKey
from . import npol
from .client import WireArray
from .errors import VppApiError, VppConnectionLost, VppEncodeError, VppRestartedError
from .npol import (
    DEFAULT_DENY,
    NPOL_IP_AND_PORT,
    OTHER_PROTOCOLS_ALLOW,
    NpolRuleSpec,
    SetKey,
)

log = structlog.get_logger("calico_vpp_driver.vpp.npol")

MEMBERS_PER_MESSAGE = 1000
#: Member messages sent as one batch while the next ones are prepared (VPP takes in one
#: group while the driver packs the next).
FILL_GROUP = 16
PolicyKey = tuple[BlockKey, bool]  # (block key, is_inbound = VPP rx)
PRELUDE: BlockKey = ("other-protocols-to-acl",)


class Requests(Protocol):
    """The part of `VppClient` the stores use."""

    def batch(self, requests: Iterable[Any], **kwargs: Any) -> list[Any]: ...

    def submit(self, requests: Iterable[Any], **kwargs: Any) -> Any:
        """`batch` without the wait: returns an object whose ``results()`` waits."""
        ...


class RenderError(Exception):
    """VPP refused an operation; names the object."""


@dataclass(slots=True)
class _Set:
    id: int
    type: int
    members: frozenset[Any]
    odd: int = 0  # Felix sets: member texts that are not a plain form of their value


@dataclass(slots=True)
class _Policy:
    id: int
    rules: tuple[NpolRuleSpec, ...]
    users: set[int] = field(default_factory=set)
    # An update whose outcome never came: VPP may hold `rules` or these. Until an update is
    # confirmed the policy is resent whatever the model wants, and these rules keep a reference
    # (VPP's policy may still list them: deleting one would make it match everything).
    maybe: tuple[NpolRuleSpec, ...] | None = None


@dataclass(frozen=True, slots=True)
class InterfacePolicies:
    """An interface's npol configuration: policy keys for VPP rx (pod egress) and tx (ingress)."""

    rx: tuple[PolicyKey, ...]
    tx: tuple[PolicyKey, ...]


def _check(results: Sequence[Any], what: str) -> list[Any]:
    """The replies, or raise RenderError for the first refused request."""
    error = _first_error(results, what)
    if error is not None:
        raise error
    return [res.reply for res in results]


def _unknown(error: Exception | None) -> bool:
    """Whether a failed request may still have been executed by VPP (a timeout, a connection
    lost after it was sent), as opposed to a definite refusal or a request never sent."""
    if error is None or isinstance(error, VppApiError | VppEncodeError | VppRestartedError):
        return False
    return not isinstance(error, VppConnectionLost) or error.sent


def _first_error(results: Sequence[Any], what: str) -> RenderError | None:
    for res in results:
        if res.error is not None:
            return RenderError(f"{what}: {res.obj or res.message}: {res.error}")
    return None


class NpolStore:
    def __init__(self, vpp: Requests) -> None:
        self.vpp = vpp
        self.sets: dict[SetKey, _Set] = {}
        self.set_refs: Counter[SetKey] = Counter()
        self.rules: dict[NpolRuleSpec, int] = {}
        self.rule_refs: Counter[NpolRuleSpec] = Counter()
        self.policies: dict[PolicyKey, _Policy] = {}
        self.interfaces: dict[int, tuple[int, ...]] = {}  # sw_if_index -> the ids last configured
        self.interface_keys: dict[int, InterfacePolicies] = {}
        self.cnat_enabled: set[int] = set()
        self._suspect: set[SetKey] = set()
        # Rebuilt sets whose rules are not known to use the new set yet: the ids of the sets they
        # replaced (VPP's rules may still point at any of them), deleted once the rules are.
        self._replaced: dict[SetKey, list[int]] = {}
        # Interfaces whose last configure's outcome never came: the policies VPP may use there.
        self._maybe_keys: dict[int, list[InterfacePolicies]] = {}
        self._prefilling: _Filling | None = None
        self._dependents: dict[str, set[SetKey]] = {}  # Felix set -> owned sets built from it
        self._garbage = True  # something may have lost its last user: _collect has work
        self.ids_changed = 0  # bumped whenever an object is created or deleted (see record())
        self.calls: Counter[str] = Counter()
        # Objects recorded by a previous driver process, deleted once nothing uses them.
        self.stale: dict[str, set[int]] = {"set": set(), "rule": set(), "policy": set()}

    # ------------------------------------------------------------------ public

    def configure(
        self,
        ipsets: Mapping[str, IPSet],
        interfaces: Mapping[int, tuple[Sequence[Block], Sequence[Block]] | None],
        dirty_sets: Iterable[str] = (),
    ) -> None:
        """Make `interfaces` (sw_if_index -> (rx blocks, tx blocks), None = deny all but other
        protocols) configured as given, with the IP sets' current members. Raises RenderError."""
        wanted: dict[int, InterfacePolicies] = {}
        contents: dict[PolicyKey, tuple[NpolRuleSpec, ...]] = {}
        prelude_rx, prelude_tx = (PRELUDE, True), (PRELUDE, False)
        contents[prelude_rx] = contents[prelude_tx] = (OTHER_PROTOCOLS_ALLOW,)
        for sw, blocks in interfaces.items():
            rx: list[PolicyKey] = [prelude_rx]
            tx: list[PolicyKey] = [prelude_tx]
            if blocks is not None:
                for side, keys, is_rx in ((blocks[0], rx, True), (blocks[1], tx, False)):
                    for block in side:
                        pkey = (block.key, is_rx)
                        if pkey not in contents:
                            contents[pkey] = npol.block_rules(block)
                        keys.append(pkey)
            wanted[sw] = InterfacePolicies(tuple(rx), tuple(tx))

        self._finish_prefill()
        self._sync_sets(ipsets, set(dirty_sets))
        self._write(ipsets, contents, wanted)

    def prefill(self, ipsets: Mapping[str, IPSet], ids: Iterable[str]) -> None:
        """At a cold start (no sets owned yet), create these Felix sets and start sending
        their members, so that VPP takes them in while the driver computes the programs that
        will use them. `configure` waits for them before anything else; one that no rule ends up
        using is collected like any unused set. A set left short by a failure here stays
        suspect, and `configure` rebuilds it before any interface uses it."""
        if self.sets or self._prefilling is not None:
            return
        try:
            self._prefilling = self._create_sets(ipsets, {("felix", i) for i in ids})
        except RenderError as exc:
            log.info("npol_prefill_failed", error=str(exc))

    def _finish_prefill(self) -> None:
        filling, self._prefilling = self._prefilling, None
        if filling is not None:
            try:
                filling.finish()
            except RenderError as exc:  # its sets stay suspect: `_sync_sets` rebuilds them next
                log.info("npol_prefill_failed", error=str(exc))

    def update_blocks(self, ipsets: Mapping[str, IPSet], blocks: Iterable[tuple[Block, bool]]) -> None:
        """Blocks (with their direction: True = VPP rx) whose content changed but whose key did
        not: rewrite the npol policies that hold them, in place. No interface changes."""
        contents: dict[PolicyKey, tuple[NpolRuleSpec, ...]] = {}
        for block, is_rx in blocks:
            pkey = (block.key, is_rx)
            if pkey in self.policies:
                contents[pkey] = npol.block_rules(block)
        self._write(ipsets, contents, {})

    def _write(
        self,
        ipsets: Mapping[str, IPSet],
        contents: Mapping[PolicyKey, tuple[NpolRuleSpec, ...]],
        wanted: Mapping[int, InterfacePolicies],
    ) -> None:
        """Make before break: new sets and rules, then policies, then interfaces; deletes last."""
        self._finish_prefill()
        new_rules: set[NpolRuleSpec] = set()
        for pkey, rules in contents.items():
            owned = self.policies.get(pkey)
            if owned is not None and owned.rules is rules and owned.maybe is None:
                continue  # unchanged (block lowerings are cached, so unchanged means the same object)
            new_rules.update(spec for spec in rules if spec not in self.rules)
        new_sets = {k for spec in new_rules for k in spec.set_keys() if k not in self.sets}
        filling = self._create_sets(ipsets, new_sets)
        try:
            self._create_rules(new_rules)
            self._write_policies(contents)
        except Exception:
            with contextlib.suppress(Exception):  # the first error is the one to report
                filling.finish()
            raise
        filling.finish()  # no interface may use a set before all its members are in
        self._configure_interfaces(wanted)
        if self._garbage:
            self._collect()

    def forget_interface(self, sw: int) -> None:
        """The interface is being deleted and VPP will reuse its index for a new one, which has
        neither npol configuration nor the cnat feature: both must be set again for it."""
        keys = self.interface_keys.pop(sw, None)
        maybe = self._maybe_keys.pop(sw, [])
        if keys is not None or maybe:
            for one in ([keys] if keys is not None else []) + maybe:
                for pkey in one.rx + one.tx:
                    pol = self.policies.get(pkey)
                    if pol is not None:
                        pol.users.discard(sw)
            self._garbage = True
        self.interfaces.pop(sw, None)
        self.cnat_enabled.discard(sw)

    def enable_cnat(self, interfaces: Iterable[int]) -> None:
        """Enable the cnat feature (and with it npol's hooks) on these interfaces, once each."""
        todo = sorted(set(interfaces) - self.cnat_enabled)
        results = self._results(
            [
                (
                    "feature_cnat_enable_disable",
                    {"sw_if_index": sw, "enable_disable": True},
                    f"interface {sw}",
                )
                for sw in todo
            ]
        )
        # Each success is recorded: enabling a feature twice puts its node on the arc twice.
        self.cnat_enabled.update(sw for sw, res in zip(todo, results, strict=True) if res.error is None)
        error = _first_error(results, "cnat feature")
        if error is not None:
            raise error

    def object_counts(self) -> dict[str, int]:
        return {
            "sets": len(self.sets),
            "set_members": sum(len(s.members) for s in self.sets.values()),
            "rules": len(self.rules),
            "policies": len(self.policies),
            "interfaces": len(self.interfaces),
        }

    # ------------------------------------------------------------------ record / adopt

    def record(self) -> dict[str, Any]:
        """What to persist so a restarted driver can delete these objects once it replaced them."""
        return {
            "sets": sorted(s.id for s in self.sets.values())
            + sorted(i for ids in self._replaced.values() for i in ids)
            + sorted(self.stale["set"]),
            "rules": sorted(self.rules.values()) + sorted(self.stale["rule"]),
            "policies": sorted(p.id for p in self.policies.values()) + sorted(self.stale["policy"]),
            "interfaces": sorted(self.interfaces),
        }

    def adopt(self, record: Mapping[str, Any]) -> None:
        """Take over a previous process's objects: they are deleted after the first configure
        that no longer needs them (every interface is reconfigured before that)."""
        self._garbage = True
        self.stale["set"].update(int(x) for x in record.get("sets", ()))
        self.stale["rule"].update(int(x) for x in record.get("rules", ()))
        self.stale["policy"].update(int(x) for x in record.get("policies", ()))
        for sw in record.get("interfaces", ()):
            self.cnat_enabled.add(int(sw))
            self.interfaces.setdefault(int(sw), ())

    # ------------------------------------------------------------------ internals

    def _send(self, requests: list[tuple[str, dict[str, Any], str]], what: str) -> list[Any]:
        """Send; raise RenderError naming the first refused request (after all were sent)."""
        return _check(self._results(requests), what)

    def _results(self, requests: list[tuple[str, dict[str, Any], str]]) -> list[Any]:
        if not requests:
            return []
        for name, _f, _o in requests:
            self.calls[name] += 1
        return self.vpp.batch(requests)

    def _desired_members(self, ipsets: Mapping[str, IPSet], key: SetKey) -> tuple[int, frozenset[Any]]:
        if key[0] == "felix":
            ipset = ipsets.get(key[1])
            stype = npol.set_type(ipset, key)
            raw = frozenset(ipset.members) if ipset is not None else frozenset()
            return stype, raw
        return npol.set_type(None, key), npol.derived_members(ipsets, key)

    def _member_requests(
        self, key: SetKey, set_id: int, values: Iterable[Any], is_add: bool
    ) -> list[tuple[str, dict[str, Any], str]]:
        """Member messages for these member values (parsed: `npol.parse_member`)."""
        ordered = npol.sort_members(set(values))
        return [
            (
                "npol_ipset_add_del_members",
                {"set_id": set_id, "is_add": is_add, "members": _wire(ordered[i : i + MEMBERS_PER_MESSAGE])},
                f"ipset {_describe(key)}",
            )
            for i in range(0, len(ordered), MEMBERS_PER_MESSAGE)
        ]

    def _sync_sets(self, ipsets: Mapping[str, IPSet], dirty: set[str]) -> None:
        if not dirty and not self._suspect and not self._replaced:
            return
        requests: list[tuple[str, dict[str, Any], str]] = []
        keys: list[SetKey] = []
        self._suspect.intersection_update(self.sets)
        rebuild: list[SetKey] = sorted(self._suspect, key=repr)
        touched: set[SetKey] = set()
        for felix_id in dirty:
            touched |= self._dependents.get(felix_id, set())
        for key in sorted(touched, key=repr):
            owned = self.sets.get(key)
            if owned is None or key in rebuild:
                continue
            stype, members = self._desired_members(ipsets, key)
            if stype != owned.type:
                rebuild.append(key)
                continue
            if key[0] == "felix":
                # Texts differ; values may not (two texts of one value): delete a value only
                # when no remaining text maps to it.
                ip_port = owned.type == NPOL_IP_AND_PORT
                added_values, added_odd = npol.parse_members(members - owned.members, ip_port)
                removed_values, removed_odd = npol.parse_members(owned.members - members, ip_port)
                odd = owned.odd + added_odd - removed_odd
                removed = {v for v in removed_values if not npol.member_wanted(v, members, odd, ip_port)}
                added = set(added_values)
            else:
                odd = 0
                removed, added = set(owned.members - members), set(members - owned.members)
            if removed and owned.type == NPOL_IP_AND_PORT:
                rebuild.append(key)  # npol's member delete removes more than asked
                continue
            sent = self._member_requests(key, owned.id, added, True)
            sent += self._member_requests(key, owned.id, removed, False)
            requests += sent
            keys += [key] * len(sent)
            owned.members = members
            owned.odd = odd
        # A set to rebuild stays suspect until its rebuild succeeds (`_Filling.finish` clears it),
        # so one that fails, or is not reached, is rebuilt by the next sync.
        self._suspect.update(rebuild)
        results = self._results(requests)
        for key, res in zip(keys, results, strict=True):
            if res.error is not None:
                self._suspect.add(key)  # VPP's content is unknown now: rebuilt next time
        for key in rebuild:
            self._rebuild_set(ipsets, key)
        # Rebuilt sets whose rules were not confirmed to use them: the rules again (the new set
        # got its member changes above), then the sets they replaced. A set whose member changes
        # failed is not swapped in: it is rebuilt (and swapped in then) by the next sync.
        for key in sorted(self._replaced.keys() - set(rebuild) - self._suspect, key=repr):
            self._repoint_rules(key)
        error = _first_error(results, "IP set members")
        if error is not None:
            raise error

    def _rebuild_set(self, ipsets: Mapping[str, IPSet], key: SetKey) -> None:
        """Replace the set by a new one with the model's members, swap it into the rules using
        it, and only then delete the old one. Until the rules are confirmed, the old set's id is
        kept in `_replaced` (VPP's rules may still point at it, so its membership would freeze)."""
        old = self.sets.pop(key)
        replaced = self._replaced.setdefault(key, [])
        replaced.append(old.id)
        try:
            self._create_sets(ipsets, {key}).finish()
        except Exception:
            if key not in self.sets:  # not created: the old set is still the one to rebuild
                replaced.remove(old.id)
                if not replaced:
                    del self._replaced[key]
                self.sets[key] = old
            self._suspect.add(key)
            raise
        self._repoint_rules(key)

    def _repoint_rules(self, key: SetKey) -> None:
        """`npol_rule_update` of each rule using the set, then delete the sets it replaced."""
        users = [spec for spec in self.rules if key in spec.set_keys()]
        ids = self._set_ids()
        self._send(
            [
                ("npol_rule_update", {"rule_id": self.rules[spec], "rule": spec.to_api(ids)}, "rule")
                for spec in users
            ],
            f"rules using rebuilt set {_describe(key)}",
        )
        old_ids = self._replaced.pop(key, [])
        self.ids_changed += 1
        self._send(
            [("npol_ipset_delete", {"set_id": i}, f"ipset {_describe(key)}") for i in old_ids], "set delete"
        )

    def _create_sets(self, ipsets: Mapping[str, IPSet], keys: set[SetKey]) -> _Filling:
        """Create the sets, then send their members in groups, each sent while the next is
        packed. The caller may send other requests (rules, policies) before it calls
        `finish()` on the result, which waits for the members, records them and raises the
        first error; until then nothing may point an interface at the sets."""
        filling = _Filling(self)
        if not keys:
            return filling
        ordered = sorted(keys, key=repr)
        wanted = [self._desired_members(ipsets, k) for k in ordered]
        results = self._results(
            [
                ("npol_ipset_create", {"type": stype}, f"ipset {_describe(k)}")
                for k, (stype, _m) in zip(ordered, wanted, strict=True)
            ]
        )
        filling.error = _first_error(results, "IP set create")
        group: list[tuple[SetKey, frozenset[Any], int]] = []
        requests: list[tuple[str, dict[str, Any], str]] = []
        for key, (stype, members), res in zip(ordered, wanted, results, strict=True):
            if res.error is not None:
                continue
            # Recorded empty and suspect until its members are known to be in: a fill that
            # failed, or whose outcome never came, makes the next `_sync_sets` rebuild the set.
            self.sets[key] = _Set(int(res.reply.set_id), stype, frozenset())
            self._suspect.add(key)
            self.ids_changed += 1
            for felix_id in npol.felix_sets(key):
                self._dependents.setdefault(felix_id, set()).add(key)
            odd = 0
            if key[0] == "felix":
                values, odd = npol.parse_members(members, stype == NPOL_IP_AND_PORT)
            else:
                values = list(members)
            requests += self._member_requests(key, int(res.reply.set_id), values, True)
            group.append((key, members, odd))
            if len(requests) >= FILL_GROUP:
                filling.send(group, requests)
                group, requests = [], []
        filling.send(group, requests)
        if filling.error is not None:
            filling.finish()
        return filling

    def _set_ids(self) -> dict[SetKey, int]:
        return {k: s.id for k, s in self.sets.items()}

    def _create_rules(self, specs: set[NpolRuleSpec]) -> None:
        if not specs:
            return
        ordered = list(specs)
        ids = self._set_ids()
        results = self._results(
            [("npol_rule_create", {"rule": spec.to_api(ids)}, "rule") for spec in ordered]
        )
        for spec, res in zip(ordered, results, strict=True):
            if res.error is None:
                self.rules[spec] = int(res.reply.rule_id)
                self.ids_changed += 1
                self._garbage = True
                self.rule_refs[spec] += 0  # known to the collector even if no policy takes it
                for k in spec.set_keys():
                    self.set_refs[k] += 1
        error = _first_error(results, "rule create")
        if error is not None:
            raise error

    def _policy_fields(self, pkey: PolicyKey, rules: tuple[NpolRuleSpec, ...]) -> dict[str, Any]:
        ids = [self.rules[spec] for spec in rules]
        wire = npol.policy_items_wire(pkey[1], ids)
        return {"rules": WireArray(npol.POLICY_ITEM_WIRE_TYPE, len(ids), wire)}

    def _write_policies(self, contents: Mapping[PolicyKey, tuple[NpolRuleSpec, ...]]) -> None:
        creates: list[PolicyKey] = []
        updates: list[tuple[PolicyKey, tuple[NpolRuleSpec, ...]]] = []
        for pkey, rules in contents.items():
            owned = self.policies.get(pkey)
            if owned is None:
                creates.append(pkey)
            elif owned.rules != rules or owned.maybe is not None:
                updates.append((pkey, owned.rules))
        results = self._results(
            [("npol_policy_create", self._policy_fields(k, contents[k]), _describe_block(k)) for k in creates]
        )
        for pkey, res in zip(creates, results, strict=True):
            if res.error is None:
                self.policies[pkey] = _Policy(int(res.reply.policy_id), contents[pkey])
                self.ids_changed += 1
                self._garbage = True
                self.rule_refs.update(contents[pkey])
        error = _first_error(results, "policy create")
        results = self._results(
            [
                (
                    "npol_policy_update",
                    {"policy_id": self.policies[k].id, **self._policy_fields(k, contents[k])},
                    _describe_block(k),
                )
                for k, _old in updates
            ]
        )
        for (pkey, old_rules), res in zip(updates, results, strict=True):
            pol = self.policies[pkey]
            if res.error is None:
                pol.rules = contents[pkey]
                self.rule_refs.update(contents[pkey])
                self.rule_refs.subtract(old_rules)
                if pol.maybe is not None:
                    self.rule_refs.subtract(pol.maybe)
                    pol.maybe = None
                self._garbage = True
            elif _unknown(res.error):
                # VPP may hold either list now: both stay referenced, and the next write resends.
                maybe = tuple(dict.fromkeys((*(pol.maybe or ()), *contents[pkey])))
                self.rule_refs.update(maybe)
                if pol.maybe is not None:
                    self.rule_refs.subtract(pol.maybe)
                pol.maybe = maybe
        error = error or _first_error(results, "policy update")
        if error is not None:
            raise error

    def _configure_interfaces(self, wanted: Mapping[int, InterfacePolicies]) -> None:
        requests: list[tuple[str, dict[str, Any], str]] = []
        changed: list[tuple[int, InterfacePolicies, tuple[int, ...]]] = []
        for sw, keys in wanted.items():
            rx_ids = [self.policies[k].id for k in keys.rx]
            tx_ids = [self.policies[k].id for k in keys.tx]
            ids = tuple(rx_ids + tx_ids)
            old_keys = self.interface_keys.get(sw)
            if old_keys == keys and self.interfaces.get(sw) == ids and sw not in self._maybe_keys:
                continue
            requests.append(
                (
                    "npol_configure_policies",
                    {
                        "sw_if_index": sw,
                        "num_rx_policies": len(rx_ids),
                        "num_tx_policies": len(tx_ids),
                        "total_ids": len(ids),
                        "invert_rx_tx": 0,
                        "policy_default_rx": DEFAULT_DENY,
                        "policy_default_tx": DEFAULT_DENY,
                        "profile_default_rx": DEFAULT_DENY,
                        "profile_default_tx": DEFAULT_DENY,
                        "policy_ids": list(ids),
                    },
                    f"interface {sw}",
                )
            )
            changed.append((sw, keys, ids))
        results = self.vpp.batch(requests) if requests else []
        self.calls["npol_configure_policies"] += len(requests)
        failed: list[str] = []
        for (sw, keys, ids), res in zip(changed, results, strict=True):
            if res.error is not None or (res.reply is not None and getattr(res.reply, "retval", 0) != 0):
                failed.append(f"interface {sw}: {res.error or f'retval {res.reply.retval}'}")
                if _unknown(res.error):
                    # VPP may use these policies there now: they keep the interface as a user
                    # (never collected under it), and the next configure resends it.
                    self._maybe_keys.setdefault(sw, []).append(keys)
                    for pkey in keys.rx + keys.tx:
                        self.policies[pkey].users.add(sw)
                    self._garbage = True
                continue
            old_keys = self.interface_keys.get(sw)
            for one in ([old_keys] if old_keys is not None else []) + self._maybe_keys.pop(sw, []):
                for pkey in one.rx + one.tx:
                    pol = self.policies.get(pkey)
                    if pol is not None:
                        pol.users.discard(sw)
            for pkey in keys.rx + keys.tx:
                self.policies[pkey].users.add(sw)
            self.interface_keys[sw] = keys
            self._garbage = True
            self.interfaces[sw] = ids
        # Keep users of unchanged interfaces (their keys may have been recomputed).
        for sw, keys in wanted.items():
            if self.interface_keys.get(sw) == keys:
                for pkey in keys.rx + keys.tx:
                    self.policies[pkey].users.add(sw)
        # npol sees nothing where cnat is off: an interface whose enable fails is refused (its
        # ACL, which hands TCP/UDP/SCTP to npol, is then not installed: it stays deny-all).
        cnat_error: RenderError | None = None
        try:
            self.enable_cnat(sw for sw in wanted if sw in self.interface_keys)
        except RenderError as exc:
            cnat_error = exc
        if failed:
            raise RenderError("; ".join(failed))
        if cnat_error is not None:
            raise cnat_error

    def _collect(self) -> None:
        """Delete what nothing uses any more: policies, then rules, then sets."""
        self._garbage = False
        self.ids_changed += 1
        # A recorded id that is ours now was freed by the previous process (after its last
        # record) and handed to us again by VPP: never delete it.
        self.stale["policy"] -= {p.id for p in self.policies.values()}
        self.stale["rule"] -= set(self.rules.values())
        self.stale["set"] -= {x.id for x in self.sets.values()}
        self.stale["set"] -= {i for ids in self._replaced.values() for i in ids}
        dead_policies = [k for k, p in self.policies.items() if not p.users]
        requests = [
            ("npol_policy_delete", {"policy_id": self.policies[k].id}, _describe_block(k))
            for k in dead_policies
        ]
        requests += [
            ("npol_policy_delete", {"policy_id": i}, "stale policy") for i in sorted(self.stale["policy"])
        ]
        for k in dead_policies:
            pol = self.policies.pop(k)
            self.rule_refs.subtract(pol.rules)
            if pol.maybe is not None:
                self.rule_refs.subtract(pol.maybe)
        self._send_deletes(requests)
        self.stale["policy"].clear()
        dead_rules = [spec for spec, n in self.rule_refs.items() if n <= 0]
        requests = []
        for spec in dead_rules:
            del self.rule_refs[spec]
            rule_id = self.rules.pop(spec, None)
            if rule_id is None:
                continue
            requests.append(("npol_rule_delete", {"rule_id": rule_id}, "rule"))
            for k in spec.set_keys():
                self.set_refs[k] -= 1
        requests += [("npol_rule_delete", {"rule_id": i}, "stale rule") for i in sorted(self.stale["rule"])]
        self._send_deletes(requests)
        self.stale["rule"].clear()
        dead_sets = [k for k in self.sets if self.set_refs[k] <= 0]
        requests = []
        for k in dead_sets:
            self.set_refs.pop(k, None)
            for felix_id in npol.felix_sets(k):
                deps = self._dependents.get(felix_id)
                if deps is not None:
                    deps.discard(k)
                    if not deps:
                        del self._dependents[felix_id]
            self._suspect.discard(k)
            requests.append(("npol_ipset_delete", {"set_id": self.sets.pop(k).id}, f"ipset {_describe(k)}"))
            # No rule uses the set any more, so neither can one use the sets it replaced.
            requests += [
                ("npol_ipset_delete", {"set_id": i}, "replaced ipset") for i in self._replaced.pop(k, [])
            ]
        requests += [("npol_ipset_delete", {"set_id": i}, "stale ipset") for i in sorted(self.stale["set"])]
        self._send_deletes(requests)
        self.stale["set"].clear()

    def _send_deletes(self, requests: list[tuple[str, dict[str, Any], str]]) -> None:
        """Deletes: a failure is logged (the object may be gone already), never fatal."""
        if not requests:
            return
        for name, _f, _o in requests:
            self.calls[name] += 1
        for (name, _fields, obj), res in zip(requests, self.vpp.batch(requests), strict=True):
            if res.error is not None:
                log.warning("npol_delete_failed", message=name, object=obj, error=str(res.error))


class _Filling:
    """Member messages of new sets in flight (see `NpolStore._create_sets`)."""

    def __init__(self, store: NpolStore) -> None:
        self.store = store
        self.error: RenderError | None = None
        self.groups: list[tuple[list[tuple[SetKey, frozenset[Any], int]], Any]] = []

    def send(self, group: list[tuple[SetKey, frozenset[Any], int]], requests: list[Any]) -> None:
        if group:
            for name, _f, _o in requests:
                self.store.calls[name] += 1
            self.groups.append((group, self.store.vpp.submit(requests)))

    def finish(self) -> None:
        """Wait for every group; record the members of each set whose messages all succeeded;
        raise the first error (a set create's, else a member message's)."""
        groups, self.groups = self.groups, []
        for group, pending in groups:
            results = pending.results()
            error = _first_error(results, "IP set members")
            self.error = self.error or error
            if error is None:
                for key, members, odd in group:
                    self.store.sets[key].members = members
                    self.store.sets[key].odd = odd
                    self.store._suspect.discard(key)
        if self.error is not None:
            error, self.error = self.error, None
            raise error


def _wire(members: Sequence[Any]) -> WireArray:
    """Members (parsed: `npol.parse_member`) as the message's array, already in wire form."""
    return WireArray(npol.MEMBER_WIRE_TYPE, len(members), npol.members_wire(members))


def _describe(key: SetKey) -> str:
    if key[0] == "felix":
        return str(key[1])
    if key[0] == "and":
        return "AND(" + ",".join(key[2]) + ")"
    return "IPPORT(" + ",".join(key[1]) + ")"


def _describe_block(pkey: PolicyKey) -> str:
    key, is_rx = pkey
    return f"{'/'.join(str(k) for k in key[:3])} ({'rx' if is_rx else 'tx'})"
