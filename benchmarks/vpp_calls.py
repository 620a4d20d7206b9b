"""VPP client benchmark: synchronous and pipelined call rates, and the serializer's share.

The VPP simulator runs as a separate process (``python -m calico_vpp_driver.sim --socket
PATH``, as a real VPP would be another process); the driver's ``VppClient`` talks to it over
the unix socket exactly as it talks to VPP (vpp_papi, ``bootstrapapi=True``).

Two messages:

* small: ``npol_ipset_add_del_members`` adding one member (an IPv4 address) to an IP set;
* large: ``acl_add_replace`` replacing an ACL in place with 1,000 rules.

For each: the synchronous rate (``call()`` one at a time: one round trip each) and the
pipelined rate (one ``batch()``, up to 256 outstanding). Then the time spent packing alone,
without any I/O: the client's ``encode()`` (field normalisation + its packer, compiled from
vpp_papi's type objects, vpp_papi's own ``pack()`` being its fallback + framing) and vpp_papi's
``pack()`` by itself (for comparison), each also as a share of the pipelined time per message,
so it is clear how much of the end-to-end cost is serialization. The simulator's CPU
time during each pipelined run is printed too (it shares the machine).

Targets (small message): pipelined >= 5x synchronous, and >= 10,000 messages/s end to end.
Exit code 1 when a target is missed (``--no-check``: print only), 2 when the run failed.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from calico_vpp_driver.vpp.client import Request, VppClient, normalize_fields  # noqa: E402

TARGET_PIPELINE_SPEEDUP = 5.0
TARGET_SMALL_PER_S = 10_000.0
SIM_CMD = [sys.executable, "-m", "calico_vpp_driver.sim"]
ACL_RULES = 1000


class Sim:
    """The simulator as a child process."""

    def __init__(self, socket_path: str) -> None:
        self.proc = subprocess.Popen(
            [*SIM_CMD, "--socket", socket_path],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = threading.Event()
        self.lines: list[str] = []

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                if "listening" in line:
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(60) or self.proc.poll() is not None:
            self.stop()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"the simulator did not start: {''.join(self.lines)}{err}")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def small_fields(set_id: int, i: int) -> dict[str, Any]:
    return {
        "set_id": set_id,
        "is_add": True,
        "members": [{"val": {"address": ipaddress.IPv4Address(0x0A000000 + i)}}],
    }


def acl_rules(n: int, salt: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "is_permit": 1,
            "src_prefix": ipaddress.IPv4Network(((0x0A000000 + ((i + salt) << 8)) & 0xFFFFFFFF, 24)),
            "dst_prefix": ipaddress.IPv4Network("0.0.0.0/0"),
            "proto": 6,
            "srcport_or_icmptype_first": 0,
            "srcport_or_icmptype_last": 65535,
            "dstport_or_icmpcode_first": 80 + i % 1000,
            "dstport_or_icmpcode_last": 80 + i % 1000,
        }
        for i in range(n)
    ]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def yardstick() -> float:
    """Seconds for a fixed CPU-bound loop: a yardstick printed next to the figures."""
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        d = {}
        for i in range(300_000):
            d[str(i)] = (i, i + 1)
        best = min(best, time.perf_counter() - t)
    return best


_BURN = (
    "import time\n"
    "t = time.perf_counter(); c = time.process_time()\n"
    "while time.perf_counter() - t < 0.5: pass\n"
    "print((time.process_time() - c) / (time.perf_counter() - t))\n"
)


def cores_for_two() -> float:
    """CPU (in cores) two busy processes get together here: the client and the simulator
    compete for it (on a sandbox with a CPU quota it can be 1.0 even where nproc says 2)."""
    procs = [
        subprocess.Popen([sys.executable, "-c", _BURN], stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    return sum(float(p.communicate()[0]) for p in procs)


def papi_pack_timer(socket_path: str) -> Callable[[str, dict[str, Any], int], float]:
    """Seconds per vpp_papi ``pack()`` of a message, fields already normalised (the
    serializer alone). Uses its own vpp_papi connection only to load VPP's definitions."""
    from vpp_papi import VPPApiClient  # the benchmark looks under the client on purpose

    vpp = VPPApiClient(server_address=socket_path, bootstrapapi=True)
    vpp.connect("vpp-calls-bench-pack")
    try:
        defs = dict(vpp.messages)
    finally:
        vpp.disconnect()

    def measure(name: str, fields: dict[str, Any], n: int) -> float:
        msgdef = defs[name]
        kw = normalize_fields(msgdef, fields)
        kw.update(_vl_msg_id=1, client_index=0, context=1)
        t = time.perf_counter()
        for _ in range(n):
            msgdef.pack(kw)
        return (time.perf_counter() - t) / n

    return measure


