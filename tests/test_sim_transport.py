"""The simulator's transport, memclnt messages, events and faults, driven by the real vpp_papi client.

The simulator runs in-process (a thread) with the small handler registry below, independent of the
simulator's own object model; the last tests run it as a process (``python -m calico_vpp_driver.sim``)
with the same registry (``--handlers test_sim_transport:HANDLERS``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from vpp_papi import VPPApiClient
from vpp_papi.vpp_papi import VPPIOError

from calico_vpp_driver.sim.codec import Codec, prefix_to_network
from calico_vpp_driver.sim.defs import api_defs
from calico_vpp_driver.sim.server import HEADER, SimServer

REPO = Path(__file__).resolve().parents[1]
ADMIN_UP = 1


# --------------------------------------------------------------------------------------------------
# A stub state and handler registry (the simulator's real ones live in sim/state.py, sim/handlers.py)
# --------------------------------------------------------------------------------------------------


class StubState:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.interfaces: dict[int, dict[str, Any]] = {}
        self.routes: list[dict[str, Any]] = []
        self.next_rule = 0
        self.hazards: list[str] = []


def _create_loopback(st: StubState, req: dict[str, Any]) -> dict[str, Any]:
    index = len(st.interfaces) + 1
    st.interfaces[index] = {"name": f"loop{index}", "flags": 0, "mac": req["mac_address"]}
    return {"retval": 0, "sw_if_index": index}


def _set_flags(st: StubState, req: dict[str, Any]) -> dict[str, Any]:
    intf = st.interfaces.get(req["sw_if_index"])
    if intf is None:
        return {"retval": -2}
    intf["flags"] = req["flags"]
    st.events.append(("sw_interface_event", {"sw_if_index": req["sw_if_index"], "flags": req["flags"]}))
    return {"retval": 0}


def _interface_dump(st: StubState, req: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"sw_if_index": i, "interface_name": intf["name"], "flags": intf["flags"], "l2_address": intf["mac"]}
        for i, intf in sorted(st.interfaces.items())
        if not req["name_filter_valid"] or req["name_filter"] in intf["name"]
    ]


def _route_add_del(st: StubState, req: dict[str, Any]) -> dict[str, Any]:
    st.routes.append(req["route"])
    return {"retval": 0, "stats_index": len(st.routes)}


def _route_dump(st: StubState, req: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"route": r} for r in st.routes if r["table_id"] == req["table"]["table_id"]]


def _rule_create(st: StubState, req: dict[str, Any]) -> dict[str, Any]:
    st.next_rule += 1
    return {"retval": 0, "rule_id": st.next_rule}


def _show_version(st: StubState, req: dict[str, Any]) -> dict[str, Any]:
    return {"retval": 0, "program": "stub", "version": "1.2.3", "build_date": "today"}


def _broken(st: StubState, req: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("handler bug")


def _hazardous(st: StubState, req: dict[str, Any]) -> dict[str, Any]:
    st.hazards.append("the stub's VPP would now be broken")
    return {"retval": 0}


HANDLERS: dict[str, Callable[[Any, dict[str, Any]], Any]] = {
    "create_loopback": _create_loopback,
    "sw_interface_set_flags": _set_flags,
    "sw_interface_dump": _interface_dump,
    "ip_route_add_del": _route_add_del,
    "ip_route_dump": _route_dump,
    "npol_rule_create": _rule_create,
    "show_version": _show_version,
    "npol_rule_delete": _broken,
    "sw_interface_tag_add_del": _hazardous,
}


# --------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def sock_path() -> Iterator[str]:
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer.
    short = tempfile.mkdtemp(prefix="vppsim-")
    yield os.path.join(short, "api.sock")
    shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def sim(sock_path: str) -> Iterator[SimServer]:
    server = SimServer(sock_path, StubState, HANDLERS).start()
    yield server
    server.stop()


class Clients:
    """Makes vpp_papi clients and disconnects them at the end of a test."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.made: list[VPPApiClient] = []

    def __call__(self, name: str = "test", *, read_timeout: float = 2) -> VPPApiClient:
        client = VPPApiClient(server_address=self.path, bootstrapapi=True, read_timeout=read_timeout)
        client.connect(name)
        self.made.append(client)
        return client

    def close(self) -> None:
        for client in self.made:
            if client.transport.connected:
                client.transport.read_timeout = 0.2
                client.disconnect()


@pytest.fixture
def clients(sock_path: str) -> Iterator[Clients]:
    made = Clients(sock_path)
    yield made
    made.close()


