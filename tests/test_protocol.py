"""The driver as Felix sees it: a child process speaking length-prefixed protobuf on fd 3/4.

Every test here starts ``python -m calico_vpp_driver`` exactly the way Felix starts its external
dataplane driver (see ``felixsim.FelixSim``) and checks only what the protocol contract in
docs/felix-protocol.md promises: framing in both directions, tolerance of unknown payloads,
unknown removes and bad content, statuses sent back, process status reports and exit behaviour.
Nothing here imports the driver's own code; only the generated protobuf module.
"""

from __future__ import annotations

import functools
import itertools
import random
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from felixsim import (
    FelixSim,
    frame,
    hep_id,
    host_endpoint,
    policy_id,
    tcp_rule,
    tier,
    wep_id,
    wep_key,
    workload_endpoint,
)
from google.protobuf.message import DecodeError

from calico_vpp_driver.felix import felixbackend_pb2 as pb

# Nothing here has VPP: the driver runs with CALICO_VPP_DATAPLANE=model-only, or with its VPP
# dataplane and no VPP to reach (the exit tests). Either way a valid endpoint is "down", never "up".
VALID = "down"
ERROR = "error"
STATUS_TIMEOUT = 10.0  # seconds to wait for anything the driver should send back
EXIT_DEADLINE = 2.0  # Felix gives up on a driver after 2 s
DEFAULT_CONFIG = {"ReportingIntervalSecs": "0", "FelixHostname": "node-1"}
NO_VPP_SOCKET = "/nonexistent/calico-vpp-driver-tests/api.sock"

WEB_SET = "s:d2ViLWNsaWVudHM"
PROFILE = "kns.default"
ALLOW_WEB = policy_id("allow-web")


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def felix() -> Iterator[Any]:
    """``felix(config)`` starts a driver and sends it the first ConfigUpdate (``config=None``:
    send nothing).  Every driver started is killed at teardown, and any frame it sent that did
    not decode fails the test.

    The driver keeps the model only (``CALICO_VPP_DATAPLANE=model-only``, the setting meant for
    the Felix side alone): with its VPP dataplane and no VPP, each apply that finds no connection
    first spends the client's 2 s connect timeout, which only delays the statuses these tests
    wait for. ``dataplane="vpp"`` runs the VPP dataplane with VPP unreachable, for the exit tests:
    the driver must leave promptly even while it is trying to reach VPP."""
    sims: list[FelixSim] = []

    def start(config: dict[str, str] | None = DEFAULT_CONFIG, dataplane: str = "model-only") -> FelixSim:
        env = {"CALICO_VPP_DATAPLANE": dataplane}
        if dataplane == "vpp":
            # "" is the VPP dataplane, whatever the environment running the tests says; and no
            # VPP at the socket, even on a machine that runs one at the default path.
            env = {"CALICO_VPP_DATAPLANE": "", "CALICO_VPP_API_SOCKET": NO_VPP_SOCKET}
        sim = FelixSim(env).start()
        sims.append(sim)
        if config is not None:
            sim.send_config(config)
        return sim

    yield start
    problems = []
    for sim in sims:
        sim.stop()
        if sim.frame_errors:
            problems.append("frames that do not decode: " + "; ".join(sim.frame_errors[:3]))
        bare = [
            k
            for k, status, update in sim.wep_events()
            if update is not None and not update.HasField("endpoint")
        ]
        if bare:
            problems.append(f"WorkloadEndpointStatusUpdate without endpoint (field 3) for {bare[:3]}")
    assert not problems, f"driver broke the protocol: {problems}"


def key(index: int) -> tuple[str, str, str]:
    return wep_key(wep_id(f"pod-{index}"))


def valid_wep(index: int) -> pb.WorkloadEndpoint:
    return workload_endpoint(index, tiers=[tier(ALLOW_WEB, egress=[ALLOW_WEB])])


def wep_frame(sim: FelixSim, index: int, endpoint: pb.WorkloadEndpoint | None = None) -> bytes:
    return sim.encode(
        workload_endpoint_update=pb.WorkloadEndpointUpdate(
            id=wep_id(f"pod-{index}"), endpoint=endpoint if endpoint is not None else valid_wep(index)
        )
    )


def wep_remove_frame(sim: FelixSim, index: int) -> bytes:
    return sim.encode(workload_endpoint_remove=pb.WorkloadEndpointRemove(id=wep_id(f"pod-{index}")))


def ipset_frame(
    sim: FelixSim, set_id: str, members: list[str], set_type: pb.IPSetUpdate.IPSetType = pb.IPSetUpdate.NET
) -> bytes:
    return sim.encode(ipset_update=pb.IPSetUpdate(id=set_id, members=members, type=set_type))


def policy_frame(
    sim: FelixSim, pid: pb.PolicyID, inbound: list[pb.Rule], outbound: list[pb.Rule] | None = None
) -> bytes:
    return sim.encode(
        active_policy_update=pb.ActivePolicyUpdate(
            id=pid,
            policy=pb.Policy(
                namespace=pid.namespace, tier="default", inbound_rules=inbound, outbound_rules=outbound or []
            ),
        )
    )


