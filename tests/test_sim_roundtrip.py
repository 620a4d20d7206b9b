"""Every request message the simulator serves, round-tripped through the driver's real client.

The simulator runs in-process (``SimServer`` with its real state and handlers) on a unix socket in a
temporary directory; every test restarts it (a fresh ``VppState``, as a restarted VPP) and talks to it
with a new :class:`VppClient` (vpp_papi underneath, ``bootstrapapi=True``), exactly as the driver does.

* :data:`ROUNDTRIPS` holds one realistic request per served message, and checks its effect the way
  the driver (or an operator) would see it on a real VPP: through the matching dump, a follow-up
  call, ``cli_inband show ...`` or an event delivered to ``on_event``.
* :data:`BAD_REQUESTS` holds, per message, one deliberately wrong request for which the simulator
  models VPP's error: the client must raise its typed :class:`VppApiError` naming the message, VPP's
  error and the driver object (``obj=``), in ``call`` and in a ``batch`` (where the other requests
  still succeed). :data:`NO_MODELLED_ERROR` lists the messages that cannot fail that way.
* The coverage tests derive the served messages from the simulator itself (``HANDLERS`` plus every
  request of ``defs`` the server answers on its own): a message added to either without an entry in
  these tables fails them. The requests of ``defs`` the simulator does not serve are listed in
  :data:`NOT_SERVED` and checked to answer UNIMPLEMENTED; none of them may be one the client's
  ``FEATURES`` require.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Any, NamedTuple

import pytest

from calico_vpp_driver.sim.defs import api_defs
from calico_vpp_driver.sim.handlers import DUMPS, HANDLERS, REPLIES
from calico_vpp_driver.sim.handlers import VERSION as SIM_VERSION
from calico_vpp_driver.sim.server import SimServer
from calico_vpp_driver.vpp.client import FEATURES, Request, VppClient
from calico_vpp_driver.vpp.errors import VppApiError, error_name

U32_MAX = 0xFFFFFFFF
ADMIN_UP = 1  # IF_STATUS_API_FLAG_ADMIN_UP
LINK_UP = 2  # IF_STATUS_API_FLAG_LINK_UP
PATH_LOCAL = 1  # FIB_API_PATH_TYPE_LOCAL
PATH_DROP = 2  # FIB_API_PATH_TYPE_DROP
TCP, UDP, ICMP = 6, 17, 1
NPOL_IP, NPOL_IP_AND_PORT, NPOL_NET = 0, 1, 2  # npol_ipset_type
NPOL_CIDR, NPOL_PORT_RANGE, NPOL_PORT_IP_SET, NPOL_IP_SET = 0, 1, 2, 3  # npol_entry_type
NPOL_ALLOW, NPOL_DENY = 0, 1  # npol_rule_action
NPOL_FILTER_L4_PROTO = 3
CNAT_POLICY_K8S = 2
CNAT_POLICY_POD = 2  # cnat_snat_policy_table
CNAT_SESSION_IS_RETURN = 16

DEFS = api_defs()

# --------------------------------------------------------------------------------------------------
# The simulator, the client, and helpers to look at VPP's state through the API
# --------------------------------------------------------------------------------------------------


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def swap16(value: int) -> int:
    return ((value & 0xFF) << 8) | (value >> 8)


@dataclass
class Env:
    c: VppClient
    sim: SimServer
    events: list[tuple[str, Any]]

    # -- interfaces

    def iface(self, sw_if_index: int) -> Any:
        """The sw_interface_details of one interface, None if VPP has none."""
        found = self.c.dump("sw_interface_dump", sw_if_index=sw_if_index)
        assert len(found) <= 1
        return found[0] if found else None

    def ifaces(self) -> dict[int, Any]:
        return {d.sw_if_index: d for d in self.c.dump("sw_interface_dump")}

    def loopback(self, addr: str | None = None, *, up: bool = True) -> int:
        sw = int(self.c.call("create_loopback", "test loopback").sw_if_index)
        if up:
            self.c.call("sw_interface_set_flags", sw_if_index=sw, flags=ADMIN_UP)
        if addr is not None:
            self.c.call("sw_interface_add_del_address", sw_if_index=sw, is_add=True, prefix=ip_iface(addr))
        return sw

    def tap(self, name: str = "cali0", **fields: Any) -> int:
        reply = self.c.call("tap_create_v3", host_if_name_set=True, host_if_name=name, **fields)
        return int(reply.sw_if_index)

    # -- FIB

    def routes(self, table_id: int = 0, is_ip6: bool = False) -> dict[Any, Any]:
        """Prefix -> vl_api_ip_route_t of every entry of a table."""
        dump = self.c.dump("ip_route_dump", table={"table_id": table_id, "is_ip6": is_ip6})
        return {d.route.prefix: d.route for d in dump}

    def tables(self) -> dict[tuple[bool, int], str]:
        return {(bool(d.table.is_ip6), d.table.table_id): d.table.name for d in self.c.dump("ip_table_dump")}

    # -- CLI

    def cli(self, cmd: str) -> str:
        reply = self.c.call("cli_inband", cmd=cmd)
        assert reply.retval == 0
        return str(reply.reply)

    def probe(self, args: str) -> tuple[str, str]:
        """The simulator's ``probe`` CLI: (verdict, trace)."""
        out = self.cli(f"probe {args}")
        verdict, _, trace = out.partition("\n")
        return verdict, trace


def ip_iface(text: str) -> IPv4Interface | IPv6Interface:
    return IPv4Interface(text) if ":" not in text else IPv6Interface(text)


def route_path(sw_if_index: int, nh: str | None = None, **extra: Any) -> dict[str, Any]:
    path: dict[str, Any] = {"sw_if_index": sw_if_index, "proto": 0, **extra}
    if nh is not None:
        path["nh"] = {"address": {"ip4": IPv4Address(nh)}}
    return path


def route(prefix: str, *paths: dict[str, Any], table_id: int = 0) -> dict[str, Any]:
    return {"table_id": table_id, "prefix": ip_network(prefix), "paths": list(paths)}


def path_summary(r: Any) -> list[tuple[int, int, str]]:
    """(type, sw_if_index, next hop) of each path of a vl_api_ip_route_t."""
    return [(int(p.type), p.sw_if_index, str(p.nh.address.ip4)) for p in r.paths]


def tbl(table_id: int = 0, is_ip6: bool = False) -> dict[str, Any]:
    return {"table_id": table_id, "is_ip6": is_ip6}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer.
    short = tempfile.mkdtemp(prefix="vpprt-")
    server = SimServer(os.path.join(short, "api.sock")).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def env(sim: SimServer) -> Iterator[Env]:
    """A freshly started VPP (the simulator restarted with a new state) and a new client."""
    sim.restart()
    sim.clear_faults()
    sim.errors.clear()
    events: list[tuple[str, Any]] = []
    client = VppClient(
        sim.socket_path,
        features=tuple(FEATURES),
        client_name="roundtrip-test",
        connect_timeout=10.0,
        initial_backoff=0.02,
        max_backoff=0.2,
        read_timeout=5.0,
        on_event=lambda name, msg: events.append((name, msg)),
    )
    client.start()
    try:
        yield Env(client, sim, events)
    finally:
        client.close()
    # No protocol error, no handler failure, no unimplemented message on the way.
    assert sim.errors == []


# --------------------------------------------------------------------------------------------------
# One realistic request per served message, and its effect
# --------------------------------------------------------------------------------------------------

ROUNDTRIPS: dict[str, Callable[[Env], None]] = {}


def roundtrip(message: str) -> Callable[[Callable[[Env], None]], Callable[[Env], None]]:
    def register(fn: Callable[[Env], None]) -> Callable[[Env], None]:
        assert message not in ROUNDTRIPS, message
        ROUNDTRIPS[message] = fn
        return fn

    return register


# -- memclnt / vpe / vlib (partly answered by the server itself) -----------------------------------


@roundtrip("sockclnt_create")
def _sockclnt_create(e: Env) -> None:
    # The client's connect is a sockclnt_create; the server knows it by the name it gave, and the
    # message table it answered lets the client find every message of its features.
    assert "roundtrip-test" in e.sim.client_names()
    for feature in FEATURES:
        assert e.c.supports(feature), feature
    assert e.c.info is not None and e.c.info.generation == 1


@roundtrip("sockclnt_delete")
def _sockclnt_delete(e: Env) -> None:
    before = e.sim.client_count
    assert before == 1
    e.c.close()  # sends sockclnt_delete; VPP answers and closes the socket
    wait_for(lambda: e.sim.client_count == 0)


@roundtrip("get_api_json")
def _get_api_json(e: Env) -> None:
    reply = e.c.call("get_api_json")
    assert reply.retval == 0
    doc = json.loads(reply.json)
    assert [m["module"] for m in doc] == [m.name for m in DEFS.modules]
    npol = next(m for m in doc if m["module"] == "npol")
    assert "npol_rule_create" in [msg[0] for msg in npol["messages"]]


@roundtrip("api_versions")
def _api_versions(e: Env) -> None:
    reply = e.c.call("api_versions")
    assert reply.retval == 0 and reply.count == len(DEFS.modules)
    got = {v.name: (v.major, v.minor, v.patch) for v in reply.api_versions}
    for mod in DEFS.modules:
        assert got[f"{mod.name}.api"] == tuple(int(x) for x in mod.version.split("."))


@roundtrip("memclnt_keepalive")
def _memclnt_keepalive(e: Env) -> None:
    assert e.c.call("memclnt_keepalive").retval == 0
    assert e.c.connected


@roundtrip("control_ping")
def _control_ping(e: Env) -> None:
    reply = e.c.call("control_ping")
    assert reply.retval == 0
    assert e.c.info is not None and reply.vpe_pid == e.c.info.vpe_pid


@roundtrip("show_version")
def _show_version(e: Env) -> None:
    reply = e.c.call("show_version")
    assert reply.retval == 0
    assert (reply.program, reply.version) == ("vpe", SIM_VERSION)
    assert e.c.info is not None and e.c.info.version == SIM_VERSION
    assert SIM_VERSION in e.cli("show version")


@roundtrip("cli_inband")
def _cli_inband(e: Env) -> None:
    out = e.cli("show interface")
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["Name", "Idx", "State"]
    assert lines[1].split()[:3] == ["local0", "0", "down"]
    lo = e.loopback()
    assert f"loop1 {lo} up".split() == e.cli("sh int loop1").splitlines()[1].split()[:3]
    # An unknown command is VPP's "unknown input" text with retval 0.
    assert e.cli("show frobnicate") == "unknown input `show frobnicate'\n"


