"""Prometheus metrics of the driver, served when `VPPMetricsListen` is set.

Each Felix session updates the same metrics objects; they live in their own
registry so tests can create as many as they like.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from .model.state import DesiredState


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.bytes_in = Counter("felix_bytes_received", "Bytes read from Felix", registry=r)
        # Counted per message on the hot path: a plain dict, exported at scrape time
        # (a labelled Counter takes a lock per increment).
        self.message_counts: Tally[str] = Tally()
        r.register(_MessageCounts(self.message_counts))
        self.content_errors = Counter(
            "felix_content_errors", "Felix messages whose content did not validate", ["type"], registry=r
        )
        self.apply_seconds = Histogram(
            "dataplane_apply_seconds",
            "Time to apply one batch to the dataplane and report statuses",
            registry=r,
        )
        self.apply_failures = Counter("dataplane_apply_failures", "Batches whose apply raised", registry=r)
        self.model_objects = Gauge("model_objects", "Objects in the desired state", ["kind"], registry=r)
        self.endpoint_status = Gauge(
            "endpoint_status", "Endpoints by status last sent to Felix", ["status"], registry=r
        )

    def count_message(self, kind: str) -> None:
        self.message_counts[kind] += 1

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


class _MessageCounts(Collector):
    def __init__(self, counts: Tally[str]) -> None:
        self._counts = counts

    def collect(self) -> list[CounterMetricFamily]:
        family = CounterMetricFamily(
            "felix_messages_received", "Felix messages applied to the model", labels=["type"]
        )
        for kind, n in sorted(self._counts.items()):
            family.add_metric([kind], n)
        return [family]
