"""The VPP simulator as its own process, for benchmarks that measure the driver against it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def simulator(directory: str) -> Iterator[str]:
    """Start `python -m calico_vpp_driver.sim` listening in `directory`; yield its API socket
    path once it listens; stop it on exit."""
    sock = os.path.join(directory, "api.sock")
    sim = subprocess.Popen(
        [sys.executable, "-m", "calico_vpp_driver.sim", "--socket", sock],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert sim.stdout is not None
        sim.stdout.readline()  # "vpp-sim listening on ..."
        yield sock
    finally:
        sim.terminate()
        sim.wait(10)
