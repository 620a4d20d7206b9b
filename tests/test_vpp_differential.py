"""What the driver programs into VPP enforces exactly what the oracle says, on both backends.

For random desired states (`policy_strategies.policy_cases`: tiers, policies with every rule
criterion, IP sets of all types, profiles, endpoints, some of them broken), the driver's
`VppDataplane` programs the VPP simulator over its real socket; then every packet of the case is
judged by the simulator's packet model on what was programmed, and must get the oracle's verdict:

* ingress: the packet comes in on the uplink, addressed to the endpoint;
* egress: the packet leaves the endpoint's pod; when its destination is a local pod, that pod's
  ingress applies as well (the oracle's `connection_verdict`).

`POLICY_EXAMPLES` (default 2,000) sets the number of cases per backend.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policy_strategies import EXAMPLES, PolicyCase, policy_cases

from calico_vpp_driver.felix.status import Health, StatusBoard
from calico_vpp_driver.policy.verdict import connection_verdict, endpoint_verdict
from calico_vpp_driver.sim.node import SimNode

BACKENDS = ("npol", "acl")
# The acl plugin sees ports 0 for protocols other than TCP/UDP (acl_rules.py): a rule on SCTP or
# UDP-Lite ports is rendered failing closed (an allow never matches, a deny matches every port),
# so for these VPP may deny what the oracle allows (never the reverse). npol judges SCTP itself.
PORTS_UNSEEN = {"npol": frozenset({136}), "acl": frozenset({132, 136})}

# Minutes of work: scheduled before everything else, so parallel workers end together (tests/conftest.py).
pytestmark = pytest.mark.long_running(rank=0)


@pytest.fixture(scope="module", params=BACKENDS)
def node(request: pytest.FixtureRequest) -> Iterator[SimNode]:
    n = SimNode(backend=request.param)
    yield n
    n.close()


def _addr_of(case: PolicyCase, key: object, version: int) -> object | None:
    ep = case.state.workload_endpoints[key]  # type: ignore[index]
    nets = ep.ipv4_nets if version == 4 else ep.ipv6_nets
    return nets[0].network_address if nets else None


def check_case(node: SimNode, case: PolicyCase) -> StatusBoard:
    node.reset(case.config)
    for key in case.endpoints:
        ep = case.state.workload_endpoints[key]
        node.add_pod(ep.name, [n.network_address for n in ep.ipv4_nets + ep.ipv6_nets])
    case.state.mark_in_sync()
    board = StatusBoard()
    verify(node, case, board)
    return board


def verify(node: SimNode, case: PolicyCase, board: StatusBoard) -> None:
    """Apply what changed in the case's state, then judge every packet both ways."""
    owner: dict[object, object] = {}
    for key in case.endpoints:
        ep = case.state.workload_endpoints[key]
        for n in ep.ipv4_nets + ep.ipv6_nets:
            owner[n.network_address] = key
    # Pods whose endpoint is gone keep their interface (CNI has not deleted it): it denies all.
    orphans = {a for pod in node.pods.values() for a in pod.addresses if a not in owner}
    state = case.state
    node.dataplane.apply(state, state.take_dirty(), board)
    assert not node.server.errors, node.server.errors
    assert node.server.state.npol_dangling() == []
    for key in case.endpoints:
        health, reason = board.health(key)
        assert health is Health.UP, (key, reason)
    failures = []
    unseen = PORTS_UNSEEN[node.dataplane.backend]
    for key in case.endpoints:
        ep = state.workload_endpoints[key]
        for pkt in case.packets:
            own = _addr_of(case, key, pkt.version)
            if own is None:
                continue
            # Ingress, from outside.
            inbound = dataclasses.replace(pkt, dst=own)
            if inbound.src in owner or inbound.src in orphans:
                inbound = dataclasses.replace(inbound, src=_outside(pkt.version))
            want = endpoint_verdict(state, case.config, key, "ingress", inbound).allow
            got, trace = node.verdict(inbound)
            if got != want and not (want and inbound.protocol in unseen):
                failures.append(("ingress", key, inbound, want, trace))
            # Egress, from the pod, to wherever the packet goes.
            outbound = dataclasses.replace(pkt, src=own)
            peer = owner.get(outbound.dst)
            want = (
                outbound.dst not in orphans
                and connection_verdict(
                    state,
                    case.config,
                    key,
                    peer,  # type: ignore[arg-type]
                    outbound,
                ).allow
            )
            got, trace = node.verdict(outbound, ep.name)
            if got != want and not (want and outbound.protocol in unseen):
                failures.append(("egress", key, outbound, want, trace))
    if failures:
        what, key, pkt, want, trace = failures[0]
        pytest.fail(
            f"{len(failures)} verdict(s) differ; first: {what} of {key}: {pkt} oracle "
            f"{'allow' if want else 'deny'}, VPP {'deny' if want else 'allow'}\n" + "\n".join(trace)
        )


