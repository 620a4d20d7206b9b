"""Prometheus metrics: what the driver counts, and that the endpoint serves it."""

from __future__ import annotations

import socket
import urllib.request

from calico_vpp_driver.felix import felixbackend_pb2 as pb
from calico_vpp_driver.felix.decode import apply_message
from calico_vpp_driver.metrics import Metrics
from calico_vpp_driver.model.state import DesiredState
from calico_vpp_driver.model.types import WorkloadEndpointID


def test_metrics_served_over_http() -> None:
    m = Metrics()
    s = DesiredState()
    apply_message(s, pb.ToDataplane(ipset_update=pb.IPSetUpdate(id="s:a", members=["10.0.0.1/32"], type=2)))
    m.count_message("ipset_update")
    m.count_message("ipset_update")
    m.count_message("in_sync")
    m.observe_model(s, {WorkloadEndpointID("k8s", "ns/a", "eth0"): "down"})
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    m.serve(f"127.0.0.1:{port}")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'felix_messages_received_total{type="ipset_update"} 2.0' in body
    assert 'felix_messages_received_total{type="in_sync"} 1.0' in body
    assert 'model_objects{kind="ipset_members"} 1.0' in body
    assert 'endpoint_status{status="down"} 1.0' in body
    assert 'endpoint_status{status="up"} 0.0' in body
