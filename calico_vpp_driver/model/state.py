"""The desired state: everything Felix has told the driver, with the indexes renderers need.

Pure and synchronous: no I/O, no protobuf, no VPP. Every mutation records what
it touched in `dirty`, so the apply loop renders only what changed since the
last apply; reverse indexes answer "who uses this IP set / policy / profile"
without scanning. `in_sync` flips once Felix has sent its complete state;
before that, nothing downstream may delete anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .members import split_valid
from .types import (
    IPSET_IP_AND_PORT,
    IPSET_TYPE_NAMES,
    VTEP,
    Encapsulation,
    EndpointKey,
    HostEndpoint,
    HostEndpointID,
    HostMetadata,
    IPNetwork,
    IPPool,
    IPSet,
    Policy,
    PolicyID,
    Profile,
    ProfileID,
    Route,
    RuleOwner,
    Service,
    WorkloadEndpoint,
    WorkloadEndpointID,
)


@dataclass(slots=True)
class Dirty:
    """Keys changed (updated or removed) since the last `take_dirty()`.

    A key whose object is no longer in the model was removed.
    """

    ipsets: set[str] = field(default_factory=set)
    policies: set[PolicyID] = field(default_factory=set)
    profiles: set[str] = field(default_factory=set)
    workload_endpoints: set[WorkloadEndpointID] = field(default_factory=set)
    host_endpoints: set[HostEndpointID] = field(default_factory=set)
    host_metadata: set[str] = field(default_factory=set)
    ip_pools: set[str] = field(default_factory=set)
    routes: set[IPNetwork] = field(default_factory=set)
    vteps: set[str] = field(default_factory=set)
    services: set[tuple[str, str]] = field(default_factory=set)
    # Singletons and informational objects: names of what changed.
    other: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return any(
            (
                self.ipsets,
                self.policies,
                self.profiles,
                self.workload_endpoints,
                self.host_endpoints,
                self.host_metadata,
                self.ip_pools,
                self.routes,
                self.vteps,
                self.services,
                self.other,
            )
        )


@dataclass(slots=True)
class _HostMetadataSources:
    """Per-family records for one host; see `DesiredState.host_metadata`.

    Calico v3.33 sends one message family (14/18) with everything; v3.32 sent
    three independent families (14/18 IPv4 only, 35/36 IPv6 only, 37/38 all),
    each with its own removes. Keeping them apart makes both exact.
    """

    main: HostMetadata | None = None  # payload 14 (v3.33 all fields; v3.32 IPv4)
    v6: HostMetadata | None = None  # payload 35 (v3.32)
    v4v6: HostMetadata | None = None  # payload 37 (v3.32)

    def merged(self, hostname: str) -> HostMetadata | None:
        records = [r for r in (self.v4v6, self.main, self.v6) if r is not None]
        if not records:
            return None

        def first(attr: str) -> Any:
            for r in records:
                value = getattr(r, attr)
                if value:
                    return value
            return getattr(records[0], attr)

        return HostMetadata(
            hostname=hostname,
            ipv4_addr=first("ipv4_addr"),
            ipv4_net=first("ipv4_net"),
            ipv6_addr=first("ipv6_addr"),
            ipv6_net=first("ipv6_net"),
            asnumber=first("asnumber"),
            labels=first("labels"),
        )


class DesiredState:
    """What Felix wants the dataplane to be, plus indexes and dirty tracking."""

    def __init__(self) -> None:
        self.in_sync = False
        self.raw_config: dict[str, str] = {}
        self.ipsets: dict[str, IPSet] = {}
        self.policies: dict[PolicyID, Policy] = {}
        self.profiles: dict[str, Profile] = {}
        self.workload_endpoints: dict[WorkloadEndpointID, WorkloadEndpoint] = {}
        self.host_endpoints: dict[HostEndpointID, HostEndpoint] = {}
        self.host_metadata: dict[str, HostMetadata] = {}
        self._host_metadata_sources: dict[str, _HostMetadataSources] = {}
        self.ip_pools: dict[str, IPPool] = {}
        self.routes: dict[IPNetwork, Route] = {}
        self.vteps: dict[str, VTEP] = {}
        self.encapsulation = Encapsulation()
        self.services: dict[tuple[str, str], Service] = {}
        # Informational: Felix already compiled these into IP sets.
        self.namespaces: dict[str, dict[str, str]] = {}
        self.service_accounts: dict[tuple[str, str], dict[str, str]] = {}
        # Stored, not acted on (see README).
        self.wireguard_endpoints: dict[str, dict[str, str]] = {}
        self.wireguard_endpoints_v6: dict[str, dict[str, str]] = {}
        self.bgp_config: dict[str, Any] | None = None

        self.dirty = Dirty()
        # Reverse indexes.
        self._ipset_users: dict[str, set[RuleOwner]] = {}
        self._policy_users: dict[PolicyID, set[EndpointKey]] = {}
        self._profile_users: dict[str, set[EndpointKey]] = {}

    # ----------------------------------------------------------------- sync / dirty

    def mark_in_sync(self) -> None:
        self.in_sync = True
        self.dirty.other.add("in_sync")

    def take_dirty(self) -> Dirty:
        dirty, self.dirty = self.dirty, Dirty()
        return dirty

    # ----------------------------------------------------------------- IP sets

    def update_ipset(self, set_id: str, set_type: int, members: Sequence[str]) -> IPSet:
        good, bad = split_valid(set_type, members)
        ipset = IPSet(set_id, set_type, good, bad)
        self.ipsets[set_id] = ipset
        self.dirty.ipsets.add(set_id)
        return ipset

    def delta_ipset(self, set_id: str, added: Sequence[str], removed: Iterable[str]) -> IPSet:
        """Apply a delta. Raises KeyError for an unknown set (bad content from Felix)."""
        ipset = self.ipsets[set_id]
        removed_set = set(removed)
        ipset.members -= removed_set
        ipset.bad_members -= removed_set
        good, bad = split_valid(ipset.type, added)
        ipset.members |= good
        ipset.bad_members |= bad
        self.dirty.ipsets.add(set_id)
        return ipset

    def remove_ipset(self, set_id: str) -> bool:
        if self.ipsets.pop(set_id, None) is None:
            return False
        self.dirty.ipsets.add(set_id)
        return True

    # ----------------------------------------------------------------- policies, profiles

    def update_policy(self, policy: Policy) -> None:
        old = self.policies.get(policy.id)
        self._reindex_rules(policy.id, old.ip_set_ids() if old else frozenset(), policy.ip_set_ids())
        self.policies[policy.id] = policy
        self.dirty.policies.add(policy.id)

    def remove_policy(self, policy_id: PolicyID) -> bool:
        old = self.policies.pop(policy_id, None)
        if old is None:
            return False
        self._reindex_rules(policy_id, old.ip_set_ids(), frozenset())
        self.dirty.policies.add(policy_id)
        return True

    def update_profile(self, profile: Profile) -> None:
        old = self.profiles.get(profile.name)
        owner = ProfileID(profile.name)
        self._reindex_rules(owner, old.ip_set_ids() if old else frozenset(), profile.ip_set_ids())
        self.profiles[profile.name] = profile
        self.dirty.profiles.add(profile.name)

    def remove_profile(self, name: str) -> bool:
        old = self.profiles.pop(name, None)
        if old is None:
            return False
        self._reindex_rules(ProfileID(name), old.ip_set_ids(), frozenset())
        self.dirty.profiles.add(name)
        return True

    def _reindex_rules(self, owner: RuleOwner, old: frozenset[str], new: frozenset[str]) -> None:
        for set_id in old - new:
            users = self._ipset_users.get(set_id)
            if users is not None:
                users.discard(owner)
                if not users:
                    del self._ipset_users[set_id]
        for set_id in new - old:
            self._ipset_users.setdefault(set_id, set()).add(owner)

    # ----------------------------------------------------------------- endpoints

    def update_workload_endpoint(self, ep: WorkloadEndpoint) -> None:
        old = self.workload_endpoints.get(ep.id)
        self._reindex_endpoint(ep.id, old, ep)
        self.workload_endpoints[ep.id] = ep
        self.dirty.workload_endpoints.add(ep.id)

    def remove_workload_endpoint(self, ep_id: WorkloadEndpointID) -> bool:
        old = self.workload_endpoints.pop(ep_id, None)
        if old is None:
            return False
        self._reindex_endpoint(ep_id, old, None)
        self.dirty.workload_endpoints.add(ep_id)
        return True

    def update_host_endpoint(self, ep: HostEndpoint) -> None:
        old = self.host_endpoints.get(ep.id)
        self._reindex_endpoint(ep.id, old, ep)
        self.host_endpoints[ep.id] = ep
        self.dirty.host_endpoints.add(ep.id)

    def remove_host_endpoint(self, ep_id: HostEndpointID) -> bool:
        old = self.host_endpoints.pop(ep_id, None)
        if old is None:
            return False
        self._reindex_endpoint(ep_id, old, None)
        self.dirty.host_endpoints.add(ep_id)
        return True

    def _reindex_endpoint(
        self,
        key: EndpointKey,
        old: WorkloadEndpoint | HostEndpoint | None,
        new: WorkloadEndpoint | HostEndpoint | None,
    ) -> None:
        old_pols = old.policy_ids() if old else frozenset()
        new_pols = new.policy_ids() if new else frozenset()
        old_profs = frozenset(old.profile_ids) if old else frozenset()
        new_profs = frozenset(new.profile_ids) if new else frozenset()
        _move(self._policy_users, key, old_pols, new_pols)
        _move(self._profile_users, key, old_profs, new_profs)

    def endpoint(self, key: EndpointKey) -> WorkloadEndpoint | HostEndpoint | None:
        if isinstance(key, WorkloadEndpointID):
            return self.workload_endpoints.get(key)
        return self.host_endpoints.get(key)

    # ----------------------------------------------------------------- indexes

    def ipset_users(self, set_id: str) -> frozenset[RuleOwner]:
        """Policies and profiles whose rules reference the IP set."""
        return frozenset(self._ipset_users.get(set_id, ()))

    def policy_users(self, policy_id: PolicyID) -> frozenset[EndpointKey]:
        """Endpoints whose tiers list the policy."""
        return frozenset(self._policy_users.get(policy_id, ()))

    def profile_users(self, name: str) -> frozenset[EndpointKey]:
        """Endpoints whose profile_ids list the profile."""
        return frozenset(self._profile_users.get(name, ()))

    def endpoints_affected(self, dirty: Dirty) -> set[EndpointKey]:
        """Endpoints whose effective policy may have changed with `dirty`."""
        out: set[EndpointKey] = set(dirty.workload_endpoints)
        out.update(dirty.host_endpoints)
        policies = set(dirty.policies)
        profiles = set(dirty.profiles)
        for set_id in dirty.ipsets:
            for owner in self._ipset_users.get(set_id, ()):
                if isinstance(owner, ProfileID):
                    profiles.add(owner.name)
                else:
                    policies.add(owner)
        for pid in policies:
            out.update(self._policy_users.get(pid, ()))
        for name in profiles:
            out.update(self._profile_users.get(name, ()))
        return out

    def endpoint_problems(self, key: EndpointKey) -> list[str]:
        """Why the endpoint's policy cannot be programmed exactly (empty = fine).

        Covers the endpoint's own content, missing or invalid policies and
        profiles it references, and missing or invalid IP sets those use.
        Staged policies are skipped: they are never enforced.
        """
        ep = self.endpoint(key)
        if ep is None:
            return []
        problems: set[str] = set()
        for pid in ep.policy_ids():
            if not pid.staged:
                self._owner_problems(pid, self.policies.get(pid), problems)
        for name in ep.profile_ids:
            self._owner_problems(ProfileID(name), self.profiles.get(name), problems)
        own = [ep.error] if ep.error else []
        return own + sorted(problems)

    def owner_problems(self, owner: RuleOwner) -> set[str]:
        """Why one policy or profile cannot be programmed exactly (empty = fine); an endpoint's
        problems are its own plus those of every policy and profile it uses."""
        problems: set[str] = set()
        if isinstance(owner, ProfileID):
            self._owner_problems(owner, self.profiles.get(owner.name), problems)
        elif not owner.staged:
            self._owner_problems(owner, self.policies.get(owner), problems)
        return problems

    def _owner_problems(self, owner: RuleOwner, obj: Policy | Profile | None, problems: set[str]) -> None:
        if obj is None:
            problems.add(f"references unknown {_describe(owner)}")
            return
        if obj.error:
            problems.add(obj.error)
        ipsets = self.ipsets
        for set_id, port_role in obj.ip_set_roles():
            ipset = ipsets.get(set_id)
            if ipset is None:
                problems.add(f"{_describe(owner)} references unknown IP set {set_id}")
            elif ipset.bad_members:
                problems.add(ipset.error or "")
            elif (ipset.type == IPSET_IP_AND_PORT) != port_role:
                wanted = "IP_AND_PORT" if port_role else "IP or NET"
                problems.add(
                    f"{_describe(owner)} uses IP set {set_id} of type "
                    f"{IPSET_TYPE_NAMES.get(ipset.type, ipset.type)} where the rule needs {wanted}"
                )

    # ----------------------------------------------------------------- hosts, pools, routes

    def update_host_metadata(self, family: str, meta: HostMetadata) -> None:
        """`family` is "main" (payload 14), "v6" (35) or "v4v6" (37)."""
        sources = self._host_metadata_sources.setdefault(meta.hostname, _HostMetadataSources())
        setattr(sources, family, meta)
        self._refresh_host(meta.hostname)

    def remove_host_metadata(self, family: str, hostname: str) -> bool:
        sources = self._host_metadata_sources.get(hostname)
        if sources is None or getattr(sources, family) is None:
            return False
        setattr(sources, family, None)
        self._refresh_host(hostname)
        return True

    def _refresh_host(self, hostname: str) -> None:
        sources = self._host_metadata_sources[hostname]
        merged = sources.merged(hostname)
        if merged is None:
            del self._host_metadata_sources[hostname]
            self.host_metadata.pop(hostname, None)
        else:
            self.host_metadata[hostname] = merged
        self.dirty.host_metadata.add(hostname)

    def update_ip_pool(self, pool: IPPool) -> None:
        self.ip_pools[pool.id] = pool
        self.dirty.ip_pools.add(pool.id)

    def remove_ip_pool(self, pool_id: str) -> bool:
        if self.ip_pools.pop(pool_id, None) is None:
            return False
        self.dirty.ip_pools.add(pool_id)
        return True

    def update_route(self, route: Route) -> None:
        self.routes[route.dst] = route
        self.dirty.routes.add(route.dst)

    def remove_route(self, dst: IPNetwork) -> bool:
        if self.routes.pop(dst, None) is None:
            return False
        self.dirty.routes.add(dst)
        return True

    def update_vtep(self, vtep: VTEP) -> None:
        self.vteps[vtep.node] = vtep
        self.dirty.vteps.add(vtep.node)

    def remove_vtep(self, node: str) -> bool:
        if self.vteps.pop(node, None) is None:
            return False
        self.dirty.vteps.add(node)
        return True

    def set_encapsulation(self, encap: Encapsulation) -> None:
        self.encapsulation = encap
        self.dirty.other.add("encapsulation")

    def update_service(self, svc: Service) -> None:
        self.services[(svc.namespace, svc.name)] = svc
        self.dirty.services.add((svc.namespace, svc.name))

    def remove_service(self, namespace: str, name: str) -> bool:
        if self.services.pop((namespace, name), None) is None:
            return False
        self.dirty.services.add((namespace, name))
        return True

    def set_info(self, table: str, key: Any, value: Any) -> bool:
        """Store (value) or delete (None) an informational object.

        `table` names a dict attribute: namespaces, service_accounts,
        wireguard_endpoints, wireguard_endpoints_v6. Returns False for the
        delete of an unknown key.
        """
        target: dict[Any, Any] = getattr(self, table)
        if value is None:
            if target.pop(key, None) is None:
                return False
        else:
            target[key] = value
        self.dirty.other.add(table)
        return True

    def set_bgp_config(self, value: dict[str, Any]) -> None:
        self.bgp_config = value
        self.dirty.other.add("bgp_config")

    # ----------------------------------------------------------------- summary

    def counts(self) -> dict[str, int]:
        return {
            "ipsets": len(self.ipsets),
            "ipset_members": sum(len(s.members) for s in self.ipsets.values()),
            "policies": len(self.policies),
            "profiles": len(self.profiles),
            "workload_endpoints": len(self.workload_endpoints),
            "host_endpoints": len(self.host_endpoints),
            "hosts": len(self.host_metadata),
            "ip_pools": len(self.ip_pools),
            "routes": len(self.routes),
            "vteps": len(self.vteps),
            "services": len(self.services),
        }


def _move(index: dict[Any, set[Any]], key: Any, old: frozenset[Any], new: frozenset[Any]) -> None:
    for item in old - new:
        users = index.get(item)
        if users is not None:
            users.discard(key)
            if not users:
                del index[item]
    for item in new - old:
        index.setdefault(item, set()).add(key)


def _describe(owner: RuleOwner) -> str:
    if isinstance(owner, ProfileID):
        return f"profile {owner.name}"
    return f"policy {owner}"
