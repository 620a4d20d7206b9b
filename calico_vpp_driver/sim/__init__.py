"""A VPP simulator: VPP's binary API over its unix-socket transport, for testing the driver.

The driver's vpp_papi client connects to it exactly as to a real VPP (``bootstrapapi=True`` fetches
the definitions in :mod:`~calico_vpp_driver.sim.defs`).  :mod:`~calico_vpp_driver.sim.server` speaks
the transport and the memclnt messages and dispatches the others to the handler registry of
:mod:`calico_vpp_driver.sim.handlers`, which works on :mod:`calico_vpp_driver.sim.state`; faults can
be injected (:mod:`~calico_vpp_driver.sim.faults`).  In-process::

    with SimServer("/tmp/vpp-api.sock") as sim:
        sim.fail_nth("npol_rule_create", 3, -7)
        ...

or as a process: ``python -m calico_vpp_driver.sim --socket PATH`` (runs until SIGTERM).
"""

from calico_vpp_driver.sim.server import SimServer

__all__ = ["SimServer"]
