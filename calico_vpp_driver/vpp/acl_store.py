"""The ACLs the driver owns in VPP: shared by content identity, replaced in place, tagged.

An ACL is keyed by what it renders (a program and how it is lowered); every interface whose
endpoint has the same program uses the same ACL. A changed rendering is written with
`acl_add_replace` on the same index, which VPP applies atomically, so interfaces never see a
half-written ACL and need no reconfiguration. Every ACL carries the tag `TAG_PREFIX<digest of
its key>`: a restarted driver finds its ACLs with `acl_dump` and reuses them (replacing their
rules once), and deletes those no interface needs once every interface has been set.

An ACL is deleted only after no interface lists it (VPP refuses to delete one in use anyway).
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from .acl_rules import AclRule
from .npol_store import RenderError, Requests

log = structlog.get_logger("calico_vpp_driver.vpp.acl")

TAG_PREFIX = "cvd-acl-"
ACL_NEW = 0xFFFFFFFF


def tag_for(key: Hashable) -> str:
    return TAG_PREFIX + hashlib.sha1(repr(key).encode()).hexdigest()[:40]


@dataclass(slots=True)
class _Acl:
    index: int
    rules: tuple[AclRule, ...] | None  # None: adopted, content unknown
    users: set[int] = field(default_factory=set)


class AclStore:
    def __init__(self, vpp: Requests) -> None:
        self.vpp = vpp
        self.acls: dict[str, _Acl] = {}  # tag -> ACL
        self.interfaces: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {}  # sw -> (in tags, out tags)
        self.calls: dict[str, int] = {}

    def _send(self, requests: list[tuple[str, dict[str, Any], str]]) -> list[Any]:
        for name, _f, _o in requests:
            self.calls[name] = self.calls.get(name, 0) + 1
        return self.vpp.batch(requests) if requests else []

    def ensure(self, acls: Mapping[str, tuple[AclRule, ...]]) -> None:
        """Create or replace (in place) each tagged ACL whose rules differ from VPP's."""
        todo = [
            (tag, rules)
            for tag, rules in acls.items()
            if tag not in self.acls or self.acls[tag].rules != rules
        ]
        requests = [
            (
                "acl_add_replace",
                {
                    "acl_index": self.acls[tag].index if tag in self.acls else ACL_NEW,
                    "tag": tag,
                    "r": [r.to_api() for r in rules],
                },
                f"acl {tag}",
            )
            for tag, rules in todo
        ]
        errors = []
        for (tag, rules), res in zip(todo, self._send(requests), strict=True):
            if res.error is not None:
                errors.append(f"acl {tag}: {res.error}")
                continue
            entry = self.acls.get(tag)
            if entry is None:
                self.acls[tag] = _Acl(int(res.reply.acl_index), rules)
            else:
                entry.rules = rules
        if errors:
            raise RenderError("; ".join(errors))

    def set_interfaces(self, lists: Mapping[int, tuple[Sequence[str], Sequence[str]]]) -> list[int]:
        """Set each interface's input and output ACL lists (tags already ensured); returns the
        interfaces VPP refused."""
        todo = []
        for sw, (ins, outs) in lists.items():
            want = (tuple(ins), tuple(outs))
            if self.interfaces.get(sw) != want:
                todo.append((sw, want))
        requests = [
            (
                "acl_interface_set_acl_list",
                {
                    "sw_if_index": sw,
                    "n_input": len(want[0]),
                    "acls": [self.acls[t].index for t in want[0] + want[1]],
                },
                f"interface {sw}",
            )
            for sw, want in todo
        ]
        failed = []
        for (sw, want), res in zip(todo, self._send(requests), strict=True):
            if res.error is not None or getattr(res.reply, "retval", 0) != 0:
                log.error("acl_interface_failed", sw_if_index=sw, error=str(res.error))
                failed.append(sw)
                continue
            self._retarget(sw, want)
        return failed

    def _retarget(self, sw: int, want: tuple[tuple[str, ...], tuple[str, ...]] | None) -> None:
        old = self.interfaces.pop(sw, None)
        if old is not None:
            for tag in old[0] + old[1]:
                if tag in self.acls:
                    self.acls[tag].users.discard(sw)
        if want is not None:
            self.interfaces[sw] = want
            for tag in want[0] + want[1]:
                self.acls[tag].users.add(sw)

    def forget_interface(self, sw: int) -> None:
        """The interface is being deleted (VPP drops its lists with it; its index will be reused)."""
        self._retarget(sw, None)

    def collect(self, keep: frozenset[str] = frozenset()) -> None:
        """Delete ACLs no interface lists (except those in `keep`)."""
        dead = [tag for tag, acl in self.acls.items() if not acl.users and tag not in keep]
        requests = [("acl_del", {"acl_index": self.acls[t].index}, f"acl {t}") for t in dead]
        for (_n, _f, obj), res in zip(requests, self._send(requests), strict=True):
            if res.error is not None:
                log.warning("acl_delete_failed", object=obj, error=str(res.error))
        for tag in dead:
            del self.acls[tag]

    def adopt(self) -> int:
        """Take over the driver's tagged ACLs found in VPP (after a driver restart)."""
        found = 0
        for res in self._send([("acl_dump", {"acl_index": ACL_NEW}, "acl dump")]):
            if res.error is not None:
                raise RenderError(f"acl_dump: {res.error}")
            for d in res.reply:
                tag = str(d.tag).rstrip("\x00")
                if tag.startswith(TAG_PREFIX) and tag not in self.acls:
                    self.acls[tag] = _Acl(int(d.acl_index), None)
                    found += 1
        return found

    def adopt_interfaces(self, lists: Mapping[int, tuple[Sequence[int], Sequence[int]]]) -> None:
        """Record which adopted ACLs are on which interface (from acl_interface_list_dump)."""
        by_index = {acl.index: tag for tag, acl in self.acls.items()}
        for sw, (ins, outs) in lists.items():
            tags_in = tuple(by_index.get(i, "") for i in ins)
            tags_out = tuple(by_index.get(i, "") for i in outs)
            if all(tags_in) and all(tags_out):
                self._retarget(sw, (tags_in, tags_out))
