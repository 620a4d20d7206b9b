"""Endpoint status: worst wins, down until programmed, on change only, removes."""

from __future__ import annotations

from calico_vpp_driver.felix import felixbackend_pb2 as pb
from calico_vpp_driver.felix.decode import apply_message
from calico_vpp_driver.felix.status import EndpointStatusReporter, Health, StatusBoard, process_status
from calico_vpp_driver.model.state import DesiredState
from calico_vpp_driver.model.types import HostEndpointID, WorkloadEndpointID

WID = pb.WorkloadEndpointID(orchestrator_id="k8s", workload_id="ns/a", endpoint_id="eth0")
KEY = WorkloadEndpointID("k8s", "ns/a", "eth0")


def setup(
    state_field: str = "active",
) -> tuple[DesiredState, StatusBoard, EndpointStatusReporter, list[pb.FromDataplane]]:
    s = DesiredState()
    ep = pb.WorkloadEndpoint(
        state=state_field, name="cali1", ipv4_nets=["10.65.0.1/32"], annotations={"a": "b"}
    )
    apply_message(s, pb.ToDataplane(workload_endpoint_update=pb.WorkloadEndpointUpdate(id=WID, endpoint=ep)))
    board = StatusBoard()
    sent: list[pb.FromDataplane] = []
    rep = EndpointStatusReporter(sent.append, board)
    rep.remember_endpoint(KEY, ep.SerializeToString())
    return s, board, rep, sent


def statuses(sent: list[pb.FromDataplane]) -> list[str]:
    out = []
    for m in sent:
        which = m.WhichOneof("payload")
        if which == "workload_endpoint_status_update":
            out.append(m.workload_endpoint_status_update.status.status)
        else:
            out.append(which or "")
    return out


def test_down_until_programmed_then_up_on_change_only() -> None:
    s, board, rep, sent = setup()
    rep.flush(s, [KEY])
    assert statuses(sent) == ["down"]
    rep.flush(s, [KEY])
    assert statuses(sent) == ["down"]  # unchanged: nothing sent
    board.report(KEY, "ipv4", Health.UP)
    rep.flush(s, [])
    assert statuses(sent) == ["down", "up"]
    # The endpoint Felix sent is echoed verbatim (field 3).
    upd = sent[-1].workload_endpoint_status_update
    assert upd.endpoint.name == "cali1" and dict(upd.endpoint.annotations) == {"a": "b"}
    assert upd.id.workload_id == "ns/a"


def test_worst_wins_across_families() -> None:
    s, board, rep, sent = setup()
    board.report(KEY, "ipv4", Health.UP)
    board.report(KEY, "ipv6", Health.DOWN, "interface down")
    rep.flush(s, [KEY])
    assert statuses(sent) == ["down"]
    board.report(KEY, "ipv6", Health.ERROR, "npol_rule_create failed")
    rep.flush(s, [])
    assert statuses(sent) == ["down", "error"]
    assert rep.last_reasons[KEY] == "npol_rule_create failed"
    board.report(KEY, "ipv6", Health.UP)
    rep.flush(s, [])
    assert statuses(sent) == ["down", "error", "up"]


def test_inactive_endpoint_is_down_even_if_programmed() -> None:
    s, board, rep, sent = setup(state_field="inactive")
    board.report(KEY, "ipv4", Health.UP)
    rep.flush(s, [KEY])
    assert statuses(sent) == ["down"]


def test_model_error_beats_dataplane_up() -> None:
    s, board, rep, sent = setup()
    ep = pb.WorkloadEndpoint(state="active", name="cali1", profile_ids=["kns.missing"])
    apply_message(s, pb.ToDataplane(workload_endpoint_update=pb.WorkloadEndpointUpdate(id=WID, endpoint=ep)))
    board.report(KEY, "ipv4", Health.UP)
    rep.flush(s, [KEY])
    assert statuses(sent) == ["error"]
    assert "kns.missing" in rep.last_reasons[KEY]


def test_remove_after_removal_only_if_reported() -> None:
    s, _board, rep, sent = setup()
    rep.flush(s, [KEY])
    apply_message(s, pb.ToDataplane(workload_endpoint_remove=pb.WorkloadEndpointRemove(id=WID)))
    rep.flush(s, [KEY])
    assert statuses(sent) == ["down", "workload_endpoint_status_remove"]
    rep.flush(s, [KEY])
    assert len(sent) == 2  # no second remove
    # Never reported -> no remove either.
    s2, _b, rep2, sent2 = setup()
    apply_message(s2, pb.ToDataplane(workload_endpoint_remove=pb.WorkloadEndpointRemove(id=WID)))
    rep2.flush(s2, [KEY])
    assert sent2 == []


def test_host_endpoint_status() -> None:
    s = DesiredState()
    hid = pb.HostEndpointID(endpoint_id="h1")
    apply_message(
        s,
        pb.ToDataplane(
            host_endpoint_update=pb.HostEndpointUpdate(id=hid, endpoint=pb.HostEndpoint(name="eth0"))
        ),
    )
    board = StatusBoard()
    sent: list[pb.FromDataplane] = []
    rep = EndpointStatusReporter(sent.append, board)
    rep.flush(s, [HostEndpointID("h1")])
    assert sent[0].host_endpoint_status_update.id.endpoint_id == "h1"
    assert sent[0].host_endpoint_status_update.status.status == "down"
    apply_message(s, pb.ToDataplane(host_endpoint_remove=pb.HostEndpointRemove(id=hid)))
    rep.flush(s, [HostEndpointID("h1")])
    assert sent[1].host_endpoint_status_remove.id.endpoint_id == "h1"


def test_process_status_format() -> None:
    import datetime
    import re
    import time

    m = process_status(
        time.monotonic() - 5, datetime.datetime(2026, 8, 22, 13, 33, 20, tzinfo=datetime.UTC)
    )
    assert m.process_status_update.iso_timestamp == "2026-08-22T13:33:20Z"
    assert 4.9 < m.process_status_update.uptime < 6
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
        process_status(time.monotonic()).process_status_update.iso_timestamp,
    )
