"""A minimal Felix stand-in for protocol tests.

It starts the driver exactly the way Felix's external-dataplane code does (no arguments, the
environment inherited, stdin /dev/null, fd 3 = read end of the Felix->driver pipe, fd 4 = write
end of the driver->Felix pipe), writes length-prefixed ``ToDataplane`` frames to it and decodes
every ``FromDataplane`` frame it sends back.  It knows nothing about the driver's internals: it is
written from docs/felix-protocol.md only.

Background threads drain the driver's fd 4, stdout and stderr all the time, so the driver never
blocks on a full pipe unless a test pauses the fd 4 reader on purpose (``pause_reading``).
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import DecodeError

from calico_vpp_driver.felix import felixbackend_pb2 as pb

REPO = Path(__file__).resolve().parents[1]
DRIVER_CMD = [sys.executable, "-m", "calico_vpp_driver"]
HEADER = struct.Struct("<Q")
# Nothing sane is this big; a bigger length means the byte stream is out of step.
MAX_SANE_FRAME = 1 << 30

T = TypeVar("T")

WepKey = tuple[str, str, str]


def frame(payload: bytes) -> bytes:
    """One frame: 8-byte little-endian length, then the payload."""
    return HEADER.pack(len(payload)) + payload


# --------------------------------------------------------------------------- message builders


def wep_id(name: str, namespace: str = "default") -> pb.WorkloadEndpointID:
    return pb.WorkloadEndpointID(orchestrator_id="k8s", workload_id=f"{namespace}/{name}", endpoint_id="eth0")


def wep_key(wid: pb.WorkloadEndpointID) -> WepKey:
    return (wid.orchestrator_id, wid.workload_id, wid.endpoint_id)


def hep_id(name: str) -> pb.HostEndpointID:
    return pb.HostEndpointID(endpoint_id=name)


def policy_id(name: str, kind: str = "GlobalNetworkPolicy", namespace: str = "") -> pb.PolicyID:
    return pb.PolicyID(name=name, namespace=namespace, kind=kind)


def tier(
    *ingress: pb.PolicyID,
    egress: Iterable[pb.PolicyID] = (),
    name: str = "default",
    default_action: str = "Deny",
) -> pb.TierInfo:
    return pb.TierInfo(
        name=name, ingress_policies=list(ingress), egress_policies=list(egress), default_action=default_action
    )


def tcp_rule(action: str = "allow", port: int = 80, **kw: Any) -> pb.Rule:
    return pb.Rule(
        action=action, protocol=pb.Protocol(name="tcp"), dst_ports=[pb.PortRange(first=port, last=port)], **kw
    )


def workload_endpoint(
    index: int,
    tiers: Iterable[pb.TierInfo] = (),
    profile_ids: Iterable[str] = ("kns.default",),
    state: str = "active",
) -> pb.WorkloadEndpoint:
    """A realistic local pod endpoint; ``index`` makes name, MAC and address unique."""
    hi, lo = divmod(index, 250)
    return pb.WorkloadEndpoint(
        state=state,
        name=f"cali{index:012x}",
        mac=f"ee:ee:ee:ee:{hi:02x}:{lo:02x}",
        profile_ids=list(profile_ids),
        ipv4_nets=[f"10.65.{hi}.{lo + 1}/32"],
        ipv6_nets=[f"fd00:65::{hi:x}:{lo + 1:x}/128"],
        tiers=list(tiers),
        annotations={"test": f"ep-{index}"},
    )


def host_endpoint(
    iface: str, tiers: Iterable[pb.TierInfo] = (), profile_ids: Iterable[str] = ()
) -> pb.HostEndpoint:
    return pb.HostEndpoint(
        name=iface, profile_ids=list(profile_ids), tiers=list(tiers), expected_ipv4_addrs=["192.168.0.11"]
    )


# --------------------------------------------------------------------------- the simulator


# argv: the fds to become 3 and 4, then the command to exec with them.
_LAUNCHER = """
import os, sys
r, w = int(sys.argv[1]), int(sys.argv[2])
os.dup2(r, 3)
os.dup2(w, 4)
os.close(r)
os.close(w)
os.execv(sys.argv[3], sys.argv[3:])
"""


def spawn_on_fds_3_4(cmd: list[str], in_fd: int, out_fd: int, **popen: Any) -> subprocess.Popen[bytes]:
    """Run `cmd` as Felix runs its driver: `in_fd` as its fd 3, `out_fd` as its fd 4, and no other
    descriptor of ours (`in_fd`/`out_fd` must not be 3 or 4 themselves)."""
    return subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, str(in_fd), str(out_fd), *cmd],
        close_fds=True,
        pass_fds=(in_fd, out_fd),
        **popen,
    )


class DriverGone(AssertionError):
    """The driver exited (or closed fd 4) while a test still expected something from it."""


class FelixSim:
    """Felix's side of the fd 3/4 protocol around one driver process."""

    def __init__(self, extra_env: dict[str, str] | None = None) -> None:
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.seq = 0  # sequence number of the next ToDataplane we build
        self._w: int | None = None  # our write end (the driver's fd 3)
        self._r: int | None = None  # our read end (the driver's fd 4)
        self._cond = threading.Condition()
        self._reading = threading.Event()
        self._reading.set()
        self._threads: list[threading.Thread] = []
        # Everything the driver sent, under self._cond.
        self.messages: list[tuple[float, pb.FromDataplane]] = []
        # Endpoint status frames, decoded as they arrive: (key, status or None for a remove,
        # the update message or None), and the latest status per key.
        self._wep_events: list[tuple[WepKey, str | None, Any]] = []
        self._wep_latest: dict[WepKey, str | None] = {}
        self._hep_events: list[tuple[str, str | None, Any]] = []
        self._hep_latest: dict[str, str | None] = {}
        self.frame_sizes: list[int] = []
        self.frame_errors: list[str] = []
        self.leftover = b""
        self.out_eof = False
        self.logs: list[dict[str, Any]] = []
        self.non_json_stderr: list[str] = []
        self.stderr_eof = False
        self.stdout_lines: list[str] = []

    # ------------------------------------------------------------------ process lifetime

    def start(self) -> FelixSim:
        to_child_r, to_child_w = os.pipe()  # both non-inheritable (PEP 446)
        from_child_r, from_child_w = os.pipe()
        # Move the child's ends above 10 so the dup2s to 3 and 4 below cannot clobber each other.
        child_in = fcntl.fcntl(to_child_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(from_child_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_child_r)
        os.close(from_child_w)

        env = dict(os.environ)
        env.update(self.extra_env)
        env["PYTHONUNBUFFERED"] = "1"
        try:
            # Like Felix (Go's exec.Cmd with ExtraFiles): the driver gets 0-4 and nothing else,
            # not even fds this test process inherited (close_fds). The renumbering to 3 and 4
            # happens in a launcher after exec, not in a preexec_fn: Python code run between
            # fork and exec in a process whose gRPC threads are running (the CNI tests) can
            # crash the child, and without a preexec_fn subprocess can use vfork.
            self.proc = spawn_on_fds_3_4(
                DRIVER_CMD,
                child_in,
                child_out,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        finally:
            os.close(child_in)
            os.close(child_out)
        self.started_at = time.monotonic()
        self._w, self._r = to_child_w, from_child_r
        os.set_blocking(self._w, False)
        for target in (self._read_frames, self._read_stderr, self._read_stdout):
            t = threading.Thread(target=target, daemon=True, name=target.__name__)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        """Kill the driver if still running and release everything (idempotent)."""
        self._reading.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.close_input()
        for t in self._threads:
            t.join(5)
        if self._r is not None:
            os.close(self._r)
            self._r = None

    def close_input(self) -> None:
        """Close our write end: the driver sees EOF on fd 3 (Felix went away)."""
        if self._w is not None:
            os.close(self._w)
            self._w = None

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code, or None if still running after ``timeout`` seconds."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ------------------------------------------------------------------ background readers

    def _read_frames(self) -> None:
        assert self._r is not None
        fd = self._r
        buf = bytearray()
        broken = False
        while True:
            self._reading.wait()
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            if broken:
                continue
            buf += chunk
            while len(buf) >= HEADER.size:
                (n,) = HEADER.unpack_from(buf)
                if n > MAX_SANE_FRAME:
                    with self._cond:
                        self.frame_errors.append(f"absurd frame length {n}: stream out of step")
                    broken = True
                    break
                if len(buf) < HEADER.size + n:
                    break
                payload = bytes(buf[HEADER.size : HEADER.size + n])
                del buf[: HEADER.size + n]
                error = None
                msg = pb.FromDataplane()
                try:
                    msg.ParseFromString(payload)
                except DecodeError as e:
                    error = f"frame of {n} bytes does not decode as FromDataplane: {e}"
                else:
                    if msg.WhichOneof("payload") is None:
                        error = f"frame of {n} bytes has no known FromDataplane payload: {payload[:64]!r}"
                with self._cond:
                    self.frame_sizes.append(n)
                    if error:
                        self.frame_errors.append(error)
                    else:
                        self.messages.append((time.monotonic(), msg))
                        self._index_status(msg)
                    self._cond.notify_all()
        with self._cond:
            self.leftover = bytes(buf)
            self.out_eof = True
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                rec = json.loads(line)
            except ValueError:
                rec = None
            with self._cond:
                if isinstance(rec, dict):
                    self.logs.append(rec)
                elif line.strip():
                    self.non_json_stderr.append(line)
                self._cond.notify_all()
        with self._cond:
            self.stderr_eof = True
            self._cond.notify_all()

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cond:
                self.stdout_lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def pause_reading(self) -> None:
        """Stop draining fd 4 (after the read in progress), so the driver's writes back up."""
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    # ------------------------------------------------------------------ sending

    def encode(self, msg: pb.ToDataplane | None = None, /, **payload: Any) -> bytes:
        """A frame for ``msg`` (or ``ToDataplane(**payload)``), stamped with the next sequence
        number.  Building a frame consumes a sequence number, so build frames in send order."""
        if msg is None:
            msg = pb.ToDataplane(**payload)
        msg.sequence_number = self.seq
        self.seq += 1
        return frame(msg.SerializeToString())

    def encode_raw_payload(self, payload_bytes: bytes) -> bytes:
        """A frame whose envelope carries the next sequence number plus hand-encoded bytes."""
        head = pb.ToDataplane(sequence_number=self.seq).SerializeToString()
        self.seq += 1
        return frame(head + payload_bytes)

    def send(self, msg: pb.ToDataplane | None = None, /, **payload: Any) -> None:
        self.write(self.encode(msg, **payload))

    def send_config(self, config: dict[str, str] | None = None) -> None:
        assert self.seq == 0, "ConfigUpdate must be the first message"
        self.send(config_update=pb.ConfigUpdate(config=config or {}, message="test"))

    def write(self, data: bytes, timeout: float = 30.0) -> None:
        """Write all of ``data`` (pipe back-pressure respected), or fail after ``timeout``."""
        assert self._w is not None, "input already closed"
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"driver did not read {len(view)} remaining bytes within {timeout}s\n" + self.describe()
                )
            _, ready, _ = select.select([], [self._w], [], min(left, 0.5))
            if not ready:
                if not self.alive():
                    raise DriverGone("driver exited while we were writing\n" + self.describe())
                continue
            try:
                n = os.write(self._w, view[: 1 << 20])
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise DriverGone("driver closed fd 3 while we were writing\n" + self.describe()) from None
            view = view[n:]

    def write_chunked(
        self, data: bytes, sizes: Iterator[int], pause: float = 0.0, timeout: float = 30.0
    ) -> None:
        """Write ``data`` split at the given chunk sizes, sleeping ``pause`` between writes so
        the driver's reads really return partial frames."""
        pos = 0
        while pos < len(data):
            n = max(1, next(sizes))
            self.write(data[pos : pos + n], timeout=timeout)
            pos += n
            if pause:
                time.sleep(pause)

    # ------------------------------------------------------------------ waiting and views

    def wait_for(self, pred: Callable[[], T | None], timeout: float = 10.0, what: str = "") -> T:
        """Wait until ``pred()`` (evaluated under the lock) is truthy; return its value.
        Fails early, with diagnostics, if the driver is gone."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = pred()
                if value:
                    return value
                left = deadline - time.monotonic()
                gone = self.out_eof and self.stderr_eof
                if left <= 0 or gone or self.frame_errors:
                    break
                self._cond.wait(min(left, 0.2))
                # Let a burst of frames land before evaluating ``pred`` again (it may be O(n)).
                self._cond.release()
                try:
                    time.sleep(0.01)
                finally:
                    self._cond.acquire()
        if self.frame_errors:
            reason = "driver wrote a frame that does not decode (Felix would restart)"
        elif gone:
            reason = "driver exited"
        else:
            reason = f"timed out after {timeout}s"
        raise AssertionError(f"{reason} waiting for {what or pred}\n" + self.describe())

    def wait_log(self, event: str, timeout: float = 10.0) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((r for r in self.logs if r.get("event") == event), None)

        return self.wait_for(
            found,
            timeout,
            f"a log line with event={event!r}",
        )

    def wait_in_sync(self, timeout: float = 10.0) -> dict[str, Any]:
        return self.wait_log("in_sync", timeout)

    def snapshot(self) -> list[pb.FromDataplane]:
        with self._cond:
            return [m for _, m in self.messages]

    def payloads(self, kind: str) -> list[Any]:
        """Every received payload of oneof field ``kind``, in arrival order."""
        with self._cond:
            return [getattr(m, kind) for _, m in self.messages if m.WhichOneof("payload") == kind]

    def timed_payloads(self, kind: str) -> list[tuple[float, Any]]:
        with self._cond:
            return [(t, getattr(m, kind)) for t, m in self.messages if m.WhichOneof("payload") == kind]

    def _index_status(self, m: pb.FromDataplane) -> None:
        """Record an endpoint status frame (called under the lock by the reader)."""
        kind = m.WhichOneof("payload")
        if kind == "workload_endpoint_status_update":
            u = m.workload_endpoint_status_update
            k: Any = wep_key(u.id)
            self._wep_events.append((k, u.status.status, u))
            self._wep_latest[k] = u.status.status
        elif kind == "workload_endpoint_status_remove":
            k = wep_key(m.workload_endpoint_status_remove.id)
            self._wep_events.append((k, None, None))
            self._wep_latest[k] = None
        elif kind == "host_endpoint_status_update":
            h = m.host_endpoint_status_update
            self._hep_events.append((h.id.endpoint_id, h.status.status, h))
            self._hep_latest[h.id.endpoint_id] = h.status.status
        elif kind == "host_endpoint_status_remove":
            k = m.host_endpoint_status_remove.id.endpoint_id
            self._hep_events.append((k, None, None))
            self._hep_latest[k] = None

    def wep_events(self, key: WepKey | None = None) -> list[tuple[WepKey, str | None, Any]]:
        """(key, status or None for a remove, update message) per workload status frame."""
        with self._cond:
            ev = list(self._wep_events)
        return [e for e in ev if key is None or e[0] == key]

    def hep_events(self, key: str | None = None) -> list[tuple[str, str | None, Any]]:
        with self._cond:
            ev = list(self._hep_events)
        return [e for e in ev if key is None or e[0] == key]

    def wep_statuses(self) -> dict[WepKey, str | None]:
        """Latest reported status per workload endpoint (None once a StatusRemove came)."""
        with self._cond:
            return dict(self._wep_latest)

    def hep_statuses(self) -> dict[str, str | None]:
        with self._cond:
            return dict(self._hep_latest)

    def wait_wep_statuses(
        self, expected: dict[WepKey, str | None], timeout: float = 10.0
    ) -> dict[WepKey, str | None]:
        """Wait until the latest status of every key in ``expected`` equals the expected value
        (None = removed)."""

        def done() -> bool:
            latest = self._wep_latest
            return all(k in latest and latest[k] == v for k, v in expected.items())

        try:
            self.wait_for(done, timeout, "workload endpoint statuses")
        except AssertionError as e:
            got = {k: self.wep_statuses().get(k, "<nothing>") for k in expected}
            raise AssertionError(f"workload statuses: expected {expected}\n got {got}\n{e}") from None
        return self.wep_statuses()

    def wait_hep_statuses(
        self, expected: dict[str, str | None], timeout: float = 10.0
    ) -> dict[str, str | None]:
        def done() -> bool:
            latest = self._hep_latest
            return all(k in latest and latest[k] == v for k, v in expected.items())

        try:
            self.wait_for(done, timeout, "host endpoint statuses")
        except AssertionError as e:
            got = {k: self.hep_statuses().get(k, "<nothing>") for k in expected}
            raise AssertionError(f"host statuses: expected {expected}\n got {got}\n{e}") from None
        return self.hep_statuses()

    def assert_frames_whole(self) -> None:
        """Every frame received so far decoded to a known payload, and (once fd 4 is closed)
        nothing was left half-written."""
        with self._cond:
            errors = list(self.frame_errors)
            leftover = self.leftover if self.out_eof else b""
        assert not errors, "bad frames from the driver: " + "; ".join(errors[:5])
        assert not leftover, f"driver left a partial frame: {len(leftover)} trailing bytes {leftover[:32]!r}"

    def describe(self, lines: int = 40) -> str:
        """Diagnostics for assertion messages."""
        code = self.proc.poll() if self.proc else None
        with self._cond:
            kinds: dict[str, int] = {}
            for _, m in self.messages:
                k = m.WhichOneof("payload") or "?"
                kinds[k] = kinds.get(k, 0) + 1
            tail = [json.dumps(r, default=str)[:400] for r in self.logs[-lines:]]
            junk = self.non_json_stderr[-lines:]
            out = self.stdout_lines[-10:]
            errs = self.frame_errors[:5]
        parts = [
            f"--- driver: exit code {code}, {self.seq} messages sent, received {kinds}",
            f"--- frame errors: {errs}" if errs else "",
            "--- last stderr JSON lines:",
            *tail,
            "--- non-JSON stderr:" if junk else "",
            *junk,
            "--- stdout:" if out else "",
            *out,
        ]
        return "\n".join(p for p in parts if p)