def profile_frame(
    sim: FelixSim, name: str, inbound: list[pb.Rule], outbound: list[pb.Rule] | None = None
) -> bytes:
    return sim.encode(
        active_profile_update=pb.ActiveProfileUpdate(
            id=pb.ProfileID(name=name),
            profile=pb.Profile(inbound_rules=inbound, outbound_rules=outbound or []),
        )
    )


def base_frames(sim: FelixSim) -> bytes:
    """What every valid endpoint here refers to, in Felix's order: IP set, policy, profile."""
    return b"".join(
        [
            ipset_frame(sim, WEB_SET, ["10.65.0.1/32", "192.168.7.0/24"]),
            policy_frame(sim, ALLOW_WEB, [tcp_rule(src_ip_set_ids=[WEB_SET])], [pb.Rule(action="allow")]),
            profile_frame(sim, PROFILE, [pb.Rule(action="allow")], [pb.Rule(action="allow")]),
        ]
    )


def in_sync_frame(sim: FelixSim) -> bytes:
    return sim.encode(in_sync=pb.InSync())


def grace(seconds: float = 0.5) -> None:
    """Time for anything the driver would still send (a batch's statuses) to arrive."""
    time.sleep(seconds)


def updates_for(sim: FelixSim, k: tuple[str, str, str]) -> list[str | None]:
    return [s for _, s, _ in sim.wep_events(k)]


