"""The VPP dataplane over the simulator's socket: costs of changes, fail-closed updates, errors,
removal and driver restarts, on both policy backends."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from calico_vpp_driver.config import Config
from calico_vpp_driver.felix.status import Health, StatusBoard
from calico_vpp_driver.model.state import DesiredState
from calico_vpp_driver.model.types import (
    IPSET_IP_AND_PORT,
    IPSET_NET,
    Policy,
    PolicyID,
    PortRange,
    Profile,
    Rule,
    TierInfo,
    WorkloadEndpoint,
    WorkloadEndpointID,
)
from calico_vpp_driver.policy.verdict import Packet, connection_verdict
from calico_vpp_driver.sim.node import SimNode

BACKENDS = ("npol", "acl")
CFG = Config()
A = WorkloadEndpointID("k8s", "ns/a", "eth0")
B = WorkloadEndpointID("k8s", "ns/b", "eth0")
A_IP, B_IP = "10.0.0.1", "10.0.0.2"
FRIEND, STRANGER, OUTSIDE = "10.9.0.1", "10.9.0.2", "198.51.100.7"
WEB = PolicyID("web", "ns", "NetworkPolicy")
BIG = PolicyID("big", "", "GlobalNetworkPolicy")


@pytest.fixture(params=BACKENDS)
def node(request: pytest.FixtureRequest) -> Iterator[SimNode]:
    n = SimNode(backend=request.param)
    yield n
    n.close()


def endpoint(
    key: WorkloadEndpointID, ip: str, name: str, *policies: PolicyID, tier: str = "default"
) -> WorkloadEndpoint:
    tiers = (TierInfo(tier, policies, policies),) if policies else ()
    return WorkloadEndpoint(
        key,
        name=name,
        profile_ids=("kns.ns",),
        ipv4_nets=(ipaddress.IPv4Network(f"{ip}/32"),),
        tiers=tiers,
    )


def base_state() -> DesiredState:
    st = DesiredState()
    st.update_ipset("friends", IPSET_NET, [f"{FRIEND}/32"])
    st.update_policy(
        Policy(
            WEB,
            inbound_rules=(
                Rule(action="allow", protocol=6, dst_ports=(PortRange(80, 80),), src_ip_set_ids=("friends",)),
                Rule(action="allow", protocol=1),
            ),
            outbound_rules=(Rule(action="allow"),),
            tier="default",
        )
    )
    st.update_profile(Profile("kns.ns", (Rule(action="allow"),), (Rule(action="allow"),)))
    st.update_workload_endpoint(endpoint(A, A_IP, "calia", WEB))
    return st


PROBES = [
    (Packet.tcp(FRIEND, A_IP, 80), None),
    (Packet.tcp(STRANGER, A_IP, 80), None),
    (Packet.tcp(FRIEND, A_IP, 22), None),
    (Packet.udp(FRIEND, A_IP, 53), None),
    (Packet.icmp(STRANGER, A_IP), None),
    (Packet(ipaddress.ip_address(STRANGER), ipaddress.ip_address(A_IP), 47), None),
    (Packet.tcp(A_IP, OUTSIDE, 443), "calia"),
    (Packet.udp(A_IP, OUTSIDE, 4789), "calia"),
    (Packet.tcp(A_IP, B_IP, 80), "calia"),
    (Packet.tcp(B_IP, A_IP, 80), "calib"),
]


def _side(node: SimNode, src_pod: str | None, ip: object) -> WorkloadEndpointID | None:
    for key, name, addr in ((A, "calia", A_IP), (B, "calib", B_IP)):
        if str(ip) == addr and name in node.pods:
            return key
    return None


def expected(node: SimNode, st: DesiredState, pkt: Packet, src_pod: str | None) -> bool:
    src = _side(node, src_pod, pkt.src) if src_pod else None
    dst = _side(node, src_pod, pkt.dst)
    src = src if src in st.workload_endpoints else None
    if src_pod and src is None:
        return False  # a pod without a (programmed) endpoint sends nothing
    if dst is not None and dst not in st.workload_endpoints:
        return False
    return connection_verdict(st, CFG, src, dst, pkt).allow


def apply(node: SimNode, st: DesiredState, board: StatusBoard | None = None) -> StatusBoard:
    board = board or StatusBoard()
    st.mark_in_sync() if not st.in_sync else None
    node.dataplane.apply(st, st.take_dirty(), board)
    assert not node.server.errors, node.server.errors
    return board


def check_all(node: SimNode, st: DesiredState) -> None:
    for pkt, src_pod in PROBES:
        if src_pod is not None and src_pod not in node.pods:
            continue
        got, trace = node.verdict(pkt, src_pod)
        assert got == expected(node, st, pkt, src_pod), (pkt, src_pod, "\n".join(trace))


def calls(node: SimNode, fn: Callable[[], None]) -> dict[str, int]:
    node.server.calls.clear()
    fn()
    return {k: v for k, v in node.server.calls.items() if v}


# ----------------------------------------------------------------------------------------- basics


def test_pod_interface_denies_everything_until_its_endpoint_is_programmed(node: SimNode) -> None:
    node.add_pod("calia", [A_IP])
    for pkt, src in PROBES:
        if src in (None, "calia"):
            assert node.verdict(pkt, src)[0] is False, pkt
    st = DesiredState()
    st.update_profile(Profile("kns.ns", (Rule(),), (Rule(),)))
    board = apply(node, st)  # in sync, but the endpoint is not known yet
    assert node.verdict(Packet.tcp(FRIEND, A_IP, 80))[0] is False
    st.update_workload_endpoint(endpoint(A, A_IP, "calia"))
    board = apply(node, st, board)
    assert board.health(A) == (Health.UP, "")
    assert node.verdict(Packet.tcp(FRIEND, A_IP, 80))[0] is True


def test_endpoint_waits_for_its_interface_then_binds(node: SimNode) -> None:
    st = base_state()
    board = apply(node, st)
    health, reason = board.health(A)
    assert health is Health.DOWN and "calia" in reason
    # Nothing more comes from Felix, but the driver asks to be called again, once it is time
    # to look for interfaces (and never by writing into the model).
    assert not st.dirty and not node.dataplane.wants_apply()
    node.add_pod("calia", [A_IP])
    node.dataplane._last_refresh = -1e9  # the refresh interval has passed
    assert node.dataplane.wants_apply()
    board = apply(node, st, board)
    assert board.health(A) == (Health.UP, "")
    assert not st.dirty
    check_all(node, st)


def test_programmed_policy_matches_the_oracle(node: SimNode) -> None:
    node.add_pod("calia", [A_IP])
    node.add_pod("calib", [B_IP])
    st = base_state()
    st.update_workload_endpoint(endpoint(B, B_IP, "calib"))
    apply(node, st)
    check_all(node, st)


def test_endpoint_in_error_is_denied_and_others_are_served(node: SimNode) -> None:
    node.add_pod("calia", [A_IP])
    node.add_pod("calib", [B_IP])
    st = base_state()
    st.update_workload_endpoint(endpoint(B, B_IP, "calib", PolicyID("missing", "ns", "NetworkPolicy")))
    apply(node, st)
    assert st.endpoint_problems(B)
    assert node.verdict(Packet.tcp(FRIEND, B_IP, 80))[0] is False
    assert node.verdict(Packet.tcp(B_IP, OUTSIDE, 80), "calib")[0] is False
    check_all(node, st)


def test_removed_endpoint_goes_back_to_deny_all_and_its_objects_go(node: SimNode) -> None:
    node.add_pod("calia", [A_IP])
    st = base_state()
    apply(node, st)
    assert node.verdict(Packet.tcp(FRIEND, A_IP, 80))[0] is True
    st.remove_workload_endpoint(A)
    apply(node, st)
    assert node.verdict(Packet.tcp(FRIEND, A_IP, 80))[0] is False
    assert node.verdict(Packet.icmp(FRIEND, A_IP))[0] is False
    vpp = node.server.state
    assert vpp.npol_dangling() == []
    if node.dataplane.backend == "npol":
        # Only the shared "other protocols go to the ACL" policies and their rule stay.
        assert len(vpp.npol_ipsets) == 0
        assert len(vpp.npol_policies) == 2 and len(vpp.npol_rules) == 1
    assert len(vpp.acls) == 1  # the deny-all ACL


# ------------------------------------------------------------------------------------ costs (npol)


def test_ip_set_member_add_is_one_message(node: SimNode) -> None:
    node.add_pod("calia", [A_IP])
    st = base_state()
    apply(node, st)
    assert node.verdict(Packet.tcp(STRANGER, A_IP, 80))[0] is False
    st.delta_ipset("friends", [f"{STRANGER}/32"], [])
    sent = calls(node, lambda: apply(node, st))
    if node.dataplane.backend == "npol":
        assert sent == {"npol_ipset_add_del_members": 1}
    else:
        assert sent == {"acl_add_replace": 1}  # the ACL is rewritten in place
    assert node.verdict(Packet.tcp(STRANGER, A_IP, 80))[0] is True
    st.delta_ipset("friends", [], [f"{STRANGER}/32"])
    apply(node, st)
    assert node.verdict(Packet.tcp(STRANGER, A_IP, 80))[0] is False


def test_a_malformed_member_fails_the_endpoint_closed_and_its_removal_restores_it(node: SimNode) -> None:
    node.add_pod("calia", [A_IP])
    st = base_state()
    board = apply(node, st)
    assert node.verdict(Packet.tcp(FRIEND, A_IP, 80))[0] is True
    st.delta_ipset("friends", ["10.9.0.300/32"], [])  # not an address: the set is in error
    apply(node, st, board)
    assert st.endpoint_problems(A)
    assert node.verdict(Packet.tcp(FRIEND, A_IP, 80))[0] is False
    assert node.verdict(Packet.icmp(STRANGER, A_IP))[0] is False
    st.delta_ipset("friends", [], ["10.9.0.300/32"])
    apply(node, st, board)
    assert not st.endpoint_problems(A)
    check_all(node, st)


def _big_policy(port: int) -> Policy:
    rules = tuple(
        Rule(action="allow", protocol=6, dst_ports=(PortRange(1000 + i, 1000 + i),)) for i in range(19)
    )
    rules += (Rule(action="allow", protocol=6, dst_ports=(PortRange(port, port),)),)
    return Policy(BIG, inbound_rules=rules, outbound_rules=(Rule(),), tier="security")


def test_one_rule_changed_in_a_shared_policy_costs_at_most_three_messages() -> None:
    with SimNode(backend="npol") as node:
        st = DesiredState()
        st.update_policy(_big_policy(8080))
        st.update_profile(Profile("kns.ns", (Rule(),), (Rule(),)))
        for i in range(10):
            key = WorkloadEndpointID("k8s", f"ns/p{i}", "eth0")
            ip = f"10.0.1.{i + 1}"
            node.add_pod(f"calip{i}", [ip])
            st.update_workload_endpoint(endpoint(key, ip, f"calip{i}", BIG, tier="security"))
        apply(node, st)
        assert node.verdict(Packet.tcp(OUTSIDE, "10.0.1.5", 8080))[0] is True
        st.update_policy(_big_policy(9090))
        sent = calls(node, lambda: apply(node, st))
        assert sum(sent.values()) <= 3, sent
        assert sent.get("npol_configure_policies", 0) == 0
        assert node.verdict(Packet.tcp(OUTSIDE, "10.0.1.5", 8080))[0] is False
        assert node.verdict(Packet.tcp(OUTSIDE, "10.0.1.5", 9090))[0] is True


def test_endpoint_update_costs_one_configure_per_interface() -> None:
    with SimNode(backend="npol") as node:
        node.add_pod("calia", [A_IP])
        st = base_state()
        apply(node, st)
        st.update_workload_endpoint(endpoint(A, A_IP, "calia"))  # leaves its tier
        sent = calls(node, lambda: apply(node, st))
        assert sent.get("npol_configure_policies") == 1, sent
        assert node.verdict(Packet.tcp(STRANGER, A_IP, 80))[0] is True  # the profile allows


def test_ip_and_port_member_delete_rebuilds_the_set_instead_of_over_deleting() -> None:
    with SimNode(backend="npol") as node:
        node.add_pod("calia", [A_IP])
        st = DesiredState()
        st.update_ipset("svc", IPSET_IP_AND_PORT, [f"{A_IP},tcp:80", f"{A_IP},tcp:81", f"{A_IP},udp:53"])
        st.update_policy(
            Policy(
                WEB, inbound_rules=(Rule(action="allow", dst_named_port_ip_set_ids=("svc",)),), tier="default"
            )
        )
        st.update_profile(Profile("kns.ns"))
        st.update_workload_endpoint(endpoint(A, A_IP, "calia", WEB))
        apply(node, st)
        assert node.verdict(Packet.tcp(OUTSIDE, A_IP, 81))[0] is True
        st.delta_ipset("svc", [], [f"{A_IP},tcp:80"])
        sent = calls(node, lambda: apply(node, st))
        assert "npol_ipset_create" in sent and "npol_rule_update" in sent and "npol_ipset_delete" in sent
        assert node.verdict(Packet.tcp(OUTSIDE, A_IP, 80))[0] is False
        assert node.verdict(Packet.tcp(OUTSIDE, A_IP, 81))[0] is True
        assert node.verdict(Packet.udp(OUTSIDE, A_IP, 53))[0] is True
        assert node.server.state.npol_dangling() == []


def test_several_address_sets_are_anded_through_a_derived_set(node: SimNode) -> None:
    node.add_pod("calia", [A_IP])
    st = DesiredState()
    st.update_ipset("ns-sel", IPSET_NET, ["10.9.0.0/24"])
    st.update_ipset("pod-sel", IPSET_NET, [f"{FRIEND}/32", "10.8.0.1/32"])
    st.update_policy(
        Policy(
            WEB, inbound_rules=(Rule(action="allow", src_ip_set_ids=("ns-sel", "pod-sel")),), tier="default"
        )
    )
    st.update_profile(Profile("kns.ns"))
    st.update_workload_endpoint(endpoint(A, A_IP, "calia", WEB))
    apply(node, st)
    assert node.verdict(Packet.tcp(FRIEND, A_IP, 80))[0] is True
    assert node.verdict(Packet.tcp(STRANGER, A_IP, 80))[0] is False  # in ns-sel only
    assert node.verdict(Packet.tcp("10.8.0.1", A_IP, 80))[0] is False  # in pod-sel only
    st.delta_ipset("pod-sel", [f"{STRANGER}/32"], [])
    apply(node, st)
    assert node.verdict(Packet.tcp(STRANGER, A_IP, 80))[0] is True


# ------------------------------------------------------------------------------ failures, restarts


def test_vpp_refusing_an_object_reports_error_then_recovers(node: SimNode) -> None:
    node.add_pod("calia", [A_IP])
    st = base_state()
    failing = "npol_rule_create" if node.dataplane.backend == "npol" else "acl_add_replace"
    node.server.fail_nth(failing, 1, retval=-12)
    board = StatusBoard()
    st.mark_in_sync()
    node.dataplane.apply(st, st.take_dirty(), board)
    health, reason = board.health(A)
    assert (health is Health.ERROR and failing in reason) or "refused" in reason, reason
    assert node.verdict(Packet.tcp(FRIEND, A_IP, 80))[0] is False  # still denied: fail closed
    assert not node.dataplane.wants_apply()  # backing off
    node.dataplane._retry_at = 0.0  # the backoff has passed
    assert node.dataplane.wants_apply()
    node.dataplane.apply(st, st.take_dirty(), board)
    assert board.health(A) == (Health.UP, "")
    check_all(node, st)
    assert node.server.state.npol_dangling() == []


def test_driver_restart_adopts_and_deletes_what_is_stale(node: SimNode) -> None:
    node.add_pod("calia", [A_IP])
    node.add_pod("calib", [B_IP])
    st = base_state()
    st.update_workload_endpoint(endpoint(B, B_IP, "calib"))
    apply(node, st)
    vpp = node.server.state
    before = (len(vpp.npol_ipsets), len(vpp.npol_rules), len(vpp.npol_policies), len(vpp.acls))
    # A new driver process (same VPP, same state directory) with a slightly different model.
    node.dataplane = node.new_dataplane()
    st2 = base_state()
    st2.update_workload_endpoint(endpoint(B, B_IP, "calib"))
    board = apply(node, st2)
    assert board.health(A) == (Health.UP, "") and board.health(B) == (Health.UP, "")
    check_all(node, st2)
    after = (len(vpp.npol_ipsets), len(vpp.npol_rules), len(vpp.npol_policies), len(vpp.acls))
    assert after == before  # nothing leaked, nothing torn down
    assert vpp.npol_dangling() == []


# ------------------------------------------------------------------ fail closed at every message


def _watch(node: SimNode, old: DesiredState, new: DesiredState, pods: dict[str, str]) -> list[str]:
    """After every API message, no probe both the old and the new desired state deny may pass."""
    from calico_vpp_driver.sim.node import to_sim_packet
    from calico_vpp_driver.sim.packet import evaluate

    probes = []
    for pkt, src in PROBES:
        if src is not None and src not in pods:
            continue
        deny_old = not expected(node, old, pkt, src)
        deny_new = not expected(node, new, pkt, src)
        if deny_old and deny_new:
            rx = node.pods[src].sw_if_index if src else node.uplink
            probes.append((pkt, rx))
    leaks: list[str] = []

    def hook(name: str, _request: object) -> None:
        for pkt, rx in probes:
            verdict, _trace = evaluate(node.server.state, to_sim_packet(pkt), rx, use_sessions=False)
            if verdict == "allow":
                leaks.append(f"after {name}: {pkt} allowed")

    node.server.after_request = hook
    return leaks


def _fail_closed_steps() -> list[tuple[str, Callable[[DesiredState], None]]]:
    def add_b(st: DesiredState) -> None:
        st.update_workload_endpoint(endpoint(B, B_IP, "calib", WEB))

    def tighten(st: DesiredState) -> None:
        st.update_policy(
            Policy(
                WEB,
                inbound_rules=(Rule(action="deny", protocol=6), Rule(action="allow")),
                outbound_rules=(Rule(action="deny"),),
                tier="default",
            )
        )

    def relax(st: DesiredState) -> None:
        st.update_policy(Policy(WEB, inbound_rules=(Rule(action="allow", protocol=6),), tier="default"))

    def ipset(st: DesiredState) -> None:
        st.delta_ipset("friends", [f"{STRANGER}/32"], [f"{FRIEND}/32"])

    def tier(st: DesiredState) -> None:
        other = PolicyID("gate", "", "GlobalNetworkPolicy")
        st.update_policy(Policy(other, inbound_rules=(Rule(action="pass", protocol=6),), tier="gate"))
        ep = st.workload_endpoints[A]
        st.update_workload_endpoint(replace(ep, tiers=(TierInfo("gate", (other,), ()), *ep.tiers)))

    def remove(st: DesiredState) -> None:
        st.remove_workload_endpoint(A)

    return [
        ("endpoint add", add_b),
        ("policy tightened", tighten),
        ("policy relaxed", relax),
        ("ip set change", ipset),
        ("tier change", tier),
        ("endpoint remove", remove),
    ]


@pytest.mark.parametrize("step", [name for name, _ in _fail_closed_steps()])
def test_no_intermediate_state_allows_what_old_and_new_deny(node: SimNode, step: str) -> None:
    node.add_pod("calia", [A_IP])
    node.add_pod("calib", [B_IP])
    st = base_state()
    apply(node, st)
    old = base_state()
    change = dict(_fail_closed_steps())[step]
    change(st)
    new = base_state()
    change(new)
    leaks = _watch(node, old, new, {p: p for p in node.pods})
    apply(node, st)
    node.server.after_request = None
    assert not leaks, leaks[:5]
    check_all(node, st)


def test_no_intermediate_state_allows_what_policy_denies_across_a_driver_restart(node: SimNode) -> None:
    node.add_pod("calia", [A_IP])
    node.add_pod("calib", [B_IP])
    st = base_state()
    st.update_workload_endpoint(endpoint(B, B_IP, "calib", WEB))
    apply(node, st)
    leaks = _watch(node, st, st, dict.fromkeys(node.pods, ""))
    node.dataplane = node.new_dataplane()
    st2 = base_state()
    st2.update_workload_endpoint(endpoint(B, B_IP, "calib", WEB))
    apply(node, st2)
    node.server.after_request = None
    assert not leaks, leaks[:5]
    check_all(node, st2)


def test_a_restart_after_a_stale_record_never_deletes_objects_it_now_owns() -> None:
    """The previous process deleted objects after its last record (then crashed): VPP hands
    those ids to the new process, which must not delete them as stale."""
    with SimNode(backend="npol") as node:
        node.add_pod("calia", [A_IP])
        st = base_state()
        apply(node, st)  # the record is written now
        st.update_policy(Policy(WEB, inbound_rules=(Rule(action="allow", protocol=17),), tier="default"))
        apply(node, st)  # rules freed and created: within RECORD_SECONDS, not recorded
        node.dataplane = node.new_dataplane()  # no close(): a crash
        st2 = base_state()
        apply(node, st2)
        assert node.server.state.npol_dangling() == []
        check_all(node, st2)
        assert node.verdict(Packet.udp(FRIEND, A_IP, 53))[0] is False


def test_an_interface_created_outside_the_driver_gets_deny_all_before_anything_else(node: SimNode) -> None:
    """Until the CNI server exists, pods' interfaces may come from elsewhere, without deny-all:
    once the driver touches one, nothing its policy denies may pass at any step."""
    from calico_vpp_driver.sim.node import to_sim_packet
    from calico_vpp_driver.sim.packet import evaluate

    pod = node.add_pod("calia", [A_IP], register=False)
    st = base_state()
    denied = [
        (pkt, src) for pkt, src in PROBES if src in (None, "calia") and not expected(node, st, pkt, src)
    ]
    assert denied
    touched: list[str] = []
    leaks: list[str] = []

    def hook(name: str, request: dict[str, object]) -> None:
        policy_messages = ("acl_interface_set_acl_list", "npol_configure_policies")
        if request.get("sw_if_index") == pod.sw_if_index and name in policy_messages:
            touched.append(name)  # from the driver's first policy message for the interface on
        if not touched:
            return
        for pkt, src in denied:
            rx = pod.sw_if_index if src else node.uplink
            if evaluate(node.server.state, to_sim_packet(pkt), rx, use_sessions=False)[0] == "allow":
                leaks.append(f"after {name}: {pkt}")

    node.server.after_request = hook
    apply(node, st)
    node.server.after_request = None
    assert touched and not leaks, leaks[:5]
    check_all(node, st)


def test_two_texts_of_one_member_value_are_deleted_only_together(node: SimNode) -> None:
    """Felix member texts are not unique per value ("10.9.0.1" and "10.9.0.1/32"; host bits):
    npol deletes every copy of a value, so removing one text must not remove the value."""
    node.add_pod("calia", [A_IP])
    st = base_state()
    st.update_ipset("friends", IPSET_NET, [FRIEND, f"{FRIEND}/32", "10.8.0.0/24", "10.8.0.5/24"])
    apply(node, st)
    allowed = [Packet.tcp(FRIEND, A_IP, 80), Packet.tcp("10.8.0.9", A_IP, 80)]
    for pkt in allowed:
        assert node.verdict(pkt)[0] is True
    st.delta_ipset("friends", [], [f"{FRIEND}/32", "10.8.0.5/24"])
    apply(node, st)
    for pkt in allowed:
        assert node.verdict(pkt)[0] is True
    check_all(node, st)
    st.delta_ipset("friends", [], [FRIEND, "10.8.0.0/24"])
    apply(node, st)
    for pkt in allowed:
        assert node.verdict(pkt)[0] is False


@pytest.mark.parametrize("failing", ["npol_ipset_create", "npol_ipset_add_del_members"])
def test_a_failure_while_prefilling_sets_at_a_cold_start_is_repaired_in_the_same_apply(failing: str) -> None:
    """At a cold start the npol store creates and fills Felix's sets before the programs are
    computed; VPP refusing one of those messages must neither leave a set short of members
    under a rule nor stop the endpoint from coming up once the regular path redoes the work."""
    node = SimNode(backend="npol")
    try:
        node.add_pod("calia", [A_IP])
        st = base_state()
        assert any(s.members for s in st.ipsets.values())
        node.server.fail_nth(failing, 1, retval=-12)
        st.mark_in_sync()
        board = apply(node, st)
        assert node.server.calls[failing] >= 2  # the prefill's refused message, then the redo
        assert board.health(A) == (Health.UP, "")
        check_all(node, st)
        assert node.server.state.npol_dangling() == []
    finally:
        node.close()


def test_a_set_whose_members_did_not_all_arrive_is_rebuilt_before_any_interface_uses_it() -> None:
    """A new set's fill fails after its rules and policy were made: the set stays suspect, and
    the retry rebuilds it (a new set, filled, swapped into the rules) before the interface is
    configured with it; a deny rule on a set short of members would allow."""
    node = SimNode(backend="npol")
    try:
        node.add_pod("calia", [A_IP])
        st = base_state()
        board = apply(node, st)
        assert board.health(A) == (Health.UP, "")
        st.update_ipset("blocked", IPSET_NET, [f"{STRANGER}/32"])
        web = st.policies[WEB]
        st.update_policy(
            replace(web, inbound_rules=(Rule(action="deny", src_ip_set_ids=("blocked",)), *web.inbound_rules))
        )
        node.server.fail_nth("npol_ipset_add_del_members", 1, retval=-12)
        node.dataplane.apply(st, st.take_dirty(), board)
        assert board.health(A)[0] is Health.ERROR
        creates = node.server.calls["npol_ipset_create"]
        node.dataplane._retry_at = 0.0  # the backoff has passed
        node.dataplane.apply(st, st.take_dirty(), board)
        assert node.server.calls["npol_ipset_create"] == creates + 1  # the suspect set, rebuilt
        assert board.health(A) == (Health.UP, "")
        check_all(node, st)
        assert node.verdict(Packet.icmp(STRANGER, A_IP))[0] is False
        assert node.server.state.npol_dangling() == []
    finally:
        node.close()


def test_an_apply_cut_short_by_an_unknown_outcome_is_retried_in_full(
    node: SimNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only VPP refusing an object: a request whose outcome never came (a timeout) leaves
    VPP's content unknown too. The endpoint is `error` meanwhile, and the retry, with nothing new
    from Felix, reprograms every endpoint."""
    from calico_vpp_driver.vpp.errors import VppTimeoutError

    node.add_pod("calia", [A_IP])
    st = base_state()
    board = StatusBoard()
    st.mark_in_sync()
    real = node.dataplane._program_interfaces
    calls = []

    def cut_short(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise VppTimeoutError("VPP npol_rule_create: no answer within 30 s", message="npol_rule_create")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(node.dataplane, "_program_interfaces", cut_short)
    node.dataplane.apply(st, st.take_dirty(), board)
    health, reason = board.health(A)
    assert health is Health.ERROR and "no answer" in reason
    node.dataplane._retry_at = 0.0
    node.dataplane.apply(st, st.take_dirty(), board)  # nothing dirty: the retry alone
    assert board.health(A) == (Health.UP, "")
    check_all(node, st)
