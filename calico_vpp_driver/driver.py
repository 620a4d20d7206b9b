"""The apply loop for one Felix connection: read, update the model, apply, report.

Data flows one way: bytes -> messages -> model (marking what is dirty) -> on a
batch boundary after InSync, the dataplane -> statuses back to Felix. Reads
are greedy (Felix writes synchronously into a 64 KiB pipe, so a slow reader
stalls Felix's calculation graph); a batch ends when nothing more is
readable or after `BATCH_SECONDS` of continuous input, so the dataplane is
applied at most every ~100 ms under load and promptly when Felix goes quiet.
"""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import threading
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
READ_QUEUE_CHUNKS = 32  # at most ~32 MiB read ahead of the model
STOP_POLL_SECONDS = 0.1
RESYNC_GC_THRESHOLDS = (100_000, 50, 100)


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
        should_stop: Callable[[], bool] = lambda: False,
        on_eof_seen: Callable[[], None] | None = None,
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
        self._should_stop = should_stop
        self._on_eof_seen = on_eof_seen
        self._ended = threading.Event()
        self._gc_thresholds: tuple[int, int, int] | None = None
        self._on_config = on_config
        self._started = time.monotonic()
        self._next_report: float | None = None
        self._unsupported_logged: set[str] = set()
        self._applied_once = False

    # ------------------------------------------------------------------ loop

    def run(self) -> SessionResult:
        """Serve the connection until EOF or a stop request.

        A reader thread moves bytes from Felix into a bounded queue (so Felix
        is still back-pressured when the driver is busy) and sees EOF at once,
        even while this thread is deep in a large frame; `on_eof` lets the
        process react to that (exit within Felix's 2 s). Raises FramingError
        when the stream is out of step.
        """
        self.dataplane.new_felix_session()
        chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=READ_QUEUE_CHUNKS)

        def wake() -> None:
            # An empty chunk: the loop goes round (and applies) without waiting for Felix.
            with contextlib.suppress(queue.Full):
                chunks.put_nowait(b"")

        self.dataplane.set_waker(wake)
        threading.Thread(target=self._read_into, args=(chunks,), daemon=True, name="felix-reader").start()
        # The initial resync allocates millions of long-lived objects and frees
        # few: collect young objects less often until the first apply after InSync is done
        # (see _end_resync_gc).
        self._gc_thresholds = gc.get_threshold()
        gc.set_threshold(*RESYNC_GC_THRESHOLDS)
        try:
            return self._loop(chunks)
        finally:
            self.dataplane.set_waker(lambda: None)
            self._ended.set()
            self._end_resync_gc()

    def _end_resync_gc(self) -> None:
        """Back to normal garbage collection (idempotent)."""
        if self._gc_thresholds is not None:
            gc.set_threshold(*self._gc_thresholds)
            self._gc_thresholds = None
            gc.unfreeze()

    def _loop(self, chunks: queue.Queue[bytes | None]) -> SessionResult:
        while True:
            if self._should_stop():
                return SessionResult("stop", self.decoder.count)
            try:
                chunk = chunks.get(timeout=self._timeout())
            except queue.Empty:
                pass
            else:
                if not self._handle_batch(chunk, chunks):
                    self._on_eof()
                    return SessionResult("eof", self.decoder.count)
            if self._should_stop():
                return SessionResult("stop", self.decoder.count)
            self._maybe_apply()
            self._maybe_report_process_status()

    def _read_into(self, chunks: queue.Queue[bytes | None]) -> None:
        """Reader thread: Felix's bytes into the queue; None marks EOF.

        Ends when the session has ended, even if nobody drains the queue any
        more (serve mode outlives sessions and must not collect threads).
        """
        while not self._ended.is_set():
            try:
                data = os.read(self.in_fd, READ_SIZE)
            except InterruptedError:
                continue
            except OSError:
                data = b""
            item = data or None
            while not self._ended.is_set():
                try:
                    chunks.put(item, timeout=STOP_POLL_SECONDS)
                    break
                except queue.Full:
                    continue
            if item is None:
                if self._on_eof_seen is not None and not self._ended.is_set():
                    self._on_eof_seen()
                return

    def _timeout(self) -> float:
        """How long the loop may wait for input: until the next process status,
        and never long, so a stop request is noticed promptly."""
        if self._next_report is None:
            return STOP_POLL_SECONDS
        return min(STOP_POLL_SECONDS, max(0.0, self._next_report - time.monotonic()))

    def _handle_batch(self, chunk: bytes | None, chunks: queue.Queue[bytes | None]) -> bool:
        """Handle this chunk and whatever else is queued (bounded in time). False on EOF."""
        deadline = time.monotonic() + BATCH_SECONDS
        while chunk is not None:
            self.metrics.bytes_in.inc(len(chunk))
            for msg in self.decoder.feed(chunk):
                self.handle(msg)
            if not self.state.in_sync:
                # During the initial resync the model only grows: freezing what is
                # already there keeps the cyclic GC from re-scanning it at every
                # collection. Undone after the first apply (see apply()).
                gc.freeze()
            if time.monotonic() >= deadline or self._should_stop():
                return True
            try:
                chunk = chunks.get_nowait()
            except queue.Empty:
                return True
        return False

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
        if which is None:
            outcome = Outcome("unknown", ignored="payload unknown to this schema")
        else:
            outcome = apply_message(self.state, msg, which)
        self.metrics.count_message(outcome.kind)
        if outcome.problem:
            self.metrics.content_errors.labels(outcome.kind).inc()
            log.warning(
                "bad_content",
                message=outcome.kind,
                object=str(outcome.obj),
                problem=outcome.problem,
                seq=msg.sequence_number,
            )
        elif outcome.ignored:
            log.debug(
                "message_ignored", message=outcome.kind, object=str(outcome.obj), reason=outcome.ignored
            )
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
        self.dataplane.configure(cfg)
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
        if not self.state.dirty and not self.board.has_changes() and not self.dataplane.wants_apply():
            return
        self.apply()

    def apply(self) -> None:
        started = time.monotonic()
        first = not self._applied_once
        if first and self._gc_thresholds is not None:
            # The synced model stays out of the cyclic GC's scans through the first apply, which
            # allocates a program per endpoint and an object per VPP message (a full collection
            # would walk millions of model objects each time); normal collection resumes after.
            gc.freeze()
        dirty = self.state.take_dirty()
        affected = self.state.endpoints_affected(dirty)
        try:
            self.dataplane.apply(self.state, dirty, self.board)
        except Exception:
            log.exception("dataplane_apply_failed", dataplane=self.dataplane.name)
            self.metrics.apply_failures.inc()
        # Removed endpoints leave the board before the flush (which sends their
        # StatusRemove), so nothing reported meanwhile by another thread is lost.
        for key in dirty.workload_endpoints:
            if key not in self.state.workload_endpoints:
                self.reporter.remember_endpoint(key, None)
                self.board.forget(key)
        for hkey in dirty.host_endpoints:
            if hkey not in self.state.host_endpoints:
                self.board.forget(hkey)
        for ep_key, status, reason in self.reporter.flush(self.state, affected):
            fields = {"endpoint": str(ep_key), "status": status}
            if status == "error":
                log.warning("endpoint_status", reason=reason, **fields)
            else:
                log.info("endpoint_status", **fields)
        elapsed = time.monotonic() - started
        self.metrics.apply_seconds.observe(elapsed)
        self.metrics.observe_model(self.state, self.reporter.statuses())
        if first:
            self._applied_once = True
            self._end_resync_gc()
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