# -- interfaces -------------------------------------------------------------------------------------


@roundtrip("sw_interface_dump")
def _sw_interface_dump(e: Env) -> None:
    tap = e.tap("eth-pod", tag="ns/pod")
    everything = e.ifaces()
    local0 = everything[0]
    assert (local0.interface_name, local0.interface_dev_type, int(local0.flags)) == ("local0", "local", 0)
    assert everything[tap].interface_name == "tap0"
    # sw_if_index 0 means "all" as ~0 does; another index selects one (none if it does not exist).
    assert set(d.sw_if_index for d in e.c.dump("sw_interface_dump", sw_if_index=0)) == set(everything)
    assert [d.sw_if_index for d in e.c.dump("sw_interface_dump", sw_if_index=tap)] == [tap]
    assert e.c.dump("sw_interface_dump", sw_if_index=4000) == []
    # The name filter is a case-insensitive substring.
    found = e.c.dump("sw_interface_dump", name_filter_valid=True, name_filter="TAP")
    assert [(d.sw_if_index, d.tag) for d in found] == [(tap, "ns/pod")]


@roundtrip("sw_interface_set_flags")
def _sw_interface_set_flags(e: Env) -> None:
    lo = e.loopback(up=False)
    tap = e.tap()
    assert int(e.iface(lo).flags) == 0 and int(e.iface(tap).flags) == LINK_UP
    for sw in (lo, tap):
        e.c.call("sw_interface_set_flags", f"if {sw}", sw_if_index=sw, flags=ADMIN_UP)
        assert int(e.iface(sw).flags) == ADMIN_UP | LINK_UP  # the link follows for these devices
    assert e.cli("show interface loop1").splitlines()[1].split()[2] == "up"
    e.c.call("sw_interface_set_flags", sw_if_index=lo, flags=0)
    assert int(e.iface(lo).flags) == 0


@roundtrip("sw_interface_set_mtu")
def _sw_interface_set_mtu(e: Env) -> None:
    lo = e.loopback()
    before = e.iface(lo)
    assert list(before.mtu) == [before.link_mtu, 0, 0, 0]  # never set: the hardware MTU as L3
    e.c.call("sw_interface_set_mtu", "tunnel", sw_if_index=lo, mtu=[1400, 0, 0, 0])
    after = e.iface(lo)
    assert list(after.mtu) == [1400, 0, 0, 0] and after.link_mtu == before.link_mtu
    assert "1400/0/0/0" in e.cli(f"show interface {after.interface_name}").splitlines()[1]


@roundtrip("sw_interface_tag_add_del")
def _sw_interface_tag_add_del(e: Env) -> None:
    lo = e.loopback()
    tag = "calico/ns/web-7b5d9c-x2x9l/" + "t" * 36  # 63 characters: the most a string[64] carries
    e.c.call("sw_interface_tag_add_del", "pod web", is_add=True, sw_if_index=lo, tag=tag)
    assert e.iface(lo).tag == tag
    e.c.call("sw_interface_tag_add_del", "pod web", is_add=False, sw_if_index=lo)
    assert e.iface(lo).tag == ""


@roundtrip("sw_interface_add_del_address")
def _sw_interface_add_del_address(e: Env) -> None:
    lo = e.loopback()  # admin up: the address's FIB entries exist
    e.c.call(
        "sw_interface_add_del_address",
        "node addr",
        sw_if_index=lo,
        is_add=True,
        prefix=ip_iface("10.1.1.1/24"),
    )
    routes = e.routes()
    assert path_summary(routes[IPv4Network("10.1.1.0/24")]) == [(0, lo, "0.0.0.0")]  # attached
    assert [(t, sw) for t, sw, _ in path_summary(routes[IPv4Network("10.1.1.1/32")])] == [(PATH_LOCAL, lo)]
    for drop in ("10.1.1.0/32", "10.1.1.255/32"):
        assert [t for t, _, _ in path_summary(routes[IPv4Network(drop)])] == [PATH_DROP]
    assert "  L3 10.1.1.1/24\n" in e.cli("show interface address")
    # A second address of the same subnet on the same interface is fine; an IPv6 one too.
    e.c.call("sw_interface_add_del_address", sw_if_index=lo, is_add=True, prefix=ip_iface("10.1.1.2/24"))
    e.c.call("sw_interface_add_del_address", sw_if_index=lo, is_add=True, prefix=ip_iface("fd00:1::1/64"))
    assert IPv6Network("fd00:1::/64") in e.routes(is_ip6=True)
    e.c.call("sw_interface_add_del_address", sw_if_index=lo, is_add=False, prefix=ip_iface("10.1.1.1/24"))
    e.c.call("sw_interface_add_del_address", sw_if_index=lo, is_add=False, prefix=ip_iface("10.1.1.2/24"))
    assert IPv4Network("10.1.1.0/24") not in e.routes()
    e.c.call("sw_interface_add_del_address", sw_if_index=lo, del_all=True, prefix=ip_iface("::/0"))
    assert IPv6Network("fd00:1::/64") not in e.routes(is_ip6=True)
    assert "L3" not in e.cli("show interface address")


@roundtrip("sw_interface_set_table")
def _sw_interface_set_table(e: Env) -> None:
    e.c.call("ip_table_add_del", is_add=True, table={"table_id": 1013, "is_ip6": False, "name": "pods"})
    e.c.call("ip_table_add_del", is_add=True, table={"table_id": 1013, "is_ip6": True})
    tap = e.tap()
    e.c.call("sw_interface_set_table", "pod vrf", sw_if_index=tap, is_ipv6=False, vrf_id=1013)
    e.c.call("sw_interface_set_table", "pod vrf", sw_if_index=tap, is_ipv6=True, vrf_id=1013)
    assert e.c.call("sw_interface_get_table", sw_if_index=tap, is_ipv6=False).vrf_id == 1013
    assert e.c.call("sw_interface_get_table", sw_if_index=tap, is_ipv6=True).vrf_id == 1013
    # Its addresses now live in table 1013.
    e.c.call("sw_interface_set_flags", sw_if_index=tap, flags=ADMIN_UP)
    e.c.call("sw_interface_add_del_address", sw_if_index=tap, is_add=True, prefix=ip_iface("172.16.0.1/30"))
    assert IPv4Network("172.16.0.0/30") in e.routes(1013)
    assert IPv4Network("172.16.0.0/30") not in e.routes(0)


@roundtrip("ip_address_dump")
def _ip_address_dump(e: Env) -> None:
    tap = e.tap()
    loop = e.loopback()
    for text in ("172.16.0.1/30", "172.16.1.1/24", "fd20::1/64"):
        e.c.call("sw_interface_add_del_address", sw_if_index=tap, is_add=True, prefix=ip_iface(text))
    e.c.call("sw_interface_set_unnumbered", sw_if_index=tap, unnumbered_sw_if_index=loop, is_add=True)
    got4 = e.c.dump("ip_address_dump", sw_if_index=tap, is_ipv6=False)
    assert [(d.sw_if_index, str(d.prefix)) for d in got4] == [(tap, "172.16.0.1/30"), (tap, "172.16.1.1/24")]
    got6 = e.c.dump("ip_address_dump", sw_if_index=tap, is_ipv6=True)
    assert [str(d.prefix) for d in got6] == ["fd20::1/64"]
    # Borrowed (unnumbered) addresses are not the interface's own; an unknown index: nothing.
    assert e.c.dump("ip_address_dump", sw_if_index=loop, is_ipv6=False) == []
    assert e.c.dump("ip_address_dump", sw_if_index=9999, is_ipv6=False) == []


@roundtrip("sw_interface_get_table")
def _sw_interface_get_table(e: Env) -> None:
    tap = e.tap()
    reply = e.c.call("sw_interface_get_table", sw_if_index=tap, is_ipv6=False)
    assert (reply.retval, reply.vrf_id) == (0, 0)
    e.c.call("ip_table_add_del", is_add=True, table=tbl(7))
    e.c.call("sw_interface_set_table", sw_if_index=tap, is_ipv6=False, vrf_id=7)
    assert e.c.call("sw_interface_get_table", sw_if_index=tap, is_ipv6=False).vrf_id == 7
    assert e.c.call("sw_interface_get_table", sw_if_index=tap, is_ipv6=True).vrf_id == 0


@roundtrip("sw_interface_set_unnumbered")
def _sw_interface_set_unnumbered(e: Env) -> None:
    owner = e.loopback("10.0.100.1/32")
    tap = e.tap("cali-unnum")
    e.c.call("sw_interface_set_flags", sw_if_index=tap, flags=ADMIN_UP)
    # The names are backwards: unnumbered_sw_if_index borrows sw_if_index's addresses.
    e.c.call(
        "sw_interface_set_unnumbered", "pod tap", sw_if_index=owner, unnumbered_sw_if_index=tap, is_add=True
    )
    out = e.cli("show interface address")
    assert "tap0 (up):\n  unnumbered, use loop1\n" in out
    # ip4 is now enabled on the tap: a packet it receives is routed (not ip4-not-enabled).
    e.c.call("ip_route_add_del", is_add=True, route=route("10.0.200.0/24", route_path(owner, "10.0.100.2")))
    verdict, trace = e.probe("from 10.0.50.1 to 10.0.200.9 proto udp dport 53 rx tap0 new-flow")
    assert verdict == "allow", trace
    e.c.call("sw_interface_set_unnumbered", sw_if_index=owner, unnumbered_sw_if_index=tap, is_add=False)
    assert "unnumbered" not in e.cli("show interface address")
    verdict, trace = e.probe("from 10.0.50.1 to 10.0.200.9 proto udp dport 53 rx tap0 new-flow")
    assert verdict == "deny" and "ip4-not-enabled" in trace


@roundtrip("want_interface_events")
def _want_interface_events(e: Env) -> None:
    pid = os.getpid()
    assert e.c.call("want_interface_events", enable_disable=True, pid=pid).retval == 0
    lo = e.loopback(up=False)
    e.c.call("sw_interface_set_flags", sw_if_index=lo, flags=ADMIN_UP)

    def of(sw: int) -> list[tuple[int, bool]]:
        return [
            (int(m.flags), bool(m.deleted))
            for n, m in e.events
            if n == "sw_interface_event" and m.sw_if_index == sw
        ]

    wait_for(lambda: (ADMIN_UP | LINK_UP, False) in of(lo))
    assert of(lo) == [(0, False), (ADMIN_UP | LINK_UP, False)]  # creation, then admin up
    assert all(m.pid == pid for n, m in e.events)
    e.c.call("delete_loopback", sw_if_index=lo)
    wait_for(lambda: (0, True) in of(lo))
    # Unsubscribed: no more events.
    assert e.c.call("want_interface_events", enable_disable=False, pid=pid).retval == 0
    seen = len(e.events)
    tap = e.tap()
    e.c.call("sw_interface_set_flags", sw_if_index=tap, flags=ADMIN_UP)
    e.c.call("control_ping")  # anything sent before its reply has arrived
    assert len(e.events) == seen


