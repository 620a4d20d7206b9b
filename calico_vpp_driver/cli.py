"""Entry points of the `calico-vpp-driver` command.

- no arguments: the mode Felix spawns (`dataplaneDriver`): Felix's stream on
  fd 3, statuses to fd 4.
- `serve --socket PATH`: a long-lived driver listening on a unix socket (mode
  0600), serving one Felix connection at a time, so it survives Felix restarts.
- `relay --socket PATH`: what Felix spawns in that mode; copies fd 3/4 to and
  from the socket and exits when either side closes.
- `replay FILE`: turn a scenario file (docs/scenario-format.md) into Felix's
  message stream, feed it to the driver's model and judge its probes; `demo`
  replays the bundled demo scenario. Exit 0 if every expectation holds, 1 if
  one does not, 2 if the scenario cannot be read.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import select
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

import structlog

from . import __version__
from . import config as config_mod
from . import log as log_mod
from .config import Config
from .dataplane import Dataplane, ModelOnlyDataplane
from .driver import Session
from .felix.wire import FrameDecoder, FramingError, encode_frame, write_all
from .metrics import Metrics

log = structlog.get_logger("calico_vpp_driver.cli")

FELIX_IN_FD = 3
FELIX_OUT_FD = 4


class Stopper:
    """Turns SIGTERM/SIGINT into a flag the loops check, plus a deadline.

    Felix expects its driver gone within 2 s of SIGTERM or of closing fd 3,
    however busy the driver is (a 20 MB IP set can take longer than that to
    ingest). `exit_soon` arms a watchdog: if the process has not ended on its
    own after `GRACE` seconds, it exits there and then. Nothing is lost: the
    model is rebuilt from Felix's resync, and VPP keeps what was programmed.
    """

    GRACE = 1.0  # Python runs the signal handler only between bytecodes: leave room for a long C call

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self.signal: int | None = None
        self._armed = threading.Lock()
        signal.set_wakeup_fd(self._w)
        signal.signal(signal.SIGTERM, self._handler)
        signal.signal(signal.SIGINT, self._handler)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum
        self.exit_soon(f"signal {signal.Signals(signum).name}")

    def exit_soon(self, reason: str, code: int = 0) -> None:
        """Exit with `code` within GRACE seconds, whatever the main thread is doing."""
        if not self._armed.acquire(blocking=False):
            return

        def watchdog() -> None:
            time.sleep(self.GRACE)
            log.warning("exit_deadline_reached", reason=reason, grace_seconds=self.GRACE)
            os._exit(code)

        threading.Thread(target=watchdog, daemon=True, name="exit-watchdog").start()

    @property
    def fd(self) -> int:
        return self._r

    def is_set(self) -> bool:
        return self.signal is not None


class _ProcessHooks:
    """Process-wide reactions to Felix's config (once per process, not per session)."""

    def __init__(self, metrics: Metrics, cni: _Cni | None = None) -> None:
        self.metrics = metrics
        self._metrics_started = False
        self.cni = cni

    def on_config(self, cfg: Config) -> None:
        if self.cni is not None:
            self.cni.configure(cfg)
        if cfg.vpp_metrics_listen and not self._metrics_started:
            try:
                self.metrics.serve(cfg.vpp_metrics_listen)
                self._metrics_started = True
                log.info("metrics_listening", address=cfg.vpp_metrics_listen)
            except (OSError, ValueError) as exc:
                log.error("metrics_listen_failed", address=cfg.vpp_metrics_listen, error=str(exc))


def _make_dataplane() -> Dataplane:
    """The VPP dataplane; `CALICO_VPP_DATAPLANE=model-only` keeps the model without any VPP
    (for exercising the Felix side alone). Until Felix's config arrives, the driver's knobs
    come from the environment (the CNI server may need VPP before that)."""
    if os.environ.get("CALICO_VPP_DATAPLANE", "") == "model-only":
        return ModelOnlyDataplane()
    from .vpp.client import VppClient
    from .vpp.dataplane import VppDataplane

    return VppDataplane(
        lambda cfg: _started(VppClient.from_config(cfg, connect_timeout=2.0, read_timeout=30.0)),
        config=config_mod.load({})[0],
    )


