"""Run every benchmark (what ``make bench`` calls).

Each benchmark is a script in this directory, run in its own process with this Python. Exit
code: 0 when all met their targets, 1 when a target was missed, 2 when a benchmark failed to
run. ``--no-check`` is passed on (print the figures, never fail on targets).

    python benchmarks/run.py [--no-check] [--only NAME]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> script; in the order they run.
BENCHMARKS: dict[str, str] = {
    "ingest": "ingest.py",  # Felix startup stream -> driver in_sync: members/s, RSS
    "vpp_calls": "vpp_calls.py",  # VPP client vs the simulator: sync/pipelined calls/s, packing share
    "policy": "policy.py",  # node-at-scale policy into the simulator: all up, member add, rule change
    "cni": "cni.py",  # CNI ADD -> Felix status "up" for 100 pods back to back
    "routes": "routes.py",  # routes and tunnels for the node-at-scale profile's 500 nodes
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run the benchmarks in benchmarks/.")
    ap.add_argument("--no-check", action="store_true", help="print figures; never fail on targets")
    ap.add_argument("--only", choices=sorted(BENCHMARKS), action="append")
    args = ap.parse_args(argv)

    worst = 0
    outcomes: list[tuple[str, int, float]] = []
    for name, script in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        cmd = [sys.executable, str(HERE / script)]
        if args.no_check:
            cmd.append("--no-check")
        print(f"=== {name} ===", flush=True)
        started = time.perf_counter()
        code = subprocess.call(cmd, cwd=HERE.parent)
        elapsed = time.perf_counter() - started
        outcomes.append((name, code, elapsed))
        worst = max(worst, code if code in (0, 1) else 2)
        print(flush=True)

    print("=== summary ===")
    for name, code, elapsed in outcomes:
        verdict = {0: "ok", 1: "target missed"}.get(code, f"FAILED (exit {code})")
        print(f"  {name:<10} {verdict:<22} ({elapsed:.1f} s)")
    return worst


if __name__ == "__main__":
    sys.exit(main())
