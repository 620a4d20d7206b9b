"""Route programming benchmark: the node-at-scale profile's routes into a VPP simulator in
another process.

The profile (``benchmarks/profile.py``) has 500 nodes on one VXLAN pool: for this node
(``node-1``) every other node's IPAM blocks (``REMOTE_WORKLOAD``), their VTEP addresses
(``REMOTE_TUNNEL``), the remote hosts (``REMOTE_HOST``: nothing to program), the local blocks
(blackholes) and the local pods' /32s (the CNI's, skipped). Nodes of this node's zone are in its
subnet (``same_subnet``: direct routes), the others behind a VXLAN tunnel each.

The simulator runs as its own process (``python -m calico_vpp_driver.sim``); this process
decodes the profile's routing messages into the driver's model and runs ``RouteProgrammer``
over a ``VppClient``, as the driver would. Figures (API messages counted as the driver's client
was asked to send them):

* the full initial programming (InSync): wall time and API messages;
* one route change (a remote block moves to another node whose tunnel exists): median time
  over 21 changes, and the API messages of one;
* a driver restart on the same VPP (adopt, then a full apply of the same model): time and API
  messages (target: no route or tunnel message at all).

Usage: ``.venv/bin/python benchmarks/routes.py [--small] [--seed N]``. Prints its figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.policy import Counting  # noqa: E402
from benchmarks.profile import LOCAL_NODE, NODE_AT_SCALE, SMALL, generate  # noqa: E402
from benchmarks.simproc import simulator  # noqa: E402

ROUTING = ("config_update", "route_update", "vtep_update", "host_metadata_update", "ipam_pool_update")
CHANGES = 21


def run(socket_path: str, small: bool, seed: int) -> dict[str, Any]:
    from calico_vpp_driver.config import load as load_config
    from calico_vpp_driver.felix.decode import apply_message
    from calico_vpp_driver.model.state import DesiredState
    from calico_vpp_driver.model.types import Route
    from calico_vpp_driver.sim.node import SimNode
    from calico_vpp_driver.vpp.routes import RT_REMOTE_WORKLOAD, RouteProgrammer

    state = DesiredState()
    t0 = time.perf_counter()
    for msg in generate(seed, SMALL if small else NODE_AT_SCALE):
        if msg.WhichOneof("payload") in ROUTING:
            apply_message(state, msg)
    out: dict[str, Any] = {"decode_s": round(time.perf_counter() - t0, 3)}
    cfg, _problems = load_config(state.raw_config, environ={})
    me = state.host_metadata[LOCAL_NODE]
    assert me.ipv4_addr is not None and me.ipv4_net is not None
    node = SimNode(
        backend="acl",
        external_socket=socket_path,
        config=cfg,
        node_ip=f"{me.ipv4_addr}/{me.ipv4_net.prefixlen}",
    )
    try:
        counting = Counting(node.client)
        config = replace(cfg, felix_hostname=LOCAL_NODE, vpp_state_dir=node.state_dir)
        remote = [r for r in state.routes.values() if r.types == RT_REMOTE_WORKLOAD]
        out["model"] = {
            "routes": len(state.routes),
            "remote_blocks": len(remote),
            "nodes": len(state.host_metadata),
            "vteps": len(state.vteps),
        }

        # 1. InSync: everything.
        routes = RouteProgrammer(counting, config)
        routes.adopt()
        counting.take()
        t0 = time.perf_counter()
        problems = routes.apply(state, state.take_dirty(), True)
        out["full_s"] = round(time.perf_counter() - t0, 3)
        out["full_msgs"] = counting.take()
        out["full_problems"] = len(problems)
        out["programmed"] = {"routes": len(routes.routes), "tunnels": len(routes.tunnels)}

        # 2. One route change: a remote block moves to another node (its tunnel exists).
        tunneled = {r.dst_node_name for r in remote if not r.same_subnet}
        others = sorted(tunneled)
        times, msgs = [], []
        for i in range(CHANGES):
            r = state.routes[remote[i % len(remote)].dst]
            target = next(n for n in others[i:] + others if n != r.dst_node_name)
            moved: Route = replace(
                r,
                dst_node_name=target,
                dst_node_ip=state.host_metadata[target].ipv4_addr,
                same_subnet=False,
            )
            state.update_route(moved)
            t0 = time.perf_counter()
            problems = routes.apply(state, state.take_dirty(), False)
            times.append((time.perf_counter() - t0) * 1000)
            msgs.append(counting.take())
            assert not problems, problems
        out["change_ms_median"] = round(statistics.median(times), 3)
        out["change_msgs"] = msgs[-1]

        # 3. A driver restart on the same VPP: adopt and compare, nothing to send.
        t0 = time.perf_counter()
        restarted = RouteProgrammer(counting, config)
        restarted.adopt()
        problems = restarted.apply(state, state.take_dirty(), True)
        out["restart_s"] = round(time.perf_counter() - t0, 3)
        out["restart_msgs"] = counting.take()
        out["record_bytes"] = os.path.getsize(os.path.join(node.state_dir, "routes.json"))
    finally:
        node.close()
    return out


def report(r: dict[str, Any]) -> list[str]:
    def fmt(msgs: dict[str, int]) -> str:
        total = sum(msgs.values())
        return f"{total} ({', '.join(f'{k} {v}' for k, v in sorted(msgs.items()))})"

    m = r["model"]
    return [
        f"model: {m['routes']} routes ({m['remote_blocks']} remote blocks), {m['nodes']} nodes, "
        f"{m['vteps']} VTEPs; decoded in {r['decode_s']} s",
        f"full programming: {r['full_s']} s, {r['programmed']['routes']} routes and "
        f"{r['programmed']['tunnels']} tunnels, problems {r['full_problems']}, "
        f"API messages {fmt(r['full_msgs'])}",
        f"one route change: median {r['change_ms_median']} ms over {CHANGES}, "
        f"API messages {fmt(r['change_msgs'])}",
        f"driver restart (adopt + full apply): {r['restart_s']} s, API messages {fmt(r['restart_msgs'])}",
        f"route record: {r['record_bytes']} bytes",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--small", action="store_true", help="the small profile (tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line too")
    parser.add_argument("--no-check", action="store_true", help="never fail (print the figures)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cvd-bench-routes-") as tmp, simulator(tmp) as sock:
        result = run(sock, args.small, args.seed)
    for line in report(result):
        print(line)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    restart_route_msgs = {
        k: v for k, v in result["restart_msgs"].items() if not k.endswith("_dump") and k != "add_node_next"
    }
    failed = bool(restart_route_msgs or result["full_problems"])
    return 1 if failed and not args.no_check else 0


if __name__ == "__main__":
    sys.exit(main())
