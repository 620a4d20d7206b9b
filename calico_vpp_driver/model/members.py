"""Fast shape checks for IP set members, in the forms Felix emits.

An IP set of 100,000 members must be checked in well under a second, so this
avoids `ipaddress` object construction (several microseconds each) and uses
`socket.inet_pton`, which is strict (no shorthand like `10.1`) and fast.
NET members are CIDRs (a bare address is accepted as a full-length prefix),
IP members bare addresses, IP_AND_PORT members `<addr>,<tcp|udp|sctp>:<port>`.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Sequence
from itertools import filterfalse

from .types import IPSET_IP, IPSET_IP_AND_PORT, IPSET_NET

_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_pton = socket.inet_pton
_PORT_PROTOCOLS = frozenset({"tcp", "udp", "sctp"})


def _is_addr(text: str) -> int:
    """4 or 6 for a valid address, 0 otherwise."""
    try:
        if ":" in text:
            _pton(_AF_INET6, text)
            return 6
        _pton(_AF_INET, text)
        return 4
    except (OSError, ValueError):
        return 0


def is_net_member(member: str) -> bool:
    addr, slash, plen = member.partition("/")
    family = _is_addr(addr)
    if not family:
        return False
    if not slash:
        return True
    if not plen.isdigit() or len(plen) > 3:
        return False
    return int(plen) <= (32 if family == 4 else 128)


def is_ip_member(member: str) -> bool:
    addr, slash, plen = member.partition("/")
    family = _is_addr(addr)
    if not family:
        return False
    return not slash or plen == ("32" if family == 4 else "128")


def is_ip_port_member(member: str) -> bool:
    addr, comma, proto_port = member.rpartition(",")
    if not comma or not _is_addr(addr):
        return False
    proto, colon, port = proto_port.partition(":")
    if not colon or proto not in _PORT_PROTOCOLS:
        return False
    return port.isdigit() and len(port) <= 5 and int(port) <= 65535


# Regexes accepting only valid IPv4 forms: a C-speed first pass that settles
# the common case; whatever they reject goes through the exact checks above.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_V4 = rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}"
_PORT = r"(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_FAST: dict[int, Callable[[str], object]] = {
    IPSET_NET: re.compile(rf"{_V4}(?:/(?:3[0-2]|[12]?[0-9]))?").fullmatch,
    IPSET_IP: re.compile(rf"{_V4}(?:/32)?").fullmatch,
    IPSET_IP_AND_PORT: re.compile(rf"{_V4},(?:tcp|udp|sctp):{_PORT}").fullmatch,
}

CHECKERS: dict[int, Callable[[str], bool]] = {
    IPSET_NET: is_net_member,
    IPSET_IP: is_ip_member,
    IPSET_IP_AND_PORT: is_ip_port_member,
}


# Members already seen valid, per set type. The same pod addresses appear in
# many IP sets (one per selector that matches the pod), so most members of a
# new set are known: a C-level set difference settles them, and only new
# strings are checked. Bounded: cleared when it grows past _KNOWN_LIMIT.
_KNOWN_VALID: dict[int, set[str]] = {t: set() for t in CHECKERS}
_KNOWN_LIMIT = 1 << 19


# Members are handled in slices so that no single C-level call holds the GIL
# for long: a 1M-member set would otherwise keep signal handlers and the exit
# watchdog from running for most of a second.
_SLICE = 1 << 16


def split_valid(set_type: int, members: Sequence[str]) -> tuple[set[str], set[str]]:
    """Partition members into (valid, malformed) for the given IP set type."""
    good: set[str] = set()
    bad: set[str] = set()
    known = _KNOWN_VALID[set_type]
    fast = _FAST[set_type]
    check = CHECKERS[set_type]
    single = len(members) <= _SLICE
    for start in range(0, len(members), _SLICE):
        if single:
            chunk = good = set(members)  # the common case: no copy into `good`
        else:
            chunk = set(members[start : start + _SLICE])
            good |= chunk
        unknown = chunk - known if known else chunk
        if not unknown:
            continue
        chunk_bad = {m for m in filterfalse(fast, unknown) if not check(m)}
        if len(known) + len(unknown) > _KNOWN_LIMIT:
            known.clear()
        if chunk_bad:
            bad |= chunk_bad
            known.update(unknown - chunk_bad)
        else:
            known.update(unknown)
    if bad:
        good -= bad
    return good, bad
