"""Prometheus metrics of the driver, served when `VPPMetricsListen` is set.

Each Felix session updates the same metrics objects; they live in their own
registry so tests can create as many as they like.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .model.state import DesiredState


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.bytes_in = Counter("felix_bytes_received", "Bytes read from Felix", registry=r)
        self.messages = Counter(
            "felix_messages_received", "Felix messages applied to the model", ["type"], registry=r
        )
        self.content_errors = Counter(
            "felix_content_errors", "Felix messages whose content did not validate", ["type"], registry=r
        )
        self.apply_seconds = Histogram(
            "dataplane_apply_seconds",
            "Time to apply one batch to the dataplane and report statuses",
            registry=r,
        )
        self.apply_failures = Counter("dataplane_apply_failures", "Batches whose apply raised", registry=r)
        self._message_children: dict[str, Any] = {}
        self.model_objects = Gauge("model_objects", "Objects in the desired state", ["kind"], registry=r)
        self.endpoint_status = Gauge(
            "endpoint_status", "Endpoints by status last sent to Felix", ["status"], registry=r
        )

    def count_message(self, kind: str) -> None:
        child = self._message_children.get(kind)
        if child is None:
            child = self._message_children[kind] = self.messages.labels(kind)
        child.inc()

    def observe_model(self, state: DesiredState, statuses: Mapping[Any, str]) -> None:
        for kind, n in state.counts().items():
            self.model_objects.labels(kind).set(n)
        tally = Tally(statuses.values())
        for status in ("up", "down", "error"):
            self.endpoint_status.labels(status).set(tally.get(status, 0))

    def serve(self, listen: str) -> None:
        """Start the HTTP endpoint; `listen` is "host:port" or ":port"."""
        host, _, port = listen.rpartition(":")
        start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0", registry=self.registry)