class _Cni:
    """The CNI gRPC server and the pod interfaces it creates, for the life of the process.

    Started from the environment's settings (`CALICO_VPP_CNI_SOCKET`; empty: no server), so
    pods can be created before Felix connects, and between Felix connections in serve mode.
    """

    def __init__(self, dataplane: Any, cfg: Config) -> None:
        from .cni.links import LinuxPodLinks
        from .cni.server import CniServer
        from .vpp.pods import PodInterfaces

        self.socket = cfg.vpp_cni_socket
        self.pods = PodInterfaces(dataplane.vpp_client, cfg, notifier=dataplane, links=LinuxPodLinks())
        self.server = CniServer(self.socket, self.pods).start()
        # Pods VPP lost (it restarted, now or while the driver was down) are made again.
        dataplane.on_vpp_restart(self.pods.restore)
        threading.Thread(target=self.pods.restore, daemon=True, name="pod-restore").start()
        log.info("cni_server_listening", socket=self.socket, pod_interface=cfg.vpp_pod_interface)

    @classmethod
    def start(cls, dataplane: Dataplane) -> _Cni | None:
        if dataplane.name != "vpp":  # model-only: no pods (and no VPP modules to import)
            return None
        cfg = config_mod.load({})[0]
        if not cfg.vpp_cni_socket:
            log.info("cni_server_disabled", detail="CALICO_VPP_CNI_SOCKET is empty")
            return None
        try:
            return cls(dataplane, cfg)
        except Exception as exc:
            log.error(
                "cni_server_failed",
                socket=cfg.vpp_cni_socket,
                error=str(exc),
                detail="pods cannot be created on this node until the driver restarts",
            )
            return None

    def configure(self, cfg: Config) -> None:
        self.pods.config = cfg
        if cfg.vpp_cni_socket != self.socket:
            log.warning(
                "cni_socket_not_changed",
                socket=self.socket,
                configured=cfg.vpp_cni_socket,
                detail="the CNI socket is set from the environment at start; restart the driver to move it",
            )

    def stop(self) -> None:
        self.server.stop()


def _started(client: Any) -> Any:
    client.start()
    return client


def _log_framing_error(exc: FramingError) -> None:
    log.error(
        "felix_stream_out_of_step",
        reason=exc.reason,
        last_good_seq=exc.last_seq,
        frame_length=exc.length,
        detail="exiting so that Felix restarts and resyncs",
    )


_F_SETPIPE_SZ = 1031  # Linux fcntl; not exposed by Python 3.11's fcntl module


def _grow_pipe(fd: int, size: int = 1 << 20) -> None:
    """Ask for a 1 MiB pipe from Felix (default 64 KiB), so Felix, which writes
    synchronously, blocks less often while the driver is busy. Best effort:
    not a pipe, or above /proc/sys/fs/pipe-max-size, changes nothing."""
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
    except OSError:
        pass


def run_felix_fds(in_fd: int = FELIX_IN_FD, out_fd: int = FELIX_OUT_FD) -> int:
    """Felix's child-process mode. Exit code 0 when Felix goes away or stops us."""
    for fd in (in_fd, out_fd):
        try:
            os.fstat(fd)
        except OSError:
            log.error(
                "felix_fds_missing",
                fd=fd,
                detail="with no arguments the driver expects Felix's pipes on fds 3 and 4; "
                "see `calico-vpp-driver --help` for the other modes",
            )
            return 2
    _grow_pipe(in_fd)
    stopper = Stopper()
    metrics = Metrics()
    dataplane = _make_dataplane()
    cni = _Cni.start(dataplane)
    hooks = _ProcessHooks(metrics, cni)
    log.info("driver_starting", version=__version__, mode="felix-fds", dataplane=dataplane.name)
    session = Session(
        in_fd,
        out_fd,
        dataplane,
        should_stop=stopper.is_set,
        on_eof_seen=lambda: stopper.exit_soon("EOF on fd 3: Felix is gone"),
        metrics=metrics,
        on_config=hooks.on_config,
    )
    try:
        result = session.run()
    except FramingError as exc:
        _log_framing_error(exc)
        return 1
    except BrokenPipeError:
        log.info("felix_disconnected", detail="Felix closed its end of the status pipe")
        return 0
    finally:
        if cni is not None:
            cni.stop()
        dataplane.close()
    log.info("driver_exiting", reason=result.reason, signal=stopper.signal)
    return 0