def _outside(version: int) -> object:
    import ipaddress

    return ipaddress.ip_address("198.51.100.7" if version == 4 else "2001:db8::7")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(case=policy_cases())
def test_vpp_agrees_with_the_oracle(node: SimNode, case: PolicyCase) -> None:
    check_case(node, case)


def _transition(a: PolicyCase, b: PolicyCase, mode: str) -> PolicyCase:
    """Change a's state, in place and through the model's own operations, into b's (b's
    endpoints take a's interfaces and addresses). mode "sets": only IP set members change;
    "owners": only policies and profiles change; "all": everything."""
    st = a.state
    for set_id, ipset in b.state.ipsets.items() if mode != "owners" else ():
        old = st.ipsets.get(set_id)
        if old is None or old.type != ipset.type:
            st.update_ipset(set_id, ipset.type, sorted(ipset.members | ipset.bad_members))
        else:
            want = ipset.members | ipset.bad_members
            have = old.members | old.bad_members
            if want != have:
                st.delta_ipset(set_id, sorted(want - have), sorted(have - want))
    if mode == "sets":
        return PolicyCase(st, a.config, a.endpoints, a.packets + b.packets, a.broken)
    for set_id in set(st.ipsets) - set(b.state.ipsets) if mode == "all" else ():
        st.remove_ipset(set_id)
    for pid in set(st.policies) - set(b.state.policies):
        st.remove_policy(pid)
    for pid, pol in b.state.policies.items():
        if st.policies.get(pid) != pol:
            st.update_policy(pol)
    for name in set(st.profiles) - set(b.state.profiles):
        st.remove_profile(name)
    for name, prof in b.state.profiles.items():
        if st.profiles.get(name) != prof:
            st.update_profile(prof)
    if mode == "owners":
        return PolicyCase(st, a.config, a.endpoints, a.packets + b.packets, a.broken)
    kept = []
    for i, key in enumerate(a.endpoints):
        if i < len(b.endpoints):
            old = st.workload_endpoints[key]
            new = b.state.workload_endpoints[b.endpoints[i]]
            new = dataclasses.replace(
                new, id=key, name=old.name, ipv4_nets=old.ipv4_nets, ipv6_nets=old.ipv6_nets
            )
            if new != old:
                st.update_workload_endpoint(new)
            kept.append(key)
        else:
            st.remove_workload_endpoint(key)
    return PolicyCase(st, a.config, kept, a.packets + b.packets, b.broken)


@settings(
    max_examples=max(50, EXAMPLES // 8),
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(a=policy_cases(), b=policy_cases(), mode=st.sampled_from(("sets", "owners", "all")))
def test_vpp_stays_exact_through_incremental_changes(
    node: SimNode, a: PolicyCase, b: PolicyCase, mode: str
) -> None:
    """Program a, change the model into b (policies, profiles, IP set deltas, endpoints changed
    and removed), apply only what changed, and judge again: the incremental paths (members-only
    updates, rule and policy updates in place, shared-object collection) must stay exact."""
    board = check_case(node, a)
    verify(node, _transition(a, b, mode), board)
    vpp = node.server.state
    assert vpp.npol_dangling() == []
