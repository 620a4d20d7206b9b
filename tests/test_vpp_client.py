"""The VPP client (calico_vpp_driver.vpp.client).

Unit tests run the client against ``FakeVpp``, an in-memory VPP behind the client's
``Transport`` interface that answers from its own thread (as vpp_papi's reader thread
delivers replies) and can fail, drop, restart, hang and delay. They cover retval checking and
error naming, the missing-messages error, batch ordering and per-request failures, the
in-flight bound, retry/backoff timing, threads, restarts and generations; the field
normalisation runs on real vpp_papi types built from a small API definition.

Integration tests (``test_sim_*``) run the real client (vpp_papi over the unix socket) against
the simulator (``calico_vpp_driver.sim``), skipped when the simulator is not in the tree.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import os
import pickle
import queue
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from calico_vpp_driver.config import load
from calico_vpp_driver.vpp import client as vc
from calico_vpp_driver.vpp import npol
from calico_vpp_driver.vpp.client import (
    FEATURES,
    SENTINEL_TAG_PREFIX,
    ConnectionInfo,
    Request,
    Service,
    VppClient,
    WireArray,
    backoff_delays,
    features_for_config,
    missing_messages,
    normalize_fields,
)
from calico_vpp_driver.vpp.errors import (
    MissingMessagesError,
    VppApiError,
    VppClientClosed,
    VppConnectionError,
    VppConnectionLost,
    VppEncodeError,
    VppRestartedError,
    VppTimeoutError,
    error_name,
)

pytestmark = pytest.mark.filterwarnings("ignore:open_text is deprecated:DeprecationWarning")  # vpp_papi

ALL_MESSAGES = frozenset(m for table in FEATURES.values() for m in table) | {
    "echo",
    "slow_echo",
    "thing_get",
    "delete_loopback",
}


class FakeVpp:
    """An in-memory VPP: interfaces with tags (for the sentinel), a pool of ipsets, an
    ``echo`` message that answers its ``value`` field, and faults."""

    def __init__(self, messages: frozenset[str] = ALL_MESSAGES) -> None:
        self.messages = set(messages)
        self.lock = threading.Lock()
        self.pid = 4242
        self.up = True
        self.connects: list[float] = []
        self.conns: list[FakeConnection] = []
        self.fail: dict[str, tuple[int, int]] = {}  # message -> (nth call from now, retval)
        self.calls: Counter[str] = Counter()
        self.hang = False  # stop answering (connection stays up)
        self.delay = 0.0
        self.shuffle = False  # answer pipelined requests out of order
        self.max_outstanding = 0
        self.sender_threads: set[int] = set()
        self._reset_state()

    def _reset_state(self) -> None:
        self.interfaces: dict[int, str] = {0: ""}  # sw_if_index -> tag ("local0")
        self.next_if = 1
        self.ipsets: set[int] = set()
        self.next_set = 0

    # -- faults
    def fail_nth(self, message: str, n: int, retval: int) -> None:
        with self.lock:
            self.fail[message] = (self.calls[message] + n, retval)

    def drop(self) -> None:
        for c in list(self.conns):
            c.drop()

    def restart(self, downtime: float = 0.0) -> None:
        with self.lock:
            self._reset_state()
            self.pid += 1
            self.up = downtime == 0
        self.drop()
        if downtime:
            threading.Timer(downtime, lambda: setattr(self, "up", True)).start()

    # -- the API
    def handle(self, name: str, fields: dict[str, Any]) -> tuple[int, dict[str, Any] | list[dict[str, Any]]]:
        with self.lock:
            self.calls[name] += 1
            rule = self.fail.get(name)
            if rule and self.calls[name] == rule[0]:
                del self.fail[name]
                return rule[1], {}
            if name == "control_ping":
                return 0, {"vpe_pid": self.pid}
            if name == "show_version":
                return 0, {"version": "fake-1.0"}
            if name == "sw_interface_dump":
                return 0, [{"sw_if_index": i, "tag": t} for i, t in sorted(self.interfaces.items())]
            if name == "create_loopback":
                i = self.next_if
                self.next_if += 1
                self.interfaces[i] = ""
                return 0, {"sw_if_index": i}
            if name == "delete_loopback":
                if self.interfaces.pop(fields["sw_if_index"], None) is None:
                    return -2, {}
                return 0, {}
            if name == "sw_interface_tag_add_del":
                if fields["sw_if_index"] not in self.interfaces:
                    return -2, {}
                self.interfaces[fields["sw_if_index"]] = fields["tag"] if fields.get("is_add") else ""
                return 0, {}
            if name == "npol_ipset_create":
                self.next_set += 1
                self.ipsets.add(self.next_set)
                return 0, {"set_id": self.next_set}
            if name in ("npol_ipset_delete", "npol_ipset_add_del_members"):
                return (0 if fields.get("set_id") in self.ipsets else -6), {}
            if name in ("echo", "slow_echo"):
                return 0, {"value": fields.get("value")}
            if name == "thing_get":  # a cursor stream: 3 details per round, 7 in all
                cursor = fields.get("cursor", 0)
                items = [{"n": n} for n in range(cursor, min(cursor + 3, 7))]
                more = cursor + 3 < 7
                return (-165 if more else 0), {"cursor": cursor + 3, "details": items}
            return 0, {}


class FakeConnection:
    def __init__(self, vpp: FakeVpp, on_messages: Callable[[list[tuple[str, Any]]], None]) -> None:
        self.vpp = vpp
        self.on_messages = on_messages
        self.q: queue.Queue[tuple[str, int, dict[str, Any]] | None] = queue.Queue()
        self.dead = threading.Event()
        self.outstanding: set[int] = set()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def has_message(self, name: str) -> bool:
        return name in self.vpp.messages or name in ("control_ping",)

    def service(self, name: str) -> Service | None:
        if not self.has_message(name):
            return None
        if name.endswith("_dump"):
            return Service("control_ping_reply", name[:-5] + "_details", True)
        if name == "thing_get":
            return Service("thing_get_reply", "thing_details", False)
        return Service(name + "_reply", None, False)

    def encode(self, name: str, context: int, fields: Mapping[str, Any]) -> bytes:
        if "bogus" in fields:
            raise VppEncodeError(name, "unknown field(s) ['bogus']")
        return pickle.dumps((name, context, dict(fields)))

    def send(self, frames: Sequence[bytes]) -> None:
        if self.dead.is_set():
            raise BrokenPipeError("fake: connection closed")
        self.vpp.sender_threads.add(threading.get_ident())
        for f in frames:
            name, ctx, fields = pickle.loads(f)
            self.outstanding.add(ctx)
            self.vpp.max_outstanding = max(self.vpp.max_outstanding, len(self.outstanding))
            self.q.put((name, ctx, fields))

    def alive(self) -> bool:
        return not self.dead.is_set()

    def close(self, graceful: bool) -> None:
        self.drop()

    def drop(self) -> None:
        self.dead.set()
        self.q.put(None)

    def _emit(self, name: str, **fields: Any) -> None:
        if not self.dead.is_set():
            self.on_messages([(name, SimpleNamespace(**fields))])

    def _serve(self) -> None:
        dumps: dict[int, tuple[str, list[dict[str, Any]]]] = {}
        while not self.dead.is_set():
            item = self.q.get()
            if item is None:
                return
            batch = [item]
            with contextlib.suppress(queue.Empty):
                while (more := self.q.get_nowait()) is not None:
                    batch.append(more)
            if self.vpp.shuffle:  # VPP answers in order; the client must not depend on it
                dumped = [b for b in batch if b[0].endswith("_dump") or b[0] == "control_ping"]
                batch = [b for b in batch if b not in dumped]
                random.shuffle(batch)
                batch += dumped
            for name, ctx, fields in batch:
                while self.vpp.hang and not self.dead.is_set():
                    time.sleep(0.005)
                if self.vpp.delay or name == "slow_echo":
                    time.sleep(self.vpp.delay or 0.05)
                if self.dead.is_set():
                    return
                self._answer(name, ctx, fields, dumps)

    def _answer(
        self, name: str, ctx: int, fields: dict[str, Any], dumps: dict[int, tuple[str, list[dict[str, Any]]]]
    ) -> None:
        if name == "control_ping" and ctx in dumps:
            details_name, details = dumps.pop(ctx)
            for d in details:
                self._emit(details_name, context=ctx, **d)
            self.outstanding.discard(ctx)
            self._emit("control_ping_reply", context=ctx, retval=0, vpe_pid=self.vpp.pid)
            return
        retval, out = self.vpp.handle(name, fields)
        if name.endswith("_dump"):
            dumps[ctx] = (name[:-5] + "_details", out if isinstance(out, list) else [])
            return
        assert isinstance(out, dict)
        if name == "thing_get":
            for d in out.pop("details", []):
                self._emit("thing_details", context=ctx, **d)
        self.outstanding.discard(ctx)
        self._emit(name + "_reply", context=ctx, retval=retval, **out)

    def event(self, name: str, **fields: Any) -> None:
        self._emit(name, **fields)


class FakeTransport:
    def __init__(self, vpp: FakeVpp) -> None:
        self.vpp = vpp

    def connect(
        self,
        socket_path: str,
        client_name: str,
        read_timeout: float,
        on_messages: Callable[[list[tuple[str, Any]]], None],
    ) -> FakeConnection:
        self.vpp.connects.append(time.monotonic())
        if not self.vpp.up:
            raise FileNotFoundError(2, "No such file or directory", socket_path)
        conn = FakeConnection(self.vpp, on_messages)
        self.vpp.conns.append(conn)
        return conn


def make_client(vpp: FakeVpp, **kw: Any) -> VppClient:
    kw.setdefault("features", ("npol", "interfaces"))
    kw.setdefault("connect_timeout", 2.0)
    kw.setdefault("initial_backoff", 0.01)
    kw.setdefault("max_backoff", 0.05)
    kw.setdefault("read_timeout", 1.0)
    kw.setdefault("poll_interval", 0.01)
    return VppClient("/fake/api.sock", transport=FakeTransport(vpp), **kw)


@pytest.fixture
def vpp() -> FakeVpp:
    return FakeVpp()


@pytest.fixture
def client(vpp: FakeVpp) -> Iterator[VppClient]:
    c = make_client(vpp)
    c.start()
    yield c
    c.close()


def wait_for(pred: Callable[[], bool], timeout: float = 3.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


# ------------------------------------------------------------------------------------------
# Errors: retval checking and naming


def test_error_names_follow_vpp() -> None:
    assert error_name(-2) == "INVALID_SW_IF_INDEX"
    assert error_name(-6) == "NO_SUCH_ENTRY"
    assert error_name(-165) == "EAGAIN"
    assert error_name(-9999) == "UNKNOWN_-9999"
    err = VppApiError("npol_ipset_delete", -6, "ipset s:abc")
    assert (err.message, err.retval, err.obj, err.name) == (
        "npol_ipset_delete",
        -6,
        "ipset s:abc",
        "NO_SUCH_ENTRY",
    )
    assert str(err) == (
        "VPP npol_ipset_delete for ipset s:abc failed: retval -6 (NO_SUCH_ENTRY: No such entry)"
    )
    assert pickle.loads(pickle.dumps(err)).retval == -6


def test_call_checks_retval_and_names_message_error_and_object(client: VppClient) -> None:
    set_id = client.call("npol_ipset_create", "ipset s:aaa", type=0).set_id
    assert client.call("npol_ipset_add_del_members", "ipset s:aaa", set_id=set_id, is_add=True).retval == 0
    with pytest.raises(VppApiError) as info:
        client.call("npol_ipset_delete", "ipset s:zzz", set_id=set_id + 100)
    err = info.value
    assert (err.message, err.retval, err.name, err.obj) == (
        "npol_ipset_delete",
        -6,
        "NO_SUCH_ENTRY",
        "ipset s:zzz",
    )
    assert "npol_ipset_delete" in str(err) and "ipset s:zzz" in str(err) and "NO_SUCH_ENTRY" in str(err)
    assert err.reply is not None and err.reply.retval == -6


def test_unknown_retval_is_still_an_error(client: VppClient, vpp: FakeVpp) -> None:
    vpp.fail_nth("echo", 1, -4242)
    with pytest.raises(VppApiError, match=r"retval -4242 \(UNKNOWN_-4242"):
        client.call("echo", "thing", value=1)
    assert client.call("echo", value=2).value == 2


def test_encode_error_names_message_and_object(client: VppClient) -> None:
    with pytest.raises(VppEncodeError) as info:
        client.call("echo", "pod ns/p1", bogus=1)
    assert info.value.message == "echo" and info.value.obj == "pod ns/p1" and "bogus" in str(info.value)
    with pytest.raises(VppEncodeError, match="does not know"):
        client.call("no_such_message", "x")


# ------------------------------------------------------------------------------------------
# Missing messages


def test_missing_messages_one_error_naming_each_and_its_plugin() -> None:
    present = ALL_MESSAGES - set(FEATURES["npol"]) - {"acl_dump", "urpf_update"}
    vpp = FakeVpp(frozenset(present))
    c = make_client(vpp, features=("npol", "acl", "urpf", "interfaces"))
    with pytest.raises(MissingMessagesError) as info:
        c.start()
    err = info.value
    names = [m.message for m in err.missing]
    assert sorted(names) == sorted([*FEATURES["npol"], "acl_dump", "urpf_update"])
    assert len(names) == len(set(names))  # feature_cnat_enable_disable once though two tables name it
    by_name = {m.message: m for m in err.missing}
    assert by_name["npol_ipset_create"].plugin == "npol_plugin.so"
    assert by_name["feature_cnat_enable_disable"].plugin == "cnat_plugin.so"
    assert by_name["acl_dump"].plugin == "acl_plugin.so"
    assert by_name["urpf_update"].plugin == "urpf_plugin.so"
    assert set(err.plugins) == {"npol_plugin.so", "cnat_plugin.so", "acl_plugin.so", "urpf_plugin.so"}
    text = str(err)
    for m in err.missing:
        assert m.message in text and m.plugin in text
    assert len(vpp.connects) == 1  # VPP is up: a missing plugin is not retried
    with pytest.raises(VppClientClosed):
        c.call("echo", value=1)


def test_missing_messages_helper_and_features() -> None:
    assert missing_messages(["acl"], lambda n: n != "acl_del")[0].message == "acl_del"
    with pytest.raises(ValueError, match="unknown VPP feature"):
        missing_messages(["nope"], lambda n: True)
    with pytest.raises(ValueError):
        VppClient(features=("bogus",))
    cfg, _ = load({"VPPPolicyBackend": "npol", "VXLANEnabled": "true"}, environ={})
    assert set(features_for_config(cfg)) == {"interfaces", "fib", "af_packet", "npol", "tunnels"}
    cfg, _ = load({}, environ={"CALICO_VPP_API_SOCKET": "/tmp/x.sock"})
    assert set(features_for_config(cfg)) == {"interfaces", "fib", "af_packet"}
    c = VppClient.from_config(cfg)
    assert c.socket_path == "/tmp/x.sock" and set(c.features) == {"interfaces", "fib", "af_packet"}
    for feature in ("interfaces", "npol", "acl", "cnat", "fib", "tunnels", "urpf", "tap", "af_packet"):
        assert FEATURES[feature], feature


def test_supports_reports_optional_features() -> None:
    vpp = FakeVpp(frozenset(ALL_MESSAGES - {"tap_create_v3"}))
    c = make_client(vpp, features=("interfaces",))
    c.start()
    try:
        assert c.supports("npol") and c.supports("acl") and not c.supports("tap")
        with pytest.raises(ValueError):
            c.supports("bogus")
    finally:
        c.close()


# ------------------------------------------------------------------------------------------
# Batches


def test_batch_keeps_request_order_and_reports_each_failure(client: VppClient, vpp: FakeVpp) -> None:
    vpp.fail_nth("echo", 10, -7)
    vpp.fail_nth("slow_echo", 1, -2)
    reqs: list[Any] = [Request("echo", {"value": i}, f"obj{i}") for i in range(300)]
    reqs[50] = ("echo", {"value": 50, "bogus": 1}, "obj50")  # cannot be encoded
    reqs[60] = ("no_such_message", {}, "obj60")
    reqs[70] = ("slow_echo", {"value": 70}, "obj70")
    reqs[80] = ("echo", {"value": 80})  # a 2-tuple: no object
    results = client.batch(reqs, max_in_flight=16)
    assert len(results) == 300
    failed = {i: r for i, r in enumerate(results) if not r.ok}
    assert sorted(failed) == [9, 50, 60, 70]
    assert isinstance(failed[9].error, VppApiError) and failed[9].error.retval == -7
    assert failed[9].error.obj == "obj9" and failed[9].message == "echo"
    assert isinstance(failed[50].error, VppEncodeError) and failed[50].error.obj == "obj50"
    assert isinstance(failed[60].error, VppEncodeError) and failed[60].obj == "obj60"
    assert isinstance(failed[70].error, VppApiError) and failed[70].error.name == "INVALID_SW_IF_INDEX"
    for i, r in enumerate(results):
        if i not in failed:
            assert r.reply.value == i and r.obj == (None if i == 80 else f"obj{i}")
    with pytest.raises(VppApiError):
        results[9].unwrap()
    assert vpp.max_outstanding <= 16


def test_batch_matches_replies_by_context_not_arrival_order(client: VppClient, vpp: FakeVpp) -> None:
    vpp.shuffle = True
    results = client.batch([("echo", {"value": i}, None) for i in range(500)], max_in_flight=64)
    assert [r.reply.value for r in results] == list(range(500))


def test_in_flight_bound_is_enforced(vpp: FakeVpp) -> None:
    c = make_client(vpp, max_in_flight=8)
    c.start()
    try:
        vpp.max_outstanding = 0
        assert all(r.ok for r in c.batch([("echo", {"value": i}) for i in range(200)], max_in_flight=1000))
        assert 1 < vpp.max_outstanding <= 8
        vpp.max_outstanding = 0
        c.batch([("echo", {"value": i}) for i in range(50)], max_in_flight=1)
        assert vpp.max_outstanding == 1
    finally:
        c.close()


def test_empty_batch(client: VppClient) -> None:
    assert client.batch([]) == []


def test_dumps_old_style_and_cursor_streams(client: VppClient, vpp: FakeVpp) -> None:
    ifs = client.dump("sw_interface_dump")
    assert ifs[0].sw_if_index == 0
    assert any(str(d.tag).startswith(SENTINEL_TAG_PREFIX) for d in ifs)
    assert [d.n for d in client.dump("thing_get")] == list(range(7))  # -165 EAGAIN rounds followed
    with pytest.raises(VppEncodeError, match="not a dump"):
        client.dump("npol_ipset_create", type=0)
    assert vpp.calls["npol_ipset_create"] == 0  # refused before sending
    results = client.batch([("sw_interface_dump", {}), ("echo", {"value": 3})])
    assert isinstance(results[0].reply, list) and results[1].reply.value == 3


# ------------------------------------------------------------------------------------------
# Connecting: retries and backoff


def test_backoff_delays_double_and_cap() -> None:
    it = iter(backoff_delays(0.1, 1.0))
    assert [round(next(it), 3) for _ in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]


def test_start_retries_with_bounded_backoff_then_fails(vpp: FakeVpp) -> None:
    vpp.up = False
    c = make_client(vpp, connect_timeout=0.6, initial_backoff=0.02, max_backoff=0.16)
    t0 = time.monotonic()
    with structlog.testing.capture_logs() as logs, pytest.raises(VppConnectionError) as info:
        c.start()
    elapsed = time.monotonic() - t0
    assert 0.6 <= elapsed < 0.6 + 0.25, elapsed  # bounded by connect_timeout
    gaps = [b - a for a, b in zip(vpp.connects, vpp.connects[1:], strict=False)]
    assert len(vpp.connects) >= 5
    # doubling from 0.02 to the 0.16 cap (never shorter than asked, never much longer)
    for gap, want in zip(gaps, [0.02, 0.04, 0.08, 0.16, 0.16], strict=False):
        assert want * 0.9 <= gap < want + 0.06, (gaps, want)
    assert max(gaps) < 0.16 + 0.06
    assert "No such file or directory" in str(info.value) and "/fake/api.sock" in str(info.value)
    retries = [e for e in logs if e["event"] == "vpp_connect_retry"]
    assert retries and "FileNotFoundError" in retries[0]["error"] and retries[0]["socket"] == "/fake/api.sock"
    assert {"attempt", "retry_in_s", "elapsed_s"} <= set(retries[0])


def test_start_waits_for_vpp_to_come_up(vpp: FakeVpp) -> None:
    vpp.up = False
    threading.Timer(0.15, lambda: setattr(vpp, "up", True)).start()
    c = make_client(vpp)
    info = c.start()
    try:
        assert info.generation == 1 and not info.restarted and len(vpp.connects) > 2
        assert c.call("echo", value=5).value == 5
    finally:
        c.close()


# ------------------------------------------------------------------------------------------
# Threads


def test_concurrent_use_from_many_threads(client: VppClient, vpp: FakeVpp) -> None:
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(150):
                assert client.call("echo", f"t{k}", value=(k, i)).value == (k, i)
            res = client.batch([("echo", {"value": (k, j)}) for j in range(200)], max_in_flight=32)
            assert [r.reply.value for r in res] == [(k, j) for j in range(200)]
            assert client.dump("sw_interface_dump")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(vpp.sender_threads) == 1  # only the owner thread ever wrote to the connection


def test_a_call_is_not_stuck_behind_a_long_batch(client: VppClient, vpp: FakeVpp) -> None:
    vpp.delay = 0.001
    done = threading.Event()

    def run_batch() -> None:
        client.batch([("echo", {"value": i}) for i in range(2000)], max_in_flight=8)
        done.set()

    big = threading.Thread(target=run_batch)
    big.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    assert client.call("echo", value="quick").value == "quick"
    quick = time.monotonic() - t0
    assert not done.is_set(), "the batch should still be running"
    assert quick < 0.5
    big.join(30)
    vpp.delay = 0


def test_caller_timeout(client: VppClient, vpp: FakeVpp) -> None:
    vpp.delay = 0.3
    with pytest.raises(VppTimeoutError, match="echo"):
        client.call("echo", _timeout=0.05, value=1)
    vpp.delay = 0
    assert client.call("echo", value=2).value == 2


# ------------------------------------------------------------------------------------------
# Lost connections, VPP restarts, generations


def test_drop_reconnects_without_a_restart(vpp: FakeVpp) -> None:
    restarts: list[ConnectionInfo] = []
    connected: list[ConnectionInfo] = []
    c = make_client(vpp, on_vpp_restart=restarts.append, on_connected=connected.append)
    info = c.start()
    try:
        vpp.drop()
        wait_for(lambda: len(connected) == 2)
        assert c.call("echo", value=1).value == 1
        assert restarts == [] and c.generation == 1 and c.instance_id == info.instance_id
        assert connected[1].restarted is False and connected[1].instance_id == info.instance_id
        assert c.call("echo", _generation=1, value=2).value == 2
    finally:
        c.close()


def test_restart_fires_callback_and_refuses_stale_generation(vpp: FakeVpp) -> None:
    restarts: list[ConnectionInfo] = []
    seen_in_callback: list[Any] = []
    holder: dict[str, VppClient] = {}

    def on_restart(info: ConnectionInfo) -> None:
        # A call made from the callback (the owner thread) runs inline: no deadlock.
        seen_in_callback.append(holder["c"].call("npol_ipset_create", "ipset after restart", type=0).set_id)
        restarts.append(info)

    c = make_client(vpp, on_vpp_restart=on_restart)
    holder["c"] = c
    first = c.start()
    try:
        old_set = c.call("npol_ipset_create", type=0).set_id
        old_gen = c.generation
        vpp.restart()
        wait_for(lambda: len(restarts) == 1)
        info = restarts[0]
        assert info.restarted and info.generation == old_gen + 1 == c.generation
        assert info.previous_instance_id == first.instance_id != info.instance_id
        assert info.vpe_pid == vpp.pid
        assert seen_in_callback == [1]  # the fresh VPP's first set
        with pytest.raises(VppRestartedError) as err:
            c.call("npol_ipset_delete", "ipset s:old", _generation=old_gen, set_id=old_set)
        assert err.value.expected == old_gen and err.value.current == c.generation
        assert err.value.obj == "ipset s:old"
        res = c.batch([("npol_ipset_delete", {"set_id": old_set})], generation=old_gen)
        assert isinstance(res[0].error, VppRestartedError)
        assert c.call("echo", value=1).value == 1  # current generation
        assert vpp.calls["npol_ipset_delete"] == 0  # nothing stale was ever sent
    finally:
        c.close()


def test_jobs_queued_during_outage_are_checked_against_the_new_generation(vpp: FakeVpp) -> None:
    c = make_client(vpp)
    c.start()
    try:
        vpp.restart(downtime=0.3)
        wait_for(lambda: not c.connected)
        with pytest.raises(VppRestartedError):
            c.call("npol_ipset_delete", set_id=1)  # submitted for generation 1, runs after restart
        assert c.generation == 2
        vpp.drop()  # now only a reconnect: queued work proceeds
        assert c.call("echo", value="after").value == "after"
    finally:
        c.close()


def test_in_flight_requests_fail_as_lost_on_drop(client: VppClient, vpp: FakeVpp) -> None:
    vpp.hang = True
    out: list[Any] = []
    t = threading.Thread(
        target=lambda: out.append(client.batch([("echo", {"value": i}) for i in range(100)]))
    )
    t.start()
    wait_for(lambda: vpp.max_outstanding > 0)
    time.sleep(0.05)
    vpp.drop()
    vpp.hang = False
    t.join(5)
    results = out[0]
    assert all(isinstance(r.error, VppConnectionLost) for r in results)
    assert any(r.error.sent for r in results)
    assert "outcome unknown" in str(next(r.error for r in results if r.error.sent))
    wait_for(lambda: client.connected)
    assert client.call("echo", value=1).value == 1


def test_unsent_part_of_a_batch_continues_after_a_reconnect(client: VppClient, vpp: FakeVpp) -> None:
    vpp.delay = 0.0005
    out: list[Any] = []
    t = threading.Thread(
        target=lambda: out.append(
            client.batch([("echo", {"value": i}) for i in range(1500)], max_in_flight=10)
        )
    )
    t.start()
    wait_for(lambda: vpp.calls["echo"] > 200)
    vpp.drop()
    t.join(20)
    vpp.delay = 0
    results = out[0]
    lost = [i for i, r in enumerate(results) if not r.ok]
    assert all(isinstance(results[i].error, VppConnectionLost) and results[i].error.sent for i in lost)
    assert 0 < len(lost) <= 10  # only what was in flight
    assert all(r.reply.value == i for i, r in enumerate(results) if r.ok)
    assert results[-1].ok  # the tail was sent on the new connection
    assert client.generation == 1


def test_hung_vpp_is_detected_by_read_timeout(vpp: FakeVpp) -> None:
    c = make_client(vpp, read_timeout=0.2)
    c.start()
    try:
        vpp.hang = True
        t0 = time.monotonic()
        with structlog.testing.capture_logs() as logs, pytest.raises(VppConnectionLost) as info:
            c.call("echo", "obj-h", value=1)
        assert 0.15 < time.monotonic() - t0 < 1.0
        assert info.value.sent and info.value.obj == "obj-h" and "no message from VPP" in str(info.value)
        assert any(e["event"] == "vpp_connection_lost" for e in logs)
        vpp.hang = False
        assert c.call("echo", value=2).value == 2  # reconnected
        assert c.generation == 1
    finally:
        c.close()


def test_unavailable_vpp_fails_fast_then_recovers(vpp: FakeVpp) -> None:
    restarts: list[ConnectionInfo] = []
    c = make_client(vpp, connect_timeout=0.2, on_vpp_restart=restarts.append)
    c.start()
    try:
        vpp.restart(downtime=1.0)
        time.sleep(0.4)  # past the retry window
        t0 = time.monotonic()
        with pytest.raises(VppConnectionError, match="not usable"):
            c.call("echo", value=1)
        assert time.monotonic() - t0 < 0.2
        wait_for(lambda: len(restarts) == 1, timeout=3)
        assert c.call("echo", value=2).value == 2
    finally:
        c.close()


def test_events_go_to_on_event(vpp: FakeVpp) -> None:
    events: list[tuple[str, Any]] = []
    c = make_client(vpp, on_event=lambda n, m: events.append((n, m)))
    c.start()
    try:
        vpp.conns[-1].event("sw_interface_event", sw_if_index=3, flags=1)
        wait_for(lambda: bool(events))
        assert events[0][0] == "sw_interface_event" and events[0][1].sw_if_index == 3
    finally:
        c.close()


def test_close_fails_pending_and_refuses_new(vpp: FakeVpp) -> None:
    c = make_client(vpp)
    c.start()
    vpp.hang = True
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(c.batch([("echo", {"value": i}) for i in range(10)])))
    t.start()
    wait_for(lambda: vpp.max_outstanding > 0)
    c.close()
    t.join(5)
    assert all(isinstance(r.error, VppClientClosed) for r in out[0])
    with pytest.raises(VppClientClosed):
        c.call("echo", value=1)
    c.close()  # idempotent
    vpp.hang = False


# ------------------------------------------------------------------------------------------
# The restart sentinel


def test_sentinel_is_created_once_and_adopted_by_the_next_client(vpp: FakeVpp) -> None:
    c1 = make_client(vpp)
    i1 = c1.start()
    c1.close()
    tagged = [t for t in vpp.interfaces.values() if t.startswith(SENTINEL_TAG_PREFIX)]
    assert tagged == [SENTINEL_TAG_PREFIX + i1.instance_id]
    assert len(tagged[0]) < 64
    c2 = make_client(vpp)
    i2 = c2.start()  # a restarted driver, same VPP: same instance, nothing re-created
    c2.close()
    assert i2.instance_id == i1.instance_id and vpp.calls["create_loopback"] == 1
    vpp.restart()
    c3 = make_client(vpp)
    assert c3.start().instance_id != i1.instance_id
    c3.close()


def test_without_sentinel_the_vpe_pid_identifies_vpp(vpp: FakeVpp) -> None:
    restarts: list[ConnectionInfo] = []
    c = make_client(vpp, sentinel=False, on_vpp_restart=restarts.append)
    assert c.start().instance_id == f"vpe-pid:{vpp.pid}"
    try:
        vpp.restart()
        wait_for(lambda: len(restarts) == 1)
        assert vpp.calls["create_loopback"] == 0
    finally:
        c.close()


# ------------------------------------------------------------------------------------------
# Field normalisation on real vpp_papi types

_API = {
    "types": [
        ["t_label", ["u8", "is_uniform"], ["u32", "label"]],
        ["t_path", ["u32", "sw_if_index"], ["u8", "n_labels"], ["vl_api_t_label_t", "label_stack", 4]],
        [
            "t_route",
            ["vl_api_prefix_t", "prefix"],
            ["u8", "n_paths"],
            ["vl_api_t_path_t", "paths", 0, "n_paths"],
        ],
        ["t_member", ["vl_api_t_member_val_t", "val"]],
    ],
    "unions": [["t_member_val", ["vl_api_address_t", "address"], ["vl_api_prefix_t", "prefix"]]],
    "messages": [
        [
            "t_route_add",
            ["u16", "_vl_msg_id"],
            ["u32", "client_index"],
            ["u32", "context"],
            ["bool", "is_add"],
            ["vl_api_t_route_t", "route"],
            {"crc": "0x11111111"},
        ],
        [
            "t_members",
            ["u16", "_vl_msg_id"],
            ["u32", "client_index"],
            ["u32", "context"],
            ["u32", "len"],
            ["vl_api_t_member_t", "members", 0, "len"],
            ["u32", "ids", 3],
            {"crc": "0x22222222"},
        ],
    ],
}


@pytest.fixture(scope="module")
def msgdefs() -> dict[str, Any]:
    from vpp_papi import VPPApiClient
    from vpp_papi.vpp_papi import VPPApiJSONFiles  # the client hides vpp_papi; the test builds types

    VPPApiClient(bootstrapapi=True)  # registers memclnt's types (address, prefix...) like a connect
    ip_types = {
        "enums": [["address_family", ["ADDRESS_IP4", 0], ["ADDRESS_IP6", 1], {"enumtype": "u8"}]],
        "unions": [["address_union", ["vl_api_ip4_address_t", "ip4"], ["vl_api_ip6_address_t", "ip6"]]],
        "types": [
            ["address", ["vl_api_address_family_t", "af"], ["vl_api_address_union_t", "un"]],
            ["prefix", ["vl_api_address_t", "address"], ["u8", "len"]],
        ],
        "aliases": {"ip4_address": {"type": "u8", "length": 4}, "ip6_address": {"type": "u8", "length": 16}},
    }
    VPPApiJSONFiles.process_json_str(json.dumps(ip_types))
    messages, _ = VPPApiJSONFiles.process_json_str(json.dumps(_API))
    return dict(messages)


def _pack(msgdef: Any, fields: dict[str, Any]) -> bytes:
    kw = normalize_fields(msgdef, fields)
    kw.update(_vl_msg_id=1, client_index=0, context=1)
    return bytes(msgdef.pack(kw))


def test_normalize_pads_fixed_arrays_and_fills_counts(msgdefs: dict[str, Any]) -> None:
    route_add = msgdefs["t_route_add"]
    fields: dict[str, Any] = {
        "is_add": True,
        "route": {
            "prefix": ipaddress.ip_network("10.1.0.0/16"),
            "paths": [{"sw_if_index": 3}, {"label_stack": []}],
        },
    }
    out = normalize_fields(route_add, fields)
    assert out["route"]["n_paths"] == 2
    assert [len(p["label_stack"]) for p in out["route"]["paths"]] == [4, 4]
    assert "n_paths" not in fields["route"]  # the caller's dict is not modified
    data = _pack(route_add, fields)
    decoded, _ = route_add.unpack(data)
    assert decoded.route.prefix == ipaddress.ip_network("10.1.0.0/16")
    assert [p.sw_if_index for p in decoded.route.paths] == [3, 0]
    # vpp_papi alone cannot pack this (the label_stack trap): the normalisation is what fixes it
    with pytest.raises(Exception):  # noqa: B017
        route_add.pack({**fields, "_vl_msg_id": 1, "context": 1, "client_index": 0})
    # nothing given at all packs too (nested fixed arrays defaulted)
    _pack(route_add, {})


def test_normalize_accepts_ipaddress_objects_in_unions(msgdefs: dict[str, Any]) -> None:
    members = msgdefs["t_members"]
    fields = {
        "members": [
            {"val": {"address": ipaddress.ip_address("10.0.0.1")}},
            {"val": {"prefix": ipaddress.ip_network("fd00::/64")}},
        ],
    }
    decoded, _ = members.unpack(_pack(members, fields))
    assert decoded.len == 2 and decoded.ids == [0, 0, 0]
    assert decoded.members[0].val.address == ipaddress.ip_address("10.0.0.1")


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"is_add": True, "rout": {}}, r"unknown field\(s\) \['rout'\]"),
        (
            {"route": {"paths": [{"sw_if_indx": 1}]}},
            r"^route\.paths\[0\]: unknown field\(s\) \['sw_if_indx'\]",
        ),
        (
            {"route": {"paths": [{"label_stack": [{}] * 5}]}},
            r"^route\.paths\[0\]\.label_stack: at most 4 elements",
        ),
        ({"context": 5}, "set by the client"),
        ({"route": {"prefix": 42}}, "expected a mapping"),
    ],
)
def test_normalize_rejects_what_vpp_papi_would_silently_pack(
    msgdefs: dict[str, Any], fields: dict[str, Any], match: str
) -> None:
    with pytest.raises(vc._Bad, match=match):
        normalize_fields(msgdefs["t_route_add"], fields)


def test_normalize_rejects_bad_unions(msgdefs: dict[str, Any]) -> None:
    members = msgdefs["t_members"]
    ip = ipaddress.ip_address("10.0.0.1")
    with pytest.raises(vc._Bad, match="exactly one of"):
        normalize_fields(members, {"members": [{"val": {"address": ip, "prefix": ip}}]})
    with pytest.raises(vc._Bad, match="unknown union member 'addr'"):
        normalize_fields(members, {"members": [{"val": {"addr": ip}}]})


# ------------------------------------------------------------------------------------------
# Integration: the real client against the simulator over its unix socket

SIM_PRESENT = importlib.util.find_spec("calico_vpp_driver.sim.server") is not None and (
    importlib.util.find_spec("calico_vpp_driver.sim.handlers") is not None
)
needs_sim = pytest.mark.skipif(
    not SIM_PRESENT, reason="the VPP simulator (calico_vpp_driver.sim) is not here"
)

ALL_FEATURES = ("interfaces", "npol", "acl", "cnat", "fib", "tunnels", "urpf", "tap", "af_packet")


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Any]:
    if not SIM_PRESENT:
        pytest.skip("the VPP simulator (calico_vpp_driver.sim) is not here")
    from calico_vpp_driver.sim.server import SimServer

    server = SimServer(str(tmp_path / "api.sock"))
    server.start()
    yield server
    server.stop()
    assert server.errors == []  # no protocol error, no handler failure, nothing unimplemented


def sim_client(sim: Any, **kw: Any) -> VppClient:
    kw.setdefault("features", ALL_FEATURES)
    kw.setdefault("connect_timeout", 10.0)
    kw.setdefault("initial_backoff", 0.02)
    kw.setdefault("max_backoff", 0.2)
    kw.setdefault("read_timeout", 3.0)
    return VppClient(sim.socket_path, **kw)


@contextlib.contextmanager
def started(c: VppClient) -> Iterator[VppClient]:
    c.start()
    try:
        yield c
    finally:
        c.close()


def _ipset_members(n: int, base: int = 0) -> list[dict[str, Any]]:
    return [{"val": {"address": ipaddress.IPv4Address(0x0A000000 + base + i)}} for i in range(n)]


@needs_sim
def test_sim_connect_with_every_feature(sim: Any) -> None:
    with started(sim_client(sim)) as c:
        info = c.info
        assert info is not None and info.generation == 1 and info.version
        for feature in ALL_FEATURES:
            assert c.supports(feature), feature
        assert c.call("show_version").version == info.version
        assert c.call("control_ping").vpe_pid == info.vpe_pid


@needs_sim
def test_sim_round_trips(sim: Any) -> None:
    with started(sim_client(sim)) as c:
        set_id = c.call("npol_ipset_create", "ipset s:a", type=0).set_id
        c.call(
            "npol_ipset_add_del_members", "ipset s:a", set_id=set_id, is_add=True, members=_ipset_members(3)
        )
        rule_id = c.call(
            "npol_rule_create",
            "rule r1",
            rule={
                "action": 0,
                "matches": [
                    {"is_src": True, "type": 3, "data": {"set_id": {"set_id": set_id}}},
                    {"is_src": False, "type": 0, "data": {"cidr": ipaddress.ip_network("10.9.0.0/16")}},
                ],
            },
        ).rule_id
        policy_id = c.call(
            "npol_policy_create", "policy p1", rules=[{"is_inbound": True, "rule_id": rule_id}]
        ).policy_id
        lo = c.call("create_loopback").sw_if_index
        c.call(
            "npol_configure_policies",
            "pod p1",
            sw_if_index=lo,
            num_rx_policies=1,
            policy_ids=[policy_id],
        )
        ifs = c.dump("sw_interface_dump")
        assert lo in [d.sw_if_index for d in ifs]
        c.call(
            "ip_route_add_del",
            "route 10.20.0.0/24",
            is_add=True,
            route={
                "prefix": ipaddress.ip_network("10.20.0.0/24"),
                "paths": [
                    {
                        "sw_if_index": lo,
                        "proto": 0,
                        "nh": {"address": {"ip4": ipaddress.ip_address("10.20.0.1")}},
                    }
                ],
            },
        )
        routes = c.dump("ip_route_dump", table={"table_id": 0, "is_ip6": False})
        assert ipaddress.ip_network("10.20.0.0/24") in [r.route.prefix for r in routes]
        acl = c.call(
            "acl_add_replace",
            "acl a1",
            acl_index=0xFFFFFFFF,
            tag="a1",
            r=[{"is_permit": 1, "src_prefix": ipaddress.ip_network("10.0.0.0/8"), "proto": 6}],
        ).acl_index
        acls = c.dump("acl_dump", acl_index=acl)
        assert acls and acls[0].tag == "a1" and acls[0].count == 1
        with pytest.raises(VppApiError) as err:
            c.call("npol_ipset_delete", "ipset s:missing", set_id=set_id + 1000)
        assert err.value.obj == "ipset s:missing" and err.value.retval < 0
        with pytest.raises(VppApiError) as err2:
            c.call("delete_loopback", "loop x", sw_if_index=9999)
        assert err2.value.name == "INVALID_SW_IF_INDEX"


@needs_sim
def test_sim_batch(sim: Any) -> None:
    with started(sim_client(sim)) as c:
        set_id = c.call("npol_ipset_create", type=0).set_id
        reqs = [
            Request(
                "npol_ipset_add_del_members",
                {"set_id": set_id, "is_add": True, "members": _ipset_members(1, i)},
                f"m{i}",
            )
            for i in range(2000)
        ]
        reqs[700] = Request("npol_ipset_add_del_members", {"set_id": set_id + 99, "is_add": True}, "bad set")
        results = c.batch(reqs, max_in_flight=128)
        assert [i for i, r in enumerate(results) if not r.ok] == [700]
        assert isinstance(results[700].error, VppApiError) and results[700].error.obj == "bad set"
        assert all(r.reply.retval == 0 for i, r in enumerate(results) if i != 700)


@needs_sim
def test_sim_concurrent_threads(sim: Any) -> None:
    with started(sim_client(sim)) as c:
        errors: list[BaseException] = []

        def worker(k: int) -> None:
            try:
                for _ in range(30):
                    s = c.call("npol_ipset_create", f"t{k}", type=0).set_id
                    c.call("npol_ipset_add_del_members", set_id=s, is_add=True, members=_ipset_members(2, k))
                    c.call("npol_ipset_delete", set_id=s)
                res = c.batch([("npol_ipset_create", {"type": 0}) for _ in range(100)], max_in_flight=16)
                ids = [r.unwrap().set_id for r in res]
                assert len(set(ids)) == 100
                assert c.dump("sw_interface_dump")
            except BaseException as exc:  # pragma: no cover
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors


@needs_sim
def test_sim_fault_fail_nth_keeps_the_rest_of_a_batch(sim: Any) -> None:
    with started(sim_client(sim)) as c:
        set_id = c.call("npol_ipset_create", type=0).set_id
        sim.fail_nth("npol_ipset_add_del_members", 37, -7)
        reqs = [
            Request(
                "npol_ipset_add_del_members",
                {"set_id": set_id, "is_add": True, "members": _ipset_members(1, i)},
                f"member {i}",
            )
            for i in range(100)
        ]
        results = c.batch(reqs, max_in_flight=32)
        bad = [i for i, r in enumerate(results) if not r.ok]
        assert bad == [36]
        err = results[36].error
        assert isinstance(err, VppApiError)
        assert (err.message, err.retval, err.name, err.obj) == (
            "npol_ipset_add_del_members",
            -7,
            "INVALID_VALUE",
            "member 36",
        )
        assert "npol_ipset_add_del_members" in str(err) and "member 36" in str(err)


@needs_sim
def test_sim_fault_drop_reconnects(sim: Any) -> None:
    connected: list[ConnectionInfo] = []
    restarts: list[ConnectionInfo] = []
    with started(sim_client(sim, on_connected=connected.append, on_vpp_restart=restarts.append)) as c:
        set_id = c.call("npol_ipset_create", type=0).set_id
        sim.drop_connections()
        wait_for(lambda: len(connected) == 2, timeout=10)
        c.call("npol_ipset_add_del_members", set_id=set_id, is_add=True, members=_ipset_members(1))
        assert restarts == [] and c.generation == 1


@needs_sim
def test_sim_fault_drop_during_a_batch(sim: Any) -> None:
    with started(sim_client(sim)) as c:
        set_id = c.call("npol_ipset_create", type=0).set_id
        reqs = [
            Request(
                "npol_ipset_add_del_members",
                {"set_id": set_id, "is_add": True, "members": _ipset_members(1, i)},
            )
            for i in range(5000)
        ]
        out: list[Any] = []
        t = threading.Thread(target=lambda: out.append(c.batch(reqs, max_in_flight=32)))
        t.start()
        wait_for(lambda: sim.call_counts().get("npol_ipset_add_del_members", 0) > 500, timeout=20)
        sim.drop_connections()
        t.join(60)
        results = out[0]
        bad = [r for r in results if not r.ok]
        assert all(isinstance(r.error, VppConnectionLost) and r.error.sent for r in bad)
        assert len(bad) <= 32 and results[-1].ok
        assert c.generation == 1


@needs_sim
def test_sim_fault_restart_fires_on_vpp_restart(sim: Any) -> None:
    restarts: list[ConnectionInfo] = []
    with started(sim_client(sim, on_vpp_restart=restarts.append)) as c:
        first = c.instance_id
        set_id = c.call("npol_ipset_create", type=0).set_id
        gen = c.generation
        sim.restart()
        wait_for(lambda: len(restarts) == 1, timeout=10)
        assert restarts[0].previous_instance_id == first and restarts[0].instance_id != first
        assert c.generation == gen + 1
        with pytest.raises(VppRestartedError):
            c.call("npol_ipset_delete", "ipset s:a", _generation=gen, set_id=set_id)
        assert c.call("npol_ipset_create", type=0).set_id >= 0


@needs_sim
def test_sim_fault_restart_with_downtime(sim: Any) -> None:
    restarts: list[ConnectionInfo] = []
    with started(sim_client(sim, on_vpp_restart=restarts.append)) as c:
        gen = c.generation
        sim.restart(downtime=0.5)
        t0 = time.monotonic()
        wait_for(lambda: len(restarts) == 1, timeout=10)
        assert time.monotonic() - t0 >= 0.4  # connects failed while the socket was gone
        assert c.generation == gen + 1
        assert c.call("npol_ipset_create", type=0).set_id >= 0


@needs_sim
def test_sim_events_reach_on_event(sim: Any) -> None:
    events: list[tuple[str, Any]] = []
    with started(sim_client(sim, on_event=lambda n, m: events.append((n, m)))) as c:
        c.call("want_interface_events", enable_disable=True, pid=os.getpid())
        lo = c.call("create_loopback").sw_if_index
        c.call("sw_interface_set_flags", sw_if_index=lo, flags=1)
        wait_for(lambda: any(m.sw_if_index == lo for n, m in events if n == "sw_interface_event"), timeout=5)


@needs_sim
def test_sim_fault_delay_still_correct(sim: Any) -> None:
    with started(sim_client(sim)) as c:
        sim.delay_replies(0.2)
        t0 = time.monotonic()
        ids = [r.unwrap().set_id for r in c.batch([("npol_ipset_create", {"type": 0}) for _ in range(50)])]
        elapsed = time.monotonic() - t0
        assert len(set(ids)) == 50 and 0.2 <= elapsed < 2.0
        assert c.call("show_version").version
        sim.delay_replies(0)


@needs_sim
def test_sim_serializer_encode(sim: Any) -> None:
    with started(sim_client(sim)) as c:
        frame = c.encode("npol_ipset_add_del_members", set_id=1, is_add=True, members=_ipset_members(1))
        assert len(frame) > 16
        with pytest.raises(VppEncodeError, match="unknown field"):
            c.encode("npol_ipset_add_del_members", set_idd=1)
        big_rules = [
            {"is_permit": 1, "src_prefix": ipaddress.ip_network(f"10.{i // 256}.{i % 256}.0/24"), "proto": 6}
            for i in range(1000)
        ]
        assert len(c.encode("acl_add_replace", acl_index=0xFFFFFFFF, r=big_rules)) > 1000 * 30


# --------------------------------------------------------------------------------------------
# The compiled packer: the same bytes as vpp_papi's pack, or vpp_papi packs


def _has_none(value: Any) -> bool:
    if isinstance(value, dict):
        return any(v is None or _has_none(v) for v in value.values())
    if isinstance(value, list):
        return any(v is None or _has_none(v) for v in value)
    return False


def _variant(value: Any, rng: random.Random) -> Any:
    """``value`` with fields dropped or None, and the forms vpp_papi converts itself (ipaddress
    objects, strings) in place of some addresses, prefixes and ip4 addresses."""
    if isinstance(value, list):
        return [_variant(v, rng) for v in value]
    if not isinstance(value, dict):
        if isinstance(value, bytes) and len(value) == 4 and rng.random() < 0.3:
            return ipaddress.IPv4Address(value)
        return value
    out: dict[str, Any] = {}
    for k, v in value.items():
        r = rng.random()
        if r < 0.08:
            continue
        out[k] = None if r < 0.12 else _variant(v, rng)
    un = out.get("un")
    if set(out) == {"af", "un"} and isinstance(un, dict) and rng.random() < 0.6:
        if isinstance(un.get("ip4"), bytes) and len(un["ip4"]) == 4:
            ip4 = ipaddress.IPv4Address(un["ip4"])
            return ip4 if rng.random() < 0.7 else str(ip4)
        if isinstance(un.get("ip6"), bytes) and len(un["ip6"]) == 16:
            return ipaddress.IPv6Address(un["ip6"])
    address = out.get("address")
    if set(out) == {"address", "len"} and isinstance(address, ipaddress.IPv4Address) and rng.random() < 0.5:
        return ipaddress.IPv4Network((int(address) & ~0xFF, 24))
    return out


@needs_sim
def test_compiled_packer_packs_as_vpp_papi() -> None:
    from test_sim_defs import DEFS, _sample_struct  # the simulator's definitions and samples
    from vpp_papi.vpp_papi import VPPApiJSONFiles  # the client hides vpp_papi; the test builds types

    messages, _ = VPPApiJSONFiles.process_json_array_str(DEFS.api_json())
    compiled = 0
    for name, msgdef in messages.items():
        rng = random.Random(name)
        for i in range(16):
            sample = _sample_struct(DEFS.messages[name].fields, rng, 0)
            if i % 2:
                sample = _variant(sample, rng)
            try:
                theirs: bytes | None = bytes(msgdef.pack(dict(sample)))
            except Exception:
                theirs = None
            try:
                ours: bytes | None = vc._value_packer(msgdef)(dict(sample))
            except Exception:
                ours = None  # left to vpp_papi
            if ours is not None:
                assert ours == theirs, (name, sample)  # never packs what vpp_papi refuses either
                compiled += 1
            elif theirs is not None:
                assert _has_none(sample), (name, sample)  # only a None (its default) is left to it
            if theirs is None:
                with pytest.raises(Exception):  # noqa: B017  # vpp_papi's error, whatever it is
                    vc._fast_pack(msgdef, dict(sample))
            else:
                assert vc._fast_pack(msgdef, dict(sample)) == theirs
    assert compiled > len(messages) * 10


@needs_sim
def test_compiled_packer_takes_the_common_requests(sim: Any) -> None:
    with started(sim_client(sim)) as c:
        conn = c._conn
        assert isinstance(conn, vc.PapiConnection)
        requests = {
            "npol_ipset_add_del_members": {"set_id": 1, "is_add": True, "members": _ipset_members(3)},
            "acl_add_replace": {
                "acl_index": 0xFFFFFFFF,
                "tag": "x",
                "r": [{"is_permit": 1, "src_prefix": ipaddress.ip_network("10.1.0.0/16"), "proto": 6}],
            },
            "sw_interface_set_flags": {"sw_if_index": 1, "flags": 1},
            "ip_route_add_del": {
                "is_add": True,
                "route": {"prefix": ipaddress.ip_network("10.2.0.0/24"), "paths": [{"sw_if_index": 1}]},
            },
        }
        for name, fields in requests.items():
            msgdef = conn._defs[name]
            kwargs = normalize_fields(msgdef, fields)
            kwargs.update(_vl_msg_id=1, client_index=0, context=1)
            assert vc._value_packer(msgdef)(kwargs) == msgdef.pack(kwargs), name  # no fallback


_NPOL_MEMBERS = st.one_of(
    st.tuples(st.just(4), st.binary(min_size=4, max_size=4), st.integers(0, 32)),
    st.tuples(st.just(6), st.binary(min_size=16, max_size=16), st.integers(0, 128)),
    st.tuples(
        st.one_of(
            st.tuples(st.just(4), st.binary(min_size=4, max_size=4)),
            st.tuples(st.just(6), st.binary(min_size=16, max_size=16)),
        ),
        st.sampled_from([6, 17, 132]),
        st.integers(0, 65535),
    ).map(lambda t: (t[0][0], t[0][1], t[1], t[2])),
)


def _papi_messages() -> dict[str, Any]:
    from test_sim_defs import DEFS  # the simulator's definitions
    from vpp_papi.vpp_papi import VPPApiJSONFiles  # the client hides vpp_papi; the test builds types

    messages, _ = VPPApiJSONFiles.process_json_array_str(DEFS.api_json())
    return dict(messages)


@needs_sim
@settings(max_examples=300, deadline=None)
@given(members=st.lists(_NPOL_MEMBERS, max_size=12), is_add=st.booleans())
def test_npol_members_in_wire_form_are_vpp_papis_bytes(members: list[Any], is_add: bool) -> None:
    """`npol.members_wire` replaces vpp_papi packing `npol.member_api` dicts: the message must
    come out byte for byte the same."""
    msgdef = _papi_messages()["npol_ipset_add_del_members"]
    header = {"_vl_msg_id": 1, "client_index": 0, "context": 9}
    as_dicts = {"set_id": 7, "is_add": is_add, "members": [npol.member_api(m) for m in members]}
    theirs = bytes(msgdef.pack({**header, **as_dicts, "len": len(members)}))
    wire = WireArray(npol.MEMBER_WIRE_TYPE, len(members), npol.members_wire(members))
    kwargs = normalize_fields(msgdef, {"set_id": 7, "is_add": is_add, "members": wire})
    assert kwargs["len"] == len(members)
    assert vc._fast_pack(msgdef, {**kwargs, **header}) == theirs


@needs_sim
@settings(max_examples=100, deadline=None)
@given(rule_ids=st.lists(st.integers(0, 2**32 - 1), max_size=20), is_inbound=st.booleans())
def test_npol_policy_items_in_wire_form_are_vpp_papis_bytes(rule_ids: list[int], is_inbound: bool) -> None:
    msgdef = _papi_messages()["npol_policy_update"]
    header = {"_vl_msg_id": 1, "client_index": 0, "context": 9, "policy_id": 3}
    items = [{"is_inbound": is_inbound, "rule_id": r} for r in rule_ids]
    theirs = bytes(msgdef.pack({**header, "num_items": len(items), "rules": items}))
    wire = WireArray(npol.POLICY_ITEM_WIRE_TYPE, len(rule_ids), npol.policy_items_wire(is_inbound, rule_ids))
    kwargs = normalize_fields(msgdef, {"policy_id": 3, "rules": wire})
    assert vc._fast_pack(msgdef, {**kwargs, **header}) == theirs


@needs_sim
def test_wire_form_arrays_of_the_wrong_shape_are_refused(sim: Any) -> None:
    member = (4, bytes([10, 0, 0, 1]), 32)
    good = WireArray(npol.MEMBER_WIRE_TYPE, 1, npol.members_wire([member]))
    bad = {
        "another type": WireArray("vl_api_address_t", 1, good.data),
        "a partial element": WireArray(npol.MEMBER_WIRE_TYPE, 1, good.data[:-1]),
        "a count the bytes do not hold": WireArray(npol.MEMBER_WIRE_TYPE, 2, good.data),
    }
    with started(sim_client(sim)) as c:
        conn = c._conn
        assert isinstance(conn, vc.PapiConnection)
        assert conn.encode("npol_ipset_add_del_members", 1, {"set_id": 1, "is_add": True, "members": good})
        for what, wire in bad.items():
            with pytest.raises(VppEncodeError, match="members"):
                conn.encode("npol_ipset_add_del_members", 1, {"set_id": 1, "members": wire})
            assert what
        with pytest.raises(VppEncodeError, match="count field says 3"):
            conn.encode("npol_ipset_add_del_members", 1, {"set_id": 1, "len": 3, "members": good})
        # a message the client cannot take it in
        with pytest.raises(VppEncodeError):
            conn.encode("sw_interface_set_flags", 1, {"sw_if_index": 1, "flags": good})


def test_no_other_module_imports_vpp_papi() -> None:
    root = Path(vc.__file__).resolve().parent.parent
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if p != Path(vc.__file__).resolve()
        and re.search(r"^\s*(import|from)\s+vpp_papi", p.read_text(), re.MULTILINE)
    ]
    assert offenders == []


if os.environ.get("VPP_CLIENT_TEST_DEBUG"):  # pragma: no cover
    structlog.configure(processors=[structlog.dev.ConsoleRenderer()])