@roundtrip("create_loopback")
def _create_loopback(e: Env) -> None:
    # loop0 is the client's sentinel (tagged cvd-vpp-instance:...).
    sentinel = e.c.dump("sw_interface_dump", name_filter_valid=True, name_filter="loop0")
    assert sentinel[0].tag.startswith("cvd-vpp-instance:")
    lo = e.c.call("create_loopback", "host loopback").sw_if_index
    d = e.iface(lo)
    assert (d.interface_name, d.interface_dev_type, int(d.flags)) == ("loop1", "Loopback", 0)
    assert str(d.l2_address) == "de:ad:00:00:00:01"
    lo2 = e.c.call("create_loopback", mac_address="02:42:ac:11:00:02").sw_if_index
    assert (e.iface(lo2).interface_name, str(e.iface(lo2).l2_address)) == ("loop2", "02:42:ac:11:00:02")


@roundtrip("delete_loopback")
def _delete_loopback(e: Env) -> None:
    lo = e.loopback()
    e.c.call("sw_interface_tag_add_del", is_add=True, sw_if_index=lo, tag="gone soon")
    e.c.call("delete_loopback", "host loopback", sw_if_index=lo)
    assert e.iface(lo) is None
    # The freed slot and instance are the next ones handed out, without the old tag.
    again = e.c.call("create_loopback").sw_if_index
    assert again == lo and (e.iface(again).interface_name, e.iface(again).tag) == ("loop1", "")


@roundtrip("tap_create_v3")
def _tap_create_v3(e: Env) -> None:
    reply = e.c.call(
        "tap_create_v3",
        "pod default/web-1",
        id=7,
        use_random_mac=False,
        mac_address="02:00:00:00:00:07",
        host_if_name_set=True,
        host_if_name="cali7a8b9c0d1e2",
        host_mtu_set=True,
        host_mtu_size=1450,
        host_namespace_set=True,
        host_namespace="/var/run/netns/cni-1234",
        host_ip4_prefix_set=True,
        host_ip4_prefix=IPv4Interface("10.244.1.7/32"),
        tap_flags=1 | 2,  # GSO | CSUM_OFFLOAD
        num_rx_queues=1,
        tag="default/web-1",
    )
    assert reply.retval == 0
    d = e.iface(reply.sw_if_index)
    assert (d.interface_name, d.interface_dev_type, d.tag) == ("tap7", "tap", "default/web-1")
    assert (d.link_mtu, d.mtu[0]) == (1450, 1450)
    assert int(d.flags) == LINK_UP  # link up from creation, admin down
    assert str(d.l2_address) == "02:00:00:00:00:07"
    # TUN mode: tunN with the lowest free id, no MAC.
    tun = e.c.call("tap_create_v3", host_if_name_set=True, host_if_name="calitun", tap_flags=16).sw_if_index
    assert (e.iface(tun).interface_name, str(e.iface(tun).l2_address)) == ("tun0", "00:00:00:00:00:00")


@roundtrip("tap_delete_v2")
def _tap_delete_v2(e: Env) -> None:
    tap = e.tap("cali-del", id=3, tag="ns/gone")
    e.c.call("tap_delete_v2", "pod ns/gone", sw_if_index=tap)
    assert e.iface(tap) is None
    assert e.c.dump("sw_interface_dump", name_filter_valid=True, name_filter="tap3") == []
    # The id is free again.
    assert e.iface(e.tap("cali-new", id=3)).interface_name == "tap3"


@roundtrip("af_packet_create_v3")
def _af_packet_create_v3(e: Env) -> None:
    reply = e.c.call(
        "af_packet_create_v3",
        "uplink eth0",
        mode=1,  # ETHERNET
        use_random_hw_addr=False,
        hw_addr="52:54:00:12:34:56",
        host_if_name="eth0",
        rx_frame_size=2048,
        tx_frame_size=2048,
        rx_frames_per_block=32,
        tx_frames_per_block=32,
        flags=1,  # QDISC_BYPASS
    )
    assert reply.retval == 0
    d = e.iface(reply.sw_if_index)
    assert (d.interface_name, d.interface_dev_type, int(d.flags)) == ("host-eth0", "af-packet", LINK_UP)
    assert str(d.l2_address) == "52:54:00:12:34:56"


@roundtrip("af_packet_delete")
def _af_packet_delete(e: Env) -> None:
    sw = e.c.call("af_packet_create_v3", mode=1, use_random_hw_addr=True, host_if_name="eth1").sw_if_index
    e.c.call("af_packet_delete", "uplink eth1", host_if_name="eth1")
    assert e.iface(sw) is None


@roundtrip("vxlan_add_del_tunnel_v3")
def _vxlan_add_del_tunnel_v3(e: Env) -> None:
    tunnel = {
        "src_address": IPv4Address("192.168.0.10"),
        "dst_address": IPv4Address("192.168.0.11"),
        "vni": 4096,
        "dst_port": 4789,
        "mcast_sw_if_index": U32_MAX,
        "decap_next_index": U32_MAX,
        "is_l3": True,
    }
    reply = e.c.call("vxlan_add_del_tunnel_v3", "node b vxlan", is_add=True, instance=11, **tunnel)
    assert reply.retval == 0
    d = e.iface(reply.sw_if_index)
    assert (d.interface_name, d.interface_dev_type, int(d.flags)) == ("vxlan_tunnel11", "VXLAN", 0)
    # Deleting answers the deleted interface.
    gone = e.c.call("vxlan_add_del_tunnel_v3", "node b vxlan", is_add=False, **tunnel)
    assert gone.sw_if_index == reply.sw_if_index and e.iface(reply.sw_if_index) is None


@roundtrip("ipip_add_tunnel")
def _ipip_add_tunnel(e: Env) -> None:
    reply = e.c.call(
        "ipip_add_tunnel",
        "node b ipip",
        tunnel={
            "instance": U32_MAX,
            "src": IPv4Address("192.168.0.10"),
            "dst": IPv4Address("192.168.0.12"),
            "table_id": 0,
            "flags": 0,
            "mode": 0,  # P2P
        },
    )
    assert reply.retval == 0
    d = e.iface(reply.sw_if_index)
    assert (d.interface_name, d.interface_dev_type) == ("ipip0", "IPIP tunnel device")
    # The tunnel carries routes like any interface.
    e.c.call("sw_interface_set_flags", sw_if_index=reply.sw_if_index, flags=ADMIN_UP)
    assert int(e.iface(reply.sw_if_index).flags) == ADMIN_UP | LINK_UP
    e.c.call("ip_route_add_del", is_add=True, route=route("10.244.2.0/24", route_path(reply.sw_if_index)))
    assert path_summary(e.routes()[IPv4Network("10.244.2.0/24")]) == [(0, reply.sw_if_index, "0.0.0.0")]


@roundtrip("ipip_del_tunnel")
def _ipip_del_tunnel(e: Env) -> None:
    sw = e.c.call(
        "ipip_add_tunnel",
        tunnel={"instance": 5, "src": IPv4Address("10.0.0.1"), "dst": IPv4Address("10.0.0.2")},
    ).sw_if_index
    assert e.iface(sw).interface_name == "ipip5"
    e.c.call("ipip_del_tunnel", "node c ipip", sw_if_index=sw)
    assert e.iface(sw) is None


@roundtrip("add_node_next")
def _add_node_next(e: Env) -> None:
    # An L3 VXLAN tunnel decapsulates to ip4-input: the arc from vxlan4-input is added on
    # demand (vlib_node_add_next), once, after the two static ones (vxlan.h).
    first = e.c.call("add_node_next", "vxlan l3", node_name="vxlan4-input", next_name="ip4-input")
    again = e.c.call("add_node_next", "vxlan l3", node_name="vxlan4-input", next_name="ip4-input")
    assert (first.retval, first.next_index, again.next_index) == (0, 2, 2)
    tunnel = {
        "src_address": IPv4Address("192.168.0.10"),
        "dst_address": IPv4Address("192.168.0.11"),
        "vni": 1,
        "mcast_sw_if_index": U32_MAX,
        "is_l3": True,
    }
    reply = e.c.call("vxlan_add_del_tunnel_v3", "node b vxlan", decap_next_index=first.next_index, **tunnel)
    assert reply.retval == 0
    with pytest.raises(VppApiError) as err:  # no such arc: vxlan_decap_next_is_valid
        e.c.call("vxlan_add_del_tunnel_v3", decap_next_index=3, **{**tunnel, "vni": 2})
    assert err.value.retval == -76


@roundtrip("urpf_update")
def _urpf_update(e: Env) -> None:
    rx = e.loopback("10.0.1.1/24")
    e.loopback("10.0.2.1/24")
    probe = "from 198.51.100.7 to 10.0.2.9 proto tcp sport 40000 dport 80 rx loop1 new-flow"
    # 198.51.100.7 has no route (the default route drops): only uRPF refuses it.
    assert e.probe(probe)[0] == "allow"
    e.c.call("urpf_update", "uplink urpf", is_input=True, mode=1, af=0, sw_if_index=rx)  # LOOSE, IPv4
    verdict, trace = e.probe(probe)
    assert verdict == "deny" and "uRPF loose on loop1" in trace
    assert e.probe(probe.replace("198.51.100.7", "10.0.1.7"))[0] == "allow"
    e.c.call("urpf_update", "uplink urpf", is_input=True, mode=0, af=0, sw_if_index=rx)  # OFF
    assert e.probe(probe)[0] == "allow"


