"""Statuses the driver reports to Felix: endpoint health and process liveness.

Endpoint status is the worst of what is known about an endpoint (error > down
> up): content errors in the model, `state != "active"`, and what the
dataplane layer reports per address family through `StatusBoard.report`.
An endpoint nothing has reported programmed is "down", never "up". Updates
go to Felix on change only, with the endpoint attached (Felix's file reporter
needs it), and a `...StatusRemove` follows an endpoint's removal.
"""

from __future__ import annotations

import datetime
import enum
import threading
import time
from collections.abc import Callable, Iterable

from ..model.state import DesiredState
from ..model.types import EndpointKey, HostEndpointID, WorkloadEndpointID
from . import felixbackend_pb2 as pb


class Health(enum.IntEnum):
    """Ordered so that max() is "worst wins"."""

    UP = 0
    DOWN = 1
    ERROR = 2

    @property
    def felix_name(self) -> str:
        return self.name.lower()


class StatusBoard:
    """Where the dataplane layer records each endpoint's programming result.

    Thread-safe (the CNI server may report from its own thread). Keys are
    (endpoint, family); a family is any label the reporter chooses ("ipv4",
    "ipv6", "interface", ...). Everything reported for an endpoint is folded
    worst-wins.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._results: dict[EndpointKey, dict[str, tuple[Health, str]]] = {}
        self._changed: set[EndpointKey] = set()

    def report(self, key: EndpointKey, family: str, health: Health, reason: str = "") -> None:
        with self._lock:
            per = self._results.setdefault(key, {})
            if per.get(family) != (health, reason):
                per[family] = (health, reason)
                self._changed.add(key)

    def forget(self, key: EndpointKey) -> None:
        with self._lock:
            if self._results.pop(key, None) is not None:
                self._changed.add(key)

    def health(self, key: EndpointKey) -> tuple[Health, str]:
        """Worst reported result; DOWN ("not programmed") if none."""
        with self._lock:
            per = self._results.get(key)
            if not per:
                return Health.DOWN, "not programmed"
            return max(per.values(), key=lambda hr: hr[0])

    def has_changes(self) -> bool:
        with self._lock:
            return bool(self._changed)

    def take_changed(self) -> set[EndpointKey]:
        with self._lock:
            changed, self._changed = self._changed, set()
            return changed


def endpoint_health(state: DesiredState, board: StatusBoard, key: EndpointKey) -> tuple[Health, str]:
    """The status Felix should see for an endpoint present in the model."""
    problems = state.endpoint_problems(key)
    if problems:
        return Health.ERROR, "; ".join(problems)
    reported, reason = board.health(key)
    ep = state.endpoint(key)
    if reported is Health.UP and isinstance(key, WorkloadEndpointID):
        if ep is not None and getattr(ep, "state", "active") != "active":
            return Health.DOWN, f"state is {getattr(ep, 'state', '')!r}"
    return reported, reason


class EndpointStatusReporter:
    """Computes endpoint statuses and sends the changes to Felix."""

    def __init__(self, send: Callable[[pb.FromDataplane], None], board: StatusBoard) -> None:
        self._send = send
        self._board = board
        self._sent: dict[EndpointKey, str] = {}
        self.last_reasons: dict[EndpointKey, str] = {}
        # Felix's own encoding of each workload endpoint, echoed back verbatim
        # in status updates (field 3) so no field is lost in a round trip.
        self._raw_endpoints: dict[WorkloadEndpointID, bytes] = {}

    def remember_endpoint(self, key: WorkloadEndpointID, raw: bytes | None) -> None:
        """Record (or, with None, drop) the endpoint as Felix sent it."""
        if raw is None:
            self._raw_endpoints.pop(key, None)
        else:
            self._raw_endpoints[key] = raw

    def flush(self, state: DesiredState, keys: Iterable[EndpointKey]) -> list[tuple[EndpointKey, str, str]]:
        """Send what changed for `keys` plus whatever the board says changed.

        Returns the (key, status, reason) sent, for logging.
        """
        todo = set(keys) | self._board.take_changed()
        sent = []
        for key in sorted(todo, key=str):
            ep = state.endpoint(key)
            if ep is None:
                if self._sent.pop(key, None) is not None:
                    self._send(_remove_msg(key))
                    self.last_reasons.pop(key, None)
                    sent.append((key, "removed", ""))
                continue
            health, reason = endpoint_health(state, self._board, key)
            status = health.felix_name
            self.last_reasons[key] = reason
            if self._sent.get(key) == status:
                continue
            self._sent[key] = status
            raw = self._raw_endpoints.get(key) if isinstance(key, WorkloadEndpointID) else None
            self._send(_update_msg(key, status, raw))
            sent.append((key, status, reason))
        return sent

    def statuses(self) -> dict[EndpointKey, str]:
        return dict(self._sent)


def _update_msg(key: EndpointKey, status: str, raw_endpoint: bytes | None) -> pb.FromDataplane:
    out = pb.FromDataplane()
    if isinstance(key, HostEndpointID):
        upd = out.host_endpoint_status_update
        upd.id.endpoint_id = key.endpoint_id
        upd.status.status = status
        return out
    wupd = out.workload_endpoint_status_update
    _fill_wep_id(wupd.id, key)
    wupd.status.status = status
    if raw_endpoint is not None:
        wupd.endpoint.ParseFromString(raw_endpoint)
    return out


def _remove_msg(key: EndpointKey) -> pb.FromDataplane:
    out = pb.FromDataplane()
    if isinstance(key, HostEndpointID):
        out.host_endpoint_status_remove.id.endpoint_id = key.endpoint_id
    else:
        _fill_wep_id(out.workload_endpoint_status_remove.id, key)
    return out


def _fill_wep_id(msg: pb.WorkloadEndpointID, key: WorkloadEndpointID) -> None:
    msg.orchestrator_id = key.orchestrator_id
    msg.workload_id = key.workload_id
    msg.endpoint_id = key.endpoint_id


def process_status(started_monotonic: float, now: datetime.datetime | None = None) -> pb.FromDataplane:
    """A ProcessStatusUpdate: RFC 3339 UTC timestamp and uptime in seconds."""
    now = now or datetime.datetime.now(datetime.UTC)
    out = pb.FromDataplane()
    out.process_status_update.iso_timestamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.process_status_update.uptime = time.monotonic() - started_monotonic
    return out
