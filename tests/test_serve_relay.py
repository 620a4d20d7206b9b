"""Socket mode: a long-lived `serve` driver reached by Felix through `relay`."""

from __future__ import annotations

import fcntl
import os
import pathlib
import select
import signal
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from felixsim import spawn_on_fds_3_4

from calico_vpp_driver.felix import felixbackend_pb2 as pb

WID = pb.WorkloadEndpointID(orchestrator_id="k8s", workload_id="ns/a", endpoint_id="eth0")


def frame(msg: pb.ToDataplane) -> bytes:
    data = msg.SerializeToString()
    return struct.pack("<Q", len(data)) + data


def startup_stream() -> bytes:
    ep = pb.WorkloadEndpoint(state="active", name="cali1", ipv4_nets=["10.65.0.1/32"])
    msgs = [
        pb.ToDataplane(config_update=pb.ConfigUpdate(config={"ReportingIntervalSecs": "0"})),
        pb.ToDataplane(
            sequence_number=1, workload_endpoint_update=pb.WorkloadEndpointUpdate(id=WID, endpoint=ep)
        ),
        pb.ToDataplane(sequence_number=2, in_sync=pb.InSync()),
    ]
    return b"".join(frame(m) for m in msgs)


class FelixSide:
    """Spawns `relay` the way Felix spawns its driver: fds 3 and 4, no stdin."""

    def __init__(self, sock: pathlib.Path) -> None:
        to_r, self.to_w = os.pipe()
        self.from_r, from_w = os.pipe()
        # The child's ends above 10, so that they cannot be 3 or 4 themselves.
        high_r = fcntl.fcntl(to_r, fcntl.F_DUPFD_CLOEXEC, 10)
        high_w = fcntl.fcntl(from_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_r)
        os.close(from_w)
        to_r, from_w = high_r, high_w
        self.proc = spawn_on_fds_3_4(
            [
                sys.executable,
                "-m",
                "calico_vpp_driver",
                "relay",
                "--socket",
                str(sock),
                "--connect-timeout",
                "10",
            ],
            to_r,
            from_w,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(to_r)
        os.close(from_w)
        self.buf = b""

    def read_message(self, timeout: float = 10) -> pb.FromDataplane:
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 8:
                (n,) = struct.unpack_from("<Q", self.buf)
                if len(self.buf) >= 8 + n:
                    msg = pb.FromDataplane.FromString(self.buf[8 : 8 + n])
                    self.buf = self.buf[8 + n :]
                    return msg
            left = deadline - time.monotonic()
            assert left > 0, "no message from the driver in time"
            ready, _, _ = select.select([self.from_r], [], [], left)
            if ready:
                chunk = os.read(self.from_r, 65536)
                assert chunk, "relay closed fd 4"
                self.buf += chunk

    def close(self) -> int:
        os.close(self.to_w)
        code = self.proc.wait(10)
        os.close(self.from_r)
        return code


@pytest.fixture
def server(tmp_path: pathlib.Path) -> Iterator[tuple[subprocess.Popen[bytes], pathlib.Path]]:
    sock = tmp_path / "run" / "driver.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "calico_vpp_driver", "serve", "--socket", str(sock)],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    yield proc, sock
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def wait_for(path: pathlib.Path) -> None:
    deadline = time.monotonic() + 10
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_serve_survives_felix_restarts(server: tuple[subprocess.Popen[bytes], pathlib.Path]) -> None:
    proc, sock = server
    wait_for(sock)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    for _restart in range(2):
        felix = FelixSide(sock)
        os.write(felix.to_w, startup_stream())
        msg = felix.read_message()
        upd = msg.workload_endpoint_status_update
        assert upd.status.status == "down" and upd.id.workload_id == "ns/a"
        assert msg.sequence_number == 0  # each connection numbers its own frames
        assert felix.close() == 0  # Felix went away: relay exits cleanly
        assert proc.poll() is None, "serve must outlive a Felix connection"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == 0
    assert not sock.exists()


def test_relay_waits_for_the_driver(tmp_path: pathlib.Path) -> None:
    sock = tmp_path / "late.sock"
    felix = FelixSide(sock)
    time.sleep(0.5)  # the relay is retrying meanwhile
    proc = subprocess.Popen(
        [sys.executable, "-m", "calico_vpp_driver", "serve", "--socket", str(sock)],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        os.write(felix.to_w, startup_stream())
        assert felix.read_message().workload_endpoint_status_update.status.status == "down"
        felix.close()
    finally:
        proc.kill()
        proc.wait()


def test_relay_gives_up_after_its_timeout(tmp_path: pathlib.Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "calico_vpp_driver",
            "relay",
            "--socket",
            str(tmp_path / "none.sock"),
            "--connect-timeout",
            "0.5",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=10,
    )
    assert proc.returncode != 0
    assert b"relay_connect_failed" in proc.stderr


def test_serve_refuses_to_replace_a_regular_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "not-a-socket"
    path.write_text("keep me")
    proc = subprocess.run(
        [sys.executable, "-m", "calico_vpp_driver", "serve", "--socket", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=10,
    )
    assert proc.returncode != 0 and path.read_text() == "keep me"


def test_serve_drops_an_out_of_step_connection_and_keeps_serving(
    server: tuple[subprocess.Popen[bytes], pathlib.Path],
) -> None:
    proc, sock = server
    wait_for(sock)
    bad = FelixSide(sock)
    os.write(bad.to_w, struct.pack("<Q", 3) + b"\xff\xff\xff")
    # The driver drops the connection, so the relay exits non-zero: Felix restarts.
    assert bad.proc.wait(10) != 0
    os.close(bad.to_w)
    os.close(bad.from_r)
    assert proc.poll() is None
    good = FelixSide(sock)
    os.write(good.to_w, startup_stream())
    assert good.read_message().workload_endpoint_status_update.status.status == "down"
    assert good.close() == 0