def _wait(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def _reconnect(client: VPPApiClient) -> None:
    """What a driver does after losing VPP: drop the dead connection and connect again."""
    client.transport.read_timeout = 0.2
    client.disconnect()
    client.transport.read_timeout = 2
    client.connect("test")


# --------------------------------------------------------------------------------------------------
# Connection, message table, calls
# --------------------------------------------------------------------------------------------------


def test_connect_gets_complete_message_table(sim: SimServer, clients: Clients) -> None:
    client = clients("table")
    defs = api_defs()
    table = client.transport.message_table
    assert table == {m.name_crc: sim.msg_ids[name] for name, m in defs.messages.items()}
    assert table["sockclnt_create_455fb9c4"] == 15 and table["sockclnt_create_reply_35166268"] == 16
    # Numbered like VPP: memclnt from 1, then the other modules after it.
    assert sorted(table.values()) == list(range(1, len(defs.messages) + 1))
    assert min(sim.msg_ids[n] for n in defs.module_messages[defs.modules[1].name]) == 29
    assert client.validate_message_table(table) == []
    for request in defs.services:
        assert hasattr(client.api, request), request
    assert client.transport.socket_index & 0x80000000
    assert sim.client_names() == ["table"]


def test_call_round_trip(sim: SimServer, clients: Clients) -> None:
    client = clients()
    reply = client.api.show_version()
    assert (reply.retval, reply.program, reply.version, reply.build_date) == (0, "stub", "1.2.3", "today")
    mac = "02:fe:00:00:00:01"
    reply = client.api.create_loopback(mac_address=mac)
    assert reply.retval == 0 and reply.sw_if_index == 1
    assert sim.state.interfaces[1]["mac"] == bytes.fromhex(mac.replace(":", ""))
    assert sim.call_counts()["create_loopback"] == 1


def test_builtin_answers_without_handlers(sock_path: str, clients: Clients) -> None:
    with SimServer(sock_path, StubState, {}):
        client = clients()
        assert client.api.show_version().version.endswith("~sim")
        assert client.api.cli_inband(cmd="show version").reply.startswith("vpp v")
        assert client.api.acl_del(acl_index=1).retval == -9  # no handler: VNET_API_ERROR_UNIMPLEMENTED
        assert client.api.acl_dump(acl_index=0xFFFFFFFF) == []
        assert client.api.npol_get_version().major == 0  # a reply without retval: zeros
        assert client.api.control_ping().retval == 0


def test_handler_failure_is_retval_and_recorded(sim: SimServer, clients: Clients) -> None:
    client = clients()
    assert client.api.npol_rule_delete(rule_id=1).retval == -1
    assert any("handler bug" in e for e in sim.errors)
    assert client.api.show_version().retval == 0  # still serving


def test_a_hazard_a_handler_records_is_an_error_naming_the_request(sim: SimServer, clients: Clients) -> None:
    client = clients()
    assert client.api.sw_interface_tag_add_del(is_add=True, sw_if_index=1, tag="t").retval == 0  # accepted
    assert sim.errors == [
        "sw_interface_tag_add_del: VPP accepts this but is left broken: the stub's VPP would now be broken"
    ]
    assert client.api.show_version().retval == 0
    assert len(sim.errors) == 1  # reported once


def test_dump_details_then_control_ping(sim: SimServer, clients: Clients) -> None:
    client = clients()
    for _ in range(3):
        client.api.create_loopback()
    details = client.api.sw_interface_dump()
    assert [d.sw_if_index for d in details] == [1, 2, 3]
    assert [d.interface_name for d in details] == ["loop1", "loop2", "loop3"]
    filtered = client.api.sw_interface_dump(name_filter_valid=True, name_filter="loop2")
    assert [d.sw_if_index for d in filtered] == [2]
    assert client.api.sw_interface_dump(name_filter_valid=True, name_filter="nope") == []
    assert sim.call_counts()["control_ping"] == 3
    reply = client.api.control_ping()
    assert reply.retval == 0 and reply.vpe_pid == os.getpid()
    assert reply.client_index == client.transport.socket_index


def test_route_with_path_needs_full_label_stack(sim: SimServer, clients: Clients) -> None:
    client = clients()
    path = {"sw_if_index": 1, "weight": 1, "nh": {"address": {"ip4": ipaddress.ip_address("10.0.0.1")}}}
    route = {"table_id": 0, "prefix": ipaddress.ip_network("10.1.0.0/16"), "n_paths": 1, "paths": [path]}
    # vpp_papi 2.4.2 cannot pack a fib_path without its label_stack[16]...
    with pytest.raises(ValueError):
        client.api.ip_route_add_del(is_add=True, route=route)
    # ...given in full, it can.
    path["label_stack"] = [{}] * 16
    assert client.api.ip_route_add_del(is_add=True, route=route).retval == 0
    [details] = client.api.ip_route_dump(table={"table_id": 0})
    assert details.route.prefix == ipaddress.ip_network("10.1.0.0/16")
    assert str(details.route.paths[0].nh.address.ip4) == "10.0.0.1"
    assert prefix_to_network(sim.state.routes[0]["prefix"]) == ipaddress.ip_network("10.1.0.0/16")


def test_keepalive(sim: SimServer, clients: Clients) -> None:
    client = clients()
    reply = client.api.memclnt_keepalive()
    assert reply.retval == 0


def test_api_versions(sim: SimServer, clients: Clients) -> None:
    reply = clients().api.api_versions()
    assert reply.retval == 0
    assert {v.name for v in reply.api_versions} >= {"memclnt.api", "npol.api", "cnat.api"}


def test_disconnect_and_reconnect(sim: SimServer, clients: Clients) -> None:
    client = clients()
    client.api.create_loopback()
    reply = client.disconnect()
    assert reply.response == 1  # VPP answers sockclnt_delete with 1
    assert _wait(lambda: sim.client_count == 0)
    client.connect("again")
    assert len(client.api.sw_interface_dump()) == 1  # state kept


def test_bootstrap_does_not_work_with_do_async(sim: SimServer, sock_path: str) -> None:
    # A vpp_papi fact the driver must live with: with do_async=True every incoming message goes to
    # the event callback, the get_api_json reply of the bootstrap included, so connect times out.
    client = VPPApiClient(server_address=sock_path, bootstrapapi=True, read_timeout=0.5)
    with pytest.raises(VPPIOError):
        client.connect("async", do_async=True)
    client.transport.read_timeout = 0.1
    client.disconnect()


def test_pipelined_calls_with_the_asyncio_client(sim: SimServer, sock_path: str) -> None:
    from vpp_papi.vpp_papi_async import VPPApiClient as AsyncClient

    async def run() -> None:
        client = AsyncClient(server_address=sock_path, read_timeout=2)
        events: asyncio.Queue[Any] = asyncio.Queue()
        assert await client.connect("asyncio", events) == 0
        rule = {"filters": [{}] * 3}
        replies = await asyncio.gather(*(client.api.npol_rule_create(rule=rule) for _ in range(200)))
        assert [r.rule_id for r in replies] == list(range(1, 201))
        await client.api.create_loopback()
        reply, details = await client.api.sw_interface_dump()
        assert reply.retval == 0 and [d.sw_if_index for d in details] == [1]
        await client.disconnect()

    asyncio.run(run())


# --------------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------------


def test_interface_event_delivered_to_subscribers(sim: SimServer, clients: Clients) -> None:
    watcher, other = clients("watcher"), clients("other")
    events: list[tuple[str, Any]] = []
    others: list[tuple[str, Any]] = []
    watcher.register_event_callback(lambda name, msg: events.append((name, msg)))
    other.register_event_callback(lambda name, msg: others.append((name, msg)))
    assert watcher.api.want_interface_events(enable_disable=1, pid=4242).retval == 0
    assert watcher.api.want_interface_events(enable_disable=1, pid=4242).retval == -31  # as VPP

    sw_if_index = other.api.create_loopback().sw_if_index
    assert other.api.sw_interface_set_flags(sw_if_index=sw_if_index, flags=ADMIN_UP).retval == 0
    assert _wait(lambda: len(events) == 1)
    name, event = events[0]
    assert name == "sw_interface_event"
    assert (event.sw_if_index, int(event.flags), event.deleted) == (sw_if_index, ADMIN_UP, False)
    assert event.pid == 4242 and event.client_index == watcher.transport.socket_index

    # Events raised outside a request (the dataplane changing by itself) go out too.
    sim.mutate(lambda st: st.events.append(("sw_interface_event", {"sw_if_index": 9, "deleted": True})))
    assert _wait(lambda: len(events) == 2)
    assert events[1][1].deleted is True

    # An event naming a client goes to that client only (if subscribed).
    target = watcher.transport.socket_index
    sim.mutate(
        lambda st: st.events.append(("sw_interface_event", {"client_index": target, "sw_if_index": 7}))
    )
    assert _wait(lambda: len(events) == 3)
    assert events[2][1].sw_if_index == 7

    assert watcher.api.want_interface_events(enable_disable=0, pid=4242).retval == 0
    other.api.sw_interface_set_flags(sw_if_index=sw_if_index, flags=0)
    watcher.api.control_ping()  # anything still in flight would arrive before this reply
    time.sleep(0.05)
    assert len(events) == 3 and others == []


# --------------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------------


def test_fail_nth(sim: SimServer, clients: Clients) -> None:
    client = clients()
    sim.fail_nth("create_loopback", 2, -7)
    assert client.api.create_loopback().retval == 0
    failed = client.api.create_loopback()
    assert failed.retval == -7 and failed.sw_if_index == 0
    assert client.api.create_loopback().retval == 0
    assert sorted(sim.state.interfaces) == [1, 2]  # the failed call changed nothing

    sim.fail_nth("create_loopback", 1, -11, times=0)  # every call from now on
    assert [client.api.create_loopback().retval for _ in range(3)] == [-11] * 3
    sim.clear_faults()
    assert client.api.create_loopback().retval == 0

    sim.fail_nth("sw_interface_dump", 1, -1)  # a failed dump has no details
    assert client.api.sw_interface_dump() == []
    assert len(client.api.sw_interface_dump()) == 3


def test_fail_nth_over_cli(sim: SimServer, clients: Clients) -> None:
    client = clients()
    reply = client.api.cli_inband(cmd="sim fault fail-nth npol_rule_create 3 -7")
    assert reply.retval == 0
    assert "npol_rule_create" in client.api.cli_inband(cmd="sim fault show").reply
    rule = {"filters": [{}] * 3}
    assert [client.api.npol_rule_create(rule=rule).retval for _ in range(4)] == [0, 0, -7, 0]
    assert client.api.cli_inband(cmd="sim calls npol_rule_create").reply == "npol_rule_create 4\n"
    bad = client.api.cli_inband(cmd="sim fault fail-nth npol_rule_create")
    assert bad.retval == -7 and "usage" in bad.reply


def test_drop_connections(sim: SimServer, clients: Clients) -> None:
    client = clients()
    client.api.create_loopback()
    sim.drop_connections()
    with pytest.raises((VPPIOError, OSError)):
        client.api.show_version()
    _reconnect(client)
    assert len(client.api.sw_interface_dump()) == 1  # a dropped connection keeps VPP's state


def test_drop_over_cli(sim: SimServer, clients: Clients) -> None:
    client = clients()
    assert client.api.cli_inband(cmd="sim fault drop").retval == 0  # the reply arrives first
    with pytest.raises((VPPIOError, OSError)):
        client.api.show_version()
    _reconnect(client)
    assert client.api.show_version().retval == 0


def test_restart_empties_state(sim: SimServer, clients: Clients) -> None:
    client = clients()
    client.api.create_loopback()
    old_state = sim.state
    sim.restart()
    assert sim.state is not old_state
    with pytest.raises((VPPIOError, OSError)):
        client.api.sw_interface_dump()
    _reconnect(client)
    assert client.api.sw_interface_dump() == []


def test_restart_with_downtime(sim: SimServer, sock_path: str, clients: Clients) -> None:
    client = clients()
    sim.restart(downtime=0.5)
    with pytest.raises(OSError):
        VPPApiClient(server_address=sock_path, bootstrapapi=True).connect("too-early")
    assert sim.wait_listening(5)
    _reconnect(client)
    assert client.api.show_version().retval == 0


def test_delay_replies(sim: SimServer, clients: Clients) -> None:
    client = clients(read_timeout=1)
    sim.delay_replies(0.3)
    start = time.monotonic()
    assert client.api.show_version().retval == 0
    assert time.monotonic() - start >= 0.3
    start = time.monotonic()
    assert len(client.api.sw_interface_dump()) == 0  # the dump and its control_ping both wait
    assert time.monotonic() - start >= 0.3

    # Longer than the client's read timeout: the call fails, and the late reply surfaces later as
    # an "event" with a stale context.
    late: list[Any] = []
    client.register_event_callback(lambda name, msg: late.append((name, msg)))
    sim.delay_replies(1.5)
    with pytest.raises(VPPIOError):
        client.api.create_loopback()
    sim.delay_replies(0)
    assert client.api.show_version().retval == 0
    assert _wait(lambda: any(name == "create_loopback_reply" for name, _ in late), 3)


def test_delay_over_cli(sim: SimServer, clients: Clients) -> None:
    client = clients()
    start = time.monotonic()
    assert client.api.cli_inband(cmd="sim fault delay 0.2").retval == 0
    assert time.monotonic() - start < 0.2  # sim commands themselves are not delayed
    start = time.monotonic()
    client.api.show_version()
    assert time.monotonic() - start >= 0.2
    client.api.cli_inband(cmd="sim fault clear")
    assert sim.faults.delay == 0


# --------------------------------------------------------------------------------------------------
# Several clients; protocol checks
# --------------------------------------------------------------------------------------------------


def test_several_clients_at_once(sim: SimServer, clients: Clients) -> None:
    workers = [clients(f"c{i}") for i in range(4)]
    results: dict[int, list[int]] = {}

    def work(i: int) -> None:
        results[i] = [workers[i].api.create_loopback().sw_if_index for _ in range(50)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sim.client_count == 4
    all_indexes = sorted(i for r in results.values() for i in r)
    assert all_indexes == list(range(1, 201))
    assert len({w.transport.socket_index for w in workers}) == 4
    assert len(workers[0].api.sw_interface_dump()) == 200


def api_defs_ids() -> dict[str, int]:
    """Message ids as the simulator numbers them: the definitions' order, from 1."""
    return {name: i for i, name in enumerate(api_defs().messages, start=1)}


class RawClient:
    """A bare socket speaking the transport, to send what vpp_papi would not."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.settimeout(0.3)
        self.codec = Codec()

    def send(self, payload: bytes) -> None:
        self.sock.sendall(HEADER.pack(0, len(payload), 0) + payload)

    def request(self, name: str, **fields: Any) -> None:
        self.send(self.codec.encode(name, fields, api_defs_ids()[name]))

    def recv(self) -> bytes | None:
        try:
            header = self.sock.recv(16, socket.MSG_WAITALL)
            _, length, _ = HEADER.unpack(header)
            return self.sock.recv(length, socket.MSG_WAITALL)
        except (TimeoutError, struct.error):
            return None

    def create(self) -> int:
        self.send(self.codec.encode("sockclnt_create", {"name": "raw", "context": 1}, 15))
        reply = self.codec.decode("sockclnt_create_reply", self.recv() or b"")
        return int(reply["index"])


def test_truncated_message_dropped(sim: SimServer) -> None:
    raw = RawClient(sim.socket_path)
    index = raw.create()
    msg = raw.codec.encode(
        "npol_configure_policies",
        {"client_index": index, "context": 5, "total_ids": 4, "policy_ids": [1, 2, 3, 4]},
        sim.msg_ids["npol_configure_policies"],
    )
    raw.send(msg[:-4])  # says 4 ids, carries 3: VPP drops it without a reply
    assert raw.recv() is None
    assert any("truncated npol_configure_policies" in e for e in sim.errors)
    raw.request("control_ping", client_index=index, context=6)
    assert raw.codec.decode("control_ping_reply", raw.recv() or b"")["context"] == 6


def test_reply_to_wrong_client_index_not_sent(sim: SimServer) -> None:
    raw = RawClient(sim.socket_path)
    index = raw.create()
    raw.request("show_version", client_index=0, context=7)
    assert raw.recv() is None
    assert any("cannot route the reply" in e for e in sim.errors)
    raw.request("show_version", client_index=index, context=8)
    assert raw.codec.decode("show_version_reply", raw.recv() or b"")["program"] == "stub"


def _frame(raw: RawClient, name: str, **fields: Any) -> bytes:
    payload = raw.codec.encode(name, fields, api_defs_ids()[name])
    return HEADER.pack(0, len(payload), 0) + payload


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        assert chunk, "connection closed"
        buf += chunk
    return bytes(buf)


def _read_replies(raw: RawClient, name: str, n: int) -> list[dict[str, Any]]:
    """``n`` messages ``name``, however the stream is cut (``RawClient.recv`` wants them whole)."""
    out = []
    for _ in range(n):
        _, length, _ = HEADER.unpack(_recv_exact(raw.sock, HEADER.size))
        out.append(raw.codec.decode(name, _recv_exact(raw.sock, length)))
    return out


def test_pipelined_requests_in_one_write_answered_in_order(sim: SimServer) -> None:
    raw = RawClient(sim.socket_path)
    index = raw.create()
    n = 300
    raw.sock.sendall(
        b"".join(_frame(raw, "show_version", client_index=index, context=i) for i in range(1, n + 1))
    )
    replies = _read_replies(raw, "show_version_reply", n)
    assert [r["context"] for r in replies] == list(range(1, n + 1))
    assert sim.call_counts()["show_version"] == n


def test_messages_split_anywhere_and_larger_than_a_read(sim: SimServer) -> None:
    raw = RawClient(sim.socket_path)
    index = raw.create()
    # Byte by byte: a header split, a payload split.
    for b in _frame(raw, "show_version", client_index=index, context=11):
        raw.sock.sendall(bytes([b]))
    assert raw.codec.decode("show_version_reply", raw.recv() or b"")["context"] == 11
    # One message of several MB (more than one recv), then a small one in the same write.
    big = raw.codec.encode(
        "npol_configure_policies",
        {"client_index": index, "context": 12, "total_ids": 700_000, "policy_ids": list(range(700_000))},
        sim.msg_ids["npol_configure_policies"],
    )
    assert len(big) > 2 << 20
    raw.sock.settimeout(10)
    raw.sock.sendall(
        HEADER.pack(0, len(big), 0) + big + _frame(raw, "show_version", client_index=index, context=13)
    )
    (first,) = _read_replies(raw, "npol_configure_policies_reply", 1)
    assert first["context"] == 12 and first["retval"] == -9  # the stub registry has no handler for it
    assert _read_replies(raw, "show_version_reply", 1)[0]["context"] == 13


def test_client_that_writes_much_before_reading(sim: SimServer) -> None:
    # The replies of requests sent before the client reads anything outgrow the socket's buffers:
    # the server must go on reading (as VPP does) rather than wait for the client to read.
    raw = RawClient(sim.socket_path)
    index = raw.create()
    n = 20_000
    frames = b"".join(_frame(raw, "show_version", client_index=index, context=i) for i in range(1, n + 1))
    raw.sock.settimeout(30)
    raw.sock.sendall(frames)  # would block forever if the server stopped reading
    replies = _read_replies(raw, "show_version_reply", n)
    assert [r["context"] for r in replies] == list(range(1, n + 1))


def test_event_raised_between_requests_keeps_its_place(sim: SimServer) -> None:
    raw = RawClient(sim.socket_path)
    index = raw.create()
    raw.request("want_interface_events", client_index=index, context=2, enable_disable=1, pid=7)
    assert raw.codec.decode("want_interface_events_reply", raw.recv() or b"")["retval"] == 0
    raw.request("create_loopback", client_index=index, context=3)
    assert raw.codec.decode("create_loopback_reply", raw.recv() or b"")["sw_if_index"] == 1
    # In one write: a reply, then the event that request raises, then the next reply.
    raw.sock.sendall(
        _frame(raw, "sw_interface_set_flags", client_index=index, context=4, sw_if_index=1, flags=ADMIN_UP)
        + _frame(raw, "show_version", client_index=index, context=5)
    )
    ids = {i: name for name, i in api_defs_ids().items()}
    got = []
    for _ in range(3):
        payload = raw.recv()
        assert payload is not None
        name = ids[struct.unpack_from(">H", payload)[0]]
        got.append((name, raw.codec.decode(name, payload).get("context")))
    assert [n for n, _ in got] == ["sw_interface_set_flags_reply", "sw_interface_event", "show_version_reply"]
    assert got[0][1] == 4 and got[2][1] == 5


# --------------------------------------------------------------------------------------------------
# As a process
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def sim_process(sock_path: str) -> Iterator[subprocess.Popen[str]]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO)]))
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "calico_vpp_driver.sim", "--socket", sock_path,
            "--handlers", "test_sim_transport:HANDLERS", "--state", "test_sim_transport:StubState",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == f"vpp-sim listening on {sock_path}"
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_process_mode(sim_process: subprocess.Popen[str], sock_path: str, clients: Clients) -> None:
    client = clients()
    assert client.api.show_version().program == "stub"
    assert client.api.create_loopback().sw_if_index == 1

    assert client.api.cli_inband(cmd="sim fault fail-nth create_loopback 1 -11").retval == 0
    assert client.api.create_loopback().retval == -11

    assert client.api.cli_inband(cmd="sim fault restart").retval == 0
    with pytest.raises((VPPIOError, OSError)):
        client.api.show_version()
    _reconnect(client)
    assert client.api.sw_interface_dump() == []

    client.disconnect()
    sim_process.send_signal(signal.SIGTERM)
    assert sim_process.wait(5) == 0
    assert not os.path.exists(sock_path)