def run_once(socket_path: str, sim: Sim, quick: bool) -> dict[str, float]:
    n_sync = 1000 if quick else 3000
    n_pipe = 10_000 if quick else 20_000
    n_sync_big = 10 if quick else 30
    n_pipe_big = 30 if quick else 100
    out: dict[str, float] = {}
    with VppClient(socket_path, features=("npol", "acl"), read_timeout=30.0) as client:
        set_id = client.call("npol_ipset_create", "bench set", type=0).set_id
        acl = client.call(
            "acl_add_replace", "bench acl", acl_index=0xFFFFFFFF, tag="bench", r=acl_rules(ACL_RULES)
        ).acl_index

        # Small message
        def sync_small() -> None:
            for i in range(n_sync):
                client.call("npol_ipset_add_del_members", "bench", **small_fields(set_id, i))

        t, _ = timed(sync_small)
        out["small_sync_per_s"] = n_sync / t
        base = n_sync
        reqs = [
            Request("npol_ipset_add_del_members", small_fields(set_id, base + i), None) for i in range(n_pipe)
        ]
        cpu0, own0 = sim.cpu_seconds(), time.process_time()
        t, results = timed(lambda: client.batch(reqs))
        out["small_sim_cpu_share"] = (sim.cpu_seconds() - cpu0) / t
        out["small_sim_cpu_us"] = (sim.cpu_seconds() - cpu0) / n_pipe * 1e6
        out["small_client_cpu_us"] = (time.process_time() - own0) / n_pipe * 1e6
        failed = [r for r in results if not r.ok]
        if failed:
            raise RuntimeError(f"{len(failed)} pipelined small requests failed, e.g. {failed[0].error}")
        out["small_pipelined_per_s"] = n_pipe / t

        # Large message
        def sync_big() -> None:
            for k in range(n_sync_big):
                client.call(
                    "acl_add_replace", "bench acl", acl_index=acl, tag="bench", r=acl_rules(ACL_RULES, k)
                )

        big_rules = [acl_rules(ACL_RULES, k) for k in range(4)]
        t, _ = timed(sync_big)
        out["large_sync_per_s"] = n_sync_big / t
        reqs = [
            Request("acl_add_replace", {"acl_index": acl, "tag": "bench", "r": big_rules[k % 4]}, "bench acl")
            for k in range(n_pipe_big)
        ]
        cpu0 = sim.cpu_seconds()
        t, results = timed(lambda: client.batch(reqs))
        out["large_sim_cpu_share"] = (sim.cpu_seconds() - cpu0) / t
        failed = [r for r in results if not r.ok]
        if failed:
            raise RuntimeError(f"{len(failed)} pipelined large requests failed, e.g. {failed[0].error}")
        out["large_pipelined_per_s"] = n_pipe_big / t

        # Packing alone
        n_pack = 5000 if quick else 20_000
        fields = small_fields(set_id, 1)
        t, _ = timed(lambda: [client.encode("npol_ipset_add_del_members", **fields) for _ in range(n_pack)])
        out["small_encode_us"] = t / n_pack * 1e6
        big = {"acl_index": acl, "tag": "bench", "r": big_rules[0]}
        n_pack_big = 20 if quick else 50
        t, _ = timed(lambda: [client.encode("acl_add_replace", **big) for _ in range(n_pack_big)])
        out["large_encode_ms"] = t / n_pack_big * 1e3
    pack = papi_pack_timer(socket_path)
    out["small_papi_pack_us"] = pack("npol_ipset_add_del_members", small_fields(1, 1), n_pack) * 1e6
    out["large_papi_pack_ms"] = (
        pack("acl_add_replace", {"acl_index": 1, "tag": "b", "r": big_rules[0]}, 20) * 1e3
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="VPP client call rates against the simulator.")
    ap.add_argument("--no-check", action="store_true", help="print figures; never fail on targets")
    ap.add_argument("--quick", action="store_true", help="fewer calls (a quick try)")
    ap.add_argument("--repeat", type=int, default=3, help="runs; the median of each figure is judged")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="vpp-calls-") as tmp:
        socket_path = os.path.join(tmp, "api.sock")
        try:
            sim = Sim(socket_path)
        except Exception as exc:
            print(f"FAILED to start the simulator: {exc}", file=sys.stderr)
            return 2
        try:
            for _ in range(args.repeat):
                runs.append(run_once(socket_path, sim, args.quick))
        except Exception as exc:
            print(f"FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        finally:
            sim.stop()

    r = {k: statistics.median(run[k] for run in runs) for k in runs[0]}
    speedup = r["small_pipelined_per_s"] / r["small_sync_per_s"]
    big_speedup = r["large_pipelined_per_s"] / r["large_sync_per_s"]
    small_pipe_us = 1e6 / r["small_pipelined_per_s"]
    large_pipe_ms = 1e3 / r["large_pipelined_per_s"]
    print(f"machine yardstick: {yardstick():.3f} s (fixed CPU loop; lower is faster)")
    print(f"CPU two busy processes get together: {cores_for_two():.2f} cores (client + simulator share it)")
    print(f"runs: {args.repeat}{' (quick)' if args.quick else ''}; figures are medians")
    print("small: npol_ipset_add_del_members, 1 member")
    print(f"  synchronous   {r['small_sync_per_s']:>10,.0f} calls/s")
    print(
        f"  pipelined     {r['small_pipelined_per_s']:>10,.0f} msgs/s  ({speedup:.1f}x synchronous; "
        f"{small_pipe_us:.1f} us/msg wall)"
    )
    print(
        f"  CPU per msg   client {r['small_client_cpu_us']:.0f} us, simulator {r['small_sim_cpu_us']:.0f} us "
        f"(simulator busy {r['small_sim_cpu_share']:.0%} of the wall time)"
    )
    print(
        f"  CPU-bound capacity: client alone {1e6 / r['small_client_cpu_us']:,.0f} msgs/s, "
        f"simulator alone {1e6 / r['small_sim_cpu_us']:,.0f} msgs/s"
    )
    print(
        f"  packing alone {r['small_encode_us']:>10.1f} us/msg client encode "
        f"({r['small_encode_us'] / small_pipe_us:.0%} of pipelined time); vpp_papi's own pack "
        f"{r['small_papi_pack_us']:.1f} us ({r['small_papi_pack_us'] / small_pipe_us:.0%})"
    )
    print(f"large: acl_add_replace, {ACL_RULES} rules")
    print(f"  synchronous   {r['large_sync_per_s']:>10,.1f} calls/s")
    print(
        f"  pipelined     {r['large_pipelined_per_s']:>10,.1f} msgs/s  ({big_speedup:.1f}x synchronous; "
        f"{r['large_pipelined_per_s'] * ACL_RULES:,.0f} rules/s; simulator CPU "
        f"{r['large_sim_cpu_share']:.0%} of the wall time)"
    )
    print(
        f"  packing alone {r['large_encode_ms']:>10.2f} ms/msg client encode "
        f"({r['large_encode_ms'] / large_pipe_ms:.0%} of pipelined time); vpp_papi's own pack "
        f"{r['large_papi_pack_ms']:.2f} ms ({r['large_papi_pack_ms'] / large_pipe_ms:.0%})"
    )
    checks = [
        (
            f"pipelined >= {TARGET_PIPELINE_SPEEDUP:.0f}x synchronous (small)",
            speedup >= TARGET_PIPELINE_SPEEDUP,
            f"{speedup:.1f}x",
        ),
        (
            f">= {TARGET_SMALL_PER_S:,.0f} small messages/s end to end",
            r["small_pipelined_per_s"] >= TARGET_SMALL_PER_S,
            f"{r['small_pipelined_per_s']:,.0f}/s",
        ),
    ]
    print("targets:")
    for text, ok, got in checks:
        print(f"  {'ok  ' if ok else 'MISS'} {text}: {got}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "median": r}, indent=2))
    if args.no_check:
        return 0
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
