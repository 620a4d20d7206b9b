"""Policy programming benchmark: the node-at-scale profile into a VPP simulator in another process.

For each backend (npol, acl) a child process plays the driver: it decodes the profile's stream
into the driver's model (`felix.decode.apply_message`), then runs the driver's `VppDataplane`
against the VPP simulator, which runs as its own process (``python -m calico_vpp_driver.sim``).
The 250 local pods' interfaces are created beforehand, as the CNI plugin would have.

Figures (every API message counted as the driver's client sent it):

* InSync -> every endpoint reported "up": the first apply after InSync (target: <= 5 s, npol);
* one IP set member added: from the delta message's decode to the driver having VPP's reply
  (so the member is in VPP), median of 21, and the API messages per add (target: 5 ms, 1);
* one rule changed in a 20-rule policy that all 250 endpoints use: time to VPP's last reply and
  API messages (target: 20 ms, at most 3);
* the same changes as Calico/VPP's design costs them (it recreates every rule of a changed
  policy: 2N+1 calls; it deletes and recreates every object on a resync);
* a Felix resync (same driver process) and a driver restart (same VPP): API messages;
* the driver process's RSS.

Usage: ``python benchmarks/policy.py [--backend npol|acl|both] [--small] [--no-check]``.
Exit 1 when a target is missed (unless ``--no-check``), 2 when the run failed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.profile import NODE_AT_SCALE, SMALL, decode_stream, encode_stream, generate  # noqa: E402
from benchmarks.simproc import simulator  # noqa: E402

TARGET_UP_S = 5.0
TARGET_MEMBER_MS = 5.0
TARGET_RULE_MS = 20.0
TARGET_RULE_MSGS = 3


# ------------------------------------------------------------------------------------ the child


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Counting:
    """The driver's client, counting every request it is asked to send."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.sent: Counter[str] = Counter()

    def batch(self, requests: Any, **kw: Any) -> Any:
        reqs = list(requests)
        for r in reqs:
            self.sent[r[0]] += 1
        return self._client.batch(reqs, **kw)

    def submit(self, requests: Any, **kw: Any) -> Any:
        reqs = list(requests)
        for r in reqs:
            self.sent[r[0]] += 1
        return self._client.submit(reqs, **kw)

    def dump(self, name: str, *a: Any, **kw: Any) -> Any:
        self.sent[name] += 1
        return self._client.dump(name, *a, **kw)

    def call(self, name: str, *a: Any, **kw: Any) -> Any:
        self.sent[name] += 1
        return self._client.call(name, *a, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def take(self) -> dict[str, int]:
        out = dict(self.sent)
        self.sent.clear()
        return out


def child(stream_path: str, socket_path: str, backend: str) -> dict[str, Any]:
    from calico_vpp_driver.config import load as load_config
    from calico_vpp_driver.felix import felixbackend_pb2 as pb
    from calico_vpp_driver.felix.decode import apply_message
    from calico_vpp_driver.felix.status import Health, StatusBoard
    from calico_vpp_driver.model.state import DesiredState
    from calico_vpp_driver.model.types import PolicyID, PortRange, Rule, TierInfo
    from calico_vpp_driver.sim.node import SimNode
    from calico_vpp_driver.vpp.dataplane import VppDataplane, rule_counts

    out: dict[str, Any] = {"backend": backend}
    state = DesiredState()
    data = Path(stream_path).read_bytes()
    t0 = time.perf_counter()
    for msg in decode_stream(data):
        apply_message(state, msg)
    out["ingest_s"] = time.perf_counter() - t0
    del data
    gc.collect()
    cfg, _problems = load_config(state.raw_config, environ={})

    # The pods' interfaces, as CNI left them (the driver finds them by tag).
    node = SimNode(backend=backend, external_socket=socket_path, config=cfg)
    for ep in state.workload_endpoints.values():
        node.add_pod(ep.name, [n.network_address for n in ep.ipv4_nets + ep.ipv6_nets], register=False)
    node.dataplane.close = lambda: None  # type: ignore[method-assign]
    counting = Counting(node.client)
    dp = VppDataplane(lambda _c: counting, backend=backend, config=replace(cfg, vpp_state_dir=node.state_dir))
    dp.connect()
    counting.take()
    board = StatusBoard()

    # 1. InSync -> every endpoint up. As the driver's session does, the synced model is kept
    # out of the cyclic GC's scans through the first apply.
    gc.freeze()
    t0, c0 = time.perf_counter(), time.process_time()
    dp.apply(state, state.take_dirty(), board)
    out["up_s"] = time.perf_counter() - t0
    out["up_cpu_s"] = time.process_time() - c0
    gc.unfreeze()
    health = Counter(board.health(k)[0].name for k in state.workload_endpoints)
    out["endpoints"] = dict(health)
    reasons = Counter(
        board.health(k)[1][:120] for k in state.workload_endpoints if board.health(k)[0] is not Health.UP
    )
    out["not_up_reasons"] = dict(reasons.most_common(3))
    out["first_apply_messages"] = counting.take()
    out["objects"] = dp.npol.object_counts() if dp.npol else {}
    out["objects"].update(rule_counts(dp.acls))  # type: ignore[arg-type]

    # 2. One IP set member added (a set that policies of local endpoints use).
    used = [s for s in state.ipsets.values() if s.type != 1 and state.ipset_users(s.id)]
    used.sort(key=lambda s: (len(s.members), s.id))
    target = used[len(used) // 2]
    times, counts = [], []
    for i in range(21):
        msg = pb.ToDataplane(sequence_number=10_000_000 + i)
        msg.ipset_delta_update.id = target.id
        msg.ipset_delta_update.added_members.append(f"10.99.{i // 250}.{i % 250 + 1}/32")
        t0 = time.perf_counter()
        apply_message(state, msg)
        dp.apply(state, state.take_dirty(), board)
        times.append((time.perf_counter() - t0) * 1000)
        counts.append(sum(counting.take().values()))
    out["member_add"] = {
        "set": target.id,
        "set_size": len(target.members),
        "median_ms": statistics.median(times),
        "messages": statistics.median(counts),
        "max_messages": max(counts),
    }

    # 3. One rule changed in a 20-rule policy used by all 250 endpoints.
    pid = PolicyID("bench-20-rules", "", "GlobalNetworkPolicy")

    def policy(port: int) -> pb.ToDataplane:
        m = pb.ToDataplane(sequence_number=20_000_000 + port)
        m.active_policy_update.id.name = pid.name
        m.active_policy_update.id.kind = pid.kind
        p = m.active_policy_update.policy
        p.tier = "bench"
        for i in range(19):
            r = p.inbound_rules.add(action="allow")
            r.protocol.name = "tcp"
            r.dst_ports.add(first=20000 + i, last=20000 + i)
        r = p.inbound_rules.add(action="allow")
        r.protocol.name = "tcp"
        r.dst_ports.add(first=port, last=port)
        return m

    apply_message(state, policy(30000))
    for ep in list(state.workload_endpoints.values()):
        state.update_workload_endpoint(replace(ep, tiers=(TierInfo("bench", (pid,), (), "Pass"), *ep.tiers)))
    dp.apply(state, state.take_dirty(), board)
    counting.take()
    times, counts = [], []
    for i in range(11):
        t0 = time.perf_counter()
        apply_message(state, policy(30001 + i))
        dp.apply(state, state.take_dirty(), board)
        times.append((time.perf_counter() - t0) * 1000)
        counts.append(counting.take())
    out["rule_change"] = {
        "median_ms": statistics.median(times),
        "messages": counts[len(counts) // 2],
        "max_messages": max(sum(c.values()) for c in counts),
    }
    _ = Rule, PortRange

    # 4. A Felix resync (same driver) and a driver restart (same VPP).
    dp.new_felix_session()
    state.mark_in_sync()
    t0 = time.perf_counter()
    dp.apply(state, state.take_dirty(), board)
    out["resync"] = {"s": time.perf_counter() - t0, "messages": counting.take()}
    dp2 = VppDataplane(
        lambda _c: counting, backend=backend, config=replace(cfg, vpp_state_dir=node.state_dir)
    )
    dp2.connect()
    state.mark_in_sync()
    t0 = time.perf_counter()
    dp2.apply(state, state.take_dirty(), board)
    out["restart"] = {"s": time.perf_counter() - t0, "messages": counting.take()}
    out["rss_mib"] = _rss_mib()
    return out


# ------------------------------------------------------------------------------------ the parent


def run_backend(stream: str, backend: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cvd-bench-") as tmp, simulator(tmp) as sock:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", stream, "--socket", sock, "--backend", backend],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=3600,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"{backend} child failed:\n{proc.stderr[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{"backend"')]
    if not lines:
        raise RuntimeError(f"{backend} child printed no result:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def calico_vpp_costs(objects: dict[str, int]) -> dict[str, int]:
    """What Calico/VPP's design sends for the same changes (from its documented behaviour)."""
    n = 20
    total = objects.get("sets", 0) + objects.get("rules", 0) + objects.get("policies", 0)
    return {
        "rule_change_in_20_rule_policy": 2 * n + 1,
        "resync_at_least": 2 * total + objects.get("set_members", 0) // 1000,
    }


def report(r: dict[str, Any], check: bool) -> tuple[list[str], bool]:
    ok = True
    b = r["backend"]
    lines = [f"backend {b}:"]
    up = r["endpoints"].get("UP", 0)
    total = sum(r["endpoints"].values())
    lines.append(
        f"  InSync -> endpoints up: {r['up_s']:.2f} s ({up}/{total} up; {r['endpoints']}); the driver's own "
        f"CPU time {r['up_cpu_s']:.2f} s (the rest: waiting for the simulator)"
    )
    if r.get("not_up_reasons"):
        lines.append(f"    not up because: {r['not_up_reasons']}")
    msgs = r["first_apply_messages"]
    lines.append(f"    API messages: {sum(msgs.values())} {dict(sorted(msgs.items()))}")
    lines.append(f"    VPP objects: {r['objects']}")
    m = r["member_add"]
    lines.append(
        f"  one IP set member added ({m['set']}, {m['set_size']} members): median {m['median_ms']:.2f} ms, "
        f"{m['messages']:g} API message(s) (max {m['max_messages']})"
    )
    rc = r["rule_change"]
    lines.append(
        f"  one rule changed in a 20-rule policy on all endpoints: median {rc['median_ms']:.2f} ms, "
        f"API messages {rc['messages']} (max {rc['max_messages']})"
    )
    cv = calico_vpp_costs(r["objects"])
    lines.append(
        f"  Calico/VPP's design for the same: rule change {cv['rule_change_in_20_rule_policy']} calls; "
        f"resync >= {cv['resync_at_least']} calls (delete + recreate every object)"
    )
    lines.append(
        f"  Felix resync (same driver): {r['resync']['s']:.2f} s, API messages {r['resync']['messages']}"
    )
    rs = r["restart"]
    lines.append(
        f"  driver restart (same VPP): {rs['s']:.2f} s, "
        f"API messages {sum(rs['messages'].values())} {rs['messages']}"
    )
    lines.append(f"  driver RSS: {r['rss_mib']:.1f} MiB (ingest {r['ingest_s']:.2f} s, not a target here)")
    if b == "npol" and check:
        checks = [
            (r["up_s"] <= TARGET_UP_S and up == total, f"all up within {TARGET_UP_S} s"),
            (
                m["median_ms"] <= TARGET_MEMBER_MS and m["messages"] == 1,
                f"member add <= {TARGET_MEMBER_MS} ms, 1 message",
            ),
            (
                rc["median_ms"] <= TARGET_RULE_MS and rc["max_messages"] <= TARGET_RULE_MSGS,
                f"rule change <= {TARGET_RULE_MS} ms, <= 3 messages",
            ),
        ]
        for good, what in checks:
            lines.append(f"  target {what}: {'met' if good else 'MISSED'}")
            ok = ok and good
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="both", choices=("npol", "acl", "both"))
    ap.add_argument("--small", action="store_true", help="the small profile (a quick check)")
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--socket", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        from calico_vpp_driver import log as log_mod

        log_mod.configure("WARNING")  # logs on stderr; stdout carries the result
        print(json.dumps(child(args.child, args.socket, args.backend)), flush=True)
        return 0
    t0 = time.perf_counter()
    sizes = SMALL if args.small else NODE_AT_SCALE
    with tempfile.NamedTemporaryFile(prefix="cvd-profile-", delete=False) as f:
        f.write(encode_stream(generate(0, sizes)))
        stream = f.name
    print(
        f"profile {'small' if args.small else 'node-at-scale'} generated in "
        f"{time.perf_counter() - t0:.1f} s (not measured)"
    )
    from benchmarks.ingest import calibrate

    print(f"machine speed {calibrate():.3f} s for the ingest benchmark's fixed loop (lower is faster)")
    ok = True
    try:
        for backend in ("npol", "acl") if args.backend == "both" else (args.backend,):
            try:
                result = run_backend(stream, backend)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"backend {backend}: run failed: {exc}")
                return 2
            lines, good = report(result, not args.no_check)
            print("\n".join(lines), flush=True)
            ok = ok and good
    finally:
        os.unlink(stream)
    return 0 if ok or args.no_check else 1


if __name__ == "__main__":
    sys.exit(main())
