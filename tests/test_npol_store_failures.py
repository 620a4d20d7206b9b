"""npol store failures in the middle of a change, over the simulator's socket: a set rebuild cut
short, and policy or interface updates whose outcome never came. After the retry VPP must hold
exactly the model (no set frozen under a rule, nothing deleted that VPP still references)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from test_vpp_policy import A_IP, FRIEND, OUTSIDE, STRANGER, WEB, A, apply, base_state, check_all, endpoint

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
)
from calico_vpp_driver.policy.verdict import Packet
from calico_vpp_driver.sim.node import SimNode
from calico_vpp_driver.vpp.client import Result
from calico_vpp_driver.vpp.errors import VppConnectionLost


@pytest.fixture
def node() -> Iterator[SimNode]:
    n = SimNode(backend="npol")
    n.add_pod("calia", [A_IP])
    yield n
    n.close()


def retry(node: SimNode, st: DesiredState, board: StatusBoard) -> None:
    node.dataplane._retry_at = 0.0  # the backoff has passed: a full apply
    node.dataplane.apply(st, st.take_dirty(), board)


def sets_in_use(node: SimNode) -> list[set[Any]]:
    """The members of every set a rule of a policy configured on an interface points at."""
    vpp = node.server.state
    found: list[set[Any]] = []
    for conf in vpp.npol_if.values():
        for policy_id in conf.rx_policies + conf.tx_policies + conf.profiles:
            policy = vpp.npol_policies.get(policy_id)
            for rule_id in policy.rx + policy.tx if policy is not None else []:
                rule = vpp.npol_rules.get(rule_id)
                for entry in rule.entries if rule is not None else []:
                    if entry.set_id is not None:
                        ipset = vpp.npol_ipsets.get(entry.set_id)
                        found.append(set(ipset.members) if ipset is not None else {"deleted"})
    return found


class LoseReply:
    """Wraps the store's client: requests of `message` get no answer (VppConnectionLost, sent),
    after VPP executed them (`executed`) or not."""

    def __init__(self, vpp: Any, message: str, executed: bool, times: int = 1) -> None:
        self.vpp, self.message, self.executed, self.left = vpp, message, executed, times

    def _lost(self, request: Any) -> Result:
        obj = request[2] if len(request) > 2 else None
        return Result(request[0], obj, None, VppConnectionLost(request[0], True, "no reply", obj))

    def batch(self, requests: Any, **kwargs: Any) -> list[Any]:
        requests = list(requests)
        hit = [i for i, r in enumerate(requests) if r[0] == self.message][: self.left]
        if not hit:
            return self.vpp.batch(requests, **kwargs)
        self.left -= len(hit)
        sent = requests if self.executed else [r for i, r in enumerate(requests) if i not in hit]
        results = iter(self.vpp.batch(sent, **kwargs) if sent else [])
        out = []
        for i, r in enumerate(requests):
            if i in hit:
                if self.executed:
                    next(results)
                out.append(self._lost(r))
            else:
                out.append(next(results))
        return out

    def submit(self, requests: Any, **kwargs: Any) -> Any:
        return self.vpp.submit(requests, **kwargs)


def lose_reply(node: SimNode, message: str, executed: bool) -> None:
    store = node.dataplane.npol
    assert store is not None
    store.vpp = LoseReply(store.vpp, message, executed)


# ------------------------------------------------------------------------------ set rebuilds


def svc_state() -> DesiredState:
    st = DesiredState()
    st.update_ipset("svc", IPSET_IP_AND_PORT, [f"{A_IP},tcp:80", f"{A_IP},tcp:81", f"{A_IP},udp:53"])
    st.update_policy(
        Policy(WEB, inbound_rules=(Rule(action="allow", dst_named_port_ip_set_ids=("svc",)),), tier="default")
    )
    st.update_profile(Profile("kns.ns"))
    st.update_workload_endpoint(endpoint(A, A_IP, "calia", WEB))
    return st


def test_a_set_rebuild_whose_create_fails_is_redone_and_the_old_set_never_stays_under_the_rule(
    node: SimNode,
) -> None:
    """The IP_AND_PORT member delete rebuilds the set; VPP refuses the new set. The old set must
    stay tracked (and be rebuilt by the retry), or its members freeze under the rule."""
    st = svc_state()
    board = apply(node, st)
    st.delta_ipset("svc", [], [f"{A_IP},tcp:80"])
    node.server.fail_nth("npol_ipset_create", 1, retval=-12)
    node.dataplane.apply(st, st.take_dirty(), board)
    assert board.health(A)[0] is Health.ERROR
    st.delta_ipset("svc", [], [f"{A_IP},tcp:81"])
    retry(node, st, board)
    assert board.health(A) == (Health.UP, "")
    assert sets_in_use(node) == [{(ipaddress.ip_address(A_IP), 17, 53)}]
    assert node.verdict(Packet.tcp(OUTSIDE, A_IP, 80))[0] is False
    assert node.verdict(Packet.tcp(OUTSIDE, A_IP, 81))[0] is False
    assert node.verdict(Packet.udp(OUTSIDE, A_IP, 53))[0] is True
    assert node.server.state.npol_dangling() == []


@pytest.mark.parametrize("fault", ["refused", "lost"])
def test_a_set_rebuild_whose_rule_update_fails_is_finished_by_the_retry(node: SimNode, fault: str) -> None:
    """A suspect set (a member message refused) is rebuilt, but the rules' swap to the new set
    fails (refused, or no answer and not executed). The rules still point at the old set: the
    retry must swap them, or a member removed later stays allowed by the old set."""
    st = base_state()
    board = apply(node, st)
    check_all(node, st)
    st.delta_ipset("friends", [f"{STRANGER}/32"], [])
    node.server.fail_nth("npol_ipset_add_del_members", 1, retval=-12)
    node.dataplane.apply(st, st.take_dirty(), board)
    assert board.health(A)[0] is Health.ERROR
    if fault == "refused":
        node.server.fail_nth("npol_rule_update", 1, retval=-12)
    else:
        lose_reply(node, "npol_rule_update", executed=False)
    retry(node, st, board)  # the rebuild: new set, then the rule update fails
    assert board.health(A)[0] is Health.ERROR
    st.delta_ipset("friends", [], [f"{FRIEND}/32"])
    retry(node, st, board)
    assert board.health(A) == (Health.UP, "")
    assert sets_in_use(node) == [{ipaddress.ip_network(f"{STRANGER}/32")}]
    assert node.verdict(Packet.tcp(FRIEND, A_IP, 80))[0] is False
    assert node.verdict(Packet.tcp(STRANGER, A_IP, 80))[0] is True
    check_all(node, st)
    assert node.server.state.npol_dangling() == []


def test_a_failed_rebuild_leaves_the_other_suspect_sets_suspect(node: SimNode) -> None:
    """Two sets to rebuild, the first rebuild fails: the second must still be rebuilt."""
    st = base_state()
    st.update_ipset("blocked", IPSET_NET, [f"{OUTSIDE}/32"])
    web = st.policies[WEB]
    st.update_policy(
        replace(web, inbound_rules=(Rule(action="deny", src_ip_set_ids=("blocked",)), *web.inbound_rules))
    )
    board = apply(node, st)
    store = node.dataplane.npol
    assert store is not None
    keys = sorted(store.sets, key=repr)
    assert len(keys) == 2
    store._suspect.update(keys)  # as after two member messages without an answer
    node.dataplane._full = True
    node.server.fail_nth("npol_ipset_create", 1, retval=-12)
    retry(node, st, board)
    assert board.health(A)[0] is Health.ERROR
    assert set(keys) <= store._suspect  # neither is known to hold the model's members
    creates = node.server.calls["npol_ipset_create"]
    retry(node, st, board)
    assert node.server.calls["npol_ipset_create"] == creates + 2
    assert board.health(A) == (Health.UP, "")
    check_all(node, st)
    assert node.server.state.npol_dangling() == []


# ---------------------------------------------------------------- unknown outcomes, then a revert


def test_a_policy_update_without_an_answer_is_resent_after_the_model_reverts(node: SimNode) -> None:
    """VPP executed the policy update but its answer was lost; the model goes back before the
    retry. The policy must be written again, and the rule it may list must not be deleted first."""
    st = base_state()
    board = apply(node, st)
    web = st.policies[WEB]
    changed = replace(
        web,
        inbound_rules=(
            Rule(action="allow", protocol=6, dst_ports=(PortRange(8080, 8080),), src_ip_set_ids=("friends",)),
            *web.inbound_rules[1:],
        ),
    )
    st.update_policy(changed)
    lose_reply(node, "npol_policy_update", executed=True)
    node.dataplane.apply(st, st.take_dirty(), board)
    assert board.health(A)[0] is Health.ERROR
    st.update_policy(web)
    retry(node, st, board)
    assert board.health(A) == (Health.UP, "")
    assert node.server.state.npol_dangling() == []
    check_all(node, st)
    assert node.verdict(Packet.tcp(FRIEND, A_IP, 8080))[0] is False


def test_an_interface_configure_without_an_answer_is_resent_after_the_model_reverts(node: SimNode) -> None:
    """VPP executed `npol_configure_policies` (a new tier's policy) but its answer was lost; the
    model goes back. The interface must be configured again before the new policy is deleted."""
    st = base_state()
    board = apply(node, st)
    other = PolicyID("other", "ns", "NetworkPolicy")
    st.update_policy(Policy(other, inbound_rules=(Rule(action="allow"),), tier="default"))
    old_ep = st.workload_endpoints[A]
    st.update_workload_endpoint(endpoint(A, A_IP, "calia", other))
    lose_reply(node, "npol_configure_policies", executed=True)
    node.dataplane.apply(st, st.take_dirty(), board)
    assert board.health(A)[0] is Health.ERROR
    st.update_workload_endpoint(old_ep)
    st.remove_policy(other)
    retry(node, st, board)
    assert board.health(A) == (Health.UP, "")
    assert node.server.state.npol_dangling() == []
    check_all(node, st)