@roundtrip("sw_interface_ip6_enable_disable")
def _sw_interface_ip6_enable_disable(e: Env) -> None:
    # IPv6 leaves an Ethernet af_packet interface only with its IPv6 link (neighbour discovery).
    veth = e.c.call(
        "af_packet_create_v3",
        mode=1,
        use_random_hw_addr=False,
        hw_addr="ee:ee:ee:ee:ee:ee",
        host_if_name="v1",
    ).sw_if_index
    e.c.call("sw_interface_set_flags", sw_if_index=veth, flags=ADMIN_UP)
    rx = e.loopback("fd00:1::1/64")
    path = {"sw_if_index": veth, "proto": 1}
    e.c.call(
        "ip_route_add_del",
        is_add=True,
        route={"table_id": 0, "prefix": ip_network("fd00:9::5/128"), "paths": [path]},
    )
    probe = f"from fd00:1::7 to fd00:9::5 proto tcp sport 40000 dport 80 rx {rx} new-flow"
    verdict, trace = e.probe(probe)
    assert verdict == "deny" and "ip6-discover-neighbor on host-v1" in trace
    e.c.call("sw_interface_ip6_enable_disable", "pod v1", sw_if_index=veth, enable=True)
    assert e.probe(probe)[0] == "allow"
    with e.sim.lock:
        itf = e.sim.state.interface(veth)
        assert itf is not None and e.sim.state.ip6_link_local(itf) == IPv6Address("fe80::ecee:eeff:feee:eeee")
    with pytest.raises(VppApiError) as err:  # the link exists (a lock is taken all the same)
        e.c.call("sw_interface_ip6_enable_disable", sw_if_index=veth, enable=True)
    assert err.value.retval == -81
    e.c.call("sw_interface_ip6_enable_disable", sw_if_index=veth, enable=False)
    assert e.probe(probe)[0] == "allow"
    e.c.call("sw_interface_ip6_enable_disable", sw_if_index=veth, enable=False)
    assert e.probe(probe)[0] == "deny"
    with pytest.raises(VppApiError) as err:
        e.c.call("sw_interface_ip6_enable_disable", sw_if_index=veth, enable=False)
    assert err.value.retval == -62


# -- FIB ----------------------------------------------------------------------------------------------


@roundtrip("ip_table_add_del")
def _ip_table_add_del(e: Env) -> None:
    e.c.call(
        "ip_table_add_del",
        "vrf pods",
        is_add=True,
        table={"table_id": 1013, "is_ip6": False, "name": "pods4"},
    )
    e.c.call("ip_table_add_del", "vrf pods", is_add=True, table={"table_id": 1013, "is_ip6": True})
    tables = e.tables()
    assert tables[(False, 1013)] == "pods4" and tables[(True, 1013)] == "ipv6-VRF:1013"
    assert IPv4Network("0.0.0.0/0") in e.routes(1013)  # a new table has VPP's special entries
    e.c.call("ip_table_add_del", "vrf pods", is_add=False, table=tbl(1013))
    assert (False, 1013) not in e.tables() and (True, 1013) in e.tables()
    e.c.call("ip_table_add_del", is_add=False, table=tbl(0))  # table 0 cannot go
    assert (False, 0) in e.tables()


@roundtrip("ip_table_dump")
def _ip_table_dump(e: Env) -> None:
    assert e.tables() == {(False, 0): "ipv4-VRF:0", (True, 0): "ipv6-VRF:0"}
    e.c.call("ip_table_add_del", is_add=True, table={"table_id": 42, "is_ip6": False, "name": "svc"})
    assert e.tables()[(False, 42)] == "svc"


@roundtrip("ip_route_add_del")
def _ip_route_add_del(e: Env) -> None:
    up = e.loopback("192.168.0.10/24")
    r = e.c.call(
        "ip_route_add_del",
        "route 10.244.3.0/24",
        is_add=True,
        is_multipath=False,
        route=route("10.244.3.0/24", route_path(up, "192.168.0.13", weight=1, preference=0)),
    )
    assert r.retval == 0 and r.stats_index != U32_MAX
    got = e.routes()[IPv4Network("10.244.3.0/24")]
    assert got.stats_index == r.stats_index and got.table_id == 0 and got.n_paths == 1
    assert path_summary(got) == [(0, up, "192.168.0.13")]
    assert (got.paths[0].weight, got.paths[0].preference) == (1, 0)
    # Not multipath: add replaces the paths (same stats index); multipath adds one.
    again = e.c.call(
        "ip_route_add_del", is_add=True, route=route("10.244.3.0/24", route_path(up, "192.168.0.14"))
    )
    assert again.stats_index == r.stats_index
    e.c.call(
        "ip_route_add_del",
        is_add=True,
        is_multipath=True,
        route=route("10.244.3.0/24", route_path(up, "192.168.0.15")),
    )
    assert path_summary(e.routes()[IPv4Network("10.244.3.0/24")]) == [
        (0, up, "192.168.0.14"),
        (0, up, "192.168.0.15"),
    ]
    # IPv6 through the same interface; deleting works, deleting again answers 0.
    e.c.call(
        "ip_route_add_del",
        is_add=True,
        route={
            "prefix": IPv6Network("fd00:244:3::/64"),
            "paths": [{"sw_if_index": up, "proto": 1, "nh": {"address": {"ip6": IPv6Address("fd00::13")}}}],
        },
    )
    r6 = e.routes(is_ip6=True)[IPv6Network("fd00:244:3::/64")]
    assert (r6.paths[0].sw_if_index, r6.paths[0].nh.address.ip6) == (up, IPv6Address("fd00::13"))
    for _ in range(2):
        gone = e.c.call("ip_route_add_del", is_add=False, route=route("10.244.3.0/24"))
        assert (gone.retval, gone.stats_index) == (0, U32_MAX)
    assert IPv4Network("10.244.3.0/24") not in e.routes()


@roundtrip("ip_route_dump")
def _ip_route_dump(e: Env) -> None:
    routes = e.routes()
    # VPP's special entries of a fresh table, ordered by prefix length then address.
    assert list(routes) == [
        IPv4Network(p)
        for p in ("0.0.0.0/0", "224.0.0.0/4", "240.0.0.0/4", "0.0.0.0/32", "255.255.255.255/32")
    ]
    assert all(path_summary(r)[0][:2] == (PATH_DROP, U32_MAX) for r in routes.values())
    assert list(e.routes(is_ip6=True)) == [IPv6Network("::/0"), IPv6Network("fe80::/10")]
    # A recursive route (sw_if_index ~0) keeps its next hop and table.
    e.c.call("ip_route_add_del", is_add=True, route=route("10.96.0.0/12", route_path(U32_MAX, "192.168.0.1")))
    assert path_summary(e.routes()[IPv4Network("10.96.0.0/12")]) == [(0, U32_MAX, "192.168.0.1")]
    assert e.c.dump("ip_route_dump", table=tbl(99)) == []  # no such table: nothing


def _replace_setup(e: Env) -> int:
    e.c.call("ip_table_add_del", is_add=True, table=tbl(1013))
    lo = e.loopback()
    for prefix, nh in (("10.244.1.0/24", "192.168.0.11"), ("10.244.2.0/24", "192.168.0.12")):
        e.c.call("ip_route_add_del", is_add=True, route=route(prefix, route_path(lo, nh), table_id=1013))
    return lo


@roundtrip("ip_table_replace_begin")
def _ip_table_replace_begin(e: Env) -> None:
    lo = _replace_setup(e)
    e.c.call("ip_table_replace_begin", "resync vrf 1013", table=tbl(1013))
    # Marking deletes nothing.
    assert {IPv4Network("10.244.1.0/24"), IPv4Network("10.244.2.0/24")} <= set(e.routes(1013))
    e.c.call(
        "ip_route_add_del",
        is_add=True,
        route=route("10.244.2.0/24", route_path(lo, "192.168.0.12"), table_id=1013),
    )
    e.c.call("ip_table_replace_end", table=tbl(1013))
    assert IPv4Network("10.244.1.0/24") not in e.routes(1013)


@roundtrip("ip_table_replace_end")
def _ip_table_replace_end(e: Env) -> None:
    lo = _replace_setup(e)
    e.c.call("ip_table_replace_begin", table=tbl(1013))
    e.c.call(
        "ip_route_add_del",
        is_add=True,
        is_multipath=True,
        route=route("10.244.1.0/24", route_path(lo, "192.168.0.11"), table_id=1013),
    )
    e.c.call(
        "ip_route_add_del",
        is_add=True,
        route=route("10.244.3.0/24", route_path(lo, "192.168.0.13"), table_id=1013),
    )
    e.c.call("ip_table_replace_end", "resync vrf 1013", table=tbl(1013))
    routes = e.routes(1013)
    # The unrefreshed route is swept; refreshed (plain or multipath) and new ones stay, and so do
    # the special entries (another source).
    assert IPv4Network("10.244.2.0/24") not in routes
    assert path_summary(routes[IPv4Network("10.244.1.0/24")]) == [(0, lo, "192.168.0.11")]
    assert path_summary(routes[IPv4Network("10.244.3.0/24")]) == [(0, lo, "192.168.0.13")]
    assert IPv4Network("0.0.0.0/0") in routes


@roundtrip("ip_table_flush")
def _ip_table_flush(e: Env) -> None:
    lo = e.loopback("192.168.0.10/24")
    e.c.call("ip_route_add_del", is_add=True, route=route("10.244.9.0/24", route_path(lo, "192.168.0.19")))
    e.c.call("ip_table_flush", "flush vrf 0", table=tbl(0))
    routes = e.routes()
    assert IPv4Network("10.244.9.0/24") not in routes
    assert IPv4Network("192.168.0.0/24") in routes  # interface source: stays


# -- npol ---------------------------------------------------------------------------------------------


def _ipset(e: Env, members: list[str], set_type: int = NPOL_IP) -> int:
    set_id = int(e.c.call("npol_ipset_create", type=set_type).set_id)
    vals = [{"val": {"address": ip_address(m)}} for m in members]
    if vals:
        e.c.call("npol_ipset_add_del_members", set_id=set_id, is_add=True, members=vals)
    return set_id


def _web_rule(set_id: int) -> dict[str, Any]:
    """Allow TCP from the pods of an IP set to 10.9.0.0/16 ports 80-443 (not 10.9.9.0/24)."""
    return {
        "action": NPOL_ALLOW,
        "filters": [{"type": NPOL_FILTER_L4_PROTO, "value": TCP, "should_match": 1}],
        "matches": [
            {"is_src": True, "is_not": False, "type": NPOL_IP_SET, "data": {"set_id": {"set_id": set_id}}},
            {
                "is_src": False,
                "is_not": False,
                "type": NPOL_CIDR,
                "data": {"cidr": IPv4Network("10.9.0.0/16")},
            },
            {
                "is_src": False,
                "is_not": True,
                "type": NPOL_CIDR,
                "data": {"cidr": IPv4Network("10.9.9.0/24")},
            },
            {
                "is_src": False,
                "is_not": False,
                "type": NPOL_PORT_RANGE,
                "data": {"port_range": {"start": 80, "end": 443}},
            },
        ],
    }


WEB_RULE_CLI = (
    "[rule#{rule};allow][proto==tcp,dst==10.9.0.0/16,dst==[80-443],"
    "src==[ipset#{set};ip;10.1.0.1,10.1.0.2,],dst!=10.9.9.0/24,]"
)


