"""CNI benchmark: CNI ADD to Felix status "up", for pods created back to back.

The VPP simulator runs as its own process (``python -m calico_vpp_driver.sim``); the driver runs
as Felix spawns it (fd 3/4, through `tests/felixsim.FelixSim`) with its CNI gRPC server on a unix
socket; this process plays both the Calico CNI plugin (a real gRPC client) and Felix. Per pod,
as on a real node: the CNI ADD, then (once the plugin has its reply and has written the workload
endpoint) Felix's WorkloadEndpointUpdate; the time runs from sending the ADD to Felix receiving
the endpoint's "up" status. The pods' namespaces are not real: `ip`/`nsenter` are stand-ins that
succeed (the simulator makes no Linux interfaces), so the Linux half of a real ADD (one `nsenter
ip route` per pod for a TUN tap) is not in the figure.

Usage: ``python benchmarks/cni.py [--pods N] [--no-check]``. Target: median <= 50 ms.
Exit 1 when the target is missed (unless ``--no-check``), 2 when the run failed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from benchmarks.simproc import simulator  # noqa: E402
from calico_vpp_driver.cni import cnibackend_pb2 as cpb  # noqa: E402
from calico_vpp_driver.felix import felixbackend_pb2 as pb  # noqa: E402
from tests.felixsim import FelixSim, wep_id, wep_key  # noqa: E402

TARGET_MEDIAN_MS = 50.0


def _stand_ins(directory: str) -> None:
    os.makedirs(directory)
    for tool in ("ip", "nsenter"):
        path = os.path.join(directory, tool)
        with open(path, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(path, 0o755)


def _add_request(i: int) -> cpb.AddRequest:
    hi, lo = divmod(i, 250)
    return cpb.AddRequest(
        interface_name="eth0",
        netns=f"/var/run/netns/cni-bench-{i}",
        desired_host_interface_name=f"calibench{i:06d}",
        settings=cpb.ContainerSettings(mtu=1450),
        container_ips=[cpb.IPConfig(address=f"10.66.{hi}.{lo + 1}/32")],
        workload=cpb.WorkloadIDs(
            name=f"node-k8s-bench--{i}-eth0",
            namespace="bench",
            endpoint="eth0",
            orchestrator="k8s",
            pod=f"bench-{i}",
            node="node",
        ),
    )


def _endpoint(i: int) -> pb.WorkloadEndpoint:
    hi, lo = divmod(i, 250)
    return pb.WorkloadEndpoint(
        state="active",
        name=f"calibench{i:06d}",
        profile_ids=["kns.bench"],
        ipv4_nets=[f"10.66.{hi}.{lo + 1}/32"],
        tiers=[
            pb.TierInfo(
                name="default",
                ingress_policies=[pb.PolicyID(name="bench", kind="NetworkPolicy", namespace="bench")],
                default_action="Deny",
            )
        ],
    )


def run(pods: int, backend: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="cvd-bench-cni-") as tmp:
        cni_sock = os.path.join(tmp, "cni.sock")
        bin_dir = os.path.join(tmp, "bin")
        _stand_ins(bin_dir)
        felix = None
        with simulator(tmp) as sock:
            try:
                felix = FelixSim(
                    extra_env={
                        "CALICO_VPP_API_SOCKET": sock,
                        "CALICO_VPP_CNI_SOCKET": cni_sock,
                        "CALICO_VPP_STATE_DIR": os.path.join(tmp, "state"),
                        "CALICO_VPP_POLICY_BACKEND": backend,
                        "CALICO_VPP_POD_INTERFACE": "tap",
                        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
                    }
                ).start()
                felix.send_config({"FelixHostname": "node"})
                felix.send(
                    active_profile_update=pb.ActiveProfileUpdate(
                        id=pb.ProfileID(name="kns.bench"),
                        profile=pb.Profile(
                            inbound_rules=[pb.Rule(action="allow")], outbound_rules=[pb.Rule(action="allow")]
                        ),
                    )
                )
                rule = pb.Rule(
                    action="allow",
                    protocol=pb.Protocol(name="tcp"),
                    dst_ports=[pb.PortRange(first=80, last=80)],
                )
                felix.send(
                    active_policy_update=pb.ActivePolicyUpdate(
                        id=pb.PolicyID(name="bench", kind="NetworkPolicy", namespace="bench"),
                        policy=pb.Policy(tier="default", inbound_rules=[rule]),
                    )
                )
                felix.send(in_sync=pb.InSync())
                deadline = time.monotonic() + 30
                while not os.path.exists(cni_sock):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the driver's CNI socket never appeared:\n" + felix.describe())
                    time.sleep(0.02)
                times: list[float] = []
                add_times: list[float] = []
                with grpc.insecure_channel(f"unix:{cni_sock}") as channel:
                    add = channel.unary_unary(
                        "/cni.CniDataplane/Add",
                        request_serializer=lambda m: m.SerializeToString(),
                        response_deserializer=cpb.AddReply.FromString,
                    )
                    add(_add_request(10_000), timeout=30)  # warm-up: VPP connection, loopback, deny-all
                    for i in range(pods):
                        key = wep_key(wep_id(f"bench-{i}", "bench"))
                        t0 = time.perf_counter()
                        reply = add(_add_request(i), timeout=30)
                        t_add = time.perf_counter()
                        if not reply.successful:
                            raise RuntimeError(f"CNI ADD {i} failed: {reply.error_message}")
                        felix.send(
                            workload_endpoint_update=pb.WorkloadEndpointUpdate(
                                id=wep_id(f"bench-{i}", "bench"), endpoint=_endpoint(i)
                            )
                        )
                        felix.wait_wep_statuses({key: "up"}, timeout=30)
                        times.append((time.perf_counter() - t0) * 1000)
                        add_times.append((t_add - t0) * 1000)
            finally:
                if felix is not None:
                    felix.stop()
    ordered = sorted(times)
    return {
        "pods": pods,
        "median_ms": statistics.median(times),
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "max_ms": ordered[-1],
        "add_reply_median_ms": statistics.median(add_times),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--backend", choices=("npol", "acl"), default="npol")
    ap.add_argument("--no-check", action="store_true")
    args = ap.parse_args(argv)
    try:
        r = run(args.pods, args.backend)
    except Exception as exc:
        print(f"cni benchmark failed: {exc}", file=sys.stderr)
        return 2
    ok = r["median_ms"] <= TARGET_MEDIAN_MS
    print(f"CNI ADD -> Felix status 'up', {r['pods']} pods back to back ({args.backend}, simulator process):")
    print(
        f"  median {r['median_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms "
        f"(target median <= {TARGET_MEDIAN_MS:.0f} ms: {'met' if ok else 'NOT met'})"
    )
    print(f"  of which the ADD reply: median {r['add_reply_median_ms']:.1f} ms")
    return 0 if ok or args.no_check else 1


if __name__ == "__main__":
    sys.exit(main())
