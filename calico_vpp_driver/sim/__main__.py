"""``python -m calico_vpp_driver.sim --socket PATH``: run the VPP simulator until SIGTERM or SIGINT.

Prints ``vpp-sim listening on PATH`` on stdout once clients can connect.  Faults are injected over
the API with ``cli_inband`` commands (``sim fault ...``; see :mod:`calico_vpp_driver.sim.faults`).
``--handlers`` and ``--state`` (``module:attribute``) replace the simulator's own handler registry
and state class, e.g. with test doubles.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from typing import Any

from calico_vpp_driver.sim.server import SimServer


def _load(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise SystemExit(f"expected module:attribute, got {spec!r}")
    return getattr(importlib.import_module(module), attr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calico_vpp_driver.sim", description="The VPP simulator.")
    parser.add_argument("--socket", required=True, help="path of the API socket to serve")
    parser.add_argument("--handlers", help="module:attribute of the handler registry to use instead")
    parser.add_argument("--state", help="module:attribute of the state factory to use instead")
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")

    handlers = _load(args.handlers) if args.handlers else None
    state_factory = _load(args.state) if args.state else None
    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = SimServer(args.socket, state_factory, handlers).start()
    print(f"vpp-sim listening on {args.socket}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
