"""The VPP dataplane: Felix's desired policy, compiled and programmed into VPP, statuses reported.

Per apply (after Felix's InSync), for the endpoints whose policy may have changed:

1. bind each workload endpoint to its VPP interface: the interface whose tag is the endpoint's
   `name` (the host-side interface name Felix and the CNI plugin agree on); an endpoint
   without one is "down" until it appears;
2. compile both directions (`policy.program`), and lower them for the backend:
   * **npol** (VPP with the npol plugin): tiers and profiles as npol policies (`vpp/npol.py`,
     `vpp/npol_store.py`) for TCP/UDP/SCTP, which is all npol sees, plus an ACL per direction
     (`vpp/acl_rules.py`) that judges every other protocol with the same program;
   * **acl** (any VPP): the whole program as one ACL per direction;
3. program VPP make-before-break: shared objects first, then the interfaces, then deletes;
4. report each endpoint "up" once its policy is in VPP, "error" (with the reason) when VPP
   refused it; every other endpoint is still served.

Fail closed: an interface known to face a pod is never left without policy. Before its
endpoint is programmed, while its endpoint is in error or not active, and after its
endpoint is removed, it carries the deny-all ACL (and, with npol, a configuration that
denies TCP/UDP/SCTP by default). The deny-all ACL is installed before anything else on a
new interface and replaced only by a complete program.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import ip_network
from typing import Any

import structlog

from ..config import Config
from ..felix.status import Health, StatusBoard
from ..model.state import DesiredState, Dirty
from ..model.types import PolicyID, ProfileID, WorkloadEndpointID
from ..policy.program import (
    DENY_ALL,
    Block,
    IdentityMemo,
    Program,
    rebuild_block,
    workload_program,
    workload_source_check,
)
from . import acl_rules, npol
from .acl_rules import AclRule, AclTooLarge
from .acl_store import AclStore, tag_for
from .errors import VppError
from .host_policy import HostPolicyProgrammer
from .nat import NatProgrammer
from .npol import NPOL_PROTOCOLS
from .npol_store import NpolStore, RenderError
from .pods import identity_key, parse_pod_tag, urpf_requests
from .records import read_record, write_record
from .routes import RouteProgrammer

log = structlog.get_logger("calico_vpp_driver.vpp.dataplane")

STATUS_FAMILY = "vpp"
INTERFACE_REFRESH_SECONDS = 0.5
CONNECT_RETRY_SECONDS = 5.0
RECORD_SECONDS = 2.0
# npol backend: the largest exact ACL for the protocols npol cannot see (beyond: they are denied).
OTHER_PROTOCOLS_LIMIT = 2048
STATE_FILE = "npol-objects.json"

DENY_ALL_RULES: tuple[AclRule, ...] = tuple(
    AclRule(0, ip_network(net), ip_network(net), 0, 0, 65535, 0, 65535) for net in ("0.0.0.0/0", "::/0")
)
DENY_ALL_TAG = tag_for(("deny-all",))


@dataclass(frozen=True, slots=True)
class _Programs:
    ingress: Program
    egress: Program


class VppDataplane:
    """`Dataplane` implementation over a `VppClient`-like object (`batch`, `dump`, `supports`,
    `generation`, `instance_id`)."""

    name = "vpp"

    def __init__(
        self,
        client_factory: Callable[[Config], Any],
        *,
        backend: str | None = None,
        config: Config | None = None,
        clock: Callable[[], float] = time.monotonic,
        acl_limit: int = 65536,
    ) -> None:
        self._client_factory = client_factory
        self._forced_backend = backend
        self.config = config or Config()
        self._clock = clock
        self._acl_limit = acl_limit
        self.client: Any = None
        self.backend = ""
        self._generation = 0
        self.acls: AclStore | None = None
        self.npol: NpolStore | None = None
        self.host: HostPolicyProgrammer | None = None
        self.nat: NatProgrammer | None = None
        self.routes: RouteProgrammer | None = None
        self._problems_logged: dict[str, list[str]] = {}  # "nat"/"routes" -> as last logged
        self._full = True
        # Interfaces by what binds them to workload endpoints: the pod's identity in a CNI pod's
        # tag, or the host-side interface name (Felix's WorkloadEndpoint.name) in any tag.
        self._by_name: dict[str, int] = {}
        self._by_identity: dict[str, int] = {}
        # The apply thread and the CNI threads: the CNI side only queues what it did (added
        # interfaces), except that an interface about to be deleted is forgotten under the lock.
        self._lock = threading.RLock()
        self._client_lock = threading.Lock()
        # New pod interfaces from the CNI threads, in order; guarded by its own small lock (an
        # append must never race with the purge of a deleted index, nor be lost by it).
        self._pod_events: list[tuple[int, str]] = []
        self._events_lock = threading.Lock()
        self._lost: set[WorkloadEndpointID] = set()  # endpoints whose interface was deleted
        self._wake: Callable[[], None] = lambda: None
        self._deny_lock = threading.Lock()
        self._deny_acl: tuple[int, int] | None = None  # (client generation, acl_index)
        self._restart_hooks: list[Callable[[], None]] = []
        self._last_refresh = -1e9
        self._bound: dict[WorkloadEndpointID, int] = {}
        self._pod_interfaces: set[int] = set()  # interfaces known to face pods
        self._existing: set[int] = set()  # every interface VPP had at the last look (plus new pods)
        self._urpf_off: set[int] = set()  # interfaces whose endpoint checks sources in its policy
        # After a (re)start the uRPF state a previous process left is unknown (VPP cannot list
        # it): the first apply turns strict uRPF on for every endpoint that does not need it off.
        self._urpf_unknown = True
        self._programs: dict[WorkloadEndpointID, _Programs] = {}
        # ACLs lowered before, by program identity: (the blocks lowered, IP set versions, result).
        self._acl_cache: dict[
            tuple[Any, ...], tuple[tuple[Block, ...], tuple[int, ...], tuple[AclRule, ...] | str]
        ] = {}
        self._set_shapes: dict[str, tuple[bool, int, bool]] = {}
        self._problems: dict[WorkloadEndpointID, list[str]] = {}  # as of the last apply
        self._tags: dict[tuple[Any, ...], str] = {}
        self._acl_sets: dict[WorkloadEndpointID, frozenset[str]] = {}  # endpoint -> sets its ACLs use
        self._set_versions: dict[str, int] = {}  # bumped on every change of an IP set
        self._relevant_cache: dict[tuple[int, ...], tuple[tuple[Block, ...], tuple[str, ...]]] = {}
        self._recorded: dict[str, Any] | None = None
        self._recorded_at = -1
        self._record_written = -1e9
        self._retry_at = 0.0
        self._backoff = 0.0
        self._failing = False  # VPP unreachable or refusing: retry (fully) at _retry_at
        self._waiting = False  # endpoints wait for their interfaces

    # ------------------------------------------------------------------ lifecycle

    def configure(self, cfg: Config) -> None:
        if cfg != self.config:
            self.config = cfg
            self._full = True
            if self.host is not None:
                self.host.configure(cfg)
            if self.nat is not None:
                self.nat.configure(cfg)
            if self.routes is not None:
                self.routes.configure(cfg)

    def new_felix_session(self) -> None:
        self._full = True

    def set_waker(self, wake: Callable[[], None]) -> None:
        """How to bring the apply loop round at once (a pod interface appeared)."""
        self._wake = wake

    def on_vpp_restart(self, hook: Callable[[], None]) -> None:
        """Run `hook` (in a thread of its own: it may take the dataplane's locks) at each new VPP
        connection (the first one, and after VPP restarted): the CNI side makes the pod
        interfaces VPP lost again."""
        self._restart_hooks.append(hook)

    def wants_apply(self) -> bool:
        """Work of its own: a retry whose backoff is over, a new pod interface, or endpoints
        waiting for their interfaces when it is time to look again."""
        now = self._clock()
        if self._failing:
            return now >= self._retry_at
        if self._pod_events or self._lost or (self.nat is not None and self.nat.pending):
            return True
        return self._waiting and now - self._last_refresh >= INTERFACE_REFRESH_SECONDS

    def vpp_client(self) -> Any:
        """The VPP client, made on first use (the CNI server may need it before Felix's InSync)."""
        with self._client_lock:
            if self.client is None:
                self.client = self._client_factory(self.config)
            return self.client

    # ------------------------------------------------------------------ pod interfaces (CNI threads)

    def pod_interface_added(self, sw_if_index: int, tag: str) -> None:
        """A CNI pod's interface exists, with the deny-all on it: bind it at the next apply."""
        with self._events_lock:
            self._pod_events.append((sw_if_index, tag))
        self._wake()

    def pod_interface_removed(self, sw_if_index: int, delete: Callable[[], None]) -> None:
        """Forget the interface and `delete()` it from VPP, both under the apply lock: no apply
        can find it again in between, or program an endpoint's policy on its index (which VPP
        reuses for the next interface) afterwards."""
        with self._lock:
            with self._events_lock:  # an ADD not yet taken must not bind the reused index later
                self._pod_events = [e for e in self._pod_events if e[0] != sw_if_index]
            self._forget_interface(sw_if_index)
            delete()
        self._wake()

    def deny_all_acl(self) -> int:
        """The index of the deny-all ACL, found by its tag or made: one per VPP, shared by the CNI
        side (new pod interfaces) and the policy side (which adopts it by dump)."""
        client = self.vpp_client()
        with self._deny_lock:
            if self._deny_acl is not None and self._deny_acl[0] == client.generation:
                return self._deny_acl[1]
            index = find_or_make_deny_all(client)
            self._deny_acl = (client.generation, index)
            return index

    def _forget_interface(self, sw: int) -> None:
        for key in [k for k, bound in self._bound.items() if bound == sw]:
            del self._bound[key]
            self._lost.add(key)
            self._programs.pop(key, None)
            self._acl_sets.pop(key, None)
        self._pod_interfaces.discard(sw)
        self._existing.discard(sw)
        self._urpf_off.discard(sw)
        for index in (self._by_name, self._by_identity):
            for name in [n for n, s in index.items() if s == sw]:
                del index[name]
        if self.acls is not None:
            self.acls.forget_interface(sw)
        if self.npol is not None:
            self.npol.forget_interface(sw)
        if self.nat is not None:
            self.nat.forget_interface(sw)

    def _take_pod_events(self) -> bool:
        """Index the interfaces the CNI side created since the last apply; True if any."""
        with self._events_lock:
            events, self._pod_events = self._pod_events, []
        for sw, tag in events:
            self._index_interface(sw, tag)
            self._pod_interfaces.add(sw)
            self._existing.add(sw)
        if events:
            self._enable_cnat(self._pod_interfaces)
        return bool(events)

    def _enable_cnat(self, interfaces: Iterable[int]) -> None:
        """cnat's feature on these interfaces (npol runs only as its hook). A failure is logged
        and retried when the interface is configured, which refuses it until cnat is on."""
        if self.npol is None:
            return
        try:
            self.npol.enable_cnat(interfaces)
        except RenderError as exc:
            log.warning("cnat_enable_failed", error=str(exc))

    def _cnat_on_new_tunnels(self, interfaces: Sequence[int]) -> set[int]:
        """The route programmer's hook for a tunnel it made, before the tunnel is up: with npol,
        cnat's feature must be on it (a flow that enters through it is otherwise never looked
        up by cnat, and npol's hooks on the pods it reaches never run). Returns the refused."""
        self._existing.update(interfaces)
        if self.npol is None:
            return set()
        self._enable_cnat(interfaces)
        return set(interfaces) - self.npol.cnat_enabled

    def _index_interface(self, sw: int, tag: str) -> None:
        pod = parse_pod_tag(tag)
        if pod is not None:
            self._by_identity[pod.identity] = sw
            self._by_name[pod.name] = sw
        else:
            self._by_name[tag] = sw

    def _interface_for(self, key: WorkloadEndpointID, name: str) -> int | None:
        sw = self._by_identity.get(identity_key(key.orchestrator_id, key.workload_id, key.endpoint_id))
        if sw is None:
            sw = self._by_name.get(name)
        return sw

    def close(self) -> None:
        if self.client is not None and self.npol is not None:
            self._save_record(now=True)
        if self.client is not None:
            try:
                self.client.close()
            except Exception:
                log.exception("vpp_client_close_failed")

    def connect(self) -> None:
        """Connect to VPP, choose the backend, take over what a previous driver left."""
        self.vpp_client()
        self.backend = ""
        wanted = self._forced_backend or self.config.vpp_policy_backend
        if wanted == "auto":
            wanted = "npol" if self.client.supports("npol") and self.client.supports("acl") else "acl"
        for feature in ("acl",) if wanted == "acl" else ("npol", "acl"):
            if not self.client.supports(feature):
                raise RenderError(
                    f"policy backend {wanted} needs VPP's {feature} plugin, which is not loaded"
                )
        self.backend = wanted
        self._reset_stores()
        log.info("vpp_policy_backend", backend=wanted, vpp_instance=self.client.instance_id)

    def _reset_stores(self) -> None:
        """A new VPP connection (the first, or VPP restarted): start over, and run the hooks."""
        for hook in self._restart_hooks:
            threading.Thread(target=hook, daemon=True, name="vpp-connect-hook").start()
        self._generation = self.client.generation
        self.acls = AclStore(self.client)
        self.npol = NpolStore(self.client) if self.backend == "npol" else None
        self.deny_all_acl()  # exists before the store adopts (the CNI side may be making it)
        self._urpf_off.clear()
        self._urpf_unknown = True
        self._log_urpf_missing()
        self._by_name.clear()
        self._by_identity.clear()
        self._bound.clear()
        self._programs.clear()
        self._acl_sets.clear()
        self._last_refresh = -1e9
        self._full = True
        adopted = self.acls.adopt()
        lists = self._dump_acl_lists()
        self.acls.adopt_interfaces(lists)
        if self.host is None:
            self.host = HostPolicyProgrammer(self.client, self.acls, self.config, acl_limit=self._acl_limit)
        else:
            self.host.reset(self.acls)
        self.host.adopt(lists)
        # cnat's feature must go on an interface once: the npol store and NAT share what is on.
        self.nat = NatProgrammer(self.client, self.config)
        if self.npol is not None:
            self.nat.cnat_enabled = self.npol.cnat_enabled
        self.nat.adopt()
        self.routes = RouteProgrammer(
            self.client,
            self.config,
            enable_cnat=self._cnat_on_new_tunnels,
            interface_deleted=self._forget_interface,
        )
        self.routes.adopt()
        # Interfaces left denying everything are pods' (a host interface never carries the deny-all).
        deny = self.acls.acls.get(DENY_ALL_TAG)
        if deny is not None:
            self._pod_interfaces.update(sw for sw, (ins, _outs) in lists.items() if ins == [deny.index])
        self._pod_interfaces -= self.host.policed_interfaces()
        if self.npol is not None:
            record = self._load_record()
            if record is not None:
                self.npol.adopt(record)
                self._pod_interfaces.update(int(sw) for sw in record.get("interfaces", ()))
        if adopted:
            log.info("vpp_objects_adopted", acls=adopted, interfaces=len(self._pod_interfaces))

    def _dump_acl_lists(self) -> dict[int, tuple[list[int], list[int]]]:
        out: dict[int, tuple[list[int], list[int]]] = {}
        for d in self.client.dump("acl_interface_list_dump", sw_if_index=0xFFFFFFFF):
            acls = list(d.acls)[: d.count]
            out[int(d.sw_if_index)] = (acls[: d.n_input], acls[d.n_input :])
        return out

    # ------------------------------------------------------------------ the npol record

    def _record_path(self) -> str:
        return os.path.join(self.config.vpp_state_dir, STATE_FILE)

    def _load_record(self) -> dict[str, Any] | None:
        data = read_record(self._record_path(), self.client.instance_id, "npol")
        if data is None:
            return None
        npol_record: dict[str, Any] = data.get("npol", {})
        return npol_record

    def _save_record(self, now: bool = False) -> None:
        """Write the npol record, at most every RECORD_SECONDS (a lagging record can only leak
        objects after a crash: the store never deletes a recorded id it owns again)."""
        if self.npol is None or self.npol.ids_changed == self._recorded_at:
            return
        if not now and self._clock() - self._record_written < RECORD_SECONDS:
            return
        self._record_written = self._clock()
        self._recorded_at = self.npol.ids_changed
        record = self.npol.record()
        if record == self._recorded:
            return
        path = self._record_path()
        try:
            write_record(path, self.client.instance_id, {"npol": record})
            self._recorded = record
        except OSError as exc:
            log.error("npol_record_not_written", path=path, error=str(exc))

    # ------------------------------------------------------------------ interfaces

    def _refresh_interfaces(self, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._last_refresh < INTERFACE_REFRESH_SECONDS:
            return
        self._last_refresh = now
        self._by_name.clear()
        self._by_identity.clear()
        every = set()
        for d in self.client.dump("sw_interface_dump", sw_if_index=0xFFFFFFFF):
            tag = str(d.tag).rstrip("\x00")
            sw = int(d.sw_if_index)
            if tag:
                self._index_interface(sw, tag)
                if parse_pod_tag(tag) is not None:
                    self._pod_interfaces.add(sw)
            if sw != 0:
                every.add(sw)
        self._existing = set(every)
        # npol runs only as a cnat hook, and a pod's ingress (VPP tx) hook runs only for
        # packets cnat looked up on the interface they came in by: cnat goes on everywhere.
        self._enable_cnat(every)

    # ------------------------------------------------------------------ apply

    def apply(self, state: DesiredState, dirty: Dirty, board: StatusBoard) -> None:
        with self._lock:
            self._apply_locked(state, dirty, board)

    def _apply_locked(self, state: DesiredState, dirty: Dirty, board: StatusBoard) -> None:
        now = self._clock()
        if self._failing and now < self._retry_at:
            return  # backing off; the retry is a full apply, so nothing in `dirty` is lost
        if self.client is None or not self.backend:
            try:
                self.connect()
            except Exception as exc:
                self._failing, self._retry_at = True, now + CONNECT_RETRY_SECONDS
                log.error("vpp_unavailable", error=str(exc), retry_in_seconds=CONNECT_RETRY_SECONDS)
                for key in state.workload_endpoints:
                    board.report(key, STATUS_FAMILY, Health.DOWN, f"VPP unavailable: {exc}")
                return
        elif self.client.generation != self._generation:
            log.warning("vpp_restarted", detail="reprogramming everything from the model")
            self._reset_stores()
        # Every ingress program starts with this node's addresses (policy.program
        # host_to_workload): a change of them is a change of every program.
        full = self._full or "in_sync" in dirty.other or self.config.felix_hostname in dirty.host_metadata
        for set_id in dirty.ipsets:
            self._set_versions[set_id] = self._set_versions.get(set_id, 0) + 1
        fresh = self._take_pod_events()
        for key in self._lost:
            if key in state.workload_endpoints and key not in self._bound:
                board.report(key, STATUS_FAMILY, Health.DOWN, "its VPP interface was deleted")
        self._lost.clear()
        if full:
            keys: set[WorkloadEndpointID] = set(state.workload_endpoints)
            self._refresh_interfaces(force=True)
        else:
            keys = {k for k in state.endpoints_affected(dirty) if isinstance(k, WorkloadEndpointID)}
            waiting = [k for k in state.workload_endpoints if k not in self._bound]
            if waiting:
                if not fresh:  # interfaces made outside the driver are found by looking
                    self._refresh_interfaces()
                keys.update(
                    k for k in waiting if self._interface_for(k, state.workload_endpoints[k].name) is not None
                )
        removed = {k for k in self._bound if k not in state.workload_endpoints}
        sets_only = not full and not (
            dirty.policies
            or dirty.profiles
            or dirty.workload_endpoints
            or dirty.host_endpoints
            or dirty.other
        )
        try:
            fast = not full and not removed and self._members_only(state, dirty)
            if fast:
                try:
                    self._apply_members(state, dirty.ipsets)
                except _SlowPath:
                    fast = False
            elif not full and not removed and self._owners_only(state, dirty):
                fast = self._apply_owners(state, dirty, board)
            if not fast:
                quick: dict[object, set[str]] | None = None
                if not full and all(
                    self._set_shapes.get(x) == self._set_shape(state, x) for x in dirty.ipsets
                ):
                    # Only these policies/profiles can have brought (or cleared) problems.
                    quick = {pid: state.owner_problems(pid) for pid in dirty.policies}
                    quick.update({ProfileID(n): state.owner_problems(ProfileID(n)) for n in dirty.profiles})
                self._apply(state, keys, removed, dirty, quick, sets_only, full, board)
            for set_id in dirty.ipsets if not full else state.ipsets:
                self._set_shapes[set_id] = self._set_shape(state, set_id)
        except (RenderError, VppError) as exc:
            # VPP refused an object, or a request's outcome is unknown (a timeout, a lost
            # connection): either way what VPP holds is not known to be the model's, so the
            # retry is a full apply (suspect sets are rebuilt, every interface reconfigured).
            self._backoff = min(self._backoff * 2, 30.0) if self._backoff else 1.0
            self._retry_at = self._clock() + self._backoff
            log.error("vpp_programming_failed", error=str(exc), retry_in_seconds=self._backoff)
            what = "VPP refused its policy" if isinstance(exc, RenderError) else "its policy is not in VPP"
            for key in keys:
                if key in state.workload_endpoints:
                    board.report(key, STATUS_FAMILY, Health.ERROR, f"{what}: {exc}")
            self._full = True  # the retry recomputes everything (cheap: diffs against what VPP has)
            self._failing = True
            self._save_record()
            return
        self._failing, self._backoff = False, 0.0
        if self.host is not None:
            # Host endpoints: ACLs on the uplink and the host tap (vpp/host_policy.py).
            self.host.apply(state, dirty, full, board)
        if self.routes is not None:
            self._apply_part("routes", lambda: self.routes.apply(state, dirty, full) if self.routes else [])
        if self.nat is not None:
            self._apply_part(
                "nat", lambda: self.nat.apply(state, dirty, full, dict(self._bound)) if self.nat else []
            )
        if full:
            self._full = False
        # Endpoints waiting for their interfaces bring the loop back (wants_apply) even when
        # Felix sends nothing; interfaces are looked for at most every INTERFACE_REFRESH_SECONDS.
        self._waiting = any(k not in self._bound for k in state.workload_endpoints)
        self._save_record()

    def _apply_part(self, part: str, apply: Callable[[], list[str]]) -> None:
        """Routes (vpp/routes.py) or NAT (vpp/nat.py): each reports its problems (naming the
        route, pool or endpoint); they are logged when they change. Each retries what failed
        at the next apply."""
        try:
            problems = apply()
        except Exception as exc:  # VPP unusable as a whole: the next apply starts over
            problems = [f"{part} not programmed: {exc}"]
        before = self._problems_logged.get(part, [])
        if problems != before:
            for problem in problems:
                log.warning(f"{part}_problem", problem=problem)
            if not problems and before:
                log.info(f"{part}_problems_cleared")
            self._problems_logged[part] = problems

    def problems(self, part: str) -> list[str]:
        """The routes or NAT problems as of the last apply (for tests and `show`)."""
        return list(self._problems_logged.get(part, []))

    def _apply(
        self,
        state: DesiredState,
        keys: set[WorkloadEndpointID],
        removed: set[WorkloadEndpointID],
        dirty: Dirty,
        quick: dict[object, set[str]] | None,
        sets_only: bool,
        full: bool,
        board: StatusBoard,
    ) -> None:
        dirty_sets = dirty.ipsets
        if full and self.npol is not None:
            self.npol.prefill(state.ipsets, [i for i in state.ipsets if state.ipset_users(i)])
        memo: dict[Any, Block] = {}  # blocks checked against this state, shared by endpoints
        targets: dict[int, tuple[WorkloadEndpointID, _Programs] | None] = {}
        for key in removed:
            sw = self._bound.pop(key, None)
            self._programs.pop(key, None)
            self._problems.pop(key, None)
            self._acl_sets.pop(key, None)
            if sw is not None:
                targets[sw] = None
        waiting: list[WorkloadEndpointID] = []
        for key in sorted(keys):
            ep = state.workload_endpoints.get(key)
            if ep is None:
                continue
            sw = self._interface_for(key, ep.name)
            if sw is None:
                sw = self._bound.get(key)
                if sw is not None and sw not in self._existing:  # deleted behind the driver's back
                    self._forget_interface(sw)
                    sw = None
            if sw is None:
                waiting.append(key)
                continue
            old_sw = self._bound.get(key)
            if old_sw is not None and old_sw != sw:
                targets.setdefault(old_sw, None)
            self._bound[key] = sw
            self._pod_interfaces.add(sw)
            problems = self._endpoint_problems(
                state, key, quick if key not in dirty.workload_endpoints else None
            )
            programs = _Programs(
                workload_program(state, self.config, key, "ingress", problems, memo),
                workload_program(state, self.config, key, "egress", problems, memo),
            )
            acl_sets = self._program_sets(programs)
            if sets_only and self._programs.get(key) == programs and dirty_sets.isdisjoint(acl_sets):
                continue  # only IP set members changed, and npol's sets carry them
            self._programs[key] = programs
            self._acl_sets[key] = acl_sets
            targets[sw] = (key, programs)
        if full:
            bound = set(self._bound.values())
            existing = set(self._by_name.values())
            for sw in self._pod_interfaces - bound:
                if sw in existing:
                    targets.setdefault(sw, None)
        for key in waiting:
            name = state.workload_endpoints[key].name
            board.report(key, STATUS_FAMILY, Health.DOWN, f"waiting for its VPP interface (tag {name!r})")
        # Source checks: strict uRPF back on before a program without the check goes in; off only
        # once the program that checks sources itself is in (never a window for other sources).
        checked = {
            sw: workload_source_check(self.config, state.workload_endpoints[t[0]]) is not None
            for sw, t in targets.items()
            if t is not None
        }
        self._set_urpf(
            [sw for sw, c in checked.items() if not c and (self._urpf_unknown or sw in self._urpf_off)],
            strict=True,
        )
        if full:
            self._urpf_unknown = False
        failed = self._program_interfaces(targets, state, dirty_sets if not full else set(state.ipsets))
        self._set_urpf(
            [sw for sw, c in checked.items() if c and sw not in failed and sw not in self._urpf_off],
            strict=False,
        )
        for sw, target in targets.items():
            if target is None:
                continue
            key, programs = target
            reason = failed.get(sw)
            if reason is not None:
                board.report(key, STATUS_FAMILY, Health.ERROR, reason)
            else:
                board.report(key, STATUS_FAMILY, Health.UP)

    def _set_urpf(self, interfaces: Sequence[int], *, strict: bool) -> None:
        """Strict uRPF (a pod sends only from the addresses routed to it) on or off, both families.
        Failing to turn it back on is an error (the apply is retried); failing to turn it off
        only denies more (logged). Strict is asked as `pods.urpf_requests` says (after a
        restart the interfaces' uRPF state is unknown)."""
        if not interfaces:
            return
        if not self.client.supports("urpf"):
            return  # logged at connect (_log_urpf_missing)
        requests = [r for sw in interfaces for r in urpf_requests(sw, strict=strict, obj=f"interface {sw}")]
        results = self.client.batch(requests)
        for sw in interfaces:
            if any(r.error is not None for r in results if r.obj == f"interface {sw}"):
                if strict:
                    raise RenderError(f"VPP refused strict uRPF on interface {sw}")
                log.warning("urpf_not_relaxed", sw_if_index=sw, detail="spoofing allowances not usable")
            elif strict:
                self._urpf_off.discard(sw)
            else:
                self._urpf_off.add(sw)

    def _log_urpf_missing(self) -> None:
        """At each VPP connection: without VPP's urpf plugin nothing checks that a pod sends
        from its own addresses. Endpoints still report "up": their policy is in VPP, and
        "error" would only make Felix drop their status files (and pods waiting for them would
        hang); the node-wide gap is this error, at every connection."""
        if self.client.supports("urpf"):
            return
        log.error(
            "urpf_plugin_missing",
            plugin="urpf_plugin.so",
            detail="VPP has no urpf plugin: pods' source addresses are not checked (a pod can send "
            "with any source address; policies that allow by source address can be bypassed). "
            "Load urpf_plugin.so in VPP's startup.conf",
        )

    def _endpoint_problems(
        self, state: DesiredState, key: WorkloadEndpointID, quick: dict[object, set[str]] | None
    ) -> list[str]:
        """`DesiredState.endpoint_problems`, without re-checking every policy of an endpoint
        that had none when only some of its policies/profiles changed (`quick`: their problems)."""
        if quick is not None and self._problems.get(key) == []:
            ep = state.workload_endpoints[key]
            found: set[str] = set()
            for owner, problems in quick.items():
                uses = (
                    owner.name in ep.profile_ids if isinstance(owner, ProfileID) else owner in ep.policy_ids()
                )
                if problems and uses:
                    found |= problems
            result = sorted(found)
        else:
            result = state.endpoint_problems(key)
        self._problems[key] = result
        return result

    def _judged_sets(self, judged: Program) -> tuple[str, ...]:
        """The IP sets an ACL's program uses (cached by the program's blocks)."""
        ckey = tuple(id(b) for b in judged.blocks)
        hit = self._relevant_cache.get(ckey)
        if hit is not None and all(a is b for a, b in zip(hit[0], judged.blocks, strict=True)):
            return hit[1]
        sets = tuple(sorted(frozenset().union(*(_block_sets(b) for b in judged.blocks))))
        if len(self._relevant_cache) > 10_000:
            self._relevant_cache.clear()
        self._relevant_cache[ckey] = (judged.blocks, sets)
        return sets

    def _program_sets(self, programs: _Programs) -> frozenset[str]:
        """The IP sets whose members the endpoint's ACLs depend on."""
        out: set[str] = set()
        for program in (programs.ingress, programs.egress):
            judged = npol.other_protocols_program(program) if self.npol is not None else program
            out.update(self._judged_sets(judged))
        return frozenset(out)

    def _set_shape(self, state: DesiredState, set_id: str) -> tuple[bool, int, bool]:
        ipset = state.ipsets.get(set_id)
        return (False, -1, False) if ipset is None else (True, ipset.type, bool(ipset.bad_members))

    def _members_only(self, state: DesiredState, dirty: Dirty) -> bool:
        """Only IP set members changed, in ways no endpoint's validity depends on: the sets are
        updated in place and no program needs recomputing."""
        if (
            dirty.policies
            or dirty.profiles
            or dirty.workload_endpoints
            or dirty.host_endpoints
            or dirty.other
        ):
            return False
        if any(k not in self._bound for k in state.workload_endpoints):
            return False  # endpoints are waiting for interfaces: take the normal path
        return all(self._set_shapes.get(s) == self._set_shape(state, s) for s in dirty.ipsets)

    def _owners_only(self, state: DesiredState, dirty: Dirty) -> bool:
        """Only policies/profiles changed (not endpoints, sets or config)."""
        if dirty.ipsets or dirty.workload_endpoints or dirty.host_endpoints or dirty.other:
            return False
        return bool(dirty.policies or dirty.profiles)

    def _apply_owners(self, state: DesiredState, dirty: Dirty, board: StatusBoard) -> bool:
        """A policy or profile changed content: block keys (policy IDs) stay the same, so each
        endpoint's program changes only in the blocks holding it; swap those blocks in and
        program. False: this change needs the general path (new problems, unbound endpoints)."""
        owners: list[PolicyID | ProfileID] = [*dirty.policies, *(ProfileID(n) for n in dirty.profiles)]
        users: set[WorkloadEndpointID] = set()
        for owner in owners:
            if state.owner_problems(owner):
                return False
            found = (
                state.profile_users(owner.name) if isinstance(owner, ProfileID) else state.policy_users(owner)
            )
            users.update(k for k in found if isinstance(k, WorkloadEndpointID))
        for key in users:
            if key not in self._programs or key not in self._bound or self._problems.get(key) != []:
                return False
        changed_policies = set(dirty.policies)
        changed_profiles = set(dirty.profiles)

        def touched(block: Block) -> bool:
            k = block.key
            if k[0] == "tier":
                return not changed_policies.isdisjoint(k[3])  # type: ignore[arg-type]
            return k[0] == "profile" and k[2] in changed_profiles

        fresh: dict[Any, Block] = {}
        cut_same: dict[Any, bool] = {}
        targets: dict[int, tuple[WorkloadEndpointID, _Programs] | None] = {}
        for key in users:
            old = self._programs[key]
            progs = []
            acl_same = self.npol is not None
            for program in (old.ingress, old.egress):
                blocks = []
                for block in program.blocks:
                    if touched(block):
                        if block.key not in fresh:
                            # With npol, the ACL judges only other protocols: unchanged if the cut is.
                            old_cut = npol.other_protocols_block(block)
                            fresh[block.key] = rebuild_block(state, block)
                            cut_same[block.key] = npol.other_protocols_block(fresh[block.key]) is old_cut
                        acl_same = acl_same and cut_same[block.key]
                        block = fresh[block.key]
                    blocks.append(block)
                progs.append(Program(tuple(blocks), program.final, program.denied_because))
            programs = _Programs(progs[0], progs[1])
            self._programs[key] = programs
            sw = self._bound[key]
            if acl_same:
                board.report(key, STATUS_FAMILY, Health.UP)
            else:
                self._acl_sets[key] = self._program_sets(programs)
                targets[sw] = (key, programs)
        if self.npol is not None:
            # The npol policies of the changed blocks, rewritten in place: every interface using
            # them sees the change at once, and none needs reconfiguring.
            self.npol.update_blocks(state.ipsets, [(b, b.key[1] == "egress") for b in fresh.values()])
        failed = self._program_interfaces(targets, state, ())
        for sw, target in targets.items():
            if target is not None:
                reason = failed.get(sw)
                board.report(target[0], STATUS_FAMILY, Health.ERROR if reason else Health.UP, reason or "")
        return True

    def _apply_members(self, state: DesiredState, dirty_sets: set[str]) -> None:
        if self.npol is not None:
            self.npol.configure(state.ipsets, {}, dirty_sets)
        assert self.acls is not None
        kind = "other" if self.npol is not None else "all"
        acls: dict[str, tuple[AclRule, ...]] = {}
        for key, programs in self._programs.items():
            if dirty_sets.isdisjoint(self._acl_sets.get(key, ())):
                continue
            for program in (programs.egress, programs.ingress):
                got = self._lowered(state, kind, program)
                if isinstance(got, str):
                    raise _SlowPath(got)
                acls[got[0]] = got[1]
        self.acls.ensure(acls)

    # ------------------------------------------------------------------ programming

    def _lowered(
        self, state: DesiredState, kind: str, program: Program
    ) -> tuple[str, tuple[AclRule, ...]] | str:
        """(tag, rules) of the ACL for a program, or the reason it cannot be rendered.

        Lowering is the expensive step (IP sets become prefixes), so results are kept across
        applies, keyed by what the ACL judges (on npol interfaces: the program as packets other
        than TCP/UDP/SCTP see it) and valid while the IP sets it uses are unchanged.
        """
        if program.deny_all:
            return DENY_ALL_TAG, DENY_ALL_RULES
        # Keyed by the program's identity (its blocks), not its content: a changed policy or IP
        # set rewrites the same ACL in place, and no interface needs touching.
        identity = (kind, tuple(b.key for b in program.blocks), program.final)
        tag = self._tags.get(identity)
        if tag is None:
            if len(self._tags) > 100_000:
                self._tags.clear()
            tag = self._tags[identity] = tag_for(identity)
        delegate = NPOL_PROTOCOLS if kind == "other" else frozenset()
        judged = npol.other_protocols_program(program) if kind == "other" else program
        sets = self._judged_sets(judged)
        versions = tuple(self._set_versions.get(s, 0) for s in sets)
        ckey = (kind, tuple(b.key for b in judged.blocks), judged.final)
        cached = self._acl_cache.get(ckey)
        if (
            cached is not None
            and cached[1] == versions
            and len(cached[0]) == len(judged.blocks)
            and all(a is b for a, b in zip(cached[0], judged.blocks, strict=True))
        ):
            result = cached[2]
        else:
            limit = min(self._acl_limit, OTHER_PROTOCOLS_LIMIT) if kind == "other" else self._acl_limit
            result = self._lower(state, judged, delegate, limit)
            if isinstance(result, str) and kind == "other":
                # Exact is too big: deny every protocol npol does not judge (fail closed).
                log.warning(
                    "other_protocols_denied",
                    block=str(program.blocks[0]) if program.blocks else "",
                    reason=result,
                    detail="protocols other than TCP/UDP/SCTP (ICMP...) are denied on the endpoints with "
                    "this policy: their exact ACL would be too large",
                )
                result = acl_rules.lower_program(state, DENY_ALL, delegate=delegate)
            if len(self._acl_cache) > 4096:
                self._acl_cache.clear()
            self._acl_cache[ckey] = (judged.blocks, versions, result)
        return result if isinstance(result, str) else (tag, result)

    @staticmethod
    def _lower(
        state: DesiredState, program: Program, delegate: frozenset[int], limit: int
    ) -> tuple[AclRule, ...] | str:
        guess = acl_rules.estimate_rules(state, program)
        if guess > limit:
            return f"its policy needs about {guess} ACL rules, more than the limit of {limit}"
        try:
            return acl_rules.lower_program(state, program, delegate=delegate, limit=limit) or DENY_ALL_RULES
        except AclTooLarge as exc:
            return f"its policy needs more ACL rules than the limit ({exc})"

    def _program_interfaces(
        self,
        targets: Mapping[int, tuple[WorkloadEndpointID, _Programs] | None],
        state: DesiredState,
        dirty_sets: Iterable[str],
    ) -> dict[int, str]:
        """Program each interface (None = deny all); returns interface -> failure reason."""
        assert self.acls is not None
        failed: dict[int, str] = {}
        kind = "other" if self.npol is not None else "all"
        wanted_acls: dict[str, tuple[AclRule, ...]] = {DENY_ALL_TAG: DENY_ALL_RULES}  # always kept
        lists: dict[int, tuple[list[str], list[str]]] = {}
        npol_blocks: dict[int, tuple[Sequence[Block], Sequence[Block]] | None] = {}
        # Per apply, by the identity of the program's blocks (hashing a program would hash every rule).
        lowered_cache: dict[tuple[Any, ...], tuple[str, tuple[AclRule, ...]] | str] = {}
        for sw, target in targets.items():
            if target is None:
                lists[sw] = ([DENY_ALL_TAG], [DENY_ALL_TAG])
                npol_blocks[sw] = None
                continue
            _key, programs = target
            tags = []
            for program in (programs.egress, programs.ingress):
                ck = (kind, tuple(id(b) for b in program.blocks), program.final, program.denied_because)
                got = lowered_cache.get(ck)
                if got is None:
                    got = lowered_cache[ck] = self._lowered(state, kind, program)
                if isinstance(got, str):
                    failed[sw] = got
                    break
                wanted_acls[got[0]] = got[1]
                tags.append(got[0])
            if sw in failed:
                lists[sw] = ([DENY_ALL_TAG], [DENY_ALL_TAG])
                npol_blocks[sw] = None
                continue
            lists[sw] = ([tags[0]], [tags[1]])
            npol_blocks[sw] = (programs.egress.blocks, programs.ingress.blocks)
        # 1. ACLs exist (created or replaced in place) before any interface lists them.
        self.acls.ensure(wanted_acls)
        closing = {sw: lst for sw, lst in lists.items() if npol_blocks.get(sw) is None}
        opening = {sw: lst for sw, lst in lists.items() if npol_blocks.get(sw) is not None}
        # 2. Interfaces losing their policy, and interfaces nobody put the deny-all on (created
        #    outside the driver): deny-all ACL first, it covers every protocol while npol's part
        #    is being set up.
        unguarded = {sw: ([DENY_ALL_TAG], [DENY_ALL_TAG]) for sw in opening if sw not in self.acls.interfaces}
        for sw in self.acls.set_interfaces({**closing, **unguarded}):
            failed[sw] = "VPP refused its deny-all ACL list"
        # 3. npol: objects, then interface configurations.
        if self.npol is not None:
            self.npol.configure(state.ipsets, npol_blocks, dirty_sets)
        # 4. Interfaces gaining or changing policy: the ACL that hands TCP/UDP/SCTP to npol
        #    goes on only after npol is configured.
        for sw in self.acls.set_interfaces(opening):
            failed[sw] = "VPP refused its ACL list"
        self.acls.collect(keep=frozenset({DENY_ALL_TAG}))
        return failed


def _sets_of_block(block: Block) -> frozenset[str]:
    return frozenset(s for rule in block.rules for s in rule.ip_set_ids())


# Endpoints share blocks, and a block holds a tier's worth of rules.
_block_sets = IdentityMemo(_sets_of_block, 50_000)


def find_or_make_deny_all(client: Any) -> int:
    """The deny-all ACL's index (by its tag in `acl_dump`), made if VPP has none."""
    for d in client.dump("acl_dump", acl_index=0xFFFFFFFF):
        if str(d.tag).rstrip("\x00") == DENY_ALL_TAG:
            return int(d.acl_index)
    rules = [r.to_api() for r in DENY_ALL_RULES]
    return int(client.call("acl_add_replace", acl_index=0xFFFFFFFF, tag=DENY_ALL_TAG, r=rules).acl_index)


class _SlowPath(Exception):
    """A members-only change needs the full path after all (an ACL would be too large)."""


def rule_counts(acls: AclStore) -> dict[str, int]:
    """ACL count and total rules (for benchmarks and logs)."""
    total = sum(len(a.rules or ()) for a in acls.acls.values())
    return {"acls": len(acls.acls), "acl_rules": total}


__all__ = ["VppDataplane", "rule_counts"]