@roundtrip("npol_get_version")
def _npol_get_version(e: Env) -> None:
    reply = e.c.call("npol_get_version")
    assert (reply.major, reply.minor) == (0, 0)


@roundtrip("npol_ipset_create")
def _npol_ipset_create(e: Env) -> None:
    ids = [
        e.c.call("npol_ipset_create", f"ipset s:{t}", type=t).set_id
        for t in (NPOL_IP, NPOL_IP_AND_PORT, NPOL_NET)
    ]
    assert ids == [0, 1, 2]
    assert e.cli("show npol ipsets") == "[ipset#0;ip;]\n[ipset#1;ip+port;]\n[ipset#2;prefix;]\n"


@roundtrip("npol_ipset_add_del_members")
def _npol_ipset_add_del_members(e: Env) -> None:
    ips = e.c.call("npol_ipset_create", type=NPOL_IP).set_id
    ports = e.c.call("npol_ipset_create", type=NPOL_IP_AND_PORT).set_id
    nets = e.c.call("npol_ipset_create", type=NPOL_NET).set_id
    e.c.call(
        "npol_ipset_add_del_members",
        "ipset s:pods",
        set_id=ips,
        is_add=True,
        members=[{"val": {"address": ip_address(a)}} for a in ("10.1.0.1", "10.1.0.2", "fd00::1")],
    )
    e.c.call(
        "npol_ipset_add_del_members",
        set_id=ports,
        is_add=True,
        members=[{"val": {"tuple": {"address": IPv4Address("10.1.0.3"), "l4_proto": TCP, "port": 8080}}}],
    )
    e.c.call(
        "npol_ipset_add_del_members",
        set_id=nets,
        is_add=True,
        members=[{"val": {"prefix": IPv4Network("10.2.0.0/16")}}],
    )
    assert e.cli("show npol ipsets") == (
        f"[ipset#{ips};ip;10.1.0.1,10.1.0.2,fd00::1,]\n"
        f"[ipset#{ports};ip+port;tcp 10.1.0.3;8080,]\n"
        f"[ipset#{nets};prefix;10.2.0.0/16,]\n"
    )
    e.c.call(
        "npol_ipset_add_del_members",
        set_id=ips,
        is_add=False,
        members=[{"val": {"address": IPv4Address("10.1.0.1")}}],
    )
    assert e.cli("show npol ipsets").splitlines()[0] == f"[ipset#{ips};ip;10.1.0.2,fd00::1,]"


@roundtrip("npol_ipset_delete")
def _npol_ipset_delete(e: Env) -> None:
    keep = _ipset(e, ["10.1.0.9"])
    gone = _ipset(e, ["10.1.0.1"])
    e.c.call("npol_ipset_delete", "ipset s:gone", set_id=gone)
    assert e.cli("show npol ipsets") == f"[ipset#{keep};ip;10.1.0.9,]\n"
    assert _ipset(e, []) == gone  # the freed id is the next one


@roundtrip("npol_rule_create")
def _npol_rule_create(e: Env) -> None:
    set_id = _ipset(e, ["10.1.0.1", "10.1.0.2"])
    reply = e.c.call("npol_rule_create", "rule web", rule=_web_rule(set_id))
    assert reply.retval == 0
    assert e.cli("show npol rules") == WEB_RULE_CLI.format(rule=reply.rule_id, set=set_id) + "\n"


@roundtrip("npol_rule_update")
def _npol_rule_update(e: Env) -> None:
    set_id = _ipset(e, ["10.1.0.1", "10.1.0.2"])
    rule_id = e.c.call("npol_rule_create", rule={"action": NPOL_DENY}).rule_id
    e.c.call("npol_rule_update", "rule web", rule_id=rule_id, rule=_web_rule(set_id))
    assert e.cli("show npol rules") == WEB_RULE_CLI.format(rule=rule_id, set=set_id) + "\n"


@roundtrip("npol_rule_delete")
def _npol_rule_delete(e: Env) -> None:
    keep = e.c.call("npol_rule_create", rule={"action": NPOL_DENY}).rule_id
    gone = e.c.call("npol_rule_create", rule={"action": NPOL_ALLOW}).rule_id
    e.c.call("npol_rule_delete", "rule r2", rule_id=gone)
    assert e.cli("show npol rules") == f"[rule#{keep};deny][]\n"


def _rules(e: Env) -> tuple[int, int]:
    set_id = _ipset(e, ["10.1.0.1", "10.1.0.2"])
    web = e.c.call("npol_rule_create", rule=_web_rule(set_id)).rule_id
    deny = e.c.call("npol_rule_create", rule={"action": NPOL_DENY}).rule_id
    return web, deny


@roundtrip("npol_policy_create")
def _npol_policy_create(e: Env) -> None:
    web, deny = _rules(e)
    reply = e.c.call(
        "npol_policy_create",
        "policy default/web",
        rules=[{"is_inbound": True, "rule_id": web}, {"is_inbound": False, "rule_id": deny}],
    )
    assert reply.retval == 0
    pid = reply.policy_id
    assert e.cli("show npol policies") == f"[policy#{pid}] rx-rules:1 tx-rules:1\n"
    verbose = e.cli("show npol policies verbose").splitlines()
    assert verbose == [
        f"[policy#{pid}]",
        f"  tx:[rule#{deny};deny][]",
        "  rx:" + WEB_RULE_CLI.format(rule=web, set=0),
    ]


@roundtrip("npol_policy_update")
def _npol_policy_update(e: Env) -> None:
    web, deny = _rules(e)
    pid = e.c.call("npol_policy_create", rules=[{"is_inbound": True, "rule_id": deny}]).policy_id
    e.c.call(
        "npol_policy_update",
        "policy default/web",
        policy_id=pid,
        rules=[{"is_inbound": True, "rule_id": web}, {"is_inbound": True, "rule_id": deny}],
    )
    assert e.cli("show npol policies") == f"[policy#{pid}] rx-rules:2 tx-rules:0\n"
    assert e.cli("show npol policies verbose").splitlines()[1:] == [
        "  rx:" + WEB_RULE_CLI.format(rule=web, set=0),
        f"  rx:[rule#{deny};deny][]",
    ]


@roundtrip("npol_policy_delete")
def _npol_policy_delete(e: Env) -> None:
    web, _deny = _rules(e)
    keep = e.c.call("npol_policy_create", rules=[{"is_inbound": True, "rule_id": web}]).policy_id
    gone = e.c.call("npol_policy_create", rules=[]).policy_id
    e.c.call("npol_policy_delete", "policy p2", policy_id=gone)
    assert e.cli("show npol policies") == f"[policy#{keep}] rx-rules:1 tx-rules:0\n"


@roundtrip("npol_configure_policies")
def _npol_configure_policies(e: Env) -> None:
    web, deny = _rules(e)
    policy = e.c.call("npol_policy_create", rules=[{"is_inbound": True, "rule_id": web}]).policy_id
    profile = e.c.call("npol_policy_create", rules=[{"is_inbound": False, "rule_id": deny}]).policy_id
    tap = e.tap("cali-web")
    e.c.call("sw_interface_set_flags", sw_if_index=tap, flags=ADMIN_UP)
    e.c.call("sw_interface_add_del_address", sw_if_index=tap, is_add=True, prefix=ip_iface("10.1.0.100/32"))
    e.c.call("feature_cnat_enable_disable", sw_if_index=tap, enable_disable=True)
    reply = e.c.call(
        "npol_configure_policies",
        "pod default/web",
        sw_if_index=tap,
        num_rx_policies=1,
        num_tx_policies=0,
        invert_rx_tx=0,
        policy_default_rx=1,  # DENY
        policy_default_tx=0,
        profile_default_rx=0,
        profile_default_tx=0,
        policy_ids=[policy, profile],  # the rest after rx and tx are profiles
    )
    assert reply.retval == 0
    out = e.cli("show npol interfaces").splitlines()
    assert out == [
        "Interfaces with policies configured:",
        f"[tap0 sw_if_index={tap}  addr=10.1.0.100]",
        "  rx:",
        "   rx-policy-default:1 rx-profile-default:0 ",
        f"    [policy#{policy}]",
        "      rx:" + WEB_RULE_CLI.format(rule=web, set=0),
        "   tx-policy-default:0 tx-profile-default:0 ",
        "  profiles:",
        f"    [policy#{profile}]",
        f"      tx:[rule#{deny};deny][]",
    ]
    # And it is what the tap's traffic meets (npol runs as a cnat hook).
    uplink = e.loopback("192.168.0.10/24")
    e.c.call("ip_route_add_del", is_add=True, route=route("10.9.0.0/16", route_path(uplink, "192.168.0.1")))
    verdict, trace = e.probe("from 10.1.0.1 to 10.9.1.1 proto tcp sport 5000 dport 443 rx tap0 new-flow")
    assert verdict == "allow" and f"ALLOW by policy {policy} rule {web}" in trace, trace
    verdict, trace = e.probe("from 10.1.0.5 to 10.9.1.1 proto tcp sport 5000 dport 443 rx tap0 new-flow")
    assert verdict == "deny" and "policy default DENY" in trace, trace


# -- acl ----------------------------------------------------------------------------------------------

ACL_RULES = [
    {
        "is_permit": 1,
        "src_prefix": IPv4Network("10.1.0.0/16"),
        "dst_prefix": IPv4Network("10.9.0.0/24"),
        "proto": TCP,
        "srcport_or_icmptype_first": 0,
        "srcport_or_icmptype_last": 65535,
        "dstport_or_icmpcode_first": 80,
        "dstport_or_icmpcode_last": 443,
        "tcp_flags_mask": 0,
        "tcp_flags_value": 0,
    },
    {
        "is_permit": 2,  # permit + reflect
        "src_prefix": IPv6Network("fd00:1::/64"),
        "dst_prefix": IPv6Network("::/0"),
        "proto": UDP,
        "srcport_or_icmptype_first": 1024,
        "srcport_or_icmptype_last": 2047,
        "dstport_or_icmpcode_first": 53,
        "dstport_or_icmpcode_last": 53,
        "tcp_flags_mask": 0,
        "tcp_flags_value": 0,
    },
    {
        "is_permit": 0,
        "src_prefix": IPv4Network("0.0.0.0/0"),
        "dst_prefix": IPv4Network("0.0.0.0/0"),
        "proto": ICMP,
        "srcport_or_icmptype_first": 8,
        "srcport_or_icmptype_last": 8,
        "dstport_or_icmpcode_first": 0,
        "dstport_or_icmpcode_last": 255,
        "tcp_flags_mask": 0,
        "tcp_flags_value": 0,
    },
]
ACL_FIELDS = tuple(ACL_RULES[0])