def flatten(rec: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(rec, dict):
        for k, v in rec.items():
            yield from flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(rec, list):
        for v in rec:
            yield from flatten(v, prefix)
    else:
        yield prefix, rec


def numeric_equal(value: Any, n: int) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value == n
    if isinstance(value, str):
        return value.strip() == str(n)
    return False


def random_sizes(seed: int) -> Iterator[int]:
    rng = random.Random(seed)
    while True:
        yield rng.choice([1, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 63, 257, rng.randint(1, 40)])


# --------------------------------------------------------------------------- statuses


def test_valid_workload_endpoints_report_down_with_endpoint(felix: Any) -> None:
    sim = felix()
    eps = {i: valid_wep(i) for i in range(3)}
    eps[3] = workload_endpoint(3, tiers=[tier(ALLOW_WEB)], state="inactive")
    eps[4] = workload_endpoint(4, tiers=[])  # profile only
    # An earlier version of each endpoint first (Felix replaces, never merges): the status
    # must describe the final one.
    earlier = b"".join(wep_frame(sim, i, workload_endpoint(i + 100)) for i in eps)
    sim.write(
        base_frames(sim)
        + earlier
        + b"".join(wep_frame(sim, i, ep) for i, ep in eps.items())
        + in_sync_frame(sim)
    )
    sim.wait_in_sync()
    sim.wait_wep_statuses({key(i): VALID for i in eps})
    grace()
    for i, ep in eps.items():
        events = sim.wep_events(key(i))
        assert len(events) == 1, f"endpoint {i}: expected one status, got {events}"
        _, status, update = events[0]
        assert status == VALID
        assert update.HasField("endpoint"), "WorkloadEndpointStatusUpdate lacks field 3"
        assert update.endpoint == ep, f"status for {i} carries a different endpoint"


def test_bad_content_reports_error(felix: Any) -> None:
    sim = felix()
    bad_cidr = policy_id("bad-cidr")
    bad_action = policy_id("bad-action", kind="NetworkPolicy", namespace="default")
    bad_egress = policy_id("bad-egress-cidr")
    uses_bad_set = policy_id("uses-bad-set")
    missing = policy_id("does-not-exist")
    stream = [
        base_frames(sim),
        ipset_frame(sim, "s:YmFk", ["10.0.0.300/32", "not-an-address"]),
        policy_frame(sim, bad_cidr, [tcp_rule(src_net=["10.0.0.0/33"])]),
        policy_frame(sim, bad_action, [pb.Rule(action="frobnicate")]),
        policy_frame(sim, bad_egress, [], [pb.Rule(action="allow", dst_net=["10.0.0.0/33"])]),
        policy_frame(sim, uses_bad_set, [tcp_rule(src_ip_set_ids=["s:YmFk"])]),
        profile_frame(sim, "kns.broken", [pb.Rule(action="frobnicate")]),
        wep_frame(sim, 0),  # the control: valid
        wep_frame(sim, 1, workload_endpoint(1, tiers=[tier(ALLOW_WEB, bad_cidr)])),
        wep_frame(sim, 2, workload_endpoint(2, tiers=[tier(bad_action)])),
        wep_frame(sim, 3, workload_endpoint(3, tiers=[tier(ALLOW_WEB, missing)])),
        wep_frame(sim, 4, workload_endpoint(4, tiers=[tier(egress=[bad_egress])])),
        wep_frame(sim, 5, workload_endpoint(5, tiers=[tier(uses_bad_set)])),
        wep_frame(sim, 6, workload_endpoint(6, tiers=[], profile_ids=["kns.broken"])),
        in_sync_frame(sim),
    ]
    sim.write(b"".join(stream))
    sim.wait_in_sync()
    expected = {key(0): VALID, **{key(i): ERROR for i in range(1, 7)}}
    sim.wait_wep_statuses(expected)
    assert sim.alive()


def test_status_follows_policy_changes(felix: Any) -> None:
    sim = felix()
    flip = policy_id("flip")
    good = [tcp_rule(src_net=["10.0.0.0/8"])]
    sim.write(
        base_frames(sim)
        + policy_frame(sim, flip, good)
        + wep_frame(sim, 0, workload_endpoint(0, tiers=[tier(ALLOW_WEB, flip)]))
        + wep_frame(sim, 1)
        + in_sync_frame(sim)
    )
    sim.wait_wep_statuses({key(0): VALID, key(1): VALID})
    # Felix sends only the policy when its content changes; the endpoint's status follows.
    sim.send(
        active_policy_update=pb.ActivePolicyUpdate(
            id=flip, policy=pb.Policy(tier="default", inbound_rules=[tcp_rule(src_net=["10.0.0.0/33"])])
        )
    )
    sim.wait_wep_statuses({key(0): ERROR})
    sim.send(
        active_policy_update=pb.ActivePolicyUpdate(
            id=flip, policy=pb.Policy(tier="default", inbound_rules=good)
        )
    )
    sim.wait_wep_statuses({key(0): VALID})
    grace()
    assert updates_for(sim, key(0)) == [VALID, ERROR, VALID]
    assert updates_for(sim, key(1)) == [VALID], "an unaffected endpoint's status was re-sent"


def test_status_follows_ip_set_changes(felix: Any) -> None:
    sim = felix()
    flip_set = "s:ZmxpcA"
    uses_set = policy_id("uses-flip-set")
    sim.write(
        base_frames(sim)
        + ipset_frame(sim, flip_set, ["10.1.0.0/16"])
        + policy_frame(sim, uses_set, [tcp_rule(src_ip_set_ids=[flip_set])])
        + wep_frame(sim, 0, workload_endpoint(0, tiers=[tier(uses_set)]))
        + wep_frame(sim, 1)
        + in_sync_frame(sim)
    )
    sim.wait_wep_statuses({key(0): VALID, key(1): VALID})
    # A delta adds a member that is not a CIDR: the endpoint using the set is in error.
    sim.send(ipset_delta_update=pb.IPSetDeltaUpdate(id=flip_set, added_members=["10.0.0.300/32"]))
    sim.wait_wep_statuses({key(0): ERROR})
    # A full replacement with good members repairs it.
    sim.write(ipset_frame(sim, flip_set, ["10.2.0.0/16", "10.3.0.1/32"]))
    sim.wait_wep_statuses({key(0): VALID})
    grace()
    assert updates_for(sim, key(0)) == [VALID, ERROR, VALID]
    assert updates_for(sim, key(1)) == [VALID], "an unaffected endpoint's status was re-sent"


def test_status_remove_after_workload_endpoint_remove(felix: Any) -> None:
    sim = felix()
    bad = policy_id("bad")
    sim.write(
        base_frames(sim)
        + policy_frame(sim, bad, [pb.Rule(action="frobnicate")])
        + wep_frame(sim, 0)
        + wep_frame(sim, 1)
        + wep_frame(sim, 2, workload_endpoint(2, tiers=[tier(bad)]))
        + in_sync_frame(sim)
    )
    sim.wait_wep_statuses({key(0): VALID, key(1): VALID, key(2): ERROR})
    sim.write(wep_remove_frame(sim, 0) + wep_remove_frame(sim, 2))
    sim.wait_wep_statuses({key(0): None, key(2): None})
    removes = [
        m.workload_endpoint_status_remove
        for m in sim.snapshot()
        if m.WhichOneof("payload") == "workload_endpoint_status_remove"
    ]
    assert {wep_key(r.id) for r in removes} == {key(0), key(2)}
    # The same endpoint coming back is a change again: a fresh status must follow.
    sim.send(workload_endpoint_update=pb.WorkloadEndpointUpdate(id=wep_id("pod-0"), endpoint=valid_wep(0)))
    sim.wait_wep_statuses({key(0): VALID})
    grace()
    assert updates_for(sim, key(0)) == [VALID, None, VALID]
    assert updates_for(sim, key(1)) == [VALID]
    assert updates_for(sim, key(2)) == [ERROR, None]


def test_unchanged_resend_sends_no_new_status(felix: Any) -> None:
    sim = felix()
    sim.write(base_frames(sim) + wep_frame(sim, 0) + wep_frame(sim, 1) + in_sync_frame(sim))
    sim.wait_wep_statuses({key(0): VALID, key(1): VALID})
    grace()
    # Felix re-sends complete objects; nothing changed, so nothing may be reported.
    sim.write(wep_frame(sim, 0) + wep_frame(sim, 0) + base_frames(sim) + wep_frame(sim, 1))
    sim.send(workload_endpoint_update=pb.WorkloadEndpointUpdate(id=wep_id("pod-9"), endpoint=valid_wep(9)))
    sim.wait_wep_statuses({key(9): VALID})  # barrier: everything before it was applied
    grace()
    assert updates_for(sim, key(0)) == [VALID]
    assert updates_for(sim, key(1)) == [VALID]
    assert updates_for(sim, key(9)) == [VALID]


def test_host_endpoint_statuses(felix: Any) -> None:
    sim = felix()
    bad = policy_id("bad-host-cidr")
    eth0 = host_endpoint("eth0", tiers=[tier(ALLOW_WEB)])
    sim.write(
        base_frames(sim)
        + policy_frame(sim, bad, [tcp_rule(dst_net=["10.0.0.0/33"])])
        + sim.encode(host_endpoint_update=pb.HostEndpointUpdate(id=hep_id("hep-eth0"), endpoint=eth0))
        + sim.encode(
            host_endpoint_update=pb.HostEndpointUpdate(
                id=hep_id("hep-eth1"), endpoint=host_endpoint("eth1", tiers=[tier(bad)])
            )
        )
        + sim.encode(
            host_endpoint_update=pb.HostEndpointUpdate(
                id=hep_id("hep-all"), endpoint=host_endpoint("*", profile_ids=[PROFILE])
            )
        )
        + sim.encode(
            host_endpoint_update=pb.HostEndpointUpdate(
                id=hep_id("hep-fwd"),
                endpoint=pb.HostEndpoint(name="eth2", forward_tiers=[tier(policy_id("missing"))]),
            )
        )
        + sim.encode(
            host_endpoint_update=pb.HostEndpointUpdate(
                id=hep_id("hep-prednat"),
                endpoint=pb.HostEndpoint(name="eth3", pre_dnat_tiers=[tier(bad, default_action="Pass")]),
            )
        )
        + sim.encode(
            host_endpoint_update=pb.HostEndpointUpdate(
                id=hep_id("hep-untracked"),
                endpoint=pb.HostEndpoint(name="eth4", untracked_tiers=[tier(bad, default_action="Pass")]),
            )
        )
        + in_sync_frame(sim)
    )
    sim.wait_in_sync()
    sim.wait_hep_statuses(
        {
            "hep-eth0": VALID,
            "hep-eth1": ERROR,
            "hep-all": VALID,
            "hep-fwd": ERROR,
            "hep-prednat": ERROR,
            "hep-untracked": ERROR,
        }
    )
    grace()
    # Unchanged re-send: nothing new.  The remove of hep-eth1 is the barrier.
    sim.write(
        sim.encode(host_endpoint_update=pb.HostEndpointUpdate(id=hep_id("hep-eth0"), endpoint=eth0))
        + sim.encode(host_endpoint_remove=pb.HostEndpointRemove(id=hep_id("hep-eth1")))
    )
    sim.wait_hep_statuses({"hep-eth1": None})
    grace()
    assert [s for _, s, _ in sim.hep_events("hep-eth0")] == [VALID]
    sim.send(host_endpoint_remove=pb.HostEndpointRemove(id=hep_id("hep-eth0")))
    sim.wait_hep_statuses({"hep-eth0": None, "hep-all": VALID})
    assert [s for _, s, _ in sim.hep_events("hep-eth1")] == [ERROR, None]
    assert not sim.wep_events(), "host endpoints produced workload endpoint statuses"


# --------------------------------------------------------------------------- framing


@pytest.mark.parametrize("chunking", ["bytewise", "random-1", "random-2"])
def test_partial_reads(felix: Any, chunking: str) -> None:
    """Frames split at every possible place (inside the length header too) still decode."""
    sim = felix(config=None)
    if chunking == "bytewise":
        sizes: Iterator[int] = iter(lambda: 1, 0)
        pause = 0.0003
    else:
        sizes = random_sizes(int(chunking.split("-")[1]))
        pause = 0.002
    bad = policy_id("bad")
    first = b"".join(
        [
            sim.encode(config_update=pb.ConfigUpdate(config=DEFAULT_CONFIG)),
            base_frames(sim),
            policy_frame(sim, bad, [tcp_rule(src_net=["10.0.0.0/33"])]),
            wep_frame(sim, 0),
            wep_frame(sim, 1),
            wep_frame(sim, 2),
            wep_frame(sim, 3, workload_endpoint(3, tiers=[tier(bad)])),
            sim.encode(
                host_endpoint_update=pb.HostEndpointUpdate(
                    id=hep_id("hep-eth0"), endpoint=host_endpoint("eth0", tiers=[tier(ALLOW_WEB)])
                )
            ),
            in_sync_frame(sim),
        ]
    )
    sim.write_chunked(first, sizes, pause)
    sim.wait_in_sync()
    sim.wait_wep_statuses({key(0): VALID, key(1): VALID, key(2): VALID, key(3): ERROR})
    sim.wait_hep_statuses({"hep-eth0": VALID})
    second = b"".join(
        [
            wep_remove_frame(sim, 0),
            wep_frame(sim, 1, workload_endpoint(1, tiers=[tier(ALLOW_WEB, bad)])),
            wep_frame(sim, 4),
        ]
    )
    sim.write_chunked(second, sizes, pause)
    sim.wait_wep_statuses({key(0): None, key(1): ERROR, key(2): VALID, key(3): ERROR, key(4): VALID})
    assert sim.alive()


BIG_SET = "s:YmlnLXNldA"


@functools.lru_cache(maxsize=1)
def big_members() -> tuple[str, ...]:
    """MaxIpsetSize (1,048,576) distinct /32s of 18 characters each: a 20 MiB IPSetUpdate."""
    octets = range(100, 256)  # three digits each
    return tuple(
        itertools.islice((f"172.{a}.{b}.{c}/32" for a in octets for b in octets for c in octets), 1 << 20)
    )


def test_large_ipset_frame(felix: Any) -> None:
    """A single 20 MiB IPSetUpdate (MaxIpsetSize members) is ingested; the driver keeps answering."""
    sim = felix()
    big = BIG_SET
    members = list(big_members())
    uses_big = policy_id("uses-big")
    big_frame = ipset_frame(sim, big, members)
    assert len(big_frame) >= 20 * 1024 * 1024
    sim.write(base_frames(sim) + big_frame, timeout=60)
    sim.write(
        policy_frame(sim, uses_big, [tcp_rule(src_ip_set_ids=[big])])
        + wep_frame(sim, 0, workload_endpoint(0, tiers=[tier(uses_big)]))
        + wep_frame(sim, 1)
        + in_sync_frame(sim)
    )
    sim.wait_in_sync(timeout=45)
    sim.wait_wep_statuses({key(0): VALID, key(1): VALID}, timeout=45)
    # Deltas against the big set, a replacement of it, and a fresh endpoint: still answering.
    sim.write(
        sim.encode(
            ipset_delta_update=pb.IPSetDeltaUpdate(
                id=big, added_members=["10.1.2.3/32"], removed_members=members[:1000]
            )
        )
        + wep_frame(sim, 2, workload_endpoint(2, tiers=[tier(uses_big)]))
    )
    sim.wait_wep_statuses({key(2): VALID}, timeout=20)
    sim.write(ipset_frame(sim, big, members[:10]) + wep_frame(sim, 3))
    sim.wait_wep_statuses({key(3): VALID}, timeout=20)
    assert sim.alive()


def test_unknown_payloads_are_ignored(felix: Any) -> None:
    sim = felix()
    unknown = [
        b"\x9a\x06\x05hello",  # field 99, length-delimited
        b"\xa0\x06\x96\x01",  # field 100, varint
        b"\xa9\x06" + bytes(8),  # field 101, fixed64
        b"\xb5\x06" + bytes(4),  # field 102, fixed32
        b"",  # an envelope with no payload at all
    ]
    for extra in unknown:  # precondition: these really are unknown payloads to this schema
        msg = pb.ToDataplane.FromString(pb.ToDataplane(sequence_number=7).SerializeToString() + extra)
        assert msg.WhichOneof("payload") is None
    stream = [base_frames(sim)]
    stream += [sim.encode_raw_payload(extra) for extra in unknown]  # before InSync
    stream += [wep_frame(sim, 0), in_sync_frame(sim)]
    stream += [sim.encode_raw_payload(extra) for extra in unknown]  # after InSync
    stream += [wep_frame(sim, 1)]
    sim.write(b"".join(stream))
    sim.wait_in_sync()
    sim.wait_wep_statuses({key(0): VALID, key(1): VALID})
    sim.write(sim.encode_raw_payload(b"\x9a\x06\x00") + wep_frame(sim, 2))
    sim.wait_wep_statuses({key(2): VALID})
    assert sim.alive()


def test_later_live_config_update_keeps_driver_running(felix: Any) -> None:
    """Felix sends later ConfigUpdates for live-changeable parameters only; not a restart."""
    sim = felix({**DEFAULT_CONFIG, "CalicoVersion": "v3.33.0", "ClusterGUID": "abc"})
    sim.write(base_frames(sim) + wep_frame(sim, 0) + in_sync_frame(sim))
    sim.wait_wep_statuses({key(0): VALID})
    sim.send(
        config_update=pb.ConfigUpdate(
            message="live update",
            config={
                **DEFAULT_CONFIG,
                "CalicoVersion": "v3.33.1",
                "ClusterGUID": "def",
                "ClusterType": "k8s,bgp",
                "HealthTimeoutOverrides": "InternalDataplaneMainLoop=90s",
            },
        )
    )
    sim.send(workload_endpoint_update=pb.WorkloadEndpointUpdate(id=wep_id("pod-1"), endpoint=valid_wep(1)))
    sim.wait_wep_statuses({key(1): VALID})
    grace()
    assert sim.alive()
    assert updates_for(sim, key(0)) == [VALID]


def unknown_removes(sim: FelixSim) -> bytes:
    return b"".join(
        [
            sim.encode(workload_endpoint_remove=pb.WorkloadEndpointRemove(id=wep_id("ghost"))),
            sim.encode(host_endpoint_remove=pb.HostEndpointRemove(id=hep_id("ghost-hep"))),
            sim.encode(active_profile_remove=pb.ActiveProfileRemove(id=pb.ProfileID(name="kns.ghost"))),
            sim.encode(active_policy_remove=pb.ActivePolicyRemove(id=policy_id("ghost"))),
            sim.encode(ipset_remove=pb.IPSetRemove(id="s:Z2hvc3Q")),
            sim.encode(route_remove=pb.RouteRemove(dst="10.99.0.0/26")),
            sim.encode(vtep_remove=pb.VXLANTunnelEndpointRemove(node="ghost-node")),
            sim.encode(ipam_pool_remove=pb.IPAMPoolRemove(id="10.99.0.0-16")),
            sim.encode(namespace_remove=pb.NamespaceRemove(id=pb.NamespaceID(name="ghost"))),
            sim.encode(
                service_account_remove=pb.ServiceAccountRemove(
                    id=pb.ServiceAccountID(namespace="ghost", name="sa")
                )
            ),
            sim.encode(service_remove=pb.ServiceRemove(name="ghost", namespace="ghost")),
            sim.encode(host_metadata_remove=pb.HostMetadataRemove(hostname="ghost-node")),
            sim.encode(wireguard_endpoint_remove=pb.WireguardEndpointRemove(hostname="ghost-node")),
            sim.encode(wireguard_endpoint_v6_remove=pb.WireguardEndpointV6Remove(hostname="ghost")),
        ]
    )


def test_unknown_removes_are_ignored(felix: Any) -> None:
    sim = felix()
    sim.write(unknown_removes(sim) + base_frames(sim) + wep_frame(sim, 0) + in_sync_frame(sim))
    sim.wait_in_sync()
    sim.wait_wep_statuses({key(0): VALID})
    sim.write(unknown_removes(sim) + wep_frame(sim, 1))
    sim.wait_wep_statuses({key(1): VALID})
    grace()
    assert sim.alive()
    assert wep_key(wep_id("ghost")) not in sim.wep_statuses(), "status for a never-seen endpoint"
    assert "ghost-hep" not in sim.hep_statuses(), "status for a never-seen host endpoint"
    assert updates_for(sim, key(0)) == [VALID]


def test_bad_content_never_stops_the_driver(felix: Any) -> None:
    sim = felix()
    weird = policy_id("weird")
    stream = [
        ipset_frame(sim, "s:bmV0", ["garbage", "10.0.0.0/99", "::/200", ""]),
        ipset_frame(
            sim, "s:cG9ydA", ["10.0.0.1,xyz:99999", "10.0.0.1", "1.2.3.4,tcp:"], pb.IPSetUpdate.IP_AND_PORT
        ),
        ipset_frame(sim, "s:aXA", ["not-an-ip"], pb.IPSetUpdate.IP),
        sim.encode(
            ipset_delta_update=pb.IPSetDeltaUpdate(
                id="s:dW5rbm93bg", added_members=["bogus"], removed_members=["10.0.0.1/32"]
            )
        ),
        policy_frame(
            sim,
            weird,
            [
                pb.Rule(action="allow", protocol=pb.Protocol(name="bogus")),
                pb.Rule(action="allow", protocol=pb.Protocol(number=999)),
                pb.Rule(
                    action="deny",
                    protocol=pb.Protocol(name="tcp"),
                    dst_ports=[pb.PortRange(first=900, last=80)],
                ),
                pb.Rule(action="allow", protocol=pb.Protocol(name="icmp"), icmp_type=300),
                pb.Rule(action="allow", src_ip_set_ids=["s:bm9wZQ"]),
                pb.Rule(action="allow", ip_version=5),  # type: ignore[arg-type]
            ],
        ),
        profile_frame(sim, "kns.weird", [pb.Rule(action="", not_src_net=["::/129"])]),
        base_frames(sim),
        wep_frame(
            sim,
            0,
            pb.WorkloadEndpoint(
                state="active",
                name="",
                mac="zz:zz",
                ipv4_nets=["999.1.1.1/32"],
                ipv6_nets=["::1/300"],
                profile_ids=["kns.weird"],
                tiers=[tier(weird)],
            ),
        ),
        sim.encode(
            host_endpoint_update=pb.HostEndpointUpdate(
                id=hep_id("hep-odd"), endpoint=pb.HostEndpoint(expected_ipv4_addrs=["nope"])
            )
        ),
        sim.encode(route_update=pb.RouteUpdate(types=pb.REMOTE_WORKLOAD, dst="10.0.0.0/99", dst_node_ip="x")),
        sim.encode(vtep_update=pb.VXLANTunnelEndpointUpdate(node="n", mac="nope", ipv4_addr="1.2.3")),
        sim.encode(
            ipam_pool_update=pb.IPAMPoolUpdate(
                id="p", pool=pb.IPAMPool(cidr="10.0.0.0/40", vxlan_mode="sometimes")
            )
        ),
        sim.encode(host_metadata_update=pb.HostMetadataUpdate(hostname="", ipv4_addr="1.2.3.4/99")),
        sim.encode(
            service_update=pb.ServiceUpdate(name="s", cluster_ips=["nope"], ports=[pb.ServicePort(Port=-1)])
        ),
        in_sync_frame(sim),
        wep_frame(sim, 1),
    ]
    sim.write(b"".join(stream))
    sim.wait_in_sync()
    sim.wait_wep_statuses({key(1): VALID})
    status = sim.wait_for(
        lambda: sim.wep_statuses().get(key(0)),
        STATUS_TIMEOUT,
        "a status for the endpoint with invalid addresses",
    )
    assert status in (VALID, ERROR)
    sim.send(workload_endpoint_update=pb.WorkloadEndpointUpdate(id=wep_id("pod-2"), endpoint=valid_wep(2)))
    sim.wait_wep_statuses({key(2): VALID})
    assert sim.alive()
    assert not sim.non_json_stderr, "stderr lines that are not JSON (a traceback?)"


def test_driver_writes_whole_frames_under_back_pressure(felix: Any) -> None:
    """With fd 4 full (Felix busy), the driver must still write whole frames only."""
    sim = felix()
    count = 1500
    sim.write(base_frames(sim) + in_sync_frame(sim))
    sim.wait_in_sync()
    sim.pause_reading()
    resume = threading.Timer(2.0, sim.resume_reading)
    resume.start()
    try:
        sim.write(b"".join(wep_frame(sim, i) for i in range(count)))
        sim.wait_wep_statuses({key(i): VALID for i in range(count)}, timeout=30)
    finally:
        resume.cancel()
        sim.resume_reading()
    assert max(sim.frame_sizes) > 0
    assert sum(sim.frame_sizes) > 65536, "statuses did not even fill one pipe buffer"
    sim.close_input()
    code = sim.wait_exit(10)
    assert code is not None
    sim.wait_for(lambda: sim.out_eof, 5, "EOF on fd 4")
    sim.assert_frames_whole()
    for i in range(count):
        assert updates_for(sim, key(i)) == [VALID]


# --------------------------------------------------------------------------- exit behaviour


@pytest.mark.parametrize("when", ["before-any-message", "after-config", "after-in-sync"])
def test_eof_exits_promptly_with_zero(felix: Any, when: str) -> None:
    sim = felix(config=None if when == "before-any-message" else DEFAULT_CONFIG, dataplane="vpp")
    if when == "before-any-message":
        pass  # Felix died before writing anything (startup time counts too)
    elif when == "after-in-sync":
        sim.write(base_frames(sim) + wep_frame(sim, 0) + in_sync_frame(sim))
        sim.wait_wep_statuses({key(0): VALID})
    else:
        time.sleep(1.0)
        assert sim.alive()
    t0 = time.monotonic()
    sim.close_input()
    code = sim.wait_exit(10)
    took = time.monotonic() - t0
    assert code is not None, "driver still running 10 s after EOF on fd 3\n" + sim.describe()
    assert took <= EXIT_DEADLINE, f"driver took {took:.2f}s to exit after EOF"
    assert code == 0, f"exit code {code} after EOF\n" + sim.describe()
    sim.wait_for(lambda: sim.out_eof, 5, "EOF on fd 4")
    sim.assert_frames_whole()


@pytest.mark.parametrize("how", ["eof", "sigterm"])
def test_exits_promptly_while_ingesting_a_large_frame(felix: Any, how: str) -> None:
    """Felix going away (EOF) or shutting down (SIGTERM) right after a 20 MiB frame: the
    driver still has 2 s, however much work that frame made."""
    sim = felix(dataplane="vpp")
    sim.write(base_frames(sim) + wep_frame(sim, 0) + in_sync_frame(sim))
    sim.wait_wep_statuses({key(0): VALID})
    sim.write(ipset_frame(sim, BIG_SET, list(big_members())), timeout=60)
    t0 = time.monotonic()
    if how == "eof":
        sim.close_input()
    else:
        sim.terminate()
    code = sim.wait_exit(20)
    took = time.monotonic() - t0
    assert code is not None, f"driver still running 20 s after {how}\n" + sim.describe()
    assert took <= EXIT_DEADLINE, f"driver took {took:.2f}s to exit after {how} (20 MiB frame)"
    if how == "eof":
        assert code == 0, f"exit code {code} after EOF\n" + sim.describe()


def test_eof_inside_a_frame_exits_promptly(felix: Any) -> None:
    sim = felix(dataplane="vpp")
    sim.write(base_frames(sim) + in_sync_frame(sim))
    sim.wait_in_sync()
    half = wep_frame(sim, 0)
    sim.write(half[: len(half) // 2])
    time.sleep(0.3)
    t0 = time.monotonic()
    sim.close_input()
    code = sim.wait_exit(10)
    took = time.monotonic() - t0
    assert code is not None, "driver still running 10 s after EOF on fd 3\n" + sim.describe()
    assert took <= EXIT_DEADLINE, f"driver took {took:.2f}s to exit after EOF mid-frame"


@pytest.mark.parametrize("when", ["after-config", "after-in-sync"])
def test_sigterm_exits_promptly(felix: Any, when: str) -> None:
    sim = felix(dataplane="vpp")
    if when == "after-in-sync":
        sim.write(base_frames(sim) + wep_frame(sim, 0) + in_sync_frame(sim))
        sim.wait_wep_statuses({key(0): VALID})
    else:
        time.sleep(1.5)
    assert sim.alive()
    t0 = time.monotonic()
    sim.terminate()
    code = sim.wait_exit(10)
    took = time.monotonic() - t0
    assert code is not None, "driver ignored SIGTERM for 10 s\n" + sim.describe()
    assert took <= EXIT_DEADLINE, f"driver took {took:.2f}s to exit after SIGTERM"


def test_malformed_first_frame_exits_nonzero(felix: Any) -> None:
    sim = felix(config=None)
    garbage = b"\x0f" + b"\x00" * 36  # field 1 with wire type 7: corrupt
    with pytest.raises(DecodeError):
        pb.ToDataplane.FromString(garbage)
    sim.write(frame(garbage))
    code = sim.wait_exit(10)
    assert code is not None, "driver kept running after a frame that does not parse\n" + sim.describe()
    assert code != 0, "driver exited 0 after a frame that does not parse"
    sim.wait_for(lambda: sim.stderr_eof, 5, "EOF on stderr")
    assert any(any(numeric_equal(v, 37) for _, v in flatten(r)) for r in sim.logs), (
        "no log line gives the bad frame's length (37)\n" + sim.describe()
    )


def test_malformed_frame_exits_nonzero_and_logs_sequence(felix: Any) -> None:
    sim = felix()
    sim.write(
        base_frames(sim)
        + wep_frame(sim, 0)
        + in_sync_frame(sim)
        + wep_frame(sim, 1)
        + ipset_frame(sim, "s:eHh4", ["10.9.9.9/32"])
    )
    last_good = sim.seq - 1
    assert last_good == 7
    sim.wait_wep_statuses({key(0): VALID, key(1): VALID})
    garbage = b"\x0a\xff\xff\xff\xff\x0f" + b"\x5a" * 25  # a length that overruns the buffer
    with pytest.raises(DecodeError):
        pb.ToDataplane.FromString(garbage)
    length = len(garbage)
    assert length == 31
    sim.write(frame(garbage))
    code = sim.wait_exit(10)
    assert code is not None, "driver kept running after a frame that does not parse\n" + sim.describe()
    assert code != 0, "driver exited 0 after a frame that does not parse"
    sim.wait_for(lambda: sim.stderr_eof, 5, "EOF on stderr")

    def mentions(rec: dict[str, Any]) -> bool:
        fields = list(flatten(rec))
        texts = [v for _, v in fields if isinstance(v, str)]
        seq_ok = any("seq" in k.lower() and numeric_equal(v, last_good) for k, v in fields) or any(
            re.search(rf"seq\w*\W{{0,5}}{last_good}\b", t, re.I) for t in texts
        )
        len_ok = any(numeric_equal(v, length) for k, v in fields if "seq" not in k.lower()) or any(
            re.search(rf"\b{length}\b", t) for t in texts
        )
        return seq_ok and len_ok

    assert any(mentions(r) for r in sim.logs), (
        f"no log line names sequence number {last_good} and frame length {length}\n" + sim.describe()
    )


# --------------------------------------------------------------------------- process status

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$")


def test_process_status_every_second(felix: Any) -> None:
    sim = felix({"ReportingIntervalSecs": "1", "FelixHostname": "node-1"})
    sim.write(base_frames(sim) + in_sync_frame(sim))
    sim.wait_for(lambda: len(sim.payloads("process_status_update")) >= 4, 8, "four ProcessStatusUpdates")
    now = datetime.now(UTC)
    elapsed = time.monotonic() - sim.started_at
    timed = sim.timed_payloads("process_status_update")
    stamps = []
    for _, p in timed:
        assert RFC3339_UTC.match(p.iso_timestamp), f"not an RFC3339 UTC time: {p.iso_timestamp!r}"
        ts = datetime.fromisoformat(p.iso_timestamp.replace("Z", "+00:00"))
        assert abs(ts - now) < timedelta(seconds=15), f"timestamp {p.iso_timestamp} vs now {now}"
        stamps.append(ts)
    uptimes = [p.uptime for _, p in timed]
    assert uptimes[0] > 0
    assert uptimes[-1] <= elapsed + 0.5, f"uptime {uptimes[-1]} > time since spawn {elapsed}"
    assert all(b > a for a, b in itertools.pairwise(uptimes)), f"uptime not increasing: {uptimes}"
    arrivals = [t for t, _ in timed]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    mean_gap = sum(gaps) / len(gaps)
    assert 0.7 <= mean_gap <= 1.5, f"reports every {mean_gap:.2f}s, not about every second"
    for (a, b), (ua, ub) in zip(itertools.pairwise(arrivals), itertools.pairwise(uptimes), strict=True):
        assert abs((ub - ua) - (b - a)) < 0.5, f"uptime moved {ub - ua:.2f}s in {b - a:.2f}s"
    assert stamps == sorted(stamps)


def test_process_status_off_when_interval_zero(felix: Any) -> None:
    sim = felix({"ReportingIntervalSecs": "0"})
    sim.write(base_frames(sim) + wep_frame(sim, 0) + in_sync_frame(sim))
    sim.wait_wep_statuses({key(0): VALID})
    time.sleep(2.0)
    assert sim.alive()
    assert sim.payloads("process_status_update") == []


# --------------------------------------------------------------------------- logs


def test_logs_are_json_lines_with_in_sync_event(felix: Any) -> None:
    sim = felix()
    sim.write(base_frames(sim) + wep_frame(sim, 0) + in_sync_frame(sim))
    rec = sim.wait_in_sync()
    assert rec["event"] == "in_sync"
    sim.wait_wep_statuses({key(0): VALID})
    sim.close_input()
    assert sim.wait_exit(10) is not None
    sim.wait_for(lambda: sim.stderr_eof, 5, "EOF on stderr")
    assert not sim.non_json_stderr, "stderr lines that are not JSON objects"
    assert all("event" in r for r in sim.logs), "a log object without an 'event' key"