def _listen(path: str) -> socket.socket:
    if os.path.exists(path):
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            raise SystemExit(f"refusing to replace {path}: it exists and is not a socket")
        os.unlink(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        server.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    server.listen(1)
    return server


def serve(path: str) -> int:
    """Long-lived mode: one Felix (through `relay`) at a time, across Felix restarts."""
    stopper = Stopper()
    metrics = Metrics()
    dataplane = _make_dataplane()
    cni = _Cni.start(dataplane)
    hooks = _ProcessHooks(metrics, cni)
    server = _listen(path)
    log.info("driver_starting", version=__version__, mode="serve", socket=path, dataplane=dataplane.name)
    try:
        while not stopper.is_set():
            readable, _, _ = select.select([server.fileno(), stopper.fd], [], [])
            if server.fileno() not in readable:
                continue
            conn, _ = server.accept()
            log.info("felix_connected", socket=path)
            with conn:
                session = Session(
                    conn.fileno(),
                    conn.fileno(),
                    dataplane,
                    should_stop=stopper.is_set,
                    metrics=metrics,
                    on_config=hooks.on_config,
                )
                try:
                    session.run()
                except FramingError as exc:
                    _log_framing_error(exc)
                except (BrokenPipeError, ConnectionResetError):
                    log.info("felix_disconnected", detail="connection reset")
                finally:
                    # Wakes the session's reader thread if it is still in read().
                    try:
                        conn.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
    finally:
        if cni is not None:
            cni.stop()
        dataplane.close()
        server.close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    log.info("driver_exiting", reason="stop", signal=stopper.signal)
    return 0


def relay(path: str, connect_timeout: float, in_fd: int = FELIX_IN_FD, out_fd: int = FELIX_OUT_FD) -> int:
    """Copy Felix's pipes to and from the serving driver's socket.

    Felix -> driver bytes are copied as they come; driver -> Felix bytes are
    forwarded only as whole frames, so Felix never sees a partial frame even
    if the driver dies mid-write.
    """
    deadline = time.monotonic() + connect_timeout
    delay = 0.05
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            break
        except OSError as exc:
            sock.close()
            if time.monotonic() + delay > deadline:
                log.error("relay_connect_failed", socket=path, error=str(exc), waited=connect_timeout)
                return 1
            log.info("relay_waiting_for_driver", socket=path, error=str(exc), retry_in=delay)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    log.info("relay_connected", socket=path)
    done = threading.Event()
    why: list[str] = []

    def up() -> None:  # Felix -> driver
        try:
            while data := os.read(in_fd, 1 << 20):
                sock.sendall(data)
            why.append("felix closed")
        except OSError as exc:
            why.append(f"driver socket: {exc}")
        done.set()

    def down() -> None:  # driver -> Felix, whole frames only
        frames = FrameDecoder()
        try:
            while data := sock.recv(1 << 20):
                for payload in frames.feed(data):
                    write_all(out_fd, encode_frame(payload))
            why.append("driver closed")
        except (OSError, FramingError) as exc:
            why.append(f"felix pipe or driver stream: {exc}")
        done.set()

    stopper = Stopper()
    for target in (up, down):
        threading.Thread(target=target, daemon=True).start()
    while not done.wait(0.2):
        if stopper.is_set():
            why.append(f"signal {stopper.signal}")
            break
    log.info("relay_exiting", reason=why[0] if why else "unknown")
    sock.close()
    return 0 if why and why[0] == "felix closed" else 1


def _replay(path: str | None, vpp: str, backend: str) -> int:
    """`replay FILE` / `demo`: results on stdout, logs (WARNING and up) on stderr."""
    from importlib import resources

    from .scenario import replay as replay_mod

    log_mod.configure("WARNING")
    if path is not None:
        return replay_mod.run(path, vpp=vpp, backend=backend)
    demo = resources.files("calico_vpp_driver.scenario").joinpath("demo.yaml")
    with resources.as_file(demo) as demo_path:
        return replay_mod.run(demo_path, vpp=vpp, backend=backend, name="demo.yaml (bundled)")


def main(argv: Sequence[str] | None = None) -> int:
    log_mod.configure("INFO")
    parser = argparse.ArgumentParser(
        prog="calico-vpp-driver",
        description="Calico Felix external dataplane driver for FD.io VPP. With no command, "
        "runs as Felix's child process (Felix's stream on fd 3, statuses on fd 4).",
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command")
    p_serve = sub.add_parser("serve", help="listen on a unix socket for Felix (through `relay`)")
    p_serve.add_argument("--socket", required=True, help="unix socket path (created mode 0600)")
    p_relay = sub.add_parser("relay", help="Felix's child in socket mode: copy fd 3/4 to the socket")
    p_relay.add_argument("--socket", required=True, help="the serving driver's unix socket")
    p_relay.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        help="seconds to keep retrying while the serving driver is not up (default 30)",
    )
    p_replay = sub.add_parser(
        "replay",
        help="replay a scenario file: Felix's stream into the driver's model, then judge its probes",
    )
    p_replay.add_argument("file", help="scenario YAML (see docs/scenario-format.md)")
    p_demo = sub.add_parser("demo", help="replay the bundled demo scenario")
    for p in (p_replay, p_demo):
        p.add_argument(
            "--vpp",
            default="sim",
            metavar="sim|SOCKET",
            help="'sim' (default: the driver programs the VPP simulator), "
            "'oracle' (no VPP: the policy oracle alone) or VPP's API socket",
        )
        p.add_argument(
            "--backend",
            default="auto",
            choices=("auto", "npol", "acl"),
            help="VPP policy backend (default auto)",
        )
    args = parser.parse_args(argv)
    if args.command in ("replay", "demo"):
        return _replay(args.file if args.command == "replay" else None, args.vpp, args.backend)
    if args.command == "serve":
        return serve(args.socket)
    if args.command == "relay":
        return relay(args.socket, args.connect_timeout)
    return run_felix_fds()


if __name__ == "__main__":
    sys.exit(main())