def _acl_rules_of(details: Any) -> list[dict[str, Any]]:
    return [{f: getattr(r, f) for f in ACL_FIELDS} for r in details.r]


def _acl(e: Env, tag: str = "cvd-pol-web", rules: list[dict[str, Any]] = ACL_RULES) -> int:
    return int(e.c.call("acl_add_replace", acl_index=U32_MAX, tag=tag, r=rules).acl_index)


@roundtrip("acl_plugin_get_version")
def _acl_plugin_get_version(e: Env) -> None:
    reply = e.c.call("acl_plugin_get_version")
    assert (reply.major, reply.minor) == (1, 4)


@roundtrip("acl_add_replace")
def _acl_add_replace(e: Env) -> None:
    reply = e.c.call("acl_add_replace", "policy web", acl_index=U32_MAX, tag="cvd-pol-web", r=ACL_RULES)
    assert reply.retval == 0
    (d,) = e.c.dump("acl_dump", acl_index=reply.acl_index)
    assert (d.acl_index, d.tag, d.count) == (reply.acl_index, "cvd-pol-web", 3)
    assert _acl_rules_of(d) == ACL_RULES
    # Another index replaces that ACL in place.
    again = e.c.call("acl_add_replace", acl_index=reply.acl_index, tag="cvd-pol-web2", r=ACL_RULES[2:])
    assert again.acl_index == reply.acl_index
    (d,) = e.c.dump("acl_dump", acl_index=reply.acl_index)
    assert (d.tag, _acl_rules_of(d)) == ("cvd-pol-web2", ACL_RULES[2:])
    assert "acl-index 0 count 1 tag {cvd-pol-web2}" in e.cli("show acl-plugin acl")


@roundtrip("acl_del")
def _acl_del(e: Env) -> None:
    keep, gone = _acl(e, "keep"), _acl(e, "gone")
    e.c.call("acl_del", "policy gone", acl_index=gone)
    assert [d.acl_index for d in e.c.dump("acl_dump", acl_index=U32_MAX)] == [keep]


@roundtrip("acl_dump")
def _acl_dump(e: Env) -> None:
    assert e.c.dump("acl_dump", acl_index=U32_MAX) == []
    a, b = _acl(e, "a"), _acl(e, "b", ACL_RULES[:1])
    everything = e.c.dump("acl_dump", acl_index=U32_MAX)
    assert [(d.acl_index, d.tag, d.count) for d in everything] == [(a, "a", 3), (b, "b", 1)]
    assert [d.tag for d in e.c.dump("acl_dump", acl_index=b)] == ["b"]
    assert e.c.dump("acl_dump", acl_index=77) == []


@roundtrip("acl_interface_set_acl_list")
def _acl_interface_set_acl_list(e: Env) -> None:
    tap = e.tap()
    a, b, c = _acl(e, "a"), _acl(e, "b"), _acl(e, "c")
    e.c.call("acl_interface_set_acl_list", "pod web", sw_if_index=tap, n_input=2, acls=[a, b, c])
    (d,) = e.c.dump("acl_interface_list_dump", sw_if_index=tap)
    assert (d.sw_if_index, d.count, d.n_input, list(d.acls)) == (tap, 3, 2, [a, b, c])
    assert f"sw_if_index {tap}:\n  input acl(s): {a}, {b}\n  output acl(s): {c}\n" in e.cli(
        "show acl-plugin interface"
    )
    e.c.call("acl_interface_set_acl_list", sw_if_index=tap, n_input=0, acls=[])
    (d,) = e.c.dump("acl_interface_list_dump", sw_if_index=tap)
    assert (d.count, d.n_input) == (0, 0)


@roundtrip("acl_interface_add_del")
def _acl_interface_add_del(e: Env) -> None:
    tap = e.tap()
    a, b = _acl(e, "a"), _acl(e, "b")
    e.c.call("acl_interface_add_del", "pod web in", is_add=True, is_input=True, sw_if_index=tap, acl_index=a)
    e.c.call(
        "acl_interface_add_del", "pod web out", is_add=True, is_input=False, sw_if_index=tap, acl_index=b
    )
    e.c.call("acl_interface_add_del", is_add=True, is_input=True, sw_if_index=tap, acl_index=b)
    (d,) = e.c.dump("acl_interface_list_dump", sw_if_index=tap)
    assert (d.n_input, list(d.acls)) == (2, [a, b, b])
    e.c.call("acl_interface_add_del", is_add=False, is_input=True, sw_if_index=tap, acl_index=a)
    (d,) = e.c.dump("acl_interface_list_dump", sw_if_index=tap)
    assert (d.n_input, list(d.acls)) == (1, [b, b])


@roundtrip("acl_interface_list_dump")
def _acl_interface_list_dump(e: Env) -> None:
    tap = e.tap()
    a = _acl(e)
    e.c.call("acl_interface_set_acl_list", sw_if_index=tap, n_input=1, acls=[a])
    every = {
        d.sw_if_index: (d.n_input, list(d.acls))
        for d in e.c.dump("acl_interface_list_dump", sw_if_index=U32_MAX)
    }
    assert set(every) == set(e.ifaces())  # one per interface, with or without ACLs
    assert every[tap] == (1, [a]) and every[0] == (0, [])
    assert e.c.dump("acl_interface_list_dump", sw_if_index=4000) == []


# -- cnat ---------------------------------------------------------------------------------------------


def _endpoint(addr: str | None, port: int, sw_if_index: int = U32_MAX, if_af: int = 0) -> dict[str, Any]:
    return {
        "addr": ip_address(addr) if addr else IPv4Address("0.0.0.0"),
        "sw_if_index": sw_if_index,
        "if_af": if_af,
        "port": port,
    }


def _translation(vip: str, port: int, backends: list[tuple[str, int]], proto: int = TCP) -> dict[str, Any]:
    return {
        "vip": _endpoint(vip, port),
        "id": 0,
        "ip_proto": proto,
        "is_real_ip": 0,
        "flags": 0,
        "lb_type": 0,
        "flow_hash_config": 0,
        "paths": [{"dst_ep": _endpoint(a, p), "src_ep": _endpoint(None, 0), "flags": 0} for a, p in backends],
    }


def _translations(e: Env) -> dict[int, Any]:
    return {d.translation.id: d.translation for d in e.c.dump("cnat_translation_dump")}


def _ep(ep: Any) -> tuple[str, int]:
    return (str(ep.addr), ep.port)


def _snat_ready(e: Env) -> None:
    e.c.call(
        "cnat_set_snat_addresses_v2",
        fwd_fib_index=0,
        ret_fib_index=0,
        snat_ip4=IPv4Address("192.168.0.10"),
        snat_ip6=IPv6Address("fd00::10"),
        sw_if_index=U32_MAX,
    )


def _two_legs(e: Env) -> tuple[int, int]:
    """A pod-side loopback (10.0.1.1/24) and a service-side one (10.0.2.1/24), both up."""
    return e.loopback("10.0.1.1/24"), e.loopback("10.0.2.1/24")


@roundtrip("cnat_translation_update")
def _cnat_translation_update(e: Env) -> None:
    reply = e.c.call(
        "cnat_translation_update",
        "service default/web:http",
        translation=_translation("10.96.0.10", 80, [("10.1.0.1", 8080), ("10.1.0.2", 8080)]),
    )
    assert reply.retval == 0
    t = _translations(e)[reply.id]
    assert (_ep(t.vip), t.ip_proto, t.n_paths) == (("10.96.0.10", 80), TCP, 2)
    assert [_ep(p.dst_ep) for p in t.paths] == [("10.1.0.1", 8080), ("10.1.0.2", 8080)]
    assert e.cli("show cnat translation").startswith(f"[{reply.id}] 10.96.0.10;80 TCP lb:default")
    # Same VIP, port and protocol: updated in place (same id), paths replaced.
    again = e.c.call(
        "cnat_translation_update", translation=_translation("10.96.0.10", 80, [("10.1.0.3", 8443)])
    )
    assert again.id == reply.id
    assert [_ep(p.dst_ep) for p in _translations(e)[reply.id].paths] == [("10.1.0.3", 8443)]
    # And traffic to the VIP is translated to the backend.
    _pod, _svc = _two_legs(e)
    e.c.call("feature_cnat_enable_disable", sw_if_index=_pod, enable_disable=True)
    e.c.call("ip_route_add_del", is_add=True, route=route("10.1.0.0/24", route_path(_svc, "10.0.2.2")))
    verdict, trace = e.probe("from 10.0.1.5 to 10.96.0.10 proto tcp sport 33000 dport 80 rx loop1 new-flow")
    assert verdict == "allow" and "10.1.0.3" in trace.splitlines()[-1], trace


@roundtrip("cnat_translation_del")
def _cnat_translation_del(e: Env) -> None:
    keep = e.c.call(
        "cnat_translation_update", translation=_translation("10.96.0.10", 53, [("10.1.0.9", 53)], UDP)
    ).id
    gone = e.c.call(
        "cnat_translation_update", translation=_translation("10.96.0.11", 443, [("10.1.0.1", 8443)])
    ).id
    e.c.call("cnat_translation_del", "service default/web:https", id=gone)
    assert list(_translations(e)) == [keep]


@roundtrip("cnat_translation_dump")
def _cnat_translation_dump(e: Env) -> None:
    assert e.c.dump("cnat_translation_dump") == []
    lo = e.loopback("192.168.0.10/24")
    tr = _translation("10.96.0.10", 443, [("10.1.0.1", 8443)])
    tr["is_real_ip"] = 1
    tr["flags"] = 1
    tr["vip"] = _endpoint(None, 443, sw_if_index=lo, if_af=0)  # a node-port: the interface's address
    tid = e.c.call("cnat_translation_update", translation=tr).id
    t = _translations(e)[tid]
    assert (t.vip.sw_if_index, _ep(t.vip)) == (lo, ("192.168.0.10", 443))
    # VPP does not encode is_real_ip, flags and flow_hash_config in the details.
    assert (t.is_real_ip, t.flags, int(t.flow_hash_config)) == (0, 0, 0)


def _make_session(e: Env) -> tuple[int, int]:
    pod, svc = _two_legs(e)
    for sw in (pod, svc):
        e.c.call("feature_cnat_enable_disable", sw_if_index=sw, enable_disable=True)
    verdict, trace = e.probe("from 10.0.1.5 to 10.0.2.5 proto tcp sport 40000 dport 8080 rx loop1")
    assert verdict == "allow", trace
    return pod, svc


@roundtrip("cnat_session_dump")
def _cnat_session_dump(e: Env) -> None:
    assert e.c.dump("cnat_session_dump") == []
    _make_session(e)
    sessions = [s.session for s in e.c.dump("cnat_session_dump")]
    fwd = [s for s in sessions if not s.flags & CNAT_SESSION_IS_RETURN]
    ret = [s for s in sessions if s.flags & CNAT_SESSION_IS_RETURN]
    assert len(fwd) == 1 and len(ret) == 1
    t = fwd[0].tuple
    # The ports come byte-swapped, as a real VPP of this version sends them.
    assert ([str(a) for a in t.addr], list(t.port), t.ip_proto) == (
        ["10.0.1.5", "10.0.2.5"],
        [swap16(40000), swap16(8080)],
        TCP,
    )
    assert [str(a) for a in ret[0].tuple.addr] == ["10.0.2.5", "10.0.1.5"]


@roundtrip("cnat_session_purge")
def _cnat_session_purge(e: Env) -> None:
    _make_session(e)
    assert e.c.dump("cnat_session_dump") != []
    assert e.c.call("cnat_session_purge", "resync").retval == 0
    assert e.c.dump("cnat_session_dump") == []
    assert "[0]" not in e.cli("show cnat session")


@roundtrip("cnat_set_snat_addresses")
def _cnat_set_snat_addresses(e: Env) -> None:
    e.c.call(
        "cnat_set_snat_addresses",
        "node snat",
        snat_ip4=IPv4Address("192.168.0.10"),
        snat_ip6=IPv6Address("fd00::10"),
        sw_if_index=U32_MAX,
    )
    got = e.c.call("cnat_get_snat_addresses")
    assert (got.snat_ip4, got.snat_ip6) == (IPv4Address("192.168.0.10"), IPv6Address("fd00::10"))
    assert "fwd fib 0: ip4 192.168.0.10 ip6 fd00::10 policy none" in e.cli("show cnat snat-policy")


@roundtrip("cnat_set_snat_addresses_v2")
def _cnat_set_snat_addresses_v2(e: Env) -> None:
    e.c.call(
        "cnat_set_snat_addresses_v2",
        "node snat",
        fwd_fib_index=0,
        ret_fib_index=0,
        snat_ip4=IPv4Address("192.168.0.10"),
        snat_ip6=IPv6Address("fd00::10"),
        sw_if_index=U32_MAX,
        flags=0,
    )
    (d,) = e.c.dump("cnat_snat_addresses_dump")
    assert (d.snat_ip4, d.snat_ip6, d.fwd_table_id4, d.ret_table_id4, d.fwd_table_id6) == (
        IPv4Address("192.168.0.10"),
        IPv6Address("fd00::10"),
        0,
        0,
        0,
    )
    # Neither address nor interface: the entry goes.
    e.c.call("cnat_set_snat_addresses_v2", fwd_fib_index=0, ret_fib_index=0, sw_if_index=U32_MAX)
    assert e.c.dump("cnat_snat_addresses_dump") == []


@roundtrip("cnat_get_snat_addresses")
def _cnat_get_snat_addresses(e: Env) -> None:
    _snat_ready(e)
    got = e.c.call("cnat_get_snat_addresses", "node snat")
    assert (got.retval, got.snat_ip4, got.snat_ip6) == (
        0,
        IPv4Address("192.168.0.10"),
        IPv6Address("fd00::10"),
    )


@roundtrip("cnat_snat_addresses_dump")
def _cnat_snat_addresses_dump(e: Env) -> None:
    assert e.c.dump("cnat_snat_addresses_dump") == []
    _snat_ready(e)
    (d,) = e.c.dump("cnat_snat_addresses_dump")
    assert (d.snat_ip4, d.fwd_table_id4, d.ret_table_id6) == (IPv4Address("192.168.0.10"), 0, 0)


@roundtrip("cnat_set_snat_policy")
def _cnat_set_snat_policy(e: Env) -> None:
    _snat_ready(e)
    e.c.call("cnat_set_snat_policy", "node snat", policy=CNAT_POLICY_K8S)
    assert "policy k8s" in e.cli("show cnat snat-policy")


@roundtrip("cnat_snat_policy_add_del_exclude_pfx")
def _cnat_snat_policy_add_del_exclude_pfx(e: Env) -> None:
    _snat_ready(e)
    for pfx in ("10.244.0.0/16", "fd00:244::/64"):
        e.c.call("cnat_snat_policy_add_del_exclude_pfx", "pool", is_add=1, prefix=ip_network(pfx))
    out = e.cli("show cnat snat-policy")
    assert "  exclude 10.244.0.0/16\n" in out and "  exclude fd00:244::/64\n" in out
    e.c.call("cnat_snat_policy_add_del_exclude_pfx", is_add=0, prefix=IPv4Network("10.244.0.0/16"))
    assert "10.244.0.0/16" not in e.cli("show cnat snat-policy")


@roundtrip("cnat_snat_policy_add_del_if")
def _cnat_snat_policy_add_del_if(e: Env) -> None:
    _snat_ready(e)
    tap = e.tap()
    e.c.call("cnat_snat_policy_add_del_if", "pod web", sw_if_index=tap, is_add=1, table=CNAT_POLICY_POD)
    assert "  k8s: tap0\n" in e.cli("show cnat snat-policy")
    e.c.call("cnat_snat_policy_add_del_if", sw_if_index=tap, is_add=0, table=CNAT_POLICY_POD)
    assert "tap0" not in e.cli("show cnat snat-policy")


@roundtrip("feature_cnat_enable_disable")
def _feature_cnat_enable_disable(e: Env) -> None:
    pod, _svc = _two_legs(e)
    probe = "from 10.0.1.5 to 10.0.2.5 proto tcp sport 40000 dport 8080 rx loop1 new-flow"
    assert "cnat: feature not enabled on loop1" in e.probe(probe)[1]
    e.c.call("feature_cnat_enable_disable", "pod web", sw_if_index=pod, enable_disable=True)
    assert "cnat-lookup on loop1: new flow" in e.probe(probe)[1]
    e.c.call("feature_cnat_enable_disable", "pod web", sw_if_index=pod, enable_disable=False)
    assert "cnat: feature not enabled on loop1" in e.probe(probe)[1]


# --------------------------------------------------------------------------------------------------
# One VPP error per message (where the simulator models one)
# --------------------------------------------------------------------------------------------------


class Bad(NamedTuple):
    """A deliberately wrong request: its fields (or a setup returning them) and VPP's retval."""

    fields: dict[str, Any] | Callable[[Env], dict[str, Any]]
    retval: int
    why: str


NO_IF = 4000  # an sw_if_index no interface has


def _subscribed_twice(e: Env) -> dict[str, Any]:
    e.c.call("want_interface_events", enable_disable=1, pid=1)
    return {"enable_disable": 1, "pid": 1}


def _tap_id_in_use(e: Env) -> dict[str, Any]:
    e.tap(id=3)
    return {"id": 3, "host_if_name_set": True, "host_if_name": "other"}


def _acl_applied_on_input(e: Env) -> dict[str, Any]:
    tap, acl = e.tap(), _acl(e)
    e.c.call("acl_interface_set_acl_list", sw_if_index=tap, n_input=1, acls=[acl])
    return {"acl_index": acl}


BAD_REQUESTS: dict[str, Bad] = {
    "sw_interface_set_flags": Bad({"sw_if_index": NO_IF, "flags": ADMIN_UP}, -2, "unknown interface"),
    "sw_interface_set_mtu": Bad({"sw_if_index": NO_IF, "mtu": [1400, 0, 0, 0]}, -2, "unknown interface"),
    "sw_interface_tag_add_del": Bad(
        lambda e: {"is_add": True, "sw_if_index": e.loopback(), "tag": ""}, -7, "empty tag on add"
    ),
    "sw_interface_add_del_address": Bad(
        lambda e: {
            "sw_if_index": e.loopback("10.0.1.1/24"),
            "is_add": True,
            "prefix": ip_iface("10.0.1.1/24"),
        },
        -105,
        "the same address again",
    ),
    "sw_interface_set_table": Bad(
        lambda e: {"sw_if_index": e.tap(), "is_ipv6": False, "vrf_id": 77}, -3, "table does not exist"
    ),
    "sw_interface_get_table": Bad({"sw_if_index": NO_IF, "is_ipv6": False}, -2, "unknown interface"),
    "sw_interface_set_unnumbered": Bad(
        lambda e: {"sw_if_index": NO_IF, "unnumbered_sw_if_index": e.tap(), "is_add": True},
        -10,
        "unknown address owner",
    ),
    "want_interface_events": Bad(
        _subscribed_twice,
        -31,
        "subscribing twice",
    ),
    "delete_loopback": Bad(lambda e: {"sw_if_index": e.tap()}, -2, "not a loopback"),
    "tap_create_v3": Bad(
        _tap_id_in_use,
        -71,
        "tap id in use",
    ),
    "tap_delete_v2": Bad(lambda e: {"sw_if_index": e.loopback()}, -2, "not a tap"),
    "af_packet_create_v3": Bad({"mode": 3, "host_if_name": "eth0"}, -7, "mode neither ETHERNET nor IP"),
    "af_packet_delete": Bad({"host_if_name": "eth9"}, -11, "no such af_packet interface"),
    "vxlan_add_del_tunnel_v3": Bad(
        {
            "is_add": True,
            "src_address": IPv4Address("10.0.0.1"),
            "dst_address": IPv4Address("10.0.0.1"),
            "vni": 1,
        },
        -82,
        "source == destination",
    ),
    "ipip_add_tunnel": Bad(
        {"tunnel": {"src": IPv4Address("10.0.0.1"), "dst": IPv6Address("fd00::1"), "instance": U32_MAX}},
        -153,
        "mixed address families",
    ),
    "ipip_del_tunnel": Bad(lambda e: {"sw_if_index": e.loopback()}, -6, "not an ipip tunnel"),
    "urpf_update": Bad({"is_input": True, "mode": 1, "af": 0, "sw_if_index": NO_IF}, -2, "unknown interface"),
    "sw_interface_ip6_enable_disable": Bad({"sw_if_index": NO_IF, "enable": True}, -2, "unknown interface"),
    "add_node_next": Bad({"node_name": "no-such-node", "next_name": "ip4-input"}, -63, "unknown node"),
    "ip_route_add_del": Bad(
        {"is_add": True, "route": route("10.0.0.0/8", route_path(U32_MAX, "1.1.1.1"), table_id=55)},
        -3,
        "table does not exist",
    ),
    "ip_table_replace_begin": Bad({"table": tbl(55)}, -3, "table does not exist"),
    "ip_table_replace_end": Bad({"table": tbl(55, True)}, -3, "table does not exist"),
    "ip_table_flush": Bad({"table": tbl(55)}, -3, "table does not exist"),
    "npol_ipset_add_del_members": Bad(
        lambda e: {
            "set_id": e.c.call("npol_ipset_create", type=NPOL_NET).set_id,
            "is_add": True,
            "members": [{"val": {"prefix": {"address": IPv4Address("10.2.3.4"), "len": 16}}}],
        },
        -88,
        "a NET member with host bits",
    ),
    "npol_ipset_delete": Bad({"set_id": 12}, -6, "no such set"),
    "npol_rule_create": Bad(
        {
            "rule": {
                "action": NPOL_ALLOW,
                "matches": [
                    {"type": NPOL_CIDR, "data": {"cidr": {"address": IPv4Address("10.9.1.0"), "len": 16}}}
                ],
            }
        },
        -88,
        "a CIDR with host bits",
    ),
    "npol_rule_update": Bad(
        lambda e: {
            "rule_id": e.c.call("npol_rule_create", rule={"action": NPOL_DENY}).rule_id,
            "rule": {
                "action": NPOL_ALLOW,
                "matches": [
                    {"type": NPOL_CIDR, "data": {"cidr": {"address": IPv4Address("10.9.1.0"), "len": 16}}}
                ],
            },
        },
        -88,
        "a CIDR with host bits",
    ),
    "npol_rule_delete": Bad({"rule_id": 12}, -6, "no such rule"),
    "npol_policy_delete": Bad({"policy_id": 12}, -6, "no such policy"),
    "npol_configure_policies": Bad(
        lambda e: {"sw_if_index": e.tap(), "num_rx_policies": 1, "policy_ids": [12]},
        1,  # VPP's positive retval for a policy id that is not live
        "unknown policy id",
    ),
    "acl_add_replace": Bad(
        {
            "acl_index": U32_MAX,
            "tag": "x",
            "r": [{**ACL_RULES[0], "src_prefix": {"address": IPv4Address("10.1.2.3"), "len": 16}}],
        },
        -57,
        "source prefix with host bits",
    ),
    "acl_del": Bad(
        _acl_applied_on_input,
        -142,
        "ACL applied on an input",
    ),
    "acl_interface_set_acl_list": Bad(
        {"sw_if_index": NO_IF, "n_input": 0, "acls": []}, -2, "unknown interface"
    ),
    "acl_interface_add_del": Bad(
        {"is_add": True, "is_input": True, "sw_if_index": NO_IF, "acl_index": 0}, -2, "unknown interface"
    ),
    "cnat_translation_update": Bad(
        {
            "translation": {
                **_translation("10.96.0.10", 80, []),
                "vip": _endpoint(None, 80, sw_if_index=1, if_af=5),
            }
        },
        -97,
        "bad if_af",
    ),
    "cnat_translation_del": Bad({"id": 12}, -6, "no such translation"),
    "cnat_set_snat_addresses": Bad(
        {"sw_if_index": U32_MAX}, -30, "deleting the SNAT entry when there is none"
    ),
    "cnat_set_snat_addresses_v2": Bad(
        {"fwd_fib_index": 0, "sw_if_index": U32_MAX}, -30, "deleting the SNAT entry when there is none"
    ),
    "cnat_get_snat_addresses": Bad({}, -30, "no SNAT entry yet"),
    "cnat_set_snat_policy": Bad({"policy": CNAT_POLICY_K8S}, -30, "no SNAT entry yet"),
    "cnat_snat_policy_add_del_exclude_pfx": Bad(
        {"is_add": 1, "prefix": IPv4Network("10.244.0.0/16")}, -30, "no SNAT entry yet"
    ),
    "cnat_snat_policy_add_del_if": Bad(
        {"sw_if_index": NO_IF, "is_add": 1, "table": CNAT_POLICY_POD}, -2, "unknown interface"
    ),
    "feature_cnat_enable_disable": Bad(
        {"sw_if_index": NO_IF, "enable_disable": True}, -2, "unknown interface"
    ),
}

#: Served messages for which the simulator (like VPP) has no error to give a well-formed request.
NO_MODELLED_ERROR = frozenset(
    {
        "sockclnt_create",
        "sockclnt_delete",
        "get_api_json",
        "api_versions",
        "memclnt_keepalive",
        "control_ping",
        "show_version",
        "cli_inband",  # errors are text in the reply, retval 0 (tested in the round trip)
        "ip_address_dump",  # an unknown interface answers no details (tested in the round trip)
        "create_loopback",
        "ip_table_add_del",
        "npol_get_version",
        "npol_ipset_create",
        "npol_policy_create",
        "npol_policy_update",  # an unknown id allocates a new policy and answers 0
        "acl_plugin_get_version",
        "cnat_session_purge",
        *DUMPS,  # a dump answers no retval: an unknown object gives no details (tested above)
    }
)

#: Requests of the simulator's definitions it does not serve (answered UNIMPLEMENTED, -9; a dump
#: answers no details), and memclnt messages of VPP's shared-memory transport, which a socket
#: client never sends.
NOT_SERVED: dict[str, dict[str, Any]] = {
    "rpc_call": {},
    "get_first_msg_id": {"name": "npol_4d281077"},
    "sock_init_shm": {},
    "ip_neighbor_add_del": {
        "is_add": True,
        "neighbor": {
            "sw_if_index": 1,
            "flags": 1,
            "mac_address": "02:00:00:00:00:01",
            "ip_address": IPv4Address("192.168.0.1"),
        },
    },
    "urpf_update_v2": {"is_input": True, "mode": 1, "af": 0, "sw_if_index": 1, "table_id": U32_MAX},
    "urpf_interface_dump": {"sw_if_index": U32_MAX},
}
SHARED_MEMORY_ONLY = frozenset({"memclnt_create", "memclnt_create_v2", "memclnt_delete"})


def served_requests() -> set[str]:
    """Every request of the simulator's definitions that gets an answer from the simulator."""
    requests = {name for name, svc in DEFS.services.items() if svc["reply"] != "null"}
    return requests - set(NOT_SERVED) - SHARED_MEMORY_ONLY


# --------------------------------------------------------------------------------------------------
# Coverage of the tables
# --------------------------------------------------------------------------------------------------


def test_every_handler_and_server_answered_request_has_a_roundtrip_case() -> None:
    assert set(HANDLERS) <= served_requests(), "a handler for a message classified as not served"
    missing = sorted(served_requests() - set(ROUNDTRIPS))
    assert not missing, f"served messages without a round-trip case: {missing}"
    stale = sorted(set(ROUNDTRIPS) - served_requests())
    assert not stale, f"round-trip cases for messages the simulator does not serve: {stale}"


def test_every_served_request_has_an_error_case_or_none_modelled() -> None:
    served = served_requests()
    assert not set(BAD_REQUESTS) & NO_MODELLED_ERROR
    unclassified = sorted(served - set(BAD_REQUESTS) - NO_MODELLED_ERROR)
    assert not unclassified, f"served messages neither in BAD_REQUESTS nor NO_MODELLED_ERROR: {unclassified}"
    assert set(BAD_REQUESTS) | NO_MODELLED_ERROR <= served


def test_handler_tables_agree_with_the_api_definitions() -> None:
    for name in HANDLERS:
        assert REPLIES[name] == DEFS.reply_of(name), name
        assert (name in DUMPS) == DEFS.is_dump(name), name


def test_every_message_the_driver_needs_is_served() -> None:
    needed = {m for table in FEATURES.values() for m in table}
    assert needed <= served_requests(), sorted(needed - served_requests())


# --------------------------------------------------------------------------------------------------
# The round trips
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("message", sorted(ROUNDTRIPS))
def test_roundtrip(env: Env, message: str) -> None:
    ROUNDTRIPS[message](env)


@pytest.mark.parametrize("message", sorted(BAD_REQUESTS))
def test_vpp_error_is_a_typed_client_error(env: Env, message: str) -> None:
    bad = BAD_REQUESTS[message]
    fields = bad.fields(env) if callable(bad.fields) else bad.fields
    obj = f"test object for {message}"
    with pytest.raises(VppApiError) as caught:
        env.c.call(message, obj, **fields)
    err = caught.value
    assert (err.message, err.obj, err.retval, err.name) == (
        message,
        obj,
        bad.retval,
        error_name(bad.retval),
    ), bad.why
    assert message in str(err) and obj in str(err) and err.name in str(err)
    # In a batch the same error is that request's Result; the requests around it still succeed.
    before, failed, after = env.c.batch(
        [Request("control_ping", {}), Request(message, fields, obj), Request("show_version", {})]
    )
    assert before.ok and after.ok and after.reply.version == SIM_VERSION
    assert isinstance(failed.error, VppApiError) and failed.reply is None
    assert (failed.error.message, failed.error.obj, failed.error.retval) == (message, obj, bad.retval)


def test_interface_events_reach_on_event(env: Env) -> None:
    """want_interface_events, then sw_interface_set_flags: the sw_interface_event arrives."""
    env.c.call("want_interface_events", enable_disable=True, pid=os.getpid())
    tap = env.tap("cali-ev")
    env.c.call("sw_interface_set_flags", "pod ev", sw_if_index=tap, flags=ADMIN_UP)

    def events() -> list[tuple[int, bool]]:
        return [
            (int(m.flags), bool(m.deleted))
            for n, m in env.events
            if n == "sw_interface_event" and m.sw_if_index == tap
        ]

    wait_for(lambda: len(events()) >= 2)
    assert events() == [(LINK_UP, False), (ADMIN_UP | LINK_UP, False)]
    env.c.call("sw_interface_set_flags", sw_if_index=tap, flags=0)
    env.c.call("tap_delete_v2", sw_if_index=tap)
    wait_for(lambda: len(events()) >= 4)
    assert events()[2:] == [(0, False), (0, True)]


@pytest.mark.parametrize("message", sorted(NOT_SERVED))
def test_not_served_messages_answer_unimplemented(env: Env, message: str) -> None:
    fields = NOT_SERVED[message]
    if DEFS.is_dump(message):
        assert env.c.dump(message, **fields) == []
    else:
        with pytest.raises(VppApiError) as caught:
            env.c.call(message, f"obj {message}", **fields)
        assert (caught.value.retval, caught.value.name) == (-9, "UNIMPLEMENTED")
    assert env.sim.errors == [f"no handler for {message}"]
    env.sim.errors.clear()
