"""The VPP client against a real, running VPP.

Skipped unless the environment variable ``VPP_API_SOCKET`` names the API socket of a running
VPP (``socksvr { socket-name ... }``), e.g.::

    VPP_API_SOCKET=/run/vpp/api.sock pytest tests/test_vpp_real.py

Only core messages are required (interfaces, routes); the plugins the VPP has are reported.
The tests leave the VPP as they found it, except for the client's restart sentinel (a
loopback tagged ``cvd-vpp-instance:...``), which is meant to stay.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from calico_vpp_driver.vpp.client import FEATURES, SENTINEL_TAG_PREFIX, Request, VppClient, missing_messages
from calico_vpp_driver.vpp.errors import VppApiError, VppEncodeError

SOCKET = os.environ.get("VPP_API_SOCKET", "")

pytestmark = [
    pytest.mark.skipif(not SOCKET, reason="VPP_API_SOCKET is not set (no real VPP to test against)"),
    pytest.mark.skipif(bool(SOCKET) and not os.path.exists(SOCKET), reason=f"no VPP API socket at {SOCKET}"),
    pytest.mark.filterwarnings("ignore:open_text is deprecated:DeprecationWarning"),
]

TEST_TAG = "cvd-test-real-vpp"


@pytest.fixture
def client() -> Iterator[VppClient]:
    c = VppClient(SOCKET, features=("interfaces", "fib"), connect_timeout=10.0, read_timeout=10.0)
    c.start()
    yield c
    try:  # remove anything a failed test left behind
        for d in c.dump("sw_interface_dump"):
            if str(d.tag).startswith(TEST_TAG):
                c.call("delete_loopback", sw_if_index=d.sw_if_index)
    finally:
        c.close()


def test_connect_show_version_and_ping(client: VppClient) -> None:
    info = client.info
    assert info is not None and info.generation == 1 and info.version
    reply = client.call("show_version")
    assert reply.retval == 0 and reply.version == info.version
    assert client.call("control_ping").vpe_pid == info.vpe_pid > 0


def test_message_check_matches_what_vpp_has(client: VppClient) -> None:
    assert client.supports("interfaces") and client.supports("fib")
    for feature in FEATURES:
        print(f"{feature}: {'yes' if client.supports(feature) else 'no'}")
    # A feature VPP lacks is reported with the plugin of each missing message.
    conn = client._conn
    assert conn is not None
    for feature in FEATURES:
        missing = missing_messages((feature,), conn.has_message)
        assert (not missing) == client.supports(feature)
        assert all(m.plugin for m in missing)


def test_sentinel_identifies_this_vpp(client: VppClient) -> None:
    tags = [str(d.tag) for d in client.dump("sw_interface_dump")]
    assert SENTINEL_TAG_PREFIX + str(client.instance_id) in tags
    other = VppClient(SOCKET, connect_timeout=10.0)
    try:
        assert other.start().instance_id == client.instance_id
    finally:
        other.close()


def test_loopback_round_trip(client: VppClient) -> None:
    sw_if_index = client.call("create_loopback", "test loopback").sw_if_index
    client.call(
        "sw_interface_tag_add_del", "test loopback", is_add=True, sw_if_index=sw_if_index, tag=TEST_TAG
    )
    client.call("sw_interface_set_flags", "test loopback", sw_if_index=sw_if_index, flags=1)
    ifs = {d.sw_if_index: d for d in client.dump("sw_interface_dump")}
    assert ifs[sw_if_index].tag == TEST_TAG and ifs[sw_if_index].flags & 1
    client.call("delete_loopback", "test loopback", sw_if_index=sw_if_index)
    assert sw_if_index not in {d.sw_if_index for d in client.dump("sw_interface_dump")}
    with pytest.raises(VppApiError) as info:
        client.call("delete_loopback", "test loopback (gone)", sw_if_index=sw_if_index)
    assert info.value.retval < 0 and info.value.obj == "test loopback (gone)"
    assert info.value.message == "delete_loopback"


def test_pipelined_loopbacks(client: VppClient) -> None:
    created = client.batch([Request("create_loopback", {}, f"lo{i}") for i in range(50)], max_in_flight=16)
    indexes = [r.unwrap().sw_if_index for r in created]
    assert len(set(indexes)) == 50
    tagged = client.batch(
        [
            ("sw_interface_tag_add_del", {"is_add": True, "sw_if_index": i, "tag": f"{TEST_TAG}-{i}"})
            for i in indexes
        ]
    )
    assert all(r.ok for r in tagged)
    deleted = client.batch([("delete_loopback", {"sw_if_index": i}) for i in [*indexes, 0xFFFFFFF0]])
    assert all(r.ok for r in deleted[:-1])
    assert isinstance(deleted[-1].error, VppApiError)


def test_unknown_field_is_refused_before_sending(client: VppClient) -> None:
    with pytest.raises(VppEncodeError, match="unknown field"):
        client.call("create_loopback", mac_adress=b"\x00" * 6)
