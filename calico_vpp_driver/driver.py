"""The apply loop for one Felix connection: read, update the model, apply, report.

Data flows one way: bytes -> messages -> model (marking what is dirty) -> on a
batch boundary after InSync, the dataplane -> statuses back to Felix. Reads
are greedy (Felix writes synchronously into a 64 KiB pipe, so a slow reader
stalls Felix's calculation graph); a batch ends when nothing more is
readable or after `BATCH_SECONDS` of continuous input, so the dataplane is
applied at most every ~100 ms under load and promptly when Felix goes quiet.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from . import config as config_mod
from . import log as log_mod
from .dataplane import Dataplane
from .felix import felixbackend_pb2 as pb
from .felix.decode import UNSUPPORTED_PAYLOADS, Outcome, apply_message, workload_endpoint_id
from .felix.status import EndpointStatusReporter, StatusBoard, process_status
from .felix.wire import FrameWriter, MessageDecoder
from .metrics import Metrics
from .model.state import DesiredState

log = structlog.get_logger("calico_vpp_driver.driver")

BATCH_SECONDS = 0.1
READ_SIZE = 1 << 20


@dataclass
class SessionResult:
    reason: str  # "eof" (Felix went away) or "stop" (we were asked to stop)
    messages: int


class Session:
    """One Felix connection: its own model, statuses and sequence numbers.

    The dataplane outlives sessions (in serve mode, across Felix restarts);
    a new session starts from an empty model and must not delete anything
    until its own InSync.
    """

    def __init__(
        self,
        in_fd: int,
        out_fd: int,
        dataplane: Dataplane,
        *,
        stop_fd: int | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        metrics: Metrics | None = None,
        on_config: Callable[[config_mod.Config], None] | None = None,
    ) -> None:
        self.in_fd = in_fd
        self.state = DesiredState()
        self.board = StatusBoard()
        self.writer = FrameWriter(out_fd)
        self.reporter = EndpointStatusReporter(self.writer.send, self.board)
        self.dataplane = dataplane
        self.decoder = MessageDecoder()
        self.config: config_mod.Config | None = None
        self.metrics = metrics or Metrics()
        self._stop_fd = stop_fd
        self._should_stop = should_stop
        self._on_config = on_config
        self._started = time.monotonic()
        self._next_report: float | None = None
        self._unsupported_logged: set[str] = set()
        self._applied_once = False

    # ------------------------------------------------------------------ loop

    def run(self) -> SessionResult:
        """Serve the connection until EOF or a stop request.

        Raises FramingError when the stream is out of step.
        """
        self.dataplane.new_felix_session()
        watched = [self.in_fd] + ([self._stop_fd] if self._stop_fd is not None else [])
        while True:
            if self._should_stop():
                return SessionResult("stop", self.decoder.count)
            readable, _, _ = select.select(watched, [], [], self._timeout())
            if self._stop_fd is not None and self._stop_fd in readable:
                _drain(self._stop_fd)
            if self._should_stop():
                return SessionResult("stop", self.decoder.count)
            if self.in_fd in readable:
                if not self._read_batch():
                    self._on_eof()
                    return SessionResult("eof", self.decoder.count)
            self._maybe_apply()
            self._maybe_report_process_status()

    def _timeout(self) -> float | None:
        if self._next_report is None:
            return None
        return max(0.0, self._next_report - time.monotonic())

    def _read_batch(self) -> bool:
        """Read and handle everything readable (bounded in time). False on EOF."""
        deadline = time.monotonic() + BATCH_SECONDS
        while True:
            try:
                data = os.read(self.in_fd, READ_SIZE)
            except BlockingIOError:
                return True
            except ConnectionResetError:
                return False
            if not data:
                return False
            self.metrics.bytes_in.inc(len(data))
            for msg in self.decoder.feed(data):
                self.handle(msg)
            if time.monotonic() >= deadline:
                return True
            ready, _, _ = select.select([self.in_fd], [], [], 0)
            if not ready:
                return True

    def _on_eof(self) -> None:
        pending = self.decoder.frames.pending_bytes
        if pending:
            log.warning(
                "felix_stream_truncated",
                detail="Felix closed the stream in the middle of a frame",
                pending_bytes=pending,
                last_seq=self.decoder.last_seq,
            )
        log.info("felix_disconnected", messages=self.decoder.count, last_seq=self.decoder.last_seq)

    # ------------------------------------------------------------------ messages

    def handle(self, msg: pb.ToDataplane) -> Outcome:
        """Apply one message to the model and log what an operator must know."""
        which = msg.WhichOneof("payload")
        if which == "workload_endpoint_update":
            upd = msg.workload_endpoint_update
            self.reporter.remember_endpoint(workload_endpoint_id(upd.id), upd.endpoint.SerializeToString())
        outcome = apply_message(self.state, msg)
        self.metrics.count_message(outcome.kind)
        if outcome.problem:
            self.metrics.content_errors.labels(outcome.kind).inc()
            log.warning(
                "bad_content",
                message=outcome.kind,
                object=outcome.obj,
                problem=outcome.problem,
                seq=msg.sequence_number,
            )
        elif outcome.ignored:
            log.debug("message_ignored", message=outcome.kind, object=outcome.obj, reason=outcome.ignored)
        if which in UNSUPPORTED_PAYLOADS and which not in self._unsupported_logged:
            self._unsupported_logged.add(which)
            log.info(
                "message_not_acted_on",
                message=which,
                detail="stored in the model; this driver does not program it (logged once)",
            )
        if which == "config_update":
            self._configure()
        elif which == "in_sync":
            log.info("in_sync", seq=msg.sequence_number, messages=self.decoder.count, **self.state.counts())
        return outcome

    def _configure(self) -> None:
        cfg, problems = config_mod.load(self.state.raw_config)
        first = self.config is None
        self.config = cfg
        log_mod.configure(cfg.log_severity_screen)
        for problem in problems:
            log.error("bad_config", parameter=problem.name, value=problem.raw, problem=str(problem))
        if cfg.reporting_interval_secs > 0:
            if self._next_report is None:
                self._next_report = time.monotonic()
        else:
            self._next_report = None
        if first:
            log.info(
                "config_received",
                hostname=cfg.felix_hostname,
                vpp_api_socket=cfg.vpp_api_socket,
                policy_backend=cfg.vpp_policy_backend,
                reporting_interval_secs=cfg.reporting_interval_secs,
                passthrough=dict(cfg.passthrough),
            )
        if self._on_config is not None:
            self._on_config(cfg)

    # ------------------------------------------------------------------ apply and report

    def _maybe_apply(self) -> None:
        if not self.state.in_sync:
            return
        if not self.state.dirty and not self.board_has_changes():
            return
        self.apply()

    def board_has_changes(self) -> bool:
        return bool(self.board._changed)

    def apply(self) -> None:
        started = time.monotonic()
        dirty = self.state.take_dirty()
        affected = self.state.endpoints_affected(dirty)
        try:
            self.dataplane.apply(self.state, dirty, self.board)
        except Exception:
            log.exception("dataplane_apply_failed", dataplane=self.dataplane.name)
            self.metrics.apply_failures.inc()
        for key, status, reason in self.reporter.flush(self.state, affected):
            fields = {"endpoint": str(key), "status": status}
            if status == "error":
                log.warning("endpoint_status", reason=reason, **fields)
            else:
                log.info("endpoint_status", **fields)
        for key in dirty.workload_endpoints:
            if key not in self.state.workload_endpoints:
                self.reporter.remember_endpoint(key, None)
                self.board.forget(key)
        for hkey in dirty.host_endpoints:
            if hkey not in self.state.host_endpoints:
                self.board.forget(hkey)
        self.board.take_changed()  # removals forgotten above need no status
        elapsed = time.monotonic() - started
        self.metrics.apply_seconds.observe(elapsed)
        self.metrics.observe_model(self.state, self.reporter.statuses())
        if not self._applied_once:
            self._applied_once = True
            log.info("first_apply_done", seconds=round(elapsed, 4), **self.state.counts())

    def _maybe_report_process_status(self) -> None:
        if self._next_report is None or self.config is None:
            return
        now = time.monotonic()
        if now < self._next_report:
            return
        self.writer.send(process_status(self._started))
        interval = self.config.reporting_interval_secs
        self._next_report = max(self._next_report + interval, now + interval / 2)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass
