"""Fault injection for the VPP simulator.

Four faults, for testing how the driver copes with a misbehaving VPP:

* ``fail_nth(message, n, retval, times=1)``: the n-th call of ``message`` from now on (counted over
  all clients) is answered with ``retval`` in its reply (``response`` for the memclnt messages that
  have no ``retval``) without being executed; a dump gets no details.  ``times`` consecutive calls
  fail (0: every call from the n-th on).
* ``drop_connections()``: every client connection is closed; the state is kept (the client sees its
  connection lost and may reconnect).
* ``restart(downtime=0.0)``: every connection is closed and the state replaced with a fresh one, as
  a VPP restart does; with a downtime the socket is removed for that long (connects fail).
* ``delay_replies(seconds)``: every reply (and dump details) is sent that long after its request
  arrived (0 turns it off); requests are still executed in order at once.  The connection handshake
  (``sockclnt_create``, ``get_api_json``) and ``sim`` CLI commands are not delayed.

In-process they are methods of :class:`~calico_vpp_driver.sim.server.SimServer`.  For the simulator
running as a process they are CLI commands sent with ``cli_inband`` (their reply text says what was
done; a malformed command gets retval -7 and its usage)::

    sim fault fail-nth <message> <n> <retval> [<times>]
    sim fault drop
    sim fault restart [<downtime-seconds>]
    sim fault delay <seconds>
    sim fault clear            # remove every pending fail-nth and the delay
    sim fault show             # list the active faults
    sim calls [<message>]      # how many requests of each message (or of one) were received

Drop and restart take effect once the reply to the command has been sent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

#: VPP's VNET_API_ERROR_INVALID_VALUE: the retval of a malformed ``sim`` command.
INVALID_VALUE = -7

USAGE = (
    "usage: sim fault fail-nth <message> <n> <retval> [<times>] | sim fault drop | "
    "sim fault restart [<downtime-seconds>] | sim fault delay <seconds> | sim fault clear | "
    "sim fault show | sim calls [<message>]"
)


@dataclass
class FailRule:
    """Fail calls ``first`` .. ``first + times - 1`` (counted from when the rule was set)."""

    message: str
    first: int
    retval: int
    times: int
    seen: int = 0

    def describe(self) -> str:
        span = "every call" if self.times == 0 else f"{self.times} call(s)"
        return (
            f"fail-nth {self.message}: call #{self.first} on, {span}, retval {self.retval} ({self.seen} seen)"
        )


class Faults:
    """The fault configuration and its counters; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FailRule] = []
        self._delay = 0.0

    def fail_nth(self, message: str, n: int = 1, retval: int = -1, times: int = 1) -> None:
        if n < 1 or times < 0:
            raise ValueError("n must be >= 1 and times >= 0")
        with self._lock:
            self._rules.append(FailRule(message, n, retval, times))

    def delay_replies(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        with self._lock:
            self._delay = float(seconds)

    @property
    def delay(self) -> float:
        return self._delay

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self._delay = 0.0

    def on_request(self, message: str) -> int | None:
        """Count a call of ``message``; the retval to fail it with, or None to execute it."""
        if not self._rules:  # nothing to count (rules are only ever added under the lock)
            return None
        with self._lock:
            failure: int | None = None
            for rule in self._rules:
                if rule.message != message:
                    continue
                rule.seen += 1
                last = None if rule.times == 0 else rule.first + rule.times - 1
                if failure is None and rule.seen >= rule.first and (last is None or rule.seen <= last):
                    failure = rule.retval
            # A rule whose last failing call has been seen is spent.
            self._rules = [r for r in self._rules if r.times == 0 or r.seen < r.first + r.times - 1]
            return failure

    def describe(self) -> list[str]:
        with self._lock:
            lines = [r.describe() for r in self._rules]
            if self._delay:
                lines.append(f"delay {self._delay:g}s")
            return lines


class FaultTarget(Protocol):
    """What the ``sim`` CLI commands act on (the server)."""

    faults: Faults

    def drop_connections(self) -> None: ...

    def restart(self, downtime: float = 0.0) -> None: ...

    def call_counts(self) -> dict[str, int]: ...


@dataclass
class CliResult:
    """A ``sim`` command's reply text and retval, and what to do once the reply has been sent."""

    reply: str
    retval: int = 0
    after_reply: Callable[[], None] | None = None


def is_sim_command(cmd: str) -> bool:
    words = cmd.split()
    return bool(words) and words[0] == "sim"


def run_sim_command(target: FaultTarget, cmd: str) -> CliResult:
    """Execute one ``sim ...`` CLI command against ``target``."""
    words = cmd.split()
    try:
        if words[1:2] == ["calls"]:
            counts = target.call_counts()
            if len(words) == 3:
                return CliResult(f"{words[2]} {counts.get(words[2], 0)}\n")
            if len(words) != 2:
                raise ValueError
            return CliResult("".join(f"{k} {v}\n" for k, v in sorted(counts.items())))
        if words[1:2] != ["fault"] or len(words) < 3:
            raise ValueError
        verb, args = words[2], words[3:]
        if verb == "fail-nth" and len(args) in (3, 4):
            message, n, retval = args[0], int(args[1]), int(args[2])
            times = int(args[3]) if len(args) == 4 else 1
            target.faults.fail_nth(message, n, retval, times)
            return CliResult(f"will fail {message} call #{n} ({times or 'every'} time(s)) with {retval}\n")
        if verb == "drop" and not args:
            return CliResult("dropping every connection\n", after_reply=target.drop_connections)
        if verb == "restart" and len(args) <= 1:
            downtime = float(args[0]) if args else 0.0
            if downtime < 0:
                raise ValueError
            return CliResult(
                f"restarting (downtime {downtime:g}s)\n", after_reply=lambda: target.restart(downtime)
            )
        if verb == "delay" and len(args) == 1:
            target.faults.delay_replies(float(args[0]))
            return CliResult(f"replies delayed by {float(args[0]):g}s\n")
        if verb == "clear" and not args:
            target.faults.clear()
            return CliResult("faults cleared\n")
        if verb == "show" and not args:
            return CliResult("".join(f"{line}\n" for line in target.faults.describe()))
        raise ValueError
    except ValueError:
        return CliResult(USAGE + "\n", INVALID_VALUE)
