"""npol's member parsing fast path against its definition (one text at a time)."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from calico_vpp_driver.vpp import npol

_V4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
_V6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
_V6_LONG = st.integers(0, 2**128 - 1).map(lambda n: ipaddress.IPv6Address(n).exploded)
_PLEN = st.one_of(st.integers(0, 32).map(str), st.sampled_from(["032", "08", "+8", " 8", "0"]))
_NET_TEXTS = st.one_of(
    _V4,
    st.builds(lambda a, p: f"{a}/{p}", _V4, _PLEN),
    _V6,
    _V6_LONG,
    st.builds(lambda a, p: f"{a}/{p}", st.one_of(_V6, _V6_LONG), st.integers(0, 128)),
)
_PORT_TEXTS = st.builds(
    lambda a, proto, port: f"{a},{proto}:{port}",
    st.one_of(_V4, _V6, _V6_LONG),
    st.sampled_from(["tcp", "udp", "sctp"]),
    st.one_of(st.integers(0, 65535).map(str), st.just("080")),
)


def _one_by_one(texts: list[str], ip_and_port: bool) -> tuple[list[npol.Member], int]:
    values = [npol.parse_member(t, ip_and_port) for t in texts]
    odd = sum(t not in npol.member_forms(v) for t, v in zip(texts, values, strict=True))
    return values, odd


@settings(max_examples=400, deadline=None)
@given(texts=st.lists(_NET_TEXTS, max_size=10))
def test_parse_members_is_parse_member_with_the_odd_count(texts: list[str]) -> None:
    assert npol.parse_members(texts, False) == _one_by_one(texts, False)


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(_PORT_TEXTS, max_size=6))
def test_parse_members_of_ip_and_port_sets(texts: list[str]) -> None:
    assert npol.parse_members(texts, True) == _one_by_one(texts, True)


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(st.one_of(_NET_TEXTS), max_size=10), port_texts=st.lists(_PORT_TEXTS, max_size=4))
def test_members_wire_is_member_by_member(texts: list[str], port_texts: list[str]) -> None:
    """The v4 fast path and the general one pack the same 20 bytes per member."""
    members = [npol.parse_member(t, False) for t in texts] + [npol.parse_member(t, True) for t in port_texts]
    wire = npol.members_wire(members)
    assert len(wire) == npol.MEMBER_WIRE_SIZE * len(members)
    assert wire == b"".join(npol._member_wire(m) for m in members)
